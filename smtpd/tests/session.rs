//! In-memory session tests: the state machine over `tokio::io::duplex`, one
//! test per limit asserting its exact reply, tokio's paused clock for
//! timeouts (no sleeping, no timing thresholds).

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream, ReadBuf,
};
use tokio_util::sync::CancellationToken;
use uncorreo_engine::{
    Address, Delivery, DeliveryOutcome, Engine, EngineConfig, MailboxInfo, NewMailbox, Owner,
    Recipient, ResolveError,
};
use uncorreo_smtpd::data::SMUGGLING_VARIANTS;
use uncorreo_smtpd::{handle_connection, Shared, SmtpConfig};

const DOMAIN: &str = "uncorreo.test";

struct Env {
    engine: Engine,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

fn env(tweak: impl FnOnce(&mut SmtpConfig)) -> Env {
    env_with_budget(tweak, uncorreo_budget::Budget::unlimited())
}

fn env_with_budget(tweak: impl FnOnce(&mut SmtpConfig), budget: uncorreo_budget::Budget) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig {
        data_dir: dir.path().to_path_buf(),
        domains: vec![DOMAIN.to_owned()],
        min_free_bytes: 0,
        ..EngineConfig::default()
    })
    .unwrap();
    let mut config = SmtpConfig {
        hostname: "mx.uncorreo.test".to_owned(),
        ..SmtpConfig::default()
    };
    tweak(&mut config);
    let shared = Shared::with_budget(engine.clone(), config, budget).unwrap();
    Env {
        engine,
        shared,
        shutdown: CancellationToken::new(),
        _dir: dir,
    }
}

impl Env {
    async fn mailbox(&self, local: &str, max: u32) -> MailboxInfo {
        self.engine
            .create_mailbox(NewMailbox {
                address: Address::from_parts(local, DOMAIN).unwrap(),
                owner: Owner::Anonymous {
                    token_hash: [0; 32],
                },
                expires_at_ms: self.engine.now_ms() + 3_600_000,
                max_messages: max,
            })
            .await
            .unwrap()
    }

    fn stored(&self, mb: &MailboxInfo) -> Vec<Vec<u8>> {
        self.engine
            .list_messages(mb.id, 0, 1000)
            .unwrap()
            .into_iter()
            .map(|m| self.engine.read_raw(m.id).unwrap().to_vec())
            .collect()
    }

    /// Open a session from `ip` and return the client end (greeting not read).
    fn connect_from(&self, ip: &str) -> (Client, tokio::task::JoinHandle<&'static str>) {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let task = tokio::spawn(handle_connection(
            server,
            ip.parse::<IpAddr>().unwrap(),
            Arc::clone(&self.shared),
            self.shutdown.clone(),
        ));
        (Client::new(client), task)
    }

    /// Connect, check the greeting, EHLO.
    async fn ready(&self) -> (Client, tokio::task::JoinHandle<&'static str>) {
        let (mut c, t) = self.connect_from("192.0.2.1");
        assert!(c.reply().await.starts_with("220 mx.uncorreo.test"));
        let ehlo = c.cmd("EHLO client.example").await;
        assert!(ehlo.starts_with("250-mx.uncorreo.test"), "{ehlo}");
        (c, t)
    }
}

struct Client {
    r: BufReader<tokio::io::ReadHalf<DuplexStream>>,
    w: tokio::io::WriteHalf<DuplexStream>,
}

impl Client {
    fn new(s: DuplexStream) -> Self {
        let (r, w) = tokio::io::split(s);
        Self {
            r: BufReader::new(r),
            w,
        }
    }

    async fn send(&mut self, b: &[u8]) {
        self.w.write_all(b).await.unwrap();
    }

    /// One reply (multi-line joined with \n); "EOF" when closed.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).await.unwrap() == 0 {
                return if all.is_empty() {
                    "EOF".to_owned()
                } else {
                    all
                };
            }
            all.push_str(line.trim_end());
            if line.as_bytes().get(3) == Some(&b'-') {
                all.push('\n');
            } else {
                return all;
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    async fn expect(&mut self, line: &str, prefix: &str) {
        let r = self.cmd(line).await;
        assert!(r.starts_with(prefix), "{line:?} → {r:?}, wanted {prefix:?}");
    }
}

fn strip_received(raw: &[u8]) -> &[u8] {
    assert!(raw.starts_with(b"Received: from "));
    let end = raw.windows(7).position(|w| w == b"+0000\r\n").unwrap() + 7;
    &raw[end..]
}

#[tokio::test]
async fn ehlo_advertises_extensions_and_helo_is_plain() {
    let e = env(|_| {});
    let (mut c, _) = e.ready().await;
    let ehlo = c.cmd("EHLO again.example").await;
    let max = e.shared.max_message_bytes;
    for ext in [
        "250-PIPELINING".to_owned(),
        format!("250-SIZE {max}"),
        "250-8BITMIME".to_owned(),
        "250-SMTPUTF8".to_owned(),
        "250-ENHANCEDSTATUSCODES".to_owned(),
        "250-CHUNKING".to_owned(),
    ] {
        assert!(ehlo.lines().any(|l| l == ext), "{ext} missing in {ehlo}");
    }
    assert!(!ehlo.contains("STARTTLS"));
    c.expect("HELO old.example", "250 mx.uncorreo.test").await;
    c.expect("VRFY someone", "252 2.5.0").await;
    c.expect("HELP", "214 ").await;
    c.expect("EXPN list", "502 5.5.1").await;
    c.expect("STARTTLS", "502 5.5.1").await;
    c.expect("AUTH PLAIN", "502 5.5.1").await;
    c.expect("XYZZY", "500 5.5.1").await;
    c.expect("NOOP", "250 2.0.0").await;
    c.expect("QUIT", "221 2.0.0").await;
    assert_eq!(c.reply().await, "EOF");
}

#[tokio::test]
async fn sequence_errors() {
    let e = env(|_| {});
    e.mailbox("box", 10).await;
    let (mut c, _) = e.connect_from("192.0.2.1");
    c.reply().await;
    c.expect("MAIL FROM:<a@b.example>", "503 5.5.1").await;
    c.expect("EHLO c.example", "250-").await;
    c.expect("RCPT TO:<box@uncorreo.test>", "503 5.5.1").await;
    c.expect("DATA", "503 5.5.1").await;
    c.expect("MAIL FROM:<a@b.example>", "250 2.1.0").await;
    c.expect("MAIL FROM:<a@b.example>", "503 5.5.1").await;
    c.expect("DATA", "554 5.5.1").await;
    c.expect("RSET", "250 2.0.0").await;
    c.expect("MAIL FROM:<>", "250 2.1.0").await;
    c.expect("MAIL FROM:<a@b.example>", "503 5.5.1").await;
}

