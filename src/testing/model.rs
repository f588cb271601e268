//! A reference model of the pool: a small sequential specification of
//! which blocks are available, who holds which allocation with how many
//! references, and which generations have been issued. [`Checker`] runs a
//! sequence of [`Op`]s on the real algorithm (several simulated processes
//! over heap memory) and on the model, and reports the first step where
//! they disagree.

use std::collections::VecDeque;
use std::fmt;

use crate::allocator::{Attached, Block};
use crate::block::{Window, REFS_MAX};
use crate::config::PoolConfig;
use crate::error::{Error, HandleFault};
use crate::handle::Handle;
use crate::layout::HeapSegment;
use crate::platform::Identity;
use crate::reclaim::{self, Target};
use crate::testing::sim::SimOs;
use crate::{audit, registry, stats};

/// One step of an operation sequence. Process and item numbers are taken
/// modulo what exists, so every value is meaningful.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A new process attaches.
    Attach,
    /// Process `p` allocates `len` bytes' worth (a class is picked by size).
    Alloc {
        /// Process.
        p: u8,
        /// Class selector.
        class: u8,
    },
    /// Process `p` drops its `i`-th guard.
    Free {
        /// Process.
        p: u8,
        /// Which guard.
        i: u8,
    },
    /// Process `p` turns its `i`-th guard into a handle in the mailbox.
    Send {
        /// Process.
        p: u8,
        /// Which guard.
        i: u8,
    },
    /// Process `p` takes the first handle of the mailbox over.
    Take {
        /// Process.
        p: u8,
    },
    /// Process `p` adds a reference to its `i`-th guard and mails a handle
    /// standing for it.
    Retain {
        /// Process.
        p: u8,
        /// Which guard.
        i: u8,
    },
    /// Process `p` drops the reference of the first mailed handle.
    Release {
        /// Process.
        p: u8,
    },
    /// Process `p` presents a handle that was never issued (or a stale one).
    Forge {
        /// Process.
        p: u8,
        /// The raw handle.
        raw: u64,
    },
    /// Process `p` returns its caches to the shards.
    Flush {
        /// Process.
        p: u8,
    },
    /// Process `p` dies.
    Kill {
        /// Process.
        p: u8,
    },
    /// Process `p` runs a reclaim sweep.
    Reclaim {
        /// Process.
        p: u8,
    },
}

/// What the model knows about a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Available,
    Held {
        owner: usize,
        refs: u32,
        guard: bool,
        gen: u32,
    },
}

/// A disagreement between the pool and the model.
#[derive(Debug)]
pub struct Divergence {
    /// Index of the step.
    pub step: usize,
    /// The step.
    pub op: Op,
    /// What differed.
    pub what: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {} ({:?}): {}", self.step, self.op, self.what)
    }
}

struct Proc {
    alive: bool,
    guards: Vec<Block>,
}

/// Runs operation sequences on a pool and on the model side by side.
pub struct Checker {
    os: SimOs,
    heap: HeapSegment<SimOs>,
    blocks: Vec<Slot>,
    last_gen: Vec<u32>,
    class_of: Vec<usize>,
    procs: Vec<Proc>,
    owners: Vec<crate::block::Owner>,
    mailbox: VecDeque<Handle>,
    classes: usize,
}

const W: Window = Window { head: 0, tail: 0 };

fn who(p: usize) -> Identity {
    Identity {
        pid: 1000 + p as u32,
        start: 1,
    }
}

impl Checker {
    /// A pool for `cfg` and an empty model.
    pub fn new(cfg: &PoolConfig) -> Self {
        let os = SimOs::default();
        let heap = HeapSegment::new(cfg, &os).expect("valid configuration");
        let n = heap.geometry().nblocks as usize;
        let class_of = (0..n as u32)
            .map(|b| heap.geometry().class_of(b).unwrap())
            .collect();
        let classes = heap.geometry().classes.len();
        Checker {
            os,
            heap,
            blocks: vec![Slot::Available; n],
            last_gen: vec![0; n],
            class_of,
            procs: Vec::new(),
            owners: Vec::new(),
            mailbox: VecDeque::new(),
            classes,
        }
    }

