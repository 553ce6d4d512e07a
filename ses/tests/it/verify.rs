//! SNS signature verification and the certificate fetch layer, against a
//! locally made CA and signing certificate: every message type and both
//! signature versions pass when untouched and fail when anything signed, the
//! signature, the version or the certificate URL is changed; the fetch layer
//! refuses expired and not-yet-valid certificates, fetches once per URL and
//! stays bounded; forged URLs cannot evict a proven certificate, cost a fetch
//! only once a minute each, and a few fetches per host per minute in all.

use uncorreo_ses::fixture as fx;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use uncorreo_ses::certs::BoxFuture;
use uncorreo_ses::message::FieldError;
use uncorreo_ses::{
    verify, CertCache, CertError, CertSource, FetchError, SnsMessage, SnsUrl, UrlError, VerifyError,
};

fn all_valid() -> Vec<(&'static str, SnsMessage)> {
    let now = fx::now_ms();
    let mut out = Vec::new();
    for version in ["1", "2"] {
        let mut n = fx::notification("n-1", "hello\nworld".to_owned(), now);
        fx::sign(&mut n, version);
        out.push(("Notification", n));
        let mut n = fx::notification("n-2", "no subject".to_owned(), now);
        n.subject = None;
        fx::sign(&mut n, version);
        out.push(("Notification without Subject", n));
        for kind in ["SubscriptionConfirmation", "UnsubscribeConfirmation"] {
            let mut c = fx::confirmation(kind, "c-1", now);
            fx::sign(&mut c, version);
            out.push((kind, c));
        }
    }
    out
}

#[test]
fn valid_messages_of_every_type_and_version_pass() {
    let cert = fx::valid_cert();
    for (what, m) in all_valid() {
        assert_eq!(
            verify(&m, cert.as_bytes()),
            Ok(()),
            "{what} v{:?}",
            m.signature_version
        );
        // And after a round trip through JSON, as the webhook receives it.
        let back = SnsMessage::from_json(fx::to_json(&m).as_bytes()).unwrap();
        assert_eq!(verify(&back, cert.as_bytes()), Ok(()), "{what} (JSON)");
    }
}

#[test]
fn changing_any_signed_field_fails() {
    let cert = fx::valid_cert();
    for (what, m) in all_valid() {
        let notification = m.kind.as_deref() == Some("Notification");
        type Edit = fn(&mut SnsMessage);
        let mut edits: Vec<(&str, Edit)> = vec![
            ("Message", |m| m.message.as_mut().unwrap().push('x')),
            ("MessageId", |m| m.message_id = Some("other".to_owned())),
            ("Timestamp", |m| {
                m.timestamp = Some(m.timestamp.clone().unwrap().replace(".", ".9"))
            }),
            ("TopicArn", |m| {
                m.topic_arn = Some("arn:aws:sns:us-east-1:123456789012:other".to_owned())
            }),
        ];
        if notification {
            edits.push(("Subject changed/added", |m| {
                m.subject = Some("forged subject".to_owned())
            }));
            if m.subject.is_some() {
                edits.push(("Subject removed", |m| m.subject = None));
            }
        } else {
            edits.push(("SubscribeURL", |m| {
                m.subscribe_url = Some("https://sns.us-east-1.amazonaws.com/?Action=Other".into())
            }));
            edits.push(("Token", |m| m.token = Some("forged".to_owned())));
        }
        for (field, edit) in edits {
            let mut forged = m.clone();
            edit(&mut forged);
            assert_eq!(
                verify(&forged, cert.as_bytes()),
                Err(VerifyError::BadSignature),
                "{what}: changed {field}"
            );
        }
        // Type changed between the two confirmation types (same fields signed).
        if !notification {
            let mut forged = m.clone();
            forged.kind = Some(
                if m.kind.as_deref() == Some("SubscriptionConfirmation") {
                    "UnsubscribeConfirmation"
                } else {
                    "SubscriptionConfirmation"
                }
                .to_owned(),
            );
            assert_eq!(
                verify(&forged, cert.as_bytes()),
                Err(VerifyError::BadSignature),
                "{what}: changed Type"
            );
        } else {
            let mut forged = m.clone();
            forged.kind = Some("SubscriptionConfirmation".to_owned());
            assert_eq!(
                verify(&forged, cert.as_bytes()),
                Err(VerifyError::Field(FieldError::Missing("SubscribeURL"))),
                "{what}: changed Type"
            );
        }
    }
}

