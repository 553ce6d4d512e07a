//! uncorreo's HTTP surface: the REST API for mailboxes, messages and keys,
//! health, readiness and Prometheus metrics, all described by one OpenAPI
//! 3.1 document served at `/api/v1/openapi.json`.
//!
//! Architecture invariant: every route is registered through
//! `utoipa_axum::routes!`, so the router and the OpenAPI document cannot
//! drift apart; a tidy test checks that every documented operation is also
//! in the authorization matrix.
//!
//! Architecture invariant: the API never writes storage except through
//! `Engine` methods, and never parses a message except through
//! [`parse`] (size-capped, behind `catch_unwind`).

pub mod admin;
pub mod auth;
pub mod inflight;
pub mod keys;
pub mod mailboxes;
pub mod mailpit;
pub mod messages;
pub mod metrics;
pub mod openapi;
pub mod operator;
pub mod ops;
pub mod parse;
pub mod plans;
pub mod problem;
pub mod quota;
pub mod ratelimit;
pub mod realtime;
pub mod send;
pub mod ses;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use serde::{Deserialize, Serialize};
use uncorreo_engine::Engine;

pub use auth::{authorize_mailbox, Caller, Credential};
pub use plans::{LimitsConfig, Plan, Plans};
pub use problem::{Kind, Problem};

/// HTTP settings (the `[http]` table of the config file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Where to listen.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
        }
    }
}

/// Everything the API reads from configuration.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// `[http]`.
    pub http: HttpConfig,
    /// `[plans]`.
    pub plans: Plans,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[realtime]`.
    pub realtime: realtime::RealtimeConfig,
    /// `[webhooks]`.
    pub webhooks: webhooks::WebhooksConfig,
}

/// What every handler can reach; cheap to clone (one per core), one shared
/// set of rate limits and quotas behind it.
#[derive(Clone)]
pub struct AppState {
    /// The storage engine.
    pub engine: Engine,
    shared: Arc<Shared>,
}

struct Shared {
    config: ApiConfig,
    anonymous_plan: plans::NamedPlan,
    limiter: ratelimit::RateLimiter,
    quotas: quota::Quotas,
    metrics: ::metrics_exporter_prometheus::PrometheusHandle,
    realtime: realtime::Realtime,
    ses: uncorreo_ses::Ingest,
    mailpit: mailpit::MailpitState,
    webhooks: webhooks::Webhooks,
    /// The budget of bytes in flight, shared with SMTP.
    budget: uncorreo_budget::Budget,
    /// `/api/v1/openapi.json`, rendered once.
    openapi_json: bytes::Bytes,
}

impl axum::extract::FromRef<AppState> for uncorreo_ses::Ingest {
    fn from_ref(state: &AppState) -> Self {
        state.shared.ses.clone()
    }
}

impl axum::extract::FromRef<AppState> for uncorreo_budget::Budget {
    fn from_ref(state: &AppState) -> Self {
        state.shared.budget.clone()
    }
}

impl AppState {
    /// Check the configuration and build the state shared by every core.
    /// `ses` is the SES webhook's ingest (built by
    /// [`uncorreo_ses::Ingest::new`]), reachable from handlers through
    /// `State<Ingest>`; `budget` bounds the request bodies being read
    /// (see [`inflight`]), shared with every other ingest path.
    pub fn new(
        engine: Engine,
        config: ApiConfig,
        ses: uncorreo_ses::Ingest,
        budget: uncorreo_budget::Budget,
    ) -> Result<Self, plans::PlanConfigError> {
        plans::validate(&config.plans, &config.limits)?;
        let anonymous_plan = plans::named(&config.plans, &config.limits.anonymous_plan).ok_or(
            plans::PlanConfigError::MissingPlan {
                key: "anonymous_plan",
                name: config.limits.anonymous_plan.clone(),
            },
        )?;
        let entries = config.limits.rate_limit_entries;
        Ok(Self {
            engine,
            shared: Arc::new(Shared {
                anonymous_plan,
                limiter: ratelimit::RateLimiter::new(entries),
                quotas: quota::Quotas::new(entries),
                metrics: metrics::install(),
                realtime: realtime::Realtime::new(config.realtime.clone()),
                ses,
                mailpit: mailpit::MailpitState::default(),
                webhooks: webhooks::Webhooks::new(config.webhooks.clone()),
                budget,
                openapi_json: bytes::Bytes::from(openapi::json()),
                config,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ApiConfig {
        &self.shared.config
    }
    /// `[plans]`.
    pub fn plans(&self) -> &Plans {
        &self.shared.config.plans
    }
    /// `[limits]`.
    pub fn limits(&self) -> &LimitsConfig {
        &self.shared.config.limits
    }
    /// The plan of callers without an API key.
    pub fn anonymous_plan(&self) -> &plans::NamedPlan {
        &self.shared.anonymous_plan
    }
    /// The shared rate limiter.
    pub fn limiter(&self) -> &ratelimit::RateLimiter {
        &self.shared.limiter
    }
    /// The shared mailbox-count bookkeeping.
    pub fn quotas(&self) -> &quota::Quotas {
        &self.shared.quotas
    }
    /// WebSocket / SSE / long-poll settings and shutdown.
    pub fn realtime(&self) -> &realtime::Realtime {
        &self.shared.realtime
    }
    /// The Mailpit-compatible API's cache and marks.
    pub fn mailpit(&self) -> &mailpit::MailpitState {
        &self.shared.mailpit
    }
    /// Outbound webhook settings and the dispatcher's wake-up.
    pub fn webhooks(&self) -> &webhooks::Webhooks {
        &self.shared.webhooks
    }
    /// The budget of bytes in flight.
    pub fn budget(&self) -> &uncorreo_budget::Budget {
        &self.shared.budget
    }
    /// The name our `Received:` lines give.
    pub fn hostname(&self) -> &str {
        self.shared.ses.hostname()
    }
    /// The OpenAPI document as JSON.
    pub fn openapi_json(&self) -> &bytes::Bytes {
        &self.shared.openapi_json
    }
    /// The Prometheus renderer.
    pub fn metrics_handle(&self) -> &::metrics_exporter_prometheus::PrometheusHandle {
        &self.shared.metrics
    }
}

/// The whole router. Built once per core from the same state.
pub fn router(state: AppState) -> Router {
    let (router, _doc) = openapi::api_router(state.limits().json_body_bytes).split_for_parts();
    let api = router
        .with_state(state.clone())
        .layer(axum::middleware::from_fn(problem::ensure_problem_json));
    // Mailpit's errors are plain text, so its routes join after the problem+json layer.
    mailpit::mount(api, state).layer(axum::middleware::from_fn(metrics::track_requests))
}
