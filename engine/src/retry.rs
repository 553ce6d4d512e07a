//! Retries of a delivery that failed after part of it was stored.
//!
//! A delivery to mailboxes in several shards is one batch per shard: one
//! shard can fail (full disk, a queue full, a failed sync) after another
//! committed. The sender is told to retry (`451`/`452`, webhook `503`), and
//! without this the retry would store the committed shards' copies a second
//! time. So each shard remembers, per delivery key, what its part stored
//! ([`Parts`], recorded by the writer when the part is durable, whether or
//! not the caller is still waiting), and a retry with the same key skips the
//! shards that have their part and answers with the ids already stored.
//!
//! The key: for a delivery with a dedupe key (the SNS `MessageId`), that
//! key; otherwise, only for a delivery spanning several shards, a SHA-256
//! of the envelope sender, the recipient set and the message without its
//! first header line (our `Received:` trace line, which differs per try). A
//! delivery that succeeds everywhere forgets its parts at once, so the same
//! bytes sent again later are a new message; only failed deliveries leave
//! parts behind. Bounded: [`RETRY_WINDOW_MS`] and [`MAX_PARTS_PER_SHARD`]
//! (oldest forgotten first).
//!
//! Durable across a restart: a part of a delivery with more than one part
//! is written with a `DeliveryPart` record (the key, the try's time, each
//! mailbox's outcome) in the same batch as its messages, so it is on disk
//! exactly when they are. A delivery that succeeds everywhere tells each of
//! its shards' writers, which append a `DeliveryDone` record to their next
//! batch (no sync of its own: it rides with the next group commit, or the
//! clean shutdown). Recovery ([`Parts::rebuild`]) remembers the parts
//! within the window that no later `DeliveryDone` names. A `DeliveryDone`
//! lost to a crash (or not queued: the writer's queue was full, or more
//! than [`MAX_PARTS_PER_SHARD`] waited) only means that the same bytes sent
//! again within the window after the restart are answered with the ids of
//! the first copy instead of being stored again. A single-part delivery
//! writes neither (it is all-or-nothing: nothing to retry around); its
//! dedupe key, if any, is durable on its own (`Dedupe` records). A part
//! forwarded by another host (`Engine::deliver_forwarded`) is one part of a
//! delivery across hosts: it is written, never noted done here, and so is
//! remembered for the whole window, across a restart of this host too.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::codec::PartOutcomeRec;
use crate::error::ResolveError;
use crate::state::Shared;
use crate::types::{MailboxId, MessageId, Recipient};

/// How long a failed delivery's stored parts are remembered for its retry.
pub(crate) const RETRY_WINDOW_MS: u64 = 3_600_000;
/// Most delivery keys remembered per shard; past it the oldest goes.
pub(crate) const MAX_PARTS_PER_SHARD: usize = 4096;

/// Identifies a delivery across its retries.
pub(crate) type DeliveryKey = [u8; 32];

/// Per mailbox of one shard's part: its stored copy, or why it was refused.
pub(crate) type PartOutcomes = Vec<(MailboxId, Result<MessageId, ResolveError>)>;

/// The key of a delivery with a caller-given dedupe key.
pub(crate) fn explicit_key(key: &str) -> DeliveryKey {
    let mut h = Sha256::new();
    h.update(b"dedupe\0");
    h.update(key.as_bytes());
    h.finalize().into()
}

/// The key of a delivery without one: sender, recipient set, and the
/// message past its first header field (the ingest path's trace line).
pub(crate) fn derived_key(envelope_from: &str, rcpts: &[Recipient], raw: &[u8]) -> DeliveryKey {
    let mut named: Vec<String> = rcpts
        .iter()
        .map(|r| match &r.plus_tag {
            Some(t) => format!("{}+{t}", r.address),
            None => r.address.to_string(),
        })
        .collect();
    named.sort_unstable();
    named.dedup();
    let mut h = Sha256::new();
    h.update(b"delivery\0");
    h.update(envelope_from.as_bytes());
    h.update(b"\0");
    for n in &named {
        h.update(n.as_bytes());
        h.update(b"\n");
    }
    h.update(b"\0");
    h.update(past_first_field(raw));
    h.finalize().into()
}

