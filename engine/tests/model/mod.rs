//! The reference model for the engine's property tests: the original
//! in-memory placeholder of `Engine` (one mutex, no durability), kept
//! verbatim in behaviour. The log-backed engine must be indistinguishable
//! from it through the public API (ids aside, which the tests map).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use uncorreo_engine::fanout::{Hub, Subscriber};
use uncorreo_engine::*;

/// A cheap, cloneable handle to the open engine. All methods may be called
/// from any thread or runtime; `async` ones wait for durability.
#[derive(Clone)]
pub struct Model {
    inner: Arc<Inner>,
}

struct Inner {
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    hub: Hub,
}

#[derive(Default)]
struct State {
    next_id: u64,
    by_address: HashMap<Address, MailboxId>,
    mailboxes: HashMap<MailboxId, MailboxState>,
    users: HashMap<UserId, UserInfo>,
    keys: HashMap<ApiKeyId, ApiKeyInfo>,
    dedupe: HashSet<String>,
}

struct MailboxState {
    info: MailboxInfo,
    messages: BTreeMap<u64, (MessageMeta, Bytes)>,
}

impl Model {
    /// Open (or create) the engine in `config.data_dir`, recovering from the log.
    pub fn open(config: EngineConfig) -> Result<Self, OpenError> {
        Self::open_with_clock(config, Arc::new(uncorreo_engine::SystemClock))
    }

