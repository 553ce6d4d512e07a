//! Open: lock the data directory, find the segments, rebuild the in-memory
//! state from hints and records, truncate a torn tail, and hand each shard's
//! writer a fresh active segment.
//!
//! Recovery is order-independent within a shard: it gathers every record
//! first and resolves afterwards (a mailbox is live iff created and not
//! deleted; a message iff its mailbox is live and it was not deleted), because
//! compaction outputs carry old records under newer segment numbers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::codec::{self, FrameError, HeaderError, Hint, HintEntry, Kind, Record, SegHeader};
use crate::error::OpenError;
use crate::files::{self, DataFile, Io};
use crate::ids::{RecordLoc, SegmentNo};
use crate::segment::{self, Segment};
use crate::state::{MailboxIndex, MsgRef, StateValue, DEDUPE_TTL_MS, MAX_SHARDS, REF_CORRUPT};
use crate::sys::Map;
use crate::types::*;

/// File holding the shard count chosen when the directory was created.
pub(crate) const SHARDS_FILE: &str = "SHARDS";

/// Everything recovered for one shard.
#[derive(Default)]
pub(crate) struct ShardRecovery {
    pub(crate) segs: BTreeMap<SegmentNo, Arc<Segment>>,
    pub(crate) index: MailboxIndex,
    pub(crate) counter: u64,
    pub(crate) next_seg: u32,
    pub(crate) corrupt: u64,
    /// Ended mailboxes' claims on their addresses (`tombstone.rs`).
    pub(crate) tombstones: crate::tombstone::Tombstones,
    /// Parts of failed deliveries kept for their retry (`retry.rs`).
    pub(crate) parts: crate::retry::Parts,
}

#[derive(Default)]
struct Acc {
    /// (address, tombstone) of every `AddressTombstone` record.
    tombstones: Vec<(String, crate::tombstone::Tombstone)>,
    mailboxes: HashMap<u64, (codec::MailboxRec, RecordLoc)>,
    deleted_mb: HashSet<u64>,
    msgs: Vec<(u64, MsgRef)>,
    deleted_msgs: HashSet<(u64, u64)>,
    tomb_seq: HashMap<u64, u64>,
    users: Vec<(u64, u64, String)>,
    subs: Vec<(u64, u64, Subscription)>,
    keys: Vec<ApiKeyInfo>,
    revokes: Vec<(u64, u64)>,
    disabled: Vec<(u64, u64)>,
    audit: Vec<AuditEntry>,
    sub_ends: Vec<(u64, u64, u64)>,
    dedupe: Vec<(String, u64, u8)>,
    /// `DeliveryPart` and `DeliveryDone` records (`retry.rs`).
    delivery_parts: Vec<crate::retry::LoggedPart>,
    delivery_done: Vec<(crate::retry::DeliveryKey, u64)>,
    /// (key, version, value, segment, record length)
    states: Vec<(String, u64, Option<String>, SegmentNo, u32)>,
    max_id: u64,
    max_floor: u64,
    corrupt: u64,
    shard: usize,
    campaigns: crate::campaign::Recovered,
}

/// Users, keys and dedupe keys, gathered from all shards.
#[derive(Default)]
pub(crate) struct MetaRecovery {
    pub(crate) users: Vec<(u64, u64, String)>,
    pub(crate) subs: Vec<(u64, u64, Subscription)>,
    pub(crate) keys: Vec<ApiKeyInfo>,
    pub(crate) revokes: Vec<(u64, u64)>,
    /// (user, disabled at)
    pub(crate) disabled: Vec<(u64, u64)>,
    pub(crate) audit: Vec<AuditEntry>,
    /// (user, before ordinal, at)
    pub(crate) sub_ends: Vec<(u64, u64, u64)>,
    /// key → (latest time, parts declared, shards seen)
    pub(crate) dedupe: HashMap<String, (u64, u8, HashSet<usize>)>,
    /// Campaign records of every shard.
    pub(crate) campaigns: crate::campaign::Recovered,
}

