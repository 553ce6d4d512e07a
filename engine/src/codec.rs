//! Byte-level encoding of everything the log stores: the segment header, the
//! record frame, each record kind's payload and the hint file. `FORMAT.md`
//! describes the same bytes in prose; keep the two in step.
//!
//! Encoding is hand-written, little-endian, with length-prefixed fields.
//! Decoding takes untrusted bytes (a corrupt or hostile file) and answers with
//! [`DecodeError`], never a panic: every read goes through [`Dec`], which
//! checks bounds.

use crate::types::{AuditEntry, MessageSummary, Owner, Subscription};

/// First 8 bytes of every segment file.
pub(crate) const SEG_MAGIC: [u8; 8] = *b"UNCORSEG";
/// First 8 bytes of every hint file.
pub(crate) const HINT_MAGIC: [u8; 8] = *b"UNCORHNT";
/// The format version this build writes (FORMAT.md "Versioning policy").
pub(crate) const FORMAT_VERSION: u32 = 3;
/// The oldest format version this build still reads: version 2 only added
/// the tag list to the message meta, a form version 1 never wrote, and
/// version 3 only added the retry records (kinds 16 and 17).
pub(crate) const OLDEST_READABLE_VERSION: u32 = 1;

/// Whether this build reads segments and hints of `version`.
fn readable(version: u32) -> bool {
    (OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version)
}
/// Bytes of the segment header; records start here.
pub(crate) const SEG_HEADER_LEN: usize = 64;
/// Bytes of a record frame's header (len, crc, kind, flags, reserved).
pub(crate) const FRAME_HEADER_LEN: usize = 12;
/// Largest payload a frame may declare. Anything larger is corruption.
pub(crate) const MAX_PAYLOAD: usize = 1 << 30;
/// Fixed prefix of a message payload (mailbox, seq, received_at, meta_len, meta_crc).
pub(crate) const MESSAGE_PREFIX_LEN: usize = 32;
/// Bytes per hint entry.
pub(crate) const HINT_ENTRY_LEN: usize = 28;
/// Bytes of the hint header (magic, version, shard, seg, data_len, count).
pub(crate) const HINT_HEADER_LEN: usize = 32;
/// Segment header flag: the segment was written by compaction (never torn).
pub(crate) const SEG_FLAG_REWRITE: u32 = 1;
/// `supersedes` value meaning "none".
pub(crate) const NO_SEGMENT: u32 = u32::MAX;

/// Why bytes did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// Ran out of bytes.
    #[error("truncated")]
    Truncated,
    /// A field holds a value that cannot be (bad tag, bad UTF-8, bad magic…).
    #[error("invalid field")]
    Invalid,
    /// A checksum did not match.
    #[error("checksum mismatch")]
    Checksum,
}

/// Record kinds. The numbers are on disk: never reuse or renumber one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    MailboxCreated = 1,
    MailboxDeleted = 2,
    Message = 3,
    MessageDeleted = 4,
    UserCreated = 5,
    SubscriptionAdded = 6,
    ApiKeyCreated = 7,
    ApiKeyRevoked = 8,
    Dedupe = 9,
    BatchCommit = 10,
    UserDisabled = 11,
    AdminAudit = 12,
    State = 13,
    SubscriptionsEnded = 14,
    /// Load-testing campaigns (`campaign.rs`; FORMAT.md, "Campaign records").
    CampaignCreated = 20,
    CampaignDeleted = 21,
    CampaignMessage = 22,
    AddressTombstone = 15,
    /// What a shard stored of a keyed delivery, for its retry (`retry.rs`).
    DeliveryPart = 16,
    /// A keyed delivery succeeded everywhere: no retry needs its parts.
    DeliveryDone = 17,
}

impl Kind {
    pub(crate) fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::MailboxCreated,
            2 => Self::MailboxDeleted,
            3 => Self::Message,
            4 => Self::MessageDeleted,
            5 => Self::UserCreated,
            6 => Self::SubscriptionAdded,
            7 => Self::ApiKeyCreated,
            8 => Self::ApiKeyRevoked,
            9 => Self::Dedupe,
            10 => Self::BatchCommit,
            11 => Self::UserDisabled,
            12 => Self::AdminAudit,
            13 => Self::State,
            14 => Self::SubscriptionsEnded,
            20 => Self::CampaignCreated,
            21 => Self::CampaignDeleted,
            22 => Self::CampaignMessage,
            15 => Self::AddressTombstone,
            16 => Self::DeliveryPart,
            17 => Self::DeliveryDone,
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------- primitives

/// Appends little-endian fields to a buffer.
pub(crate) struct Enc<'a>(pub(crate) &'a mut Vec<u8>);

impl Enc<'_> {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    /// A string with a u32 length prefix. Callers bound their strings far
    /// below 4 GiB; a longer one is clipped rather than mis-framed.
    pub(crate) fn str(&mut self, s: &str) {
        let b = s.as_bytes();
        let n = b.len().min(u32::MAX as usize);
        self.u32(n as u32);
        self.bytes(b.get(..n).unwrap_or_default());
    }
    pub(crate) fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
    /// An owner: tag 0 + token hash, or tag 1 + user id.
    pub(crate) fn owner(&mut self, o: &Owner) {
        match o {
            Owner::Anonymous { token_hash } => {
                self.u8(0);
                self.bytes(token_hash);
            }
            Owner::User(u) => {
                self.u8(1);
                self.u64(u.0);
            }
        }
    }
    pub(crate) fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
        }
    }
}

