//! Every limit of every plan, at its edge, with its exact answer: mailbox
//! count (`403 mailbox-limit`), TTL cap (`403 ttl-too-long`), messages per
//! mailbox (refused at delivery as `MailboxFull`), requests per minute
//! (`429 rate-limited` + `Retry-After`), plus the per-IP limit and the
//! per-user API key limit.

use super::{Api, Auth};
use serde_json::json;
use uncorreo::Config;
use uncorreo_api::Plan;
use uncorreo_engine::ResolveError;

fn plan(max_mailboxes: u32, max_messages: u32, max_ttl: u32, rpm: u32) -> Plan {
    Plan {
        max_mailboxes,
        max_messages_per_mailbox: max_messages,
        max_ttl_minutes: max_ttl,
        requests_per_minute: rpm,
    }
}

/// Small plans so each edge is cheap to reach.
fn small_plans(c: &mut Config) {
    c.plans
        .0
        .insert("anonymous".into(), plan(2, 2, 10, 1_000_000));
    c.plans.0.insert("free".into(), plan(3, 3, 20, 1_000_000));
    c.plans.0.insert("pro".into(), plan(4, 4, 30, 1_000_000));
}

fn minutes_between(created: &str, expires: &str) -> i64 {
    fn ms(s: &str) -> i64 {
        // YYYY-MM-DDTHH:MM:SS.mmmZ on the same day in these tests.
        let t = &s[11..23];
        let h: i64 = t[0..2].parse().unwrap();
        let m: i64 = t[3..5].parse().unwrap();
        let sec: i64 = t[6..8].parse().unwrap();
        let milli: i64 = t[9..12].parse().unwrap();
        let day: i64 = s[8..10].parse().unwrap();
        (((day * 24 + h) * 60 + m) * 60 + sec) * 1000 + milli
    }
    // Rounded: the expiry is computed just before the engine stamps creation.
    (ms(expires) - ms(created) + 30_000) / 60_000
}

/// The mailbox-count, TTL and message quotas of one plan, for one caller.
fn check_plan_edges(api: &Api, who: &str, auth: &Auth, p: Plan) {
    let create = |body: serde_json::Value| api.call("POST", "/api/v1/mailboxes", auth, Some(body));

    // TTL: the maximum is accepted, one more minute is refused, 0 is invalid.
    let r = create(json!({"ttl_minutes": p.max_ttl_minutes + 1}));
    assert_eq!(
        (r.status, r.problem().as_str()),
        (403, "ttl-too-long"),
        "{who}"
    );
    let r = create(json!({"ttl_minutes": 0}));
    assert_eq!(
        (r.status, r.problem().as_str()),
        (422, "invalid-request"),
        "{who}"
    );
    let r = create(json!({"ttl_minutes": p.max_ttl_minutes}));
    assert_eq!(r.status, 201, "{who}");
    let first = r.json();
    assert_eq!(
        minutes_between(
            first["created_at"].as_str().unwrap(),
            first["expires_at"].as_str().unwrap()
        ),
        i64::from(p.max_ttl_minutes),
        "{who}"
    );
    assert_eq!(first["max_messages"], p.max_messages_per_mailbox, "{who}");
    // Without a TTL: the default (60) capped at the plan's maximum.
    let r = create(json!({}));
    assert_eq!(r.status, 201, "{who}");
    let j = r.json();
    assert_eq!(
        minutes_between(
            j["created_at"].as_str().unwrap(),
            j["expires_at"].as_str().unwrap()
        ),
        i64::from(p.max_ttl_minutes.min(60)),
        "{who}"
    );

    // Mailbox count: up to the maximum, then 403 mailbox-limit.
    for _ in 2..p.max_mailboxes {
        assert_eq!(create(json!({})).status, 201, "{who}");
    }
    let r = create(json!({}));
    assert_eq!(
        (r.status, r.problem().as_str()),
        (403, "mailbox-limit"),
        "{who}"
    );
    // Deleting one frees its slot.
    let first_addr = first["address"].as_str().unwrap().to_owned();
    let del_auth = match first["session_token"].as_str() {
        Some(t) => Auth::Bearer(t.to_owned()),
        None => auth.clone(),
    };
    let r = api.call(
        "DELETE",
        &format!("/api/v1/mailboxes/{first_addr}"),
        &del_auth,
        None,
    );
    assert_eq!(r.status, 204, "{who}");
    let r = create(json!({}));
    assert_eq!(r.status, 201, "{who}");
    let last = r.json();
    let last_addr = last["address"].as_str().unwrap();

    // Messages per mailbox: the engine stores max, then refuses the recipient.
    for i in 0..p.max_messages_per_mailbox {
        super::deliver(
            &api.server,
            last_addr,
            format!("Subject: {i}\r\n\r\nx\r\n").as_bytes(),
        );
    }
    assert_eq!(
        api.server.engine.resolve(last_addr).unwrap_err(),
        ResolveError::MailboxFull,
        "{who}"
    );
}

