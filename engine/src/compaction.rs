//! Expiry and compaction: the single owner thread (and `compact_now`).
//!
//! A pass (1) removes expired mailboxes from the index, (2) forgets old
//! dedupe keys, then (3) for every sealed segment whose estimated live
//! fraction is under `compaction_live_ratio`, checks each record's liveness
//! precisely: a segment with nothing live is unlinked; otherwise its owning
//! shard's writer plans ([`plan_rewrite`]) and writes the rewrite of its live
//! records into a new segment that *supersedes* it (see FORMAT.md), swaps
//! the index refs and unlinks it.
//! Running the rewrite on the writer thread means no append, delete or index
//! change of that shard can interleave with it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::cmd::Cmd;
use crate::codec::{self, Dec, HintEntry, Kind, Record};
use crate::error::StorageError;
use crate::files;
use crate::ids::{SegmentNo, ShardIndex};
use crate::poison::{Guarded, PoisonDart};
use crate::segment::{self, Segment};
use crate::state::{MailboxIndex, Shared, DEDUPE_TTL_MS};
use crate::types::{CompactionReport, MailboxId};

/// What a writer's rewrite did.
#[derive(Debug)]
pub(crate) enum RewriteOutcome {
    /// Nothing in the segment was live; the caller may drop it.
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
            let live = {
                let idx = shared.shard(shard).index.read();
                let segs: HashSet<SegmentNo> =
                    shared.shard(shard).segs.read().keys().copied().collect();
                live_bytes(&idx, &segs, &seg, now)
            };
            if live == 0 {
                report.bytes_reclaimed += drop_segment(shared, shard, &seg)?;
                report.segments_dropped += 1;
                continue;
            }
            let (tx, rx) = crossbeam_channel::bounded(1);
            shared
                .shard(shard)
                .tx
                .send(Cmd::Rewrite {
                    seg: seg.no,
                    reply: tx,
                })
                .map_err(|_| StorageError::Closed)?;
            match rx.recv().map_err(|_| StorageError::Closed)?? {
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

/// Remove expired mailboxes from the index: their records become dead.
fn expire(shared: &Shared, now: u64) {
    for shard in (0..shared.n()).map(ShardIndex) {
        let expired: Vec<MailboxId> = shared
            .shard(shard)
            .index
            .read()
            .mailboxes
            .values()
            .filter(|m| m.info.expires_at_ms <= now)
            .map(|m| m.info.id)
            .collect();
        if expired.is_empty() {
            continue;
        }
        let mut idx = shared.shard(shard).index.write();
        let quarantine = shared.config.address_quarantine.as_millis() as u64;
        for id in expired {
            if let Some(m) = idx.remove_mailbox(id) {
                // Its creation record's tombstone, now that it ended.
                let t = crate::tombstone::Tombstone {
                    owner: m.info.owner.clone(),
                    at_ms: m.info.created_at_ms,
                    until_ms: m.info.expires_at_ms.saturating_add(quarantine),
                };
                shared.tombstones[shard.0]
                    .lock()
                    .note(m.info.address.clone(), t, now);
                crate::writer::mark_mailbox_dead(shared, shard, &m);
                shared.hub.close_mailbox(id);
            }
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
            idx.mailboxes.get(&MailboxId(h.mailbox)).is_some_and(|m| {
                m.info.expires_at_ms > now
                    && m.find(h.seq)
                        .and_then(|i| m.msgs.get(i))
                        .is_some_and(|r| r.seg == seg && r.off == off)
            })
        }
        Some(Kind::MailboxCreated) => {
            let Ok(id) = d.u64() else { return false };
            idx.mailboxes.get(&MailboxId(id)).is_some_and(|m| {
                m.info.expires_at_ms > now && m.created.segment == seg && m.created.offset == off
            })
        }
        Some(
            Kind::MailboxDeleted
            | Kind::MessageDeleted
            | Kind::Dedupe
            | Kind::State
            | Kind::AddressTombstone,
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
                    .get(&MailboxId(mailbox))
                    .is_some_and(|m| m.info.expires_at_ms > now && m.info.last_seq == seq)
        }
        Record::Dedupe { at_ms, .. } => now.saturating_sub(at_ms) < DEDUPE_TTL_MS,
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

fn live_bytes(idx: &MailboxIndex, segs: &HashSet<SegmentNo>, seg: &Segment, now: u64) -> u64 {
    let mut live = 0;
    for (off, _) in frames(seg) {
        if let Ok(f) = seg.frame(off) {
            if is_live(idx, segs, seg.no, off, f.kind, f.payload, now) {
                live += f.total_len() as u64;
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

/// What a rewrite of one sealed segment writes: decided from the index on
/// the owning shard's writer thread (so nothing of the shard changes between
/// the plan and its application), applied by `Writer::rewrite`.
pub(crate) struct RewritePlan {
    /// The segment being replaced.
    pub(crate) old: Arc<Segment>,
    /// Its live frames back to back, then one `BatchCommit`.
    pub(crate) body: Vec<u8>,
    /// Hint entries of the output (offsets in the new segment).
    pub(crate) hints: Vec<HintEntry>,
    /// Old offset → new offset of every frame kept.
    pub(crate) moved: HashMap<u32, u32>,
}

/// Plan the rewrite of `old` (sealed, of `shard`): its live records with
/// their checksums good. `None` when nothing in it is live.
pub(crate) fn plan_rewrite(
    shared: &Shared,
    shard: ShardIndex,
    old: Arc<Segment>,
) -> Option<RewritePlan> {
    let now = shared.clock.now_ms();
    let mut body = Vec::new();
    let mut hints = Vec::new();
    let mut moved = HashMap::new();
    let mut corrupt = 0;
    {
        let idx = shared.shard(shard).index.read();
        let segs: HashSet<SegmentNo> = shared.shard(shard).segs.read().keys().copied().collect();
        for (off, _) in frames(&old) {
            let Ok(f) = old.frame(off) else { continue };
            if !is_live(&idx, &segs, old.no, off, f.kind, f.payload, now) {
                continue;
            }
            if !f.crc_ok() {
                corrupt += 1;
                tracing::warn!(seg = %old.path.display(), off, "corrupt record dropped by compaction");
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
            moved.insert(off, new_off);
        }
    }
    shared.count_corrupt(corrupt);
    if body.is_empty() {
        return None;
    }
    Record::BatchCommit {
        records: hints.len() as u32,
    }
    .encode_frame(&mut body);
    Some(RewritePlan {
        old,
        body,
        hints,
        moved,
    })
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
