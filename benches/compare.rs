//! Side-by-side multi-process benchmark of `ssm` against the mutex design
//! it replaces (the `baseline` module: the C pool re-implemented with
//! robust process-shared mutexes and condition variables), in its best
//! case ("c-best": plain mutexes, cached pid) and as shipped ("c-shipped":
//! priority-inheriting mutexes, `getpid()` per allocation).
//!
//! ```sh
//! cargo bench --bench compare             # full run, several minutes
//! cargo bench --bench compare -- --quick  # under two minutes
//! cargo bench --bench compare -- --rounds 9
//! cargo bench --bench compare -- --quick --only df   # some measurements
//! ```
//!
//! What is measured (each figure for every implementation):
//!
//! * (a) one process allocating and freeing a 64-byte packet: ns per pair;
//! * (b) 1, 2, 4, 8, 16 processes on one pool, each keeping a window of 32
//!   blocks (allocate one, free the oldest) for a fixed time: Mops/s of
//!   pairs over all processes, and fairness (slowest / fastest process);
//! * (c) hand-off: one process allocates and fills packets and sends them
//!   over the implementation's ring, another checks and frees them:
//!   M blocks/s;
//! * (d) wake-up latency of an allocator blocked on an exhausted class when
//!   another process frees a block into the same or a different shard, and
//!   a bare futex wake as the floor;
//! * (e) allocation latency p99 / p99.9 with 8 processes on 2 CPUs;
//! * (f) the ring alone: hand-off throughput of raw values, and wake-up
//!   latency of a reader blocked on an empty ring.
//!
//! How: every measurement forks fresh worker processes that open a pool or
//! ring the parent created (never an inherited handle), wait at a start
//! barrier in anonymous shared memory, and pass their results back through
//! it; each worker has an `alarm` watchdog and the parent kills leftovers
//! after a deadline. Cross-process latencies subtract raw
//! `CLOCK_MONOTONIC` timestamps shared through memory. The virtual
//! machine moves its vCPUs between near and far placements during a run,
//! so implementations are interleaved (every figure is taken for ssm,
//! c-best and c-shipped back to back) over several rounds; the table shows
//! medians over rounds and the ratios are computed within each round, then
//! their median taken. After every run on a pool the parent checks that
//! all its blocks are free again (for `ssm` with its audit), and every
//! received payload and ring value is checked, so a harness or library
//! error fails the figure (shown as `n/a` and listed) instead of skewing
//! it.
//!
//! Files (`benches/compare/`): `sys.rs` processes, shared memory, futexes
//! and the clock; `imps.rs` the implementations behind the `Alloc` and
//! `HandleRing` traits; `alloc.rs` (a), (b), (e); `handoff.rs` (c) and the
//! ring throughput of (f); `wake.rs` (d), the futex floor and the ring
//! wake-up of (f); `stats.rs` medians, percentiles, histograms; `report.rs`
//! the tables and the final lines.
//!
//! Progress goes to stderr; the report to stdout, ending with the `own:`
//! line (ssm's absolute figures) and the `ratios:` line (ssm over c-best,
//! bigger is better everywhere).

#[path = "compare/alloc.rs"]
mod alloc;
// Bench targets are compiled with `cfg(test)` but, with `harness = false`,
// without their `#[test]` functions, so the imports of the baseline's test
// modules look unused.
#[allow(unused_imports)]
#[path = "baseline/mod.rs"]
mod baseline;
#[path = "compare/handoff.rs"]
mod handoff;
#[path = "compare/imps.rs"]
mod imps;
#[path = "compare/report.rs"]
mod report;
#[path = "compare/stats.rs"]
mod stats;
#[path = "compare/sys.rs"]
mod sys;
#[path = "compare/wake.rs"]
mod wake;

use std::time::{Duration, Instant};

use imps::ALL;
use report::{Report, Round, NONE};
use wake::WakeResult;

/// Process counts of (b).
const PROCS: [usize; 5] = [1, 2, 4, 8, 16];

/// How long and how often to measure.
struct Settings {
    /// Interleaved rounds.
    rounds: usize,
    /// Measuring time of (a) per implementation.
    pair: Duration,
    /// Running time of each (b) run.
    procs: Duration,
    /// Running time of (c) and of the ring throughput of (f).
    handoff: Duration,
    /// Running time of (e).
    latency: Duration,
    /// Samples of each wake-up experiment.
    wake_samples: usize,
    /// The measurements to run (letters `a` to `f`).
    only: String,
}

impl Settings {
    /// From the command line: `--quick`, `--rounds N`, `--only LETTERS`
    /// (cargo adds `--bench`, which is ignored).
    fn from_args() -> Settings {
        let args: Vec<String> = std::env::args().collect();
        let quick = args.iter().any(|a| a == "--quick");
        let mut s = if quick {
            Settings {
                rounds: 5,
                pair: Duration::from_millis(150),
                procs: Duration::from_millis(250),
                handoff: Duration::from_millis(300),
                latency: Duration::from_millis(300),
                wake_samples: 20,
                only: "abcdef".into(),
            }
        } else {
            Settings {
                rounds: 7,
                pair: Duration::from_millis(500),
                procs: Duration::from_secs(1),
                handoff: Duration::from_secs(1),
                latency: Duration::from_secs(1),
                wake_samples: 100,
                only: "abcdef".into(),
            }
        };
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
        };
        if let Some(n) = value("--rounds").and_then(|v| v.parse().ok()) {
            s.rounds = n;
        }
        if let Some(only) = value("--only") {
            s.only = only.clone();
        }
        s
    }

    /// Whether measurement `letter` runs.
    fn wants(&self, letter: char) -> bool {
        self.only.contains(letter)
    }
}

