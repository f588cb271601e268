//! Small statistics: medians, percentiles of samples, and a log-linear
//! latency histogram that workers fill locally and merge in shared memory.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// The median of the finite-or-infinite values of `v` (NaN entries, which
/// mark failed runs, are ignored); NaN if none is left.
pub fn median(v: &[f64]) -> f64 {
    let mut xs: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    let (lo, hi) = (xs[(n - 1) / 2], xs[n / 2]);
    if lo.is_infinite() || hi.is_infinite() {
        hi
    } else {
        (lo + hi) / 2.0
    }
}

/// The `p`-th percentile (0..=100) of `sorted` by nearest rank.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Values below this are counted exactly (one bucket per nanosecond).
const LINEAR: u64 = 128;
/// Sub-buckets per power of two above `LINEAR` (about 1.6 % resolution).
const SUB: u64 = 64;
/// Buckets of a histogram: exact below 128, then 64 per power of two up
/// to 2^64.
pub const BUCKETS: usize = (LINEAR + (64 - 7) * SUB) as usize;

/// The bucket of value `v`.
#[inline]
pub fn bucket(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let msb = 63 - u64::from(v.leading_zeros());
    let shift = msb - 6;
    let top = v >> shift; // 64..=127
    (LINEAR + (shift - 1) * SUB + (top - SUB)) as usize
}

/// The largest value that falls in bucket `i`.
pub fn bucket_high(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let shift = (i - LINEAR) / SUB + 1;
    let top = (i - LINEAR) % SUB + SUB;
    let high = (u128::from(top + 1) << shift) - 1;
    high.min(u128::from(u64::MAX)) as u64
}

/// A latency histogram in nanoseconds.
pub struct Hist {
    counts: Vec<u64>,
}

impl Hist {
    /// An empty histogram.
    pub fn new() -> Self {
        Hist {
            counts: vec![0; BUCKETS],
        }
    }

    /// Counts one value.
    #[inline]
    pub fn record(&mut self, v: u64) {
        self.counts[bucket(v)] += 1;
    }

    /// Stores the counts into a row of shared memory.
    pub fn store(&self, row: &[AtomicU64]) {
        for (dst, &c) in row.iter().zip(&self.counts) {
            dst.store(c, Relaxed);
        }
    }

    /// Adds a row stored by [`Hist::store`].
    pub fn add_row(&mut self, row: &[AtomicU64]) {
        for (c, src) in self.counts.iter_mut().zip(row) {
            *c += src.load(Relaxed);
        }
    }

    /// Values counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `p`-th percentile (upper bound of its bucket), or `None` if the
    /// histogram is empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_high(i));
            }
        }
        None
    }
}
