//! The Mailpit API v1 endpoints (except `send` and `/api/events`), each
//! answering in the shape of Mailpit's swagger.json.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use uncorreo_engine::{MessageId, MessageMeta};

use super::across;
use super::search::Query as SearchQuery;
use super::{instance_messages, load, resolve_id, view, Instance, Loaded, MailpitError};
use crate::AppState;

/// Longest server-side wait a search may ask for (`wait=SECONDS`).
pub const MAX_WAIT_SECS: u64 = 60;
/// Most mailboxes a waiting search subscribes to; above this it re-checks
/// once a second instead.
pub const MAX_WAIT_SUBSCRIPTIONS: usize = 64;
/// Most IDs in one request body.
pub const MAX_IDS: usize = 10_000;

/// Mailpit's `MessagesSummary`.
#[derive(Debug, Serialize, Deserialize)]
pub struct MessagesSummary {
    /// Messages in the instance.
    pub total: u64,
    /// Unread messages in the instance.
    pub unread: u64,
    /// Messages matching (the listing: all).
    pub messages_count: u64,
    /// Unread messages matching.
    pub messages_unread: u64,
    /// Offset of the first message shown.
    pub start: u64,
    /// Tags of the messages examined.
    pub tags: Vec<String>,
    /// The page, newest first.
    pub messages: Vec<view::Summary>,
}

/// `start`/`limit` as Mailpit takes them (numbers in strings).
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    /// Offset.
    pub start: Option<String>,
    /// Page size.
    pub limit: Option<String>,
    /// Search query (for `/search`).
    pub query: Option<String>,
    /// Time zone for `before:`/`after:` (accepted; dates are UTC here).
    pub tz: Option<String>,
    /// Ours: wait up to this many seconds for a first match.
    pub wait: Option<String>,
}

fn number(v: Option<&str>, default: usize, what: &str) -> Result<usize, MailpitError> {
    match v.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse::<usize>().map_err(|_| {
            MailpitError::bad_request(format!("{what} must be a non-negative number"))
        }),
    }
}

fn page_bounds(
    state: &AppState,
    q: &PageQuery,
    reach: &across::Reach,
) -> Result<(usize, usize), MailpitError> {
    let start = number(q.start.as_deref(), 0, "start")?;
    let limit = number(q.limit.as_deref(), 50, "limit")?;
    // A home's part of a gather gives `start + limit` of the asking page.
    let max = match reach {
        across::Reach::Member => state.limits().max_scan,
        _ => state.limits().max_page,
    };
    Ok((start, limit.clamp(1, max)))
}

fn ok_text() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        "ok",
    )
        .into_response()
}

/// `GET /livez`.
pub async fn probe() -> Response {
    ok_text()
}

/// `GET /readyz`.
pub async fn ready(State(state): State<AppState>) -> Response {
    if state.engine.is_poisoned() {
        MailpitError::new(StatusCode::SERVICE_UNAVAILABLE, "storage failed").into_response()
    } else {
        ok_text()
    }
}

/// The body parsed as JSON (empty = defaults), bounded by `limits.json_body_bytes`.
async fn json_body<T: serde::de::DeserializeOwned + Default>(
    state: &AppState,
    body: Body,
) -> Result<T, MailpitError> {
    let bytes = axum::body::to_bytes(body, state.limits().json_body_bytes)
        .await
        .map_err(|_| MailpitError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| MailpitError::bad_request(e.to_string()))
}

/// The counts of `GET /api/v1/info`, as one home answers them to the host
/// that gathers them (the other fields are that host's own).
#[derive(Debug, Default, Deserialize)]
struct InfoCounts {
    #[serde(rename = "Messages")]
    messages: u64,
    #[serde(rename = "Unread")]
    unread: u64,
    #[serde(rename = "Tags")]
    tags: BTreeMap<String, u64>,
}

