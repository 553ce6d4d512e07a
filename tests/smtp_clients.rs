//! uncorreo's SMTP server driven by clients nobody on this project wrote:
//! Python's `smtplib`, `swaks`, and the `lettre` crate. Every accepted message
//! is read back from the engine and compared byte for byte (after
//! dot-unstuffing) with what was sent, with exactly our `Received:` line in
//! front.

mod common;
mod smtp_support;

use common::{TestServer, DOMAIN};
use smtp_support::*;

/// smtplib client: `send.py HOST PORT SPEC_JSON` where the spec says from,
/// rcpts, mail options, the message file, and optional STARTTLS CA file.
/// Prints one JSON object: the outcome.
const SEND_PY: &str = r#"
import json, smtplib, ssl, sys
host, port, spec = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
msg = open(spec["file"], "rb").read()
out = {}
try:
    with smtplib.SMTP(host, port, timeout=30) as s:
        s.ehlo("client.example")
        out["esmtp"] = sorted(s.esmtp_features.keys())
        if spec.get("cafile"):
            ctx = ssl.create_default_context(cafile=spec["cafile"])
            code, _ = s.starttls(context=ctx)
            out["starttls"] = code
            s.ehlo("client.example")
            out["esmtp_after_tls"] = sorted(s.esmtp_features.keys())
        refused = s.sendmail(spec["from"], spec["rcpts"], msg, mail_options=spec.get("mail_options", []))
        out["ok"] = True
        out["refused"] = {k: v[0] for k, v in refused.items()}
except smtplib.SMTPRecipientsRefused as e:
    out["error"] = "recipients"; out["codes"] = {k: v[0] for k, v in e.recipients.items()}
except smtplib.SMTPSenderRefused as e:
    out["error"] = "sender"; out["code"] = e.smtp_code; out["text"] = e.smtp_error.decode()
except smtplib.SMTPDataError as e:
    out["error"] = "data"; out["code"] = e.smtp_code; out["text"] = e.smtp_error.decode()
print(json.dumps(out))
"#;

fn smtplib(server: &TestServer, spec: serde_json::Value, msg: &[u8]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("msg.eml");
    std::fs::write(&file, msg).unwrap();
    let mut spec = spec;
    spec["file"] = file.to_str().unwrap().into();
    let out = python(
        SEND_PY,
        &[
            &server.smtp.ip().to_string(),
            &server.smtp.port().to_string(),
            &spec.to_string(),
        ],
    );
    serde_json::from_str(out.trim()).unwrap()
}

fn addr(local: &str) -> String {
    format!("{local}@{DOMAIN}")
}

const BODY: &[u8] = b"From: a@sender.example\r\nTo: alice@uncorreo.test\r\nSubject: hi\r\n\r\nline one\r\n.leading dot\r\n..two dots\r\n.\r\nlast\r\n";

#[test]
fn smtplib_plain_message_is_stored_byte_for_byte() {
    let server = TestServer::start();
    let alice = server.mailbox("alice", 10);
    let out = smtplib(
        &server,
        serde_json::json!({"from": "a@sender.example", "rcpts": [addr("alice")]}),
        BODY,
    );
    assert_eq!(out["ok"], true, "{out}");
    let features: Vec<String> = serde_json::from_value(out["esmtp"].clone()).unwrap();
    for f in [
        "pipelining",
        "size",
        "8bitmime",
        "smtputf8",
        "enhancedstatuscodes",
        "chunking",
    ] {
        assert!(
            features.iter().any(|x| x == f),
            "{f} not advertised: {features:?}"
        );
    }
    assert!(
        !features.iter().any(|x| x == "starttls"),
        "STARTTLS without a certificate"
    );
    let headers = assert_stored(&server.engine, &alice, &[BODY]);
    assert!(headers[0].starts_with("Received: from client.example ([127.0.0.1])"));
    assert!(headers[0].contains("with ESMTP id "), "{}", headers[0]);
    assert!(
        headers[0].contains("for <alice@uncorreo.test>"),
        "{}",
        headers[0]
    );
}

