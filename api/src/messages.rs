//! `/api/v1/mailboxes/{address}/messages…`: list (cursor by sequence,
//! filter by plus tag), read parsed, read raw, read the HTML body as a
//! sandboxed document, download an attachment, delete.

use std::str::FromStr;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use uncorreo_engine::{ListEntry, MailboxInfo, MessageId, MessageMeta};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{authorize_mailbox, Caller};
use crate::parse::content_disposition;
use crate::problem::{Kind, Problem, ProblemBody};
use crate::realtime::StreamCaller;
use crate::AppState;
use uncorreo_mail::date::rfc3339_millis as rfc3339;

/// Query of a listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only messages with a sequence number above this (default 0: from the start).
    pub since: Option<u64>,
    /// Page size, 1 ..= the configured `max_page` (default `default_page`).
    pub limit: Option<usize>,
    /// Only messages that arrived for `box+TAG@…` (ASCII case-insensitive).
    pub tag: Option<String>,
    /// Start `limit` sequence numbers before the newest, so one request
    /// gets the newest page (fewer messages if some were deleted); the
    /// page is still oldest first and `next_since` resumes after it. Not
    /// with `since`.
    pub latest: Option<bool>,
}

/// A message as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageSummaryView {
    /// Message id (`{mailbox:x}-{seq}`).
    pub id: String,
    /// Sequence number in the mailbox (the listing cursor and event resume point).
    pub seq: u64,
    /// `From:` as written (decoded).
    pub from: String,
    /// Envelope sender (empty for `<>`).
    pub envelope_from: String,
    /// `Subject:` decoded.
    pub subject: String,
    /// `Date:` as RFC 3339, if it parsed.
    pub date: Option<String>,
    /// When it was stored (RFC 3339).
    pub received_at: String,
    /// Raw size in bytes.
    pub size: u32,
    /// Number of attachments.
    pub attachments: u16,
    /// The first of `plus_tags` (null when there is none).
    pub plus_tag: Option<String>,
    /// Every plus tag this message was addressed to in its mailbox
    /// (`box+a@`, `box+b@` in one delivery: one stored copy, `["a", "b"]`).
    pub plus_tags: Vec<String>,
    /// Verification / sign-in links found in the body.
    pub links: Vec<String>,
    /// One-time codes found in the subject or text.
    pub codes: Vec<String>,
}

impl From<&MessageMeta> for MessageSummaryView {
    fn from(m: &MessageMeta) -> Self {
        Self {
            id: m.id.to_string(),
            seq: m.id.seq,
            from: m.summary.from.clone(),
            envelope_from: m.envelope_from.clone(),
            subject: m.summary.subject.clone(),
            date: m.summary.date.clone(),
            received_at: rfc3339(m.received_at_ms),
            size: m.size,
            attachments: m.summary.attachments,
            plus_tag: m.plus_tag.clone(),
            plus_tags: m.plus_tags.clone(),
            links: m.summary.links.clone(),
            codes: m.summary.codes.clone(),
        }
    }
}

/// One page of a listing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessagePage {
    /// Ascending by sequence.
    pub messages: Vec<MessageSummaryView>,
    /// Pass as `since` for the next page (also to poll for new mail).
    pub next_since: u64,
    /// True if messages past `next_since` may exist now.
    pub has_more: bool,
    /// Sequences in this page's range (after `since`, up to `next_since`)
    /// whose message failed its checksum on disk: quarantined, never served,
    /// listed here so a page with fewer messages is not taken for the end.
    /// Ascending; usually empty.
    pub gaps: Vec<u64>,
}

