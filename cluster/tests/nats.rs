//! The leases against a real NATS server (Debian's `nats-server`, installed
//! by `.ci/deps`), one throwaway server with JetStream per test.

use std::time::{Duration, Instant};

use uncorreo_cluster::assign::{AssignError, Assignment, Assignments};
use uncorreo_cluster::lease::{LeaseError, LeaseTerms, Leases};
use uncorreo_cluster::nats::NatsBucket;
use uncorreo_cluster::partition::Partition;
use uncorreo_cluster::testing::NatsServer;

struct Cluster {
    server: NatsServer,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster {
            server: NatsServer::start(),
        }
    }

    async fn leases(&self, node: &str, terms: LeaseTerms) -> Leases<NatsBucket> {
        let store = NatsBucket::open(
            self.server.url(),
            "uncorreo_test_leases",
            Some(terms.length()),
            Duration::from_secs(2),
        )
        .await
        .unwrap_or_else(|error| panic!("{error}"));
        Leases::new(store, node, terms)
    }
}

fn terms(length_ms: u64, margin_ms: u64) -> LeaseTerms {
    LeaseTerms::new(
        Duration::from_millis(length_ms),
        Duration::from_millis(margin_ms),
    )
    .unwrap_or_else(|error| panic!("{error}"))
}

