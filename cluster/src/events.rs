//! Events across hosts (SCALE.md, "Real time").
//!
//! The owner of a mailbox announces each committed message on the NATS core
//! subject `uncorreo.ev.<partition>` as a [`Notice`]: the mailbox's address
//! and the message's sequence, never its content; and the end of a mailbox
//! (deleted, expired), so waiters elsewhere end with it. A host with waiters for
//! mailboxes of a partition it does not serve holds ONE subscription to that
//! partition's subject, shared by all its waiters there, and wakes each
//! waiter of the announced mailbox. The waiter then reads everything past
//! the last sequence it sent from the owner, over the hop, so a notice that
//! NATS (at most once) or the owner's bounded queue lost is made up for by
//! the next read: sequence numbers, not NATS, carry invariant 4.
//!
//! Bounds: the owner's publish queue ([`EventsConfig::publish_queue`]; full:
//! the notice is dropped and counted, never a wait on the writer thread);
//! waiters per host and per mailbox ([`EventsConfig::max_watchers`],
//! [`EventsConfig::max_watchers_per_mailbox`]); one subscription per watched
//! partition (so at most the partition count). A waiter holds no queue: its
//! slot keeps the highest sequence announced and a wake-up, so a burst of
//! notices costs a waiter one read, whatever its length.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::partition::{partition_of, Partition, PartitionCount};

/// The subject of a partition's notices.
pub fn subject(partition: Partition) -> String {
    format!("uncorreo.ev.{}", partition.0)
}

/// One committed message, or the end of a mailbox, as announced on NATS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The mailbox's address (canonical: lower case, no tag).
    #[serde(rename = "m")]
    pub mailbox: String,
    /// The message's sequence in its mailbox (0 for an end).
    #[serde(rename = "s")]
    pub seq: u64,
    /// The mailbox was deleted or expired.
    #[serde(rename = "g", default, skip_serializing_if = "std::ops::Not::not")]
    pub gone: bool,
}

/// The bounds of [`Events`].
#[derive(Debug, Clone, Copy)]
pub struct EventsConfig {
    /// Notices waiting to be published; past it they are dropped (counted).
    pub publish_queue: usize,
    /// Waiters on this host for mailboxes other hosts own.
    pub max_watchers: usize,
    /// Of those, for one mailbox.
    pub max_watchers_per_mailbox: usize,
    /// How long a new subscription may take to be confirmed by NATS.
    pub subscribe_timeout: Duration,
}

/// NATS could not be reached for events.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {url} for events: {source}")]
pub struct ConnectError {
    /// The URL tried.
    pub url: String,
    /// Why.
    #[source]
    pub source: async_nats::ConnectError,
}

/// Why a waiter could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// This host has [`EventsConfig::max_watchers`] remote waiters already.
    #[error("this host has {limit} remote waiters already")]
    HostFull {
        /// The limit.
        limit: usize,
    },
    /// The mailbox has [`EventsConfig::max_watchers_per_mailbox`] here already.
    #[error("the mailbox has {limit} remote waiters on this host already")]
    MailboxFull {
        /// The limit.
        limit: usize,
    },
    /// The partition's subscription was not confirmed by NATS in time.
    #[error("NATS did not confirm the subscription")]
    Unavailable,
}

/// Events across hosts for one host: the owner's publisher and the
/// waiters' shared subscriptions.
pub struct Events {
    client: async_nats::Client,
    partitions: PartitionCount,
    config: EventsConfig,
    runtime: tokio::runtime::Handle,
    queue: mpsc::Sender<Notice>,
    drop_next: AtomicBool,
    registry: Arc<Mutex<Registry>>,
    between_hook: Mutex<Option<BetweenHook>>,
}

/// See [`Events::set_between_hook_for_tests`].
pub type BetweenHook = Arc<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The owner's side: drains the publish queue onto NATS. Run it on the
/// runtime [`Events::connect`] ran on.
pub struct Publisher {
    client: async_nats::Client,
    partitions: PartitionCount,
    queue: mpsc::Receiver<Notice>,
}

#[derive(Default)]
struct Registry {
    partitions: HashMap<Partition, Watched>,
    live: usize,
    next_id: u64,
}

/// One partition's subscription and the waiters it wakes.
struct Watched {
    mailboxes: HashMap<String, Vec<(u64, Arc<Slot>)>>,
    ready: watch::Receiver<Ready>,
    /// Dropped with the last waiter: ends the subscription's task.
    _stop: oneshot::Sender<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ready {
    Pending,
    Subscribed,
    Failed,
}

#[derive(Debug, Default)]
struct Slot {
    announced: AtomicU64,
    gone: AtomicBool,
    notify: Notify,
}

/// One waiter's registration: woken when its mailbox's owner announces a
/// sequence. Dropping it unregisters it (and, with the last waiter of its
/// partition, ends the partition's subscription).
pub struct Watch {
    slot: Arc<Slot>,
    id: u64,
    partition: Partition,
    mailbox: String,
    registry: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("mailbox", &self.mailbox)
            .finish_non_exhaustive()
    }
}

