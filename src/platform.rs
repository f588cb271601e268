//! What the algorithm needs from the world around it: atomic words, a way to
//! sleep on a word and to wake its sleepers, a clock for deadlines, and
//! process identities with a liveness test.
//!
//! The lock-free core ([`crate::freelist`], [`crate::allocator`],
//! [`crate::reclaim`], ...) is generic over a [`Platform`]. Production uses
//! [`Os`]: `atomic::Atomic` words laid out in a shared mapping, Linux futexes,
//! `CLOCK_MONOTONIC` and `/proc`. The test suite instantiates the very same
//! code with Shuttle's and loom's atomics over heap memory, with a modelled
//! futex and injected crashes. Every method of [`Os`] is `#[inline]` and
//! monomorphised, so production pays nothing for the indirection.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A 32-bit atomic word as the core uses it.
///
/// Implementations must be lock-free and address-free: the word lives in
/// memory shared between processes, so it may not depend on a lock or any
/// other state private to one process.
pub trait Atomic32: Send + Sync + Sized {
    /// A word holding `v`.
    fn new(v: u32) -> Self;
    /// Atomic load.
    fn load(&self, order: Ordering) -> u32;
    /// Atomic store.
    fn store(&self, v: u32, order: Ordering);
    /// Atomic swap; returns the previous value.
    fn swap(&self, v: u32, order: Ordering) -> u32;
    /// Strong compare-and-swap.
    fn compare_exchange(
        &self,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u32, u32>;
    /// Wrapping atomic add; returns the previous value.
    fn fetch_add(&self, v: u32, order: Ordering) -> u32;
    /// Wrapping atomic subtract; returns the previous value.
    fn fetch_sub(&self, v: u32, order: Ordering) -> u32;
    /// Atomic bitwise or; returns the previous value.
    fn fetch_or(&self, v: u32, order: Ordering) -> u32;
}

/// A 64-bit atomic word as the core uses it. Same contract as [`Atomic32`].
pub trait Atomic64: Send + Sync + Sized {
    /// A word holding `v`.
    fn new(v: u64) -> Self;
    /// Atomic load.
    fn load(&self, order: Ordering) -> u64;
    /// Atomic store.
    fn store(&self, v: u64, order: Ordering);
    /// Strong compare-and-swap.
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64>;
}

/// A value that packs into 64 bits, so that it can live in a [`Word`].
pub trait Packed: Copy + Eq + fmt::Debug {
    /// The packed bits.
    fn to_bits(self) -> u64;
    /// Reinterprets bits read from shared memory. Every bit pattern must be
    /// accepted: validation happens where the value is used, not here.
    fn from_bits(bits: u64) -> Self;
}

impl Packed for u64 {
    #[inline]
    fn to_bits(self) -> u64 {
        self
    }
    #[inline]
    fn from_bits(bits: u64) -> Self {
        bits
    }
}

/// Implements [`Packed`] for a newtype over `u64`.
macro_rules! packed_newtype {
    ($t:ty) => {
        impl $crate::platform::Packed for $t {
            #[inline]
            fn to_bits(self) -> u64 {
                self.0
            }
            #[inline]
            fn from_bits(bits: u64) -> Self {
                Self(bits)
            }
        }
    };
}
pub(crate) use packed_newtype;

/// A 64-bit atomic word that holds a typed, packed value (a free-list head,
/// a block state, a registry slot state, ...).
#[repr(transparent)]
pub struct Word<A, T> {
    raw: A,
    _type: PhantomData<fn(T) -> T>,
}

impl<A: Atomic64, T: Packed> Word<A, T> {
    /// A word holding `v`.
    #[inline]
    pub fn new(v: T) -> Self {
        Self {
            raw: A::new(v.to_bits()),
            _type: PhantomData,
        }
    }
    /// Atomic load.
    #[inline]
    pub fn load(&self, order: Ordering) -> T {
        T::from_bits(self.raw.load(order))
    }
    /// Atomic store.
    #[inline]
    pub fn store(&self, v: T, order: Ordering) {
        self.raw.store(v.to_bits(), order)
    }
    /// Strong compare-and-swap.
    #[inline]
    pub fn compare_exchange(
        &self,
        current: T,
        new: T,
        success: Ordering,
        failure: Ordering,
    ) -> Result<T, T> {
        self.raw
            .compare_exchange(current.to_bits(), new.to_bits(), success, failure)
            .map(T::from_bits)
            .map_err(T::from_bits)
    }
}

impl<A: Atomic64, T: Packed> fmt::Debug for Word<A, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.load(Ordering::Relaxed).fmt(f)
    }
}

/// Who a process is: its pid and a value that tells a later process with the
/// same pid apart (the start time in clock ticks since boot, field 22 of
/// `/proc/PID/stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Process id.
    pub pid: u32,
    /// Start time of the process; never 0 for a real process.
    pub start: u64,
}

/// A named point inside an operation. Production ignores it; the
/// verification platforms may stop ("kill") the calling thread there to check
/// that every crash window is recoverable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A free-list operation record has been written, the head not yet changed.
    Recorded,
    /// The pending marker is in the head; the operation is not completed.
    Pending,
    /// Part of a pending operation's blocks have been re-tagged.
    Completing,
    /// A block has been taken out of a magazine, its state not yet changed.
    MagazineTaken,
    /// A block's state has changed, the magazine not yet updated.
    StateChanged,
    /// The reference count dropped, the state not yet changed.
    Released,
    /// A blocked allocator counted itself, not yet recorded in its slot.
    Registered,
    /// A waiter registered itself and is about to sleep.
    Waiting,
    /// A guard bit was set, the owner not yet changed.
    Guarded,
    /// A registry slot was claimed, not yet live.
    Claiming,
    /// A block was made available, waiters not yet woken.
    BeforeWake,
    /// A sweep claimed a block and has not pushed it yet.
    Sweeping,
    /// A ring slot is reserved, its value not yet published.
    Reserved,
    /// A ring value was read, its slot not yet freed.
    Consumed,
}

