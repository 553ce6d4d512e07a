//! Plans and API limits from configuration, and a caller's effective plan.
//!
//! `[plans.NAME]` tables start from embedded defaults (`anonymous`, `free`,
//! `pro`): a table for a known name changes only the keys it sets (so
//! `UNCORREO__PLANS__FREE__MAX_MAILBOXES=5` works alone), a new name must set
//! every key. `[limits]` names the plan for callers without credentials and
//! the plan of users without an active subscription.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use uncorreo_engine::UserInfo;

/// What a plan allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Live mailboxes an owner may hold at once (anonymous: per client IP).
    pub max_mailboxes: u32,
    /// Messages one mailbox stores; delivery beyond it is refused (`452 4.2.2`).
    pub max_messages_per_mailbox: u32,
    /// Longest TTL a mailbox may be created with; a longer request is `403 ttl-too-long`.
    pub max_ttl_minutes: u32,
    /// Requests per minute (token bucket: this many at once, refilled evenly).
    pub requests_per_minute: u32,
}

impl Plan {
    /// Order used to pick the most generous of several active subscriptions.
    fn generosity(&self) -> (u32, u32, u32, u32) {
        (
            self.max_mailboxes,
            self.max_messages_per_mailbox,
            self.max_ttl_minutes,
            self.requests_per_minute,
        )
    }
}

/// The `[plans]` table: plan name → plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Plans(pub BTreeMap<String, Plan>);

/// Name of the embedded plan for callers without credentials.
pub const ANONYMOUS: &str = "anonymous";
/// Name of the embedded plan for users without an active subscription.
pub const FREE: &str = "free";

impl Default for Plans {
    fn default() -> Self {
        let mut m = BTreeMap::new();
        m.insert(
            ANONYMOUS.to_owned(),
            Plan {
                max_mailboxes: 5,
                max_messages_per_mailbox: 50,
                max_ttl_minutes: 60,
                requests_per_minute: 60,
            },
        );
        m.insert(
            FREE.to_owned(),
            Plan {
                max_mailboxes: 20,
                max_messages_per_mailbox: 200,
                max_ttl_minutes: 24 * 60,
                requests_per_minute: 300,
            },
        );
        m.insert(
            "pro".to_owned(),
            Plan {
                max_mailboxes: 1000,
                max_messages_per_mailbox: 5000,
                max_ttl_minutes: 30 * 24 * 60,
                requests_per_minute: 6000,
            },
        );
        Self(m)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialPlan {
    max_mailboxes: Option<u32>,
    max_messages_per_mailbox: Option<u32>,
    max_ttl_minutes: Option<u32>,
    requests_per_minute: Option<u32>,
}

impl<'de> Deserialize<'de> for Plans {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let given = BTreeMap::<String, PartialPlan>::deserialize(d)?;
        let mut plans = Plans::default();
        for (name, p) in given {
            let base = plans.0.get(&name).copied();
            let pick = |v: Option<u32>, from_base: Option<u32>, key: &str| {
                v.or(from_base)
                    .ok_or_else(|| serde::de::Error::custom(format!("plan {name:?} needs {key}")))
            };
            let plan = Plan {
                max_mailboxes: pick(
                    p.max_mailboxes,
                    base.map(|b| b.max_mailboxes),
                    "max_mailboxes",
                )?,
                max_messages_per_mailbox: pick(
                    p.max_messages_per_mailbox,
                    base.map(|b| b.max_messages_per_mailbox),
                    "max_messages_per_mailbox",
                )?,
                max_ttl_minutes: pick(
                    p.max_ttl_minutes,
                    base.map(|b| b.max_ttl_minutes),
                    "max_ttl_minutes",
                )?,
                requests_per_minute: pick(
                    p.requests_per_minute,
                    base.map(|b| b.requests_per_minute),
                    "requests_per_minute",
                )?,
            };
            plans.0.insert(name, plan);
        }
        Ok(plans)
    }
}

/// The `[limits]` table: bounds on the HTTP API that are not per plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Plan for callers without credentials or with a session token.
    pub anonymous_plan: String,
    /// Plan of users without an active subscription.
    pub default_plan: String,
    /// TTL of a mailbox created without `ttl_minutes` (capped at the plan's maximum).
    pub default_ttl_minutes: u32,
    /// Largest JSON request body, in bytes (`413 payload-too-large` above).
    pub json_body_bytes: usize,
    /// Requests per minute from one client IP (IPv6: one /64), whatever the credentials.
    pub ip_requests_per_minute: u32,
    /// Rate-limit buckets (and anonymous-quota entries) kept in memory; idle
    /// ones are dropped first when the map is full.
    pub rate_limit_entries: usize,
    /// Default `limit` of a message listing.
    pub default_page: usize,
    /// Largest `limit` of a message listing (`422` above).
    pub max_page: usize,
    /// Messages examined for one filtered (`?tag=`) listing page before the
    /// page is returned short with `has_more`.
    pub max_scan: usize,
    /// Largest stored message parsed for the JSON view or an attachment
    /// download (`422 message-too-large-to-parse` above; `/raw` always works).
    pub parse_max_bytes: usize,
    /// Active API keys one user may hold (`403 key-limit` above).
    pub max_api_keys_per_user: usize,
    /// Take the client IP from the last `X-Forwarded-For` entry (only behind
    /// a proxy that sets it, e.g. an ALB).
    pub trust_forwarded_for: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            anonymous_plan: ANONYMOUS.to_owned(),
            default_plan: FREE.to_owned(),
            default_ttl_minutes: 60,
            json_body_bytes: 64 * 1024,
            ip_requests_per_minute: 1200,
            rate_limit_entries: 100_000,
            default_page: 50,
            max_page: 500,
            max_scan: 10_000,
            parse_max_bytes: 16 * 1024 * 1024,
            max_api_keys_per_user: 20,
            trust_forwarded_for: false,
        }
    }
}

