//! The Mailpit-compatible API across hosts (SCALE.md, "Mailpit"): two
//! appliances and one real `nats-server` on loopback, `a` owning every
//! partition. A Mailpit client pointed at `b` works for a mailbox `a`
//! keeps: with the mailbox's session token (its prefix names the
//! partition, so the whole request goes to `a` in one hop) and with an API
//! key (message-id routes go to the owner of the id's partition); with `a`
//! down, `b` answers `503` with `Retry-After` in Mailpit's plain text.
//! With one user's mailboxes on both hosts (`Split`), an API key's routes
//! that mean every message (`info`, `tags`, `latest`, read-all, delete-all,
//! delete by search) cover both, and are `503` while either is down.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use reqwest::blocking::Response;
use reqwest::Method;
use serde_json::{json, Value};
use uncorreo::Appliance;

use crate::cluster::{eventually, http, mailbox_on, stored_ids, Pair};
use crate::cluster_accounts::{
    create_mailbox, create_random_mailbox, local_part, owned_by_a, Split,
};
use crate::support::{code, Raw};

pub(crate) fn basic(password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("ci:{password}"));
    format!("Basic {encoded}")
}

/// A Mailpit request at `host` with `password` as the Basic password.
fn mailpit(
    host: &Appliance,
    method: Method,
    path: &str,
    password: &str,
    body: Option<Value>,
) -> Response {
    let mut request = http()
        .request(method, format!("http://{}/mailpit{path}", host.http_addr))
        .header("authorization", basic(password));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().expect("mailpit request")
}

fn json_of(answer: Response) -> Value {
    assert_eq!(answer.status(), 200);
    answer.json().expect("json")
}

fn ok(answer: Response) {
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().expect("text"), "ok");
}

/// The IDs and subjects a Mailpit listing holds, newest first.
fn subjects(listing: &Value) -> Vec<(String, String)> {
    listing["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["ID"].as_str().expect("ID").to_owned(),
                m["Subject"].as_str().expect("Subject").to_owned(),
            )
        })
        .collect()
}

/// Sends one message with `subject` at `smtp`; its stored id.
pub(crate) fn mail(smtp: SocketAddr, rcpt: &str, subject: &str) -> String {
    let (mut c, greeting) = Raw::connect(smtp);
    assert_eq!(code(&greeting), "220");
    assert_eq!(code(&c.cmd("EHLO client.test")), "250");
    assert_eq!(code(&c.cmd("MAIL FROM:<sender@client.test>")), "250");
    assert_eq!(code(&c.cmd(&format!("RCPT TO:<{rcpt}>"))), "250");
    assert_eq!(code(&c.cmd("DATA")), "354");
    c.send(format!("Subject: {subject}\r\n\r\nbody of {subject}\r\n.\r\n").as_bytes());
    let end = c.reply();
    assert!(end.starts_with("250"), "{end}");
    c.cmd("QUIT");
    let ids = stored_ids(&end);
    assert_eq!(ids.len(), 1, "{end}");
    ids[0].clone()
}

/// A user made with `uncorreo admin` on `a`'s operator socket: its key.
fn user_key(pair: &Pair) -> String {
    crate::cluster_accounts::new_user(pair.data_a.path()).1
}

