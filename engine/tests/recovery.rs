//! Recovery: torn tails at every byte, garbage after the tail, flipped bytes
//! in sealed segments, missing hint files.

mod common;

use std::sync::Arc;

use common::*;
use uncorreo_engine::*;

const KIND_MESSAGE: u8 = 3;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_700_000_000_000))
}

fn one_shard(dir: &std::path::Path, c: &Arc<ManualClock>) -> Engine {
    let mut cfg = config(dir);
    cfg.shards = 1;
    Engine::open_with_clock(cfg, c.clone() as Arc<dyn Clock>).unwrap()
}

/// Writes `n` single-message batches into one segment; returns the ids and
/// bodies and the segment's path.
fn fixture(
    dir: &std::path::Path,
    c: &Arc<ManualClock>,
    n: u64,
) -> (Vec<(MessageId, bytes::Bytes)>, std::path::PathBuf) {
    let e = one_shard(dir, c);
    mailbox(&e, "a", 1000, 3_600_000);
    let mut ids = Vec::new();
    for i in 0..n {
        let body = raw(150, i);
        let id = stored(&deliver(&e, &["a@uncorreo.test"], body.clone()))[0];
        ids.push((id, body));
    }
    e.shutdown();
    let seg = segments(dir).into_iter().max_by_key(|(_, l)| *l).unwrap().0;
    (ids, seg)
}

#[test]
fn truncating_the_last_record_at_every_byte_keeps_every_earlier_record() {
    let src = tempfile::tempdir().unwrap();
    let c = clock();
    let (ids, seg) = fixture(src.path(), &c, 5);
    remove_hints(src.path());
    let bytes = std::fs::read(&seg).unwrap();
    let frames = frame_starts(&bytes);
    let last_msg = frames
        .iter()
        .rev()
        .find(|(_, k)| *k == KIND_MESSAGE)
        .unwrap()
        .0;
    let name = seg.file_name().unwrap().to_owned();
    for cut in last_msg..=bytes.len() {
        let d = copy_dir(src.path());
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(d.path().join(&name))
            .unwrap();
        f.set_len(cut as u64).unwrap();
        drop(f);
        let mut cfg = config(d.path());
        cfg.shards = 1;
        // Recovery is the same code either way; skipping syncs keeps 300 opens quick.
        cfg.durability = Durability::NeverUnsafeForLoadTests;
        let e = Engine::open_with_clock(cfg, c.clone() as Arc<dyn Clock>).unwrap();
        for (id, body) in &ids[..4] {
            assert_eq!(&e.read_raw(*id).unwrap(), body, "cut at {cut}");
        }
        let last = e.read_raw(ids[4].0);
        if cut == bytes.len() {
            assert_eq!(last.unwrap(), ids[4].1);
        } else {
            assert!(
                matches!(last, Err(LookupError::NotFound)),
                "cut at {cut}: {last:?}"
            );
        }
        if cut % 16 != 0 {
            continue;
        }
        if cut != bytes.len() {
            // The log goes on from the truncation point, with a fresh sequence.
            let id = stored(&deliver(&e, &["a@uncorreo.test"], raw(150, 77)))[0];
            assert_eq!(id.seq, 5);
        }
        e.shutdown();
        drop(e);
        let e = one_shard(d.path(), &c);
        assert_eq!(e.read_raw(ids[3].0).unwrap(), ids[3].1);
    }
}

