//! `POST /mailpit/api/v1/send`: Mailpit's JSON send. The JSON is turned
//! into an RFC 5322 message (pure: [`build`]) and stored through
//! [`crate::send::deliver_many`] — the same path, limits and durability as
//! the native HTTP send — for each recipient that is a mailbox of the
//! instance. Recipients outside the instance get nothing: a credential can
//! only fill its own mailboxes. Errors are `{"Error": "…"}` with 400, as in
//! Mailpit.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use uncorreo_engine::Recipient;

use super::Instance;
use crate::inflight::{self, BodyError, FrontEnd};
use crate::problem::Problem;
use crate::AppState;

/// Most recipients (To + Cc + Bcc).
pub const MAX_RECIPIENTS: usize = 100;
/// Most attachments.
pub const MAX_ATTACHMENTS: usize = 32;
/// Most extra headers.
pub const MAX_HEADERS: usize = 64;

/// `{"Email": …, "Name": …}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Person {
    /// Address.
    pub email: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
}

/// One attachment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SendAttachment {
    /// Base64 content.
    pub content: String,
    /// File name.
    pub filename: String,
    /// Content type (default `application/octet-stream`).
    #[serde(default)]
    pub content_type: String,
    /// Content-ID: when set, the part is inline.
    #[serde(rename = "ContentID", default)]
    pub content_id: String,
}

/// Mailpit's send request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SendRequest {
    /// Sender (required).
    pub from: Option<Person>,
    /// To.
    #[serde(default)]
    pub to: Vec<Person>,
    /// Cc.
    #[serde(default)]
    pub cc: Vec<Person>,
    /// Bcc (addresses only; never written into the message).
    #[serde(default)]
    pub bcc: Vec<String>,
    /// Reply-To.
    #[serde(default)]
    pub reply_to: Vec<Person>,
    /// Subject.
    #[serde(default)]
    pub subject: String,
    /// Text body.
    #[serde(default)]
    pub text: String,
    /// HTML body.
    #[serde(rename = "HTML", default)]
    pub html: String,
    /// Attachments.
    #[serde(default)]
    pub attachments: Vec<SendAttachment>,
    /// Extra headers.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Tags (written as `X-Tags`).
    #[serde(default)]
    pub tags: Vec<String>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "Error": message.into() }))).into_response()
}

/// Send a message.
pub async fn send(
    State(state): State<AppState>,
    inst: Instance,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match send_inner(&state, &inst, &headers, body).await {
        Ok(id) => Json(serde_json::json!({ "ID": id })).into_response(),
        Err(e) => e,
    }
}

/// A problem in this route's error shape, keeping its `Retry-After`.
fn problem(p: Problem) -> Response {
    let e = super::MailpitError::from(p);
    let mut resp = error(e.status, e.message);
    if let Some(secs) = e.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if e.close_connection {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The largest `POST /api/v1/send` body read, for a message limit of
/// `max_message_bytes`: JSON escapes and base64 make the request larger
/// than the message it becomes (by at most 4/3, plus room for the fields).
pub fn max_request_bytes(max_message_bytes: usize) -> usize {
    (max_message_bytes.saturating_mul(4) / 3).saturating_add(64 * 1024)
}

async fn send_inner(
    state: &AppState,
    inst: &Instance,
    headers: &HeaderMap,
    body: Body,
) -> Result<String, Response> {
    let max = max_request_bytes(state.engine.config().max_message_bytes);
    let (bytes, mut permit) = inflight::read(state.budget(), headers, body, max)
        .await
        .map_err(|e| match e {
            BodyError::OverBudget(_) => problem(inflight::refused_unread(FrontEnd::MailpitSend)),
            BodyError::TooLarge | BodyError::Unreadable => {
                error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
            }
        })?;
    let req: SendRequest = serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    // The parsed request now holds what the JSON held; the permit goes on
    // paying for it.
    drop(bytes);
    let now = state.engine.now_ms();
    let message_id = format!("{}@{}", random_token(), state.hostname());
    let raw = build(
        &req,
        &uncorreo_mail::date::rfc5322_date(now / 1000),
        &message_id,
    )
    .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    inflight::hold_more(&mut permit, raw.len(), FrontEnd::MailpitSend).map_err(problem)?;
    let mut rcpts: Vec<Recipient> = Vec::new();
    let all = req
        .to
        .iter()
        .chain(&req.cc)
        .map(|p| p.email.as_str())
        .chain(req.bcc.iter().map(String::as_str));
    for address in all {
        let Ok(r) = Recipient::parse(address.trim()) else {
            continue;
        };
        let ours = inst.mailboxes.iter().any(|m| m.address == r.address);
        if ours && !rcpts.iter().any(|o| o.address == r.address) {
            rcpts.push(r);
        }
    }
    if rcpts.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "no recipient is a mailbox of this instance (only the credential's own mailboxes receive)",
        ));
    }
    let envelope_from = req
        .from
        .as_ref()
        .map(|p| p.email.trim().to_owned())
        .unwrap_or_default();
    let paid = (&mut permit, FrontEnd::MailpitSend);
    let stored =
        crate::send::deliver_many(state, inst.caller.ip(), rcpts, envelope_from, &raw, paid)
            .await
            .map_err(problem)?;
    stored
        .first()
        .map(ToString::to_string)
        .ok_or_else(|| error(StatusCode::BAD_REQUEST, "nothing was stored"))
}

