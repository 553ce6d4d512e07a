//! The routing layer in front of `Engine::deliver`, which every ingest path
//! (SMTP, HTTP send, the SES webhook) calls: [`deliver`].
//!
//! Without `[cluster]` it is `Engine::deliver_held`, one branch on a `None`
//! and nothing else. With it, the recipients are split by the partition of
//! their mailbox: partitions this host serves go to the local engine, each
//! other owner gets one signed `POST /internal/v1/deliver`, all at once, and
//! the delivery succeeds only when every part did. Every part carries the
//! same delivery key, remembered on each host for the retry window, so a
//! sender's retry after a partial failure or a lost answer stores nothing
//! twice.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uncorreo_cluster::accounts::AccountsReplica;
use uncorreo_cluster::directory::{Directory, Owner};
use uncorreo_cluster::events::Events;
use uncorreo_cluster::hop::HopSecret;
use uncorreo_cluster::member::{Admitted, NotAdmitted, Served};
use uncorreo_cluster::partition::{partition_of, Partition, PartitionCount};
use uncorreo_engine::campaign::CampaignId;
use uncorreo_engine::{
    DeliverError, Delivery, DeliveryOutcome, Engine, MessageId, QuotaHolds, Recipient,
    ResolveError, UserId,
};

use crate::client::{post, post_bounded, HopError, Replay};
use crate::wire::{
    encode_deliver, rcpt_text, DeliverAnswer, DeliverEnvelope, Refusal, ResolveAnswer,
    ResolveRequest, DELIVER_PATH, RESOLVE_PATH,
};
use crate::wire::{
    frame, unframe, HttpAnswerHead, HttpEnvelope, MemberAnswerHead, MemberEnvelope, HTTP_PATH,
    MEMBER_PATH,
};
use uncorreo_cluster::directory::Homes;

/// How long one member of a listing that spans hosts may take to answer
/// (at most the hop's timeout): a member that does not answer makes the
/// whole listing a `503`, so a hung host costs a client this long, not
/// the hop's 30 s.
pub const MEMBER_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a mailbox is served from, seen from this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Here: today's path.
    Local,
    /// By another live host.
    Remote(Owner),
    /// By nobody right now (its owner is down, or NATS is unreachable):
    /// a temporary error, never an ack.
    Unavailable,
}

/// The owner could not be asked (down, timed out, or no longer the owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the mailbox's owner is unavailable")]
pub struct OwnerUnavailable;

/// This host's view of the cluster, for the request paths.
pub struct Cluster {
    engine: Engine,
    node: String,
    secret: HopSecret,
    served: Arc<Served>,
    directory: Arc<Directory>,
    partitions: PartitionCount,
    timeout: Duration,
    events: Option<Arc<Events>>,
    accounts: Option<Arc<AccountsReplica>>,
}

/// What [`Cluster::new`] needs.
#[derive(Debug)]
pub struct ClusterParts {
    /// This host's node id.
    pub node: String,
    /// The cluster secret.
    pub secret: HopSecret,
    /// Which partitions this host serves.
    pub served: Arc<Served>,
    /// Who serves the others.
    pub directory: Arc<Directory>,
    /// The cluster's partition count.
    pub partitions: PartitionCount,
    /// How long a hop request may take (under the SMTP DATA timeout).
    pub timeout: Duration,
    /// Events across hosts (SCALE.md, "Real time"); `None`: waiters for
    /// mailboxes other hosts own are refused.
    pub events: Option<Arc<Events>>,
    /// The accounts replica, which names each campaign's home
    /// (`campaign.<id>`); `None`: a campaign's mail is taken only by the
    /// host that made it.
    pub accounts: Option<Arc<AccountsReplica>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// The routing of host `parts.node` over `engine`.
    pub fn new(engine: Engine, parts: ClusterParts) -> Cluster {
        Cluster {
            engine,
            node: parts.node,
            secret: parts.secret,
            served: parts.served,
            directory: parts.directory,
            partitions: parts.partitions,
            timeout: parts.timeout,
            events: parts.events,
            accounts: parts.accounts,
        }
    }

    /// Events across hosts, for waiters on mailboxes other hosts own.
    pub fn events(&self) -> Option<&Arc<Events>> {
        self.events.as_ref()
    }

