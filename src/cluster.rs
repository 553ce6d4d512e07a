//! Starting this host's cluster membership (`[cluster]`, SCALE.md) on its
//! own thread, so a slow NATS never holds up a core, and the internal hop
//! listener on another.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uncorreo_cluster::directory::Directory;
use uncorreo_cluster::hop::HopSecret;
use uncorreo_cluster::member::{Member, MemberConfig, Served};
use uncorreo_engine::Engine;
use uncorreo_hop::server::{HopLimits, HopServer, ENVELOPE_ROOM};

use crate::config::ClusterConfig;
use crate::StartError;

/// A joined member: its thread, what it serves, who serves the rest.
pub struct Joined {
    pub thread: JoinHandle<()>,
    pub served: Arc<Served>,
    pub directory: Arc<Directory>,
}

/// Joins the cluster: connects, claims and takes leases before returning,
/// so a host that cannot reach NATS fails its start with the reason. The
/// thread then renews leases until `shutdown`.
pub fn start(config: MemberConfig, shutdown: CancellationToken) -> Result<Joined, StartError> {
    let (joined_tx, joined_rx) = std::sync::mpsc::channel();
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
                    .send(Ok((member.served(), member.directory())))
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
        Ok(Ok((served, directory))) => Ok(Joined {
            thread,
            served,
            directory,
        }),
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
        max_body_bytes: engine
            .config()
            .max_message_bytes
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
