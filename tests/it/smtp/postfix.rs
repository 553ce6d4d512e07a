//! Postfix as a real sending MTA relaying into uncorreo
//! (`relayhost = [127.0.0.1]:PORT`): mail submitted with `sendmail`
//! arrives, and mail that first meets a temporary refusal stays in
//! Postfix's queue and arrives when Postfix retries.
//!
//! The Postfix instance is private to the test: its own `main.cf` /
//! `master.cf`, queue and data directories under a temporary directory,
//! driven with `postfix -c DIR`, `sendmail -C DIR` and `postqueue -c DIR`.
//! Its `master.cf` has no `inet` service, so it listens on no port and
//! cannot collide with a system Postfix (or another test's instance); its
//! lock and pid files live in its own directories. A Drop guard stops it.
//! Starting a Postfix master needs root (`.ci/run` runs as root;
//! `.ci/deps` installs the postfix package).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;
use crate::support::TestServer;

/// The services a relay-only Postfix needs: no `inet` listener, nothing
/// chrooted (the queue lives in a temporary directory).
const MASTER_CF: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// A running private Postfix instance; stopped when dropped.
struct Postfix {
    /// Its configuration directory (`-c` / `-C`).
    config: PathBuf,
    /// Its log file, shown when an assertion fails.
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Postfix {
    /// Start an instance relaying everything to `relay` (host:port).
    fn start(relay: std::net::SocketAddr) -> Self {
        assert!(
            Path::new("/usr/sbin/postfix").exists(),
            "postfix is missing: run .ci/deps (it installs Debian's postfix package)"
        );
        let uid = run(Command::new("id").arg("-u"));
        assert_eq!(
            uid.trim(),
            "0",
            "starting a Postfix master needs root (as .ci/run runs)"
        );
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Postfix refuses a queue its own user cannot traverse.
        set_mode(root, 0o755);
        let config = root.join("etc");
        let queue = root.join("queue");
        // Not created here: `postfix start` creates it owned by its user.
        let data = root.join("data");
        for d in [&config, &queue] {
            std::fs::create_dir(d).unwrap();
            set_mode(d, 0o755);
        }
        let log = root.join("maillog");
        let main_cf = format!(
            "compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
maillog_file = {log}
maillog_file_prefixes = {root}
syslog_name = postfix-uncorreo-test
myhostname = relay.example
mydomain = relay.example
myorigin = relay.example
mydestination =
local_transport = error:no local delivery in this test instance
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
relayhost = [{ip}]:{port}
smtp_dns_support_level = disabled
smtp_tls_security_level = none
smtp_helo_name = relay.example
# Retries happen only when the test flushes the queue (postqueue -f),
# so a retry can never be mistaken for the first attempt.
queue_run_delay = 3600s
minimal_backoff_time = 3600s
maximal_backoff_time = 3600s
notify_classes =
",
            queue = queue.display(),
            data = data.display(),
            log = log.display(),
            root = root.display(),
            ip = relay.ip(),
            port = relay.port(),
        );
        std::fs::write(config.join("main.cf"), main_cf).unwrap();
        std::fs::write(config.join("master.cf"), MASTER_CF).unwrap();
        let instance = Self {
            config,
            log,
            _dir: dir,
        };
        // Creates the queue's subdirectories with their owners, then starts
        // the master; returns once it runs.
        run(Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&instance.config)
            .arg("start"));
        instance
    }

