//! The layout of a ring segment and the typed view the algorithm works on.
//!
//! | offset | size | contents |
//! |---|---|---|
//! | 0 | 256 | [`RingHeader`]: identity, readiness, geometry, access word, reader registration |
//! | 256 | 128 | tail (next position a writer reserves) |
//! | 384 | 128 | head (next position the reader reads) |
//! | 512 | 128 | data wake word (the reader sleeps on it) |
//! | 640 | 128 | space wake word (writers sleep on it) |
//! | 768 | 16 × writers | writer registry |
//! | 64-aligned | 16 × capacity | slots: sequence word, value |

use std::mem::{offset_of, size_of};
use std::sync::atomic::Ordering::Relaxed;

use crossbeam_utils::CachePadded;

use crate::error::{Error, Result};
use crate::platform::{Atomic32, Atomic64, Os, Platform};

/// "SSMRING" and a format byte.
pub const RING_MAGIC: u64 = u64::from_le_bytes(*b"SSMRING\x01");
/// Layout version of rings.
pub const RING_VERSION: u32 = 1;
/// Header size.
pub const RING_HEADER: usize = 256;
/// The most writers a ring registers at once (writer numbers are 10 bits
/// in a slot's sequence word).
pub const MAX_WRITERS: u32 = 1023;
/// The largest capacity.
pub const MAX_CAPACITY: u32 = 1 << 24;

/// The ring header. Written once by the creator before `ready`; afterwards
/// only `access` and the reader registration change.
#[repr(C)]
pub struct RingHeader<P: Platform> {
    /// [`RING_MAGIC`].
    pub magic: P::U64,
    /// [`RING_VERSION`].
    pub version: P::U32,
    /// 0 while initialising, [`crate::layout::READY`] after; a futex word.
    pub ready: P::U32,
    /// Slots (a power of two).
    pub capacity: P::U32,
    /// Writer registry slots.
    pub max_writers: P::U32,
    /// Bytes the layout uses.
    pub total_size: P::U64,
    /// Access mode (see [`crate::ring::Access`]).
    pub access: P::U32,
    /// Creator pid.
    pub creator_pid: P::U32,
    /// Creator start time.
    pub creator_start: P::U64,
    /// Reader registration: pid << 32 | generation << 8 | state.
    pub reader: P::U64,
    /// The reader's start time.
    pub reader_start: P::U64,
    /// [`crate::layout::ARCH`].
    pub arch: P::U32,
    /// Permission bits requested at creation.
    pub mode: P::U32,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_ns: P::U64,
    /// Reserved, zero.
    pub reserved: [P::U64; 22],
}

/// One writer registration.
#[repr(C)]
pub struct WriterSlot<P: Platform> {
    /// pid << 32 | generation << 8 | state (0 free, 1 claiming, 2 live).
    pub word: P::U64,
    /// The writer's start time.
    pub start: P::U64,
}

/// One slot: the sequence word and the value it guards.
#[repr(C)]
pub struct RingSlot<P: Platform> {
    /// Position, state and reserving writer (see [`crate::ring::queue`]).
    pub seq: P::U64,
    /// The value written at that position.
    pub value: P::U64,
}

const _: () = {
    assert!(size_of::<RingHeader<Os>>() == RING_HEADER);
    assert!(offset_of!(RingHeader<Os>, access) == 32);
    assert!(offset_of!(RingHeader<Os>, reader) == 48);
    assert!(size_of::<WriterSlot<Os>>() == 16);
    assert!(size_of::<RingSlot<Os>>() == 16);
    assert!(size_of::<CachePadded<u64>>() == 128 || size_of::<CachePadded<u64>>() == 64);
};

/// The validated, process-local geometry of a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingGeometry {
    /// Slots.
    pub capacity: u32,
    /// Writer registry slots.
    pub max_writers: u32,
    /// Offset of the tail.
    pub off_tail: u64,
    /// Offset of the head.
    pub off_head: u64,
    /// Offset of the data wake word.
    pub off_data: u64,
    /// Offset of the space wake word.
    pub off_space: u64,
    /// Offset of the writer registry.
    pub off_writers: u64,
    /// Offset of the slots.
    pub off_slots: u64,
    /// Bytes used.
    pub total_size: u64,
}

impl RingGeometry {
    /// The layout for `capacity` slots and `max_writers` writers.
    pub fn new(capacity: u32, max_writers: u32) -> Result<Self> {
        if !capacity.is_power_of_two() || !(2..=MAX_CAPACITY).contains(&capacity) {
            return Err(Error::InvalidConfig {
                detail: format!(
                    "ring capacity {capacity}: choose a power of two from 2 to {MAX_CAPACITY}"
                ),
            });
        }
        if !(1..=MAX_WRITERS).contains(&max_writers) {
            return Err(Error::InvalidConfig {
                detail: format!("{max_writers} ring writers: choose 1 to {MAX_WRITERS}"),
            });
        }
        let pad = size_of::<CachePadded<u64>>() as u64;
        let off_tail = RING_HEADER as u64;
        let off_head = off_tail + pad;
        let off_data = off_head + pad;
        let off_space = off_data + pad;
        let off_writers = off_space + pad;
        let off_slots = (off_writers + 16 * u64::from(max_writers)).div_ceil(64) * 64;
        let total_size = (off_slots + 16 * u64::from(capacity)).div_ceil(4096) * 4096;
        Ok(Self {
            capacity,
            max_writers,
            off_tail,
            off_head,
            off_data,
            off_space,
            off_writers,
            off_slots,
            total_size,
        })
    }

