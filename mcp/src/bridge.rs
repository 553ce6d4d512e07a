//! `uncorreo mcp`: MCP on stdin/stdout for agent hosts that launch a
//! command, bridged message for message to a running appliance's `/mcp`.
//!
//! Architecture invariant: the bridge has no tools of its own. It moves
//! JSON-RPC messages between the stdio transport and the SDK's Streamable
//! HTTP client, which carries `Authorization: Bearer $UNCORREO_API_KEY`, so
//! there is one implementation of the tools, the policy and the waits: the
//! appliance's. When stdin closes, the HTTP session is closed (DELETE), which
//! cancels its waits.

use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, Transport};
use rmcp::{RoleClient, RoleServer};

/// Where the bridge connects when `UNCORREO_URL` is not set.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Why the bridge stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// Writing to stdout failed (the host went away).
    #[error("writing to stdout: {0}")]
    Stdout(String),
    /// The appliance refused or dropped a message.
    #[error("sending to {url}: {detail}")]
    Upstream {
        /// The `/mcp` URL.
        url: String,
        /// What the SDK reported.
        detail: String,
    },
}

/// The `/mcp` endpoint under an appliance's base URL.
pub fn endpoint(base: &str) -> String {
    format!("{}/mcp", base.trim_end_matches('/'))
}

/// Bridge stdin/stdout to `base`'s `/mcp` until either side ends.
pub async fn run(base: &str, api_key: Option<String>) -> Result<(), BridgeError> {
    let url = endpoint(base);
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.clone());
    if let Some(key) = api_key.filter(|k| !k.is_empty()) {
        config = config.auth_header(key);
    }
    let mut upstream: StreamableHttpClientTransport<reqwest::Client> =
        StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    let mut local =
        AsyncRwTransport::<RoleServer, _, _>::new_server(tokio::io::stdin(), tokio::io::stdout());
    let result = loop {
        tokio::select! {
            from_host = Transport::<RoleServer>::receive(&mut local) => {
                let Some(message) = from_host else { break Ok(()) };
                if let Err(e) = Transport::<RoleClient>::send(&mut upstream, message).await {
                    break Err(BridgeError::Upstream { url: url.clone(), detail: e.to_string() });
                }
            }
            from_appliance = Transport::<RoleClient>::receive(&mut upstream) => {
                let Some(message) = from_appliance else {
                    break Err(BridgeError::Upstream { url: url.clone(), detail: "the session ended".into() });
                };
                if let Err(e) = Transport::<RoleServer>::send(&mut local, message).await {
                    break Err(BridgeError::Stdout(e.to_string()));
                }
            }
        }
    };
    let _ = Transport::<RoleClient>::close(&mut upstream).await;
    let _ = Transport::<RoleServer>::close(&mut local).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_appends_mcp_once() {
        assert_eq!(
            endpoint("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080/mcp"
        );
        assert_eq!(endpoint("http://h:1/"), "http://h:1/mcp");
    }
}
