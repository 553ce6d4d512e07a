//! Golden on-disk fixtures: data directories written by this engine are
//! committed under `tests/fixtures/`: `v1/` (mailboxes, messages, users,
//! subscriptions, keys, deletions, dedupe; several segments, hint files),
//! `v1-operator/` (the kinds added within version 1, 11–14: UserDisabled,
//! AdminAudit, State, SubscriptionsEnded) and `v2/` (version 2: a message
//! carries the list of plus tags of its one copy; AddressTombstone, kind
//! 15) and `v3/` (version 3: DeliveryPart and DeliveryDone, kinds 16 and
//! 17, the retry memory of deliveries with several parts). Every future engine
//! must open them and see the same state, with no record skipped as unknown,
//! so a renumbered kind fails here. Regenerate only for a NEW version
//! directory, naming it: `UNCORREO_WRITE_FIXTURE=v2 cargo test -p
//! uncorreo-engine --test golden` (after adding that directory's test).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use uncorreo_engine::*;

const T0: u64 = 1_764_000_000_000;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn cfg(dir: &Path) -> EngineConfig {
    let mut c = config(dir);
    c.shards = 1;
    c.segment_bytes = 4096;
    c
}

fn write_fixture(dir: &Path) {
    let clock = Arc::new(ManualClock::new(T0));
    let e = Engine::open_with_clock(cfg(dir), clock.clone() as Arc<dyn Clock>).unwrap();
    let u = block_on(e.create_user("golden".into())).unwrap();
    block_on(e.add_subscription(
        u.id,
        Subscription {
            plan: "pro".into(),
            starts_at_ms: T0,
            ends_at_ms: None,
        },
    ))
    .unwrap();
    let k = block_on(e.create_api_key(u.id, [0xab; 32], "uct_golden12".into())).unwrap();
    block_on(e.create_api_key(u.id, [0xcd; 32], "uct_revoked1".into())).unwrap();
    block_on(e.revoke_api_key(ApiKeyId(k.id.0 + 1))).unwrap();
    let keep = mailbox(&e, "keep", 100, 86_400_000 * 3650);
    let gone = mailbox(&e, "gone", 100, 86_400_000 * 3650);
    block_on(e.create_mailbox(NewMailbox {
        address: addr("owned"),
        owner: Owner::User(u.id),
        expires_at_ms: T0 + 86_400_000 * 3650,
        max_messages: 5,
    }))
    .unwrap();
    for i in 0..12 {
        clock.advance(1000);
        deliver(
            &e,
            &["keep+t@uncorreo.test", "gone@uncorreo.test"],
            raw(700, i),
        );
    }
    block_on(e.delete_message(MessageId {
        mailbox: keep.id,
        seq: 3,
    }))
    .unwrap();
    block_on(e.delete_mailbox(gone.id)).unwrap();
    block_on(e.deliver(Delivery {
        raw: raw(300, 99),
        envelope_from: "sns@amazonses.com".into(),
        recipients: vec![Recipient::parse("owned@uncorreo.test").unwrap()],
        dedupe_key: Some("sns-golden".into()),
    }))
    .unwrap();
    e.shutdown();
    let _ = std::fs::remove_file(dir.join("LOCK"));
}

fn check(dir: &Path) {
    let clock = Arc::new(ManualClock::new(T0 + 100_000));
    let e = Engine::open_with_clock(cfg(dir), clock as Arc<dyn Clock>).unwrap();
    let u = e
        .user(UserId(0))
        .or_else(|| e.user(UserId(1)))
        .expect("user");
    assert_eq!(u.name, "golden");
    assert_eq!(
        u.subscriptions,
        vec![Subscription {
            plan: "pro".into(),
            starts_at_ms: T0,
            ends_at_ms: None
        }]
    );
    let keys = e.api_keys_of(u.id);
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].prefix, "uct_golden12");
    assert!(keys[0].revoked_at_ms.is_none());
    assert!(keys[1].revoked_at_ms.is_some());
    assert!(e.mailbox(&addr("gone")).is_none());
    let keep = e.mailbox(&addr("keep")).unwrap();
    assert_eq!((keep.message_count, keep.last_seq), (11, 12));
    let list = e.list_messages(keep.id, 0, 100).unwrap();
    let seqs: Vec<u64> = list.iter().map(|m| m.id.seq).collect();
    assert_eq!(seqs, vec![1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    for m in &list {
        assert_eq!(e.read_raw(m.id).unwrap(), raw(700, m.id.seq - 1));
        assert_eq!(m.plus_tag.as_deref(), Some("t"));
        assert_eq!(m.received_at_ms, T0 + 1000 * m.id.seq);
        assert_eq!(m.summary.codes, vec!["123456"]);
        // v1 records carry no extractor version: the first, keyword-only rules.
        assert_eq!(m.summary.version, 1);
    }
    summaries_are_derived_again_by_this_build(&e, keep.id);
    let owned = e.mailbox(&addr("owned")).unwrap();
    assert_eq!(owned.owner, Owner::User(u.id));
    let o = e.list_messages(owned.id, 0, 10).unwrap();
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].envelope_from, "sns@amazonses.com");
    let dup = block_on(e.deliver(Delivery {
        raw: raw(300, 99),
        envelope_from: String::new(),
        recipients: vec![Recipient::parse("owned@uncorreo.test").unwrap()],
        dedupe_key: Some("sns-golden".into()),
    }))
    .unwrap();
    assert_eq!(dup, DeliveryOutcome::Duplicate);
    assert_eq!(e.stats().corrupt_records, 0);
}