/// Reads little-endian fields from untrusted bytes, bounds-checked.
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_le_bytes(self.arr()?))
    }
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    pub(crate) fn hash32(&mut self) -> Result<[u8; 32], DecodeError> {
        self.arr()
    }
    pub(crate) fn str(&mut self) -> Result<String, DecodeError> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Invalid)
    }
    pub(crate) fn opt_str(&mut self) -> Result<Option<String>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            _ => Err(DecodeError::Invalid),
        }
    }
    /// An owner written by [`Enc::owner`].
    pub(crate) fn owner(&mut self) -> Result<Owner, DecodeError> {
        Ok(match self.u8()? {
            0 => Owner::Anonymous {
                token_hash: self.hash32()?,
            },
            1 => Owner::User(crate::types::UserId(self.u64()?)),
            _ => return Err(DecodeError::Invalid),
        })
    }
    pub(crate) fn opt_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            _ => Err(DecodeError::Invalid),
        }
    }
    /// True once every byte was read (an optional trailing field is absent).
    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }
    /// Fails unless every byte was consumed (trailing garbage is corruption).
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(DecodeError::Invalid)
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    s.try_into().ok().map(u32::from_le_bytes)
}

// ------------------------------------------------------------ segment header

/// The first [`SEG_HEADER_LEN`] bytes of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegHeader {
    pub(crate) flags: u32,
    pub(crate) shard: u32,
    pub(crate) seg_no: u32,
    /// The shard's id counter when the segment was created: every id the
    /// shard handed out before is below `id_floor * shards`.
    pub(crate) id_floor: u64,
    /// A segment this one replaces (compaction output), or [`NO_SEGMENT`].
    pub(crate) supersedes: u32,
}

impl SegHeader {
    pub(crate) fn encode(&self) -> [u8; SEG_HEADER_LEN] {
        let mut v = Vec::with_capacity(SEG_HEADER_LEN);
        let mut e = Enc(&mut v);
        e.bytes(&SEG_MAGIC);
        e.u32(FORMAT_VERSION);
        e.u32(self.flags);
        e.u32(self.shard);
        e.u32(self.seg_no);
        e.u64(self.id_floor);
        e.u32(self.supersedes);
        e.u32(0);
        let crc = crc32c::crc32c(&v);
        Enc(&mut v).u32(crc);
        v.resize(SEG_HEADER_LEN, 0);
        let mut out = [0u8; SEG_HEADER_LEN];
        out.copy_from_slice(&v);
        out
    }

    /// Decode; `Err(Ok(version))` for a well-formed header of another version.
    pub(crate) fn decode(b: &[u8]) -> Result<Self, HeaderError> {
        let mut d = Dec::new(b);
        let magic = d.take(8).map_err(|_| HeaderError::Bad)?;
        if magic != SEG_MAGIC {
            return Err(HeaderError::Bad);
        }
        let body = b.get(..40).ok_or(HeaderError::Bad)?;
        let crc = u32_at(b, 40).ok_or(HeaderError::Bad)?;
        if crc32c::crc32c(body) != crc {
            return Err(HeaderError::Bad);
        }
        let version = d.u32().map_err(|_| HeaderError::Bad)?;
        if !readable(version) {
            return Err(HeaderError::Version(version));
        }
        let f = |r: Result<u32, DecodeError>| r.map_err(|_| HeaderError::Bad);
        let flags = f(d.u32())?;
        let shard = f(d.u32())?;
        let seg_no = f(d.u32())?;
        let id_floor = d.u64().map_err(|_| HeaderError::Bad)?;
        let supersedes = f(d.u32())?;
        Ok(Self {
            flags,
            shard,
            seg_no,
            id_floor,
            supersedes,
        })
    }
}

/// Why a segment header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Not a header (bad magic, bad checksum, short).
    Bad,
    /// A valid header of an unknown version.
    Version(u32),
}

// -------------------------------------------------------------- record frame

/// Start a frame in `buf`; returns the frame's start for [`finish_frame`].
pub(crate) fn begin_frame(buf: &mut Vec<u8>, kind: Kind) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; 8]);
    buf.extend_from_slice(&[kind as u8, 0, 0, 0]);
    start
}

/// Fill in length and checksum of the frame begun at `start`.
pub(crate) fn finish_frame(buf: &mut [u8], start: usize) {
    let Some(frame) = buf.get_mut(start..) else {
        return;
    };
    let payload_len = frame.len().saturating_sub(FRAME_HEADER_LEN) as u32;
    let len = payload_len.to_le_bytes();
    let crc = frame_crc(len, frame.get(8..).unwrap_or_default());
    if let Some(h) = frame.get_mut(..8) {
        h[..4].copy_from_slice(&len);
        h[4..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// The frame checksum: CRC32C over the length field, then the kind / flags /
/// reserved bytes and the payload (`rest` = bytes from offset 8 on).
pub(crate) fn frame_crc(len_le: [u8; 4], rest: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len_le), rest)
}

/// A frame as found in a segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame<'a> {
    /// Raw kind byte (may be unknown).
    pub(crate) kind: u8,
    pub(crate) stored_crc: u32,
    len_le: [u8; 4],
    /// kind/flags/reserved + payload.
    rest: &'a [u8],
    pub(crate) payload: &'a [u8],
}

impl Frame<'_> {
    /// Total bytes of the frame (header + payload).
    pub(crate) fn total_len(&self) -> usize {
        FRAME_HEADER_LEN + self.payload.len()
    }
    pub(crate) fn crc_ok(&self) -> bool {
        frame_crc(self.len_le, self.rest) == self.stored_crc
    }
}