pub(crate) fn lock_dir(dir: &Path) -> Result<File, OpenError> {
    let dd = |source| OpenError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(dd)?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(dir.join("LOCK"))
        .map_err(dd)?;
    if !crate::sys::try_lock_exclusive(&f).map_err(dd)? {
        return Err(OpenError::Locked(dir.to_path_buf()));
    }
    Ok(f)
}

/// The shard count: the one stored in the directory, else the configured one
/// (0 = one per core), stored now.
pub(crate) fn shard_count(io: &dyn Io, dir: &Path, configured: usize) -> Result<usize, OpenError> {
    let p = dir.join(SHARDS_FILE);
    if let Ok(s) = std::fs::read_to_string(&p) {
        let n: usize = s
            .trim()
            .parse()
            .map_err(|_| OpenError::Config(format!("{} is not a number", p.display())))?;
        if n == 0 || n > MAX_SHARDS {
            return Err(OpenError::Config(format!("{} holds {n}", p.display())));
        }
        let want = if configured == 0 { n } else { configured };
        if want != n {
            tracing::warn!(
                stored = n,
                configured,
                "data directory keeps its shard count"
            );
        }
        return Ok(n);
    }
    let n = if configured == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        configured
    }
    .clamp(1, MAX_SHARDS);
    let tmp = dir.join("SHARDS.tmp");
    files::write_atomically(io, dir, &p, &tmp, format!("{n}\n").as_bytes(), true)?;
    Ok(n)
}

/// Recover every shard (in parallel), then merge the metadata.
pub(crate) fn recover(
    io: &dyn Io,
    dir: &Path,
    n: usize,
    now_ms: u64,
    sync: bool,
) -> Result<(Vec<ShardRecovery>, MetaRecovery), OpenError> {
    let mut files: Vec<Vec<(u32, PathBuf)>> = vec![Vec::new(); n];
    for ent in std::fs::read_dir(dir)? {
        let ent = ent?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".seg.tmp") || name.ends_with(".hint.tmp") {
            // An unfinished compaction output or hint: never renamed, never used.
            let _ = io.remove_file(&ent.path());
            continue;
        }
        if let Some((shard, no)) = segment::parse_seg_name(name) {
            match files.get_mut(shard) {
                Some(v) => v.push((no.0, ent.path())),
                None => tracing::warn!(
                    file = name,
                    "segment of a shard beyond the shard count; ignored"
                ),
            }
        }
    }
    let results: Vec<Result<(ShardRecovery, Acc), OpenError>> = std::thread::scope(|s| {
        let hs: Vec<_> = files
            .into_iter()
            .enumerate()
            .map(|(shard, f)| s.spawn(move || recover_shard(io, dir, shard, f, sync)))
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(OpenError::Config("recovery thread panicked".into())))
            })
            .collect()
    });
    let mut shards = Vec::with_capacity(n);
    let mut meta = MetaRecovery::default();
    for (shard, r) in results.into_iter().enumerate() {
        let (mut rec, mut acc) = r?;
        resolve(&mut rec, &acc, shard, n, &mut meta, now_ms);
        meta.campaigns.append(std::mem::take(&mut acc.campaigns));
        shards.push(rec);
    }
    meta.dedupe.retain(|_, (at, parts, seen)| {
        seen.len() >= usize::from(*parts).max(1) && now_ms.saturating_sub(*at) < DEDUPE_TTL_MS
    });
    Ok((shards, meta))
}

