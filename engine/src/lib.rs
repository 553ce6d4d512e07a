//! uncorreo's storage engine: the durable heart of the appliance.
//!
//! Everything that must survive a restart is a record in an append-only,
//! segmented log (see `FORMAT.md` in this crate for the bytes on disk). Each
//! log shard is owned by one writer thread that gathers appends into batches
//! and makes each batch durable with one `pwrite` + one `fdatasync` (group
//! commit). The in-memory index (mailbox → ordered message refs) is updated
//! only after a batch is durable, and events are published to subscribers only
//! after that: a reader or a subscriber never sees a message that a crash
//! could take back.
//!
//! [`Engine::deliver`] is the single delivery entry point for every ingest path
//! (SMTP, the SES webhook, anything later).
//!
//! Architecture invariant: this crate knows nothing about SMTP or HTTP. It
//! speaks in mailboxes, messages, users and keys, and answers with typed errors
//! that say what the caller should tell its client.

#![deny(clippy::unwrap_used, clippy::expect_used)]
// Only `sys` (memory maps, flock, statvfs) may use unsafe code.
#![deny(unsafe_code)]

mod api;
mod backup;
pub mod campaign;
mod campaign_api;
pub use campaign_api::{CampaignWatch, WatchCampaignError};
mod clock;
mod cmd;
mod codec;
mod compaction;
mod error;
pub mod fanout;
mod files;
mod handover;
mod ids;
mod poison;
mod quota;
mod recovery;
mod retry;
mod segment;
mod state;
mod summary_pool;
mod sys;
mod tombstone;
mod types;
mod writer;

pub use api::{Engine, MAX_STATE_KEY_BYTES, MAX_STATE_VALUE_BYTES};
pub use backup::{verify, BackupError, BackupReport, VerifyReport};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{
    CreateMailboxError, DeliverError, LookupError, OpenError, ResolveError, StorageError,
    WriteError,
};
pub use fanout::{SubscribeError, Subscriber, SubscriberLimits};
pub use files::{DataFile, Io, RealIo};
pub use handover::{
    ChunkDecodeError, ExportChunk, ImportError, ImportReport, MailboxExport, MessageExport,
};
pub use quota::QuotaHolds;
pub use state::{EventTap, Tapped};
pub use sys::set_mmap_threshold;
pub use types::*;

/// Entry points for `fuzz/`; not part of the engine's API.
#[doc(hidden)]
pub mod fuzzing {
    /// Decode `bytes` as a segment header, a hint file and a run of record
    /// frames, as recovery would. Must never panic.
    pub fn decode_log_bytes(bytes: &[u8]) -> usize {
        crate::codec::decode_all_for_fuzzing(bytes)
    }
}
