//! The operator channel of a running server: a Unix-domain socket, mode
//! 0600, that `uncorreo admin …` talks to so that administration needs no
//! downtime. The kernel checks the socket's permissions on connect, so only
//! the service user (and root) get in, and it tells us the caller's uid
//! (`SO_PEERCRED`), which goes into the audit trail.
//!
//! Protocol: one request per connection. The client sends one JSON line
//! ([`Envelope`]), at most [`MAX_REQUEST_BYTES`]; the server answers one
//! JSON line ([`Answer`]) and closes. Requests are the same
//! [`AdminRequest`]s the CLI runs against storage when no server is up.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use uncorreo_engine::Engine;

use crate::admin::{AdminContext, AdminRequest};
use crate::plans::{LimitsConfig, Plans};

/// Largest request line accepted; a longer one is answered `invalid` and
/// the connection closed.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest answer line a client reads (a `user list` of many users fits).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// A client that has not sent its whole request by then is cut off.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Operator connections served at once; more wait in the listen backlog.
pub const MAX_CONCURRENT: usize = 8;

/// What a client sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Who the client says it is (e.g. `$SUDO_USER`); recorded next to the
    /// uid the kernel reports, never trusted instead of it.
    #[serde(default)]
    pub operator: String,
    /// The action.
    pub request: AdminRequest,
}

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Answer {
    /// Done; the result as JSON.
    Ok {
        /// The action's answer.
        result: Value,
    },
    /// Refused or failed.
    Error {
        /// A stable name: `not_found`, `invalid`, `unknown_plan`, `storage`, …
        code: String,
        /// For the operator.
        message: String,
    },
}

/// What the socket's actions need.
#[derive(Clone)]
pub struct OperatorState {
    /// The storage.
    pub engine: Engine,
    /// Users and keys (see [`crate::accounts`]).
    pub accounts: Arc<dyn crate::accounts::Accounts>,
    /// Configured plans.
    pub plans: Plans,
    /// Default plan and API limits.
    pub limits: LimitsConfig,
    /// With `[cluster]`: the cluster actions (`cluster leave`).
    pub cluster: Option<Arc<dyn crate::admin::ClusterOps>>,
}

/// Serve `listener` until `shutdown` is cancelled.
pub async fn serve(listener: UnixListener, state: OperatorState, shutdown: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "operator socket accept failed");
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            handle(stream, &state).await;
            drop(permit);
        });
    }
}

async fn handle(stream: UnixStream, state: &OperatorState) {
    let peer = match stream.peer_cred() {
        Ok(c) => format!("uid {}", c.uid()),
        Err(_) => "uid unknown".to_owned(),
    };
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST_BYTES as u64 + 1);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    let answer = match read {
        Err(_) => error(
            "invalid",
            "no complete request within the time limit".to_owned(),
        ),
        Ok(Err(e)) => error("invalid", format!("reading the request: {e}")),
        Ok(Ok(_)) if line.len() > MAX_REQUEST_BYTES => error(
            "invalid",
            format!("request longer than {MAX_REQUEST_BYTES} bytes"),
        ),
        Ok(Ok(_)) => match serde_json::from_slice::<Envelope>(&line) {
            Err(e) => error("invalid", format!("not a request: {e}")),
            Ok(env) => {
                let actor = if env.operator.is_empty() {
                    peer
                } else {
                    format!("{peer} ({})", clip(&env.operator, 64))
                };
                let ctx = AdminContext {
                    engine: &state.engine,
                    accounts: state.accounts.as_ref(),
                    plans: &state.plans,
                    limits: &state.limits,
                    actor,
                    cluster: state.cluster.as_deref(),
                };
                match crate::admin::execute(&ctx, env.request).await {
                    Ok(result) => Answer::Ok { result },
                    Err(e) => error(e.code(), e.to_string()),
                }
            }
        },
    };
    let mut out = serde_json::to_vec(&answer).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    if let Err(e) = write.write_all(&out).await {
        tracing::debug!(error = %e, "operator client went away before its answer");
    }
    let _ = write.shutdown().await;
}

fn error(code: &str, message: String) -> Answer {
    Answer::Error {
        code: code.to_owned(),
        message,
    }
}

fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// Why the CLI could not get an answer over the socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// Nothing listens there (no socket file, or a stale one): no server runs.
    #[error("no server answers on {0}")]
    NoServer(String),
    /// The socket exists but we may not connect (wrong user).
    #[error("permission denied on {0}: run as the service user or root")]
    PermissionDenied(String),
    /// Talking to the server failed.
    #[error("operator socket {path}: {source}")]
    Io {
        /// The socket.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The server's answer was not one.
    #[error("operator socket {0}: malformed answer")]
    Malformed(String),
}

/// Send one request to the server listening on `socket` and wait for its
/// answer (blocking; for the CLI). No timeout on the answer: the action
/// may be a long backup, and the server bounds the request side itself
/// ([`REQUEST_TIMEOUT`], [`MAX_REQUEST_BYTES`]); the answer is read up to
/// [`MAX_ANSWER_BYTES`].
pub fn call(socket: &Path, envelope: &Envelope) -> Result<Answer, CallError> {
    let shown = socket.display().to_string();
    let io = |source| CallError::Io {
        path: shown.clone(),
        source,
    };
    let mut stream = match std::os::unix::net::UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            return Err(match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    CallError::NoServer(shown)
                }
                std::io::ErrorKind::PermissionDenied => CallError::PermissionDenied(shown),
                _ => io(e),
            })
        }
    };
    let mut line = serde_json::to_vec(envelope).map_err(|_| CallError::Malformed(shown.clone()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = Vec::new();
    BufReader::new(stream)
        .take(MAX_ANSWER_BYTES as u64)
        .read_until(b'\n', &mut answer)
        .map_err(io)?;
    serde_json::from_slice(&answer).map_err(|_| CallError::Malformed(shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_tagged_json() {
        let env = Envelope {
            operator: "ana".into(),
            request: AdminRequest::UserSetPlan {
                user: 3,
                plan: "pro".into(),
            },
        };
        let text = serde_json::to_string(&env).unwrap();
        assert!(text.contains(r#""command":"user-set-plan""#), "{text}");
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.request, env.request);
        assert!(serde_json::from_str::<Envelope>(r#"{"request":{"command":"rm-rf"}}"#).is_err());
    }

    #[test]
    fn clip_keeps_char_boundaries() {
        assert_eq!(clip("ñññ", 3), "ñ");
        assert_eq!(clip("abc", 64), "abc");
    }
}