#[tokio::test]
async fn syntax_errors_have_their_codes() {
    let e = env(|c| c.max_errors = 100);
    let (mut c, _) = e.ready().await;
    c.expect("MAIL FROM:a@b", "501 5.1.7").await;
    c.expect("MAIL FROM:<a@b> XFORWARD=1", "555 5.5.4").await;
    c.expect("MAIL FROM:<jösé@b.example>", "553 5.6.7").await;
    c.expect("MAIL FROM:<a@b.example>", "250").await;
    c.expect("RCPT TO:<nobracket", "501 5.1.3").await;
    c.expect("RCPT TO:<a@uncorreo.test> XFOO=1", "555 5.5.4")
        .await;
    c.expect("BDAT x", "501 5.5.4").await;
    c.send(b"NOOP \0\r\n").await;
    assert!(c.reply().await.starts_with("500 5.5.2"));
}

#[tokio::test]
async fn rcpt_checks_map_resolve_errors() {
    let e = env(|c| c.max_errors = 100);
    e.mailbox("full", 0).await;
    e.mailbox("box", 10).await;
    let (mut c, _) = e.ready().await;
    c.expect("MAIL FROM:<a@b.example>", "250").await;
    c.expect("RCPT TO:<ghost@uncorreo.test>", "550 5.1.1").await;
    c.expect("RCPT TO:<x@elsewhere.example>", "550 5.7.1").await;
    c.expect("RCPT TO:<full@uncorreo.test>", "452 4.2.2").await;
    c.expect("RCPT TO:<bad..dots@uncorreo.test>", "501 5.1.3")
        .await;
    // Relay tricks never relay.
    c.expect("RCPT TO:<x%elsewhere.example@uncorreo.test>", "553 5.1.3")
        .await;
    c.expect("RCPT TO:<elsewhere.example!x@uncorreo.test>", "553 5.1.3")
        .await;
    c.expect(
        "RCPT TO:<\"x@elsewhere.example\"@uncorreo.test>",
        "553 5.1.3",
    )
    .await;
    c.expect("RCPT TO:<@uncorreo.test:x@elsewhere.example>", "550 5.7.1")
        .await;
    c.expect(
        "RCPT TO:<@elsewhere.example:box@uncorreo.test>",
        "550 5.7.1",
    )
    .await;
    c.expect("RCPT TO:<x@elsewhere.example@uncorreo.test>", "501 5.1.3")
        .await;
    c.expect("RCPT TO:<Box+Tag@UNCORREO.test>", "250 2.1.5")
        .await;
}

#[tokio::test]
async fn too_many_recipients_is_452_4_5_3() {
    let e = env(|c| c.max_recipients = 3);
    for i in 0..4 {
        e.mailbox(&format!("b{i}"), 10).await;
    }
    let (mut c, _) = e.ready().await;
    c.expect("MAIL FROM:<a@b.example>", "250").await;
    for i in 0..3 {
        c.expect(&format!("RCPT TO:<b{i}@uncorreo.test>"), "250 2.1.5")
            .await;
    }
    c.expect("RCPT TO:<b3@uncorreo.test>", "452 4.5.3").await;
}

#[tokio::test]
async fn error_limit_closes_with_421_4_7_0() {
    let e = env(|c| c.max_errors = 3);
    let (mut c, t) = e.ready().await;
    c.expect("BOGUS", "500").await;
    c.expect("BOGUS", "500").await;
    c.send(b"BOGUS\r\n").await;
    assert!(c.reply().await.starts_with("500"));
    assert!(c.reply().await.starts_with("421 4.7.0"));
    assert_eq!(c.reply().await, "EOF");
    assert_eq!(t.await.unwrap(), "too_many_errors");
}

#[tokio::test]
async fn overlong_command_line_is_500_5_5_2_and_the_session_goes_on() {
    let e = env(|c| c.max_line_bytes = 1000);
    let (mut c, _) = e.ready().await;
    let long = format!("NOOP {}", "x".repeat(995)); // 1000 + CRLF = 1002 octets
    c.expect(&long, "500 5.5.2").await;
    let huge = format!("NOOP {}", "x".repeat(200_000));
    c.expect(&huge, "500 5.5.2").await;
    let ok = format!("NOOP {}", "x".repeat(993)); // exactly 1000 with CRLF
    c.expect(&ok, "250").await;
}

async fn data_transaction(c: &mut Client, rcpt: &str, wire: &[u8]) -> String {
    c.expect("MAIL FROM:<a@b.example>", "250").await;
    c.expect(&format!("RCPT TO:<{rcpt}>"), "250").await;
    c.expect("DATA", "354").await;
    c.send(wire).await;
    c.reply().await
}

#[tokio::test]
async fn data_is_unstuffed_and_stored_with_received_in_front() {
    let e = env(|_| {});
    let mb = e.mailbox("box", 10).await;
    let (mut c, _) = e.ready().await;
    let r = data_transaction(
        &mut c,
        "box@uncorreo.test",
        b"Subject: x\r\n\r\n..dot\r\n.\r\n",
    )
    .await;
    // The reply names the id the API serves the message under.
    let listed = e.engine.list_messages(mb.id, 0, 10).unwrap();
    assert_eq!(r, format!("250 2.0.0 Ok: stored as {}", listed[0].id));
    let stored = e.stored(&mb);
    assert_eq!(strip_received(&stored[0]), b"Subject: x\r\n\r\n.dot\r\n");
    let header = String::from_utf8_lossy(&stored[0][..stored[0].len() - 22]);
    assert!(header.contains(" with ESMTP id "), "{header}");
    assert!(
        header.contains("from client.example ([192.0.2.1])"),
        "{header}"
    );
}

#[tokio::test]
async fn data_line_of_4097_octets_is_552_5_3_4() {
    let e = env(|_| {});
    let mb = e.mailbox("box", 10).await;
    let (mut c, _) = e.ready().await;
    let mut wire = b"Subject: x\r\n\r\n".to_vec();
    wire.extend(std::iter::repeat_n(b'a', 4095));
    wire.extend_from_slice(b"\r\n.\r\n");
    let r = data_transaction(&mut c, "box@uncorreo.test", &wire).await;
    assert!(r.starts_with("552 5.3.4"), "{r}");
    assert!(e.stored(&mb).is_empty());
    c.expect("NOOP", "250").await;
}

