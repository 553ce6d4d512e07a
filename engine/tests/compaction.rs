//! Compaction: live messages stay byte-identical, deleted and expired data
//! leaves the disk, ids and sequences are never reused, metadata survives.

mod common;

use std::sync::Arc;

use common::*;
use uncorreo_engine::*;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_700_000_000_000))
}

fn open_ratio(dir: &std::path::Path, c: &Arc<ManualClock>, ratio: f64) -> Engine {
    let mut cfg = config(dir);
    cfg.compaction_live_ratio = ratio;
    Engine::open_with_clock(cfg, c.clone() as Arc<dyn Clock>).unwrap()
}

fn marker(i: u64) -> String {
    format!("MARK{i:08}MARK")
}

fn body(i: u64) -> bytes::Bytes {
    let mut v = format!("Subject: m{i}\r\n\r\n").into_bytes();
    while v.len() < 3000 {
        v.extend_from_slice(marker(i).as_bytes());
    }
    v.into()
}

fn disk_contains(dir: &std::path::Path, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let b = std::fs::read(e.unwrap().path()).unwrap();
        b.windows(needle.len()).any(|w| w == needle.as_bytes())
    })
}

#[test]
fn compaction_keeps_live_bytes_identical_and_removes_dead_data_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let e = open_ratio(dir.path(), &c, 0.9);
    let user = block_on(e.create_user("u".into())).unwrap();
    let key = block_on(e.create_api_key(user.id, [5; 32], "uct_k".into())).unwrap();
    let keep = mailbox(&e, "keep", 10_000, 3_600_000);
    let gone = mailbox(&e, "gone", 10_000, 3_600_000);
    let brief = mailbox(&e, "brief", 10_000, 60_000);
    let mut live = Vec::new();
    let mut dead = Vec::new();
    for i in 0..120u64 {
        let to = match i % 3 {
            0 => "keep@uncorreo.test",
            1 => "gone@uncorreo.test",
            _ => "brief@uncorreo.test",
        };
        let id = stored(&deliver(&e, &[to], body(i)))[0];
        if i % 3 == 0 && i % 2 == 0 {
            live.push((id, i));
        } else {
            dead.push((id, i));
        }
    }
    // Delete every other message of `keep`, the whole of `gone`; let `brief` expire.
    for (id, i) in &dead {
        if i % 3 == 0 {
            block_on(e.delete_message(*id)).unwrap();
        }
    }
    block_on(e.delete_mailbox(gone.id)).unwrap();
    c.advance(60_000);
    e.shutdown();
    drop(e);

    let before = dir_bytes(dir.path());
    let segs_before = segments(dir.path()).len();
    let e = open_ratio(dir.path(), &c, 0.9);
    let r = e.compact_now().unwrap();
    assert!(r.segments_dropped + r.segments_rewritten > 0, "{r:?}");
    assert!(r.bytes_reclaimed > 0);
    let after = dir_bytes(dir.path());
    assert!(
        after * 2 < before,
        "data dir went from {before} to {after} bytes"
    );
    assert!(segments(dir.path()).len() <= segs_before + 1);
    for (id, i) in &live {
        assert_eq!(e.read_raw(*id).unwrap(), body(*i));
    }
    for (id, i) in &dead {
        assert!(e.read_raw(*id).is_err());
        assert!(
            !disk_contains(dir.path(), &marker(*i)),
            "message {i} still on disk"
        );
    }
    for (_, i) in &live {
        assert!(disk_contains(dir.path(), &marker(*i)));
    }
    let st = e.stats();
    assert_eq!(st.compaction_runs, 1);
    assert_eq!(st.compaction_reclaimed_bytes, r.bytes_reclaimed);

    // Everything survives another restart: metadata, sequences, ids.
    e.shutdown();
    drop(e);
    let e = open_ratio(dir.path(), &c, 0.9);
    assert_eq!(e.api_key_by_hash(&[5; 32]).unwrap(), key);
    assert_eq!(e.user(user.id).unwrap().name, "u");
    let k = e.mailbox_by_id(keep.id).unwrap();
    assert_eq!(k.message_count as usize, live.len());
    assert_eq!(k.last_seq, 40);
    for (id, i) in &live {
        assert_eq!(e.read_raw(*id).unwrap(), body(*i));
    }
    assert!(e.mailbox_by_id(brief.id).is_none());
    // A new mailbox never reuses an id.
    let fresh = mailbox(&e, "gone", 10, 3_600_000);
    assert!(fresh.id != gone.id && fresh.id != brief.id && fresh.id != keep.id);
    let id = stored(&deliver(&e, &["keep@uncorreo.test"], body(999)))[0];
    assert_eq!(id.seq, 41);
}