fn assert_unavailable(answer: Response) {
    assert_eq!(answer.status(), 503);
    assert_eq!(
        answer
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(answer.text().expect("text").contains("unavailable"));
}

#[test]
fn a_mailpit_client_on_b_runs_its_flow_on_a_mailbox_a_owns_with_the_session_token() {
    let pair = Pair::start();
    // Created through b, kept by a: the token names the partition.
    let (address, token) = mailbox_on(&pair.b);
    assert!(token.starts_with("ust_"), "{token}");
    let first = mail(pair.b.smtp_addr, &address, "first hello");
    let second = mail(pair.b.smtp_addr, &address, "second code 123456");
    let b = &pair.b;

    let listing = json_of(mailpit(b, Method::GET, "/api/v1/messages", &token, None));
    assert_eq!(
        subjects(&listing),
        vec![
            (second.clone(), "second code 123456".to_owned()),
            (first.clone(), "first hello".to_owned())
        ]
    );
    assert_eq!(listing["total"], 2);
    assert_eq!(listing["unread"], 2);

    let found = json_of(mailpit(
        b,
        Method::GET,
        "/api/v1/search?query=subject:second",
        &token,
        None,
    ));
    assert_eq!(
        subjects(&found),
        vec![(second.clone(), "second code 123456".to_owned())]
    );

    let message = json_of(mailpit(
        b,
        Method::GET,
        &format!("/api/v1/message/{first}"),
        &token,
        None,
    ));
    assert_eq!(message["Subject"], "first hello");
    assert!(message["Text"]
        .as_str()
        .expect("Text")
        .contains("body of first hello"));
    let raw = mailpit(
        b,
        Method::GET,
        &format!("/api/v1/message/{first}/raw"),
        &token,
        None,
    );
    assert_eq!(raw.status(), 200);
    assert!(raw.text().expect("raw").contains("Subject: first hello"));
    let headers = json_of(mailpit(
        b,
        Method::GET,
        &format!("/api/v1/message/{first}/headers"),
        &token,
        None,
    ));
    assert_eq!(headers["Subject"], json!(["first hello"]));
    let latest = json_of(mailpit(
        b,
        Method::GET,
        "/api/v1/message/latest",
        &token,
        None,
    ));
    assert_eq!(latest["ID"], second);

    // Opening a message marked it read (on a, where the marks live); mark
    // the other one read and then both unread again.
    ok(mailpit(
        b,
        Method::PUT,
        "/api/v1/messages",
        &token,
        Some(json!({"IDs": [second], "Read": true})),
    ));
    assert_eq!(
        json_of(mailpit(b, Method::GET, "/api/v1/messages", &token, None))["unread"],
        0
    );
    ok(mailpit(
        b,
        Method::PUT,
        "/api/v1/messages",
        &token,
        Some(json!({"Read": false})),
    ));
    assert_eq!(
        json_of(mailpit(b, Method::GET, "/api/v1/messages", &token, None))["unread"],
        2
    );

    ok(mailpit(
        b,
        Method::DELETE,
        "/api/v1/messages",
        &token,
        Some(json!({"IDs": [first]})),
    ));
    let listing = json_of(mailpit(b, Method::GET, "/api/v1/messages", &token, None));
    assert_eq!(
        subjects(&listing),
        vec![(second.clone(), "second code 123456".to_owned())]
    );
    // Delete-all of the token's one mailbox.
    ok(mailpit(b, Method::DELETE, "/api/v1/messages", &token, None));
    assert_eq!(
        json_of(mailpit(b, Method::GET, "/api/v1/messages", &token, None))["total"],
        0
    );
    // Seen from a, the same mailbox, now empty; b never held it.
    assert_eq!(
        json_of(mailpit(
            pair.a(),
            Method::GET,
            "/api/v1/messages",
            &token,
            None
        ))["total"],
        0
    );
    assert_eq!(pair.b.engine.stats().mailboxes, 0, "b stored nothing");

    // A wrong token with a valid-looking prefix is checked by a: 401.
    let last = if token.ends_with('A') { "B" } else { "A" };
    let forged = format!("{}{last}", &token[..token.len() - 1]);
    assert_eq!(
        mailpit(b, Method::GET, "/api/v1/messages", &forged, None).status(),
        401
    );
}

#[test]
fn an_api_key_on_b_reads_marks_tags_and_deletes_messages_a_owns_by_id() {
    let pair = Pair::start();
    let key = user_key(&pair);
    let address = create_random_mailbox(&pair.b, &key);
    let first = mail(pair.b.smtp_addr, &address, "keyed one");
    let second = mail(pair.b.smtp_addr, &address, "keyed two");
    let b = &pair.b;

    let message = json_of(mailpit(
        b,
        Method::GET,
        &format!("/api/v1/message/{first}"),
        &key,
        None,
    ));
    assert_eq!(message["Subject"], "keyed one");
    let raw = mailpit(
        b,
        Method::GET,
        &format!("/api/v1/message/{first}/raw"),
        &key,
        None,
    );
    assert!(raw.text().expect("raw").contains("body of keyed one"));
    let html = mailpit(b, Method::GET, &format!("/view/{second}.txt"), &key, None);
    assert_eq!(html.status(), 200);
    assert!(html.text().expect("text").contains("body of keyed two"));

    ok(mailpit(
        b,
        Method::PUT,
        "/api/v1/messages",
        &key,
        Some(json!({"IDs": [second], "Read": true})),
    ));
    ok(mailpit(
        b,
        Method::PUT,
        "/api/v1/tags",
        &key,
        Some(json!({"IDs": [first, second], "Tags": ["ci"]})),
    ));
    // The marks are a's: its own listing shows them.
    let on_a = json_of(mailpit(
        pair.a(),
        Method::GET,
        "/api/v1/messages",
        &key,
        None,
    ));
    assert_eq!(on_a["unread"], 0, "{on_a}");
    assert_eq!(on_a["tags"], json!(["ci"]));

    ok(mailpit(
        b,
        Method::DELETE,
        "/api/v1/messages",
        &key,
        Some(json!({"IDs": [first]})),
    ));
    let on_a = json_of(mailpit(
        pair.a(),
        Method::GET,
        "/api/v1/messages",
        &key,
        None,
    ));
    assert_eq!(
        subjects(&on_a),
        vec![(second.clone(), "keyed two".to_owned())]
    );
    assert_eq!(
        mailpit(
            b,
            Method::GET,
            &format!("/api/v1/message/{first}"),
            &key,
            None
        )
        .status(),
        404
    );
    // Another user's key reaches a and is told not found there.
    let stranger = user_key(&pair);
    assert_eq!(
        mailpit(
            b,
            Method::GET,
            &format!("/api/v1/message/{second}"),
            &stranger,
            None
        )
        .status(),
        404
    );
    assert_eq!(pair.b.engine.stats().mailboxes, 0, "b stored nothing");
}

#[test]
fn mailpit_on_b_answers_503_while_the_owner_is_down_and_works_when_it_returns() {
    let mut pair = Pair::start();
    let key = user_key(&pair);
    let (address, token) = mailbox_on(&pair.b);
    let id = mail(pair.b.smtp_addr, &address, "kept by a");
    let by_id = format!("/api/v1/message/{id}");

    pair.stop_a();
    let b = &pair.b;
    assert_unavailable(mailpit(b, Method::GET, "/api/v1/messages", &token, None));
    assert_unavailable(mailpit(b, Method::GET, &by_id, &token, None));
    assert_unavailable(mailpit(b, Method::GET, &by_id, &key, None));
    assert_unavailable(mailpit(
        b,
        Method::DELETE,
        "/api/v1/messages",
        &key,
        Some(json!({"IDs": [id]})),
    ));

    pair.restart_a();
    let b = &pair.b;
    assert!(
        eventually(Duration::from_secs(30), || mailpit(
            b,
            Method::GET,
            "/api/v1/messages",
            &token,
            None
        )
        .status()
            == 200),
        "b never reached the restarted a"
    );
    let message = json_of(mailpit(b, Method::GET, &by_id, &token, None));
    assert_eq!(message["Subject"], "kept by a");
}

#[test]
fn an_api_keys_ids_on_both_hosts_go_each_to_its_owner() {
    // a homes the lower half of the partitions, b the upper half.
    let split = Split::start();
    let (_, key) = split.user_on(&split.b);
    let on_a = create_mailbox(&split.b, &key, &local_part("pa", owned_by_a));
    let on_b = create_mailbox(&split.b, &key, &local_part("pb", |p| !owned_by_a(p)));
    let id_a = mail(split.b.smtp_addr, &on_a, "kept by a");
    let id_b = mail(split.a.smtp_addr, &on_b, "kept by b");

    // Either host opens either message: the id names its partition.
    for host in [&split.a, &split.b] {
        for (id, subject) in [(&id_a, "kept by a"), (&id_b, "kept by b")] {
            let message = json_of(mailpit(
                host,
                Method::GET,
                &format!("/api/v1/message/{id}"),
                &key,
                None,
            ));
            assert_eq!(message["Subject"], subject);
        }
    }
    // One request with IDs of both hosts: each owner gets its own share.
    ok(mailpit(
        &split.b,
        Method::PUT,
        "/api/v1/messages",
        &key,
        Some(json!({"IDs": [id_a, id_b], "Read": false})),
    ));
    ok(mailpit(
        &split.a,
        Method::PUT,
        "/api/v1/tags",
        &key,
        Some(json!({"IDs": [id_a, id_b], "Tags": ["both"]})),
    ));
    for host in [&split.a, &split.b] {
        // Either host lists both (an API key's list gathers from every
        // home), with the marks each owner keeps.
        let listing = json_of(mailpit(host, Method::GET, "/api/v1/messages", &key, None));
        assert_eq!(listing["total"], 2, "{listing}");
        assert_eq!(listing["unread"], 2, "{listing}");
        assert_eq!(listing["tags"], json!(["both"]), "{listing}");
    }
    ok(mailpit(
        &split.a,
        Method::DELETE,
        "/api/v1/messages",
        &key,
        Some(json!({"IDs": [id_a, id_b]})),
    ));
    for host in [&split.a, &split.b] {
        for id in [&id_a, &id_b] {
            let gone = mailpit(
                host,
                Method::GET,
                &format!("/api/v1/message/{id}"),
                &key,
                None,
            );
            assert_eq!(gone.status(), 404);
        }
        assert_eq!(
            json_of(mailpit(host, Method::GET, "/api/v1/messages", &key, None))["total"],
            0
        );
    }
}

#[test]
fn the_owner_runs_a_request_named_by_partition_only_if_it_serves_that_partition() {
    use uncorreo_cluster::hop::HopSecret;
    use uncorreo_cluster::partition::Partition;
    use uncorreo_hop::wire::{frame, HttpEnvelope, HTTP_PATH};

    let split = Split::start();
    let (_, key) = split.user_on(&split.a);
    let hop = split.a.hop_addr().expect("a has a hop");
    let secret = HopSecret::new(crate::cluster::SECRET.as_bytes().to_vec()).expect("secret");
    let status = |partition: u16| {
        let envelope = HttpEnvelope {
            method: "GET".to_owned(),
            path: "/mailpit/api/v1/messages".to_owned(),
            headers: vec![("authorization".to_owned(), basic(&key))],
            // An address of a's: the partition, when given, wins.
            address: format!("{}@{}", local_part("x", owned_by_a), crate::support::DOMAIN),
            partition: Some(partition),
            node: "a".to_owned(),
            client: "127.0.0.1".parse().expect("ip"),
        };
        let body = frame(&envelope, &[]);
        let signed = secret.sign("POST", HTTP_PATH, crate::cluster::now(), &body);
        crate::cluster::hop_request(hop, HTTP_PATH, Some(&signed), &body)
    };
    let mine = (0..crate::cluster::PARTITIONS)
        .find(|&p| owned_by_a(Partition(p)))
        .expect("a partition of a's");
    let theirs = (0..crate::cluster::PARTITIONS)
        .find(|&p| !owned_by_a(Partition(p)))
        .expect("a partition of b's");
    assert_eq!(status(mine), 200);
    assert_eq!(status(theirs), 409, "a does not serve b's partition");
    assert_eq!(status(crate::cluster::PARTITIONS), 422, "no such partition");

    // A share of IDs named by a partition a serves, with an ID of b's: the
    // hop admits the partition named, a's Mailpit layer each partition of
    // the IDs, and refuses the share (`503`) before any of it is written.
    let id_of = |partition: u16| {
        let mailbox = (u64::from(partition) << uncorreo_engine::MAILBOX_ID_PREFIX_SHIFT) | 1;
        format!("{mailbox:x}-1")
    };
    let write = |ids: Vec<String>| {
        let envelope = HttpEnvelope {
            method: "PUT".to_owned(),
            path: "/mailpit/api/v1/messages".to_owned(),
            headers: vec![
                ("authorization".to_owned(), basic(&key)),
                ("content-type".to_owned(), "application/json".to_owned()),
            ],
            address: String::new(),
            partition: Some(mine),
            node: "a".to_owned(),
            client: "127.0.0.1".parse().expect("ip"),
        };
        let body = frame(
            &envelope,
            &serde_json::to_vec(&json!({"IDs": ids, "Read": true})).expect("json"),
        );
        let signed = secret.sign("POST", HTTP_PATH, crate::cluster::now(), &body);
        crate::cluster::hop_exchange(hop, HTTP_PATH, Some(&signed), &body)
    };
    // a's own (missing) message: its handler's `404`.
    let answer = write(vec![id_of(mine)]);
    assert!(answer.contains(r#""status":404"#), "{answer}");
    let answer = write(vec![id_of(mine), id_of(theirs)]);
    assert!(answer.contains(r#""status":503"#), "{answer}");
}

#[test]
fn the_npm_mailpit_api_client_on_b_runs_its_flow_on_mailboxes_a_keeps() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mailpit");
    assert!(
        dir.join("node_modules/mailpit-api").is_dir(),
        "tests/mailpit/node_modules is missing: run .ci/deps (npm ci in tests/mailpit)"
    );
    let pair = Pair::start();
    let (address, token) = mailbox_on(&pair.b);
    let key = user_key(&pair);
    let keyed = create_random_mailbox(&pair.b, &key);
    let key_message = mail(pair.b.smtp_addr, &keyed, "for the key");
    let out = std::process::Command::new("node")
        .arg("cluster.mjs")
        .current_dir(&dir)
        .env(
            "MAILPIT_BASE",
            format!("http://{}/mailpit", pair.b.http_addr),
        )
        .env("SMTP_PORT", pair.b.smtp_addr.port().to_string())
        .env("TOKEN", &token)
        .env("BOX", &address)
        .env("KEY", &key)
        .env("KEY_MESSAGE", &key_message)
        .env("KEY_BOX", &keyed)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "flow failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert_eq!(pair.b.engine.stats().mailboxes, 0, "b stored nothing");
}

/// The `Subject`s of an API key's Mailpit listing at `host`, newest first.
fn listed_subjects(host: &Appliance, key: &str) -> Vec<String> {
    let listing = json_of(mailpit(host, Method::GET, "/api/v1/messages", key, None));
    subjects(&listing).into_iter().map(|(_, s)| s).collect()
}

/// `GET /api/v1/info` of an API key at `host`.
fn info(host: &Appliance, key: &str) -> Value {
    json_of(mailpit(host, Method::GET, "/api/v1/info", key, None))
}

/// One user's mailboxes on both hosts (a homes the lower half of the
/// partitions, b the upper half): the routes of an API key at b that read
/// or change every message without naming one cover the messages a keeps.
#[test]
fn an_api_keys_routes_for_every_message_at_b_cover_the_mail_a_keeps() {
    let split = Split::start();
    let (_, key) = split.user_on(&split.b);
    let on_a = create_mailbox(&split.b, &key, &local_part("ea", owned_by_a));
    let on_b = create_mailbox(&split.b, &key, &local_part("eb", |p| !owned_by_a(p)));
    let keep_a = mail(split.b.smtp_addr, &on_a, "keep one");
    let drop_b = mail(split.b.smtp_addr, &on_b, "drop two");
    let drop_a = mail(split.b.smtp_addr, &on_a, "drop three");
    let b = &split.b;
    for (ids, tag) in [(vec![&keep_a], "red"), (vec![&drop_b], "blue")] {
        ok(mailpit(
            b,
            Method::PUT,
            "/api/v1/tags",
            &key,
            Some(json!({"IDs": ids, "Tags": [tag]})),
        ));
    }

    let counts = info(b, &key);
    assert_eq!(counts["Messages"], 3, "{counts}");
    assert_eq!(counts["Unread"], 3, "{counts}");
    assert_eq!(counts["Tags"], json!({"blue": 1, "red": 1}), "{counts}");
    let tags = json_of(mailpit(b, Method::GET, "/api/v1/tags", &key, None));
    assert_eq!(tags, json!(["blue", "red"]));

    // The newest is a's, whichever host answers; opening it marks it read
    // where a keeps it.
    for path in ["/api/v1/message/latest/raw", "/view/latest.txt"] {
        let answer = mailpit(b, Method::GET, path, &key, None);
        assert_eq!(answer.status(), 200, "{path}");
        assert!(answer.text().expect("text").contains("body of drop three"));
    }
    let latest = json_of(mailpit(
        b,
        Method::GET,
        "/api/v1/message/latest",
        &key,
        None,
    ));
    assert_eq!(latest["ID"], drop_a.as_str());
    assert_eq!(info(&split.a, &key)["Unread"], 2);

    // Read-all and unread-all at b mark a's messages too.
    for (read, unread) in [(true, 0), (false, 3)] {
        ok(mailpit(
            b,
            Method::PUT,
            "/api/v1/messages",
            &key,
            Some(json!({"Read": read})),
        ));
        for host in [&split.a, &split.b] {
            assert_eq!(info(host, &key)["Unread"], unread, "read {read}");
        }
    }

    // A delete by search at b deletes the matches a keeps, and only those.
    ok(mailpit(
        b,
        Method::DELETE,
        "/api/v1/search?query=drop",
        &key,
        None,
    ));
    assert_eq!(listed_subjects(&split.a, &key), vec!["keep one"]);
    assert_eq!(
        mailpit(
            &split.a,
            Method::GET,
            &format!("/api/v1/message/{drop_a}"),
            &key,
            None
        )
        .status(),
        404
    );

    // Delete-all at b empties a too.
    mail(split.a.smtp_addr, &on_b, "four on b");
    assert_eq!(listed_subjects(b, &key), vec!["four on b", "keep one"]);
    ok(mailpit(b, Method::DELETE, "/api/v1/messages", &key, None));
    for host in [&split.a, &split.b] {
        assert_eq!(info(host, &key)["Messages"], 0);
        assert!(listed_subjects(host, &key).is_empty());
        assert_eq!(
            mailpit(host, Method::GET, "/api/v1/message/latest", &key, None).status(),
            404
        );
    }
}

/// With a down, each route of an API key at b that reads or changes every
/// message answers `503`: never counts, tags or a "latest" without a's
/// mail, and never a write done on b's share only.
#[test]
fn with_a_down_every_route_for_every_message_at_b_is_503_and_writes_nothing() {
    let split = Split::start();
    let (_, key) = split.user_on(&split.b);
    let on_a = create_mailbox(&split.b, &key, &local_part("da", owned_by_a));
    let on_b = create_mailbox(&split.b, &key, &local_part("db", |p| !owned_by_a(p)));
    mail(split.b.smtp_addr, &on_a, "on a");
    let kept = mail(split.b.smtp_addr, &on_b, "on b");
    let Split {
        nats: _nats,
        _secret,
        data_a: _data_a,
        data_b: _data_b,
        a,
        b,
    } = split;
    a.shutdown();
    for (method, path, body) in [
        (Method::GET, "/api/v1/info", None),
        (Method::GET, "/api/v1/tags", None),
        (Method::GET, "/api/v1/message/latest", None),
        (Method::GET, "/api/v1/message/latest/raw", None),
        (Method::PUT, "/api/v1/messages", Some(json!({"Read": true}))),
        (Method::DELETE, "/api/v1/search?query=on", None),
        (Method::DELETE, "/api/v1/messages", None),
    ] {
        let answer = mailpit(&b, method.clone(), path, &key, body);
        assert_eq!(answer.status(), 503, "{method} {path}");
        assert_unavailable(answer);
    }
    // b's own message is still there, unread.
    let raw = mailpit(
        &b,
        Method::GET,
        &format!("/api/v1/message/{kept}/raw"),
        &key,
        None,
    );
    assert_eq!(raw.status(), 200);
    let summary = json_of(mailpit(
        &b,
        Method::GET,
        &format!("/api/v1/message/{kept}"),
        &key,
        None,
    ));
    assert_eq!(summary["Subject"], "on b");
    b.shutdown();
}

/// One message per page, and no rate limit in the way.
fn one_per_page(config: &mut uncorreo::Config) {
    config.limits.max_page = 1;
    config.limits.default_page = 1;
    config.plans.0.insert(
        "free".into(),
        uncorreo_api::Plan {
            max_mailboxes: 4,
            max_messages_per_mailbox: 200,
            max_ttl_minutes: 60,
            requests_per_minute: 1_000_000,
        },
    );
}

/// A delete-all at b that needs more rounds than its bound stops with a
/// `503` that says so (never a silent partial `ok`), keeps what it did,
/// and a repeat goes on.
#[test]
fn a_delete_all_past_its_rounds_says_so_and_a_repeat_goes_on() {
    use uncorreo_api::mailpit::sweep::MAX_ROUNDS;

    let split = Split::start_with(one_per_page);
    let (_, key) = split.user_on(&split.b);
    let on_a = create_mailbox(&split.b, &key, &local_part("ra", owned_by_a));
    let more = 3;
    for n in 0..MAX_ROUNDS + more {
        mail(split.b.smtp_addr, &on_a, &format!("round {n}"));
    }
    let b = &split.b;
    let answer = mailpit(b, Method::DELETE, "/api/v1/messages", &key, None);
    assert_eq!(answer.status(), 503);
    assert_eq!(answer.headers()["retry-after"], "1");
    let text = answer.text().expect("text");
    assert!(
        text.contains(&format!("stopped after {MAX_ROUNDS} rounds")),
        "{text}"
    );
    // Each round deleted its page (one message).
    assert_eq!(info(b, &key)["Messages"], more);
    ok(mailpit(b, Method::DELETE, "/api/v1/messages", &key, None));
    assert_eq!(info(&split.a, &key)["Messages"], 0);
}