#[test]
fn changing_the_signature_or_version_fails() {
    let cert = fx::valid_cert();
    for (what, m) in all_valid() {
        // One bit of the signature.
        let mut forged = m.clone();
        let mut sig = base64_decode(forged.signature.as_deref().unwrap());
        sig[100] ^= 1;
        forged.signature = Some(base64_encode(&sig));
        assert_eq!(
            verify(&forged, cert.as_bytes()),
            Err(VerifyError::BadSignature),
            "{what}: flipped bit"
        );
        // Truncated signature.
        let mut forged = m.clone();
        forged.signature = Some(base64_encode(&sig[..255]));
        assert_eq!(
            verify(&forged, cert.as_bytes()),
            Err(VerifyError::BadSignature),
            "{what}: short"
        );
        // The other version: same key, other hash.
        let mut forged = m.clone();
        let other = if m.signature_version.as_deref() == Some("1") {
            "2"
        } else {
            "1"
        };
        forged.signature_version = Some(other.to_owned());
        assert_eq!(
            verify(&forged, cert.as_bytes()),
            Err(VerifyError::BadSignature),
            "{what}: version swapped"
        );
        for bad in [Some("3"), Some("0"), Some(""), Some(" 2"), None] {
            let mut forged = m.clone();
            forged.signature_version = bad.map(str::to_owned);
            assert!(
                matches!(
                    verify(&forged, cert.as_bytes()),
                    Err(VerifyError::UnsupportedVersion(_))
                ),
                "{what}: version {bad:?}"
            );
        }
        // Unsigned / not base64.
        let mut forged = m.clone();
        forged.signature = None;
        assert_eq!(
            verify(&forged, cert.as_bytes()),
            Err(VerifyError::SignatureEncoding)
        );
        forged.signature = Some("not base64!".to_owned());
        assert_eq!(
            verify(&forged, cert.as_bytes()),
            Err(VerifyError::SignatureEncoding)
        );
    }
}

#[test]
fn changing_the_certificate_url_host_fails() {
    let cert = fx::valid_cert();
    for (what, m) in all_valid() {
        for url in [
            "https://sns.us-east-1.amazonaws.com.evil.com/SimpleNotificationService-7e57000000000000000000000000f1c5.pem",
            "https://evil.com/SimpleNotificationService-7e57000000000000000000000000f1c5.pem",
            "https://sns.us-east-1.amazonaws.com@evil.com/x.pem",
            "https://sns.us-east-1.amazonaws.com:444/SimpleNotificationService-7e57000000000000000000000000f1c5.pem",
            "https://127.0.0.1/SimpleNotificationService-7e57000000000000000000000000f1c5.pem",
        ] {
            let mut forged = m.clone();
            forged.signing_cert_url = Some(url.to_owned());
            assert!(
                matches!(
                    verify(&forged, cert.as_bytes()),
                    Err(VerifyError::CertUrl(UrlError::Host(_)))
                ),
                "{what}: {url}"
            );
        }
        let mut forged = m.clone();
        forged.signing_cert_url = Some(
            "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-7e57000000000000000000000000f1c5.pem".into(),
        );
        assert_eq!(
            verify(&forged, cert.as_bytes()),
            Err(VerifyError::CertUrl(UrlError::NotHttps))
        );
        forged.signing_cert_url = None;
        assert_eq!(
            verify(&forged, cert.as_bytes()),
            Err(VerifyError::MissingCertUrl)
        );
    }
}

#[test]
fn a_certificate_for_another_key_or_garbage_fails() {
    let now = fx::now_secs();
    let other_cert = fx::issue_cert(&fx::keys().other, now - 60, now + 3600);
    for (what, m) in all_valid() {
        assert_eq!(
            verify(&m, other_cert.as_bytes()),
            Err(VerifyError::BadSignature),
            "{what}"
        );
        assert!(matches!(
            verify(
                &m,
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            ),
            Err(VerifyError::Certificate(_))
        ));
        assert!(matches!(
            verify(&m, b"not a pem"),
            Err(VerifyError::Certificate(_))
        ));
    }
}

// ---- the fetch layer ----

/// Serves fixed PEMs by URL and counts fetches.
struct MapSource {
    certs: HashMap<String, String>,
    fetches: AtomicUsize,
}

