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

/// Messages from the host whose POST has not been answered yet (its
/// response head, for a request): past it the bridge stops reading stdin
/// until one is, and keeps forwarding the appliance's messages meanwhile.
const MAX_SENDS_IN_FLIGHT: usize = 256;

/// POSTs the SDK's HTTP client runs at once. Each finishes when its
/// response head arrives (a request's SSE stream then runs on its own), so
/// this bounds only how many are being set up, not how many calls run.
const MAX_CONCURRENT_POSTS: usize = 64;

/// Bridge stdin/stdout to `base`'s `/mcp` until either side ends.
///
/// The two directions never wait for each other. A send to the appliance
/// resolves only when its POST is answered, and the SDK's HTTP client stops
/// answering while its buffer toward us is full; awaiting each send inside
/// the loop that drains that buffer deadlocked as soon as more than a
/// buffer's worth of progress notifications and results were on their way
/// (about 16 concurrent waits). So sends run as tasks, bounded by
/// [`MAX_SENDS_IN_FLIGHT`], and the loop keeps reading the appliance.
pub async fn run(base: &str, api_key: Option<String>) -> Result<(), BridgeError> {
    let url = endpoint(base);
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.clone())
        .max_concurrent_requests(MAX_CONCURRENT_POSTS);
    if let Some(key) = api_key.filter(|k| !k.is_empty()) {
        config = config.auth_header(key);
    }
    let mut upstream: StreamableHttpClientTransport<reqwest::Client> =
        StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    let mut local =
        AsyncRwTransport::<RoleServer, _, _>::new_server(tokio::io::stdin(), tokio::io::stdout());
    let mut sends = tokio::task::JoinSet::new();
    let upstream_error = |detail: String| BridgeError::Upstream {
        url: url.clone(),
        detail,
    };
    let result = loop {
        tokio::select! {
            from_host = Transport::<RoleServer>::receive(&mut local), if sends.len() < MAX_SENDS_IN_FLIGHT => {
                let Some(message) = from_host else { break Ok(()) };
                // Created here, in arrival order: the SDK registers a
                // request's cancellation when the send is made, not when polled.
                sends.spawn(Transport::<RoleClient>::send(&mut upstream, message));
            }
            Some(sent) = sends.join_next() => {
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Err(upstream_error(e.to_string())),
                    Err(e) => break Err(upstream_error(format!("send task: {e}"))),
                }
            }
            from_appliance = Transport::<RoleClient>::receive(&mut upstream) => {
                let Some(message) = from_appliance else {
                    break Err(upstream_error("the session ended".into()));
                };
                if let Err(e) = Transport::<RoleServer>::send(&mut local, message).await {
                    break Err(BridgeError::Stdout(e.to_string()));
                }
            }
        }
    };
    sends.abort_all();
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
