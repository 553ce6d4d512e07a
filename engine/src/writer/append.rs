//! The active segment: a batch appended and synced, a new segment started
//! when it is full, the old one sealed with its hint file.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::Writer;
use crate::codec::{self, Record, SegHeader};
use crate::error::BatchFailure;
use crate::files::{self, DataFile};
use crate::ids::{SegmentNo, ShardIndex};
use crate::segment::{self, Segment};
use crate::state::Shared;
use crate::sys::Map;
use crate::types::Durability;

impl Writer {
    /// Append `buf` (a whole batch, ending in its `BatchCommit`) to the active
    /// segment, rolling to a new one if it does not fit, and make it durable.
    /// Returns the offset it was written at.
    ///
    /// No space (creating a segment, or writing into one) is temporary: the
    /// segment is cut back to its last durable batch and the shard goes on.
    /// Any other failure poisons the shard, and so does a failed sync, always:
    /// the kernel may have dropped the dirty pages already, so a retried
    /// `fdatasync` that succeeds would be a lie. A batch whose sync failed
    /// is also cut off the log ([`Self::cut_failed_batch`]).
    pub(super) fn write_batch(&mut self, buf: &[u8]) -> Result<u64, BatchFailure> {
        let need = buf.len() as u64;
        if self.write_off + need > self.cap {
            // Full, or an empty segment too small for this batch: start one that fits.
            if let Err(e) = self.roll(need) {
                return Err(self.fail(&e, "starting a new segment"));
            }
        }
        let base = self.write_off;
        // Corrupt by our own hand if any of these fails: never write it.
        assert_batch_decodes(buf);
        assert!(base + need <= self.cap, "batch past the segment's end");
        assert!(
            base + need <= u64::from(u32::MAX),
            "batch past 32-bit record offsets"
        );
        let io = Arc::clone(&self.shared.io);
        if let Err(e) = io.write_all_at(&self.file, buf, base) {
            if files::is_out_of_space(&e) {
                // Not synced: the next batch's fdatasync makes the length
                // durable with it, and until then recovery treats whatever
                // of this batch reached the disk as a torn tail (it has no
                // BatchCommit: that is the last byte of the write).
                if let Err(e) = io.set_len(&self.file, base) {
                    // The log's end is no longer known: never write past it.
                    self.shared
                        .poison(self.shard, "cutting back a batch that did not fit", &e);
                    return Err(BatchFailure::Poisoned);
                }
                tracing::warn!(shard = self.shard.0, "data filesystem full; batch refused");
                return Err(BatchFailure::DiskFull);
            }
            return Err(self.fail(&e, "writing a batch"));
        }
        if self.shared.config.durability == Durability::Always {
            let t = Instant::now();
            let synced = if self.shared.fail_next_sync.swap(false, Ordering::AcqRel) {
                Err(std::io::Error::other("injected fdatasync failure"))
            } else {
                io.sync_data(&self.file)
            };
            self.last_sync = t.elapsed();
            metrics::histogram!(uncorreo_metric_names::FSYNC_SECONDS)
                .record(self.last_sync.as_secs_f64());
            if let Err(e) = synced {
                self.shared.poison(self.shard, "syncing a batch", &e);
                self.cut_failed_batch(base);
                return Err(BatchFailure::Poisoned);
            }
        }
        Ok(base)
    }

    /// Take a batch whose `fdatasync` failed off the log. Every append in
    /// it is answered with a temporary failure (the sender retries), so
    /// none of it may come back at the next open: its bytes are still in
    /// the page cache, and without the cut recovery would find the batch
    /// whole and the retry would store a second copy. The cut (to `base`,
    /// the batch's first byte; it also gives back the preallocated tail)
    /// is made durable by a sync of its own. Nothing of the batch was
    /// visible: the committed length, the index and the hints advance only
    /// after a sync that succeeded. The shard stays poisoned either way
    /// (this file's later syncs are not trusted). If the cut or its sync
    /// fails, the batch may still come back at the next open, and a retry
    /// of its deliveries then stores a second copy: logged.
    fn cut_failed_batch(&self, base: u64) {
        let io = &self.shared.io;
        let cut = io
            .set_len(&self.file, base)
            .and_then(|()| io.sync_data(&self.file));
        if let Err(e) = cut {
            tracing::error!(%e, shard = self.shard.0, "could not cut a batch whose sync failed off the log; it may come back at the next open");
        }
    }

    /// A failed write or segment creation: temporary when out of space,
    /// else the shard is poisoned.
    fn fail(&self, e: &std::io::Error, what: &str) -> BatchFailure {
        if files::is_out_of_space(e) {
            tracing::warn!(%e, shard = self.shard.0, what, "data filesystem full; batch refused");
            BatchFailure::DiskFull
        } else {
            self.shared.poison(self.shard, what, e);
            BatchFailure::Poisoned
        }
    }

