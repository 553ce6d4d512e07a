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

/// Every published smuggling variant over a real socket, in both bare-LF
/// modes: the body, the variant, then a complete transaction for another
/// mailbox, then the real end. Each is one stored message holding the
/// smuggled text, or a refusal; the victim never gets mail and the next
/// reply is our own NOOP's, so nothing inside was run as a command.
#[test]
fn smuggling_variants_over_a_socket_are_one_message_or_refused_never_two() {
    for bare_lf in [
        uncorreo_smtpd::config::BareLf::Normalize,
        uncorreo_smtpd::config::BareLf::Reject,
    ] {
        let server = TestServer::start_with(|c| {
            c.smtp.bare_lf = bare_lf;
            c.smtp.max_errors = 1000;
        });
        let target = server.mailbox("target", 1000);
        let victim = server.mailbox("victim", 1000);
        let (mut c, _) = Raw::connect(server.smtp);
        c.cmd("EHLO raw.example");
        let (mut accepted, mut refused) = (0, 0);
        for variant in uncorreo_smtpd::data::SMUGGLING_VARIANTS {
            for eol in [&b"\r\n"[..], b"\n"] {
                let case = format!("{bare_lf:?} {variant:?} smuggled with {eol:?}");
                let smuggled = [
                    &b"MAIL FROM:<ceo@uncorreo.test>"[..],
                    b"RCPT TO:<victim@uncorreo.test>",
                    b"DATA",
                    b"Subject: forged",
                    b"",
                    b"wire money",
                ]
                .join(eol);
                let before = stored(&server.engine, &target).len();
                assert_eq!(code(&c.cmd("MAIL FROM:<s@sender.example>")), "250");
                assert_eq!(code(&c.cmd("RCPT TO:<target@uncorreo.test>")), "250");
                assert_eq!(code(&c.cmd("DATA")), "354");
                c.send(
                    &[
                        &b"Subject: outer\r\n\r\nhello"[..],
                        variant,
                        &smuggled,
                        b"\r\n.\r\n",
                    ]
                    .concat(),
                );
                let r = c.reply();
                assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok", "{case}");
                let after = stored(&server.engine, &target);
                if r.starts_with("250 2.0.0 Ok: stored as") {
                    assert_eq!(after.len(), before + 1, "{case}");
                    let (_, body) = split_received(after.last().unwrap());
                    let body = String::from_utf8_lossy(&body);
                    assert!(
                        body.contains("RCPT TO:<victim@uncorreo.test>")
                            && body.contains("wire money"),
                        "{case}: the smuggled part is not in the one message: {body:?}"
                    );
                    accepted += 1;
                } else {
                    assert!(r.starts_with("550 5.6.0"), "{case}: {r}");
                    assert_eq!(after.len(), before, "{case}");
                    refused += 1;
                }
                assert!(
                    stored(&server.engine, &victim).is_empty(),
                    "{case}: victim got mail"
                );
            }
        }
        // Both outcomes occur in each mode (a server refusing everything
        // would pass the loop above): the NUL and `.\r\n` rows hold no bare
        // line end and are stored even in strict mode.
        assert!(
            accepted > 0 && refused > 0,
            "{bare_lf:?}: {accepted} {refused}"
        );
    }
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

/// A client that asks for STARTTLS and then never starts the handshake is
/// cut off after `tls_handshake_timeout` (it would otherwise hold a session
/// slot until the much longer command timeout).
#[test]
fn a_client_that_never_finishes_the_tls_handshake_is_closed() {
    use std::io::{BufRead, BufReader, Read, Write};
    let tls = super::tls_server_with(&["localhost"], |c| {
        c.smtp.tls_handshake_timeout = Duration::from_millis(300);
        c.smtp.command_timeout = Duration::from_secs(600);
    });
    let stream = std::net::TcpStream::connect(tls.server.smtp).unwrap();
    // A bound on the test, far above the timeout under test.
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("220"), "{line}");
    writer.write_all(b"EHLO client.test\r\n").unwrap();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.starts_with("250 ") {
            break;
        }
        assert!(line.starts_with("250-"), "{line}");
    }
    writer.write_all(b"STARTTLS\r\n").unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("220"), "{line}");
    // Say nothing more: the server must close, not wait for us.
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest)),
        Err(error) => panic!("the connection was still open after 120 s: {error}"),
    }
}
