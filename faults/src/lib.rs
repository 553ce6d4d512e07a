//! Fault plans (issue #18): a tenant makes its own inbox or campaign
//! misbehave on purpose, to test its application's retry logic. Rules are
//! deterministic (counted per target from the moment the plan is set, no
//! randomness) and apply only to RCPTs for that one target, so they never
//! touch other tenants' mail.
//!
//! - `first n → reply`: the first `n` RCPTs for the target are refused
//!   (greylisting: a retrying MTA gets through on attempt `n + 1`).
//! - `rate_above per_second → reply`: RCPTs past `per_second` within one
//!   wall-clock second are refused (throttling).
//! - `every n, delay_ms`: every `n`-th RCPT is answered after `delay_ms`
//!   (tarpitting).
//! - `size_above bytes → reply`: refused at RCPT when `SIZE=` declares more,
//!   else at the end of data when every recipient of the transaction is
//!   under such a rule (a transaction that also carries other recipients is
//!   delivered as usual: one reply cannot refuse only part of it).
//!
//! Pure: the caller passes the time; no I/O. The API stores plans durably.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most rules in one plan.
pub const MAX_RULES: usize = 16;
/// Longest delay a rule may ask for, ms (below smtpd's command timeout).
pub const MAX_DELAY_MS: u32 = 60_000;
/// Most targets with a plan in the whole appliance.
pub const MAX_PLANS: usize = 10_000;
/// Longest reply text, bytes.
pub const MAX_REPLY: usize = 200;

/// One rule of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "when", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// Refuse the first `n` RCPTs.
    First {
        /// How many (1 or more).
        #[schema(minimum = 1, maximum = 2147483647)]
        #[serde(deserialize_with = "whole")]
        n: u32,
        /// The SMTP reply, e.g. `451 4.7.1 try later` (code 4xx or 5xx).
        #[schema(pattern = r"^[45][0-9][0-9]( [ -~]*)?$", max_length = 200)]
        reply: String,
    },
    /// Refuse RCPTs past `per_second` within one second.
    RateAbove {
        /// RCPTs allowed per second (1 or more).
        #[schema(minimum = 1, maximum = 2147483647)]
        #[serde(deserialize_with = "whole")]
        per_second: u32,
        /// The SMTP reply, e.g. `421 4.7.0 slow down` (421 also closes the connection).
        #[schema(pattern = r"^[45][0-9][0-9]( [ -~]*)?$", max_length = 200)]
        reply: String,
    },
    /// Answer every `n`-th RCPT after `delay_ms`.
    Every {
        /// Period (1 or more).
        #[schema(minimum = 1, maximum = 2147483647)]
        #[serde(deserialize_with = "whole")]
        n: u32,
        /// Delay before the reply, ms (at most 60,000).
        #[schema(maximum = 60000)]
        #[serde(deserialize_with = "whole")]
        delay_ms: u32,
    },
    /// Refuse messages larger than `bytes`.
    SizeAbove {
        /// Largest size let through.
        #[schema(maximum = 9223372036854775807_i64)]
        #[serde(deserialize_with = "whole")]
        bytes: u64,
        /// The SMTP reply, e.g. `552 5.3.4 too big`.
        #[schema(pattern = r"^[45][0-9][0-9]( [ -~]*)?$", max_length = 200)]
        reply: String,
    },
}

/// A JSON number with no fractional part (`5` or `5.0`: JSON Schema's
/// `integer` admits both) that fits `T`.
fn whole<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Whole(u64),
        Float(f64),
    }
    let n = match Number::deserialize(deserializer)? {
        Number::Whole(n) => Some(n),
        Number::Float(f) if f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&f) => {
            Some(f as u64)
        }
        Number::Float(_) => None,
    };
    n.and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| serde::de::Error::custom("not a whole number in range"))
}

/// A fault plan: its rules, checked in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// At most 16; none means no plan.
    #[schema(max_items = 16)]
    pub rules: Vec<Rule>,
}

/// Why a plan is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

/// The reply code of `reply` if it is a well-formed 4xx/5xx reply line.
pub fn reply_code(reply: &str) -> Option<u16> {
    let code: u16 = reply.get(..3)?.parse().ok()?;
    let rest = reply.get(3..)?;
    let ok = (400..=599).contains(&code)
        && reply.len() <= MAX_REPLY
        && (rest.is_empty() || rest.starts_with(' '))
        && reply.bytes().all(|b| (b' '..=b'~').contains(&b));
    ok.then_some(code)
}

