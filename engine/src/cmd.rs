//! The commands a shard's writer thread runs, one variant per operation.
//!
//! The handle (`api.rs`) builds them and the writer (`writer/`) consumes
//! them; neither the index (`state.rs`) nor the writer needs the other to
//! name them.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::compaction::{RewriteOutcome, RewriteOutput};
use crate::error::{
    BatchFailure, CreateMailboxError, DeliverError, ResolveError, StorageError, WriteError,
};
use crate::ids::SegmentNo;
use crate::types::*;

pub(crate) type Reply<T, E> = oneshot::Sender<Result<T, E>>;
/// Per recipient: its new message id, or why it was refused.
pub(crate) type RcptResults = Vec<(Recipient, Result<MessageId, ResolveError>)>;

/// What a writer is asked to do.
pub(crate) enum Cmd {
    Deliver {
        raw: Bytes,
        envelope_from: String,
        summary: Arc<MessageSummary>,
        rcpts: Vec<(Recipient, MailboxId)>,
        /// (key, number of shards the delivery went to)
        dedupe: Option<(String, u8)>,
        /// Quota reserved at RCPT, consumed as each copy is counted.
        holds: crate::quota::QuotaHolds,
        /// The delivery's key, to record this part for a retry once
        /// durable, and the dedupe key it settles (see `retry.rs`).
        retry: Option<(
            crate::retry::DeliveryKey,
            Option<Arc<crate::retry::PendingKey>>,
        )>,
        enq: Instant,
        /// The caller's clock when it asked (timestamps in the record).
        at: u64,
        reply: Reply<RcptResults, DeliverError>,
    },
    /// The keyed delivery tried at `at` succeeded everywhere: note it in
    /// the log with the next batch (`retry.rs`). Never answered.
    ForgetPart {
        key: crate::retry::DeliveryKey,
        at: u64,
    },
    CreateMailbox {
        new: NewMailbox,
        enq: Instant,
        /// The caller's clock when it asked (timestamps in the record).
        at: u64,
        reply: Reply<MailboxInfo, CreateMailboxError>,
    },
    DeleteMailbox {
        id: u64,
        enq: Instant,
        reply: Reply<(), WriteError>,
    },
    DeleteMessage {
        id: MessageId,
        enq: Instant,
        reply: Reply<(), WriteError>,
    },
    CreateUser {
        name: String,
        enq: Instant,
        /// The caller's clock when it asked (timestamps in the record).
        at: u64,
        reply: Reply<UserInfo, WriteError>,
    },
    AddSubscription {
        user: u64,
        sub: Subscription,
        enq: Instant,
        reply: Reply<(), WriteError>,
    },
    CreateKey {
        user: u64,
        hash: [u8; 32],
        prefix: String,
        enq: Instant,
        /// The caller's clock when it asked (timestamps in the record).
        at: u64,
        reply: Reply<ApiKeyInfo, WriteError>,
    },
    RevokeKey {
        id: u64,
        enq: Instant,
        /// The caller's clock when it asked (timestamps in the record).
        at: u64,
        reply: Reply<(), WriteError>,
    },
    /// End every subscription of a user and add one (operator action; shard 0).
    ReplaceSubscriptions {
        user: u64,
        sub: Subscription,
        enq: Instant,
        reply: Reply<(), WriteError>,
    },
    /// Mark a user disabled (operator action; shard 0).
    DisableUser {
        id: u64,
        enq: Instant,
        /// The caller's clock when it asked (timestamps in the record).
        at: u64,
        reply: Reply<(), WriteError>,
    },
    /// Record an operator action in the audit trail (shard 0).
    Audit {
        entry: AuditEntry,
        enq: Instant,
        reply: Reply<(), WriteError>,
    },
    /// Set or delete a `State` entry (shard 0).
    PutState {
        key: String,
        value: Option<String>,
        enq: Instant,
        reply: Reply<(), WriteError>,
    },
    /// Make this shard's copy of a mailbox equal to an export, within the
    /// export's window of sequences (`handover.rs`).
    Import {
        export: Box<crate::handover::ExportChunk>,
        enq: Instant,
        reply: Reply<crate::handover::ImportReport, crate::handover::ImportError>,
    },
    /// A campaign write (`campaign.rs`), staged by `writer/campaign.rs`.
    Campaign(CampaignCmd),
    /// Compaction: a number for the rewrite of sealed segment `seg` (and
    /// the shard's id counter for its header), or `None` if `seg` is not
    /// sealed (any more).
    RewriteBegin {
        seg: SegmentNo,
        reply: crossbeam_channel::Sender<Result<Option<(SegmentNo, u64)>, StorageError>>,
    },
    /// Compaction: put a written rewrite in place of its segment.
    RewriteSwap {
        output: Box<RewriteOutput>,
        reply: crossbeam_channel::Sender<Result<RewriteOutcome, StorageError>>,
    },
    /// Test-only fault injection: panic on the writer thread, so that its
    /// poison guard runs (`notify` is dropped after that).
    PanicForTests {
        notify: crossbeam_channel::Sender<()>,
    },
    /// Flush, seal, stop.
    Shutdown {
        reply: crossbeam_channel::Sender<()>,
    },
}

