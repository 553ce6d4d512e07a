//! Partition leases: take one with `create`, keep it with `update` at the
//! revision last written, and serve only while the local clock says the
//! store cannot yet have removed it.
//!
//! The argument (SCALE.md, "Ownership"): the store counts a value's age from
//! when it *received* the write, which is no earlier than when the holder
//! *sent* it. The holder serves until `sent + length − margin` by its own
//! monotonic clock, so it stops before the store can remove the value, and
//! another host can only `create` the key after that. `margin` covers the
//! difference in clock rates between the holder and the store.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::partition::Partition;
use crate::store::{CasBucket, CasError, ReadError};

/// The lease length the store enforces and the margin the holder keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTerms {
    length: Duration,
    margin: Duration,
}

/// Lease terms that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a lease of {length:?} with a margin of {margin:?} leaves no time to serve: the margin must be under a third of the length")]
pub struct TermsError {
    length: Duration,
    margin: Duration,
}

impl LeaseTerms {
    /// `length` is the store's `max_age`; the holder renews every third of
    /// it and stops `margin` before it ends. The margin must leave the
    /// holder at least two renewal attempts before it stops.
    pub fn new(length: Duration, margin: Duration) -> Result<LeaseTerms, TermsError> {
        if margin.saturating_mul(3) >= length {
            return Err(TermsError { length, margin });
        }
        Ok(LeaseTerms { length, margin })
    }

    /// The store's `max_age`.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// How often the holder renews.
    pub fn renew_every(&self) -> Duration {
        self.length / 3
    }

    /// The instant until which a holder whose last renewal was sent at
    /// `sent` serves.
    pub fn serves_until(&self, sent: Instant) -> Instant {
        sent + (self.length - self.margin)
    }
}

/// The value stored under `lease.<p>`: who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseValue {
    /// The holder's node id.
    pub node: String,
}

/// Why a lease was not taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another host holds it (or wrote it since our last write).
    #[error("partition {0} is leased by another host")]
    HeldElsewhere(Partition),
    /// We do not hold this partition's lease, so there is nothing to renew.
    #[error("partition {0} is not leased by this host")]
    NotHeld(Partition),
    /// The store did not answer. A take may have happened; a renewal may have
    /// happened. Either way this host serves only on what it knows.
    #[error("the key-value store is unavailable: {0}")]
    Unavailable(String),
}

/// What this host knows of one lease it holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    revision: u64,
    last_renewal_sent: Instant,
}

/// The leases one host holds, over one store.
#[derive(Debug)]
pub struct Leases<S> {
    store: S,
    node: String,
    terms: LeaseTerms,
    held: HashMap<Partition, Held>,
}

/// The store key of a partition's lease.
pub fn lease_key(partition: Partition) -> String {
    format!("lease.{partition}")
}

impl<S: CasBucket> Leases<S> {
    /// No leases yet, for host `node`.
    pub fn new(store: S, node: impl Into<String>, terms: LeaseTerms) -> Leases<S> {
        Leases {
            store,
            node: node.into(),
            terms,
            held: HashMap::new(),
        }
    }

    /// The store, for tests that drive its clock.
    pub fn store(&self) -> &S {
        &self.store
    }

    fn value(&self) -> Bytes {
        let value = LeaseValue {
            node: self.node.clone(),
        };
        // A struct of one string always serializes.
        Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
    }

    /// Tries to take `partition`'s lease. `now` must be read just before the
    /// call: the lease is counted from when the request was sent.
    pub async fn take(&mut self, partition: Partition, now: Instant) -> Result<(), LeaseError> {
        match self.store.create(&lease_key(partition), self.value()).await {
            Ok(revision) => {
                self.hold(partition, revision, now);
                Ok(())
            }
            Err(CasError::Conflict) => Err(LeaseError::HeldElsewhere(partition)),
            Err(CasError::Unavailable(why)) => Err(LeaseError::Unavailable(why)),
        }
    }

