//! Per-block metadata: the state word that says where a block is and who
//! owns it, the reference word, the data window and the free-list link.
//!
//! Metadata lives in a table apart from the payload, so that a payload
//! overrun cannot reach it and so that a sweeper can read every block's
//! owner without touching payload memory.
//!
//! # The state word
//!
//! ```text
//!  63                             32 31           16 15        4 3     0
//! +---------------------------------+---------------+-----------+-------+
//! |             gen (32)            | slot gen (16) | slot (12) | kind  |
//! +---------------------------------+---------------+-----------+-------+
//! ```
//!
//! `kind` says where the block is:
//!
//! | kind      | where                                   | slot / slot gen         |
//! |-----------|-----------------------------------------|-------------------------|
//! | `FREE`    | in a shard's free list (or a pending op) | shard in class / 0      |
//! | `CACHED`  | in the magazine of a process            | owner's registry slot   |
//! | `OWNED`   | allocated; handles with `gen` are valid | owner's registry slot   |
//! | `PUSHING` | being pushed to a free list by its owner | owner's registry slot   |
//! | `POPPED`  | popped from a free list for its owner   | owner's registry slot   |
//!
//! Every change is a compare-and-swap on the whole word, so a block is
//! always in exactly one of these places. `gen` advances when a block leaves
//! a free list and again when it is handed to a user; a handle names a block
//! and a `gen`, so a stale handle never matches a later allocation. Because
//! `gen` also advances on the way out of a free list, a delayed helper whose
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

/// The largest registry slot number the state word can hold.
pub const SLOT_BITS: u32 = 12;

/// A decoded block state word.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockState(u64);

impl BlockState {
    /// A state of the given kind.
    #[inline]
    pub const fn new(kind: u8, slot: u32, slot_gen: u16, gen: u32) -> Self {
        Self(
            (kind as u64 & 0xF)
                | ((slot as u64 & 0xFFF) << 4)
                | ((slot_gen as u64) << 16)
                | ((gen as u64) << 32),
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
    /// A block allocated to `owner`.
    #[inline]
    pub const fn owned(owner: Owner, gen: u32) -> Self {
        Self::new(kind::OWNED, owner.slot, owner.gen, gen)
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
    /// The kind field.
    #[inline]
    pub const fn kind(self) -> u8 {
        (self.0 & 0xF) as u8
    }
    /// The slot field: the owner's slot, or the shard of a free block.
    #[inline]
    pub const fn slot(self) -> u32 {
        ((self.0 >> 4) & 0xFFF) as u32
    }
    /// The owner's slot generation.
    #[inline]
    pub const fn slot_gen(self) -> u16 {
        (self.0 >> 16) as u16
    }
    /// The block generation.
    #[inline]
    pub const fn gen(self) -> u32 {
        (self.0 >> 32) as u32
    }
    /// The owner, for `CACHED`, `OWNED` and `PUSHING` blocks.
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
    /// Whether the block is held by `owner` in any of the owned kinds.
    #[inline]
    pub fn is_held_by(self, owner: Owner) -> bool {
        self.owner() == Some(owner)
    }
}

impl Packed for BlockState {
    #[inline]
    fn to_bits(self) -> u64 {
        self.0
    }
    #[inline]
    fn from_bits(bits: u64) -> Self {
        Self(bits)
    }
}

impl fmt::Debug for BlockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = match self.kind() {
            kind::FREE => "FREE",
            kind::CACHED => "CACHED",
            kind::OWNED => "OWNED",
            kind::PUSHING => "PUSHING",
            kind::POPPED => "POPPED",
            _ => "INVALID",
        };
        match self.kind() {
            kind::FREE => write!(f, "FREE{{shard {}, gen {}}}", self.slot(), self.gen()),
            kind::CACHED | kind::OWNED | kind::PUSHING | kind::POPPED => write!(
                f,
                "{k}{{slot {}/{}, gen {}}}",
                self.slot(),
                self.slot_gen(),
                self.gen()
            ),
            _ => write!(f, "{k}({:#x})", self.0),
        }
    }
}

/// A registry slot together with the slot's generation at attach time: the
/// identity a block's owner tag records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Registry slot.
    pub slot: u32,
    /// The slot's generation when the process attached.
    pub gen: u16,
}

/// The next block generation. Zero is skipped so that a handle is never 0.
#[inline]
pub const fn next_gen(gen: u32) -> u32 {
    if gen == u32::MAX {
        1
    } else {
        gen + 1
    }
}

