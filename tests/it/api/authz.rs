//! The authorization matrix: every route × every wrong credential is
//! refused, and "not yours" is indistinguishable from "does not exist"
//! (same status, same body). Plus the tidy check that the matrix, the
//! router and the OpenAPI document list the same routes.

use std::collections::BTreeSet;

use super::{fill, Api, Auth, Resp};
use serde_json::json;

/// How a route treats callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// No credentials needed (probes, metrics, the document).
    Public,
    /// Anyone may call it; it acts on the caller's own things only.
    Own,
    /// Scoped to one mailbox in the path.
    Mailbox,
    /// Needs an API key; scoped to one key in the path.
    Key,
    /// Scoped to one mailbox like [`Class::Mailbox`], but a long-lived
    /// stream (WebSocket, SSE): refusals are checked here, the owner's
    /// stream in the `realtime` tests.
    Stream,
    /// Needs an API key; scoped to one campaign in the path.
    Campaign,
}

/// Every route of the API: (method, path template, class).
const MATRIX: &[(&str, &str, Class)] = &[
    ("GET", "/health", Class::Public),
    ("GET", "/ready", Class::Public),
    ("GET", "/metrics", Class::Public),
    ("GET", "/api/v1/openapi.json", Class::Public),
    // Authenticated by the SNS signature in the body, not by credentials:
    // an unsigned request is dropped with 200 and stores nothing.
    ("POST", "/api/v1/ses/inbound", Class::Public),
    ("POST", "/api/v1/mailboxes", Class::Own),
    ("GET", "/api/v1/mailboxes", Class::Own),
    ("GET", "/api/v1/mailboxes/{address}", Class::Mailbox),
    ("DELETE", "/api/v1/mailboxes/{address}", Class::Mailbox),
    (
        "GET",
        "/api/v1/mailboxes/{address}/messages",
        Class::Mailbox,
    ),
    (
        "POST",
        "/api/v1/mailboxes/{address}/messages",
        Class::Mailbox,
    ),
    (
        "GET",
        "/api/v1/mailboxes/{address}/messages/{id}",
        Class::Mailbox,
    ),
    (
        "DELETE",
        "/api/v1/mailboxes/{address}/messages/{id}",
        Class::Mailbox,
    ),
    (
        "GET",
        "/api/v1/mailboxes/{address}/messages/{id}/raw",
        Class::Mailbox,
    ),
    (
        "GET",
        "/api/v1/mailboxes/{address}/messages/{id}/html",
        Class::Mailbox,
    ),
    (
        "GET",
        "/api/v1/mailboxes/{address}/messages/{id}/attachments/{n}",
        Class::Mailbox,
    ),
    ("POST", "/api/v1/keys", Class::Own),
    ("GET", "/api/v1/keys", Class::Own),
    ("DELETE", "/api/v1/keys/{id}", Class::Key),
    ("GET", "/ws/inbox/{address}", Class::Stream),
    ("GET", "/api/v1/mailboxes/{address}/events", Class::Stream),
    ("GET", "/api/v1/mailboxes/{address}/wait", Class::Mailbox),
    (
        "POST",
        "/api/v1/mailboxes/{address}/webhooks",
        Class::Mailbox,
    ),
    (
        "GET",
        "/api/v1/mailboxes/{address}/webhooks",
        Class::Mailbox,
    ),
    (
        "DELETE",
        "/api/v1/mailboxes/{address}/webhooks/{webhook}",
        Class::Mailbox,
    ),
    ("POST", "/api/v1/webhooks", Class::Own),
    ("GET", "/api/v1/webhooks", Class::Own),
    ("DELETE", "/api/v1/webhooks/{webhook}", Class::Own),
    ("PUT", "/api/v1/mailboxes/{address}/faults", Class::Mailbox),
    ("GET", "/api/v1/mailboxes/{address}/faults", Class::Mailbox),
    ("POST", "/api/v1/campaigns", Class::Own),
    ("GET", "/api/v1/campaigns", Class::Own),
    ("GET", "/api/v1/campaigns/{id}", Class::Campaign),
    ("DELETE", "/api/v1/campaigns/{id}", Class::Campaign),
    ("GET", "/api/v1/campaigns/{id}/report", Class::Campaign),
    (
        "GET",
        "/api/v1/campaigns/{id}/report/stream",
        Class::Campaign,
    ),
    ("GET", "/api/v1/campaigns/{id}/messages", Class::Campaign),
    ("PUT", "/api/v1/campaigns/{id}/faults", Class::Campaign),
    ("GET", "/api/v1/campaigns/{id}/faults", Class::Campaign),
];

