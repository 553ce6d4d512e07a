//! The mailboxes of one shard, in little memory: one slab of compact
//! entries (120 bytes each) and three hash indexes of `u32` slab slots (by
//! id, by address, by session token), so the per-mailbox cost is the entry,
//! its local part in a shared arena, and about ten bytes per index instead
//! of a by-value map entry with its own allocations per index.
//!
//! Addresses are interned: the local part lives in one byte arena (rebuilt
//! when more than half of it belongs to removed mailboxes), the domain in a
//! small table of the domains seen. The indexes hash with the process's
//! keyed `RandomState`, so chosen addresses cannot pile into one bucket.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use crate::ids::RecordLoc;
use crate::state::MsgRef;
use crate::types::{Address, MailboxId, MailboxInfo, Owner};

/// One mailbox. `MailboxInfo` is built from it on demand
/// ([`Mailboxes::info`]); the message count is `msgs.len()`.
pub(crate) struct MailboxEntry {
    pub(crate) id: MailboxId,
    pub(crate) created_at_ms: u64,
    pub(crate) expires_at_ms: u64,
    /// Highest sequence ever assigned in this mailbox.
    pub(crate) last_seq: u64,
    /// Sorted by seq.
    pub(crate) msgs: Refs,
    pub(crate) owner: Owner,
    /// The `MailboxCreated` record; compaction keeps exactly this one.
    pub(crate) created: RecordLoc,
    pub(crate) max_messages: u32,
    /// Offset of the local part in the arena.
    local_at: u32,
    /// Length of the local part (at most 64, the top 8 bits) and the
    /// domain's index in the domain table (the low 24 bits).
    local_len_domain: u32,
}

// The figure the memory budget is built on; a field added here costs
// 1,000,000 × its size at the benchmark's scale.
const _: () = assert!(std::mem::size_of::<Option<MailboxEntry>>() == 104);

/// A mailbox's message refs: one pointer while it has none (most new
/// mailboxes), a boxed vector once it has some.
// The box is the point: 8 bytes in every entry instead of a 24-byte `Vec`.
#[allow(clippy::box_collection)]
#[derive(Default)]
pub(crate) struct Refs(Option<Box<Vec<MsgRef>>>);

impl Refs {
    pub(crate) fn push(&mut self, r: MsgRef) {
        self.0.get_or_insert_with(Box::default).push(r);
    }

    /// Remove the ref at `i` (in bounds: found by [`MailboxEntry::find`]).
    pub(crate) fn remove(&mut self, i: usize) -> Option<MsgRef> {
        let v = self.0.as_mut()?;
        (i < v.len()).then(|| v.remove(i))
    }

    /// Refs held room for (for memory accounting).
    pub(crate) fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |v| v.capacity())
    }
}

impl From<Vec<MsgRef>> for Refs {
    fn from(v: Vec<MsgRef>) -> Self {
        Self((!v.is_empty()).then(|| Box::new(v)))
    }
}

impl std::ops::Deref for Refs {
    type Target = [MsgRef];
    fn deref(&self) -> &[MsgRef] {
        self.0.as_deref().map_or(&[], |v| v)
    }
}

impl std::ops::DerefMut for Refs {
    fn deref_mut(&mut self) -> &mut [MsgRef] {
        self.0.as_deref_mut().map_or(&mut [], |v| v)
    }
}

impl MailboxEntry {
    pub(crate) fn find(&self, seq: u64) -> Option<usize> {
        self.msgs.binary_search_by_key(&seq, |m| m.seq).ok()
    }

    pub(crate) fn message_count(&self) -> u32 {
        self.msgs.len() as u32
    }

    fn local_len(&self) -> usize {
        (self.local_len_domain >> 24) as usize
    }

    fn domain(&self) -> usize {
        (self.local_len_domain & DOMAIN_MASK) as usize
    }
}

const DOMAIN_MASK: u32 = (1 << 24) - 1;

/// Arena bytes no mailbox uses, past which it is rebuilt (if they are also
/// more than half of it).
const ARENA_GARBAGE_MIN: usize = 64 * 1024;

