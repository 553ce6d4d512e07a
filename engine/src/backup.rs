//! Online backups of a running engine and offline verification of a copy.
//!
//! A backup is a directory the engine can be started on: the `SHARDS` file,
//! every segment, and the hints of sealed segments. It is cut per shard at a
//! batch boundary without stopping the writers: sealed segments never change,
//! and the active one is copied only up to its committed length, which the
//! writer advances after each batch's `fdatasync` and before it acknowledges
//! any append in it. So every append acknowledged before the backup started
//! is in the copy, and the copy's tail ends on a whole batch.
//!
//! Shards are cut from the last to shard 0, all before any byte is copied.
//! Users and keys live in shard 0 and are created before the mailboxes that
//! name them, so a mailbox in the copy always finds its owner. Compaction is
//! held off while the copy runs (it would unlink segments being copied);
//! ingest is not.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::codec::{self, FrameError, HeaderError, Hint, Kind, Record, SegHeader};
use crate::recovery::SHARDS_FILE;
use crate::segment::{self, Segment};
use crate::state::Shared;
use crate::sys::Map;

/// Why a backup or a verification could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The destination exists and is not empty: a backup never mixes with
    /// older files. Pick a new directory.
    #[error("{0} exists and is not empty; back up into a new directory")]
    DestinationNotEmpty(PathBuf),
    /// The directory to verify holds no `SHARDS` file or no segment.
    #[error("{0} is not an uncorreo data directory (no SHARDS file)")]
    NotADataDirectory(PathBuf),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The engine is shutting down.
    #[error("engine is shutting down")]
    Closed,
}

/// What a backup copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupReport {
    /// Shards in the data directory.
    pub shards: usize,
    /// Segment files copied.
    pub segments: u64,
    /// Hint files copied.
    pub hints: u64,
    /// Bytes copied (segments and hints).
    pub bytes: u64,
}

/// One segment as it stood at the cut.
struct Cut {
    shard: usize,
    seg: Arc<Segment>,
    len: usize,
    sealed: bool,
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Copy a consistent snapshot of `shared`'s log into `dest`. The caller
/// holds the compaction lock.
pub(crate) fn snapshot(shared: &Shared, dest: &Path) -> Result<BackupReport, BackupError> {
    if shared.closed.load(Ordering::Acquire) {
        return Err(BackupError::Closed);
    }
    prepare_destination(dest)?;
    let mut cuts = Vec::new();
    for (shard, s) in shared.shards.iter().enumerate().rev() {
        for seg in s.segs.read().values() {
            // `sealed` before `committed`: a segment sealed by then has its
            // final length, and its hint (if any) describes exactly it.
            let sealed = seg.sealed.load(Ordering::Acquire);
            cuts.push(Cut {
                shard,
                seg: Arc::clone(seg),
                len: seg.committed(),
                sealed,
            });
        }
    }
    let mut report = BackupReport {
        shards: shared.n(),
        ..BackupReport::default()
    };
    let shards_src = shared.dir.join(SHARDS_FILE);
    let shards_text = std::fs::read(&shards_src).map_err(io_at(&shards_src))?;
    write_synced(&dest.join(SHARDS_FILE), &shards_text)?;
    for cut in &cuts {
        let bytes = cut
            .seg
            .map
            .bytes()
            .get(..cut.len)
            .ok_or_else(|| BackupError::Io {
                path: cut.seg.path.clone(),
                source: std::io::Error::other("committed length beyond the mapping"),
            })?;
        let name = file_name(&cut.seg.path)?;
        write_synced(&dest.join(name), bytes)?;
        report.segments += 1;
        report.bytes += bytes.len() as u64;
        if cut.sealed {
            report.bytes += copy_hint(cut, dest)?;
            report.hints += u64::from(dest.join(name).with_extension("hint").exists());
        }
    }
    // The copy is not the live log: written with the real calls, not the seam.
    crate::files::Io::sync_dir(&crate::files::RealIo, dest).map_err(io_at(dest))?;
    tracing::info!(dest = %dest.display(), ?report, "backup written");
    Ok(report)
}

fn prepare_destination(dest: &Path) -> Result<(), BackupError> {
    std::fs::create_dir_all(dest).map_err(io_at(dest))?;
    let mut entries = std::fs::read_dir(dest).map_err(io_at(dest))?;
    if entries.next().is_some() {
        return Err(BackupError::DestinationNotEmpty(dest.to_path_buf()));
    }
    Ok(())
}

fn file_name(path: &Path) -> Result<&std::ffi::OsStr, BackupError> {
    path.file_name().ok_or_else(|| BackupError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other("segment path without a file name"),
    })
}

