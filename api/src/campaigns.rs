//! `/api/v1/campaigns`: load-testing campaigns (issue #18). A campaign takes
//! mail for its catch-all subdomain `c-<id>.<served domain>` and an optional
//! `prefix*@<served domain>` pattern, without a mailbox per address; its
//! report counts what arrived, once or more, and how fast. Only an API key
//! opens these routes, and a campaign counts like a mailbox in the plan's
//! `max_mailboxes`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use uncorreo_engine::campaign::{
    AddressPattern, CampaignId, CampaignInfo, CreateCampaignError, NewCampaign, StoreMode,
    MAX_CAMPAIGN_NAME, MAX_SENT_AT_HEADER,
};
use uncorreo_engine::Owner;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::problem::{json_body, Kind, Problem, ProblemBody};
use crate::quota::{campaign_quota_address, QuotaKey};
use crate::AppState;
use uncorreo_mail::date::rfc3339_millis as rfc3339;

/// Most messages one page of `GET …/messages` returns.
pub const MAX_CAMPAIGN_PAGE: usize = 100;

/// What a campaign keeps of each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    /// The raw message, with our trace header.
    Full,
    /// The header section only.
    Headers,
    /// Only the metadata: envelope, Message-ID, sizes, timestamps.
    Count,
}

impl From<Store> for StoreMode {
    fn from(s: Store) -> Self {
        match s {
            Store::Full => Self::Full,
            Store::Headers => Self::Headers,
            Store::Count => Self::Count,
        }
    }
}

impl From<StoreMode> for Store {
    fn from(s: StoreMode) -> Self {
        match s {
            StoreMode::Full => Self::Full,
            StoreMode::Headers => Self::Headers,
            StoreMode::Count => Self::Count,
        }
    }
}

/// Body of `POST /api/v1/campaigns`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCampaign {
    /// Free text, 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Minutes until the campaign stops taking mail and is deleted: 1 ..= the
    /// plan's `max_ttl_minutes` (above it `403 ttl-too-long`). When absent:
    /// the configured default, capped at the plan's maximum.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "crate::mailboxes::whole_number")]
    pub ttl_minutes: Option<u32>,
    /// `prefix*@<served domain>` (prefix 3 to 32 of `a-z0-9._-`): mail to
    /// any address starting with the prefix lands in the campaign too,
    /// unless a mailbox exists at that exact address.
    pub address_pattern: Option<String>,
    /// What to keep of each message (`full` when absent).
    pub store: Option<Store>,
    /// The header the arrival latency is measured from (`Date` when
    /// absent): RFC 5322 or RFC 3339 dates, or epoch seconds/milliseconds.
    #[schema(min_length = 1, max_length = 64, pattern = "^[!-9;-~]+$")]
    pub sent_at_header: Option<String>,
}

/// A campaign.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CampaignView {
    /// Its id (hex).
    pub id: String,
    /// Free text.
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; the campaign stops taking mail and is deleted after this.
    pub expires_at: String,
    /// What it keeps of each message.
    pub store: Store,
    /// Its catch-all domains, one per served domain: mail to any local part
    /// `@` one of them lands here.
    pub domains: Vec<String>,
    /// The optional `prefix*@domain` pattern.
    pub address_pattern: Option<String>,
    /// The header the arrival latency is measured from.
    pub sent_at_header: String,
    /// Messages accepted so far.
    pub messages: u64,
}

impl CampaignView {
    fn new(c: &CampaignInfo, served: &[String]) -> Self {
        Self {
            id: c.id.to_string(),
            name: c.name.clone(),
            created_at: rfc3339(c.created_at_ms),
            expires_at: rfc3339(c.expires_at_ms),
            store: c.store.into(),
            domains: served.iter().map(|d| c.id.domain(d)).collect(),
            address_pattern: c.pattern.as_ref().map(ToString::to_string),
            sent_at_header: c.sent_at_header.clone(),
            messages: c.messages,
        }
    }
}

/// The caller's campaigns.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CampaignList {
    /// Oldest first.
    pub campaigns: Vec<CampaignView>,
}

/// A Message-ID that arrived more than once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DuplicateView {
    /// The Message-ID.
    pub message_id: String,
    /// How many messages carried it.
    pub count: u32,
}

/// One histogram bucket.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BucketView {
    /// Upper bound of the bucket, ms (inclusive).
    pub le_ms: u64,
    /// Messages in it.
    pub count: u64,
}

