//! uncorreo's MCP server for AI agents: the tools `create_mailbox`,
//! `list_mailboxes`, `list_messages`, `read_message`, `wait_for_message`,
//! `wait_for_code` and `delete_mailbox`, served over Streamable HTTP at
//! `/mcp` (built on the official Rust SDK, rmcp), and a stdio bridge
//! ([`bridge`]) for agent hosts that launch a local command.
//!
//! Architecture invariant: the tools hold no policy of their own. They
//! authenticate with `uncorreo_api::Caller::authenticate` (the same rate
//! limits), authorize with `authorize_mailbox` (a mailbox that is not yours
//! answers like one that does not exist), create and list through
//! `uncorreo_api::mailboxes`, read through `uncorreo_api::messages`, and wait
//! through `uncorreo_api::realtime::wait::wait_for`, the long-poll's own
//! subscribe-then-scan loop. So a wait started before the mail is sent
//! cannot miss it.
//!
//! Architecture invariant: every tool result that carries mail content says
//! so: `"untrusted": true` in `structuredContent` and a fence with a random
//! boundary around the text block ([`untrusted`]). HTML leaves only
//! sanitized, unless the caller asks for `format: "raw"`.
//!
//! Limits: MCP sessions in the whole process (`max_sessions`, past it `503`
//! with a JSON-RPC error body), waits running per session
//! (`max_waits_per_session`, past it a tool error), mailboxes one anonymous
//! session remembers, the size of a `raw` read, and the HTTP body size.
//! Closing a session (DELETE, idle timeout, a stdio client exiting) cancels
//! its waits.

pub mod args;
pub mod bridge;
mod remote;
pub mod tools;
pub mod untrusted;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uncorreo_api::AppState;

pub use tools::Session;

/// MCP settings (the `[mcp]` table of the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpConfig {
    /// Serve `/mcp` at all.
    pub enabled: bool,
    /// Live MCP sessions in the whole process; an `initialize` past it gets `503`.
    pub max_sessions: usize,
    /// `wait_for_message` / `wait_for_code` calls running at once in one session.
    pub max_waits_per_session: usize,
    /// Anonymous mailboxes one session creates and remembers the token of.
    pub max_mailboxes_per_session: usize,
    /// A session with no request for this long is closed (its waits end).
    pub session_idle_secs: u64,
    /// Seconds between progress notifications of a wait (when the client
    /// sent a progress token).
    pub progress_interval_secs: u64,
    /// Largest message `read_message` returns with `format: "raw"`.
    pub max_raw_bytes: usize,
    /// `Host` header values accepted on `/mcp` (DNS-rebinding guard); a bare
    /// name matches any port. Add the public name when serving behind a proxy.
    pub allowed_hosts: Vec<String>,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_sessions: 1000,
            max_waits_per_session: 100,
            max_mailboxes_per_session: 100,
            session_idle_secs: 600,
            progress_interval_secs: 5,
            max_raw_bytes: 1024 * 1024,
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        }
    }
}

/// The `/mcp` endpoint, built once and shared by every core: one session
/// table, so a client's POST, GET and DELETE may land on any core.
#[derive(Clone)]
pub struct Mcp {
    service: StreamableHttpService<Session, LocalSessionManager>,
    sessions: Arc<LocalSessionManager>,
    /// Serializes `initialize` requests so the session count is exact.
    init_gate: Arc<tokio::sync::Mutex<()>>,
    max_sessions: usize,
}

impl Mcp {
    /// Build the endpoint. Cancelling `shutdown` ends every session and stream.
    pub fn new(state: AppState, config: McpConfig, shutdown: CancellationToken) -> Self {
        let mut manager = LocalSessionManager::default();
        manager.session_config.keep_alive =
            Some(Duration::from_secs(config.session_idle_secs.max(1)));
        let sessions = Arc::new(manager);
        let server_config = StreamableHttpServerConfig::default()
            .with_allowed_hosts(config.allowed_hosts.clone())
            .with_cancellation_token(shutdown)
            .with_max_request_body_bytes(state.limits().json_body_bytes);
        let max_sessions = config.max_sessions.max(1);
        let config = Arc::new(config);
        // With [cluster], a tool about a mailbox another host owns runs its
        // REST equivalent through this router, so through the same cluster
        // routing as REST (SCALE.md, "Reads").
        let api = state
            .cluster
            .is_some()
            .then(|| uncorreo_api::router(state.clone()));
        let service = StreamableHttpService::new(
            move || Ok(Session::new(state.clone(), Arc::clone(&config)).with_api(api.clone())),
            Arc::clone(&sessions),
            server_config,
        );
        Self {
            service,
            sessions,
            init_gate: Arc::new(tokio::sync::Mutex::new(())),
            max_sessions,
        }
    }

    /// `POST/GET/DELETE /mcp`, to merge into the HTTP router.
    pub fn router(&self) -> Router {
        Router::new()
            .route_service("/mcp", self.service.clone())
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                limit_sessions,
            ))
    }

    /// Live sessions now.
    pub async fn session_count(&self) -> usize {
        self.sessions.sessions.read().await.len()
    }
}

/// Refuse a new session past `max_sessions` with a clear answer instead of
/// the SDK's generic 500. A POST without `Mcp-Session-Id` is the only thing
/// that creates a session.
async fn limit_sessions(State(mcp): State<Mcp>, req: Request, next: Next) -> Response {
    let creates = req.method() == Method::POST && !req.headers().contains_key("mcp-session-id");
    if !creates {
        return next.run(req).await;
    }
    let _gate = mcp.init_gate.lock().await;
    if mcp.session_count().await >= mcp.max_sessions {
        metrics::counter!(uncorreo_metric_names::MCP_SESSIONS_REFUSED_TOTAL).increment(1);
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {
                "code": -32000,
                "message": format!(
                    "the server has {} MCP sessions open, as many as it allows; close one or retry later",
                    mcp.max_sessions
                ),
            }
        });
        let mut resp = (StatusCode::SERVICE_UNAVAILABLE, body.to_string()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return resp;
    }
    // Held until the response head exists, by when the SDK has stored the session.
    next.run(req).await
}
