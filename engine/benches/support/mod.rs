//! Shared set-up for the engine benches: an engine in a temp dir with one
//! mailbox per appender, and a 4 KiB message.
#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use uncorreo_engine::*;

pub const DOMAIN: &str = "uncorreo.test";

pub fn engine(dir: &std::path::Path, durability: Durability, mailboxes: usize) -> Engine {
    let cfg = EngineConfig {
        data_dir: dir.to_path_buf(),
        domains: vec![DOMAIN.to_owned()],
        min_free_bytes: 0,
        durability,
        queue_depth: 16_384,
        // BENCH_SHARDS=N compares shard counts (default: one per core).
        shards: std::env::var("BENCH_SHARDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        ..EngineConfig::default()
    };
    // BENCH_PREALLOCATE=0 measures the engine as it was before segments
    // were preallocated: the real calls, with `fallocate` left out.
    let e = if std::env::var("BENCH_PREALLOCATE").is_ok_and(|v| v == "0") {
        Engine::open_with_io(cfg, Arc::new(SystemClock), Arc::new(NoPreallocation))
    } else {
        Engine::open(cfg)
    }
    .expect("open");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    for i in 0..mailboxes {
        rt.block_on(e.create_mailbox(NewMailbox {
            address: Address::from_parts(&format!("b{i}"), DOMAIN).expect("addr"),
            owner: Owner::Anonymous {
                token_hash: [0; 32],
            },
            expires_at_ms: e.now_ms() + 86_400_000,
            max_messages: u32::MAX,
        }))
        .expect("mailbox");
    }
    e
}

/// The real I/O without preallocation (for the before/after comparison).
struct NoPreallocation;

impl Io for NoPreallocation {
    fn create_new(&self, path: &std::path::Path) -> std::io::Result<DataFile> {
        RealIo.create_new(path)
    }
    fn open(&self, path: &std::path::Path) -> std::io::Result<DataFile> {
        RealIo.open(path)
    }
    fn write_all_at(&self, file: &DataFile, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        RealIo.write_all_at(file, bytes, offset)
    }
    fn sync_data(&self, file: &DataFile) -> std::io::Result<()> {
        RealIo.sync_data(file)
    }
    fn sync_all(&self, file: &DataFile) -> std::io::Result<()> {
        RealIo.sync_all(file)
    }
    fn allocate(&self, _file: &DataFile, _len: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn set_len(&self, file: &DataFile, len: u64) -> std::io::Result<()> {
        RealIo.set_len(file, len)
    }
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        RealIo.rename(from, to)
    }
    fn remove_file(&self, path: &std::path::Path) -> std::io::Result<()> {
        RealIo.remove_file(path)
    }
    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        RealIo.sync_dir(dir)
    }
}

pub fn message(i: u64) -> Bytes {
    let mut v = format!(
        "Received: from bench\r\nFrom: Bench <bench@example.com>\r\nTo: b@{DOMAIN}\r\nSubject: bench message {i}\r\nMessage-ID: <{i}@bench>\r\n\r\nYour code is 493021.\r\n"
    )
    .into_bytes();
    while v.len() < 4096 {
        v.extend_from_slice(b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n");
    }
    v.truncate(4096);
    Bytes::from(v)
}

pub fn delivery(raw: Bytes, mailbox: usize) -> Delivery {
    Delivery {
        raw,
        envelope_from: "bench@example.com".into(),
        recipients: vec![Recipient::parse(&format!("b{mailbox}@{DOMAIN}")).expect("rcpt")],
        dedupe_key: None,
    }
}

/// Run `appenders` concurrent appenders, split over `threads` OS threads each
/// with a current-thread runtime (the appliance's thread-per-core shape),
/// each doing `per` deliveries. Returns the per-append latencies in µs.
pub fn run_appenders(e: &Engine, threads: usize, appenders: usize, per: usize) -> Vec<u64> {
    let msg = message(1);
    let lat = Arc::new(parking_lot_free::Collect::default());
    std::thread::scope(|s| {
        for t in 0..threads {
            let e = e.clone();
            let msg = msg.clone();
            let lat = Arc::clone(&lat);
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("rt");
                let local = tokio::task::LocalSet::new();
                let mine = local.block_on(&rt, async {
                    let hs: Vec<_> = (0..appenders / threads)
                        .map(|k| {
                            let e = e.clone();
                            let msg = msg.clone();
                            let mb = t * (appenders / threads) + k;
                            tokio::task::spawn_local(async move {
                                let mut v = Vec::with_capacity(per);
                                for _ in 0..per {
                                    let t0 = std::time::Instant::now();
                                    loop {
                                        match e.deliver(delivery(msg.clone(), mb)).await {
                                            Ok(_) => break,
                                            Err(DeliverError::Saturated) => {
                                                tokio::task::yield_now().await
                                            }
                                            Err(err) => panic!("{err}"),
                                        }
                                    }
                                    v.push(t0.elapsed().as_micros() as u64);
                                }
                                v
                            })
                        })
                        .collect();
                    let mut all = Vec::new();
                    for h in hs {
                        all.extend(h.await.expect("task"));
                    }
                    all
                });
                lat.push(mine);
            });
        }
    });
    lat.take()
}

mod parking_lot_free {
    use std::sync::Mutex;
    #[derive(Default)]
    pub struct Collect(Mutex<Vec<u64>>);
    impl Collect {
        pub fn push(&self, v: Vec<u64>) {
            self.0.lock().expect("lock").extend(v);
        }
        pub fn take(&self) -> Vec<u64> {
            std::mem::take(&mut *self.0.lock().expect("lock"))
        }
    }
}
