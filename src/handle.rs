//! The 64-bit handle that travels between processes.

use std::fmt;

/// Names one allocation of one block: the block's index in the pool and the
/// allocation's generation.
///
/// ```text
///  63                32 31                 0
/// +--------------------+--------------------+
/// |  generation (32)   |  block index (32)  |
/// +--------------------+--------------------+
/// ```
///
/// A handle is what one process sends another (over a ring, a pipe, a
/// socket). It is only a name: every use checks it against the pool, so a
/// stale, forged or already released handle is refused with
/// [`Error::InvalidHandle`](crate::Error::InvalidHandle), never mistaken for
/// another allocation. Generations start at 1, so the zero handle is never
/// valid.
///
/// ```
/// use ssm::Handle;
/// let h = Handle::from_raw(0x0000_0007_0000_002a);
/// assert_eq!(h.index(), 42);
/// assert_eq!(h.generation(), 7);
/// assert_eq!(Handle::from_raw(h.into_raw()), h);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Handle(u64);

impl Handle {
    /// A handle from its 64-bit wire form.
    #[inline]
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
    /// The 64-bit wire form.
    #[inline]
    pub const fn into_raw(self) -> u64 {
        self.0
    }
    /// The handle of block `index`, generation `generation`.
    #[inline]
    pub const fn new(index: u32, generation: u32) -> Self {
        Self(((generation as u64) << 32) | index as u64)
    }
    /// The block index.
    #[inline]
    pub const fn index(self) -> u32 {
        self.0 as u32
    }
    /// The allocation generation.
    #[inline]
    pub const fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle({}@{})", self.index(), self.generation())
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.index(), self.generation())
    }
}

impl From<Handle> for u64 {
    fn from(h: Handle) -> u64 {
        h.0
    }
}
