//! Custom harness: durable 4 KiB appends from 64 concurrent appenders on 2
//! threads; prints throughput, latency percentiles (hdrhistogram) and mean
//! records per fdatasync. `cargo bench -p uncorreo-engine --bench append_latency`

mod support;

use hdrhistogram::Histogram;
use uncorreo_engine::*;

/// The disk's own cost: median of 200 × (pwrite 128 KiB at the end + fdatasync).
fn fdatasync_p50_us() -> u64 {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let f = std::fs::File::create(dir.path().join("probe")).expect("probe");
    let buf = vec![7u8; 128 * 1024];
    let mut v: Vec<u64> = (0..200u64)
        .map(|i| {
            f.write_all_at(&buf, i * buf.len() as u64).expect("write");
            let t = std::time::Instant::now();
            f.sync_data().expect("sync");
            t.elapsed().as_micros() as u64
        })
        .collect();
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo bench` passes --bench; under `cargo test --all-targets` this is
    // only a smoke run so CI stays quick.
    let full = std::env::args().any(|a| a == "--bench");
    if full {
        println!(
            "disk: pwrite(128 KiB)+fdatasync p50_us={}",
            fdatasync_p50_us()
        );
    }
    let per: usize = std::env::var("APPENDS_PER_APPENDER")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 1000 } else { 2 });
    for (name, durability) in [
        ("always", Durability::Always),
        ("never_unsafe", Durability::NeverUnsafeForLoadTests),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = support::engine(dir.path(), durability, 64);
        // Warm-up.
        support::run_appenders(&e, 2, 64, 20);
        let before = e.stats();
        let t = std::time::Instant::now();
        let lat = support::run_appenders(&e, 2, 64, per);
        let secs = t.elapsed().as_secs_f64();
        let after = e.stats();
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("hist");
        for v in &lat {
            h.record((*v).max(1)).expect("record");
        }
        let recs = after.records_committed - before.records_committed;
        let syncs = after.batches_committed - before.batches_committed;
        println!(
            "durability={name} appends={} secs={secs:.2} appends_per_s={:.0} p50_us={} p99_us={} p999_us={} max_us={} records_per_sync={:.1}",
            lat.len(),
            lat.len() as f64 / secs,
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            recs as f64 / syncs.max(1) as f64,
        );
        e.shutdown();
    }
}
