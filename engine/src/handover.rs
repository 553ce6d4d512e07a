//! Moving mailboxes between hosts (SCALE.md, "A leaves cleanly"): an export
//! of a mailbox's live records and an import that keeps its id and its
//! sequence numbers.
//!
//! An export is what readers see of one mailbox: its record (address, owner
//! with the session token's hash, expiry, quota), its highest sequence, and
//! each stored message with its sequence, time, tags, envelope sender,
//! summary and raw bytes. Raw bytes come from the segment's mapping, so an
//! export copies nothing until it is sent.
//!
//! An import makes the destination's copy of the mailbox equal to the
//! export, in one batch on the mailbox's shard (all of it or none of it is
//! durable): the mailbox is created under the same id if absent, messages
//! past the copy's highest sequence are appended with their sequences,
//! messages the copy has and the export does not are deleted, and the
//! highest sequence is carried over even when its message is gone, so the
//! destination never hands out a sequence a client has already seen.
//! Importing the same export twice is the same as once: the second finds
//! nothing to write.
//!
//! A big mailbox travels in chunks ([`MailboxExport::into_chunks`]), each a
//! window of its sequences `(after, through]` bounded in bytes, imported in
//! order ([`Engine::import_chunk`]): a chunk makes the copy equal within its
//! window only, and the last one (open to the end) carries the highest
//! sequence. [`ExportChunk::encode`] is its wire form between hosts: the
//! engine's own record frames, checksums included (FORMAT.md), behind a
//! small header.
//!
//! Ids are kept, so the destination must route the id to the shard the
//! address goes to: both hosts need the same shard count
//! ([`ImportError::ShardMismatch`] otherwise). An id the destination already
//! uses for another address is refused ([`ImportError::IdTaken`]); the
//! partition prefix of mailbox ids ([`crate::EngineConfig::mailbox_id_prefix`])
//! keeps two hosts' ids apart, so that refusal is a misconfiguration, never
//! a race.

use std::time::Instant;

use bytes::Bytes;

use crate::api::Engine;
use crate::cmd::Cmd;
use crate::codec::{self, Kind, MailboxRec, MessageMetaRec, Record};
use crate::error::{BatchFailure, LookupError, OperationError, StorageError};
use crate::types::*;

/// One mailbox's live records, as [`Engine::export_mailbox`] read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxExport {
    /// Id, address, owner, times and quota (`message_count` is what was
    /// read; `last_seq` the highest sequence ever assigned).
    pub mailbox: MailboxInfo,
    /// The stored messages, in sequence order.
    pub messages: Vec<MessageExport>,
}

/// One stored message of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageExport {
    /// Its sequence in the mailbox.
    pub seq: u64,
    /// When the source committed it.
    pub received_at_ms: u64,
    /// Its plus tags, first seen first.
    pub plus_tags: Vec<String>,
    /// The envelope sender.
    pub envelope_from: String,
    /// The header summary.
    pub summary: MessageSummary,
    /// The raw bytes as stored.
    pub raw: Bytes,
}

/// What an import changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// The mailbox was not there and was created.
    pub created: bool,
    /// Messages appended.
    pub appended: u32,
    /// Messages the copy had and the export did not, deleted.
    pub deleted: u32,
    /// The copy's highest sequence was raised to the export's, whose
    /// message is gone.
    pub raised_last_seq: bool,
}

impl ImportReport {
    /// Nothing was written: the copy already equalled the export.
    pub fn unchanged(&self) -> bool {
        !self.created && self.appended == 0 && self.deleted == 0 && !self.raised_last_seq
    }
}

