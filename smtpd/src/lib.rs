//! uncorreo's ESMTP server (RFC 5321): one acceptor per core, sessions stay on
//! the core that accepted them, every message goes through
//! [`uncorreo_engine::Engine::deliver`], and `250` is sent only once it is durable.
//!
//! Code map:
//! * [`parse`] — pure command-line parser (fuzzable: [`parse_command`]).
//! * [`data`] — pure DATA decoder: dot-unstuffing, `<CRLF>.<CRLF>` detection,
//!   size and line limits, the bare-LF (smuggling) policy ([`DataDecoder`]).
//! * [`conn`] — bounded read/write buffers; replies are batched for pipelining.
//! * [`session`] — the state machine, generic over `AsyncRead + AsyncWrite`.
//! * [`received`] — our `Received:` trace header.
//! * [`headers`] — header-section caps (size, lines, `Received:` loop).
//! * this file — shared state (connection limits, TLS), the acceptor, STARTTLS.
//!
//! ## Decisions worth knowing
//!
//! * **Bare CR / bare LF in DATA → `550 5.6.0`**, after draining to the real
//!   `<CRLF>.<CRLF>` (SMTP smuggling; see [`data`]). BDAT bodies are stored
//!   as sent (no unstuffing), but a bare CR/LF in one is refused the same way.
//! * **Limits → replies**: `SIZE=` over the limit at MAIL and a body over it
//!   after DATA/BDAT → `552 5.3.4` (the body is drained, never buffered past
//!   the limit); a DATA line over `max_line_bytes` (default 1000 incl. CRLF,
//!   so a 4097-octet line) → `552 5.3.4`; a command line over it →
//!   `500 5.5.2` and the session goes on; header section over its caps →
//!   `552 5.3.4`; more than `max_received_headers` `Received:` → `554 5.4.6`;
//!   recipient `max_recipients`+1 → `452 4.5.3`; `max_errors` 5xx replies →
//!   `421 4.7.0` and close; connections over the global or per-IP cap →
//!   `421 4.7.0` at connect; command timeout (whole line, so slowloris too)
//!   and DATA block timeout → `421 4.4.2`; shutdown → `421 4.3.2` between
//!   transactions, and after at most `shutdown_grace` inside one.
//! * **Recipients** are checked at RCPT through `Engine::resolve`
//!   (`550 5.7.1` foreign domain, `550 5.1.1` no mailbox, `452 4.2.2` full,
//!   `553 5.1.3` syntax — `%`, `!` and quoted local parts land here); source
//!   routes in RCPT are refused `550 5.7.1` (in MAIL they are stripped).
//! * **250 means durable**: only after `Engine::deliver` returned a stored
//!   copy; engine errors → `451 4.3.0`, `TooLarge` → `552 5.3.4`, `DiskFull` → `452 4.3.1`; a refusal
//!   of every recipient at commit time → its RCPT code; a partial refusal
//!   still gets 250 (one reply per message; a 4xx would duplicate the copies
//!   already stored). A poisoned engine gets `451 4.3.0` already at MAIL/DATA.
//! * **Bytes in flight** are bounded across every session by the shared
//!   budget ([`uncorreo_budget`]): a body is buffered only under a permit
//!   (the `SIZE=` declared at MAIL reserved at DATA, else grown while
//!   reading; a BDAT chunk reserved at its command). What does not fit gets
//!   `452 4.3.1`: at DATA before `354` when the declared size or the first
//!   bytes do not fit (the transaction stays open, so DATA may be retried),
//!   at the end of data when the body outgrew it, and after a BDAT chunk
//!   (drained, never buffered; the transaction ends). The permit is held
//!   until `deliver` returns, so the write queue is inside the budget too.
//! * **STARTTLS** discards any plaintext pipelined after it (RFC 3207 §6) and
//!   restarts the session before EHLO; `Received:` then says `ESMTPS`.
//!
//! Architecture invariant: smtpd never touches storage files; it knows the
//! engine only through `resolve` (at RCPT), `deliver` (at the end of data)
//! and `stats` (health before MAIL/DATA).

pub mod auth;
pub mod config;
pub mod conn;
pub mod data;
pub mod headers;
pub mod parse;
pub mod received;
pub mod session;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uncorreo_engine::Engine;

pub use config::SmtpConfig;
pub use data::{dot_stuff, DataDecoder, DataError};
pub use parse::{parse_command, Command, ParseError};
pub use session::{End, Session};

