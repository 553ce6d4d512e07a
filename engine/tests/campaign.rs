//! Load-testing campaigns through the engine's public API: routing behind
//! `resolve`/`deliver`, the three store modes, the report rebuilt exactly
//! after a reopen, compaction moving and dropping campaign records.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use uncorreo_engine::campaign::*;
use uncorreo_engine::*;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_796_522_715_000))
}

fn new_campaign(store: StoreMode, pattern: Option<&str>) -> NewCampaign {
    NewCampaign {
        id: CampaignId::random(),
        owner: Owner::User(UserId(1)),
        name: "load".into(),
        expires_at_ms: 1_796_522_715_000 + 3_600_000,
        pattern: pattern.and_then(AddressPattern::parse),
        store,
        sent_at_header: "Date".into(),
    }
}

fn mail(id: &str, date: &str) -> Bytes {
    Bytes::from(format!(
        "Message-ID: {id}\r\nDate: {date}\r\nSubject: load\r\n\r\nbody of {id}\r\n"
    ))
}

/// The report's counts that a reopen must rebuild exactly.
type Counts = (u64, u64, u64, u64, uncorreo_campaign_report::Latency);

fn counts(e: &Engine, id: CampaignId) -> Counts {
    e.campaign_report(id, |_, r| {
        (
            r.accepted(),
            r.unique_message_ids(),
            r.duplicate_messages(),
            r.distinct_recipients(),
            r.latency(),
        )
    })
    .expect("live campaign")
}

fn send(e: &Engine, to: &[String], body: Bytes) -> DeliveryOutcome {
    let recipients = to.iter().map(|t| e.resolve(t).expect("resolves")).collect();
    block_on(e.deliver(Delivery {
        raw: body,
        envelope_from: "load@sender.test".into(),
        recipients,
        dedupe_key: None,
    }))
    .expect("delivered")
}

#[test]
fn mail_to_a_campaign_is_counted_stored_per_recipient_and_rebuilt_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let id;
    let before;
    {
        let e = open(dir.path(), &c);
        let info = block_on(
            e.create_campaign(new_campaign(StoreMode::Full, Some("load-*@uncorreo.test"))),
        )
        .unwrap();
        id = info.id;
        let catch_all = format!("anyone@{}", id.domain(DOMAIN));
        assert_eq!(
            e.resolve("nobody@c-1.uncorreo.test"),
            Err(ResolveError::ForeignDomain)
        );
        assert_eq!(
            e.resolve("other@uncorreo.test").unwrap_err(),
            ResolveError::NoSuchMailbox
        );
        // A mailbox wins over the pattern at its own address.
        mailbox(&e, "load-kept", 10, 3_600_000);
        let o = send(
            &e,
            &["load-kept@uncorreo.test".into()],
            mail("<m0@x>", "Sun, 06 Dec 2026 02:05:15 +0000"),
        );
        assert_eq!(
            stored(&o)[0].mailbox,
            e.mailbox(&addr("load-kept")).unwrap().id
        );
        for i in 0..20 {
            let to = vec![format!("load-{}@uncorreo.test", i % 5), catch_all.clone()];
            let mid = format!("<m{}@x>", i % 15);
            send(&e, &to, mail(&mid, "Sun, 06 Dec 2026 02:05:14 +0000"));
        }
        before = counts(&e, id);
        assert_eq!(before.0, 40);
        assert_eq!(before.1, 15);
        assert_eq!(before.2, 25);
        assert_eq!(before.3, 6);
        assert_eq!(before.4.max_ms, 1_000);
        let msgs = e
            .campaign_messages(id, "LOAD-3@uncorreo.test", 0, 100)
            .unwrap();
        assert_eq!(msgs.len(), 4);
        assert!(msgs[0].body.starts_with(b"Message-ID: <m3@x>"));
        let page = e
            .campaign_messages(id, "load-3@uncorreo.test", msgs[1].seq, 1)
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].seq, msgs[2].seq);
        e.shutdown();
    }
    let e = open(dir.path(), &c);
    let after = counts(&e, id);
    assert_eq!(after, before);
    assert_eq!(
        e.campaign_messages(id, "load-3@uncorreo.test", 0, 100)
            .unwrap()
            .len(),
        4
    );
    // Sequences go on after the reopen.
    let o = send(&e, &["load-9@uncorreo.test".into()], mail("<late@x>", "x"));
    assert_eq!(stored(&o)[0].seq, 41);
    block_on(e.delete_campaign(id)).unwrap();
    assert!(e.campaign(id).is_none());
    assert_eq!(
        e.resolve("load-1@uncorreo.test").unwrap_err(),
        ResolveError::NoSuchMailbox
    );
    e.shutdown();
    drop(e);
    let e = open(dir.path(), &c);
    assert!(e.campaign(id).is_none());
}

#[test]
fn store_modes_keep_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let e = open(dir.path(), &c);
    let headers = block_on(e.create_campaign(new_campaign(StoreMode::Headers, None))).unwrap();
    let count = block_on(e.create_campaign(new_campaign(StoreMode::Count, None))).unwrap();
    let body = mail("<h@x>", "x");
    let h = format!("a@{}", headers.id.domain(DOMAIN));
    let n = format!("a@{}", count.id.domain(DOMAIN));
    send(&e, &[h.clone(), n.clone()], body.clone());
    let got = e.campaign_messages(headers.id, &h, 0, 10).unwrap();
    assert_eq!(
        &got[0].body[..],
        b"Message-ID: <h@x>\r\nDate: x\r\nSubject: load\r\n\r\n"
    );
    assert_eq!(got[0].size as usize, body.len());
    assert_eq!(e.campaign_messages(count.id, &n, 0, 10).unwrap().len(), 0);
    assert_eq!(e.campaign_report(count.id, |_, r| r.accepted()), Some(1));
}