struct World {
    api: Api,
    /// The victim user's key, mailbox, message and key id.
    victim_key: String,
    victim_box: String,
    victim_msg: String,
    victim_key_id: String,
    /// An anonymous victim mailbox, its token and message.
    anon_box: String,
    anon_token: String,
    anon_msg: String,
    /// The attackers.
    other_key: String,
    other_box: String,
    other_token: String,
    revoked_key: String,
    victim_campaign: String,
}

fn world() -> World {
    let api = Api::start();
    let victim_key = api.user("free");
    let va = Auth::Bearer(victim_key.clone());
    let (victim_box, _) = api.mailbox(&va, json!({"local_part": "victim"}));
    let raw = super::signup_message(&victim_box);
    let victim_msg = super::deliver(&api.server, &victim_box, &raw).to_string();
    let keys = api.get("/api/v1/keys", &va).json();
    let victim_key_id = keys["keys"][0]["id"].to_string();

    let (anon_box, anon_token) = api.mailbox(&Auth::None, json!({"local_part": "anonvictim"}));
    let anon_token = anon_token.unwrap();
    let anon_msg = super::deliver(&api.server, &anon_box, &raw).to_string();

    let other_key = api.user("free");
    let (other_box, other_token) = api.mailbox(&Auth::None, json!({"local_part": "attacker"}));
    let other_token = other_token.unwrap();
    super::deliver(&api.server, &other_box, &raw);

    let revoked_key = api.user("free");
    let ra = Auth::Bearer(revoked_key.clone());
    let rid = api.get("/api/v1/keys", &ra).json()["keys"][0]["id"].to_string();
    let r = api.call("DELETE", &format!("/api/v1/keys/{rid}"), &ra, None);
    assert_eq!(r.status, 204);

    let r = api.call(
        "POST",
        "/api/v1/campaigns",
        &va,
        Some(json!({"name": "victim"})),
    );
    assert_eq!(r.status, 201);
    let victim_campaign = r.json()["id"].as_str().unwrap().to_owned();

    World {
        victim_campaign,
        api,
        victim_key,
        victim_box,
        victim_msg,
        victim_key_id,
        anon_box,
        anon_token,
        anon_msg,
        other_key,
        other_box,
        other_token,
        revoked_key,
    }
}

fn same(a: &Resp, b: &Resp, what: &str) {
    assert_eq!(a.status, b.status, "{what}: status differs");
    assert_eq!(
        String::from_utf8_lossy(&a.body),
        String::from_utf8_lossy(&b.body),
        "{what}: body differs"
    );
    assert_eq!(
        a.header("content-type"),
        b.header("content-type"),
        "{what}: content type differs"
    );
}

fn body_for(method: &str) -> Option<serde_json::Value> {
    (method == "POST").then(|| json!({}))
}

