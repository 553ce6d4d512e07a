//! Commit: a gathered batch made durable, then visible (committed length,
//! index, users and keys), then published, then acknowledged, in that order.

use std::sync::atomic::Ordering;

use super::batch::{Apply, Batch};
use super::Writer;
use crate::codec::Record;
use crate::error::BatchFailure;
use crate::ids::{RecordLoc, SegmentNo, ShardIndex};
use crate::state::{MailboxEntry, MailboxIndex, MsgRef, Shared, StateValue, REF_CORRUPT};
use crate::types::*;

/// Where a committed batch landed in the active segment.
#[derive(Clone, Copy)]
struct Landed {
    seg_no: SegmentNo,
    /// Offset of the batch's first byte.
    base: u64,
}

impl Landed {
    /// Absolute offset of a record `rel` bytes into the batch.
    fn offset(self, rel: usize) -> u32 {
        (self.base as usize + rel) as u32
    }
}

/// What the batch changed that subscribers must hear about, after the index
/// is updated.
#[derive(Default)]
struct Published {
    events: Vec<Event>,
    /// Mailboxes gone: their subscriptions end.
    closed: Vec<MailboxId>,
    /// Their addresses, for the event tap (collected only when one is set).
    /// With a tap only: each ended mailbox's address and owner.
    closed_addresses: Vec<(Address, crate::types::Owner)>,
}

impl Writer {
    /// Make the batch durable, then visible, then published, then acknowledged.
    /// Publishing before acking means that when `deliver` returns, the event is
    /// already queued for every subscriber (and a deleted mailbox's
    /// subscriptions are already ended); both still follow the sync.
    /// `Err` when the batch was not written (every command in it is
    /// answered with that failure).
    pub(super) fn commit(&mut self, b: &mut Batch) -> Result<(), BatchFailure> {
        if !b.buf.is_empty() {
            // They ride with this batch's sync, never with one of their own.
            self.stage_forgotten(b);
        }
        let mut batch = std::mem::take(b);
        if batch.buf.is_empty() {
            for s in batch.staged {
                s.ack.ok();
            }
            return Ok(());
        }
        if self.shared.shard_failed(self.shard) {
            // This shard failed a sync (or the engine failed): write nothing more.
            for s in batch.staged {
                s.ack.fail(BatchFailure::Poisoned);
            }
            return Err(BatchFailure::Poisoned);
        }
        let records = batch.records;
        Record::BatchCommit { records }.encode_frame(&mut batch.buf);
        let need = batch.buf.len() as u64;
        let base = match self.write_batch(&batch.buf) {
            Ok(base) => base,
            Err(failure) => {
                for s in batch.staged {
                    s.ack.fail(failure);
                }
                return Err(failure);
            }
        };
        // Only bytes past what the segment's reservation already counted take
        // new space; counting them again would refuse mail early, then take
        // it again at the next probe.
        let end = base + need;
        let fresh = end.saturating_sub(self.counted_to.max(base));
        self.counted_to = self.counted_to.max(end);
        self.shared
            .written_since_probe
            .fetch_add(fresh, Ordering::Relaxed);
        self.write_off = end;
        self.active.len.store(self.write_off, Ordering::Release);
        for mut h in std::mem::take(&mut batch.hints) {
            h.off += base as u32;
            self.hints.push(h);
        }
        let landed = Landed {
            seg_no: self.active.no,
            base,
        };
        let published = self.make_visible(std::mem::take(&mut batch.applies), landed);
        self.publish_and_answer(batch, published);
        Ok(())
    }

