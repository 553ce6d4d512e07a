//! Users and API keys of a cluster: one source of truth, the JetStream
//! key-value bucket `uncorreo_accounts`, and a replica of it in every host's
//! memory, kept by a watch (SCALE.md, "Accounts").
//!
//! - Keys of the bucket: `user.<id>` and `key.<id>` (JSON records), and the
//!   counters `next.user` and `next.key`, which hand out ids by
//!   compare-and-set, so two hosts never give out the same id. Ids start
//!   above [`ID_BASE`]: a host's own (single-host) users count from 1 and
//!   can never be mistaken for a cluster user.
//! - Two per-user records hold limits across hosts by compare-and-set:
//!   `mailboxes.<user>`, each host's count of the user's live mailboxes
//!   ([`MailboxCounts`]), and `keyslots.<user>`, the user's key mints in
//!   flight ([`KeySlots`]), so `max_mailboxes` and `max_api_keys_per_user`
//!   hold across the cluster and not per host.
//! - `campaign.<id>` (hex, as in the campaign's domain `c-<id>.…`) names
//!   the host a load-test campaign lives on ([`CampaignHome`]), so every
//!   host forwards its mail there from its replica, without a round trip.
//!   Written by `create` when the campaign is made: the first writer of an
//!   id wins, so two hosts' random ids can never both stand.
//! - An API key is stored only as its SHA-256 (hex).
//! - Reads ([`AccountsReplica::key_by_hash`], …) are the replica's: no
//!   round trip. While NATS is unreachable they answer from the last
//!   revision applied.
//! - Every write is a compare-and-set (retried a bounded number of times
//!   on a conflict), and returns only once this host's replica has applied
//!   the revision it wrote, so the writer reads its own write on this host.
//!   A write that NATS does not confirm, or that the replica does not see
//!   within the request timeout, is [`AccountsError::Unavailable`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::nats::{NatsBucket, OpenError};
use crate::store::{CasBucket, CasError};

/// The bucket's name.
pub const ACCOUNTS_BUCKET: &str = "uncorreo_accounts";

/// Cluster user and key ids are above this; a single host's own ids stay
/// far below it (they count records of one disk).
pub const ID_BASE: u64 = 1 << 40;

/// How often a compare-and-set that lost to another writer is tried again
/// before the caller gets [`AccountsError::Contended`].
const CAS_TRIES: usize = 16;

/// The longest a request with an unknown key waits for the replica to
/// catch up with the bucket.
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(1);

/// How long apart the watch is re-opened after NATS dropped it.
const REWATCH_AFTER: Duration = Duration::from_millis(250);

/// One host's count of one user's live mailboxes, in `mailboxes.<user>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCount {
    /// Live mailboxes (and creations in flight) of the user on the host.
    pub n: u32,
    /// When the last of them expires (ms since epoch): past it, the count
    /// is stale and nobody counts it, so a host that never comes back
    /// cannot hold a user's slots past its mailboxes' own lives.
    pub until_ms: u64,
}

/// `mailboxes.<user>`: each host's [`HostCount`], by node id. Each host
/// writes only its own entry, always to the truth of its own engine; the
/// limit is checked on the sum, by compare-and-set on the whole record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxCounts {
    /// Node id → its count; a host with none has no entry.
    pub hosts: BTreeMap<String, HostCount>,
}

impl MailboxCounts {
    /// The live mailboxes counted on hosts other than `node` at `now_ms`.
    pub fn others(&self, node: &str, now_ms: u64) -> u32 {
        self.hosts
            .iter()
            .filter(|(host, count)| host.as_str() != node && count.until_ms > now_ms)
            .fold(0u32, |sum, (_, count)| sum.saturating_add(count.n))
    }
}

/// `keyslots.<user>`: key ids whose mint passed the limit and whose
/// `key.<id>` may not be in every replica yet, with when (ms since epoch).
/// A mint counts the user's live keys in the replica plus these, and adds
/// its own by compare-and-set, so two hosts can never both take the last
/// slot. An entry goes at the next mint once its key is in the replica, or
/// once it is older than the mint's bound ([`AccountsReplica::pending_for`]):
/// a mint that crashed after taking its slot gives it back then.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySlots {
    /// Key id → when its mint took the slot.
    pub pending: BTreeMap<u64, u64>,
}