#[test]
fn every_route_refuses_every_wrong_credential_and_not_yours_looks_like_missing() {
    let w = world();
    let api = &w.api;
    let attackers = [
        ("no credential", Auth::None),
        ("another user's key", Auth::Bearer(w.other_key.clone())),
        (
            "another mailbox's token (bearer)",
            Auth::Bearer(w.other_token.clone()),
        ),
        (
            "another mailbox's token (header)",
            Auth::Session(w.other_token.clone()),
        ),
        ("a revoked key", Auth::Bearer(w.revoked_key.clone())),
        (
            "a made-up key",
            Auth::Bearer("uct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()),
        ),
    ];
    // Ids that look right but name nothing.
    let missing_box = format!("nobody@{}", crate::support::DOMAIN);
    let missing_msg = "ffff-1".to_owned();
    let missing_key_id = "999999".to_owned();

    for &(method, template, class) in MATRIX {
        match class {
            Class::Public => {
                for (who, auth) in &attackers {
                    let r = api.call(method, template, auth, None);
                    assert_eq!(r.status, 200, "{method} {template} as {who}");
                }
            }
            Class::Mailbox | Class::Stream => {
                for (victim_box, victim_msg) in
                    [(&w.victim_box, &w.victim_msg), (&w.anon_box, &w.anon_msg)]
                {
                    for (who, auth) in &attackers {
                        let theirs = api.call(
                            method,
                            &fill(template, victim_box, victim_msg, ""),
                            auth,
                            None,
                        );
                        let what = format!("{method} {template} on {victim_box} as {who}");
                        assert!(
                            matches!(theirs.status, 401 | 404),
                            "{what}: got {}",
                            theirs.status
                        );
                        let nothing = api.call(
                            method,
                            &fill(template, &missing_box, &missing_msg, ""),
                            auth,
                            None,
                        );
                        same(&theirs, &nothing, &what);
                        if template.contains("{id}") {
                            // A real message id of another mailbox, under a mailbox the
                            // attacker may see (their own), is not found either.
                            let own = match auth {
                                Auth::Bearer(t) | Auth::Session(t) if *t == w.other_token => {
                                    Some(&w.other_box)
                                }
                                _ => None,
                            };
                            if let Some(own_box) = own {
                                let cross = api.call(
                                    method,
                                    &fill(template, own_box, victim_msg, ""),
                                    auth,
                                    None,
                                );
                                same(&cross, &nothing, &format!("{what} (cross-mailbox id)"));
                                assert_eq!(cross.status, 404, "{what}");
                            }
                        }
                    }
                }
            }
            Class::Key => {
                for (who, auth) in &attackers {
                    let theirs = api.call(
                        method,
                        &fill(template, "", "", &w.victim_key_id),
                        auth,
                        None,
                    );
                    let what = format!("{method} {template} as {who}");
                    assert!(
                        matches!(theirs.status, 401 | 403 | 404),
                        "{what}: got {}",
                        theirs.status
                    );
                    let nothing =
                        api.call(method, &fill(template, "", "", &missing_key_id), auth, None);
                    same(&theirs, &nothing, &what);
                }
            }
            Class::Campaign => {
                for (who, auth) in &attackers {
                    let theirs = api.call(
                        method,
                        &template.replace("{id}", &w.victim_campaign),
                        auth,
                        None,
                    );
                    let what = format!("{method} {template} as {who}");
                    assert!(
                        matches!(theirs.status, 401 | 403 | 404),
                        "{what}: got {}",
                        theirs.status
                    );
                    let nothing = api.call(method, &template.replace("{id}", "ffff"), auth, None);
                    same(&theirs, &nothing, &what);
                }
            }
            Class::Own => {
                for (who, auth) in &attackers {
                    let r = api.call(method, template, auth, body_for(method));
                    let what = format!("{method} {template} as {who}");
                    let text = String::from_utf8_lossy(&r.body).into_owned();
                    // Nobody else's mailbox or key ever shows up.
                    for secret in [&w.victim_box, &w.anon_box, &w.victim_key, &w.anon_token] {
                        assert!(!text.contains(secret.as_str()), "{what}: leaked {secret}");
                    }
                    let key_prefix: String = w.victim_key.chars().take(12).collect();
                    assert!(!text.contains(&key_prefix), "{what}: leaked a key prefix");
                    match who {
                        w if w.contains("revoked") || w.contains("made-up") => {
                            assert_eq!(
                                (r.status, r.problem().as_str()),
                                (401, "invalid-credentials"),
                                "{what}"
                            );
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    // Nothing an attacker did touched the victims.
    let va = Auth::Bearer(w.victim_key.clone());
    let aa = Auth::Bearer(w.anon_token.clone());
    for (auth, bx, msg) in [
        (&va, &w.victim_box, &w.victim_msg),
        (&aa, &w.anon_box, &w.anon_msg),
    ] {
        for &(method, template, class) in MATRIX {
            if class == Class::Mailbox && method == "GET" {
                let r = api.call(method, &fill(template, bx, msg, ""), auth, None);
                assert_eq!(r.status, 200, "{method} {template} by its owner");
            }
        }
    }
    let keys = api.get("/api/v1/keys", &va).json();
    assert_eq!(keys["keys"][0]["revoked_at"], serde_json::Value::Null);
}

#[test]
fn credential_classes_get_their_documented_answers() {
    let w = world();
    let api = &w.api;
    let mb = format!("/api/v1/mailboxes/{}", w.victim_box);
    // No credential on a mailbox route: 401, not 404 (it does not depend on the mailbox).
    let r = api.get(&mb, &Auth::None);
    assert_eq!(
        (r.status, r.problem().as_str()),
        (401, "authentication-required")
    );
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    // Another user's key: the one not-found answer.
    let r = api.get(&mb, &Auth::Bearer(w.other_key.clone()));
    assert_eq!((r.status, r.problem().as_str()), (404, "not-found"));
    // A revoked key is refused everywhere, also where anonymous callers are welcome.
    let r = api.call(
        "POST",
        "/api/v1/mailboxes",
        &Auth::Bearer(w.revoked_key.clone()),
        None,
    );
    assert_eq!(
        (r.status, r.problem().as_str()),
        (401, "invalid-credentials")
    );
    // A session token does not open key management.
    let r = api.get("/api/v1/keys", &Auth::Session(w.anon_token.clone()));
    assert_eq!((r.status, r.problem().as_str()), (403, "api-key-required"));
    // A malformed Authorization header.
    let r = api
        .client
        .get(api.server.url(&mb))
        .header("authorization", "Basic dTpw")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // A session token lists exactly its own mailbox.
    let r = api
        .get("/api/v1/mailboxes", &Auth::Session(w.anon_token.clone()))
        .json();
    let listed: Vec<_> = r["mailboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["address"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, std::slice::from_ref(&w.anon_box));
    // The token works as a bearer and as X-Session-Token alike.
    let a = api.get(
        &format!("/api/v1/mailboxes/{}", w.anon_box),
        &Auth::Bearer(w.anon_token.clone()),
    );
    let b = api.get(
        &format!("/api/v1/mailboxes/{}", w.anon_box),
        &Auth::Session(w.anon_token.clone()),
    );
    assert_eq!((a.status, b.status), (200, 200));
    // A user lists only their mailboxes; keys list shows prefixes, never secrets.
    let keys = api
        .get("/api/v1/keys", &Auth::Bearer(w.victim_key.clone()))
        .json();
    let prefix = keys["keys"][0]["prefix"].as_str().unwrap();
    assert_eq!(prefix.len(), 12);
    assert!(w.victim_key.starts_with(prefix));
    assert!(!keys.to_string().contains(&w.victim_key));
}

#[test]
fn tidy_matrix_router_and_openapi_list_the_same_routes() {
    let matrix: BTreeSet<(String, String)> = MATRIX
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let documented: BTreeSet<(String, String)> =
        uncorreo_api::openapi::operations().into_iter().collect();
    let missing_in_matrix: Vec<_> = documented.difference(&matrix).collect();
    let missing_in_doc: Vec<_> = matrix.difference(&documented).collect();
    assert!(
        missing_in_matrix.is_empty(),
        "routes missing from the authorization matrix: {missing_in_matrix:?}"
    );
    assert!(
        missing_in_doc.is_empty(),
        "matrix routes missing from the OpenAPI document: {missing_in_doc:?}"
    );

    // Every documented route is served (the router has it, with that method).
    let api = Api::start();
    for (method, template) in &documented {
        let path = fill(template, "x@uncorreo.test", "1-1", "1");
        let r = api.call(method, &path, &Auth::None, None);
        if r.status == 404 || r.status == 405 {
            let kind = r.problem();
            assert!(
                kind != "no-such-route" && kind != "method-not-allowed",
                "{method} {template} is documented but not routed ({kind})"
            );
        }
    }

    // And the router has no route outside the documented registrations:
    // the api crate adds routes only through `utoipa_axum::routes!`, in each
    // module's `routes()`, which `openapi::api_router` merges (an
    // `OpenApiRouter` merges only another `OpenApiRouter`, docs included).
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("api/src");
    let mut offenders = Vec::new();
    // The one exception: Mailpit's routes are Mailpit's contract (its
    // swagger.json), not in our document; tests/mailpit.rs checks them.
    let mailpit = src.join("mailpit");
    for entry in walk(&src).into_iter().filter(|p| !p.starts_with(&mailpit)) {
        let text = std::fs::read_to_string(&entry).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let merges_documented_module = code.trim().starts_with(".merge(")
                && code.trim().ends_with("::routes())")
                && entry.ends_with("openapi.rs");
            if merges_documented_module {
                continue;
            }
            for bypass in [
                ".route(",
                ".route_service(",
                ".nest(",
                ".nest_service(",
                ".merge(",
            ] {
                if code.contains(bypass) {
                    offenders.push(format!("{}:{}: {}", entry.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "routes registered outside utoipa_axum::routes! (undocumented): {offenders:#?}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}