/// `raw` after its first header field (with its folded lines).
fn past_first_field(raw: &[u8]) -> &[u8] {
    let mut at = 0;
    while let Some(nl) = raw
        .get(at..)
        .and_then(|r| r.iter().position(|&b| b == b'\n'))
    {
        at += nl + 1;
        if !matches!(raw.get(at), Some(b' ' | b'\t')) {
            return raw.get(at..).unwrap_or_default();
        }
    }
    raw
}

/// Whether a delivery's parts are written to the log (`DeliveryPart`,
/// `DeliveryDone`): only when it has more than one, since a single part is
/// all-or-nothing. `dedupe_parts`: the part count a dedupe-keyed delivery
/// declares; a delivery without one has a key only when it spans shards
/// or hosts (forwarded).
pub(crate) fn logged(dedupe_parts: Option<u8>) -> bool {
    dedupe_parts.is_none_or(|n| n > 1)
}

/// A mailbox's outcome as a `DeliveryPart` stores it.
pub(crate) fn outcome_rec(
    mailbox: MailboxId,
    r: &Result<MessageId, ResolveError>,
) -> PartOutcomeRec {
    let (code, seq) = match r {
        Ok(id) => (0, id.seq),
        Err(ResolveError::NoSuchMailbox) => (1, 0),
        Err(ResolveError::MailboxFull) => (2, 0),
        Err(ResolveError::ForeignDomain) => (3, 0),
        Err(ResolveError::BadAddress) => (4, 0),
    };
    PartOutcomeRec {
        mailbox: mailbox.0,
        code,
        seq,
    }
}

/// A stored outcome back; `None` for a code this build does not know.
fn outcome_of(o: &PartOutcomeRec) -> Option<(MailboxId, Result<MessageId, ResolveError>)> {
    let mailbox = MailboxId(o.mailbox);
    let r = match o.code {
        0 => Ok(MessageId {
            mailbox,
            seq: o.seq,
        }),
        1 => Err(ResolveError::NoSuchMailbox),
        2 => Err(ResolveError::MailboxFull),
        3 => Err(ResolveError::ForeignDomain),
        4 => Err(ResolveError::BadAddress),
        _ => return None,
    };
    Some((mailbox, r))
}

/// A part found in the log at open: its key, its try's time, its outcomes.
pub(crate) type LoggedPart = (DeliveryKey, u64, Vec<PartOutcomeRec>);

/// A caller-given dedupe key being written. It is settled when the last
/// holder lets go: the caller, and every writer that has a part of the
/// delivery queued or in a batch. So a caller that gives up (a webhook
/// request cancelled by its client) does not free the key while its write
/// is still queued: a retry meanwhile is told to come back later
/// (`Saturated`), and once the writes are done it finds them (the whole
/// key, or each shard's part).
pub(crate) struct PendingKey {
    shared: Arc<Shared>,
    key: String,
    /// Parts the delivery has; `usize::MAX` until known.
    parts: AtomicUsize,
    committed: AtomicUsize,
}

impl PendingKey {
    pub(crate) fn new(shared: Arc<Shared>, key: String) -> Arc<Self> {
        Arc::new(Self {
            shared,
            key,
            parts: AtomicUsize::new(usize::MAX),
            committed: AtomicUsize::new(0),
        })
    }

    /// The delivery has `n` parts (one per shard).
    pub(crate) fn set_parts(&self, n: usize) {
        self.parts.store(n, Ordering::Release);
    }

