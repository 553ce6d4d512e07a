//! One host's membership: claim partition homes, hold their leases, and
//! publish which partitions this host may serve right now.
//!
//! [`Member::connect`] opens the two buckets; [`Member::run`] loops until
//! shutdown, renewing every third of a lease. What it learns goes into
//! [`Served`], which request paths read without waiting: a partition counts as
//! served until the deadline its last renewal earned, so a stalled loop stops
//! serving on time instead of serving on a stale flag.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::assign::{AssignError, Assignments};
use crate::directory::Directory;
use crate::lease::{LeaseError, LeaseTerms, Leases};
use crate::nats::{NatsBucket, OpenError};
use crate::partition::{Partition, PartitionCount};

/// What a member needs to know.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// The NATS server (`nats://host:port`).
    pub nats_url: String,
    /// This host's stable id.
    pub node_id: String,
    /// The cluster's partition count.
    pub partitions: PartitionCount,
    /// Lease length and margin.
    pub terms: LeaseTerms,
    /// Claim every partition nobody has claimed yet, at start (bootstrap).
    pub claim_free: bool,
    /// Where other hosts reach this host's internal hop (`ip:port`),
    /// published under `node.<id>`; `None`: this host forwards nothing.
    pub advertise: Option<String>,
}

/// Bucket names in NATS.
const HOMES_BUCKET: &str = "uncorreo_homes";
const LEASES_BUCKET: &str = "uncorreo_leases";

/// Which partitions this host may serve now; shared with request paths.
#[derive(Debug)]
pub struct Served {
    epoch: Instant,
    /// Per partition: nanoseconds after `epoch` until which it is served
    /// (0 = not served).
    until: Vec<AtomicU64>,
}

impl Served {
    fn new(partitions: PartitionCount) -> Served {
        Served {
            epoch: Instant::now(),
            until: (0..partitions.get()).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn set(&self, partition: Partition, until: Option<Instant>) {
        let nanos = until.map_or(0, |until| {
            u64::try_from(until.saturating_duration_since(self.epoch).as_nanos())
                .unwrap_or(u64::MAX)
        });
        if let Some(slot) = self.until.get(usize::from(partition.0)) {
            slot.store(nanos, Ordering::Release);
        }
    }

    /// Whether this host may serve `partition` at `now`.
    pub fn serves(&self, partition: Partition, now: Instant) -> bool {
        let now =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        self.until
            .get(usize::from(partition.0))
            .is_some_and(|slot| now < slot.load(Ordering::Acquire))
    }

    /// How many partitions this host may serve at `now`.
    pub fn count(&self, now: Instant) -> usize {
        (0..self.until.len())
            .filter(|&index| self.serves(Partition(index as u16), now))
            .count()
    }
}

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// A bucket could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Claiming or reading homes failed.
    #[error("reading partition homes: {0}")]
    Homes(#[from] AssignError),
    /// This host's hop address could not be published.
    #[error("publishing this host's hop address: {0}")]
    Publish(#[from] crate::store::CasError),
}

/// One host in the cluster.
#[derive(Debug)]
pub struct Member {
    config: MemberConfig,
    homes: Assignments<NatsBucket>,
    leases: Leases<NatsBucket>,
    mine: Vec<Partition>,
    served: Arc<Served>,
    directory: Arc<Directory>,
}

impl Member {
    /// Opens the buckets, claims free partitions if configured, reads which
    /// partitions are homed here and takes their leases once.
    pub async fn connect(config: MemberConfig) -> Result<Member, JoinError> {
        let timeout = config.terms.renew_every();
        let homes_bucket = NatsBucket::open(&config.nats_url, HOMES_BUCKET, None, timeout).await?;
        let homes = Assignments::new(homes_bucket.clone());
        let leases = NatsBucket::open(
            &config.nats_url,
            LEASES_BUCKET,
            Some(config.terms.length()),
            timeout,
        )
        .await?;
        let served = Arc::new(Served::new(config.partitions));
        let directory = Arc::new(Directory::new(leases.clone(), homes_bucket));
        if let Some(hop) = &config.advertise {
            directory.publish(&config.node_id, hop).await?;
        }
        let mut member = Member {
            directory,
            leases: Leases::new(leases, config.node_id.clone(), config.terms),
            homes,
            mine: Vec::new(),
            served,
            config,
        };
        member.read_homes().await?;
        member.hold_leases().await;
        Ok(member)
    }

    /// The shared view of what this host serves.
    pub fn served(&self) -> Arc<Served> {
        self.served.clone()
    }

    /// Who serves the partitions this host does not.
    pub fn directory(&self) -> Arc<Directory> {
        self.directory.clone()
    }

    /// The partitions homed on this host, as last read.
    pub fn homes(&self) -> &[Partition] {
        &self.mine
    }

    async fn read_homes(&mut self) -> Result<(), AssignError> {
        let mut mine = Vec::new();
        for index in 0..self.config.partitions.get() {
            let partition = Partition(index);
            // A refused claim already says whose the partition is: no
            // second read of each partition at start.
            let home = if self.config.claim_free {
                match self.homes.claim(partition, &self.config.node_id).await {
                    Ok(()) => {
                        mine.push(partition);
                        continue;
                    }
                    Err(AssignError::Unexpected { found, .. }) => found,
                    Err(error) => return Err(error),
                }
            } else {
                self.homes.home(partition).await?.map(|(home, _)| home)
            };
            if home.is_some_and(|home| home.node == self.config.node_id && home.moving_to.is_none())
            {
                mine.push(partition);
            }
        }
        self.mine = mine;
        Ok(())
    }

    /// Takes or renews the lease of every partition homed here, and
    /// publishes the deadline each earned.
    async fn hold_leases(&mut self) {
        for index in 0..self.mine.len() {
            let partition = self.mine[index];
            let sent = Instant::now();
            let result = match self.leases.renew(partition, sent).await {
                Err(LeaseError::NotHeld(_)) => self.leases.take(partition, sent).await,
                other => other,
            };
            match result {
                Ok(()) => self
                    .served
                    .set(partition, Some(self.config.terms.serves_until(sent))),
                // Keep the deadline the last success earned; it runs out on its own.
                Err(LeaseError::Unavailable(_)) => {}
                Err(LeaseError::HeldElsewhere(_) | LeaseError::NotHeld(_)) => {
                    self.served.set(partition, None)
                }
            }
        }
    }

    /// Renews leases every third of their length until `shutdown` resolves;
    /// then stops serving at once.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let period = self.config.terms.renew_every();
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(period) => self.hold_leases().await,
            }
        }
        for &partition in &self.mine {
            self.served.set(partition, None);
        }
        metrics::gauge!(uncorreo_metric_names::CLUSTER_PARTITIONS_SERVED).set(0.0);
    }
}

/// Lease terms from whole seconds, with the margin at a fifth of the length.
pub fn terms_from_seconds(lease_seconds: u64) -> Result<LeaseTerms, crate::lease::TermsError> {
    let length = Duration::from_secs(lease_seconds);
    LeaseTerms::new(length, length / 5)
}
