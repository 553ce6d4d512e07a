//! Memory per live mailbox: create N mailboxes (default 1,000,000: nine in
//! ten anonymous, each with its own session token, one in ten owned by a
//! user), then measure the process's resident memory per mailbox, live and
//! again after a clean restart (the index rebuilt from hints and the log).
//!
//! `cargo run --release -p uncorreo-engine --example mailboxes_1m -- [--mailboxes N] [--dir PATH]`
//!
//! The fill uses `Durability::NeverUnsafeForLoadTests` (set-up, not the
//! thing measured). Resident memory is read from `/proc/self/statm` after
//! the allocator has been asked to return free pages (`malloc_trim` is not
//! called: what a long-running appliance holds is what counts).

use std::path::PathBuf;
use std::time::Instant;

use uncorreo_engine::*;

const DOMAIN: &str = "uncorreo.test";

/// Anonymous resident memory (`RssAnon` of `/proc/self/status`): the heap,
/// without the pages of mapped segment files, which the kernel may drop
/// and read again (recovery reads every record through the mappings).
fn anon_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn config(dir: &std::path::Path) -> EngineConfig {
    EngineConfig {
        data_dir: dir.to_path_buf(),
        domains: vec![DOMAIN.to_owned()],
        min_free_bytes: 0,
        durability: Durability::NeverUnsafeForLoadTests,
        queue_depth: 65_536,
        ..EngineConfig::default()
    }
}

fn fill(e: &Engine, n: u64) {
    let user = block_on(e.create_user("memory".into())).expect("user");
    let threads = 2u64;
    let tasks = 256u64;
    std::thread::scope(|s| {
        for th in 0..threads {
            let e = e.clone();
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("rt");
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async {
                    let hs: Vec<_> = (0..tasks)
                        .map(|k| {
                            let e = e.clone();
                            tokio::task::spawn_local(async move {
                                let mut i = th * tasks + k;
                                while i < n {
                                    let owner = if i.is_multiple_of(10) {
                                        Owner::User(user.id)
                                    } else {
                                        let mut token_hash = [0u8; 32];
                                        token_hash[..8].copy_from_slice(&i.to_le_bytes());
                                        Owner::Anonymous { token_hash }
                                    };
                                    e.create_mailbox(NewMailbox {
                                        address: Address::from_parts(
                                            &format!("ci-run-{i:08x}"),
                                            DOMAIN,
                                        )
                                        .expect("address"),
                                        owner,
                                        expires_at_ms: e.now_ms() + 30 * 86_400_000,
                                        max_messages: 50,
                                    })
                                    .await
                                    .expect("mailbox");
                                    i += threads * tasks;
                                }
                            })
                        })
                        .collect();
                    for h in hs {
                        h.await.expect("task");
                    }
                });
            });
        }
    });
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt")
        .block_on(f)
}

fn main() {
    let mut n: u64 = 1_000_000;
    let mut dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mailboxes" => {
                n = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--mailboxes N")
            }
            "--dir" => dir = args.next().map(PathBuf::from),
            other => panic!("unknown argument {other}"),
        }
    }
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = dir.unwrap_or_else(|| temp.path().to_path_buf());

    // As the appliance does (`src/main.rs`): a fixed threshold, which also
    // keeps glibc from raising it (and its trim threshold) on its own.
    assert!(set_mmap_threshold(128 * 1024), "mallopt");
    let before = rss_bytes();
    let anon_before = anon_bytes();
    let e = Engine::open(config(&dir)).expect("open");
    let opened = rss_bytes();
    let anon_opened = anon_bytes();
    let t = Instant::now();
    fill(&e, n);
    let filled = t.elapsed();
    let live = rss_bytes();
    let anon_live = anon_bytes();
    assert_eq!(e.stats().mailboxes, n, "every mailbox is live");
    println!(
        "created {n} mailboxes in {:.1} s ({:.0}/s)",
        filled.as_secs_f64(),
        n as f64 / filled.as_secs_f64()
    );
    println!(
        "live: RSS {:.1} MiB after open, {:.1} MiB with {n} mailboxes: {:.0} bytes per mailbox",
        opened as f64 / 1048576.0,
        live as f64 / 1048576.0,
        (live.saturating_sub(opened)) as f64 / n as f64
    );
    println!(
        "live: anonymous {:.0} bytes per mailbox; the index's own count {:.0} bytes per mailbox",
        (anon_live.saturating_sub(anon_opened)) as f64 / n as f64,
        e.index_bytes() as f64 / n as f64
    );
    e.shutdown();
    drop(e);

    let t = Instant::now();
    let e = Engine::open(config(&dir)).expect("reopen");
    let ready = t.elapsed();
    let reopened = rss_bytes();
    let anon_reopened = anon_bytes();
    assert_eq!(e.stats().mailboxes, n, "every mailbox is back");
    println!(
        "restart: ready in {:.0} ms; RSS {:.1} MiB: {:.0} bytes per mailbox over the process before the first open",
        ready.as_secs_f64() * 1000.0,
        reopened as f64 / 1048576.0,
        (reopened.saturating_sub(before)) as f64 / n as f64
    );
    println!(
        "restart: anonymous {:.0} bytes per mailbox over the process before the first open; the index's own count {:.0}",
        (anon_reopened.saturating_sub(anon_before)) as f64 / n as f64,
        e.index_bytes() as f64 / n as f64
    );
    e.shutdown();
}