/// The reference word: the allocation's generation, whether a
/// [`PacketBuf`](crate::PacketBuf) guard holds one of the references, and
/// the number of references.
///
/// ```text
///  63             32  31   30                 0
/// +-----------------+-----+--------------------+
/// |    gen (32)     |guard|     count (31)     |
/// +-----------------+-----+--------------------+
/// ```
///
/// Keeping the generation beside the count makes a delayed release of an old
/// allocation fail instead of decrementing the count of a newer one. The
/// guard bit makes access to a block's bytes exclusive: at most one guard
/// exists for a block, in all processes together, and a release by handle
/// can never take the reference the guard holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Refs(u64);

impl Refs {
    /// The largest reference count.
    pub const MAX: u32 = (1 << 31) - 1;

    /// `count` references to generation `gen`, one of them held by a guard
    /// if `guard`.
    #[inline]
    pub const fn new(gen: u32, guard: bool, count: u32) -> Self {
        Self(((gen as u64) << 32) | ((guard as u64) << 31) | (count & Self::MAX) as u64)
    }
    /// Number of references.
    #[inline]
    pub const fn count(self) -> u32 {
        self.0 as u32 & Self::MAX
    }
    /// Whether a guard holds one of the references.
    #[inline]
    pub const fn guard(self) -> bool {
        self.0 & (1 << 31) != 0
    }
    /// References not held by the guard (those handles stand for).
    #[inline]
    pub const fn unguarded(self) -> u32 {
        self.count() - self.guard() as u32
    }
    /// The generation the references belong to.
    #[inline]
    pub const fn gen(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

impl Packed for Refs {
    #[inline]
    fn to_bits(self) -> u64 {
        self.0
    }
    #[inline]
    fn from_bits(bits: u64) -> Self {
        Self(bits)
    }
}

impl fmt::Debug for Refs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Refs{{gen {}, count {}{}}}",
            self.gen(),
            self.count(),
            if self.guard() { ", guarded" } else { "" }
        )
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
    /// Where the block is and who owns it (see the module documentation).
    pub state: Word<P::U64, BlockState>,
    /// References held on the current allocation. Meaningful only while the
    /// state is `OWNED` with the same generation.
    pub refs: Word<P::U64, Refs>,
    /// The data window. Written by the holder; validated by every reader.
    pub window: Word<P::U64, Window>,
    /// Next block in the free list (global block index, or the end marker).
    /// Written only by the process that is about to push the block, read by
    /// anyone walking the list.
    pub next: P::U32,
    /// Reserved, zero.
    pub reserved: P::U32,
}

impl<P: Platform> BlockMeta<P> {
    /// Metadata of a block that sits in a free list, used to build pools in
    /// heap memory for the verification platforms.
    pub fn new_free(shard: u32, next: u32) -> Self {
        use crate::platform::Atomic32;
        Self {
            state: Word::new(BlockState::free(shard, 0)),
            refs: Word::new(Refs::new(0, false, 0)),
            window: Word::new(Window { head: 0, tail: 0 }),
            next: P::U32::new(next),
            reserved: P::U32::new(0),
        }
    }
}

const _: () = {
    use crate::platform::Os;
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<BlockMeta<Os>>() == 32);
    assert!(align_of::<BlockMeta<Os>>() == 8);
    assert!(offset_of!(BlockMeta<Os>, state) == 0);
    assert!(offset_of!(BlockMeta<Os>, refs) == 8);
    assert!(offset_of!(BlockMeta<Os>, window) == 16);
    assert!(offset_of!(BlockMeta<Os>, next) == 24);
    assert!(offset_of!(BlockMeta<Os>, reserved) == 28);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        let o = Owner {
            slot: 4095,
            gen: 0xBEEF,
        };
        let s = BlockState::owned(o, 0xDEAD_BEEF);
        assert_eq!(s.kind(), kind::OWNED);
        assert_eq!(s.owner(), Some(o));
        assert_eq!(s.gen(), 0xDEAD_BEEF);
        assert_eq!(BlockState::from_bits(s.to_bits()), s);
        let f = BlockState::free(7, 3);
        assert_eq!(
            (f.kind(), f.slot(), f.gen(), f.owner()),
            (kind::FREE, 7, 3, None)
        );
        assert_eq!(BlockState::from_bits(0).kind(), kind::INVALID);
    }

    #[test]
    fn next_gen_skips_zero() {
        assert_eq!(next_gen(1), 2);
        assert_eq!(next_gen(u32::MAX), 1);
    }

    #[test]
    fn refs_and_window_round_trip() {
        let r = Refs::new(9, true, 2);
        assert_eq!(
            (r.gen(), r.guard(), r.count(), r.unguarded()),
            (9, true, 2, 1)
        );
        let r = Refs::new(u32::MAX, false, Refs::MAX);
        assert_eq!(
            (r.gen(), r.guard(), r.count()),
            (u32::MAX, false, Refs::MAX)
        );
        let w = Window {
            head: 128,
            tail: 4000,
        };
        assert_eq!(Window::from_bits(w.to_bits()), w);
    }
}
