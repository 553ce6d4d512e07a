//! The nouns the engine speaks in: configuration, addresses, mailboxes,
//! messages, users, keys and events.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// The append completes only after the batch holding it is `fdatasync`'d. The default.
    #[default]
    Always,
    /// The append completes after `pwrite`, without any sync. For throwaway load
    /// tests only: a crash or power loss can lose acknowledged mail.
    NeverUnsafeForLoadTests,
}

/// Engine settings. `Default` gives the embedded defaults of `uncorreo serve`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Directory holding the log segments (and index snapshots).
    pub data_dir: PathBuf,
    /// Number of log shards, each with its own writer thread; 0 means one per core.
    pub shards: usize,
    /// A segment is sealed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// Durability of an acknowledged append.
    pub durability: Durability,
    /// Upper bound on the bytes gathered into one write + sync.
    pub batch_max_bytes: usize,
    /// Appends waiting for a writer, per shard; past it appends fail with
    /// [`crate::DeliverError::Saturated`] instead of queueing without bound.
    pub queue_depth: usize,
    /// Domains we accept mail for (lower case). Anything else is foreign.
    pub domains: Vec<String>,
    /// Largest raw message the engine stores, in bytes.
    pub max_message_bytes: usize,
    /// Below this many free bytes on the data dir's filesystem, new mail is
    /// refused with [`crate::DeliverError::DiskFull`] (a temporary failure).
    pub min_free_bytes: u64,
    /// How often the single compaction owner looks for work.
    #[serde(with = "duration_secs")]
    pub compaction_interval: Duration,
    /// A sealed segment whose live fraction falls below this is rewritten.
    pub compaction_live_ratio: f64,
    /// Events buffered per subscriber before it is cut off as too slow.
    pub subscriber_queue: usize,
    /// After a mailbox is deleted or expires, its address cannot be created
    /// again by another owner for this long (its owner may at once), so
    /// late mail for the old owner reaches no stranger. 0 turns it off.
    #[serde(with = "duration_secs")]
    pub address_quarantine: Duration,
    /// In cluster mode, the partition of a mailbox's address (SCALE.md). It
    /// becomes the top bits of the mailbox's id, so the ids of two
    /// partitions never meet on any host and a mailbox moved to another
    /// host keeps its id. Set by `[cluster]`, never read from a file.
    #[serde(skip)]
    pub mailbox_id_prefix: MailboxIdPrefix,
}

/// Where a mailbox id's prefix starts: ids stay below 2^53, so JSON clients
/// that read numbers as doubles still read them exactly.
pub const MAILBOX_ID_PREFIX_SHIFT: u32 = 43;
/// The bits of a mailbox id under its prefix: `counter * shards + shard`.
pub const MAILBOX_ID_LOW_MASK: u64 = (1 << MAILBOX_ID_PREFIX_SHIFT) - 1;
/// The largest prefix (10 bits: 1,024 partitions).
pub const MAX_MAILBOX_ID_PREFIX: u16 = (1 << 10) - 1;

/// The prefix of new mailbox ids, from their address (none: 0).
#[derive(Clone, Default)]
pub struct MailboxIdPrefix(Option<std::sync::Arc<PrefixFn>>);

type PrefixFn = dyn Fn(&Address) -> u16 + Send + Sync;

impl MailboxIdPrefix {
    /// Ids prefixed with `prefix(address)`, which must be at most
    /// [`MAX_MAILBOX_ID_PREFIX`] (larger values are cut to their low bits).
    pub fn new(prefix: impl Fn(&Address) -> u16 + Send + Sync + 'static) -> MailboxIdPrefix {
        MailboxIdPrefix(Some(std::sync::Arc::new(prefix)))
    }

    /// The prefix bits of a new mailbox at `address`.
    pub(crate) fn bits(&self, address: &Address) -> u64 {
        self.0.as_ref().map_or(0, |prefix| {
            u64::from(prefix(address) & MAX_MAILBOX_ID_PREFIX) << MAILBOX_ID_PREFIX_SHIFT
        })
    }
}

impl std::fmt::Debug for MailboxIdPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "MailboxIdPrefix(partition)"
        } else {
            "MailboxIdPrefix(none)"
        })
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            shards: 0,
            segment_bytes: 64 * 1024 * 1024,
            durability: Durability::Always,
            batch_max_bytes: 256 * 1024,
            queue_depth: 4096,
            domains: vec!["uncorreo.test".to_owned()],
            max_message_bytes: 25 * 1024 * 1024,
            min_free_bytes: 256 * 1024 * 1024,
            compaction_interval: Duration::from_secs(60),
            compaction_live_ratio: 0.5,
            subscriber_queue: 1024,
            address_quarantine: Duration::from_secs(24 * 3600),
            mailbox_id_prefix: MailboxIdPrefix::default(),
        }
    }
}

mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        if !(secs.is_finite() && secs >= 0.0) {
            return Err(serde::de::Error::custom(
                "duration must be a non-negative number of seconds",
            ));
        }
        Ok(Duration::from_secs_f64(secs))
    }
}

/// A mailbox address, normalised: local part and domain in lower case, no plus tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Address {
    local: String,
    domain: String,
}

/// Longest local part we accept (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// Longest domain we accept (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;

/// Why a string is not an address we can hold a mailbox for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// No `@`, or an empty side.
    #[error("not of the form local@domain")]
    Malformed,
    /// Local part longer than 64 or domain longer than 255 octets.
    #[error("address too long")]
    TooLong,
    /// Characters we never put in a mailbox name. We allow only the RFC 5321
    /// dot-atom subset `[a-z0-9._-]` in local parts: quoted strings, `%`, `!`
    /// and source routes are the tools of relay tricks, and a disposable inbox
    /// never needs them.
    #[error("characters not allowed in a mailbox address")]
    BadCharacters,
}

impl Address {
    /// Parse and normalise `local@domain` (no plus tag allowed here; see
    /// [`Recipient::parse`] for addresses as senders write them).
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let (local, domain) = s.rsplit_once('@').ok_or(AddressError::Malformed)?;
        Self::from_parts(local, domain)
    }

    /// From halves already checked and normalised (read back from the index).
    pub(crate) fn from_normalised(local: String, domain: String) -> Self {
        Self { local, domain }
    }

    /// Build from the two halves, normalising case and checking characters.
    pub fn from_parts(local: &str, domain: &str) -> Result<Self, AddressError> {
        if local.is_empty() || domain.is_empty() {
            return Err(AddressError::Malformed);
        }
        if local.len() > MAX_LOCAL_PART || domain.len() > MAX_DOMAIN {
            return Err(AddressError::TooLong);
        }
        let local_ok = local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        let domain_ok = domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
            && !domain.starts_with(['.', '-'])
            && !domain.ends_with(['.', '-'])
            && !domain.contains("..");
        if !local_ok || !domain_ok {
            return Err(AddressError::BadCharacters);
        }
        Ok(Self {
            local: local.to_ascii_lowercase(),
            domain: domain.to_ascii_lowercase(),
        })
    }

    /// The local part (lower case, no tag).
    pub fn local(&self) -> &str {
        &self.local
    }
    /// The domain (lower case).
    pub fn domain(&self) -> &str {
        &self.domain
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A recipient as a sender wrote it: the mailbox address plus an optional
/// plus-addressing tag (`box+tag@domain` → `box@domain`, tag `tag`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Recipient {
    /// The mailbox this recipient delivers to.
    pub address: Address,
    /// The `+tag`, kept as written (case preserved), without the `+`.
    pub plus_tag: Option<String>,
}

/// Longest plus tag we keep.
pub const MAX_PLUS_TAG: usize = 64;

impl Recipient {
    /// Split off a plus tag and parse the rest as an [`Address`].
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let (local, domain) = s.rsplit_once('@').ok_or(AddressError::Malformed)?;
        let (base, tag) = match local.split_once('+') {
            Some((base, tag)) => (base, Some(tag)),
            None => (local, None),
        };
        if let Some(tag) = tag {
            if tag.len() > MAX_PLUS_TAG {
                return Err(AddressError::TooLong);
            }
            if !tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
            {
                return Err(AddressError::BadCharacters);
            }
        }
        Ok(Self {
            address: Address::from_parts(base, domain)?,
            plus_tag: tag.filter(|t| !t.is_empty()).map(str::to_owned),
        })
    }
}

/// Engine-assigned mailbox identity; unique and never reused, even when an
/// address is deleted and created again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MailboxId(pub u64);

/// Engine-assigned user identity; unique and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(pub u64);

/// Engine-assigned API key identity; unique and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ApiKeyId(pub u64);

/// A message's identity: its mailbox and its sequence number in that mailbox.
/// Rendered as `{mailbox:x}-{seq}` (e.g. `1a-42`), which is what the API and
/// events show, and parsed back without any lookup table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    /// The mailbox holding the message.
    pub mailbox: MailboxId,
    /// The message's sequence number in that mailbox (starts at 1).
    pub seq: u64,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}-{}", self.mailbox.0, self.seq)
    }
}

/// A string that is not a [`MessageId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a message id")]
pub struct BadMessageId;

impl FromStr for MessageId {
    type Err = BadMessageId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (mb, seq) = s.split_once('-').ok_or(BadMessageId)?;
        if mb.is_empty() || mb.len() > 16 || seq.is_empty() || seq.len() > 20 {
            return Err(BadMessageId);
        }
        let mailbox = u64::from_str_radix(mb, 16).map_err(|_| BadMessageId)?;
        let seq = seq.parse::<u64>().map_err(|_| BadMessageId)?;
        Ok(Self {
            mailbox: MailboxId(mailbox),
            seq,
        })
    }
}

