//! One job: carry a request to the host that owns its mailbox (SCALE.md,
//! "Paths").
//!
//! - [`route`]: the routing layer every ingest path delivers through. On a
//!   single host it is `Engine::deliver_held`; with `[cluster]` it splits a
//!   delivery by owner and answers only when every owner has made its part
//!   durable.
//! - [`server`]: the owner's internal listener (`[cluster] listen`), signed
//!   HTTP/1.1 with bounded bodies and connections.
//! - [`client`]: one signed request to another host, on a kept-alive
//!   connection.
//! - [`handover`]: the source's side of a clean handover over the hop.
//! - [`wire`]: what travels between them.

pub mod client;
pub mod handover;
pub mod route;
pub mod server;
pub mod wire;

pub use route::{deliver, Cluster, ClusterParts, OwnerUnavailable, Placement};
pub use uncorreo_cluster::directory::Owner;
pub use uncorreo_cluster::events::{Events, Watch, WatchError};
pub use uncorreo_cluster::partition::Partition;