/// State shared by the acceptors on every core.
pub struct Shared {
    /// The storage engine.
    pub engine: Engine,
    /// Settings.
    pub config: SmtpConfig,
    /// The largest message body we accept (advertised as SIZE).
    pub max_message_bytes: usize,
    /// Present when a certificate is configured: STARTTLS is offered.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Failed AUTH attempts per client IP.
    pub auth_failures: auth::FailureCounter,
    /// The process-wide budget of bytes in flight that DATA/BDAT bodies
    /// are buffered under (shared with the HTTP ingest paths).
    pub budget: uncorreo_budget::Budget,
    /// Fault plans in force (set through the API), applied at RCPT and at
    /// the end of data for their own target only.
    pub faults: Arc<uncorreo_faults::FaultPlans>,
    /// With `[cluster]`: recipients of mailboxes another host owns are
    /// checked and stored there (`uncorreo_hop`). `None`: one host.
    pub cluster: Option<Arc<uncorreo_hop::Cluster>>,
    /// With `[cluster]`: who an API key (by its SHA-256) stands for, from
    /// the cluster's accounts replica instead of this host's engine. Set
    /// once at start; unset, keys are the engine's (one host).
    pub key_user: std::sync::OnceLock<KeyUser>,
    /// With `[cluster]`: waits (bounded) until the accounts replica has
    /// every change made anywhere before the call, so `AUTH` with a key
    /// minted on another host a moment ago is not refused here. Run only
    /// for a key [`Shared::key_user`] does not know, as an `.await` of the
    /// session (never blocking the core's thread). Unset on one host.
    pub key_catch_up: std::sync::OnceLock<KeyCatchUp>,
    active: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    ids: AtomicU64,
    id_prefix: u64,
}

/// The user a live API key (by its SHA-256) stands for, if any: not
/// revoked, user not disabled.
pub type KeyUser = Arc<dyn Fn(&[u8; 32]) -> Option<uncorreo_engine::UserId> + Send + Sync>;

/// See [`Shared::key_catch_up`].
pub type KeyCatchUp =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

impl Shared {
    /// Build from an open engine and settings, with a budget of bytes in
    /// flight that never refuses (see [`Shared::with_budget`]).
    pub fn new(engine: Engine, config: SmtpConfig) -> Result<Arc<Self>, std::io::Error> {
        Self::with_budget(engine, config, uncorreo_budget::Budget::unlimited())
    }

    /// Build from an open engine, settings and the process-wide budget of
    /// bytes in flight; loads the TLS certificate if one is configured.
    pub fn with_budget(
        engine: Engine,
        config: SmtpConfig,
        budget: uncorreo_budget::Budget,
    ) -> Result<Arc<Self>, std::io::Error> {
        Self::with_faults(engine, config, budget, Arc::default())
    }

    /// [`Shared::with_budget`], applying the fault plans in `faults` (the
    /// API's, so plans set there take effect here).
    pub fn with_faults(
        engine: Engine,
        config: SmtpConfig,
        budget: uncorreo_budget::Budget,
        faults: Arc<uncorreo_faults::FaultPlans>,
    ) -> Result<Arc<Self>, std::io::Error> {
        Self::with_cluster(engine, config, budget, faults, None)
    }

    /// [`Shared::with_faults`] on a host of a cluster: recipients whose
    /// mailbox another host owns are resolved and stored there.
    pub fn with_cluster(
        engine: Engine,
        config: SmtpConfig,
        budget: uncorreo_budget::Budget,
        faults: Arc<uncorreo_faults::FaultPlans>,
        cluster: Option<Arc<uncorreo_hop::Cluster>>,
    ) -> Result<Arc<Self>, std::io::Error> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(load_tls(cert, key)?),
            (None, None) => None,
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "smtp.tls_cert and smtp.tls_key must be set together",
                ))
            }
        };
        if config.tls_listen.is_some() && tls.is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "smtp.tls_listen needs smtp.tls_cert and smtp.tls_key",
            ));
        }
        let engine_max = engine
            .config()
            .max_message_bytes
            .saturating_sub(received::MAX_RECEIVED_BYTES);
        let max_message_bytes = match config.max_message_bytes {
            0 => engine_max,
            n => n.min(engine_max),
        };
        Ok(Arc::new(Self {
            key_user: std::sync::OnceLock::new(),
            key_catch_up: std::sync::OnceLock::new(),
            engine,
            max_message_bytes,
            tls,
            auth_failures: auth::FailureCounter::new(
                config.max_auth_failures,
                config.auth_failure_window,
            ),
            budget,
            faults,
            cluster,
            active: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            ids: AtomicU64::new(0),
            id_prefix: received::now_unix() & 0xFFFF_FFFF,
            config,
        }))
    }

    /// A transaction id unique within this process run (and, by its time
    /// prefix, practically across runs): used in `Received:` and `250`.
    pub fn next_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        format!("{:08X}{:08X}", self.id_prefix, n)
    }

    /// False when the engine refuses writes (poisoned after a failed sync):
    /// MAIL and DATA then get `451 4.3.0` before the client sends a body.
    pub fn engine_healthy(&self) -> bool {
        !self.engine.is_poisoned()
    }

    /// Open sessions on all cores.
    pub fn active_sessions(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Take a connection slot for `ip`, or `None` when a limit is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let prev = self.active.fetch_add(1, Ordering::AcqRel);
        if prev >= self.config.max_connections {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= self.config.max_connections_per_ip {
            drop(map);
            self.active.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        *n += 1;
        drop(map);
        metrics::gauge!(uncorreo_metric_names::SMTP_ACTIVE_SESSIONS).increment(1.0);
        Some(Slot {
            shared: Arc::clone(self),
            ip,
        })
    }
}

/// A connection slot; released when dropped.
pub struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        drop(map);
        self.shared.active.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(uncorreo_metric_names::SMTP_ACTIVE_SESSIONS).decrement(1.0);
    }
}

