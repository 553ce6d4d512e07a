//! The engine's only `unsafe` code: memory maps of segment files, the data
//! directory lock, the free-space probe and `fallocate`, the process's
//! one allocator setting ([`set_mmap_threshold`]) and giving freed memory
//! back after recovery ([`release_free_memory`]). Everything else in the crate is
//! safe Rust over the handles this module returns.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use memmap2::{Mmap, MmapOptions};

/// A read-only mapping of (a prefix of) a segment file.
///
/// The mapping may be longer than the file: the active segment is mapped at
/// its full capacity once (preallocated to it when the filesystem can).
/// Callers only read bytes below the committed length, which are always
/// inside the file, so no page past end-of-file is ever touched (that would
/// raise SIGBUS). A mapped file is only ever cut at or above its committed
/// length (sealing gives back the preallocated tail; a failed batch write is
/// cut back to where it started).
pub(crate) struct Map {
    map: Mmap,
}

impl Map {
    /// Map `len` bytes of `file` read-only.
    pub(crate) fn new(file: &File, len: usize) -> io::Result<Arc<Self>> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map zero bytes",
            ));
        }
        // SAFETY: the mapping is read-only and shared. While mapped, segment
        // files are only appended to (pwrite past the committed length), cut
        // at or above the committed length, or unlinked; bytes below the
        // committed length never change under a reader, and readers never
        // look past that length (see the type's doc for why a mapping longer
        // than the file is sound).
        let map = unsafe { MmapOptions::new().len(len).map(file)? };
        Ok(Arc::new(Self { map }))
    }

    /// The mapped bytes (including any part past end-of-file: do not read
    /// beyond the committed length).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }
}

/// Take an exclusive, non-blocking `flock` on `file`. `Ok(false)` when another
/// open file description (another process, or another `Engine` in this one)
/// holds it.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock takes a valid open descriptor (borrowed from `file`, which
    // outlives the call) and plain integer flags; it touches no memory of ours.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Bytes available to unprivileged users on the filesystem holding `path`.
pub(crate) fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the
    // call and `st` points to writable memory of the right type and size.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised the whole struct.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    let (avail, frsize) = (u64::from(st.f_bavail), u64::from(st.f_frsize));
    Ok(avail.saturating_mul(frsize))
}

/// Reserve blocks for the first `len` bytes of `file` (zero filled; the file
/// grows to `len` if shorter). A filesystem without `fallocate` gets a plain
/// (sparse) extension instead: the same bytes, without the reservation.
pub(crate) fn allocate(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length beyond off_t"))?;
    loop {
        // SAFETY: fallocate takes a valid open descriptor (borrowed from
        // `file`, which outlives the call) and plain integers; it touches no
        // memory of ours.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) => {
                let now = file.metadata()?.len();
                return match u64::try_from(len) {
                    Ok(want) if want > now => file.set_len(want),
                    _ => Ok(()),
                };
            }
            _ => return Err(err),
        }
    }
}

/// Ask the allocator to give free memory back to the system (glibc's
/// `malloc_trim`). Recovery builds large temporary tables (every mailbox
/// record with its address, per shard thread) and frees them once the index
/// is built; glibc keeps such freed small blocks resident, which measured
/// 1,056 bytes per mailbox after a restart against 199 while live
/// (BENCHMARKS.md, "Memory per live mailbox"). A no-op off glibc.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointers; it only returns whole free
        // pages of the allocator's heaps to the kernel, under the
        // allocator's own locks.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Have the allocator map blocks of `bytes` and more on their own and unmap
/// them when they are freed (glibc's `M_MMAP_THRESHOLD`), so a message body
/// leaves the resident set once it is stored. Without it glibc raises the
/// threshold after the first such free and keeps later bodies in per-thread
/// heaps it rarely gives back. False when refused, or not glibc.
pub fn set_mmap_threshold(bytes: i32) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator parameter (no pointers);
        // glibc serialises it against allocations in other threads.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = bytes;
        false
    }
}