/// SCALE.md "two hosts race for one partition": exactly one create wins.
#[tokio::test]
async fn lease_is_exclusive() {
    let server = Cluster::start();
    let p = Partition(42);
    let mut hosts = Vec::new();
    for n in 0..8 {
        hosts.push(
            server
                .leases(&format!("host{n}"), terms(30_000, 1_000))
                .await,
        );
    }
    let races = hosts.into_iter().map(|mut host| {
        tokio::spawn(async move {
            let result = host.take(p, Instant::now()).await;
            (host, result)
        })
    });
    let mut winners = Vec::new();
    for race in races {
        let (host, result) = race.await.unwrap_or_else(|error| panic!("{error}"));
        match result {
            Ok(()) => winners.push(host),
            Err(LeaseError::HeldElsewhere(partition)) => assert_eq!(partition, p),
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one host takes the lease");
    let mut winner = winners.remove(0);
    assert!(winner.serves(p, Instant::now()));
    assert!(winner.renew(p, Instant::now()).await.is_ok());
    let holder = winner
        .holder(p)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(holder.is_some_and(|node| node.starts_with("host")));
}

/// A lease nobody renews disappears after its length, and then another host
/// takes it; the old holder's renewal is refused.
#[tokio::test]
async fn a_lapsed_lease_goes_to_the_next_host_and_the_old_holder_learns_it() {
    let server = Cluster::start();
    let p = Partition(9);
    let lease = terms(1_000, 100);
    let mut a = server.leases("a", lease).await;
    let mut b = server.leases("b", lease).await;
    assert!(a.take(p, Instant::now()).await.is_ok());
    assert!(matches!(
        b.take(p, Instant::now()).await,
        Err(LeaseError::HeldElsewhere(_))
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match b.take(p, Instant::now()).await {
            Ok(()) => break,
            Err(LeaseError::HeldElsewhere(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(other) => panic!("b never took the lapsed lease: {other}"),
        }
    }
    assert!(
        !a.serves(p, Instant::now()),
        "a stopped before the store let b in"
    );
    assert!(matches!(
        a.renew(p, Instant::now()).await,
        Err(LeaseError::HeldElsewhere(_))
    ));
    assert_eq!(
        b.holder(p)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
            .as_deref(),
        Some("b")
    );
}

/// SCALE.md "NATS unreachable": renewals fail and the holder stops serving
/// when its own clock says the lease may be gone.
#[tokio::test]
async fn nats_down_stops_serving_after_lease() {
    let mut server = Cluster::start();
    let p = Partition(1);
    let lease = terms(3_000, 500);
    let mut a = server.leases("a", lease).await;
    let taken_at = Instant::now();
    assert!(a.take(p, taken_at).await.is_ok());
    server.server.kill();
    let renewal = a.renew(p, Instant::now()).await;
    assert!(
        matches!(renewal, Err(LeaseError::Unavailable(_))),
        "{renewal:?}"
    );
    // It keeps serving on what it knows, and no longer than that.
    assert!(a.serves(p, taken_at + Duration::from_millis(2_500)));
    assert!(!a.serves(p, taken_at + Duration::from_millis(2_501)));
}

/// Homes over a real bucket: claimed once among racers, moved by
/// compare-and-set, and kept after every connection is gone (no max_age).
#[tokio::test]
async fn homes_are_claimed_once_and_moved_by_compare_and_set() {
    let server = Cluster::start();
    let p = Partition(17);
    let open = || async {
        let bucket = NatsBucket::open(
            server.server.url(),
            "uncorreo_test_homes",
            None,
            Duration::from_secs(2),
        )
        .await
        .unwrap_or_else(|error| panic!("{error}"));
        Assignments::new(bucket)
    };
    let (a, b) = (open().await, open().await);
    let (claim_a, claim_b) = tokio::join!(a.claim(p, "a"), b.claim(p, "b"));
    assert!(
        claim_a.is_ok() != claim_b.is_ok(),
        "exactly one claim wins: {claim_a:?} {claim_b:?}"
    );
    let home = if claim_a.is_ok() { "a" } else { "b" };
    let other = if home == "a" { "b" } else { "a" };
    assert!(matches!(
        b.begin_move(p, other, home).await,
        Err(AssignError::Unexpected { .. })
    ));
    assert!(a.begin_move(p, home, other).await.is_ok());
    assert!(b.finish_move(p, home, other).await.is_ok());
    drop((a, b));
    let later = open().await;
    let found = later
        .home(p)
        .await
        .unwrap_or_else(|error| panic!("{error}"))
        .map(|(assignment, _)| assignment);
    assert_eq!(
        found,
        Some(Assignment {
            node: other.to_owned(),
            moving_to: None
        })
    );
}

/// Two hosts drawing the same campaign id: the record's `create` keeps the
/// first, the second is told to draw again, and both replicas name the
/// first host as the home until the record is removed (SCALE.md,
/// "Campaigns").
#[tokio::test]
async fn a_campaign_id_is_claimed_once_and_every_replica_sees_its_home() {
    use uncorreo_cluster::accounts::{AccountsReplica, CampaignHome};
    let cluster = Cluster::start();
    let connect = || async {
        let (replica, follower) =
            AccountsReplica::connect(cluster.server.url(), Duration::from_secs(2))
                .await
                .unwrap_or_else(|error| panic!("{error}"));
        let following = std::sync::Arc::clone(&replica);
        tokio::spawn(async move { following.follow(follower).await });
        replica
    };
    let (a, b) = (connect().await, connect().await);
    let home = |node: &str| CampaignHome {
        node: node.to_owned(),
        expires_at_ms: 2_000,
    };
    assert!(a.claim_campaign(0xc0ffee, &home("a")).await.expect("claim"));
    assert!(!b.claim_campaign(0xc0ffee, &home("b")).await.expect("claim"));
    b.catch_up().await.expect("catch up");
    for replica in [&a, &b] {
        assert_eq!(replica.campaign_home(0xc0ffee, 1_000).as_deref(), Some("a"));
        // Ended: it names nobody, and its home may remove it.
        assert_eq!(replica.campaign_home(0xc0ffee, 2_000), None);
    }
    assert_eq!(a.ended_campaigns_on("a", 2_000, 4), vec![0xc0ffee]);
    assert!(a.ended_campaigns_on("b", 2_000, 4).is_empty());
    a.forget_campaign(0xc0ffee).await.expect("forget");
    b.catch_up().await.expect("catch up");
    assert_eq!(b.campaign_home(0xc0ffee, 1_000), None);
    // A removed id can be drawn again.
    assert!(b.claim_campaign(0xc0ffee, &home("b")).await.expect("claim"));
    assert_eq!(b.campaign_home(0xc0ffee, 1_000).as_deref(), Some("b"));
}