/// `GET /api/v1/info` (an API key's counts cover every home).
pub async fn info(
    State(state): State<AppState>,
    mut inst: Instance,
    parts: axum::http::request::Parts,
) -> Result<Response, MailpitError> {
    let others: Vec<InfoCounts> = match across::reach(&state, &mut inst, &parts) {
        across::Reach::Gather => {
            across::ask_json(&state, &mut inst, &parts, "/mailpit/api/v1/info").await?
        }
        _ => Vec::new(),
    };
    let all = instance_messages(&state, &inst)?;
    let mut counts = InfoCounts {
        messages: all.len() as u64,
        ..InfoCounts::default()
    };
    for (meta, address) in all {
        let l = load(&state, meta, address).await?;
        let f = l.marks(&state);
        counts.unread += u64::from(!f.read);
        for t in f.tags {
            *counts.tags.entry(t).or_default() += 1;
        }
    }
    for other in others {
        counts.messages += other.messages;
        counts.unread += other.unread;
        for (tag, n) in other.tags {
            *counts.tags.entry(tag).or_default() += n;
        }
    }
    let InfoCounts {
        messages,
        unread,
        tags,
    } = counts;
    let uptime = state.mailpit().started.elapsed().as_secs();
    Ok(Json(serde_json::json!({
        "Version": concat!("uncorreo-", env!("CARGO_PKG_VERSION")),
        "LatestVersion": "",
        "Database": "",
        "DatabaseSize": 0,
        "Messages": messages,
        "Unread": unread,
        "Tags": tags,
        "RuntimeStats": {
            "Uptime": uptime,
            "Memory": 0,
            "MessagesDeleted": 0,
            "SMTPAccepted": 0,
            "SMTPAcceptedSize": 0,
            "SMTPRejected": 0,
            "SMTPIgnored": 0,
        },
    }))
    .into_response())
}

/// `GET /api/v1/webui`.
pub async fn webui(_inst: Instance) -> Response {
    Json(serde_json::json!({
        "Label": "uncorreo",
        "MessageRelay": {
            "Enabled": false,
            "SMTPServer": "",
            "AllowedRecipients": "",
            "BlockedRecipients": "",
            "OverrideFrom": "",
            "ReturnPath": "",
            "PreserveMessageIDs": false,
        },
        "SpamAssassin": false,
        "ChaosEnabled": false,
        "DuplicatesIgnored": false,
        "HideDeleteAllButton": false,
    }))
    .into_response()
}

/// Load every message (newest first) with its flags.
async fn load_all(
    state: &AppState,
    inst: &Instance,
) -> Result<Vec<(Loaded, view::Flags)>, MailpitError> {
    let mut out = Vec::new();
    for (meta, address) in instance_messages(state, inst)? {
        let l = load(state, meta, address).await?;
        let f = l.marks(state);
        out.push((l, f));
    }
    Ok(out)
}

fn summarize(
    all: &[(Loaded, view::Flags)],
    matching: &[usize],
    start: usize,
    limit: usize,
) -> MessagesSummary {
    let unread = all.iter().filter(|(_, f)| !f.read).count() as u64;
    let messages_unread = matching
        .iter()
        .filter(|&&i| all.get(i).is_some_and(|(_, f)| !f.read))
        .count() as u64;
    let mut tags = BTreeSet::new();
    for (_, f) in all {
        tags.extend(f.tags.iter().cloned());
    }
    let messages = matching
        .iter()
        .skip(start)
        .take(limit)
        .filter_map(|&i| all.get(i))
        .map(|(l, f)| view::summary(&l.meta, &l.address, &l.extracted, f))
        .collect();
    MessagesSummary {
        total: all.len() as u64,
        unread,
        messages_count: matching.len() as u64,
        messages_unread,
        start: start as u64,
        tags: tags.into_iter().collect(),
        messages,
    }
}

/// `GET /api/v1/messages`.
pub async fn list(
    State(state): State<AppState>,
    mut inst: Instance,
    Query(q): Query<PageQuery>,
    parts: axum::http::request::Parts,
) -> Result<Json<MessagesSummary>, MailpitError> {
    let reach = across::reach(&state, &mut inst, &parts);
    let (start, limit) = page_bounds(&state, &q, &reach)?;
    let others = match reach {
        across::Reach::Gather => {
            let path = "/mailpit/api/v1/messages";
            across::ask(&state, &mut inst, &parts, path, &q, start, limit).await?
        }
        _ => Vec::new(),
    };
    let all = load_all(&state, &inst).await?;
    let every: Vec<usize> = (0..all.len()).collect();
    let (own_start, own_limit) = across::own_page(&reach, start, limit);
    let own = summarize(&all, &every, own_start, own_limit);
    Ok(Json(match reach {
        across::Reach::Gather => across::merge(own, others, start, limit),
        _ => own,
    }))
}

fn matching(all: &[(Loaded, view::Flags)], query: &SearchQuery) -> Vec<usize> {
    all.iter()
        .enumerate()
        .filter(|(_, (l, f))| query.matches(&view::doc(&l.meta, &l.extracted, f)))
        .map(|(i, _)| i)
        .collect()
}

