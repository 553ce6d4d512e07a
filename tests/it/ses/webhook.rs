//! SES → SNS webhook end to end: a signed SES notification POSTed over real
//! HTTP to a running appliance is stored exactly (after our `Received:` line)
//! and is not delivered twice, also across a restart; and the
//! `uncorreo sns verify` command says "valid" or why not.
//!
//! The signing certificate reaches the appliance through `[sns]
//! trusted_cert_dir` (the offline certificate source), so no network is used.

use super::fixture as fx;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use crate::support::TestServer;
use uncorreo::{Appliance, Config};

const EMAIL: &[u8] =
    b"From: Shop <noreply@shop.example>\r\nTo: box@uncorreo.test\r\nSubject: Your code is 482913\r\nMessage-ID: <1@shop.example>\r\n\r\nUse 482913 to sign in.\r\n";

/// A directory holding the fixture's signing certificate under the name its URL ends with.
fn cert_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let name = fx::CERT_URL.rsplit('/').next().unwrap();
    std::fs::write(dir.path().join(name), fx::valid_cert()).unwrap();
    dir
}

fn sns_config(c: &mut Config, certs: &Path) {
    c.sns.allowed_topic_arns = vec![fx::TOPIC.to_owned()];
    c.sns.trusted_cert_dir = Some(certs.to_path_buf());
}

/// POST over a plain TCP connection; returns (status, JSON body).
fn post(addr: SocketAddr, body: &str) -> (u16, serde_json::Value) {
    let (status, json, _) = post_with_headers(addr, body);
    (status, json)
}

fn signed_notification(id: &str) -> String {
    let message = fx::ses_received(&["box@uncorreo.test"], "noreply@shop.example", EMAIL, true);
    let mut n = fx::notification(id, message, fx::now_ms());
    fx::sign(&mut n, "2");
    fx::to_json(&n)
}

fn assert_stored_once(engine: &uncorreo_engine::Engine, id: &str) {
    let address = uncorreo_engine::Address::from_parts("box", crate::support::DOMAIN).unwrap();
    let mb = engine.mailbox(&address).expect("mailbox exists");
    let list = engine.list_messages(mb.id, 0, 100).unwrap();
    assert_eq!(list.len(), 1, "exactly one stored copy");
    let raw = engine.read_raw(list[0].id).unwrap();
    let prefix =
        format!("Received: from amazonses.com by uncorreo.test (uncorreo) with SNS id {id}; ");
    assert!(
        raw.starts_with(prefix.as_bytes()),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    assert_eq!(&raw[line_end..], EMAIL, "raw bytes after our Received line");
    assert_eq!(list[0].envelope_from, "noreply@shop.example");
}

#[test]
fn a_signed_ses_notification_is_stored_exactly_and_once() {
    let certs = cert_dir();
    let server = TestServer::start_with(|c| sns_config(c, certs.path()));
    server.mailbox("box", 10);
    let id = "b5a1c3d2-7e4f-4a1b-9c8d-000000000001";
    let body = signed_notification(id);

    let (status, json) = post(server.http, &body);
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["outcome"], "delivered", "{json}");
    assert_stored_once(&server.engine, id);

    // SNS retries: answered 200, not delivered twice.
    let (status, json) = post(server.http, &body);
    assert_eq!((status, json["outcome"].as_str()), (200, Some("duplicate")));
    assert_stored_once(&server.engine, id);

    // A forged copy is dropped with 200 and a reason.
    let forged = body.replace("noreply@shop.example", "ceo@shop.example");
    let (status, json) = post(server.http, &forged);
    assert_eq!(
        (status, json["outcome"].as_str()),
        (200, Some("bad_signature"))
    );
    assert_stored_once(&server.engine, id);
}

#[test]
fn a_redelivered_notification_is_a_duplicate_after_a_restart() {
    let certs = cert_dir();
    let mut server = TestServer::start_with(|c| sns_config(c, certs.path()));
    server.mailbox("box", 10);
    let id = "b5a1c3d2-7e4f-4a1b-9c8d-000000000002";
    let body = signed_notification(id);
    let (status, json) = post(server.http, &body);
    assert_eq!((status, json["outcome"].as_str()), (200, Some("delivered")));

    server.stop();
    let mut config = crate::support::test_config(server.data.path());
    sns_config(&mut config, certs.path());
    let appliance = Appliance::start(config).expect("restarts on the same data dir");
    let (status, json) = post(appliance.http_addr, &body);
    assert_eq!((status, json["outcome"].as_str()), (200, Some("duplicate")));
    assert_stored_once(&appliance.engine, id);
    appliance.shutdown();
}

#[test]
fn a_temporary_storage_failure_answers_503_so_sns_retries() {
    let certs = cert_dir();
    let server = TestServer::start_with(|c| {
        sns_config(c, certs.path());
        // No filesystem has this much free: every delivery is refused as DiskFull.
        c.engine.min_free_bytes = u64::MAX;
    });
    server.mailbox("box", 10);
    let body = signed_notification("b5a1c3d2-7e4f-4a1b-9c8d-000000000003");
    let (status, json) = post(server.http, &body);
    assert_eq!(status, 503, "{json}");
    assert!(
        json["detail"]
            .as_str()
            .unwrap()
            .starts_with("storage_error"),
        "{json}"
    );
}

