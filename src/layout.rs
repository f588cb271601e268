//! Where everything lives in a pool segment, and the typed view the
//! algorithm works on.
//!
//! A segment is one contiguous byte range (a shared mapping in production,
//! heap memory in tests):
//!
//! | offset                 | size                          | contents                                   |
//! |------------------------|-------------------------------|--------------------------------------------|
//! | 0                      | 256                           | [`Header`]: identity, readiness, geometry  |
//! | 256                    | 32 × classes                  | [`ClassDesc`] table                        |
//! | `off_class_hot`        | 128 × classes                 | [`ClassHot`]: the wake word (futex)        |
//! | `off_shards`           | 128 × classes × shards        | free-list heads, one per cache line pair   |
//! | `off_slots`            | 128 × slots                   | process registry                           |
//! | `off_mags`             | 4 × stride × slots × classes  | per-process caches (magazines)             |
//! | `off_metas`            | 32 × blocks                   | block metadata table                       |
//! | `off_payload` …        | per class, 4096-aligned       | payload blocks                             |
//!
//! All offsets are computed by [`Geometry::new`] from the configuration,
//! written into the header at creation, and recomputed and compared at
//! open: a process never follows an offset it read from the segment.
//! Hot words are wrapped in [`CachePadded`] (128 bytes on x86-64), so no two
//! shards, classes or registry slots share a cache line (or the adjacent
//! line the prefetcher pulls with it).

use std::mem::{align_of, offset_of, size_of};
use std::sync::atomic::Ordering::Relaxed;

use crossbeam_utils::CachePadded;

use crate::block::BlockMeta;
use crate::config::{PoolConfig, SizeClass, MAX_CACHE, MAX_CLASSES};
use crate::error::{Error, Result};
use crate::freelist::ShardHead;
use crate::platform::{Atomic32, Os, Platform};
use crate::registry::Slot;

/// "SSMPOOL" and a format byte.
pub const POOL_MAGIC: u64 = u64::from_le_bytes(*b"SSMPOOL\x01");
/// Layout version; bumped on any change of the segment format.
pub const LAYOUT_VERSION: u32 = 1;
/// The value of [`Header::ready`] once the segment is fully initialised.
pub const READY: u32 = 0x5245_4459; // "READY"
/// Size of the header.
pub const HEADER_SIZE: usize = 256;
/// Payload blocks of 4 KiB and more are page aligned.
pub const PAGE: u64 = 4096;
/// Alignment of every other payload block.
pub const LINE: u64 = 64;

/// A fingerprint of the word size and cache padding this build lays out the
/// segment with; processes built for another layout refuse to open it.
pub const ARCH: u32 = ((size_of::<usize>() as u32) << 16) | size_of::<CachePadded<u8>>() as u32;

/// The segment header. Written once by the creator before it stores
/// [`READY`]; afterwards only [`Header::ready`] changes.
#[repr(C)]
pub struct Header<P: Platform> {
    /// [`POOL_MAGIC`].
    pub magic: P::U64,
    /// [`LAYOUT_VERSION`].
    pub version: P::U32,
    /// 0 while the creator initialises the segment, [`READY`] after; a
    /// futex word that openers sleep on.
    pub ready: P::U32,
    /// Bytes of the segment the layout uses.
    pub total_size: P::U64,
    /// Pid of the creator.
    pub creator_pid: P::U32,
    /// [`ARCH`].
    pub arch: P::U32,
    /// Start time of the creator (see [`crate::platform::Identity`]).
    pub creator_start: P::U64,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_ns: P::U64,
    /// Permission bits requested at creation.
    pub mode: P::U32,
    /// Reserved, zero.
    pub reserved0: [P::U32; 3],
    /// Number of size classes.
    pub nclasses: P::U32,
    /// Shards per class.
    pub shards_per_class: P::U32,
    /// Registry slots.
    pub nslots: P::U32,
    /// Configured cache size (the largest magazine).
    pub cache_size: P::U32,
    /// Headspace of a new packet.
    pub headspace: P::U32,
    /// Tailspace of a new packet.
    pub tailspace: P::U32,
    /// Blocks in all classes.
    pub nblocks: P::U32,
    /// 32-bit words per magazine.
    pub mag_stride: P::U32,
    /// Offset of the [`ClassDesc`] table.
    pub off_classes: P::U64,
    /// Offset of the [`ClassHot`] table.
    pub off_class_hot: P::U64,
    /// Offset of the shard heads.
    pub off_shards: P::U64,
    /// Offset of the registry.
    pub off_slots: P::U64,
    /// Offset of the magazines.
    pub off_mags: P::U64,
    /// Offset of the metadata table.
    pub off_metas: P::U64,
    /// Offset of the first payload block.
    pub off_payload: P::U64,
    /// Reserved, zero.
    pub reserved1: [P::U64; 13],
}

