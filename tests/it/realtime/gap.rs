//! A stored message damaged on disk between a stop and a restart: every
//! listing and replay reports its sequence as a gap instead of coming back
//! short, through the real binary's sockets: the REST listing (`gaps`),
//! a resuming WebSocket and SSE client (a `gap` event in its place, then
//! the later messages) and the long-poll `wait` (`gaps`).

use serde_json::Value;

use super::*;
use crate::support::TestServer;

const TOKEN: &str = "test-session-token-for-gaps";

/// Unique in the log: where it first appears is the third message's
/// metadata (listing summary), stored before its raw bytes.
const MARKER: &str = "Zq3marker";

/// Five messages; the third one's metadata flipped on disk while stopped;
/// restarted on the same data directory. Returns the mailbox address.
fn server_with_a_corrupt_third_message() -> (TestServer, String) {
    let mut server = server_with(|_| {});
    let addr = rt().block_on(async {
        let e = &server.engine;
        let addr = mailbox(e, "gaps", TOKEN, 1000).await.address.to_string();
        for i in 1..=5u64 {
            let subject = if i == 3 {
                MARKER.to_owned()
            } else {
                format!("message {i}")
            };
            assert_eq!(deliver(e, &addr, message(&addr, &subject, "x")).await, i);
        }
        addr
    });
    server.stop();
    flip_first(server.data.path(), MARKER.as_bytes());
    let mut config = crate::support::test_config(server.data.path());
    no_rate_limits(&mut config);
    let appliance = uncorreo::Appliance::start(config).expect("restarts");
    server.smtp = appliance.smtp_addr;
    server.http = appliance.http_addr;
    server.engine = appliance.engine.clone();
    server.appliance = Some(appliance);
    (server, addr)
}

async fn get(server: &TestServer, path: &str) -> Value {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = tokio::time::timeout(HANG, client.get(server.url(path)).bearer_auth(TOKEN).send())
        .await
        .expect("hung")
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

fn seqs(page: &Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

#[test]
fn rest_listing_reports_the_gap_and_its_page_fills_past_it() {
    let (server, addr) = server_with_a_corrupt_third_message();
    rt().block_on(async {
        let all = get(&server, &format!("/api/v1/mailboxes/{addr}/messages")).await;
        assert_eq!(seqs(&all), vec![1, 2, 4, 5], "{all}");
        assert_eq!(all["gaps"], serde_json::json!([3]), "{all}");
        assert_eq!(all["next_since"], 5);
        assert_eq!(all["has_more"], false);

        // A page of two past seq 2 still holds two messages, and says what it skipped.
        let page = get(
            &server,
            &format!("/api/v1/mailboxes/{addr}/messages?since=2&limit=2"),
        )
        .await;
        assert_eq!(seqs(&page), vec![4, 5], "{page}");
        assert_eq!(page["gaps"], serde_json::json!([3]));
        assert_eq!(page["next_since"], 5);
        // Pages that do not reach the gap do not name it.
        let first = get(
            &server,
            &format!("/api/v1/mailboxes/{addr}/messages?limit=2"),
        )
        .await;
        assert_eq!(seqs(&first), vec![1, 2]);
        assert_eq!(first["gaps"], serde_json::json!([]));
        assert_eq!(first["has_more"], true);

        let wait = get(
            &server,
            &format!("/api/v1/mailboxes/{addr}/wait?since=2&timeout=0"),
        )
        .await;
        assert_eq!(seqs(&wait), vec![4], "{wait}");
        assert_eq!(wait["gaps"], serde_json::json!([3]));
        assert_eq!(wait["next_since"], 4);
    });
}

#[test]
fn websocket_resuming_before_the_gap_gets_a_gap_event_then_the_later_messages() {
    let (server, addr) = server_with_a_corrupt_third_message();
    rt().block_on(async {
        let mut ws = ws(&server, &addr, TOKEN, 1).await;
        assert_eq!(next_seq(&mut ws).await, 2);
        match next(&mut ws).await {
            Got::Event(v) => {
                assert_eq!(v["event"], "gap", "{v}");
                assert_eq!(v["seq"], 3, "{v}");
                assert_eq!(v["mailbox"], addr.as_str(), "{v}");
            }
            other => panic!("expected the gap, got {other:?}"),
        }
        assert_eq!(next_seq(&mut ws).await, 4);
        assert_eq!(next_seq(&mut ws).await, 5);
        // And live mail goes on after it.
        deliver(&server.engine, &addr, message(&addr, "live", "x")).await;
        match next(&mut ws).await {
            Got::Event(v) => assert_eq!(
                (v["event"].as_str(), v["seq"].as_u64()),
                (Some("new_message"), Some(6))
            ),
            other => panic!("{other:?}"),
        }
        bye(ws).await;
    });
}

#[test]
fn sse_resuming_before_the_gap_gets_a_gap_event_with_its_id_then_the_later_messages() {
    let (server, addr) = server_with_a_corrupt_third_message();
    rt().block_on(async {
        let url = server.url(&format!("/api/v1/mailboxes/{addr}/events?since=2"));
        let mut sse = Sse::open(&url, TOKEN, None).await.unwrap();
        let ev = sse.next().await.expect("stream ended");
        assert_eq!((ev.event.as_str(), ev.id.as_deref()), ("gap", Some("3")));
        let v: Value = serde_json::from_str(&ev.data).unwrap();
        assert_eq!(v["event"], "gap");
        assert_eq!(v["seq"], 3);
        assert_eq!(sse.next_seq().await, 4);
        assert_eq!(sse.next_seq().await, 5);
    });
}