impl CertSource for MapSource {
    fn fetch<'a>(&'a self, url: &'a SnsUrl) -> BoxFuture<'a, Result<Bytes, FetchError>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let found = self.certs.get(url.as_str()).cloned();
        Box::pin(async move { found.map(Bytes::from).ok_or(FetchError::Status(404)) })
    }
}

/// A certificate URL of AWS's form, named after `name`, on `region`'s host.
fn url_on(region: &str, name: &str) -> SnsUrl {
    // A stable 32-hex-digit certificate id per name.
    let id = name.bytes().fold(0xcbf2_9ce4_8422_2325_u128, |h, b| {
        (h ^ u128::from(b)).wrapping_mul(0x0100_0000_0000_0000_0000_013b)
    });
    SnsUrl::parse_cert_url(&format!(
        "https://sns.{region}.amazonaws.com/SimpleNotificationService-{id:032x}.pem"
    ))
    .unwrap()
}

/// Each name on a host of its own, so the per-host fetch budget stays out of
/// tests about other things.
fn url(name: &str) -> SnsUrl {
    url_on(&format!("r{}", name.to_ascii_lowercase()), name)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn fetch_layer_checks_validity_against_the_given_clock() {
    let now = fx::now_secs();
    let key = &fx::keys().signer;
    let source = Arc::new(MapSource {
        certs: HashMap::from([
            (
                url("valid").as_str().to_owned(),
                fx::issue_cert(key, now - 10, now + 10),
            ),
            (
                url("expired").as_str().to_owned(),
                fx::issue_cert(key, now - 7200, now - 3600),
            ),
            (
                url("future").as_str().to_owned(),
                fx::issue_cert(key, now + 3600, now + 7200),
            ),
            (url("garbage").as_str().to_owned(), "garbage".to_owned()),
        ]),
        fetches: AtomicUsize::new(0),
    });
    let cache = CertCache::new(source.clone(), 8);
    let now_ms = now * 1000;
    block_on(async {
        cache.get(&url("valid"), now_ms).await.unwrap();
        assert!(matches!(
            cache.get(&url("expired"), now_ms).await,
            Err(CertError::NotValidNow)
        ));
        assert!(matches!(
            cache.get(&url("future"), now_ms).await,
            Err(CertError::NotValidNow)
        ));
        // Exact bounds of the valid certificate: notBefore and notAfter are inclusive.
        cache.get(&url("valid"), (now - 10) * 1000).await.unwrap();
        cache
            .get(&url("valid"), (now + 10) * 1000 + 999)
            .await
            .unwrap();
        let before = cache.get(&url("valid"), (now - 11) * 1000 + 999).await;
        assert!(matches!(before, Err(CertError::NotValidNow)));
        let after = cache.get(&url("valid"), (now + 11) * 1000).await;
        assert!(matches!(after, Err(CertError::NotValidNow)));
        let e = cache.get(&url("garbage"), now_ms).await.unwrap_err();
        assert!(matches!(e, CertError::Invalid(_)) && !e.is_temporary());
        let e = cache.get(&url("missing"), now_ms).await.unwrap_err();
        assert!(matches!(e, CertError::Fetch(FetchError::Status(404))) && e.is_temporary());
    });
}

#[test]
fn fetch_layer_fetches_once_per_url_and_stays_bounded() {
    let now = fx::now_secs();
    let pem = fx::issue_cert(&fx::keys().signer, now - 10, now + 3600);
    let names = ["a", "b", "c", "d"];
    let source = Arc::new(MapSource {
        certs: names
            .iter()
            .map(|n| (url(n).as_str().to_owned(), pem.clone()))
            .collect(),
        fetches: AtomicUsize::new(0),
    });
    let cache = CertCache::new(source.clone(), 2);
    block_on(async {
        for _ in 0..5 {
            cache.get(&url("a"), now * 1000).await.unwrap();
        }
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
        for n in names {
            cache.get(&url(n), now * 1000).await.unwrap();
        }
        assert_eq!(cache.len(), 2, "cache holds at most its capacity");
        assert_eq!(source.fetches.load(Ordering::SeqCst), 4);
        // The newest two are cached; the oldest was evicted and is fetched again.
        cache.get(&url("d"), now * 1000).await.unwrap();
        assert_eq!(source.fetches.load(Ordering::SeqCst), 4);
        cache.get(&url("a"), now * 1000).await.unwrap();
        assert_eq!(source.fetches.load(Ordering::SeqCst), 5);
    });
}

/// Holds every fetch until the gate opens; counts fetches started.
struct Gated {
    pem: String,
    gate: tokio::sync::Semaphore,
    fetches: AtomicUsize,
}

impl CertSource for Gated {
    fn fetch<'a>(&'a self, _url: &'a SnsUrl) -> BoxFuture<'a, Result<Bytes, FetchError>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let _open = self.gate.acquire().await;
            Ok(Bytes::from(self.pem.clone()))
        })
    }
}