/// The environment the algorithm runs in.
pub trait Platform: Send + Sync + 'static {
    /// 32-bit shared word.
    type U32: Atomic32;
    /// 64-bit shared word.
    type U64: Atomic64;
    /// A point in time after which a blocking call gives up.
    type Deadline: Copy + fmt::Debug;

    /// The deadline `timeout` from now; `None` never expires.
    fn deadline(&self, timeout: Option<Duration>) -> Self::Deadline;
    /// Whether `deadline` has passed.
    fn expired(&self, deadline: Self::Deadline) -> bool;
    /// The earlier of two deadlines.
    fn sooner(&self, a: Self::Deadline, b: Self::Deadline) -> Self::Deadline;
    /// Sleeps while `word` holds `expected`, until woken by
    /// [`Platform::wake_all`] on the same word or until `deadline`. May
    /// return early for any reason; callers re-check their condition.
    fn wait(&self, word: &Self::U32, expected: u32, deadline: Self::Deadline);
    /// Wakes every sleeper on `word`.
    fn wake_all(&self, word: &Self::U32);
    /// Called in retry loops; `attempt` counts the retries so far.
    fn relax(&self, attempt: u32);
    /// A crash point (see [`Step`]).
    #[inline]
    fn step(&self, _at: Step) {}
    /// The identity of the calling process.
    fn identity(&self) -> Identity;
    /// Whether the process `who` is still running. Must answer `true` when it
    /// cannot tell: a live process treated as dead would lose its blocks.
    fn is_alive(&self, who: Identity) -> bool;
}

/// The production platform: shared-memory atomics, Linux futexes, `/proc`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Os;

/// The shared-memory atomic types of [`Os`].
pub type OsU32 = atomic::Atomic<u32>;
/// See [`OsU32`].
pub type OsU64 = atomic::Atomic<u64>;

// The `atomic` crate silently falls back to a lock private to the process
// when the CPU has no native atomic of the size. Such a lock would not
// exclude other processes, so refuse to build instead.
const _: () = assert!(atomic::Atomic::<u32>::is_lock_free());
const _: () = assert!(atomic::Atomic::<u64>::is_lock_free());
const _: () = assert!(std::mem::size_of::<OsU32>() == 4 && std::mem::align_of::<OsU32>() == 4);
const _: () = assert!(std::mem::size_of::<OsU64>() == 8 && std::mem::align_of::<OsU64>() == 8);

impl Atomic32 for OsU32 {
    #[inline]
    fn new(v: u32) -> Self {
        atomic::Atomic::new(v)
    }
    #[inline]
    fn load(&self, order: Ordering) -> u32 {
        atomic::Atomic::load(self, order)
    }
    #[inline]
    fn store(&self, v: u32, order: Ordering) {
        atomic::Atomic::store(self, v, order)
    }
    #[inline]
    fn swap(&self, v: u32, order: Ordering) -> u32 {
        atomic::Atomic::swap(self, v, order)
    }
    #[inline]
    fn compare_exchange(
        &self,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u32, u32> {
        atomic::Atomic::compare_exchange(self, current, new, success, failure)
    }
    #[inline]
    fn fetch_add(&self, v: u32, order: Ordering) -> u32 {
        atomic::Atomic::<u32>::fetch_add(self, v, order)
    }
    #[inline]
    fn fetch_sub(&self, v: u32, order: Ordering) -> u32 {
        atomic::Atomic::<u32>::fetch_sub(self, v, order)
    }
    #[inline]
    fn fetch_or(&self, v: u32, order: Ordering) -> u32 {
        atomic::Atomic::<u32>::fetch_or(self, v, order)
    }
}

impl Atomic64 for OsU64 {
    #[inline]
    fn new(v: u64) -> Self {
        atomic::Atomic::new(v)
    }
    #[inline]
    fn load(&self, order: Ordering) -> u64 {
        atomic::Atomic::load(self, order)
    }
    #[inline]
    fn store(&self, v: u64, order: Ordering) {
        atomic::Atomic::store(self, v, order)
    }
    #[inline]
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        atomic::Atomic::compare_exchange(self, current, new, success, failure)
    }
}

impl Platform for Os {
    type U32 = OsU32;
    type U64 = OsU64;
    type Deadline = Option<Instant>;

    #[inline]
    fn deadline(&self, timeout: Option<Duration>) -> Option<Instant> {
        // A timeout too large to represent is the same as no timeout.
        timeout.and_then(|t| Instant::now().checked_add(t))
    }

    #[inline]
    fn expired(&self, deadline: Option<Instant>) -> bool {
        deadline.is_some_and(|d| Instant::now() >= d)
    }

    #[inline]
    fn sooner(&self, a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, None) => a,
            (None, b) => b,
        }
    }

    fn wait(&self, word: &OsU32, expected: u32, deadline: Option<Instant>) {
        let timeout = match deadline {
            None => None,
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return,
            },
        };
        crate::futex::wait(word, expected, timeout);
    }

    #[inline]
    fn wake_all(&self, word: &OsU32) {
        crate::futex::wake(word, i32::MAX);
    }

    #[inline]
    fn relax(&self, attempt: u32) {
        if attempt < 6 {
            for _ in 0..(1u32 << attempt) {
                std::hint::spin_loop();
            }
        } else {
            std::thread::yield_now();
        }
    }

    fn identity(&self) -> Identity {
        crate::registry::proc_identity_self()
    }

    fn is_alive(&self, who: Identity) -> bool {
        crate::registry::proc_is_alive(who)
    }
}
