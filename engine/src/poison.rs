//! The poison guard of the engine's own threads (fjall's `poison_dart.rs` is
//! the model). A writer or the compaction owner that panics would otherwise
//! just vanish: its channel disconnects, callers get `Closed`, and readiness
//! keeps saying 200. The guard lives on the thread's stack; when it is
//! dropped while the thread unwinds, it marks that part of the engine failed,
//! so `/ready` answers 503 and SMTP 451 until a restart recovers from the log.

use std::sync::Arc;

use crate::ids::ShardIndex;
use crate::state::Shared;

/// Which thread a [`PoisonDart`] guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guarded {
    /// A shard's writer: only that shard fails.
    Writer(ShardIndex),
    /// The compaction owner: expiry stops, so the whole engine fails.
    Compaction,
}

pub(crate) struct PoisonDart {
    shared: Arc<Shared>,
    guarded: Guarded,
    /// Dropped only after the failure is marked: whoever waits on it (the
    /// test hook that injects a panic) sees the engine failed once it wakes.
    notify: Option<crossbeam_channel::Sender<()>>,
}

impl PoisonDart {
    pub(crate) fn new(shared: Arc<Shared>, guarded: Guarded) -> Self {
        Self {
            shared,
            guarded,
            notify: None,
        }
    }

    /// Hold `notify` until this guard is dropped.
    pub(crate) fn notify_on_drop(&mut self, notify: crossbeam_channel::Sender<()>) {
        self.notify = Some(notify);
    }
}

impl Drop for PoisonDart {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let first = match self.guarded {
                Guarded::Writer(shard) => self.shared.health.fail_shard(shard),
                Guarded::Compaction => self.shared.health.fail_compaction(),
            };
            if first {
                tracing::error!(thread = ?self.guarded, "engine thread panicked; marked failed until restart");
            }
        }
        drop(self.notify.take());
    }
}
