//! The platform under loom, which explores the weak-memory behaviours
//! Shuttle cannot (Shuttle runs every atomic as sequentially consistent).
//!
//! loom models acquire, release and sequentially consistent *fences*, but
//! treats a sequentially consistent *access* like an acquire or release one.
//! The algorithm's no-lost-wake-up argument rests on sequentially
//! consistent accesses, so this platform gives each such access the fence
//! that makes loom honour it: a SeqCst load becomes `fence(SeqCst)` +
//! acquire load, a SeqCst store or read-modify-write becomes the
//! release/acq-rel access + `fence(SeqCst)`. Every weaker ordering is passed
//! through unchanged and is checked as written.

use std::collections::HashSet;
use std::sync::atomic::Ordering::{self, AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use loom::sync::atomic::{fence, AtomicU32, AtomicU64};
use loom::sync::{Condvar, Mutex};

use crate::platform::{Atomic32, Atomic64, Identity, Platform, Step};

fn load_order(o: Ordering) -> Ordering {
    if o == SeqCst {
        fence(SeqCst);
        Acquire
    } else {
        o
    }
}

fn store_order(o: Ordering) -> Ordering {
    if o == SeqCst {
        Release
    } else {
        o
    }
}

fn rmw_order(o: Ordering) -> Ordering {
    if o == SeqCst {
        AcqRel
    } else {
        o
    }
}

fn failure_order(o: Ordering) -> Ordering {
    if o == SeqCst {
        Acquire
    } else {
        o
    }
}

fn after(o: Ordering) {
    if o == SeqCst {
        fence(SeqCst);
    }
}

/// loom's 32-bit atomic with the SeqCst mapping.
pub struct LU32(AtomicU32);
/// loom's 64-bit atomic with the SeqCst mapping.
pub struct LU64(AtomicU64);

impl Atomic32 for LU32 {
    fn new(v: u32) -> Self {
        LU32(AtomicU32::new(v))
    }
    fn load(&self, o: Ordering) -> u32 {
        self.0.load(load_order(o))
    }
    fn store(&self, v: u32, o: Ordering) {
        self.0.store(v, store_order(o));
        after(o);
    }
    fn swap(&self, v: u32, o: Ordering) -> u32 {
        let r = self.0.swap(v, rmw_order(o));
        after(o);
        r
    }
    fn compare_exchange(&self, c: u32, n: u32, s: Ordering, f: Ordering) -> Result<u32, u32> {
        let r = self
            .0
            .compare_exchange(c, n, rmw_order(s), failure_order(f));
        after(s);
        r
    }
    fn fetch_add(&self, v: u32, o: Ordering) -> u32 {
        let r = self.0.fetch_add(v, rmw_order(o));
        after(o);
        r
    }
    fn fetch_sub(&self, v: u32, o: Ordering) -> u32 {
        let r = self.0.fetch_sub(v, rmw_order(o));
        after(o);
        r
    }
    fn fetch_or(&self, v: u32, o: Ordering) -> u32 {
        let r = self.0.fetch_or(v, rmw_order(o));
        after(o);
        r
    }
}

impl Atomic64 for LU64 {
    fn new(v: u64) -> Self {
        LU64(AtomicU64::new(v))
    }
    fn load(&self, o: Ordering) -> u64 {
        self.0.load(load_order(o))
    }
    fn store(&self, v: u64, o: Ordering) {
        self.0.store(v, store_order(o));
        after(o);
    }
    fn compare_exchange(&self, c: u64, n: u64, s: Ordering, f: Ordering) -> Result<u64, u64> {
        let r = self
            .0
            .compare_exchange(c, n, rmw_order(s), failure_order(f));
        after(s);
        r
    }
}

loom::thread_local! {
    static STOP_AT: std::cell::Cell<Option<Step>> = std::cell::Cell::new(None);
}

/// The payload of a simulated crash.
#[derive(Debug)]
pub struct Stopped;

/// The platform.
pub struct LoomOs {
    futex: Mutex<()>,
    woken: Condvar,
    running: StdMutex<HashSet<Identity>>,
}

impl Default for LoomOs {
    fn default() -> Self {
        Self {
            futex: Mutex::new(()),
            woken: Condvar::new(),
            running: StdMutex::new(HashSet::new()),
        }
    }
}

impl LoomOs {
    /// Registers a running process.
    pub fn start(&self, who: Identity) {
        self.running.lock().unwrap().insert(who);
    }

    /// Makes the calling thread stop (die) the first time it reaches
    /// crash point `at`.
    pub fn stop_at(&self, at: Option<Step>) {
        STOP_AT.with(|s| s.set(at));
    }

    /// Runs `f`; `None` if the thread stopped at its crash point.
    pub fn may_stop<T>(f: impl FnOnce() -> T) -> Option<T> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(v) => Some(v),
            Err(e) if e.is::<Stopped>() => None,
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

impl Platform for LoomOs {
    type U32 = LU32;
    type U64 = LU64;
    type Deadline = ();

    fn deadline(&self, timeout: Option<Duration>) {
        assert!(
            timeout.is_none(),
            "the loom models only wait without a deadline"
        );
    }

    fn expired(&self, _d: ()) -> bool {
        false
    }

    fn sooner(&self, _a: (), _b: ()) {}

    fn wait(&self, word: &LU32, expected: u32, _d: ()) {
        let guard = self.futex.lock().unwrap();
        if word.0.load(Relaxed) != expected {
            return;
        }
        drop(self.woken.wait(guard).unwrap());
    }

    fn wake_all(&self, _word: &LU32) {
        let _guard = self.futex.lock().unwrap();
        self.woken.notify_all();
    }

    fn relax(&self, attempt: u32) {
        // loom lets a thread that yields see the newest values afterwards,
        // which would hide stale reads right where they matter (a visitor
        // waiting a little before it completes a pending operation); only
        // long retry loops yield.
        if attempt >= 8 {
            loom::thread::yield_now();
        }
    }

    fn step(&self, at: Step) {
        if STOP_AT.with(|s| s.get()) == Some(at) {
            STOP_AT.with(|s| s.set(None));
            std::panic::resume_unwind(Box::new(Stopped));
        }
    }

    fn identity(&self) -> Identity {
        unreachable!("loom processes attach with an explicit identity")
    }

    fn is_alive(&self, who: Identity) -> bool {
        crate::testing::sim::runs(&self.running.lock().unwrap(), who)
    }
}
