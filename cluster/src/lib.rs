//! One job: decide, across hosts, which host may serve a mailbox.
//!
//! A mailbox belongs to one of a fixed number of partitions
//! ([`partition::partition_of`]). A partition is served by the one host that
//! holds its **lease**, a key in a NATS JetStream key-value bucket that the
//! holder rewrites at a known revision (compare-and-set) before the bucket's
//! `max_age` removes it ([`lease`]). Taking a lease is a `create`, which one
//! host wins; keeping it is an `update` at the revision the holder last
//! wrote, which fails as soon as anyone else wrote; and the holder stops
//! serving, by its own monotonic clock, before the server can remove the key.
//! So two hosts never both believe they serve a partition. SCALE.md has the
//! whole design and its argument; this crate is its first brick and does not
//! yet forward mail.
//!
//! Which host's disk holds a partition (its home) is a second key,
//! `assign.<p>`, changed only by compare-and-set ([`assign`]).
//!
//! [`member::Member`] is one host's loop: claim homes, hold their leases,
//! publish what it serves.
//!
//! A clean handover moves partition homes to another host ([`handover`]),
//! by compare-and-set on the home and a copy of the records through a
//! [`handover::Destination`].
//! [`directory::Directory`] answers, for a partition served elsewhere,
//! which host serves it and where its internal hop listens.
//!
//! Requests between hosts are signed with the cluster secret ([`hop`]).
//!
//! Owners announce committed messages on NATS core subjects, one per
//! partition, and a host with waiters for a partition it does not serve
//! shares one subscription among them ([`events`]).
//!
//! Users and API keys live in one bucket, `uncorreo_accounts`, and every
//! host keeps a replica of it in memory ([`accounts`]).
//!
//! The key-value store is behind the [`store::CasBucket`] trait: NATS in
//! production ([`nats::NatsBucket`]), an in-memory model with a manual
//! clock in tests ([`store::MemoryBucket`]).

pub mod accounts;
pub mod assign;
pub mod directory;
pub mod events;
pub mod handover;
pub mod hop;
pub mod lease;
pub mod member;
pub mod nats;
pub mod partition;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