#[test]
fn version_1_fixture_opens_with_the_same_state() {
    if std::env::var("UNCORREO_WRITE_FIXTURE").as_deref() == Ok("v1") {
        let d = fixture_dir();
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        write_fixture(&d);
    }
    // Work on copies: opening writes (a fresh segment, maybe hints).
    let with_hints = copy_dir(&fixture_dir());
    check(with_hints.path());
    let scanned = copy_dir(&fixture_dir());
    remove_hints(scanned.path());
    check(scanned.path());
}

fn operator_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-operator")
}

fn write_operator_fixture(dir: &Path) {
    let clock = Arc::new(ManualClock::new(T0));
    let e = Engine::open_with_clock(cfg(dir), clock.clone() as Arc<dyn Clock>).unwrap();
    let u = block_on(e.create_user("operated".into())).unwrap();
    let sub = |plan: &str, at| Subscription {
        plan: plan.into(),
        starts_at_ms: at,
        ends_at_ms: None,
    };
    block_on(e.add_subscription(u.id, sub("pro", T0))).unwrap();
    clock.advance(1000);
    block_on(e.replace_subscriptions(u.id, sub("free", T0 + 1000))).unwrap();
    clock.advance(1000);
    block_on(e.disable_user(u.id)).unwrap();
    block_on(e.record_audit(AuditEntry {
        at_ms: T0 + 2000,
        actor: "uid 0 (root)".into(),
        action: "user disable".into(),
        target: format!("user {}", u.id.0),
    }))
    .unwrap();
    block_on(e.put_state(
        "webhook/endpoint/kept",
        Some("{\"url\":\"https://hook.example/\"}"),
    ))
    .unwrap();
    block_on(e.put_state("webhook/endpoint/gone", Some("{}"))).unwrap();
    block_on(e.put_state("webhook/endpoint/gone", None)).unwrap();
    e.shutdown();
    let _ = std::fs::remove_file(dir.join("LOCK"));
}

fn check_operator(dir: &Path) {
    let clock = Arc::new(ManualClock::new(T0 + 100_000));
    let e = Engine::open_with_clock(cfg(dir), clock as Arc<dyn Clock>).unwrap();
    let users = e.users();
    assert_eq!(users.len(), 1);
    let u = &users[0];
    assert_eq!(u.name, "operated");
    assert_eq!(
        u.subscriptions,
        vec![
            Subscription {
                plan: "pro".into(),
                starts_at_ms: T0,
                ends_at_ms: Some(T0 + 1000),
            },
            Subscription {
                plan: "free".into(),
                starts_at_ms: T0 + 1000,
                ends_at_ms: None,
            },
        ]
    );
    assert_eq!(e.user_disabled_at(u.id), Some(T0 + 2000));
    let trail = e.audit_trail();
    assert_eq!(trail.len(), 1);
    assert_eq!(
        (
            trail[0].at_ms,
            trail[0].actor.as_str(),
            trail[0].action.as_str()
        ),
        (T0 + 2000, "uid 0 (root)", "user disable")
    );
    assert_eq!(
        e.states_with_prefix("webhook/"),
        vec![(
            "webhook/endpoint/kept".to_owned(),
            "{\"url\":\"https://hook.example/\"}".to_owned()
        )]
    );
    assert_eq!(
        e.stats().corrupt_records,
        0,
        "a record kind was not recognized"
    );
}

#[test]
fn version_1_operator_fixture_opens_with_the_same_state() {
    if std::env::var("UNCORREO_WRITE_FIXTURE").as_deref() == Ok("v1-operator") {
        let d = operator_fixture_dir();
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        write_operator_fixture(&d);
    }
    let with_hints = copy_dir(&operator_fixture_dir());
    check_operator(with_hints.path());
    let scanned = copy_dir(&operator_fixture_dir());
    remove_hints(scanned.path());
    check_operator(scanned.path());
}

