//! `/api/v1/mailboxes/{address}/events` over real HTTP: replay then live
//! with `id:` = sequence, resume with `Last-Event-ID` (winning over
//! `?since=`) exactly once under random interleavings, the `lagged` end for
//! a slow reader, `mailbox_gone`, shutdown, and the subscriber limit.

use super::*;
use proptest::prelude::*;

const TOKEN: &str = "test-session-token-for-sse";

fn url(server: &crate::support::TestServer, addr: &str, query: &str) -> String {
    format!(
        "http://{}/api/v1/mailboxes/{addr}/events{query}",
        server.http
    )
}

/// Raw HTTP over a socket with a tiny receive buffer, subscribed to `addr`'s
/// events and not read by anyone until the test says so.
async fn unread_stream(server: &crate::support::TestServer, addr: &str) -> TcpStream {
    use tokio::io::AsyncWriteExt;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(1024).unwrap();
    let mut stream = sock.connect(server.http).await.unwrap();
    let req = format!(
        "GET /api/v1/mailboxes/{addr}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    while server.engine.stats().subscribers == 0 {
        tokio::task::yield_now().await;
    }
    stream
}

/// Deliver the `n`th message of about 1 KiB, to fill socket buffers.
async fn deliver_padded(e: &uncorreo_engine::Engine, addr: &str, n: u64) -> u64 {
    let subject = format!("m{n} {}", "padding ".repeat(100));
    deliver(e, addr, message(addr, &subject, "x")).await
}

#[test]
fn replays_then_streams_live_with_the_sequence_as_event_id() {
    let server = server_with(|_| {});
    rt().block_on(async {
        let e = &server.engine;
        let addr = mailbox(e, "sse", TOKEN, 1000).await.address.to_string();
        for i in 1..=3 {
            deliver(e, &addr, message(&addr, &format!("early {i}"), "x")).await;
        }
        let mut sse = Sse::open(&url(&server, &addr, "?since=1"), TOKEN, None)
            .await
            .unwrap();
        assert_eq!(sse.next_seq().await, 2);
        assert_eq!(sse.next_seq().await, 3);
        let (engine, a) = (e.clone(), addr.clone());
        let sender = tokio::spawn(async move {
            for i in 4..=30 {
                deliver(
                    &engine,
                    &a,
                    message(&a, &format!("live {i}"), "Your code is 654321"),
                )
                .await;
            }
        });
        for want in 4..=30u64 {
            let ev = sse.next().await.unwrap();
            let v: serde_json::Value = serde_json::from_str(&ev.data).unwrap();
            assert_eq!(
                (ev.event.as_str(), ev.id.as_deref()),
                ("new_message", Some(want.to_string().as_str()))
            );
            assert_eq!(v["seq"].as_u64(), Some(want));
            assert_eq!(v["event"], "new_message");
            assert_eq!(v["mailbox"], addr.as_str());
            assert_eq!(v["subject"], format!("live {want}"));
            assert_eq!(v["codes"][0], "654321");
        }
        sender.await.unwrap();
    });
}

