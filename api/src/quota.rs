//! The `max_mailboxes` quota, enforced without races between cores.
//!
//! Counting live mailboxes and then creating one is two steps; two requests
//! on two cores could both see "one left". So the count is taken under one
//! lock together with the creations still in flight, and a slot is reserved
//! until the engine has the new mailbox (a [`Reservation`] releases on drop).
//!
//! A creation becomes visible in the count (the engine's index, or the
//! anonymous map) before its reservation is dropped. Counting it in both
//! places would refuse a request that fits, so a reservation only counts
//! while its creation is not yet visible: for owners, while the owner's
//! mailboxes (read once per count, so a creation that lands in between two
//! looks is never missed by both) have none at the address the reservation
//! is attempting; for anonymous clients, until
//! [`Reservation::record_anonymous`] moves it into the map under the same lock.
//!
//! Users' mailboxes are counted in the engine. Anonymous callers have no
//! identity, so their mailboxes are counted per client IP (IPv6 /64) in a
//! bounded in-memory map of the mailboxes each created; it is a best-effort
//! brake on one client, reset by a restart.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use uncorreo_engine::{Address, Engine, MailboxId, Owner};

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

/// A creation in flight.
#[derive(Default)]
struct Pending {
    /// The address being attempted.
    attempt: Option<Address>,
    /// When the mailbox it creates would expire (0 until known).
    until_ms: u64,
}

#[derive(Default)]
struct Inner {
    /// Creations in flight per key: ticket → what it attempts.
    pending: HashMap<QuotaKey, HashMap<u64, Pending>>,
    anonymous: HashMap<IpAddr, Vec<MailboxId>>,
    next_ticket: u64,
}

impl QuotaKey {
    fn engine_owner(&self) -> Option<Owner> {
        match self {
            Self::Owner(OwnerKey::User(u)) => Some(Owner::User(uncorreo_engine::UserId(*u))),
            Self::Owner(OwnerKey::Token(t)) => Some(Owner::Anonymous { token_hash: *t }),
            Self::Ip(_) => None,
        }
    }
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
    ticket: u64,
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
        let owner = key.engine_owner();
        // One look at the owner's mailboxes serves both counts: a creation
        // that becomes visible between two looks would be in neither.
        // Campaigns count like mailboxes, under a stand-in address each.
        let owned: Vec<Address> = owner.as_ref().map_or_else(Vec::new, |owner| {
            let campaigns = engine.campaigns_owned_by(owner).into_iter();
            engine
                .mailboxes_owned_by(owner)
                .into_iter()
                .map(|info| info.address)
                .chain(campaigns.filter_map(|c| campaign_quota_address(c.id)))
                .collect()
        });
        let live = match &key {
            QuotaKey::Owner(_) => u32::try_from(owned.len()).unwrap_or(u32::MAX),
            QuotaKey::Ip(ip) => match inner.anonymous.get_mut(ip) {
                Some(ids) => {
                    ids.retain(|id| engine.mailbox_by_id(*id).is_some());
                    u32::try_from(ids.len()).unwrap_or(u32::MAX)
                }
                None => 0,
            },
        };
        let in_flight = inner.pending.get(&key).map_or(0, |tickets| {
            tickets
                .values()
                .filter(|p| !p.attempt.as_ref().is_some_and(|a| owned.contains(a)))
                .count()
        });
        let used = live.saturating_add(u32::try_from(in_flight).unwrap_or(u32::MAX));
        if used >= max {
            return Err(Exhausted { live: used });
        }
        let ticket = inner.next_ticket;
        inner.next_ticket = inner.next_ticket.wrapping_add(1);
        inner
            .pending
            .entry(key.clone())
            .or_default()
            .insert(ticket, Pending::default());
        Ok(Reservation {
            inner: Arc::clone(&self.inner),
            key,
            ticket,
        })
    }

    /// `user`'s live mailboxes and campaigns that `counted` keeps, plus its
    /// creations in flight (each counted once, as in [`Quotas::reserve`]),
    /// and when the last of them expires: this host's truth for the
    /// cluster's count (`crate::counts`). `counted` picks mailboxes only:
    /// campaigns live on the host that made them and never move.
    pub fn used(
        &self,
        engine: &Engine,
        user: uncorreo_engine::UserId,
        counted: impl Fn(&Address) -> bool,
    ) -> (u32, u64) {
        let inner = self.inner.lock();
        let owner = Owner::User(user);
        let mut until = 0u64;
        let mut owned = Vec::new();
        for m in engine.mailboxes_owned_by(&owner) {
            if counted(&m.address) {
                until = until.max(m.expires_at_ms);
                owned.push(m.address);
            }
        }
        for c in engine.campaigns_owned_by(&owner) {
            if let Some(a) = campaign_quota_address(c.id) {
                until = until.max(c.expires_at_ms);
                owned.push(a);
            }
        }
        let key = QuotaKey::owner(&owner);
        let mut in_flight = 0u32;
        for p in inner.pending.get(&key).into_iter().flat_map(|t| t.values()) {
            if !p.attempt.as_ref().is_some_and(|a| owned.contains(a)) {
                in_flight = in_flight.saturating_add(1);
                until = until.max(p.until_ms);
            }
        }
        let live = u32::try_from(owned.len()).unwrap_or(u32::MAX);
        (live.saturating_add(in_flight), until)
    }

    /// Forget clients none of whose mailboxes is live when the map is full,
    /// then one more if it is still full (best effort, see module doc).
    fn make_room(&self, inner: &mut Inner, engine: &Engine, ip: IpAddr) {
        if inner.anonymous.contains_key(&ip) || inner.anonymous.len() < self.max_ips {
            return;
        }
        inner
            .anonymous
            .retain(|_, ids| ids.iter().any(|id| engine.mailbox_by_id(*id).is_some()));
        if inner.anonymous.len() >= self.max_ips {
            if let Some(k) = inner.anonymous.keys().next().copied() {
                inner.anonymous.remove(&k);
            }
        }
    }
}

