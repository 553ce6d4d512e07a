//! Expiry and compaction: the single owner thread (and `compact_now`).
//!
//! A pass (1) removes expired mailboxes from the index, (2) forgets old
//! dedupe keys, then (3) for every sealed segment whose estimated live
//! fraction is under `compaction_live_ratio`, checks each record's liveness
//! precisely: a segment with nothing live is unlinked; otherwise its live
//! records are copied into a new segment that *supersedes* it (see
//! FORMAT.md), and the owning shard's writer swaps it in.
//!
//! No lock is held for long: liveness is read from the index a few hundred
//! records per read-lock hold ([`LIVENESS_STEP`]), the copy and its
//! `fsync` happen on this thread with no lock at all, and the writer keeps
//! appending and readers keep reading meanwhile. Liveness only ever goes
//! from live to dead for a record of a sealed segment, so a copy is never
//! missing anything; what died while it was made is settled by the writer
//! at the swap ([`RewriteOutput`], `Writer::finish_rewrite`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::cmd::Cmd;
use crate::codec::{self, Dec, HintEntry, Kind, Record};
use crate::error::StorageError;
use crate::files::{self, DataFile};
use crate::ids::{SegmentNo, ShardIndex};
use crate::poison::{Guarded, PoisonDart};
use crate::segment::{self, Segment};
use crate::state::{MailboxIndex, Shared, DEDUPE_TTL_MS};
use crate::types::{CompactionReport, MailboxId};

/// Records whose liveness is read per hold of a shard's index read lock.
const LIVENESS_STEP: usize = 256;
/// Mailbox slots looked at for expiry per hold of a shard's index read lock.
const EXPIRY_STEP: usize = 4096;

/// What a rewrite did.
#[derive(Debug)]
pub(crate) enum RewriteOutcome {
    /// Nothing in the segment was live (or readable); the caller drops it.
    Empty,
    /// Rewritten; the old file is gone. Bytes reclaimed.
    Rewritten(u64),
    /// Not eligible (unknown, or the active segment).
    Skipped,
}

/// The owner thread: one pass every `interval` until `stop` says so.
pub(crate) fn run_owner(
    shared: Arc<Shared>,
    stop: Receiver<()>,
    lock: Arc<parking_lot::Mutex<()>>,
) {
    let _dart = PoisonDart::new(Arc::clone(&shared), Guarded::Compaction);
    let interval = shared
        .config
        .compaction_interval
        .max(Duration::from_millis(10));
    loop {
        match stop.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let _g = lock.lock();
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        match pass(&shared) {
            Ok(r) if r != CompactionReport::default() => tracing::info!(?r, "compaction pass"),
            Ok(_) => {}
            Err(e) => tracing::warn!(%e, "compaction pass failed"),
        }
    }
}

/// One full pass.
pub(crate) fn pass(shared: &Shared) -> Result<CompactionReport, StorageError> {
    let now = shared.clock.now_ms();
    let mut report = CompactionReport::default();
    expire(shared, now);
    for t in &shared.tombstones {
        t.lock().prune(now);
    }
    for stripe in &shared.dedupe {
        stripe
            .lock()
            .retain(|_, e| e.pending || now.saturating_sub(e.at_ms) < DEDUPE_TTL_MS);
    }
    let ratio = shared.config.compaction_live_ratio;
    for shard in (0..shared.n()).map(ShardIndex) {
        let candidates: Vec<Arc<Segment>> = shared
            .shard(shard)
            .segs
            .read()
            .values()
            .filter(|s| s.sealed.load(Ordering::Acquire) && s.live_ratio() < ratio)
            .cloned()
            .collect();
        for seg in candidates {
            let live = live_frames(shared, shard, &seg, now);
            let outcome = if live.is_empty() {
                RewriteOutcome::Empty
            } else {
                rewrite(shared, shard, Arc::clone(&seg), &live)?
            };
            match outcome {
                RewriteOutcome::Empty => {
                    report.bytes_reclaimed += drop_segment(shared, shard, &seg)?;
                    report.segments_dropped += 1;
                }
                RewriteOutcome::Rewritten(b) => {
                    report.bytes_reclaimed += b;
                    report.segments_rewritten += 1;
                }
                RewriteOutcome::Skipped => {}
            }
        }
    }
    let c = &shared.counters;
    c.compaction_runs.fetch_add(1, Ordering::Relaxed);
    c.reclaimed
        .fetch_add(report.bytes_reclaimed, Ordering::Relaxed);
    metrics::counter!(uncorreo_metric_names::COMPACTION_RUNS_TOTAL).increment(1);
    metrics::counter!(uncorreo_metric_names::COMPACTION_RECLAIMED_BYTES_TOTAL)
        .increment(report.bytes_reclaimed);
    shared.publish_disk_gauges();
    Ok(report)
}

