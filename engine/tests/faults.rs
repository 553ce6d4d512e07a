//! Fault-countdown tests (SQLite's FAULTSIM is the model): one fixed
//! scenario — open, create a mailbox, a user and a key, deliver messages
//! across segment rolls, delete one, compact, deliver more — is run once to
//! count its mutating I/O calls, then again for every k up to that count
//! with the k-th call failing with `EIO` or `ENOSPC`, once or from then on.
//! Every time: each operation answers with its typed error (no panic on any
//! engine thread), nothing is acknowledged that a restart does not bring
//! back byte-identical, and after `ENOSPC` clears the same engine accepts
//! mail again without a restart (unless the fault hit a batch's
//! `fdatasync`, which stays fatal for its shard until restart, by design).
//!
//! The last tests aim one fault at one step instead: the directory fsync
//! after a compaction renamed its output into place or unlinked a segment.

mod common;
#[path = "simfs/fault.rs"]
mod fault_io;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};

use bytes::Bytes;
use common::{addr, block_on, DOMAIN};
use fault_io::{Call, FaultIo};
use uncorreo_engine::*;

const START_MS: u64 = 1_700_000_000_000;

/// Panics on the engine's own threads (writers, compaction) since the hook
/// was installed; a panic on the test thread fails the test by itself.
static ENGINE_THREAD_PANICS: AtomicU64 = AtomicU64::new(0);

