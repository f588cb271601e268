//! A shard's free list: a Treiber stack of block indices whose operations
//! any process can finish, so that a process killed at any instruction
//! leaves no block lost and no list broken.
//!
//! The stack is R. K. Treiber's (IBM RJ 5118, 1986): a head word changed
//! only by compare-and-swap, with a tag against ABA. A plain Treiber pop has
//! a crash window: after the compare-and-swap has unlinked a block and
//! before its new owner is recorded, the block is on no list and owned by no
//! one. A push has the mirror window. Here every operation is done in two
//! head changes with an operation record in between that anyone can read:
//!
//! 1. The initiator walks the chain it will pop (up to [`MAX_CHAIN`] blocks)
//!    or links the chain it will push, and writes an [`OpRecord`] in its
//!    registry slot: kind, shard, the tag the pending head will carry, the
//!    chain length, its first block and the index that follows it.
//! 2. One compare-and-swap puts a *pending* head in place: same or new top
//!    block, tag + 1, and the initiator's slot in the `pend` field. This is
//!    the linearization point of the operation.
//! 3. Completion, by the initiator or by any process that finds the head
//!    pending: re-tag every block of the chain (`FREE` → `POPPED` by the
//!    initiator for a pop, `PUSHING` → `FREE` for a push) and swing the head
//!    to its final value with tag + 1 and no pending slot.
//!
//! While a head is pending nobody else changes that list; they complete the
//! operation first (after a short wait, to let a running initiator finish).
//! So a crash after step 2 is finished by the next visitor, or by the
//! reclaim sweep, which completes every pending operation of a dead process
//! before it looks at its blocks. A crash before step 2 changed nothing
//! shared except the initiator's private record and links.
//!
//! # The head word
//!
//! ```text
//!  63                  32 31        22 21                    0
//! +----------------------+------------+-----------------------+
//! |        tag (32)      |  pend (10) |       index (22)      |
//! +----------------------+------------+-----------------------+
//! ```
//!
//! `index` is the global index of the top block, or [`NIL`]. `pend` is 0, or
//! the registry slot + 1 of a process whose operation is pending. `tag` is
//! incremented by every change of the word, so a compare-and-swap with a
//! head read before any change fails: the walk a popper made under a head
//! value is still the list when its compare-and-swap succeeds (ABA would
//! need 2^32 changes of one shard while one process is stalled).
//!
//! # Why a delayed helper cannot do harm
//!
//! A helper re-reads the head after reading the record and the block
//! states; only if the head is unchanged were those values read while the
//! operation was pending. Its state compare-and-swaps expect exactly those
//! values, and the block generation advances whenever a block leaves a free
//! list, so once the operation has completed, none of them can succeed
//! again. Its final head compare-and-swap expects the pending head, whose
//! tag is unique.

use std::fmt;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

use crate::block::{kind, next_gen, BlockState, Owner};
use crate::error::{Error, Result};
use crate::layout::Segment;
use crate::platform::{Atomic32, Packed, Platform, Step, Word};

/// The end-of-list index.
pub const NIL: u32 = (1 << 22) - 1;
/// The longest chain one operation moves.
pub const MAX_CHAIN: usize = 64;
/// Failed compare-and-swaps one operation tolerates before it reports that
/// someone keeps changing the list (every failure means another operation
/// succeeded, so a well-behaved pool never gets near this).
pub const MAX_ATTEMPTS: u32 = 1 << 20;
/// How many times a visitor re-reads a pending head before completing the
/// operation itself.
const PATIENCE: u32 = 8;

/// The ordering that publishes an operation record (a test-only mutant
/// weakens it, to show that the loom models notice).
const PUBLISH: std::sync::atomic::Ordering = if cfg!(feature = "mutant-relaxed-publish") {
    Relaxed
} else {
    Release
};
/// The ordering of the compare-and-swap that installs a pending pop.
const INSTALL: std::sync::atomic::Ordering = if cfg!(feature = "mutant-relaxed-publish") {
    Relaxed
} else {
    AcqRel
};

/// A decoded head word.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Head(u64);

