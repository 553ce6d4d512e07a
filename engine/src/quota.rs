//! Quota held from `RCPT` to the end of the delivery.
//!
//! A recipient accepted at `RCPT` must not be refused after the `250` of its
//! data because the mailbox filled up in between (SMTP has one reply per
//! message; the sender would never learn of it). So accepting a recipient
//! reserves one message of its mailbox's quota for the transaction
//! ([`Engine::resolve_held`](crate::Engine::resolve_held)): the mailbox takes
//! a new recipient only while `stored + reserved < max_messages`. A
//! transaction reserves at most one message per mailbox, since one delivery
//! stores one copy per mailbox whatever the number of its plus tags.
//!
//! The writer consumes a reservation when it makes the message it paid for
//! visible, under the shard's index write lock, in the same critical section
//! that counts the message; readers check the quota under the index read
//! lock, so they never see the message counted twice or not at all. A
//! reservation not consumed (the transaction reset, its connection gone, the
//! delivery failed) is given back when the last [`QuotaHolds`] handle drops.
//!
//! Bounded: the table has an entry per mailbox only while something holds
//! quota in it, and a handle holds at most one reservation per mailbox of
//! its transaction (at most `max_recipients`).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::state::Shared;
use crate::types::MailboxId;

/// Reservations per mailbox, one table per shard.
pub(crate) type HeldTable = Mutex<HashMap<MailboxId, u32>>;

/// The quota one transaction holds (cheap to clone; clones share it). Get
/// one from [`Engine::quota_holds`](crate::Engine::quota_holds).
#[derive(Clone)]
pub struct QuotaHolds {
    set: Arc<HoldSet>,
}

impl std::fmt::Debug for QuotaHolds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaHolds")
            .field("mailboxes", &*self.set.held.lock())
            .finish()
    }
}

struct HoldSet {
    shared: Arc<Shared>,
    held: Mutex<Vec<MailboxId>>,
}

impl QuotaHolds {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            set: Arc::new(HoldSet {
                shared,
                held: Mutex::new(Vec::new()),
            }),
        }
    }

    /// True if this transaction already holds quota in `mailbox`.
    pub fn holds(&self, mailbox: MailboxId) -> bool {
        self.set.held.lock().contains(&mailbox)
    }

    /// Reserve one message of `mailbox` if `stored` plus what is reserved
    /// stays under `max`. The caller holds the index read lock, and the
    /// check and the reservation are one step under the table's lock, so
    /// two transactions cannot both take the last message.
    pub(crate) fn try_add(&self, mailbox: MailboxId, stored: u32, max: u32) -> bool {
        {
            let mut table = self.set.table(mailbox).lock();
            let reserved = table.entry(mailbox).or_insert(0);
            if stored.saturating_add(*reserved) >= max {
                if *reserved == 0 {
                    table.remove(&mailbox);
                }
                return false;
            }
            *reserved += 1;
        }
        self.set.held.lock().push(mailbox);
        true
    }

    /// The message it paid for is now counted: give the reservation back.
    /// Called by the writer under the index write lock.
    pub(crate) fn consume(&self, mailbox: MailboxId) {
        let had = {
            let mut held = self.set.held.lock();
            held.iter()
                .position(|m| *m == mailbox)
                .map(|i| held.swap_remove(i))
                .is_some()
        };
        if had {
            self.set.release(mailbox);
        }
    }
}

impl HoldSet {
    fn table(&self, mailbox: MailboxId) -> &HeldTable {
        &self.shared.held[self.shared.shard_of_id(mailbox.0)]
    }

    fn release(&self, mailbox: MailboxId) {
        let mut table = self.table(mailbox).lock();
        if let Some(n) = table.get_mut(&mailbox) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                table.remove(&mailbox);
            }
        }
    }
}

impl Drop for HoldSet {
    fn drop(&mut self) {
        for mailbox in std::mem::take(self.held.get_mut()) {
            self.release(mailbox);
        }
    }
}

/// Messages of `mailbox` reserved by transactions not yet delivered.
pub(crate) fn reserved(shared: &Shared, mailbox: MailboxId) -> u32 {
    shared.held[shared.shard_of_id(mailbox.0)]
        .lock()
        .get(&mailbox)
        .copied()
        .unwrap_or(0)
}