    /// Start a new segment big enough for `need`, then seal the old one. The
    /// new one is made first so that a failure (a full disk) leaves the
    /// active segment as it was, still open for appends.
    pub(crate) fn roll(&mut self, need: u64) -> std::io::Result<()> {
        let cap = self
            .shared
            .config
            .segment_bytes
            .max(need + codec::SEG_HEADER_LEN as u64);
        let no = self.next_seg;
        // Used up even on failure: a leftover file of a failed create must
        // not make the next attempt collide with it.
        self.next_seg = no.next();
        let (file, seg) = create_segment(&self.shared, self.shard, no, self.counter, cap, false)?;
        self.shared
            .written_since_probe
            .fetch_add(cap, Ordering::Relaxed);
        self.seal();
        self.file = file;
        self.active = seg;
        self.write_off = codec::SEG_HEADER_LEN as u64;
        self.cap = cap;
        // The whole reservation was counted just above.
        self.counted_to = cap;
        self.hints.clear();
        self.shared.publish_disk_gauges();
        Ok(())
    }

    /// Mark the active segment sealed and write its hint file (best effort:
    /// without a hint, the next open scans the segment instead).
    pub(crate) fn seal(&mut self) {
        if self.active.sealed.swap(true, Ordering::AcqRel) {
            return;
        }
        // Give back the preallocated tail (best effort: recovery finds the
        // end inside a zero tail anyway). Readers never look past the
        // committed length, which is where the cut is.
        if let Err(e) = self.shared.io.set_len(&self.file, self.write_off) {
            tracing::warn!(%e, seg = %self.active.path.display(), "could not trim a sealed segment");
        }
        let hint = codec::Hint {
            shard: self.shard.0 as u32,
            seg_no: self.active.no.0,
            data_len: self.write_off,
            entries: std::mem::take(&mut self.hints),
        };
        if let Err(e) = files::write_hint(
            self.shared.io.as_ref(),
            &self.shared.dir,
            &self.active.path,
            &hint,
            self.shared.config.durability == Durability::Always,
        ) {
            tracing::warn!(%e, seg = %self.active.path.display(), "could not write hint file");
        }
    }
}

/// Create, header-write, sync and map a new segment; register it.
pub(crate) fn create_segment(
    shared: &Shared,
    shard: ShardIndex,
    no: SegmentNo,
    id_floor: u64,
    cap: u64,
    at_open: bool,
) -> std::io::Result<(DataFile, Arc<Segment>)> {
    let path = segment::seg_path(&shared.dir, shard, no);
    let header = SegHeader {
        flags: 0,
        shard: shard.0 as u32,
        seg_no: no.0,
        id_floor,
        supersedes: codec::NO_SEGMENT,
    }
    .encode();
    let file = files::create_segment_file(
        shared.io.as_ref(),
        &files::NewSegment {
            path: &path,
            header: &header,
            preallocate: cap,
            unreserved_if_full: at_open,
            sync: shared.config.durability == Durability::Always,
        },
    )?;
    let map = match Map::new(file.file(), usize::try_from(cap).unwrap_or(usize::MAX)) {
        Ok(map) => map,
        Err(e) => {
            drop(file);
            let _ = shared.io.remove_file(&path);
            return Err(e);
        }
    };
    let seg = Arc::new(Segment::new(
        no,
        path,
        map,
        codec::SEG_HEADER_LEN as u64,
        false,
    ));
    shared
        .shard(shard)
        .segs
        .write()
        .insert(no, Arc::clone(&seg));
    Ok((file, seg))
}

/// Decode a batch back before it is written: whole frames, each with a good
/// checksum, the last a `BatchCommit` counting the others. Recovery would
/// cut a batch that fails this (and every later one) as a torn tail.
fn assert_batch_decodes(buf: &[u8]) {
    let mut off = 0;
    let mut frames = 0u32;
    let mut last = None;
    while off < buf.len() {
        let frame = match codec::frame_at(buf, off, buf.len()) {
            Ok(frame) => frame,
            Err(e) => panic!("batch frame at {off} does not parse: {e:?}"),
        };
        assert!(frame.crc_ok(), "batch frame at {off} fails its checksum");
        frames += 1;
        off += frame.total_len();
        last = Some(frame);
    }
    let commit = last.map(|f| codec::decode(f.kind, f.payload));
    assert!(
        matches!(commit, Some(Ok(Record::BatchCommit { records })) if records + 1 == frames),
        "batch of {frames} frames does not end in its BatchCommit"
    );
}

#[cfg(test)]
mod tests {
    use super::assert_batch_decodes;
    use crate::codec::Record;

    fn batch() -> Vec<u8> {
        let mut buf = Vec::new();
        let audit = Record::UserDisabled { id: 7, at_ms: 1 };
        audit.encode_frame(&mut buf);
        audit.encode_frame(&mut buf);
        Record::BatchCommit { records: 2 }.encode_frame(&mut buf);
        buf
    }

    #[test]
    fn a_whole_batch_decodes() {
        assert_batch_decodes(&batch());
    }

    #[test]
    #[should_panic(expected = "fails its checksum")]
    fn a_flipped_byte_is_caught_before_the_write() {
        let mut buf = batch();
        let last = buf.len() - 1;
        buf[last] ^= 1;
        assert_batch_decodes(&buf);
    }

    #[test]
    #[should_panic(expected = "does not end in its BatchCommit")]
    fn a_batch_without_its_commit_is_caught_before_the_write() {
        let mut buf = batch();
        let mut wrong = Vec::new();
        Record::BatchCommit { records: 3 }.encode_frame(&mut wrong);
        buf.truncate(buf.len() - wrong.len());
        buf.extend_from_slice(&wrong);
        assert_batch_decodes(&buf);
    }
}
