//! The ring's algorithm under Shuttle against a FIFO model (no loss, no
//! duplication, each writer's order kept), with writers that die mid-write,
//! and under simulated processes for the exact crash windows.

use std::collections::HashMap;
use std::time::Duration;

use super::shuttle_os::{explore, may_die, ShuttleOs};
use crate::error::Error;
use crate::platform::{Identity, Platform, Step};
use crate::ring::layout::HeapRing;
use crate::ring::queue::{access, Read};
use crate::testing::sim::{crash_after, survive, SimOs};

fn value(writer: u32, seq: u32) -> u64 {
    (u64::from(writer) << 32) | u64::from(seq)
}

/// Checks a read sequence against the FIFO model: per writer, values come
/// in order, without duplicates; returns how many each writer delivered.
fn check_fifo(read: &[u64]) -> HashMap<u32, u32> {
    let mut next: HashMap<u32, u32> = HashMap::new();
    for &v in read {
        let (w, s) = ((v >> 32) as u32, v as u32);
        let n = next.entry(w).or_insert(0);
        assert!(
            s >= *n,
            "writer {w}: value {s} after {} (duplicate or reordered)",
            *n - 1
        );
        // A gap is only allowed where a writer died mid-write (checked by
        // the caller).
        *n = s + 1;
    }
    next
}

#[test]
fn writers_and_a_reader_keep_fifo_order_without_loss() {
    for capacity in [2, 4] {
        explore(move || {
            let os = ShuttleOs::default();
            let ring = HeapRing::<ShuttleOs>::new(capacity, 4).unwrap();
            let view = ring.view(&os, "ring");
            let per = 4u32;
            let os = &os;
            let read = shuttle::thread::scope(|s| {
                for w in 0..2u32 {
                    s.spawn(move || {
                        let who = Identity {
                            pid: 10 + w,
                            start: 1,
                        };
                        os.become_process(who);
                        let me = view.attach_writer(who).unwrap();
                        for i in 0..per {
                            view.write(me, value(w, i), None).unwrap();
                        }
                    });
                }
                let reader = s.spawn(move || {
                    view.claim_reader(Identity { pid: 1, start: 1 }).unwrap();
                    (0..2 * per)
                        .map(|_| view.read(None).unwrap())
                        .collect::<Vec<_>>()
                });
                reader.join().unwrap()
            });
            let delivered = check_fifo(&read);
            assert_eq!(delivered, HashMap::from([(0, per), (1, per)]));
            assert_eq!(view.queued(), 0);
        });
    }
}

