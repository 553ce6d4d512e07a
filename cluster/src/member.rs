//! One host's membership: claim partition homes, hold their leases, and
//! publish which partitions this host may serve right now.
//!
//! [`Member::connect`] opens the two buckets; [`Member::run`] loops until
//! shutdown, renewing every third of a lease. What it learns goes into
//! [`Served`], which request paths read without waiting: a partition counts as
//! served until the deadline its last renewal earned, so a stalled loop stops
//! serving on time instead of serving on a stale flag.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

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
///
/// A delivery path asks [`Served::admit`] before it stores mail for a
/// partition and keeps the [`Admitted`] guard until the store is durable.
/// During a clean handover the partition is marked moving
/// ([`Served::moving`]): `admit` refuses (the caller answers `451 4.3.0` /
/// `503`), and the handover waits for every guard already out to drop
/// before it copies the partition, so nothing is stored behind its back.
#[derive(Debug)]
pub struct Served {
    epoch: Instant,
    /// Per partition: nanoseconds after `epoch` until which it is served
    /// (0 = not served).
    until: Vec<AtomicU64>,
    /// Per partition: a handover is moving it away.
    moving: Vec<AtomicBool>,
    /// Per partition: deliveries admitted and not yet durable.
    in_flight: Vec<AtomicU32>,
}

/// Why [`Served::admit`] refused: both are temporary for the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAdmitted {
    /// This host does not serve the partition (now).
    #[error("partition {0} is not served by this host")]
    NotServed(Partition),
    /// The partition is moving to another host.
    #[error("partition {0} is moving to another host")]
    Moving(Partition),
}

/// A delivery admitted for a partition; drop it once the store is durable
/// (or failed).
#[derive(Debug)]
pub struct Admitted<'a> {
    slot: &'a AtomicU32,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.slot.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Served {
    pub(crate) fn new(partitions: PartitionCount) -> Served {
        let n = usize::from(partitions.get());
        Served {
            epoch: Instant::now(),
            until: (0..n).map(|_| AtomicU64::new(0)).collect(),
            moving: (0..n).map(|_| AtomicBool::new(false)).collect(),
            in_flight: (0..n).map(|_| AtomicU32::new(0)).collect(),
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

    /// Whether this host may serve `partition` at `now`: it holds the
    /// lease, and no handover is moving the partition away (during a move,
    /// deliveries for it get a temporary failure wherever they arrive).
    pub fn serves(&self, partition: Partition, now: Instant) -> bool {
        !self.moving(partition) && self.leased(partition, now)
    }

    /// Whether this host holds `partition`'s lease at `now`.
    fn leased(&self, partition: Partition, now: Instant) -> bool {
        let now =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        self.until
            .get(usize::from(partition.0))
            .is_some_and(|slot| now < slot.load(Ordering::Acquire))
    }

    /// Whether a handover is moving `partition` away from this host.
    pub fn moving(&self, partition: Partition) -> bool {
        self.moving
            .get(usize::from(partition.0))
            .is_some_and(|flag| flag.load(Ordering::SeqCst))
    }

    /// Admits one delivery for `partition` at `now`, or says why not.
    pub fn admit(&self, partition: Partition, now: Instant) -> Result<Admitted<'_>, NotAdmitted> {
        let Some(slot) = self.in_flight.get(usize::from(partition.0)) else {
            return Err(NotAdmitted::NotServed(partition));
        };
        // Counted before the flag is read: a handover that sets the flag
        // and then sees no delivery in flight knows none is admitted after.
        slot.fetch_add(1, Ordering::SeqCst);
        let admitted = Admitted { slot };
        if self.moving(partition) {
            return Err(NotAdmitted::Moving(partition));
        }
        if !self.serves(partition, now) {
            return Err(NotAdmitted::NotServed(partition));
        }
        Ok(admitted)
    }

    /// Marks `partition` moving (or not any more).
    pub(crate) fn set_moving(&self, partition: Partition, moving: bool) {
        if let Some(flag) = self.moving.get(usize::from(partition.0)) {
            flag.store(moving, Ordering::SeqCst);
        }
    }

    /// Deliveries admitted for `partition` and not yet finished.
    pub fn in_flight(&self, partition: Partition) -> u32 {
        self.in_flight
            .get(usize::from(partition.0))
            .map_or(0, |slot| slot.load(Ordering::SeqCst))
    }

    /// How many partitions this host may serve at `now`.
    pub fn count(&self, now: Instant) -> usize {
        (0..self.until.len())
            .filter(|&index| self.serves(Partition(index as u16), now))
            .count()
    }
}