    /// How long one hop request may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The partition of a mailbox address.
    pub fn partition(&self, address: &str) -> Partition {
        partition_of(address, self.partitions)
    }

    /// Whether a mailbox at `address` counts in this host's share of its
    /// owner's `max_mailboxes` (the cluster's count, `uncorreo_api::counts`):
    /// its partition is served here, or is being moved away from here. The
    /// copies a handover left behind are not counted, so a moved mailbox
    /// counts on one host once both have recounted.
    pub fn counts_here(&self, address: &str) -> bool {
        let partition = self.partition(address);
        self.served.serves(partition, Instant::now()) || self.served.moving(partition)
    }

    /// A digest of the partitions whose mailboxes [`Self::counts_here`]
    /// counts now: when it changes (a partition moved here or away), the
    /// counts of this host are recounted. 1,024 atomic loads.
    pub fn counted_partitions_digest(&self) -> u64 {
        let now = Instant::now();
        (0..self.partitions.get())
            .filter(|&p| self.served.serves(Partition(p), now) || self.served.moving(Partition(p)))
            .fold(0xcbf2_9ce4_8422_2325u64, |h, p| {
                (h ^ u64::from(p)).wrapping_mul(0x0100_0000_01b3)
            })
    }

    /// Where `rcpt` (as written, `box+tag@domain`) is served. A campaign
    /// lives on the host that made it: its address (`…@c-<id>.<domain>`)
    /// goes to the home its `campaign.<id>` record names, like a mailbox
    /// to its owner; one no host made is refused here (`550`).
    pub async fn place(&self, rcpt: &str) -> Placement {
        if self.engine.campaign_for(rcpt).is_some() {
            return Placement::Local;
        }
        if let Some(id) = self.campaign_named(rcpt) {
            return self.place_campaign(id).await;
        }
        self.place_partition(self.partition(rcpt)).await
    }

    fn campaign_named(&self, rcpt: &str) -> Option<CampaignId> {
        campaign_named(&self.engine, rcpt)
    }

    /// Where campaign `id`, which this host does not keep, lives: its home
    /// in the accounts replica (no round trip), reached over the hop. A
    /// campaign this replica does not know may have been made a moment
    /// ago elsewhere: it catches up once (at most `CATCH_UP_LIMIT`) before
    /// the local `550`, as a key check does before its `401`.
    async fn place_campaign(&self, id: CampaignId) -> Placement {
        let Some(accounts) = &self.accounts else {
            return Placement::Local;
        };
        let mut home = accounts.campaign_home(id.0, self.engine.now_ms());
        if home.is_none() {
            // Without NATS the replica stays as it is.
            let _ = accounts.catch_up().await;
            home = accounts.campaign_home(id.0, self.engine.now_ms());
        }
        match home {
            Some(node) if node != self.node => match self.directory.hop_of(&node).await {
                Ok(Some(hop)) => Placement::Remote(Owner { node, hop }),
                _ => Placement::Unavailable,
            },
            // Ours but gone, or nobody's: the local engine refuses it.
            _ => Placement::Local,
        }
    }

    /// The partition numbered `index`, if the cluster has it.
    pub fn partition_numbered(&self, index: u16) -> Option<Partition> {
        (index < self.partitions.get()).then_some(Partition(index))
    }

    /// Where `partition` is served from, seen from this host.
    pub async fn place_partition(&self, partition: Partition) -> Placement {
        if self.served.serves(partition, Instant::now()) {
            return Placement::Local;
        }
        match self.directory.owner(partition).await {
            Ok(Some(owner)) if owner.node != self.node => Placement::Remote(owner),
            _ => Placement::Unavailable,
        }
    }

