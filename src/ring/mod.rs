//! The ring that carries packet handles from writer processes to a reader
//! process: lock-free, in its own shared memory object, crash-safe.
//!
//! See [`queue`] for the algorithm and [`layout`] for the segment.

pub mod layout;
pub mod queue;

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::marker::PhantomData;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::{Duration, Instant};

use layout::{RingGeometry, RingHeader, RingView, RING_MAGIC, RING_VERSION};
use queue::{access, Read, Writer};

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::layout::{ARCH, READY};
use crate::platform::{Identity, Os, Platform};
use crate::pool::Pool;
use crate::segment::{self, Region};

/// How a ring may be used (the C design's access control word).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reads and writes.
    ReadWrite,
    /// Writes fail with [`Error::Access`].
    ReadOnly,
    /// Writes fail with [`Error::FlowDown`]; reads return what is queued,
    /// then fail with [`Error::FlowDown`]. Blocked readers and writers are
    /// woken at once.
    FlowDown,
    /// The peer is gone: like `FlowDown`, with [`Error::PeerGone`].
    PeerGone,
}

impl Access {
    fn word(self) -> u32 {
        match self {
            Access::ReadWrite => access::READ_WRITE,
            Access::ReadOnly => access::READ_ONLY,
            Access::FlowDown => access::FLOW_DOWN,
            Access::PeerGone => access::PEER_GONE,
        }
    }

    fn from_word(w: u32) -> Option<Self> {
        Some(match w {
            access::READ_WRITE => Access::ReadWrite,
            access::READ_ONLY => Access::ReadOnly,
            access::FLOW_DOWN => Access::FlowDown,
            access::PEER_GONE => Access::PeerGone,
            _ => return None,
        })
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::ReadWrite => "read-write",
            Access::ReadOnly => "read-only",
            Access::FlowDown => "flow-down",
            Access::PeerGone => "peer-gone",
        })
    }
}

/// How to build a ring.
///
/// ```
/// use ssm::RingConfig;
/// let cfg = RingConfig::new().capacity(4096).max_writers(8);
/// assert_eq!(cfg.slots(), 4096);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingConfig {
    capacity: u32,
    max_writers: u32,
    mode: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl RingConfig {
    /// 1024 slots, 64 writers, mode 0600.
    pub fn new() -> Self {
        Self {
            capacity: 1024,
            max_writers: 64,
            mode: 0o600,
        }
    }
    /// Slots: a power of two from 2 to 2^24.
    pub fn capacity(mut self, slots: u32) -> Self {
        self.capacity = slots;
        self
    }
    /// Writer handles registered at once (1 to 1023).
    pub fn max_writers(mut self, n: u32) -> Self {
        self.max_writers = n;
        self
    }
    /// Permission bits.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }
    /// The capacity.
    pub fn slots(&self) -> u32 {
        self.capacity
    }
}

struct RingMemory {
    name: String,
    region: Region,
    _file: Option<File>,
}

/// A handle on a ring of packet handles in shared memory.
///
/// Any number of processes (or threads, each with its own `Ring`) write;
/// one process at a time reads. A handle registers as a writer on its first
/// write and as the reader on its first read (failing while another live
/// process reads). Like [`Pool`], a `Ring` may move to another thread but
/// not be shared between threads.
///
/// ```
/// use ssm::{Handle, Ring, RingConfig};
/// let name = format!("/ssm-doc-ring-{}", std::process::id());
/// let ring = Ring::create(&name, &RingConfig::new().capacity(8))?;
/// ring.write(Handle::from_raw(42))?;
/// assert_eq!(ring.queued(), 1);
/// assert_eq!(ring.read()?, Handle::from_raw(42));
/// assert!(matches!(ring.read(), Err(ssm::Error::Empty { .. })));
/// ring.destroy()?;
/// # Ok::<(), ssm::Error>(())
/// ```
pub struct Ring {
    view: RingView<'static, Os>,
    writer: Cell<Option<Writer>>,
    reader: Cell<Option<u16>>,
    fork_gen: u64,
    creator: Identity,
    is_creator: bool,
    mem: Box<RingMemory>,
    _not_sync: PhantomData<Cell<()>>,
}

