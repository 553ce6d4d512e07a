//! The MCP server through a client nobody here wrote: the official MCP
//! Python SDK (PyPI `mcp`, installed by `.ci/deps`) runs `tests/mcp/*.py`
//! against a real appliance on port 0, over both transports (Streamable
//! HTTP at `/mcp`, and stdio through `uncorreo mcp`), with mail sent over
//! real SMTP. Limits the SDK cannot provoke are checked with raw HTTP.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::TestServer;

pub(crate) fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Run `tests/mcp/<script>` against `server` over `transport`; panics with
/// the script's output unless it exits 0.
fn run_script(server: &TestServer, script: &str, transport: &str, extra: &[&str]) -> String {
    run_script_at(&server.url(""), server.smtp, script, transport, extra)
}

/// [`run_script`] against the appliance at `url` (HTTP) and `smtp`.
pub(crate) fn run_script_at(
    url: &str,
    smtp: std::net::SocketAddr,
    script: &str,
    transport: &str,
    extra: &[&str],
) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp");
    let out = Command::new(python())
        .arg(dir.join(script))
        .args(["--transport", transport])
        .args(["--url", url])
        .args(["--smtp", &smtp.to_string()])
        .args(["--binary", env!("CARGO_BIN_EXE_uncorreo")])
        .args(extra)
        .current_dir(&dir)
        .output()
        .expect("python3 runs (installed by .ci/deps)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} over {transport} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

/// Generous anonymous limits: these tests make hundreds of calls from one IP.
fn roomy(c: &mut uncorreo::Config) {
    let anonymous = c.plans.0.get_mut("anonymous").expect("embedded plan");
    anonymous.max_mailboxes = 1000;
    anonymous.requests_per_minute = 100_000;
    c.limits.ip_requests_per_minute = 100_000;
    // The first progress notification (sent when subscribed) is what the
    // scripts wait for; the periodic ones only need to exist.
    c.mcp.progress_interval_secs = 1;
}

/// Wait (generously) until the engine has no live subscriber: a closed MCP
/// session must not leave its waits behind.
fn no_subscribers_left(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = server.engine.stats().subscribers;
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} subscribers still live after the MCP session closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn agent_flow_over_streamable_http_with_the_python_sdk() {
    let server = TestServer::start_with(roomy);
    let out = run_script(&server, "flow.py", "http", &[]);
    assert!(out.contains("ok: http flow"), "{out}");
    no_subscribers_left(&server);
}

#[test]
fn agent_flow_over_stdio_with_the_python_sdk() {
    let server = TestServer::start_with(roomy);
    let out = run_script(&server, "flow.py", "stdio", &[]);
    assert!(out.contains("ok: stdio flow"), "{out}");
    no_subscribers_left(&server);
}

/// Must-show 2. Over HTTP/1.1 each call in flight holds one connection, so
/// the script gives httpx a pool larger than its default 100 (see client.py).
#[test]
fn hundred_concurrent_waits_each_wake_for_their_own_mail_over_http() {
    let server = TestServer::start_with(roomy);
    let out = run_script(&server, "many.py", "http", &["--n", "100"]);
    assert!(out.contains("ok: 100 concurrent waits"), "{out}");
    // The script ended its session with a wait still running.
    no_subscribers_left(&server);
}

/// Must-show 2 through `uncorreo mcp`; also the regression test for the
/// bridge deadlock (it awaited each send to the appliance inside the loop
/// that drains the appliance's messages, which stalled at ~16 waits).
#[test]
fn hundred_concurrent_waits_each_wake_for_their_own_mail_over_stdio() {
    let server = TestServer::start_with(roomy);
    let out = run_script(&server, "many.py", "stdio", &["--n", "100"]);
    assert!(out.contains("ok: 100 concurrent waits"), "{out}");
    no_subscribers_left(&server);
}

fn initialize(
    client: &reqwest::blocking::Client,
    server: &TestServer,
    host: Option<&str>,
) -> reqwest::blocking::Response {
    let mut req = client
        .post(server.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json");
    if let Some(h) = host {
        req = req.header("host", h);
    }
    req.body(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#,
    )
    .send()
    .expect("POST /mcp")
}

#[test]
fn sessions_past_max_sessions_get_503_until_one_closes() {
    let server = TestServer::start_with(|c| c.mcp.max_sessions = 2);
    let client = reqwest::blocking::Client::new();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = initialize(&client, &server, None);
        assert_eq!(r.status(), 200);
        let id = r
            .headers()
            .get("mcp-session-id")
            .expect("a session id")
            .to_str()
            .expect("ascii")
            .to_owned();
        // The negotiated version is the one asked for (2025-06-18 is supported).
        let body = r.text().expect("body");
        assert!(
            body.contains("\"protocolVersion\":\"2025-06-18\""),
            "{body}"
        );
        ids.push(id);
    }
    let refused = initialize(&client, &server, None);
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"5"[..])
    );
    let body: serde_json::Value = refused.json().expect("JSON-RPC error body");
    assert_eq!(body["error"]["code"], -32000);
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("MCP sessions")));

    let closed = client
        .delete(server.url("/mcp"))
        .header("mcp-session-id", &ids[0])
        .send()
        .expect("DELETE /mcp");
    assert!(closed.status().is_success(), "{}", closed.status());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = initialize(&client, &server, None);
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 503);
        assert!(
            Instant::now() < deadline,
            "the closed session never freed its slot"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn mcp_refuses_a_host_header_it_does_not_serve() {
    // DNS-rebinding guard: only configured Host names reach the tools.
    let server = TestServer::start();
    let client = reqwest::blocking::Client::new();
    let r = initialize(&client, &server, Some("evil.example"));
    assert_eq!(r.status(), 403);
    let ok = initialize(&client, &server, None);
    assert_eq!(ok.status(), 200);
}

/// A session driven with raw HTTP, for what the SDK cannot choose or
/// provoke: the protocol version it offers, and a session closed under a
/// running wait.
struct RawSession<'a> {
    server: &'a TestServer,
    client: reqwest::blocking::Client,
    id: String,
    version: String,
    next_id: u64,
}