    fn att(&self, p: usize) -> Attached<'_, SimOs> {
        Attached::new(self.heap.segment(&self.os, "model"), self.owners[p])
    }

    /// A live process chosen by `p`, if any.
    fn live(&self, p: u8) -> Option<usize> {
        let live: Vec<usize> = (0..self.procs.len())
            .filter(|&i| self.procs[i].alive)
            .collect();
        (!live.is_empty()).then(|| live[p as usize % live.len()])
    }

    /// Runs `ops`, checking after every step; returns the first divergence.
    pub fn run(&mut self, ops: &[Op]) -> Result<(), Divergence> {
        for (step, op) in ops.iter().enumerate() {
            self.step(op).map_err(|what| Divergence {
                step,
                op: op.clone(),
                what,
            })?;
            self.agree().map_err(|what| Divergence {
                step,
                op: op.clone(),
                what,
            })?;
        }
        Ok(())
    }

    fn expected_fault(&self, h: Handle) -> Option<HandleFault> {
        let b = h.index() as usize;
        if h.into_raw() == 0 {
            return Some(HandleFault::Null);
        }
        if b >= self.blocks.len() {
            return Some(HandleFault::OutOfRange);
        }
        match self.blocks[b] {
            Slot::Held { gen, .. } if gen == h.generation() => None,
            _ => Some(HandleFault::Stale),
        }
    }

    fn step(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Attach => {
                if self.procs.len() >= 12 {
                    return Ok(());
                }
                let p = self.procs.len();
                self.os.start(who(p));
                let seg = self.heap.segment(&self.os, "model");
                match registry::attach(&seg, who(p), 0) {
                    Ok(me) => {
                        self.owners.push(me);
                        self.procs.push(Proc {
                            alive: true,
                            guards: Vec::new(),
                        });
                    }
                    Err(Error::RegistryFull { .. }) => self.os.kill(who(p)),
                    Err(e) => return Err(format!("attach: {e}")),
                }
            }
            Op::Alloc { p, class } => {
                let Some(p) = self.live(p) else { return Ok(()) };
                let class = class as usize % self.classes;
                let available = self
                    .blocks
                    .iter()
                    .zip(&self.class_of)
                    .any(|(s, &c)| c == class && *s == Slot::Available);
                match self.att(p).alloc(class, W) {
                    Ok(b) => {
                        let i = b.index as usize;
                        if self.blocks[i] != Slot::Available {
                            return Err(format!("block {i} handed out while {:?}", self.blocks[i]));
                        }
                        if b.gen <= self.last_gen[i] {
                            return Err(format!(
                                "block {i}: generation {} after {}",
                                b.gen, self.last_gen[i]
                            ));
                        }
                        self.last_gen[i] = b.gen;
                        self.blocks[i] = Slot::Held {
                            owner: p,
                            refs: 1,
                            guard: true,
                            gen: b.gen,
                        };
                        self.procs[p].guards.push(b);
                    }
                    Err(Error::Exhausted { .. }) if !available => {}
                    Err(e) => return Err(format!("alloc (model has a block: {available}): {e}")),
                }
            }
            Op::Free { p, i } | Op::Send { p, i } => {
                let Some(p) = self.live(p) else { return Ok(()) };
                let g = &mut self.procs[p].guards;
                if g.is_empty() {
                    return Ok(());
                }
                let b = g.remove(i as usize % g.len());
                let idx = b.index as usize;
                let Slot::Held { owner, refs, .. } = self.blocks[idx] else {
                    return Err(format!("model: guard on a free block {idx}"));
                };
                if matches!(op, Op::Free { .. }) {
                    let freed = self
                        .att(p)
                        .drop_guard(b)
                        .map_err(|e| format!("free: {e}"))?;
                    self.dropped(idx, "free", freed, owner, refs, false, b.gen)?;
                } else {
                    self.att(p).unguard(b).map_err(|e| format!("send: {e}"))?;
                    self.blocks[idx] = Slot::Held {
                        owner,
                        refs,
                        guard: false,
                        gen: b.gen,
                    };
                    self.mailbox.push_back(b.handle());
                }
            }
            Op::Retain { p, i } => {
                let Some(p) = self.live(p) else { return Ok(()) };
                let g = &self.procs[p].guards;
                if g.is_empty() {
                    return Ok(());
                }
                let b = g[i as usize % g.len()];
                let idx = b.index as usize;
                let Slot::Held {
                    owner,
                    refs,
                    guard,
                    gen,
                } = self.blocks[idx]
                else {
                    return Err("model: guard on a free block".into());
                };
                match self.att(p).retain(b.handle()) {
                    Ok(()) if refs < REFS_MAX => {
                        self.blocks[idx] = Slot::Held {
                            owner,
                            refs: refs + 1,
                            guard,
                            gen,
                        };
                        self.mailbox.push_back(b.handle());
                    }
                    Err(Error::InvalidHandle {
                        fault: HandleFault::TooManyReferences,
                        ..
                    }) if refs == REFS_MAX => {}
                    r => return Err(format!("retain with {refs} references: {r:?}")),
                }
            }
            Op::Take { p } | Op::Release { p } => {
                let Some(p) = self.live(p) else { return Ok(()) };
                let Some(h) = self.mailbox.pop_front() else {
                    return Ok(());
                };
                self.present(p, h, matches!(op, Op::Take { .. }))?;
            }
            Op::Forge { p, raw } => {
                let Some(p) = self.live(p) else { return Ok(()) };
                let h = Handle::from_raw(raw);
                // A forged handle that happens to name a live allocation
                // with a handle reference is simply a valid handle.
                let take = raw & 1 == 0;
                self.present(p, h, take)?;
            }
            Op::Flush { p } => {
                let Some(p) = self.live(p) else { return Ok(()) };
                self.att(p).flush_all().map_err(|e| format!("flush: {e}"))?;
            }
            Op::Kill { p } => {
                let Some(p) = self.live(p) else { return Ok(()) };
                if self.procs.iter().filter(|q| q.alive).count() < 2 {
                    return Ok(());
                }
                self.procs[p].alive = false;
                self.procs[p].guards.clear();
                self.os.kill(who(p));
            }
            Op::Reclaim { p } => {
                let Some(p) = self.live(p) else { return Ok(()) };
                let held_by_dead = self
                    .blocks
                    .iter()
                    .filter(|s| matches!(s, Slot::Held { owner, .. } if !self.procs[*owner].alive))
                    .count() as u64;
                let r = reclaim::sweep(&self.att(p), Target::Dead)
                    .map_err(|e| format!("reclaim: {e}"))?;
                if r.blocks() < held_by_dead {
                    return Err(format!(
                        "reclaim recovered {} of {held_by_dead} blocks",
                        r.blocks()
                    ));
                }
                for s in &mut self.blocks {
                    if matches!(s, Slot::Held { owner, .. } if !self.procs[*owner].alive) {
                        *s = Slot::Available;
                    }
                }
            }
        }
        Ok(())
    }

    /// Process `p` presents handle `h`: takes it over, or releases it.
    fn present(&mut self, p: usize, h: Handle, take: bool) -> Result<(), String> {
        let expected = self.expected_fault(h);
        let idx = h.index() as usize;
        let slot = self.blocks.get(idx).copied();
        if take {
            let ok = matches!(slot, Some(Slot::Held { guard: false, refs, .. }) if refs > 0)
                && expected.is_none();
            match (self.att(p).acquire(h), ok) {
                (Ok(b), true) => {
                    let Some(Slot::Held { refs, gen, .. }) = slot else {
                        unreachable!()
                    };
                    self.blocks[idx] = Slot::Held {
                        owner: p,
                        refs,
                        guard: true,
                        gen,
                    };
                    self.procs[p].guards.push(b);
                }
                (Err(Error::InvalidHandle { .. }), false) => {}
                (r, ok) => return Err(format!("take {h:?} (model: {slot:?}, valid {ok}): {r:?}")),
            }
        } else {
            let ok = matches!(slot, Some(Slot::Held { guard, refs, .. }) if refs > guard as u32)
                && expected.is_none();
            match (self.att(p).release(h), ok) {
                (Ok(freed), true) => {
                    let Some(Slot::Held {
                        owner,
                        refs,
                        guard,
                        gen,
                    }) = slot
                    else {
                        unreachable!()
                    };
                    self.dropped(idx, "release", freed, owner, refs, guard, gen)?;
                }
                (Err(Error::InvalidHandle { .. }), false) => {}
                (r, ok) => {
                    return Err(format!(
                        "release {h:?} (model: {slot:?}, valid {ok}): {r:?}"
                    ))
                }
            }
        }
        Ok(())
    }

    /// One of `refs` references of block `idx` was dropped (`freed`: the
    /// pool says it was the last); the guard bit becomes `guard`.
    #[allow(clippy::too_many_arguments)]
    fn dropped(
        &mut self,
        idx: usize,
        what: &str,
        freed: bool,
        owner: usize,
        refs: u32,
        guard: bool,
        gen: u32,
    ) -> Result<(), String> {
        if freed != (refs == 1) {
            return Err(format!("{what}: freed={freed} with {refs} references"));
        }
        self.blocks[idx] = if refs == 1 {
            Slot::Available
        } else {
            Slot::Held {
                owner,
                refs: refs - 1,
                guard,
                gen,
            }
        };
        Ok(())
    }

    /// The pool's own view agrees with the model.
    fn agree(&self) -> Result<(), String> {
        let seg = self.heap.segment(&self.os, "model");
        let a = audit::audit(&seg).map_err(|e| format!("audit: {e}"))?;
        let s = stats::collect(&seg);
        for c in 0..self.classes {
            let held = self
                .blocks
                .iter()
                .zip(&self.class_of)
                .filter(|(b, &k)| k == c && matches!(b, Slot::Held { .. }))
                .count() as u64;
            let ca = &a.classes[c];
            if ca.allocated != held || s.classes[c].allocated != held {
                return Err(format!(
                    "class {c}: model holds {held}, audit says {}, stats say {}",
                    ca.allocated, s.classes[c].allocated
                ));
            }
            if ca.free() + ca.cached + ca.pushing + ca.pending + held != u64::from(ca.blocks) {
                return Err(format!("class {c}: the audit does not add up: {ca:?}"));
            }
        }
        Ok(())
    }

    /// At the end: every process's handles gone, a sweep, and every block
    /// allocatable exactly once.
    pub fn finish(mut self) -> Result<(), String> {
        let p = self.procs.len();
        for q in 0..p {
            self.os.kill(who(q));
        }
        self.os.start(who(p));
        let seg = self.heap.segment(&self.os, "model");
        let me = registry::attach(&seg, who(p), 0)
            .or_else(|_| registry::take_over(&seg, who(p), 0))
            .map_err(|e| e.to_string())?;
        let a = Attached::new(seg, me);
        reclaim::sweep(&a, Target::Dead).map_err(|e| e.to_string())?;
        for c in 0..self.classes {
            let want = self.class_of.iter().filter(|&&k| k == c).count();
            let mut got = std::collections::HashSet::new();
            loop {
                match a.alloc(c, W) {
                    Ok(b) => {
                        if !got.insert(b.index) {
                            return Err(format!("block {} handed out twice", b.index));
                        }
                    }
                    Err(Error::Exhausted { .. }) => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
            if got.len() != want {
                return Err(format!(
                    "class {c}: {} of {want} blocks at the end",
                    got.len()
                ));
            }
        }
        self.mailbox.clear();
        Ok(())
    }
}

/// Decodes bytes into operations (for fuzzing): one byte picks the kind,
/// the next ones its arguments.
pub fn decode(data: &[u8]) -> Vec<Op> {
    let mut ops = vec![Op::Attach, Op::Attach];
    let mut it = data.iter().copied();
    while let Some(k) = it.next() {
        let mut a = || it.next().unwrap_or(0);
        let op = match k % 12 {
            0 => Op::Attach,
            1 | 2 => Op::Alloc { p: a(), class: a() },
            3 => Op::Free { p: a(), i: a() },
            4 => Op::Send { p: a(), i: a() },
            5 => Op::Take { p: a() },
            6 => Op::Retain { p: a(), i: a() },
            7 => Op::Release { p: a() },
            8 => {
                let p = a();
                let raw = u64::from_le_bytes([a(), a(), a(), a(), a(), a(), a(), a()]);
                Op::Forge { p, raw }
            }
            9 => Op::Flush { p: a() },
            10 => Op::Kill { p: a() },
            _ => Op::Reclaim { p: a() },
        };
        ops.push(op);
    }
    ops
}
