//! Who serves a partition, and where its internal hop listens.
//!
//! The owner of partition `p` is the holder named in `lease.<p>`; each host
//! writes its hop address under `node.<id>` in the homes bucket when it
//! joins. A host serving a request for a partition it does not serve reads
//! both (two key-value gets) and keeps the answer for [`CACHE_FOR`]. The
//! cache only costs availability, never correctness: the owner itself checks
//! that it serves the partition before it stores or answers anything, so a
//! stale answer is refused there and becomes a temporary error here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::assign::Assignment;
use crate::lease::{lease_key, LeaseValue};
use crate::nats::NatsBucket;
use crate::partition::Partition;
use crate::store::{CasBucket, CasError, ReadError};

/// How long an owner looked up is believed before it is read again.
pub const CACHE_FOR: Duration = Duration::from_secs(1);

/// The value under `node.<id>`: where that host's internal hop listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeValue {
    /// `ip:port` of the host's `[cluster] listen`, as others reach it.
    pub hop: String,
}

/// The store key of a host's record.
pub fn node_key(node: &str) -> String {
    format!("node.{node}")
}

/// The host serving a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Its node id.
    pub node: String,
    /// Where its internal hop listens.
    pub hop: String,
}

/// Every partition's home and every host's hop address, as read at one
/// moment (a listing that spans hosts asks every home: SCALE.md, "Reads").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Homes {
    /// `(partition, home node)` for every partition with a home, by
    /// partition.
    pub partitions: Vec<(Partition, String)>,
    /// `(node, hop address)` of every host that published one, by node.
    pub hops: Vec<(String, String)>,
}

impl Homes {
    /// Each node named as a home, once, by node id.
    pub fn nodes(&self) -> Vec<&str> {
        let mut nodes: Vec<&str> = self.partitions.iter().map(|(_, n)| n.as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Where `node`'s hop listens, if it published that.
    pub fn hop(&self, node: &str) -> Option<&str> {
        self.hops
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, hop)| hop.as_str())
    }
}

/// Reads owners from the lease and homes buckets, with a short cache.
#[derive(Debug)]
pub struct Directory {
    leases: NatsBucket,
    homes: NatsBucket,
    cache: parking_lot::Mutex<HashMap<Partition, (Option<Owner>, Instant)>>,
    every_home: parking_lot::Mutex<Option<(Homes, Instant)>>,
    hops: parking_lot::Mutex<HashMap<String, (Option<String>, Instant)>>,
}

