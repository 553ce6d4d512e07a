//! The log-backed engine through its public API: durability across reopen,
//! recovery from torn tails and corruption, compaction, limits.

mod common;

use std::sync::Arc;

use common::*;
use uncorreo_engine::*;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_700_000_000_000))
}

#[test]
fn delivered_messages_survive_reopen_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut ids = Vec::new();
    {
        let e = open(dir.path(), &c);
        mailbox(&e, "a", 100, 3_600_000);
        mailbox(&e, "b", 100, 3_600_000);
        for i in 0..20 {
            let o = deliver(&e, &["a@uncorreo.test", "b+t@uncorreo.test"], raw(3000, i));
            ids.extend(stored(&o).into_iter().map(|id| (id, raw(3000, i))));
        }
        for (id, body) in &ids {
            assert_eq!(&e.read_raw(*id).unwrap(), body);
        }
        e.shutdown();
    }
    let e = open(dir.path(), &c);
    for (id, body) in &ids {
        assert_eq!(&e.read_raw(*id).unwrap(), body);
    }
    let a = e.mailbox(&addr("a")).unwrap();
    assert_eq!(a.message_count, 20);
    assert_eq!(a.last_seq, 20);
    let b = e.mailbox(&addr("b")).unwrap();
    let list = e.list_messages(b.id, 0, 100).unwrap();
    assert_eq!(list.len(), 20);
    assert_eq!(list[0].plus_tag.as_deref(), Some("t"));
    assert_eq!(list[0].summary.codes, vec!["123456"]);
    // Sequence numbers continue after restart, never reused.
    let o = deliver(&e, &["a@uncorreo.test"], raw(100, 99));
    assert_eq!(stored(&o)[0].seq, 21);
}

#[test]
fn second_open_of_the_same_dir_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let e = open(dir.path(), &c);
    let r = Engine::open_with_clock(config(dir.path()), c.clone() as Arc<dyn Clock>);
    assert!(matches!(r, Err(OpenError::Locked(_))));
    e.shutdown();
    drop(e);
    let _again = open(dir.path(), &c);
}

#[test]
fn users_keys_subscriptions_and_deletions_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let (user, key, mb_a, deleted_msg);
    {
        let e = open(dir.path(), &c);
        user = block_on(e.create_user("ana".into())).unwrap();
        block_on(e.add_subscription(
            user.id,
            Subscription {
                plan: "pro".into(),
                starts_at_ms: 1,
                ends_at_ms: None,
            },
        ))
        .unwrap();
        block_on(e.add_subscription(
            user.id,
            Subscription {
                plan: "team".into(),
                starts_at_ms: 2,
                ends_at_ms: Some(3),
            },
        ))
        .unwrap();
        key = block_on(e.create_api_key(user.id, [3; 32], "uct_abcdefgh".into())).unwrap();
        let k2 = block_on(e.create_api_key(user.id, [4; 32], "uct_zzzzzzzz".into())).unwrap();
        assert!(matches!(
            block_on(e.create_api_key(user.id, [3; 32], "dup".into())),
            Err(WriteError::AlreadyExists)
        ));
        block_on(e.revoke_api_key(k2.id)).unwrap();
        mb_a = mailbox(&e, "a", 10, 3_600_000);
        let gone = mailbox(&e, "gone", 10, 3_600_000);
        let ids = stored(&deliver(
            &e,
            &["a@uncorreo.test", "gone@uncorreo.test"],
            raw(500, 1),
        ));
        deliver(&e, &["a@uncorreo.test"], raw(500, 2));
        deleted_msg = ids[0];
        block_on(e.delete_message(deleted_msg)).unwrap();
        block_on(e.delete_mailbox(gone.id)).unwrap();
        e.shutdown();
    }
    let e = open(dir.path(), &c);
    let u = e.user(user.id).unwrap();
    assert_eq!(u.name, "ana");
    assert_eq!(
        u.subscriptions
            .iter()
            .map(|s| s.plan.as_str())
            .collect::<Vec<_>>(),
        ["pro", "team"]
    );
    assert_eq!(e.api_key_by_hash(&[3; 32]).unwrap(), key);
    assert!(e.api_key_by_hash(&[4; 32]).unwrap().revoked_at_ms.is_some());
    assert_eq!(e.api_keys_of(user.id).len(), 2);
    assert!(e.mailbox(&addr("gone")).is_none());
    assert!(matches!(
        e.read_raw(deleted_msg),
        Err(LookupError::NotFound)
    ));
    let a = e.mailbox_by_id(mb_a.id).unwrap();
    assert_eq!((a.message_count, a.last_seq), (1, 2));
}

