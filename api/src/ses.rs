//! `POST /api/v1/ses/inbound`: the thin HTTP face of [`uncorreo_ses`]. Reads
//! the body under `sns.max_body_bytes`, hands it with the
//! `x-amz-sns-message-type` header to [`Ingest::handle`], and turns the
//! [`Answer`] into a status: `413` for a body over the limit, `503` when SNS
//! should retry (also, with `Retry-After`, when the budget of bytes in
//! flight cannot take the body: see [`crate::inflight`]), `200` for
//! everything else (handled or dropped on purpose).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use uncorreo_budget::Budget;
use uncorreo_ses::{Answer, Ingest, Outcome};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::inflight::{self, BodyError, FrontEnd};
use crate::AppState;

/// Copies of a body's size that handling it makes besides the body itself:
/// the SNS envelope's `Message` string, and the mail decoded from it (each
/// at most the body's size). Paid for from the budget before handling.
const HANDLING_COPIES: usize = 2;

/// The webhook's path.
pub const INBOUND_PATH: &str = "/api/v1/ses/inbound";

/// What the webhook answers with `200` (documentation of the body
/// `uncorreo_ses::Answer` serialises).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct InboundAnswer {
    /// `delivered`, `duplicate`, `malformed`, `bad_signature`, … (the
    /// `uncorreo_ses_notifications_total` outcome label).
    outcome: String,
    /// Why, for a person reading the log.
    detail: Option<String>,
}

/// SES → SNS webhook. Authenticated by the SNS signature, not by
/// credentials: anything unsigned, forged, stale, for an unknown topic or a
/// duplicate is dropped with `200` (so SNS does not retry for days) and stores
/// nothing; `503` only when storage failed temporarily, so SNS retries.
#[utoipa::path(
    post,
    path = "/api/v1/ses/inbound",
    tag = "ses",
    request_body(content = Option<String>, content_type = "text/plain", description = "An SNS message (JSON; SNS sends it as text/plain). Anything else, an empty body included, is dropped with `200` and outcome `malformed`."),
    responses(
        (status = 200, description = "Handled or deliberately dropped; the body says which", content_type = "application/json", body = InboundAnswer),
        (status = 413, description = "Body over `sns.max_body_bytes`", content_type = "application/problem+json", body = crate::problem::ProblemBody),
        (status = 503, description = "Storage failed temporarily, or too much mail in flight (`Retry-After`); SNS retries", content_type = "application/problem+json", body = crate::problem::ProblemBody),
    )
)]
pub(crate) async fn inbound(
    State(ingest): State<Ingest>,
    State(budget): State<Budget>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // This route's only body cap (`sns.max_body_bytes`): SNS bodies carry
    // whole messages, so the router's JSON limit layer does not cover it
    // (see `openapi::api_router`), and reading the cap here lets the 413 be
    // counted as a webhook outcome.
    let read = inflight::read(&budget, &headers, body, ingest.config().max_body_bytes).await;
    let answer = match read {
        Ok((body, mut permit)) => {
            let copies = body.len().saturating_mul(HANDLING_COPIES);
            if let Err(refused) = inflight::hold_more(&mut permit, copies, FrontEnd::Ses) {
                return refused.into_response();
            }
            let message_type = headers.get("x-amz-sns-message-type");
            ingest
                .handle(message_type.map(HeaderValue::as_bytes), &body)
                .await
        }
        Err(BodyError::OverBudget(_)) => {
            return inflight::refused_unread(FrontEnd::Ses).into_response()
        }
        Err(BodyError::TooLarge) => ingest.too_large(),
        Err(BodyError::Unreadable) => ingest.unreadable(),
    };
    respond(&answer)
}

fn respond(answer: &Answer) -> Response {
    if answer.outcome == Outcome::TooLarge {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload Too Large",
            &answer.detail,
        );
    }
    if answer.retry {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            &format!("{}: {}", answer.outcome.as_str(), answer.detail),
        );
    }
    let body = serde_json::json!({
        "outcome": answer.outcome.as_str(),
        "detail": answer.detail,
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

/// What the webhook route alone needs (see [`router`]).
#[derive(Clone)]
struct WebhookOnly {
    ingest: Ingest,
    budget: Budget,
}

impl axum::extract::FromRef<WebhookOnly> for Ingest {
    fn from_ref(state: &WebhookOnly) -> Self {
        state.ingest.clone()
    }
}

impl axum::extract::FromRef<WebhookOnly> for Budget {
    fn from_ref(state: &WebhookOnly) -> Self {
        state.budget.clone()
    }
}

/// The webhook route alone, with its state applied (for tests that serve
/// only the webhook). The appliance registers the same handler in
/// [`crate::openapi::api_router`], documented like every other route.
pub fn router<S: Clone + Send + Sync + 'static>(ingest: Ingest, budget: Budget) -> axum::Router<S> {
    let (router, _doc) = utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(inbound))
        .split_for_parts();
    router.with_state(WebhookOnly { ingest, budget })
}

/// This module's routes, each registered with its documentation.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(inbound))
}
