//! Wake-up latencies between two processes: a sleeper blocks, a waker
//! makes the sleeper's condition true, and the time from just before the
//! waker's call to just after the sleeper's blocking call returns is one
//! sample. Both timestamps are raw `CLOCK_MONOTONIC` nanoseconds; the
//! waker's travels to the sleeper through shared memory.
//!
//! Each sample: the sleeper announces it is about to block (the `phase`
//! futex word) and blocks; the waker waits for the announcement, then until
//! `/proc` shows the sleeper asleep (state `S` twice, 100 µs apart, so it
//! has left the CPU), stamps, and wakes it; the sleeper records the sample
//! and announces that it is done; the waker restores the starting state
//! and lets the sleeper start the next sample.
//! The first [`WARMUP`] samples are dropped. The sleeper runs on one CPU
//! and the waker on another, so that every sample is a cross-CPU wake-up
//! (two processes left to the scheduler sometimes share a CPU, and the
//! sleeper then runs as soon as the waker sleeps: a different quantity).
//!
//! * (d) [`pool_wake`]: an allocator blocked on an exhausted class (16
//!   blocks, 4 shards, no per-process caches) while the waker, which holds
//!   every block, frees one. "Same shard": the waker's local shard is the
//!   sleeper's; "different shard": it is not (`ssm`: registry slot modulo
//!   shards, chosen by opening filler handles; baseline: pid modulo shards,
//!   chosen by forking until the pid fits). The baseline's sleeper waits on
//!   its own shard's condition variable only, so a free into another shard
//!   leaves it asleep until its 20 ms timeout: counted as a timeout.
//! * [`futex_wake`]: the floor: a bare `FUTEX_WAIT` woken by a store and
//!   `FUTEX_WAKE` on a shared word.
//! * (f) [`ring_wake`]: a reader blocked on an empty ring while the writer
//!   writes one value.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::{Duration, Instant};

use ssm::Pool;

use crate::alloc::{SETUP, WIND_DOWN};
use crate::baseline::BaselinePool;
use crate::imps::{open_ring, Alloc, HandleRing, Imp, NamedPool, NamedRing, PoolSpec};
use crate::stats;
use crate::sys::{self, now_ns, publish, wait_for, Control, Shared};

/// Samples dropped at the start of every experiment.
pub const WARMUP: usize = 2;
/// How long a blocked allocator waits before it gives up.
pub const POOL_TIMEOUT: Duration = Duration::from_millis(20);
/// How long a blocked ring reader or futex sleeper waits.
const RING_TIMEOUT: Duration = Duration::from_millis(200);
/// A sample that timed out.
const TIMED_OUT: u64 = u64::MAX;
/// Payload of the allocations.
const PAYLOAD: usize = 64;
/// Watchdog of a worker, in seconds.
const WATCHDOG_S: u32 = 120;
/// Longest a handshake step may take.
const STEP: Duration = Duration::from_secs(5);

/// The pool of (d): 16 blocks, 4 shards, no caches (so a free reaches a
/// shard at once and exhaustion is exact).
const WAKE_POOL: PoolSpec = PoolSpec {
    block: 512,
    count: 16,
    shards: 4,
    cache: Some(0),
};

/// The samples of one experiment.
#[derive(Clone, Debug, Default)]
pub struct WakeResult {
    /// Latencies of the wake-ups, nanoseconds, sorted.
    pub samples: Vec<u64>,
    /// Attempts in which the sleeper was not woken before its timeout.
    pub timeouts: u64,
    /// Attempts in all.
    pub attempts: u64,
}

impl WakeResult {
    /// The `p`-th percentile in microseconds; infinite if nothing woke.
    pub fn percentile_us(&self, p: f64) -> f64 {
        stats::percentile(&self.samples, p).map_or(f64::INFINITY, |v| v as f64 / 1e3)
    }
}