fn random_token() -> String {
    use rand::RngCore;
    let mut raw = [0u8; 12];
    rand::rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn clean(s: &str, what: &str) -> Result<String, String> {
    if s.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
        return Err(format!("{what} must not contain line breaks"));
    }
    Ok(s.trim().to_owned())
}

fn is_address(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && s.len() <= 254
        && s.chars()
            .all(|c| c.is_ascii_graphic() && !"<>(),;:\"[]\\".contains(c))
}

/// RFC 2047 `encoded-word` when `s` is not plain printable ASCII.
fn encode_word(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        s.to_owned()
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }
}

fn person(p: &Person, what: &str) -> Result<String, String> {
    let email = clean(&p.email, what)?;
    if !is_address(&email) {
        return Err(format!("{what}: invalid email address {email:?}"));
    }
    let name = clean(&p.name, what)?;
    Ok(if name.is_empty() {
        format!("<{email}>")
    } else if name.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ') {
        format!("{name} <{email}>")
    } else if name.is_ascii() {
        let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{quoted}\" <{email}>")
    } else {
        format!("{} <{email}>", encode_word(&name))
    })
}

fn people(list: &[Person], what: &str) -> Result<Option<String>, String> {
    if list.is_empty() {
        return Ok(None);
    }
    let v: Result<Vec<_>, _> = list.iter().map(|p| person(p, what)).collect();
    Ok(Some(v?.join(", ")))
}

fn base64_lines(data: &[u8]) -> String {
    let enc = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::with_capacity(enc.len() + enc.len() / 76 * 2 + 2);
    for chunk in enc.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

/// The RFC 5322 message for `req` (CRLF line ends, every body part base64,
/// so no content can break the structure), or what is wrong with `req`.
pub fn build(req: &SendRequest, date: &str, message_id: &str) -> Result<Vec<u8>, String> {
    let from = req.from.as_ref().ok_or("From is required")?;
    if req.to.len() + req.cc.len() + req.bcc.len() > MAX_RECIPIENTS {
        return Err(format!("at most {MAX_RECIPIENTS} recipients"));
    }
    if req.attachments.len() > MAX_ATTACHMENTS {
        return Err(format!("at most {MAX_ATTACHMENTS} attachments"));
    }
    if req.headers.len() > MAX_HEADERS {
        return Err(format!("at most {MAX_HEADERS} headers"));
    }
    for b in &req.bcc {
        if !is_address(b.trim()) {
            return Err(format!("Bcc: invalid email address {b:?}"));
        }
    }
    let mut h = String::new();
    h.push_str(&format!("From: {}\r\n", person(from, "From")?));
    if let Some(to) = people(&req.to, "To")? {
        h.push_str(&format!("To: {to}\r\n"));
    }
    if let Some(cc) = people(&req.cc, "Cc")? {
        h.push_str(&format!("Cc: {cc}\r\n"));
    }
    if let Some(rt) = people(&req.reply_to, "ReplyTo")? {
        h.push_str(&format!("Reply-To: {rt}\r\n"));
    }
    h.push_str(&format!(
        "Subject: {}\r\n",
        encode_word(&clean(&req.subject, "Subject")?)
    ));
    h.push_str(&format!("Date: {date}\r\nMessage-ID: <{message_id}>\r\n"));
    let tags = super::marks::clean_tags(&req.tags)?;
    if !tags.is_empty() {
        h.push_str(&format!("X-Tags: {}\r\n", tags.join(", ")));
    }
    for (name, value) in &req.headers {
        let ok_name = !name.is_empty()
            && name.len() <= 76
            && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        let reserved = [
            "from",
            "to",
            "cc",
            "bcc",
            "subject",
            "date",
            "message-id",
            "mime-version",
            "content-type",
            "content-transfer-encoding",
        ];
        if !ok_name || reserved.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(format!("header {name:?} cannot be set"));
        }
        h.push_str(&format!(
            "{name}: {}\r\n",
            encode_word(&clean(value, name)?)
        ));
    }
    h.push_str("MIME-Version: 1.0\r\n");

    let text_part = |ct: &str, body: &str| {
        format!(
            "Content-Type: {ct}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
            base64_lines(body.as_bytes())
        )
    };
    let mut bodies = Vec::new();
    if !req.text.is_empty() || req.html.is_empty() {
        bodies.push(text_part("text/plain", &req.text));
    }
    if !req.html.is_empty() {
        bodies.push(text_part("text/html", &req.html));
    }
    let mut body_section = if bodies.len() == 1 {
        bodies.remove(0)
    } else {
        multipart("alternative", "uncorreo-alt", &bodies)
    };
    if !req.attachments.is_empty() {
        let mut parts = vec![body_section];
        for a in &req.attachments {
            let data = base64::engine::general_purpose::STANDARD
                .decode(a.content.trim())
                .map_err(|_| format!("attachment {:?}: Content is not base64", a.filename))?;
            let name = clean(&a.filename, "Filename")?;
            if name.is_empty() {
                return Err("an attachment needs a Filename".to_owned());
            }
            let ct = if a.content_type.is_empty() {
                "application/octet-stream".to_owned()
            } else {
                clean(&a.content_type, "ContentType")?
            };
            if !ct.contains('/') || ct.contains([';', '"', ' ']) {
                return Err(format!(
                    "attachment {name:?}: ContentType must be type/subtype"
                ));
            }
            let cid = clean(&a.content_id, "ContentID")?;
            let quoted = name.replace(['\\', '"'], "_");
            let disposition_name = if quoted.is_ascii() {
                format!("\"{quoted}\"")
            } else {
                format!("\"{}\"", encode_word(&name))
            };
            let mut part = format!("Content-Type: {ct}; name={disposition_name}\r\nContent-Transfer-Encoding: base64\r\n");
            if cid.is_empty() {
                part.push_str(&format!(
                    "Content-Disposition: attachment; filename={disposition_name}\r\n"
                ));
            } else {
                if cid.contains(['<', '>', ' ']) {
                    return Err("ContentID must not contain <, > or spaces".to_owned());
                }
                part.push_str(&format!("Content-Disposition: inline; filename={disposition_name}\r\nContent-ID: <{cid}>\r\n"));
            }
            part.push_str("\r\n");
            part.push_str(&base64_lines(&data));
            parts.push(part);
        }
        body_section = multipart("mixed", "uncorreo-mixed", &parts);
    }
    let mut out = h.into_bytes();
    out.extend_from_slice(body_section.as_bytes());
    Ok(out)
}

