//! `/api/v1/keys`: a user's API keys — mint (the secret is shown once),
//! list (prefix only), revoke. Only an API key opens these routes.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use uncorreo_engine::{ApiKeyInfo, UserId};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::{Accounts, AccountsError};
use crate::auth::{new_api_key, Caller};
use crate::problem::{json_body, Problem, ProblemBody};
use crate::AppState;
use uncorreo_mail::date::rfc3339_millis as rfc3339;

/// Body of `POST /api/v1/keys` (empty: no options yet).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {}

/// A key as listed (never the secret).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// Key id (for `DELETE /api/v1/keys/{id}`).
    pub id: u64,
    /// First 12 characters of the key.
    pub prefix: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, if revoked.
    pub revoked_at: Option<String>,
}

impl From<&ApiKeyInfo> for KeyView {
    fn from(k: &ApiKeyInfo) -> Self {
        Self {
            id: k.id.0,
            prefix: k.prefix.clone(),
            created_at: rfc3339(k.created_at_ms),
            revoked_at: k.revoked_at_ms.map(rfc3339),
        }
    }
}

/// A new key; `key` is shown this once (only its SHA-256 is stored).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyCreated {
    /// Key id.
    pub id: u64,
    /// The key: `uct_` + 32 url-safe base64 characters.
    pub key: String,
    /// First 12 characters, as listings show it.
    pub prefix: String,
    /// RFC 3339.
    pub created_at: String,
}

/// The caller's keys.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    /// Oldest first, revoked ones included.
    pub keys: Vec<KeyView>,
}

/// Mint and store a key for `user`. Used by the HTTP route and the admin CLI.
pub async fn mint(
    accounts: &dyn Accounts,
    user: UserId,
) -> Result<(ApiKeyInfo, String), AccountsError> {
    mint_within(accounts, user, None).await
}

/// [`mint`], refused ([`AccountsError::KeyLimit`]) when `user` holds
/// `max_active` live keys: checked in the mint's own compare-and-set when
/// the accounts are a cluster's.
pub async fn mint_within(
    accounts: &dyn Accounts,
    user: UserId,
    max_active: Option<usize>,
) -> Result<(ApiKeyInfo, String), AccountsError> {
    // A collision of 192 random bits does not happen; retrying keeps the
    // code honest about `AlreadyExists` anyway.
    let mut last = AccountsError::AlreadyExists;
    for _ in 0..3 {
        let (secret, prefix) = new_api_key();
        match accounts
            .create_api_key(user, secret.hash, prefix, max_active)
            .await
        {
            Ok(info) => return Ok((info, secret.secret)),
            Err(AccountsError::AlreadyExists) => last = AccountsError::AlreadyExists,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Create a new API key for the calling user.
#[utoipa::path(
    post,
    path = "/api/v1/keys",
    tag = "keys",
    request_body(content = Option<CreateKey>, content_type = "application/json", description = "Optional; empty."),
    responses(
        (status = 201, description = "Created; `key` is shown only now", body = KeyCreated),
        (status = 400, description = "Malformed JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`api-key-required` (a session token is not enough) or `key-limit`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: a field this route does not take", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Accounts cannot be changed now (in a cluster: NATS unreachable); retry after `Retry-After`", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])),
)]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, Problem> {
    let user = caller.require_user()?;
    let _: CreateKey = json_body(&headers, &body?)?;
    let max = state.limits().max_api_keys_per_user;
    let active = state
        .accounts
        .api_keys_of(user)
        .iter()
        .filter(|k| k.revoked_at_ms.is_none())
        .count();
    // The replica's count answers early; across hosts the mint checks again
    // in its compare-and-set, so racing mints cannot pass together.
    if active >= max {
        return Err(AccountsError::KeyLimit(max).into());
    }
    let (info, secret) = mint_within(state.accounts.as_ref(), user, Some(max)).await?;
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(KeyCreated {
            id: info.id.0,
            key: secret,
            prefix: info.prefix,
            created_at: rfc3339(info.created_at_ms),
        }),
    ))
}

/// List the calling user's keys.
#[utoipa::path(
    get,
    path = "/api/v1/keys",
    tag = "keys",
    responses(
        (status = 200, description = "The caller's keys", body = KeyList),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`api-key-required`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])),
)]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<KeyList>, Problem> {
    let user = caller.require_user()?;
    let keys = state
        .accounts
        .api_keys_of(user)
        .iter()
        .map(KeyView::from)
        .collect();
    Ok(Json(KeyList { keys }))
}

/// Revoke one of the calling user's keys (idempotent).
#[utoipa::path(
    delete,
    path = "/api/v1/keys/{id}",
    tag = "keys",
    params(("id" = u64, Path, description = "Key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`api-key-required`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such key, or not the caller's", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Accounts cannot be changed now (in a cluster: NATS unreachable); retry after `Retry-After`", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])),
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let user = caller.require_user()?;
    let id: u64 = id.parse().map_err(|_| Problem::not_found())?;
    let key = state
        .accounts
        .api_keys_of(user)
        .into_iter()
        .find(|k| k.id.0 == id)
        .ok_or_else(Problem::not_found)?;
    state.accounts.revoke_api_key(key.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// This module's routes, each registered with its documentation.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
}
