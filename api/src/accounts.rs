//! Users, their plans and their API keys, behind one interface that the
//! credential check ([`crate::auth`]), `/api/v1/keys` and the operator's
//! commands all go through.
//!
//! Two implementations: [`EngineAccounts`], the engine's shard 0 (one host,
//! exactly as before), and in cluster mode a replica of the accounts bucket
//! (`uncorreo_cluster::accounts`, adapted in the appliance). Reads are
//! local in both; writes may wait for storage or for NATS, and a write that
//! cannot be confirmed is [`AccountsError::Unavailable`] (`503` with
//! `Retry-After`), never a silent loss.

use std::future::Future;
use std::pin::Pin;

use uncorreo_engine::campaign::CampaignId;
use uncorreo_engine::{ApiKeyId, ApiKeyInfo, Engine, Subscription, UserId, UserInfo, WriteError};

use crate::problem::{Kind, Problem};

/// A write in flight.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an accounts write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// No such user or key.
    #[error("no such user or key")]
    NotFound,
    /// A key with that hash exists.
    #[error("the key exists")]
    AlreadyExists,
    /// The store of accounts cannot confirm the write now; retry.
    #[error("accounts are unavailable: {0}")]
    Unavailable(String),
    /// The engine refused.
    #[error(transparent)]
    Storage(WriteError),
    /// A stored account does not decode.
    #[error("a stored account does not decode: {0}")]
    Corrupt(String),
    /// The user holds this many live keys, the most allowed.
    #[error("at most {0} active keys per user")]
    KeyLimit(usize),
}

impl From<WriteError> for AccountsError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::NotFound => AccountsError::NotFound,
            WriteError::AlreadyExists => AccountsError::AlreadyExists,
            other => AccountsError::Storage(other),
        }
    }
}

/// Seconds a client is told to wait when accounts are unavailable.
pub const RETRY_AFTER_SECS: u64 = 2;

impl From<AccountsError> for Problem {
    fn from(error: AccountsError) -> Self {
        match error {
            AccountsError::NotFound => Problem::not_found(),
            AccountsError::Unavailable(why) => {
                tracing::warn!(%why, "an accounts write was not confirmed");
                Problem::new(
                    Kind::Unavailable,
                    "accounts cannot be changed right now; retry",
                )
                .retry_after(RETRY_AFTER_SECS)
            }
            AccountsError::AlreadyExists => Problem::from(WriteError::AlreadyExists),
            AccountsError::KeyLimit(max) => Problem::new(
                Kind::KeyLimit,
                format!("at most {max} active keys per user; revoke one first"),
            ),
            AccountsError::Storage(e) => Problem::from(e),
            AccountsError::Corrupt(why) => {
                tracing::error!(%why, "a stored account does not decode");
                Problem::new(Kind::Internal, "accounts error")
            }
        }
    }
}

