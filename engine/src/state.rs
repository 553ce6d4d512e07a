//! In-memory state shared by the handle, the writer threads and the
//! compaction owner: per-shard index (mailbox → ordered message refs) and
//! segment table, the users/keys table, the dedupe table and counters.
//!
//! Memory budget: a stored message costs one [`MsgRef`] (24 bytes) in its
//! mailbox's `Vec`; summaries, senders and subjects stay on disk and are read
//! from the mapped record when listing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;
use parking_lot::{Mutex, RwLock};

use crate::clock::Clock;
use crate::cmd::Cmd;
use crate::fanout::Hub;
use crate::ids::{RecordLoc, SegmentNo, ShardIndex};
use crate::segment::Segment;
use crate::types::*;

mod mailboxes;
pub(crate) use mailboxes::{MailboxEntry, Mailboxes};

/// Most shards: a delivery's `Dedupe` record counts the shards it went to
/// in a `u8`.
pub(crate) const MAX_SHARDS: usize = u8::MAX as usize;
/// Dedupe keys are forgotten this long after they were recorded.
pub(crate) const DEDUPE_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
/// Lock stripes of the dedupe table.
pub(crate) const DEDUPE_STRIPES: usize = 16;
/// The free-space probe runs at most this often.
pub(crate) const DISK_PROBE_EVERY_MS: u64 = 1000;

/// Where one stored message lives. 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MsgRef {
    pub(crate) seq: u64,
    pub(crate) seg: SegmentNo,
    pub(crate) off: u32,
    /// Whole frame length (header + payload).
    pub(crate) len: u32,
    /// [`REF_CORRUPT`] once a read found its checksum wrong.
    pub(crate) flags: u32,
}

/// The record failed its checksum; never served again.
pub(crate) const REF_CORRUPT: u32 = 1;

#[derive(Default)]
pub(crate) struct MailboxIndex {
    pub(crate) mailboxes: Mailboxes,
    /// Users' mailboxes as (user, mailbox): the API counts a user's
    /// mailboxes on every creation (the quota) and lists them, so this must
    /// not be a scan either. Ordered, so one user's are one range.
    pub(crate) by_user: BTreeSet<(u64, MailboxId)>,
    /// Message refs over all of `mailboxes` (for stats without a walk).
    /// Every change to a mailbox's `msgs` goes through a method here or
    /// adjusts it in the same place.
    pub(crate) messages: u64,
    /// Live `State` entries by key (shard 0 only; see [`crate::Engine::put_state`]).
    pub(crate) states: BTreeMap<String, StateValue>,
}

impl MailboxIndex {
    /// Index a new mailbox with the refs it already has. The older mailbox
    /// at its address (expired, or it could not have been created) is
    /// dropped from the index and returned.
    pub(crate) fn insert_mailbox(
        &mut self,
        info: &MailboxInfo,
        created: RecordLoc,
        msgs: Vec<MsgRef>,
    ) -> Option<MailboxEntry> {
        if let Owner::User(user) = &info.owner {
            self.by_user.insert((user.0, info.id));
        }
        self.messages += msgs.len() as u64;
        let replaced = self.mailboxes.insert(info, created, msgs);
        replaced.and_then(|old| self.remove_mailbox(old))
    }

    /// Drop a mailbox from the index (deleted or expired).
    pub(crate) fn remove_mailbox(&mut self, id: MailboxId) -> Option<MailboxEntry> {
        let m = self.mailboxes.remove(id)?;
        if let Owner::User(user) = &m.owner {
            self.by_user.remove(&(user.0, id));
        }
        self.messages = self.messages.saturating_sub(m.msgs.len() as u64);
        Some(m)
    }

    /// Drop one message's ref; it is returned.
    pub(crate) fn remove_message(&mut self, id: MailboxId, seq: u64) -> Option<MsgRef> {
        let mb = self.mailboxes.get_mut(id)?;
        let r = mb.msgs.remove(mb.find(seq)?)?;
        self.messages = self.messages.saturating_sub(1);
        Some(r)
    }

