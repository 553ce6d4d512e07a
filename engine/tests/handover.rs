//! Moving mailboxes between engines (SCALE.md, "A leaves cleanly"): what a
//! reader sees of a mailbox is the same after `import(export(x))`, after a
//! second import, and after the destination restarts; ids and sequences are
//! kept, and the destination never hands out a sequence the source did.

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use uncorreo_engine::*;

/// The partition stand-in of these tests: a pure function of the address.
fn prefix(address: &Address) -> u16 {
    (address.local().len() % 7) as u16
}

fn open_prefixed(dir: &Path, clock: &Arc<ManualClock>) -> Engine {
    let config = EngineConfig {
        mailbox_id_prefix: MailboxIdPrefix::new(prefix),
        ..config(dir)
    };
    Engine::open_with_clock(config, clock.clone() as Arc<dyn Clock>).unwrap()
}

/// Everything a reader can see of a mailbox.
#[derive(Debug, PartialEq)]
struct View {
    info: MailboxInfo,
    messages: Vec<(MessageMeta, Bytes)>,
}

fn view(e: &Engine, id: MailboxId) -> Option<View> {
    let info = e.mailbox_by_id(id)?;
    let messages = e
        .list_messages(id, 0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|m| {
            let raw = e.read_raw(m.id).unwrap();
            (m, raw)
        })
        .collect();
    Some(View { info, messages })
}

fn views(e: &Engine) -> Vec<View> {
    e.mailboxes_where(|_| true)
        .into_iter()
        .filter_map(|id| view(e, id))
        .collect()
}

/// [`move_all`] in chunks of at most `max_bytes`, each through its wire
/// form (encoded, decoded), imported in order.
fn move_all_chunked(from: &Engine, to: &Engine, max_bytes: usize) -> Vec<ImportReport> {
    let mut reports = Vec::new();
    for id in from.mailboxes_where(|_| true) {
        for chunk in from.export_mailbox(id).unwrap().into_chunks(max_bytes) {
            let wire = ExportChunk::decode(Bytes::from(chunk.encode())).unwrap();
            assert_eq!(wire, chunk);
            reports.push(block_on(to.import_chunk(wire)).unwrap());
        }
    }
    reports
}

fn move_all(from: &Engine, to: &Engine) -> Vec<ImportReport> {
    from.mailboxes_where(|_| true)
        .into_iter()
        .map(|id| {
            let export = from.export_mailbox(id).unwrap();
            block_on(to.import_mailbox(export)).unwrap()
        })
        .collect()
}

/// One step of a mailbox's history at the source.
#[derive(Debug, Clone)]
enum Step {
    /// Deliver to mailbox `n` with these plus tags (none: the bare address).
    Deliver(usize, Vec<&'static str>),
    /// Delete the `k`-th stored message of mailbox `n` (modulo its count).
    Delete(usize, usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..3usize, prop::collection::vec(prop::sample::select(vec!["a", "B", "ci"]), 0..3))
            .prop_map(|(n, tags)| Step::Deliver(n, tags)),
        1 => (0..3usize, 0..8usize).prop_map(|(n, k)| Step::Delete(n, k)),
    ]
}

const LOCALS: [&str; 3] = ["box", "inbox7", "a.b"];

