//! A shard's writer thread: the only code that appends to the shard's
//! segments and the only code that changes the shard's index.
//!
//! Group commit: the writer blocks for one command, then drains whatever else
//! is queued (up to `batch_max_bytes`), encodes every record of the batch into
//! one buffer, `pwrite`s it once and `fdatasync`s once. Only then does it make
//! the records visible (committed length, index), acknowledge each append and
//! publish events. Checks that depend on the committed state (quota, expiry,
//! uniqueness) and the assignment of ids and sequence numbers happen here, in
//! order, so one writer orders everything of a mailbox.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::cmd::{Cmd, RcptResults, Reply};
use crate::codec::{self, HintEntry, Kind, MessageMetaRec, Record, SegHeader};
use crate::error::{
    BatchFailure, CreateMailboxError, DeliverError, ResolveError, StorageError, WriteError,
};
use crate::files::{self, DataFile};
use crate::poison::PoisonDart;
use crate::segment::{self, Segment};
use crate::state::{MailboxEntry, MsgRef, Shared, StateValue, MAX_STATE_ENTRIES, REF_CORRUPT};
use crate::sys::Map;
use crate::types::*;

/// What to do to the in-memory state once a batch is durable.
enum Apply {
    Message {
        mailbox: u64,
        seq: u64,
        rel: usize,
        len: u32,
        event: Event,
    },
    MailboxCreated {
        info: MailboxInfo,
        rel: usize,
        len: u32,
    },
    MailboxDeleted {
        id: u64,
    },
    MessageDeleted {
        mailbox: u64,
        seq: u64,
    },
    User(UserInfo),
    Sub {
        user: u64,
        sub: Subscription,
    },
    Key(ApiKeyInfo),
    Revoke {
        id: u64,
        at_ms: u64,
    },
    Disable {
        id: u64,
        at_ms: u64,
    },
    ReplaceSubs {
        user: u64,
        sub: Subscription,
    },
    Audit(AuditEntry),
    State {
        key: String,
        version: u64,
        value: Option<String>,
        len: u32,
    },
}

enum Ack {
    Deliver(Reply<RcptResults, DeliverError>, RcptResults),
    Mailbox(Reply<MailboxInfo, CreateMailboxError>, MailboxInfo),
    Unit(Reply<(), WriteError>),
    User(Reply<UserInfo, WriteError>, UserInfo),
    Key(Reply<ApiKeyInfo, WriteError>, ApiKeyInfo),
}

impl Ack {
    fn fail(self, e: BatchFailure) {
        match self {
            Ack::Deliver(r, _) => drop(r.send(Err(e.into()))),
            Ack::Mailbox(r, _) => drop(r.send(Err(e.into()))),
            Ack::Unit(r) => drop(r.send(Err(e.into()))),
            Ack::User(r, _) => drop(r.send(Err(e.into()))),
            Ack::Key(r, _) => drop(r.send(Err(e.into()))),
        }
    }
    fn ok(self) {
        match self {
            Ack::Deliver(r, v) => drop(r.send(Ok(v))),
            Ack::Mailbox(r, v) => drop(r.send(Ok(v))),
            Ack::Unit(r) => drop(r.send(Ok(()))),
            Ack::User(r, v) => drop(r.send(Ok(v))),
            Ack::Key(r, v) => drop(r.send(Ok(v))),
        }
    }
}

struct Staged {
    ack: Ack,
    enq: Instant,
}

/// One batch being gathered: the bytes, what they mean, and the writer's
/// view of state changes not yet committed.
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    staged: Vec<Staged>,
    applies: Vec<Apply>,
    hints: Vec<HintEntry>,
    records: u32,
    /// mailbox → (last_seq, message_count) including this batch.
    mb: HashMap<u64, (u64, u32)>,
    new_addr: HashMap<Address, u64>,
    deleted_mb: HashSet<u64>,
    deleted_msgs: HashSet<(u64, u64)>,
    key_hashes: HashSet<[u8; 32]>,
    /// `State` keys this batch sets, for the entry limit.
    new_states: HashSet<String>,
}

impl Batch {
    fn frame(&mut self, rec: &Record<'_>, a: u64, b: u64) -> (usize, u32) {
        let start = self.buf.len();
        rec.encode_frame(&mut self.buf);
        self.push_hint(start, rec.kind(), a, b)
    }

