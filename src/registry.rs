//! The process registry: one slot per attached pool handle, recording who
//! the process is so that a sweeper can tell whether it still runs.
//!
//! # The slot state word
//!
//! ```text
//!  63              32 31           16 15      8 7       0
//! +------------------+---------------+---------+---------+
//! |     pid (32)     |  slot gen (16) | reserved|  state  |
//! +------------------+---------------+---------+---------+
//! ```
//!
//! States: `FREE` → (attach, CAS) `CLAIMING` → `LIVE` → (detach) `FREE`, or
//! `LIVE` → (a sweeper finds the process dead, CAS) `RECLAIMING` → `FREE`.
//! The slot generation is incremented by every claim, and blocks record the
//! owner's slot *and* generation, so nothing tagged by an earlier process in
//! the slot is ever attributed to a later one.
//!
//! A process's identity is its pid and its start time (field 22 of
//! `/proc/PID/stat`): a pid reused by a new process has a different start
//! time, so liveness never rests on `kill(pid, 0)`. A zombie counts as dead.

use std::fmt;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::block::Owner;
use crate::error::{Error, Result};
use crate::freelist::OpRecord;
use crate::layout::Segment;
use crate::platform::{Atomic32, Atomic64, Identity, Platform, Word};

/// Slot states.
pub mod state {
    /// Unused.
    pub const FREE: u8 = 0;
    /// Being taken by the process whose pid is recorded; its start time may
    /// not be written yet. Holds no blocks.
    pub const CLAIMING: u8 = 1;
    /// Attached.
    pub const LIVE: u8 = 2;
    /// The process is dead and a sweeper is recovering its blocks.
    pub const RECLAIMING: u8 = 3;
}

/// A decoded slot state word.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SlotWord(u64);

impl SlotWord {
    /// A word in `state` for `pid`, generation `gen`.
    #[inline]
    pub const fn new(state: u8, gen: u16, pid: u32) -> Self {
        Self(state as u64 | ((gen as u64) << 16) | ((pid as u64) << 32))
    }
    /// The state.
    #[inline]
    pub const fn state(self) -> u8 {
        self.0 as u8
    }
    /// The slot generation.
    #[inline]
    pub const fn gen(self) -> u16 {
        (self.0 >> 16) as u16
    }
    /// The pid.
    #[inline]
    pub const fn pid(self) -> u32 {
        (self.0 >> 32) as u32
    }
    /// The same word in another state.
    #[inline]
    pub const fn with_state(self, state: u8) -> Self {
        Self((self.0 & !0xFF) | state as u64)
    }
}

crate::platform::packed_newtype!(SlotWord);

impl fmt::Debug for SlotWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self.state() {
            state::FREE => "FREE",
            state::CLAIMING => "CLAIMING",
            state::LIVE => "LIVE",
            state::RECLAIMING => "RECLAIMING",
            _ => "INVALID",
        };
        write!(f, "{s}{{pid {}, gen {}}}", self.pid(), self.gen())
    }
}

/// One registry slot.
#[repr(C)]
pub struct Slot<P: Platform> {
    /// State, generation and pid (see the module documentation).
    pub state: Word<P::U64, SlotWord>,
    /// The process's start time; 0 until written during the claim.
    pub start: P::U64,
    /// The free-list operation this process has in progress.
    pub op: OpRecord<P>,
    /// While the process is blocked in `alloc_timeout`: its slot
    /// generation << 16 | class + 1; otherwise 0. For statistics only.
    pub waiting: P::U32,
    /// Reserved, zero.
    pub reserved: P::U32,
    /// Attach time, nanoseconds since the Unix epoch (informational).
    pub attached_ns: P::U64,
}

const _: () = {
    use crate::platform::Os;
    use std::mem::{offset_of, size_of};
    assert!(size_of::<Slot<Os>>() == 64);
    assert!(offset_of!(Slot<Os>, op) == 16);
    assert!(offset_of!(Slot<Os>, waiting) == 48);
};

