//! Listings that span hosts (SCALE.md, "Reads"): `GET /api/v1/mailboxes`
//! with an API key, and the Mailpit API's message list and search of an
//! API-key instance, gather the user's mailboxes from every home, on two
//! appliances and one real `nats-server` on loopback. A home that does not
//! answer makes the answer `503`, never a partial list; a copy a handover
//! left behind is not listed twice.

use std::time::Duration;

use serde_json::{json, Value};
use uncorreo::Appliance;
use uncorreo_cluster::partition::Partition;

use crate::cluster::{eventually, hop_member, secret_file, served, PARTITIONS};
use crate::cluster_accounts::{call, create_mailbox, http, local_part, owned_by_a, start, Split};
use crate::support::test_config;

fn owned_by_b(partition: Partition) -> bool {
    !owned_by_a(partition)
}

/// One answer of `GET /api/v1/mailboxes{query}` at `host` with `key`.
fn list(host: &Appliance, key: &str, query: &str) -> reqwest::blocking::Response {
    call(
        host,
        reqwest::Method::GET,
        &format!("/api/v1/mailboxes{query}"),
        key,
        None,
    )
}

/// The addresses of a `200` listing, with its `next_after`.
fn addresses(answer: reqwest::blocking::Response) -> (Vec<String>, Option<String>) {
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().expect("json");
    let listed = crate::api::created_and_address(&body);
    let mut ordered = listed.clone();
    ordered.sort();
    assert_eq!(listed, ordered, "ordered by (created_at, address)");
    (
        listed.into_iter().map(|(_, address)| address).collect(),
        body["next_after"].as_str().map(str::to_owned),
    )
}

/// Every page of `limit` through `host`, following `next_after`.
fn pages(host: &Appliance, key: &str, limit: usize) -> Vec<String> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..20 {
        let query = match &after {
            Some(cursor) => format!("?limit={limit}&after={cursor}"),
            None => format!("?limit={limit}"),
        };
        let (page, next) = addresses(list(host, key, &query));
        assert!(page.len() <= limit, "{page:?}");
        all.extend(page);
        match next {
            Some(next) => after = Some(next),
            None => return all,
        }
    }
    panic!("more pages than mailboxes: {all:?}");
}

/// A user's mailboxes on A and on B are listed through either host, in
/// order, paged with `after` across the host boundary with no duplicate
/// and no gap; another user's never.
#[test]
fn a_keys_mailboxes_on_both_hosts_are_listed_and_paged_through_either_host() {
    let split = Split::start();
    let (_, mine) = split.user_on(&split.a);
    let (_, theirs) = split.user_on(&split.b);
    let mut expected = Vec::new();
    // Created alternately on A's and B's partitions, through both hosts.
    for (n, host) in [&split.a, &split.b, &split.b, &split.a]
        .into_iter()
        .enumerate()
    {
        let wanted: fn(Partition) -> bool = if n % 2 == 0 { owned_by_a } else { owned_by_b };
        expected.push(create_mailbox(
            host,
            &mine,
            &local_part(&format!("mine{n}x"), wanted),
        ));
    }
    let other_a = create_mailbox(&split.b, &theirs, &local_part("theirsa", owned_by_a));
    let other_b = create_mailbox(&split.a, &theirs, &local_part("theirsb", owned_by_b));

    for host in [&split.a, &split.b] {
        let (listed, next) = addresses(list(host, &mine, ""));
        assert_eq!(next, None);
        let mut sorted = listed.clone();
        sorted.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(
            sorted, want,
            "every one of mine, once, through {}",
            host.http_addr
        );
        for limit in [1, 3] {
            assert_eq!(pages(host, &mine, limit), listed, "limit {limit}");
        }
        let (listed, _) = addresses(list(host, &theirs, ""));
        let mut listed = listed;
        listed.sort();
        let mut want = vec![other_a.clone(), other_b.clone()];
        want.sort();
        assert_eq!(listed, want);
        // The page bounds are checked before any host is asked.
        assert_eq!(list(host, &mine, "?limit=0").status(), 422);
        assert_eq!(list(host, &mine, "?limit=100000").status(), 422);
        assert_eq!(list(host, &mine, "?after=not%20a%20cursor").status(), 422);
        assert_eq!(list(host, &mine, "?after=A").status(), 422);
    }
}

