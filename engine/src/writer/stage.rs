//! Staging: each command checked against the committed state plus what the
//! batch already holds, encoded into the batch, and its answer deferred to
//! the commit. One function per command; nothing here touches the disk or
//! changes the index.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::batch::{Ack, Apply, Batch};
use super::Writer;
use crate::cmd::{Cmd, RcptResults, Reply};
use crate::codec::{self, Kind, MessageMetaRec, Record};
use crate::error::{CreateMailboxError, DeliverError, ResolveError, WriteError};
use crate::quota::QuotaHolds;
use crate::retry::{PartKey, PartRecord};
use crate::state::{MailboxEntry, Shared, MAX_STATE_ENTRIES};
use crate::tombstone::Tombstone;
use crate::types::*;

/// A delivery as staged: everything but the recipients.
struct Delivery<'a> {
    raw: &'a Bytes,
    envelope_from: &'a str,
    summary: &'a MessageSummary,
    holds: &'a QuotaHolds,
    /// The caller's clock when it asked.
    at: u64,
}

impl Delivery<'_> {
    /// The meta of the one copy for a mailbox its `rcpts` all name.
    fn meta(&self, rcpts: &[&Recipient]) -> MessageMetaRec {
        let mut plus_tags: Vec<String> = Vec::new();
        for tag in rcpts.iter().filter_map(|r| r.plus_tag.as_deref()) {
            if !plus_tags.iter().any(|t| t.eq_ignore_ascii_case(tag)) {
                plus_tags.push(tag.to_owned());
            }
        }
        MessageMetaRec {
            plus_tags,
            envelope_from: self.envelope_from.to_owned(),
            summary: self.summary.clone(),
        }
    }
}

impl Writer {
    /// Stage one write command into `b` (control commands never get here).
    pub(super) fn stage(&mut self, cmd: Cmd, b: &mut Batch) {
        match cmd {
            Cmd::Deliver {
                raw,
                envelope_from,
                summary,
                rcpts,
                dedupe,
                holds,
                retry,
                enq,
                at,
                reply,
            } => {
                let delivery = Delivery {
                    raw: &raw,
                    envelope_from: &envelope_from,
                    summary: &summary,
                    holds: &holds,
                    at,
                };
                self.stage_deliver(b, &delivery, rcpts, (dedupe, retry), (reply, enq));
            }
            Cmd::CreateMailbox {
                new,
                enq,
                at,
                reply,
            } => self.stage_create_mailbox(b, new, at, reply, enq),
            Cmd::DeleteMailbox { id, enq, reply } => self.stage_delete_mailbox(b, id, reply, enq),
            Cmd::DeleteMessage { id, enq, reply } => self.stage_delete_message(b, id, reply, enq),
            Cmd::CreateUser {
                name,
                enq,
                at,
                reply,
            } => self.stage_create_user(b, name, at, reply, enq),
            Cmd::AddSubscription {
                user,
                sub,
                enq,
                reply,
            } => self.stage_subscription(b, (user, sub, false), reply, enq),
            Cmd::CreateKey {
                user,
                hash,
                prefix,
                enq,
                at,
                reply,
            } => self.stage_create_key(b, (user, hash, prefix), at, reply, enq),
            Cmd::RevokeKey { id, enq, at, reply } => self.stage_revoke_key(b, id, at, reply, enq),
            Cmd::ReplaceSubscriptions {
                user,
                sub,
                enq,
                reply,
            } => self.stage_subscription(b, (user, sub, true), reply, enq),
            Cmd::DisableUser { id, enq, at, reply } => {
                self.stage_disable_user(b, id, at, reply, enq)
            }
            Cmd::Audit { entry, enq, reply } => {
                b.frame(&Record::AdminAudit(entry.clone()), 0, 0);
                b.applies.push(Apply::Audit(entry));
                b.answer_after_commit(Ack::Unit(reply), enq);
            }
            Cmd::PutState {
                key,
                value,
                enq,
                reply,
            } => self.stage_put_state(b, key, value, reply, enq),
            Cmd::Import { export, enq, reply } => self.stage_import(b, &export, reply, enq),
            Cmd::Campaign(c) => self.stage_campaign(b, c),
            Cmd::ForgetPart { key, at } => self.note_forgotten(key, at),
            Cmd::RewriteBegin { .. }
            | Cmd::RewriteSwap { .. }
            | Cmd::Shutdown { .. }
            | Cmd::PanicForTests { .. } => {}
        }
    }