impl Head {
    /// A head with top block `index`, pending slot `pend` (0 for none, else
    /// slot + 1) and `tag`.
    #[inline]
    pub const fn new(index: u32, pend: u32, tag: u32) -> Self {
        Self((index as u64 & NIL as u64) | ((pend as u64 & 0x3FF) << 22) | ((tag as u64) << 32))
    }
    /// The top block, or [`NIL`].
    #[inline]
    pub const fn index(self) -> u32 {
        (self.0 & NIL as u64) as u32
    }
    /// The registry slot whose operation is pending.
    #[inline]
    pub const fn pending(self) -> Option<u32> {
        let p = ((self.0 >> 22) & 0x3FF) as u32;
        if p == 0 {
            None
        } else {
            Some(p - 1)
        }
    }
    /// The tag.
    #[inline]
    pub const fn tag(self) -> u32 {
        (self.0 >> 32) as u32
    }
    /// The tag a change of this head carries.
    #[inline]
    const fn next_tag(self) -> u32 {
        if cfg!(feature = "mutant-no-tag") {
            self.tag()
        } else {
            self.tag().wrapping_add(1)
        }
    }
}

crate::platform::packed_newtype!(Head);

impl fmt::Debug for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Head{{top ")?;
        match self.index() {
            NIL => write!(f, "nil")?,
            i => write!(f, "{i}")?,
        }
        if let Some(p) = self.pending() {
            write!(f, ", pending slot {p}")?;
        }
        write!(f, ", tag {}}}", self.tag())
    }
}

/// The free-list head of one shard.
#[repr(C)]
pub struct ShardHead<P: Platform> {
    /// The head word (see the module documentation).
    pub head: Word<P::U64, Head>,
}

impl<P: Platform> ShardHead<P> {
    /// A head over the list starting at `top`.
    pub fn new(top: u32) -> Self {
        Self {
            head: Word::new(Head::new(top, 0, 0)),
        }
    }
}

/// Operation kinds in an [`OpRecord`].
pub mod op {
    /// No operation recorded.
    pub const NONE: u32 = 0;
    /// Pop a chain.
    pub const POP: u32 = 1;
    /// Push a chain.
    pub const PUSH: u32 = 2;
}

/// A process's record of its free-list operation in progress, kept in its
/// registry slot. Valid for whoever finds a head pending with that slot:
/// written (release) before the pending head is installed and not changed
/// until the head no longer carries that tag.
#[repr(C)]
pub struct OpRecord<P: Platform> {
    /// [`op::POP`] or [`op::PUSH`].
    pub kind: P::U32,
    /// Global shard number.
    pub shard: P::U32,
    /// Tag of the pending head.
    pub tag: P::U32,
    /// Blocks in the chain (1 to [`MAX_CHAIN`]).
    pub count: P::U32,
    /// First block of the chain (the pending head's top).
    pub first: P::U32,
    /// Pop: the block after the chain. Push: the old top, which the
    /// chain's last block links to.
    pub next: P::U32,
    /// The initiator's slot generation.
    pub owner_gen: P::U32,
    /// Reserved, zero.
    pub reserved: P::U32,
}

impl<P: Platform> OpRecord<P> {
    /// An empty record.
    pub fn new() -> Self {
        Self {
            kind: P::U32::new(op::NONE),
            shard: P::U32::new(0),
            tag: P::U32::new(0),
            count: P::U32::new(0),
            first: P::U32::new(0),
            next: P::U32::new(0),
            owner_gen: P::U32::new(0),
            reserved: P::U32::new(0),
        }
    }

    /// Clears the record.
    pub fn reset(&self) {
        self.kind.store(op::NONE, Relaxed);
        self.shard.store(0, Relaxed);
        self.tag.store(0, Relaxed);
        self.count.store(0, Relaxed);
        self.first.store(0, Relaxed);
        self.next.store(0, Relaxed);
        self.owner_gen.store(0, Relaxed);
    }