    fn push_hint(&mut self, start: usize, kind: Kind, a: u64, b: u64) -> (usize, u32) {
        let len = (self.buf.len() - start) as u32;
        self.records += 1;
        self.hints.push(HintEntry {
            off: start as u32,
            len,
            kind: kind as u8,
            a,
            b,
        });
        (start, len)
    }
}

pub(crate) struct Writer {
    /// First field, so it is dropped first when the thread unwinds.
    pub(crate) dart: PoisonDart,
    pub(crate) shard: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) rx: Receiver<Cmd>,
    pub(crate) file: DataFile,
    pub(crate) active: Arc<Segment>,
    pub(crate) write_off: u64,
    pub(crate) cap: u64,
    /// Hint entries of the active segment (absolute offsets).
    pub(crate) hints: Vec<HintEntry>,
    /// Next value of the shard's id counter (id = counter * shards + shard).
    pub(crate) counter: u64,
    pub(crate) next_seg: u32,
    /// Records in the last two committed batches (newest first).
    pub(crate) recent: [u32; 2],
    /// Duration of the last fdatasync.
    pub(crate) last_sync: Duration,
}

/// Longest a writer holds a gathered batch back waiting for more appends.
pub(crate) const MAX_COMMIT_DELAY: Duration = Duration::from_micros(250);

impl Writer {
    fn n(&self) -> u64 {
        self.shared.n() as u64
    }

    pub(crate) fn alloc_id(&mut self) -> u64 {
        let id = self.counter * self.n() + self.shard as u64;
        self.counter += 1;
        id
    }

    /// The thread body.
    pub(crate) fn run(mut self) {
        let max = self.shared.config.batch_max_bytes.max(1);
        let mut batch = Batch::default();
        loop {
            let Ok(cmd) = self.rx.recv() else {
                // Every sender is gone: the engine was dropped without shutdown.
                self.commit(&mut batch);
                self.seal();
                return;
            };
            if let Some(exit) = self.handle(cmd, &mut batch) {
                if exit {
                    return;
                }
            }
            while batch.buf.len() < max {
                let Ok(cmd) = self.rx.try_recv() else { break };
                if let Some(exit) = self.handle(cmd, &mut batch) {
                    if exit {
                        return;
                    }
                }
            }
            // Closed-loop appenders acknowledged by the previous batch are
            // about to come back; without a short wait for them, batches
            // settle into two alternating halves and each appender waits for
            // two syncs. Wait (bounded by half a sync, at most
            // MAX_COMMIT_DELAY) only while recent batches were larger.
            let target = self.recent[0] + self.recent[1];
            if self.shared.config.durability == Durability::Always && self.recent[0] >= 2 {
                let deadline = Instant::now() + (self.last_sync / 2).min(MAX_COMMIT_DELAY);
                while batch.records > 0 && batch.records < target && batch.buf.len() < max {
                    let Ok(cmd) = self.rx.recv_deadline(deadline) else {
                        break;
                    };
                    if let Some(exit) = self.handle(cmd, &mut batch) {
                        if exit {
                            return;
                        }
                    }
                }
            }
            self.commit(&mut batch);
        }
    }

    /// Stage `cmd` into `batch`, or run a control command. `Some(true)` = exit.
    fn handle(&mut self, cmd: Cmd, batch: &mut Batch) -> Option<bool> {
        if let Cmd::PanicForTests { notify } = cmd {
            self.dart.notify_on_drop(notify);
            panic!("writer of shard {} panics on request of a test", self.shard);
        }
        if self.shared.shard_failed(self.shard) {
            match cmd {
                Cmd::Shutdown { reply } => {
                    self.commit(batch);
                    let _ = reply.send(());
                    return Some(true);
                }
                Cmd::Rewrite { reply, .. } => {
                    let _ = reply.send(Err(StorageError::Poisoned));
                    return None;
                }
                other => {
                    other.fail(BatchFailure::Poisoned);
                    return None;
                }
            }
        }
        match cmd {
            Cmd::Shutdown { reply } => {
                self.commit(batch);
                self.seal();
                let _ = reply.send(());
                Some(true)
            }
            Cmd::Rewrite { seg, reply } => {
                self.commit(batch);
                let r = crate::compaction::rewrite_in_writer(self, seg);
                let _ = reply.send(r);
                None
            }
            other => {
                self.stage(other, batch);
                None
            }
        }
    }