/// A home that stopped must answer for its mailboxes: until it is back,
/// the listing is `503` with `Retry-After` (problem+json) on the other
/// host, never the part it could read; then the whole list again.
#[test]
fn a_home_that_stopped_makes_the_listing_503_until_it_returns() {
    let split = Split::start();
    let (_, key) = split.user_on(&split.a);
    let here = create_mailbox(&split.a, &key, &local_part("stopa", owned_by_a));
    let there = create_mailbox(&split.a, &key, &local_part("stopb", owned_by_b));
    let (listed, _) = addresses(list(&split.a, &key, ""));
    assert_eq!(listed.len(), 2, "{listed:?}");

    let Split {
        nats,
        _secret: secret,
        data_a: _data_a,
        data_b,
        a,
        b,
    } = split;
    b.shutdown();
    for query in ["", "?limit=1"] {
        let answer = list(&a, &key, query);
        assert_eq!(answer.status(), 503, "{query}");
        assert!(answer.headers().contains_key("retry-after"));
        assert_eq!(answer.headers()["content-type"], "application/problem+json");
    }
    let mailpit = http()
        .get(format!("http://{}/mailpit/api/v1/messages", a.http_addr))
        .basic_auth("ci", Some(&key))
        .send()
        .expect("mailpit");
    assert_eq!(mailpit.status(), 503);
    assert!(mailpit.headers().contains_key("retry-after"));

    let b = start(
        data_b.path(),
        crate::cluster_accounts::split_member(&nats, secret.path(), "b"),
        |_| {},
    );
    assert!(
        eventually(Duration::from_secs(30), || list(&a, &key, "").status()
            == 200),
        "a lists again once b is back"
    );
    for host in [&a, &b] {
        let (mut listed, _) = addresses(list(host, &key, ""));
        listed.sort();
        let mut want = vec![here.clone(), there.clone()];
        want.sort();
        assert_eq!(listed, want);
    }
    b.shutdown();
    a.shutdown();
}

