//! SES → SNS ingest: everything behind the webhook `POST /api/v1/ses/inbound`
//! except HTTP itself, which stays a thin route in `uncorreo-api`.
//!
//! SES receives mail for our domains, its receipt rule's SNS action publishes
//! the whole message to a topic, and SNS posts it to the webhook, which hands
//! the header and body to [`Ingest::handle`]. This crate checks that
//! the post really comes from SNS (signature over the documented string, with a
//! certificate fetched only from an SNS host), that it is for a topic we
//! subscribed to and recent, then hands the message to
//! [`uncorreo_engine::Engine::deliver`] — the same entry point as SMTP — with
//! the SNS `MessageId` as dedupe key, and answers only after that is durable.
//!
//! Every request ends in one [`Answer`]: `retry` only when retrying can help
//! (storage failed temporarily, or a certificate / confirmation fetch
//! failed), which the route answers `503` so SNS tries again; a body over the
//! limit is [`Outcome::TooLarge`] (`413`). Everything dropped on purpose (bad
//! signature, unknown topic, stale, duplicate, no local recipient, malformed)
//! is final, which the route answers `200`, or SNS would retry it for days;
//! the detail and the log say why, and
//! `uncorreo_ses_notifications_total{outcome=…}` counts it.
//!
//! Architecture invariant: this crate is the only one that depends on rsa,
//! x509-cert and the outgoing HTTPS client; it knows no HTTP server
//! framework. Mail goes to storage only through
//! [`uncorreo_engine::Engine::deliver`].
//!
//! The subscription must not use SNS "raw message delivery": raw messages
//! carry no signature and are dropped as `malformed`.
//!
//! Code map: [`url`] (which hosts we fetch from), [`message`] (envelope and
//! string to sign), [`mod@verify`] (pure signature check), [`certs`] (certificate
//! sources and cache), [`https`] (the no-redirect HTTPS GET), [`ses`] (the SES
//! payload), [`time`] (date formats), [`ingest`] (one request, start to end).

pub mod certs;
#[cfg(feature = "fixture")]
pub mod fixture;
pub mod https;
pub mod ingest;
pub mod message;
pub mod ses;
pub mod time;
pub mod url;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uncorreo_engine::{Clock, Engine};

pub use certs::{CertCache, CertError, CertSource, DirCertSource, HttpsCertSource};
pub use https::{FetchError, HttpsClient};
pub use ingest::{Answer, Outcome};
pub use message::{MessageType, SnsMessage};
pub use url::{SnsUrl, UrlError};
pub use verify::{verify, VerifyError};

/// Settings of the SES webhook (the `[sns]` table of the config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnsConfig {
    /// Topics we accept messages from and confirm subscriptions to. Empty
    /// (the default) means every message is dropped as `unknown_topic`.
    pub allowed_topic_arns: Vec<String>,
    /// A message whose `Timestamp` is older than this is dropped as `stale`
    /// (bounds replay of a captured message; SNS retries stay well within it).
    pub max_age_secs: u64,
    /// A `Timestamp` further than this in the future is dropped as `stale` too.
    pub max_future_secs: u64,
    /// Largest request body; larger ones get `413`. SNS messages are ≤ 256 KiB.
    pub max_body_bytes: usize,
    /// Timeout of one certificate or subscription-confirmation fetch, in ms.
    pub fetch_timeout_ms: u64,
    /// Signing certificates kept in memory (each fetched once per URL).
    pub cert_cache_entries: usize,
    /// Lowest `SignatureVersion` accepted: 1 (SHA1withRSA, SNS's default) or
    /// 2 (SHA256withRSA only; set the topic's `SignatureVersion` to 2 first).
    pub min_signature_version: u8,
    /// OFFLINE/TEST USE ONLY: read signing certificates from this directory
    /// (file name = last path segment of `SigningCertURL`) instead of fetching
    /// them over HTTPS. The URL host rules still apply. Whoever can write to
    /// this directory can forge mail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_cert_dir: Option<PathBuf>,
}

impl Default for SnsConfig {
    fn default() -> Self {
        Self {
            allowed_topic_arns: Vec::new(),
            max_age_secs: 3600,
            max_future_secs: 300,
            max_body_bytes: 1024 * 1024,
            fetch_timeout_ms: 5000,
            cert_cache_entries: 32,
            min_signature_version: 1,
            trusted_cert_dir: None,
        }
    }
}

