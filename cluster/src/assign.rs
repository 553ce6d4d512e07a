//! Partition homes: which host's disk holds a partition's log.
//!
//! A home changes only by compare-and-set: a free partition is claimed with
//! `create`; a clean handover marks it moving (`begin_move`), and the move is
//! finished or aborted at the revision that marked it. The bucket of homes has
//! no `max_age`: a home outlives its host, because the log it names does
//! (SCALE.md, "Assignment is sticky").

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::partition::Partition;
use crate::store::{CasBucket, CasError, ReadError};

/// The value under `assign.<p>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The home: the node whose log holds the partition.
    pub node: String,
    /// During a clean handover, the node the partition is moving to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_to: Option<String>,
}

/// Why a home did not change.
#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    /// The partition's home is not what the change expects (another host
    /// claimed it, or a move is already under way, or none is).
    #[error("partition {partition} is not in the state this change needs: {found:?}")]
    Unexpected {
        /// The partition.
        partition: Partition,
        /// What the bucket holds now.
        found: Option<Assignment>,
    },
    /// The bucket did not answer or holds something unreadable.
    #[error("the key-value store is unavailable: {0}")]
    Unavailable(String),
}

/// The store key of a partition's home.
pub fn assignment_key(partition: Partition) -> String {
    format!("assign.{partition}")
}

/// Homes of partitions, over one bucket.
#[derive(Debug)]
pub struct Assignments<S> {
    bucket: S,
}

impl<S: CasBucket> Assignments<S> {
    /// Homes kept in `bucket`.
    pub fn new(bucket: S) -> Assignments<S> {
        Assignments { bucket }
    }

    /// The partition's home and the revision that wrote it.
    pub async fn home(
        &self,
        partition: Partition,
    ) -> Result<Option<(Assignment, u64)>, AssignError> {
        let value = self
            .bucket
            .get(&assignment_key(partition))
            .await
            .map_err(|ReadError(why)| AssignError::Unavailable(why))?;
        match value {
            None => Ok(None),
            Some(versioned) => serde_json::from_slice(&versioned.value)
                .map(|assignment| Some((assignment, versioned.revision)))
                .map_err(|error| {
                    AssignError::Unavailable(format!(
                        "unreadable home of partition {partition}: {error}"
                    ))
                }),
        }
    }

    /// Makes `node` the home of a partition nobody has claimed.
    pub async fn claim(&self, partition: Partition, node: &str) -> Result<(), AssignError> {
        let value = encode(&Assignment {
            node: node.to_owned(),
            moving_to: None,
        });
        match self.bucket.create(&assignment_key(partition), value).await {
            Ok(_) => Ok(()),
            Err(error) => Err(self.refused(partition, error).await),
        }
    }

    /// Marks a partition whose home is `from` as moving to `to`.
    pub async fn begin_move(
        &self,
        partition: Partition,
        from: &str,
        to: &str,
    ) -> Result<(), AssignError> {
        self.change(partition, &home(from, None), &home(from, Some(to)))
            .await
    }

    /// Ends a move: `to` becomes the home.
    pub async fn finish_move(
        &self,
        partition: Partition,
        from: &str,
        to: &str,
    ) -> Result<(), AssignError> {
        self.change(partition, &home(from, Some(to)), &home(to, None))
            .await
    }

    /// Gives up a move: `from` stays the home.
    pub async fn abort_move(
        &self,
        partition: Partition,
        from: &str,
        to: &str,
    ) -> Result<(), AssignError> {
        self.change(partition, &home(from, Some(to)), &home(from, None))
            .await
    }

    /// Writes `next` only if the bucket holds `expected`, at the revision
    /// read, so a concurrent change makes this one fail instead of being lost.
    async fn change(
        &self,
        partition: Partition,
        expected: &Assignment,
        next: &Assignment,
    ) -> Result<(), AssignError> {
        let current = self.home(partition).await?;
        let revision = match current {
            Some((found, revision)) if found == *expected => revision,
            other => {
                return Err(AssignError::Unexpected {
                    partition,
                    found: other.map(|(found, _)| found),
                })
            }
        };
        match self
            .bucket
            .update(&assignment_key(partition), encode(next), revision)
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => Err(self.refused(partition, error).await),
        }
    }

    async fn refused(&self, partition: Partition, error: CasError) -> AssignError {
        match error {
            CasError::Conflict => match self.home(partition).await {
                Ok(found) => AssignError::Unexpected {
                    partition,
                    found: found.map(|(found, _)| found),
                },
                Err(error) => error,
            },
            CasError::Unavailable(why) => AssignError::Unavailable(why),
        }
    }
}

/// `node` as the home, moving to `moving_to` if given.
fn home(node: &str, moving_to: Option<&str>) -> Assignment {
    Assignment {
        node: node.to_owned(),
        moving_to: moving_to.map(str::to_owned),
    }
}

fn encode(assignment: &Assignment) -> Bytes {
    // A struct of strings always serializes.
    Bytes::from(serde_json::to_vec(assignment).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryBucket;
    use std::time::{Duration, Instant};

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .map(|runtime| runtime.block_on(future))
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn homes() -> Assignments<MemoryBucket> {
        Assignments::new(MemoryBucket::new(Duration::MAX, Instant::now()))
    }

    fn home_of(assignments: &Assignments<MemoryBucket>, p: Partition) -> Option<Assignment> {
        block_on(assignments.home(p))
            .ok()
            .flatten()
            .map(|(assignment, _)| assignment)
    }

    #[test]
    fn a_partition_is_claimed_once() {
        let assignments = homes();
        let p = Partition(5);
        assert!(block_on(assignments.claim(p, "a")).is_ok());
        let second = block_on(assignments.claim(p, "b"));
        assert!(
            matches!(second, Err(AssignError::Unexpected { found: Some(Assignment { ref node, .. }), .. }) if node == "a"),
            "{second:?}"
        );
        assert_eq!(
            home_of(&assignments, p).map(|home| home.node).as_deref(),
            Some("a")
        );
    }

    #[test]
    fn a_move_goes_from_home_through_moving_to_the_new_home() {
        let assignments = homes();
        let p = Partition(2);
        assert!(block_on(assignments.claim(p, "a")).is_ok());
        // Only the home can start a move, and only one move at a time.
        assert!(block_on(assignments.begin_move(p, "b", "c")).is_err());
        assert!(block_on(assignments.begin_move(p, "a", "b")).is_ok());
        assert!(block_on(assignments.begin_move(p, "a", "c")).is_err());
        assert_eq!(
            home_of(&assignments, p),
            Some(Assignment {
                node: "a".into(),
                moving_to: Some("b".into())
            })
        );
        // Finishing a move that is not the one under way changes nothing.
        assert!(block_on(assignments.finish_move(p, "a", "c")).is_err());
        assert!(block_on(assignments.finish_move(p, "a", "b")).is_ok());
        assert_eq!(
            home_of(&assignments, p),
            Some(Assignment {
                node: "b".into(),
                moving_to: None
            })
        );
    }

    #[test]
    fn an_aborted_move_leaves_the_old_home() {
        let assignments = homes();
        let p = Partition(3);
        assert!(block_on(assignments.claim(p, "a")).is_ok());
        assert!(block_on(assignments.begin_move(p, "a", "b")).is_ok());
        assert!(block_on(assignments.abort_move(p, "a", "b")).is_ok());
        assert_eq!(
            home_of(&assignments, p),
            Some(Assignment {
                node: "a".into(),
                moving_to: None
            })
        );
        assert!(block_on(assignments.finish_move(p, "a", "b")).is_err());
    }
}
