//! The pool's behaviour in one process: allocation, size classes, shards,
//! handles, packet windows, blocking, segment life cycle.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{within, Name};
use ssm::{Error, Handle, HandleFault, Pool, PoolConfig, Side};

fn small() -> PoolConfig {
    PoolConfig::new()
        .class(512, 64)
        .class(2048, 16)
        .headspace(64)
        .tailspace(32)
}

fn fault(r: ssm::Result<impl std::fmt::Debug>) -> HandleFault {
    match r {
        Err(Error::InvalidHandle { fault, .. }) => fault,
        other => panic!("expected InvalidHandle, got {other:?}"),
    }
}

#[test]
fn basic_allocation() {
    let pool = Pool::private(&small()).unwrap();
    let mut p = pool.alloc(100).unwrap();
    assert_eq!(p.len(), 100);
    assert_eq!(p.headroom(), 64);
    assert_eq!(p.capacity(), 512);
    assert_eq!(p.tailroom(), 512 - 64 - 100);
    p.copy_from_slice(&[0x5A; 100]);
    assert!(p.iter().all(|&b| b == 0x5A));
    assert_eq!(pool.stats().allocated(), 1);
    drop(p);
    assert_eq!(pool.stats().allocated(), 0);
    pool.audit().unwrap();
}

#[test]
fn multiple_allocations_are_distinct_and_do_not_overlap() {
    let pool = Pool::private(&small()).unwrap();
    let mut bufs: Vec<_> = (0..50).map(|_| pool.alloc(300).unwrap()).collect();
    let handles: HashSet<Handle> = bufs.iter().map(|b| b.handle()).collect();
    assert_eq!(handles.len(), 50);
    for (i, b) in bufs.iter_mut().enumerate() {
        b.fill(i as u8);
    }
    for (i, b) in bufs.iter().enumerate() {
        assert!(
            b.iter().all(|&x| x == i as u8),
            "buffer {i} was overwritten"
        );
    }
}