/// (d) Wake-up of an allocator blocked on an exhausted class by a free
/// into the same shard (`same`) or another shard, `n` samples.
pub fn pool_wake(imp: Imp, same: bool, n: usize) -> Result<WakeResult, String> {
    let np = NamedPool::create(imp, WAKE_POOL)?;
    let exp = Experiment::new(n);
    let ctl = &exp.ctl[0];
    let sleeper = sys::spawn(WATCHDOG_S, || match imp {
        Imp::Ssm => open(Pool::open(&np.name)).map_or(5, |a| pool_sleeper(&a, &exp)),
        Imp::C(v) => open(BaselinePool::open(&np.name, v)).map_or(5, |a| pool_sleeper(&a, &exp)),
    });
    // The sleeper's local shard, published before it reaches the barrier.
    if !wait_for(&ctl.info, SETUP, |v| v != 0) {
        let r = sys::reap(&[sleeper], WIND_DOWN);
        return Err(format!("the sleeper did not start ({r:?})"));
    }
    let target = ctl.info.load(SeqCst) - 1;
    let fits = |shard: u32| (shard == target) == same;
    let waker = match imp {
        Imp::Ssm => Some(sys::spawn(WATCHDOG_S, || {
            ssm_open_where(&np.name, fits)
                .map_or(5, |(a, _fillers)| pool_waker(&a, &exp, sleeper, same))
        })),
        Imp::C(v) => {
            let shards = WAKE_POOL.shards;
            sys::spawn_where(
                WATCHDOG_S,
                |pid| fits(pid as u32 % shards),
                || {
                    open(BaselinePool::open(&np.name, v))
                        .map_or(5, |a| pool_waker(&a, &exp, sleeper, same))
                },
            )
        }
    };
    let Some(waker) = waker else {
        sys::kill_all(&[sleeper]);
        return Err("no waker process with a suitable shard".into());
    };
    let r = exp.finish(&[sleeper, waker], POOL_TIMEOUT)?;
    np.check_all_free()?;
    Ok(r)
}

/// The bare futex floor, `n` samples.
pub fn futex_wake(n: usize) -> Result<WakeResult, String> {
    let exp = Experiment::new(n);
    let ctl = &exp.ctl[0];
    let sleeper = sys::spawn(WATCHDOG_S, || {
        ctl.arrive_and_wait();
        exp.sleep_loop(|_| {
            let deadline = Instant::now() + RING_TIMEOUT;
            while ctl.word.load(SeqCst) == 0 {
                let now = Instant::now();
                if now >= deadline {
                    return None;
                }
                sys::futex_wait(&ctl.word, 0, Some(deadline - now));
            }
            Some(now_ns())
        })
    });
    let waker = sys::spawn(WATCHDOG_S, || {
        ctl.arrive_and_wait();
        exp.wake_loop(sleeper, |step, _| {
            match step {
                Step::Wake => publish(&ctl.word, 1),
                Step::Rearm => ctl.word.store(0, SeqCst),
            }
            true
        })
    });
    exp.finish(&[sleeper, waker], RING_TIMEOUT)
}

/// (f) Wake-up of a reader blocked on an empty ring by one write, `n`
/// samples.
pub fn ring_wake(imp: Imp, n: usize) -> Result<WakeResult, String> {
    let nr = NamedRing::create(imp)?;
    let exp = Experiment::new(n);
    let ctl = &exp.ctl[0];
    let sleeper = sys::spawn(WATCHDOG_S, || {
        open_ring!(nr, |r| {
            ctl.arrive_and_wait();
            exp.sleep_loop(|i| {
                let v = r.take(RING_TIMEOUT)?;
                let t = now_ns();
                if v != u64::from(i) + 1 {
                    ctl.error();
                }
                Some(t)
            })
        })
    });
    let waker = sys::spawn(WATCHDOG_S, || {
        open_ring!(nr, |r| {
            ctl.arrive_and_wait();
            exp.wake_loop(sleeper, |step, i| {
                step == Step::Rearm || r.put(u64::from(i) + 1, STEP)
            })
        })
    });
    exp.finish(&[sleeper, waker], RING_TIMEOUT)
}

/// Opens something in a worker, reporting a failure on stderr.
fn open<T, E: std::fmt::Display>(r: Result<T, E>) -> Option<T> {
    r.map_err(|e| eprintln!("open: {e}")).ok()
}

/// Opens `ssm` handles on `name` until one's local shard satisfies `fits`;
/// returns it with the other handles, which must stay open (each holds a
/// registry slot, and the next open takes the lowest free one).
fn ssm_open_where(name: &str, fits: impl Fn(u32) -> bool) -> Option<(Pool, Vec<Pool>)> {
    let mut fillers = Vec::new();
    for _ in 0..2 * WAKE_POOL.shards {
        let p = open(Pool::open(name))?;
        if fits(Alloc::local_shard(&p)) {
            return Some((p, fillers));
        }
        fillers.push(p);
    }
    None
}

/// The sleeper of (d): publishes its local shard, then blocks in an
/// allocation per sample and frees the block it got.
fn pool_sleeper<A: Alloc>(a: &A, exp: &Experiment) -> i32 {
    let ctl = &exp.ctl[0];
    publish(&ctl.info, a.local_shard() + 1);
    ctl.arrive_and_wait();
    exp.sleep_loop(|_| {
        let b = a.alloc_wait(PAYLOAD, POOL_TIMEOUT)?;
        let t = now_ns();
        a.free(b);
        Some(t)
    })
}

