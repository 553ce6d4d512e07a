//! The SMTP server over real sockets, and what those tests share: reading
//! stored messages back, checking our `Received:` line, running outside
//! clients (Python smtplib, swaks) and a TLS-enabled test server. Raw protocol
//! dialogues use `support::Raw`.

mod auth;
pub mod budget;
mod clients;
mod disk_full;
mod frameworks;
mod kill;
mod plus_tags;
mod postfix;
mod protocol;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use uncorreo_engine::{Address, Engine, MailboxInfo, NewMailbox, Owner};

/// Every stored message of `mailbox`, oldest first.
pub fn stored(engine: &Engine, mailbox: &MailboxInfo) -> Vec<Vec<u8>> {
    engine
        .list_messages(mailbox.id, 0, 10_000)
        .unwrap()
        .into_iter()
        .map(|m| engine.read_raw(m.id).unwrap().to_vec())
        .collect()
}

/// Split our `Received:` header off the front of `raw`, asserting its shape;
/// returns (header, rest).
pub fn split_received(raw: &[u8]) -> (String, Vec<u8>) {
    assert!(
        raw.starts_with(b"Received: from "),
        "no Received: line in front: {:?}",
        String::from_utf8_lossy(&raw[..raw.len().min(200)])
    );
    // The header ends at the first CRLF not followed by folding white space.
    let mut i = 0;
    let end = loop {
        let pos = raw[i..].windows(2).position(|w| w == b"\r\n").unwrap() + i;
        match raw.get(pos + 2) {
            Some(b' ') | Some(b'\t') => i = pos + 2,
            _ => break pos + 2,
        }
    };
    let header = String::from_utf8(raw[..end].to_vec()).unwrap();
    assert!(header.contains("(uncorreo) with "), "{header}");
    assert!(header.contains("[127.0.0.1]"), "{header}");
    assert!(header.trim_end().ends_with("+0000"), "{header}");
    (header, raw[end..].to_vec())
}

/// Assert `mailbox` holds exactly `bodies` (each after our Received line),
/// and return the Received headers.
pub fn assert_stored(engine: &Engine, mailbox: &MailboxInfo, bodies: &[&[u8]]) -> Vec<String> {
    let got = stored(engine, mailbox);
    assert_eq!(
        got.len(),
        bodies.len(),
        "message count in {}",
        mailbox.address
    );
    got.iter()
        .zip(bodies)
        .map(|(raw, want)| {
            let (h, rest) = split_received(raw);
            assert_eq!(
                String::from_utf8_lossy(&rest),
                String::from_utf8_lossy(want),
                "stored body differs"
            );
            assert_eq!(&rest, want);
            h
        })
        .collect()
}

/// Run a Python 3 script with arguments; return stdout (asserting success).
pub fn python(script: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.py");
    std::fs::write(&path, script).unwrap();
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Run swaks; return (exit status, transcript).
pub fn swaks(args: &[&str]) -> (i32, String) {
    let out = Command::new("swaks")
        .args(args)
        .output()
        .expect("swaks installed (.ci/deps)");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), s)
}

/// A test server with STARTTLS on, using a fresh self-signed certificate for
/// `names`. The certificate's directory lives as long as this value.
pub struct TlsServer {
    pub server: crate::support::TestServer,
    /// The certificate (PEM file), for clients to trust.
    pub cert_path: std::path::PathBuf,
    /// The same certificate as PEM text.
    pub cert_pem: String,
    _dir: tempfile::TempDir,
}

pub fn tls_server(names: &[&str]) -> TlsServer {
    tls_server_with(names, |_| {})
}

/// [`tls_server`] with the config changed by `tweak` (after the certificate
/// is set, so `tweak` may add `smtp.tls_listen`).
pub fn tls_server_with(names: &[&str], tweak: impl FnOnce(&mut uncorreo::Config)) -> TlsServer {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(
        names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
    )
    .unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let server = crate::support::TestServer::start_with(|c| {
        c.smtp.tls_cert = Some(cert_path.clone());
        c.smtp.tls_key = Some(key_path);
        tweak(c);
    });
    TlsServer {
        server,
        cert_path,
        cert_pem: cert.cert.pem(),
        _dir: dir,
    }
}

/// Create mailboxes `locals` (room for 1,000,000 messages each) in a fresh
/// appliance on `data` (test config changed by `tweak`), then stop it, so
/// the real binary can take the directory lock.
pub fn mailboxes_then_stop(
    data: &std::path::Path,
    locals: &[&str],
    tweak: impl FnOnce(&mut uncorreo::Config),
) {
    let mut config = crate::support::test_config(data);
    tweak(&mut config);
    let appliance = uncorreo::Appliance::start(config).unwrap();
    for local in locals {
        let new = NewMailbox {
            address: Address::from_parts(local, crate::support::DOMAIN).unwrap(),
            owner: Owner::Anonymous {
                token_hash: [0; 32],
            },
            expires_at_ms: appliance.engine.now_ms() + 3_600_000,
            max_messages: 1_000_000,
        };
        crate::support::block_on(appliance.engine.create_mailbox(new)).unwrap();
    }
    appliance.shutdown();
    assert!(
        std::fs::read_dir(data).unwrap().next().is_some(),
        "the engine wrote nothing to its data dir: mailboxes would not reach the binary"
    );
}

/// Kills the child when the test ends, also when it panics.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run the `uncorreo` binary on `data` (loopback, port 0, two cores) with
/// `env` on top; returns it, its SMTP address and the thread draining its
/// stdout (so it never blocks on a full pipe).
pub fn spawn_binary(
    data: &std::path::Path,
    env: &[(&str, String)],
) -> (KillOnDrop, SocketAddr, std::thread::JoinHandle<()>) {
    let mut cmd = crate::support::serve_command(data, "127.0.0.1:0", "127.0.0.1:0");
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = KillOnDrop(cmd.spawn().unwrap());
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let smtp: SocketAddr = loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "binary exited before listening"
        );
        if let Some(a) = line.trim().strip_prefix("smtp ") {
            break a.parse().unwrap();
        }
    };
    let drain = std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink);
    });
    (child, smtp, drain)
}
