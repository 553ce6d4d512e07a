//! Staging and applying campaign records (`crate::campaign`): creation and
//! deletion on shard 0, messages on the campaign's own shard. Kept apart
//! from the mailbox path so the two evolve without touching each other.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use bytes::Bytes;

use super::batch::{Ack, Apply, Batch};
use super::Writer;
use crate::campaign::{self, CampaignInfo, Loc, MessageRec, StoreMode, MAX_CAMPAIGN_MESSAGES};
use crate::cmd::{CampaignCmd, RcptResults, Reply};
use crate::codec::{self, Kind, Record};
use crate::error::{DeliverError, ResolveError, WriteError};
use crate::ids::SegmentNo;
use crate::types::*;

/// What a batch holds of campaigns so far (checked with the committed table).
#[derive(Default)]
pub(crate) struct Staged {
    created: Vec<CampaignInfo>,
    deleted: HashSet<u64>,
    /// campaign → (last sequence, messages) including this batch.
    counts: HashMap<u64, (u64, u64)>,
}

/// What to do to the campaign table once the batch is durable.
pub(crate) enum CampaignApply {
    Created {
        info: CampaignInfo,
        rel: usize,
        len: u32,
    },
    Deleted {
        id: u64,
    },
    Message {
        rec: MessageRec<'static>,
        rel: usize,
        len: u32,
    },
}

