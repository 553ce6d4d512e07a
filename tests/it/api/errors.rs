//! Every error is `application/problem+json` with the right status and
//! type, including axum's own rejections (bad JSON, bad query, unknown
//! route, wrong method, body too large) and parser trouble.

use std::io::{Read, Write};

use super::{Api, Auth};
use serde_json::json;

fn raw_request(api: &Api, req: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(api.server.http).unwrap();
    // The server may answer and close before reading a refused body in
    // full; what matters is the answer, so write and read errors are
    // tolerated as long as a status line arrived.
    let _ = s.write_all(req.as_bytes());
    // Read the head and the problem body, not to EOF: the server may keep
    // the connection open waiting for the body it refused.
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&buf).contains("\"}") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let out = String::from_utf8_lossy(&buf).into_owned();
    assert!(out.starts_with("HTTP/1.1 "), "no answer: {out:?}");
    let status = out[9..12].parse().unwrap();
    (status, out)
}

#[test]
fn axum_rejections_and_fallbacks_are_problems() {
    let api = Api::start_with(|c| c.limits.json_body_bytes = 128);
    let post = |ct: &str, body: &str| {
        let r = api
            .client
            .post(api.server.url("/api/v1/mailboxes"))
            .header("content-type", ct)
            .body(body.to_owned())
            .send()
            .unwrap();
        super::Resp {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.bytes().unwrap().to_vec(),
        }
    };
    let cases = [
        (post("application/json", "{not json"), 400, "bad-request"),
        (post("application/json", "[1,2]"), 422, "invalid-request"),
        (
            post("application/json", "{\"ttl_minutes\": \"soon\"}"),
            422,
            "invalid-request",
        ),
        (
            post("application/json", "{\"colour\": 1}"),
            422,
            "invalid-request",
        ),
        (post("text/plain", "{}"), 415, "unsupported-media-type"),
        (
            post(
                "application/json",
                &format!("{{\"local_part\": \"{}\"}}", "a".repeat(200)),
            ),
            413,
            "payload-too-large",
        ),
        (api.get("/nope", &Auth::None), 404, "no-such-route"),
        (
            api.get("/api/v1/mailboxes/a@b/messages/x/y/z", &Auth::None),
            404,
            "no-such-route",
        ),
        (
            api.call("PUT", "/api/v1/mailboxes", &Auth::None, None),
            405,
            "method-not-allowed",
        ),
        (
            api.call("PATCH", "/health", &Auth::None, None),
            405,
            "method-not-allowed",
        ),
    ];
    for (i, (r, status, kind)) in cases.iter().enumerate() {
        assert_eq!(
            (r.status, r.problem()),
            (*status, kind.to_string()),
            "case {i}"
        );
    }
    let r = api.call("PUT", "/api/v1/mailboxes", &Auth::None, None);
    assert!(r.header("allow").unwrap().contains("POST"));

    // A declared length above the limit is refused from the headers alone,
    // before any of the body is read (none is sent here).
    let (status, text) = raw_request(
        &api,
        "POST /api/v1/mailboxes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 413);
    assert!(text.contains("application/problem+json"), "{text}");
}

/// An ended mailbox's address is quarantined for anyone but its owner, and
/// a caller cannot tell a quarantined address from one a live mailbox holds:
/// the two refusals are the same bytes.
#[test]
fn a_deleted_address_is_quarantined_and_answers_exactly_like_a_taken_one() {
    let api = Api::start();
    let create = |auth: &Auth, local: &str| {
        api.call(
            "POST",
            "/api/v1/mailboxes",
            auth,
            Some(json!({"local_part": local})),
        )
    };
    // An anonymous mailbox, deleted by its session.
    let (address, token) = api.mailbox(&Auth::None, json!({"local_part": "reset-me"}));
    let session = Auth::Bearer(token.unwrap());
    let r = api.call(
        "DELETE",
        &format!("/api/v1/mailboxes/{address}"),
        &session,
        None,
    );
    assert_eq!(r.status, 204);
    // A live mailbox of someone else.
    let owner = Auth::Bearer(api.user("free"));
    assert_eq!(create(&owner, "held").status, 201);

    let stranger = Auth::None;
    let quarantined = create(&stranger, "reset-me");
    let taken = create(&stranger, "held");
    assert_eq!(
        (quarantined.status, quarantined.problem().as_str()),
        (409, "address-taken")
    );
    assert_eq!(quarantined.json(), taken.json(), "the two refusals differ");
    // A user takes back its own ended address at once; others still cannot.
    let r = api.call(
        "DELETE",
        "/api/v1/mailboxes/held@uncorreo.test",
        &owner,
        None,
    );
    assert_eq!(r.status, 204);
    assert_eq!(create(&owner, "held").status, 201);
    let other_user = Auth::Bearer(api.user("free"));
    assert_eq!(create(&other_user, "reset-me").status, 409);
    // Random local parts (the default) are never refused for this.
    assert_eq!(
        api.call("POST", "/api/v1/mailboxes", &stranger, Some(json!({})))
            .status,
        201
    );
}

#[test]
fn mailbox_creation_errors() {
    let api = Api::start();
    let key = Auth::Bearer(api.user("free"));
    let create = |body| api.call("POST", "/api/v1/mailboxes", &key, Some(body));
    assert_eq!(create(json!({"local_part": "taken"})).status, 201);
    let r = create(json!({"local_part": "TAKEN"}));
    assert_eq!((r.status, r.problem().as_str()), (409, "address-taken"));
    for bad in ["a+b", "a b", ".a", "a..b", "a%b", "\"q\"", ""] {
        let r = create(json!({"local_part": bad}));
        assert_eq!(
            (r.status, r.problem().as_str()),
            (422, "invalid-request"),
            "{bad:?}"
        );
    }
    let r = create(json!({"local_part": "x".repeat(65)}));
    assert_eq!((r.status, r.problem().as_str()), (422, "invalid-request"));
    let r = create(json!({"domain": "elsewhere.example"}));
    assert_eq!((r.status, r.problem().as_str()), (422, "invalid-request"));
    let r = create(json!({"local_part": "Mixed.Case", "domain": "UNCORREO.TEST"}));
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["address"], "mixed.case@uncorreo.test");
    // The address in the path is case-insensitive too.
    let r = api.get("/api/v1/mailboxes/MIXED.case@Uncorreo.Test", &key);
    assert_eq!(r.status, 200);
    // Percent-encoded '@' works as well.
    let r = api.get("/api/v1/mailboxes/mixed.case%40uncorreo.test", &key);
    assert_eq!(r.status, 200);
}

