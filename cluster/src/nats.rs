//! The lease store on a NATS JetStream key-value bucket.
//!
//! A bucket keeps one value per key (`history = 1`). The lease bucket removes
//! a value `max_age` after its write, which frees the lease of a host that
//! stopped; the bucket of homes keeps its values until they are overwritten.
//! `create` and `update` map to the bucket's own compare-and-set, so the NATS
//! server, not this code, decides which of two racing writes wins.

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use async_nats::jetstream::stream;
use bytes::Bytes;

use crate::store::{CasBucket, CasError, ReadError, Versioned};

/// A lease bucket on a NATS server.
#[derive(Clone)]
pub struct NatsBucket {
    bucket: kv::Store,
}

impl std::fmt::Debug for NatsBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBucket")
            .field("bucket", &self.bucket.name)
            .finish()
    }
}

/// The lease bucket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The server did not accept the connection.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why.
        source: async_nats::ConnectError,
    },
    /// JetStream refused to create or open the bucket (JetStream off, or a
    /// bucket of that name with other settings).
    #[error("cannot open the key-value bucket {bucket}: {source}")]
    Bucket {
        /// The bucket's name.
        bucket: String,
        /// Why.
        source: BucketError,
    },
}

/// Why the bucket's stream could not be made or opened.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// Creating (or reading) the stream failed.
    #[error("{0}")]
    Stream(async_nats::jetstream::context::CreateStreamError),
    /// The stream exists but does not open as a bucket.
    #[error("{0}")]
    Open(async_nats::jetstream::context::KeyValueError),
}

impl NatsBucket {
    /// Connects to `url` and opens (or creates) `bucket` with values that
    /// live `max_age` (`None`: until overwritten). Each request gives up after `request_timeout`,
    /// which should be under the renewal interval so a silent server shows up
    /// before the lease runs out.
    pub async fn open(
        url: &str,
        bucket: &str,
        max_age: Option<Duration>,
        request_timeout: Duration,
    ) -> Result<NatsBucket, OpenError> {
        let client = async_nats::ConnectOptions::new()
            .request_timeout(Some(request_timeout))
            .connection_timeout(request_timeout)
            .connect(url)
            .await
            .map_err(|source| OpenError::Connect {
                url: url.to_owned(),
                source,
            })?;
        let jetstream = async_nats::jetstream::new(client);
        // The bucket's stream is made here rather than by `create_key_value`,
        // which first reads account fields that Debian's nats-server 2.9 does
        // not send. It is the key-value layout NATS documents: one stream
        // `KV_<bucket>` over `$KV.<bucket>.>`, one value per key.
        let stream = stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            // Zero is JetStream's "no limit".
            max_age: max_age.unwrap_or(Duration::ZERO),
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        };
        let failed = |source| OpenError::Bucket {
            bucket: bucket.to_owned(),
            source,
        };
        jetstream
            .get_or_create_stream(stream)
            .await
            .map_err(|source| failed(BucketError::Stream(source)))?;
        let bucket = jetstream
            .get_key_value(bucket)
            .await
            .map_err(|source| failed(BucketError::Open(source)))?;
        Ok(NatsBucket { bucket })
    }
}

impl NatsBucket {
    /// The bucket itself, for watches.
    pub fn kv(&self) -> &kv::Store {
        &self.bucket
    }

    /// Writes `value` whatever is there (a key only its writer writes, such
    /// as a host's `node.<id>`).
    pub async fn put(&self, key: &str, value: Bytes) -> Result<u64, CasError> {
        self.bucket
            .put(key, value)
            .await
            .map_err(|error| CasError::Unavailable(error.to_string()))
    }
}

impl NatsBucket {
    /// Every key with a value now (a short listing: node records).
    pub async fn keys(&self) -> Result<Vec<String>, ReadError> {
        use futures_util::TryStreamExt;
        let keys = self
            .bucket
            .keys()
            .await
            .map_err(|error| ReadError(error.to_string()))?;
        keys.try_collect()
            .await
            .map_err(|error| ReadError(error.to_string()))
    }
}

impl CasBucket for NatsBucket {
    async fn create(&self, key: &str, value: Bytes) -> Result<u64, CasError> {
        self.bucket
            .create(key, value)
            .await
            .map_err(|error| match error.kind() {
                CreateErrorKind::AlreadyExists => CasError::Conflict,
                _ => CasError::Unavailable(error.to_string()),
            })
    }

    async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, CasError> {
        self.bucket
            .update(key, value, revision)
            .await
            .map_err(|error| match error.kind() {
                UpdateErrorKind::WrongLastRevision => CasError::Conflict,
                _ => CasError::Unavailable(error.to_string()),
            })
    }

    async fn get(&self, key: &str) -> Result<Option<Versioned>, ReadError> {
        let entry = self
            .bucket
            .entry(key)
            .await
            .map_err(|error| ReadError(error.to_string()))?;
        Ok(entry
            .filter(|entry| entry.operation == kv::Operation::Put)
            .map(|entry| Versioned {
                value: entry.value,
                revision: entry.revision,
            }))
    }
}