/// One entry of the class table; immutable after creation.
#[repr(C)]
pub struct ClassDesc<P: Platform> {
    /// Block size in bytes.
    pub size: P::U32,
    /// Number of blocks.
    pub count: P::U32,
    /// Global index of the first block.
    pub first: P::U32,
    /// Magazine capacity of this class.
    pub mag_cap: P::U32,
    /// Offset of the first payload block of the class.
    pub payload_off: P::U64,
    /// Distance between two payload blocks.
    pub stride: P::U64,
}

/// The words of a class that blocking allocation uses.
#[repr(C)]
pub struct ClassHot<P: Platform> {
    /// The futex word blocked allocators sleep on: bit 31
    /// ([`WAITERS`](crate::allocator::WAITERS)) says someone may sleep;
    /// bits 0..31 count wake-ups. A free that finds the bit set clears it,
    /// bumps the count and wakes every sleeper; a sleeper sets it again
    /// before it sleeps again.
    pub wake_seq: P::U32,
    /// Reserved, zero.
    pub reserved: P::U32,
}

impl<P: Platform> ClassHot<P> {
    /// Fresh words.
    pub fn new() -> Self {
        Self {
            wake_seq: P::U32::new(0),
            reserved: P::U32::new(0),
        }
    }
}

impl<P: Platform> Default for ClassHot<P> {
    fn default() -> Self {
        Self::new()
    }
}

const _: () = {
    assert!(size_of::<Header<Os>>() == HEADER_SIZE);
    assert!(offset_of!(Header<Os>, ready) == 12);
    assert!(offset_of!(Header<Os>, nclasses) == 64);
    assert!(offset_of!(Header<Os>, off_classes) == 96);
    assert!(offset_of!(Header<Os>, off_payload) == 144);
    assert!(size_of::<ClassDesc<Os>>() == 32);
    assert!(offset_of!(ClassDesc<Os>, payload_off) == 16);
    assert!(size_of::<ClassHot<Os>>() == 8);
    assert!(size_of::<CachePadded<ClassHot<Os>>>() == size_of::<CachePadded<u8>>());
    assert!(size_of::<CachePadded<ShardHead<Os>>>() == size_of::<CachePadded<u8>>());
    assert!(size_of::<CachePadded<Slot<Os>>>() == size_of::<CachePadded<u8>>());
};

/// The validated, process-local description of one class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassGeo {
    /// Block size.
    pub size: u32,
    /// Number of blocks.
    pub count: u32,
    /// Global index of the first block.
    pub first: u32,
    /// Magazine capacity (0: no cache).
    pub mag_cap: u32,
    /// Payload offset of the first block.
    pub payload_off: u64,
    /// Distance between blocks.
    pub stride: u64,
}

impl ClassGeo {
    /// Whether global block index `b` belongs to this class.
    #[inline]
    pub fn contains(&self, b: u32) -> bool {
        b.wrapping_sub(self.first) < self.count
    }
}

