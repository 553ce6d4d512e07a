//! With `[cluster]`: the mailboxes of a Mailpit events socket
//! (`/mailpit/api/events`) that other hosts keep (SCALE.md, "Real time").
//! Each is followed with the remote waiter of [`crate::realtime::remote`]
//! (the owner's notices on NATS, reads from the owner by sequence over the
//! hop, the periodic read, the owner check); each message it hands out
//! becomes a frame whose Mailpit summary the owner makes
//! ([`member_summary`], over the hop only), so the read flag and tags are
//! the owner's, where the marks live.
//!
//! Which mailboxes: an API key's on every home (the same gather as
//! `GET /api/v1/mailboxes`, with the key as a bearer credential), a
//! session token's from its owner when its prefix names another host's
//! partition. Each is followed from its highest sequence when the socket
//! opened: Mailpit sends no backlog.
//!
//! When the owner of a followed mailbox goes away (stopped, its lease
//! lapsed), the socket stays open and keeps the other mailboxes' frames
//! coming; this mailbox is asked for again every second, and once a host
//! holds it again, everything committed past the last frame sent is read
//! from there and sent, each once and in order. Why not close: a Mailpit
//! client has no resume protocol, so a close loses what arrives until it
//! reconnects, and what the other mailboxes get meanwhile; a test waiting
//! for a message only needs it to arrive late rather than never. A mailbox
//! that ends (deleted, expired, its token no longer valid) ends the socket,
//! as a local one does; so does a mailbox whose partition moved to this
//! host (rare: a handover), which the client then opens again.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use uncorreo_engine::SubscriptionEnd;
use uncorreo_hop::wire::HttpEnvelope;
use uncorreo_hop::{Cluster, Placement};

use super::{load, resolve_id, view, Instance, MailpitError};
use crate::cluster::Proxied;
use crate::mailboxes::MailboxList;
use crate::realtime::remote::{Remote, RemoteFeed};
use crate::realtime::{FeedEnd, StreamEvent};
use crate::AppState;

/// How often a mailbox whose owner went away is asked for again.
const RETRY: Duration = Duration::from_secs(1);
/// Frames waiting between the followers and the socket (each follower
/// waits for room, so this only smooths bursts).
const QUEUE: usize = 64;

/// The path of the owner's summary of one message, under `/mailpit`.
pub const SUMMARY_PATH: &str = "/internal/summary";

/// What a socket follows: the instance here (none when a session token's
/// mailbox is kept by another host), and other hosts' mailboxes with the
/// sequence to follow each from.
pub struct Scope {
    /// The mailboxes this host keeps.
    pub local: Option<Instance>,
    /// `(address, since)` of each mailbox another host keeps.
    pub remote: Vec<(String, u64)>,
}

/// The socket's mailboxes, here and on other hosts.
pub async fn scope(state: &AppState, parts: &mut Parts) -> Result<Scope, MailpitError> {
    let cluster = match &state.cluster {
        Some(cluster) if parts.extensions.get::<Proxied>().is_none() => Arc::clone(cluster),
        _ => return local_only(state, parts).await,
    };
    let password = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(super::basic_password)
        .transpose()?
        .unwrap_or_default();
    if let Some(p) = crate::auth::session_token_partition(&password) {
        let Some(partition) = cluster.partition_numbered(p) else {
            return local_only(state, parts).await;
        };
        let owner = match cluster.place_partition(partition).await {
            Placement::Local => return local_only(state, parts).await,
            Placement::Unavailable => return Err(unavailable()),
            Placement::Remote(owner) => owner,
        };
        // The owner lists the token's one mailbox (`401` for a token it
        // does not know).
        let envelope = HttpEnvelope {
            method: "GET".to_owned(),
            path: "/api/v1/mailboxes".to_owned(),
            headers: bearer(&password),
            address: String::new(),
            partition: Some(partition.0),
            node: String::new(),
            client: crate::auth::client_ip(state, parts),
        };
        let (head, body) = cluster
            .proxy(&owner, envelope, &[], 1 << 20)
            .await
            .map_err(|_| unavailable())?;
        if head.status != 200 {
            return Err(refused(head.status));
        }
        let list: MailboxList = serde_json::from_slice(&body).map_err(|_| unavailable())?;
        if list.mailboxes.is_empty() {
            // As here: a session token that opens no mailbox is not a credential.
            return Err(refused(401));
        }
        return Ok(Scope {
            local: None,
            remote: list
                .mailboxes
                .into_iter()
                .map(|m| (m.address, m.last_seq))
                .collect(),
        });
    }
    if !password.starts_with(crate::auth::KEY_PREFIX) {
        return local_only(state, parts).await;
    }
    let mut inst = instance(state, parts).await?;
    // The key's mailboxes on every home, asked for as REST asks for them.
    let mut asked = parts.clone();
    for (name, value) in bearer(&password) {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            header::HeaderValue::from_str(&value),
        ) {
            asked.headers.insert(name, value);
        }
    }
    let gathered = crate::gather::gather(state, &cluster, &asked, "/api/v1/mailboxes")
        .await
        .map_err(MailpitError::from)?;
    // A copy a handover left here is followed where it lives now.
    crate::gather::keep_covered(&gathered.local, &cluster, &mut inst.mailboxes);
    let mut remote = Vec::new();
    for body in gathered.remote {
        let part: MailboxList = serde_json::from_slice(&body).map_err(|_| unavailable())?;
        remote.extend(part.mailboxes.into_iter().map(|m| (m.address, m.last_seq)));
    }
    Ok(Scope {
        local: Some(inst),
        remote,
    })
}