#[test]
fn deleting_the_newest_message_never_lets_its_sequence_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let e = open_ratio(dir.path(), &c, 1.0);
    mailbox(&e, "a", 100, 3_600_000);
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(stored(&deliver(&e, &["a@uncorreo.test"], body(i)))[0]);
    }
    for id in &ids {
        block_on(e.delete_message(*id)).unwrap();
    }
    e.shutdown();
    drop(e);
    let e = open_ratio(dir.path(), &c, 1.0);
    e.compact_now().unwrap();
    e.shutdown();
    drop(e);
    let e = open_ratio(dir.path(), &c, 1.0);
    assert_eq!(e.mailbox(&addr("a")).unwrap().last_seq, 30);
    assert!(!disk_contains(dir.path(), &marker(5)));
    let id = stored(&deliver(&e, &["a@uncorreo.test"], body(100)))[0];
    assert_eq!(id.seq, 31);
}

#[test]
fn the_background_owner_compacts_on_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut cfg = config(dir.path());
    cfg.compaction_interval = std::time::Duration::from_millis(20);
    let e = Engine::open_with_clock(cfg, c.clone() as Arc<dyn Clock>).unwrap();
    mailbox(&e, "a", 10, 1000);
    c.advance(1000);
    // Wait (bounded) for the owner's pass to reap the expired mailbox.
    let t = std::time::Instant::now();
    while e.stats().compaction_runs == 0 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "owner never ran"
        );
        std::thread::yield_now();
    }
    while e.stats().mailboxes != 0 {
        assert!(t.elapsed() < std::time::Duration::from_secs(30));
        std::thread::yield_now();
    }
    e.shutdown();
    e.shutdown();
}

/// Crash states around a rewrite: (a) output still a `.tmp` (never renamed),
/// (b) output renamed but the old segment not yet unlinked. Both must open
/// to the same state as a finished compaction: no live message lost, no
/// deleted one back.
#[test]
fn crash_during_compaction_before_and_after_the_rename() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let e = open_ratio(dir.path(), &c, 0.9);
    mailbox(&e, "keep", 10_000, 3_600_000);
    let mut live = Vec::new();
    let mut deleted = Vec::new();
    for i in 0..60u64 {
        let id = stored(&deliver(&e, &["keep@uncorreo.test"], body(i)))[0];
        if i % 4 == 0 {
            live.push((id, i));
        } else {
            deleted.push((id, i));
        }
    }
    for (id, _) in &deleted {
        block_on(e.delete_message(*id)).unwrap();
    }
    e.shutdown();
    drop(e);
    let before = copy_dir(dir.path());
    let e = open_ratio(dir.path(), &c, 0.9);
    let r = e.compact_now().unwrap();
    assert!(r.segments_rewritten > 0, "{r:?}");
    e.shutdown();
    drop(e);
    let names = |d: &std::path::Path| -> std::collections::BTreeSet<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".seg"))
            .collect()
    };
    let old = names(before.path());
    let new = names(dir.path());
    let removed: Vec<_> = old.difference(&new).cloned().collect();
    let outputs: Vec<_> = new.difference(&old).cloned().collect();
    assert!(!removed.is_empty() && !outputs.is_empty());

    let verify = |d: &std::path::Path| {
        let e = open_ratio(d, &c, 0.9);
        for (id, i) in &live {
            assert_eq!(e.read_raw(*id).unwrap(), body(*i));
        }
        for (id, _) in &deleted {
            assert!(matches!(e.read_raw(*id), Err(LookupError::NotFound)));
        }
        assert_eq!(
            e.mailbox(&addr("keep")).unwrap().message_count as usize,
            live.len()
        );
        assert_eq!(e.stats().corrupt_records, 0);
        e.shutdown();
    };

    // (b) renamed, old not yet unlinked: put the old segments back.
    let b = copy_dir(dir.path());
    for n in &removed {
        std::fs::copy(before.path().join(n), b.path().join(n)).unwrap();
    }
    // (Superseded ones are deleted at open; wholly dead ones wait for the
    // next pass.) Either way the state is the compacted one.
    verify(b.path());

    // (a) crashed before the rename: the old state plus stray `.tmp` outputs.
    let a = copy_dir(before.path());
    for n in &outputs {
        std::fs::copy(
            dir.path().join(n),
            a.path()
                .join(format!("{n}.tmp").replace(".seg.tmp", ".seg.tmp")),
        )
        .unwrap();
    }
    verify(a.path());
    assert!(std::fs::read_dir(a.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
}

/// Run `f` on a thread of its own and wait for it (bounded): a call that
/// could not run while a compaction is held fails the test instead of
/// hanging it.
fn completes<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} did not complete while a compaction was in progress"))
}