    /// Update the index and the users/keys table for every record of a
    /// durable batch.
    fn make_visible(&self, applies: Vec<Apply>, landed: Landed) -> Published {
        let mut published = Published::default();
        let mut idx = self.shared.shard(self.shard).index.write();
        for apply in applies {
            match apply {
                Apply::Message {
                    mailbox,
                    seq,
                    rel,
                    len,
                    event,
                    hold,
                } => {
                    let at = MsgRef {
                        seq,
                        seg: landed.seg_no,
                        off: landed.offset(rel),
                        len,
                        flags: 0,
                    };
                    self.index_message(&mut idx, mailbox, at, event, &mut published);
                    // In the same write-locked step that counted it.
                    if let Some(h) = hold {
                        h.consume(mailbox);
                    }
                }
                Apply::MailboxCreated { info, rel, len } => {
                    // The address is held by a live mailbox again.
                    self.shared.tombstones[self.shard.0]
                        .lock()
                        .clear(&info.address);
                    let created = RecordLoc {
                        segment: landed.seg_no,
                        offset: landed.offset(rel),
                        len,
                    };
                    self.index_mailbox(&mut idx, info, created, &mut published);
                }
                Apply::Campaign(a) => {
                    let at = |rel: usize| (landed.seg_no, landed.offset(rel));
                    self.apply_campaign(a, at);
                }
                Apply::Tombstone { address, tombstone } => {
                    let now = self.shared.clock.now_ms();
                    self.shared.tombstones[self.shard.0]
                        .lock()
                        .note(address, tombstone, now);
                }
                Apply::MailboxDeleted { id } => {
                    // Read before the removal: the slab forgets it.
                    let address = self
                        .shared
                        .event_tap
                        .get()
                        .and_then(|_| idx.mailboxes.get(id).map(|m| idx.mailboxes.address(m)));
                    if let Some(m) = idx.remove_mailbox(id) {
                        mark_mailbox_dead(&self.shared, self.shard, &m);
                        published.closed.push(id);
                        if let Some(address) = address {
                            published.closed_addresses.push((address, m.owner.clone()));
                        }
                    }
                }
                Apply::MessageDeleted { mailbox, seq } => {
                    if let Some(r) = idx.remove_message(mailbox, seq) {
                        mark_dead(&self.shared, self.shard, r.seg, r.len);
                    }
                }
                Apply::LastSeq { mailbox, seq } => {
                    if let Some(mb) = idx.mailboxes.get_mut(mailbox) {
                        mb.last_seq = mb.last_seq.max(seq);
                    }
                }
                Apply::State {
                    key,
                    version,
                    value,
                    len,
                } => self.index_state(&mut idx, key, version, value, (landed.seg_no, len)),
                other => apply_to_meta(&self.shared, other),
            }
        }
        published
    }

    fn index_message(
        &self,
        idx: &mut MailboxIndex,
        mailbox: MailboxId,
        at: MsgRef,
        event: Event,
        published: &mut Published,
    ) {
        let Some(mb) = idx.mailboxes.get_mut(mailbox) else {
            // Expired and reaped between staging and commit.
            self.active.add_dead(u64::from(at.len));
            return;
        };
        // Sequence numbers of a mailbox only grow: clients resume from one.
        assert!(
            at.seq > mb.last_seq && mb.msgs.last().is_none_or(|r| r.seq < at.seq),
            "mailbox {}: sequence {} indexed after {}",
            mailbox.0,
            at.seq,
            mb.last_seq
        );
        mb.msgs.push(at);
        idx.messages += 1;
        mb.last_seq = mb.last_seq.max(at.seq);
        published.events.push(event);
    }

    fn index_mailbox(
        &self,
        idx: &mut MailboxIndex,
        info: MailboxInfo,
        created: RecordLoc,
        published: &mut Published,
    ) {
        // The old one at its address had expired: it is gone for good.
        if let Some(m) = idx.insert_mailbox(&info, created, Vec::new()) {
            mark_mailbox_dead(&self.shared, self.shard, &m);
            published.closed.push(m.id);
            if self.shared.event_tap.get().is_some() {
                published
                    .closed_addresses
                    .push((info.address.clone(), m.owner.clone()));
            }
        }
    }

    fn index_state(
        &self,
        idx: &mut MailboxIndex,
        key: String,
        version: u64,
        value: Option<String>,
        (seg, len): (SegmentNo, u32),
    ) {
        if let Some(old) = idx.states.get(&key) {
            mark_dead(&self.shared, self.shard, old.seg, old.len);
        }
        match value {
            Some(value) => {
                let entry = StateValue {
                    version,
                    value,
                    seg,
                    len,
                };
                idx.states.insert(key, entry);
            }
            None => {
                idx.states.remove(&key);
            }
        }
    }

