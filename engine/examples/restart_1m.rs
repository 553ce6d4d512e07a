//! Fill a data directory with N stored 4 KiB messages (default 1,000,000, in
//! 1,000 mailboxes), shut down cleanly, then measure open-to-ready time and
//! index memory per message (counted index bytes and RSS delta).
//!
//! `cargo run --release -p uncorreo-engine --example restart_1m -- [--messages N] [--dir PATH] [--no-hints]`
//!
//! The fill uses `Durability::NeverUnsafeForLoadTests` (it is set-up, not the
//! thing measured). `--no-hints` deletes the hint files before reopening to
//! time the full-scan path (as after a crash).

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use uncorreo_engine::*;

const DOMAIN: &str = "uncorreo.test";
const MAILBOXES: usize = 1000;

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn config(dir: &std::path::Path, durability: Durability) -> EngineConfig {
    EngineConfig {
        data_dir: dir.to_path_buf(),
        domains: vec![DOMAIN.to_owned()],
        min_free_bytes: 0,
        durability,
        queue_depth: 65_536,
        batch_max_bytes: 1 << 20,
        ..EngineConfig::default()
    }
}

fn body(i: u64) -> Bytes {
    let mut v = format!("From: fill@example.com\r\nSubject: stored {i}\r\n\r\n").into_bytes();
    v.resize(4096, b'x');
    Bytes::from(v)
}

fn fill(dir: &std::path::Path, n: u64) {
    let e = Engine::open(config(dir, Durability::NeverUnsafeForLoadTests)).expect("open");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    for m in 0..MAILBOXES {
        rt.block_on(e.create_mailbox(NewMailbox {
            address: Address::from_parts(&format!("m{m}"), DOMAIN).expect("addr"),
            owner: Owner::Anonymous {
                token_hash: [0; 32],
            },
            expires_at_ms: e.now_ms() + 30 * 86_400_000,
            max_messages: u32::MAX,
        }))
        .expect("mailbox");
    }
    let t = Instant::now();
    let threads = 2u64;
    std::thread::scope(|s| {
        for th in 0..threads {
            let e = e.clone();
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("rt");
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async {
                    let tasks = 64u64;
                    let hs: Vec<_> = (0..tasks)
                        .map(|k| {
                            let e = e.clone();
                            tokio::task::spawn_local(async move {
                                let mut i = th * tasks + k;
                                while i < n {
                                    let d = Delivery {
                                        raw: body(i),
                                        envelope_from: String::new(),
                                        recipients: vec![Recipient::parse(&format!(
                                            "m{}@{DOMAIN}",
                                            i % MAILBOXES as u64
                                        ))
                                        .expect("rcpt")],
                                        dedupe_key: None,
                                    };
                                    match e.deliver(d).await {
                                        Ok(_) => i += threads * tasks,
                                        Err(DeliverError::Saturated) => {
                                            tokio::task::yield_now().await
                                        }
                                        Err(err) => panic!("{err}"),
                                    }
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
    let st = e.stats();
    eprintln!(
        "filled {} messages in {:.1}s ({} segments, {} MiB)",
        st.messages,
        t.elapsed().as_secs_f64(),
        st.segments,
        st.disk_bytes >> 20
    );
    e.shutdown();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let n: u64 = arg("--messages")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = PathBuf::from(arg("--dir").unwrap_or_else(|| "target/restart_1m".into()));
    let no_hints = args.iter().any(|a| a == "--no-hints");
    std::fs::create_dir_all(&dir).expect("dir");
    let existing = {
        let e = Engine::open(config(&dir, Durability::Always)).expect("open");
        let m = e.stats().messages;
        e.shutdown();
        m
    };
    if existing < n {
        fill(&dir, n - existing);
    }
    if no_hints {
        for ent in std::fs::read_dir(&dir).expect("read dir") {
            let p = ent.expect("entry").path();
            if p.extension().is_some_and(|x| x == "hint") {
                std::fs::remove_file(p).expect("rm hint");
            }
        }
    }
    let rss0 = rss_bytes();
    let t = Instant::now();
    let e = Engine::open(config(&dir, Durability::Always)).expect("open");
    let ready = t.elapsed();
    let rss1 = rss_bytes();
    let st = e.stats();
    let idx = e.index_bytes();
    println!(
        "messages={} segments={} disk_mib={} open_to_ready_ms={} index_bytes={} index_bytes_per_msg={:.1} rss_delta_bytes_per_msg={:.1} hints={}",
        st.messages,
        st.segments,
        st.disk_bytes >> 20,
        ready.as_millis(),
        idx,
        idx as f64 / st.messages.max(1) as f64,
        rss1.saturating_sub(rss0) as f64 / st.messages.max(1) as f64,
        !no_hints,
    );
    // Sanity: a read from the middle works.
    let mb = e
        .mailbox(&Address::from_parts("m7", DOMAIN).expect("addr"))
        .expect("mailbox");
    let list = e.list_messages(mb.id, 0, 3).expect("list");
    if let Some(m) = list.first() {
        let raw = e.read_raw(m.id).expect("read");
        assert_eq!(raw.len(), 4096);
    }
    e.shutdown();
}
