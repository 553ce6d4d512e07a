//! Every HTTP error as `application/problem+json` (RFC 9457): one type,
//! [`Problem`], that handlers return, that axum's own rejections convert
//! into, and that a last-resort middleware puts on any error response that
//! left the router without a problem body (405, fallbacks, body limits).

use axum::body::Body;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use uncorreo_engine::{CreateMailboxError, DeliverError, LookupError, StorageError, WriteError};
use utoipa::ToSchema;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Prefix of every problem `type` we define. URNs are absolute URIs that
/// never need a web page to exist; the slug after the prefix is stable API.
pub const TYPE_PREFIX: &str = "urn:uncorreo:problem:";

/// The OpenAPI description of a 401, shared by the routes that name it by
/// constant.
pub(crate) const UNAUTHENTICATED_DESCRIPTION: &str = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)";

/// The problem kinds this API answers with. The slug is part of the API
/// contract (clients switch on it), so variants are only ever added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// 404 for anything missing *or not visible to the caller*; one body for both.
    NotFound,
    /// 404 for a URL no route matches.
    NoSuchRoute,
    /// 405.
    MethodNotAllowed,
    /// 401: the endpoint needs credentials and none were given.
    AuthenticationRequired,
    /// 401: an API key that is unknown or revoked.
    InvalidCredentials,
    /// 403: the endpoint needs an API key (a session token is not enough).
    ApiKeyRequired,
    /// 400: malformed JSON, query or path.
    BadRequest,
    /// 415: a JSON body without a JSON content type.
    UnsupportedMediaType,
    /// 413.
    PayloadTooLarge,
    /// 422: a well-formed request asking for something invalid.
    InvalidRequest,
    /// 422: the requested TTL is above the plan's `max_ttl_minutes`.
    TtlTooLong,
    /// 403: the plan's `max_mailboxes` live mailboxes exist already.
    MailboxLimit,
    /// 403: the user holds `max_api_keys_per_user` active keys already.
    KeyLimit,
    /// 403: the mailbox, user or appliance holds as many webhooks as allowed.
    WebhookLimit,
    /// 422: a webhook URL whose host is private, loopback, link-local, metadata… or does not resolve.
    WebhookUrlRefused,
    /// 409: the address is not available: a live mailbox has it, or it is
    /// quarantined after its mailbox ended (one answer for both).
    AddressTaken,
    /// 409: the mailbox holds its plan's maximum of messages (HTTP send).
    MailboxFull,
    /// 429.
    RateLimited,
    /// 422: the stored message is too large to parse (read it raw instead).
    MessageTooLargeToParse,
    /// 422: the stored message could not be parsed (read it raw instead).
    Unparseable,
    /// 503: storage is busy or shutting down; retry.
    Unavailable,
    /// 503: storage failed and refuses writes until restarted.
    StorageFailed,
    /// 507: the data disk is full.
    InsufficientStorage,
    /// 500.
    Internal,
}

