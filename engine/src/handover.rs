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
        let export = Box::new(export);
        let enq = Instant::now();
        self.call(shard, |reply| Cmd::Import { export, enq, reply })
            .await
    }
}