#[tokio::test]
async fn oversize_data_is_drained_then_552_5_3_4() {
    let e = env(|c| c.max_message_bytes = 10_000);
    let mb = e.mailbox("box", 10).await;
    let (mut c, _) = e.ready().await;
    c.expect("MAIL FROM:<a@b.example> SIZE=10001", "552 5.3.4")
        .await;
    c.expect(
        "MAIL FROM:<a@b.example> SIZE=99999999999999999999999999",
        "552 5.3.4",
    )
    .await;
    c.expect("MAIL FROM:<a@b.example> SIZE=100", "250").await;
    c.expect("RCPT TO:<box@uncorreo.test>", "250").await;
    c.expect("DATA", "354").await;
    // 1 MB of 100-octet lines: 100x the limit, sent while the server drains.
    let line = [vec![b'z'; 98], b"\r\n".to_vec()].concat();
    for _ in 0..10_000 {
        c.send(&line).await;
    }
    c.send(b".\r\n").await;
    let r = c.reply().await;
    assert!(r.starts_with("552 5.3.4"), "{r}");
    assert!(e.stored(&mb).is_empty());
    // The session is usable afterwards, the data was not read as commands.
    c.expect("NOOP", "250").await;
}

#[tokio::test]
async fn bare_lf_smuggling_is_one_refused_message() {
    let e = env(|_| {});
    let mb = e.mailbox("box", 10).await;
    let victim = e.mailbox("victim", 10).await;
    let (mut c, _) = e.ready().await;
    for smuggle in [
        &b"Subject: a\r\n\r\nbody\n.\nMAIL FROM:<x@y.example>\nRCPT TO:<victim@uncorreo.test>\nDATA\nSubject: forged\n\nhi\n"[..],
        b"Subject: a\r\n\r\nbody\r\n.\nMAIL FROM:<x@y.example>\r\nRCPT TO:<victim@uncorreo.test>\r\nDATA\r\nforged\r\n",
        b"Subject: a\r\n\r\nbody\n.\r\nMAIL FROM:<x@y.example>\r\nRCPT TO:<victim@uncorreo.test>\r\nDATA\r\nforged\r\n",
        b"Subject: a\r\n\r\nbody\r.\rMAIL FROM:<x@y.example>\rRCPT TO:<victim@uncorreo.test>\rDATA\rforged\r",
    ] {
        let mut wire = smuggle.to_vec();
        wire.extend_from_slice(b"\r\n.\r\n");
        let r = data_transaction(&mut c, "box@uncorreo.test", &wire).await;
        assert!(r.starts_with("550 5.6.0"), "{r}");
        // No reply for the smuggled commands: the next reply is our NOOP's.
        c.expect("NOOP", "250 2.0.0").await;
    }
    assert!(e.stored(&mb).is_empty());
    assert!(e.stored(&victim).is_empty());
}

#[tokio::test]
async fn bdat_chunks_and_refusals() {
    let e = env(|c| c.max_message_bytes = 1000);
    let mb = e.mailbox("box", 10).await;
    let (mut c, _) = e.ready().await;
    // Without MAIL the chunk is consumed, then refused.
    c.send(b"BDAT 12\r\nNOOP\r\nNOOP\r\n").await;
    assert!(c.reply().await.starts_with("503 5.5.1"));
    c.expect("NOOP", "250").await;
    // A pipelined BDAT transaction with a lone dot line (stored as sent: no stuffing in BDAT).
    c.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<box@uncorreo.test>\r\nBDAT 12\r\nSubject: x")
        .await;
    c.send(b"\r\nBDAT 9 LAST\r\n\r\n.\r\nok\r\n").await;
    assert!(c.reply().await.starts_with("250 2.1.0"));
    assert!(c.reply().await.starts_with("250 2.1.5"));
    assert_eq!(c.reply().await, "250 2.0.0 12 octets received");
    let r = c.reply().await;
    assert!(r.starts_with("250 2.0.0 Ok: stored as"), "{r}");
    assert_eq!(
        strip_received(&e.stored(&mb)[0]),
        b"Subject: x\r\n\r\n.\r\nok\r\n"
    );
    // A bare CR is refused in BDAT as in DATA, also across a chunk boundary (CR | x).
    c.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<box@uncorreo.test>\r\nBDAT 2\r\na\rBDAT 2 LAST\r\nb\n").await;
    for want in ["250 2.1.0", "250 2.1.5", "250 2.0.0 2 octets", "550 5.6.0"] {
        let r = c.reply().await;
        assert!(r.starts_with(want), "{r}");
    }
    // BDAT 0 LAST after a chunk.
    c.send(
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<box@uncorreo.test>\r\nBDAT 3\r\nabcBDAT 0 LAST\r\n",
    )
    .await;
    for want in [
        "250 2.1.0",
        "250 2.1.5",
        "250 2.0.0 3 octets",
        "250 2.0.0 Ok: stored as",
    ] {
        let r = c.reply().await;
        assert!(r.starts_with(want), "{r}");
    }
    assert_eq!(strip_received(&e.stored(&mb)[1]), b"abc");
    // Over the size limit: drained, then 552; the transaction is gone.
    c.expect("MAIL FROM:<a@b.example>", "250").await;
    c.expect("RCPT TO:<box@uncorreo.test>", "250").await;
    let mut chunk = b"BDAT 5000\r\n".to_vec();
    chunk.extend(std::iter::repeat_n(b'q', 5000));
    c.send(&chunk).await;
    assert!(c.reply().await.starts_with("552 5.3.4"));
    c.send(b"BDAT 1 LAST\r\nq").await;
    assert!(c.reply().await.starts_with("503 5.5.1"));
    c.expect("DATA", "503").await;
    assert_eq!(e.stored(&mb).len(), 2);
}

/// Counts writes on the server side, to check that pipelined replies are batched.
struct CountWrites<S> {
    inner: S,
    writes: Arc<AtomicUsize>,
}

impl<S: AsyncRead + Unpin> AsyncRead for CountWrites<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountWrites<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order_in_one_write() {
    let e = env(|_| {});
    let a = e.mailbox("a", 10).await;
    e.mailbox("b", 10).await;
    let (client, server) = tokio::io::duplex(256 * 1024);
    let writes = Arc::new(AtomicUsize::new(0));
    let server = CountWrites {
        inner: server,
        writes: Arc::clone(&writes),
    };
    tokio::spawn(handle_connection(
        server,
        "192.0.2.9".parse().unwrap(),
        Arc::clone(&e.shared),
        e.shutdown.clone(),
    ));
    let mut c = Client::new(client);
    assert!(c.reply().await.starts_with("220"));
    c.send(b"EHLO x.example\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<a@uncorreo.test>\r\nRCPT TO:<ghost@uncorreo.test>\r\nRCPT TO:<b@uncorreo.test>\r\nDATA\r\n").await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(c.reply().await[..3].to_owned());
    }
    assert_eq!(codes, ["250", "250", "250", "550", "250", "354"]);
    // The greeting, then all six replies in a single write.
    assert_eq!(writes.load(Ordering::SeqCst), 2);
    c.send(b"hello\r\n.\r\nQUIT\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: stored as"));
    assert!(c.reply().await.starts_with("221"));
    assert_eq!(strip_received(&e.stored(&a)[0]), b"hello\r\n");
}

