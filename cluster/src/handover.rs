//! A clean handover of partition homes from this host to another (SCALE.md,
//! failure table, "A leaves cleanly").
//!
//! For each partition, in order:
//!
//! 1. `assign.<p>` goes from `home A` to `home A, moving → B` by
//!    compare-and-set ([`Assignments::begin_move`]).
//! 2. A marks the partition moving ([`Served::moving`]): new deliveries for
//!    it are refused with a temporary failure ([`Served::admit`]), and A
//!    waits until every delivery admitted before has finished.
//! 3. A copies the partition's live records to B ([`Destination::copy`]).
//!    B makes its copy equal to them, keeping ids and sequences, and fsyncs
//!    before it answers; a repeated copy is a no-op.
//! 4. `assign.<p>` goes to `home B` by compare-and-set
//!    ([`Assignments::finish_move`]). This is the one step that moves the
//!    partition.
//! 5. A stops serving it and forgets its lease ([`MemberHandle::release`]);
//!    B serves it ([`Destination::adopt`]) and takes the lease once A's has
//!    lapsed in the store (at most one lease length; A writes nothing to
//!    shorten it, which is the safe side).
//!
//! A failure before step 4 aborts the move (`assign` back to `home A` by
//! compare-and-set) and A serves the partition again; B's copy is never
//! served. A crash of A before step 4 leaves `moving` in the store; at its
//! next start A aborts the move the same way ([`crate::member::Member`]). A
//! failure to write step 4 whose outcome is unknown leaves the partition
//! moving and refused on A: the store decides, and a later `leave` finds
//! either `moving` (and finishes) or `home B` (and only releases).
//!
//! The copy goes through [`Destination`], so the transport between hosts
//! (the internal hop of SCALE.md) is not this module's business.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::assign::{AssignError, Assignment, Assignments};
use crate::member::{MemberGone, MemberHandle, Served};
use crate::partition::Partition;
use crate::store::CasBucket;

/// Where a partition moves to, and how its records get there.
pub trait Destination {
    /// The destination's node id.
    fn node(&self) -> &str;
    /// Copies the live records of `partition` to the destination, which
    /// answers once they are durable there; returns how many mailboxes.
    fn copy(&self, partition: Partition) -> impl Future<Output = Result<u64, String>> + Send;
    /// Tells the destination it is `partition`'s home now.
    fn adopt(&self, partition: Partition) -> impl Future<Output = Result<(), String>> + Send;
}

/// Longest a handover waits for deliveries admitted before it marked a
/// partition moving (they are bounded by the SMTP and HTTP timeouts).
pub const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// Why one partition did not move.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// Its home is not this host (or another move is under way).
    #[error(transparent)]
    Assign(#[from] AssignError),
    /// Deliveries admitted before the move did not finish in time; the move
    /// was aborted.
    #[error("deliveries for partition {0} did not finish within {DRAIN_LIMIT:?}; move aborted")]
    Drain(Partition),
    /// The copy failed; the move was aborted.
    #[error("copying partition {partition} to {to}: {why}; move aborted")]
    Copy {
        /// The partition.
        partition: Partition,
        /// The destination.
        to: String,
        /// What the destination or the transport said.
        why: String,
    },
    /// The partition moved, but telling the destination failed; it will
    /// pick the partition up when it next reads its homes.
    #[error("partition {partition} moved, but {to} was not told: {why}")]
    Adopt {
        /// The partition.
        partition: Partition,
        /// The destination.
        to: String,
        /// Why.
        why: String,
    },
    /// This host's member has stopped.
    #[error(transparent)]
    Gone(#[from] MemberGone),
}

/// What one partition's handover did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// The partition.
    pub partition: Partition,
    /// Mailboxes copied.
    pub mailboxes: u64,
}

/// Moves `partition` from this host (`member`) to `destination`.
pub async fn hand_over<S: CasBucket, D: Destination>(
    homes: &Assignments<S>,
    member: &MemberHandle,
    partition: Partition,
    destination: &D,
) -> Result<Moved, HandoverError> {
    let (from, to) = (member.node(), destination.node());
    let served = member.served();
    match homes.begin_move(partition, from, to).await {
        Ok(()) => {}
        // A move this host started and did not finish (its answer was
        // lost): go on with it; the copy is idempotent.
        Err(AssignError::Unexpected {
            found:
                Some(Assignment {
                    node,
                    moving_to: Some(moving_to),
                }),
            ..
        }) if node == from && moving_to == to => {}
        // Already moved: only the release is left.
        Err(AssignError::Unexpected {
            found:
                Some(Assignment {
                    node,
                    moving_to: None,
                }),
            ..
        }) if node == to => {
            member.release(partition).await?;
            return Ok(Moved {
                partition,
                mailboxes: 0,
            });
        }
        Err(error) => return Err(error.into()),
    }
    served.set_moving(partition, true);
    if !drained(served, partition).await {
        abort(homes, served, partition, from, to).await;
        return Err(HandoverError::Drain(partition));
    }
    let mailboxes = match destination.copy(partition).await {
        Ok(mailboxes) => mailboxes,
        Err(why) => {
            abort(homes, served, partition, from, to).await;
            return Err(HandoverError::Copy {
                partition,
                to: to.to_owned(),
                why,
            });
        }
    };
    // On failure the partition stays moving and refused here: whether the
    // write happened is the store's to say (see the module doc).
    homes.finish_move(partition, from, to).await?;
    member.release(partition).await?;
    destination
        .adopt(partition)
        .await
        .map_err(|why| HandoverError::Adopt {
            partition,
            to: to.to_owned(),
            why,
        })?;
    Ok(Moved {
        partition,
        mailboxes,
    })
}

/// Waits (bounded) for the deliveries admitted before the partition was
/// marked moving.
async fn drained(served: &Served, partition: Partition) -> bool {
    let deadline = Instant::now() + DRAIN_LIMIT;
    while served.in_flight(partition) > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Gives the partition back to this host after a failed move. If the store
/// does not answer, the partition stays `moving` and refused here; the next
/// start aborts it (see [`crate::member::Member`]).
async fn abort<S: CasBucket>(
    homes: &Assignments<S>,
    served: &Served,
    partition: Partition,
    from: &str,
    to: &str,
) {
    if homes.abort_move(partition, from, to).await.is_ok() {
        served.set_moving(partition, false);
    }
}