/// The parsed view of a message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageView {
    /// Message id.
    pub id: String,
    /// Sequence number.
    pub seq: u64,
    /// When it was stored (RFC 3339).
    pub received_at: String,
    /// Raw size in bytes.
    pub size: u32,
    /// The first of `plus_tags` (null when there is none).
    pub plus_tag: Option<String>,
    /// Every plus tag this message was addressed to in its mailbox.
    pub plus_tags: Vec<String>,
    /// Envelope sender.
    pub envelope_from: String,
    /// Everything derived from the raw bytes: headers, addresses, subject,
    /// date, text and HTML bodies (untrusted content: render HTML only
    /// sandboxed), attachments (download with `…/attachments/{index}`), and
    /// every link classified (`link_details`) and the codes with their
    /// written form (`code_details`).
    #[serde(flatten)]
    pub parsed: crate::parse::Parsed,
    /// Action links (verify, reset, sign in, invite), best first; never
    /// unsubscribe, tracking-pixel, logo or social links.
    pub links: Vec<String>,
    /// One-time codes as typed (`718204` for `718-204`), best first.
    pub codes: Vec<String>,
}

/// Path of routes under one message.
#[derive(Debug, Deserialize)]
pub struct MessagePath {
    /// Mailbox address.
    pub address: String,
    /// Message id.
    pub id: String,
}

/// Path of an attachment download.
#[derive(Debug, Deserialize)]
pub struct AttachmentPath {
    /// Mailbox address.
    pub address: String,
    /// Message id.
    pub id: String,
    /// Attachment index.
    pub n: String,
}

/// The message `id` in mailbox `mb`, or not-found (also for ids of other mailboxes).
fn message_in(state: &AppState, mb: &MailboxInfo, id: &str) -> Result<MessageMeta, Problem> {
    let id = MessageId::from_str(id).map_err(|_| Problem::not_found())?;
    if id.mailbox != mb.id {
        return Err(Problem::not_found());
    }
    Ok(state.engine.message_meta(id)?)
}

/// List messages after a sequence number.
#[utoipa::path(
    get,
    path = "/api/v1/mailboxes/{address}/messages",
    tag = "messages",
    params(("address" = String, Path, description = "`local@domain`"), ListQuery),
    responses(
        (status = 200, description = "A page of summaries", body = MessagePage),
        (status = 400, description = "Malformed query", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox, or not visible with these credentials", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`limit` out of range, or both `since` and `latest`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session_token" = [])),
)]
pub async fn list_messages(
    State(state): State<AppState>,
    caller: Caller,
    Path(address): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<MessagePage>, Problem> {
    let mb = authorize_mailbox(&state, &caller, &address)?;
    let Query(q) = query?;
    list(&state, &mb, q).map(Json)
}

/// A page of summaries of `mb` past `q.since` (REST and MCP); `mb` comes
/// from [`authorize_mailbox`].
pub fn list(state: &AppState, mb: &MailboxInfo, q: ListQuery) -> Result<MessagePage, Problem> {
    let limits = state.limits();
    let limit = q.limit.unwrap_or(limits.default_page);
    if limit == 0 || limit > limits.max_page {
        return Err(Problem::new(
            Kind::InvalidRequest,
            format!("limit must be between 1 and {}", limits.max_page),
        )
        .for_field("limit"));
    }
    let since = match (q.latest.unwrap_or(false), q.since) {
        (false, since) => since.unwrap_or(0),
        (true, None) => mb.last_seq.saturating_sub(limit as u64),
        (true, Some(_)) => {
            return Err(Problem::new(
                Kind::InvalidRequest,
                "give either since or latest=true, not both",
            )
            .for_field("latest"))
        }
    };
    let tag = q.tag.filter(|t| !t.is_empty());
    let mut cursor = since;
    let mut scanned = 0usize;
    let mut out = Vec::new();
    let mut gaps = Vec::new();
    // True once the engine has nothing past `cursor` right now.
    let mut exhausted = false;
    'pages: while out.len() < limit && scanned < limits.max_scan {
        // Never examine more than `max_scan` in total, to the message.
        let want = limit.min(limits.max_scan - scanned);
        let batch = state.engine.list_entries(mb.id, cursor, want)?;
        let short = batch.len() < want;
        for entry in &batch {
            cursor = entry.seq();
            scanned += 1;
            let m = match entry {
                ListEntry::Message(m) => m,
                ListEntry::Gap { seq } => {
                    gaps.push(*seq);
                    continue;
                }
            };
            let keep = match &tag {
                None => true,
                Some(t) => m.plus_tags.iter().any(|p| p.eq_ignore_ascii_case(t)),
            };
            if keep {
                out.push(MessageSummaryView::from(m));
                if out.len() == limit {
                    break 'pages;
                }
            }
        }
        if short {
            exhausted = true;
            break;
        }
    }
    let has_more = !exhausted
        && state
            .engine
            .mailbox_by_id(mb.id)
            .is_some_and(|m| m.last_seq > cursor);
    Ok(MessagePage {
        messages: out,
        next_since: cursor,
        has_more,
        gaps,
    })
}

