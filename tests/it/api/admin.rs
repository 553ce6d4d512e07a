//! `uncorreo admin …` run as the real binary: against a stopped server's data
//! directory (it opens storage itself) and against a running server (over
//! its operator socket, with no downtime): users, keys, plans, mailboxes,
//! stats, the audit trail, and a backup taken during a 10k burst.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::{Api, Auth};
use crate::support as common;

/// `uncorreo admin ARGS…` for the data directory `data` (and so for the
/// server running on it, whose operator socket sits beside it).
fn cli(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_uncorreo"))
        .arg("admin")
        .args(args)
        .env("UNCORREO__ENGINE__DATA_DIR", data)
        .env("UNCORREO__ENGINE__MIN_FREE_BYTES", "0")
        .env(
            "UNCORREO__ENGINE__DOMAINS",
            format!("[\"{}\"]", common::DOMAIN),
        )
        .env("RUST_LOG", "warn")
        .env("SUDO_USER", "ops-test")
        .output()
        .unwrap()
}

fn admin(data: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["user", "create"];
    all.extend_from_slice(args);
    cli(data, &all)
}

/// Run `uncorreo admin ARGS…`, assert success and parse its JSON answer.
fn cli_json(data: &Path, args: &[&str]) -> Value {
    let out = cli(data, args);
    assert!(out.status.success(), "admin {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("admin {args:?}: {e}: {out:?}"))
}

/// The JSON the CLI printed on stderr before a key (user create, key create).
fn stderr_json(out: &std::process::Output) -> Value {
    let err = String::from_utf8_lossy(&out.stderr);
    let end = err.rfind('}').unwrap_or_else(|| panic!("no JSON: {err}"));
    serde_json::from_str(&err[..=end]).unwrap_or_else(|e| panic!("{e}: {err}"))
}

/// The key inside a bearer credential.
fn key_line_of(auth: &Auth) -> &str {
    match auth {
        Auth::Bearer(key) => key,
        other => panic!("not a key: {other:?}"),
    }
}

fn key_line(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find(|l| l.starts_with("uct_"))
        .unwrap_or_else(|| panic!("no key printed: {out:?}"))
        .to_owned()
}

#[test]
fn creates_a_user_and_prints_one_well_formed_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = admin(dir.path(), &["--plan", "pro", "--name", "ci@example.com"]);
    assert!(out.status.success(), "{out:?}");
    let key = key_line(&out);
    assert_eq!(key.len(), 36);
    assert!(key[4..]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"pro\""), "{err}");
}

#[test]
fn refuses_an_unknown_plan_naming_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = admin(dir.path(), &["--plan", "platinum"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("platinum") && err.contains("anonymous, free, pro"),
        "{err}"
    );
}

/// Python's smtplib (a client nobody here wrote): `AUTH PLAIN` as
/// `SPEC.user` / `SPEC.password`, then one message to `SPEC.to`. Prints the
/// outcome as JSON: the AUTH reply code, and the data reply if it got there.
const SMTP_AUTH_PY: &str = r#"
import json, smtplib, sys
host, port, spec = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
out = {}
with smtplib.SMTP(host, port, timeout=30) as s:
    s.ehlo("ops.example")
    try:
        code, _ = s.login(spec["user"], spec["password"])
        out["auth"] = code
        msg = "From: app@sender.example\r\nTo: %s\r\nSubject: smtp auth\r\n\r\nhi\r\n" % spec["to"]
        s.sendmail("app@sender.example", [spec["to"]], msg)
        out["sent"] = True
    except smtplib.SMTPAuthenticationError as e:
        out["auth"] = e.smtp_code
        out["text"] = e.smtp_error.decode()
print(json.dumps(out))
"#;