/// Why an import wrote nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The id would not route to the shard of its address here: the hosts
    /// have different shard counts.
    #[error("mailbox id {id} does not route to the shard of {address} on this host (different shard counts)")]
    ShardMismatch {
        /// The mailbox id.
        id: u64,
        /// Its address.
        address: Address,
    },
    /// Another mailbox here has this id.
    #[error("mailbox id {0} is already used here for another address")]
    IdTaken(u64),
    /// A live mailbox with another id holds the address here.
    #[error("{0} is held here by another mailbox")]
    AddressTaken(Address),
    /// The export names a message below the copy's highest sequence that
    /// the copy does not have: it would reuse a sequence.
    #[error(
        "message {seq} of mailbox {id} is below this copy's highest sequence and is not in it"
    )]
    SequenceBehind {
        /// The mailbox id.
        id: u64,
        /// The sequence.
        seq: u64,
    },
    /// A chunk names a message outside its own window.
    #[error("message {seq} of mailbox {id} is outside its chunk's window")]
    OutOfWindow {
        /// The mailbox id.
        id: u64,
        /// The sequence.
        seq: u64,
    },
    /// A record would exceed the frame limit.
    #[error("a message of the export is too large for a record")]
    TooLarge,
    /// The same mailbox is being imported in the batch being gathered;
    /// try again.
    #[error("the mailbox is being imported already; try again")]
    Busy,
    /// The writer's queue is full; try again.
    #[error("saturated")]
    Saturated,
    /// No space for the batch; try again later.
    #[error("disk full")]
    DiskFull,
    /// The storage failed or the engine is closing.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<BatchFailure> for ImportError {
    fn from(f: BatchFailure) -> Self {
        match f {
            BatchFailure::DiskFull => Self::DiskFull,
            other => Self::Storage(other.into()),
        }
    }
}

impl OperationError for ImportError {
    fn saturated() -> Self {
        Self::Saturated
    }
}

impl Engine {
    /// The live mailboxes whose address `wanted` selects (a host picks the
    /// mailboxes of the partitions it hands over), in id order.
    pub fn mailboxes_where(&self, wanted: impl Fn(&Address) -> bool) -> Vec<MailboxId> {
        let mut ids: Vec<MailboxId> = self
            .all_mailboxes()
            .into_iter()
            .filter(|m| wanted(&m.address))
            .map(|m| m.id)
            .collect();
        ids.sort();
        ids
    }

    /// One mailbox's live records. A message that fails its checksum is
    /// left out (it was never served); its sequence stays below `last_seq`.
    pub fn export_mailbox(&self, id: MailboxId) -> Result<MailboxExport, LookupError> {
        let mailbox = self.mailbox_by_id(id).ok_or(LookupError::NotFound)?;
        let mut messages = Vec::new();
        let mut since = 0;
        loop {
            let page = self.list_entries(id, since, 1024)?;
            let Some(last) = page.last() else { break };
            since = match last {
                ListEntry::Message(m) => m.id.seq,
                ListEntry::Gap { seq } => *seq,
            };
            for entry in page {
                let ListEntry::Message(meta) = entry else {
                    continue;
                };
                let raw = match self.read_raw(meta.id) {
                    Ok(raw) => raw,
                    // Deleted or found corrupt since it was listed.
                    Err(LookupError::NotFound | LookupError::Storage(StorageError::Corrupt)) => {
                        continue
                    }
                    Err(other) => return Err(other),
                };
                messages.push(MessageExport {
                    seq: meta.id.seq,
                    received_at_ms: meta.received_at_ms,
                    plus_tags: meta.plus_tags,
                    envelope_from: meta.envelope_from,
                    summary: meta.summary,
                    raw,
                });
            }
        }
        // Read after the messages, so it covers every sequence listed.
        let last_seq = self
            .mailbox_by_id(id)
            .map_or(mailbox.last_seq, |m| m.last_seq);
        let mailbox = MailboxInfo {
            message_count: u32::try_from(messages.len()).unwrap_or(u32::MAX),
            last_seq: last_seq.max(messages.last().map_or(0, |m| m.seq)),
            ..mailbox
        };
        Ok(MailboxExport { mailbox, messages })
    }

