//! The SMTP session state machine, generic over any byte stream so tests
//! drive it in memory (`tokio::io::duplex`) and assert reply codes.
//!
//! States: greeted → (EHLO/HELO) → ready → (MAIL) → in transaction →
//! (RCPT…) → (DATA | BDAT… LAST) → delivered, back to ready. `STARTTLS`
//! hands the raw stream back to [`crate::handle_connection`], which runs a
//! fresh session (before-EHLO, RFC 3207 §4.2) over TLS.
//!
//! Architecture invariant: the only reply that says a message was taken is
//! `250 2.0.0 Ok: queued as …`, and it is sent only after
//! `Engine::deliver` returned `Ok` with at least one stored copy — i.e. after
//! the bytes are durable. Every engine error maps to a reply that makes the
//! client keep the message (`451 4.3.0`) or bounce it (`5xx`), never to 250.
//!
//! Partial refusals: when some recipients were refused at commit time (their
//! mailbox expired or filled up between RCPT and the end of DATA) and others
//! got their copy, the reply is still 250 — SMTP has one reply per DATA, and a
//! 4xx would make the client re-deliver duplicates to the recipients that got
//! it. The refusals are logged and counted.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uncorreo_engine::{DeliverError, Delivery, DeliveryOutcome, Recipient, ResolveError};

use crate::conn::{Conn, Line, Stop, Wait};
use crate::data::{DataDecoder, DataError};
use crate::headers::{self, HeaderError, HeaderLimits};
use crate::parse::{parse_command, Command, ParseError};
use crate::received::{self, Trace};
use crate::Shared;

/// Initial room for a DATA body; it grows from there up to the size limit.
const BODY_RESERVE: usize = 16 * 1024;