/// Process-local, validated geometry of a segment. Everything the algorithm
/// uses to bound an index or an offset comes from here, never from the
/// segment directly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Classes, in increasing size.
    pub classes: Vec<ClassGeo>,
    /// Shards per class.
    pub shards_per_class: u32,
    /// Registry slots.
    pub nslots: u32,
    /// Configured cache size.
    pub cache_size: u32,
    /// Headspace of a new packet.
    pub headspace: u32,
    /// Tailspace of a new packet.
    pub tailspace: u32,
    /// Blocks in all.
    pub nblocks: u32,
    /// 32-bit words per magazine.
    pub mag_stride: u32,
    /// Offset of the class table.
    pub off_classes: u64,
    /// Offset of the class hot words.
    pub off_class_hot: u64,
    /// Offset of the shard heads.
    pub off_shards: u64,
    /// Offset of the registry.
    pub off_slots: u64,
    /// Offset of the magazines.
    pub off_mags: u64,
    /// Offset of the metadata table.
    pub off_metas: u64,
    /// Offset of the payload.
    pub off_payload: u64,
    /// Bytes used.
    pub total_size: u64,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// The magazine capacity of a class of `count` blocks: at most a quarter of
/// the class, even, and at most the configured size.
fn mag_cap(cache_size: u32, count: u32) -> u32 {
    let cap = cache_size.min(count / 4) & !1;
    if cap < 2 {
        0
    } else {
        cap
    }
}

impl Geometry {
    /// Lays out a segment for `cfg` (which must validate).
    pub fn new(cfg: &PoolConfig) -> Result<Self> {
        cfg.validate()?;
        let pad = size_of::<CachePadded<u8>>() as u64;
        let nclasses = cfg.classes.len() as u64;
        let nshards = nclasses * u64::from(cfg.shards);
        let nslots = u64::from(cfg.max_processes);
        let mag_stride = align_up(1 + u64::from(cfg.cache_size), 16);
        let nblocks: u64 = cfg.total_blocks();

        let off_classes = HEADER_SIZE as u64;
        let off_class_hot = align_up(off_classes + 32 * nclasses, pad);
        let off_shards = off_class_hot + pad * nclasses;
        let off_slots = off_shards + pad * nshards;
        let off_mags = off_slots + pad * nslots;
        let off_metas = align_up(off_mags + 4 * mag_stride * nslots * nclasses, LINE);
        let mut off = off_metas + size_of::<BlockMeta<Os>>() as u64 * nblocks;
        let off_payload = align_up(off, PAGE);
        let mut classes = Vec::with_capacity(cfg.classes.len());
        let mut first = 0u32;
        for c in &cfg.classes {
            let align = if u64::from(c.size) >= PAGE {
                PAGE
            } else {
                LINE
            };
            let stride = align_up(u64::from(c.size), align);
            let payload_off = align_up(off, PAGE);
            off = payload_off + stride * u64::from(c.count);
            classes.push(ClassGeo {
                size: c.size,
                count: c.count,
                first,
                mag_cap: mag_cap(cfg.cache_size, c.count),
                payload_off,
                stride,
            });
            first += c.count;
        }
        let total_size = align_up(off, PAGE);
        if total_size > isize::MAX as u64 / 2 {
            return Err(Error::InvalidConfig {
                detail: format!("the pool would need {total_size} bytes"),
            });
        }
        Ok(Self {
            classes,
            shards_per_class: cfg.shards,
            nslots: cfg.max_processes,
            cache_size: cfg.cache_size,
            headspace: cfg.headspace,
            tailspace: cfg.tailspace,
            nblocks: nblocks as u32,
            mag_stride: mag_stride as u32,
            off_classes,
            off_class_hot,
            off_shards,
            off_slots,
            off_mags,
            off_metas,
            off_payload,
            total_size,
        })
    }

