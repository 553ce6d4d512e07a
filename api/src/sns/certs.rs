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

use super::https::{FetchError, HttpsClient};
use super::url::SnsUrl;
use super::verify::{SigningCert, VerifyError, MAX_CERT_PEM_BYTES};

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

/// Fetch-once, bounded cache of parsed signing certificates; shared by all cores.
pub struct CertCache {
    source: Arc<dyn CertSource>,
    capacity: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    certs: HashMap<SnsUrl, Arc<SigningCert>>,
    /// Insertion order, for evicting the oldest entry when full.
    order: VecDeque<SnsUrl>,
}

impl CertCache {
    /// A cache of at most `capacity` (≥ 1) certificates in front of `source`.
    pub fn new(source: Arc<dyn CertSource>, capacity: usize) -> Self {
        Self {
            source,
            capacity: capacity.max(1),
            inner: Mutex::new(CacheInner::default()),
        }
    }

    /// The certificate behind `url`, valid at `now_ms`.
    pub async fn get(&self, url: &SnsUrl, now_ms: u64) -> Result<Arc<SigningCert>, CertError> {
        let now_secs = now_ms / 1000;
        let cached = self.inner.lock().certs.get(url).cloned();
        let cert = match cached {
            Some(c) => c,
            None => {
                // Two concurrent misses on the same URL may both fetch; the
                // result is the same and the cache stays bounded.
                let pem = self.source.fetch(url).await?;
                let cert = Arc::new(SigningCert::from_pem(&pem)?);
                self.insert(url.clone(), Arc::clone(&cert));
                cert
            }
        };
        if !cert.valid_at(now_secs) {
            self.remove(url);
            return Err(CertError::NotValidNow);
        }
        Ok(cert)
    }

    /// How many certificates are cached.
    pub fn len(&self) -> usize {
        self.inner.lock().certs.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, url: SnsUrl, cert: Arc<SigningCert>) {
        let mut inner = self.inner.lock();
        if inner.certs.insert(url.clone(), cert).is_none() {
            inner.order.push_back(url);
        }
        while inner.certs.len() > self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.certs.remove(&oldest);
        }
    }

    fn remove(&self, url: &SnsUrl) {
        let mut inner = self.inner.lock();
        if inner.certs.remove(url).is_some() {
            inner.order.retain(|u| u != url);
        }
    }
}
