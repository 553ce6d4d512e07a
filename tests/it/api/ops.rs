//! Operator surface: liveness, readiness, `/metrics` accepted by
//! `promtool check metrics` after traffic, and the OpenAPI document accepted
//! by `openapi-spec-validator`. Both tools are installed by `.ci/deps`.

use std::io::Write;
use std::process::{Command, Stdio};

use super::{Api, Auth};
use serde_json::json;

pub(super) fn run_tool(cmd: &mut Command, stdin: Option<&[u8]>, what: &str) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} is not installed ({e}); run .ci/deps"));
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            input.write_all(data).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn health_and_ready_answer_without_credentials() {
    let api = Api::start();
    let r = api.get("/health", &Auth::None);
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("ok")));
    let r = api.get("/ready", &Auth::None);
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("ready"))
    );
}

/// Set in the child process that runs the metrics check alone.
const METRICS_ALONE: &str = "UNCORREO_TEST_METRICS_ALONE";

/// The metrics recorder is process-wide and the other tests of this binary
/// run in parallel, emitting into it; the exact counter values below need a
/// process where nothing else runs. So the check runs in a child copy of this
/// test binary, filtered to this one test.
#[test]
fn metrics_pass_promtool_after_traffic_and_histograms_are_histograms() {
    if std::env::var_os(METRICS_ALONE).is_some() {
        return metrics_check();
    }
    let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
    let name =
        format!("{module}::metrics_pass_promtool_after_traffic_and_histograms_are_histograms");
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &name, "--test-threads=1"])
        .env(METRICS_ALONE, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "the check did not run in the child: {stdout}"
    );
}

