//! Mailpit API v1 compatibility under `/mailpit/`, so that suites written
//! for Mailpit (npm `mailpit-api`, `cypress-mailpit`, Playwright helpers)
//! run against uncorreo by changing their base URL and password.
//!
//! The "instance" a request sees is chosen by HTTP Basic auth: the password
//! is an API key (the instance is every live mailbox of that user) or a
//! mailbox session token (the instance is that mailbox); the username is
//! free text. Bodies, field names and status codes follow Mailpit's
//! `swagger.json`: JSON for data, plain text (`ok`, or the error message)
//! otherwise, `{"Error": …}` for `send`. Endpoints we do not offer
//! (`html-check`, `link-check`, `sa-check`, `chaos`, `release`, thumbnails,
//! tag renames) answer `501` with a plain-text message.
//!
//! Read flags and tags set through this API live in memory (bounded, see
//! [`marks`]); a message's own tags (its plus tag and `X-Tags`) come from the
//! stored bytes and survive restarts.
//!
//! Architecture invariant: these routes are Mailpit's contract, not ours,
//! so they are not in our OpenAPI document; they are registered here with
//! plain axum routing (the only module allowed to), every one behind
//! [`Instance`] except the probes, and checked by `tests/mailpit.rs`.
//! Everything they store goes through [`crate::send`] and so through
//! `Engine::deliver`.

mod across;
pub mod events;
pub mod follow;
pub mod handlers;
pub mod marks;
pub mod route;
pub mod search;
pub mod send;
pub mod sweep;
pub mod view;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use base64::Engine as _;
use parking_lot::Mutex;
use uncorreo_engine::{ListEntry, MailboxId, MailboxInfo, MessageId, MessageMeta, Owner};

use crate::auth::{client_ip, Caller, Credential};
use crate::problem::{Kind, Problem};
use crate::AppState;

/// Parsed messages kept for listings and searches (messages never change,
/// so a cached parse is never stale).
pub const CACHE_ENTRIES: usize = 4096;

/// An error in Mailpit's shape: a status and a plain-text message.
#[derive(Debug, Clone)]
pub struct MailpitError {
    /// HTTP status.
    pub status: StatusCode,
    /// The message (the whole body).
    pub message: String,
    /// Seconds after which a retry may succeed.
    pub retry_after: Option<u64>,
    /// The request body was left unread: the connection cannot carry
    /// another request, so the answer says `Connection: close` (as
    /// [`Problem::body_left_unread`] does for our own API).
    pub close_connection: bool,
}

impl MailpitError {
    /// `status` with `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
            close_connection: false,
        }
    }
    /// 400, Mailpit's answer to most bad requests.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// 404 (also for messages of other instances).
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found")
    }
    /// 501 for Mailpit features we do not offer.
    pub fn not_implemented(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("{what} is not supported by uncorreo's Mailpit-compatible API"),
        )
    }
}

impl From<Problem> for MailpitError {
    fn from(p: Problem) -> Self {
        let status = match p.kind {
            // Mailpit answers 404 for a missing message and 400 for the rest
            // of the client's mistakes; keep ours where a client could act on it.
            Kind::NotFound => return Self::not_found(),
            Kind::InvalidRequest | Kind::BadRequest | Kind::UnsupportedMediaType => {
                StatusCode::BAD_REQUEST
            }
            other => other.status(),
        };
        Self {
            status,
            message: p.detail,
            retry_after: p.retry_after,
            close_connection: p.body_left_unread,
        }
    }
}

/// Engine errors answer as the REST API would, in Mailpit's shape.
macro_rules! from_engine_error {
    ($($error:ty),*) => {$(
        impl From<$error> for MailpitError {
            fn from(e: $error) -> Self {
                Problem::from(e).into()
            }
        }
    )*};
}
from_engine_error!(
    uncorreo_engine::StorageError,
    uncorreo_engine::DeliverError,
    uncorreo_engine::WriteError,
    uncorreo_engine::LookupError
);

impl IntoResponse for MailpitError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, self.message).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.close_connection {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"uncorreo\""),
            );
        }
        resp
    }
}

/// Per-appliance state of the Mailpit API: the parse cache and the marks.
pub struct MailpitState {
    cache: Mutex<HashMap<MessageId, Arc<view::Extracted>>>,
    /// Read flags and tags set through this API.
    pub marks: marks::Marks,
    /// For `/info`'s uptime.
    pub started: std::time::Instant,
}

impl Default for MailpitState {
    fn default() -> Self {
        Self {
            cache: Mutex::default(),
            marks: marks::Marks::default(),
            started: std::time::Instant::now(),
        }
    }
}