/// `AUTH PLAIN` with `key` and one message to `to` over the plain SMTP port.
fn smtp_auth(api: &Api, key: &str, to: &str) -> Value {
    let smtp = api.server.smtp;
    let spec = serde_json::json!({ "user": "ops", "password": key, "to": to });
    let out = crate::smtp::python(
        SMTP_AUTH_PY,
        &[
            &smtp.ip().to_string(),
            &smtp.port().to_string(),
            &spec.to_string(),
        ],
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn while_serving_user_create_prints_a_key_that_works_at_once_and_revoke_makes_it_401() {
    // SMTP AUTH with API keys, offered without TLS so that smtplib can log
    // in on loopback (TLS for AUTH has its own tests in smtp::auth).
    let api = Api::start_with(|c| {
        c.smtp.auth = uncorreo_smtpd::config::AuthMode::Keys;
        c.smtp.auth_allow_plaintext = true;
    });
    let data = api.server.data.path().to_path_buf();
    let socket = api.server.appliance.as_ref().unwrap().admin_socket.clone();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "operator socket must be owner-only");

    // The server holds the data directory; the CLI goes through the socket.
    let out = admin(&data, &["--plan", "pro", "--name", "ci@example.com"]);
    assert!(out.status.success(), "{out:?}");
    let key = key_line(&out);
    let user = stderr_json(&out)["id"].as_u64().unwrap();
    let auth = Auth::Bearer(key.clone());
    assert_eq!(api.get("/api/v1/keys", &auth).status, 200);
    let (address, _) = api.mailbox(&auth, serde_json::json!({ "local_part": "ops-box" }));
    // The same key logs in over SMTP AUTH at once, and submits to its mailbox.
    let sent = smtp_auth(&api, &key, &address);
    assert_eq!(sent["auth"], 235, "{sent}");
    assert_eq!(sent["sent"], true, "{sent}");

    let shown = cli_json(&data, &["user", "show", &user.to_string()]);
    assert_eq!(shown["plan"], "pro");
    assert_eq!(shown["mailboxes"][0]["address"], address.as_str());
    let listed = cli_json(&data, &["user", "list"]);
    assert_eq!(listed["users"].as_array().unwrap().len(), 1);

    // Plans change at once, for the next request.
    let changed = cli_json(&data, &["user", "set-plan", &user.to_string(), "free"]);
    assert_eq!(changed["plan"], "free");
    let refused = cli(&data, &["user", "set-plan", &user.to_string(), "platinum"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown_plan"));

    // A second key, then revoke the first: 401 on its very next request.
    let out = cli(&data, &["key", "create", "--user", &user.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let second = Auth::Bearer(key_line(&out));
    let keys = cli_json(&data, &["key", "list", "--user", &user.to_string()]);
    let first_id = keys["keys"][0]["id"].as_u64().unwrap();
    assert_eq!(keys["keys"][0]["prefix"].as_str().unwrap(), &key[..12]);
    cli_json(&data, &["key", "revoke", &first_id.to_string()]);
    let r = api.get("/api/v1/keys", &auth);
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    let refused = smtp_auth(&api, &key, &address);
    assert_eq!(refused["auth"], 535, "{refused}");
    assert_eq!(api.get("/api/v1/keys", &second).status, 200);
    assert_eq!(smtp_auth(&api, key_line_of(&second), &address)["auth"], 235);

    // Mailboxes by address.
    let mb = cli_json(&data, &["mailbox", "show", &address]);
    assert_eq!(mb["owner"]["user"], user);
    let all = cli_json(&data, &["mailbox", "list"]);
    assert_eq!(all["mailboxes"].as_array().unwrap().len(), 1);
    cli_json(&data, &["mailbox", "delete", &address]);
    let gone = cli(&data, &["mailbox", "show", &address]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not_found"));

    // Disable: every key refused, no new key for it.
    let disabled = cli_json(&data, &["user", "disable", &user.to_string()]);
    assert!(disabled["disabled_at"].is_string(), "{disabled}");
    assert_eq!(api.get("/api/v1/keys", &second).status, 401);
    assert_eq!(smtp_auth(&api, key_line_of(&second), &address)["auth"], 535);
    let out = cli(&data, &["key", "create", "--user", &user.to_string()]);
    assert!(!out.status.success(), "{out:?}");

    let stats = cli_json(&data, &["stats"]);
    assert_eq!(stats["users"], 1);

    // Audited: who (the kernel's uid plus the operator's name), what, when;
    // in the log (kept across restarts) and in the metrics.
    let audit = cli_json(&data, &["audit"]);
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "user create",
            "user set-plan",
            "key create",
            "key revoke",
            "mailbox delete",
            "user disable"
        ]
    );
    let first = &audit["audit"][0];
    assert!(
        first["actor"].as_str().unwrap().starts_with("uid ")
            && first["actor"].as_str().unwrap().contains("ops-test"),
        "{first}"
    );
    assert!(first["at"].is_string() && first["target"] == format!("user {user}").as_str());
    let metrics = api.get("/metrics", &Auth::None);
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.lines()
            .any(|l| l.starts_with("uncorreo_admin_actions_total")
                && l.contains("action=\"key revoke\"")
                && l.contains("outcome=\"ok\"")),
        "{text}"
    );

    // After a restart the trail and the revocations are still there, and the
    // CLI, finding no server, opens the directory itself.
    let mut server = api.server;
    server.stop();
    assert!(!socket.exists(), "the socket goes away with the server");
    let audit = cli_json(&data, &["audit"]);
    assert_eq!(audit["audit"].as_array().unwrap().len(), 6);
    let keys = cli_json(&data, &["key", "list", "--user", &user.to_string()]);
    assert!(keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["revoked_at"].is_string()));
}

#[test]
fn refuses_a_request_line_over_the_limit_on_the_operator_socket() {
    use std::io::{Read, Write};
    let api = Api::start();
    let socket = api.server.appliance.as_ref().unwrap().admin_socket.clone();
    let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let big = vec![b'x'; uncorreo_api::operator::MAX_REQUEST_BYTES + 10];
    // The server may close before reading everything; the answer still comes.
    let _ = s.write_all(&big);
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let j: Value = serde_json::from_str(answer.trim()).unwrap();
    assert_eq!(j["status"], "error");
    assert_eq!(j["code"], "invalid");
    assert!(
        j["message"].as_str().unwrap().contains("longer than"),
        "{j}"
    );
}

#[test]
fn answers_invalid_to_a_client_that_sends_no_whole_request_in_time() {
    use std::io::{Read, Write};
    let api = Api::start();
    let socket = api.server.appliance.as_ref().unwrap().admin_socket.clone();
    let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    // Half a request and no newline: the server must not wait for ever.
    s.write_all(b"{\"request\":").unwrap();
    let limit = uncorreo_api::operator::REQUEST_TIMEOUT;
    s.set_read_timeout(Some(limit * 6)).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let j: Value = serde_json::from_str(answer.trim()).unwrap();
    assert_eq!(j["status"], "error", "{j}");
    assert_eq!(j["code"], "invalid", "{j}");
    assert!(j["message"].as_str().unwrap().contains("time limit"), "{j}");
}

/// The operator socket serves `MAX_CONCURRENT` connections at once: with
/// that many held open (no request yet), the next waits in the backlog
/// unanswered, and is served as soon as one of them ends.
#[test]
fn serves_at_most_max_concurrent_operator_connections_and_the_next_once_one_ends() {
    use std::io::{ErrorKind, Read, Write};
    use std::os::unix::net::UnixStream;
    let api = Api::start();
    let socket = api.server.appliance.as_ref().unwrap().admin_socket.clone();
    let request = b"{\"request\":{\"command\":\"user-list\"}}\n";
    let answer_of = |s: &mut UnixStream| {
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("answer");
        serde_json::from_str::<Value>(answer.trim()).expect("json answer")
    };
    // Each holder is served (one answered request proves the slot is taken
    // before the next connects), then holds its slot by sending nothing.
    let mut holders: Vec<UnixStream> = (0..uncorreo_api::operator::MAX_CONCURRENT)
        .map(|_| UnixStream::connect(&socket).expect("connect"))
        .collect();
    let mut waiting = UnixStream::connect(&socket).expect("connect into the backlog");
    waiting.write_all(request).expect("write");
    // A server past its cap would answer at once; this one must not while
    // every slot is held (the holders' own time limit is far off).
    waiting
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    match waiting.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("answered past the cap: {other:?}"),
    }
    // One holder sends its request and is answered: its slot frees.
    let mut first = holders.remove(0);
    first.write_all(request).expect("write");
    assert_eq!(answer_of(&mut first)["status"], "ok");
    waiting
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    assert_eq!(answer_of(&mut waiting)["status"], "ok");
    drop(holders);
}

#[test]
fn refuses_a_user_name_over_the_limit_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let long = "n".repeat(uncorreo_api::admin::MAX_USER_NAME + 1);
    let out = admin(dir.path(), &["--plan", "free", "--name", &long]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("(invalid)") && err.contains("longer than"),
        "{err}"
    );
    let fits = "n".repeat(uncorreo_api::admin::MAX_USER_NAME);
    let out = admin(dir.path(), &["--plan", "free", "--name", &fits]);
    assert!(out.status.success(), "{out:?}");
    let users = cli_json(dir.path(), &["user", "list"]);
    assert_eq!(users["users"].as_array().unwrap().len(), 1, "{users}");
    let audit = cli_json(dir.path(), &["audit"]);
    assert_eq!(audit["audit"].as_array().unwrap().len(), 1, "{audit}");
}

