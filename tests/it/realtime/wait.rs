//! `/api/v1/mailboxes/{address}/wait` over real HTTP: answers at once when
//! a message past `since` exists, as soon as one is delivered otherwise,
//! waits for `count`, matches `from` / `subject` / `body`, times out with
//! `timed_out: true`, and refuses out-of-range parameters with their exact
//! limits.

use super::*;
use proptest::prelude::*;
use serde_json::Value;

const TOKEN: &str = "test-session-token-for-wait";

async fn wait(server: &crate::support::TestServer, addr: &str, query: &str) -> (u16, Value) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = tokio::time::timeout(
        HANG,
        client
            .get(format!(
                "http://{}/api/v1/mailboxes/{addr}/wait{query}",
                server.http
            ))
            .bearer_auth(TOKEN)
            .send(),
    )
    .await
    .expect("hung")
    .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

fn seqs(v: &Value) -> Vec<u64> {
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

/// Start `wait`, then (only once the wait is subscribed) run `then`.
async fn wait_then<F: std::future::Future<Output = ()>>(
    server: &crate::support::TestServer,
    addr: &str,
    query: &str,
    then: F,
) -> (u16, Value) {
    let before = server.engine.stats().subscribers;
    let w = wait(server, addr, query);
    let trigger = async {
        // The wait has subscribed when the hub counts it: a fact, not a sleep.
        while server.engine.stats().subscribers == before {
            tokio::task::yield_now().await;
        }
        then.await;
    };
    let (r, ()) = tokio::join!(w, trigger);
    r
}

#[test]
fn answers_at_once_when_a_message_past_since_exists() {
    let server = server_with(|_| {});
    rt().block_on(async {
        let e = &server.engine;
        let addr = mailbox(e, "ready", TOKEN, 100).await.address.to_string();
        deliver(e, &addr, message(&addr, "first", "x")).await;
        deliver(e, &addr, message(&addr, "second", "x")).await;
        let (s, v) = wait(&server, &addr, "?timeout=300").await;
        assert_eq!(s, 200);
        assert_eq!(seqs(&v), [1]);
        assert_eq!(v["next_since"], 1);
        assert_eq!(v["timed_out"], false);
        assert_eq!(v["messages"][0]["subject"], "first");
        let (_, v) = wait(&server, &addr, "?since=1&timeout=300").await;
        assert_eq!((seqs(&v), v["next_since"].as_u64()), (vec![2], Some(2)));
    });
}

#[test]
fn returns_as_soon_as_a_message_is_delivered() {
    let server = server_with(|_| {});
    rt().block_on(async {
        let e = &server.engine;
        let addr = mailbox(e, "later", TOKEN, 100).await.address.to_string();
        let (s, v) = wait_then(&server, &addr, "?timeout=300", async {
            deliver(e, &addr, message(&addr, "arrived", "Your code is 777111")).await;
        })
        .await;
        assert_eq!(s, 200);
        assert_eq!(seqs(&v), [1]);
        assert_eq!(v["messages"][0]["subject"], "arrived");
        assert_eq!(v["messages"][0]["codes"][0], "777111");
        assert_eq!(v["timed_out"], false);
    });
}

#[test]
fn waits_for_count_messages() {
    let server = server_with(|_| {});
    rt().block_on(async {
        let e = &server.engine;
        let addr = mailbox(e, "counted", TOKEN, 100).await.address.to_string();
        deliver(e, &addr, message(&addr, "one", "x")).await;
        let (s, v) = wait_then(&server, &addr, "?count=3&timeout=300", async {
            deliver(e, &addr, message(&addr, "two", "x")).await;
            deliver(e, &addr, message(&addr, "three", "x")).await;
            deliver(e, &addr, message(&addr, "four", "x")).await;
        })
        .await;
        assert_eq!(s, 200);
        assert_eq!(seqs(&v), [1, 2, 3]);
        assert_eq!(v["next_since"], 3);
    });
}

#[test]
fn waits_for_a_match_on_subject_from_or_body() {
    let server = server_with(|_| {});
    rt().block_on(async {
        let e = &server.engine;
        let addr = mailbox(e, "matcher", TOKEN, 100).await.address.to_string();
        deliver(e, &addr, message(&addr, "Newsletter", "nothing here")).await;
        // Subject, case-insensitive; the non-matching first message is skipped.
        let (_, v) = wait_then(
            &server,
            &addr,
            "?subject=password%20RESET&timeout=300",
            async {
                deliver(e, &addr, message(&addr, "Weekly digest", "x")).await;
                deliver(e, &addr, message(&addr, "Your Password Reset", "x")).await;
            },
        )
        .await;
        assert_eq!((seqs(&v), v["next_since"].as_u64()), (vec![3], Some(3)));
        // Body substring, parsed from the stored message.
        let (_, v) = wait_then(&server, &addr, "?body=magic-link-42&timeout=300", async {
            deliver(e, &addr, message(&addr, "a", "plain words")).await;
            deliver(e, &addr, message(&addr, "b", "click the MAGIC-LINK-42 now")).await;
        })
        .await;
        assert_eq!(seqs(&v), [5]);
        // From: header (case-insensitive) or envelope sender; past `since`.
        let (_, v) = wait(&server, &addr, "?from=NOREPLY@shop&since=4&timeout=0").await;
        assert_eq!(seqs(&v), [5]);
        let (_, v) = wait(
            &server,
            &addr,
            "?from=bounce@shop.example&since=1&count=2&timeout=0",
        )
        .await;
        assert_eq!(seqs(&v), [2, 3]);
        // Several filters must all match.
        let (_, v) = wait(&server, &addr, "?subject=digest&body=nothing&timeout=0").await;
        assert_eq!((seqs(&v).len(), v["timed_out"].as_bool()), (0, Some(true)));
    });
}

#[test]
fn times_out_with_an_empty_answer() {
    let server = server_with(|_| {});
    rt().block_on(async {
        let e = &server.engine;
        let addr = mailbox(e, "quiet", TOKEN, 100).await.address.to_string();
        deliver(e, &addr, message(&addr, "old", "x")).await;
        let (s, v) = wait(&server, &addr, "?since=1&timeout=1").await;
        assert_eq!(s, 200);
        assert_eq!(
            v,
            serde_json::json!({"messages": [], "next_since": 1, "timed_out": true, "gaps": []})
        );
        // A partial count is returned with timed_out.
        let (_, v) = wait(&server, &addr, "?count=2&timeout=1").await;
        assert_eq!(
            (seqs(&v), v["timed_out"].as_bool(), v["next_since"].as_u64()),
            (vec![1], Some(true), Some(1))
        );
        assert_eq!(
            e.stats().subscribers,
            0,
            "a finished wait leaves no subscriber"
        );
    });
}

#[test]
fn out_of_range_parameters_get_their_exact_limits() {
    let server = server_with(|c| {
        c.realtime.wait_max_timeout_secs = 300;
        c.realtime.wait_max_count = 100;
        c.realtime.wait_max_pattern_chars = 8;
    });
    rt().block_on(async {
        let addr = mailbox(&server.engine, "limits", TOKEN, 100)
            .await
            .address
            .to_string();
        for (q, detail) in [
            ("?timeout=301", "timeout must be between 0 and 300"),
            ("?count=0", "count must be between 1 and 100"),
            ("?count=101", "count must be between 1 and 100"),
            ("?subject=123456789", "subject must be at most 8 characters"),
            ("?body=123456789", "body must be at most 8 characters"),
        ] {
            let (s, v) = wait(&server, &addr, q).await;
            assert_eq!(
                (s, v["type"].as_str().unwrap()),
                (422, "urn:uncorreo:problem:invalid-request"),
                "{q}"
            );
            assert_eq!(v["detail"], detail, "{q}");
        }
        // The edges themselves are fine.
        let (s, _) = wait(&server, &addr, "?timeout=0&count=100&subject=12345678").await;
        assert_eq!(s, 200);
        let (s, v) = wait(&server, &addr, "?since=minus-one").await;
        assert_eq!(
            (s, v["type"].as_str().unwrap()),
            (400, "urn:uncorreo:problem:bad-request")
        );
    });
}

#[test]
fn a_deleted_mailbox_ends_the_wait_with_404() {
    let server = server_with(|_| {});
    rt().block_on(async {
        let e = &server.engine;
        let mb = mailbox(e, "vanishing", TOKEN, 100).await;
        let addr = mb.address.to_string();
        let (s, v) = wait_then(&server, &addr, "?timeout=300", async {
            e.delete_mailbox(mb.id).await.unwrap();
        })
        .await;
        assert_eq!(
            (s, v["type"].as_str().unwrap()),
            (404, "urn:uncorreo:problem:not-found")
        );
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]
    /// A client polling `wait?since=next_since` in a loop while several tasks
    /// deliver sees every sequence exactly once, in order.
    #[test]
    fn polling_with_next_since_sees_every_sequence_exactly_once(
        deliverers in proptest::collection::vec(1u8..12, 1..4),
        counts in proptest::collection::vec(1u8..5, 1..6),
        pace in proptest::collection::vec(0u8..4, 1..8),
    ) {
        let server = super::shared_server(&SERVER);
        let case = CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt().block_on(async {
            let e = server.engine.clone();
            let addr = mailbox(&e, &format!("waitprop{case}"), TOKEN, 10_000).await.address.to_string();
            let total: u64 = deliverers.iter().map(|&n| u64::from(n)).sum();
            let senders = spawn_paced_deliverers(&e, &addr, &deliverers, &pace);
            let mut seen: Vec<u64> = Vec::new();
            let mut since = 0u64;
            let mut round = 0usize;
            while since < total {
                let count = u64::from(counts[round % counts.len()]).min(total - since);
                round += 1;
                let (s, v) = wait(server, &addr, &format!("?since={since}&count={count}&timeout=300")).await;
                assert_eq!(s, 200);
                assert_eq!(v["timed_out"], false);
                let got = seqs(&v);
                assert_eq!(got.len() as u64, count);
                seen.extend(&got);
                since = v["next_since"].as_u64().unwrap();
            }
            for s in senders {
                s.await.unwrap();
            }
            assert_eq!(seen, (1..=total).collect::<Vec<_>>());
        });
    }
}

static SERVER: std::sync::OnceLock<crate::support::TestServer> = std::sync::OnceLock::new();
static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
