//! Load-test campaigns across hosts (SCALE.md, "Campaigns"): a campaign
//! lives on the host that made it, and its mail reaches it through any
//! host. Two appliances and one real `nats-server` on loopback
//! (`cluster_accounts::Split`).

use std::time::Duration;

use serde_json::{json, Value};

use uncorreo_cluster::partition::{partition_of, PartitionCount};

use crate::cluster::{eventually, send, PARTITIONS};
use crate::cluster_accounts::{accounts_entry, call, owned_by_a, start, Split};
use crate::support::{code, DOMAIN};

/// Makes a campaign through `host` with `key`: its id.
fn create_campaign(host: &uncorreo::Appliance, key: &str) -> String {
    let answer = call(
        host,
        reqwest::Method::POST,
        "/api/v1/campaigns",
        key,
        Some(json!({ "name": "across hosts" })),
    );
    assert_eq!(answer.status(), 201, "{:?}", answer.text());
    let body: Value = answer.json().expect("json");
    body["id"].as_str().expect("id").to_owned()
}

/// An address of campaign `id` whose partition B serves: without the
/// campaign's routing B would take it for a mailbox of its own.
fn address_b_serves(id: &str) -> String {
    let count = PartitionCount::new(PARTITIONS).expect("count");
    (0..10_000)
        .map(|i| format!("load-{i}@c-{id}.{DOMAIN}"))
        .find(|a| !owned_by_a(partition_of(a, count)))
        .expect("an address in b's partitions")
}

fn get(host: &uncorreo::Appliance, path: &str, key: &str) -> (u16, Value) {
    let answer = call(host, reqwest::Method::GET, path, key, None);
    let status = answer.status().as_u16();
    (status, answer.json().unwrap_or(Value::Null))
}

/// A campaign made through A's API takes mail sent at B: B forwards it to
/// A at RCPT and DATA (and an HTTP send at B runs on A), A stores it in the
/// campaign (its report and messages show it), B keeps nothing. A made-up campaign id and a deleted
/// campaign are `550` at B; with A stopped B answers `451` (never a
/// `250` nor a `550`), and once A is back B forwards to it again.
#[test]
fn campaign_mail_sent_at_b_reaches_its_home_a_and_waits_while_a_is_down() {
    let split = Split::start();
    let (_, key) = split.user_on(&split.a);
    let id = create_campaign(&split.a, &key);
    let home = accounts_entry(&split.nats, &format!("campaign.{id}")).expect("home record");
    let home: Value = serde_json::from_slice(&home.1).expect("json");
    assert_eq!(home["node"], "a", "{home}");

    let rcpt = address_b_serves(&id);
    let (rcpt_reply, end) = send(split.b.smtp_addr, &rcpt, "campaign mail through b");
    assert_eq!(code(&rcpt_reply), "250", "{rcpt_reply}");
    let end = end.expect("data");
    assert_eq!(code(&end), "250", "{end}");

    // HTTP send at B, with the campaign owner's key: run on A, its home.
    let sent = crate::cluster_accounts::http()
        .post(format!(
            "http://{}/api/v1/mailboxes/{rcpt}/messages",
            split.b.http_addr
        ))
        .bearer_auth(&key)
        .header("content-type", "message/rfc822")
        .body("Subject: over http\r\n\r\nhi\r\n")
        .send()
        .expect("send");
    assert_eq!(sent.status(), 201, "{:?}", sent.text());

    let (status, report) = get(&split.a, &format!("/api/v1/campaigns/{id}/report"), &key);
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accepted"], 2, "{report}");
    let (status, page) = get(
        &split.a,
        &format!("/api/v1/campaigns/{id}/messages?recipient={rcpt}"),
        &key,
    );
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(2), "{page}");
    // B keeps no campaign of its own.
    let (status, _) = get(&split.b, &format!("/api/v1/campaigns/{id}"), &key);
    assert_eq!(status, 404);
    // A campaign address is no mailbox, on any host.
    for host in [&split.a, &split.b] {
        let (status, body) = get(host, &format!("/api/v1/mailboxes/{rcpt}"), &key);
        assert_eq!(status, 404, "{body}");
    }

    // No host made this one: refused at once, not a retry.
    let made_up = if id == "abcdef" { "abcdf0" } else { "abcdef" };
    let (refused, _) = send(
        split.b.smtp_addr,
        &format!("load-1@c-{made_up}.{DOMAIN}"),
        "nobody's",
    );
    assert_eq!(code(&refused), "550", "{refused}");

    // A second campaign, then deleted: its record goes, and B refuses it.
    let gone = create_campaign(&split.a, &key);
    let deleted = call(
        &split.a,
        reqwest::Method::DELETE,
        &format!("/api/v1/campaigns/{gone}"),
        &key,
        None,
    );
    assert_eq!(deleted.status(), 204);
    assert!(accounts_entry(&split.nats, &format!("campaign.{gone}")).is_none());
    let (refused, _) = send(
        split.b.smtp_addr,
        &format!("load-1@c-{gone}.{DOMAIN}"),
        "deleted",
    );
    assert_eq!(code(&refused), "550", "{refused}");

    let Split {
        nats,
        _secret: secret,
        data_a,
        data_b: _data_b,
        a,
        b,
    } = split;
    a.shutdown();
    let (rcpt_reply, end) = send(b.smtp_addr, &rcpt, "while a is down");
    assert_eq!(code(&rcpt_reply), "451", "{rcpt_reply}");
    assert!(end.is_none());

    // A back with its disk: the campaign takes mail through B again.
    let a = start(
        data_a.path(),
        crate::cluster_accounts::split_member(&nats, secret.path(), "a"),
        |_| {},
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            let (_, end) = send(b.smtp_addr, &rcpt, "a is back");
            end.is_some_and(|end| code(&end) == "250")
        }),
        "b forwards to a again once a is back"
    );
    let (_, report) = get(&a, &format!("/api/v1/campaigns/{id}/report"), &key);
    assert_eq!(report["accepted"], 3, "{report}");
    b.shutdown();
    a.shutdown();
}