    /// Number of shards in all classes.
    pub fn nshards(&self) -> usize {
        self.classes.len() * self.shards_per_class as usize
    }

    /// The class of global block index `b`, if any.
    #[inline]
    pub fn class_of(&self, b: u32) -> Option<usize> {
        self.classes.iter().position(|c| c.contains(b))
    }

    /// The smallest class with blocks whose payload holds `len` bytes after
    /// headspace and tailspace.
    #[inline]
    pub fn class_for(&self, len: usize) -> Option<usize> {
        let need =
            (len as u64).saturating_add(u64::from(self.headspace) + u64::from(self.tailspace));
        self.classes
            .iter()
            .position(|c| c.count > 0 && u64::from(c.size) >= need)
    }

    /// The largest payload any class with blocks holds.
    pub fn max_payload(&self) -> usize {
        self.classes
            .iter()
            .filter(|c| c.count > 0)
            .map(|c| (c.size - self.headspace - self.tailspace) as usize)
            .max()
            .unwrap_or(0)
    }

    /// The configuration this geometry was made from.
    pub fn config(&self) -> PoolConfig {
        let mut cfg = PoolConfig::new()
            .shards(self.shards_per_class)
            .headspace(self.headspace)
            .tailspace(self.tailspace)
            .max_processes(self.nslots)
            .cache_size(self.cache_size);
        cfg.classes = self
            .classes
            .iter()
            .map(|c| SizeClass {
                size: c.size,
                count: c.count,
            })
            .collect();
        cfg
    }

    /// Writes the header and class table into a zeroed segment, except
    /// [`Header::ready`].
    pub fn write_header(&self, hdr: &Header<Os>, table: &[ClassDesc<Os>], mode: u32) {
        hdr.magic.store(POOL_MAGIC, Relaxed);
        hdr.version.store(LAYOUT_VERSION, Relaxed);
        hdr.total_size.store(self.total_size, Relaxed);
        hdr.arch.store(ARCH, Relaxed);
        hdr.mode.store(mode, Relaxed);
        hdr.nclasses.store(self.classes.len() as u32, Relaxed);
        hdr.shards_per_class.store(self.shards_per_class, Relaxed);
        hdr.nslots.store(self.nslots, Relaxed);
        hdr.cache_size.store(self.cache_size, Relaxed);
        hdr.headspace.store(self.headspace, Relaxed);
        hdr.tailspace.store(self.tailspace, Relaxed);
        hdr.nblocks.store(self.nblocks, Relaxed);
        hdr.mag_stride.store(self.mag_stride, Relaxed);
        hdr.off_classes.store(self.off_classes, Relaxed);
        hdr.off_class_hot.store(self.off_class_hot, Relaxed);
        hdr.off_shards.store(self.off_shards, Relaxed);
        hdr.off_slots.store(self.off_slots, Relaxed);
        hdr.off_mags.store(self.off_mags, Relaxed);
        hdr.off_metas.store(self.off_metas, Relaxed);
        hdr.off_payload.store(self.off_payload, Relaxed);
        for (d, c) in table.iter().zip(&self.classes) {
            d.size.store(c.size, Relaxed);
            d.count.store(c.count, Relaxed);
            d.first.store(c.first, Relaxed);
            d.mag_cap.store(c.mag_cap, Relaxed);
            d.payload_off.store(c.payload_off, Relaxed);
            d.stride.store(c.stride, Relaxed);
        }
    }

