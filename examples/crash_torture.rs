//! Kills pool users at random moments and checks that nothing is ever lost
//! or handed out twice.
//!
//! Forked workers allocate packets of mixed size classes (some blocking in
//! `alloc_timeout`), stamp each with its handle, keep windows of held
//! packets, hand packets to each other over a pipe, take packets over with
//! `get`, verify stamps, free, and now and then run a reclaim sweep
//! themselves. The parent SIGKILLs a random worker at a random moment, runs
//! `reclaim_dead`, and starts a new worker, `--kills` times. Then it stops
//! every worker (a worker asleep in a blocking allocation must be woken by
//! the others' frees), reclaims and audits, and prints
//!
//! ```text
//! kills=N lost=L duplicated=D audit=ok
//! ```
//!
//! It exits non-zero on any loss, duplication, audit failure or hang.
//!
//! ```text
//! cargo run --release --example crash_torture -- --kills 10000 --workers 4 --seed 1
//! ```

use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::exit;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ssm::{Error, Handle, PacketBuf, Pool, PoolConfig};

/// Words shared by the parent and every worker (an anonymous shared
/// mapping made before the first fork).
struct Shared {
    stop: AtomicU32,
    duplicated: AtomicU64,
    ops: AtomicU64,
}

fn shared() -> &'static Shared {
    // SAFETY: an anonymous shared mapping of one page, zero-filled, which
    // is a valid `Shared` (all atomics); it lives for the whole program and
    // is inherited by every child.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        &*(p as *const Shared)
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const LENS: [usize; 4] = [40, 300, 1500, 12_000];

fn config() -> PoolConfig {
    PoolConfig::new()
        .class(512, 192)
        .class(2048, 64)
        .class(16 << 10, 16)
        .shards(4)
        .headspace(64)
        .tailspace(32)
        .cache_size(8)
        .max_processes(64)
}

fn stamp(p: &mut PacketBuf<'_>) {
    let h = p.handle().into_raw().to_le_bytes();
    let n = p.len();
    p[..8].copy_from_slice(&h);
    p[n - 8..].copy_from_slice(&h);
}

fn stamped(p: &PacketBuf<'_>) -> bool {
    let h = p.handle().into_raw().to_le_bytes();
    let n = p.len();
    n >= 16 && p[..8] == h && p[n - 8..] == h
}

