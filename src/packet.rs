//! Packet buffers: the guard through which a process uses a block's bytes.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering::Relaxed;

use crate::allocator::Block;
use crate::block::Window;
use crate::error::{Error, Result, Side};
use crate::handle::Handle;
use crate::pool::Pool;

/// Exclusive access to one allocated block: its data window and the bytes
/// around it.
///
/// A new packet's data starts after the pool's headspace and leaves at least
/// its tailspace behind, so protocol layers can prepend headers
/// ([`push_head`](PacketBuf::push_head)) and append trailers
/// ([`push_tail`](PacketBuf::push_tail)) without copying. The data is
/// available as a byte slice through `Deref`.
///
/// A guard holds one reference of the allocation. Dropping it releases that
/// reference (the last one frees the block);
/// [`into_handle`](PacketBuf::into_handle) turns it into a [`Handle`] to
/// send to another process, which takes it back with
/// [`Pool::get`](crate::Pool::get). At most one guard exists per block in
/// all processes together, so the bytes are never shared mutably.
///
/// ```
/// use ssm::{Pool, PoolConfig};
/// let pool = Pool::private(&PoolConfig::new().class(512, 8).headspace(64).tailspace(16))?;
/// let mut pkt = pool.alloc(4)?;
/// pkt.copy_from_slice(b"data");
/// pkt.push_head(2)?.copy_from_slice(b"H:");
/// pkt.push_tail(2)?.copy_from_slice(b":T");
/// assert_eq!(&pkt[..], b"H:data:T");
/// pkt.pull_head(2)?;
/// pkt.truncate(4)?;
/// assert_eq!(&pkt[..], b"data");
/// assert_eq!(pkt.headroom(), 64);
/// # Ok::<(), ssm::Error>(())
/// ```
pub struct PacketBuf<'p> {
    pool: &'p Pool,
    /// The block's payload.
    data: *mut u8,
    /// Block index.
    index: u32,
    /// Generation (28 bits) | class << 28: 32 bytes in all keep a guard
    /// cheap to move.
    tag: u32,
    window: Window,
}

const _: () = assert!(crate::config::MAX_CLASSES <= 16 && crate::block::GEN_MAX < 1 << 28);

impl<'p> PacketBuf<'p> {
    #[inline]
    pub(crate) fn new(pool: &'p Pool, block: Block, window: Window) -> Self {
        let data = pool.payload(block);
        Self {
            pool,
            data,
            index: block.index,
            tag: block.gen | (block.class as u32) << 28,
            window,
        }
    }

    #[inline(always)]
    fn block(&self) -> Block {
        Block {
            index: self.index,
            gen: self.tag & crate::block::GEN_MAX,
            class: (self.tag >> 28) as usize,
        }
    }

    /// Size of the block.
    #[inline]
    fn size(&self) -> u32 {
        self.pool.class_size(self.block().class)
    }

    /// The handle naming this allocation.
    #[inline]
    pub fn handle(&self) -> Handle {
        self.block().handle()
    }

    /// Gives up the guard and returns a handle that stands for its
    /// reference: send it to another process (or keep it), which takes the
    /// packet with [`Pool::get`](crate::Pool::get) or drops the reference
    /// with [`Pool::release`](crate::Pool::release).
    #[inline]
    pub fn into_handle(self) -> Handle {
        // ManuallyDrop rather than `forget`: the guard is not moved again.
        let this = std::mem::ManuallyDrop::new(self);
        if let Ok(att) = this.pool.attached() {
            // Cannot fail while we hold the guard.
            let _ = att.unguard(this.block());
        }
        this.handle()
    }

    /// Adds a reference and returns a handle standing for it, for example
    /// to keep the packet for retransmission after sending it.
    pub fn retain(&self) -> Result<Handle> {
        let h = self.handle();
        self.pool.attached()?.retain(h)?;
        Ok(h)
    }

    /// Releases this guard's reference now, reporting any error that
    /// dropping it would ignore.
    #[inline(always)]
    pub fn free(self) -> Result<()> {
        let this = std::mem::ManuallyDrop::new(self);
        match this.pool.attached() {
            Ok(a) => a.drop_guard(this.block()).map(|_| ()),
            Err(e) => Err(e),
        }
    }

