//! `/api/v1/mailboxes`: create, list, get and delete mailboxes, under the
//! caller's plan (mailbox count, TTL cap, per-mailbox message quota).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use rand::Rng;
use serde::{Deserialize, Serialize};
use uncorreo_engine::{Address, AddressError, CreateMailboxError, MailboxInfo, NewMailbox, Owner};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{authorize_mailbox, new_session_token, Caller};
use crate::problem::{json_body, Kind, Problem, ProblemBody};
use crate::quota::{anonymous_key, QuotaKey};
use crate::AppState;
use uncorreo_mail::date::rfc3339_millis as rfc3339;

/// Length of generated local parts.
pub const RANDOM_LOCAL_LEN: usize = 10;
/// Attempts at a free random address before giving up with `409`.
const RANDOM_ATTEMPTS: usize = 5;

/// Body of `POST /api/v1/mailboxes`; every field is optional and an empty
/// body means all defaults.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMailbox {
    /// Local part (`[a-z0-9._-]`, at most 64, no `+`, no leading, trailing
    /// or double dot; upper case is folded to lower); random when absent.
    #[schema(pattern = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$", max_length = 64)]
    pub local_part: Option<String>,
    /// One of the served domains (the document lists them); the first
    /// configured one when absent.
    pub domain: Option<String>,
    /// Minutes until the mailbox expires: 1 ..= the plan's `max_ttl_minutes`
    /// (above it: `403 ttl-too-long`, never silently shortened). When
    /// absent: the configured default, capped at the plan's maximum.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "whole_number")]
    pub ttl_minutes: Option<u32>,
}

/// A created mailbox. `session_token` is present only for anonymous
/// callers and is shown this once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MailboxCreated {
    /// `local@domain`.
    pub address: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; the mailbox stops receiving and is deleted after this.
    pub expires_at: String,
    /// Messages it stores at most (from the plan).
    pub max_messages: u32,
    /// The only key to an anonymous mailbox (`Authorization: Bearer` or
    /// `X-Session-Token`); only its SHA-256 is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
}

/// A mailbox as listed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MailboxView {
    /// `local@domain`.
    pub address: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// Messages it stores at most.
    pub max_messages: u32,
    /// Messages stored now.
    pub message_count: u32,
    /// Highest sequence number assigned so far (resume point for listings and events).
    pub last_seq: u64,
    /// `user` or `anonymous`.
    pub owner: String,
}

impl From<&MailboxInfo> for MailboxView {
    fn from(m: &MailboxInfo) -> Self {
        Self {
            address: m.address.to_string(),
            created_at: rfc3339(m.created_at_ms),
            expires_at: rfc3339(m.expires_at_ms),
            max_messages: m.max_messages,
            message_count: m.message_count,
            last_seq: m.last_seq,
            owner: match m.owner {
                Owner::User(_) => "user",
                Owner::Anonymous { .. } => "anonymous",
            }
            .to_owned(),
        }
    }
}

/// The caller's mailboxes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MailboxList {
    /// Oldest first.
    pub mailboxes: Vec<MailboxView>,
}

/// A JSON number with no fractional part (`5` or `5.0`: JSON Schema's
/// `integer` admits both) that fits a `u32`.
pub(crate) fn whole_number<'de, D>(deserializer: D) -> Result<Option<u32>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = match (number.as_u64(), number.as_f64()) {
        (Some(n), _) => Some(n),
        (None, Some(f)) if f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f) => {
            Some(f as u64)
        }
        _ => None,
    };
    whole
        .and_then(|n| u32::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom(format!("{number} is not a whole number of minutes"))
        })
}