    #[allow(clippy::too_many_arguments)]
    fn write(&self, kind: u32, shard: u32, tag: u32, count: u32, first: u32, next: u32, gen: u16) {
        // Release: a helper that acquires any of these words and then finds
        // the head unchanged knows the record belongs to that head (see
        // `read`).
        self.kind.store(kind, PUBLISH);
        self.shard.store(shard, PUBLISH);
        self.tag.store(tag, PUBLISH);
        self.count.store(count, PUBLISH);
        self.first.store(first, PUBLISH);
        self.next.store(next, PUBLISH);
        self.owner_gen.store(u32::from(gen), PUBLISH);
    }

    fn read(&self) -> Record {
        // Acquire: if any value comes from a later operation of the same
        // process, that process had already seen this head replaced, so the
        // caller's re-read of the head sees the change too.
        Record {
            kind: self.kind.load(Acquire),
            shard: self.shard.load(Acquire),
            tag: self.tag.load(Acquire),
            count: self.count.load(Acquire),
            first: self.first.load(Acquire),
            next: self.next.load(Acquire),
            owner_gen: self.owner_gen.load(Acquire),
        }
    }
}

impl<P: Platform> Default for OpRecord<P> {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone, Copy, Debug)]
struct Record {
    kind: u32,
    shard: u32,
    tag: u32,
    count: u32,
    first: u32,
    next: u32,
    owner_gen: u32,
}

/// A shard: class `class`, shard `k` within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardId {
    /// Class index.
    pub class: usize,
    /// Shard within the class.
    pub k: u32,
}

impl ShardId {
    fn global<P: Platform>(self, seg: &Segment<'_, P>) -> u32 {
        self.class as u32 * seg.geo.shards_per_class + self.k
    }
}

fn corrupted<P: Platform>(seg: &Segment<'_, P>, id: ShardId, what: fmt::Arguments<'_>) -> Error {
    Error::corrupted(
        seg.name,
        format!("free list of class {} shard {}: {what}", id.class, id.k),
    )
}

/// Pops up to `max` blocks from shard `id` into `out`; they end up `POPPED`
/// by `me`, in list order. Returns how many (0: the shard is empty).
///
/// `POPPED` rather than `CACHED`: while the operation is still pending its
/// blocks must not be taken by an allocator that scans caches, so they
/// become cached only when the owner moves them into its magazine.
pub fn pop<P: Platform>(
    seg: &Segment<'_, P>,
    me: Owner,
    id: ShardId,
    max: usize,
    out: &mut [u32; MAX_CHAIN],
) -> Result<usize> {
    let max = max.clamp(1, MAX_CHAIN);
    let head = &seg.shard(id.class, id.k).head;
    let class = &seg.geo.classes[id.class];
    let rec = &seg.slots[me.slot as usize].op;
    let mut attempt = 0;
    loop {
        attempt += 1;
        if attempt > MAX_ATTEMPTS {
            return Err(corrupted(seg, id, format_args!("the head keeps changing")));
        }
        // SeqCst: a blocked allocator's re-check must not miss a block made
        // available before it registered (see `allocator`).
        let h = head.load(SeqCst);
        if h.pending().is_some() {
            help(seg, id, h)?;
            continue;
        }
        if h.index() == NIL {
            return Ok(0);
        }
        // Walk the chain. The reads may be stale, but if the head still has
        // this tag at the compare-and-swap, nothing changed in between.
        let mut n = 0;
        let mut b = h.index();
        while n < max && b != NIL {
            if !class.contains(b) {
                break;
            }
            out[n] = b;
            n += 1;
            b = seg.metas[b as usize].next.load(Relaxed);
        }
        if (b != NIL && !class.contains(b)) || n == 0 {
            if head.load(Acquire) == h {
                return Err(corrupted(
                    seg,
                    id,
                    format_args!("link to block {b} outside the class"),
                ));
            }
            continue;
        }
        if cfg!(feature = "mutant-unrecorded-pop") {
            // The plain Treiber pop: unlink first, record the owner after.
            let next = Head::new(b, 0, h.next_tag());
            if head.compare_exchange(h, next, AcqRel, Relaxed).is_err() {
                seg.p.relax(attempt.min(16));
                continue;
            }
            seg.p.step(Step::Pending);
            for &blk in &out[..n] {
                let m = &seg.metas[blk as usize];
                let st = m.state.load(Acquire);
                m.state
                    .store(BlockState::popped(me, next_gen(st.gen())), Release);
            }
            return Ok(n);
        }
        let pending = Head::new(out[0], me.slot + 1, h.next_tag());
        rec.write(
            op::POP,
            id.global(seg),
            pending.tag(),
            n as u32,
            out[0],
            b,
            me.gen,
        );
        seg.p.step(Step::Recorded);
        // AcqRel: the record and the chain's links were written before.
        match head.compare_exchange(h, pending, INSTALL, Relaxed) {
            Ok(_) => {
                seg.p.step(Step::Pending);
                complete(seg, id, pending)?;
                return Ok(n);
            }
            Err(_) => seg.p.relax(attempt.min(16)),
        }
    }
}

