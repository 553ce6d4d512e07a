//! Prometheus metrics: the process-wide recorder, HTTP request metrics, and
//! the engine gauges refreshed at each scrape.
//!
//! Every crate emits through the `metrics` facade; this module installs the
//! one recorder per process (tests start several appliances in one process,
//! so installing is idempotent) and renders it at `/metrics`. Histograms
//! whose names end in `_seconds` or `_bytes`, and `uncorreo_batch_records`,
//! get explicit buckets so they render as real Prometheus histograms
//! (aggregatable across hosts) rather than summaries.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use uncorreo_engine::Engine;

/// Latency buckets (seconds): 50 µs .. 10 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];
/// Size buckets (bytes): 256 B .. 64 MiB.
pub const BYTES_BUCKETS: &[f64] = &[
    256.0,
    1024.0,
    4096.0,
    16_384.0,
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];
/// Records per committed batch: 1 .. 4096.
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// Webhook attempts and events by `outcome`: `delivered` (a 2xx), `failed`
/// (an attempt that will be retried or was the last), `refused` (the host
/// resolved to an address webhooks may not reach), `exhausted` (retry budget
/// spent, event dropped), `dropped` (over the per-endpoint queue bound).
pub const WEBHOOK_DELIVERIES_TOTAL: &str = "uncorreo_webhook_deliveries_total";

/// How often histogram samples are folded into buckets even without a scrape,
/// so memory stays bounded when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the process-wide recorder once and return its handle. If another
/// recorder was installed first (an embedding program's), ours still renders
/// but sees nothing; that is logged.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = builder().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was installed before ours; /metrics will be empty");
            }
            describe();
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".to_owned())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no metrics upkeep thread; histograms fold at scrape only");
            }
            handle
        })
        .clone()
}

fn builder() -> PrometheusBuilder {
    let b = PrometheusBuilder::new();
    let with = |b: PrometheusBuilder, m: Matcher, v: &[f64]| match b.set_buckets_for_metric(m, v) {
        Ok(b) => b,
        // Only fails for an empty bucket list, which the constants are not.
        Err(_) => PrometheusBuilder::new(),
    };
    let b = with(b, Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS);
    let b = with(b, Matcher::Suffix("_bytes".to_owned()), BYTES_BUCKETS);
    with(
        b,
        Matcher::Full("uncorreo_batch_records".to_owned()),
        BATCH_BUCKETS,
    )
}

fn describe() {
    describe_counter!(
        "uncorreo_http_requests_total",
        "HTTP requests answered, by route template, method and status."
    );
    describe_histogram!(
        "uncorreo_http_request_duration_seconds",
        Unit::Seconds,
        "Time from request to response head, by route template and method."
    );
    describe_counter!(
        "uncorreo_http_rate_limited_total",
        "HTTP requests refused with 429 by a rate limit."
    );
    describe_counter!(
        "uncorreo_mailboxes_created_total",
        "Mailboxes created over HTTP, by owner kind."
    );
    describe_counter!(
        "uncorreo_message_parse_failures_total",
        "Stored messages the parsed view could not be built for (too large, unparseable, parser panic)."
    );
    crate::realtime::describe_metrics();
    describe_counter!(
        WEBHOOK_DELIVERIES_TOTAL,
        "Outbound webhook attempts and events, by outcome (delivered, failed, refused, exhausted, dropped)."
    );
    describe_gauge!("uncorreo_mailboxes", "Live mailboxes.");
    describe_gauge!("uncorreo_messages", "Live stored messages.");
    describe_gauge!("uncorreo_segments", "Log segment files on disk.");
    describe_gauge!(
        "uncorreo_disk_bytes",
        Unit::Bytes,
        "Bytes of log segment files on disk."
    );
    describe_gauge!(
        "uncorreo_subscribers",
        "Live event subscribers (WebSocket, SSE, long-poll)."
    );
    describe_gauge!(
        "uncorreo_queue_depth",
        "Appends waiting for a log writer, summed over shards."
    );
    describe_gauge!(
        "uncorreo_in_flight_bytes",
        Unit::Bytes,
        "Bytes reserved right now by message bodies being received (SMTP, SES webhook, HTTP send)."
    );
    describe_gauge!(
        "uncorreo_in_flight_limit_bytes",
        Unit::Bytes,
        "The budget of bytes in flight ([memory] in_flight_bytes)."
    );
    describe_counter!(
        "uncorreo_in_flight_refused_total",
        "Bodies refused because the budget of bytes in flight was spent, by front end (smtp, ses, http_send, mailpit_send)."
    );
    describe_gauge!(
        "uncorreo_engine_poisoned",
        "1 once a write or sync failed; storage refuses writes until restart."
    );
    describe_other_crates();
}

