//! Criterion benches: durable 4 KiB appends from 64 concurrent appenders
//! (throughput), and random reads of stored messages.
//! `cargo bench -p uncorreo-engine --bench engine`

mod support;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use uncorreo_engine::*;

const APPENDERS: usize = 64;
const PER: usize = 50;

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = support::engine(dir.path(), Durability::Always, APPENDERS);
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements((APPENDERS * PER) as u64));
    g.sample_size(20);
    g.bench_function("durable_4KiB_64_appenders", |b| {
        b.iter(|| support::run_appenders(&e, 2, APPENDERS, PER))
    });
    g.finish();
    let st = e.stats();
    eprintln!(
        "append: {} records in {} fdatasyncs = {:.1} records per sync",
        st.records_committed,
        st.batches_committed,
        st.records_committed as f64 / st.batches_committed.max(1) as f64
    );
    e.shutdown();
}

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = support::engine(dir.path(), Durability::NeverUnsafeForLoadTests, APPENDERS);
    support::run_appenders(&e, 2, APPENDERS, 200);
    let ids: Vec<MessageId> = (0..APPENDERS)
        .flat_map(|i| {
            let mb = e
                .mailbox(&Address::from_parts(&format!("b{i}"), support::DOMAIN).expect("a"))
                .expect("mb");
            e.list_messages(mb.id, 0, usize::MAX)
                .expect("list")
                .into_iter()
                .map(|m| m.id)
        })
        .collect();
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(1));
    let mut x: u64 = 0x9e3779b97f4a7c15;
    g.bench_function("read_raw_random_4KiB", |b| {
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = ids[(x % ids.len() as u64) as usize];
            e.read_raw(id).expect("read")
        })
    });
    g.bench_function("list_messages_50", |b| {
        let mb = e
            .mailbox(&Address::from_parts("b0", support::DOMAIN).expect("a"))
            .expect("mb");
        b.iter(|| e.list_messages(mb.id, 0, 50).expect("list"))
    });
    g.finish();
    e.shutdown();
}

criterion_group!(benches, append, read);
criterion_main!(benches);
