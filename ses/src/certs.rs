//! Where signing certificates come from, and the bounded cache in front.
//!
//! [`CertSource`] fetches the PEM bytes behind an already-checked [`SnsUrl`]:
//! [`HttpsCertSource`] over the network (production), [`DirCertSource`] from
//! a local directory (offline use and tests: the file named like the URL's
//! last path segment). [`CertCache`] fetches each URL once, parses it, keeps at
//! most a fixed number of certificates, and checks notBefore/notAfter against
//! the time it is given on every use (so a cached certificate that expires
//! stops being accepted, and is dropped so a rotated one can be fetched).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::https::{FetchError, HttpsClient};
use crate::url::SnsUrl;
use crate::verify::{SigningCert, VerifyError, MAX_CERT_PEM_BYTES};

/// A boxed, sendable future (what [`CertSource::fetch`] returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Fetches certificate PEM bytes. Implementations must not follow redirects
/// and must bound time and size.
pub trait CertSource: Send + Sync + 'static {
    /// The PEM behind `url` (already checked against the SNS host rules).
    fn fetch<'a>(&'a self, url: &'a SnsUrl) -> BoxFuture<'a, Result<Bytes, FetchError>>;
}

/// Production source: HTTPS GET from the SNS host.
pub struct HttpsCertSource {
    client: HttpsClient,
}

impl HttpsCertSource {
    /// Fetch with `client`.
    pub fn new(client: HttpsClient) -> Self {
        Self { client }
    }
}

impl CertSource for HttpsCertSource {
    fn fetch<'a>(&'a self, url: &'a SnsUrl) -> BoxFuture<'a, Result<Bytes, FetchError>> {
        Box::pin(self.client.get(url, MAX_CERT_PEM_BYTES))
    }
}

/// Offline/test source: `<dir>/<last path segment of the URL>`. The URL must
/// still pass the SNS host rules; only the transport is replaced. Never use a
/// directory an attacker can write to.
pub struct DirCertSource {
    dir: PathBuf,
}

impl DirCertSource {
    /// Serve certificates from `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

impl CertSource for DirCertSource {
    fn fetch<'a>(&'a self, url: &'a SnsUrl) -> BoxFuture<'a, Result<Bytes, FetchError>> {
        Box::pin(async move {
            let name = url.file_name();
            // `SnsUrl` admits no `\`; refuse anything else that could leave the directory.
            if name.is_empty() || name.starts_with('.') || name.contains('%') {
                return Err(FetchError::Status(404));
            }
            let path = self.dir.join(name);
            let bytes = tokio::fs::read(&path).await.map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    FetchError::Status(404)
                } else {
                    FetchError::File(format!("{}: {e}", path.display()))
                }
            })?;
            if bytes.len() > MAX_CERT_PEM_BYTES {
                return Err(FetchError::TooLarge(MAX_CERT_PEM_BYTES));
            }
            Ok(Bytes::from(bytes))
        })
    }
}

/// Why no usable certificate could be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The fetch failed (network, status, size, timeout): try again later.
    #[error("fetching the signing certificate: {0}")]
    Fetch(#[from] FetchError),
    /// What was fetched is not a usable certificate.
    #[error("{0}")]
    Invalid(#[from] VerifyError),
    /// Outside notBefore/notAfter at the given time.
    #[error("signing certificate is expired or not yet valid")]
    NotValidNow,
}

impl CertError {
    /// True when retrying later may succeed (the sender should be told to retry).
    pub fn is_temporary(&self) -> bool {
        matches!(self, Self::Fetch(_))
    }
}

/// Certificate fetches in flight at once, across all cores. Real traffic
/// needs one fetch per certificate rotation; this bounds what a flood of
/// messages naming many different (SNS-host) certificate URLs can make us do.
pub const MAX_CONCURRENT_FETCHES: usize = 4;

/// Fetch-once, bounded cache of parsed signing certificates; shared by all cores.
pub struct CertCache {
    source: Arc<dyn CertSource>,
    capacity: usize,
    fetch_slots: tokio::sync::Semaphore,
    inner: Mutex<CacheInner>,
}

/// One URL's certificate: empty while (or until) its single fetch runs.
type Slot = Arc<tokio::sync::OnceCell<Arc<SigningCert>>>;

#[derive(Default)]
struct CacheInner {
    slots: HashMap<SnsUrl, Slot>,
    /// Insertion order, for evicting the oldest entry when full.
    order: VecDeque<SnsUrl>,
}

impl CertCache {
    /// A cache of at most `capacity` (≥ 1) certificates in front of `source`.
    pub fn new(source: Arc<dyn CertSource>, capacity: usize) -> Self {
        Self {
            source,
            capacity: capacity.max(1),
            fetch_slots: tokio::sync::Semaphore::new(MAX_CONCURRENT_FETCHES),
            inner: Mutex::new(CacheInner::default()),
        }
    }

    /// The certificate behind `url`, valid at `now_ms`. Concurrent callers for
    /// the same URL share one fetch; a failed fetch is not remembered.
    pub async fn get(&self, url: &SnsUrl, now_ms: u64) -> Result<Arc<SigningCert>, CertError> {
        let slot = self.slot(url);
        let fetched = slot
            .get_or_try_init(|| async {
                let _permit = self
                    .fetch_slots
                    .acquire()
                    .await
                    .map_err(|_| FetchError::Connect("fetcher closed".to_owned()))?;
                let pem = self.source.fetch(url).await?;
                Ok::<_, CertError>(Arc::new(SigningCert::from_pem(&pem)?))
            })
            .await;
        let cert = match fetched {
            Ok(c) => Arc::clone(c),
            Err(e) => {
                self.remove_if_empty(url);
                return Err(e);
            }
        };
        if !cert.valid_at(now_ms / 1000) {
            // Dropped so that a later message re-fetches (the URL may have
            // been re-issued); until then every use is refused.
            self.remove(url);
            return Err(CertError::NotValidNow);
        }
        Ok(cert)
    }

    /// How many certificates are cached (fetched and parsed).
    pub fn len(&self) -> usize {
        let inner = self.inner.lock();
        inner.slots.values().filter(|s| s.initialized()).count()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, url: &SnsUrl) -> Slot {
        let mut inner = self.inner.lock();
        if let Some(s) = inner.slots.get(url) {
            return Arc::clone(s);
        }
        let slot = Slot::default();
        inner.slots.insert(url.clone(), Arc::clone(&slot));
        inner.order.push_back(url.clone());
        while inner.slots.len() > self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.slots.remove(&oldest);
        }
        slot
    }

    fn remove(&self, url: &SnsUrl) {
        let mut inner = self.inner.lock();
        if inner.slots.remove(url).is_some() {
            inner.order.retain(|u| u != url);
        }
    }

    fn remove_if_empty(&self, url: &SnsUrl) {
        let mut inner = self.inner.lock();
        if inner.slots.get(url).is_some_and(|s| !s.initialized()) {
            inner.slots.remove(url);
            inner.order.retain(|u| u != url);
        }
    }
}
