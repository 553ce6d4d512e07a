//! Authentication of the internal hop between hosts.
//!
//! Every internal request carries `X-Uncorreo-Hop: t=<unix seconds>,v1=<hex>`,
//! where the hex is HMAC-SHA256 under the cluster secret over the method, the
//! path with its query, the timestamp and the body, each separated by a
//! newline. The receiver recomputes it, compares in constant time, and
//! refuses a timestamp more than [`MAX_SKEW`] away from its own clock, so a
//! captured request cannot be replayed later. (Within the window a replay is
//! harmless: deliveries carry their idempotency key.)

use std::time::Duration;

use hmac::{KeyInit, Mac};

/// The header that carries the signature.
pub const HEADER: &str = "x-uncorreo-hop";

/// How far a request's timestamp may be from the receiver's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(30);

/// The shortest secret accepted: 32 bytes, as long as a SHA-256 output, so
/// the key is no weaker than the tag.
pub const MIN_SECRET_BYTES: usize = 32;

/// The cluster's shared secret.
#[derive(Clone)]
pub struct HopSecret(Vec<u8>);

impl std::fmt::Debug for HopSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HopSecret(..)")
    }
}

/// A secret too short to sign with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cluster secret has {0} bytes; it needs at least {MIN_SECRET_BYTES}")]
pub struct SecretTooShort(pub usize);

impl HopSecret {
    /// A secret from its bytes (surrounding whitespace of a secret file is
    /// the caller's to trim).
    pub fn new(bytes: Vec<u8>) -> Result<HopSecret, SecretTooShort> {
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(SecretTooShort(bytes.len()));
        }
        Ok(HopSecret(bytes))
    }

    fn mac(
        &self,
        method: &str,
        path: &str,
        timestamp: u64,
        body: &[u8],
    ) -> hmac::Hmac<sha2::Sha256> {
        // The length was checked at construction, and HMAC takes keys of any length.
        let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        };
        for part in [
            method.as_bytes(),
            b"\n",
            path.as_bytes(),
            b"\n",
            timestamp.to_string().as_bytes(),
            b"\n",
        ] {
            mac.update(part);
        }
        mac.update(body);
        mac
    }

    /// The header value for a request sent at `timestamp` (unix seconds).
    pub fn sign(&self, method: &str, path: &str, timestamp: u64, body: &[u8]) -> String {
        let tag = self
            .mac(method, path, timestamp, body)
            .finalize()
            .into_bytes();
        format!("t={timestamp},v1={}", hex::encode(tag))
    }

    /// Checks a request's header value against its method, path and body at
    /// the receiver's clock `now` (unix seconds).
    pub fn verify(
        &self,
        header: &str,
        method: &str,
        path: &str,
        now: u64,
        body: &[u8],
    ) -> Result<(), HopRefused> {
        let (timestamp, tag) = parse(header).ok_or(HopRefused::Malformed)?;
        if now.abs_diff(timestamp) > MAX_SKEW.as_secs() {
            return Err(HopRefused::Stale { timestamp, now });
        }
        self.mac(method, path, timestamp, body)
            .verify_slice(&tag)
            .map_err(|_| HopRefused::BadSignature)
    }
}

fn parse(header: &str) -> Option<(u64, Vec<u8>)> {
    let (timestamp, tag) = header.split_once(',')?;
    let timestamp = timestamp.strip_prefix("t=")?.parse().ok()?;
    let tag = hex::decode(tag.strip_prefix("v1=")?).ok()?;
    Some((timestamp, tag))
}

/// Why an internal request was refused (the hop answers 401 to each).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HopRefused {
    /// The header is not `t=<seconds>,v1=<hex>`.
    #[error("the hop signature header is malformed")]
    Malformed,
    /// The timestamp is outside the allowed skew.
    #[error("the hop request was signed at {timestamp}, too far from now ({now})")]
    Stale {
        /// When the sender signed.
        timestamp: u64,
        /// The receiver's clock.
        now: u64,
    },
    /// The signature does not match (wrong secret, or a changed request).
    #[error("the hop signature does not match")]
    BadSignature,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8) -> HopSecret {
        HopSecret::new(vec![byte; 32]).unwrap_or_else(|error| panic!("{error}"))
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_signed_request_verifies() {
        let header = secret(1).sign("POST", "/internal/v1/deliver", NOW, b"body");
        assert_eq!(
            secret(1).verify(&header, "POST", "/internal/v1/deliver", NOW + 30, b"body"),
            Ok(())
        );
    }

    #[test]
    fn any_changed_part_is_refused() {
        let header = secret(1).sign("POST", "/internal/v1/deliver", NOW, b"body");
        let refused = Err(HopRefused::BadSignature);
        assert_eq!(
            secret(2).verify(&header, "POST", "/internal/v1/deliver", NOW, b"body"),
            refused
        );
        assert_eq!(
            secret(1).verify(&header, "PUT", "/internal/v1/deliver", NOW, b"body"),
            refused
        );
        assert_eq!(
            secret(1).verify(&header, "POST", "/internal/v1/read", NOW, b"body"),
            refused
        );
        assert_eq!(
            secret(1).verify(&header, "POST", "/internal/v1/deliver", NOW, b"bodY"),
            refused
        );
        // The timestamp is signed too: moving it breaks the signature.
        let moved = header.replacen(&format!("t={NOW}"), &format!("t={}", NOW + 1), 1);
        assert_eq!(
            secret(1).verify(&moved, "POST", "/internal/v1/deliver", NOW, b"body"),
            refused
        );
    }

    #[test]
    fn old_and_future_timestamps_are_refused() {
        let header = secret(1).sign("GET", "/x", NOW, b"");
        assert_eq!(
            secret(1).verify(&header, "GET", "/x", NOW + 31, b""),
            Err(HopRefused::Stale {
                timestamp: NOW,
                now: NOW + 31
            })
        );
        assert_eq!(
            secret(1).verify(&header, "GET", "/x", NOW - 31, b""),
            Err(HopRefused::Stale {
                timestamp: NOW,
                now: NOW - 31
            })
        );
    }

    #[test]
    fn malformed_headers_and_short_secrets_are_refused() {
        for header in [
            "",
            "t=1",
            "v1=00,t=1",
            "t=x,v1=00",
            "t=1,v1=zz",
            "t=1;v1=00",
        ] {
            assert_eq!(
                secret(1).verify(header, "GET", "/x", 1, b""),
                Err(HopRefused::Malformed),
                "{header}"
            );
        }
        assert_eq!(HopSecret::new(vec![0; 31]).err(), Some(SecretTooShort(31)));
    }
}
