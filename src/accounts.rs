//! The cluster's accounts replica (`uncorreo_cluster::accounts`) behind the
//! API's accounts interface (`uncorreo_api::accounts::Accounts`), on a
//! thread of its own that follows the bucket.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uncorreo_api::accounts::{Accounts, AccountsError, BoxFuture, MailboxCounter};
use uncorreo_cluster::accounts::{self as kv, AccountsReplica, KeyRecord, UserRecord};
use uncorreo_engine::campaign::CampaignId;
use uncorreo_engine::{ApiKeyId, ApiKeyInfo, Engine, Subscription, UserId, UserInfo};

use crate::StartError;

/// How many records of this host's ended campaigns a new campaign removes
/// at most (each one NATS request), so they never pile up in the bucket.
const ENDED_CAMPAIGNS_PER_CLAIM: usize = 4;

/// Users and keys from the cluster's replica; the engine only for its clock.
pub struct ClusterAccounts {
    replica: Arc<AccountsReplica>,
    engine: Engine,
    node: String,
}

impl ClusterAccounts {
    /// The replica itself, for the routing layer's campaign homes.
    pub fn replica(&self) -> Arc<AccountsReplica> {
        Arc::clone(&self.replica)
    }

    /// Test hook: see `AccountsReplica::hold_watch_for_tests`.
    #[doc(hidden)]
    pub fn hold_watch_for_tests(&self, held: bool) {
        self.replica.hold_watch_for_tests(held);
    }

    /// The user a live key stands for (for SMTP `AUTH`).
    pub fn key_user(&self, hash: &[u8; 32]) -> Option<UserId> {
        let key = self
            .replica
            .key_by_hash(hash)
            .filter(|k| k.revoked_at_ms.is_none())?;
        let user = self.replica.user(key.user)?;
        user.disabled_at_ms.is_none().then_some(UserId(user.id))
    }
}

fn user_info(u: UserRecord) -> UserInfo {
    UserInfo {
        id: UserId(u.id),
        name: u.name,
        created_at_ms: u.created_at_ms,
        subscriptions: u
            .subscriptions
            .into_iter()
            .map(|s| Subscription {
                plan: s.plan,
                starts_at_ms: s.starts_at_ms,
                ends_at_ms: s.ends_at_ms,
            })
            .collect(),
    }
}

fn key_info(k: KeyRecord) -> Option<ApiKeyInfo> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&k.hash, &mut hash).ok()?;
    Some(ApiKeyInfo {
        id: ApiKeyId(k.id),
        user: UserId(k.user),
        hash,
        prefix: k.prefix,
        created_at_ms: k.created_at_ms,
        revoked_at_ms: k.revoked_at_ms,
    })
}

fn error(e: kv::AccountsError) -> AccountsError {
    match e {
        kv::AccountsError::NotFound => AccountsError::NotFound,
        kv::AccountsError::AlreadyExists => AccountsError::AlreadyExists,
        e @ (kv::AccountsError::Unavailable(_) | kv::AccountsError::Contended) => {
            AccountsError::Unavailable(e.to_string())
        }
        kv::AccountsError::Corrupt(why) => AccountsError::Corrupt(why),
        // Only a mint with a limit answers this; it maps it with the limit.
        kv::AccountsError::KeyLimit => AccountsError::KeyLimit(0),
    }
}

