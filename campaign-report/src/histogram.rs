//! A fixed-size log-linear histogram of milliseconds: exact below 16, then
//! 16 sub-buckets per power of two (at most 1/16 relative error), so any
//! u64 fits in [`BUCKETS`] counters and memory never grows with the data.

/// Number of counters: 16 exact values, then 16 per power of two from 2⁴ to 2⁶³.
pub const BUCKETS: usize = 16 + 60 * 16;

/// Counts of values by bucket, plus the exact maximum.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            max: 0,
        }
    }
}

/// The bucket of `v`.
pub fn bucket_of(v: u64) -> usize {
    if v < 16 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros() as usize; // 4..=63
    let sub = ((v >> (e - 4)) & 15) as usize;
    16 + (e - 4) * 16 + sub
}

/// The largest value that falls in bucket `b`.
pub fn upper_bound(b: usize) -> u64 {
    if b < 16 {
        return b as u64;
    }
    let e = (b - 16) / 16 + 4;
    let sub = ((b - 16) % 16) as u64;
    let low = (16 + sub) << (e - 4);
    low + ((1u64 << (e - 4)) - 1)
}

impl Histogram {
    /// Count `v`.
    pub fn record(&mut self, v: u64) {
        if let Some(c) = self.counts.get_mut(bucket_of(v)) {
            *c += 1;
        }
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// Values counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The smallest bucket bound with at least `per_mille`/1000 of the
    /// values at or below it, never above the exact maximum.
    pub fn percentile(&self, per_mille: u64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let want = (self.total * per_mille).div_ceil(1000).max(1);
        let mut seen = 0;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return upper_bound(b).min(self.max);
            }
        }
        self.max
    }

    /// p50, p90, p99 and max.
    pub fn summary(&self) -> crate::Latency {
        crate::Latency {
            count: self.total,
            p50_ms: self.percentile(500),
            p90_ms: self.percentile(900),
            p99_ms: self.percentile(990),
            max_ms: if self.total == 0 { 0 } else { self.max },
        }
    }

    /// Non-empty buckets as (upper bound ms, count), lowest first.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(b, c)| (upper_bound(b), *c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        for v in [0, 1, 15, 16, 17, 31, 32, 33, 1000, 1 << 40, u64::MAX] {
            let b = bucket_of(v);
            assert!(b < BUCKETS, "{v}");
            assert!(upper_bound(b) >= v, "{v}");
            if b > 0 {
                assert!(upper_bound(b - 1) < v, "{v}");
            }
        }
    }
}