/// Read a message, parsed.
#[utoipa::path(
    get,
    path = "/api/v1/mailboxes/{address}/messages/{id}",
    tag = "messages",
    params(
        ("address" = String, Path, description = "`local@domain`"),
        ("id" = String, Path, description = "Message id"),
    ),
    responses(
        (status = 200, description = "The parsed message", body = MessageView),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox or message, or not visible with these credentials", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`message-too-large-to-parse` or `unparseable-message`: read it raw", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session_token" = [])),
)]
pub async fn get_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<MessagePath>,
) -> Result<Json<MessageView>, Problem> {
    let mb = authorize_mailbox(&state, &caller, &p.address)?;
    read(&state, &mb, &p.id).await.map(Json)
}

/// The parsed view of message `id` of `mb` (REST and MCP).
pub async fn read(state: &AppState, mb: &MailboxInfo, id: &str) -> Result<MessageView, Problem> {
    let meta = message_in(state, mb, id)?;
    let raw = state.engine.read_raw(meta.id)?;
    let parsed = crate::parse::parse(raw, state.limits().parse_max_bytes).await?;
    // Derived from the raw bytes just now, so a message stored by an older
    // extractor reads with the current one.
    let links = parsed.action_links.clone();
    let codes = parsed.code_details.iter().map(|c| c.code.clone()).collect();
    Ok(MessageView {
        id: meta.id.to_string(),
        seq: meta.id.seq,
        received_at: rfc3339(meta.received_at_ms),
        size: meta.size,
        plus_tag: meta.plus_tag,
        plus_tags: meta.plus_tags,
        envelope_from: meta.envelope_from,
        parsed,
        links,
        codes,
    })
}

/// Delete a message.
#[utoipa::path(
    delete,
    path = "/api/v1/mailboxes/{address}/messages/{id}",
    tag = "messages",
    params(
        ("address" = String, Path, description = "`local@domain`"),
        ("id" = String, Path, description = "Message id"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox or message, or not visible with these credentials", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session_token" = [])),
)]
pub async fn delete_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<MessagePath>,
) -> Result<StatusCode, Problem> {
    let mb = authorize_mailbox(&state, &caller, &p.address)?;
    let meta = message_in(&state, &mb, &p.id)?;
    state.engine.delete_message(meta.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The exact stored bytes (`.eml`), including our `Received:` line.
#[utoipa::path(
    get,
    path = "/api/v1/mailboxes/{address}/messages/{id}/raw",
    tag = "messages",
    params(
        ("address" = String, Path, description = "`local@domain`"),
        ("id" = String, Path, description = "Message id"),
    ),
    responses(
        (status = 200, description = "The raw message", body = Vec<u8>, content_type = "message/rfc822"),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox or message, or not visible with these credentials", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session_token" = [])),
)]
pub async fn get_raw(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<MessagePath>,
) -> Result<Response, Problem> {
    let mb = authorize_mailbox(&state, &caller, &p.address)?;
    let (meta, raw) = read_raw(&state, &mb, &p.id)?;
    let disposition = content_disposition(None, &format!("{}.eml", meta.id));
    Ok(binary(raw, "message/rfc822", &disposition))
}

