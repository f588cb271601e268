//! The ring's algorithm: a bounded multi-producer, single-consumer queue of
//! 64-bit values with per-slot sequence words (after D. Vyukov's bounded
//! MPMC queue), whose writers can die at any instruction without wedging
//! the reader.
//!
//! # The sequence word of a slot
//!
//! ```text
//!  63                        24 23          12 11        2 1     0
//! +----------------------------+--------------+-----------+-------+
//! |      position (40)         | writer gen   | writer    | state |
//! |                            |    (12)      |   (10)    |  (2)  |
//! +----------------------------+--------------+-----------+-------+
//! ```
//!
//! The slot of position `p` is `p mod capacity`. Its word is
//! `FREE(p)` when a writer may take position `p`, `RESERVED(p, w)` while
//! writer `w` fills it, `PUBLISHED(p)` when the value is there to read, and
//! `FREE(p + capacity)` again once the reader has taken it. Positions are
//! compared modulo 2^40.
//!
//! # Write (any number of writers; lock-free)
//!
//! 1. Read the tail `t` and the sequence word of slot `t`.
//! 2. `FREE(t)`: compare-and-swap it to `RESERVED(t, me)`. This is the
//!    reservation; the writer's registry slot and generation are in it, so
//!    the reader can tell if the writer died. Then advance the tail (a
//!    compare-and-swap `t → t + 1`, which anyone may have done already).
//! 3. A word of position `t` reserved or published by someone else: help
//!    advance the tail, retry.
//! 4. A word of position `t - capacity`: the reader has not taken the
//!    previous lap's value: the ring is full.
//! 5. Store the value, then compare-and-swap `RESERVED(t, me)` →
//!    `PUBLISHED(t)` (sequentially consistent; the linearization point of
//!    the write), then wake the reader if it sleeps. (The swap fails only if
//!    a reader took this writer for dead and skipped the position; the write
//!    is then retried.)
//!
//! # Read (one reader)
//!
//! At the head `h`, the slot's word is `PUBLISHED(h)`: take the value, store
//! `FREE(h + capacity)` (the linearization point), advance the head, wake
//! sleeping writers. `FREE(h)`: empty. `RESERVED(h, w)`: a write in
//! progress; if writer `w` (its registry slot at that generation) is gone,
//! the reader frees the slot and skips the position: the value died with
//! its writer, and the block it named is still owned by the dead writer, so
//! the pool's sweep recovers it. `FREE(h + capacity)`: a previous reader
//! died after taking the value and before advancing the head: advance it.
//!
//! # Blocking
//!
//! The reader sleeps on the data word, writers on the space word, each with
//! the waiters-bit protocol of [`crate::wake`]; publishing a value and
//! freeing a slot are sequentially consistent stores, and the sleepers'
//! re-checks are sequentially consistent loads of the slot words. While a
//! write is in progress the reader sleeps in short slices, so a writer that
//! dies mid-write is noticed.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::time::Duration;

use super::layout::RingView;
use crate::error::{Error, Result};
use crate::platform::{Atomic32, Atomic64, Identity, Platform, Step};
use crate::wake;

const POS: u64 = (1 << 40) - 1;

/// Slot states.
pub mod state {
    /// A writer may take the position.
    pub const FREE: u64 = 0;
    /// A writer is filling the slot.
    pub const RESERVED: u64 = 1;
    /// The value is ready.
    pub const PUBLISHED: u64 = 2;
}

/// A decoded sequence word.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Seq(u64);

impl Seq {
    /// `FREE(pos)`.
    #[inline]
    pub const fn free(pos: u64) -> Self {
        Self((pos & POS) << 24)
    }
    /// `RESERVED(pos, w)`.
    #[inline]
    pub const fn reserved(pos: u64, w: Writer) -> Self {
        Self(
            ((pos & POS) << 24)
                | ((w.gen as u64 & 0xFFF) << 12)
                | ((w.slot as u64 & 0x3FF) << 2)
                | state::RESERVED,
        )
    }
    /// `PUBLISHED(pos)`.
    #[inline]
    pub const fn published(pos: u64) -> Self {
        Self(((pos & POS) << 24) | state::PUBLISHED)
    }
    /// The raw word.
    #[inline]
    pub const fn bits(self) -> u64 {
        self.0
    }
    /// The position (mod 2^40).
    #[inline]
    pub const fn pos(self) -> u64 {
        self.0 >> 24
    }
    /// The state.
    #[inline]
    pub const fn state(self) -> u64 {
        self.0 & 3
    }
    /// The reserving writer.
    #[inline]
    pub const fn writer(self) -> Writer {
        Writer {
            slot: ((self.0 >> 2) & 0x3FF) as u32,
            gen: ((self.0 >> 12) & 0xFFF) as u16,
        }
    }
}

