//! `GET /mailpit/api/events`: Mailpit's WebSocket of new messages, one
//! `{"Type":"new","Data":<MessageSummary>}` text frame per message committed
//! to any mailbox of the instance after the socket opened (Mailpit sends no
//! backlog either). Also [`Wake`], which lets a search with `wait=` sleep
//! until something arrives.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use uncorreo_engine::{Event, SubscriptionEnd};

use super::{follow, load, view, Instance, MailpitError};
use crate::AppState;

/// Most mailboxes one events socket follows.
pub const MAX_EVENT_MAILBOXES: usize = 64;
/// Events buffered between the subscriptions and one socket.
const QUEUE: usize = 256;
/// Largest frame a client may send (it has nothing to say).
const MAX_CLIENT_MESSAGE: usize = 4096;

/// Events of several mailboxes merged into one bounded queue. Dropping it
/// ends the forwarding tasks (and with them the subscriptions).
pub struct Merged {
    rx: mpsc::Receiver<Result<Event, SubscriptionEnd>>,
    _tasks: JoinSet<()>,
    /// False when the instance had more mailboxes than were subscribed.
    pub complete: bool,
}

impl Merged {
    /// Subscribe to up to `max` mailboxes of `inst` (within the realtime limits).
    pub fn open(state: &AppState, inst: &Instance, max: usize) -> Result<Self, MailpitError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut tasks = JoinSet::new();
        for mb in inst.mailboxes.iter().take(max) {
            let mut sub = state
                .engine
                .subscribe_within(mb.id, state.realtime().config().limits())
                .map_err(|e| MailpitError::from(crate::realtime::subscribe_problem(e)))?;
            let tx = tx.clone();
            tasks.spawn(async move {
                loop {
                    let got = sub.recv().await;
                    let end = got.is_err();
                    // A full queue means the reader lags: it is told once and stops.
                    if tx.try_send(got).is_err() || end {
                        let _ = tx.try_send(Err(SubscriptionEnd::Lagged));
                        return;
                    }
                }
            });
        }
        Ok(Self {
            rx,
            _tasks: tasks,
            complete: inst.mailboxes.len() <= max,
        })
    }

    /// The next event, or why the stream ended.
    pub async fn next(&mut self) -> Result<Event, SubscriptionEnd> {
        self.rx.recv().await.unwrap_or(Err(SubscriptionEnd::Closed))
    }
}

/// Wakes a waiting search when a message may have arrived.
pub struct Wake {
    merged: Option<Merged>,
}

impl Wake {
    /// Subscribe to the instance; on failure (limits) fall back to re-checking every second.
    pub fn new(state: &AppState, inst: &Instance, max: usize) -> Self {
        let merged = Merged::open(state, inst, max).ok().filter(|m| m.complete);
        Self { merged }
    }

    /// Return at the next event, after at most a second when not
    /// subscribed, and no later than `deadline`.
    pub async fn next(&mut self, deadline: tokio::time::Instant) {
        match self.merged.as_mut() {
            Some(m) => {
                if tokio::time::timeout_at(deadline, m.next())
                    .await
                    .is_ok_and(|r| r.is_err())
                {
                    // The subscription ended (lagged, mailbox gone): poll from now on.
                    self.merged = None;
                }
            }
            None => {
                let soon = tokio::time::Instant::now() + Duration::from_secs(1);
                tokio::time::sleep_until(soon.min(deadline)).await;
            }
        }
    }
}

/// Upgrade to the events WebSocket. With `[cluster]`, it also follows the
/// instance's mailboxes other hosts keep ([`super::follow`]).
pub async fn events(
    State(state): State<AppState>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    mut parts: Parts,
) -> Result<Response, MailpitError> {
    // The credential first: a request that is no upgrade learns it is `401`.
    let scope = follow::scope(&state, &mut parts).await?;
    let upgrade = upgrade.map_err(|r| MailpitError::bad_request(r.body_text()))?;
    let here = scope.local.as_ref().map_or(0, |inst| inst.mailboxes.len());
    if here + scope.remote.len() > MAX_EVENT_MAILBOXES {
        return Err(MailpitError::bad_request(format!(
            "this credential opens more than {MAX_EVENT_MAILBOXES} mailboxes; use a mailbox session token, or /ws/inbox/{{address}} per mailbox"
        )));
    }
    // No mailbox here: nothing to end the socket from here either.
    let merged = match &scope.local {
        Some(inst) if !inst.mailboxes.is_empty() => {
            Some(Merged::open(&state, inst, MAX_EVENT_MAILBOXES)?)
        }
        _ => None,
    };
    let followed = follow::Followed::open(&state, &parts, scope.remote).await?;
    let inst = scope.local;
    Ok(upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| run(socket, merged, followed, state, inst))
        .into_response())
}

/// The next local event, never when there is no local mailbox.
async fn next_local(merged: &mut Option<Merged>) -> Result<Event, SubscriptionEnd> {
    match merged {
        Some(m) => m.next().await,
        None => std::future::pending().await,
    }
}

/// The next frame of another host's mailbox, never when there is none.
async fn next_remote(followed: &mut Option<follow::Followed>) -> Result<String, SubscriptionEnd> {
    match followed {
        Some(f) => f.next().await,
        None => std::future::pending().await,
    }
}

async fn run(
    mut socket: WebSocket,
    mut merged: Option<Merged>,
    mut followed: Option<follow::Followed>,
    state: AppState,
    inst: Option<Instance>,
) {
    let send_timeout = state.realtime().config().send_timeout();
    let shutdown = state.realtime().shutdown_token();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            },
            next = next_local(&mut merged) => {
                let Ok(event) = next else { break };
                let Some(inst) = &inst else { continue };
                let Some(frame) = frame(&state, inst, event).await else { continue };
                if !send(&mut socket, frame, send_timeout).await {
                    break;
                }
            }
            next = next_remote(&mut followed) => {
                let Ok(frame) = next else { break };
                if !send(&mut socket, frame, send_timeout).await {
                    break;
                }
            }
        }
    }
    let _ = tokio::time::timeout(send_timeout, socket.send(Message::Close(None))).await;
}

/// Sends one frame within `send_timeout`; false when the socket is done.
async fn send(socket: &mut WebSocket, frame: String, send_timeout: Duration) -> bool {
    let sent = tokio::time::timeout(send_timeout, socket.send(Message::Text(frame.into()))).await;
    if !matches!(sent, Ok(Ok(()))) {
        return false;
    }
    metrics::counter!(uncorreo_metric_names::REALTIME_EVENTS_SENT_TOTAL, "transport" => "mailpit_ws").increment(1);
    true
}

async fn frame(state: &AppState, inst: &Instance, event: Event) -> Option<String> {
    inst.mailbox(event.id.mailbox)?;
    let meta = state.engine.message_meta(event.id).ok()?;
    let l = load(state, meta, event.address.to_string()).await.ok()?;
    let f = l.marks(state);
    let data = view::summary(&l.meta, &l.address, &l.extracted, &f);
    serde_json::to_string(&serde_json::json!({"Type": "new", "Data": data})).ok()
}
