//! Real-time delivery (WebSocket, SSE, long-poll wait, and the `gap` a
//! corrupt stored message leaves in each of them), and what those tests
//! share: mailboxes whose session token the test knows, async delivery
//! through the engine, a WebSocket client (tokio-tungstenite) and a minimal
//! SSE reader.

mod gap;
mod sse;
mod wait;
mod ws;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uncorreo_engine::{Address, Delivery, DeliveryOutcome, Engine, MailboxInfo, NewMailbox, Owner};

use crate::support::{TestServer, DOMAIN};

/// Failsafe against a hang; never an assertion about speed.
pub const HANG: Duration = Duration::from_secs(60);

/// A runtime for one test's client side.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Rate limits out of the way; `tweak` for the rest.
pub fn server_with(tweak: impl FnOnce(&mut uncorreo::Config)) -> TestServer {
    TestServer::start_with(|c| {
        no_rate_limits(c);
        tweak(c);
    })
}

/// The one server a test module shares, started on first use. A `static`
/// is never dropped, so its data directory is removed when the test process
/// exits instead (`support::remove_at_exit`).
pub fn shared_server(cell: &'static std::sync::OnceLock<TestServer>) -> &'static TestServer {
    cell.get_or_init(|| {
        let server = server_with(|_| {});
        crate::support::remove_at_exit(server.data.path());
        server
    })
}

/// Rate limits so high that no test meets them.
pub fn no_rate_limits(c: &mut uncorreo::Config) {
    for p in c.plans.0.values_mut() {
        p.requests_per_minute = 1_000_000;
    }
    c.limits.ip_requests_per_minute = 1_000_000;
}

/// A mailbox owned by session token `token`.
pub async fn mailbox(engine: &Engine, local: &str, token: &str, max: u32) -> MailboxInfo {
    engine
        .create_mailbox(NewMailbox {
            address: Address::from_parts(local, DOMAIN).unwrap(),
            owner: Owner::Anonymous {
                token_hash: uncorreo_api::auth::sha256(token.as_bytes()),
            },
            expires_at_ms: engine.now_ms() + 3_600_000,
            max_messages: max,
        })
        .await
        .unwrap()
}

/// A small message with a subject, a code and a link.
pub fn message(to: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Shop <noreply@shop.example>\r\nTo: {to}\r\nSubject: {subject}\r\n\
Message-ID: <{subject}@shop.example>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// Deliver through the one entry point; returns the stored sequence.
pub async fn deliver(engine: &Engine, to: &str, raw: Vec<u8>) -> u64 {
    let rcpt = engine.resolve(to).unwrap();
    match engine
        .deliver(Delivery {
            raw: bytes::Bytes::from(raw),
            envelope_from: "bounce@shop.example".to_owned(),
            recipients: vec![rcpt],
            dedupe_key: None,
        })
        .await
        .unwrap()
    {
        DeliveryOutcome::Delivered { stored, refused } => {
            assert!(refused.is_empty(), "{refused:?}");
            stored[0].seq
        }
        other => panic!("{other:?}"),
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connect to `/ws/inbox/{address}?since=…` with the token in a header.
pub async fn ws(server: &TestServer, address: &str, token: &str, since: u64) -> Ws {
    let url = format!("ws://{}/ws/inbox/{address}?since={since}", server.http);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

/// Try to connect; the HTTP status and body of a refused handshake.
pub async fn ws_refused(url: &str) -> (u16, Value) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("connected to {url}"),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            assert_eq!(
                resp.headers()["content-type"],
                "application/problem+json",
                "{status}"
            );
            let body = resp.body().clone().unwrap_or_default();
            (status, serde_json::from_slice(&body).unwrap())
        }
        Err(e) => panic!("{e}"),
    }
}

/// What a WebSocket client gets next that matters to the tests.
#[derive(Debug)]
pub enum Got {
    Event(Value),
    Close(u16, String),
    Ping,
    Ended,
}

/// The next text event, close frame, ping, or the end of the stream.
pub async fn next(ws: &mut Ws) -> Got {
    loop {
        let m = tokio::time::timeout(HANG, ws.next())
            .await
            .expect("nothing arrived: hung");
        match m {
            None | Some(Err(_)) => return Got::Ended,
            Some(Ok(Message::Text(t))) => return Got::Event(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(Some(f)))) => {
                return Got::Close(u16::from(f.code), f.reason.to_string())
            }
            Some(Ok(Message::Close(None))) => return Got::Close(1005, String::new()),
            Some(Ok(Message::Ping(_))) => return Got::Ping,
            Some(Ok(_)) => continue,
        }
    }
}

/// The next event's sequence (panics on anything else).
pub async fn next_seq(ws: &mut Ws) -> u64 {
    match next(ws).await {
        Got::Event(v) => v["seq"].as_u64().unwrap(),
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Close politely.
pub async fn bye(mut ws: Ws) {
    let _ = ws
        .send(Message::Close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            },
        )))
        .await;
}

