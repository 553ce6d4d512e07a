//! The key-value operations a lease needs, and an in-memory model of them.
//!
//! Only three operations: `create` (only if the key is absent), `update` (only
//! at the key's current revision) and `get`. The store removes a value
//! `max_age` after it was written; that removal is what frees the lease of a
//! host that stopped.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// A compare-and-set that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CasError {
    /// Someone else's write came first: the key exists (create) or is at
    /// another revision (update). Nothing was written.
    #[error("the key was written by someone else")]
    Conflict,
    /// The store did not answer; the write may or may not have happened.
    #[error("the key-value store is unavailable: {0}")]
    Unavailable(String),
}

/// A read that did not happen.
#[derive(Debug, thiserror::Error)]
#[error("the key-value store is unavailable: {0}")]
pub struct ReadError(pub String);

/// A value with the revision that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Bytes,
    /// The store's revision of the write (increases with every write to the bucket).
    pub revision: u64,
}

/// The compare-and-set key-value operations a lease is built on.
pub trait CasBucket {
    /// Writes `value` only if `key` has no value; returns the new revision.
    fn create(&self, key: &str, value: Bytes)
        -> impl Future<Output = Result<u64, CasError>> + Send;
    /// Writes `value` only if `key`'s current revision is `revision`.
    fn update(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> impl Future<Output = Result<u64, CasError>> + Send;
    /// The current value of `key`, if any.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Versioned>, ReadError>> + Send;
}

/// An in-memory model of a key-value bucket with `max_age`, on a clock the
/// test moves by hand. It answers as NATS does: a create over a live value
/// and an update at a stale revision are conflicts; a value older than
/// `max_age` is gone.
#[derive(Debug)]
pub struct MemoryBucket {
    max_age: Duration,
    inner: Mutex<MemoryInner>,
}

#[derive(Debug)]
struct MemoryInner {
    now: Instant,
    last_revision: u64,
    entries: HashMap<String, (Bytes, u64, Instant)>,
}

impl MemoryBucket {
    /// A bucket whose values live `max_age` after their write; its clock
    /// starts at `start`.
    pub fn new(max_age: Duration, start: Instant) -> MemoryBucket {
        MemoryBucket {
            max_age,
            inner: Mutex::new(MemoryInner {
                now: start,
                last_revision: 0,
                entries: HashMap::new(),
            }),
        }
    }

    /// Moves the store's clock to `now` (never backwards).
    pub fn set_now(&self, now: Instant) {
        let mut inner = self.lock();
        inner.now = inner.now.max(now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn live_revision(&self, inner: &MemoryInner, key: &str) -> Option<u64> {
        inner
            .entries
            .get(key)
            .filter(|(_, _, written)| inner.now.duration_since(*written) < self.max_age)
            .map(|(_, revision, _)| *revision)
    }

    fn write(inner: &mut MemoryInner, key: &str, value: Bytes) -> u64 {
        inner.last_revision += 1;
        let (revision, now) = (inner.last_revision, inner.now);
        inner.entries.insert(key.to_owned(), (value, revision, now));
        revision
    }
}

impl CasBucket for MemoryBucket {
    async fn create(&self, key: &str, value: Bytes) -> Result<u64, CasError> {
        let mut inner = self.lock();
        match self.live_revision(&inner, key) {
            Some(_) => Err(CasError::Conflict),
            None => Ok(Self::write(&mut inner, key, value)),
        }
    }

    async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, CasError> {
        let mut inner = self.lock();
        match self.live_revision(&inner, key) {
            Some(current) if current == revision => Ok(Self::write(&mut inner, key, value)),
            _ => Err(CasError::Conflict),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Versioned>, ReadError> {
        let inner = self.lock();
        Ok(self.live_revision(&inner, key).and_then(|revision| {
            inner.entries.get(key).map(|(value, _, _)| Versioned {
                value: value.clone(),
                revision,
            })
        }))
    }
}
