//! Linux futexes on words in shared memory.
//!
//! The words live in a `MAP_SHARED` mapping that several processes map at
//! different addresses, so the calls must not use `FUTEX_PRIVATE_FLAG`: the
//! kernel then keys a waiter by the backing object and offset, not by the
//! virtual address, and a wake in one process reaches sleepers in another.
//! `FUTEX_WAIT` measures its relative timeout on `CLOCK_MONOTONIC`, so a
//! change of the wall clock neither shortens nor extends a wait.

use std::time::Duration;

use crate::platform::OsU32;

/// Sleeps while `*word == expected`, for at most `timeout` (`None`: no
/// limit). Returns on a wake, on a value mismatch (`EAGAIN`), on a signal
/// (`EINTR`), on timeout, or spuriously: callers loop and re-check.
pub fn wait(word: &OsU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        // Saturate: a timeout of centuries is as good as none.
        tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, 4-byte aligned `atomic::Atomic<u32>`, which
    // is `repr(transparent)` over the `u32` the kernel reads atomically;
    // `ts_ptr` is null or points to a timespec that outlives the call. The
    // kernel only reads both. Every outcome (including errors) is a return
    // the caller is prepared for, so the result is deliberately ignored.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word as *const OsU32 as *const u32,
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
        );
    }
}

/// Wakes up to `n` sleepers on `word`; returns how many were woken.
pub fn wake(word: &OsU32, n: i32) -> usize {
    // SAFETY: as in `wait`; FUTEX_WAKE only uses the address as a key.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word as *const OsU32 as *const u32,
            libc::FUTEX_WAKE,
            n,
        )
    };
    usize::try_from(r).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    #[test]
    fn wait_returns_at_once_on_mismatch() {
        let w = OsU32::new(1);
        let t = Instant::now();
        wait(&w, 0, Some(Duration::from_secs(5)));
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn wait_times_out() {
        let w = OsU32::new(0);
        let t = Instant::now();
        wait(&w, 0, Some(Duration::from_millis(30)));
        let e = t.elapsed();
        assert!(e >= Duration::from_millis(25), "woke after {e:?}");
    }

    #[test]
    fn wake_reaches_a_sleeper() {
        let w = std::sync::Arc::new(OsU32::new(0));
        let w2 = w.clone();
        let sleeper = std::thread::spawn(move || {
            while w2.load(Ordering::Acquire) == 0 {
                wait(&w2, 0, Some(Duration::from_secs(10)));
            }
        });
        w.store(1, Ordering::Release);
        wake(&w, i32::MAX);
        sleeper.join().unwrap();
    }
}