fn metrics_check() {
    let api = Api::start_with(|c| {
        c.plans.0.get_mut("anonymous").unwrap().requests_per_minute = 3;
    });
    // The recorder is installed by the appliance's start. What other crates
    // emit through the facade must render as histograms too.
    metrics::describe_histogram!("uncorreo_test_stage_seconds", "A stage latency.");
    metrics::histogram!("uncorreo_batch_records").record(17.0);
    metrics::histogram!("uncorreo_test_stage_seconds").record(0.003);

    let (address, token) = api.mailbox(&Auth::None, json!({}));
    let auth = Auth::Bearer(token.unwrap());
    super::deliver(
        &api.server,
        &address,
        b"Subject: hi\r\n\r\nyour code is 1234\r\n",
    );
    super::smtp_send(
        api.server.smtp,
        "a@example.com",
        &address,
        b"Subject: by smtp\r\n\r\nhello\r\n",
    );
    assert_eq!(
        api.get(&format!("/api/v1/mailboxes/{address}/messages"), &auth)
            .status,
        200
    );
    assert_eq!(
        api.get("/api/v1/mailboxes/nobody@uncorreo.test", &auth)
            .status,
        404
    );
    assert_eq!(api.get("/nope", &Auth::None).status, 404);
    assert_eq!(api.get("/api/v1/mailboxes", &auth).status, 429);

    let r = api.get("/metrics", &Auth::None);
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(r.body.clone()).unwrap();
    let (ok, out) = run_tool(
        Command::new("promtool").args(["check", "metrics"]),
        Some(text.as_bytes()),
        "promtool",
    );
    assert!(ok, "promtool check metrics failed:\n{out}\n---\n{text}");

    for needle in [
        "# TYPE uncorreo_http_requests_total counter",
        "uncorreo_http_requests_total{route=\"/api/v1/mailboxes/{address}/messages\",method=\"GET\",status=\"200\"} 1",
        "uncorreo_http_requests_total{route=\"/api/v1/mailboxes/{address}\",method=\"GET\",status=\"404\"} 1",
        "uncorreo_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        "uncorreo_http_requests_total{route=\"/api/v1/mailboxes\",method=\"GET\",status=\"429\"} 1",
        "# TYPE uncorreo_http_request_duration_seconds histogram",
        "uncorreo_http_request_duration_seconds_bucket{",
        "# TYPE uncorreo_batch_records histogram",
        "uncorreo_batch_records_bucket{le=\"32\"}",
        "# TYPE uncorreo_test_stage_seconds histogram",
        "# TYPE uncorreo_mailboxes gauge",
        "uncorreo_engine_poisoned 0",
        "uncorreo_messages 2",
        "# TYPE uncorreo_smtp_data_to_ack_seconds histogram",
        "# TYPE uncorreo_commit_seconds histogram",
        "# TYPE uncorreo_fsync_seconds histogram",
        "# TYPE uncorreo_disk_bytes gauge",
        "# TYPE uncorreo_queue_depth gauge",
        "# TYPE uncorreo_subscribers gauge",
        "# TYPE uncorreo_segments gauge",
        "uncorreo_http_rate_limited_total 1",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // Route labels are templates, never raw paths (bounded cardinality).
    assert!(!text.contains(&address), "a raw path leaked into a label");
}

#[test]
fn openapi_document_is_valid_3_1_and_served() {
    let api = Api::start();
    let r = api.get("/api/v1/openapi.json", &Auth::None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    assert!(doc["components"]["schemas"]["ProblemBody"].is_object());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &r.body).unwrap();
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let (ok, out) = run_tool(
        Command::new(python)
            .args(["-m", "openapi_spec_validator"])
            .arg(&file),
        None,
        "openapi-spec-validator",
    );
    assert!(ok, "openapi-spec-validator failed:\n{out}");
    assert!(out.contains("OK"), "{out}");
}

/// After a failed fdatasync the engine is poisoned (no retry, PostgreSQL's
/// "fsyncgate"): the sender whose message was in that batch gets a temporary
/// failure, later senders get `451` instead of a false `250`, and `/ready`
/// says 503 so a load balancer stops sending traffic.
#[test]
fn failed_fsync_makes_ready_503_and_smtp_answer_451() {
    let api = Api::start();
    api.server.mailbox("victim", 10);
    api.server.engine.fail_next_sync_for_tests();

    let (mut c, greeting) = crate::support::Raw::connect(api.server.smtp);
    assert!(greeting.starts_with("220"), "{greeting}");
    for (cmd, want) in [
        ("EHLO client.test", "250"),
        ("MAIL FROM:<a@example.com>", "250"),
        ("RCPT TO:<victim@uncorreo.test>", "250"),
        ("DATA", "354"),
    ] {
        let reply = c.cmd(cmd);
        assert_eq!(crate::support::code(&reply), want, "{cmd}: {reply}");
    }
    c.send(b"Subject: lost?\r\n\r\nbody\r\n.\r\n");
    let after_data = c.reply();
    assert!(after_data.starts_with("451 4.3.0"), "{after_data}");
    // The next transaction is refused up front.
    let next = c.cmd("MAIL FROM:<a@example.com>");
    assert!(next.starts_with("451"), "{next}");

    let r = api.get("/ready", &Auth::None);
    assert_eq!(r.status, 503);
    assert!(r.problem().ends_with("storage-failed"), "{}", r.problem());
    // Liveness is not readiness: the process is up, it just refuses writes.
    assert_eq!(api.get("/health", &Auth::None).status, 200);
    // Nothing half-stored is served.
    let mb = api
        .server
        .engine
        .mailbox(&"victim@uncorreo.test".parse().unwrap())
        .unwrap();
    assert_eq!(mb.message_count, 0);
}

/// A panic on a writer thread must not leave a shard silently answering
/// "closed" while `/ready` stays 200: its poison guard marks the shard
/// failed, `/ready` says 503 and names it, and SMTP answers `451` to the
/// next MAIL instead of accepting mail it could not store.
#[test]
fn writer_thread_panic_makes_ready_503_and_smtp_answer_451() {
    let api = Api::start();
    api.server.mailbox("victim", 10);
    let (mut c, greeting) = crate::support::Raw::connect(api.server.smtp);
    assert!(greeting.starts_with("220"), "{greeting}");
    assert_eq!(crate::support::code(&c.cmd("EHLO client.test")), "250");
    assert_eq!(api.get("/ready", &Auth::None).status, 200);

    api.server.engine.panic_writer_for_tests(0);

    let next = c.cmd("MAIL FROM:<a@example.com>");
    assert!(next.starts_with("451 4.3.0"), "{next}");
    let r = api.get("/ready", &Auth::None);
    assert_eq!(r.status, 503);
    assert!(r.problem().ends_with("storage-failed"), "{}", r.problem());
    let detail = r.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("log shard 0"), "{detail}");
    assert_eq!(api.server.engine.health().failed_shards, vec![0]);
    assert_eq!(api.get("/health", &Auth::None).status, 200);
}