impl MailpitState {
    fn cached(&self, id: MessageId) -> Option<Arc<view::Extracted>> {
        self.cache.lock().get(&id).cloned()
    }
    fn remember(&self, id: MessageId, x: Arc<view::Extracted>) {
        let mut c = self.cache.lock();
        if c.len() >= CACHE_ENTRIES {
            // Crude but bounded: parsing again is cheap next to unbounded memory.
            c.clear();
        }
        c.insert(id, x);
    }
}

/// The mailboxes a request may see, from its Basic credentials.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The checked caller (also for rate limits and the client address).
    pub caller: Caller,
    /// Live mailboxes, oldest first.
    pub mailboxes: Vec<MailboxInfo>,
}

impl Instance {
    /// The mailbox `id` if it is in this instance.
    pub fn mailbox(&self, id: MailboxId) -> Option<&MailboxInfo> {
        self.mailboxes.iter().find(|m| m.id == id)
    }
}

fn unauthorized(message: &str) -> MailpitError {
    MailpitError::new(StatusCode::UNAUTHORIZED, message)
}

/// The password of a Basic `Authorization` header.
pub fn basic_password(value: &str) -> Result<String, MailpitError> {
    let (scheme, encoded) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| unauthorized("expected Authorization: Basic"))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(unauthorized("expected Authorization: Basic"));
    }
    if encoded.len() > 4 * crate::auth::MAX_CREDENTIAL_LEN {
        return Err(unauthorized("credential too long"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| unauthorized("malformed Basic credentials"))?;
    let text =
        String::from_utf8(decoded).map_err(|_| unauthorized("malformed Basic credentials"))?;
    let (_user, password) = text
        .split_once(':')
        .ok_or_else(|| unauthorized("malformed Basic credentials"))?;
    Ok(password.to_owned())
}

impl FromRequestParts<AppState> for Instance {
    type Rejection = MailpitError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, MailpitError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                unauthorized("send Basic credentials: any username, an API key or a mailbox session token as the password")
            })?;
        let password = basic_password(value)?;
        let credential = Credential::from_token(&password).map_err(MailpitError::from)?;
        let ip = client_ip(state, parts);
        crate::auth::catch_up_for(state, &credential).await;
        let caller = Caller::authenticate(state, credential, ip).map_err(MailpitError::from)?;
        let owner = match &caller {
            Caller::User { user, .. } => Owner::User(*user),
            Caller::Session { token_hash, .. } => Owner::Anonymous {
                token_hash: *token_hash,
            },
            Caller::Anonymous { .. } => return Err(unauthorized("credentials required")),
        };
        let mailboxes = state.engine.mailboxes_owned_by(&owner);
        if mailboxes.is_empty() && matches!(caller, Caller::Session { .. }) {
            // A session token that opens no mailbox is not a credential.
            return Err(unauthorized("unknown session token"));
        }
        Ok(Self { caller, mailboxes })
    }
}

/// A message of the instance with its parse (cached).
pub struct Loaded {
    /// Index view.
    pub meta: MessageMeta,
    /// Its mailbox's address.
    pub address: String,
    /// Parsed fields.
    pub extracted: Arc<view::Extracted>,
}

impl Loaded {
    /// Read flag and tags now.
    pub fn marks(&self, state: &AppState) -> view::Flags {
        state.mailpit().marks.get(self.meta.id, || {
            view::default_tags(&self.meta, &self.extracted)
        })
    }
}

/// Parse `meta`'s message (or take the cached parse). A message too large
/// or too odd to parse is still listed, with what the index knows.
pub async fn load(
    state: &AppState,
    meta: MessageMeta,
    address: String,
) -> Result<Loaded, MailpitError> {
    if let Some(x) = state.mailpit().cached(meta.id) {
        return Ok(Loaded {
            meta,
            address,
            extracted: x,
        });
    }
    let raw = state.engine.read_raw(meta.id)?;
    let x = match crate::parse::guarded(raw, state.limits().parse_max_bytes, view::extract).await {
        Ok(x) => x,
        Err(_) => view::Extracted {
            subject: meta.summary.subject.clone(),
            ..Default::default()
        },
    };
    let x = Arc::new(x);
    state.mailpit().remember(meta.id, Arc::clone(&x));
    Ok(Loaded {
        meta,
        address,
        extracted: x,
    })
}

