//! Starting this host's cluster membership (`[cluster]`, SCALE.md) on its
//! own thread, so a slow NATS never holds up a core, and the internal hop
//! listener on another; and the clean handover of this host's partitions to
//! another host (`uncorreo admin cluster leave`: over the hop, through
//! `uncorreo_hop::handover::HopDestination`), with the destination's side
//! of `adopt` ([`HomeAdopter`]).
//!
//! A stop (SIGTERM) never hands anything over: homes are sticky (SCALE.md),
//! so a restart finds its partitions where it left them, and a move happens
//! only when an operator asks for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uncorreo_cluster::assign::{AssignError, Assignments};
use uncorreo_cluster::directory::Directory;
use uncorreo_cluster::events::{Events, EventsConfig};
use uncorreo_cluster::handover::{self, Destination, HandoverError, Moved};
use uncorreo_cluster::hop::HopSecret;
use uncorreo_cluster::member::{Member, MemberConfig, MemberHandle, Served};
use uncorreo_cluster::nats::{NatsBucket, OpenError};
use uncorreo_cluster::partition::{partition_of, Partition, PartitionCount};
use uncorreo_engine::{Engine, ImportError, MailboxIdPrefix};
use uncorreo_hop::handover::{HopDestination, ProbeError};
use uncorreo_hop::server::{HopLimits, HopServer, ENVELOPE_ROOM};

use crate::config::ClusterConfig;
use crate::StartError;

/// A joined member: its thread, what it serves, who serves the rest.
pub struct Joined {
    pub thread: JoinHandle<()>,
    pub served: Arc<Served>,
    pub directory: Arc<Directory>,
    pub membership: Membership,
}

/// This host's place in the cluster, for handovers.
#[derive(Debug, Clone)]
pub struct Membership {
    /// The running member.
    pub member: MemberHandle,
    config: MemberConfig,
    directory: Arc<Directory>,
}

/// Mailbox ids carry their partition (SCALE.md, FORMAT.md), so a mailbox
/// keeps its id when its partition moves to another host.
pub fn mailbox_id_prefix(partitions: PartitionCount) -> MailboxIdPrefix {
    MailboxIdPrefix::new(move |address| partition_of(&address.to_string(), partitions).0)
}

/// Runs `work` on a thread of its own named `name`, with a current-thread
/// runtime, and waits until it reports its start on the sender it is given
/// (`Ok` once connected, `Err` with why not); `work` then runs until it
/// returns. The cluster's NATS clients live on these threads, apart from the
/// core threads, and a host that cannot connect fails its start with the
/// reason.
pub(crate) fn start_thread<T, F, Fut>(
    name: &'static str,
    work: F,
) -> Result<(T, JoinHandle<()>), StartError>
where
    T: Send + 'static,
    F: FnOnce(std::sync::mpsc::Sender<Result<T, StartError>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(work(ready_tx)),
                Err(source) => {
                    let _ = ready_tx.send(Err(StartError::Io {
                        what: "starting a cluster thread's runtime",
                        source,
                    }));
                }
            }
        })
        .map_err(|source| StartError::Io {
            what: "spawning a cluster thread",
            source,
        })?;
    match ready_rx.recv() {
        Ok(Ok(value)) => Ok((value, thread)),
        Ok(Err(error)) => {
            let _ = thread.join();
            Err(error)
        }
        Err(_) => {
            let _ = thread.join();
            Err(StartError::Io {
                what: "starting a cluster thread",
                source: std::io::Error::other(format!("the {name} thread exited during start")),
            })
        }
    }
}