/// The waker of (d): checks that its local shard is (`same`) or is not the
/// sleeper's, takes every block of the class, then per sample frees one and
/// takes it back after the sleeper is done.
fn pool_waker<A: Alloc>(a: &A, exp: &Experiment, sleeper: libc::pid_t, same: bool) -> i32 {
    let ctl = &exp.ctl[0];
    if (a.local_shard() + 1 == ctl.info.load(SeqCst)) != same {
        eprintln!("waker in shard {}, not where it should be", a.local_shard());
        return 6;
    }
    let mut held = Vec::new();
    while let Ok(b) = a.alloc(PAYLOAD) {
        held.push(b);
    }
    if held.len() != WAKE_POOL.count as usize {
        eprintln!(
            "waker holds {} blocks, expected {}",
            held.len(),
            WAKE_POOL.count
        );
        return 6;
    }
    ctl.arrive_and_wait();
    let code = exp.wake_loop(sleeper, |step, _| match step {
        Step::Wake => held.pop().map(|b| a.free(b)).is_some(),
        Step::Rearm => a.alloc(PAYLOAD).map(|b| held.push(b)).is_ok(),
    });
    for b in held {
        a.free(b);
    }
    code
}

/// What the waker does at each step of a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Make the sleeper's condition true (timed).
    Wake,
    /// Restore the starting state once the sleeper is done.
    Rearm,
}

/// The shared state of one experiment: control words and one sample slot
/// per attempt.
struct Experiment {
    ctl: Shared<Control>,
    samples: Shared<AtomicU64>,
}

impl Experiment {
    /// Room for `n` samples after the warm-up.
    fn new(n: usize) -> Self {
        Experiment {
            ctl: Shared::new(1),
            samples: Shared::new(n + WARMUP),
        }
    }

    /// Sleeper side: per attempt `i`, wait until the waker has rearmed,
    /// announce, block (`block(i)` returns the time it woke, or `None` on
    /// timeout), record, announce done. Runs on the first CPU.
    fn sleep_loop(&self, mut block: impl FnMut(u32) -> Option<u64>) -> i32 {
        sys::pin_to_nth_cpu(0);
        let ctl = &self.ctl[0];
        for (i, slot) in self.samples.iter().enumerate() {
            let i = i as u32;
            if !wait_for(&ctl.ack, STEP, |a| a >= i) {
                return 7;
            }
            publish(&ctl.phase, 2 * i + 1);
            let sample = match block(i) {
                Some(t) => t.saturating_sub(ctl.stamp.load(SeqCst)),
                None => TIMED_OUT,
            };
            slot.store(sample, Relaxed);
            publish(&ctl.phase, 2 * i + 2);
        }
        0
    }

    /// Waker side: per attempt, wait until the sleeper sleeps, stamp, wake
    /// it, wait until it is done, rearm, and let it start the next attempt.
    /// `act(step, i)` performs a step of attempt `i`. Runs on the second
    /// CPU, so every wake-up crosses CPUs.
    fn wake_loop(&self, sleeper: libc::pid_t, mut act: impl FnMut(Step, u32) -> bool) -> i32 {
        sys::pin_to_nth_cpu(1);
        let ctl = &self.ctl[0];
        for i in 0..self.samples.len() as u32 {
            if !wait_for(&ctl.phase, STEP, |p| p == 2 * i + 1) {
                return 7;
            }
            if !sys::wait_asleep(sleeper, Duration::from_secs(1)) {
                eprintln!("  sleeper {sleeper} did not fall asleep within 1 s");
            }
            ctl.stamp.store(now_ns(), SeqCst);
            if !act(Step::Wake, i) {
                return 8;
            }
            if !wait_for(&ctl.phase, STEP, |p| p == 2 * i + 2) || !act(Step::Rearm, i) {
                return 9;
            }
            publish(&ctl.ack, i + 1);
        }
        0
    }

    /// Parent side: starts the two workers, reaps them and collects the
    /// samples (each attempt may take `timeout` plus the handshake).
    fn finish(&self, pids: &[libc::pid_t], timeout: Duration) -> Result<WakeResult, String> {
        let ctl = &self.ctl[0];
        if !ctl.release(pids.len() as u32, SETUP) {
            let r = sys::reap(pids, WIND_DOWN);
            return Err(format!("workers did not reach the start barrier ({r:?})"));
        }
        let per = timeout + Duration::from_millis(50);
        sys::reap(pids, WIND_DOWN + per * self.samples.len() as u32)?;
        if ctl.errors.load(Relaxed) != 0 {
            return Err("the sleeper received an unexpected value".into());
        }
        let mut out = WakeResult::default();
        for s in self.samples.iter().skip(WARMUP) {
            out.attempts += 1;
            match s.load(Relaxed) {
                TIMED_OUT => out.timeouts += 1,
                v => out.samples.push(v),
            }
        }
        out.samples.sort_unstable();
        Ok(out)
    }
}
