//! uncorreo's ESMTP server (RFC 5321): one acceptor per core, sessions stay on
//! the core that accepted them, every message goes through
//! [`uncorreo_engine::Engine::deliver`], and `250` is sent only once it is durable.
//!
//! PLACEHOLDER: the session is being written; this version only greets and quits.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use uncorreo_engine::Engine;

/// SMTP settings (the `[smtp]` table of the config file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// Where to listen.
    pub listen: String,
    /// Name we give in the greeting and `Received:` lines.
    pub hostname: String,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:2525".to_owned(),
            hostname: "uncorreo.test".to_owned(),
        }
    }
}

/// State shared by the acceptors on every core.
pub struct Shared {
    /// The storage engine.
    pub engine: Engine,
    /// Settings.
    pub config: SmtpConfig,
}

impl Shared {
    /// Build from an open engine and settings.
    pub fn new(engine: Engine, config: SmtpConfig) -> Result<Arc<Self>, std::io::Error> {
        Ok(Arc::new(Self { engine, config }))
    }
}

/// Accept connections on `listener` (this core's SO_REUSEPORT socket) until
/// `shutdown` is cancelled. Runs on a current-thread runtime.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => {
                if let Ok((mut stream, _)) = accepted {
                    let greeting = format!("421 4.3.2 {} not ready\r\n", shared.config.hostname);
                    tokio::spawn(async move {
                        let _ = stream.write_all(greeting.as_bytes()).await;
                    });
                }
            }
        }
    }
}
