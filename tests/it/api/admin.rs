//! `uncorreo admin user create`: the operator's way to mint the first API
//! key, run as the real binary against a data directory.

use std::process::Command;

use super::{Api, Auth};

fn admin(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_uncorreo"))
        .args(["admin", "user", "create"])
        .args(args)
        .env("UNCORREO__ENGINE__DATA_DIR", data)
        .env("UNCORREO__ENGINE__MIN_FREE_BYTES", "0")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
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

#[test]
fn refuses_a_directory_a_server_holds_and_the_key_works_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let key = {
        let out = admin(&data, &["--plan", "free"]);
        assert!(out.status.success(), "{out:?}");
        key_line(&out)
    };
    let api = Api::start_with(|c| c.engine.data_dir = data.clone());
    let out = admin(&data, &["--plan", "free"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked by a running server"), "{err}");
    let r = api.get("/api/v1/keys", &Auth::Bearer(key));
    assert_eq!(r.status, 200);
}