/// A plan subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// Plan name.
    pub plan: String,
    /// Start (ms since epoch).
    pub starts_at_ms: u64,
    /// End (ms since epoch), open-ended if absent.
    pub ends_at_ms: Option<u64>,
}

/// A user as stored in `user.<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Id (above [`ID_BASE`]).
    pub id: u64,
    /// Free text.
    pub name: String,
    /// Creation (ms since epoch).
    pub created_at_ms: u64,
    /// Oldest first.
    pub subscriptions: Vec<SubscriptionRecord>,
    /// When disabled; a disabled user's keys open nothing.
    pub disabled_at_ms: Option<u64>,
}

/// An API key as stored in `key.<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Id (above [`ID_BASE`]).
    pub id: u64,
    /// Its user.
    pub user: u64,
    /// SHA-256 of the key, hex.
    pub hash: String,
    /// First characters, for display.
    pub prefix: String,
    /// Creation (ms since epoch).
    pub created_at_ms: u64,
    /// Revocation (ms since epoch).
    pub revoked_at_ms: Option<u64>,
}

/// What [`AccountsReplica::import_user`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// The user, or some of its keys, were written now.
    Added,
    /// Everything was in the bucket already.
    Present,
    /// The bucket holds something else under one of its ids, or one of its
    /// keys' hashes: the rest of this user was not written.
    Collides,
}

/// The same user as made on its host: a later change in the cluster (a
/// plan, a disable) does not make it another user.
fn same_user(present: &UserRecord, imported: &UserRecord) -> bool {
    present.id == imported.id
        && present.name == imported.name
        && present.created_at_ms == imported.created_at_ms
}

/// The value under `campaign.<id>`: the host a campaign lives on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignHome {
    /// The node id of the host that made the campaign (and keeps it).
    pub node: String,
    /// When the campaign ends (ms since the epoch); past it the record
    /// names nobody.
    pub expires_at_ms: u64,
}

/// The store key of a campaign's home record.
pub fn campaign_key(id: u64) -> String {
    format!("campaign.{id:x}")
}

/// Why an accounts write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// NATS did not confirm the write, or this host's replica did not see
    /// it in time; the write may or may not have happened. Retry.
    #[error("accounts are unavailable: {0}")]
    Unavailable(String),
    /// Other writers won the compare-and-set every time; retry.
    #[error("accounts are busy: too many concurrent changes")]
    Contended,
    /// No such user or key.
    #[error("no such user or key")]
    NotFound,
    /// A key with that hash exists.
    #[error("the key exists")]
    AlreadyExists,
    /// A stored value does not decode (written by something else).
    #[error("a stored account value does not decode: {0}")]
    Corrupt(String),
    /// The user holds as many live keys as the limit allows.
    #[error("the user holds the most keys allowed")]
    KeyLimit,
}

impl From<CasError> for AccountsError {
    fn from(error: CasError) -> Self {
        match error {
            CasError::Conflict => AccountsError::Contended,
            CasError::Unavailable(why) => AccountsError::Unavailable(why),
        }
    }
}

/// The replica could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AccountsOpenError {
    /// The bucket did not open.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The first read of the bucket failed or did not finish in time.
    #[error("reading the accounts bucket: {0}")]
    Load(String),
}

#[derive(Debug, Default)]
struct Replica {
    users: HashMap<u64, UserRecord>,
    keys: BTreeMap<u64, KeyRecord>,
    by_hash: HashMap<[u8; 32], u64>,
    by_user: HashMap<u64, BTreeSet<u64>>,
    mailboxes: HashMap<u64, MailboxCounts>,
    campaigns: HashMap<u64, CampaignHome>,
}

