//! The one error type of the crate.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::handle::Handle;

/// Why a handle was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandleFault {
    /// The handle is zero.
    Null,
    /// The block index is past the end of the pool.
    OutOfRange,
    /// The block has been freed and possibly allocated again since the
    /// handle was made (its generation differs).
    Stale,
    /// The block is not allocated (it is free or cached).
    NotAllocated,
    /// Every reference the handle stood for has already been released.
    Released,
    /// The block already holds the largest number of references.
    TooManyReferences,
    /// A [`PacketBuf`](crate::PacketBuf) (in this or another process)
    /// holds the block's bytes; only its holder may use them.
    InUse,
}

impl fmt::Display for HandleFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandleFault::Null => "the handle is null",
            HandleFault::OutOfRange => "the block index is outside the pool",
            HandleFault::Stale => "the block was freed and reused since the handle was made",
            HandleFault::NotAllocated => "the block is not allocated",
            HandleFault::Released => "all references of this allocation were already released",
            HandleFault::TooManyReferences => {
                "the block already holds the maximum number of references"
            }
            HandleFault::InUse => "a packet buffer holds the block (in this or another process)",
        })
    }
}

/// Which end of a packet's data window an operation concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The front (headspace).
    Head,
    /// The back (tailspace).
    Tail,
}

