//! Operator actions: what `uncorreo admin …` can do, as one typed request
//! and one function that carries it out against an [`Engine`]. The same
//! function serves the operator socket of a running server
//! ([`crate::operator`]) and the CLI when no server runs, so both behave
//! alike.
//!
//! Every action that changes something is durable before it is answered
//! (engine records), then audited three ways: an `AdminAudit` record in the
//! log (who, what, to what, when), an `audit` log line, and the
//! `uncorreo_admin_actions_total{action,outcome}` counter.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uncorreo_engine::{
    Address, ApiKeyId, AuditEntry, BackupError, Engine, MailboxInfo, Owner, StorageError,
    Subscription, UserId, UserInfo, WriteError,
};

use crate::accounts::{Accounts, AccountsError};
use crate::plans::{LimitsConfig, Plans};
use uncorreo_mail::date::rfc3339_millis as rfc3339;

/// Longest user name an operator may give (bytes).
pub const MAX_USER_NAME: usize = 256;

/// Why an operator action failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The plan is not in `[plans]`.
    #[error("no plan named {name:?}; configured plans: {known}")]
    UnknownPlan {
        /// Asked for.
        name: String,
        /// Comma-separated configured names.
        known: String,
    },
    /// No such user, key or mailbox.
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
    /// Storage refused.
    #[error("storage: {0}")]
    Engine(#[from] WriteError),
    /// The accounts store cannot confirm a change now (a cluster without
    /// NATS); retry.
    #[error("{0}")]
    Unavailable(String),
    /// The backup could not be written.
    #[error("backup: {0}")]
    Backup(#[from] BackupError),
    /// A cluster action did not complete (what moved before it stopped is
    /// in the message).
    #[error("cluster: {0}")]
    Cluster(String),
}

impl From<AccountsError> for AdminError {
    fn from(error: AccountsError) -> Self {
        match error {
            AccountsError::NotFound => AdminError::NotFound("user or key"),
            AccountsError::AlreadyExists => AdminError::Engine(WriteError::AlreadyExists),
            e @ AccountsError::Unavailable(_) => AdminError::Unavailable(e.to_string()),
            AccountsError::Storage(e) => AdminError::Engine(e),
            e @ (AccountsError::Corrupt(_) | AccountsError::KeyLimit(_)) => {
                AdminError::Invalid(e.to_string())
            }
        }
    }
}

impl AdminError {
    /// A stable machine-readable name for the wire and for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownPlan { .. } => "unknown_plan",
            Self::NotFound(_) => "not_found",
            Self::Invalid(_) => "invalid",
            Self::Engine(
                WriteError::Saturated
                | WriteError::DiskFull
                | WriteError::Storage(StorageError::Poisoned | StorageError::Closed),
            ) => "unavailable",
            Self::Engine(_) => "storage",
            Self::Unavailable(_) => "unavailable",
            Self::Backup(_) => "backup",
            Self::Cluster(_) => "cluster",
        }
    }
}

/// One operator action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum AdminRequest {
    /// Create a user on a plan, with a first API key (shown once).
    UserCreate {
        /// Plan name, as in `[plans.NAME]`.
        plan: String,
        /// Display name or e-mail.
        #[serde(default)]
        name: String,
    },
    /// Every user.
    UserList,
    /// One user with their subscriptions, keys and mailboxes.
    UserShow {
        /// User id.
        user: u64,
    },
    /// Put a user on one plan from now on (earlier subscriptions end now).
    UserSetPlan {
        /// User id.
        user: u64,
        /// Plan name.
        plan: String,
    },
    /// Disable a user: every key is revoked and no new one can be made.
    UserDisable {
        /// User id.
        user: u64,
    },
    /// Mint another API key for a user (shown once).
    KeyCreate {
        /// User id.
        user: u64,
    },
    /// A user's keys (prefixes only).
    KeyList {
        /// User id.
        user: u64,
    },
    /// Revoke one key: the next request with it gets 401.
    KeyRevoke {
        /// Key id (from `key list`).
        key: u64,
    },
    /// Live mailboxes, all or one user's.
    MailboxList {
        /// Only this user's.
        #[serde(default)]
        user: Option<u64>,
    },
    /// One mailbox.
    MailboxShow {
        /// Its address.
        address: String,
    },
    /// Delete one mailbox by address, or every mailbox of a user.
    MailboxDelete {
        /// The mailbox's address.
        #[serde(default)]
        address: Option<String>,
        /// Every mailbox of this user.
        #[serde(default)]
        user: Option<u64>,
    },
    /// Storage and fan-out numbers.
    Stats,
    /// The newest operator actions (up to 1000).
    Audit,
    /// Write a consistent snapshot of the log into a new directory.
    Backup {
        /// Destination directory (absolute; must not exist or be empty).
        dest: PathBuf,
    },
    /// With `[cluster]`: hand every partition homed here over to another
    /// live host (SCALE.md, "A leaves cleanly"); needs the running server.
    ClusterLeave {
        /// The destination's node id; by default the first other live host.
        #[serde(default)]
        to: Option<String>,
    },
}

