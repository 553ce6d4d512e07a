//! A crash-simulating [`Io`]: every call is carried out on the real files
//! (so the engine's memory maps and reads see exactly what it wrote), and
//! alongside it this layer keeps the *durable* image of every file and of
//! the directory: what an `fsync`/`fdatasync` of the file, or an fsync of
//! the directory, has made durable. Writes, truncations, creations, renames
//! and unlinks that no sync has covered yet are pending.
//!
//! At the chosen sync (counting file and directory syncs from 1) the power
//! fails: that sync and every later call return `EIO` and change nothing. The
//! image a reboot would find is computed then — durable state plus some of
//! the pending operations, chosen by the seed: a prefix of the directory
//! operations (the journal keeps their order), and per file either a prefix
//! of its pending writes with the last one torn at a random byte, or any
//! subset of them (writeback order is arbitrary), each possibly torn. After
//! the engine is dropped, [`CrashIo::reboot`] replaces the directory's files
//! by that image.
//!
//! Files are identified by an internal id, found through their inode while
//! they are linked, so a rename or an unlink that the crash undoes brings the
//! right bytes back under the right name.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uncorreo_engine::{DataFile, Io, RealIo};

/// Which pending operations a crash may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tear {
    /// Nothing that was not synced survives.
    None,
    /// Per file, a prefix of its pending writes, the last one cut at a
    /// random byte; a prefix of the directory operations.
    LastWrite,
    /// Per file, any subset of its pending writes, each possibly cut; a
    /// prefix of the directory operations.
    Any,
}

#[derive(Debug, Clone)]
enum FileOp {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
    Allocate(u64),
}

#[derive(Debug, Clone)]
enum DirOp {
    Link { name: String, id: u64 },
    Unlink { name: String },
    Rename { from: String, to: String },
}

#[derive(Debug, Default)]
struct FileImage {
    durable: Vec<u8>,
    pending: Vec<FileOp>,
}

struct State {
    next_id: u64,
    files: HashMap<u64, FileImage>,
    by_inode: HashMap<u64, u64>,
    current: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
    dir_pending: Vec<DirOp>,
    syncs: u64,
    crash_at: Option<u64>,
    /// Set at the crash: the files a reboot finds.
    image: Option<BTreeMap<String, Vec<u8>>>,
    rng: StdRng,
    tear: Tear,
    /// The crash fell after a rename and before the directory fsync that
    /// would have made it durable.
    rename_pending_at_crash: bool,
}

/// See the module doc.
pub struct CrashIo {
    dir: PathBuf,
    state: Mutex<State>,
}

/// The engine's directory lock is not data; it is left alone.
const LOCK: &str = "LOCK";

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

fn name_of(path: &Path) -> io::Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))
}

fn inode(file: &DataFile) -> io::Result<u64> {
    Ok(file.file().metadata()?.ino())
}

