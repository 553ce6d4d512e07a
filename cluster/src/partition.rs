//! Which partition a mailbox address belongs to.
//!
//! The partition is a pure function of the canonical address (lower-cased,
//! without a `+tag`) and the cluster's partition count, so every host
//! computes the same answer with no lookup. The count is fixed when a cluster
//! is created: changing it would move every mailbox.

use std::fmt;
use std::num::NonZeroU16;

/// How many partitions the cluster has; fixed at its creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionCount(NonZeroU16);

impl PartitionCount {
    /// The default: enough partitions to spread over many hosts, few enough
    /// that every host can watch all their leases.
    pub const DEFAULT: PartitionCount = PartitionCount(match NonZeroU16::new(1024) {
        Some(count) => count,
        None => unreachable!(),
    });

    /// A count of partitions; `None` for zero.
    pub fn new(count: u16) -> Option<PartitionCount> {
        NonZeroU16::new(count).map(PartitionCount)
    }

    /// The number of partitions.
    pub fn get(self) -> u16 {
        self.0.get()
    }
}

/// One partition, `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition(pub u16);

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The partition of a mailbox address. `Box+Tag@Example.TEST` and
/// `box@example.test` are the same mailbox, so they are the same partition.
/// An address without `@` is hashed whole (the caller validated addresses;
/// this only has to be deterministic).
pub fn partition_of(address: &str, count: PartitionCount) -> Partition {
    let (local, domain) = match address.rsplit_once('@') {
        Some((local, domain)) => (local, Some(domain)),
        None => (address, None),
    };
    let local = local.split_once('+').map_or(local, |(base, _tag)| base);
    let mut hash = Fnv1a::new();
    hash.write_lowercase(local);
    if let Some(domain) = domain {
        hash.write_lowercase("@");
        hash.write_lowercase(domain);
    }
    let index = hash.finish() % u64::from(count.get());
    Partition(u16::try_from(index).unwrap_or_else(|_| unreachable!("index < count <= u16::MAX")))
}

/// 64-bit FNV-1a, fed lower-cased bytes so the canonical form is never built.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }

    fn write_lowercase(&mut self, text: &str) {
        for byte in text.bytes() {
            self.0 ^= u64::from(byte.to_ascii_lowercase());
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn count(n: u16) -> PartitionCount {
        PartitionCount::new(n).unwrap_or(PartitionCount::DEFAULT)
    }

    #[test]
    fn tags_and_case_do_not_change_the_partition() {
        let base = partition_of("box@example.test", PartitionCount::DEFAULT);
        assert_eq!(
            partition_of("Box+7@EXAMPLE.test", PartitionCount::DEFAULT),
            base
        );
        assert_eq!(
            partition_of("box+a+b@example.test", PartitionCount::DEFAULT),
            base
        );
    }

    #[test]
    fn the_hash_is_fnv1a_of_the_canonical_address() {
        // Pinned so that every host, of every build, agrees: a change here
        // would move mailboxes between hosts.
        // fnv1a64("a@b") = 0xe6ac_9919_04e0_0a72, and that modulo 65,535 is 36,632.
        assert_eq!(partition_of("a@b", count(u16::MAX)), Partition(36_632));
    }

    #[test]
    fn zero_partitions_is_refused() {
        assert_eq!(PartitionCount::new(0), None);
        assert_eq!(PartitionCount::DEFAULT.get(), 1024);
    }

    #[test]
    fn addresses_spread_over_the_partitions() {
        let partitions = count(16);
        let mut seen = [0u32; 16];
        for n in 0..16_000 {
            seen[usize::from(partition_of(&format!("user{n}@example.test"), partitions).0)] += 1;
        }
        // 1,000 expected per partition; a hash that clustered would leave
        // some far below.
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }

    proptest! {
        #[test]
        fn the_partition_is_in_range(address in "[a-zA-Z0-9.+_-]{0,20}@?[a-z.]{0,12}", n in 1u16..) {
            let partitions = count(n);
            prop_assert!(partition_of(&address, partitions).0 < partitions.get());
        }
    }
}
