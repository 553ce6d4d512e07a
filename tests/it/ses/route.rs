//! The webhook route driven in memory (tower `oneshot`) with an injected
//! certificate source, confirmer and clock: every outcome, its status and body,
//! each limit at its exact boundary, and the metric it counts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use parking_lot::Mutex;
use tower::ServiceExt;
use uncorreo_api::ses::{router, INBOUND_PATH};
use uncorreo_ses::certs::BoxFuture;
use uncorreo_ses::{
    CertSource, FetchError, Ingest, SnsConfig, SnsMessage, SnsUrl, SubscribeConfirmer,
};

use super::fixture as fx;
use crate::support::{block_on, DOMAIN};
use uncorreo_engine::{Address, Engine, EngineConfig, MailboxInfo, ManualClock, NewMailbox, Owner};

/// Serves one PEM for the fixture's certificate URL, or fails every fetch
/// (or, with `hang_for_others`, never answers a fetch of any other URL).
struct OneCert {
    pem: Option<String>,
    hang_for_others: bool,
    fetches: AtomicUsize,
    genuine_fetches: AtomicUsize,
}

impl CertSource for OneCert {
    fn fetch<'a>(&'a self, url: &'a SnsUrl) -> BoxFuture<'a, Result<Bytes, FetchError>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let genuine = url.as_str() == fx::CERT_URL;
        if genuine {
            self.genuine_fetches.fetch_add(1, Ordering::SeqCst);
        }
        let found = genuine.then(|| self.pem.clone()).flatten();
        let hang = !genuine && self.hang_for_others;
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            found
                .map(Bytes::from)
                .ok_or(FetchError::Connect("unreachable".to_owned()))
        })
    }
}

/// Records confirmations; fails them when `fail` is set.
#[derive(Default)]
struct Confirms {
    urls: Mutex<Vec<String>>,
    fail: bool,
}

impl SubscribeConfirmer for Confirms {
    fn confirm<'a>(&'a self, url: &'a SnsUrl) -> BoxFuture<'a, Result<(), FetchError>> {
        self.urls.lock().push(url.as_str().to_owned());
        let fail = self.fail;
        Box::pin(async move {
            if fail {
                Err(FetchError::Status(500))
            } else {
                Ok(())
            }
        })
    }
}

struct World {
    app: axum::Router,
    engine: Engine,
    clock: Arc<ManualClock>,
    certs: Arc<OneCert>,
    confirms: Arc<Confirms>,
    _data: tempfile::TempDir,
}

struct Setup {
    sns: SnsConfig,
    pem: Option<String>,
    confirm_fails: bool,
    max_message_bytes: usize,
    hang_for_forged_cert_urls: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            sns: SnsConfig {
                allowed_topic_arns: vec![fx::TOPIC.to_owned()],
                ..SnsConfig::default()
            },
            pem: Some(fx::valid_cert()),
            confirm_fails: false,
            max_message_bytes: EngineConfig::default().max_message_bytes,
            hang_for_forged_cert_urls: false,
        }
    }
}

fn world(setup: Setup) -> World {
    let data = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(fx::now_ms()));
    let engine = Engine::open_with_clock(
        EngineConfig {
            data_dir: data.path().to_path_buf(),
            domains: vec![DOMAIN.to_owned()],
            min_free_bytes: 0,
            max_message_bytes: setup.max_message_bytes,
            ..EngineConfig::default()
        },
        clock.clone(),
    )
    .unwrap();
    let certs = Arc::new(OneCert {
        pem: setup.pem,
        hang_for_others: setup.hang_for_forged_cert_urls,
        fetches: AtomicUsize::new(0),
        genuine_fetches: AtomicUsize::new(0),
    });
    let confirms = Arc::new(Confirms {
        fail: setup.confirm_fails,
        ..Confirms::default()
    });
    let ingest = Ingest::with_parts(
        engine.clone(),
        setup.sns,
        "mx.uncorreo.test".to_owned(),
        certs.clone(),
        confirms.clone(),
        clock.clone(),
    );
    World {
        app: router(ingest, uncorreo_budget::Budget::unlimited()),
        engine,
        clock,
        certs,
        confirms,
        _data: data,
    }
}