/// Pushes `chain` (blocks in state `PUSHING` by `me`, at most
/// [`MAX_CHAIN`]) onto shard `id`; they end up `FREE` in that shard.
pub fn push<P: Platform>(
    seg: &Segment<'_, P>,
    me: Owner,
    id: ShardId,
    chain: &[u32],
) -> Result<()> {
    let n = chain.len();
    assert!((1..=MAX_CHAIN).contains(&n), "chain of {n} blocks");
    let head = &seg.shard(id.class, id.k).head;
    let rec = &seg.slots[me.slot as usize].op;
    for w in chain.windows(2) {
        seg.metas[w[0] as usize].next.store(w[1], Relaxed);
    }
    let last = &seg.metas[chain[n - 1] as usize].next;
    let mut attempt = 0;
    loop {
        attempt += 1;
        if attempt > MAX_ATTEMPTS {
            return Err(corrupted(seg, id, format_args!("the head keeps changing")));
        }
        let h = head.load(Acquire);
        if h.pending().is_some() {
            help(seg, id, h)?;
            continue;
        }
        last.store(h.index(), Relaxed);
        let pending = Head::new(chain[0], me.slot + 1, h.next_tag());
        rec.write(
            op::PUSH,
            id.global(seg),
            pending.tag(),
            n as u32,
            chain[0],
            h.index(),
            me.gen,
        );
        seg.p.step(Step::Recorded);
        // SeqCst: the blocks become available here; a free that then reads
        // the waiters bit must not miss a waiter that announced itself before
        // (see `allocator`).
        match head.compare_exchange(h, pending, SeqCst, Relaxed) {
            Ok(_) => {
                seg.p.step(Step::Pending);
                return complete(seg, id, pending);
            }
            Err(_) => seg.p.relax(attempt.min(16)),
        }
    }
}

/// Deals with a pending head found on shard `id`: waits a little for its
/// initiator, then completes the operation.
fn help<P: Platform>(seg: &Segment<'_, P>, id: ShardId, h: Head) -> Result<()> {
    let head = &seg.shard(id.class, id.k).head;
    for i in 0..PATIENCE {
        seg.p.relax(i);
        if head.load(Acquire) != h {
            return Ok(());
        }
    }
    complete(seg, id, h)
}

