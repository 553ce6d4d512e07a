//! uncorreo's SMTP server driven by clients nobody on this project wrote:
//! Python's `smtplib`, `swaks`, and the `lettre` crate. Every accepted message
//! is read back from the engine and compared byte for byte (after
//! dot-unstuffing) with what was sent, with exactly our `Received:` line in
//! front.

use super::*;
use crate::support::{TestServer, DOMAIN};

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
    let tls = tls_server(&["127.0.0.1", "localhost"]);
    let (server, cert_path) = (&tls.server, &tls.cert_path);
    let alice = server.mailbox("alice", 10);
    let out = smtplib(
        server,
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

fn swaks_base(server: &TestServer) -> Vec<String> {
    vec![
        "--server".into(),
        server.smtp.ip().to_string(),
        "--port".into(),
        server.smtp.port().to_string(),
        "--helo".into(),
        "swaks.example".into(),
        "--from".into(),
        "s@sender.example".into(),
        "--timeout".into(),
        "30".into(),
    ]
}

fn run_swaks(server: &TestServer, extra: &[&str], body: &[u8]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("msg.eml");
    std::fs::write(&file, body).unwrap();
    let data = format!("@{}", file.display());
    let mut args = swaks_base(server);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["--data".to_owned(), data]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    swaks(&args)
}

#[test]
fn swaks_pipelined_message_is_stored_byte_for_byte() {
    let server = TestServer::start();
    let alice = server.mailbox("alice", 10);
    let bob = server.mailbox("bob", 10);
    let to = format!("{},{}", addr("alice"), addr("bob"));
    let (status, transcript) = run_swaks(&server, &["--to", &to, "--pipeline"], BODY);
    assert_eq!(status, 0, "{transcript}");
    assert!(
        transcript.contains("250 2.0.0 Ok: stored as"),
        "{transcript}"
    );
    let sent = with_client_terminator(BODY);
    assert_stored(&server.engine, &alice, &[&sent]);
    assert_stored(&server.engine, &bob, &[&sent]);
}

#[test]
fn swaks_unknown_mailbox_and_foreign_domain_are_refused() {
    let server = TestServer::start();
    let (status, transcript) = run_swaks(&server, &["--to", &addr("ghost")], BODY);
    assert_ne!(status, 0, "{transcript}");
    assert!(transcript.contains("550 5.1.1"), "{transcript}");
    let (status, transcript) = run_swaks(&server, &["--to", "x@elsewhere.example"], BODY);
    assert_ne!(status, 0, "{transcript}");
    assert!(transcript.contains("550 5.7.1"), "{transcript}");
}

#[test]
fn swaks_starttls_verified_against_our_certificate() {
    let tls = tls_server(&["127.0.0.1", "localhost"]);
    let (server, cert_path) = (&tls.server, &tls.cert_path);
    let alice = server.mailbox("alice", 10);
    let (status, transcript) = run_swaks(
        server,
        &[
            "--to",
            &addr("alice"),
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            cert_path.to_str().unwrap(),
            "--pipeline",
        ],
        BODY,
    );
    assert_eq!(status, 0, "{transcript}");
    assert!(
        transcript.contains("220 2.0.0 Ready to start TLS"),
        "{transcript}"
    );
    let h = assert_stored(&server.engine, &alice, &[&with_client_terminator(BODY)]);
    assert!(h[0].contains("with ESMTPS id "), "{}", h[0]);
}

/// swaks and lettre always send `<CRLF>.<CRLF>` after the body, also when it
/// already ends in CRLF: what they sent (and we must store) is the body plus
/// one empty line. (smtplib only adds the CRLF when it is missing.)
fn with_client_terminator(body: &[u8]) -> Vec<u8> {
    [body, b"\r\n"].concat()
}

mod with_lettre {
    use super::*;
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::transport::smtp::extension::ClientId;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    fn transport(server: &TestServer, tls: Option<&str>) -> AsyncSmtpTransport<Tokio1Executor> {
        let mut b =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server.smtp.ip().to_string())
                .port(server.smtp.port())
                .hello_name(ClientId::Domain("lettre.example".to_owned()));
        if let Some(pem) = tls {
            let params = TlsParameters::builder("localhost".to_owned())
                .add_root_certificate(Certificate::from_pem(pem.as_bytes()).unwrap())
                .build_rustls()
                .unwrap();
            b = b.tls(Tls::Required(params));
        }
        b.build()
    }

    fn message(to: &[String]) -> Message {
        let mut m = Message::builder()
            .from("Sender <s@sender.example>".parse().unwrap())
            .subject("lettre test")
            .header(ContentType::TEXT_PLAIN);
        for t in to {
            m = m.to(t.parse().unwrap());
        }
        m.body(String::from(
            "Hello from lettre.\n.a line that starts with a dot\n..two\nYour code is 123456\n",
        ))
        .unwrap()
    }

    #[test]
    fn lettre_plain_and_several_recipients() {
        let server = TestServer::start();
        let a = server.mailbox("la", 10);
        let b = server.mailbox("lb", 10);
        let msg = message(&[addr("la"), addr("lb")]);
        let formatted = with_client_terminator(&msg.formatted());
        let t = transport(&server, None);
        let resp = crate::support::block_on(t.send(msg)).unwrap();
        assert_eq!(resp.code().to_string(), "250");
        assert!(resp
            .message()
            .next()
            .unwrap()
            .starts_with("2.0.0 Ok: stored as"));
        assert_stored(&server.engine, &a, &[&formatted]);
        assert_stored(&server.engine, &b, &[&formatted]);
    }

    #[test]
    fn lettre_starttls_required() {
        let tls = tls_server(&["localhost"]);
        let server = &tls.server;
        let a = server.mailbox("la", 10);
        let msg = message(&[addr("la")]);
        let formatted = with_client_terminator(&msg.formatted());
        let t = transport(server, Some(&tls.cert_pem));
        crate::support::block_on(t.send(msg)).unwrap();
        let h = assert_stored(&server.engine, &a, &[&formatted]);
        assert!(
            h[0].contains("from lettre.example ([127.0.0.1])"),
            "{}",
            h[0]
        );
        assert!(h[0].contains("with ESMTPS id "), "{}", h[0]);
    }

    #[test]
    fn lettre_sees_permanent_refusals() {
        let server = TestServer::start();
        let t = transport(&server, None);
        let err = crate::support::block_on(t.send(message(&[addr("ghost")]))).unwrap_err();
        assert!(err.is_permanent(), "{err}");
        assert!(err.to_string().contains("5.1.1"), "{err}");
    }
}
