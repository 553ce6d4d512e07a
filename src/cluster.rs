//! Starting this host's cluster membership (`[cluster]`, SCALE.md) on its
//! own thread, so a slow NATS never holds up a core; and the clean handover
//! of this host's partitions to another host.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uncorreo_cluster::assign::{AssignError, Assignments};
use uncorreo_cluster::handover::{self, Destination, HandoverError, Moved};
use uncorreo_cluster::member::{Member, MemberConfig, MemberHandle, Served};
use uncorreo_cluster::nats::{NatsBucket, OpenError};
use uncorreo_cluster::partition::{partition_of, Partition, PartitionCount};
use uncorreo_engine::{Engine, ImportError, MailboxIdPrefix};

use crate::StartError;

/// This host's place in the cluster, once joined.
#[derive(Debug, Clone)]
pub struct Joined {
    /// What this host serves now.
    pub served: Arc<Served>,
    /// The running member, for handovers.
    pub member: MemberHandle,
    config: MemberConfig,
}

/// Mailbox ids carry their partition (SCALE.md, FORMAT.md), so a mailbox
/// keeps its id when its partition moves to another host.
pub fn mailbox_id_prefix(partitions: PartitionCount) -> MailboxIdPrefix {
    MailboxIdPrefix::new(move |address| partition_of(&address.to_string(), partitions).0)
}

/// Joins the cluster: connects, claims and takes leases before returning,
/// so a host that cannot reach NATS fails its start with the reason. The
/// thread then renews leases until `shutdown`.
pub fn start(
    config: MemberConfig,
    shutdown: CancellationToken,
) -> Result<(JoinHandle<()>, Joined), StartError> {
    let (joined_tx, joined_rx) = std::sync::mpsc::channel();
    let member_config = config.clone();
    let thread = std::thread::Builder::new()
        .name("cluster".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = joined_tx.send(Err(StartError::Io {
                        what: "starting the cluster runtime",
                        source: error,
                    }));
                    return;
                }
            };
            runtime.block_on(async move {
                let member = match Member::connect(config).await {
                    Ok(member) => member,
                    Err(error) => {
                        let _ = joined_tx.send(Err(StartError::Cluster(error)));
                        return;
                    }
                };
                if joined_tx
                    .send(Ok((member.served(), member.handle())))
                    .is_err()
                {
                    return;
                }
                member.run(shutdown.cancelled_owned()).await;
            });
        })
        .map_err(|source| StartError::Io {
            what: "spawning the cluster thread",
            source,
        })?;
    match joined_rx.recv() {
        Ok(Ok((served, member))) => Ok((
            thread,
            Joined {
                served,
                member,
                config: member_config,
            },
        )),
        Ok(Err(error)) => {
            let _ = thread.join();
            Err(error)
        }
        Err(_) => {
            let _ = thread.join();
            Err(StartError::Io {
                what: "joining the cluster",
                source: std::io::Error::other("the cluster thread exited during start"),
            })
        }
    }
}

/// Why a leave did not move every partition.
#[derive(Debug, thiserror::Error)]
pub enum LeaveError {
    /// The homes bucket could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Reading the homes failed.
    #[error(transparent)]
    Homes(#[from] AssignError),
    /// One partition did not move (those before it did).
    #[error(transparent)]
    Handover(#[from] HandoverError),
    /// No runtime for the handover.
    #[error("starting a runtime for the handover: {0}")]
    Runtime(std::io::Error),
}

impl Joined {
    /// Hands every partition homed here over to `destination`, one at a
    /// time (SCALE.md, "A leaves cleanly"). Blocks; run it off the cores.
    pub fn leave<D: Destination>(&self, destination: &D) -> Result<Vec<Moved>, LeaveError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(LeaveError::Runtime)?
            .block_on(self.leave_async(destination))
    }

    async fn leave_async<D: Destination>(&self, destination: &D) -> Result<Vec<Moved>, LeaveError> {
        let timeout = self.config.terms.renew_every();
        let homes = Assignments::new(
            NatsBucket::open(&self.config.nats_url, "uncorreo_homes", None, timeout).await?,
        );
        let mut moved = Vec::new();
        for index in 0..self.config.partitions.get() {
            let partition = Partition(index);
            let home = homes.home(partition).await?;
            if home.is_some_and(|(home, _)| home.node == self.config.node_id) {
                moved
                    .push(handover::hand_over(&homes, &self.member, partition, destination).await?);
            }
        }
        Ok(moved)
    }
}

/// A destination in the same process: the records go from one engine to
/// the other directly. The hop between hosts (SCALE.md) carries the same
/// two calls over the network; until it exists, this is what tests and a
/// single-process pair use.
#[derive(Clone)]
pub struct LocalDestination {
    /// The source's engine.
    pub from: Engine,
    /// The destination's engine.
    pub to: Engine,
    /// The destination's member.
    pub member: MemberHandle,
    /// The cluster's partition count.
    pub partitions: PartitionCount,
}

impl std::fmt::Debug for LocalDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDestination")
            .field("to", &self.member.node())
            .finish()
    }
}

/// How often an import refused as `Busy` or `Saturated` is tried again, and
/// how long apart: both clear once the destination's writer commits.
const IMPORT_TRIES: u32 = 50;
const IMPORT_RETRY_AFTER: Duration = Duration::from_millis(20);

impl Destination for LocalDestination {
    fn node(&self) -> &str {
        self.member.node()
    }

    async fn copy(&self, partition: Partition) -> Result<u64, String> {
        let partitions = self.partitions;
        let ids = self
            .from
            .mailboxes_where(|address| partition_of(&address.to_string(), partitions) == partition);
        let mut copied = 0;
        for id in ids {
            let export = match self.from.export_mailbox(id) {
                Ok(export) => export,
                // Expired or deleted since it was listed: nothing to move.
                Err(uncorreo_engine::LookupError::NotFound) => continue,
                Err(error) => return Err(error.to_string()),
            };
            import(&self.to, export).await.map_err(|e| e.to_string())?;
            copied += 1;
        }
        Ok(copied)
    }

    async fn adopt(&self, partition: Partition) -> Result<(), String> {
        self.member
            .adopt(partition)
            .await
            .map_err(|e| e.to_string())
    }
}

async fn import(
    engine: &Engine,
    export: uncorreo_engine::MailboxExport,
) -> Result<uncorreo_engine::ImportReport, ImportError> {
    let mut tries = 0;
    loop {
        match engine.import_mailbox(export.clone()).await {
            Err(ImportError::Busy | ImportError::Saturated) if tries < IMPORT_TRIES => {
                tries += 1;
                tokio::time::sleep(IMPORT_RETRY_AFTER).await;
            }
            other => return other,
        }
    }
}
