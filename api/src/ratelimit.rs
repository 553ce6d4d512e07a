//! In-memory token buckets shared by every core, keyed by API key or client
//! IP, with a bounded number of entries.
//!
//! A bucket holds up to `per_minute` tokens and refills at `per_minute / 60`
//! per second, so a client may burst a full minute's allowance and then runs
//! at the steady rate. The map is sharded to keep lock hold times short; a
//! full shard first forgets buckets that have refilled completely (forgetting
//! those loses nothing: a new bucket starts full), then the fullest one.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use parking_lot::Mutex;
use uncorreo_engine::ApiKeyId;

const SHARDS: usize = 16;

/// What a bucket is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BucketKey {
    /// Every request from one client (IPv6 collapsed to its /64).
    Ip(IpAddr),
    /// Requests without an API key from one client, at the anonymous plan's rate.
    Anonymous(IpAddr),
    /// Requests made with one API key, at its user's plan's rate.
    Key(ApiKeyId),
}

/// The client address used for limits: IPv6 addresses are cut to their /64,
/// because one host usually owns a whole /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                for s in seg.iter_mut().skip(4) {
                    *s = 0;
                }
                IpAddr::V6(seg.into())
            }
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    capacity: f64,
    last_ms: u64,
}

impl Bucket {
    fn refill(&mut self, now_ms: u64, capacity: f64) {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.capacity = capacity;
        self.tokens = (self.tokens + elapsed * capacity / 60.0).min(capacity);
        self.last_ms = now_ms.max(self.last_ms);
    }

    fn is_full_at(&self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.tokens + elapsed * self.capacity / 60.0 >= self.capacity
    }
}

/// Token buckets for every [`BucketKey`].
pub struct RateLimiter {
    shards: Vec<Mutex<HashMap<BucketKey, Bucket>>>,
    per_shard: usize,
}

/// A request was refused; retry after this many whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Seconds until one token is available again (at least 1).
    pub retry_after_secs: u64,
}

impl RateLimiter {
    /// Room for about `max_entries` buckets in total.
    pub fn new(max_entries: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max_entries.div_ceil(SHARDS).max(1),
        }
    }

    /// Take one token from `key`'s bucket (of `per_minute` capacity) at `now_ms`.
    /// `per_minute == 0` refuses everything.
    pub fn check(&self, key: BucketKey, per_minute: u32, now_ms: u64) -> Result<(), Limited> {
        let capacity = f64::from(per_minute);
        let shard = &self.shards[shard_of(&key)];
        let mut map = shard.lock();
        if !map.contains_key(&key) && map.len() >= self.per_shard {
            evict(&mut map, now_ms);
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: capacity,
            capacity,
            last_ms: now_ms,
        });
        b.refill(now_ms, capacity);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let retry_after_secs = if per_minute == 0 {
            60
        } else {
            ((1.0 - b.tokens) * 60.0 / capacity).ceil().max(1.0) as u64
        };
        Err(Limited { retry_after_secs })
    }

    /// Buckets held now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// True if no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn shard_of(key: &BucketKey) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

fn evict(map: &mut HashMap<BucketKey, Bucket>, now_ms: u64) {
    map.retain(|_, b| !b.is_full_at(now_ms));
    if map.is_empty() {
        return;
    }
    // Everyone is mid-burst: forget the one closest to full, which is the
    // one that gains least from being forgotten.
    let fullest = map
        .iter()
        .max_by(|a, b| {
            (a.1.tokens / a.1.capacity.max(1.0)).total_cmp(&(b.1.tokens / b.1.capacity.max(1.0)))
        })
        .map(|(k, _)| *k);
    if let Some(k) = fullest {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> BucketKey {
        BucketKey::Ip(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn allows_a_burst_of_per_minute_then_refuses_with_retry_after() {
        let rl = RateLimiter::new(100);
        for _ in 0..3 {
            rl.check(ip(1), 3, 0).unwrap();
        }
        // 3/min refills one token every 20 s.
        assert_eq!(
            rl.check(ip(1), 3, 0),
            Err(Limited {
                retry_after_secs: 20
            })
        );
        assert_eq!(
            rl.check(ip(1), 3, 10_000),
            Err(Limited {
                retry_after_secs: 10
            })
        );
        rl.check(ip(1), 3, 20_000).unwrap();
        // Other keys are independent.
        rl.check(ip(2), 3, 20_000).unwrap();
    }

    #[test]
    fn zero_per_minute_refuses_everything() {
        let rl = RateLimiter::new(10);
        assert_eq!(
            rl.check(ip(1), 0, 0),
            Err(Limited {
                retry_after_secs: 60
            })
        );
    }

    #[test]
    fn map_stays_bounded_and_forgets_idle_buckets_first() {
        let rl = RateLimiter::new(SHARDS * 2);
        for n in 0..=255u8 {
            let _ = rl.check(ip(n), 10, 0);
        }
        assert!(rl.len() <= SHARDS * 2, "{}", rl.len());
    }

    #[test]
    fn ipv6_collapses_to_its_64_and_mapped_v4_to_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        let m: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(client_key(m), IpAddr::from([10, 1, 2, 3]));
    }
}