/// Joins the cluster: connects, claims and takes leases before returning,
/// so a host that cannot reach NATS fails its start with the reason. The
/// thread then renews leases until `shutdown`.
pub fn start(config: MemberConfig, shutdown: CancellationToken) -> Result<Joined, StartError> {
    let member_config = config.clone();
    let ((served, directory, member), thread) = start_thread("cluster", |joined| async move {
        let member = match Member::connect(config).await {
            Ok(member) => member,
            Err(error) => {
                let _ = joined.send(Err(StartError::Cluster(error)));
                return;
            }
        };
        if joined
            .send(Ok((member.served(), member.directory(), member.handle())))
            .is_err()
        {
            return;
        }
        member.run(shutdown.cancelled_owned()).await;
    })?;
    Ok(Joined {
        thread,
        served,
        directory: Arc::clone(&directory),
        membership: Membership {
            member,
            config: member_config,
            directory,
        },
    })
}

/// Notices queued for NATS before the owner drops them (counted): at a
/// few dozen bytes each, a burst of this many costs well under a MiB.
const EVENT_QUEUE: usize = 16_384;

/// The bounds of events across hosts: remote waiters count like local
/// ones (`[realtime]`).
pub fn events_config(
    realtime: &uncorreo_api::realtime::RealtimeConfig,
    timeout: Duration,
) -> EventsConfig {
    EventsConfig {
        publish_queue: EVENT_QUEUE,
        max_watchers: realtime.max_subscribers,
        max_watchers_per_mailbox: realtime.max_subscribers_per_mailbox,
        subscribe_timeout: timeout,
    }
}

/// Connects to NATS for events (SCALE.md, "Real time") on a thread of its
/// own, which publishes this owner's notices and runs the subscriptions
/// of this host's remote waiters until `shutdown`.
pub fn start_events(
    url: &str,
    partitions: PartitionCount,
    config: EventsConfig,
    shutdown: CancellationToken,
) -> Result<(Arc<Events>, JoinHandle<()>), StartError> {
    let url = url.to_owned();
    start_thread("events", move |ready| async move {
        let (events, publisher) = match Events::connect(&url, partitions, config).await {
            Ok(connected) => connected,
            Err(error) => {
                let _ = ready.send(Err(StartError::Events(error)));
                return;
            }
        };
        if ready.send(Ok(events)).is_err() {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = publisher.run() => {}
        }
    })
}

/// Reads the cluster secret.
pub fn read_secret(config: &ClusterConfig) -> Result<HopSecret, StartError> {
    let Some(path) = &config.secret_file else {
        return Err(StartError::Config(
            "[cluster] listen needs secret_file".to_owned(),
        ));
    };
    let bytes = std::fs::read(path).map_err(|source| StartError::Io {
        what: "reading [cluster] secret_file",
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    HopSecret::new(text.trim().as_bytes().to_vec())
        .map_err(|error| StartError::Config(format!("[cluster] secret_file: {error}")))
}

/// Binds the hop listener; returns it with the address to advertise.
pub fn bind(
    config: &ClusterConfig,
) -> Result<Option<(std::net::TcpListener, SocketAddr)>, StartError> {
    let Some(listen) = &config.listen else {
        return Ok(None);
    };
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| StartError::BadAddress(listen.clone()))?;
    let listener = std::net::TcpListener::bind(addr).map_err(|source| StartError::Io {
        what: "binding [cluster] listen",
        source,
    })?;
    let bound = listener.local_addr().map_err(|source| StartError::Io {
        what: "reading a bound address",
        source,
    })?;
    let advertise = match &config.advertise {
        Some(advertise) => advertise
            .parse()
            .map_err(|_| StartError::BadAddress(advertise.clone()))?,
        None if bound.ip().is_unspecified() => {
            return Err(StartError::Config(
                "[cluster] listen is a wildcard address: set advertise".to_owned(),
            ))
        }
        None => bound,
    };
    listener
        .set_nonblocking(true)
        .map_err(|source| StartError::Io {
            what: "setting up [cluster] listen",
            source,
        })?;
    Ok(Some((listener, advertise)))
}

/// The hop server's bounds from the configuration.
pub fn limits(engine: &Engine, config: &ClusterConfig) -> HopLimits {
    HopLimits {
        // A Mailpit send's JSON is the largest body that travels.
        max_body_bytes: uncorreo_api::mailpit::send::max_request_bytes(
            engine.config().max_message_bytes,
        )
        .saturating_add(ENVELOPE_ROOM),
        max_connections: config.hop_max_connections,
        header_timeout: Duration::from_secs(10),
    }
}

/// Runs the hop listener on its own thread until `shutdown`.
pub fn serve(
    listener: std::net::TcpListener,
    server: Arc<HopServer>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, StartError> {
    std::thread::Builder::new()
        .name("hop".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "the hop listener could not start");
                    return;
                }
            };
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => uncorreo_hop::server::serve(listener, server, shutdown).await,
                    Err(error) => tracing::error!(%error, "the hop listener could not start"),
                }
            });
        })
        .map_err(|source| StartError::Io {
            what: "spawning the hop thread",
            source,
        })
}

