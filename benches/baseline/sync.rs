//! Process-shared robust pthread mutexes and condition variables placed in
//! shared memory, monotonic deadlines for them, and the process id source
//! of the two variants.
//!
//! Locking follows the C pool: `pthread_mutex_lock`, and on `EOWNERDEAD`
//! (the previous holder died holding the lock) `pthread_mutex_consistent`
//! and carry on; nothing repairs what the dead holder was changing.

use std::cell::UnsafeCell;
use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;
use std::time::Duration;

/// Turns a pthread return code into an `io::Result`.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// A `pthread_mutex_t` that lives in shared memory, initialised in place
/// with `PTHREAD_PROCESS_SHARED` and `PTHREAD_MUTEX_ROBUST`, and optionally
/// `PTHREAD_PRIO_INHERIT`.
#[repr(transparent)]
pub(super) struct ShmMutex(UnsafeCell<libc::pthread_mutex_t>);

/// Proof that the calling thread holds a [`ShmMutex`]; unlocks it on drop.
pub(super) struct ShmGuard<'a> {
    /// The locked mutex.
    mutex: &'a ShmMutex,
}

impl ShmMutex {
    /// Initialises the mutex at `this` in place: process-shared, robust,
    /// and priority-inheriting when `pi` is set.
    ///
    /// # Safety
    /// `this` must be valid for writes of a `pthread_mutex_t`, suitably
    /// aligned, and no process may use the mutex until initialisation has
    /// been published (by the creator's ready flag).
    pub(super) unsafe fn init(this: *mut ShmMutex, pi: bool) -> io::Result<()> {
        let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is writable storage for an attribute object.
        check(unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) })?;
        let a = attr.as_mut_ptr();
        let result = (|| {
            // SAFETY: `a` was initialised by `pthread_mutexattr_init` above
            // and is destroyed only below.
            check(unsafe { libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED) })?;
            // SAFETY: as above.
            check(unsafe { libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST) })?;
            if pi {
                // SAFETY: as above.
                check(unsafe {
                    libc::pthread_mutexattr_setprotocol(a, libc::PTHREAD_PRIO_INHERIT)
                })?;
            }
            // SAFETY: `this` is valid for writes by the caller's contract,
            // `ShmMutex` is a transparent wrapper of `pthread_mutex_t`, and
            // `a` is an initialised attribute object.
            check(unsafe { libc::pthread_mutex_init(this.cast::<libc::pthread_mutex_t>(), a) })
        })();
        // SAFETY: `a` is an initialised attribute object, destroyed once.
        let destroyed = check(unsafe { libc::pthread_mutexattr_destroy(a) });
        result.and(destroyed)
    }

    /// Locks the mutex. If the previous owner died holding it
    /// (`EOWNERDEAD`), marks it consistent and returns the guard anyway,
    /// as the C pool does.
    ///
    /// # Panics
    /// On any other error (`ENOTRECOVERABLE`, `EDEADLK`, ...): the pool can
    /// no longer be used meaningfully.
    #[inline]
    pub(super) fn lock(&self) -> ShmGuard<'_> {
        // SAFETY: the mutex was initialised by the creator before the pool
        // was published, and stays mapped while `self` is borrowed.
        let rc = unsafe { libc::pthread_mutex_lock(self.0.get()) };
        if rc != 0 {
            self.lock_failed(rc);
        }
        ShmGuard { mutex: self }
    }

    /// The slow path of [`ShmMutex::lock`]: recover from an owner's death or
    /// fail loudly.
    #[cold]
    fn lock_failed(&self, rc: libc::c_int) {
        if rc == libc::EOWNERDEAD {
            self.make_consistent();
        } else {
            panic!("pthread_mutex_lock: {}", io::Error::from_raw_os_error(rc));
        }
    }

    /// Marks the mutex consistent after `EOWNERDEAD` (the caller holds it).
    #[cold]
    fn make_consistent(&self) {
        // SAFETY: called only by the thread that just acquired the mutex
        // with EOWNERDEAD, as `pthread_mutex_consistent` requires.
        let rc = unsafe { libc::pthread_mutex_consistent(self.0.get()) };
        assert_eq!(
            rc,
            0,
            "pthread_mutex_consistent: {}",
            io::Error::from_raw_os_error(rc)
        );
    }

    /// The raw mutex, for the condition variable calls.
    #[inline]
    fn raw(&self) -> *mut libc::pthread_mutex_t {
        self.0.get()
    }
}

