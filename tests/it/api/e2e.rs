//! End to end through real sockets: an anonymous mailbox created over HTTP
//! receives a multipart message (over SMTP, or through `Engine::deliver`),
//! which is then listed, read parsed, read raw, its attachments downloaded
//! byte for byte, deleted, and gone.

use super::{attachment_binary, signup_message, smtp_send, Api, Auth, ATTACHMENT_CSV};
use serde_json::json;

/// Everything after DATA is checked the same way for both ingest paths.
fn read_back_and_delete(api: &Api, address: &str, token: &str, sent: &[u8]) {
    let auth = Auth::Bearer(token.to_owned());
    let base = format!("/api/v1/mailboxes/{address}");

    let list = api.get(&format!("{base}/messages"), &auth);
    assert_eq!(list.status, 200);
    let list = list.json();
    assert_eq!(list["messages"].as_array().unwrap().len(), 1, "{list}");
    let s = &list["messages"][0];
    assert_eq!(s["seq"], 1);
    assert_eq!(s["subject"], "Your verification code");
    assert_eq!(s["from"], "Shop <noreply@shop.example>");
    assert_eq!(s["attachments"], 2);
    assert_eq!(s["codes"], json!(["482913"]));
    assert_eq!(
        s["links"],
        json!(["https://shop.example/verify?token=abc123"])
    );
    assert_eq!(list["next_since"], 1);
    assert_eq!(list["has_more"], false);
    let id = s["id"].as_str().unwrap().to_owned();

    let m = api.get(&format!("{base}/messages/{id}"), &auth);
    assert_eq!(m.status, 200);
    let m = m.json();
    assert_eq!(m["subject"], "Your verification code");
    assert_eq!(m["from"][0]["address"], "noreply@shop.example");
    assert_eq!(m["to"][0]["address"], address);
    assert_eq!(m["to"][0]["name"], "Ana");
    assert_eq!(m["cc"][0]["address"], "audit@shop.example");
    assert_eq!(m["date"], "2026-11-24T10:00:00Z");
    assert!(m["text"].as_str().unwrap().contains("Your code is 482913."));
    assert!(m["html"].as_str().unwrap().contains("<b>482913</b>"));
    assert_eq!(m["codes"], json!(["482913"]));
    assert_eq!(
        m["links"],
        json!(["https://shop.example/verify?token=abc123"])
    );
    // The full classified list and the codes as written (issue #21).
    assert_eq!(
        m["link_details"],
        json!([{"url": "https://shop.example/verify?token=abc123", "kind": "verify", "text": "Confirm"}])
    );
    assert_eq!(m["code_details"][0]["code"], "482913");
    assert_eq!(m["code_details"][0]["original"], "482913");
    let headers = m["headers"].as_array().unwrap();
    assert!(headers
        .iter()
        .any(|h| h["name"] == "Message-ID" && h["value"] == "<t1@shop.example>"));
    let atts = m["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 2);
    assert_eq!(atts[0]["index"], 0);
    assert_eq!(atts[0]["filename"], "blob.bin");
    assert_eq!(atts[0]["content_type"], "application/octet-stream");
    assert_eq!(atts[0]["size"], attachment_binary().len());
    assert_eq!(atts[1]["filename"], "people.csv");
    assert_eq!(atts[1]["content_type"], "text/csv");
    assert_eq!(atts[1]["size"], ATTACHMENT_CSV.len());

    let raw = api.get(&format!("{base}/messages/{id}/raw"), &auth);
    assert_eq!(raw.status, 200);
    assert_eq!(
        raw.header("content-type").as_deref(),
        Some("message/rfc822")
    );
    assert!(
        raw.body.starts_with(b"Received: "),
        "raw starts with our trace header"
    );
    assert!(raw.body.len() > sent.len());
    assert_eq!(&raw.body[raw.body.len() - sent.len()..], sent);
    let trace = &raw.body[..raw.body.len() - sent.len()];
    assert!(trace.ends_with(b"\r\n"));

    let a0 = api.get(&format!("{base}/messages/{id}/attachments/0"), &auth);
    assert_eq!(a0.status, 200);
    assert_eq!(a0.body, attachment_binary());
    assert_eq!(
        a0.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(
        a0.header("content-disposition").as_deref(),
        Some("attachment; filename=\"blob.bin\"; filename*=UTF-8''blob.bin")
    );
    assert_eq!(
        a0.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    let a1 = api.get(&format!("{base}/messages/{id}/attachments/1"), &auth);
    assert_eq!(a1.status, 200);
    assert_eq!(a1.body, ATTACHMENT_CSV);
    assert_eq!(a1.header("content-type").as_deref(), Some("text/csv"));
    let a2 = api.get(&format!("{base}/messages/{id}/attachments/2"), &auth);
    assert_eq!((a2.status, a2.problem().as_str()), (404, "not-found"));

    let del = api.call("DELETE", &format!("{base}/messages/{id}"), &auth, None);
    assert_eq!(del.status, 204);
    for path in [
        format!("{base}/messages/{id}"),
        format!("{base}/messages/{id}/raw"),
        format!("{base}/messages/{id}/attachments/0"),
    ] {
        let r = api.get(&path, &auth);
        assert_eq!(
            (r.status, r.problem().as_str()),
            (404, "not-found"),
            "{path}"
        );
    }
    let list = api.get(&format!("{base}/messages"), &auth).json();
    assert_eq!(list["messages"], json!([]));

    let del = api.call("DELETE", &base, &auth, None);
    assert_eq!(del.status, 204);
    // The session token opened only this mailbox: now it matches nothing.
    let gone = api.get(&base, &auth);
    assert_eq!(
        (gone.status, gone.problem().as_str()),
        (401, "invalid-credentials")
    );
    let gone = api.get(&format!("{base}/messages"), &auth);
    assert_eq!(gone.status, 401);
}

fn anonymous_mailbox(api: &Api) -> (String, String) {
    let r = api.call("POST", "/api/v1/mailboxes", &Auth::None, None);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    let address = j["address"].as_str().unwrap().to_owned();
    let (local, domain) = address.split_once('@').unwrap();
    assert_eq!(domain, crate::support::DOMAIN);
    assert_eq!(local.len(), 10);
    assert!(local
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    assert!(j["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        r.header("location").as_deref(),
        Some(format!("/api/v1/mailboxes/{address}").as_str())
    );
    let token = j["session_token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 43, "32 bytes of unpadded url-safe base64");
    (address, token)
}

#[test]
fn smtp_delivery_is_listed_read_parsed_raw_and_attachments_then_deleted() {
    let api = Api::start();
    let (address, token) = anonymous_mailbox(&api);
    let sent = signup_message(&address);
    smtp_send(api.server.smtp, "noreply@shop.example", &address, &sent);
    read_back_and_delete(&api, &address, &token, &sent);
}

#[test]
fn engine_delivery_is_listed_read_parsed_raw_and_attachments_then_deleted() {
    let api = Api::start();
    let (address, token) = anonymous_mailbox(&api);
    let sent = signup_message(&address);
    // What an ingest path stores: its trace line, then the bytes as received.
    let mut stored =
        b"Received: from client.test by uncorreo.test; Tue, 24 Nov 2026 10:00:01 +0000\r\n"
            .to_vec();
    stored.extend_from_slice(&sent);
    super::deliver(&api.server, &address, &stored);
    read_back_and_delete(&api, &address, &token, &sent);
}

#[test]
fn listing_pages_by_sequence_and_filters_by_plus_tag() {
    let api = Api::start();
    let key = api.user("free");
    let auth = Auth::Bearer(key);
    let (address, token) = api.mailbox(&auth, json!({"local_part": "pages"}));
    assert!(token.is_none(), "users get no session token");
    for i in 0..5 {
        let tag = if i % 2 == 0 { "even" } else { "odd" };
        let rcpt = format!("pages+{tag}@{}", crate::support::DOMAIN);
        let rcpt = api.server.engine.resolve(&rcpt).unwrap();
        crate::support::block_on(api.server.engine.deliver(uncorreo_engine::Delivery {
            raw: bytes::Bytes::from(format!("Subject: m{i}\r\n\r\nbody\r\n")),
            envelope_from: String::new(),
            recipients: vec![rcpt],
            dedupe_key: None,
        }))
        .unwrap();
    }
    let page = |q: &str| {
        let r = api.get(&format!("/api/v1/mailboxes/{address}/messages?{q}"), &auth);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    };
    let subjects = |j: &serde_json::Value| -> Vec<String> {
        j["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["subject"].as_str().unwrap().to_owned())
            .collect()
    };
    let p1 = page("limit=2");
    assert_eq!(subjects(&p1), ["m0", "m1"]);
    assert_eq!(
        (p1["next_since"].as_u64(), p1["has_more"].as_bool()),
        (Some(2), Some(true))
    );
    let p2 = page("limit=2&since=2");
    assert_eq!(subjects(&p2), ["m2", "m3"]);
    let p3 = page("limit=2&since=4");
    assert_eq!(subjects(&p3), ["m4"]);
    assert_eq!(
        (p3["next_since"].as_u64(), p3["has_more"].as_bool()),
        (Some(5), Some(false))
    );
    let empty = page("since=5");
    assert_eq!(
        (empty["next_since"].as_u64(), empty["has_more"].as_bool()),
        (Some(5), Some(false))
    );

    // The newest page in one request (what the web UI's first paint uses),
    // oldest first within it, resuming after it.
    let newest = page("latest=true&limit=2");
    assert_eq!(subjects(&newest), ["m3", "m4"]);
    assert_eq!(
        (newest["next_since"].as_u64(), newest["has_more"].as_bool()),
        (Some(5), Some(false))
    );
    assert_eq!(subjects(&page("latest=true&limit=9")).len(), 5);
    let r = api.get(
        &format!("/api/v1/mailboxes/{address}/messages?latest=true&since=1"),
        &auth,
    );
    assert_eq!((r.status, r.problem().as_str()), (422, "invalid-request"));

    let even = page("tag=even");
    assert_eq!(subjects(&even), ["m0", "m2", "m4"]);
    assert_eq!(even["messages"][0]["plus_tag"], "even");
    let odd = page("tag=ODD&limit=1");
    assert_eq!(subjects(&odd), ["m1"]);
    assert_eq!(odd["next_since"], 2);
    let odd2 = page("tag=odd&limit=1&since=2");
    assert_eq!(subjects(&odd2), ["m3"]);

    for bad in ["limit=0", "limit=100000"] {
        let r = api.get(
            &format!("/api/v1/mailboxes/{address}/messages?{bad}"),
            &auth,
        );
        assert_eq!(
            (r.status, r.problem().as_str()),
            (422, "invalid-request"),
            "{bad}"
        );
    }
    let r = api.get(
        &format!("/api/v1/mailboxes/{address}/messages?since=x"),
        &auth,
    );
    assert_eq!((r.status, r.problem().as_str()), (400, "bad-request"));
}

#[test]
fn a_filtered_page_stops_at_max_scan_and_says_there_is_more() {
    let api = Api::start_with(|c| {
        c.limits.max_scan = 4;
        c.limits.default_page = 3;
    });
    let (address, token) = api.mailbox(&Auth::None, json!({"local_part": "scan"}));
    let auth = Auth::Bearer(token.unwrap());
    for i in 0..6 {
        let tag = if i == 5 { "hit" } else { "miss" };
        let rcpt = api
            .server
            .engine
            .resolve(&format!("scan+{tag}@{}", crate::support::DOMAIN))
            .unwrap();
        crate::support::block_on(api.server.engine.deliver(uncorreo_engine::Delivery {
            raw: bytes::Bytes::from(format!("Subject: s{i}\r\n\r\nx\r\n")),
            envelope_from: String::new(),
            recipients: vec![rcpt],
            dedupe_key: None,
        }))
        .unwrap();
    }
    let base = format!("/api/v1/mailboxes/{address}/messages");
    // Default page size applies without `limit`.
    let all = api.get(&base, &auth).json();
    assert_eq!(all["messages"].as_array().unwrap().len(), 3);
    // Scanning stops after exactly max_scan messages: nothing found yet, but
    // the cursor moved past the four examined and there is more.
    let first = api.get(&format!("{base}?tag=hit"), &auth).json();
    assert_eq!(first["messages"], json!([]));
    assert_eq!(first["next_since"], 4);
    assert_eq!(first["has_more"], true);
    let since = 4;
    let second = api
        .get(&format!("{base}?tag=hit&since={since}"), &auth)
        .json();
    assert_eq!(second["messages"][0]["subject"], "s5");
    assert_eq!(second["has_more"], false);
}

/// One host: without `limit` or `after` the mailbox listing is every live
/// mailbox, oldest first, with no `next_after` (as before pages existed);
/// with `limit`, pages follow `next_after` in (`created_at`, `address`)
/// order with no gap and no duplicate.
#[test]
fn the_mailbox_listing_is_whole_without_a_limit_and_pages_with_one() {
    let api = Api::start();
    let key = Auth::Bearer(api.user("free"));
    for local in ["pagec", "pagea", "pageb"] {
        api.mailbox(&key, json!({ "local_part": local }));
    }
    let whole = api.get("/api/v1/mailboxes", &key).json();
    assert!(whole.get("next_after").is_none(), "{whole}");
    let listed = super::created_and_address(&whole);
    assert_eq!(listed.len(), 3);
    let mut ordered = listed.clone();
    ordered.sort();
    let mut paged = Vec::new();
    let mut path = "/api/v1/mailboxes?limit=2".to_owned();
    for _ in 0..3 {
        let page = api.get(&path, &key).json();
        let mailboxes = super::created_and_address(&page);
        assert!(mailboxes.len() <= 2, "{page}");
        paged.extend(mailboxes);
        match page["next_after"].as_str() {
            Some(after) => path = format!("/api/v1/mailboxes?limit=2&after={after}"),
            None => break,
        }
    }
    assert_eq!(paged, ordered);
}