    /// Reads and checks the header of a segment of `len` bytes at `base`.
    /// The geometry is recomputed from the recorded configuration and every
    /// recorded offset must match it; the layout must fit in `len`.
    pub fn read(name: &str, hdr: &Header<Os>, base_len: u64) -> Result<Self> {
        let mismatch = |detail: String| Error::LayoutMismatch {
            name: name.into(),
            detail,
        };
        let magic = hdr.magic.load(Relaxed);
        if magic != POOL_MAGIC {
            return Err(mismatch(format!(
                "no pool magic number (found {magic:#018x}); it is not a pool of this library"
            )));
        }
        let version = hdr.version.load(Relaxed);
        if version != LAYOUT_VERSION {
            return Err(mismatch(format!(
                "layout version {version}, this library reads version {LAYOUT_VERSION}"
            )));
        }
        let arch = hdr.arch.load(Relaxed);
        if arch != ARCH {
            return Err(mismatch(format!(
                "laid out for another architecture ({arch:#x}, this build is {ARCH:#x})"
            )));
        }
        let nclasses = hdr.nclasses.load(Relaxed) as usize;
        if nclasses == 0 || nclasses > MAX_CLASSES {
            return Err(mismatch(format!("{nclasses} size classes recorded")));
        }
        let off_classes = hdr.off_classes.load(Relaxed);
        if off_classes != HEADER_SIZE as u64 {
            return Err(mismatch(format!("class table at offset {off_classes}")));
        }
        // SAFETY: the caller guarantees that `hdr` is followed by at least
        // `base_len - HEADER_SIZE` mapped bytes; the table needs
        // 32 * nclasses <= 512 of them, checked here first.
        if base_len < (HEADER_SIZE + 32 * nclasses) as u64 {
            return Err(mismatch(format!("the object is only {base_len} bytes")));
        }
        let table = unsafe {
            std::slice::from_raw_parts(
                (hdr as *const Header<Os>).cast::<u8>().add(HEADER_SIZE) as *const ClassDesc<Os>,
                nclasses,
            )
        };
        let mut cfg = PoolConfig::new()
            .shards(hdr.shards_per_class.load(Relaxed))
            .headspace(hdr.headspace.load(Relaxed))
            .tailspace(hdr.tailspace.load(Relaxed))
            .max_processes(hdr.nslots.load(Relaxed))
            .cache_size(hdr.cache_size.load(Relaxed).min(MAX_CACHE + 1));
        for d in table {
            cfg = cfg.class(d.size.load(Relaxed), d.count.load(Relaxed));
        }
        let geo = Geometry::new(&cfg)
            .map_err(|e| mismatch(format!("the recorded configuration is invalid: {e}")))?;
        let recorded = [
            ("total size", hdr.total_size.load(Relaxed), geo.total_size),
            (
                "block count",
                u64::from(hdr.nblocks.load(Relaxed)),
                u64::from(geo.nblocks),
            ),
            (
                "magazine stride",
                u64::from(hdr.mag_stride.load(Relaxed)),
                u64::from(geo.mag_stride),
            ),
            (
                "class hot offset",
                hdr.off_class_hot.load(Relaxed),
                geo.off_class_hot,
            ),
            ("shard offset", hdr.off_shards.load(Relaxed), geo.off_shards),
            (
                "registry offset",
                hdr.off_slots.load(Relaxed),
                geo.off_slots,
            ),
            ("magazine offset", hdr.off_mags.load(Relaxed), geo.off_mags),
            (
                "metadata offset",
                hdr.off_metas.load(Relaxed),
                geo.off_metas,
            ),
            (
                "payload offset",
                hdr.off_payload.load(Relaxed),
                geo.off_payload,
            ),
        ];
        for (what, got, want) in recorded {
            if got != want {
                return Err(mismatch(format!(
                    "{what} is {got}, the layout needs {want}"
                )));
            }
        }
        for (i, (d, c)) in table.iter().zip(&geo.classes).enumerate() {
            let got = (
                d.first.load(Relaxed),
                d.mag_cap.load(Relaxed),
                d.payload_off.load(Relaxed),
                d.stride.load(Relaxed),
            );
            if got != (c.first, c.mag_cap, c.payload_off, c.stride) {
                return Err(mismatch(format!(
                    "class {i} entry does not match the layout"
                )));
            }
        }
        if geo.total_size > base_len {
            return Err(mismatch(format!(
                "the layout needs {} bytes but the object has {base_len}; it was truncated",
                geo.total_size
            )));
        }
        Ok(geo)
    }
}