#[test]
fn last_event_id_resumes_and_wins_over_since() {
    let server = server_with(|_| {});
    rt().block_on(async {
        let e = &server.engine;
        let addr = mailbox(e, "resume", TOKEN, 1000).await.address.to_string();
        for i in 1..=5 {
            deliver(e, &addr, message(&addr, &format!("m{i}"), "x")).await;
        }
        let mut sse = Sse::open(&url(&server, &addr, "?since=0"), TOKEN, Some(3))
            .await
            .unwrap();
        assert_eq!(sse.next_seq().await, 4);
        assert_eq!(sse.next_seq().await, 5);
        // A malformed Last-Event-ID is a clear 400.
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = client
            .get(url(&server, &addr, ""))
            .bearer_auth(TOKEN)
            .header("last-event-id", "four")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        // The query token works for EventSource clients.
        let r = client
            .get(url(&server, &addr, &format!("?token={TOKEN}&since=4")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    });
}

#[test]
fn a_slow_reader_gets_a_lagged_event_naming_where_to_resume() {
    let server = server_with(|c| {
        c.engine.subscriber_queue = 2;
        // This test is about the fan-out, not the disk: skip the syncs so
        // filling the socket buffers takes hundreds of deliveries, not seconds.
        c.engine.durability = uncorreo_engine::Durability::NeverUnsafeForLoadTests;
        // A small kernel buffer fills after a few events, and lag (not the
        // write timeout, which is about a reader that stops for good) must
        // be what ends this stream, however loaded the machine: so the
        // write timeout is out of reach here.
        c.http.send_buffer_bytes = 4096;
        c.http.write_timeout_secs = 3600;
    });
    rt().block_on(async {
        let e = &server.engine;
        let addr = mailbox(e, "sseslow", TOKEN, 1_000_000)
            .await
            .address
            .to_string();
        let mut stream = unread_stream(&server, &addr).await;
        use tokio::io::AsyncReadExt;
        let mut delivered = 0;
        while e.stats().subscribers == 1 {
            delivered = deliver_padded(e, &addr, delivered).await;
            assert!(delivered < 200_000, "never cut off");
        }
        let mut body = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = tokio::time::timeout(HANG, stream.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
            if body
                .windows(12)
                .any(|w| w == b"event: lagge" || w == b"event:lagged")
            {
                // Read on to the end of that event.
                if body.ends_with(b"\n\n") || body.windows(5).any(|w| w == b"\r\n0\r\n") {
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&body);
        let mut last = 0u64;
        for line in text.lines() {
            if let Some(id) = line
                .strip_prefix("id: ")
                .or_else(|| line.strip_prefix("id:"))
            {
                let id: u64 = id.trim().parse().unwrap();
                assert_eq!(id, last + 1, "ids must be contiguous");
                last = id;
            }
        }
        let lagged = text
            .lines()
            .skip_while(|l| !l.contains("lagged") || !l.starts_with("event"))
            .find_map(|l| l.strip_prefix("data:"))
            .expect("a lagged event");
        let v: serde_json::Value = serde_json::from_str(lagged.trim()).unwrap();
        assert_eq!(v["event"], "lagged");
        assert_eq!(v["resume_since"].as_u64(), Some(last));
        // The replay may have sent more than the queue held (it reads the
        // index), never more than was delivered.
        assert!(last <= delivered);
        // Resume with Last-Event-ID.
        let mut sse = Sse::open(&url(&server, &addr, ""), TOKEN, Some(last))
            .await
            .unwrap();
        for want in last + 1..=delivered {
            assert_eq!(sse.next_seq().await, want);
        }
    });
}

#[test]
fn a_reader_that_stops_reading_is_cut_off_by_the_write_timeout() {
    let server = server_with(|c| {
        // Lag would end the stream first with a small queue; this is about
        // the socket, so the queue is deep and only the write can stall.
        c.engine.subscriber_queue = 1_000_000;
        c.engine.durability = uncorreo_engine::Durability::NeverUnsafeForLoadTests;
        c.http.send_buffer_bytes = 4096;
        c.http.write_timeout_secs = 1;
    });
    rt().block_on(async {
        let e = &server.engine;
        let addr = mailbox(e, "ssestuck", TOKEN, 1_000_000)
            .await
            .address
            .to_string();
        let mut stream = unread_stream(&server, &addr).await;
        use tokio::io::AsyncReadExt;
        // Never read: the server's writes stall, and after the write
        // timeout it drops the connection, and with it the subscriber.
        let mut delivered = 0;
        let deadline = tokio::time::Instant::now() + HANG;
        while e.stats().subscribers == 1 {
            assert!(tokio::time::Instant::now() < deadline, "never cut off");
            if delivered < 10_000 {
                delivered = deliver_padded(e, &addr, delivered).await;
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // What was buffered arrives, then the end: no `lagged`, the stream was cut.
        let mut body = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            match tokio::time::timeout(HANG, stream.read(&mut buf))
                .await
                .expect("the server closes")
            {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "{}",
            &text[..text.len().min(200)]
        );
        assert!(!text.contains("event: lagged"));
        let metrics = reqwest::get(format!("http://{}/metrics", server.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics
                .lines()
                .any(|l| l
                    .starts_with("uncorreo_http_connections_cut_total{reason=\"write_timeout\"}")),
            "no write_timeout cut counted"
        );
    });
}

#[test]
fn deleting_the_mailbox_ends_the_stream_with_mailbox_gone() {
    let server = server_with(|_| {});
    rt().block_on(async {
        let e = &server.engine;
        let mb = mailbox(e, "ssegone", TOKEN, 10).await;
        let addr = mb.address.to_string();
        let mut sse = Sse::open(&url(&server, &addr, ""), TOKEN, None)
            .await
            .unwrap();
        deliver(e, &addr, message(&addr, "one", "x")).await;
        assert_eq!(sse.next_seq().await, 1);
        e.delete_mailbox(mb.id).await.unwrap();
        let ev = sse.next().await.unwrap();
        assert_eq!(ev.event, "mailbox_gone");
        assert!(sse.next().await.is_none());
    });
}

#[test]
fn shutdown_ends_the_stream_and_the_server_stops() {
    let server = server_with(|_| {});
    let runtime = rt();
    let mut sse = runtime.block_on(async {
        let addr = mailbox(&server.engine, "ssedown", TOKEN, 10)
            .await
            .address
            .to_string();
        Sse::open(&url(&server, &addr, ""), TOKEN, None)
            .await
            .unwrap()
    });
    // Without the stream ending, the HTTP server's graceful drain would wait forever.
    let stopper = std::thread::spawn(move || {
        let mut server = server;
        server.stop();
    });
    runtime.block_on(async {
        let ev = sse.next().await.unwrap();
        assert_eq!(ev.event, "shutdown");
        assert!(sse.next().await.is_none());
    });
    stopper.join().unwrap();
}

#[test]
fn per_mailbox_subscriber_limit_is_429() {
    let server = server_with(|c| c.realtime.max_subscribers_per_mailbox = 1);
    rt().block_on(async {
        let addr = mailbox(&server.engine, "sselimit", TOKEN, 10)
            .await
            .address
            .to_string();
        let _first = Sse::open(&url(&server, &addr, ""), TOKEN, None)
            .await
            .unwrap();
        let (status, p) = Sse::open(&url(&server, &addr, ""), TOKEN, None)
            .await
            .err()
            .unwrap();
        assert_eq!(
            (status, p["type"].as_str().unwrap()),
            (429, "urn:uncorreo:problem:rate-limited")
        );
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]
    /// Random deliveries from several tasks while a reader drops the stream
    /// after random numbers of events and resumes with Last-Event-ID.
    #[test]
    fn resuming_with_last_event_id_sees_every_sequence_exactly_once(
        deliverers in proptest::collection::vec(1u8..15, 1..4),
        cuts in proptest::collection::vec(0u8..10, 0..5),
        pace in proptest::collection::vec(0u8..4, 1..8),
    ) {
        let server = super::shared_server(&SERVER);
        let case = CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt().block_on(async {
            let e = server.engine.clone();
            let addr = mailbox(&e, &format!("sseprop{case}"), TOKEN, 10_000).await.address.to_string();
            let total: u64 = deliverers.iter().map(|&n| u64::from(n)).sum();
            let senders = spawn_paced_deliverers(&e, &addr, &deliverers, &pace);
            let seen = tokio::time::timeout(HANG, async {
                let mut seen = Vec::new();
                let mut last = 0u64;
                let mut cuts = cuts.into_iter();
                loop {
                    let resume = (last > 0).then_some(last);
                    let mut sse = Sse::open(&url(server, &addr, "?since=0"), TOKEN, resume).await.unwrap();
                    let cut = cuts.next().map(u64::from);
                    let mut n = 0;
                    while last < total && cut.is_none_or(|c| n < c) {
                        last = sse.next_seq().await;
                        seen.push(last);
                        n += 1;
                    }
                    if last >= total {
                        return seen;
                    }
                }
            })
            .await
            .expect("hung");
            for s in senders {
                s.await.unwrap();
            }
            assert_eq!(seen, (1..=total).collect::<Vec<_>>());
        });
    }
}

static SERVER: std::sync::OnceLock<crate::support::TestServer> = std::sync::OnceLock::new();
static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
