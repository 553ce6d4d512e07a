//! Online backup (`Engine::backup`) and offline verification (`verify`):
//! a copy taken while appends go on restores every acknowledged message,
//! and verification finds every damaged byte.

mod common;

use std::sync::Arc;

use common::*;
use uncorreo_engine::*;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_700_000_000_000))
}

#[test]
fn backup_while_appending_restores_every_message_acked_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let c = clock();
    let mut cfg = config(dir.path());
    // Small segments so the copy spans sealed segments, hints and an active one.
    cfg.segment_bytes = 64 * 1024;
    let e = Engine::open_with_clock(cfg, c.clone() as Arc<dyn Clock>).unwrap();
    let user = block_on(e.create_user("ops".into())).unwrap();
    block_on(e.disable_user(user.id)).unwrap();
    mailbox(&e, "a", 10_000, 3_600_000);
    let mut before = Vec::new();
    for i in 0..200 {
        let o = deliver(&e, &["a@uncorreo.test"], raw(2000, i));
        before.extend(stored(&o).into_iter().map(|id| (id, raw(2000, i))));
    }
    let writer = {
        let e = e.clone();
        std::thread::spawn(move || {
            for i in 200..600 {
                deliver(&e, &["a@uncorreo.test"], raw(2000, i));
            }
        })
    };
    let target = dest.path().join("copy");
    let report = e.backup(&target).unwrap();
    writer.join().unwrap();
    assert!(report.segments >= 2 && report.hints >= 1, "{report:?}");
    assert!(matches!(
        e.backup(&target),
        Err(BackupError::DestinationNotEmpty(_))
    ));
    e.shutdown();

    let v = verify(&target, c.now_ms()).unwrap();
    assert!(v.ok(), "{v:?}");
    assert!(v.messages >= 200 && v.messages <= 600, "{v:?}");
    assert_eq!((v.mailboxes, v.users), (1, 1));

    let restored = open(&target, &c);
    for (id, body) in &before {
        assert_eq!(&restored.read_raw(*id).unwrap(), body);
    }
    let a = restored.mailbox(&addr("a")).unwrap();
    assert_eq!(u64::from(a.message_count), v.messages);
    assert!(restored.user_disabled_at(user.id).is_some());
}

#[test]
fn verify_reports_a_flipped_byte_and_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    {
        let e = open(dir.path(), &c);
        mailbox(&e, "a", 100, 3_600_000);
        for i in 0..5 {
            deliver(&e, &["a@uncorreo.test"], raw(3000, i));
        }
        e.shutdown();
    }
    assert!(verify(dir.path(), c.now_ms()).unwrap().ok());
    let (seg, len) = segments(dir.path())
        .into_iter()
        .max_by_key(|(_, len)| *len)
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = (len / 2) as usize;
    bytes[mid] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    let v = verify(dir.path(), c.now_ms()).unwrap();
    assert!(!v.ok());
    assert!(
        v.problems.iter().any(|p| p.contains("checksum")),
        "{:?}",
        v.problems
    );
    bytes[mid] ^= 0x40;
    bytes.truncate(bytes.len() - 10);
    std::fs::write(&seg, &bytes).unwrap();
    let v = verify(dir.path(), c.now_ms()).unwrap();
    assert!(!v.ok(), "{v:?}");
}

#[test]
fn verify_refuses_a_directory_that_is_not_a_log() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        verify(dir.path(), 0),
        Err(BackupError::NotADataDirectory(_))
    ));
}

#[test]
fn audit_entries_and_disabled_users_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let user;
    {
        let e = open(dir.path(), &c);
        user = block_on(e.create_user("ana".into())).unwrap();
        block_on(e.disable_user(user.id)).unwrap();
        block_on(e.disable_user(user.id)).unwrap();
        block_on(e.record_audit(AuditEntry {
            at_ms: 5,
            actor: "uid 0".into(),
            action: "user disable".into(),
            target: format!("user {}", user.id.0),
        }))
        .unwrap();
        assert!(matches!(
            block_on(e.disable_user(UserId(999_999))),
            Err(WriteError::NotFound)
        ));
        e.shutdown();
    }
    let e = open(dir.path(), &c);
    assert_eq!(e.user_disabled_at(user.id), Some(c.now_ms()));
    let trail = e.audit_trail();
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].action, "user disable");
    assert_eq!(e.users().len(), 1);
}

#[test]
fn replacing_subscriptions_ends_the_old_ones_also_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let user;
    {
        let e = open(dir.path(), &c);
        user = block_on(e.create_user("ana".into())).unwrap();
        let sub = |plan: &str, at| Subscription {
            plan: plan.into(),
            starts_at_ms: at,
            ends_at_ms: None,
        };
        block_on(e.add_subscription(user.id, sub("pro", 1))).unwrap();
        block_on(e.replace_subscriptions(user.id, sub("free", 10))).unwrap();
        let subs = e.user(user.id).unwrap().subscriptions;
        assert_eq!(subs[0].ends_at_ms, Some(10));
        assert_eq!((subs[1].plan.as_str(), subs[1].ends_at_ms), ("free", None));
        e.shutdown();
    }
    let e = open(dir.path(), &c);
    let subs = e.user(user.id).unwrap().subscriptions;
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[0].ends_at_ms, Some(10));
    assert_eq!((subs[1].plan.as_str(), subs[1].ends_at_ms), ("free", None));
}
