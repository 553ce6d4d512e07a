//! WebSocket subscribers on `/ws/inbox/{address}`: they record when each
//! message's event arrives (matched by the bench token in its subject).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Event arrival times shared by all subscribers: slot `i` holds the
/// nanoseconds since `base` + 1 when message `i`'s event arrived (0 = not yet).
pub struct Arrivals {
    pub base: Instant,
    pub run: String,
    pub slots: Vec<AtomicU64>,
    /// Events that carried no token of this run, or a duplicate.
    pub unmatched: AtomicU64,
    pub duplicates: AtomicU64,
    pub total: AtomicU64,
}

impl Arrivals {
    pub fn new(base: Instant, run: &str, n: usize) -> Self {
        Self {
            base,
            run: run.to_owned(),
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            unmatched: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    /// The token of message `i`: it is the Subject and Message-ID local part.
    pub fn token(&self, i: usize) -> String {
        format!("bench-{}-{i}", self.run)
    }

    fn index_of(&self, subject: &str) -> Option<usize> {
        let rest = subject
            .trim()
            .strip_prefix("bench-")?
            .strip_prefix(self.run.as_str())?;
        rest.strip_prefix('-')?.parse().ok()
    }

    fn mark(&self, subject: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1;
        match self.index_of(subject).and_then(|i| self.slots.get(i)) {
            Some(slot) => {
                if slot
                    .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
                {
                    self.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                self.unmatched.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// When message `i`'s event arrived, as nanoseconds since `base`.
    pub fn get(&self, i: usize) -> Option<u64> {
        match self.slots.get(i)?.load(Ordering::Relaxed) {
            0 => None,
            v => Some(v - 1),
        }
    }
}

/// Open `/ws/inbox/{address}?since=0` with the API key.
pub async fn connect(http: &str, key: &str, address: &str) -> anyhow::Result<Ws> {
    let url = format!("ws://{http}/ws/inbox/{address}?since=0");
    let mut req = url.as_str().into_client_request()?;
    if !key.is_empty() {
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {key}")).context("bad key")?,
        );
    }
    // tungstenite zero-fills its whole read buffer (128 KiB by default) per
    // connection; events are small, and ws-idle holds 10k of these.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (ws, _resp) = tokio_tungstenite::connect_async_with_config(req, Some(config), true)
        .await
        .with_context(|| format!("WebSocket {url}"))?;
    Ok(ws)
}

/// Read events until the socket closes, marking arrivals.
pub async fn watch(mut ws: Ws, arrivals: Arc<Arrivals>) {
    while let Some(msg) = ws.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
            arrivals.unmatched.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if v.get("event").and_then(|e| e.as_str()) != Some("new_message") {
            continue;
        }
        let subject = v.get("subject").and_then(|s| s.as_str()).unwrap_or("");
        arrivals.mark(subject);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_foreign_subjects_do_not_match() {
        let a = Arrivals::new(Instant::now(), "r1", 10);
        assert_eq!(a.index_of(&a.token(7)), Some(7));
        assert_eq!(a.index_of("bench-r2-7"), None);
        assert_eq!(a.index_of("hello"), None);
        a.mark(&a.token(3));
        a.mark(&a.token(3));
        a.mark("other");
        assert!(a.get(3).is_some());
        assert_eq!(a.get(4), None);
        assert_eq!(a.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(a.unmatched.load(Ordering::Relaxed), 1);
    }
}
