//! Hand-off throughput between two processes:
//!
//! * (c) [`handoff`]: a sender allocates 64-byte packets, writes a pattern
//!   derived from a sequence number into each and sends it over the
//!   implementation's own ring (`ssm`: the packet's handle over a `Ring`,
//!   taken over with `Pool::get`; baseline: the block offset over a
//!   `BaselineRing`); the receiver checks every payload and frees it.
//! * (f) [`ring_throughput`]: the ring alone; the writer writes sequence
//!   numbers as fast as the ring takes them, the reader checks their order.
//!
//! Both run for a fixed time after the start barrier; the sender then
//! writes a sentinel, and the receiver's count over the span from the
//! barrier to the sentinel's arrival gives millions per second. Any bad
//! payload, out-of-order value or failed operation fails the run.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::alloc::{run_timed, PAYLOAD};
use crate::imps::PoolSpec;
use crate::imps::{self, open_pool_ring, open_ring, Alloc, HandleRing, Imp, NamedPool, NamedRing};
use crate::sys::{self, now_ns, Control, Shared};

/// Ends a stream (never a valid handle, offset or sequence number).
const SENTINEL: u64 = u64::MAX;
/// Longest a single blocking step may take before it counts as a failure.
const STEP: Duration = Duration::from_secs(2);
/// Watchdog of a worker, in seconds.
const WATCHDOG_S: u32 = 60;

/// (c) Packets handed from one process to another per second, in
/// millions, running for `dur`.
pub fn handoff(imp: Imp, dur: Duration) -> Result<f64, String> {
    let np = NamedPool::create(imp, PoolSpec::THROUGHPUT)?;
    let nr = NamedRing::create(imp)?;
    let ctl = Shared::<Control>::new(1);
    let out = Shared::<AtomicU64>::new(2);
    let rx = sys::spawn(WATCHDOG_S, || {
        open_pool_ring!(np, nr, |a, r| receiver(a, r, &ctl[0], &out))
    });
    let tx = sys::spawn(WATCHDOG_S, || {
        open_pool_ring!(np, nr, |a, r| sender(a, r, &ctl[0]))
    });
    run_timed(&ctl[0], &[rx, tx], dur)?;
    np.check_all_free()?;
    Ok(rate(&ctl[0], &out))
}

/// (f) Values handed through the ring alone per second, in millions.
pub fn ring_throughput(imp: Imp, dur: Duration) -> Result<f64, String> {
    let nr = NamedRing::create(imp)?;
    let ctl = Shared::<Control>::new(1);
    let out = Shared::<AtomicU64>::new(2);
    let rx = sys::spawn(WATCHDOG_S, || {
        open_ring!(nr, |r| ring_reader(r, &ctl[0], &out))
    });
    let tx = sys::spawn(WATCHDOG_S, || open_ring!(nr, |r| ring_writer(r, &ctl[0])));
    run_timed(&ctl[0], &[rx, tx], dur)?;
    Ok(rate(&ctl[0], &out))
}

/// Millions of items per second from the receiver's `[count, end time]`.
fn rate(ctl: &Control, out: &[AtomicU64]) -> f64 {
    let span = out[1]
        .load(Relaxed)
        .saturating_sub(ctl.t_go.load(Relaxed))
        .max(1);
    out[0].load(Relaxed) as f64 * 1e3 / span as f64
}

/// Sends numbered packets until told to stop, then the sentinel.
fn sender<A: Alloc, R: HandleRing>(a: &A, r: &R, ctl: &Control) -> i32 {
    ctl.arrive_and_wait();
    let mut seq = 0u64;
    while !ctl.stopped() {
        let Some(mut b) = a.alloc_wait(PAYLOAD, STEP) else {
            ctl.error();
            break;
        };
        imps::fill(a.payload(&mut b), seq);
        if !r.put(a.send(b), STEP) {
            ctl.error();
            break;
        }
        seq += 1;
    }
    if !r.put(SENTINEL, STEP) {
        ctl.error();
    }
    0
}

/// Receives, checks and frees packets until the sentinel; stores the count
/// and the arrival time of the sentinel.
fn receiver<A: Alloc, R: HandleRing>(a: &A, r: &R, ctl: &Control, out: &[AtomicU64]) -> i32 {
    ctl.arrive_and_wait();
    let mut seq = 0u64;
    until_sentinel(r, ctl, |v| {
        match a.receive(v) {
            Some(mut b) => {
                if !imps::check(a.payload(&mut b), seq) {
                    ctl.error();
                }
                a.free(b);
            }
            None => ctl.error(),
        }
        seq += 1;
    });
    out[0].store(seq, Relaxed);
    out[1].store(now_ns(), Relaxed);
    0
}

/// Hands each value taken from `r` to `each` until the sentinel arrives;
/// a take that times out counts as an error and ends the loop.
fn until_sentinel<R: HandleRing>(r: &R, ctl: &Control, mut each: impl FnMut(u64)) {
    loop {
        let Some(v) = r.take(STEP) else {
            ctl.error();
            break;
        };
        if v == SENTINEL {
            break;
        }
        each(v);
    }
}

/// Writes 1, 2, 3, ... until told to stop, then the sentinel.
fn ring_writer<R: HandleRing>(r: &R, ctl: &Control) -> i32 {
    ctl.arrive_and_wait();
    let mut v = 1u64;
    while !ctl.stopped() {
        if !r.put(v, STEP) {
            ctl.error();
            break;
        }
        v += 1;
    }
    if !r.put(SENTINEL, STEP) {
        ctl.error();
    }
    0
}

/// Reads and checks values until the sentinel; stores the count and the
/// arrival time of the sentinel.
fn ring_reader<R: HandleRing>(r: &R, ctl: &Control, out: &[AtomicU64]) -> i32 {
    ctl.arrive_and_wait();
    let mut n = 0u64;
    until_sentinel(r, ctl, |v| {
        n += 1;
        if v != n {
            ctl.error();
        }
    });
    out[0].store(n, Relaxed);
    out[1].store(now_ns(), Relaxed);
    0
}
