//! Every change the engine makes to its data directory goes through one seam,
//! the [`Io`] trait, and every file helper (segment create, hint write, tail
//! truncation, segment removal and quarantine, the `SHARDS` file) lives here
//! on top of it.
//!
//! The seam exists so that tests can stand between the engine and the disk:
//! a crash-simulating layer that remembers what an `fdatasync` or a directory
//! fsync made durable and throws the rest away, and a fault layer that makes
//! the k-th call fail with `EIO` or `ENOSPC`. [`RealIo`] is the only
//! implementation production code uses. Reads (memory maps, `read_at`,
//! directory listings) are not behind the seam: a test layer keeps the real
//! files equal to what the engine wrote, so reading them directly is exact.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::codec;
use crate::segment;

/// An open file of the data directory, with the path it was opened under
/// (test layers key their bookkeeping on it).
#[derive(Debug)]
pub struct DataFile {
    file: File,
    path: PathBuf,
}

impl DataFile {
    /// Wrap an open file; `path` is where it was opened or created.
    pub fn new(file: File, path: PathBuf) -> Self {
        Self { file, path }
    }

    /// The open file, for reads and memory maps.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The path it was opened or created under.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The file operations that change the data directory. Each method has the
/// meaning of the POSIX call it is named after; an implementation must not
/// report success for anything it did not do.
pub trait Io: Send + Sync + 'static {
    /// Create `path` read-write; fail if it exists (`O_CREAT|O_EXCL`).
    fn create_new(&self, path: &Path) -> io::Result<DataFile>;
    /// Open an existing `path` read-write.
    fn open(&self, path: &Path) -> io::Result<DataFile>;
    /// Write all of `bytes` at `offset` (`pwrite` until done).
    fn write_all_at(&self, file: &DataFile, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// `fdatasync`: the file's data (and the size needed to read it) durable.
    fn sync_data(&self, file: &DataFile) -> io::Result<()>;
    /// `fsync`: the file's data and metadata durable (not its directory entry).
    fn sync_all(&self, file: &DataFile) -> io::Result<()>;
    /// Reserve blocks so that the file is at least `len` bytes long, zero
    /// filled (`fallocate` mode 0).
    fn allocate(&self, file: &DataFile, len: u64) -> io::Result<()>;
    /// `ftruncate` to `len`.
    fn set_len(&self, file: &DataFile, len: u64) -> io::Result<()>;
    /// `rename`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// `unlink`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// fsync a directory: creations, renames and unlinks in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The operating system's file calls: the only production [`Io`].
#[derive(Debug, Default, Clone, Copy)]
pub struct RealIo;

impl Io for RealIo {
    fn create_new(&self, path: &Path) -> io::Result<DataFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(DataFile::new(file, path.to_path_buf()))
    }

    fn open(&self, path: &Path) -> io::Result<DataFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok(DataFile::new(file, path.to_path_buf()))
    }

    fn write_all_at(&self, file: &DataFile, bytes: &[u8], offset: u64) -> io::Result<()> {
        file.file.write_all_at(bytes, offset)
    }

    fn sync_data(&self, file: &DataFile) -> io::Result<()> {
        file.file.sync_data()
    }

    fn sync_all(&self, file: &DataFile) -> io::Result<()> {
        file.file.sync_all()
    }

    fn allocate(&self, file: &DataFile, len: u64) -> io::Result<()> {
        crate::sys::allocate(&file.file, len)
    }