/// Remove expired campaigns from the campaign table and expired mailboxes
/// from the index: their records become dead. Mailboxes a few thousand slots at a time, each look under its own brief read lock
/// and each removal under its own brief write lock, so a pass over a
/// million mailboxes never holds a shard's index for long.
fn expire(shared: &Shared, now: u64) {
    let gone = shared.campaigns.write().take_expired(now);
    for e in &gone {
        crate::writer::mark_campaign_dead(shared, e);
    }
    for shard in (0..shared.n()).map(ShardIndex) {
        let quarantine = shared.config.address_quarantine.as_millis() as u64;
        let mut from = Some(0);
        while let Some(start) = from {
            let (expired, next) =
                shared
                    .shard(shard)
                    .index
                    .read()
                    .mailboxes
                    .expired(start, EXPIRY_STEP, now);
            from = next;
            if expired.is_empty() {
                continue;
            }
            let mut idx = shared.shard(shard).index.write();
            for id in expired {
                // Read before the removal: the slab forgets it.
                let address = idx.mailboxes.get(id).map(|m| idx.mailboxes.address(m));
                if let Some(m) = idx.remove_mailbox(id) {
                    // Its creation record's tombstone, now that it ended.
                    let tap = shared.event_tap.get();
                    if let Some(address) = address {
                        if let Some(tap) = tap {
                            tap(crate::state::Tapped::Closed(&address, &m.owner));
                        }
                        let t = crate::tombstone::Tombstone {
                            owner: m.owner.clone(),
                            at_ms: m.created_at_ms,
                            until_ms: m.expires_at_ms.saturating_add(quarantine),
                        };
                        shared.tombstones[shard.0].lock().note(address, t, now);
                    }
                    crate::writer::mark_mailbox_dead(shared, shard, &m);
                    shared.hub.close_mailbox(id);
                }
            }
        }
    }
}

/// What liveness is decided against: the shard's index and the campaigns.
struct Ctx<'a> {
    idx: &'a MailboxIndex,
    campaigns: &'a crate::campaign::Table,
    shard: ShardIndex,
}

impl Ctx<'_> {
    fn is_live(
        &self,
        segs: &HashSet<SegmentNo>,
        seg: SegmentNo,
        off: u32,
        kind: u8,
        payload: &[u8],
        now: u64,
    ) -> bool {
        match Kind::from_u8(kind) {
            Some(Kind::CampaignCreated | Kind::CampaignDeleted | Kind::CampaignMessage) => self
                .campaigns
                .is_live((kind, payload), (self.shard, seg, off), segs, now),
            _ => is_live(self.idx, segs, seg, off, kind, payload, now),
        }
    }
}