    /// Notes a successful write of `partition`'s lease at `revision`, sent at `sent`.
    fn hold(&mut self, partition: Partition, revision: u64, sent: Instant) {
        self.held.insert(
            partition,
            Held {
                revision,
                last_renewal_sent: sent,
            },
        );
    }

    /// Renews `partition`'s lease at the revision this host last wrote. A
    /// conflict means another host took it: it is dropped here at once. `now`
    /// must be read just before the call.
    pub async fn renew(&mut self, partition: Partition, now: Instant) -> Result<(), LeaseError> {
        let Some(held) = self.held.get(&partition).copied() else {
            return Err(LeaseError::NotHeld(partition));
        };
        match self
            .store
            .update(&lease_key(partition), self.value(), held.revision)
            .await
        {
            Ok(revision) => {
                self.hold(partition, revision, now);
                Ok(())
            }
            Err(CasError::Conflict) => {
                self.held.remove(&partition);
                Err(LeaseError::HeldElsewhere(partition))
            }
            // Keep what we know: we still serve until the last renewal that
            // did succeed runs out.
            Err(CasError::Unavailable(why)) => Err(LeaseError::Unavailable(why)),
        }
    }

    /// Whether this host may serve `partition` at `now`.
    pub fn serves(&self, partition: Partition, now: Instant) -> bool {
        self.held
            .get(&partition)
            .is_some_and(|held| now <= self.terms.serves_until(held.last_renewal_sent))
    }

    /// Stops serving `partition` without waiting for the lease to run out
    /// in the store (a clean leave writes nothing: the next holder waits for
    /// `max_age`, which is the safe side).
    pub fn drop_lease(&mut self, partition: Partition) {
        self.held.remove(&partition);
    }