impl Replica {
    fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        if let Some(id) = key
            .strip_prefix("user.")
            .and_then(|s| s.parse::<u64>().ok())
        {
            match value.map(serde_json::from_slice::<UserRecord>) {
                Some(Ok(user)) if user.id == id => {
                    self.users.insert(id, user);
                }
                Some(_) => tracing::error!(key, "an accounts value does not decode; ignored"),
                None => {
                    self.users.remove(&id);
                }
            }
        } else if let Some(id) = key
            .strip_prefix("mailboxes.")
            .and_then(|s| s.parse::<u64>().ok())
        {
            match value.map(serde_json::from_slice::<MailboxCounts>) {
                Some(Ok(counts)) => {
                    self.mailboxes.insert(id, counts);
                }
                Some(Err(_)) => tracing::error!(key, "an accounts value does not decode; ignored"),
                None => {
                    self.mailboxes.remove(&id);
                }
            }
        } else if let Some(id) = key
            .strip_prefix("campaign.")
            .and_then(|s| u64::from_str_radix(s, 16).ok())
        {
            match value.map(serde_json::from_slice::<CampaignHome>) {
                Some(Ok(home)) => {
                    self.campaigns.insert(id, home);
                }
                Some(Err(_)) => tracing::error!(key, "an accounts value does not decode; ignored"),
                None => {
                    self.campaigns.remove(&id);
                }
            }
        } else if let Some(id) = key.strip_prefix("key.").and_then(|s| s.parse::<u64>().ok()) {
            self.remove_key(id);
            let Some(value) = value else { return };
            let decoded = serde_json::from_slice::<KeyRecord>(value)
                .ok()
                .filter(|k| k.id == id)
                .and_then(|k| decode_hash(&k.hash).map(|hash| (k, hash)));
            match decoded {
                // A hash already held by another key id would make the
                // lookup ambiguous; the older key keeps it.
                Some((key, hash)) if !self.by_hash.contains_key(&hash) => {
                    self.by_hash.insert(hash, id);
                    self.by_user.entry(key.user).or_default().insert(id);
                    self.keys.insert(id, key);
                }
                Some(_) => tracing::error!(key, "an API key hash is held by another key; ignored"),
                None => tracing::error!(key, "an accounts value does not decode; ignored"),
            }
        }
    }

    fn remove_key(&mut self, id: u64) {
        if let Some(old) = self.keys.remove(&id) {
            if let Some(hash) = decode_hash(&old.hash) {
                self.by_hash.remove(&hash);
            }
            if let Some(set) = self.by_user.get_mut(&old.user) {
                set.remove(&id);
            }
        }
    }
}

fn decode_hash(hex_hash: &str) -> Option<[u8; 32]> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut hash).ok()?;
    Some(hash)
}

/// This host's replica of the accounts bucket, and the writes to it.
pub struct AccountsReplica {
    bucket: NatsBucket,
    replica: RwLock<Replica>,
    applied: watch::Sender<u64>,
    timeout: Duration,
    /// Test hook (`hold_watch_for_tests`): whether the watch is held, and
    /// how many catch-ups wait.
    hold: watch::Sender<(bool, u32)>,
}

impl std::fmt::Debug for AccountsReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountsReplica")
            .field("applied", &*self.applied.borrow())
            .finish()
    }
}

/// The watch that keeps a replica; run it with [`AccountsReplica::follow`].
pub struct Follower {
    watch: Option<kv::Watch>,
}

impl AccountsReplica {
    /// Opens the bucket and reads all of it before returning, so a host
    /// never checks a key against a partial replica. Each NATS request,
    /// and a write's wait for its own revision, is bounded by `timeout`.
    pub async fn connect(
        url: &str,
        timeout: Duration,
    ) -> Result<(Arc<AccountsReplica>, Follower), AccountsOpenError> {
        let bucket = NatsBucket::open(url, ACCOUNTS_BUCKET, None, timeout).await?;
        let last = bucket
            .kv()
            .stream
            .get_info()
            .await
            .map_err(|e| AccountsOpenError::Load(e.to_string()))?
            .state
            .last_sequence;
        let (applied, _) = watch::channel(0);
        let (hold, _) = watch::channel((false, 0));
        let replica = Arc::new(AccountsReplica {
            bucket,
            replica: RwLock::new(Replica::default()),
            applied,
            timeout,
            hold,
        });
        let mut watch = replica
            .bucket
            .kv()
            .watch_all_from_revision(1)
            .await
            .map_err(|e| AccountsOpenError::Load(e.to_string()))?;
        let load = async {
            while replica.applied_revision() < last {
                match watch.next().await {
                    Some(Ok(entry)) => replica.apply(&entry),
                    Some(Err(e)) => return Err(AccountsOpenError::Load(e.to_string())),
                    None => return Err(AccountsOpenError::Load("the watch ended".to_owned())),
                }
            }
            Ok(())
        };
        tokio::time::timeout(timeout.saturating_mul(4), load)
            .await
            .map_err(|_| AccountsOpenError::Load("timed out".to_owned()))??;
        Ok((replica, Follower { watch: Some(watch) }))
    }

