//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use uncorreo_engine::*;

pub const DOMAIN: &str = "uncorreo.test";

pub fn config(dir: &Path) -> EngineConfig {
    EngineConfig {
        data_dir: dir.to_path_buf(),
        shards: 2,
        segment_bytes: 64 * 1024,
        domains: vec![DOMAIN.to_owned()],
        min_free_bytes: 0,
        compaction_interval: std::time::Duration::from_secs(3600),
        ..EngineConfig::default()
    }
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

pub fn open(dir: &Path, clock: &Arc<ManualClock>) -> Engine {
    Engine::open_with_clock(config(dir), clock.clone() as Arc<dyn Clock>).unwrap()
}

pub fn addr(local: &str) -> Address {
    Address::from_parts(local, DOMAIN).unwrap()
}

pub fn mailbox(e: &Engine, local: &str, max: u32, ttl_ms: u64) -> MailboxInfo {
    mailbox_of(e, local, 7, ttl_ms, max).unwrap()
}

/// Create `local@` for the anonymous owner whose token hash is all `token`.
pub fn mailbox_of(
    e: &Engine,
    local: &str,
    token: u8,
    ttl_ms: u64,
    max: u32,
) -> Result<MailboxInfo, CreateMailboxError> {
    block_on(e.create_mailbox(NewMailbox {
        address: addr(local),
        owner: Owner::Anonymous {
            token_hash: [token; 32],
        },
        expires_at_ms: e.now_ms() + ttl_ms,
        max_messages: max,
    }))
}

pub fn raw(n: usize, tag: u64) -> Bytes {
    let mut v = format!("From: a@b.test\r\nSubject: msg {tag} code 123456\r\n\r\n").into_bytes();
    while v.len() < n {
        v.extend_from_slice(format!("line {tag} {}\r\n", v.len()).as_bytes());
    }
    v.truncate(n.max(40));
    Bytes::from(v)
}

pub fn deliver(e: &Engine, to: &[&str], body: Bytes) -> DeliveryOutcome {
    block_on(e.deliver(Delivery {
        raw: body,
        envelope_from: "s@x.test".into(),
        recipients: to.iter().map(|t| Recipient::parse(t).unwrap()).collect(),
        dedupe_key: None,
    }))
    .unwrap()
}

pub fn stored(o: &DeliveryOutcome) -> Vec<MessageId> {
    match o {
        DeliveryOutcome::Delivered { stored, .. } => stored.clone(),
        DeliveryOutcome::Duplicate => vec![],
    }
}

/// Files of the data dir that are segments, with their sizes.
pub fn segments(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| {
            let l = std::fs::metadata(&p).unwrap().len();
            (p, l)
        })
        .collect();
    v.sort();
    v
}

/// Bytes of data in the data dir's files: each file's length without its
/// zero-filled tail (a fresh active segment is preallocated to its full
/// capacity; that reservation holds no data).
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            bytes
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |i| i as u64 + 1)
        })
        .sum()
}

/// Frame start offsets in a segment file (walks the documented framing:
/// 64-byte header, then `len u32 | crc u32 | kind u8 | 3 bytes | payload`).
pub fn frame_starts(bytes: &[u8]) -> Vec<(usize, u8)> {
    let mut v = Vec::new();
    let mut off = 64;
    while off + 12 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        if len == 0 && bytes[off..off + 12].iter().all(|&b| b == 0) {
            break;
        }
        v.push((off, bytes[off + 8]));
        off += 12 + len;
    }
    v
}

/// Copy a data directory (without its LOCK holder) to a fresh temp dir.
pub fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.path().join(e.file_name())).unwrap();
    }
    to
}

pub fn remove_hints(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "hint") {
            std::fs::remove_file(p).unwrap();
        }
    }
}