impl<P: Platform> Slot<P> {
    /// A free slot.
    pub fn new() -> Self {
        Self {
            state: Word::new(SlotWord::new(state::FREE, 0, 0)),
            start: P::U64::new(0),
            op: OpRecord::new(),
            waiting: P::U32::new(0),
            reserved: P::U32::new(0),
            attached_ns: P::U64::new(0),
        }
    }

    /// Resets a slot of a freshly created segment.
    pub fn reset(&self) {
        self.state.store(SlotWord::new(state::FREE, 0, 0), Relaxed);
        self.start.store(0, Relaxed);
        self.op.reset();
        self.waiting.store(0, Relaxed);
        self.attached_ns.store(0, Relaxed);
    }
}

impl<P: Platform> Default for Slot<P> {
    fn default() -> Self {
        Self::new()
    }
}

/// Takes a free slot for the calling process.
pub fn attach<P: Platform>(seg: &Segment<'_, P>, who: Identity, now_ns: u64) -> Result<Owner> {
    for i in 0..seg.slots.len() {
        let w = seg.slots[i].state.load(Acquire);
        if w.state() == state::FREE {
            if let Some(me) = claim(seg, i, w, who, now_ns) {
                return Ok(me);
            }
        }
    }
    Err(Error::RegistryFull {
        pool: seg.name.into(),
        slots: seg.geo.nslots,
    })
}

/// Takes over the slot of a dead process when no slot is free. Its pending
/// free-list operations are completed first; the blocks it held keep the
/// old slot generation and become orphans for the next sweep.
pub fn take_over<P: Platform>(seg: &Segment<'_, P>, who: Identity, now_ns: u64) -> Result<Owner> {
    for i in 0..seg.slots.len() {
        if let Verdict::Recover(w) = judge(seg, i) {
            if w.state() == state::RECLAIMING {
                continue;
            }
            crate::freelist::complete_all_of(seg, i as u32)?;
            forget_waiter(seg, i, w.gen());
            if let Some(me) = claim(seg, i, w, who, now_ns) {
                return Ok(me);
            }
        }
    }
    Err(Error::RegistryFull {
        pool: seg.name.into(),
        slots: seg.geo.nslots,
    })
}

/// Claims slot `i`, last seen as `w`, for `who`.
fn claim<P: Platform>(
    seg: &Segment<'_, P>,
    i: usize,
    w: SlotWord,
    who: Identity,
    now_ns: u64,
) -> Option<Owner> {
    let slot = &seg.slots[i];
    // Slot generations are 12 bits, as in a block's owner tag.
    let gen = (w.gen() + 1) & crate::block::SLOT_GEN_MASK;
    let claim = SlotWord::new(state::CLAIMING, gen, who.pid);
    slot.state
        .compare_exchange(w, claim, AcqRel, Relaxed)
        .ok()?;
    seg.p.step(crate::platform::Step::Claiming);
    slot.start.store(who.start, Relaxed);
    slot.op.reset();
    slot.waiting.store(0, Relaxed);
    slot.attached_ns.store(now_ns, Relaxed);
    let me = Owner {
        slot: i as u32,
        gen,
    };
    // Magazines of a new attachment start empty.
    for class in 0..seg.geo.classes.len() {
        seg.magazine(me.slot, class)[0].store(0, Relaxed);
    }
    // Release: everything above is visible to whoever sees LIVE.
    slot.state
        .compare_exchange(claim, claim.with_state(state::LIVE), Release, Relaxed)
        .ok()?;
    Some(me)
}

/// The `waiting` word of a process of generation `gen` blocked on `class`.
pub fn waiting_word(gen: u16, class: usize) -> u32 {
    (u32::from(gen) << 16) | (class as u32 + 1)
}

/// Clears the waiter record of slot `i`'s process of generation `gen`, if
/// it died while blocked (the record only feeds statistics).
pub fn forget_waiter<P: Platform>(seg: &Segment<'_, P>, i: usize, gen: u16) {
    let word = &seg.slots[i].waiting;
    let w = word.load(Acquire);
    if w != 0 && (w >> 16) as u16 == gen {
        let _ = word.compare_exchange(w, 0, AcqRel, Relaxed);
    }
}