impl Events {
    /// Connects to NATS for events. The returned [`Publisher`] must be run
    /// on the current runtime, which also runs the subscriptions' tasks.
    pub async fn connect(
        url: &str,
        partitions: PartitionCount,
        config: EventsConfig,
    ) -> Result<(Arc<Events>, Publisher), ConnectError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(config.subscribe_timeout)
            .connect(url)
            .await
            .map_err(|source| ConnectError {
                url: url.to_owned(),
                source,
            })?;
        let (tx, rx) = mpsc::channel(config.publish_queue.max(1));
        let events = Arc::new(Events {
            client: client.clone(),
            partitions,
            config,
            runtime: tokio::runtime::Handle::current(),
            queue: tx,
            drop_next: AtomicBool::new(false),
            registry: Arc::default(),
            between_hook: Mutex::new(None),
        });
        let publisher = Publisher {
            client,
            partitions,
            queue: rx,
        };
        Ok((events, publisher))
    }

    /// Announces a committed message. Called on the writer thread that
    /// committed it: never waits; a full queue drops the notice (counted),
    /// and the waiters elsewhere fill the gap from the owner.
    pub fn announce(&self, mailbox: String, seq: u64) {
        if self.drop_next.swap(false, Ordering::AcqRel) {
            dropped();
            return;
        }
        self.send(Notice {
            mailbox,
            seq,
            gone: false,
        });
    }

    /// Announces that a mailbox ended (deleted or expired), so waiters
    /// elsewhere end too; like [`Events::announce`], never waits.
    pub fn announce_gone(&self, mailbox: String) {
        self.send(Notice {
            mailbox,
            seq: 0,
            gone: true,
        });
    }

    fn send(&self, notice: Notice) {
        if self.queue.try_send(notice).is_err() {
            dropped();
        }
    }

    /// Tests: the next notice is dropped, as NATS core may drop one.
    pub fn drop_next_notice_for_tests(&self) {
        self.drop_next.store(true, Ordering::Release);
    }

    /// Tests: `hook` runs (blocking) when a remote waiter has subscribed
    /// and has not read from the owner yet, so a test can commit a message
    /// in that window. Not for production use.
    #[doc(hidden)]
    pub fn set_between_hook_for_tests(&self, hook: Option<BetweenHook>) {
        *self.between_hook.lock() = hook;
    }

    /// Runs the hook of [`Events::set_between_hook_for_tests`], if any.
    #[doc(hidden)]
    pub fn between_subscribe_and_read(&self) {
        let hook = self.between_hook.lock().clone();
        if let Some(hook) = hook {
            hook();
        }
    }

    /// Registers a waiter for `mailbox` (canonical address) and returns
    /// once NATS has confirmed the subscription of its partition: every
    /// notice published after this returns reaches the waiter (unless NATS
    /// loses it). Subscribe FIRST, then read from the owner.
    pub async fn watch(&self, mailbox: &str) -> Result<Watch, WatchError> {
        let partition = partition_of(mailbox, self.partitions);
        let (watch, mut ready) = {
            let mut registry = self.registry.lock();
            if registry.live >= self.config.max_watchers {
                return Err(WatchError::HostFull {
                    limit: self.config.max_watchers,
                });
            }
            let here = registry
                .partitions
                .get(&partition)
                .and_then(|w| w.mailboxes.get(mailbox))
                .map_or(0, Vec::len);
            if here >= self.config.max_watchers_per_mailbox {
                return Err(WatchError::MailboxFull {
                    limit: self.config.max_watchers_per_mailbox,
                });
            }
            let id = registry.next_id;
            registry.next_id += 1;
            registry.live += 1;
            let slot = Arc::new(Slot::default());
            let watched = match registry.partitions.entry(partition) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(self.subscribe(partition))
                }
            };
            watched
                .mailboxes
                .entry(mailbox.to_owned())
                .or_default()
                .push((id, Arc::clone(&slot)));
            let ready = watched.ready.clone();
            let watch = Watch {
                slot,
                id,
                partition,
                mailbox: mailbox.to_owned(),
                registry: Arc::clone(&self.registry),
            };
            (watch, ready)
        };
        metrics::gauge!(uncorreo_metric_names::CLUSTER_REMOTE_WAITERS).increment(1.0);
        let confirmed = tokio::time::timeout(
            self.config.subscribe_timeout,
            ready.wait_for(|r| *r != Ready::Pending),
        )
        .await;
        match confirmed {
            Ok(Ok(r)) if *r == Ready::Subscribed => Ok(watch),
            _ => Err(WatchError::Unavailable),
        }
    }

    /// Starts the subscription of `partition` (under the registry lock).
    fn subscribe(&self, partition: Partition) -> Watched {
        let (ready_tx, ready) = watch::channel(Ready::Pending);
        let (stop, stopped) = oneshot::channel::<()>();
        let client = self.client.clone();
        let registry = Arc::clone(&self.registry);
        self.runtime.spawn(async move {
            let subscribed = async {
                let subscriber = client.subscribe(subject(partition)).await.ok()?;
                // The server has the subscription once it answers the
                // flush's ping: from then on no notice is missed.
                client.flush().await.ok()?;
                Some(subscriber)
            };
            let mut stopped = stopped;
            let subscriber = tokio::select! {
                s = subscribed => s,
                _ = &mut stopped => return,
            };
            let Some(mut subscriber) = subscriber else {
                let _ = ready_tx.send(Ready::Failed);
                forget(&registry, partition, &ready_tx);
                return;
            };
            let _ = ready_tx.send(Ready::Subscribed);
            loop {
                let message = tokio::select! {
                    m = subscriber.next() => m,
                    _ = &mut stopped => return,
                };
                let Some(message) = message else { break };
                // Another host's bytes: a notice that does not parse is ignored.
                let Ok(notice) = serde_json::from_slice::<Notice>(&message.payload) else {
                    continue;
                };
                let registry = registry.lock();
                let slots = registry
                    .partitions
                    .get(&partition)
                    .and_then(|w| w.mailboxes.get(&notice.mailbox));
                for (_, slot) in slots.into_iter().flatten() {
                    if notice.gone {
                        slot.gone.store(true, Ordering::Release);
                    } else {
                        slot.announced.fetch_max(notice.seq, Ordering::AcqRel);
                    }
                    slot.notify.notify_one();
                }
            }
            // The client closed for good: later waiters subscribe anew;
            // these keep their periodic read from the owner.
            forget(&registry, partition, &ready_tx);
        });
        Watched {
            mailboxes: HashMap::new(),
            ready,
            _stop: stop,
        }
    }

    /// Waiters registered on this host now.
    pub fn waiters(&self) -> usize {
        self.registry.lock().live
    }

    /// Partitions with a live subscription on this host now.
    pub fn subscriptions(&self) -> usize {
        self.registry.lock().partitions.len()
    }
}