    /// The ids of `user`'s mailboxes (expired ones not yet reaped included).
    pub(crate) fn owned_by_user(&self, user: u64) -> impl Iterator<Item = MailboxId> + '_ {
        self.by_user
            .range((user, MailboxId(0))..=(user, MailboxId(u64::MAX)))
            .map(|(_, id)| *id)
    }

    /// The derived parts of the index (the id, address and token indexes,
    /// the user index, the message count) checked against the mailboxes
    /// themselves; `Err` names the first that differs. For tests: they are
    /// kept up to date by every change, never rebuilt by a scan.
    pub(crate) fn check_derived(&self) -> Result<(), String> {
        self.mailboxes.check()?;
        let mut by_user = BTreeSet::new();
        let mut messages = 0u64;
        for m in self.mailboxes.values() {
            messages += m.msgs.len() as u64;
            if let Owner::User(u) = &m.owner {
                by_user.insert((u.0, m.id));
            }
        }
        if by_user != self.by_user {
            return Err(format!(
                "by_user differs from a scan: {:?} indexed, {:?} scanned",
                self.by_user, by_user
            ));
        }
        if messages != self.messages {
            return Err(format!(
                "{} messages counted, {messages} scanned",
                self.messages
            ));
        }
        Ok(())
    }
}

/// Most live `State` entries (the API bounds its own use far below this).
pub(crate) const MAX_STATE_ENTRIES: usize = 100_000;

/// The newest version of one `State` key and where its record is.
pub(crate) struct StateValue {
    pub(crate) version: u64,
    pub(crate) value: String,
    pub(crate) seg: SegmentNo,
    pub(crate) len: u32,
}

pub(crate) struct Shard {
    pub(crate) index: RwLock<MailboxIndex>,
    pub(crate) segs: RwLock<BTreeMap<SegmentNo, Arc<Segment>>>,
    pub(crate) tx: Sender<Cmd>,
}

#[derive(Default)]
pub(crate) struct MetaState {
    pub(crate) users: HashMap<u64, UserInfo>,
    pub(crate) keys: HashMap<u64, ApiKeyInfo>,
    pub(crate) key_by_hash: HashMap<[u8; 32], u64>,
    /// (user, key id) of every key, revoked or not, so a user's keys are
    /// one range (keys are never deleted, only revoked).
    pub(crate) keys_by_user: BTreeSet<(u64, u64)>,
    /// user → when it was disabled.
    pub(crate) disabled: HashMap<u64, u64>,
    /// The newest operator actions, oldest first, at most [`AUDIT_IN_MEMORY`]
    /// (all of them stay in the log).
    pub(crate) audit: std::collections::VecDeque<AuditEntry>,
}

/// Operator actions kept in memory for `admin audit`; older ones are only in the log.
pub(crate) const AUDIT_IN_MEMORY: usize = 1000;

impl MetaState {
    pub(crate) fn insert_key(&mut self, k: ApiKeyInfo) {
        self.key_by_hash.insert(k.hash, k.id.0);
        self.keys_by_user.insert((k.user.0, k.id.0));
        self.keys.insert(k.id.0, k);
    }

    /// The ids of `user`'s keys, revoked or not.
    pub(crate) fn keys_of(&self, user: u64) -> impl Iterator<Item = u64> + '_ {
        self.keys_by_user
            .range((user, 0)..=(user, u64::MAX))
            .map(|(_, id)| *id)
    }

    /// See [`MailboxIndex::check_derived`].
    pub(crate) fn check_derived(&self) -> Result<(), String> {
        let by_user: BTreeSet<(u64, u64)> =
            self.keys.values().map(|k| (k.user.0, k.id.0)).collect();
        if by_user != self.keys_by_user {
            return Err("keys_by_user differs from a scan".into());
        }
        if self.key_by_hash.len() != self.keys.len()
            || self
                .keys
                .values()
                .any(|k| self.key_by_hash.get(&k.hash) != Some(&k.id.0))
        {
            return Err("key_by_hash differs from a scan".into());
        }
        Ok(())
    }

    pub(crate) fn push_audit(&mut self, entry: AuditEntry) {
        if self.audit.len() >= AUDIT_IN_MEMORY {
            self.audit.pop_front();
        }
        self.audit.push_back(entry);
    }
}

