//! The Mailpit-compatible API (`/mailpit/…`) through real sockets: the real
//! npm `mailpit-api` client runs a Mailpit-style suite against it
//! (tests/mailpit/suite.mjs), and the routes' authentication, error shapes
//! and events WebSocket are checked from Rust.

use std::process::Command;

use crate::api::{self as api_support, Api, Auth};
use base64::Engine as _;
use futures_util::StreamExt;
use serde_json::json;

fn basic(password: &str) -> String {
    let enc =
        base64::engine::general_purpose::STANDARD.encode(format!("suite@example.test:{password}"));
    format!("Basic {enc}")
}

struct Tenants {
    key_a: String,
    key_b: String,
    token_anon: String,
    box_a: String,
    box_a2: String,
    box_b: String,
    box_anon: String,
}

fn tenants(api: &Api) -> Tenants {
    let key_a = api.user("free");
    let key_b = api.user("free");
    let (box_a, _) = api.mailbox(&Auth::Bearer(key_a.clone()), json!({"local_part": "ana"}));
    let (box_a2, _) = api.mailbox(&Auth::Bearer(key_a.clone()), json!({"local_part": "ana2"}));
    let (box_b, _) = api.mailbox(&Auth::Bearer(key_b.clone()), json!({"local_part": "bob"}));
    let (box_anon, token) = api.mailbox(&Auth::None, json!({"local_part": "anon"}));
    Tenants {
        key_a,
        key_b,
        token_anon: token.unwrap(),
        box_a,
        box_a2,
        box_b,
        box_anon,
    }
}

#[test]
fn the_npm_mailpit_api_client_runs_a_mailpit_suite_unchanged() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mailpit");
    assert!(
        dir.join("node_modules/mailpit-api").is_dir(),
        "tests/mailpit/node_modules is missing: run .ci/deps (npm ci in tests/mailpit)"
    );
    let api = Api::start();
    let t = tenants(&api);
    let out = Command::new("node")
        .arg("suite.mjs")
        .current_dir(&dir)
        .env("MAILPIT_BASE", api.server.url("/mailpit"))
        .env("SMTP_PORT", api.server.smtp.port().to_string())
        .env("KEY_A", &t.key_a)
        .env("KEY_B", &t.key_b)
        .env("TOKEN_ANON", &t.token_anon)
        .env("BOX_A", &t.box_a)
        .env("BOX_A2", &t.box_a2)
        .env("BOX_B", &t.box_b)
        .env("BOX_ANON", &t.box_anon)
        .output()
        .expect("node runs (Node 20 is on the machine)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "suite failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

/// Every Mailpit route but the probes needs Basic credentials that open
/// something; the answers are Mailpit's plain text, never our problem+json.
#[test]
fn every_mailpit_route_refuses_missing_and_wrong_credentials_with_401() {
    let api = Api::start();
    let t = tenants(&api);
    let routes = [
        ("GET", "/api/v1/info"),
        ("GET", "/api/v1/webui"),
        ("GET", "/api/v1/messages"),
        ("PUT", "/api/v1/messages"),
        ("DELETE", "/api/v1/messages"),
        ("GET", "/api/v1/search?query=x"),
        ("DELETE", "/api/v1/search?query=x"),
        ("GET", "/api/v1/message/latest"),
        ("GET", "/api/v1/message/latest/headers"),
        ("GET", "/api/v1/message/latest/raw"),
        ("GET", "/api/v1/message/latest/part/1"),
        ("GET", "/api/v1/message/latest/part/1/thumb"),
        ("GET", "/api/v1/message/latest/html-check"),
        ("GET", "/api/v1/message/latest/link-check"),
        ("GET", "/api/v1/message/latest/sa-check"),
        ("POST", "/api/v1/message/latest/release"),
        ("GET", "/api/v1/chaos"),
        ("PUT", "/api/v1/chaos"),
        ("GET", "/api/v1/tags"),
        ("PUT", "/api/v1/tags"),
        ("PUT", "/api/v1/tags/x"),
        ("DELETE", "/api/v1/tags/x"),
        ("POST", "/api/v1/send"),
        ("GET", "/view/latest.html"),
        ("GET", "/view/latest.txt"),
        ("GET", "/api/events"),
    ];
    let wrong = [
        None,
        Some(basic("uct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")),
        Some(basic("a-token-that-opens-nothing")),
        Some(format!("Bearer {}", t.key_a)),
        Some("Basic !!!".to_owned()),
    ];
    for (method, path) in routes {
        for auth in &wrong {
            let mut req = api.client.request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                api.server.url(&format!("/mailpit{path}")),
            );
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let r = req.send().unwrap();
            let what = format!("{method} {path} with {auth:?}");
            assert_eq!(r.status().as_u16(), 401, "{what}");
            assert_eq!(
                r.headers()["www-authenticate"],
                "Basic realm=\"uncorreo\"",
                "{what}"
            );
            assert!(
                r.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/plain"),
                "{what}"
            );
        }
    }
    // The probes are open, like Mailpit's.
    for probe in ["/livez", "/readyz"] {
        let r = api
            .client
            .get(api.server.url(&format!("/mailpit{probe}")))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{probe}");
        assert_eq!(r.text().unwrap(), "ok");
    }
    // Unknown paths get Mailpit's plain 404, not our problem+json.
    let r = api
        .client
        .get(api.server.url("/mailpit/api/v1/nothing"))
        .header("authorization", basic(&t.key_a))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
}