fn recover_shard(
    io: &dyn Io,
    dir: &Path,
    shard: usize,
    mut files: Vec<(u32, PathBuf)>,
    sync: bool,
) -> Result<(ShardRecovery, Acc), OpenError> {
    files.sort_by_key(|(no, _)| *no);
    let mut out = ShardRecovery {
        next_seg: files.last().map(|(no, _)| no + 1).unwrap_or(1),
        ..ShardRecovery::default()
    };
    let mut acc = Acc {
        shard,
        ..Acc::default()
    };
    // Headers first: learn what supersedes what.
    let mut opened: Vec<(u32, PathBuf, DataFile, SegHeader)> = Vec::new();
    let last_no = files.last().map(|(no, _)| *no);
    for (no, path) in files {
        let file = io.open(&path)?;
        let mut hb = [0u8; codec::SEG_HEADER_LEN];
        let got = read_up_to(file.file(), &mut hb)?;
        match SegHeader::decode(hb.get(..got).unwrap_or_default()) {
            Ok(h) if h.seg_no == no && h.shard as usize == shard => {
                opened.push((no, path, file, h))
            }
            Err(HeaderError::Version(version)) => {
                return Err(OpenError::UnsupportedVersion { path, version })
            }
            _ => {
                if all_zero(file.file())? {
                    // Created (and maybe preallocated) but never written: a
                    // segment whose creation failed or never became durable.
                    // Nothing in it was acknowledged.
                    tracing::warn!(seg = %path.display(), "dropping a segment whose header was never written");
                    drop(file);
                    files::remove_segment(io, dir, &path)?;
                } else if Some(no) == last_no {
                    // Created but its header never became durable: nothing
                    // in it was ever acknowledged.
                    tracing::warn!(seg = %path.display(), "dropping a segment with no valid header at the tail");
                    drop(file);
                    files::remove_segment(io, dir, &path)?;
                } else {
                    tracing::error!(seg = %path.display(), "segment header invalid; quarantined as .corrupt");
                    drop(file);
                    files::quarantine_segment(io, dir, &path)?;
                    acc.corrupt += 1;
                }
            }
        }
    }
    let superseded: HashSet<u32> = opened
        .iter()
        .filter(|(_, _, _, h)| h.supersedes != codec::NO_SEGMENT)
        .map(|(_, _, _, h)| h.supersedes)
        .collect();
    let mut removed = false;
    opened.retain(|(no, path, _, _)| {
        if superseded.contains(no) {
            // A compaction output replacing this one was renamed into place
            // before the crash; finish the unlink it could not.
            let _ = io.remove_file(path);
            let _ = io.remove_file(&segment::hint_path(path));
            removed = true;
            false
        } else {
            true
        }
    });
    if removed {
        io.sync_dir(dir)?;
    }
    let tail_no = opened
        .iter()
        .filter(|(_, _, _, h)| h.flags & codec::SEG_FLAG_REWRITE == 0)
        .map(|(no, ..)| *no)
        .max();
    for (no, path, file, hdr) in opened {
        acc.max_floor = acc.max_floor.max(hdr.id_floor);
        let file_len = file.file().metadata()?.len();
        let hint = std::fs::read(segment::hint_path(&path))
            .ok()
            .and_then(|b| Hint::decode(&b).ok())
            .filter(|h| {
                h.shard as usize == shard
                    && h.seg_no == no
                    && h.data_len <= file_len
                    && h.data_len >= codec::SEG_HEADER_LEN as u64
            });
        let (data_len, entries, suspects) = match hint {
            Some(h) => (h.data_len, h.entries, Vec::new()),
            None => {
                let tail = Some(no) == tail_no;
                let Scanned {
                    data_len,
                    entries,
                    suspects,
                    bad,
                } = scan(file.file(), file_len, tail, &path)?;
                acc.corrupt += bad;
                if tail && data_len < file_len {
                    tracing::warn!(seg = %path.display(), from = file_len, to = data_len, "truncating torn tail");
                    files::truncate(io, &file, data_len)?;
                }
                // A segment with bad records gets no hint: every open scans
                // it again, so its damage is counted again and its gaps stay
                // known (a hint has no way to say "corrupt").
                if bad == 0 {
                    let hint = Hint {
                        shard: shard as u32,
                        seg_no: no,
                        data_len,
                        entries: entries.clone(),
                    };
                    if let Err(e) = files::write_hint(io, dir, &path, &hint, sync) {
                        tracing::warn!(%e, "could not write hint file");
                    }
                }
                (data_len, entries, suspects)
            }
        };
        let map = Map::new(
            file.file(),
            usize::try_from(data_len.max(1)).unwrap_or(usize::MAX),
        )?;
        let seg = Arc::new(Segment::new(SegmentNo(no), path, map, data_len, true));
        index_entries(&seg, &entries, &mut acc);
        acc.msgs.extend(suspects.iter().map(|e| {
            (
                e.a,
                MsgRef {
                    seq: e.b,
                    seg: SegmentNo(no),
                    off: e.off,
                    len: e.len,
                    flags: REF_CORRUPT,
                },
            )
        }));
        out.segs.insert(SegmentNo(no), seg);
    }
    out.corrupt = acc.corrupt;
    Ok((out, acc))
}