#[test]
fn garbage_after_the_tail_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let (ids, seg) = fixture(dir.path(), &c, 3);
    remove_hints(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let good = bytes.len();
    bytes.extend((0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    std::fs::write(&seg, &bytes).unwrap();
    let e = one_shard(dir.path(), &c);
    for (id, body) in &ids {
        assert_eq!(&e.read_raw(*id).unwrap(), body);
    }
    assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, good);
}

#[test]
fn flipped_byte_in_a_sealed_segment_is_detected_never_served_and_open_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let (ids, seg) = fixture(dir.path(), &c, 5);
    let mut bytes = std::fs::read(&seg).unwrap();
    let msgs = message_starts(&bytes);
    // Last byte of the third message's body.
    let at = msgs[3] - 16 - 1;
    bytes[at] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();

    let e = one_shard(dir.path(), &c);
    assert_eq!(
        e.stats().corrupt_records,
        0,
        "bodies are checked lazily, on read"
    );
    assert!(matches!(
        e.read_raw(ids[2].0),
        Err(LookupError::Storage(StorageError::Corrupt))
    ));
    assert!(matches!(
        e.read_raw(ids[2].0),
        Err(LookupError::Storage(StorageError::Corrupt))
    ));
    assert_eq!(e.stats().corrupt_records, 1);
    for (i, (id, body)) in ids.iter().enumerate() {
        if i != 2 {
            assert_eq!(&e.read_raw(*id).unwrap(), body);
        }
    }
    let mb = e.mailbox(&addr("a")).unwrap();
    let listed: Vec<u64> = e
        .list_messages(mb.id, 0, 10)
        .unwrap()
        .iter()
        .map(|m| m.id.seq)
        .collect();
    assert_eq!(listed, vec![1, 2, 4, 5]);
    e.shutdown();
    drop(e);

    // Without hints the segment is scanned: the bad record is counted and
    // its sequence stays a gap; the segment gets no hint, so every later
    // open scans it again and finds the same.
    remove_hints(dir.path());
    for _ in 0..2 {
        let e = one_shard(dir.path(), &c);
        assert_eq!(e.stats().corrupt_records, 1);
        assert!(e.read_raw(ids[2].0).is_err());
        assert_eq!(e.read_raw(ids[4].0).unwrap(), ids[4].1);
        assert_eq!(entries(&e, mb.id, 0, 10), vec![1, 2, -3, 4, 5]);
        e.shutdown();
    }
}

/// `fixture`, then one more open and clean shutdown, so that the fixture's
/// segment is sealed (a newer one follows it) and a scan treats it as such.
fn sealed_fixture(
    dir: &std::path::Path,
    c: &Arc<ManualClock>,
    n: u64,
) -> (
    Vec<(MessageId, bytes::Bytes)>,
    std::path::PathBuf,
    Vec<usize>,
) {
    let (ids, seg) = fixture(dir, c, n);
    one_shard(dir, c).shutdown();
    let msgs = message_starts(&std::fs::read(&seg).unwrap());
    remove_hints(dir);
    (ids, seg, msgs)
}

#[test]
fn a_damaged_newest_message_in_a_scanned_segment_keeps_its_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let (ids, seg, msgs) = sealed_fixture(dir.path(), &c, 3);
    // A body byte of the newest message: no sound record names seq 3.
    flip(&seg, msgs[2] + 12 + 40, 0x01);
    let e = one_shard(dir.path(), &c);
    let mb = e.mailbox(&addr("a")).unwrap();
    assert_eq!(e.stats().corrupt_records, 1);
    assert_eq!(entries(&e, mb.id, 0, 10), vec![1, 2, -3]);
    assert_eq!(mb.last_seq, 3);
    assert!(e.read_raw(ids[2].0).is_err());
    // Its sequence is never handed out again.
    let next = stored(&deliver(&e, &["a@uncorreo.test"], raw(150, 9)))[0];
    assert_eq!(next.seq, 4);
}

#[test]
fn a_damaged_sequence_number_is_not_believed() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let (_, seg, msgs) = sealed_fixture(dir.path(), &c, 3);
    // The top byte of the second message's seq (payload bytes 8..16): the
    // record now claims seq 2 + 2^62, which nothing else vouches for.
    flip(&seg, msgs[1] + 12 + 15, 0x40);
    let e = one_shard(dir.path(), &c);
    let mb = e.mailbox(&addr("a")).unwrap();
    assert_eq!(e.stats().corrupt_records, 1);
    assert_eq!(entries(&e, mb.id, 0, 10), vec![1, 3]);
    assert_eq!(mb.last_seq, 3);
}

