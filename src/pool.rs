//! The pool: a segment of packet buffers shared by many processes.

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::marker::PhantomData;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::allocator::{Attached, Block};
use crate::audit::{self, AuditReport};
use crate::block::{kind, Window};
use crate::config::PoolConfig;
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::layout::{self, ClassDesc, Geometry, Header, Segment, HEADER_SIZE, READY};
use crate::packet::PacketBuf;
use crate::platform::{Identity, Os, Platform};
use crate::reclaim::{self, ReclaimReport, Target};
use crate::registry;
use crate::segment::{self, Region};
use crate::stats::{self, Stats};

/// How long [`Pool::open`] waits for a concurrent creator to finish.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(2);

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static FORK_HOOK: Once = Once::new();

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// The fork generation of this process: incremented in every child right
/// after `fork`, so a handle can tell that it was inherited.
pub(crate) fn fork_generation() -> u64 {
    FORK_HOOK.call_once(|| {
        // SAFETY: registers a handler that only does an atomic increment,
        // which is async-signal-safe as a fork child handler must be.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    FORK_GENERATION.load(Ordering::Relaxed)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The memory behind a pool handle; boxed so that the typed view borrowing
/// from it stays valid when the handle moves.
struct Memory {
    name: String,
    geo: Geometry,
    region: Region,
    _file: Option<File>,
}

/// A handle on a packet-buffer pool in shared memory.
///
/// One `Pool` is one attachment: it takes a slot in the pool's process
/// registry and has its own caches. It may be moved to another thread but
/// not shared between threads; a thread that needs the pool opens its own
/// handle with [`Pool::open`]. Dropping the handle returns its cached blocks
/// and releases its slot (a slot that still owns allocations, for example
/// blocks sent as handles and not yet taken by the receiver, stays
/// registered until a sweep finds the process gone).
///
/// ```
/// use ssm::{Pool, PoolConfig};
/// let name = format!("/ssm-doc-pool-{}", std::process::id());
/// let pool = Pool::create(&name, &PoolConfig::new().class(512, 64).headspace(64))?;
/// let mut pkt = pool.alloc(100)?;
/// pkt.copy_from_slice(&[7; 100]);
/// let handle = pkt.into_handle();          // travels to another process...
/// let pkt = pool.get(handle)?;             // ...which takes it over
/// assert_eq!(pkt.len(), 100);
/// drop(pkt);                               // the last reference frees it
/// assert_eq!(pool.stats().allocated(), 0);
/// pool.destroy()?;
/// # Ok::<(), ssm::Error>(())
/// ```
pub struct Pool {
    att: Attached<'static, Os>,
    fork_gen: u64,
    creator: Identity,
    is_creator: bool,
    base: *mut u8,
    /// What the sweep run by `open` after taking over a dead process's
    /// registry slot recovered, until `reclaim_dead` reports it.
    takeover: Cell<Option<ReclaimReport>>,
    mem: Box<Memory>,
    _not_sync: PhantomData<Cell<()>>,
}

// SAFETY: a handle may move to another thread: everything it points to is
// shared memory accessed through atomics, and its registry slot belongs to
// the process, not to a thread. It is not `Sync` (see `_not_sync`): its
// caches have a single writer.
unsafe impl Send for Pool {}

impl Pool {
    /// Creates the pool `name` (a leading `/` is added if missing) with
    /// `cfg`; fails with [`Error::Exists`] if an object of that name exists.
    ///
    /// The object is sized, mapped and initialised before its header says
    /// ready, so a concurrent [`Pool::open`] never sees a half-built pool.
    pub fn create(name: &str, cfg: &PoolConfig) -> Result<Pool> {
        let name = segment::object_name(name)?;
        let geo = Geometry::new(cfg)?;
        let file = segment::create(&name, cfg.mode, cfg.owner)?;
        let built = (|| {
            segment::set_size(&name, &file, geo.total_size)?;
            let region = Region::map(&name, &file, geo.total_size, true)?;
            Self::build(name.clone(), geo, region, Some(file), cfg.mode)
        })();
        if built.is_err() {
            let _ = segment::unlink(&name);
        }
        built
    }

    /// Creates a pool in this process's own memory: the same algorithm and
    /// layout, no name, not shared with other processes. For tests and for
    /// single-process use.
    pub fn private(cfg: &PoolConfig) -> Result<Pool> {
        let geo = Geometry::new(cfg)?;
        let region = Region::heap(geo.total_size as usize);
        Self::build("(private)".into(), geo, region, None, cfg.mode)
    }

    fn build(
        name: String,
        geo: Geometry,
        region: Region,
        file: Option<File>,
        mode: u32,
    ) -> Result<Pool> {
        let base = region.as_ptr();
        // SAFETY: the region is 4096-aligned and at least HEADER_SIZE bytes;
        // the header and the class table are atomics valid for any bits.
        let (hdr, table) = unsafe { header_at(base, geo.classes.len()) };
        geo.write_header(hdr, table, mode);
        let me = Identity::current();
        hdr.creator_pid.store(me.pid, Relaxed);
        hdr.creator_start.store(me.start, Relaxed);
        hdr.created_ns.store(now_ns(), Relaxed);
        let mut pool = Self::attach(name, geo, region, file, |seg| {
            layout::init_segment(seg);
            Ok(())
        })?;
        // SAFETY: as above.
        let (hdr, _) = unsafe { header_at(base, 0) };
        // Release: every initialising store above happens before an opener
        // that acquires READY.
        hdr.ready.store(READY, Release);
        Os.wake_all(&hdr.ready);
        pool.is_creator = true;
        Ok(pool)
    }

    /// Opens the existing pool `name`, waiting up to [`OPEN_TIMEOUT`] for a
    /// concurrent creator to finish.
    pub fn open(name: &str) -> Result<Pool> {
        Self::open_timeout(name, OPEN_TIMEOUT)
    }

    /// Opens the existing pool `name`, waiting up to `timeout` for a
    /// concurrent creator to finish.
    ///
    /// Fails with [`Error::NotFound`], [`Error::PermissionDenied`],
    /// [`Error::LayoutMismatch`] (not a pool of this library, another layout
    /// version, or truncated), [`Error::NotReady`] (the creator has not
    /// finished, or died while creating it) or [`Error::RegistryFull`].
    pub fn open_timeout(name: &str, timeout: Duration) -> Result<Pool> {
        let name = segment::object_name(name)?;
        let file = segment::open(&name, true)?;
        let (geo, region) = map_ready(&name, &file, true, timeout)?;
        Self::attach(name, geo, region, Some(file), |_| Ok(()))
    }

    /// Attaches to a mapped, initialised (or being initialised by `init`)
    /// segment.
    fn attach(
        name: String,
        geo: Geometry,
        region: Region,
        file: Option<File>,
        init: impl FnOnce(&Segment<'_, Os>) -> Result<()>,
    ) -> Result<Pool> {
        let mem = Box::new(Memory {
            name,
            geo,
            region,
            _file: file,
        });
        let base = mem.region.as_ptr();
        // SAFETY: `mem` is boxed and owned by the returned pool, which never
        // hands out the `'static` view: every use goes through `&self` and
        // shortens it. The region holds `geo.total_size` bytes (checked by
        // `map_ready`, or allocated so by `create`/`private`).
        let seg: Segment<'static, Os> = unsafe {
            let geo: &'static Geometry = &*(&mem.geo as *const Geometry);
            let name: &'static str = &*(mem.name.as_str() as *const str);
            Segment::carve(base, geo, name)
        };
        init(&seg)?;
        let who = Identity::current();
        let (me, took_over) = match registry::attach(&seg, who, now_ns()) {
            Ok(me) => (me, false),
            Err(Error::RegistryFull { .. }) => (registry::take_over(&seg, who, now_ns())?, true),
            Err(e) => return Err(e),
        };
        // SAFETY: as in `build`.
        let (hdr, _) = unsafe { header_at(base, 0) };
        let creator = Identity {
            pid: hdr.creator_pid.load(Relaxed),
            start: hdr.creator_start.load(Relaxed),
        };
        let pool = Pool {
            att: Attached::new(seg, me),
            fork_gen: fork_generation(),
            creator,
            is_creator: false,
            base,
            takeover: Cell::new(None),
            mem,
            _not_sync: PhantomData,
        };
        if took_over {
            // The slot's previous process left blocks behind.
            let r = reclaim::sweep(&pool.att, Target::Dead)?;
            pool.takeover.set(Some(r));
        }
        Ok(pool)
    }

    /// Removes the name `name`. Processes that have the pool open keep
    /// using it; the memory goes when the last one closes it.
    pub fn unlink(name: &str) -> Result<()> {
        segment::unlink(name)
    }

    /// Removes the pool's name and closes this handle. Only the creator
    /// may do so while it runs ([`Error::NotCreator`]); afterwards anyone
    /// may. Use [`Pool::unlink`] to remove a name regardless.
    pub fn destroy(self) -> Result<()> {
        if !self.is_creator && self.creator.pid != 0 && Os.is_alive(self.creator) {
            return Err(Error::NotCreator {
                pool: self.mem.name.clone(),
                creator: self.creator.pid,
            });
        }
        if self.mem._file.is_some() {
            segment::unlink(&self.mem.name)?;
        }
        Ok(())
    }

    #[inline]
    fn att(&self) -> Result<&Attached<'_, Os>> {
        if self.fork_gen != FORK_GENERATION.load(Ordering::Relaxed) {
            return Err(self.forked());
        }
        Ok(&self.att)
    }

    #[cold]
    #[inline(never)]
    fn forked(&self) -> Error {
        Error::Forked {
            name: self.mem.name.clone(),
        }
    }

    /// The typed view of the segment.
    #[inline]
    pub(crate) fn segment(&self) -> &Segment<'_, Os> {
        &self.att.seg
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.mem.name
    }

    /// The configuration the pool was created with (permission bits as
    /// requested at creation).
    pub fn config(&self) -> PoolConfig {
        // SAFETY: as in `build`.
        let (hdr, _) = unsafe { header_at(self.base, 0) };
        self.mem.geo.config().mode(hdr.mode.load(Relaxed))
    }

    /// The largest payload a packet can have.
    pub fn max_payload(&self) -> usize {
        self.mem.geo.max_payload()
    }

    /// Bytes of shared memory the pool uses.
    pub fn mapped_size(&self) -> u64 {
        self.mem.geo.total_size
    }

    /// This handle's registry slot.
    pub fn slot(&self) -> u32 {
        self.att.me.slot
    }

    /// The pid of the process that created the pool.
    pub fn creator_pid(&self) -> u32 {
        self.creator.pid
    }

    #[inline]
    fn class_for(&self, len: usize) -> Result<usize> {
        match self.mem.geo.class_for(len) {
            Some(c) => Ok(c),
            None => Err(self.too_large(len)),
        }
    }

    #[cold]
    #[inline(never)]
    fn too_large(&self, len: usize) -> Error {
        Error::TooLarge {
            pool: self.mem.name.clone(),
            requested: len,
            max: self.mem.geo.max_payload(),
        }
    }

    #[inline]
    fn window(&self, len: usize) -> Window {
        let head = self.mem.geo.headspace;
        Window {
            head,
            tail: head + len as u32,
        }
    }

    /// Allocates a packet of `len` bytes without blocking: the smallest
    /// class whose blocks hold headspace, `len` and tailspace. The bytes
    /// are not cleared.
    ///
    /// Fails with [`Error::TooLarge`] when no class fits and
    /// [`Error::Exhausted`] when every block of the class is in use.
    #[inline(always)]
    pub fn alloc(&self, len: usize) -> Result<PacketBuf<'_>> {
        let att = self.att()?;
        let class = self.class_for(len)?;
        let w = self.window(len);
        let blk = att.alloc(class, w)?;
        Ok(PacketBuf::new(self, blk, w))
    }

    /// Allocates a packet of `len` bytes, sleeping while its class is
    /// exhausted: until a block is freed in any shard of the class, or
    /// `timeout` passes ([`Error::Timeout`]); `None` waits for ever.
    pub fn alloc_timeout(&self, len: usize, timeout: Option<Duration>) -> Result<PacketBuf<'_>> {
        let att = self.att()?;
        let class = self.class_for(len)?;
        let w = self.window(len);
        let blk = att.alloc_blocking(class, w, timeout)?;
        Ok(PacketBuf::new(self, blk, w))
    }

    /// Takes over the packet named by a handle received from another
    /// process (or from this one): checks that it is a live allocation,
    /// makes this process its owner, and returns the guard that holds the
    /// reference the handle stood for.
    ///
    /// Becoming the owner means the packet survives the death of the
    /// sender. Fails with [`Error::InvalidHandle`] for a stale, forged or
    /// released handle, or one whose block is held by a live guard.
    #[inline]
    pub fn get(&self, handle: Handle) -> Result<PacketBuf<'_>> {
        let att = self.att()?;
        let blk = att.acquire(handle)?;
        let w = self.att.seg.metas[blk.index as usize].window.load(Acquire);
        let size = self.mem.geo.classes[blk.class].size;
        if w.head > w.tail || w.tail > size {
            // Give the reference back as a handle reference.
            let _ = att.unguard(blk);
            return Err(Error::corrupted(
                &self.mem.name,
                format!("block {} has the data window {w:?}", blk.index),
            ));
        }
        Ok(PacketBuf::new(self, blk, w))
    }

    /// Adds a reference to the allocation `handle` names (for example for a
    /// retransmission queue); each reference is dropped once, with
    /// [`Pool::release`] or by a guard.
    pub fn retain(&self, handle: Handle) -> Result<()> {
        self.att()?.retain(handle)
    }

    /// Drops one reference that `handle` stands for, without taking the
    /// packet; the last reference frees the block. A reference held by a
    /// live [`PacketBuf`] cannot be dropped this way.
    pub fn release(&self, handle: Handle) -> Result<()> {
        self.att()?.release(handle).map(|_| ())
    }

    /// A snapshot of free, cached and allocated blocks per class, shard and
    /// process.
    pub fn stats(&self) -> Stats {
        stats::collect(&self.att.seg)
    }

    /// Proves conservation: every block free on exactly one list, held by
    /// a registered process, or in a recorded pending operation. Returns the
    /// counts, or [`Error::Corrupted`] naming the first inconsistency.
    pub fn audit(&self) -> Result<AuditReport> {
        audit::audit(&self.att.seg)
    }

    /// Recovers everything held or left half done by processes that are
    /// gone (including a pid now used by another process), and wakes
    /// blocked allocators. Safe while other processes run, and with other
    /// sweeps at the same time.
    pub fn reclaim_dead(&self) -> Result<ReclaimReport> {
        let mut r = reclaim::sweep(self.att()?, Target::Dead)?;
        if let Some(earlier) = self.takeover.take() {
            r.merge(earlier);
        }
        Ok(r)
    }

    /// Like [`Pool::reclaim_dead`] for the process `pid` only; fails with
    /// [`Error::ProcessAlive`] if it still runs.
    pub fn reclaim(&self, pid: u32) -> Result<ReclaimReport> {
        reclaim::sweep(self.att()?, Target::Pid(pid))
    }

    /// Returns this handle's cached blocks to the shared free lists.
    pub fn flush(&self) -> Result<()> {
        self.att()?.flush_all()
    }

    /// Locks the pool's memory into RAM (`mlock`).
    pub fn mlock(&self) -> Result<()> {
        self.mem.region.mlock(&self.mem.name)
    }

    /// The address of block `blk`'s payload.
    #[inline]
    pub(crate) fn payload(&self, blk: Block) -> *mut u8 {
        let c = &self.mem.geo.classes[blk.class];
        let off = c.payload_off + u64::from(blk.index - c.first) * c.stride;
        // SAFETY: `blk.index` is in class `blk.class` (validated), so
        // `off + c.size <= total_size`, which is mapped.
        unsafe { self.base.add(off as usize) }
    }

    /// The block size of `class`.
    #[inline]
    pub(crate) fn class_size(&self, class: usize) -> u32 {
        self.mem.geo.classes[class].size
    }

    #[inline]
    pub(crate) fn attached(&self) -> Result<&Attached<'_, Os>> {
        self.att()
    }

    /// The attachment, unless this handle was inherited across `fork`.
    #[inline(always)]
    pub(crate) fn attached_quietly(&self) -> Option<&Attached<'_, Os>> {
        (self.fork_gen == FORK_GENERATION.load(Ordering::Relaxed)).then_some(&self.att)
    }

    /// Raw access to the segment's bytes, for the fuzz targets that play a
    /// hostile process.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn raw_segment(&self) -> (*mut u8, usize) {
        (self.base, self.mem.geo.total_size as usize)
    }

    /// Where the shared structures lie in the segment: (what, offset, bytes).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn raw_regions(&self) -> Vec<(&'static str, usize, usize)> {
        let g = &self.mem.geo;
        let span = |a: u64, b: u64| (a as usize, (b - a) as usize);
        let mut v = vec![("header", 0, layout::HEADER_SIZE)];
        for (what, a, b) in [
            ("classes", g.off_classes, g.off_class_hot),
            ("class hot words", g.off_class_hot, g.off_shards),
            ("shard heads", g.off_shards, g.off_slots),
            ("registry", g.off_slots, g.off_mags),
            ("magazines", g.off_mags, g.off_metas),
            ("metadata", g.off_metas, g.off_payload),
        ] {
            let (o, n) = span(a, b);
            v.push((what, o, n));
        }
        v
    }

    /// Re-validates the segment as `open` does, without attaching.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn revalidate(&self) -> Result<()> {
        // SAFETY: as in `build`.
        let (hdr, _) = unsafe { header_at(self.base, 0) };
        Geometry::read(&self.mem.name, hdr, self.mem.region.len() as u64).map(|_| ())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if self.fork_gen != FORK_GENERATION.load(Ordering::Relaxed) {
            // Inherited across fork: the slot is the parent's.
            return;
        }
        let _ = self.att.flush_all();
        let holds_blocks = self.att.seg.metas.iter().any(|m| {
            let st = m.state.load(Relaxed);
            st.owner() == Some(self.att.me) && st.kind() != kind::FREE
        });
        if !holds_blocks {
            registry::detach(&self.att.seg, self.att.me);
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.mem.name)
            .field("slot", &self.att.me.slot)
            .field("classes", &self.mem.geo.classes.len())
            .field("blocks", &self.mem.geo.nblocks)
            .field("bytes", &self.mem.geo.total_size)
            .finish()
    }
}

