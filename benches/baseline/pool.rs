//! The sharded slab pool of the C design: size classes split into shards,
//! each shard a mutex-protected free list of 32-bit block offsets.
//!
//! Layout of the shared memory object (all offsets from its start):
//!
//! | offset | contents |
//! |---|---|
//! | 0 | the blocks of every class, back to back, smallest class first |
//! | `shard_off` (64-aligned) | `classes × shards` [`Shard`]s, class-major |
//! | `size - size_of::<PoolHdr>()` | [`PoolHdr`]: magic, ready flag, geometry |
//!
//! The header sits at the end of the object, after the blocks, as in the C
//! pool; an opener finds it from the object's size, waits for its ready
//! flag, then recomputes and checks the geometry. Nothing in the object is a
//! pointer: free lists link blocks by their offset from the object's start.

use std::io;
use std::mem::size_of;
use std::sync::atomic::Ordering::{Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicI32, AtomicU16, AtomicU32, AtomicU64};
use std::time::Duration;

use super::shm::{self, Mapping};
use super::sync::{self, ShmCond, ShmMutex, Wake};
use super::{BaselineError, Variant};

/// Shards per size class in the C build's default configuration.
pub const DEFAULT_SHARDS: u32 = 4;
/// Bytes kept free before the data of a new block (C default).
pub const DEFAULT_HEADSPACE: u32 = 256;
/// Bytes kept free after the data of a new block (C default).
pub const DEFAULT_TAILSPACE: u32 = 32;
/// Most size classes a pool can have (the header's class table size).
pub const MAX_CLASSES: usize = 16;
/// Most shards per class accepted by [`BaselinePool::create`].
const MAX_SHARDS: u32 = 1024;

/// The C group pool preset "GSPP": (block size, block count) per class.
pub const GSPP_CLASSES: [(u32, u32); 9] = [
    (1 << 8, 1024),
    (1 << 9, 768),
    (1 << 10, 512),
    (1 << 11, 384),
    (1 << 12, 256),
    (1 << 14, 128),
    (1 << 16, 64),
    (1 << 18, 32),
    (1 << 20, 16),
];

/// The C per-user pool preset "PUP": (block size, block count) per class.
pub const PUP_CLASSES: [(u32, u32); 9] = [
    (1 << 8, 128),
    (1 << 9, 96),
    (1 << 10, 64),
    (1 << 11, 48),
    (1 << 12, 32),
    (1 << 14, 16),
    (1 << 16, 8),
    (1 << 18, 2),
    (1 << 20, 0),
];

/// Marks the end of a free list. (The C pool uses offset 0, which is also
/// the first block's offset; see the module root.)
const EMPTY: u32 = u32::MAX;
/// First word of the header: "CSSMPOOL".
const MAGIC: u64 = u64::from_le_bytes(*b"CSSMPOOL");
/// Value of the header's ready flag once the creator has finished.
const READY: u32 = 0x5245_4459;
/// Alignment of the shard table.
const SHARD_ALIGN: usize = 64;

/// The header at the start of every block, as in the C `ssm_pk_buff`
/// (28 bytes). Fields are atomics so that every process may hold shared
/// references to it; relaxed accesses compile to plain moves, and the
/// sequentially consistent ones mirror the C code's `__ATOMIC_SEQ_CST`.
#[repr(C)]
struct BlockHdr {
    /// Offset of the next free block while the block is on a free list,
    /// [`EMPTY`] at the end. Written under the owning shard's mutex.
    next_offset: AtomicU32,
    /// References to the block: 1 after allocation, 0 while free. Changed
    /// under the mutex of the shard of the allocator.
    refcount: AtomicU16,
    /// Pid of the process that allocated the block (0 while free); selects
    /// the shard a free returns the block to.
    allocator_pid: AtomicI32,
    /// Bytes of the block after this header.
    size: AtomicU32,
    /// Start of the data window, relative to the end of this header.
    pk_head: AtomicU32,
    /// End of the data window, relative to the end of this header.
    pk_tail: AtomicU32,
    /// The block's own offset in the object.
    off: AtomicU32,
}

/// Size of the header at the start of every block.
pub const BLOCK_HEADER_SIZE: usize = size_of::<BlockHdr>();
const _: () = assert!(BLOCK_HEADER_SIZE == 28);

/// One shard of one size class, as in the C `_ssm_shard`.
#[repr(C)]
struct Shard {
    /// Process-shared robust mutex (priority-inheriting in the shipped
    /// variant) guarding every other field of the shard and the
    /// `next_offset`/`refcount` of the blocks that belong to it.
    mtx: ShmMutex,
    /// Signalled after a block is returned to this shard; blocking
    /// allocators wait on the condvar of their local shard.
    cond: ShmCond,
    /// Offset of the first free block, [`EMPTY`] when the list is empty.
    head_offset: AtomicU32,
    /// Length of the free list (the C list head's own count).
    list_count: AtomicU32,
    /// Free blocks in this shard (the C shard's `free_count`, a `size_t`);
    /// read without the mutex by waiters deciding whether to sleep.
    free_count: AtomicU64,
}

/// One entry of the header's class table.
#[repr(C)]
struct ClassDesc {
    /// Block size in bytes, header included.
    object_size: AtomicU32,
    /// Number of blocks of this class.
    object_count: AtomicU32,
    /// Offset of the class's first block.
    pool_start: AtomicU32,
    /// Bytes of all blocks of this class.
    pool_size: AtomicU32,
}