/// A leaves: every partition moves to B, and A keeps the copies it handed
/// over (they expire with their mailboxes). A listing through A or B then
/// shows each mailbox once, and the Mailpit API each message once: a
/// member lists only what it serves.
#[test]
fn a_copy_left_by_a_handover_is_not_listed_twice() {
    let nats = uncorreo_cluster::testing::NatsServer::start();
    let secret = secret_file();
    let (data_a, data_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let start_one = |data: &std::path::Path, node| {
        let mut config = test_config(data);
        config.cluster = Some(hop_member(&nats, node, secret.path()));
        crate::realtime::no_rate_limits(&mut config);
        Appliance::start(config).expect("joins")
    };
    let a = start_one(data_a.path(), "a");
    let b = start_one(data_b.path(), "b");
    assert_eq!(served(&a), usize::from(PARTITIONS));
    let answer = uncorreo_api::operator::call(
        &a.admin_socket,
        &uncorreo_api::operator::Envelope {
            operator: "test".to_owned(),
            request: serde_json::from_value(json!({ "command": "user-create", "plan": "free" }))
                .expect("request"),
        },
    )
    .expect("the operator socket answers");
    let uncorreo_api::operator::Answer::Ok { result } = answer else {
        panic!("{answer:?}");
    };
    let key = result["key"].as_str().expect("key").to_owned();
    let mut want: Vec<String> = ["moved0", "moved1", "moved2"]
        .iter()
        .map(|local| create_mailbox(&a, &key, local))
        .collect();
    want.sort();

    let (_, end) = crate::cluster::send(a.smtp_addr, &want[0], "moved with its mailbox");
    assert!(end.expect("data sent").starts_with("250"));

    let left = crate::cluster_handover::leave_over_socket(&a, Some("b"));
    assert!(
        matches!(left, uncorreo_api::operator::Answer::Ok { .. }),
        "{left:?}"
    );
    assert!(
        eventually(Duration::from_secs(30), || served(&b)
            == usize::from(PARTITIONS)),
        "b serves {}",
        served(&b)
    );
    for host in [&a, &b] {
        let mut listed = Vec::new();
        assert!(
            eventually(Duration::from_secs(10), || {
                let answer = list(host, &key, "");
                if answer.status() != 200 {
                    return false;
                }
                listed = addresses(answer).0;
                true
            }),
            "a 200 through {}",
            host.http_addr
        );
        listed.sort();
        assert_eq!(listed, want, "each once through {}", host.http_addr);
        // The Mailpit API's list gathers the same way.
        let mailpit: Value = http()
            .get(format!("http://{}/mailpit/api/v1/messages", host.http_addr))
            .basic_auth("ci", Some(&key))
            .send()
            .expect("mailpit")
            .json()
            .expect("json");
        assert_eq!(mailpit["total"], 1, "{mailpit}");
        assert_eq!(mailpit["messages"].as_array().map(Vec::len), Some(1));
    }
    b.shutdown();
    a.shutdown();
}

/// The Mailpit API with an API key at B: its message list and search show
/// mail of a mailbox A owns next to B's own, newest first.
#[test]
fn the_mailpit_api_with_a_key_at_b_lists_and_searches_mail_a_owns() {
    let split = Split::start();
    let (_, key) = split.user_on(&split.b);
    let (_, theirs) = split.user_on(&split.b);
    let on_a = create_mailbox(&split.b, &key, &local_part("pita", owned_by_a));
    let on_b = create_mailbox(&split.b, &key, &local_part("pitb", owned_by_b));
    let foreign = create_mailbox(&split.b, &theirs, &local_part("pitx", owned_by_a));
    for (address, word) in [(&on_b, "older"), (&on_a, "newer"), (&foreign, "newer")] {
        let (_, end) =
            crate::cluster::send(split.b.smtp_addr, address, &format!("across {word} zq7"));
        assert!(end.expect("data sent").starts_with("250"));
    }
    let get = |path: &str| -> Value {
        let answer = http()
            .get(format!("http://{}/mailpit{path}", split.b.http_addr))
            .basic_auth("ci", Some(&key))
            .send()
            .expect("mailpit");
        assert_eq!(answer.status(), 200, "{path}");
        answer.json().expect("json")
    };
    let mailboxes = |page: &Value| -> Vec<String> {
        let messages = page["messages"].as_array().expect("messages");
        let created: Vec<&str> = messages
            .iter()
            .map(|m| m["Created"].as_str().expect("Created"))
            .collect();
        assert!(
            created.windows(2).all(|w| w[0] >= w[1]),
            "newest first: {created:?}"
        );
        messages
            .iter()
            .map(|m| m["Mailbox"].as_str().expect("Mailbox").to_owned())
            .collect()
    };
    let listed = get("/api/v1/messages");
    assert_eq!(listed["total"], 2, "{listed}");
    assert_eq!(listed["messages_count"], 2, "{listed}");
    let all = mailboxes(&listed);
    let mut sorted = all.clone();
    sorted.sort();
    let mut want = vec![on_a.clone(), on_b.clone()];
    want.sort();
    assert_eq!(sorted, want, "{listed}");
    let second = get("/api/v1/messages?start=1&limit=1");
    assert_eq!(mailboxes(&second), vec![all[1].clone()]);
    assert_eq!(second["start"], 1);
    let found = get("/api/v1/search?query=newer");
    assert_eq!(mailboxes(&found), vec![on_a.clone()], "{found}");
    assert_eq!(found["messages_count"], 1);
}
