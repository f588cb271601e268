//! The C design's offset ring: a shared memory ring of `u64` slots with
//! head and tail indices, serialised by one robust process-shared mutex,
//! with two condition variables for the blocking calls.
//!
//! Layout of the shared memory object: `capacity` slots of 8 bytes from
//! offset 0, then the [`RingHdr`] (indices, access word, mutex, condvars,
//! and the capacity, magic and ready flag an opener needs), as in the C
//! ring, whose control words follow its slots.
//!
//! Indices wrap modulo the capacity and the ring counts as full when
//! `capacity - 1` slots are used (head one behind tail), as in C: a ring of
//! capacity 1024 holds 1023 values.

use std::io;
use std::mem::size_of;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

use super::shm::{self, Mapping};
use super::sync::{self, ShmCond, ShmMutex, Wake};
use super::Variant;

/// Slots of the C ring (`SSM_RBUFF_SIZE`).
pub const DEFAULT_RING_CAPACITY: u32 = 1024;
/// First word of the ring's trailer: "CSSMRING".
const MAGIC: u64 = u64::from_le_bytes(*b"CSSMRING");
/// Value of the ready flag once the creator has finished.
const READY: u32 = 0x5245_4459;
/// Access word value: reads and writes allowed (the C `ACL_RDWR`); the
/// only value this baseline uses.
const ACL_RDWR: u64 = 0;

/// The ring's control block, after the slots.
#[repr(C)]
struct RingHdr {
    /// Next slot to write (the C `head`); changed only under `mtx`, stored
    /// with release so that the slot write is visible before it.
    head: AtomicU64,
    /// Next slot to read (the C `tail`); changed only under `mtx`, stored
    /// with release after the slot has been read.
    tail: AtomicU64,
    /// Access control word, checked (sequentially consistent load) at the
    /// start of every write, as in C; always [`ACL_RDWR`] here.
    acl: AtomicU64,
    /// Process-shared robust mutex (priority-inheriting when the creator's
    /// variant says so) taken by every write and every non-empty read.
    mtx: ShmMutex,
    /// Broadcast when a write makes an empty ring non-empty.
    cond_added: ShmCond,
    /// Broadcast after every read.
    cond_removed: ShmCond,
    /// Number of slots, a power of two.
    capacity: AtomicU64,
    /// [`MAGIC`].
    magic: AtomicU64,
    /// [`READY`] once initialised (stored last, with release ordering).
    ready: AtomicU32,
}

/// A handle on a baseline ring: one mapping of its shared object. Dropping
/// it unmaps; the object stays until [`BaselineRing::unlink`].
///
/// Like the C ring it is meant for one reader (the read path checks for
/// emptiness before locking); any number of writers may share it.
pub struct BaselineRing {
    /// The whole object, mapped shared.
    map: Mapping,
    /// Slots in the ring (power of two).
    capacity: u64,
    /// The variant this handle was created or opened with.
    variant: Variant,
}

// SAFETY: the slots and indices are atomics, and every change to them is
// made under the process-shared mutex, which excludes threads as well as
// processes; the handle's own fields are immutable after construction.
unsafe impl Send for BaselineRing {}
// SAFETY: as above.
unsafe impl Sync for BaselineRing {}