    /// Admits a request that stores or changes something of `address`'s
    /// mailbox here (a delivery, a creation, a deletion): hold the guard
    /// until it is durable. A handover marks the partition moving and then
    /// waits for every guard out before it copies the partition, so nothing
    /// admitted is stored behind the copy's back; once it is moving, this
    /// refuses (the caller answers `451` / `503`). A campaign address is
    /// not a mailbox and never moves: `None`.
    pub fn admit(&self, address: &str) -> Result<Option<Admitted<'_>>, NotAdmitted> {
        if self.engine.campaign_for(address).is_some() || self.campaign_named(address).is_some() {
            return Ok(None);
        }
        self.served
            .admit(self.partition(address), Instant::now())
            .map(Some)
    }

    /// [`Cluster::admit`] for a request that names a partition, not an
    /// address (a Mailpit request routed by message id or token).
    pub fn admit_partition(&self, partition: Partition) -> Result<Admitted<'_>, NotAdmitted> {
        self.served.admit(partition, Instant::now())
    }

    /// The owner's [`Engine::resolve`] of `rcpt` (SMTP RCPT at this host),
    /// so a `550`/`452` is decided where the mailbox lives.
    pub async fn resolve_remote(
        &self,
        rcpt: &str,
        owner: &Owner,
    ) -> Result<Result<(), ResolveError>, OwnerUnavailable> {
        self.resolve_remote_as(rcpt, owner, None)
            .await
            .map(|r| r.map_err(ResolveError::from))
    }

    /// [`Self::resolve_remote`] for a sender that may send only to its own
    /// mailboxes (an `AUTH` session in `keys` mode): the owner, which knows
    /// the mailbox's owner, also answers [`Refusal::NotYours`].
    pub async fn resolve_remote_as(
        &self,
        rcpt: &str,
        owner: &Owner,
        sender: Option<UserId>,
    ) -> Result<Result<(), Refusal>, OwnerUnavailable> {
        let request = ResolveRequest {
            rcpt: rcpt.to_owned(),
            node: owner.node.clone(),
            sender_user: sender.map(|u| u.0),
        };
        let body = serde_json::to_vec(&request).unwrap_or_default();
        let answer = post(
            &owner.hop,
            &self.secret,
            RESOLVE_PATH,
            body,
            self.timeout,
            Replay::Idempotent,
        )
        .await;
        let result = match answer {
            Ok((200, body)) => serde_json::from_slice::<ResolveAnswer>(&body)
                .map(|a| a.refused.map_or(Ok(()), Err))
                .map_err(|_| OwnerUnavailable),
            Ok(_) | Err(_) => Err(OwnerUnavailable),
        };
        count("resolve", result.is_ok());
        if result.is_err() {
            self.directory.forget(self.partition(rcpt));
        }
        result
    }

    async fn deliver(
        &self,
        delivery: Delivery,
        holds: QuotaHolds,
    ) -> Result<DeliveryOutcome, DeliverError> {
        let mut local = Vec::new();
        // Held from the decision to store here until the store is durable.
        let mut admitted = Vec::new();
        let mut remote: Vec<(Owner, Vec<Recipient>)> = Vec::new();
        for rcpt in &delivery.recipients {
            let text = rcpt_text(rcpt);
            match self.place(&text).await {
                Placement::Local => {
                    // A move that began since `place` looked: the sender
                    // retries, and by then the new home takes it.
                    admitted.push(self.admit(&text).map_err(|_| DeliverError::Saturated)?);
                    local.push(rcpt.clone());
                }
                Placement::Remote(owner) => match remote.iter_mut().find(|(o, _)| *o == owner) {
                    Some((_, rcpts)) => rcpts.push(rcpt.clone()),
                    None => remote.push((owner, vec![rcpt.clone()])),
                },
                // Nothing is stored when one part cannot be: the sender
                // retries the whole message.
                Placement::Unavailable => return Err(DeliverError::Saturated),
            }
        }
        if remote.is_empty() {
            let stored = self.engine.deliver_held(delivery, holds).await;
            drop(admitted);
            return stored;
        }
        let key = Engine::delivery_key(&delivery);
        let local_part = async {
            if local.is_empty() {
                return Ok(DeliveryOutcome::Delivered {
                    stored: Vec::new(),
                    refused: Vec::new(),
                });
            }
            let part = Delivery {
                raw: delivery.raw.clone(),
                envelope_from: delivery.envelope_from.clone(),
                recipients: local,
                dedupe_key: None,
            };
            self.engine.deliver_forwarded(part, holds, key).await
        };
        let remote_parts = futures_util::future::join_all(
            remote
                .iter()
                .map(|(owner, rcpts)| self.forward(owner, rcpts, &delivery, key)),
        );
        let (local_result, remote_results) = tokio::join!(local_part, remote_parts);
        drop(admitted);
        let mut stored = Vec::new();
        let mut refused = Vec::new();
        let mut failure: Option<DeliverError> = None;
        for result in std::iter::once(local_result).chain(remote_results) {
            match result {
                Ok(DeliveryOutcome::Delivered {
                    stored: s,
                    refused: r,
                }) => {
                    stored.extend(s);
                    refused.extend(r);
                }
                Ok(DeliveryOutcome::Duplicate) => {}
                Err(error) => {
                    failure = Some(match (failure, error) {
                        (Some(e @ DeliverError::TooLarge { .. }), _)
                        | (_, e @ DeliverError::TooLarge { .. }) => e,
                        (Some(DeliverError::DiskFull), _) | (_, DeliverError::DiskFull) => {
                            DeliverError::DiskFull
                        }
                        (_, e) => e,
                    });
                }
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(DeliveryOutcome::Delivered { stored, refused }),
        }
    }

    /// One owner's part: answered only after the owner's fdatasync.
    async fn forward(
        &self,
        owner: &Owner,
        rcpts: &[Recipient],
        delivery: &Delivery,
        key: [u8; 32],
    ) -> Result<DeliveryOutcome, DeliverError> {
        let envelope = DeliverEnvelope {
            from: delivery.envelope_from.clone(),
            rcpts: rcpts.iter().map(rcpt_text).collect(),
            key: hex::encode(key),
            node: owner.node.clone(),
        };
        let body = encode_deliver(&envelope, &delivery.raw);
        // Not replayed once written: see `client`'s module doc.
        let answer = post(
            &owner.hop,
            &self.secret,
            DELIVER_PATH,
            body,
            self.timeout,
            Replay::Unsent,
        )
        .await;
        let result = match answer {
            Ok((200, body)) => parse_answer(&body).ok_or(DeliverError::Saturated),
            Ok((413, _)) => Err(DeliverError::TooLarge {
                limit: self.engine.config().max_message_bytes,
            }),
            Ok((507, _)) => Err(DeliverError::DiskFull),
            Ok((status, _)) => {
                tracing::warn!(owner = %owner.node, status, "the owner refused a forwarded delivery");
                Err(DeliverError::Saturated)
            }
            Err(error @ (HopError::Failed { .. } | HopError::Timeout(_))) => {
                tracing::warn!(owner = %owner.node, %error, "a forwarded delivery got no answer");
                Err(DeliverError::Saturated)
            }
        };
        count("deliver", result.is_ok());
        if result.is_err() {
            for rcpt in rcpts {
                self.directory
                    .forget(self.partition(&rcpt.address.to_string()));
            }
        }
        result
    }
}

