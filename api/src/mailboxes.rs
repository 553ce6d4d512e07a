//! `/api/v1/mailboxes`: create, list, get and delete mailboxes, under the
//! caller's plan (mailbox count, TTL cap, per-mailbox message quota).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use rand::Rng;
use serde::{Deserialize, Serialize};
use uncorreo_engine::{Address, AddressError, CreateMailboxError, MailboxInfo, NewMailbox, Owner};
use utoipa::{IntoParams, ToSchema};
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
    /// Oldest first: by `created_at`, then `address`, when paged (`limit`
    /// or `after`) or gathered from several hosts.
    pub mailboxes: Vec<MailboxView>,
    /// Only with `limit`, when more mailboxes may follow: pass it as
    /// `after` for the next page (opaque).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// Query of `GET /api/v1/mailboxes`; without either, every live mailbox in
/// one answer (as before pages existed).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MailboxQuery {
    /// Page size, 1 ..= the configured `max_page` (500 unless changed);
    /// absent: no limit.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// Only mailboxes after this cursor: a `next_after` of an earlier page
    /// (empty: from the start). Opaque: a position in the listing's order,
    /// so any string of this form is one.
    #[param(
        pattern = r"^([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2,3})?$",
        max_length = 1024
    )]
    pub after: Option<String>,
}

/// A page asked of [`MailboxQuery`]: the cursor is (`created_at`,
/// `address`), both as listed.
struct Page {
    limit: Option<usize>,
    after: Option<(String, String)>,
}

impl Page {
    fn new(state: &AppState, q: MailboxQuery) -> Result<Page, Problem> {
        let max = state.limits().max_page;
        if q.limit.is_some_and(|l| l == 0 || l > max) {
            return Err(Problem::new(
                Kind::InvalidRequest,
                format!("limit must be between 1 and {max}"),
            )
            .for_field("limit"));
        }
        let after = match q.after.filter(|cursor| !cursor.is_empty()) {
            None => None,
            Some(cursor) => Some(decode_cursor(&cursor).ok_or_else(|| {
                Problem::new(Kind::InvalidRequest, "after is not a cursor (base64url)")
                    .for_field("after")
            })?),
        };
        Ok(Page {
            limit: q.limit,
            after,
        })
    }

    fn paged(&self) -> bool {
        self.limit.is_some() || self.after.is_some()
    }

    /// `views` ordered, past the cursor, cut at the limit; `more`: some
    /// part already had more than it gave.
    fn apply(&self, mut views: Vec<MailboxView>, more: bool) -> MailboxList {
        views.sort_by(|a, b| (&a.created_at, &a.address).cmp(&(&b.created_at, &b.address)));
        if let Some((created, address)) = &self.after {
            views.retain(|v| (&v.created_at, &v.address) > (created, address));
        }
        let Some(limit) = self.limit else {
            return MailboxList {
                mailboxes: views,
                next_after: None,
            };
        };
        let more = more || views.len() > limit;
        views.truncate(limit);
        let next_after = views
            .last()
            .filter(|_| more)
            .map(|v| encode_cursor(&v.created_at, &v.address));
        MailboxList {
            mailboxes: views,
            next_after,
        }
    }
}

/// The cursor's base64url: no padding, and any trailing bits, so that
/// every string of the documented form decodes.
const CURSOR: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

fn encode_cursor(created_at: &str, address: &str) -> String {
    use base64::Engine as _;
    CURSOR.encode(format!("{created_at}\n{address}"))
}

