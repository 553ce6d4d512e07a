//! `/ws/inbox/{address}` through a real WebSocket client: replay then live
//! in order, resume with `since` exactly once under random interleavings,
//! slow consumers cut off with 4008 and resuming, 4004 on delete, 1001 on
//! shutdown, credentials (header and `?token=`), subscriber limits.

use super::*;
use proptest::prelude::*;

const TOKEN: &str = "test-session-token-for-realtime";

#[test]
fn replays_past_since_then_streams_every_new_message_in_order() {
    let server = server_with(|_| {});
    rt().block_on(async {
        let e = &server.engine;
        let mb = mailbox(e, "inorder", TOKEN, 1000).await;
        let addr = mb.address.to_string();
        for i in 1..=3 {
            deliver(e, &addr, message(&addr, &format!("early {i}"), "x")).await;
        }
        // since=1: the replay starts at 2.
        let mut ws = ws(&server, &addr, TOKEN, 1).await;
        assert_eq!(next_seq(&mut ws).await, 2);
        assert_eq!(next_seq(&mut ws).await, 3);
        let engine = e.clone();
        let a = addr.clone();
        let sender = tokio::spawn(async move {
            for i in 4..=40u64 {
                let seq = deliver(
                    &engine,
                    &a,
                    message(&a, &format!("live {i}"), "Your code is 123456"),
                )
                .await;
                assert_eq!(seq, i);
            }
        });
        for want in 4..=40u64 {
            match next(&mut ws).await {
                Got::Event(v) => {
                    assert_eq!(v["event"], "new_message");
                    assert_eq!(v["seq"].as_u64(), Some(want));
                    assert_eq!(v["mailbox"], addr.as_str());
                    assert_eq!(v["subject"], format!("live {want}"));
                    assert_eq!(v["message_id"], format!("{:x}-{want}", mb.id.0));
                    assert_eq!(v["codes"][0], "123456");
                    assert!(v["from"].as_str().unwrap().contains("noreply@shop.example"));
                    assert!(v["received_at"].as_str().unwrap().ends_with('Z'));
                    assert!(v["size"].as_u64().unwrap() > 0);
                    assert!(v["links"].is_array());
                    assert_eq!(v["plus_tag"], serde_json::Value::Null);
                }
                other => panic!("{other:?}"),
            }
        }
        sender.await.unwrap();
        bye(ws).await;
    });
}

#[test]
fn the_token_query_parameter_opens_the_socket_and_wrong_credentials_are_refused() {
    let server = server_with(|_| {});
    rt().block_on(async {
        let e = &server.engine;
        let mb = mailbox(e, "querytoken", TOKEN, 100).await;
        let addr = mb.address.to_string();
        deliver(e, &addr, message(&addr, "one", "x")).await;
        let base = format!("ws://{}/ws/inbox/{addr}", server.http);
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("{base}?since=0&token={TOKEN}"))
            .await
            .unwrap();
        assert_eq!(next_seq(&mut ws).await, 1);
        // No credential: 401; one that matches nothing: 401 too, the same
        // answer as on a missing mailbox.
        let (s, p) = ws_refused(&base).await;
        assert_eq!(
            (s, p["type"].as_str().unwrap()),
            (401, "urn:uncorreo:problem:authentication-required")
        );
        let (s, wrong) = ws_refused(&format!("{base}?token=not-the-token")).await;
        assert_eq!(
            (s, wrong["type"].as_str().unwrap()),
            (401, "urn:uncorreo:problem:invalid-credentials")
        );
        let missing = format!(
            "ws://{}/ws/inbox/nobody@{}?token=not-the-token",
            server.http,
            crate::support::DOMAIN
        );
        assert_eq!(ws_refused(&missing).await.1, wrong);
        // A header credential wins over the query one.
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                format!("{base}?token={TOKEN}"),
            )
            .unwrap();
        req.headers_mut()
            .insert("x-session-token", "wrong".parse().unwrap());
        assert!(tokio_tungstenite::connect_async(req).await.is_err());
    });
}