impl Cluster {
    /// Runs a public API request on `owner` (see [`HttpEnvelope`]); the
    /// owner's status, headers and body, or [`OwnerUnavailable`].
    pub async fn proxy(
        &self,
        owner: &Owner,
        envelope: HttpEnvelope,
        body: &[u8],
        max_answer: usize,
    ) -> Result<(HttpAnswerHead, bytes::Bytes), OwnerUnavailable> {
        self.proxy_within(owner, envelope, body, max_answer, self.timeout)
            .await
    }

    /// [`Cluster::proxy`] with its own time limit (a Mailpit search that
    /// waits on the owner for a first match).
    pub async fn proxy_within(
        &self,
        owner: &Owner,
        mut envelope: HttpEnvelope,
        body: &[u8],
        max_answer: usize,
        timeout: Duration,
    ) -> Result<(HttpAnswerHead, bytes::Bytes), OwnerUnavailable> {
        envelope.node = owner.node.clone();
        let partition = envelope
            .partition
            .and_then(|index| self.partition_numbered(index))
            .unwrap_or_else(|| self.partition(&envelope.address));
        let request = frame(&envelope, body);
        let answer = post_bounded(
            &owner.hop,
            &self.secret,
            HTTP_PATH,
            request,
            timeout,
            max_answer.saturating_add(crate::server::ENVELOPE_ROOM),
            Replay::Unsent,
        )
        .await;
        let result = match answer {
            Ok((200, body)) => unframe::<HttpAnswerHead>(body).ok_or(OwnerUnavailable),
            _ => Err(OwnerUnavailable),
        };
        count("http", result.is_ok());
        if result.is_err() {
            self.directory.forget(partition);
        }
        result
    }
}