/// Why the plans and limits cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanConfigError {
    /// `[limits]` names a plan that `[plans]` does not define.
    #[error("[limits] {key} names plan {name:?}, which [plans] does not define")]
    MissingPlan {
        /// The `[limits]` key.
        key: &'static str,
        /// The plan name.
        name: String,
    },
    /// A limit that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(String),
}

/// Check that the named plans exist and no limit is zero where zero makes no sense.
pub fn validate(plans: &Plans, limits: &LimitsConfig) -> Result<(), PlanConfigError> {
    for (key, name) in [
        ("anonymous_plan", &limits.anonymous_plan),
        ("default_plan", &limits.default_plan),
    ] {
        if !plans.0.contains_key(name) {
            return Err(PlanConfigError::MissingPlan {
                key,
                name: name.clone(),
            });
        }
    }
    for (name, p) in &plans.0 {
        if p.max_ttl_minutes == 0 {
            return Err(PlanConfigError::Zero(format!(
                "plans.{name}.max_ttl_minutes"
            )));
        }
    }
    for (key, v) in [
        (
            "limits.default_ttl_minutes",
            limits.default_ttl_minutes as usize,
        ),
        ("limits.json_body_bytes", limits.json_body_bytes),
        ("limits.rate_limit_entries", limits.rate_limit_entries),
        ("limits.default_page", limits.default_page),
        ("limits.max_page", limits.max_page),
        ("limits.max_scan", limits.max_scan),
    ] {
        if v == 0 {
            return Err(PlanConfigError::Zero(key.to_owned()));
        }
    }
    Ok(())
}

/// A plan together with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPlan {
    /// The name in `[plans]`.
    pub name: String,
    /// The plan.
    pub plan: Plan,
}