/// A compaction copies without holding the shard: held (by the test hook)
/// after its copy is durable and before its swap, reads, an append and a
/// delete of a copied message all complete. The delete wins over the copy,
/// also once the delete's own tombstone is compacted away and the engine
/// restarted; the append is not lost.
#[test]
fn reads_appends_and_deletes_complete_during_a_compaction_and_the_delete_wins() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let open = |ratio| {
        let mut cfg = config(dir.path());
        cfg.shards = 1;
        cfg.compaction_live_ratio = ratio;
        Engine::open_with_clock(cfg, c.clone() as Arc<dyn Clock>).unwrap()
    };
    let e = open(0.9);
    mailbox(&e, "keep", 10_000, 3_600_000);
    mailbox(&e, "anchor", 10_000, 3_600_000);
    // Segment 1: a small message of `keep`, big live ones of `anchor`, and
    // deleted ones so that segment is a candidate for a rewrite.
    let small = stored(&deliver(&e, &["keep@uncorreo.test"], raw(200, 1)))[0];
    let mut anchors = Vec::new();
    for i in 0..12u64 {
        anchors.push((
            stored(&deliver(&e, &["anchor@uncorreo.test"], body(i)))[0],
            i,
        ));
    }
    for i in 100..104u64 {
        let id = stored(&deliver(&e, &["anchor@uncorreo.test"], body(i)))[0];
        block_on(e.delete_message(id)).unwrap();
    }
    e.shutdown();
    drop(e);
    assert_eq!(segments(dir.path()).len(), 1, "the fill fits one segment");

    let e = open(0.9);
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = parking_lot::Mutex::new(go_rx);
    let held_tx = parking_lot::Mutex::new(held_tx);
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

    // The copy is written; the old segment is still the one indexed.
    let (id, i) = anchors[3];
    let r = e.clone();
    assert_eq!(
        completes("a read", move || r.read_raw(id).unwrap()),
        body(i)
    );
    let r = e.clone();
    let listed = completes("a listing", move || {
        r.list_messages(id.mailbox, 0, 100).unwrap()
    });
    assert_eq!(listed.len(), anchors.len());
    let w = e.clone();
    let appended = completes("an append", move || {
        stored(&deliver(&w, &["keep@uncorreo.test"], body(500)))[0]
    });
    let w = e.clone();
    completes("a delete", move || {
        block_on(w.delete_message(small)).unwrap()
    });

    go_tx.send(()).unwrap();
    let report = compaction.join().unwrap().unwrap();
    e.set_compaction_hook_for_tests(None);
    assert_eq!(report.segments_rewritten, 1, "{report:?}");
    assert!(matches!(e.read_raw(small), Err(LookupError::NotFound)));
    assert_eq!(e.read_raw(appended).unwrap(), body(500));
    for (id, i) in &anchors {
        assert_eq!(e.read_raw(*id).unwrap(), body(*i));
    }
    e.check_indexes_for_tests().unwrap();

    // Dead bytes beside the delete's tombstone, so its segment is the one
    // rewritten next (the output, almost all live, is not): the tombstone
    // naming the replaced segment goes.
    let dead = stored(&deliver(&e, &["anchor@uncorreo.test"], body(600)))[0];
    block_on(e.delete_message(dead)).unwrap();
    e.shutdown();
    drop(e);
    let e = open(0.9);
    let report = e.compact_now().unwrap();
    assert_eq!(report.segments_rewritten, 1, "{report:?}");
    e.shutdown();
    drop(e);

    let e = open(0.9);
    assert!(
        matches!(e.read_raw(small), Err(LookupError::NotFound)),
        "a message deleted during a compaction came back"
    );
    let keep = e.mailbox(&addr("keep")).unwrap();
    assert_eq!((keep.message_count, keep.last_seq), (1, 2));
    assert_eq!(e.read_raw(appended).unwrap(), body(500));
    for (id, i) in &anchors {
        assert_eq!(e.read_raw(*id).unwrap(), body(*i));
    }
    assert_eq!(e.stats().corrupt_records, 0);
}
