//! Per-block metadata: the state word that says where a block is, who owns
//! it and how many references it has; the data window; the free-list link.
//!
//! Metadata lives in a table apart from the payload, so that a payload
//! overrun cannot reach it and so that a sweeper can read every block's
//! owner without touching payload memory.
//!
//! # The state word
//!
//! ```text
//!  63              36 35        24 23      14 13        4   3   2     0
//! +------------------+------------+----------+-----------+-----+-------+
//! |     gen (28)     |  slot gen  | slot (10)| refs (10) |guard| kind  |
//! |                  |    (12)    |          |           |     |  (3)  |
//! +------------------+------------+----------+-----------+-----+-------+
//! ```
//!
//! `kind` says where the block is:
//!
//! | kind      | where                                    | slot / slot gen       |
//! |-----------|------------------------------------------|-----------------------|
//! | `FREE`    | in a shard's free list (or a pending op) | shard in class / 0    |
//! | `CACHED`  | in the magazine of a process             | owner                 |
//! | `OWNED`   | allocated; handles with `gen` are valid  | owner                 |
//! | `PUSHING` | being pushed to a free list by its owner | owner                 |
//! | `POPPED`  | popped from a free list for its owner    | owner                 |
//!
//! For an `OWNED` block, `refs` counts the references to the allocation and
//! `guard` says that a [`PacketBuf`](crate::PacketBuf) holds one of them (at
//! most one guard exists per block, in all processes together, so the bytes
//! are never shared mutably, and a release by handle can never take the
//! guard's reference).
//!
//! Owner, references, guard and generation share one word, so every change
//! of a block (allocation, the last release, a hand-over, a sweep taking it)
//! is one compare-and-swap: there is no moment at which one has changed and
//! another not. `gen` advances when a block leaves a free list and again
//! when it is handed to a user; a handle names a block and a `gen`, so a
//! stale handle never matches a later allocation. Because `gen` also
//! advances on the way out of a free list, a delayed helper whose
//! compare-and-swap expects an old `FREE` word can never succeed after the
//! block has been around once (see [`crate::freelist`]).
//!
//! The owner is a registry slot *and* the slot's generation: once a slot is
//! released and reused, blocks tagged with the old generation can never be
//! mistaken for blocks of the new process (see [`crate::reclaim`]).

use std::fmt;

use crate::platform::{Packed, Platform, Word};

/// Kind field values.
pub mod kind {
    /// Never written: a zeroed or scribbled word.
    pub const INVALID: u8 = 0;
    /// In a free list.
    pub const FREE: u8 = 1;
    /// In the owner's magazine.
    pub const CACHED: u8 = 2;
    /// Allocated to the owner.
    pub const OWNED: u8 = 3;
    /// On its way into a free list.
    pub const PUSHING: u8 = 4;
    /// Just popped from a free list, on its way into the owner's magazine.
    pub const POPPED: u8 = 5;
}

/// The largest generation; generations are 28 bits.
pub const GEN_MAX: u32 = (1 << 28) - 1;
/// The largest reference count of an allocation.
pub const REFS_MAX: u32 = (1 << 10) - 1;
/// Slot generations are 12 bits.
pub const SLOT_GEN_MASK: u16 = (1 << 12) - 1;

const GUARD: u64 = 1 << 3;
const REFS: u64 = 0x3FF << 4;
const OWNER: u64 = (0x3FF << 14) | (0xFFF << 24);

/// A decoded block state word.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockState(u64);