/// Removes `partition`'s entry if it is still the one `ready` belongs to.
fn forget(registry: &Mutex<Registry>, partition: Partition, ready: &watch::Sender<Ready>) {
    let mut registry = registry.lock();
    let same = registry
        .partitions
        .get(&partition)
        .is_some_and(|w| w.ready.same_channel(&ready.subscribe()));
    if same {
        registry.partitions.remove(&partition);
    }
}

fn dropped() {
    metrics::counter!(uncorreo_metric_names::CLUSTER_EVENTS_DROPPED_TOTAL).increment(1);
}

impl Watch {
    /// The highest sequence announced for the mailbox since this waiter
    /// registered (0: none yet).
    pub fn announced(&self) -> u64 {
        self.slot.announced.load(Ordering::Acquire)
    }

    /// Whether the owner announced that the mailbox ended since the last
    /// call (one read from the owner then says whether it did).
    pub fn take_gone(&self) -> bool {
        self.slot.gone.swap(false, Ordering::AcqRel)
    }

    /// Waits for the next announcement (returns at once if one came since
    /// the last call). Cancel-safe: check [`Watch::announced`] first.
    pub async fn changed(&self) {
        self.slot.notify.notified().await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut registry = self.registry.lock();
        registry.live = registry.live.saturating_sub(1);
        if let Some(watched) = registry.partitions.get_mut(&self.partition) {
            if let Some(slots) = watched.mailboxes.get_mut(&self.mailbox) {
                slots.retain(|(id, _)| *id != self.id);
                if slots.is_empty() {
                    watched.mailboxes.remove(&self.mailbox);
                }
            }
            if watched.mailboxes.is_empty() {
                // Dropping it drops its stop sender: the task unsubscribes.
                registry.partitions.remove(&self.partition);
            }
        }
        drop(registry);
        metrics::gauge!(uncorreo_metric_names::CLUSTER_REMOTE_WAITERS).decrement(1.0);
    }
}

impl Publisher {
    /// Publishes queued notices until the queue's sender is gone.
    pub async fn run(mut self) {
        while let Some(notice) = self.queue.recv().await {
            let partition = partition_of(&notice.mailbox, self.partitions);
            let Ok(payload) = serde_json::to_vec(&notice) else {
                dropped();
                continue;
            };
            match self
                .client
                .publish(subject(partition), payload.into())
                .await
            {
                Ok(()) => metrics::counter!(uncorreo_metric_names::CLUSTER_EVENTS_PUBLISHED_TOTAL)
                    .increment(1),
                Err(_) => dropped(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_small_and_reads_back() {
        let notice = Notice {
            mailbox: "box@example.test".to_owned(),
            seq: 7,
            gone: false,
        };
        let bytes = serde_json::to_vec(&notice).expect("serialises");
        assert_eq!(bytes, br#"{"m":"box@example.test","s":7}"#);
        assert_eq!(
            serde_json::from_slice::<Notice>(&bytes).expect("parses"),
            notice
        );
        assert_eq!(subject(Partition(12)), "uncorreo.ev.12");
        let gone = serde_json::from_slice::<Notice>(br#"{"m":"box@example.test","s":0,"g":true}"#)
            .expect("parses");
        assert!(gone.gone);
    }
}