    fn stage(&mut self, cmd: Cmd, b: &mut Batch) {
        let now = self.shared.clock.now_ms();
        let shard = &self.shared.shards[self.shard];
        match cmd {
            Cmd::Deliver {
                raw,
                envelope_from,
                summary,
                rcpts,
                dedupe,
                enq,
                at,
                reply,
            } => {
                // A record the decoder would refuse must never be acknowledged
                // (it would be unreadable, and after a crash its frame would
                // look torn and cut off every later batch).
                let largest = rcpts
                    .iter()
                    .map(|(rcpt, _)| {
                        codec::message_payload_len(
                            &MessageMetaRec {
                                plus_tag: rcpt.plus_tag.clone(),
                                envelope_from: envelope_from.clone(),
                                summary: (*summary).clone(),
                            },
                            raw.len(),
                        )
                    })
                    .max()
                    .unwrap_or(0);
                if largest > codec::MAX_PAYLOAD {
                    let limit = self.shared.config.max_message_bytes;
                    drop(reply.send(Err(DeliverError::TooLarge { limit })));
                    return;
                }
                let mut results = Vec::with_capacity(rcpts.len());
                let mut wrote = false;
                let idx = shard.index.read();
                for (rcpt, id) in rcpts {
                    let Some(mb) = idx.mailboxes.get(&id) else {
                        results.push((rcpt, Err(ResolveError::NoSuchMailbox)));
                        continue;
                    };
                    if b.deleted_mb.contains(&id) || mb.info.expires_at_ms <= now {
                        results.push((rcpt, Err(ResolveError::NoSuchMailbox)));
                        continue;
                    }
                    let (last_seq, count) = *b
                        .mb
                        .entry(id)
                        .or_insert((mb.info.last_seq, mb.info.message_count));
                    if count >= mb.info.max_messages {
                        results.push((rcpt, Err(ResolveError::MailboxFull)));
                        continue;
                    }
                    let seq = last_seq + 1;
                    b.mb.insert(id, (seq, count + 1));
                    let meta = MessageMetaRec {
                        plus_tag: rcpt.plus_tag.clone(),
                        envelope_from: envelope_from.clone(),
                        summary: (*summary).clone(),
                    };
                    let start = codec::begin_frame(&mut b.buf, Kind::Message);
                    codec::encode_message(&mut b.buf, id, seq, at, &meta, &raw);
                    codec::finish_frame(&mut b.buf, start);
                    let (rel, len) = b.push_hint(start, Kind::Message, id, seq);
                    let mid = MessageId {
                        mailbox: MailboxId(id),
                        seq,
                    };
                    b.applies.push(Apply::Message {
                        mailbox: id,
                        seq,
                        rel,
                        len,
                        event: Event {
                            address: mb.info.address.clone(),
                            id: mid,
                            received_at_ms: at,
                            size: raw.len() as u32,
                            plus_tag: meta.plus_tag,
                            summary: meta.summary,
                        },
                    });
                    results.push((rcpt, Ok(mid)));
                    wrote = true;
                }
                drop(idx);
                if let Some((key, parts)) = dedupe {
                    // Written in the same batch as the messages (atomic with
                    // them), also when every recipient here was refused, so
                    // that recovery sees one part per shard.
                    b.frame(
                        &Record::Dedupe {
                            key,
                            at_ms: at,
                            parts,
                        },
                        0,
                        0,
                    );
                    wrote = true;
                }
                let ack = Ack::Deliver(reply, results);
                if wrote {
                    b.staged.push(Staged { ack, enq });
                } else {
                    ack.ok();
                }
            }
            Cmd::CreateMailbox {
                new,
                enq,
                at,
                reply,
            } => {
                let idx = shard.index.read();
                let live_old = idx
                    .by_address
                    .get(&new.address)
                    .and_then(|id| idx.mailboxes.get(id))
                    .is_some_and(|m| {
                        m.info.expires_at_ms > now && !b.deleted_mb.contains(&m.info.id.0)
                    });
                drop(idx);
                if live_old || b.new_addr.contains_key(&new.address) {
                    let _ = reply.send(Err(CreateMailboxError::AlreadyExists));
                    return;
                }
                let id = self.alloc_id();
                let info = MailboxInfo {
                    id: MailboxId(id),
                    address: new.address.clone(),
                    owner: new.owner.clone(),
                    created_at_ms: at,
                    expires_at_ms: new.expires_at_ms,
                    max_messages: new.max_messages,
                    message_count: 0,
                    last_seq: 0,
                };
                let (rel, len) = b.frame(
                    &Record::MailboxCreated(codec::MailboxRec {
                        id,
                        created_at_ms: at,
                        expires_at_ms: new.expires_at_ms,
                        max_messages: new.max_messages,
                        owner: new.owner,
                        address: new.address.to_string(),
                    }),
                    0,
                    0,
                );
                b.new_addr.insert(new.address, id);
                b.applies.push(Apply::MailboxCreated {
                    info: info.clone(),
                    rel,
                    len,
                });
                b.staged.push(Staged {
                    ack: Ack::Mailbox(reply, info),
                    enq,
                });
            }
            Cmd::DeleteMailbox { id, enq, reply } => {
                let target = {
                    let idx = shard.index.read();
                    idx.mailboxes.get(&id).map(|m| m.created.0)
                };
                let Some(target_seg) = target.filter(|_| !b.deleted_mb.contains(&id)) else {
                    let _ = reply.send(Err(WriteError::NotFound));
                    return;
                };
                b.frame(&Record::MailboxDeleted { id, target_seg }, 0, 0);
                b.deleted_mb.insert(id);
                b.applies.push(Apply::MailboxDeleted { id });
                b.staged.push(Staged {
                    ack: Ack::Unit(reply),
                    enq,
                });
            }
            Cmd::DeleteMessage { id, enq, reply } => {
                let mbid = id.mailbox.0;
                let target = {
                    let idx = shard.index.read();
                    idx.mailboxes
                        .get(&mbid)
                        .and_then(|m| m.find(id.seq).and_then(|i| m.msgs.get(i)))
                        .map(|r| r.seg)
                };
                let Some(target_seg) = target.filter(|_| {
                    !b.deleted_mb.contains(&mbid) && !b.deleted_msgs.contains(&(mbid, id.seq))
                }) else {
                    let _ = reply.send(Err(WriteError::NotFound));
                    return;
                };
                b.frame(
                    &Record::MessageDeleted {
                        mailbox: mbid,
                        seq: id.seq,
                        target_seg,
                    },
                    0,
                    0,
                );
                b.deleted_msgs.insert((mbid, id.seq));
                if let Some(e) = b.mb.get_mut(&mbid) {
                    e.1 = e.1.saturating_sub(1);
                }
                b.applies.push(Apply::MessageDeleted {
                    mailbox: mbid,
                    seq: id.seq,
                });
                b.staged.push(Staged {
                    ack: Ack::Unit(reply),
                    enq,
                });
            }
            Cmd::CreateUser {
                name,
                enq,
                at,
                reply,
            } => {
                let id = self.alloc_id();
                let u = UserInfo {
                    id: UserId(id),
                    name: name.clone(),
                    created_at_ms: at,
                    subscriptions: Vec::new(),
                };
                b.frame(
                    &Record::UserCreated {
                        id,
                        created_at_ms: at,
                        name,
                    },
                    0,
                    0,
                );
                b.applies.push(Apply::User(u.clone()));
                b.staged.push(Staged {
                    ack: Ack::User(reply, u),
                    enq,
                });
            }
            Cmd::AddSubscription {
                user,
                sub,
                enq,
                reply,
            } => {
                if !self.shared.meta.read().users.contains_key(&user) {
                    let _ = reply.send(Err(WriteError::NotFound));
                    return;
                }
                let ordinal = self.alloc_id();
                b.frame(
                    &Record::SubscriptionAdded {
                        user,
                        ordinal,
                        sub: sub.clone(),
                    },
                    0,
                    0,
                );
                b.applies.push(Apply::Sub { user, sub });
                b.staged.push(Staged {
                    ack: Ack::Unit(reply),
                    enq,
                });
            }
            Cmd::CreateKey {
                user,
                hash,
                prefix,
                enq,
                at,
                reply,
            } => {
                let (user_ok, dup) = {
                    let m = self.shared.meta.read();
                    (
                        m.users.contains_key(&user),
                        m.key_by_hash.contains_key(&hash),
                    )
                };
                if !user_ok {
                    let _ = reply.send(Err(WriteError::NotFound));
                    return;
                }
                if dup || b.key_hashes.contains(&hash) {
                    let _ = reply.send(Err(WriteError::AlreadyExists));
                    return;
                }
                let id = self.alloc_id();
                let k = ApiKeyInfo {
                    id: ApiKeyId(id),
                    user: UserId(user),
                    hash,
                    prefix: prefix.clone(),
                    created_at_ms: at,
                    revoked_at_ms: None,
                };
                b.frame(
                    &Record::ApiKeyCreated {
                        id,
                        user,
                        hash,
                        prefix,
                        created_at_ms: at,
                    },
                    0,
                    0,
                );
                b.key_hashes.insert(hash);
                b.applies.push(Apply::Key(k.clone()));
                b.staged.push(Staged {
                    ack: Ack::Key(reply, k),
                    enq,
                });
            }
            Cmd::RevokeKey { id, enq, at, reply } => {
                let state = self
                    .shared
                    .meta
                    .read()
                    .keys
                    .get(&id)
                    .map(|k| k.revoked_at_ms);
                match state {
                    None => {
                        let _ = reply.send(Err(WriteError::NotFound));
                    }
                    Some(Some(_)) => {
                        let _ = reply.send(Ok(()));
                    }
                    Some(None) => {
                        b.frame(&Record::ApiKeyRevoked { id, at_ms: at }, 0, 0);
                        b.applies.push(Apply::Revoke { id, at_ms: at });
                        b.staged.push(Staged {
                            ack: Ack::Unit(reply),
                            enq,
                        });
                    }
                }
            }
            Cmd::ReplaceSubscriptions {
                user,
                sub,
                enq,
                reply,
            } => {
                if !self.shared.meta.read().users.contains_key(&user) {
                    let _ = reply.send(Err(WriteError::NotFound));
                    return;
                }
                let ordinal = self.alloc_id();
                b.frame(
                    &Record::SubscriptionsEnded {
                        user,
                        before_ordinal: ordinal,
                        at_ms: sub.starts_at_ms,
                    },
                    0,
                    0,
                );
                b.frame(
                    &Record::SubscriptionAdded {
                        user,
                        ordinal,
                        sub: sub.clone(),
                    },
                    0,
                    0,
                );
                b.applies.push(Apply::ReplaceSubs { user, sub });
                b.staged.push(Staged {
                    ack: Ack::Unit(reply),
                    enq,
                });
            }
            Cmd::DisableUser { id, enq, at, reply } => {
                let state = {
                    let m = self.shared.meta.read();
                    (m.users.contains_key(&id), m.disabled.contains_key(&id))
                };
                match state {
                    (false, _) => drop(reply.send(Err(WriteError::NotFound))),
                    (true, true) => drop(reply.send(Ok(()))),
                    (true, false) => {
                        b.frame(&Record::UserDisabled { id, at_ms: at }, 0, 0);
                        b.applies.push(Apply::Disable { id, at_ms: at });
                        b.staged.push(Staged {
                            ack: Ack::Unit(reply),
                            enq,
                        });
                    }
                }
            }
            Cmd::Audit { entry, enq, reply } => {
                b.frame(&Record::AdminAudit(entry.clone()), 0, 0);
                b.applies.push(Apply::Audit(entry));
                b.staged.push(Staged {
                    ack: Ack::Unit(reply),
                    enq,
                });
            }
            Cmd::PutState {
                key,
                value,
                enq,
                reply,
            } => {
                let (exists, live) = {
                    let idx = self.shared.shards[self.shard].index.read();
                    (idx.states.contains_key(&key), idx.states.len())
                };
                let staged_new = b.new_states.iter().filter(|k| **k != key).count();
                if value.is_none() && !exists && !b.new_states.contains(&key) {
                    // Nothing to delete: no record, so a retried delete stays cheap.
                    drop(reply.send(Ok(())));
                    return;
                }
                if value.is_some() && !exists && live + staged_new >= MAX_STATE_ENTRIES {
                    drop(reply.send(Err(WriteError::LimitReached)));
                    return;
                }
                if value.is_some() {
                    b.new_states.insert(key.clone());
                }
                let version = self.alloc_id();
                let (_, len) = b.frame(
                    &Record::State {
                        key: key.clone(),
                        version,
                        value: value.clone(),
                    },
                    0,
                    0,
                );
                b.applies.push(Apply::State {
                    key,
                    version,
                    value,
                    len,
                });
                b.staged.push(Staged {
                    ack: Ack::Unit(reply),
                    enq,
                });
            }
            Cmd::Rewrite { .. } | Cmd::Shutdown { .. } | Cmd::PanicForTests { .. } => {}
        }
    }

