//! The two-host suite (SCALE.md, "The two-host test"): NATS and two
//! appliances, each in its own network namespace with its own address,
//! joined by veth pairs on a bridge.
//!
//! The namespaces need root and `ip` (iproute2). These tests are marked
//! `#[ignore]` with that reason, so a plain `cargo test` lists them as
//! ignored (never silently skipped); `.ci/run`, which runs as root, runs them
//! with `--ignored`, and there a missing prerequisite fails the test with
//! the reason.
//!
//! Layout (names carry the test process's id and a counter, so runs never
//! meet; everything is removed on drop, also when a test fails):
//!
//! ```text
//!   ns <p>nats: br0 10.77.0.1/24, nats-server -js on 10.77.0.1:4222
//!   ns <p>a:    eth 10.77.0.2/24, uncorreo serve (node "a")
//!   ns <p>b:    eth 10.77.0.3/24, uncorreo serve (node "b")
//! ```
//!
//! Processes run through `ip netns exec`, which execs the program in the
//! namespace: the child's pid is the program's, so `kill` is a real
//! `kill -9` of the host. Clients run the same way (`curl`, `swaks`, and
//! Python's `websockets` client for a WebSocket), which keeps every socket
//! of the test inside the namespaces without `setns` in the test process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::cluster::eventually;
use crate::support::DOMAIN;

const SUBNET: &str = "10.77.0";
const NATS_ADDRESS: &str = "10.77.0.1";
const PARTITIONS: u16 = 16;
const LEASE_SECONDS: u64 = 3;
const HTTP_PORT: u16 = 8025;
const SMTP_PORT: u16 = 2525;
const HOP_PORT: u16 = 7070;

/// Why the namespaces cannot be made here, if they cannot.
fn unavailable() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("network namespaces need root".to_owned());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) is not installed".to_owned());
    }
    None
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Three namespaces on one bridge; removed on drop.
pub struct Net {
    prefix: String,
    /// The cluster secret both hosts sign the hop with.
    secret: std::path::PathBuf,
    _secret_dir: tempfile::TempDir,
}

static NETS: AtomicU32 = AtomicU32::new(0);

