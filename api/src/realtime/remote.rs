//! Real-time streams and waits for a mailbox another host owns (SCALE.md,
//! "Real time"). The stream runs here; the mailbox's data stays with its
//! owner.
//!
//! The owner also announces the end of a mailbox (deleted, expired): its
//! waiters here then read once, get `404` and end as on the owner.
//!
//! Every waiter does the same steps, in order:
//! 1. asks the owner for the mailbox with the caller's credential (a
//!    proxied `GET`), so `401` / `404` are the owner's own answers;
//! 2. subscribes to the owner's notices for the mailbox
//!    (`uncorreo_cluster::events`: one NATS subscription per partition on
//!    this host, shared by its waiters), and only once NATS confirmed it;
//! 3. reads from the owner everything past the client's sequence (the
//!    resume read: `GET …/messages?since=`, or for a wait the owner's own
//!    `wait` with `timeout=0`), and then again whenever a notice names a
//!    sequence past what it has read.
//!
//! A read always starts at the last sequence sent, so a notice lost on the
//! way (NATS core is at most once; a full queue on the owner drops one) is
//! made up for by the next read: the gap is fetched from the owner. A
//! notice at or below what was sent is a duplicate and costs nothing. Each
//! waiter also reads every `ping_interval_secs` whatever it heard (a lost
//! LAST notice), and checks every second that the owner still holds the
//! mailbox's partition: when it does not, the stream ends with "owner
//! unavailable" and the sequence to resume from (WebSocket close `1013`,
//! SSE `event: unavailable`, a wait's `503`), never a hang.
//!
//! Bounds: the waiters here (per mailbox and in total, the `[realtime]`
//! limits, apart from the local ones), one page of events per waiter
//! (`replay_page`, at most the owner's `max_page`), and one hop request at a
//! time per waiter.

use std::collections::{BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uncorreo_hop::wire::{HttpAnswerHead, HttpEnvelope};
use uncorreo_hop::{Cluster, Events, Owner, OwnerUnavailable, Placement, Watch, WatchError};

use super::wait::{WaitQuery, WaitResponse};
use super::{EventView, FeedEnd, GapView, StreamEvent, TokenQuery};
use crate::auth::{client_ip, Caller, Credential};
use crate::cluster::{owner_answer, unavailable, Proxied};
use crate::messages::{MessagePage, MessageSummaryView};
use crate::problem::{Kind, Problem};
use crate::AppState;

/// How often a waiter checks that the owner still holds the partition
/// (the directory caches owners for as long).
const OWNER_CHECK: Duration = Duration::from_secs(1);

/// Who may watch a mailbox, and where it lives.
pub enum Access {
    /// This host serves it: the caller as checked here.
    Local(Caller),
    /// Another host does: its owner checks the credential.
    Remote(Remote),
}

/// A request about a mailbox another host owns.
pub struct Remote {
    cluster: Arc<Cluster>,
    owner: Owner,
    /// The caller's credential, as headers for the owner.
    headers: Vec<(String, String)>,
    client: IpAddr,
    address: String,
}

/// [`Access`] for the streams: credentials from the headers or `?token=`.
pub struct StreamAccess(pub Access);

/// [`Access`] for a wait: credentials from the headers only.
pub struct HeaderAccess(pub Access);

impl FromRequestParts<AppState> for StreamAccess {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        access(parts, state, true).await.map(StreamAccess)
    }
}

impl FromRequestParts<AppState> for HeaderAccess {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        access(parts, state, false).await.map(HeaderAccess)
    }
}

async fn access(parts: &mut Parts, state: &AppState, query_token: bool) -> Result<Access, Problem> {
    let ip = client_ip(state, parts);
    let mut credential = Credential::from_headers(&parts.headers)?;
    let token = if query_token && credential == Credential::None {
        Query::<TokenQuery>::try_from_uri(&parts.uri)
            .map(|Query(q)| q)
            .unwrap_or_default()
            .token
    } else {
        None
    };
    if let Some(token) = &token {
        credential = Credential::from_token(token)?;
    }
    crate::auth::catch_up_for(state, &credential).await;
    let cluster = match &state.cluster {
        Some(cluster) if parts.extensions.get::<Proxied>().is_none() => cluster,
        _ => return Caller::authenticate(state, credential, ip).map(Access::Local),
    };
    let Ok(Path(address)) = Path::<String>::from_request_parts(parts, state).await else {
        return Caller::authenticate(state, credential, ip).map(Access::Local);
    };
    match cluster.place(&address).await {
        Placement::Local => Caller::authenticate(state, credential, ip).map(Access::Local),
        Placement::Unavailable => Err(owner_unavailable()),
        Placement::Remote(owner) => {
            let mut headers: Vec<(String, String)> = ["authorization", "x-session-token"]
                .iter()
                .filter_map(|name| {
                    let value = parts.headers.get(*name)?.to_str().ok()?;
                    Some(((*name).to_owned(), value.to_owned()))
                })
                .collect();
            if let Some(token) = token {
                headers.push(("authorization".to_owned(), format!("Bearer {token}")));
            }
            Ok(Access::Remote(Remote {
                cluster: Arc::clone(cluster),
                owner,
                headers,
                client: ip,
                address,
            }))
        }
    }
}

