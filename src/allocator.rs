//! Allocation, release, hand-off and blocking for one attached process.
//!
//! # Allocation
//!
//! 1. Take the newest entry of the class's magazine and compare-and-swap
//!    its state `CACHED`(me, g) → `OWNED`(me, g+1). This compare-and-swap is
//!    the linearization point. An entry whose state is no longer cached by
//!    us (another process took it) is skipped.
//! 2. Magazine empty: pop a chain of up to half a magazine from the local
//!    shard (`slot % shards`), then from the others in order
//!    ([`crate::freelist::pop`]); keep one block, cache the rest.
//! 3. Every shard empty: scan the class for a block cached by another
//!    process and take it with one compare-and-swap, so that caches never
//!    make a class look exhausted while it has a free block.
//! 4. Nothing: `Exhausted`.
//!
//! # Release
//!
//! Dropping a reference decrements the reference word (which carries the
//! allocation's generation, so a late release of an old allocation fails).
//! The last one moves the state `OWNED`(x, g) → `CACHED`(me, g): the block
//! goes into the magazine of whoever released it last (the linearization
//! point). A full magazine first flushes half of itself to the local shard
//! as one chain. If an allocator is blocked on the class, the block is
//! pushed to the shard at once and the sleepers are woken.
//!
//! # Blocking
//!
//! A class has one futex word: bit 31 ([`WAITERS`]) says an allocator may
//! be asleep on it, the other bits count wake-ups. A blocked allocator sets
//! the bit (fetch-or, which also reads the word), tries once more, and sleeps
//! on the word unless it changed. A free reads the word after its block
//! became available; if the bit is set it clears the bit, bumps the count
//! and wakes every sleeper, which retry and set the bit again before they
//! sleep again. The waiters' fetch-or and re-check, and the free's
//! compare-and-swap that makes the block available and its read of the
//! word, are all sequentially consistent, so either the free sees the bit
//! or the waiter's re-check sees the block: no wake-up is lost. A sleeper
//! killed in its sleep leaves the bit set, which costs the next free one
//! needless wake-up and then clears itself; waking all sleepers rather than
//! one means a sleeper killed after its wake-up cannot swallow it.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, SeqCst};
use std::time::Duration;

use crate::block::{kind, next_gen, BlockMeta, BlockState, Owner, Refs, Window};
use crate::error::{Error, HandleFault, Result};
use crate::freelist::{self, ShardId, MAX_CHAIN};
use crate::handle::Handle;
use crate::layout::{ClassHot, Segment};
use crate::magazine::Magazine;
use crate::platform::{Atomic32, Platform, Step};

/// Bit 31 of a class's wake word: an allocator may be asleep on it.
pub const WAITERS: u32 = 1 << 31;

/// A process attached to a segment: the view and its registry slot.
pub struct Attached<'a, P: Platform> {
    /// The segment.
    pub seg: Segment<'a, P>,
    /// Our slot and its generation.
    pub me: Owner,
}

impl<P: Platform> Clone for Attached<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: Platform> Copy for Attached<'_, P> {}

/// A live allocation: the block and its generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Global block index.
    pub index: u32,
    /// Generation of this allocation.
    pub gen: u32,
    /// Class index.
    pub class: usize,
}

impl Block {
    /// The handle naming this allocation.
    #[inline]
    pub fn handle(self) -> Handle {
        Handle::new(self.index, self.gen)
    }
}

