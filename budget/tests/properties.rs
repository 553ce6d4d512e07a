//! Properties of the budget under arbitrary sequences of operations from
//! several threads: the total reserved never exceeds the limit, each
//! refusal leaves the count untouched, and once every permit is gone
//! (dropped, or unwound by a panic) nothing stays reserved.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use uncorreo_budget::{Budget, Permit};

#[derive(Debug, Clone)]
enum Op {
    Reserve(u64),
    Grow(usize, u64),
    Shrink(usize, u64),
    Drop(usize),
    PanicHolding(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..400).prop_map(Op::Reserve),
        (any::<usize>(), 0u64..600).prop_map(|(i, n)| Op::Grow(i, n)),
        (any::<usize>(), 0u64..400).prop_map(|(i, n)| Op::Shrink(i, n)),
        any::<usize>().prop_map(Op::Drop),
        (0u64..400).prop_map(Op::PanicHolding),
    ]
}

/// Apply `ops` and check after each step that the budget's count is the sum
/// the permits hold (single thread) or at most the limit (many threads).
fn run(budget: &Budget, ops: &[Op], exact: bool) {
    let mut held: Vec<Permit> = Vec::new();
    let total = |held: &[Permit]| held.iter().map(Permit::bytes).sum::<u64>();
    for op in ops {
        let before = budget.in_flight();
        match *op {
            Op::Reserve(n) => match budget.try_reserve(n) {
                Ok(p) => held.push(p),
                Err(e) => {
                    assert_eq!(e.requested, n);
                    if exact {
                        assert!(before + n > budget.limit());
                        assert_eq!(budget.in_flight(), before);
                    }
                }
            },
            Op::Grow(i, n) if !held.is_empty() => {
                let len = held.len();
                let p = &mut held[i % len];
                let had = p.bytes();
                if p.try_grow_to(n).is_err() {
                    assert_eq!(p.bytes(), had);
                    if exact {
                        assert_eq!(budget.in_flight(), before);
                    }
                } else {
                    assert_eq!(p.bytes(), had.max(n));
                }
            }
            Op::Shrink(i, n) if !held.is_empty() => {
                let len = held.len();
                let p = &mut held[i % len];
                let had = p.bytes();
                p.shrink_to(n);
                assert_eq!(p.bytes(), had.min(n));
            }
            Op::Drop(i) if !held.is_empty() => {
                let len = held.len();
                drop(held.swap_remove(i % len));
            }
            Op::PanicHolding(n) => {
                let b = budget.clone();
                let unwound = std::panic::catch_unwind(move || {
                    let _p = b.try_reserve(n);
                    panic!("unwind with a permit");
                });
                assert!(unwound.is_err());
            }
            _ => {}
        }
        assert!(budget.in_flight() <= budget.limit());
        if exact {
            assert_eq!(budget.in_flight(), total(&held));
        }
    }
}

fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}

proptest! {
    #[test]
    fn one_thread_count_is_exactly_what_permits_hold(
        limit in 0u64..1000,
        ops in prop::collection::vec(op(), 0..64),
    ) {
        quiet_panics();
        let budget = Budget::new(limit);
        run(&budget, &ops, true);
        prop_assert_eq!(budget.in_flight(), 0, "permits leaked");
    }

    #[test]
    fn many_threads_never_pass_the_limit_and_leak_nothing(
        limit in 0u64..1000,
        per_thread in prop::collection::vec(prop::collection::vec(op(), 0..48), 2..5),
    ) {
        quiet_panics();
        let budget = Budget::new(limit);
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let budget = budget.clone();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                while !done.load(Ordering::Acquire) {
                    assert!(budget.in_flight() <= budget.limit());
                    std::thread::yield_now();
                }
            })
        };
        std::thread::scope(|s| {
            for ops in &per_thread {
                let budget = budget.clone();
                s.spawn(move || run(&budget, ops, false));
            }
        });
        done.store(true, Ordering::Release);
        watcher.join().unwrap();
        prop_assert_eq!(budget.in_flight(), 0, "permits leaked");
    }
}