    /// One `Message` record per mailbox that takes it (with the plus tags
    /// of all its recipients), plus the dedupe record; refused recipients
    /// are answered in the results.
    fn stage_deliver(
        &mut self,
        b: &mut Batch,
        delivery: &Delivery<'_>,
        rcpts: Vec<(Recipient, MailboxId)>,
        (dedupe, retry): (Option<(String, u8)>, Option<PartKey>),
        (reply, enq): (Reply<RcptResults, DeliverError>, Instant),
    ) {
        // The mailboxes in first-named order, each with its recipients.
        let mut mailboxes: Vec<(MailboxId, Vec<&Recipient>)> = Vec::new();
        for (rcpt, id) in &rcpts {
            match mailboxes.iter_mut().find(|(m, _)| m == id) {
                Some((_, named)) => named.push(rcpt),
                None => mailboxes.push((*id, vec![rcpt])),
            }
        }
        // A record the decoder would refuse must never be acknowledged
        // (it would be unreadable, and after a crash its frame would
        // look torn and cut off every later batch).
        let largest = mailboxes
            .iter()
            .map(|(_, named)| codec::message_payload_len(&delivery.meta(named), delivery.raw.len()))
            .max()
            .unwrap_or(0);
        if largest > codec::MAX_PAYLOAD {
            let limit = self.shared.config.max_message_bytes;
            crate::retry::answer_delivery(reply, retry, Err(DeliverError::TooLarge { limit }));
            return;
        }
        let now = self.shared.clock.now_ms();
        let mut outcomes = Vec::with_capacity(mailboxes.len());
        let mut wrote = false;
        let shared = Arc::clone(&self.shared);
        let idx = shared.shard(self.shard).index.read();
        for (id, named) in &mailboxes {
            let result = match idx.mailboxes.get(*id) {
                Some(mb) => stage_message(b, &shared, mb, now, delivery, named),
                None => Err(ResolveError::NoSuchMailbox),
            };
            wrote |= result.is_ok();
            outcomes.push((*id, result));
        }
        drop(idx);
        let results = rcpts
            .into_iter()
            .map(|(rcpt, id)| {
                let result = outcomes
                    .iter()
                    .find(|(m, _)| *m == id)
                    .map_or(Err(ResolveError::NoSuchMailbox), |(_, r)| *r);
                (rcpt, result)
            })
            .collect();
        let dedupe_parts = dedupe.as_ref().map(|(_, parts)| *parts);
        if let Some((key, parts)) = dedupe {
            // Written in the same batch as the messages (atomic with
            // them), also when every recipient here was refused, so
            // that recovery sees one part per shard.
            let at_ms = delivery.at;
            b.frame(&Record::Dedupe { key, at_ms, parts }, 0, 0);
            wrote = true;
        }
        if let Some((key, _)) = &retry {
            if wrote && crate::retry::logged(dedupe_parts) {
                // Durable with this part's messages, for a retry after a
                // restart (`retry.rs`).
                let outcomes = outcomes
                    .iter()
                    .map(|(m, r)| crate::retry::outcome_rec(*m, r))
                    .collect();
                let record = Record::DeliveryPart {
                    key: *key,
                    at_ms: delivery.at,
                    outcomes,
                };
                b.frame(&record, 0, 0);
            }
        }
        let part = retry.map(|(key, pending)| PartRecord {
            key,
            outcomes,
            pending,
        });
        let ack = Ack::Deliver(reply, results, part);
        if wrote {
            b.answer_after_commit(ack, enq);
        } else {
            ack.ok();
        }
    }