impl Accounts for ClusterAccounts {
    fn user(&self, id: UserId) -> Option<UserInfo> {
        self.replica.user(id.0).map(user_info)
    }
    fn users(&self) -> Vec<UserInfo> {
        self.replica.users().into_iter().map(user_info).collect()
    }
    fn api_key_by_hash(&self, hash: &[u8; 32]) -> Option<ApiKeyInfo> {
        self.replica.key_by_hash(hash).and_then(key_info)
    }
    fn api_key(&self, id: ApiKeyId) -> Option<ApiKeyInfo> {
        self.replica.key(id.0).and_then(key_info)
    }
    fn api_keys_of(&self, user: UserId) -> Vec<ApiKeyInfo> {
        self.replica
            .keys_of(user.0)
            .into_iter()
            .filter_map(key_info)
            .collect()
    }
    fn user_disabled_at(&self, user: UserId) -> Option<u64> {
        self.replica.user(user.0).and_then(|u| u.disabled_at_ms)
    }
    fn create_user(&self, name: String) -> BoxFuture<'_, Result<UserInfo, AccountsError>> {
        Box::pin(async move {
            let now = self.engine.now_ms();
            self.replica
                .create_user(name, now)
                .await
                .map(user_info)
                .map_err(error)
        })
    }
    fn add_subscription(
        &self,
        user: UserId,
        subscription: Subscription,
        replace: bool,
    ) -> BoxFuture<'_, Result<(), AccountsError>> {
        Box::pin(async move {
            let record = kv::SubscriptionRecord {
                plan: subscription.plan,
                starts_at_ms: subscription.starts_at_ms,
                ends_at_ms: subscription.ends_at_ms,
            };
            self.replica
                .add_subscription(user.0, record, replace)
                .await
                .map_err(error)
        })
    }
    fn create_api_key(
        &self,
        user: UserId,
        hash: [u8; 32],
        prefix: String,
        max_active: Option<usize>,
    ) -> BoxFuture<'_, Result<ApiKeyInfo, AccountsError>> {
        Box::pin(async move {
            let now = self.engine.now_ms();
            let key = self
                .replica
                .create_key(user.0, hash, prefix, now, max_active)
                .await
                .map_err(|e| match e {
                    kv::AccountsError::KeyLimit => AccountsError::KeyLimit(max_active.unwrap_or(0)),
                    e => error(e),
                })?;
            key_info(key).ok_or_else(|| AccountsError::Corrupt("a key's hash".to_owned()))
        })
    }
    fn revoke_api_key(&self, id: ApiKeyId) -> BoxFuture<'_, Result<(), AccountsError>> {
        Box::pin(async move {
            let now = self.engine.now_ms();
            self.replica.revoke_key(id.0, now).await.map_err(error)
        })
    }
    fn disable_user(&self, user: UserId) -> BoxFuture<'_, Result<(), AccountsError>> {
        Box::pin(async move {
            let now = self.engine.now_ms();
            self.replica.disable_user(user.0, now).await.map_err(error)
        })
    }
    fn mailbox_counter(&self) -> Option<&dyn MailboxCounter> {
        Some(self)
    }
    fn claim_campaign(
        &self,
        id: CampaignId,
        expires_at_ms: u64,
    ) -> BoxFuture<'_, Result<bool, AccountsError>> {
        Box::pin(async move {
            let home = kv::CampaignHome {
                node: self.node.clone(),
                expires_at_ms,
            };
            let claimed = self
                .replica
                .claim_campaign(id.0, &home)
                .await
                .map_err(error)?;
            // The records of this host's ended campaigns only hold their
            // ids: a few go with each new one, so they do not pile up.
            let now = self.engine.now_ms();
            for ended in self
                .replica
                .ended_campaigns_on(&self.node, now, ENDED_CAMPAIGNS_PER_CLAIM)
            {
                if let Err(error) = self.replica.forget_campaign(ended).await {
                    tracing::debug!(%error, "an ended campaign's record stays for now");
                    break;
                }
            }
            Ok(claimed)
        })
    }
    fn forget_campaign(&self, id: CampaignId) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(error) = self.replica.forget_campaign(id.0).await {
                tracing::warn!(%error, campaign = %id, "a deleted campaign's home record stays");
            }
        })
    }
    fn catch_up(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Without NATS the replica stays as it is: the key is
            // checked against what it has.
            if let Err(error) = self.replica.catch_up().await {
                tracing::debug!(%error, "accounts could not catch up");
            }
        })
    }
}