    /// Who holds `partition`'s lease according to the store.
    pub async fn holder(&self, partition: Partition) -> Result<Option<String>, ReadError> {
        let value = self.store.get(&lease_key(partition)).await?;
        Ok(value
            .and_then(|versioned| serde_json::from_slice::<LeaseValue>(&versioned.value).ok())
            .map(|value| value.node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryBucket;
    use proptest::prelude::*;
    use std::sync::Arc;

    const LENGTH: Duration = Duration::from_secs(9);
    const MARGIN: Duration = Duration::from_secs(1);

    fn terms() -> LeaseTerms {
        LeaseTerms::new(LENGTH, MARGIN).unwrap_or_else(|error| panic!("{error}"))
    }

    impl CasBucket for Arc<MemoryBucket> {
        async fn create(&self, key: &str, value: Bytes) -> Result<u64, CasError> {
            self.as_ref().create(key, value).await
        }
        async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, CasError> {
            self.as_ref().update(key, value, revision).await
        }
        async fn get(&self, key: &str) -> Result<Option<crate::store::Versioned>, ReadError> {
            self.as_ref().get(key).await
        }
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .map(|runtime| runtime.block_on(future))
            .unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn a_margin_that_leaves_no_renewal_is_refused() {
        assert!(LeaseTerms::new(Duration::from_secs(3), Duration::from_secs(1)).is_err());
        assert!(LeaseTerms::new(Duration::from_secs(10), Duration::from_secs(3)).is_ok());
        assert_eq!(terms().renew_every(), Duration::from_secs(3));
    }

    #[test]
    fn a_second_host_cannot_take_a_live_lease_and_takes_it_once_it_lapses() {
        block_on(async {
            let start = Instant::now();
            let store = Arc::new(MemoryBucket::new(LENGTH, start));
            let mut a = Leases::new(store.clone(), "a", terms());
            let mut b = Leases::new(store.clone(), "b", terms());
            let p = Partition(7);
            assert!(a.take(p, start).await.is_ok());
            assert!(matches!(
                b.take(p, start).await,
                Err(LeaseError::HeldElsewhere(_))
            ));
            assert!(a.serves(p, start + LENGTH - MARGIN));
            assert!(!a.serves(p, start + LENGTH - MARGIN + Duration::from_millis(1)));
            store.set_now(start + LENGTH);
            let later = start + LENGTH;
            assert!(b.take(p, later).await.is_ok());
            assert_eq!(b.holder(p).await.ok().flatten().as_deref(), Some("b"));
            // a's renewal is now at a stale revision: a learns it lost.
            assert!(matches!(
                a.renew(p, later).await,
                Err(LeaseError::HeldElsewhere(_))
            ));
            assert!(!a.serves(p, later));
        });
    }

    #[test]
    fn renewals_keep_the_lease_past_its_length() {
        block_on(async {
            let start = Instant::now();
            let store = Arc::new(MemoryBucket::new(LENGTH, start));
            let mut a = Leases::new(store.clone(), "a", terms());
            let p = Partition(1);
            assert!(a.take(p, start).await.is_ok());
            for step in 1..=10u32 {
                let now = start + terms().renew_every() * step;
                store.set_now(now);
                assert!(a.renew(p, now).await.is_ok(), "renewal {step}");
                assert!(a.serves(p, now));
            }
            assert!(matches!(
                Leases::new(store.clone(), "b", terms())
                    .take(p, start)
                    .await,
                Err(LeaseError::HeldElsewhere(_))
            ));
        });
    }

    /// One step of two hosts racing for one partition: who acts, how long
    /// its request takes to reach the store, and how long the answer takes
    /// to come back (both within one lease length).
    #[derive(Debug, Clone)]
    struct Step {
        host_b: bool,
        wait_ms: u64,
        to_store_ms: u64,
        from_store_ms: u64,
    }

    fn step() -> impl Strategy<Value = Step> {
        // Short delays are the dangerous ones (a take right after a lapse,
        // answered at once), so they are drawn as often as long ones.
        let delay = || prop_oneof![0..20u64, 0..9_000u64];
        (
            any::<bool>(),
            prop_oneof![0..500u64, 0..4_000u64],
            delay(),
            delay(),
        )
            .prop_map(|(host_b, wait_ms, to_store_ms, from_store_ms)| Step {
                host_b,
                wait_ms,
                to_store_ms,
                from_store_ms,
            })
    }

    proptest! {
        /// Whatever the delays of requests and answers, two hosts never both
        /// serve the partition at the same instant.
        #[test]
        fn two_hosts_never_serve_at_once(steps in proptest::collection::vec(step(), 1..60)) {
            block_on(async {
                let start = Instant::now();
                let store = Arc::new(MemoryBucket::new(LENGTH, start));
                let mut hosts = [Leases::new(store.clone(), "a", terms()), Leases::new(store.clone(), "b", terms())];
                let p = Partition(3);
                // Each host's serving windows as (from, until), known only once
                // its answer arrived.
                let mut windows: [Vec<(Instant, Instant)>; 2] = [Vec::new(), Vec::new()];
                let mut clock = start;
                for step in steps {
                    clock += Duration::from_millis(step.wait_ms);
                    let sent = clock;
                    let index = usize::from(step.host_b);
                    store.set_now(sent + Duration::from_millis(step.to_store_ms));
                    let host = &mut hosts[index];
                    let result = if host.held.contains_key(&p) { host.renew(p, sent).await } else { host.take(p, sent).await };
                    let answered = sent + Duration::from_millis(step.to_store_ms + step.from_store_ms);
                    clock = clock.max(answered);
                    if result.is_ok() {
                        let until = terms().serves_until(sent);
                        if answered <= until {
                            windows[index].push((answered, until));
                        }
                    }
                }
                for &(a_from, a_until) in &windows[0] {
                    for &(b_from, b_until) in &windows[1] {
                        prop_assert!(a_until < b_from || b_until < a_from, "a {:?}..{:?} and b {:?}..{:?} overlap", a_from - start, a_until - start, b_from - start, b_until - start);
                    }
                }
                Ok(())
            })?;
        }
    }
}