#[test]
fn unreadable_framing_ends_the_scan_of_a_sealed_segment_counted_and_never_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let (ids, seg, msgs) = sealed_fixture(dir.path(), &c, 3);
    let len_before = std::fs::metadata(&seg).unwrap().len() as usize;
    // The second message's length field beyond the 1 GiB frame limit (its
    // top byte was 0: lengths here are far below 16 MiB).
    flip(&seg, msgs[1] + 3, 0xff);
    for _ in 0..2 {
        let e = one_shard(dir.path(), &c);
        let mb = e.mailbox(&addr("a")).unwrap();
        assert_eq!(e.stats().corrupt_records, 1);
        assert_eq!(entries(&e, mb.id, 0, 10), vec![1]);
        assert_eq!(e.read_raw(ids[0].0).unwrap(), ids[0].1);
        e.shutdown();
        assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, len_before);
    }
}

/// XOR the byte at `at` of a segment file with `mask`.
fn flip(seg: &std::path::Path, at: usize, mask: u8) {
    let mut bytes = std::fs::read(seg).unwrap();
    bytes[at] ^= mask;
    std::fs::write(seg, &bytes).unwrap();
}

/// Where each Message frame of a segment starts.
fn message_starts(segment: &[u8]) -> Vec<usize> {
    frame_starts(segment)
        .iter()
        .filter(|(_, k)| *k == KIND_MESSAGE)
        .map(|(o, _)| *o)
        .collect()
}

/// `ids[bad]` is refused as corrupt, every other message is served intact.
fn only_corrupt_is(e: &Engine, ids: &[(MessageId, bytes::Bytes)], bad: usize) {
    assert!(matches!(
        e.read_raw(ids[bad].0),
        Err(LookupError::Storage(StorageError::Corrupt))
    ));
    for (i, (id, body)) in ids.iter().enumerate() {
        if i != bad {
            assert_eq!(&e.read_raw(*id).unwrap(), body);
        }
    }
}

/// The sequences of a listing, gaps as negative numbers (so one
/// comparison shows both the order and which entries are gaps).
fn entries(e: &Engine, mb: MailboxId, since: u64, limit: usize) -> Vec<i64> {
    e.list_entries(mb, since, limit)
        .unwrap()
        .iter()
        .map(|x| match x {
            ListEntry::Message(m) => m.id.seq as i64,
            ListEntry::Gap { seq } => -(*seq as i64),
        })
        .collect()
}

#[test]
fn a_message_whose_metadata_is_corrupt_is_a_gap_and_pages_fill_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let (ids, seg) = fixture(dir.path(), &c, 5);
    let msgs = message_starts(&std::fs::read(&seg).unwrap());
    // A byte of the third message's meta section (frame header 12 bytes,
    // message prefix 32), which listings verify with its own checksum.
    flip(&seg, msgs[2] + 12 + 32 + 2, 0x20);

    let e = one_shard(dir.path(), &c);
    let mb = e.mailbox(&addr("a")).unwrap().id;
    assert_eq!(entries(&e, mb, 0, 10), vec![1, 2, -3, 4, 5]);
    // A page of `limit` entries counts the gap and the next page starts past it.
    assert_eq!(entries(&e, mb, 0, 3), vec![1, 2, -3]);
    assert_eq!(entries(&e, mb, 3, 3), vec![4, 5]);
    // A page that holds only the gap is not empty, so it is not "caught up".
    assert_eq!(entries(&e, mb, 2, 1), vec![-3]);
    assert!(matches!(
        e.message_meta(ids[2].0),
        Err(LookupError::Storage(StorageError::Corrupt))
    ));
    only_corrupt_is(&e, &ids, 2);
    assert_eq!(e.stats().corrupt_records, 1);
    // Still a gap after a restart: the sequence is never reused.
    e.shutdown();
    drop(e);
    let e = one_shard(dir.path(), &c);
    assert_eq!(entries(&e, mb, 0, 10), vec![1, 2, -3, 4, 5]);
    let next = stored(&deliver(&e, &["a@uncorreo.test"], raw(150, 9)))[0];
    assert_eq!(next.seq, 6);
}