    /// Length of the data.
    #[inline]
    pub fn len(&self) -> usize {
        (self.window.tail - self.window.head) as usize
    }

    /// Whether the data is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.window.tail == self.window.head
    }

    /// Bytes free in front of the data.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.window.head as usize
    }

    /// Bytes free behind the data.
    #[inline]
    pub fn tailroom(&self) -> usize {
        (self.size() - self.window.tail) as usize
    }

    /// Size of the block.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.size() as usize
    }

    #[inline]
    fn set_window(&mut self, w: Window) {
        self.window = w;
        // Relaxed: the receiver of the handle acquires it through whatever
        // channel carries the handle.
        self.pool.segment().metas[self.index as usize]
            .window
            .store(w, Relaxed);
    }

    fn no_room(&self, side: Side, requested: usize, available: usize) -> Error {
        Error::NoRoom {
            pool: self.pool.name().into(),
            side,
            requested,
            available,
        }
    }

    /// Grows the data by `n` bytes at the front and returns them
    /// (the C design's `head_alloc`).
    pub fn push_head(&mut self, n: usize) -> Result<&mut [u8]> {
        if n > self.headroom() {
            return Err(self.no_room(Side::Head, n, self.headroom()));
        }
        let w = Window {
            head: self.window.head - n as u32,
            tail: self.window.tail,
        };
        self.set_window(w);
        Ok(&mut self.deref_mut()[..n])
    }

    /// Grows the data by `n` bytes at the back and returns them
    /// (`tail_alloc`).
    pub fn push_tail(&mut self, n: usize) -> Result<&mut [u8]> {
        if n > self.tailroom() {
            return Err(self.no_room(Side::Tail, n, self.tailroom()));
        }
        let w = Window {
            head: self.window.head,
            tail: self.window.tail + n as u32,
        };
        self.set_window(w);
        let len = self.len();
        Ok(&mut self.deref_mut()[len - n..])
    }

    /// Removes `n` bytes from the front of the data (`head_release`).
    pub fn pull_head(&mut self, n: usize) -> Result<()> {
        if n > self.len() {
            return Err(self.no_room(Side::Head, n, self.len()));
        }
        self.set_window(Window {
            head: self.window.head + n as u32,
            tail: self.window.tail,
        });
        Ok(())
    }

    /// Removes `n` bytes from the back of the data (`tail_release`).
    pub fn pull_tail(&mut self, n: usize) -> Result<()> {
        if n > self.len() {
            return Err(self.no_room(Side::Tail, n, self.len()));
        }
        self.set_window(Window {
            head: self.window.head,
            tail: self.window.tail - n as u32,
        });
        Ok(())
    }

    /// Shortens the data to `len` bytes; longer than the data is an error.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len() {
            return Err(self.no_room(Side::Tail, len - self.len(), 0));
        }
        self.set_window(Window {
            head: self.window.head,
            tail: self.window.head + len as u32,
        });
        Ok(())
    }

    /// The whole block, headspace and tailspace included.
    pub fn block_bytes(&mut self) -> &mut [u8] {
        // SAFETY: `data` points to `size` bytes of this block's payload,
        // which this guard accesses exclusively (the guard bit).
        unsafe { std::slice::from_raw_parts_mut(self.data, self.size() as usize) }
    }
}

impl Deref for PacketBuf<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: the window lies inside the block (every window change is
        // checked, and `Pool::get` validates a received one); the guard bit
        // makes this the block's only accessor among well-behaved users.
        unsafe { std::slice::from_raw_parts(self.data.add(self.window.head as usize), self.len()) }
    }
}

impl DerefMut for PacketBuf<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` is exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(self.data.add(self.window.head as usize), self.len())
        }
    }
}

impl AsRef<[u8]> for PacketBuf<'_> {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for PacketBuf<'_> {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl Drop for PacketBuf<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(att) = self.pool.attached_quietly() {
            let b = self.block();
            att.drop_guard_quietly(b.index, b.gen, b.class);
        }
    }
}

impl fmt::Debug for PacketBuf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketBuf")
            .field("handle", &self.handle())
            .field("len", &self.len())
            .field("headroom", &self.headroom())
            .field("tailroom", &self.tailroom())
            .finish()
    }
}