/// Changes to a running member, from a handover.
#[derive(Debug)]
enum Command {
    /// Stop serving a partition that moved away, and forget its lease.
    Release(Partition, oneshot::Sender<()>),
    /// Serve a partition that moved here: its lease is taken as soon as
    /// the old holder's lapses.
    Adopt(Partition, oneshot::Sender<()>),
}

/// A handle on a running member (cloneable).
#[derive(Debug, Clone)]
pub struct MemberHandle {
    commands: mpsc::UnboundedSender<Command>,
    node: String,
    served: Arc<Served>,
}

/// The member has stopped.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the cluster member has stopped")]
pub struct MemberGone;

impl MemberHandle {
    /// This host's node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// What this host serves.
    pub fn served(&self) -> &Arc<Served> {
        &self.served
    }

    /// Stops serving `partition` (its home moved away).
    pub async fn release(&self, partition: Partition) -> Result<(), MemberGone> {
        self.ask(|done| Command::Release(partition, done)).await
    }

    /// Serves `partition` from now on (its home moved here).
    pub async fn adopt(&self, partition: Partition) -> Result<(), MemberGone> {
        self.ask(|done| Command::Adopt(partition, done)).await
    }

    async fn ask(
        &self,
        command: impl FnOnce(oneshot::Sender<()>) -> Command,
    ) -> Result<(), MemberGone> {
        let (done, answered) = oneshot::channel();
        self.commands.send(command(done)).map_err(|_| MemberGone)?;
        answered.await.map_err(|_| MemberGone)
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
    commands: mpsc::UnboundedReceiver<Command>,
    handle: MemberHandle,
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
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let handle = MemberHandle {
            commands: commands_tx,
            node: config.node_id.clone(),
            served: served.clone(),
        };
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
            commands,
            handle,
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

    /// A handle for handovers.
    pub fn handle(&self) -> MemberHandle {
        self.handle.clone()
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
            match home {
                Some(home) if home.node == self.config.node_id => {
                    if let Some(to) = home.moving_to {
                        // This host stopped during a handover: the partition
                        // never flipped, so its log here is still the home.
                        // The move is aborted; the destination never served
                        // its copy, and the next move makes it equal again.
                        self.homes
                            .abort_move(partition, &self.config.node_id, &to)
                            .await?;
                    }
                    mine.push(partition);
                }
                _ => {}
            }
        }
        self.mine = mine;
        Ok(())
    }

    /// Takes or renews the lease of every partition homed here, and
    /// publishes the deadline each earned.
    async fn hold_leases(&mut self) {
        self.renew_leases().await;
        let served = self.served.count(Instant::now());
        metrics::gauge!(uncorreo_metric_names::CLUSTER_PARTITIONS_SERVED).set(served as f64);
    }

    async fn renew_leases(&mut self) {
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

    async fn obey(&mut self, command: Command) {
        match command {
            Command::Release(partition, done) => {
                self.mine.retain(|&p| p != partition);
                self.leases.drop_lease(partition);
                self.served.set(partition, None);
                self.served.set_moving(partition, false);
                let _ = done.send(());
            }
            Command::Adopt(partition, done) => {
                if !self.mine.contains(&partition) {
                    self.mine.push(partition);
                }
                let _ = done.send(());
                // Tries the lease now; until the old holder's lapses, every
                // renewal round tries again.
                self.hold_leases().await;
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
                Some(command) = self.commands.recv() => self.obey(command).await,
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
