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
//! [`run`] recounts every user at start, when the partitions it serves
//! change (a handover) and every [`RECOUNT_EVERY`], and the owner of a
//! mailbox that ended here (deleted, expired) as soon as it ended
//! ([`Ended`]: that user only, so an expiry sweep of many mailboxes costs
//! a recount of their owners, not of every user each time). A host that never comes
//! back cannot hold slots either: each count carries when its last mailbox
//! expires, and past that nobody counts it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uncorreo_engine::{Address, Owner, UserId};

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

/// Most users [`Ended`] remembers between two recounts; past it the next
/// recount is of every user (which mends the same counts).
pub const MAX_ENDED_USERS: usize = 4096;

/// The users whose mailboxes ended here since the last recount: told by
/// the engine's tap on a writer or compaction thread (which must not
/// block: one short lock), drained by [`run`].
#[derive(Default)]
pub struct Ended {
    users: parking_lot::Mutex<EndedUsers>,
    wake: Notify,
}

#[derive(Default)]
struct EndedUsers {
    users: BTreeSet<UserId>,
    /// More than [`MAX_ENDED_USERS`] ended: recount everyone.
    overflowed: bool,
}

/// What the next recount covers.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    Everyone,
    These(BTreeSet<UserId>),
}

impl Ended {
    /// A mailbox of `owner` ended here. An anonymous mailbox counts for
    /// nobody's plan.
    pub fn note(&self, owner: &Owner) {
        let Owner::User(user) = owner else {
            return;
        };
        {
            let mut ended = self.users.lock();
            if ended.users.len() < MAX_ENDED_USERS {
                ended.users.insert(*user);
            } else if !ended.users.contains(user) {
                ended.overflowed = true;
            }
        }
        self.wake.notify_one();
    }

    fn take(&self) -> Due {
        let mut ended = self.users.lock();
        let taken = std::mem::take(&mut *ended);
        if taken.overflowed {
            Due::Everyone
        } else {
            Due::These(taken.users)
        }
    }
}

/// How often the partitions this host counts are looked at: a handover
/// that moved some here or away is recounted within this.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Recounts every user at start, when the partitions this host serves
/// change (a handover, a lease taken or lost) and every [`RECOUNT_EVERY`];
/// and the owners in `ended` whenever a mailbox ends here; until
/// `shutdown`. Only in a cluster.
pub async fn run(state: AppState, ended: Arc<Ended>, shutdown: CancellationToken) {
    let Some(counter) = state.accounts.mailbox_counter() else {
        return;
    };
    let digest = || {
        state
            .cluster
            .as_ref()
            .map(|c| c.counted_partitions_digest())
    };
    loop {
        let counted = digest();
        // Everyone is recounted now: what ended before is in it.
        ended.take();
        recount_all(&state).await;
        let due = tokio::time::Instant::now() + RECOUNT_EVERY;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = ended.wake.notified() => match ended.take() {
                    Due::Everyone => break,
                    Due::These(users) => {
                        for user in users {
                            write(&state, counter, user).await;
                        }
                    }
                },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: u64) -> Owner {
        Owner::User(UserId(id))
    }

    #[test]
    fn ended_keeps_each_user_once_and_forgets_on_take() {
        let ended = Ended::default();
        ended.note(&user(5));
        ended.note(&user(3));
        ended.note(&user(5));
        ended.note(&Owner::Anonymous {
            token_hash: [1; 32],
        });
        assert_eq!(
            ended.take(),
            Due::These([UserId(3), UserId(5)].into_iter().collect())
        );
        assert_eq!(ended.take(), Due::These(BTreeSet::new()));
    }

    #[test]
    fn past_its_bound_ended_asks_for_everyone_once() {
        let ended = Ended::default();
        for id in 0..MAX_ENDED_USERS as u64 {
            ended.note(&user(id));
        }
        ended.note(&user(0));
        assert!(matches!(ended.take(), Due::These(users) if users.len() == MAX_ENDED_USERS));
        for id in 0..=MAX_ENDED_USERS as u64 {
            ended.note(&user(id));
        }
        assert_eq!(ended.take(), Due::Everyone);
        assert_eq!(ended.take(), Due::These(BTreeSet::new()));
    }
}