#[test]
fn overlapping_patterns_and_foreign_domains_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let e = open(dir.path(), &c);
    block_on(e.create_campaign(new_campaign(StoreMode::Count, Some("load-*@uncorreo.test"))))
        .unwrap();
    let r = block_on(e.create_campaign(new_campaign(
        StoreMode::Count,
        Some("load-a*@uncorreo.test"),
    )));
    assert!(matches!(r, Err(CreateCampaignError::Taken)));
    let r = block_on(e.create_campaign(new_campaign(
        StoreMode::Count,
        Some("load-*@elsewhere.test"),
    )));
    assert!(matches!(r, Err(CreateCampaignError::ForeignDomain)));
}

#[test]
fn compaction_moves_live_campaign_records_and_drops_deleted_and_expired_ones() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let e = open(dir.path(), &c);
    let keep = block_on(e.create_campaign(new_campaign(StoreMode::Full, None))).unwrap();
    let gone = block_on(e.create_campaign(new_campaign(StoreMode::Full, None))).unwrap();
    let k = format!("r@{}", keep.id.domain(DOMAIN));
    let g = |n: u64| format!("r{n}@{}", gone.id.domain(DOMAIN));
    for i in 0..200 {
        // Three dead copies per live one: segments fall under the live ratio.
        send(&e, &[k.clone(), g(1), g(2), g(3)], raw(1000, i));
    }
    block_on(e.delete_campaign(gone.id)).unwrap();
    let before = dir_bytes(dir.path());
    e.compact_now().unwrap();
    let after = dir_bytes(dir.path());
    assert!(after < before / 2, "{before} → {after}");
    let msgs = e.campaign_messages(keep.id, &k, 0, 1000).unwrap();
    assert_eq!(msgs.len(), 200);
    assert_eq!(msgs[199].body, raw(1000, 199));
    e.shutdown();
    drop(e);
    let e = open(dir.path(), &c);
    assert_eq!(
        e.campaign_messages(keep.id, &k, 0, 1000).unwrap().len(),
        200
    );
    c.advance(7_200_000);
    e.compact_now().unwrap();
    assert!(e.campaign(keep.id).is_none());
    assert!(dir_bytes(dir.path()) < after / 4);
}

/// A campaign deleted while a compaction copies its creation stays deleted:
/// its tombstone names the segment being replaced, so the swap writes one
/// naming the copy. Without it, a later pass drops the first tombstone
/// (its segment is gone) and the copied creation brings the campaign back
/// at the next open.
#[test]
fn a_campaign_deleted_during_a_compaction_stays_deleted_after_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let open = || {
        let mut cfg = config(dir.path());
        cfg.shards = 1;
        // One segment holds each phase's records.
        cfg.segment_bytes = 4 << 20;
        cfg.compaction_live_ratio = 0.9;
        Engine::open_with_clock(cfg, c.clone() as Arc<dyn Clock>).unwrap()
    };
    let e = open();
    let id = block_on(e.create_campaign(new_campaign(StoreMode::Full, None)))
        .unwrap()
        .id;
    send(
        &e,
        &[format!("r1@{}", id.domain(DOMAIN))],
        mail("<a@x>", "Thu, 1 Jan 2026 00:00:00 +0000"),
    );
    mailbox(&e, "anchor", 10_000, 3_600_000);
    // Live bulk, so the rewrite's output stays above the ratio and keeps the
    // copied creation until the restart; a few deletions make the segment a
    // candidate.
    for i in 0..12u64 {
        deliver(&e, &["anchor@uncorreo.test"], raw(16_384, i));
    }
    for i in 100..104u64 {
        let gone = stored(&deliver(&e, &["anchor@uncorreo.test"], raw(16_384, i)))[0];
        block_on(e.delete_message(gone)).unwrap();
    }
    e.shutdown();
    drop(e);

    let e = open();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (held_tx, go_rx) = (
        parking_lot::Mutex::new(held_tx),
        parking_lot::Mutex::new(go_rx),
    );
    e.set_compaction_hook_for_tests(Some(Arc::new(move || {
        let _ = held_tx.lock().send(());
        let _ = go_rx.lock().recv();
    })));
    let compaction = {
        let e = e.clone();
        std::thread::spawn(move || e.compact_now())
    };
    held_rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the compaction reaches its swap");
    block_on(e.delete_campaign(id)).unwrap();
    go_tx.send(()).unwrap();
    compaction.join().unwrap().unwrap();
    e.set_compaction_hook_for_tests(None);
    // Dead bulk beside the first tombstone, so its segment is a candidate
    // of the next pass.
    for i in 200..204u64 {
        let gone = stored(&deliver(&e, &["anchor@uncorreo.test"], raw(16_384, i)))[0];
        block_on(e.delete_message(gone)).unwrap();
    }
    e.shutdown();
    drop(e);

    // The first tombstone's target is gone now: the pass over its sealed
    // segment drops it.
    let e = open();
    assert!(e.campaign(id).is_none());
    e.compact_now().unwrap();
    e.shutdown();
    drop(e);
    let e = open();
    assert!(e.campaign(id).is_none(), "the deleted campaign came back");
    assert_eq!(
        e.resolve(&format!("r2@{}", id.domain(DOMAIN))),
        Err(ResolveError::ForeignDomain)
    );
}
