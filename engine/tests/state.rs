//! `State` entries (`Engine::put_state`): the last write of a key wins,
//! deletions stick, and both survive restarts and compaction.

mod common;

use std::sync::Arc;

use common::*;
use uncorreo_engine::*;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_700_000_000_000))
}

#[test]
fn newest_value_wins_and_deletions_stick_across_restart_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 16 * 1024;
    let e = Engine::open_with_clock(cfg.clone(), c.clone() as Arc<dyn Clock>).unwrap();
    mailbox(&e, "a", 10_000, 3_600_000);
    block_on(e.put_state("hook/a", Some("1"))).unwrap();
    block_on(e.put_state("hook/b", Some("b"))).unwrap();
    block_on(e.put_state("other", Some("x"))).unwrap();
    // Many versions of one key spread over several segments.
    for i in 2..=300 {
        block_on(e.put_state("hook/a", Some(&i.to_string()))).unwrap();
        if i % 50 == 0 {
            deliver(&e, &["a@uncorreo.test"], raw(4000, i));
        }
    }
    block_on(e.put_state("hook/b", None)).unwrap();
    // Deleting what is not there is fine and writes nothing.
    block_on(e.put_state("hook/never", None)).unwrap();
    assert_eq!(e.state("hook/a").as_deref(), Some("300"));
    assert_eq!(
        e.states_with_prefix("hook/"),
        vec![("hook/a".to_owned(), "300".to_owned())]
    );
    e.compact_now().unwrap();
    e.shutdown();
    drop(e);

    let e = Engine::open_with_clock(cfg.clone(), c.clone() as Arc<dyn Clock>).unwrap();
    assert_eq!(e.state("hook/a").as_deref(), Some("300"));
    assert_eq!(e.state("hook/b"), None);
    assert_eq!(e.state("other").as_deref(), Some("x"));
    // A key written again after a restart gets a newer version than any before.
    block_on(e.put_state("hook/b", Some("again"))).unwrap();
    e.compact_now().unwrap();
    // Offline verification accepts the kind (and its hint entries).
    let copy = tempfile::tempdir().unwrap();
    e.backup(&copy.path().join("b")).unwrap();
    let v = verify(&copy.path().join("b"), c.now_ms()).unwrap();
    assert!(v.ok(), "{v:?}");
    e.shutdown();
    drop(e);
    remove_hints(dir.path());
    let e = Engine::open_with_clock(cfg, c as Arc<dyn Clock>).unwrap();
    assert_eq!(e.state("hook/a").as_deref(), Some("300"));
    assert_eq!(e.state("hook/b").as_deref(), Some("again"));
}

#[test]
fn oversized_keys_and_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path(), &clock());
    let long_key = "k".repeat(MAX_STATE_KEY_BYTES + 1);
    assert!(matches!(
        block_on(e.put_state(&long_key, Some("v"))),
        Err(WriteError::LimitReached)
    ));
    let big = "v".repeat(MAX_STATE_VALUE_BYTES + 1);
    assert!(matches!(
        block_on(e.put_state("k", Some(&big))),
        Err(WriteError::LimitReached)
    ));
    assert_eq!(e.state("k"), None);
}