/// The typed view of a segment that the algorithm works on: references to
/// every shared structure, bounded by a validated [`Geometry`].
pub struct Segment<'a, P: Platform> {
    /// The platform.
    pub p: &'a P,
    /// Name, for error messages.
    pub name: &'a str,
    /// Validated geometry.
    pub geo: &'a Geometry,
    /// Per-class hot words.
    pub classes: &'a [CachePadded<ClassHot<P>>],
    /// Free-list heads, `shards_per_class` per class, class-major.
    pub shards: &'a [CachePadded<ShardHead<P>>],
    /// Process registry.
    pub slots: &'a [CachePadded<Slot<P>>],
    /// Magazines, `mag_stride` words each, slot-major then class.
    pub mags: &'a [P::U32],
    /// Metadata table.
    pub metas: &'a [BlockMeta<P>],
}

impl<P: Platform> Clone for Segment<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: Platform> Copy for Segment<'_, P> {}

impl<'a> Segment<'a, Os> {
    /// Carves the typed view out of a segment whose geometry was validated
    /// against its length.
    ///
    /// # Safety
    /// `base` must be 4096-aligned and point to at least `geo.total_size`
    /// bytes that stay mapped and are only accessed atomically for `'a`.
    pub unsafe fn carve(base: *mut u8, geo: &'a Geometry, name: &'a str) -> Self {
        let n_classes = geo.classes.len();
        // SAFETY (all slices below): every offset was computed by
        // `Geometry::new`, is aligned for its type (see the alignment
        // assertions) and `offset + len * size_of::<T>() <= total_size`,
        // which the caller guarantees is mapped. Every field of these types
        // is an atomic integer, valid for any bit pattern.
        unsafe fn at<'b, T>(base: *mut u8, off: u64, len: usize) -> &'b [T] {
            debug_assert_eq!(off % align_of::<T>() as u64, 0);
            // SAFETY: see above; the caller passes an offset and length of
            // the validated layout.
            unsafe { std::slice::from_raw_parts(base.add(off as usize) as *const T, len) }
        }
        // SAFETY: see above.
        unsafe {
            Segment {
                p: &Os,
                name,
                geo,
                classes: at(base, geo.off_class_hot, n_classes),
                shards: at(base, geo.off_shards, geo.nshards()),
                slots: at(base, geo.off_slots, geo.nslots as usize),
                mags: at(
                    base,
                    geo.off_mags,
                    geo.mag_stride as usize * geo.nslots as usize * n_classes,
                ),
                metas: at(base, geo.off_metas, geo.nblocks as usize),
            }
        }
    }
}

impl<'a, P: Platform> Segment<'a, P> {
    /// The free-list head of shard `k` of class `class`.
    #[inline]
    pub fn shard(&self, class: usize, k: u32) -> &'a ShardHead<P> {
        &self.shards[class * self.geo.shards_per_class as usize + k as usize]
    }

    /// The magazine words of `slot` for `class`: the count, then entries.
    #[inline]
    pub fn magazine(&self, slot: u32, class: usize) -> &'a [P::U32] {
        let stride = self.geo.mag_stride as usize;
        let at = (slot as usize * self.geo.classes.len() + class) * stride;
        &self.mags[at..at + stride]
    }
}

/// Initialises the shared structures of a zeroed segment: every block in
/// shard 0 of its class, linked in index order.
pub fn init_segment<P: Platform>(seg: &Segment<'_, P>) {
    use crate::block::BlockState;
    use crate::freelist::{Head, NIL};
    for (ci, c) in seg.geo.classes.iter().enumerate() {
        for i in 0..c.count {
            let b = c.first + i;
            let m = &seg.metas[b as usize];
            m.state.store(BlockState::free(0, 0), Relaxed);
            m.next
                .store(if i + 1 < c.count { b + 1 } else { NIL }, Relaxed);
        }
        let first = if c.count > 0 { c.first } else { NIL };
        seg.shard(ci, 0).head.store(Head::new(first, 0, 0), Relaxed);
        for k in 1..seg.geo.shards_per_class {
            seg.shard(ci, k).head.store(Head::new(NIL, 0, 0), Relaxed);
        }
    }
    for s in seg.slots.iter() {
        s.reset();
    }
}