impl Drop for ShmGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard exists only while this thread holds the mutex.
        let rc = unsafe { libc::pthread_mutex_unlock(self.mutex.raw()) };
        assert_eq!(
            rc,
            0,
            "pthread_mutex_unlock: {}",
            io::Error::from_raw_os_error(rc)
        );
    }
}

/// How a wait on a [`ShmCond`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wake {
    /// Signalled, broadcast or woken spuriously: re-check the condition.
    Woken,
    /// The absolute deadline passed.
    TimedOut,
}

/// A `pthread_cond_t` that lives in shared memory, initialised in place with
/// `PTHREAD_PROCESS_SHARED` and `CLOCK_MONOTONIC`.
#[repr(transparent)]
pub(super) struct ShmCond(UnsafeCell<libc::pthread_cond_t>);

impl ShmCond {
    /// Initialises the condition variable at `this` in place:
    /// process-shared, timed waits on `CLOCK_MONOTONIC`.
    ///
    /// # Safety
    /// As for [`ShmMutex::init`].
    pub(super) unsafe fn init(this: *mut ShmCond) -> io::Result<()> {
        let mut attr = MaybeUninit::<libc::pthread_condattr_t>::uninit();
        // SAFETY: `attr` is writable storage for an attribute object.
        check(unsafe { libc::pthread_condattr_init(attr.as_mut_ptr()) })?;
        let a = attr.as_mut_ptr();
        let result = (|| {
            // SAFETY: `a` was initialised by `pthread_condattr_init` above
            // and is destroyed only below.
            check(unsafe { libc::pthread_condattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED) })?;
            // SAFETY: as above.
            check(unsafe { libc::pthread_condattr_setclock(a, libc::CLOCK_MONOTONIC) })?;
            // SAFETY: `this` is valid for writes by the caller's contract,
            // `ShmCond` is a transparent wrapper of `pthread_cond_t`, and
            // `a` is an initialised attribute object.
            check(unsafe { libc::pthread_cond_init(this.cast::<libc::pthread_cond_t>(), a) })
        })();
        // SAFETY: `a` is an initialised attribute object, destroyed once.
        let destroyed = check(unsafe { libc::pthread_condattr_destroy(a) });
        result.and(destroyed)
    }

    /// Wakes one waiter.
    #[inline]
    pub(super) fn signal(&self) {
        // SAFETY: the condition variable was initialised before publication.
        let rc = unsafe { libc::pthread_cond_signal(self.0.get()) };
        assert_eq!(
            rc,
            0,
            "pthread_cond_signal: {}",
            io::Error::from_raw_os_error(rc)
        );
    }

    /// Wakes every waiter.
    #[inline]
    pub(super) fn broadcast(&self) {
        // SAFETY: the condition variable was initialised before publication.
        let rc = unsafe { libc::pthread_cond_broadcast(self.0.get()) };
        assert_eq!(
            rc,
            0,
            "pthread_cond_broadcast: {}",
            io::Error::from_raw_os_error(rc)
        );
    }

    /// Waits, releasing and re-acquiring the mutex held through `guard`,
    /// until woken or until the absolute `CLOCK_MONOTONIC` `deadline`
    /// (`None`: no deadline). An `EOWNERDEAD` on re-acquisition is handled
    /// as in [`ShmMutex::lock`] and reported as [`Wake::Woken`].
    pub(super) fn wait(&self, guard: &mut ShmGuard<'_>, deadline: Option<&libc::timespec>) -> Wake {
        let m = guard.mutex.raw();
        let rc = match deadline {
            // SAFETY: the guard proves this thread holds `m`; both objects
            // are initialised process-shared objects in a live mapping.
            Some(ts) => unsafe { libc::pthread_cond_timedwait(self.0.get(), m, ts) },
            // SAFETY: as above.
            None => unsafe { libc::pthread_cond_wait(self.0.get(), m) },
        };
        match rc {
            0 => Wake::Woken,
            libc::ETIMEDOUT => Wake::TimedOut,
            libc::EOWNERDEAD => {
                guard.mutex.make_consistent();
                Wake::Woken
            }
            _ => panic!(
                "pthread_cond_(timed)wait: {}",
                io::Error::from_raw_os_error(rc)
            ),
        }
    }
}