#[test]
fn concurrent_misses_share_one_fetch_and_fetches_are_capped() {
    let now = fx::now_secs();
    let source = Arc::new(Gated {
        pem: fx::issue_cert(&fx::keys().signer, now - 10, now + 3600),
        gate: tokio::sync::Semaphore::new(0),
        fetches: AtomicUsize::new(0),
    });
    let cache = Arc::new(CertCache::new(source.clone(), 64));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        // Eight callers for one URL.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get(&url("same"), now * 1000).await })
            })
            .collect();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
        source.gate.add_permits(1000);
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);

        // Ten different URLs (on ten hosts): at most MAX_CONCURRENT_FETCHES in flight.
        source.gate.forget_permits(1000);
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get(&url(&format!("u{i}")), now * 1000).await })
            })
            .collect();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            source.fetches.load(Ordering::SeqCst),
            1 + uncorreo_ses::certs::MAX_CONCURRENT_FETCHES
        );
        source.gate.add_permits(1000);
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(source.fetches.load(Ordering::SeqCst), 11);
    });
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

// ---- what forged certificate URLs can cost ----

#[test]
fn a_failed_url_is_not_fetched_again_until_its_failure_is_forgotten() {
    let now = fx::now_secs();
    let source = Arc::new(MapSource {
        certs: HashMap::from([(url("garbage").as_str().to_owned(), "garbage".to_owned())]),
        fetches: AtomicUsize::new(0),
    });
    let cache = CertCache::new(source.clone(), 8);
    let memory_ms = uncorreo_ses::certs::FAILURE_MEMORY.as_millis() as u64;
    block_on(async {
        let t0 = now * 1000;
        assert!(matches!(
            cache.get(&url("missing"), t0).await,
            Err(CertError::Fetch(FetchError::Status(404)))
        ));
        assert!(matches!(
            cache.get(&url("garbage"), t0).await,
            Err(CertError::Invalid(_))
        ));
        assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
        for _ in 0..100 {
            let e = cache
                .get(&url("missing"), t0 + memory_ms - 1)
                .await
                .unwrap_err();
            assert!(matches!(e, CertError::RecentlyFailed { temporary: true }) && e.is_temporary());
            let e = cache
                .get(&url("garbage"), t0 + memory_ms - 1)
                .await
                .unwrap_err();
            assert!(
                matches!(e, CertError::RecentlyFailed { temporary: false }) && !e.is_temporary()
            );
        }
        assert_eq!(
            source.fetches.load(Ordering::SeqCst),
            2,
            "remembered, not fetched"
        );
        assert!(cache.get(&url("missing"), t0 + memory_ms).await.is_err());
        assert_eq!(
            source.fetches.load(Ordering::SeqCst),
            3,
            "tried again once forgotten"
        );
    });
}