/// A summary stored by older extraction rules is derived again from the raw
/// bytes (on the summary pool, after the first read queued it), and then
/// served as this build's extractor sees the message.
fn summaries_are_derived_again_by_this_build(e: &Engine, mailbox: uncorreo_engine::MailboxId) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let list = e.list_messages(mailbox, 0, 100).unwrap();
        if list.iter().all(|m| !m.summary.is_stale()) {
            for m in &list {
                let raw = e.read_raw(m.id).unwrap();
                assert_eq!(m.summary, uncorreo_mail::summarize(&raw));
            }
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stale summaries never derived again"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn v2_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2")
}

/// Version 2: one copy per mailbox per delivery, with every plus tag it was
/// addressed to (none, one, or a list: the three forms of the tag field).
fn write_v2_fixture(dir: &Path) {
    let clock = Arc::new(ManualClock::new(T0));
    let e = Engine::open_with_clock(cfg(dir), clock.clone() as Arc<dyn Clock>).unwrap();
    mailbox(&e, "tags", 100, 86_400_000 * 3650);
    mailbox(&e, "other", 100, 86_400_000 * 3650);
    let sends: [&[&str]; 3] = [
        &[
            "tags+a@uncorreo.test",
            "tags+B@uncorreo.test",
            "tags@uncorreo.test",
            "tags+b@uncorreo.test",
            "other+x@uncorreo.test",
        ],
        &["tags+solo@uncorreo.test"],
        &["tags@uncorreo.test"],
    ];
    for (i, to) in sends.iter().enumerate() {
        clock.advance(1000);
        deliver(&e, to, raw(500, i as u64));
    }
    // An ended mailbox: its address is quarantined (AddressTombstone, kind 15).
    let ended = mailbox(&e, "ended", 10, 86_400_000);
    block_on(e.delete_mailbox(ended.id)).unwrap();
    e.shutdown();
    let _ = std::fs::remove_file(dir.join("LOCK"));
}

fn check_v2(dir: &Path) {
    let clock = Arc::new(ManualClock::new(T0 + 100_000));
    let e = Engine::open_with_clock(cfg(dir), clock as Arc<dyn Clock>).unwrap();
    let tags = e.mailbox(&addr("tags")).unwrap();
    assert_eq!((tags.message_count, tags.last_seq), (3, 3));
    let list = e.list_messages(tags.id, 0, 10).unwrap();
    let got: Vec<Vec<String>> = list.iter().map(|m| m.plus_tags.clone()).collect();
    assert_eq!(
        got,
        vec![
            vec!["a".to_owned(), "B".to_owned()],
            vec!["solo".to_owned()],
            vec![]
        ]
    );
    assert_eq!(list[0].plus_tag.as_deref(), Some("a"));
    assert_eq!(list[2].plus_tag, None);
    for m in &list {
        assert_eq!(e.read_raw(m.id).unwrap(), raw(500, m.id.seq - 1));
    }
    let other = e.mailbox(&addr("other")).unwrap();
    let o = e.list_messages(other.id, 0, 10).unwrap();
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].plus_tags, vec!["x".to_owned()]);
    let claim = |token: u8| {
        block_on(e.create_mailbox(NewMailbox {
            address: addr("ended"),
            owner: Owner::Anonymous {
                token_hash: [token; 32],
            },
            expires_at_ms: T0 + 86_400_000,
            max_messages: 1,
        }))
    };
    assert!(matches!(claim(8), Err(CreateMailboxError::AlreadyExists)));
    claim(7).expect("its owner takes it back");
    assert_eq!(e.stats().corrupt_records, 0);
}

#[test]
fn version_2_fixture_opens_with_the_same_state() {
    if std::env::var("UNCORREO_WRITE_FIXTURE").as_deref() == Ok("v2") {
        let d = v2_fixture_dir();
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        write_v2_fixture(&d);
    }
    // Its segments say version 2 (bytes 8..12 of the header).
    for entry in std::fs::read_dir(v2_fixture_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "seg") {
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes[8..12], 2u32.to_le_bytes(), "{}", path.display());
        }
    }
    let with_hints = copy_dir(&v2_fixture_dir());
    check_v2(with_hints.path());
    let scanned = copy_dir(&v2_fixture_dir());
    remove_hints(scanned.path());
    check_v2(scanned.path());
}

fn v3_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v3")
}

/// Two shards (a delivery key needs a delivery with several parts).
fn cfg3(dir: &Path) -> EngineConfig {
    let mut c = cfg(dir);
    c.shards = 2;
    c
}

/// `body` behind a trace line of its own, as every ingest path adds one.
fn traced(line: &str, body: &str) -> bytes::Bytes {
    format!("Received: {line}\r\nSubject: {body}\r\n\r\n{body}\r\n")
        .into_bytes()
        .into()
}

