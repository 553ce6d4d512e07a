//! One job: bound the bytes that requests in flight hold in memory across the
//! whole process (SMTP DATA/BDAT bodies, SES webhook bodies, HTTP send
//! bodies), so that memory is bounded by one number instead of by
//! sessions × message size.
//!
//! A [`Budget`] is a lock-free counter of reserved bytes with a fixed limit.
//! A caller reserves before it buffers: the declared size up front when it is
//! known (`SIZE=`, `Content-Length`), or a little at a time while reading when
//! it is not ([`Permit::try_grow_to`]). A reservation that does not fit is
//! refused with [`Exhausted`] and changes nothing, so the total reserved never
//! exceeds the limit. A [`Permit`] gives its bytes back when it is dropped —
//! on success, on error, on a panic that unwinds through it, and when the
//! future holding it is cancelled — so reservations cannot leak.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A reservation that did not fit; nothing was reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{requested} more bytes do not fit: {in_flight} of {limit} bytes are in flight")]
pub struct Exhausted {
    /// Bytes asked for on top of what the permit already held.
    pub requested: u64,
    /// Bytes reserved by everyone when the reservation was refused.
    pub in_flight: u64,
    /// The budget's limit.
    pub limit: u64,
}

struct Counter {
    limit: u64,
    reserved: AtomicU64,
}

impl Counter {
    /// Add `bytes` if the total stays within the limit.
    fn take(&self, bytes: u64) -> Result<(), Exhausted> {
        if bytes == 0 {
            return Ok(());
        }
        self.reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                now.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .map(drop)
            .map_err(|in_flight| Exhausted {
                requested: bytes,
                in_flight,
                limit: self.limit,
            })
    }

    fn give(&self, bytes: u64) {
        if bytes > 0 {
            let before = self.reserved.fetch_sub(bytes, Ordering::AcqRel);
            // Permits only give back what they took; anything else would
            // corrupt the count for every later caller.
            assert!(before >= bytes, "budget released more than it reserved");
        }
    }
}

/// The process-wide budget; cheap to clone (every clone shares one counter).
#[derive(Clone)]
pub struct Budget {
    counter: Arc<Counter>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self {
            counter: Arc::new(Counter {
                limit,
                reserved: AtomicU64::new(0),
            }),
        }
    }

    /// A budget that never refuses (for embedding and tests that do not
    /// exercise it); it still counts.
    pub fn unlimited() -> Self {
        Self::new(u64::MAX)
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.counter.limit
    }

    /// Bytes reserved right now by every live permit.
    pub fn in_flight(&self) -> u64 {
        self.counter.reserved.load(Ordering::Acquire)
    }

    /// Reserve `bytes`, or refuse without reserving anything.
    pub fn try_reserve(&self, bytes: u64) -> Result<Permit, Exhausted> {
        self.counter.take(bytes)?;
        Ok(Permit {
            counter: Arc::clone(&self.counter),
            bytes,
        })
    }
}