#[test]
fn expired_mailbox_is_reaped_by_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let e = open(dir.path(), &c);
    mailbox(&e, "ana", 1, 2000);
    c.advance(2000);
    assert!(e.mailbox(&addr("ana")).is_none());
    assert_eq!(e.stats().mailboxes, 1);
    e.compact_now().unwrap();
    assert_eq!(e.stats().mailboxes, 0);
}

#[test]
fn limits_answer_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut cfg = config(dir.path());
    cfg.max_message_bytes = 1000;
    cfg.min_free_bytes = u64::MAX;
    let e = Engine::open_with_clock(cfg, c.clone() as Arc<dyn Clock>).unwrap();
    mailbox(&e, "a", 1, 3_600_000);
    let d = |n: usize| Delivery {
        raw: raw(n, 1),
        envelope_from: String::new(),
        recipients: vec![Recipient::parse("a@uncorreo.test").unwrap()],
        dedupe_key: None,
    };
    assert!(matches!(
        block_on(e.deliver(d(1001))),
        Err(DeliverError::TooLarge { limit: 1000 })
    ));
    // Free space below the floor: a temporary refusal before anything is written.
    assert!(matches!(
        block_on(e.deliver(d(1000))),
        Err(DeliverError::DiskFull)
    ));
    e.shutdown();
    assert!(matches!(
        block_on(e.deliver(d(10))),
        Err(DeliverError::Storage(StorageError::Closed))
    ));
    drop(e);

    let mut cfg = config(dir.path());
    cfg.max_message_bytes = 1000;
    let e = Engine::open_with_clock(cfg, c.clone() as Arc<dyn Clock>).unwrap();
    assert!(
        matches!(block_on(e.deliver(d(1000))), Ok(DeliveryOutcome::Delivered { ref stored, .. }) if stored.len() == 1)
    );
    // Quota: the mailbox holds one message.
    assert_eq!(e.resolve("a@uncorreo.test"), Err(ResolveError::MailboxFull));
    match block_on(e.deliver(d(10))).unwrap() {
        DeliveryOutcome::Delivered { stored, refused } => {
            assert!(stored.is_empty());
            assert_eq!(refused[0].1, ResolveError::MailboxFull);
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(
        e.resolve("x@elsewhere.test"),
        Err(ResolveError::ForeignDomain)
    );
    assert_eq!(
        e.resolve("nobody@uncorreo.test"),
        Err(ResolveError::NoSuchMailbox)
    );
    let mut bad = config(dir.path());
    bad.segment_bytes = 100;
    assert!(matches!(Engine::open(bad), Err(OpenError::Config(_))));
}

#[test]
fn dedupe_key_survives_restart_and_multi_shard_delivery_is_one_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let names: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    {
        let e = open(dir.path(), &c);
        for n in &names {
            mailbox(&e, n, 10, 3_600_000);
        }
        let d = Delivery {
            raw: raw(300, 1),
            envelope_from: String::new(),
            recipients: names
                .iter()
                .map(|n| Recipient::parse(&format!("{n}@uncorreo.test")).unwrap())
                .collect(),
            dedupe_key: Some("sns-1".into()),
        };
        let o = block_on(e.deliver(d.clone())).unwrap();
        assert_eq!(stored(&o).len(), 6);
        assert_eq!(block_on(e.deliver(d)).unwrap(), DeliveryOutcome::Duplicate);
        e.shutdown();
    }
    let e = open(dir.path(), &c);
    let d = Delivery {
        raw: raw(300, 1),
        envelope_from: String::new(),
        recipients: vec![Recipient::parse("m0@uncorreo.test").unwrap()],
        dedupe_key: Some("sns-1".into()),
    };
    assert_eq!(block_on(e.deliver(d)).unwrap(), DeliveryOutcome::Duplicate);
    for n in &names {
        assert_eq!(e.mailbox(&addr(n)).unwrap().message_count, 1);
    }
}