/// Everything that can go wrong in this crate.
///
/// Each message says what failed, on which pool or ring, and what to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No size class can hold a packet of the requested length.
    TooLarge {
        /// Pool name.
        pool: String,
        /// Requested payload length.
        requested: usize,
        /// Largest payload any class can hold.
        max: usize,
    },
    /// Every block of the size class that fits is in use.
    Exhausted {
        /// Pool name.
        pool: String,
        /// Block size of the class.
        class_size: u32,
        /// Blocks in the class.
        blocks: u32,
    },
    /// A blocking call gave up.
    Timeout {
        /// Pool or ring name.
        name: String,
        /// How long it waited.
        waited: Duration,
    },
    /// A handle does not name a live allocation.
    InvalidHandle {
        /// Pool name.
        pool: String,
        /// The handle.
        handle: Handle,
        /// Why.
        fault: HandleFault,
    },
    /// Shared memory holds something no well-behaved process writes.
    Corrupted {
        /// Pool or ring name.
        name: String,
        /// What was found, and where.
        detail: String,
    },
    /// `create` found an object of that name.
    Exists {
        /// Object name.
        name: String,
    },
    /// No object of that name.
    NotFound {
        /// Object name.
        name: String,
    },
    /// The operating system refused access.
    PermissionDenied {
        /// Object name.
        name: String,
        /// What was attempted.
        op: &'static str,
    },
    /// The object is not a segment of this library, or of another layout
    /// version, or its recorded layout does not fit its size.
    LayoutMismatch {
        /// Object name.
        name: String,
        /// What did not match.
        detail: String,
    },
    /// The object's creator has not finished initialising it.
    NotReady {
        /// Object name.
        name: String,
        /// What was seen.
        detail: String,
    },
    /// Every registry slot of the pool is taken by a live process.
    RegistryFull {
        /// Pool name.
        pool: String,
        /// Number of slots.
        slots: u32,
    },
    /// A configuration was rejected.
    InvalidConfig {
        /// What is wrong with it.
        detail: String,
    },
    /// A segment name was rejected.
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        detail: &'static str,
    },
    /// A packet window operation needs more room than the block has.
    NoRoom {
        /// Pool name.
        pool: String,
        /// Which end.
        side: Side,
        /// Bytes requested.
        requested: usize,
        /// Bytes available at that end.
        available: usize,
    },
    /// `reclaim(pid)` was asked for a process that is still running.
    ProcessAlive {
        /// Pool name.
        pool: String,
        /// The process.
        pid: u32,
    },
    /// `destroy` by a process that did not create the pool while the
    /// creator is still running.
    NotCreator {
        /// Pool name.
        pool: String,
        /// The creator.
        creator: u32,
    },
    /// A handle was inherited across `fork`; the child must attach itself.
    Forked {
        /// Pool or ring name.
        name: String,
    },
    /// A ring's access mode forbids the operation.
    Access {
        /// Ring name.
        ring: String,
        /// The mode in force.
        mode: &'static str,
        /// What was attempted.
        op: &'static str,
    },
    /// The ring is full (non-blocking write).
    Full {
        /// Ring name.
        ring: String,
        /// Its capacity.
        capacity: u32,
    },
    /// The ring is empty (non-blocking read).
    Empty {
        /// Ring name.
        ring: String,
    },
    /// The flow was taken down and everything queued has been read.
    FlowDown {
        /// Ring name.
        ring: String,
    },
    /// The peer process of the ring is gone.
    PeerGone {
        /// Ring name.
        ring: String,
    },
    /// A system call failed.
    Io {
        /// Object name.
        name: String,
        /// The call.
        op: &'static str,
        /// The error, with its errno.
        source: io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The errno of an [`Error::Io`], if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// Maps a failed system call on `name` to the most specific variant.
    pub(crate) fn from_os(name: &str, op: &'static str, err: io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::EEXIST) => Error::Exists { name: name.into() },
            Some(libc::ENOENT) => Error::NotFound { name: name.into() },
            Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied {
                name: name.into(),
                op,
            },
            _ => Error::Io {
                name: name.into(),
                op,
                source: err,
            },
        }
    }

    /// The last OS error of a failed call.
    pub(crate) fn last_os(name: &str, op: &'static str) -> Self {
        Self::from_os(name, op, io::Error::last_os_error())
    }

    pub(crate) fn corrupted(name: &str, detail: impl Into<String>) -> Self {
        Error::Corrupted {
            name: name.into(),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TooLarge {
                pool,
                requested,
                max,
            } => write!(
                f,
                "pool '{pool}': a {requested}-byte packet fits no size class (the largest holds \
                 {max} bytes); split the packet or create the pool with a larger class"
            ),
            Error::Exhausted {
                pool,
                class_size,
                blocks,
            } => write!(
                f,
                "pool '{pool}': all {blocks} blocks of the {class_size}-byte class are in use; \
                 free some, wait with alloc_timeout, or give the class more blocks"
            ),
            Error::Timeout { name, waited } => write!(
                f,
                "'{name}': gave up after waiting {waited:?}; nothing became available in time"
            ),
            Error::InvalidHandle {
                pool,
                handle,
                fault,
            } => write!(
                f,
                "pool '{pool}': handle {handle} refused: {fault}; a handle is valid for one \
                 allocation and each of its references is released once"
            ),
            Error::Corrupted { name, detail } => write!(
                f,
                "'{name}' is corrupted: {detail}; run `ssm audit` on it, and recreate it if \
                 the damage persists"
            ),
            Error::Exists { name } => write!(
                f,
                "'{name}' already exists; open it instead, or destroy it first"
            ),
            Error::NotFound { name } => write!(
                f,
                "'{name}' does not exist; create it first (see /dev/shm for what exists)"
            ),
            Error::PermissionDenied { name, op } => write!(
                f,
                "'{name}': permission denied for {op}; check the object's owner and mode \
                 (group pools are 0660, per-user pools 0600)"
            ),
            Error::LayoutMismatch { name, detail } => write!(
                f,
                "'{name}' is not a usable segment of this library: {detail}"
            ),
            Error::NotReady { name, detail } => write!(
                f,
                "'{name}' is not initialised: {detail}; retry, or destroy it if its creator died"
            ),
            Error::RegistryFull { pool, slots } => write!(
                f,
                "pool '{pool}': all {slots} process slots are taken by live processes; close \
                 unused handles or create the pool with a larger max_processes"
            ),
            Error::InvalidConfig { detail } => write!(f, "invalid configuration: {detail}"),
            Error::InvalidName { name, detail } => write!(f, "invalid name '{name}': {detail}"),
            Error::NoRoom {
                pool,
                side,
                requested,
                available,
            } => write!(
                f,
                "pool '{pool}': cannot grow the packet by {requested} bytes at the {}, only \
                 {available} are left; allocate a larger packet",
                match side {
                    Side::Head => "front",
                    Side::Tail => "back",
                }
            ),
            Error::ProcessAlive { pool, pid } => write!(
                f,
                "pool '{pool}': process {pid} is still running; only a dead process's blocks \
                 can be reclaimed"
            ),
            Error::NotCreator { pool, creator } => write!(
                f,
                "pool '{pool}': only its creator (pid {creator}, still running) may destroy it; \
                 use Pool::unlink to remove the name regardless"
            ),
            Error::Forked { name } => write!(
                f,
                "'{name}': this handle was inherited across fork(); open the segment again in \
                 the child"
            ),
            Error::Access { ring, mode, op } => write!(
                f,
                "ring '{ring}': {op} is not allowed while the ring is {mode}"
            ),
            Error::Full { ring, capacity } => write!(
                f,
                "ring '{ring}': all {capacity} slots are full; retry, or use a blocking write"
            ),
            Error::Empty { ring } => write!(
                f,
                "ring '{ring}': nothing to read; retry, or use a blocking read"
            ),
            Error::FlowDown { ring } => write!(
                f,
                "ring '{ring}': the flow is down and everything queued has been read"
            ),
            Error::PeerGone { ring } => write!(f, "ring '{ring}': the peer process is gone"),
            Error::Io { name, op, source } => write!(f, "'{name}': {op} failed: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
