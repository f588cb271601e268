//! Per-process caches of free blocks ("magazines", as in Bonwick's slab
//! allocator and DPDK's per-core mempool cache).
//!
//! Each attached handle has one magazine per class in shared memory: a
//! count and up to `mag_cap` block indices. Only the owner reads or writes
//! it, so it needs no atomic read-modify-write; the owner's allocations and
//! frees that hit the magazine touch no shared cache line but the block's
//! own metadata.
//!
//! The magazine is a hint, not the truth: a block is cached by a process if
//! and only if its state word says `CACHED` by that process. A crash between
//! updating the magazine and the state word therefore loses nothing: the
//! sweeper recovers the process's blocks from their state words, not from
//! its magazine. For the same reason other processes may take a cached block
//! (when every shard of the class is empty) with one compare-and-swap on its
//! state word; the owner skips entries whose state is no longer its own.

use std::sync::atomic::Ordering::Relaxed;

use crate::platform::{Atomic32, Platform};

/// The magazine of one handle for one class.
pub struct Magazine<'a, P: Platform> {
    count: &'a P::U32,
    entries: &'a [P::U32],
}

impl<P: Platform> Clone for Magazine<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: Platform> Copy for Magazine<'_, P> {}

impl<'a, P: Platform> Magazine<'a, P> {
    /// The magazine stored in `words` (count first), holding at most `cap`.
    #[inline]
    pub fn new(words: &'a [P::U32], cap: u32) -> Self {
        let (count, rest) = words.split_first().expect("magazine words");
        let cap = (cap as usize).min(rest.len());
        Self {
            count,
            entries: &rest[..cap],
        }
    }

    /// Capacity.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Entries held. A count beyond the capacity (written by someone else)
    /// is treated as full.
    #[inline(always)]
    pub fn len(&self) -> usize {
        (self.count.load(Relaxed) as usize).min(self.entries.len())
    }

    /// Whether it holds nothing.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the most recently added entry.
    #[inline(always)]
    pub fn pop(&self) -> Option<u32> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let b = self.entries[n - 1].load(Relaxed);
        self.count.store(n as u32 - 1, Relaxed);
        Some(b)
    }

    /// Adds an entry; false when full.
    #[inline(always)]
    pub fn push(&self, b: u32) -> bool {
        let n = self.len();
        if n == self.entries.len() {
            return false;
        }
        self.entries[n].store(b, Relaxed);
        self.count.store(n as u32 + 1, Relaxed);
        true
    }
}
