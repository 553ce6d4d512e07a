//! One stored copy per mailbox per delivery, whatever the number of plus
//! tags, and quota decided at RCPT: a recipient that cannot be stored gets
//! its `452` there, never a silent drop after the `250` of its data.

use crate::api::{Api, Auth};
use crate::support::{code, Raw, DOMAIN};

/// An API on a `free` plan whose mailboxes hold `max` messages.
fn api_with_quota(max: u32) -> (Api, Auth) {
    let api = Api::start_with(|c| {
        if let Some(free) = c.plans.0.get_mut("free") {
            free.max_messages_per_mailbox = max;
        }
    });
    let auth = Auth::Bearer(api.user("free"));
    (api, auth)
}

/// `n` recipients `local+1@` … `local+n@`, then `body`; every reply.
fn send_tagged(raw: &mut Raw, local: &str, n: usize, body: &[u8]) -> (Vec<String>, String) {
    assert_eq!(code(&raw.cmd("MAIL FROM:<sender@client.example>")), "250");
    let rcpts = (1..=n)
        .map(|i| raw.cmd(&format!("RCPT TO:<{local}+{i}@{DOMAIN}>")))
        .collect();
    assert_eq!(code(&raw.cmd("DATA")), "354");
    raw.send(body);
    raw.send(b".\r\n");
    (rcpts, raw.reply())
}

/// A message of about 1 MiB, CRLF lines.
fn one_mib_message() -> Vec<u8> {
    let mut body = b"Subject: one copy\r\n\r\n".to_vec();
    let line = [b'x'; 998];
    while body.len() < 1 << 20 {
        body.extend_from_slice(&line);
        body.extend_from_slice(b"\r\n");
    }
    body
}

#[test]
fn a_hundred_plus_tags_of_one_mailbox_store_one_copy_counted_once() {
    let (api, auth) = api_with_quota(2);
    let (address, _) = api.mailbox(&auth, serde_json::json!({"local_part": "tags"}));
    let body = one_mib_message();
    let (mut raw, _) = Raw::connect(api.server.smtp);
    assert_eq!(code(&raw.cmd("EHLO client.example")), "250");

    let (rcpts, done) = send_tagged(&mut raw, "tags", 100, &body);
    assert!(rcpts.iter().all(|r| code(r) == "250"), "{rcpts:?}");
    assert!(done.starts_with("250 2.0.0 Ok: stored as "), "{done}");
    // One id: one stored copy.
    assert!(!done.contains(','), "{done}");

    let engine = &api.server.engine;
    let mailbox = engine
        .mailbox(&uncorreo_engine::Address::parse(&address).unwrap())
        .unwrap();
    assert_eq!(mailbox.message_count, 1, "counted once against the quota");
    let listed = api.get(&format!("/api/v1/mailboxes/{address}/messages"), &auth);
    assert_eq!(listed.status, 200);
    let page = listed.json();
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{page}");
    let tags: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
    assert_eq!(messages[0]["plus_tags"], serde_json::json!(tags));
    assert_eq!(messages[0]["plus_tag"], "1");
    assert!(messages[0]["size"].as_u64().unwrap() > 1 << 20);
    // Filtering by any of its tags finds the one copy.
    for tag in ["1", "57", "100"] {
        let r = api.get(
            &format!("/api/v1/mailboxes/{address}/messages?tag={tag}"),
            &auth,
        );
        assert_eq!(r.json()["messages"].as_array().unwrap().len(), 1, "{tag}");
    }
    let none = api.get(
        &format!("/api/v1/mailboxes/{address}/messages?tag=101"),
        &auth,
    );
    assert!(none.json()["messages"].as_array().unwrap().is_empty());

    // The quota of 2 takes exactly one more such delivery...
    let (rcpts, done) = send_tagged(&mut raw, "tags", 100, &body);
    assert!(rcpts.iter().all(|r| code(r) == "250"), "{rcpts:?}");
    assert!(done.starts_with("250 "), "{done}");
    // ...and then refuses at RCPT, before any data is sent.
    assert_eq!(code(&raw.cmd("MAIL FROM:<sender@client.example>")), "250");
    let full = raw.cmd(&format!("RCPT TO:<tags+3@{DOMAIN}>"));
    assert!(full.starts_with("452 4.2.2"), "{full}");
    assert_eq!(code(&raw.cmd("QUIT")), "221");
    let mailbox = engine.mailbox_by_id(mailbox.id).unwrap();
    assert_eq!(mailbox.message_count, 2);
}

#[test]
fn a_recipient_accepted_at_rcpt_holds_its_quota_until_the_transaction_ends() {
    let (api, auth) = api_with_quota(1);
    api.mailbox(&auth, serde_json::json!({"local_part": "held"}));
    let (mut first, _) = Raw::connect(api.server.smtp);
    let (mut second, _) = Raw::connect(api.server.smtp);
    for raw in [&mut first, &mut second] {
        assert_eq!(code(&raw.cmd("EHLO client.example")), "250");
        assert_eq!(code(&raw.cmd("MAIL FROM:<sender@client.example>")), "250");
    }
    assert_eq!(
        code(&first.cmd(&format!("RCPT TO:<held+a@{DOMAIN}>"))),
        "250"
    );
    // Another tag in the same transaction shares the reserved copy.
    assert_eq!(
        code(&first.cmd(&format!("RCPT TO:<held+b@{DOMAIN}>"))),
        "250"
    );
    // The one message the mailbox has room for is held by the first
    // transaction: the second is told at RCPT, not after its data.
    let refused = second.cmd(&format!("RCPT TO:<held@{DOMAIN}>"));
    assert!(refused.starts_with("452 4.2.2"), "{refused}");
    // Given back when the first transaction ends without data.
    assert_eq!(code(&first.cmd("RSET")), "250");
    assert_eq!(
        code(&second.cmd(&format!("RCPT TO:<held@{DOMAIN}>"))),
        "250"
    );
    assert_eq!(code(&second.cmd("DATA")), "354");
    second.send(b"Subject: mine\r\n\r\nbody\r\n.\r\n");
    let done = second.reply();
    assert!(done.starts_with("250 "), "{done}");
    // Now it is really full.
    assert_eq!(code(&first.cmd("MAIL FROM:<sender@client.example>")), "250");
    let full = first.cmd(&format!("RCPT TO:<held+a@{DOMAIN}>"));
    assert!(full.starts_with("452 4.2.2"), "{full}");
}