// SAFETY: as for `Pool`: the handle points to shared memory accessed
// through atomics, and its registrations belong to the process.
unsafe impl Send for Ring {}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Ring {
    /// Creates the ring `name` exclusively.
    pub fn create(name: &str, cfg: &RingConfig) -> Result<Ring> {
        let name = segment::object_name(name)?;
        let geo = RingGeometry::new(cfg.capacity, cfg.max_writers)?;
        let file = segment::create(&name, cfg.mode, None)?;
        let built = (|| {
            segment::set_size(&name, &file, geo.total_size)?;
            let region = Region::map(&name, &file, geo.total_size, true)?;
            let base = region.as_ptr();
            // SAFETY: the region is 4096-aligned and at least a page.
            let hdr = unsafe { &*(base as *const RingHeader<Os>) };
            let me = Identity::current();
            hdr.magic.store(RING_MAGIC, Relaxed);
            hdr.version.store(RING_VERSION, Relaxed);
            hdr.capacity.store(geo.capacity, Relaxed);
            hdr.max_writers.store(geo.max_writers, Relaxed);
            hdr.total_size.store(geo.total_size, Relaxed);
            hdr.arch.store(ARCH, Relaxed);
            hdr.mode.store(cfg.mode, Relaxed);
            hdr.creator_pid.store(me.pid, Relaxed);
            hdr.creator_start.store(me.start, Relaxed);
            hdr.created_ns.store(now_ns(), Relaxed);
            let mut ring = Self::attach(name.clone(), geo, region, Some(file))?;
            for i in 0..u64::from(geo.capacity) {
                ring.view.slots[i as usize]
                    .seq
                    .store(queue::Seq::free(i).bits(), Relaxed);
            }
            // Release: the initialised ring before READY.
            hdr.ready.store(READY, Release);
            Os.wake_all(&hdr.ready);
            ring.is_creator = true;
            Ok(ring)
        })();
        if built.is_err() {
            let _ = segment::unlink(&name);
        }
        built
    }

    /// Opens an existing ring, waiting up to two seconds for its creator.
    pub fn open(name: &str) -> Result<Ring> {
        let name = segment::object_name(name)?;
        let file = segment::open(&name, true)?;
        let start = Instant::now();
        let timeout = crate::pool::OPEN_TIMEOUT;
        let len = match segment::size(&name, &file)? {
            0 => segment::wait_for_size(&name, &file, 4096, timeout)?,
            n => n,
        };
        if len < 4096 {
            return Err(Error::LayoutMismatch {
                name,
                detail: format!("the object has {len} bytes, less than a ring header page"),
            });
        }
        let head = Region::map(&name, &file, 4096, true)?;
        // SAFETY: one mapped, aligned page.
        let hdr = unsafe { &*(head.as_ptr() as *const RingHeader<Os>) };
        loop {
            let ready = hdr.ready.load(Acquire);
            if ready == READY {
                break;
            }
            let magic = hdr.magic.load(Relaxed);
            if ready != 0 || (magic != 0 && magic != RING_MAGIC) {
                RingGeometry::read(&name, hdr, len)?;
                return Err(Error::LayoutMismatch {
                    name,
                    detail: format!("unknown readiness word {ready:#x}"),
                });
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(Error::NotReady {
                    name,
                    detail: format!("still being created after {waited:?}"),
                });
            }
            Os.wait(&hdr.ready, ready, Os.deadline(Some(timeout - waited)));
        }
        let geo = RingGeometry::read(&name, hdr, len)?;
        drop(head);
        let region = Region::map(&name, &file, geo.total_size, true)?;
        Self::attach(name, geo, region, Some(file))
    }

