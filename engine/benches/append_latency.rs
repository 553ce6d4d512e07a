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

/// The physical limit the engine is measured against (issue #16, P7): the
/// same number of 4 KiB records written by one thread as perfect group
/// commits, `batch` records per `pwrite` and one `fdatasync` each, into a
/// file preallocated like a segment. Appends per second.
fn raw_loop_appends_per_s(appends: usize, batch: usize) -> f64 {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let f = std::fs::File::create(dir.path().join("raw")).expect("raw");
    let buf = vec![7u8; batch * 4096];
    let batches = appends.div_ceil(batch);
    f.set_len((batches * buf.len()) as u64)
        .expect("preallocate");
    f.sync_all().expect("sync");
    let t = std::time::Instant::now();
    for i in 0..batches {
        f.write_all_at(&buf, (i * buf.len()) as u64).expect("write");
        f.sync_data().expect("sync");
    }
    (batches * batch) as f64 / t.elapsed().as_secs_f64()
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
    let raw = full.then(|| raw_loop_appends_per_s(64 * per, 64));
    if let Some(raw) = raw {
        println!("raw: pwrite(64 x 4 KiB)+fdatasync loop appends_per_s={raw:.0}");
    }
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
        let rate = lat.len() as f64 / secs;
        let ratio = raw.map_or(String::new(), |raw| format!(" vs_raw={:.2}", rate / raw));
        println!(
            "durability={name} appends={} secs={secs:.2} appends_per_s={rate:.0}{ratio} p50_us={} p99_us={} p999_us={} max_us={} records_per_sync={:.1}",
            lat.len(),
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            recs as f64 / syncs.max(1) as f64,
        );
        e.shutdown();
    }
}
