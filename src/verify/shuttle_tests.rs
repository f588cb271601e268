//! The real algorithm under Shuttle's randomized schedulers, checked
//! against a reference ledger of ownership.
//!
//! Threads stand for processes; each attaches to a pool in heap memory and
//! runs a random sequence of operations (allocate, allocate blocking, free,
//! hand a packet to another process, take one over, add and drop
//! references, sweep). The ledger records every block a process holds; a
//! block handed out while the ledger says someone holds it is a block given
//! to two owners. At the end the pool must audit clean and hand out every
//! block exactly once (no loss, no false exhaustion). Crash tests let
//! threads die at random crash points, then sweep.
//!
//! Budget: `SSM_SHUTTLE_ITERATIONS` (default 150) schedules per scheduler
//! and test, with fixed seeds (`SSM_SHUTTLE_SEED` overrides). A failing
//! schedule is printed by Shuttle; replay it with
//! `SSM_SHUTTLE_REPLAY='<schedule>' cargo test --lib <test name>`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use shuttle::rand::Rng;
use shuttle::sync::Mutex;

use super::shuttle_os::{explore, may_die, ShuttleOs};
use crate::allocator::{Attached, Block};
use crate::block::Window;
use crate::config::PoolConfig;
use crate::error::Error;
use crate::handle::Handle;
use crate::layout::HeapSegment;
use crate::platform::Identity;
use crate::reclaim::{self, Target};
use crate::{audit, registry};

const W: Window = Window { head: 0, tail: 8 };

/// Who holds which block, and the last generation each block was handed
/// out with.
#[derive(Default)]
struct Ledger {
    held: HashMap<u32, u32>,
    last_gen: HashMap<u32, u32>,
}

impl Ledger {
    fn took(&mut self, pid: u32, b: Block) {
        if let Some(other) = self.held.insert(b.index, pid) {
            panic!(
                "block {} handed to process {pid} while process {other} holds it",
                b.index
            );
        }
        if let Some(g) = self.last_gen.insert(b.index, b.gen) {
            assert!(
                b.gen > g,
                "block {}: generation {} after {g}",
                b.index,
                b.gen
            );
        }
    }
    fn gave(&mut self, b: Block) {
        self.held.remove(&b.index);
    }
    /// A process died: what it held is the sweep's now.
    fn forget(&mut self, pid: u32) {
        self.held.retain(|_, p| *p != pid);
    }
}

struct World {
    os: ShuttleOs,
    heap: HeapSegment<ShuttleOs>,
    ledger: Mutex<Ledger>,
    mailbox: Mutex<VecDeque<Handle>>,
    count: u32,
}

impl World {
    fn new(cfg: &PoolConfig) -> Self {
        let os = ShuttleOs::default();
        let heap = HeapSegment::new(cfg, &os).unwrap();
        World {
            os,
            heap,
            ledger: Mutex::new(Ledger::default()),
            mailbox: Mutex::new(VecDeque::new()),
            count: cfg.classes()[0].count,
        }
    }

