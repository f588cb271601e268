//! Simulated processes: threads that stand for processes, with identities
//! and a liveness table the test controls, over heap memory with the
//! production atomics and futexes.

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::platform::{Identity, OsU32, OsU64, Platform, Step};

thread_local! {
    static CRASH_IN: Cell<Option<u32>> = const { Cell::new(None) };
}

/// The payload of a simulated crash.
#[derive(Debug)]
pub struct Crashed;

/// Makes the calling thread "die" at the `n`th crash point it passes from
/// now on (1 = the next one); `None` disarms.
pub fn crash_after(n: Option<u32>) {
    CRASH_IN.with(|c| c.set(n));
}

/// Runs `f`, which may crash; returns `None` if it did.
pub fn survive<T>(f: impl FnOnce() -> T) -> Option<T> {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    crash_after(None);
    match r {
        Ok(v) => Some(v),
        Err(e) if e.is::<Crashed>() => None,
        Err(e) => std::panic::resume_unwind(e),
    }
}

/// A platform whose processes are whatever the test says is running.
#[derive(Default)]
pub struct SimOs {
    running: Mutex<HashSet<Identity>>,
}

impl SimOs {
    /// Starts the simulated process `who`.
    pub fn start(&self, who: Identity) {
        self.running.lock().unwrap().insert(who);
    }

    /// Ends the simulated process `who`.
    pub fn kill(&self, who: Identity) {
        self.running.lock().unwrap().remove(&who);
    }
}

impl Platform for SimOs {
    type U32 = OsU32;
    type U64 = OsU64;
    type Deadline = Option<Instant>;

    fn deadline(&self, timeout: Option<Duration>) -> Option<Instant> {
        crate::platform::Os.deadline(timeout)
    }
    fn expired(&self, d: Option<Instant>) -> bool {
        crate::platform::Os.expired(d)
    }
    fn sooner(&self, a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
        crate::platform::Os.sooner(a, b)
    }

    fn wait(&self, word: &OsU32, expected: u32, d: Option<Instant>) {
        crate::platform::Os.wait(word, expected, d)
    }
    fn wake_all(&self, word: &OsU32) {
        crate::platform::Os.wake_all(word)
    }
    fn relax(&self, attempt: u32) {
        crate::platform::Os.relax(attempt)
    }
    fn step(&self, _at: Step) {
        CRASH_IN.with(|c| match c.get() {
            Some(1) => {
                c.set(None);
                // Unwinds without running the panic hook: the thread simply
                // stops here, as a killed process would.
                std::panic::resume_unwind(Box::new(Crashed));
            }
            Some(n) => c.set(Some(n - 1)),
            None => {}
        });
    }
    fn identity(&self) -> Identity {
        unreachable!("simulated processes attach with an explicit identity")
    }
    fn is_alive(&self, who: Identity) -> bool {
        runs(&self.running.lock().unwrap(), who)
    }
}

/// Whether `who` is among `running`; a start time of 0 matches any process
/// with that pid.
pub fn runs(running: &HashSet<Identity>, who: Identity) -> bool {
    if who.start == 0 {
        running.iter().any(|r| r.pid == who.pid)
    } else {
        running.contains(&who)
    }
}