/// The pool header, at the end of the object. Written by the creator before
/// `ready`; read-only afterwards.
#[repr(C)]
struct PoolHdr {
    /// [`MAGIC`].
    magic: AtomicU64,
    /// [`READY`] once the creator has initialised everything (stored last,
    /// with release ordering).
    ready: AtomicU32,
    /// Number of size classes in `classes`.
    nclasses: AtomicU32,
    /// Shards per size class.
    shards: AtomicU32,
    /// Bytes reserved before the data of a new block.
    headspace: AtomicU32,
    /// Bytes reserved after the data of a new block.
    tailspace: AtomicU32,
    /// Pid of the creator.
    creator_pid: AtomicI32,
    /// Bytes of all blocks.
    blocks_size: AtomicU64,
    /// The size classes, ascending by block size; entries past `nclasses`
    /// are zero.
    classes: [ClassDesc; MAX_CLASSES],
}

/// A size class as this process sees it (validated copy of the header's).
#[derive(Clone, Copy, Debug)]
struct Class {
    /// Block size in bytes, header included.
    size: u32,
    /// Number of blocks.
    count: u32,
    /// Offset of the first block.
    start: u32,
    /// Offset one past the last block.
    end: u32,
}

/// Where everything lies in the object, computed from the configuration.
#[derive(Clone, Debug)]
struct Geometry {
    /// The classes, ascending by block size.
    classes: Vec<Class>,
    /// Shards per class.
    shards: u32,
    /// `shards` is a power of two, so `x % shards == x & (shards - 1)`.
    shards_pow2: bool,
    /// Bytes reserved before the data of a new block.
    headspace: u32,
    /// Bytes reserved after the data of a new block.
    tailspace: u32,
    /// Bytes of all blocks (they start at offset 0).
    blocks_size: usize,
    /// Offset of the shard table.
    shard_off: usize,
    /// Offset of the header.
    hdr_off: usize,
    /// Size of the object.
    total: usize,
}

/// An invalid-configuration error.
fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_owned())
}

impl Geometry {
    /// Lays out `classes` (any order; sorted here) with `shards` shards each.
    fn new(
        classes: &[(u32, u32)],
        shards: u32,
        headspace: u32,
        tailspace: u32,
    ) -> io::Result<Geometry> {
        if classes.is_empty() || classes.len() > MAX_CLASSES {
            return Err(invalid("between 1 and MAX_CLASSES size classes are needed"));
        }
        if shards == 0 || shards > MAX_SHARDS {
            return Err(invalid("shards must be between 1 and 1024"));
        }
        let mut sorted = classes.to_vec();
        sorted.sort_by_key(|&(size, _)| size);
        let mut out = Vec::with_capacity(sorted.len());
        let mut offset: u64 = 0;
        for (size, count) in sorted {
            if size & 7 != 0 || (size as usize) < BLOCK_HEADER_SIZE {
                return Err(invalid(
                    "block sizes must be multiples of 8 and hold the block header",
                ));
            }
            let bytes = u64::from(size) * u64::from(count);
            let end = offset + bytes;
            // Offsets are 32-bit and u32::MAX is the empty-list marker.
            if end >= u64::from(EMPTY) {
                return Err(invalid("blocks exceed the 32-bit offset range"));
            }
            out.push(Class {
                size,
                count,
                start: offset as u32,
                end: end as u32,
            });
            offset = end;
        }
        let blocks_size = offset as usize;
        let shard_off = blocks_size.next_multiple_of(SHARD_ALIGN);
        let nshards = out.len() * shards as usize;
        let hdr_off = (shard_off + nshards * size_of::<Shard>()).next_multiple_of(SHARD_ALIGN);
        let total = hdr_off + size_of::<PoolHdr>();
        Ok(Geometry {
            classes: out,
            shards,
            shards_pow2: shards.is_power_of_two(),
            headspace,
            tailspace,
            blocks_size,
            shard_off,
            hdr_off,
            total,
        })
    }
}

/// A handle on a baseline pool: one mapping of the shared object plus this
/// process's copy of its geometry. Dropping it unmaps; the object stays
/// until [`BaselinePool::unlink`].
pub struct BaselinePool {
    /// The whole object, mapped shared.
    map: Mapping,
    /// Validated geometry; every offset used comes from here.
    geo: Geometry,
    /// The variant this handle runs (the mutex protocol was fixed by the
    /// creator's variant).
    variant: Variant,
}

// SAFETY: all shared state in the mapping is reached through atomics or
// under process-shared pthread mutexes, which exclude threads as well as
// processes; the handle's own fields are immutable after construction.
unsafe impl Send for BaselinePool {}
// SAFETY: as above.
unsafe impl Sync for BaselinePool {}

impl BaselinePool {
    /// Creates the pool `name` (fails if it exists) with the given
    /// `(block_size, block_count)` classes, `shards` shards per class, and
    /// the head- and tailspace reserved in every new block. Block sizes
    /// include the block header and must be multiples of 8. Every block of
    /// a class starts in shard 0. The mutexes are priority-inheriting when
    /// `variant.pi` is set.
    pub fn create(
        name: &str,
        classes: &[(u32, u32)],
        shards: u32,
        headspace: u32,
        tailspace: u32,
        variant: Variant,
    ) -> io::Result<Self> {
        let geo = Geometry::new(classes, shards, headspace, tailspace)?;
        let map = Mapping::create(name, geo.total)?;
        let pool = BaselinePool { map, geo, variant };
        if let Err(e) = pool.initialise() {
            drop(pool);
            shm::unlink(name);
            return Err(e);
        }
        Ok(pool)
    }