/// Is the record at `off` of `seg` still needed? See FORMAT.md, "Liveness".
fn is_live(
    idx: &MailboxIndex,
    segs: &HashSet<SegmentNo>,
    seg: SegmentNo,
    off: u32,
    kind: u8,
    payload: &[u8],
    now: u64,
) -> bool {
    let mut d = Dec::new(payload);
    match Kind::from_u8(kind) {
        Some(Kind::Message) => {
            let Ok(h) = codec::message_head(payload) else {
                return false;
            };
            idx.mailboxes.get(MailboxId(h.mailbox)).is_some_and(|m| {
                m.expires_at_ms > now
                    && m.find(h.seq)
                        .and_then(|i| m.msgs.get(i))
                        .is_some_and(|r| r.seg == seg && r.off == off)
            })
        }
        Some(Kind::MailboxCreated) => {
            let Ok(id) = d.u64() else { return false };
            idx.mailboxes.get(MailboxId(id)).is_some_and(|m| {
                m.expires_at_ms > now && m.created.segment == seg && m.created.offset == off
            })
        }
        Some(
            Kind::MailboxDeleted
            | Kind::MessageDeleted
            | Kind::Dedupe
            | Kind::State
            | Kind::AddressTombstone
            | Kind::DeliveryPart
            | Kind::DeliveryDone,
        ) => codec::decode(kind, payload)
            .is_ok_and(|record| decoded_is_live(idx, segs, seg, record, now)),
        Some(
            Kind::UserCreated
            | Kind::SubscriptionAdded
            | Kind::ApiKeyCreated
            | Kind::ApiKeyRevoked
            | Kind::UserDisabled
            | Kind::AdminAudit
            | Kind::SubscriptionsEnded,
        ) => true,
        Some(Kind::BatchCommit) | None => false,
        // Decided by `Ctx::is_live` before this is reached.
        Some(Kind::CampaignCreated | Kind::CampaignDeleted | Kind::CampaignMessage) => true,
    }
}

/// [`is_live`] for the kinds whose liveness needs the decoded record:
/// tombstones, dedupe keys and `State` entries.
fn decoded_is_live(
    idx: &MailboxIndex,
    segs: &HashSet<SegmentNo>,
    seg: SegmentNo,
    record: Record<'_>,
    now: u64,
) -> bool {
    // A tombstone is live while the segment it deletes from is still there.
    let target_ok = |t: u32| SegmentNo(t) != seg && segs.contains(&SegmentNo(t));
    match record {
        Record::MailboxDeleted { target_seg, .. } => target_ok(target_seg),
        Record::MessageDeleted {
            mailbox,
            seq,
            target_seg,
        } => {
            // Also kept while it names the mailbox's highest sequence, so
            // that sequence is never handed out again after a restart.
            target_ok(target_seg)
                || idx
                    .mailboxes
                    .get(MailboxId(mailbox))
                    .is_some_and(|m| m.expires_at_ms > now && m.last_seq == seq)
        }
        Record::Dedupe { at_ms, .. } => now.saturating_sub(at_ms) < DEDUPE_TTL_MS,
        // A part, and the note that its delivery is done, are carried for
        // as long as recovery would use them (`retry.rs`): a done note
        // outlives every part it cancels (those are no later than it).
        Record::DeliveryPart { at_ms, .. } | Record::DeliveryDone { at_ms, .. } => {
            now.saturating_sub(at_ms) < crate::retry::RETRY_WINDOW_MS
        }
        // Live while its quarantine runs (FORMAT.md, "Liveness").
        Record::AddressTombstone { until_ms, .. } => until_ms > now,
        // A value is live while it is its key's newest version; a deletion
        // is always kept, so an older value in another segment cannot come
        // back at the next open (one small record per deleted key).
        Record::State {
            key,
            version,
            value: Some(_),
        } => idx.states.get(&key).is_some_and(|e| e.version == version),
        Record::State { value: None, .. } => true,
        _ => false,
    }
}

/// Walk the frames of a sealed segment: (offset, frame) for each readable one.
fn frames(seg: &Segment) -> Vec<(u32, usize)> {
    let mut out = Vec::new();
    let mut off = codec::SEG_HEADER_LEN;
    while let Ok(f) = seg.frame(off as u32) {
        out.push((off as u32, f.total_len()));
        off += f.total_len();
    }
    out
}

