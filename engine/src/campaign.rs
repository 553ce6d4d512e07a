//! Load-testing campaigns (issue #18): an address space of its own (the
//! catch-all subdomain `c-<id>.<served domain>` and an optional local-part
//! prefix such as `load-*@<served domain>`), mail stored per recipient
//! address under the campaign without a mailbox per address, and a report
//! (`uncorreo-campaign-report`) kept up to date at each commit and rebuilt
//! from the log at open.
//!
//! Records (FORMAT.md, "Campaign records"): `CampaignCreated` and
//! `CampaignDeleted` in shard 0 (so one writer checks address patterns
//! against each other), `CampaignMessage` in the campaign's own shard
//! (`id % shards`). Routing sits behind `Engine::resolve` / `Engine::deliver`,
//! so SMTP, the SES webhook and HTTP send all reach campaigns.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use uncorreo_campaign_report::{Arrival, Report};

use crate::codec::{Dec, DecodeError, Enc};
use crate::ids::{SegmentNo, ShardIndex};
use crate::types::Owner;

/// Most live campaigns in the whole appliance (also bounds the metric labels).
pub const MAX_CAMPAIGNS: usize = 256;
/// Most messages one campaign stores or counts; past it RCPT is `452 4.2.2`.
pub const MAX_CAMPAIGN_MESSAGES: u64 = 1_000_000;
/// Longest campaign name, in characters (checked by the API).
pub const MAX_CAMPAIGN_NAME: usize = 200;
/// Longest name of the header the arrival latency is measured from.
pub const MAX_SENT_AT_HEADER: usize = 64;
/// Shortest local-part prefix of an address pattern (so one campaign cannot
/// catch a whole domain).
pub const MIN_PATTERN_PREFIX: usize = 3;
/// Longest local-part prefix of an address pattern.
pub const MAX_PATTERN_PREFIX: usize = 32;

/// A campaign's identity: a random 48-bit number, shown as lowercase hex
/// (its catch-all domain is `c-<hex>.<served domain>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CampaignId(pub u64);

impl CampaignId {
    /// A fresh random id (the caller checks it is not taken; creation does too).
    pub fn random() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let v = h.finish() & 0xffff_ffff_ffff;
        Self(v.max(1))
    }

    /// Parse the hex form.
    pub fn parse(s: &str) -> Option<Self> {
        if s.is_empty()
            || s.len() > 12
            || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        u64::from_str_radix(s, 16)
            .ok()
            .filter(|v| *v != 0)
            .map(Self)
    }

    /// The catch-all domain of this campaign under `served`.
    pub fn domain(self, served: &str) -> String {
        format!("c-{self}.{served}")
    }
}

impl fmt::Display for CampaignId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// How much of each message a campaign keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StoreMode {
    /// The raw message (with our trace header).
    Full = 0,
    /// The header section only.
    Headers = 1,
    /// Only the metadata (envelope, Message-ID, sizes, timestamps).
    Count = 2,
}

impl StoreMode {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Full,
            1 => Self::Headers,
            2 => Self::Count,
            _ => return None,
        })
    }
}

/// A local-part prefix on one served domain: `load-*@example.test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPattern {
    /// The local part starts with this (lowercase).
    pub prefix: String,
    /// On this served domain (lowercase).
    pub domain: String,
}

impl AddressPattern {
    /// Parse `prefix*@domain`: the prefix is 3 to 32 of `a-z0-9._-`.
    pub fn parse(s: &str) -> Option<Self> {
        let (local, domain) = s.rsplit_once('@')?;
        let prefix = local.strip_suffix('*')?.to_ascii_lowercase();
        let ok = (MIN_PATTERN_PREFIX..=MAX_PATTERN_PREFIX).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        (ok && !domain.is_empty()).then(|| Self {
            prefix,
            domain: domain.to_ascii_lowercase(),
        })
    }

    fn overlaps(&self, other: &Self) -> bool {
        self.domain == other.domain
            && (self.prefix.starts_with(&other.prefix) || other.prefix.starts_with(&self.prefix))
    }
}

impl fmt::Display for AddressPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}*@{}", self.prefix, self.domain)
    }
}

/// What [`crate::Engine::create_campaign`] is asked to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCampaign {
    /// Its id ([`CampaignId::random`]).
    pub id: CampaignId,
    /// Who may read and delete it.
    pub owner: Owner,
    /// Free text.
    pub name: String,
    /// When it stops taking mail and is dropped, ms.
    pub expires_at_ms: u64,
    /// An address pattern besides the catch-all subdomain.
    pub pattern: Option<AddressPattern>,
    /// What it keeps of each message.
    pub store: StoreMode,
    /// The header the arrival latency is measured from (`Date` by default).
    pub sent_at_header: String,
}

