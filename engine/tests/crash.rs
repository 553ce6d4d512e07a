//! kill -9 set test (Jepsen-style): a child process appends with
//! `Durability::Always` from several concurrent tasks and prints every
//! acknowledged id with the SHA-256 of its bytes the moment it is
//! acknowledged; the parent SIGKILLs it after a random number of
//! acknowledgements, reopens the same data directory and checks that every
//! acknowledged message is there, byte-identical, and that nothing unknown
//! appeared. The child is this test binary re-executed with an env var.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use uncorreo_engine::*;

const CHILD_ENV: &str = "UNCORREO_CRASH_CHILD_DIR";
const ROUND_ENV: &str = "UNCORREO_CRASH_ROUND";
const BOXES: usize = 4;
const TASKS: u64 = 8;

fn crash_config(dir: &std::path::Path) -> EngineConfig {
    let mut c = config(dir);
    c.segment_bytes = 256 * 1024;
    c.durability = Durability::Always;
    c
}

/// The message a (round, task, n) triple always produces; self-describing so
/// the parent can recognise any message it finds.
fn body(round: u64, task: u64, n: u64) -> Vec<u8> {
    let mut v = format!("Subject: crash r{round} t{task} n{n}\r\n\r\n").into_bytes();
    let len = 200 + ((round * 7919 + task * 104729 + n * 1299709) % 6000) as usize;
    let mut x = round ^ (task << 20) ^ (n << 40) ^ 0x9e3779b97f4a7c15;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v
}

fn parse_subject(raw: &[u8]) -> Option<(u64, u64, u64)> {
    let s = std::str::from_utf8(raw.get(..64.min(raw.len()))?).ok()?;
    let line = s.lines().next()?.strip_prefix("Subject: crash ")?;
    let mut it = line.split(' ');
    let r = it.next()?.strip_prefix('r')?.parse().ok()?;
    let t = it.next()?.strip_prefix('t')?.parse().ok()?;
    let n = it.next()?.strip_prefix('n')?.parse().ok()?;
    Some((r, t, n))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let e = Engine::open(crash_config(std::path::Path::new(&dir))).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        for b in 0..BOXES {
            let a = addr(&format!("box{b}"));
            if e.mailbox(&a).is_none() {
                let r = e
                    .create_mailbox(NewMailbox {
                        address: a,
                        owner: Owner::Anonymous {
                            token_hash: [1; 32],
                        },
                        expires_at_ms: e.now_ms() + 86_400_000,
                        max_messages: 1_000_000,
                    })
                    .await;
                assert!(matches!(r, Ok(_) | Err(CreateMailboxError::AlreadyExists)));
            }
        }
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let e = e.clone();
                tokio::task::spawn_local(async move {
                    for n in 0.. {
                        let raw = body(round, task, n);
                        let to = format!("box{}@{DOMAIN}", (task + n) as usize % BOXES);
                        let r = e
                            .deliver(Delivery {
                                raw: raw.clone().into(),
                                envelope_from: String::new(),
                                recipients: vec![Recipient::parse(&to).unwrap()],
                                dedupe_key: None,
                            })
                            .await;
                        if let Ok(DeliveryOutcome::Delivered { stored, .. }) = r {
                            let mut out = std::io::stdout().lock();
                            for id in stored {
                                writeln!(out, "ACK {id} {}", hex(&Sha256::digest(&raw))).unwrap();
                            }
                            out.flush().unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn kill_9_never_loses_an_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_c0de);
    let mut acked: HashMap<MessageId, String> = HashMap::new();
    let exe = std::env::current_exe().unwrap();
    for round in 0..24u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill at a random point: sometimes during startup, mostly mid-stream.
        let target = if rng.random_range(0..6) == 0 {
            0
        } else {
            rng.random_range(1..120)
        };
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        let mut killed = false;
        while let Some(Ok(line)) = lines.next() {
            if let Some(rest) = line.strip_prefix("ACK ") {
                let (id, hash) = rest.split_once(' ').unwrap();
                acked.insert(id.parse().unwrap(), hash.to_owned());
                seen += 1;
            }
            if !killed && seen >= target {
                child.kill().unwrap();
                killed = true;
            }
        }
        // Lines already in the pipe were read to EOF above: they were acked too.
        child.wait().unwrap();
        assert!(killed, "round {round}: child exited on its own");

        let e = Engine::open(crash_config(dir.path())).unwrap();
        for (id, hash) in &acked {
            let raw = e
                .read_raw(*id)
                .unwrap_or_else(|err| panic!("round {round}: acked {id} lost: {err}"));
            assert_eq!(
                &hex(&Sha256::digest(&raw)),
                hash,
                "round {round}: {id} differs"
            );
        }
        for b in 0..BOXES {
            let Some(mb) = e.mailbox(&addr(&format!("box{b}"))) else {
                continue;
            };
            for m in e.list_messages(mb.id, 0, usize::MAX).unwrap() {
                let raw = e.read_raw(m.id).unwrap();
                let (r, t, n) = parse_subject(&raw).unwrap();
                assert_eq!(
                    raw,
                    body(r, t, n),
                    "round {round}: unknown bytes at {}",
                    m.id
                );
            }
        }
        assert_eq!(e.stats().corrupt_records, 0);
        e.shutdown();
    }
    assert!(acked.len() > 100, "only {} acknowledged", acked.len());
}