    /// Reads and checks the header of a ring segment of `len` bytes.
    pub fn read(name: &str, hdr: &RingHeader<Os>, len: u64) -> Result<Self> {
        let mismatch = |detail: String| Error::LayoutMismatch {
            name: name.into(),
            detail,
        };
        let magic = hdr.magic.load(Relaxed);
        if magic != RING_MAGIC {
            return Err(mismatch(format!(
                "no ring magic number (found {magic:#018x}); it is not a ring of this library"
            )));
        }
        let version = hdr.version.load(Relaxed);
        if version != RING_VERSION {
            return Err(mismatch(format!(
                "ring layout version {version}, this library reads version {RING_VERSION}"
            )));
        }
        let arch = hdr.arch.load(Relaxed);
        if arch != crate::layout::ARCH {
            return Err(mismatch(format!(
                "laid out for another architecture ({arch:#x})"
            )));
        }
        let geo = Self::new(hdr.capacity.load(Relaxed), hdr.max_writers.load(Relaxed))
            .map_err(|e| mismatch(format!("the recorded geometry is invalid: {e}")))?;
        let size = hdr.total_size.load(Relaxed);
        if size != geo.total_size {
            return Err(mismatch(format!(
                "total size is {size}, the layout needs {}",
                geo.total_size
            )));
        }
        if geo.total_size > len {
            return Err(mismatch(format!(
                "the layout needs {} bytes but the object has {len}; it was truncated",
                geo.total_size
            )));
        }
        Ok(geo)
    }
}

/// The typed view of a ring.
pub struct RingView<'a, P: Platform> {
    /// The platform.
    pub p: &'a P,
    /// Name, for errors.
    pub name: &'a str,
    /// Geometry.
    pub geo: RingGeometry,
    /// The header's access word.
    pub access: &'a P::U32,
    /// The reader registration word.
    pub reader: &'a P::U64,
    /// The reader's start time.
    pub reader_start: &'a P::U64,
    /// Next position a writer reserves.
    pub tail: &'a P::U64,
    /// Next position the reader reads.
    pub head: &'a P::U64,
    /// Futex word the reader sleeps on.
    pub data: &'a P::U32,
    /// Futex word writers sleep on.
    pub space: &'a P::U32,
    /// Writer registry.
    pub writers: &'a [WriterSlot<P>],
    /// Slots.
    pub slots: &'a [RingSlot<P>],
}

impl<P: Platform> Clone for RingView<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: Platform> Copy for RingView<'_, P> {}

impl<'a> RingView<'a, Os> {
    /// Carves the view out of a mapped ring segment.
    ///
    /// # Safety
    /// `base` must be 4096-aligned with `geo.total_size` mapped bytes that
    /// live for `'a` and are accessed only atomically.
    pub unsafe fn carve(base: *mut u8, geo: RingGeometry, name: &'a str) -> Self {
        // SAFETY (every reference below): the offsets come from
        // `RingGeometry::new`, are aligned for their types, and lie within
        // `total_size`, which the caller guarantees is mapped; atomics are
        // valid for any bit pattern.
        unsafe {
            let hdr = &*(base as *const RingHeader<Os>);
            let at = |off: u64| base.add(off as usize);
            RingView {
                p: &Os,
                name,
                geo,
                access: &hdr.access,
                reader: &hdr.reader,
                reader_start: &hdr.reader_start,
                tail: &*(at(geo.off_tail) as *const <Os as Platform>::U64),
                head: &*(at(geo.off_head) as *const <Os as Platform>::U64),
                data: &*(at(geo.off_data) as *const <Os as Platform>::U32),
                space: &*(at(geo.off_space) as *const <Os as Platform>::U32),
                writers: std::slice::from_raw_parts(
                    at(geo.off_writers) as *const WriterSlot<Os>,
                    geo.max_writers as usize,
                ),
                slots: std::slice::from_raw_parts(
                    at(geo.off_slots) as *const RingSlot<Os>,
                    geo.capacity as usize,
                ),
            }
        }
    }
}

/// A ring in typed heap memory, for the verification platforms.
pub struct HeapRing<P: Platform> {
    geo: RingGeometry,
    access: P::U32,
    reader: P::U64,
    reader_start: P::U64,
    tail: CachePadded<P::U64>,
    head: CachePadded<P::U64>,
    data: CachePadded<P::U32>,
    space: CachePadded<P::U32>,
    writers: Vec<WriterSlot<P>>,
    slots: Vec<RingSlot<P>>,
}

impl<P: Platform> HeapRing<P> {
    /// A fresh ring.
    pub fn new(capacity: u32, max_writers: u32) -> Result<Self> {
        let geo = RingGeometry::new(capacity, max_writers)?;
        Ok(Self {
            geo,
            access: P::U32::new(0),
            reader: P::U64::new(0),
            reader_start: P::U64::new(0),
            tail: CachePadded::new(P::U64::new(0)),
            head: CachePadded::new(P::U64::new(0)),
            data: CachePadded::new(P::U32::new(0)),
            space: CachePadded::new(P::U32::new(0)),
            writers: (0..max_writers)
                .map(|_| WriterSlot {
                    word: P::U64::new(0),
                    start: P::U64::new(0),
                })
                .collect(),
            slots: (0..capacity)
                .map(|i| RingSlot {
                    seq: P::U64::new(super::queue::Seq::free(u64::from(i)).bits()),
                    value: P::U64::new(0),
                })
                .collect(),
        })
    }

    /// The typed view.
    pub fn view<'a>(&'a self, p: &'a P, name: &'a str) -> RingView<'a, P> {
        RingView {
            p,
            name,
            geo: self.geo,
            access: &self.access,
            reader: &self.reader,
            reader_start: &self.reader_start,
            tail: &self.tail,
            head: &self.head,
            data: &self.data,
            space: &self.space,
            writers: &self.writers,
            slots: &self.slots,
        }
    }
}