/// Confirms a subscription by visiting its `SubscribeURL` (already checked
/// against the SNS host rules). A trait so tests need no network.
pub trait SubscribeConfirmer: Send + Sync + 'static {
    /// GET `url`; `Ok` when SNS answered 200.
    fn confirm<'a>(&'a self, url: &'a SnsUrl) -> certs::BoxFuture<'a, Result<(), FetchError>>;
}

/// Largest confirmation response we read (SNS answers with a short XML document).
const MAX_CONFIRM_RESPONSE: usize = 64 * 1024;

impl SubscribeConfirmer for HttpsClient {
    fn confirm<'a>(&'a self, url: &'a SnsUrl) -> certs::BoxFuture<'a, Result<(), FetchError>> {
        Box::pin(async move { self.get(url, MAX_CONFIRM_RESPONSE).await.map(|_| ()) })
    }
}

/// The engine's own clock, so the webhook and storage agree on "now".
struct EngineClock(Engine);

impl Clock for EngineClock {
    fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }
}

/// Everything the webhook needs; cheap to clone, shared by all cores.
#[derive(Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    config: SnsConfig,
    hostname: String,
    certs: CertCache,
    confirmer: Arc<dyn SubscribeConfirmer>,
    clock: Arc<dyn Clock>,
    /// With `[cluster] listen`: recipients another host owns are checked
    /// and stored there. Set once at start.
    cluster: std::sync::OnceLock<Arc<uncorreo_hop::Cluster>>,
}

/// The webhook could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("setting up the SNS webhook: {0}")]
pub struct SetupError(#[from] FetchError);

impl Ingest {
    /// Production wiring: certificates over HTTPS (or from `trusted_cert_dir`
    /// when set), confirmations over HTTPS, the engine's clock. `hostname` is
    /// the name our `Received:` lines give.
    pub fn new(engine: Engine, config: SnsConfig, hostname: String) -> Result<Self, SetupError> {
        let client = HttpsClient::new(Duration::from_millis(config.fetch_timeout_ms))?;
        let source: Arc<dyn CertSource> = match &config.trusted_cert_dir {
            Some(dir) => {
                tracing::warn!(
                    dir = %dir.display(),
                    "SNS signing certificates are read from a local directory, not fetched from AWS (offline/test mode)"
                );
                Arc::new(DirCertSource::new(dir.clone()))
            }
            None => Arc::new(HttpsCertSource::new(client.clone())),
        };
        if config.allowed_topic_arns.is_empty() {
            tracing::info!("sns.allowed_topic_arns is empty: the SES webhook drops everything");
        }
        let clock = Arc::new(EngineClock(engine.clone()));
        Ok(Self::with_parts(
            engine,
            config,
            hostname,
            source,
            Arc::new(client),
            clock,
        ))
    }

    /// Explicit wiring (tests inject certificates, confirmations and time).
    pub fn with_parts(
        engine: Engine,
        config: SnsConfig,
        hostname: String,
        cert_source: Arc<dyn CertSource>,
        confirmer: Arc<dyn SubscribeConfirmer>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let certs = CertCache::new(cert_source, config.cert_cache_entries);
        Self {
            inner: Arc::new(Inner {
                engine,
                config,
                hostname,
                certs,
                confirmer,
                clock,
                cluster: std::sync::OnceLock::new(),
            }),
        }
    }

    /// On a host of a cluster: route recipients to their owners (set once,
    /// at start, before the webhook serves).
    pub fn set_cluster(&self, cluster: Arc<uncorreo_hop::Cluster>) {
        let _ = self.inner.cluster.set(cluster);
    }

    /// The name our `Received:` lines give (also those of HTTP send).
    pub fn hostname(&self) -> &str {
        &self.inner.hostname
    }

    /// The settings in use.
    pub fn config(&self) -> &SnsConfig {
        &self.inner.config
    }

    /// The certificate cache (e.g. to check how many certificates were fetched).
    pub fn cert_cache(&self) -> &CertCache {
        &self.inner.certs
    }
}
