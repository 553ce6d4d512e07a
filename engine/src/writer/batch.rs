//! A batch being gathered: its bytes, what each record will change in memory
//! once the batch is durable, and how to answer each command.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use crate::cmd::{RcptResults, Reply};
use crate::codec::{HintEntry, Kind, Record};
use crate::error::{BatchFailure, CreateMailboxError, DeliverError, WriteError};
use crate::types::*;

/// What to do to the in-memory state once a batch is durable.
pub(super) enum Apply {
    Message {
        mailbox: MailboxId,
        seq: u64,
        rel: usize,
        len: u32,
        event: Event,
        /// The reservation that paid for it, given back once it is counted.
        hold: Option<crate::quota::QuotaHolds>,
    },
    MailboxCreated {
        info: MailboxInfo,
        rel: usize,
        len: u32,
    },
    MailboxDeleted {
        id: MailboxId,
    },
    /// A deleted mailbox's claim on its address (`tombstone.rs`).
    Tombstone {
        address: Address,
        tombstone: crate::tombstone::Tombstone,
    },
    MessageDeleted {
        mailbox: MailboxId,
        seq: u64,
    },
    /// An imported mailbox's highest sequence, whose message is gone.
    LastSeq {
        mailbox: MailboxId,
        seq: u64,
    },
    User(UserInfo),
    Sub {
        user: u64,
        sub: Subscription,
    },
    Key(ApiKeyInfo),
    Revoke {
        id: u64,
        at_ms: u64,
    },
    Disable {
        id: u64,
        at_ms: u64,
    },
    ReplaceSubs {
        user: u64,
        sub: Subscription,
    },
    Audit(AuditEntry),
    State {
        key: String,
        version: u64,
        value: Option<String>,
        len: u32,
    },
    Campaign(super::campaign::CampaignApply),
}

/// How to answer a staged command once its batch is durable (or failed).
pub(super) enum Ack {
    /// With the part to remember for a retry (see `retry.rs`).
    Deliver(
        Reply<RcptResults, DeliverError>,
        RcptResults,
        Option<crate::retry::PartRecord>,
    ),
    Mailbox(Reply<MailboxInfo, CreateMailboxError>, MailboxInfo),
    Unit(Reply<(), WriteError>),
    User(Reply<UserInfo, WriteError>, UserInfo),
    Key(Reply<ApiKeyInfo, WriteError>, ApiKeyInfo),
    Import(
        Reply<crate::handover::ImportReport, crate::handover::ImportError>,
        crate::handover::ImportReport,
    ),
    Campaign(
        Reply<crate::campaign::CampaignInfo, crate::campaign::CreateCampaignError>,
        crate::campaign::CampaignInfo,
    ),
}

impl Ack {
    pub(super) fn fail(self, e: BatchFailure) {
        match self {
            Ack::Deliver(r, _, part) => crate::retry::answer_delivery(r, part, Err(e.into())),
            Ack::Mailbox(r, _) => drop(r.send(Err(e.into()))),
            Ack::Unit(r) => drop(r.send(Err(e.into()))),
            Ack::User(r, _) => drop(r.send(Err(e.into()))),
            Ack::Key(r, _) => drop(r.send(Err(e.into()))),
            Ack::Import(r, _) => drop(r.send(Err(e.into()))),
            Ack::Campaign(r, _) => drop(r.send(Err(e.into()))),
        }
    }
    pub(super) fn ok(self) {
        match self {
            Ack::Deliver(r, v, part) => crate::retry::answer_delivery(r, part, Ok(v)),
            Ack::Mailbox(r, v) => drop(r.send(Ok(v))),
            Ack::Unit(r) => drop(r.send(Ok(()))),
            Ack::User(r, v) => drop(r.send(Ok(v))),
            Ack::Key(r, v) => drop(r.send(Ok(v))),
            Ack::Import(r, v) => drop(r.send(Ok(v))),
            Ack::Campaign(r, v) => drop(r.send(Ok(v))),
        }
    }
}

/// A command in the batch, waiting for the batch to be durable.
pub(super) struct Staged {
    pub(super) ack: Ack,
    /// When it was queued (the commit-latency metric).
    pub(super) enq: Instant,
}

/// One batch being gathered: the bytes, what they mean, and the writer's
/// view of state changes not yet committed.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) buf: Vec<u8>,
    pub(super) staged: Vec<Staged>,
    pub(super) applies: Vec<Apply>,
    pub(super) hints: Vec<HintEntry>,
    pub(super) records: u32,
    /// mailbox → (last_seq, message_count) including this batch.
    pub(super) mailbox_counts: HashMap<MailboxId, (u64, u32)>,
    /// mailbox → copies staged in this batch whose RCPT reservation is
    /// still in the table (counted in `mailbox_counts` already).
    pub(super) held_staged: HashMap<MailboxId, u32>,
    pub(super) new_addresses: HashMap<Address, MailboxId>,
    pub(super) deleted_mailboxes: HashSet<MailboxId>,
    pub(super) deleted_messages: HashSet<(MailboxId, u64)>,
    pub(super) key_hashes: HashSet<[u8; 32]>,
    /// `State` keys this batch sets, for the entry limit.
    pub(super) new_states: HashSet<String>,
    /// Campaigns: created, deleted, and (last seq, messages) per campaign,
    /// including this batch.
    pub(super) campaigns: super::campaign::Staged,
}

impl Batch {
    /// Encode `rec` as the next frame; (offset in the batch, frame length).
    pub(super) fn frame(&mut self, rec: &Record<'_>, a: u64, b: u64) -> (usize, u32) {
        let start = self.buf.len();
        rec.encode_frame(&mut self.buf);
        self.push_hint(start, rec.kind(), a, b)
    }

    /// Answer `ack` once this batch is durable.
    pub(super) fn answer_after_commit(&mut self, ack: Ack, enq: Instant) {
        self.staged.push(Staged { ack, enq });
    }

    /// Count the frame that starts at `start` and remember its hint entry.
    pub(super) fn push_hint(&mut self, start: usize, kind: Kind, a: u64, b: u64) -> (usize, u32) {
        let len = (self.buf.len() - start) as u32;
        self.records += 1;
        self.hints.push(HintEntry {
            off: start as u32,
            len,
            kind: kind as u8,
            a,
            b,
        });
        (start, len)
    }
}