#[test]
fn fetches_are_rate_limited_per_host() {
    use uncorreo_ses::certs::{FETCHES_PER_HOST_PER_MINUTE, FETCH_BURST_PER_HOST};
    let now = fx::now_secs();
    let source = Arc::new(MapSource {
        certs: HashMap::new(),
        fetches: AtomicUsize::new(0),
    });
    let cache = CertCache::new(source.clone(), 8);
    let t0 = now * 1000;
    block_on(async {
        for i in 0..FETCH_BURST_PER_HOST {
            let e = cache.get(&url_on("us-east-1", &format!("f{i}")), t0).await;
            assert!(matches!(e, Err(CertError::Fetch(_))), "{e:?}");
        }
        let spent = cache.get(&url_on("us-east-1", "one-more"), t0).await;
        assert!(matches!(spent, Err(CertError::RateLimited)));
        assert!(spent.unwrap_err().is_temporary(), "SNS is told to retry");
        assert_eq!(
            source.fetches.load(Ordering::SeqCst),
            FETCH_BURST_PER_HOST as usize
        );
        // Another host has its own budget.
        let other = cache.get(&url_on("eu-west-1", "f0"), t0).await;
        assert!(matches!(other, Err(CertError::Fetch(_))));
        // One token comes back after 60 s / FETCHES_PER_HOST_PER_MINUTE.
        let refill_ms = 60_000 / u64::from(FETCHES_PER_HOST_PER_MINUTE);
        let e = cache
            .get(&url_on("us-east-1", "later"), t0 + refill_ms - 1)
            .await;
        assert!(matches!(e, Err(CertError::RateLimited)));
        let e = cache
            .get(&url_on("us-east-1", "later"), t0 + refill_ms)
            .await;
        assert!(matches!(e, Err(CertError::Fetch(_))));
    });
}

#[test]
fn forged_urls_cannot_evict_a_proven_certificate() {
    let now = fx::now_secs();
    let genuine = url_on("us-east-1", "genuine");
    let forger_pem = fx::issue_cert(&fx::keys().other, now - 10, now + 3600);
    let mut certs = HashMap::from([(
        genuine.as_str().to_owned(),
        fx::issue_cert(&fx::keys().signer, now - 10, now + 3600),
    )]);
    let forged: Vec<SnsUrl> = (0..200).map(|i| url(&format!("forged{i}"))).collect();
    for u in &forged {
        certs.insert(u.as_str().to_owned(), forger_pem.clone());
    }
    let source = Arc::new(MapSource {
        certs,
        fetches: AtomicUsize::new(0),
    });
    let cache = CertCache::new(source.clone(), 4);
    let t0 = now * 1000;
    block_on(async {
        let cert = cache.get(&genuine, t0).await.unwrap();
        cache.mark_proven(&genuine, &cert, t0);
        // Two hundred forged URLs, each a parsable certificate (of the forger's key).
        for u in &forged {
            cache.get(u, t0).await.unwrap();
        }
        assert_eq!(cache.proven_len(), 1);
        let before = source.fetches.load(Ordering::SeqCst);
        cache.get(&genuine, t0).await.unwrap();
        assert_eq!(
            source.fetches.load(Ordering::SeqCst),
            before,
            "still cached"
        );
        assert!(cache.len() <= 4 + 1, "bounded: {} entries", cache.len());
    });
}

/// Serves the genuine certificate at once; every other fetch never ends.
struct HangsForForgeries {
    genuine: String,
    pem: String,
    fetches: AtomicUsize,
}

impl CertSource for HangsForForgeries {
    fn fetch<'a>(&'a self, url: &'a SnsUrl) -> BoxFuture<'a, Result<Bytes, FetchError>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let found = (url.as_str() == self.genuine).then(|| self.pem.clone());
        Box::pin(async move {
            match found {
                Some(pem) => Ok(Bytes::from(pem)),
                None => std::future::pending().await,
            }
        })
    }
}

#[test]
fn hanging_forged_fetches_do_not_hold_up_a_proven_certificate() {
    let now = fx::now_secs();
    let genuine = url_on("us-east-1", "genuine");
    let source = Arc::new(HangsForForgeries {
        genuine: genuine.as_str().to_owned(),
        pem: fx::issue_cert(&fx::keys().signer, now - 10, now + 3600),
        fetches: AtomicUsize::new(0),
    });
    let cache = Arc::new(CertCache::new(source.clone(), 8));
    let t0 = now * 1000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let cert = cache.get(&genuine, t0).await.unwrap();
        cache.mark_proven(&genuine, &cert, t0);
        // Every fetch slot taken by a forged URL that never answers.
        let _stuck: Vec<_> = (0..32)
            .map(|i| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get(&url(&format!("stuck{i}")), t0).await })
            })
            .collect();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            source.fetches.load(Ordering::SeqCst),
            1 + uncorreo_ses::certs::MAX_CONCURRENT_FETCHES
        );
        // The proven certificate needs no fetch slot. The bound is a hang
        // detector, not a speed check: it answers without awaiting anything.
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), cache.get(&genuine, t0))
            .await
            .expect("a proven certificate waited behind forged fetches");
        assert!(got.is_ok());
    });
}
