//! Where listing summaries are derived: a small, fixed set of threads of
//! their own, fed through a bounded queue. `Engine::deliver` runs on the
//! SMTP and HTTP core threads, and MIME parsing there would stall every
//! session on that core for the length of a 25 MB parse (and a parser panic
//! would unwind through it). A full queue is answered `Saturated` (SMTP
//! `451`), like a full shard queue, instead of growing without bound. The
//! pool thread that derived a delivery's summary queues it on the shard
//! writers itself (`Engine::deliver`), so the core thread that asked is
//! woken once per message, by the commit, and not also in between: on a
//! loaded machine those wake-ups cost more CPU than the parse.
//!
//! The same threads derive again, lazily, the summary of a message stored by
//! older extraction rules ([`Rederived`]): the raw bytes are the source of
//! truth, and a better extractor should reach mail stored before it.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};

use crate::{DeliverError, MessageSummary, StorageError};

/// Most summary threads; one per core up to this.
const MAX_THREADS: usize = 4;
/// Messages waiting for a summary thread, process-wide.
pub(crate) const QUEUE_DEPTH: usize = 4096;

struct Job {
    raw: Bytes,
    /// Called on the pool thread with the summary.
    done: Box<dyn FnOnce(MessageSummary) + Send>,
}

/// A bounded pool deriving summaries with `derive`.
pub(crate) struct SummaryPool {
    jobs: Sender<Job>,
}

impl SummaryPool {
    /// Start `threads` workers behind a queue of `depth` jobs. The workers end
    /// when the pool is dropped.
    pub(crate) fn start(
        threads: usize,
        depth: usize,
        derive: fn(&[u8]) -> MessageSummary,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = crossbeam_channel::bounded::<Job>(depth);
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("uncorreo-summary-{i}"))
                .spawn(move || {
                    for job in queue {
                        // A panic costs this message its summary, never the
                        // message: the caller stores the raw bytes either way.
                        let summary = catch_unwind(AssertUnwindSafe(|| derive(&job.raw)))
                            .unwrap_or_else(|_| {
                                metrics::counter!(
                                    uncorreo_metric_names::MESSAGE_PARSE_FAILURES_TOTAL,
                                    "reason" => "panic"
                                )
                                .increment(1);
                                MessageSummary::default()
                            });
                        (job.done)(summary);
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Queue `raw`; `done` gets its summary on a pool thread. `Saturated`
    /// when the queue is full.
    pub(crate) fn then(
        &self,
        raw: Bytes,
        done: Box<dyn FnOnce(MessageSummary) + Send>,
    ) -> Result<(), DeliverError> {
        match self.jobs.try_send(Job { raw, done }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(DeliverError::Saturated),
            Err(TrySendError::Disconnected(_)) => Err(StorageError::Closed.into()),
        }
    }

    /// Queue `raw` for a summary; `Saturated` when the queue is full.
    #[cfg(test)]
    fn submit(
        &self,
        raw: Bytes,
    ) -> Result<tokio::sync::oneshot::Receiver<MessageSummary>, DeliverError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.then(
            raw,
            Box::new(move |summary| {
                // The delivery may have been abandoned; nothing to tell.
                let _ = reply.send(summary);
            }),
        )?;
        Ok(answer)
    }

    /// The summary of `raw`, derived on a pool thread.
    #[cfg(test)]
    pub(crate) async fn summarize(&self, raw: Bytes) -> Result<MessageSummary, DeliverError> {
        self.submit(raw)?
            .await
            .map_err(|_| DeliverError::from(StorageError::Closed))
    }
}

/// The process-wide pool, started on first use. Summaries depend on nothing
/// but the bytes, so every engine in the process can share it.
pub(crate) fn global() -> Result<&'static SummaryPool, DeliverError> {
    static POOL: OnceLock<Option<SummaryPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_THREADS);
        SummaryPool::start(threads, QUEUE_DEPTH, uncorreo_mail::summarize).ok()
    })
    .as_ref()
    .ok_or(DeliverError::Storage(StorageError::Closed))
}

/// Most summaries derived again and kept in memory per engine. Past it, a
/// stale message is served with its stored summary (still correct for its
/// headers; only codes and links may be older).
pub(crate) const MAX_REDERIVED: usize = 65_536;

/// Summaries of messages stored by older extraction rules, derived again from
/// their raw bytes on the pool, keyed by (mailbox, seq). Sequence numbers are
/// never reused within a mailbox, so an entry can never describe other bytes.
#[derive(Default)]
pub(crate) struct Rederived {
    state: Mutex<RederivedState>,
}

#[derive(Default)]
struct RederivedState {
    done: HashMap<(u64, u64), Arc<MessageSummary>>,
    /// Queued and not yet derived: a listing read twice queues it once.
    pending: HashSet<(u64, u64)>,
}