/// HELP lines for what the engine, smtpd and the SES webhook emit. They
/// emit through the facade without describing; `promtool check metrics`
/// refuses a metric without help text, and the api crate is where the
/// exposition is assembled, so the catalogue of names lives here (the
/// `/metrics` promtool test catches a new name missing from it).
fn describe_other_crates() {
    describe_histogram!(
        "uncorreo_batch_records",
        "Records per committed log batch (one write and one fdatasync)."
    );
    describe_histogram!(
        "uncorreo_commit_seconds",
        Unit::Seconds,
        "Time from an append being queued to it being durable and acknowledged."
    );
    describe_histogram!(
        "uncorreo_fsync_seconds",
        Unit::Seconds,
        "Duration of one fdatasync of a log segment."
    );
    describe_counter!("uncorreo_compaction_runs_total", "Compaction passes run.");
    describe_counter!(
        "uncorreo_compaction_reclaimed_bytes_total",
        Unit::Bytes,
        "Bytes of log segments reclaimed by compaction."
    );
    describe_counter!(
        "uncorreo_corrupt_records_total",
        "Stored records found corrupt (bad checksum) and quarantined."
    );
    describe_gauge!("uncorreo_smtp_active_sessions", "Open SMTP sessions.");
    describe_counter!(
        "uncorreo_smtp_sessions_total",
        "SMTP sessions ended, by outcome."
    );
    describe_counter!(
        "uncorreo_smtp_messages_total",
        "SMTP messages answered at the end of DATA/BDAT, by outcome."
    );
    describe_counter!(
        "uncorreo_smtp_bytes_total",
        Unit::Bytes,
        "Message bytes received over SMTP."
    );
    describe_histogram!(
        "uncorreo_smtp_data_to_ack_seconds",
        Unit::Seconds,
        "Time from the end of DATA/BDAT to the durable 250 reply."
    );
    describe_counter!(
        "uncorreo_ses_notifications_total",
        "SES notifications received over SNS, by outcome."
    );
}

/// Record one request: count by route template (never the raw path, to keep
/// label cardinality bounded), method and status, and its latency.
pub async fn track_requests(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = normalized_method(req.method());
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    counter!("uncorreo_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    histogram!("uncorreo_http_request_duration_seconds", "route" => route, "method" => method)
        .record(start.elapsed().as_secs_f64());
    resp
}

fn normalized_method(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Refresh the gauges that mirror `engine.stats()`; called at each scrape.
pub fn refresh_engine_gauges(engine: &Engine) {
    let s = engine.stats();
    gauge!("uncorreo_mailboxes").set(s.mailboxes as f64);
    gauge!("uncorreo_messages").set(s.messages as f64);
    gauge!("uncorreo_segments").set(s.segments as f64);
    gauge!("uncorreo_disk_bytes").set(s.disk_bytes as f64);
    gauge!("uncorreo_subscribers").set(s.subscribers as f64);
    counter!("uncorreo_events_published_total").absolute(s.events_published);
    gauge!("uncorreo_queue_depth").set(s.queue_depth as f64);
    gauge!("uncorreo_engine_poisoned").set(if s.poisoned { 1.0 } else { 0.0 });
}

/// Refresh the gauges of the budget of bytes in flight; called at each scrape.
pub fn refresh_budget_gauges(budget: &uncorreo_budget::Budget) {
    gauge!("uncorreo_in_flight_bytes").set(budget.in_flight() as f64);
    gauge!("uncorreo_in_flight_limit_bytes").set(budget.limit() as f64);
}