    /// Make the batch durable, then visible, then published, then acknowledged.
    /// Publishing before acking means that when `deliver` returns, the event is
    /// already queued for every subscriber (and a deleted mailbox's
    /// subscriptions are already ended); both still follow the sync.
    fn commit(&mut self, b: &mut Batch) {
        let mut batch = std::mem::take(b);
        if batch.buf.is_empty() {
            for s in batch.staged {
                s.ack.ok();
            }
            return;
        }
        if self.shared.shard_failed(self.shard) {
            // This shard failed a sync (or the engine failed): write nothing more.
            for s in batch.staged {
                s.ack.fail(BatchFailure::Poisoned);
            }
            return;
        }
        let records = batch.records;
        Record::BatchCommit { records }.encode_frame(&mut batch.buf);
        let need = batch.buf.len() as u64;
        let base = match self.write_batch(&batch.buf) {
            Ok(base) => {
                self.shared
                    .written_since_probe
                    .fetch_add(need, Ordering::Relaxed);
                base
            }
            Err(failure) => {
                for s in batch.staged {
                    s.ack.fail(failure);
                }
                return;
            }
        };
        self.write_off = base + need;
        self.active.len.store(self.write_off, Ordering::Release);
        for mut h in batch.hints {
            h.off += base as u32;
            self.hints.push(h);
        }
        let seg_no = self.active.no;
        let mut events = Vec::new();
        let mut closed = Vec::new();
        {
            let shard = &self.shared.shards[self.shard];
            let mut idx = shard.index.write();
            for a in batch.applies {
                match a {
                    Apply::Message {
                        mailbox,
                        seq,
                        rel,
                        len,
                        event,
                    } => {
                        let off = (base as usize + rel) as u32;
                        if let Some(mb) = idx.mailboxes.get_mut(&mailbox) {
                            mb.msgs.push(MsgRef {
                                seq,
                                seg: seg_no,
                                off,
                                len,
                                flags: 0,
                            });
                            mb.info.last_seq = mb.info.last_seq.max(seq);
                            mb.info.message_count = mb.msgs.len() as u32;
                            events.push(event);
                        } else {
                            // Expired and reaped between staging and commit.
                            self.active.add_dead(u64::from(len));
                        }
                    }
                    Apply::MailboxCreated { info, rel, len } => {
                        let id = info.id.0;
                        if let Some(old) = idx.by_address.insert(info.address.clone(), id) {
                            // The old one had expired: it is gone for good.
                            if let Some(m) = idx.mailboxes.remove(&old) {
                                mark_mailbox_dead(&self.shared, self.shard, &m);
                                closed.push(old);
                            }
                        }
                        idx.mailboxes.insert(
                            id,
                            MailboxEntry {
                                info,
                                created: (seg_no, (base as usize + rel) as u32, len),
                                msgs: Vec::new(),
                            },
                        );
                    }
                    Apply::MailboxDeleted { id } => {
                        if let Some(m) = idx.mailboxes.remove(&id) {
                            if idx.by_address.get(&m.info.address) == Some(&id) {
                                idx.by_address.remove(&m.info.address);
                            }
                            mark_mailbox_dead(&self.shared, self.shard, &m);
                            closed.push(id);
                        }
                    }
                    Apply::MessageDeleted { mailbox, seq } => {
                        if let Some(mb) = idx.mailboxes.get_mut(&mailbox) {
                            if let Some(i) = mb.find(seq) {
                                let r = mb.msgs.remove(i);
                                mb.info.message_count = mb.msgs.len() as u32;
                                mark_dead(&self.shared, self.shard, r.seg, r.len);
                            }
                        }
                    }
                    Apply::User(u) => {
                        self.shared.meta.write().users.insert(u.id.0, u);
                    }
                    Apply::Sub { user, sub } => {
                        if let Some(u) = self.shared.meta.write().users.get_mut(&user) {
                            u.subscriptions.push(sub);
                        }
                    }
                    Apply::Key(k) => {
                        let mut m = self.shared.meta.write();
                        m.key_by_hash.insert(k.hash, k.id.0);
                        m.keys.insert(k.id.0, k);
                    }
                    Apply::Revoke { id, at_ms } => {
                        if let Some(k) = self.shared.meta.write().keys.get_mut(&id) {
                            k.revoked_at_ms.get_or_insert(at_ms);
                        }
                    }
                    Apply::ReplaceSubs { user, sub } => {
                        if let Some(u) = self.shared.meta.write().users.get_mut(&user) {
                            for old in &mut u.subscriptions {
                                let end = old.ends_at_ms.get_or_insert(sub.starts_at_ms);
                                *end = (*end).min(sub.starts_at_ms);
                            }
                            u.subscriptions.push(sub);
                        }
                    }
                    Apply::Disable { id, at_ms } => {
                        self.shared.meta.write().disabled.entry(id).or_insert(at_ms);
                    }
                    Apply::Audit(entry) => self.shared.meta.write().push_audit(entry),
                    Apply::State {
                        key,
                        version,
                        value,
                        len,
                    } => {
                        if let Some(old) = idx.states.get(&key) {
                            mark_dead(&self.shared, self.shard, old.seg, old.len);
                        }
                        match value {
                            Some(value) => {
                                let entry = StateValue {
                                    version,
                                    value,
                                    seg: seg_no,
                                    len,
                                };
                                idx.states.insert(key, entry);
                            }
                            None => {
                                idx.states.remove(&key);
                            }
                        }
                    }
                }
            }
        }
        self.recent = [records, self.recent[0]];
        let c = &self.shared.counters;
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.records.fetch_add(u64::from(records), Ordering::Relaxed);
        metrics::histogram!("uncorreo_batch_records").record(f64::from(records));
        for ev in &events {
            self.shared.hub.publish(ev);
        }
        for id in closed {
            self.shared.hub.close_mailbox(MailboxId(id));
        }
        let commit_hist = metrics::histogram!("uncorreo_commit_seconds");
        for s in batch.staged {
            commit_hist.record(s.enq.elapsed().as_secs_f64());
            s.ack.ok();
        }
    }

