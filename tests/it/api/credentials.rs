//! A credential that matches nothing is `401` on every operation, read from
//! the OpenAPI document the server serves: a random bearer string, a made-up
//! or revoked API key, the token of a mailbox that is gone, a malformed
//! `Authorization`. A valid credential on a mailbox it may not see stays the
//! one `404` (no existence leak).

use serde_json::{json, Value};

use super::{Api, Auth, Resp};

/// Operations the document marks as needing no credential at all (no
/// `security`), and why each is public. The test fails if this list and the
/// document disagree, so a route cannot drop its credential check unnoticed.
const PUBLIC: &[(&str, &str, &str)] = &[
    ("GET", "/health", "liveness probe for load balancers"),
    ("GET", "/ready", "readiness probe for load balancers"),
    ("GET", "/metrics", "Prometheus scrapes without credentials"),
    ("GET", "/api/v1/openapi.json", "the contract itself"),
    (
        "POST",
        "/api/v1/ses/inbound",
        "SNS cannot send credentials: authenticated by the SNS signature in the body",
    ),
];

/// Request headers to send, by name.
type Headers = Vec<(&'static str, String)>;

/// One operation of the served document.
struct Operation {
    method: String,
    template: String,
    /// The document lists `?token=` among its credentials.
    query_token: bool,
}

fn served_operations(api: &Api) -> (Vec<Operation>, Vec<(String, String)>) {
    let doc = api.get("/api/v1/openapi.json", &Auth::None).json();
    let mut guarded = Vec::new();
    let mut public = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let method = method.to_ascii_uppercase();
            if !matches!(
                method.as_str(),
                "GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD"
            ) {
                continue;
            }
            match op.get("security").and_then(Value::as_array) {
                Some(schemes) if !schemes.is_empty() => guarded.push(Operation {
                    method,
                    template: template.clone(),
                    query_token: schemes.iter().any(|s| s.get("query_token").is_some()),
                }),
                _ => public.push((method, template.clone())),
            }
        }
    }
    (guarded, public)
}

/// `template` with every path parameter filled with something real, so a
/// refusal cannot come from a missing resource.
fn fill(template: &str, mailbox: &str, message: &str) -> String {
    template
        .replace("{address}", mailbox)
        .replace("{id}", message)
        .replace("{n}", "0")
        .replace("{webhook}", "1")
}

fn send(api: &Api, method: &str, path: &str, headers: &[(&'static str, String)]) -> Resp {
    let mut req = api.client.request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        api.server.url(path),
    );
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    if method == "POST" {
        req = req.json(&json!({}));
    }
    Resp::read(req.send().unwrap())
}

#[test]
fn every_operation_answers_401_to_a_credential_that_matches_nothing() {
    let api = Api::start();
    let owner_key = api.user("free");
    let (mailbox, _) = api.mailbox(
        &Auth::Bearer(owner_key.clone()),
        json!({"local_part": "owned"}),
    );
    let message =
        super::deliver(&api.server, &mailbox, &super::signup_message(&mailbox)).to_string();

    let revoked = api.user("free");
    let auth = Auth::Bearer(revoked.clone());
    let id = api.get("/api/v1/keys", &auth).json()["keys"][0]["id"].to_string();
    assert_eq!(
        api.call("DELETE", &format!("/api/v1/keys/{id}"), &auth, None)
            .status,
        204
    );
    let (gone_box, gone_token) = api.mailbox(&Auth::None, json!({}));
    let gone_token = gone_token.unwrap();
    let r = api.call(
        "DELETE",
        &format!("/api/v1/mailboxes/{gone_box}"),
        &Auth::Bearer(gone_token.clone()),
        None,
    );
    assert_eq!(r.status, 204, "the mailbox's own token deletes it");
    let (_, live_token) = api.mailbox(&Auth::None, json!({}));
    let live_token = live_token.unwrap();

    let bogus: Vec<(&str, Headers)> = vec![
        (
            "a random bearer",
            vec![("authorization", "Bearer xyz".into())],
        ),
        (
            "a made-up API key",
            vec![("authorization", format!("Bearer uct_{}", "A".repeat(32)))],
        ),
        (
            "a revoked API key",
            vec![("authorization", format!("Bearer {revoked}"))],
        ),
        (
            "a random X-Session-Token",
            vec![("x-session-token", "xyz".into())],
        ),
        (
            "a deleted mailbox's token",
            vec![("authorization", format!("Bearer {gone_token}"))],
        ),
        (
            "another scheme",
            vec![("authorization", "Basic dTpw".into())],
        ),
        ("a scheme alone", vec![("authorization", "Bearer".into())]),
        (
            "an over-long bearer",
            vec![("authorization", format!("Bearer {}", "x".repeat(600)))],
        ),
    ];

    let (operations, public) = served_operations(&api);
    let mut expected_public: Vec<(String, String)> = PUBLIC
        .iter()
        .map(|(m, p, _why)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let mut public = public;
    expected_public.sort();
    public.sort();
    assert_eq!(
        public, expected_public,
        "operations the document serves without credentials"
    );
    assert!(operations.len() >= 20, "{} operations", operations.len());

    for op in &operations {
        let path = fill(&op.template, &mailbox, &message);
        let mut tries: Vec<(String, String, Headers)> = bogus
            .iter()
            .map(|(who, headers)| (who.to_string(), path.clone(), headers.clone()))
            .collect();
        if op.query_token {
            tries.push((
                "a random ?token=".into(),
                format!("{path}?token=xyz"),
                vec![],
            ));
        }
        for (who, path, headers) in tries {
            let r = send(&api, &op.method, &path, &headers);
            let what = format!("{} {} with {who}", op.method, op.template);
            assert_eq!(
                r.status,
                401,
                "{what}: {}",
                String::from_utf8_lossy(&r.body)
            );
            assert_eq!(r.problem(), "invalid-credentials", "{what}");
            let challenge = r.header("www-authenticate").unwrap_or_default();
            assert!(
                challenge.starts_with("Bearer") && challenge.contains("error=\"invalid_token\""),
                "{what}: WWW-Authenticate {challenge:?}"
            );
        }
        // A valid credential that may not see the mailbox: the one 404, as
        // for a mailbox that does not exist.
        if op.template.contains("{address}") {
            let headers = [("authorization", format!("Bearer {live_token}"))];
            let r = send(&api, &op.method, &path, &headers);
            let what = format!(
                "{} {} with another mailbox's live token",
                op.method, op.template
            );
            assert_eq!(
                (r.status, r.problem().as_str()),
                (404, "not-found"),
                "{what}"
            );
        }
    }

    // The one the issue was filed for: a random bearer listed an empty account.
    let r = api.get("/api/v1/mailboxes", &Auth::Bearer("xyz".into()));
    assert_eq!(r.status, 401);
    // And the live credentials still work.
    let r = api.get("/api/v1/mailboxes", &Auth::Bearer(live_token));
    assert_eq!(r.status, 200);
    let r = api.get(
        &format!("/api/v1/mailboxes/{mailbox}"),
        &Auth::Bearer(owner_key),
    );
    assert_eq!(r.status, 200);
}
