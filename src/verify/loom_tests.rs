//! loom models of the core operations: the orderings of the free-list head,
//! the links and operation records, block states, and the futex word.
//!
//! Each model is small (two threads, two or three blocks) because loom
//! explores every interleaving and every value a weak load may return. The
//! preemption bound is 2 unless `LOOM_MAX_PREEMPTIONS` says otherwise.

use std::sync::Arc;

use super::loom_os::LoomOs;
use crate::allocator::Attached;
use crate::block::{kind, BlockState, Window};
use crate::config::PoolConfig;
use crate::freelist::{self, ShardId, MAX_CHAIN};
use crate::layout::HeapSegment;
use crate::platform::{Identity, Step};
use crate::{audit, registry};

const SHARD: ShardId = ShardId { class: 0, k: 0 };
const W: Window = Window { head: 0, tail: 1 };

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    b.check(f);
}

struct World {
    os: LoomOs,
    heap: HeapSegment<LoomOs>,
}

fn world(blocks: u32) -> Arc<World> {
    let cfg = PoolConfig::new()
        .class(256, blocks)
        .shards(1)
        .headspace(0)
        .tailspace(0)
        .cache_size(0)
        .max_processes(3);
    let os = LoomOs::default();
    let heap = HeapSegment::new(&cfg, &os).unwrap();
    Arc::new(World { os, heap })
}

impl World {
    fn attach(&self, pid: u32) -> Attached<'_, LoomOs> {
        let who = Identity { pid, start: 1 };
        self.os.start(who);
        let seg = self.heap.segment(&self.os, "loom");
        let me = registry::attach(&seg, who, 0).unwrap();
        Attached::new(seg, me)
    }
}

/// A push and a pop race on one shard: both complete, and every block ends
/// up in exactly one place.
#[test]
fn a_push_and_a_pop_race() {
    model(|| {
        let w = world(3);
        let a = w.attach(1);
        // `a` takes two blocks out and prepares to push the first back: its
        // link must then be written anew (to the third block), so a popper
        // that read a stale link would go wrong.
        let mut out = [0; MAX_CHAIN];
        assert_eq!(freelist::pop(&a.seg, a.me, SHARD, 2, &mut out).unwrap(), 2);
        let x = out[0];
        let m = &a.seg.metas[x as usize];
        let st = m.state.load(std::sync::atomic::Ordering::Relaxed);
        m.state.store(
            BlockState::pushing(a.me, st.gen()),
            std::sync::atomic::Ordering::Relaxed,
        );
        let w2 = w.clone();
        let pusher = loom::thread::spawn(move || {
            let a = w2.attach_again(1);
            freelist::push(&a.seg, a.me, SHARD, &[x]).unwrap();
        });
        let b = w.attach(2);
        let mut got = [0; MAX_CHAIN];
        let n = freelist::pop(&b.seg, b.me, SHARD, 1, &mut got).unwrap();
        assert_eq!(n, 1, "the shard always holds a block");
        pusher.join().unwrap();
        let st = b.seg.metas[got[0] as usize]
            .state
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!((st.kind(), st.owner()), (kind::POPPED, Some(b.me)));
        let report = audit::audit(&b.seg).unwrap();
        assert_eq!(report.free() + report.classes[0].pending, 1);
        assert_eq!(
            report.classes[0].free_per_shard[0] + report.classes[0].pending,
            1
        );
    });
}

/// Two pops race for two blocks: each gets a different one.
#[test]
fn two_pops_get_different_blocks() {
    model(|| {
        let w = world(2);
        let a = w.attach(1);
        let _b = w.attach(2);
        let w2 = w.clone();
        let other = loom::thread::spawn(move || {
            let b = w2.attach_again(2);
            let mut out = [0; MAX_CHAIN];
            assert_eq!(freelist::pop(&b.seg, b.me, SHARD, 1, &mut out).unwrap(), 1);
            out[0]
        });
        let mut out = [0; MAX_CHAIN];
        assert_eq!(freelist::pop(&a.seg, a.me, SHARD, 1, &mut out).unwrap(), 1);
        let theirs = other.join().unwrap();
        assert_ne!(out[0], theirs, "one block popped twice");
        audit::audit(&a.seg).unwrap();
    });
}

/// A pop stops right after installing its pending head; another process's
/// pop completes it and then takes the next block.
#[test]
fn a_stopped_pop_is_completed_by_the_next_visitor() {
    model(|| {
        let w = world(2);
        let a = w.attach(1);
        let b = w.attach(2);
        let w2 = w.clone();
        let stopped = loom::thread::spawn(move || {
            let a = w2.attach_again(1);
            w2.os.stop_at(Some(Step::Pending));
            LoomOs::may_stop(|| {
                let mut out = [0; MAX_CHAIN];
                freelist::pop(&a.seg, a.me, SHARD, 1, &mut out).unwrap()
            })
        });
        let mut out = [0; MAX_CHAIN];
        let n = freelist::pop(&b.seg, b.me, SHARD, 1, &mut out).unwrap();
        let r = stopped.join().unwrap();
        assert!(r.is_none() || r == Some(1));
        assert_eq!(n, 1);
        // If `a` stopped after `b` was done, its pending pop waits for the
        // next visitor (or the sweep); be that visitor.
        freelist::complete_all_of(&b.seg, a.me.slot).unwrap();
        // Whatever the interleaving: the two blocks went to `a` and `b`.
        let owners: Vec<_> = (0..2)
            .map(|i| {
                b.seg.metas[i]
                    .state
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .owner()
            })
            .collect();
        assert!(
            owners.contains(&Some(a.me)) && owners.contains(&Some(b.me)),
            "{owners:?}"
        );
        audit::audit(&b.seg).unwrap();
    });
}

/// An allocator sleeps on the futex word while another process frees the
/// only block: it must be woken (a lost wake-up is a deadlock, which loom
/// reports).
#[test]
fn a_free_wakes_a_blocked_allocator() {
    model(|| {
        let w = world(1);
        let a = w.attach(1);
        let held = a.alloc(0, W).unwrap();
        let w2 = w.clone();
        let waiter = loom::thread::spawn(move || {
            let b = w2.attach(2);
            let blk = b.alloc_blocking(0, W, None).unwrap();
            blk.index
        });
        a.drop_guard(held).unwrap();
        assert_eq!(waiter.join().unwrap(), held.index);
    });
}

impl World {
    /// A second `Attached` for a slot already attached (the same process
    /// on another thread of the model).
    fn attach_again(&self, pid: u32) -> Attached<'_, LoomOs> {
        let seg = self.heap.segment(&self.os, "loom");
        let slot = (0..seg.slots.len())
            .find(|&i| {
                seg.slots[i]
                    .state
                    .load(std::sync::atomic::Ordering::Acquire)
                    .pid()
                    == pid
            })
            .expect("attached");
        let gen = seg.slots[slot]
            .state
            .load(std::sync::atomic::Ordering::Acquire)
            .gen();
        Attached::new(
            seg,
            crate::block::Owner {
                slot: slot as u32,
                gen,
            },
        )
    }
}