#[tokio::test]
async fn a_recipient_accepted_at_rcpt_keeps_its_room_when_others_fill_the_mailbox() {
    let e = env(|_| {});
    let mb = e.mailbox("one", 1).await;
    let (mut c, _) = e.ready().await;
    c.expect("MAIL FROM:<a@b.example>", "250").await;
    c.expect("RCPT TO:<one@uncorreo.test>", "250").await;
    c.expect("DATA", "354").await;
    // Someone else tries to fill the mailbox between RCPT and the end of
    // data: the one message of room is held by this transaction.
    let other = e
        .engine
        .deliver(Delivery {
            raw: bytes::Bytes::from_static(
                b"x
",
            ),
            envelope_from: String::new(),
            recipients: vec![Recipient::parse("one@uncorreo.test").unwrap()],
            dedupe_key: None,
        })
        .await
        .unwrap();
    assert!(
        matches!(&other, DeliveryOutcome::Delivered { stored, refused }
            if stored.is_empty() && refused[0].1 == ResolveError::MailboxFull),
        "{other:?}"
    );
    c.send(b"late\r\n.\r\n").await;
    let reply = c.reply().await;
    assert!(reply.starts_with("250 2.0.0 Ok: stored as"), "{reply}");
    let stored = e.stored(&mb);
    assert_eq!(stored.len(), 1);
    assert_eq!(strip_received(&stored[0]), b"late\r\n");
}

#[tokio::test(start_paused = true)]
async fn idle_client_gets_421_4_4_2_after_the_command_timeout() {
    let e = env(|c| c.command_timeout = Duration::from_secs(300));
    let (mut c, t) = e.ready().await;
    let r = c.reply().await;
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert_eq!(t.await.unwrap(), "timeout");
}

#[tokio::test(start_paused = true)]
async fn slowloris_trickling_a_command_gets_421_4_4_2() {
    let e = env(|c| c.command_timeout = Duration::from_secs(300));
    let (mut c, t) = e.ready().await;
    // One byte a minute: each read is quick, the whole line never comes.
    for b in b"NOOP and so on and so on" {
        c.send(&[*b]).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        if t.is_finished() {
            break;
        }
    }
    assert!(c.reply().await.starts_with("421 4.4.2"));
    assert_eq!(t.await.unwrap(), "timeout");
}

#[tokio::test(start_paused = true)]
async fn stalled_data_gets_421_4_4_2_after_the_data_timeout() {
    let e = env(|c| c.data_timeout = Duration::from_secs(180));
    e.mailbox("box", 10).await;
    let (mut c, t) = e.ready().await;
    c.expect("MAIL FROM:<a@b.example>", "250").await;
    c.expect("RCPT TO:<box@uncorreo.test>", "250").await;
    c.expect("DATA", "354").await;
    c.send(b"Subject: half a message\r\n").await;
    assert!(c.reply().await.starts_with("421 4.4.2"));
    assert_eq!(t.await.unwrap(), "timeout");
}

#[tokio::test]
async fn connection_limits_answer_421_4_7_0() {
    let e = env(|c| {
        c.max_connections = 3;
        c.max_connections_per_ip = 2;
    });
    let (mut a, _ta) = e.connect_from("192.0.2.1");
    let (mut b, _tb) = e.connect_from("192.0.2.1");
    assert!(a.reply().await.starts_with("220"));
    assert!(b.reply().await.starts_with("220"));
    let (mut c, tc) = e.connect_from("192.0.2.1");
    assert!(c.reply().await.starts_with("421 4.7.0"));
    assert_eq!(tc.await.unwrap(), "too_many_connections");
    let (mut d, _td) = e.connect_from("192.0.2.2");
    assert!(d.reply().await.starts_with("220"));
    let (mut f, tf) = e.connect_from("192.0.2.3");
    assert!(f.reply().await.starts_with("421 4.7.0"));
    assert_eq!(tf.await.unwrap(), "too_many_connections");
    // A slot frees up when a session ends.
    a.expect("QUIT", "221").await;
    assert_eq!(a.reply().await, "EOF");
    _ta.await.unwrap();
    let (mut g, _tg) = e.connect_from("192.0.2.1");
    assert!(g.reply().await.starts_with("220"));
    assert_eq!(e.shared.active_sessions(), 3);
}