fn load_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, std::io::Error> {
    use std::io::{Error, ErrorKind};
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| Error::new(e.kind(), format!("{}: {e}", p.display())))
    };
    let certs =
        rustls_pemfile::certs(&mut read(cert)?.as_slice()).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("{}: no certificate found", cert.display()),
        ));
    }
    let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())?.ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidData,
            format!("{}: no private key found", key.display()),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::InvalidData, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serve one connection from `peer` to its end: connection limits, the
/// session, and the STARTTLS upgrade. Returns the outcome label.
pub async fn handle_connection<S>(
    mut stream: S,
    peer: IpAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> &'static str
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(slot) = shared.admit(peer) else {
        let reply = format!(
            "421 4.7.0 {} Too many connections, try again later\r\n",
            shared.config.hostname
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            stream.write_all(reply.as_bytes()).await?;
            stream.shutdown().await
        })
        .await;
        return "too_many_connections";
    };
    let outcome = session_with_starttls(stream, peer, &shared, shutdown).await;
    drop(slot);
    metrics::counter!(uncorreo_metric_names::SMTP_SESSIONS_TOTAL, "outcome" => outcome)
        .increment(1);
    outcome
}

/// Serve one connection of the implicit-TLS listener (SMTPS, RFC 8314
/// §3.3): the TLS handshake comes first, then the session (greeting
/// included) runs encrypted, with STARTTLS not offered.
pub async fn handle_implicit_tls_connection<S>(
    mut stream: S,
    peer: IpAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> &'static str
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(acceptor) = shared.tls.clone() else {
        return "tls_failed";
    };
    let Some(slot) = shared.admit(peer) else {
        // Nothing can be said in clear text to a TLS client: just close.
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.shutdown()).await;
        return "too_many_connections";
    };
    let handshake =
        tokio::time::timeout(shared.config.tls_handshake_timeout, acceptor.accept(stream)).await;
    let outcome = match handshake {
        Ok(Ok(tls)) => {
            let session = Session::new(tls, Arc::clone(&shared), peer, shutdown, true);
            match session.run(true).await {
                End::Closed(why) => why,
                End::StartTls(_) => "tls_failed",
            }
        }
        _ => "tls_failed",
    };
    drop(slot);
    metrics::counter!(uncorreo_metric_names::SMTP_SESSIONS_TOTAL, "outcome" => outcome)
        .increment(1);
    outcome
}

async fn session_with_starttls<S>(
    stream: S,
    peer: IpAddr,
    shared: &Arc<Shared>,
    shutdown: CancellationToken,
) -> &'static str
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let plain = Session::new(stream, Arc::clone(shared), peer, shutdown.clone(), false);
    match plain.run(true).await {
        End::Closed(why) => why,
        End::StartTls(stream) => match shared.tls.clone() {
            None => "tls_failed",
            Some(acceptor) => {
                let handshake = tokio::time::timeout(
                    shared.config.tls_handshake_timeout,
                    acceptor.accept(stream),
                )
                .await;
                match handshake {
                    Ok(Ok(tls)) => {
                        let s = Session::new(tls, Arc::clone(shared), peer, shutdown, true);
                        match s.run(false).await {
                            End::Closed(why) => why,
                            End::StartTls(_) => "tls_failed",
                        }
                    }
                    _ => "tls_failed",
                }
            }
        },
    }
}

/// Accept connections on `listener` (this core's SO_REUSEPORT socket) until
/// `shutdown` is cancelled, then wait for this core's sessions: idle ones
/// are told `421` at once, ones mid-transaction get `shutdown_grace` to finish.
/// Runs on a current-thread runtime; sessions never leave it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    accept_loop(listener, shared, shutdown, false).await
}

/// [`serve`] for the implicit-TLS listener (`smtp.tls_listen`).
pub async fn serve_implicit_tls(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    accept_loop(listener, shared, shutdown, true).await
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    implicit_tls: bool,
) {
    let sessions = TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    let shutdown = shutdown.clone();
                    if implicit_tls {
                        sessions.spawn(handle_implicit_tls_connection(stream, addr.ip(), shared, shutdown));
                    } else {
                        sessions.spawn(handle_connection(stream, addr.ip(), shared, shutdown));
                    }
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(listener);
    sessions.close();
    sessions.wait().await;
}
