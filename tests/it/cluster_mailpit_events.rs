//! Mailpit's events WebSocket (`/mailpit/api/events`) and a session
//! token's mailbox list across hosts (SCALE.md, "Real time"), on two
//! appliances and one real `nats-server` on loopback: a socket opened at
//! any host gets a frame for every message committed afterwards to any
//! mailbox of its instance, wherever it lives, and outlives the absence of
//! one mailbox's owner.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uncorreo::Appliance;
use uncorreo_cluster::partition::Partition;

use uncorreo_cluster::testing::NatsServer;

use crate::cluster::{
    eventually, hop_member, http, mailbox_on, secret_file, served, start as start_host,
    start_tweaked, Pair, PARTITIONS,
};
use crate::cluster_accounts::{create_mailbox, local_part, owned_by_a, start, Split};
use crate::cluster_mailpit::{basic, mail};
use crate::realtime::{Ws, HANG};

fn owned_by_b(partition: Partition) -> bool {
    !owned_by_a(partition)
}

/// The events socket at `host` with `password` as the Basic password.
async fn events_at(host: &Appliance, password: &str) -> Ws {
    let url = format!("ws://{}/mailpit/api/events", host.http_addr);
    let mut request = url.into_client_request().expect("request");
    request
        .headers_mut()
        .insert("authorization", basic(password).parse().expect("header"));
    let (ws, answer) = tokio::time::timeout(HANG, tokio_tungstenite::connect_async(request))
        .await
        .expect("the handshake hung")
        .expect("connects");
    assert_eq!(answer.status().as_u16(), 101);
    ws
}

/// The next frame's `Data`: (ID, Subject, Mailbox). Panics when the socket
/// ends or nothing arrives within `HANG`.
async fn next_new(ws: &mut Ws) -> (String, String, String) {
    loop {
        let got = tokio::time::timeout(HANG, ws.next())
            .await
            .expect("no frame: hung");
        match got {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).expect("json frame");
                assert_eq!(frame["Type"], "new", "{frame}");
                let field = |name: &str| frame["Data"][name].as_str().unwrap_or("").to_owned();
                return (field("ID"), field("Subject"), field("Mailbox"));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("the socket ended: {other:?}"),
        }
    }
}

#[test]
fn a_mailpit_events_socket_at_b_with_a_key_gets_frames_for_mailboxes_on_a_and_on_b() {
    let split = Split::start();
    let (_, key) = split.user_on(&split.a);
    let on_a = create_mailbox(&split.b, &key, &local_part("eva", owned_by_a));
    let on_b = create_mailbox(&split.a, &key, &local_part("evb", owned_by_b));
    // Committed before the socket opens: Mailpit sends no backlog.
    mail(split.a.smtp_addr, &on_a, "before the socket");
    let runtime = crate::realtime::rt();
    runtime.block_on(async {
        let mut ws = events_at(&split.b, &key).await;
        let id = mail(split.b.smtp_addr, &on_a, "kept by a");
        assert_eq!(
            next_new(&mut ws).await,
            (id, "kept by a".to_owned(), on_a.clone())
        );
        let id = mail(split.a.smtp_addr, &on_b, "kept by b");
        assert_eq!(
            next_new(&mut ws).await,
            (id, "kept by b".to_owned(), on_b.clone())
        );
        let id = mail(split.a.smtp_addr, &on_a, "kept by a again");
        assert_eq!(
            next_new(&mut ws).await,
            (id, "kept by a again".to_owned(), on_a.clone())
        );
    });
    // The same socket at a follows b's mailbox from there.
    runtime.block_on(async {
        let mut ws = events_at(&split.a, &key).await;
        let id = mail(split.a.smtp_addr, &on_b, "b's, seen at a");
        assert_eq!(
            next_new(&mut ws).await,
            (id, "b's, seen at a".to_owned(), on_b.clone())
        );
    });
    // A user whose every mailbox another host keeps: the socket at b
    // follows them with none of its own.
    let (_, only_remote) = split.user_on(&split.b);
    let far = create_mailbox(&split.b, &only_remote, &local_part("far", owned_by_a));
    runtime.block_on(async {
        let mut ws = events_at(&split.b, &only_remote).await;
        let id = mail(split.b.smtp_addr, &far, "only on a");
        assert_eq!(
            next_new(&mut ws).await,
            (id, "only on a".to_owned(), far.clone())
        );
    });
}

#[test]
fn a_mailpit_events_socket_at_b_with_the_token_of_a_mailbox_a_keeps_gets_its_frames() {
    let pair = Pair::start();
    let (address, token) = mailbox_on(&pair.b);
    let (other, _) = mailbox_on(&pair.b);
    let id = crate::realtime::rt().block_on(async {
        let mut ws = events_at(&pair.b, &token).await;
        // Another mailbox's message first: never on this socket.
        mail(pair.a().smtp_addr, &other, "not this instance");
        let id = mail(pair.a().smtp_addr, &address, "sent at a");
        assert_eq!(
            next_new(&mut ws).await,
            (id, "sent at a".to_owned(), address.clone())
        );
        let id = mail(pair.b.smtp_addr, &address, "sent at b");
        assert_eq!(
            next_new(&mut ws).await,
            (id.clone(), "sent at b".to_owned(), address.clone())
        );
        id
    });
    // The owner's summary route answers over the hop only.
    for host in [&pair.b, pair.a()] {
        let answer = http()
            .get(format!(
                "http://{}/mailpit/internal/summary/{id}",
                host.http_addr
            ))
            .header("authorization", basic(&token))
            .send()
            .expect("request");
        assert_eq!(answer.status(), 404);
    }
    // A token that opens nothing is refused at b as at a.
    let forged = format!("{}x", &token[..token.len() - 1]);
    let answer = http()
        .get(format!("http://{}/mailpit/api/events", pair.b.http_addr))
        .header("authorization", basic(&forged))
        .send()
        .expect("request");
    assert_eq!(answer.status(), 401);
}

