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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
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

struct Slot {
    tx: mpsc::Sender<Event>,
    end: Arc<AtomicU8>,
}

/// The subscriber registry and publisher.
pub struct Hub {
    stripes: Box<[Stripe]>,
    capacity: usize,
    published: AtomicU64,
    lagged: AtomicU64,
}

/// A live subscription to one mailbox's events.
pub struct Subscriber {
    rx: mpsc::Receiver<Event>,
    end: Arc<AtomicU8>,
}

impl Subscriber {
    /// The next event, or why the subscription ended. After
    /// [`SubscriptionEnd::Lagged`] the caller resumes from the last sequence it
    /// saw by replaying the index.
    pub async fn recv(&mut self) -> Result<Event, SubscriptionEnd> {
        match self.rx.recv().await {
            Some(ev) => Ok(ev),
            None => Err(end_reason(&self.end)),
        }
    }

    /// Non-blocking [`Subscriber::recv`]: `Ok(None)` when nothing is queued.
    pub fn try_recv(&mut self) -> Result<Option<Event>, SubscriptionEnd> {
        match self.rx.try_recv() {
            Ok(ev) => Ok(Some(ev)),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(end_reason(&self.end)),
        }
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
            stripes: (0..HUB_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            capacity: capacity.max(1),
            published: AtomicU64::new(0),
            lagged: AtomicU64::new(0),
        }
    }

    fn stripe(&self, mailbox: MailboxId) -> &Stripe {
        // Mailbox ids are sequential, so the low bits spread them evenly.
        let i = (mailbox.0 as usize) % HUB_SHARDS;
        &self.stripes[i]
    }

    /// Register a subscriber for `mailbox`; it sees events published after this call.
    pub fn subscribe(&self, mailbox: MailboxId) -> Subscriber {
        let (tx, rx) = mpsc::channel(self.capacity);
        let end = Arc::new(AtomicU8::new(END_NONE));
        self.stripe(mailbox)
            .lock()
            .entry(mailbox)
            .or_default()
            .push(Slot {
                tx,
                end: Arc::clone(&end),
            });
        Subscriber { rx, end }
    }

    /// Hand `event` to every subscriber of its mailbox. Call only after the
    /// message is durable and visible in the index.
    pub fn publish(&self, event: &Event) {
        let mailbox = event.id.mailbox;
        let mut stripe = self.stripe(mailbox).lock();
        let Some(slots) = stripe.get_mut(&mailbox) else {
            return;
        };
        slots.retain(|slot| match slot.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                slot.end.store(END_LAGGED, Ordering::Release);
                self.lagged.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if slots.is_empty() {
            stripe.remove(&mailbox);
        }
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    /// End every subscription of `mailbox` (deleted or expired).
    pub fn close_mailbox(&self, mailbox: MailboxId) {
        if let Some(slots) = self.stripe(mailbox).lock().remove(&mailbox) {
            for slot in slots {
                slot.end.store(END_GONE, Ordering::Release);
            }
        }
    }

    /// End every subscription (engine shutdown).
    pub fn close_all(&self) {
        for stripe in self.stripes.iter() {
            for (_, slots) in stripe.lock().drain() {
                for slot in slots {
                    slot.end.store(END_CLOSED, Ordering::Release);
                }
            }
        }
    }

    /// Subscribers registered now (closed receivers are pruned on the next publish).
    pub fn subscriber_count(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.lock().values().map(|v| v.len() as u64).sum::<u64>())
            .sum()
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
    }

    #[test]
    fn dropped_subscribers_are_pruned_on_publish() {
        let hub = Hub::new(4);
        drop(hub.subscribe(MailboxId(5)));
        assert_eq!(hub.subscriber_count(), 1);
        hub.publish(&ev(5, 1));
        assert_eq!(hub.subscriber_count(), 0);
    }
}