/// A writer registration: its registry slot and the slot's generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Writer {
    /// Registry slot.
    pub slot: u32,
    /// Generation (12 bits).
    pub gen: u16,
}

/// Registration words: pid << 32 | generation << 8 | state.
pub mod reg {
    /// Unused.
    pub const FREE: u64 = 0;
    /// Being taken.
    pub const CLAIMING: u64 = 1;
    /// In use.
    pub const LIVE: u64 = 2;

    /// A word.
    pub const fn word(state: u64, gen: u16, pid: u32) -> u64 {
        ((pid as u64) << 32) | (((gen & 0xFFF) as u64) << 8) | state
    }
    /// Its state.
    pub const fn state(w: u64) -> u64 {
        w & 0xFF
    }
    /// Its generation.
    pub const fn gen(w: u64) -> u16 {
        ((w >> 8) & 0xFFF) as u16
    }
    /// Its pid.
    pub const fn pid(w: u64) -> u32 {
        (w >> 32) as u32
    }
}

/// Access modes (the C design's ACL word).
pub mod access {
    /// Reads and writes.
    pub const READ_WRITE: u32 = 0;
    /// Writes fail.
    pub const READ_ONLY: u32 = 1;
    /// Writes fail; reads drain what is queued, then fail.
    pub const FLOW_DOWN: u32 = 2;
    /// The peer is gone: writes fail; reads drain, then fail.
    pub const PEER_GONE: u32 = 3;
}

/// What one read attempt found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// A value.
    Value(u64),
    /// Nothing queued.
    Empty,
    /// A live writer is filling the next slot.
    InProgress,
}

/// Bounded retries (each failure means another operation made progress).
const MAX_ATTEMPTS: u32 = 1 << 20;
/// How long a reader sleeps at a time while a write is in progress.
const IN_PROGRESS_SLICE: Duration = Duration::from_millis(5);
/// Short spins before a blocking read or write sleeps (a few microseconds).
const SPINS: u32 = 16;

impl<'a, P: Platform> RingView<'a, P> {
    #[inline]
    fn mask(&self) -> u64 {
        u64::from(self.geo.capacity) - 1
    }