/// (offset, length) of the frames of sealed `seg` that are live now, read
/// from the index [`LIVENESS_STEP`] records per lock hold.
fn live_frames(shared: &Shared, shard: ShardIndex, seg: &Segment, now: u64) -> Vec<(u32, usize)> {
    let mut live = Vec::new();
    for step in frames(seg).chunks(LIVENESS_STEP) {
        let idx = shared.shard(shard).index.read();
        let segs: HashSet<SegmentNo> = shared.shard(shard).segs.read().keys().copied().collect();
        // Lock order: the shard's index before the campaign table.
        let campaigns = shared.campaigns.read();
        let ctx = Ctx {
            idx: &idx,
            campaigns: &campaigns,
            shard,
        };
        for &(off, len) in step {
            if let Ok(f) = seg.frame(off) {
                if ctx.is_live(&segs, seg.no, off, f.kind, f.payload, now) {
                    live.push((off, len));
                }
            }
        }
    }
    live
}

/// Unlink a segment with nothing live. Readers holding bytes from it keep
/// its mapping alive (the `Bytes` own an `Arc` of it), so this is safe.
///
/// Its records are dead only because of the index and of tombstones in other
/// segments, which a later pass may drop once this one is gone. So an unlink
/// that may not survive a crash stops the shard, and a stopped shard drops
/// nothing more: the segment coming back must still find its tombstones.
fn drop_segment(shared: &Shared, shard: ShardIndex, seg: &Segment) -> Result<u64, StorageError> {
    if shared.shard_failed(shard) {
        return Err(StorageError::Poisoned);
    }
    shared.shard(shard).segs.write().remove(&seg.no);
    let bytes = segment::file_bytes(&seg.path);
    if let Err(e) = files::remove_segment(shared.io.as_ref(), &shared.dir, &seg.path) {
        let what = "unlinking a segment with nothing live";
        return Err(stop_shard(shared, shard, what, &e));
    }
    Ok(bytes)
}

/// A change to the data directory that compaction made may not be durable
/// (a failed unlink or directory fsync): poison the shard, as the writer does
/// after a failed `fdatasync`. The next open settles what is on disk.
pub(crate) fn stop_shard(
    shared: &Shared,
    shard: ShardIndex,
    what: &str,
    e: &std::io::Error,
) -> StorageError {
    shared.poison(shard, what, e);
    StorageError::Poisoned
}

/// One record a rewrite copied, and what refers to it in the index.
pub(crate) struct Move {
    pub(crate) what: Moved,
    pub(crate) old_off: u32,
    pub(crate) new_off: u32,
    pub(crate) len: u32,
}

/// What names a copied record in the index.
pub(crate) enum Moved {
    /// A mailbox's ref to its message `seq`.
    Message { mailbox: MailboxId, seq: u64 },
    /// A mailbox's `created` ref.
    Created(MailboxId),
    /// A campaign's `created` place in the campaign table.
    CampaignCreated(u64),
    /// Nothing (tombstones, dedupe keys, state, users and keys).
    Nothing,
}

/// A rewrite written and durable under its temp name, for the owning
/// writer to put in place of `old` (`Writer::finish_rewrite`).
pub(crate) struct RewriteOutput {
    pub(crate) old: Arc<Segment>,
    pub(crate) new_no: SegmentNo,
    /// Where the output goes (it is at its temp name until the swap).
    pub(crate) path: PathBuf,
    pub(crate) file: DataFile,
    pub(crate) data_len: u64,
    pub(crate) moves: Vec<Move>,
    /// Messages live when copied whose record failed its checksum: not
    /// copied, their refs go (they were never served).
    pub(crate) corrupt: Vec<(MailboxId, u64, u32)>,
}