/// Why no frame could be read at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Zero bytes where a header should be: the end of the written data.
    End,
    /// The header or payload runs past the available bytes, or declares an
    /// impossible length.
    Torn,
}

/// Read the frame at `off` of `data` (only the first `limit` bytes count).
/// The checksum is NOT checked here; see [`Frame::crc_ok`].
pub(crate) fn frame_at(data: &[u8], off: usize, limit: usize) -> Result<Frame<'_>, FrameError> {
    let data = data.get(..limit).ok_or(FrameError::Torn)?;
    let hdr = data
        .get(off..off.saturating_add(FRAME_HEADER_LEN))
        .ok_or(if off >= data.len() {
            FrameError::End
        } else {
            FrameError::Torn
        })?;
    if hdr.iter().all(|&b| b == 0) {
        return Err(FrameError::End);
    }
    let len = u32_at(hdr, 0).ok_or(FrameError::Torn)? as usize;
    let stored_crc = u32_at(hdr, 4).ok_or(FrameError::Torn)?;
    if len > MAX_PAYLOAD {
        return Err(FrameError::Torn);
    }
    let end = off
        .checked_add(FRAME_HEADER_LEN)
        .and_then(|x| x.checked_add(len))
        .ok_or(FrameError::Torn)?;
    let rest = data.get(off + 8..end).ok_or(FrameError::Torn)?;
    let payload = data
        .get(off + FRAME_HEADER_LEN..end)
        .ok_or(FrameError::Torn)?;
    let kind = *hdr.get(8).ok_or(FrameError::Torn)?;
    Ok(Frame {
        kind,
        stored_crc,
        len_le: (len as u32).to_le_bytes(),
        rest,
        payload,
    })
}

// ------------------------------------------------------------------ payloads

/// A mailbox creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MailboxRec {
    pub(crate) id: u64,
    pub(crate) created_at_ms: u64,
    pub(crate) expires_at_ms: u64,
    pub(crate) max_messages: u32,
    pub(crate) owner: Owner,
    pub(crate) address: String,
}

/// The fixed prefix of a message payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageHead {
    pub(crate) mailbox: u64,
    pub(crate) seq: u64,
    pub(crate) received_at_ms: u64,
    pub(crate) meta_len: u32,
    pub(crate) meta_crc: u32,
}

/// The per-message fields kept next to the body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct MessageMetaRec {
    /// Every plus tag the delivery named this mailbox with, first seen
    /// first, no two equal ignoring case; empty when only the bare address.
    pub(crate) plus_tags: Vec<String>,
    pub(crate) envelope_from: String,
    pub(crate) summary: MessageSummary,
}

/// Every decoded record kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    MailboxCreated(MailboxRec),
    MailboxDeleted {
        id: u64,
        target_seg: u32,
    },
    Message {
        head: MessageHead,
        meta: MessageMetaRec,
        body: &'a [u8],
    },
    MessageDeleted {
        mailbox: u64,
        seq: u64,
        target_seg: u32,
    },
    UserCreated {
        id: u64,
        created_at_ms: u64,
        name: String,
    },
    SubscriptionAdded {
        user: u64,
        ordinal: u64,
        sub: Subscription,
    },
    ApiKeyCreated {
        id: u64,
        user: u64,
        hash: [u8; 32],
        prefix: String,
        created_at_ms: u64,
    },
    ApiKeyRevoked {
        id: u64,
        at_ms: u64,
    },
    Dedupe {
        key: String,
        at_ms: u64,
        parts: u8,
    },
    BatchCommit {
        records: u32,
    },
    UserDisabled {
        id: u64,
        at_ms: u64,
    },
    AdminAudit(AuditEntry),
    /// A durable key-value entry of the crates above the engine (`value`
    /// none = deleted); the highest `version` of a key wins.
    State {
        key: String,
        version: u64,
        value: Option<String>,
    },
    /// Every subscription of `user` with an ordinal below `before_ordinal`
    /// ends at `at_ms` (if it had not ended earlier).
    SubscriptionsEnded {
        user: u64,
        before_ordinal: u64,
        at_ms: u64,
    },
    CampaignCreated(crate::campaign::CreatedRec),
    /// A campaign deleted; `target_seg` holds its `CampaignCreated` (shard 0).
    CampaignDeleted {
        id: u64,
        target_seg: u32,
    },
    CampaignMessage(crate::campaign::MessageRec<'a>),
    /// `address` may not be created by anyone but `owner` before
    /// `until_ms` (see `tombstone.rs`); written at `at_ms`.
    AddressTombstone {
        address: String,
        owner: Owner,
        at_ms: u64,
        until_ms: u64,
    },
    /// What this shard stored of the delivery `key` (`retry.rs`) tried at
    /// `at_ms`: per mailbox, its copy's sequence number or why it was
    /// refused (`retry::outcome_code`).
    DeliveryPart {
        key: [u8; 32],
        at_ms: u64,
        outcomes: Vec<PartOutcomeRec>,
    },
    /// The delivery `key`, tried at `at_ms`, succeeded everywhere: its
    /// parts recorded at or before `at_ms` are not for a retry.
    DeliveryDone {
        key: [u8; 32],
        at_ms: u64,
    },
}

/// One mailbox's outcome in a `DeliveryPart`: `code` 0 = stored as `seq`,
/// else why it was refused (`seq` 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartOutcomeRec {
    pub(crate) mailbox: u64,
    pub(crate) code: u8,
    pub(crate) seq: u64,
}