/// A live campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignInfo {
    /// Identity.
    pub id: CampaignId,
    /// Who may read and delete it.
    pub owner: Owner,
    /// Free text.
    pub name: String,
    /// Creation time, ms.
    pub created_at_ms: u64,
    /// Expiry, ms.
    pub expires_at_ms: u64,
    /// The optional address pattern.
    pub pattern: Option<AddressPattern>,
    /// What it keeps of each message.
    pub store: StoreMode,
    /// The latency header.
    pub sent_at_header: String,
    /// Messages accepted so far.
    pub messages: u64,
}

/// One message of a campaign, as stored.
#[derive(Debug, Clone)]
pub struct CampaignMessage {
    /// Its sequence in the campaign (from 1).
    pub seq: u64,
    /// The envelope recipient as written.
    pub recipient: String,
    /// The envelope sender.
    pub envelope_from: String,
    /// Its `Message-ID:`.
    pub message_id: Option<String>,
    /// Bytes as received.
    pub size: u32,
    /// The sender's time, ms.
    pub sent_at_ms: Option<u64>,
    /// When it was durable, ms.
    pub committed_at_ms: u64,
    /// The raw message (`full`), its header section (`headers`) or nothing (`count`).
    pub body: bytes::Bytes,
}

// ------------------------------------------------------------------ records

/// `CampaignCreated` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CreatedRec {
    pub(crate) info: CampaignInfo,
}

/// `CampaignMessage` payload (the body borrowed from the frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MessageRec<'a> {
    pub(crate) campaign: u64,
    pub(crate) seq: u64,
    pub(crate) committed_at_ms: u64,
    pub(crate) size: u32,
    pub(crate) sent_at_ms: Option<u64>,
    pub(crate) recipient: String,
    pub(crate) envelope_from: String,
    pub(crate) message_id: Option<String>,
    pub(crate) body: &'a [u8],
}

pub(crate) fn encode_created(buf: &mut Vec<u8>, c: &CampaignInfo) {
    let mut e = Enc(buf);
    e.u64(c.id.0);
    e.u64(c.created_at_ms);
    e.u64(c.expires_at_ms);
    e.owner(&c.owner);
    e.u8(c.store as u8);
    e.str(&c.name);
    e.str(&c.sent_at_header);
    e.opt_str(c.pattern.as_ref().map(|p| p.prefix.as_str()));
    e.opt_str(c.pattern.as_ref().map(|p| p.domain.as_str()));
}

pub(crate) fn decode_created(payload: &[u8]) -> Result<CreatedRec, DecodeError> {
    let mut d = Dec::new(payload);
    let id = CampaignId(d.u64()?);
    let created_at_ms = d.u64()?;
    let expires_at_ms = d.u64()?;
    let owner = d.owner()?;
    let store = StoreMode::from_u8(d.u8()?).ok_or(DecodeError::Invalid)?;
    let name = d.str()?;
    let sent_at_header = d.str()?;
    let pattern = match (d.opt_str()?, d.opt_str()?) {
        (Some(prefix), Some(domain)) => Some(AddressPattern { prefix, domain }),
        (None, None) => None,
        _ => return Err(DecodeError::Invalid),
    };
    d.finish()?;
    Ok(CreatedRec {
        info: CampaignInfo {
            id,
            owner,
            name,
            created_at_ms,
            expires_at_ms,
            pattern,
            store,
            sent_at_header,
            messages: 0,
        },
    })
}

pub(crate) fn encode_deleted(buf: &mut Vec<u8>, id: u64, target_seg: u32) {
    let mut e = Enc(buf);
    e.u64(id);
    e.u32(target_seg);
}

pub(crate) fn decode_deleted(payload: &[u8]) -> Result<(u64, u32), DecodeError> {
    let mut d = Dec::new(payload);
    let r = (d.u64()?, d.u32()?);
    d.finish()?;
    Ok(r)
}

pub(crate) fn encode_message(buf: &mut Vec<u8>, m: &MessageRec<'_>) {
    let mut e = Enc(buf);
    e.u64(m.campaign);
    e.u64(m.seq);
    e.u64(m.committed_at_ms);
    e.u32(m.size);
    e.opt_u64(m.sent_at_ms);
    e.str(&m.recipient);
    e.str(&m.envelope_from);
    e.opt_str(m.message_id.as_deref());
    e.u32(m.body.len() as u32);
    e.bytes(m.body);
}