#[test]
fn anonymous_plan_edges() {
    let api = Api::start_with(small_plans);
    check_plan_edges(&api, "anonymous", &Auth::None, plan(2, 2, 10, 0));
}

#[test]
fn free_plan_edges() {
    let api = Api::start_with(small_plans);
    let key = api.user("free");
    check_plan_edges(&api, "free", &Auth::Bearer(key), plan(3, 3, 20, 0));
}

#[test]
fn pro_plan_edges() {
    let api = Api::start_with(small_plans);
    let key = api.user("pro");
    check_plan_edges(&api, "pro", &Auth::Bearer(key), plan(4, 4, 30, 0));
}

#[test]
fn effective_plan_follows_active_subscriptions() {
    let api = Api::start_with(small_plans);
    let engine = &api.server.engine;
    // A user whose pro subscription has ended is on the default (free) plan.
    let user = crate::support::block_on(engine.create_user("lapsed".into())).unwrap();
    crate::support::block_on(engine.add_subscription(
        user.id,
        uncorreo_engine::Subscription {
            plan: "pro".into(),
            starts_at_ms: 0,
            ends_at_ms: Some(1),
        },
    ))
    .unwrap();
    let (_, key) = crate::support::block_on(uncorreo_api::keys::mint(
        &uncorreo_api::accounts::EngineAccounts(engine.clone()),
        user.id,
    ))
    .unwrap();
    let r = api.call(
        "POST",
        "/api/v1/mailboxes",
        &Auth::Bearer(key.clone()),
        Some(json!({"ttl_minutes": 21})),
    );
    assert_eq!(
        (r.status, r.problem().as_str()),
        (403, "ttl-too-long"),
        "free allows 20"
    );
    // Adding an active pro subscription lifts it to pro at once.
    crate::support::block_on(engine.add_subscription(
        user.id,
        uncorreo_engine::Subscription {
            plan: "pro".into(),
            starts_at_ms: 0,
            ends_at_ms: None,
        },
    ))
    .unwrap();
    let r = api.call(
        "POST",
        "/api/v1/mailboxes",
        &Auth::Bearer(key),
        Some(json!({"ttl_minutes": 30})),
    );
    assert_eq!(r.status, 201);
}