impl Record<'_> {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Self::MailboxCreated(_) => Kind::MailboxCreated,
            Self::MailboxDeleted { .. } => Kind::MailboxDeleted,
            Self::Message { .. } => Kind::Message,
            Self::MessageDeleted { .. } => Kind::MessageDeleted,
            Self::UserCreated { .. } => Kind::UserCreated,
            Self::SubscriptionAdded { .. } => Kind::SubscriptionAdded,
            Self::ApiKeyCreated { .. } => Kind::ApiKeyCreated,
            Self::ApiKeyRevoked { .. } => Kind::ApiKeyRevoked,
            Self::Dedupe { .. } => Kind::Dedupe,
            Self::BatchCommit { .. } => Kind::BatchCommit,
            Self::UserDisabled { .. } => Kind::UserDisabled,
            Self::AdminAudit(_) => Kind::AdminAudit,
            Self::State { .. } => Kind::State,
            Self::SubscriptionsEnded { .. } => Kind::SubscriptionsEnded,
            Self::CampaignCreated(_) => Kind::CampaignCreated,
            Self::CampaignDeleted { .. } => Kind::CampaignDeleted,
            Self::CampaignMessage(_) => Kind::CampaignMessage,
            Self::AddressTombstone { .. } => Kind::AddressTombstone,
            Self::DeliveryPart { .. } => Kind::DeliveryPart,
            Self::DeliveryDone { .. } => Kind::DeliveryDone,
        }
    }

    /// Append this record as a whole frame to `buf`.
    pub(crate) fn encode_frame(&self, buf: &mut Vec<u8>) {
        let start = begin_frame(buf, self.kind());
        self.encode_payload(buf);
        finish_frame(buf, start);
    }

    fn encode_payload(&self, buf: &mut Vec<u8>) {
        match self {
            Self::MailboxCreated(m) => {
                let mut e = Enc(buf);
                e.u64(m.id);
                e.u64(m.created_at_ms);
                e.u64(m.expires_at_ms);
                e.u32(m.max_messages);
                e.owner(&m.owner);
                e.str(&m.address);
            }
            Self::MailboxDeleted { id, target_seg } => {
                let mut e = Enc(buf);
                e.u64(*id);
                e.u32(*target_seg);
            }
            Self::Message { head, meta, body } => {
                encode_message(buf, head.mailbox, head.seq, head.received_at_ms, meta, body);
            }
            Self::MessageDeleted {
                mailbox,
                seq,
                target_seg,
            } => {
                let mut e = Enc(buf);
                e.u64(*mailbox);
                e.u64(*seq);
                e.u32(*target_seg);
            }
            Self::UserCreated {
                id,
                created_at_ms,
                name,
            } => {
                let mut e = Enc(buf);
                e.u64(*id);
                e.u64(*created_at_ms);
                e.str(name);
            }
            Self::SubscriptionAdded { user, ordinal, sub } => {
                let mut e = Enc(buf);
                e.u64(*user);
                e.u64(*ordinal);
                e.str(&sub.plan);
                e.u64(sub.starts_at_ms);
                e.opt_u64(sub.ends_at_ms);
            }
            Self::ApiKeyCreated {
                id,
                user,
                hash,
                prefix,
                created_at_ms,
            } => {
                let mut e = Enc(buf);
                e.u64(*id);
                e.u64(*user);
                e.bytes(hash);
                e.str(prefix);
                e.u64(*created_at_ms);
            }
            Self::ApiKeyRevoked { id, at_ms } => {
                let mut e = Enc(buf);
                e.u64(*id);
                e.u64(*at_ms);
            }
            Self::Dedupe { key, at_ms, parts } => {
                let mut e = Enc(buf);
                e.str(key);
                e.u64(*at_ms);
                e.u8(*parts);
            }
            Self::BatchCommit { records } => Enc(buf).u32(*records),
            Self::UserDisabled { id, at_ms } => {
                let mut e = Enc(buf);
                e.u64(*id);
                e.u64(*at_ms);
            }
            Self::AdminAudit(a) => {
                let mut e = Enc(buf);
                e.u64(a.at_ms);
                e.str(&a.actor);
                e.str(&a.action);
                e.str(&a.target);
            }
            Self::State {
                key,
                version,
                value,
            } => {
                let mut e = Enc(buf);
                e.str(key);
                e.u64(*version);
                e.opt_str(value.as_deref());
            }
            Self::SubscriptionsEnded {
                user,
                before_ordinal,
                at_ms,
            } => {
                let mut e = Enc(buf);
                e.u64(*user);
                e.u64(*before_ordinal);
                e.u64(*at_ms);
            }
            Self::CampaignCreated(c) => crate::campaign::encode_created(buf, &c.info),
            Self::CampaignDeleted { id, target_seg } => {
                crate::campaign::encode_deleted(buf, *id, *target_seg);
            }
            Self::CampaignMessage(m) => crate::campaign::encode_message(buf, m),
            Self::AddressTombstone {
                address,
                owner,
                at_ms,
                until_ms,
            } => {
                let mut e = Enc(buf);
                e.str(address);
                e.owner(owner);
                e.u64(*at_ms);
                e.u64(*until_ms);
            }
            Self::DeliveryPart {
                key,
                at_ms,
                outcomes,
            } => {
                let mut e = Enc(buf);
                e.bytes(key);
                e.u64(*at_ms);
                // Mailboxes of one delivery in one shard: far below u32.
                e.u32(outcomes.len() as u32);
                for o in outcomes {
                    e.u64(o.mailbox);
                    e.u8(o.code);
                    e.u64(o.seq);
                }
            }
            Self::DeliveryDone { key, at_ms } => {
                let mut e = Enc(buf);
                e.bytes(key);
                e.u64(*at_ms);
            }
        }
    }
}