pub(crate) fn decode_message(payload: &[u8]) -> Result<MessageRec<'_>, DecodeError> {
    let mut d = Dec::new(payload);
    let campaign = d.u64()?;
    let seq = d.u64()?;
    let committed_at_ms = d.u64()?;
    let size = d.u32()?;
    let sent_at_ms = d.opt_u64()?;
    let recipient = d.str()?;
    let envelope_from = d.str()?;
    let message_id = d.opt_str()?;
    let n = d.u32()? as usize;
    let body = d.take(n)?;
    d.finish()?;
    Ok(MessageRec {
        campaign,
        seq,
        committed_at_ms,
        size,
        sent_at_ms,
        recipient,
        envelope_from,
        message_id,
        body,
    })
}

// -------------------------------------------------------------- the table

/// Where a campaign record sits: its shard, segment, offset and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) shard: ShardIndex,
    pub(crate) seg: SegmentNo,
    pub(crate) off: u32,
    pub(crate) len: u32,
}

/// One live campaign in memory.
pub(crate) struct Entry {
    pub(crate) info: CampaignInfo,
    /// Its `CampaignCreated` record.
    pub(crate) created: Loc,
    pub(crate) report: Report,
    /// Last sequence committed.
    pub(crate) last_seq: u64,
    /// Stored messages by lowercased recipient: (seq, record), for
    /// `full`/`headers` campaigns only (12 bytes + the key per message).
    pub(crate) by_recipient: HashMap<String, Vec<(u64, Loc)>>,
    /// Bytes of its records per (shard, segment), so deleting or expiring
    /// it can mark them dead for compaction without a scan.
    pub(crate) bytes_by_segment: HashMap<(ShardIndex, SegmentNo), u64>,
    /// Bumped when its report changes, while someone watches
    /// ([`crate::Engine::watch_campaign`]); dropped with the entry, which
    /// tells every watcher the campaign ended (deleted or expired).
    pub(crate) changes: tokio::sync::watch::Sender<u64>,
}

impl Entry {
    fn new(info: CampaignInfo, created: Loc) -> Self {
        let mut bytes_by_segment = HashMap::new();
        bytes_by_segment.insert((created.shard, created.seg), u64::from(created.len));
        Self {
            info,
            created,
            report: Report::default(),
            last_seq: 0,
            by_recipient: HashMap::new(),
            bytes_by_segment,
            changes: tokio::sync::watch::channel(0).0,
        }
    }

    /// Its report changed: wake the watchers, if any. Called under the
    /// table's write lock, and watchers subscribe under it too, so a
    /// watcher either sees the change in the report it reads after
    /// subscribing or is woken for it; without watchers it costs one load.
    pub(crate) fn touch(&self) {
        if self.changes.receiver_count() > 0 {
            self.changes.send_modify(|v| *v = v.wrapping_add(1));
        }
    }
}

/// Every live campaign and the routes to it.
#[derive(Default)]
pub(crate) struct Table {
    pub(crate) campaigns: BTreeMap<u64, Entry>,
}

/// Why a campaign could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateCampaignError {
    /// The id or the address pattern is taken by a live campaign.
    #[error("a live campaign has that id or an overlapping address pattern")]
    Taken,
    /// The pattern's domain is not one we serve.
    #[error("the pattern's domain is not served here")]
    ForeignDomain,
    /// [`MAX_CAMPAIGNS`] are live.
    #[error("too many live campaigns")]
    LimitReached,
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] crate::error::WriteError),
}

impl From<crate::error::BatchFailure> for CreateCampaignError {
    fn from(e: crate::error::BatchFailure) -> Self {
        Self::Storage(e.into())
    }
}

impl Table {
    /// The live campaign `id` at `now`.
    pub(crate) fn live(&self, id: u64, now: u64) -> Option<&Entry> {
        self.campaigns
            .get(&id)
            .filter(|e| e.info.expires_at_ms > now)
    }

