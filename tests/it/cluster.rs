//! Two appliances and one real `nats-server` on loopback (SCALE.md): hosts
//! claim partition homes and hold their leases across a restart, and mail
//! sent to a host that does not own its mailbox is stored by the owner over
//! the signed internal hop, acked only after the owner's commit. The
//! network-namespace suite runs the same scenario with real addresses.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use uncorreo::config::ClusterConfig;
use uncorreo::{Appliance, StartError};
use uncorreo_cluster::hop::{HopSecret, HEADER};
use uncorreo_cluster::testing::NatsServer;
use uncorreo_ses::fixture as sns;

use crate::support::{code, test_config, Raw};

pub(crate) const PARTITIONS: u16 = 16;
pub(crate) const SECRET: &str = "0123456789abcdef0123456789abcdef-test-cluster-secret";

fn member(nats: &NatsServer, node: &str) -> ClusterConfig {
    ClusterConfig {
        nats_url: nats.url().to_owned(),
        node_id: node.to_owned(),
        partitions: PARTITIONS,
        lease_seconds: 3,
        claim_free: true,
        listen: None,
        advertise: None,
        secret_file: None,
        hop_timeout_secs: 10,
        hop_max_connections: 64,
    }
}

/// A member with an internal hop on loopback port 0, advertising its
/// A file holding the test cluster's shared secret.
pub(crate) fn secret_file() -> tempfile::NamedTempFile {
    let mut secret = tempfile::NamedTempFile::new().expect("secret file");
    writeln!(secret, "{SECRET}").expect("write secret");
    secret
}

/// bound address.
pub(crate) fn hop_member(nats: &NatsServer, node: &str, secret: &std::path::Path) -> ClusterConfig {
    ClusterConfig {
        listen: Some("127.0.0.1:0".to_owned()),
        secret_file: Some(secret.to_path_buf()),
        ..member(nats, node)
    }
}

pub(crate) fn start(
    data: &std::path::Path,
    cluster: ClusterConfig,
) -> Result<Appliance, StartError> {
    start_tweaked(data, cluster, |_| {})
}

/// The cluster tests' configuration: no rate limits in the way, and the
/// real-time streams' periodic read (every `ping_interval_secs`) far off,
/// so a test of events across hosts shows what the notices do, not what
/// the safety net catches later.
pub(crate) fn start_tweaked(
    data: &std::path::Path,
    cluster: ClusterConfig,
    tweak: impl FnOnce(&mut uncorreo::Config),
) -> Result<Appliance, StartError> {
    let mut config = test_config(data);
    config.cluster = Some(cluster);
    crate::realtime::no_rate_limits(&mut config);
    config.realtime.ping_interval_secs = 600;
    tweak(&mut config);
    Appliance::start(config)
}

/// [`start`] with the SES webhook on, trusting the fixture's certificate
/// from `certs`.
fn start_with_sns(
    data: &std::path::Path,
    cluster: ClusterConfig,
    certs: &std::path::Path,
) -> Result<Appliance, StartError> {
    start_tweaked(data, cluster, |config| {
        config.sns.allowed_topic_arns = vec![sns::TOPIC.to_owned()];
        config.sns.trusted_cert_dir = Some(certs.to_path_buf());
    })
}

pub(crate) fn served(appliance: &Appliance) -> usize {
    appliance
        .cluster_served()
        .map_or(0, |served| served.count(Instant::now()))
}

/// Polls `condition` every 50 ms for up to `limit`.
pub(crate) fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}

/// Two hosts with hops: `a` claimed every partition, `b` owns none.
pub(crate) struct Pair {
    nats: NatsServer,
    secret: tempfile::NamedTempFile,
    pub(crate) data_a: tempfile::TempDir,
    data_b: tempfile::TempDir,
    a: Option<Appliance>,
    pub(crate) b: Appliance,
    _certs: tempfile::TempDir,
}

impl Pair {
    pub(crate) fn start() -> Pair {
        let nats = NatsServer::start();
        let secret = secret_file();
        let (data_a, data_b) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let a = start(data_a.path(), hop_member(&nats, "a", secret.path())).expect("a joins");
        assert_eq!(served(&a), usize::from(PARTITIONS));
        let certs = tempfile::tempdir().expect("tempdir");
        let name = sns::CERT_URL.rsplit('/').next().expect("file name");
        std::fs::write(certs.path().join(name), sns::valid_cert()).expect("cert");
        let b = start_with_sns(
            data_b.path(),
            hop_member(&nats, "b", secret.path()),
            certs.path(),
        )
        .expect("b joins");
        assert_eq!(served(&b), 0);
        Pair {
            _certs: certs,
            nats,
            secret,
            data_a,
            data_b,
            a: Some(a),
            b,
        }
    }

    pub(crate) fn a(&self) -> &Appliance {
        self.a.as_ref().expect("a is running")
    }

    pub(crate) fn stop_a(&mut self) {
        if let Some(a) = self.a.take() {
            a.shutdown();
        }
    }

    pub(crate) fn restart_a(&mut self) {
        self.stop_a();
        let a = start(
            self.data_a.path(),
            hop_member(&self.nats, "a", self.secret.path()),
        )
        .expect("a rejoins");
        // Until its old leases lapse in NATS, a serves nothing (and says
        // 451/503 for its own mailboxes too).
        assert!(
            eventually(Duration::from_secs(30), || served(&a)
                == usize::from(PARTITIONS)),
            "a serves {} of {PARTITIONS}",
            served(&a)
        );
        self.a = Some(a);
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.stop_a();
        let _ = &self.data_b;
    }
}