/// How a session ended.
pub enum End<S> {
    /// Closed; the label says why (for `uncorreo_smtp_sessions_total{outcome}`).
    Closed(&'static str),
    /// The client asked for STARTTLS and got `220`: upgrade this stream.
    StartTls(S),
}

struct Transaction {
    from: String,
    rcpts: Vec<(String, Recipient)>,
    /// Body collected from BDAT chunks so far (starts with our Received line
    /// once the first chunk arrives).
    bdat: Option<Vec<u8>>,
    /// Octets of BDAT body seen, kept or not.
    bdat_size: u64,
    bdat_too_big: bool,
    /// Transaction id, chosen when the body starts.
    id: String,
}

/// One SMTP session over `S`.
pub struct Session<S> {
    conn: Conn<S>,
    shared: Arc<Shared>,
    peer: IpAddr,
    shutdown: CancellationToken,
    tls: bool,
    helo: Option<(String, bool)>,
    tx: Option<Transaction>,
    errors: u32,
}

enum Flow {
    Continue,
    Close(&'static str),
    StartTls,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// A session for a client at `peer`; `tls` is true after STARTTLS.
    pub fn new(
        stream: S,
        shared: Arc<Shared>,
        peer: IpAddr,
        shutdown: CancellationToken,
        tls: bool,
    ) -> Self {
        let conn = Conn::new(
            stream,
            shared.config.max_line_bytes.max(64),
            shared.config.command_timeout,
        );
        Self {
            conn,
            shared,
            peer,
            shutdown,
            tls,
            helo: None,
            tx: None,
            errors: 0,
        }
    }

    fn hostname(&self) -> &str {
        &self.shared.config.hostname
    }

    /// Read more input, waiting at most `timeout` (see [`Wait`] for shutdown).
    async fn fill(&mut self, timeout: Duration) -> Result<usize, Stop> {
        let wait = Wait {
            deadline: Instant::now() + timeout,
            shutdown: &self.shutdown,
            idle: self.tx.is_none(),
            grace: self.shared.config.shutdown_grace,
        };
        self.conn.fill(wait).await
    }

    /// Run until the client quits, a limit closes the session, or STARTTLS.
    /// `greet` is false after a TLS upgrade (no second banner).
    pub async fn run(mut self, greet: bool) -> End<S> {
        if greet {
            let banner = format!("220 {} ESMTP uncorreo", self.hostname());
            self.conn.reply(&banner);
        }
        let end = loop {
            if self.shutdown.is_cancelled() {
                self.conn
                    .limit_write_timeout(self.shared.config.shutdown_grace);
            }
            if self.shutdown.is_cancelled() && self.tx.is_none() {
                break self.close_with("421 4.3.2 Service shutting down", "shutdown");
            }
            let wait = Wait {
                deadline: Instant::now() + self.shared.config.command_timeout,
                shutdown: &self.shutdown,
                idle: self.tx.is_none(),
                grace: self.shared.config.shutdown_grace,
            };
            let line = match self.conn.read_line(wait).await {
                Ok(line) => line,
                Err(stop) => break self.stopped(stop),
            };
            let flow = match line {
                Line::TooLong => {
                    self.error("500 5.5.2 Line too long");
                    Flow::Continue
                }
                Line::Ok { start, end } => {
                    let parsed = parse_command(self.conn.slice(start, end));
                    let is_mail = self
                        .conn
                        .slice(start, end)
                        .get(..4)
                        .is_some_and(|v| v.eq_ignore_ascii_case(b"MAIL"));
                    self.conn.settle();
                    match parsed {
                        Ok(cmd) => self.command(cmd).await,
                        Err(e) => {
                            self.parse_error(e, is_mail);
                            Flow::Continue
                        }
                    }
                }
            };
            match flow {
                Flow::Continue => {}
                Flow::Close(why) => {
                    self.conn.close().await;
                    return End::Closed(why);
                }
                Flow::StartTls => {
                    if self.conn.flush().await.is_err() {
                        return End::Closed("io_error");
                    }
                    return End::StartTls(self.conn.into_inner());
                }
            }
            if self.errors >= self.shared.config.max_errors {
                break self.close_with("421 4.7.0 Too many errors, closing", "too_many_errors");
            }
            if self.conn.wants_flush() && self.conn.flush().await.is_err() {
                break "io_error";
            }
        };
        self.conn.close().await;
        End::Closed(end)
    }

    fn close_with(&mut self, reply: &str, why: &'static str) -> &'static str {
        let reply = format!("{} {}", reply, self.shared.config.hostname);
        self.conn.reply(&reply);
        why
    }

    fn stopped(&mut self, stop: Stop) -> &'static str {
        match stop {
            Stop::Eof => "client_closed",
            Stop::Io => "io_error",
            Stop::Timeout => self.close_with("421 4.4.2 Timeout, closing", "timeout"),
            Stop::Shutdown => self.close_with("421 4.3.2 Service shutting down", "shutdown"),
        }
    }

    /// Queue an error reply and count it toward the error limit (5xx only:
    /// temporary refusals like `452 4.5.3` are a normal part of a big send).
    fn error(&mut self, reply: &str) {
        if reply.starts_with('5') {
            self.errors += 1;
        }
        self.conn.reply(reply);
    }

    fn parse_error(&mut self, e: ParseError, is_mail: bool) {
        let reply = match e {
            ParseError::Unknown => "500 5.5.1 Command not recognized",
            ParseError::Syntax(_) => "501 5.5.4 Syntax error in parameters or arguments",
            ParseError::BadPath if is_mail => "501 5.1.7 Bad sender address syntax",
            ParseError::BadPath => "501 5.1.3 Bad recipient address syntax",
            ParseError::BadParam => "555 5.5.4 Parameter not recognized or not implemented",
            _ => "500 5.5.2 Invalid characters in command",
        };
        self.error(reply);
    }

    fn max_message(&self) -> usize {
        self.shared.max_message_bytes
    }

    async fn command(&mut self, cmd: Command) -> Flow {
        match cmd {
            Command::Ehlo(name) => {
                self.tx = None;
                self.helo = Some((name.clone(), true));
                let mut lines = vec![
                    format!("{} Hello {}", self.hostname(), name),
                    "PIPELINING".to_owned(),
                    format!("SIZE {}", self.max_message()),
                    "8BITMIME".to_owned(),
                    "SMTPUTF8".to_owned(),
                    "ENHANCEDSTATUSCODES".to_owned(),
                    "CHUNKING".to_owned(),
                ];
                if self.shared.tls.is_some() && !self.tls {
                    lines.push("STARTTLS".to_owned());
                }
                lines.push("HELP".to_owned());
                let last = lines.len() - 1;
                for (i, l) in lines.iter().enumerate() {
                    let sep = if i == last { ' ' } else { '-' };
                    self.conn.reply(&format!("250{sep}{l}"));
                }
                Flow::Continue
            }
            Command::Helo(name) => {
                self.tx = None;
                self.helo = Some((name, false));
                let r = format!("250 {}", self.hostname());
                self.conn.reply(&r);
                Flow::Continue
            }
            Command::Mail { from, params } => {
                if self.helo.is_none() {
                    self.error("503 5.5.1 Send EHLO or HELO first");
                } else if self.tx.is_some() {
                    self.error("503 5.5.1 Nested MAIL command");
                } else if params.size.is_some_and(|s| s > self.max_message() as u64) {
                    self.error("552 5.3.4 Message size exceeds fixed maximum message size");
                } else if from.is_utf8() && !params.smtputf8 {
                    self.error("553 5.6.7 Non-ASCII address requires SMTPUTF8");
                } else if !self.shared.engine_healthy() {
                    self.conn
                        .reply("451 4.3.0 Storage unavailable, try again later");
                } else {
                    self.tx = Some(Transaction {
                        from: from.address,
                        rcpts: Vec::new(),
                        bdat: None,
                        bdat_size: 0,
                        bdat_too_big: false,
                        id: String::new(),
                    });
                    self.conn.reply("250 2.1.0 Ok");
                }
                Flow::Continue
            }
            Command::Rcpt { to } => {
                let max = self.shared.config.max_recipients;
                let Some(tx) = self.tx.as_mut() else {
                    self.error("503 5.5.1 Need MAIL before RCPT");
                    return Flow::Continue;
                };
                if tx.bdat.is_some() {
                    self.error("503 5.5.1 RCPT after BDAT");
                    return Flow::Continue;
                }
                if tx.rcpts.len() >= max {
                    self.conn.reply("452 4.5.3 Too many recipients");
                    return Flow::Continue;
                }
                if to.had_route {
                    self.error("550 5.7.1 Source routes are not accepted; relay not permitted");
                    return Flow::Continue;
                }
                match self.shared.engine.resolve(&to.address) {
                    Ok(r) => {
                        if !tx.rcpts.iter().any(|(_, have)| *have == r) {
                            tx.rcpts.push((to.address, r));
                        }
                        self.conn.reply("250 2.1.5 Ok");
                    }
                    Err(e) => {
                        let reply = resolve_reply(e);
                        self.error(reply);
                    }
                }
                Flow::Continue
            }
            Command::Data => self.data().await,
            Command::Bdat { size, last } => self.bdat(size, last).await,
            Command::Rset => {
                self.tx = None;
                self.conn.reply("250 2.0.0 Ok");
                Flow::Continue
            }
            Command::Noop => {
                self.conn.reply("250 2.0.0 Ok");
                Flow::Continue
            }
            Command::Quit => {
                let r = format!("221 2.0.0 {} closing connection", self.hostname());
                self.conn.reply(&r);
                Flow::Close("quit")
            }
            Command::Vrfy => {
                self.conn.reply(
                    "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
                );
                Flow::Continue
            }
            Command::Expn => {
                self.error("502 5.5.1 EXPN not available");
                Flow::Continue
            }
            Command::Help => {
                self.conn.reply(
                    "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS",
                );
                Flow::Continue
            }
            Command::StartTls => {
                if self.tls {
                    self.error("503 5.5.1 TLS already active");
                    Flow::Continue
                } else if self.shared.tls.is_none() {
                    self.error("502 5.5.1 STARTTLS not available");
                    Flow::Continue
                } else {
                    // RFC 3207 §6: plaintext pipelined after STARTTLS must not
                    // be executed inside the TLS session (command injection).
                    self.conn.discard_buffered();
                    self.conn.reply("220 2.0.0 Ready to start TLS");
                    Flow::StartTls
                }
            }
            Command::Auth => {
                self.error("502 5.5.1 AUTH not available");
                Flow::Continue
            }
        }
    }

    fn trace_header(&self, id: &str) -> String {
        let (helo, esmtp) = self
            .helo
            .as_ref()
            .map(|(h, e)| (h.as_str(), *e))
            .unwrap_or(("unknown", false));
        let protocol = match (esmtp, self.tls) {
            (_, true) => "ESMTPS",
            (true, false) => "ESMTP",
            (false, false) => "SMTP",
        };
        let single = match self.tx.as_ref().map(|t| t.rcpts.as_slice()) {
            Some([(written, _)]) => Some(written.as_str()),
            _ => None,
        };
        received::received(&Trace {
            helo,
            peer: self.peer,
            hostname: self.hostname(),
            protocol,
            id,
            single_rcpt: single,
            unix_secs: received::now_unix(),
        })
    }

    /// Check that DATA may start; queue the refusal otherwise.
    fn may_start_body(&mut self) -> bool {
        match self.tx.as_ref() {
            None => {
                self.error("503 5.5.1 Need MAIL command");
                false
            }
            Some(tx) if tx.rcpts.is_empty() => {
                self.error("554 5.5.1 No valid recipients");
                false
            }
            Some(tx) if tx.bdat.is_some() => {
                self.error("503 5.5.1 DATA after BDAT");
                false
            }
            Some(_) if !self.shared.engine_healthy() => {
                self.conn
                    .reply("451 4.3.0 Storage unavailable, try again later");
                false
            }
            Some(_) => true,
        }
    }

    async fn data(&mut self) -> Flow {
        if !self.may_start_body() {
            return Flow::Continue;
        }
        self.conn.reply("354 End data with <CR><LF>.<CR><LF>");
        let id = self.shared.next_id();
        let mut body = self.trace_header(&id).into_bytes();
        body.reserve(self.max_message().min(BODY_RESERVE));
        let mut decoder = DataDecoder::new(self.max_message(), self.shared.config.max_line_bytes);
        loop {
            let fed = decoder.feed(self.conn.buffered(), &mut body);
            self.conn.consume(fed.consumed);
            if fed.done {
                break;
            }
            if let Err(stop) = self.fill(self.shared.config.data_timeout).await {
                metrics::counter!("uncorreo_smtp_bytes_total").increment(decoder.raw_len());
                return Flow::Close(self.stopped(stop));
            }
        }
        metrics::counter!("uncorreo_smtp_bytes_total").increment(decoder.raw_len());
        match decoder.error() {
            Some(DataError::TooBig) | Some(DataError::LineTooLong) => {
                let reply = match decoder.error() {
                    Some(DataError::LineTooLong) => {
                        "552 5.3.4 Line too long (max 1000 octets incl. CRLF per RFC 5321)"
                    }
                    _ => "552 5.3.4 Message size exceeds fixed maximum message size",
                };
                self.tx = None;
                count_message("rejected");
                self.error(reply);
                Flow::Continue
            }
            Some(DataError::BareLineEnd) => {
                self.tx = None;
                count_message("rejected");
                self.error("550 5.6.0 Bare CR or LF in message; lines must end with CRLF");
                Flow::Continue
            }
            None => self.deliver(id, body).await,
        }
    }

    async fn bdat(&mut self, size: u64, last: bool) -> Flow {
        // Whatever the state, the chunk's octets follow the command and must
        // be consumed so they are never read as commands (RFC 3030 §4).
        let accept = match self.tx.as_ref() {
            None => Err("503 5.5.1 Need MAIL command"),
            Some(tx) if tx.rcpts.is_empty() => Err("554 5.5.1 No valid recipients"),
            Some(_) => Ok(()),
        };
        let max = self.max_message() as u64;
        if accept.is_ok() && self.tx.as_ref().is_some_and(|t| t.bdat.is_none()) {
            let id = self.shared.next_id();
            let header = self.trace_header(&id);
            if let Some(tx) = self.tx.as_mut() {
                tx.bdat = Some(header.into_bytes());
                tx.id = id;
            }
        }
        let mut left = size;
        loop {
            let take = (self.conn.buffered().len() as u64).min(left) as usize;
            if take > 0 {
                if let (Ok(()), Some(tx)) = (accept, self.tx.as_mut()) {
                    tx.bdat_size += take as u64;
                    if tx.bdat_size > max {
                        tx.bdat_too_big = true;
                        tx.bdat = Some(Vec::new());
                    } else if let Some(buf) = tx.bdat.as_mut() {
                        buf.extend_from_slice(self.conn.buffered().get(..take).unwrap_or(&[]));
                    }
                }
                self.conn.consume(take);
                left -= take as u64;
            }
            if left == 0 {
                break;
            }
            if let Err(stop) = self.fill(self.shared.config.data_timeout).await {
                metrics::counter!("uncorreo_smtp_bytes_total").increment(size - left);
                return Flow::Close(self.stopped(stop));
            }
        }
        metrics::counter!("uncorreo_smtp_bytes_total").increment(size);
        if let Err(reply) = accept {
            self.error(reply);
            return Flow::Continue;
        }
        if self.tx.as_ref().is_some_and(|t| t.bdat_too_big) {
            self.tx = None;
            count_message("rejected");
            self.error("552 5.3.4 Message size exceeds fixed maximum message size");
            return Flow::Continue;
        }
        if !last {
            self.conn
                .reply(&format!("250 2.0.0 {size} octets received"));
            return Flow::Continue;
        }
        let (id, body) = match self.tx.as_mut() {
            Some(t) => (std::mem::take(&mut t.id), t.bdat.take().unwrap_or_default()),
            None => (String::new(), Vec::new()),
        };
        // Same rule as DATA (see `data`): nothing ambiguous is stored.
        if crate::data::has_bare_line_end(&body) {
            self.tx = None;
            count_message("rejected");
            self.error("550 5.6.0 Bare CR or LF in message; lines must end with CRLF");
            return Flow::Continue;
        }
        self.deliver(id, body).await
    }

    async fn deliver(&mut self, id: String, body: Vec<u8>) -> Flow {
        let Some(tx) = self.tx.take() else {
            self.error("503 5.5.1 Need MAIL command");
            return Flow::Continue;
        };
        let cfg = &self.shared.config;
        let limits = HeaderLimits {
            max_bytes: cfg.max_header_bytes,
            max_lines: cfg.max_header_lines,
            // Our own Received: line is in front and counts too.
            max_received: cfg.max_received_headers.saturating_add(1),
        };
        let refusal = match headers::check(&body, limits) {
            Ok(()) => None,
            Err(HeaderError::TooBig) => Some("552 5.3.4 Message header too big"),
            Err(HeaderError::TooManyLines) => Some("552 5.3.4 Too many header lines"),
            Err(HeaderError::Loop) => Some("554 5.4.6 Too many Received headers: mail loop"),
        };
        if let Some(reply) = refusal {
            count_message("rejected");
            self.error(reply);
            return Flow::Continue;
        }
        let recipients: Vec<Recipient> = tx.rcpts.into_iter().map(|(_, r)| r).collect();
        let delivery = Delivery {
            raw: Bytes::from(body),
            envelope_from: tx.from,
            recipients,
            dedupe_key: None,
        };
        // The client waits for this reply anyway; get earlier replies out
        // before the (possibly slow) durable write.
        if self.conn.flush().await.is_err() {
            return Flow::Close("io_error");
        }
        let started = Instant::now();
        let result = self.shared.engine.deliver(delivery).await;
        if let Ok(DeliveryOutcome::Delivered { stored, refused }) = &result {
            if !stored.is_empty() && !refused.is_empty() {
                tracing::warn!(
                    id,
                    refused = refused.len(),
                    "some recipients refused at commit"
                );
            }
        }
        if let Err(e) = &result {
            tracing::warn!(id, error = %e, "delivery failed");
        }
        let (reply, outcome) = delivery_reply(&result, &id);
        if outcome == "accepted" {
            metrics::histogram!("uncorreo_smtp_data_to_ack_seconds")
                .record(started.elapsed().as_secs_f64());
        }
        count_message(outcome);
        if reply.starts_with('5') {
            self.errors += 1;
        }
        self.conn.reply(&reply);
        Flow::Continue
    }
}

/// The reply to the end of data for what `Engine::deliver` returned, and the
/// `uncorreo_smtp_messages_total` outcome. `250` only when a copy is stored
/// (durable); every error is a temporary `451` unless it is the size limit.
pub fn delivery_reply(
    result: &Result<DeliveryOutcome, DeliverError>,
    id: &str,
) -> (String, &'static str) {
    match result {
        Ok(DeliveryOutcome::Delivered { stored, .. }) if !stored.is_empty() => {
            (format!("250 2.0.0 Ok: queued as {id}"), "accepted")
        }
        Ok(DeliveryOutcome::Delivered { refused, .. }) => {
            let temporary = refused.iter().any(|(_, e)| *e == ResolveError::MailboxFull);
            let reply = match refused.first() {
                _ if temporary => resolve_reply(ResolveError::MailboxFull),
                Some((_, e)) => resolve_reply(*e),
                None => "554 5.5.1 No valid recipients",
            };
            let outcome = if reply.starts_with('4') {
                "tempfail"
            } else {
                "rejected"
            };
            (reply.to_owned(), outcome)
        }
        // Only with a dedupe key, which SMTP never sets: already stored.
        Ok(DeliveryOutcome::Duplicate) => (format!("250 2.0.0 Ok: queued as {id}"), "accepted"),
        Err(DeliverError::TooLarge { .. }) => (
            "552 5.3.4 Message size exceeds fixed maximum message size".to_owned(),
            "rejected",
        ),
        // RFC 3463 X.3.1 "mail system full": temporary, the sender retries.
        Err(DeliverError::DiskFull) => (
            "452 4.3.1 Insufficient system storage, try again later".to_owned(),
            "tempfail",
        ),
        Err(_) => (
            "451 4.3.0 Storage unavailable, try again later".to_owned(),
            "tempfail",
        ),
    }
}

fn count_message(outcome: &'static str) {
    metrics::counter!("uncorreo_smtp_messages_total", "outcome" => outcome).increment(1);
}

/// The RCPT reply for a resolve error (the table in `ResolveError`'s docs).
pub fn resolve_reply(e: ResolveError) -> &'static str {
    match e {
        ResolveError::ForeignDomain => "550 5.7.1 Relay not permitted",
        ResolveError::NoSuchMailbox => "550 5.1.1 No such mailbox",
        ResolveError::MailboxFull => "452 4.2.2 Mailbox full",
        ResolveError::BadAddress => "553 5.1.3 Bad recipient address syntax",
        _ => "550 5.1.1 Recipient refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uncorreo_engine::{MailboxId, MessageId, StorageError};

    fn rcpt() -> Recipient {
        Recipient::parse("a@uncorreo.test").unwrap()
    }

    #[test]
    fn only_a_stored_copy_gets_250() {
        let stored = MessageId {
            mailbox: MailboxId(1),
            seq: 1,
        };
        let ok = Ok(DeliveryOutcome::Delivered {
            stored: vec![stored],
            refused: vec![(rcpt(), ResolveError::NoSuchMailbox)],
        });
        assert_eq!(
            delivery_reply(&ok, "X"),
            ("250 2.0.0 Ok: queued as X".to_owned(), "accepted")
        );
        let full = Ok(DeliveryOutcome::Delivered {
            stored: vec![],
            refused: vec![
                (rcpt(), ResolveError::NoSuchMailbox),
                (rcpt(), ResolveError::MailboxFull),
            ],
        });
        assert!(delivery_reply(&full, "X").0.starts_with("452 4.2.2"));
        let gone = Ok(DeliveryOutcome::Delivered {
            stored: vec![],
            refused: vec![(rcpt(), ResolveError::NoSuchMailbox)],
        });
        assert!(delivery_reply(&gone, "X").0.starts_with("550 5.1.1"));
        let none = Ok(DeliveryOutcome::Delivered {
            stored: vec![],
            refused: vec![],
        });
        assert!(delivery_reply(&none, "X").0.starts_with("554 5.5.1"));
        let big = Err(DeliverError::TooLarge { limit: 10 });
        assert!(delivery_reply(&big, "X").0.starts_with("552 5.3.4"));
        let (reply, outcome) = delivery_reply(&Err(DeliverError::DiskFull), "X");
        assert!(reply.starts_with("452 4.3.1"), "{reply}");
        assert_eq!(outcome, "tempfail");
        for e in [
            DeliverError::Saturated,
            DeliverError::Storage(StorageError::Poisoned),
            DeliverError::Storage(StorageError::Closed),
            DeliverError::Storage(StorageError::Corrupt),
            DeliverError::Storage(StorageError::Io(std::io::Error::other("disk on fire"))),
        ] {
            let (reply, outcome) = delivery_reply(&Err(e), "X");
            assert!(reply.starts_with("451 4.3.0"), "{reply}");
            assert_eq!(outcome, "tempfail");
        }
    }
}