    /// Count the batch, publish its events, then answer its commands.
    fn publish_and_answer(&mut self, batch: Batch, published: Published) {
        let records = batch.records;
        self.recent = [records, self.recent[0]];
        let c = &self.shared.counters;
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.records.fetch_add(u64::from(records), Ordering::Relaxed);
        metrics::histogram!(uncorreo_metric_names::BATCH_RECORDS).record(f64::from(records));
        for ev in &published.events {
            self.shared.hub.publish(ev);
        }
        if let Some(tap) = self.shared.event_tap.get() {
            for ev in &published.events {
                tap(crate::state::Tapped::Committed(ev));
            }
            for (address, owner) in &published.closed_addresses {
                tap(crate::state::Tapped::Closed(address, owner));
            }
        }
        for id in published.closed {
            self.shared.hub.close_mailbox(id);
        }
        let commit_hist = metrics::histogram!(uncorreo_metric_names::COMMIT_SECONDS);
        let now = self.shared.clock.now_ms();
        for mut s in batch.staged {
            commit_hist.record(s.enq.elapsed().as_secs_f64());
            if let super::batch::Ack::Deliver(_, _, part) = &mut s.ack {
                if let Some(part) = part.take() {
                    part.committed(&self.shared.parts[self.shard.0], now);
                }
            }
            s.ack.ok();
        }
    }
}

/// The records that change users, keys and the audit trail (shard 0).
fn apply_to_meta(shared: &Shared, apply: Apply) {
    let mut meta = shared.meta.write();
    match apply {
        Apply::User(u) => {
            meta.users.insert(u.id.0, u);
        }
        Apply::Sub { user, sub } => {
            if let Some(u) = meta.users.get_mut(&user) {
                u.subscriptions.push(sub);
            }
        }
        Apply::Key(k) => meta.insert_key(k),
        Apply::Revoke { id, at_ms } => {
            if let Some(k) = meta.keys.get_mut(&id) {
                k.revoked_at_ms.get_or_insert(at_ms);
            }
        }
        Apply::ReplaceSubs { user, sub } => {
            if let Some(u) = meta.users.get_mut(&user) {
                for old in &mut u.subscriptions {
                    let end = old.ends_at_ms.get_or_insert(sub.starts_at_ms);
                    *end = (*end).min(sub.starts_at_ms);
                }
                u.subscriptions.push(sub);
            }
        }
        Apply::Disable { id, at_ms } => {
            meta.disabled.entry(id).or_insert(at_ms);
        }
        Apply::Audit(entry) => meta.push_audit(entry),
        Apply::Message { .. }
        | Apply::MailboxCreated { .. }
        | Apply::MailboxDeleted { .. }
        | Apply::Tombstone { .. }
        | Apply::MessageDeleted { .. }
        | Apply::LastSeq { .. }
        | Apply::State { .. }
        | Apply::Campaign(_) => {}
    }
}

fn mark_dead(shared: &Shared, shard: ShardIndex, seg: SegmentNo, len: u32) {
    if let Some(s) = shared.shard(shard).segs.read().get(&seg) {
        s.add_dead(u64::from(len));
    }
}

pub(crate) fn mark_mailbox_dead(shared: &Shared, shard: ShardIndex, m: &MailboxEntry) {
    let segs = shared.shard(shard).segs.read();
    if let Some(s) = segs.get(&m.created.segment) {
        s.add_dead(u64::from(m.created.len));
    }
    for r in m.msgs.iter() {
        if let Some(s) = segs.get(&r.seg) {
            s.add_dead(u64::from(r.len));
        }
    }
}

/// Mark a message ref corrupt (found by a read) so it is never served.
pub(crate) fn quarantine(shared: &Shared, id: MessageId) {
    let shard = ShardIndex(shared.shard_of_id(id.mailbox.0));
    let mut idx = shared.shard(shard).index.write();
    if let Some(mb) = idx.mailboxes.get_mut(id.mailbox) {
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
