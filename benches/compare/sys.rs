//! Process plumbing for the comparison: a monotonic clock shared by all
//! processes, anonymous shared memory made before `fork`, a start barrier
//! and handshakes on futex words, forked workers with a watchdog, reaping
//! with a deadline, a process's scheduler state from `/proc`, and CPU
//! affinity.
//!
//! Everything here is usable in a fork child of a single-threaded parent.

use std::ops::Deref;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

/// Exit code of a fork child that declined to run (see [`spawn_where`]).
pub const SKIPPED: i32 = 77;
/// Exit code of a fork child whose body panicked.
const PANICKED: i32 = 101;

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the
/// machine, so a timestamp taken in one process can be subtracted from one
/// taken in another (unlike `Instant`, whose values cannot be shared).
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Types that may live in memory shared between processes: valid when
/// every byte is zero, with interior mutability through atomics only.
///
/// # Safety
/// The implementor must be made of atomics (or arrays/structs of them)
/// only, so that the all-zero pattern is a valid value and concurrent
/// access from several processes is defined.
pub unsafe trait ShmSafe: Sized {}

// SAFETY: a plain atomic word; zero is valid.
unsafe impl ShmSafe for AtomicU32 {}
// SAFETY: a plain atomic word; zero is valid.
unsafe impl ShmSafe for AtomicU64 {}

/// `len` zeroed `T`s in an anonymous `MAP_SHARED` mapping. Made before
/// `fork`, the parent and every child see the same memory: results and
/// control words travel through it.
pub struct Shared<T: ShmSafe> {
    ptr: *mut T,
    len: usize,
}

impl<T: ShmSafe> Shared<T> {
    /// Maps `len` zeroed elements (at least one page).
    ///
    /// # Panics
    /// If the mapping fails.
    pub fn new(len: usize) -> Self {
        let bytes = (len.max(1) * std::mem::size_of::<T>()).max(1);
        // SAFETY: an anonymous shared mapping at an address of the
        // kernel's choice; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(
            p != libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        Shared { ptr: p.cast(), len }
    }

    /// Bytes of the mapping.
    fn bytes(&self) -> usize {
        (self.len.max(1) * std::mem::size_of::<T>()).max(1)
    }
}

impl<T: ShmSafe> Deref for Shared<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the mapping holds `len` page-aligned, zero-initialised
        // `T`s, valid by `ShmSafe`, and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<T: ShmSafe> Drop for Shared<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no reference
        // into it outlives `self` (they borrow from it).
        unsafe { libc::munmap(self.ptr.cast(), self.bytes()) };
    }
}

/// Control words of one experiment, in shared memory.
#[repr(C)]
pub struct Control {
    /// Workers that reached the start barrier (futex word).
    pub ready: AtomicU32,
    /// 0 until the parent starts the workers, then 1 (futex word).
    pub go: AtomicU32,
    /// Set to 1 when timed loops must end.
    pub stop: AtomicU32,
    /// Handshake between two workers (futex word; see `wake.rs`).
    pub phase: AtomicU32,
    /// Rounds of a handshake the second worker has finished (futex word).
    pub ack: AtomicU32,
    /// The word a bare futex sleeper waits on.
    pub word: AtomicU32,
    /// A value a worker publishes for another (its local shard + 1).
    pub info: AtomicU32,
    /// Timestamp (`now_ns`) the parent took when it released the barrier.
    pub t_go: AtomicU64,
    /// Timestamp a waker took just before its waking call.
    pub stamp: AtomicU64,
    /// Problems the workers found (bad payloads, failed operations).
    pub errors: AtomicU64,
}

// SAFETY: atomics only.
unsafe impl ShmSafe for Control {}

impl Control {
    /// Worker side of the start barrier: announce, then sleep until the
    /// parent says go.
    pub fn arrive_and_wait(&self) {
        self.ready.fetch_add(1, SeqCst);
        futex_wake(&self.ready);
        while self.go.load(Acquire) == 0 {
            futex_wait(&self.go, 0, Some(Duration::from_millis(100)));
        }
    }

    /// Parent side: waits until `n` workers arrived (at most `timeout`),
    /// records the start time and releases them. Returns false on timeout
    /// (a worker failed before the barrier); the workers are released
    /// anyway, with `stop` set.
    pub fn release(&self, n: u32, timeout: Duration) -> bool {
        let ok = wait_for(&self.ready, timeout, |v| v >= n);
        if !ok {
            self.stop.store(1, SeqCst);
        }
        self.t_go.store(now_ns(), SeqCst);
        self.go.store(1, Release);
        futex_wake(&self.go);
        ok
    }

    /// Whether timed loops must end.
    #[inline]
    pub fn stopped(&self) -> bool {
        self.stop.load(Relaxed) != 0
    }

    /// Tells timed loops to end.
    pub fn set_stop(&self) {
        self.stop.store(1, SeqCst);
    }

    /// Counts a problem found by a worker.
    pub fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }
}