fn multipart(kind: &str, boundary: &str, parts: &[String]) -> String {
    // Every part is headers + base64 (or a nested multipart with another
    // boundary), so the boundary cannot occur inside one.
    let mut s = format!("Content-Type: multipart/{kind}; boundary=\"{boundary}\"\r\n\r\n");
    for p in parts {
        s.push_str(&format!("--{boundary}\r\n{p}"));
        if !p.ends_with("\r\n") {
            s.push_str("\r\n");
        }
    }
    s.push_str(&format!("--{boundary}--\r\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> SendRequest {
        serde_json::from_value(serde_json::json!({
            "From": {"Email": "app@example.com", "Name": "Ünïcode App"},
            "To": [{"Email": "box@uncorreo.test", "Name": "Box"}],
            "Bcc": ["hidden@uncorreo.test"],
            "Subject": "Héllo",
            "Text": "text body",
            "HTML": "<p>html body</p>",
            "Attachments": [{"Content": "UERG", "Filename": "a.pdf", "ContentType": "application/pdf"}],
            "Headers": {"X-Campaign": "42"},
            "Tags": ["one", "two"],
        }))
        .unwrap()
    }

    #[test]
    fn builds_a_message_mail_parser_reads_back() {
        let raw = build(&req(), "Tue, 24 Nov 2026 10:00:00 +0000", "id@h").unwrap();
        let x = crate::mailpit::view::extract(&raw);
        assert_eq!(x.subject, "Héllo");
        assert_eq!(x.from.as_ref().unwrap().name, "Ünïcode App");
        assert_eq!(x.to[0].address, "box@uncorreo.test");
        assert!(x.bcc.is_empty(), "Bcc is never written into the message");
        assert_eq!(x.text.trim(), "text body");
        assert!(x.html.contains("html body"));
        assert_eq!(x.attachments.len(), 1);
        assert_eq!(x.attachments[0].size, 3);
        assert_eq!(x.header_tags, ["one", "two"]);
        assert_eq!(x.message_id, "id@h");
        assert!(x
            .headers
            .iter()
            .any(|(n, v)| n == "X-Campaign" && v == "42"));
    }

    #[test]
    fn header_injection_and_bad_input_are_refused() {
        let mut r = req();
        r.subject = "a\r\nBcc: victim@x".into();
        assert!(build(&r, "d", "i").is_err());
        let mut r = req();
        r.headers.insert("Content-Type".into(), "text/html".into());
        assert!(build(&r, "d", "i").is_err());
        let mut r = req();
        r.from = None;
        assert!(build(&r, "d", "i").is_err());
        let mut r = req();
        r.to[0].email = "not an address".into();
        assert!(build(&r, "d", "i").is_err());
        let mut r = req();
        r.attachments[0].content = "!!!".into();
        assert!(build(&r, "d", "i").is_err());
    }
}