async fn local_only(state: &AppState, parts: &mut Parts) -> Result<Scope, MailpitError> {
    let inst = instance(state, parts).await?;
    Ok(Scope {
        local: Some(inst),
        remote: Vec::new(),
    })
}

async fn instance(state: &AppState, parts: &mut Parts) -> Result<Instance, MailpitError> {
    <Instance as axum::extract::FromRequestParts<AppState>>::from_request_parts(parts, state).await
}

fn bearer(password: &str) -> Vec<(String, String)> {
    vec![("authorization".to_owned(), format!("Bearer {password}"))]
}

/// Frames of the mailboxes other hosts keep, merged into one queue.
/// Dropping it ends the followers.
pub struct Followed {
    rx: mpsc::Receiver<Result<String, SubscriptionEnd>>,
    _tasks: JoinSet<()>,
}

/// What every follower of one socket shares.
struct Ctx {
    state: AppState,
    cluster: Arc<Cluster>,
    /// The socket's own `Authorization` (Basic), for the owner's summaries.
    basic: String,
    /// The same credential as a bearer, for the owner's REST reads.
    bearer: Vec<(String, String)>,
    client: IpAddr,
}

impl Followed {
    /// Opens a follower for each of `remote` (subscribed and read up to
    /// now before this returns, so the socket misses nothing committed
    /// after the upgrade); the owner's refusal of any is the answer.
    pub async fn open(
        state: &AppState,
        parts: &Parts,
        remote: Vec<(String, u64)>,
    ) -> Result<Option<Self>, MailpitError> {
        let Some(cluster) = state.cluster.clone() else {
            return Ok(None);
        };
        if remote.is_empty() {
            return Ok(None);
        }
        let basic = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let password = super::basic_password(&basic)?;
        let ctx = Arc::new(Ctx {
            state: state.clone(),
            cluster,
            bearer: bearer(&password),
            basic,
            client: crate::auth::client_ip(state, parts),
        });
        let opened = futures_util::future::join_all(
            remote
                .iter()
                .map(|(address, since)| open_feed(&ctx, address, *since)),
        )
        .await;
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut tasks = JoinSet::new();
        for ((address, _), feed) in remote.into_iter().zip(opened) {
            let feed = match feed {
                Opened::Feed(feed) => *feed,
                Opened::Gone => return Err(MailpitError::not_found()),
                Opened::Refused(status) => return Err(refused(status)),
                Opened::Local | Opened::Unavailable => return Err(unavailable()),
            };
            tasks.spawn(follow(Arc::clone(&ctx), address, feed, tx.clone()));
        }
        Ok(Some(Self { rx, _tasks: tasks }))
    }

    /// The next frame, or why the socket ends.
    pub async fn next(&mut self) -> Result<String, SubscriptionEnd> {
        self.rx.recv().await.unwrap_or(Err(SubscriptionEnd::Closed))
    }
}

enum Opened {
    Feed(Box<RemoteFeed>),
    /// The mailbox or the credential ended (`401`/`404` from its owner).
    Gone,
    /// The owner refused for another reason (`429`: too many waiters).
    Refused(u16),
    /// Its partition is now this host's.
    Local,
    Unavailable,
}

/// Subscribes to `address`'s owner and reads past `since` from it.
async fn open_feed(ctx: &Ctx, address: &str, since: u64) -> Opened {
    let owner = match ctx.cluster.place(address).await {
        Placement::Local => return Opened::Local,
        Placement::Unavailable => return Opened::Unavailable,
        Placement::Remote(owner) => owner,
    };
    let remote = Remote::at(
        Arc::clone(&ctx.cluster),
        owner,
        address.to_owned(),
        ctx.bearer.clone(),
        ctx.client,
    );
    let gone = |status: StatusCode| match status.as_u16() {
        401 | 404 => Opened::Gone,
        429 => Opened::Refused(429),
        _ => Opened::Unavailable,
    };
    let authorized = match remote.authorize(&ctx.state).await {
        Ok(authorized) => authorized,
        Err(answer) => return gone(answer.status()),
    };
    match RemoteFeed::open(&ctx.state, authorized, since).await {
        Ok(feed) => Opened::Feed(Box::new(feed)),
        Err(answer) => gone(answer.status()),
    }
}

