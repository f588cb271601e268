//! Crash safety with real processes killed by SIGKILL: the reclaim sweep,
//! hand-offs that survive the sender, concurrent sweepers, and waiters
//! whose waker died.

mod common;

use std::time::Duration;

use common::{arg, hear, role, say, Helper, Name};
use ssm::{Error, Handle, Pool, PoolConfig};

const ENTRY: &str = "helper_entry";
const T: Duration = Duration::from_secs(60);

fn cfg() -> PoolConfig {
    PoolConfig::new()
        .class(512, 256)
        .headspace(64)
        .tailspace(32)
        .cache_size(8)
}

#[test]
fn helper_entry() {
    let Some(role) = role() else { return };
    let pool = Pool::open(&arg("pool")).unwrap();
    match role.as_str() {
        "hold" => {
            let n: usize = arg("count").parse().unwrap();
            let held: Vec<_> = (0..n).map(|_| pool.alloc(100).unwrap()).collect();
            say(format!("held {}", held.len()));
            hear(); // until killed
        }
        "send" => {
            let mut p = pool.alloc(8).unwrap();
            p.copy_from_slice(b"survivor");
            say(p.into_handle().into_raw());
            let mut q = pool.alloc(8).unwrap();
            q.copy_from_slice(b"orphaned");
            say(q.into_handle().into_raw());
            let _kept: Vec<_> = (0..5).map(|_| pool.alloc(8).unwrap()).collect();
            say("ready");
            hear();
        }
        "churn" => {
            let mut held = std::collections::VecDeque::new();
            for i in 0..100_000u32 {
                if let Ok(mut p) = pool.alloc(64) {
                    p.fill(i as u8);
                    held.push_back((i as u8, p));
                }
                if held.len() > 8 {
                    let (tag, p) = held.pop_front().unwrap();
                    assert!(p.iter().all(|&b| b == tag));
                }
            }
        }
        "sweep" => {
            assert_eq!(hear(), "go");
            let r = pool.reclaim_dead().unwrap();
            say(r.blocks());
        }
        "block" => {
            say(format!("slot {}", pool.slot()));
            let p = pool
                .alloc_timeout(1, Some(Duration::from_secs(50)))
                .unwrap();
            say(p.handle().into_raw());
        }
        other => panic!("unknown role {other}"),
    }
    // A clean exit: give everything back and leave the registry.
    drop(pool);
    std::process::exit(0);
}

fn hold(name: &Name, count: usize) -> Helper {
    let h = Helper::spawn(
        ENTRY,
        "hold",
        &[("pool", name.0.clone()), ("count", count.to_string())],
    );
    assert_eq!(h.recv(T), format!("held {count}"));
    h
}

#[test]
fn a_dead_process_is_reclaimed_while_others_keep_running() {
    let name = Name::new("reclaim");
    let pool = Pool::create(&name, &cfg()).unwrap();
    let churners: Vec<_> = (0..2)
        .map(|_| Helper::spawn(ENTRY, "churn", &[("pool", name.0.clone())]))
        .collect();
    let holder = hold(&name, 40);
    let pid = holder.pid();
    holder.kill();
    let r = pool.reclaim_dead().unwrap();
    assert_eq!(r.processes.len(), 1, "{r}");
    assert_eq!(r.processes[0].pid, pid);
    // Its 40 packets, and whatever its cache held.
    assert!(r.blocks() >= 40, "{r}");
    assert!(r.to_string().contains(&format!("pid {pid}")));
    for c in churners {
        c.success(T);
    }
    let a = pool.audit().unwrap();
    assert_eq!(a.allocated(), 0);
    // Nothing left for a second sweep.
    assert!(pool.reclaim_dead().unwrap().is_empty());
}

#[test]
fn a_packet_taken_over_survives_the_death_of_its_sender() {
    let name = Name::new("survive");
    let pool = Pool::create(&name, &cfg()).unwrap();
    let sender = Helper::spawn(ENTRY, "send", &[("pool", name.0.clone())]);
    let taken = Handle::from_raw(sender.recv(T).parse().unwrap());
    let in_transit = Handle::from_raw(sender.recv(T).parse().unwrap());
    assert_eq!(sender.recv(T), "ready");
    let p = pool.get(taken).unwrap();
    let pid = sender.pid();
    sender.kill();
    let r = pool.reclaim(pid).unwrap();
    // The five it kept and the one still in transit.
    assert!(r.blocks() >= 6, "{r}");
    assert_eq!(&p[..], b"survivor");
    match pool.get(in_transit) {
        Err(Error::InvalidHandle { .. }) => {}
        other => panic!("a reclaimed packet was handed out: {other:?}"),
    }
    assert_eq!(pool.stats().allocated(), 1);
    pool.audit().unwrap();
    drop(p);
    assert_eq!(pool.stats().allocated(), 0);
}