/// Append a message payload (prefix, meta, body) to `buf`.
pub(crate) fn encode_message(
    buf: &mut Vec<u8>,
    mailbox: u64,
    seq: u64,
    received_at_ms: u64,
    meta: &MessageMetaRec,
    body: &[u8],
) {
    let start = buf.len();
    {
        let mut e = Enc(buf);
        e.u64(mailbox);
        e.u64(seq);
        e.u64(received_at_ms);
        e.u32(0);
        e.u32(0);
    }
    let meta_start = buf.len();
    encode_meta(buf, meta);
    let meta_len = (buf.len() - meta_start) as u32;
    let meta_crc = crc32c::crc32c(buf.get(meta_start..).unwrap_or_default());
    if let Some(p) = buf.get_mut(start + 24..start + 32) {
        p[..4].copy_from_slice(&meta_len.to_le_bytes());
        p[4..].copy_from_slice(&meta_crc.to_le_bytes());
    }
    buf.extend_from_slice(body);
}

/// The payload length of a Message record with this meta and a body of
/// `body_len` bytes (to refuse one the decoder would not accept).
pub(crate) fn message_payload_len(meta: &MessageMetaRec, body_len: usize) -> usize {
    let mut scratch = Vec::new();
    encode_meta(&mut scratch, meta);
    MESSAGE_PREFIX_LEN
        .saturating_add(scratch.len())
        .saturating_add(body_len)
}

fn encode_meta(buf: &mut Vec<u8>, m: &MessageMetaRec) {
    let mut e = Enc(buf);
    encode_tags(&mut e, &m.plus_tags);
    e.str(&m.envelope_from);
    e.str(&m.summary.from);
    e.str(&m.summary.subject);
    e.opt_str(m.summary.date.as_deref());
    e.u16(m.summary.attachments);
    let links = m.summary.links.len().min(u16::MAX as usize);
    e.u16(links as u16);
    for l in m.summary.links.iter().take(links) {
        e.str(l);
    }
    let codes = m.summary.codes.len().min(u16::MAX as usize);
    e.u16(codes as u16);
    for c in m.summary.codes.iter().take(codes) {
        e.str(c);
    }
    e.u16(m.summary.version);
}

/// The tag field of a message meta: `u8 0` (no tag), `u8 1` + one string
/// (the only forms of version 1, where it was an `opt<str>`), or, since
/// version 2, `u8 2` + `u16` count + that many strings.
fn encode_tags(e: &mut Enc<'_>, tags: &[String]) {
    match tags {
        [] => e.u8(0),
        [one] => {
            e.u8(1);
            e.str(one);
        }
        many => {
            let n = many.len().min(u16::MAX as usize);
            e.u8(2);
            e.u16(n as u16);
            for t in many.iter().take(n) {
                e.str(t);
            }
        }
    }
}

fn decode_tags(d: &mut Dec<'_>, room: usize) -> Result<Vec<String>, DecodeError> {
    match d.u8()? {
        0 => Ok(Vec::new()),
        1 => Ok(vec![d.str()?]),
        2 => {
            let n = d.u16()? as usize;
            // Each string takes at least 4 bytes: no allocation the bytes
            // cannot back.
            let mut tags = Vec::with_capacity(n.min(room / 4));
            for _ in 0..n {
                tags.push(d.str()?);
            }
            Ok(tags)
        }
        _ => Err(DecodeError::Invalid),
    }
}

/// The extractor version of a meta section written before summaries carried
/// one (they all came from the first, keyword-only rules).
pub(crate) const UNVERSIONED_SUMMARY: u16 = 1;

fn decode_meta(b: &[u8]) -> Result<MessageMetaRec, DecodeError> {
    let mut d = Dec::new(b);
    let plus_tags = decode_tags(&mut d, b.len())?;
    let envelope_from = d.str()?;
    let from = d.str()?;
    let subject = d.str()?;
    let date = d.opt_str()?;
    let attachments = d.u16()?;
    let n = d.u16()? as usize;
    // Each string takes at least 4 bytes: refuse counts the bytes cannot hold
    // before allocating for them.
    let mut links = Vec::with_capacity(n.min(b.len() / 4));
    for _ in 0..n {
        links.push(d.str()?);
    }
    let n = d.u16()? as usize;
    let mut codes = Vec::with_capacity(n.min(b.len() / 4));
    for _ in 0..n {
        codes.push(d.str()?);
    }
    let version = if d.at_end() {
        UNVERSIONED_SUMMARY
    } else {
        d.u16()?
    };
    d.finish()?;
    Ok(MessageMetaRec {
        plus_tags,
        envelope_from,
        summary: MessageSummary {
            from,
            subject,
            date,
            attachments,
            links,
            codes,
            version,
        },
    })
}

/// Decode a message payload's fixed prefix.
pub(crate) fn message_head(payload: &[u8]) -> Result<MessageHead, DecodeError> {
    let mut d = Dec::new(payload);
    Ok(MessageHead {
        mailbox: d.u64()?,
        seq: d.u64()?,
        received_at_ms: d.u64()?,
        meta_len: d.u32()?,
        meta_crc: d.u32()?,
    })
}