impl Reservation {
    /// Note the address the next creation attempt uses, before the engine is
    /// asked, so the count can tell once that creation is visible.
    pub fn attempting(&self, address: &Address) {
        let mut inner = self.inner.lock();
        if let Some(attempt) = inner
            .pending
            .get_mut(&self.key)
            .and_then(|tickets| tickets.get_mut(&self.ticket))
        {
            attempt.attempt = Some(address.clone());
        }
    }

    /// Note when the mailbox this reservation creates would expire, so the
    /// cluster's count of it ([`Quotas::used`]) can say how long it lasts.
    pub fn until(&self, until_ms: u64) {
        let mut inner = self.inner.lock();
        if let Some(pending) = inner
            .pending
            .get_mut(&self.key)
            .and_then(|tickets| tickets.get_mut(&self.ticket))
        {
            pending.until_ms = until_ms;
        }
    }

    /// Record that `ip` created anonymous mailbox `id`, and end the
    /// reservation in the same step so the mailbox is never counted twice.
    pub fn record_anonymous(self, quotas: &Quotas, engine: &Engine, ip: IpAddr, id: MailboxId) {
        let ip = client_key(ip);
        let mut inner = self.inner.lock();
        quotas.make_room(&mut inner, engine, ip);
        inner.anonymous.entry(ip).or_default().push(id);
        release(&mut inner, &self.key, self.ticket);
        // Unlock before `self` drops: Drop takes the same (non-reentrant)
        // lock, finds the ticket gone and does nothing.
        drop(inner);
    }
}

