//! The report of a load campaign: what arrived, once or more, and how fast.
//!
//! Pure and bounded: no I/O, no clock, no threads. The engine feeds it one
//! [`Arrival`] per committed campaign message (live, and again from the log
//! at open, so the report is rebuilt exactly) and one refusal per reply code
//! a campaign's fault plan or limits gave.
//!
//! Memory bound per campaign: one 8-byte hash plus a 4-byte count per
//! distinct Message-ID and one 8-byte hash per distinct recipient (about
//! 40 bytes per message at the hash tables' load factor), a fixed
//! [`Histogram`] of [`BUCKETS`] counters (7.8 KiB), and at most
//! [`MAX_DUPLICATE_EXAMPLES`] example Message-IDs of at most
//! [`MAX_ID_BYTES`] bytes each. The caller bounds the number of messages.
//!
//! Message-IDs and recipients are counted by a 64-bit hash of their bytes:
//! two different values are counted as one only on a hash collision
//! (probability about n²/2⁶⁵, 3·10⁻⁹ for a million messages).

mod date;
mod headers;
mod histogram;

use std::collections::{BTreeMap, HashMap, HashSet};

pub use date::parse_date_ms;
pub use headers::{scan, Scanned, MAX_SCAN_BYTES};
pub use histogram::{Histogram, BUCKETS};

/// Most duplicated Message-IDs a report names (the count of all of them is exact).
pub const MAX_DUPLICATE_EXAMPLES: usize = 100;
/// Longest Message-ID kept as an example, in bytes (longer ones are clipped).
pub const MAX_ID_BYTES: usize = 998;

/// One committed campaign message, as the report needs it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    /// The `Message-ID:` header's value, if it had one.
    pub message_id: Option<&'a str>,
    /// The envelope recipient.
    pub recipient: &'a str,
    /// Bytes stored or counted (the message as received).
    pub size: u64,
    /// When the sender says it sent it (`Date:` or the campaign's header), ms.
    pub sent_at_ms: Option<u64>,
    /// When it was durable here, ms.
    pub committed_at_ms: u64,
}

/// A Message-ID seen more than once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The Message-ID (clipped to [`MAX_ID_BYTES`]).
    pub message_id: String,
    /// How many messages carried it.
    pub count: u32,
}

/// Percentiles of the arrival latency, ms (each the upper bound of its
/// histogram bucket, at most 1/16 above the exact value, never above `max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Latency {
    /// Messages with a sending time we could read.
    pub count: u64,
    /// Median.
    pub p50_ms: u64,
    /// 90th percentile.
    pub p90_ms: u64,
    /// 99th percentile.
    pub p99_ms: u64,
    /// Exact maximum.
    pub max_ms: u64,
}

/// The running report of one campaign.
#[derive(Debug, Clone, Default)]
pub struct Report {
    accepted: u64,
    bytes: u64,
    refused: BTreeMap<u16, u64>,
    ids: HashMap<u64, u32>,
    without_id: u64,
    duplicate_ids: u64,
    duplicate_messages: u64,
    examples: Vec<(u64, Duplicate)>,
    recipients: HashSet<u64>,
    first_ms: Option<u64>,
    last_ms: Option<u64>,
    latency: Histogram,
    no_sent_at: u64,
    sent_in_future: u64,
}

impl Report {
    /// Count one committed message.
    pub fn accept(&mut self, a: &Arrival<'_>) {
        self.accepted += 1;
        self.bytes = self.bytes.saturating_add(a.size);
        self.recipients.insert(hash(a.recipient.as_bytes()));
        self.first_ms = Some(
            self.first_ms
                .map_or(a.committed_at_ms, |f| f.min(a.committed_at_ms)),
        );
        self.last_ms = Some(
            self.last_ms
                .map_or(a.committed_at_ms, |l| l.max(a.committed_at_ms)),
        );
        match a.sent_at_ms {
            None => self.no_sent_at += 1,
            Some(sent) => {
                if sent > a.committed_at_ms {
                    // The sender's clock is ahead of ours: counted as 0 ms and named.
                    self.sent_in_future += 1;
                }
                self.latency.record(a.committed_at_ms.saturating_sub(sent));
            }
        }
        let Some(id) = a.message_id else {
            self.without_id += 1;
            return;
        };
        let h = hash(id.as_bytes());
        let seen = self.ids.entry(h).or_insert(0);
        *seen = seen.saturating_add(1);
        let seen = *seen;
        if seen < 2 {
            return;
        }
        self.duplicate_messages += 1;
        if seen == 2 {
            self.duplicate_ids += 1;
            if self.examples.len() < MAX_DUPLICATE_EXAMPLES {
                let message_id = clip(id, MAX_ID_BYTES).to_owned();
                self.examples.push((
                    h,
                    Duplicate {
                        message_id,
                        count: 2,
                    },
                ));
            }
        } else if let Some((_, d)) = self.examples.iter_mut().find(|(eh, _)| *eh == h) {
            d.count = seen;
        }
    }

