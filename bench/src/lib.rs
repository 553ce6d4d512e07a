//! Client side of uncorreo's benchmarks (the `uncorreo-bench` binary): an
//! SMTP load generator, WebSocket subscribers, a small REST client, a server
//! spawner, and latency summaries.

pub mod burst;
pub mod fleet;
pub mod hold;
pub mod idle;
pub mod load;
pub mod read;
pub mod rest;
pub mod smtp;
pub mod spawn;
pub mod stats;
pub mod ws;