/// Completes the operation that `h` (a pending head of shard `id`) stands
/// for, if it is still pending. Idempotent; safe to run by any number of
/// processes at once.
pub fn complete<P: Platform>(seg: &Segment<'_, P>, id: ShardId, h: Head) -> Result<()> {
    let head = &seg.shard(id.class, id.k).head;
    let class = &seg.geo.classes[id.class];
    let Some(slot) = h.pending() else {
        return Ok(());
    };
    if slot >= seg.geo.nslots {
        return if head.load(Acquire) == h {
            Err(corrupted(
                seg,
                id,
                format_args!("pending slot {slot} does not exist"),
            ))
        } else {
            Ok(())
        };
    }
    let r = seg.slots[slot as usize].op.read();
    if head.load(Acquire) != h {
        return Ok(());
    }
    // The record belongs to this head (see `OpRecord::read`); it must
    // describe it.
    if r.shard != id.global(seg)
        || r.tag != h.tag()
        || r.first != h.index()
        || r.count == 0
        || r.count as usize > MAX_CHAIN
        || (r.kind != op::POP && r.kind != op::PUSH)
    {
        return Err(corrupted(
            seg,
            id,
            format_args!(
                "the record of pending slot {slot} does not match the head ({r:?}, {h:?})"
            ),
        ));
    }
    let owner = Owner {
        slot,
        gen: r.owner_gen as u16,
    };
    let count = r.count as usize;
    let mut blocks = [0u32; MAX_CHAIN];
    let mut states = [BlockState::from_bits(0); MAX_CHAIN];
    let mut b = r.first;
    for i in 0..count {
        if !class.contains(b) {
            return still_pending_is_corrupt(
                seg,
                id,
                h,
                format_args!("chain leaves the class at {b}"),
            );
        }
        blocks[i] = b;
        let m = &seg.metas[b as usize];
        states[i] = m.state.load(Acquire);
        b = m.next.load(Relaxed);
    }
    if b != r.next {
        return still_pending_is_corrupt(
            seg,
            id,
            h,
            format_args!(
                "chain of slot {slot} ends in {b}, the record says {}",
                r.next
            ),
        );
    }
    // Only values read while the head was still pending may be used.
    if head.load(Acquire) != h {
        return Ok(());
    }
    for i in 0..count {
        let st = states[i];
        let (from_kind, target, done) = if r.kind == op::POP {
            let target = BlockState::popped(owner, next_gen(st.gen()));
            let done = st.kind() == kind::POPPED && st.owner() == Some(owner);
            (kind::FREE, target, done)
        } else {
            let target = BlockState::free(id.k, st.gen());
            let done = st.kind() == kind::FREE && st.slot() == id.k;
            let ok = st.kind() == kind::PUSHING && st.owner() == Some(owner);
            (if ok { kind::PUSHING } else { u8::MAX }, target, done)
        };
        if done {
            continue;
        }
        if st.kind() != from_kind {
            return still_pending_is_corrupt(
                seg,
                id,
                h,
                format_args!("block {} of slot {slot}'s chain is {st:?}", blocks[i]),
            );
        }
        let m = &seg.metas[blocks[i] as usize];
        if let Err(now) = m.state.compare_exchange(st, target, AcqRel, Acquire) {
            // Another helper got there first (now == target), or the
            // operation completed and the block moved on.
            if now != target && head.load(Acquire) == h {
                return Err(corrupted(
                    seg,
                    id,
                    format_args!(
                        "block {} changed to {now:?} during a pending operation",
                        blocks[i]
                    ),
                ));
            }
        }
        seg.p.step(Step::Completing);
    }
    let top = if r.kind == op::POP { r.next } else { r.first };
    let done = Head::new(top, 0, h.next_tag());
    // Release: the next popper of these blocks acquires their new states
    // through this head. Failure means someone else completed it.
    let _ = head.compare_exchange(h, done, AcqRel, Relaxed);
    Ok(())
}

fn still_pending_is_corrupt<P: Platform>(
    seg: &Segment<'_, P>,
    id: ShardId,
    h: Head,
    what: fmt::Arguments<'_>,
) -> Result<()> {
    if seg.shard(id.class, id.k).head.load(Acquire) == h {
        Err(corrupted(seg, id, what))
    } else {
        Ok(())
    }
}

/// Completes every operation of `slot` that is pending on any shard.
/// Used by the reclaim sweep before it looks at a dead process's blocks.
pub fn complete_all_of<P: Platform>(seg: &Segment<'_, P>, slot: u32) -> Result<u32> {
    let mut done = 0;
    for class in 0..seg.geo.classes.len() {
        for k in 0..seg.geo.shards_per_class {
            let id = ShardId { class, k };
            let h = seg.shard(class, k).head.load(Acquire);
            if h.pending() == Some(slot) {
                complete(seg, id, h)?;
                done += 1;
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_round_trips() {
        let h = Head::new(12345, 7, 0xFFFF_FFFF);
        assert_eq!(
            (h.index(), h.pending(), h.tag()),
            (12345, Some(6), u32::MAX)
        );
        assert_eq!(h.next_tag(), 0);
        let e = Head::new(NIL, 0, 3);
        assert_eq!((e.index(), e.pending()), (NIL, None));
        assert_eq!(Head::from_bits(h.to_bits()), h);
    }
}
