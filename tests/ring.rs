//! The ring: life cycle, reads and writes, blocking, access modes, several
//! writer threads and processes, a dead reader's handles given back to the
//! pool.

mod common;

use std::time::{Duration, Instant};

use common::{arg, hear, role, say, wait_until, within, Helper, Name};
use ssm::{Access, Error, Handle, Pool, PoolConfig, Ring, RingConfig};

const ENTRY: &str = "helper_entry";
const T: Duration = Duration::from_secs(60);

fn h(v: u64) -> Handle {
    Handle::from_raw(v)
}

#[test]
fn helper_entry() {
    let Some(role) = role() else { return };
    let ring = Ring::open(&arg("ring")).unwrap();
    match role.as_str() {
        "writer" => {
            let id: u64 = arg("id").parse().unwrap();
            let n: u64 = arg("count").parse().unwrap();
            for i in 0..n {
                ring.write_timeout(h((id << 32) | i), Some(T)).unwrap();
            }
        }
        "reader" => {
            let n: usize = arg("count").parse().unwrap();
            let mut next = std::collections::HashMap::new();
            for _ in 0..n {
                let v = ring.read_timeout(Some(T)).unwrap().into_raw();
                let e = next.entry(v >> 32).or_insert(0u64);
                assert_eq!(v & 0xFFFF_FFFF, *e, "writer {} out of order", v >> 32);
                *e += 1;
            }
            say(n);
        }
        "blocked-reader" => {
            say("reading");
            match ring.read_timeout(None) {
                Ok(v) => say(v.into_raw()),
                Err(e) => say(format!("error {e}")),
            }
        }
        "holding-reader" => {
            assert!(matches!(ring.read(), Err(Error::Empty { .. })));
            say("reader");
            hear();
        }
        other => panic!("unknown role {other}"),
    }
    drop(ring);
    std::process::exit(0);
}

#[test]
fn create_write_read_destroy() {
    let name = Name::new("ring");
    let ring = Ring::create(&name, &RingConfig::new()).unwrap();
    assert_eq!(ring.capacity(), 1024);
    assert_eq!(ring.access(), Access::ReadWrite);
    assert!(matches!(
        Ring::create(&name, &RingConfig::new()),
        Err(Error::Exists { .. })
    ));
    ring.write(h(7)).unwrap();
    ring.write(h(8)).unwrap();
    assert_eq!(ring.queued(), 2);
    let other = Ring::open(&name).unwrap();
    assert_eq!(other.capacity(), 1024);
    // The first handle to read became the reader; another process's handle
    // may not read while it lives (this one is in the same process, so it
    // is refused too).
    assert_eq!(ring.read().unwrap(), h(7));
    assert!(matches!(other.read(), Err(Error::Access { .. })));
    assert_eq!(ring.read().unwrap(), h(8));
    assert!(matches!(ring.read(), Err(Error::Empty { .. })));
    drop(other);
    ring.destroy().unwrap();
    assert!(matches!(Ring::open(&name), Err(Error::NotFound { .. })));
}

#[test]
fn invalid_configurations_and_foreign_objects_are_refused() {
    for cap in [0, 1, 3, 1000, 1 << 25] {
        let e = Ring::create("/ssm-test-bad-ring", &RingConfig::new().capacity(cap)).unwrap_err();
        assert!(matches!(e, Error::InvalidConfig { .. }), "{cap}: {e}");
    }
    let name = Name::new("foreign-ring");
    std::fs::write(format!("/dev/shm{}", &*name), vec![0x11u8; 8192]).unwrap();
    assert!(matches!(
        Ring::open(&name),
        Err(Error::LayoutMismatch { .. })
    ));
    // A pool is not a ring.
    let pool = Name::new("pool-not-ring");
    let _p = Pool::create(&pool, &PoolConfig::new().class(512, 4)).unwrap();
    let e = Ring::open(&pool).unwrap_err();
    assert!(e.to_string().contains("not a ring"), "{e}");
}

