//! `max_mailboxes` across a cluster (SCALE.md, "Accounts", "Mailbox counts
//! across hosts").
//!
//! On one host the engine is the count ([`crate::quota`]) and nothing here
//! runs. In a cluster a user's mailboxes live on many hosts, so each host
//! keeps its own count of each user's live mailboxes in the shared accounts
//! store ([`MailboxCounter`]), and a create checks the sum:
//!
//! 1. the local reservation ([`crate::quota::Quotas::reserve`]) holds the
//!    slot on this host, so this host's count is exact under its lock;
//! 2. [`claim`] writes this host's count including the reservation, by
//!    compare-and-set on the user's one record, only if the sum over every
//!    host stays within the plan (else `403 mailbox-limit`);
//! 3. the engine creates the mailbox; a failure writes the count again
//!    without it ([`recount`]).
//!
//! Why the count cannot drift: a host never adds or subtracts, it writes
//! what its engine holds now (live mailboxes of the partitions it serves,
//! its campaigns, and its creations in flight), so any write repairs every
//! earlier mistake of that host. A crash between step 2 and the create
//! leaves one slot too many until that host's next write for the user:
//! [`run`] recounts every user at start, whenever a mailbox ends here
//! (deleted, expired), when the partitions it serves change (a handover)
//! and every [`RECOUNT_EVERY`]. A host that never comes
//! back cannot hold slots either: each count carries when its last mailbox
//! expires, and past that nobody counts it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uncorreo_engine::{Address, UserId};

use crate::accounts::MailboxCounter;
use crate::problem::{Kind, Problem};
use crate::AppState;

/// How often a host recounts every user even when nothing woke it.
pub const RECOUNT_EVERY: Duration = Duration::from_secs(30);

/// The answer to a create over the plan's `max_mailboxes`.
pub fn over_limit(max: u32, what: &str) -> Problem {
    Problem::new(
        Kind::MailboxLimit,
        format!("this plan allows {max} live {what}; delete one or wait for one to expire"),
    )
}

/// This host's count of `user`: what [`crate::quota::Quotas::used`] sees
/// of the partitions this host serves (all of them without a hop).
fn here(state: &AppState, user: UserId) -> (u32, u64) {
    let counted = |address: &Address| {
        state
            .cluster
            .as_ref()
            .is_none_or(|c| c.counts_here(&address.to_string()))
    };
    state.quotas().used(&state.engine, user, counted)
}

/// Step 2 above, after the local reservation of `user`'s new mailbox is
/// held and told when it would expire: this host's count including it,
/// refused with `403 mailbox-limit` when the cluster's sum would pass
/// `max`, `503` when the store cannot be asked. One host: nothing.
pub async fn claim(state: &AppState, user: UserId, max: u32, what: &str) -> Result<(), Problem> {
    let Some(counter) = state.accounts.mailbox_counter() else {
        return Ok(());
    };
    let (n, until) = here(state, user);
    match counter.set_here(user, n, until, Some(max)).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(over_limit(max, what)),
        Err(e) => Err(e.into()),
    }
}

/// Writes this host's count of `user` again (after a mailbox of theirs
/// ended here, or a creation failed). Best effort: a failure is mended by
/// the next recount ([`run`]). One host: nothing.
pub async fn recount(state: &AppState, user: UserId) {
    let Some(counter) = state.accounts.mailbox_counter() else {
        return;
    };
    write(state, counter, user).await;
}

async fn write(state: &AppState, counter: &dyn MailboxCounter, user: UserId) {
    let (n, until) = here(state, user);
    if counter.here(user) == (n, if n == 0 { 0 } else { until }) {
        return;
    }
    if let Err(error) = counter.set_here(user, n, until, None).await {
        tracing::warn!(%error, user = user.0, "a mailbox count was not written; the next recount retries");
    }
}

/// Every user with a count here or a mailbox here, written again where
/// it differs from what this host holds.
pub async fn recount_all(state: &AppState) {
    let Some(counter) = state.accounts.mailbox_counter() else {
        return;
    };
    let mut users: Vec<UserId> = counter.counted_here();
    users.extend(state.accounts.users().into_iter().map(|u| u.id));
    users.sort_by_key(|u| u.0);
    users.dedup();
    for user in users {
        write(state, counter, user).await;
    }
}

/// How often the partitions this host counts are looked at: a handover
/// that moved some here or away is recounted within this.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Recounts at start, on every `wake` (a mailbox ended here), when the
/// partitions this host serves change (a handover, a lease taken or lost)
/// and every [`RECOUNT_EVERY`], until `shutdown`. Only in a cluster.
pub async fn run(state: AppState, wake: Arc<Notify>, shutdown: CancellationToken) {
    if state.accounts.mailbox_counter().is_none() {
        return;
    }
    let digest = || {
        state
            .cluster
            .as_ref()
            .map(|c| c.counted_partitions_digest())
    };
    loop {
        let counted = digest();
        recount_all(&state).await;
        let due = tokio::time::Instant::now() + RECOUNT_EVERY;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = wake.notified() => break,
                () = tokio::time::sleep_until(due) => break,
                () = tokio::time::sleep(LOOK_EVERY) => {
                    if digest() != counted {
                        break;
                    }
                }
            }
        }
    }
}