    fn stage_create_mailbox(
        &mut self,
        b: &mut Batch,
        new: NewMailbox,
        at: u64,
        reply: Reply<MailboxInfo, CreateMailboxError>,
        enq: Instant,
    ) {
        let now = self.shared.clock.now_ms();
        let quarantine = self.shared.config.address_quarantine.as_millis() as u64;
        // Taken: a live mailbox has the address. Quarantined: its mailbox
        // ended less than the quarantine ago and the caller is not its
        // owner. Both are the same answer, so nobody learns which.
        let taken = {
            let idx = self.shared.shard(self.shard).index.read();
            idx.mailboxes.at_address(&new.address).is_some_and(|m| {
                let deleted = b.deleted_mailboxes.contains(&m.id);
                let ended_at = if deleted { now } else { m.expires_at_ms };
                let live = !deleted && m.expires_at_ms > now;
                live || (m.owner != new.owner && ended_at.saturating_add(quarantine) > now)
            })
        };
        let quarantined =
            self.shared.tombstones[self.shard.0]
                .lock()
                .blocks(&new.address, &new.owner, now);
        if taken || quarantined || b.new_addresses.contains_key(&new.address) {
            let _ = reply.send(Err(CreateMailboxError::AlreadyExists));
            return;
        }
        let id = self.alloc_id() | self.shared.config.mailbox_id_prefix.bits(&new.address);
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
        let record = Record::MailboxCreated(codec::MailboxRec {
            id,
            created_at_ms: at,
            expires_at_ms: new.expires_at_ms,
            max_messages: new.max_messages,
            owner: new.owner,
            address: new.address.to_string(),
        });
        let (rel, len) = b.frame(&record, 0, 0);
        if quarantine > 0 {
            // Its claim once it ends by expiry, durable with it.
            let tombstone = Record::AddressTombstone {
                address: new.address.to_string(),
                owner: info.owner.clone(),
                at_ms: at,
                until_ms: info.expires_at_ms.saturating_add(quarantine),
            };
            b.frame(&tombstone, 0, 0);
        }
        b.new_addresses.insert(new.address, MailboxId(id));
        let apply = Apply::MailboxCreated {
            info: info.clone(),
            rel,
            len,
        };
        b.applies.push(apply);
        b.answer_after_commit(Ack::Mailbox(reply, info), enq);
    }

    fn stage_delete_mailbox(
        &mut self,
        b: &mut Batch,
        id: u64,
        reply: Reply<(), WriteError>,
        enq: Instant,
    ) {
        let mailbox = MailboxId(id);
        let target = {
            let idx = self.shared.shard(self.shard).index.read();
            idx.mailboxes.get(mailbox).map(|m| {
                (
                    m.created.segment.0,
                    idx.mailboxes.address(m),
                    m.owner.clone(),
                )
            })
        };
        let Some((target_seg, address, owner)) =
            target.filter(|_| !b.deleted_mailboxes.contains(&mailbox))
        else {
            let _ = reply.send(Err(WriteError::NotFound));
            return;
        };
        b.frame(&Record::MailboxDeleted { id, target_seg }, 0, 0);
        let quarantine = self.shared.config.address_quarantine.as_millis() as u64;
        if quarantine > 0 {
            let now = self.shared.clock.now_ms();
            let tombstone = Tombstone {
                owner,
                at_ms: now,
                until_ms: now.saturating_add(quarantine),
            };
            let record = Record::AddressTombstone {
                address: address.to_string(),
                owner: tombstone.owner.clone(),
                at_ms: tombstone.at_ms,
                until_ms: tombstone.until_ms,
            };
            b.frame(&record, 0, 0);
            b.applies.push(Apply::Tombstone { address, tombstone });
        }
        b.deleted_mailboxes.insert(mailbox);
        b.applies.push(Apply::MailboxDeleted { id: mailbox });
        b.answer_after_commit(Ack::Unit(reply), enq);
    }