pub(crate) struct DedupeEntry {
    pub(crate) at_ms: u64,
    /// Still being written: a concurrent duplicate must retry, not be told
    /// "duplicate" (the first attempt may yet fail).
    pub(crate) pending: bool,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) batches: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    pub(crate) compaction_runs: AtomicU64,
    pub(crate) reclaimed: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) config: EngineConfig,
    pub(crate) dir: PathBuf,
    /// Every change to the data directory goes through this seam.
    pub(crate) io: Arc<dyn crate::files::Io>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) hub: Hub,
    pub(crate) shards: Vec<Shard>,
    pub(crate) meta: RwLock<MetaState>,
    pub(crate) dedupe: Vec<Mutex<HashMap<String, DedupeEntry>>>,
    /// Quota reserved at RCPT, per shard (see `quota.rs`).
    pub(crate) held: Vec<crate::quota::HeldTable>,
    /// Parts of failed deliveries each shard stored, for their retries
    /// (see `retry.rs`).
    pub(crate) parts: Vec<Mutex<crate::retry::Parts>>,
    /// Ended mailboxes' claims on their addresses, per shard (`tombstone.rs`).
    pub(crate) tombstones: Vec<Mutex<crate::tombstone::Tombstones>>,
    /// Which parts have failed (a failed sync, a panicked thread).
    pub(crate) health: Health,
    pub(crate) closed: AtomicBool,
    pub(crate) counters: Counters,
    pub(crate) started: Instant,
    /// Monotonic ms (since `started`) of the last free-space probe, and its verdict.
    pub(crate) disk_probe_at: AtomicU64,
    pub(crate) disk_low: AtomicBool,
    /// Free bytes the last probe saw, and what the writers have appended or
    /// preallocated since (so a burst between two probes is counted).
    pub(crate) free_at_probe: AtomicU64,
    pub(crate) written_since_probe: AtomicU64,
    /// Bytes of deliveries admitted by the free-space guard and not yet
    /// answered: the guard counts them as already written.
    pub(crate) bytes_in_flight: AtomicU64,
    /// Fault injection for tests: the next fdatasync reports failure.
    pub(crate) fail_next_sync: AtomicBool,
    /// Summaries of messages stored by older extraction rules, derived again.
    pub(crate) rederived: Arc<crate::summary_pool::Rederived>,
    /// Tests only: run by compaction once a rewrite's output is durable and
    /// before its swap (see [`crate::Engine::set_compaction_hook_for_tests`]).
    pub(crate) compaction_hook: Mutex<Option<CompactionHook>>,
    /// Live load-testing campaigns (`campaign.rs`). Lock order: a shard's
    /// index before this, never the other way round.
    pub(crate) campaigns: RwLock<crate::campaign::Table>,
    /// Cluster mode only: told of every committed event and every ended
    /// mailbox after the in-process fan-out (see
    /// [`crate::Engine::set_event_tap`]). Unset on a single host, where it
    /// costs one load per batch.
    pub(crate) event_tap: std::sync::OnceLock<EventTap>,
}

/// What an [`EventTap`] is told.
#[derive(Debug, Clone, Copy)]
pub enum Tapped<'a> {
    /// A message was committed and published.
    Committed(&'a crate::types::Event),
    /// The mailbox at this address, of this owner, ended (deleted or
    /// expired); its subscriptions here were closed.
    Closed(&'a Address, &'a crate::types::Owner),
}