/// True if the file holds nothing but zero bytes (or nothing at all): a
/// segment whose creation failed or never became durable. A segment whose
/// header was damaged later still has records after it and is quarantined.
fn all_zero(f: &File) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0u64;
    loop {
        let n = f.read_at(&mut buf, off)?;
        if n == 0 {
            return Ok(true);
        }
        if buf.get(..n).unwrap_or_default().iter().any(|&b| b != 0) {
            return Ok(false);
        }
        off += n as u64;
    }
}

fn read_up_to(f: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let Some(rest) = buf.get_mut(got..) else {
            break;
        };
        let k = f.read_at(rest, got as u64)?;
        if k == 0 {
            break;
        }
        got += k;
    }
    Ok(got)
}

/// What a scan of one segment found.
struct Scanned {
    /// End of the last whole batch.
    data_len: u64,
    /// Records of whole batches whose checksum held.
    entries: Vec<HintEntry>,
    /// Message records of whole batches whose checksum failed but whose
    /// prefix still names a mailbox and sequence: the sequence stays known
    /// as a gap if the rest of the index vouches for it (see [`resolve`]).
    suspects: Vec<HintEntry>,
    /// Bad records (checksum, unknown kind, unreadable framing).
    bad: u64,
}

/// Walk a segment without a hint, checking every record's CRC. Only records
/// of whole batches (followed by their `BatchCommit`) count. In the tail
/// segment the first bad record ends the log; elsewhere a bad record is
/// counted and skipped (a message's sequence kept as a suspect) and the walk
/// goes on, up to framing it cannot read past, which ends the walk of that
/// segment (counted, logged, the file left as it is).
fn scan(file: &File, file_len: u64, tail: bool, path: &Path) -> std::io::Result<Scanned> {
    let hdr = codec::SEG_HEADER_LEN as u64;
    if file_len <= hdr {
        return Ok(Scanned {
            data_len: hdr.min(file_len).max(hdr),
            entries: Vec::new(),
            suspects: Vec::new(),
            bad: 0,
        });
    }
    let map = Map::new(file, usize::try_from(file_len).unwrap_or(usize::MAX))?;
    let data = map.bytes();
    let limit = file_len as usize;
    let mut off = codec::SEG_HEADER_LEN;
    let mut committed_end = off;
    let mut entries = Vec::new();
    let mut pending: Vec<HintEntry> = Vec::new();
    let mut suspects = Vec::new();
    let mut pending_suspects: Vec<HintEntry> = Vec::new();
    let mut bad = 0u64;
    loop {
        let f = match codec::frame_at(data, off, limit) {
            Ok(f) => f,
            Err(FrameError::End) => break,
            Err(FrameError::Torn) => {
                if !tail {
                    tracing::warn!(seg = %path.display(), off, "unreadable record framing in a sealed segment; rest of segment skipped");
                    bad += 1;
                }
                break;
            }
        };
        let total = f.total_len();
        if !f.crc_ok() {
            if tail {
                break;
            }
            tracing::warn!(seg = %path.display(), off, "record checksum mismatch in a sealed segment; skipped");
            bad += 1;
            if f.kind == Kind::Message as u8 {
                if let Ok(h) = codec::message_head(f.payload) {
                    pending_suspects.push(HintEntry {
                        off: off as u32,
                        len: total as u32,
                        kind: f.kind,
                        a: h.mailbox,
                        b: h.seq,
                    });
                }
            }
            off += total;
            continue;
        }
        match Kind::from_u8(f.kind) {
            Some(Kind::BatchCommit) => {
                entries.append(&mut pending);
                suspects.append(&mut pending_suspects);
                committed_end = off + total;
            }
            Some(kind) => {
                let (a, b) = if kind == Kind::Message {
                    codec::message_head(f.payload)
                        .map(|h| (h.mailbox, h.seq))
                        .unwrap_or((0, 0))
                } else {
                    (0, 0)
                };
                pending.push(HintEntry {
                    off: off as u32,
                    len: total as u32,
                    kind: f.kind,
                    a,
                    b,
                });
            }
            None => {
                tracing::warn!(seg = %path.display(), off, kind = f.kind, "unknown record kind; skipped");
                bad += 1;
            }
        }
        off += total;
    }
    if !pending.is_empty() {
        tracing::warn!(seg = %path.display(), records = pending.len(), "dropping records of an unfinished batch");
    }
    Ok(Scanned {
        data_len: committed_end as u64,
        entries,
        suspects,
        bad,
    })
}