impl Kind {
    /// The stable slug after [`TYPE_PREFIX`].
    pub fn slug(self) -> &'static str {
        match self {
            Self::NotFound => "not-found",
            Self::NoSuchRoute => "no-such-route",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::AuthenticationRequired => "authentication-required",
            Self::InvalidCredentials => "invalid-credentials",
            Self::ApiKeyRequired => "api-key-required",
            Self::BadRequest => "bad-request",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::PayloadTooLarge => "payload-too-large",
            Self::InvalidRequest => "invalid-request",
            Self::TtlTooLong => "ttl-too-long",
            Self::MailboxLimit => "mailbox-limit",
            Self::KeyLimit => "key-limit",
            Self::WebhookLimit => "webhook-limit",
            Self::WebhookUrlRefused => "webhook-url-refused",
            Self::AddressTaken => "address-taken",
            Self::MailboxFull => "mailbox-full",
            Self::RateLimited => "rate-limited",
            Self::MessageTooLargeToParse => "message-too-large-to-parse",
            Self::Unparseable => "unparseable-message",
            Self::Unavailable => "unavailable",
            Self::StorageFailed => "storage-failed",
            Self::InsufficientStorage => "insufficient-storage",
            Self::Internal => "internal",
        }
    }

    /// The kind a problem body's `type` names (its slug after the prefix).
    pub fn from_slug(slug: &str) -> Option<Kind> {
        const ALL: [Kind; 24] = [
            Kind::NotFound,
            Kind::NoSuchRoute,
            Kind::MethodNotAllowed,
            Kind::AuthenticationRequired,
            Kind::InvalidCredentials,
            Kind::ApiKeyRequired,
            Kind::BadRequest,
            Kind::UnsupportedMediaType,
            Kind::PayloadTooLarge,
            Kind::InvalidRequest,
            Kind::TtlTooLong,
            Kind::MailboxLimit,
            Kind::KeyLimit,
            Kind::WebhookLimit,
            Kind::WebhookUrlRefused,
            Kind::AddressTaken,
            Kind::MailboxFull,
            Kind::RateLimited,
            Kind::MessageTooLargeToParse,
            Kind::Unparseable,
            Kind::Unavailable,
            Kind::StorageFailed,
            Kind::InsufficientStorage,
            Kind::Internal,
        ];
        ALL.into_iter().find(|k| k.slug() == slug)
    }

    /// The HTTP status this kind is always sent with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::NotFound | Self::NoSuchRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::AuthenticationRequired | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            // Refused by the caller's plan, not malformed: another plan would
            // take the same request.
            Self::ApiKeyRequired
            | Self::MailboxLimit
            | Self::KeyLimit
            | Self::WebhookLimit
            | Self::TtlTooLong
            // A well-formed URL this appliance's policy will not call.
            | Self::WebhookUrlRefused => StatusCode::FORBIDDEN,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidRequest
            | Self::MessageTooLargeToParse
            | Self::Unparseable => StatusCode::UNPROCESSABLE_ENTITY,
            Self::AddressTaken | Self::MailboxFull => StatusCode::CONFLICT,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable | Self::StorageFailed => StatusCode::SERVICE_UNAVAILABLE,
            Self::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Short, fixed, human-readable summary (RFC 9457 `title`).
    pub fn title(self) -> &'static str {
        match self {
            Self::NotFound => "Not found",
            Self::NoSuchRoute => "No such route",
            Self::MethodNotAllowed => "Method not allowed",
            Self::AuthenticationRequired => "Authentication required",
            Self::InvalidCredentials => "Invalid credentials",
            Self::ApiKeyRequired => "API key required",
            Self::BadRequest => "Bad request",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::PayloadTooLarge => "Payload too large",
            Self::InvalidRequest => "Invalid request",
            Self::TtlTooLong => "TTL above the plan's maximum",
            Self::MailboxLimit => "Mailbox limit reached",
            Self::KeyLimit => "API key limit reached",
            Self::WebhookLimit => "Webhook limit reached",
            Self::WebhookUrlRefused => "Webhook URL refused",
            Self::AddressTaken => "Address taken",
            Self::MailboxFull => "Mailbox full",
            Self::RateLimited => "Too many requests",
            Self::MessageTooLargeToParse => "Message too large to parse",
            Self::Unparseable => "Message could not be parsed",
            Self::Unavailable => "Service unavailable",
            Self::StorageFailed => "Storage failed",
            Self::InsufficientStorage => "Insufficient storage",
            Self::Internal => "Internal error",
        }
    }

    /// Every kind, for documentation and tests.
    pub const ALL: &'static [Kind] = &[
        Self::NotFound,
        Self::NoSuchRoute,
        Self::MethodNotAllowed,
        Self::AuthenticationRequired,
        Self::InvalidCredentials,
        Self::ApiKeyRequired,
        Self::BadRequest,
        Self::UnsupportedMediaType,
        Self::PayloadTooLarge,
        Self::InvalidRequest,
        Self::TtlTooLong,
        Self::MailboxLimit,
        Self::KeyLimit,
        Self::WebhookLimit,
        Self::WebhookUrlRefused,
        Self::AddressTaken,
        Self::MailboxFull,
        Self::RateLimited,
        Self::MessageTooLargeToParse,
        Self::Unparseable,
        Self::Unavailable,
        Self::StorageFailed,
        Self::InsufficientStorage,
        Self::Internal,
    ];
}