fn worker(name: &str, seed: u64, tx: i32, rx: &mut std::fs::File, sh: &Shared) -> ! {
    let pool = match Pool::open(name) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("worker {}: {e}", std::process::id());
            exit(3)
        }
    };
    let mut rng = Rng(seed | 1);
    let mut held: VecDeque<PacketBuf<'_>> = VecDeque::new();
    let window = 2 + rng.below(6) as usize;
    let mut buf = [0u8; 8 * 16];
    let dup = |what: &str, h: Handle| {
        eprintln!("worker {}: {what} {h:?}", std::process::id());
        sh.duplicated.fetch_add(1, Ordering::Relaxed);
    };
    loop {
        if sh.stop.load(Ordering::Relaxed) != 0 {
            // Stop: check and free everything held, then leave.
            for p in held.drain(..) {
                if !stamped(&p) {
                    dup("overwritten while held", p.handle());
                }
            }
            drop(held);
            drop(pool);
            exit(0);
        }
        sh.ops.fetch_add(1, Ordering::Relaxed);
        match rng.below(100) {
            // Allocate, sometimes blocking.
            0..=39 => {
                let len = LENS[rng.below(LENS.len() as u64) as usize];
                let r = if rng.below(4) == 0 {
                    let t = if rng.below(8) == 0 {
                        None
                    } else {
                        Some(Duration::from_millis(1 + rng.below(20)))
                    };
                    pool.alloc_timeout(len, t)
                } else {
                    pool.alloc(len)
                };
                match r {
                    Ok(mut p) => {
                        stamp(&mut p);
                        held.push_back(p);
                    }
                    Err(Error::Exhausted { .. }) | Err(Error::Timeout { .. }) => {}
                    Err(e) => {
                        eprintln!("worker: alloc: {e}");
                        exit(4)
                    }
                }
            }
            // Free the oldest.
            40..=64 => {
                if let Some(p) = held.pop_front() {
                    if !stamped(&p) {
                        dup("overwritten while held", p.handle());
                    }
                }
            }
            // Hand one to another worker.
            65..=79 => {
                if let Some(p) = held.pop_front() {
                    if !stamped(&p) {
                        dup("overwritten before sending", p.handle());
                    }
                    let h = p.into_handle().into_raw().to_le_bytes();
                    // SAFETY: writing 8 bytes from a live buffer to our
                    // pipe; writes of up to PIPE_BUF bytes are atomic.
                    let n = unsafe { libc::write(tx, h.as_ptr().cast(), 8) };
                    if n != 8 {
                        eprintln!("worker: pipe write failed");
                        exit(5)
                    }
                }
            }
            // Take packets sent by others.
            80..=97 => {
                let n = match rx.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                    Err(e) => {
                        eprintln!("worker: pipe read: {e}");
                        exit(6)
                    }
                };
                for c in buf[..n / 8 * 8].chunks_exact(8) {
                    let h = Handle::from_raw(u64::from_le_bytes(c.try_into().unwrap()));
                    match pool.get(h) {
                        Ok(p) => {
                            if !stamped(&p) {
                                dup("received overwritten", h);
                            }
                            held.push_back(p);
                        }
                        // The sender died and its blocks were reclaimed.
                        Err(Error::InvalidHandle { .. }) => {}
                        Err(e) => {
                            eprintln!("worker: get: {e}");
                            exit(7)
                        }
                    }
                }
            }
            // Sweep, like a supervisor would.
            _ => {
                if rng.below(20) == 0 {
                    if let Err(e) = pool.reclaim_dead() {
                        eprintln!("worker: reclaim: {e}");
                        exit(8)
                    }
                }
            }
        }
        while held.len() > window {
            let p = held.pop_front().unwrap();
            if !stamped(&p) {
                dup("overwritten while held", p.handle());
            }
        }
    }
}