    /// Count one refusal with SMTP reply `code` (a fault plan's, or a limit's).
    pub fn refuse(&mut self, code: u16) {
        *self.refused.entry(code).or_insert(0) += 1;
    }

    /// Messages accepted (one per recipient copy).
    pub fn accepted(&self) -> u64 {
        self.accepted
    }
    /// Bytes of the messages accepted.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    /// Refusals by reply code.
    pub fn refused(&self) -> &BTreeMap<u16, u64> {
        &self.refused
    }
    /// Distinct Message-IDs.
    pub fn unique_message_ids(&self) -> u64 {
        self.ids.len() as u64
    }
    /// Messages without a Message-ID.
    pub fn without_message_id(&self) -> u64 {
        self.without_id
    }
    /// Message-IDs seen more than once.
    pub fn duplicate_message_ids(&self) -> u64 {
        self.duplicate_ids
    }
    /// Messages beyond the first with the same Message-ID.
    pub fn duplicate_messages(&self) -> u64 {
        self.duplicate_messages
    }
    /// Up to [`MAX_DUPLICATE_EXAMPLES`] duplicated Message-IDs, in the order
    /// they were first duplicated.
    pub fn duplicates(&self) -> impl Iterator<Item = &Duplicate> {
        self.examples.iter().map(|(_, d)| d)
    }
    /// Distinct envelope recipients.
    pub fn distinct_recipients(&self) -> u64 {
        self.recipients.len() as u64
    }
    /// Commit time of the first and the last message, ms.
    pub fn first_last_ms(&self) -> Option<(u64, u64)> {
        Some((self.first_ms?, self.last_ms?))
    }
    /// Arrival latency percentiles.
    pub fn latency(&self) -> Latency {
        self.latency.summary()
    }
    /// The latency histogram itself.
    pub fn histogram(&self) -> &Histogram {
        &self.latency
    }
    /// Messages whose sending time was missing or unreadable.
    pub fn without_sent_at(&self) -> u64 {
        self.no_sent_at
    }
    /// Messages whose sending time was later than our commit.
    pub fn sent_in_future(&self) -> u64 {
        self.sent_in_future
    }
}

/// FNV-1a, 64-bit: stable across processes, so a rebuilt report is the same.
fn hash(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `s` cut to at most `max` bytes at a character boundary.
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival<'a>(id: Option<&'a str>, rcpt: &'a str, sent: Option<u64>, at: u64) -> Arrival<'a> {
        Arrival {
            message_id: id,
            recipient: rcpt,
            size: 100,
            sent_at_ms: sent,
            committed_at_ms: at,
        }
    }

    #[test]
    fn duplicates_are_counted_and_named_once_each() {
        let mut r = Report::default();
        r.accept(&arrival(Some("<a@x>"), "u1@c", Some(1_000), 1_500));
        r.accept(&arrival(Some("<b@x>"), "u2@c", Some(1_000), 1_200));
        r.accept(&arrival(Some("<a@x>"), "u3@c", None, 1_700));
        r.accept(&arrival(Some("<a@x>"), "u3@c", Some(2_000), 1_000));
        r.accept(&arrival(None, "u4@c", None, 900));
        r.refuse(451);
        r.refuse(451);
        r.refuse(552);
        assert_eq!(r.accepted(), 5);
        assert_eq!(r.bytes(), 500);
        assert_eq!(r.unique_message_ids(), 2);
        assert_eq!(r.without_message_id(), 1);
        assert_eq!(r.duplicate_message_ids(), 1);
        assert_eq!(r.duplicate_messages(), 2);
        let d: Vec<_> = r.duplicates().cloned().collect();
        assert_eq!(
            d,
            vec![Duplicate {
                message_id: "<a@x>".into(),
                count: 3
            }]
        );
        assert_eq!(r.distinct_recipients(), 4);
        assert_eq!(r.first_last_ms(), Some((900, 1_700)));
        assert_eq!(r.refused().get(&451), Some(&2));
        assert_eq!(r.refused().get(&552), Some(&1));
        assert_eq!(r.without_sent_at(), 2);
        assert_eq!(r.sent_in_future(), 1);
        let l = r.latency();
        assert_eq!(l.count, 3);
        assert_eq!(l.max_ms, 500);
    }

    #[test]
    fn examples_stop_at_the_bound_but_counts_do_not() {
        let mut r = Report::default();
        for i in 0..(MAX_DUPLICATE_EXAMPLES + 50) {
            let id = format!("<{i}@x>");
            r.accept(&arrival(Some(&id), "a@c", None, 1));
            r.accept(&arrival(Some(&id), "a@c", None, 1));
        }
        assert_eq!(r.duplicates().count(), MAX_DUPLICATE_EXAMPLES);
        assert_eq!(
            r.duplicate_message_ids(),
            (MAX_DUPLICATE_EXAMPLES + 50) as u64
        );
    }

    #[test]
    fn clip_keeps_char_boundaries() {
        assert_eq!(clip("ñañ", 3), "ña");
        assert_eq!(clip("abc", 9), "abc");
    }
}
