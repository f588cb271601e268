//! The reclaim sweep: recovers everything a dead process held or left half
//! done.
//!
//! For every registry slot whose process is gone (its `/proc` entry is
//! missing, it is a zombie, or its pid now belongs to a process with
//! another start time), the sweeper
//!
//! 1. moves the slot `LIVE` → `RECLAIMING` (compare-and-swap; a slot already
//!    `RECLAIMING` because an earlier sweeper died is simply continued);
//! 2. completes every free-list operation the process left pending
//!    ([`crate::freelist::complete_all_of`]): afterwards its popped blocks
//!    are `CACHED` by it and its pushed blocks are `FREE` in their list, and
//!    no list mentions the slot any more;
//! 3. scans the metadata table and takes every block whose owner tag is
//!    that slot *and generation*, whatever its kind (`OWNED`, `CACHED`,
//!    `PUSHING`), with one compare-and-swap each to `PUSHING` by the
//!    sweeper, then pushes them in chains to the dead process's local shard;
//! 4. forgets the slot's registration as a blocked allocator;
//! 5. moves the slot `RECLAIMING` → `FREE` (the next claim increments its
//!    generation).
//!
//! It then takes "orphans": blocks tagged with a slot generation that is no
//! longer registered, and wakes every blocked allocator.
//!
//! # Why it is safe while others run
//!
//! Every block is taken with a compare-and-swap that expects the exact
//! state word read, which names the dead slot and generation. A live
//! process can only change such a block by adopting it (a compare-and-swap
//! on the same word: one of the two wins) or by taking it from a dead
//! process's cache (likewise). Two sweepers on the same slot race block by
//! block, and each block is won once. A delayed sweeper can never take a
//! block of the slot's next process: that process tags its blocks with the
//! next generation. Running the sweep again finds nothing left to do, so it
//! is idempotent.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};

use crate::allocator::Attached;
use crate::block::{kind, BlockState, Owner};
use crate::error::{Error, Result};
use crate::freelist::{self, ShardId, MAX_CHAIN};
use crate::platform::{Platform, Step};
use crate::registry::{self, state, SlotWord, Verdict};

/// One process whose resources a sweep recovered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredProcess {
    /// Its pid.
    pub pid: u32,
    /// Its registry slot.
    pub slot: u32,
    /// Blocks recovered from it.
    pub blocks: u64,
}

/// What a sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    /// Processes recovered.
    pub processes: Vec<RecoveredProcess>,
    /// Blocks recovered per class, in class order.
    pub blocks_per_class: Vec<u64>,
    /// Pending free-list operations completed on behalf of dead processes.
    pub operations_completed: u32,
    /// Blocks recovered whose owner was no longer registered.
    pub orphans: u64,
}

impl ReclaimReport {
    /// Blocks recovered in all.
    pub fn blocks(&self) -> u64 {
        self.blocks_per_class.iter().sum()
    }

    /// Adds what another sweep recovered.
    pub fn merge(&mut self, other: ReclaimReport) {
        self.processes.extend(other.processes);
        if self.blocks_per_class.len() < other.blocks_per_class.len() {
            self.blocks_per_class
                .resize(other.blocks_per_class.len(), 0);
        }
        for (a, b) in self.blocks_per_class.iter_mut().zip(other.blocks_per_class) {
            *a += b;
        }
        self.operations_completed += other.operations_completed;
        self.orphans += other.orphans;
    }

    /// Whether nothing needed recovering.
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty() && self.blocks() == 0 && self.operations_completed == 0
    }
}

impl std::fmt::Display for ReclaimReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "recovered {} process(es), {} block(s)",
            self.processes.len(),
            self.blocks()
        )?;
        if self.orphans > 0 {
            write!(f, " ({} orphaned)", self.orphans)?;
        }
        if self.operations_completed > 0 {
            write!(
                f,
                ", completed {} pending operation(s)",
                self.operations_completed
            )?;
        }
        for p in &self.processes {
            write!(
                f,
                "\n  pid {} (slot {}): {} block(s)",
                p.pid, p.slot, p.blocks
            )?;
        }
        Ok(())
    }
}

/// Which processes to recover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every dead process.
    Dead,
    /// Only the process with this pid, which must be dead.
    Pid(u32),
}