    /// Which campaign takes mail for `rcpt` (`local@domain`, domain already
    /// lowercase or not), given the served domains.
    pub(crate) fn route(
        &self,
        rcpt: &str,
        now: u64,
        is_served: impl Fn(&str) -> bool,
    ) -> Option<CampaignId> {
        let (local, domain) = rcpt.rsplit_once('@')?;
        let domain = domain.to_ascii_lowercase();
        if let Some(rest) = domain.strip_prefix("c-") {
            if let Some((hex, served)) = rest.split_once('.') {
                if let Some(id) = CampaignId::parse(hex) {
                    if is_served(served) && self.live(id.0, now).is_some() {
                        return Some(id);
                    }
                }
            }
        }
        if self.campaigns.values().all(|e| e.info.pattern.is_none()) {
            return None;
        }
        let local = local.to_ascii_lowercase();
        self.campaigns
            .values()
            .filter(|e| e.info.expires_at_ms > now)
            .find(|e| {
                e.info
                    .pattern
                    .as_ref()
                    .is_some_and(|p| p.domain == domain && local.starts_with(&p.prefix))
            })
            .map(|e| e.info.id)
    }

    /// Can `new` be created now (checked on shard 0's writer, against the
    /// committed table plus `staged` in the same batch)?
    pub(crate) fn check_new(
        &self,
        new: &NewCampaign,
        staged: &[CampaignInfo],
        now: u64,
    ) -> Result<(), CreateCampaignError> {
        let live = self
            .campaigns
            .values()
            .filter(|e| e.info.expires_at_ms > now);
        let live: Vec<&CampaignInfo> = live.map(|e| &e.info).chain(staged).collect();
        if live.iter().any(|c| c.id == new.id) || self.campaigns.contains_key(&new.id.0) {
            return Err(CreateCampaignError::Taken);
        }
        if let Some(p) = &new.pattern {
            if live
                .iter()
                .any(|c| c.pattern.as_ref().is_some_and(|q| q.overlaps(p)))
            {
                return Err(CreateCampaignError::Taken);
            }
        }
        if live.len() >= MAX_CAMPAIGNS {
            return Err(CreateCampaignError::LimitReached);
        }
        Ok(())
    }

    pub(crate) fn insert(&mut self, info: CampaignInfo, created: Loc) {
        self.campaigns.insert(info.id.0, Entry::new(info, created));
    }

    /// Take out every campaign expired at `now` (the compaction thread's
    /// expiry step; their records are dead from now on).
    pub(crate) fn take_expired(&mut self, now: u64) -> Vec<Entry> {
        let ids: Vec<u64> = self
            .campaigns
            .values()
            .filter(|e| e.info.expires_at_ms <= now)
            .map(|e| e.info.id.0)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.campaigns.remove(&id))
            .collect()
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<Entry> {
        self.campaigns.remove(&id)
    }

    /// A committed message (live, or from the log at open).
    pub(crate) fn add_message(&mut self, m: &MessageRec<'_>, loc: Loc) {
        let Some(e) = self.campaigns.get_mut(&m.campaign) else {
            return;
        };
        e.last_seq = e.last_seq.max(m.seq);
        e.info.messages += 1;
        *e.bytes_by_segment.entry((loc.shard, loc.seg)).or_default() += u64::from(loc.len);
        e.report.accept(&Arrival {
            message_id: m.message_id.as_deref(),
            recipient: &m.recipient,
            size: u64::from(m.size),
            sent_at_ms: m.sent_at_ms,
            committed_at_ms: m.committed_at_ms,
        });
        if e.info.store != StoreMode::Count {
            e.by_recipient
                .entry(m.recipient.to_ascii_lowercase())
                .or_default()
                .push((m.seq, loc));
        }
        e.touch();
    }

    /// Compaction moved `shard`'s records from `old` to `new` (`moved`: old
    /// offset → new offset).
    pub(crate) fn relocate(
        &mut self,
        shard: ShardIndex,
        old: SegmentNo,
        new: SegmentNo,
        moved: &HashMap<u32, u32>,
    ) {
        let fix = |l: &mut Loc| {
            if l.shard == shard && l.seg == old {
                if let Some(off) = moved.get(&l.off) {
                    l.seg = new;
                    l.off = *off;
                }
            }
        };
        for e in self.campaigns.values_mut() {
            if let Some(b) = e.bytes_by_segment.remove(&(shard, old)) {
                *e.bytes_by_segment.entry((shard, new)).or_default() += b;
            }
            fix(&mut e.created);
            for locs in e.by_recipient.values_mut() {
                for (_, l) in locs.iter_mut() {
                    fix(l);
                }
            }
        }
    }