    /// Append `buf` (a whole batch, ending in its `BatchCommit`) to the active
    /// segment, rolling to a new one if it does not fit, and make it durable.
    /// Returns the offset it was written at.
    ///
    /// No space (creating a segment, or writing into one) is temporary: the
    /// segment is cut back to its last durable batch and the shard goes on.
    /// Any other failure poisons the shard, and so does a failed sync, always:
    /// the kernel may have dropped the dirty pages already, so a retried
    /// `fdatasync` that succeeds would be a lie.
    fn write_batch(&mut self, buf: &[u8]) -> Result<u64, BatchFailure> {
        let need = buf.len() as u64;
        if self.write_off + need > self.cap {
            // Full, or an empty segment too small for this batch: start one that fits.
            if let Err(e) = self.roll(need) {
                return Err(self.fail(&e, "starting a new segment"));
            }
        }
        let base = self.write_off;
        let io = Arc::clone(&self.shared.io);
        if let Err(e) = io.write_all_at(&self.file, buf, base) {
            if files::is_out_of_space(&e) {
                // Not synced: the next batch's fdatasync makes the length
                // durable with it, and until then recovery treats whatever
                // of this batch reached the disk as a torn tail (it has no
                // BatchCommit: that is the last byte of the write).
                if let Err(e) = io.set_len(&self.file, base) {
                    // The log's end is no longer known: never write past it.
                    self.shared
                        .poison(self.shard, "cutting back a batch that did not fit", &e);
                    return Err(BatchFailure::Poisoned);
                }
                tracing::warn!(shard = self.shard, "data filesystem full; batch refused");
                return Err(BatchFailure::DiskFull);
            }
            return Err(self.fail(&e, "writing a batch"));
        }
        if self.shared.config.durability == Durability::Always {
            let t = Instant::now();
            let synced = if self.shared.fail_next_sync.swap(false, Ordering::AcqRel) {
                Err(std::io::Error::other("injected fdatasync failure"))
            } else {
                io.sync_data(&self.file)
            };
            self.last_sync = t.elapsed();
            metrics::histogram!("uncorreo_fsync_seconds").record(self.last_sync.as_secs_f64());
            if let Err(e) = synced {
                self.shared.poison(self.shard, "syncing a batch", &e);
                return Err(BatchFailure::Poisoned);
            }
        }
        Ok(base)
    }