#[test]
fn events_follow_commit_and_carry_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let e = open(dir.path(), &c);
    let mb = mailbox(&e, "a", 10, 3_600_000);
    let mut sub = e.subscribe(mb.id).unwrap();
    let id = stored(&deliver(&e, &["a@uncorreo.test"], raw(200, 3)))[0];
    // Published before the acknowledgement: when `deliver` returns, the
    // event is already queued (no waiting needed).
    let ev = sub
        .try_recv()
        .unwrap()
        .expect("event queued before deliver returned");
    assert_eq!(ev.id, id);
    // By the time the event is seen, the message is readable.
    assert_eq!(e.read_raw(ev.id).unwrap(), raw(200, 3));
    block_on(e.delete_mailbox(mb.id)).unwrap();
    assert_eq!(sub.try_recv().unwrap_err(), SubscriptionEnd::MailboxGone);
}

/// The local part of an address whose mailbox lives in `shard` (of the
/// test config's two): routing is by a stable hash of the address.
fn local_in_shard(e: &Engine, shard: u64) -> String {
    (0..)
        .map(|i| format!("box{i}"))
        .find(|local| {
            let info = mailbox(e, local, 100, 3_600_000);
            if info.id.0 % 2 == shard {
                return true;
            }
            block_on(e.delete_mailbox(info.id)).unwrap();
            false
        })
        .unwrap()
}

#[test]
fn a_failed_fdatasync_poisons_the_engine_until_restart() {
    // Once with the failing sync on shard 0 (which also holds the users) and
    // once on shard 1: exactly that shard refuses writes, the other goes on.
    for failing in [0u64, 1] {
        poisons_only_the_shard_whose_sync_failed(failing);
    }
}

fn poisons_only_the_shard_whose_sync_failed(failing: u64) {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let e = open(dir.path(), &c);
    let local = local_in_shard(&e, failing);
    let to = format!("{local}@uncorreo.test");
    let kept = stored(&deliver(&e, &[&to], raw(300, 1)))[0];
    e.fail_next_sync_for_tests();
    let d = || Delivery {
        raw: raw(300, 2),
        envelope_from: String::new(),
        recipients: vec![Recipient::parse(&to).unwrap()],
        dedupe_key: None,
    };
    assert!(matches!(
        block_on(e.deliver(d())),
        Err(DeliverError::Storage(StorageError::Poisoned))
    ));
    assert!(e.stats().poisoned);
    assert_eq!(
        e.health().failed_shards,
        [failing as usize],
        "only the shard that failed its sync"
    );
    // Never retried, never accepted again: every later write to that shard is refused.
    assert!(matches!(
        block_on(e.deliver(d())),
        Err(DeliverError::Storage(StorageError::Poisoned))
    ));
    assert!(matches!(
        block_on(e.delete_mailbox(e.mailbox(&addr(&local)).unwrap().id)),
        Err(WriteError::Storage(StorageError::Poisoned))
    ));
    // Users live in shard 0: refused exactly when shard 0 is the failed one.
    let user = block_on(e.create_user("x".into()));
    if failing == 0 {
        assert!(matches!(
            user,
            Err(WriteError::Storage(StorageError::Poisoned))
        ));
    } else {
        user.unwrap();
    }
    assert!(StorageError::Poisoned.is_temporary());
    // Reads of what was durable still work.
    assert_eq!(e.read_raw(kept).unwrap(), raw(300, 1));
    assert_eq!(e.mailbox(&addr(&local)).unwrap().message_count, 1);
    e.shutdown();
    drop(e);
    let e = open(dir.path(), &c);
    assert!(!e.stats().poisoned);
    assert_eq!(e.read_raw(kept).unwrap(), raw(300, 1));
    // The batch whose sync failed was answered with a temporary failure:
    // it is cut off the log, so its bytes (still in the page cache) do
    // not come back beside the sender's retry.
    assert_eq!(
        e.mailbox(&addr(&local)).unwrap().message_count,
        1,
        "the batch whose sync failed came back after the restart"
    );
    assert_eq!(stored(&deliver(&e, &[&to], raw(300, 3))).len(), 1);
}