fn assert_limited(r: &super::Resp, per_minute: u64, what: &str) {
    assert_eq!(
        (r.status, r.problem().as_str()),
        (429, "rate-limited"),
        "{what}"
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    // One token comes back every 60/per_minute seconds.
    assert!(
        (1..=60 / per_minute).contains(&retry),
        "{what}: Retry-After {retry}"
    );
}

#[test]
fn requests_per_minute_of_each_plan() {
    let api = Api::start_with(|c| {
        c.plans.0.insert("anonymous".into(), plan(100, 5, 10, 3));
        c.plans.0.insert("free".into(), plan(100, 5, 10, 4));
        c.plans.0.insert("pro".into(), plan(100, 5, 10, 6));
    });
    // Anonymous: counted per client IP, with or without a session token.
    let (_, token) = api.mailbox(&Auth::None, json!({})); // 1
    let token = Auth::Session(token.unwrap());
    assert_eq!(api.get("/api/v1/mailboxes", &token).status, 200); // 2
    assert_eq!(api.get("/api/v1/mailboxes", &token).status, 200); // 3
    assert_limited(&api.get("/api/v1/mailboxes", &token), 3, "anonymous, 4th");
    assert_limited(
        &api.call("POST", "/api/v1/mailboxes", &Auth::None, None),
        3,
        "anonymous POST",
    );

    // Users: per key, at their plan's rate; other keys are unaffected.
    for (plan_name, rpm) in [("free", 4u64), ("pro", 6)] {
        let key = Auth::Bearer(api.user(plan_name));
        for i in 0..rpm {
            assert_eq!(
                api.get("/api/v1/keys", &key).status,
                200,
                "{plan_name} #{i}"
            );
        }
        assert_limited(&api.get("/api/v1/keys", &key), rpm, plan_name);
        assert_limited(&api.get("/api/v1/mailboxes", &key), rpm, plan_name);
    }
    let fresh = Auth::Bearer(api.user("free"));
    assert_eq!(api.get("/api/v1/keys", &fresh).status, 200);
    // Probes and scrapes are never rate-limited.
    for _ in 0..10 {
        assert_eq!(api.get("/health", &Auth::None).status, 200);
        assert_eq!(api.get("/metrics", &Auth::None).status, 200);
    }
}

#[test]
fn requests_per_minute_per_client_ip_whatever_the_credentials() {
    let api = Api::start_with(|c| c.limits.ip_requests_per_minute = 5);
    let a = Auth::Bearer(api.user("free"));
    let b = Auth::Bearer(api.user("pro"));
    for auth in [&a, &b, &a, &b, &Auth::None] {
        let r = api.get("/api/v1/mailboxes", auth);
        assert!(r.status == 200 || r.status == 401, "{}", r.status);
    }
    assert_limited(&api.get("/api/v1/keys", &a), 5, "6th from this IP");
    // Bad keys are counted too (no free guessing).
    assert_limited(
        &api.get("/api/v1/keys", &Auth::Bearer("uct_guess".into())),
        5,
        "a guess",
    );
}

#[test]
fn api_keys_per_user_are_capped() {
    let api = Api::start_with(|c| c.limits.max_api_keys_per_user = 2);
    let key = Auth::Bearer(api.user("free"));
    let r = api.call("POST", "/api/v1/keys", &key, None);
    assert_eq!(r.status, 201);
    let second = r.json();
    let secret = second["key"].as_str().unwrap();
    assert!(secret.starts_with("uct_") && secret.len() == 36);
    assert_eq!(second["prefix"].as_str().unwrap(), &secret[..12]);
    let r = api.call("POST", "/api/v1/keys", &key, None);
    assert_eq!((r.status, r.problem().as_str()), (403, "key-limit"));
    // The new key works; revoking it makes room again and it stops working.
    let new_key = Auth::Bearer(secret.to_owned());
    assert_eq!(api.get("/api/v1/keys", &new_key).status, 200);
    let r = api.call(
        "DELETE",
        &format!("/api/v1/keys/{}", second["id"]),
        &key,
        None,
    );
    assert_eq!(r.status, 204);
    let r = api.get("/api/v1/keys", &new_key);
    assert_eq!(
        (r.status, r.problem().as_str()),
        (401, "invalid-credentials")
    );
    let listed = api.get("/api/v1/keys", &key).json();
    assert!(listed["keys"][1]["revoked_at"].is_string());
    assert_eq!(api.call("POST", "/api/v1/keys", &key, None).status, 201);
}

#[test]
fn concurrent_creations_never_exceed_the_mailbox_quota() {
    let api = Api::start_with(|c| {
        c.plans.0.get_mut("free").unwrap().max_mailboxes = 5;
        c.plans.0.get_mut("anonymous").unwrap().max_mailboxes = 3;
    });
    let key = Auth::Bearer(api.user("free"));
    for (auth, max) in [(key, 5usize), (Auth::None, 3)] {
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..24)
                .map(|_| s.spawn(|| api.call("POST", "/api/v1/mailboxes", &auth, None).status))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let created = statuses.iter().filter(|&&s| s == 201).count();
        let refused = statuses.iter().filter(|&&s| s == 403).count();
        assert_eq!((created, refused), (max, 24 - max), "{statuses:?}");
    }
}

#[test]
fn client_ip_comes_from_the_proxy_only_when_trusted() {
    let send = |api: &Api, xff: &str| {
        api.client
            .get(api.server.url("/api/v1/mailboxes"))
            .header("x-forwarded-for", xff)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    // Trusted: each forwarded client has its own bucket; only the last
    // (proxy-appended) entry counts, so a forged first entry changes nothing.
    let api = Api::start_with(|c| {
        c.limits.ip_requests_per_minute = 2;
        c.limits.trust_forwarded_for = true;
    });
    assert_eq!(send(&api, "203.0.113.1"), 401);
    assert_eq!(send(&api, "198.51.100.7, 203.0.113.1"), 401);
    assert_eq!(send(&api, "203.0.113.1"), 429);
    assert_eq!(send(&api, "203.0.113.2"), 401);
    // Untrusted (the default): the header is ignored, the socket peer counts.
    let api = Api::start_with(|c| c.limits.ip_requests_per_minute = 2);
    assert_eq!(send(&api, "203.0.113.1"), 401);
    assert_eq!(send(&api, "203.0.113.2"), 401);
    assert_eq!(send(&api, "203.0.113.3"), 429);
}

#[test]
fn credential_length_is_capped() {
    let api = Api::start();
    let long = format!("uct_{}", "A".repeat(509));
    let r = api.get("/api/v1/keys", &Auth::Bearer(long));
    assert_eq!(
        (r.status, r.problem().as_str()),
        (401, "invalid-credentials")
    );
    let too_long = api.get("/api/v1/mailboxes", &Auth::Session("t".repeat(513)));
    assert_eq!(
        (too_long.status, too_long.problem().as_str()),
        (401, "invalid-credentials")
    );
    // 512 is still looked at (and simply unknown): refused for another reason.
    let r = api.get(
        "/api/v1/mailboxes/a@uncorreo.test",
        &Auth::Session("t".repeat(512)),
    );
    assert_eq!(
        (r.status, r.problem().as_str()),
        (401, "invalid-credentials")
    );
    assert_ne!(r.json()["detail"], too_long.json()["detail"]);
}