/// Campaign writes: creation and deletion on shard 0, messages on the
/// campaign's shard.
pub(crate) enum CampaignCmd {
    Create {
        new: crate::campaign::NewCampaign,
        /// The caller's clock when it asked.
        at: u64,
        enq: Instant,
        reply: Reply<crate::campaign::CampaignInfo, crate::campaign::CreateCampaignError>,
    },
    Delete {
        id: u64,
        enq: Instant,
        reply: Reply<(), WriteError>,
    },
    Deliver {
        raw: Bytes,
        envelope_from: String,
        /// Each recipient, its campaign and what its header scan found.
        rcpts: Vec<(
            Recipient,
            crate::campaign::CampaignId,
            Arc<uncorreo_campaign_report::Scanned>,
        )>,
        /// (key, number of shards the delivery went to)
        dedupe: Option<(String, u8)>,
        enq: Instant,
        reply: Reply<RcptResults, DeliverError>,
    },
}

impl CampaignCmd {
    fn fail(self, e: BatchFailure) {
        match self {
            Self::Create { reply, .. } => drop(reply.send(Err(e.into()))),
            Self::Delete { reply, .. } => drop(reply.send(Err(e.into()))),
            Self::Deliver { reply, .. } => drop(reply.send(Err(e.into()))),
        }
    }
}

impl Cmd {
    /// Answer a command that will not run (its shard failed) with `e`.
    pub(crate) fn fail(self, e: BatchFailure) {
        match self {
            Cmd::Deliver { reply, retry, .. } => {
                crate::retry::answer_delivery(reply, retry, Err(e.into()))
            }
            Cmd::CreateMailbox { reply, .. } => drop(reply.send(Err(e.into()))),
            Cmd::DeleteMailbox { reply, .. }
            | Cmd::DeleteMessage { reply, .. }
            | Cmd::AddSubscription { reply, .. }
            | Cmd::RevokeKey { reply, .. }
            | Cmd::DisableUser { reply, .. }
            | Cmd::Audit { reply, .. }
            | Cmd::ReplaceSubscriptions { reply, .. }
            | Cmd::PutState { reply, .. } => drop(reply.send(Err(e.into()))),
            Cmd::CreateUser { reply, .. } => drop(reply.send(Err(e.into()))),
            Cmd::CreateKey { reply, .. } => drop(reply.send(Err(e.into()))),
            Cmd::Import { reply, .. } => drop(reply.send(Err(e.into()))),
            Cmd::RewriteBegin { reply, .. } => drop(reply.send(Err(e.into()))),
            Cmd::RewriteSwap { reply, .. } => drop(reply.send(Err(e.into()))),
            Cmd::Shutdown { reply } => drop(reply.send(())),
            Cmd::Campaign(c) => c.fail(e),
            Cmd::PanicForTests { notify } => drop(notify),
            Cmd::ForgetPart { .. } => {}
        }
    }
}
