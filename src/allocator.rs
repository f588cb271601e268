//! Allocation, release, hand-off and blocking for one attached process.
//!
//! Every step below that changes who has a block is one compare-and-swap
//! on the block's state word (see [`crate::block`]), which holds the kind,
//! the owner, the reference count, the guard bit and the generation.
//!
//! # Allocation
//!
//! 1. Take the newest entry of the class's magazine and compare-and-swap
//!    its state `CACHED`(me, g) → `OWNED`(me, g+1, one guarded reference).
//!    This compare-and-swap is the linearization point. An entry whose
//!    state is no longer cached by us (another process took it) is skipped.
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
//! Dropping a reference decrements the count in the state word; dropping
//! the last one turns `OWNED`(x, g, 1 reference) into `CACHED`(me, g) in the
//! same compare-and-swap (the linearization point): the block goes into the
//! magazine of whoever released it last. A full magazine first flushes half
//! of itself to the local shard as one chain. If an allocator is blocked on
//! the class, the block is pushed to the shard at once and the sleepers are
//! woken.
//!
//! # Blocking
//!
//! A class has one futex word with a waiters bit ([`crate::wake`]). A
//! blocked allocator announces itself, tries once more, and sleeps. A free
//! wakes the sleepers after its block became available: the compare-and-swap
//! that makes a block available (the state word for a cached block, the
//! shard head for a pushed one) and the re-check's loads of head words and
//! block states are sequentially consistent, so no wake-up is lost.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, SeqCst};
use std::time::Duration;

use crate::block::{kind, next_gen, BlockMeta, BlockState, Owner, Window, GEN_MAX, REFS_MAX};
use crate::config::MAX_CLASSES;
use crate::error::{Error, HandleFault, Result};
use crate::freelist::{self, ShardId, MAX_CHAIN};
use crate::handle::Handle;
use crate::layout::{ClassHot, Segment};
use crate::magazine::Magazine;
use crate::platform::{Atomic32, Platform, Step};

pub use crate::wake::WAITERS;

/// A process attached to a segment: the view and its registry slot.
pub struct Attached<'a, P: Platform> {
    /// The segment.
    pub seg: Segment<'a, P>,
    /// Our slot and its generation.
    pub me: Owner,
    /// Per class, what the common allocation and free touch, looked up
    /// once: our magazine, the class's block range, its wake word.
    lanes: [Lane<'a, P>; MAX_CLASSES],
}

/// What the fast paths need of one class.
struct Lane<'a, P: Platform> {
    mag: Magazine<'a, P>,
    first: u32,
    count: u32,
    wake: &'a P::U32,
}

impl<P: Platform> Clone for Lane<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: Platform> Copy for Lane<'_, P> {}

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

/// Which reference a release drops.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    /// The guard's.
    Guard,
    /// One a handle stands for.
    Handle,
}

impl<'a, P: Platform> Attached<'a, P> {
    /// The process `me` attached to `seg`.
    pub fn new(seg: Segment<'a, P>, me: Owner) -> Self {
        let lane = |class: usize| {
            let c = &seg.geo.classes[class];
            Lane {
                mag: Magazine::new(seg.magazine(me.slot, class), c.mag_cap),
                first: c.first,
                count: c.count,
                wake: &seg.classes[class].wake_seq,
            }
        };
        // Classes past the last are never used; they repeat the first.
        let lanes = std::array::from_fn(|i| lane(if i < seg.geo.classes.len() { i } else { 0 }));
        Attached { seg, me, lanes }
    }