/// Rewrite sealed `old` of `shard`, whose frames `live` were live a moment
/// ago: copy them into a new segment on this thread, then have the writer
/// swap it in. Appends and reads of the shard go on meanwhile.
fn rewrite(
    shared: &Shared,
    shard: ShardIndex,
    old: Arc<Segment>,
    live: &[(u32, usize)],
) -> Result<RewriteOutcome, StorageError> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let begin = Cmd::RewriteBegin {
        seg: old.no,
        reply: tx,
    };
    shared
        .shard(shard)
        .tx
        .send(begin)
        .map_err(|_| StorageError::Closed)?;
    let Some((new_no, id_floor)) = rx.recv().map_err(|_| StorageError::Closed)?? else {
        return Ok(RewriteOutcome::Skipped);
    };
    let mut body = Vec::new();
    let mut hints = Vec::new();
    let mut moves = Vec::new();
    let mut corrupt = Vec::new();
    for &(off, _) in live {
        let Ok(f) = old.frame(off) else { continue };
        let what = match Kind::from_u8(f.kind) {
            Some(Kind::Message) => match codec::message_head(f.payload) {
                Ok(h) => Moved::Message {
                    mailbox: MailboxId(h.mailbox),
                    seq: h.seq,
                },
                Err(_) => Moved::Nothing,
            },
            Some(Kind::MailboxCreated) => match Dec::new(f.payload).u64() {
                Ok(id) => Moved::Created(MailboxId(id)),
                Err(_) => Moved::Nothing,
            },
            Some(Kind::CampaignCreated) => match Dec::new(f.payload).u64() {
                Ok(id) => Moved::CampaignCreated(id),
                Err(_) => Moved::Nothing,
            },
            _ => Moved::Nothing,
        };
        if !f.crc_ok() {
            tracing::warn!(seg = %old.path.display(), off, "corrupt record dropped by compaction");
            shared.count_corrupt(1);
            if let Moved::Message { mailbox, seq } = what {
                corrupt.push((mailbox, seq, off));
            }
            continue;
        }
        let new_off = (codec::SEG_HEADER_LEN + body.len()) as u32;
        let bytes = old
            .map
            .bytes()
            .get(off as usize..off as usize + f.total_len())
            .unwrap_or_default();
        body.extend_from_slice(bytes);
        hints.push(hint_entry(&f, new_off));
        moves.push(Move {
            what,
            old_off: off,
            new_off,
            len: f.total_len() as u32,
        });
    }
    if body.is_empty() {
        // Everything live was corrupt: the segment goes as a whole.
        return Ok(RewriteOutcome::Empty);
    }
    Record::BatchCommit {
        records: hints.len() as u32,
    }
    .encode_frame(&mut body);
    let path = segment::seg_path(&shared.dir, shard, new_no);
    let header = codec::SegHeader {
        flags: codec::SEG_FLAG_REWRITE,
        shard: shard.0 as u32,
        seg_no: new_no.0,
        id_floor,
        supersedes: old.no.0,
    };
    let io = shared.io.as_ref();
    let file = files::write_rewrite_tmp(io, &path, &header.encode(), &body)?;
    let data_len = (codec::SEG_HEADER_LEN + body.len()) as u64;
    drop(body);
    shared.run_compaction_hook();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let swap = Cmd::RewriteSwap {
        output: Box::new(RewriteOutput {
            old,
            new_no,
            path: path.clone(),
            file,
            data_len,
            moves,
            corrupt,
        }),
        reply: tx,
    };
    let swapped = match shared.shard(shard).tx.send(swap) {
        Ok(()) => rx.recv().unwrap_or(Err(StorageError::Closed)),
        Err(_) => Err(StorageError::Closed),
    };
    if swapped.is_err() {
        // Not in place (a swap that renamed it and then failed stopped the
        // shard): the temp file goes now rather than at the next open.
        let _ = files::remove_if_there(io, &segment::tmp_path(&path));
        return swapped;
    }
    let hint = codec::Hint {
        shard: shard.0 as u32,
        seg_no: new_no.0,
        data_len,
        entries: hints,
    };
    if let Err(e) = files::write_hint(io, &shared.dir, &path, &hint, true) {
        tracing::warn!(%e, "could not write hint for a compaction output");
    }
    swapped
}

/// The hint entry of frame `f` once it sits at `off` of the output.
fn hint_entry(f: &codec::Frame<'_>, off: u32) -> HintEntry {
    let (a, b) = if f.kind == Kind::Message as u8 {
        codec::message_head(f.payload)
            .map(|h| (h.mailbox, h.seq))
            .unwrap_or((0, 0))
    } else {
        (0, 0)
    };
    HintEntry {
        off,
        len: f.total_len() as u32,
        kind: f.kind,
        a,
        b,
    }
}