#[derive(Default)]
pub(crate) struct Mailboxes {
    slab: Vec<Option<MailboxEntry>>,
    /// Empty slots of `slab`, reused first.
    free: Vec<u32>,
    by_id: HashTable<u32>,
    /// The newest mailbox at each address (it may have expired).
    by_address: HashTable<u32>,
    /// Anonymous mailboxes by the SHA-256 of their session token. A token
    /// opens exactly one mailbox, and the API asks on every request that
    /// carries one whether it opens any (an unknown token is `401`), so this
    /// must not be a scan.
    by_token: HashTable<u32>,
    locals: Vec<u8>,
    garbage: usize,
    domains: Vec<Box<str>>,
    hasher: RandomState,
}

/// The hashes of each index, from the parts the slab holds.
struct Hashes<'a> {
    hasher: &'a RandomState,
    locals: &'a [u8],
    domains: &'a [Box<str>],
}

impl Hashes<'_> {
    fn id(&self, id: MailboxId) -> u64 {
        self.hasher.hash_one(id.0)
    }

    fn address(&self, local: &[u8], domain: &str) -> u64 {
        self.hasher.hash_one((local, domain))
    }

    fn token(&self, token: &[u8; 32]) -> u64 {
        self.hasher.hash_one(token)
    }

    fn local_of<'e>(&'e self, m: &MailboxEntry) -> &'e [u8] {
        let at = m.local_at as usize;
        self.locals.get(at..at + m.local_len()).unwrap_or_default()
    }

    fn domain_of<'e>(&'e self, m: &MailboxEntry) -> &'e str {
        self.domains.get(m.domain()).map_or("", |d| d)
    }

    fn entry_address(&self, m: &MailboxEntry) -> u64 {
        self.address(self.local_of(m), self.domain_of(m))
    }
}

fn token_of(m: &MailboxEntry) -> Option<&[u8; 32]> {
    match &m.owner {
        Owner::Anonymous { token_hash } => Some(token_hash),
        Owner::User(_) => None,
    }
}

fn entry(slab: &[Option<MailboxEntry>], slot: u32) -> Option<&MailboxEntry> {
    slab.get(slot as usize).and_then(Option::as_ref)
}