/// Decode and verify (own checksum) a message's meta section, without
/// touching the body. Used by listings.
pub(crate) fn message_meta(payload: &[u8]) -> Result<(MessageHead, MessageMetaRec), DecodeError> {
    let head = message_head(payload)?;
    let meta = payload
        .get(MESSAGE_PREFIX_LEN..MESSAGE_PREFIX_LEN.saturating_add(head.meta_len as usize))
        .ok_or(DecodeError::Truncated)?;
    if crc32c::crc32c(meta) != head.meta_crc {
        return Err(DecodeError::Checksum);
    }
    Ok((head, decode_meta(meta)?))
}

/// The body slice (offset, len) inside a message payload.
pub(crate) fn message_body_range(payload: &[u8]) -> Result<(usize, usize), DecodeError> {
    let head = message_head(payload)?;
    let start = MESSAGE_PREFIX_LEN
        .checked_add(head.meta_len as usize)
        .ok_or(DecodeError::Invalid)?;
    if start > payload.len() {
        return Err(DecodeError::Truncated);
    }
    Ok((start, payload.len() - start))
}

/// Decode a whole record of raw kind `kind` from its payload.
pub(crate) fn decode(kind: u8, payload: &[u8]) -> Result<Record<'_>, DecodeError> {
    let kind = Kind::from_u8(kind).ok_or(DecodeError::Invalid)?;
    let mut d = Dec::new(payload);
    let r = match kind {
        Kind::MailboxCreated => {
            let id = d.u64()?;
            let created_at_ms = d.u64()?;
            let expires_at_ms = d.u64()?;
            let max_messages = d.u32()?;
            let owner = d.owner()?;
            let address = d.str()?;
            Record::MailboxCreated(MailboxRec {
                id,
                created_at_ms,
                expires_at_ms,
                max_messages,
                owner,
                address,
            })
        }
        Kind::MailboxDeleted => Record::MailboxDeleted {
            id: d.u64()?,
            target_seg: d.u32()?,
        },
        Kind::Message => {
            let (head, meta) = message_meta(payload)?;
            let (start, _) = message_body_range(payload)?;
            return Ok(Record::Message {
                head,
                meta,
                body: payload.get(start..).unwrap_or_default(),
            });
        }
        Kind::MessageDeleted => Record::MessageDeleted {
            mailbox: d.u64()?,
            seq: d.u64()?,
            target_seg: d.u32()?,
        },
        Kind::UserCreated => Record::UserCreated {
            id: d.u64()?,
            created_at_ms: d.u64()?,
            name: d.str()?,
        },
        Kind::SubscriptionAdded => Record::SubscriptionAdded {
            user: d.u64()?,
            ordinal: d.u64()?,
            sub: Subscription {
                plan: d.str()?,
                starts_at_ms: d.u64()?,
                ends_at_ms: d.opt_u64()?,
            },
        },
        Kind::ApiKeyCreated => Record::ApiKeyCreated {
            id: d.u64()?,
            user: d.u64()?,
            hash: d.hash32()?,
            prefix: d.str()?,
            created_at_ms: d.u64()?,
        },
        Kind::ApiKeyRevoked => Record::ApiKeyRevoked {
            id: d.u64()?,
            at_ms: d.u64()?,
        },
        Kind::Dedupe => Record::Dedupe {
            key: d.str()?,
            at_ms: d.u64()?,
            parts: d.u8()?,
        },
        Kind::BatchCommit => Record::BatchCommit { records: d.u32()? },
        Kind::UserDisabled => Record::UserDisabled {
            id: d.u64()?,
            at_ms: d.u64()?,
        },
        Kind::AdminAudit => Record::AdminAudit(AuditEntry {
            at_ms: d.u64()?,
            actor: d.str()?,
            action: d.str()?,
            target: d.str()?,
        }),
        Kind::State => Record::State {
            key: d.str()?,
            version: d.u64()?,
            value: d.opt_str()?,
        },
        Kind::SubscriptionsEnded => Record::SubscriptionsEnded {
            user: d.u64()?,
            before_ordinal: d.u64()?,
            at_ms: d.u64()?,
        },
        Kind::CampaignCreated => {
            return crate::campaign::decode_created(payload).map(Record::CampaignCreated)
        }
        Kind::CampaignDeleted => {
            let (id, target_seg) = crate::campaign::decode_deleted(payload)?;
            return Ok(Record::CampaignDeleted { id, target_seg });
        }
        Kind::CampaignMessage => {
            return crate::campaign::decode_message(payload).map(Record::CampaignMessage)
        }
        Kind::AddressTombstone => Record::AddressTombstone {
            address: d.str()?,
            owner: d.owner()?,
            at_ms: d.u64()?,
            until_ms: d.u64()?,
        },
        Kind::DeliveryPart => {
            let key = d.hash32()?;
            let at_ms = d.u64()?;
            let n = d.u32()? as usize;
            // Each outcome is 17 bytes: a count beyond the payload is
            // corruption, not an allocation to make.
            if n > payload.len() / 17 {
                return Err(DecodeError::Truncated);
            }
            let mut outcomes = Vec::with_capacity(n);
            for _ in 0..n {
                outcomes.push(PartOutcomeRec {
                    mailbox: d.u64()?,
                    code: d.u8()?,
                    seq: d.u64()?,
                });
            }
            Record::DeliveryPart {
                key,
                at_ms,
                outcomes,
            }
        }
        Kind::DeliveryDone => Record::DeliveryDone {
            key: d.hash32()?,
            at_ms: d.u64()?,
        },
    };
    d.finish()?;
    Ok(r)
}