    /// A failed write or segment creation: temporary when out of space,
    /// else the shard is poisoned.
    fn fail(&self, e: &std::io::Error, what: &str) -> BatchFailure {
        if files::is_out_of_space(e) {
            tracing::warn!(%e, shard = self.shard, what, "data filesystem full; batch refused");
            BatchFailure::DiskFull
        } else {
            self.shared.poison(self.shard, what, e);
            BatchFailure::Poisoned
        }
    }

    /// Start a new segment big enough for `need`, then seal the old one. The
    /// new one is made first so that a failure (a full disk) leaves the
    /// active segment as it was, still open for appends.
    pub(crate) fn roll(&mut self, need: u64) -> std::io::Result<()> {
        let cap = self
            .shared
            .config
            .segment_bytes
            .max(need + codec::SEG_HEADER_LEN as u64);
        let no = self.next_seg;
        // Used up even on failure: a leftover file of a failed create must
        // not make the next attempt collide with it.
        self.next_seg += 1;
        let (file, seg) = create_segment(&self.shared, self.shard, no, self.counter, cap, false)?;
        self.shared
            .written_since_probe
            .fetch_add(cap, Ordering::Relaxed);
        self.seal();
        self.file = file;
        self.active = seg;
        self.write_off = codec::SEG_HEADER_LEN as u64;
        self.cap = cap;
        self.hints.clear();
        self.shared.publish_disk_gauges();
        Ok(())
    }