/// The cluster actions of a running server with `[cluster]` (implemented
/// by the appliance, which holds the membership).
pub trait ClusterOps: Send + Sync {
    /// Hands every partition homed here over to `to` (or another live
    /// host); what moved, or why not all of it did.
    fn leave(
        &self,
        to: Option<String>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, String>> + Send>>;
}

impl AdminRequest {
    /// The command as an operator types it (`key revoke`), for audit and metrics.
    pub fn action(&self) -> &'static str {
        match self {
            Self::UserCreate { .. } => "user create",
            Self::UserList => "user list",
            Self::UserShow { .. } => "user show",
            Self::UserSetPlan { .. } => "user set-plan",
            Self::UserDisable { .. } => "user disable",
            Self::KeyCreate { .. } => "key create",
            Self::KeyList { .. } => "key list",
            Self::KeyRevoke { .. } => "key revoke",
            Self::MailboxList { .. } => "mailbox list",
            Self::MailboxShow { .. } => "mailbox show",
            Self::MailboxDelete { .. } => "mailbox delete",
            Self::Stats => "stats",
            Self::Audit => "audit",
            Self::Backup { .. } => "backup",
            Self::ClusterLeave { .. } => "cluster leave",
        }
    }

    /// True for actions that read or change users and keys: in a cluster
    /// they need its accounts (NATS); the others need only this disk.
    pub fn needs_accounts(&self) -> bool {
        match self {
            Self::UserCreate { .. }
            | Self::UserList
            | Self::UserShow { .. }
            | Self::UserSetPlan { .. }
            | Self::UserDisable { .. }
            | Self::KeyCreate { .. }
            | Self::KeyList { .. }
            | Self::KeyRevoke { .. } => true,
            Self::MailboxList { user } | Self::MailboxDelete { user, .. } => user.is_some(),
            Self::MailboxShow { .. }
            | Self::Stats
            | Self::Audit
            | Self::Backup { .. }
            | Self::ClusterLeave { .. } => false,
        }
    }

    /// True for actions that change state (or write a backup): they are audited.
    pub fn changes_state(&self) -> bool {
        matches!(
            self,
            Self::UserCreate { .. }
                | Self::UserSetPlan { .. }
                | Self::UserDisable { .. }
                | Self::KeyCreate { .. }
                | Self::KeyRevoke { .. }
                | Self::MailboxDelete { .. }
                | Self::Backup { .. }
                | Self::ClusterLeave { .. }
        )
    }
}

/// What an action needs besides the engine.
pub struct AdminContext<'a> {
    /// The storage.
    pub engine: &'a Engine,
    /// Users and keys (the engine's, or the cluster's replica).
    pub accounts: &'a dyn Accounts,
    /// Configured plans.
    pub plans: &'a Plans,
    /// Default plan and API limits.
    pub limits: &'a LimitsConfig,
    /// Who asks, as the channel established it (e.g. `uid 0 (root)`).
    pub actor: String,
    /// The running server's cluster actions (`None`: no `[cluster]`, or
    /// no server running).
    pub cluster: Option<&'a dyn ClusterOps>,
}

