//! A delivery that spans shards and fails on one after another committed:
//! the sender's retry stores exactly one copy per mailbox, and is answered
//! with the ids already stored (`engine/src/retry.rs`).

mod common;
#[path = "simfs/crash.rs"]
#[allow(dead_code)]
mod crash_io;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use uncorreo_engine::*;

/// The real I/O, except that while armed every write into a segment of
/// shard 1 fails as a full disk would (temporary: the shard goes on).
struct ShardOneFull {
    armed: AtomicBool,
}

impl ShardOneFull {
    fn hit(&self, path: &Path) -> io::Result<()> {
        let shard_one = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("s001-"));
        if shard_one && self.armed.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc_enospc()));
        }
        Ok(())
    }
}

fn libc_enospc() -> i32 {
    28
}

impl Io for ShardOneFull {
    fn create_new(&self, path: &Path) -> io::Result<DataFile> {
        RealIo.create_new(path)
    }
    fn open(&self, path: &Path) -> io::Result<DataFile> {
        RealIo.open(path)
    }
    fn write_all_at(&self, file: &DataFile, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.hit(file.path())?;
        RealIo.write_all_at(file, bytes, offset)
    }
    fn sync_data(&self, file: &DataFile) -> io::Result<()> {
        RealIo.sync_data(file)
    }
    fn sync_all(&self, file: &DataFile) -> io::Result<()> {
        RealIo.sync_all(file)
    }
    fn allocate(&self, file: &DataFile, len: u64) -> io::Result<()> {
        RealIo.allocate(file, len)
    }
    fn set_len(&self, file: &DataFile, len: u64) -> io::Result<()> {
        RealIo.set_len(file, len)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealIo.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealIo.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealIo.sync_dir(dir)
    }
}

const START_MS: u64 = 1_700_000_000_000;

/// An engine on that I/O, and one mailbox in each of its two shards.
fn setup(dir: &Path) -> (Engine, Arc<ShardOneFull>, [MailboxInfo; 2]) {
    let io = Arc::new(ShardOneFull {
        armed: AtomicBool::new(false),
    });
    let clock = Arc::new(ManualClock::new(START_MS));
    let e = Engine::open_with_io(config(dir), clock, io.clone() as Arc<dyn Io>).unwrap();
    let boxes = one_in_each_shard(&e, "box");
    (e, io, boxes)
}

/// Reopen `dir` on the same I/O kind, unarmed, an hour less a second later
/// at most (inside the retry window).
fn reopen(dir: &Path, later_ms: u64) -> (Engine, Arc<ShardOneFull>) {
    let io = Arc::new(ShardOneFull {
        armed: AtomicBool::new(false),
    });
    let clock = Arc::new(ManualClock::new(START_MS + later_ms));
    let e = Engine::open_with_io(config(dir), clock, io.clone() as Arc<dyn Io>).unwrap();
    (e, io)
}

/// One new mailbox in each of the engine's two shards (shard 0's first).
fn one_in_each_shard(e: &Engine, prefix: &str) -> [MailboxInfo; 2] {
    let mut found: [Option<MailboxInfo>; 2] = [None, None];
    for i in 0.. {
        let m = mailbox(e, &format!("{prefix}{i}"), 10, 3_600_000);
        let shard = (m.id.0 % 2) as usize;
        if found[shard].is_none() {
            found[shard] = Some(m);
        }
        if let [Some(a), Some(b)] = &found {
            return [a.clone(), b.clone()];
        }
    }
    unreachable!()
}

fn to_both(boxes: &[MailboxInfo; 2], raw: bytes::Bytes, key: Option<&str>) -> Delivery {
    Delivery {
        // Each try carries its own trace line, as every ingest path adds one.
        raw,
        envelope_from: "app@sender.test".into(),
        recipients: boxes
            .iter()
            .map(|m| Recipient::parse(&format!("{}", m.address)).unwrap())
            .collect(),
        dedupe_key: key.map(str::to_owned),
    }
}

fn with_trace(line: &str) -> bytes::Bytes {
    let mut v = format!("Received: {line}\r\n").into_bytes();
    v.extend_from_slice(&raw(400, 1));
    v.into()
}

fn copies(e: &Engine, m: &MailboxInfo) -> usize {
    e.list_messages(m.id, 0, 100).unwrap().len()
}