/// Download an attachment, decoded.
#[utoipa::path(
    get,
    path = "/api/v1/mailboxes/{address}/messages/{id}/attachments/{n}",
    tag = "messages",
    params(
        ("address" = String, Path, description = "`local@domain`"),
        ("id" = String, Path, description = "Message id"),
        ("n" = usize, Path, description = "Attachment index (as listed in the parsed view)"),
    ),
    responses(
        (status = 200, description = "The decoded attachment, with its content type and `Content-Disposition: attachment`",
            body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox, message or attachment, or not visible with these credentials", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`message-too-large-to-parse` or `unparseable-message`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session_token" = [])),
)]
pub async fn get_attachment(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<AttachmentPath>,
) -> Result<Response, Problem> {
    let mb = authorize_mailbox(&state, &caller, &p.address)?;
    let meta = message_in(&state, &mb, &p.id)?;
    let n: usize = p.n.parse().map_err(|_| Problem::not_found())?;
    let raw = state.engine.read_raw(meta.id)?;
    let a = crate::parse::attachment(raw, state.limits().parse_max_bytes, n).await?;
    let disposition = content_disposition(a.filename.as_deref(), &format!("attachment-{n}"));
    Ok(binary(a.bytes, &a.content_type, &disposition))
}

/// The exact stored bytes of message `id` of `mb` (REST and MCP). Zero
/// copy: the engine's `Bytes` is a slice of the log.
pub fn read_raw(
    state: &AppState,
    mb: &MailboxInfo,
    id: &str,
) -> Result<(MessageMeta, bytes::Bytes), Problem> {
    let meta = message_in(state, mb, id)?;
    let raw = state.engine.read_raw(meta.id)?;
    Ok((meta, raw))
}

/// A download that a browser will neither sniff nor render in our origin.
fn binary(body: bytes::Bytes, content_type: &str, disposition: &str) -> Response {
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if let Ok(v) = HeaderValue::from_str(disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    resp.into_response()
}

/// Query of the sandboxed HTML view.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HtmlQuery {
    /// Let the document load images from other hosts (default false: only
    /// `data:` images; a remote image tells the sender the mail was opened).
    pub remote_images: Option<bool>,
    /// A session token or API key, for an `<iframe src>`, which cannot set
    /// headers. Ends up in access logs: prefer `Authorization` where possible.
    pub token: Option<String>,
}

/// Policy of the HTML view with remote images blocked. `sandbox` without
/// `allow-scripts` or `allow-same-origin` holds even when the URL is opened
/// on its own, outside our frame; `allow-popups` lets links open a new tab
/// (they get `target=_blank`, so the new tab has no opener).
pub const HTML_CSP: &str = "sandbox allow-popups allow-popups-to-escape-sandbox; \
default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; \
base-uri 'none'; form-action 'none'; frame-ancestors 'self'";
/// The same with images from any host allowed.
pub const HTML_CSP_REMOTE_IMAGES: &str = "sandbox allow-popups allow-popups-to-escape-sandbox; \
default-src 'none'; style-src 'unsafe-inline'; img-src data: http: https:; font-src data:; \
base-uri 'none'; form-action 'none'; frame-ancestors 'self'";

/// Put before the message's own markup (after its doctype, if any): links
/// open in a new tab, and no request from the document carries a referrer.
const HTML_PREAMBLE: &str =
    "<meta charset=\"utf-8\"><meta name=\"referrer\" content=\"no-referrer\"><base target=\"_blank\">";

