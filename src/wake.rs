//! The waiters-bit protocol on a futex word, shared by blocking allocation
//! and the ring.
//!
//! A word's bit 31 ([`WAITERS`]) says someone may be asleep on it; bits
//! 0..31 count wake-ups. A sleeper sets the bit with a fetch-or (which also
//! reads the word), re-checks its condition, and sleeps only while the word
//! still equals what the fetch-or returned (with the bit). Whoever makes the
//! condition true reads the word afterwards; if the bit is set it clears it,
//! bumps the count and wakes every sleeper. Both sides use sequentially
//! consistent operations on the word and on whatever their condition reads,
//! so either the waker sees the bit or the sleeper's re-check sees the
//! change: no wake-up is lost. Waking every sleeper means one killed after
//! its wake-up cannot swallow it; a sleeper killed in its sleep leaves the
//! bit set, which costs the next waker one needless wake and then clears.

use std::sync::atomic::Ordering::SeqCst;

use crate::platform::{Atomic32, Platform, Step};

/// Bit 31 of a wake word: someone may be asleep on it.
pub const WAITERS: u32 = 1 << 31;

/// Attempts before a waker gives up on a word that keeps changing (each
/// failure means another waker got there first).
const MAX_ATTEMPTS: u32 = 1 << 20;

/// Announces that the caller is about to sleep on `word`; returns the value
/// to pass to [`Platform::wait`] after re-checking the condition.
#[inline]
pub fn announce<P: Platform>(word: &P::U32) -> u32 {
    word.fetch_or(WAITERS, SeqCst) | WAITERS
}

/// Whether someone may be asleep on `word`.
#[inline]
pub fn has_waiters<P: Platform>(word: &P::U32) -> bool {
    word.load(SeqCst) & WAITERS != 0
}

/// Wakes every sleeper on `word` if the waiters bit is set. Call it after
/// making the sleepers' condition true (with a sequentially consistent
/// operation).
pub fn wake<P: Platform>(p: &P, word: &P::U32) {
    let mut w = word.load(SeqCst);
    for _ in 0..MAX_ATTEMPTS {
        if w & WAITERS == 0 {
            return;
        }
        p.step(Step::BeforeWake);
        let next = (w & !WAITERS).wrapping_add(1) & !WAITERS;
        match word.compare_exchange(w, next, SeqCst, SeqCst) {
            Ok(_) => {
                p.wake_all(word);
                return;
            }
            Err(now) => w = now,
        }
    }
}

/// Wakes every sleeper on `word` whether or not the bit is set (for
/// changes every sleeper must see at once, such as a flow going down).
pub fn wake_all<P: Platform>(p: &P, word: &P::U32) {
    // A carry into the waiters bit only costs a needless wake later.
    word.fetch_add(1, SeqCst);
    p.wake_all(word);
}