/// Carry out `request`; on success, audit it if it changed state. The
/// answer is JSON for the CLI to print.
pub async fn execute(ctx: &AdminContext<'_>, request: AdminRequest) -> Result<Value, AdminError> {
    let action = request.action();
    let audited = request.changes_state();
    let result = run(ctx, request).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    metrics::counter!(uncorreo_metric_names::ADMIN_ACTIONS_TOTAL, "action" => action, "outcome" => outcome)
        .increment(1);
    let (value, target) = match result {
        Ok(done) => done,
        Err(e) => {
            tracing::warn!(target: "audit", actor = %ctx.actor, action, error = %e, "operator action refused");
            return Err(e);
        }
    };
    if audited {
        tracing::info!(target: "audit", actor = %ctx.actor, action, target = %target, "operator action");
        ctx.engine
            .record_audit(AuditEntry {
                at_ms: ctx.engine.now_ms(),
                actor: ctx.actor.clone(),
                action: action.to_owned(),
                target,
            })
            .await?;
    }
    Ok(value)
}

/// The action itself: its answer and what it acted on (for the audit entry).
async fn run(ctx: &AdminContext<'_>, request: AdminRequest) -> Result<(Value, String), AdminError> {
    let engine = ctx.engine;
    match request {
        AdminRequest::UserCreate { plan, name } => {
            if name.len() > MAX_USER_NAME {
                return Err(AdminError::Invalid(format!(
                    "name is longer than {MAX_USER_NAME} bytes"
                )));
            }
            let created =
                create_user(ctx.accounts, engine.now_ms(), ctx.plans, &name, &plan).await?;
            let target = format!("user {}", created.user.id.0);
            let mut view = user_view(ctx, &created.user);
            view["key"] = json!(created.key);
            Ok((view, target))
        }
        AdminRequest::UserList => {
            let users: Vec<Value> = ctx
                .accounts
                .users()
                .iter()
                .map(|u| user_view(ctx, u))
                .collect();
            Ok((json!({ "users": users }), String::new()))
        }
        AdminRequest::UserShow { user } => {
            let u = find_user(ctx.accounts, user)?;
            let mut view = user_view(ctx, &u);
            view["subscriptions"] = u
                .subscriptions
                .iter()
                .map(|s| {
                    json!({
                        "plan": s.plan,
                        "starts_at": rfc3339(s.starts_at_ms),
                        "ends_at": s.ends_at_ms.map(rfc3339),
                    })
                })
                .collect();
            view["keys"] = keys_view(ctx.accounts, u.id);
            view["mailboxes"] = engine
                .mailboxes_owned_by(&Owner::User(u.id))
                .iter()
                .map(mailbox_view)
                .collect();
            Ok((view, String::new()))
        }
        AdminRequest::UserSetPlan { user, plan } => {
            let u = find_user(ctx.accounts, user)?;
            check_plan(ctx.plans, &plan)?;
            ctx.accounts
                .add_subscription(
                    u.id,
                    Subscription {
                        plan: plan.clone(),
                        starts_at_ms: engine.now_ms(),
                        ends_at_ms: None,
                    },
                    true,
                )
                .await?;
            let u = find_user(ctx.accounts, user)?;
            Ok((user_view(ctx, &u), format!("user {user} plan {plan}")))
        }
        AdminRequest::UserDisable { user } => {
            let u = find_user(ctx.accounts, user)?;
            // Disabled first: from here on no key can be minted for it, so
            // the revocations below leave none behind.
            ctx.accounts.disable_user(u.id).await?;
            let mut revoked = 0;
            for k in ctx.accounts.api_keys_of(u.id) {
                if k.revoked_at_ms.is_none() {
                    ctx.accounts.revoke_api_key(k.id).await?;
                    revoked += 1;
                }
            }
            let u = find_user(ctx.accounts, user)?;
            let mut view = user_view(ctx, &u);
            view["keys_revoked"] = json!(revoked);
            Ok((view, format!("user {user}")))
        }
        AdminRequest::KeyCreate { user } => {
            let u = find_user(ctx.accounts, user)?;
            if ctx.accounts.user_disabled_at(u.id).is_some() {
                return Err(AdminError::Invalid(format!(
                    "user {user} is disabled; it gets no new keys"
                )));
            }
            let (info, key) = crate::keys::mint(ctx.accounts, u.id).await?;
            Ok((
                json!({ "id": info.id.0, "user": user, "prefix": info.prefix, "key": key }),
                format!("key {} of user {user}", info.id.0),
            ))
        }
        AdminRequest::KeyList { user } => {
            let u = find_user(ctx.accounts, user)?;
            Ok((
                json!({ "keys": keys_view(ctx.accounts, u.id) }),
                String::new(),
            ))
        }
        AdminRequest::KeyRevoke { key } => {
            let info = ctx
                .accounts
                .api_key(ApiKeyId(key))
                .ok_or(AdminError::NotFound("key"))?;
            ctx.accounts.revoke_api_key(info.id).await?;
            Ok((
                json!({ "id": key, "user": info.user.0, "revoked": true }),
                format!("key {key} of user {}", info.user.0),
            ))
        }
        AdminRequest::MailboxList { user } => {
            let boxes = match user {
                Some(u) => engine.mailboxes_owned_by(&Owner::User(find_user(ctx.accounts, u)?.id)),
                None => engine.all_mailboxes(),
            };
            let list: Vec<Value> = boxes.iter().map(mailbox_view).collect();
            Ok((json!({ "mailboxes": list }), String::new()))
        }
        AdminRequest::MailboxShow { address } => {
            let mb = find_mailbox(engine, &address)?;
            Ok((mailbox_view(&mb), String::new()))
        }
        AdminRequest::MailboxDelete { address, user } => {
            let boxes = match (address, user) {
                (Some(a), None) => vec![find_mailbox(engine, &a)?],
                (None, Some(u)) => {
                    engine.mailboxes_owned_by(&Owner::User(find_user(ctx.accounts, u)?.id))
                }
                _ => {
                    return Err(AdminError::Invalid(
                        "name exactly one of an address or --user".to_owned(),
                    ))
                }
            };
            let mut deleted = Vec::with_capacity(boxes.len());
            for mb in &boxes {
                match engine.delete_mailbox(mb.id).await {
                    Ok(()) | Err(WriteError::NotFound) => deleted.push(mb.address.to_string()),
                    Err(e) => return Err(e.into()),
                }
            }
            let target = format!("mailboxes {}", deleted.join(", "));
            Ok((json!({ "deleted": deleted }), target))
        }
        AdminRequest::Stats => Ok((stats_view(engine), String::new())),
        AdminRequest::Audit => {
            let entries: Vec<Value> = engine
                .audit_trail()
                .iter()
                .map(|a| {
                    json!({
                        "at": rfc3339(a.at_ms),
                        "actor": a.actor,
                        "action": a.action,
                        "target": a.target,
                    })
                })
                .collect();
            Ok((json!({ "audit": entries }), String::new()))
        }
        AdminRequest::ClusterLeave { to } => {
            let Some(cluster) = ctx.cluster else {
                return Err(AdminError::Invalid(
                    "cluster leave needs a running server with [cluster]".to_owned(),
                ));
            };
            let target = to.clone().unwrap_or_default();
            let moved = cluster.leave(to).await.map_err(AdminError::Cluster)?;
            Ok((moved, target))
        }
        AdminRequest::Backup { dest } => {
            if !dest.is_absolute() {
                return Err(AdminError::Invalid(format!(
                    "backup destination {} is not an absolute path",
                    dest.display()
                )));
            }
            let engine = engine.clone();
            let target = dest.display().to_string();
            // Copying is blocking file I/O: keep it off the async thread.
            let report = tokio::task::spawn_blocking(move || engine.backup(&dest))
                .await
                .map_err(|_| {
                    AdminError::Invalid("the backup task ended abnormally".to_owned())
                })??;
            Ok((
                json!({
                    "dest": target,
                    "shards": report.shards,
                    "segments": report.segments,
                    "hints": report.hints,
                    "bytes": report.bytes,
                }),
                format!("backup into {target}"),
            ))
        }
    }
}