/// Every message of the instance, newest first, at most `limits.max_scan`.
pub fn instance_messages(
    state: &AppState,
    inst: &Instance,
) -> Result<Vec<(MessageMeta, String)>, MailpitError> {
    let max = state.limits().max_scan;
    let mut out = Vec::new();
    'boxes: for mb in &inst.mailboxes {
        let address = mb.address.to_string();
        let mut since = 0;
        loop {
            let page = state.engine.list_entries(mb.id, since, 512)?;
            let Some(last) = page.last() else { break };
            since = last.seq();
            let short = page.len() < 512;
            // Mailpit has no notion of a gap: a quarantined message is
            // simply not listed (our own API reports it).
            for entry in page {
                let ListEntry::Message(m) = entry else {
                    continue;
                };
                if out.len() >= max {
                    break 'boxes;
                }
                out.push((m, address.clone()));
            }
            if short {
                break;
            }
        }
    }
    out.sort_by_key(|m| std::cmp::Reverse((m.0.received_at_ms, m.0.id)));
    Ok(out)
}

/// The message named `id` (or `latest`) if it is in the instance.
pub fn resolve_id(
    state: &AppState,
    inst: &Instance,
    id: &str,
) -> Result<(MessageMeta, String), MailpitError> {
    if id == "latest" {
        return instance_messages(state, inst)?
            .into_iter()
            .next()
            .ok_or_else(MailpitError::not_found);
    }
    let id: MessageId = id.parse().map_err(|_| MailpitError::not_found())?;
    let mb = inst
        .mailbox(id.mailbox)
        .ok_or_else(MailpitError::not_found)?;
    let meta = state.engine.message_meta(id)?;
    Ok((meta, mb.address.to_string()))
}

/// The routes, to be served under `/mailpit`.
fn routes() -> Router<AppState> {
    use handlers as h;
    Router::new()
        .route("/livez", get(h::probe))
        .route("/readyz", get(h::ready))
        .route("/api/v1/info", get(h::info))
        .route("/api/v1/webui", get(h::webui))
        .route(
            "/api/v1/messages",
            get(h::list).put(h::set_read).delete(h::delete),
        )
        .route("/api/v1/search", get(h::search).delete(h::delete_search))
        .route("/api/v1/message/{id}", get(h::message))
        .route("/api/v1/message/{id}/headers", get(h::headers))
        .route("/api/v1/message/{id}/raw", get(h::raw))
        .route("/api/v1/message/{id}/part/{part}", get(h::part))
        .route(
            "/api/v1/message/{id}/part/{part}/thumb",
            get(h::unsupported_thumb),
        )
        .route(
            "/api/v1/message/{id}/html-check",
            get(h::unsupported_html_check),
        )
        .route(
            "/api/v1/message/{id}/link-check",
            get(h::unsupported_link_check),
        )
        .route(
            "/api/v1/message/{id}/sa-check",
            get(h::unsupported_sa_check),
        )
        .route("/api/v1/message/{id}/release", post(h::unsupported_release))
        .route(
            "/api/v1/chaos",
            get(h::unsupported_chaos).put(h::unsupported_chaos),
        )
        .route("/api/v1/tags", get(h::tags).put(h::set_tags))
        .route(
            "/api/v1/tags/{tag}",
            put(h::unsupported_tag_edit).delete(h::unsupported_tag_edit),
        )
        .route("/api/v1/send", post(send::send))
        .route("/view/{file}", get(h::view))
        .route("/api/events", get(events::events))
        .route(
            &format!("{}/{{id}}", follow::SUMMARY_PATH),
            get(follow::member_summary),
        )
        .fallback(h::no_route)
}

/// `api` with the Mailpit routes under `/mailpit`. Called after the
/// problem+json layer is applied to `api`, because Mailpit's errors are
/// plain text.
pub fn mount(api: Router, state: AppState) -> Router {
    let routes = routes().with_state(state.clone());
    // Only a host of a cluster pays for the owner check. It wraps the whole
    // Mailpit router, not each route, so a request it rewrites (`latest`
    // named by its id, a write that names no message sent as one that
    // does, the reads those need) is routed again by its new path.
    match state.cluster {
        Some(_) => api.nest_service(
            "/mailpit",
            tower::Layer::layer(
                &axum::middleware::from_fn_with_state(state, route::to_owner),
                routes,
            ),
        ),
        None => api.nest("/mailpit", routes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_yield_the_password() {
        let enc =
            base64::engine::general_purpose::STANDARD.encode("me@x.test:uct_secret:with:colons");
        assert_eq!(
            basic_password(&format!("Basic {enc}")).unwrap(),
            "uct_secret:with:colons"
        );
        for bad in ["Bearer x", "Basic", "Basic !!!", "Basic bm9jb2xvbg=="] {
            assert_eq!(
                basic_password(bad).unwrap_err().status,
                StatusCode::UNAUTHORIZED,
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_are_plain_text_and_401_asks_for_basic() {
        let r = unauthorized("no").into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"uncorreo\""
        );
        assert!(r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(
            MailpitError::from(Problem::not_found()).status,
            StatusCode::NOT_FOUND
        );
    }
}