fn campaign_loc(shard: usize, loc: RecordLoc) -> crate::campaign::Loc {
    crate::campaign::Loc {
        shard: crate::ids::ShardIndex(shard),
        seg: loc.segment,
        off: loc.offset,
        len: loc.len,
    }
}

fn index_entries(seg: &Segment, entries: &[HintEntry], acc: &mut Acc) {
    for e in entries {
        let loc = RecordLoc {
            segment: seg.no,
            offset: e.off,
            len: e.len,
        };
        if e.kind == Kind::Message as u8 {
            acc.msgs.push((
                e.a,
                MsgRef {
                    seq: e.b,
                    seg: seg.no,
                    off: e.off,
                    len: e.len,
                    flags: 0,
                },
            ));
            continue;
        }
        let frame = match seg.frame(e.off) {
            Ok(f) if f.crc_ok() && f.total_len() == e.len as usize => f,
            _ => {
                tracing::warn!(seg = %seg.path.display(), off = e.off, "metadata record failed its checksum; skipped");
                acc.corrupt += 1;
                continue;
            }
        };
        let rec = match codec::decode(frame.kind, frame.payload) {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!(seg = %seg.path.display(), off = e.off, %err, "undecodable record; skipped");
                acc.corrupt += 1;
                continue;
            }
        };
        match rec {
            Record::MailboxCreated(m) => {
                acc.max_id = acc.max_id.max(m.id);
                acc.mailboxes.insert(m.id, (m, loc));
            }
            Record::MailboxDeleted { id, .. } => {
                acc.deleted_mb.insert(id);
            }
            Record::MessageDeleted { mailbox, seq, .. } => {
                acc.deleted_msgs.insert((mailbox, seq));
                let t = acc.tomb_seq.entry(mailbox).or_default();
                *t = (*t).max(seq);
            }
            Record::UserCreated {
                id,
                created_at_ms,
                name,
            } => {
                acc.max_id = acc.max_id.max(id);
                acc.users.push((id, created_at_ms, name));
            }
            Record::SubscriptionAdded { user, ordinal, sub } => {
                acc.max_id = acc.max_id.max(ordinal);
                acc.subs.push((ordinal, user, sub));
            }
            Record::ApiKeyCreated {
                id,
                user,
                hash,
                prefix,
                created_at_ms,
            } => {
                acc.max_id = acc.max_id.max(id);
                acc.keys.push(ApiKeyInfo {
                    id: ApiKeyId(id),
                    user: UserId(user),
                    hash,
                    prefix,
                    created_at_ms,
                    revoked_at_ms: None,
                });
            }
            Record::ApiKeyRevoked { id, at_ms } => acc.revokes.push((id, at_ms)),
            Record::Dedupe { key, at_ms, parts } => acc.dedupe.push((key, at_ms, parts)),
            Record::UserDisabled { id, at_ms } => acc.disabled.push((id, at_ms)),
            Record::AdminAudit(entry) => acc.audit.push(entry),
            Record::State {
                key,
                version,
                value,
            } => {
                acc.max_id = acc.max_id.max(version);
                acc.states.push((key, version, value, seg.no, e.len));
            }
            Record::SubscriptionsEnded {
                user,
                before_ordinal,
                at_ms,
            } => acc.sub_ends.push((user, before_ordinal, at_ms)),
            Record::CampaignCreated(c) => {
                let loc = campaign_loc(acc.shard, loc);
                acc.campaigns.created.push((c.info, loc));
            }
            Record::CampaignDeleted { id, .. } => acc.campaigns.deleted.push(id),
            Record::CampaignMessage(m) => {
                let loc = campaign_loc(acc.shard, loc);
                acc.campaigns
                    .messages
                    .push((crate::campaign::without_body(m), loc));
            }
            Record::AddressTombstone {
                address,
                owner,
                at_ms,
                until_ms,
            } => acc.tombstones.push((
                address,
                crate::tombstone::Tombstone {
                    owner,
                    at_ms,
                    until_ms,
                },
            )),
            Record::DeliveryPart {
                key,
                at_ms,
                outcomes,
            } => acc.delivery_parts.push((key, at_ms, outcomes)),
            Record::DeliveryDone { key, at_ms } => acc.delivery_done.push((key, at_ms)),
            Record::Message { .. } | Record::BatchCommit { .. } => {}
        }
    }
}