/// Where users and keys live. Reads never wait; writes answer once a
/// following read on this host sees them.
pub trait Accounts: Send + Sync {
    /// A user.
    fn user(&self, id: UserId) -> Option<UserInfo>;
    /// Every user.
    fn users(&self) -> Vec<UserInfo>;
    /// The key whose SHA-256 is `hash`, revoked or not.
    fn api_key_by_hash(&self, hash: &[u8; 32]) -> Option<ApiKeyInfo>;
    /// A key by id.
    fn api_key(&self, id: ApiKeyId) -> Option<ApiKeyInfo>;
    /// A user's keys, oldest first, revoked ones included.
    fn api_keys_of(&self, user: UserId) -> Vec<ApiKeyInfo>;
    /// When the user was disabled.
    fn user_disabled_at(&self, user: UserId) -> Option<u64>;
    /// Creates a user with a fresh id.
    fn create_user(&self, name: String) -> BoxFuture<'_, Result<UserInfo, AccountsError>>;
    /// Adds a subscription; with `replace`, ends every earlier one.
    fn add_subscription(
        &self,
        user: UserId,
        subscription: Subscription,
        replace: bool,
    ) -> BoxFuture<'_, Result<(), AccountsError>>;
    /// Stores a key (only its hash) for an existing user. With
    /// `max_active`, a store shared by several hosts refuses
    /// ([`AccountsError::KeyLimit`]) when the user holds that many live
    /// keys, in the same compare-and-set as the mint, so mints racing on
    /// two hosts cannot both take the last slot. (One host checks before
    /// it mints, in `keys.rs`.)
    fn create_api_key(
        &self,
        user: UserId,
        hash: [u8; 32],
        prefix: String,
        max_active: Option<usize>,
    ) -> BoxFuture<'_, Result<ApiKeyInfo, AccountsError>>;
    /// Revokes a key (idempotent).
    fn revoke_api_key(&self, id: ApiKeyId) -> BoxFuture<'_, Result<(), AccountsError>>;
    /// Disables a user.
    fn disable_user(&self, user: UserId) -> BoxFuture<'_, Result<(), AccountsError>>;
    /// Waits (bounded) until every change made anywhere before this call
    /// is visible here. A replica calls it before refusing a key it does
    /// not know, so a key minted on another host a moment ago works here
    /// too. On one host there is nothing to wait for.
    fn catch_up(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
    /// A cluster's count of each user's mailboxes across hosts
    /// (`crate::counts`); `None` on one host, whose engine is the count.
    fn mailbox_counter(&self) -> Option<&dyn MailboxCounter> {
        None
    }
    /// Records this host as the home of campaign `id` (live until
    /// `expires_at_ms`), where every host of a cluster sees it, so they
    /// forward its mail here (SCALE.md, "Campaigns"). `Ok(false)`: another
    /// campaign holds the id; pick another. On one host there is nothing
    /// to record: `Ok(true)`.
    fn claim_campaign(
        &self,
        id: CampaignId,
        expires_at_ms: u64,
    ) -> BoxFuture<'_, Result<bool, AccountsError>> {
        let _ = (id, expires_at_ms);
        Box::pin(std::future::ready(Ok(true)))
    }
    /// Removes campaign `id`'s home record, best effort (a record left
    /// behind only makes its home answer `550` for a gone campaign).
    fn forget_campaign(&self, id: CampaignId) -> BoxFuture<'_, ()> {
        let _ = id;
        Box::pin(std::future::ready(()))
    }
}

/// Each host's count of each user's live mailboxes, in a store every host
/// shares, so `max_mailboxes` holds across a cluster (SCALE.md,
/// "Accounts"). A host writes only its own count, always to what its
/// engine holds; the limit is checked on the sum.
pub trait MailboxCounter: Send + Sync {
    /// Sets this host's count of `user`'s live mailboxes to `n`, the last
    /// of them expiring at `until_ms`. With `max`, only if the sum over
    /// every host stays at most `max`: `Ok(false)` and nothing written
    /// otherwise.
    fn set_here(
        &self,
        user: UserId,
        n: u32,
        until_ms: u64,
        max: Option<u32>,
    ) -> BoxFuture<'_, Result<bool, AccountsError>>;
    /// This host's count of `user` as the shared store last showed it
    /// (`(0, 0)` for none): a recount writes only what differs.
    fn here(&self, user: UserId) -> (u32, u64);
    /// Users this host has a count for.
    fn counted_here(&self) -> Vec<UserId>;
}

/// Accounts in the engine's shard 0: one host.
#[derive(Clone)]
pub struct EngineAccounts(pub Engine);

