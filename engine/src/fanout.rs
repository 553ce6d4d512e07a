//! In-process pub/sub: per-mailbox subscribers fed after commit.
//!
//! Replaces Redis pub/sub. Subscribers live on any core (each owns the
//! receiving end of a bounded tokio channel, which wakes its task on its own
//! runtime); the publisher is whoever committed the message. Publishing locks
//! one of [`HUB_SHARDS`] maps, chosen by mailbox id, so there is no global lock
//! on the delivery path, and the work per event is one `try_send` per
//! subscriber of that mailbox.
//!
//! A subscriber that falls [`EngineConfig::subscriber_queue`](crate::EngineConfig)
//! events behind is cut off (its channel closed with the reason
//! [`SubscriptionEnd::Lagged`]) instead of buffering without bound; it resumes
//! from the last sequence it saw.
//!
//! Every registration is bounded twice ([`SubscriberLimits`]): per mailbox
//! (checked under that mailbox's stripe lock, so it is exact) and in total (one
//! atomic counter, compare-and-swap, no lock). A dropped [`Subscriber`]
//! unregisters itself at once, so a client that reconnects over and over to a
//! quiet mailbox leaves nothing behind and frees its place under both limits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::types::{Event, MailboxId, SubscriptionEnd};

/// Lock stripes. A power of two well above the core count keeps two
/// publishers from meeting on one stripe unless they share a mailbox.
pub const HUB_SHARDS: usize = 64;

const END_NONE: u8 = 0;
const END_LAGGED: u8 = 1;
const END_GONE: u8 = 2;
const END_CLOSED: u8 = 3;

/// One stripe: the subscribers of the mailboxes that hash to it.
type Stripe = Mutex<HashMap<MailboxId, Vec<Slot>>>;

/// Events travel as `Arc`s: one allocation per publish however many
/// subscribers, and an 8-byte queue slot each (tokio allocates a queue's slots
/// in blocks of 32, so this keeps an idle subscriber small).
type Shared = Arc<Event>;

struct Slot {
    id: u64,
    tx: mpsc::Sender<Shared>,
    end: Arc<AtomicU8>,
}

/// How many subscribers a hub accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriberLimits {
    /// Live subscribers of one mailbox.
    pub per_mailbox: usize,
    /// Live subscribers in the whole process.
    pub total: usize,
}

impl SubscriberLimits {
    /// No limit (the engine's own [`crate::Engine::subscribe`]).
    pub const UNLIMITED: Self = Self {
        per_mailbox: usize::MAX,
        total: usize::MAX,
    };
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// No live mailbox with that id.
    #[error("no such mailbox")]
    NotFound,
    /// The mailbox has [`SubscriberLimits::per_mailbox`] subscribers already; retry later.
    #[error("the mailbox has {limit} subscribers already")]
    MailboxFull {
        /// The limit.
        limit: usize,
    },
    /// The process has [`SubscriberLimits::total`] subscribers already; retry later.
    #[error("the server has {limit} subscribers already")]
    HubFull {
        /// The limit.
        limit: usize,
    },
    /// The engine is shutting down.
    #[error("engine closed")]
    Closed,
}

struct Registry {
    stripes: Box<[Stripe]>,
    live: AtomicUsize,
}

impl Registry {
    fn stripe(&self, mailbox: MailboxId) -> &Stripe {
        // Mailbox ids are sequential, so the low bits spread them evenly.
        let i = (mailbox.0 as usize) % HUB_SHARDS;
        &self.stripes[i]
    }

