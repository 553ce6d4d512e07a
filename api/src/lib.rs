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

pub mod accounts;
pub mod admin;
pub mod auth;
pub mod campaigns;
pub mod cluster;
pub mod counts;
pub mod faults;
pub mod gather;
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
pub mod serve;
pub mod ses;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use serde::{Deserialize, Serialize};
use uncorreo_engine::Engine;

pub use auth::{authorize_mailbox, Caller, Credential};
pub use plans::{LimitsConfig, Plan, Plans};
pub use problem::{Kind, Problem};

/// HTTP settings (the `[http]` table of the config file). The connection
/// bounds are enforced by [`serve`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Where to listen.
    pub listen: String,
    /// A request head must arrive whole within this many seconds of its
    /// first byte (of the accept, for a connection's first request); else
    /// the connection is closed (slowloris).
    pub header_read_timeout_secs: u64,
    /// A keep-alive connection with no request for this long is closed.
    /// Keep it above a fronting proxy's idle timeout (ALB: 60 s).
    pub idle_timeout_secs: u64,
    /// Longest one write to a client may stall before the connection is
    /// closed (SSE readers that stop reading, slow downloads).
    pub write_timeout_secs: u64,
    /// Open HTTP connections in all (every core); past it a new connection
    /// is answered `503` with `Retry-After` and closed.
    pub max_connections: usize,
    /// Open HTTP connections per peer address; past it `503` likewise.
    /// Behind a proxy every connection comes from the proxy: raise it.
    pub max_connections_per_ip: usize,
    /// `SO_SNDBUF` of each accepted connection; 0 keeps the kernel's
    /// default (autotuned). A small buffer makes a reader that stops
    /// reading lag sooner.
    pub send_buffer_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            header_read_timeout_secs: 10,
            idle_timeout_secs: 75,
            write_timeout_secs: 30,
            max_connections: 60_000,
            max_connections_per_ip: 1_000,
            send_buffer_bytes: 0,
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
    /// Fault plans in force, shared with smtpd (which applies them).
    pub faults: Arc<uncorreo_faults::FaultPlans>,
    /// With `[cluster] listen`: routing to the owner of a mailbox
    /// ([`cluster`]). `None`: one host.
    pub cluster: Option<Arc<uncorreo_hop::Cluster>>,
    /// Users and API keys: the engine on one host, the accounts replica
    /// in cluster mode ([`accounts`]).
    pub accounts: Arc<dyn accounts::Accounts>,
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
    /// Open HTTP connections, bounded across every core's accept loop.
    connections: Arc<serve::Connections>,
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
        let openapi_json = bytes::Bytes::from(openapi::json(&engine.config().domains));
        let state = Self {
            accounts: Arc::new(accounts::EngineAccounts(engine.clone())),
            engine,
            faults: Arc::default(),
            cluster: None,
            shared: Arc::new(Shared {
                anonymous_plan,
                limiter: ratelimit::RateLimiter::new(entries),
                quotas: quota::Quotas::new(entries),
                metrics: metrics::install(),
                realtime: realtime::Realtime::new(config.realtime.clone()),
                ses,
                mailpit: mailpit::MailpitState::default(),
                webhooks: webhooks::Webhooks::new(config.webhooks.clone()),
                connections: Arc::new(serve::Connections::new(&config.http)),
                budget,
                openapi_json,
                config,
            }),
        };
        faults::load(&state);
        Ok(state)
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
    /// Open HTTP connections and their bounds.
    pub fn connections(&self) -> &Arc<serve::Connections> {
        &self.shared.connections
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
    // Only a host of a cluster pays for the owner check.
    let api = match state.cluster {
        Some(_) => api.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cluster::route_to_owner,
        )),
        None => api,
    };
    // Mailpit's errors are plain text, so its routes join after the problem+json layer.
    mailpit::mount(api, state)
        .layer(axum::middleware::from_fn(
            problem::close_after_an_unread_body,
        ))
        .layer(axum::middleware::from_fn(metrics::track_requests))
}