fn find_user(accounts: &dyn Accounts, id: u64) -> Result<UserInfo, AdminError> {
    accounts
        .user(UserId(id))
        .ok_or(AdminError::NotFound("user"))
}

fn find_mailbox(engine: &Engine, address: &str) -> Result<MailboxInfo, AdminError> {
    let a = Address::parse(address)
        .map_err(|_| AdminError::Invalid(format!("{address:?} is not a mailbox address")))?;
    engine.mailbox(&a).ok_or(AdminError::NotFound("mailbox"))
}

fn check_plan(plans: &Plans, plan: &str) -> Result<(), AdminError> {
    if plans.0.contains_key(plan) {
        return Ok(());
    }
    Err(AdminError::UnknownPlan {
        name: plan.to_owned(),
        known: plans.0.keys().cloned().collect::<Vec<_>>().join(", "),
    })
}

fn user_view(ctx: &AdminContext<'_>, u: &UserInfo) -> Value {
    let now = ctx.engine.now_ms();
    let plan = crate::plans::effective_plan(ctx.plans, ctx.limits, u, now).map(|p| p.name);
    let keys = ctx.accounts.api_keys_of(u.id);
    json!({
        "id": u.id.0,
        "name": u.name,
        "created_at": rfc3339(u.created_at_ms),
        "plan": plan,
        "disabled_at": ctx.accounts.user_disabled_at(u.id).map(rfc3339),
        "active_keys": keys.iter().filter(|k| k.revoked_at_ms.is_none()).count(),
        "mailboxes": ctx.engine.mailboxes_owned_by(&Owner::User(u.id)).len(),
    })
}

