//! Who is calling, and may they see this mailbox. Reused by every route
//! family (REST, WebSocket, SSE, long-poll): extract a [`Caller`], then ask
//! [`authorize_mailbox`].
//!
//! Credentials:
//! - `Authorization: Bearer uct_…` — an API key, looked up by its SHA-256;
//!   unknown or revoked keys get `401 invalid-credentials` on every route.
//! - `Authorization: Bearer <token>` (anything not starting `uct_`) or
//!   `X-Session-Token: <token>` — an anonymous mailbox's session token,
//!   looked up by its SHA-256 (a token that opens no live mailbox:
//!   `401 invalid-credentials` on every route), then compared in constant
//!   time against the owner of the mailbox asked for.
//! - nothing — anonymous: may only create mailboxes.
//! - anything else (another scheme, an empty or over-long value, non-ASCII):
//!   `401 invalid-credentials`.
//!
//! Architecture invariant: a mailbox the caller may not see answers exactly
//! like one that does not exist (`404` with the one [`Problem::not_found`]
//! body). Only what depends on the credential alone, never on the resource,
//! is told apart with `401`: no credential, or one that matches nothing.
//!
//! Every request that extracts a [`Caller`] is also rate-limited here: once
//! per client IP, and once per API key (or per IP at the anonymous plan's
//! rate when there is no key).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uncorreo_engine::{Address, ApiKeyId, MailboxInfo, Owner, UserId};

use crate::plans::NamedPlan;
use crate::problem::{Kind, Problem};
use crate::ratelimit::{client_key, BucketKey};
use crate::AppState;

/// Prefix of every API key.
pub const KEY_PREFIX: &str = "uct_";
/// Characters of a key kept for display (`uct_` + 8).
pub const DISPLAY_PREFIX_LEN: usize = 12;
/// Header carrying a session token (alternative to `Authorization: Bearer`).
pub const SESSION_HEADER: &str = "x-session-token";
/// Longest credential we hash; anything longer is refused without work.
pub const MAX_CREDENTIAL_LEN: usize = 512;

/// A credential as presented, before it is checked.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// No credential.
    None,
    /// An API key (`uct_…`).
    ApiKey(String),
    /// A mailbox session token.
    SessionToken(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        match self {
            Self::None => write!(f, "None"),
            Self::ApiKey(_) => write!(f, "ApiKey(..)"),
            Self::SessionToken(_) => write!(f, "SessionToken(..)"),
        }
    }
}

impl Credential {
    /// Read the credential from request headers. `Authorization` wins over
    /// `X-Session-Token`. A malformed `Authorization` is an error.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, Problem> {
        if let Some(v) = headers.get(header::AUTHORIZATION) {
            let v = v
                .to_str()
                .map_err(|_| invalid("Authorization is not ASCII"))?
                .trim();
            let (scheme, token) = v
                .split_once(' ')
                .ok_or_else(|| invalid("expected Authorization: Bearer <key or session token>"))?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(invalid("only the Bearer scheme is accepted"));
            }
            return Self::from_token(token.trim());
        }
        if let Some(v) = headers.get(SESSION_HEADER) {
            let v = v
                .to_str()
                .map_err(|_| invalid("X-Session-Token is not ASCII"))?
                .trim();
            return Ok(Self::SessionToken(bounded(v)?.to_owned()));
        }
        Ok(Self::None)
    }

    /// Classify a bare token (e.g. from a WebSocket query parameter).
    pub fn from_token(token: &str) -> Result<Self, Problem> {
        let token = bounded(token)?;
        if token.is_empty() {
            return Err(invalid("empty credential"));
        }
        Ok(if token.starts_with(KEY_PREFIX) {
            Self::ApiKey(token.to_owned())
        } else {
            Self::SessionToken(token.to_owned())
        })
    }
}

fn bounded(s: &str) -> Result<&str, Problem> {
    if s.len() > MAX_CREDENTIAL_LEN {
        Err(invalid("credential too long"))
    } else {
        Ok(s)
    }
}