    /// Forget `n` registrations (after removing their slots under a lock).
    fn forget(&self, n: usize) {
        if n > 0 {
            self.live.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

/// The subscriber registry and publisher.
pub struct Hub {
    registry: Arc<Registry>,
    capacity: usize,
    next_id: AtomicU64,
    closed: AtomicBool,
    published: AtomicU64,
    lagged: AtomicU64,
}

/// A live subscription to one mailbox's events. Dropping it unregisters it.
pub struct Subscriber {
    rx: mpsc::Receiver<Shared>,
    end: Arc<AtomicU8>,
    registry: Arc<Registry>,
    mailbox: MailboxId,
    id: u64,
}

impl Subscriber {
    /// The next event, or why the subscription ended. After
    /// [`SubscriptionEnd::Lagged`] the caller resumes from the last sequence it
    /// saw by replaying the index.
    pub async fn recv(&mut self) -> Result<Event, SubscriptionEnd> {
        self.recv_shared().await.map(Arc::unwrap_or_clone)
    }

    /// [`Subscriber::recv`] without copying the event out of its shared allocation.
    pub async fn recv_shared(&mut self) -> Result<Arc<Event>, SubscriptionEnd> {
        match self.rx.recv().await {
            Some(ev) => Ok(ev),
            None => Err(end_reason(&self.end)),
        }
    }

    /// Non-blocking [`Subscriber::recv`]: `Ok(None)` when nothing is queued.
    pub fn try_recv(&mut self) -> Result<Option<Event>, SubscriptionEnd> {
        match self.rx.try_recv() {
            Ok(ev) => Ok(Some(Arc::unwrap_or_clone(ev))),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(end_reason(&self.end)),
        }
    }

    /// The mailbox this subscription watches.
    pub fn mailbox(&self) -> MailboxId {
        self.mailbox
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        // The slot may be gone already (lagged, mailbox closed, hub closed);
        // whoever removed it also un-counted it.
        let mut stripe = self.registry.stripe(self.mailbox).lock();
        let Some(slots) = stripe.get_mut(&self.mailbox) else {
            return;
        };
        let before = slots.len();
        slots.retain(|s| s.id != self.id);
        let removed = before - slots.len();
        if slots.is_empty() {
            stripe.remove(&self.mailbox);
        }
        drop(stripe);
        self.registry.forget(removed);
    }
}

fn end_reason(end: &AtomicU8) -> SubscriptionEnd {
    match end.load(Ordering::Acquire) {
        END_LAGGED => SubscriptionEnd::Lagged,
        END_GONE => SubscriptionEnd::MailboxGone,
        _ => SubscriptionEnd::Closed,
    }
}

impl Hub {
    /// A hub whose subscribers may fall at most `capacity` events behind.
    pub fn new(capacity: usize) -> Self {
        Self {
            registry: Arc::new(Registry {
                stripes: (0..HUB_SHARDS)
                    .map(|_| Mutex::new(HashMap::new()))
                    .collect(),
                live: AtomicUsize::new(0),
            }),
            capacity: capacity.max(1),
            next_id: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            published: AtomicU64::new(0),
            lagged: AtomicU64::new(0),
        }
    }

    /// Register a subscriber for `mailbox` without limits; it sees events
    /// published after this call. After [`Hub::close_all`] the subscription
    /// is born ended ([`SubscriptionEnd::Closed`]).
    pub fn subscribe(&self, mailbox: MailboxId) -> Subscriber {
        match self.try_subscribe(mailbox, SubscriberLimits::UNLIMITED) {
            Ok(s) => s,
            // Only `Closed` is possible without limits.
            Err(_) => self.ended(mailbox),
        }
    }

    fn ended(&self, mailbox: MailboxId) -> Subscriber {
        let (_, rx) = mpsc::channel(1);
        Subscriber {
            rx,
            end: Arc::new(AtomicU8::new(END_CLOSED)),
            registry: Arc::clone(&self.registry),
            mailbox,
            id: u64::MAX,
        }
    }

    /// Register a subscriber for `mailbox` within `limits`; it sees events
    /// published after this call.
    pub fn try_subscribe(
        &self,
        mailbox: MailboxId,
        limits: SubscriberLimits,
    ) -> Result<Subscriber, SubscribeError> {
        let reg = &self.registry;
        let mut stripe = reg.stripe(mailbox).lock();
        // Checked under the stripe lock: `close_all` sets the flag before it
        // takes the stripe locks, so no registration slips in after it.
        if self.closed.load(Ordering::Acquire) {
            return Err(SubscribeError::Closed);
        }
        let here = stripe.get(&mailbox).map_or(0, Vec::len);
        if here >= limits.per_mailbox {
            return Err(SubscribeError::MailboxFull {
                limit: limits.per_mailbox,
            });
        }
        reg.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limits.total).then_some(n + 1)
            })
            .map_err(|_| SubscribeError::HubFull {
                limit: limits.total,
            })?;
        let (tx, rx) = mpsc::channel(self.capacity);
        let end = Arc::new(AtomicU8::new(END_NONE));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        stripe.entry(mailbox).or_default().push(Slot {
            id,
            tx,
            end: Arc::clone(&end),
        });
        drop(stripe);
        Ok(Subscriber {
            rx,
            end,
            registry: Arc::clone(reg),
            mailbox,
            id,
        })
    }

