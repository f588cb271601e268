//! The figures of every round, and the report printed from them: the
//! comparison table (medians over rounds), the memory-overhead table, and
//! the `own:` and `ratios:` lines (ratios taken within each round, then
//! the median).

use std::collections::BTreeMap;
use std::mem::size_of;

use ssm::block::BlockMeta;
use ssm::layout::Geometry;
use ssm::platform::Os;
use ssm::PoolConfig;

use crate::baseline::{
    BaselinePool, Variant, DEFAULT_HEADSPACE, DEFAULT_SHARDS, DEFAULT_TAILSPACE, GSPP_CLASSES,
    PUP_CLASSES,
};
use crate::imps::{unique_name, ALL};
use crate::stats::median;

/// Label of figures that belong to no implementation (the futex floor).
pub const NONE: &str = "-";
/// Label of the best-case baseline, the reference of every ratio.
const BEST: &str = "c-best";
/// Label of this library.
const OWN: &str = "ssm";

/// The figures of one round, by (figure, implementation label). A failed
/// measurement is NaN; a wake-up that never happened is infinite.
#[derive(Default)]
pub struct Round {
    figures: BTreeMap<(String, &'static str), f64>,
}

impl Round {
    /// Records a figure.
    pub fn put(&mut self, fig: &str, imp: &'static str, v: f64) {
        self.figures.insert((fig.to_owned(), imp), v);
    }

    /// A figure, NaN if missing.
    fn get(&self, fig: &str, imp: &str) -> f64 {
        self.figures
            .iter()
            .find(|((f, i), _)| f == fig && *i == imp)
            .map_or(f64::NAN, |(_, &v)| v)
    }
}

/// All rounds of a run.
pub struct Report<'a> {
    /// The rounds.
    pub rounds: &'a [Round],
    /// Process counts of (b).
    pub procs: &'a [usize],
    /// Failures met during the run.
    pub failures: &'a [String],
}

