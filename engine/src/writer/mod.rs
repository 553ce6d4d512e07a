//! A shard's writer thread: the only code that appends to the shard's
//! segments and the only code that changes the shard's index.
//!
//! Group commit: the writer blocks for one command, then drains whatever else
//! is queued (up to `batch_max_bytes`), encodes every record of the batch into
//! one buffer, `pwrite`s it once and `fdatasync`s once. Only then does it make
//! the records visible (committed length, index), acknowledge each append and
//! publish events. Checks that depend on the committed state (quota, expiry,
//! uniqueness) and the assignment of ids and sequence numbers happen here, in
//! order, so one writer orders everything of a mailbox.

mod append;
mod apply;
mod batch;
mod campaign;
pub(crate) use campaign::mark_campaign_dead;
mod rewrite;
mod stage;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::cmd::Cmd;
use crate::codec::HintEntry;
use crate::error::{BatchFailure, StorageError};
use crate::files::DataFile;
use crate::ids::{SegmentNo, ShardIndex};
use crate::poison::PoisonDart;
use crate::segment::Segment;
use crate::state::Shared;
use crate::types::Durability;

pub(crate) use append::create_segment;
pub(crate) use apply::{mark_mailbox_dead, quarantine};
use batch::Batch;

/// One shard's writer: its command queue, its active segment and where the
/// next batch goes in it, and the shard's id and segment counters.
pub(crate) struct Writer {
    /// First field, so it is dropped first when the thread unwinds.
    pub(crate) dart: PoisonDart,
    pub(crate) shard: ShardIndex,
    pub(crate) shared: Arc<Shared>,
    pub(crate) rx: Receiver<Cmd>,
    pub(crate) file: DataFile,
    pub(crate) active: Arc<Segment>,
    pub(crate) write_off: u64,
    pub(crate) cap: u64,
    /// Offset in the active segment up to which its bytes are already
    /// counted against free space (`written_since_probe`): the whole
    /// reservation of a segment this writer preallocated, so batches written
    /// into it are not counted a second time.
    pub(crate) counted_to: u64,
    /// Hint entries of the active segment (absolute offsets).
    pub(crate) hints: Vec<HintEntry>,
    /// Next value of the shard's id counter (id = counter * shards + shard).
    pub(crate) counter: u64,
    pub(crate) next_seg: SegmentNo,
    /// Records in the last two committed batches (newest first).
    pub(crate) recent: [u32; 2],
    /// Duration of the last fdatasync.
    pub(crate) last_sync: Duration,
    /// Keyed deliveries done everywhere whose `DeliveryDone` record waits
    /// for the next batch (`retry.rs`), oldest first.
    pub(crate) forgotten: std::collections::VecDeque<(crate::retry::DeliveryKey, u64)>,
}

/// Longest a writer holds a gathered batch back waiting for more appends.
pub(crate) const MAX_COMMIT_DELAY: Duration = Duration::from_micros(250);

impl Writer {
    fn n(&self) -> u64 {
        self.shared.n() as u64
    }

    pub(crate) fn alloc_id(&mut self) -> u64 {
        let id = self.counter * self.n() + self.shard.0 as u64;
        self.counter += 1;
        id
    }

    /// The thread body.
    pub(crate) fn run(mut self) {
        let max = self.shared.config.batch_max_bytes.max(1);
        let mut batch = Batch::default();
        loop {
            let Ok(cmd) = self.rx.recv() else {
                // Every sender is gone: the engine was dropped without shutdown.
                self.stage_forgotten(&mut batch);
                let _answered = self.commit(&mut batch);
                self.seal();
                return;
            };
            if let Some(exit) = self.handle(cmd, &mut batch) {
                if exit {
                    return;
                }
            }
            while batch.buf.len() < max {
                let Ok(cmd) = self.rx.try_recv() else { break };
                if let Some(exit) = self.handle(cmd, &mut batch) {
                    if exit {
                        return;
                    }
                }
            }
            // Closed-loop appenders acknowledged by the previous batch are
            // about to come back; without a short wait for them, batches
            // settle into two alternating halves and each appender waits for
            // two syncs. Wait (bounded by half a sync, at most
            // MAX_COMMIT_DELAY) only while recent batches were larger.
            let target = self.recent[0] + self.recent[1];
            if self.shared.config.durability == Durability::Always && self.recent[0] >= 2 {
                let deadline = Instant::now() + (self.last_sync / 2).min(MAX_COMMIT_DELAY);
                while batch.records > 0 && batch.records < target && batch.buf.len() < max {
                    let Ok(cmd) = self.rx.recv_deadline(deadline) else {
                        break;
                    };
                    if let Some(exit) = self.handle(cmd, &mut batch) {
                        if exit {
                            return;
                        }
                    }
                }
            }
            let _answered = self.commit(&mut batch);
        }
    }

    /// Remember that the keyed delivery tried at `at` is done, for the
    /// next batch. Bounded like the parts themselves: past the bound the
    /// oldest note is dropped (then, after a restart, a resend of that
    /// delivery within the window is answered as the first copy).
    fn note_forgotten(&mut self, key: crate::retry::DeliveryKey, at: u64) {
        if self.forgotten.len() >= crate::retry::MAX_PARTS_PER_SHARD {
            self.forgotten.pop_front();
        }
        self.forgotten.push_back((key, at));
    }

    /// Add the waiting `DeliveryDone` records to `batch`.
    fn stage_forgotten(&mut self, batch: &mut Batch) {
        for (key, at_ms) in self.forgotten.drain(..) {
            batch.frame(&crate::codec::Record::DeliveryDone { key, at_ms }, 0, 0);
        }
    }

    /// Stage `cmd` into `batch`, or run a control command. `Some(true)` = exit.
    fn handle(&mut self, cmd: Cmd, batch: &mut Batch) -> Option<bool> {
        if let Cmd::PanicForTests { notify } = cmd {
            self.dart.notify_on_drop(notify);
            panic!("writer of shard {} panics on request of a test", self.shard);
        }
        if self.shared.shard_failed(self.shard) {
            match cmd {
                Cmd::Shutdown { reply } => {
                    let _answered = self.commit(batch);
                    let _ = reply.send(());
                    return Some(true);
                }
                Cmd::RewriteBegin { reply, .. } => {
                    let _ = reply.send(Err(StorageError::Poisoned));
                    return None;
                }
                Cmd::RewriteSwap { reply, .. } => {
                    let _ = reply.send(Err(StorageError::Poisoned));
                    return None;
                }
                other => {
                    other.fail(BatchFailure::Poisoned);
                    return None;
                }
            }
        }
        match cmd {
            Cmd::Shutdown { reply } => {
                self.stage_forgotten(batch);
                let _answered = self.commit(batch);
                self.seal();
                let _ = reply.send(());
                Some(true)
            }
            Cmd::RewriteBegin { seg, reply } => {
                let _ = reply.send(Ok(self.begin_rewrite(seg)));
                None
            }
            Cmd::RewriteSwap { output, reply } => {
                // Whatever is staged goes first, so the swap sees every
                // deletion asked before it.
                let _answered = self.commit(batch);
                let r = self.finish_rewrite(*output);
                let _ = reply.send(r);
                None
            }
            other => {
                self.stage(other, batch);
                None
            }
        }
    }
}