/// `FUTEX_WAIT` on a word in shared memory (no private flag): sleeps while
/// it holds `expected`, at most `timeout`. Spurious returns are possible.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned 32-bit word for the duration of
    // the call; `tsp` is null or points to a live timespec.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            tsp,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// `FUTEX_WAKE` of every process sleeping on `word`.
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned 32-bit word; FUTEX_WAKE only
    // uses its address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// Sleeps on `word` until `ok(value)` holds, at most `timeout`; the writer
/// of the word must `futex_wake` it after each change. Returns whether it
/// held.
pub fn wait_for(word: &AtomicU32, timeout: Duration, ok: impl Fn(u32) -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let v = word.load(SeqCst);
        if ok(v) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        futex_wait(
            word,
            v,
            Some((deadline - now).min(Duration::from_millis(50))),
        );
    }
}

/// Stores `v` into `word` and wakes its sleepers.
pub fn publish(word: &AtomicU32, v: u32) {
    word.store(v, SeqCst);
    futex_wake(word);
}

/// The number of threads of this process.
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count())
}

/// Forks a worker that runs `body` and leaves with `_exit(code)`; returns
/// its pid. The child arms a watchdog (`alarm(watchdog_s)`, whose default
/// action kills it) so a hung worker cannot outlive the benchmark; a
/// panic becomes exit code 101.
///
/// # Panics
/// If the process has more than one thread (a fork child could inherit a
/// lock held by another thread) or `fork` fails.
pub fn spawn(watchdog_s: u32, body: impl FnOnce() -> i32) -> libc::pid_t {
    assert_eq!(thread_count(), 1, "fork only while single-threaded");
    // SAFETY: the process is single-threaded (checked above), so the child
    // inherits no lock held by another thread; it leaves through `_exit`
    // and never returns into the parent's code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: alarm has no preconditions.
        unsafe { libc::alarm(watchdog_s) };
        let code = panic::catch_unwind(AssertUnwindSafe(body)).unwrap_or(PANICKED);
        // SAFETY: `_exit` ends the child at once, without running the
        // parent's atexit handlers or flushing its inherited buffers.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Like [`spawn`], but the worker must have a pid accepted by `want`
/// (the baseline's local shard is `pid % shards`): forks until one does,
/// letting the others exit at once. Returns `None` after 256 attempts.
pub fn spawn_where(
    watchdog_s: u32,
    want: impl Fn(libc::pid_t) -> bool,
    body: impl Fn() -> i32,
) -> Option<libc::pid_t> {
    for _ in 0..256 {
        let pid = spawn(watchdog_s, || {
            // SAFETY: getpid has no preconditions.
            if want(unsafe { libc::getpid() }) {
                body()
            } else {
                SKIPPED
            }
        });
        if want(pid) {
            return Some(pid);
        }
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
    None
}

/// Waits for every worker in `pids`, at most `timeout`; kills (SIGKILL)
/// and reaps those still running then. Fails if a worker was killed or
/// exited with a non-zero code.
pub fn reap(pids: &[libc::pid_t], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut left: Vec<libc::pid_t> = pids.to_vec();
    let mut failures = Vec::new();
    while !left.is_empty() {
        left.retain(|&pid| {
            let mut status = 0;
            // SAFETY: `pid` is our child; `status` is a valid out pointer.
            let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if rc == 0 {
                return true;
            }
            if rc != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                failures.push(format!("worker {pid} ended with status {status:#x}"));
            }
            false
        });
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            kill_all(&left);
            failures.push(format!("workers {left:?} hung and were killed"));
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Kills and reaps the workers `pids`.
pub fn kill_all(pids: &[libc::pid_t]) {
    for &pid in pids {
        // SAFETY: signalling and reaping our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
}

/// The scheduler state letter of process `pid` (`R`, `S`, `D`, ...) from
/// `/proc/PID/stat`.
pub fn proc_state(pid: libc::pid_t) -> Option<u8> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain anything; the state follows its ")".
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat.get(close + 2).copied()
}

/// Waits until process `pid` sleeps (state `S`, which is how a futex wait
/// shows) and still sleeps a little later, so that it has really left the
/// CPU. Returns false if it did not within `limit`.
pub fn wait_asleep(pid: libc::pid_t, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if proc_state(pid) == Some(b'S') {
            std::thread::sleep(Duration::from_micros(100));
            if proc_state(pid) == Some(b'S') {
                return true;
            }
        }
        std::thread::yield_now();
    }
    false
}

/// The CPUs the calling process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE and `set` is valid.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Restricts the calling process to `cpus` (ignored if empty).
fn pin(cpus: &[usize]) {
    if cpus.is_empty() {
        return;
    }
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: `cpu` came from `allowed_cpus`, so it is below
        // CPU_SETSIZE; `set` is valid.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

/// Restricts the calling process to the first `n` CPUs it may run on.
pub fn pin_to_cpus(n: usize) {
    let cpus = allowed_cpus();
    pin(&cpus[..n.min(cpus.len())]);
}

/// Restricts the calling process to the `k`-th CPU it may run on (modulo
/// their number), so that two processes pinned to `k = 0` and `k = 1` run
/// on different CPUs.
pub fn pin_to_nth_cpu(k: usize) {
    let cpus = allowed_cpus();
    if let Some(&cpu) = cpus.get(k % cpus.len().max(1)) {
        pin(&[cpu]);
    }
}
