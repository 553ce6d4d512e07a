//! Internal ids as types of their own, so that a segment number, a record's
//! place and a shard cannot be passed for one another or for a count.
//! On disk they are plain integers (see FORMAT.md); the codec converts.

use std::fmt;

/// A segment's number within its shard (the `{seg}` of its file name).
/// Numbers only grow: a compaction output gets a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SegmentNo(pub(crate) u32);

impl SegmentNo {
    /// The number after this one.
    pub(crate) fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for SegmentNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where one record is: its segment, the offset of its frame there and the
/// frame's whole length (header + payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordLoc {
    pub(crate) segment: SegmentNo,
    pub(crate) offset: u32,
    pub(crate) len: u32,
}

/// One log shard (`0..shards`): its writer thread, its `sNNN-` files, its
/// part of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ShardIndex(pub(crate) usize);

impl fmt::Display for ShardIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