fn resolve(
    rec: &mut ShardRecovery,
    acc: &Acc,
    shard: usize,
    n: usize,
    meta: &mut MetaRecovery,
    now_ms: u64,
) {
    let n64 = n as u64;
    let mut max_id = acc.max_id;
    // Live mailboxes: created, not deleted, and the newest at their address.
    let mut newest: HashMap<String, u64> = HashMap::new();
    for (id, (m, _)) in &acc.mailboxes {
        if acc.deleted_mb.contains(id) {
            continue;
        }
        let e = newest.entry(m.address.clone()).or_insert(*id);
        *e = (*e).max(*id);
    }
    let mut last_seq: HashMap<u64, u64> = acc.tomb_seq.clone();
    // Damaged message records per mailbox (see `vouched` below).
    let mut suspects: HashMap<u64, u64> = HashMap::new();
    for (mb, r) in &acc.msgs {
        if r.flags & REF_CORRUPT != 0 {
            *suspects.entry(*mb).or_default() += 1;
            continue;
        }
        max_id = max_id.max(*mb);
        let l = last_seq.entry(*mb).or_default();
        *l = (*l).max(r.seq);
    }
    // A record that failed its checksum names its mailbox and sequence with
    // bytes nothing vouches for. It stays known (as a gap) only if its
    // mailbox is known and its sequence lies within what the mailbox's sound
    // records cover, or just past it by at most the number of damaged
    // records (the newest messages may be the damaged ones): so its
    // sequence is never reused, and damage cannot invent a far-off one.
    let vouched_until: HashMap<u64, u64> = suspects
        .iter()
        .filter(|(mb, _)| acc.mailboxes.contains_key(mb))
        .map(|(mb, n)| {
            let last = last_seq.get(mb).copied().unwrap_or(0);
            (*mb, last.saturating_add(*n))
        })
        .collect();
    let mut per_mb: HashMap<u64, Vec<MsgRef>> = HashMap::new();
    for (mb, r) in &acc.msgs {
        let live = acc
            .mailboxes
            .get(mb)
            .is_some_and(|(m, _)| newest.get(&m.address) == Some(mb) && m.expires_at_ms > now_ms);
        let vouched = r.flags & REF_CORRUPT == 0
            || vouched_until
                .get(mb)
                .is_some_and(|until| r.seq > 0 && r.seq <= *until);
        if vouched {
            let l = last_seq.entry(*mb).or_default();
            *l = (*l).max(r.seq);
        }
        if !live || !vouched || acc.deleted_msgs.contains(&(*mb, r.seq)) {
            if let Some(s) = rec.segs.get(&r.seg) {
                s.add_dead(u64::from(r.len));
            }
            continue;
        }
        per_mb.entry(*mb).or_default().push(*r);
    }
    // Sized exactly before the first insert: the tables never grow (and
    // leave their old allocations behind) while the index is rebuilt.
    let indexed = |id: &u64, m: &codec::MailboxRec| {
        newest.get(&m.address) == Some(id) && m.expires_at_ms > now_ms
    };
    let (count, local_bytes) = acc
        .mailboxes
        .iter()
        .filter(|(id, (m, _))| indexed(id, m))
        .fold((0, 0), |(n, bytes), (_, (m, _))| {
            (n + 1, bytes + m.address.rfind('@').unwrap_or(0))
        });
    rec.index.mailboxes.reserve(count, local_bytes);
    for (id, (m, loc)) in &acc.mailboxes {
        let Ok(address) = Address::parse(&m.address) else {
            tracing::warn!(address = %m.address, "mailbox record with an unparsable address; ignored");
            continue;
        };
        // Superseded at its address, or expired: a restart reaps it (as a
        // compaction pass would).
        if !indexed(id, m) {
            if let Some(s) = rec.segs.get(&loc.segment) {
                s.add_dead(u64::from(loc.len));
            }
            continue;
        }
        let mut msgs = per_mb.remove(id).unwrap_or_default();
        if !msgs
            .windows(2)
            .all(|w| w.first().map(|a| a.seq) < w.get(1).map(|b| b.seq))
        {
            // A sound record wins over a damaged one claiming its sequence.
            msgs.sort_by_key(|r| (r.seq, r.flags & REF_CORRUPT));
            msgs.dedup_by_key(|r| r.seq);
        }
        msgs.shrink_to_fit();
        let info = MailboxInfo {
            id: MailboxId(*id),
            address: address.clone(),
            owner: m.owner.clone(),
            created_at_ms: m.created_at_ms,
            expires_at_ms: m.expires_at_ms,
            max_messages: m.max_messages,
            message_count: msgs.len() as u32,
            last_seq: last_seq.get(id).copied().unwrap_or(0),
        };
        // Only the newest mailbox at an address is indexed: nothing is replaced.
        let replaced = rec.index.insert_mailbox(&info, *loc, msgs);
        debug_assert!(replaced.is_none());
    }
    // Messages whose mailbox record is gone altogether (orphans) are dead.
    for refs in per_mb.values() {
        for r in refs {
            if let Some(s) = rec.segs.get(&r.seg) {
                s.add_dead(u64::from(r.len));
            }
        }
    }
    // Per address the newest tombstone wins; an address a live mailbox
    // holds needs none until that mailbox ends.
    for (address, t) in &acc.tombstones {
        let Ok(address) = Address::parse(address) else {
            continue;
        };
        if rec.index.mailboxes.at_address(&address).is_none() {
            rec.tombstones.note(address, t.clone(), now_ms);
        }
    }
    rec.parts =
        crate::retry::Parts::rebuild(acc.delivery_parts.clone(), &acc.delivery_done, now_ms);
    // The newest version of each key wins, whatever order compaction left
    // the records in; older values count as dead bytes.
    let mut states = acc.states.clone();
    states.sort_by_key(|(_, version, ..)| *version);
    for (key, version, value, seg, len) in states {
        max_id = max_id.max(version);
        if let Some(old) = rec.index.states.remove(&key) {
            if let Some(s) = rec.segs.get(&old.seg) {
                s.add_dead(u64::from(old.len));
            }
        }
        if let Some(value) = value {
            let entry = StateValue {
                version,
                value,
                seg,
                len,
            };
            rec.index.states.insert(key, entry);
        }
    }
    let from_ids = if max_id == 0 { 1 } else { max_id / n64 + 1 };
    rec.counter = acc.max_floor.max(from_ids).max(1);
    let _ = shard;
    meta.users.extend(acc.users.iter().cloned());
    meta.subs.extend(acc.subs.iter().cloned());
    meta.keys.extend(acc.keys.iter().cloned());
    meta.revokes.extend(acc.revokes.iter().cloned());
    meta.disabled.extend(acc.disabled.iter().cloned());
    meta.audit.extend(acc.audit.iter().cloned());
    meta.sub_ends.extend(acc.sub_ends.iter().cloned());
    for (k, at, parts) in &acc.dedupe {
        let e = meta
            .dedupe
            .entry(k.clone())
            .or_insert((*at, *parts, HashSet::new()));
        e.0 = e.0.max(*at);
        e.1 = e.1.max(*parts);
        e.2.insert(shard);
    }
    for s in rec.segs.values() {
        let _ = s.dead_bytes.load(Ordering::Relaxed);
    }
}