/// The body of every error response (RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProblemBody {
    /// `urn:uncorreo:problem:<slug>`; clients switch on this.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status code, repeated.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
}

/// An error answer: a kind, a detail, and optional extra headers
/// (`Retry-After`, `WWW-Authenticate`, `Allow`).
#[derive(Debug, Clone)]
pub struct Problem {
    /// What kind of problem.
    pub kind: Kind,
    /// Request-specific explanation. Never includes secrets; for
    /// [`Kind::NotFound`] it is fixed so "not yours" equals "not there".
    pub detail: String,
    /// Seconds after which a retry may succeed (sent as `Retry-After`).
    pub retry_after: Option<u64>,
    /// The request field at fault, for callers that name it structurally
    /// (MCP's `-32602` `data.field`); the REST body keeps it in `detail`.
    pub field: Option<&'static str>,
    /// The request body was left unread: the answer says `Connection:
    /// close`, or a client that pools connections sends its next request on
    /// one the server is about to close (RFC 9112 section 9.6).
    pub body_left_unread: bool,
}

/// The one detail every invisible-or-missing resource answers with.
pub const NOT_FOUND_DETAIL: &str =
    "no such resource, or it is not visible with the credentials given";

impl Problem {
    /// A problem of `kind` with `detail`.
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            retry_after: None,
            field: None,
            body_left_unread: false,
        }
    }

    /// Say that the request body was left unread (see `body_left_unread`).
    pub fn leaving_body_unread(mut self) -> Self {
        self.body_left_unread = true;
        self
    }

    /// Name the request field at fault.
    pub fn for_field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    /// The single answer for "missing" and "not yours".
    pub fn not_found() -> Self {
        Self::new(Kind::NotFound, NOT_FOUND_DETAIL)
    }

    /// Add `Retry-After`.
    /// The problem an API answer describes (an answer of this API run
    /// in-process or by another host): its kind from the body's `type`,
    /// else from the status; its `Retry-After`. Never fails: an answer
    /// that is not a problem body is an `Internal` problem.
    pub fn from_answer(status: u16, retry_after: Option<u64>, body: &[u8]) -> Self {
        let parsed = serde_json::from_slice::<ProblemBody>(body).ok();
        let kind = parsed
            .as_ref()
            .and_then(|b| b.type_.rsplit(':').next())
            .and_then(Kind::from_slug)
            .unwrap_or(match status {
                404 => Kind::NotFound,
                401 => Kind::InvalidCredentials,
                429 => Kind::RateLimited,
                503 => Kind::Unavailable,
                _ => Kind::Internal,
            });
        let mut problem = match kind {
            Kind::NotFound => Self::not_found(),
            _ => Self::new(
                kind,
                parsed.map_or_else(|| format!("the API answered {status}"), |b| b.detail),
            ),
        };
        problem.retry_after = retry_after;
        problem
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The JSON body.
    pub fn body(&self) -> ProblemBody {
        ProblemBody {
            type_: format!("{TYPE_PREFIX}{}", self.kind.slug()),
            title: self.kind.title().to_owned(),
            status: self.kind.status().as_u16(),
            detail: self.detail.clone(),
        }
    }

    /// Map a storage failure to what the client should be told. Internal
    /// details (I/O error text) are logged, not sent.
    pub fn from_storage(e: &StorageError) -> Self {
        match e {
            StorageError::Closed => {
                Self::new(Kind::Unavailable, "the server is shutting down").retry_after(5)
            }
            StorageError::Poisoned => Self::new(
                Kind::StorageFailed,
                "storage failed and refuses writes until the server is restarted",
            ),
            StorageError::Corrupt => {
                tracing::error!("a stored record failed its checksum");
                Self::new(Kind::Internal, "the stored record is corrupt")
            }
            other => {
                tracing::error!(error = %other, "storage error");
                Self::new(Kind::Internal, "storage error")
            }
        }
    }

    fn saturated() -> Self {
        Self::new(Kind::Unavailable, "storage is saturated; retry shortly").retry_after(1)
    }

    fn disk_full() -> Self {
        Self::new(Kind::InsufficientStorage, "storage is full")
    }
}

