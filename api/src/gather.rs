//! With `[cluster]`: a listing that spans hosts (SCALE.md, "Reads"). The
//! accepting host asks every node named as a home (one that stopped too:
//! it must answer, or its mailboxes would vanish from the list silently)
//! for a member-only read over the hop (`POST /internal/v1/member`), with
//! the caller's credential, which each member checks, all at once, each
//! within `uncorreo_hop::route::MEMBER_TIMEOUT`. Each member reads only
//! the partitions it serves as the read starts ([`MemberOnly`]), and says
//! which; every home partition must be covered by exactly one part
//! (this host's own part included), else the whole answer is `503` with
//! `Retry-After`, never a partial list.
//!
//! Used by `GET /api/v1/mailboxes` for an API key (so MCP's
//! `list_mailboxes`, which runs that route) and the Mailpit API's message
//! list and search for an API-key instance.

use axum::http::request::Parts;
use bytes::Bytes;
use uncorreo_hop::server::MemberOnly;
use uncorreo_hop::wire::MemberEnvelope;
use uncorreo_hop::Cluster;

use crate::problem::{Kind, Problem};
use crate::AppState;

/// What the other homes answered (their bodies, each a `200`), and what
/// this host's own part covers.
#[derive(Debug)]
pub struct Gathered {
    /// This host's part: the partitions it serves now.
    pub local: MemberOnly,
    /// Every other home's answer body.
    pub remote: Vec<Bytes>,
}

/// No answer from a home, or the homes do not cover every partition once.
pub fn unavailable() -> Problem {
    Problem::new(
        Kind::Unavailable,
        "a host that keeps some of these mailboxes is unavailable; retry shortly",
    )
    .retry_after(1)
}

/// Keeps of `mailboxes` those in the partitions `part` covers (a member's
/// part of a gather, or this host's own): a copy a handover left here is
/// read where it lives now, never twice.
pub fn keep_covered(
    part: &MemberOnly,
    cluster: &Cluster,
    mailboxes: &mut Vec<uncorreo_engine::MailboxInfo>,
) {
    mailboxes.retain(|m| part.covers(cluster.partition(&m.address.to_string())));
}

/// Whether this request is one host's part of a listing that spans hosts
/// (then it reads only what [`MemberOnly`] covers).
pub fn member_only(parts: &Parts) -> Option<&MemberOnly> {
    parts.extensions.get::<MemberOnly>()
}

/// Asks every other home for `path_and_query` (one of
/// `uncorreo_hop::wire::MEMBER_READS`), with the credential in `parts`.
pub async fn gather(
    state: &AppState,
    cluster: &Cluster,
    parts: &Parts,
    path_and_query: &str,
) -> Result<Gathered, Problem> {
    let homes = cluster.homes().await.map_err(|_| unavailable())?;
    let local = cluster.member_only();
    let envelope = MemberEnvelope {
        path: path_and_query.to_owned(),
        headers: crate::cluster::end_to_end_headers(&parts.headers),
        node: String::new(),
        client: crate::auth::client_ip(state, parts),
    };
    let max_answer = state
        .engine
        .config()
        .max_message_bytes
        .saturating_add(1 << 20);
    let mut asks = Vec::new();
    for node in homes.nodes() {
        if node == cluster.node() {
            continue;
        }
        // A home that never published where it listens cannot answer.
        let hop = homes.hop(node).ok_or_else(unavailable)?;
        asks.push(cluster.ask_member(node, hop, envelope.clone(), max_answer));
    }
    let answers = futures_util::future::join_all(asks).await;
    let count = usize::from(cluster.partition_count().get());
    let mut covered = vec![0u32; count];
    for p in local.partitions() {
        covered[usize::from(p)] += 1;
    }
    let mut remote = Vec::with_capacity(answers.len());
    for answer in answers {
        let (head, body) = answer.map_err(|_| unavailable())?;
        if head.status != 200 {
            return Err(unavailable());
        }
        for p in head.served {
            if let Some(slot) = covered.get_mut(usize::from(p)) {
                *slot += 1;
            }
        }
        remote.push(body);
    }
    // Each home partition read exactly once: none missed (its home lost
    // the lease, or a move has not been taken up yet), none twice.
    let once = homes
        .partitions
        .iter()
        .all(|(p, _)| covered.get(usize::from(p.0)) == Some(&1));
    if !once {
        return Err(unavailable());
    }
    Ok(Gathered { local, remote })
}