    /// Writes the header, initialises every shard's mutex and condvar in
    /// place, threads every block onto shard 0's list, then publishes the
    /// pool by storing the ready flag.
    fn initialise(&self) -> io::Result<()> {
        let g = &self.geo;
        let hdr = self.hdr();
        hdr.magic.store(MAGIC, Relaxed);
        hdr.nclasses.store(g.classes.len() as u32, Relaxed);
        hdr.shards.store(g.shards, Relaxed);
        hdr.headspace.store(g.headspace, Relaxed);
        hdr.tailspace.store(g.tailspace, Relaxed);
        hdr.creator_pid.store(sync::current_pid(false), Relaxed);
        hdr.blocks_size.store(g.blocks_size as u64, Relaxed);
        for (c, class) in g.classes.iter().enumerate() {
            let d = &hdr.classes[c];
            d.object_size.store(class.size, Relaxed);
            d.object_count.store(class.count, Relaxed);
            d.pool_start.store(class.start, Relaxed);
            d.pool_size.store(class.end - class.start, Relaxed);
            for s in 0..g.shards {
                let p = self.shard_ptr(c, s);
                // SAFETY: `p` is an aligned `Shard` slot inside the mapping
                // (from the geometry), and nobody can use it before the
                // ready flag is stored below.
                unsafe { ShmMutex::init(std::ptr::addr_of_mut!((*p).mtx), self.variant.pi)? };
                // SAFETY: as above.
                unsafe { ShmCond::init(std::ptr::addr_of_mut!((*p).cond))? };
                let shard = self.shard(c, s);
                shard.head_offset.store(EMPTY, Relaxed);
                shard.list_count.store(0, Relaxed);
                shard.free_count.store(0, Relaxed);
            }
            // Lazy distribution: every block starts in shard 0.
            let shard0 = self.shard(c, 0);
            for i in 0..class.count {
                let off = class.start + i * class.size;
                let blk = self.block(off);
                blk.refcount.store(0, Relaxed);
                blk.allocator_pid.store(0, Relaxed);
                blk.off.store(off, Relaxed);
                Self::list_add_head(shard0, blk, off);
                shard0.free_count.fetch_add(1, SeqCst);
            }
        }
        // Release: publishes everything above to openers (they load it with
        // acquire in `shm::wait_ready`).
        hdr.ready.store(READY, Release);
        Ok(())
    }

