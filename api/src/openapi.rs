//! The route table and the OpenAPI 3.1 document, built from the same
//! registrations (`utoipa_axum::routes!`), so a route cannot exist without
//! being documented.

use axum::extract::DefaultBodyLimit;
use tower_http::limit::RequestBodyLimitLayer;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::{
    campaigns, faults, keys, mailboxes, messages, ops, realtime, send, ses, webhooks, AppState,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "uncorreo",
        description = "Disposable inboxes: create mailboxes, read what arrives over SMTP or SES. \
Errors are application/problem+json (RFC 9457); clients switch on `type` \
(`urn:uncorreo:problem:<slug>`). A resource the caller may not see answers exactly like \
one that does not exist (404 `not-found`).",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    components(schemas(crate::problem::ProblemBody)),
    modifiers(&Security),
    tags(
        (name = "mailboxes", description = "Mailboxes"),
        (name = "messages", description = "Messages in a mailbox"),
        (name = "keys", description = "API keys of the calling user"),
        (name = "realtime", description = "WebSocket, Server-Sent Events and long-poll on one resumable per-mailbox sequence"),
        (name = "webhooks", description = "Outbound webhooks: every committed message POSTed to your URL, signed per Standard Webhooks, retried with backoff"),
        (name = "campaigns", description = "Load-testing campaigns: a catch-all address space, a report of what arrived (counts, duplicates, arrival latency) and fault plans"),
        (name = "ses", description = "The SES → SNS inbound webhook"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
struct Base;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("uct_<32 url-safe base64 characters>")
                    .description(Some("A user's API key: `Authorization: Bearer uct_…`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Session-Token",
                "An anonymous mailbox's session token (also accepted as `Authorization: Bearer <token>`): 43 url-safe base64 characters, behind `ust_<partition>_` when a host of a cluster minted it",
            ))),
        );
        components.add_security_scheme(
            "query_token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "A session token or API key in the URL, for WebSocket and EventSource clients that cannot set headers (it may end up in access logs)",
            ))),
        );
    }
}

/// Every route, registered with its documentation: each module brings its
/// own [`OpenApiRouter`], merged here in one place. JSON request bodies are
/// capped at `json_body_bytes`.
pub fn api_router(json_body_bytes: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(Base::openapi())
        .merge(ops::routes())
        .merge(mailboxes::routes())
        .merge(messages::routes())
        .merge(keys::routes())
        .merge(realtime::routes())
        .merge(webhooks::routes())
        .merge(campaigns::routes())
        .merge(faults::routes())
        // The bodies of every route above are small JSON: capped at
        // `limits.json_body_bytes`, refused with 413 from `Content-Length`
        // alone when declared. `route_layer` covers only the routes
        // registered so far, so the routes below bring their own limits.
        .route_layer(RequestBodyLimitLayer::new(json_body_bytes))
        .route_layer(DefaultBodyLimit::max(json_body_bytes))
        // SNS notifications carry whole messages: `sns.max_body_bytes`.
        .merge(ses::routes())
        // HTTP send reads its body itself, bounded by `engine.max_message_bytes`.
        .merge(send::routes())
}

/// The OpenAPI document (the same for every configuration: limits change
/// layers, not routes).
pub fn document() -> utoipa::openapi::OpenApi {
    api_router(crate::LimitsConfig::default().json_body_bytes).into_openapi()
}

/// The document as JSON, for [`crate::AppState`] to build once and serve,
/// with what only this configuration knows written in: the domains a
/// mailbox may be created in.
pub(crate) fn json(domains: &[String]) -> String {
    let Ok(mut doc) = serde_json::to_value(document()) else {
        return "{}".to_owned();
    };
    if let Some(domain) = doc.pointer_mut("/components/schemas/CreateMailbox/properties/domain") {
        // `null` too: the field is optional (`null` means the first domain).
        let mut allowed: Vec<serde_json::Value> =
            domains.iter().map(|d| d.as_str().into()).collect();
        allowed.push(serde_json::Value::Null);
        domain["enum"] = serde_json::Value::Array(allowed);
    }
    if let Some(pattern) =
        doc.pointer_mut("/components/schemas/CreateCampaign/properties/address_pattern")
    {
        let escaped: Vec<String> = domains.iter().map(|d| d.replace('.', "\\.")).collect();
        pattern["pattern"] = format!(r"^[A-Za-z0-9._-]{{3,32}}\*@({})$", escaped.join("|")).into();
    }
    // A rule is one of four shapes, each refusing unknown fields (serde's
    // `deny_unknown_fields`), which utoipa does not write for enum variants.
    if let Some(serde_json::Value::Array(shapes)) =
        doc.pointer_mut("/components/schemas/Rule/oneOf")
    {
        for shape in shapes {
            shape["additionalProperties"] = false.into();
        }
    }
    serde_json::to_string(&doc).unwrap_or_else(|_| "{}".to_owned())
}

/// `(METHOD, path template)` of every documented operation, sorted.
pub fn operations() -> Vec<(String, String)> {
    let doc = document();
    let mut out = Vec::new();
    for (path, item) in doc.paths.paths {
        for (method, op) in [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("DELETE", &item.delete),
            ("PATCH", &item.patch),
            ("HEAD", &item.head),
            ("OPTIONS", &item.options),
            ("TRACE", &item.trace),
        ] {
            if op.is_some() {
                out.push((method.to_owned(), path.clone()));
            }
        }
    }
    out.sort();
    out
}
