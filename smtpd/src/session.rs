//! The SMTP session state machine, generic over any byte stream so tests
//! drive it in memory (`tokio::io::duplex`) and assert reply codes.
//!
//! States: greeted → (EHLO/HELO) → ready → (MAIL) → in transaction →
//! (RCPT…) → (DATA | BDAT… LAST) → delivered, back to ready. `STARTTLS`
//! hands the raw stream back to [`crate::handle_connection`], which runs a
//! fresh session (before-EHLO, RFC 3207 §4.2) over TLS.
//!
//! Architecture invariant: the only reply that says a message was taken is
//! `250 2.0.0 Ok: stored as <id>[,<id>…]` (the message ids the API uses),
//! and it is sent only after `Engine::deliver` returned `Ok` with at least
//! one stored copy — i.e. after the bytes are durable. Every engine error maps to a reply that makes the
//! client keep the message (`451 4.3.0`) or bounce it (`5xx`), never to 250.
//!
//! Quota is decided at RCPT: the first recipient of a mailbox in a
//! transaction reserves one message of its quota (`Engine::resolve_held`),
//! later ones (other plus tags) share that one stored copy, and a recipient
//! that does not fit gets `452 4.2.2` at its RCPT. So a full mailbox never
//! refuses mail after its 250.
//!
//! Partial refusals: when some recipients were refused at commit time (their
//! mailbox expired or was deleted between RCPT and the end of DATA) and
//! others got their copy, the reply is still 250 — SMTP has one reply per
//! DATA, and a 4xx would make the client re-deliver duplicates to the
//! recipients that got it. The refusals are logged and counted.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uncorreo_budget::Permit;
use uncorreo_engine::{
    Address, DeliverError, Delivery, DeliveryOutcome, MessageId, Owner, QuotaHolds, Recipient,
    ResolveError,
};

use crate::auth::{self, AuthMode, Credentials};
use crate::conn::{Conn, Line, Stop, Wait};
use crate::data::{count_bare_lf, normalize_in_place, BareLf, DataDecoder, DataError};
use crate::headers::{self, HeaderError, HeaderLimits};
use crate::parse::{parse_command, Command, Mechanism, ParseError};
use crate::received::{self, Trace};
use crate::Shared;

/// Initial room for a DATA body without a declared `SIZE=`; it grows from
/// there up to the size limit, each step paid for from the byte budget.
const BODY_RESERVE: usize = 16 * 1024;

/// The reply when the process-wide budget of bytes in flight cannot take a
/// body now (RFC 3463 X.3.1, "system storage", as for a full disk): the
/// sender keeps the message and retries.
const OVER_BUDGET_REPLY: &str =
    "452 4.3.1 Insufficient system resources: too much mail in flight, try again later";

/// The refusal of a lone `.` line next to a bare LF (see [`crate::data`]).
const AMBIGUOUS_END_REPLY: &str =
    "550 5.6.0 A line of only \".\" next to a bare LF is an ambiguous end of data (SMTP smuggling); message refused";

/// Most message ids named in one `250 … stored as` reply; the rest are
/// counted, so the reply stays far below 512 octets (RFC 5321 §4.5.3.1.5).
const MAX_IDS_IN_REPLY: usize = 10;

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
    /// One message of quota per mailbox named, reserved at RCPT, so an
    /// accepted recipient is never refused for a full mailbox after DATA.
    holds: QuotaHolds,
    /// `SIZE=` from MAIL (RFC 1870): reserved from the budget up front.
    declared_size: Option<u64>,
    /// The budget's share held for `bdat` (its capacity).
    bdat_permit: Option<Permit>,
    /// A BDAT chunk did not fit the budget: the rest is drained, not kept.
    bdat_over_budget: bool,
    /// Body collected from BDAT chunks so far (starts with our Received line
    /// once the first chunk arrives).
    bdat: Option<Vec<u8>>,
    /// Octets of our Received line at the front of `bdat`.
    bdat_header_len: usize,
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
    /// Set by a successful AUTH; kept across RSET and EHLO (RFC 4954 §4).
    authenticated: Option<Authenticated>,
}