#[test]
fn dropping_the_last_handle_stops_threads_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let id;
    {
        let e = open(dir.path(), &c);
        mailbox(&e, "a", 10, 3_600_000);
        id = stored(&deliver(&e, &["a@uncorreo.test"], raw(500, 9)))[0];
        let e2 = e.clone();
        drop(e);
        assert_eq!(e2.read_raw(id).unwrap(), raw(500, 9));
        // No shutdown: dropping the last handle must release the lock.
    }
    let e = open(dir.path(), &c);
    assert_eq!(e.read_raw(id).unwrap(), raw(500, 9));
}

#[test]
fn a_cancelled_delivery_does_not_leave_its_dedupe_key_pending() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let e = open(dir.path(), &c);
    mailbox(&e, "a", 10, 3_600_000);
    let d = Delivery {
        raw: raw(300, 1),
        envelope_from: String::new(),
        recipients: vec![Recipient::parse("a@uncorreo.test").unwrap()],
        dedupe_key: Some("sns-cancel".into()),
    };
    // Poll once (the append is queued), then drop the future.
    {
        use std::future::Future;
        let fut = std::pin::pin!(e.deliver(d.clone()));
        let waker = std::task::Waker::noop();
        let _ = fut.poll(&mut std::task::Context::from_waker(waker));
    }
    // A retry is either stored or recognised as a duplicate; never "saturated" forever.
    // (The cancelled delivery may still be on its way to the writer, handed
    // over by the summary pool: until it settles, a retry is told to come
    // back, as SMTP's 451 and the webhook's 503 do.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let r = loop {
        match block_on(e.deliver(d.clone())) {
            Err(DeliverError::Saturated) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => break other,
        }
    };
    assert!(
        matches!(
            r,
            Ok(DeliveryOutcome::Delivered { .. }) | Ok(DeliveryOutcome::Duplicate)
        ),
        "{r:?}"
    );
    assert_eq!(block_on(e.deliver(d)).unwrap(), DeliveryOutcome::Duplicate);
}

