//! Outbound webhooks: per-mailbox and per-user URLs that are POSTed the
//! event JSON of every committed message (the same [`EventView`] the
//! WebSocket and SSE feeds send), signed per Standard Webhooks ([`sign`]).
//!
//! Durability: endpoints and a per-endpoint cursor (mailbox id → the last
//! sequence handled) are `State` records in our own log
//! ([`uncorreo_engine::Engine::put_state`]). The pending queue is not stored
//! separately: it is every message past the cursor, read back from the
//! index, so a restart replays exactly what was not yet acknowledged by the
//! receiver (at-least-once; a receiver dedupes on `webhook-id`, which stays
//! the same across retries and restarts). The cursor moves only after a 2xx,
//! after the retry budget is spent, or when the queue bound drops the oldest.
//!
//! Architecture invariant: webhooks fire only for committed messages: the
//! dispatcher reads the index (updated after fdatasync) and is woken by the
//! engine's fan-out (published after commit), like `realtime`.
//!
//! Architecture invariant: a webhook connects only to addresses it checked
//! ([`address`]) right before connecting: no private, loopback, link-local,
//! metadata, CGNAT or multicast address unless `[webhooks] allow_private`;
//! never a redirect; a connect and a total timeout ([`client`]).

pub mod address;
pub mod client;
mod dispatch;
pub mod sign;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uncorreo_engine::{Engine, MailboxId, MailboxInfo, Owner, UserId};
use utoipa::ToSchema;

use crate::auth::{authorize_mailbox, Caller};
use crate::problem::{json_body, Kind, Problem, ProblemBody};
use crate::AppState;
use uncorreo_mail::date::rfc3339_millis as rfc3339;

pub use dispatch::spawn;

/// Webhook settings (the `[webhooks]` table of the config file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Run the dispatcher (endpoints can be managed either way).
    pub enabled: bool,
    /// Let webhooks call private, loopback and link-local addresses. Off by
    /// default: a webhook URL is chosen by a client, and the appliance calls
    /// it from inside the operator's network (SSRF).
    pub allow_private: bool,
    /// Endpoints one mailbox or one user may have; past it `403 webhook-limit`.
    pub max_endpoints_per_owner: usize,
    /// Endpoints in the whole appliance; past it `403 webhook-limit`.
    pub max_endpoints: usize,
    /// Pending messages per endpoint and mailbox; past it the oldest are
    /// dropped (counted as `outcome="dropped"`).
    pub queue_limit: u64,
    /// Attempts per event (the retry budget); then it is dropped
    /// (`outcome="exhausted"`). Counted per process: a restart starts over.
    pub max_attempts: u32,
    /// Delay after the first failed attempt; doubled after each next one.
    pub backoff_initial_ms: u64,
    /// Longest delay between two attempts.
    pub backoff_max_ms: u64,
    /// Longest a TCP connect may take.
    pub connect_timeout_ms: u64,
    /// Longest one whole attempt (resolve, connect, TLS, request, response head) may take.
    pub timeout_ms: u64,
    /// How often endpoints and a user's mailboxes are looked at again (new
    /// mailboxes of a per-user endpoint are picked up within this).
    pub rescan_interval_ms: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_private: false,
            max_endpoints_per_owner: 10,
            max_endpoints: 10_000,
            queue_limit: 1000,
            max_attempts: 12,
            backoff_initial_ms: 1000,
            backoff_max_ms: 600_000,
            connect_timeout_ms: 5000,
            timeout_ms: 15_000,
            rescan_interval_ms: 5000,
        }
    }
}

/// Shared by every core: the settings and the dispatcher's wake-up.
#[derive(Debug, Clone)]
pub struct Webhooks {
    config: WebhooksConfig,
    changed: Arc<Notify>,
}

impl Webhooks {
    /// New, with nothing running.
    pub fn new(config: WebhooksConfig) -> Self {
        Self {
            config,
            changed: Arc::new(Notify::new()),
        }
    }
    /// The settings.
    pub fn config(&self) -> &WebhooksConfig {
        &self.config
    }
}

/// Key prefix of endpoint records.
const ENDPOINT_PREFIX: &str = "webhook/endpoint/";
/// Key prefix of cursor records.
const CURSOR_PREFIX: &str = "webhook/cursor/";

/// Whose events an endpoint gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Scope {
    /// One mailbox (by id: an address can be reused after expiry).
    Mailbox { mailbox: u64, address: String },
    /// Every mailbox of a user, present and future.
    User { user: u64 },
}

/// An endpoint as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Endpoint {
    id: String,
    url: String,
    secret: String,
    scope: Scope,
    created_at_ms: u64,
}

/// Mailbox id → the last sequence handled.
type Cursor = BTreeMap<u64, u64>;

fn endpoints(engine: &Engine) -> Vec<Endpoint> {
    engine
        .states_with_prefix(ENDPOINT_PREFIX)
        .into_iter()
        .filter_map(|(key, value)| match serde_json::from_str(&value) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!(%key, %e, "unreadable webhook endpoint record; ignored");
                None
            }
        })
        .collect()
}

