//! The web UI in a real headless Chromium (Debian `chromium`, driven by npm
//! `playwright-core` from `tests/browser/`; `.ci/deps` installs both) against
//! a real appliance on port 0: create an inbox with the page's button, watch
//! mail sent over SMTP arrive live, read it, render hostile HTML safely,
//! resume a dropped WebSocket, and time a 1,000-message inbox.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::TestServer;

const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// A server whose anonymous plan holds a 1,000-message inbox and the
/// script's burst of requests.
fn server() -> TestServer {
    TestServer::start_with(|c| {
        if let Some(anonymous) = c.plans.0.get_mut("anonymous") {
            anonymous.max_mailboxes = 20;
            anonymous.max_messages_per_mailbox = 2000;
            anonymous.requests_per_minute = 6000;
        }
    })
}

/// Run `tests/browser/<script>` against `server`; panics with its output
/// unless it exits 0.
fn run(script: &str, server: &TestServer, extra_env: &[(&str, &str)]) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run .ci/deps (apt-get install chromium)"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "tests/browser/node_modules is missing: run .ci/deps (npm ci in tests/browser)"
    );
    let mut command = Command::new("node");
    command
        .arg(browser_dir().join(script))
        .current_dir(browser_dir())
        .env("UNCORREO_HTTP", format!("http://{}", server.http))
        .env("UNCORREO_SMTP", server.smtp.to_string());
    for (key, value) in extra_env {
        command.env(key, value);
    }
    let output = command.output().expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

#[test]
fn web_ui_in_headless_chromium() {
    let server = server();
    run("ui.mjs", &server, &[]);
}

#[test]
#[ignore = "rewrites docs/screenshots/*.png; run by hand: cargo test --test it -- --ignored ui::screenshots"]
fn screenshots_of_the_three_pages() {
    let server = server();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::create_dir_all(&out).expect("docs/screenshots");
    run(
        "screenshots.mjs",
        &server,
        &[("SCREENSHOTS_DIR", out.to_str().expect("UTF-8 path"))],
    );
}
