//! A clean handover (SCALE.md, "A leaves cleanly") between two appliances in
//! one process and a real `nats-server`: every partition homed on A moves to
//! B by compare-and-set on its home, with its mailboxes' ids, sequences and
//! bytes; deliveries for a partition are refused while it moves; and a move
//! left behind by a crash is aborted at the source's next start.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use uncorreo::cluster::LocalDestination;
use uncorreo::config::ClusterConfig;
use uncorreo::Appliance;
use uncorreo_cluster::assign::{Assignment, Assignments};
use uncorreo_cluster::handover::{Destination, HandoverError};
use uncorreo_cluster::hop::HopSecret;
use uncorreo_cluster::member::NotAdmitted;
use uncorreo_cluster::nats::NatsBucket;
use uncorreo_cluster::partition::{partition_of, Partition, PartitionCount};
use uncorreo_cluster::testing::NatsServer;
use uncorreo_engine::*;
use uncorreo_hop::handover::HopDestination;

use crate::cluster::{eventually, homes_of, hop_member, secret_file, served, PARTITIONS};
use crate::support::{block_on, test_config, Raw, DOMAIN};

fn start(data: &std::path::Path, cluster: ClusterConfig) -> Appliance {
    let mut config = test_config(data);
    config.cluster = Some(cluster);
    Appliance::start(config).expect("appliance starts")
}

/// Everything a reader sees of every mailbox.
fn views(engine: &Engine) -> Vec<(MailboxInfo, Vec<(MessageMeta, Bytes)>)> {
    engine
        .mailboxes_where(|_| true)
        .into_iter()
        .filter_map(|id| {
            let info = engine.mailbox_by_id(id)?;
            let messages = engine
                .list_messages(id, 0, usize::MAX)
                .expect("list")
                .into_iter()
                .map(|m| {
                    let raw = engine.read_raw(m.id).expect("raw");
                    (m, raw)
                })
                .collect();
            Some((info, messages))
        })
        .collect()
}

fn create(engine: &Engine, local: &str) -> MailboxInfo {
    let new = NewMailbox {
        address: Address::from_parts(local, DOMAIN).expect("address"),
        owner: Owner::Anonymous {
            token_hash: [3u8; 32],
        },
        expires_at_ms: engine.now_ms() + 3_600_000,
        max_messages: 100,
    };
    block_on(engine.create_mailbox(new)).expect("mailbox")
}

/// One message over SMTP, answered `250`.
fn send(appliance: &Appliance, to: &str, n: usize) {
    let (mut smtp, _) = Raw::connect(appliance.smtp_addr);
    assert!(smtp.cmd("EHLO t").starts_with("250"));
    assert!(smtp.cmd("MAIL FROM:<s@x.test>").starts_with("250"));
    assert!(smtp.cmd(&format!("RCPT TO:<{to}>")).starts_with("250"));
    assert!(smtp.cmd("DATA").starts_with("354"));
    let reply = smtp.cmd(&format!("Subject: n{n}\r\n\r\nbody {n}\r\n."));
    assert!(reply.starts_with("250"), "{reply}");
    let _ = smtp.cmd("QUIT");
}

/// The in-process destination, checking on each copy that the source
/// refuses deliveries for the partition while it moves.
struct Checked {
    inner: LocalDestination,
    source: std::sync::Arc<uncorreo_cluster::member::Served>,
    /// A's SMTP listener: RCPT there for the moving partition gets 451.
    smtp: std::net::SocketAddr,
    refused_while_moving: AtomicUsize,
}

/// An address of `partition`.
fn address_in(partition: Partition) -> String {
    let count = PartitionCount::new(PARTITIONS).expect("count");
    (0..)
        .map(|n| format!("probe{n}@{DOMAIN}"))
        .find(|address| partition_of(address, count) == partition)
        .expect("some address hashes to every partition")
}

impl Destination for Checked {
    fn node(&self) -> &str {
        self.inner.node()
    }

