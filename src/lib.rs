//! The `uncorreo` appliance: wires the engine, the SMTP server and the HTTP
//! API onto a thread-per-core runtime. The binary (`src/main.rs`) is a thin
//! CLI over [`Appliance::start`]; integration tests start the same thing on
//! port 0.

pub mod accounts;
pub mod cluster;
pub mod config;
pub mod cores;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio_util::sync::CancellationToken;
use uncorreo_engine::Engine;

pub use config::Config;

/// Why the appliance could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The engine could not open its data directory.
    #[error("opening storage: {0}")]
    Engine(#[from] uncorreo_engine::OpenError),
    /// The configuration is inconsistent (e.g. `[limits]` names a missing plan).
    #[error("configuration: {0}")]
    Config(String),
    /// A listen address is not `host:port`.
    #[error("listen address {0:?} is not ip:port")]
    BadAddress(String),
    /// A listen address could not be bound (e.g. another process holds it).
    #[error("{what}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The cause, naming the address.
        source: cores::BindError,
    },
    /// `[cluster]` is set and joining the cluster failed (NATS unreachable,
    /// JetStream off, unreadable partition homes).
    #[error("joining the cluster: {0}")]
    Cluster(#[source] uncorreo_cluster::member::JoinError),
    /// `[cluster]` is set and the accounts bucket could not be read.
    #[error("reading the cluster's accounts: {0}")]
    Accounts(#[source] uncorreo_cluster::accounts::AccountsOpenError),
    /// `[cluster]` is set and this host's own users could not be copied
    /// into the cluster's accounts (NATS did not confirm a write).
    #[error("copying this host's users into the cluster's accounts: {0}")]
    AccountsImport(#[source] uncorreo_cluster::accounts::AccountsError),
    /// `[cluster] listen` is set and NATS could not be reached for events.
    #[error("{0}")]
    Events(#[source] uncorreo_cluster::events::ConnectError),
    /// Setting up a socket, a thread or a runtime failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running appliance: every core thread, the engine, and the addresses it answers on.
pub struct Appliance {
    /// Where SMTP answers (the real port, also when configured as 0).
    pub smtp_addr: SocketAddr,
    /// Where SMTP over implicit TLS answers, when `smtp.tls_listen` is set.
    pub smtps_addr: Option<SocketAddr>,
    /// Where HTTP answers.
    pub http_addr: SocketAddr,
    /// The operator socket (`uncorreo admin …` talks to it).
    pub admin_socket: PathBuf,
    /// The engine, for tests that look at storage directly.
    pub engine: Engine,
    /// The budget of bytes in flight shared by every ingest path.
    pub budget: uncorreo_budget::Budget,
    /// The fault plans in force (set through the API, applied by smtpd).
    pub faults: Arc<uncorreo_faults::FaultPlans>,
    shutdown: CancellationToken,
    threads: Vec<JoinHandle<()>>,
    cluster_served: Option<Arc<uncorreo_cluster::member::Served>>,
    cluster_membership: Option<cluster::Membership>,
    /// Stops the membership and the hop listener, after the front ends.
    cluster_stop: CancellationToken,
    cluster_threads: Vec<JoinHandle<()>>,
    hop_addr: Option<SocketAddr>,
    hop_server: Option<Arc<uncorreo_hop::server::HopServer>>,
    cluster_events: Option<Arc<uncorreo_cluster::events::Events>>,
    cluster_accounts: Option<Arc<accounts::ClusterAccounts>>,
}

/// Cancels its token when dropped, so a start that fails after joining the
/// cluster does not leave the membership and hop threads running.
struct StopOnDrop(CancellationToken, bool);

impl StopOnDrop {
    fn disarm(mut self) -> CancellationToken {
        self.1 = false;
        self.0.clone()
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if self.1 {
            self.0.cancel();
        }
    }
}

impl Appliance {
    /// Open storage, bind every listener (one per core per protocol), start one
    /// thread per core, and return once all of them accept connections.
    pub fn start(config: Config) -> Result<Self, StartError> {
        // Before anything emits metrics, so nothing is lost to the no-op recorder.
        uncorreo_api::metrics::install();
        config
            .validate()
            .map_err(|e| StartError::Config(e.to_string()))?;
        let budget = uncorreo_budget::Budget::new(config.memory.resolved_in_flight_bytes());
        let mut engine_config = config.engine.clone();
        if let Some(partitions) = config
            .cluster
            .as_ref()
            .and_then(|c| uncorreo_cluster::partition::PartitionCount::new(c.partitions))
        {
            engine_config.mailbox_id_prefix = cluster::mailbox_id_prefix(partitions);
        }
        let engine = Engine::open(engine_config)?;
        let cores = cores::effective_cores(config.cores);
        let smtp_addr = parse_addr(&config.smtp.listen)?;
        let http_addr = parse_addr(&config.http.listen)?;
        let io = |what| move |source| StartError::Io { what, source };
        let bind = |what| move |source| StartError::Bind { what, source };
        let smtp_listeners =
            cores::reuseport_listeners(smtp_addr, cores).map_err(bind("binding SMTP"))?;
        let http_listeners =
            cores::reuseport_listeners(http_addr, cores).map_err(bind("binding HTTP"))?;
        let smtp_addr = local_addr(&smtp_listeners)?;
        let http_addr = local_addr(&http_listeners)?;
        let mut smtps_listeners: Vec<Option<std::net::TcpListener>> = match &config.smtp.tls_listen
        {
            Some(listen) => cores::reuseport_listeners(parse_addr(listen)?, cores)
                .map_err(bind("binding SMTPS"))?
                .into_iter()
                .map(Some)
                .collect(),
            None => Vec::new(),
        };
        let smtps_addr = match smtps_listeners.first() {
            Some(Some(l)) => Some(l.local_addr().map_err(io("reading a bound address"))?),
            _ => None,
        };
        smtps_listeners.resize_with(cores.max(1), || None);
        let admin_socket = config.admin_socket();
        let admin_listener = bind_operator_socket(&admin_socket)?;
        let cluster_member = match &config.cluster {
            Some(cluster) => Some(cluster.member_config().map_err(StartError::Config)?),
            None => None,
        };
        // Joined before the front ends are built: they route by owner.
        let cluster_stop = StopOnDrop(CancellationToken::new(), true);
        let mut cluster_threads = Vec::new();
        let mut cluster_served = None;
        let mut cluster_membership = None;
        let mut cluster_route = None;
        let mut hop_server = None;
        let mut hop_addr = None;
        let mut hop_leave = None;
        let mut cluster_events = None;
        let mut cluster_accounts = None;
        // The owners of mailboxes that ended here, for their counts across
        // hosts.
        let recount = Arc::new(uncorreo_api::counts::Ended::default());
        if let (Some(cluster), Some(mut member)) = (&config.cluster, cluster_member) {
            let bound = cluster::bind(cluster)?;
            let secret = match bound {
                Some(_) => Some(cluster::read_secret(cluster)?),
                None => None,
            };
            member.advertise = bound.as_ref().map(|(_, advertise)| advertise.to_string());
            let (node, partitions) = (member.node_id.clone(), member.partitions);
            let joined = cluster::start(member, cluster_stop.0.clone())?;
            cluster_threads.push(joined.thread);
            cluster_served = Some(Arc::clone(&joined.served));
            cluster_membership = Some(joined.membership.clone());
            let (accounts, thread) = accounts::start(
                &cluster.nats_url,
                &node,
                std::time::Duration::from_secs(cluster.hop_timeout_secs),
                engine.clone(),
                cluster_stop.0.clone(),
            )?;
            cluster_threads.push(thread);
            cluster_accounts = Some(Arc::clone(&accounts));
            if let (Some((listener, _)), Some(secret)) = (bound, secret) {
                hop_addr = Some(
                    listener
                        .local_addr()
                        .map_err(io("reading a bound address"))?,
                );
                let timeout = std::time::Duration::from_secs(cluster.hop_timeout_secs);
                let (events, thread) = cluster::start_events(
                    &cluster.nats_url,
                    partitions,
                    cluster::events_config(&config.realtime, timeout),
                    cluster_stop.0.clone(),
                )?;
                cluster_threads.push(thread);
                cluster_events = Some(Arc::clone(&events));
                // Only here: a single host has no tap and publishes nothing.
                let announcer = Arc::clone(&events);
                let ended = Arc::clone(&recount);
                engine.set_event_tap(Arc::new(move |tapped| match tapped {
                    uncorreo_engine::Tapped::Committed(event) => {
                        announcer.announce(event.address.to_string(), event.id.seq)
                    }
                    uncorreo_engine::Tapped::Closed(address, owner) => {
                        announcer.announce_gone(address.to_string());
                        // Its owner's count across hosts (`counts`).
                        ended.note(owner);
                    }
                }));
                cluster_route = Some(Arc::new(uncorreo_hop::Cluster::new(
                    engine.clone(),
                    uncorreo_hop::ClusterParts {
                        node: node.clone(),
                        secret: secret.clone(),
                        served: Arc::clone(&joined.served),
                        directory: joined.directory,
                        partitions,
                        timeout,
                        events: Some(events),
                        accounts: Some(accounts.replica()),
                    },
                )));
                hop_leave = Some(cluster::HopLeave {
                    engine: engine.clone(),
                    secret: secret.clone(),
                    timeout,
                });
                let server = Arc::new(uncorreo_hop::server::HopServer::new(
                    engine.clone(),
                    secret,
                    node,
                    joined.served,
                    partitions,
                    cluster::limits(&engine, cluster),
                ));
                server.set_adopter(Arc::new(cluster::HomeAdopter::new(
                    joined.membership.clone(),
                )));
                cluster_threads.push(cluster::serve(
                    listener,
                    Arc::clone(&server),
                    cluster_stop.0.clone(),
                )?);
                hop_server = Some(server);
            }
        }

        let ingest = uncorreo_ses::Ingest::new(
            engine.clone(),
            config.sns.clone(),
            config.smtp.hostname.clone(),
        )
        .map_err(|e| io("setting up the SNS webhook")(std::io::Error::other(e)))?;
        let ses = ingest.clone();
        let mut app_state = uncorreo_api::AppState::new(
            engine.clone(),
            uncorreo_api::ApiConfig {
                http: config.http.clone(),
                plans: config.plans.clone(),
                limits: config.limits.clone(),
                realtime: config.realtime.clone(),
                webhooks: config.webhooks.clone(),
            },
            ingest,
            budget.clone(),
        )
        .map_err(|e| StartError::Config(e.to_string()))?;
        app_state.cluster = cluster_route.clone();
        if let Some(accounts) = &cluster_accounts {
            app_state.accounts = Arc::clone(accounts) as Arc<dyn uncorreo_api::accounts::Accounts>;
        }
        if let Some(route) = &cluster_route {
            ses.set_cluster(Arc::clone(route));
        }
        if cluster_accounts.is_some() {
            let (state, stop) = (app_state.clone(), cluster_stop.0.clone());
            let ((), thread) = cluster::start_thread("counts", move |ready| async move {
                if ready.send(Ok(())).is_ok() {
                    uncorreo_api::counts::run(state, recount, stop).await;
                }
            })?;
            cluster_threads.push(thread);
        }
        if let Some(server) = &hop_server {
            server.set_local_http(Arc::new(cluster::LocalApi::new(
                uncorreo_api::router(app_state.clone()),
                engine.config().max_message_bytes,
            )));
        }
        // The API sets fault plans, smtpd applies them: one registry.
        let faults = app_state.faults.clone();
        let smtp_shared = uncorreo_smtpd::Shared::with_cluster(
            engine.clone(),
            config.smtp.clone(),
            budget.clone(),
            app_state.faults.clone(),
            cluster_route.clone(),
        )
        .map_err(io("setting up SMTP"))?;
        if let Some(accounts) = &cluster_accounts {
            let known = Arc::clone(accounts);
            let _ = smtp_shared
                .key_user
                .set(Arc::new(move |hash: &[u8; 32]| known.key_user(hash)));
            let accounts = Arc::clone(accounts);
            let _ = smtp_shared.key_catch_up.set(Arc::new(move || {
                let accounts = Arc::clone(&accounts);
                Box::pin(async move {
                    uncorreo_api::accounts::Accounts::catch_up(accounts.as_ref()).await
                })
            }));
        }
        // One token stops the listeners and ends the real-time streams, so SSE
        // bodies finish and the HTTP server can drain.
        let shutdown = app_state.realtime().shutdown_token();
        // One MCP endpoint (one session table) for every core: a client's
        // requests may arrive on different connections, so on different cores.
        let mcp = config.mcp.enabled.then(|| {
            uncorreo_mcp::Mcp::new(app_state.clone(), config.mcp.clone(), shutdown.clone())
        });
        let mut threads = Vec::with_capacity(cores);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), std::io::Error>>();
        let listeners = smtp_listeners
            .into_iter()
            .zip(smtps_listeners)
            .zip(http_listeners);
        for (core, ((smtp, smtps), http)) in listeners.enumerate() {
            let smtp_shared = Arc::clone(&smtp_shared);
            let app_state = app_state.clone();
            let mcp = mcp.clone();
            let shutdown = shutdown.clone();
            let ready_tx = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("core-{core}"))
                .spawn(move || {
                    run_core(
                        CoreListeners { smtp, smtps, http },
                        smtp_shared,
                        app_state,
                        mcp,
                        shutdown,
                        ready_tx,
                    )
                })
                .map_err(io("spawning a core thread"))?;
            threads.push(thread);
        }
        let operator = uncorreo_api::operator::OperatorState {
            accounts: Arc::clone(&app_state.accounts),
            engine: engine.clone(),
            plans: config.plans.clone(),
            limits: config.limits.clone(),
            cluster: cluster_membership.clone().map(|membership| {
                Arc::new(cluster::Operations::new(membership, hop_leave.clone()))
                    as Arc<dyn uncorreo_api::admin::ClusterOps>
            }),
        };
        {
            let shutdown = shutdown.clone();
            let ready_tx = ready_tx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("operator".to_owned())
                    .spawn(move || run_operator(admin_listener, operator, shutdown, ready_tx))
                    .map_err(io("spawning the operator thread"))?,
            );
        }
        drop(ready_tx);
        for _ in 0..threads.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    shutdown.cancel();
                    return Err(StartError::Io {
                        what: "starting a core",
                        source,
                    });
                }
                Err(_) => {
                    shutdown.cancel();
                    return Err(StartError::Io {
                        what: "starting a core",
                        source: std::io::Error::other("core thread exited during start"),
                    });
                }
            }
        }
        // After the cores are ready: the loop above counts core threads only.
        match uncorreo_api::webhooks::spawn(engine.clone(), app_state.webhooks(), shutdown.clone())
        {
            Ok(Some(t)) => threads.push(t),
            Ok(None) => {}
            Err(source) => {
                shutdown.cancel();
                return Err(StartError::Io {
                    what: "starting the webhook dispatcher",
                    source,
                });
            }
        }
        tracing::info!(%smtp_addr, %http_addr, admin_socket = %admin_socket.display(), cores, "uncorreo is serving");
        Ok(Self {
            smtp_addr,
            smtps_addr,
            http_addr,
            admin_socket,
            engine,
            budget,
            faults,
            shutdown,
            threads,
            cluster_served,
            cluster_membership,
            cluster_stop: cluster_stop.disarm(),
            cluster_threads,
            hop_addr,
            hop_server,
            cluster_events,
            cluster_accounts,
        })
    }

    /// Test hook: with `[cluster]`, hold this host's accounts watch (it
    /// applies a change only while a catch-up waits for it), so a test
    /// sees whether a check catches up. Not for production use.
    #[doc(hidden)]
    pub fn hold_accounts_watch_for_tests(&self, held: bool) {
        if let Some(accounts) = &self.cluster_accounts {
            accounts.hold_watch_for_tests(held);
        }
    }

    /// With `[cluster] listen`: where the internal hop listens.
    pub fn hop_addr(&self) -> Option<SocketAddr> {
        self.hop_addr
    }

    /// With `[cluster] listen`: the internal hop's server (for test hooks).
    pub fn hop_server(&self) -> Option<Arc<uncorreo_hop::server::HopServer>> {
        self.hop_server.clone()
    }

    /// With `[cluster] listen`: events across hosts (for test hooks).
    pub fn cluster_events(&self) -> Option<Arc<uncorreo_cluster::events::Events>> {
        self.cluster_events.clone()
    }

    /// With `[cluster]`: this host's membership (handovers).
    pub fn cluster(&self) -> Option<&cluster::Membership> {
        self.cluster_membership.as_ref()
    }

    /// With `[cluster]`: which partitions this host serves now.
    pub fn cluster_served(&self) -> Option<Arc<uncorreo_cluster::member::Served>> {
        self.cluster_served.clone()
    }

    /// A token that stops the appliance when cancelled (e.g. from a signal handler).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stop accepting, let open sessions finish or be told `421`, flush the
    /// engine and join every thread.
    pub fn shutdown(self) {
        self.shutdown.cancel();
        self.wait();
    }

    /// Block until the appliance has stopped (after the token is cancelled).
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
        // After the front ends: their last deliveries may still forward.
        self.cluster_stop.cancel();
        for t in self.cluster_threads {
            let _ = t.join();
        }
        self.engine.shutdown();
        // Gone with the server, so `uncorreo admin` knows to open storage itself.
        let _ = std::fs::remove_file(&self.admin_socket);
    }
}

