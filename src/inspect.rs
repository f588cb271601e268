//! Looking at pools and rings without touching them: read-only mappings,
//! no registration, safe against a live, busy (or damaged) segment. This is
//! what operators' tools use.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::time::Duration;

use crate::audit::{self, AuditReport};
use crate::config::PoolConfig;
use crate::error::{Error, Result};
use crate::layout::{Geometry, Segment, POOL_MAGIC};
use crate::platform::{Identity, Os, Platform};
use crate::ring::layout::{RingGeometry, RingHeader, RingView, RING_MAGIC};
use crate::ring::queue::reg;
use crate::ring::Access;
use crate::segment::{self, Region};
use crate::stats::{self, Stats};

/// What a shared memory object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A pool of this library.
    Pool,
    /// A ring of this library.
    Ring,
    /// Something else.
    Foreign,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Pool => "pool",
            Kind::Ring => "ring",
            Kind::Foreign => "foreign",
        })
    }
}

/// A shared memory object: its kind, size and permissions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Name, with its leading `/`.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Bytes.
    pub size: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
}

fn open_read(name: &str) -> Result<(String, File)> {
    let name = segment::object_name(name)?;
    let file = segment::open(&name, false)?;
    Ok((name, file))
}

fn info_of(name: String, file: &File) -> Result<ObjectInfo> {
    let meta = file
        .metadata()
        .map_err(|e| Error::from_os(&name, "fstat", e))?;
    let mut magic = [0u8; 8];
    let kind = if meta.len() >= 4096 {
        use std::os::unix::fs::FileExt;
        match file.read_exact_at(&mut magic, 0) {
            Ok(()) if u64::from_le_bytes(magic) == POOL_MAGIC => Kind::Pool,
            Ok(()) if u64::from_le_bytes(magic) == RING_MAGIC => Kind::Ring,
            _ => Kind::Foreign,
        }
    } else {
        Kind::Foreign
    };
    Ok(ObjectInfo {
        name,
        kind,
        size: meta.len(),
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode() & 0o7777,
    })
}

/// What the object `name` is.
pub fn identify(name: &str) -> Result<ObjectInfo> {
    let (name, file) = open_read(name)?;
    info_of(name, &file)
}

/// Every shared memory object in `/dev/shm` this process may read, with
/// its kind (foreign objects included, marked as such).
pub fn list() -> Result<Vec<ObjectInfo>> {
    let dir =
        std::fs::read_dir("/dev/shm").map_err(|e| Error::from_os("/dev/shm", "readdir", e))?;
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(name) = entry.file_name().to_str().map(|s| format!("/{s}")) else {
            continue;
        };
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            if let Ok(info) = identify(&name) {
                out.push(info);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A pool mapped read-only, without registering: for statistics and audits
/// by tools that must not change the segment.
pub struct PoolView {
    info: ObjectInfo,
    geo: Box<Geometry>,
    region: Region,
    creator: Identity,
}

impl PoolView {
    /// Maps the pool `name` read-only.
    pub fn open(name: &str) -> Result<PoolView> {
        let (name, file) = open_read(name)?;
        let info = info_of(name.clone(), &file)?;
        let (geo, region) =
            crate::pool::map_ready(&name, &file, false, Duration::from_millis(200))?;
        // SAFETY: the header is the mapping's first page.
        let hdr = unsafe { &*(region.as_ptr() as *const crate::layout::Header<Os>) };
        let creator = Identity {
            pid: hdr.creator_pid.load(Relaxed),
            start: hdr.creator_start.load(Relaxed),
        };
        Ok(PoolView {
            info,
            geo: Box::new(geo),
            region,
            creator,
        })
    }

    fn segment(&self) -> Segment<'_, Os> {
        // SAFETY: the region is a read-only mapping of `total_size` bytes,
        // validated by `map_ready`; statistics and the audit only load.
        unsafe { Segment::carve(self.region.as_ptr(), &self.geo, &self.info.name) }
    }

    /// The object.
    pub fn info(&self) -> &ObjectInfo {
        &self.info
    }

    /// The configuration recorded in the pool.
    pub fn config(&self) -> PoolConfig {
        self.geo.config().mode(self.info.mode & 0o777)
    }

    /// The creator's pid, and whether it still runs.
    pub fn creator(&self) -> (u32, bool) {
        (self.creator.pid, Os.is_alive(self.creator))
    }

    /// A snapshot of the pool.
    pub fn stats(&self) -> Stats {
        stats::collect(&self.segment())
    }

    /// The conservation audit.
    pub fn audit(&self) -> Result<AuditReport> {
        audit::audit(&self.segment())
    }
}

/// A registered ring writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingParty {
    /// Pid.
    pub pid: u32,
    /// Whether it runs.
    pub alive: bool,
}

/// A snapshot of a ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingInfo {
    /// The object.
    pub object: ObjectInfo,
    /// Slots.
    pub capacity: u32,
    /// Values queued.
    pub queued: u64,
    /// Access mode.
    pub access: Option<Access>,
    /// The registered reader.
    pub reader: Option<RingParty>,
    /// The registered writers.
    pub writers: Vec<RingParty>,
}

/// Maps the ring `name` read-only and takes a snapshot.
pub fn ring(name: &str) -> Result<RingInfo> {
    let (name, file) = open_read(name)?;
    let object = info_of(name.clone(), &file)?;
    if object.size < 4096 {
        return Err(Error::LayoutMismatch {
            name,
            detail: format!(
                "the object has {} bytes, less than a ring header page",
                object.size
            ),
        });
    }
    let head = Region::map(&name, &file, 4096, false)?;
    // SAFETY: one mapped, aligned page.
    let hdr = unsafe { &*(head.as_ptr() as *const RingHeader<Os>) };
    let geo = RingGeometry::read(&name, hdr, object.size)?;
    drop(head);
    let region = Region::map(&name, &file, geo.total_size, false)?;
    // SAFETY: a read-only mapping of the validated layout; only loads follow.
    let view = unsafe { RingView::carve(region.as_ptr(), geo, &name) };
    let party = |w: u64, start: u64| -> Option<RingParty> {
        match reg::state(w) {
            reg::LIVE | reg::CLAIMING => {
                let pid = reg::pid(w);
                let start = if reg::state(w) == reg::LIVE { start } else { 0 };
                Some(RingParty {
                    pid,
                    alive: Os.is_alive(Identity { pid, start }),
                })
            }
            _ => None,
        }
    };
    let reader = party(view.reader.load(Acquire), view.reader_start.load(Relaxed));
    let writers = view
        .writers
        .iter()
        .filter_map(|w| party(w.word.load(Acquire), w.start.load(Relaxed)))
        .collect();
    let access = match view.mode() {
        crate::ring::queue::access::READ_WRITE => Some(Access::ReadWrite),
        crate::ring::queue::access::READ_ONLY => Some(Access::ReadOnly),
        crate::ring::queue::access::FLOW_DOWN => Some(Access::FlowDown),
        crate::ring::queue::access::PEER_GONE => Some(Access::PeerGone),
        _ => None,
    };
    Ok(RingInfo {
        capacity: geo.capacity,
        queued: view.queued(),
        access,
        reader,
        writers,
        object,
    })
}