fn invalid(detail: &str) -> Problem {
    Problem::new(Kind::InvalidCredentials, detail)
}

/// A checked caller.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No credential: may create mailboxes (on the anonymous plan), nothing else.
    Anonymous {
        /// Client address (for quotas).
        ip: IpAddr,
    },
    /// A session token; whether it opens a given mailbox is decided per mailbox.
    Session {
        /// SHA-256 of the token.
        token_hash: [u8; 32],
        /// Client address.
        ip: IpAddr,
    },
    /// A user, through one of their live API keys.
    User {
        /// The user.
        user: UserId,
        /// The key used.
        key: ApiKeyId,
        /// The user's effective plan now.
        plan: NamedPlan,
        /// Client address.
        ip: IpAddr,
    },
}

impl Caller {
    /// The client address.
    pub fn ip(&self) -> IpAddr {
        match self {
            Self::Anonymous { ip } | Self::Session { ip, .. } | Self::User { ip, .. } => *ip,
        }
    }

    /// Check `cred` from `ip` and charge the rate limits.
    pub fn authenticate(state: &AppState, cred: Credential, ip: IpAddr) -> Result<Self, Problem> {
        let now = state.engine.now_ms();
        let limits = state.limits();
        let client = client_key(ip);
        state
            .limiter()
            .check(BucketKey::Ip(client), limits.ip_requests_per_minute, now)
            .map_err(rate_limited)?;
        let caller = match cred {
            Credential::None => Self::Anonymous { ip },
            Credential::SessionToken(t) => {
                let token_hash = sha256(t.as_bytes());
                // A token that opens no live mailbox is refused here, on
                // every route: it says nothing about any mailbox, so `401`
                // leaks nothing, and it keeps a typo from looking like an
                // empty account. A live token on a mailbox it does not open
                // is still the one `404` (`authorize_mailbox`).
                if state.engine.mailbox_by_token_hash(&token_hash).is_none() {
                    return Err(invalid("unknown or expired session token"));
                }
                Self::Session { token_hash, ip }
            }
            Credential::ApiKey(k) => {
                let accounts = &state.accounts;
                let key = accounts
                    .api_key_by_hash(&sha256(k.as_bytes()))
                    .filter(|k| k.revoked_at_ms.is_none())
                    // A disabled user's keys are revoked too; this also
                    // covers a key minted in the moment before.
                    .filter(|k| accounts.user_disabled_at(k.user).is_none())
                    .ok_or_else(|| invalid("unknown or revoked API key"))?;
                let user = accounts
                    .user(key.user)
                    .ok_or_else(|| invalid("unknown or revoked API key"))?;
                let plan = crate::plans::effective_plan(state.plans(), limits, &user, now)
                    .ok_or_else(|| Problem::new(Kind::Internal, "no plan configured"))?;
                Self::User {
                    user: user.id,
                    key: key.id,
                    plan,
                    ip,
                }
            }
        };
        let (bucket, per_minute) = match &caller {
            Self::User { key, plan, .. } => (BucketKey::Key(*key), plan.plan.requests_per_minute),
            _ => (
                BucketKey::Anonymous(client),
                state.anonymous_plan().plan.requests_per_minute,
            ),
        };
        state
            .limiter()
            .check(bucket, per_minute, now)
            .map_err(rate_limited)?;
        Ok(caller)
    }

    /// The plan governing what this caller creates.
    pub fn plan(&self, state: &AppState) -> NamedPlan {
        match self {
            Self::User { plan, .. } => plan.clone(),
            _ => state.anonymous_plan().clone(),
        }
    }

    /// The user, or the right refusal for routes that need an API key.
    pub fn require_user(&self) -> Result<UserId, Problem> {
        match self {
            Self::User { user, .. } => Ok(*user),
            Self::Anonymous { .. } => Err(auth_required()),
            Self::Session { .. } => Err(Problem::new(
                Kind::ApiKeyRequired,
                "this endpoint needs an API key; a session token only opens its mailbox",
            )),
        }
    }