/// Runs the measurements of one round and records their figures.
struct Runner<'a> {
    s: &'a Settings,
    round: Round,
    failures: &'a mut Vec<String>,
}

impl Runner<'_> {
    /// Records the figures `figs(result)` of a measurement, or NaN for
    /// `names` and a failure note if it failed.
    fn record<T>(
        &mut self,
        what: &str,
        label: &'static str,
        r: Result<T, String>,
        names: &[&str],
        figs: impl FnOnce(&T) -> Vec<f64>,
    ) {
        match r {
            Ok(v) => {
                for (name, x) in names.iter().zip(figs(&v)) {
                    self.round.put(name, label, x);
                }
            }
            Err(e) => {
                eprintln!("  {what} [{label}] failed: {e}");
                self.failures.push(format!("{what} [{label}]: {e}"));
                for name in names {
                    self.round.put(name, label, f64::NAN);
                }
            }
        }
    }

    /// Records a wake-up experiment under the prefix `fig`.
    fn record_wake(&mut self, fig: &str, label: &'static str, r: Result<WakeResult, String>) {
        let names = [
            format!("{fig}_p50"),
            format!("{fig}_p99"),
            format!("{fig}_timeouts"),
            format!("{fig}_attempts"),
        ];
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.record(fig, label, r, &names, |w| {
            vec![
                w.percentile_us(50.0),
                w.percentile_us(99.0),
                w.timeouts as f64,
                w.attempts as f64,
            ]
        });
    }

    /// All measurements, each for every implementation back to back.
    fn run(&mut self) {
        let s = self.s;
        if s.wants('a') {
            progress("(a) alloc+free pair");
            for imp in ALL {
                let r = alloc::pair_ns(imp, s.pair);
                self.record("pair", imp.label(), r, &["pair_ns"], |&v| vec![v]);
            }
        }
        for n in PROCS.into_iter().filter(|_| s.wants('b')) {
            progress(&format!("(b) {n} processes"));
            let names = [format!("procs{n}_mops"), format!("procs{n}_fair")];
            let names = [names[0].as_str(), names[1].as_str()];
            for imp in ALL {
                let r = alloc::procs(imp, n, s.procs);
                self.record("procs", imp.label(), r, &names, |p| {
                    vec![p.mops, p.fairness]
                });
            }
        }
        if s.wants('c') {
            progress("(c) hand-off");
            for imp in ALL {
                let r = handoff::handoff(imp, s.handoff);
                self.record("handoff", imp.label(), r, &["handoff_mps"], |&v| vec![v]);
            }
        }
        if s.wants('d') {
            self.run_wake();
        }
        if s.wants('e') {
            progress("(e) allocation latency, 8 processes on 2 CPUs");
            for imp in ALL {
                let r = alloc::latency(imp, s.latency);
                let names = ["lat_p99_us", "lat_p999_us"];
                self.record("latency", imp.label(), r, &names, |l| {
                    vec![l.p99_ns / 1e3, l.p999_ns / 1e3]
                });
            }
        }
        if s.wants('f') {
            progress("(f) ring alone");
            for imp in ALL {
                let r = handoff::ring_throughput(imp, s.handoff);
                self.record("ring", imp.label(), r, &["ring_mps"], |&v| vec![v]);
                let r = wake::ring_wake(imp, s.wake_samples);
                self.record_wake("ring_wake", imp.label(), r);
            }
        }
    }

    /// (d): wake-up on free, same and different shard, then the futex
    /// floor.
    fn run_wake(&mut self) {
        progress("(d) wake-up on free");
        for imp in ALL {
            for (fig, same) in [("wake_same", true), ("wake_diff", false)] {
                let r = wake::pool_wake(imp, same, self.s.wake_samples);
                self.record_wake(fig, imp.label(), r);
            }
        }
        let r = wake::futex_wake(self.s.wake_samples);
        self.record_wake("futex", NONE, r);
    }
}

/// A progress line on stderr.
fn progress(what: &str) {
    eprintln!("  {what}");
}

fn main() {
    let s = Settings::from_args();
    let started = Instant::now();
    let mut rounds = Vec::with_capacity(s.rounds);
    let mut failures = Vec::new();
    for i in 0..s.rounds {
        eprintln!(
            "round {}/{} ({:.0} s elapsed)",
            i + 1,
            s.rounds,
            started.elapsed().as_secs_f64()
        );
        let mut runner = Runner {
            s: &s,
            round: Round::default(),
            failures: &mut failures,
        };
        runner.run();
        rounds.push(runner.round);
    }
    eprintln!("done in {:.0} s", started.elapsed().as_secs_f64());
    Report {
        rounds: &rounds,
        procs: &PROCS,
        failures: &failures,
    }
    .print();
}
