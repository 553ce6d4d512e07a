//! SMTP AUTH (RFC 4954): the pure SASL decoding of `PLAIN` (RFC 4616) and
//! `LOGIN`, the modes, and the bounded per-IP counter of failed attempts.
//! The session drives the exchange; checking a credential against the
//! engine (`keys` mode) happens there, through engine lookups only.
//!
//! Decisions:
//! * AUTH is offered only on an encrypted connection (after STARTTLS or on
//!   the implicit-TLS listener) unless `auth_allow_plaintext` is set, for
//!   loopback test setups; before that `AUTH` gets `538 5.7.11`.
//! * Authenticating is never required to send: the same port is the MX for
//!   mail from anywhere. In `keys` mode an authenticated session may only
//!   send to mailboxes its credential owns.
//! * Every failure (`535 5.7.8`) counts against the client's IP; once it has
//!   `max_auth_failures` inside `auth_failure_window`, AUTH from it gets
//!   `421 4.7.0` and the session closes, until the window has passed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// Longest decoded SASL response we look at (a 512-octet credential plus
/// user names fits; a command line is capped before this anyway).
pub const MAX_RESPONSE: usize = 1024;
/// Client IPs the failure counter remembers at most.
pub const MAX_TRACKED_IPS: usize = 65_536;

/// What `AUTH` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Not advertised; `AUTH` gets `502 5.5.1`.
    #[default]
    Off,
    /// Any user name and password are accepted (a mail catcher for apps
    /// that insist on logging in).
    AcceptAny,
    /// The password must be an API key (any user name), or a mailbox's
    /// session token with that mailbox's address as the user name.
    Keys,
}

/// Credentials a client sent, decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The identity to act as (PLAIN's authzid); empty when not given.
    pub authzid: String,
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why a SASL response could not be read: `501 5.5.2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SaslError {
    /// Not base64.
    #[error("response is not base64")]
    NotBase64,
    /// Decoded, but not UTF-8 text.
    #[error("response is not UTF-8")]
    NotUtf8,
    /// Longer than [`MAX_RESPONSE`].
    #[error("response too long")]
    TooLong,
    /// `PLAIN` without its two NUL separators, or with an empty user name.
    #[error("malformed PLAIN response")]
    Malformed,
}

/// Decode one base64 response line (without its line end) to text. `=`
/// alone is the empty response (RFC 4954 §4).
pub fn decode_text(b64: &str) -> Result<String, SaslError> {
    let b64 = b64.trim_end_matches(['\r', '\n']);
    if b64 == "=" {
        return Ok(String::new());
    }
    if b64.len() > MAX_RESPONSE.div_ceil(3) * 4 {
        return Err(SaslError::TooLong);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| SaslError::NotBase64)?;
    String::from_utf8(bytes).map_err(|_| SaslError::NotUtf8)
}

/// Decode a `PLAIN` response: `authzid NUL authcid NUL passwd`.
pub fn decode_plain(b64: &str) -> Result<Credentials, SaslError> {
    let text = decode_text(b64)?;
    let mut parts = text.splitn(3, '\0');
    let (Some(authzid), Some(username), Some(password)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if username.is_empty() || password.contains('\0') {
        return Err(SaslError::Malformed);
    }
    Ok(Credentials {
        authzid: authzid.to_owned(),
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// `334` challenge of `LOGIN` asking for the user name (`Username:`).
pub const LOGIN_USERNAME: &str = "334 VXNlcm5hbWU6";
/// `334` challenge of `LOGIN` asking for the password (`Password:`).
pub const LOGIN_PASSWORD: &str = "334 UGFzc3dvcmQ6";

/// Failed AUTH attempts per client IP inside a window; bounded in memory.
pub struct FailureCounter {
    max: u32,
    window: Duration,
    by_ip: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailureCounter {
    /// Allow `max` failures per IP per `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            by_ip: Mutex::new(HashMap::new()),
        }
    }

    /// True when `ip` has used up its failures in the current window.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        let map = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&ip)
            .is_some_and(|(n, since)| *n >= self.max && now.duration_since(*since) < self.window)
    }

    /// Count one failure of `ip`; returns its failures in the current window.
    pub fn fail(&self, ip: IpAddr, now: Instant) -> u32 {
        let mut map = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED_IPS && !map.contains_key(&ip) {
            let window = self.window;
            map.retain(|_, (_, since)| now.duration_since(*since) < window);
            if map.len() >= MAX_TRACKED_IPS {
                // Still full of live entries: forget them rather than grow.
                // Losing counts only lets a very wide attack guess a little
                // more; unbounded memory would take the server down.
                tracing::warn!("AUTH failure table full; cleared");
                map.clear();
            }
        }
        let entry = map.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= self.window {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
        entry.0
    }

    /// Client IPs tracked now.
    pub fn tracked(&self) -> usize {
        self.by_ip.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn plain_is_decoded() {
        let c = decode_plain(&b64(b"\0alice\0s3cret")).unwrap();
        assert_eq!(
            (c.authzid.as_str(), c.username.as_str(), c.password.as_str()),
            ("", "alice", "s3cret")
        );
        let c = decode_plain(&b64(b"admin\0alice\0")).unwrap();
        assert_eq!((c.authzid.as_str(), c.password.as_str()), ("admin", ""));
        assert_eq!(decode_plain(&b64(b"alice\0pw")), Err(SaslError::Malformed));
        assert_eq!(decode_plain(&b64(b"\0\0pw")), Err(SaslError::Malformed));
        assert_eq!(decode_plain(&b64(b"a\0b\0c\0d")), Err(SaslError::Malformed));
        assert_eq!(decode_plain("="), Err(SaslError::Malformed));
        assert_eq!(decode_plain("not base64!"), Err(SaslError::NotBase64));
        assert_eq!(decode_plain(&b64(b"\0a\0\xff")), Err(SaslError::NotUtf8));
        assert!(
            !format!("{:?}", decode_plain(&b64(b"\0alice\0s3cret")).unwrap()).contains("s3cret")
        );
    }

    #[test]
    fn text_responses_and_their_limit() {
        assert_eq!(decode_text("YWxpY2U=\r\n").unwrap(), "alice");
        assert_eq!(decode_text("=").unwrap(), "");
        let max = b64(&vec![b'a'; MAX_RESPONSE]);
        assert_eq!(decode_text(&max).unwrap().len(), MAX_RESPONSE);
        let over = b64(&vec![b'a'; MAX_RESPONSE + 3]);
        assert_eq!(decode_text(&over), Err(SaslError::TooLong));
        assert_eq!(LOGIN_USERNAME, format!("334 {}", b64(b"Username:")));
        assert_eq!(LOGIN_PASSWORD, format!("334 {}", b64(b"Password:")));
    }

    #[test]
    fn failures_block_an_ip_for_the_window_only() {
        let counter = FailureCounter::new(3, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(counter.fail(ip, t0), 1);
        assert_eq!(counter.fail(ip, t0), 2);
        assert!(!counter.blocked(ip, t0));
        assert_eq!(counter.fail(ip, t0), 3);
        assert!(counter.blocked(ip, t0));
        assert!(!counter.blocked(other, t0));
        let later = t0 + Duration::from_secs(60);
        assert!(!counter.blocked(ip, later));
        assert_eq!(counter.fail(ip, later), 1);
    }

    #[test]
    fn the_table_stays_bounded() {
        let counter = FailureCounter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED_IPS as u32 + 10) {
            counter.fail(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(counter.tracked() <= MAX_TRACKED_IPS);
    }
}