    /// One part is durable (written now, or found stored by an earlier try).
    pub(crate) fn part_committed(&self) {
        self.committed.fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for PendingKey {
    fn drop(&mut self) {
        let done = self.committed.load(Ordering::Acquire) >= self.parts.load(Ordering::Acquire);
        let mut stripe = self.shared.dedupe_stripe(&self.key).lock();
        if done {
            if let Some(e) = stripe.get_mut(&self.key) {
                e.pending = false;
            }
        } else {
            stripe.remove(&self.key);
        }
    }
}

/// Answer a delivery with `result`, letting go of `hold` first (the part
/// of the command that holds a [`PendingKey`], if any): a retry sent the
/// moment the caller hears must never find the key still pending. Every
/// answer to a delivery goes through here. (The caller may have given up:
/// nothing more to tell then.)
pub(crate) fn answer_delivery<T, H>(
    reply: crate::cmd::Reply<T, crate::error::DeliverError>,
    hold: H,
    result: Result<T, crate::error::DeliverError>,
) {
    drop(hold);
    drop(reply.send(result));
}

/// What a writer is given with a part of a keyed delivery: the key, and
/// the dedupe key the part settles, if the delivery has one.
pub(crate) type PartKey = (DeliveryKey, Option<Arc<PendingKey>>);

/// What a writer records once its part of a keyed delivery is durable.
pub(crate) struct PartRecord {
    pub(crate) key: DeliveryKey,
    pub(crate) outcomes: PartOutcomes,
    pub(crate) pending: Option<Arc<PendingKey>>,
}

impl PartRecord {
    /// The part is durable: remember it for a retry, count it for the key.
    pub(crate) fn committed(self, parts: &parking_lot::Mutex<Parts>, now: u64) {
        parts.lock().record(self.key, now, self.outcomes);
        if let Some(p) = &self.pending {
            p.part_committed();
        }
    }
}

/// One shard's remembered parts.
#[derive(Default)]
pub(crate) struct Parts {
    map: HashMap<DeliveryKey, (u64, PartOutcomes)>,
    /// Keys oldest first, with when they were recorded.
    order: VecDeque<(DeliveryKey, u64)>,
}

impl Parts {
    /// What this shard stored for `key`, if within the window.
    pub(crate) fn get(&self, key: &DeliveryKey, now: u64) -> Option<&PartOutcomes> {
        self.map
            .get(key)
            .filter(|(at, _)| now.saturating_sub(*at) < RETRY_WINDOW_MS)
            .map(|(_, o)| o)
    }

    /// Remember a durable part.
    pub(crate) fn record(&mut self, key: DeliveryKey, now: u64, outcomes: PartOutcomes) {
        while let Some(&(old, at)) = self.order.front() {
            let expired = now.saturating_sub(at) >= RETRY_WINDOW_MS;
            if !expired && self.order.len() < MAX_PARTS_PER_SHARD {
                break;
            }
            self.order.pop_front();
            if self.map.get(&old).is_some_and(|(t, _)| *t == at) {
                self.map.remove(&old);
            }
        }
        self.map.insert(key, (now, outcomes));
        self.order.push_back((key, now));
    }

    /// The delivery succeeded everywhere: nothing to retry.
    pub(crate) fn forget(&mut self, key: &DeliveryKey) {
        self.map.remove(key);
    }

    /// One shard's parts at open, from its `DeliveryPart` records (`parts`)
    /// and `DeliveryDone` records (`done`: key, time of the try that
    /// succeeded), in any order (compaction moves records): a part counts
    /// if it is within the window and no `DeliveryDone` of its key is as
    /// late as its try. At most [`MAX_PARTS_PER_SHARD`], the newest.
    pub(crate) fn rebuild(
        mut parts: Vec<LoggedPart>,
        done: &[(DeliveryKey, u64)],
        now: u64,
    ) -> Self {
        let mut done_at: HashMap<DeliveryKey, u64> = HashMap::new();
        for (key, at) in done {
            let e = done_at.entry(*key).or_insert(*at);
            *e = (*e).max(*at);
        }
        parts.retain(|(key, at, _)| {
            now.saturating_sub(*at) < RETRY_WINDOW_MS && done_at.get(key).is_none_or(|d| *d < *at)
        });
        parts.sort_by_key(|(_, at, _)| *at);
        let skip = parts.len().saturating_sub(MAX_PARTS_PER_SHARD);
        let mut rebuilt = Self::default();
        for (key, at, outcomes) in parts.into_iter().skip(skip) {
            let outcomes: Option<PartOutcomes> = outcomes.iter().map(outcome_of).collect();
            // A code this build does not know: a retry stores that part
            // again rather than answer with a guess.
            if let Some(outcomes) = outcomes {
                rebuilt.record(key, at, outcomes);
            }
        }
        rebuilt
    }

    /// Keys remembered now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_line_does_not_change_the_key_and_the_rest_does() {
        let r = vec![Recipient::parse("a+x@d.test").unwrap()];
        let one = derived_key(
            "s@x",
            &r,
            b"Received: from a\r\n\tby b\r\nSubject: s\r\n\r\nhi",
        );
        let two = derived_key("s@x", &r, b"Received: from c by d\r\nSubject: s\r\n\r\nhi");
        assert_eq!(one, two);
        assert_ne!(
            one,
            derived_key("s@x", &r, b"Received: x\r\nSubject: t\r\n\r\nhi")
        );
        assert_ne!(
            one,
            derived_key("t@x", &r, b"Received: x\r\nSubject: s\r\n\r\nhi")
        );
        let other = vec![Recipient::parse("a+y@d.test").unwrap()];
        assert_ne!(
            one,
            derived_key("s@x", &other, b"Received: x\r\nSubject: s\r\n\r\nhi")
        );
    }

    #[test]
    fn rebuilt_parts_skip_the_done_the_old_and_the_excess_in_any_record_order() {
        let key = |i: u64| {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&i.to_le_bytes());
            k
        };
        let stored = |seq| {
            vec![PartOutcomeRec {
                mailbox: 2,
                code: 0,
                seq,
            }]
        };
        let now = 10 * RETRY_WINDOW_MS;
        let parts = vec![
            // Done later (its done note comes first in the log: compaction).
            (key(1), now - 50, stored(1)),
            // Done by an earlier try only: this later try stands.
            (key(2), now - 10, stored(2)),
            // Out of the window.
            (key(3), now - RETRY_WINDOW_MS, stored(3)),
            // A refusal code this build does not know.
            (
                key(4),
                now - 5,
                vec![PartOutcomeRec {
                    mailbox: 2,
                    code: 99,
                    seq: 0,
                }],
            ),
            (key(5), now - 1, stored(5)),
        ];
        let done = [(key(1), now - 40), (key(2), now - 20)];
        let p = Parts::rebuild(parts, &done, now);
        assert!(p.get(&key(1), now).is_none());
        let id = MessageId {
            mailbox: MailboxId(2),
            seq: 2,
        };
        assert_eq!(p.get(&key(2), now), Some(&vec![(MailboxId(2), Ok(id))]));
        assert!(p.get(&key(3), now).is_none());
        assert!(p.get(&key(4), now).is_none());
        assert!(p.get(&key(5), now).is_some());

        let many = (0..MAX_PARTS_PER_SHARD as u64 + 3)
            .map(|i| (key(i), now - 1_000_000 + i, stored(i)))
            .collect();
        let p = Parts::rebuild(many, &[], now);
        assert_eq!(p.len(), MAX_PARTS_PER_SHARD);
        assert!(p.get(&key(0), now).is_none(), "the oldest go");
        assert!(p.get(&key(MAX_PARTS_PER_SHARD as u64 + 2), now).is_some());
    }

    #[test]
    fn parts_are_bounded_in_number_and_time() {
        let mut p = Parts::default();
        for i in 0..(MAX_PARTS_PER_SHARD as u64 + 10) {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&i.to_le_bytes());
            p.record(k, i, Vec::new());
        }
        assert!(p.len() <= MAX_PARTS_PER_SHARD);
        let k = [7u8; 32];
        p.record(k, 1_000_000, Vec::new());
        assert!(p.get(&k, 1_000_000 + RETRY_WINDOW_MS - 1).is_some());
        assert!(p.get(&k, 1_000_000 + RETRY_WINDOW_MS).is_none());
        p.record([8u8; 32], 1_000_000 + RETRY_WINDOW_MS, Vec::new());
        assert!(
            p.get(&k, 1_000_000).is_none(),
            "expired entries are dropped"
        );
    }
}