/// Copy the hint of a sealed segment if it exists and describes exactly the
/// copied bytes; without it the restored engine scans the segment instead.
fn copy_hint(cut: &Cut, dest: &Path) -> Result<u64, BackupError> {
    let src = segment::hint_path(&cut.seg.path);
    let Ok(bytes) = std::fs::read(&src) else {
        return Ok(0);
    };
    let fits = Hint::decode(&bytes).is_ok_and(|h| {
        h.shard as usize == cut.shard && h.seg_no == cut.seg.no.0 && h.data_len == cut.len as u64
    });
    if !fits {
        return Ok(0);
    }
    let name = file_name(&src)?;
    write_synced(&dest.join(name), &bytes)?;
    Ok(bytes.len() as u64)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let mut f = File::create(path).map_err(io_at(path))?;
    f.write_all(bytes).map_err(io_at(path))?;
    f.sync_all().map_err(io_at(path))
}

/// What [`verify`] found in a data directory or a backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Shards (from `SHARDS`).
    pub shards: usize,
    /// Segment files read.
    pub segments: u64,
    /// Records whose frame checksum was checked (batch commits included).
    pub records: u64,
    /// Whole batches (closed by an intact `BatchCommit`).
    pub batches: u64,
    /// Hint files that agree with the records they index.
    pub hints_ok: u64,
    /// Live mailboxes and their messages in the index rebuilt from the records.
    pub mailboxes: u64,
    /// Messages in live mailboxes, not deleted.
    pub messages: u64,
    /// Users and API keys on record.
    pub users: u64,
    /// API keys on record (revoked ones included).
    pub api_keys: u64,
    /// Everything wrong, one line each; empty means the directory is sound.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What the rebuilt index needs from the records, gathered in any order.
#[derive(Default)]
struct Census {
    /// mailbox id → (address, expires at)
    mailboxes: HashMap<u64, (String, u64)>,
    deleted_mailboxes: HashSet<u64>,
    messages: HashSet<(u64, u64)>,
    deleted_messages: HashSet<(u64, u64)>,
    users: HashSet<u64>,
    keys: HashSet<u64>,
}

/// Check every segment of `dir` without changing it: every header and frame
/// checksum (hints are not trusted, every record is read), every message's
/// metadata checksum, that records come in whole batches, and that each hint
/// agrees with the records. Then rebuild the index from the records (live
/// mailboxes and messages as of `now_ms`, users, keys) and report its size.
/// A problem is reported, not returned as an error, so one bad segment does
/// not hide the others.
pub fn verify(dir: &Path, now_ms: u64) -> Result<VerifyReport, BackupError> {
    let shards_path = dir.join(SHARDS_FILE);
    let shards_text = match std::fs::read_to_string(&shards_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::NotADataDirectory(dir.to_path_buf()))
        }
        Err(e) => return Err(io_at(&shards_path)(e)),
    };
    let mut report = VerifyReport::default();
    match shards_text.trim().parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => report.shards = n,
        _ => report
            .problems
            .push(format!("{SHARDS_FILE} holds {:?}", shards_text.trim())),
    }
    let mut files: BTreeMap<(usize, u32), PathBuf> = BTreeMap::new();
    for ent in std::fs::read_dir(dir).map_err(io_at(dir))? {
        let ent = ent.map_err(io_at(dir))?;
        let name = ent.file_name();
        if let Some((shard, no)) = name.to_str().and_then(segment::parse_seg_name) {
            if report.shards > 0 && shard >= report.shards {
                report.problems.push(format!(
                    "{}: shard {shard} beyond the {} in {SHARDS_FILE}",
                    ent.path().display(),
                    report.shards
                ));
            }
            files.insert((shard, no.0), ent.path());
        }
    }
    let mut census = Census::default();
    // A segment superseded by a compaction output (a crash between rename
    // and unlink) is read too: its records are also in the output, and the
    // census holds sets of ids, so nothing is counted twice.
    for ((shard, no), path) in &files {
        verify_segment(*shard, *no, path, &mut report, &mut census)?;
    }
    rebuild_index(&census, now_ms, &mut report);
    Ok(report)
}