impl Mailboxes {
    fn hashes(&self) -> Hashes<'_> {
        Hashes {
            hasher: &self.hasher,
            locals: &self.locals,
            domains: &self.domains,
        }
    }

    fn at(&self, slot: u32) -> Option<&MailboxEntry> {
        entry(&self.slab, slot)
    }

    /// Room for `mailboxes` more whose local parts have `local_bytes` in all
    /// (recovery knows both before it inserts, so nothing is allocated twice).
    pub(crate) fn reserve(&mut self, mailboxes: usize, local_bytes: usize) {
        self.slab.reserve_exact(mailboxes);
        self.locals.reserve_exact(local_bytes);
        let h = Hashes {
            hasher: &self.hasher,
            locals: &self.locals,
            domains: &self.domains,
        };
        let slab = &self.slab;
        self.by_id
            .reserve(mailboxes, |s| entry(slab, *s).map_or(0, |m| h.id(m.id)));
        self.by_address.reserve(mailboxes, |s| {
            entry(slab, *s).map_or(0, |m| h.entry_address(m))
        });
        self.by_token.reserve(mailboxes, |s| {
            entry(slab, *s).and_then(token_of).map_or(0, |t| h.token(t))
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    fn slot_of(&self, id: MailboxId) -> Option<u32> {
        let h = self.hashes().id(id);
        self.by_id
            .find(h, |s| self.at(*s).is_some_and(|m| m.id == id))
            .copied()
    }

    pub(crate) fn get(&self, id: MailboxId) -> Option<&MailboxEntry> {
        self.at(self.slot_of(id)?)
    }

    pub(crate) fn get_mut(&mut self, id: MailboxId) -> Option<&mut MailboxEntry> {
        let slot = self.slot_of(id)?;
        self.slab.get_mut(slot as usize).and_then(Option::as_mut)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &MailboxEntry> {
        self.slab.iter().flatten()
    }

    /// Ids of the mailboxes expired at `now` among `step` slab slots from
    /// `start`, and where the next step starts (`None` past the end).
    /// Slots may be reused between steps: a look in steps sees every
    /// mailbox that stays, and may miss one created meanwhile (the next
    /// pass sees it).
    pub(crate) fn expired(
        &self,
        start: usize,
        step: usize,
        now: u64,
    ) -> (Vec<MailboxId>, Option<usize>) {
        let end = start.saturating_add(step).min(self.slab.len());
        let ids = self
            .slab
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .flatten()
            .filter(|m| m.expires_at_ms <= now)
            .map(|m| m.id)
            .collect();
        (ids, (end < self.slab.len()).then_some(end))
    }

    /// The newest mailbox at `address` (it may have expired).
    pub(crate) fn at_address(&self, address: &Address) -> Option<&MailboxEntry> {
        let hs = self.hashes();
        let (local, domain) = (address.local().as_bytes(), address.domain());
        let slot = self.by_address.find(hs.address(local, domain), |s| {
            self.at(*s)
                .is_some_and(|m| hs.local_of(m) == local && hs.domain_of(m) == domain)
        })?;
        self.at(*slot)
    }

    /// The mailbox this session token opens.
    pub(crate) fn with_token(&self, token: &[u8; 32]) -> Option<&MailboxEntry> {
        let h = self.hashes().token(token);
        let slot = self.by_token.find(h, |s| {
            self.at(*s).and_then(token_of).is_some_and(|t| t == token)
        })?;
        self.at(*slot)
    }

    pub(crate) fn address(&self, m: &MailboxEntry) -> Address {
        let hs = self.hashes();
        let local = String::from_utf8_lossy(hs.local_of(m)).into_owned();
        Address::from_normalised(local, hs.domain_of(m).to_owned())
    }

    pub(crate) fn info(&self, m: &MailboxEntry) -> MailboxInfo {
        MailboxInfo {
            id: m.id,
            address: self.address(m),
            owner: m.owner.clone(),
            created_at_ms: m.created_at_ms,
            expires_at_ms: m.expires_at_ms,
            max_messages: m.max_messages,
            message_count: m.message_count(),
            last_seq: m.last_seq,
        }
    }

    fn domain_index(&mut self, domain: &str) -> u32 {
        if let Some(i) = self.domains.iter().position(|d| &**d == domain) {
            return i as u32;
        }
        // Mailboxes exist only at configured domains; 2^24 distinct ones
        // would be a corrupt log.
        assert!(
            self.domains.len() < DOMAIN_MASK as usize,
            "too many domains"
        );
        self.domains.push(domain.into());
        (self.domains.len() - 1) as u32
    }

    /// Index a new mailbox. Returns the id of the mailbox that was at its
    /// address, which the caller removes (its address now leads here).
    pub(crate) fn insert(
        &mut self,
        info: &MailboxInfo,
        created: RecordLoc,
        msgs: Vec<MsgRef>,
    ) -> Option<MailboxId> {
        let local = info.address.local().as_bytes();
        // `Address` allows at most 64 octets in a local part.
        assert!(local.len() <= u8::MAX as usize, "local part too long");
        let domain = self.domain_index(info.address.domain());
        let local_at = u32::try_from(self.locals.len()).unwrap_or(u32::MAX);
        assert!(local_at < u32::MAX - 255, "local-part arena full");
        self.locals.extend_from_slice(local);
        let new = MailboxEntry {
            id: info.id,
            created_at_ms: info.created_at_ms,
            expires_at_ms: info.expires_at_ms,
            last_seq: info.last_seq,
            msgs: msgs.into(),
            owner: info.owner.clone(),
            created,
            max_messages: info.max_messages,
            local_at,
            local_len_domain: ((local.len() as u32) << 24) | domain,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                if let Some(s) = self.slab.get_mut(slot as usize) {
                    *s = Some(new);
                }
                slot
            }
            None => {
                self.slab.push(Some(new));
                u32::try_from(self.slab.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let Self {
            slab,
            by_id,
            by_address,
            by_token,
            locals,
            domains,
            hasher,
            ..
        } = self;
        let hs = Hashes {
            hasher,
            locals,
            domains,
        };
        let twice = by_id
            .find(hs.id(info.id), |s| {
                entry(slab, *s).is_some_and(|m| m.id == info.id)
            })
            .is_some();
        // Ids are never reused: the same one twice is a writer bug.
        assert!(!twice, "mailbox {} indexed twice", info.id.0);
        by_id.insert_unique(hs.id(info.id), slot, |s| {
            entry(slab, *s).map_or(0, |m| hs.id(m.id))
        });
        let domain = info.address.domain();
        let replaced = match by_address.entry(
            hs.address(local, domain),
            |s| {
                *s != slot
                    && entry(slab, *s)
                        .is_some_and(|m| hs.local_of(m) == local && hs.domain_of(m) == domain)
            },
            |s| entry(slab, *s).map_or(0, |m| hs.entry_address(m)),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                let old = std::mem::replace(o.get_mut(), slot);
                entry(slab, old).map(|m| m.id)
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(slot);
                None
            }
        };
        if let Owner::Anonymous { token_hash } = &info.owner {
            match by_token.entry(
                hs.token(token_hash),
                |s| *s != slot && entry(slab, *s).and_then(token_of) == Some(token_hash),
                |s| {
                    entry(slab, *s)
                        .and_then(token_of)
                        .map_or(0, |t| hs.token(t))
                },
            ) {
                hashbrown::hash_table::Entry::Occupied(mut o) => *o.get_mut() = slot,
                hashbrown::hash_table::Entry::Vacant(v) => {
                    v.insert(slot);
                }
            }
        }
        replaced
    }

    /// Drop a mailbox from the indexes and the slab; it is returned (its
    /// address can no longer be read from it).
    pub(crate) fn remove(&mut self, id: MailboxId) -> Option<MailboxEntry> {
        let Self {
            slab,
            free,
            by_id,
            by_address,
            by_token,
            locals,
            domains,
            hasher,
            garbage,
        } = self;
        let hs = Hashes {
            hasher,
            locals,
            domains,
        };
        let slot =
            match by_id.find_entry(hs.id(id), |s| entry(slab, *s).is_some_and(|m| m.id == id)) {
                Ok(o) => o.remove().0,
                Err(_) => return None,
            };
        let m = entry(slab, slot)?;
        if let Ok(o) = by_address.find_entry(hs.entry_address(m), |s| *s == slot) {
            o.remove();
        }
        if let Some(t) = token_of(m) {
            if let Ok(o) = by_token.find_entry(hs.token(t), |s| *s == slot) {
                o.remove();
            }
        }
        *garbage += m.local_len();
        let m = slab.get_mut(slot as usize).and_then(Option::take)?;
        free.push(slot);
        self.collect_garbage();
        Some(m)
    }

    /// Rebuild the arena without the local parts of removed mailboxes once
    /// they are most of it.
    fn collect_garbage(&mut self) {
        if self.garbage < ARENA_GARBAGE_MIN || self.garbage * 2 < self.locals.len() {
            return;
        }
        let mut locals = Vec::with_capacity(self.locals.len() - self.garbage);
        for m in self.slab.iter_mut().flatten() {
            let at = m.local_at as usize;
            let bytes = self.locals.get(at..at + m.local_len()).unwrap_or_default();
            m.local_at = locals.len() as u32;
            locals.extend_from_slice(bytes);
        }
        self.locals = locals;
        self.garbage = 0;
        // Trailing empty slots go too.
        while matches!(self.slab.last(), Some(None)) {
            self.slab.pop();
        }
        let len = self.slab.len() as u32;
        self.free.retain(|s| *s < len);
    }

    /// Bytes held: the slab, the arena, the indexes and their control bytes.
    pub(crate) fn memory_bytes(&self) -> u64 {
        let slot = std::mem::size_of::<u32>() + 1;
        (self.slab.capacity() * std::mem::size_of::<Option<MailboxEntry>>()
            + self.free.capacity() * 4
            + self.locals.capacity()
            + (self.by_id.capacity() + self.by_address.capacity() + self.by_token.capacity())
                * slot) as u64
    }

    /// `Err` if an index disagrees with the slab (for tests).
    pub(crate) fn check(&self) -> Result<(), String> {
        let live = self.slab.iter().flatten().count();
        if live != self.by_id.len() {
            return Err(format!("{live} in the slab, {} by id", self.by_id.len()));
        }
        for m in self.values() {
            if self.get(m.id).map(|g| g.id) != Some(m.id) {
                return Err(format!("mailbox {} not found by id", m.id.0));
            }
            // Only the newest at an address is indexed by it, and only the
            // newest with a token (older ones were removed when replaced).
            let at = self.at_address(&self.address(m)).map(|g| g.id);
            if at != Some(m.id) {
                return Err(format!("mailbox {}: its address leads to {at:?}", m.id.0));
            }
            if let Some(t) = token_of(m) {
                if self.with_token(t).is_none() {
                    return Err(format!("mailbox {}: token not indexed", m.id.0));
                }
            }
        }
        if self.by_address.len() != live || self.by_token.len() > live {
            return Err("an index holds a removed mailbox".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SegmentNo;
    use crate::types::UserId;

    fn info(i: u64, local: &str, owner: Owner) -> MailboxInfo {
        MailboxInfo {
            id: MailboxId(i),
            address: Address::from_parts(
                local,
                if i.is_multiple_of(3) {
                    "b.test"
                } else {
                    "a.test"
                },
            )
            .unwrap(),
            owner,
            created_at_ms: i,
            expires_at_ms: i + 1,
            max_messages: 7,
            message_count: 0,
            last_seq: i * 2,
        }
    }

    fn owner(i: u64) -> Owner {
        if i.is_multiple_of(2) {
            Owner::User(UserId(i % 5))
        } else {
            let mut token_hash = [0u8; 32];
            token_hash[..8].copy_from_slice(&i.to_le_bytes());
            Owner::Anonymous { token_hash }
        }
    }

    fn loc(i: u64) -> RecordLoc {
        RecordLoc {
            segment: SegmentNo(i as u32),
            offset: 64,
            len: 90,
        }
    }

    /// Removing most mailboxes rebuilds the arena and trims the slab; every
    /// remaining mailbox is still found by id, address and token with the
    /// same fields, and freed slots are reused.
    #[test]
    fn lookups_survive_the_arena_rebuild_and_slot_reuse() {
        let mut t = Mailboxes::default();
        let local = |i: u64| format!("a-rather-long-local-part-for-the-arena-{i:08}");
        let n = 6_000u64;
        for i in 0..n {
            assert_eq!(
                t.insert(&info(i, &local(i), owner(i)), loc(i), Vec::new()),
                None
            );
        }
        let arena_before = t.locals.len();
        for i in (0..n).filter(|i| i % 4 != 0) {
            assert_eq!(t.remove(MailboxId(i)).map(|m| m.id), Some(MailboxId(i)));
        }
        assert!(t.locals.len() < arena_before, "the arena was rebuilt");
        t.check().unwrap();
        for i in (0..n).step_by(4) {
            let want = info(i, &local(i), owner(i));
            let m = t.get(MailboxId(i)).unwrap();
            assert_eq!(t.info(m), want);
            assert_eq!(t.at_address(&want.address).map(|m| m.id), Some(want.id));
            if let Owner::Anonymous { token_hash } = &want.owner {
                assert_eq!(t.with_token(token_hash).map(|m| m.id), Some(want.id));
            }
            assert_eq!(m.created, loc(i));
        }
        // A removed mailbox is gone from every index.
        let gone = info(1, &local(1), owner(1));
        assert!(t.get(gone.id).is_none() && t.at_address(&gone.address).is_none());
        // New mailboxes fill freed slots before the slab grows.
        let slab = t.slab.len();
        for i in n..n + 100 {
            t.insert(&info(i, &local(i), owner(i)), loc(i), Vec::new());
        }
        assert_eq!(t.slab.len(), slab);
        t.check().unwrap();
    }

    /// Expiry looked at in steps finds exactly the expired mailboxes, with
    /// holes in the slab left by removals.
    #[test]
    fn expired_in_steps_finds_every_expired_mailbox() {
        let mut t = Mailboxes::default();
        for i in 0..50 {
            t.insert(&info(i, &format!("m{i}"), owner(i)), loc(i), Vec::new());
        }
        for i in (0..50).step_by(7) {
            t.remove(MailboxId(i));
        }
        // `info(i)` expires at i + 1.
        let now = 30;
        let mut found = Vec::new();
        let mut from = Some(0);
        while let Some(start) = from {
            let (ids, next) = t.expired(start, 4, now);
            found.extend(ids);
            from = next;
        }
        found.sort();
        let want: Vec<_> = (0..30).filter(|i| i % 7 != 0).map(MailboxId).collect();
        assert_eq!(found, want);
    }

    /// A mailbox created at the address of an older one takes its place in
    /// the address index and names the one it replaced.
    #[test]
    fn a_new_mailbox_at_an_address_replaces_the_old_one_there() {
        let mut t = Mailboxes::default();
        let old = info(1, "same", owner(1));
        let new = info(4, "same", owner(1));
        t.insert(&old, loc(1), Vec::new());
        assert_eq!(t.insert(&new, loc(4), Vec::new()), Some(old.id));
        assert_eq!(t.at_address(&new.address).map(|m| m.id), Some(new.id));
        t.remove(old.id);
        assert_eq!(t.at_address(&new.address).map(|m| m.id), Some(new.id));
        let Owner::Anonymous { token_hash } = &new.owner else {
            unreachable!()
        };
        assert_eq!(t.with_token(token_hash).map(|m| m.id), Some(new.id));
        t.check().unwrap();
    }
}