    async fn copy(&self, partition: Partition) -> Result<u64, String> {
        let admitted = self.source.admit(partition, Instant::now());
        // The same answer at RCPT over SMTP, for any mailbox of the partition.
        let (mut smtp, _) = Raw::connect(self.smtp);
        let _ = smtp.cmd("EHLO t");
        let _ = smtp.cmd("MAIL FROM:<s@x.test>");
        let rcpt = smtp.cmd(&format!("RCPT TO:<{}>", address_in(partition)));
        let _ = smtp.cmd("QUIT");
        if matches!(admitted, Err(NotAdmitted::Moving(_))) && rcpt.starts_with("451") {
            self.refused_while_moving.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.copy(partition).await
    }

    async fn adopt(&self, partition: Partition) -> Result<(), String> {
        self.inner.adopt(partition).await
    }
}

#[test]
fn clean_handover_moves_without_loss_or_duplicate() {
    let nats = NatsServer::start();
    let secret = secret_file();
    let (data_a, data_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let a = start(data_a.path(), hop_member(&nats, "a", secret.path()));
    let b = start(data_b.path(), hop_member(&nats, "b", secret.path()));
    assert_eq!(served(&a), usize::from(PARTITIONS));
    assert_eq!(served(&b), 0);

    let locals = ["m0", "m1", "m2", "m3", "m4", "m5"];
    for local in locals {
        create(&a.engine, local);
    }
    for (n, local) in locals.iter().enumerate() {
        for copy in 0..=n % 3 {
            send(&a, &format!("{local}+t{copy}@{DOMAIN}"), n * 10 + copy);
        }
    }
    // A deleted message, the highest of its mailbox: its sequence must not
    // be handed out again on B.
    let m2 = a
        .engine
        .mailbox(&Address::from_parts("m2", DOMAIN).expect("address"))
        .expect("m2");
    let newest = a.engine.list_messages(m2.id, 0, 100).expect("list");
    block_on(a.engine.delete_message(newest.last().expect("one").id)).expect("deleted");
    let before = views(&a.engine);

    let destination = Checked {
        inner: LocalDestination {
            from: a.engine.clone(),
            to: b.engine.clone(),
            member: b.cluster().expect("cluster").member.clone(),
            partitions: PartitionCount::new(PARTITIONS).expect("count"),
        },
        source: a.cluster_served().expect("cluster"),
        smtp: a.smtp_addr,
        refused_while_moving: AtomicUsize::new(0),
    };
    let moved = a
        .cluster()
        .expect("cluster")
        .leave(&destination)
        .expect("leave");
    assert_eq!(moved.len(), usize::from(PARTITIONS));
    assert_eq!(
        moved.iter().map(|m| m.mailboxes).sum::<u64>(),
        locals.len() as u64
    );
    assert_eq!(
        destination.refused_while_moving.load(Ordering::SeqCst),
        usize::from(PARTITIONS),
        "every partition refused deliveries (and SMTP RCPT with 451) while it moved"
    );

    // Every home is B's; A serves nothing; B serves everything once A's
    // leases have lapsed.
    assert!(homes_of(&nats).iter().all(|h| h.as_deref() == Some("b")));
    assert_eq!(served(&a), 0);
    assert!(
        eventually(Duration::from_secs(30), || served(&b)
            == usize::from(PARTITIONS)),
        "b serves {}",
        served(&b)
    );
    // Same ids, sequences, tags and bytes: nothing lost, nothing twice.
    assert_eq!(views(&b.engine), before);

    // A second leave finds nothing homed on A.
    let again = a
        .cluster()
        .expect("cluster")
        .leave(&destination)
        .expect("leave");
    assert!(again.is_empty());

    // B goes on from A's highest sequence, also past the deleted one.
    let m2_on_b = b.engine.mailbox_by_id(m2.id).expect("m2 on b");
    send(&b, &format!("m2@{DOMAIN}"), 99);
    let stored = b.engine.list_messages(m2.id, 0, 100).expect("list");
    assert_eq!(stored.last().map(|m| m.id.seq), Some(m2_on_b.last_seq + 1));

    // Durable on B.
    let after = views(&b.engine);
    b.shutdown();
    let b = start(data_b.path(), hop_member(&nats, "b", secret.path()));
    assert_eq!(views(&b.engine), after);
    a.shutdown();
    b.shutdown();
}

#[test]
fn a_move_left_by_a_crash_is_aborted_at_the_sources_next_start() {
    let nats = NatsServer::start();
    let secret = secret_file();
    let (data_a, data_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let a = start(data_a.path(), hop_member(&nats, "a", secret.path()));
    let b = start(data_b.path(), hop_member(&nats, "b", secret.path()));
    let mailbox = create(&a.engine, "stays");
    send(&a, &format!("stays@{DOMAIN}"), 1);
    let p = partition_of(
        &format!("stays@{DOMAIN}"),
        PartitionCount::new(PARTITIONS).expect("count"),
    );
    // A stopped right after marking the move (and maybe after B imported
    // part of it): the home says moving, and it never flipped.
    block_on(async {
        let homes = Assignments::new(
            NatsBucket::open(nats.url(), "uncorreo_homes", None, Duration::from_secs(2))
                .await
                .expect("bucket"),
        );
        homes.begin_move(p, "a", "b").await.expect("moving");
    });
    let before = views(&a.engine);
    a.shutdown();
    let a = start(data_a.path(), hop_member(&nats, "a", secret.path()));
    // The move was aborted: A is home again, serves the partition once its
    // old lease lapses, and has every message; B never served it.
    let home = block_on(async {
        let homes = Assignments::new(
            NatsBucket::open(nats.url(), "uncorreo_homes", None, Duration::from_secs(2))
                .await
                .expect("bucket"),
        );
        homes.home(p).await.expect("home").map(|(home, _)| home)
    });
    assert_eq!(
        home,
        Some(Assignment {
            node: "a".to_owned(),
            moving_to: None
        })
    );
    assert!(
        eventually(Duration::from_secs(30), || served(&a)
            == usize::from(PARTITIONS)),
        "a serves {}",
        served(&a)
    );
    assert_eq!(served(&b), 0);
    assert_eq!(views(&a.engine), before);
    assert!(a.engine.mailbox_by_id(mailbox.id).is_some());
    a.shutdown();
    b.shutdown();
}

/// A message of about `size` bytes over SMTP at `smtp`; its stored ids.
fn send_sized(smtp: std::net::SocketAddr, to: &str, n: usize, size: usize) -> Vec<String> {
    // Lines of 100 bytes: SMTP lines are at most 1,000.
    let line = format!("{}\r\n", "x".repeat(98));
    let body = format!("{n}\r\n{}", line.repeat(size / 100));
    let (rcpt, end) = crate::cluster::send(smtp, to, &body);
    assert!(rcpt.starts_with("250"), "{rcpt}");
    let end = end.expect("data sent");
    assert!(end.starts_with("250"), "{end}");
    crate::cluster::stored_ids(&end)
}

/// `uncorreo admin cluster leave` over `appliance`'s operator socket (the
/// CLI's own call).
pub(crate) fn leave_over_socket(
    appliance: &Appliance,
    to: Option<&str>,
) -> uncorreo_api::operator::Answer {
    uncorreo_api::operator::call(
        &appliance.admin_socket,
        &uncorreo_api::operator::Envelope {
            operator: "test".to_owned(),
            request: uncorreo_api::admin::AdminRequest::ClusterLeave {
                to: to.map(str::to_owned),
            },
        },
    )
    .expect("the operator socket answers")
}

fn hop_destination(from: &Appliance, to: &Appliance, node: &str) -> HopDestination {
    HopDestination {
        from: from.engine.clone(),
        node: node.to_owned(),
        hop: to.hop_addr().expect("a hop").to_string(),
        secret: HopSecret::new(crate::cluster::SECRET.as_bytes().to_vec()).expect("secret"),
        partitions: PartitionCount::new(PARTITIONS).expect("count"),
        timeout: Duration::from_secs(10),
    }
}

/// The issue's handover over the network, on loopback: A leaves through
/// its operator socket; every partition moves to B over the hop (the
/// mailboxes in chunks, A's message limit being small), every message acked
/// before is on B once with its id, and mail sent afterwards, at A or at B,
/// is stored by B.
#[test]
fn leave_over_the_hop_moves_every_partition_without_loss_or_duplicate() {
    let nats = NatsServer::start();
    let secret = secret_file();
    let (data_a, data_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let mut config = test_config(data_a.path());
    config.cluster = Some(hop_member(&nats, "a", secret.path()));
    // Small enough that a mailbox of a few messages takes several chunks.
    config.engine.max_message_bytes = 16 * 1024;
    let a = Appliance::start(config).expect("a starts");
    let b = start(data_b.path(), hop_member(&nats, "b", secret.path()));
    assert_eq!(served(&a), usize::from(PARTITIONS));

    let locals = ["h0", "h1", "h2", "h3"];
    let mut acked = Vec::new();
    for local in locals {
        create(&a.engine, local);
    }
    for (n, local) in locals.iter().enumerate() {
        for copy in 0..(2 + 2 * n) {
            acked.extend(send_sized(
                a.smtp_addr,
                &format!("{local}+t{copy}@{DOMAIN}"),
                n * 10 + copy,
                5_000,
            ));
        }
    }
    let before = views(&a.engine);
    let answer = leave_over_socket(&a, None);
    let uncorreo_api::operator::Answer::Ok { result } = answer else {
        panic!("{answer:?}");
    };
    assert_eq!(result["to"], "b", "{result}");
    assert_eq!(result["partitions"], u64::from(PARTITIONS), "{result}");
    assert_eq!(result["mailboxes"], locals.len() as u64, "{result}");

    assert!(homes_of(&nats).iter().all(|h| h.as_deref() == Some("b")));
    assert_eq!(served(&a), 0);
    assert!(
        eventually(Duration::from_secs(30), || served(&b)
            == usize::from(PARTITIONS)),
        "b serves {}",
        served(&b)
    );
    // Same ids, sequences, tags and bytes: nothing lost, nothing twice.
    assert_eq!(views(&b.engine), before);
    let on_b: Vec<String> = views(&b.engine)
        .iter()
        .flat_map(|(_, messages)| messages.iter().map(|(m, _)| m.id.to_string()))
        .collect();
    let mut sorted = acked.clone();
    sorted.sort();
    let mut found = on_b.clone();
    found.sort();
    assert_eq!(found, sorted, "every acked id on b, once");

    // Mail afterwards: at B stored by B; at A forwarded to B.
    let at_b = send_sized(b.smtp_addr, &format!("h0@{DOMAIN}"), 100, 100);
    let at_a = send_sized(a.smtp_addr, &format!("h0@{DOMAIN}"), 101, 100);
    let h0 = b
        .engine
        .mailbox(&Address::from_parts("h0", DOMAIN).expect("address"))
        .expect("h0 on b");
    let listed: Vec<String> = b
        .engine
        .list_messages(h0.id, 0, 100)
        .expect("list")
        .iter()
        .map(|m| m.id.to_string())
        .collect();
    assert!(
        listed.contains(&at_b[0]) && listed.contains(&at_a[0]),
        "{listed:?}"
    );
    assert_eq!(
        a.engine.stats().messages,
        before_count(&before),
        "a stores nothing new"
    );

    // A second leave finds nothing homed on A.
    let again = leave_over_socket(&a, Some("b"));
    let uncorreo_api::operator::Answer::Ok { result } = again else {
        panic!("{again:?}");
    };
    assert_eq!(result["partitions"], 0, "{result}");
    a.shutdown();
    b.shutdown();
}

fn before_count(views: &[(MailboxInfo, Vec<(MessageMeta, Bytes)>)]) -> u64 {
    views.iter().map(|(_, m)| m.len() as u64).sum()
}

/// The destination of [`a_delivery_admitted_before_a_move_is_in_the_copy`]:
/// says when partition `watched` has been copied.
struct Watched {
    inner: HopDestination,
    watched: Partition,
    copied: std::sync::Arc<AtomicUsize>,
}

impl Destination for Watched {
    fn node(&self) -> &str {
        self.inner.node()
    }

    async fn copy(&self, partition: Partition) -> Result<u64, String> {
        let copied = self.inner.copy(partition).await;
        if partition == self.watched {
            self.copied.fetch_add(1, Ordering::SeqCst);
        }
        copied
    }

    async fn adopt(&self, partition: Partition) -> Result<(), String> {
        self.inner.adopt(partition).await
    }
}

/// A delivery the owner admitted before a move began is stored before the
/// move copies its partition (the admission is held from the owner's
/// decision to the store), so the acked message is on the new home. Made
/// deterministic with a test hook that stops the delivery right after its
/// admission until the move is seen waiting for it (or, were the guard
/// missing, until the copy was made).
#[test]
fn a_delivery_admitted_before_a_move_is_in_the_copy() {
    let nats = NatsServer::start();
    let secret = secret_file();
    let (data_a, data_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let a = start(data_a.path(), hop_member(&nats, "a", secret.path()));
    let b = start(data_b.path(), hop_member(&nats, "b", secret.path()));
    let mailbox = create(&a.engine, "held");
    let to = format!("held@{DOMAIN}");
    let p = partition_of(&to, PartitionCount::new(PARTITIONS).expect("count"));
    let pause = a.hop_server().expect("hop").pause_next_delivery_for_tests();
    // Sent at B: A admits the forwarded delivery, then stops.
    let smtp_b = b.smtp_addr;
    let sender = std::thread::spawn(move || {
        crate::cluster::send(smtp_b, &format!("held@{DOMAIN}"), "in flight")
    });
    assert!(
        pause.reached(Duration::from_secs(30)),
        "the delivery never reached A"
    );

    let copied = std::sync::Arc::new(AtomicUsize::new(0));
    let destination = Watched {
        inner: hop_destination(&a, &b, "b"),
        watched: p,
        copied: copied.clone(),
    };
    let membership = a.cluster().expect("cluster").clone();
    let leaving = std::thread::spawn(move || membership.leave(&destination).map(|m| m.len()));
    let source = a.cluster_served().expect("cluster");
    // The move waits for the admitted delivery; without the guard it would
    // have copied the partition without it.
    assert!(
        eventually(Duration::from_secs(30), || copied.load(Ordering::SeqCst)
            > 0
            || (source.moving(p) && source.in_flight(p) > 0)),
        "the move neither waited nor copied"
    );
    pause.release();
    let (rcpt, end) = sender.join().expect("sender");
    assert!(rcpt.starts_with("250"), "{rcpt}");
    let end = end.expect("data sent");
    assert!(end.starts_with("250"), "{end}");
    let ids = crate::cluster::stored_ids(&end);
    assert_eq!(
        leaving.join().expect("leave").expect("moved"),
        usize::from(PARTITIONS)
    );
    // The acked message is on the new home, with its id.
    let on_b: Vec<String> = b
        .engine
        .list_messages(mailbox.id, 0, 100)
        .expect("the mailbox moved")
        .iter()
        .map(|m| m.id.to_string())
        .collect();
    assert_eq!(on_b, ids);
    a.shutdown();
    b.shutdown();
}

/// The destination of
/// [`a_leave_whose_destination_goes_down_mid_way_aborts_and_the_source_keeps_serving`]:
/// stops B when the copy of `fail_at` begins.
struct Dying {
    inner: HopDestination,
    fail_at: Partition,
    b: std::sync::Mutex<Option<Appliance>>,
}

impl Destination for Dying {
    fn node(&self) -> &str {
        self.inner.node()
    }

    async fn copy(&self, partition: Partition) -> Result<u64, String> {
        if partition == self.fail_at {
            if let Some(b) = self.b.lock().expect("lock").take() {
                b.shutdown();
            }
        }
        self.inner.copy(partition).await
    }

    async fn adopt(&self, partition: Partition) -> Result<(), String> {
        self.inner.adopt(partition).await
    }
}

/// B stops in the middle of A's leave: the partition being copied is given
/// back to A (abort by compare-and-set), A serves it again with every
/// message, takes mail for it, and the partitions moved before are B's,
/// whole, when B returns.
#[test]
fn a_leave_whose_destination_goes_down_mid_way_aborts_and_the_source_keeps_serving() {
    let nats = NatsServer::start();
    let secret = secret_file();
    let (data_a, data_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let a = start(data_a.path(), hop_member(&nats, "a", secret.path()));
    let b = start(data_b.path(), hop_member(&nats, "b", secret.path()));
    let count = PartitionCount::new(PARTITIONS).expect("count");
    // One mailbox in an early partition (moved) and one in a late one
    // (where B goes down).
    let (early, late) = (Partition(1), Partition(PARTITIONS - 2));
    let early_to = address_in(early);
    let late_to = address_in(late);
    for to in [&early_to, &late_to] {
        let (local, _) = to.split_once('@').expect("address");
        create(&a.engine, local);
        for n in 0..3 {
            send_sized(a.smtp_addr, to, n, 200);
        }
    }
    let before = views(&a.engine);
    let destination = Dying {
        inner: hop_destination(&a, &b, "b"),
        fail_at: late,
        b: std::sync::Mutex::new(Some(b)),
    };
    let failed = a
        .cluster()
        .expect("cluster")
        .leave(&destination)
        .expect_err("b went down");
    assert!(
        matches!(
            failed,
            uncorreo::cluster::LeaveError::Handover(HandoverError::Copy { partition, .. }) if partition == late
        ),
        "{failed:?}"
    );
    // The late partition and those after it are A's, served, as before.
    let homes = homes_of(&nats);
    for index in 0..PARTITIONS {
        let expected = if index < late.0 { "b" } else { "a" };
        assert_eq!(
            homes[usize::from(index)].as_deref(),
            Some(expected),
            "partition {index}"
        );
    }
    let source = a.cluster_served().expect("cluster");
    assert!(!source.moving(late));
    assert!(source.serves(late, Instant::now()));
    assert!(!source.serves(early, Instant::now()));
    let late_address = Address::parse(&late_to).expect("address");
    let late_box = a.engine.mailbox(&late_address).expect("late on a");
    let late_before = before
        .iter()
        .find(|(info, _)| info.id == late_box.id)
        .expect("late before")
        .clone();
    assert_eq!(
        views(&a.engine)
            .into_iter()
            .find(|(info, _)| info.id == late_box.id),
        Some(late_before)
    );
    let ids = send_sized(a.smtp_addr, &late_to, 9, 200);
    assert_eq!(ids.len(), 1);
    assert_eq!(partition_of(&late_to, count), late);

    // B returns with the partitions moved before, whole.
    let b = start(data_b.path(), hop_member(&nats, "b", secret.path()));
    let early_address = Address::parse(&early_to).expect("address");
    let early_box = a.engine.mailbox(&early_address).expect("early on a's disk");
    let early_before = before
        .iter()
        .find(|(info, _)| info.id == early_box.id)
        .expect("early before")
        .clone();
    assert_eq!(
        views(&b.engine)
            .into_iter()
            .find(|(info, _)| info.id == early_box.id),
        Some(early_before)
    );
    assert!(
        b.engine.mailbox(&late_address).is_none(),
        "the aborted partition was not copied"
    );
    a.shutdown();
    b.shutdown();
}

/// The destination's routes obey only a real move: an `adopt` for a
/// partition whose home is not the destination is refused (`409`) and
/// serves nothing there, and a copy into a host that serves the partition
/// is refused (`409`) and writes nothing.
#[test]
fn a_stray_adopt_or_copy_is_refused() {
    use crate::cluster::{hop_request, now, SECRET};
    let nats = NatsServer::start();
    let secret = secret_file();
    let (data_a, data_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let a = start(data_a.path(), hop_member(&nats, "a", secret.path()));
    let b = start(data_b.path(), hop_member(&nats, "b", secret.path()));
    let signer = HopSecret::new(SECRET.as_bytes().to_vec()).expect("secret");
    let signed = |path: &str, body: &[u8]| signer.sign("POST", path, now(), body);

    let adopt = br#"{"node":"b","partition":3}"#;
    let path = "/internal/v1/handover/adopt";
    let hop_b = b.hop_addr().expect("hop");
    assert_eq!(
        hop_request(hop_b, path, Some(&signed(path, adopt)), adopt),
        409
    );
    assert_eq!(served(&b), 0);

    // A chunk of one of A's mailboxes, sent back to A, which serves it.
    let made = create(&a.engine, "stray");
    let p = partition_of(
        &format!("stray@{DOMAIN}"),
        PartitionCount::new(PARTITIONS).expect("count"),
    );
    let chunk = a.engine.export_mailbox(made.id).expect("export");
    let body = uncorreo_hop::wire::frame(
        &uncorreo_hop::wire::CopyHead {
            node: "a".to_owned(),
            partition: p.0,
        },
        &ExportChunk::whole(chunk).encode(),
    );
    let path = "/internal/v1/handover/copy";
    let hop_a = a.hop_addr().expect("hop");
    let before = views(&a.engine);
    assert_eq!(
        hop_request(hop_a, path, Some(&signed(path, &body)), &body),
        409
    );
    assert_eq!(views(&a.engine), before);
    a.shutdown();
    b.shutdown();
}