#[test]
fn a_retry_after_one_shard_failed_stores_one_copy_per_mailbox_and_names_the_stored_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (e, io, boxes) = setup(dir.path());
    io.armed.store(true, Ordering::SeqCst);
    let first = block_on(e.deliver(to_both(&boxes, with_trace("try 1"), None)));
    assert!(matches!(first, Err(DeliverError::DiskFull)), "{first:?}");
    // Shard 0 committed its part; shard 1 has nothing.
    assert_eq!((copies(&e, &boxes[0]), copies(&e, &boxes[1])), (1, 0));
    let kept = e.list_messages(boxes[0].id, 0, 1).unwrap()[0].id;

    io.armed.store(false, Ordering::SeqCst);
    let retry = block_on(e.deliver(to_both(&boxes, with_trace("try 2"), None))).unwrap();
    assert_eq!((copies(&e, &boxes[0]), copies(&e, &boxes[1])), (1, 1));
    let DeliveryOutcome::Delivered { stored, refused } = retry else {
        panic!("{retry:?}")
    };
    assert!(refused.is_empty());
    let new = e.list_messages(boxes[1].id, 0, 1).unwrap()[0].id;
    assert_eq!(
        stored,
        vec![kept, new],
        "the retry names the copy stored first"
    );

    // Done: the same message sent again is a new message.
    block_on(e.deliver(to_both(&boxes, with_trace("again"), None))).unwrap();
    assert_eq!((copies(&e, &boxes[0]), copies(&e, &boxes[1])), (2, 2));
}

#[test]
fn a_keyed_delivery_that_failed_on_one_shard_is_completed_by_its_retry_then_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let (e, io, boxes) = setup(dir.path());
    io.armed.store(true, Ordering::SeqCst);
    let d = to_both(&boxes, with_trace("sns"), Some("sns:partial"));
    assert!(block_on(e.deliver(d.clone())).is_err());
    assert_eq!((copies(&e, &boxes[0]), copies(&e, &boxes[1])), (1, 0));
    io.armed.store(false, Ordering::SeqCst);
    let retry = block_on(e.deliver(d.clone())).unwrap();
    assert!(matches!(retry, DeliveryOutcome::Delivered { ref stored, .. } if stored.len() == 2));
    assert_eq!((copies(&e, &boxes[0]), copies(&e, &boxes[1])), (1, 1));
    assert_eq!(
        block_on(e.deliver(d.clone())).unwrap(),
        DeliveryOutcome::Duplicate
    );
    // The key is whole on disk too: after a restart it is still a duplicate.
    e.shutdown();
    drop(e);
    let clock = Arc::new(ManualClock::new(START_MS));
    let e = Engine::open_with_clock(config(dir.path()), clock).unwrap();
    assert_eq!(block_on(e.deliver(d)).unwrap(), DeliveryOutcome::Duplicate);
    assert_eq!((copies(&e, &boxes[0]), copies(&e, &boxes[1])), (1, 1));
}

/// A batch whose `fdatasync` failed is cut off the log, and the cut is made
/// durable: a power loss after it (any subset of the unsynced writes, torn
/// or whole, may reach the disk) never brings the batch back beside the
/// retry the sender was told to make.
#[test]
fn a_batch_whose_sync_failed_never_comes_back_after_a_power_loss() {
    use crash_io::{CrashIo, Tear};
    for seed in 0..16 {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.shards = 1;
        cfg.durability = Durability::Always;
        let clock = Arc::new(ManualClock::new(START_MS));
        let io = Arc::new(CrashIo::new(dir.path(), seed, None, Tear::Any).unwrap());
        let e = Engine::open_with_io(cfg.clone(), clock.clone(), io.clone()).unwrap();
        let m = mailbox(&e, "synced", 10, 3_600_000);
        let to = m.address.to_string();
        let kept = stored(&deliver(&e, &[&to], raw(3000, 1)))[0];
        e.fail_next_sync_for_tests();
        let lost = block_on(e.deliver(Delivery {
            raw: raw(3000, 2),
            envelope_from: String::new(),
            recipients: vec![Recipient::parse(&to).unwrap()],
            dedupe_key: None,
        }));
        assert!(
            matches!(lost, Err(DeliverError::Storage(StorageError::Poisoned))),
            "{lost:?}"
        );
        io.crash_now();
        drop(e);
        io.reboot().unwrap();
        let e = Engine::open_with_clock(cfg, clock as Arc<dyn Clock>).unwrap();
        assert_eq!(e.read_raw(kept).unwrap(), raw(3000, 1), "seed {seed}");
        assert_eq!(
            copies(&e, &m),
            1,
            "seed {seed}: the batch whose sync failed came back"
        );
    }
}