    /// Opens the existing pool `name`, waiting (bounded) for its creator to
    /// finish. `variant.cache_pid` selects this handle's pid source;
    /// `variant.pi` is ignored (the creator fixed the mutex protocol).
    pub fn open(name: &str, variant: Variant) -> io::Result<Self> {
        let map = Mapping::open(name)?;
        let len = map.len();
        let hdr_size = size_of::<PoolHdr>();
        if len < hdr_size || (len - hdr_size) & (SHARD_ALIGN - 1) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a baseline pool",
            ));
        }
        // SAFETY: the header lies inside the mapping (checked just above),
        // is 64-aligned, and consists of atomics, valid for any bit pattern.
        let hdr = unsafe { &*(map.ptr().add(len - hdr_size) as *const PoolHdr) };
        shm::wait_ready(&hdr.ready, READY)?;
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "not a baseline pool or inconsistent header",
            )
        };
        if hdr.magic.load(Relaxed) != MAGIC {
            return Err(bad());
        }
        let n = hdr.nclasses.load(Relaxed) as usize;
        if n == 0 || n > MAX_CLASSES {
            return Err(bad());
        }
        let classes: Vec<(u32, u32)> = hdr.classes[..n]
            .iter()
            .map(|d| (d.object_size.load(Relaxed), d.object_count.load(Relaxed)))
            .collect();
        let geo = Geometry::new(
            &classes,
            hdr.shards.load(Relaxed),
            hdr.headspace.load(Relaxed),
            hdr.tailspace.load(Relaxed),
        )
        .map_err(|_| bad())?;
        let starts_match = geo
            .classes
            .iter()
            .zip(&hdr.classes[..n])
            .all(|(c, d)| c.start == d.pool_start.load(Relaxed));
        if geo.total != len
            || !starts_match
            || geo.blocks_size as u64 != hdr.blocks_size.load(Relaxed)
        {
            return Err(bad());
        }
        Ok(BaselinePool { map, geo, variant })
    }

    /// Removes the shared object `name` (mappings stay valid until unmapped).
    pub fn unlink(name: &str) {
        shm::unlink(name);
    }

    /// The header at the end of the object.
    #[inline]
    fn hdr(&self) -> &PoolHdr {
        // SAFETY: `hdr_off` is inside the mapping and 64-aligned (geometry
        // validated against the mapping's size); the header is atomics only.
        unsafe { &*(self.map.ptr().add(self.geo.hdr_off) as *const PoolHdr) }
    }

    /// Raw pointer to shard `s` of class `c`.
    #[inline]
    fn shard_ptr(&self, c: usize, s: u32) -> *mut Shard {
        debug_assert!(c < self.geo.classes.len() && s < self.geo.shards);
        let idx = c * self.geo.shards as usize + s as usize;
        // SAFETY: `idx < classes × shards`, so the slot lies within the
        // shard table inside the mapping.
        unsafe {
            self.map
                .ptr()
                .add(self.geo.shard_off + idx * size_of::<Shard>()) as *mut Shard
        }
    }

    /// Shard `s` of class `c`.
    #[inline]
    fn shard(&self, c: usize, s: u32) -> &Shard {
        // SAFETY: `shard_ptr` is in bounds and aligned (64-aligned table,
        // 8-byte aligned entries); the shard is pthread objects behind
        // `UnsafeCell` and atomics, valid shared between threads.
        unsafe { &*self.shard_ptr(c, s) }
    }

    /// The header of the block at `off`.
    ///
    /// # Panics
    /// If `off` is not a 4-aligned offset inside the block area (an offset
    /// from another pool, or a corrupted list link).
    #[inline]
    fn block(&self, off: u32) -> &BlockHdr {
        assert!(
            (off as usize) + BLOCK_HEADER_SIZE <= self.geo.blocks_size && off & 3 == 0,
            "offset {off} is not a block of this pool"
        );
        // SAFETY: checked in bounds and aligned just above; the header is
        // atomics only.
        unsafe { &*(self.map.ptr().add(off as usize) as *const BlockHdr) }
    }

    /// `x % shards`.
    #[inline]
    fn shard_index(&self, x: u32) -> u32 {
        if self.geo.shards_pow2 {
            x & (self.geo.shards - 1)
        } else {
            x % self.geo.shards
        }
    }

    /// The shard a process with this pid calls local: `pid % shards`.
    #[inline]
    fn shard_of_pid(&self, pid: libc::pid_t) -> u32 {
        self.shard_index(pid as u32)
    }

    /// This process's pid, by the variant's method.
    #[inline]
    fn pid(&self) -> libc::pid_t {
        sync::current_pid(self.variant.cache_pid)
    }

    /// The smallest class with blocks whose blocks hold the block header,
    /// headspace, `len` bytes and tailspace.
    #[inline]
    fn select_class(&self, len: usize) -> Result<usize, BaselineError> {
        let need = (BLOCK_HEADER_SIZE as u64)
            .saturating_add(u64::from(self.geo.headspace))
            .saturating_add(len as u64)
            .saturating_add(u64::from(self.geo.tailspace));
        self.geo
            .classes
            .iter()
            .position(|c| c.count > 0 && need <= u64::from(c.size))
            .ok_or(BaselineError::TooLarge)
    }

    /// The class the block offset `off` falls in.
    #[inline]
    fn class_of(&self, off: u32) -> Option<usize> {
        self.geo
            .classes
            .iter()
            .position(|c| off >= c.start && off < c.end)
    }

    /// Pushes the block at `off` onto `shard`'s list (mutex held, or pool
    /// not yet published).
    #[inline]
    fn list_add_head(shard: &Shard, blk: &BlockHdr, off: u32) {
        blk.next_offset
            .store(shard.head_offset.load(SeqCst), SeqCst);
        shard.head_offset.store(off, SeqCst);
        shard
            .list_count
            .store(shard.list_count.load(SeqCst).wrapping_add(1), SeqCst);
    }

    /// Takes a block of class `c` from shard `s` if it has one, and
    /// initialises it for `len` bytes, all under the shard's mutex.
    #[inline]
    fn try_alloc_from_shard(&self, c: usize, s: u32, len: usize) -> Option<u32> {
        let shard = self.shard(c, s);
        let _guard = shard.mtx.lock();
        if shard.free_count.load(SeqCst) == 0 {
            return None;
        }
        let off = shard.head_offset.load(SeqCst);
        if off == EMPTY {
            return None;
        }
        let blk = self.block(off);
        shard
            .head_offset
            .store(blk.next_offset.load(SeqCst), SeqCst);
        shard
            .list_count
            .store(shard.list_count.load(SeqCst).wrapping_sub(1), SeqCst);
        shard.free_count.fetch_sub(1, SeqCst);
        // Initialised before unlocking, as in C (including its second
        // getpid() of the allocation in the shipped variant).
        let class = &self.geo.classes[c];
        blk.refcount.store(1, SeqCst);
        blk.allocator_pid.store(self.pid(), Relaxed);
        blk.size
            .store(class.size - BLOCK_HEADER_SIZE as u32, Relaxed);
        let head = self.geo.headspace;
        blk.pk_head.store(head, Relaxed);
        blk.pk_tail.store(head.wrapping_add(len as u32), Relaxed);
        blk.off.store(off, Relaxed);
        Some(off)
    }

    /// One pass over the shards of class `c`, local shard first, then
    /// `local + 1`, `local + 2`, ... modulo the shard count.
    #[inline]
    fn alloc_pass(&self, c: usize, local: u32, len: usize) -> Option<u32> {
        (0..self.geo.shards)
            .find_map(|i| self.try_alloc_from_shard(c, self.shard_index(local + i), len))
    }

    /// Allocates a block whose data window holds `len` bytes and returns the
    /// block's offset. Non-blocking: [`BaselineError::TooLarge`] when no
    /// class fits, [`BaselineError::Exhausted`] when the fitting class has no
    /// free block in any shard.
    pub fn alloc(&self, len: usize) -> Result<u32, BaselineError> {
        let c = self.select_class(len)?;
        let local = self.shard_of_pid(self.pid());
        self.alloc_pass(c, local, len)
            .ok_or(BaselineError::Exhausted)
    }

    /// Like [`alloc`](Self::alloc) but waits for a free block while the
    /// class is exhausted, until `timeout` (`None`: forever), then fails with
    /// [`BaselineError::Timeout`].
    ///
    /// After each failed pass the caller locks its *local* shard and, while
    /// no shard of the class has a free block, waits on the local shard's
    /// condvar with an absolute `CLOCK_MONOTONIC` deadline. A free signals
    /// the condvar of the allocator's shard, so a block returned to another
    /// shard does not wake this waiter; it is found at the next wake-up or
    /// not at all before the deadline (the C behaviour, kept on purpose).
    pub fn alloc_b(&self, len: usize, timeout: Option<Duration>) -> Result<u32, BaselineError> {
        let c = self.select_class(len)?;
        let deadline = timeout.map(sync::deadline_after);
        let local = self.shard_of_pid(self.pid());
        loop {
            if let Some(off) = self.alloc_pass(c, local, len) {
                return Ok(off);
            }
            let shard = self.shard(c, local);
            let mut guard = shard.mtx.lock();
            while self.class_free(c) == 0 {
                if shard.cond.wait(&mut guard, deadline.as_ref()) == Wake::TimedOut {
                    return Err(BaselineError::Timeout);
                }
            }
        }
    }

    /// Free blocks of class `c` over all its shards, read without locks.
    #[inline]
    fn class_free(&self, c: usize) -> u64 {
        (0..self.geo.shards)
            .map(|s| self.shard(c, s).free_count.load(SeqCst))
            .sum()
    }

    /// Drops one reference to the block at `off`; at zero the block goes
    /// back to the shard of the process that allocated it
    /// (`allocator_pid % shards`) and that shard's condvar is signalled.
    ///
    /// # Panics
    /// If `off` is not in the block area of this pool, or the block is
    /// already free (the C pool would wrap its refcount).
    pub fn free(&self, off: u32) {
        let c = self
            .class_of(off)
            .unwrap_or_else(|| panic!("offset {off} is not a block of this pool"));
        let blk = self.block(off);
        let shard = self.shard(c, self.shard_of_pid(blk.allocator_pid.load(Relaxed)));
        let guard = shard.mtx.lock();
        let old = blk.refcount.fetch_sub(1, SeqCst);
        if old > 1 {
            return;
        }
        if old == 0 {
            blk.refcount.store(0, SeqCst);
            drop(guard);
            panic!("double free of block {off}");
        }
        blk.allocator_pid.store(0, Relaxed);
        Self::list_add_head(shard, blk, off);
        shard.free_count.fetch_add(1, SeqCst);
        shard.cond.signal();
        drop(guard);
    }

    /// The data window of the block at `off`: a pointer to its first byte
    /// and its length. The window starts `headspace` bytes into the block's
    /// data area and is `len` bytes long after allocation. The pointer is
    /// valid while this handle is alive; the caller must only use it while
    /// it holds a reference to the block.
    #[inline]
    pub fn data(&self, off: u32) -> (*mut u8, usize) {
        let blk = self.block(off);
        let head = blk.pk_head.load(Relaxed) as usize;
        let tail = blk.pk_tail.load(Relaxed) as usize;
        let start = off as usize + BLOCK_HEADER_SIZE + head;
        assert!(
            head <= tail && start + (tail - head) <= self.geo.blocks_size,
            "corrupted data window in block {off}"
        );
        // SAFETY: `start + len` was checked to lie within the block area of
        // the mapping.
        let p = unsafe { self.map.ptr().add(start) };
        (p, tail - head)
    }

    /// Pid recorded in the block at `off` by its allocator (0 while free).
    pub fn allocator_pid(&self, off: u32) -> libc::pid_t {
        self.block(off).allocator_pid.load(Relaxed)
    }

    /// Free blocks per class (ascending block size) and per shard. Read
    /// without locks: exact only while nobody allocates or frees.
    pub fn free_counts(&self) -> Vec<Vec<u32>> {
        (0..self.geo.classes.len())
            .map(|c| {
                (0..self.geo.shards)
                    .map(|s| self.shard(c, s).free_count.load(SeqCst) as u32)
                    .collect()
            })
            .collect()
    }

    /// Metadata overheads: bytes of the header inside every block, and bytes
    /// of one shard (mutex, condvar, list head, counts).
    pub fn metadata_bytes(&self) -> (usize, usize) {
        (BLOCK_HEADER_SIZE, size_of::<Shard>())
    }

    /// Size of the shared memory object (and of this handle's mapping).
    pub fn mapped_size(&self) -> usize {
        self.map.len()
    }

    /// The classes as `(block_size, block_count)`, ascending by size.
    pub fn classes(&self) -> Vec<(u32, u32)> {
        self.geo.classes.iter().map(|c| (c.size, c.count)).collect()
    }

    /// Shards per class.
    pub fn shards(&self) -> u32 {
        self.geo.shards
    }

    /// Largest `len` that [`alloc`](Self::alloc) accepts.
    pub fn max_len(&self) -> usize {
        let overhead =
            BLOCK_HEADER_SIZE + self.geo.headspace as usize + self.geo.tailspace as usize;
        self.geo
            .classes
            .iter()
            .filter(|c| c.count > 0)
            .map(|c| (c.size as usize).saturating_sub(overhead))
            .max()
            .unwrap_or(0)
    }

    /// The local shard of the calling process (`pid % shards`).
    pub fn local_shard(&self) -> u32 {
        self.shard_of_pid(self.pid())
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

    /// Both variants, for tests that must hold for each.
    const VARIANTS: [Variant; 2] = [Variant::SHIPPED, Variant::BEST];

    /// A fresh object name for `tag`, unlinked when dropped.
    fn name(tag: &str) -> TestName {
        TestName::new(tag, BaselinePool::unlink)
    }

    /// A small pool: 512 B × 8 and 2 KiB × 4, with small head/tailspace.
    fn small(n: &TestName, shards: u32, v: Variant) -> BaselinePool {
        BaselinePool::create(&n.name, &[(512, 8), (2048, 4)], shards, 64, 16, v).expect("create")
    }

    /// A shard count `s` in `2..` for which this process is not in shard 0.
    fn shards_avoiding_zero() -> u32 {
        let pid = std::process::id();
        (2..64)
            .find(|&s| {
                let rem = pid % s;
                rem != 0
            })
            .expect("some shard count")
    }

    #[test]
    fn round_trip_both_variants() {
        for v in VARIANTS {
            let n = name("rt");
            let pool = small(&n, DEFAULT_SHARDS, v);
            let before = pool.free_counts();
            let off = pool.alloc(100).expect("alloc");
            let (p, len) = pool.data(off);
            assert_eq!(len, 100);
            // SAFETY: `p` is the 100-byte window of a block we hold.
            let window = unsafe { std::slice::from_raw_parts_mut(p, len) };
            window.fill(0xA5);
            assert_eq!(pool.allocator_pid(off), std::process::id() as i32);
            assert_eq!(pool.data(off).1, 100);
            pool.free(off);
            assert_eq!(pool.allocator_pid(off), 0);
            let after = pool.free_counts();
            assert_eq!(
                before
                    .iter()
                    .map(|c| c.iter().sum::<u32>())
                    .collect::<Vec<_>>(),
                after
                    .iter()
                    .map(|c| c.iter().sum::<u32>())
                    .collect::<Vec<_>>(),
                "{}",
                v.label()
            );
        }
    }

    #[test]
    fn labels() {
        assert_eq!(Variant::SHIPPED.label(), "c-shipped");
        assert_eq!(Variant::BEST.label(), "c-best");
    }

    #[test]
    fn exhaustion_after_exact_count_and_sizes() {
        for v in VARIANTS {
            let n = name("ex");
            let pool = small(&n, DEFAULT_SHARDS, v);
            let overhead = BLOCK_HEADER_SIZE + 64 + 16;
            // The largest request the 512 B class takes.
            let fit = 512 - overhead;
            let mut held = Vec::new();
            for _ in 0..8 {
                held.push(pool.alloc(fit).expect("alloc within count"));
            }
            assert!(matches!(pool.alloc(fit), Err(BaselineError::Exhausted)));
            // One byte more goes to the 2 KiB class (4 blocks).
            for _ in 0..4 {
                held.push(pool.alloc(fit + 1).expect("next class"));
            }
            assert!(matches!(pool.alloc(fit + 1), Err(BaselineError::Exhausted)));
            assert!(matches!(
                pool.alloc(2048 - overhead + 1),
                Err(BaselineError::TooLarge)
            ));
            assert!(matches!(
                pool.alloc_b(1 << 20, None),
                Err(BaselineError::TooLarge)
            ));
            assert_eq!(pool.max_len(), 2048 - overhead);
            let mut sorted = held.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 12, "distinct blocks");
            assert!(held.contains(&0), "the block at offset 0 is reachable");
            for off in held {
                pool.free(off);
            }
            let total: u32 = pool.free_counts().iter().flatten().sum();
            assert_eq!(total, 12);
        }
    }

    #[test]
    fn lazy_distribution() {
        let n = name("lazy");
        let pool = BaselinePool::create(
            &n.name,
            &GSPP_CLASSES,
            DEFAULT_SHARDS,
            DEFAULT_HEADSPACE,
            DEFAULT_TAILSPACE,
            Variant::BEST,
        )
        .expect("create");
        let counts = pool.free_counts();
        for (c, (_, count)) in GSPP_CLASSES.iter().enumerate() {
            assert_eq!(counts[c], vec![*count, 0, 0, 0]);
        }
        let (hdr, shard) = pool.metadata_bytes();
        assert_eq!(hdr, 28);
        assert!(shard >= size_of::<libc::pthread_mutex_t>() + size_of::<libc::pthread_cond_t>());
        assert!(
            pool.mapped_size()
                >= GSPP_CLASSES
                    .iter()
                    .map(|&(s, c)| s as usize * c as usize)
                    .sum::<usize>()
        );
    }

    #[test]
    fn free_returns_block_to_allocator_shard_and_local_first() {
        for v in VARIANTS {
            let shards = shards_avoiding_zero();
            let n = name("mig");
            let pool = small(&n, shards, v);
            let local = pool.local_shard();
            assert_eq!(local, std::process::id() % shards);
            assert_ne!(local, 0);
            // All blocks are in shard 0: the allocation steals from it.
            let a = pool.alloc(10).expect("alloc");
            assert_eq!(pool.free_counts()[0][0], 7);
            pool.free(a);
            let counts = pool.free_counts();
            assert_eq!(counts[0][0], 7);
            assert_eq!(
                counts[0][local as usize], 1,
                "freed into the allocator's shard"
            );
            // The local shard is tried first: the same block comes back.
            let b = pool.alloc(10).expect("alloc");
            assert_eq!(a, b);
            assert_eq!(pool.free_counts()[0][local as usize], 0);
            pool.free(b);
        }
    }

    #[test]
    fn stealing_follows_shard_order() {
        // With blocks only in shard 0 and shard local+1, the allocator must
        // take the one in local+1 before going round to shard 0. Pick a
        // shard count for which neither the local shard nor the next one is
        // shard 0.
        let pid = std::process::id();
        let shards = (3..64)
            .find(|&s| {
                let rem = pid % s;
                rem != 0 && rem != s - 1
            })
            .expect("some shard count");
        let n = name("steal");
        let pool = small(&n, shards, Variant::SHIPPED);
        let local = pool.local_shard();
        let next = local + 1;
        assert!(local != 0 && next < shards);
        let off = pool.alloc(10).expect("alloc");
        // Pretend another process with local shard `next` allocated it.
        pool.block(off).allocator_pid.store(next as i32, Relaxed);
        pool.free(off);
        assert_eq!(pool.free_counts()[0][next as usize], 1);
        let again = pool.alloc(10).expect("alloc");
        assert_eq!(again, off, "local+1 is tried before shard 0");
        pool.free(again);
    }

    #[test]
    fn alloc_b_times_out() {
        for v in VARIANTS {
            let n = name("to");
            let pool = small(&n, DEFAULT_SHARDS, v);
            let held: Vec<u32> = (0..8).map(|_| pool.alloc(1).expect("alloc")).collect();
            let timeout = Duration::from_millis(150);
            let start = Instant::now();
            let r = pool.alloc_b(1, Some(timeout));
            let took = start.elapsed();
            assert!(matches!(r, Err(BaselineError::Timeout)), "{r:?}");
            assert!(took >= timeout, "returned early: {took:?}");
            assert!(
                took < timeout + Duration::from_millis(500),
                "returned late: {took:?}"
            );
            let start = Instant::now();
            assert!(matches!(
                pool.alloc_b(1, Some(Duration::ZERO)),
                Err(BaselineError::Timeout)
            ));
            assert!(start.elapsed() < Duration::from_millis(500));
            for off in held {
                pool.free(off);
            }
            assert!(pool.alloc_b(1, Some(timeout)).is_ok());
        }
    }

    #[test]
    fn alloc_b_woken_by_free_into_its_shard() {
        for v in VARIANTS {
            let n = name("wake");
            let pool = Arc::new(small(&n, DEFAULT_SHARDS, v));
            let held: Vec<u32> = (0..8).map(|_| pool.alloc(1).expect("alloc")).collect();
            let waiter = {
                let pool = Arc::clone(&pool);
                std::thread::spawn(move || {
                    let start = Instant::now();
                    let r = pool.alloc_b(1, Some(Duration::from_secs(10)));
                    (r.map_err(|e| e.to_string()), start.elapsed())
                })
            };
            std::thread::sleep(Duration::from_millis(100));
            // Same process, so the freed block goes to the waiter's shard.
            pool.free(held[0]);
            let (r, took) = waiter.join().expect("waiter");
            let off = r.expect("woken with a block");
            assert_eq!(off, held[0]);
            assert!(took < Duration::from_secs(5), "woken late: {took:?}");
            pool.free(off);
            for &off in &held[1..] {
                pool.free(off);
            }
        }
    }

    #[test]
    fn fork_child_allocates_parent_reads_and_frees() {
        for v in VARIANTS {
            let n = name("fork");
            let shards = DEFAULT_SHARDS;
            let pool = small(&n, shards, v);
            // Warm the pid source (and, for the cached variant, register its
            // fork handler) before forking.
            let warm = pool.alloc(1).expect("alloc");
            pool.free(warm);
            let (rd, wr) = test_util::pipe();
            let child = test_util::fork_child(|| {
                let off = match pool.alloc(200) {
                    Ok(off) => off,
                    Err(_) => return 2,
                };
                let (p, len) = pool.data(off);
                for i in 0..len {
                    // SAFETY: `p` is the `len`-byte window of our block.
                    unsafe { p.add(i).write(i as u8 ^ 0x5A) };
                }
                if test_util::write_u32(wr, off) {
                    0
                } else {
                    3
                }
            });
            test_util::close(wr);
            let off = test_util::read_u32(rd);
            test_util::close(rd);
            assert_eq!(test_util::wait_child(child), 0);
            assert_eq!(
                pool.allocator_pid(off),
                child,
                "{}: the child's pid is recorded",
                v.label()
            );
            let (p, len) = pool.data(off);
            assert_eq!(len, 200);
            // SAFETY: the child wrote the window before sending the offset
            // and has exited; we now hold the only reference.
            let bytes = unsafe { std::slice::from_raw_parts(p, len) };
            assert!(bytes.iter().enumerate().all(|(i, &b)| b == i as u8 ^ 0x5A));
            let before = pool.free_counts()[0].clone();
            pool.free(off);
            let after = pool.free_counts()[0].clone();
            let child_shard = (child as u32 % shards) as usize;
            assert_eq!(
                after[child_shard],
                before[child_shard] + 1,
                "freed into the child's shard"
            );
        }
    }

    #[test]
    fn free_into_another_shard_does_not_wake_the_waiter() {
        // The C weakness, reproduced: a block allocated by a process with
        // another local shard is freed into that shard, whose condvar the
        // waiter does not wait on.
        let n = name("xshard");
        let shards = DEFAULT_SHARDS;
        let pool = Arc::new(small(&n, shards, Variant::SHIPPED));
        let mine = pool.local_shard();
        let mut held: Vec<u32> = (0..7).map(|_| pool.alloc(1).expect("alloc")).collect();
        // Fork until a child lands in another shard; it takes the last block.
        let mut theirs = None;
        for _ in 0..16 {
            let (rd, wr) = test_util::pipe();
            let child = test_util::fork_child(|| {
                let p = &*pool;
                let off = if p.local_shard() == mine {
                    u32::MAX
                } else {
                    match p.alloc(1) {
                        Ok(off) => off,
                        Err(_) => return 2,
                    }
                };
                if test_util::write_u32(wr, off) {
                    0
                } else {
                    3
                }
            });
            test_util::close(wr);
            let off = test_util::read_u32(rd);
            test_util::close(rd);
            assert_eq!(test_util::wait_child(child), 0);
            if off != u32::MAX {
                theirs = Some(off);
                break;
            }
        }
        let Some(theirs) = theirs else {
            return; // every child landed in our shard; nothing to show
        };
        assert!(matches!(pool.alloc(1), Err(BaselineError::Exhausted)));
        let waiter = {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                let start = Instant::now();
                let r = pool.alloc_b(1, Some(Duration::from_millis(600)));
                (r.map_err(|e| e.to_string()), start.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        pool.free(theirs);
        let (r, took) = waiter.join().expect("waiter");
        assert_eq!(
            r,
            Err(BaselineError::Timeout.to_string()),
            "not woken by the free"
        );
        assert!(took >= Duration::from_millis(600));
        // The block is there for the next attempt.
        held.push(pool.alloc(1).expect("free block found after the wait"));
        for off in held {
            pool.free(off);
        }
    }

    #[test]
    fn owner_death_is_recovered() {
        for v in VARIANTS {
            let n = name("dead");
            let pool = small(&n, DEFAULT_SHARDS, v);
            // The child dies holding shard 0's mutex of the 512 B class.
            let child = test_util::fork_child(|| {
                std::mem::forget(pool.shard(0, 0).mtx.lock());
                0
            });
            assert_eq!(test_util::wait_child(child), 0);
            // The next locker gets EOWNERDEAD, marks it consistent, goes on.
            let off = pool.alloc(1).expect("alloc after owner death");
            pool.free(off);
            let off = pool.alloc(1).expect("alloc again");
            pool.free(off);
        }
    }

    #[test]
    fn open_sees_initialised_pool() {
        let n = name("open");
        let a = small(&n, DEFAULT_SHARDS, Variant::SHIPPED);
        let b = BaselinePool::open(&n.name, Variant::BEST).expect("open");
        assert_eq!(b.classes(), vec![(512, 8), (2048, 4)]);
        assert_eq!(b.shards(), DEFAULT_SHARDS);
        assert_eq!(b.free_counts(), a.free_counts());
        assert_eq!(b.mapped_size(), a.mapped_size());
        let off = a.alloc(33).expect("alloc");
        let (pa, _) = a.data(off);
        // SAFETY: the window holds 33 bytes of a block we hold.
        unsafe { pa.write(7) };
        let (pb, len) = b.data(off);
        assert_eq!(len, 33);
        // SAFETY: as above, through the other mapping.
        assert_eq!(unsafe { pb.read() }, 7);
        b.free(off);
        assert_eq!(a.free_counts(), b.free_counts());
    }

    #[test]
    fn create_and_open_errors() {
        let n = name("err");
        let _a = small(&n, DEFAULT_SHARDS, Variant::BEST);
        let e = BaselinePool::create(&n.name, &[(512, 8)], 4, 0, 0, Variant::BEST)
            .err()
            .expect("exists");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let missing = name("missing");
        assert!(BaselinePool::open(&missing.name, Variant::BEST).is_err());
        let bad = name("bad");
        assert!(BaselinePool::create(&bad.name, &[(500, 8)], 4, 0, 0, Variant::BEST).is_err());
        assert!(BaselinePool::create(&bad.name, &[(512, 8)], 0, 0, 0, Variant::BEST).is_err());
        assert!(
            BaselinePool::open(&bad.name, Variant::BEST).is_err(),
            "failed creates leave nothing"
        );
    }

    #[test]
    fn threads_hammer_one_pool() {
        let n = name("mt");
        let pool = Arc::new(small(&n, DEFAULT_SHARDS, Variant::SHIPPED));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let pool = Arc::clone(&pool);
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        if let Ok(off) = pool.alloc_b(i % 300, Some(Duration::from_secs(5))) {
                            pool.free(off);
                        } else {
                            panic!("alloc_b failed");
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker");
        }
        let counts = pool.free_counts();
        assert_eq!(counts[0].iter().sum::<u32>(), 8);
        assert_eq!(counts[1].iter().sum::<u32>(), 4);
    }
}
