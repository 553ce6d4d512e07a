//! Compaction's rewrite, applied on the owning writer's thread: nothing of
//! the shard interleaves between the plan (`compaction::plan_rewrite`), the
//! output file, the swap of index refs and the unlink of the old segment.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Writer;
use crate::codec::{self, SegHeader};
use crate::compaction::{self, RewriteOutcome, RewritePlan};
use crate::error::StorageError;
use crate::files;
use crate::ids::SegmentNo;
use crate::segment::{self, Segment};
use crate::state::MailboxIndex;
use crate::sys::Map;

impl Writer {
    /// Rewrite the live records of sealed segment `seg_no` into a new
    /// segment that supersedes it, move the index refs there, unlink it.
    pub(super) fn rewrite(&mut self, seg_no: SegmentNo) -> Result<RewriteOutcome, StorageError> {
        let Some(old) = self.sealed_segment(seg_no) else {
            return Ok(RewriteOutcome::Skipped);
        };
        let Some(plan) = compaction::plan_rewrite(&self.shared, self.shard, old) else {
            return Ok(RewriteOutcome::Empty);
        };
        let new = self.write_rewrite(&plan)?;
        self.shared
            .shard(self.shard)
            .segs
            .write()
            .insert(new.no, Arc::clone(&new));
        move_refs(
            &mut self.shared.shard(self.shard).index.write(),
            &plan.moved,
            seg_no,
            new.no,
        );
        self.shared
            .campaigns
            .write()
            .relocate(self.shard, seg_no, new.no, &plan.moved);
        let old_bytes = segment::file_bytes(&plan.old.path);
        self.shared.shard(self.shard).segs.write().remove(&seg_no);
        let io = self.shared.io.as_ref();
        if let Err(e) = files::remove_segment(io, &self.shared.dir, &plan.old.path) {
            let what = "unlinking a rewritten segment";
            return Err(compaction::stop_shard(&self.shared, self.shard, what, &e));
        }
        Ok(RewriteOutcome::Rewritten(
            old_bytes.saturating_sub(new.committed() as u64),
        ))
    }

    /// The segment `seg_no` if it is sealed (never the active one).
    fn sealed_segment(&self, seg_no: SegmentNo) -> Option<Arc<Segment>> {
        let segs = self.shared.shard(self.shard).segs.read();
        segs.get(&seg_no)
            .filter(|s| s.sealed.load(Ordering::Acquire) && s.no != self.active.no)
            .map(Arc::clone)
    }

    /// Write the plan's output under the next segment number (durable and
    /// renamed into place, with its hint) and map it.
    fn write_rewrite(&mut self, plan: &RewritePlan) -> Result<Arc<Segment>, StorageError> {
        let new_no = self.next_seg;
        self.next_seg = new_no.next();
        let shared = &self.shared;
        let path = segment::seg_path(&shared.dir, self.shard, new_no);
        let data_len = (codec::SEG_HEADER_LEN + plan.body.len()) as u64;
        let header = SegHeader {
            flags: codec::SEG_FLAG_REWRITE,
            shard: self.shard.0 as u32,
            seg_no: new_no.0,
            id_floor: self.counter,
            supersedes: plan.old.no.0,
        };
        let io = shared.io.as_ref();
        let file = files::write_rewrite_file(io, &path, &header.encode(), &plan.body)?;
        if let Err(e) = io.sync_dir(&shared.dir) {
            // The output is in place whether or not its rename survives a
            // crash: a retry would put a second one beside it.
            let what = "making a compaction output's rename durable";
            return Err(compaction::stop_shard(shared, self.shard, what, &e));
        }
        let hint = codec::Hint {
            shard: self.shard.0 as u32,
            seg_no: new_no.0,
            data_len,
            entries: plan.hints.clone(),
        };
        if let Err(e) = files::write_hint(io, &shared.dir, &path, &hint, true) {
            tracing::warn!(%e, "could not write hint for a compaction output");
        }
        let map = Map::new(file.file(), data_len as usize)?;
        Ok(Arc::new(Segment::new(new_no, path, map, data_len, true)))
    }
}

/// Point every index ref into `old` at its place in `new`; refs to records
/// the rewrite left out (no longer live) go.
fn move_refs(idx: &mut MailboxIndex, moved: &HashMap<u32, u32>, old: SegmentNo, new: SegmentNo) {
    for m in idx.mailboxes.values_mut() {
        if m.created.segment == old {
            if let Some(&n) = moved.get(&m.created.offset) {
                m.created.segment = new;
                m.created.offset = n;
            }
        }
        let before = m.msgs.len();
        m.msgs.retain_mut(|r| {
            if r.seg != old {
                return true;
            }
            match moved.get(&r.off) {
                Some(&n) => {
                    r.seg = new;
                    r.off = n;
                    true
                }
                None => false,
            }
        });
        if m.msgs.len() != before {
            m.info.message_count = m.msgs.len() as u32;
        }
    }
}