#[test]
fn a_plain_get_is_told_to_upgrade_with_a_problem() {
    let server = server_with(|_| {});
    let addr =
        crate::support::block_on(async { mailbox(&server.engine, "plain", TOKEN, 10).await })
            .address
            .to_string();
    let r = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(server.url(&format!("/ws/inbox/{addr}")))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

#[test]
fn a_slow_consumer_is_closed_with_4008_and_resumes_from_its_last_sequence() {
    let server = server_with(|c| {
        c.engine.subscriber_queue = 2;
        // This test is about the fan-out, not the disk: skip the syncs so
        // filling the socket buffers takes hundreds of deliveries, not seconds.
        c.engine.durability = uncorreo_engine::Durability::NeverUnsafeForLoadTests;
    });
    rt().block_on(async {
        let e = &server.engine;
        let mb = mailbox(e, "slow", TOKEN, 1_000_000).await;
        let addr = mb.address.to_string();
        // A client with a tiny receive buffer that does not read: the
        // server's writes stall, its queue of 2 overflows.
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(1024).unwrap();
        let stream = sock.connect(server.http).await.unwrap();
        let url = format!("ws://{}/ws/inbox/{addr}?since=0&token={TOKEN}", server.http);
        let (mut ws, _) =
            tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
                .await
                .unwrap();
        assert_eq!(e.stats().subscribers, 1);
        let mut delivered = 0u64;
        // Until the hub has cut the subscriber off (a fact, not a timing).
        while e.stats().subscribers == 1 {
            delivered = deliver(
                e,
                &addr,
                message(
                    &addr,
                    &format!("m{delivered} {}", "padding ".repeat(100)),
                    "x",
                ),
            )
            .await;
            assert!(delivered < 200_000, "never cut off");
        }
        // Now read: a contiguous prefix, then 4008 naming its end.
        let mut last = 0;
        let reason = loop {
            match next(&mut ws).await {
                Got::Event(v) => {
                    let seq = v["seq"].as_u64().unwrap();
                    assert_eq!(seq, last + 1);
                    last = seq;
                }
                Got::Close(code, reason) => {
                    assert_eq!(code, 4008);
                    break reason;
                }
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(reason, format!("lagged; resume with since={last}"));
        // The replay may have sent more than the queue held (it reads the
        // index), never more than was delivered.
        assert!(last <= delivered);
        let mut ws = ws_connect(&server, &addr, last).await;
        for want in last + 1..=delivered {
            assert_eq!(next_seq(&mut ws).await, want);
        }
        // And it continues live.
        let more = deliver(e, &addr, message(&addr, "after", "x")).await;
        assert_eq!(next_seq(&mut ws).await, more);
        let metrics = reqwest::get(format!("http://{}/metrics", server.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("uncorreo_ws_connections_total{reason=\"lagged\"} 1"),
            "{metrics}"
        );
        assert!(metrics.contains("uncorreo_subscribers_lagged_total"));
        assert!(metrics.contains("uncorreo_events_published_total"));
    });
}

async fn ws_connect(server: &crate::support::TestServer, addr: &str, since: u64) -> Ws {
    ws(server, addr, TOKEN, since).await
}

#[test]
fn deleting_the_mailbox_closes_with_4004() {
    let server = server_with(|_| {});
    rt().block_on(async {
        let e = &server.engine;
        let mb = mailbox(e, "doomed", TOKEN, 10).await;
        let addr = mb.address.to_string();
        deliver(e, &addr, message(&addr, "one", "x")).await;
        let mut ws = ws_connect(&server, &addr, 0).await;
        assert_eq!(next_seq(&mut ws).await, 1);
        e.delete_mailbox(mb.id).await.unwrap();
        match next(&mut ws).await {
            Got::Close(code, reason) => assert_eq!((code, reason.as_str()), (4004, "mailbox gone")),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn server_shutdown_closes_with_1001() {
    let server = server_with(|_| {});
    let runtime = rt();
    let (addr, mut ws) = runtime.block_on(async {
        let mb = mailbox(&server.engine, "shutdown", TOKEN, 10).await;
        let addr = mb.address.to_string();
        (addr.clone(), ws_connect(&server, &addr, 0).await)
    });
    let _ = addr;
    let stopper = std::thread::spawn(move || {
        let mut server = server;
        server.stop();
        server
    });
    runtime.block_on(async {
        match next(&mut ws).await {
            Got::Close(code, _) => assert_eq!(code, 1001),
            other => panic!("{other:?}"),
        }
    });
    drop(stopper.join().unwrap());
}

#[test]
fn pings_arrive_at_the_configured_interval() {
    let server = server_with(|c| c.realtime.ping_interval_secs = 1);
    rt().block_on(async {
        let mb = mailbox(&server.engine, "pinged", TOKEN, 10).await;
        let mut ws = ws_connect(&server, &mb.address.to_string(), 0).await;
        assert!(matches!(next(&mut ws).await, Got::Ping));
        bye(ws).await;
    });
}

#[test]
fn subscriber_limits_answer_429_per_mailbox_and_503_in_total() {
    let server = server_with(|c| {
        c.realtime.max_subscribers_per_mailbox = 1;
        c.realtime.max_subscribers = 2;
    });
    rt().block_on(async {
        let e = &server.engine;
        let a = mailbox(e, "limita", TOKEN, 10).await.address.to_string();
        let b = mailbox(e, "limitb", TOKEN, 10).await.address.to_string();
        let c = mailbox(e, "limitc", TOKEN, 10).await.address.to_string();
        let url = |addr: &str| format!("ws://{}/ws/inbox/{addr}?token={TOKEN}", server.http);
        let first = ws_connect(&server, &a, 0).await;
        let (s, p) = ws_refused(&url(&a)).await;
        assert_eq!(
            (s, p["type"].as_str().unwrap()),
            (429, "urn:uncorreo:problem:rate-limited")
        );
        assert!(p["detail"].as_str().unwrap().contains("1 live subscribers"));
        let _second = ws_connect(&server, &b, 0).await;
        let (s, p) = ws_refused(&url(&c)).await;
        assert_eq!(
            (s, p["type"].as_str().unwrap()),
            (503, "urn:uncorreo:problem:unavailable")
        );
        // Closing frees the place.
        drop(first);
        let mut freed = None;
        while freed.is_none() {
            // The server notices the close when its task reads it; until then, 429.
            match tokio_tungstenite::connect_async(url(&a)).await {
                Ok((ws, _)) => freed = Some(ws),
                Err(_) => tokio::task::yield_now().await,
            }
        }
    });
}

/// One random schedule: deliverer tasks (each its own "connection" to the
/// engine) and two WebSocket readers that drop the connection after
/// random numbers of events and reconnect with `since`.
#[derive(Debug, Clone)]
struct Schedule {
    deliverers: Vec<u8>,
    /// Per reader: events to read before each reconnect.
    cuts: [Vec<u8>; 2],
    /// Yield between deliveries.
    pace: Vec<u8>,
}

fn schedule() -> impl Strategy<Value = Schedule> {
    (
        proptest::collection::vec(1u8..15, 1..4),
        proptest::collection::vec(0u8..10, 0..5),
        proptest::collection::vec(0u8..10, 0..5),
        proptest::collection::vec(0u8..4, 1..8),
    )
        .prop_map(|(deliverers, a, b, pace)| Schedule {
            deliverers,
            cuts: [a, b],
            pace,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]
    #[test]
    fn reconnecting_with_since_sees_every_sequence_exactly_once(s in schedule()) {
        let server = super::shared_server(&SERVER);
        let case = CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt().block_on(async {
            let e = server.engine.clone();
            let mb = mailbox(&e, &format!("prop{case}"), TOKEN, 10_000).await;
            let addr = mb.address.to_string();
            let total: u64 = s.deliverers.iter().map(|&n| u64::from(n)).sum();
            let senders = spawn_paced_deliverers(&e, &addr, &s.deliverers, &s.pace);
            let mut readers = Vec::new();
            for cuts in s.cuts.clone() {
                let addr = addr.clone();
                readers.push(async move {
                    let mut seen = Vec::new();
                    let mut last = 0u64;
                    let mut cuts = cuts.into_iter();
                    loop {
                        let mut ws = ws(server, &addr, TOKEN, last).await;
                        let cut = cuts.next().map(u64::from);
                        let mut in_conn = 0;
                        while last < total && cut.is_none_or(|c| in_conn < c) {
                            let seq = next_seq(&mut ws).await;
                            seen.push(seq);
                            last = seq;
                            in_conn += 1;
                        }
                        // Disconnect abruptly (no close frame) half the time.
                        if in_conn % 2 == 0 { bye(ws).await } else { drop(ws) }
                        if last >= total {
                            return seen;
                        }
                    }
                });
            }
            let (a, b) = tokio::time::timeout(HANG, async {
                let mut it = readers.into_iter();
                let (ra, rb) = (it.next().unwrap(), it.next().unwrap());
                tokio::join!(ra, rb)
            })
            .await
            .expect("hung");
            for s in senders {
                s.await.unwrap();
            }
            let want: Vec<u64> = (1..=total).collect();
            assert_eq!(a, want);
            assert_eq!(b, want);
        });
    }
}

static SERVER: std::sync::OnceLock<crate::support::TestServer> = std::sync::OnceLock::new();
static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
