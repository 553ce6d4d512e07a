//! Operator endpoints: liveness, readiness, Prometheus metrics and the
//! OpenAPI document. None of them needs credentials or is rate-limited
//! (probes and scrapers must never be told 429).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::problem::{Kind, Problem, ProblemBody};
use crate::AppState;

/// Body of `/health` and `/ready`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// `ok` or `ready`.
    pub status: String,
}

/// Liveness: 200 whenever the process can answer.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "The process is alive", body = Status)),
)]
pub async fn health() -> Json<Status> {
    Json(Status {
        status: "ok".to_owned(),
    })
}

/// Readiness: 200 while storage accepts writes; 503 once it is poisoned.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Storage is open and accepts writes", body = Status),
        (status = 503, description = "`storage-failed`: storage refuses writes until restart", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Status>, Problem> {
    if state.engine.is_poisoned() {
        // Which part failed, so an operator knows where to look; the
        // one-atomic check above keeps the healthy path cheap.
        let health = state.engine.health();
        let mut parts: Vec<String> = health
            .failed_shards
            .iter()
            .map(|s| format!("log shard {s}"))
            .collect();
        if health.compaction_failed {
            parts.push("the compaction thread".to_owned());
        }
        return Err(Problem::new(
            Kind::StorageFailed,
            format!(
                "storage failed ({}) and refuses writes until the server is restarted",
                parts.join(", ")
            ),
        ));
    }
    Ok(Json(Status {
        status: "ready".to_owned(),
    }))
}

/// Prometheus text exposition format 0.0.4.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Metrics in Prometheus text format", body = String,
        content_type = "text/plain; version=0.0.4")),
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    crate::metrics::refresh_engine_gauges(&state.engine);
    crate::metrics::refresh_budget_gauges(state.budget());
    let handle = state.metrics_handle();
    handle.run_upkeep();
    let mut body = handle.render();
    crate::metrics::render_campaigns(&state.engine, &mut body);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object,
        content_type = "application/json")),
)]
pub async fn openapi(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        state.openapi_json().clone(),
    )
        .into_response()
}

/// This module's routes, each registered with its documentation.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(openapi))
}