/// Arrival latency: from the message's sending time to our commit.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LatencyView {
    /// The header the sending time was read from.
    pub header: String,
    /// Messages with a readable sending time.
    pub count: u64,
    /// Median, ms (each percentile is its bucket's upper bound: at most 1/16 above the exact value).
    pub p50_ms: u64,
    /// 90th percentile, ms.
    pub p90_ms: u64,
    /// 99th percentile, ms.
    pub p99_ms: u64,
    /// Exact maximum, ms.
    pub max_ms: u64,
    /// Messages without a readable sending time.
    pub without_sent_at: u64,
    /// Messages sent "after" we committed them (the sender's clock is ahead): counted as 0 ms.
    pub sent_in_future: u64,
    /// Non-empty buckets, lowest first.
    pub histogram: Vec<BucketView>,
}

/// What a campaign received.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReportView {
    /// The campaign's id.
    pub campaign: String,
    /// Messages accepted (one per recipient copy).
    pub accepted: u64,
    /// Refusals by SMTP reply code (fault plans, limits), since the server started.
    pub refused: BTreeMap<String, u64>,
    /// Distinct Message-IDs.
    pub unique_message_ids: u64,
    /// Messages without a Message-ID.
    pub without_message_id: u64,
    /// Message-IDs seen more than once.
    pub duplicate_message_ids: u64,
    /// Messages beyond the first with the same Message-ID.
    pub duplicate_messages: u64,
    /// Up to 100 duplicated Message-IDs, in the order they were first duplicated.
    pub duplicates: Vec<DuplicateView>,
    /// Distinct envelope recipients.
    pub distinct_recipients: u64,
    /// Bytes of the messages accepted, as received.
    pub bytes: u64,
    /// RFC 3339 commit time of the first message.
    pub first_arrival: Option<String>,
    /// RFC 3339 commit time of the last message.
    pub last_arrival: Option<String>,
    /// Arrival latency.
    pub latency: LatencyView,
}

/// Query of `GET /api/v1/campaigns/{id}/messages`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// The envelope recipient (any case).
    pub recipient: String,
    /// Only messages with a sequence above this (the previous page's `next_after`).
    pub after: Option<u64>,
    /// 1 ..= 100 (default 100).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
}

/// One stored campaign message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CampaignMessageView {
    /// Its sequence in the campaign.
    pub seq: u64,
    /// The envelope recipient.
    pub recipient: String,
    /// The envelope sender (empty for `<>`).
    pub envelope_from: String,
    /// Its Message-ID.
    pub message_id: Option<String>,
    /// Bytes as received.
    pub size: u32,
    /// RFC 3339 sending time from the campaign's latency header.
    pub sent_at: Option<String>,
    /// RFC 3339 time it was durable here.
    pub committed_at: String,
    /// What the campaign keeps, base64: the raw message with our trace
    /// header (`full`) or its header section (`headers`).
    pub raw_base64: String,
}

/// A page of campaign messages.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CampaignMessagePage {
    /// Oldest first.
    pub messages: Vec<CampaignMessageView>,
    /// Pass as `after` for the next page.
    pub next_after: u64,
}

const P400: &str = "Malformed JSON or query";
use crate::problem::UNAUTHENTICATED_DESCRIPTION as P401;