    /// Submit `message` for `rcpt` the way local programs do.
    fn sendmail(&self, from: &str, rcpt: &str, message: &[u8]) {
        use std::io::Write;
        let mut child = Command::new("/usr/sbin/sendmail")
            .arg("-C")
            .arg(&self.config)
            .args(["-i", "-f", from, "--", rcpt])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(message).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "sendmail: {status}\n{}", self.log_text());
    }

    /// The queue as `postqueue -j` shows it: one JSON object per message.
    fn queue(&self) -> Vec<serde_json::Value> {
        let out = run(Command::new("/usr/sbin/postqueue")
            .arg("-c")
            .arg(&self.config)
            .arg("-j"));
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Ask Postfix to retry everything queued now (sendmail's `-q`).
    fn flush(&self) {
        run(Command::new("/usr/sbin/postqueue")
            .arg("-c")
            .arg(&self.config)
            .arg("-f"));
    }

    /// Poll the queue until `done` holds for it; panics after a generous
    /// deadline with the queue and the log.
    fn wait_for_queue(&self, what: &str, done: impl Fn(&[serde_json::Value]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let queue = self.queue();
            if done(&queue) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Postfix queue never reached: {what}\nqueue: {queue:?}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        // `postfix stop` waits for the master to exit (and kills it after
        // a few seconds), so the temporary directory is free to go.
        let _ = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .output();
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Run a command to success; return its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Long-poll the REST API for the next message of `address` past `since`;
/// returns its summary.
fn wait_for_message(
    server: &TestServer,
    address: &str,
    token: &str,
    since: u64,
    postfix: &Postfix,
) -> serde_json::Value {
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(200))
        .build()
        .unwrap();
    let r: serde_json::Value = client
        .get(server.url(&format!(
            "/api/v1/mailboxes/{address}/wait?since={since}&timeout=120"
        )))
        .bearer_auth(token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        r["timed_out"],
        false,
        "no message arrived: {r}\nqueue: {:?}\n{}",
        postfix.queue(),
        postfix.log_text()
    );
    r["messages"][0].clone()
}

fn message(subject: &str) -> Vec<u8> {
    // LF line ends, as local programs hand mail to sendmail.
    format!(
        "From: App <app@relay.example>\nTo: relay@uncorreo.test\nSubject: {subject}\n\nYour code is 482913.\n.\n..a dotted line\n"
    )
    .into_bytes()
}

#[test]
fn postfix_relays_into_uncorreo_and_retries_after_a_temporary_refusal() {
    let server = TestServer::start();
    const TOKEN: &str = "postfix-relay-test-token";
    // Room for one message: the second meets `452 4.2.2` at RCPT.
    let mailbox =
        crate::support::block_on(crate::realtime::mailbox(&server.engine, "relay", TOKEN, 1));
    let address = mailbox.address.to_string();
    let postfix = Postfix::start(server.smtp);

    // 1. Submitted with sendmail, relayed over SMTP, stored.
    postfix.sendmail("app@relay.example", &address, &message("first"));
    let first = wait_for_message(&server, &address, TOKEN, 0, &postfix);
    assert_eq!(first["subject"], "first", "{first}");
    let raw = server
        .engine
        .read_raw(first["id"].as_str().unwrap().parse().unwrap())
        .unwrap();
    let (received, rest) = split_received(&raw);
    assert!(
        received.starts_with("Received: from relay.example ([127.0.0.1])"),
        "{received}"
    );
    let rest = String::from_utf8(rest).unwrap();
    // Postfix's own trace line is below ours, and the body came through
    // (unstuffed, CRLF) as the program wrote it.
    assert!(rest.contains("by relay.example (Postfix"), "{rest}");
    assert!(
        rest.ends_with("\r\n\r\nYour code is 482913.\r\n.\r\n..a dotted line\r\n"),
        "{rest:?}"
    );
    postfix.wait_for_queue("empty after the first delivery", |q| q.is_empty());

    // 2. The mailbox is full: Postfix is told 452 at RCPT and keeps the mail.
    postfix.sendmail("app@relay.example", &address, &message("second"));
    postfix.wait_for_queue("the second message deferred with 452 4.2.2", |q| {
        q.len() == 1
            && q[0]["queue_name"] == "deferred"
            && q[0]["recipients"][0]["delay_reason"]
                .as_str()
                .is_some_and(|r| r.contains("452 4.2.2"))
    });
    assert_eq!(stored(&server.engine, &mailbox).len(), 1);

    // 3. Free the slot through the API, make Postfix retry: it arrives.
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let status = client
        .delete(server.url(&format!(
            "/api/v1/mailboxes/{address}/messages/{}",
            first["id"].as_str().unwrap()
        )))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 204);
    postfix.flush();
    let second = wait_for_message(
        &server,
        &address,
        TOKEN,
        first["seq"].as_u64().unwrap(),
        &postfix,
    );
    assert_eq!(second["subject"], "second", "{second}");
    postfix.wait_for_queue("empty after the retry", |q| q.is_empty());
    let log = postfix.log_text();
    assert!(
        log.contains("status=deferred") && log.contains("452 4.2.2"),
        "{log}"
    );
    assert!(log.contains("status=sent"), "{log}");
}

/// Storage fails under Postfix: the sync of its message fails, so it is
/// answered `451 4.3.0` (never `250`) and stays in Postfix's queue. The
/// operator restarts uncorreo on the same data directory and port; Postfix
/// retries and the message arrives.
///
/// Never lost and never twice: the failed batch's bytes are still in the
/// page cache, but the writer cut them off the log when the sync failed
/// (engine/FORMAT.md, "fsync failure poisons its shard"), so the copy
/// Postfix's retry stores after the restart is the only one, and its `250`
/// names it.
#[test]
fn postfix_retries_after_451_from_failed_storage_and_a_restart() {
    const TOKEN: &str = "postfix-451-test-token";
    let mut server = TestServer::start();
    let mailbox =
        crate::support::block_on(crate::realtime::mailbox(&server.engine, "relay", TOKEN, 10));
    let address = mailbox.address.to_string();
    let smtp = server.smtp;
    let postfix = Postfix::start(smtp);

    server.engine.fail_next_sync_for_tests();
    postfix.sendmail("app@relay.example", &address, &message("after a restart"));
    postfix.wait_for_queue("the message deferred with 451 4.3.0", |q| {
        q.len() == 1
            && q[0]["queue_name"] == "deferred"
            && q[0]["recipients"][0]["delay_reason"]
                .as_str()
                .is_some_and(|r| r.contains("451 4.3.0"))
    });

    // Restart on the same data directory and the same SMTP address (the
    // relayhost Postfix knows).
    server.stop();
    let data = std::mem::replace(&mut server.data, tempfile::tempdir().unwrap());
    let mut config = crate::support::test_config(data.path());
    config.smtp.listen = smtp.to_string();
    let appliance = uncorreo::Appliance::start(config).expect("restarts on the same port");
    let restarted = TestServer {
        smtp: appliance.smtp_addr,
        http: appliance.http_addr,
        engine: appliance.engine.clone(),
        appliance: Some(appliance),
        data,
    };

    postfix.flush();
    postfix.wait_for_queue("empty after the retry", |q| q.is_empty());
    // The id Postfix was given in the 250 names the retried copy.
    let log = postfix.log_text();
    let id = log
        .lines()
        .find_map(|l| l.split("status=sent (250 2.0.0 Ok: stored as ").nth(1))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no 250 in the Postfix log:\n{log}"));
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let view: serde_json::Value = client
        .get(restarted.url(&format!("/api/v1/mailboxes/{address}/messages/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(view["subject"], "after a restart", "{view}");
    let mailbox = restarted
        .engine
        .mailbox(&uncorreo_engine::Address::parse(&address).unwrap())
        .unwrap();
    // The batch whose sync failed was cut off the log: the retry's copy is
    // the only one, and it is the one the 250 named.
    let copies = stored(&restarted.engine, &mailbox);
    assert_eq!(copies.len(), 1, "{} copies", copies.len());
    let listed = restarted.engine.list_messages(mailbox.id, 0, 10).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        view["seq"].as_u64(),
        Some(listed[0].id.seq),
        "the 250 names the one copy: {view}"
    );
    for raw in &copies {
        let (_, rest) = split_received(raw);
        assert!(
            String::from_utf8_lossy(&rest)
                .ends_with("\r\n\r\nYour code is 482913.\r\n.\r\n..a dotted line\r\n"),
            "{:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

/// A campaign's fault plan "first 2 → 451 4.7.1": Postfix, as a real relaying
/// MTA, is refused twice, keeps the mail, and delivers on its third try;
/// the report counts the two refusals and the one message.
#[test]
fn postfix_retries_through_a_greylisting_fault_plan_and_the_report_counts_the_refusals() {
    use crate::api::{Api, Auth};
    let api = Api::start();
    let key = api.user("pro");
    let auth = Auth::Bearer(key.clone());
    let r = api.call(
        "POST",
        "/api/v1/campaigns",
        &auth,
        Some(serde_json::json!({"name": "greylist"})),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let plan =
        serde_json::json!({"rules": [{"when": "first", "n": 2, "reply": "451 4.7.1 try later"}]});
    let r = api.call(
        "PUT",
        &format!("/api/v1/campaigns/{id}/faults"),
        &auth,
        Some(plan.clone()),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        api.get(&format!("/api/v1/campaigns/{id}/faults"), &auth)
            .json(),
        plan
    );
    let postfix = Postfix::start(api.server.smtp);
    let rcpt = format!("app-user@c-{id}.uncorreo.test");
    postfix.sendmail("app@relay.example", &rcpt, &message("greylisted"));
    let deferred = |q: &[serde_json::Value]| {
        q.len() == 1
            && q[0]["queue_name"] == "deferred"
            && q[0]["recipients"][0]["delay_reason"]
                .as_str()
                .is_some_and(|r| r.contains("451 4.7.1 try later"))
    };
    // The queue says why, the report says how often.
    let refused = || -> u64 {
        let r = api
            .get(&format!("/api/v1/campaigns/{id}/report"), &auth)
            .json();
        r["refused"]["451"].as_u64().unwrap_or(0)
    };
    postfix.wait_for_queue("deferred by the first 451", deferred);
    assert_eq!(refused(), 1);
    postfix.flush();
    wait_until("the second 451 counted", || refused() == 2);
    postfix.wait_for_queue("deferred again", deferred);
    postfix.flush();
    postfix.wait_for_queue("empty after the third try", |q| q.is_empty());
    let report = api
        .get(&format!("/api/v1/campaigns/{id}/report"), &auth)
        .json();
    assert_eq!(report["accepted"], 1, "{report}");
    assert_eq!(report["refused"], serde_json::json!({"451": 2}), "{report}");
    let log = postfix.log_text();
    assert_eq!(log.matches("451 4.7.1 try later").count(), 2, "{log}");
    assert!(
        log.contains("status=sent (250 2.0.0 Ok: stored as"),
        "{log}"
    );
}

/// Poll `done` until it holds; panics after a generous deadline.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