    fn stage_delete_message(
        &mut self,
        b: &mut Batch,
        id: MessageId,
        reply: Reply<(), WriteError>,
        enq: Instant,
    ) {
        let mailbox = id.mailbox;
        let target = {
            let idx = self.shared.shard(self.shard).index.read();
            idx.mailboxes
                .get(mailbox)
                .and_then(|m| m.find(id.seq).and_then(|i| m.msgs.get(i)))
                .map(|r| r.seg.0)
        };
        let Some(target_seg) = target.filter(|_| {
            !b.deleted_mailboxes.contains(&mailbox)
                && !b.deleted_messages.contains(&(mailbox, id.seq))
        }) else {
            let _ = reply.send(Err(WriteError::NotFound));
            return;
        };
        let seq = id.seq;
        let record = Record::MessageDeleted {
            mailbox: mailbox.0,
            seq,
            target_seg,
        };
        b.frame(&record, 0, 0);
        b.deleted_messages.insert((mailbox, seq));
        if let Some(e) = b.mailbox_counts.get_mut(&mailbox) {
            e.1 = e.1.saturating_sub(1);
        }
        b.applies.push(Apply::MessageDeleted { mailbox, seq });
        b.answer_after_commit(Ack::Unit(reply), enq);
    }

    fn stage_create_user(
        &mut self,
        b: &mut Batch,
        name: String,
        at: u64,
        reply: Reply<UserInfo, WriteError>,
        enq: Instant,
    ) {
        let id = self.alloc_id();
        let user = UserInfo {
            id: UserId(id),
            name: name.clone(),
            created_at_ms: at,
            subscriptions: Vec::new(),
        };
        let record = Record::UserCreated {
            id,
            created_at_ms: at,
            name,
        };
        b.frame(&record, 0, 0);
        b.applies.push(Apply::User(user.clone()));
        b.answer_after_commit(Ack::User(reply, user), enq);
    }

    /// Add a subscription; with `replace` (an operator action), end every
    /// earlier one of the user first.
    fn stage_subscription(
        &mut self,
        b: &mut Batch,
        (user, sub, replace): (u64, Subscription, bool),
        reply: Reply<(), WriteError>,
        enq: Instant,
    ) {
        if !self.shared.meta.read().users.contains_key(&user) {
            let _ = reply.send(Err(WriteError::NotFound));
            return;
        }
        let ordinal = self.alloc_id();
        if replace {
            let ended = Record::SubscriptionsEnded {
                user,
                before_ordinal: ordinal,
                at_ms: sub.starts_at_ms,
            };
            b.frame(&ended, 0, 0);
        }
        let added = Record::SubscriptionAdded {
            user,
            ordinal,
            sub: sub.clone(),
        };
        b.frame(&added, 0, 0);
        b.applies.push(if replace {
            Apply::ReplaceSubs { user, sub }
        } else {
            Apply::Sub { user, sub }
        });
        b.answer_after_commit(Ack::Unit(reply), enq);
    }

    fn stage_create_key(
        &mut self,
        b: &mut Batch,
        (user, hash, prefix): (u64, [u8; 32], String),
        at: u64,
        reply: Reply<ApiKeyInfo, WriteError>,
        enq: Instant,
    ) {
        let (user_ok, dup) = {
            let m = self.shared.meta.read();
            let user_ok = m.users.contains_key(&user);
            (user_ok, m.key_by_hash.contains_key(&hash))
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
        let key = ApiKeyInfo {
            id: ApiKeyId(id),
            user: UserId(user),
            hash,
            prefix: prefix.clone(),
            created_at_ms: at,
            revoked_at_ms: None,
        };
        let record = Record::ApiKeyCreated {
            id,
            user,
            hash,
            prefix,
            created_at_ms: at,
        };
        b.frame(&record, 0, 0);
        b.key_hashes.insert(hash);
        b.applies.push(Apply::Key(key.clone()));
        b.answer_after_commit(Ack::Key(reply, key), enq);
    }

    fn stage_revoke_key(
        &mut self,
        b: &mut Batch,
        id: u64,
        at: u64,
        reply: Reply<(), WriteError>,
        enq: Instant,
    ) {
        let revoked = self
            .shared
            .meta
            .read()
            .keys
            .get(&id)
            .map(|k| k.revoked_at_ms);
        match revoked {
            None => drop(reply.send(Err(WriteError::NotFound))),
            Some(Some(_)) => drop(reply.send(Ok(()))),
            Some(None) => {
                b.frame(&Record::ApiKeyRevoked { id, at_ms: at }, 0, 0);
                b.applies.push(Apply::Revoke { id, at_ms: at });
                b.answer_after_commit(Ack::Unit(reply), enq);
            }
        }
    }

    fn stage_disable_user(
        &mut self,
        b: &mut Batch,
        id: u64,
        at: u64,
        reply: Reply<(), WriteError>,
        enq: Instant,
    ) {
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
                b.answer_after_commit(Ack::Unit(reply), enq);
            }
        }
    }

    fn stage_put_state(
        &mut self,
        b: &mut Batch,
        key: String,
        value: Option<String>,
        reply: Reply<(), WriteError>,
        enq: Instant,
    ) {
        let (exists, live) = {
            let idx = self.shared.shard(self.shard).index.read();
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
        let record = Record::State {
            key: key.clone(),
            version,
            value: value.clone(),
        };
        let (_, len) = b.frame(&record, 0, 0);
        let apply = Apply::State {
            key,
            version,
            value,
            len,
        };
        b.applies.push(apply);
        b.answer_after_commit(Ack::Unit(reply), enq);
    }
}