    /// Mark the active segment sealed and write its hint file (best effort:
    /// without a hint, the next open scans the segment instead).
    pub(crate) fn seal(&mut self) {
        if self.active.sealed.swap(true, Ordering::AcqRel) {
            return;
        }
        // Give back the preallocated tail (best effort: recovery finds the
        // end inside a zero tail anyway). Readers never look past the
        // committed length, which is where the cut is.
        if let Err(e) = self.shared.io.set_len(&self.file, self.write_off) {
            tracing::warn!(%e, seg = %self.active.path.display(), "could not trim a sealed segment");
        }
        let hint = codec::Hint {
            shard: self.shard as u32,
            seg_no: self.active.no,
            data_len: self.write_off,
            entries: std::mem::take(&mut self.hints),
        };
        if let Err(e) = files::write_hint(
            self.shared.io.as_ref(),
            &self.shared.dir,
            &self.active.path,
            &hint,
            self.shared.config.durability == Durability::Always,
        ) {
            tracing::warn!(%e, seg = %self.active.path.display(), "could not write hint file");
        }
    }
}

pub(crate) fn mark_dead(shared: &Shared, shard: usize, seg: u32, len: u32) {
    if let Some(s) = shared.shards[shard].segs.read().get(&seg) {
        s.add_dead(u64::from(len));
    }
}