    /// As [`Engine::open`], with an injected clock (tests drive expiry with it).
    pub fn open_with_clock(config: EngineConfig, clock: Arc<dyn Clock>) -> Result<Self, OpenError> {
        Ok(Self {
            inner: Arc::new(Inner {
                hub: Hub::new(config.subscriber_queue),
                config,
                clock,
                state: Mutex::new(State {
                    next_id: 1,
                    ..State::default()
                }),
            }),
        })
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The engine's clock, in ms since the epoch.
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// True if `domain` (any case) is one we accept mail for.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.inner
            .config
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// Check a recipient as written by a sender (`box+tag@domain`): syntax,
    /// domain, a live mailbox, quota. Used at SMTP `RCPT` and by the webhook.
    pub fn resolve(&self, rcpt: &str) -> Result<Recipient, ResolveError> {
        let domain = rcpt
            .rsplit_once('@')
            .map(|(_, d)| d)
            .ok_or(ResolveError::BadAddress)?;
        if !self.is_local_domain(domain) {
            return Err(ResolveError::ForeignDomain);
        }
        let r = Recipient::parse(rcpt).map_err(|_| ResolveError::BadAddress)?;
        let now = self.now_ms();
        let st = self.inner.state.lock();
        let id = st
            .by_address
            .get(&r.address)
            .ok_or(ResolveError::NoSuchMailbox)?;
        let mb = st.mailboxes.get(id).ok_or(ResolveError::NoSuchMailbox)?;
        if mb.info.expires_at_ms <= now {
            return Err(ResolveError::NoSuchMailbox);
        }
        if mb.messages.len() as u32 >= mb.info.max_messages {
            return Err(ResolveError::MailboxFull);
        }
        Ok(r)
    }

    /// THE delivery entry point: store `delivery.raw` once per recipient and
    /// return only when every stored copy is durable; then publish events.
    pub async fn deliver(&self, delivery: Delivery) -> Result<DeliveryOutcome, DeliverError> {
        if delivery.raw.len() > self.inner.config.max_message_bytes {
            return Err(DeliverError::TooLarge {
                limit: self.inner.config.max_message_bytes,
            });
        }
        let now = self.now_ms();
        let summary = uncorreo_mail::summarize(&delivery.raw);
        let mut st = self.inner.state.lock();
        if let Some(key) = &delivery.dedupe_key {
            if !st.dedupe.insert(key.clone()) {
                return Ok(DeliveryOutcome::Duplicate);
            }
        }
        let mut stored = Vec::new();
        let mut refused = Vec::new();
        let mut events = Vec::new();
        for rcpt in delivery.recipients {
            let Some(id) = st.by_address.get(&rcpt.address).copied() else {
                refused.push((rcpt, ResolveError::NoSuchMailbox));
                continue;
            };
            let Some(mb) = st.mailboxes.get_mut(&id) else {
                refused.push((rcpt, ResolveError::NoSuchMailbox));
                continue;
            };
            if mb.info.expires_at_ms <= now {
                refused.push((rcpt, ResolveError::NoSuchMailbox));
                continue;
            }
            if mb.messages.len() as u32 >= mb.info.max_messages {
                refused.push((rcpt, ResolveError::MailboxFull));
                continue;
            }
            mb.info.last_seq += 1;
            let mid = MessageId {
                mailbox: id,
                seq: mb.info.last_seq,
            };
            let meta = MessageMeta {
                id: mid,
                received_at_ms: now,
                size: delivery.raw.len() as u32,
                plus_tag: rcpt.plus_tag.clone(),
                envelope_from: delivery.envelope_from.clone(),
                summary: summary.clone(),
            };
            mb.messages
                .insert(mid.seq, (meta.clone(), delivery.raw.clone()));
            mb.info.message_count = mb.messages.len() as u32;
            let ev = Event {
                address: mb.info.address.clone(),
                id: mid,
                received_at_ms: now,
                size: meta.size,
                plus_tag: meta.plus_tag,
                summary: meta.summary,
            };
            events.push(ev);
            stored.push(mid);
        }
        drop(st);
        for ev in &events {
            self.inner.hub.publish(ev);
        }
        Ok(DeliveryOutcome::Delivered { stored, refused })
    }

    /// Create a mailbox. Fails with [`DeliverError::AlreadyExists`] if a live
    /// mailbox has that address, [`DeliverError::Invalid`] for a foreign domain.
    pub async fn create_mailbox(&self, new: NewMailbox) -> Result<MailboxInfo, CreateMailboxError> {
        if !self.is_local_domain(new.address.domain()) {
            return Err(CreateMailboxError::ForeignDomain);
        }
        let now = self.now_ms();
        let mut st = self.inner.state.lock();
        if let Some(old) = st.by_address.get(&new.address).copied() {
            if st
                .mailboxes
                .get(&old)
                .is_some_and(|m| m.info.expires_at_ms > now)
            {
                return Err(CreateMailboxError::AlreadyExists);
            }
            st.mailboxes.remove(&old);
        }
        let id = MailboxId(st.next_id);
        st.next_id += 1;
        let info = MailboxInfo {
            id,
            address: new.address.clone(),
            owner: new.owner,
            created_at_ms: now,
            expires_at_ms: new.expires_at_ms,
            max_messages: new.max_messages,
            message_count: 0,
            last_seq: 0,
        };
        st.by_address.insert(new.address, id);
        st.mailboxes.insert(
            id,
            MailboxState {
                info: info.clone(),
                messages: BTreeMap::new(),
            },
        );
        Ok(info)
    }

    /// The live (not expired, not deleted) mailbox at `address`.
    pub fn mailbox(&self, address: &Address) -> Option<MailboxInfo> {
        let st = self.inner.state.lock();
        let id = st.by_address.get(address)?;
        self.live_info(&st, *id)
    }

    /// The live mailbox with this id.
    pub fn mailbox_by_id(&self, id: MailboxId) -> Option<MailboxInfo> {
        let st = self.inner.state.lock();
        self.live_info(&st, id)
    }

    fn live_info(&self, st: &State, id: MailboxId) -> Option<MailboxInfo> {
        let mb = st.mailboxes.get(&id)?;
        (mb.info.expires_at_ms > self.now_ms()).then(|| mb.info.clone())
    }

    /// Live mailboxes with this owner, oldest first.
    pub fn mailboxes_owned_by(&self, owner: &Owner) -> Vec<MailboxInfo> {
        let now = self.now_ms();
        let st = self.inner.state.lock();
        let mut v: Vec<_> = st
            .mailboxes
            .values()
            .filter(|m| &m.info.owner == owner && m.info.expires_at_ms > now)
            .map(|m| m.info.clone())
            .collect();
        v.sort_by_key(|m| m.id);
        v
    }

    /// Delete a mailbox and (logically, at once; physically at compaction) its messages.
    pub async fn delete_mailbox(&self, id: MailboxId) -> Result<(), WriteError> {
        let mut st = self.inner.state.lock();
        let mb = st.mailboxes.remove(&id).ok_or(WriteError::NotFound)?;
        if st.by_address.get(&mb.info.address) == Some(&id) {
            st.by_address.remove(&mb.info.address);
        }
        drop(st);
        self.inner.hub.close_mailbox(id);
        Ok(())
    }

    /// Messages with `seq > since_seq`, ascending, at most `limit`.
    pub fn list_messages(
        &self,
        mailbox: MailboxId,
        since_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageMeta>, LookupError> {
        let st = self.inner.state.lock();
        let mb = st.mailboxes.get(&mailbox).ok_or(LookupError::NotFound)?;
        if mb.info.expires_at_ms <= self.now_ms() {
            return Err(LookupError::NotFound);
        }
        Ok(mb
            .messages
            .range(since_seq.saturating_add(1)..)
            .take(limit)
            .map(|(_, (m, _))| m.clone())
            .collect())
    }

    /// One message's listing view.
    pub fn message_meta(&self, id: MessageId) -> Result<MessageMeta, LookupError> {
        let st = self.inner.state.lock();
        let mb = st.mailboxes.get(&id.mailbox).ok_or(LookupError::NotFound)?;
        if mb.info.expires_at_ms <= self.now_ms() {
            return Err(LookupError::NotFound);
        }
        mb.messages
            .get(&id.seq)
            .map(|(m, _)| m.clone())
            .ok_or(LookupError::NotFound)
    }

    /// The raw bytes exactly as stored. Zero-copy in the log-backed engine
    /// (a `Bytes` owning a slice of a memory-mapped segment); the checksum is
    /// verified before the bytes are handed out.
    pub fn read_raw(&self, id: MessageId) -> Result<Bytes, LookupError> {
        let st = self.inner.state.lock();
        let mb = st.mailboxes.get(&id.mailbox).ok_or(LookupError::NotFound)?;
        if mb.info.expires_at_ms <= self.now_ms() {
            return Err(LookupError::NotFound);
        }
        mb.messages
            .get(&id.seq)
            .map(|(_, b)| b.clone())
            .ok_or(LookupError::NotFound)
    }

    /// Delete one message.
    pub async fn delete_message(&self, id: MessageId) -> Result<(), WriteError> {
        let mut st = self.inner.state.lock();
        let mb = st
            .mailboxes
            .get_mut(&id.mailbox)
            .ok_or(WriteError::NotFound)?;
        mb.messages.remove(&id.seq).ok_or(WriteError::NotFound)?;
        mb.info.message_count = mb.messages.len() as u32;
        Ok(())
    }

    /// Create a user.
    pub async fn create_user(&self, name: String) -> Result<UserInfo, WriteError> {
        let now = self.now_ms();
        let mut st = self.inner.state.lock();
        let id = UserId(st.next_id);
        st.next_id += 1;
        let u = UserInfo {
            id,
            name,
            created_at_ms: now,
            subscriptions: Vec::new(),
        };
        st.users.insert(id, u.clone());
        Ok(u)
    }

    /// Record a subscription of `user` to a plan.
    pub async fn add_subscription(
        &self,
        user: UserId,
        sub: Subscription,
    ) -> Result<(), WriteError> {
        let mut st = self.inner.state.lock();
        st.users
            .get_mut(&user)
            .ok_or(WriteError::NotFound)?
            .subscriptions
            .push(sub);
        Ok(())
    }

    /// A user by id.
    pub fn user(&self, id: UserId) -> Option<UserInfo> {
        self.inner.state.lock().users.get(&id).cloned()
    }

    /// Store a new API key (its hash and display prefix) for `user`.
    pub async fn create_api_key(
        &self,
        user: UserId,
        hash: [u8; 32],
        prefix: String,
    ) -> Result<ApiKeyInfo, WriteError> {
        let now = self.now_ms();
        let mut st = self.inner.state.lock();
        if !st.users.contains_key(&user) {
            return Err(WriteError::NotFound);
        }
        if st.keys.values().any(|k| k.hash == hash) {
            return Err(WriteError::AlreadyExists);
        }
        let id = ApiKeyId(st.next_id);
        st.next_id += 1;
        let k = ApiKeyInfo {
            id,
            user,
            hash,
            prefix,
            created_at_ms: now,
            revoked_at_ms: None,
        };
        st.keys.insert(id, k.clone());
        Ok(k)
    }

    /// Revoke a key; later lookups still find it, with `revoked_at_ms` set.
    pub async fn revoke_api_key(&self, id: ApiKeyId) -> Result<(), WriteError> {
        let now = self.now_ms();
        let mut st = self.inner.state.lock();
        let k = st.keys.get_mut(&id).ok_or(WriteError::NotFound)?;
        k.revoked_at_ms.get_or_insert(now);
        Ok(())
    }

    /// The key with this SHA-256, revoked or not (the caller checks).
    pub fn api_key_by_hash(&self, hash: &[u8; 32]) -> Option<ApiKeyInfo> {
        self.inner
            .state
            .lock()
            .keys
            .values()
            .find(|k| &k.hash == hash)
            .cloned()
    }

    /// All keys of a user, oldest first.
    pub fn api_keys_of(&self, user: UserId) -> Vec<ApiKeyInfo> {
        let st = self.inner.state.lock();
        let mut v: Vec<_> = st
            .keys
            .values()
            .filter(|k| k.user == user)
            .cloned()
            .collect();
        v.sort_by_key(|k| k.id);
        v
    }

    /// Subscribe to a mailbox's events. Events are only for messages committed
    /// after this call; to resume, subscribe first, then replay
    /// [`Engine::list_messages`] past the last seen sequence, then drop live
    /// events whose sequence was already replayed.
    pub fn subscribe(&self, mailbox: MailboxId) -> Result<Subscriber, LookupError> {
        if self.mailbox_by_id(mailbox).is_none() {
            return Err(LookupError::NotFound);
        }
        Ok(self.inner.hub.subscribe(mailbox))
    }

    /// Run one compaction pass now (the background owner calls the same code).
    pub fn compact_now(&self) -> Result<CompactionReport, StorageError> {
        let now = self.now_ms();
        let mut st = self.inner.state.lock();
        let expired: Vec<MailboxId> = st
            .mailboxes
            .values()
            .filter(|m| m.info.expires_at_ms <= now)
            .map(|m| m.info.id)
            .collect();
        for id in expired {
            if let Some(mb) = st.mailboxes.remove(&id) {
                if st.by_address.get(&mb.info.address) == Some(&id) {
                    st.by_address.remove(&mb.info.address);
                }
                self.inner.hub.close_mailbox(id);
            }
        }
        Ok(CompactionReport::default())
    }

    /// Numbers for metrics and readiness.
    pub fn stats(&self) -> EngineStats {
        let st = self.inner.state.lock();
        EngineStats {
            mailboxes: st.mailboxes.len() as u64,
            users: st.users.len() as u64,
            messages: st.mailboxes.values().map(|m| m.messages.len() as u64).sum(),
            subscribers: self.inner.hub.subscriber_count(),
            events_published: self.inner.hub.published(),
            ..EngineStats::default()
        }
    }

    /// Stop accepting appends, finish the batches in flight, sync, stop the
    /// writer and compaction threads. Idempotent.
    pub fn shutdown(&self) {
        self.inner.hub.close_all();
    }
}