impl Net {
    /// Makes the namespaces, or fails the test with why it cannot.
    pub fn new() -> Net {
        if let Some(why) = unavailable() {
            panic!("the two-host suite cannot run here: {why}");
        }
        let prefix = format!(
            "uc{}x{}",
            std::process::id(),
            NETS.fetch_add(1, Ordering::SeqCst)
        );
        let secret_dir = tempfile::tempdir().expect("tempdir");
        let secret = secret_dir.path().join("cluster.key");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef-netns-test\n")
            .expect("write the secret");
        let net = Net {
            prefix,
            secret,
            _secret_dir: secret_dir,
        };
        for host in ["nats", "a", "b"] {
            run(&["ip", "netns", "add", &net.ns(host)]);
            run(&["ip", "-n", &net.ns(host), "link", "set", "lo", "up"]);
        }
        let hub = net.ns("nats");
        run(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"]);
        run(&[
            "ip",
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{NATS_ADDRESS}/24"),
            "dev",
            "br0",
        ]);
        run(&["ip", "-n", &hub, "link", "set", "br0", "up"]);
        for (host, address) in [("a", net.address("a")), ("b", net.address("b"))] {
            let ns = net.ns(host);
            let port = format!("port{host}");
            run(&[
                "ip", "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &hub,
            ]);
            run(&[
                "ip", "-n", &hub, "link", "set", &port, "master", "br0", "up",
            ]);
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ]);
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        }
        net
    }

    /// The namespace of `host` (`nats`, `a`, `b`).
    pub fn ns(&self, host: &str) -> String {
        format!("{}{host}", self.prefix)
    }

    /// The address of `host`.
    pub fn address(&self, host: &str) -> String {
        match host {
            "a" => format!("{SUBNET}.2"),
            "b" => format!("{SUBNET}.3"),
            _ => NATS_ADDRESS.to_owned(),
        }
    }

    /// `program args…` inside `host`'s namespace.
    pub fn command(&self, host: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns(host), program]);
        command
    }

    /// Starts `nats-server -js` in the `nats` namespace and waits until it
    /// listens.
    pub fn start_nats(&self, store: &std::path::Path) -> Child {
        let mut child = self
            .command("nats", "nats-server")
            .args(["-js", "-a", NATS_ADDRESS, "-p", "4222", "-sd"])
            .arg(store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server starts (.ci/deps installs it)");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Listening for client connections") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("nats-server listens within 30 s");
        child
    }

    /// Starts the uncorreo binary as `host` with `[cluster]`, and waits
    /// until it answers HTTP.
    pub fn start_host(&self, host: &str, data: &std::path::Path, claim_free: bool) -> Child {
        let address = self.address(host);
        let child = self
            .command(host, env!("CARGO_BIN_EXE_uncorreo"))
            .arg("serve")
            .env("UNCORREO__SMTP__LISTEN", format!("{address}:{SMTP_PORT}"))
            .env("UNCORREO__HTTP__LISTEN", format!("{address}:{HTTP_PORT}"))
            .env("UNCORREO__ENGINE__DATA_DIR", data)
            .env("UNCORREO__ENGINE__DOMAINS", format!("[\"{DOMAIN}\"]"))
            .env("UNCORREO__ENGINE__MIN_FREE_BYTES", "0")
            .env("UNCORREO__ENGINE__SHARDS", "2")
            .env("UNCORREO__CORES", "1")
            .env(
                "UNCORREO__CLUSTER__NATS_URL",
                format!("nats://{NATS_ADDRESS}:4222"),
            )
            .env("UNCORREO__CLUSTER__NODE_ID", host)
            .env("UNCORREO__CLUSTER__PARTITIONS", PARTITIONS.to_string())
            .env(
                "UNCORREO__CLUSTER__LEASE_SECONDS",
                LEASE_SECONDS.to_string(),
            )
            .env("UNCORREO__CLUSTER__CLAIM_FREE", claim_free.to_string())
            .env("UNCORREO__CLUSTER__LISTEN", format!("{address}:{HOP_PORT}"))
            .env("UNCORREO__CLUSTER__SECRET_FILE", &self.secret)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("uncorreo starts");
        assert!(
            eventually(Duration::from_secs(60), || self.served(host).is_some()),
            "{host} did not answer HTTP within 60 s"
        );
        child
    }

    /// Sends one message with `swaks` inside `host`'s namespace to its SMTP
    /// listener; the transcript (the server's last answer decides).
    pub fn swaks(&self, host: &str, to: &str, subject: &str) -> (bool, String) {
        let out = self
            .command(host, "swaks")
            .args([
                "--server",
                &format!("{}:{SMTP_PORT}", self.address(host)),
                "--from",
                "s@x.test",
                "--to",
                to,
                "--header",
                &format!("Subject: {subject}"),
                "--body",
                "hello across namespaces",
                "--timeout",
                "30",
            ])
            .output()
            .expect("swaks runs (.ci/deps installs it)");
        let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success(), transcript)
    }

    /// `uncorreo admin ARGS…` inside `host`'s namespace, for the host
    /// whose data directory is `data` (its operator socket is there):
    /// (ok, stdout, stderr).
    pub fn admin(
        &self,
        host: &str,
        data: &std::path::Path,
        args: &[&str],
    ) -> (bool, String, String) {
        let out = self
            .command(host, env!("CARGO_BIN_EXE_uncorreo"))
            .arg("admin")
            .args(args)
            .env("UNCORREO__ENGINE__DATA_DIR", data)
            .env("UNCORREO__ENGINE__DOMAINS", format!("[\"{DOMAIN}\"]"))
            .output()
            .expect("uncorreo admin runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `curl` inside `host`'s namespace against its HTTP listener: (ok, body).
    pub fn curl(&self, host: &str, path: &str, args: &[&str]) -> (bool, String) {
        let url = format!("http://{}:{HTTP_PORT}{path}", self.address(host));
        let out = self
            .command(host, "curl")
            .args(["-sf", "--max-time", "10"])
            .args(args)
            .arg(&url)
            .output()
            .expect("curl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// A WebSocket client (Python's `websockets`, installed by `.ci/deps`)
    /// inside `host`'s namespace on `/ws/inbox/{address}?since=…`, open
    /// once this returns; [`WsClient::event`] reads what it received.
    pub fn websocket(&self, host: &str, address: &str, token: &str, since: u64) -> WsClient {
        let url = format!(
            "ws://{}:{HTTP_PORT}/ws/inbox/{address}?since={since}&token={token}",
            self.address(host)
        );
        // One JSON line per text frame; "open" once connected; the close
        // or the error as the last line. Everything bounded by `timeout`.
        let script = r#"
import sys
from websockets.sync.client import connect
try:
    with connect(sys.argv[1], open_timeout=30, close_timeout=5) as ws:
        print("open", flush=True)
        while True:
            print(ws.recv(timeout=60), flush=True)
except Exception as error:
    print("ended:", type(error).__name__, error, flush=True)
"#;
        let mut child = self
            .command(host, "python3")
            .args(["-c", script, &url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs (.ci/deps installs websockets)");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        assert_eq!(first, "open", "the WebSocket on {host} did not open");
        WsClient {
            _child: Killed(Some(child)),
            lines,
        }
    }

    /// What `host` reports as served partitions (`/metrics`, fetched with
    /// `curl` inside `host`'s namespace); `None` while it does not answer.
    pub fn served(&self, host: &str) -> Option<u32> {
        let url = format!("http://{}:{HTTP_PORT}/metrics", self.address(host));
        let out = self
            .command(host, "curl")
            .args(["-sf", "--max-time", "5", &url])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        Some(
            body.lines()
                .find_map(|line| line.strip_prefix("uncorreo_cluster_partitions_served "))
                .and_then(|value| value.trim().parse::<f64>().ok())
                .map_or(0, |value| value as u32),
        )
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace does not kill its processes: the tests kill
        // theirs (Host's drop) before this runs.
        for host in ["a", "b", "nats"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(host)])
                .output();
        }
    }
}

/// A WebSocket client running in a namespace ([`Net::websocket`]).
pub struct WsClient {
    _child: Killed,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl WsClient {
    /// The next event it received (the client gives up after 60 s of
    /// silence, so this never hangs).
    pub fn event(&mut self) -> serde_json::Value {
        let line = self
            .lines
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| "ended: no output".to_owned());
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not an event: {line}"))
    }
}

/// A child killed (SIGKILL) and reaped on drop.
pub struct Killed(pub Option<Child>);

impl Killed {
    /// `kill -9` now.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Both hosts join; A claims the free partitions, B none; A is killed and
/// its partitions lapse, B does not take them (homes are sticky); A comes
/// back and serves them again.
#[test]
#[ignore = "needs root and `ip netns`; .ci/run runs it with --ignored"]
fn hosts_in_namespaces_keep_sticky_homes_across_a_kill() {
    let net = Net::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, data_a, data_b) = (
        dir.path().join("nats"),
        dir.path().join("a"),
        dir.path().join("b"),
    );
    // Declared before the hosts, so dropped after them: processes die
    // before their namespaces go.
    let _nats = Killed(Some(net.start_nats(&store)));
    let mut a = Killed(Some(net.start_host("a", &data_a, true)));
    let _b = Killed(Some(net.start_host("b", &data_b, false)));
    let all = u32::from(PARTITIONS);
    assert!(
        eventually(Duration::from_secs(30), || net.served("a") == Some(all)),
        "a serves {:?}",
        net.served("a")
    );
    assert_eq!(net.served("b"), Some(0));

    a.kill();
    // A's leases lapse after LEASE_SECONDS; B must still serve none of its
    // partitions well past that.
    std::thread::sleep(Duration::from_secs(2 * LEASE_SECONDS));
    assert_eq!(net.served("b"), Some(0), "b took over a's partitions");

    let _a = Killed(Some(net.start_host("a", &data_a, true)));
    assert!(
        eventually(Duration::from_secs(30), || net.served("a") == Some(all)),
        "a serves {:?} after its restart",
        net.served("a")
    );
    assert_eq!(net.served("b"), Some(0));
    drop(_a);
    drop(_b);
    drop(_nats);
    drop(a);
}

/// The issue's scenario, as far as the hop goes today: a mailbox created
/// through B (A owns its partition), followed by a WebSocket on B; mail for
/// it sent at B with `swaks` gets `250` (stored by A over the hop) and
/// reaches the WebSocket on B; with A killed, B answers `451`; A restarted
/// has the message, readable through B (`GET`), and B accepts and streams
/// again; then A leaves cleanly (`uncorreo admin cluster leave`) and B
/// serves every message, once, and the mail after.
#[test]
#[ignore = "needs root and `ip netns`; .ci/run runs it with --ignored"]
fn mail_sent_at_b_is_stored_by_a_and_survives_a_kill_of_a() {
    let net = Net::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let _nats = Killed(Some(net.start_nats(&dir.path().join("nats"))));
    let mut a = Killed(Some(net.start_host("a", &data_a, true)));
    let _b = Killed(Some(net.start_host("b", &data_b, false)));
    let all = u32::from(PARTITIONS);
    assert!(eventually(Duration::from_secs(30), || net.served("a") == Some(all)));

    // Created through B, on A (B serves no partition).
    let (created, body) = net.curl(
        "b",
        "/api/v1/mailboxes",
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"local_part":"nsbox"}"#,
        ],
    );
    assert!(created, "{body}");
    let token = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["session_token"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no session_token in {body}"));
    let to = format!("nsbox@{DOMAIN}");
    let session = format!("X-Session-Token: {token}");
    let (on_a, _) = net.curl("a", &format!("/api/v1/mailboxes/{to}"), &["-H", &session]);
    assert!(on_a, "a does not have the mailbox created through b");

    let mut ws = net.websocket("b", &to, &token, 0);
    let (sent, transcript) = net.swaks("b", &to, "first");
    assert!(sent, "{transcript}");
    let event = ws.event();
    assert_eq!(event["seq"], 1, "{event}");
    assert_eq!(event["subject"], "first", "{event}");

    a.kill();
    let (sent, transcript) = net.swaks("b", &to, "while a is down");
    assert!(!sent && transcript.contains("451"), "{transcript}");

    let _a = Killed(Some(net.start_host("a", &data_a, true)));
    assert!(eventually(Duration::from_secs(30), || net.served("a") == Some(all)));
    // Read through B once B sees A again.
    let path = format!("/api/v1/mailboxes/{to}/messages");
    let mut listing = String::new();
    assert!(
        eventually(Duration::from_secs(30), || {
            let (read, body) = net.curl("b", &path, &["-H", &session]);
            listing = body;
            read
        }),
        "no read through b after a returned"
    );
    assert!(listing.contains("first"), "{listing}");
    assert!(!listing.contains("while a is down"), "{listing}");
    let mut ws = net.websocket("b", &to, &token, 1);
    let (sent, transcript) = net.swaks("b", &to, "after a returned");
    assert!(sent, "{transcript}");
    let event = ws.event();
    assert_eq!(event["seq"], 2, "{event}");
    assert_eq!(event["subject"], "after a returned", "{event}");

    // A leaves cleanly across the namespaces (`uncorreo admin cluster
    // leave` inside A's namespace): every partition moves to B over the
    // hop, with every message acked before, once, under its id.
    let (read, listing) = net.curl("a", &path, &["-H", &format!("X-Session-Token: {token}")]);
    assert!(read, "{listing}");
    let acked = listed_ids(&listing);
    assert_eq!(acked.len(), 2, "{listing}");
    let (left, answer, why) = net.admin("a", &data_a, &["cluster", "leave"]);
    assert!(left, "{answer} {why}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(answer["to"], "b", "{answer}");
    assert_eq!(answer["partitions"], u64::from(PARTITIONS), "{answer}");
    assert!(
        eventually(Duration::from_secs(30), || net.served("b") == Some(all)),
        "b serves {:?} after the leave",
        net.served("b")
    );
    assert_eq!(net.served("a"), Some(0));
    let (read, listing) = net.curl("b", &path, &["-H", &format!("X-Session-Token: {token}")]);
    assert!(read, "{listing}");
    assert_eq!(listed_ids(&listing), acked, "the same messages on b, once");
    // Mail afterwards goes to B, sent at B or at A.
    let (sent, at_b) = net.swaks("b", &to, "at b after the leave");
    assert!(sent, "{at_b}");
    let (sent, at_a) = net.swaks("a", &to, "at a after the leave");
    assert!(sent, "{at_a}");
    let (read, listing) = net.curl("b", &path, &["-H", &format!("X-Session-Token: {token}")]);
    assert!(read, "{listing}");
    let now = listed_ids(&listing);
    assert_eq!(now.len(), 4, "{listing}");
    assert_eq!(now[..2], acked[..]);
    for transcript in [&at_b, &at_a] {
        let id = stored_id(transcript);
        assert_eq!(
            now.iter().filter(|i| **i == id).count(),
            1,
            "{id} in {now:?}"
        );
    }
    // A serves none of it any more: a read at A is run by B.
    let (read, _) = net.curl("a", &path, &["-H", &format!("X-Session-Token: {token}")]);
    assert!(read, "a proxies the read to b");
}

/// The message ids of a listing, in order.
fn listed_ids(listing: &str) -> Vec<String> {
    let body: serde_json::Value = serde_json::from_str(listing).expect("a listing");
    body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The id a `swaks` transcript's `250 … stored as <id>` names.
fn stored_id(transcript: &str) -> String {
    transcript
        .lines()
        .find_map(|line| {
            line.split_once("stored as ")
                .map(|(_, id)| id.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no stored id in {transcript}"))
}