fn to_pair(locals: [&str; 2], raw: bytes::Bytes) -> Delivery {
    Delivery {
        raw,
        envelope_from: "app@sender.test".into(),
        recipients: locals
            .iter()
            .map(|l| Recipient::parse(&format!("{l}@uncorreo.test")).unwrap())
            .collect(),
        dedupe_key: None,
    }
}

/// `pair0` (shard 0) and `pair1` (shard 1): the fixture's two mailboxes.
fn v3_boxes(e: &Engine) {
    for (local, shard) in [("pair0", 0), ("pair1", 1)] {
        let m = mailbox(e, local, 100, 86_400_000 * 3650);
        assert_eq!(m.id.0 % 2, shard, "{local} lands in shard {shard}");
    }
}

/// Version 3: a delivery to both shards that succeeded (a DeliveryPart in
/// each, and a DeliveryDone in each, riding with the next batch), then one
/// whose sync failed on one shard (poisoned, the batch cut off): the other
/// shard's DeliveryPart is left for the retry.
fn write_v3_fixture(dir: &Path) {
    let clock = Arc::new(ManualClock::new(T0));
    let e = Engine::open_with_clock(cfg3(dir), clock.clone() as Arc<dyn Clock>).unwrap();
    v3_boxes(&e);
    clock.advance(1000);
    block_on(e.deliver(to_pair(["pair0", "pair1"], traced("a", "done")))).unwrap();
    // A batch in each shard, carrying the DeliveryDone records.
    mailbox(&e, "carry0", 100, 86_400_000 * 3650);
    mailbox(&e, "carry1", 100, 86_400_000 * 3650);
    clock.advance(1000);
    e.fail_next_sync_for_tests();
    assert!(block_on(e.deliver(to_pair(["pair0", "pair1"], traced("b", "half")))).is_err());
    e.shutdown();
}

fn check_v3(dir: &Path) {
    // Inside the retry window of the fixture's deliveries.
    let clock = Arc::new(ManualClock::new(T0 + 60_000));
    let e = Engine::open_with_clock(cfg3(dir), clock as Arc<dyn Clock>).unwrap();
    assert_eq!(e.stats().corrupt_records, 0, "no record skipped as unknown");
    let boxes = ["pair0", "pair1"].map(|l| e.mailbox(&addr(l)).unwrap());
    let count = |e: &Engine| {
        boxes
            .each_ref()
            .map(|m| e.list_messages(m.id, 0, 100).unwrap().len())
    };
    let before = count(&e);
    assert_eq!(
        before.iter().sum::<usize>(),
        3,
        "{before:?}: one part of `half` was stored"
    );
    let kept = boxes
        .iter()
        .zip(before)
        .find(|(_, n)| *n == 2)
        .map(|(m, _)| e.list_messages(m.id, 0, 100).unwrap()[1].id)
        .unwrap();
    // The failed delivery's retry: the stored part is not stored again.
    let retry = block_on(e.deliver(to_pair(["pair0", "pair1"], traced("c", "half")))).unwrap();
    let DeliveryOutcome::Delivered { stored, .. } = retry else {
        panic!("{retry:?}")
    };
    assert!(stored.contains(&kept), "{stored:?} names {kept:?}");
    assert_eq!(count(&e), [2, 2]);
    // The delivery that succeeded is done: the same bytes are new again.
    block_on(e.deliver(to_pair(["pair0", "pair1"], traced("d", "done")))).unwrap();
    assert_eq!(count(&e), [3, 3]);
    e.shutdown();
}

#[test]
fn version_3_fixture_opens_with_the_same_state() {
    if std::env::var("UNCORREO_WRITE_FIXTURE").as_deref() == Ok("v3") {
        let d = v3_fixture_dir();
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        write_v3_fixture(&d);
        let _ = std::fs::remove_file(d.join("LOCK"));
    }
    for entry in std::fs::read_dir(v3_fixture_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "seg") {
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes[8..12], 3u32.to_le_bytes(), "{}", path.display());
        }
    }
    let with_hints = copy_dir(&v3_fixture_dir());
    check_v3(with_hints.path());
    let scanned = copy_dir(&v3_fixture_dir());
    remove_hints(scanned.path());
    check_v3(scanned.path());
}

#[test]
fn a_version_1_log_compacted_and_reopened_by_this_build_reads_the_same() {
    let dir = copy_dir(&fixture_dir());
    {
        let clock = Arc::new(ManualClock::new(T0 + 100_000));
        let e = Engine::open_with_clock(cfg(dir.path()), clock as Arc<dyn Clock>).unwrap();
        e.compact_now().unwrap();
        e.shutdown();
    }
    let _ = std::fs::remove_file(dir.path().join("LOCK"));
    check(dir.path());
}
