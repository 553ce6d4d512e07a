//! The source's side of a clean handover over the hop: a
//! [`Destination`] that sends a moving partition's mailboxes to another
//! host (`POST /internal/v1/handover/copy`, one chunk of a mailbox per
//! request, each answered once durable there) and tells it to serve the
//! partition after the flip (`POST /internal/v1/handover/adopt`).
//!
//! Each request is bounded: a mailbox goes in chunks of at most the
//! message limit of records (`ExportChunk`), so a request fits the
//! destination's hop body limit (the message limit plus the envelope's
//! room) whatever the mailbox's size; a single message bigger than that
//! was refused at delivery. A chunk is imported idempotently, so a request
//! that failed on a kept-alive connection is sent again, and so is a whole
//! move that was aborted and started over.

use std::time::Duration;

use uncorreo_cluster::handover::Destination;
use uncorreo_cluster::hop::HopSecret;
use uncorreo_cluster::partition::{partition_of, Partition, PartitionCount};
use uncorreo_engine::{Engine, LookupError};

use crate::client::{post, HopError, Replay};
use crate::wire::{frame, AdoptRequest, CopyHead, NodeAnswer, ADOPT_PATH, COPY_PATH, NODE_PATH};

/// Where a partition moves to over the hop.
#[derive(Clone)]
pub struct HopDestination {
    /// The source's engine (what is exported).
    pub from: Engine,
    /// The destination's node id.
    pub node: String,
    /// Its hop address.
    pub hop: String,
    /// The cluster secret.
    pub secret: HopSecret,
    /// The cluster's partition count.
    pub partitions: PartitionCount,
    /// How long one request may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for HopDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HopDestination")
            .field("node", &self.node)
            .field("hop", &self.hop)
            .finish_non_exhaustive()
    }
}

/// Why a destination is not the one named, or does not answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer.
    #[error(transparent)]
    Hop(#[from] HopError),
    /// It answered as another node, or not as a hop.
    #[error("{hop} answers as {answered:?}, not as {expected}")]
    WrongNode {
        /// The address asked.
        hop: String,
        /// The node meant.
        expected: String,
        /// What answered (`None`: not a hop's answer).
        answered: Option<String>,
    },
}

impl HopDestination {
    /// Checks that the destination is up and is the node named.
    pub async fn probe(&self) -> Result<(), ProbeError> {
        let (status, body) = post(
            &self.hop,
            &self.secret,
            NODE_PATH,
            b"{}".to_vec(),
            self.timeout,
            Replay::Idempotent,
        )
        .await?;
        let answered = (status == 200)
            .then(|| serde_json::from_slice::<NodeAnswer>(&body).ok())
            .flatten()
            .map(|a| a.node);
        if answered.as_deref() == Some(self.node.as_str()) {
            return Ok(());
        }
        Err(ProbeError::WrongNode {
            hop: self.hop.clone(),
            expected: self.node.clone(),
            answered,
        })
    }

    async fn send(&self, path: &str, body: Vec<u8>) -> Result<(), String> {
        match post(
            &self.hop,
            &self.secret,
            path,
            body,
            self.timeout,
            Replay::Idempotent,
        )
        .await
        {
            Ok((200, _)) => Ok(()),
            Ok((status, body)) => Err(format!(
                "{} answered {status}: {}",
                self.node,
                String::from_utf8_lossy(&body)
            )),
            Err(error) => Err(error.to_string()),
        }
    }
}

impl Destination for HopDestination {
    fn node(&self) -> &str {
        &self.node
    }

    async fn copy(&self, partition: Partition) -> Result<u64, String> {
        let partitions = self.partitions;
        let ids = self
            .from
            .mailboxes_where(|address| partition_of(&address.to_string(), partitions) == partition);
        let max_chunk = self.from.config().max_message_bytes;
        let mut copied = 0;
        for id in ids {
            let export = match self.from.export_mailbox(id) {
                Ok(export) => export,
                // Expired or deleted since it was listed: nothing to move.
                Err(LookupError::NotFound) => continue,
                Err(error) => return Err(error.to_string()),
            };
            let head = CopyHead {
                node: self.node.clone(),
                partition: partition.0,
            };
            for chunk in export.into_chunks(max_chunk) {
                self.send(COPY_PATH, frame(&head, &chunk.encode())).await?;
            }
            copied += 1;
        }
        Ok(copied)
    }

    async fn adopt(&self, partition: Partition) -> Result<(), String> {
        let request = AdoptRequest {
            node: self.node.clone(),
            partition: partition.0,
        };
        let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        self.send(ADOPT_PATH, body).await
    }
}