impl CrashIo {
    /// Start on `dir` as it is now (everything in it durable); the power
    /// fails at sync number `crash_at` (never if `None`).
    pub fn new(dir: &Path, seed: u64, crash_at: Option<u64>, tear: Tear) -> io::Result<Self> {
        let mut state = State {
            next_id: 0,
            files: HashMap::new(),
            by_inode: HashMap::new(),
            current: BTreeMap::new(),
            durable: BTreeMap::new(),
            dir_pending: Vec::new(),
            syncs: 0,
            crash_at,
            image: None,
            rng: StdRng::seed_from_u64(seed),
            tear,
            rename_pending_at_crash: false,
        };
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name == LOCK || !entry.file_type()?.is_file() {
                continue;
            }
            let id = state.new_id();
            state.files.insert(
                id,
                FileImage {
                    durable: std::fs::read(entry.path())?,
                    pending: Vec::new(),
                },
            );
            state.by_inode.insert(entry.metadata()?.ino(), id);
            state.current.insert(name.clone(), id);
            state.durable.insert(name, id);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            state: Mutex::new(state),
        })
    }

    /// True once the power has failed.
    pub fn crashed(&self) -> bool {
        self.state.lock().image.is_some()
    }

    /// True if the crash fell between a rename and its directory fsync.
    pub fn crashed_between_rename_and_dir_sync(&self) -> bool {
        self.state.lock().rename_pending_at_crash
    }

    /// Fail the power now if it has not failed yet.
    pub fn crash_now(&self) {
        let mut s = self.state.lock();
        if s.image.is_none() {
            s.crash();
        }
    }

    /// Replace the directory's files (except the lock) by what a reboot
    /// after the crash finds. Call after the engine is dropped.
    pub fn reboot(&self) -> io::Result<()> {
        self.crash_now();
        let image = self.state.lock().image.clone().unwrap_or_default();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_name() != LOCK {
                std::fs::remove_file(entry.path())?;
            }
        }
        for (name, bytes) in image {
            std::fs::write(self.dir.join(name), bytes)?;
        }
        Ok(())
    }

    fn check(&self) -> io::Result<parking_lot::MutexGuard<'_, State>> {
        let s = self.state.lock();
        if s.image.is_some() {
            return Err(eio());
        }
        Ok(s)
    }

    /// A sync: the power may fail here instead.
    fn sync_point(&self) -> io::Result<parking_lot::MutexGuard<'_, State>> {
        let mut s = self.check()?;
        s.syncs += 1;
        if s.crash_at == Some(s.syncs) {
            s.crash();
            return Err(eio());
        }
        Ok(s)
    }

    fn pend(&self, file: &DataFile, op: FileOp) -> io::Result<()> {
        let ino = inode(file)?;
        let mut s = self.state.lock();
        let id = s.id_of_inode(ino);
        s.files.entry(id).or_default().pending.push(op);
        Ok(())
    }
}

impl State {
    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The id of a linked file; a file this layer never saw (made outside
    /// it) counts as durable and empty.
    fn id_of_inode(&mut self, ino: u64) -> u64 {
        if let Some(&id) = self.by_inode.get(&ino) {
            return id;
        }
        let id = self.new_id();
        self.by_inode.insert(ino, id);
        id
    }

    fn forget_inode_if_unlinked(&mut self, id: u64) {
        if !self.current.values().any(|&v| v == id) {
            self.by_inode.retain(|_, v| *v != id);
        }
    }

    fn crash(&mut self) {
        self.rename_pending_at_crash = self
            .dir_pending
            .iter()
            .any(|op| matches!(op, DirOp::Rename { .. }));
        let keep_dir = if self.tear == Tear::None {
            0
        } else {
            self.rng.random_range(0..=self.dir_pending.len())
        };
        let mut dir = self.durable.clone();
        for op in self.dir_pending.iter().take(keep_dir) {
            match op {
                DirOp::Link { name, id } => {
                    dir.insert(name.clone(), *id);
                }
                DirOp::Unlink { name } => {
                    dir.remove(name);
                }
                DirOp::Rename { from, to } => {
                    if let Some(id) = dir.remove(from) {
                        dir.insert(to.clone(), id);
                    }
                }
            }
        }
        let mut contents: HashMap<u64, Vec<u8>> = HashMap::new();
        let mut image = BTreeMap::new();
        for (name, id) in dir {
            let bytes = match contents.get(&id) {
                Some(bytes) => bytes.clone(),
                None => {
                    let bytes = self.crashed_contents(id);
                    contents.insert(id, bytes.clone());
                    bytes
                }
            };
            image.insert(name, bytes);
        }
        self.image = Some(image);
    }

    fn crashed_contents(&mut self, id: u64) -> Vec<u8> {
        let Some(file) = self.files.get(&id) else {
            return Vec::new();
        };
        let mut bytes = file.durable.clone();
        let pending = file.pending.clone();
        match self.tear {
            Tear::None => {}
            Tear::LastWrite => {
                let keep = self.rng.random_range(0..=pending.len());
                for (i, op) in pending.iter().take(keep).enumerate() {
                    let cut = i + 1 == keep;
                    self.apply(&mut bytes, op, cut);
                }
            }
            Tear::Any => {
                for op in &pending {
                    if self.rng.random_bool(0.5) {
                        let cut = self.rng.random_bool(0.3);
                        self.apply(&mut bytes, op, cut);
                    }
                }
            }
        }
        bytes
    }

    fn apply(&mut self, bytes: &mut Vec<u8>, op: &FileOp, cut: bool) {
        match op {
            FileOp::Write {
                offset,
                bytes: data,
            } => {
                let len = if cut && !data.is_empty() {
                    self.rng.random_range(0..data.len())
                } else {
                    data.len()
                };
                write_into(bytes, *offset, data.get(..len).unwrap_or_default());
            }
            FileOp::SetLen(len) => bytes.resize(*len as usize, 0),
            FileOp::Allocate(len) => {
                if bytes.len() < *len as usize {
                    bytes.resize(*len as usize, 0);
                }
            }
        }
    }
}

fn write_into(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    let end = start + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    if let Some(dst) = bytes.get_mut(start..end) {
        dst.copy_from_slice(data);
    }
}

fn settle(file: &mut FileImage) {
    let mut bytes = std::mem::take(&mut file.durable);
    for op in std::mem::take(&mut file.pending) {
        match op {
            FileOp::Write {
                offset,
                bytes: data,
            } => write_into(&mut bytes, offset, &data),
            FileOp::SetLen(len) => bytes.resize(len as usize, 0),
            FileOp::Allocate(len) => {
                if bytes.len() < len as usize {
                    bytes.resize(len as usize, 0);
                }
            }
        }
    }
    file.durable = bytes;
}

impl Io for CrashIo {
    fn create_new(&self, path: &Path) -> io::Result<DataFile> {
        let name = name_of(path)?;
        let mut s = self.check()?;
        let file = RealIo.create_new(path)?;
        let id = s.new_id();
        s.files.insert(id, FileImage::default());
        s.by_inode.insert(inode(&file)?, id);
        s.current.insert(name.clone(), id);
        s.dir_pending.push(DirOp::Link { name, id });
        Ok(file)
    }

