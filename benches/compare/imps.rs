//! The implementations under comparison behind two small traits, so that
//! every measurement is one generic function compiled for each:
//!
//! * [`Alloc`]: allocate, free, fill and check a payload, send and receive
//!   a block by a 64-bit value (`ssm`: a [`Handle`] taken over with
//!   `Pool::get`; the baseline: the block offset).
//! * [`HandleRing`]: blocking write and read of 64-bit values over the
//!   implementation's own ring.
//!
//! The parent creates each named pool or ring and closes it at once
//! ([`NamedPool`], [`NamedRing`]); workers open it afresh after `fork`
//! (with the [`open_pool!`] and [`open_ring!`] macros) and the name is
//! unlinked when the parent drops the value.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ssm::{Handle, PacketBuf, Pool, PoolConfig, Ring, RingConfig};

use crate::baseline::{BaselinePool, BaselineRing, Variant};

/// One implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Imp {
    /// This library.
    Ssm,
    /// The mutex + condvar baseline in one of its variants.
    C(Variant),
}

/// The implementations in the order they run within a round.
pub const ALL: [Imp; 3] = [Imp::Ssm, Imp::C(Variant::BEST), Imp::C(Variant::SHIPPED)];

impl Imp {
    /// The report label: `ssm`, `c-best`, `c-shipped`.
    pub fn label(self) -> &'static str {
        match self {
            Imp::Ssm => "ssm",
            Imp::C(v) => v.label(),
        }
    }
}

/// A shared memory name unique to this run.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("/ssm-bench-{}-{tag}-{n}", std::process::id())
}

/// The one size class of a benchmark pool.
#[derive(Clone, Copy, Debug)]
pub struct PoolSpec {
    /// Block size in bytes (the baseline's includes its 28-byte header).
    pub block: u32,
    /// Number of blocks.
    pub count: u32,
    /// Shards per class.
    pub shards: u32,
    /// `ssm`'s per-process cache; `None` keeps the default (32).
    pub cache: Option<u32>,
}

impl PoolSpec {
    /// 4096 blocks of 512 bytes, 4 shards, default caches: room for 64-byte
    /// packets after either implementation's 256 + 32 bytes of head- and
    /// tailspace, and for every window, cache and ring in flight.
    pub const THROUGHPUT: PoolSpec = PoolSpec {
        block: 512,
        count: 4096,
        shards: 4,
        cache: None,
    };

    /// `ssm`'s configuration for this spec.
    pub fn ssm_config(&self) -> PoolConfig {
        let cfg = PoolConfig::new()
            .class(self.block, self.count)
            .shards(self.shards);
        match self.cache {
            Some(c) => cfg.cache_size(c),
            None => cfg,
        }
    }
}

/// A pool created by the parent for one experiment; unlinked on drop.
pub struct NamedPool {
    /// Which implementation.
    pub imp: Imp,
    /// Its shared memory name.
    pub name: String,
}

impl NamedPool {
    /// Creates the pool and closes the creator's handle (the parent keeps
    /// no registry slot and no mapping across `fork`).
    pub fn create(imp: Imp, spec: PoolSpec) -> Result<Self, String> {
        let name = unique_name("pool");
        match imp {
            Imp::Ssm => {
                Pool::create(&name, &spec.ssm_config()).map_err(|e| e.to_string())?;
            }
            Imp::C(v) => {
                BaselinePool::create(
                    &name,
                    &[(spec.block, spec.count)],
                    spec.shards,
                    crate::baseline::DEFAULT_HEADSPACE,
                    crate::baseline::DEFAULT_TAILSPACE,
                    v,
                )
                .map_err(|e| e.to_string())?;
            }
        }
        Ok(NamedPool { imp, name })
    }
}

impl NamedPool {
    /// Once the workers are gone: checks that every block is free again,
    /// so that the run neither lost nor leaked one (`ssm`: its audit, which
    /// also proves that no block is on two lists; baseline: the shards'
    /// free counts).
    pub fn check_all_free(&self) -> Result<(), String> {
        let (free, blocks) = match self.imp {
            Imp::Ssm => {
                let p = Pool::open(&self.name).map_err(|e| e.to_string())?;
                let a = p.audit().map_err(|e| format!("audit: {e}"))?;
                (a.free() + a.cached(), a.blocks())
            }
            Imp::C(v) => {
                let p = BaselinePool::open(&self.name, v).map_err(|e| e.to_string())?;
                let free = p
                    .free_counts()
                    .iter()
                    .flatten()
                    .map(|&n| u64::from(n))
                    .sum();
                let blocks = p.classes().iter().map(|&(_, n)| u64::from(n)).sum();
                (free, blocks)
            }
        };
        if free == blocks {
            Ok(())
        } else {
            Err(format!(
                "{} of {blocks} blocks are free after the run",
                free
            ))
        }
    }
}

