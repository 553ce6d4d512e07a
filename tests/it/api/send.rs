//! HTTP send (`POST /api/v1/mailboxes/{address}/messages`) through a real
//! socket: stored through the one delivery entry point with our `Received:`
//! line in front and the bytes otherwise as sent, announced to subscribers,
//! and every limit answered with its own problem type.

use crate::api::{Api, Auth, Resp};
use reqwest::blocking::Body;
use serde_json::json;

const MESSAGE: &[u8] =
    b"From: App <app@example.com>\r\nTo: box@uncorreo.test\r\nSubject: Sent over HTTP\r\n\r\nYour code is 314159.\r\n";

fn post_raw(api: &Api, path: &str, auth: &Auth, content_type: &str, body: Vec<u8>) -> Resp {
    let mut req = api
        .client
        .post(api.server.url(path))
        .header("content-type", content_type)
        .body(Body::from(body));
    req = match auth {
        Auth::None => req,
        Auth::Bearer(s) => req.bearer_auth(s),
        Auth::Session(s) => req.header("x-session-token", s),
    };
    Resp::read(req.send().unwrap())
}

#[test]
fn a_raw_message_is_stored_as_sent_behind_our_received_line_and_listed() {
    let api = Api::start();
    let key = Auth::Bearer(api.user("free"));
    let (address, _) = api.mailbox(&key, json!({"local_part": "box"}));
    let path =
        format!("/api/v1/mailboxes/{address}/messages?envelope_from=app@example.com&tag=signup");
    let r = post_raw(&api, &path, &key, "message/rfc822", MESSAGE.to_vec());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["seq"], 1);

    let raw = api.get(
        &format!("/api/v1/mailboxes/{address}/messages/{id}/raw"),
        &key,
    );
    assert_eq!(raw.status, 200);
    let text = String::from_utf8(raw.body.clone()).unwrap();
    let (first, rest) = text.split_once("\r\n").unwrap();
    assert!(
        first.starts_with("Received: from [127.0.0.1] by "),
        "{first}"
    );
    assert!(first.contains("(uncorreo) with HTTP;"), "{first}");
    assert_eq!(
        rest.as_bytes(),
        MESSAGE,
        "bytes after our Received: line are as sent"
    );

    let list = api
        .get(&format!("/api/v1/mailboxes/{address}/messages"), &key)
        .json();
    let m = &list["messages"][0];
    assert_eq!(m["id"], id.as_str());
    assert_eq!(m["subject"], "Sent over HTTP");
    assert_eq!(m["envelope_from"], "app@example.com");
    assert_eq!(m["plus_tag"], "signup");
    assert_eq!(m["codes"], json!(["314159"]));
}

#[test]
fn a_session_token_sends_to_its_own_mailbox_only() {
    let api = Api::start();
    let (mine, token) = api.mailbox(&Auth::None, json!({"local_part": "mine"}));
    let (theirs, _) = api.mailbox(&Auth::None, json!({"local_part": "theirs"}));
    let token = Auth::Session(token.unwrap());
    let ok = post_raw(
        &api,
        &format!("/api/v1/mailboxes/{mine}/messages"),
        &token,
        "message/rfc822",
        MESSAGE.to_vec(),
    );
    assert_eq!(ok.status, 201);
    let no = post_raw(
        &api,
        &format!("/api/v1/mailboxes/{theirs}/messages"),
        &token,
        "message/rfc822",
        MESSAGE.to_vec(),
    );
    assert_eq!((no.status, no.problem().as_str()), (404, "not-found"));
    let none = post_raw(
        &api,
        &format!("/api/v1/mailboxes/{mine}/messages"),
        &Auth::None,
        "message/rfc822",
        MESSAGE.to_vec(),
    );
    assert_eq!(
        (none.status, none.problem().as_str()),
        (401, "authentication-required")
    );
    assert_eq!(
        api.server
            .engine
            .mailbox(&theirs.parse().unwrap())
            .unwrap()
            .message_count,
        0
    );
}

