//! The burst client against a small stand-in server over loopback: a real SMTP
//! listener (PIPELINING) that publishes each accepted message to a real
//! WebSocket endpoint. Checks the client's accounting, not anyone's speed.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use uncorreo_bench::burst::{burst, BurstArgs, Resolved};

/// (mailbox address, subject) of each accepted message.
type Bus = broadcast::Sender<(String, String)>;

struct Mock {
    smtp: String,
    http: String,
}

/// Start the stand-in; a message whose subject ends with `drop_suffix` is
/// acknowledged but never published.
async fn mock(drop_suffix: Option<&'static str>) -> Mock {
    let (bus, _) = broadcast::channel::<(String, String)>(100_000);
    let smtp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp_addr = smtp.local_addr().unwrap().to_string();
    let b = bus.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = smtp.accept().await.unwrap();
            let bus = b.clone();
            tokio::spawn(async move { smtp_session(s, bus, drop_suffix).await });
        }
    });
    let app = Router::new()
        .route("/api/v1/mailboxes", post(create))
        .route("/ws/inbox/{address}", get(inbox))
        .with_state(Arc::new(bus));
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(http, app).await.unwrap() });
    Mock {
        smtp: smtp_addr,
        http: http_addr,
    }
}

async fn smtp_session(s: tokio::net::TcpStream, bus: Bus, drop_suffix: Option<&str>) {
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 mock\r\n").await.unwrap();
    let (mut rcpt, mut line) = (String::new(), String::new());
    loop {
        line.clear();
        if r.read_line(&mut line).await.unwrap() == 0 {
            return;
        }
        let cmd = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = if cmd.starts_with("EHLO") {
            b"250-mock\r\n250 PIPELINING\r\n"
        } else if cmd.starts_with("RCPT TO:<") {
            rcpt = line.trim_end()[9..line.trim_end().len() - 1].to_owned();
            b"250 ok\r\n"
        } else if cmd == "DATA" {
            w.write_all(b"354 go\r\n").await.unwrap();
            let mut subject = String::new();
            loop {
                line.clear();
                r.read_line(&mut line).await.unwrap();
                if line == ".\r\n" {
                    break;
                }
                if let Some(s) = line.strip_prefix("Subject: ") {
                    subject = s.trim_end().to_owned();
                }
            }
            w.write_all(b"250 stored\r\n").await.unwrap();
            if !drop_suffix.is_some_and(|d| subject.ends_with(d)) {
                let _ = bus.send((rcpt.clone(), subject));
            }
            continue;
        } else if cmd == "QUIT" {
            w.write_all(b"221 bye\r\n").await.unwrap();
            return;
        } else {
            b"250 ok\r\n"
        };
        w.write_all(reply).await.unwrap();
    }
}

async fn create(
    Json(body): Json<serde_json::Value>,
) -> (axum::http::StatusCode, Json<serde_json::Value>) {
    let local = body["local_part"].as_str().unwrap();
    (
        axum::http::StatusCode::CREATED,
        Json(serde_json::json!({"address": format!("{local}@bench.test")})),
    )
}

async fn inbox(
    ws: WebSocketUpgrade,
    Path(address): Path<String>,
    State(bus): State<Arc<Bus>>,
) -> axum::response::Response {
    // Subscribe before the upgrade completes so nothing published after the
    // client's handshake can be missed.
    let mut rx = bus.subscribe();
    ws.on_upgrade(move |mut sock| async move {
        let mut seq = 0u64;
        while let Ok((to, subject)) = rx.recv().await {
            if to != address {
                continue;
            }
            seq += 1;
            let ev = serde_json::json!({"event": "new_message", "mailbox": to, "seq": seq,
                "message_id": seq.to_string(), "from": "sender@example.com", "subject": subject,
                "received_at": "2026-11-24T20:00:00Z"});
            if sock
                .send(Message::Text(ev.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
        }
    })
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BurstArgs,
}

fn args(m: &Mock, extra: &[&str]) -> BurstArgs {
    let mut v = vec![
        "bench",
        "--smtp",
        &m.smtp,
        "--http",
        &m.http,
        "--api-key",
        "uct_x",
    ];
    v.extend_from_slice(extra);
    Cli::parse_from(v).args
}

fn resolved(m: &Mock) -> Resolved {
    Resolved {
        smtp: m.smtp.clone(),
        http: Some(m.http.clone()),
        api_key: "uct_x".to_owned(),
        server: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_is_matched_to_its_event() {
    let m = mock(None).await;
    let a = args(&m, &["-n", "4", "-m", "25", "-k", "5", "-s", "2000"]);
    let r = burst(&a, &resolved(&m)).await.unwrap();
    assert_eq!(r.sent, 100);
    assert_eq!(r.acked, 100);
    assert_eq!(r.subscribers, 5);
    assert!(r.pipelining);
    assert_eq!(r.lost, Some(0));
    assert_eq!(r.ack_to_event.as_ref().unwrap().count, 100);
    assert_eq!(r.data_to_250.count, 100);
    assert_eq!(
        (r.refused_4xx, r.refused_5xx, r.duplicate_events),
        (0, 0, 0)
    );
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_acknowledged_but_never_pushed_is_counted_lost() {
    // Message index 7 of the run: its token ends with "-7".
    let m = mock(Some("-7")).await;
    let a = args(
        &m,
        &[
            "-n",
            "2",
            "-m",
            "5",
            "-k",
            "3",
            "-s",
            "500",
            "--grace-secs",
            "1",
        ],
    );
    let r = burst(&a, &resolved(&m)).await.unwrap();
    assert_eq!(r.acked, 10);
    assert_eq!(r.lost, Some(1));
    assert_eq!(r.ack_to_event.as_ref().unwrap().count, 9);
}