impl World {
    async fn mailbox(&self, local: &str) -> MailboxInfo {
        self.engine
            .create_mailbox(NewMailbox {
                address: Address::from_parts(local, DOMAIN).unwrap(),
                owner: Owner::Anonymous {
                    token_hash: [0; 32],
                },
                expires_at_ms: self.engine.now_ms() + 3_600_000,
                max_messages: 100,
            })
            .await
            .unwrap()
    }

    async fn post_raw(&self, body: String) -> (StatusCode, String, serde_json::Value) {
        let req = Request::post(INBOUND_PATH)
            .header("content-type", "text/plain; charset=UTF-8")
            .body(Body::from(body))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, ctype, json)
    }

    /// POST and return (status, outcome or problem detail).
    async fn post(&self, m: &SnsMessage) -> (StatusCode, String) {
        let (status, _, json) = self.post_raw(fx::to_json(m)).await;
        let said = json
            .get("outcome")
            .or_else(|| json.get("detail"))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        (status, said)
    }

    fn stored(&self, mb: &MailboxInfo) -> Vec<Bytes> {
        self.engine
            .list_messages(mb.id, 0, 100)
            .unwrap()
            .iter()
            .map(|m| self.engine.read_raw(m.id).unwrap())
            .collect()
    }
}

const EMAIL: &[u8] = b"From: Sender <s@example.com>\r\nTo: box@uncorreo.test\r\nSubject: Your code 123456\r\n\r\nHello \xc3\xa9\r\n";

fn signed_mail(
    w: &World,
    id: &str,
    recipients: &[&str],
    base64: bool,
    version: &str,
) -> SnsMessage {
    let msg = fx::ses_received(recipients, "s@example.com", EMAIL, base64);
    let mut n = fx::notification(id, msg, w.clock_now());
    fx::sign(&mut n, version);
    n
}

impl World {
    fn clock_now(&self) -> u64 {
        use uncorreo_engine::Clock;
        self.clock.now_ms()
    }
}

#[test]
fn a_forgery_flood_does_not_hold_up_genuine_notifications() {
    let w = Arc::new(world(Setup {
        hang_for_forged_cert_urls: true,
        ..Setup::default()
    }));
    block_on(async {
        let mb = w.mailbox("box").await;
        let genuine = |id: &str| signed_mail(&w, id, &["box@uncorreo.test"], false, "1");
        assert_eq!(
            w.post(&genuine("genuine-1")).await,
            (StatusCode::OK, "delivered".to_owned())
        );
        // Five hundred forgeries with the allowed topic, each naming a
        // certificate URL of AWS's form on the same host, signed with the
        // forger's key. The fetches that start never answer.
        let flood: Vec<_> = (0..500u32)
            .map(|i| {
                let mut m = genuine(&format!("forged-{i}"));
                m.signing_cert_url = Some(format!(
                    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{i:032x}.pem"
                ));
                fx::sign_with(&mut m, "1", &fx::keys().other);
                let w = Arc::clone(&w);
                tokio::spawn(async move { w.post(&m).await })
            })
            .collect();
        for _ in 0..1000 {
            tokio::task::yield_now().await;
        }
        let started = w.certs.fetches.load(Ordering::SeqCst) - 1;
        assert!(
            started <= uncorreo_ses::certs::FETCH_BURST_PER_HOST as usize,
            "forged URLs started {started} fetches"
        );
        // The next genuine notification is answered while the forged fetches
        // hang. The bound detects a hang; it is not a speed check.
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            w.post(&genuine("genuine-2")),
        )
        .await
        .expect("a genuine notification waited behind forged certificate fetches");
        assert_eq!(answer, (StatusCode::OK, "delivered".to_owned()));
        assert_eq!(w.stored(&mb).len(), 2, "no forged message stored");
        assert_eq!(w.certs.genuine_fetches.load(Ordering::SeqCst), 1);
        // The forgeries that did not hang were refused, never stored.
        let mut answered = 0;
        for task in flood {
            if task.is_finished() {
                let (status, _) = task.await.unwrap();
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
                answered += 1;
            }
        }
        assert!(answered >= 500 - started, "{answered} forgeries answered");
    });
}

