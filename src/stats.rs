//! A snapshot of a pool: free blocks per class and shard, allocations and
//! caches per process. Taken by scanning the metadata table, so it never
//! follows a link and is safe on a live, busy (or damaged) pool; on a busy
//! pool the counts are a moment's picture, not a consistent cut.

use std::fmt;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

use crate::block::kind;
use crate::layout::Segment;
use crate::platform::{Atomic32, Atomic64, Identity, Platform};
use crate::registry::state;

/// Counts of one size class.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Block size in bytes.
    pub size: u32,
    /// Largest payload of a block of this class.
    pub max_payload: u32,
    /// Blocks in the class.
    pub blocks: u32,
    /// Free blocks per shard.
    pub free_per_shard: Vec<u64>,
    /// Blocks in process caches.
    pub cached: u64,
    /// Allocated blocks.
    pub allocated: u64,
    /// Blocks on their way into a free list.
    pub moving: u64,
    /// Allocators blocked on the class.
    pub waiters: u32,
}

impl ClassStats {
    /// Free blocks in all shards.
    pub fn free(&self) -> u64 {
        self.free_per_shard.iter().sum()
    }
}

/// The registration state of an attached handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProcessState {
    /// Attaching.
    Claiming,
    /// Attached.
    Live,
    /// Dead; a sweep is recovering it.
    Reclaiming,
}

impl fmt::Display for ProcessState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProcessState::Claiming => "claiming",
            ProcessState::Live => "live",
            ProcessState::Reclaiming => "reclaiming",
        })
    }
}

/// One registered handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessStats {
    /// Registry slot.
    pub slot: u32,
    /// Pid.
    pub pid: u32,
    /// Registration state.
    pub state: ProcessState,
    /// Whether the process runs.
    pub alive: bool,
    /// Blocks it has allocated (and not handed over).
    pub allocated: u64,
    /// Blocks in its caches.
    pub cached: u64,
}

/// A snapshot of a pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Pool name.
    pub name: String,
    /// Per class.
    pub classes: Vec<ClassStats>,
    /// Per registered handle.
    pub processes: Vec<ProcessStats>,
    /// Free-list operations pending (normally 0; a dead process's pending
    /// operation is completed by the next visitor or sweep).
    pub pending_operations: u32,
    /// Blocks held by processes that are no longer running: what a reclaim
    /// sweep would recover.
    pub held_by_dead: u64,
}

impl Stats {
    /// Free blocks in all classes.
    pub fn free(&self) -> u64 {
        self.classes.iter().map(ClassStats::free).sum()
    }
    /// Allocated blocks in all classes.
    pub fn allocated(&self) -> u64 {
        self.classes.iter().map(|c| c.allocated).sum()
    }
    /// Cached blocks in all classes.
    pub fn cached(&self) -> u64 {
        self.classes.iter().map(|c| c.cached).sum()
    }
    /// Blocks in all classes.
    pub fn blocks(&self) -> u64 {
        self.classes.iter().map(|c| u64::from(c.blocks)).sum()
    }
}

/// Formats a byte count the way the class table shows it.
pub fn human_size(bytes: u32) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes % (1 << 10) == 0 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "pool {}", self.name)?;
        writeln!(
            f,
            "{:>9} {:>7} {:>7} {:>7} {:>9} {:>6} {:>7}  free per shard",
            "class", "blocks", "free", "cached", "allocated", "moving", "waiters"
        )?;
        for c in &self.classes {
            let shards: Vec<String> = c.free_per_shard.iter().map(u64::to_string).collect();
            writeln!(
                f,
                "{:>9} {:>7} {:>7} {:>7} {:>9} {:>6} {:>7}  {}",
                human_size(c.size),
                c.blocks,
                c.free(),
                c.cached,
                c.allocated,
                c.moving,
                c.waiters,
                shards.join(" ")
            )?;
        }
        writeln!(
            f,
            "{:>9} {:>7} {:>7} {:>7} {:>9}",
            "total",
            self.blocks(),
            self.free(),
            self.cached(),
            self.allocated()
        )?;
        if !self.processes.is_empty() {
            writeln!(
                f,
                "{:>6} {:>8} {:>11} {:>6} {:>9} {:>7}",
                "slot", "pid", "state", "alive", "allocated", "cached"
            )?;
            for p in &self.processes {
                writeln!(
                    f,
                    "{:>6} {:>8} {:>11} {:>6} {:>9} {:>7}",
                    p.slot,
                    p.pid,
                    p.state.to_string(),
                    if p.alive { "yes" } else { "no" },
                    p.allocated,
                    p.cached
                )?;
            }
        }
        if self.held_by_dead > 0 {
            writeln!(
                f,
                "{} block(s) held by dead processes await reclaim",
                self.held_by_dead
            )?;
        }
        if self.pending_operations > 0 {
            writeln!(
                f,
                "{} free-list operation(s) pending",
                self.pending_operations
            )?;
        }
        Ok(())
    }
}

