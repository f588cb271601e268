//! The conservation audit: proves that every block is in exactly one place.
//!
//! Every free list is walked from its head (a walk visits each block at
//! most once, so a cycle or a block linked twice is reported, never
//! followed), every block on a list must say `FREE` in that shard, and every
//! block on no list must be held (`OWNED`, `CACHED` or `PUSHING`) by a
//! registered process generation, or be part of a pending operation that
//! the head records. The audit only reads. On a quiescent pool it is exact;
//! on a busy one it retries a few times before it believes an
//! inconsistency, since a list can change under the walk.

use std::fmt;
use std::sync::atomic::Ordering::Acquire;

use crate::block::{kind, BlockState, Owner};
use crate::error::{Error, Result};
use crate::freelist::{op, NIL};
use crate::layout::Segment;
use crate::platform::{Atomic32, Platform};
use crate::registry::state;

/// What the audit counted in one class.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassAudit {
    /// Block size.
    pub size: u32,
    /// Blocks in the class.
    pub blocks: u32,
    /// Blocks on free lists, per shard.
    pub free_per_shard: Vec<u64>,
    /// Blocks in process caches.
    pub cached: u64,
    /// Allocated blocks.
    pub allocated: u64,
    /// Blocks a process is moving to a free list.
    pub pushing: u64,
    /// Blocks in a pending free-list operation.
    pub pending: u64,
}

impl ClassAudit {
    /// Blocks on free lists.
    pub fn free(&self) -> u64 {
        self.free_per_shard.iter().sum()
    }

    /// Every block counted once: equals [`ClassAudit::blocks`] after a
    /// successful audit.
    pub fn accounted(&self) -> u64 {
        self.free() + self.cached + self.allocated + self.pushing + self.pending
    }
}

/// The result of a successful audit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Per class.
    pub classes: Vec<ClassAudit>,
    /// Free-list operations found pending.
    pub pending_operations: u32,
}

impl AuditReport {
    /// Blocks in all.
    pub fn blocks(&self) -> u64 {
        self.classes.iter().map(|c| u64::from(c.blocks)).sum()
    }
    /// Free blocks in all.
    pub fn free(&self) -> u64 {
        self.classes.iter().map(ClassAudit::free).sum()
    }
    /// Allocated blocks in all.
    pub fn allocated(&self) -> u64 {
        self.classes.iter().map(|c| c.allocated).sum()
    }
    /// Cached blocks in all.
    pub fn cached(&self) -> u64 {
        self.classes.iter().map(|c| c.cached).sum()
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>10} {:>8} {:>8} {:>8} {:>9} {:>8}",
            "class", "blocks", "free", "cached", "allocated", "moving"
        )?;
        for c in &self.classes {
            writeln!(
                f,
                "{:>10} {:>8} {:>8} {:>8} {:>9} {:>8}",
                crate::stats::human_size(c.size),
                c.blocks,
                c.free(),
                c.cached,
                c.allocated,
                c.pushing + c.pending
            )?;
        }
        write!(
            f,
            "consistent: {} blocks, each in exactly one place",
            self.blocks()
        )
    }
}

/// Audits the segment (see the module documentation).
pub fn audit<P: Platform>(seg: &Segment<'_, P>) -> Result<AuditReport> {
    let mut last = None;
    for attempt in 0..8 {
        match audit_once(seg) {
            Ok(r) => return Ok(r),
            Err(e) => last = Some(e),
        }
        seg.p.relax(attempt + 6);
    }
    Err(last.expect("at least one attempt"))
}

fn registered<P: Platform>(seg: &Segment<'_, P>, owner: Owner) -> bool {
    let Some(slot) = seg.slots.get(owner.slot as usize) else {
        return false;
    };
    let w = slot.state.load(Acquire);
    w.gen() == owner.gen && w.state() != state::FREE
}

fn audit_once<P: Platform>(seg: &Segment<'_, P>) -> Result<AuditReport> {
    let bad = |detail: String| Err(Error::corrupted(seg.name, detail));
    let mut report = AuditReport::default();
    for (ci, c) in seg.geo.classes.iter().enumerate() {
        let mut a = ClassAudit {
            size: c.size,
            blocks: c.count,
            free_per_shard: vec![0; seg.geo.shards_per_class as usize],
            ..Default::default()
        };
        let mut seen = vec![false; c.count as usize];
        for k in 0..seg.geo.shards_per_class {
            let h = seg.shard(ci, k).head.load(Acquire);
            let mut b = h.index();
            if let Some(s) = h.pending() {
                report.pending_operations += 1;
                let Some(slot) = seg.slots.get(s as usize) else {
                    return bad(format!(
                        "class {ci} shard {k}: pending slot {s} does not exist"
                    ));
                };
                let count = slot.op.count.load(Acquire) as usize;
                let kind_ = slot.op.kind.load(Acquire);
                let next = slot.op.next.load(Acquire);
                if count == 0
                    || count > crate::freelist::MAX_CHAIN
                    || (kind_ != op::POP && kind_ != op::PUSH)
                {
                    return bad(format!("class {ci} shard {k}: slot {s}'s record does not describe its pending operation"));
                }
                for _ in 0..count {
                    if !c.contains(b) {
                        return bad(format!(
                            "class {ci} shard {k}: pending chain leaves the class at {b}"
                        ));
                    }
                    let i = (b - c.first) as usize;
                    if std::mem::replace(&mut seen[i], true) {
                        return bad(format!("block {b} is linked twice (class {ci} shard {k})"));
                    }
                    a.pending += 1;
                    b = seg.metas[b as usize].next.load(Acquire);
                }
                if b != next {
                    return bad(format!("class {ci} shard {k}: pending chain of slot {s} ends in {b}, its record says {next}"));
                }
            }
            while b != NIL {
                if !c.contains(b) {
                    return bad(format!(
                        "class {ci} shard {k}: link to block {b} outside the class"
                    ));
                }
                let i = (b - c.first) as usize;
                if std::mem::replace(&mut seen[i], true) {
                    return bad(format!(
                        "block {b} is linked twice (class {ci} shard {k}): a cycle or two lists"
                    ));
                }
                let st = seg.metas[b as usize].state.load(Acquire);
                if st != BlockState::free(k, st.gen()) {
                    return bad(format!("block {b} is on the free list of class {ci} shard {k} but its state is {st:?}"));
                }
                a.free_per_shard[k as usize] += 1;
                b = seg.metas[b as usize].next.load(Acquire);
            }
        }
        for (i, seen) in seen.iter().enumerate() {
            if *seen {
                continue;
            }
            let b = c.first + i as u32;
            let st = seg.metas[b as usize].state.load(Acquire);
            match st.kind() {
                kind::FREE => {
                    return bad(format!(
                        "block {b} is {st:?} but on no free list: it is lost"
                    ))
                }
                kind::CACHED | kind::OWNED | kind::PUSHING | kind::POPPED => {
                    let owner = st.owner().expect("owned kinds have an owner");
                    if !registered(seg, owner) {
                        return bad(format!(
                            "block {b} ({st:?}) is held by slot {} generation {}, which is not registered; run reclaim",
                            owner.slot, owner.gen
                        ));
                    }
                    match st.kind() {
                        kind::CACHED => a.cached += 1,
                        kind::OWNED => a.allocated += 1,
                        _ => a.pushing += 1,
                    }
                }
                _ => return bad(format!("block {b} has an invalid state word {st:?}")),
            }
        }
        debug_assert_eq!(a.accounted(), u64::from(c.count));
        report.classes.push(a);
    }
    Ok(report)
}