impl Rederived {
    /// The current summary of a stale message if it was derived already;
    /// otherwise `None`, and `raw()` (the verified raw bytes, or `None` if
    /// they cannot be read) is queued on `pool` unless it is queued already
    /// or the pool or this map is full.
    pub(crate) fn get_or_queue(
        self: &Arc<Self>,
        pool: &SummaryPool,
        key: (u64, u64),
        raw: impl FnOnce() -> Option<Bytes>,
    ) -> Option<Arc<MessageSummary>> {
        {
            let mut state = self.state.lock();
            if let Some(done) = state.done.get(&key) {
                return Some(Arc::clone(done));
            }
            if state.pending.contains(&key)
                || state.done.len() + state.pending.len() >= MAX_REDERIVED
            {
                return None;
            }
            state.pending.insert(key);
        }
        let me = Arc::clone(self);
        let queued = raw().map(|raw| {
            pool.then(
                raw,
                Box::new(move |summary| {
                    let mut state = me.state.lock();
                    state.pending.remove(&key);
                    state.done.insert(key, Arc::new(summary));
                }),
            )
        });
        if !matches!(queued, Some(Ok(()))) {
            // Not queued: the next read tries again.
            self.state.lock().pending.remove(&key);
        }
        None
    }

    /// Forget a deleted message.
    pub(crate) fn forget(&self, key: (u64, u64)) {
        self.state.lock().done.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    fn subject_only(raw: &[u8]) -> MessageSummary {
        MessageSummary {
            subject: String::from_utf8_lossy(raw).into_owned(),
            ..MessageSummary::default()
        }
    }

    fn panics_on_boom(raw: &[u8]) -> MessageSummary {
        assert!(raw != b"boom", "injected parser panic");
        subject_only(raw)
    }

    static GATE: Mutex<()> = Mutex::new(());

    fn waits_for_gate(raw: &[u8]) -> MessageSummary {
        let _open = GATE.lock();
        subject_only(raw)
    }

    #[tokio::test]
    async fn derives_off_the_calling_thread() {
        fn thread_name(_: &[u8]) -> MessageSummary {
            MessageSummary {
                subject: std::thread::current().name().unwrap_or("").to_owned(),
                ..MessageSummary::default()
            }
        }
        let pool = SummaryPool::start(1, 4, thread_name).unwrap();
        let s = pool.summarize(Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(s.subject, "uncorreo-summary-0");
    }

    #[tokio::test]
    async fn a_parser_panic_gives_an_empty_summary_and_the_pool_survives() {
        let pool = SummaryPool::start(1, 4, panics_on_boom).unwrap();
        let s = pool.summarize(Bytes::from_static(b"boom")).await.unwrap();
        assert_eq!(s, MessageSummary::default());
        let s = pool.summarize(Bytes::from_static(b"fine")).await.unwrap();
        assert_eq!(s.subject, "fine");
    }

    #[test]
    fn a_stale_summary_is_derived_once_on_the_pool_then_served() {
        let pool = SummaryPool::start(1, 4, subject_only).unwrap();
        let rederived = Arc::new(Rederived::default());
        let mut reads = 0;
        let mut raw = || {
            reads += 1;
            Some(Bytes::from_static(b"fresh"))
        };
        assert!(rederived.get_or_queue(&pool, (1, 1), &mut raw).is_none());
        let got = loop {
            if let Some(s) = rederived.get_or_queue(&pool, (1, 1), &mut raw) {
                break s;
            }
            std::thread::yield_now();
        };
        assert_eq!(got.subject, "fresh");
        assert_eq!(reads, 1, "queued once, not once per read");
        rederived.forget((1, 1));
        assert!(rederived.get_or_queue(&pool, (1, 1), || None).is_none());
    }

    #[test]
    fn unreadable_raw_bytes_are_not_remembered_as_pending() {
        let pool = SummaryPool::start(1, 4, subject_only).unwrap();
        let rederived = Arc::new(Rederived::default());
        assert!(rederived.get_or_queue(&pool, (2, 1), || None).is_none());
        assert!(rederived.state.lock().pending.is_empty());
    }

    #[tokio::test]
    async fn a_full_queue_is_saturated_not_unbounded() {
        let held = GATE.lock();
        let pool = SummaryPool::start(1, 1, waits_for_gate).unwrap();
        // One worker and one queue slot hold at most two jobs, however the
        // worker is scheduled: of three, at least one must be refused.
        let answers: Vec<_> = (0..3)
            .map(|i| pool.submit(Bytes::from(format!("m{i}"))))
            .collect();
        assert!(answers
            .iter()
            .any(|a| matches!(a, Err(DeliverError::Saturated))));
        drop(held);
        for answer in answers.into_iter().flatten() {
            assert!(answer.await.unwrap().subject.starts_with('m'));
        }
    }
}