/// Bytes reserved from a [`Budget`], given back when dropped.
#[must_use = "the reservation is released as soon as the permit is dropped"]
pub struct Permit {
    counter: Arc<Counter>,
    bytes: u64,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Permit {
    /// Bytes this permit holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Hold at least `total` bytes: reserve the difference, or refuse and
    /// keep what is held. Holding more already is not an error.
    pub fn try_grow_to(&mut self, total: u64) -> Result<(), Exhausted> {
        let more = total.saturating_sub(self.bytes);
        self.counter.take(more)?;
        self.bytes += more;
        Ok(())
    }

    /// Make room in `buf` for `len` octets (never past `ceiling`, beyond which
    /// the caller appends nothing), holding the new capacity first: a buffer
    /// grown only through this never holds memory the budget has not
    /// granted. Capacity grows by half again when that fits (few copies for
    /// a body of unknown size), else exactly to `len`. On a refusal `buf` and
    /// the permit are unchanged.
    pub fn make_room(
        &mut self,
        buf: &mut Vec<u8>,
        len: usize,
        ceiling: usize,
    ) -> Result<(), Exhausted> {
        let len = len.min(ceiling.max(buf.len()));
        if len <= buf.capacity() {
            return Ok(());
        }
        let roomy = buf
            .capacity()
            .saturating_add(buf.capacity() / 2)
            .clamp(len, ceiling.max(len));
        let target = match self.try_grow_to(roomy as u64) {
            Ok(()) => roomy,
            Err(_) => {
                self.try_grow_to(len as u64)?;
                len
            }
        };
        buf.reserve_exact(target.saturating_sub(buf.len()));
        Ok(())
    }

    /// Hold at most `total` bytes, giving the rest back.
    pub fn shrink_to(&mut self, total: u64) {
        let less = self.bytes.saturating_sub(total);
        self.counter.give(less);
        self.bytes -= less;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.counter.give(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_that_does_not_fit_is_refused_and_changes_nothing() {
        let budget = Budget::new(100);
        let a = budget.try_reserve(60).unwrap();
        let refused = budget.try_reserve(41).unwrap_err();
        assert_eq!(
            refused,
            Exhausted {
                requested: 41,
                in_flight: 60,
                limit: 100
            }
        );
        assert_eq!(budget.in_flight(), 60);
        let b = budget.try_reserve(40).unwrap();
        assert_eq!(budget.in_flight(), 100);
        drop(a);
        assert_eq!(budget.in_flight(), 40);
        drop(b);
        assert_eq!(budget.in_flight(), 0);
    }

    #[test]
    fn a_permit_grows_while_it_fits_and_gives_back_what_it_sheds() {
        let budget = Budget::new(100);
        let mut p = budget.try_reserve(0).unwrap();
        p.try_grow_to(30).unwrap();
        p.try_grow_to(10).unwrap();
        assert_eq!(p.bytes(), 30);
        let other = budget.try_reserve(50).unwrap();
        let refused = p.try_grow_to(80).unwrap_err();
        assert_eq!(refused.requested, 50);
        assert_eq!(p.bytes(), 30, "a refused growth keeps what was held");
        p.shrink_to(5);
        assert_eq!(budget.in_flight(), 55);
        drop(other);
        drop(p);
        assert_eq!(budget.in_flight(), 0);
    }

    #[test]
    fn a_buffer_grows_only_into_room_the_permit_holds() {
        let budget = Budget::new(1000);
        let mut permit = budget.try_reserve(100).unwrap();
        let mut buf = Vec::with_capacity(100);
        buf.extend_from_slice(&[1; 100]);
        permit.make_room(&mut buf, 120, 900).unwrap();
        assert_eq!(buf.capacity(), 150, "half again when it fits");
        assert_eq!(permit.bytes(), 150);
        buf.extend_from_slice(&[2; 50]);
        permit.make_room(&mut buf, 2000, 900).unwrap();
        assert_eq!(buf.capacity(), 900, "never past the ceiling");
        let mut other = budget.try_reserve(50).unwrap();
        let mut small = Vec::new();
        assert!(other.make_room(&mut small, 200, 200).is_err());
        assert_eq!(
            (small.capacity(), other.bytes()),
            (0, 50),
            "a refusal changes nothing"
        );
        drop(permit);
        drop(buf);
        other.try_grow_to(300).unwrap();
        let mut third = budget.try_reserve(600).unwrap();
        let mut exact = Vec::with_capacity(600);
        exact.extend_from_slice(&[3; 600]);
        third.make_room(&mut exact, 700, 2000).unwrap();
        assert_eq!(
            exact.capacity(),
            700,
            "exactly, when half again does not fit"
        );
        assert_eq!(budget.in_flight(), 1000);
    }

    #[test]
    fn sizes_near_the_top_of_the_range_do_not_wrap() {
        let budget = Budget::new(u64::MAX);
        let _a = budget.try_reserve(u64::MAX - 1).unwrap();
        assert!(budget.try_reserve(2).is_err());
        assert!(Budget::new(10).try_reserve(u64::MAX).is_err());
    }

    #[test]
    fn a_panic_that_unwinds_through_a_permit_releases_it() {
        let budget = Budget::new(100);
        let inside = budget.clone();
        let result = std::panic::catch_unwind(move || {
            let _held = inside.try_reserve(70).unwrap();
            panic!("a handler fails while holding a body");
        });
        assert!(result.is_err());
        assert_eq!(budget.in_flight(), 0);
    }
}
