//! Protocol behaviour over real loopback sockets that no library client
//! produces: BDAT/CHUNKING, a pipelined burst in one write, SMTP smuggling
//! attempts, the idle timeout, and graceful shutdown.

use std::time::Duration;

use super::*;
use crate::support::{code, Raw, TestServer};

#[test]
fn bdat_chunking_over_loopback() {
    let server = TestServer::start();
    let mb = server.mailbox("chunky", 10);
    let (mut c, greeting) = Raw::connect(server.smtp);
    assert_eq!(code(&greeting), "220");
    assert!(c.cmd("EHLO raw.example").contains("CHUNKING"));
    let part1 = b"Subject: chunks\r\n\r\nfirst part\r\n.\r\n";
    let part2 = b"second part\r\n.no unstuffing in BDAT\r\n";
    c.send(b"MAIL FROM:<s@sender.example> BODY=8BITMIME\r\nRCPT TO:<chunky@uncorreo.test>\r\n");
    c.send(format!("BDAT {}\r\n", part1.len()).as_bytes());
    c.send(part1);
    c.send(format!("BDAT {} LAST\r\n", part2.len()).as_bytes());
    c.send(part2);
    assert_eq!(code(&c.reply()), "250");
    assert_eq!(code(&c.reply()), "250");
    assert_eq!(
        c.reply(),
        format!("250 2.0.0 {} octets received", part1.len())
    );
    assert!(c.reply().starts_with("250 2.0.0 Ok: stored as "));
    assert_eq!(c.cmd("QUIT")[..3].to_owned(), "221");
    let want = [&part1[..], &part2[..]].concat();
    assert_stored(&server.engine, &mb, &[&want]);
}

#[test]
fn pipelined_burst_in_one_write() {
    let server = TestServer::start();
    let mb = server.mailbox("piped", 100);
    let (mut c, _) = Raw::connect(server.smtp);
    let mut burst = b"EHLO raw.example\r\n".to_vec();
    for i in 0..20 {
        burst.extend_from_slice(
            b"MAIL FROM:<s@sender.example>\r\nRCPT TO:<piped@uncorreo.test>\r\nDATA\r\n",
        );
        burst.extend_from_slice(format!("Subject: {i}\r\n\r\n.stuffed {i}\r\n.\r\n").as_bytes());
    }
    burst.extend_from_slice(b"QUIT\r\n");
    c.send(&burst);
    assert!(c.reply().starts_with("250-"));
    for _ in 0..20 {
        assert_eq!(code(&c.reply()), "250");
        assert_eq!(code(&c.reply()), "250");
        assert_eq!(code(&c.reply()), "354");
        assert!(c.reply().starts_with("250 2.0.0 Ok: stored as"));
    }
    assert_eq!(code(&c.reply()), "221");
    let want: Vec<Vec<u8>> = (0..20)
        .map(|i| format!("Subject: {i}\r\n\r\nstuffed {i}\r\n").into_bytes())
        .collect();
    let want: Vec<&[u8]> = want.iter().map(Vec::as_slice).collect();
    assert_stored(&server.engine, &mb, &want);
}

#[test]
fn bare_lf_smuggling_attempt_is_refused_and_nothing_is_injected() {
    let server = TestServer::start();
    let mb = server.mailbox("target", 10);
    let victim = server.mailbox("victim", 10);
    let (mut c, _) = Raw::connect(server.smtp);
    c.cmd("EHLO raw.example");
    assert_eq!(code(&c.cmd("MAIL FROM:<s@sender.example>")), "250");
    assert_eq!(code(&c.cmd("RCPT TO:<target@uncorreo.test>")), "250");
    assert_eq!(code(&c.cmd("DATA")), "354");
    c.send(b"Subject: outer\r\n\r\nhello\n.\nMAIL FROM:<ceo@uncorreo.test>\nRCPT TO:<victim@uncorreo.test>\nDATA\nSubject: forged\n\nwire money\n.\r\n");
    c.send(b"\r\n.\r\n");
    let r = c.reply();
    assert!(r.starts_with("550 5.6.0"), "{r}");
    assert_eq!(code(&c.cmd("NOOP")), "250");
    assert!(stored(&server.engine, &mb).is_empty());
    assert!(stored(&server.engine, &victim).is_empty());
}

#[test]
fn idle_connection_gets_421_4_4_2() {
    let server = TestServer::start_with(|c| c.smtp.command_timeout = Duration::from_millis(200));
    // Say nothing after the greeting: the next thing we hear is the 421.
    let (mut c, greeting) = Raw::connect(server.smtp);
    assert_eq!(code(&greeting), "220");
    let r = c.reply();
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(c.closed());
}

#[test]
fn shutdown_answers_idle_sessions_421_4_3_2() {
    let mut server = TestServer::start();
    let (mut c, _) = Raw::connect(server.smtp);
    c.cmd("EHLO raw.example");
    server.stop();
    let r = c.reply();
    assert!(r.starts_with("421 4.3.2"), "{r}");
    assert!(c.closed());
}

/// Postfix's `smtp-source` (the load generator of the benchmarks) against
/// the server: 20 parallel sessions, 4 KiB payloads, many messages per
/// connection. `.ci/deps` installs the tool; a missing tool is a failure,
/// not a skip, so this test cannot pass without running.
#[test]
fn postfix_smtp_source_load_is_fully_stored() {
    let tool = "/usr/sbin/smtp-source";
    assert!(
        std::path::Path::new(tool).exists(),
        "{tool} is missing: run .ci/deps (it installs Debian's postfix package)"
    );
    let server = TestServer::start();
    let mb = server.mailbox("sink", 1_000_000);
    let out = std::process::Command::new(tool)
        .args([
            "-s",
            "20",
            "-m",
            "1000",
            "-l",
            "4096",
            "-d",
            "-M",
            "source.example",
        ])
        .args(["-f", "load@sender.example", "-t", "sink@uncorreo.test"])
        .arg(server.smtp.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msgs = server.engine.list_messages(mb.id, 0, 10_000).unwrap();
    assert_eq!(msgs.len(), 1000);
    for m in msgs.iter().take(5) {
        let raw = server.engine.read_raw(m.id).unwrap();
        let (_, rest) = split_received(&raw);
        assert!(rest.len() >= 4096, "payload truncated: {}", rest.len());
    }
}