impl Directory {
    pub(crate) fn new(leases: NatsBucket, homes: NatsBucket) -> Directory {
        Directory {
            leases,
            homes,
            cache: parking_lot::Mutex::new(HashMap::new()),
            every_home: parking_lot::Mutex::new(None),
            hops: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Publishes this host's hop address under `node.<id>`.
    pub(crate) async fn publish(&self, node: &str, hop: &str) -> Result<(), CasError> {
        let value = serde_json::to_vec(&NodeValue {
            hop: hop.to_owned(),
        })
        .map_err(|error| CasError::Unavailable(error.to_string()))?;
        self.homes.put(&node_key(node), Bytes::from(value)).await?;
        Ok(())
    }

    /// The host holding `partition`'s lease now, with its hop address;
    /// `None` when nobody holds it (or the holder published no address).
    pub async fn owner(&self, partition: Partition) -> Result<Option<Owner>, ReadError> {
        if let Some((owner, at)) = self.cache.lock().get(&partition) {
            if at.elapsed() < CACHE_FOR {
                return Ok(owner.clone());
            }
        }
        let owner = self.read_owner(partition).await?;
        self.cache
            .lock()
            .insert(partition, (owner.clone(), Instant::now()));
        Ok(owner)
    }

    /// Where `node`'s internal hop listens, if it published that (kept for
    /// [`CACHE_FOR`]; one entry per node asked, and nodes are the
    /// cluster's hosts). A host that stopped keeps its record: ask it
    /// before relying on it.
    pub async fn hop_of(&self, node: &str) -> Result<Option<String>, ReadError> {
        if let Some((hop, at)) = self.hops.lock().get(node) {
            if at.elapsed() < CACHE_FOR {
                return Ok(hop.clone());
            }
        }
        let hop = self
            .homes
            .get(&node_key(node))
            .await?
            .and_then(|value| serde_json::from_slice::<NodeValue>(&value.value).ok())
            .map(|value| value.hop);
        self.hops
            .lock()
            .insert(node.to_owned(), (hop.clone(), Instant::now()));
        Ok(hop)
    }

    /// Every host that has joined (published its hop address), by node id:
    /// `(node, hop address)`. A host that stopped stays listed; ask it
    /// before relying on it.
    pub async fn nodes(&self) -> Result<Vec<(String, String)>, ReadError> {
        let mut nodes = Vec::new();
        for key in self.homes.keys().await? {
            let Some(node) = key.strip_prefix("node.") else {
                continue;
            };
            if let Some(value) = self.homes.get(&key).await? {
                if let Ok(value) = serde_json::from_slice::<NodeValue>(&value.value) {
                    nodes.push((node.to_owned(), value.hop));
                }
            }
        }
        nodes.sort();
        Ok(nodes)
    }

    /// Every partition's home and every host's hop address (kept for
    /// [`CACHE_FOR`]). One ordered read of the last value of each
    /// `assign.*` key (not one get per partition: `P` is 1,024 by default),
    /// bounded by `limit`; then the `node.*` records.
    pub async fn homes(&self, limit: Duration) -> Result<Homes, ReadError> {
        if let Some((homes, at)) = self.every_home.lock().as_ref() {
            if at.elapsed() < CACHE_FOR {
                return Ok(homes.clone());
            }
        }
        let read = async {
            let keys = self.homes.keys().await?;
            // An empty bucket has nothing to deliver: the watch would wait
            // for a first entry until the limit.
            let partitions = if keys.iter().any(|k| k.starts_with("assign.")) {
                self.read_assignments().await?
            } else {
                Vec::new()
            };
            let mut hops = Vec::new();
            for key in keys.iter().filter(|k| k.starts_with("node.")) {
                if let Some(value) = self.homes.get(key).await? {
                    if let Ok(value) = serde_json::from_slice::<NodeValue>(&value.value) {
                        hops.push((key["node.".len()..].to_owned(), value.hop));
                    }
                }
            }
            hops.sort();
            Ok::<_, ReadError>(Homes { partitions, hops })
        };
        let homes = tokio::time::timeout(limit, read)
            .await
            .map_err(|_| ReadError("the homes bucket did not answer in time".to_owned()))??;
        *self.every_home.lock() = Some((homes.clone(), Instant::now()));
        Ok(homes)
    }

    async fn read_assignments(&self) -> Result<Vec<(Partition, String)>, ReadError> {
        use futures_util::StreamExt;
        let mut watch = self
            .homes
            .kv()
            .watch_with_history("assign.>")
            .await
            .map_err(|error| ReadError(error.to_string()))?;
        let mut homes = Vec::new();
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|error| ReadError(error.to_string()))?;
            let partition = entry
                .key
                .strip_prefix("assign.")
                .and_then(|p| p.parse::<u16>().ok());
            if let (Some(partition), async_nats::jetstream::kv::Operation::Put) =
                (partition, entry.operation)
            {
                if let Ok(home) = serde_json::from_slice::<Assignment>(&entry.value) {
                    homes.push((Partition(partition), home.node));
                }
            }
            // The last entry the watch had pending when it started.
            if entry.delta == 0 {
                break;
            }
        }
        homes.sort();
        homes.dedup_by_key(|(p, _)| *p);
        Ok(homes)
    }

    /// Forgets what was learnt about `partition` (its owner did not answer
    /// as one), so the next request reads it again.
    pub fn forget(&self, partition: Partition) {
        self.cache.lock().remove(&partition);
    }

    async fn read_owner(&self, partition: Partition) -> Result<Option<Owner>, ReadError> {
        let Some(lease) = self.leases.get(&lease_key(partition)).await? else {
            return Ok(None);
        };
        let Ok(lease) = serde_json::from_slice::<LeaseValue>(&lease.value) else {
            return Ok(None);
        };
        let Some(node) = self.homes.get(&node_key(&lease.node)).await? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice::<NodeValue>(&node.value)
            .ok()
            .map(|value| Owner {
                node: lease.node,
                hop: value.hop,
            }))
    }
}