impl Identity {
    /// The identity of the calling process.
    pub fn current() -> Identity {
        Os.identity()
    }
}

/// The header and the first `n` class descriptors of the segment at `base`.
///
/// # Safety
/// `base` must be 4096-aligned with at least `HEADER_SIZE + 32 * n` mapped
/// bytes that live as long as the returned references are used.
unsafe fn header_at<'a>(base: *mut u8, n: usize) -> (&'a Header<Os>, &'a [ClassDesc<Os>]) {
    // SAFETY: the caller guarantees the bytes are mapped and aligned; the
    // header and descriptors are atomics, valid for any bit pattern.
    unsafe {
        (
            &*(base as *const Header<Os>),
            std::slice::from_raw_parts(base.add(HEADER_SIZE) as *const ClassDesc<Os>, n),
        )
    }
}

/// Maps an existing segment once its creator has finished, and validates
/// its layout against the object's size.
pub(crate) fn map_ready(
    name: &str,
    file: &File,
    writable: bool,
    timeout: Duration,
) -> Result<(Geometry, Region)> {
    let start = Instant::now();
    // The creator sizes the object in one step, right after creating it:
    // an empty object is being created, a short one is something else.
    let len = match segment::size(name, file)? {
        0 => segment::wait_for_size(name, file, HEADER_SIZE as u64, timeout)?,
        n => n,
    };
    if len < layout::PAGE {
        return Err(Error::LayoutMismatch {
            name: name.into(),
            detail: format!("the object has {len} bytes, less than a pool header page"),
        });
    }
    let head = Region::map(name, file, layout::PAGE, writable)?;
    // SAFETY: the mapping is one page, 4096-aligned.
    let (hdr, _) = unsafe { header_at(head.as_ptr(), 0) };
    loop {
        // Acquire: pairs with the creator's release of READY.
        let ready = hdr.ready.load(Acquire);
        if ready == READY {
            break;
        }
        let magic = hdr.magic.load(Relaxed);
        if ready != 0 || (magic != 0 && magic != layout::POOL_MAGIC) {
            // Let the full check name what is wrong.
            Geometry::read(name, hdr, len)?;
            return Err(Error::LayoutMismatch {
                name: name.into(),
                detail: format!("unknown readiness word {ready:#x}"),
            });
        }
        let waited = start.elapsed();
        if waited >= timeout {
            let creator = hdr.creator_pid.load(Relaxed);
            let detail = if creator != 0
                && !Os.is_alive(Identity {
                    pid: creator,
                    start: 0,
                }) {
                format!("its creator (pid {creator}) died before finishing")
            } else {
                format!("still being created after {waited:?}")
            };
            return Err(Error::NotReady {
                name: name.into(),
                detail,
            });
        }
        Os.wait(&hdr.ready, ready, Os.deadline(Some(timeout - waited)));
    }
    let geo = Geometry::read(name, hdr, len)?;
    drop(head);
    let region = Region::map(name, file, geo.total_size, writable)?;
    Ok((geo, region))
}
