//! Operator actions shared by the `uncorreo admin` CLI and tests: create a
//! user on a plan with a first API key.

use uncorreo_engine::{Engine, Subscription, UserInfo, WriteError};

use crate::plans::Plans;

/// Why a user could not be created.
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
    /// Storage refused.
    #[error("storage: {0}")]
    Engine(#[from] WriteError),
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
    engine: &Engine,
    plans: &Plans,
    name: &str,
    plan: &str,
) -> Result<CreatedUser, AdminError> {
    if !plans.0.contains_key(plan) {
        return Err(AdminError::UnknownPlan {
            name: plan.to_owned(),
            known: plans.0.keys().cloned().collect::<Vec<_>>().join(", "),
        });
    }
    let user = engine.create_user(name.to_owned()).await?;
    engine
        .add_subscription(
            user.id,
            Subscription {
                plan: plan.to_owned(),
                starts_at_ms: engine.now_ms(),
                ends_at_ms: None,
            },
        )
        .await?;
    let (info, key) = crate::keys::mint(engine, user.id).await?;
    let user = engine.user(user.id).unwrap_or(user);
    Ok(CreatedUser {
        user,
        key,
        prefix: info.prefix,
    })
}