impl BaselineRing {
    /// Creates the ring `name` (fails if it exists) with `capacity` slots, a
    /// power of two of at least 2 (it holds `capacity - 1` values). The
    /// mutex is priority-inheriting when `variant.pi` is set.
    pub fn create(name: &str, capacity: u32, variant: Variant) -> io::Result<Self> {
        if capacity < 2 || !capacity.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ring capacity must be a power of two of at least 2",
            ));
        }
        let len = capacity as usize * size_of::<u64>() + size_of::<RingHdr>();
        let map = Mapping::create(name, len)?;
        let ring = BaselineRing {
            map,
            capacity: u64::from(capacity),
            variant,
        };
        if let Err(e) = ring.initialise() {
            drop(ring);
            shm::unlink(name);
            return Err(e);
        }
        Ok(ring)
    }

    /// Initialises the mutex and condvars in place, then publishes the ring
    /// by storing the ready flag.
    fn initialise(&self) -> io::Result<()> {
        let p = self.hdr_ptr();
        // SAFETY: `p` is the aligned header slot inside the mapping, and no
        // one can use the ring before the ready flag is stored below.
        unsafe { ShmMutex::init(std::ptr::addr_of_mut!((*p).mtx), self.variant.pi)? };
        // SAFETY: as above.
        unsafe { ShmCond::init(std::ptr::addr_of_mut!((*p).cond_added))? };
        // SAFETY: as above.
        unsafe { ShmCond::init(std::ptr::addr_of_mut!((*p).cond_removed))? };
        let hdr = self.hdr();
        hdr.head.store(0, Relaxed);
        hdr.tail.store(0, Relaxed);
        hdr.acl.store(ACL_RDWR, Relaxed);
        hdr.capacity.store(self.capacity, Relaxed);
        hdr.magic.store(MAGIC, Relaxed);
        // Release: publishes the initialisation to openers.
        hdr.ready.store(READY, Release);
        Ok(())
    }

    /// Opens the existing ring `name`, waiting (bounded) for its creator to
    /// finish. `variant` is recorded only (the creator fixed the mutex
    /// protocol, and the ring does not use the pid).
    pub fn open(name: &str, variant: Variant) -> io::Result<Self> {
        let map = Mapping::open(name)?;
        let len = map.len();
        let hdr_size = size_of::<RingHdr>();
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "not a baseline ring");
        if len < hdr_size || (len - hdr_size) & (size_of::<u64>() - 1) != 0 {
            return Err(bad());
        }
        let capacity = ((len - hdr_size) / size_of::<u64>()) as u64;
        let ring = BaselineRing {
            map,
            capacity,
            variant,
        };
        let hdr = ring.hdr();
        shm::wait_ready(&hdr.ready, READY)?;
        if hdr.magic.load(Relaxed) != MAGIC
            || hdr.capacity.load(Relaxed) != capacity
            || !capacity.is_power_of_two()
            || capacity < 2
        {
            return Err(bad());
        }
        Ok(ring)
    }

    /// Removes the shared object `name` (mappings stay valid until unmapped).
    pub fn unlink(name: &str) {
        shm::unlink(name);
    }

    /// Raw pointer to the header, right after the slots.
    #[inline]
    fn hdr_ptr(&self) -> *mut RingHdr {
        // SAFETY: the mapping is `capacity × 8 + size_of::<RingHdr>()`
        // bytes, so the header slot is in bounds, and 8-aligned.
        unsafe {
            self.map
                .ptr()
                .add(self.capacity as usize * size_of::<u64>()) as *mut RingHdr
        }
    }

    /// The header.
    #[inline]
    fn hdr(&self) -> &RingHdr {
        // SAFETY: in bounds and aligned (see `hdr_ptr`); the header is
        // atomics and pthread objects behind `UnsafeCell`.
        unsafe { &*self.hdr_ptr() }
    }

    /// Slot `i` (`i < capacity`).
    #[inline]
    fn slot(&self, i: u64) -> &AtomicU64 {
        debug_assert!(i < self.capacity);
        // SAFETY: `i` is reduced modulo the capacity by every caller, so the
        // slot is inside the slot array at the start of the mapping.
        unsafe { &*(self.map.ptr() as *const AtomicU64).add(i as usize) }
    }

    /// `x` modulo the capacity.
    #[inline]
    fn modb(&self, x: u64) -> u64 {
        x & (self.capacity - 1)
    }

    /// Whether the ring holds `capacity - 1` values (indices read with
    /// acquire, as the C macros do).
    #[inline]
    fn is_full(&self, hdr: &RingHdr) -> bool {
        self.modb(hdr.head.load(Acquire).wrapping_sub(hdr.tail.load(Acquire))) == self.capacity - 1
    }

    /// Whether the ring is empty.
    #[inline]
    fn is_empty(hdr: &RingHdr) -> bool {
        hdr.head.load(Acquire) == hdr.tail.load(Acquire)
    }

    /// Stores `v` at the head and advances it; broadcasts `cond_added` if
    /// the ring was empty. Mutex held, ring not full.
    #[inline]
    fn push_locked(&self, hdr: &RingHdr, v: u64) {
        let was_empty = Self::is_empty(hdr);
        let head = hdr.head.load(Relaxed);
        self.slot(head).store(v, Relaxed);
        // Release: the slot store above is visible to whoever sees the new
        // head.
        hdr.head.store(self.modb(head + 1), Release);
        if was_empty {
            hdr.cond_added.broadcast();
        }
    }

    /// Takes the value at the tail and advances it; broadcasts
    /// `cond_removed`. Mutex held, ring not empty.
    #[inline]
    fn pop_locked(&self, hdr: &RingHdr) -> u64 {
        let tail = hdr.tail.load(Relaxed);
        let v = self.slot(tail).load(Relaxed);
        // Release: the slot was read before it can be reused by a writer.
        hdr.tail.store(self.modb(tail + 1), Release);
        hdr.cond_removed.broadcast();
        v
    }

    /// Writes `v` without blocking; false when the ring is full.
    pub fn write(&self, v: u64) -> bool {
        let hdr = self.hdr();
        if hdr.acl.load(SeqCst) != ACL_RDWR {
            return false;
        }
        let _guard = hdr.mtx.lock();
        if self.is_full(hdr) {
            return false;
        }
        self.push_locked(hdr, v);
        true
    }

    /// Writes `v`, waiting on `cond_removed` while the ring is full, until
    /// `timeout` (`None`: forever); false on timeout.
    pub fn write_b(&self, v: u64, timeout: Option<Duration>) -> bool {
        let hdr = self.hdr();
        if hdr.acl.load(SeqCst) != ACL_RDWR {
            return false;
        }
        let deadline = timeout.map(sync::deadline_after);
        let mut guard = hdr.mtx.lock();
        while self.is_full(hdr) {
            if hdr.cond_removed.wait(&mut guard, deadline.as_ref()) == Wake::TimedOut {
                return false;
            }
        }
        self.push_locked(hdr, v);
        true
    }

    /// Reads the oldest value without blocking; `None` when empty. The
    /// emptiness test is made before locking, as in C, and again under the
    /// lock.
    pub fn read(&self) -> Option<u64> {
        let hdr = self.hdr();
        if Self::is_empty(hdr) {
            return None;
        }
        let _guard = hdr.mtx.lock();
        if Self::is_empty(hdr) {
            return None;
        }
        Some(self.pop_locked(hdr))
    }

    /// Reads the oldest value, waiting on `cond_added` while the ring is
    /// empty, until `timeout` (`None`: forever); `None` on timeout.
    pub fn read_b(&self, timeout: Option<Duration>) -> Option<u64> {
        let hdr = self.hdr();
        let deadline = timeout.map(sync::deadline_after);
        let mut guard = hdr.mtx.lock();
        while Self::is_empty(hdr) {
            if hdr.cond_added.wait(&mut guard, deadline.as_ref()) == Wake::TimedOut {
                return None;
            }
        }
        Some(self.pop_locked(hdr))
    }

    /// Values currently queued (read without the lock).
    pub fn queued(&self) -> u64 {
        let hdr = self.hdr();
        self.modb(hdr.head.load(Acquire).wrapping_sub(hdr.tail.load(Acquire)))
    }

    /// Number of slots (the ring holds one value fewer).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Size of the shared memory object (and of this handle's mapping).
    pub fn mapped_size(&self) -> usize {
        self.map.len()
    }

    /// This handle's variant.
    pub fn variant(&self) -> Variant {
        self.variant
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{self, TestName};
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    /// A fresh object name for `tag`, unlinked when dropped.
    fn name(tag: &str) -> TestName {
        TestName::new(tag, BaselineRing::unlink)
    }

    #[test]
    fn fifo_full_and_empty() {
        for v in [Variant::SHIPPED, Variant::BEST] {
            let n = name("fifo");
            let ring = BaselineRing::create(&n.name, 8, v).expect("create");
            assert_eq!(ring.read(), None);
            for round in 0..3u64 {
                for i in 0..7 {
                    assert!(ring.write(round * 100 + i), "write {i}");
                }
                assert!(!ring.write(999), "full after capacity - 1 values");
                assert_eq!(ring.queued(), 7);
                for i in 0..7 {
                    assert_eq!(ring.read(), Some(round * 100 + i));
                }
                assert_eq!(ring.read(), None);
            }
        }
    }

    #[test]
    fn default_capacity_holds_1023() {
        let n = name("cap");
        let ring =
            BaselineRing::create(&n.name, DEFAULT_RING_CAPACITY, Variant::SHIPPED).expect("create");
        let mut written = 0;
        while ring.write(written) {
            written += 1;
        }
        assert_eq!(written, 1023);
        for i in 0..written {
            assert_eq!(ring.read(), Some(i));
        }
    }

    #[test]
    fn bad_capacity_rejected() {
        let n = name("badcap");
        assert!(BaselineRing::create(&n.name, 1000, Variant::BEST).is_err());
        assert!(BaselineRing::create(&n.name, 1, Variant::BEST).is_err());
    }

    #[test]
    fn blocking_read_woken_by_write_from_another_thread() {
        for v in [Variant::SHIPPED, Variant::BEST] {
            let n = name("rb");
            let ring = Arc::new(BaselineRing::create(&n.name, 16, v).expect("create"));
            let reader = {
                let ring = Arc::clone(&ring);
                std::thread::spawn(move || {
                    let start = Instant::now();
                    (ring.read_b(Some(Duration::from_secs(10))), start.elapsed())
                })
            };
            std::thread::sleep(Duration::from_millis(100));
            assert!(ring.write(42));
            let (got, took) = reader.join().expect("reader");
            assert_eq!(got, Some(42));
            assert!(took < Duration::from_secs(5), "woken late: {took:?}");
        }
    }

    #[test]
    fn blocking_timeouts() {
        let n = name("rto");
        let ring = BaselineRing::create(&n.name, 4, Variant::SHIPPED).expect("create");
        let t = Duration::from_millis(120);
        let start = Instant::now();
        assert_eq!(ring.read_b(Some(t)), None);
        let took = start.elapsed();
        assert!(
            took >= t && took < t + Duration::from_millis(500),
            "{took:?}"
        );
        for i in 0..3 {
            assert!(ring.write_b(i, Some(t)));
        }
        let start = Instant::now();
        assert!(!ring.write_b(3, Some(t)));
        let took = start.elapsed();
        assert!(
            took >= t && took < t + Duration::from_millis(500),
            "{took:?}"
        );
    }

    #[test]
    fn blocking_write_woken_by_read() {
        let n = name("wb");
        let ring = Arc::new(BaselineRing::create(&n.name, 2, Variant::BEST).expect("create"));
        assert!(ring.write(1));
        let writer = {
            let ring = Arc::clone(&ring);
            std::thread::spawn(move || ring.write_b(2, Some(Duration::from_secs(10))))
        };
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(ring.read(), Some(1));
        assert!(writer.join().expect("writer"));
        assert_eq!(ring.read_b(Some(Duration::from_secs(1))), Some(2));
    }

    #[test]
    fn threaded_writers_one_reader() {
        let n = name("mw");
        let ring = Arc::new(BaselineRing::create(&n.name, 16, Variant::SHIPPED).expect("create"));
        let writers: Vec<_> = (0..3u64)
            .map(|w| {
                let ring = Arc::clone(&ring);
                std::thread::spawn(move || {
                    for i in 0..1000u64 {
                        assert!(ring.write_b(w << 32 | i, Some(Duration::from_secs(10))));
                    }
                })
            })
            .collect();
        let mut next = [0u64; 3];
        for _ in 0..3000 {
            let v = ring.read_b(Some(Duration::from_secs(10))).expect("value");
            let (w, i) = ((v >> 32) as usize, v & 0xffff_ffff);
            assert_eq!(i, next[w], "per-writer order");
            next[w] += 1;
        }
        for w in writers {
            w.join().expect("writer");
        }
        assert_eq!(ring.read(), None);
    }

    #[test]
    fn across_fork_and_open() {
        let n = name("xp");
        let ring = BaselineRing::create(&n.name, 8, Variant::SHIPPED).expect("create");
        let other = BaselineRing::open(&n.name, Variant::BEST).expect("open");
        assert_eq!(other.capacity(), 8);
        assert_eq!(other.mapped_size(), ring.mapped_size());
        let child = test_util::fork_child(|| {
            for i in 0..100u64 {
                if !ring.write_b(i * 3, Some(Duration::from_secs(10))) {
                    return 1;
                }
            }
            0
        });
        for i in 0..100u64 {
            assert_eq!(other.read_b(Some(Duration::from_secs(10))), Some(i * 3));
        }
        assert_eq!(test_util::wait_child(child), 0);
        assert_eq!(ring.read(), None);
        let missing = name("xp-missing");
        assert!(BaselineRing::open(&missing.name, Variant::BEST).is_err());
    }
}