/// Longest timeout honoured; longer ones are clamped so that the deadline
/// cannot overflow `time_t` (about 100 years).
const MAX_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The current `CLOCK_MONOTONIC` time.
pub(super) fn now_monotonic() -> libc::timespec {
    let mut ts = MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: `ts` is valid writable storage for a timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, ts.as_mut_ptr()) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    // SAFETY: clock_gettime returned 0, so it filled `ts`.
    unsafe { ts.assume_init() }
}

/// The absolute `CLOCK_MONOTONIC` time `timeout` from now, for
/// `pthread_cond_timedwait` on a condition variable set to that clock.
pub(super) fn deadline_after(timeout: Duration) -> libc::timespec {
    let t = timeout.min(MAX_TIMEOUT);
    let mut ts = now_monotonic();
    // Both casts are lossless: the clamped seconds fit in time_t, and
    // sub-second nanoseconds fit in c_long.
    ts.tv_sec += t.as_secs() as libc::time_t;
    ts.tv_nsec += t.subsec_nanos() as libc::c_long;
    if ts.tv_nsec >= 1_000_000_000 {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1_000_000_000;
    }
    ts
}

/// This process's pid as cached by the best-case variant; 0 until first
/// read, and reset to 0 in a child after `fork` so that a handle inherited
/// across `fork` does not keep its parent's pid.
static CACHED_PID: AtomicI32 = AtomicI32::new(0);

/// Registers [`forget_pid_in_child`] once per process.
static ATFORK: Once = Once::new();

/// `fork` child handler: forgets the parent's cached pid.
extern "C" fn forget_pid_in_child() {
    // Relaxed: the child has a single thread when this runs.
    CACHED_PID.store(0, Ordering::Relaxed);
}

/// The calling process's pid: the `getpid()` system call when `cached` is
/// false (the shipped C pool; glibc does not cache it), or a value read once
/// per process when `cached` is true (the best case).
#[inline]
pub(super) fn current_pid(cached: bool) -> libc::pid_t {
    if cached {
        // Relaxed: the value is this process's own, written by this process.
        let pid = CACHED_PID.load(Ordering::Relaxed);
        if pid != 0 {
            return pid;
        }
        return cache_pid();
    }
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() }
}

/// Reads the pid and caches it, registering the fork handler first so that
/// no cached value can survive into a child.
#[cold]
fn cache_pid() -> libc::pid_t {
    ATFORK.call_once(|| {
        // SAFETY: the handler only performs an atomic store, which is
        // async-signal-safe as a fork child handler must be.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forget_pid_in_child)) };
        assert_eq!(
            rc,
            0,
            "pthread_atfork: {}",
            io::Error::from_raw_os_error(rc)
        );
    });
    // SAFETY: getpid has no preconditions and cannot fail.
    let pid = unsafe { libc::getpid() };
    CACHED_PID.store(pid, Ordering::Relaxed);
    pid
}