impl Drop for NamedPool {
    fn drop(&mut self) {
        match self.imp {
            Imp::Ssm => {
                let _ = Pool::unlink(&self.name);
            }
            Imp::C(_) => BaselinePool::unlink(&self.name),
        }
    }
}

/// A ring created by the parent for one experiment; unlinked on drop.
pub struct NamedRing {
    /// Which implementation.
    pub imp: Imp,
    /// Its shared memory name.
    pub name: String,
}

/// Slots of every benchmark ring (both implementations' default).
pub const RING_SLOTS: u32 = 1024;

impl NamedRing {
    /// Creates the ring and closes the creator's handle.
    pub fn create(imp: Imp) -> Result<Self, String> {
        let name = unique_name("ring");
        match imp {
            Imp::Ssm => {
                Ring::create(&name, &RingConfig::new().capacity(RING_SLOTS))
                    .map_err(|e| e.to_string())?;
            }
            Imp::C(v) => {
                BaselineRing::create(&name, RING_SLOTS, v).map_err(|e| e.to_string())?;
            }
        }
        Ok(NamedRing { imp, name })
    }
}

impl Drop for NamedRing {
    fn drop(&mut self) {
        match self.imp {
            Imp::Ssm => {
                let _ = Ring::unlink(&self.name);
            }
            Imp::C(_) => BaselineRing::unlink(&self.name),
        }
    }
}

/// Exit code of a worker that could not open its pool or ring.
pub const OPEN_FAILED: i32 = 3;

/// In a worker: opens the [`NamedPool`] `$np` with the implementation's
/// own `open`, binds it to `$a` (a reference to a type implementing
/// [`Alloc`]) and evaluates `$body`, an `i32` exit code; exits the worker's
/// body with [`OPEN_FAILED`] if the pool cannot be opened.
macro_rules! open_pool {
    ($np:expr, |$a:ident| $body:expr) => {
        match $np.imp {
            $crate::imps::Imp::Ssm => match ssm::Pool::open(&$np.name) {
                Ok(p) => {
                    let $a = &p;
                    $body
                }
                Err(e) => {
                    eprintln!("open {}: {e}", $np.name);
                    $crate::imps::OPEN_FAILED
                }
            },
            $crate::imps::Imp::C(v) => match $crate::baseline::BaselinePool::open(&$np.name, v) {
                Ok(p) => {
                    let $a = &p;
                    $body
                }
                Err(e) => {
                    eprintln!("open {}: {e}", $np.name);
                    $crate::imps::OPEN_FAILED
                }
            },
        }
    };
}

/// In a worker: opens the pool `$np` and the ring `$nr` of the same
/// implementation, binds them to `$a` ([`Alloc`]) and `$r`
/// ([`HandleRing`]) and evaluates `$body`.
macro_rules! open_pool_ring {
    ($np:expr, $nr:expr, |$a:ident, $r:ident| $body:expr) => {
        $crate::imps::open_pool!($np, |$a| $crate::imps::open_ring!($nr, |$r| $body))
    };
}

/// In a worker: opens the [`NamedRing`] `$nr`, binds it to `$r` (a
/// reference to a type implementing [`HandleRing`]) and evaluates `$body`.
macro_rules! open_ring {
    ($nr:expr, |$r:ident| $body:expr) => {
        match $nr.imp {
            $crate::imps::Imp::Ssm => match ssm::Ring::open(&$nr.name) {
                Ok(ring) => {
                    let $r = &ring;
                    $body
                }
                Err(e) => {
                    eprintln!("open {}: {e}", $nr.name);
                    $crate::imps::OPEN_FAILED
                }
            },
            $crate::imps::Imp::C(v) => match $crate::baseline::BaselineRing::open(&$nr.name, v) {
                Ok(ring) => {
                    let $r = &ring;
                    $body
                }
                Err(e) => {
                    eprintln!("open {}: {e}", $nr.name);
                    $crate::imps::OPEN_FAILED
                }
            },
        }
    };
}

pub(crate) use {open_pool, open_pool_ring, open_ring};

/// What the measurements need from a pool.
pub trait Alloc {
    /// An allocated block owned by this process.
    type Buf<'a>
    where
        Self: 'a;

    /// Why an allocation failed.
    type Error;

