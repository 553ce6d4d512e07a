//! Staging an import (`handover.rs`): one mailbox made equal to an export,
//! in one batch, with its id and sequence numbers kept.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use super::batch::{Ack, Apply, Batch};
use super::Writer;
use crate::cmd::Reply;
use crate::codec::{self, Kind, MessageMetaRec, Record};
use crate::handover::{ExportChunk, ImportError, ImportReport};
use crate::types::*;

/// What the index holds of the mailbox now.
struct Copy {
    last_seq: u64,
    seqs: Vec<u64>,
    created_segment: u32,
}

impl Writer {
    pub(super) fn stage_import(
        &mut self,
        b: &mut Batch,
        chunk: &ExportChunk,
        reply: Reply<ImportReport, ImportError>,
        enq: Instant,
    ) {
        let (export, after, through) = (&chunk.export, chunk.after, chunk.through);
        let info = &export.mailbox;
        let id = info.id;
        if b.new_addresses.contains_key(&info.address)
            || b.mailbox_counts.contains_key(&id)
            || b.deleted_mailboxes.contains(&id)
        {
            drop(reply.send(Err(ImportError::Busy)));
            return;
        }
        let now = self.shared.clock.now_ms();
        let shared = Arc::clone(&self.shared);
        let copy = {
            let idx = shared.shard(self.shard).index.read();
            let held_by_another = idx
                .mailboxes
                .at_address(&info.address)
                .is_some_and(|m| m.id != id && m.expires_at_ms > now);
            if held_by_another {
                drop(reply.send(Err(ImportError::AddressTaken(info.address.clone()))));
                return;
            }
            match idx.mailboxes.get(id) {
                Some(mb) if idx.mailboxes.address(mb) != info.address => {
                    drop(reply.send(Err(ImportError::IdTaken(id.0))));
                    return;
                }
                Some(mb) => Some(Copy {
                    last_seq: mb.last_seq,
                    seqs: mb.msgs.iter().map(|r| r.seq).collect(),
                    created_segment: mb.created.segment.0,
                }),
                None => None,
            }
        };
        let have_last = copy.as_ref().map_or(0, |c| c.last_seq);
        let have: HashSet<u64> = copy
            .as_ref()
            .map(|c| c.seqs.iter().copied().collect())
            .unwrap_or_default();
        // Checked before anything is framed, so a refusal writes nothing.
        for m in &export.messages {
            if m.seq <= after || m.seq > through {
                drop(reply.send(Err(ImportError::OutOfWindow {
                    id: id.0,
                    seq: m.seq,
                })));
                return;
            }
            if m.seq <= have_last && !have.contains(&m.seq) {
                drop(reply.send(Err(ImportError::SequenceBehind {
                    id: id.0,
                    seq: m.seq,
                })));
                return;
            }
            let meta = meta_of(m);
            if codec::message_payload_len(&meta, m.raw.len()) > codec::MAX_PAYLOAD {
                drop(reply.send(Err(ImportError::TooLarge)));
                return;
            }
        }
        let mut report = ImportReport::default();
        if copy.is_none() {
            self.stage_imported_mailbox(b, info);
            report.created = true;
        }
        // Deleted at the source since an earlier import (within this
        // chunk's window: the other chunks speak for the rest).
        let wanted: HashSet<u64> = export.messages.iter().map(|m| m.seq).collect();
        let index_segs: Vec<(u64, u32)> = {
            let idx = shared.shard(self.shard).index.read();
            idx.mailboxes.get(id).map_or_else(Vec::new, |mb| {
                mb.msgs
                    .iter()
                    .filter(|r| r.seq > after && r.seq <= through && !wanted.contains(&r.seq))
                    .map(|r| (r.seq, r.seg.0))
                    .collect()
            })
        };
        for (seq, target_seg) in index_segs {
            let record = Record::MessageDeleted {
                mailbox: id.0,
                seq,
                target_seg,
            };
            b.frame(&record, 0, 0);
            b.deleted_messages.insert((id, seq));
            b.applies.push(Apply::MessageDeleted { mailbox: id, seq });
            report.deleted += 1;
        }
        let mut last = have_last;
        for m in export.messages.iter().filter(|m| m.seq > have_last) {
            let meta = meta_of(m);
            let start = codec::begin_frame(&mut b.buf, Kind::Message);
            codec::encode_message(&mut b.buf, id.0, m.seq, m.received_at_ms, &meta, &m.raw);
            codec::finish_frame(&mut b.buf, start);
            let (rel, len) = b.push_hint(start, Kind::Message, id.0, m.seq);
            let event = Event {
                address: info.address.clone(),
                id: MessageId {
                    mailbox: id,
                    seq: m.seq,
                },
                received_at_ms: m.received_at_ms,
                size: m.raw.len() as u32,
                plus_tag: meta.plus_tags.first().cloned(),
                plus_tags: meta.plus_tags,
                summary: meta.summary,
            };
            b.applies.push(Apply::Message {
                mailbox: id,
                seq: m.seq,
                rel,
                len,
                event,
                hold: None,
            });
            last = m.seq;
            report.appended += 1;
        }
        // Only the last chunk (the window open to the end) carries the
        // highest sequence: an earlier one's messages stop before it.
        if through == u64::MAX && info.last_seq > last {
            // The source's highest sequence belongs to a deleted message:
            // a tombstone of it carries the sequence over (recovery counts
            // tombstones towards `last_seq`, and compaction keeps the one of
            // a mailbox's highest sequence).
            let target_seg = copy.as_ref().map_or(0, |c| c.created_segment);
            let record = Record::MessageDeleted {
                mailbox: id.0,
                seq: info.last_seq,
                target_seg,
            };
            b.frame(&record, 0, 0);
            b.applies.push(Apply::LastSeq {
                mailbox: id,
                seq: info.last_seq,
            });
            last = info.last_seq;
            report.raised_last_seq = true;
        }
        // Ids this host hands out from now on are past the imported one.
        let counter = (id.0 & crate::MAILBOX_ID_LOW_MASK) / self.n() + 1;
        self.counter = self.counter.max(counter);
        if report.unchanged() {
            drop(reply.send(Ok(report)));
            return;
        }
        // A delivery staged after this in the batch goes on from here.
        let count = u32::try_from(have.len())
            .unwrap_or(u32::MAX)
            .saturating_sub(report.deleted)
            .saturating_add(report.appended);
        b.mailbox_counts.insert(id, (last, count));
        b.answer_after_commit(Ack::Import(reply, report), enq);
    }

