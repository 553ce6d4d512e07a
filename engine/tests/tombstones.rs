//! Address tombstones (`src/tombstone.rs`): an ended mailbox's address
//! cannot be created by another owner for the quarantine, its owner may
//! create it again at once, and this survives compaction and a restart
//! until the quarantine is over.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use uncorreo_engine::*;

const HOUR: u64 = 3_600_000;

fn open_at(dir: &Path, clock: &Arc<ManualClock>) -> Engine {
    Engine::open_with_clock(config(dir), clock.clone() as Arc<dyn Clock>).unwrap()
}

fn create(e: &Engine, local: &str, owner: u8) -> Result<MailboxInfo, CreateMailboxError> {
    mailbox_of(e, local, owner, HOUR, 10)
}

fn refused(r: Result<MailboxInfo, CreateMailboxError>) -> bool {
    matches!(r, Err(CreateMailboxError::AlreadyExists))
}

#[test]
fn a_deleted_address_is_quarantined_for_others_across_a_restart_and_free_after() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let e = open_at(dir.path(), &clock);
    let old = create(&e, "reset", 1).unwrap();
    block_on(e.delete_mailbox(old.id)).unwrap();
    assert!(
        refused(create(&e, "reset", 2)),
        "a stranger claimed it at once"
    );
    // Its owner may take it back, and delete it again.
    let again = create(&e, "reset", 1).unwrap();
    block_on(e.delete_mailbox(again.id)).unwrap();
    e.compact_now().unwrap();
    e.shutdown();
    drop(e);

    clock.advance(23 * HOUR);
    let e = open_at(dir.path(), &clock);
    assert!(refused(create(&e, "reset", 2)), "forgotten at restart");
    clock.advance(HOUR);
    e.compact_now().unwrap();
    create(&e, "reset", 2).expect("free once the quarantine is over");
}

#[test]
fn an_expired_address_is_quarantined_for_others_before_and_after_it_is_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let e = open_at(dir.path(), &clock);
    create(&e, "late", 1).unwrap();
    clock.advance(2 * HOUR);
    assert!(refused(create(&e, "late", 2)), "expired, not yet reaped");
    e.compact_now().unwrap();
    assert!(refused(create(&e, "late", 2)), "reaped");
    e.shutdown();
    drop(e);
    let e = open_at(dir.path(), &clock);
    assert!(refused(create(&e, "late", 2)), "after a restart");
    // Quarantine is counted from the expiry (one hour after creation).
    clock.advance(23 * HOUR);
    e.compact_now().unwrap();
    e.shutdown();
    drop(e);
    let e = open_at(dir.path(), &clock);
    create(&e, "late", 2).expect("free once the quarantine is over");
}

#[test]
fn a_zero_quarantine_frees_the_address_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let mut c = config(dir.path());
    c.address_quarantine = std::time::Duration::ZERO;
    let e = Engine::open_with_clock(c, clock as Arc<dyn Clock>).unwrap();
    let old = create(&e, "free", 1).unwrap();
    block_on(e.delete_mailbox(old.id)).unwrap();
    create(&e, "free", 2).unwrap();
}