fn count_engine_thread_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            if name.starts_with("log-writer") || name == "compaction" {
                ENGINE_THREAD_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

fn scratch() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

fn fault_config(dir: &std::path::Path) -> EngineConfig {
    let mut c = common::config(dir);
    c.segment_bytes = 8192;
    c.compaction_live_ratio = 0.9;
    c
}

fn body(n: u64) -> Bytes {
    let size = if n.is_multiple_of(3) { 5000 } else { 700 };
    let mut v = format!("Subject: fault {n}\r\n\r\n").into_bytes();
    while v.len() < size {
        v.push(b'a' + (v.len() % 26) as u8);
    }
    Bytes::from(v)
}

/// What the scenario got acknowledged.
#[derive(Default)]
struct Acked {
    messages: Vec<(MessageId, Bytes)>,
    deleted: Vec<MessageId>,
    mailboxes: Vec<MailboxInfo>,
    users: Vec<UserInfo>,
    keys: Vec<ApiKeyInfo>,
}

fn deliver_to(e: &Engine, to: &str, n: u64, acked: &mut Acked) -> Result<(), DeliverError> {
    let raw = body(n);
    let out = block_on(e.deliver(Delivery {
        raw: raw.clone(),
        envelope_from: "s@x.test".into(),
        recipients: vec![Recipient::parse(to).unwrap()],
        dedupe_key: None,
    }))?;
    if let DeliveryOutcome::Delivered { stored, .. } = out {
        for id in stored {
            acked.messages.push((id, raw.clone()));
        }
    }
    Ok(())
}

/// The scenario; every error is a typed one (matching it is the check).
fn scenario(e: &Engine, acked: &mut Acked) {
    for local in ["one", "two"] {
        match block_on(e.create_mailbox(NewMailbox {
            address: addr(local),
            owner: Owner::Anonymous {
                token_hash: [1; 32],
            },
            expires_at_ms: e.now_ms() + 3_600_000,
            max_messages: 100,
        })) {
            Ok(info) => acked.mailboxes.push(info),
            Err(
                CreateMailboxError::DiskFull
                | CreateMailboxError::Saturated
                | CreateMailboxError::Storage(_),
            ) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    match block_on(e.create_user("fault user".into())) {
        Ok(user) => {
            match block_on(e.create_api_key(user.id, [9; 32], "uct_faults00".into())) {
                Ok(k) => acked.keys.push(k),
                Err(WriteError::DiskFull | WriteError::Saturated | WriteError::Storage(_)) => {}
                Err(other) => panic!("unexpected {other:?}"),
            }
            acked.users.push(user);
        }
        Err(WriteError::DiskFull | WriteError::Saturated | WriteError::Storage(_)) => {}
        Err(other) => panic!("unexpected {other:?}"),
    }
    for n in 0..10 {
        let to = if n % 2 == 0 {
            "one@uncorreo.test"
        } else {
            "two@uncorreo.test"
        };
        match deliver_to(e, to, n, acked) {
            Ok(()) | Err(DeliverError::DiskFull | DeliverError::Storage(_)) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
        if n == 4 {
            if let Some((id, _)) = acked.messages.first().cloned() {
                match block_on(e.delete_message(id)) {
                    Ok(()) => {
                        acked.deleted.push(id);
                        acked.messages.retain(|(m, _)| *m != id);
                    }
                    Err(WriteError::DiskFull | WriteError::Storage(_)) => {
                        // Not acknowledged, but its record may have reached
                        // the file before the sync failed: it may be done.
                        acked.messages.retain(|(m, _)| *m != id);
                    }
                    Err(other) => panic!("unexpected {other:?}"),
                }
            }
        }
        if n == 6 {
            // Typed either way; nothing to assert on the outcome.
            let _: Result<CompactionReport, StorageError> = e.compact_now();
        }
    }
}

/// Restart on the real I/O and check every acknowledgement.
fn check_after_restart(dir: &std::path::Path, clock: &Arc<ManualClock>, acked: &Acked, ctx: &str) {
    let e = Engine::open_with_clock(fault_config(dir), clock.clone() as Arc<dyn Clock>)
        .unwrap_or_else(|err| panic!("{ctx}: reopen failed: {err}"));
    for (id, raw) in &acked.messages {
        assert_eq!(
            e.read_raw(*id)
                .unwrap_or_else(|err| panic!("{ctx}: acked {id:?}: {err}")),
            *raw,
            "{ctx}: acked {id:?} changed"
        );
    }
    for id in &acked.deleted {
        assert!(
            matches!(e.read_raw(*id), Err(LookupError::NotFound)),
            "{ctx}: deleted {id:?} is back"
        );
    }
    for mb in &acked.mailboxes {
        let here = e
            .mailbox_by_id(mb.id)
            .unwrap_or_else(|| panic!("{ctx}: acked mailbox {mb:?} missing"));
        assert_eq!(here.address, mb.address, "{ctx}");
    }
    for u in &acked.users {
        assert_eq!(e.user(u.id).map(|x| x.name), Some(u.name.clone()), "{ctx}");
    }
    for k in &acked.keys {
        assert_eq!(
            e.api_key_by_hash(&k.hash).map(|x| x.id),
            Some(k.id),
            "{ctx}"
        );
    }
    // And it takes mail after the restart.
    let mut more = Acked::default();
    let live = acked
        .mailboxes
        .first()
        .map(|m| m.address.to_string())
        .unwrap_or_else(|| {
            block_on(e.create_mailbox(NewMailbox {
                address: addr("after"),
                owner: Owner::Anonymous {
                    token_hash: [2; 32],
                },
                expires_at_ms: e.now_ms() + 3_600_000,
                max_messages: 10,
            }))
            .unwrap()
            .address
            .to_string()
        });
    deliver_to(&e, &live, 99, &mut more)
        .unwrap_or_else(|err| panic!("{ctx}: no mail after restart: {err}"));
    e.shutdown();
}

/// After the fault cleared: the same engine accepts mail again.
fn check_resumes(e: &Engine, io: &FaultIo, acked: &mut Acked, ctx: &str) {
    let synced_batch_failed = io.failed_calls().contains(&Call::Sync);
    let to = acked
        .mailboxes
        .iter()
        .find(|m| !e.health().failed_shards.contains(&((m.id.0 % 2) as usize)))
        .map(|m| m.address.to_string());
    let Some(to) = to else {
        return;
    };
    let r = deliver_to(e, &to, 50, acked);
    if !synced_batch_failed {
        r.unwrap_or_else(|err| panic!("{ctx}: no mail once space is back: {err}"));
        assert!(e.health().failed_shards.is_empty(), "{ctx}: a shard failed");
    }
}

fn run(k: u64, errno: i32, sticky: bool) -> u64 {
    let ctx = format!("fault at call {k}, errno {errno}, sticky {sticky}");
    let dir = scratch();
    let clock = Arc::new(ManualClock::new(START_MS));
    let io = Arc::new(FaultIo::new(k, errno, sticky));
    let mut acked = Acked::default();
    let opened = Engine::open_with_io(
        fault_config(dir.path()),
        clock.clone() as Arc<dyn Clock>,
        io.clone(),
    );
    match opened {
        Ok(e) => {
            scenario(&e, &mut acked);
            io.clear();
            if errno == libc::ENOSPC {
                check_resumes(&e, &io, &mut acked, &ctx);
            }
            e.shutdown();
        }
        Err(OpenError::Io(_) | OpenError::DataDir { .. }) => {
            assert!(io.failures() > 0, "{ctx}: open failed without a fault");
        }
        Err(other) => panic!("{ctx}: open failed with {other:?}"),
    }
    let calls = io.calls();
    check_after_restart(dir.path(), &clock, &acked, &ctx);
    calls
}

#[test]
fn an_injected_eio_or_enospc_at_any_call_is_a_typed_error_and_never_a_false_ack() {
    count_engine_thread_panics();
    let calls = run(0, 0, false);
    assert!(calls > 30, "the scenario makes {calls} calls");
    let mut runs = 0;
    for errno in [libc::EIO, libc::ENOSPC] {
        for sticky in [false, true] {
            for k in 1..=calls {
                run(k, errno, sticky);
                runs += 1;
            }
        }
    }
    assert_eq!(
        ENGINE_THREAD_PANICS.load(Ordering::SeqCst),
        0,
        "an engine thread panicked"
    );
    eprintln!("{runs} faulty runs over {calls} calls");
}

#[test]
fn a_full_disk_refuses_with_disk_full_and_takes_mail_again_by_itself() {
    count_engine_thread_panics();
    let dir = scratch();
    let clock = Arc::new(ManualClock::new(START_MS));
    // Count the calls up to and including the first delivery, then fail
    // everything after that with ENOSPC until cleared.
    let probe = Arc::new(FaultIo::new(0, 0, false));
    let calls_to_first_delivery;
    {
        let probe_dir = scratch();
        let e = Engine::open_with_io(
            fault_config(probe_dir.path()),
            clock.clone() as Arc<dyn Clock>,
            probe.clone(),
        )
        .unwrap();
        common::mailbox(&e, "full", 1000, 3_600_000);
        calls_to_first_delivery = probe.calls();
        e.shutdown();
    }
    let io = Arc::new(FaultIo::new(
        calls_to_first_delivery + 1,
        libc::ENOSPC,
        true,
    ));
    let e = Engine::open_with_io(
        fault_config(dir.path()),
        clock.clone() as Arc<dyn Clock>,
        io.clone(),
    )
    .unwrap();
    common::mailbox(&e, "full", 1000, 3_600_000);
    let to = format!("full@{DOMAIN}");
    let mut acked = Acked::default();
    for n in 0..5 {
        assert!(matches!(
            deliver_to(&e, &to, n, &mut acked),
            Err(DeliverError::DiskFull)
        ));
    }
    assert!(DeliverError::DiskFull.is_temporary());
    assert!(e.health().failed_shards.is_empty());
    assert!(!e.is_poisoned());
    io.clear();
    for n in 5..15 {
        deliver_to(&e, &to, n, &mut acked).unwrap();
    }
    e.shutdown();
    drop(e);
    assert_eq!(acked.messages.len(), 10);
    check_after_restart(dir.path(), &clock, &acked, "after the disk was full");
    assert_eq!(ENGINE_THREAD_PANICS.load(Ordering::SeqCst), 0);
}

/// An engine that compacts any segment less than 90% live, on `io`.
fn open_compacting(dir: &std::path::Path, c: &Arc<ManualClock>, io: Arc<dyn Io>) -> Engine {
    let mut cfg = common::config(dir);
    cfg.compaction_live_ratio = 0.9;
    Engine::open_with_io(cfg, c.clone() as Arc<dyn Clock>, io).unwrap()
}

/// A 3000-byte message whose every line names `i` (to find it on disk).
fn marked_body(i: u64) -> Bytes {
    let mut v = format!("Subject: m{i}\r\n\r\n").into_bytes();
    while v.len() < 3000 {
        v.extend_from_slice(marker(i).as_bytes());
    }
    v.into()
}

fn marker(i: u64) -> String {
    format!("MARK{i:08}MARK")
}

/// Data files holding `needle`.
fn files_containing(dir: &std::path::Path, needle: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let b = std::fs::read(e.as_ref().unwrap().path()).unwrap();
            b.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .count()
}

/// A compaction output is in place once renamed, even when the directory
/// fsync after the rename fails. Rewriting the same segment again would put
/// a second output beside it, and the next open would load both. A failed
/// directory fsync stops the shard instead (as a failed `fdatasync` does),
/// so every live message is on disk once.
#[test]
fn a_failed_directory_fsync_after_a_compaction_rename_leaves_no_second_output() {
    let dir = scratch();
    let c = Arc::new(ManualClock::new(START_MS));
    let e = open_compacting(dir.path(), &c, Arc::new(RealIo));
    common::mailbox(&e, "keep", 10_000, 3_600_000);
    let mut live = Vec::new();
    for i in 0..60u64 {
        let id = common::stored(&common::deliver(
            &e,
            &["keep@uncorreo.test"],
            marked_body(i),
        ))[0];
        if i % 4 == 0 {
            live.push((id, i));
        } else {
            block_on(e.delete_message(id)).unwrap();
        }
    }
    e.shutdown();
    drop(e);

    let io = Arc::new(FaultIo::new(0, libc::EIO, false));
    let e = open_compacting(dir.path(), &c, Arc::clone(&io) as Arc<dyn Io>);
    io.fail_next_after(Call::Rename, Call::SyncDir);
    assert!(e.compact_now().is_err());
    assert_eq!(io.failed_calls(), vec![Call::SyncDir]);
    // The owner's next pass.
    let _ = e.compact_now();
    let health = e.health();
    e.shutdown();
    drop(e);

    let e = open_compacting(dir.path(), &c, Arc::new(RealIo));
    for (id, i) in &live {
        assert_eq!(e.read_raw(*id).unwrap(), marked_body(*i));
        assert_eq!(
            files_containing(dir.path(), &marker(*i)),
            1,
            "message {i} is in more than one file"
        );
    }
    let keep = e.mailbox(&addr("keep")).unwrap();
    assert_eq!(keep.message_count as usize, live.len());
    // The shard stopped (so `/ready` answered 503) until this restart.
    assert_eq!(health.failed_shards.len(), 1, "{health:?}");
    e.shutdown();
}

/// Dropping a segment with nothing live: when the directory fsync after the
/// unlink fails, a crash may bring the segment back. Its records are dead
/// only because of tombstones elsewhere, so no later pass may drop those
/// tombstones: the shard stops, and a deleted mailbox stays deleted even
/// when the unlinked segment comes back.
#[test]
fn a_failed_directory_fsync_after_dropping_a_segment_never_brings_deleted_mail_back() {
    let dir = scratch();
    let c = Arc::new(ManualClock::new(START_MS));
    let mut cfg = common::config(dir.path());
    cfg.shards = 1;
    cfg.compaction_live_ratio = 0.9;
    // No address tombstones: segment 1 must hold nothing live, so that
    // compaction drops it (a tombstone would keep it for the quarantine).
    cfg.address_quarantine = std::time::Duration::ZERO;
    let open = |io: Arc<dyn Io>| {
        Engine::open_with_io(cfg.clone(), c.clone() as Arc<dyn Clock>, io).unwrap()
    };
    let e = open(Arc::new(RealIo));
    // Segment 1: all of `gone`; its deletion is in segment 2, beside
    // `brief`, which expires.
    let gone = common::mailbox(&e, "gone", 10_000, 3_600_000);
    for i in 0..24u64 {
        common::deliver(&e, &["gone@uncorreo.test"], marked_body(i));
    }
    block_on(e.delete_mailbox(gone.id)).unwrap();
    common::mailbox(&e, "brief", 10_000, 60_000);
    for i in 100..130u64 {
        common::deliver(&e, &["brief@uncorreo.test"], marked_body(i));
    }
    c.advance(60_000);
    e.shutdown();
    drop(e);
    let first = common::segments(dir.path())[0].0.clone();
    let saved = std::fs::read(&first).unwrap();

    let io = Arc::new(FaultIo::new(0, libc::EIO, false));
    let e = open(Arc::clone(&io) as Arc<dyn Io>);
    io.fail_next_after(Call::Remove, Call::SyncDir);
    assert!(e.compact_now().is_err());
    assert_eq!(io.failed_calls(), vec![Call::SyncDir]);
    // The owner's next pass.
    let _ = e.compact_now();
    e.shutdown();
    drop(e);

    // A crash lost the unlink that was never made durable.
    std::fs::write(&first, saved).unwrap();
    let e = open(Arc::new(RealIo));
    assert!(
        e.mailbox(&addr("gone")).is_none(),
        "a deleted mailbox came back"
    );
    assert!(e.mailbox_by_id(gone.id).is_none());
    e.shutdown();
}
