//! Typed errors at the engine boundary. Each variant says what the caller
//! should tell its client: SMTP maps them to reply codes, HTTP to problem types.

use std::io;
use std::path::PathBuf;

/// Why a write or read could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The shard's append queue is full. Temporary: SMTP `451 4.3.0`, HTTP 503.
    #[error("storage is saturated; try again shortly")]
    Saturated,
    /// Free space on the data filesystem is below the floor. Temporary: `451 4.3.0` / 507.
    #[error("storage is full")]
    DiskFull,
    /// A write or sync failed earlier; the engine refuses writes until it is
    /// restarted and has recovered from the log (no retry after a failed fsync).
    #[error("storage failed and refuses writes until restart")]
    Poisoned,
    /// An I/O error on this operation.
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
    /// A stored record failed its checksum; it is quarantined and never served.
    #[error("stored record is corrupt")]
    Corrupt,
    /// No such mailbox, message, user or key (or expired, or deleted).
    #[error("not found")]
    NotFound,
    /// The thing to create exists already (e.g. a live mailbox at that address).
    #[error("already exists")]
    AlreadyExists,
    /// A quota would be exceeded.
    #[error("quota exceeded")]
    QuotaExceeded,
    /// The request itself is invalid (foreign domain, message too large, …).
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// The engine is shutting down.
    #[error("engine is shutting down")]
    Closed,
}

impl EngineError {
    /// True when the same request may succeed later (a sender should retry).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            Self::Saturated | Self::DiskFull | Self::Poisoned | Self::Io(_) | Self::Closed
        )
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
