//! `GET /api/v1/campaigns/{id}/report/stream`: a load campaign's report as
//! Server-Sent Events, live while mail arrives.
//!
//! The report is one value, not a sequence, so there is no replay and no
//! queue: the stream holds the engine's change notification for the
//! campaign ([`uncorreo_engine::CampaignWatch`]) and, when it fires, reads
//! the current report. A burst of commits is one event per
//! [`REPORT_INTERVAL`] at most, and a reader slower than that simply gets
//! fewer, newer reports (the body is produced only as fast as the socket
//! takes it). A stalled write is cut by the server's write timeout
//! (`http.write_timeout_secs`) like every SSE stream; watchers per campaign
//! are bounded by `realtime.max_subscribers_per_mailbox`.
//!
//! Events: `event: report` (data: the same JSON as `GET …/report`), first
//! at once, then after each change; `event: end` (data
//! `{"event":"end","reason":"campaign_gone"|"shutdown"}`) when the campaign
//! is deleted or expires, or the server shuts down, and then the body ends.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uncorreo_engine::campaign::CampaignId;
use uncorreo_engine::{CampaignWatch, WatchCampaignError};

use crate::auth::Caller;
use crate::campaigns::{authorize_campaign, report};
use crate::problem::{Kind, Problem, ProblemBody};
use crate::AppState;
use utoipa::ToSchema;

/// Shortest time between two reports of one stream: changes within it are
/// sent together in the next report.
pub const REPORT_INTERVAL: Duration = Duration::from_millis(250);

/// One Server-Sent Event of the report stream, as its fields.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReportStreamEvent {
    /// `report` or `end`.
    #[schema(pattern = "^(report|end)$")]
    pub event: String,
    /// JSON text: a `ReportView` for `report`, `{"event":"end","reason":…}` for `end`.
    pub data: String,
}

/// Watch a campaign's report live.
#[utoipa::path(
    get,
    path = "/api/v1/campaigns/{id}/report/stream",
    tag = "campaigns",
    description = "A `text/event-stream` of the campaign's report: `event: report` with the \
same JSON as `GET /api/v1/campaigns/{id}/report`, sent at once and again whenever the report \
changed (at most one every 250 ms while mail arrives; a slow reader gets fewer, newer reports). \
Keep-alive comments every `ping_interval_secs`. The stream ends with `event: end`, data \
`{\"event\":\"end\",\"reason\":\"campaign_gone\"}` once the campaign is deleted or expires, or \
`\"reason\":\"shutdown\"` when the server stops.",
    params(("id" = String, Path, description = "The campaign's id")),
    responses(
        (status = 200, description = "The event stream; each event's fields", body = ReportStreamEvent, content_type = "text/event-stream"),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`api-key-required`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such campaign, or not yours", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited, or the campaign has `max_subscribers_per_mailbox` live streams", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])),
)]
pub async fn campaign_report_stream(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let campaign = authorize_campaign(&state, &caller, &id)?;
    let rt = state.realtime().clone();
    let changes = state
        .engine
        .watch_campaign(campaign.id, rt.config().max_subscribers_per_mailbox)
        .map_err(|e| match e {
            WatchCampaignError::Full { limit } => Problem::new(
                Kind::RateLimited,
                format!("this campaign has {limit} live report streams already; close one or retry later"),
            )
            .retry_after(5),
            _ => Problem::not_found(),
        })?;
    let left_ms = campaign.expires_at_ms.saturating_sub(state.engine.now_ms());
    let feed = ReportFeed {
        expires: Instant::now() + Duration::from_millis(left_ms),
        state,
        id: campaign.id,
        changes,
        shutdown: rt.shutdown_token(),
        last_sent: None,
    };
    let stream = futures_util::stream::unfold(Some(feed), |feed| async move {
        let mut feed = feed?;
        match feed.next().await {
            Ok(json) => {
                metrics::counter!(uncorreo_metric_names::REALTIME_EVENTS_SENT_TOTAL, "transport" => "sse")
                    .increment(1);
                Some((Ok(Event::default().event("report").data(json)), Some(feed)))
            }
            Err(reason) => {
                metrics::counter!(uncorreo_metric_names::SSE_STREAMS_TOTAL, "reason" => reason)
                    .increment(1);
                let data = serde_json::json!({ "event": "end", "reason": reason }).to_string();
                // The last event; `None` ends the body on the next poll.
                Some((Ok(Event::default().event("end").data(data)), None))
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(rt.config().ping())))
}

/// One stream's state between events.
struct ReportFeed {
    state: AppState,
    id: CampaignId,
    changes: CampaignWatch,
    shutdown: CancellationToken,
    /// When the campaign expires (the engine drops it at its next expiry
    /// step; the stream ends on time without waiting for that).
    expires: Instant,
    last_sent: Option<Instant>,
}

const GONE: &str = "campaign_gone";
const SHUTDOWN: &str = "shutdown";

impl ReportFeed {
    /// The next report as JSON, or why the stream ends. The first comes at
    /// once; each later one waits for a change, then for the rest of
    /// [`REPORT_INTERVAL`] since the previous one, so changes in between
    /// are folded into it.
    async fn next(&mut self) -> Result<String, &'static str> {
        if let Some(sent) = self.last_sent {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Err(SHUTDOWN),
                changed = self.changes.changed() => if changed.is_err() {
                    return Err(GONE);
                },
                _ = tokio::time::sleep_until(self.expires) => return Err(GONE),
            }
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Err(SHUTDOWN),
                _ = tokio::time::sleep_until(sent + REPORT_INTERVAL) => {}
            }
        }
        // Marked seen before the read: a change after this point wakes the
        // next round, one before it is in this report.
        self.changes.borrow_and_update();
        self.last_sent = Some(Instant::now());
        let view = report(&self.state, self.id).ok_or(GONE)?;
        Ok(serde_json::to_string(&view).unwrap_or_default())
    }
}