#[test]
fn a_writer_dying_mid_write_does_not_wedge_the_reader() {
    explore(|| {
        let os = ShuttleOs::default();
        let ring = HeapRing::<ShuttleOs>::new(4, 4).unwrap();
        let view = ring.view(&os, "ring");
        let per = 3u32;
        let dead = std::sync::atomic::AtomicU32::new(u32::MAX);
        let finished = std::sync::atomic::AtomicU32::new(0);
        let read = shuttle::thread::scope(|s| {
            for w in 0..2u32 {
                let (os, dead) = (&os, &dead);
                let finished = &finished;
                s.spawn(move || {
                    let who = Identity {
                        pid: 10 + w,
                        start: 1,
                    };
                    os.become_process(who);
                    let me = view.attach_writer(who).unwrap();
                    if w == 0 {
                        os.mortal(3);
                    }
                    let done = may_die(|| {
                        for i in 0..per {
                            view.write(me, value(w, i), None).unwrap();
                        }
                    });
                    if done.is_none() {
                        dead.store(w, std::sync::atomic::Ordering::SeqCst);
                        os.bury(who);
                    }
                    finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
            let (os, finished) = (&os, &finished);
            let reader = s.spawn(move || {
                view.claim_reader(Identity { pid: 1, start: 1 }).unwrap();
                let mut got = Vec::new();
                // Read until both writers finished or died and nothing is
                // left: a dead writer's reservation must not wedge this.
                loop {
                    let done = finished.load(std::sync::atomic::Ordering::SeqCst) == 2;
                    match view.try_read().unwrap() {
                        Read::Value(v) => got.push(v),
                        Read::Empty if done => break,
                        Read::Empty | Read::InProgress => os.relax(0),
                    }
                }
                got
            });
            reader.join().unwrap()
        });
        let delivered = check_fifo(&read);
        assert_eq!(delivered.get(&1), Some(&per), "the survivor lost values");
        if dead.load(std::sync::atomic::Ordering::SeqCst) != 0 {
            assert_eq!(delivered.get(&0).copied().unwrap_or(0), per);
        }
        assert_eq!(view.queued(), 0);
    });
}

#[test]
fn flow_down_wakes_a_blocked_reader_and_writer() {
    explore(|| {
        let os = ShuttleOs::default();
        let ring = HeapRing::<ShuttleOs>::new(2, 2).unwrap();
        let view = ring.view(&os, "ring");
        let me = view.attach_writer(Identity { pid: 2, start: 1 }).unwrap();
        shuttle::thread::scope(|s| {
            s.spawn(move || {
                view.claim_reader(Identity { pid: 1, start: 1 }).unwrap();
                let mut n = 0;
                loop {
                    match view.read(None) {
                        Ok(_) => n += 1,
                        Err(Error::FlowDown { .. }) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                assert!(n <= 3);
            });
            s.spawn(move || {
                for i in 0..3 {
                    match view.write(me, i, None) {
                        Ok(()) => {}
                        Err(Error::FlowDown { .. }) => return,
                        Err(e) => panic!("{e}"),
                    }
                }
            });
            s.spawn(move || view.set_mode(access::FLOW_DOWN));
        });
    });
}

/// Exact crash windows with simulated processes: a writer stopped at the
/// reservation leaves the reader to skip its position once it is judged
/// dead; a reader stopped after taking a value lets the next reader go on.
#[test]
fn crash_windows_of_the_ring() {
    let os = SimOs::default();
    let ring = HeapRing::<SimOs>::new(4, 4).unwrap();
    let view = ring.view(&os, "ring");
    let writer = Identity { pid: 10, start: 1 };
    os.start(writer);
    let w = view.attach_writer(writer).unwrap();
    view.try_write(w, 1).unwrap();
    crash_after(Some(1));
    let step = survive(|| view.try_write(w, 2).unwrap());
    assert!(step.is_none(), "the writer stops at the reservation");
    let _ = Step::Reserved;
    let reader = Identity { pid: 1, start: 1 };
    os.start(reader);
    view.claim_reader(reader).unwrap();
    assert_eq!(view.try_read().unwrap(), Read::Value(1));
    // Its writer still runs: a write in progress.
    assert_eq!(view.try_read().unwrap(), Read::InProgress);
    os.kill(writer);
    // Judged dead: the position is skipped.
    assert_eq!(view.try_read().unwrap(), Read::Empty);
    // A new writer takes over; the ring works on.
    let other = Identity { pid: 11, start: 1 };
    os.start(other);
    let w2 = view.attach_writer(other).unwrap();
    view.try_write(w2, 3).unwrap();
    view.try_write(w2, 4).unwrap();
    // The reader dies right after taking a value.
    crash_after(Some(1));
    assert!(survive(|| view.try_read().unwrap()).is_none());
    os.kill(reader);
    let next = Identity { pid: 2, start: 1 };
    os.start(next);
    view.claim_reader(next).unwrap();
    // The value it took never left it: the next reader gets it again.
    assert_eq!(view.try_read().unwrap(), Read::Value(3));
    assert_eq!(view.try_read().unwrap(), Read::Value(4));
    assert_eq!(view.try_read().unwrap(), Read::Empty);
    assert_eq!(view.queued(), 0);
    let _ = view.read(Some(Duration::from_millis(1)));
}