fn cursor(engine: &Engine, id: &str) -> Cursor {
    engine
        .state(&format!("{CURSOR_PREFIX}{id}"))
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or_default()
}

async fn save_cursor(
    engine: &Engine,
    id: &str,
    cursor: &Cursor,
) -> Result<(), uncorreo_engine::WriteError> {
    let value = serde_json::to_string(cursor).unwrap_or_else(|_| "{}".to_owned());
    engine
        .put_state(&format!("{CURSOR_PREFIX}{id}"), Some(&value))
        .await
}

/// The live mailboxes an endpoint covers.
fn scope_mailboxes(engine: &Engine, scope: &Scope) -> Vec<MailboxInfo> {
    match scope {
        Scope::Mailbox { mailbox, .. } => engine
            .mailbox_by_id(MailboxId(*mailbox))
            .into_iter()
            .collect(),
        Scope::User { user } => engine.mailboxes_owned_by(&Owner::User(UserId(*user))),
    }
}

/// Body of the create routes.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `https://…` (or `http://…`) to POST events to. Its host must resolve
    /// to public addresses only, unless the operator allows private ones.
    #[schema(
        pattern = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,4})?(/[A-Za-z0-9._~/?=&-]*)?$",
        max_length = 2048
    )]
    pub url: String,
}

/// An endpoint as listed (never the secret).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    /// Endpoint id (for `DELETE`).
    pub id: String,
    /// Where events go.
    pub url: String,
    /// The mailbox it covers, or none for a per-user endpoint (all the user's mailboxes).
    pub mailbox: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// A new endpoint; `secret` is shown this once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookCreated {
    /// Endpoint id.
    pub id: String,
    /// Where events go.
    pub url: String,
    /// `whsec_` + base64: verify `webhook-signature` with it (Standard Webhooks).
    pub secret: String,
    /// The mailbox it covers, or none for a per-user endpoint.
    pub mailbox: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// Endpoints.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    /// Oldest first.
    pub webhooks: Vec<WebhookView>,
}

impl From<&Endpoint> for WebhookView {
    fn from(e: &Endpoint) -> Self {
        Self {
            id: e.id.clone(),
            url: e.url.clone(),
            mailbox: match &e.scope {
                Scope::Mailbox { address, .. } => Some(address.clone()),
                Scope::User { .. } => None,
            },
            created_at: rfc3339(e.created_at_ms),
        }
    }
}

fn list_of(engine: &Engine, scope: &Scope) -> Vec<WebhookView> {
    let mut v: Vec<_> = endpoints(engine)
        .into_iter()
        .filter(|e| &e.scope == scope)
        .collect();
    v.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
    v.iter().map(WebhookView::from).collect()
}