#[test]
fn each_limit_has_its_own_answer() {
    let max = 2048;
    let api = Api::start_with(|c| {
        c.engine.max_message_bytes = max;
        for p in c.plans.0.values_mut() {
            p.max_messages_per_mailbox = 1;
        }
    });
    let key = Auth::Bearer(api.user("free"));
    let (address, _) = api.mailbox(&key, json!({"local_part": "limits"}));
    let path = format!("/api/v1/mailboxes/{address}/messages");

    // Over the size limit: 413, whether the length is declared or streamed.
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    big.resize(max + 1, b'x');
    let r = post_raw(&api, &path, &key, "message/rfc822", big.clone());
    assert_eq!((r.status, r.problem().as_str()), (413, "payload-too-large"));
    let Auth::Bearer(secret) = &key else {
        unreachable!()
    };
    // A reader body goes out chunked, without Content-Length.
    let streamed = api
        .client
        .post(api.server.url(&path))
        .bearer_auth(secret)
        .body(Body::new(std::io::Cursor::new(big)))
        .send()
        .unwrap();
    assert_eq!(streamed.status().as_u16(), 413);
    // Within the body limit, but over it once our Received: line is in front.
    let mut edge = b"Subject: edge\r\n\r\n".to_vec();
    edge.resize(max - 10, b'x');
    let r = post_raw(&api, &path, &key, "message/rfc822", edge);
    assert_eq!((r.status, r.problem().as_str()), (413, "payload-too-large"));

    // JSON is not a raw message.
    let r = post_raw(&api, &path, &key, "application/json", b"{}".to_vec());
    assert_eq!(
        (r.status, r.problem().as_str()),
        (415, "unsupported-media-type")
    );
    // Not a message at all.
    let r = post_raw(
        &api,
        &path,
        &key,
        "message/rfc822",
        b"hello, world".to_vec(),
    );
    assert_eq!((r.status, r.problem().as_str()), (422, "invalid-request"));
    let r = post_raw(
        &api,
        &format!("{path}?envelope_from=%3Cx%3E"),
        &key,
        "message/rfc822",
        MESSAGE.to_vec(),
    );
    assert_eq!((r.status, r.problem().as_str()), (422, "invalid-request"));
    let r = post_raw(
        &api,
        &format!("{path}?tag=a%20b"),
        &key,
        "message/rfc822",
        MESSAGE.to_vec(),
    );
    assert_eq!((r.status, r.problem().as_str()), (422, "invalid-request"));

    // The quota: the first fits, the second is refused and nothing is stored.
    let r = post_raw(&api, &path, &key, "message/rfc822", MESSAGE.to_vec());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = post_raw(&api, &path, &key, "message/rfc822", MESSAGE.to_vec());
    assert_eq!((r.status, r.problem().as_str()), (409, "mailbox-full"));
    assert_eq!(
        api.server
            .engine
            .mailbox(&address.parse().unwrap())
            .unwrap()
            .message_count,
        1
    );
}

#[test]
fn a_poisoned_engine_refuses_http_send_with_503_and_stores_nothing() {
    let api = Api::start();
    let key = Auth::Bearer(api.user("free"));
    let (address, _) = api.mailbox(&key, json!({"local_part": "poison"}));
    api.server.engine.fail_next_sync_for_tests();
    let path = format!("/api/v1/mailboxes/{address}/messages");
    let r = post_raw(&api, &path, &key, "message/rfc822", MESSAGE.to_vec());
    // The failed sync itself is not acknowledged; the next attempt is refused up front.
    assert!(matches!(r.status, 500 | 503), "{}", r.status);
    let r = post_raw(&api, &path, &key, "message/rfc822", MESSAGE.to_vec());
    assert_eq!((r.status, r.problem().as_str()), (503, "storage-failed"));
}