/// RCPT in `keys` mode to a mailbox the credential's owner does not own,
/// here or on the host that owns it.
const NOT_YOURS: &str = "550 5.7.1 Your credential does not own this mailbox";

/// Who a session authenticated as.
struct Authenticated {
    /// In `keys` mode, the owner whose mailboxes this session may send to;
    /// `None` in `accept_any` mode (any mailbox).
    owner: Option<Owner>,
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
            authenticated: None,
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
            ParseError::Unknown => "500 5.5.1 Command not recognized".to_owned(),
            ParseError::Syntax(_) => "501 5.5.4 Syntax error in parameters or arguments".to_owned(),
            ParseError::BadPath if is_mail => "501 5.1.7 Bad sender address syntax".to_owned(),
            ParseError::BadPath => "501 5.1.3 Bad recipient address syntax".to_owned(),
            ParseError::BadParam => {
                "555 5.5.4 Parameter not recognized or not implemented".to_owned()
            }
            ParseError::Unsupported(name) => format!("555 5.5.4 {name} not supported"),
            ParseError::BadValue(name) => format!("501 5.5.4 Bad {name} value"),
            ParseError::Duplicate(name) => format!("501 5.5.4 Duplicate {name} parameter"),
            _ => "500 5.5.2 Invalid characters in command".to_owned(),
        };
        self.error(&reply);
    }

    /// True when AUTH may be used on this connection now.
    fn auth_offered(&self) -> bool {
        self.shared.config.auth != AuthMode::Off
            && (self.tls || self.shared.config.auth_allow_plaintext)
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
                    "DSN".to_owned(),
                ];
                if self.auth_offered() && self.authenticated.is_none() {
                    lines.push("AUTH PLAIN LOGIN".to_owned());
                }
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
                        holds: self.shared.engine.quota_holds(),
                        declared_size: params.size,
                        bdat_permit: None,
                        bdat_over_budget: false,
                        bdat: None,
                        bdat_header_len: 0,
                        bdat_size: 0,
                        bdat_too_big: false,
                        id: String::new(),
                    });
                    self.conn.reply("250 2.1.0 Ok");
                }
                Flow::Continue
            }
            // DSN parameters are checked by the parser and change nothing:
            // we are the final hop and send no notices.
            Command::Rcpt { to, .. } => {
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
                if let Some(cluster) = self.shared.cluster.clone() {
                    if let Some(flow) = self.rcpt_elsewhere(&cluster, &to.address).await {
                        return flow;
                    }
                }
                let Some(tx) = self.tx.as_mut() else {
                    self.error("503 5.5.1 Need MAIL before RCPT");
                    return Flow::Continue;
                };
                let resolved = self.shared.engine.resolve_within(&to.address, &tx.holds);
                if let (Ok(r), Some(Authenticated { owner: Some(owner) })) =
                    (&resolved, &self.authenticated)
                {
                    let owns = self
                        .shared
                        .engine
                        .mailbox(&r.address)
                        .is_some_and(|m| m.owner == *owner);
                    if !owns {
                        self.error(NOT_YOURS);
                        return Flow::Continue;
                    }
                }
                if let Ok(r) = &resolved {
                    if let Some(flow) = self.rcpt_faults(&to.address, r).await {
                        return flow;
                    }
                }
                let Some(tx) = self.tx.as_mut() else {
                    self.error("503 5.5.1 Need MAIL before RCPT");
                    return Flow::Continue;
                };
                // Once it may take the recipient: hold its quota now.
                let resolved =
                    resolved.and_then(|_| self.shared.engine.resolve_held(&to.address, &tx.holds));
                match resolved {
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
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial).await,
        }
    }

    /// One SASL response line, or the flow when the exchange cannot go on
    /// (the reply is already queued).
    async fn sasl_line(&mut self) -> Result<String, Flow> {
        let wait = Wait {
            deadline: Instant::now() + self.shared.config.command_timeout,
            shutdown: &self.shutdown,
            idle: true,
            grace: self.shared.config.shutdown_grace,
        };
        match self.conn.read_line(wait).await {
            Ok(Line::Ok { start, end }) => {
                let line = String::from_utf8_lossy(self.conn.slice(start, end))
                    .trim_end_matches(['\r', '\n'])
                    .to_owned();
                self.conn.settle();
                if line == "*" {
                    self.error("501 5.7.0 Authentication cancelled");
                    return Err(Flow::Continue);
                }
                Ok(line)
            }
            Ok(Line::TooLong) => {
                self.error("500 5.5.6 Authentication exchange line too long");
                Err(Flow::Continue)
            }
            Err(stop) => Err(Flow::Close(self.stopped(stop))),
        }
    }

    async fn auth(&mut self, mechanism: Mechanism, initial: Option<String>) -> Flow {
        let mode = self.shared.config.auth;
        if mode == AuthMode::Off {
            self.error("502 5.5.1 AUTH not available");
            return Flow::Continue;
        }
        if !self.auth_offered() {
            self.error("538 5.7.11 Encryption required: use STARTTLS before AUTH");
            return Flow::Continue;
        }
        if self.helo.is_none() {
            self.error("503 5.5.1 Send EHLO first");
            return Flow::Continue;
        }
        if self.authenticated.is_some() {
            self.error("503 5.5.1 Already authenticated");
            return Flow::Continue;
        }
        if self.tx.is_some() {
            self.error("503 5.5.1 AUTH not permitted during a mail transaction");
            return Flow::Continue;
        }
        if self
            .shared
            .auth_failures
            .blocked(self.peer, std::time::Instant::now())
        {
            return Flow::Close(self.close_with(
                "421 4.7.0 Too many failed AUTH attempts from your address, try later",
                "auth_blocked",
            ));
        }
        let credentials = match mechanism {
            Mechanism::Other => {
                self.error("504 5.5.4 Unrecognized authentication type; use PLAIN or LOGIN");
                return Flow::Continue;
            }
            Mechanism::Plain => {
                let response = match initial {
                    Some(r) => r,
                    None => {
                        self.conn.reply("334 ");
                        match self.sasl_line().await {
                            Ok(line) => line,
                            Err(flow) => return flow,
                        }
                    }
                };
                auth::decode_plain(&response)
            }
            Mechanism::Login => {
                let username = match initial {
                    Some(r) => r,
                    None => {
                        self.conn.reply(auth::LOGIN_USERNAME);
                        match self.sasl_line().await {
                            Ok(line) => line,
                            Err(flow) => return flow,
                        }
                    }
                };
                self.conn.reply(auth::LOGIN_PASSWORD);
                let password = match self.sasl_line().await {
                    Ok(line) => line,
                    Err(flow) => return flow,
                };
                auth::decode_text(&username).and_then(|username| {
                    Ok(Credentials {
                        authzid: String::new(),
                        username,
                        password: auth::decode_text(&password)?,
                    })
                })
            }
        };
        let credentials = match credentials {
            Ok(c) => c,
            Err(_) => {
                self.error("501 5.5.2 Cannot decode the authentication response");
                return Flow::Continue;
            }
        };
        let owner = match mode {
            AuthMode::Keys => match self.owner_of(&credentials).await {
                Some(owner) => Some(owner),
                None => {
                    let failures = self
                        .shared
                        .auth_failures
                        .fail(self.peer, std::time::Instant::now());
                    metrics::counter!(uncorreo_metric_names::SMTP_AUTH_TOTAL, "outcome" => "failed")
                        .increment(1);
                    tracing::info!(peer = %self.peer, failures, "SMTP AUTH failed");
                    self.error("535 5.7.8 Authentication credentials invalid");
                    return Flow::Continue;
                }
            },
            _ => None,
        };
        metrics::counter!(uncorreo_metric_names::SMTP_AUTH_TOTAL, "outcome" => "ok").increment(1);
        self.authenticated = Some(Authenticated { owner });
        self.conn.reply("235 2.7.0 Authentication successful");
        Flow::Continue
    }

    /// `keys` mode: the owner a credential stands for. The password is an
    /// API key (any user name), or a session token with its mailbox's
    /// address as the user name — so checking one costs two lookups, never
    /// a scan of every mailbox.
    ///
    /// In a cluster, a key the accounts replica does not know first lets it
    /// catch up (one NATS round trip, bounded), awaited like any other I/O
    /// of the session, so a key minted on another host a moment ago works.
    async fn owner_of(&self, credentials: &Credentials) -> Option<Owner> {
        if credentials.password.is_empty() || credentials.password.len() > auth::MAX_RESPONSE {
            return None;
        }
        let engine = &self.shared.engine;
        let hash: [u8; 32] = Sha256::digest(credentials.password.as_bytes()).into();
        if let Some(key_user) = self.shared.key_user.get() {
            if let Some(user) = key_user(&hash) {
                return Some(Owner::User(user));
            }
            // A session token is not an accounts key: look for its mailbox
            // first, and only then ask the cluster about an unknown key.
            if let Some(owner) = Self::token_owner(engine, credentials, &hash) {
                return Some(owner);
            }
            if let Some(catch_up) = self.shared.key_catch_up.get() {
                catch_up().await;
                return key_user(&hash).map(Owner::User);
            }
            return None;
        } else if let Some(key) = engine
            .api_key_by_hash(&hash)
            .filter(|k| k.revoked_at_ms.is_none())
            // As for REST: a disabled user's keys are refused even if one
            // escaped revocation.
            .filter(|k| engine.user_disabled_at(k.user).is_none())
        {
            return engine.user(key.user).map(|u| Owner::User(u.id));
        }
        Self::token_owner(engine, credentials, &hash)
    }

    /// The anonymous owner whose session token is the password, with its
    /// mailbox's address as the user name.
    fn token_owner(
        engine: &uncorreo_engine::Engine,
        credentials: &Credentials,
        hash: &[u8; 32],
    ) -> Option<Owner> {
        let address = Address::parse(&credentials.username).ok()?;
        let mailbox = engine.mailbox(&address)?;
        match mailbox.owner {
            Owner::Anonymous { token_hash } if bool::from(token_hash.ct_eq(hash)) => {
                Some(mailbox.owner)
            }
            _ => None,
        }
    }

    fn trace_header(&self, id: &str, bare_lf_normalized: u64) -> String {
        let (helo, esmtp) = self
            .helo
            .as_ref()
            .map(|(h, e)| (h.as_str(), *e))
            .unwrap_or(("unknown", false));
        // RFC 3848: S for TLS, A for an authenticated session.
        let protocol = match (esmtp, self.tls, self.authenticated.is_some()) {
            (_, true, true) => "ESMTPSA",
            (_, true, false) => "ESMTPS",
            (_, false, true) => "ESMTPA",
            (true, false, false) => "ESMTP",
            (false, false, false) => "SMTP",
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
            bare_lf_normalized,
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

    /// Queue the over-budget refusal and count it.
    fn over_budget(&mut self) {
        metrics::counter!(uncorreo_metric_names::IN_FLIGHT_REFUSED_TOTAL, "front_end" => "smtp")
            .increment(1);
        count_message("tempfail");
        self.conn.reply(OVER_BUDGET_REPLY);
    }

    async fn data(&mut self) -> Flow {
        if !self.may_start_body() {
            return Flow::Continue;
        }
        let id = self.shared.next_id();
        let header = self.trace_header(&id, 0);
        let ceiling = header.len().saturating_add(self.max_message());
        // The declared size is paid for before `354`, so a client told to go
        // ahead is refused later only if it sends more than it declared.
        let expected = self
            .tx
            .as_ref()
            .and_then(|t| t.declared_size)
            .map_or(BODY_RESERVE, |s| usize::try_from(s).unwrap_or(usize::MAX))
            .min(self.max_message());
        let first = header.len().saturating_add(expected);
        let Ok(mut permit) = self.shared.budget.try_reserve(first as u64) else {
            // The transaction stays open: DATA again later, or RSET.
            self.over_budget();
            return Flow::Continue;
        };
        self.conn.reply("354 End data with <CR><LF>.<CR><LF>");
        let mut body = Vec::with_capacity(first);
        body.extend_from_slice(header.as_bytes());
        let mut decoder = DataDecoder::new(self.max_message(), self.shared.config.max_line_bytes)
            .with_bare_lf(self.shared.config.bare_lf);
        // Once the budget refuses more room, the rest is decoded into `spill`
        // (one read's worth) and dropped: the end of data is still found.
        let mut spill = Vec::new();
        let mut over_budget = false;
        loop {
            if !over_budget && decoder.error().is_none() {
                let want = body
                    .len()
                    .saturating_add(DataDecoder::max_output(self.conn.buffered()));
                if permit.make_room(&mut body, want, ceiling).is_err() {
                    over_budget = true;
                    body = Vec::new();
                    permit.shrink_to(0);
                }
            }
            let out = if over_budget {
                spill.clear();
                &mut spill
            } else {
                &mut body
            };
            let fed = decoder.feed(self.conn.buffered(), out);
            self.conn.consume(fed.consumed);
            if fed.done {
                break;
            }
            if let Err(stop) = self.fill(self.shared.config.data_timeout).await {
                metrics::counter!(uncorreo_metric_names::SMTP_BYTES_TOTAL)
                    .increment(decoder.raw_len());
                return Flow::Close(self.stopped(stop));
            }
        }
        metrics::counter!(uncorreo_metric_names::SMTP_BYTES_TOTAL).increment(decoder.raw_len());
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
                self.error(self.bare_line_end_reply());
                Flow::Continue
            }
            Some(DataError::AmbiguousEnd) => {
                self.tx = None;
                count_message("rejected");
                self.error(AMBIGUOUS_END_REPLY);
                Flow::Continue
            }
            None if over_budget => {
                self.tx = None;
                self.over_budget();
                Flow::Continue
            }
            None if decoder.normalized() > 0 => {
                // Only now do we know the header must say the body was
                // normalised: swap it in place, never a second copy.
                let noted = self.trace_header(&id, decoder.normalized());
                self.deliver_noted(id, body, permit, header.len(), &noted)
                    .await
            }
            None => self.deliver(id, body, permit).await,
        }
    }

    /// Put `noted` (our header saying the body was normalised) in place of
    /// the first `old_header` octets of `body`, then deliver.
    async fn deliver_noted(
        &mut self,
        id: String,
        mut body: Vec<u8>,
        mut permit: Permit,
        old_header: usize,
        noted: &str,
    ) -> Flow {
        let want = body
            .len()
            .saturating_add(noted.len().saturating_sub(old_header));
        if permit.make_room(&mut body, want, want).is_err() {
            self.tx = None;
            self.over_budget();
            return Flow::Continue;
        }
        body.splice(..old_header.min(body.len()), noted.bytes());
        metrics::counter!(uncorreo_metric_names::SMTP_BARE_LF_NORMALIZED_TOTAL).increment(1);
        self.deliver(id, body, permit).await
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
            let header = self.trace_header(&id, 0);
            let declared = self
                .tx
                .as_ref()
                .and_then(|t| t.declared_size)
                .unwrap_or(0)
                .min(max);
            let permit = self
                .shared
                .budget
                .try_reserve((header.len() as u64).saturating_add(declared));
            if let Some(tx) = self.tx.as_mut() {
                tx.bdat_header_len = header.len();
                let mut buf = header.into_bytes();
                if let Ok(p) = &permit {
                    buf.reserve_exact(
                        usize::try_from(p.bytes())
                            .unwrap_or(0)
                            .saturating_sub(buf.len()),
                    );
                }
                tx.bdat_over_budget = permit.is_err();
                tx.bdat_permit = permit.ok();
                tx.bdat = Some(buf);
                tx.id = id;
            }
        }
        // The chunk's size is declared: pay for it before reading it.
        if let (Ok(()), Some(tx)) = (accept, self.tx.as_mut()) {
            if !tx.bdat_too_big && !tx.bdat_over_budget {
                let ceiling = tx.bdat_header_len.saturating_add(max as usize);
                let fits = match (tx.bdat.as_mut(), tx.bdat_permit.as_mut()) {
                    _ if tx.bdat_size.saturating_add(size) > max => true,
                    (Some(buf), Some(permit)) => {
                        let want = buf
                            .len()
                            .saturating_add(usize::try_from(size).unwrap_or(usize::MAX));
                        permit.make_room(buf, want, ceiling).is_ok()
                    }
                    _ => false,
                };
                if !fits {
                    tx.bdat_over_budget = true;
                    tx.bdat = Some(Vec::new());
                    tx.bdat_permit = None;
                }
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
                        tx.bdat_permit = None;
                    } else if tx.bdat_over_budget {
                        // Drained, not kept: the 452 comes after the chunk.
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
                metrics::counter!(uncorreo_metric_names::SMTP_BYTES_TOTAL).increment(size - left);
                return Flow::Close(self.stopped(stop));
            }
        }
        metrics::counter!(uncorreo_metric_names::SMTP_BYTES_TOTAL).increment(size);
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
        if self.tx.as_ref().is_some_and(|t| t.bdat_over_budget) {
            // RFC 3030 §2: after a failed chunk the client sends no more of
            // this message; it starts over (MAIL) when it retries.
            self.tx = None;
            self.over_budget();
            return Flow::Continue;
        }
        if !last {
            self.conn
                .reply(&format!("250 2.0.0 {size} octets received"));
            return Flow::Continue;
        }
        let (id, body, permit, header_len) = match self.tx.as_mut() {
            Some(t) => (
                std::mem::take(&mut t.id),
                t.bdat.take().unwrap_or_default(),
                t.bdat_permit.take(),
                t.bdat_header_len,
            ),
            None => (String::new(), Vec::new(), None, 0),
        };
        let Some(permit) = permit else {
            self.tx = None;
            self.over_budget();
            return Flow::Continue;
        };
        // Same line-end rule as DATA (see `data`); our own header is CRLF
        // throughout, so only the client's part can change.
        let client_part = body.get(header_len..).unwrap_or(&[]);
        match count_bare_lf(client_part) {
            Ok(0) => self.deliver(id, body, permit).await,
            Ok(_) if self.shared.config.bare_lf == BareLf::Reject => self.refuse_bare_line_end(),
            Err(_) => self.refuse_bare_line_end(),
            Ok(count) => {
                let noted = self.trace_header(&id, count);
                let mut body = body;
                let mut permit = permit;
                let want = body.len().saturating_add(count as usize);
                if permit.make_room(&mut body, want, want).is_err() {
                    self.tx = None;
                    self.over_budget();
                    return Flow::Continue;
                }
                normalize_in_place(&mut body, header_len, count);
                self.deliver_noted(id, body, permit, header_len, &noted)
                    .await
            }
        }
    }

    fn refuse_bare_line_end(&mut self) -> Flow {
        self.tx = None;
        count_message("rejected");
        self.error(self.bare_line_end_reply());
        Flow::Continue
    }

    fn bare_line_end_reply(&self) -> &'static str {
        match self.shared.config.bare_lf {
            BareLf::Normalize => "550 5.6.0 Bare CR in message; lines must end with CRLF or LF",
            BareLf::Reject => "550 5.6.0 Bare CR or LF in message; lines must end with CRLF",
        }
    }

    /// Store `body` through the engine; `permit` (the budget's share for
    /// `body`) is held until `deliver` returns, so bodies queued for the
    /// writer stay inside the budget.
    async fn deliver(&mut self, id: String, body: Vec<u8>, permit: Permit) -> Flow {
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
        if let Some(reply) = self.data_faults(&tx.rcpts, body.len()) {
            count_message("rejected");
            self.conn.reply(&reply);
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
        let result = uncorreo_hop::deliver(
            &self.shared.engine,
            self.shared.cluster.as_deref(),
            delivery,
            tx.holds,
        )
        .await;
        drop(permit);
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
            metrics::histogram!(uncorreo_metric_names::SMTP_DATA_TO_ACK_SECONDS)
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

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// RCPT on a host of a cluster: `None` when this host serves the
    /// recipient's mailbox (today's path follows); else the reply was
    /// sent: the owner's verdict, or `451 4.3.0` when no live host owns it.
    async fn rcpt_elsewhere(
        &mut self,
        cluster: &uncorreo_hop::Cluster,
        rcpt: &str,
    ) -> Option<Flow> {
        const UNAVAILABLE: &str = "451 4.3.0 Mailbox temporarily unavailable, try again later";
        let owner = match cluster.place(rcpt).await {
            uncorreo_hop::Placement::Local => return None,
            uncorreo_hop::Placement::Unavailable => {
                self.conn.reply(UNAVAILABLE);
                return Some(Flow::Continue);
            }
            uncorreo_hop::Placement::Remote(owner) => owner,
        };
        // In `keys` mode the session may send only to its user's mailboxes:
        // the owner, which knows whose a mailbox is, checks that too.
        let sender = match &self.authenticated {
            Some(Authenticated {
                owner: Some(Owner::User(user)),
            }) => Some(*user),
            Some(Authenticated {
                owner: Some(Owner::Anonymous { .. }),
            }) => {
                self.error(NOT_YOURS);
                return Some(Flow::Continue);
            }
            _ => None,
        };
        match cluster.resolve_remote_as(rcpt, &owner, sender).await {
            Err(uncorreo_hop::OwnerUnavailable) => self.conn.reply(UNAVAILABLE),
            Ok(Err(uncorreo_hop::wire::Refusal::NotYours)) => {
                self.error(NOT_YOURS);
            }
            Ok(Err(refusal)) => self.error(resolve_reply(refusal.into())),
            Ok(Ok(())) => match Recipient::parse(rcpt) {
                Ok(r) => {
                    let Some(tx) = self.tx.as_mut() else {
                        self.error("503 5.5.1 Need MAIL before RCPT");
                        return Some(Flow::Continue);
                    };
                    if !tx.rcpts.iter().any(|(_, have)| *have == r) {
                        tx.rcpts.push((rcpt.to_owned(), r));
                    }
                    self.conn.reply("250 2.1.5 Ok");
                }
                Err(_) => self.error(resolve_reply(ResolveError::BadAddress)),
            },
        }
        Some(Flow::Continue)
    }

    /// Apply the fault plan of `rcpt`'s target, if any: wait its delay,
    /// then refuse with its reply (`Some(flow)`), or let it through (`None`).
    /// A fault refusal is not a client error: it does not count toward
    /// `max_errors`. A `421` closes the session, as the code says.
    async fn rcpt_faults(&mut self, rcpt: &str, r: &Recipient) -> Option<Flow> {
        if self.shared.faults.is_empty() {
            return None;
        }
        let target = fault_target(&self.shared.engine, rcpt, r);
        let declared = self.tx.as_ref().and_then(|t| t.declared_size);
        let now = self.shared.engine.now_ms();
        let d = self.shared.faults.at_rcpt(&target, declared, now);
        if d.delay_ms > 0 {
            if self.conn.flush().await.is_err() {
                return Some(Flow::Close("io_error"));
            }
            let delay = Duration::from_millis(u64::from(d.delay_ms));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shutdown.cancelled() => {}
            }
        }
        let (code, reply) = d.refuse?;
        note_fault(&self.shared.engine, &target, code);
        self.conn.reply(&reply);
        Some(if code == 421 {
            Flow::Close("fault_plan")
        } else {
            Flow::Continue
        })
    }

    /// The end-of-data refusal of a `size_above` rule: only when every
    /// recipient of the transaction is under one (one reply cannot refuse
    /// part of a transaction, and other tenants' mail is never refused).
    fn data_faults(&self, rcpts: &[(String, Recipient)], size: usize) -> Option<String> {
        if self.shared.faults.is_empty() || rcpts.is_empty() {
            return None;
        }
        let engine = &self.shared.engine;
        let mut refusals = Vec::with_capacity(rcpts.len());
        for (text, r) in rcpts {
            let target = fault_target(engine, text, r);
            let refusal = self.shared.faults.at_data(&target, size as u64)?;
            refusals.push((target, refusal));
        }
        for (target, (code, _)) in &refusals {
            note_fault(engine, target, *code);
        }
        refusals.into_iter().next().map(|(_, (_, reply))| reply)
    }
}