#[tokio::test]
async fn shutdown_tells_idle_sessions_421_and_lets_a_transaction_finish() {
    let e = env(|_| {});
    let mb = e.mailbox("box", 10).await;
    let (mut idle, ti) = e.ready().await;
    let (mut busy, tb) = e.ready().await;
    busy.expect("MAIL FROM:<a@b.example>", "250").await;
    busy.expect("RCPT TO:<box@uncorreo.test>", "250").await;
    e.shutdown.cancel();
    assert!(idle.reply().await.starts_with("421 4.3.2"));
    assert_eq!(ti.await.unwrap(), "shutdown");
    busy.expect("DATA", "354").await;
    busy.send(b"finished\r\n.\r\n").await;
    assert!(busy.reply().await.starts_with("250 2.0.0 Ok: stored as"));
    assert!(busy.reply().await.starts_with("421 4.3.2"));
    assert_eq!(tb.await.unwrap(), "shutdown");
    assert_eq!(e.stored(&mb).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_grace_bounds_a_stalled_transaction() {
    let e = env(|c| c.shutdown_grace = Duration::from_secs(30));
    e.mailbox("box", 10).await;
    let (mut busy, tb) = e.ready().await;
    busy.expect("MAIL FROM:<a@b.example>", "250").await;
    e.shutdown.cancel();
    let start = tokio::time::Instant::now();
    assert!(busy.reply().await.starts_with("421 4.3.2"));
    assert_eq!(tb.await.unwrap(), "shutdown");
    assert_eq!(start.elapsed().as_secs(), 30);
}

fn tls_env() -> (Env, rustls::pki_types::CertificateDer<'static>) {
    tls_env_with(|_| {})
}

fn tls_env_with(
    tweak: impl FnOnce(&mut SmtpConfig),
) -> (Env, rustls::pki_types::CertificateDer<'static>) {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["mx.uncorreo.test".to_owned()]).unwrap();
    let cp = dir.path().join("c.pem");
    let kp = dir.path().join("k.pem");
    std::fs::write(&cp, cert.cert.pem()).unwrap();
    std::fs::write(&kp, cert.signing_key.serialize_pem()).unwrap();
    let e = env(|c| {
        c.tls_cert = Some(cp.clone());
        c.tls_key = Some(kp.clone());
        tweak(c);
    });
    drop(dir);
    (e, cert.cert.der().clone())
}

#[tokio::test]
async fn starttls_resets_the_session_and_drops_injected_plaintext() {
    let (e, der) = tls_env();
    let mb = e.mailbox("box", 10).await;
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(handle_connection(
        server,
        "192.0.2.1".parse().unwrap(),
        Arc::clone(&e.shared),
        e.shutdown.clone(),
    ));
    let mut c = Client::new(client);
    c.reply().await;
    let ehlo = c.cmd("EHLO x.example").await;
    assert!(ehlo.contains("250-STARTTLS"), "{ehlo}");
    c.expect("MAIL FROM:<a@b.example>", "250").await;
    // CVE-2011-0411 style injection: a command pipelined after STARTTLS in plaintext.
    c.send(b"STARTTLS\r\nRCPT TO:<box@uncorreo.test>\r\n").await;
    assert!(c.reply().await.starts_with("220 2.0.0"));
    let stream = c.r.into_inner().unsplit(c.w);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("mx.uncorreo.test".try_into().unwrap(), stream)
        .await
        .unwrap();
    let (r, mut w) = tokio::io::split(tls);
    let mut r = BufReader::new(r);
    let mut say = async |line: &str| {
        w.write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
        let mut all = String::new();
        loop {
            let mut l = String::new();
            r.read_line(&mut l).await.unwrap();
            all.push_str(&l);
            if l.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    };
    // The injected RCPT was never executed and the transaction is gone.
    assert!(say("RCPT TO:<box@uncorreo.test>")
        .await
        .starts_with("503 5.5.1"));
    let ehlo = say("EHLO x.example").await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(say("STARTTLS").await.starts_with("503 5.5.1"));
    assert!(say("MAIL FROM:<a@b.example>").await.starts_with("250"));
    assert!(say("RCPT TO:<box@uncorreo.test>").await.starts_with("250"));
    assert!(say("DATA").await.starts_with("354"));
    assert!(say("secret\r\n.")
        .await
        .starts_with("250 2.0.0 Ok: stored as"));
    let raw = &e.stored(&mb)[0];
    assert!(String::from_utf8_lossy(raw).contains("with ESMTPS id"));
    assert_eq!(strip_received(raw), b"secret\r\n");
}

#[tokio::test]
async fn header_caps_and_mail_loops_are_refused() {
    let e = env(|c| {
        c.max_received_headers = 5;
        c.max_header_lines = 50;
        c.max_header_bytes = 4000;
    });
    let mb = e.mailbox("box", 10).await;
    let (mut c, _) = e.ready().await;
    let ok = "Received: from a\r\n".repeat(5) + "Subject: x\r\n\r\nbody\r\n.\r\n";
    let r = data_transaction(&mut c, "box@uncorreo.test", ok.as_bytes()).await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let looped = "Received: from a\r\n".repeat(6) + "Subject: x\r\n\r\nbody\r\n.\r\n";
    let r = data_transaction(&mut c, "box@uncorreo.test", looped.as_bytes()).await;
    assert!(r.starts_with("554 5.4.6"), "{r}");
    let many = "X-A: b\r\n".repeat(51) + "\r\nbody\r\n.\r\n";
    let r = data_transaction(&mut c, "box@uncorreo.test", many.as_bytes()).await;
    assert!(r.starts_with("552 5.3.4"), "{r}");
    let big = format!("X-A: {}\r\n", "b".repeat(900)).repeat(5) + "\r\nbody\r\n.\r\n";
    let r = data_transaction(&mut c, "box@uncorreo.test", big.as_bytes()).await;
    assert!(r.starts_with("552 5.3.4"), "{r}");
    assert_eq!(e.stored(&mb).len(), 1);
}

#[test]
fn tls_settings_must_come_in_pairs_and_parse() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig {
        data_dir: dir.path().to_path_buf(),
        ..EngineConfig::default()
    })
    .unwrap();
    let only_cert = SmtpConfig {
        tls_cert: Some(dir.path().join("c.pem")),
        ..SmtpConfig::default()
    };
    assert!(Shared::new(engine.clone(), only_cert).is_err());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem").unwrap();
    let bad = SmtpConfig {
        tls_cert: Some(garbage.clone()),
        tls_key: Some(garbage),
        ..SmtpConfig::default()
    };
    assert!(Shared::new(engine.clone(), bad).is_err());
    let limited = SmtpConfig {
        max_message_bytes: usize::MAX,
        ..SmtpConfig::default()
    };
    // Never more than the engine stores, minus room for our Received: line.
    let shared = Shared::new(engine.clone(), limited).unwrap();
    assert_eq!(
        shared.max_message_bytes,
        engine.config().max_message_bytes - uncorreo_smtpd::received::MAX_RECEIVED_BYTES
    );
}

mod fuzzish {
    use super::*;
    use proptest::prelude::*;

    fn fragment() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"EHLO x\r\n".to_vec()),
            Just(b"MAIL FROM:<a@b.example>\r\n".to_vec()),
            Just(b"RCPT TO:<box@uncorreo.test>\r\n".to_vec()),
            Just(b"DATA\r\n".to_vec()),
            Just(b"BDAT 5\r\n".to_vec()),
            Just(b"BDAT 3 LAST\r\n".to_vec()),
            Just(b"\r\n.\r\n".to_vec()),
            Just(b"RSET\r\n".to_vec()),
            Just(b"STARTTLS\r\n".to_vec()),
            Just(b"\n.\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..64),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever a client sends, the session answers with well-formed
        /// replies, never panics, and ends when the client hangs up.
        #[test]
        fn arbitrary_sessions_end_cleanly(parts in proptest::collection::vec(fragment(), 0..40)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let e = env(|c| c.max_errors = 1000);
                e.mailbox("box", 1000).await;
                let (client, server) = tokio::io::duplex(1 << 20);
                let task = tokio::spawn(handle_connection(
                    server,
                    "192.0.2.1".parse().unwrap(),
                    Arc::clone(&e.shared),
                    e.shutdown.clone(),
                ));
                let (r, mut w) = tokio::io::split(client);
                let reader = tokio::spawn(async move {
                    let mut r = BufReader::new(r);
                    let mut lines = Vec::new();
                    loop {
                        let mut line = Vec::new();
                        if r.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                            return lines;
                        }
                        lines.push(line);
                    }
                });
                for p in &parts {
                    if w.write_all(p).await.is_err() {
                        break;
                    }
                }
                let _ = w.shutdown().await;
                let outcome = task.await.unwrap();
                let lines = reader.await.unwrap();
                assert!(["client_closed", "quit", "too_many_errors", "io_error"].contains(&outcome), "{outcome}");
                for l in lines {
                    assert!(l.len() >= 5 && l.ends_with(b"\r\n"), "{l:?}");
                    assert!(l[..3].iter().all(u8::is_ascii_digit) && (l[3] == b' ' || l[3] == b'-'), "{l:?}");
                }
            });
        }
    }
}