#[test]
fn a_message_whose_body_is_corrupt_is_a_gap_once_a_read_found_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let (ids, seg) = fixture(dir.path(), &c, 3);
    let msgs = message_starts(&std::fs::read(&seg).unwrap());
    // Last body byte of the second message (its batch's commit frame follows).
    flip(&seg, msgs[2] - 16 - 1, 0x20);

    let e = one_shard(dir.path(), &c);
    let mb = e.mailbox(&addr("a")).unwrap().id;
    // Listings verify only the metadata; the body's checksum is checked when read.
    assert_eq!(entries(&e, mb, 0, 10), vec![1, 2, 3]);
    assert!(e.read_raw(ids[1].0).is_err());
    assert_eq!(entries(&e, mb, 0, 10), vec![1, -2, 3]);
    assert_eq!(entries(&e, mb, 1, 1), vec![-2]);
}

#[test]
fn damaged_hint_file_is_ignored_and_the_segment_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let (ids, _) = fixture(dir.path(), &c, 4);
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "hint") {
            let mut b = std::fs::read(&p).unwrap();
            let mid = b.len() / 2;
            b[mid] ^= 1;
            std::fs::write(&p, b).unwrap();
        }
    }
    let e = one_shard(dir.path(), &c);
    for (id, body) in &ids {
        assert_eq!(&e.read_raw(*id).unwrap(), body);
    }
}

#[test]
fn a_segment_of_an_unknown_format_version_refuses_to_open() {
    // This build reads versions 1 to 3: one below and one above are unknown.
    for version in [0u32, 4] {
        let dir = tempfile::tempdir().unwrap();
        let c = clock();
        let (_, seg) = fixture(dir.path(), &c, 1);
        let mut b = std::fs::read(&seg).unwrap();
        b[8..12].copy_from_slice(&version.to_le_bytes());
        let crc = crc32c::crc32c(&b[..40]);
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&seg, b).unwrap();
        let r = Engine::open_with_clock(config(dir.path()), c as Arc<dyn Clock>);
        assert!(
            matches!(r, Err(OpenError::UnsupportedVersion { version: v, .. }) if v == version),
            "{:?}",
            r.err()
        );
    }
}

mod corruption {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Random damage anywhere (segments, hints, truncations): open never
        /// panics, and every read returns the exact bytes stored or an error.
        #[test]
        fn damaged_files_never_serve_wrong_bytes(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), 1u8..=255), 1..6),
            cut in proptest::option::of((any::<prop::sample::Index>(), any::<prop::sample::Index>())),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let c = clock();
            let (ids, _) = fixture(dir.path(), &c, 6);
            let mut files: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "seg" || x == "hint"))
                .collect();
            files.sort();
            for (f, at, x) in &flips {
                let p = f.get(&files);
                let mut b = std::fs::read(p).unwrap();
                if b.is_empty() { continue; }
                let i = at.index(b.len());
                b[i] ^= x;
                std::fs::write(p, b).unwrap();
            }
            if let Some((f, at)) = cut {
                let p = f.get(&files);
                let len = std::fs::metadata(p).unwrap().len() as usize;
                std::fs::OpenOptions::new().write(true).open(p).unwrap().set_len(at.index(len + 1) as u64).unwrap();
            }
            let mut cfg = config(dir.path());
            cfg.shards = 1;
            cfg.durability = Durability::NeverUnsafeForLoadTests;
            match Engine::open_with_clock(cfg, c.clone() as Arc<dyn Clock>) {
                Ok(e) => {
                    for (id, body) in &ids {
                        if let Ok(got) = e.read_raw(*id) {
                            prop_assert_eq!(&got, body);
                        }
                        let _ = e.message_meta(*id);
                    }
                    if let Some(mb) = e.mailbox(&addr("a")) {
                        let _ = e.list_messages(mb.id, 0, 100);
                    }
                }
                Err(err) => prop_assert!(matches!(err, OpenError::UnsupportedVersion { .. } | OpenError::Io(_)), "{err}"),
            }
        }
    }
}
