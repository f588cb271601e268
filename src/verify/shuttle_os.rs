//! The platform under Shuttle: Shuttle's atomics, a futex modelled with
//! Shuttle's mutex and condition variable, a logical clock, simulated
//! process identities, and crashes at random crash points.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use std::sync::Arc;

use shuttle::rand::Rng;
use shuttle::scheduler::{PctScheduler, RandomScheduler};
use shuttle::sync::atomic::{AtomicU32, AtomicU64};
use shuttle::sync::{Condvar, Mutex};
use shuttle::{Config, Runner};

use crate::platform::{Atomic32, Atomic64, Identity, Platform, Step};

/// Shuttle's 32-bit atomic.
pub struct SU32(AtomicU32);
/// Shuttle's 64-bit atomic.
pub struct SU64(AtomicU64);

impl Atomic32 for SU32 {
    fn new(v: u32) -> Self {
        SU32(AtomicU32::new(v))
    }
    fn load(&self, o: Ordering) -> u32 {
        self.0.load(o)
    }
    fn store(&self, v: u32, o: Ordering) {
        self.0.store(v, o)
    }
    fn swap(&self, v: u32, o: Ordering) -> u32 {
        self.0.swap(v, o)
    }
    fn compare_exchange(&self, c: u32, n: u32, s: Ordering, f: Ordering) -> Result<u32, u32> {
        self.0.compare_exchange(c, n, s, f)
    }
    fn fetch_add(&self, v: u32, o: Ordering) -> u32 {
        self.0.fetch_add(v, o)
    }
    fn fetch_sub(&self, v: u32, o: Ordering) -> u32 {
        self.0.fetch_sub(v, o)
    }
    fn fetch_or(&self, v: u32, o: Ordering) -> u32 {
        self.0.fetch_or(v, o)
    }
}

impl Atomic64 for SU64 {
    fn new(v: u64) -> Self {
        SU64(AtomicU64::new(v))
    }
    fn load(&self, o: Ordering) -> u64 {
        self.0.load(o)
    }
    fn store(&self, v: u64, o: Ordering) {
        self.0.store(v, o)
    }
    fn compare_exchange(&self, c: u64, n: u64, s: Ordering, f: Ordering) -> Result<u64, u64> {
        self.0.compare_exchange(c, n, s, f)
    }
}

shuttle::thread_local! {
    static ME: std::cell::Cell<Option<Identity>> = const { std::cell::Cell::new(None) };
    /// One in how many crash points kills this thread (0: never).
    static MORTALITY: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The payload of a simulated crash.
#[derive(Debug)]
pub struct Died;

/// The platform.
pub struct ShuttleOs {
    futex: Mutex<()>,
    woken: Condvar,
    clock: AtomicU64,
    running: StdMutex<HashSet<Identity>>,
}

impl Default for ShuttleOs {
    fn default() -> Self {
        Self {
            futex: Mutex::new(()),
            woken: Condvar::new(),
            clock: AtomicU64::new(0),
            running: StdMutex::new(HashSet::new()),
        }
    }
}

impl ShuttleOs {
    /// Makes the calling thread the process `who`, running.
    pub fn become_process(&self, who: Identity) {
        ME.with(|m| m.set(Some(who)));
        self.running.lock().unwrap().insert(who);
    }

    /// The calling thread dies at each crash point with probability
    /// 1 / `one_in` (0: it never dies).
    pub fn mortal(&self, one_in: u32) {
        MORTALITY.with(|m| m.set(one_in));
    }

    /// Marks `who` dead (after its thread stopped).
    pub fn bury(&self, who: Identity) {
        self.running.lock().unwrap().remove(&who);
    }
}

/// Runs `f` on the calling thread; `None` if it died at a crash point.
pub fn may_die<T>(f: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(e) if e.is::<Died>() => None,
        Err(e) => std::panic::resume_unwind(e),
    }
}

impl Platform for ShuttleOs {
    type U32 = SU32;
    type U64 = SU64;
    /// A logical time: deadlines count timed waits.
    type Deadline = Option<u64>;

    fn deadline(&self, timeout: Option<Duration>) -> Option<u64> {
        timeout.map(|t| self.clock.load(Ordering::SeqCst) + (t.as_millis() as u64).clamp(1, 4))
    }

    fn expired(&self, d: Option<u64>) -> bool {
        d.is_some_and(|d| self.clock.load(Ordering::SeqCst) >= d)
    }

    fn sooner(&self, a: Option<u64>, b: Option<u64>) -> Option<u64> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, None) => a,
            (None, b) => b,
        }
    }

    fn wait(&self, word: &SU32, expected: u32, d: Option<u64>) {
        if d.is_some() {
            // A timed sleep: let others run, then time passes.
            shuttle::thread::yield_now();
            self.clock.fetch_add(1, Ordering::SeqCst);
            return;
        }
        // The futex: the value check and the sleep are atomic with respect
        // to `wake_all`, which takes the same lock.
        let guard = self.futex.lock().unwrap();
        if word.load(Ordering::SeqCst) != expected {
            return;
        }
        drop(self.woken.wait(guard).unwrap());
    }

    fn wake_all(&self, _word: &SU32) {
        let _guard = self.futex.lock().unwrap();
        self.woken.notify_all();
    }

    fn relax(&self, _attempt: u32) {
        shuttle::thread::yield_now();
    }

    fn step(&self, _at: Step) {
        let one_in = MORTALITY.with(|m| m.get());
        if one_in > 0 && shuttle::rand::thread_rng().gen_range(0..one_in) == 0 {
            MORTALITY.with(|m| m.set(0));
            std::panic::resume_unwind(Box::new(Died));
        }
    }

    fn identity(&self) -> Identity {
        ME.with(|m| m.get()).expect("thread has become a process")
    }

    fn is_alive(&self, who: Identity) -> bool {
        crate::testing::sim::runs(&self.running.lock().unwrap(), who)
    }
}

/// Schedules per scheduler and test: `SSM_SHUTTLE_ITERATIONS` (default 150).
pub fn iterations() -> usize {
    std::env::var("SSM_SHUTTLE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

/// The schedulers' seed: `SSM_SHUTTLE_SEED` (default fixed).
pub fn seed() -> u64 {
    std::env::var("SSM_SHUTTLE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED)
}

/// Runs `test` under the random scheduler and the PCT scheduler, or replays
/// a schedule given in `SSM_SHUTTLE_REPLAY`.
pub fn explore(test: impl Fn() + Send + Sync + 'static) {
    let test = Arc::new(test);
    if let Ok(schedule) = std::env::var("SSM_SHUTTLE_REPLAY") {
        let t = test.clone();
        shuttle::replay(move || t(), &schedule);
        return;
    }
    let mut config = Config::new();
    config.silence_warnings = true;
    let t = test.clone();
    Runner::new(
        RandomScheduler::new_from_seed(seed(), iterations()),
        config.clone(),
    )
    .run(move || t());
    let t = test.clone();
    Runner::new(PctScheduler::new_from_seed(seed(), 3, iterations()), config).run(move || t());
}
