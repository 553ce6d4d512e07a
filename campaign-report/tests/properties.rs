//! The report against a brute-force model of the same arrivals.

use std::collections::HashMap;

use proptest::prelude::*;
use uncorreo_campaign_report::{Arrival, Histogram, Report};

proptest! {
    #[test]
    fn counts_match_a_model(msgs in proptest::collection::vec((0u8..40, 0u8..20, proptest::option::of(0u64..5_000), 1_000u64..9_000, 1u64..500), 0..300)) {
        let mut r = Report::default();
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut rcpts = std::collections::HashSet::new();
        for (id, rcpt, sent, at, size) in &msgs {
            let id = format!("<{id}@load>");
            let rcpt = format!("u{rcpt}@c");
            r.accept(&Arrival { message_id: Some(&id), recipient: &rcpt, size: *size, sent_at_ms: *sent, committed_at_ms: *at });
            *ids.entry(id).or_default() += 1;
            rcpts.insert(rcpt);
        }
        prop_assert_eq!(r.accepted(), msgs.len() as u64);
        prop_assert_eq!(r.unique_message_ids(), ids.len() as u64);
        prop_assert_eq!(r.duplicate_message_ids(), ids.values().filter(|c| **c > 1).count() as u64);
        prop_assert_eq!(r.duplicate_messages(), ids.values().map(|c| u64::from(c - 1)).sum::<u64>());
        for d in r.duplicates() {
            prop_assert_eq!(Some(&d.count), ids.get(&d.message_id));
        }
        prop_assert_eq!(r.distinct_recipients(), rcpts.len() as u64);
        prop_assert_eq!(r.bytes(), msgs.iter().map(|m| m.4).sum::<u64>());
    }

    #[test]
    fn percentiles_are_within_one_sixteenth_above_exact(values in proptest::collection::vec(0u64..10_000_000, 1..500)) {
        let mut h = Histogram::default();
        for v in &values { h.record(*v); }
        let mut sorted = values.clone();
        sorted.sort_unstable();
        for per_mille in [500u64, 900, 990, 1000] {
            let rank = ((sorted.len() as u64 * per_mille).div_ceil(1000).max(1) - 1) as usize;
            let exact = sorted[rank];
            let got = h.percentile(per_mille);
            prop_assert!(got >= exact, "p{} {} < exact {}", per_mille, got, exact);
            prop_assert!(got <= exact + exact / 16 + 1, "p{} {} too far above {}", per_mille, got, exact);
        }
        prop_assert_eq!(h.summary().max_ms, *sorted.last().unwrap_or(&0));
    }
}