/// Every published smuggling variant ([`SMUGGLING_VARIANTS`]) between a body
/// and a complete smuggled transaction, in both bare-LF modes.
#[tokio::test]
async fn smuggling_variants_are_one_message_or_refused_never_two() {
    for strict in [false, true] {
        let e = env(|c| {
            c.max_errors = 1000;
            if strict {
                c.bare_lf = uncorreo_smtpd::config::BareLf::Reject;
            }
        });
        let mb = e.mailbox("box", 100).await;
        let victim = e.mailbox("victim", 100).await;
        let (mut c, _) = e.ready().await;
        for (row, variant) in SMUGGLING_VARIANTS.iter().enumerate() {
            for smuggled_eol in [&b"\r\n"[..], b"\n"] {
                let before = e.stored(&mb).len();
                let smuggled = [
                    &b"MAIL FROM:<x@y.example>"[..],
                    b"RCPT TO:<victim@uncorreo.test>",
                    b"DATA",
                    b"Subject: smuggled",
                    b"",
                    b"forged",
                ]
                .join(smuggled_eol);
                let wire = [
                    &b"Subject: a\r\n\r\nbody"[..],
                    variant,
                    &smuggled,
                    b"\r\n.\r\n",
                ]
                .concat();
                let r = data_transaction(&mut c, "box@uncorreo.test", &wire).await;
                let case = format!("strict={strict} row {row} {variant:?} eol {smuggled_eol:?}");
                // Nothing smuggled was executed: the next reply is our NOOP's.
                c.expect("NOOP", "250 2.0.0 Ok").await;
                let stored = e.stored(&mb);
                assert!(e.stored(&victim).is_empty(), "{case}: victim got mail");
                if r.starts_with("250 2.0.0 Ok: stored as") {
                    assert_eq!(stored.len(), before + 1, "{case}");
                    let last = String::from_utf8_lossy(stored.last().unwrap()).into_owned();
                    assert!(
                        last.contains("RCPT TO:<victim@uncorreo.test>") && last.contains("forged"),
                        "{case}: stored message lacks the smuggled part: {last:?}"
                    );
                    assert!(
                        !uncorreo_smtpd::data::has_bare_line_end(stored.last().unwrap()),
                        "{case}: stored a bare line end"
                    );
                } else {
                    assert!(r.starts_with("550 5.6.0"), "{case}: {r}");
                    assert_eq!(stored.len(), before, "{case}");
                }
            }
        }
    }
}

#[tokio::test]
async fn bare_lf_is_stored_as_crlf_and_the_trace_header_says_so() {
    let e = env(|_| {});
    let mb = e.mailbox("box", 10).await;
    let (mut c, _) = e.ready().await;
    let r = data_transaction(
        &mut c,
        "box@uncorreo.test",
        b"Subject: lf\n\nline one\n..stuffed\nlast\r\n.\r\n",
    )
    .await;
    assert!(r.starts_with("250 2.0.0 Ok: stored as"), "{r}");
    let raw = &e.stored(&mb)[0];
    assert_eq!(
        strip_received(raw),
        b"Subject: lf\r\n\r\nline one\r\n.stuffed\r\nlast\r\n"
    );
    let text = String::from_utf8_lossy(raw);
    assert!(text.contains("(normalized 4 bare LF to CRLF)"), "{text}");
    // A CRLF message gets no such note.
    data_transaction(
        &mut c,
        "box@uncorreo.test",
        b"Subject: crlf\r\n\r\nx\r\n.\r\n",
    )
    .await;
    assert!(!String::from_utf8_lossy(&e.stored(&mb)[1]).contains("normalized"));
    // BDAT: the same policy over the whole body.
    c.send(
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<box@uncorreo.test>\r\nBDAT 11 LAST\r\nSubject:\na\n",
    )
    .await;
    for want in ["250 2.1.0", "250 2.1.5", "250 2.0.0 Ok: stored as"] {
        let r = c.reply().await;
        assert!(r.starts_with(want), "{r}");
    }
    let raw = &e.stored(&mb)[2];
    assert_eq!(strip_received(raw), b"Subject:\r\na\r\n");
    assert!(String::from_utf8_lossy(raw).contains("(normalized 2 bare LF to CRLF)"));
    // A bare CR stays refused.
    let r = data_transaction(&mut c, "box@uncorreo.test", b"a\rb\r\n.\r\n").await;
    assert!(r.starts_with("550 5.6.0 Bare CR"), "{r}");
}

#[tokio::test]
async fn strict_mode_refuses_bare_lf() {
    let e = env(|c| c.bare_lf = uncorreo_smtpd::config::BareLf::Reject);
    let mb = e.mailbox("box", 10).await;
    let (mut c, _) = e.ready().await;
    let r = data_transaction(&mut c, "box@uncorreo.test", b"Subject: lf\n\nx\r\n.\r\n").await;
    assert!(r.starts_with("550 5.6.0 Bare CR or LF"), "{r}");
    c.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<box@uncorreo.test>\r\nBDAT 2 LAST\r\na\n")
        .await;
    for want in ["250 2.1.0", "250 2.1.5", "550 5.6.0"] {
        let r = c.reply().await;
        assert!(r.starts_with(want), "{r}");
    }
    assert!(e.stored(&mb).is_empty());
}