#[test]
fn a_signed_notification_is_delivered_once_with_our_received_line() {
    let w = world(Setup::default());
    block_on(async {
        let mb = w.mailbox("box").await;
        for (i, (base64, version)) in [(true, "2"), (false, "1")].into_iter().enumerate() {
            let id = format!("3f0c9c7e-0000-4000-8000-00000000000{i}");
            let n = signed_mail(&w, &id, &["box@uncorreo.test"], base64, version);
            assert_eq!(w.post(&n).await, (StatusCode::OK, "delivered".to_owned()));
            let stored = w.stored(&mb);
            assert_eq!(stored.len(), i + 1);
            let raw = stored.last().unwrap();
            let expected_line = format!(
                "Received: from amazonses.com by mx.uncorreo.test (uncorreo) with SNS id {id}; {}\r\n",
                uncorreo_mail::date::rfc5322_date(w.clock_now() / 1000)
            );
            assert_eq!(&raw[..expected_line.len()], expected_line.as_bytes());
            assert_eq!(&raw[expected_line.len()..], EMAIL, "raw bytes kept exactly");
            let meta = w.engine.list_messages(mb.id, 0, 100).unwrap();
            assert_eq!(meta.last().unwrap().envelope_from, "s@example.com");

            // SNS retries the same MessageId: not delivered twice.
            assert_eq!(w.post(&n).await, (StatusCode::OK, "duplicate".to_owned()));
            assert_eq!(w.stored(&mb).len(), i + 1);
        }
        // One certificate fetch for everything.
        assert_eq!(w.certs.fetches.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn recipients_are_resolved_and_only_local_mailboxes_get_one_copy_each() {
    let w = world(Setup::default());
    block_on(async {
        let a = w.mailbox("a").await;
        let b = w.mailbox("b").await;
        let n = signed_mail(
            &w,
            "m-1",
            &[
                "a@uncorreo.test",
                "A+tag@uncorreo.test",
                "b+x@uncorreo.test",
                "nobody@uncorreo.test",
                "someone@example.com",
            ],
            true,
            "2",
        );
        assert_eq!(w.post(&n).await, (StatusCode::OK, "delivered".to_owned()));
        assert_eq!(w.stored(&a).len(), 1);
        assert_eq!(w.stored(&b).len(), 1);
        let b_meta = w.engine.list_messages(b.id, 0, 10).unwrap();
        assert_eq!(b_meta[0].plus_tag.as_deref(), Some("x"));

        let n = signed_mail(
            &w,
            "m-2",
            &["nobody@uncorreo.test", "x@example.com"],
            true,
            "2",
        );
        assert_eq!(
            w.post(&n).await,
            (StatusCode::OK, "no_local_recipient".to_owned())
        );
    });
}

#[test]
fn timestamps_are_checked_at_their_exact_limits() {
    let w = world(Setup::default());
    block_on(async {
        let mb = w.mailbox("box").await;
        let now = w.clock_now();
        let cases = [
            ("t-old-ok", now - 3_600_000, "delivered"),
            ("t-old", now - 3_600_001, "stale"),
            ("t-future-ok", now + 300_000, "delivered"),
            ("t-future", now + 300_001, "stale"),
        ];
        for (id, ts, want) in cases {
            let msg = fx::ses_received(&["box@uncorreo.test"], "s@example.com", EMAIL, true);
            let mut n = fx::notification(id, msg, ts);
            fx::sign(&mut n, "2");
            assert_eq!(w.post(&n).await, (StatusCode::OK, want.to_owned()), "{id}");
        }
        assert_eq!(w.stored(&mb).len(), 2);
        // A replay of an accepted message after the window is stale, not re-delivered.
        w.clock.advance(3_600_001);
        let msg = fx::ses_received(&["box@uncorreo.test"], "s@example.com", EMAIL, true);
        let mut n = fx::notification("t-replay", msg, now);
        fx::sign(&mut n, "2");
        assert_eq!(w.post(&n).await, (StatusCode::OK, "stale".to_owned()));
    });
}

#[test]
fn forgeries_are_dropped_with_200_and_a_reason_and_store_nothing() {
    let w = world(Setup::default());
    block_on(async {
        let mb = w.mailbox("box").await;
        let good = signed_mail(&w, "f-0", &["box@uncorreo.test"], true, "2");

        let mut tampered = good.clone();
        tampered.message = Some(fx::ses_received(
            &["box@uncorreo.test"],
            "ceo@example.com",
            EMAIL,
            true,
        ));
        let mut unsigned = good.clone();
        unsigned.signature = None;
        let mut v3 = good.clone();
        v3.signature_version = Some("3".to_owned());
        let mut lookalike = good.clone();
        lookalike.signing_cert_url = Some(
            "https://sns.us-east-1.amazonaws.com.evil.com/SimpleNotificationService-7e57000000000000000000000000f1c5.pem"
                .to_owned(),
        );
        let mut http = good.clone();
        http.signing_cert_url = Some(fx::CERT_URL.replace("https", "http"));
        let mut other_key = good.clone();
        fx::sign_with(&mut other_key, "2", &fx::keys().other);
        let mut other_topic = fx::notification("f-1", "x".to_owned(), w.clock_now());
        other_topic.topic_arn = Some("arn:aws:sns:us-east-1:999999999999:theirs".to_owned());
        fx::sign(&mut other_topic, "2");

        let mut long_topic = good.clone();
        long_topic.topic_arn = Some("x".repeat(100_000));
        let (status, _, json) = w.post_raw(fx::to_json(&long_topic)).await;
        assert_eq!(
            (status, json["outcome"].as_str()),
            (StatusCode::OK, Some("unknown_topic"))
        );
        assert!(json["detail"].as_str().unwrap().len() <= 512 + '…'.len_utf8());

        for (what, m, want) in [
            ("tampered", &tampered, "bad_signature"),
            ("unsigned", &unsigned, "bad_signature"),
            ("version 3", &v3, "bad_signature"),
            ("look-alike host", &lookalike, "bad_signature"),
            ("http cert URL", &http, "bad_signature"),
            ("other key", &other_key, "bad_signature"),
            ("unexpected topic", &other_topic, "unknown_topic"),
        ] {
            assert_eq!(w.post(m).await, (StatusCode::OK, want.to_owned()), "{what}");
        }
        assert_eq!(w.stored(&mb).len(), 0);
        // Only the real SNS URL was ever fetched (once), never the look-alike.
        assert_eq!(w.certs.fetches.load(Ordering::SeqCst), 1);

        for (what, body) in [
            ("not JSON", "hello".to_owned()),
            ("unknown Type", r#"{"Type":"Bogus"}"#.to_owned()),
            (
                "duplicate key",
                r#"{"Type":"Notification","Type":"Notification"}"#.to_owned(),
            ),
        ] {
            let (status, _, json) = w.post_raw(body).await;
            assert_eq!(status, StatusCode::OK, "{what}");
            assert_eq!(json["outcome"], "malformed", "{what}");
            assert!(!json["detail"].as_str().unwrap().is_empty(), "{what}");
        }
        // The good one still goes through afterwards.
        assert_eq!(
            w.post(&good).await,
            (StatusCode::OK, "delivered".to_owned())
        );
    });
}

#[test]
fn sha1_signatures_can_be_refused() {
    let w = world(Setup {
        sns: SnsConfig {
            allowed_topic_arns: vec![fx::TOPIC.to_owned()],
            min_signature_version: 2,
            ..SnsConfig::default()
        },
        ..Setup::default()
    });
    block_on(async {
        let mb = w.mailbox("box").await;
        let v1 = signed_mail(&w, "v-1", &["box@uncorreo.test"], true, "1");
        assert_eq!(
            w.post(&v1).await,
            (StatusCode::OK, "bad_signature".to_owned())
        );
        assert_eq!(
            w.certs.fetches.load(Ordering::SeqCst),
            0,
            "refused before any fetch"
        );
        let v2 = signed_mail(&w, "v-2", &["box@uncorreo.test"], true, "2");
        assert_eq!(w.post(&v2).await, (StatusCode::OK, "delivered".to_owned()));
        assert_eq!(w.stored(&mb).len(), 1);
    });
}

#[test]
fn message_type_header_must_agree_with_the_body() {
    let w = world(Setup::default());
    block_on(async {
        w.mailbox("box").await;
        let n = signed_mail(&w, "h-1", &["box@uncorreo.test"], true, "2");
        let req = Request::post(INBOUND_PATH)
            .header("x-amz-sns-message-type", "SubscriptionConfirmation")
            .body(Body::from(fx::to_json(&n)))
            .unwrap();
        let resp = w.app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["outcome"], "malformed");
    });
}

#[test]
fn subscriptions_are_confirmed_only_for_allowed_topics_and_sns_hosts() {
    let w = world(Setup::default());
    block_on(async {
        let now = w.clock_now();
        let mut c = fx::confirmation("SubscriptionConfirmation", "s-1", now);
        fx::sign(&mut c, "1");
        assert_eq!(
            w.post(&c).await,
            (StatusCode::OK, "subscription_confirmed".to_owned())
        );
        assert_eq!(*w.confirms.urls.lock(), vec![fx::SUBSCRIBE_URL.to_owned()]);

        let mut other = fx::confirmation("SubscriptionConfirmation", "s-2", now);
        other.topic_arn = Some("arn:aws:sns:us-east-1:999999999999:theirs".to_owned());
        fx::sign(&mut other, "2");
        assert_eq!(
            w.post(&other).await,
            (StatusCode::OK, "unknown_topic".to_owned())
        );

        // Correctly signed (by our test key) but the SubscribeURL is not SNS: no SSRF.
        let mut ssrf = fx::confirmation("SubscriptionConfirmation", "s-3", now);
        ssrf.subscribe_url = Some("https://169.254.169.254/latest/meta-data/".to_owned());
        fx::sign(&mut ssrf, "2");
        assert_eq!(
            w.post(&ssrf).await,
            (StatusCode::OK, "malformed".to_owned())
        );

        let mut unsub = fx::confirmation("UnsubscribeConfirmation", "s-4", now);
        fx::sign(&mut unsub, "2");
        assert_eq!(
            w.post(&unsub).await,
            (StatusCode::OK, "unsubscribed".to_owned())
        );

        assert_eq!(
            w.confirms.urls.lock().len(),
            1,
            "only the allowed one was visited"
        );
    });
}

#[test]
fn failures_worth_retrying_get_503_problem_json() {
    let w = world(Setup {
        confirm_fails: true,
        ..Setup::default()
    });
    block_on(async {
        let mut c = fx::confirmation("SubscriptionConfirmation", "r-1", w.clock_now());
        fx::sign(&mut c, "2");
        let (status, ctype, json) = w.post_raw(fx::to_json(&c)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ctype, "application/problem+json");
        assert_eq!(json["status"], 503);
        assert!(json["detail"]
            .as_str()
            .unwrap()
            .starts_with("subscription_error"));
    });

    let w = world(Setup {
        pem: None,
        ..Setup::default()
    });
    block_on(async {
        w.mailbox("box").await;
        let n = signed_mail(&w, "r-2", &["box@uncorreo.test"], true, "2");
        let (status, ctype, json) = w.post_raw(fx::to_json(&n)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ctype, "application/problem+json");
        assert!(json["detail"]
            .as_str()
            .unwrap()
            .starts_with("cert_unavailable"));
    });
}

#[test]
fn expired_or_not_yet_valid_certificates_are_refused() {
    let now = fx::now_secs();
    for pem in [
        fx::issue_cert(&fx::keys().signer, now - 7200, now - 3600),
        fx::issue_cert(&fx::keys().signer, now + 3600, now + 7200),
    ] {
        let w = world(Setup {
            pem: Some(pem),
            ..Setup::default()
        });
        block_on(async {
            let mb = w.mailbox("box").await;
            let n = signed_mail(&w, "e-1", &["box@uncorreo.test"], true, "2");
            assert_eq!(
                w.post(&n).await,
                (StatusCode::OK, "bad_signature".to_owned())
            );
            assert_eq!(w.stored(&mb).len(), 0);
        });
    }
}

#[test]
fn body_limit_is_exact_and_answers_413_problem_json() {
    let limit = 8192;
    let w = world(Setup {
        sns: SnsConfig {
            allowed_topic_arns: vec![fx::TOPIC.to_owned()],
            max_body_bytes: limit,
            ..SnsConfig::default()
        },
        ..Setup::default()
    });
    block_on(async {
        w.mailbox("box").await;
        let n = signed_mail(&w, "b-1", &["box@uncorreo.test"], true, "2");
        let json = fx::to_json(&n);
        assert!(json.len() < limit);
        // JSON allows trailing whitespace: pad to exactly the limit.
        let at_limit = format!("{json}{}", " ".repeat(limit - json.len()));
        let (status, _, body) = w.post_raw(at_limit.clone()).await;
        assert_eq!(
            (status, body["outcome"].as_str()),
            (StatusCode::OK, Some("delivered"))
        );

        let over = format!("{at_limit} ");
        let (status, ctype, body) = w.post_raw(over).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(ctype, "application/problem+json");
        assert_eq!(body["status"], 413);
    });
}

#[test]
fn unusable_ses_payloads_are_dropped_as_malformed_or_ignored() {
    let w = world(Setup {
        max_message_bytes: 200,
        ..Setup::default()
    });
    block_on(async {
        let mb = w.mailbox("box").await;
        let now = w.clock_now();
        let post = |id: &'static str, message: String| {
            let mut n = fx::notification(id, message, now);
            fx::sign(&mut n, "2");
            n
        };
        let cases = [
            (post("p-1", "not json".to_owned()), "malformed"),
            (
                post(
                    "p-2",
                    r#"{"notificationType":"Received","receipt":{"recipients":["box@uncorreo.test"]}}"#
                        .to_owned(),
                ),
                "malformed",
            ),
            (
                post(
                    "p-3",
                    r#"{"notificationType":"AMAZON_SES_SETUP_NOTIFICATION","receipt":{}}"#.to_owned(),
                ),
                "ignored",
            ),
            (
                post(
                    "p-4",
                    fx::ses_received(&["box@uncorreo.test"], "s@example.com", &[b'x'; 300], false),
                ),
                "malformed",
            ),
            (
                post(
                    "bad\r\nid",
                    fx::ses_received(&["box@uncorreo.test"], "s@example.com", EMAIL, true),
                ),
                "malformed",
            ),
        ];
        for (n, want) in cases {
            assert_eq!(
                w.post(&n).await,
                (StatusCode::OK, want.to_owned()),
                "{:?}",
                n.message_id
            );
        }
        assert_eq!(w.stored(&mb).len(), 0);
    });
}

#[test]
fn every_outcome_is_counted_in_metrics() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let w = world(Setup::default());
    metrics::with_local_recorder(&recorder, || {
        block_on(async {
            w.mailbox("box").await;
            let n = signed_mail(&w, "c-1", &["box@uncorreo.test"], true, "2");
            w.post(&n).await;
            w.post(&n).await;
            let mut bad = n.clone();
            bad.message_id = Some("c-2".to_owned());
            w.post(&bad).await;
            w.post_raw("{".to_owned()).await;
        })
    });
    let text = handle.render();
    for (outcome, n) in [
        ("delivered", 1),
        ("duplicate", 1),
        ("bad_signature", 1),
        ("malformed", 1),
    ] {
        let line = format!("uncorreo_ses_notifications_total{{outcome=\"{outcome}\"}} {n}");
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }
}