    /// Is a campaign record (kind 20..=22) of `shard` at (`seg`, `off`) still
    /// needed? See FORMAT.md, "Campaign records".
    pub(crate) fn is_live(
        &self,
        (kind, payload): (u8, &[u8]),
        (shard, seg, off): (ShardIndex, SegmentNo, u32),
        segs: &std::collections::HashSet<SegmentNo>,
        now: u64,
    ) -> bool {
        let mut d = Dec::new(payload);
        let Ok(id) = d.u64() else { return false };
        match kind {
            20 => self.live(id, now).is_some_and(|e| {
                e.created.shard == shard && e.created.seg == seg && e.created.off == off
            }),
            // A tombstone is kept while the segment of the creation it ends is there.
            21 => decode_deleted(payload)
                .is_ok_and(|(_, t)| SegmentNo(t) != seg && segs.contains(&SegmentNo(t))),
            22 => self.live(id, now).is_some(),
            _ => false,
        }
    }
}

/// Campaign records gathered from every shard at open, in any order
/// (compaction may have moved a campaign's creation past its messages).
#[derive(Default)]
pub(crate) struct Recovered {
    pub(crate) created: Vec<(CampaignInfo, Loc)>,
    pub(crate) deleted: Vec<u64>,
    /// (record fields without the body, body length kept, record place)
    pub(crate) messages: Vec<(MessageRec<'static>, Loc)>,
}

impl Recovered {
    pub(crate) fn append(&mut self, mut other: Recovered) {
        self.created.append(&mut other.created);
        self.deleted.append(&mut other.deleted);
        self.messages.append(&mut other.messages);
    }

    /// The table these records describe at `now`.
    pub(crate) fn build(mut self, now: u64) -> Table {
        let mut t = Table::default();
        self.deleted.sort_unstable();
        for (info, loc) in self.created {
            if info.expires_at_ms > now && self.deleted.binary_search(&info.id.0).is_err() {
                t.campaigns.insert(info.id.0, Entry::new(info, loc));
            }
        }
        self.messages.sort_by_key(|(m, _)| (m.campaign, m.seq));
        self.messages.dedup_by_key(|(m, _)| (m.campaign, m.seq));
        for (m, loc) in &self.messages {
            t.add_message(m, *loc);
        }
        t
    }
}

/// A campaign message record's fields without its body (for recovery).
pub(crate) fn without_body(m: MessageRec<'_>) -> MessageRec<'static> {
    MessageRec {
        campaign: m.campaign,
        seq: m.seq,
        committed_at_ms: m.committed_at_ms,
        size: m.size,
        sent_at_ms: m.sent_at_ms,
        recipient: m.recipient,
        envelope_from: m.envelope_from,
        message_id: m.message_id,
        body: &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::UserId;

    #[test]
    fn patterns_need_a_prefix_and_overlap_by_prefix() {
        assert!(AddressPattern::parse("*@x.test").is_none());
        assert!(AddressPattern::parse("lo*@x.test").is_none());
        assert!(AddressPattern::parse("load-@x.test").is_none());
        let a = AddressPattern::parse("Load-*@X.test").expect("valid");
        assert_eq!(a.to_string(), "load-*@x.test");
        let b = AddressPattern::parse("load-a*@x.test").expect("valid");
        let c = AddressPattern::parse("loaf-*@x.test").expect("valid");
        assert!(a.overlaps(&b) && b.overlaps(&a) && !a.overlaps(&c));
    }

    #[test]
    fn ids_round_trip_as_hex() {
        for _ in 0..100 {
            let id = CampaignId::random();
            assert_eq!(CampaignId::parse(&id.to_string()), Some(id));
        }
        assert_eq!(CampaignId::parse("0"), None);
        assert_eq!(CampaignId::parse("XYZ"), None);
    }

    #[test]
    fn records_round_trip() {
        let info = CampaignInfo {
            id: CampaignId(0xabc),
            owner: Owner::User(UserId(7)),
            name: "n".into(),
            created_at_ms: 1,
            expires_at_ms: 2,
            pattern: AddressPattern::parse("load-*@x.test"),
            store: StoreMode::Headers,
            sent_at_header: "X-Sent-At".into(),
            messages: 0,
        };
        let mut buf = Vec::new();
        encode_created(&mut buf, &info);
        assert_eq!(decode_created(&buf).map(|r| r.info), Ok(info));
        let m = MessageRec {
            campaign: 3,
            seq: 4,
            committed_at_ms: 5,
            size: 6,
            sent_at_ms: Some(7),
            recipient: "a@b".into(),
            envelope_from: String::new(),
            message_id: Some("<m@x>".into()),
            body: b"Subject: x\r\n\r\n",
        };
        let mut buf = Vec::new();
        encode_message(&mut buf, &m);
        assert_eq!(decode_message(&buf), Ok(m));
        assert!(decode_message(&buf[..buf.len() - 1]).is_err());
    }
}
