//! The `Engine` methods of load-testing campaigns (`campaign.rs`): create,
//! delete, look up, read the report and the stored messages. Routing of
//! mail to campaigns is in `Engine::resolve` / `Engine::deliver` (`api.rs`).

use std::sync::Arc;
use std::time::Instant;

use uncorreo_campaign_report::Report;

use crate::api::Engine;
use crate::campaign::{
    CampaignId, CampaignInfo, CampaignMessage, CreateCampaignError, NewCampaign,
};
use crate::cmd::{CampaignCmd, Cmd};
use crate::error::{OperationError, WriteError};
use crate::types::*;

/// Marked changed when a campaign's report changes; closed when the
/// campaign ends ([`Engine::watch_campaign`]).
pub type CampaignWatch = tokio::sync::watch::Receiver<u64>;

/// Why a campaign could not be watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WatchCampaignError {
    /// No live campaign has that id.
    #[error("no such live campaign")]
    NotFound,
    /// The campaign has `limit` watchers already.
    #[error("the campaign has {limit} watchers already")]
    Full {
        /// Watchers allowed per campaign.
        limit: usize,
    },
}

impl OperationError for CreateCampaignError {
    fn saturated() -> Self {
        Self::Storage(WriteError::Saturated)
    }
}

impl Engine {
    /// Create a campaign. Its pattern's domain must be one we serve.
    pub async fn create_campaign(
        &self,
        new: NewCampaign,
    ) -> Result<CampaignInfo, CreateCampaignError> {
        if let Some(p) = &new.pattern {
            if !self.is_local_domain(&p.domain) {
                return Err(CreateCampaignError::ForeignDomain);
            }
        }
        let at = self.now_ms();
        self.call(0, |reply| {
            Cmd::Campaign(CampaignCmd::Create {
                new,
                at,
                enq: Instant::now(),
                reply,
            })
        })
        .await
    }

    /// Delete a campaign and (logically at once, physically at compaction)
    /// everything it stored.
    pub async fn delete_campaign(&self, id: CampaignId) -> Result<(), WriteError> {
        self.call(0, |reply| {
            Cmd::Campaign(CampaignCmd::Delete {
                id: id.0,
                enq: Instant::now(),
                reply,
            })
        })
        .await
    }

    /// The live campaign `id`.
    pub fn campaign(&self, id: CampaignId) -> Option<CampaignInfo> {
        let now = self.now_ms();
        self.shared()
            .campaigns
            .read()
            .live(id.0, now)
            .map(|e| e.info.clone())
    }

    /// Live campaigns with this owner, oldest first.
    pub fn campaigns_owned_by(&self, owner: &Owner) -> Vec<CampaignInfo> {
        let mut v: Vec<CampaignInfo> = self
            .live_campaigns()
            .into_iter()
            .filter(|c| &c.owner == owner)
            .collect();
        v.sort_by_key(|c| (c.created_at_ms, c.id));
        v
    }

    /// Every live campaign (at most [`crate::campaign::MAX_CAMPAIGNS`]).
    pub fn live_campaigns(&self) -> Vec<CampaignInfo> {
        let now = self.now_ms();
        let t = self.shared().campaigns.read();
        t.campaigns
            .values()
            .filter(|e| e.info.expires_at_ms > now)
            .map(|e| e.info.clone())
            .collect()
    }

    /// Run `f` on the live campaign's report (under a read lock: keep it short).
    pub fn campaign_report<R>(
        &self,
        id: CampaignId,
        f: impl FnOnce(&CampaignInfo, &Report) -> R,
    ) -> Option<R> {
        let now = self.now_ms();
        let t = self.shared().campaigns.read();
        t.live(id.0, now).map(|e| f(&e.info, &e.report))
    }

    /// Count a refusal with SMTP reply `code` for a campaign (a fault plan's
    /// or a limit's). In memory: refusals are not in the log.
    pub fn campaign_refused(&self, id: CampaignId, code: u16) {
        if let Some(e) = self.shared().campaigns.write().campaigns.get_mut(&id.0) {
            e.report.refuse(code);
            e.touch();
        }
    }

    /// Watch the live campaign `id`'s report: the receiver is marked changed
    /// whenever the report changes (a commit, a refusal) and closed once the
    /// campaign is deleted or expired. At most `limit` watchers per campaign.
    pub fn watch_campaign(
        &self,
        id: CampaignId,
        limit: usize,
    ) -> Result<CampaignWatch, WatchCampaignError> {
        let now = self.now_ms();
        // The write lock makes the count and the subscription one step.
        let t = self.shared().campaigns.write();
        let e = t.live(id.0, now).ok_or(WatchCampaignError::NotFound)?;
        if e.changes.receiver_count() >= limit {
            return Err(WatchCampaignError::Full { limit });
        }
        Ok(e.changes.subscribe())
    }