/// The position a cursor names: (`created_at`, `address`) as listed. A
/// cursor this API did not give still names a position in that order
/// (text past no newline is a `created_at` alone, which sorts before
/// every address of that instant).
fn decode_cursor(cursor: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    if cursor.len() > 1024 {
        return None;
    }
    let bytes = CURSOR.decode(cursor).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let (created, address) = text.split_once('\n').unwrap_or((&text, ""));
    Some((created.to_owned(), address.to_owned()))
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

    // A session token opens one mailbox; creating another one starts a new
    // session. Its token is minted once the address is known (in a cluster
    // it names the address's partition).
    let (user_owner, quota_key) = match &caller {
        Caller::User { user, .. } => {
            let owner = Owner::User(*user);
            let key = QuotaKey::owner(&owner);
            (Some(owner), key)
        }
        Caller::Anonymous { .. } | Caller::Session { .. } => (None, anonymous_key(caller.ip())),
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
    let mut token = None;
    for _ in 0..attempts {
        let address = match &chosen {
            Some(a) => a.clone(),
            None => Address::from_parts(&random_local_part(), &domain)
                .map_err(|_| Problem::new(Kind::Internal, "generated an invalid address"))?,
        };
        reservation.attempting(&address);
        let owner = match &user_owner {
            Some(owner) => owner.clone(),
            None => {
                let partition = state
                    .cluster
                    .as_ref()
                    .map(|cluster| cluster.partition(&address.to_string()).0);
                let t = new_session_token(partition);
                token = Some(t.secret);
                Owner::Anonymous { token_hash: t.hash }
            }
        };
        created = engine
            .create_mailbox(NewMailbox {
                address,
                owner,
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
    crate::faults::forget_mailbox(state, &info.address).await;
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

/// The caller's live mailboxes (a session token sees its one mailbox). On
/// a host of a cluster, an API key's mailboxes on every host (SCALE.md,
/// "Reads"): `503` when a host that keeps some does not answer, never a
/// partial list.
#[utoipa::path(
    get,
    path = "/api/v1/mailboxes",
    tag = "mailboxes",
    params(MailboxQuery),
    responses(
        (status = 200, description = "Live mailboxes, oldest first", body = MailboxList),
        (status = 400, description = "Malformed query", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`limit` out of range, or an `after` that is not of the cursor's form", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Cluster only: a host that keeps some of the caller's mailboxes did not answer; retry after `Retry-After`", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session_token" = [])),
)]
pub async fn list_mailboxes(
    State(state): State<AppState>,
    caller: Caller,
    parts: Parts,
) -> Result<Json<MailboxList>, Problem> {
    let Query(q) = Query::<MailboxQuery>::try_from_uri(&parts.uri)?;
    let page = Page::new(&state, q)?;
    if let Some(only) = crate::gather::member_only(&parts) {
        return local_page(&state, &caller, &page, Some(only)).map(Json);
    }
    match (&state.cluster, &caller) {
        (Some(cluster), Caller::User { .. }) => {
            let path = parts
                .uri
                .path_and_query()
                .map_or("/api/v1/mailboxes", |p| p.as_str());
            let gathered = crate::gather::gather(&state, cluster, &parts, path).await?;
            let mine = local_page(&state, &caller, &page, Some(&gathered.local))?;
            let mut more = mine.next_after.is_some();
            let mut views = mine.mailboxes;
            for body in gathered.remote {
                let part: MailboxList =
                    serde_json::from_slice(&body).map_err(|_| crate::gather::unavailable())?;
                more |= part.next_after.is_some();
                views.extend(part.mailboxes);
            }
            Ok(Json(page.apply(views, more)))
        }
        // One host: exactly as before pages existed, unless asked for one.
        _ if !page.paged() => list(&state, &caller).map(Json),
        _ => local_page(&state, &caller, &page, None).map(Json),
    }
}

/// The caller's live mailboxes, oldest first (REST and MCP), on this host.
pub fn list(state: &AppState, caller: &Caller) -> Result<MailboxList, Problem> {
    let owner = owner_of(caller)?;
    let mailboxes = state
        .engine
        .mailboxes_owned_by(&owner)
        .iter()
        .map(MailboxView::from)
        .collect();
    Ok(MailboxList {
        mailboxes,
        next_after: None,
    })
}

fn owner_of(caller: &Caller) -> Result<Owner, Problem> {
    caller.owner().ok_or_else(|| {
        Problem::new(
            Kind::AuthenticationRequired,
            "send an API key or a mailbox's session token",
        )
    })
}

/// A page of the caller's mailboxes on this host; with `only`, of the
/// partitions it covers (one host's part of a listing that spans hosts:
/// a copy a handover left here is not listed again).
fn local_page(
    state: &AppState,
    caller: &Caller,
    page: &Page,
    only: Option<&uncorreo_hop::server::MemberOnly>,
) -> Result<MailboxList, Problem> {
    let owner = owner_of(caller)?;
    let covered = |m: &MailboxInfo| match (only, &state.cluster) {
        (Some(only), Some(cluster)) => only.covers(cluster.partition(&m.address.to_string())),
        _ => true,
    };
    let views = state
        .engine
        .mailboxes_owned_by(&owner)
        .iter()
        .filter(|m| covered(m))
        .map(MailboxView::from)
        .collect();
    Ok(page.apply(views, false))
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
    crate::faults::forget_mailbox(state, &mb.address).await;
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