/// The status of a refused events socket at `host` with `password`.
async fn events_refused(host: &Appliance, password: &str) -> (u16, Option<String>) {
    let url = format!("ws://{}/mailpit/api/events", host.http_addr);
    let mut request = url.into_client_request().expect("request");
    request
        .headers_mut()
        .insert("authorization", basic(password).parse().expect("header"));
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => panic!("the socket opened"),
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => (
            answer.status().as_u16(),
            answer
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_mailpit_events_socket_at_b_counts_in_bs_remote_waiter_limits() {
    let nats = NatsServer::start();
    let secret = secret_file();
    let (data_a, data_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let a = start_host(data_a.path(), hop_member(&nats, "a", secret.path())).expect("a joins");
    let b = start_tweaked(data_b.path(), hop_member(&nats, "b", secret.path()), |c| {
        c.realtime.max_subscribers_per_mailbox = 1;
    })
    .expect("b joins");
    let (address, token) = mailbox_on(&b);
    let inbox = format!("ws://{}/ws/inbox/{address}?token={token}", b.http_addr);
    crate::realtime::rt().block_on(async {
        // The socket holds the mailbox's one place on b ...
        let held = events_at(&b, &token).await;
        let (status, _) = crate::realtime::ws_refused(&inbox).await;
        assert_eq!(status, 429);
        drop(held);
        // ... until it closes; then a waiter of ours holds it, and the
        // socket is refused with when to retry.
        let mut ours = None;
        for _ in 0..100 {
            if let Ok((ws, _)) = tokio_tungstenite::connect_async(&inbox).await {
                ours = Some(ws);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ours.is_some(), "the socket's place was never freed");
        assert_eq!(
            events_refused(&b, &token).await,
            (429, Some("5".to_owned()))
        );
    });
    b.shutdown();
    a.shutdown();
}

#[test]
fn a_session_tokens_mailbox_list_at_b_shows_the_mailbox_a_keeps() {
    let pair = Pair::start();
    let (address, token) = mailbox_on(&pair.b);
    for host in [&pair.b, pair.a()] {
        let answer = http()
            .get(format!("http://{}/api/v1/mailboxes", host.http_addr))
            .bearer_auth(&token)
            .send()
            .expect("list");
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().expect("json");
        let listed: Vec<&str> = body["mailboxes"]
            .as_array()
            .expect("mailboxes")
            .iter()
            .filter_map(|m| m["address"].as_str())
            .collect();
        assert_eq!(listed, vec![address.as_str()], "{body}");
    }
}

#[test]
fn a_mailpit_events_socket_outlives_an_owner_that_stops_and_gets_its_mail_when_it_returns() {
    let split = Split::start();
    let (_, key) = split.user_on(&split.a);
    let on_a = create_mailbox(&split.b, &key, &local_part("gone", owned_by_a));
    let on_b = create_mailbox(&split.b, &key, &local_part("stay", owned_by_b));
    let runtime = crate::realtime::rt();
    let mut ws = runtime.block_on(events_at(&split.b, &key));
    let first = mail(split.a.smtp_addr, &on_a, "before the stop");
    assert_eq!(runtime.block_on(next_new(&mut ws)).0, first);

    let Split {
        nats,
        _secret: secret,
        data_a,
        data_b: _data_b,
        a,
        b,
    } = split;
    a.shutdown();
    // b's follower of a's mailbox saw its owner go (its subscription to
    // a's notices is gone); the socket still carries b's mailbox.
    let events = b.cluster_events().expect("b has events");
    assert!(
        eventually(Duration::from_secs(30), || events.subscriptions() == 0),
        "b still follows a"
    );
    let id = mail(b.smtp_addr, &on_b, "while a is away");
    assert_eq!(
        runtime.block_on(next_new(&mut ws)),
        (id, "while a is away".to_owned(), on_b.clone())
    );

    let a = start(
        data_a.path(),
        crate::cluster_accounts::split_member(&nats, secret.path(), "a"),
        |_| {},
    );
    assert!(
        eventually(Duration::from_secs(30), || served(&a)
            == usize::from(PARTITIONS / 2)),
        "a serves {}",
        served(&a)
    );
    // Committed on a once it is back, whether or not b follows it yet:
    // the frame comes, once, and after it the next one.
    let back = mail(a.smtp_addr, &on_a, "after the return");
    assert_eq!(
        runtime.block_on(next_new(&mut ws)),
        (back, "after the return".to_owned(), on_a.clone())
    );
    let next = mail(a.smtp_addr, &on_b, "and b's again");
    assert_eq!(
        runtime.block_on(next_new(&mut ws)),
        (next, "and b's again".to_owned(), on_b.clone())
    );
    drop(ws);
    a.shutdown();
    b.shutdown();
}