const BURST_CONNECTIONS: usize = 50;
const BURST_PER_CONNECTION: usize = 200;
const BURST_MAILBOXES: usize = 100;

/// Send `count` messages over one SMTP connection; record each id once its
/// 250 arrived, with the moment it did.
fn burst_sender(
    smtp: std::net::SocketAddr,
    conn: usize,
    count: usize,
    acked: &Mutex<Vec<(String, std::time::Instant)>>,
) {
    use common::{code, Raw};
    let (mut c, greeting) = Raw::connect(smtp);
    assert_eq!(code(&greeting), "220");
    assert_eq!(code(&c.cmd("EHLO burst.test")), "250");
    for i in 0..count {
        let id = format!("c{conn}-m{i}");
        let to = format!(
            "burst{}@{}",
            (conn * count + i) % BURST_MAILBOXES,
            common::DOMAIN
        );
        assert_eq!(code(&c.cmd("MAIL FROM:<load@burst.test>")), "250");
        assert_eq!(code(&c.cmd(&format!("RCPT TO:<{to}>"))), "250");
        assert_eq!(code(&c.cmd("DATA")), "354");
        let body = format!(
            "From: load@burst.test\r\nTo: {to}\r\nSubject: {id}\r\n\r\n{}\r\n.\r\n",
            "x".repeat(900)
        );
        c.send(body.as_bytes());
        let reply = c.reply();
        assert_eq!(code(&reply), "250", "{reply}");
        acked.lock().unwrap().push((id, std::time::Instant::now()));
    }
    assert_eq!(code(&c.cmd("QUIT")), "221");
}