/// The HTML body as a document for a sandboxed frame.
#[utoipa::path(
    get,
    path = "/api/v1/mailboxes/{address}/messages/{id}/html",
    tag = "messages",
    description = "The message's HTML body (untrusted) as a document meant for an \
`<iframe sandbox>`, served with its own Content-Security-Policy: `sandbox` (no scripts, an opaque \
origin), no script, no connections, no remote stylesheets, no forms, and no remote images unless \
`remote_images=true`. Links open in a new tab without a referrer. Framable only by this origin. \
Credentials as for every route, or `?token=` (an iframe cannot set headers).",
    params(
        ("address" = String, Path, description = "`local@domain`"),
        ("id" = String, Path, description = "Message id"),
        HtmlQuery,
    ),
    responses(
        (status = 200, description = "The HTML body, with the policy in `Content-Security-Policy`",
            body = String, content_type = "text/html"),
        (status = 400, description = "Malformed query", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox or message, no HTML body, or not visible with these credentials", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`message-too-large-to-parse` or `unparseable-message`: read it raw", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session_token" = []), ("query_token" = [])),
)]
pub async fn get_html(
    State(state): State<AppState>,
    StreamCaller(caller): StreamCaller,
    Path(p): Path<MessagePath>,
    query: Result<Query<HtmlQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let mb = authorize_mailbox(&state, &caller, &p.address)?;
    let meta = message_in(&state, &mb, &p.id)?;
    let Query(q) = query?;
    let raw = state.engine.read_raw(meta.id)?;
    let parsed = crate::parse::parse(raw, state.limits().parse_max_bytes).await?;
    let html = parsed.html.ok_or_else(Problem::not_found)?;
    let csp = if q.remote_images.unwrap_or(false) {
        HTML_CSP_REMOTE_IMAGES
    } else {
        HTML_CSP
    };
    let mut resp = Response::new(Body::from(sandbox_document(&html)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    Ok(resp)
}

/// `html` with [`HTML_PREAMBLE`] after its doctype (so a standards-mode
/// mail stays in standards mode), or at the start.
fn sandbox_document(html: &str) -> String {
    let start = html.len() - html.trim_start().len();
    let rest = &html[start..];
    let doctype_end = rest
        .get(..9)
        .filter(|head| head.eq_ignore_ascii_case("<!doctype"))
        .and_then(|_| rest.find('>'))
        .map_or(0, |end| start + end + 1);
    let mut out = String::with_capacity(html.len() + HTML_PREAMBLE.len());
    out.push_str(&html[..doctype_end]);
    out.push_str(HTML_PREAMBLE);
    out.push_str(&html[doctype_end..]);
    out
}

/// This module's routes, each registered with its documentation.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_messages))
        .routes(routes!(get_message, delete_message))
        .routes(routes!(get_raw))
        .routes(routes!(get_html))
        .routes(routes!(get_attachment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preamble_goes_after_a_doctype_and_before_everything_else() {
        assert_eq!(
            sandbox_document("<p>hi</p>"),
            format!("{HTML_PREAMBLE}<p>hi</p>")
        );
        assert_eq!(
            sandbox_document("\n<!DOCTYPE html><html><p>x</p></html>"),
            format!("\n<!DOCTYPE html>{HTML_PREAMBLE}<html><p>x</p></html>")
        );
        // Multi-byte text right at the start does not split a character.
        assert_eq!(sandbox_document("ñandú"), format!("{HTML_PREAMBLE}ñandú"));
    }

    #[test]
    fn the_html_policies_forbid_script_and_same_origin() {
        for csp in [HTML_CSP, HTML_CSP_REMOTE_IMAGES] {
            let sandbox = csp.split(';').next().unwrap_or("");
            assert!(sandbox.starts_with("sandbox"));
            assert!(!sandbox.contains("allow-scripts"));
            assert!(!sandbox.contains("allow-same-origin"));
            assert!(csp.contains("default-src 'none'"));
            assert!(!csp.contains("script-src"));
        }
        assert!(!HTML_CSP.contains("http"));
    }
}