#[test]
fn smtplib_several_recipients_and_plus_tags() {
    let server = TestServer::start();
    let a = server.mailbox("a1", 10);
    let b = server.mailbox("b1", 10);
    let out = smtplib(
        &server,
        serde_json::json!({"from": "x@sender.example", "rcpts": [addr("a1"), addr("b1+Tag"), addr("nobody")]}),
        BODY,
    );
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["refused"][addr("nobody")], 550, "{out}");
    let h = assert_stored(&server.engine, &a, &[BODY]);
    assert_stored(&server.engine, &b, &[BODY]);
    // Two recipients: no "for" clause (it would leak one to the other).
    assert!(!h[0].contains("for <"), "{}", h[0]);
    let meta = server.engine.list_messages(b.id, 0, 10).unwrap();
    assert_eq!(meta[0].plus_tag.as_deref(), Some("Tag"));
}

#[test]
fn smtplib_8bitmime_and_smtputf8_sender() {
    let server = TestServer::start();
    let alice = server.mailbox("alice", 10);
    let body = "Subject: =?utf-8?q?caf=C3=A9?=\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncafé crème ✓\r\n".as_bytes();
    let out = smtplib(
        &server,
        serde_json::json!({"from": "jösé@bücher.example", "rcpts": [addr("alice")], "mail_options": ["BODY=8BITMIME", "SMTPUTF8"]}),
        body,
    );
    assert_eq!(out["ok"], true, "{out}");
    assert_stored(&server.engine, &alice, &[body]);
    let meta = server.engine.list_messages(alice.id, 0, 10).unwrap();
    assert_eq!(meta[0].envelope_from, "jösé@bücher.example");
}

#[test]
fn smtplib_refusals_unknown_foreign_and_oversize() {
    let server = TestServer::start_with(|c| c.smtp.max_message_bytes = 1000);
    let alice = server.mailbox("alice", 10);
    let out = smtplib(
        &server,
        serde_json::json!({"from": "x@sender.example", "rcpts": [addr("ghost"), "victim@elsewhere.example", "alice%elsewhere.example@uncorreo.test"]}),
        BODY,
    );
    assert_eq!(out["error"], "recipients", "{out}");
    assert_eq!(out["codes"][addr("ghost")], 550);
    assert_eq!(out["codes"]["victim@elsewhere.example"], 550);
    assert_eq!(out["codes"]["alice%elsewhere.example@uncorreo.test"], 553);
    // smtplib sends SIZE= since we advertise it: refused at MAIL.
    let big = [
        b"Subject: big\r\n\r\n".to_vec(),
        b"0123456789\r\n".repeat(200),
    ]
    .concat();
    let out = smtplib(
        &server,
        serde_json::json!({"from": "x@sender.example", "rcpts": [addr("alice")]}),
        &big,
    );
    assert_eq!(out["error"], "sender", "{out}");
    assert_eq!(out["code"], 552);
    assert!(out["text"].as_str().unwrap().starts_with("5.3.4"), "{out}");
    assert!(stored(&server.engine, &alice).is_empty());
}

#[test]
fn smtplib_starttls_with_a_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let server = TestServer::start_with(|c| {
        c.smtp.tls_cert = Some(cert_path.clone());
        c.smtp.tls_key = Some(key_path.clone());
    });
    let alice = server.mailbox("alice", 10);
    let out = smtplib(
        &server,
        serde_json::json!({"from": "x@sender.example", "rcpts": [addr("alice")], "cafile": cert_path.to_str().unwrap()}),
        BODY,
    );
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["starttls"], 220);
    let before: Vec<String> = serde_json::from_value(out["esmtp"].clone()).unwrap();
    let after: Vec<String> = serde_json::from_value(out["esmtp_after_tls"].clone()).unwrap();
    assert!(before.contains(&"starttls".to_owned()), "{before:?}");
    assert!(!after.contains(&"starttls".to_owned()), "{after:?}");
    let h = assert_stored(&server.engine, &alice, &[BODY]);
    assert!(h[0].contains("with ESMTPS id "), "{}", h[0]);
}