// ----------------------------------------------------------------- hint file

/// One hint entry: where a record sits and, for messages, its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HintEntry {
    pub(crate) off: u32,
    pub(crate) len: u32,
    pub(crate) kind: u8,
    /// Mailbox id for messages, 0 otherwise.
    pub(crate) a: u64,
    /// Sequence number for messages, 0 otherwise.
    pub(crate) b: u64,
}

/// A sealed segment's hint: its committed length and every record's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hint {
    pub(crate) shard: u32,
    pub(crate) seg_no: u32,
    pub(crate) data_len: u64,
    pub(crate) entries: Vec<HintEntry>,
}

impl Hint {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HINT_HEADER_LEN + self.entries.len() * HINT_ENTRY_LEN + 4);
        let mut e = Enc(&mut v);
        e.bytes(&HINT_MAGIC);
        e.u32(FORMAT_VERSION);
        e.u32(self.shard);
        e.u32(self.seg_no);
        e.u64(self.data_len);
        e.u32(self.entries.len() as u32);
        for h in &self.entries {
            e.u32(h.off);
            e.u32(h.len);
            e.u8(h.kind);
            e.bytes(&[0, 0, 0]);
            e.u64(h.a);
            e.u64(h.b);
        }
        let crc = crc32c::crc32c(&v);
        Enc(&mut v).u32(crc);
        v
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let body_len = b.len().checked_sub(4).ok_or(DecodeError::Truncated)?;
        let body = b.get(..body_len).ok_or(DecodeError::Truncated)?;
        let crc = u32_at(b, body_len).ok_or(DecodeError::Truncated)?;
        if crc32c::crc32c(body) != crc {
            return Err(DecodeError::Checksum);
        }
        let mut d = Dec::new(body);
        if d.take(8)? != HINT_MAGIC {
            return Err(DecodeError::Invalid);
        }
        if !readable(d.u32()?) {
            return Err(DecodeError::Invalid);
        }
        let shard = d.u32()?;
        let seg_no = d.u32()?;
        let data_len = d.u64()?;
        let n = d.u32()? as usize;
        if n.checked_mul(HINT_ENTRY_LEN) != Some(body_len.saturating_sub(HINT_HEADER_LEN)) {
            return Err(DecodeError::Invalid);
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let off = d.u32()?;
            let len = d.u32()?;
            let kind = d.u8()?;
            d.take(3)?;
            entries.push(HintEntry {
                off,
                len,
                kind,
                a: d.u64()?,
                b: d.u64()?,
            });
        }
        d.finish()?;
        Ok(Self {
            shard,
            seg_no,
            data_len,
            entries,
        })
    }
}

