//! `[cluster]` membership (SCALE.md) through the real appliance and a real
//! `nats-server`: hosts claim partition homes, hold their leases, and keep
//! them across a restart. Mail is not forwarded between hosts yet; these run
//! two appliances in one process on loopback (the network-namespace suite
//! comes with forwarding).

use std::time::{Duration, Instant};

use uncorreo::config::ClusterConfig;
use uncorreo::{Appliance, StartError};
use uncorreo_cluster::testing::NatsServer;

use crate::support::test_config;

const PARTITIONS: u16 = 16;

fn member(nats: &NatsServer, node: &str) -> ClusterConfig {
    ClusterConfig {
        nats_url: nats.url().to_owned(),
        node_id: node.to_owned(),
        partitions: PARTITIONS,
        lease_seconds: 3,
        claim_free: true,
    }
}

fn start(data: &std::path::Path, cluster: ClusterConfig) -> Result<Appliance, StartError> {
    let mut config = test_config(data);
    config.cluster = Some(cluster);
    Appliance::start(config)
}

fn served(appliance: &Appliance) -> usize {
    appliance
        .cluster_served()
        .map_or(0, |served| served.count(Instant::now()))
}

/// Polls `condition` every 50 ms for up to `limit`.
fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}

#[test]
fn the_first_host_claims_the_free_partitions_and_keeps_them_across_a_restart() {
    let nats = NatsServer::start();
    let (data_a, data_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let a = start(data_a.path(), member(&nats, "a")).expect("a joins");
    assert_eq!(
        served(&a),
        usize::from(PARTITIONS),
        "a claimed and leased every free partition"
    );
    let b = start(data_b.path(), member(&nats, "b")).expect("b joins");
    assert_eq!(served(&b), 0, "nothing was left for b to claim");

    a.shutdown();
    // Homes are sticky: a's partitions stay a's while it is down, so b
    // never serves mail whose log is on a's disk.
    let homes = homes_of(&nats);
    assert!(
        homes.iter().all(|home| home.as_deref() == Some("a")),
        "{homes:?}"
    );
    assert_eq!(served(&b), 0);

    // a comes back (same node id) and, once its old leases lapse in NATS,
    // serves every partition again.
    let a = start(data_a.path(), member(&nats, "a")).expect("a rejoins");
    assert!(
        eventually(Duration::from_secs(30), || served(&a)
            == usize::from(PARTITIONS)),
        "a serves {} of {PARTITIONS}",
        served(&a)
    );
    assert_eq!(served(&b), 0);
    a.shutdown();
    b.shutdown();
}

#[test]
fn a_host_that_cannot_reach_nats_does_not_start_and_says_why() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let data = tempfile::tempdir().expect("tempdir");
    let config = ClusterConfig {
        nats_url: format!("nats://127.0.0.1:{port}"),
        node_id: "a".to_owned(),
        partitions: PARTITIONS,
        lease_seconds: 3,
        claim_free: true,
    };
    match start(data.path(), config) {
        Err(error @ StartError::Cluster(_)) => {
            let message = error.to_string();
            assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("started without NATS"),
    }
}

/// The home of each partition, read straight from the bucket.
fn homes_of(nats: &NatsServer) -> Vec<Option<String>> {
    use uncorreo_cluster::assign::Assignments;
    use uncorreo_cluster::nats::NatsBucket;
    use uncorreo_cluster::partition::Partition;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let bucket = NatsBucket::open(nats.url(), "uncorreo_homes", None, Duration::from_secs(2))
            .await
            .expect("bucket");
        let homes = Assignments::new(bucket);
        let mut found = Vec::new();
        for index in 0..PARTITIONS {
            found.push(
                homes
                    .home(Partition(index))
                    .await
                    .expect("home")
                    .map(|(home, _)| home.node),
            );
        }
        found
    })
}