    #[inline(always)]
    fn lane(&self, class: usize) -> &Lane<'a, P> {
        &self.lanes[class]
    }

    #[inline]
    fn meta(&self, b: u32) -> &'a BlockMeta<P> {
        &self.seg.metas[b as usize]
    }

    #[inline]
    fn hot(&self, class: usize) -> &'a ClassHot<P> {
        &self.seg.classes[class]
    }

    /// This process's magazine for `class`.
    #[inline(always)]
    pub fn magazine(&self, class: usize) -> Magazine<'a, P> {
        self.lane(class).mag
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

    fn invalid(&self, h: Handle, fault: HandleFault) -> Error {
        Error::InvalidHandle {
            pool: self.seg.name.into(),
            handle: h,
            fault,
        }
    }

    /// Turns block `b`, in state `st` (cached or popped by us), into a fresh
    /// allocation by us with the given window.
    #[inline(always)]
    fn take(&self, b: u32, st: BlockState, class: usize, window: Window) -> Option<Block> {
        let m = self.meta(b);
        let gen = next_gen(st.gen());
        // Acquire: the previous user's writes to the payload happen before
        // ours. Release: publishes the new generation.
        m.state
            .compare_exchange(st, BlockState::owned(self.me, gen), AcqRel, Relaxed)
            .ok()?;
        self.seg.p.step(Step::StateChanged);
        m.window.store(window, Relaxed);
        Some(Block {
            index: b,
            gen,
            class,
        })
    }

    #[inline]
    fn ours(&self, st: BlockState, k: u8) -> bool {
        st.kind() == k && st.owner() == Some(self.me)
    }

    /// Allocates a block of `class` without blocking.
    #[inline(always)]
    pub fn alloc(&self, class: usize, window: Window) -> Result<Block> {
        // The common case: the newest entry of our magazine.
        let lane = self.lane(class);
        if let Some(b) = lane.mag.pop() {
            self.seg.p.step(Step::MagazineTaken);
            if b.wrapping_sub(lane.first) < lane.count {
                let st = self.meta(b).state.load(Relaxed);
                if self.ours(st, kind::CACHED) {
                    if let Some(blk) = self.take(b, st, class, window) {
                        return Ok(blk);
                    }
                }
            }
        }
        self.alloc_slow(class, window)
    }

    /// The rest of [`Attached::alloc`]: stale magazine entries, a refill
    /// from the shards, taking a block another process caches.
    #[inline(never)]
    fn alloc_slow(&self, class: usize, window: Window) -> Result<Block> {
        let mag = self.magazine(class);
        let cls = &self.seg.geo.classes[class];
        while let Some(b) = mag.pop() {
            self.seg.p.step(Step::MagazineTaken);
            if !cls.contains(b) {
                continue;
            }
            let st = self.meta(b).state.load(Relaxed);
            if self.ours(st, kind::CACHED) {
                if let Some(blk) = self.take(b, st, class, window) {
                    return Ok(blk);
                }
            }
        }
        if let Some(b) = self.refill(class)? {
            let st = self.meta(b).state.load(Relaxed);
            if self.ours(st, kind::POPPED) {
                if let Some(blk) = self.take(b, st, class, window) {
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
            if n == 0 {
                continue;
            }
            for &b in chain[1..n].iter().rev() {
                let state = &self.meta(b).state;
                let st = state.load(Relaxed);
                if self.ours(st, kind::POPPED) {
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
                if let Some(blk) = self.take(b, st, class, window) {
                    return Ok(blk);
                }
            }
        }
        Err(self.exhausted(class))
    }

    /// Allocates a block of `class`, sleeping while the class is exhausted,
    /// for at most `timeout` (`None`: no limit).
    pub fn alloc_blocking(
        &self,
        class: usize,
        window: Window,
        timeout: Option<Duration>,
    ) -> Result<Block> {
        match self.alloc(class, window) {
            Err(Error::Exhausted { .. }) => {}
            other => return other,
        }
        // The clock is read only once waiting may be needed.
        let deadline = self.seg.p.deadline(timeout);
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
            let seen = crate::wake::announce::<P>(&hot.wake_seq);
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
    #[inline]
    pub fn wake(&self, class: usize) {
        crate::wake::wake(self.seg.p, self.lane(class).wake);
    }

    /// Whether an allocator may be blocked on `class`.
    #[inline(always)]
    fn has_waiters(&self, class: usize) -> bool {
        crate::wake::has_waiters::<P>(self.lane(class).wake)
    }

    /// Checks a handle's bounds and returns its block and class.
    pub fn locate(&self, h: Handle) -> Result<(u32, usize)> {
        if h.into_raw() == 0 {
            return Err(self.invalid(h, HandleFault::Null));
        }
        let b = h.index();
        match self.seg.geo.class_of(b) {
            Some(class) if b < self.seg.geo.nblocks => Ok((b, class)),
            _ => Err(self.invalid(h, HandleFault::OutOfRange)),
        }
    }

    /// Why state `st` is not the live allocation of generation `gen`.
    fn fault(st: BlockState, gen: u32) -> HandleFault {
        if gen > GEN_MAX || (st.gen() < gen && st.gen() > 0) {
            // A generation the block never reached: forged.
            HandleFault::NotAllocated
        } else if st.gen() == gen {
            HandleFault::Released
        } else {
            HandleFault::Stale
        }
    }

    /// Checks that `h` names a live allocation; returns its block, class
    /// and current state.
    pub fn check(&self, h: Handle) -> Result<(u32, usize, BlockState)> {
        let (b, class) = self.locate(h)?;
        let st = self.meta(b).state.load(Acquire);
        if st.is_allocation(h.generation()) {
            Ok((b, class, st))
        } else {
            Err(self.invalid(h, Self::fault(st, h.generation())))
        }
    }

    /// Changes the state of `h`'s allocation with `f` (which sees a live
    /// allocation of that generation), retrying on contention. Returns the
    /// state before the change.
    fn update(
        &self,
        h: Handle,
        b: u32,
        mut st: BlockState,
        f: impl Fn(BlockState) -> std::result::Result<BlockState, HandleFault>,
    ) -> Result<BlockState> {
        let state = &self.meta(b).state;
        for _ in 0..freelist::MAX_ATTEMPTS {
            if !st.is_allocation(h.generation()) {
                return Err(self.invalid(h, Self::fault(st, h.generation())));
            }
            let new = f(st).map_err(|fault| self.invalid(h, fault))?;
            // AcqRel: the last releaser sees every other holder's writes
            // before it recycles the block; a new guard sees the previous
            // guard's writes. SeqCst when the block becomes free: see
            // "Blocking" in the module documentation.
            let order = if new.kind() == kind::CACHED {
                SeqCst
            } else {
                AcqRel
            };
            match state.compare_exchange(st, new, order, Acquire) {
                Ok(_) => return Ok(st),
                Err(now) => st = now,
            }
        }
        Err(Error::corrupted(
            self.seg.name,
            format!("the state of block {b} keeps changing"),
        ))
    }

    /// Adds a reference to the allocation `h`.
    pub fn retain(&self, h: Handle) -> Result<()> {
        let (b, _, st) = self.check(h)?;
        self.update(h, b, st, |st| match st.refs() {
            0 => Err(HandleFault::Released),
            REFS_MAX => Err(HandleFault::TooManyReferences),
            n => Ok(st.with_refs(n + 1, st.guard())),
        })?;
        Ok(())
    }

    /// Drops one reference of `h`'s allocation; the last one frees the
    /// block into our magazine. Returns whether it did.
    fn drop_ref(&self, h: Handle, which: Which) -> Result<bool> {
        let (b, class, st) = self.check(h)?;
        let me = self.me;
        if cfg!(feature = "mutant-early-wake") {
            // Wakes before the block is free: a waiter that re-checks in
            // between goes back to sleep, and nobody wakes it again.
            self.wake(class);
        }
        let old = self.update(h, b, st, |st| {
            let holds = match which {
                Which::Guard => st.guard(),
                Which::Handle => st.unguarded() > 0,
            };
            if !holds {
                return Err(if which == Which::Handle && st.guard() {
                    HandleFault::InUse
                } else {
                    HandleFault::Released
                });
            }
            Ok(if st.refs() == 1 {
                BlockState::cached(me, st.gen())
            } else {
                st.with_refs(st.refs() - 1, st.guard() && which == Which::Handle)
            })
        })?;
        if old.refs() > 1 {
            return Ok(false);
        }
        self.seg.p.step(Step::Released);
        self.recycle(class, b, h.generation())?;
        Ok(true)
    }

    /// Drops one reference that the handle `h` stands for (never the one a
    /// guard holds); the last one frees the block. Returns whether it did.
    pub fn release(&self, h: Handle) -> Result<bool> {
        self.drop_ref(h, Which::Handle)
    }

    /// [`Attached::drop_guard`] for a destructor, which cannot report
    /// errors: the common case inline, everything else out of line.
    #[inline(always)]
    pub fn drop_guard_quietly(&self, index: u32, gen: u32, class: usize) {
        let state = &self.meta(index).state;
        let fresh = BlockState::owned(self.me, gen);
        if !cfg!(feature = "mutant-early-wake")
            && state
                .compare_exchange(fresh, BlockState::cached(self.me, gen), SeqCst, Relaxed)
                .is_ok()
        {
            self.seg.p.step(Step::Released);
            // After the block became free: see "Blocking".
            if !self.has_waiters(class) && self.magazine(class).push(index) {
                return;
            }
            self.recycle_quietly(index, gen, class);
            return;
        }
        self.drop_guard_slowly(index, gen, class);
    }

    #[cold]
    #[inline(never)]
    fn recycle_quietly(&self, index: u32, gen: u32, class: usize) {
        let _ = self.recycle_slow(class, index, gen);
    }

    #[cold]
    #[inline(never)]
    fn drop_guard_slowly(&self, index: u32, gen: u32, _class: usize) {
        let _ = self.drop_ref(Handle::new(index, gen), Which::Guard);
    }

    /// Drops the guard of `blk` together with its reference; the last
    /// reference frees the block. Returns whether it did.
    #[inline(always)]
    pub fn drop_guard(&self, blk: Block) -> Result<bool> {
        // The common case in one compare-and-swap: our own allocation,
        // whose only reference the guard holds.
        let state = &self.meta(blk.index).state;
        let fresh = BlockState::owned(self.me, blk.gen);
        if !cfg!(feature = "mutant-early-wake")
            && state
                .compare_exchange(fresh, BlockState::cached(self.me, blk.gen), SeqCst, Relaxed)
                .is_ok()
        {
            self.seg.p.step(Step::Released);
            self.recycle(blk.class, blk.index, blk.gen)?;
            return Ok(true);
        }
        self.drop_ref(blk.handle(), Which::Guard)
    }

    /// Takes the guard of the allocation `h` with one of the references the
    /// handle stands for, and makes this process the block's owner (one
    /// compare-and-swap), so that it survives the death of the process that
    /// sent the handle.
    pub fn acquire(&self, h: Handle) -> Result<Block> {
        let (b, class, st) = self.check(h)?;
        let me = self.me;
        self.update(h, b, st, |st| {
            if st.guard() {
                Err(HandleFault::InUse)
            } else if st.refs() == 0 {
                Err(HandleFault::Released)
            } else {
                Ok(st.with_owner(me).with_refs(st.refs(), true))
            }
        })?;
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
        let st = self.meta(blk.index).state.load(Acquire);
        self.update(h, blk.index, st, |st| {
            if st.guard() {
                Ok(st.with_refs(st.refs(), false))
            } else {
                Err(HandleFault::Released)
            }
        })?;
        Ok(())
    }

    /// Puts block `b` (generation `gen`), which we just freed into state
    /// `CACHED` by us, where it belongs: our magazine, or a shard if an
    /// allocator waits or the magazine is full.
    #[inline(always)]
    fn recycle(&self, class: usize, b: u32, gen: u32) -> Result<()> {
        if !self.has_waiters(class) && self.magazine(class).push(b) {
            return Ok(());
        }
        self.recycle_slow(class, b, gen)
    }

    /// The rest of [`Attached::recycle`].
    #[inline(never)]
    fn recycle_slow(&self, class: usize, b: u32, gen: u32) -> Result<()> {
        let state = &self.meta(b).state;
        let cached = BlockState::cached(self.me, gen);
        let mag = self.magazine(class);
        if !self.has_waiters(class) {
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
                let state = &self.meta(b).state;
                let st = state.load(Relaxed);
                if !self.ours(st, kind::CACHED) {
                    continue;
                }
                let pushing = BlockState::pushing(self.me, st.gen());
                if state.compare_exchange(st, pushing, AcqRel, Relaxed).is_ok() {
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
}