#[tokio::test]
async fn dsn_parameters_are_accepted_or_refused_by_name() {
    let e = env(|_| {});
    let mb = e.mailbox("box", 10).await;
    let (mut c, _) = e.ready().await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(ehlo.lines().any(|l| l == "250-DSN"), "{ehlo}");
    c.expect(
        "MAIL FROM:<a@b.example> REQUIRETLS",
        "555 5.5.4 REQUIRETLS not supported",
    )
    .await;
    c.expect(
        "MAIL FROM:<a@b.example> RET=MOST",
        "501 5.5.4 Bad RET value",
    )
    .await;
    c.expect(
        "MAIL FROM:<a@b.example> RET=HDRS ENVID=abc+2B1",
        "250 2.1.0",
    )
    .await;
    c.expect(
        "RCPT TO:<box@uncorreo.test> NOTIFY=NEVER,DELAY",
        "501 5.5.4 Bad NOTIFY value",
    )
    .await;
    c.expect(
        "RCPT TO:<box@uncorreo.test> NOTIFY=SUCCESS NOTIFY=DELAY",
        "501 5.5.4 Duplicate NOTIFY parameter",
    )
    .await;
    c.expect(
        "RCPT TO:<box@uncorreo.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;box+40uncorreo.test",
        "250 2.1.5",
    )
    .await;
    c.expect("DATA", "354").await;
    c.send(b"Subject: dsn\r\n\r\nx\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: stored as"));
    assert_eq!(e.stored(&mb).len(), 1);
}

async fn auth_cmd(c: &mut Client, mechanism: &str, user: &str, password: &str) -> String {
    use base64::Engine as _;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    match mechanism {
        "PLAIN" => {
            let blob = b64(format!("\0{user}\0{password}").as_bytes());
            c.cmd(&format!("AUTH PLAIN {blob}")).await
        }
        _ => {
            let r = c.cmd("AUTH LOGIN").await;
            assert_eq!(r, "334 VXNlcm5hbWU6");
            let r = c.cmd(&b64(user.as_bytes())).await;
            assert_eq!(r, "334 UGFzc3dvcmQ6");
            c.cmd(&b64(password.as_bytes())).await
        }
    }
}

#[tokio::test]
async fn auth_off_is_not_advertised_and_plaintext_needs_the_switch() {
    let e = env(|c| c.auth = uncorreo_smtpd::config::AuthMode::AcceptAny);
    let (mut c, _) = e.ready().await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    c.expect("AUTH PLAIN AGEAYg==", "538 5.7.11").await;
    let e = env(|_| {});
    let (mut c, _) = e.ready().await;
    c.expect("AUTH PLAIN AGEAYg==", "502 5.5.1").await;
}

#[tokio::test]
async fn auth_accept_any_takes_plain_and_login() {
    let e = env(|c| {
        c.auth = uncorreo_smtpd::config::AuthMode::AcceptAny;
        c.auth_allow_plaintext = true;
    });
    let mb = e.mailbox("box", 10).await;
    for mechanism in ["PLAIN", "LOGIN"] {
        let (mut c, _) = e.ready().await;
        let ehlo = c.cmd("EHLO client.example").await;
        assert!(ehlo.lines().any(|l| l == "250-AUTH PLAIN LOGIN"), "{ehlo}");
        c.expect("AUTH CRAM-MD5", "504 5.5.4").await;
        c.expect("MAIL FROM:<a@b.example>", "250").await;
        c.expect("AUTH PLAIN AGEAYg==", "503 5.5.1").await;
        c.expect("RSET", "250").await;
        let r = auth_cmd(&mut c, mechanism, "anyone", "anything").await;
        assert!(r.starts_with("235 2.7.0"), "{mechanism}: {r}");
        c.expect("AUTH PLAIN AGEAYg==", "503 5.5.1 Already").await;
        let ehlo = c.cmd("EHLO client.example").await;
        assert!(!ehlo.contains("AUTH"), "{ehlo}");
        let r = data_transaction(&mut c, "box@uncorreo.test", b"x\r\n.\r\n").await;
        assert!(r.starts_with("250 2.0.0 Ok: stored as"), "{r}");
    }
    for raw in e.stored(&mb) {
        assert!(String::from_utf8_lossy(&raw).contains("with ESMTPA id"));
    }
    // PLAIN without an initial response, then cancelled; garbage is 501.
    let (mut c, _) = e.ready().await;
    assert_eq!(c.cmd("AUTH PLAIN").await, "334");
    c.expect("*", "501 5.7.0").await;
    c.expect("AUTH PLAIN !!!", "501 5.5.2").await;
    c.expect("AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    c.expect("*", "501 5.7.0").await;
    c.expect("NOOP", "250").await;
}

#[tokio::test]
async fn auth_keys_takes_api_keys_and_session_tokens_and_limits_rcpt_to_owned_mailboxes() {
    use sha2::{Digest, Sha256};
    let e = env(|c| {
        c.auth = uncorreo_smtpd::config::AuthMode::Keys;
        c.auth_allow_plaintext = true;
        c.max_auth_failures = 3;
    });
    let hash = |s: &str| -> [u8; 32] { Sha256::digest(s.as_bytes()).into() };
    let user = e.engine.create_user("dev".into()).await.unwrap();
    e.engine
        .create_api_key(user.id, hash("uct_good_key"), "uct_good_key".into())
        .await
        .unwrap();
    let create = |local: &str, owner: Owner| NewMailbox {
        address: Address::from_parts(local, DOMAIN).unwrap(),
        owner,
        expires_at_ms: e.engine.now_ms() + 3_600_000,
        max_messages: 10,
    };
    let users_box = e
        .engine
        .create_mailbox(create("mine", Owner::User(user.id)))
        .await
        .unwrap();
    let token_box = e
        .engine
        .create_mailbox(create(
            "anon",
            Owner::Anonymous {
                token_hash: hash("session-token"),
            },
        ))
        .await
        .unwrap();
    let _other = e.mailbox("other", 10).await;

    // An API key, any user name: only the user's mailboxes.
    let (mut c, _) = e.ready().await;
    let r = auth_cmd(&mut c, "PLAIN", "whoever", "uct_good_key").await;
    assert!(r.starts_with("235 2.7.0"), "{r}");
    c.expect("MAIL FROM:<a@b.example>", "250").await;
    c.expect("RCPT TO:<other@uncorreo.test>", "550 5.7.1").await;
    c.expect("RCPT TO:<anon@uncorreo.test>", "550 5.7.1").await;
    c.expect("RCPT TO:<ghost@uncorreo.test>", "550 5.1.1").await;
    c.expect("RCPT TO:<mine+tag@uncorreo.test>", "250").await;
    c.expect("DATA", "354").await;
    c.send(b"x\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: stored as"));
    assert_eq!(e.stored(&users_box).len(), 1);

    // A session token with its mailbox's address as the user name.
    let (mut c, _) = e.ready().await;
    let r = auth_cmd(&mut c, "LOGIN", "anon@uncorreo.test", "session-token").await;
    assert!(r.starts_with("235 2.7.0"), "{r}");
    c.expect("MAIL FROM:<a@b.example>", "250").await;
    c.expect("RCPT TO:<mine@uncorreo.test>", "550 5.7.1").await;
    c.expect("RCPT TO:<anon@uncorreo.test>", "250").await;
    c.expect("RSET", "250").await;

    // Wrong credentials: 535 5.7.8, counted per IP; then 421 even on a new connection.
    let (mut c, _) = e.ready().await;
    for (user, password) in [
        ("anon@uncorreo.test", "wrong-token"),
        ("other@uncorreo.test", "session-token"),
        ("x", "uct_revoked_or_unknown"),
    ] {
        let r = auth_cmd(&mut c, "PLAIN", user, password).await;
        assert!(r.starts_with("535 5.7.8"), "{user}: {r}");
    }
    c.expect("AUTH PLAIN AGEAYg==", "421 4.7.0").await;
    assert_eq!(c.reply().await, "EOF");
    let (mut c, _) = e.ready().await;
    let r = auth_cmd(&mut c, "PLAIN", "whoever", "uct_good_key").await;
    assert!(r.starts_with("421 4.7.0"), "{r}");
    // Another IP is not affected.
    let (mut c, _) = e.connect_from("192.0.2.9");
    c.reply().await;
    c.expect("EHLO client.example", "250").await;
    let r = auth_cmd(&mut c, "PLAIN", "whoever", "uct_good_key").await;
    assert!(r.starts_with("235"), "{r}");
    assert_eq!(e.stored(&token_box).len(), 0);
}