#[test]
fn fill_and_drain_at_capacity() {
    let name = Name::new("fill");
    let ring = Ring::create(&name, &RingConfig::new().capacity(8)).unwrap();
    for lap in 0..3u64 {
        for i in 0..8 {
            ring.write(h(lap * 100 + i)).unwrap();
        }
        assert!(matches!(
            ring.write(h(999)),
            Err(Error::Full { capacity: 8, .. })
        ));
        assert_eq!(ring.queued(), 8);
        let mut out = [h(0); 16];
        assert_eq!(ring.read_batch(&mut out).unwrap(), 8);
        assert_eq!(
            out[..8],
            (0..8).map(|i| h(lap * 100 + i)).collect::<Vec<_>>()[..]
        );
        assert_eq!(ring.queued(), 0);
    }
}

#[test]
fn access_modes() {
    let name = Name::new("acl");
    let ring = Ring::create(&name, &RingConfig::new().capacity(4)).unwrap();
    ring.write(h(1)).unwrap();
    ring.set_access(Access::ReadOnly).unwrap();
    assert!(matches!(
        ring.write(h(2)),
        Err(Error::Access {
            mode: "read-only",
            ..
        })
    ));
    assert_eq!(ring.read().unwrap(), h(1));
    ring.set_access(Access::ReadWrite).unwrap();
    ring.write(h(3)).unwrap();
    ring.write(h(4)).unwrap();
    ring.set_access(Access::FlowDown).unwrap();
    assert!(matches!(ring.write(h(5)), Err(Error::FlowDown { .. })));
    // Reads drain what is queued, then fail.
    assert_eq!(ring.read().unwrap(), h(3));
    assert_eq!(ring.read().unwrap(), h(4));
    assert!(matches!(ring.read(), Err(Error::FlowDown { .. })));
    assert!(matches!(
        ring.read_timeout(None),
        Err(Error::FlowDown { .. })
    ));
    ring.set_access(Access::PeerGone).unwrap();
    assert!(matches!(ring.write(h(6)), Err(Error::PeerGone { .. })));
    assert!(matches!(ring.read(), Err(Error::PeerGone { .. })));
    assert_eq!(ring.access().to_string(), "peer-gone");
}

#[test]
fn a_blocking_read_times_out_on_time() {
    let name = Name::new("timeout");
    let ring = Ring::create(&name, &RingConfig::new().capacity(4)).unwrap();
    let t = Instant::now();
    let e = ring
        .read_timeout(Some(Duration::from_millis(50)))
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    let el = t.elapsed();
    assert!(
        el >= Duration::from_millis(50) && el < Duration::from_millis(550),
        "{el:?}"
    );
    for i in 0..4 {
        ring.write(h(i)).unwrap();
    }
    let t = Instant::now();
    let e = ring
        .write_timeout(h(9), Some(Duration::from_millis(50)))
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(50));
}

#[test]
fn a_blocking_read_is_woken_by_a_write_from_another_process() {
    let name = Name::new("wake");
    let ring = Ring::create(&name, &RingConfig::new()).unwrap();
    let reader = Helper::spawn(ENTRY, "blocked-reader", &[("ring", name.0.clone())]);
    assert_eq!(reader.recv(T), "reading");
    wait_until(T, || ring.reader_pid() == Some(reader.pid()));
    ring.write(h(4242)).unwrap();
    assert_eq!(reader.recv(T), "4242");
    reader.success(T);
}