impl From<StorageError> for Problem {
    fn from(e: StorageError) -> Self {
        Self::from_storage(&e)
    }
}

impl From<DeliverError> for Problem {
    fn from(e: DeliverError) -> Self {
        match e {
            DeliverError::TooLarge { limit } => Self::new(
                Kind::PayloadTooLarge,
                format!("the message is larger than {limit} bytes"),
            ),
            DeliverError::Saturated => Self::saturated(),
            DeliverError::DiskFull => Self::disk_full(),
            DeliverError::Storage(e) => Self::from_storage(&e),
            other => {
                tracing::error!(error = %other, "delivery error");
                Self::new(Kind::Internal, "storage error")
            }
        }
    }
}

impl From<CreateMailboxError> for Problem {
    fn from(e: CreateMailboxError) -> Self {
        match e {
            CreateMailboxError::ForeignDomain => {
                Self::new(Kind::InvalidRequest, "domain not served here")
            }
            // Taken and quarantined are one answer, word for word, so a
            // caller learns nothing about who holds an address.
            CreateMailboxError::AlreadyExists => Self::new(
                Kind::AddressTaken,
                "this address is not available; choose another or omit local_part for a random one",
            ),
            CreateMailboxError::Saturated => Self::saturated(),
            CreateMailboxError::DiskFull => Self::disk_full(),
            CreateMailboxError::Storage(e) => Self::from_storage(&e),
            other => {
                tracing::error!(error = %other, "mailbox creation error");
                Self::new(Kind::Internal, "storage error")
            }
        }
    }
}

impl From<WriteError> for Problem {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::NotFound => Self::not_found(),
            WriteError::Saturated => Self::saturated(),
            WriteError::DiskFull => Self::disk_full(),
            WriteError::Storage(e) => Self::from_storage(&e),
            other => {
                tracing::error!(error = %other, "storage write error");
                Self::new(Kind::Internal, "storage error")
            }
        }
    }
}

impl From<LookupError> for Problem {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::NotFound => Self::not_found(),
            LookupError::Storage(e) => Self::from_storage(&e),
            other => {
                tracing::error!(error = %other, "storage read error");
                Self::new(Kind::Internal, "storage error")
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.kind.status();
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.body_left_unread {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3.1: a credential that was sent but matched nothing
            // says so, so a client can tell "log in" from "your key is gone".
            let challenge = if self.kind == Kind::InvalidCredentials {
                "Bearer realm=\"uncorreo\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"uncorreo\""
            };
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        resp
    }
}

impl From<BytesRejection> for Problem {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(Kind::PayloadTooLarge, "request body is larger than allowed")
        } else {
            Self::new(Kind::BadRequest, r.body_text())
        }
    }
}

impl From<QueryRejection> for Problem {
    fn from(r: QueryRejection) -> Self {
        Self::new(Kind::BadRequest, r.body_text())
    }
}

impl From<PathRejection> for Problem {
    fn from(r: PathRejection) -> Self {
        Self::new(Kind::BadRequest, r.body_text())
    }
}

/// Parse a JSON request body. An empty body, or JSON `null`, means "all
/// defaults" (every field of our optional request bodies is optional);
/// anything else must be JSON.
pub fn json_body<T>(headers: &axum::http::HeaderMap, body: &[u8]) -> Result<T, Problem>
where
    T: serde::de::DeserializeOwned + Default,
{
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim();
            m.eq_ignore_ascii_case("application/json")
                || (m.len() > 5 && m.to_ascii_lowercase().ends_with("+json"))
        })
        .unwrap_or(false);
    if !is_json {
        return Err(Problem::new(
            Kind::UnsupportedMediaType,
            "send the body as application/json",
        ));
    }
    // serde would also read a struct from a JSON array of its fields in
    // order; our request bodies are objects, and the document says so.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{' && *b != b'n') {
        return Err(Problem::new(
            Kind::InvalidRequest,
            "the body must be a JSON object",
        ));
    }
    serde_json::from_slice::<Option<T>>(body)
        .map(Option::unwrap_or_default)
        .map_err(|e| {
            if e.is_data() {
                Problem::new(Kind::InvalidRequest, e.to_string())
            } else {
                Problem::new(Kind::BadRequest, format!("malformed JSON: {e}"))
            }
        })
}