impl BlockState {
    /// A state of `kind` with no references.
    #[inline]
    pub const fn new(kind: u8, slot: u32, slot_gen: u16, gen: u32) -> Self {
        Self(
            (kind as u64 & 0x7)
                | ((slot as u64 & 0x3FF) << 14)
                | ((slot_gen as u64 & 0xFFF) << 24)
                | ((gen as u64 & GEN_MAX as u64) << 36),
        )
    }
    /// A free block in shard `shard` (numbered within its class).
    #[inline]
    pub const fn free(shard: u32, gen: u32) -> Self {
        Self::new(kind::FREE, shard, 0, gen)
    }
    /// A block in `owner`'s magazine.
    #[inline]
    pub const fn cached(owner: Owner, gen: u32) -> Self {
        Self::new(kind::CACHED, owner.slot, owner.gen, gen)
    }
    /// A fresh allocation by `owner`: one reference, held by a guard.
    #[inline]
    pub const fn owned(owner: Owner, gen: u32) -> Self {
        Self::new(kind::OWNED, owner.slot, owner.gen, gen).with_refs(1, true)
    }
    /// A block `owner` is pushing into a free list.
    #[inline]
    pub const fn pushing(owner: Owner, gen: u32) -> Self {
        Self::new(kind::PUSHING, owner.slot, owner.gen, gen)
    }
    /// A block popped from a free list for `owner`.
    #[inline]
    pub const fn popped(owner: Owner, gen: u32) -> Self {
        Self::new(kind::POPPED, owner.slot, owner.gen, gen)
    }
    /// The same word with another reference count and guard.
    #[inline]
    pub const fn with_refs(self, refs: u32, guard: bool) -> Self {
        let guard = if guard { GUARD } else { 0 };
        Self((self.0 & !REFS & !GUARD) | ((refs as u64 & 0x3FF) << 4) | guard)
    }
    /// The same word with another owner (references and guard kept).
    #[inline]
    pub const fn with_owner(self, owner: Owner) -> Self {
        Self(
            (self.0 & !OWNER)
                | ((owner.slot as u64 & 0x3FF) << 14)
                | ((owner.gen as u64 & 0xFFF) << 24),
        )
    }
    /// The kind field.
    #[inline]
    pub const fn kind(self) -> u8 {
        (self.0 & 0x7) as u8
    }
    /// The slot field: the owner's slot, or the shard of a free block.
    #[inline]
    pub const fn slot(self) -> u32 {
        ((self.0 >> 14) & 0x3FF) as u32
    }
    /// The owner's slot generation.
    #[inline]
    pub const fn slot_gen(self) -> u16 {
        ((self.0 >> 24) & 0xFFF) as u16
    }
    /// The block generation.
    #[inline]
    pub const fn gen(self) -> u32 {
        (self.0 >> 36) as u32
    }
    /// References to an allocation.
    #[inline]
    pub const fn refs(self) -> u32 {
        ((self.0 >> 4) & 0x3FF) as u32
    }
    /// Whether a guard holds one of the references.
    #[inline]
    pub const fn guard(self) -> bool {
        self.0 & GUARD != 0
    }
    /// References that handles stand for (those not held by the guard).
    #[inline]
    pub const fn unguarded(self) -> u32 {
        self.refs().saturating_sub(self.guard() as u32)
    }
    /// The owner, for `CACHED`, `OWNED`, `PUSHING` and `POPPED` blocks.
    #[inline]
    pub const fn owner(self) -> Option<Owner> {
        match self.kind() {
            kind::CACHED | kind::OWNED | kind::PUSHING | kind::POPPED => Some(Owner {
                slot: self.slot(),
                gen: self.slot_gen(),
            }),
            _ => None,
        }
    }
    /// Whether this is the live allocation of generation `gen`.
    #[inline]
    pub const fn is_allocation(self, gen: u32) -> bool {
        self.kind() == kind::OWNED && self.gen() == gen
    }
}

crate::platform::packed_newtype!(BlockState);

impl fmt::Debug for BlockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = match self.kind() {
            kind::FREE => return write!(f, "FREE{{shard {}, gen {}}}", self.slot(), self.gen()),
            kind::CACHED => "CACHED",
            kind::OWNED => {
                return write!(
                    f,
                    "OWNED{{slot {}/{}, gen {}, refs {}{}}}",
                    self.slot(),
                    self.slot_gen(),
                    self.gen(),
                    self.refs(),
                    if self.guard() { ", guarded" } else { "" }
                )
            }
            kind::PUSHING => "PUSHING",
            kind::POPPED => "POPPED",
            _ => return write!(f, "INVALID({:#x})", self.0),
        };
        write!(
            f,
            "{k}{{slot {}/{}, gen {}}}",
            self.slot(),
            self.slot_gen(),
            self.gen()
        )
    }
}

/// A registry slot together with the slot's generation at attach time: the
/// identity a block's owner tag records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Registry slot.
    pub slot: u32,
    /// The slot's generation when the process attached (12 bits).
    pub gen: u16,
}

