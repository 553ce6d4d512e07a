//! `[smtp]` settings. Every limit the server enforces is here, with the
//! defaults of RFC 5321 §4.5.3 where the RFC gives one, and each has a test
//! asserting its exact reply.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::auth::AuthMode;
pub use crate::data::BareLf;

/// SMTP settings (the `[smtp]` table of the config file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// Where to listen.
    pub listen: String,
    /// Name we give in the greeting, EHLO reply and `Received:` lines.
    pub hostname: String,
    /// PEM certificate chain; STARTTLS is offered only when this and `tls_key` are set.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// A second listener speaking TLS from the first byte (SMTPS, RFC 8314;
    /// e.g. `0.0.0.0:465`), with the same certificate. Off when unset.
    pub tls_listen: Option<String>,
    /// Bare LF in DATA/BDAT: `normalize` (stored as CRLF) or `reject` (`550 5.6.0`).
    pub bare_lf: BareLf,
    /// SMTP AUTH: `off`, `accept_any` or `keys` (see [`AuthMode`]).
    pub auth: AuthMode,
    /// Offer AUTH on unencrypted connections too (for loopback test setups).
    pub auth_allow_plaintext: bool,
    /// Failed AUTH attempts from one IP per `auth_failure_window` before
    /// AUTH from it gets `421 4.7.0`.
    pub max_auth_failures: u32,
    /// The window of `max_auth_failures`.
    #[serde(with = "secs")]
    pub auth_failure_window: Duration,
    /// Largest message body we accept, in octets (advertised as `SIZE`).
    /// 0 = the engine's `max_message_bytes` minus room for our `Received:` line.
    pub max_message_bytes: usize,
    /// Longest line, in octets including CRLF, for commands and DATA text
    /// (RFC 5321 §4.5.3.1.4/6 give 512 and 1000; we use one limit).
    pub max_line_bytes: usize,
    /// Octets of a message's header section (before the first empty line).
    pub max_header_bytes: usize,
    /// Lines in a message's header section.
    pub max_header_lines: usize,
    /// `Received:` fields in a message before it is refused as a mail loop
    /// (RFC 5321 §6.3).
    pub max_received_headers: usize,
    /// Recipients per transaction (RFC 5321 §4.5.3.1.8: at least 100).
    pub max_recipients: usize,
    /// Error replies (5xx) in one session before we answer `421 4.7.0` and close.
    pub max_errors: u32,
    /// Open sessions over all cores; past it new ones get `421 4.7.0`.
    pub max_connections: usize,
    /// Open sessions from one client IP; past it new ones get `421 4.7.0`.
    pub max_connections_per_ip: usize,
    /// Waiting for a whole command line (RFC 5321 §4.5.3.2.7: 5 minutes).
    #[serde(with = "secs")]
    pub command_timeout: Duration,
    /// Waiting for each block of DATA/BDAT (RFC 5321 §4.5.3.2.5: 3 minutes).
    #[serde(with = "secs")]
    pub data_timeout: Duration,
    /// After shutdown starts, how long a session mid-transaction may take to finish.
    #[serde(with = "secs")]
    pub shutdown_grace: Duration,
    /// The TLS handshake after STARTTLS.
    #[serde(with = "secs")]
    pub tls_handshake_timeout: Duration,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:2525".to_owned(),
            hostname: "uncorreo.test".to_owned(),
            tls_cert: None,
            tls_key: None,
            tls_listen: None,
            bare_lf: BareLf::Normalize,
            auth: AuthMode::Off,
            auth_allow_plaintext: false,
            max_auth_failures: 10,
            auth_failure_window: Duration::from_secs(300),
            max_message_bytes: 0,
            max_line_bytes: 1000,
            max_header_bytes: 256 * 1024,
            max_header_lines: 2000,
            max_received_headers: 100,
            max_recipients: 100,
            max_errors: 10,
            max_connections: 4096,
            max_connections_per_ip: 256,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            shutdown_grace: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(30),
        }
    }
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        if !(secs.is_finite() && (0.0..=86_400.0 * 365.0).contains(&secs)) {
            return Err(serde::de::Error::custom(
                "duration must be a non-negative number of seconds",
            ));
        }
        Ok(Duration::from_secs_f64(secs))
    }
}