impl Cluster {
    /// This host's node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// This host's part of a listing that spans hosts: what it serves now.
    pub fn member_only(&self) -> crate::server::MemberOnly {
        crate::server::MemberOnly::now(&self.served, self.partitions)
    }

    /// The cluster's partition count.
    pub fn partition_count(&self) -> PartitionCount {
        self.partitions
    }

    /// Every partition's home and every host's hop address (for a listing
    /// that asks every home), or [`OwnerUnavailable`] when NATS does not
    /// answer within the member timeout.
    pub async fn homes(&self) -> Result<Homes, OwnerUnavailable> {
        self.directory
            .homes(self.member_timeout())
            .await
            .map_err(|_| OwnerUnavailable)
    }

    /// [`MEMBER_TIMEOUT`], at most the hop's own timeout.
    pub fn member_timeout(&self) -> Duration {
        MEMBER_TIMEOUT.min(self.timeout)
    }

    /// Runs a member-only read on `node` (hop at `hop`); its answer head
    /// (with the partitions it covered) and body, or [`OwnerUnavailable`]
    /// when it did not answer within [`Cluster::member_timeout`].
    pub async fn ask_member(
        &self,
        node: &str,
        hop: &str,
        mut envelope: MemberEnvelope,
        max_answer: usize,
    ) -> Result<(MemberAnswerHead, bytes::Bytes), OwnerUnavailable> {
        envelope.node = node.to_owned();
        let request = serde_json::to_vec(&envelope).unwrap_or_default();
        let answer = post_bounded(
            hop,
            &self.secret,
            MEMBER_PATH,
            request,
            self.member_timeout(),
            max_answer.saturating_add(crate::server::ENVELOPE_ROOM),
            Replay::Idempotent,
        )
        .await;
        let result = match answer {
            Ok((200, body)) => unframe::<MemberAnswerHead>(body).ok_or(OwnerUnavailable),
            _ => Err(OwnerUnavailable),
        };
        count("member", result.is_ok());
        result
    }
}

/// The campaign a campaign address names (`…@c-<id>.<served domain>`),
/// live or not: such an address is never a mailbox, so it is answered
/// by the campaign's home, or refused by the host that has it.
pub(crate) fn campaign_named(engine: &Engine, rcpt: &str) -> Option<CampaignId> {
    let (_, domain) = rcpt.rsplit_once('@')?;
    let domain = domain.to_ascii_lowercase();
    let (hex, served) = domain.strip_prefix("c-")?.split_once('.')?;
    let id = CampaignId::parse(hex)?;
    engine.is_local_domain(served).then_some(id)
}

fn parse_answer(body: &[u8]) -> Option<DeliveryOutcome> {
    let answer = serde_json::from_slice::<DeliverAnswer>(body).ok()?;
    let stored = answer
        .stored
        .iter()
        .map(|id| MessageId::from_str(id).ok())
        .collect::<Option<Vec<_>>>()?;
    let refused = answer
        .refused
        .into_iter()
        .map(|(rcpt, why)| {
            Recipient::parse(&rcpt)
                .ok()
                .map(|r| (r, ResolveError::from(why)))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(DeliveryOutcome::Delivered { stored, refused })
}

fn count(kind: &'static str, ok: bool) {
    let outcome = if ok { "ok" } else { "unavailable" };
    metrics::counter!(uncorreo_metric_names::HOP_FORWARDED_TOTAL, "kind" => kind, "outcome" => outcome)
        .increment(1);
}

/// THE delivery entry point of every ingest path: `Engine::deliver_held`
/// on a single host (no `[cluster]`: exactly today's path), else routed by
/// owner.
pub async fn deliver(
    engine: &Engine,
    cluster: Option<&Cluster>,
    delivery: Delivery,
    holds: QuotaHolds,
) -> Result<DeliveryOutcome, DeliverError> {
    match cluster {
        None => engine.deliver_held(delivery, holds).await,
        Some(cluster) => cluster.deliver(delivery, holds).await,
    }
}
