//! Ownership, reclaim and crash windows over simulated processes.
//!
//! The crash tests are systematic: an operation is run again and again, the
//! n-th time stopping ("killing" its process) at its n-th crash point, until
//! it runs to the end. After each crash a sweeper recovers the dead process;
//! then the pool must audit clean, have no waiter left, and hand out every
//! block exactly once.

use std::collections::HashSet;
use std::time::Duration;

use crate::allocator::{Attached, Block};
use crate::block::{Owner, Window};
use crate::config::PoolConfig;
use crate::error::Error;
use crate::layout::HeapSegment;
use crate::platform::Identity;
use crate::reclaim::{self, Target};
use crate::testing::sim::{crash_after, survive, SimOs};
use crate::{audit, registry};

const W: Window = Window { head: 0, tail: 8 };

fn cfg() -> PoolConfig {
    PoolConfig::new()
        .class(256, 24)
        .shards(2)
        .headspace(0)
        .tailspace(0)
        .cache_size(4)
        .max_processes(8)
}

fn who(pid: u32) -> Identity {
    Identity { pid, start: 1 }
}

struct World {
    os: SimOs,
    heap: HeapSegment<SimOs>,
}

impl World {
    fn new(cfg: &PoolConfig) -> Self {
        let os = SimOs::default();
        let heap = HeapSegment::new(cfg, &os).unwrap();
        World { os, heap }
    }

