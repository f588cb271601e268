//! A Rust re-implementation of the lock-based C packet-buffer pool (the
//! Ouroboros SSM pool and its offset ring) that `ssm` replaces, kept only as
//! a comparison baseline for the benchmarks. It is not part of the library.
//!
//! What it reproduces, and where:
//!
//! * [`BaselinePool`] (`pool.rs`): one POSIX shared memory object holding
//!   the blocks of every size class back to back, followed by the shard
//!   table and a header. Each size class is split into shards (4 by
//!   default); every shard has a process-shared robust pthread mutex, a
//!   process-shared condition variable on `CLOCK_MONOTONIC`, a singly linked
//!   free list of 32-bit offsets and a free count. At creation every block
//!   of a class sits in shard 0 (lazy distribution). A process allocates
//!   from shard `pid % shards` first, then steals from the following shards
//!   in order; a free returns the block to the shard of the process that
//!   allocated it and signals that shard's condition variable. Each block
//!   starts with a 28-byte header (next offset, refcount, allocator pid,
//!   size, head, tail, own offset) followed by its data.
//! * [`BaselineRing`] (`ring.rs`): a shared memory ring of `u64` slots with
//!   head and tail indices read and written with acquire/release atomics,
//!   one robust process-shared mutex taken by every write and every
//!   non-empty read, and two condition variables (data added, data removed)
//!   for the blocking variants.
//!
//! Two [`Variant`]s: the pool as shipped (priority-inheritance robust
//! mutexes; two `getpid()` system calls per allocation, one to pick the
//! local shard and one, under the shard's mutex, to record the allocator,
//! and none per free) and its best case (plain robust mutexes, the pid read
//! once per process).
//!
//! Where this differs from the C code, and why:
//!
//! * The empty-list marker is `u32::MAX`. The C free list uses offset 0 for
//!   "empty", which makes the block at offset 0 unreachable; here every
//!   block can be allocated.
//! * A blocking allocation re-checks the free counts under its local
//!   shard's mutex before it waits; the C code waits unconditionally after
//!   a failed pass, so a free landing between the pass and the wait is
//!   missed until the deadline. A free into another shard still does not
//!   wake the waiter, as in C.
//! * Freeing a free block panics instead of wrapping the refcount, and an
//!   offset outside the block area panics instead of being followed; a
//!   benchmark that does either is broken.
//! * The header also records the geometry, and an opener waits for a ready
//!   flag, because the C pool's geometry is compiled in.
#![allow(dead_code)]

mod pool;
mod ring;
mod shm;
mod sync;

// A bench uses only some of these; the others must not warn.
#[allow(unused_imports)]
pub use pool::{
    BaselinePool, BLOCK_HEADER_SIZE, DEFAULT_HEADSPACE, DEFAULT_SHARDS, DEFAULT_TAILSPACE,
    GSPP_CLASSES, MAX_CLASSES, PUP_CLASSES,
};
#[allow(unused_imports)]
pub use ring::{BaselineRing, DEFAULT_RING_CAPACITY};

use std::fmt;
use std::io;

/// Which build of the C pool to reproduce.
///
/// `pi` is fixed when the shared object is created (a pthread mutex's
/// protocol cannot change after `pthread_mutex_init`); `cache_pid` is a
/// property of each process's handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    /// Create the mutexes with `PTHREAD_PRIO_INHERIT` (every contended lock
    /// and unlock then goes through the kernel's PI futex calls).
    pub pi: bool,
    /// Read the process id once per process and cache it (a `fork` child
    /// reads it again), instead of calling the `getpid()` system call on
    /// every allocation.
    pub cache_pid: bool,
}

impl Variant {
    /// The C pool as shipped: priority-inheritance robust mutexes and two
    /// `getpid()` system calls per allocation.
    pub const SHIPPED: Variant = Variant {
        pi: true,
        cache_pid: false,
    };

    /// The C pool's best case: plain robust mutexes and a cached pid.
    pub const BEST: Variant = Variant {
        pi: false,
        cache_pid: true,
    };

    /// A short name for benchmark reports: `"c-shipped"` or `"c-best"`
    /// (and `"c-pi-cached"` / `"c-plain-getpid"` for the two mixed cases).
    pub fn label(&self) -> &'static str {
        match (self.pi, self.cache_pid) {
            (true, false) => "c-shipped",
            (false, true) => "c-best",
            (true, true) => "c-pi-cached",
            (false, false) => "c-plain-getpid",
        }
    }
}