/// Decode everything a segment or hint file could hold, the way recovery
/// reads it, for the fuzz targets: bytes from disk are hostile input too.
/// Returns the number of frames whose checksum held and whose payload decoded.
pub(crate) fn decode_all_for_fuzzing(bytes: &[u8]) -> usize {
    let _ = SegHeader::decode(bytes);
    let _ = Hint::decode(bytes);
    let mut off = 0;
    let mut good = 0;
    while let Ok(frame) = frame_at(bytes, off, bytes.len()) {
        if frame.crc_ok() && decode(frame.kind, frame.payload).is_ok() {
            good += 1;
        }
        if frame.kind == Kind::Message as u8 {
            let _ = message_meta(frame.payload);
            let _ = message_body_range(frame.payload);
        }
        off += frame.total_len();
    }
    // The same payload bytes as every kind, without a valid frame around them.
    for kind in 0..=u8::MAX {
        let _ = decode(kind, bytes);
    }
    good
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::UserId;

    fn all_records(body: &[u8]) -> Vec<Record<'_>> {
        vec![
            Record::MailboxCreated(MailboxRec {
                id: 7,
                created_at_ms: 1,
                expires_at_ms: 2,
                max_messages: 3,
                owner: Owner::Anonymous {
                    token_hash: [9; 32],
                },
                address: "a@b.test".into(),
            }),
            Record::MailboxCreated(MailboxRec {
                id: 8,
                created_at_ms: 1,
                expires_at_ms: 2,
                max_messages: 3,
                owner: Owner::User(UserId(4)),
                address: "c@b.test".into(),
            }),
            Record::MailboxDeleted {
                id: 7,
                target_seg: 3,
            },
            Record::Message {
                head: MessageHead {
                    mailbox: 7,
                    seq: 9,
                    received_at_ms: 11,
                    meta_len: 0,
                    meta_crc: 0,
                },
                meta: MessageMetaRec {
                    plus_tags: vec!["tag".into(), "other".into()],
                    envelope_from: "x@y".into(),
                    summary: MessageSummary {
                        from: "F".into(),
                        subject: "S".into(),
                        date: Some("d".into()),
                        attachments: 2,
                        links: vec!["https://l".into()],
                        codes: vec!["123456".into(), "999".into()],
                        version: 2,
                    },
                },
                body,
            },
            Record::MessageDeleted {
                mailbox: 7,
                seq: 9,
                target_seg: 1,
            },
            Record::UserCreated {
                id: 5,
                created_at_ms: 6,
                name: "ünï".into(),
            },
            Record::SubscriptionAdded {
                user: 5,
                ordinal: 12,
                sub: Subscription {
                    plan: "pro".into(),
                    starts_at_ms: 1,
                    ends_at_ms: Some(2),
                },
            },
            Record::ApiKeyCreated {
                id: 13,
                user: 5,
                hash: [1; 32],
                prefix: "uct_abcdefgh".into(),
                created_at_ms: 4,
            },
            Record::ApiKeyRevoked { id: 13, at_ms: 99 },
            Record::Dedupe {
                key: "sns-id".into(),
                at_ms: 5,
                parts: 2,
            },
            Record::BatchCommit { records: 4 },
            Record::DeliveryPart {
                key: [3; 32],
                at_ms: 79,
                outcomes: vec![
                    PartOutcomeRec {
                        mailbox: 2,
                        code: 0,
                        seq: 7,
                    },
                    PartOutcomeRec {
                        mailbox: 4,
                        code: 2,
                        seq: 0,
                    },
                ],
            },
            Record::DeliveryDone {
                key: [3; 32],
                at_ms: 80,
            },
            Record::UserDisabled { id: 5, at_ms: 77 },
            Record::AdminAudit(AuditEntry {
                at_ms: 78,
                actor: "uid:0 root".into(),
                action: "user disable".into(),
                target: "user 5".into(),
            }),
            Record::State {
                key: "webhook/endpoint/ab".into(),
                version: 14,
                value: Some("{}".into()),
            },
            Record::State {
                key: "webhook/endpoint/ab".into(),
                version: 15,
                value: None,
            },
            Record::SubscriptionsEnded {
                user: 5,
                before_ordinal: 12,
                at_ms: 79,
            },
            Record::CampaignCreated(crate::campaign::CreatedRec {
                info: crate::campaign::CampaignInfo {
                    id: crate::campaign::CampaignId(0x7f3a),
                    owner: Owner::User(crate::types::UserId(5)),
                    name: "load".into(),
                    created_at_ms: 80,
                    expires_at_ms: 81,
                    pattern: crate::campaign::AddressPattern::parse("load-*@uncorreo.test"),
                    store: crate::campaign::StoreMode::Count,
                    sent_at_header: "Date".into(),
                    messages: 0,
                },
            }),
            Record::CampaignDeleted {
                id: 0x7f3a,
                target_seg: 3,
            },
            Record::CampaignMessage(crate::campaign::MessageRec {
                campaign: 0x7f3a,
                seq: 1,
                committed_at_ms: 82,
                size: 17,
                sent_at_ms: Some(81),
                recipient: "x@c-7f3a.uncorreo.test".into(),
                envelope_from: String::new(),
                message_id: Some("<m@x>".into()),
                body: b"Subject: x\r\n\r\n",
            }),
            Record::AddressTombstone {
                address: "gone@uncorreo.test".into(),
                owner: Owner::User(UserId(4)),
                at_ms: 80,
                until_ms: 90,
            },
        ]
    }

    /// Normalises fields the encoder computes (meta len/crc) for comparison.
    fn norm(r: Record<'_>) -> Record<'_> {
        match r {
            Record::Message { head, meta, body } => Record::Message {
                head: MessageHead {
                    meta_len: 0,
                    meta_crc: 0,
                    ..head
                },
                meta,
                body,
            },
            r => r,
        }
    }

    #[test]
    fn every_record_kind_round_trips_through_a_frame() {
        let body = b"Subject: hi\r\n\r\nbody".to_vec();
        for r in all_records(&body) {
            let mut buf = Vec::new();
            r.encode_frame(&mut buf);
            let f = frame_at(&buf, 0, buf.len()).unwrap();
            assert!(f.crc_ok());
            assert_eq!(f.total_len(), buf.len());
            let back = decode(f.kind, f.payload).unwrap();
            assert_eq!(norm(back), norm(r.clone()));
        }
    }

    #[test]
    fn any_flipped_bit_in_a_frame_is_caught_by_the_crc_or_the_framing() {
        let body = b"x".repeat(50);
        for r in all_records(&body) {
            let mut buf = Vec::new();
            r.encode_frame(&mut buf);
            for i in 0..buf.len() {
                for bit in 0..8 {
                    let mut b = buf.clone();
                    b[i] ^= 1 << bit;
                    if let Ok(f) = frame_at(&b, 0, b.len()) {
                        assert!(!f.crc_ok() || f.total_len() != buf.len(), "byte {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn headers_and_hints_round_trip_and_reject_damage() {
        let h = SegHeader {
            flags: SEG_FLAG_REWRITE,
            shard: 1,
            seg_no: 42,
            id_floor: 1000,
            supersedes: 41,
        };
        let b = h.encode();
        assert_eq!(SegHeader::decode(&b), Ok(h));
        let mut bad = b;
        bad[20] ^= 1;
        assert_eq!(SegHeader::decode(&bad), Err(HeaderError::Bad));
        let hint = Hint {
            shard: 1,
            seg_no: 42,
            data_len: 4096,
            entries: vec![HintEntry {
                off: 64,
                len: 100,
                kind: 3,
                a: 7,
                b: 1,
            }],
        };
        let enc = hint.encode();
        assert_eq!(Hint::decode(&enc), Ok(hint));
        for cut in 0..enc.len() {
            assert!(Hint::decode(&enc[..cut]).is_err());
        }
    }

    proptest::proptest! {
        #[test]
        fn decoding_random_bytes_never_panics(kind in 0u8..24, bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = decode(kind, &bytes);
            let _ = message_meta(&bytes);
            let _ = Hint::decode(&bytes);
            let _ = SegHeader::decode(&bytes);
            let _ = frame_at(&bytes, 0, bytes.len());
            let _ = frame_at(&bytes, 5, bytes.len());
        }
    }
}
