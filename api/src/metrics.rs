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
use metrics::{counter, gauge, histogram};
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
        Matcher::Full(uncorreo_metric_names::BATCH_RECORDS.to_owned()),
        BATCH_BUCKETS,
    )
}

fn describe() {
    uncorreo_metric_names::describe_all();
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
    counter!(uncorreo_metric_names::HTTP_REQUESTS_TOTAL, "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    histogram!(uncorreo_metric_names::HTTP_REQUEST_DURATION_SECONDS, "route" => route, "method" => method)
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
    gauge!(uncorreo_metric_names::MAILBOXES).set(s.mailboxes as f64);
    gauge!(uncorreo_metric_names::MESSAGES).set(s.messages as f64);
    gauge!(uncorreo_metric_names::SEGMENTS).set(s.segments as f64);
    gauge!(uncorreo_metric_names::DISK_BYTES).set(s.disk_bytes as f64);
    gauge!(uncorreo_metric_names::SUBSCRIBERS).set(s.subscribers as f64);
    counter!(uncorreo_metric_names::EVENTS_PUBLISHED_TOTAL).absolute(s.events_published);
    gauge!(uncorreo_metric_names::QUEUE_DEPTH).set(s.queue_depth as f64);
    gauge!(uncorreo_metric_names::ENGINE_POISONED).set(if s.poisoned { 1.0 } else { 0.0 });
}

/// Refresh the gauges of the budget of bytes in flight; called at each scrape.
pub fn refresh_budget_gauges(budget: &uncorreo_budget::Budget) {
    gauge!(uncorreo_metric_names::IN_FLIGHT_BYTES).set(budget.in_flight() as f64);
    gauge!(uncorreo_metric_names::IN_FLIGHT_LIMIT_BYTES).set(budget.limit() as f64);
}

/// Append the per-campaign counters of `engine`'s live campaigns to a
/// rendered exposition; called at each scrape.
///
/// Rendered here from the campaign reports rather than emitted through the
/// facade: the exporter keeps every series it was given until the process
/// ends and has no way to drop one, and a campaign's series must end with
/// the campaign. So the label set is exactly the live campaigns (at most
/// `MAX_CAMPAIGNS`), and each appliance in a process shows only its own.
pub fn render_campaigns(engine: &Engine, out: &mut String) {
    use uncorreo_metric_names::{
        CAMPAIGN_BYTES_TOTAL, CAMPAIGN_MESSAGES_TOTAL, CAMPAIGN_REFUSED_TOTAL,
    };
    struct Row {
        id: String,
        accepted: u64,
        bytes: u64,
        refused: Vec<(u16, u64)>,
    }
    let mut rows: Vec<Row> = engine
        .live_campaigns()
        .into_iter()
        .filter_map(|c| {
            engine.campaign_report(c.id, |_, r| Row {
                id: c.id.to_string(),
                accepted: r.accepted(),
                bytes: r.bytes(),
                refused: r.refused().iter().map(|(k, v)| (*k, *v)).collect(),
            })
        })
        .collect();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    let label = |id: &str| format!("campaign=\"{id}\"");
    counter_family(
        out,
        CAMPAIGN_MESSAGES_TOTAL,
        rows.iter().map(|r| (label(&r.id), r.accepted)),
    );
    counter_family(
        out,
        CAMPAIGN_BYTES_TOTAL,
        rows.iter().map(|r| (label(&r.id), r.bytes)),
    );
    counter_family(
        out,
        CAMPAIGN_REFUSED_TOTAL,
        rows.iter().flat_map(|r| {
            r.refused
                .iter()
                .map(|(code, n)| (format!("{},code=\"{code}\"", label(&r.id)), *n))
        }),
    );
}

/// One counter family in the text format (HELP from the catalogue), or
/// nothing when it has no series.
fn counter_family(out: &mut String, name: &str, series: impl Iterator<Item = (String, u64)>) {
    use std::fmt::Write as _;
    let mut series = series.peekable();
    if series.peek().is_none() {
        return;
    }
    let help = uncorreo_metric_names::find(name).map_or("", |m| m.help);
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (labels, value) in series {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
    out.push('\n');
}