/// Runs the sweep as `att` (which owns the recovered blocks while it pushes
/// them).
pub fn sweep<P: Platform>(att: &Attached<'_, P>, target: Target) -> Result<ReclaimReport> {
    let seg = &att.seg;
    let mut report = ReclaimReport {
        blocks_per_class: vec![0; seg.geo.classes.len()],
        ..Default::default()
    };
    for i in 0..seg.slots.len() {
        if i as u32 == att.me.slot {
            continue;
        }
        let verdict = registry::judge(seg, i);
        if let Target::Pid(pid) = target {
            let w = seg.slots[i].state.load(Acquire);
            if w.pid() != pid || w.state() == state::FREE {
                continue;
            }
            if verdict == Verdict::Keep {
                return Err(Error::ProcessAlive {
                    pool: seg.name.into(),
                    pid,
                });
            }
        }
        if let Verdict::Recover(w) = verdict {
            recover_slot(att, i as u32, w, &mut report)?;
        }
    }
    let orphans = take_blocks(att, &mut report, |st| is_orphan(att, st))?;
    report.orphans = orphans;
    if !report.is_empty() {
        for class in 0..seg.geo.classes.len() {
            att.wake(class);
        }
    }
    Ok(report)
}

/// Recovers slot `i`, last seen as `w`.
fn recover_slot<P: Platform>(
    att: &Attached<'_, P>,
    i: u32,
    w: SlotWord,
    report: &mut ReclaimReport,
) -> Result<()> {
    let seg = &att.seg;
    let slot = &seg.slots[i as usize];
    let w = if w.state() == state::RECLAIMING {
        w
    } else {
        let r = w.with_state(state::RECLAIMING);
        if slot.state.compare_exchange(w, r, AcqRel, Relaxed).is_err() {
            // It attached, detached or was taken by another sweeper
            // meanwhile; the next sweep judges it afresh.
            return Ok(());
        }
        r
    };
    report.operations_completed += freelist::complete_all_of(seg, i)?;
    let dead = Owner {
        slot: i,
        gen: w.gen(),
    };
    let before = report.blocks();
    take_blocks(att, report, |st| st.owner() == Some(dead))?;
    registry::forget_waiter(seg, i as usize, w.gen());
    // The operation record is left alone: the slot may already belong to
    // a new process (another sweeper finished first), and a claim clears it.
    let _ = slot
        .state
        .compare_exchange(w, w.with_state(state::FREE), AcqRel, Relaxed);
    report.processes.push(RecoveredProcess {
        pid: w.pid(),
        slot: i,
        blocks: report.blocks() - before,
    });
    Ok(())
}

/// Whether `st` is tagged with a slot generation that is not registered.
fn is_orphan<P: Platform>(att: &Attached<'_, P>, st: BlockState) -> bool {
    let Some(owner) = st.owner() else {
        return false;
    };
    let Some(slot) = att.seg.slots.get(owner.slot as usize) else {
        // A slot number past the registry: nobody can ever claim it.
        return true;
    };
    let w = slot.state.load(Acquire);
    // The block was tagged after its owner became LIVE, and we read the tag
    // first, so `w` is that registration or a later one.
    w.gen() != owner.gen || w.state() == state::FREE
}

/// Takes every block matching `pred` and pushes it to a free list. Returns
/// how many it took.
fn take_blocks<P: Platform>(
    att: &Attached<'_, P>,
    report: &mut ReclaimReport,
    pred: impl Fn(BlockState) -> bool,
) -> Result<u64> {
    let seg = &att.seg;
    let mut taken = 0;
    for (class, c) in seg.geo.classes.iter().enumerate() {
        let mut chain = [0u32; MAX_CHAIN];
        let mut len = 0;
        let mut home = 0;
        for b in c.first..c.first + c.count {
            let m = &seg.metas[b as usize];
            let st = m.state.load(Acquire);
            if !matches!(
                st.kind(),
                kind::OWNED | kind::CACHED | kind::PUSHING | kind::POPPED
            ) || !pred(st)
            {
                continue;
            }
            let ours = BlockState::pushing(att.me, st.gen());
            if m.state.compare_exchange(st, ours, AcqRel, Relaxed).is_err() {
                continue;
            }
            seg.p.step(Step::Sweeping);
            home = st.slot() % seg.geo.shards_per_class;
            chain[len] = b;
            len += 1;
            if len == MAX_CHAIN {
                freelist::push(seg, att.me, ShardId { class, k: home }, &chain)?;
                len = 0;
            }
            taken += 1;
            report.blocks_per_class[class] += 1;
        }
        if len > 0 {
            freelist::push(seg, att.me, ShardId { class, k: home }, &chain[..len])?;
        }
    }
    Ok(taken)
}