impl<'a, P: Platform> Attached<'a, P> {
    #[inline]
    fn meta(&self, b: u32) -> &'a BlockMeta<P> {
        &self.seg.metas[b as usize]
    }

    #[inline]
    fn hot(&self, class: usize) -> &'a ClassHot<P> {
        &self.seg.classes[class]
    }

    /// This process's magazine for `class`.
    #[inline]
    pub fn magazine(&self, class: usize) -> Magazine<'a, P> {
        Magazine::new(
            self.seg.magazine(self.me.slot, class),
            self.seg.geo.classes[class].mag_cap,
        )
    }

    /// The local shard of this process in every class.
    #[inline]
    pub fn local_shard(&self) -> u32 {
        self.me.slot % self.seg.geo.shards_per_class
    }

    fn exhausted(&self, class: usize) -> Error {
        let c = &self.seg.geo.classes[class];
        Error::Exhausted {
            pool: self.seg.name.into(),
            class_size: c.size,
            blocks: c.count,
        }
    }

    /// Turns a block in state `st` (cached or popped) into a fresh
    /// allocation by us with the given window.
    #[inline]
    fn take_cached(&self, b: u32, st: BlockState, class: usize, window: Window) -> Option<Block> {
        let m = self.meta(b);
        let gen = next_gen(st.gen());
        // Acquire: the previous user's writes to the payload happen before
        // ours. Release: our state is published with the new generation.
        m.state
            .compare_exchange(st, BlockState::owned(self.me, gen), AcqRel, Relaxed)
            .ok()?;
        self.seg.p.step(Step::StateChanged);
        m.refs.store(Refs::new(gen, true, 1), Relaxed);
        m.window.store(window, Relaxed);
        Some(Block {
            index: b,
            gen,
            class,
        })
    }

    /// Allocates a block of `class` without blocking.
    pub fn alloc(&self, class: usize, window: Window) -> Result<Block> {
        let mag = self.magazine(class);
        let cls = &self.seg.geo.classes[class];
        while let Some(b) = mag.pop() {
            self.seg.p.step(Step::MagazineTaken);
            if !cls.contains(b) {
                continue;
            }
            let st = self.meta(b).state.load(Relaxed);
            if st.kind() == kind::CACHED && st.owner() == Some(self.me) {
                if let Some(blk) = self.take_cached(b, st, class, window) {
                    return Ok(blk);
                }
            }
        }
        if let Some(b) = self.refill(class)? {
            let st = self.meta(b).state.load(Relaxed);
            if st.kind() == kind::POPPED && st.owner() == Some(self.me) {
                if let Some(blk) = self.take_cached(b, st, class, window) {
                    return Ok(blk);
                }
            }
        }
        self.steal(class, window)
    }

    /// Pops a chain from the shards (local first, then the others in
    /// order), keeps the first block and caches the rest. Returns the kept
    /// block, still `POPPED` by us.
    fn refill(&self, class: usize) -> Result<Option<u32>> {
        let geo = self.seg.geo;
        let mag = self.magazine(class);
        let want = (mag.capacity() / 2).max(1);
        let mut chain = [0u32; MAX_CHAIN];
        let local = self.local_shard();
        for i in 0..geo.shards_per_class {
            let id = ShardId {
                class,
                k: (local + i) % geo.shards_per_class,
            };
            let n = freelist::pop(&self.seg, self.me, id, want, &mut chain)?;
            if n > 0 {
                for &b in chain[1..n].iter().rev() {
                    let state = &self.meta(b).state;
                    let st = state.load(Relaxed);
                    if st.kind() == kind::POPPED && st.owner() == Some(self.me) {
                        // Nobody else changes a block popped for us; the
                        // compare-and-swap only guards against scribbles.
                        let cached = BlockState::cached(self.me, st.gen());
                        if state.compare_exchange(st, cached, AcqRel, Relaxed).is_ok() {
                            self.seg.p.step(Step::StateChanged);
                            mag.push(b);
                        }
                    }
                }
                return Ok(Some(chain[0]));
            }
        }
        Ok(None)
    }

    /// Takes a block that another process caches, scanning the class.
    fn steal(&self, class: usize, window: Window) -> Result<Block> {
        let c = &self.seg.geo.classes[class];
        if c.mag_cap == 0 {
            return Err(self.exhausted(class));
        }
        let start = (self.me.slot as u64 * 7919 % u64::from(c.count.max(1))) as u32;
        for i in 0..c.count {
            let b = c.first + (start + i) % c.count;
            // SeqCst: see "Blocking" in the module documentation.
            let st = self.meta(b).state.load(SeqCst);
            if st.kind() == kind::CACHED {
                if let Some(blk) = self.take_cached(b, st, class, window) {
                    return Ok(blk);
                }
            }
        }
        Err(self.exhausted(class))
    }

    /// Allocates a block of `class`, sleeping while the class is exhausted,
    /// until `deadline` (`timeout` is only reported in the error).
    pub fn alloc_blocking(
        &self,
        class: usize,
        window: Window,
        deadline: P::Deadline,
        timeout: Option<Duration>,
    ) -> Result<Block> {
        let hot = self.hot(class);
        let slot = &self.seg.slots[self.me.slot as usize];
        loop {
            match self.alloc(class, window) {
                Err(Error::Exhausted { .. }) => {}
                other => return other,
            }
            if self.seg.p.expired(deadline) {
                return Err(Error::Timeout {
                    name: self.seg.name.into(),
                    waited: timeout.unwrap_or_default(),
                });
            }
            // For statistics only: who waits for what.
            slot.waiting
                .store(crate::registry::waiting_word(self.me.gen, class), Relaxed);
            // SeqCst: see "Blocking" in the module documentation.
            let seen = hot.wake_seq.fetch_or(WAITERS, SeqCst) | WAITERS;
            self.seg.p.step(Step::Registered);
            let again = self.alloc(class, window);
            if !matches!(again, Err(Error::Exhausted { .. })) {
                slot.waiting.store(0, Relaxed);
                return again;
            }
            self.seg.p.step(Step::Waiting);
            self.seg.p.wait(&hot.wake_seq, seen, deadline);
            slot.waiting.store(0, Relaxed);
        }
    }

    /// Wakes every allocator blocked on `class`, if the waiters bit says
    /// there may be one. Called after a block of the class became available
    /// (with a sequentially consistent operation).
    pub fn wake(&self, class: usize) {
        let hot = self.hot(class);
        let mut w = hot.wake_seq.load(SeqCst);
        while w & WAITERS != 0 {
            self.seg.p.step(Step::BeforeWake);
            let next = (w & !WAITERS).wrapping_add(1) & !WAITERS;
            match hot.wake_seq.compare_exchange(w, next, SeqCst, SeqCst) {
                Ok(_) => {
                    self.seg.p.wake_all(&hot.wake_seq);
                    return;
                }
                Err(now) => w = now,
            }
        }
    }

    /// Whether an allocator may be blocked on `class`.
    #[inline]
    fn has_waiters(&self, class: usize) -> bool {
        // SeqCst: see "Blocking" in the module documentation.
        self.hot(class).wake_seq.load(SeqCst) & WAITERS != 0
    }

    /// Checks a handle's bounds and returns its block and class.
    pub fn locate(&self, h: Handle) -> Result<(u32, usize)> {
        let fault = |fault| {
            Err(Error::InvalidHandle {
                pool: self.seg.name.into(),
                handle: h,
                fault,
            })
        };
        if h.into_raw() == 0 {
            return fault(HandleFault::Null);
        }
        let b = h.index();
        match self.seg.geo.class_of(b) {
            Some(class) if b < self.seg.geo.nblocks => Ok((b, class)),
            _ => fault(HandleFault::OutOfRange),
        }
    }

    /// Checks that `h` names a live allocation; returns its block, class
    /// and current state.
    pub fn check(&self, h: Handle) -> Result<(u32, usize, BlockState)> {
        let (b, class) = self.locate(h)?;
        let st = self.meta(b).state.load(Acquire);
        if st.kind() == kind::OWNED && st.gen() == h.generation() {
            return Ok((b, class, st));
        }
        let fault = if st.gen() == h.generation() {
            HandleFault::Released
        } else if st.kind() == kind::OWNED {
            HandleFault::Stale
        } else if st.gen() < h.generation() && st.gen() > 0 {
            // A generation the block never reached: forged.
            HandleFault::NotAllocated
        } else {
            HandleFault::Stale
        };
        Err(self.invalid(h, fault))
    }

    fn invalid(&self, h: Handle, fault: HandleFault) -> Error {
        Error::InvalidHandle {
            pool: self.seg.name.into(),
            handle: h,
            fault,
        }
    }

    /// Changes the reference word of `h`'s block with `f`, retrying on
    /// contention. Returns the word before the change.
    fn update_refs(
        &self,
        h: Handle,
        b: u32,
        f: impl Fn(Refs) -> std::result::Result<Refs, HandleFault>,
    ) -> Result<Refs> {
        let refs = &self.meta(b).refs;
        let mut r = refs.load(Acquire);
        loop {
            if r.gen() != h.generation() {
                return Err(self.invalid(h, HandleFault::Stale));
            }
            let new = f(r).map_err(|fault| self.invalid(h, fault))?;
            // AcqRel: the last releaser sees every other holder's writes
            // before it recycles the block; a new guard sees the previous
            // guard's writes.
            match refs.compare_exchange(r, new, AcqRel, Acquire) {
                Ok(_) => return Ok(r),
                Err(now) => r = now,
            }
        }
    }

    /// Adds a reference to the allocation `h`.
    pub fn retain(&self, h: Handle) -> Result<()> {
        let (b, _, _) = self.check(h)?;
        self.update_refs(h, b, |r| match r.count() {
            0 => Err(HandleFault::Released),
            Refs::MAX => Err(HandleFault::TooManyReferences),
            c => Ok(Refs::new(r.gen(), r.guard(), c + 1)),
        })?;
        Ok(())
    }

    /// Drops one reference of the allocation `h` (never the one a guard
    /// holds); the last one frees the block. Returns whether it did.
    pub fn release(&self, h: Handle) -> Result<bool> {
        let (b, class, _) = self.check(h)?;
        let old = self.update_refs(h, b, |r| {
            if r.unguarded() == 0 {
                Err(if r.guard() {
                    HandleFault::InUse
                } else {
                    HandleFault::Released
                })
            } else {
                Ok(Refs::new(r.gen(), r.guard(), r.count() - 1))
            }
        })?;
        if old.count() > 1 {
            return Ok(false);
        }
        self.seg.p.step(Step::Released);
        self.free_block(class, b, h.generation())?;
        Ok(true)
    }

    /// Takes the guard of the allocation `h` with one of the references the
    /// handle stands for, and makes this process the block's owner, so that
    /// it survives the death of the process that sent the handle.
    pub fn acquire(&self, h: Handle) -> Result<Block> {
        let (b, class, mut st) = self.check(h)?;
        self.update_refs(h, b, |r| {
            if r.guard() {
                Err(HandleFault::InUse)
            } else if r.count() == 0 {
                Err(HandleFault::Released)
            } else {
                Ok(Refs::new(r.gen(), true, r.count()))
            }
        })?;
        self.seg.p.step(Step::Guarded);
        let state = &self.meta(b).state;
        loop {
            if st.owner() == Some(self.me) {
                break;
            }
            let mine = BlockState::owned(self.me, st.gen());
            match state.compare_exchange(st, mine, AcqRel, Acquire) {
                Ok(_) => break,
                Err(now) if now.kind() == kind::OWNED && now.gen() == h.generation() => st = now,
                // The sender died and a sweep took the block back.
                Err(_) => return Err(self.invalid(h, HandleFault::Released)),
            }
        }
        Ok(Block {
            index: b,
            gen: h.generation(),
            class,
        })
    }

    /// Gives up the guard of `blk` but keeps its reference, which from now
    /// on the handle stands for.
    pub fn unguard(&self, blk: Block) -> Result<()> {
        let h = blk.handle();
        self.update_refs(h, blk.index, |r| {
            if r.guard() {
                Ok(Refs::new(r.gen(), false, r.count()))
            } else {
                Err(HandleFault::Released)
            }
        })?;
        Ok(())
    }

    /// Drops the guard of `blk` together with its reference; the last
    /// reference frees the block. Returns whether it did.
    pub fn drop_guard(&self, blk: Block) -> Result<bool> {
        let h = blk.handle();
        let old = self.update_refs(h, blk.index, |r| {
            if r.guard() && r.count() > 0 {
                Ok(Refs::new(r.gen(), false, r.count() - 1))
            } else {
                Err(HandleFault::Released)
            }
        })?;
        if old.count() > 1 {
            return Ok(false);
        }
        self.seg.p.step(Step::Released);
        self.free_block(blk.class, blk.index, blk.gen)?;
        Ok(true)
    }

    /// Frees block `b` (generation `gen`) whose last reference we dropped.
    fn free_block(&self, class: usize, b: u32, gen: u32) -> Result<()> {
        let state = &self.meta(b).state;
        if cfg!(feature = "mutant-early-wake") && self.has_waiters(class) {
            // Wakes before the block is available: a waiter that re-checks
            // in between goes back to sleep and nobody wakes it again.
            self.wake(class);
        }
        let cached = BlockState::cached(self.me, gen);
        let mut st = state.load(Relaxed);
        loop {
            if st.kind() != kind::OWNED || st.gen() != gen {
                // The owner died and a sweep took the block back already.
                return Ok(());
            }
            // SeqCst: see "Blocking" in the module documentation.
            match state.compare_exchange(st, cached, SeqCst, Relaxed) {
                Ok(_) => break,
                Err(now) => st = now,
            }
        }
        self.seg.p.step(Step::StateChanged);
        let waiters = self.has_waiters(class);
        let mag = self.magazine(class);
        if !waiters {
            if mag.push(b) {
                return Ok(());
            }
            if mag.capacity() > 0 {
                self.flush(class, mag.capacity() / 2)?;
                if mag.push(b) {
                    return Ok(());
                }
            }
        }
        // Someone waits, or there is no magazine: straight to the shard.
        if state
            .compare_exchange(cached, BlockState::pushing(self.me, gen), AcqRel, Relaxed)
            .is_ok()
        {
            self.seg.p.step(Step::StateChanged);
            let id = ShardId {
                class,
                k: self.local_shard(),
            };
            freelist::push(&self.seg, self.me, id, &[b])?;
        }
        if !cfg!(feature = "mutant-early-wake") {
            self.wake(class);
        }
        Ok(())
    }

    /// Moves up to `n` blocks from the magazine of `class` to the local
    /// shard, as one chain per [`MAX_CHAIN`] blocks.
    pub fn flush(&self, class: usize, n: usize) -> Result<()> {
        let mag = self.magazine(class);
        let cls = &self.seg.geo.classes[class];
        let mut left = n;
        while left > 0 {
            let mut chain = [0u32; MAX_CHAIN];
            let mut len = 0;
            while len < MAX_CHAIN && left > 0 {
                let Some(b) = mag.pop() else { break };
                left -= 1;
                if !cls.contains(b) {
                    continue;
                }
                let st = self.meta(b).state.load(Relaxed);
                if st.kind() != kind::CACHED || st.owner() != Some(self.me) {
                    continue;
                }
                let pushing = BlockState::pushing(self.me, st.gen());
                if self
                    .meta(b)
                    .state
                    .compare_exchange(st, pushing, AcqRel, Relaxed)
                    .is_ok()
                {
                    self.seg.p.step(Step::StateChanged);
                    chain[len] = b;
                    len += 1;
                }
            }
            if len == 0 {
                break;
            }
            let id = ShardId {
                class,
                k: self.local_shard(),
            };
            freelist::push(&self.seg, self.me, id, &chain[..len])?;
            self.wake(class);
        }
        Ok(())
    }

    /// Returns every cached block of every class to the shards.
    pub fn flush_all(&self) -> Result<()> {
        for class in 0..self.seg.geo.classes.len() {
            let n = self.magazine(class).len();
            self.flush(class, n)?;
        }
        Ok(())
    }

    /// The block state of `b` (for statistics and tests).
    pub fn state_of(&self, b: u32) -> BlockState {
        self.meta(b).state.load(Acquire)
    }
}