#[tokio::test]
async fn implicit_tls_greets_inside_tls_and_offers_auth_there() {
    let (e, der) = tls_env_with(|c| c.auth = uncorreo_smtpd::config::AuthMode::AcceptAny);
    let mb = e.mailbox("box", 10).await;
    let (client, server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(uncorreo_smtpd::handle_implicit_tls_connection(
        server,
        "192.0.2.1".parse().unwrap(),
        Arc::clone(&e.shared),
        e.shutdown.clone(),
    ));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("mx.uncorreo.test".try_into().unwrap(), client)
        .await
        .unwrap();
    let (r, mut w) = tokio::io::split(tls);
    let mut r = BufReader::new(r);
    let mut greeting = String::new();
    r.read_line(&mut greeting).await.unwrap();
    assert!(greeting.starts_with("220 mx.uncorreo.test"), "{greeting}");
    let mut say = async |line: &str| {
        w.write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
        let mut all = String::new();
        loop {
            let mut l = String::new();
            r.read_line(&mut l).await.unwrap();
            all.push_str(&l);
            if l.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    };
    let ehlo = say("EHLO x.example").await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(ehlo.contains("250-AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(say("AUTH PLAIN AGEAYg==").await.starts_with("235"));
    assert!(say("MAIL FROM:<a@b.example>").await.starts_with("250"));
    assert!(say("RCPT TO:<box@uncorreo.test>").await.starts_with("250"));
    assert!(say("DATA").await.starts_with("354"));
    assert!(say("over tls\r\n.")
        .await
        .starts_with("250 2.0.0 Ok: stored as"));
    assert!(say("QUIT").await.starts_with("221"));
    assert_eq!(task.await.unwrap(), "quit");
    let raw = &e.stored(&mb)[0];
    assert!(String::from_utf8_lossy(raw).contains("with ESMTPSA id"));
}

#[test]
fn implicit_tls_needs_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig {
        data_dir: dir.path().to_path_buf(),
        domains: vec![DOMAIN.to_owned()],
        min_free_bytes: 0,
        ..EngineConfig::default()
    })
    .unwrap();
    let config = SmtpConfig {
        tls_listen: Some("127.0.0.1:0".into()),
        ..SmtpConfig::default()
    };
    let err = Shared::new(engine, config).err().unwrap();
    assert!(err.to_string().contains("tls_listen"), "{err}");
}

#[tokio::test]
async fn bodies_past_the_byte_budget_get_452_4_3_1_and_release_what_they_held() {
    let budget = uncorreo_budget::Budget::new(64 * 1024);
    let e = env_with_budget(|_| {}, budget.clone());
    let mb = e.mailbox("box", 10).await;
    let (mut c, _) = e.ready().await;
    // A declared size that does not fit: refused before 354, transaction kept.
    c.expect("MAIL FROM:<a@b.example> SIZE=70000", "250").await;
    c.expect("RCPT TO:<box@uncorreo.test>", "250").await;
    c.expect("DATA", "452 4.3.1").await;
    c.expect("RSET", "250").await;
    // A BDAT chunk that does not fit: drained, 452, transaction gone.
    c.expect("MAIL FROM:<a@b.example>", "250").await;
    c.expect("RCPT TO:<box@uncorreo.test>", "250").await;
    let mut chunk = b"BDAT 30000\r\n".to_vec();
    chunk.extend(std::iter::repeat_n(b'q', 30000));
    c.send(&chunk).await;
    assert!(c.reply().await.starts_with("250 2.0.0 30000 octets"));
    let mut chunk = b"BDAT 70000 LAST\r\n".to_vec();
    chunk.extend(std::iter::repeat_n(b'q', 70000));
    c.send(&chunk).await;
    let r = c.reply().await;
    assert!(r.starts_with("452 4.3.1"), "{r}");
    c.expect("NOOP", "250").await;
    // An undeclared DATA body that outgrows it: drained to the end, 452.
    c.expect("MAIL FROM:<a@b.example>", "250").await;
    c.expect("RCPT TO:<box@uncorreo.test>", "250").await;
    c.expect("DATA", "354").await;
    let mut body = Vec::new();
    for _ in 0..1000 {
        body.extend_from_slice(
            b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
        );
    }
    body.extend_from_slice(b".\r\n");
    c.send(&body).await;
    let r = c.reply().await;
    assert!(r.starts_with("452 4.3.1"), "{r}");
    assert_eq!(budget.in_flight(), 0);
    // What fits is taken.
    c.expect("MAIL FROM:<a@b.example>", "250").await;
    c.expect("RCPT TO:<box@uncorreo.test>", "250").await;
    c.expect("DATA", "354").await;
    c.send(b"Subject: fits\r\n\r\nsmall\r\n.\r\n").await;
    let r = c.reply().await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    assert_eq!(e.stored(&mb).len(), 1);
    assert_eq!(budget.in_flight(), 0);
}
