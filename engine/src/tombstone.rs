//! Address tombstones: after a mailbox ends (deleted, or expired), its
//! address cannot be created again by another owner for
//! [`EngineConfig::address_quarantine`](crate::EngineConfig::address_quarantine),
//! so late mail meant for the old owner (a password reset, a sign-in code)
//! does not reach a stranger who claims the address. The same owner may
//! create it again at once.
//!
//! Durable as `AddressTombstone` records (FORMAT.md kind 15): one written
//! with every `MailboxCreated` (until its expiry plus the quarantine) and one
//! with every `MailboxDeleted` (until the deletion plus the quarantine); per
//! address the newest record wins. In memory a shard keeps only the
//! tombstones of addresses whose mailbox has ended (a live mailbox blocks
//! its address by itself), and forgets each when its quarantine is over, so
//! the table is bounded by the mailboxes ended within one quarantine.

use std::collections::HashMap;

use crate::types::{Address, Owner};

/// An ended mailbox's claim on its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tombstone {
    pub(crate) owner: Owner,
    /// When it was written (the newest per address wins).
    pub(crate) at_ms: u64,
    /// The address is free for anyone from then on.
    pub(crate) until_ms: u64,
}

/// One shard's tombstones, by address.
#[derive(Default)]
pub(crate) struct Tombstones {
    map: HashMap<Address, Tombstone>,
}

impl Tombstones {
    /// Remember `t` for `address` unless a newer one is there, or it is over.
    pub(crate) fn note(&mut self, address: Address, t: Tombstone, now: u64) {
        if t.until_ms <= now {
            return;
        }
        match self.map.get(&address) {
            Some(have) if have.at_ms > t.at_ms => {}
            _ => {
                self.map.insert(address, t);
            }
        }
    }

    /// Is `address` held, at `now`, for someone other than `owner`?
    pub(crate) fn blocks(&self, address: &Address, owner: &Owner, now: u64) -> bool {
        self.map
            .get(address)
            .is_some_and(|t| t.until_ms > now && &t.owner != owner)
    }

    /// A new mailbox took the address: its own tombstone comes when it ends.
    pub(crate) fn clear(&mut self, address: &Address) {
        self.map.remove(address);
    }

    /// Forget what is over.
    pub(crate) fn prune(&mut self, now: u64) {
        self.map.retain(|_, t| t.until_ms > now);
    }
}