/// Whose fault plan applies to `rcpt`: its campaign's, else its mailbox's.
fn fault_target(
    engine: &uncorreo_engine::Engine,
    rcpt: &str,
    r: &Recipient,
) -> uncorreo_faults::Target {
    match engine.campaign_for(rcpt) {
        Some(id) => uncorreo_faults::Target::Campaign(id.0),
        None => uncorreo_faults::Target::Mailbox(r.address.to_string()),
    }
}

/// Count a fault-plan refusal in its campaign's report.
fn note_fault(engine: &uncorreo_engine::Engine, target: &uncorreo_faults::Target, code: u16) {
    if let uncorreo_faults::Target::Campaign(id) = target {
        engine.campaign_refused(uncorreo_engine::campaign::CampaignId(*id), code);
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
            (stored_reply(stored), "accepted")
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
        Ok(DeliveryOutcome::Duplicate) => (
            format!("250 2.0.0 Ok: already stored (transaction {id})"),
            "accepted",
        ),
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

/// `250 2.0.0 Ok: stored as <id>[,<id>…]`: the ids `GET /api/v1/…/messages/{id}`
/// takes, one per stored copy, at most [`MAX_IDS_IN_REPLY`] of them.
pub fn stored_reply(stored: &[MessageId]) -> String {
    use std::fmt::Write;
    let mut reply = String::from("250 2.0.0 Ok: stored as ");
    for (i, id) in stored.iter().take(MAX_IDS_IN_REPLY).enumerate() {
        if i > 0 {
            reply.push(',');
        }
        let _ = write!(reply, "{id}");
    }
    if stored.len() > MAX_IDS_IN_REPLY {
        let _ = write!(reply, " and {} more", stored.len() - MAX_IDS_IN_REPLY);
    }
    reply
}

fn count_message(outcome: &'static str) {
    metrics::counter!(uncorreo_metric_names::SMTP_MESSAGES_TOTAL, "outcome" => outcome)
        .increment(1);
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
    fn the_250_names_every_stored_id_up_to_a_bound() {
        let ids: Vec<MessageId> = (1..=12)
            .map(|n| MessageId {
                mailbox: MailboxId(0x1a + n),
                seq: n,
            })
            .collect();
        assert_eq!(stored_reply(&ids[..1]), "250 2.0.0 Ok: stored as 1b-1");
        assert_eq!(stored_reply(&ids[..2]), "250 2.0.0 Ok: stored as 1b-1,1c-2");
        let ten = stored_reply(&ids[..10]);
        assert!(ten.ends_with(",24-10"), "{ten}");
        let all = stored_reply(&ids);
        assert!(all.ends_with(",24-10 and 2 more"), "{all}");
        let huge: Vec<MessageId> = (0..100)
            .map(|n| MessageId {
                mailbox: MailboxId(u64::MAX - n),
                seq: u64::MAX,
            })
            .collect();
        assert!(stored_reply(&huge).len() < 512);
        for id in stored_reply(&ids[..10])
            .trim_start_matches("250 2.0.0 Ok: stored as ")
            .split(',')
        {
            assert!(id.parse::<MessageId>().is_ok(), "{id}");
        }
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
            ("250 2.0.0 Ok: stored as 1-1".to_owned(), "accepted")
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