pub(crate) fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// An anonymous mailbox created through `host`'s API: (address, token).
pub(crate) fn mailbox_on(host: &Appliance) -> (String, String) {
    let answer = http()
        .post(format!("http://{}/api/v1/mailboxes", host.http_addr))
        .send()
        .expect("create");
    assert_eq!(answer.status(), 201);
    let body: Value = answer.json().expect("json");
    (
        body["address"].as_str().expect("address").to_owned(),
        body["session_token"].as_str().expect("token").to_owned(),
    )
}

/// The ids of the messages `host` lists in `address` (its own API).
fn listed(host: &Appliance, address: &str, token: &str) -> Vec<String> {
    let answer = http()
        .get(format!(
            "http://{}/api/v1/mailboxes/{address}/messages",
            host.http_addr
        ))
        .bearer_auth(token)
        .send()
        .expect("list");
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().expect("json");
    body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

/// One SMTP transaction at `smtp`: the RCPT reply, and the end-of-data
/// reply when RCPT was taken.
pub(crate) fn send(smtp: SocketAddr, rcpt: &str, body: &str) -> (String, Option<String>) {
    let (mut c, greeting) = Raw::connect(smtp);
    assert_eq!(code(&greeting), "220");
    assert_eq!(code(&c.cmd("EHLO client.test")), "250");
    assert_eq!(code(&c.cmd("MAIL FROM:<sender@client.test>")), "250");
    let rcpt_reply = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    if code(&rcpt_reply) != "250" {
        c.cmd("QUIT");
        return (rcpt_reply, None);
    }
    assert_eq!(code(&c.cmd("DATA")), "354");
    c.send(format!("Subject: hop\r\n\r\n{body}\r\n.\r\n").as_bytes());
    let end = c.reply();
    c.cmd("QUIT");
    (rcpt_reply, Some(end))
}

/// The ids a `250 2.0.0 Ok: stored as <id>,…` names.
pub(crate) fn stored_ids(reply: &str) -> Vec<String> {
    reply
        .split_once("stored as ")
        .map(|(_, ids)| ids.split(',').map(|id| id.trim().to_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn the_first_host_claims_the_free_partitions_and_keeps_them_across_a_restart() {
    let nats = NatsServer::start();
    let (data_a, data_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let a = start(data_a.path(), member(&nats, "a")).expect("a joins");
    assert_eq!(
        served(&a),
        usize::from(PARTITIONS),
        "a claimed and leased every free partition"
    );
    let b = start(data_b.path(), member(&nats, "b")).expect("b joins");
    assert_eq!(served(&b), 0, "nothing was left for b to claim");

    a.shutdown();
    // Homes are sticky: a's partitions stay a's while it is down, so b
    // never serves mail whose log is on a's disk.
    let homes = homes_of(&nats);
    assert!(
        homes.iter().all(|home| home.as_deref() == Some("a")),
        "{homes:?}"
    );
    assert_eq!(served(&b), 0);

    // a comes back (same node id) and, once its old leases lapse in NATS,
    // serves every partition again.
    let a = start(data_a.path(), member(&nats, "a")).expect("a rejoins");
    assert!(
        eventually(Duration::from_secs(30), || served(&a)
            == usize::from(PARTITIONS)),
        "a serves {} of {PARTITIONS}",
        served(&a)
    );
    assert_eq!(served(&b), 0);
    a.shutdown();
    b.shutdown();
}

#[test]
fn a_host_that_cannot_reach_nats_does_not_start_and_says_why() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let data = tempfile::tempdir().expect("tempdir");
    let config = ClusterConfig {
        nats_url: format!("nats://127.0.0.1:{port}"),
        node_id: "a".to_owned(),
        partitions: PARTITIONS,
        lease_seconds: 3,
        claim_free: true,
        listen: None,
        advertise: None,
        secret_file: None,
        hop_timeout_secs: 10,
        hop_max_connections: 64,
    };
    match start(data.path(), config) {
        Err(error @ StartError::Cluster(_)) => {
            let message = error.to_string();
            assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("started without NATS"),
    }
}

/// A raw HTTP/1.1 request to the hop; returns the status code.
pub(crate) fn hop_request(
    addr: SocketAddr,
    path: &str,
    signature: Option<&str>,
    body: &[u8],
) -> u16 {
    let text = hop_exchange(addr, path, signature, body);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

/// A raw HTTP/1.1 request to the hop; the whole answer, as text.
pub(crate) fn hop_exchange(
    addr: SocketAddr,
    path: &str,
    signature: Option<&str>,
    body: &[u8],
) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: hop\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(signature) = signature {
        head.push_str(&format!("{HEADER}: {signature}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(body).expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(stream: &mut TcpStream) -> u16 {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[test]
fn the_hop_refuses_missing_stale_and_wrong_signatures() {
    let pair = Pair::start();
    let hop = pair.a().hop_addr().expect("a has a hop");
    let path = "/internal/v1/resolve";
    let body = br#"{"rcpt":"nobody@uncorreo.test","node":"a"}"#;
    let right = HopSecret::new(SECRET.as_bytes().to_vec()).expect("secret");
    let wrong = HopSecret::new(vec![7; 32]).expect("secret");
    assert_eq!(hop_request(hop, path, None, body), 401, "unsigned");
    let signed = wrong.sign("POST", path, now(), body);
    assert_eq!(
        hop_request(hop, path, Some(&signed), body),
        401,
        "wrong secret"
    );
    let stale = right.sign("POST", path, now() - 31, body);
    assert_eq!(hop_request(hop, path, Some(&stale), body), 401, "stale");
    let other_body = right.sign("POST", path, now(), b"{}");
    assert_eq!(
        hop_request(hop, path, Some(&other_body), body),
        401,
        "other body"
    );
    let good = right.sign("POST", path, now(), body);
    assert_eq!(hop_request(hop, path, Some(&good), body), 200, "signed");
}

#[test]
fn the_hop_bounds_body_size_and_connections() {
    let nats = NatsServer::start();
    let secret = secret_file();
    let data = tempfile::tempdir().expect("tempdir");
    let a = start(
        data.path(),
        ClusterConfig {
            hop_max_connections: 2,
            ..hop_member(&nats, "a", secret.path())
        },
    )
    .expect("a joins");
    let hop = a.hop_addr().expect("a has a hop");

    // The body cap is the largest request that travels (a Mailpit send's
    // JSON) plus the envelope's room: a declared length past it is refused
    // before a byte is read.
    let largest =
        uncorreo_api::mailpit::send::max_request_bytes(a.engine.config().max_message_bytes);
    let over = largest + (1 << 20) + 1;
    let mut stream = TcpStream::connect(hop).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "POST /internal/v1/deliver HTTP/1.1\r\nhost: hop\r\ncontent-length: {over}\r\nconnection: close\r\n\r\n"
    )
    .expect("write");
    assert_eq!(status_of(&mut stream), 413);

    // Two open connections fill the cap: the third is told 503 and closed.
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(hop).expect("connect"))
        .collect();
    let turned_away = eventually(Duration::from_secs(10), || {
        let mut third = TcpStream::connect(hop).expect("connect");
        third
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut answer = Vec::new();
        let _ = third.read_to_end(&mut answer);
        answer.starts_with(b"HTTP/1.1 503")
    });
    assert!(turned_away, "the third connection was not refused");
    drop(held);
    // Room again once they close.
    let body = br#"{"rcpt":"nobody@uncorreo.test","node":"a"}"#;
    let right = HopSecret::new(SECRET.as_bytes().to_vec()).expect("secret");
    assert!(eventually(Duration::from_secs(10), || {
        let signed = right.sign("POST", "/internal/v1/resolve", now(), body);
        hop_request(hop, "/internal/v1/resolve", Some(&signed), body) == 200
    }));
    a.shutdown();
}

/// One answer read off a kept-alive connection: its status, and whether
/// the server said it closes.
fn read_answer(stream: &mut TcpStream) -> Option<(u16, bool)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let length: usize = text
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some((status, text.contains("connection: close")))
}

/// A signed resolve on an open connection, kept alive.
fn resolve_on(stream: &mut TcpStream) -> Option<(u16, bool)> {
    let path = "/internal/v1/resolve";
    let body = br#"{"rcpt":"nobody@uncorreo.test","node":"a"}"#;
    let signature = HopSecret::new(SECRET.as_bytes().to_vec())
        .expect("secret")
        .sign("POST", path, now(), body);
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: hop\r\ncontent-length: {}\r\n{HEADER}: {signature}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    read_answer(stream)
}

/// The hop keeps connections alive (the accepting host's pool relies on
/// it): several requests per connection, each connection counted once
/// against the cap, and an idle one closed by the head timeout.
#[test]
fn the_hop_serves_several_requests_per_connection_within_its_bounds() {
    let nats = NatsServer::start();
    let secret = secret_file();
    let data = tempfile::tempdir().expect("tempdir");
    let a = start(
        data.path(),
        ClusterConfig {
            hop_max_connections: 2,
            ..hop_member(&nats, "a", secret.path())
        },
    )
    .expect("a joins");
    let hop = a.hop_addr().expect("a has a hop");
    let open = || {
        let stream = TcpStream::connect(hop).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        stream
    };
    let mut first = open();
    let mut second = open();
    for _ in 0..3 {
        assert_eq!(resolve_on(&mut first), Some((200, false)));
        assert_eq!(resolve_on(&mut second), Some((200, false)));
    }
    // The two kept-alive connections fill the cap: a third is refused.
    let mut third = open();
    let mut answer = Vec::new();
    let _ = third.read_to_end(&mut answer);
    assert!(answer.starts_with(b"HTTP/1.1 503"), "{answer:?}");
    // Left idle, a connection is closed by the head timeout (the server's
    // idle limit, longer than the client pool's).
    let started = Instant::now();
    let mut rest = Vec::new();
    let closed = first.read_to_end(&mut rest);
    assert!(closed.is_ok() && rest.is_empty(), "{closed:?} {rest:?}");
    assert!(
        started.elapsed() >= uncorreo_hop::client::IDLE_TIMEOUT,
        "the server closed an idle connection before the client pool stops reusing it"
    );
    a.shutdown();
}

#[test]
fn smtp_at_b_is_stored_by_the_owner_a_and_acked_after_its_commit() {
    let pair = Pair::start();
    let (address, token) = mailbox_on(pair.a());
    // The owner decides the recipient's fate: an unknown mailbox is 550.
    let (unknown, _) = send(pair.b.smtp_addr, "nobody-here@uncorreo.test", "x");
    assert!(unknown.starts_with("550 5.1.1"), "{unknown}");

    let (rcpt, end) = send(pair.b.smtp_addr, &address, "across hosts");
    assert_eq!(code(&rcpt), "250", "{rcpt}");
    let end = end.expect("data sent");
    assert!(end.starts_with("250 2.0.0 Ok: stored as "), "{end}");
    // By the time b said 250 the message was on a (no waiting).
    assert_eq!(listed(pair.a(), &address, &token), stored_ids(&end));
    // And only on a: b's own storage never saw it.
    assert_eq!(pair.b.engine.stats().messages, 0);
}

#[test]
fn owner_down_gives_4xx_and_loses_nothing() {
    let mut pair = Pair::start();
    let (address, token) = mailbox_on(pair.a());
    let (_, end) = send(pair.b.smtp_addr, &address, "before the stop");
    let acked = stored_ids(&end.expect("data sent"));
    assert_eq!(acked.len(), 1);

    pair.stop_a();
    // While b still sees a's lapsing lease (a does not answer), and once
    // the lease is gone (nobody owns the partition): 451 at RCPT.
    let (rcpt, end) = send(pair.b.smtp_addr, &address, "while a is down");
    assert!(rcpt.starts_with("451 4.3.0"), "{rcpt}");
    assert!(end.is_none());
    assert!(
        eventually(Duration::from_secs(30), || lease_holder(
            &pair.nats, &address
        )
        .is_none()),
        "a's lease never lapsed"
    );
    // Past b's cache of owners.
    std::thread::sleep(uncorreo_cluster::directory::CACHE_FOR);
    for _ in 0..2 {
        let (rcpt, end) = send(pair.b.smtp_addr, &address, "while a is down");
        assert!(rcpt.starts_with("451 4.3.0"), "{rcpt}");
        assert!(end.is_none());
    }
    // Reads through b: 503 with Retry-After, never an empty mailbox.
    let read = http()
        .get(format!(
            "http://{}/api/v1/mailboxes/{address}/messages",
            pair.b.http_addr
        ))
        .bearer_auth(&token)
        .send()
        .expect("list");
    assert_eq!(read.status(), 503);
    assert_eq!(
        read.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    pair.restart_a();
    assert_eq!(listed(pair.a(), &address, &token), acked);
}

#[test]
fn owner_returns_with_every_acked_message() {
    let mut pair = Pair::start();
    let (address, token) = mailbox_on(pair.a());
    let mut acked = Vec::new();
    for n in 0..3 {
        let (_, end) = send(pair.b.smtp_addr, &address, &format!("message {n}"));
        acked.extend(stored_ids(&end.expect("data sent")));
    }
    pair.restart_a();
    // Once a holds its leases again (after its old ones lapse), b forwards
    // to it at its new address.
    let mut later = None;
    assert!(
        eventually(Duration::from_secs(30), || {
            let (rcpt, end) = send(pair.b.smtp_addr, &address, "after the restart");
            later = end;
            code(&rcpt) == "250"
        }),
        "b never forwarded to the restarted a"
    );
    acked.extend(stored_ids(&later.expect("data sent")));
    assert_eq!(acked.len(), 4);
    assert_eq!(listed(pair.a(), &address, &token), acked);
    assert_eq!(
        listed(&pair.b, &address, &token),
        acked,
        "readable through b"
    );
}

#[test]
fn lost_answer_retry_stores_once() {
    let pair = Pair::start();
    let (address, token) = mailbox_on(pair.a());
    pair.a()
        .hop_server()
        .expect("a has a hop")
        .fail_next_answer_for_tests();
    // a stores the message, then its answer is lost: b must not say 250.
    let (_, end) = send(pair.b.smtp_addr, &address, "said twice");
    let end = end.expect("data sent");
    assert!(end.starts_with("451 4.3.0"), "{end}");
    let first = listed(pair.a(), &address, &token);
    assert_eq!(first.len(), 1, "a stored the first try");
    // The sender retries the same message: the same id comes back, and a
    // holds one copy.
    let (_, end) = send(pair.b.smtp_addr, &address, "said twice");
    let end = end.expect("data sent");
    assert!(end.starts_with("250"), "{end}");
    assert_eq!(stored_ids(&end), first);
    assert_eq!(listed(pair.a(), &address, &token), first);
}

#[test]
fn a_mailbox_is_created_read_sent_to_and_deleted_through_b_while_a_owns_it() {
    let pair = Pair::start();
    // Created through b, in a partition a owns: a has it.
    let (address, token) = mailbox_on(&pair.b);
    let on_a = http()
        .get(format!(
            "http://{}/api/v1/mailboxes/{address}",
            pair.a().http_addr
        ))
        .bearer_auth(&token)
        .send()
        .expect("get");
    assert_eq!(on_a.status(), 200);

    let (_, end) = send(pair.b.smtp_addr, &address, "read me through b");
    let first = stored_ids(&end.expect("data sent"));
    assert_eq!(listed(&pair.b, &address, &token), first);
    let base = format!("http://{}/api/v1/mailboxes/{address}", pair.b.http_addr);
    let message = http()
        .get(format!("{base}/messages/{}", first[0]))
        .bearer_auth(&token)
        .send()
        .expect("get message");
    assert_eq!(message.status(), 200);
    assert!(message.text().expect("text").contains("read me through b"));

    // HTTP send through b: 201 once a stored it.
    let sent = http()
        .post(format!("{base}/messages"))
        .bearer_auth(&token)
        .header("content-type", "message/rfc822")
        .body("Subject: over http\r\n\r\nsent through b\r\n")
        .send()
        .expect("send");
    assert_eq!(sent.status(), 201);
    let both = listed(pair.a(), &address, &token);
    assert_eq!(both.len(), 2);

    // The owner checks the credential: a wrong token is 401 through b too.
    let wrong = http()
        .get(format!("{base}/messages"))
        .bearer_auth("not-a-token")
        .send()
        .expect("list");
    assert_eq!(wrong.status(), 401);

    let deleted = http()
        .delete(format!("{base}/messages/{}", first[0]))
        .bearer_auth(&token)
        .send()
        .expect("delete");
    assert_eq!(deleted.status(), 204);
    assert_eq!(listed(pair.a(), &address, &token), both[1..].to_vec());
    assert_eq!(pair.b.engine.stats().mailboxes, 0, "b stored nothing");
}

/// POSTs an SNS notification to `http`'s SES webhook: the status.
fn post_ses(http: SocketAddr, body: &str) -> u16 {
    let answer = self::http()
        .post(format!("http://{http}/api/v1/ses/inbound"))
        .header("content-type", "text/plain; charset=UTF-8")
        .header("x-amz-sns-message-type", "Notification")
        .body(body.to_owned())
        .send()
        .expect("post");
    answer.status().as_u16()
}

fn ses_notification(id: &str, to: &str) -> String {
    // Each notification its own message (a real one has its own
    // Message-ID): the same bytes again within the retry window are taken
    // for a retry (SCALE.md, "Delivery").
    let email = format!(
        "From: <noreply@shop.example>\r\nTo: {to}\r\nMessage-ID: <{id}@shop.example>\r\nSubject: ses\r\n\r\nvia SES\r\n"
    );
    let message = sns::ses_received(&[to], "noreply@shop.example", email.as_bytes(), true);
    let mut n = sns::notification(id, message, sns::now_ms());
    sns::sign(&mut n, "2");
    sns::to_json(&n)
}

#[test]
fn the_ses_webhook_at_b_stores_on_the_owner_once_and_answers_503_while_it_is_down() {
    let mut pair = Pair::start();
    let (address, token) = mailbox_on(&pair.b);
    let id = "0b1c2d3e-0000-4000-8000-000000000001";
    let notification = ses_notification(id, &address);
    assert_eq!(post_ses(pair.b.http_addr, &notification), 200);
    let stored = listed(pair.a(), &address, &token);
    assert_eq!(stored.len(), 1, "200 only once a stored it");
    // SNS delivers again: one copy still.
    assert_eq!(post_ses(pair.b.http_addr, &notification), 200);
    assert_eq!(listed(pair.a(), &address, &token), stored);

    pair.stop_a();
    let later = ses_notification("0b1c2d3e-0000-4000-8000-000000000002", &address);
    // 503: SNS retries (it retries any 5xx; the webhook's answers carry no
    // Retry-After).
    assert_eq!(post_ses(pair.b.http_addr, &later), 503);
    pair.restart_a();
    // SNS's retry goes through once a is back.
    assert_eq!(post_ses(pair.b.http_addr, &later), 200);
    assert_eq!(listed(pair.a(), &address, &token).len(), 2);
}

/// Who holds the lease of `address`'s partition, read straight from NATS.
fn lease_holder(nats: &NatsServer, address: &str) -> Option<String> {
    use uncorreo_cluster::lease::{lease_key, LeaseValue};
    use uncorreo_cluster::nats::NatsBucket;
    use uncorreo_cluster::partition::{partition_of, PartitionCount};
    use uncorreo_cluster::store::CasBucket;
    let count = PartitionCount::new(PARTITIONS).expect("count");
    let key = lease_key(partition_of(address, count));
    crate::support::block_on(async {
        let bucket = NatsBucket::open(
            nats.url(),
            "uncorreo_leases",
            Some(Duration::from_secs(3)),
            Duration::from_secs(2),
        )
        .await
        .expect("bucket");
        bucket
            .get(&key)
            .await
            .expect("get")
            .and_then(|v| serde_json::from_slice::<LeaseValue>(&v.value).ok())
            .map(|v| v.node)
    })
}

/// The home of each partition, read straight from the bucket.
pub(crate) fn homes_of(nats: &NatsServer) -> Vec<Option<String>> {
    use uncorreo_cluster::assign::Assignments;
    use uncorreo_cluster::nats::NatsBucket;
    use uncorreo_cluster::partition::Partition;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let bucket = NatsBucket::open(nats.url(), "uncorreo_homes", None, Duration::from_secs(2))
            .await
            .expect("bucket");
        let homes = Assignments::new(bucket);
        let mut found = Vec::new();
        for index in 0..PARTITIONS {
            found.push(
                homes
                    .home(Partition(index))
                    .await
                    .expect("home")
                    .map(|(home, _)| home.node),
            );
        }
        found
    })
}

// Events across hosts (SCALE.md, "Real time"): a WebSocket, SSE or wait on
// b for a mailbox a owns subscribes to a's notices on NATS, then reads
// from a over the hop.

use crate::realtime::{next, Got, Sse};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A WebSocket on `host` for `address` from `since`, the token in a header.
async fn ws_on(host: &Appliance, address: &str, token: &str, since: u64) -> crate::realtime::Ws {
    let url = format!("ws://{}/ws/inbox/{address}?since={since}", host.http_addr);
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (ws, answer) = tokio::time::timeout(
        crate::realtime::HANG,
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("the handshake hung")
    .expect("connects");
    assert_eq!(answer.status().as_u16(), 101);
    ws
}

/// The next event: (seq, subject).
async fn next_event(ws: &mut crate::realtime::Ws) -> (u64, String) {
    match next(ws).await {
        Got::Event(event) => (
            event["seq"].as_u64().expect("seq"),
            event["subject"].as_str().unwrap_or_default().to_owned(),
        ),
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Sends one message with `subject` at `smtp`; panics unless it is stored.
fn mail(smtp: SocketAddr, rcpt: &str, subject: &str) {
    let (mut c, greeting) = Raw::connect(smtp);
    assert_eq!(code(&greeting), "220");
    assert_eq!(code(&c.cmd("EHLO client.test")), "250");
    assert_eq!(code(&c.cmd("MAIL FROM:<sender@client.test>")), "250");
    assert_eq!(code(&c.cmd(&format!("RCPT TO:<{rcpt}>"))), "250");
    assert_eq!(code(&c.cmd("DATA")), "354");
    c.send(format!("Subject: {subject}\r\n\r\nbody of {subject}\r\n.\r\n").as_bytes());
    let end = c.reply();
    assert!(end.starts_with("250"), "{end}");
    c.cmd("QUIT");
}

#[test]
fn a_websocket_on_b_receives_mail_for_a_mailbox_a_owns_and_resumes_without_loss() {
    let pair = Pair::start();
    let (address, token) = mailbox_on(&pair.b);
    crate::realtime::rt().block_on(async {
        let mut ws = ws_on(&pair.b, &address, &token, 0).await;
        mail(pair.a().smtp_addr, &address, "sent at a");
        assert_eq!(next_event(&mut ws).await, (1, "sent at a".to_owned()));
        mail(pair.b.smtp_addr, &address, "sent at b");
        assert_eq!(next_event(&mut ws).await, (2, "sent at b".to_owned()));
        drop(ws);

        // Resume from a sequence on b: the replay from a, then live, each once.
        mail(pair.b.smtp_addr, &address, "while nobody watched");
        let mut ws = ws_on(&pair.b, &address, &token, 1).await;
        assert_eq!(next_event(&mut ws).await.0, 2);
        assert_eq!(next_event(&mut ws).await.0, 3);
        mail(pair.a().smtp_addr, &address, "live again");
        assert_eq!(next_event(&mut ws).await, (4, "live again".to_owned()));
    });
    // Every event came from a: b stored nothing, and held one
    // subscription, now gone with its last waiter.
    assert_eq!(pair.b.engine.stats().messages, 0);
    let events = pair.b.cluster_events().expect("b has events");
    assert!(eventually(Duration::from_secs(10), || events
        .subscriptions()
        == 0));
}

#[test]
fn waiters_on_b_are_checked_by_the_owner_and_share_one_subscription() {
    let pair = Pair::start();
    let (address, token) = mailbox_on(&pair.b);
    let (other, other_token) = mailbox_on(&pair.b);
    let url = |address: &str, token: &str| {
        format!("ws://{}/ws/inbox/{address}?token={token}", pair.b.http_addr)
    };
    crate::realtime::rt().block_on(async {
        // The owner's answers: a wrong token is 401, a stranger's mailbox 404.
        let (status, _) = crate::realtime::ws_refused(&url(&address, "not-a-token")).await;
        assert_eq!(status, 401);
        let (status, _) = crate::realtime::ws_refused(&url(&address, &other_token)).await;
        assert_eq!(status, 404);

        let mut first = ws_on(&pair.b, &address, &token, 0).await;
        let (mut second, _) = tokio_tungstenite::connect_async(url(&address, &token))
            .await
            .expect("connects with ?token=");
        let mut third = ws_on(&pair.b, &other, &other_token, 0).await;
        mail(pair.a().smtp_addr, &address, "to both");
        mail(pair.a().smtp_addr, &other, "to the other");
        assert_eq!(next_event(&mut first).await.0, 1);
        assert_eq!(next_event(&mut second).await.0, 1);
        assert_eq!(next_event(&mut third).await.0, 1);
        let events = pair.b.cluster_events().expect("b has events");
        let partitions = [&address, &other]
            .iter()
            .map(|a| {
                uncorreo_cluster::partition::partition_of(
                    a,
                    uncorreo_cluster::partition::PartitionCount::new(PARTITIONS).expect("count"),
                )
            })
            .collect::<std::collections::BTreeSet<_>>();
        assert_eq!(events.subscriptions(), partitions.len());
    });
}

#[test]
fn remote_waiters_per_mailbox_are_bounded_on_b() {
    let nats = NatsServer::start();
    let secret = secret_file();
    let (data_a, data_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let a = start(data_a.path(), hop_member(&nats, "a", secret.path())).expect("a joins");
    let b = start_tweaked(data_b.path(), hop_member(&nats, "b", secret.path()), |c| {
        c.realtime.max_subscribers_per_mailbox = 1;
    })
    .expect("b joins");
    let (address, token) = mailbox_on(&b);
    crate::realtime::rt().block_on(async {
        let held = ws_on(&b, &address, &token, 0).await;
        let url = format!("ws://{}/ws/inbox/{address}?token={token}", b.http_addr);
        let (status, body) = crate::realtime::ws_refused(&url).await;
        assert_eq!(status, 429, "{body}");
        drop(held);
        // Its place is free once it is gone.
        let mut freed = false;
        for _ in 0..100 {
            if tokio_tungstenite::connect_async(&url).await.is_ok() {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(freed, "the closed waiter's place was never freed");
    });
    b.shutdown();
    a.shutdown();
}

#[test]
fn a_waiter_on_b_misses_nothing_committed_while_it_subscribes() {
    let pair = Pair::start();
    let (address, token) = mailbox_on(&pair.b);
    // Between b's subscription and its first read from a, a commits a
    // message: the read or the notice must bring it.
    let smtp_a = pair.a().smtp_addr;
    let rcpt = address.clone();
    let events = pair.b.cluster_events().expect("b has events");
    events.set_between_hook_for_tests(Some(std::sync::Arc::new(move || {
        mail(smtp_a, &rcpt, "in the window")
    })));
    crate::realtime::rt().block_on(async {
        let mut ws = ws_on(&pair.b, &address, &token, 0).await;
        events.set_between_hook_for_tests(None);
        assert_eq!(next_event(&mut ws).await, (1, "in the window".to_owned()));
    });
}

#[test]
fn gap_in_events_is_filled_from_owner() {
    let pair = Pair::start();
    let (address, token) = mailbox_on(&pair.b);
    crate::realtime::rt().block_on(async {
        let mut ws = ws_on(&pair.b, &address, &token, 0).await;
        mail(pair.a().smtp_addr, &address, "one");
        assert_eq!(next_event(&mut ws).await.0, 1);
        // NATS core may lose a notice: a drops the next one.
        pair.a()
            .cluster_events()
            .expect("a has events")
            .drop_next_notice_for_tests();
        mail(pair.a().smtp_addr, &address, "two");
        mail(pair.a().smtp_addr, &address, "three");
        // Three's notice shows b the gap; b reads it from a, in order.
        assert_eq!(next_event(&mut ws).await, (2, "two".to_owned()));
        assert_eq!(next_event(&mut ws).await, (3, "three".to_owned()));
    });
    let metrics = http()
        .get(format!("http://{}/metrics", pair.a().http_addr))
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("uncorreo_cluster_events_dropped_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(dropped.is_some_and(|n| n >= 1.0), "{dropped:?}");
}

#[test]
fn sse_and_wait_on_b_follow_a_mailbox_a_owns() {
    let pair = Pair::start();
    let (address, token) = mailbox_on(&pair.b);
    let base = format!("http://{}/api/v1/mailboxes/{address}", pair.b.http_addr);
    crate::realtime::rt().block_on(async {
        let mut sse = Sse::open(&format!("{base}/events"), &token, None)
            .await
            .expect("the stream opens");
        mail(pair.a().smtp_addr, &address, "over sse");
        assert_eq!(sse.next_seq().await, 1);
        // Resumed with Last-Event-ID on b.
        mail(pair.b.smtp_addr, &address, "after the id");
        let mut resumed = Sse::open(&format!("{base}/events"), &token, Some(1))
            .await
            .expect("the stream opens");
        assert_eq!(resumed.next_seq().await, 2);
        let (status, _) = Sse::open(&format!("{base}/events"), "not-a-token", None)
            .await
            .err()
            .expect("refused");
        assert_eq!(status, 401);
    });

    // A wait on b started before the mail: answered once a stored it.
    let waiting = {
        let url = format!("{base}/wait?since=2&timeout=60&subject=awaited");
        let token = token.clone();
        std::thread::spawn(move || {
            let answer = http().get(url).bearer_auth(token).send().expect("wait");
            assert_eq!(answer.status(), 200);
            answer.json::<Value>().expect("json")
        })
    };
    mail(pair.a().smtp_addr, &address, "not this one");
    mail(pair.b.smtp_addr, &address, "the awaited one");
    let answer = waiting.join().expect("the wait answered");
    assert_eq!(answer["timed_out"], false, "{answer}");
    assert_eq!(answer["messages"][0]["seq"], 4, "{answer}");
    assert_eq!(answer["next_since"], 4, "{answer}");

    // Nothing past it: timed out, at once with timeout=0; the owner's
    // own refusals come back as they are.
    let none = http()
        .get(format!("{base}/wait?since=4&timeout=0"))
        .bearer_auth(&token)
        .send()
        .expect("wait");
    assert_eq!(none.status(), 200);
    assert_eq!(none.json::<Value>().expect("json")["timed_out"], true);
    let wrong = http()
        .get(format!("{base}/wait?timeout=0"))
        .bearer_auth("not-a-token")
        .send()
        .expect("wait");
    assert_eq!(wrong.status(), 401);
}

#[test]
fn owner_down_ends_waiters_on_b_and_new_ones_work_when_it_returns() {
    let mut pair = Pair::start();
    let (address, token) = mailbox_on(&pair.b);
    let runtime = crate::realtime::rt();
    let base = format!("http://{}/api/v1/mailboxes/{address}", pair.b.http_addr);
    let (mut ws, mut sse) = runtime.block_on(async {
        let mut ws = ws_on(&pair.b, &address, &token, 0).await;
        let sse = Sse::open(&format!("{base}/events"), &token, None)
            .await
            .expect("the stream opens");
        mail(pair.b.smtp_addr, &address, "before the stop");
        assert_eq!(next_event(&mut ws).await.0, 1);
        (ws, sse)
    });
    assert_eq!(runtime.block_on(sse.next_seq()), 1);
    let waiting = {
        let url = format!("{base}/wait?since=1&timeout=120");
        let token = token.clone();
        std::thread::spawn(move || {
            let answer = http().get(url).bearer_auth(token).send().expect("wait");
            answer.status().as_u16()
        })
    };
    pair.stop_a();
    // Not a hang: once a no longer holds the partition, b ends each of
    // them with where to resume.
    let closed = runtime.block_on(next(&mut ws));
    match closed {
        Got::Close(code, reason) => {
            assert_eq!(code, 1013, "{reason}");
            assert!(reason.contains("since=1"), "{reason}");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    let last = runtime.block_on(sse.next()).expect("a last event");
    assert_eq!(last.event, "unavailable", "{last:?}");
    assert!(last.data.contains(r#""resume_since":1"#), "{last:?}");
    assert_eq!(waiting.join().expect("the wait answered"), 503);
    // While a is down, a new waiter is told to come back later.
    let url = format!("ws://{}/ws/inbox/{address}?token={token}", pair.b.http_addr);
    let (status, _) = runtime.block_on(crate::realtime::ws_refused(&url));
    assert_eq!(status, 503);

    pair.restart_a();
    runtime.block_on(async {
        let mut ws = None;
        for _ in 0..200 {
            if let Ok((socket, _)) =
                tokio_tungstenite::connect_async(format!("{url}&since=1")).await
            {
                ws = Some(socket);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut ws = ws.expect("a waiter on b works again");
        mail(pair.b.smtp_addr, &address, "after the return");
        assert_eq!(
            next_event(&mut ws).await,
            (2, "after the return".to_owned())
        );
    });
}

#[test]
fn a_mailbox_deleted_through_b_ends_its_waiters_on_b() {
    let pair = Pair::start();
    let (address, token) = mailbox_on(&pair.b);
    let base = format!("http://{}/api/v1/mailboxes/{address}", pair.b.http_addr);
    let waiting = {
        let url = format!("{base}/wait?timeout=120");
        let token = token.clone();
        std::thread::spawn(move || {
            let answer = http().get(url).bearer_auth(token).send().expect("wait");
            answer.status().as_u16()
        })
    };
    let events = pair.b.cluster_events().expect("b has events");
    crate::realtime::rt().block_on(async {
        let mut ws = ws_on(&pair.b, &address, &token, 0).await;
        // Both wait on b before the delete.
        assert!(eventually(Duration::from_secs(30), || events.waiters() == 2));
        // (The blocking client on a thread of its own, outside this runtime.)
        let deleted = {
            let (base, token) = (base.clone(), token.clone());
            std::thread::spawn(move || {
                let answer = http()
                    .delete(base)
                    .bearer_auth(token)
                    .send()
                    .expect("delete");
                answer.status().as_u16()
            })
            .join()
            .expect("deleted")
        };
        assert_eq!(deleted, 204);
        // a announces the end: the stream on b ends as on a, at once.
        match next(&mut ws).await {
            Got::Close(code, reason) => assert_eq!(code, 4004, "{reason}"),
            other => panic!("expected a close, got {other:?}"),
        }
    });
    assert_eq!(waiting.join().expect("the wait answered"), 404);
}

/// Every MCP tool through B for mailboxes A owns (A owns every partition):
/// the official MCP Python SDK's agent flow (`tests/mcp/flow.py`) against
/// B's `/mcp` and B's SMTP. The mailbox is created on A through B's cluster
/// routing, the wait on B is subscribed to A's notices before its progress
/// notification tells the script to send the mail, and list, read (text,
/// html, raw), wait_for_code, a foreign mailbox's not-found answer and
/// delete (then RCPT at B gets A's `550`) all run on A.
#[test]
fn mcp_on_b_runs_every_tool_for_a_mailbox_a_owns() {
    let pair = Pair::start();
    let url = format!("http://{}", pair.b.http_addr);
    let out = crate::mcp::run_script_at(&url, pair.b.smtp_addr, "flow.py", "http", &[]);
    assert!(out.contains("ok: http flow"), "{out}");
    assert_eq!(pair.b.engine.stats().mailboxes, 0, "b stored nothing");
}

/// An MCP session on B while A, which owns its mailbox, stops and returns
/// (`tests/mcp/owner_down.py`, the official Python SDK): the tool answers
/// `unavailable` with a retry delay, never an empty page or not-found, and
/// the same session works again once A is back.
#[test]
fn mcp_on_b_says_unavailable_while_the_owner_is_down_and_works_when_it_returns() {
    use std::io::BufRead;
    let mut pair = Pair::start();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp");
    let mut script = std::process::Command::new(crate::mcp::python())
        .arg(dir.join("owner_down.py"))
        .args(["--transport", "http"])
        .args(["--url", &format!("http://{}", pair.b.http_addr)])
        .args(["--smtp", &pair.b.smtp_addr.to_string()])
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (installed by .ci/deps)");
    let mut stdin = script.stdin.take().expect("stdin");
    let mut stderr = script.stderr.take();
    let mut lines = std::io::BufReader::new(script.stdout.take().expect("stdout")).lines();
    let mut next_line = |what: &str| -> String {
        match lines.next() {
            Some(Ok(line)) => line,
            _ => {
                let mut err = String::new();
                if let Some(mut e) = stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("owner_down.py ended before {what}:\n{err}");
            }
        }
    };
    let address = next_line("creating");
    assert!(address.starts_with("address "), "{address}");
    pair.stop_a();
    writeln!(stdin, "owner down").expect("write");
    assert_eq!(next_line("the call with the owner down"), "saw unavailable");
    pair.restart_a();
    writeln!(stdin, "owner back").expect("write");
    assert_eq!(
        next_line("the call with the owner back"),
        "ok: owner down and back"
    );
    drop(stdin);
    assert!(script.wait().expect("wait").success());
}