fn run(e: &Engine, steps: &[Step], body: &mut u64) {
    for s in steps {
        match s {
            Step::Deliver(n, tags) => {
                let local = LOCALS[*n];
                let rcpts: Vec<String> = if tags.is_empty() {
                    vec![format!("{local}@{DOMAIN}")]
                } else {
                    tags.iter()
                        .map(|t| format!("{local}+{t}@{DOMAIN}"))
                        .collect()
                };
                let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
                *body += 1;
                deliver(e, &rcpts, raw(60 + (*body as usize % 300), *body));
            }
            Step::Delete(n, k) => {
                let Some(mb) = e.mailbox(&addr(LOCALS[*n])) else {
                    continue;
                };
                let stored = e.list_messages(mb.id, 0, usize::MAX).unwrap();
                if !stored.is_empty() {
                    let id = stored[k % stored.len()].id;
                    block_on(e.delete_message(id)).unwrap();
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn import_of_an_export_reads_the_same_once_twice_and_after_a_restart(
        first in prop::collection::vec(step(), 0..14),
        later in prop::collection::vec(step(), 0..8),
        chunk_bytes in prop::option::of(1..6usize),
    ) {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let clock = Arc::new(ManualClock::new(1_000_000));
        let a = open_prefixed(da.path(), &clock);
        let b = open_prefixed(db.path(), &clock);
        for local in LOCALS {
            mailbox(&a, local, 100, 3_600_000);
        }
        let mut body = 0;
        run(&a, &first, &mut body);

        // Whole, or in chunks through their wire form (small enough that a
        // mailbox takes several): the same copy.
        let chunked = chunk_bytes.map(|n| n * 200);
        let import = |a: &Engine, b: &Engine| match chunked {
            Some(max) => move_all_chunked(a, b, max),
            None => move_all(a, b),
        };
        import(&a, &b);
        prop_assert_eq!(views(&b), views(&a));
        // A repeated import is a no-op.
        let again = import(&a, &b);
        prop_assert!(again.iter().all(ImportReport::unchanged), "{:?}", again);
        prop_assert_eq!(views(&b), views(&a));

        // What the source did since is carried by the next import.
        run(&a, &later, &mut body);
        import(&a, &b);
        prop_assert_eq!(views(&b), views(&a));

        // Durable: the destination reads the same after a restart.
        b.shutdown();
        drop(b);
        let b = open_prefixed(db.path(), &clock);
        prop_assert_eq!(views(&b), views(&a));

        // The destination goes on from the source's highest sequence, even
        // when that message was deleted.
        for local in LOCALS {
            let before = a.mailbox(&addr(local)).unwrap();
            let out = deliver(&b, &[&format!("{local}@{DOMAIN}")], raw(80, 999));
            let DeliveryOutcome::Delivered { stored, .. } = out else {
                panic!("{out:?}");
            };
            let stored = stored[0];
            prop_assert_eq!(stored.mailbox, before.id);
            prop_assert_eq!(stored.seq, before.last_seq + 1);
        }
    }
}

#[test]
fn ids_of_two_partitions_never_meet_across_hosts() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clock = Arc::new(ManualClock::new(1_000_000));
    let a = open_prefixed(da.path(), &clock);
    let b = open_prefixed(db.path(), &clock);
    // Both hosts' first mailbox of one shard: the same counter, so the same
    // id without a prefix; different partitions, so different ids.
    let on_a = mailbox(&a, "box", 10, 3_600_000);
    let on_b = mailbox(&b, "inbox7", 10, 3_600_000);
    assert_ne!(prefix(&on_a.address), prefix(&on_b.address));
    assert_ne!(on_a.id, on_b.id);
    deliver(&a, &[&format!("box@{DOMAIN}")], raw(100, 1));
    move_all(&a, &b);
    assert_eq!(view(&b, on_a.id), view(&a, on_a.id));
    assert_eq!(
        view(&b, on_b.id).map(|v| v.info.address),
        Some(addr("inbox7"))
    );
    // New mailboxes of the moved one's partition get ids past it (ids
    // grow per shard: the shard's counter is past the imported one).
    for local in ["ab1", "ab2", "ab3", "ab4"] {
        let next = mailbox(&b, local, 10, 3_600_000);
        assert_eq!(prefix(&next.address), prefix(&on_a.address));
        if next.id.0 % 2 == on_a.id.0 % 2 {
            assert!(next.id > on_a.id, "{:?} after {:?}", next.id, on_a.id);
        } else {
            assert_ne!(next.id, on_a.id);
        }
    }
    // Ids stay exact as JSON numbers.
    assert!(b.mailboxes_where(|_| true).iter().all(|id| id.0 < 1 << 53));
}

#[test]
fn an_import_that_would_misroute_or_collide_writes_nothing() {
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let clock = Arc::new(ManualClock::new(1_000_000));
    let a = open(da.path(), &clock);
    let made = mailbox(&a, "box", 10, 3_600_000);
    let export = a.export_mailbox(made.id).unwrap();

    // Another shard count routes the id elsewhere (with 3 shards, at least
    // one of two neighbouring ids does).
    let three = Engine::open_with_clock(
        EngineConfig {
            shards: 3,
            ..config(dc.path())
        },
        clock.clone() as Arc<dyn Clock>,
    )
    .unwrap();
    let mut misrouted = 0;
    for id in [made.id.0, made.id.0 + 2] {
        let mut moved = export.clone();
        moved.mailbox.id = MailboxId(id);
        if let Err(ImportError::ShardMismatch { .. }) = block_on(three.import_mailbox(moved)) {
            misrouted += 1;
        }
    }
    assert!(misrouted >= 1);

    // An id used here for another address, and an address held here by
    // another id.
    let b = open(db.path(), &clock);
    let own = mailbox(&b, "other", 10, 3_600_000);
    let mut same_id = export.clone();
    same_id.mailbox.id = own.id;
    let refused = block_on(b.import_mailbox(same_id));
    assert!(
        matches!(
            refused,
            Err(ImportError::IdTaken(_) | ImportError::ShardMismatch { .. })
        ),
        "{refused:?}"
    );
    let mut same_address = export.clone();
    same_address.mailbox.address = own.address.clone();
    same_address.mailbox.id = MailboxId(own.id.0 + 2 * 1000);
    let refused = block_on(b.import_mailbox(same_address));
    assert!(
        matches!(refused, Err(ImportError::AddressTaken(_))),
        "{refused:?}"
    );
    assert_eq!(b.mailboxes_where(|_| true), vec![own.id]);
}

#[test]
fn a_chunk_is_bounded_checked_and_confined_to_its_window() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clock = Arc::new(ManualClock::new(1_000_000));
    let a = open_prefixed(da.path(), &clock);
    let b = open_prefixed(db.path(), &clock);
    let made = mailbox(&a, "box", 100, 3_600_000);
    for n in 0..6 {
        deliver(&a, &[&format!("box@{DOMAIN}")], raw(300, n));
    }
    let export = a.export_mailbox(made.id).unwrap();
    let chunks = export.clone().into_chunks(700);
    // About two messages a chunk; windows tile the sequences in order.
    assert!(chunks.len() >= 3, "{}", chunks.len());
    let mut after = 0;
    for chunk in &chunks {
        assert_eq!(chunk.after, after);
        assert!(
            chunk.encode().len() <= 700 + 300,
            "{}",
            chunk.encode().len()
        );
        after = chunk.through;
    }
    assert_eq!(after, u64::MAX);
    // No chunk without its messages' bytes intact.
    let mut wire = chunks[0].encode();
    let last = wire.len() - 1;
    wire[last] ^= 1;
    assert_eq!(
        ExportChunk::decode(Bytes::from(wire)),
        Err(ChunkDecodeError::Checksum)
    );
    assert_eq!(
        ExportChunk::decode(Bytes::from_static(b"UCXC")),
        Err(ChunkDecodeError::Malformed)
    );
    // A message outside the chunk's window is refused, and nothing written.
    let mut stray = chunks[0].clone();
    stray.after = stray.export.messages[0].seq;
    let refused = block_on(b.import_chunk(stray));
    assert!(
        matches!(refused, Err(ImportError::OutOfWindow { .. })),
        "{refused:?}"
    );
    assert!(b.mailbox_by_id(made.id).is_none());
    // The first chunk alone: only its messages, and the highest sequence
    // is not claimed before the last chunk.
    block_on(b.import_chunk(chunks[0].clone())).unwrap();
    let partial = b.mailbox_by_id(made.id).unwrap();
    assert_eq!(partial.last_seq, chunks[0].through);
    for chunk in &chunks[1..] {
        block_on(b.import_chunk(chunk.clone())).unwrap();
    }
    assert_eq!(view(&b, made.id), view(&a, made.id));
}