/// One parsed SSE event.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// A minimal `text/event-stream` reader over a streaming reqwest response.
pub struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    /// GET the stream with `token` as a bearer and optional extra headers.
    pub async fn open(
        url: &str,
        token: &str,
        last_event_id: Option<u64>,
    ) -> Result<Sse, (u16, Value)> {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut req = client.get(url).bearer_auth(token);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        if status != 200 {
            let body = resp.bytes().await.unwrap();
            return Err((status, serde_json::from_slice(&body).unwrap()));
        }
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Ok(Sse {
            resp,
            buf: String::new(),
        })
    }

    /// The next event (keep-alive comments skipped), or None at the end.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = SseEvent::default();
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim_start().to_owned();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        ev.id = Some(v.trim_start().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        ev.data.push_str(v.trim_start());
                        any = true;
                    }
                }
                if any {
                    return Some(ev);
                }
                continue;
            }
            let chunk = tokio::time::timeout(HANG, self.resp.chunk())
                .await
                .expect("nothing arrived: hung")
                .ok()??;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next `new_message` event's sequence, checking `id:` equals it.
    pub async fn next_seq(&mut self) -> u64 {
        let ev = self.next().await.expect("stream ended");
        assert_eq!(ev.event, "new_message", "{ev:?}");
        let v: Value = serde_json::from_str(&ev.data).unwrap();
        let seq = v["seq"].as_u64().unwrap();
        assert_eq!(ev.id.as_deref(), Some(seq.to_string().as_str()));
        seq
    }
}

/// Start one task per entry of `deliverers`, task `d` delivering
/// `deliverers[d]` messages to `addr`, yielding `pace[…]` times between
/// messages so that different cases interleave the tasks differently.
pub fn spawn_paced_deliverers(
    engine: &Engine,
    addr: &str,
    deliverers: &[u8],
    pace: &[u8],
) -> Vec<tokio::task::JoinHandle<()>> {
    deliverers
        .iter()
        .enumerate()
        .map(|(d, &n)| {
            let (e, addr, pace) = (engine.clone(), addr.to_owned(), pace.to_vec());
            tokio::spawn(async move {
                for i in 0..n {
                    for _ in 0..pace[(d + usize::from(i)) % pace.len()] {
                        tokio::task::yield_now().await;
                    }
                    deliver(&e, &addr, message(&addr, &format!("d{d}-{i}"), "x")).await;
                }
            })
        })
        .collect()
}

/// Flip one bit of the first occurrence of `needle` in the data directory's
/// segment files: a stored record damaged on disk. The engine reads
/// segments through shared maps, so a running server sees it too.
pub fn flip_first(dir: &std::path::Path, needle: &[u8]) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "seg") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            // One byte in place: the file keeps its size, so no map of it
            // ever points past its end.
            use std::os::unix::fs::FileExt;
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.write_all_at(&[bytes[at + 1] ^ 0x20], (at + 1) as u64)
                .unwrap();
            return;
        }
    }
    panic!(
        "{} not found in any segment",
        String::from_utf8_lossy(needle)
    );
}