    /// Hand `event` to every subscriber of its mailbox. Call only after the
    /// message is durable and visible in the index, and per mailbox in
    /// sequence order.
    pub fn publish(&self, event: &Event) {
        let mailbox = event.id.mailbox;
        let reg = &self.registry;
        let mut stripe = reg.stripe(mailbox).lock();
        self.published.fetch_add(1, Ordering::Relaxed);
        let Some(slots) = stripe.get_mut(&mailbox) else {
            return;
        };
        let before = slots.len();
        let mut lagged = 0u64;
        let shared = Arc::new(event.clone());
        slots.retain(|slot| match slot.tx.try_send(Arc::clone(&shared)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                slot.end.store(END_LAGGED, Ordering::Release);
                lagged += 1;
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        let removed = before - slots.len();
        if slots.is_empty() {
            stripe.remove(&mailbox);
        }
        drop(stripe);
        reg.forget(removed);
        if lagged > 0 {
            self.lagged.fetch_add(lagged, Ordering::Relaxed);
            metrics::counter!(uncorreo_metric_names::SUBSCRIBERS_LAGGED_TOTAL).increment(lagged);
        }
    }

    /// End every subscription of `mailbox` (deleted or expired).
    pub fn close_mailbox(&self, mailbox: MailboxId) {
        let slots = self.registry.stripe(mailbox).lock().remove(&mailbox);
        if let Some(slots) = slots {
            self.registry.forget(slots.len());
            for slot in slots {
                // Stored before the sender drops, so the receiver reads the
                // reason after it sees the channel closed.
                slot.end.store(END_GONE, Ordering::Release);
            }
        }
    }

    /// End every subscription (engine shutdown); later subscriptions are refused.
    pub fn close_all(&self) {
        self.closed.store(true, Ordering::Release);
        for stripe in self.registry.stripes.iter() {
            let drained: Vec<_> = stripe.lock().drain().collect();
            for (_, slots) in drained {
                self.registry.forget(slots.len());
                for slot in slots {
                    slot.end.store(END_CLOSED, Ordering::Release);
                }
            }
        }
    }

    /// Subscribers registered now.
    pub fn subscriber_count(&self) -> u64 {
        self.registry.live.load(Ordering::Acquire) as u64
    }

    /// Events published since start.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Subscribers cut off for lagging since start.
    pub fn lagged(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Address, MessageId, MessageSummary};

    fn ev(mailbox: u64, seq: u64) -> Event {
        Event {
            address: Address::parse("a@uncorreo.test").unwrap(),
            id: MessageId {
                mailbox: MailboxId(mailbox),
                seq,
            },
            received_at_ms: 0,
            size: 1,
            plus_tag: None,
            plus_tags: Vec::new(),
            summary: MessageSummary::default(),
        }
    }

    #[test]
    fn subscriber_gets_its_mailbox_events_in_order_and_no_others() {
        let hub = Hub::new(16);
        let mut a = hub.subscribe(MailboxId(1));
        let mut b = hub.subscribe(MailboxId(2));
        for seq in 1..=3 {
            hub.publish(&ev(1, seq));
        }
        hub.publish(&ev(2, 1));
        let seqs: Vec<u64> = std::iter::from_fn(|| a.try_recv().unwrap())
            .map(|e| e.id.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(b.try_recv().unwrap().map(|e| e.id.seq), Some(1));
        assert_eq!(b.try_recv().unwrap(), None);
    }

    #[test]
    fn slow_subscriber_is_cut_off_as_lagged_after_its_queue_fills() {
        let hub = Hub::new(2);
        let mut slow = hub.subscribe(MailboxId(7));
        for seq in 1..=3 {
            hub.publish(&ev(7, seq));
        }
        assert_eq!(slow.try_recv().unwrap().map(|e| e.id.seq), Some(1));
        assert_eq!(slow.try_recv().unwrap().map(|e| e.id.seq), Some(2));
        assert_eq!(slow.try_recv(), Err(SubscriptionEnd::Lagged));
        assert_eq!(hub.lagged(), 1);
        assert_eq!(hub.subscriber_count(), 0);
    }

    #[test]
    fn closing_a_mailbox_ends_its_subscriptions_as_gone() {
        let hub = Hub::new(4);
        let mut s = hub.subscribe(MailboxId(3));
        hub.close_mailbox(MailboxId(3));
        assert_eq!(s.try_recv(), Err(SubscriptionEnd::MailboxGone));
        assert_eq!(hub.subscriber_count(), 0);
    }

    #[test]
    fn dropped_subscribers_unregister_at_once() {
        let hub = Hub::new(4);
        let s = hub.subscribe(MailboxId(5));
        let t = hub.subscribe(MailboxId(5 + HUB_SHARDS as u64));
        assert_eq!(hub.subscriber_count(), 2);
        drop(s);
        assert_eq!(hub.subscriber_count(), 1);
        drop(t);
        assert_eq!(hub.subscriber_count(), 0);
        assert!(hub.registry.stripes.iter().all(|s| s.lock().is_empty()));
    }

    #[test]
    fn per_mailbox_limit_refuses_exactly_past_the_limit_and_frees_on_drop() {
        let hub = Hub::new(4);
        let limits = SubscriberLimits {
            per_mailbox: 2,
            total: 100,
        };
        let a = hub.try_subscribe(MailboxId(1), limits).unwrap();
        let _b = hub.try_subscribe(MailboxId(1), limits).unwrap();
        assert_eq!(
            hub.try_subscribe(MailboxId(1), limits).err(),
            Some(SubscribeError::MailboxFull { limit: 2 })
        );
        // Another mailbox is not affected.
        let _c = hub.try_subscribe(MailboxId(2), limits).unwrap();
        drop(a);
        assert!(hub.try_subscribe(MailboxId(1), limits).is_ok());
    }

    #[test]
    fn total_limit_refuses_exactly_past_the_limit_and_frees_on_lag() {
        let hub = Hub::new(1);
        let limits = SubscriberLimits {
            per_mailbox: 100,
            total: 2,
        };
        let _a = hub.try_subscribe(MailboxId(1), limits).unwrap();
        let _b = hub.try_subscribe(MailboxId(2), limits).unwrap();
        assert_eq!(
            hub.try_subscribe(MailboxId(3), limits).err(),
            Some(SubscribeError::HubFull { limit: 2 })
        );
        // Overflowing `_a`'s queue of one cuts it off and frees its place.
        hub.publish(&ev(1, 1));
        hub.publish(&ev(1, 2));
        assert_eq!(hub.subscriber_count(), 1);
        assert!(hub.try_subscribe(MailboxId(3), limits).is_ok());
    }

    #[test]
    fn after_close_all_subscriptions_are_refused_or_born_closed() {
        let hub = Hub::new(4);
        let mut live = hub.subscribe(MailboxId(1));
        hub.close_all();
        assert_eq!(live.try_recv(), Err(SubscriptionEnd::Closed));
        assert_eq!(
            hub.try_subscribe(MailboxId(1), SubscriberLimits::UNLIMITED)
                .err(),
            Some(SubscribeError::Closed)
        );
        let mut late = hub.subscribe(MailboxId(1));
        assert_eq!(late.try_recv(), Err(SubscriptionEnd::Closed));
        drop(late);
        assert_eq!(hub.subscriber_count(), 0);
    }

    /// Real-thread interleavings (not loom: the hub is built on parking_lot
    /// and tokio's mpsc, which loom cannot model without replacing both).
    /// Publishers, subscribers that resume the documented way (subscribe,
    /// replay the "index" past the last seen sequence, then skip live events
    /// already replayed; resubscribe after `Lagged`), droppers and a mailbox
    /// closer run at once on OS threads; every schedule must give each
    /// resuming reader every sequence exactly once, in order, and leave the
    /// registry empty.
    mod interleavings {
        use super::*;
        use proptest::prelude::*;
        use std::sync::atomic::AtomicBool;
        use std::thread;

        /// One reader's plan.
        #[derive(Debug, Clone)]
        struct Reader {
            mailbox: usize,
            /// Yields between reads (a slow reader lags on a small queue).
            slowness: u8,
            /// Drop and resubscribe after this many events (0 = never).
            reconnect_every: u8,
        }

        fn reader() -> impl Strategy<Value = Reader> {
            (0usize..3, 0u8..4, 0u8..20).prop_map(|(mailbox, slowness, reconnect_every)| Reader {
                mailbox,
                slowness,
                reconnect_every,
            })
        }

        /// Mailbox ids 1 and 1+HUB_SHARDS share a stripe on purpose.
        const MAILBOXES: [u64; 3] = [1, 1 + HUB_SHARDS as u64, 2];

        proptest! {
            #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
            #[test]
            fn resuming_readers_see_every_sequence_exactly_once(
                capacity in 1usize..6,
                per_mailbox in 1u64..150,
                readers in proptest::collection::vec(reader(), 1..6),
                closed_box in proptest::option::of(0usize..3),
            ) {
                let hub = Arc::new(Hub::new(capacity));
                // The index: committed sequences per mailbox, updated before publish.
                let index: Arc<Vec<AtomicU64>> =
                    Arc::new((0..3).map(|_| AtomicU64::new(0)).collect());
                let done: Arc<Vec<AtomicBool>> =
                    Arc::new((0..3).map(|_| AtomicBool::new(false)).collect());
                let mut publishers = Vec::new();
                for (i, &mb) in MAILBOXES.iter().enumerate() {
                    let (hub, index, done) = (hub.clone(), index.clone(), done.clone());
                    let closes = closed_box == Some(i);
                    publishers.push(thread::spawn(move || {
                        for seq in 1..=per_mailbox {
                            index[i].store(seq, Ordering::Release);
                            hub.publish(&ev(mb, seq));
                            if seq % 7 == 0 {
                                thread::yield_now();
                            }
                        }
                        done[i].store(true, Ordering::Release);
                        if closes {
                            hub.close_mailbox(MailboxId(mb));
                        }
                    }));
                }
                let mut handles = Vec::new();
                for r in readers.clone() {
                    let (hub, index, done) = (hub.clone(), index.clone(), done.clone());
                    handles.push(thread::spawn(move || {
                        let mb = MailboxId(MAILBOXES[r.mailbox]);
                        let mut seen = Vec::new();
                        let mut last = 0u64;
                        'session: loop {
                            let mut sub = hub.subscribe(mb);
                            // Replay past `last` from the index.
                            let committed = index[r.mailbox].load(Ordering::Acquire);
                            for seq in last + 1..=committed {
                                seen.push(seq);
                            }
                            last = last.max(committed);
                            let mut in_session = 0u8;
                            loop {
                                for _ in 0..r.slowness {
                                    thread::yield_now();
                                }
                                match sub.try_recv() {
                                    Ok(Some(e)) => {
                                        if e.id.seq <= last {
                                            continue;
                                        }
                                        assert_eq!(e.id.seq, last + 1, "gap in live events");
                                        seen.push(e.id.seq);
                                        last = e.id.seq;
                                        in_session += 1;
                                        if r.reconnect_every > 0 && in_session >= r.reconnect_every {
                                            continue 'session;
                                        }
                                    }
                                    Ok(None) => {
                                        if done[r.mailbox].load(Ordering::Acquire)
                                            && last == per_mailbox
                                        {
                                            break 'session;
                                        }
                                        thread::yield_now();
                                    }
                                    Err(SubscriptionEnd::Lagged) => continue 'session,
                                    Err(SubscriptionEnd::MailboxGone) => {
                                        assert_eq!(closed_box, Some(r.mailbox));
                                        // Closed only after the last publish: replay finishes it.
                                        let committed = index[r.mailbox].load(Ordering::Acquire);
                                        for seq in last + 1..=committed {
                                            seen.push(seq);
                                        }
                                        break 'session;
                                    }
                                    Err(e) => panic!("unexpected end {e:?}"),
                                }
                            }
                        }
                        seen
                    }));
                }
                for p in publishers {
                    p.join().unwrap();
                }
                for (h, r) in handles.into_iter().zip(&readers) {
                    let seen = h.join().unwrap();
                    let want: Vec<u64> = (1..=per_mailbox).collect();
                    prop_assert_eq!(&seen, &want, "reader {:?}", r);
                }
                prop_assert_eq!(hub.subscriber_count(), 0);
                prop_assert!(hub.registry.stripes.iter().all(|s| s.lock().is_empty()));
            }
        }
    }
}
