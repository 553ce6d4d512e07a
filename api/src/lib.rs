//! uncorreo's HTTP surface. PLACEHOLDER: liveness only, while the REST API is written.

pub mod sns;

use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use uncorreo_engine::Engine;

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

/// What every handler can reach; cheap to clone (one per core).
#[derive(Clone)]
pub struct AppState {
    /// The storage engine.
    pub engine: Engine,
    /// Settings.
    pub config: HttpConfig,
}

/// The whole router. Built once per core from the same state.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .with_state(state)
}