/// A webhook request cancelled by its client after its write was queued
/// (SNS gave up waiting): the write still commits, and the key must not be
/// forgotten meanwhile, or SNS's retry stores a second copy.
#[test]
fn a_delivery_cancelled_after_its_write_was_queued_keeps_its_dedupe_key() {
    use std::future::Future;
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let e = open(dir.path(), &c);
    let mut cancelled = 0;
    for round in 0..50 {
        let mb = mailbox(&e, &format!("c{round}"), 10, 3_600_000);
        let d = Delivery {
            raw: raw(300, round),
            envelope_from: String::new(),
            recipients: vec![Recipient::parse(&format!("c{round}@uncorreo.test")).unwrap()],
            dedupe_key: Some(format!("sns-cancel-{round}")),
        };
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        // Poll until the write has committed, then drop the future before
        // it sees its answer: the caller is gone, the write is not.
        let mut fut = Box::pin(e.deliver(d.clone()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let completed = loop {
            if e.mailbox_by_id(mb.id).unwrap().message_count == 1 {
                break false;
            }
            if fut.as_mut().poll(&mut cx).is_ready() {
                break true;
            }
            assert!(std::time::Instant::now() < deadline, "never committed");
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        drop(fut);
        if completed {
            continue;
        }
        cancelled += 1;
        // Its retry stores nothing more: told to come back while the
        // writer still settles the key, then a duplicate.
        let retry = loop {
            match block_on(e.deliver(d.clone())) {
                Err(DeliverError::Saturated) => {
                    assert!(std::time::Instant::now() < deadline, "pending forever");
                    std::thread::yield_now();
                }
                other => break other.unwrap(),
            }
        };
        assert_eq!(retry, DeliveryOutcome::Duplicate, "round {round}");
        assert_eq!(e.mailbox_by_id(mb.id).unwrap().message_count, 1);
        break;
    }
    assert_eq!(cancelled, 1, "no round cancelled a committed write");
}

#[test]
fn config_limits_keep_every_record_decodable() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let with = |tweak: &dyn Fn(&mut EngineConfig)| {
        let mut cfg = config(dir.path());
        tweak(&mut cfg);
        Engine::open_with_clock(cfg, c.clone() as Arc<dyn Clock>)
    };
    // A message at the decoder's own limit would be stored in a frame the
    // decoder refuses (the record adds its prefix and meta): not accepted.
    assert!(matches!(
        with(&|cfg| cfg.max_message_bytes = 1 << 30),
        Err(OpenError::Config(_))
    ));
    assert!(matches!(
        with(&|cfg| cfg.batch_max_bytes = (1 << 28) + 1),
        Err(OpenError::Config(_))
    ));
    // A delivery's dedupe record counts its shards in one byte.
    assert!(matches!(
        with(&|cfg| cfg.shards = 256),
        Err(OpenError::Config(_))
    ));
    let e = with(&|cfg| cfg.max_message_bytes = (1 << 30) - (1 << 20)).unwrap();
    e.shutdown();
}

/// The API answers `401` for a session token that opens no live mailbox, so
/// the token lookup must follow creation, deletion, expiry, a re-created
/// address and a reopen exactly.
#[test]
fn a_session_token_finds_its_live_mailbox_only() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let create = |e: &Engine, local: &str, token: u8, ttl_ms: u64| {
        mailbox_of(e, local, token, ttl_ms, 10).unwrap()
    };
    let found = |e: &Engine, token: u8| e.mailbox_by_token_hash(&[token; 32]).map(|m| m.id);
    // Without the address quarantine (tests/tombstones.rs), so that an
    // expired address can be taken again by a new token at once.
    let open = |dir: &std::path::Path, c: &Arc<ManualClock>| {
        let mut cfg = config(dir);
        cfg.address_quarantine = std::time::Duration::ZERO;
        Engine::open_with_clock(cfg, c.clone() as Arc<dyn Clock>).unwrap()
    };
    let e = open(dir.path(), &c);
    let kept = create(&e, "kept", 1, 3_600_000);
    let deleted = create(&e, "deleted", 2, 3_600_000);
    let expiring = create(&e, "expiring", 3, 1_000);
    assert_eq!(found(&e, 1), Some(kept.id));
    assert_eq!(found(&e, 2), Some(deleted.id));
    assert_eq!(found(&e, 3), Some(expiring.id));
    assert_eq!(found(&e, 9), None);
    block_on(e.delete_mailbox(deleted.id)).unwrap();
    assert_eq!(found(&e, 2), None);
    c.advance(2_000);
    assert_eq!(found(&e, 3), None, "expired");
    // The expired address taken again by a new token: the old token stays dead.
    let again = create(&e, "expiring", 4, 3_600_000);
    assert_eq!(found(&e, 4), Some(again.id));
    assert_eq!(found(&e, 3), None);
    e.shutdown();
    drop(e);
    let e = open(dir.path(), &c);
    assert_eq!(found(&e, 1), Some(kept.id));
    assert_eq!(found(&e, 4), Some(again.id));
    assert_eq!(found(&e, 2), None);
    assert_eq!(found(&e, 3), None);
    assert_eq!(
        e.mailboxes_owned_by(&Owner::Anonymous {
            token_hash: [1; 32]
        })
        .len(),
        1
    );
}

/// The event tap (cluster mode) hears each commit after it is published,
/// and each mailbox's end by deletion or by expiry reaped in compaction,
/// with its address and owner.
#[test]
fn the_event_tap_hears_commits_and_ends_with_their_addresses_and_owners() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let e = open(dir.path(), &c);
    let heard = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let log = Arc::clone(&heard);
    assert!(e.set_event_tap(Arc::new(move |tapped| {
        log.lock().push(match tapped {
            Tapped::Committed(ev) => format!("{}#{}", ev.address, ev.id.seq),
            Tapped::Closed(address, owner) => match owner {
                Owner::Anonymous { token_hash } => format!("{address} of {} ended", token_hash[0]),
                Owner::User(user) => format!("{address} of user {} ended", user.0),
            },
        })
    })));
    assert!(!e.set_event_tap(Arc::new(|_| {})), "set once");
    let deleted = mailbox(&e, "del", 10, 3_600_000);
    mailbox_of(&e, "exp", 9, 2000, 10).unwrap();
    deliver(&e, &["del@uncorreo.test"], raw(100, 1));
    deliver(&e, &["del@uncorreo.test"], raw(100, 2));
    block_on(e.delete_mailbox(deleted.id)).unwrap();
    c.advance(2000);
    e.compact_now().unwrap();
    assert_eq!(
        *heard.lock(),
        [
            "del@uncorreo.test#1",
            "del@uncorreo.test#2",
            "del@uncorreo.test of 7 ended",
            "exp@uncorreo.test of 9 ended"
        ]
    );
}