    fn attach(&self, id: Identity) -> Attached<'_, SimOs> {
        self.os.start(id);
        let seg = self.heap.segment(&self.os, "sim");
        let me = registry::attach(&seg, id, 0).unwrap();
        Attached::new(seg, me)
    }

    /// Every block of class 0, allocated by a fresh process, then freed.
    fn check_all_blocks_once(&self, count: u32) {
        let a = self.attach(who(9_999));
        let mut seen = HashSet::new();
        let mut held = Vec::new();
        loop {
            match a.alloc(0, W) {
                Ok(b) => {
                    assert!(seen.insert(b.index), "block {} handed out twice", b.index);
                    held.push(b);
                }
                Err(Error::Exhausted { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(held.len() as u32, count, "blocks lost");
        for b in held {
            a.drop_guard(b).unwrap();
        }
        a.flush_all().unwrap();
        registry::detach(&a.seg, a.me);
        self.os.kill(who(9_999));
    }
}

/// Runs `op` for a victim process in a fresh world, crashing it at every
/// crash point in turn, and checks recovery each time. `setup` prepares the
/// victim (and may return blocks owned by a bystander).
fn crash_everywhere(
    name: &str,
    min_points: u32,
    setup: impl Fn(&World, &Attached<'_, SimOs>) -> Vec<Block>,
    op: impl Fn(&World, &Attached<'_, SimOs>, &[Block]),
) {
    let config = cfg();
    let count = config.classes()[0].count;
    for n in 1.. {
        let world = World::new(&config);
        let victim = world.attach(who(100));
        let prepared = setup(&world, &victim);
        crash_after(Some(n));
        let finished = survive(|| op(&world, &victim, &prepared)).is_some();
        crash_after(None);
        world.os.kill(who(100));
        let sweeper = world.attach(who(200));
        let report = reclaim::sweep(&sweeper, Target::Dead)
            .unwrap_or_else(|e| panic!("{name}, crash {n}: sweep: {e}"));
        assert!(
            report.processes.iter().any(|p| p.pid == 100),
            "{name}, crash {n}: victim not recovered: {report:?}"
        );
        let seg = world.heap.segment(&world.os, "sim");
        audit::audit(&seg).unwrap_or_else(|e| panic!("{name}, crash {n}: {e}"));
        assert_eq!(
            crate::stats::collect(&seg).classes[0].waiters,
            0,
            "{name}, crash {n}: waiter left"
        );
        sweeper.flush_all().unwrap();
        registry::detach(&sweeper.seg, sweeper.me);
        world.os.kill(who(200));
        // A bystander (pid 300) may still own blocks handed to it.
        let bystander_blocks = seg
            .metas
            .iter()
            .filter(|m| {
                m.state
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .owner()
                    .map(|o| o.slot)
                    == Some(2)
            })
            .count() as u32;
        world.os.kill(who(300));
        let late = world.attach(who(201));
        reclaim::sweep(&late, Target::Dead).unwrap();
        late.flush_all().unwrap();
        registry::detach(&late.seg, late.me);
        world.os.kill(who(201));
        let _ = bystander_blocks;
        world.check_all_blocks_once(count);
        if finished {
            assert!(
                n > min_points,
                "{name}: the operation passed only {} crash points",
                n - 1
            );
            return;
        }
    }
}

#[test]
fn crash_anywhere_in_a_refilling_allocation() {
    crash_everywhere(
        "refill",
        4,
        |_, _| vec![],
        |_, v, _| {
            v.alloc(0, W).unwrap();
        },
    );
}

#[test]
fn crash_anywhere_in_an_allocation_from_the_cache() {
    crash_everywhere(
        "cached alloc",
        1,
        |_, v| {
            let b = v.alloc(0, W).unwrap();
            v.drop_guard(b).unwrap();
            vec![]
        },
        |_, v, _| {
            v.alloc(0, W).unwrap();
        },
    );
}

#[test]
fn crash_anywhere_in_a_free_that_flushes_the_cache() {
    crash_everywhere(
        "flushing free",
        4,
        |_, v| (0..5).map(|_| v.alloc(0, W).unwrap()).collect(),
        |_, v, held| {
            for b in held {
                v.drop_guard(*b).unwrap();
            }
        },
    );
}

#[test]
fn crash_anywhere_in_a_free_with_a_waiter() {
    crash_everywhere(
        "free to a waiter",
        3,
        |_, v| {
            let b = v.alloc(0, W).unwrap();
            // Pretend someone waits: the free pushes straight to a shard.
            v.seg.classes[0].wake_seq.fetch_or(
                crate::allocator::WAITERS,
                std::sync::atomic::Ordering::SeqCst,
            );
            vec![b]
        },
        |_, v, held| {
            v.drop_guard(held[0]).unwrap();
        },
    );
}

#[test]
fn crash_anywhere_in_a_release_by_handle() {
    crash_everywhere(
        "release by handle",
        1,
        |_, v| {
            let b = v.alloc(0, W).unwrap();
            v.unguard(b).unwrap();
            vec![b]
        },
        |_, v, held| {
            v.release(held[0].handle()).unwrap();
        },
    );
}

#[test]
fn crash_anywhere_while_taking_over_a_packet() {
    crash_everywhere(
        "take over",
        0,
        |w, _| {
            // A live sender (pid 300) hands the victim a packet.
            let sender = w.attach(Identity { pid: 300, start: 1 });
            let b = sender.alloc(0, W).unwrap();
            sender.unguard(b).unwrap();
            vec![b]
        },
        |_, v, held| {
            v.acquire(held[0].handle()).unwrap();
        },
    );
}

#[test]
fn crash_anywhere_in_a_blocking_allocation() {
    crash_everywhere(
        "blocking alloc",
        2,
        |_, v| {
            let mut held = vec![];
            while let Ok(b) = v.alloc(0, W) {
                held.push(b);
            }
            held
        },
        |_, v, _| {
            let r = v.alloc_blocking(0, W, Some(Duration::from_millis(1)));
            assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        },
    );
}

#[test]
fn crash_anywhere_in_a_sweep() {
    crash_everywhere(
        "sweep",
        3,
        |w, _| {
            // A dead process (pid 400) with blocks cached and allocated.
            let dead = w.attach(Identity { pid: 400, start: 1 });
            for _ in 0..3 {
                dead.alloc(0, W).unwrap();
            }
            w.os.kill(Identity { pid: 400, start: 1 });
            vec![]
        },
        |_, v, _| {
            reclaim::sweep(v, Target::Dead).unwrap();
        },
    );
}

#[test]
fn crash_anywhere_while_attaching() {
    let config = cfg();
    for n in 1..4 {
        let world = World::new(&config);
        world.os.start(who(100));
        crash_after(Some(n));
        let seg = world.heap.segment(&world.os, "sim");
        let done = survive(|| registry::attach(&seg, who(100), 0).unwrap()).is_some();
        crash_after(None);
        world.os.kill(who(100));
        let s = world.attach(who(200));
        reclaim::sweep(&s, Target::Dead).unwrap();
        let live: Vec<_> = crate::stats::collect(&seg).processes;
        assert_eq!(live.len(), 1, "crash {n}: {live:?}");
        if done {
            return;
        }
    }
}

/// A pid reused by a new process: the registered (pid, start time) is dead
/// even though a process with that pid runs; only the old one's blocks are
/// recovered.
#[test]
fn a_reused_pid_is_recognised() {
    let world = World::new(&cfg());
    let old = Identity {
        pid: 77,
        start: 1000,
    };
    let new = Identity {
        pid: 77,
        start: 2000,
    };
    let a = world.attach(old);
    let held: Vec<_> = (0..5).map(|_| a.alloc(0, W).unwrap()).collect();
    world.os.kill(old);
    let b = world.attach(new);
    let kept = b.alloc(0, W).unwrap();
    let s = world.attach(who(1));
    let r = reclaim::sweep(&s, Target::Dead).unwrap();
    assert_eq!(r.processes.len(), 1);
    assert_eq!((r.processes[0].pid, r.processes[0].slot), (77, a.me.slot));
    assert!(r.blocks() >= held.len() as u64);
    assert!(
        b.check(kept.handle()).is_ok(),
        "the new process lost its block"
    );
    assert!(a.check(held[0].handle()).is_err());
    // reclaim(pid) now refuses: pid 77 is a running process again.
    assert!(matches!(
        reclaim::sweep(&s, Target::Pid(77)),
        Err(Error::ProcessAlive { pid: 77, .. })
    ));
    audit::audit(&s.seg).unwrap();
}

#[test]
fn sweeps_are_idempotent_and_safe_in_parallel() {
    for round in 0..20 {
        let world = World::new(
            &PoolConfig::new()
                .class(256, 400)
                .cache_size(16)
                .headspace(0)
                .tailspace(0)
                .max_processes(16),
        );
        let mut held = 0u64;
        for pid in 0..8 {
            let d = world.attach(who(1000 + pid));
            for _ in 0..(10 + pid * 5 + round) {
                d.alloc(0, W).unwrap();
                held += 1;
            }
            world.os.kill(who(1000 + pid));
        }
        let s1 = world.attach(who(1));
        let s2 = world.attach(who(2));
        let (r1, r2) = std::thread::scope(|sc| {
            let t1 = sc.spawn(|| reclaim::sweep(&s1, Target::Dead).unwrap());
            let t2 = sc.spawn(|| reclaim::sweep(&s2, Target::Dead).unwrap());
            (t1.join().unwrap(), t2.join().unwrap())
        });
        // Cached blocks of the dead are recovered too: at least `held`.
        let total = r1.blocks() + r2.blocks();
        assert!(total >= held, "{total} < {held}");
        let a = audit::audit(&s1.seg).unwrap();
        assert_eq!(a.allocated(), 0);
        assert_eq!(a.free(), 400);
        assert!(reclaim::sweep(&s1, Target::Dead).unwrap().is_empty());
    }
}

#[test]
fn orphans_are_recovered() {
    let world = World::new(&cfg());
    let a = world.attach(who(1));
    let b1 = a.alloc(0, W).unwrap();
    // An orphan: its owner's registration vanished without a sweep.
    a.flush_all().unwrap();
    registry::detach(&a.seg, a.me);
    let s = world.attach(who(2));
    let r = reclaim::sweep(&s, Target::Dead).unwrap();
    assert!(r.orphans >= 1, "{r:?}");
    assert!(s.check(b1.handle()).is_err());
    audit::audit(&s.seg).unwrap();
}

#[test]
fn a_full_registry_takes_over_the_slot_of_a_dead_process() {
    let world = World::new(&cfg().max_processes(2));
    let a = world.attach(who(1));
    let _b = world.attach(who(2));
    a.alloc(0, W).unwrap();
    world.os.start(who(3));
    let seg = world.heap.segment(&world.os, "sim");
    assert!(matches!(
        registry::attach(&seg, who(3), 0),
        Err(Error::RegistryFull { .. })
    ));
    assert!(registry::take_over(&seg, who(3), 0).is_err());
    world.os.kill(who(1));
    let me = registry::take_over(&seg, who(3), 0).unwrap();
    assert_eq!(me.slot, a.me.slot);
    assert_ne!(me.gen, a.me.gen);
    let c = Attached::new(seg, me);
    let r = reclaim::sweep(&c, Target::Dead).unwrap();
    assert!(r.orphans >= 1);
    audit::audit(&c.seg).unwrap();
    let _ = Owner { slot: 0, gen: 0 };
}
