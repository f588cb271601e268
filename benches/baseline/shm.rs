//! POSIX shared memory objects for the baseline: `shm_open` + `ftruncate` +
//! `mmap(MAP_SHARED)`, as the C pool and ring do, plus the wait for a
//! creator's ready flag.

use std::ffi::CString;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long `open` waits for a concurrent creator to size and initialise the
/// object before giving up.
pub(super) const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// The `shm_open` name for `name`: a leading `/` is added when missing.
pub(super) fn shm_name(name: &str) -> io::Result<CString> {
    let full = if name.starts_with('/') {
        name.to_owned()
    } else {
        format!("/{name}")
    };
    CString::new(full).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

/// Removes the object called `name`; a missing object is not an error.
pub(super) fn unlink(name: &str) {
    if let Ok(c) = shm_name(name) {
        // SAFETY: `c` is a NUL-terminated string that outlives the call.
        unsafe { libc::shm_unlink(c.as_ptr()) };
    }
}

/// One `MAP_SHARED` read-write mapping of a whole shared memory object,
/// unmapped on drop. The file descriptor is closed once mapped.
pub(super) struct Mapping {
    /// Start of the mapping; page aligned, valid for `len` bytes until drop.
    ptr: NonNull<u8>,
    /// Length of the mapping: the object's size when it was mapped.
    len: usize,
}

impl Mapping {
    /// Creates the object `name` exclusively (mode 0600), sizes it to `len`
    /// bytes in one `ftruncate` (so its memory reads as zeros) and maps it.
    /// On failure the name is unlinked again.
    pub(super) fn create(name: &str, len: usize) -> io::Result<Mapping> {
        let c = shm_name(name)?;
        let size = libc::off_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "object too large"))?;
        // SAFETY: `c` is a NUL-terminated string that outlives the call.
        let fd = unsafe {
            libc::shm_open(
                c.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                0o600,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is the descriptor just opened.
        let result = if unsafe { libc::ftruncate(fd, size) } < 0 {
            Err(io::Error::last_os_error())
        } else {
            Self::map(fd, len)
        };
        // SAFETY: `fd` is ours and closed once; the mapping does not need it.
        unsafe { libc::close(fd) };
        if result.is_err() {
            unlink(name);
        }
        result
    }

    /// Opens the existing object `name` and maps all of it. An object of
    /// size zero is still being created: its size is polled until it grows
    /// or [`OPEN_TIMEOUT`] passes.
    pub(super) fn open(name: &str) -> io::Result<Mapping> {
        let c = shm_name(name)?;
        // SAFETY: `c` is a NUL-terminated string that outlives the call.
        let fd = unsafe { libc::shm_open(c.as_ptr(), libc::O_RDWR, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let result = Self::size_when_set(fd).and_then(|len| Self::map(fd, len));
        // SAFETY: `fd` is ours and closed once; the mapping does not need it.
        unsafe { libc::close(fd) };
        result
    }

    /// The size of the object behind `fd`, once the creator has set it.
    fn size_when_set(fd: libc::c_int) -> io::Result<usize> {
        let start = Instant::now();
        loop {
            // SAFETY: an all-zero `stat` is a valid value of this plain C
            // struct; it is only an out parameter here.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: `fd` is open and `st` is a valid out pointer.
            if unsafe { libc::fstat(fd, &mut st) } < 0 {
                return Err(io::Error::last_os_error());
            }
            if st.st_size > 0 {
                return usize::try_from(st.st_size)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad object size"));
            }
            if start.elapsed() > OPEN_TIMEOUT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "shared memory object was never sized by its creator",
                ));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Maps `len` bytes of `fd` read-write and shared.
    fn map(fd: libc::c_int, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh mapping chosen by the kernel; it aliases no Rust
        // object and is only reached through the returned `Mapping`.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Mapping { ptr, len })
    }

    /// Start of the mapping.
    #[inline]
    pub(super) fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length of the mapping in bytes.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and no
        // reference into the mapping outlives its owner.
        let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        debug_assert_eq!(rc, 0, "munmap failed");
    }
}

/// Waits until `flag` holds `ready`, spinning briefly and then yielding and
/// sleeping, for at most [`OPEN_TIMEOUT`]. The acquire load pairs with the
/// creator's release store of the flag, so everything the creator wrote
/// before it is visible afterwards.
pub(super) fn wait_ready(flag: &AtomicU32, ready: u32) -> io::Result<()> {
    let start = Instant::now();
    let mut spins = 0u32;
    while flag.load(Ordering::Acquire) != ready {
        if start.elapsed() > OPEN_TIMEOUT {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "shared memory object never became ready (creator died or is not a baseline object)",
            ));
        }
        spins += 1;
        if spins < 64 {
            std::hint::spin_loop();
        } else if spins < 256 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    Ok(())
}