/// The JSON-RPC message answering request `id` in an SSE (or JSON) body.
fn answer(body: &str, id: u64) -> serde_json::Value {
    let candidates = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .chain(std::iter::once(body.trim()));
    for candidate in candidates {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(candidate) {
            if v["id"] == id {
                return v;
            }
        }
    }
    panic!("no answer to request {id} in {body:?}");
}

impl<'a> RawSession<'a> {
    /// `initialize` offering `version`, then `notifications/initialized`.
    fn open(server: &'a TestServer, version: &str) -> (Self, serde_json::Value) {
        let client = reqwest::blocking::Client::new();
        let body = serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {},
                       "clientInfo": {"name": "raw", "version": "0"}}
        });
        let r = client
            .post(server.url("/mcp"))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .expect("POST /mcp");
        assert_eq!(r.status(), 200);
        let id = r
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .expect("a session id")
            .to_owned();
        let init = answer(&r.text().expect("body"), 1);
        let negotiated = init["result"]["protocolVersion"]
            .as_str()
            .unwrap_or_else(|| panic!("no protocolVersion in {init}"))
            .to_owned();
        let session = Self {
            server,
            client,
            id,
            version: negotiated,
            next_id: 2,
        };
        let r = session
            .post(&serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        assert_eq!(r.status(), 202);
        (session, init)
    }

    /// A session (protocol 2025-11-25) and the address of a mailbox it created.
    fn with_mailbox(server: &'a TestServer) -> (Self, String) {
        let (mut session, _) = Self::open(server, "2025-11-25");
        let created = session.call("create_mailbox", serde_json::json!({}));
        let address = created["result"]["structuredContent"]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("{created}"))
            .to_owned();
        (session, address)
    }

    fn post(&self, message: &serde_json::Value) -> reqwest::blocking::Response {
        self.client
            .post(self.server.url("/mcp"))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", &self.version)
            .body(message.to_string())
            .send()
            .expect("POST /mcp")
    }

    /// Start `tools/call` and return its response (an SSE stream still open
    /// while the tool runs) and the request id.
    fn start_call(
        &mut self,
        tool: &str,
        arguments: serde_json::Value,
    ) -> (reqwest::blocking::Response, u64) {
        let id = self.next_id;
        self.next_id += 1;
        let r = self.post(&serde_json::json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}
        }));
        assert_eq!(r.status(), 200, "tools/call {tool}");
        (r, id)
    }

    /// `tools/call` to completion: the JSON-RPC answer.
    fn call(&mut self, tool: &str, arguments: serde_json::Value) -> serde_json::Value {
        let (r, id) = self.start_call(tool, arguments);
        answer(&r.text().expect("body"), id)
    }

    fn delete(&self) {
        let r = self
            .client
            .delete(self.server.url("/mcp"))
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", &self.version)
            .send()
            .expect("DELETE /mcp");
        assert!(r.status().is_success(), "DELETE: {}", r.status());
    }
}