impl Plan {
    /// Check every bound; the message names the rule.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.rules.len() > MAX_RULES {
            return Err(Invalid(format!("at most {MAX_RULES} rules")));
        }
        for (i, r) in self.rules.iter().enumerate() {
            let bad = |what: &str| Err(Invalid(format!("rules[{i}]: {what}")));
            match r {
                Rule::First { n: 0, .. } | Rule::Every { n: 0, .. } => {
                    return bad("n must be at least 1")
                }
                Rule::RateAbove { per_second: 0, .. } => {
                    return bad("per_second must be at least 1")
                }
                Rule::First { n, .. } | Rule::Every { n, .. } if *n > i32::MAX as u32 => {
                    return bad("n must be at most 2147483647")
                }
                Rule::RateAbove { per_second, .. } if *per_second > i32::MAX as u32 => {
                    return bad("per_second must be at most 2147483647")
                }
                Rule::SizeAbove { bytes, .. } if *bytes > i64::MAX as u64 => {
                    return bad("bytes must be at most 9223372036854775807")
                }
                Rule::Every { delay_ms, .. } if *delay_ms > MAX_DELAY_MS => {
                    return bad("delay_ms must be at most 60000")
                }
                _ => {}
            }
            match r {
                Rule::First { reply, .. } | Rule::RateAbove { reply, .. } | Rule::SizeAbove { reply, .. }
                    if reply_code(reply).is_none() =>
                {
                    return bad("reply must be a 4xx or 5xx code, then optional printable text, at most 200 bytes")
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Whose mail a plan applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A campaign, by id.
    Campaign(u64),
    /// A mailbox, by its address (lowercase, without a plus tag).
    Mailbox(String),
}

/// What the session does with one RCPT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Wait this long before replying, ms.
    pub delay_ms: u32,
    /// Refuse with this reply line (and its code).
    pub refuse: Option<(u16, String)>,
}

struct Armed {
    plan: Plan,
    rcpts: AtomicU64,
    /// (second, RCPTs in it)
    window: Mutex<(u64, u64)>,
}

/// Every plan in force, shared by smtpd (which applies them) and the API
/// (which sets them).
#[derive(Default)]
pub struct FaultPlans {
    plans: RwLock<HashMap<Target, Arc<Armed>>>,
}

impl FaultPlans {
    /// Set (and re-arm: counters start again) the plan of `target`. Past
    /// [`MAX_PLANS`] targets a new one is refused.
    pub fn set(&self, target: Target, plan: Plan) -> Result<(), Invalid> {
        plan.validate()?;
        let mut plans = self.plans.write();
        if plans.len() >= MAX_PLANS && !plans.contains_key(&target) {
            return Err(Invalid(format!("at most {MAX_PLANS} fault plans in force")));
        }
        let armed = Armed {
            plan,
            rcpts: AtomicU64::new(0),
            window: Mutex::new((0, 0)),
        };
        plans.insert(target, Arc::new(armed));
        Ok(())
    }

    /// Every target with a plan in force.
    pub fn targets(&self) -> Vec<Target> {
        self.plans.read().keys().cloned().collect()
    }

    /// Whether [`MAX_PLANS`] plans are in force and `target` has none of them.
    pub fn full_without(&self, target: &Target) -> bool {
        let plans = self.plans.read();
        plans.len() >= MAX_PLANS && !plans.contains_key(target)
    }

    /// Remove the plan of `target`.
    pub fn remove(&self, target: &Target) {
        self.plans.write().remove(target);
    }

    /// The plan of `target`.
    pub fn get(&self, target: &Target) -> Option<Plan> {
        self.plans.read().get(target).map(|a| a.plan.clone())
    }

    /// No plan is in force (the hot path's one check).
    pub fn is_empty(&self) -> bool {
        self.plans.read().is_empty()
    }

    /// Decide one RCPT for `target` at `now_ms`, with the `SIZE=` it declared.
    pub fn at_rcpt(&self, target: &Target, declared_size: Option<u64>, now_ms: u64) -> Decision {
        let Some(armed) = self.plans.read().get(target).map(Arc::clone) else {
            return Decision::default();
        };
        let k = armed.rcpts.fetch_add(1, Ordering::Relaxed) + 1;
        let in_second = {
            let mut w = armed.window.lock();
            let second = now_ms / 1000;
            if w.0 != second {
                *w = (second, 0);
            }
            w.1 += 1;
            w.1
        };
        let mut d = Decision::default();
        for rule in &armed.plan.rules {
            let refuse = match rule {
                Rule::First { n, reply } => (k <= u64::from(*n)).then_some(reply),
                Rule::RateAbove { per_second, reply } => {
                    (in_second > u64::from(*per_second)).then_some(reply)
                }
                Rule::Every { n, delay_ms } => {
                    if k % u64::from(*n) == 0 {
                        d.delay_ms = d.delay_ms.max(*delay_ms);
                    }
                    None
                }
                Rule::SizeAbove { bytes, reply } => {
                    declared_size.is_some_and(|s| s > *bytes).then_some(reply)
                }
            };
            if let (Some(reply), None) = (refuse, &d.refuse) {
                if let Some(code) = reply_code(reply) {
                    d.refuse = Some((code, reply.clone()));
                }
            }
        }
        d
    }

    /// The refusal for a body of `size` bytes to `target`, if its plan has one.
    pub fn at_data(&self, target: &Target, size: u64) -> Option<(u16, String)> {
        let armed = self.plans.read().get(target).map(Arc::clone)?;
        armed.plan.rules.iter().find_map(|r| match r {
            Rule::SizeAbove { bytes, reply } if size > *bytes => {
                reply_code(reply).map(|c| (c, reply.clone()))
            }
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(json: &str) -> Plan {
        serde_json::from_str(json).expect("plan parses")
    }

    #[test]
    fn the_issue_example_parses_and_validates() {
        let p = plan(
            r#"{"rules": [{"when": "first", "n": 2, "reply": "451 4.7.1 try later"}, {"when": "rate_above", "per_second": 100, "reply": "421 4.7.0 slow down"}, {"when": "every", "n": 10, "delay_ms": 3000}, {"when": "size_above", "bytes": 1000000, "reply": "552 5.3.4"}]}"#,
        );
        assert_eq!(p.rules.len(), 4);
        assert_eq!(p.validate(), Ok(()));
        assert!(serde_json::from_str::<Plan>(r#"{"rules": [{"when": "sometimes"}]}"#).is_err());
        assert!(serde_json::from_str::<Plan>(
            r#"{"rules": [{"when": "first", "n": 1, "reply": "451", "x": 1}]}"#
        )
        .is_err());
    }

    #[test]
    fn bad_rules_are_named() {
        for (json, what) in [
            (
                r#"{"rules":[{"when":"first","n":0,"reply":"451"}]}"#,
                "rules[0]: n",
            ),
            (
                r#"{"rules":[{"when":"first","n":1,"reply":"250 ok"}]}"#,
                "rules[0]: reply",
            ),
            (
                r#"{"rules":[{"when":"first","n":1,"reply":"451x"}]}"#,
                "rules[0]: reply",
            ),
            (
                r#"{"rules":[{"when":"every","n":1,"delay_ms":60001}]}"#,
                "rules[0]: delay_ms",
            ),
            (
                r#"{"rules":[{"when":"rate_above","per_second":0,"reply":"421"}]}"#,
                "rules[0]: per_second",
            ),
        ] {
            let err = plan(json).validate().expect_err(json);
            assert!(err.0.starts_with(what), "{json}: {}", err.0);
        }
    }

    #[test]
    fn rules_fire_deterministically_for_their_target_only() {
        let f = FaultPlans::default();
        let t = Target::Mailbox("a@x.test".into());
        let other = Target::Mailbox("b@x.test".into());
        f.set(t.clone(), plan(r#"{"rules":[{"when":"first","n":2,"reply":"451 4.7.1 later"},{"when":"every","n":3,"delay_ms":5},{"when":"size_above","bytes":10,"reply":"552 5.3.4 big"}]}"#)).expect("valid");
        let codes: Vec<_> = (0..6).map(|_| f.at_rcpt(&t, None, 0)).collect();
        assert_eq!(codes[0].refuse.as_ref().map(|r| r.0), Some(451));
        assert_eq!(codes[1].refuse.as_ref().map(|r| r.0), Some(451));
        assert_eq!(
            codes[2],
            Decision {
                delay_ms: 5,
                refuse: None
            }
        );
        assert_eq!(codes[3], Decision::default());
        assert_eq!(codes[5].delay_ms, 5);
        assert_eq!(f.at_rcpt(&other, None, 0), Decision::default());
        assert_eq!(f.at_rcpt(&t, Some(11), 0).refuse.map(|r| r.0), Some(552));
        assert_eq!(f.at_data(&t, 11).map(|r| r.0), Some(552));
        assert_eq!(f.at_data(&t, 10), None);
        assert_eq!(f.at_data(&other, 11), None);
    }

    #[test]
    fn the_rate_window_is_one_second() {
        let f = FaultPlans::default();
        let t = Target::Campaign(7);
        f.set(
            t.clone(),
            plan(
                r#"{"rules":[{"when":"rate_above","per_second":2,"reply":"421 4.7.0 slow down"}]}"#,
            ),
        )
        .expect("valid");
        let at = |ms| f.at_rcpt(&t, None, ms).refuse.map(|r| r.0);
        assert_eq!((at(1_000), at(1_500), at(1_999)), (None, None, Some(421)));
        assert_eq!(at(2_000), None);
    }
}