/// Why an allocation failed (the C pool's `EMSGSIZE`, `EAGAIN`,
/// `ETIMEDOUT`, or a system error).
#[derive(Debug)]
pub enum BaselineError {
    /// No size class can hold the request plus the block header, headspace
    /// and tailspace (`EMSGSIZE`).
    TooLarge,
    /// The size class that fits the request has no free block in any shard
    /// (`EAGAIN`).
    Exhausted,
    /// A blocking allocation reached its deadline (`ETIMEDOUT`).
    Timeout,
    /// A system call failed.
    Io(io::Error),
}

impl fmt::Display for BaselineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BaselineError::TooLarge => f.write_str("request larger than the largest size class"),
            BaselineError::Exhausted => f.write_str("size class exhausted in every shard"),
            BaselineError::Timeout => f.write_str("timed out waiting for a free block"),
            BaselineError::Io(e) => write!(f, "system error: {e}"),
        }
    }
}

impl std::error::Error for BaselineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BaselineError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for BaselineError {
    fn from(e: io::Error) -> Self {
        BaselineError::Io(e)
    }
}

/// Helpers shared by the tests of the submodules.
#[cfg(test)]
mod test_util {
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Distinguishes the objects created by one test process.
    static COUNTER: AtomicU32 = AtomicU32::new(0);

    /// A shared memory object name unique to this process and call, which is
    /// unlinked when dropped (also when the test panics).
    pub(super) struct TestName {
        /// The name, with its leading slash.
        pub(super) name: String,
        /// Unlinks the name on drop.
        unlink: fn(&str),
    }

    impl TestName {
        /// A fresh name containing `tag`, the pid and a counter; `unlink`
        /// removes the object it names.
        pub(super) fn new(tag: &str, unlink: fn(&str)) -> TestName {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("/ssm-baseline-{tag}-{}-{n}", std::process::id());
            unlink(&name);
            TestName { name, unlink }
        }
    }

    impl Drop for TestName {
        fn drop(&mut self) {
            (self.unlink)(&self.name);
        }
    }

    /// Forks; the child runs `child` and leaves with `_exit(code)` without
    /// returning into the test harness. Returns the child's pid in the
    /// parent.
    ///
    /// `child` must restrict itself to what is safe after `fork` in a
    /// multithreaded process: pool and ring operations, raw `write`s.
    pub(super) fn fork_child(child: impl FnOnce() -> i32) -> libc::pid_t {
        // SAFETY: the child only runs `child`, which by contract avoids
        // anything that another thread could have left locked, and then
        // leaves with `_exit`, which skips atexit handlers and destructors.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let code = child();
            // SAFETY: `_exit` is async-signal-safe and never returns.
            unsafe { libc::_exit(code) };
        }
        pid
    }

    /// Waits for `pid` and returns its exit code (panics if it was killed).
    pub(super) fn wait_child(pid: libc::pid_t) -> i32 {
        let mut status = 0;
        // SAFETY: `status` is a valid out pointer; `pid` is our child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(rc, pid, "waitpid: {}", std::io::Error::last_os_error());
        assert!(
            libc::WIFEXITED(status),
            "child did not exit normally: {status:#x}"
        );
        libc::WEXITSTATUS(status)
    }

    /// A pipe: `(read end, write end)`.
    pub(super) fn pipe() -> (libc::c_int, libc::c_int) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
        assert_eq!(rc, 0, "pipe: {}", std::io::Error::last_os_error());
        (fds[0], fds[1])
    }

    /// Writes one `u32` to `fd` with a raw `write` (usable in a fork child).
    pub(super) fn write_u32(fd: libc::c_int, v: u32) -> bool {
        let bytes = v.to_ne_bytes();
        // SAFETY: `bytes` is valid for reading 4 bytes.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        n == 4
    }

    /// Reads one `u32` from `fd`.
    pub(super) fn read_u32(fd: libc::c_int) -> u32 {
        let mut bytes = [0u8; 4];
        // SAFETY: `bytes` is valid for writing 4 bytes.
        let n = unsafe { libc::read(fd, bytes.as_mut_ptr().cast(), bytes.len()) };
        assert_eq!(n, 4, "short read from pipe");
        u32::from_ne_bytes(bytes)
    }

    /// Closes `fd`.
    pub(super) fn close(fd: libc::c_int) {
        // SAFETY: `fd` is a descriptor this test opened and closes once.
        unsafe { libc::close(fd) };
    }
}