/// Create a mailbox (the only thing an anonymous caller may do).
#[utoipa::path(
    post,
    path = "/api/v1/mailboxes",
    tag = "mailboxes",
    request_body(content = Option<CreateMailbox>, content_type = "application/json",
        description = "Optional; an empty body means all defaults."),
    responses(
        (status = 201, description = "Created; `session_token` only for anonymous callers",
            body = MailboxCreated, headers(("Location" = String, description = "The mailbox URL"))),
        (status = 400, description = "Malformed JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "A credential that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`mailbox-limit`: the plan's `max_mailboxes` are live; `ttl-too-long`: above the plan's `max_ttl_minutes`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`address-taken`: the chosen `local_part` is not available (a live mailbox has it, or its mailbox ended less than `engine.address_quarantine` ago and the caller is not its owner; one answer for both)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request` for a bad local part, domain or TTL", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Storage busy; in a cluster, the owner of the new mailbox's partition is down, or a user's mailbox count cannot be checked (NATS unreachable); retry after `Retry-After`", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security((), ("api_key" = []), ("session_token" = [])),
)]
pub async fn create_mailbox(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, Problem> {
    let req: CreateMailbox = json_body(&headers, &body?)?;
    let created = create(&state, &caller, req).await?;
    let location = format!("/api/v1/mailboxes/{}", created.address);
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((StatusCode::CREATED, h, Json(created)))
}

/// Create a mailbox for `caller` under its plan: the policy behind
/// `POST /api/v1/mailboxes` and MCP's `create_mailbox`, free of HTTP types.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    req: CreateMailbox,
) -> Result<MailboxCreated, Problem> {
    let engine = &state.engine;
    let plan = caller.plan(state).plan;

    let domain = match &req.domain {
        Some(d) if engine.is_local_domain(d) => d.to_ascii_lowercase(),
        Some(_) => {
            return Err(
                Problem::new(Kind::InvalidRequest, "domain is not served here").for_field("domain"),
            )
        }
        None => engine
            .config()
            .domains
            .first()
            .cloned()
            .ok_or_else(|| Problem::new(Kind::Internal, "no domain configured"))?,
    };
    let ttl = ttl_minutes(state, &plan, req.ttl_minutes)?;
    let chosen = match &req.local_part {
        Some(l) => Some(Address::from_parts(l, &domain).map_err(|e| {
            Problem::new(
                Kind::InvalidRequest,
                match e {
                    AddressError::TooLong => "local_part is longer than 64 characters",
                    _ => "local_part may only hold a-z, 0-9, '.', '_' and '-' (no '+', no leading, trailing or double dot)",
                },
            )
            .for_field("local_part")
        })?),
        None => None,
    };

    let (owner, token, quota_key) = match &caller {
        Caller::User { user, .. } => {
            let owner = Owner::User(*user);
            let key = QuotaKey::owner(&owner);
            (owner, None, key)
        }
        // A session token opens one mailbox; creating another one starts a new session.
        Caller::Anonymous { .. } | Caller::Session { .. } => {
            let t = new_session_token();
            (
                Owner::Anonymous { token_hash: t.hash },
                Some(t.secret),
                anonymous_key(caller.ip()),
            )
        }
    };
    let reservation = state
        .quotas()
        .reserve(engine, quota_key, plan.max_mailboxes)
        .map_err(|_| {
            Problem::new(
                Kind::MailboxLimit,
                format!(
                    "this plan allows {} live mailboxes; delete one or wait for one to expire",
                    plan.max_mailboxes
                ),
            )
        })?;

    let expires_at_ms = engine
        .now_ms()
        .saturating_add(u64::from(ttl).saturating_mul(60_000));
    reservation.until(expires_at_ms);
    // In a cluster the plan holds over every host's mailboxes: counted
    // before the create, given back if it fails (`counts`).
    let counted_user = match &caller {
        Caller::User { user, .. } => Some(*user),
        Caller::Anonymous { .. } | Caller::Session { .. } => None,
    };
    if let Some(user) = counted_user {
        crate::counts::claim(state, user, plan.max_mailboxes, "mailboxes").await?;
    }
    let attempts = if chosen.is_some() { 1 } else { RANDOM_ATTEMPTS };
    let mut created = Err(CreateMailboxError::AlreadyExists);
    for _ in 0..attempts {
        let address = match &chosen {
            Some(a) => a.clone(),
            None => Address::from_parts(&random_local_part(), &domain)
                .map_err(|_| Problem::new(Kind::Internal, "generated an invalid address"))?,
        };
        reservation.attempting(&address);
        created = engine
            .create_mailbox(NewMailbox {
                address,
                owner: owner.clone(),
                expires_at_ms,
                max_messages: plan.max_messages_per_mailbox,
            })
            .await;
        if !matches!(created, Err(CreateMailboxError::AlreadyExists)) {
            break;
        }
    }
    let info = match created {
        Ok(info) => info,
        Err(e) => {
            drop(reservation);
            if let Some(user) = counted_user {
                crate::counts::recount(state, user).await;
            }
            return Err(Problem::from(e));
        }
    };
    if token.is_some() {
        reservation.record_anonymous(state.quotas(), engine, caller.ip(), info.id);
    } else {
        drop(reservation);
    }
    ::metrics::counter!(uncorreo_metric_names::MAILBOXES_CREATED_TOTAL, "owner" => if token.is_some() { "anonymous" } else { "user" }).increment(1);

    Ok(MailboxCreated {
        address: info.address.to_string(),
        created_at: rfc3339(info.created_at_ms),
        expires_at: rfc3339(info.expires_at_ms),
        max_messages: info.max_messages,
        session_token: token,
    })
}

/// The TTL asked for, checked against `plan` (`0` → `422`, above the plan's
/// maximum → `403 ttl-too-long`, never shortened), or the configured
/// default capped at the plan's maximum (mailboxes and campaigns).
pub(crate) fn ttl_minutes(
    state: &AppState,
    plan: &crate::plans::Plan,
    asked: Option<u32>,
) -> Result<u32, Problem> {
    match asked {
        Some(0) => Err(
            Problem::new(Kind::InvalidRequest, "ttl_minutes must be at least 1")
                .for_field("ttl_minutes"),
        ),
        Some(t) if t > plan.max_ttl_minutes => Err(Problem::new(
            Kind::TtlTooLong,
            format!(
                "ttl_minutes may be at most {} on this plan",
                plan.max_ttl_minutes
            ),
        )
        .for_field("ttl_minutes")),
        Some(t) => Ok(t),
        None => Ok(state.limits().default_ttl_minutes.min(plan.max_ttl_minutes)),
    }
}

/// `RANDOM_LOCAL_LEN` characters from `[a-z0-9]` (about 51 bits).
pub fn random_local_part() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..RANDOM_LOCAL_LEN)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

/// The caller's live mailboxes (a session token sees its one mailbox).
#[utoipa::path(
    get,
    path = "/api/v1/mailboxes",
    tag = "mailboxes",
    responses(
        (status = 200, description = "Live mailboxes, oldest first", body = MailboxList),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session_token" = [])),
)]
pub async fn list_mailboxes(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<MailboxList>, Problem> {
    list(&state, &caller).map(Json)
}

/// The caller's live mailboxes, oldest first (REST and MCP).
pub fn list(state: &AppState, caller: &Caller) -> Result<MailboxList, Problem> {
    let owner = caller.owner().ok_or_else(|| {
        Problem::new(
            Kind::AuthenticationRequired,
            "send an API key or a mailbox's session token",
        )
    })?;
    let mailboxes = state
        .engine
        .mailboxes_owned_by(&owner)
        .iter()
        .map(MailboxView::from)
        .collect();
    Ok(MailboxList { mailboxes })
}

/// One mailbox.
#[utoipa::path(
    get,
    path = "/api/v1/mailboxes/{address}",
    tag = "mailboxes",
    params(("address" = String, Path, description = "`local@domain`")),
    responses(
        (status = 200, description = "The mailbox", body = MailboxView),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox, or not visible with these credentials (one answer for both)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session_token" = [])),
)]
pub async fn get_mailbox(
    State(state): State<AppState>,
    caller: Caller,
    Path(address): Path<String>,
) -> Result<Json<MailboxView>, Problem> {
    let mb = authorize_mailbox(&state, &caller, &address)?;
    Ok(Json(MailboxView::from(&mb)))
}

/// Delete a mailbox and its messages.
#[utoipa::path(
    delete,
    path = "/api/v1/mailboxes/{address}",
    tag = "mailboxes",
    params(("address" = String, Path, description = "`local@domain`")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox, or not visible with these credentials", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session_token" = [])),
)]
pub async fn delete_mailbox(
    State(state): State<AppState>,
    caller: Caller,
    Path(address): Path<String>,
) -> Result<StatusCode, Problem> {
    delete(&state, &caller, &address).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a mailbox the caller may see (REST and MCP).
pub async fn delete(state: &AppState, caller: &Caller, address: &str) -> Result<(), Problem> {
    let mb = authorize_mailbox(state, caller, address)?;
    state.engine.delete_mailbox(mb.id).await?;
    // The slot is free across the cluster before the delete answers.
    if let Owner::User(user) = mb.owner {
        crate::counts::recount(state, user).await;
    }
    Ok(())
}

/// This module's routes, each registered with its documentation.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_mailbox, list_mailboxes))
        .routes(routes!(get_mailbox, delete_mailbox))
}