// ---- uncorreo sns verify ----

fn run_verify(cert: &Path, message: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_uncorreo"))
        .args(["sns", "verify", "--cert"])
        .arg(cert)
        .arg(message)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sns_verify_command_says_valid_or_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, fx::valid_cert()).unwrap();
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };

    let mut n = fx::notification("v-1", "hello".to_owned(), fx::now_ms());
    fx::sign(&mut n, "1");
    let valid = write("valid.json", &fx::to_json(&n));
    let (code, stdout, stderr) = run_verify(&cert, &valid);
    assert_eq!((code, stdout.as_str()), (0, "valid\n"), "{stderr}");

    let mut c = fx::confirmation("SubscriptionConfirmation", "v-2", fx::now_ms());
    fx::sign(&mut c, "2");
    let valid2 = write("valid2.json", &fx::to_json(&c));
    assert_eq!(run_verify(&cert, &valid2).0, 0);

    let mut tampered = n.clone();
    tampered.message = Some("hellO".to_owned());
    let mut v3 = n.clone();
    v3.signature_version = Some("3".to_owned());
    let mut host = n.clone();
    host.signing_cert_url = Some(
        "https://sns.us-east-1.amazonaws.com.evil.com/SimpleNotificationService-7e57000000000000000000000000f1c5.pem"
            .to_owned(),
    );
    let cases = [
        (
            "tampered",
            fx::to_json(&tampered),
            "signature does not match",
        ),
        (
            "version",
            fx::to_json(&v3),
            "unsupported SignatureVersion \"3\"",
        ),
        (
            "host",
            fx::to_json(&host),
            "is not sns.<region>.amazonaws.com",
        ),
        ("malformed", "{\"Type\": ".to_owned(), "malformed JSON"),
    ];
    for (name, body, reason) in cases {
        let file = write(&format!("{name}.json"), &body);
        let (code, stdout, stderr) = run_verify(&cert, &file);
        assert_ne!(code, 0, "{name}");
        assert!(!stdout.contains("valid"), "{name}: {stdout}");
        assert!(
            stderr.contains(reason),
            "{name}: {stderr:?} lacks {reason:?}"
        );
    }

    let now = fx::now_secs();
    let expired = dir.path().join("expired.pem");
    std::fs::write(
        &expired,
        fx::issue_cert(&fx::keys().signer, now - 7200, now - 3600),
    )
    .unwrap();
    let (code, _, stderr) = run_verify(&expired, &valid);
    assert_ne!(code, 0);
    assert!(stderr.contains("expired or not yet valid"), "{stderr}");

    let (code, _, stderr) = run_verify(&dir.path().join("missing.pem"), &valid);
    assert_ne!(code, 0);
    assert!(stderr.contains("missing.pem"), "{stderr}");
}

/// Past the budget of bytes in flight (held by SMTP sessions stopped after
/// `354`, see `smtp::budget`), a notification gets 503 with `Retry-After`
/// and stores nothing; SNS retries, and the retry is stored once.
#[test]
fn a_notification_past_the_byte_budget_gets_503_and_its_retry_is_stored() {
    use crate::smtp::budget::{finish, hold, message, small_budget, HELD};
    let certs = cert_dir();
    let server = TestServer::start_with(|c| {
        sns_config(c, certs.path());
        small_budget(c);
    });
    let mb = server.mailbox("box", 10);
    let email = message("ses", 300_000);
    let notification = {
        let m = fx::ses_received(&["box@uncorreo.test"], "noreply@shop.example", &email, true);
        let mut n = fx::notification("b5a1c3d2-7e4f-4a1b-9c8d-000000000009", m, fx::now_ms());
        fx::sign(&mut n, "2");
        fx::to_json(&n)
    };
    let mut a = hold(&server, "box@uncorreo.test", HELD);
    let mut b = hold(&server, "box@uncorreo.test", HELD);
    let (status, json, retry_after) = post_with_headers(server.http, &notification);
    assert_eq!(status, 503, "{json}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(finish(&mut a, &message("a", HELD)).starts_with("250"));
    assert!(finish(&mut b, &message("b", HELD)).starts_with("250"));
    let (status, json, _) = post_with_headers(server.http, &notification);
    assert_eq!(status, 200, "{json}");
    let list = server.engine.list_messages(mb.id, 0, 10).unwrap();
    assert_eq!(list.len(), 3, "two holders and the notification, once");
}

/// [`post`], also returning the `Retry-After` header.
fn post_with_headers(addr: SocketAddr, body: &str) -> (u16, serde_json::Value, Option<String>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /api/v1/ses/inbound HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain; charset=UTF-8\r\nx-amz-sns-message-type: Notification\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {out:?}"));
    let retry_after = head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: ").map(str::to_owned));
    (
        status,
        serde_json::from_str(body).unwrap_or_default(),
        retry_after,
    )
}