    fn attach(name: String, geo: RingGeometry, region: Region, file: Option<File>) -> Result<Ring> {
        let mem = Box::new(RingMemory {
            name,
            region,
            _file: file,
        });
        let base = mem.region.as_ptr();
        // SAFETY: `mem` is boxed and owned by the ring, which only hands
        // out shortened borrows of the view; the region holds the layout.
        let view: RingView<'static, Os> = unsafe {
            let name: &'static str = &*(mem.name.as_str() as *const str);
            RingView::carve(base, geo, name)
        };
        // SAFETY: as above; the header is the first page.
        let hdr = unsafe { &*(base as *const RingHeader<Os>) };
        Ok(Ring {
            view,
            writer: Cell::new(None),
            reader: Cell::new(None),
            fork_gen: crate::pool::fork_generation(),
            creator: Identity {
                pid: hdr.creator_pid.load(Relaxed),
                start: hdr.creator_start.load(Relaxed),
            },
            is_creator: false,
            mem,
            _not_sync: PhantomData,
        })
    }

    #[inline]
    fn view(&self) -> Result<&RingView<'_, Os>> {
        if self.fork_gen != crate::pool::fork_generation() {
            return Err(Error::Forked {
                name: self.mem.name.clone(),
            });
        }
        Ok(&self.view)
    }

    fn writer(&self) -> Result<Writer> {
        if let Some(w) = self.writer.get() {
            return Ok(w);
        }
        let w = self.view()?.attach_writer(Identity::current())?;
        self.writer.set(Some(w));
        Ok(w)
    }

    fn become_reader(&self) -> Result<()> {
        if self.reader.get().is_none() {
            let gen = self.view()?.claim_reader(Identity::current())?;
            self.reader.set(Some(gen));
        }
        Ok(())
    }

    /// Removes the name `name`.
    pub fn unlink(name: &str) -> Result<()> {
        segment::unlink(name)
    }

    /// Removes the ring's name and closes this handle (only the creator
    /// while it runs; see [`Pool::destroy`]).
    pub fn destroy(self) -> Result<()> {
        if !self.is_creator && Os.is_alive(self.creator) {
            return Err(Error::NotCreator {
                pool: self.mem.name.clone(),
                creator: self.creator.pid,
            });
        }
        segment::unlink(&self.mem.name)
    }

    /// The ring's name.
    pub fn name(&self) -> &str {
        &self.mem.name
    }

    /// Slots.
    pub fn capacity(&self) -> u32 {
        self.view.geo.capacity
    }

    /// Values queued (written and not yet read).
    pub fn queued(&self) -> u64 {
        self.view.queued()
    }

    /// The access mode.
    pub fn access(&self) -> Access {
        Access::from_word(self.view.mode()).unwrap_or(Access::PeerGone)
    }

    /// Sets the access mode. Anything but [`Access::ReadWrite`] wakes every
    /// blocked reader and writer at once.
    pub fn set_access(&self, mode: Access) -> Result<()> {
        self.view()?.set_mode(mode.word());
        Ok(())
    }

    /// The pid of the process registered as the reader, if any.
    pub fn reader_pid(&self) -> Option<u32> {
        self.view.reader_pid()
    }

    /// Writes a handle without blocking ([`Error::Full`] when full).
    pub fn write(&self, h: Handle) -> Result<()> {
        let w = self.writer()?;
        if self.view()?.try_write(w, h.into_raw())? {
            Ok(())
        } else {
            Err(Error::Full {
                ring: self.mem.name.clone(),
                capacity: self.capacity(),
            })
        }
    }

    /// Writes a handle, sleeping while the ring is full, for at most
    /// `timeout` (`None`: no limit).
    pub fn write_timeout(&self, h: Handle, timeout: Option<Duration>) -> Result<()> {
        let w = self.writer()?;
        self.view()?.write(w, h.into_raw(), timeout)
    }

    /// Reads a handle without blocking ([`Error::Empty`] when empty;
    /// [`Error::FlowDown`] or [`Error::PeerGone`] once such a ring is
    /// drained).
    pub fn read(&self) -> Result<Handle> {
        self.read_timeout(Some(Duration::ZERO))
    }

    /// Reads a handle, sleeping while the ring is empty, for at most
    /// `timeout` (`None`: no limit).
    pub fn read_timeout(&self, timeout: Option<Duration>) -> Result<Handle> {
        self.become_reader()?;
        let v = self.view()?.read(timeout)?;
        Ok(Handle::from_raw(v))
    }

    /// Reads up to `out.len()` handles without blocking; returns how many.
    pub fn read_batch(&self, out: &mut [Handle]) -> Result<usize> {
        self.become_reader()?;
        let view = self.view()?;
        let mut n = 0;
        while n < out.len() {
            match view.try_read()? {
                Read::Value(v) => {
                    out[n] = Handle::from_raw(v);
                    n += 1;
                }
                _ => break,
            }
        }
        Ok(n)
    }

    /// Waits until everything queued has been read, for at most `timeout`
    /// (the C design's `fini`).
    pub fn fini(&self, timeout: Option<Duration>) -> Result<()> {
        self.view()?.drained(timeout)
    }

    /// If the ring's reader is gone, takes the reader role and releases
    /// every queued handle into `pool`, so that no block is lost with the
    /// ring. Returns how many handles were released (0 if a live reader
    /// remains).
    pub fn drain_into(&self, pool: &Pool) -> Result<u64> {
        let view = self.view()?;
        if self.reader.get().is_none() && view.reader_alive() {
            return Ok(0);
        }
        self.become_reader()?;
        let mut n = 0;
        while let Read::Value(v) = view.try_read()? {
            // A handle whose block a sweep already took back is refused;
            // nothing else to do with it.
            let _ = pool.release(Handle::from_raw(v));
            n += 1;
        }
        Ok(n)
    }

    /// Raw access to the segment's bytes, for the fuzz targets that play a
    /// hostile process.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn raw_segment(&self) -> (*mut u8, usize) {
        (self.mem.region.as_ptr(), self.view.geo.total_size as usize)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.fork_gen != crate::pool::fork_generation() {
            return;
        }
        if let Some(w) = self.writer.get() {
            self.view.detach_writer(w);
        }
        if let Some(gen) = self.reader.get() {
            self.view.release_reader(gen);
        }
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("name", &self.mem.name)
            .field("capacity", &self.capacity())
            .field("queued", &self.queued())
            .field("access", &self.access())
            .finish()
    }
}