/// A segment in typed heap memory, for running the algorithm on platforms
/// whose atomics cannot live in raw bytes (the model checkers' atomics), or
/// simply without a shared mapping.
pub struct HeapSegment<P: Platform> {
    geo: Geometry,
    classes: Vec<CachePadded<ClassHot<P>>>,
    shards: Vec<CachePadded<ShardHead<P>>>,
    slots: Vec<CachePadded<Slot<P>>>,
    mags: Vec<P::U32>,
    metas: Vec<BlockMeta<P>>,
}

impl<P: Platform> HeapSegment<P> {
    /// A freshly initialised segment for `cfg` (`p` is only used while
    /// initialising).
    pub fn new(cfg: &PoolConfig, p: &P) -> Result<Self> {
        let geo = Geometry::new(cfg)?;
        let n_classes = geo.classes.len();
        let heap = Self {
            classes: (0..n_classes)
                .map(|_| CachePadded::new(ClassHot::new()))
                .collect(),
            shards: (0..geo.nshards())
                .map(|_| CachePadded::new(ShardHead::new(crate::freelist::NIL)))
                .collect(),
            slots: (0..geo.nslots)
                .map(|_| CachePadded::new(Slot::new()))
                .collect(),
            mags: (0..geo.mag_stride as usize * geo.nslots as usize * n_classes)
                .map(|_| P::U32::new(0))
                .collect(),
            metas: (0..geo.nblocks)
                .map(|_| BlockMeta::new_free(0, crate::freelist::NIL))
                .collect(),
            geo,
        };
        init_segment(&heap.segment(p, "(heap)"));
        Ok(heap)
    }

    /// The typed view, with platform `p` and name `name`.
    pub fn segment<'a>(&'a self, p: &'a P, name: &'a str) -> Segment<'a, P> {
        Segment {
            p,
            name,
            geo: &self.geo,
            classes: &self.classes,
            shards: &self.shards,
            slots: &self.slots,
            mags: &self.mags,
            metas: &self.metas,
        }
    }

    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_of_the_group_preset() {
        let g = Geometry::new(&PoolConfig::group_pool()).unwrap();
        assert_eq!(g.nblocks, 3184);
        assert_eq!(g.off_class_hot % 128, 0);
        assert_eq!(g.off_metas % 64, 0);
        assert_eq!(g.off_payload % PAGE, 0);
        for c in &g.classes {
            assert_eq!(c.payload_off % PAGE, 0);
            let align = if u64::from(c.size) >= PAGE {
                PAGE
            } else {
                LINE
            };
            assert_eq!(c.stride % align, 0);
        }
        assert_eq!(g.classes[0].mag_cap, 32);
        assert_eq!(g.classes[8].mag_cap, 4);
        assert_eq!(g.class_for(0), Some(0));
        assert_eq!(g.class_for(256 - 160), Some(0));
        assert_eq!(g.class_for(256 - 160 + 1), Some(1));
        assert_eq!(g.class_for(g.max_payload()), Some(8));
        assert_eq!(g.class_for(g.max_payload() + 1), None);
        assert_eq!(g.config(), PoolConfig::group_pool().mode(0o600));
    }

    #[test]
    fn cache_padded_puts_the_value_first() {
        let p = CachePadded::new(ClassHot::<Os>::new());
        assert_eq!(&p as *const _ as usize, &*p as *const ClassHot<Os> as usize);
    }
}
