//! The pool shared by several processes: hand-off of packets, concurrent
//! allocation from several shards, blocking across processes. Each helper
//! is this test binary re-executed; every wait has a watchdog.

mod common;

use std::time::Duration;

use common::{arg, hear, role, say, Helper, Name};
use ssm::{Error, Handle, Pool, PoolConfig};

const ENTRY: &str = "helper_entry";
const T: Duration = Duration::from_secs(60);

fn cfg() -> PoolConfig {
    PoolConfig::new()
        .class(512, 256)
        .class(4096, 64)
        .headspace(64)
        .tailspace(32)
}

fn pattern(seed: u64, len: usize) -> impl Iterator<Item = u8> {
    (0..len).map(move |i| (seed.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8)
}

/// Dispatches a re-executed helper process.
#[test]
fn helper_entry() {
    let Some(role) = role() else { return };
    let name = arg("pool");
    let code = match role.as_str() {
        "producer" => {
            let pool = Pool::open(&name).unwrap();
            let n: u64 = arg("count").parse().unwrap();
            for i in 0..n {
                let len = (i as usize * 37) % 3000;
                let mut p = pool
                    .alloc_timeout(len, Some(Duration::from_secs(30)))
                    .unwrap();
                for (d, s) in p.iter_mut().zip(pattern(i, len)) {
                    *d = s;
                }
                say(p.into_handle().into_raw());
            }
            // Stay attached until the consumer has taken everything.
            assert_eq!(hear(), "done");
            0
        }
        "churn" => {
            let pool = Pool::open(&name).unwrap();
            let rounds: u64 = arg("rounds").parse().unwrap();
            let me = std::process::id() as u64;
            let mut held = std::collections::VecDeque::new();
            for i in 0..rounds {
                let len = ((i * 131 + me) % 3500) as usize;
                match pool.alloc(len) {
                    Ok(mut p) => {
                        let tag = (i ^ me) as u8;
                        p.fill(tag);
                        held.push_back((tag, p));
                    }
                    Err(Error::Exhausted { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
                if held.len() > 16 {
                    let (tag, p) = held.pop_front().unwrap();
                    assert!(p.iter().all(|&b| b == tag), "data overwritten");
                }
            }
            0
        }
        "waiter" => {
            let pool = Pool::open(&name).unwrap();
            say(format!("slot {}", pool.slot()));
            let p = pool
                .alloc_timeout(1, Some(Duration::from_secs(30)))
                .unwrap();
            say(p.handle().into_raw());
            0
        }
        "forker" => {
            let pool = Pool::open(&name).unwrap();
            let held = pool.alloc(1).unwrap().into_handle();
            let slots_before = pool.stats().processes.len();
            // SAFETY: this helper process runs one test on one thread; the
            // child only uses the pool and then `_exit`s.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let refused = matches!(pool.alloc(1), Err(Error::Forked { .. }))
                    && matches!(pool.reclaim_dead(), Err(Error::Forked { .. }));
                drop(pool);
                // The child attaches on its own.
                let own = Pool::open(&name)
                    .map(|p| p.alloc(1).is_ok())
                    .unwrap_or(false);
                // SAFETY: ends the child without running the parent's exit
                // handlers.
                unsafe { libc::_exit(if refused && own { 0 } else { 1 }) };
            }
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "child failed"
            );
            // The child's drop of the inherited handle did not detach us.
            assert_eq!(pool.stats().processes.len(), slots_before);
            assert!(pool.alloc(1).is_ok());
            pool.release(held).unwrap();
            say("child refused the inherited handle and reattached");
            0
        }
        other => panic!("unknown role {other}"),
    };
    std::process::exit(code);
}

#[test]
fn packets_are_handed_from_one_process_to_another() {
    let name = Name::new("handoff");
    let pool = Pool::create(&name, &cfg()).unwrap();
    let n = 500u64;
    let mut producer = Helper::spawn(
        ENTRY,
        "producer",
        &[("pool", name.0.clone()), ("count", n.to_string())],
    );
    for i in 0..n {
        let h = Handle::from_raw(producer.recv(T).parse().unwrap());
        let p = pool.get(h).unwrap();
        let len = (i as usize * 37) % 3000;
        assert_eq!(p.len(), len);
        assert!(
            p.iter().copied().eq(pattern(i, len)),
            "packet {i} corrupted"
        );
    }
    producer.send("done");
    producer.success(T);
    let a = pool.audit().unwrap();
    assert_eq!(a.allocated(), 0);
}

#[test]
fn several_processes_allocate_from_their_shards_at_once() {
    let name = Name::new("churn");
    let pool = Pool::create(&name, &cfg()).unwrap();
    let helpers: Vec<Helper> = (0..4)
        .map(|_| {
            Helper::spawn(
                ENTRY,
                "churn",
                &[("pool", name.0.clone()), ("rounds", "20000".into())],
            )
        })
        .collect();
    for h in helpers {
        h.success(T);
    }
    let a = pool.audit().unwrap();
    assert_eq!(a.allocated(), 0);
    assert_eq!(a.blocks(), 320);
    // Blocks migrated out of shard 0 into the helpers' shards.
    let s = pool.stats();
    assert!(
        s.classes[0].free_per_shard[1..].iter().sum::<u64>() > 0,
        "{s}"
    );
}

#[test]
fn a_blocked_allocation_in_one_process_is_woken_by_a_free_in_another() {
    let name = Name::new("xwake");
    let pool = Pool::create(&name, &cfg().cache_size(0)).unwrap();
    let mut held: Vec<_> = std::iter::from_fn(|| pool.alloc(1).ok()).collect();
    assert_eq!(held.len(), 256);
    let waiter = Helper::spawn(ENTRY, "waiter", &[("pool", name.0.clone())]);
    assert_eq!(waiter.recv(T), "slot 1");
    common::wait_until(T, || pool.stats().classes[0].waiters == 1);
    // Freed into shard 0; the waiter's local shard is 1.
    let freed = held.pop().unwrap().handle();
    let got = Handle::from_raw(waiter.recv(T).parse().unwrap());
    assert_eq!(got.index(), freed.index());
    waiter.success(T);
}

/// A handle inherited across fork() is refused in the child, and dropping
/// it there leaves the parent's registration alone.
#[test]
fn a_pool_handle_inherited_across_fork_is_refused_in_the_child() {
    let name = Name::new("fork");
    let pool = Pool::create(&name, &cfg()).unwrap();
    let held = pool.alloc(10).unwrap();
    let helper = Helper::spawn(ENTRY, "forker", &[("pool", name.0.clone())]);
    assert_eq!(
        helper.recv(T),
        "child refused the inherited handle and reattached"
    );
    helper.success(T);
    // The helper's parent process kept its registration through the
    // child's drop: its slot is still listed until it exited.
    assert_eq!(pool.audit().unwrap().allocated(), 1);
    drop(held);
}