fn release(inner: &mut Inner, key: &QuotaKey, ticket: u64) {
    if let Some(tickets) = inner.pending.get_mut(key) {
        tickets.remove(&ticket);
        if tickets.is_empty() {
            inner.pending.remove(key);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        release(&mut self.inner.lock(), &self.key, self.ticket);
    }
}

/// The stand-in address a campaign is counted under in the mailbox quota
/// (never routed: `.invalid` is reserved, RFC 2606).
pub fn campaign_quota_address(id: uncorreo_engine::campaign::CampaignId) -> Option<Address> {
    Address::from_parts("campaign", &format!("c-{id}.invalid")).ok()
}

/// The quota key of an anonymous caller at `ip`.
pub fn anonymous_key(ip: IpAddr) -> QuotaKey {
    QuotaKey::Ip(client_key(ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uncorreo_engine::{EngineConfig, NewMailbox, UserId};

    fn engine(dir: &std::path::Path) -> Engine {
        Engine::open(EngineConfig {
            data_dir: dir.to_path_buf(),
            shards: 1,
            min_free_bytes: 0,
            ..EngineConfig::default()
        })
        .expect("engine opens")
    }

    fn address(local: &str) -> Address {
        Address::from_parts(local, "uncorreo.test").expect("valid address")
    }

    async fn create(engine: &Engine, owner: &Owner, local: &str) -> MailboxId {
        engine
            .create_mailbox(NewMailbox {
                address: address(local),
                owner: owner.clone(),
                expires_at_ms: engine.now_ms() + 60_000,
                max_messages: 10,
            })
            .await
            .expect("created")
            .id
    }

    /// Regression: a creation that the engine already shows, whose
    /// reservation is not yet dropped, was counted twice and refused a
    /// request that fits (seen as 4 of 5 allowed mailboxes under load).
    #[tokio::test]
    async fn a_visible_creation_is_not_counted_twice_while_its_reservation_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let quotas = Quotas::new(16);
        let owner = Owner::User(UserId(7));
        let key = QuotaKey::owner(&owner);

        let first = quotas.reserve(&engine, key.clone(), 2).expect("1 of 2");
        first.attempting(&address("one"));
        create(&engine, &owner, "one").await;
        // `first` is still held: one mailbox exists, one slot is free.
        let second = quotas.reserve(&engine, key.clone(), 2).expect("2 of 2");
        // Not yet visible, so it counts: the quota is now full.
        assert!(quotas.reserve(&engine, key.clone(), 2).is_err());
        second.attempting(&address("two"));
        create(&engine, &owner, "two").await;
        drop((first, second));
        assert_eq!(
            quotas.reserve(&engine, key, 2).err(),
            Some(Exhausted { live: 2 })
        );
    }

    /// An address held by another owner is not this reservation's creation.
    #[tokio::test]
    async fn an_address_another_owner_holds_keeps_the_slot_counted() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let quotas = Quotas::new(16);
        let stranger = Owner::User(UserId(8));
        create(&engine, &stranger, "taken").await;
        let key = QuotaKey::owner(&Owner::User(UserId(7)));
        let held = quotas.reserve(&engine, key.clone(), 1).expect("1 of 1");
        held.attempting(&address("taken"));
        assert!(quotas.reserve(&engine, key.clone(), 1).is_err());
        drop(held);
        quotas
            .reserve(&engine, key, 1)
            .expect("slot back after drop");
    }

    /// Anonymous creations move from in-flight to recorded in one step.
    #[tokio::test]
    async fn recording_an_anonymous_creation_ends_its_reservation_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let quotas = Quotas::new(16);
        let ip: IpAddr = [192, 0, 2, 1].into();
        let key = anonymous_key(ip);
        let owner = Owner::Anonymous {
            token_hash: [1; 32],
        };
        let held = quotas.reserve(&engine, key.clone(), 2).expect("1 of 2");
        let id = create(&engine, &owner, "anon").await;
        // Visible in the engine but not recorded: still counted once.
        assert_eq!(
            quotas.reserve(&engine, key.clone(), 1).err(),
            Some(Exhausted { live: 1 })
        );
        held.record_anonymous(&quotas, &engine, ip, id);
        let again = quotas.reserve(&engine, key.clone(), 2).expect("2 of 2");
        assert_eq!(
            quotas.reserve(&engine, key, 2).err(),
            Some(Exhausted { live: 2 })
        );
        drop(again);
    }
}