fn keys_view(accounts: &dyn Accounts, user: UserId) -> Value {
    accounts
        .api_keys_of(user)
        .iter()
        .map(|k| {
            json!({
                "id": k.id.0,
                "prefix": k.prefix,
                "created_at": rfc3339(k.created_at_ms),
                "revoked_at": k.revoked_at_ms.map(rfc3339),
            })
        })
        .collect()
}

fn mailbox_view(m: &MailboxInfo) -> Value {
    let owner = match &m.owner {
        Owner::User(u) => json!({ "user": u.0 }),
        Owner::Anonymous { .. } => json!("anonymous"),
    };
    json!({
        "id": m.id.0,
        "address": m.address.to_string(),
        "owner": owner,
        "created_at": rfc3339(m.created_at_ms),
        "expires_at": rfc3339(m.expires_at_ms),
        "messages": m.message_count,
        "max_messages": m.max_messages,
        "last_seq": m.last_seq,
    })
}

fn stats_view(engine: &Engine) -> Value {
    let s = engine.stats();
    json!({
        "mailboxes": s.mailboxes,
        "messages": s.messages,
        "users": s.users,
        "segments": s.segments,
        "disk_bytes": s.disk_bytes,
        "queue_depth": s.queue_depth,
        "batches_committed": s.batches_committed,
        "records_committed": s.records_committed,
        "compaction_runs": s.compaction_runs,
        "compaction_reclaimed_bytes": s.compaction_reclaimed_bytes,
        "corrupt_records": s.corrupt_records,
        "subscribers": s.subscribers,
        "events_published": s.events_published,
        "poisoned": s.poisoned,
    })
}

/// A user created with a first key.
#[derive(Debug)]
pub struct CreatedUser {
    /// The user, with their subscription.
    pub user: UserInfo,
    /// The API key; shown once, only its SHA-256 is stored.
    pub key: String,
    /// The key's display prefix.
    pub prefix: String,
}

/// Create a user named `name`, subscribed to `plan` from now on (open-ended),
/// with one API key.
pub async fn create_user(
    accounts: &dyn Accounts,
    now_ms: u64,
    plans: &Plans,
    name: &str,
    plan: &str,
) -> Result<CreatedUser, AdminError> {
    check_plan(plans, plan)?;
    let user = accounts.create_user(name.to_owned()).await?;
    accounts
        .add_subscription(
            user.id,
            Subscription {
                plan: plan.to_owned(),
                starts_at_ms: now_ms,
                ends_at_ms: None,
            },
            false,
        )
        .await?;
    let (info, key) = crate::keys::mint(accounts, user.id).await?;
    let user = accounts.user(user.id).unwrap_or(user);
    Ok(CreatedUser {
        user,
        key,
        prefix: info.prefix,
    })
}