fn owner_unavailable() -> Problem {
    Problem::new(
        Kind::Unavailable,
        "the host that keeps this mailbox is unavailable; retry shortly",
    )
    .retry_after(1)
}

fn watch_refused(error: WatchError) -> Problem {
    match error {
        WatchError::MailboxFull { limit } => Problem::new(
            Kind::RateLimited,
            format!("this mailbox has {limit} live subscribers on this host already; close one or retry later"),
        )
        .retry_after(5),
        WatchError::HostFull { .. } => Problem::new(
            Kind::Unavailable,
            "the server has as many live subscribers as it allows; retry later",
        )
        .retry_after(5),
        WatchError::Unavailable => owner_unavailable(),
    }
}

#[derive(Deserialize)]
struct MailboxAddress {
    address: String,
    #[serde(default)]
    last_seq: u64,
}

/// A remote mailbox the owner let the caller see.
pub struct Authorized {
    remote: Remote,
    /// The canonical address, as the owner names it.
    address: String,
    /// Its highest sequence when the owner answered.
    last_seq: u64,
}

impl Authorized {
    /// The mailbox's highest sequence when the owner let the caller see
    /// it: a stream from here has only what is committed afterwards.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

impl Remote {
    /// `address`, which `owner` keeps, for a caller whose credential the
    /// owner checks: `headers` (`authorization` or `x-session-token`), sent
    /// with every read, from `client`. For other streams than this
    /// module's routes (the Mailpit events socket).
    pub fn at(
        cluster: Arc<Cluster>,
        owner: Owner,
        address: String,
        headers: Vec<(String, String)>,
        client: IpAddr,
    ) -> Self {
        Self {
            cluster,
            owner,
            headers,
            client,
            address,
        }
    }

    /// Step 1: the owner's `GET` of the mailbox with the caller's
    /// credential; its answer as it gave it unless that is `200`.
    pub async fn authorize(self, state: &AppState) -> Result<Authorized, Response> {
        let path = format!("/api/v1/mailboxes/{}", self.address);
        let (head, body) = self.get(state, path).await.map_err(|_| unavailable())?;
        if head.status != 200 {
            return Err(owner_answer(head, body));
        }
        let mailbox = serde_json::from_slice::<MailboxAddress>(&body)
            .map_err(|_| owner_unavailable().into_response())?;
        Ok(Authorized {
            remote: self,
            address: mailbox.address,
            last_seq: mailbox.last_seq,
        })
    }

    async fn get(
        &self,
        state: &AppState,
        path: String,
    ) -> Result<(HttpAnswerHead, Bytes), OwnerUnavailable> {
        let envelope = HttpEnvelope {
            method: "GET".to_owned(),
            path,
            headers: self.headers.clone(),
            address: self.address.clone(),
            partition: None,
            node: String::new(),
            client: self.client,
        };
        let max_answer = state
            .engine
            .config()
            .max_message_bytes
            .saturating_add(1 << 20);
        self.cluster
            .proxy(&self.owner, envelope, &[], max_answer)
            .await
    }