    /// Makes this host's copy of a mailbox equal to `export`, keeping its id
    /// and sequences; durable (fsynced) when it returns `Ok`.
    pub async fn import_mailbox(&self, export: MailboxExport) -> Result<ImportReport, ImportError> {
        let shard = self.shared().shard_of_address(&export.mailbox.address);
        if self.shared().shard_of_id(export.mailbox.id.0) != shard {
            return Err(ImportError::ShardMismatch {
                id: export.mailbox.id.0,
                address: export.mailbox.address,
            });
        }
        self.import_chunk(ExportChunk::whole(export)).await
    }

    /// [`Engine::import_mailbox`] of one chunk: the copy is made equal to it
    /// within its window. Chunks of one export go in order, each after the
    /// one before answered.
    pub async fn import_chunk(&self, chunk: ExportChunk) -> Result<ImportReport, ImportError> {
        let shard = self
            .shared()
            .shard_of_address(&chunk.export.mailbox.address);
        if self.shared().shard_of_id(chunk.export.mailbox.id.0) != shard {
            return Err(ImportError::ShardMismatch {
                id: chunk.export.mailbox.id.0,
                address: chunk.export.mailbox.address,
            });
        }
        let export = Box::new(chunk);
        let enq = Instant::now();
        self.call(shard, |reply| Cmd::Import { export, enq, reply })
            .await
    }
}

/// A window of one mailbox's export: its messages with sequences in
/// `(after, through]`; `through` is `u64::MAX` for the last chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportChunk {
    /// The mailbox (as in the whole export) and this window's messages.
    pub export: MailboxExport,
    /// Messages after this sequence.
    pub after: u64,
    /// Up to and including this one.
    pub through: u64,
}

/// Why bytes are not an encoded chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkDecodeError {
    /// Not this format, or a field that cannot be.
    #[error("not an export chunk")]
    Malformed,
    /// A record's checksum did not match.
    #[error("an export chunk's record failed its checksum")]
    Checksum,
}

/// First bytes of an encoded chunk (and its version).
const CHUNK_MAGIC: &[u8; 5] = b"UCXC\x01";

impl MailboxExport {
    /// Splits the export into chunks of at most about `max_bytes` of
    /// encoded records each (one message bigger than that goes alone), in
    /// sequence order; an export without messages is one chunk.
    pub fn into_chunks(self, max_bytes: usize) -> Vec<ExportChunk> {
        let MailboxExport { mailbox, messages } = self;
        let mut chunks = Vec::new();
        let mut current: Vec<MessageExport> = Vec::new();
        let mut bytes = 0usize;
        let mut after = 0u64;
        for message in messages {
            let size = message_len(&message);
            if !current.is_empty() && bytes.saturating_add(size) > max_bytes {
                let through = current.last().map_or(after, |m| m.seq);
                chunks.push(ExportChunk {
                    export: MailboxExport {
                        mailbox: mailbox.clone(),
                        messages: std::mem::take(&mut current),
                    },
                    after,
                    through,
                });
                after = through;
                bytes = 0;
            }
            bytes = bytes.saturating_add(size);
            current.push(message);
        }
        chunks.push(ExportChunk {
            export: MailboxExport {
                mailbox,
                messages: current,
            },
            after,
            through: u64::MAX,
        });
        chunks
    }
}

fn message_len(m: &MessageExport) -> usize {
    codec::message_payload_len(&meta_rec(m), m.raw.len()).saturating_add(16)
}

fn meta_rec(m: &MessageExport) -> MessageMetaRec {
    MessageMetaRec {
        plus_tags: m.plus_tags.clone(),
        envelope_from: m.envelope_from.clone(),
        summary: m.summary.clone(),
    }
}

impl ExportChunk {
    /// The whole export as one chunk.
    pub fn whole(export: MailboxExport) -> ExportChunk {
        ExportChunk {
            export,
            after: 0,
            through: u64::MAX,
        }
    }