#[test]
fn reclaim_refuses_a_running_process() {
    let name = Name::new("alive");
    let pool = Pool::create(&name, &cfg()).unwrap();
    let holder = hold(&name, 3);
    let e = pool.reclaim(holder.pid()).unwrap_err();
    assert!(matches!(e, Error::ProcessAlive { .. }), "{e}");
    assert!(pool.reclaim_dead().unwrap().is_empty());
    holder.kill();
    assert!(pool.reclaim_dead().unwrap().blocks() >= 3);
}

#[test]
fn two_sweepers_at_once_recover_each_block_once() {
    let name = Name::new("sweepers");
    let pool = Pool::create(&name, &cfg().max_processes(16)).unwrap();
    let counts = [10usize, 20, 30, 40];
    let holders: Vec<_> = counts.iter().map(|&n| hold(&name, n)).collect();
    let sweepers: Vec<_> = (0..2)
        .map(|_| Helper::spawn(ENTRY, "sweep", &[("pool", name.0.clone())]))
        .collect();
    let before = pool.stats();
    let held: u64 = before.allocated() + before.cached();
    for h in holders {
        h.kill();
    }
    let mut sweepers = sweepers;
    for s in &mut sweepers {
        s.send("go");
    }
    let total: u64 = sweepers
        .iter()
        .map(|s| s.recv(T).parse::<u64>().unwrap())
        .sum();
    for s in sweepers {
        s.success(T);
    }
    assert_eq!(total, held, "each block recovered exactly once");
    let a = pool.audit().unwrap();
    assert_eq!(a.free() + a.cached(), 256);
    assert!(pool.reclaim_dead().unwrap().is_empty());
}

fn wait_for_waiter(pool: &Pool) {
    common::wait_until(T, || pool.stats().classes[0].waiters == 1);
}

#[test]
fn a_waiter_whose_waker_died_is_woken_by_a_free_elsewhere() {
    let name = Name::new("waker");
    let pool = Pool::create(&name, &cfg().cache_size(0)).unwrap();
    let mine = pool.alloc(1).unwrap();
    let holder = hold(&name, 255);
    let waiter = Helper::spawn(ENTRY, "block", &[("pool", name.0.clone())]);
    assert!(waiter.recv(T).starts_with("slot"));
    wait_for_waiter(&pool);
    // The process that would have freed blocks dies without freeing.
    holder.kill();
    // Someone else frees one.
    let freed = mine.handle();
    drop(mine);
    let got = Handle::from_raw(waiter.recv(T).parse().unwrap());
    assert_eq!(got.index(), freed.index());
    waiter.success(T);
    pool.reclaim_dead().unwrap();
    pool.audit().unwrap();
}

#[test]
fn a_waiter_is_woken_by_the_sweep_that_recovers_a_dead_holder() {
    let name = Name::new("sweepwake");
    let pool = Pool::create(&name, &cfg().cache_size(0)).unwrap();
    let holder = hold(&name, 256);
    let waiter = Helper::spawn(ENTRY, "block", &[("pool", name.0.clone())]);
    assert!(waiter.recv(T).starts_with("slot"));
    wait_for_waiter(&pool);
    holder.kill();
    let r = pool.reclaim_dead().unwrap();
    assert_eq!(r.blocks(), 256);
    let _ = Handle::from_raw(waiter.recv(T).parse().unwrap());
    waiter.success(T);
}

#[test]
fn a_full_registry_takes_over_a_dead_processes_slot_and_reports_its_blocks() {
    let name = Name::new("takeover");
    let pool = Pool::create(&name, &cfg().max_processes(2)).unwrap();
    let holder = hold(&name, 20);
    holder.kill();
    // The registry is full (the creator and the dead holder): opening takes
    // the dead holder's slot, and its blocks are recovered and reported.
    let other = Pool::open(&name).unwrap();
    let r = other.reclaim_dead().unwrap();
    assert!(r.blocks() >= 20, "{r}");
    assert!(r.orphans >= 20, "{r}");
    pool.audit().unwrap();
    assert_eq!(pool.stats().allocated(), 0);
}