    #[inline]
    fn slot(&self, pos: u64) -> &'a super::layout::RingSlot<P> {
        &self.slots[(pos & self.mask()) as usize]
    }

    fn corrupted(&self, what: String) -> Error {
        Error::corrupted(self.name, what)
    }

    /// The access mode.
    pub fn mode(&self) -> u32 {
        self.access.load(Acquire)
    }

    fn denied(&self, mode: u32, op: &'static str) -> Error {
        match mode {
            access::FLOW_DOWN => Error::FlowDown {
                ring: self.name.into(),
            },
            access::PEER_GONE => Error::PeerGone {
                ring: self.name.into(),
            },
            access::READ_ONLY => Error::Access {
                ring: self.name.into(),
                mode: "read-only",
                op,
            },
            _ => self.corrupted(format!("unknown access mode {mode}")),
        }
    }

    /// Sets the access mode; anything but read-write wakes every sleeper.
    pub fn set_mode(&self, mode: u32) {
        self.access.store(mode, SeqCst);
        if mode != access::READ_WRITE {
            wake::wake_all(self.p, self.data);
            wake::wake_all(self.p, self.space);
        }
    }

    /// Values queued (published or being written).
    pub fn queued(&self) -> u64 {
        let t = self.tail.load(Acquire);
        let h = self.head.load(Acquire);
        t.saturating_sub(h).min(u64::from(self.geo.capacity))
    }

    /// Registers the calling process as a writer.
    pub fn attach_writer(&self, who: Identity) -> Result<Writer> {
        let claim = |i: usize, w: u64| -> Option<Writer> {
            let gen = (reg::gen(w) + 1) & 0xFFF;
            let slot = &self.writers[i];
            slot.word
                .compare_exchange(w, reg::word(reg::CLAIMING, gen, who.pid), AcqRel, Relaxed)
                .ok()?;
            slot.start.store(who.start, Relaxed);
            slot.word.store(reg::word(reg::LIVE, gen, who.pid), Release);
            Some(Writer {
                slot: i as u32,
                gen,
            })
        };
        for i in 0..self.writers.len() {
            let w = self.writers[i].word.load(Acquire);
            if reg::state(w) == reg::FREE {
                if let Some(me) = claim(i, w) {
                    return Ok(me);
                }
            }
        }
        // Full: take the slot of a writer that is gone. Positions it had
        // reserved keep its old generation, so the reader skips them.
        for i in 0..self.writers.len() {
            let w = self.writers[i].word.load(Acquire);
            if !self.registered_alive(w, self.writers[i].start.load(Relaxed)) {
                if let Some(me) = claim(i, w) {
                    return Ok(me);
                }
            }
        }
        Err(Error::RegistryFull {
            pool: self.name.into(),
            slots: self.geo.max_writers,
        })
    }

    /// Releases a writer registration.
    pub fn detach_writer(&self, me: Writer) {
        let slot = &self.writers[me.slot as usize];
        let w = slot.word.load(Acquire);
        if reg::gen(w) == me.gen && reg::state(w) == reg::LIVE {
            let _ = slot
                .word
                .compare_exchange(w, reg::word(reg::FREE, me.gen, 0), AcqRel, Relaxed);
        }
    }

    fn registered_alive(&self, w: u64, start: u64) -> bool {
        match reg::state(w) {
            reg::FREE => false,
            // A claim in progress: judge by the pid alone.
            reg::CLAIMING => self.p.is_alive(Identity {
                pid: reg::pid(w),
                start: 0,
            }),
            reg::LIVE => self.p.is_alive(Identity {
                pid: reg::pid(w),
                start,
            }),
            _ => false,
        }
    }

    /// Whether writer `w` (at that generation) still runs.
    fn writer_alive(&self, w: Writer) -> bool {
        let Some(slot) = self.writers.get(w.slot as usize) else {
            return false;
        };
        let word = slot.word.load(Acquire);
        reg::gen(word) == w.gen && self.registered_alive(word, slot.start.load(Relaxed))
    }

    /// Takes the reader role for `who`: free, or held by a process that is
    /// gone. Returns the registration's generation.
    pub fn claim_reader(&self, who: Identity) -> Result<u16> {
        let w = self.reader.load(Acquire);
        if reg::state(w) != reg::FREE && self.registered_alive(w, self.reader_start.load(Relaxed)) {
            return Err(Error::Access {
                ring: self.name.into(),
                mode: "read by another process",
                op: "read",
            });
        }
        let gen = (reg::gen(w) + 1) & 0xFFF;
        self.reader
            .compare_exchange(w, reg::word(reg::CLAIMING, gen, who.pid), AcqRel, Relaxed)
            .map_err(|_| Error::Access {
                ring: self.name.into(),
                mode: "read by another process",
                op: "read",
            })?;
        self.reader_start.store(who.start, Relaxed);
        self.reader
            .store(reg::word(reg::LIVE, gen, who.pid), Release);
        Ok(gen)
    }

    /// Gives the reader role up.
    pub fn release_reader(&self, gen: u16) {
        let w = self.reader.load(Acquire);
        if reg::gen(w) == gen && reg::state(w) == reg::LIVE {
            let _ = self
                .reader
                .compare_exchange(w, reg::word(reg::FREE, gen, 0), AcqRel, Relaxed);
        }
    }

    /// Whether a live process holds the reader role.
    pub fn reader_alive(&self) -> bool {
        let w = self.reader.load(Acquire);
        self.registered_alive(w, self.reader_start.load(Relaxed))
    }

    /// The pid of the registered reader, if any.
    pub fn reader_pid(&self) -> Option<u32> {
        let w = self.reader.load(Acquire);
        (reg::state(w) != reg::FREE).then(|| reg::pid(w))
    }

    /// One write attempt: `Ok(false)` when the ring is full.
    pub fn try_write(&self, me: Writer, value: u64) -> Result<bool> {
        let cap = u64::from(self.geo.capacity);
        for _ in 0..MAX_ATTEMPTS {
            let mode = self.mode();
            if mode != access::READ_WRITE {
                return Err(self.denied(mode, "write"));
            }
            let t = self.tail.load(Acquire);
            let slot = self.slot(t);
            // SeqCst: a writer that found the ring full and announced itself
            // must see a slot the reader freed (see "Blocking").
            let s = Seq(slot.seq.load(SeqCst));
            let pos = t & POS;
            if s == Seq::free(pos) {
                if slot
                    .seq
                    .compare_exchange(s.0, Seq::reserved(pos, me).0, AcqRel, Relaxed)
                    .is_err()
                {
                    continue;
                }
                let _ = self
                    .tail
                    .compare_exchange(t, t.wrapping_add(1), AcqRel, Relaxed);
                self.p.step(Step::Reserved);
                slot.value.store(value, Relaxed);
                // Release: the value is visible to whoever sees PUBLISHED.
                // SeqCst: see "Blocking". A compare-and-swap rather than a
                // store: if a reader took this writer for dead and skipped
                // the position, the value was not delivered; write it again.
                if slot
                    .seq
                    .compare_exchange(
                        Seq::reserved(pos, me).0,
                        Seq::published(pos).0,
                        SeqCst,
                        Relaxed,
                    )
                    .is_err()
                {
                    continue;
                }
                wake::wake(self.p, self.data);
                return Ok(true);
            }
            if s.pos() == pos {
                // Someone else has position t: help the tail along.
                let _ = self
                    .tail
                    .compare_exchange(t, t.wrapping_add(1), AcqRel, Relaxed);
                continue;
            }
            if s.pos() == t.wrapping_sub(cap) & POS {
                // The previous lap's value is still there.
                if self.tail.load(Acquire) == t {
                    return Ok(false);
                }
                continue;
            }
            // The tail moved on since we read it (re-read), or the slot
            // holds what no writer or reader leaves.
            if self.tail.load(Acquire) == t {
                return Err(self.corrupted(format!(
                    "slot of position {t} holds {s:?}, which no writer or reader leaves"
                )));
            }
        }
        Err(self.corrupted("the tail and the slots disagree for too long".into()))
    }

    /// One read attempt by the reader.
    pub fn try_read(&self) -> Result<Read> {
        let cap = u64::from(self.geo.capacity);
        for _ in 0..MAX_ATTEMPTS {
            // Only the reader writes the head.
            let h = self.head.load(Acquire);
            let pos = h & POS;
            let slot = self.slot(h);
            // SeqCst: see "Blocking".
            let s = Seq(slot.seq.load(SeqCst));
            if s == Seq::published(pos) {
                let value = slot.value.load(Relaxed);
                self.p.step(Step::Consumed);
                // SeqCst: a writer waiting for space must see this slot free.
                slot.seq.store(Seq::free(h.wrapping_add(cap)).0, SeqCst);
                self.head.store(h.wrapping_add(1), Release);
                wake::wake(self.p, self.space);
                return Ok(Read::Value(value));
            }
            if s == Seq::free(pos) {
                return Ok(Read::Empty);
            }
            if s.state() == state::RESERVED && s.pos() == pos {
                if self.writer_alive(s.writer()) {
                    return Ok(Read::InProgress);
                }
                // Its writer died mid-write: skip the position.
                if slot
                    .seq
                    .compare_exchange(s.0, Seq::free(h.wrapping_add(cap)).0, SeqCst, Relaxed)
                    .is_ok()
                {
                    self.head.store(h.wrapping_add(1), Release);
                    wake::wake(self.p, self.space);
                }
                continue;
            }
            if s == Seq::free(h.wrapping_add(cap)) {
                // A previous reader took the value and died before it
                // advanced the head.
                self.head.store(h.wrapping_add(1), Release);
                continue;
            }
            return Err(self.corrupted(format!(
                "slot of position {h} holds {s:?}, which no writer or reader leaves"
            )));
        }
        Err(self.corrupted("the reader skipped too many positions".into()))
    }

    /// Reads a value, sleeping while the ring is empty, for at most
    /// `timeout` (`None`: no limit). Fails with `FlowDown`/`PeerGone` once
    /// such a ring is drained.
    pub fn read(&self, timeout: Option<Duration>) -> Result<u64> {
        if let Read::Value(v) = self.try_read()? {
            return Ok(v);
        }
        if timeout.is_some_and(|t| t.is_zero()) {
            return self.read_now_or_fail(timeout);
        }
        // A writer is often just about to publish: spin a little before
        // paying for a sleep and a wake-up.
        for _ in 0..SPINS {
            self.p.relax(4);
            if let Read::Value(v) = self.try_read()? {
                return Ok(v);
            }
        }
        let deadline = self.p.deadline(timeout);
        loop {
            match self.try_read()? {
                Read::Value(v) => return Ok(v),
                Read::Empty => {
                    let mode = self.mode();
                    if mode == access::FLOW_DOWN || mode == access::PEER_GONE {
                        return Err(self.denied(mode, "read"));
                    }
                }
                Read::InProgress => {}
            }
            if self.p.expired(deadline) {
                return Err(self.empty_or_timeout(timeout));
            }
            let seen = wake::announce::<P>(self.data);
            let again = self.try_read()?;
            let until = match again {
                Read::Value(v) => return Ok(v),
                Read::InProgress => self
                    .p
                    .sooner(deadline, self.p.deadline(Some(IN_PROGRESS_SLICE))),
                Read::Empty => {
                    let mode = self.mode();
                    if mode == access::FLOW_DOWN || mode == access::PEER_GONE {
                        return Err(self.denied(mode, "read"));
                    }
                    deadline
                }
            };
            self.p.wait(self.data, seen, until);
        }
    }

    /// A non-blocking read that found nothing: the right error.
    fn read_now_or_fail(&self, timeout: Option<Duration>) -> Result<u64> {
        match self.try_read()? {
            Read::Value(v) => Ok(v),
            _ => {
                let mode = self.mode();
                if mode == access::FLOW_DOWN || mode == access::PEER_GONE {
                    Err(self.denied(mode, "read"))
                } else {
                    Err(self.empty_or_timeout(timeout))
                }
            }
        }
    }

    fn empty_or_timeout(&self, timeout: Option<Duration>) -> Error {
        match timeout {
            Some(t) if !t.is_zero() => Error::Timeout {
                name: self.name.into(),
                waited: t,
            },
            _ => Error::Empty {
                ring: self.name.into(),
            },
        }
    }

    /// Writes a value, sleeping while the ring is full, for at most
    /// `timeout` (`None`: no limit).
    pub fn write(&self, me: Writer, value: u64, timeout: Option<Duration>) -> Result<()> {
        if self.try_write(me, value)? {
            return Ok(());
        }
        for _ in 0..SPINS {
            self.p.relax(4);
            if self.try_write(me, value)? {
                return Ok(());
            }
        }
        let deadline = self.p.deadline(timeout);
        loop {
            if self.try_write(me, value)? {
                return Ok(());
            }
            if self.p.expired(deadline) {
                return Err(match timeout {
                    Some(t) if !t.is_zero() => Error::Timeout {
                        name: self.name.into(),
                        waited: t,
                    },
                    _ => Error::Full {
                        ring: self.name.into(),
                        capacity: self.geo.capacity,
                    },
                });
            }
            let seen = wake::announce::<P>(self.space);
            if self.try_write(me, value)? {
                return Ok(());
            }
            self.p.wait(self.space, seen, deadline);
        }
    }

    /// Waits until everything queued has been read.
    pub fn drained(&self, timeout: Option<Duration>) -> Result<()> {
        let deadline = self.p.deadline(timeout);
        loop {
            if self.queued() == 0 {
                return Ok(());
            }
            if self.p.expired(deadline) {
                return Err(Error::Timeout {
                    name: self.name.into(),
                    waited: timeout.unwrap_or_default(),
                });
            }
            let seen = wake::announce::<P>(self.space);
            if self.queued() == 0 {
                return Ok(());
            }
            self.p.wait(self.space, seen, deadline);
        }
    }
}