    /// The wire form: magic and version, the window, the mailbox's highest
    /// sequence and count, then a `MailboxCreated` frame and one `Message`
    /// frame per message, each with its checksum (FORMAT.md).
    pub fn encode(&self) -> Vec<u8> {
        let info = &self.export.mailbox;
        let mut buf =
            Vec::with_capacity(64 + self.export.messages.iter().map(message_len).sum::<usize>());
        buf.extend_from_slice(CHUNK_MAGIC);
        buf.extend_from_slice(&self.after.to_le_bytes());
        buf.extend_from_slice(&self.through.to_le_bytes());
        buf.extend_from_slice(&info.last_seq.to_le_bytes());
        buf.extend_from_slice(&info.message_count.to_le_bytes());
        Record::MailboxCreated(MailboxRec {
            id: info.id.0,
            created_at_ms: info.created_at_ms,
            expires_at_ms: info.expires_at_ms,
            max_messages: info.max_messages,
            owner: info.owner.clone(),
            address: info.address.to_string(),
        })
        .encode_frame(&mut buf);
        for m in &self.export.messages {
            let start = codec::begin_frame(&mut buf, Kind::Message);
            codec::encode_message(
                &mut buf,
                info.id.0,
                m.seq,
                m.received_at_ms,
                &meta_rec(m),
                &m.raw,
            );
            codec::finish_frame(&mut buf, start);
        }
        buf
    }

    /// The inverse of [`ExportChunk::encode`]; message bytes are slices of
    /// `data`, not copies.
    pub fn decode(data: Bytes) -> Result<ExportChunk, ChunkDecodeError> {
        use ChunkDecodeError::{Checksum, Malformed};
        let u64_at = |at: usize| {
            data.get(at..at + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_le_bytes)
                .ok_or(Malformed)
        };
        if !data.starts_with(CHUNK_MAGIC) {
            return Err(Malformed);
        }
        let at = CHUNK_MAGIC.len();
        let (after, through, last_seq) = (u64_at(at)?, u64_at(at + 8)?, u64_at(at + 16)?);
        let message_count = data
            .get(at + 24..at + 28)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .ok_or(Malformed)?;
        let mut off = at + 28;
        let next = |off: &mut usize| -> Result<Option<Record<'_>>, ChunkDecodeError> {
            let frame = match codec::frame_at(&data, *off, data.len()) {
                Ok(frame) => frame,
                Err(codec::FrameError::End) if *off == data.len() => return Ok(None),
                Err(_) => return Err(Malformed),
            };
            if !frame.crc_ok() {
                return Err(Checksum);
            }
            *off += frame.total_len();
            codec::decode(frame.kind, frame.payload)
                .map(Some)
                .map_err(|_| Malformed)
        };
        let Some(Record::MailboxCreated(rec)) = next(&mut off)? else {
            return Err(Malformed);
        };
        let address = Address::parse(&rec.address).map_err(|_| Malformed)?;
        let mailbox = MailboxInfo {
            id: MailboxId(rec.id),
            address,
            owner: rec.owner,
            created_at_ms: rec.created_at_ms,
            expires_at_ms: rec.expires_at_ms,
            max_messages: rec.max_messages,
            message_count,
            last_seq,
        };
        let mut messages = Vec::new();
        while let Some(record) = next(&mut off)? {
            let Record::Message { head, meta, body } = record else {
                return Err(Malformed);
            };
            if head.mailbox != rec.id {
                return Err(Malformed);
            }
            messages.push(MessageExport {
                seq: head.seq,
                received_at_ms: head.received_at_ms,
                plus_tags: meta.plus_tags,
                envelope_from: meta.envelope_from,
                summary: meta.summary,
                raw: data.slice_ref(body),
            });
        }
        Ok(ExportChunk {
            export: MailboxExport { mailbox, messages },
            after,
            through,
        })
    }
}
