//! Where signing certificates come from, and the bounded cache in front.
//!
//! [`CertSource`] fetches the PEM bytes behind an already-checked [`SnsUrl`]:
//! [`HttpsCertSource`] over the network (production), [`DirCertSource`] from
//! a local directory (offline use and tests: the file named like the URL's
//! last path segment). [`CertCache`] fetches each URL once, parses it, keeps at
//! most a fixed number of certificates, and checks notBefore/notAfter against
//! the time it is given on every use (so a cached certificate that expires
//! stops being accepted, and is dropped so a rotated one can be fetched).
//!
//! Anybody can post a message naming a certificate URL, so the cache is built
//! to keep forgeries from costing genuine notifications anything:
//! - a certificate that has verified a genuine signature is **proven** and
//!   lives apart from the ones merely fetched, so a flood of forged URLs can
//!   evict only other unproven entries, never a proven one;
//! - a failed fetch or an unusable certificate is remembered for a while
//!   (negative cache), so repeating a bad URL fetches nothing;
//! - fetches are rate-limited per host (a token bucket) on top of the cap on
//!   fetches in flight, so new forged URLs cost at most a few fetches a minute.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

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
    /// This URL failed recently (fetch or certificate); not fetched again
    /// until [`FAILURE_MEMORY`] has passed.
    #[error("signing certificate URL failed recently; not fetched again yet")]
    RecentlyFailed {
        /// The failure was a fetch error (worth retrying later).
        temporary: bool,
    },
    /// The host's fetch budget ([`FETCHES_PER_HOST_PER_MINUTE`]) is spent.
    #[error("too many certificate fetches from this host; try again later")]
    RateLimited,
}

impl CertError {
    /// True when retrying later may succeed (the sender should be told to retry).
    pub fn is_temporary(&self) -> bool {
        match self {
            Self::Fetch(_) | Self::RateLimited => true,
            Self::RecentlyFailed { temporary } => *temporary,
            Self::Invalid(_) | Self::NotValidNow => false,
        }
    }
}

/// Certificate fetches in flight at once, across all cores. Real traffic
/// needs one fetch per certificate rotation; this bounds what a flood of
/// messages naming many different (SNS-host) certificate URLs can make us do.
pub const MAX_CONCURRENT_FETCHES: usize = 4;

/// How long a failed URL is not fetched again. SNS retries a notification
/// over minutes to hours, so a genuine URL that failed once is tried again in
/// time; a forged one costs one fetch per minute at most.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(60);

/// Failed URLs remembered (oldest forgotten first).
pub const MAX_REMEMBERED_FAILURES: usize = 4096;

/// Fetches started per SNS host per minute (a token bucket; the burst is
/// [`FETCH_BURST_PER_HOST`]). AWS rotates a region's certificate rarely.
pub const FETCHES_PER_HOST_PER_MINUTE: u32 = 6;

/// Fetches a host may start at once after a quiet period.
pub const FETCH_BURST_PER_HOST: u32 = 3;

/// Hosts with a fetch budget; past it the oldest bucket is dropped (full again).
const MAX_HOST_BUCKETS: usize = 256;

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
    /// Certificates that verified a genuine signature, with their last use
    /// (for evicting the least recently used when full).
    proven: HashMap<SnsUrl, (Arc<SigningCert>, u64)>,
    /// Fetched (or being fetched), not yet proven.
    slots: HashMap<SnsUrl, Slot>,
    /// Insertion order of `slots`, for evicting the oldest entry when full.
    order: VecDeque<SnsUrl>,
    /// URL -> (until ms, temporary), and their insertion order.
    failures: HashMap<SnsUrl, (u64, bool)>,
    failure_order: VecDeque<SnsUrl>,
    /// Host -> (tokens, ms of the last refill).
    buckets: HashMap<String, (f64, u64)>,
    bucket_order: VecDeque<String>,
}

impl CertCache {
    /// A cache of at most `capacity` (≥ 1) proven certificates, and as many
    /// unproven ones, in front of `source`.
    pub fn new(source: Arc<dyn CertSource>, capacity: usize) -> Self {
        Self {
            source,
            capacity: capacity.max(1),
            fetch_slots: tokio::sync::Semaphore::new(MAX_CONCURRENT_FETCHES),
            inner: Mutex::new(CacheInner::default()),
        }
    }

    /// The certificate behind `url`, valid at `now_ms`. Concurrent callers for
    /// the same URL share one fetch; a failed fetch is remembered for
    /// [`FAILURE_MEMORY`].
    pub async fn get(&self, url: &SnsUrl, now_ms: u64) -> Result<Arc<SigningCert>, CertError> {
        let slot = match self.lookup(url, now_ms)? {
            Lookup::Proven(cert) => return self.check_valid(url, cert, now_ms),
            Lookup::Slot(slot) => slot,
        };
        let fetched = slot
            .get_or_try_init(|| async {
                self.take_fetch_token(url, now_ms)?;
                let _permit = self
                    .fetch_slots
                    .acquire()
                    .await
                    .map_err(|_| FetchError::Connect("fetcher closed".to_owned()))?;
                let pem = self.source.fetch(url).await?;
                Ok::<_, CertError>(Arc::new(SigningCert::from_pem(&pem)?))
            })
            .await;
        match fetched {
            Ok(c) => self.check_valid(url, Arc::clone(c), now_ms),
            Err(e) => {
                self.remove_if_empty(url);
                if !matches!(e, CertError::RateLimited) {
                    self.remember_failure(url, now_ms, e.is_temporary());
                }
                Err(e)
            }
        }
    }