#[test]
fn flow_down_wakes_a_blocked_reader_at_once() {
    let name = Name::new("down");
    let ring = Ring::create(&name, &RingConfig::new()).unwrap();
    let reader = Helper::spawn(ENTRY, "blocked-reader", &[("ring", name.0.clone())]);
    assert_eq!(reader.recv(T), "reading");
    wait_until(T, || ring.reader_pid() == Some(reader.pid()));
    let t = Instant::now();
    ring.set_access(Access::FlowDown).unwrap();
    let msg = reader.recv(T);
    assert!(
        msg.starts_with("error") && msg.contains("flow is down"),
        "{msg}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    reader.success(T);
}

#[test]
fn a_blocked_writer_is_woken_when_the_reader_makes_room() {
    let name = Name::new("room");
    let ring = Ring::create(&name, &RingConfig::new().capacity(2)).unwrap();
    ring.write(h(1)).unwrap();
    ring.write(h(2)).unwrap();
    let n = name.0.clone();
    let writer = std::thread::spawn(move || {
        let r = Ring::open(&n).unwrap();
        r.write_timeout(h(3), Some(T)).unwrap();
    });
    assert_eq!(ring.read().unwrap(), h(1));
    within(T, move || writer.join().unwrap());
    assert_eq!(ring.read().unwrap(), h(2));
    assert_eq!(ring.read().unwrap(), h(3));
}

#[test]
fn threaded_writers_keep_their_order() {
    let name = Name::new("threads");
    let ring = Ring::create(&name, &RingConfig::new().capacity(64)).unwrap();
    let per = 5_000u64;
    let writers: Vec<_> = (0..4u64)
        .map(|id| {
            let n = name.0.clone();
            std::thread::spawn(move || {
                let r = Ring::open(&n).unwrap();
                for i in 0..per {
                    r.write_timeout(h((id << 32) | i), Some(T)).unwrap();
                }
            })
        })
        .collect();
    let mut next = [0u64; 4];
    for _ in 0..4 * per {
        let v = ring.read_timeout(Some(T)).unwrap().into_raw();
        let id = (v >> 32) as usize;
        assert_eq!(v & 0xFFFF_FFFF, next[id], "writer {id} out of order");
        next[id] += 1;
    }
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(next, [per; 4]);
    assert_eq!(ring.queued(), 0);
}

#[test]
fn writer_processes_and_a_reader_process() {
    let name = Name::new("procs");
    let _ring = Ring::create(&name, &RingConfig::new().capacity(128)).unwrap();
    let per = 20_000u64;
    let reader = Helper::spawn(
        ENTRY,
        "reader",
        &[("ring", name.0.clone()), ("count", (3 * per).to_string())],
    );
    let writers: Vec<_> = (0..3u64)
        .map(|id| {
            Helper::spawn(
                ENTRY,
                "writer",
                &[
                    ("ring", name.0.clone()),
                    ("id", id.to_string()),
                    ("count", per.to_string()),
                ],
            )
        })
        .collect();
    for w in writers {
        w.success(T);
    }
    assert_eq!(reader.recv(T), (3 * per).to_string());
    reader.success(T);
}

#[test]
fn fini_waits_until_the_ring_is_drained() {
    let name = Name::new("fini");
    let ring = Ring::create(&name, &RingConfig::new().capacity(8)).unwrap();
    for i in 0..5 {
        ring.write(h(i)).unwrap();
    }
    assert!(matches!(
        ring.fini(Some(Duration::from_millis(20))),
        Err(Error::Timeout { .. })
    ));
    let n = name.0.clone();
    let reader = std::thread::spawn(move || {
        let r = Ring::open(&n).unwrap();
        for _ in 0..5 {
            r.read_timeout(Some(T)).unwrap();
        }
    });
    ring.fini(Some(T)).unwrap();
    assert_eq!(ring.queued(), 0);
    reader.join().unwrap();
}

/// Handles queued for a reader that died are given back to the pool, so
/// no block is lost with the ring; the reader role passes on.
#[test]
fn a_dead_readers_handles_are_given_back_to_the_pool() {
    let pool_name = Name::new("drain-pool");
    let ring_name = Name::new("drain-ring");
    let pool = Pool::create(
        &pool_name,
        &PoolConfig::new().class(512, 16).headspace(0).tailspace(0),
    )
    .unwrap();
    let ring = Ring::create(&ring_name, &RingConfig::new().capacity(16)).unwrap();
    let reader = Helper::spawn(ENTRY, "holding-reader", &[("ring", ring_name.0.clone())]);
    assert_eq!(reader.recv(T), "reader");
    for _ in 0..5 {
        ring.write(pool.alloc(10).unwrap().into_handle()).unwrap();
    }
    // A live reader: nothing to do, and nobody else may read.
    assert_eq!(ring.drain_into(&pool).unwrap(), 0);
    assert!(matches!(ring.read(), Err(Error::Access { .. })));
    reader.kill();
    assert_eq!(ring.drain_into(&pool).unwrap(), 5);
    assert_eq!(pool.stats().allocated(), 0);
    pool.audit().unwrap();
    // This handle is the reader now.
    ring.write(h(77)).unwrap();
    assert_eq!(ring.read().unwrap(), h(77));
}