#[test]
fn oversized_requests_fail_with_too_large() {
    let pool = Pool::private(&small()).unwrap();
    let max = pool.max_payload();
    assert_eq!(max, 2048 - 64 - 32);
    assert!(pool.alloc(max).is_ok());
    for r in [
        pool.alloc(max + 1),
        pool.alloc_timeout(max + 1, Some(Duration::from_millis(1))),
        pool.alloc_timeout(usize::MAX, None),
    ] {
        match r {
            Err(Error::TooLarge {
                requested, max: m, ..
            }) => {
                assert!(requested > max);
                assert_eq!(m, max);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
    let msg = pool.alloc(max + 1).unwrap_err().to_string();
    assert!(
        msg.contains("(private)") && msg.contains("larger class"),
        "{msg}"
    );
}

#[test]
fn size_class_boundaries() {
    let pool = Pool::private(&small()).unwrap();
    let fits = 512 - 64 - 32;
    assert_eq!(pool.alloc(fits).unwrap().capacity(), 512);
    assert_eq!(pool.alloc(fits + 1).unwrap().capacity(), 2048);
    assert_eq!(pool.alloc(0).unwrap().capacity(), 512);
}

#[test]
fn zero_count_classes_are_skipped() {
    let cfg = PoolConfig::new()
        .class(512, 0)
        .class(1024, 2)
        .headspace(0)
        .tailspace(0);
    let pool = Pool::private(&cfg).unwrap();
    assert_eq!(pool.alloc(10).unwrap().capacity(), 1024);
}

/// Allocating until exhaustion yields exactly the configured number of
/// blocks of every class, with caches on and off and with one or several
/// handles.
#[test]
fn exhaustion_yields_exactly_the_configured_count() {
    for cache in [0, 32] {
        let cfg = PoolConfig::group_pool().cache_size(cache);
        let pool = Pool::private(&cfg).unwrap();
        for (i, c) in cfg.classes().iter().enumerate() {
            let len = if i == 0 {
                0
            } else {
                cfg.classes()[i - 1].size as usize - 128 - 32 + 1
            };
            let mut held = Vec::new();
            loop {
                match pool.alloc(len) {
                    Ok(b) => {
                        assert_eq!(b.capacity(), c.size as usize);
                        held.push(b);
                    }
                    Err(Error::Exhausted {
                        class_size, blocks, ..
                    }) => {
                        assert_eq!((class_size, blocks), (c.size, c.count));
                        break;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(
                held.len(),
                c.count as usize,
                "class {} cache {cache}",
                c.size
            );
            let distinct: HashSet<u32> = held.iter().map(|b| b.handle().index()).collect();
            assert_eq!(distinct.len(), held.len());
        }
    }
}

#[test]
fn exhaustion_then_recovery() {
    let name = Name::new("recover");
    let pool = Pool::create(&name, &small()).unwrap();
    let other = Pool::open(&name).unwrap();
    let mut held: Vec<_> = std::iter::from_fn(|| pool.alloc(10).ok()).collect();
    assert_eq!(held.len(), 64);
    assert!(matches!(other.alloc(10), Err(Error::Exhausted { .. })));
    held.pop();
    // The freed block sits in `pool`'s cache; `other` still gets it.
    let b = other.alloc(10).unwrap();
    assert!(matches!(pool.alloc(10), Err(Error::Exhausted { .. })));
    drop(b);
    drop(held);
    assert_eq!(pool.stats().allocated(), 0);
    pool.audit().unwrap();
}

#[test]
fn stress_of_mixed_sizes() {
    let pool = Pool::private(&PoolConfig::group_pool()).unwrap();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut held = std::collections::VecDeque::new();
    for i in 0..20_000u32 {
        let len = (next() % 40_000) as usize;
        match pool.alloc(len) {
            Ok(mut b) => {
                b.fill(i as u8);
                held.push_back((i as u8, b));
            }
            Err(Error::Exhausted { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        if held.len() > 200 || next() % 3 == 0 {
            if let Some((tag, b)) = held.pop_front() {
                assert!(b.iter().all(|&x| x == tag));
            }
        }
    }
    drop(held);
    let a = pool.audit().unwrap();
    assert_eq!(a.allocated(), 0);
    assert_eq!(a.free() + a.cached(), a.blocks());
}

fn no_cache() -> PoolConfig {
    small().cache_size(0)
}

#[test]
fn lazy_distribution_puts_every_block_in_shard_0() {
    let pool = Pool::private(&PoolConfig::group_pool()).unwrap();
    let s = pool.stats();
    for (c, cfg) in s.classes.iter().zip(PoolConfig::group_pool().classes()) {
        assert_eq!(c.free_per_shard, vec![u64::from(cfg.count), 0, 0, 0]);
    }
}

#[test]
fn blocks_migrate_to_the_local_shard_of_the_process_that_frees_them() {
    let name = Name::new("migrate");
    let a = Pool::create(&name, &no_cache()).unwrap();
    let b = Pool::open(&name).unwrap();
    assert_eq!((a.slot(), b.slot()), (0, 1));
    // b's local shard (1) is empty: it steals from shard 0 ...
    let p = b.alloc(10).unwrap();
    assert_eq!(b.stats().classes[0].free_per_shard, vec![63, 0, 0, 0]);
    // ... and the free puts the block into shard 1.
    drop(p);
    assert_eq!(b.stats().classes[0].free_per_shard, vec![63, 1, 0, 0]);
    // b now allocates from its own shard first.
    let p = b.alloc(10).unwrap();
    assert_eq!(b.stats().classes[0].free_per_shard, vec![63, 0, 0, 0]);
    // A block a process takes over returns to the taker's shard.
    let h = p.into_handle();
    drop(a.get(h).unwrap());
    assert_eq!(a.stats().classes[0].free_per_shard, vec![64, 0, 0, 0]);
    a.audit().unwrap();
}

#[test]
fn allocation_falls_back_to_other_shards_until_all_are_empty() {
    let name = Name::new("steal");
    let pools: Vec<Pool> = std::iter::once(Pool::create(&name, &no_cache()).unwrap())
        .chain((1..4).map(|_| Pool::open(&name).unwrap()))
        .collect();
    // Spread the blocks: each handle frees some into its own shard.
    for (i, p) in pools.iter().enumerate() {
        let held: Vec<_> = (0..(i + 1) * 4).map(|_| p.alloc(1).unwrap()).collect();
        drop(held);
    }
    let spread = pools[0].stats().classes[0].free_per_shard.clone();
    assert_eq!(spread, vec![64 - 8 - 12 - 16, 8, 12, 16]);
    // One handle gets every block, from every shard.
    let all: Vec<_> = std::iter::from_fn(|| pools[3].alloc(1).ok()).collect();
    assert_eq!(all.len(), 64);
    assert_eq!(pools[0].stats().classes[0].free(), 0);
    drop(all);
    pools[0].audit().unwrap();
}

#[test]
fn forged_and_out_of_range_handles_are_refused_without_touching_any_list() {
    let pool = Pool::private(&small()).unwrap();
    let live = pool.alloc(8).unwrap();
    let before = pool.stats();
    let h = live.handle();
    let nblocks = 64 + 16;
    assert_eq!(fault(pool.get(Handle::from_raw(0))), HandleFault::Null);
    assert_eq!(
        fault(pool.get(Handle::new(nblocks, 1))),
        HandleFault::OutOfRange
    );
    assert_eq!(
        fault(pool.release(Handle::new(u32::MAX, 7))),
        HandleFault::OutOfRange
    );
    // A free block, any generation.
    for gen in [0, 1, 2, 3, 1000, u32::MAX] {
        assert!(pool.get(Handle::new(40, gen)).is_err());
        assert!(pool.release(Handle::new(40, gen)).is_err());
        assert!(pool.retain(Handle::new(40, gen)).is_err());
    }
    // The live block with a wrong generation.
    let wrong = Handle::new(h.index(), h.generation() + 1);
    assert!(pool.release(wrong).is_err());
    assert!(pool.get(wrong).is_err());
    // Its right handle, while the guard holds it.
    assert_eq!(fault(pool.get(h)), HandleFault::InUse);
    assert_eq!(fault(pool.release(h)), HandleFault::InUse);
    assert_eq!(pool.stats(), before);
    pool.audit().unwrap();
}

#[test]
fn a_stale_generation_is_refused() {
    let pool = Pool::private(&small()).unwrap();
    let h = pool.alloc(8).unwrap().into_handle();
    drop(pool.get(h).unwrap());
    assert_eq!(fault(pool.get(h)), HandleFault::Released);
    // The block comes back from the cache with a new generation.
    let again = pool.alloc(8).unwrap();
    assert_eq!(again.handle().index(), h.index());
    assert!(again.handle().generation() > h.generation());
    assert_eq!(fault(pool.get(h)), HandleFault::Stale);
    assert_eq!(fault(pool.release(h)), HandleFault::Stale);
}

#[test]
fn a_second_release_is_an_error_and_never_hands_a_block_to_two_owners() {
    let pool = Pool::private(&small()).unwrap();
    let h = pool.alloc(8).unwrap().into_handle();
    pool.release(h).unwrap();
    assert_eq!(fault(pool.release(h)), HandleFault::Released);
    let all: Vec<_> = std::iter::from_fn(|| pool.alloc(8).ok()).collect();
    assert_eq!(all.len(), 64);
    let distinct: HashSet<u32> = all.iter().map(|b| b.handle().index()).collect();
    assert_eq!(distinct.len(), 64);
    assert!(pool.release(h).is_err());
}

#[test]
fn extra_references_keep_a_block_until_the_last_release() {
    let pool = Pool::private(&small()).unwrap();
    let mut p = pool.alloc(4).unwrap();
    p.copy_from_slice(b"keep");
    let extra = p.retain().unwrap();
    let sent = p.into_handle();
    assert_eq!(extra, sent);
    // The receiver reads and drops its reference ...
    let got = pool.get(sent).unwrap();
    assert_eq!(&got[..], b"keep");
    drop(got);
    assert_eq!(pool.stats().allocated(), 1);
    // ... the retransmission queue still holds one, and can send it again.
    let again = pool.get(extra).unwrap();
    assert_eq!(&again[..], b"keep");
    again.free().unwrap();
    assert_eq!(pool.stats().allocated(), 0);
    assert!(pool.release(extra).is_err());
}

#[test]
fn packet_window_operations() {
    let pool = Pool::private(&small()).unwrap();
    let mut p = pool.alloc(10).unwrap();
    let room = p.tailroom();
    assert!(matches!(
        p.push_head(65),
        Err(Error::NoRoom {
            side: Side::Head,
            requested: 65,
            available: 64,
            ..
        })
    ));
    assert!(matches!(
        p.push_tail(room + 1),
        Err(Error::NoRoom {
            side: Side::Tail,
            ..
        })
    ));
    p.push_head(64).unwrap();
    assert_eq!((p.headroom(), p.len()), (0, 74));
    p.push_tail(room).unwrap();
    assert_eq!((p.tailroom(), p.len()), (0, 512));
    assert!(p.pull_head(513).is_err());
    p.pull_head(500).unwrap();
    assert_eq!(p.len(), 12);
    p.pull_tail(2).unwrap();
    assert!(p.truncate(11).is_err());
    p.truncate(3).unwrap();
    assert_eq!(p.len(), 3);
    p.pull_tail(3).unwrap();
    assert!(p.is_empty());
    // The window travels with the handle.
    p.push_tail(5).unwrap().copy_from_slice(b"hello");
    let h = p.into_handle();
    let q = pool.get(h).unwrap();
    assert_eq!(&q[..], b"hello");
    assert_eq!(q.headroom(), 500);
}

#[test]
fn a_blocking_allocation_times_out_on_time() {
    let pool = Pool::private(&small()).unwrap();
    let _all: Vec<_> = std::iter::from_fn(|| pool.alloc(1).ok()).collect();
    let t = Instant::now();
    let r = pool.alloc_timeout(1, Some(Duration::from_millis(50)));
    let e = t.elapsed();
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert!(e >= Duration::from_millis(50), "returned after {e:?}");
    assert!(e < Duration::from_millis(550), "returned after {e:?}");
    assert_eq!(pool.stats().classes[0].waiters, 0);
}

/// The C design waits on one shard and is not woken by a free into
/// another; here a free into any shard of the class wakes the waiter.
#[test]
fn a_blocked_allocation_is_woken_by_a_free_in_another_shard() {
    let name = Name::new("wake");
    let holder = Pool::create(&name, &no_cache()).unwrap();
    let held: Vec<_> = std::iter::from_fn(|| holder.alloc(1).ok()).collect();
    assert_eq!(held.len(), 64);
    let n = name.0.clone();
    let woke = Arc::new(AtomicBool::new(false));
    let woke2 = woke.clone();
    let waiter = std::thread::spawn(move || {
        let p = Pool::open(&n).unwrap();
        assert_eq!(p.slot(), 1);
        let b = p.alloc_timeout(1, Some(Duration::from_secs(20))).unwrap();
        woke2.store(true, Ordering::SeqCst);
        b.handle()
    });
    // Wait until the waiter is registered (a real condition, watched).
    common::wait_until(Duration::from_secs(10), || {
        holder.stats().classes[0].waiters == 1
    });
    assert!(!woke.load(Ordering::SeqCst));
    let mut held = held;
    let freed = held.pop().unwrap().handle();
    // The holder's local shard is 0, the waiter's is 1.
    let got = within(Duration::from_secs(10), move || waiter.join().unwrap());
    assert_eq!(got.index(), freed.index());
    assert_eq!(holder.stats().classes[0].waiters, 0);
}

#[test]
fn create_fails_if_the_name_exists() {
    let name = Name::new("exists");
    let _p = Pool::create(&name, &small()).unwrap();
    assert!(matches!(
        Pool::create(&name, &small()),
        Err(Error::Exists { .. })
    ));
}

#[test]
fn open_after_create_sees_an_initialised_pool() {
    let name = Name::new("open");
    let a = Pool::create(&name, &PoolConfig::group_pool()).unwrap();
    let b = Pool::open(&name).unwrap();
    assert_eq!(b.config(), PoolConfig::group_pool());
    assert_eq!(a.stats().classes, b.stats().classes);
    assert_eq!(b.creator_pid(), std::process::id());
    let mut p = b.alloc(1000).unwrap();
    p.fill(9);
    let q = a.get(p.into_handle()).unwrap();
    assert!(q.iter().all(|&x| x == 9));
}

#[test]
fn open_of_a_missing_pool_fails_with_not_found() {
    assert!(matches!(
        Pool::open("/ssm-test-never-created"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(Pool::open("a/b"), Err(Error::InvalidName { .. })));
}

fn raw_object(name: &str, bytes: &[u8]) {
    use std::io::Write;
    let path = format!("/dev/shm{name}");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn open_of_a_foreign_or_truncated_object_fails_cleanly() {
    let name = Name::new("foreign");
    raw_object(&name, &vec![0xEEu8; 8192]);
    let e = Pool::open(&name).unwrap_err();
    assert!(matches!(e, Error::LayoutMismatch { .. }), "{e}");
    assert!(e.to_string().contains("not a pool"), "{e}");

    let short = Name::new("short");
    raw_object(&short, b"tiny");
    assert!(matches!(
        Pool::open(&short),
        Err(Error::LayoutMismatch { .. })
    ));

    let trunc = Name::new("trunc");
    let p = Pool::create(&trunc, &small()).unwrap();
    let size = p.mapped_size();
    drop(p);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm{}", &*trunc))
        .unwrap();
    f.set_len(size / 2).unwrap();
    let e = Pool::open(&trunc).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");

    // A pool whose header says another version.
    let old = Name::new("version");
    let p = Pool::create(&old, &small()).unwrap();
    drop(p);
    let mut bytes = std::fs::read(format!("/dev/shm{}", &*old)).unwrap();
    bytes[8] = 99;
    raw_object(&old, &bytes);
    let e = Pool::open(&old).unwrap_err();
    assert!(e.to_string().contains("version 99"), "{e}");
}

#[test]
fn an_object_that_is_never_finished_times_out() {
    let name = Name::new("unready");
    raw_object(&name, &[]);
    let t = Instant::now();
    let e = Pool::open_timeout(&name, Duration::from_millis(100)).unwrap_err();
    assert!(matches!(e, Error::NotReady { .. }), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(100));
}

/// A concurrent open either finds nothing yet or a complete pool, never
/// a half-built one.
#[test]
fn open_during_create_never_sees_a_half_built_pool() {
    for i in 0..30 {
        let name = Name::new("race");
        let n = name.0.clone();
        let opener = std::thread::spawn(move || loop {
            match Pool::open(&n) {
                Ok(p) => return p.audit().map(|a| a.blocks()),
                Err(Error::NotFound { .. }) => std::thread::yield_now(),
                Err(e) => return Err(e),
            }
        });
        if i % 2 == 0 {
            std::thread::yield_now();
        }
        let creator = Pool::create(&name, &PoolConfig::group_pool()).unwrap();
        let blocks = within(Duration::from_secs(20), move || opener.join().unwrap()).unwrap();
        assert_eq!(blocks, 3184);
        drop(creator);
    }
}

#[test]
fn permissions_are_0600_by_default_and_0660_for_group_pools() {
    let a = Name::new("mode");
    let _p = Pool::create(&a, &small()).unwrap();
    let mode = std::fs::metadata(format!("/dev/shm{}", &*a))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let b = Name::new("gmode");
    let _q = Pool::create(&b, &small().group()).unwrap();
    let mode = std::fs::metadata(format!("/dev/shm{}", &*b))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
}

#[test]
fn only_the_running_creator_may_destroy() {
    let name = Name::new("destroy");
    let a = Pool::create(&name, &small()).unwrap();
    let b = Pool::open(&name).unwrap();
    assert!(matches!(b.destroy(), Err(Error::NotCreator { .. })));
    a.destroy().unwrap();
    assert!(matches!(Pool::open(&name), Err(Error::NotFound { .. })));
}

#[test]
fn mlock_locks_or_reports_the_errno() {
    let pool = Pool::private(&small()).unwrap();
    match pool.mlock() {
        Ok(()) => {}
        Err(e) => assert!(
            matches!(e.errno(), Some(libc::ENOMEM) | Some(libc::EPERM)),
            "{e}"
        ),
    }
}

#[test]
fn a_full_registry_is_a_clear_error_and_a_closed_handle_frees_its_slot() {
    let name = Name::new("full");
    let a = Pool::create(&name, &small().max_processes(2)).unwrap();
    let b = Pool::open(&name).unwrap();
    let e = Pool::open(&name).unwrap_err();
    assert!(matches!(e, Error::RegistryFull { slots: 2, .. }), "{e}");
    assert!(e.to_string().contains("max_processes"));
    drop(b);
    let c = Pool::open(&name).unwrap();
    assert_eq!(c.slot(), 1);
    drop(a);
}

#[test]
fn a_handle_that_still_owns_blocks_keeps_its_slot() {
    let name = Name::new("keep");
    let a = Pool::create(&name, &small()).unwrap();
    let b = Pool::open(&name).unwrap();
    let h = b.alloc(3).unwrap().into_handle();
    drop(b);
    // The block in transit is still b's: its slot stays registered.
    assert_eq!(a.stats().processes.len(), 2);
    a.audit().unwrap();
    drop(a.get(h).unwrap());
}

#[test]
fn stats_render_as_a_table() {
    let pool = Pool::private(&PoolConfig::group_pool()).unwrap();
    let _p = pool.alloc(100).unwrap();
    let text = pool.stats().to_string();
    assert!(
        text.contains("class") && text.contains("1 MiB") && text.contains("256 B"),
        "{text}"
    );
    assert!(text.contains("total"));
    let audit = pool.audit().unwrap().to_string();
    assert!(audit.contains("each in exactly one place"), "{audit}");
}

#[test]
fn errors_name_the_pool_and_say_what_to_do() {
    let pool = Pool::private(&PoolConfig::new().class(512, 1).headspace(0).tailspace(0)).unwrap();
    let _a = pool.alloc(1).unwrap();
    let e = pool.alloc(1).unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("(private)") && s.contains("512-byte") && s.contains("alloc_timeout"),
        "{s}"
    );
    let e = Pool::private(&PoolConfig::new()).unwrap_err();
    assert!(e.to_string().contains("no size classes"), "{e}");
}

#[test]
fn a_pool_can_be_inspected_read_only_without_registering() {
    use ssm::inspect::{self, Kind, PoolView};
    let name = Name::new("inspect");
    let pool = Pool::create(&name, &small()).unwrap();
    let _p = pool.alloc(10).unwrap();
    let before = std::fs::read(format!("/dev/shm{}", &*name)).unwrap();
    let view = PoolView::open(&name).unwrap();
    let s = view.stats();
    assert_eq!(s.allocated(), 1);
    assert_eq!(s.processes.len(), 1, "the inspector did not register");
    view.audit().unwrap();
    assert_eq!(view.config(), small());
    assert_eq!(view.creator(), (std::process::id(), true));
    assert_eq!(view.info().kind, Kind::Pool);
    assert_eq!(view.info().mode, 0o600);
    let after = std::fs::read(format!("/dev/shm{}", &*name)).unwrap();
    assert!(before == after, "inspecting changed the segment");
    assert!(inspect::list()
        .unwrap()
        .iter()
        .any(|o| o.name == name.0 && o.kind == Kind::Pool));
    let foreign = Name::new("not-ours");
    std::fs::write(format!("/dev/shm{}", &*foreign), b"hello").unwrap();
    assert_eq!(inspect::identify(&foreign).unwrap().kind, Kind::Foreign);
    assert!(matches!(
        PoolView::open(&foreign),
        Err(Error::LayoutMismatch { .. })
    ));
}

#[test]
fn a_privileged_creator_can_create_a_pool_for_another_user() {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: plain system call.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: creating for another user cannot be tried here");
        return;
    }
    let name = Name::new("owner");
    let _p = Pool::create(&name, &small().group().owner(65534, 65534)).unwrap();
    let meta = std::fs::metadata(format!("/dev/shm{}", &*name)).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (65534, 65534, 0o660)
    );
}
