//! A fault-countdown [`Io`] (SQLite's FAULTSIM is the model): the real
//! calls, except that the k-th mutating call (counting every write, sync,
//! create, rename, unlink, allocate and truncate from 1) fails with the
//! chosen errno — once, or from then on until [`FaultIo::clear`]. `ENOSPC`
//! never hits a truncation or an unlink (they only free space, as on a real
//! filesystem); those still count as calls. [`FaultIo::fail_next_after`]
//! aims one fault at a step of a sequence instead (the directory fsync that
//! follows a rename), wherever it falls in the count.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use uncorreo_engine::{DataFile, Io, RealIo};

/// See the module doc.
pub struct FaultIo {
    calls: AtomicU64,
    fail_at: AtomicU64,
    errno: i32,
    sticky: bool,
    cleared: AtomicBool,
    failed: AtomicU64,
    failed_kinds: parking_lot::Mutex<Vec<Call>>,
    /// See [`FaultIo::fail_next_after`].
    armed: parking_lot::Mutex<Option<Armed>>,
}

/// A one-shot fault aimed at a call that follows another.
struct Armed {
    first: Call,
    then: Call,
    seen_first: bool,
}

/// Which kind of call a fault hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Create,
    Write,
    Sync,
    Allocate,
    SetLen,
    Rename,
    Remove,
    SyncDir,
}

impl FaultIo {
    /// Fail call `fail_at` (0 = never) with `errno`; `sticky` = every later
    /// call too, until cleared.
    pub fn new(fail_at: u64, errno: i32, sticky: bool) -> Self {
        Self {
            calls: AtomicU64::new(0),
            fail_at: AtomicU64::new(fail_at),
            errno,
            sticky,
            cleared: AtomicBool::new(false),
            failed: AtomicU64::new(0),
            failed_kinds: parking_lot::Mutex::new(Vec::new()),
            armed: parking_lot::Mutex::new(None),
        }
    }

    /// Mutating calls seen so far (failed ones included).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Calls that were made to fail.
    pub fn failures(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// The kinds of the calls that were made to fail, in order.
    pub fn failed_calls(&self) -> Vec<Call> {
        self.failed_kinds.lock().clone()
    }

    /// The fault is gone (space was freed): every later call is real.
    pub fn clear(&self) {
        self.cleared.store(true, Ordering::SeqCst);
    }

    /// Fail (once, with the errno) the first `then` call after the next
    /// `first` call: a fault aimed at one step of a sequence, such as the
    /// directory fsync that follows a rename, wherever it falls in the count.
    pub fn fail_next_after(&self, first: Call, then: Call) {
        *self.armed.lock() = Some(Armed {
            first,
            then,
            seen_first: false,
        });
    }

    fn armed_hit(&self, call: Call) -> bool {
        let mut armed = self.armed.lock();
        let Some(a) = armed.as_mut() else {
            return false;
        };
        if a.seen_first && call == a.then {
            *armed = None;
            return true;
        }
        a.seen_first |= call == a.first;
        false
    }

    fn gate(&self, call: Call) -> io::Result<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.cleared.load(Ordering::SeqCst) {
            return Ok(());
        }
        let at = self.fail_at.load(Ordering::SeqCst);
        let frees_space = matches!(call, Call::SetLen | Call::Remove);
        let counted = at != 0 && (n == at || (self.sticky && n > at));
        let hit = (counted || self.armed_hit(call)) && !(self.errno == libc::ENOSPC && frees_space);
        if hit {
            self.failed.fetch_add(1, Ordering::SeqCst);
            self.failed_kinds.lock().push(call);
            if std::env::var_os("FAULT_DEBUG").is_some() {
                eprintln!("FAULT at call {n}: {call:?}");
            }
            return Err(io::Error::from_raw_os_error(self.errno));
        }
        Ok(())
    }
}

impl Io for FaultIo {
    fn create_new(&self, path: &Path) -> io::Result<DataFile> {
        self.gate(Call::Create)?;
        RealIo.create_new(path)
    }

    fn open(&self, path: &Path) -> io::Result<DataFile> {
        RealIo.open(path)
    }

    fn write_all_at(&self, file: &DataFile, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.gate(Call::Write)?;
        RealIo.write_all_at(file, bytes, offset)
    }

    fn sync_data(&self, file: &DataFile) -> io::Result<()> {
        self.gate(Call::Sync)?;
        RealIo.sync_data(file)
    }

    fn sync_all(&self, file: &DataFile) -> io::Result<()> {
        self.gate(Call::Sync)?;
        RealIo.sync_all(file)
    }

    fn allocate(&self, file: &DataFile, len: u64) -> io::Result<()> {
        self.gate(Call::Allocate)?;
        RealIo.allocate(file, len)
    }

    fn set_len(&self, file: &DataFile, len: u64) -> io::Result<()> {
        self.gate(Call::SetLen)?;
        RealIo.set_len(file, len)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.gate(Call::Rename)?;
        RealIo.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.gate(Call::Remove)?;
        RealIo.remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.gate(Call::SyncDir)?;
        RealIo.sync_dir(dir)
    }
}
