//! The `Engine` handle: the only way other crates touch storage.
//!
//! Writes are routed to the shard that owns the mailbox (by address when it
//! is created, by id afterwards; users, keys and subscriptions live in shard
//! 0) and go through that shard's writer thread, which acknowledges them only
//! once durable. Reads take the owning shard's index lock briefly and then
//! read the memory-mapped segment, verifying checksums before handing bytes
//! out. There is no engine-wide lock on either path.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::TrySendError;
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::backup::{BackupError, BackupReport};
use crate::clock::{Clock, SystemClock};
use crate::cmd::{Cmd, RcptResults, Reply};
use crate::codec;
use crate::error::{
    BatchFailure, CreateMailboxError, DeliverError, LookupError, OpenError, OperationError,
    ResolveError, StorageError, WriteError,
};
use crate::fanout::{Hub, SubscribeError, Subscriber, SubscriberLimits};
use crate::files::{Io, RealIo};
use crate::ids::{SegmentNo, ShardIndex};
use crate::poison::{Guarded, PoisonDart};
use crate::quota::QuotaHolds;
use crate::recovery;
use crate::retry::{self, PendingKey};
use crate::segment::Segment;
use crate::state::*;
use crate::sys::Map;
use crate::types::*;
use crate::writer::{self, Writer};

/// A cheap, cloneable handle to the open engine. All methods may be called
/// from any thread or runtime; `async` ones wait for durability.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stop_compaction: Mutex<Option<crossbeam_channel::Sender<()>>>,
    compaction_lock: Arc<Mutex<()>>,
    lock_file: Mutex<Option<File>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Largest accepted `segment_bytes`: record offsets are 32-bit.
const MAX_SEGMENT_BYTES: u64 = 1 << 31;
/// Longest key of a [`Engine::put_state`] entry, in bytes.
pub const MAX_STATE_KEY_BYTES: usize = 256;
/// Largest value of a [`Engine::put_state`] entry, in bytes.
pub const MAX_STATE_VALUE_BYTES: usize = 64 * 1024;

/// Room a Message record needs besides the raw bytes: its fixed prefix and
/// the meta (summary fields, links and codes are clipped to far less).
const MESSAGE_HEADROOM: usize = 1 << 20;
/// Largest accepted `max_message_bytes`: its record must stay within what
/// the decoder accepts (the writer also refuses any record that would not).
const MAX_MESSAGE_BYTES: usize = codec::MAX_PAYLOAD - MESSAGE_HEADROOM;
/// Largest accepted `batch_max_bytes`.
const MAX_BATCH_BYTES: usize = 1 << 28;
// Record offsets are u32: the end of any batch in any segment must fit, and
// a segment is at most `MAX_SEGMENT_BYTES`, or one batch (one message past
// `batch_max_bytes` at most) plus its header when that is larger.
const _: () = assert!(
    MAX_SEGMENT_BYTES as u128
        + MAX_BATCH_BYTES as u128
        + codec::MAX_PAYLOAD as u128
        + 2 * codec::FRAME_HEADER_LEN as u128
        + codec::SEG_HEADER_LEN as u128
        <= u32::MAX as u128
);

fn validate(c: &EngineConfig) -> Result<(), OpenError> {
    let bad = |s: &str| Err(OpenError::Config(s.to_owned()));
    if c.segment_bytes < 4096 || c.segment_bytes > MAX_SEGMENT_BYTES {
        return bad("segment_bytes must be between 4 KiB and 2 GiB");
    }
    if c.max_message_bytes == 0 || c.max_message_bytes > MAX_MESSAGE_BYTES {
        return bad("max_message_bytes must be between 1 byte and 1023 MiB (1 GiB less the record's headroom)");
    }
    if c.queue_depth == 0 || c.batch_max_bytes == 0 {
        return bad("queue_depth and batch_max_bytes must be positive");
    }
    if c.batch_max_bytes > MAX_BATCH_BYTES {
        return bad("batch_max_bytes must be at most 256 MiB");
    }
    if c.shards > MAX_SHARDS {
        return bad("at most 255 shards");
    }
    if !(0.0..=1.0).contains(&c.compaction_live_ratio) {
        return bad("compaction_live_ratio must be within 0..=1");
    }
    Ok(())
}

/// Recipients of one delivery bound for one shard: (shard, (recipient,
/// mailbox id), their positions in the delivery).
type Group = (usize, Vec<(Recipient, MailboxId)>, Vec<usize>);

/// Whether `shard` takes writes now: the engine is open and neither the
/// shard nor the engine as a whole has failed.
fn writable(sh: &Shared, shard: usize) -> Result<(), BatchFailure> {
    if sh.closed.load(Ordering::Acquire) {
        return Err(BatchFailure::Closed);
    }
    if sh.shard_failed(ShardIndex(shard)) {
        return Err(BatchFailure::Poisoned);
    }
    Ok(())
}

/// Queue `cmd` on the shard's writer; a refused command comes back with why
/// (boxed: refusals are rare, and a command is large).
fn send<E: OperationError>(sh: &Shared, shard: usize, cmd: Cmd) -> Result<(), Box<(Cmd, E)>> {
    let refused = match writable(sh, shard) {
        Err(failure) => (cmd, failure.into()),
        Ok(()) => match sh.shards[shard].tx.try_send(cmd) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(cmd)) => (cmd, E::saturated()),
            Err(TrySendError::Disconnected(cmd)) => (cmd, gone(sh, shard).into()),
        },
    };
    Err(Box::new(refused))
}

/// Why a writer that dropped its end of a channel is gone.
/// A writer ends only at shutdown; gone while the engine is open means it
/// died (its poison guard may not have run yet).
fn gone(sh: &Shared, shard: usize) -> BatchFailure {
    if sh.shard_failed(ShardIndex(shard)) || !sh.closed.load(Ordering::Acquire) {
        BatchFailure::Poisoned
    } else {
        BatchFailure::Closed
    }
}

/// Hand the deliveries of one message, now with its summary, to their
/// writers; one a writer cannot take is answered with why, on its reply.
fn hand_over(sh: &Shared, summary: MessageSummary, cmds: Vec<(usize, Cmd)>) {
    let summary = Arc::new(summary);
    for (shard, mut cmd) in cmds {
        if let Cmd::Deliver {
            summary: slot, enq, ..
        } = &mut cmd
        {
            *slot = Arc::clone(&summary);
            *enq = Instant::now();
        }
        if let Err(refused) = send::<DeliverError>(sh, shard, cmd) {
            if let (Cmd::Deliver { reply, retry, .. }, e) = *refused {
                retry::answer_delivery(reply, retry, Err(e));
            }
        }
    }
}

/// Bytes of a delivery the free-space guard admitted, until it is answered
/// (or its future dropped).
struct InFlight<'a> {
    shared: &'a Shared,
    bytes: u64,
}