fn parse_query(q: &PageQuery) -> Result<SearchQuery, MailpitError> {
    let text = q
        .query
        .as_deref()
        .ok_or_else(|| MailpitError::bad_request("query is required"))?;
    SearchQuery::parse(text).map_err(|e| MailpitError::bad_request(e.to_string()))
}

/// `GET /api/v1/search?query=…[&wait=SECONDS]`.
pub async fn search(
    State(state): State<AppState>,
    mut inst: Instance,
    Query(q): Query<PageQuery>,
    parts: axum::http::request::Parts,
) -> Result<Json<MessagesSummary>, MailpitError> {
    let reach = across::reach(&state, &mut inst, &parts);
    let (start, limit) = page_bounds(&state, &q, &reach)?;
    let query = parse_query(&q)?;
    let wait = number(q.wait.as_deref(), 0, "wait")? as u64;
    if wait > MAX_WAIT_SECS {
        return Err(MailpitError::bad_request(format!(
            "wait is at most {MAX_WAIT_SECS} seconds"
        )));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    if let across::Reach::Gather = reach {
        return search_everywhere(&state, inst, &parts, &q, &query, (start, limit), deadline)
            .await
            .map(Json);
    }
    // Subscribe before the first look, so a message committed in between
    // wakes us instead of being missed until the deadline.
    let mut wake =
        (wait > 0).then(|| super::events::Wake::new(&state, &inst, MAX_WAIT_SUBSCRIPTIONS));
    loop {
        let all = load_all(&state, &inst).await?;
        let hits = matching(&all, &query);
        let now = tokio::time::Instant::now();
        if !hits.is_empty() || now >= deadline {
            return Ok(Json(summarize(&all, &hits, start, limit)));
        }
        let Some(w) = wake.as_mut() else {
            return Ok(Json(summarize(&all, &hits, start, limit)));
        };
        let shutdown = state.realtime().shutdown_token();
        tokio::select! {
            _ = w.next(deadline) => {}
            _ = shutdown.cancelled() => {
                return Err(MailpitError::new(StatusCode::SERVICE_UNAVAILABLE, "server shutting down"));
            }
        }
    }
}

/// A search gathered from every home, asked again once a second until a
/// first match or the deadline (the homes' commits are not followed here).
async fn search_everywhere(
    state: &AppState,
    inst: Instance,
    parts: &axum::http::request::Parts,
    q: &PageQuery,
    query: &SearchQuery,
    (start, limit): (usize, usize),
    deadline: tokio::time::Instant,
) -> Result<MessagesSummary, MailpitError> {
    let path = "/mailpit/api/v1/search";
    loop {
        let mut mine = inst.clone();
        let others = across::ask(state, &mut mine, parts, path, q, start, limit).await?;
        let all = load_all(state, &mine).await?;
        let hits = matching(&all, query);
        let own = summarize(&all, &hits, 0, start.saturating_add(limit));
        let merged = across::merge(own, others, start, limit);
        let now = tokio::time::Instant::now();
        if merged.messages_count > 0 || now >= deadline {
            return Ok(merged);
        }
        let shutdown = state.realtime().shutdown_token();
        tokio::select! {
            () = tokio::time::sleep_until(deadline.min(now + Duration::from_secs(1))) => {}
            () = shutdown.cancelled() => {
                return Err(MailpitError::new(StatusCode::SERVICE_UNAVAILABLE, "server shutting down"));
            }
        }
    }
}

/// `DELETE /api/v1/search?query=…`.
pub async fn delete_search(
    State(state): State<AppState>,
    inst: Instance,
    Query(q): Query<PageQuery>,
) -> Result<Response, MailpitError> {
    let query = parse_query(&q)?;
    let all = load_all(&state, &inst).await?;
    let ids: Vec<MessageId> = matching(&all, &query)
        .into_iter()
        .filter_map(|i| all.get(i).map(|(l, _)| l.meta.id))
        .collect();
    delete_ids(&state, &ids).await?;
    Ok(ok_text())
}

async fn delete_ids(state: &AppState, ids: &[MessageId]) -> Result<(), MailpitError> {
    for id in ids {
        match state.engine.delete_message(*id).await {
            Ok(()) | Err(uncorreo_engine::WriteError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        state.mailpit().marks.forget(*id);
    }
    Ok(())
}

/// Body of `PUT /api/v1/messages`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReadRequest {
    /// Messages to update (none: all, or those matching `Search`).
    #[serde(rename = "IDs", default)]
    pub ids: Vec<String>,
    /// The read status to set.
    #[serde(default)]
    pub read: bool,
    /// A search selecting the messages.
    #[serde(default)]
    pub search: String,
}

/// Body of `DELETE /api/v1/messages`.
#[derive(Debug, Default, Deserialize)]
pub struct DeleteRequest {
    /// Messages to delete (none: all).
    #[serde(rename = "IDs", default)]
    pub ids: Vec<String>,
}

/// `ids` resolved inside the instance; an ID outside it is an error, like a
/// missing one in Mailpit.
fn own_ids(
    state: &AppState,
    inst: &Instance,
    ids: &[String],
) -> Result<Vec<MessageId>, MailpitError> {
    if ids.len() > MAX_IDS {
        return Err(MailpitError::bad_request(format!("at most {MAX_IDS} IDs")));
    }
    ids.iter()
        .map(|id| resolve_id(state, inst, id).map(|(m, _)| m.id))
        .collect()
}

/// `PUT /api/v1/messages`.
pub async fn set_read(
    State(state): State<AppState>,
    inst: Instance,
    body: Body,
) -> Result<Response, MailpitError> {
    let req: ReadRequest = json_body(&state, body).await?;
    let ids = if !req.ids.is_empty() {
        own_ids(&state, &inst, &req.ids)?
    } else {
        let query = SearchQuery::parse(&req.search)
            .map_err(|e| MailpitError::bad_request(e.to_string()))?;
        let all = load_all(&state, &inst).await?;
        matching(&all, &query)
            .into_iter()
            .filter_map(|i| all.get(i).map(|(l, _)| l.meta.id))
            .collect()
    };
    for id in ids {
        state
            .mailpit()
            .marks
            .set_read(id, req.read)
            .map_err(|e| MailpitError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()))?;
    }
    Ok(ok_text())
}

/// `DELETE /api/v1/messages`.
pub async fn delete(
    State(state): State<AppState>,
    inst: Instance,
    body: Body,
) -> Result<Response, MailpitError> {
    let req: DeleteRequest = json_body(&state, body).await?;
    let ids = if req.ids.is_empty() {
        instance_messages(&state, &inst)?
            .into_iter()
            .map(|(m, _)| m.id)
            .collect()
    } else {
        own_ids(&state, &inst, &req.ids)?
    };
    delete_ids(&state, &ids).await?;
    Ok(ok_text())
}

async fn loaded(state: &AppState, inst: &Instance, id: &str) -> Result<Loaded, MailpitError> {
    let (meta, address) = resolve_id(state, inst, id)?;
    load(state, meta, address).await
}

/// `GET /api/v1/message/{ID}`: the message, and it is now read.
pub async fn message(
    State(state): State<AppState>,
    inst: Instance,
    Path(id): Path<String>,
) -> Result<Json<view::Message>, MailpitError> {
    let l = loaded(&state, &inst, &id).await?;
    // Mailpit marks a message read when it is opened.
    let _ = state.mailpit().marks.set_read(l.meta.id, true);
    let f = l.marks(&state);
    Ok(Json(view::message(&l.meta, &l.address, &l.extracted, &f)))
}

/// `GET /api/v1/message/{ID}/headers`: name → values, names sorted.
pub async fn headers(
    State(state): State<AppState>,
    inst: Instance,
    Path(id): Path<String>,
) -> Result<Json<BTreeMap<String, Vec<String>>>, MailpitError> {
    let l = loaded(&state, &inst, &id).await?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &l.extracted.headers {
        out.entry(view::canonical_header_name(name))
            .or_default()
            .push(value.clone());
    }
    Ok(Json(out))
}

fn raw_meta(state: &AppState, inst: &Instance, id: &str) -> Result<MessageMeta, MailpitError> {
    resolve_id(state, inst, id).map(|(m, _)| m)
}

fn untrusted(body: impl Into<Body>, content_type: &str) -> Response {
    let mut resp = Response::new(body.into());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "sandbox; default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'",
        ),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    resp
}

