//! Outbound webhooks through real sockets: a receiver (a tiny axum server on
//! 127.0.0.1 port 0, so the appliance runs with `[webhooks] allow_private`)
//! gets each committed message's event, signed so that the Standard
//! Webhooks reference library (PyPI `standardwebhooks`, installed by
//! `.ci/deps`) verifies it; retries after failures deliver the event once;
//! a restart between attempts loses nothing; a message found corrupt on
//! disk is skipped, not a stall; loopback, private and metadata URLs are
//! refused unless allowed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::api::{deliver, signup_message, smtp_send, Api, Auth};
use crate::support::{test_config, DOMAIN};

/// Generous: a hit normally comes within milliseconds.
const WAIT: Duration = Duration::from_secs(30);

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    /// The status the receiver answered with.
    answered: u16,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

struct ReceiverState {
    /// Answer 500 while this is above zero (counting down).
    fail_remaining: AtomicUsize,
    hits: mpsc::Sender<Hit>,
}

/// A webhook receiver on 127.0.0.1 port 0, on its own thread and runtime.
struct Receiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
    hits: mpsc::Receiver<Hit>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let failing = state
        .fail_remaining
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let _ = state.hits.send(Hit {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
        answered: status.as_u16(),
    });
    status
}

impl Receiver {
    fn start(fail_first: usize) -> Self {
        let (tx, hits) = mpsc::channel();
        let state = Arc::new(ReceiverState {
            fail_remaining: AtomicUsize::new(fail_first),
            hits: tx,
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(Arc::clone(&state));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Self {
            addr,
            state,
            hits,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn set_failures(&self, n: usize) {
        self.state.fail_remaining.store(n, Ordering::SeqCst);
    }

    fn next(&self) -> Hit {
        self.hits
            .recv_timeout(WAIT)
            .expect("the receiver got a webhook within the deadline")
    }

    /// Every hit up to and including the first one answered with 200.
    fn until_accepted(&self) -> Vec<Hit> {
        let mut hits = Vec::new();
        loop {
            let h = self.next();
            let done = h.answered == 200;
            hits.push(h);
            if done {
                return hits;
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Fast retries, local receivers allowed, new mailboxes picked up quickly.
fn fast(c: &mut uncorreo::Config) {
    c.webhooks.allow_private = true;
    c.webhooks.backoff_initial_ms = 10;
    c.webhooks.backoff_max_ms = 50;
    c.webhooks.rescan_interval_ms = 50;
}

/// Create an anonymous mailbox and a webhook on it; (address, token, secret).
fn mailbox_with_webhook(api: &Api, local: &str, url: &str) -> (String, String, String) {
    let (address, token) = api.mailbox(&Auth::None, json!({ "local_part": local }));
    let token = token.unwrap();
    let r = api.call(
        "POST",
        &format!("/api/v1/mailboxes/{address}/webhooks"),
        &Auth::Session(token.clone()),
        Some(json!({ "url": url })),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let created = r.json();
    assert_eq!(created["mailbox"], address.as_str());
    assert_eq!(created["url"], url);
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (address, token, secret)
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Verify `hit` with the Standard Webhooks reference library; Ok(payload)
/// or Err(the library's complaint).
fn reference_verify(secret: &str, hit: &Hit, body: &[u8]) -> Result<Value, String> {
    let script = r#"
import json, os, sys
from standardwebhooks.webhooks import Webhook
body = sys.stdin.buffer.read()
headers = {
    "webhook-id": os.environ["WH_ID"],
    "webhook-timestamp": os.environ["WH_TIMESTAMP"],
    "webhook-signature": os.environ["WH_SIGNATURE"],
}
try:
    payload = Webhook(os.environ["WH_SECRET"]).verify(body, headers)
except Exception as e:
    print(type(e).__name__ + ": " + str(e), file=sys.stderr)
    sys.exit(3)
print(json.dumps(payload))
"#;
    let mut child = std::process::Command::new(python())
        .args(["-c", script])
        .env("WH_ID", &hit.id)
        .env("WH_TIMESTAMP", &hit.timestamp)
        .env("WH_SIGNATURE", &hit.signature)
        .env("WH_SECRET", secret)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (installed by .ci/deps)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "PyPI standardwebhooks is missing: run .ci/deps ({stderr})"
    );
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(stderr)
    }
}

#[test]
fn event_signature_verifies_with_the_standard_webhooks_reference_library() {
    let receiver = Receiver::start(0);
    let api = Api::start_with(fast);
    let (address, token, secret) = mailbox_with_webhook(&api, "signed", &receiver.url());
    let listed = api
        .get(
            &format!("/api/v1/mailboxes/{address}/webhooks"),
            &Auth::Session(token.clone()),
        )
        .json();
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 1);
    assert!(
        !listed.to_string().contains(&secret),
        "a listing never shows the secret"
    );

    smtp_send(
        api.server.smtp,
        "shop@example.com",
        &address,
        &signup_message(&address),
    );
    let hit = receiver.next();
    assert_eq!(hit.answered, 200);
    let payload = reference_verify(&secret, &hit, &hit.body).expect("signature verifies");
    // The same event the WebSocket / SSE feed sends.
    assert_eq!(payload["event"], "new_message");
    assert_eq!(payload["mailbox"], address.as_str());
    assert_eq!(payload["seq"], 1);
    assert_eq!(payload["subject"], "Your verification code");
    assert_eq!(payload["codes"], json!(["482913"]));
    let message_id = payload["message_id"].as_str().unwrap();
    let listed = api
        .get(
            &format!("/api/v1/mailboxes/{address}/messages"),
            &Auth::Session(token),
        )
        .json();
    assert_eq!(listed["messages"][0]["id"], message_id, "{listed}");

    // Tampering with the body, or another endpoint's secret, fails verification.
    let mut forged = hit.body.clone();
    forged.extend_from_slice(b" ");
    assert!(reference_verify(&secret, &hit, &forged).is_err());
    let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert!(reference_verify(other, &hit, &hit.body).is_err());
}

#[test]
fn a_receiver_failing_three_times_then_succeeding_gets_the_event_once() {
    let receiver = Receiver::start(3);
    let api = Api::start_with(fast);
    let (address, _, _) = mailbox_with_webhook(&api, "retried", &receiver.url());
    let first = deliver(&api.server, &address, &signup_message(&address));

    let hits = receiver.until_accepted();
    let answered: Vec<u16> = hits.iter().map(|h| h.answered).collect();
    assert_eq!(answered, [500, 500, 500, 200]);
    for h in &hits {
        assert_eq!(h.id, hits[0].id, "one webhook-id across retries");
        assert_eq!(h.json()["message_id"], first.to_string());
    }
    // Accepted once: the next thing the receiver sees is the next message,
    // not the first one again (an endpoint delivers in order, one at a time).
    let second = deliver(&api.server, &address, &signup_message(&address));
    let next = receiver.next();
    assert_eq!(next.answered, 200);
    assert_eq!(next.json()["message_id"], second.to_string());
    assert_ne!(next.id, hits[0].id);

    let metrics = api.get("/metrics", &Auth::None);
    let text = String::from_utf8_lossy(&metrics.body);
    for outcome in ["delivered", "failed"] {
        assert!(
            text.contains(&format!(
                "uncorreo_webhook_deliveries_total{{outcome=\"{outcome}\"}}"
            )),
            "{outcome} missing from /metrics"
        );
    }
}

#[test]
fn a_restart_between_attempts_loses_nothing() {
    let receiver = Receiver::start(usize::MAX);
    let tweak = |c: &mut uncorreo::Config| {
        fast(c);
        c.webhooks.max_attempts = 1_000_000;
    };
    let mut api = Api::start_with(tweak);
    let (address, _, _) = mailbox_with_webhook(&api, "restarted", &receiver.url());
    let first = deliver(&api.server, &address, &signup_message(&address));
    let failed = receiver.next();
    assert_eq!(failed.answered, 500);
    api.server.stop();

    // Attempts made before the stop are all answered 500; from now on 200.
    while let Ok(h) = receiver.hits.try_recv() {
        assert_eq!(h.answered, 500);
    }
    receiver.set_failures(0);
    let mut config = test_config(api.server.data.path());
    tweak(&mut config);
    let appliance = uncorreo::Appliance::start(config).expect("appliance restarts");
    let hit = receiver.next();
    assert_eq!(hit.answered, 200);
    assert_eq!(hit.id, failed.id, "the pending event is the same event");
    assert_eq!(hit.json()["message_id"], first.to_string());

    // Only once: the next hit is a new message.
    let rcpt = appliance.engine.resolve(&address).unwrap();
    crate::support::block_on(appliance.engine.deliver(uncorreo_engine::Delivery {
        raw: bytes::Bytes::from(signup_message(&address)),
        envelope_from: "shop@example.com".to_owned(),
        recipients: vec![rcpt],
        dedupe_key: None,
    }))
    .unwrap();
    // At least once: an attempt in flight at the stop may have reached the
    // receiver after the switch and been accepted too; it carries the same
    // webhook-id, so the receiver can tell. Anything else is the next message.
    let next = loop {
        let h = receiver.next();
        if h.id != failed.id {
            break h;
        }
    };
    assert_eq!(next.json()["seq"], 2);
    appliance.shutdown();
}

#[test]
fn a_message_corrupt_on_disk_is_skipped_and_does_not_stall_the_endpoint() {
    let receiver = Receiver::start(usize::MAX);
    let api = Api::start_with(|c| {
        fast(c);
        c.webhooks.max_attempts = 1_000_000;
    });
    let (address, _, _) = mailbox_with_webhook(&api, "gapped", &receiver.url());
    let first = deliver(&api.server, &address, &signup_message(&address));
    assert_eq!(receiver.next().answered, 500);
    // While the endpoint is held on the first message, the second is
    // damaged on disk.
    let marked = crate::realtime::message(&address, "Zq2hook", "x");
    deliver(&api.server, &address, &marked);
    let third = deliver(&api.server, &address, &signup_message(&address));
    crate::realtime::flip_first(api.server.data.path(), b"Zq2hook");
    receiver.set_failures(0);

    let accepted = loop {
        let h = receiver.next();
        if h.answered == 200 {
            break h;
        }
    };
    assert_eq!(accepted.json()["message_id"], first.to_string());
    let next = receiver.next();
    assert_eq!(next.answered, 200);
    assert_eq!(next.json()["message_id"], third.to_string());
    let metrics = api.get("/metrics", &Auth::None);
    assert!(
        String::from_utf8_lossy(&metrics.body)
            .contains("uncorreo_webhook_deliveries_total{outcome=\"quarantined\"} 1"),
        "quarantined missing from /metrics"
    );
}

#[test]
fn a_per_user_webhook_covers_mailboxes_created_after_it() {
    let receiver = Receiver::start(0);
    let api = Api::start_with(fast);
    let key = Auth::Bearer(api.user("free"));
    let r = api.call(
        "POST",
        "/api/v1/webhooks",
        &key,
        Some(json!({ "url": receiver.url() })),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let created = r.json();
    assert_eq!(created["mailbox"], Value::Null);
    let id = created["id"].as_str().unwrap().to_owned();
    let (address, _) = api.mailbox(&key, json!({ "local_part": "later" }));
    deliver(&api.server, &address, &signup_message(&address));
    let hit = receiver.next();
    assert_eq!(hit.json()["mailbox"], address.as_str());
    let secret = created["secret"].as_str().unwrap();
    reference_verify(secret, &hit, &hit.body).expect("signature verifies");

    // A session token cannot manage per-user webhooks; the owner can delete.
    let listed = api.get("/api/v1/webhooks", &key).json();
    assert_eq!(listed["webhooks"][0]["id"], id.as_str());
    let r = api.call("DELETE", &format!("/api/v1/webhooks/{id}"), &key, None);
    assert_eq!(r.status, 204);
    let r = api.call("DELETE", &format!("/api/v1/webhooks/{id}"), &key, None);
    assert_eq!((r.status, r.problem().as_str()), (404, "not-found"));
    assert_eq!(
        api.get("/api/v1/webhooks", &key).json()["webhooks"],
        json!([])
    );
}

#[test]
fn loopback_private_and_metadata_urls_are_refused_unless_allowed() {
    let receiver = Receiver::start(0);
    let api = Api::start_with(|c| c.webhooks.max_endpoints_per_owner = 2);
    let (address, token) = api.mailbox(&Auth::None, json!({ "local_part": "guarded" }));
    let auth = Auth::Session(token.unwrap());
    let path = format!("/api/v1/mailboxes/{address}/webhooks");
    for url in [
        receiver.url(),
        "http://localhost:9/hook".to_owned(),
        "http://10.0.0.1/hook".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[fd00:ec2::254]/".to_owned(),
        "http://[::1]:9/".to_owned(),
        "https://100.64.0.1/".to_owned(),
        "http://[::ffff:127.0.0.1]/".to_owned(),
    ] {
        let r = api.call("POST", &path, &auth, Some(json!({ "url": url })));
        assert_eq!(
            (r.status, r.problem().as_str()),
            (403, "webhook-url-refused"),
            "{url}"
        );
        assert!(
            r.json()["detail"]
                .as_str()
                .unwrap()
                .contains("allow_private"),
            "the refusal says how an operator allows it"
        );
    }
    for url in [
        "ftp://example.com/",
        "not a url",
        "http://user:pw@example.com/",
    ] {
        let r = api.call("POST", &path, &auth, Some(json!({ "url": url })));
        assert_eq!(
            (r.status, r.problem().as_str()),
            (422, "invalid-request"),
            "{url}"
        );
    }
    assert_eq!(api.get(&path, &auth).json()["webhooks"], json!([]));

    // The same receiver is fine where the operator allows private addresses,
    // up to the per-owner limit.
    let api = Api::start_with(|c| {
        fast(c);
        c.webhooks.max_endpoints_per_owner = 2;
    });
    let (address, token) = api.mailbox(&Auth::None, json!({ "local_part": "allowed" }));
    let auth = Auth::Session(token.unwrap());
    let path = format!("/api/v1/mailboxes/{address}/webhooks");
    for _ in 0..2 {
        let r = api.call("POST", &path, &auth, Some(json!({ "url": receiver.url() })));
        assert_eq!(r.status, 201);
    }
    let r = api.call("POST", &path, &auth, Some(json!({ "url": receiver.url() })));
    assert_eq!((r.status, r.problem().as_str()), (403, "webhook-limit"));
    let hooks = api.get(&path, &auth).json();
    let id = hooks["webhooks"][0]["id"].as_str().unwrap().to_owned();
    let r = api.call("DELETE", &format!("{path}/{id}"), &auth, None);
    assert_eq!(r.status, 204);
    assert_eq!(
        api.get(&path, &auth).json()["webhooks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(address.ends_with(DOMAIN));
}