#[test]
fn unsupported_endpoints_are_501_in_plain_text_and_bad_searches_400() {
    let api = Api::start();
    let t = tenants(&api);
    let get = |path: &str| {
        api.client
            .get(api.server.url(&format!("/mailpit{path}")))
            .header("authorization", basic(&t.key_a))
            .send()
            .unwrap()
    };
    for path in [
        "/api/v1/message/latest/html-check",
        "/api/v1/message/latest/link-check",
        "/api/v1/message/latest/sa-check",
        "/api/v1/chaos",
    ] {
        let r = get(path);
        assert_eq!(r.status().as_u16(), 501, "{path}");
        assert!(r.text().unwrap().contains("not supported"), "{path}");
    }
    assert_eq!(
        get("/api/v1/search").status().as_u16(),
        400,
        "query is required"
    );
    let long = "a".repeat(2000);
    assert_eq!(
        get(&format!("/api/v1/search?query={long}"))
            .status()
            .as_u16(),
        400
    );
    assert_eq!(get("/api/v1/search?query=x&wait=61").status().as_u16(), 400);
    assert_eq!(get("/api/v1/messages?limit=abc").status().as_u16(), 400);
    assert_eq!(
        get("/api/v1/message/latest").status().as_u16(),
        404,
        "no messages yet"
    );
    assert_eq!(get("/api/v1/message/zz").status().as_u16(), 404);
}

/// `/api/events` sends `{"Type":"new","Data":summary}` for messages of the
/// instance only.
#[test]
fn the_events_websocket_announces_new_messages_of_the_instance_only() {
    let api = Api::start();
    let t = tenants(&api);
    let url = format!("ws://{}/mailpit/api/events", api.server.http);
    // One runtime for the socket; deliveries use their own (they block).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut ws = rt.block_on(async {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", basic(&t.key_a).parse().unwrap());
        tokio_tungstenite::connect_async(req).await.unwrap().0
    });
    // Another tenant's message first: it must never show up.
    api_support::deliver(
        &api.server,
        &t.box_b,
        &api_support::signup_message(&t.box_b),
    );
    let id = api_support::deliver(
        &api.server,
        &t.box_a2,
        &api_support::signup_message(&t.box_a2),
    );
    rt.block_on(async {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(20), ws.next())
            .await
            .expect("an event within 20 s")
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        assert_eq!(v["Type"], "new");
        assert_eq!(v["Data"]["ID"], id.to_string());
        assert_eq!(v["Data"]["Subject"], "Your verification code");
        assert_eq!(v["Data"]["Mailbox"], t.box_a2.as_str());
        assert_eq!(v["Data"]["Read"], false);
    });
}