/// See [`Shared::event_tap`]. Runs on a writer (or compaction) thread: it
/// must not block.
pub type EventTap = Arc<dyn Fn(Tapped<'_>) + Send + Sync>;

/// See [`Shared::compaction_hook`].
pub(crate) type CompactionHook = Arc<dyn Fn() + Send + Sync>;

impl Shared {
    pub(crate) fn n(&self) -> usize {
        self.shards.len()
    }

    pub(crate) fn shard_of_id(&self, id: u64) -> usize {
        // A mailbox id's prefix (its partition, in cluster mode) is above
        // `counter * shards + shard`.
        ((id & crate::MAILBOX_ID_LOW_MASK) % self.n() as u64) as usize
    }

    pub(crate) fn shard_of_address(&self, a: &Address) -> usize {
        shard_of_address(a, self.n())
    }

    pub(crate) fn run_compaction_hook(&self) {
        let hook = self.compaction_hook.lock().clone();
        if let Some(hook) = hook {
            hook();
        }
    }

    pub(crate) fn dedupe_stripe(&self, key: &str) -> &Mutex<HashMap<String, DedupeEntry>> {
        let i = (fnv1a(key.as_bytes()) % DEDUPE_STRIPES as u64) as usize;
        &self.dedupe[i % self.dedupe.len()]
    }

    /// Mark `shard` failed after a write or sync error: it refuses writes
    /// until restart (never retry a failed fsync). Other shards go on.
    pub(crate) fn poison(&self, shard: ShardIndex, what: &str, err: &std::io::Error) {
        if self.health.fail_shard(shard) {
            tracing::error!(%err, what, shard = shard.0, "storage write failed; shard poisoned, refusing writes until restart");
        }
    }

    /// True when `shard` refuses writes: it, or the engine as a whole, failed.
    pub(crate) fn shard_failed(&self, shard: ShardIndex) -> bool {
        self.health.shard_failed(shard)
    }

    pub(crate) fn shard(&self, shard: ShardIndex) -> &Shard {
        &self.shards[shard.0]
    }

    pub(crate) fn count_corrupt(&self, n: u64) {
        if n > 0 {
            self.counters.corrupt.fetch_add(n, Ordering::Relaxed);
            metrics::counter!(uncorreo_metric_names::CORRUPT_RECORDS_TOTAL).increment(n);
        }
    }

    /// Segment files and their bytes, over all shards.
    pub(crate) fn disk_usage(&self) -> (u64, u64) {
        let mut n = 0;
        let mut bytes = 0;
        for s in &self.shards {
            for seg in s.segs.read().values() {
                n += 1;
                bytes += seg.committed() as u64;
            }
        }
        (n, bytes)
    }

    pub(crate) fn publish_disk_gauges(&self) {
        let (n, bytes) = self.disk_usage();
        metrics::gauge!(uncorreo_metric_names::SEGMENTS).set(n as f64);
        metrics::gauge!(uncorreo_metric_names::DISK_BYTES).set(bytes as f64);
    }
}

/// What has failed. Each flag only ever goes from false to true: recovery
/// after a failure is a restart, which rebuilds everything from the log.
pub(crate) struct Health {
    /// Per shard: a write or sync failed, or its writer thread panicked.
    shards: Vec<AtomicBool>,
    /// The compaction owner panicked: expiry and compaction stopped, so the
    /// whole engine counts as failed.
    compaction: AtomicBool,
    /// Any of the above (one load for the per-command readiness check).
    any: AtomicBool,
}

impl Health {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            compaction: AtomicBool::new(false),
            any: AtomicBool::new(false),
        }
    }

    /// Mark `shard` failed; true if this call did it (log once).
    pub(crate) fn fail_shard(&self, shard: ShardIndex) -> bool {
        self.any.store(true, Ordering::Release);
        self.shards
            .get(shard.0)
            .is_some_and(|f| !f.swap(true, Ordering::AcqRel))
    }

    /// Mark the compaction owner failed; true if this call did it.
    pub(crate) fn fail_compaction(&self) -> bool {
        self.any.store(true, Ordering::Release);
        !self.compaction.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn shard_failed(&self, shard: ShardIndex) -> bool {
        self.compaction.load(Ordering::Acquire)
            || self
                .shards
                .get(shard.0)
                .is_none_or(|f| f.load(Ordering::Acquire))
    }

    pub(crate) fn any_failed(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    pub(crate) fn report(&self) -> EngineHealth {
        EngineHealth {
            failed_shards: self
                .shards
                .iter()
                .enumerate()
                .filter(|(_, f)| f.load(Ordering::Acquire))
                .map(|(i, _)| i)
                .collect(),
            compaction_failed: self.compaction.load(Ordering::Acquire),
        }
    }
}

/// Stable across processes and restarts (never `RandomState`): a mailbox's
/// shard must not move when the engine is reopened.
pub(crate) fn shard_of_address(a: &Address, n: usize) -> usize {
    let mut h = fnv1a(a.local().as_bytes());
    h ^= u64::from(b'@');
    h = h.wrapping_mul(0x100000001b3);
    for &b in a.domain().as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % n.max(1) as u64) as usize
}

pub(crate) fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}