/// The class + 1 a `waiting` word names, for a slot of generation `gen`.
pub fn waiting_class(w: u32, gen: u16) -> Option<usize> {
    if w != 0 && (w >> 16) as u16 == gen {
        ((w & 0xFFFF) as usize).checked_sub(1)
    } else {
        None
    }
}

/// Releases `me`'s slot. The caller has given back every block it holds.
pub fn detach<P: Platform>(seg: &Segment<'_, P>, me: Owner) {
    let slot = &seg.slots[me.slot as usize];
    let w = slot.state.load(Acquire);
    if w.state() == state::LIVE && w.gen() == me.gen {
        slot.start.store(0, Relaxed);
        let _ = slot
            .state
            .compare_exchange(w, w.with_state(state::FREE), AcqRel, Relaxed);
    }
}

/// What a sweeper concludes about a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Free, or held by a running process (or one that may be running).
    Keep,
    /// Held by a dead process (or one whose sweeper died): recover it.
    Recover(SlotWord),
}

/// Decides whether slot `i` must be recovered.
pub fn judge<P: Platform>(seg: &Segment<'_, P>, i: usize) -> Verdict {
    let slot = &seg.slots[i];
    let w = slot.state.load(Acquire);
    match w.state() {
        state::LIVE => {
            let who = Identity {
                pid: w.pid(),
                start: slot.start.load(Relaxed),
            };
            if seg.p.is_alive(who) {
                Verdict::Keep
            } else {
                Verdict::Recover(w)
            }
        }
        state::CLAIMING => {
            // The start time may not be written yet (or still be that of
            // the slot's previous process), so the pid alone decides: only
            // a pid with no process at all is dead. A claiming slot holds no
            // blocks, so keeping one too long costs nothing but the slot.
            let who = Identity {
                pid: w.pid(),
                start: 0,
            };
            if seg.p.is_alive(who) {
                Verdict::Keep
            } else {
                Verdict::Recover(w)
            }
        }
        // A RECLAIMING slot whose sweeper died is finished by the next one;
        // two sweepers on one slot are safe (see `reclaim`).
        state::RECLAIMING => Verdict::Recover(w),
        _ => Verdict::Keep,
    }
}

/// Reads field `n` (1-based, as in proc(5)) of `/proc/PID/stat`, and the
/// state letter.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces
    // or parentheses; the fields after the last ')' are plain.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 4..=21 precede the start time (field 22): skip 18.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// The identity of the calling process.
pub fn proc_identity_self() -> Identity {
    let pid = std::process::id();
    let start = proc_stat(pid).map_or(1, |(_, s)| s.max(1));
    Identity { pid, start }
}

/// Whether the process `who` runs: its `/proc` entry exists, it is not a
/// zombie, and (when `who.start` is known) it started at `who.start`.
pub fn proc_is_alive(who: Identity) -> bool {
    if who.pid == 0 {
        return false;
    }
    match proc_stat(who.pid) {
        None => {
            // No /proc entry: gone, unless /proc itself is unreadable, in
            // which case nothing can be concluded.
            !std::path::Path::new("/proc/self/stat").exists()
        }
        Some((state, start)) => {
            if state == 'Z' || state == 'X' || state == 'x' {
                return false;
            }
            who.start == 0 || start.max(1) == who.start
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_word_round_trips() {
        let w = SlotWord::new(state::LIVE, 0xABCD, 4_000_000);
        assert_eq!(
            (w.state(), w.gen(), w.pid()),
            (state::LIVE, 0xABCD, 4_000_000)
        );
        assert_eq!(w.with_state(state::FREE).state(), state::FREE);
        assert_eq!(w.with_state(state::FREE).gen(), 0xABCD);
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = proc_identity_self();
        assert!(me.start > 1, "start time read from /proc");
        assert!(proc_is_alive(me));
        assert!(!proc_is_alive(Identity {
            pid: me.pid,
            start: me.start + 1
        }));
        assert!(!proc_is_alive(Identity { pid: 0, start: 1 }));
    }

    #[test]
    fn a_reaped_child_is_dead() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let mut child = child;
        child.wait().unwrap();
        assert!(!proc_is_alive(Identity { pid, start: 0 }));
    }
}
