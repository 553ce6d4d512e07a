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
use uncorreo_cluster::handover::Destination;
use uncorreo_cluster::member::NotAdmitted;
use uncorreo_cluster::nats::NatsBucket;
use uncorreo_cluster::partition::{partition_of, Partition, PartitionCount};
use uncorreo_cluster::testing::NatsServer;
use uncorreo_engine::*;

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