/// Create a campaign.
#[utoipa::path(
    post,
    path = "/api/v1/campaigns",
    tag = "campaigns",
    request_body(content = CreateCampaign, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = CampaignView,
            headers(("Location" = String, description = "The campaign URL"))),
        (status = 400, description = P400, body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = P401, body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`api-key-required` (a session token), `mailbox-limit` (campaigns count like mailboxes), `ttl-too-long`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`address-taken`: a live campaign's pattern overlaps this one", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: a bad name, TTL, pattern or header name", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the appliance holds its maximum of live campaigns, or storage is busy", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])),
)]
pub async fn create_campaign(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, Problem> {
    let user = caller.require_user()?;
    let req: CreateCampaign = json_body(&headers, &body?)?;
    let engine = &state.engine;
    let plan = caller.plan(&state).plan;
    if req.name.is_empty() || req.name.chars().count() > MAX_CAMPAIGN_NAME {
        return Err(
            Problem::new(Kind::InvalidRequest, "name must be 1 to 200 characters")
                .for_field("name"),
        );
    }
    let ttl = crate::mailboxes::ttl_minutes(&state, &plan, req.ttl_minutes)?;
    let pattern = match &req.address_pattern {
        None => None,
        Some(p) => Some(AddressPattern::parse(p).filter(|p| engine.is_local_domain(&p.domain)).ok_or_else(|| {
            Problem::new(
                Kind::InvalidRequest,
                "address_pattern must be prefix*@domain: a prefix of 3 to 32 of a-z, 0-9, '.', '_', '-' on a served domain",
            )
            .for_field("address_pattern")
        })?),
    };
    let sent_at_header = req.sent_at_header.unwrap_or_else(|| "Date".to_owned());
    let header_ok = !sent_at_header.is_empty()
        && sent_at_header.len() <= MAX_SENT_AT_HEADER
        && sent_at_header
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b':');
    if !header_ok {
        return Err(Problem::new(
            Kind::InvalidRequest,
            "sent_at_header must be a header name of 1 to 64 printable characters without ':'",
        )
        .for_field("sent_at_header"));
    }
    let owner = Owner::User(user);
    let reservation = state
        .quotas()
        .reserve(engine, QuotaKey::owner(&owner), plan.max_mailboxes)
        .map_err(|_| {
            Problem::new(
                Kind::MailboxLimit,
                format!(
                    "this plan allows {} live mailboxes and campaigns together; delete one or wait for one to expire",
                    plan.max_mailboxes
                ),
            )
        })?;
    let expires_at_ms = engine
        .now_ms()
        .saturating_add(u64::from(ttl).saturating_mul(60_000));
    let id = claim_id(&state, expires_at_ms).await?;
    if let Some(a) = campaign_quota_address(id) {
        reservation.attempting(&a);
    }
    reservation.until(expires_at_ms);
    if let Err(e) = crate::counts::claim(
        &state,
        user,
        plan.max_mailboxes,
        "mailboxes and campaigns together",
    )
    .await
    {
        state.accounts.forget_campaign(id).await;
        return Err(e);
    }
    let created = engine
        .create_campaign(NewCampaign {
            id,
            owner,
            name: req.name,
            expires_at_ms,
            pattern,
            store: req.store.unwrap_or(Store::Full).into(),
            sent_at_header,
        })
        .await;
    drop(reservation);
    if created.is_err() {
        crate::counts::recount(&state, user).await;
        state.accounts.forget_campaign(id).await;
    }
    let info = created.map_err(|e| match e {
        CreateCampaignError::Taken => Problem::new(
            Kind::AddressTaken,
            "a live campaign has an overlapping address pattern",
        )
        .for_field("address_pattern"),
        CreateCampaignError::ForeignDomain => Problem::new(
            Kind::InvalidRequest,
            "the pattern's domain is not served here",
        )
        .for_field("address_pattern"),
        CreateCampaignError::LimitReached => Problem::new(
            Kind::Unavailable,
            "the appliance holds its maximum of live campaigns",
        ),
        CreateCampaignError::Storage(e) => Problem::from(e),
        _ => Problem::new(Kind::Internal, "campaign not created"),
    })?;
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/campaigns/{}", info.id)) {
        h.insert(header::LOCATION, v);
    }
    let view = CampaignView::new(&info, &engine.config().domains);
    Ok((StatusCode::CREATED, h, Json(view)))
}

/// How many random ids a creation tries before it gives up (`503`): each
/// one is taken only with odds of live campaigns in 2^48.
const ID_TRIES: usize = 4;

/// A fresh campaign id, recorded as this host's in the cluster (so every
/// host forwards its mail here) before the campaign is made. The record's
/// `create` decides between two hosts that drew the same id.
async fn claim_id(state: &AppState, expires_at_ms: u64) -> Result<CampaignId, Problem> {
    for _ in 0..ID_TRIES {
        let id = CampaignId::random();
        if state.engine.campaign(id).is_some() {
            continue;
        }
        if state.accounts.claim_campaign(id, expires_at_ms).await? {
            return Ok(id);
        }
    }
    Err(
        Problem::new(Kind::Unavailable, "no free campaign id was found; retry")
            .retry_after(crate::accounts::RETRY_AFTER_SECS),
    )
}

