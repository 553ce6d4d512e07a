//! The MCP server through a client nobody here wrote: the official MCP
//! Python SDK (PyPI `mcp`, installed by `.ci/deps`) runs `tests/mcp/*.py`
//! against a real appliance on port 0, over both transports (Streamable
//! HTTP at `/mcp`, and stdio through `uncorreo mcp`), with mail sent over
//! real SMTP. Limits the SDK cannot provoke are checked with raw HTTP.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::TestServer;

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Run `tests/mcp/<script>` against `server` over `transport`; panics with
/// the script's output unless it exits 0.
fn run_script(server: &TestServer, script: &str, transport: &str, extra: &[&str]) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp");
    let out = Command::new(python())
        .arg(dir.join(script))
        .args(["--transport", transport])
        .args(["--url", &server.url("")])
        .args(["--smtp", &server.smtp.to_string()])
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
