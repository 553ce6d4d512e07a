//! Starting this host's cluster membership (`[cluster]`, SCALE.md) on its
//! own thread, so a slow NATS never holds up a core.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio_util::sync::CancellationToken;
use uncorreo_cluster::member::{Member, MemberConfig, Served};

use crate::StartError;

/// Joins the cluster: connects, claims and takes leases before returning,
/// so a host that cannot reach NATS fails its start with the reason. The
/// thread then renews leases until `shutdown`.
pub fn start(
    config: MemberConfig,
    shutdown: CancellationToken,
) -> Result<(JoinHandle<()>, Arc<Served>), StartError> {
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
                if joined_tx.send(Ok(member.served())).is_err() {
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
        Ok(Ok(served)) => Ok((thread, served)),
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