/// Bind the operator socket with mode 0600 before anyone can connect: bound,
/// then restricted, then listening (a plain bind-and-listen would accept
/// connections under the umask's mode for a moment).
fn bind_operator_socket(path: &Path) -> Result<std::os::unix::net::UnixListener, StartError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let io = |what| move |source| StartError::Io { what, source };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(StartError::Config(format!(
                    "another server answers on the operator socket {}; give each server its own [admin] socket",
                    path.display()
                )));
            }
            // Left by a server that was killed: nobody answers on it.
            std::fs::remove_file(path).map_err(io("removing a stale operator socket"))?;
        }
        Ok(_) => {
            return Err(StartError::Config(format!(
                "[admin] socket {} exists and is not a socket",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(StartError::Io {
                what: "checking the operator socket path",
                source,
            })
        }
    }
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
        .map_err(io("creating the operator socket"))?;
    let address = socket2::SockAddr::unix(path).map_err(io("naming the operator socket"))?;
    socket
        .bind(&address)
        .map_err(io("binding the operator socket"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("restricting the operator socket to its owner"))?;
    socket
        .listen(64)
        .map_err(io("listening on the operator socket"))?;
    socket
        .set_nonblocking(true)
        .map_err(io("setting up the operator socket"))?;
    Ok(socket.into())
}

/// The current-thread runtime a core or the operator socket runs on; when it
/// cannot be built, the error goes to whoever waits for `ready`.
fn thread_runtime(
    ready: &std::sync::mpsc::Sender<Result<(), std::io::Error>>,
) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            let _ = ready.send(Err(e));
            None
        }
    }
}