/// Who may see a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Created without credentials; the SHA-256 of its session token is the only key.
    Anonymous {
        /// SHA-256 of the 32-byte session token handed out once at creation.
        token_hash: [u8; 32],
    },
    /// Owned by a user (through one of their API keys).
    User(UserId),
}

/// What to create.
#[derive(Debug, Clone)]
pub struct NewMailbox {
    /// The address; its domain must be one of [`EngineConfig::domains`].
    pub address: Address,
    /// Who owns it.
    pub owner: Owner,
    /// When it stops receiving and its messages become garbage (ms since epoch).
    pub expires_at_ms: u64,
    /// Quota: at most this many stored messages (from the owner's plan).
    pub max_messages: u32,
}

/// A live mailbox as the engine sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    /// Identity.
    pub id: MailboxId,
    /// Address.
    pub address: Address,
    /// Owner.
    pub owner: Owner,
    /// Creation time (ms since epoch).
    pub created_at_ms: u64,
    /// Expiry time (ms since epoch).
    pub expires_at_ms: u64,
    /// Quota on stored messages.
    pub max_messages: u32,
    /// Messages stored now.
    pub message_count: u32,
    /// Highest sequence number ever assigned in this mailbox (0 if none).
    pub last_seq: u64,
}

/// The listing view of a message, extracted once at delivery and stored in
/// the log next to the raw bytes; defined by `uncorreo-mail`, which derives it.
pub use uncorreo_mail::Summary as MessageSummary;

/// A stored message, as listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    /// Identity (mailbox + seq).
    pub id: MessageId,
    /// When the engine committed it (ms since epoch).
    pub received_at_ms: u64,
    /// Size of the raw bytes.
    pub size: u32,
    /// The first of `plus_tags` (kept for clients that know one tag).
    pub plus_tag: Option<String>,
    /// Every plus tag the delivery named this mailbox with (`box+a@`,
    /// `box+b@` → `["a", "b"]`), first seen first, no two equal ignoring
    /// case; empty when it was sent to the bare address only. One delivery
    /// stores one copy per mailbox, whatever the number of tags.
    pub plus_tags: Vec<String>,
    /// Envelope sender (SMTP `MAIL FROM`, or SES `mail.source`); empty for `<>`.
    pub envelope_from: String,
    /// Header-derived summary.
    pub summary: MessageSummary,
}

/// One entry of a listing, in sequence order.
///
/// A stored message whose record fails its checksum is quarantined (never
/// served again) but keeps its sequence as a [`ListEntry::Gap`], so a
/// listing or a replay never silently comes back short: a client that reads
/// a page sees the gap and moves past it, instead of taking a short page for
/// "caught up".
#[derive(Debug, Clone, PartialEq, Eq)]
// Nearly every entry is a message and a page is one `Vec`: boxing each
// would cost an allocation per entry to shrink the rare gap.
#[allow(clippy::large_enum_variant)]
pub enum ListEntry {
    /// A message, as listings show it.
    Message(MessageMeta),
    /// A quarantined (corrupt) message: its sequence, and nothing else.
    Gap {
        /// Its sequence in the mailbox.
        seq: u64,
    },
}

impl ListEntry {
    /// The entry's sequence in the mailbox.
    pub fn seq(&self) -> u64 {
        match self {
            Self::Message(m) => m.id.seq,
            Self::Gap { seq } => *seq,
        }
    }
}

/// One message handed to [`Engine::deliver`](crate::Engine::deliver).
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The raw message exactly as it will be stored and served (the ingest path
    /// has already prepended its `Received:` line).
    pub raw: bytes::Bytes,
    /// Envelope sender; empty for the null sender `<>`.
    pub envelope_from: String,
    /// Who it is for; each must have been resolved with
    /// [`Engine::resolve`](crate::Engine::resolve). One copy is stored per
    /// mailbox, carrying the plus tags of all its recipients.
    pub recipients: Vec<Recipient>,
    /// For idempotent ingest (the SNS `MessageId`): if a delivery with this key
    /// was committed before (also before a restart), nothing is stored and the
    /// outcome is [`DeliveryOutcome::Duplicate`]. The key is recorded in the
    /// same durable batch as the messages.
    pub dedupe_key: Option<String>,
}