    fn attach(&self, pid: u32) -> Attached<'_, ShuttleOs> {
        let who = Identity { pid, start: 1 };
        self.os.become_process(who);
        let seg = self.heap.segment(&self.os, "shuttle");
        let me = registry::attach(&seg, who, 0).unwrap();
        Attached::new(seg, me)
    }

    /// At a quiescent point: sweep the dead, audit, and check that every
    /// block is handed out exactly once.
    fn conserved(&self, sweeper_pid: u32) {
        let s = self.attach(sweeper_pid);
        for h in self.mailbox.lock().unwrap().drain(..) {
            let _ = s.release(h);
        }
        reclaim::sweep(&s, Target::Dead).unwrap();
        audit::audit(&s.seg).unwrap();
        let mut got = std::collections::HashSet::new();
        loop {
            match s.alloc(0, W) {
                Ok(b) => assert!(got.insert(b.index), "block {} handed out twice", b.index),
                Err(Error::Exhausted { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(
            got.len() as u32,
            self.count,
            "blocks lost (or falsely exhausted)"
        );
    }
}

/// One process's random run. Returns normally after freeing everything it
/// holds.
fn run_process(w: &World, pid: u32, ops: usize, blocking: bool) {
    let a = w.attach(pid);
    let mut rng = shuttle::rand::thread_rng();
    let mut held: Vec<Block> = Vec::new();
    for _ in 0..ops {
        match rng.gen_range(0..10) {
            0..=2 => match a.alloc(0, W) {
                Ok(b) => {
                    w.ledger.lock().unwrap().took(pid, b);
                    held.push(b);
                }
                Err(Error::Exhausted { .. }) => {}
                Err(e) => panic!("{e}"),
            },
            3 if blocking => match a.alloc_blocking(0, W, Some(Duration::from_millis(2))) {
                Ok(b) => {
                    w.ledger.lock().unwrap().took(pid, b);
                    held.push(b);
                }
                Err(Error::Timeout { .. }) => {}
                Err(e) => panic!("{e}"),
            },
            4..=5 => {
                if let Some(b) = held.pop() {
                    w.ledger.lock().unwrap().gave(b);
                    a.drop_guard(b).unwrap();
                }
            }
            6 => {
                if let Some(b) = held.pop() {
                    a.unguard(b).unwrap();
                    w.mailbox.lock().unwrap().push_back(b.handle());
                }
            }
            7 => {
                let h = w.mailbox.lock().unwrap().pop_front();
                if let Some(h) = h {
                    match a.acquire(h) {
                        Ok(b) => held.push(b),
                        Err(Error::InvalidHandle { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            8 => {
                if let Some(&b) = held.last() {
                    a.retain(b.handle()).unwrap();
                    a.release(b.handle()).unwrap();
                }
            }
            _ => {
                reclaim::sweep(&a, Target::Dead).unwrap();
            }
        }
    }
    for b in held {
        w.ledger.lock().unwrap().gave(b);
        a.drop_guard(b).unwrap();
    }
}

fn small(cache: u32) -> PoolConfig {
    PoolConfig::new()
        .class(256, 6)
        .shards(2)
        .headspace(0)
        .tailspace(0)
        .cache_size(cache)
        .max_processes(8)
}

/// Runs processes 1 to 3 side by side, eight random operations each.
fn run_three(w: &World, blocking: bool) {
    shuttle::thread::scope(|s| {
        for pid in 1..=3 {
            s.spawn(move || run_process(w, pid, 8, blocking));
        }
    });
}

#[test]
fn concurrent_operations_never_hand_a_block_to_two_owners() {
    for cache in [0, 2] {
        explore(move || {
            let w = World::new(&small(cache));
            run_three(&w, false);
            w.conserved(100);
        });
    }
}

#[test]
fn blocking_allocations_are_always_woken() {
    for cache in [0, 2] {
        explore(move || {
            let w = World::new(&small(cache).class(512, 1));
            // Nobody frees anything after the waiters got their blocks, so
            // a lost wake-up leaves a waiter asleep for ever, which Shuttle
            // reports as a deadlock.
            let all_served = shuttle::sync::Barrier::new(3);
            shuttle::thread::scope(|s| {
                // A holder takes the whole class and frees two blocks.
                s.spawn(|| {
                    let a = w.attach(1);
                    let mut held: Vec<_> = std::iter::from_fn(|| a.alloc(0, W).ok()).collect();
                    for _ in 0..2 {
                        shuttle::thread::yield_now();
                        a.drop_guard(held.pop().unwrap()).unwrap();
                    }
                    all_served.wait();
                    for b in held {
                        a.drop_guard(b).unwrap();
                    }
                });
                // Two allocators that block without a deadline.
                for pid in 2..=3 {
                    let (w, all_served) = (&w, &all_served);
                    s.spawn(move || {
                        let a = w.attach(pid);
                        let b = a.alloc_blocking(0, W, None).unwrap();
                        all_served.wait();
                        a.drop_guard(b).unwrap();
                    });
                }
            });
            w.conserved(100);
        });
    }
}

#[test]
fn mixed_operations_with_blocking_allocations() {
    explore(|| {
        let w = World::new(&small(2));
        run_three(&w, true);
        w.conserved(100);
    });
}

#[test]
fn processes_dying_at_any_step_lose_nothing() {
    for cache in [0, 2] {
        explore(move || {
            let w = World::new(&small(cache));
            shuttle::thread::scope(|s| {
                for pid in 1..=3 {
                    let w = &w;
                    s.spawn(move || {
                        // Processes 1 and 2 may die at any crash point.
                        if pid < 3 {
                            w.os.mortal(6);
                        }
                        if may_die(|| run_process(w, pid, 8, false)).is_none() {
                            // Atomically with the death becoming visible
                            // to sweepers, its ledger entries go.
                            let mut ledger = w.ledger.lock().unwrap();
                            ledger.forget(pid);
                            w.os.bury(Identity { pid, start: 1 });
                        }
                    });
                }
            });
            // The ledger's entries for dead processes are void now.
            w.conserved(100);
        });
    }
}

#[test]
fn sweepers_racing_each_other_and_live_processes() {
    explore(|| {
        let w = World::new(&small(2));
        // Two processes die holding and caching blocks.
        for pid in 1..=2 {
            let a = w.attach(pid);
            for _ in 0..2 {
                a.alloc(0, W).unwrap();
            }
            w.os.bury(Identity { pid, start: 1 });
        }
        shuttle::thread::scope(|s| {
            for pid in 3..=4 {
                let w = &w;
                s.spawn(move || {
                    let a = w.attach(pid);
                    reclaim::sweep(&a, Target::Dead).unwrap();
                });
            }
            s.spawn(|| run_process(&w, 5, 6, false));
        });
        w.conserved(100);
    });
}

/// The classic ABA schedule of a Treiber stack: one process reads the head
/// and its link, others pop two blocks and push the first back; without the
/// tag the stale compare-and-swap would succeed.
#[test]
fn a_stalled_pop_never_succeeds_on_a_recycled_head() {
    explore(|| {
        let w = World::new(
            &PoolConfig::new()
                .class(256, 3)
                .shards(1)
                .headspace(0)
                .tailspace(0)
                .cache_size(0)
                .max_processes(4),
        );
        shuttle::thread::scope(|s| {
            for pid in 1..=3 {
                let w = &w;
                s.spawn(move || {
                    let a = w.attach(pid);
                    for _ in 0..3 {
                        let mut held = Vec::new();
                        for _ in 0..2 {
                            match a.alloc(0, W) {
                                Ok(b) => {
                                    w.ledger.lock().unwrap().took(pid, b);
                                    held.push(b);
                                }
                                Err(Error::Exhausted { .. }) => {}
                                Err(e) => panic!("{e}"),
                            }
                        }
                        for b in held {
                            w.ledger.lock().unwrap().gave(b);
                            a.drop_guard(b).unwrap();
                        }
                    }
                });
            }
        });
        w.conserved(100);
    });
}
