//! Tool arguments: one struct per tool, its JSON Schema (the tool's
//! `inputSchema`), and parsing that answers a bad argument with JSON-RPC
//! `-32602` naming the field in the message and in `data.field`.
//!
//! Presence and unknown names are checked against the schema itself, and
//! types through `serde_path_to_error`, so the field is known structurally,
//! never read back out of an error message.

use std::sync::Arc;

use rmcp::model::JsonObject;
use rmcp::ErrorData;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// `create_mailbox`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMailboxArgs {
    /// Local part (`[a-z0-9._-]`, at most 64); random when absent.
    pub local_part: Option<String>,
    /// Minutes until the mailbox expires, 1 ..= the plan's maximum; the configured default when absent.
    pub ttl_minutes: Option<u32>,
    /// One of the served domains; the first one when absent.
    pub domain: Option<String>,
}

/// `list_mailboxes` takes nothing.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// `list_messages`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListMessagesArgs {
    /// The mailbox (`local@domain`).
    pub address: String,
    /// Only messages with a sequence number above this (default 0). Pass `next_since` of the last page.
    pub since: Option<u64>,
    /// Page size (default and maximum from the server's configuration).
    pub limit: Option<usize>,
}

/// Which rendering of a message `read_message` returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Headers, the text body, attachments (the default).
    #[default]
    Text,
    /// As `text`, plus the HTML body sanitized.
    Html,
    /// As `text`, plus the message exactly as received (unsanitized).
    Raw,
}

/// `read_message`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadMessageArgs {
    /// The mailbox (`local@domain`).
    pub address: String,
    /// Message id, as listed.
    pub id: String,
    /// `text` (default), `html` (sanitized) or `raw`.
    pub format: Option<Format>,
}

/// `wait_for_message`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitForMessageArgs {
    /// The mailbox (`local@domain`).
    pub address: String,
    /// Only messages with a sequence number above this (default 0, so mail that already arrived counts).
    pub since: Option<u64>,
    /// `From:` or the envelope sender contains this (case-insensitive).
    pub from: Option<String>,
    /// `Subject:` contains this (case-insensitive).
    pub subject: Option<String>,
    /// The text body contains this (case-insensitive).
    pub body: Option<String>,
    /// Return once this many matching messages exist (default 1).
    pub count: Option<usize>,
    /// Seconds to wait (default and maximum from the server's configuration; 0 checks once).
    pub timeout_seconds: Option<u64>,
}

/// `wait_for_code`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitForCodeArgs {
    /// The mailbox (`local@domain`).
    pub address: String,
    /// Only messages with a sequence number above this (default 0).
    pub since: Option<u64>,
    /// Seconds to wait when no code or link is there yet.
    pub timeout_seconds: Option<u64>,
}

/// `delete_mailbox`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteMailboxArgs {
    /// The mailbox (`local@domain`).
    pub address: String,
}

/// The JSON Schema of `T` as an MCP `inputSchema`.
pub fn schema_of<T: JsonSchema>() -> Arc<JsonObject> {
    let schema = schemars::schema_for!(T);
    let mut object = match serde_json::to_value(schema) {
        Ok(Value::Object(o)) => o,
        _ => JsonObject::new(),
    };
    object.remove("$schema");
    object.remove("title");
    object
        .entry("type")
        .or_insert_with(|| Value::String("object".into()));
    object
        .entry("properties")
        .or_insert_with(|| Value::Object(JsonObject::new()));
    Arc::new(object)
}

/// `-32602` for `field`.
pub fn invalid(field: &str, message: impl std::fmt::Display) -> ErrorData {
    ErrorData::invalid_params(
        format!("invalid argument `{field}`: {message}"),
        Some(json!({ "field": field })),
    )
}

/// Parse `arguments` for a tool whose input schema is `schema`.
pub fn parse<T: DeserializeOwned>(
    schema: &JsonObject,
    arguments: Option<JsonObject>,
) -> Result<T, ErrorData> {
    let arguments = arguments.unwrap_or_default();
    let properties = schema.get("properties").and_then(Value::as_object);
    for name in arguments.keys() {
        if !properties.is_some_and(|p| p.contains_key(name)) {
            return Err(invalid(name, "this tool has no such argument"));
        }
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if arguments.get(name).is_none_or(Value::is_null) {
                return Err(invalid(name, "is required"));
            }
        }
    }
    serde_path_to_error::deserialize(Value::Object(arguments)).map_err(|e| {
        let field = e.path().to_string();
        invalid(&field, e.into_inner())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> Option<JsonObject> {
        v.as_object().cloned()
    }

    fn field(e: &ErrorData) -> &str {
        e.data
            .as_ref()
            .and_then(|d| d["field"].as_str())
            .unwrap_or_default()
    }

    #[test]
    fn missing_unknown_and_mistyped_arguments_name_the_field() {
        let schema = schema_of::<WaitForMessageArgs>();
        let e = parse::<WaitForMessageArgs>(&schema, args(json!({}))).unwrap_err();
        assert_eq!(e.code, rmcp::model::ErrorCode::INVALID_PARAMS);
        assert_eq!(field(&e), "address");
        let e = parse::<WaitForMessageArgs>(&schema, args(json!({"address": "a@b", "colour": 1})))
            .unwrap_err();
        assert_eq!(field(&e), "colour");
        let e = parse::<WaitForMessageArgs>(
            &schema,
            args(json!({"address": "a@b", "timeout_seconds": "soon"})),
        )
        .unwrap_err();
        assert_eq!(field(&e), "timeout_seconds");
        assert!(e.message.contains("timeout_seconds"), "{}", e.message);
        let ok = parse::<WaitForMessageArgs>(&schema, args(json!({"address": "a@b", "count": 2})))
            .unwrap();
        assert_eq!(ok.count, Some(2));
    }

    #[test]
    fn format_accepts_only_the_three_renderings() {
        let schema = schema_of::<ReadMessageArgs>();
        let ok = parse::<ReadMessageArgs>(
            &schema,
            args(json!({"address": "a@b", "id": "1-1", "format": "raw"})),
        )
        .unwrap();
        assert_eq!(ok.format, Some(Format::Raw));
        let e = parse::<ReadMessageArgs>(
            &schema,
            args(json!({"address": "a@b", "id": "1-1", "format": "pdf"})),
        )
        .unwrap_err();
        assert_eq!(field(&e), "format");
    }

    #[test]
    fn schemas_are_objects_with_properties() {
        let s = schema_of::<NoArgs>();
        assert_eq!(s["type"], "object");
        let s = schema_of::<DeleteMailboxArgs>();
        assert_eq!(s["required"], json!(["address"]));
    }
}