impl MailboxCounter for ClusterAccounts {
    fn set_here(
        &self,
        user: UserId,
        n: u32,
        until_ms: u64,
        max: Option<u32>,
    ) -> BoxFuture<'_, Result<bool, AccountsError>> {
        Box::pin(async move {
            let now = self.engine.now_ms();
            let count = kv::HostCount { n, until_ms };
            self.replica
                .set_mailbox_count(user.0, &self.node, count, max, now)
                .await
                .map_err(error)
        })
    }
    fn here(&self, user: UserId) -> (u32, u64) {
        self.replica
            .mailbox_counts(user.0)
            .and_then(|c| c.hosts.get(&self.node).copied())
            .map_or((0, 0), |c| (c.n, c.until_ms))
    }
    fn counted_here(&self) -> Vec<UserId> {
        self.replica
            .counted_on(&self.node)
            .into_iter()
            .map(|(user, _)| UserId(user))
            .collect()
    }
}

/// Copies the users and keys this host made before it joined a cluster
/// (in its own engine, ids below `ID_BASE`) into the accounts bucket, so
/// their keys go on opening their mailboxes (SCALE.md, "Accounts"). A user
/// the replica holds whole already costs no write, so a restart writes
/// nothing. A
/// user whose id or key another host's import took first is not imported
/// and is logged; NATS failing is an error (the host does not start, as
/// when it cannot read the bucket).
async fn import_own_accounts(
    replica: &AccountsReplica,
    engine: &Engine,
) -> Result<(), kv::AccountsError> {
    let users = engine.users();
    if users.is_empty() {
        return Ok(());
    }
    replica.catch_up().await?;
    for user in users {
        let id = user.id;
        let keys: Vec<KeyRecord> = engine
            .api_keys_of(id)
            .into_iter()
            .map(|k| KeyRecord {
                id: k.id.0,
                user: k.user.0,
                hash: hex::encode(k.hash),
                prefix: k.prefix,
                created_at_ms: k.created_at_ms,
                revoked_at_ms: k.revoked_at_ms,
            })
            .collect();
        let record = UserRecord {
            id: id.0,
            name: user.name,
            created_at_ms: user.created_at_ms,
            subscriptions: user
                .subscriptions
                .into_iter()
                .map(|s| kv::SubscriptionRecord {
                    plan: s.plan,
                    starts_at_ms: s.starts_at_ms,
                    ends_at_ms: s.ends_at_ms,
                })
                .collect(),
            disabled_at_ms: engine.user_disabled_at(id),
        };
        match replica.import_user(record, keys).await? {
            kv::Imported::Added => {
                tracing::info!(user = id.0, "a user made before this host joined is now in the cluster's accounts");
            }
            kv::Imported::Present => {}
            kv::Imported::Collides => tracing::error!(
                user = id.0,
                "a user made before this host joined has the id (or a key) of another user in the cluster's accounts: not imported, its keys open nothing in cluster mode"
            ),
        }
    }
    Ok(())
}

/// Reads the whole accounts bucket (a host whose NATS is down does not
/// start), copies this host's own pre-cluster users into it
/// ([`import_own_accounts`]), then follows it on its own thread until
/// `shutdown`.
pub fn start(
    url: &str,
    node: &str,
    timeout: Duration,
    engine: Engine,
    shutdown: CancellationToken,
) -> Result<(Arc<ClusterAccounts>, JoinHandle<()>), StartError> {
    let url = url.to_owned();
    let own = engine.clone();
    let (replica, thread) = crate::cluster::start_thread("accounts", move |ready| async move {
        let (replica, follower) = match AccountsReplica::connect(&url, timeout).await {
            Ok(connected) => connected,
            Err(error) => {
                let _ = ready.send(Err(StartError::Accounts(error)));
                return;
            }
        };
        // The import writes through the replica, which applies its writes
        // only while it follows the bucket: the host is ready once done.
        let import = async {
            match import_own_accounts(&replica, &own).await {
                Ok(()) => {
                    if ready.send(Ok(Arc::clone(&replica))).is_ok() {
                        std::future::pending::<()>().await;
                    }
                }
                Err(error) => {
                    let _ = ready.send(Err(StartError::AccountsImport(error)));
                }
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = replica.follow(follower) => {}
            () = import => {}
        }
    })?;
    let node = node.to_owned();
    Ok((
        Arc::new(ClusterAccounts {
            replica,
            engine,
            node,
        }),
        thread,
    ))
}