/// The caller's live campaigns.
#[utoipa::path(
    get,
    path = "/api/v1/campaigns",
    tag = "campaigns",
    responses(
        (status = 200, description = "Live campaigns, oldest first", body = CampaignList),
        (status = 401, description = P401, body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`api-key-required`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])),
)]
pub async fn list_campaigns(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<CampaignList>, Problem> {
    let user = caller.require_user()?;
    let served = &state.engine.config().domains;
    let campaigns = state
        .engine
        .campaigns_owned_by(&Owner::User(user))
        .iter()
        .map(|c| CampaignView::new(c, served))
        .collect();
    Ok(Json(CampaignList { campaigns }))
}

/// The campaign `id` if `caller` owns it; any other case is the same 404.
pub fn authorize_campaign(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<CampaignInfo, Problem> {
    let user = caller.require_user()?;
    CampaignId::parse(id)
        .and_then(|id| state.engine.campaign(id))
        .filter(|c| c.owner == Owner::User(user))
        .ok_or_else(Problem::not_found)
}

/// One campaign.
#[utoipa::path(
    get,
    path = "/api/v1/campaigns/{id}",
    tag = "campaigns",
    params(("id" = String, Path, description = "The campaign's id")),
    responses(
        (status = 200, description = "The campaign", body = CampaignView),
        (status = 401, description = P401, body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`api-key-required`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such campaign, or not yours", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])),
)]
pub async fn get_campaign(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, Problem> {
    let c = authorize_campaign(&state, &caller, &id)?;
    Ok(Json(CampaignView::new(&c, &state.engine.config().domains)))
}

/// Delete a campaign and everything it stored.
#[utoipa::path(
    delete,
    path = "/api/v1/campaigns/{id}",
    tag = "campaigns",
    params(("id" = String, Path, description = "The campaign's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = P401, body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`api-key-required`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such campaign, or not yours", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Storage busy or failed", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])),
)]
pub async fn delete_campaign(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let c = authorize_campaign(&state, &caller, &id)?;
    state.engine.delete_campaign(c.id).await?;
    state.accounts.forget_campaign(c.id).await;
    if let Owner::User(user) = c.owner {
        crate::counts::recount(&state, user).await;
    }
    crate::faults::forget(&state, &crate::faults::campaign_target(c.id)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The campaign's report (also after a restart: rebuilt from the log).
#[utoipa::path(
    get,
    path = "/api/v1/campaigns/{id}/report",
    tag = "campaigns",
    params(("id" = String, Path, description = "The campaign's id")),
    responses(
        (status = 200, description = "The report", body = ReportView),
        (status = 401, description = P401, body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`api-key-required`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such campaign, or not yours", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])),
)]
pub async fn get_report(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ReportView>, Problem> {
    let c = authorize_campaign(&state, &caller, &id)?;
    report(&state, c.id)
        .map(Json)
        .ok_or_else(Problem::not_found)
}

/// The report of campaign `id`, if it is live.
pub fn report(state: &AppState, id: CampaignId) -> Option<ReportView> {
    state.engine.campaign_report(id, |info, r| {
        let l = r.latency();
        ReportView {
            campaign: id.to_string(),
            accepted: r.accepted(),
            refused: r
                .refused()
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            unique_message_ids: r.unique_message_ids(),
            without_message_id: r.without_message_id(),
            duplicate_message_ids: r.duplicate_message_ids(),
            duplicate_messages: r.duplicate_messages(),
            duplicates: r
                .duplicates()
                .map(|d| DuplicateView {
                    message_id: d.message_id.clone(),
                    count: d.count,
                })
                .collect(),
            distinct_recipients: r.distinct_recipients(),
            bytes: r.bytes(),
            first_arrival: r.first_last_ms().map(|(f, _)| rfc3339(f)),
            last_arrival: r.first_last_ms().map(|(_, l)| rfc3339(l)),
            latency: LatencyView {
                header: info.sent_at_header.clone(),
                count: l.count,
                p50_ms: l.p50_ms,
                p90_ms: l.p90_ms,
                p99_ms: l.p99_ms,
                max_ms: l.max_ms,
                without_sent_at: r.without_sent_at(),
                sent_in_future: r.sent_in_future(),
                histogram: r
                    .histogram()
                    .buckets()
                    .map(|(le_ms, count)| BucketView { le_ms, count })
                    .collect(),
            },
        }
    })
}

/// Stored messages of a `full` or `headers` campaign for one recipient.
#[utoipa::path(
    get,
    path = "/api/v1/campaigns/{id}/messages",
    tag = "campaigns",
    params(("id" = String, Path, description = "The campaign's id"), MessagesQuery),
    responses(
        (status = 200, description = "A page, oldest first (always empty for a `count` campaign)", body = CampaignMessagePage),
        (status = 400, description = P400, body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = P401, body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`api-key-required`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such campaign, or not yours", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`limit` out of range", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])),
)]
pub async fn list_campaign_messages(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<MessagesQuery>, QueryRejection>,
) -> Result<Json<CampaignMessagePage>, Problem> {
    let c = authorize_campaign(&state, &caller, &id)?;
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(MAX_CAMPAIGN_PAGE);
    if limit == 0 || limit > MAX_CAMPAIGN_PAGE {
        return Err(
            Problem::new(Kind::InvalidRequest, "limit must be between 1 and 100")
                .for_field("limit"),
        );
    }
    let after = q.after.unwrap_or(0);
    let msgs = state
        .engine
        .campaign_messages(c.id, &q.recipient, after, limit)
        .ok_or_else(Problem::not_found)?;
    let next_after = msgs.last().map_or(after, |m| m.seq);
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(Json(CampaignMessagePage {
        messages: msgs
            .into_iter()
            .map(|m| CampaignMessageView {
                seq: m.seq,
                recipient: m.recipient,
                envelope_from: m.envelope_from,
                message_id: m.message_id,
                size: m.size,
                sent_at: m.sent_at_ms.map(rfc3339),
                committed_at: rfc3339(m.committed_at_ms),
                raw_base64: b64.encode(&m.body),
            })
            .collect(),
        next_after,
    }))
}

/// This module's routes, each registered with its documentation.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_campaign, list_campaigns))
        .routes(routes!(get_campaign, delete_campaign))
        .routes(routes!(get_report))
        .routes(routes!(list_campaign_messages))
}