/// The parts of a failed delivery are durable with its messages: after a
/// restart between the failure and the retry, the retry still stores one
/// copy per mailbox and names the copy the first try stored — with a key
/// derived from the message, and with a caller's dedupe key (whose
/// `Dedupe` record is incomplete on disk, so it does not count).
#[test]
fn a_retry_after_one_shard_failed_and_a_restart_stores_one_copy_per_mailbox() {
    for key in [None, Some("sns:across-a-restart")] {
        let dir = tempfile::tempdir().unwrap();
        let (e, io, boxes) = setup(dir.path());
        io.armed.store(true, Ordering::SeqCst);
        let first = block_on(e.deliver(to_both(&boxes, with_trace("try 1"), key)));
        assert!(matches!(first, Err(DeliverError::DiskFull)), "{first:?}");
        assert_eq!((copies(&e, &boxes[0]), copies(&e, &boxes[1])), (1, 0));
        let kept = e.list_messages(boxes[0].id, 0, 1).unwrap()[0].id;
        e.shutdown();
        drop(e);

        let (e, _io) = reopen(dir.path(), 3_599_000);
        let retry = block_on(e.deliver(to_both(&boxes, with_trace("try 2"), key))).unwrap();
        assert_eq!(
            (copies(&e, &boxes[0]), copies(&e, &boxes[1])),
            (1, 1),
            "key {key:?}: one copy per mailbox"
        );
        let DeliveryOutcome::Delivered { stored, refused } = retry else {
            panic!("{retry:?}")
        };
        assert!(refused.is_empty());
        let new = e.list_messages(boxes[1].id, 0, 1).unwrap()[0].id;
        assert_eq!(stored, vec![kept, new], "key {key:?}: the first try's id");
        e.shutdown();
    }
}

/// A delivery that succeeded everywhere is noted as done in the log, with
/// the next batch of each of its shards (no sync of its own): after a
/// power loss and a restart, the same bytes sent again are a new message,
/// not an answer with the old ids.
#[test]
fn a_delivery_done_everywhere_is_new_again_after_a_crash_and_a_restart() {
    use crash_io::{CrashIo, Tear};
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let io = Arc::new(CrashIo::new(dir.path(), 1, None, Tear::None).unwrap());
    let mut cfg = config(dir.path());
    cfg.durability = Durability::Always;
    let e = Engine::open_with_io(cfg.clone(), clock.clone(), io.clone()).unwrap();
    let boxes = one_in_each_shard(&e, "done");
    block_on(e.deliver(to_both(&boxes, with_trace("once"), None))).unwrap();
    // A batch in each shard after it (its `DeliveryDone` rides there),
    // then the power fails: nothing unsynced survives.
    one_in_each_shard(&e, "later");
    io.crash_now();
    drop(e);
    io.reboot().unwrap();

    let e = Engine::open_with_clock(cfg, clock as Arc<dyn Clock>).unwrap();
    assert_eq!((copies(&e, &boxes[0]), copies(&e, &boxes[1])), (1, 1));
    let again = block_on(e.deliver(to_both(&boxes, with_trace("again"), None))).unwrap();
    assert!(
        matches!(&again, DeliveryOutcome::Delivered { stored, .. } if stored.len() == 2),
        "{again:?}"
    );
    assert_eq!(
        (copies(&e, &boxes[0]), copies(&e, &boxes[1])),
        (2, 2),
        "the same bytes, sent again after the first delivery was done, are a new message"
    );
}

/// A compaction that rewrites the segment holding a failed delivery's part
/// carries the part (it is live for the retry window): after the rewrite
/// and a restart, the retry still stores one copy per mailbox.
#[test]
fn a_compaction_carries_the_part_a_retry_needs_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(ShardOneFull {
        armed: AtomicBool::new(false),
    });
    let clock = Arc::new(ManualClock::new(START_MS));
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 4096;
    cfg.compaction_live_ratio = 0.9;
    let e = Engine::open_with_io(cfg.clone(), clock, io.clone() as Arc<dyn Io>).unwrap();
    let boxes = one_in_each_shard(&e, "box");
    // In shard 0, like the stored part: its deleted copies make the part's
    // segment mostly dead, so compaction rewrites it.
    let filler = mailbox(&e, "cc", 1000, 3_600_000);
    assert_eq!(filler.id.0 % 2, 0);
    io.armed.store(true, Ordering::SeqCst);
    let first = block_on(e.deliver(to_both(&boxes, with_trace("try 1"), None)));
    assert!(matches!(first, Err(DeliverError::DiskFull)), "{first:?}");
    io.armed.store(false, Ordering::SeqCst);
    let kept = e.list_messages(boxes[0].id, 0, 1).unwrap()[0].id;
    let to = filler.address.to_string();
    for i in 0..8 {
        let id = stored(&deliver(&e, &[&to], raw(1000, i)))[0];
        block_on(e.delete_message(id)).unwrap();
    }
    let report = e.compact_now().unwrap();
    assert!(report.segments_rewritten >= 1, "{report:?}");
    e.shutdown();
    drop(e);

    let (e, _io) = reopen(dir.path(), 60_000);
    let retry = block_on(e.deliver(to_both(&boxes, with_trace("try 2"), None))).unwrap();
    assert_eq!(
        (copies(&e, &boxes[0]), copies(&e, &boxes[1])),
        (1, 1),
        "the rewrite dropped the part"
    );
    let DeliveryOutcome::Delivered { stored, .. } = retry else {
        panic!("{retry:?}")
    };
    assert_eq!(stored[0], kept);
}