fn verify_segment(
    shard: usize,
    no: u32,
    path: &Path,
    report: &mut VerifyReport,
    census: &mut Census,
) -> Result<(), BackupError> {
    report.segments += 1;
    let file = File::open(path).map_err(io_at(path))?;
    let file_len = file.metadata().map_err(io_at(path))?.len() as usize;
    if file_len < codec::SEG_HEADER_LEN {
        report
            .problems
            .push(format!("{}: shorter than a segment header", path.display()));
        return Ok(());
    }
    let map = Map::new(&file, file_len).map_err(io_at(path))?;
    let data = map.bytes().get(..file_len).unwrap_or_default();
    match SegHeader::decode(data) {
        Ok(h) if h.shard as usize == shard && h.seg_no == no => {}
        Ok(_) => {
            report.problems.push(format!(
                "{}: header names another shard or number",
                path.display()
            ));
            return Ok(());
        }
        Err(HeaderError::Version(v)) => {
            report.problems.push(format!(
                "{}: unsupported format version {v}",
                path.display()
            ));
            return Ok(());
        }
        Err(HeaderError::Bad) => {
            report
                .problems
                .push(format!("{}: header checksum mismatch", path.display()));
            return Ok(());
        }
    }
    let mut off = codec::SEG_HEADER_LEN;
    let mut pending: Vec<(u32, u32, u8, u64, u64)> = Vec::new();
    let mut committed: Vec<(u32, u32, u8, u64, u64)> = Vec::new();
    let mut committed_end = off;
    loop {
        let frame = match codec::frame_at(data, off, file_len) {
            Ok(f) => f,
            Err(FrameError::End) => break,
            Err(FrameError::Torn) => {
                report.problems.push(format!(
                    "{}: unreadable frame at offset {off}",
                    path.display()
                ));
                break;
            }
        };
        report.records += 1;
        let total = frame.total_len();
        if !frame.crc_ok() {
            report.problems.push(format!(
                "{}: checksum mismatch in the record at offset {off}",
                path.display()
            ));
            off += total;
            continue;
        }
        let (a, b) = match Kind::from_u8(frame.kind) {
            Some(Kind::BatchCommit) => {
                report.batches += 1;
                committed.append(&mut pending);
                committed_end = off + total;
                off += total;
                continue;
            }
            Some(Kind::Message) => match codec::message_meta(frame.payload) {
                Ok((h, _)) => {
                    census.messages.insert((h.mailbox, h.seq));
                    (h.mailbox, h.seq)
                }
                Err(e) => {
                    report
                        .problems
                        .push(format!("{}: message at offset {off}: {e}", path.display()));
                    (0, 0)
                }
            },
            Some(_) => {
                match codec::decode(frame.kind, frame.payload) {
                    Ok(rec) => count(&rec, census),
                    Err(e) => report.problems.push(format!(
                        "{}: record at offset {off} does not decode: {e}",
                        path.display()
                    )),
                }
                (0, 0)
            }
            None => {
                report.problems.push(format!(
                    "{}: unknown record kind {} at offset {off}",
                    path.display(),
                    frame.kind
                ));
                (0, 0)
            }
        };
        pending.push((off as u32, total as u32, frame.kind, a, b));
        off += total;
    }
    if !pending.is_empty() {
        report.problems.push(format!(
            "{}: {} records after the last whole batch (a torn tail)",
            path.display(),
            pending.len()
        ));
    }
    check_hint(shard, no, path, committed_end as u64, &committed, report);
    Ok(())
}

/// Count one intact record into the census. Records of a batch whose
/// `BatchCommit` is missing are counted too: that case is reported as a
/// problem on its own.
fn count(rec: &Record<'_>, census: &mut Census) {
    match rec {
        Record::MailboxCreated(m) => {
            census
                .mailboxes
                .insert(m.id, (m.address.clone(), m.expires_at_ms));
        }
        Record::MailboxDeleted { id, .. } => {
            census.deleted_mailboxes.insert(*id);
        }
        Record::MessageDeleted { mailbox, seq, .. } => {
            census.deleted_messages.insert((*mailbox, *seq));
        }
        Record::UserCreated { id, .. } => {
            census.users.insert(*id);
        }
        Record::ApiKeyCreated { id, .. } => {
            census.keys.insert(*id);
        }
        _ => {}
    }
}

fn check_hint(
    shard: usize,
    no: u32,
    seg: &Path,
    data_len: u64,
    committed: &[(u32, u32, u8, u64, u64)],
    report: &mut VerifyReport,
) {
    let path = segment::hint_path(seg);
    let Ok(bytes) = std::fs::read(&path) else {
        return;
    };
    let Ok(hint) = Hint::decode(&bytes) else {
        report
            .problems
            .push(format!("{}: hint checksum mismatch", path.display()));
        return;
    };
    let same = hint.shard as usize == shard
        && hint.seg_no == no
        && hint.data_len == data_len
        && hint.entries.len() == committed.len()
        && hint
            .entries
            .iter()
            .zip(committed)
            .all(|(e, c)| (e.off, e.len, e.kind, e.a, e.b) == *c);
    if same {
        report.hints_ok += 1;
    } else {
        report.problems.push(format!(
            "{}: hint disagrees with the segment's records",
            path.display()
        ));
    }
}

/// The index recovery would build, by the rules in FORMAT.md "Recovery"
/// step 4: a mailbox is live iff created, not deleted, not expired and the
/// newest at its address; a message iff its mailbox is live and no
/// `MessageDeleted` names it.
fn rebuild_index(census: &Census, now_ms: u64, report: &mut VerifyReport) {
    let mut newest: HashMap<&str, u64> = HashMap::new();
    for (id, (address, _)) in &census.mailboxes {
        if census.deleted_mailboxes.contains(id) {
            continue;
        }
        let e = newest.entry(address.as_str()).or_insert(*id);
        *e = (*e).max(*id);
    }
    let live: HashSet<u64> = census
        .mailboxes
        .iter()
        .filter(|(id, (address, expires))| {
            newest.get(address.as_str()) == Some(*id) && *expires > now_ms
        })
        .map(|(id, _)| *id)
        .collect();
    report.mailboxes = live.len() as u64;
    report.messages = census
        .messages
        .iter()
        .filter(|m| live.contains(&m.0) && !census.deleted_messages.contains(m))
        .count() as u64;
    report.users = census.users.len() as u64;
    report.api_keys = census.keys.len() as u64;
}