/// The plan that governs `user` at `now_ms`: the most generous of the plans
/// of their active subscriptions (started, not ended, still configured),
/// else the default plan.
pub fn effective_plan(
    plans: &Plans,
    limits: &LimitsConfig,
    user: &UserInfo,
    now_ms: u64,
) -> Option<NamedPlan> {
    user.subscriptions
        .iter()
        .filter(|s| s.starts_at_ms <= now_ms && s.ends_at_ms.is_none_or(|end| now_ms < end))
        .filter_map(|s| {
            let plan = plans.0.get(&s.plan);
            if plan.is_none() {
                tracing::warn!(plan = %s.plan, user = user.id.0, "subscription names an unknown plan");
            }
            plan.map(|p| NamedPlan {
                name: s.plan.clone(),
                plan: *p,
            })
        })
        .max_by_key(|p| p.plan.generosity())
        .or_else(|| named(plans, &limits.default_plan))
}

/// The plan called `name`, if configured.
pub fn named(plans: &Plans, name: &str) -> Option<NamedPlan> {
    plans.0.get(name).map(|p| NamedPlan {
        name: name.to_owned(),
        plan: *p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uncorreo_engine::{Subscription, UserId};

    fn user(subs: Vec<Subscription>) -> UserInfo {
        UserInfo {
            id: UserId(1),
            name: "u".into(),
            created_at_ms: 0,
            subscriptions: subs,
        }
    }

    fn sub(plan: &str, start: u64, end: Option<u64>) -> Subscription {
        Subscription {
            plan: plan.into(),
            starts_at_ms: start,
            ends_at_ms: end,
        }
    }

    #[test]
    fn anonymous_is_the_strictest_embedded_plan() {
        let p = Plans::default();
        let anon = p.0[ANONYMOUS];
        for other in p.0.values() {
            assert!(anon.max_mailboxes <= other.max_mailboxes);
            assert!(anon.max_messages_per_mailbox <= other.max_messages_per_mailbox);
            assert!(anon.max_ttl_minutes <= other.max_ttl_minutes);
            assert!(anon.requests_per_minute <= other.requests_per_minute);
        }
        validate(&p, &LimitsConfig::default()).unwrap();
    }

    #[test]
    fn most_generous_active_subscription_wins_and_expired_ones_do_not_count() {
        let plans = Plans::default();
        let limits = LimitsConfig::default();
        let u = user(vec![sub("free", 0, None), sub("pro", 0, Some(100))]);
        assert_eq!(effective_plan(&plans, &limits, &u, 50).unwrap().name, "pro");
        assert_eq!(
            effective_plan(&plans, &limits, &u, 100).unwrap().name,
            "free"
        );
        let future = user(vec![sub("pro", 200, None)]);
        assert_eq!(
            effective_plan(&plans, &limits, &future, 100).unwrap().name,
            "free"
        );
        let unknown = user(vec![sub("gone", 0, None)]);
        assert_eq!(
            effective_plan(&plans, &limits, &unknown, 1).unwrap().name,
            "free"
        );
    }

    #[test]
    fn partial_tables_change_known_plans_and_new_plans_need_every_key() {
        let p: Plans = toml::from_str("[free]\nmax_mailboxes = 7\n").unwrap();
        assert_eq!(p.0["free"].max_mailboxes, 7);
        assert_eq!(p.0["free"].max_messages_per_mailbox, 200);
        assert!(p.0.contains_key(ANONYMOUS));
        let err = toml::from_str::<Plans>("[team]\nmax_mailboxes = 7\n").unwrap_err();
        assert!(err.to_string().contains("team"), "{err}");
        let err = toml::from_str::<Plans>("[free]\nmax_boxes = 7\n").unwrap_err();
        assert!(err.to_string().contains("max_boxes"), "{err}");
    }

    #[test]
    fn limits_must_name_configured_plans() {
        let limits = LimitsConfig {
            default_plan: "nope".into(),
            ..LimitsConfig::default()
        };
        assert!(matches!(
            validate(&Plans::default(), &limits),
            Err(PlanConfigError::MissingPlan {
                key: "default_plan",
                ..
            })
        ));
    }
}