async fn create(
    state: &AppState,
    scope: Scope,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<WebhookCreated, Problem> {
    let req: CreateWebhook = json_body(headers, body)?;
    let config = state.webhooks().config();
    let target = client::Target::parse(&req.url)
        .map_err(|e| Problem::new(Kind::InvalidRequest, format!("url: {e}")).for_field("url"))?;
    // Bounded like an attempt: a resolver that hangs must not hold the request.
    let lookup = address::resolve_checked(&target.host, target.port, config.allow_private);
    let checked = tokio::time::timeout(std::time::Duration::from_millis(config.timeout_ms), lookup)
        .await
        .unwrap_or_else(|_| Err(address::AddressError::Unresolvable(target.host.clone())));
    checked.map_err(|e| Problem::new(Kind::WebhookUrlRefused, e.to_string()).for_field("url"))?;
    let all = endpoints(&state.engine);
    let mine = all.iter().filter(|e| e.scope == scope).count();
    if mine >= config.max_endpoints_per_owner {
        return Err(Problem::new(
            Kind::WebhookLimit,
            format!(
                "at most {} webhooks per mailbox or user; delete one first",
                config.max_endpoints_per_owner
            ),
        ));
    }
    if all.len() >= config.max_endpoints {
        return Err(Problem::new(
            Kind::WebhookLimit,
            "the appliance holds as many webhooks as it is configured for",
        ));
    }
    let mut raw = [0u8; 12];
    rand::rng().fill_bytes(&mut raw);
    let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let endpoint = Endpoint {
        id: format!("wh_{id}"),
        url: req.url,
        secret: sign::new_secret(),
        scope,
        created_at_ms: state.engine.now_ms(),
    };
    // Only messages committed from now on: the cursor starts at each
    // mailbox's current end, and is written before the endpoint so the
    // dispatcher never sees an endpoint without one.
    let start: Cursor = scope_mailboxes(&state.engine, &endpoint.scope)
        .iter()
        .map(|m| (m.id.0, m.last_seq))
        .collect();
    save_cursor(&state.engine, &endpoint.id, &start).await?;
    let value = serde_json::to_string(&endpoint)
        .map_err(|_| Problem::new(Kind::Internal, "could not encode the endpoint"))?;
    state
        .engine
        .put_state(&format!("{ENDPOINT_PREFIX}{}", endpoint.id), Some(&value))
        .await
        .map_err(|e| match e {
            uncorreo_engine::WriteError::LimitReached => Problem::new(
                Kind::WebhookLimit,
                "the appliance holds as many webhooks as it can",
            ),
            other => other.into(),
        })?;
    state.webhooks().changed.notify_one();
    let view = WebhookView::from(&endpoint);
    Ok(WebhookCreated {
        id: view.id,
        url: view.url,
        secret: endpoint.secret,
        mailbox: view.mailbox,
        created_at: view.created_at,
    })
}

async fn delete(state: &AppState, scope: &Scope, id: &str) -> Result<StatusCode, Problem> {
    let found = endpoints(&state.engine)
        .into_iter()
        .any(|e| e.id == id && &e.scope == scope);
    if !found {
        return Err(Problem::not_found());
    }
    remove(&state.engine, id).await?;
    state.webhooks().changed.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

async fn remove(engine: &Engine, id: &str) -> Result<(), uncorreo_engine::WriteError> {
    engine
        .put_state(&format!("{ENDPOINT_PREFIX}{id}"), None)
        .await?;
    engine
        .put_state(&format!("{CURSOR_PREFIX}{id}"), None)
        .await
}

fn mailbox_scope(mb: &MailboxInfo) -> Scope {
    Scope::Mailbox {
        mailbox: mb.id.0,
        address: mb.address.to_string(),
    }
}

/// Add a webhook for one mailbox.
#[utoipa::path(
    post,
    path = "/api/v1/mailboxes/{address}/webhooks",
    tag = "webhooks",
    params(("address" = String, Path, description = "Mailbox address")),
    request_body(content = CreateWebhook, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `secret` is shown only now", body = WebhookCreated),
        (status = 400, description = "Malformed JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`webhook-limit`, or `webhook-url-refused` (its host is private, loopback, link-local… or does not resolve)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox, or not the caller's", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request` (not an http(s) URL)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("session_token" = []), ("api_key" = [])),
)]
pub async fn create_mailbox_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(address): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, Problem> {
    let mb = authorize_mailbox(&state, &caller, &address)?;
    let created = create(&state, mailbox_scope(&mb), &headers, &body?).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// List a mailbox's webhooks.
#[utoipa::path(
    get,
    path = "/api/v1/mailboxes/{address}/webhooks",
    tag = "webhooks",
    params(("address" = String, Path, description = "Mailbox address")),
    responses(
        (status = 200, description = "The mailbox's webhooks", body = WebhookList),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox, or not the caller's", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("session_token" = []), ("api_key" = [])),
)]
pub async fn list_mailbox_webhooks(
    State(state): State<AppState>,
    caller: Caller,
    Path(address): Path<String>,
) -> Result<Json<WebhookList>, Problem> {
    let mb = authorize_mailbox(&state, &caller, &address)?;
    Ok(Json(WebhookList {
        webhooks: list_of(&state.engine, &mailbox_scope(&mb)),
    }))
}

/// Delete one of a mailbox's webhooks. Events not yet delivered to it are dropped.
#[utoipa::path(
    delete,
    path = "/api/v1/mailboxes/{address}/webhooks/{webhook}",
    tag = "webhooks",
    params(
        ("address" = String, Path, description = "Mailbox address"),
        ("webhook" = String, Path, description = "Webhook id"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox or webhook, or not the caller's", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("session_token" = []), ("api_key" = [])),
)]
pub async fn delete_mailbox_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path((address, webhook)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let mb = authorize_mailbox(&state, &caller, &address)?;
    delete(&state, &mailbox_scope(&mb), &webhook).await
}

/// Add a webhook for every mailbox of the calling user (present and future).
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    request_body(content = CreateWebhook, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `secret` is shown only now", body = WebhookCreated),
        (status = 400, description = "Malformed JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`api-key-required`, `webhook-limit`, or `webhook-url-refused` (its host is private, loopback, link-local… or does not resolve)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request` (not an http(s) URL)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])),
)]
pub async fn create_user_webhook(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, Problem> {
    let user = caller.require_user()?;
    let created = create(&state, Scope::User { user: user.0 }, &headers, &body?).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// List the calling user's per-user webhooks.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    responses(
        (status = 200, description = "The caller's per-user webhooks", body = WebhookList),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`api-key-required`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])),
)]
pub async fn list_user_webhooks(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<WebhookList>, Problem> {
    let user = caller.require_user()?;
    Ok(Json(WebhookList {
        webhooks: list_of(&state.engine, &Scope::User { user: user.0 }),
    }))
}

/// Delete one of the calling user's per-user webhooks.
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{webhook}",
    tag = "webhooks",
    params(("webhook" = String, Path, description = "Webhook id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`api-key-required`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook, or not the caller's", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])),
)]
pub async fn delete_user_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(webhook): Path<String>,
) -> Result<StatusCode, Problem> {
    let user = caller.require_user()?;
    delete(&state, &Scope::User { user: user.0 }, &webhook).await
}

/// This module's routes, each registered with its documentation.
pub(crate) fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(create_mailbox_webhook, list_mailbox_webhooks))
        .routes(routes!(delete_mailbox_webhook))
        .routes(routes!(create_user_webhook, list_user_webhooks))
        .routes(routes!(delete_user_webhook))
}