/// This host's public API, run in process for a request another host
/// proxied here (`uncorreo_hop::server::LocalHttp`).
pub struct LocalApi {
    router: axum::Router,
    max_answer: usize,
}

impl LocalApi {
    /// Answers up to `max_message_bytes` plus room for a JSON rendering.
    pub fn new(router: axum::Router, max_message_bytes: usize) -> LocalApi {
        LocalApi {
            router,
            max_answer: max_message_bytes.saturating_add(1 << 20),
        }
    }
}

impl uncorreo_hop::server::LocalHttp for LocalApi {
    fn call(
        &self,
        request: hyper::Request<bytes::Bytes>,
        client: std::net::IpAddr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = hyper::Response<bytes::Bytes>> + Send>>
    {
        let router = self.router.clone();
        let max_answer = self.max_answer;
        Box::pin(async move {
            let mut request = request.map(axum::body::Body::from);
            request
                .extensions_mut()
                .insert(uncorreo_api::cluster::Proxied);
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(SocketAddr::new(client, 0)));
            let response = match tower::ServiceExt::oneshot(router, request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let (parts, body) = response.into_parts();
            match axum::body::to_bytes(body, max_answer).await {
                Ok(body) => hyper::Response::from_parts(parts, body),
                Err(_) => {
                    let mut response = hyper::Response::new(bytes::Bytes::new());
                    *response.status_mut() = hyper::StatusCode::BAD_GATEWAY;
                    response
                }
            }
        })
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
    /// The destination named is not known, or no other host answers.
    #[error("no destination: {0}")]
    NoDestination(String),
    /// The destination does not answer as the node named.
    #[error(transparent)]
    Probe(#[from] ProbeError),
}

/// What a leave over the hop needs besides the membership.
#[derive(Clone)]
pub struct HopLeave {
    /// This host's engine (the source of the copies).
    pub engine: Engine,
    /// The cluster secret.
    pub secret: HopSecret,
    /// How long one hop request may take.
    pub timeout: Duration,
}

impl Membership {
    /// Hands every partition homed here over to `destination`, one at a
    /// time (SCALE.md, "A leaves cleanly"). Blocks; run it off the cores.
    pub fn leave<D: Destination>(&self, destination: &D) -> Result<Vec<Moved>, LeaveError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(LeaveError::Runtime)?
            .block_on(self.leave_to(destination))
    }

    /// Hands every partition homed here over the hop to `to`, or by
    /// default to the first other host (by node id) that answers on its
    /// hop (`uncorreo admin cluster leave`).
    pub async fn leave_over_hop(
        &self,
        hop: &HopLeave,
        to: Option<&str>,
    ) -> Result<(String, Vec<Moved>), LeaveError> {
        let destination = self.destination(hop, to).await?;
        let moved = self.leave_to(&destination).await?;
        Ok((destination.node, moved))
    }

    async fn destination(
        &self,
        hop: &HopLeave,
        to: Option<&str>,
    ) -> Result<HopDestination, LeaveError> {
        let nodes = self
            .directory
            .nodes()
            .await
            .map_err(|error| LeaveError::NoDestination(error.to_string()))?;
        let me = self.config.node_id.as_str();
        let destination = |(node, address): (String, String)| HopDestination {
            from: hop.engine.clone(),
            node,
            hop: address,
            secret: hop.secret.clone(),
            partitions: self.config.partitions,
            timeout: hop.timeout,
        };
        if let Some(to) = to {
            if to == me {
                return Err(LeaveError::NoDestination(
                    "a host cannot leave to itself".to_owned(),
                ));
            }
            let Some(found) = nodes.into_iter().find(|(node, _)| node == to) else {
                return Err(LeaveError::NoDestination(format!(
                    "no host {to:?} has joined the cluster"
                )));
            };
            let destination = destination(found);
            destination.probe().await?;
            return Ok(destination);
        }
        let mut why = Vec::new();
        for found in nodes.into_iter().filter(|(node, _)| node != me) {
            let destination = destination(found);
            match destination.probe().await {
                Ok(()) => return Ok(destination),
                Err(error) => why.push(error.to_string()),
            }
        }
        Err(LeaveError::NoDestination(if why.is_empty() {
            "no other host has joined the cluster".to_owned()
        } else {
            format!("no other host answers ({})", why.join("; "))
        }))
    }

    /// [`Membership::leave`] from async code.
    pub async fn leave_to<D: Destination>(
        &self,
        destination: &D,
    ) -> Result<Vec<Moved>, LeaveError> {
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

/// The destination's side of `adopt` over the hop: serves a partition once
/// its home in NATS names this host (and no move of it is under way), so a
/// stale or stray request never makes two hosts serve one partition.
pub struct HomeAdopter {
    membership: Membership,
}

impl HomeAdopter {
    /// The adopter of this host's membership.
    pub fn new(membership: Membership) -> HomeAdopter {
        HomeAdopter { membership }
    }
}

impl uncorreo_hop::server::Adopter for HomeAdopter {
    fn adopt(
        &self,
        partition: Partition,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> {
        let membership = self.membership.clone();
        Box::pin(async move {
            let config = &membership.config;
            let homes = Assignments::new(
                NatsBucket::open(
                    &config.nats_url,
                    "uncorreo_homes",
                    None,
                    config.terms.renew_every(),
                )
                .await
                .map_err(|e| e.to_string())?,
            );
            match homes.home(partition).await.map_err(|e| e.to_string())? {
                Some((home, _)) if home.node == config.node_id && home.moving_to.is_none() => {
                    membership
                        .member
                        .adopt(partition)
                        .await
                        .map_err(|e| e.to_string())
                }
                other => Err(format!(
                    "partition {} is not homed here: {other:?}",
                    partition.0
                )),
            }
        })
    }
}

/// `uncorreo admin cluster leave` on a running server.
pub struct Operations {
    membership: Membership,
    hop: Option<HopLeave>,
    /// One leave at a time: a second would race the first on each
    /// partition's home.
    leaving: Arc<std::sync::atomic::AtomicBool>,
}

/// Clears the "leaving" flag when the leave ends, however it ends.
struct Leaving(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Leaving {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Operations {
    /// The cluster actions of this host (`hop`: `None` without
    /// `[cluster] listen`, where a leave over the hop cannot run).
    pub fn new(membership: Membership, hop: Option<HopLeave>) -> Operations {
        Operations {
            membership,
            hop,
            leaving: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }
}

impl uncorreo_api::admin::ClusterOps for Operations {
    fn leave(
        &self,
        to: Option<String>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<serde_json::Value, String>> + Send>,
    > {
        let membership = self.membership.clone();
        let hop = self.hop.clone();
        let leaving = Arc::clone(&self.leaving);
        Box::pin(async move {
            let Some(hop) = hop else {
                return Err("cluster leave needs [cluster] listen (the hop)".to_owned());
            };
            if leaving.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Err("a leave is already under way on this host".to_owned());
            }
            let _leaving = Leaving(leaving);
            let (to, moved) = membership
                .leave_over_hop(&hop, to.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            Ok(serde_json::json!({
                "to": to,
                "partitions": moved.len(),
                "mailboxes": moved.iter().map(|m| m.mailboxes).sum::<u64>(),
            }))
        })
    }
}
