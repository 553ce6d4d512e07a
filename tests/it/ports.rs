//! No port sharing with a stranger: a second `uncorreo serve` on an address
//! a running server holds refuses to start, naming the address, instead of
//! joining its SO_REUSEPORT group and taking part of its connections.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::TestServer;

/// The real binary with its own data directory (so only the port can clash),
/// run to its end; returns (exit status success, stderr).
fn second_serve(smtp: &str, http: &str) -> (bool, String) {
    let data = tempfile::tempdir().unwrap();
    let mut child = crate::support::serve_command(data.path(), smtp, http)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the second server started on a port the first one holds");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.success(), stderr)
}

#[test]
fn a_second_server_on_the_same_port_fails_to_start_naming_the_address() {
    let first = TestServer::start();
    for (what, smtp, http, taken) in [
        (
            "HTTP",
            "127.0.0.1:0".to_owned(),
            first.http.to_string(),
            first.http,
        ),
        (
            "SMTP",
            first.smtp.to_string(),
            "127.0.0.1:0".to_owned(),
            first.smtp,
        ),
    ] {
        let (ok, stderr) = second_serve(&smtp, &http);
        assert!(
            !ok,
            "{what}: the second server exited successfully: {stderr}"
        );
        assert!(
            stderr.contains(&format!("address {taken} is already in use")),
            "{what}: the error does not name {taken}: {stderr}"
        );
    }
    // The first one still answers on both.
    let r = reqwest::blocking::get(first.url("/health")).unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_c, greeting) = crate::support::Raw::connect(first.smtp);
    assert!(greeting.starts_with("220"), "{greeting}");
}
