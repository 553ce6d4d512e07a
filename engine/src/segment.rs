//! One segment file: its mapping, its committed length and the bookkeeping
//! compaction needs (bytes written, bytes known dead). Files are named
//! `s{shard:03}-{seg:010}.seg`, hints `….hint`; a compaction output is
//! written as `….seg.tmp` and renamed into place.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::codec::{self, Frame, FrameError};
use crate::ids::{SegmentNo, ShardIndex};
use crate::sys::Map;

/// A segment that readers can reach.
pub(crate) struct Segment {
    pub(crate) no: SegmentNo,
    pub(crate) path: PathBuf,
    pub(crate) map: Arc<Map>,
    /// Bytes below this offset are committed (durable per the engine's
    /// durability setting) and safe to read.
    pub(crate) len: AtomicU64,
    /// True once no more records will be appended.
    pub(crate) sealed: AtomicBool,
    /// Bytes of records known to be dead (deleted, expired, superseded).
    pub(crate) dead_bytes: AtomicU64,
}

impl Segment {
    pub(crate) fn new(no: SegmentNo, path: PathBuf, map: Arc<Map>, len: u64, sealed: bool) -> Self {
        Self {
            no,
            path,
            map,
            len: AtomicU64::new(len),
            sealed: AtomicBool::new(sealed),
            dead_bytes: AtomicU64::new(0),
        }
    }

    pub(crate) fn committed(&self) -> usize {
        self.len.load(Ordering::Acquire) as usize
    }

    /// The frame at `off`, bounds-checked against the committed length.
    pub(crate) fn frame(&self, off: u32) -> Result<Frame<'_>, FrameError> {
        codec::frame_at(self.map.bytes(), off as usize, self.committed())
    }

    pub(crate) fn add_dead(&self, bytes: u64) {
        self.dead_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The live fraction, by the dead-byte counter (an estimate: compaction
    /// re-checks every record before dropping anything).
    pub(crate) fn live_ratio(&self) -> f64 {
        let total = self.committed().saturating_sub(codec::SEG_HEADER_LEN) as f64;
        if total <= 0.0 {
            return 0.0;
        }
        let dead = self.dead_bytes.load(Ordering::Relaxed) as f64;
        ((total - dead) / total).clamp(0.0, 1.0)
    }
}

/// `s001-0000000042.seg`
pub(crate) fn seg_path(dir: &Path, shard: ShardIndex, no: SegmentNo) -> PathBuf {
    dir.join(format!("s{:03}-{no:010}.seg", shard.0))
}

pub(crate) fn hint_path(seg: &Path) -> PathBuf {
    seg.with_extension("hint")
}

pub(crate) fn tmp_path(seg: &Path) -> PathBuf {
    seg.with_extension("seg.tmp")
}

/// Parse `sSSS-NNNNNNNNNN.seg` → (shard, no).
pub(crate) fn parse_seg_name(name: &str) -> Option<(usize, SegmentNo)> {
    let stem = name.strip_suffix(".seg")?;
    let rest = stem.strip_prefix('s')?;
    let (shard, no) = rest.split_once('-')?;
    if shard.len() != 3 || no.len() != 10 {
        return None;
    }
    Some((shard.parse().ok()?, SegmentNo(no.parse().ok()?)))
}

/// File size on disk (allocated blocks), for `disk_bytes`.
pub(crate) fn file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let p = seg_path(Path::new("/d"), ShardIndex(7), SegmentNo(42));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_seg_name(name), Some((7, SegmentNo(42))));
        assert_eq!(parse_seg_name("s07-0000000042.seg"), None);
        assert_eq!(parse_seg_name("s007-0000000042.hint"), None);
        assert_eq!(hint_path(&p), Path::new("/d/s007-0000000042.hint"));
        assert_eq!(tmp_path(&p), Path::new("/d/s007-0000000042.seg.tmp"));
    }
}