/// The next block generation: 28 bits, zero skipped so that a handle is
/// never 0.
#[inline]
pub const fn next_gen(gen: u32) -> u32 {
    if gen >= GEN_MAX {
        1
    } else {
        gen + 1
    }
}

/// The data window of a block: payload bytes `[head, tail)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Window {
    /// Offset of the first data byte.
    pub head: u32,
    /// Offset one past the last data byte.
    pub tail: u32,
}

impl Packed for Window {
    #[inline]
    fn to_bits(self) -> u64 {
        self.head as u64 | ((self.tail as u64) << 32)
    }
    #[inline]
    fn from_bits(bits: u64) -> Self {
        Self {
            head: bits as u32,
            tail: (bits >> 32) as u32,
        }
    }
}

/// One entry of the metadata table.
#[repr(C)]
pub struct BlockMeta<P: Platform> {
    /// Where the block is, who owns it, its references (see the module
    /// documentation).
    pub state: Word<P::U64, BlockState>,
    /// The data window. Written by the guard holder; validated by every
    /// reader.
    pub window: Word<P::U64, Window>,
    /// Next block in the free list (global block index, or the end marker).
    /// Written only by the process that is about to push the block, read by
    /// anyone walking the list.
    pub next: P::U32,
    /// Reserved, zero.
    pub reserved: P::U32,
    /// Reserved, zero (keeps entries at 32 bytes, two per cache line).
    pub reserved2: P::U64,
}

impl<P: Platform> BlockMeta<P> {
    /// Metadata of a block that sits in a free list, used to build pools in
    /// heap memory for the verification platforms.
    pub fn new_free(shard: u32, next: u32) -> Self {
        use crate::platform::{Atomic32, Atomic64};
        Self {
            state: Word::new(BlockState::free(shard, 0)),
            window: Word::new(Window { head: 0, tail: 0 }),
            next: P::U32::new(next),
            reserved: P::U32::new(0),
            reserved2: P::U64::new(0),
        }
    }
}

const _: () = {
    use crate::platform::Os;
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<BlockMeta<Os>>() == 32);
    assert!(align_of::<BlockMeta<Os>>() == 8);
    assert!(offset_of!(BlockMeta<Os>, state) == 0);
    assert!(offset_of!(BlockMeta<Os>, window) == 8);
    assert!(offset_of!(BlockMeta<Os>, next) == 16);
    assert!(offset_of!(BlockMeta<Os>, reserved) == 20);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        let o = Owner {
            slot: 1022,
            gen: 0xABC,
        };
        let s = BlockState::owned(o, GEN_MAX);
        assert_eq!(s.kind(), kind::OWNED);
        assert_eq!(s.owner(), Some(o));
        assert_eq!((s.gen(), s.refs(), s.guard()), (GEN_MAX, 1, true));
        assert_eq!(BlockState::from_bits(s.to_bits()), s);
        let t = s.with_refs(REFS_MAX, false);
        assert_eq!(
            (t.refs(), t.guard(), t.unguarded(), t.owner(), t.gen()),
            (REFS_MAX, false, REFS_MAX, Some(o), GEN_MAX)
        );
        let other = Owner { slot: 3, gen: 9 };
        let u = t.with_owner(other);
        assert_eq!(
            (u.owner(), u.refs(), u.gen()),
            (Some(other), REFS_MAX, GEN_MAX)
        );
        let f = BlockState::free(7, 3);
        assert_eq!(
            (f.kind(), f.slot(), f.gen(), f.owner()),
            (kind::FREE, 7, 3, None)
        );
        assert_eq!(BlockState::from_bits(0).kind(), kind::INVALID);
        assert!(s.is_allocation(GEN_MAX) && !s.is_allocation(1));
    }

    #[test]
    fn next_gen_skips_zero() {
        assert_eq!(next_gen(1), 2);
        assert_eq!(next_gen(GEN_MAX), 1);
    }

    #[test]
    fn window_round_trips() {
        let w = Window {
            head: 128,
            tail: 4000,
        };
        assert_eq!(Window::from_bits(w.to_bits()), w);
    }
}