#[test]
fn unparseable_and_oversize_messages_still_serve_raw() {
    let api = Api::start_with(|c| c.limits.parse_max_bytes = 1000);
    let (address, token) = api.mailbox(&Auth::None, json!({}));
    let auth = Auth::Bearer(token.unwrap());
    let big = format!("Subject: big\r\n\r\n{}\r\n", "y".repeat(2000));
    let id = super::deliver(&api.server, &address, big.as_bytes());
    let base = format!("/api/v1/mailboxes/{address}/messages/{id}");
    let r = api.get(&base, &auth);
    assert_eq!(
        (r.status, r.problem().as_str()),
        (422, "message-too-large-to-parse")
    );
    let r = api.get(&format!("{base}/attachments/0"), &auth);
    assert_eq!(
        (r.status, r.problem().as_str()),
        (422, "message-too-large-to-parse")
    );
    let r = api.get(&format!("{base}/raw"), &auth);
    assert_eq!((r.status, r.body), (200, big.into_bytes()));

    // Garbage parses into an empty view rather than an error.
    let id = super::deliver(&api.server, &address, b"\x00\xff\r\n\r\n\xfe");
    let r = api.get(&format!("/api/v1/mailboxes/{address}/messages/{id}"), &auth);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["attachments"], json!([]));
}

#[test]
fn bad_ids_are_not_found() {
    let api = Api::start();
    let (address, token) = api.mailbox(&Auth::None, json!({}));
    let auth = Auth::Bearer(token.unwrap());
    for id in ["x", "1", "-1", "zz-1", "1-", "1-x", "ffffffffffffffffff-1"] {
        let r = api.get(&format!("/api/v1/mailboxes/{address}/messages/{id}"), &auth);
        assert_eq!((r.status, r.problem().as_str()), (404, "not-found"), "{id}");
    }
    let r = api.get(
        &format!("/api/v1/mailboxes/{address}/messages/1-1/attachments/x"),
        &auth,
    );
    assert_eq!(r.status, 404);
    let r = api.get("/api/v1/mailboxes/not-an-address/messages", &auth);
    assert_eq!((r.status, r.problem().as_str()), (404, "not-found"));
}

#[test]
fn the_json_body_cap_does_not_apply_to_the_ses_webhook() {
    let api = Api::start_with(|c| c.limits.json_body_bytes = 1024);
    // SNS notifications carry whole messages; the webhook has its own cap.
    let body = format!(
        "{{\"Type\":\"Notification\",\"Message\":\"{}\"}}",
        "x".repeat(100_000)
    );
    let r = api
        .client
        .post(api.server.url("/api/v1/ses/inbound"))
        .header("content-type", "text/plain; charset=UTF-8")
        .body(body)
        .send()
        .unwrap();
    assert_ne!(r.status().as_u16(), 413);
    let r = api.call(
        "POST",
        "/api/v1/mailboxes",
        &Auth::None,
        Some(json!({"local_part": "y".repeat(2000)})),
    );
    assert_eq!((r.status, r.problem().as_str()), (413, "payload-too-large"));
}
