//! Load-testing campaigns (issue #18) through the real interfaces: the REST
//! routes, mail over SMTP from Python's `smtplib` and over HTTP send, the
//! report before and after a restart, and the 10,000-recipient campaign
//! over 100 connections with deliberate duplicate Message-IDs.

use serde_json::{json, Value};

use super::{Api, Auth};
use crate::support::DOMAIN;

fn create(api: &Api, key: &str, body: Value) -> Value {
    let r = api.call(
        "POST",
        "/api/v1/campaigns",
        &Auth::Bearer(key.to_owned()),
        Some(body),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert!(r
        .header("location")
        .is_some_and(|l| l.starts_with("/api/v1/campaigns/")));
    r.json()
}

fn report(api: &Api, key: &str, id: &str) -> Value {
    let r = api.get(
        &format!("/api/v1/campaigns/{id}/report"),
        &Auth::Bearer(key.to_owned()),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// Python's smtplib: `load.py HOST PORT SPEC_JSON` sends `count` messages
/// over `connections` parallel connections, one recipient each
/// (`rcpt_format` with `{i}`), Message-ID `<m{i}@load.test>` except that
/// every message `i` in `duplicate_of` reuses the Message-ID of the message
/// it names. Prints the codes it got, by code.
const LOAD_PY: &str = r#"
import json, smtplib, sys, threading, email.utils
host, port, spec = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
count, conns = spec["count"], spec["connections"]
dups = {int(k): v for k, v in spec.get("duplicate_of", {}).items()}
codes, lock = {}, threading.Lock()
def worker(w):
    with smtplib.SMTP(host, port, timeout=120) as s:
        s.ehlo("load.test")
        for i in range(w, count, conns):
            mid = dups.get(i, i)
            msg = ("Message-ID: <m%d@load.test>\r\nDate: %s\r\nFrom: load@load.test\r\nSubject: load %d\r\n\r\nbody %d\r\n"
                   % (mid, email.utils.formatdate(usegmt=True), i, i)).encode()
            try:
                s.sendmail("load@load.test", [spec["rcpt_format"].format(i=i)], msg)
                code = 250
            except smtplib.SMTPRecipientsRefused as e:
                code = list(e.recipients.values())[0][0]
            except smtplib.SMTPDataError as e:
                code = e.smtp_code
            with lock:
                codes[code] = codes.get(code, 0) + 1
threads = [threading.Thread(target=worker, args=(w,)) for w in range(conns)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(codes))
"#;

fn load(api: &Api, spec: Value) -> Value {
    let smtp = api.server.smtp;
    let out = crate::smtp::python(
        LOAD_PY,
        &[
            &smtp.ip().to_string(),
            &smtp.port().to_string(),
            &spec.to_string(),
        ],
    );
    serde_json::from_str(out.trim()).unwrap()
}

#[test]
fn campaigns_need_an_api_key_and_count_like_mailboxes_in_the_plan() {
    let api = Api::start_with(|c| {
        let mut tiny = c.plans.0["free"];
        tiny.max_mailboxes = 3;
        c.plans.0.insert("tiny".to_owned(), tiny);
    });
    let key = api.user("tiny");
    let auth = Auth::Bearer(key.clone());
    let body = json!({"name": "quota", "store": "count"});
    // No credential: 401; an unknown key: 401; a session token: 403.
    let r = api.call("POST", "/api/v1/campaigns", &Auth::None, Some(body.clone()));
    assert_eq!(r.status, 401);
    let r = api.call(
        "POST",
        "/api/v1/campaigns",
        &Auth::Bearer("uct_nope".into()),
        Some(body.clone()),
    );
    assert_eq!(r.status, 401, "{}", r.problem());
    let (_, token) = api.mailbox(&Auth::None, json!({}));
    let r = api.call(
        "POST",
        "/api/v1/campaigns",
        &Auth::Session(token.unwrap()),
        Some(body.clone()),
    );
    assert_eq!(r.status, 403, "{}", r.problem());
    // This plan holds 3 live mailboxes: 2 mailboxes + 1 campaign fill it.
    api.mailbox(&auth, json!({}));
    api.mailbox(&auth, json!({}));
    let c = create(&api, &key, body.clone());
    let r = api.call("POST", "/api/v1/campaigns", &auth, Some(body.clone()));
    assert_eq!((r.status, r.problem()), (403, "mailbox-limit".to_owned()));
    let r = api.call("POST", "/api/v1/mailboxes", &auth, Some(json!({})));
    assert_eq!((r.status, r.problem()), (403, "mailbox-limit".to_owned()));
    // Listed, read, and not visible to another user.
    let list = api.get("/api/v1/campaigns", &auth).json();
    assert_eq!(list["campaigns"][0]["id"], c["id"]);
    let id = c["id"].as_str().unwrap();
    assert_eq!(c["domains"][0], format!("c-{id}.{DOMAIN}"));
    let other = Auth::Bearer(api.user("free"));
    assert_eq!(
        api.get(&format!("/api/v1/campaigns/{id}"), &other).status,
        404
    );
    assert_eq!(
        api.get(&format!("/api/v1/campaigns/{id}/report"), &other)
            .status,
        404
    );
    // Deleting frees the slot.
    assert_eq!(
        api.call("DELETE", &format!("/api/v1/campaigns/{id}"), &auth, None)
            .status,
        204
    );
    assert_eq!(
        api.get(&format!("/api/v1/campaigns/{id}"), &auth).status,
        404
    );
    create(&api, &key, body);
    // Bad input is 422 naming the field.
    for (bad, field) in [
        (json!({"name": ""}), "name"),
        (
            json!({"name": "x", "address_pattern": "*@uncorreo.test"}),
            "address_pattern",
        ),
        (
            json!({"name": "x", "address_pattern": "load-*@elsewhere.test"}),
            "address_pattern",
        ),
        (
            json!({"name": "x", "sent_at_header": "Bad:Header"}),
            "sent_at_header",
        ),
    ] {
        let r = api.call(
            "POST",
            "/api/v1/campaigns",
            &Auth::Bearer(api.user("pro")),
            Some(bad.clone()),
        );
        assert_eq!(r.status, 422, "{bad}: {}", String::from_utf8_lossy(&r.body));
        assert!(String::from_utf8_lossy(&r.body).contains(field), "{bad}");
    }
}

#[test]
fn smtp_and_http_send_reach_a_campaign_and_its_report_survives_a_restart() {
    let mut api = Api::start();
    let key = api.user("pro");
    let auth = Auth::Bearer(key.clone());
    let c = create(
        &api,
        &key,
        json!({"name": "full", "address_pattern": "load-*@uncorreo.test", "sent_at_header": "X-Sent-At"}),
    );
    let id = c["id"].as_str().unwrap().to_owned();
    // A mailbox at an address the pattern covers keeps its own mail.
    let (kept, _) = api.mailbox(&auth, json!({"local_part": "load-kept"}));
    let msg = |mid: &str| {
        format!(
            "Message-ID: <{mid}>\r\nX-Sent-At: 2026-01-01T00:00:00Z\r\nSubject: s\r\n\r\nbody\r\n"
        )
        .into_bytes()
    };
    crate::api::smtp_send(
        api.server.smtp,
        "a@x.test",
        &format!("one@c-{id}.{DOMAIN}"),
        &msg("1@x"),
    );
    crate::api::smtp_send(
        api.server.smtp,
        "a@x.test",
        "load-7@uncorreo.test",
        &msg("2@x"),
    );
    crate::api::smtp_send(
        api.server.smtp,
        "a@x.test",
        "LOAD-7@uncorreo.test",
        &msg("1@x"),
    );
    crate::api::smtp_send(api.server.smtp, "a@x.test", &kept, &msg("kept@x"));
    // HTTP send to a campaign address, with the owner's key.
    let r = api
        .client
        .post(
            api.server
                .url("/api/v1/mailboxes/load-http@uncorreo.test/messages"),
        )
        .bearer_auth(&key)
        .header("content-type", "message/rfc822")
        .body(msg("3@x"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let before = report(&api, &key, &id);
    assert_eq!(before["accepted"], 4, "{before}");
    assert_eq!(before["unique_message_ids"], 3);
    assert_eq!(
        before["duplicates"],
        json!([{"message_id": "<1@x>", "count": 2}])
    );
    assert_eq!(
        before["distinct_recipients"], 3,
        "recipients are counted case-blind? {before}"
    );
    assert_eq!(before["latency"]["header"], "X-Sent-At");
    assert_eq!(before["latency"]["count"], 4);
    let page = api
        .get(
            &format!("/api/v1/campaigns/{id}/messages?recipient=load-7@uncorreo.test&limit=1"),
            &auth,
        )
        .json();
    assert_eq!(page["messages"].as_array().unwrap().len(), 1, "{page}");
    let after = page["next_after"].as_u64().unwrap();
    let page2 = api
        .get(
            &format!(
                "/api/v1/campaigns/{id}/messages?recipient=load-7@uncorreo.test&after={after}"
            ),
            &auth,
        )
        .json();
    assert_eq!(page2["messages"][0]["message_id"], "<1@x>", "{page2}");
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(page2["messages"][0]["raw_base64"].as_str().unwrap())
        .unwrap();
    assert!(
        raw.starts_with(b"Received: from "),
        "our trace header first"
    );
    assert!(raw.ends_with(&msg("1@x")), "then the bytes as sent");

    // Restart on the same data directory: the report is rebuilt exactly.
    api.server.stop();
    let data = std::mem::replace(&mut api.server.data, tempfile::tempdir().unwrap());
    let config = crate::support::test_config(data.path());
    let appliance = uncorreo::Appliance::start(config).expect("restarts");
    api.server = crate::support::TestServer {
        smtp: appliance.smtp_addr,
        http: appliance.http_addr,
        engine: appliance.engine.clone(),
        appliance: Some(appliance),
        data,
    };
    assert_eq!(report(&api, &key, &id), before);
}

#[test]
fn ten_thousand_recipients_over_100_connections_are_counted_exactly_with_every_duplicate_named() {
    let api = Api::start();
    let key = api.user("pro");
    let c = create(&api, &key, json!({"name": "10k", "store": "count"}));
    let id = c["id"].as_str().unwrap().to_owned();
    let disk_before = api.server.engine.stats().disk_bytes;
    // 1% deliberate duplicates: message 100k+99 reuses message 100k's Message-ID.
    let duplicate_of: serde_json::Map<String, Value> = (0..100)
        .map(|k| ((k * 100 + 99).to_string(), json!(k * 100)))
        .collect();
    let codes = load(
        &api,
        json!({"count": 10_000, "connections": 100, "rcpt_format": format!("u{{i}}@c-{id}.{DOMAIN}"), "duplicate_of": duplicate_of}),
    );
    assert_eq!(codes, json!({"250": 10_000}));
    let r = report(&api, &key, &id);
    assert_eq!(r["accepted"], 10_000, "{r}");
    assert_eq!(r["refused"], json!({}));
    assert_eq!(r["distinct_recipients"], 10_000);
    assert_eq!(r["unique_message_ids"], 9_900);
    assert_eq!(r["duplicate_message_ids"], 100);
    assert_eq!(r["duplicate_messages"], 100);
    let mut named: Vec<String> = r["duplicates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["count"], 2, "{d}");
            d["message_id"].as_str().unwrap().to_owned()
        })
        .collect();
    named.sort();
    let mut sent: Vec<String> = (0..100)
        .map(|k| format!("<m{}@load.test>", k * 100))
        .collect();
    sent.sort();
    assert_eq!(named, sent);
    assert_eq!(r["latency"]["count"], 10_000);
    assert!(r["first_arrival"].is_string() && r["last_arrival"].is_string());
    // `count` keeps metadata only: at most 256 bytes of log per message.
    let per_message = (api.server.engine.stats().disk_bytes - disk_before) / 10_000;
    assert!(per_message <= 256, "{per_message} bytes per message");
}

/// A message for a live-report test, with a Message-ID of its own.
fn live_message(i: usize) -> Vec<u8> {
    format!("Message-ID: <live{i}@load.test>\r\nFrom: load@load.test\r\nSubject: live {i}\r\n\r\nbody {i}\r\n")
        .into_bytes()
}

/// The reply code to `RCPT TO:<to>` in a fresh SMTP session.
fn rcpt_code(smtp: std::net::SocketAddr, to: &str) -> String {
    let (mut c, _) = crate::support::Raw::connect(smtp);
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<load@load.test>");
    let reply = c.cmd(&format!("RCPT TO:<{to}>"));
    c.cmd("QUIT");
    crate::support::code(&reply).to_owned()
}

#[test]
fn the_report_streams_over_sse_as_mail_arrives_and_ends_when_the_campaign_is_deleted() {
    use crate::realtime::Sse;
    let api = Api::start_with(|c| {
        c.realtime.max_subscribers_per_mailbox = 1;
        // No keep-alive comments, so a report that never comes is a hang the reader names.
        c.realtime.ping_interval_secs = 3600;
    });
    let key = api.user("free");
    let auth = Auth::Bearer(key.clone());
    let c = create(&api, &key, json!({"name": "live", "store": "count"}));
    let id = c["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/campaigns/{id}/report/stream");
    // The report's credentials: an unknown key 401, another owner 404.
    let r = api.get(&path, &Auth::Bearer("uct_nope".into()));
    assert_eq!(r.status, 401, "{}", r.problem());
    assert_eq!(api.get(&path, &Auth::Bearer(api.user("free"))).status, 404);
    let url = format!("http://{}{path}", api.server.http);
    let rt = crate::realtime::rt();
    let mut sse = rt.block_on(Sse::open(&url, &key, None)).unwrap();
    // The current report at once.
    let first = rt.block_on(sse.next()).expect("a first report");
    assert_eq!(first.event, "report", "{first:?}");
    let v: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(
        (v["campaign"].as_str(), v["accepted"].as_u64()),
        (Some(id.as_str()), Some(0))
    );
    // One stream per campaign here (the per-mailbox subscriber limit): 429.
    let (status, problem) = rt.block_on(Sse::open(&url, &key, None)).err().unwrap();
    assert_eq!((status, problem["type"].as_str().is_some()), (429, true));
    // Mail sent after the stream opened shows up in a later report.
    let sent = 3;
    for i in 0..sent {
        let rcpt = format!("user-{i}@c-{id}.{DOMAIN}");
        super::smtp_send(api.server.smtp, "load@load.test", &rcpt, &live_message(i));
    }
    let mut accepted = 0;
    let mut last = Value::Null;
    while accepted < sent as u64 {
        let ev = rt.block_on(sse.next()).expect("the stream ended early");
        assert_eq!(ev.event, "report", "{ev:?}");
        last = serde_json::from_str(&ev.data).unwrap();
        let now = last["accepted"].as_u64().unwrap();
        assert!(
            now >= accepted,
            "a report went back: {now} after {accepted}"
        );
        accepted = now;
    }
    assert_eq!(accepted, sent as u64);
    assert_eq!(last["distinct_recipients"], sent);
    assert_eq!(last["unique_message_ids"], sent);
    // Deleting the campaign ends the stream with `end`.
    let r = api.call("DELETE", &format!("/api/v1/campaigns/{id}"), &auth, None);
    assert_eq!(r.status, 204);
    let end = loop {
        let ev = rt.block_on(sse.next()).expect("no end event");
        if ev.event != "report" {
            break ev;
        }
    };
    assert_eq!(end.event, "end", "{end:?}");
    let v: Value = serde_json::from_str(&end.data).unwrap();
    assert_eq!(v, json!({"event": "end", "reason": "campaign_gone"}));
    assert!(
        rt.block_on(sse.next()).is_none(),
        "the body goes on after end"
    );
}

#[test]
fn the_report_stream_ends_when_the_server_shuts_down() {
    use crate::realtime::Sse;
    // No keep-alive comments, so a stream that does not end is a hang the reader names.
    let api = Api::start_with(|c| c.realtime.ping_interval_secs = 3600);
    let key = api.user("free");
    let id = create(&api, &key, json!({"name": "down"}))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!(
        "http://{}/api/v1/campaigns/{id}/report/stream",
        api.server.http
    );
    let rt = crate::realtime::rt();
    let mut sse = rt.block_on(Sse::open(&url, &key, None)).unwrap();
    assert_eq!(rt.block_on(sse.next()).unwrap().event, "report");
    // Without the stream ending, the HTTP server's graceful drain would wait forever.
    let stopper = std::thread::spawn(move || {
        let mut api = api;
        api.server.stop();
    });
    let end = rt.block_on(sse.next()).expect("no end event");
    let v: Value = serde_json::from_str(&end.data).unwrap();
    assert_eq!(
        (end.event.as_str(), v["reason"].as_str()),
        ("end", Some("shutdown"))
    );
    assert!(rt.block_on(sse.next()).is_none());
    stopper.join().unwrap();
}

#[test]
fn metrics_count_each_live_campaign_by_id_with_fault_refusals_and_drop_it_when_deleted() {
    let api = Api::start();
    let key = api.user("free");
    let auth = Auth::Bearer(key.clone());
    let id = create(&api, &key, json!({"name": "metrics"}))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let plan = json!({"rules": [{"when": "first", "n": 1, "reply": "451 4.7.1 try later"}]});
    let r = api.call(
        "PUT",
        &format!("/api/v1/campaigns/{id}/faults"),
        &auth,
        Some(plan),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rcpt = format!("app@c-{id}.{DOMAIN}");
    assert_eq!(rcpt_code(api.server.smtp, &rcpt), "451");
    for i in 0..2 {
        super::smtp_send(api.server.smtp, "load@load.test", &rcpt, &live_message(i));
    }
    let bytes = report(&api, &key, &id)["bytes"].as_u64().unwrap();
    assert!(bytes > 0);
    let scrape = || {
        let r = api.get("/metrics", &Auth::None);
        assert_eq!(r.status, 200);
        String::from_utf8(r.body).unwrap()
    };
    let text = scrape();
    let (ok, out) = super::ops::run_tool(
        std::process::Command::new("promtool").args(["check", "metrics"]),
        Some(text.as_bytes()),
        "promtool",
    );
    assert!(ok, "promtool check metrics failed:\n{out}\n---\n{text}");
    for needle in [
        "# TYPE uncorreo_campaign_messages_total counter".to_owned(),
        format!("uncorreo_campaign_messages_total{{campaign=\"{id}\"}} 2\n"),
        format!("uncorreo_campaign_bytes_total{{campaign=\"{id}\"}} {bytes}\n"),
        format!("uncorreo_campaign_refused_total{{campaign=\"{id}\",code=\"451\"}} 1\n"),
    ] {
        assert!(text.contains(&needle), "missing {needle:?} in\n{text}");
    }
    let r = api.call("DELETE", &format!("/api/v1/campaigns/{id}"), &auth, None);
    assert_eq!(r.status, 204);
    let text = scrape();
    assert!(
        !text.contains(&format!("campaign=\"{id}\"")),
        "a deleted campaign's series stayed:\n{text}"
    );
}

/// A mailbox's fault plan ends with the mailbox: one made again at the same
/// address takes mail (a plan left behind would refuse it with nothing to
/// say why), and its plan reads as none.
#[test]
fn a_mailbox_made_again_at_an_address_does_not_inherit_the_old_ones_fault_plan() {
    let api = Api::start();
    let auth = Auth::Bearer(api.user("free"));
    let (address, _) = api.mailbox(&auth, json!({"local_part": "faulty"}));
    let plan = json!({"rules": [{"when": "first", "n": 100, "reply": "451 4.7.1 try later"}]});
    let faults = format!("/api/v1/mailboxes/{address}/faults");
    let r = api.call("PUT", &faults, &auth, Some(plan));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(rcpt_code(api.server.smtp, &address), "451");
    let r = api.call(
        "DELETE",
        &format!("/api/v1/mailboxes/{address}"),
        &auth,
        None,
    );
    assert_eq!(r.status, 204);
    let (again, _) = api.mailbox(&auth, json!({"local_part": "faulty"}));
    assert_eq!(again, address);
    assert_eq!(rcpt_code(api.server.smtp, &address), "250");
    let r = api.get(&faults, &auth);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["rules"], json!([]), "{}", r.json());
}

/// Plans of mailboxes that ended never fill the appliance: with every plan
/// slot taken by them, a new plan makes them go and is put in force.
#[test]
fn plans_of_ended_mailboxes_make_room_for_a_new_one_at_the_cap() {
    let api = Api::start();
    let auth = Auth::Bearer(api.user("free"));
    let (address, _) = api.mailbox(&auth, json!({"local_part": "fresh"}));
    let faults = &api.server.appliance.as_ref().expect("running").faults;
    let plan: uncorreo_faults::Plan = serde_json::from_value(
        json!({"rules": [{"when": "first", "n": 1, "reply": "451 4.7.1 try later"}]}),
    )
    .expect("plan");
    // As left by disposable mailboxes that expired with their plans.
    for i in 0..uncorreo_faults::MAX_PLANS {
        let gone = uncorreo_faults::Target::Mailbox(format!("gone{i}@{DOMAIN}"));
        faults.set(gone, plan.clone()).expect("a slot");
    }
    let fresh = uncorreo_faults::Target::Mailbox(address.clone());
    assert!(faults.full_without(&fresh));
    let r = api.call(
        "PUT",
        &format!("/api/v1/mailboxes/{address}/faults"),
        &auth,
        Some(serde_json::to_value(&plan).expect("json")),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(faults.targets(), vec![fresh]);
    assert_eq!(rcpt_code(api.server.smtp, &address), "451");
}