/// Middleware over every route (REST, real time, Mailpit): a `413` leaves the
/// refused body unread, so the connection cannot carry another request. Say
/// so, or a client reuses it and its next request dies on the close (RFC 9112
/// section 9.6). Other refusals that leave a body unread say it themselves
/// ([`Problem::leaving_body_unread`]).
pub async fn close_after_an_unread_body(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Last-resort middleware: an error status leaving the router without a
/// problem body (axum's 405 and fallbacks, limits from tower layers) gets
/// one, keeping its status and headers such as `Allow`.
pub async fn ensure_problem_json(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return resp;
    }
    let kind = match status {
        StatusCode::NOT_FOUND => Kind::NoSuchRoute,
        StatusCode::METHOD_NOT_ALLOWED => Kind::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => Kind::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Kind::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => Kind::InvalidRequest,
        StatusCode::TOO_MANY_REQUESTS => Kind::RateLimited,
        StatusCode::SERVICE_UNAVAILABLE => Kind::Unavailable,
        s if s.is_client_error() => Kind::BadRequest,
        _ => Kind::Internal,
    };
    let detail = match kind {
        Kind::NoSuchRoute => "no route matches this path".to_owned(),
        Kind::MethodNotAllowed => "this path does not accept that method".to_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_owned(),
    };
    let (mut parts, _) = resp.into_parts();
    let mut body = Problem::new(kind, detail).body();
    // The original status stands (e.g. a 411 is reported as itself).
    body.status = status.as_u16();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts
        .headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_distinct_slug_and_an_error_status() {
        let mut seen = std::collections::HashSet::new();
        for k in Kind::ALL {
            assert!(seen.insert(k.slug()), "duplicate slug {}", k.slug());
            assert!(k.status().as_u16() >= 400);
        }
    }

    /// An answer run in-process or on another host comes back as the same
    /// problem: kind by its `type`, the one not-found detail, `Retry-After`.
    #[test]
    fn an_answer_reads_back_as_its_problem() {
        for slug in [
            "not-found",
            "no-such-route",
            "method-not-allowed",
            "authentication-required",
            "invalid-credentials",
            "api-key-required",
            "bad-request",
            "unsupported-media-type",
            "payload-too-large",
            "invalid-request",
            "ttl-too-long",
            "mailbox-limit",
            "key-limit",
            "webhook-limit",
            "webhook-url-refused",
            "address-taken",
            "mailbox-full",
            "rate-limited",
            "message-too-large-to-parse",
            "unparseable-message",
            "unavailable",
            "storage-failed",
            "insufficient-storage",
            "internal",
        ] {
            assert_eq!(Kind::from_slug(slug).map(Kind::slug), Some(slug));
        }
        let sent = Problem::new(Kind::Unavailable, "owner away").retry_after(3);
        let body = serde_json::to_vec(&sent.body()).unwrap_or_default();
        let back = Problem::from_answer(503, Some(3), &body);
        assert_eq!(
            (back.kind, back.detail.as_str(), back.retry_after),
            (Kind::Unavailable, "owner away", Some(3))
        );
        let missing = serde_json::to_vec(&Problem::not_found().body()).unwrap_or_default();
        assert_eq!(
            Problem::from_answer(404, None, &missing).detail,
            Problem::not_found().detail
        );
        assert_eq!(
            Problem::from_answer(502, None, b"<html>").kind,
            Kind::Internal
        );
    }

    #[test]
    fn body_carries_type_title_status_detail() {
        let b = Problem::new(Kind::TtlTooLong, "max 60").body();
        assert_eq!(b.type_, "urn:uncorreo:problem:ttl-too-long");
        assert_eq!(b.status, 403);
        assert_eq!(b.detail, "max 60");
    }
}
