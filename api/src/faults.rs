//! Fault plans through the API (issue #18): `PUT/GET
//! /api/v1/campaigns/{id}/faults` and `/api/v1/mailboxes/{address}/faults`
//! (a plan with no rules removes it).
//! The rules and their evaluation are `uncorreo-faults`; smtpd applies them
//! at RCPT and at the end of data. Plans are durable as engine `State`
//! entries (`faults/c/<campaign>`, `faults/m/<address>`), loaded at start.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use uncorreo_engine::campaign::CampaignId;
use uncorreo_faults::{Plan, Target};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{authorize_mailbox, Caller};
use crate::campaigns::authorize_campaign;
use crate::problem::{json_body, Kind, Problem, ProblemBody};
use crate::AppState;

const PREFIX: &str = "faults/";

/// The fault target of a campaign.
pub fn campaign_target(id: CampaignId) -> Target {
    Target::Campaign(id.0)
}

fn key(t: &Target) -> String {
    match t {
        Target::Campaign(id) => format!("{PREFIX}c/{:x}", id),
        Target::Mailbox(a) => format!("{PREFIX}m/{a}"),
    }
}

fn target_of_key(k: &str) -> Option<Target> {
    let rest = k.strip_prefix(PREFIX)?;
    if let Some(hex) = rest.strip_prefix("c/") {
        return CampaignId::parse(hex).map(campaign_target);
    }
    rest.strip_prefix("m/")
        .map(|a| Target::Mailbox(a.to_owned()))
}

/// Put the durable plans in force (at start).
pub(crate) fn load(state: &AppState) {
    for (k, v) in state.engine.states_with_prefix(PREFIX) {
        let parsed = serde_json::from_str::<Plan>(&v);
        match (target_of_key(&k), parsed) {
            (Some(t), Ok(plan)) => {
                if let Err(e) = state.faults.set(t, plan) {
                    tracing::warn!(key = k, error = e.0, "stored fault plan not loaded");
                }
            }
            _ => tracing::warn!(key = k, "unreadable stored fault plan; ignored"),
        }
    }
}

/// A mailbox just made at `address` starts without a fault plan: one left
/// by an earlier mailbox at the same address (deleted or expired) goes.
pub(crate) async fn forget_mailbox(state: &AppState, address: &uncorreo_engine::Address) {
    // Every mailbox creation passes here: the common case costs one read.
    if state.faults.is_empty() {
        return;
    }
    forget(state, &Target::Mailbox(address.to_string())).await;
}

/// Whether the campaign or mailbox `target` names is live.
fn live(state: &AppState, target: &Target) -> bool {
    match target {
        Target::Campaign(id) => state.engine.campaign(CampaignId(*id)).is_some(),
        Target::Mailbox(address) => address
            .parse()
            .ok()
            .and_then(|address| state.engine.mailbox(&address))
            .is_some(),
    }
}

/// With every plan slot taken: forget the plans whose campaign or mailbox
/// ended (an ended mailbox's plan stays until then, or until a new mailbox
/// takes its address), so plans of disposable mailboxes never fill the
/// appliance.
async fn forget_ended(state: &AppState) {
    for target in state.faults.targets() {
        if !live(state, &target) {
            forget(state, &target).await;
        }
    }
}

/// Remove the plan of `target` (its campaign or mailbox is gone).
pub(crate) async fn forget(state: &AppState, target: &Target) {
    if state.faults.get(target).is_none() {
        return;
    }
    state.faults.remove(target);
    if let Err(e) = state.engine.put_state(&key(target), None).await {
        tracing::warn!(error = %e, "fault plan not removed from storage");
    }
}

async fn put(
    state: &AppState,
    target: Target,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Json<Plan>, Problem> {
    if body.is_empty() {
        return Err(Problem::new(
            Kind::BadRequest,
            "the body is the plan: {\"rules\": [...]}",
        ));
    }
    let not_an_object =
        serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| !v.is_object());
    if not_an_object {
        return Err(Problem::new(
            Kind::InvalidRequest,
            "the plan is a JSON object: {\"rules\": [...]}",
        ));
    }
    let plan: Plan = json_body(headers, body)?;
    if plan.rules.is_empty() {
        // No rules: no plan (this is how a plan is removed).
        forget(state, &target).await;
        return Ok(Json(plan));
    }
    plan.validate()
        .map_err(|e| Problem::new(Kind::InvalidRequest, e.0).for_field("rules"))?;
    let text = serde_json::to_string(&plan)
        .map_err(|_| Problem::new(Kind::Internal, "plan not encoded"))?;
    if state.faults.full_without(&target) {
        forget_ended(state).await;
        if state.faults.full_without(&target) {
            return Err(Problem::new(
                Kind::Unavailable,
                format!(
                    "at most {} fault plans in force; remove one first",
                    uncorreo_faults::MAX_PLANS
                ),
            ));
        }
    }
    // Durable first, then in force: a plan the client was told about survives a restart.
    state.engine.put_state(&key(&target), Some(&text)).await?;
    state
        .faults
        .set(target, plan.clone())
        .map_err(|e| Problem::new(Kind::Unavailable, e.0))?;
    Ok(Json(plan))
}

