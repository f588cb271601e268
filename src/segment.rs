//! POSIX shared memory objects and the memory regions pools and rings live
//! in: `shm_open` + `ftruncate` + a `MAP_SHARED` mapping (memmap2) in
//! production, or zeroed heap memory for a pool private to one process.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, Result};

/// Longest object name (without the leading slash).
pub const NAME_MAX: usize = 250;

/// Normalises a shared memory object name: a leading `/` is added when
/// missing; the rest must be non-empty, without `/` or NUL.
pub fn object_name(name: &str) -> Result<String> {
    let bad = |detail| {
        Err(Error::InvalidName {
            name: name.into(),
            detail,
        })
    };
    let body = name.strip_prefix('/').unwrap_or(name);
    if body.is_empty() {
        return bad("the name is empty");
    }
    if body.len() > NAME_MAX {
        return bad("the name is longer than 250 bytes");
    }
    if body.contains('/') || body.contains('\0') {
        return bad("a name may not contain '/' (except leading) or NUL");
    }
    if body == "." || body == ".." {
        return bad("'.' and '..' are not object names");
    }
    Ok(format!("/{body}"))
}

fn c_name(name: &str) -> CString {
    // `object_name` has excluded NUL bytes.
    CString::new(name).expect("name without NUL")
}

/// Creates the object `name` exclusively with permission bits `mode`
/// (not masked by the umask), owned by `owner` if given.
pub fn create(name: &str, mode: u32, owner: Option<(u32, u32)>) -> Result<File> {
    let c = c_name(name);
    // SAFETY: `c` is a valid NUL-terminated string; shm_open has no other
    // memory arguments.
    let fd = unsafe {
        libc::shm_open(
            c.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC,
            mode as libc::mode_t,
        )
    };
    if fd < 0 {
        return Err(Error::last_os(name, "shm_open(create)"));
    }
    // SAFETY: `fd` was just returned by shm_open and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    let undo = |e: Error| {
        let _ = unlink(name);
        e
    };
    // SAFETY: plain system calls on a descriptor we own.
    if unsafe { libc::fchmod(file.as_raw_fd(), mode as libc::mode_t) } != 0 {
        return Err(undo(Error::last_os(name, "fchmod")));
    }
    if let Some((uid, gid)) = owner {
        // SAFETY: as above.
        if unsafe { libc::fchown(file.as_raw_fd(), uid, gid) } != 0 {
            return Err(undo(Error::last_os(name, "fchown")));
        }
    }
    Ok(file)
}

/// Opens the existing object `name` for reading and writing, or for reading
/// only.
pub fn open(name: &str, writable: bool) -> Result<File> {
    let c = c_name(name);
    let flags = if writable {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    };
    // SAFETY: as in `create`.
    let fd = unsafe { libc::shm_open(c.as_ptr(), flags | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::last_os(name, "shm_open"));
    }
    // SAFETY: as in `create`.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Removes the name `name`; mappings stay valid until unmapped.
pub fn unlink(name: &str) -> Result<()> {
    let name = object_name(name)?;
    let c = c_name(&name);
    // SAFETY: as in `create`.
    if unsafe { libc::shm_unlink(c.as_ptr()) } != 0 {
        return Err(Error::last_os(&name, "shm_unlink"));
    }
    Ok(())
}

/// Size of an open object.
pub fn size(name: &str, file: &File) -> Result<u64> {
    file.metadata()
        .map(|m| m.len())
        .map_err(|e| Error::from_os(name, "fstat", e))
}

/// Sets the size of an object.
pub fn set_size(name: &str, file: &File, len: u64) -> Result<()> {
    file.set_len(len)
        .map_err(|e| Error::from_os(name, "ftruncate", e))
}

/// Waits until the object has at least `len` bytes, for at most `timeout`.
/// There is no event for a size change, so this polls with a growing
/// interval (at most 1 ms).
pub fn wait_for_size(name: &str, file: &File, len: u64, timeout: Duration) -> Result<u64> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(10);
    loop {
        let n = size(name, file)?;
        if n >= len {
            return Ok(n);
        }
        if start.elapsed() >= timeout {
            return Err(Error::NotReady {
                name: name.into(),
                detail: format!("the object has {n} bytes after {timeout:?}"),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(1));
    }
}

/// Memory a segment lives in.
pub enum Region {
    /// A shared mapping of an object.
    Shared(MmapRaw),
    /// Zeroed, page-aligned memory private to this process.
    Heap {
        /// Start.
        ptr: *mut u8,
        /// Length.
        len: usize,
    },
}

// SAFETY: the region is plain memory accessed only through atomics (and
// payload bytes whose sharing discipline the pool enforces); the raw
// pointer is not tied to a thread.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Maps `len` bytes of `file`, shared, readable and (if `writable`)
    /// writable.
    pub fn map(name: &str, file: &File, len: u64, writable: bool) -> Result<Self> {
        let len = usize::try_from(len).map_err(|_| Error::LayoutMismatch {
            name: name.into(),
            detail: format!("{len} bytes cannot be mapped"),
        })?;
        let mut opts = MmapOptions::new();
        opts.len(len);
        let map = if writable {
            opts.map_raw(file)
        } else {
            opts.map_raw_read_only(file)
        };
        map.map(Region::Shared)
            .map_err(|e| Error::from_os(name, "mmap", e))
    }

    /// `len` zeroed bytes on the heap, page aligned.
    pub fn heap(len: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(len.max(4096), 4096)
            .expect("region size fits a layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Region::Heap { ptr, len }
    }

    /// Start of the region.
    pub fn as_ptr(&self) -> *mut u8 {
        match self {
            Region::Shared(m) => m.as_mut_ptr(),
            Region::Heap { ptr, .. } => *ptr,
        }
    }

    /// Length of the region.
    pub fn len(&self) -> usize {
        match self {
            Region::Shared(m) => m.len(),
            Region::Heap { len, .. } => *len,
        }
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Locks the region into RAM.
    pub fn mlock(&self, name: &str) -> Result<()> {
        // SAFETY: the range is this region, which is mapped.
        if unsafe { libc::mlock(self.as_ptr() as *const libc::c_void, self.len()) } != 0 {
            return Err(Error::last_os(name, "mlock"));
        }
        Ok(())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Region::Heap { ptr, len } = *self {
            let layout = std::alloc::Layout::from_size_align(len.max(4096), 4096)
                .expect("layout was valid at allocation");
            // SAFETY: allocated in `heap` with this very layout.
            unsafe { std::alloc::dealloc(ptr, layout) };
        }
    }
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Region::Shared(_) => "shared",
            Region::Heap { .. } => "heap",
        };
        write!(
            f,
            "Region({kind}, {} bytes at {:p})",
            self.len(),
            self.as_ptr()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_or_refused() {
        assert_eq!(object_name("pool").unwrap(), "/pool");
        assert_eq!(object_name("/pool").unwrap(), "/pool");
        for bad in ["", "/", "a/b", "/a/b", "a\0b", "..", "/."] {
            assert!(
                matches!(object_name(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(object_name(&"x".repeat(NAME_MAX + 1)).is_err());
    }
}
