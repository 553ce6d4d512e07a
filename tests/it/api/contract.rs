//! The OpenAPI document is the contract: schemathesis, a client nobody here
//! wrote, generates requests from `/api/v1/openapi.json` (valid ones and
//! deliberately broken ones, single calls and sequences) and checks every
//! answer against the document: status codes, content types, bodies, and
//! that invalid requests and credentials are refused and valid ones are not.
//!
//! The run is seeded and bounded (`--seed 1`, `CONTRACT_EXAMPLES` examples
//! per operation, 15 by default) so CI repeats it exactly; a longer,
//! unseeded run (`CONTRACT_SEED=none CONTRACT_EXAMPLES=100`) is in the
//! closing note of the issue. Settings and the
//! `message/rfc822` generator live in `tests/contract/`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use super::{deliver, Api, Auth};

/// Where `.ci/deps` installs schemathesis (its own virtualenv).
const SCHEMATHESIS: &str = "/opt/uncorreo-tools/schemathesis/bin/schemathesis";

#[test]
fn schemathesis_finds_no_contract_violation() {
    let api = Api::start();
    let key = api.user("pro");
    let (address, _) = api.mailbox(
        &Auth::Bearer(key.clone()),
        json!({"local_part": "contract"}),
    );
    deliver(
        &api.server,
        &address,
        b"From: a@example.com\r\nSubject: Your code 482913\r\n\r\nhttps://shop.example/verify?t=1\r\n",
    );
    let settings = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/contract");
    let examples = std::env::var("CONTRACT_EXAMPLES").unwrap_or_else(|_| "15".to_owned());
    // CONTRACT_SEED=none for the longer unseeded runs the issue asks for.
    let seed = std::env::var("CONTRACT_SEED").unwrap_or_else(|_| "1".to_owned());
    let binary = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| SCHEMATHESIS.to_owned());
    // Run where its cache (crashes found earlier, replayed first) starts
    // empty and is thrown away: every run is the same seeded run.
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new(&binary)
        .current_dir(scratch.path())
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", &settings)
        .env("UNCORREO_CONTRACT_ADDRESS", &address)
        .arg("--config-file")
        .arg(settings.join("schemathesis.toml"))
        .arg("run")
        .arg(api.server.url("/api/v1/openapi.json"))
        .args(["--checks", "all", "--no-color"])
        .args(seed_arguments(&seed))
        .args(["--max-examples", &examples])
        .arg("-H")
        .arg(format!("Authorization: Bearer {key}"))
        .output()
        .unwrap_or_else(|e| panic!("{binary} is not installed ({e}); run .ci/deps"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found contract violations:\n{text}"
    );
    // A run that tested nothing would also exit 0.
    assert!(text.contains("Tested:"), "{text}");
}

/// `--seed N`, or nothing for `none` (schemathesis then picks its own).
fn seed_arguments(seed: &str) -> Vec<String> {
    match seed {
        "none" => Vec::new(),
        seed => vec!["--seed".to_owned(), seed.to_owned()],
    }
}