/// A 413 leaves the body unread, so the server must end the connection and
/// say so; otherwise a pooling client sends its next request on a socket
/// that the server is about to close, and that request fails. Both sends:
/// the native route and Mailpit's, whose routes sit outside the
/// problem+json layer.
#[test]
fn a_refused_oversize_body_closes_the_connection_and_says_so() {
    use base64::Engine as _;
    use std::io::{Read, Write};
    let max = 2048;
    let api = Api::start_with(|c| c.engine.max_message_bytes = max);
    let key = api.user("free");
    let (address, _) = api.mailbox(&Auth::Bearer(key.clone()), json!({"local_part": "close"}));
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("u:{key}"));
    let heads = [
        format!("POST /api/v1/mailboxes/{address}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: message/rfc822\r\n"),
        format!("POST /mailpit/api/v1/send HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {basic}\r\nContent-Type: application/json\r\n"),
    ];
    for head in heads {
        let mut s = std::net::TcpStream::connect(api.server.http).unwrap();
        // Only the head: the 10 MB body it announces never comes.
        write!(s, "{head}Content-Length: 10000000\r\n\r\n").unwrap();
        // A bound so that a regression fails instead of hanging; the server
        // answers at once.
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let mut answer = Vec::new();
        let end = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 413 "), "{head}: {text}");
        assert!(text.contains("\r\nconnection: close\r\n"), "{head}: {text}");
        assert!(end.is_ok(), "the server must close the connection: {end:?}");
    }
}

/// Past the budget of bytes in flight (held by SMTP sessions stopped after
/// `354`, see `smtp::budget`), both HTTP sends answer 503 with
/// `Retry-After` and store nothing; once the holders finish, the same
/// requests go through.
#[test]
fn sends_past_the_byte_budget_get_503_with_retry_after_and_go_through_later() {
    use crate::smtp::budget::{finish, hold, in_flight, message, small_budget, HELD};
    use base64::Engine as _;
    let api = Api::start_with(small_budget);
    let key = Auth::Bearer(api.user("free"));
    let (address, _) = api.mailbox(&key, json!({"local_part": "budget"}));
    let path = format!("/api/v1/mailboxes/{address}/messages");
    let raw = message("http", 600_000);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(match &key {
            Auth::Bearer(k) => format!("u:{k}"),
            _ => unreachable!(),
        })
    );
    let mailpit_send = || {
        let body = json!({
            "From": {"Email": "app@example.com"},
            "To": [{"Email": address}],
            "Subject": "mailpit",
            "Text": String::from_utf8_lossy(&raw[raw.len() / 2..]),
        });
        api.client
            .post(api.server.url("/mailpit/api/v1/send"))
            .header("authorization", &basic)
            .json(&body)
            .send()
            .unwrap()
    };

    let mut a = hold(&api.server, &address, HELD);
    let mut b = hold(&api.server, &address, HELD);
    let r = post_raw(&api, &path, &key, "message/rfc822", raw.clone());
    assert_eq!((r.status, r.problem().as_str()), (503, "unavailable"));
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    // The body was refused unread: the connection cannot carry the next
    // request, and a pooling client must be told (it was not, and the next
    // request on the pooled connection died).
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    let m = mailpit_send();
    assert_eq!(m.status().as_u16(), 503);
    assert_eq!(
        m.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(
        m.headers().get("connection").and_then(|v| v.to_str().ok()),
        Some("close")
    );

    let metrics = String::from_utf8(api.get("/metrics", &Auth::None).body).unwrap();
    for line in [
        "uncorreo_in_flight_refused_total{front_end=\"http_send\"}",
        "uncorreo_in_flight_refused_total{front_end=\"mailpit_send\"}",
        "uncorreo_in_flight_bytes ",
        "uncorreo_in_flight_limit_bytes ",
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }

    assert!(finish(&mut a, &message("a", HELD)).starts_with("250"));
    assert!(finish(&mut b, &message("b", HELD)).starts_with("250"));
    let r = post_raw(&api, &path, &key, "message/rfc822", raw.clone());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let m = mailpit_send();
    assert_eq!(m.status().as_u16(), 200);
    assert_eq!(in_flight(&api.server), 0);
    let mailbox = api
        .server
        .engine
        .mailbox(&address.parse().unwrap())
        .unwrap();
    assert_eq!(
        mailbox.message_count, 4,
        "two holders, two sends; nothing refused was stored"
    );
}