    /// Allocates a block for `len` bytes without blocking. (A `Result`, as
    /// the implementations return it: converting ssm's to an `Option`
    /// would move the packet guard through memory on every call.)
    fn alloc(&self, len: usize) -> Result<Self::Buf<'_>, Self::Error>;
    /// Allocates a block for `len` bytes, sleeping while the class is
    /// exhausted, at most `timeout`.
    fn alloc_wait(&self, len: usize, timeout: Duration) -> Option<Self::Buf<'_>>;
    /// Frees a block.
    fn free(&self, b: Self::Buf<'_>);
    /// What identifies a block (its handle or offset).
    fn id(&self, b: &Self::Buf<'_>) -> u64;
    /// The data window of a block.
    fn payload<'b>(&self, b: &'b mut Self::Buf<'_>) -> &'b mut [u8];
    /// Gives a block up as a 64-bit value for another process.
    fn send(&self, b: Self::Buf<'_>) -> u64;
    /// Takes over a block sent by another process.
    fn receive(&self, v: u64) -> Option<Self::Buf<'_>>;
    /// The shard this process allocates from first and frees into.
    fn local_shard(&self) -> u32;
}

impl Alloc for Pool {
    type Buf<'a> = PacketBuf<'a>;
    type Error = ssm::Error;

    #[inline(always)]
    fn alloc(&self, len: usize) -> Result<PacketBuf<'_>, ssm::Error> {
        Pool::alloc(self, len)
    }

    fn alloc_wait(&self, len: usize, timeout: Duration) -> Option<PacketBuf<'_>> {
        self.alloc_timeout(len, Some(timeout)).ok()
    }

    #[inline(always)]
    fn free(&self, b: PacketBuf<'_>) {
        // The explicit free (dropping the guard does the same, through a
        // drop shim the compiler may not inline across codegen units).
        let _ = b.free();
    }

    #[inline(always)]
    fn id(&self, b: &PacketBuf<'_>) -> u64 {
        b.handle().into_raw()
    }

    #[inline]
    fn payload<'b>(&self, b: &'b mut PacketBuf<'_>) -> &'b mut [u8] {
        &mut b[..]
    }

    #[inline]
    fn send(&self, b: PacketBuf<'_>) -> u64 {
        b.into_handle().into_raw()
    }

    #[inline]
    fn receive(&self, v: u64) -> Option<PacketBuf<'_>> {
        self.get(Handle::from_raw(v)).ok()
    }

    fn local_shard(&self) -> u32 {
        self.slot() % self.config().shard_count()
    }
}

impl Alloc for BaselinePool {
    type Buf<'a> = u32;
    type Error = crate::baseline::BaselineError;

    #[inline(always)]
    fn alloc(&self, len: usize) -> Result<u32, crate::baseline::BaselineError> {
        BaselinePool::alloc(self, len)
    }

    fn alloc_wait(&self, len: usize, timeout: Duration) -> Option<u32> {
        self.alloc_b(len, Some(timeout)).ok()
    }

    #[inline(always)]
    fn free(&self, off: u32) {
        BaselinePool::free(self, off);
    }

    #[inline(always)]
    fn id(&self, off: &u32) -> u64 {
        u64::from(*off)
    }

    #[inline]
    fn payload<'b>(&self, off: &'b mut u32) -> &'b mut [u8] {
        let (p, len) = self.data(*off);
        // SAFETY: `data` checked that the window lies inside the mapping,
        // which outlives the borrow of `self`; the block is allocated to
        // this process and reached only through this token while it is
        // borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(p, len) }
    }

    #[inline]
    fn send(&self, off: u32) -> u64 {
        u64::from(off)
    }

    #[inline]
    fn receive(&self, v: u64) -> Option<u32> {
        u32::try_from(v).ok()
    }

    fn local_shard(&self) -> u32 {
        BaselinePool::local_shard(self)
    }
}

/// What the measurements need from a ring of 64-bit values.
pub trait HandleRing {
    /// Writes `v`, sleeping while the ring is full, at most `timeout`.
    fn put(&self, v: u64, timeout: Duration) -> bool;
    /// Reads a value, sleeping while the ring is empty, at most `timeout`.
    fn take(&self, timeout: Duration) -> Option<u64>;
}

impl HandleRing for Ring {
    #[inline]
    fn put(&self, v: u64, timeout: Duration) -> bool {
        self.write_timeout(Handle::from_raw(v), Some(timeout))
            .is_ok()
    }

    #[inline]
    fn take(&self, timeout: Duration) -> Option<u64> {
        self.read_timeout(Some(timeout)).ok().map(Handle::into_raw)
    }
}

impl HandleRing for BaselineRing {
    #[inline]
    fn put(&self, v: u64, timeout: Duration) -> bool {
        self.write_b(v, Some(timeout))
    }

    #[inline]
    fn take(&self, timeout: Duration) -> Option<u64> {
        self.read_b(Some(timeout))
    }
}

/// Writes a 64-byte test pattern for packet `seq` into `p`: the sequence
/// number, then bytes derived from it.
#[inline]
pub fn fill(p: &mut [u8], seq: u64) {
    p[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in p[8..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(i as u8);
    }
}

/// Whether `p` holds the pattern [`fill`] wrote for `seq`.
#[inline]
pub fn check(p: &[u8], seq: u64) -> bool {
    p.len() >= 8
        && p[..8] == seq.to_le_bytes()
        && p[8..]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (seq as u8).wrapping_add(i as u8))
}