pub(crate) fn mark_mailbox_dead(shared: &Shared, shard: usize, m: &MailboxEntry) {
    let segs = shared.shards[shard].segs.read();
    if let Some(s) = segs.get(&m.created.0) {
        s.add_dead(u64::from(m.created.2));
    }
    for r in &m.msgs {
        if let Some(s) = segs.get(&r.seg) {
            s.add_dead(u64::from(r.len));
        }
    }
}

/// Create, header-write, sync and map a new segment; register it.
pub(crate) fn create_segment(
    shared: &Shared,
    shard: usize,
    no: u32,
    id_floor: u64,
    cap: u64,
    at_open: bool,
) -> std::io::Result<(DataFile, Arc<Segment>)> {
    let path = segment::seg_path(&shared.dir, shard, no);
    let header = SegHeader {
        flags: 0,
        shard: shard as u32,
        seg_no: no,
        id_floor,
        supersedes: codec::NO_SEGMENT,
    }
    .encode();
    let file = files::create_segment_file(
        shared.io.as_ref(),
        &files::NewSegment {
            path: &path,
            header: &header,
            preallocate: cap,
            unreserved_if_full: at_open,
            sync: shared.config.durability == Durability::Always,
        },
    )?;
    let map = match Map::new(file.file(), usize::try_from(cap).unwrap_or(usize::MAX)) {
        Ok(map) => map,
        Err(e) => {
            drop(file);
            let _ = shared.io.remove_file(&path);
            return Err(e);
        }
    };
    let seg = Arc::new(Segment::new(
        no,
        path,
        map,
        codec::SEG_HEADER_LEN as u64,
        false,
    ));
    shared.shards[shard]
        .segs
        .write()
        .insert(no, Arc::clone(&seg));
    Ok((file, seg))
}

/// Mark a message ref corrupt (found by a read) so it is never served.
pub(crate) fn quarantine(shared: &Shared, id: MessageId) {
    let shard = shared.shard_of_id(id.mailbox.0);
    let mut idx = shared.shards[shard].index.write();
    if let Some(mb) = idx.mailboxes.get_mut(&id.mailbox.0) {
        if let Some(i) = mb.find(id.seq) {
            if let Some(r) = mb.msgs.get_mut(i) {
                if r.flags & REF_CORRUPT == 0 {
                    r.flags |= REF_CORRUPT;
                    shared.count_corrupt(1);
                }
            }
        }
    }
}