impl Report<'_> {
    /// Median over rounds of a figure.
    fn med(&self, fig: &str, imp: &str) -> f64 {
        let v: Vec<f64> = self.rounds.iter().map(|r| r.get(fig, imp)).collect();
        median(&v)
    }

    /// Sum over rounds of a figure (counts).
    fn sum(&self, fig: &str, imp: &str) -> f64 {
        self.rounds
            .iter()
            .map(|r| r.get(fig, imp))
            .filter(|v| !v.is_nan())
            .sum()
    }

    /// Median over rounds of `num / den`, each from the same round.
    fn ratio(&self, num: (&str, &str), den: (&str, &str)) -> f64 {
        let v: Vec<f64> = self
            .rounds
            .iter()
            .map(|r| {
                let (n, d) = (r.get(num.0, num.1), r.get(den.0, den.1));
                if n.is_infinite() && n > 0.0 {
                    f64::INFINITY
                } else {
                    n / d
                }
            })
            .collect();
        median(&v)
    }

    /// Prints the whole report to stdout.
    pub fn print(&self) {
        self.table();
        println!();
        memory_table();
        println!();
        if !self.failures.is_empty() {
            println!("Failures during the run:");
            for f in self.failures {
                println!("- {f}");
            }
            println!();
        }
        self.own_line();
        self.ratios_line();
    }

    /// One table row: a label and one cell per implementation.
    fn row(&self, label: &str, cell: impl Fn(&'static str) -> String) {
        let cells: Vec<String> = ALL.iter().map(|i| cell(i.label())).collect();
        println!("| {label} | {} |", cells.join(" | "));
    }

    /// A latency pair `p50 / p99` in microseconds, or the no-wake note.
    fn wake_cell(&self, fig: &str, imp: &str) -> String {
        let p50 = self.med(&format!("{fig}_p50"), imp);
        if p50.is_infinite() {
            return "no wake-up (timed out)".into();
        }
        let p99 = self.med(&format!("{fig}_p99"), imp);
        format!("{} / {}", num(p50, 1), num(p99, 1))
    }

    /// Timeouts over attempts, summed over rounds.
    fn timeouts_cell(&self, fig: &str, imp: &str) -> String {
        format!(
            "{}/{}",
            self.sum(&format!("{fig}_timeouts"), imp) as u64,
            self.sum(&format!("{fig}_attempts"), imp) as u64
        )
    }

    /// The comparison table.
    fn table(&self) {
        println!(
            "## ssm vs the mutex baseline (medians of {} interleaved rounds)",
            self.rounds.len()
        );
        println!();
        let labels: Vec<&str> = ALL.iter().map(|i| i.label()).collect();
        println!("| figure | {} |", labels.join(" | "));
        println!("|---|{}", "---:|".repeat(labels.len()));
        self.row("(a) alloc+free pair, 1 process (ns)", |i| {
            num(self.med("pair_ns", i), 1)
        });
        for &n in self.procs {
            let procs = if n == 1 { "process" } else { "processes" };
            self.row(&format!("(b) {n} {procs}, window 32 (Mops/s)"), |i| {
                num(self.med(&format!("procs{n}_mops"), i), 2)
            });
        }
        for &n in self.procs.iter().filter(|&&n| n > 1) {
            self.row(
                &format!("(b) {n} processes: fairness (slowest/fastest)"),
                |i| num(self.med(&format!("procs{n}_fair"), i), 2),
            );
        }
        self.row(
            "(c) hand-off of 64-byte packets over the ring (M blocks/s)",
            |i| num(self.med("handoff_mps", i), 3),
        );
        self.row("(d) wake-up on free, same shard: p50 / p99 (µs)", |i| {
            self.wake_cell("wake_same", i)
        });
        self.row(
            "(d) wake-up on free, different shard: p50 / p99 (µs)",
            |i| self.wake_cell("wake_diff", i),
        );
        self.row("(d) timed out (20 ms): same shard", |i| {
            self.timeouts_cell("wake_same", i)
        });
        self.row("(d) timed out (20 ms): different shard", |i| {
            self.timeouts_cell("wake_diff", i)
        });
        self.row(
            "(e) alloc latency, 8 processes on 2 CPUs: p99 / p99.9 (ns)",
            |i| {
                format!(
                    "{} / {}",
                    num(self.med("lat_p99_us", i) * 1e3, 0),
                    num(self.med("lat_p999_us", i) * 1e3, 0)
                )
            },
        );
        self.row("(f) ring alone: hand-off (M values/s)", |i| {
            num(self.med("ring_mps", i), 3)
        });
        self.row("(f) ring alone: reader wake-up p50 / p99 (µs)", |i| {
            self.wake_cell("ring_wake", i)
        });
        println!();
        println!(
            "Bare futex wake between two processes (the floor for (d) and (f)): p50 {} µs, p99 {} µs.",
            num(self.med("futex_p50", NONE), 1),
            num(self.med("futex_p99", NONE), 1)
        );
        println!();
        println!(
            "C reference points (the original C pool, measured on this VM): alloc+free \
             pair 318 ns shipped / 32 ns with the pid cached; 16 processes 0.5-1.3 Mops/s \
             shipped, 2.8-4.7 Mops/s without priority inheritance; ring hand-off 0.19 M/s \
             shipped, 1.3 M/s without priority inheritance. (c-best here also reads the \
             pid only once per process.)"
        );
    }

    /// `own:` with this library's absolute figures.
    fn own_line(&self) {
        println!(
            "own: pair_ns={} procs2_mops={} procs16_mops={} fairness16={} handoff_mps={} \
             wake_p50_us={} futex_p50_us={}",
            num(self.med("pair_ns", OWN), 1),
            num(self.med("procs2_mops", OWN), 3),
            num(self.med("procs16_mops", OWN), 3),
            num(self.med("procs16_fair", OWN), 2),
            num(self.med("handoff_mps", OWN), 3),
            num(self.med("wake_diff_p50", OWN), 1),
            num(self.med("futex_p50", NONE), 1),
        );
    }

    /// `ratios:` this library over the best-case baseline, bigger is
    /// better everywhere.
    fn ratios_line(&self) {
        let (own, best) = (OWN, BEST);
        println!(
            "ratios: pair={} procs8={} procs16={} handoff={} wake_p50={} p999={}",
            num(self.ratio(("pair_ns", best), ("pair_ns", own)), 2),
            num(self.ratio(("procs8_mops", own), ("procs8_mops", best)), 2),
            num(self.ratio(("procs16_mops", own), ("procs16_mops", best)), 2),
            num(self.ratio(("handoff_mps", own), ("handoff_mps", best)), 2),
            num(
                self.ratio(("wake_diff_p50", best), ("wake_diff_p50", own)),
                2
            ),
            num(self.ratio(("lat_p999_us", best), ("lat_p999_us", own)), 2),
        );
    }
}