/// Sends a frame for each message of `address` past `feed`'s start, and
/// outlives its owner's absences (the module doc).
async fn follow(
    ctx: Arc<Ctx>,
    address: String,
    mut feed: RemoteFeed,
    tx: mpsc::Sender<Result<String, SubscriptionEnd>>,
) {
    // Every message up to here has had its frame sent (or had none).
    let mut sent = feed.last();
    loop {
        let end = loop {
            match feed.next().await {
                Ok(StreamEvent::Gap(gap)) => sent = gap.seq,
                Ok(StreamEvent::Message(m)) => match summary(&ctx, &address, &m.message_id).await {
                    Summary::Frame(frame) => {
                        if tx.send(Ok(frame)).await.is_err() {
                            return;
                        }
                        sent = m.seq;
                    }
                    // Deleted since it was read: nothing to announce.
                    Summary::Missing => sent = m.seq,
                    // Read again from the owner that answers next.
                    Summary::Unavailable => break FeedEnd::Unavailable { last: sent },
                },
                Err(end) => break end,
            }
        };
        if !matches!(end, FeedEnd::Unavailable { .. }) {
            let _ = tx.send(Err(SubscriptionEnd::MailboxGone)).await;
            return;
        }
        // Its waiter slot and subscription are freed while the owner is away.
        drop(feed);
        feed = loop {
            tokio::time::sleep(RETRY).await;
            match open_feed(&ctx, &address, sent).await {
                Opened::Feed(feed) => break *feed,
                Opened::Unavailable | Opened::Refused(_) => {}
                Opened::Gone | Opened::Local => {
                    let _ = tx.send(Err(SubscriptionEnd::MailboxGone)).await;
                    return;
                }
            }
        };
    }
}

enum Summary {
    Frame(String),
    Missing,
    Unavailable,
}

/// The frame of message `id` of `address`, its summary made by the owner.
async fn summary(ctx: &Ctx, address: &str, id: &str) -> Summary {
    let Placement::Remote(owner) = ctx.cluster.place(address).await else {
        return Summary::Unavailable;
    };
    let envelope = HttpEnvelope {
        method: "GET".to_owned(),
        path: format!("/mailpit{SUMMARY_PATH}/{id}"),
        headers: vec![("authorization".to_owned(), ctx.basic.clone())],
        address: address.to_owned(),
        partition: None,
        node: String::new(),
        client: ctx.client,
    };
    let Ok((head, body)) = ctx.cluster.proxy(&owner, envelope, &[], 1 << 20).await else {
        return Summary::Unavailable;
    };
    match head.status {
        200 => {}
        401 | 404 => return Summary::Missing,
        _ => return Summary::Unavailable,
    }
    let Ok(data) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Summary::Unavailable;
    };
    match serde_json::to_string(&serde_json::json!({"Type": "new", "Data": data})) {
        Ok(frame) => Summary::Frame(frame),
        Err(_) => Summary::Unavailable,
    }
}

/// `GET /mailpit/internal/summary/{id}`: the Mailpit summary of a message
/// of the caller's instance, as an events frame carries it. Only over the
/// hop (another host's events socket asks); `404` to anyone else.
pub async fn member_summary(
    State(state): State<AppState>,
    Path(id): Path<String>,
    mut parts: Parts,
) -> Result<Response, MailpitError> {
    if parts.extensions.get::<Proxied>().is_none() {
        return Err(MailpitError::not_found());
    }
    let inst = instance(&state, &mut parts).await?;
    let (meta, address) = resolve_id(&state, &inst, &id)?;
    let l = load(&state, meta, address).await?;
    let f = l.marks(&state);
    Ok(axum::Json(view::summary(&l.meta, &l.address, &l.extracted, &f)).into_response())
}

/// The owner's refusal, in Mailpit's shape.
fn refused(status: u16) -> MailpitError {
    match status {
        401 => MailpitError::new(StatusCode::UNAUTHORIZED, "unknown credential"),
        404 => MailpitError::not_found(),
        429 => {
            let mut error = MailpitError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "a mailbox has as many live subscribers as it allows; close one or retry later",
            );
            error.retry_after = Some(5);
            error
        }
        _ => unavailable(),
    }
}

fn unavailable() -> MailpitError {
    let mut error = MailpitError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the host that keeps this mailbox is unavailable; retry shortly",
    );
    error.retry_after = Some(1);
    error
}