impl Writer {
    pub(super) fn stage_campaign(&mut self, b: &mut Batch, cmd: CampaignCmd) {
        match cmd {
            CampaignCmd::Create {
                new,
                at,
                enq,
                reply,
            } => {
                let now = self.shared.clock.now_ms();
                let checked =
                    self.shared
                        .campaigns
                        .read()
                        .check_new(&new, &b.campaigns.created, now);
                if let Err(e) = checked {
                    drop(reply.send(Err(e)));
                    return;
                }
                let info = CampaignInfo {
                    id: new.id,
                    owner: new.owner,
                    name: new.name,
                    created_at_ms: at,
                    expires_at_ms: new.expires_at_ms,
                    pattern: new.pattern,
                    store: new.store,
                    sent_at_header: new.sent_at_header,
                    messages: 0,
                };
                let rec = Record::CampaignCreated(campaign::CreatedRec { info: info.clone() });
                let (rel, len) = b.frame(&rec, 0, 0);
                b.campaigns.created.push(info.clone());
                let apply = CampaignApply::Created {
                    info: info.clone(),
                    rel,
                    len,
                };
                b.applies.push(Apply::Campaign(apply));
                b.answer_after_commit(Ack::Campaign(reply, info), enq);
            }
            CampaignCmd::Delete { id, enq, reply } => {
                let target = self
                    .shared
                    .campaigns
                    .read()
                    .campaigns
                    .get(&id)
                    .map(|e| e.created.seg);
                match target {
                    Some(seg) if b.campaigns.deleted.insert(id) => {
                        let rec = Record::CampaignDeleted {
                            id,
                            target_seg: seg.0,
                        };
                        b.frame(&rec, 0, 0);
                        b.applies
                            .push(Apply::Campaign(CampaignApply::Deleted { id }));
                        b.answer_after_commit(Ack::Unit(reply), enq);
                    }
                    Some(_) => drop(reply.send(Ok(()))),
                    None => drop(reply.send(Err(WriteError::NotFound))),
                }
            }
            CampaignCmd::Deliver {
                raw,
                envelope_from,
                rcpts,
                dedupe,
                enq,
                reply,
            } => {
                self.stage_campaign_deliver(b, (&raw, &envelope_from), rcpts, dedupe, (reply, enq))
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn stage_campaign_deliver(
        &mut self,
        b: &mut Batch,
        (raw, envelope_from): (&Bytes, &str),
        rcpts: Vec<(
            Recipient,
            campaign::CampaignId,
            std::sync::Arc<uncorreo_campaign_report::Scanned>,
        )>,
        dedupe: Option<(String, u8)>,
        (reply, enq): (Reply<RcptResults, DeliverError>, Instant),
    ) {
        let now = self.shared.clock.now_ms();
        let mut results: RcptResults = Vec::with_capacity(rcpts.len());
        let mut wrote = false;
        let shared = std::sync::Arc::clone(&self.shared);
        let table = shared.campaigns.read();
        for (rcpt, id, scanned) in rcpts {
            let entry = table
                .live(id.0, now)
                .filter(|_| !b.campaigns.deleted.contains(&id.0));
            let result = match entry {
                None => Err(ResolveError::NoSuchMailbox),
                Some(e) => {
                    let (last, count) = b
                        .campaigns
                        .counts
                        .entry(id.0)
                        .or_insert((e.last_seq, e.info.messages));
                    if *count >= MAX_CAMPAIGN_MESSAGES {
                        Err(ResolveError::MailboxFull)
                    } else {
                        *last += 1;
                        *count += 1;
                        let seq = *last;
                        let body: &[u8] = match e.info.store {
                            StoreMode::Full => raw,
                            StoreMode::Headers => raw.get(..scanned.header_len).unwrap_or(raw),
                            StoreMode::Count => &[],
                        };
                        let rec = MessageRec {
                            campaign: id.0,
                            seq,
                            committed_at_ms: now,
                            size: u32::try_from(raw.len()).unwrap_or(u32::MAX),
                            sent_at_ms: scanned.sent_at_ms,
                            recipient: recipient_text(&rcpt),
                            envelope_from: envelope_from.to_owned(),
                            message_id: scanned.message_id.clone(),
                            body,
                        };
                        let start = codec::begin_frame(&mut b.buf, Kind::CampaignMessage);
                        campaign::encode_message(&mut b.buf, &rec);
                        codec::finish_frame(&mut b.buf, start);
                        let (rel, len) = b.push_hint(start, Kind::CampaignMessage, 0, 0);
                        let rec = campaign::without_body(rec);
                        b.applies
                            .push(Apply::Campaign(CampaignApply::Message { rec, rel, len }));
                        Ok(MessageId {
                            mailbox: MailboxId(id.0),
                            seq,
                        })
                    }
                }
            };
            wrote |= result.is_ok();
            results.push((rcpt, result));
        }
        drop(table);
        if let Some((key, parts)) = dedupe {
            // In the same batch as the messages, one part per shard, as for mailboxes.
            b.frame(
                &Record::Dedupe {
                    key,
                    at_ms: now,
                    parts,
                },
                0,
                0,
            );
            wrote = true;
        }
        let ack = Ack::Deliver(reply, results);
        if wrote {
            b.answer_after_commit(ack, enq);
        } else {
            ack.ok();
        }
    }

    /// Make a durable campaign record visible (`at`: batch offset → place).
    pub(super) fn apply_campaign(&self, a: CampaignApply, at: impl Fn(usize) -> (SegmentNo, u32)) {
        let loc = |rel: usize, len: u32| {
            let (seg, off) = at(rel);
            Loc {
                shard: self.shard,
                seg,
                off,
                len,
            }
        };
        let mut table = self.shared.campaigns.write();
        match a {
            CampaignApply::Created { info, rel, len } => table.insert(info, loc(rel, len)),
            CampaignApply::Deleted { id } => {
                if let Some(e) = table.remove(id) {
                    drop(table);
                    mark_campaign_dead(&self.shared, &e);
                }
            }
            CampaignApply::Message { rec, rel, len } => {
                if table.campaigns.contains_key(&rec.campaign) {
                    table.add_message(&rec, loc(rel, len));
                } else {
                    // Deleted between staging and commit.
                    self.active.add_dead(u64::from(len));
                }
            }
        }
    }
}

/// The recipient as it was written (`local+tag@domain`).
fn recipient_text(r: &Recipient) -> String {
    match &r.plus_tag {
        None => r.address.to_string(),
        Some(tag) => {
            let a = r.address.to_string();
            match a.rsplit_once('@') {
                Some((local, domain)) => format!("{local}+{tag}@{domain}"),
                None => a,
            }
        }
    }
}

/// Count every record of a deleted or expired campaign as dead, so
/// compaction finds its segments.
pub(crate) fn mark_campaign_dead(shared: &crate::state::Shared, e: &campaign::Entry) {
    for ((shard, seg), bytes) in &e.bytes_by_segment {
        if let Some(s) = shared.shard(*shard).segs.read().get(seg) {
            s.add_dead(*bytes);
        }
    }
}