    /// Record that `cert` (from [`CertCache::get`] for `url`) verified a
    /// genuine signature: from now on only the proven set holds it, where
    /// unproven fetches cannot evict it.
    pub fn mark_proven(&self, url: &SnsUrl, cert: &Arc<SigningCert>, now_ms: u64) {
        let mut inner = self.inner.lock();
        if let Some(entry) = inner.proven.get_mut(url) {
            entry.1 = now_ms;
            return;
        }
        if inner.slots.remove(url).is_some() {
            inner.order.retain(|u| u != url);
        }
        if inner.proven.len() >= self.capacity {
            let oldest = inner
                .proven
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(u, _)| u.clone());
            if let Some(oldest) = oldest {
                inner.proven.remove(&oldest);
            }
        }
        inner.proven.insert(url.clone(), (Arc::clone(cert), now_ms));
    }

    /// How many certificates are cached (fetched and parsed), proven or not.
    pub fn len(&self) -> usize {
        let inner = self.inner.lock();
        inner.proven.len() + inner.slots.values().filter(|s| s.initialized()).count()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many cached certificates are proven.
    pub fn proven_len(&self) -> usize {
        self.inner.lock().proven.len()
    }

    fn lookup(&self, url: &SnsUrl, now_ms: u64) -> Result<Lookup, CertError> {
        let mut inner = self.inner.lock();
        if let Some((cert, used)) = inner.proven.get_mut(url) {
            *used = now_ms;
            return Ok(Lookup::Proven(Arc::clone(cert)));
        }
        if let Some(&(until, temporary)) = inner.failures.get(url) {
            if now_ms < until {
                return Err(CertError::RecentlyFailed { temporary });
            }
            inner.failures.remove(url);
            inner.failure_order.retain(|u| u != url);
        }
        if let Some(s) = inner.slots.get(url) {
            return Ok(Lookup::Slot(Arc::clone(s)));
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
        Ok(Lookup::Slot(slot))
    }

    fn check_valid(
        &self,
        url: &SnsUrl,
        cert: Arc<SigningCert>,
        now_ms: u64,
    ) -> Result<Arc<SigningCert>, CertError> {
        if cert.valid_at(now_ms / 1000) {
            return Ok(cert);
        }
        // Dropped so that a later message re-fetches (the URL may have been
        // re-issued); until then every use is refused.
        let mut inner = self.inner.lock();
        inner.proven.remove(url);
        if inner.slots.remove(url).is_some() {
            inner.order.retain(|u| u != url);
        }
        Err(CertError::NotValidNow)
    }

    /// Spend one of `url`'s host's fetch tokens, or `RateLimited`.
    fn take_fetch_token(&self, url: &SnsUrl, now_ms: u64) -> Result<(), CertError> {
        let mut inner = self.inner.lock();
        let host = url.host();
        if !inner.buckets.contains_key(host) {
            if inner.buckets.len() >= MAX_HOST_BUCKETS {
                if let Some(oldest) = inner.bucket_order.pop_front() {
                    inner.buckets.remove(&oldest);
                }
            }
            inner.bucket_order.push_back(host.to_owned());
        }
        let burst = f64::from(FETCH_BURST_PER_HOST);
        let (tokens, refilled_at) = inner
            .buckets
            .entry(host.to_owned())
            .or_insert((burst, now_ms));
        let per_ms = f64::from(FETCHES_PER_HOST_PER_MINUTE) / 60_000.0;
        let elapsed = now_ms.saturating_sub(*refilled_at) as f64;
        *tokens = (*tokens + elapsed * per_ms).min(burst);
        *refilled_at = now_ms.max(*refilled_at);
        if *tokens < 1.0 {
            return Err(CertError::RateLimited);
        }
        *tokens -= 1.0;
        Ok(())
    }

    fn remember_failure(&self, url: &SnsUrl, now_ms: u64, temporary: bool) {
        let mut inner = self.inner.lock();
        let until = now_ms.saturating_add(FAILURE_MEMORY.as_millis() as u64);
        if inner
            .failures
            .insert(url.clone(), (until, temporary))
            .is_none()
        {
            inner.failure_order.push_back(url.clone());
        }
        while inner.failures.len() > MAX_REMEMBERED_FAILURES {
            let Some(oldest) = inner.failure_order.pop_front() else {
                break;
            };
            inner.failures.remove(&oldest);
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

enum Lookup {
    Proven(Arc<SigningCert>),
    Slot(Slot),
}
