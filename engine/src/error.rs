//! Typed errors at the engine boundary, one enum per operation (redb's
//! `error.rs` is the model). Each variant says what the caller should tell its
//! client: SMTP maps them to reply codes, HTTP to problem types. Failures of
//! the storage layer itself are one shared [`StorageError`] inside each of
//! them, so a caller that only cares "is it my request or the storage?" can
//! match `Storage(_)` once.
//!
//! Nobody matches on the `Display` text of these: it is for logs only.

use std::io;
use std::path::PathBuf;

/// A failure of the storage layer itself, the same whatever was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An I/O error on this operation.
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
    /// A write or sync of the shard that owns this data failed earlier (or its
    /// writer thread died); that shard refuses writes until the engine is
    /// restarted and has recovered from the log (no retry after a failed
    /// fsync). Temporary for the sender: SMTP `451 4.3.0`, HTTP 503.
    #[error("storage failed and refuses writes until restart")]
    Poisoned,
    /// A stored record failed its checksum; it is quarantined and never served.
    #[error("stored record is corrupt")]
    Corrupt,
    /// The engine is shutting down.
    #[error("engine is shutting down")]
    Closed,
}

impl StorageError {
    /// True when the same request may succeed later (a sender should retry).
    pub fn is_temporary(&self) -> bool {
        !matches!(self, Self::Corrupt)
    }
}

/// Why [`crate::Engine::deliver`] stored nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliverError {
    /// The message is larger than `max_message_bytes`. Permanent: SMTP
    /// `552 5.3.4`, HTTP 413.
    #[error("message is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// A shard's append queue is full, or the same dedupe key is being
    /// written right now. Temporary: SMTP `451 4.3.0`, HTTP 503.
    #[error("storage is saturated; try again shortly")]
    Saturated,
    /// The data filesystem is (nearly) full. Temporary: SMTP `452 4.3.1`,
    /// HTTP 507. The shard accepts again by itself once space is back.
    #[error("storage is full")]
    DiskFull,
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl DeliverError {
    /// True when the same delivery may succeed later (a sender should retry).
    pub fn is_temporary(&self) -> bool {
        match self {
            Self::TooLarge { .. } => false,
            Self::Saturated | Self::DiskFull => true,
            Self::Storage(e) => e.is_temporary(),
        }
    }
}

/// Why [`crate::Engine::create_mailbox`] created nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateMailboxError {
    /// The address is not in one of our domains.
    #[error("domain not served here")]
    ForeignDomain,
    /// The address is not available: a live mailbox has it, or its
    /// mailbox ended less than `address_quarantine` ago and the new owner
    /// is not the old one (deliberately one answer for both).
    #[error("this address is not available")]
    AlreadyExists,
    /// The shard's queue is full. Temporary.
    #[error("storage is saturated; try again shortly")]
    Saturated,
    /// The data filesystem is full. Temporary.
    #[error("storage is full")]
    DiskFull,
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a write other than a delivery or a mailbox creation (deleting a
/// mailbox or message, creating a user, subscription or key, revoking a key)
/// was not done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The mailbox, message, user or key it names does not exist (or has
    /// expired, or was deleted).
    #[error("not found")]
    NotFound,
    /// The thing to create exists already (an API key with this hash).
    #[error("already exists")]
    AlreadyExists,
    /// A fixed bound of the engine would be exceeded (e.g. the number or
    /// size of `State` entries). Permanent for this request.
    #[error("a storage limit was reached")]
    LimitReached,
    /// The shard's queue is full. Temporary.
    #[error("storage is saturated; try again shortly")]
    Saturated,
    /// The data filesystem is full. Temporary.
    #[error("storage is full")]
    DiskFull,
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a read (listing, metadata, raw bytes, subscription) found nothing to
/// return.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// No such live mailbox or message.
    #[error("not found")]
    NotFound,
    /// The storage failed ([`StorageError::Corrupt`] for a record that
    /// failed its checksum, [`StorageError::Closed`] while shutting down).
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a whole batch of writes failed; each staged command turns it into its
/// own operation's error. Cloneable because one failure answers many callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchFailure {
    /// The shard is poisoned (a failed sync, or its thread died).
    Poisoned,
    /// No space for the batch; nothing of it is in the log. Temporary.
    DiskFull,
    /// The engine is shutting down.
    Closed,
}

impl From<BatchFailure> for StorageError {
    fn from(f: BatchFailure) -> Self {
        match f {
            BatchFailure::Poisoned => Self::Poisoned,
            BatchFailure::Closed => Self::Closed,
            BatchFailure::DiskFull => Self::Io(io::ErrorKind::StorageFull.into()),
        }
    }
}

impl From<BatchFailure> for DeliverError {
    fn from(f: BatchFailure) -> Self {
        match f {
            BatchFailure::DiskFull => Self::DiskFull,
            other => Self::Storage(other.into()),
        }
    }
}

impl From<BatchFailure> for CreateMailboxError {
    fn from(f: BatchFailure) -> Self {
        match f {
            BatchFailure::DiskFull => Self::DiskFull,
            other => Self::Storage(other.into()),
        }
    }
}

impl From<BatchFailure> for WriteError {
    fn from(f: BatchFailure) -> Self {
        match f {
            BatchFailure::DiskFull => Self::DiskFull,
            other => Self::Storage(other.into()),
        }
    }
}

/// What every write operation's error can be made from: a batch failure, or
/// a full queue.
pub(crate) trait OperationError: From<BatchFailure> {
    fn saturated() -> Self;
}

impl OperationError for DeliverError {
    fn saturated() -> Self {
        Self::Saturated
    }
}

impl OperationError for CreateMailboxError {
    fn saturated() -> Self {
        Self::Saturated
    }
}

impl OperationError for WriteError {
    fn saturated() -> Self {
        Self::Saturated
    }
}

/// Why a recipient cannot receive mail. Each maps to one SMTP reply:
/// the comment on each variant is the reply `smtpd` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// `550 5.7.1` — not one of our domains; we are never a relay.
    #[error("relay not permitted")]
    ForeignDomain,
    /// `550 5.1.1` — no live mailbox at that address (never created, deleted or expired).
    #[error("no such mailbox")]
    NoSuchMailbox,
    /// `452 4.2.2` — the mailbox holds its plan's maximum of messages.
    #[error("mailbox full")]
    MailboxFull,
    /// `553 5.1.3` — not a syntactically acceptable address.
    #[error("bad address syntax")]
    BadAddress,
}

/// Why [`crate::Engine::open`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The data directory could not be created, read or locked.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Another process has the data directory open.
    #[error("data directory {0} is locked by another process")]
    Locked(PathBuf),
    /// A segment written by a newer, unknown format version.
    #[error("segment {path} has unsupported format version {version}")]
    UnsupportedVersion {
        /// The segment file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
    /// Other I/O failure during recovery.
    #[error("recovery I/O error: {0}")]
    Io(#[from] io::Error),
    /// The configuration is unusable.
    #[error("invalid engine configuration: {0}")]
    Config(String),
}