    /// The owner value that mailboxes of this caller carry, if it can own any
    /// without creating a new session (anonymous callers cannot).
    pub fn owner(&self) -> Option<Owner> {
        match self {
            Self::Anonymous { .. } => None,
            Self::Session { token_hash, .. } => Some(Owner::Anonymous {
                token_hash: *token_hash,
            }),
            Self::User { user, .. } => Some(Owner::User(*user)),
        }
    }
}

fn rate_limited(l: crate::ratelimit::Limited) -> Problem {
    metrics::counter!(uncorreo_metric_names::HTTP_RATE_LIMITED_TOTAL).increment(1);
    Problem::new(Kind::RateLimited, "rate limit exceeded; slow down")
        .retry_after(l.retry_after_secs)
}

fn auth_required() -> Problem {
    Problem::new(
        Kind::AuthenticationRequired,
        "send an API key or the mailbox's session token (Authorization: Bearer …)",
    )
}

/// The client IP of a request: the socket peer, or the last
/// `X-Forwarded-For` entry when configured to trust a proxy.
pub fn client_ip(state: &AppState, parts: &Parts) -> IpAddr {
    if state.limits().trust_forwarded_for {
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            // Only the entry our proxy appended is trustworthy; earlier ones
            // are whatever the client sent.
            .and_then(|s| s.trim().parse::<IpAddr>().ok());
        if let Some(ip) = forwarded {
            return ip;
        }
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Before `cred` is checked: if it is an API key this host does not know,
/// let the accounts catch up first ([`crate::accounts::Accounts::catch_up`]:
/// in a cluster, one round trip to NATS, only for unknown keys).
pub async fn catch_up_for(state: &AppState, cred: &Credential) {
    if let Credential::ApiKey(k) = cred {
        if state
            .accounts
            .api_key_by_hash(&sha256(k.as_bytes()))
            .is_none()
        {
            state.accounts.catch_up().await;
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let ip = client_ip(state, parts);
        let cred = Credential::from_headers(&parts.headers)?;
        catch_up_for(state, &cred).await;
        Caller::authenticate(state, cred, ip)
    }
}

/// The live mailbox at `address` if `caller` may see it; otherwise the one
/// not-found answer (or `401` when there is no credential at all).
pub fn authorize_mailbox(
    state: &AppState,
    caller: &Caller,
    address: &str,
) -> Result<MailboxInfo, Problem> {
    if let Caller::Anonymous { .. } = caller {
        return Err(auth_required());
    }
    let addr = Address::parse(address).map_err(|_| Problem::not_found())?;
    let mb = state.engine.mailbox(&addr).ok_or_else(Problem::not_found)?;
    if may_see(caller, &mb.owner) {
        Ok(mb)
    } else {
        Err(Problem::not_found())
    }
}

/// True if `caller` may see a mailbox owned by `owner`.
pub fn may_see(caller: &Caller, owner: &Owner) -> bool {
    match (owner, caller) {
        (Owner::User(owner), Caller::User { user, .. }) => owner == user,
        (Owner::Anonymous { token_hash }, Caller::Session { token_hash: t, .. }) => {
            bool::from(token_hash.ct_eq(t))
        }
        _ => false,
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A freshly minted secret: shown to its owner once, stored only as `hash`.
pub struct NewSecret {
    /// The secret to hand out.
    pub secret: String,
    /// Its SHA-256.
    pub hash: [u8; 32],
}

/// A new API key: `uct_` + 32 url-safe base64 characters (24 random bytes).
pub fn new_api_key() -> (NewSecret, String) {
    let mut raw = [0u8; 24];
    rand::rng().fill_bytes(&mut raw);
    let secret = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let prefix = secret.chars().take(DISPLAY_PREFIX_LEN).collect();
    let hash = sha256(secret.as_bytes());
    (NewSecret { secret, hash }, prefix)
}

/// Prefix of a session token minted by a host of a cluster.
pub const SESSION_PREFIX: &str = "ust_";
/// Characters of a session token's random part (32 bytes, url-safe base64).
const SESSION_RANDOM_LEN: usize = 43;

/// A new session token: 32 random bytes, url-safe base64 (43 characters).
/// In a cluster (`partition` given, the partition of the mailbox it opens)
/// it is `ust_<partition>_` and those 43 characters, so any host can tell
/// which host keeps its mailbox without knowing the token (SCALE.md,
/// "Mailpit"). The hash is over the whole token, prefix included, so the
/// prefix cannot be changed without breaking it.
pub fn new_session_token(partition: Option<u16>) -> NewSecret {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let random = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let secret = match partition {
        Some(p) => format!("{SESSION_PREFIX}{p}_{random}"),
        None => random,
    };
    let hash = sha256(secret.as_bytes());
    NewSecret { secret, hash }
}

/// The partition a session token names in its prefix; `None` for a token
/// without one (minted by a single host), which is never mistaken for one:
/// those are exactly 43 characters, shorter than any prefixed token. Only a
/// routing hint: the token itself is checked by its hash on the host it
/// reaches.
pub fn session_token_partition(token: &str) -> Option<u16> {
    let (digits, random) = token.strip_prefix(SESSION_PREFIX)?.split_once('_')?;
    if digits.is_empty() || digits.len() > 5 || random.len() != SESSION_RANDOM_LEN {
        return None;
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn api_keys_have_the_documented_shape() {
        let (k, prefix) = new_api_key();
        assert!(k.secret.starts_with("uct_"));
        assert_eq!(k.secret.len(), 4 + 32);
        assert!(k.secret[4..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(prefix.len(), 12);
        assert!(k.secret.starts_with(&prefix));
        assert_eq!(k.hash, sha256(k.secret.as_bytes()));
    }

    #[test]
    fn session_tokens_are_32_bytes_of_url_safe_base64() {
        let t = new_session_token(None);
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&t.secret)
            .unwrap();
        assert_eq!(raw.len(), 32);
        assert!(!t.secret.starts_with(KEY_PREFIX));
        assert_eq!(session_token_partition(&t.secret), None);
    }

    #[test]
    fn a_cluster_session_token_names_its_partition_and_is_hashed_whole() {
        for p in [0u16, 7, 517, 1023] {
            let t = new_session_token(Some(p));
            assert!(t.secret.starts_with(&format!("ust_{p}_")), "{}", t.secret);
            assert_eq!(session_token_partition(&t.secret), Some(p));
            assert_eq!(t.hash, sha256(t.secret.as_bytes()));
            assert!(matches!(
                Credential::from_token(&t.secret),
                Ok(Credential::SessionToken(_))
            ));
            let random = t.secret.rsplit_once('_').map_or("", |(_, r)| r);
            assert!(t.secret.len() >= 4 + 2 + 43 && !random.is_empty());
        }
        // Tokens without a prefix, and look-alikes, name no partition.
        let old = new_session_token(None).secret;
        for bad in [
            old.as_str(),
            "ust__AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "ust_x1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "ust_1_short",
            "ust_99999999_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "uct_1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(session_token_partition(bad), None, "{bad}");
        }
    }

    #[test]
    fn credentials_are_read_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(Credential::from_headers(&h).unwrap(), Credential::None);
        h.insert(SESSION_HEADER, HeaderValue::from_static("tok"));
        assert_eq!(
            Credential::from_headers(&h).unwrap(),
            Credential::SessionToken("tok".into())
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer uct_abc"),
        );
        assert_eq!(
            Credential::from_headers(&h).unwrap(),
            Credential::ApiKey("uct_abc".into())
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic x"));
        assert_eq!(
            Credential::from_headers(&h).unwrap_err().kind,
            Kind::InvalidCredentials
        );
    }
}