impl Accounts for EngineAccounts {
    fn user(&self, id: UserId) -> Option<UserInfo> {
        self.0.user(id)
    }
    fn users(&self) -> Vec<UserInfo> {
        self.0.users()
    }
    fn api_key_by_hash(&self, hash: &[u8; 32]) -> Option<ApiKeyInfo> {
        self.0.api_key_by_hash(hash)
    }
    fn api_key(&self, id: ApiKeyId) -> Option<ApiKeyInfo> {
        self.0.api_key(id)
    }
    fn api_keys_of(&self, user: UserId) -> Vec<ApiKeyInfo> {
        self.0.api_keys_of(user)
    }
    fn user_disabled_at(&self, user: UserId) -> Option<u64> {
        self.0.user_disabled_at(user)
    }
    fn create_user(&self, name: String) -> BoxFuture<'_, Result<UserInfo, AccountsError>> {
        Box::pin(async move { Ok(self.0.create_user(name).await?) })
    }
    fn add_subscription(
        &self,
        user: UserId,
        subscription: Subscription,
        replace: bool,
    ) -> BoxFuture<'_, Result<(), AccountsError>> {
        Box::pin(async move {
            if replace {
                self.0.replace_subscriptions(user, subscription).await?;
            } else {
                self.0.add_subscription(user, subscription).await?;
            }
            Ok(())
        })
    }
    fn create_api_key(
        &self,
        user: UserId,
        hash: [u8; 32],
        prefix: String,
        _: Option<usize>,
    ) -> BoxFuture<'_, Result<ApiKeyInfo, AccountsError>> {
        Box::pin(async move { Ok(self.0.create_api_key(user, hash, prefix).await?) })
    }
    fn revoke_api_key(&self, id: ApiKeyId) -> BoxFuture<'_, Result<(), AccountsError>> {
        Box::pin(async move { Ok(self.0.revoke_api_key(id).await?) })
    }
    fn disable_user(&self, user: UserId) -> BoxFuture<'_, Result<(), AccountsError>> {
        Box::pin(async move { Ok(self.0.disable_user(user).await?) })
    }
}

/// No accounts: for an operator action that needs none on a cluster host
/// whose NATS is not asked. Reads find nothing, writes are refused.
#[derive(Clone, Copy, Debug)]
pub struct NoAccounts;

impl Accounts for NoAccounts {
    fn user(&self, _: UserId) -> Option<UserInfo> {
        None
    }
    fn users(&self) -> Vec<UserInfo> {
        Vec::new()
    }
    fn api_key_by_hash(&self, _: &[u8; 32]) -> Option<ApiKeyInfo> {
        None
    }
    fn api_key(&self, _: ApiKeyId) -> Option<ApiKeyInfo> {
        None
    }
    fn api_keys_of(&self, _: UserId) -> Vec<ApiKeyInfo> {
        Vec::new()
    }
    fn user_disabled_at(&self, _: UserId) -> Option<u64> {
        None
    }
    fn create_user(&self, _: String) -> BoxFuture<'_, Result<UserInfo, AccountsError>> {
        Box::pin(std::future::ready(Err(no_accounts())))
    }
    fn add_subscription(
        &self,
        _: UserId,
        _: Subscription,
        _: bool,
    ) -> BoxFuture<'_, Result<(), AccountsError>> {
        Box::pin(std::future::ready(Err(no_accounts())))
    }
    fn create_api_key(
        &self,
        _: UserId,
        _: [u8; 32],
        _: String,
        _: Option<usize>,
    ) -> BoxFuture<'_, Result<ApiKeyInfo, AccountsError>> {
        Box::pin(std::future::ready(Err(no_accounts())))
    }
    fn revoke_api_key(&self, _: ApiKeyId) -> BoxFuture<'_, Result<(), AccountsError>> {
        Box::pin(std::future::ready(Err(no_accounts())))
    }
    fn disable_user(&self, _: UserId) -> BoxFuture<'_, Result<(), AccountsError>> {
        Box::pin(std::future::ready(Err(no_accounts())))
    }
}

fn no_accounts() -> AccountsError {
    AccountsError::Unavailable("no accounts for this action".to_owned())
}