    /// The campaign that takes mail for `rcpt`, if any. A live mailbox at the
    /// same address wins over a campaign's address pattern.
    pub fn campaign_for(&self, rcpt: &str) -> Option<CampaignId> {
        let now = self.now_ms();
        let id = {
            let t = self.shared().campaigns.read();
            if t.campaigns.is_empty() {
                return None;
            }
            t.route(rcpt, now, |d| self.is_local_domain(d))?
        };
        let domain = rcpt.rsplit_once('@').map(|(_, d)| d)?;
        if self.is_local_domain(domain) {
            // Only a pattern can match a served domain itself.
            if let Ok(r) = Recipient::parse(rcpt) {
                if self.mailbox(&r.address).is_some() {
                    return None;
                }
            }
        }
        Some(id)
    }

    /// Stored messages of a `full` or `headers` campaign for `recipient`
    /// (any case), with a sequence above `after`, at most `limit`, oldest
    /// first. A record that fails its checksum is skipped and counted.
    pub fn campaign_messages(
        &self,
        id: CampaignId,
        recipient: &str,
        after: u64,
        limit: usize,
    ) -> Option<Vec<CampaignMessage>> {
        let now = self.now_ms();
        let locs: Vec<(u64, crate::campaign::Loc)> = {
            let t = self.shared().campaigns.read();
            let e = t.live(id.0, now)?;
            e.by_recipient
                .get(&recipient.to_ascii_lowercase())
                .map(|v| {
                    let start = v.partition_point(|(seq, _)| *seq <= after);
                    v.get(start..)
                        .unwrap_or_default()
                        .iter()
                        .take(limit)
                        .copied()
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut out = Vec::with_capacity(locs.len());
        for (_, loc) in locs {
            let seg = self
                .shared()
                .shards
                .get(loc.shard.0)
                .and_then(|s| s.segs.read().get(&loc.seg).map(Arc::clone));
            let Some(seg) = seg else { continue };
            let rec = seg
                .frame(loc.off)
                .ok()
                .filter(|f| f.total_len() == loc.len as usize && f.crc_ok())
                .and_then(|f| {
                    crate::campaign::decode_message(f.payload)
                        .ok()
                        .map(|m| (m, f.payload.len()))
                });
            let Some((m, _)) = rec else {
                self.shared().count_corrupt(1);
                continue;
            };
            out.push(CampaignMessage {
                seq: m.seq,
                recipient: m.recipient,
                envelope_from: m.envelope_from,
                message_id: m.message_id,
                size: m.size,
                sent_at_ms: m.sent_at_ms,
                committed_at_ms: m.committed_at_ms,
                body: bytes::Bytes::copy_from_slice(m.body),
            });
        }
        Some(out)
    }
}

/// One campaign delivery command's recipients.
type CampaignRcpts = Vec<(
    Recipient,
    CampaignId,
    Arc<uncorreo_campaign_report::Scanned>,
)>;

/// The campaign recipients of one delivery, grouped by the campaign's shard,
/// with the header scan done once per latency header name.
#[derive(Default)]
pub(crate) struct Groups {
    groups: Vec<(usize, CampaignRcpts, Vec<usize>)>,
    scans: Vec<(String, Arc<uncorreo_campaign_report::Scanned>)>,
}

impl Groups {
    /// Take `rcpt` (slot `i`) if a campaign takes its mail; else hand it back.
    pub(crate) fn route(
        &mut self,
        engine: &Engine,
        rcpt: Recipient,
        i: usize,
        raw: &[u8],
    ) -> Option<Recipient> {
        let Some(id) = engine.campaign_for(&rcpt.address.to_string()) else {
            return Some(rcpt);
        };
        let header = engine
            .campaign(id)
            .map_or_else(|| "Date".to_owned(), |c| c.sent_at_header);
        let scanned = match self.scans.iter().find(|(h, _)| *h == header) {
            Some((_, s)) => Arc::clone(s),
            None => {
                let s = Arc::new(uncorreo_campaign_report::scan(raw, &header));
                self.scans.push((header, Arc::clone(&s)));
                s
            }
        };
        let shard = engine.shared().shard_of_id(id.0);
        match self.groups.iter_mut().find(|g| g.0 == shard) {
            Some(g) => {
                g.1.push((rcpt, id, scanned));
                g.2.push(i);
            }
            None => self
                .groups
                .push((shard, vec![(rcpt, id, scanned)], vec![i])),
        }
        None
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.groups.len()
    }

    pub(crate) fn into_groups(self) -> Vec<(usize, CampaignRcpts, Vec<usize>)> {
        self.groups
    }
}

impl Engine {
    /// `resolve` for a campaign's address: refused only when the campaign is full.
    pub(crate) fn resolve_campaign(
        &self,
        rcpt: &str,
        id: CampaignId,
    ) -> Result<Recipient, crate::error::ResolveError> {
        let r = Recipient::parse(rcpt).map_err(|_| crate::error::ResolveError::BadAddress)?;
        let full = self
            .campaign(id)
            .is_none_or(|c| c.messages >= crate::campaign::MAX_CAMPAIGN_MESSAGES);
        if full {
            return Err(crate::error::ResolveError::MailboxFull);
        }
        Ok(r)
    }
}