/// Wait (generously) until the engine has exactly `n` live subscribers.
fn subscribers_reach(server: &TestServer, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.engine.stats().subscribers != n {
        assert!(
            Instant::now() < deadline,
            "{} subscribers, expected {n}",
            server.engine.stats().subscribers
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn protocol_versions_2025_03_26_through_2025_11_25_are_negotiated() {
    let server = TestServer::start();
    for version in ["2025-03-26", "2025-06-18", "2025-11-25"] {
        let (session, init) = RawSession::open(&server, version);
        assert_eq!(session.version, version, "{init}");
        // Every later request of the session works at that version.
        let mut session = session;
        let created = session.call("create_mailbox", serde_json::json!({}));
        assert_eq!(created["result"]["isError"], false, "{created}");
        session.delete();
    }
    // A version we do not speak gets the newest we do; the client decides
    // whether it can live with that.
    let (_session, init) = RawSession::open(&server, "2024-11-05");
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
}

#[test]
fn closing_an_http_session_cancels_its_waits() {
    let server = TestServer::start_with(roomy);
    let (mut session, address) = RawSession::with_mailbox(&server);
    let (running, _) = session.start_call(
        "wait_for_message",
        serde_json::json!({"address": address, "timeout_seconds": 300}),
    );
    subscribers_reach(&server, 1);
    session.delete();
    no_subscribers_left(&server);
    drop(running);
}

#[test]
fn waits_past_max_waits_per_session_are_a_tool_error() {
    let server = TestServer::start_with(|c| {
        roomy(c);
        c.mcp.max_waits_per_session = 2;
    });
    let (mut session, address) = RawSession::with_mailbox(&server);
    let wait = serde_json::json!({"address": address, "timeout_seconds": 300});
    let running: Vec<_> = (0..2)
        .map(|_| session.start_call("wait_for_message", wait.clone()))
        .collect();
    subscribers_reach(&server, 2);
    let refused = session.call("wait_for_message", wait.clone());
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    assert_eq!(
        refused["result"]["structuredContent"]["error"], "rate-limited",
        "{refused}"
    );
    assert!(
        refused["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("2 waits running")),
        "{refused}"
    );
    // wait_for_code shares the bound.
    let refused = session.call("wait_for_code", wait);
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    session.delete();
    no_subscribers_left(&server);
    drop(running);
}

#[test]
fn a_stdio_host_going_away_cancels_its_waits() {
    use std::io::{BufRead, BufReader, Write};
    let server = TestServer::start_with(roomy);
    let mut bridge = Command::new(env!("CARGO_BIN_EXE_uncorreo"))
        .arg("mcp")
        .env("UNCORREO_URL", server.url(""))
        .env_remove("UNCORREO_API_KEY")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("uncorreo mcp starts");
    let mut stdin = bridge.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(bridge.stdout.take().expect("stdout"));
    let send = |stdin: &mut std::process::ChildStdin, message: serde_json::Value| {
        writeln!(stdin, "{message}").expect("write to the bridge");
        stdin.flush().expect("flush");
    };
    let mut answer_to = |id: u64| loop {
        let mut line = String::new();
        let n = stdout.read_line(&mut line).expect("read from the bridge");
        assert!(n > 0, "the bridge ended before answering {id}");
        let v: serde_json::Value =
            serde_json::from_str(&line).expect("one JSON-RPC message a line");
        if v["id"] == id {
            return v;
        }
    };
    send(
        &mut stdin,
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "0"}}}),
    );
    let init = answer_to(1);
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    send(
        &mut stdin,
        serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    send(
        &mut stdin,
        serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "create_mailbox", "arguments": {}}}),
    );
    let created = answer_to(2);
    let address = created["result"]["structuredContent"]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    send(
        &mut stdin,
        serde_json::json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "wait_for_message",
                   "arguments": {"address": address, "timeout_seconds": 300}}}),
    );
    subscribers_reach(&server, 1);
    // The host exits: its end of the pipe closes.
    drop(stdin);
    let status = bridge.wait().expect("the bridge exits");
    assert!(
        status.success(),
        "the bridge exits cleanly when stdin closes: {status}"
    );
    no_subscribers_left(&server);
}

#[test]
fn list_messages_and_wait_for_message_name_a_corrupt_message_in_gaps() {
    let server = TestServer::start_with(roomy);
    let (mut session, address) = RawSession::with_mailbox(&server);
    crate::support::block_on(async {
        for subject in ["first", "Zq2marker", "third"] {
            let raw = crate::realtime::message(&address, subject, "x");
            crate::realtime::deliver(&server.engine, &address, raw).await;
        }
    });
    crate::realtime::flip_first(server.data.path(), b"Zq2marker");
    let seqs = |v: &serde_json::Value| -> Vec<u64> {
        v["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect()
    };

    let listed = session.call("list_messages", serde_json::json!({"address": address}));
    let out = &listed["result"]["structuredContent"];
    assert_eq!(seqs(out), vec![1, 3], "{listed}");
    assert_eq!(out["gaps"], serde_json::json!([2]), "{listed}");
    assert!(
        listed["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("seq 2") && t.contains("gaps")),
        "{listed}"
    );

    let waited = session.call(
        "wait_for_message",
        serde_json::json!({"address": address, "since": 1, "timeout_seconds": 5}),
    );
    let out = &waited["result"]["structuredContent"];
    assert_eq!(seqs(out), vec![3], "{waited}");
    assert_eq!(out["gaps"], serde_json::json!([2]), "{waited}");
    session.delete();
}