fn run_operator(
    listener: std::os::unix::net::UnixListener,
    state: uncorreo_api::operator::OperatorState,
    shutdown: CancellationToken,
    ready: std::sync::mpsc::Sender<Result<(), std::io::Error>>,
) {
    let Some(runtime) = thread_runtime(&ready) else {
        return;
    };
    runtime.block_on(async move {
        let listener = match tokio::net::UnixListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        uncorreo_api::operator::serve(listener, state, shutdown).await;
    });
}

fn parse_addr(s: &str) -> Result<SocketAddr, StartError> {
    s.parse().map_err(|_| StartError::BadAddress(s.to_owned()))
}

fn local_addr(listeners: &[std::net::TcpListener]) -> Result<SocketAddr, StartError> {
    listeners
        .first()
        .ok_or_else(|| StartError::BadAddress("no listener".to_owned()))?
        .local_addr()
        .map_err(|source| StartError::Io {
            what: "reading a bound address",
            source,
        })
}

/// One core's sockets.
struct CoreListeners {
    smtp: std::net::TcpListener,
    /// The implicit-TLS listener, when configured.
    smtps: Option<std::net::TcpListener>,
    http: std::net::TcpListener,
}

fn run_core(
    listeners: CoreListeners,
    smtp_shared: Arc<uncorreo_smtpd::Shared>,
    app_state: uncorreo_api::AppState,
    mcp: Option<uncorreo_mcp::Mcp>,
    shutdown: CancellationToken,
    ready: std::sync::mpsc::Sender<Result<(), std::io::Error>>,
) {
    let Some(runtime) = thread_runtime(&ready) else {
        return;
    };
    runtime.block_on(async move {
        let CoreListeners { smtp, smtps, http } = listeners;
        let listeners = tokio::net::TcpListener::from_std(smtp).and_then(|s| {
            let smtps = smtps.map(tokio::net::TcpListener::from_std).transpose()?;
            Ok((s, smtps, tokio::net::TcpListener::from_std(http)?))
        });
        let (smtp, smtps, http) = match listeners {
            Ok(pair) => pair,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let smtps_task = async {
            if let Some(listener) = smtps {
                uncorreo_smtpd::serve_implicit_tls(
                    listener,
                    Arc::clone(&smtp_shared),
                    shutdown.clone(),
                )
                .await;
            }
        };
        let smtp_task = uncorreo_smtpd::serve(smtp, Arc::clone(&smtp_shared), shutdown.clone());
        let realtime = app_state.realtime().clone();
        let mut router = uncorreo_ui::mount(uncorreo_api::router(app_state.clone()));
        if let Some(mcp) = &mcp {
            router = router.merge(mcp.router());
        }
        let http_task = async {
            uncorreo_api::serve::serve(http, router, &app_state, shutdown.clone()).await;
            // Upgraded WebSockets outlive their request: let them send 1001.
            realtime.drained().await;
        };
        tokio::join!(smtp_task, smtps_task, http_task);
    });
}