/// `GET /api/v1/message/{ID}/raw`.
pub async fn raw(
    State(state): State<AppState>,
    inst: Instance,
    Path(id): Path<String>,
) -> Result<Response, MailpitError> {
    let meta = raw_meta(&state, &inst, &id)?;
    let raw = state.engine.read_raw(meta.id)?;
    Ok(untrusted(raw, "text/plain; charset=utf-8"))
}

/// `GET /api/v1/message/{ID}/part/{PartID}`.
pub async fn part(
    State(state): State<AppState>,
    inst: Instance,
    Path((id, part_id)): Path<(String, String)>,
) -> Result<Response, MailpitError> {
    let meta = raw_meta(&state, &inst, &id)?;
    let raw = state.engine.read_raw(meta.id)?;
    let found = crate::parse::guarded(raw, state.limits().parse_max_bytes, move |raw| {
        view::part(raw, &part_id)
    })
    .await
    .map_err(|e| MailpitError::bad_request(e.to_string()))?;
    let (bytes, content_type, name) = found.ok_or_else(MailpitError::not_found)?;
    let mut resp = untrusted(bytes, &content_type);
    let disposition = crate::parse::content_disposition(Some(&name), "attachment");
    if let Ok(v) = HeaderValue::from_str(&disposition.replacen("attachment", "inline", 1)) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// `GET /view/{ID}.html` and `/view/{ID}.txt`.
pub async fn view(
    State(state): State<AppState>,
    inst: Instance,
    Path(file): Path<String>,
) -> Result<Response, MailpitError> {
    let (id, html) = if let Some(id) = file.strip_suffix(".html") {
        (id, true)
    } else if let Some(id) = file.strip_suffix(".txt") {
        (id, false)
    } else {
        return Err(MailpitError::not_found());
    };
    let l = loaded(&state, &inst, id).await?;
    Ok(if html {
        untrusted(l.extracted.html.clone(), "text/html; charset=utf-8")
    } else {
        untrusted(l.extracted.text.clone(), "text/plain; charset=utf-8")
    })
}

/// `GET /api/v1/tags`: every tag in the instance, sorted (an API key's
/// cover every home).
pub async fn tags(
    State(state): State<AppState>,
    mut inst: Instance,
    parts: axum::http::request::Parts,
) -> Result<Json<Vec<String>>, MailpitError> {
    let others: Vec<Vec<String>> = match across::reach(&state, &mut inst, &parts) {
        across::Reach::Gather => {
            across::ask_json(&state, &mut inst, &parts, "/mailpit/api/v1/tags").await?
        }
        _ => Vec::new(),
    };
    let all = load_all(&state, &inst).await?;
    let mut tags: BTreeSet<String> = others.into_iter().flatten().collect();
    for (_, f) in all {
        tags.extend(f.tags);
    }
    Ok(Json(tags.into_iter().collect()))
}

/// Body of `PUT /api/v1/tags`.
#[derive(Debug, Default, Deserialize)]
pub struct TagsRequest {
    /// Messages to tag.
    #[serde(rename = "IDs", default)]
    pub ids: Vec<String>,
    /// Their tags from now on.
    #[serde(rename = "Tags", default)]
    pub tags: Vec<String>,
}

/// `PUT /api/v1/tags`: replace the tags of the given messages.
pub async fn set_tags(
    State(state): State<AppState>,
    inst: Instance,
    body: Body,
) -> Result<Response, MailpitError> {
    let req: TagsRequest = json_body(&state, body).await?;
    let tags = super::marks::clean_tags(&req.tags).map_err(MailpitError::bad_request)?;
    for id in own_ids(&state, &inst, &req.ids)? {
        state
            .mailpit()
            .marks
            .set_tags(id, tags.clone())
            .map_err(|e| MailpitError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()))?;
    }
    Ok(ok_text())
}

macro_rules! unsupported {
    ($($name:ident => $what:literal),* $(,)?) => {$(
        #[doc = concat!("`", $what, "`: 501, not offered here.")]
        pub async fn $name(_inst: Instance) -> MailpitError {
            MailpitError::not_implemented($what)
        }
    )*};
}

unsupported! {
    unsupported_html_check => "html-check",
    unsupported_link_check => "link-check",
    unsupported_sa_check => "sa-check",
    unsupported_release => "release",
    unsupported_chaos => "chaos",
    unsupported_thumb => "thumb",
    unsupported_tag_edit => "renaming or deleting a tag",
}

/// Any other path under `/mailpit`.
pub async fn no_route(_headers: HeaderMap) -> MailpitError {
    MailpitError::new(StatusCode::NOT_FOUND, "404 page not found")
}