    fn set_len(&self, file: &DataFile, len: u64) -> io::Result<()> {
        file.file.set_len(len)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// True for the errors that mean "no space" (a full filesystem or quota):
/// temporary, unlike every other write error.
pub(crate) fn is_out_of_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// How a new segment file is laid out.
pub(crate) struct NewSegment<'a> {
    pub(crate) path: &'a Path,
    pub(crate) header: &'a [u8; codec::SEG_HEADER_LEN],
    /// Bytes to preallocate (0 = none).
    pub(crate) preallocate: u64,
    /// When the filesystem has no room for the preallocation, create the
    /// segment without it (at open, so that the appliance starts on a full
    /// disk and refuses appends with a temporary error until space is back)
    /// instead of failing.
    pub(crate) unreserved_if_full: bool,
    /// fsync the file and its directory (false only in load-test mode).
    pub(crate) sync: bool,
}

/// Create a segment, write its header and make both the file and its
/// directory entry durable before anything is appended: a batch acknowledged
/// in it must not vanish with the directory entry. On failure the half-made
/// file is removed again (nothing in it was ever acknowledged).
pub(crate) fn create_segment_file(io: &dyn Io, new: &NewSegment<'_>) -> io::Result<DataFile> {
    let file = io.create_new(new.path)?;
    let made = lay_out_segment(io, &file, new);
    if let Err(e) = made {
        drop(file);
        let _ = io.remove_file(new.path);
        return Err(e);
    }
    Ok(file)
}

fn lay_out_segment(io: &dyn Io, file: &DataFile, new: &NewSegment<'_>) -> io::Result<()> {
    if new.preallocate > 0 {
        match io.allocate(file, new.preallocate) {
            Err(e) if new.unreserved_if_full && is_out_of_space(&e) => {
                tracing::warn!(seg = %new.path.display(), "no room to preallocate a segment; created without");
                // A failed fallocate may leave blocks allocated: start empty.
                io.set_len(file, 0)?;
            }
            other => other?,
        }
    }
    io.write_all_at(file, new.header, 0)?;
    if new.sync {
        io.sync_all(file)?;
        let dir = new.path.parent().unwrap_or(Path::new("."));
        io.sync_dir(dir)?;
    }
    Ok(())
}

/// Write a compaction output under its temp name and make it durable; it is
/// not in place yet ([`rename_rewrite`]). It is never torn: recovery deletes
/// an unfinished `.seg.tmp`. The returned file names `path`, where the
/// output will be.
pub(crate) fn write_rewrite_tmp(
    io: &dyn Io,
    path: &Path,
    header: &[u8; codec::SEG_HEADER_LEN],
    body: &[u8],
) -> io::Result<DataFile> {
    let tmp = segment::tmp_path(path);
    let file = io.create_new(&tmp)?;
    let written = io
        .write_all_at(&file, header, 0)
        .and_then(|()| io.write_all_at(&file, body, codec::SEG_HEADER_LEN as u64))
        .and_then(|()| io.sync_all(&file));
    if let Err(e) = written {
        drop(file);
        let _ = io.remove_file(&tmp);
        return Err(e);
    }
    Ok(DataFile::new(file.file, path.to_path_buf()))
}

/// Put a compaction output written by [`write_rewrite_tmp`] in place. Once
/// this returns the output is in place: the caller makes the rename durable,
/// and must stop the shard if it cannot (a second output superseding the
/// same segment would be loaded beside the first).
pub(crate) fn rename_rewrite(io: &dyn Io, path: &Path) -> io::Result<()> {
    io.rename(&segment::tmp_path(path), path)
}

/// Replace `final_path` atomically with `bytes`: temp file, fsync, rename,
/// fsync the directory. `sync = false` (load-test mode) skips the fsyncs.
pub(crate) fn write_atomically(
    io: &dyn Io,
    dir: &Path,
    final_path: &Path,
    tmp: &Path,
    bytes: &[u8],
    sync: bool,
) -> io::Result<()> {
    let _ = io.remove_file(tmp);
    let file = io.create_new(tmp)?;
    let written =
        io.write_all_at(&file, bytes, 0).and_then(
            |()| {
                if sync {
                    io.sync_all(&file)
                } else {
                    Ok(())
                }
            },
        );
    drop(file);
    if let Err(e) = written.and_then(|()| io.rename(tmp, final_path)) {
        let _ = io.remove_file(tmp);
        return Err(e);
    }
    if sync {
        io.sync_dir(dir)?;
    }
    Ok(())
}

/// Write a segment's hint file atomically.
pub(crate) fn write_hint(
    io: &dyn Io,
    dir: &Path,
    seg_path: &Path,
    hint: &codec::Hint,
    sync: bool,
) -> io::Result<()> {
    let final_path = segment::hint_path(seg_path);
    let tmp = final_path.with_extension("hint.tmp");
    write_atomically(io, dir, &final_path, &tmp, &hint.encode(), sync)
}

/// Unlink a segment and its hint, and make that durable.
pub(crate) fn remove_segment(io: &dyn Io, dir: &Path, seg_path: &Path) -> io::Result<()> {
    io.remove_file(seg_path)?;
    remove_if_there(io, &segment::hint_path(seg_path))?;
    io.sync_dir(dir)
}

/// Unlink `path` if it exists.
pub(crate) fn remove_if_there(io: &dyn Io, path: &Path) -> io::Result<()> {
    match io.remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Set a segment with an unreadable header aside as `.corrupt` (kept for an
/// operator, never read again).
pub(crate) fn quarantine_segment(io: &dyn Io, dir: &Path, seg_path: &Path) -> io::Result<()> {
    io.rename(seg_path, &seg_path.with_extension("corrupt"))?;
    io.sync_dir(dir)
}

/// Cut a segment back to `len` bytes (a torn tail, or bytes of a batch whose
/// write failed) and make the new length durable.
pub(crate) fn truncate(io: &dyn Io, file: &DataFile, len: u64) -> io::Result<()> {
    io.set_len(file, len)?;
    io.sync_all(file)
}