/// Every subject in every burst mailbox of the server `api`, over REST.
fn subjects(api: &Api, auth: &Auth) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for n in 0..BURST_MAILBOXES {
        let address = format!("burst{n}@{}", common::DOMAIN);
        let mut since = 0;
        loop {
            let r = api.get(
                &format!("/api/v1/mailboxes/{address}/messages?since={since}&limit=100"),
                auth,
            );
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            let j = r.json();
            let page = j["messages"].as_array().unwrap();
            if page.is_empty() {
                break;
            }
            for m in page {
                *seen
                    .entry(m["subject"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
            since = j["next_since"].as_u64().unwrap();
        }
    }
    seen
}

#[test]
fn backup_during_a_10k_burst_restores_every_message_acked_before_it_and_verifies() {
    let api = Api::start();
    let data = api.server.data.path().to_path_buf();
    let out = admin(&data, &["--plan", "pro", "--name", "load"]);
    assert!(out.status.success(), "{out:?}");
    let auth = Auth::Bearer(key_line(&out));
    for n in 0..BURST_MAILBOXES {
        api.mailbox(
            &auth,
            serde_json::json!({ "local_part": format!("burst{n}") }),
        );
    }
    let backups = tempfile::tempdir().unwrap();
    let dest = backups.path().join("snapshot");

    let acked = Arc::new(Mutex::new(Vec::new()));
    let smtp = api.server.smtp;
    let senders: Vec<_> = (0..BURST_CONNECTIONS)
        .map(|conn| {
            let acked = Arc::clone(&acked);
            std::thread::spawn(move || burst_sender(smtp, conn, BURST_PER_CONNECTION, &acked))
        })
        .collect();
    // Start the backup once a fifth of the burst is acknowledged, while the
    // rest is still arriving.
    let total = BURST_CONNECTIONS * BURST_PER_CONNECTION;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while acked.lock().unwrap().len() < total / 5 {
        assert!(std::time::Instant::now() < deadline, "burst stalled");
        std::thread::yield_now();
    }
    let backup_started = std::time::Instant::now();
    let before: HashSet<String> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at < backup_started)
        .map(|(id, _)| id.clone())
        .collect();
    let report = cli_json(&data, &["backup", dest.to_str().unwrap()]);
    let acked_when_done = acked.lock().unwrap().len();
    for s in senders {
        s.join().unwrap();
    }
    assert_eq!(acked.lock().unwrap().len(), total);
    eprintln!(
        "backup {report}: {} acked before it started, {acked_when_done} when it ended, of {total}",
        before.len()
    );
    assert!(report["segments"].as_u64().unwrap() >= 1, "{report}");

    let verified = cli_json(&data, &["verify", dest.to_str().unwrap()]);
    assert_eq!(verified["problems"], serde_json::json!([]), "{verified}");
    assert_eq!(verified["mailboxes"], BURST_MAILBOXES);
    assert_eq!(verified["users"], 1);

    // Restore = start a server on the copy. It serves every message acked
    // before the backup began, exactly once, and nothing that was never sent.
    let restored = Api::start_with(|c| c.engine.data_dir = dest.clone());
    let seen = subjects(&restored, &auth);
    for id in &before {
        assert_eq!(seen.get(id), Some(&1), "{id} was acked before the backup");
    }
    let all: HashSet<String> = acked
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    for (id, n) in &seen {
        assert!(all.contains(id), "{id} was never sent");
        assert_eq!(*n, 1, "{id} appears {n} times");
    }
    assert_eq!(seen.len() as u64, verified["messages"].as_u64().unwrap());
    // The live server meanwhile has the whole burst.
    assert_eq!(subjects(&api, &auth).len(), total);
}
