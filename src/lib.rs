//! `ssm`: a lock-free, crash-safe packet-buffer pool in POSIX shared memory,
//! shared by the processes of a networking stack, and the ring that carries
//! buffer handles between them.
//!
//! One process allocates a block in a shared [`Pool`], writes a packet into
//! it through a [`PacketBuf`], and passes the block's 64-bit [`Handle`] to
//! another process, which takes the packet with [`Pool::get`], reads it and
//! frees it. No operation takes a lock:
//!
//! - each size class is split into shards whose free lists are Treiber
//!   stacks with a tagged head word, changed only by compare-and-swap, and
//!   whose operations any process can finish ([`freelist`]);
//! - each handle keeps small per-class caches of blocks in shared memory
//!   ([`magazine`]), so the common allocation and free touch no shared line;
//! - blocking allocation sleeps on a futex word in the segment ([`futex`]);
//! - every block records its owner (registry slot and generation), so a
//!   reclaim sweep recovers whatever a dead process held or left half done
//!   ([`reclaim`]), and an audit proves that no block is lost ([`audit`]).
//!
//! The shared memory is untrusted: every index, offset, length and link read
//! from it is validated before it steers a memory access, and a violation is
//! an [`Error`], never undefined behaviour, a panic or an endless loop.
//! `DESIGN.md` describes the layout, the protocols and every crash window.
//!
//! ```
//! use ssm::{Pool, PoolConfig};
//! let pool = Pool::private(&PoolConfig::per_user_pool())?;
//! let mut pkt = pool.alloc(64)?;
//! pkt.fill(0xAB);
//! let h = pkt.into_handle();
//! let pkt = pool.get(h)?;
//! assert!(pkt.iter().all(|&b| b == 0xAB));
//! # Ok::<(), ssm::Error>(())
//! ```

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod allocator;
pub mod audit;
pub mod block;
pub mod config;
pub mod error;
pub mod freelist;
pub mod futex;
pub mod handle;
pub mod inspect;
pub mod layout;
pub mod magazine;
pub mod packet;
pub mod platform;
pub mod pool;
pub mod reclaim;
pub mod registry;
pub mod ring;
pub mod segment;
pub mod stats;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod verify;
pub mod wake;

pub use audit::{AuditReport, ClassAudit};
pub use config::{PoolConfig, SizeClass};
pub use error::{Error, HandleFault, Result, Side};
pub use handle::Handle;
pub use packet::PacketBuf;
pub use platform::Identity;
pub use pool::Pool;
pub use reclaim::{ReclaimReport, RecoveredProcess};
pub use ring::{Access, Ring, RingConfig};
pub use stats::{ClassStats, ProcessState, ProcessStats, Stats};