impl<'a> InFlight<'a> {
    fn admit(shared: &'a Shared, bytes: u64) -> Self {
        shared.bytes_in_flight.fetch_add(bytes, Ordering::Relaxed);
        Self { shared, bytes }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.shared
            .bytes_in_flight
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A slice of a mapped segment that keeps the mapping alive.
struct MapSlice {
    map: Arc<Map>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        self.map
            .bytes()
            .get(self.start..self.end)
            .unwrap_or_default()
    }
}

impl Engine {
    /// Open (or create) the engine in `config.data_dir`, recovering from the log.
    pub fn open(config: EngineConfig) -> Result<Self, OpenError> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    /// As [`Engine::open`], with an injected clock (tests drive expiry with it).
    pub fn open_with_clock(config: EngineConfig, clock: Arc<dyn Clock>) -> Result<Self, OpenError> {
        Self::open_with_io(config, clock, Arc::new(RealIo))
    }

    /// As [`Engine::open_with_clock`], with every change to the data
    /// directory going through `io`. [`RealIo`] is the only production
    /// implementation; tests pass layers that simulate crashes or inject
    /// faults.
    pub fn open_with_io(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        io: Arc<dyn Io>,
    ) -> Result<Self, OpenError> {
        validate(&config)?;
        let dir = config.data_dir.clone();
        let lock_file = recovery::lock_dir(&dir)?;
        let n = recovery::shard_count(io.as_ref(), &dir, config.shards)?;
        let now = clock.now_ms();
        let (recs, meta_rec) = recovery::recover(
            io.as_ref(),
            &dir,
            n,
            now,
            config.durability == Durability::Always,
        )?;

        let mut shards = Vec::with_capacity(n);
        let mut rxs = Vec::with_capacity(n);
        let mut starts = Vec::with_capacity(n);
        let mut corrupt = 0;
        let mut tombstones = Vec::with_capacity(n);
        let mut parts = Vec::with_capacity(n);
        for mut r in recs {
            tombstones.push(Mutex::new(std::mem::take(&mut r.tombstones)));
            parts.push(Mutex::new(std::mem::take(&mut r.parts)));
            let (tx, rx) = crossbeam_channel::bounded(config.queue_depth);
            rxs.push(rx);
            corrupt += r.corrupt;
            starts.push((r.counter, SegmentNo(r.next_seg)));
            shards.push(Shard {
                index: RwLock::new(r.index),
                segs: RwLock::new(r.segs),
                tx,
            });
        }
        let mut meta = MetaState::default();
        for (id, created_at_ms, name) in meta_rec.users {
            meta.users.insert(
                id,
                UserInfo {
                    id: UserId(id),
                    name,
                    created_at_ms,
                    subscriptions: Vec::new(),
                },
            );
        }
        let mut subs = meta_rec.subs;
        subs.sort_by_key(|(ord, _, _)| *ord);
        subs.dedup_by_key(|(ord, _, _)| *ord);
        for (ordinal, user, mut sub) in subs {
            for (_, _, at) in meta_rec
                .sub_ends
                .iter()
                .filter(|(u, before, _)| *u == user && ordinal < *before)
            {
                let end = sub.ends_at_ms.get_or_insert(*at);
                *end = (*end).min(*at);
            }
            if let Some(u) = meta.users.get_mut(&user) {
                u.subscriptions.push(sub);
            }
        }
        for k in meta_rec.keys {
            meta.insert_key(k);
        }
        for (id, at) in meta_rec.revokes {
            if let Some(k) = meta.keys.get_mut(&id) {
                let r = k.revoked_at_ms.get_or_insert(at);
                *r = (*r).min(at);
            }
        }
        for (id, at) in meta_rec.disabled {
            let d = meta.disabled.entry(id).or_insert(at);
            *d = (*d).min(at);
        }
        let mut audit = meta_rec.audit;
        audit.sort_by_key(|a| a.at_ms);
        for entry in audit {
            meta.push_audit(entry);
        }
        let dedupe: Vec<_> = (0..DEDUPE_STRIPES)
            .map(|_| Mutex::new(HashMap::new()))
            .collect();
        let shared = Arc::new(Shared {
            hub: Hub::new(config.subscriber_queue),
            dir: dir.clone(),
            io,
            clock,
            shards,
            meta: RwLock::new(meta),
            dedupe,
            held: (0..n).map(|_| Mutex::new(HashMap::new())).collect(),
            parts,
            tombstones,
            health: Health::new(n),
            closed: Default::default(),
            counters: Counters::default(),
            started: Instant::now(),
            disk_probe_at: u64::MAX.into(),
            disk_low: Default::default(),
            free_at_probe: u64::MAX.into(),
            written_since_probe: Default::default(),
            bytes_in_flight: Default::default(),
            fail_next_sync: Default::default(),
            rederived: Default::default(),
            compaction_hook: Default::default(),
            event_tap: Default::default(),
            campaigns: RwLock::new(meta_rec.campaigns.build(now)),
            config,
        });
        for (key, (at_ms, _, _)) in meta_rec.dedupe {
            shared.dedupe_stripe(&key).lock().insert(
                key,
                DedupeEntry {
                    at_ms,
                    pending: false,
                },
            );
        }
        shared.count_corrupt(corrupt);
        // Recovery's temporary tables are gone: give their pages back.
        crate::sys::release_free_memory();

        // Every active segment exists before any thread starts, so a failure
        // here leaves no thread behind.
        let mut writers = Vec::with_capacity(n);
        for (shard, (rx, (counter, next_seg))) in rxs.into_iter().zip(starts).enumerate() {
            let shard = ShardIndex(shard);
            let cap = shared.config.segment_bytes;
            let (file, active) =
                writer::create_segment(&shared, shard, next_seg, counter, cap, true)?;
            writers.push(Writer {
                dart: PoisonDart::new(Arc::clone(&shared), Guarded::Writer(shard)),
                shard,
                shared: Arc::clone(&shared),
                rx,
                file,
                active,
                write_off: codec::SEG_HEADER_LEN as u64,
                cap,
                // Made at open, possibly without its reservation (no room):
                // count every batch written into it.
                counted_to: codec::SEG_HEADER_LEN as u64,
                hints: Vec::new(),
                counter,
                next_seg: next_seg.next(),
                recent: [0, 0],
                last_sync: std::time::Duration::ZERO,
                forgotten: Default::default(),
            });
        }
        let mut threads = Vec::with_capacity(n + 1);
        for w in writers {
            let h = std::thread::Builder::new()
                .name(format!("log-writer-{}", w.shard))
                .spawn(move || w.run())?;
            threads.push(h);
        }
        let compaction_lock = Arc::new(Mutex::new(()));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        {
            let shared = Arc::clone(&shared);
            let lock = Arc::clone(&compaction_lock);
            threads.push(
                std::thread::Builder::new()
                    .name("compaction".into())
                    .spawn(move || crate::compaction::run_owner(shared, stop_rx, lock))?,
            );
        }
        shared.publish_disk_gauges();
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                threads: Mutex::new(threads),
                stop_compaction: Mutex::new(Some(stop_tx)),
                compaction_lock,
                lock_file: Mutex::new(Some(lock_file)),
            }),
        })
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.shared.config
    }

    /// The engine's clock, in ms since the epoch.
    pub fn now_ms(&self) -> u64 {
        self.shared().clock.now_ms()
    }

    /// True if `domain` (any case) is one we accept mail for.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.config()
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// Check a recipient as written by a sender (`box+tag@domain`): syntax,
    /// domain, a live mailbox, quota (counting what transactions hold in
    /// it). Holds nothing: see [`Engine::resolve_held`].
    pub fn resolve(&self, rcpt: &str) -> Result<Recipient, ResolveError> {
        self.resolve_inner(rcpt, None)
    }

    /// A fresh, empty set of quota reservations for one transaction.
    pub fn quota_holds(&self) -> QuotaHolds {
        QuotaHolds::new(Arc::clone(&self.inner.shared))
    }

    /// [`Engine::resolve`] at SMTP `RCPT` (and on the other ingest paths):
    /// the first recipient of a mailbox in a transaction also reserves one
    /// message of its quota in `holds`, so a recipient accepted now is not
    /// refused for a full mailbox when the data arrives. Later recipients
    /// of the same mailbox (other plus tags) cost nothing more: the
    /// delivery stores one copy per mailbox.
    pub fn resolve_held(&self, rcpt: &str, holds: &QuotaHolds) -> Result<Recipient, ResolveError> {
        self.resolve_inner(rcpt, Some((holds, true)))
    }

    /// [`Engine::resolve`] as seen from inside a transaction: what `holds`
    /// already reserved counts as room, and nothing new is reserved (for a
    /// check that must pass before the reservation is taken).
    pub fn resolve_within(
        &self,
        rcpt: &str,
        holds: &QuotaHolds,
    ) -> Result<Recipient, ResolveError> {
        self.resolve_inner(rcpt, Some((holds, false)))
    }

    /// `holds`: the transaction's reservations, and whether to reserve.
    fn resolve_inner(
        &self,
        rcpt: &str,
        holds: Option<(&QuotaHolds, bool)>,
    ) -> Result<Recipient, ResolveError> {
        let domain = rcpt
            .rsplit_once('@')
            .map(|(_, d)| d)
            .ok_or(ResolveError::BadAddress)?;
        if let Some(id) = self.campaign_for(rcpt) {
            return self.resolve_campaign(rcpt, id);
        }
        if !self.is_local_domain(domain) {
            return Err(ResolveError::ForeignDomain);
        }
        let r = Recipient::parse(rcpt).map_err(|_| ResolveError::BadAddress)?;
        let now = self.now_ms();
        let sh = self.shared();
        let idx = sh.shards[sh.shard_of_address(&r.address)].index.read();
        let mb = idx
            .mailboxes
            .at_address(&r.address)
            .ok_or(ResolveError::NoSuchMailbox)?;
        if mb.expires_at_ms <= now {
            return Err(ResolveError::NoSuchMailbox);
        }
        let id = mb.id;
        if holds.is_some_and(|(h, _)| h.holds(id)) {
            return Ok(r);
        }
        // Under the index read lock: the writer counts a message and gives
        // its reservation back under the write lock, so both are seen or
        // neither.
        let (stored, max) = (mb.message_count(), mb.max_messages);
        let fits = match holds {
            Some((h, true)) => h.try_add(id, stored, max),
            _ => stored.saturating_add(crate::quota::reserved(sh, id)) < max,
        };
        if !fits {
            return Err(ResolveError::MailboxFull);
        }
        Ok(r)
    }

    fn send<E: OperationError>(&self, shard: usize, cmd: Cmd) -> Result<(), E> {
        send(self.shared(), shard, cmd).map_err(|refused| refused.1)
    }

    fn gone(&self, shard: usize) -> BatchFailure {
        gone(self.shared(), shard)
    }

    pub(crate) async fn call<T, E: OperationError>(
        &self,
        shard: usize,
        make: impl FnOnce(Reply<T, E>) -> Cmd,
    ) -> Result<T, E> {
        let (tx, rx) = oneshot::channel();
        self.send::<E>(shard, make(tx))?;
        rx.await.map_err(|_| E::from(self.gone(shard)))?
    }

    /// Room for `extra` more bytes above the floor? The filesystem is probed
    /// at most once a second; in between, the bytes the writers appended
    /// since the probe and the deliveries admitted but not yet answered are
    /// counted as used, so a burst of large messages cannot overshoot the
    /// floor between two probes.
    fn disk_ok(&self, extra: u64) -> bool {
        let sh = self.shared();
        let min = sh.config.min_free_bytes;
        if min == 0 {
            return true;
        }
        let now = sh.started.elapsed().as_millis() as u64;
        let last = sh.disk_probe_at.load(Ordering::Relaxed);
        if last == u64::MAX || now.saturating_sub(last) >= DISK_PROBE_EVERY_MS {
            sh.disk_probe_at.store(now, Ordering::Relaxed);
            match crate::sys::free_bytes(&sh.dir) {
                Ok(free) => {
                    sh.free_at_probe.store(free, Ordering::Relaxed);
                    sh.written_since_probe.store(0, Ordering::Relaxed);
                    sh.disk_low.store(false, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(%e, "statvfs on the data directory failed");
                    sh.free_at_probe.store(u64::MAX, Ordering::Relaxed);
                }
            }
        }
        let used = sh
            .written_since_probe
            .load(Ordering::Relaxed)
            .saturating_add(sh.bytes_in_flight.load(Ordering::Relaxed))
            .saturating_add(extra);
        let left = sh
            .free_at_probe
            .load(Ordering::Relaxed)
            .saturating_sub(used);
        let low = left < min;
        sh.disk_low.store(low, Ordering::Relaxed);
        !low
    }

    /// THE delivery entry point: store `delivery.raw` once per mailbox its
    /// recipients name (one copy with every plus tag it was addressed to,
    /// counted once against the quota) and return only when every stored
    /// copy is durable, and its event is already queued for every subscriber.
    pub async fn deliver(&self, delivery: Delivery) -> Result<DeliveryOutcome, DeliverError> {
        self.deliver_held(delivery, self.quota_holds()).await
    }

    /// [`Engine::deliver`] for recipients resolved with
    /// [`Engine::resolve_held`]: the quota `holds` reserved pays for their
    /// copies, so a mailbox that filled up since cannot refuse them.
    pub async fn deliver_held(
        &self,
        delivery: Delivery,
        holds: QuotaHolds,
    ) -> Result<DeliveryOutcome, DeliverError> {
        self.deliver_checked(delivery, holds, None).await
    }

    /// The key that names a delivery across its retries (`retry.rs`): the
    /// envelope sender, the recipient set and the message past its first
    /// header field (the accepting host's trace line, new on each try).
    /// With a caller-given dedupe key (the SNS `MessageId`), the key is made
    /// from it alone, so two distinct notifications with the same content
    /// stay two messages, also after a restart of the owner.
    pub fn delivery_key(delivery: &Delivery) -> [u8; 32] {
        match &delivery.dedupe_key {
            Some(key) => retry::explicit_key(key),
            None => {
                retry::derived_key(&delivery.envelope_from, &delivery.recipients, &delivery.raw)
            }
        }
    }

    /// [`Engine::deliver_held`] for a delivery that spans hosts: the part
    /// another host accepted and forwarded here, its owner, or the local part
    /// of one this host forwards in part (SCALE.md). Its parts are remembered under
    /// `key` for the retry window even when all of them commit: the
    /// accepting host may lose this answer, tell its sender to retry, and
    /// forward the retry, which then gets the ids stored the first time.
    pub async fn deliver_forwarded(
        &self,
        delivery: Delivery,
        holds: QuotaHolds,
        key: [u8; 32],
    ) -> Result<DeliveryOutcome, DeliverError> {
        self.deliver_checked(delivery, holds, Some(key)).await
    }

    async fn deliver_checked(
        &self,
        delivery: Delivery,
        holds: QuotaHolds,
        forwarded: Option<retry::DeliveryKey>,
    ) -> Result<DeliveryOutcome, DeliverError> {
        if delivery.raw.len() > self.config().max_message_bytes {
            return Err(DeliverError::TooLarge {
                limit: self.config().max_message_bytes,
            });
        }
        if self.shared().closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed.into());
        }
        // Every copy plus its framing, as the guard counts it.
        let bytes = (delivery.raw.len() as u64 + 256)
            .saturating_mul(delivery.recipients.len().max(1) as u64);
        if !self.disk_ok(bytes) {
            return Err(DeliverError::DiskFull);
        }
        let sh = self.shared();
        let _in_flight = InFlight::admit(sh, bytes);
        if let Some(key) = &delivery.dedupe_key {
            let mut stripe = sh.dedupe_stripe(key).lock();
            match stripe.get(key) {
                Some(e) if e.pending => return Err(DeliverError::Saturated),
                Some(_) => return Ok(DeliveryOutcome::Duplicate),
                None => {
                    stripe.insert(
                        key.clone(),
                        DedupeEntry {
                            at_ms: self.now_ms(),
                            pending: true,
                        },
                    );
                }
            }
        }
        // Settles the pending key once this future and every write it
        // queued are done: committed if every part is durable, forgotten
        // otherwise (so a retry is not told "saturated" forever) — but never
        // while a write is still queued, even if the caller gave up.
        let pending = delivery
            .dedupe_key
            .clone()
            .map(|key| PendingKey::new(Arc::clone(&self.inner.shared), key));
        self.deliver_inner(delivery, holds, pending, forwarded)
            .await
    }

    async fn deliver_inner(
        &self,
        delivery: Delivery,
        holds: QuotaHolds,
        pending: Option<Arc<PendingKey>>,
        forwarded: Option<retry::DeliveryKey>,
    ) -> Result<DeliveryOutcome, DeliverError> {
        let sh = self.shared();
        let n = delivery.recipients.len();
        let named = match delivery.dedupe_key {
            None => Some(delivery.recipients.clone()),
            Some(_) => None,
        };
        let mut results: Vec<Option<(Recipient, Result<MessageId, ResolveError>)>> = vec![None; n];
        let mut groups: Vec<Group> = Vec::new();
        let mut campaign_groups = crate::campaign_api::Groups::default();
        let any_campaign = !sh.campaigns.read().campaigns.is_empty();
        for (i, rcpt) in delivery.recipients.into_iter().enumerate() {
            let rcpt = match any_campaign {
                true => match campaign_groups.route(self, rcpt, i, &delivery.raw) {
                    Some(rcpt) => rcpt,
                    None => continue,
                },
                false => rcpt,
            };
            let shard = sh.shard_of_address(&rcpt.address);
            let id = sh.shards[shard]
                .index
                .read()
                .mailboxes
                .at_address(&rcpt.address)
                .map(|m| m.id);
            let Some(id) = id else {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some((rcpt, Err(ResolveError::NoSuchMailbox)));
                }
                continue;
            };
            match groups.iter_mut().find(|g| g.0 == shard) {
                Some(g) => {
                    g.1.push((rcpt, id));
                    g.2.push(i);
                }
                None => groups.push((shard, vec![(rcpt, id)], vec![i])),
            }
        }
        if groups.is_empty() && campaign_groups.is_empty() && delivery.dedupe_key.is_some() {
            // Nothing to store, but the key must still be remembered durably.
            groups.push((0, Vec::new(), Vec::new()));
        }
        // One group per shard and kind, at most MAX_SHARDS each: the count fits its u8.
        assert!(groups.len() <= MAX_SHARDS, "{} shard groups", groups.len());
        assert!(
            campaign_groups.len() <= MAX_SHARDS,
            "{} campaign groups",
            campaign_groups.len()
        );
        let parts = (groups.len() + campaign_groups.len()).min(usize::from(u8::MAX)) as u8;
        // The pending dedupe key settles with the mailbox parts, whose
        // writes report back to it; campaign parts do not (yet).
        if let Some(p) = &pending {
            p.set_parts(groups.len());
        }
        // What identifies this delivery across retries: only needed where
        // a part can fail after another committed (see `retry.rs`).
        let key = match (&delivery.dedupe_key, named) {
            _ if forwarded.is_some() => forwarded,
            (Some(k), _) => Some(retry::explicit_key(k)),
            (None, Some(named)) if groups.len() > 1 => Some(retry::derived_key(
                &delivery.envelope_from,
                &named,
                &delivery.raw,
            )),
            _ => None,
        };
        let shards_of_delivery: Vec<usize> = groups.iter().map(|g| g.0).collect();
        // One receive time for every copy of this delivery.
        let at = self.now_ms();
        let mut waits = Vec::with_capacity(groups.len());
        let mut cmds = Vec::with_capacity(groups.len());
        for (shard, rcpts, slots) in groups {
            if let Some(done) = key
                .as_ref()
                .and_then(|k| self.stored_part(shard, k, &rcpts))
            {
                // An earlier try stored this part: its ids, not a second copy.
                if let Some(p) = &pending {
                    p.part_committed();
                }
                for (slot, r) in slots.into_iter().zip(done) {
                    if let Some(s) = results.get_mut(slot) {
                        *s = Some(r);
                    }
                }
                continue;
            }
            let (tx, rx) = oneshot::channel::<Result<RcptResults, DeliverError>>();
            let cmd = Cmd::Deliver {
                raw: delivery.raw.clone(),
                envelope_from: delivery.envelope_from.clone(),
                // Filled in by `hand_over` once the summary pool has it.
                summary: Arc::default(),
                rcpts,
                dedupe: delivery.dedupe_key.clone().map(|k| (k, parts)),
                holds: holds.clone(),
                retry: key.map(|k| (k, pending.clone())),
                enq: Instant::now(),
                at,
                reply: tx,
            };
            cmds.push((shard, cmd));
            waits.push((shard, rx, slots));
        }
        let summarize = cmds
            .iter()
            .any(|(_, cmd)| matches!(cmd, Cmd::Deliver { rcpts, .. } if !rcpts.is_empty()));
        if summarize {
            // Parsed on the summary pool, not on this (SMTP or HTTP) core
            // thread, and handed to the writers from there: this thread is
            // woken once per message (by the commit), not also in between.
            let shared = Arc::clone(&self.inner.shared);
            crate::summary_pool::global()?.then(
                delivery.raw.clone(),
                Box::new(move |summary| hand_over(&shared, summary, cmds)),
            )?;
        } else {
            // Only the dedupe record: nothing to parse.
            for (shard, cmd) in cmds {
                self.send::<DeliverError>(shard, cmd)?;
            }
        }
        for (shard, rcpts, slots) in campaign_groups.into_groups() {
            let (tx, rx) = oneshot::channel::<Result<RcptResults, DeliverError>>();
            let cmd = crate::cmd::CampaignCmd::Deliver {
                raw: delivery.raw.clone(),
                envelope_from: delivery.envelope_from.clone(),
                rcpts,
                dedupe: delivery.dedupe_key.clone().map(|k| (k, parts)),
                enq: Instant::now(),
                reply: tx,
            };
            self.send::<DeliverError>(shard, Cmd::Campaign(cmd))?;
            waits.push((shard, rx, slots));
        }
        for (shard, rx, slots) in waits {
            let got = rx
                .await
                .map_err(|_| DeliverError::from(self.gone(shard)))??;
            for (slot, r) in slots.into_iter().zip(got) {
                if let Some(s) = results.get_mut(slot) {
                    *s = Some(r);
                }
            }
        }
        if let (Some(k), None) = (&key, forwarded) {
            // Done everywhere: nothing left to retry, and the same bytes
            // sent again later are a new message. (Not for a forwarded
            // delivery: done here is not yet acked by the accepting host.)
            let logged = retry::logged(delivery.dedupe_key.as_ref().map(|_| parts));
            for shard in shards_of_delivery {
                sh.parts[shard].lock().forget(k);
                if logged {
                    // Durably too, with the shard's next batch. A full
                    // queue drops the note: see `retry.rs`.
                    let _ = sh.shards[shard]
                        .tx
                        .try_send(Cmd::ForgetPart { key: *k, at });
                }
            }
        }
        let mut stored = Vec::new();
        let mut refused = Vec::new();
        for (rcpt, r) in results.into_iter().flatten() {
            match r {
                // Recipients of one mailbox share its one copy.
                Ok(id) if stored.contains(&id) => {}
                Ok(id) => stored.push(id),
                Err(e) => refused.push((rcpt, e)),
            }
        }
        Ok(DeliveryOutcome::Delivered { stored, refused })
    }

    /// What an earlier try of delivery `key` stored in `shard`, per
    /// recipient of `rcpts`, if it stored its part there.
    fn stored_part(
        &self,
        shard: usize,
        key: &retry::DeliveryKey,
        rcpts: &[(Recipient, MailboxId)],
    ) -> Option<RcptResults> {
        let parts = self.shared().parts[shard].lock();
        let outcomes = parts.get(key, self.now_ms())?;
        Some(
            rcpts
                .iter()
                .map(|(rcpt, id)| {
                    let r = outcomes
                        .iter()
                        .find(|(m, _)| m == id)
                        .map_or(Err(ResolveError::NoSuchMailbox), |(_, r)| *r);
                    (rcpt.clone(), r)
                })
                .collect(),
        )
    }

    /// Create a mailbox. Fails with [`CreateMailboxError::AlreadyExists`] if a live
    /// mailbox has that address, [`CreateMailboxError::ForeignDomain`] for a foreign domain.
    pub async fn create_mailbox(&self, new: NewMailbox) -> Result<MailboxInfo, CreateMailboxError> {
        if !self.is_local_domain(new.address.domain()) {
            return Err(CreateMailboxError::ForeignDomain);
        }
        let shard = self.shared().shard_of_address(&new.address);
        self.call(shard, |reply| Cmd::CreateMailbox {
            new,
            enq: Instant::now(),
            at: self.now_ms(),
            reply,
        })
        .await
    }

    /// The live (not expired, not deleted) mailbox at `address`.
    pub fn mailbox(&self, address: &Address) -> Option<MailboxInfo> {
        let sh = self.shared();
        let idx = sh.shards[sh.shard_of_address(address)].index.read();
        let mb = idx.mailboxes.at_address(address)?;
        (mb.expires_at_ms > self.now_ms()).then(|| idx.mailboxes.info(mb))
    }

    /// The live mailbox with this id.
    pub fn mailbox_by_id(&self, id: MailboxId) -> Option<MailboxInfo> {
        let sh = self.shared();
        let idx = sh.shards[sh.shard_of_id(id.0)].index.read();
        let mb = idx.mailboxes.get(id)?;
        (mb.expires_at_ms > self.now_ms()).then(|| idx.mailboxes.info(mb))
    }

    /// The live anonymous mailbox whose session token has this SHA-256
    /// (a token opens exactly one mailbox). One lookup per shard, no scan.
    pub fn mailbox_by_token_hash(&self, token_hash: &[u8; 32]) -> Option<MailboxInfo> {
        let now = self.now_ms();
        self.shared().shards.iter().find_map(|s| {
            let idx = s.index.read();
            idx.mailboxes
                .with_token(token_hash)
                .filter(|m| m.expires_at_ms > now)
                .map(|m| idx.mailboxes.info(m))
        })
    }

    /// Live mailboxes with this owner, oldest first: one range of the owner
    /// index per shard, no scan.
    pub fn mailboxes_owned_by(&self, owner: &Owner) -> Vec<MailboxInfo> {
        let user = match owner {
            Owner::Anonymous { token_hash } => {
                return self.mailbox_by_token_hash(token_hash).into_iter().collect();
            }
            Owner::User(user) => user,
        };
        let now = self.now_ms();
        let mut v = Vec::new();
        for s in &self.shared().shards {
            let idx = s.index.read();
            v.extend(
                idx.owned_by_user(user.0)
                    .filter_map(|id| idx.mailboxes.get(id))
                    .filter(|m| m.expires_at_ms > now)
                    .map(|m| idx.mailboxes.info(m)),
            );
        }
        v.sort_by_key(|m| (m.created_at_ms, m.id));
        v
    }

    /// Delete a mailbox and (logically, at once; physically at compaction) its messages.
    pub async fn delete_mailbox(&self, id: MailboxId) -> Result<(), WriteError> {
        let shard = self.shared().shard_of_id(id.0);
        self.call(shard, |reply| Cmd::DeleteMailbox {
            id: id.0,
            enq: Instant::now(),
            reply,
        })
        .await
    }

    /// The refs (and their segments) of a live mailbox's messages with
    /// `seq > since_seq`, at most `limit`.
    fn refs(
        &self,
        mailbox: MailboxId,
        since_seq: u64,
        limit: usize,
    ) -> Result<Vec<(MsgRef, Arc<Segment>)>, LookupError> {
        let sh = self.shared();
        let shard = &sh.shards[sh.shard_of_id(mailbox.0)];
        let idx = shard.index.read();
        let mb = idx.mailboxes.get(mailbox).ok_or(LookupError::NotFound)?;
        if mb.expires_at_ms <= self.now_ms() {
            return Err(LookupError::NotFound);
        }
        let start = mb.msgs.partition_point(|r| r.seq <= since_seq);
        let segs = shard.segs.read();
        Ok(mb
            .msgs
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take(limit)
            .filter_map(|r| segs.get(&r.seg).map(|s| (*r, Arc::clone(s))))
            .collect())
    }

    fn one_ref(&self, id: MessageId) -> Result<(MsgRef, Arc<Segment>), LookupError> {
        let sh = self.shared();
        let shard = &sh.shards[sh.shard_of_id(id.mailbox.0)];
        let idx = shard.index.read();
        let mb = idx.mailboxes.get(id.mailbox).ok_or(LookupError::NotFound)?;
        if mb.expires_at_ms <= self.now_ms() {
            return Err(LookupError::NotFound);
        }
        let r = mb
            .find(id.seq)
            .and_then(|i| mb.msgs.get(i))
            .ok_or(LookupError::NotFound)?;
        let seg = shard
            .segs
            .read()
            .get(&r.seg)
            .cloned()
            .ok_or(LookupError::NotFound)?;
        Ok((*r, seg))
    }

    fn meta_of(
        &self,
        mailbox: MailboxId,
        r: &MsgRef,
        seg: &Segment,
    ) -> Result<MessageMeta, LookupError> {
        let id = MessageId {
            mailbox,
            seq: r.seq,
        };
        if r.flags & REF_CORRUPT != 0 {
            return Err(StorageError::Corrupt.into());
        }
        let decoded = seg
            .frame(r.off)
            .ok()
            .filter(|f| f.total_len() == r.len as usize)
            .and_then(|f| {
                let (head, meta) = codec::message_meta(f.payload).ok()?;
                let (_, body_len) = codec::message_body_range(f.payload).ok()?;
                Some((head, meta, body_len))
            });
        let Some((head, meta, body_len)) =
            decoded.filter(|(h, ..)| h.mailbox == mailbox.0 && h.seq == r.seq)
        else {
            tracing::warn!(%id, seg = %seg.path.display(), off = r.off, "message metadata failed its checksum");
            writer::quarantine(self.shared(), id);
            return Err(StorageError::Corrupt.into());
        };
        Ok(MessageMeta {
            id,
            received_at_ms: head.received_at_ms,
            size: body_len as u32,
            plus_tag: meta.plus_tags.first().cloned(),
            plus_tags: meta.plus_tags,
            envelope_from: meta.envelope_from,
            summary: self.current_summary(id, meta.summary),
        })
    }

    /// `stored` if this build's extractor derived it; otherwise the summary
    /// derived again from the raw bytes once the summary pool has done so
    /// (queued on first sight, off this thread), and `stored` until then.
    fn current_summary(&self, id: MessageId, stored: MessageSummary) -> MessageSummary {
        if !stored.is_stale() {
            return stored;
        }
        let Ok(pool) = crate::summary_pool::global() else {
            return stored;
        };
        self.shared()
            .rederived
            .get_or_queue(pool, (id.mailbox.0, id.seq), || self.read_raw(id).ok())
            .map_or(stored, |fresh| MessageSummary::clone(&fresh))
    }

    /// Entries with `seq > since_seq`, ascending, at most `limit`: every
    /// stored message, and a [`ListEntry::Gap`] for each quarantined
    /// (corrupt) one, so a page of `limit` entries is short only when the
    /// mailbox has nothing more, and its last entry is where the next page
    /// starts.
    pub fn list_entries(
        &self,
        mailbox: MailboxId,
        since_seq: u64,
        limit: usize,
    ) -> Result<Vec<ListEntry>, LookupError> {
        let refs = self.refs(mailbox, since_seq, limit)?;
        Ok(refs
            .iter()
            .map(|(r, seg)| match self.meta_of(mailbox, r, seg) {
                Ok(meta) => ListEntry::Message(meta),
                Err(_) => ListEntry::Gap { seq: r.seq },
            })
            .collect())
    }

    /// The messages among [`Engine::list_entries`]: gaps are left out, so
    /// the result may be shorter than `limit` while more follows. For
    /// callers that want the messages only (tests, tools); a client-facing
    /// listing or replay uses `list_entries` and reports the gaps.
    pub fn list_messages(
        &self,
        mailbox: MailboxId,
        since_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageMeta>, LookupError> {
        Ok(self
            .list_entries(mailbox, since_seq, limit)?
            .into_iter()
            .filter_map(|e| match e {
                ListEntry::Message(m) => Some(m),
                ListEntry::Gap { .. } => None,
            })
            .collect())
    }

    /// One message's listing view.
    pub fn message_meta(&self, id: MessageId) -> Result<MessageMeta, LookupError> {
        let (r, seg) = self.one_ref(id)?;
        self.meta_of(id.mailbox, &r, &seg)
    }

    /// The raw bytes exactly as stored. Zero-copy: a `Bytes` owning a slice of
    /// a memory-mapped segment; the record's checksum is verified before the
    /// bytes are handed out, and a corrupt record is never served.
    pub fn read_raw(&self, id: MessageId) -> Result<Bytes, LookupError> {
        let (r, seg) = self.one_ref(id)?;
        if r.flags & REF_CORRUPT != 0 {
            return Err(StorageError::Corrupt.into());
        }
        let ok = seg
            .frame(r.off)
            .ok()
            .filter(|f| f.total_len() == r.len as usize && f.crc_ok())
            .and_then(|f| {
                let h = codec::message_head(f.payload).ok()?;
                let (start, len) = codec::message_body_range(f.payload).ok()?;
                (h.mailbox == id.mailbox.0 && h.seq == id.seq).then_some((start, len))
            });
        let Some((start, len)) = ok else {
            tracing::warn!(%id, seg = %seg.path.display(), off = r.off, "message failed its checksum; not served");
            writer::quarantine(self.shared(), id);
            return Err(StorageError::Corrupt.into());
        };
        let abs = r.off as usize + codec::FRAME_HEADER_LEN + start;
        Ok(Bytes::from_owner(MapSlice {
            map: Arc::clone(&seg.map),
            start: abs,
            end: abs + len,
        }))
    }

    /// Delete one message.
    pub async fn delete_message(&self, id: MessageId) -> Result<(), WriteError> {
        let shard = self.shared().shard_of_id(id.mailbox.0);
        self.call(shard, |reply| Cmd::DeleteMessage {
            id,
            enq: Instant::now(),
            reply,
        })
        .await?;
        self.shared().rederived.forget((id.mailbox.0, id.seq));
        Ok(())
    }

    /// Create a user.
    pub async fn create_user(&self, name: String) -> Result<UserInfo, WriteError> {
        self.call(0, |reply| Cmd::CreateUser {
            name,
            enq: Instant::now(),
            at: self.now_ms(),
            reply,
        })
        .await
    }

    /// Record a subscription of `user` to a plan.
    pub async fn add_subscription(
        &self,
        user: UserId,
        sub: Subscription,
    ) -> Result<(), WriteError> {
        self.call(0, |reply| Cmd::AddSubscription {
            user: user.0,
            sub,
            enq: Instant::now(),
            reply,
        })
        .await
    }

    /// Put `user` on `sub.plan` alone: every earlier subscription ends at
    /// `sub.starts_at_ms` and `sub` is added, in one durable batch.
    pub async fn replace_subscriptions(
        &self,
        user: UserId,
        sub: Subscription,
    ) -> Result<(), WriteError> {
        self.call(0, |reply| Cmd::ReplaceSubscriptions {
            user: user.0,
            sub,
            enq: Instant::now(),
            reply,
        })
        .await
    }

    /// A user by id.
    pub fn user(&self, id: UserId) -> Option<UserInfo> {
        self.shared().meta.read().users.get(&id.0).cloned()
    }

    /// Store a new API key (its hash and display prefix) for `user`.
    pub async fn create_api_key(
        &self,
        user: UserId,
        hash: [u8; 32],
        prefix: String,
    ) -> Result<ApiKeyInfo, WriteError> {
        self.call(0, |reply| Cmd::CreateKey {
            user: user.0,
            hash,
            prefix,
            enq: Instant::now(),
            at: self.now_ms(),
            reply,
        })
        .await
    }

    /// Revoke a key; later lookups still find it, with `revoked_at_ms` set.
    pub async fn revoke_api_key(&self, id: ApiKeyId) -> Result<(), WriteError> {
        self.call(0, |reply| Cmd::RevokeKey {
            id: id.0,
            enq: Instant::now(),
            at: self.now_ms(),
            reply,
        })
        .await
    }

    /// The key with this SHA-256, revoked or not (the caller checks).
    pub fn api_key_by_hash(&self, hash: &[u8; 32]) -> Option<ApiKeyInfo> {
        let m = self.shared().meta.read();
        m.key_by_hash
            .get(hash)
            .and_then(|id| m.keys.get(id))
            .cloned()
    }

    /// All keys of a user, oldest first.
    pub fn api_keys_of(&self, user: UserId) -> Vec<ApiKeyInfo> {
        let m = self.shared().meta.read();
        let mut v: Vec<_> = m
            .keys_of(user.0)
            .filter_map(|id| m.keys.get(&id))
            .cloned()
            .collect();
        v.sort_by_key(|k| (k.created_at_ms, k.id));
        v
    }

    /// Every user, oldest first.
    pub fn users(&self) -> Vec<UserInfo> {
        let mut v: Vec<_> = self.shared().meta.read().users.values().cloned().collect();
        v.sort_by_key(|u| (u.created_at_ms, u.id));
        v
    }

    /// When `user` was disabled, if it was. A disabled user stays on record
    /// (its mailboxes too) but every key of it is refused.
    pub fn user_disabled_at(&self, user: UserId) -> Option<u64> {
        self.shared().meta.read().disabled.get(&user.0).copied()
    }

    /// Record that `user` is disabled (durable before this returns).
    /// Idempotent; [`WriteError::NotFound`] for an unknown user.
    pub async fn disable_user(&self, user: UserId) -> Result<(), WriteError> {
        self.call(0, |reply| Cmd::DisableUser {
            id: user.0,
            enq: Instant::now(),
            at: self.now_ms(),
            reply,
        })
        .await
    }

    /// The key with this id, revoked or not.
    pub fn api_key(&self, id: ApiKeyId) -> Option<ApiKeyInfo> {
        self.shared().meta.read().keys.get(&id.0).cloned()
    }

    /// Append an operator action to the audit trail (durable before this returns).
    pub async fn record_audit(&self, entry: AuditEntry) -> Result<(), WriteError> {
        self.call(0, |reply| Cmd::Audit {
            entry,
            enq: Instant::now(),
            reply,
        })
        .await
    }

    /// Set (`Some`) or delete (`None`) a small durable entry for the crates
    /// above the engine (webhook endpoints, delivery cursors): the engine
    /// stores and replays them, it does not interpret them. Durable before
    /// this returns; the last write of a key wins. Bounded:
    /// [`MAX_STATE_KEY_BYTES`], [`MAX_STATE_VALUE_BYTES`] and 100,000 live
    /// keys, past which it answers [`WriteError::LimitReached`].
    pub async fn put_state(&self, key: &str, value: Option<&str>) -> Result<(), WriteError> {
        if key.len() > MAX_STATE_KEY_BYTES || value.is_some_and(|v| v.len() > MAX_STATE_VALUE_BYTES)
        {
            return Err(WriteError::LimitReached);
        }
        self.call(0, |reply| Cmd::PutState {
            key: key.to_owned(),
            value: value.map(str::to_owned),
            enq: Instant::now(),
            reply,
        })
        .await
    }

    /// The value of a [`Engine::put_state`] entry.
    pub fn state(&self, key: &str) -> Option<String> {
        let idx = self.shared().shards.first()?.index.read();
        idx.states.get(key).map(|e| e.value.clone())
    }

    /// Every [`Engine::put_state`] entry whose key starts with `prefix`, by key.
    pub fn states_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let Some(shard) = self.shared().shards.first() else {
            return Vec::new();
        };
        let idx = shard.index.read();
        idx.states
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect()
    }

    /// The newest operator actions (up to 1000), oldest first.
    pub fn audit_trail(&self) -> Vec<AuditEntry> {
        self.shared().meta.read().audit.iter().cloned().collect()
    }

    /// Every live mailbox, oldest first.
    pub fn all_mailboxes(&self) -> Vec<MailboxInfo> {
        let now = self.now_ms();
        let mut v = Vec::new();
        for s in &self.shared().shards {
            let idx = s.index.read();
            v.extend(
                idx.mailboxes
                    .values()
                    .filter(|m| m.expires_at_ms > now)
                    .map(|m| idx.mailboxes.info(m)),
            );
        }
        v.sort_by_key(|m| (m.created_at_ms, m.id));
        v
    }

    /// Subscribe to a mailbox's events. Events are only for messages committed
    /// after this call; to resume, subscribe first, then replay
    /// [`Engine::list_messages`] past the last seen sequence, then drop live
    /// events whose sequence was already replayed.
    pub fn subscribe(&self, mailbox: MailboxId) -> Result<Subscriber, LookupError> {
        self.subscribe_within(mailbox, SubscriberLimits::UNLIMITED)
            .map_err(|e| match e {
                SubscribeError::Closed => StorageError::Closed.into(),
                _ => LookupError::NotFound,
            })
    }

    /// [`Engine::subscribe`] within `limits` (per mailbox and in total), for
    /// the network-facing subscribers that must not grow without bound.
    pub fn subscribe_within(
        &self,
        mailbox: MailboxId,
        limits: SubscriberLimits,
    ) -> Result<Subscriber, SubscribeError> {
        if self.shared().closed.load(Ordering::Acquire) {
            return Err(SubscribeError::Closed);
        }
        if self.mailbox_by_id(mailbox).is_none() {
            return Err(SubscribeError::NotFound);
        }
        let sub = self.shared().hub.try_subscribe(mailbox, limits)?;
        // Registered first, checked again after: a delete that removed the
        // mailbox from the index before this check closes its subscribers
        // after it, so it either finds this one or this check fails.
        if self.mailbox_by_id(mailbox).is_none() {
            return Err(SubscribeError::NotFound);
        }
        Ok(sub)
    }

    /// Run one compaction pass now (the background owner calls the same code).
    pub fn compact_now(&self) -> Result<CompactionReport, StorageError> {
        let _g = self.inner.compaction_lock.lock();
        if self.shared().closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        crate::compaction::pass(self.shared())
    }

    /// Cluster mode: `tap` sees every committed event, after the index
    /// holds it and after the in-process subscribers got it, on the writer
    /// thread that committed it (so it must hand the event off without
    /// blocking). Set once; false if a tap was set already.
    pub fn set_event_tap(&self, tap: crate::state::EventTap) -> bool {
        self.shared().event_tap.set(tap).is_ok()
    }

    /// Test hook: `hook` runs on the compaction thread each time a
    /// rewrite's copy is written and durable, before the writer swaps it in
    /// (`None` removes it). A test blocks in it to act while a compaction
    /// is in progress. Not for production use.
    #[doc(hidden)]
    pub fn set_compaction_hook_for_tests(&self, hook: Option<Arc<dyn Fn() + Send + Sync>>) {
        *self.shared().compaction_hook.lock() = hook;
    }

    /// Copy a consistent snapshot of the log into the new or empty directory
    /// `dest` while ingest goes on: every append acknowledged before this
    /// call is in the copy, and starting an engine on `dest` restores it.
    /// Compaction waits until the copy is done. See `backup.rs`.
    pub fn backup(&self, dest: &std::path::Path) -> Result<BackupReport, BackupError> {
        let _g = self.inner.compaction_lock.lock();
        crate::backup::snapshot(self.shared(), dest)
    }

    /// Numbers for metrics and readiness.
    pub fn stats(&self) -> EngineStats {
        let sh = self.shared();
        let mut mailboxes = 0;
        let mut messages = 0;
        let mut queue_depth = 0;
        // Counters the writers keep: no walk over mailboxes or messages.
        for s in &sh.shards {
            let idx = s.index.read();
            mailboxes += idx.mailboxes.len() as u64;
            messages += idx.messages;
            queue_depth += s.tx.len() as u64;
        }
        let users = sh.meta.read().users.len() as u64;
        let (segments, disk_bytes) = sh.disk_usage();
        let c = &sh.counters;
        EngineStats {
            mailboxes,
            messages,
            users,
            segments,
            disk_bytes,
            queue_depth,
            batches_committed: c.batches.load(Ordering::Relaxed),
            records_committed: c.records.load(Ordering::Relaxed),
            compaction_runs: c.compaction_runs.load(Ordering::Relaxed),
            compaction_reclaimed_bytes: c.reclaimed.load(Ordering::Relaxed),
            corrupt_records: c.corrupt.load(Ordering::Relaxed),
            subscribers: sh.hub.subscriber_count(),
            events_published: sh.hub.published(),
            poisoned: sh.health.any_failed(),
        }
    }

    /// Bytes held by the in-memory index: the mailbox table (entries,
    /// local-part arena, hash indexes) and the per-mailbox ref vectors, for
    /// the memory budgets (≤ 100 bytes per stored message, ≤ 200 per
    /// mailbox). A walk over every mailbox: for benchmarks, not metrics.
    pub fn index_bytes(&self) -> u64 {
        let mut bytes = 0u64;
        for s in &self.shared().shards {
            let idx = s.index.read();
            bytes += idx.mailboxes.memory_bytes();
            for m in idx.mailboxes.values() {
                bytes += (m.msgs.capacity() * std::mem::size_of::<MsgRef>()) as u64;
            }
        }
        bytes
    }

    /// Whether every index the engine keeps beside the mailboxes themselves
    /// (by address, token and user; the message and key counts) equals what
    /// a full scan gives; `Err` names the first difference. For tests: the
    /// indexes are maintained by each change, never rebuilt by a scan.
    #[doc(hidden)]
    pub fn check_indexes_for_tests(&self) -> Result<(), String> {
        for (shard, s) in self.shared().shards.iter().enumerate() {
            s.index
                .read()
                .check_derived()
                .map_err(|e| format!("shard {shard}: {e}"))?;
        }
        self.shared().meta.read().check_derived()
    }

    /// True once a write or sync failed: the engine refuses writes until it
    /// is restarted. One atomic load, cheap enough to ask per SMTP command.
    pub fn is_poisoned(&self) -> bool {
        self.shared().health.any_failed()
    }

    /// Which shards (or the compaction owner) have failed, for readiness
    /// and operators: mail to other shards is still accepted.
    pub fn health(&self) -> EngineHealth {
        self.shared().health.report()
    }

    /// Fault injection for tests: make `shard`'s writer thread panic, and
    /// return once its poison guard has marked it failed. Not for production use.
    #[doc(hidden)]
    pub fn panic_writer_for_tests(&self, shard: usize) {
        let Some(s) = self.shared().shards.get(shard) else {
            return;
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        if s.tx.send(Cmd::PanicForTests { notify: tx }).is_ok() {
            // Disconnected (never a message) once the guard has run.
            let _ = rx.recv();
        }
    }

    /// Fault injection for tests: make the next `fdatasync` of any writer
    /// report failure (the engine must poison itself). Not for production use.
    #[doc(hidden)]
    pub fn fail_next_sync_for_tests(&self) {
        self.shared().fail_next_sync.store(true, Ordering::Release);
    }

    /// Stop accepting appends, finish the batches in flight, sync, stop the
    /// writer and compaction threads. Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

/// How often a shutdown waiting for a writer's answer checks whether that
/// writer died instead.
const SHUTDOWN_POLL: std::time::Duration = std::time::Duration::from_millis(20);

impl Inner {
    fn shutdown(&self) {
        let sh = &self.shared;
        if sh.closed.swap(true, Ordering::AcqRel) {
            // Someone else shut down (or is doing so); wait for the threads.
            let threads: Vec<_> = std::mem::take(&mut *self.threads.lock());
            for t in threads {
                let _ = t.join();
            }
            return;
        }
        drop(self.stop_compaction.lock().take());
        let mut acks = Vec::new();
        for (shard, s) in sh.shards.iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded(1);
            // Blocking send: the queue drains as the writer works; everything
            // queued before the shutdown is committed first.
            if s.tx.send(Cmd::Shutdown { reply: tx }).is_ok() {
                acks.push((ShardIndex(shard), rx));
            }
        }
        for (shard, rx) in acks {
            // A writer that panicked answers nothing, and the shutdown it may
            // have been sent while unwinding stays in its queue (the senders
            // live on in `Shared`), so its reply never disconnects either:
            // stop waiting once its guard has marked the shard failed. A
            // poisoned but living writer still answers; the join below waits
            // for it either way.
            loop {
                match rx.recv_timeout(SHUTDOWN_POLL) {
                    Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        if sh.health.shard_failed(shard) {
                            break;
                        }
                    }
                }
            }
        }
        let threads: Vec<_> = std::mem::take(&mut *self.threads.lock());
        for t in threads {
            let _ = t.join();
        }
        sh.hub.close_all();
        drop(self.lock_file.lock().take());
    }
}