fn main() {
    let mut kills = 300u64;
    let mut workers = 4usize;
    let mut seed = 1u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--kills" => kills = v.parse().unwrap_or_else(|_| usage()),
            "--workers" => workers = v.parse().unwrap_or_else(|_| usage()),
            "--seed" => seed = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    if workers == 0 {
        usage();
    }
    // The watchdog: a hang anywhere ends the run with SIGALRM (non-zero),
    // and the workers die with the parent.
    let budget = 60 + kills / 50;
    // SAFETY: plain system call.
    unsafe { libc::alarm(budget as u32) };

    let sh = shared();
    let name = format!("/ssm-torture-{}", std::process::id());
    let cfg = config();
    let pool = Pool::create(&name, &cfg).unwrap_or_else(|e| {
        eprintln!("{e}");
        exit(2)
    });
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    assert_eq!(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) },
        0
    );
    // SAFETY: both descriptors are fresh and owned here.
    let (rx, tx) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut rx = std::fs::File::from(rx);

    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let spawn = |rng: &mut Rng, rx: &mut std::fs::File| -> i32 {
        let child_seed = rng.next();
        // SAFETY: the parent is single-threaded.
        match unsafe { libc::fork() } {
            0 => {
                // SAFETY: plain system calls in the child.
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    libc::alarm(0);
                }
                worker(&name, child_seed, tx.as_raw_fd(), rx, sh)
            }
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            pid => pid,
        }
    };
    let mut pids: Vec<i32> = (0..workers).map(|_| spawn(&mut rng, &mut rx)).collect();
    let start = Instant::now();
    let mut reclaimed = 0u64;
    for k in 0..kills {
        // A random moment: spin for a random while (sleeping would let the
        // workers run in lock-step with the scheduler tick).
        let spin = Instant::now();
        let wait = Duration::from_micros(rng.below(1500));
        while spin.elapsed() < wait {
            std::hint::spin_loop();
        }
        let i = rng.below(workers as u64) as usize;
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(pids[i], libc::SIGKILL);
            let mut st = 0;
            libc::waitpid(pids[i], &mut st, 0);
            if !(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL) {
                eprintln!(
                    "worker {} ended by itself (status {st:#x}) before kill {k}",
                    pids[i]
                );
                exit(1);
            }
        }
        match pool.reclaim_dead() {
            Ok(r) => reclaimed += r.blocks(),
            Err(e) => {
                eprintln!("reclaim after kill {k}: {e}");
                exit(1)
            }
        }
        pids[i] = spawn(&mut rng, &mut rx);
    }
    let run = start.elapsed();

    // Stop everyone: workers free what they hold and leave. A worker asleep
    // in a blocking allocation must be woken by the others' frees; packets
    // in the pipe are released here so that none is stranded.
    sh.stop.store(1, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failed = 0;
    let mut running: Vec<i32> = pids.clone();
    let mut buf = [0u8; 8 * 64];
    while !running.is_empty() {
        while let Ok(n) = rx.read(&mut buf) {
            if n == 0 {
                break;
            }
            for c in buf[..n / 8 * 8].chunks_exact(8) {
                let _ = pool.release(Handle::from_raw(u64::from_le_bytes(c.try_into().unwrap())));
            }
        }
        if let Err(e) = pool.reclaim_dead() {
            eprintln!("reclaim while stopping: {e}");
            exit(1)
        }
        running.retain(|&pid| {
            let mut st = 0;
            // SAFETY: reaping our own child without blocking.
            if unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) } != pid {
                return true;
            }
            if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
                eprintln!("worker {pid} failed (status {st:#x})");
                failed += 1;
            }
            false
        });
        if Instant::now() > deadline {
            for &pid in &running {
                eprintln!("worker {pid} did not stop: a blocked allocation was never woken");
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                failed += 1;
            }
            break;
        }
        // Polling the children with a watchdog; nothing waits on this.
        std::thread::sleep(Duration::from_millis(1));
    }
    // Handles still in the pipe belong to senders that are gone: the final
    // sweep recovers them with everything else.
    match pool.reclaim_dead() {
        Ok(r) => reclaimed += r.blocks(),
        Err(e) => {
            eprintln!("final reclaim: {e}");
            exit(1)
        }
    }
    // Blocks the parent released from the pipe sit in its own cache.
    if let Err(e) = pool.flush() {
        eprintln!("flush: {e}");
        exit(1)
    }
    let audit = pool.audit();
    let stats = pool.stats();
    let total: u64 = cfg.total_blocks();
    let free = stats.free();
    let lost = total - free.min(total);
    let duplicated = sh.duplicated.load(Ordering::Relaxed);
    let ops = sh.ops.load(Ordering::Relaxed);
    eprintln!(
        "{} workers, {ops} operations in {:.1} s, {reclaimed} blocks reclaimed",
        workers,
        run.as_secs_f64()
    );
    if lost > 0 || audit.is_err() {
        eprint!("{stats}");
    }
    if let Err(e) = &audit {
        eprintln!("{e}");
    }
    let _ = pool.destroy();
    println!(
        "kills={kills} lost={lost} duplicated={duplicated} audit={}",
        if audit.is_ok() { "ok" } else { "FAILED" }
    );
    if lost > 0 || duplicated > 0 || audit.is_err() || failed > 0 {
        exit(1);
    }
}

fn usage() -> ! {
    eprintln!("usage: crash_torture [--kills N] [--workers K] [--seed S]");
    exit(2)
}