/// Takes a snapshot.
pub fn collect<P: Platform>(seg: &Segment<'_, P>) -> Stats {
    let geo = seg.geo;
    let nslots = seg.slots.len();
    let mut processes: Vec<Option<ProcessStats>> = seg
        .slots
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let w = s.state.load(Acquire);
            let st = match w.state() {
                state::CLAIMING => ProcessState::Claiming,
                state::LIVE => ProcessState::Live,
                state::RECLAIMING => ProcessState::Reclaiming,
                _ => return None,
            };
            let who = Identity {
                pid: w.pid(),
                start: if st == ProcessState::Claiming {
                    0
                } else {
                    s.start.load(Relaxed)
                },
            };
            Some(ProcessStats {
                slot: i as u32,
                pid: w.pid(),
                state: st,
                alive: st != ProcessState::Reclaiming && seg.p.is_alive(who),
                allocated: 0,
                cached: 0,
            })
        })
        .collect();
    let gens: Vec<(u16, bool)> = seg
        .slots
        .iter()
        .map(|s| {
            let w = s.state.load(Acquire);
            (w.gen(), w.state() != state::FREE)
        })
        .collect();
    let mut stats = Stats {
        name: seg.name.into(),
        ..Default::default()
    };
    for (ci, c) in geo.classes.iter().enumerate() {
        let mut cs = ClassStats {
            size: c.size,
            max_payload: c.size.saturating_sub(geo.headspace + geo.tailspace),
            blocks: c.count,
            free_per_shard: vec![0; geo.shards_per_class as usize],
            waiters: seg
                .slots
                .iter()
                .filter(|s| {
                    let w = s.state.load(Relaxed);
                    w.state() == state::LIVE
                        && crate::registry::waiting_class(s.waiting.load(Relaxed), w.gen())
                            == Some(ci)
                })
                .count() as u32,
            ..Default::default()
        };
        for b in c.first..c.first + c.count {
            let st = seg.metas[b as usize].state.load(Relaxed);
            match st.kind() {
                kind::FREE => {
                    if let Some(n) = cs.free_per_shard.get_mut(st.slot() as usize) {
                        *n += 1;
                    }
                }
                kind::CACHED | kind::OWNED | kind::PUSHING | kind::POPPED => {
                    match st.kind() {
                        kind::CACHED => cs.cached += 1,
                        kind::OWNED => cs.allocated += 1,
                        _ => cs.moving += 1,
                    }
                    let s = st.slot() as usize;
                    if s < nslots && gens[s] == (st.slot_gen(), true) {
                        if let Some(p) = processes[s].as_mut() {
                            if st.kind() == kind::CACHED {
                                p.cached += 1;
                            } else {
                                p.allocated += 1;
                            }
                            if !p.alive {
                                stats.held_by_dead += 1;
                            }
                        }
                    } else {
                        // Held by a registration that is gone.
                        stats.held_by_dead += 1;
                    }
                }
                _ => {}
            }
        }
        stats.classes.push(cs);
    }
    for ci in 0..geo.classes.len() {
        for k in 0..geo.shards_per_class {
            if seg.shard(ci, k).head.load(Relaxed).pending().is_some() {
                stats.pending_operations += 1;
            }
        }
    }
    stats.processes = processes.into_iter().flatten().collect();
    stats
}