    fn open(&self, path: &Path) -> io::Result<DataFile> {
        let s = self.check()?;
        drop(s);
        RealIo.open(path)
    }

    fn write_all_at(&self, file: &DataFile, bytes: &[u8], offset: u64) -> io::Result<()> {
        drop(self.check()?);
        RealIo.write_all_at(file, bytes, offset)?;
        self.pend(
            file,
            FileOp::Write {
                offset,
                bytes: bytes.to_vec(),
            },
        )
    }

    fn sync_data(&self, file: &DataFile) -> io::Result<()> {
        let ino = inode(file)?;
        let mut s = self.sync_point()?;
        let id = s.id_of_inode(ino);
        settle(s.files.entry(id).or_default());
        Ok(())
    }

    fn sync_all(&self, file: &DataFile) -> io::Result<()> {
        self.sync_data(file)
    }

    fn allocate(&self, file: &DataFile, len: u64) -> io::Result<()> {
        drop(self.check()?);
        RealIo.allocate(file, len)?;
        self.pend(file, FileOp::Allocate(len))
    }

    fn set_len(&self, file: &DataFile, len: u64) -> io::Result<()> {
        drop(self.check()?);
        RealIo.set_len(file, len)?;
        self.pend(file, FileOp::SetLen(len))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from_name, to_name) = (name_of(from)?, name_of(to)?);
        let mut s = self.check()?;
        RealIo.rename(from, to)?;
        if let Some(id) = s.current.remove(&from_name) {
            if let Some(old) = s.current.insert(to_name.clone(), id) {
                s.forget_inode_if_unlinked(old);
            }
        }
        s.dir_pending.push(DirOp::Rename {
            from: from_name,
            to: to_name,
        });
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let name = name_of(path)?;
        let mut s = self.check()?;
        RealIo.remove_file(path)?;
        if let Some(id) = s.current.remove(&name) {
            s.forget_inode_if_unlinked(id);
        }
        s.dir_pending.push(DirOp::Unlink { name });
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        let mut s = self.sync_point()?;
        s.durable = s.current.clone();
        s.dir_pending.clear();
        Ok(())
    }
}
