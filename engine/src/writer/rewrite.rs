//! Compaction's swap, on the owning writer's thread: a rewrite that the
//! compaction thread copied and made durable (`compaction::rewrite`) is put
//! in place of its segment. Nothing of the shard interleaves with this step;
//! the copy before it took no lock but brief read locks, so whatever the
//! index changed meanwhile is settled here.

use std::sync::Arc;

use super::batch::Batch;
use super::Writer;
use crate::codec::Record;
use crate::compaction::{self, Move, Moved, RewriteOutcome, RewriteOutput};
use crate::error::StorageError;
use crate::files;
use crate::ids::SegmentNo;
use crate::segment::{self, Segment};
use crate::state::MailboxIndex;
use crate::sys::Map;

/// Refs moved per hold of the index write lock.
const SWAP_STEP: usize = 1024;

impl Writer {
    /// A number for the rewrite of sealed segment `seg_no`, and the id
    /// counter for its header; `None` if it is not a sealed segment.
    pub(super) fn begin_rewrite(&mut self, seg_no: SegmentNo) -> Option<(SegmentNo, u64)> {
        self.sealed_segment(seg_no)?;
        let new_no = self.next_seg;
        self.next_seg = new_no.next();
        Some((new_no, self.counter))
    }

    /// Put `out` in place of its segment: tombstones for what died since
    /// the copy (durable first), the rename, the refs moved, the old
    /// segment unlinked.
    ///
    /// A record copied while live may have been deleted before this runs.
    /// Its tombstone names the old segment, so once that is gone the
    /// tombstone counts as dead and a later pass could drop it, bringing the
    /// copy back at the next open. So each such copy gets a tombstone naming
    /// the new segment, made durable before the rename puts the copy in
    /// place. (A crash in between leaves tombstones naming a segment that
    /// never appeared: dead weight for a later pass, nothing more.)
    pub(super) fn finish_rewrite(
        &mut self,
        out: RewriteOutput,
    ) -> Result<RewriteOutcome, StorageError> {
        let shared = Arc::clone(&self.shared);
        let io = shared.io.as_ref();
        let old_no = out.old.no;
        let mut died = Batch::default();
        let mut dead_bytes = 0u64;
        {
            let idx = shared.shard(self.shard).index.read();
            for m in &out.moves {
                if let Some(tombstone) = died_since_copy(&idx, m, old_no, out.new_no) {
                    dead_bytes += u64::from(m.len);
                    if let Some(record) = tombstone {
                        died.frame(&record, 0, 0);
                    }
                }
            }
        }
        if let Err(failure) = self.commit(&mut died) {
            let _ = files::remove_if_there(io, &segment::tmp_path(&out.path));
            return Err(failure.into());
        }
        if let Err(e) = files::rename_rewrite(io, &out.path) {
            let _ = files::remove_if_there(io, &segment::tmp_path(&out.path));
            return Err(e.into());
        }
        if let Err(e) = io.sync_dir(&shared.dir) {
            // The output is in place whether or not its rename survives a
            // crash: a retry would put a second one beside it.
            let what = "making a compaction output's rename durable";
            return Err(compaction::stop_shard(&shared, self.shard, what, &e));
        }
        let map = Map::new(out.file.file(), out.data_len as usize)?;
        let new = Arc::new(Segment::new(
            out.new_no,
            out.path.clone(),
            map,
            out.data_len,
            true,
        ));
        new.add_dead(dead_bytes);
        let shard = shared.shard(self.shard);
        shard.segs.write().insert(new.no, Arc::clone(&new));
        for step in out.moves.chunks(SWAP_STEP) {
            let mut idx = shard.index.write();
            for m in step {
                move_ref(&mut idx, m, old_no, out.new_no);
            }
        }
        if !out.corrupt.is_empty() {
            let mut idx = shard.index.write();
            for &(mailbox, seq, off) in &out.corrupt {
                let here = idx
                    .mailboxes
                    .get(mailbox)
                    .and_then(|mb| mb.find(seq).and_then(|i| mb.msgs.get(i)))
                    .is_some_and(|r| r.seg == old_no && r.off == off);
                if here {
                    idx.remove_message(mailbox, seq);
                }
            }
        }
        let old_bytes = segment::file_bytes(&out.old.path);
        shard.segs.write().remove(&old_no);
        if let Err(e) = files::remove_segment(io, &shared.dir, &out.old.path) {
            let what = "unlinking a rewritten segment";
            return Err(compaction::stop_shard(&shared, self.shard, what, &e));
        }
        Ok(RewriteOutcome::Rewritten(
            old_bytes.saturating_sub(new.committed() as u64),
        ))
    }

    /// The segment `seg_no` if it is sealed (never the active one).
    fn sealed_segment(&self, seg_no: SegmentNo) -> Option<Arc<Segment>> {
        let segs = self.shared.shard(self.shard).segs.read();
        segs.get(&seg_no)
            .filter(|s| {
                s.sealed.load(std::sync::atomic::Ordering::Acquire) && s.no != self.active.no
            })
            .map(Arc::clone)
    }
}

/// `None` if the record `m` copied is still what the index points at (or
/// nothing points at it); otherwise it died since the copy: `Some` with the
/// tombstone its copy in `new` needs, if any. A message of a mailbox gone
/// from the index needs none (its mailbox is deleted, expired or replaced,
/// which recovery sees without it).
fn died_since_copy(
    idx: &MailboxIndex,
    m: &Move,
    old: SegmentNo,
    new: SegmentNo,
) -> Option<Option<Record<'static>>> {
    match m.what {
        Moved::Message { mailbox, seq } => {
            let Some(mb) = idx.mailboxes.get(mailbox) else {
                return Some(None);
            };
            let here = mb
                .find(seq)
                .and_then(|i| mb.msgs.get(i))
                .is_some_and(|r| r.seg == old && r.off == m.old_off);
            (!here).then_some(Some(Record::MessageDeleted {
                mailbox: mailbox.0,
                seq,
                target_seg: new.0,
            }))
        }
        Moved::Created(id) => {
            let here = idx
                .mailboxes
                .get(id)
                .is_some_and(|mb| mb.created.segment == old && mb.created.offset == m.old_off);
            (!here).then_some(Some(Record::MailboxDeleted {
                id: id.0,
                target_seg: new.0,
            }))
        }
        Moved::Nothing => None,
    }
}

/// Point the index ref to `m` in `old` at its copy in `new`, if the index
/// still points at it.
fn move_ref(idx: &mut MailboxIndex, m: &Move, old: SegmentNo, new: SegmentNo) {
    match m.what {
        Moved::Message { mailbox, seq } => {
            let r = idx
                .mailboxes
                .get_mut(mailbox)
                .and_then(|mb| mb.find(seq).and_then(|i| mb.msgs.get_mut(i)));
            if let Some(r) = r.filter(|r| r.seg == old && r.off == m.old_off) {
                r.seg = new;
                r.off = m.new_off;
            }
        }
        Moved::Created(id) => {
            if let Some(mb) = idx.mailboxes.get_mut(id) {
                if mb.created.segment == old && mb.created.offset == m.old_off {
                    mb.created.segment = new;
                    mb.created.offset = m.new_off;
                }
            }
        }
        Moved::Nothing => {}
    }
}