    fn stage_imported_mailbox(&mut self, b: &mut Batch, info: &MailboxInfo) {
        let record = Record::MailboxCreated(codec::MailboxRec {
            id: info.id.0,
            created_at_ms: info.created_at_ms,
            expires_at_ms: info.expires_at_ms,
            max_messages: info.max_messages,
            owner: info.owner.clone(),
            address: info.address.to_string(),
        });
        let (rel, len) = b.frame(&record, 0, 0);
        let quarantine = self.shared.config.address_quarantine.as_millis() as u64;
        if quarantine > 0 {
            // As at creation: the owner's claim once the mailbox expires.
            let tombstone = Record::AddressTombstone {
                address: info.address.to_string(),
                owner: info.owner.clone(),
                at_ms: info.created_at_ms,
                until_ms: info.expires_at_ms.saturating_add(quarantine),
            };
            b.frame(&tombstone, 0, 0);
        }
        b.new_addresses.insert(info.address.clone(), info.id);
        let info = MailboxInfo {
            message_count: 0,
            last_seq: 0,
            ..info.clone()
        };
        b.applies.push(Apply::MailboxCreated { info, rel, len });
    }
}

fn meta_of(m: &crate::handover::MessageExport) -> MessageMetaRec {
    MessageMetaRec {
        plus_tags: m.plus_tags.clone(),
        envelope_from: m.envelope_from.clone(),
        summary: m.summary.clone(),
    }
}
