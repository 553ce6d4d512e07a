//! The `max_mailboxes` quota, enforced without races between cores.
//!
//! Counting live mailboxes and then creating one is two steps; two requests
//! on two cores could both see "one left". So the count is taken under one
//! lock together with the creations still in flight, and a slot is reserved
//! until the engine has the new mailbox (a [`Reservation`] releases on drop).
//!
//! Users' mailboxes are counted in the engine. Anonymous callers have no
//! identity, so their mailboxes are counted per client IP (IPv6 /64) in a
//! bounded in-memory map of the mailboxes each created; it is a best-effort
//! brake on one client, reset by a restart.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use uncorreo_engine::{Engine, MailboxId, Owner};

use crate::ratelimit::client_key;

/// Whose mailboxes are counted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QuotaKey {
    /// An owner the engine knows (a user, or a session token's mailbox).
    Owner(OwnerKey),
    /// Anonymous creations from one client.
    Ip(IpAddr),
}

/// [`Owner`] as a hash key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OwnerKey {
    /// A user.
    User(u64),
    /// A session token hash.
    Token([u8; 32]),
}

impl QuotaKey {
    /// The key for an engine owner.
    pub fn owner(o: &Owner) -> Self {
        Self::Owner(match o {
            Owner::User(u) => OwnerKey::User(u.0),
            Owner::Anonymous { token_hash } => OwnerKey::Token(*token_hash),
        })
    }
}

#[derive(Default)]
struct Inner {
    pending: HashMap<QuotaKey, u32>,
    anonymous: HashMap<IpAddr, Vec<MailboxId>>,
}

/// Mailbox-count bookkeeping shared by every core.
pub struct Quotas {
    inner: Arc<Mutex<Inner>>,
    max_ips: usize,
}

/// A reserved mailbox slot; dropping it gives the slot back.
pub struct Reservation {
    inner: Arc<Mutex<Inner>>,
    key: QuotaKey,
}

/// The quota is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    /// Live mailboxes (plus reservations) counted.
    pub live: u32,
}

impl Quotas {
    /// Track anonymous creations for at most `max_ips` client addresses.
    pub fn new(max_ips: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner::default())),
            max_ips: max_ips.max(1),
        }
    }

    /// Reserve one mailbox for `key` if fewer than `max` exist or are being created.
    pub fn reserve(
        &self,
        engine: &Engine,
        key: QuotaKey,
        max: u32,
    ) -> Result<Reservation, Exhausted> {
        let mut inner = self.inner.lock();
        let live = match &key {
            QuotaKey::Owner(o) => {
                let owner = match o {
                    OwnerKey::User(u) => Owner::User(uncorreo_engine::UserId(*u)),
                    OwnerKey::Token(t) => Owner::Anonymous { token_hash: *t },
                };
                u32::try_from(engine.mailboxes_owned_by(&owner).len()).unwrap_or(u32::MAX)
            }
            QuotaKey::Ip(ip) => match inner.anonymous.get_mut(ip) {
                Some(ids) => {
                    ids.retain(|id| engine.mailbox_by_id(*id).is_some());
                    u32::try_from(ids.len()).unwrap_or(u32::MAX)
                }
                None => 0,
            },
        };
        let pending = inner.pending.get(&key).copied().unwrap_or(0);
        let used = live.saturating_add(pending);
        if used >= max {
            return Err(Exhausted { live: used });
        }
        *inner.pending.entry(key.clone()).or_insert(0) += 1;
        Ok(Reservation {
            inner: Arc::clone(&self.inner),
            key,
        })
    }

    /// Record that `ip` created anonymous mailbox `id` (call before the
    /// reservation is dropped).
    pub fn record_anonymous(&self, engine: &Engine, ip: IpAddr, id: MailboxId) {
        let ip = client_key(ip);
        let mut inner = self.inner.lock();
        if !inner.anonymous.contains_key(&ip) && inner.anonymous.len() >= self.max_ips {
            inner
                .anonymous
                .retain(|_, ids| ids.iter().any(|id| engine.mailbox_by_id(*id).is_some()));
            if inner.anonymous.len() >= self.max_ips {
                // Still full of live clients: forget one (best effort, see module doc).
                if let Some(k) = inner.anonymous.keys().next().copied() {
                    inner.anonymous.remove(&k);
                }
            }
        }
        inner.anonymous.entry(ip).or_default().push(id);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut inner = self.inner.lock();
        if let Some(n) = inner.pending.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.pending.remove(&self.key);
            }
        }
    }
}

/// The quota key of an anonymous caller at `ip`.
pub fn anonymous_key(ip: IpAddr) -> QuotaKey {
    QuotaKey::Ip(client_key(ip))
}