/// `v` with `decimals` decimals; `inf` and `n/a` for the special values.
fn num(v: f64, decimals: usize) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.is_infinite() {
        "inf".into()
    } else {
        format!("{v:.decimals$}")
    }
}

/// Metadata of one pool configuration.
struct Memory {
    /// Bytes of metadata each block costs.
    per_block: usize,
    /// Bytes of metadata the pool costs besides its blocks'.
    fixed: u64,
    /// Blocks in all.
    blocks: u64,
    /// Size of the shared memory object.
    mapped: u64,
}

impl Memory {
    /// `ssm`'s figures for `cfg`, from its layout.
    fn ssm(cfg: &PoolConfig) -> Result<Memory, String> {
        let geo = Geometry::new(cfg).map_err(|e| e.to_string())?;
        Ok(Memory {
            per_block: size_of::<BlockMeta<Os>>(),
            // Header, class table, wake words, shard heads, registry and
            // magazines: everything before the block metadata table.
            fixed: geo.off_metas,
            blocks: u64::from(geo.nblocks),
            mapped: geo.total_size,
        })
    }

    /// The baseline's figures for `classes`, from a pool created for the
    /// purpose (and removed at once).
    fn baseline(classes: &[(u32, u32)]) -> Result<Memory, String> {
        let name = unique_name("mem");
        let pool = BaselinePool::create(
            &name,
            classes,
            DEFAULT_SHARDS,
            DEFAULT_HEADSPACE,
            DEFAULT_TAILSPACE,
            Variant::BEST,
        );
        BaselinePool::unlink(&name);
        let pool = pool.map_err(|e| e.to_string())?;
        let (per_block, _per_shard) = pool.metadata_bytes();
        let blocks_bytes: u64 = classes
            .iter()
            .map(|&(s, c)| u64::from(s) * u64::from(c))
            .sum();
        let mapped = pool.mapped_size() as u64;
        Ok(Memory {
            per_block,
            // Shard table (mutex, condvar, list head, counts per shard) and
            // header, after the blocks.
            fixed: mapped - blocks_bytes,
            blocks: classes.iter().map(|&(_, c)| u64::from(c)).sum(),
            mapped,
        })
    }

    /// All metadata bytes.
    fn total(&self) -> u64 {
        self.fixed + self.per_block as u64 * self.blocks
    }
}

/// The memory-overhead table of both presets for both implementations.
fn memory_table() {
    let cols: [(&str, Result<Memory, String>); 4] = [
        ("ssm group pool", Memory::ssm(&PoolConfig::group_pool())),
        (
            "ssm per-user pool",
            Memory::ssm(&PoolConfig::per_user_pool()),
        ),
        ("c group pool (GSPP)", Memory::baseline(&GSPP_CLASSES)),
        ("c per-user pool (PUP)", Memory::baseline(&PUP_CLASSES)),
    ];
    println!("## Memory overhead (both presets, default shards and processes)");
    println!();
    let heads: Vec<&str> = cols.iter().map(|c| c.0).collect();
    println!("| | {} |", heads.join(" | "));
    println!("|---|{}", "---:|".repeat(cols.len()));
    let row = |label: &str, f: &dyn Fn(&Memory) -> String| {
        let cells: Vec<String> = cols
            .iter()
            .map(|(_, m)| m.as_ref().map_or_else(|e| format!("error: {e}"), f))
            .collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    row("blocks", &|m| m.blocks.to_string());
    row("metadata per block (bytes)", &|m| m.per_block.to_string());
    row("metadata per pool, besides blocks (bytes)", &|m| {
        m.fixed.to_string()
    });
    row("metadata in all (bytes)", &|m| m.total().to_string());
    row("mapped size (bytes)", &|m| m.mapped.to_string());
    println!();
    println!(
        "ssm keeps block metadata in a table apart from the payload; its per-pool part is \
         the header, class table, wake words, shard heads, registry (128 bytes per process \
         slot) and magazines (4 bytes per cached entry per process per class). The \
         baseline's 28-byte block header lies inside each block (a block's usable size is \
         its size minus 28 bytes); its per-pool part is the shard table and header."
    );
}