fn get(state: &AppState, target: &Target) -> Result<Json<Plan>, Problem> {
    Ok(Json(
        state
            .faults
            .get(target)
            .unwrap_or(Plan { rules: Vec::new() }),
    ))
}

use crate::problem::UNAUTHENTICATED_DESCRIPTION as P401;

/// Set a campaign's fault plan (replacing any; its counters start again;
/// no rules removes it).
#[utoipa::path(
    put,
    path = "/api/v1/campaigns/{id}/faults",
    tag = "campaigns",
    params(("id" = String, Path, description = "The campaign's id")),
    request_body(content = Plan, content_type = "application/json"),
    responses(
        (status = 200, description = "In force (no rules: removed)", body = Plan),
        (status = 400, description = "Malformed JSON, or no body", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = P401, body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`api-key-required`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such campaign, or not yours", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: a rule out of bounds", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Storage busy, or the appliance holds its maximum of fault plans", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])),
)]
pub async fn put_campaign_faults(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Plan>, Problem> {
    let c = authorize_campaign(&state, &caller, &id)?;
    put(&state, campaign_target(c.id), &headers, &body?).await
}

/// A campaign's fault plan (no rules when none is set).
#[utoipa::path(
    get,
    path = "/api/v1/campaigns/{id}/faults",
    tag = "campaigns",
    params(("id" = String, Path, description = "The campaign's id")),
    responses(
        (status = 200, description = "The plan", body = Plan),
        (status = 401, description = P401, body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`api-key-required`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such campaign, or not yours", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])),
)]
pub async fn get_campaign_faults(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Plan>, Problem> {
    let c = authorize_campaign(&state, &caller, &id)?;
    get(&state, &campaign_target(c.id))
}

fn mailbox_target(state: &AppState, caller: &Caller, address: &str) -> Result<Target, Problem> {
    let mb = authorize_mailbox(state, caller, address)?;
    Ok(Target::Mailbox(mb.address.to_string()))
}

/// Set a mailbox's fault plan (replacing any; its counters start again;
/// no rules removes it).
#[utoipa::path(
    put,
    path = "/api/v1/mailboxes/{address}/faults",
    tag = "mailboxes",
    params(("address" = String, Path, description = "`local@domain`")),
    request_body(content = Plan, content_type = "application/json"),
    responses(
        (status = 200, description = "In force (no rules: removed)", body = Plan),
        (status = 400, description = "Malformed JSON, or no body", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = P401, body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox, or not visible with these credentials", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: a rule out of bounds", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Storage busy, or the appliance holds its maximum of fault plans", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session_token" = [])),
)]
pub async fn put_mailbox_faults(
    State(state): State<AppState>,
    caller: Caller,
    Path(address): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Plan>, Problem> {
    let target = mailbox_target(&state, &caller, &address)?;
    put(&state, target, &headers, &body?).await
}

/// A mailbox's fault plan (no rules when none is set).
#[utoipa::path(
    get,
    path = "/api/v1/mailboxes/{address}/faults",
    tag = "mailboxes",
    params(("address" = String, Path, description = "`local@domain`")),
    responses(
        (status = 200, description = "The plan", body = Plan),
        (status = 401, description = P401, body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox, or not visible with these credentials", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session_token" = [])),
)]
pub async fn get_mailbox_faults(
    State(state): State<AppState>,
    caller: Caller,
    Path(address): Path<String>,
) -> Result<Json<Plan>, Problem> {
    let target = mailbox_target(&state, &caller, &address)?;
    get(&state, &target)
}

/// This module's routes, each registered with its documentation.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(put_campaign_faults, get_campaign_faults))
        .routes(routes!(put_mailbox_faults, get_mailbox_faults))
}