    /// Applies the bucket's changes as they come, re-opening the watch
    /// after the last applied revision when NATS drops it. Runs until the
    /// future is dropped.
    pub async fn follow(&self, mut follower: Follower) {
        loop {
            let watch = match follower.watch.take() {
                Some(watch) => Some(watch),
                None => self
                    .bucket
                    .kv()
                    .watch_all_from_revision(self.applied_revision() + 1)
                    .await
                    .ok(),
            };
            if let Some(mut watch) = watch {
                while let Some(Ok(entry)) = watch.next().await {
                    if self.hold.borrow().0 {
                        let mut hold = self.hold.subscribe();
                        let _ = hold.wait_for(|(held, waiting)| !held || *waiting > 0).await;
                    }
                    self.apply(&entry);
                }
                tracing::warn!("the accounts watch ended; re-opening it");
            }
            tokio::time::sleep(REWATCH_AFTER).await;
        }
    }

    fn apply(&self, entry: &kv::Entry) {
        let value = match entry.operation {
            kv::Operation::Put => Some(&entry.value[..]),
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        self.replica.write().apply(&entry.key, value);
        self.applied.send_if_modified(|applied| {
            let newer = entry.revision > *applied;
            *applied = (*applied).max(entry.revision);
            newer
        });
    }

    /// Test hook: while `held`, the watch applies a change only while a
    /// [`Self::catch_up`] waits for it, so a test can tell a check that
    /// catches up from one that takes the replica as it is (the watch is
    /// otherwise faster than any client). Not for production use.
    #[doc(hidden)]
    pub fn hold_watch_for_tests(&self, held: bool) {
        self.hold.send_modify(|(h, _)| *h = held);
    }

    /// The last bucket revision this replica applied.
    pub fn applied_revision(&self) -> u64 {
        *self.applied.borrow()
    }

    /// A user.
    pub fn user(&self, id: u64) -> Option<UserRecord> {
        self.replica.read().users.get(&id).cloned()
    }

    /// Every user, by id.
    pub fn users(&self) -> Vec<UserRecord> {
        let mut users: Vec<_> = self.replica.read().users.values().cloned().collect();
        users.sort_by_key(|u| u.id);
        users
    }

    /// The key whose SHA-256 is `hash`.
    pub fn key_by_hash(&self, hash: &[u8; 32]) -> Option<KeyRecord> {
        let replica = self.replica.read();
        let id = replica.by_hash.get(hash)?;
        replica.keys.get(id).cloned()
    }

    /// A key by id.
    pub fn key(&self, id: u64) -> Option<KeyRecord> {
        self.replica.read().keys.get(&id).cloned()
    }

    /// A user's keys, oldest first.
    pub fn keys_of(&self, user: u64) -> Vec<KeyRecord> {
        let replica = self.replica.read();
        replica
            .by_user
            .get(&user)
            .into_iter()
            .flatten()
            .filter_map(|id| replica.keys.get(id).cloned())
            .collect()
    }

    /// Creates a user with a fresh id.
    pub async fn create_user(
        &self,
        name: String,
        now_ms: u64,
    ) -> Result<UserRecord, AccountsError> {
        let id = self.allocate("next.user").await?;
        let user = UserRecord {
            id,
            name,
            created_at_ms: now_ms,
            subscriptions: Vec::new(),
            disabled_at_ms: None,
        };
        let revision = self
            .bucket
            .create(&format!("user.{id}"), encode(&user)?)
            .await?;
        self.until_applied(revision).await?;
        Ok(user)
    }

    /// Copies a user this host made before it joined the cluster (its id
    /// below [`ID_BASE`], from its own engine) and the user's keys into the
    /// bucket as they are, so its keys open its mailboxes in cluster mode.
    /// Each record is written by `create`: a user or key already in the
    /// bucket is never overwritten (an import at an earlier start, or a
    /// change made in the cluster since, stays). [`Imported::Collides`]
    /// when the bucket holds a different user or key under one of the ids
    /// (another host made its own users before it joined too) or a key with
    /// the same hash: then nothing of this user is written (checked in the
    /// replica first; a concurrent import of the same id that wins the
    /// `create` stops the rest). A user whose records the replica holds
    /// already is [`Imported::Present`] without a write. The caller catches
    /// up first.
    pub async fn import_user(
        &self,
        user: UserRecord,
        keys: Vec<KeyRecord>,
    ) -> Result<Imported, AccountsError> {
        if user.id >= ID_BASE || keys.iter().any(|k| k.id >= ID_BASE || k.user != user.id) {
            return Ok(Imported::Collides);
        }
        // Everything is checked before anything is written, so a user that
        // collides leaves nothing of itself behind.
        let user_present = match self.user(user.id) {
            Some(present) if same_user(&present, &user) => true,
            Some(_) => return Ok(Imported::Collides),
            None => false,
        };
        let mut absent = Vec::with_capacity(keys.len());
        for key in keys {
            match self.key(key.id) {
                // Revoked in the cluster since: still the same key.
                Some(present) if present.user == key.user && present.hash == key.hash => {}
                Some(_) => return Ok(Imported::Collides),
                None => {
                    let taken = decode_hash(&key.hash)
                        .is_none_or(|hash| self.replica.read().by_hash.contains_key(&hash));
                    if taken {
                        return Ok(Imported::Collides);
                    }
                    absent.push(key);
                }
            }
        }
        let mut written = None;
        let records = (!user_present)
            .then(|| (format!("user.{}", user.id), encode(&user)))
            .into_iter()
            .chain(
                absent
                    .iter()
                    .map(|key| (format!("key.{}", key.id), encode(key))),
            );
        for (name, record) in records {
            // Another host's import may have written the id since the check.
            match self.bucket.create(&name, record?).await {
                Ok(revision) => written = Some(revision),
                Err(CasError::Conflict) => return Ok(Imported::Collides),
                Err(e) => return Err(e.into()),
            }
        }
        match written {
            Some(revision) => {
                self.until_applied(revision).await?;
                Ok(Imported::Added)
            }
            None => Ok(Imported::Present),
        }
    }

    /// Adds a subscription; with `replace`, ends every earlier one at its start.
    pub async fn add_subscription(
        &self,
        user: u64,
        subscription: SubscriptionRecord,
        replace: bool,
    ) -> Result<(), AccountsError> {
        self.change_user(user, |u| {
            if replace {
                for earlier in &mut u.subscriptions {
                    let end = earlier.ends_at_ms.unwrap_or(u64::MAX);
                    earlier.ends_at_ms = Some(end.min(subscription.starts_at_ms));
                }
            }
            u.subscriptions.push(subscription.clone());
        })
        .await
    }

    /// Disables a user (idempotent: the first time stays).
    pub async fn disable_user(&self, user: u64, now_ms: u64) -> Result<(), AccountsError> {
        self.change_user(user, |u| {
            u.disabled_at_ms.get_or_insert(now_ms);
        })
        .await
    }

    /// Stores a new key of `user` (who must exist). With `max_active`,
    /// refuses ([`AccountsError::KeyLimit`]) when the user already holds
    /// that many live keys, counted across the cluster: the replica's live
    /// keys (caught up with the bucket first) plus the mints other hosts
    /// have in flight, whose slots are taken by compare-and-set on
    /// `keyslots.<user>` ([`KeySlots`]) before the key is written.
    pub async fn create_key(
        &self,
        user: u64,
        hash: [u8; 32],
        prefix: String,
        now_ms: u64,
        max_active: Option<usize>,
    ) -> Result<KeyRecord, AccountsError> {
        if self.user(user).is_none() {
            return Err(AccountsError::NotFound);
        }
        if self.replica.read().by_hash.contains_key(&hash) {
            return Err(AccountsError::AlreadyExists);
        }
        let id = self.allocate("next.key").await?;
        let slot_taken = std::time::Instant::now();
        if let Some(max) = max_active {
            self.catch_up().await?;
            self.take_key_slot(user, id, now_ms, max).await?;
        }
        let key = KeyRecord {
            id,
            user,
            hash: hex::encode(hash),
            prefix,
            created_at_ms: now_ms,
            revoked_at_ms: None,
        };
        // Past half the slot's life the key is not written: another host
        // may drop the slot as abandoned once it is older than
        // `pending_for`, and a key written after that would be one too many.
        if max_active.is_some() && slot_taken.elapsed() > self.pending_for() / 2 {
            self.give_back_key_slot(user, id).await;
            return Err(AccountsError::Unavailable(
                "the key slot was taken too long ago".to_owned(),
            ));
        }
        let revision = match self
            .bucket
            .create(&format!("key.{id}"), encode(&key)?)
            .await
        {
            Ok(revision) => revision,
            Err(e) => {
                if max_active.is_some() {
                    self.give_back_key_slot(user, id).await;
                }
                return Err(e.into());
            }
        };
        self.until_applied(revision).await?;
        Ok(key)
    }

    /// Drops the slot of a mint whose key was not written, at once rather
    /// than when it ages out. Best effort: if NATS does not answer, the
    /// slot ages out (`pending_for`). A key that was written after all (the
    /// answer was lost) is counted through the replica anyway.
    async fn give_back_key_slot(&self, user: u64, id: u64) {
        let name = format!("keyslots.{user}");
        for _ in 0..CAS_TRIES {
            let Ok(Some(current)) = self.bucket.get(&name).await else {
                return;
            };
            let Ok(mut slots) = decode::<KeySlots>(&current.value) else {
                return;
            };
            if slots.pending.remove(&id).is_none() {
                return;
            }
            let Ok(value) = encode(&slots) else { return };
            match self.bucket.update(&name, value, current.revision).await {
                Err(CasError::Conflict) => continue,
                Ok(_) | Err(CasError::Unavailable(_)) => return,
            }
        }
    }

    /// How long a key slot without its key counts before a mint drops it
    /// (a mint that crashed between the two writes): longer than a mint
    /// takes, each of its requests being bounded by the request timeout,
    /// with room for the hosts' clocks to differ.
    pub fn pending_for(&self) -> Duration {
        self.timeout.saturating_mul(4).max(Duration::from_secs(60))
    }

    async fn take_key_slot(
        &self,
        user: u64,
        id: u64,
        now_ms: u64,
        max: usize,
    ) -> Result<(), AccountsError> {
        let name = format!("keyslots.{user}");
        let pending_ms = u64::try_from(self.pending_for().as_millis()).unwrap_or(u64::MAX);
        for _ in 0..CAS_TRIES {
            let current = self.bucket.get(&name).await.map_err(unavailable)?;
            let mut slots: KeySlots = match &current {
                Some(current) => decode(&current.value)?,
                None => KeySlots::default(),
            };
            let live: BTreeSet<u64> = self
                .keys_of(user)
                .into_iter()
                .filter(|k| k.revoked_at_ms.is_none())
                .map(|k| k.id)
                .collect();
            // A slot whose key is in the replica is counted there (or was
            // revoked); an old one without its key was abandoned.
            slots.pending.retain(|key, at| {
                self.key(*key).is_none() && now_ms.saturating_sub(*at) < pending_ms
            });
            if live.len() + slots.pending.len() >= max {
                return Err(AccountsError::KeyLimit);
            }
            slots.pending.insert(id, now_ms);
            let written = match current {
                Some(current) => {
                    self.bucket
                        .update(&name, encode(&slots)?, current.revision)
                        .await
                }
                None => self.bucket.create(&name, encode(&slots)?).await,
            };
            match written {
                Ok(_) => return Ok(()),
                Err(CasError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AccountsError::Contended)
    }

    /// The node a live campaign lives on, as this replica last saw it
    /// (`None`: unknown here, or ended at `now_ms`).
    pub fn campaign_home(&self, id: u64, now_ms: u64) -> Option<String> {
        self.replica
            .read()
            .campaigns
            .get(&id)
            .filter(|home| home.expires_at_ms > now_ms)
            .map(|home| home.node.clone())
    }

    /// Records that campaign `id` lives on `home.node`, by `create`:
    /// `Ok(false)` when the id is taken (another host made a campaign with
    /// it, or one of its own ended campaigns still holds it): pick another.
    /// Answers once this host's replica has applied the record.
    pub async fn claim_campaign(
        &self,
        id: u64,
        home: &CampaignHome,
    ) -> Result<bool, AccountsError> {
        match self.bucket.create(&campaign_key(id), encode(home)?).await {
            Ok(revision) => self.until_applied(revision).await.map(|()| true),
            Err(CasError::Conflict) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Up to `limit` campaigns recorded on `node` that ended before
    /// `now_ms`: their records only hold ids, so the home removes them.
    pub fn ended_campaigns_on(&self, node: &str, now_ms: u64, limit: usize) -> Vec<u64> {
        self.replica
            .read()
            .campaigns
            .iter()
            .filter(|(_, home)| home.node == node && home.expires_at_ms <= now_ms)
            .map(|(id, _)| *id)
            .take(limit)
            .collect()
    }

    /// Removes campaign `id`'s home record (the campaign was deleted).
    pub async fn forget_campaign(&self, id: u64) -> Result<(), AccountsError> {
        let deleted = tokio::time::timeout(self.timeout, self.bucket.kv().delete(campaign_key(id)))
            .await
            .map_err(|_| AccountsError::Unavailable("deleting timed out".to_owned()))?;
        deleted.map_err(|e| AccountsError::Unavailable(e.to_string()))
    }

    /// The user's mailbox counts as this replica last saw them.
    pub fn mailbox_counts(&self, user: u64) -> Option<MailboxCounts> {
        self.replica.read().mailboxes.get(&user).cloned()
    }

    /// Users with an entry for `node` in their mailbox counts, and the entry.
    pub fn counted_on(&self, node: &str) -> Vec<(u64, HostCount)> {
        let replica = self.replica.read();
        replica
            .mailboxes
            .iter()
            .filter_map(|(user, counts)| counts.hosts.get(node).map(|c| (*user, *c)))
            .collect()
    }

    /// Sets `node`'s entry in `user`'s mailbox counts to `count`, by
    /// compare-and-set. With `max`, only if the sum over every host with a
    /// live count stays at most `max` (else `Ok(false)`, nothing written):
    /// two hosts creating the user's last mailbox at once cannot both pass.
    pub async fn set_mailbox_count(
        &self,
        user: u64,
        node: &str,
        count: HostCount,
        max: Option<u32>,
        now_ms: u64,
    ) -> Result<bool, AccountsError> {
        let name = format!("mailboxes.{user}");
        for _ in 0..CAS_TRIES {
            let current = self.bucket.get(&name).await.map_err(unavailable)?;
            let mut counts: MailboxCounts = match &current {
                Some(current) => decode(&current.value)?,
                None => MailboxCounts::default(),
            };
            if max.is_some_and(|max| counts.others(node, now_ms).saturating_add(count.n) > max) {
                return Ok(false);
            }
            let old = counts.hosts.get(node).copied();
            if count.n == 0 {
                counts.hosts.remove(node);
            } else {
                counts.hosts.insert(node.to_owned(), count);
            }
            if old == counts.hosts.get(node).copied() {
                return Ok(true);
            }
            let written = match current {
                Some(current) => {
                    self.bucket
                        .update(&name, encode(&counts)?, current.revision)
                        .await
                }
                None => self.bucket.create(&name, encode(&counts)?).await,
            };
            match written {
                Ok(_) => return Ok(true),
                Err(CasError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AccountsError::Contended)
    }

    /// Revokes a key (idempotent: the first time stays).
    pub async fn revoke_key(&self, id: u64, now_ms: u64) -> Result<(), AccountsError> {
        let name = format!("key.{id}");
        for _ in 0..CAS_TRIES {
            let Some(current) = self.bucket.get(&name).await.map_err(unavailable)? else {
                return Err(AccountsError::NotFound);
            };
            let mut key: KeyRecord = decode(&current.value)?;
            if key.revoked_at_ms.is_some() {
                return self.until_applied(current.revision).await;
            }
            key.revoked_at_ms = Some(now_ms);
            match self
                .bucket
                .update(&name, encode(&key)?, current.revision)
                .await
            {
                Ok(revision) => return self.until_applied(revision).await,
                Err(CasError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AccountsError::Contended)
    }

    async fn change_user(
        &self,
        id: u64,
        change: impl Fn(&mut UserRecord),
    ) -> Result<(), AccountsError> {
        let name = format!("user.{id}");
        for _ in 0..CAS_TRIES {
            let Some(current) = self.bucket.get(&name).await.map_err(unavailable)? else {
                return Err(AccountsError::NotFound);
            };
            let mut user: UserRecord = decode(&current.value)?;
            change(&mut user);
            match self
                .bucket
                .update(&name, encode(&user)?, current.revision)
                .await
            {
                Ok(revision) => return self.until_applied(revision).await,
                Err(CasError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AccountsError::Contended)
    }

    /// The next id of `counter`, by compare-and-set: one writer wins each value.
    async fn allocate(&self, counter: &str) -> Result<u64, AccountsError> {
        for _ in 0..CAS_TRIES {
            let written = match self.bucket.get(counter).await.map_err(unavailable)? {
                None => self
                    .bucket
                    .create(counter, Bytes::from_static(b"1"))
                    .await
                    .map(|_| 1),
                Some(current) => {
                    let last: u64 = std::str::from_utf8(&current.value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| AccountsError::Corrupt(counter.to_owned()))?;
                    let next = last + 1;
                    self.bucket
                        .update(counter, Bytes::from(next.to_string()), current.revision)
                        .await
                        .map(|_| next)
                }
            };
            match written {
                Ok(n) => return Ok(ID_BASE + n),
                Err(CasError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AccountsError::Contended)
    }

    /// Waits until this replica applied every change the bucket held when
    /// called: one NATS request, and never longer than [`CATCH_UP_LIMIT`]
    /// in all (it runs before refusing an unknown key, so a flood of
    /// made-up keys while NATS is away costs each request at most that).
    pub async fn catch_up(&self) -> Result<(), AccountsError> {
        self.hold.send_modify(|(_, waiting)| *waiting += 1);
        let _waiting = scopeguard_waiting(&self.hold);
        let catch_up = async {
            let last = self
                .bucket
                .kv()
                .stream
                .get_info()
                .await
                .map_err(|e| AccountsError::Unavailable(e.to_string()))?
                .state
                .last_sequence;
            self.until_applied(last).await
        };
        tokio::time::timeout(CATCH_UP_LIMIT, catch_up)
            .await
            .map_err(|_| AccountsError::Unavailable("catching up timed out".to_owned()))?
    }

    /// Read-your-writes: waits until this replica applied `revision`.
    async fn until_applied(&self, revision: u64) -> Result<(), AccountsError> {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(self.timeout, applied.wait_for(|a| *a >= revision))
            .await
            .map_err(|_| {
                AccountsError::Unavailable("this host's replica has not seen the write yet".into())
            })?
            .map_err(|_| AccountsError::Unavailable("the replica stopped".into()))?;
        Ok(())
    }
}

/// Counts a catch-up out of the test hold when it ends, however it ends.
fn scopeguard_waiting(hold: &watch::Sender<(bool, u32)>) -> impl Drop + '_ {
    struct Waiting<'a>(&'a watch::Sender<(bool, u32)>);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0
                .send_modify(|(_, waiting)| *waiting = waiting.saturating_sub(1));
        }
    }
    Waiting(hold)
}

fn unavailable(error: crate::store::ReadError) -> AccountsError {
    AccountsError::Unavailable(error.0)
}

fn encode<T: Serialize>(value: &T) -> Result<Bytes, AccountsError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| AccountsError::Corrupt(e.to_string()))
}

fn decode<T: for<'a> Deserialize<'a>>(bytes: &[u8]) -> Result<T, AccountsError> {
    serde_json::from_slice(bytes).map_err(|e| AccountsError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u64, user: u64, hash: [u8; 32]) -> Vec<u8> {
        serde_json::to_vec(&KeyRecord {
            id,
            user,
            hash: hex::encode(hash),
            prefix: "uct_x".into(),
            created_at_ms: 1,
            revoked_at_ms: None,
        })
        .unwrap()
    }

    #[test]
    fn a_key_is_found_by_its_hash_and_a_second_key_cannot_take_it() {
        let mut r = Replica::default();
        r.apply("key.7", Some(&key(7, 1, [1; 32])));
        r.apply("key.8", Some(&key(8, 2, [1; 32])));
        assert_eq!(r.by_hash.get(&[1; 32]), Some(&7));
        assert!(!r.keys.contains_key(&8));
    }

    #[test]
    fn a_campaign_record_names_its_home_until_deleted() {
        let mut r = Replica::default();
        let home = CampaignHome {
            node: "a".into(),
            expires_at_ms: 10,
        };
        r.apply(
            &campaign_key(0xabc),
            Some(&serde_json::to_vec(&home).unwrap()),
        );
        assert_eq!(r.campaigns.get(&0xabc), Some(&home));
        r.apply("campaign.abc", None);
        assert!(r.campaigns.is_empty());
        r.apply("campaign.abd", Some(b"{not json"));
        assert!(r.campaigns.is_empty());
    }

    #[test]
    fn a_value_that_does_not_decode_or_names_another_id_opens_nothing() {
        let mut r = Replica::default();
        r.apply("key.7", Some(b"{not json"));
        r.apply("key.9", Some(&key(7, 1, [2; 32])));
        r.apply("user.3", Some(b"[]"));
        assert!(r.by_hash.is_empty() && r.keys.is_empty() && r.users.is_empty());
    }
}