    /// Whether the owner this waiter reads from still holds the partition.
    async fn owner_holds(&self) -> bool {
        matches!(
            self.cluster.place(&self.address).await,
            Placement::Remote(owner) if owner.node == self.owner.node
        )
    }
}

impl Authorized {
    /// Step 2: subscribe, confirmed by NATS.
    async fn watch(&self) -> Result<(Arc<Events>, Watch), Problem> {
        let events = self
            .remote
            .cluster
            .events()
            .cloned()
            .ok_or_else(owner_unavailable)?;
        let watch = events.watch(&self.address).await.map_err(watch_refused)?;
        Ok((events, watch))
    }
}

/// The stream of a mailbox another host owns: the same events, in the
/// same order, with the same ends as [`super::Feed`] for a local one.
pub struct RemoteFeed {
    reader: Reader,
    watch: Watch,
    check: tokio::time::Interval,
    resync: tokio::time::Interval,
}

/// What a remote stream has read from the owner and handed out.
struct Reader {
    state: AppState,
    mailbox: Authorized,
    /// Last sequence handed out.
    last: u64,
    /// Every sequence announced up to this one has been read.
    covered: u64,
    pending: VecDeque<StreamEvent>,
    /// The last read was a full page: read on before waiting.
    more: bool,
    page: usize,
}

impl RemoteFeed {
    /// Subscribes, then reads past `since` from the owner.
    pub async fn open(
        state: &AppState,
        mailbox: Authorized,
        since: u64,
    ) -> Result<RemoteFeed, Response> {
        let rt = state.realtime().config();
        let mut reader = Reader {
            state: state.clone(),
            mailbox,
            last: since,
            covered: 0,
            pending: VecDeque::new(),
            more: false,
            page: rt.replay_page.clamp(1, state.limits().max_page.max(1)),
        };
        let (events, watch) = reader
            .mailbox
            .watch()
            .await
            .map_err(IntoResponse::into_response)?;
        events.between_subscribe_and_read();
        // The resume read, once subscribed: what it misses was committed
        // after it began, so a notice for it is on its way.
        match reader.read(watch.announced()).await {
            Ok(()) => {}
            Err(FeedEnd::MailboxGone) => return Err(Problem::not_found().into_response()),
            Err(_) => return Err(owner_unavailable().into_response()),
        }
        let start = tokio::time::Instant::now();
        let mut resync = tokio::time::interval_at(start + rt.ping(), rt.ping());
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check = tokio::time::interval_at(start + OWNER_CHECK, OWNER_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(RemoteFeed {
            reader,
            watch,
            check,
            resync,
        })
    }

    /// Last sequence handed out.
    pub fn last(&self) -> u64 {
        self.reader.last
    }

    /// The next event past everything handed out so far. Cancel-safe: a
    /// read changes the feed only once the owner has answered.
    pub async fn next(&mut self) -> Result<StreamEvent, FeedEnd> {
        let r = &mut self.reader;
        loop {
            if let Some(event) = r.pending.pop_front() {
                if event.seq() <= r.last {
                    continue;
                }
                r.last = event.seq();
                return Ok(event);
            }
            // A notice past what was read: read from the last sequence
            // handed out, which also fetches any notice lost before it.
            // One at or below it is a duplicate.
            let announced = self.watch.announced();
            // An end announced: the read says whether the mailbox is gone.
            if r.more || announced > r.covered.max(r.last) || self.watch.take_gone() {
                r.read(announced).await?;
                continue;
            }
            tokio::select! {
                () = self.watch.changed() => {}
                _ = self.check.tick() => {
                    if !r.mailbox.remote.owner_holds().await {
                        return Err(FeedEnd::Unavailable { last: r.last });
                    }
                }
                // A notice lost with nothing after it: read anyway.
                _ = self.resync.tick() => r.more = true,
            }
        }
    }
}

impl Reader {
    /// One page past the last sequence handed out, from the owner; read
    /// after the notice of `announced` arrived, so it covers it.
    async fn read(&mut self, announced: u64) -> Result<(), FeedEnd> {
        let path = format!(
            "/api/v1/mailboxes/{}/messages?since={}&limit={}",
            self.mailbox.address, self.last, self.page
        );
        let unavailable = FeedEnd::Unavailable { last: self.last };
        let Ok((head, body)) = self.mailbox.remote.get(&self.state, path).await else {
            return Err(unavailable);
        };
        match head.status {
            200 => {}
            // The mailbox, or the credential that came with it, is gone.
            401 | 404 => return Err(FeedEnd::MailboxGone),
            _ => return Err(unavailable),
        }
        let Ok(page) = serde_json::from_slice::<MessagePage>(&body) else {
            return Err(unavailable);
        };
        let address = &self.mailbox.address;
        let mut events: Vec<StreamEvent> = page
            .messages
            .iter()
            .map(|m| StreamEvent::Message(EventView::from_summary(address, m)))
            .chain(page.gaps.iter().map(|&seq| {
                StreamEvent::Gap(GapView {
                    event: "gap".to_owned(),
                    mailbox: address.clone(),
                    seq,
                })
            }))
            .collect();
        events.sort_by_key(StreamEvent::seq);
        self.more = page.has_more && !events.is_empty();
        if !self.more {
            self.covered = self.covered.max(announced);
        }
        self.pending.extend(events);
        Ok(())
    }
}

impl EventView {
    fn from_summary(address: &str, m: &MessageSummaryView) -> Self {
        Self {
            event: "new_message".to_owned(),
            mailbox: address.to_owned(),
            seq: m.seq,
            message_id: m.id.clone(),
            from: m.from.clone(),
            subject: m.subject.clone(),
            received_at: m.received_at.clone(),
            size: m.size,
            attachments: m.attachments,
            plus_tag: m.plus_tag.clone(),
            plus_tags: m.plus_tags.clone(),
            links: m.links.clone(),
            codes: m.codes.clone(),
        }
    }
}

/// The query of one scan on the owner: its own `wait`, answering at once.
#[derive(Serialize)]
struct Scan<'a> {
    since: u64,
    count: usize,
    timeout: u64,
    from: Option<&'a str>,
    subject: Option<&'a str>,
    body: Option<&'a str>,
}

/// A long-poll `wait` for a mailbox another host owns: subscribe, then
/// scan on the owner (its `wait` with `timeout=0`), and scan again each
/// time a notice names a sequence past the last scan, until `count`
/// matches, the timeout, or the owner is gone (`503`).
pub async fn wait(
    state: &AppState,
    mailbox: Authorized,
    q: WaitQuery,
    subscribed: impl FnOnce(),
) -> Response {
    let cfg = state.realtime().config().clone();
    let timeout = q.timeout.unwrap_or(cfg.wait_default_timeout_secs);
    if timeout > cfg.wait_max_timeout_secs {
        return Problem::new(
            Kind::InvalidRequest,
            format!(
                "timeout must be between 0 and {}",
                cfg.wait_max_timeout_secs
            ),
        )
        .for_field("timeout")
        .into_response();
    }
    let count = q.count.unwrap_or(1);
    if count == 0 || count > cfg.wait_max_count {
        return Problem::new(
            Kind::InvalidRequest,
            format!("count must be between 1 and {}", cfg.wait_max_count),
        )
        .for_field("count")
        .into_response();
    }
    let since = q.since.unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let shutdown = state.realtime().shutdown_token();
    let (events, watch) = match mailbox.watch().await {
        Ok(watched) => watched,
        Err(problem) => return problem.into_response(),
    };
    subscribed();
    events.between_subscribe_and_read();
    let mut found: Vec<MessageSummaryView> = Vec::new();
    let mut gaps = BTreeSet::new();
    let mut cursor = since;
    let mut check =
        tokio::time::interval_at(tokio::time::Instant::now() + OWNER_CHECK, OWNER_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ping = cfg.ping();
    let mut resync = tokio::time::interval_at(tokio::time::Instant::now() + ping, ping);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_round = false;
    let mut scanned = false;
    loop {
        let announced = watch.announced();
        let scan = Scan {
            since: cursor,
            count: count - found.len(),
            timeout: 0,
            from: q.from.as_deref(),
            subject: q.subject.as_deref(),
            body: q.body.as_deref(),
        };
        let Ok(query) = serde_urlencoded::to_string(&scan) else {
            return Problem::new(Kind::BadRequest, "the query cannot be passed on").into_response();
        };
        let path = format!("/api/v1/mailboxes/{}/wait?{query}", mailbox.address);
        let (head, body) = match mailbox.remote.get(state, path).await {
            Ok(answer) => answer,
            Err(_) => return unavailable(),
        };
        if head.status == 401 && scanned {
            // The session token ended with its mailbox, as a wait on the
            // owner ends when the mailbox does.
            return Problem::not_found().into_response();
        }
        if head.status != 200 {
            return owner_answer(head, body);
        }
        scanned = true;
        let Ok(answer) = serde_json::from_slice::<WaitResponse>(&body) else {
            return unavailable();
        };
        if let Some(m) = answer.messages.last() {
            cursor = m.seq;
        }
        found.extend(answer.messages);
        gaps.extend(answer.gaps.into_iter().filter(|&g| g > since));
        let covered = announced;
        let done = found.len() >= count;
        if done || last_round {
            let outcome = if done { "matched" } else { "timed_out" };
            metrics::counter!(uncorreo_metric_names::WAITS_TOTAL, "outcome" => outcome)
                .increment(1);
            let next_since = found.last().map_or(since, |m| m.seq);
            return axum::Json(WaitResponse {
                messages: found,
                next_since,
                timed_out: !done,
                gaps: gaps.into_iter().collect(),
            })
            .into_response();
        }
        // Until there is something new to scan (or the mailbox ended: the
        // scan then answers 404, as on the owner).
        while watch.announced() <= covered && !watch.take_gone() {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    metrics::counter!(uncorreo_metric_names::WAITS_TOTAL, "outcome" => "shutdown").increment(1);
                    return Problem::new(Kind::Unavailable, "the server is shutting down")
                        .retry_after(5)
                        .into_response();
                }
                // One last look: a message committed just before the deadline counts.
                _ = tokio::time::sleep_until(deadline) => {
                    last_round = true;
                    break;
                }
                () = watch.changed() => {}
                _ = check.tick() => {
                    if !mailbox.remote.owner_holds().await {
                        return owner_unavailable().into_response();
                    }
                }
                _ = resync.tick() => break,
            }
        }
    }
}