/// Stage the one copy of a delivery for mailbox `mb`, named by `rcpts`:
/// the next sequence number of the mailbox, unless it is gone, expired or
/// full. Full counts the messages other transactions reserved at RCPT
/// (`quota.rs`), less the one this delivery holds, if any.
fn stage_message(
    b: &mut Batch,
    shared: &Shared,
    mb: &MailboxEntry,
    now: u64,
    delivery: &Delivery<'_>,
    rcpts: &[&Recipient],
) -> Result<MessageId, ResolveError> {
    let mailbox = mb.id;
    let id = mailbox.0;
    // Every recipient of the group names this mailbox; there is at least one.
    let Some(address) = rcpts.first().map(|r| r.address.clone()) else {
        return Err(ResolveError::NoSuchMailbox);
    };
    if b.deleted_mailboxes.contains(&mailbox) || mb.expires_at_ms <= now {
        return Err(ResolveError::NoSuchMailbox);
    }
    let (last_seq, count) = *b
        .mailbox_counts
        .entry(mailbox)
        .or_insert((mb.last_seq, mb.message_count()));
    let held = delivery.holds.holds(mailbox);
    // Reservations of copies already staged in this batch are counted in
    // `count`; the rest are still to come.
    let staged_held = b.held_staged.get(&mailbox).copied().unwrap_or(0);
    let others = crate::quota::reserved(shared, mailbox)
        .saturating_sub(staged_held)
        .saturating_sub(u32::from(held));
    if count.saturating_add(others) >= mb.max_messages {
        return Err(ResolveError::MailboxFull);
    }
    let seq = last_seq + 1;
    // Sequence numbers of a mailbox only grow: clients resume from one.
    assert!(
        seq > mb.last_seq,
        "mailbox {id}: sequence {seq} staged after {}",
        mb.last_seq
    );
    b.mailbox_counts.insert(mailbox, (seq, count + 1));
    if held {
        *b.held_staged.entry(mailbox).or_insert(0) += 1;
    }
    let meta = delivery.meta(rcpts);
    let start = codec::begin_frame(&mut b.buf, Kind::Message);
    codec::encode_message(&mut b.buf, id, seq, delivery.at, &meta, delivery.raw);
    codec::finish_frame(&mut b.buf, start);
    let (rel, len) = b.push_hint(start, Kind::Message, id, seq);
    let message = MessageId { mailbox, seq };
    let event = Event {
        // The mailbox was found at this address, and ids are never reused.
        address,
        id: message,
        received_at_ms: delivery.at,
        size: delivery.raw.len() as u32,
        plus_tag: meta.plus_tags.first().cloned(),
        plus_tags: meta.plus_tags,
        summary: meta.summary,
    };
    b.applies.push(Apply::Message {
        mailbox,
        seq,
        rel,
        len,
        event,
        hold: held.then(|| delivery.holds.clone()),
    });
    Ok(message)
}