/// What [`Engine::deliver`](crate::Engine::deliver) did; returned only once
/// everything it stored is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Stored for these recipients; the others were refused at commit time
    /// (e.g. expired or filled up between RCPT and the end of DATA).
    Delivered {
        /// One per stored copy: one per mailbox, however many of the
        /// recipients (plus tags) named it.
        stored: Vec<MessageId>,
        /// Recipients refused at commit time, with why.
        refused: Vec<(Recipient, crate::ResolveError)>,
    },
    /// The dedupe key was seen before; nothing was stored.
    Duplicate,
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// Identity.
    pub id: UserId,
    /// Display name or e-mail, free text.
    pub name: String,
    /// Creation time (ms since epoch).
    pub created_at_ms: u64,
    /// Subscriptions, oldest first.
    pub subscriptions: Vec<Subscription>,
}

/// One operator action as the audit trail keeps it (an `AdminAudit`
/// record, FORMAT.md kind 12): who did what to which thing, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When it was done (ms since epoch).
    pub at_ms: u64,
    /// Who: the operator channel's view of the caller (e.g. `uid 0 (root)`).
    pub actor: String,
    /// What, as the command names it (e.g. `key revoke`).
    pub action: String,
    /// To what (e.g. `user 3`, `key 7`, `mailbox a@b.test`).
    pub target: String,
}

/// A user's subscription to a plan (plans themselves live in configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Plan name as in the config.
    pub plan: String,
    /// Start (ms since epoch).
    pub starts_at_ms: u64,
    /// End (ms since epoch), `None` for open-ended.
    pub ends_at_ms: Option<u64>,
}

/// An API key; only its SHA-256 is ever stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    /// Identity.
    pub id: ApiKeyId,
    /// Owner.
    pub user: UserId,
    /// SHA-256 of the full key.
    pub hash: [u8; 32],
    /// First 12 characters of the key, for display.
    pub prefix: String,
    /// Creation time (ms since epoch).
    pub created_at_ms: u64,
    /// Revocation time, if revoked.
    pub revoked_at_ms: Option<u64>,
}

/// Published to subscribers after the message it names is durable.
/// Carries ids and a summary, never the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The address of the mailbox.
    pub address: Address,
    /// The message (its `seq` is the mailbox sequence used for resume).
    pub id: MessageId,
    /// Commit time (ms since epoch).
    pub received_at_ms: u64,
    /// Raw size.
    pub size: u32,
    /// The first of `plus_tags`.
    pub plus_tag: Option<String>,
    /// Every plus tag it arrived for (see [`MessageMeta::plus_tags`]).
    pub plus_tags: Vec<String>,
    /// Header summary.
    pub summary: MessageSummary,
}

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriptionEnd {
    /// The subscriber fell more than [`EngineConfig::subscriber_queue`] events
    /// behind and was cut off; resume from the last sequence seen.
    #[error("subscriber too slow; resume from the last sequence seen")]
    Lagged,
    /// The mailbox was deleted or expired.
    #[error("mailbox gone")]
    MailboxGone,
    /// The engine is shutting down.
    #[error("engine closed")]
    Closed,
}

/// Point-in-time numbers for `/metrics` and `/ready`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    /// Live mailboxes.
    pub mailboxes: u64,
    /// Live messages.
    pub messages: u64,
    /// Users (enabled or not).
    pub users: u64,
    /// Segment files on disk.
    pub segments: u64,
    /// Bytes of segment files on disk.
    pub disk_bytes: u64,
    /// Appends waiting for a writer, summed over shards.
    pub queue_depth: u64,
    /// Batches committed since start.
    pub batches_committed: u64,
    /// Records committed since start.
    pub records_committed: u64,
    /// Compaction runs since start.
    pub compaction_runs: u64,
    /// Bytes reclaimed by compaction since start.
    pub compaction_reclaimed_bytes: u64,
    /// Records found corrupt (bad CRC) and quarantined since start.
    pub corrupt_records: u64,
    /// Live event subscribers.
    pub subscribers: u64,
    /// Events published since start.
    pub events_published: u64,
    /// True once an fsync/write failed or an engine thread panicked: some
    /// or all shards refuse writes until restarted (see [`EngineHealth`]).
    pub poisoned: bool,
}

/// Which parts of the engine have failed and refuse work until a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineHealth {
    /// Shards whose write or sync failed, or whose writer thread panicked.
    /// Mail for mailboxes in other shards is still accepted.
    pub failed_shards: Vec<usize>,
    /// The compaction owner thread panicked; every shard refuses writes.
    pub compaction_failed: bool,
}

impl EngineHealth {
    /// True when nothing has failed.
    pub fn is_healthy(&self) -> bool {
        self.failed_shards.is_empty() && !self.compaction_failed
    }
}

/// What one compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Whole segments unlinked because nothing in them was live.
    pub segments_dropped: u64,
    /// Segments rewritten because their live fraction was under the threshold.
    pub segments_rewritten: u64,
    /// Bytes no longer on disk.
    pub bytes_reclaimed: u64,
}
