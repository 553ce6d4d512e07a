//! What a cluster host's mailbox recount costs (`api/src/counts.rs`): the
//! engine's part of counting one user's live mailboxes
//! (`Engine::mailboxes_owned_by`), for every user (a full recount, at start,
//! on a handover and every 30 s) and for one user (the recount of a
//! mailbox's owner when it ends).
//!
//! `cargo run --release -p uncorreo-engine --example owned_scan -- [--users U] [--per-user M]`
//!
//! The fill uses `Durability::NeverUnsafeForLoadTests` (set-up, not the
//! thing measured).

use std::time::Instant;

use uncorreo_engine::*;

const DOMAIN: &str = "uncorreo.test";

fn main() {
    let (mut users, mut per_user) = (1_000u64, 100u64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (a.as_str(), value) {
            ("--users", Some(v)) => users = v,
            ("--per-user", Some(v)) => per_user = v,
            _ => {
                eprintln!("usage: owned_scan [--users U] [--per-user M]");
                std::process::exit(2);
            }
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(EngineConfig {
        data_dir: dir.path().to_path_buf(),
        domains: vec![DOMAIN.to_owned()],
        min_free_bytes: 0,
        durability: Durability::NeverUnsafeForLoadTests,
        queue_depth: 65_536,
        ..EngineConfig::default()
    })
    .expect("engine");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    let ids: Vec<UserId> = (0..users)
        .map(|i| {
            rt.block_on(engine.create_user(format!("user{i}")))
                .expect("user")
                .id
        })
        .collect();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let tasks = 256u64;
        let total = users * per_user;
        let handles: Vec<_> = (0..tasks)
            .map(|k| {
                let (engine, ids) = (engine.clone(), ids.clone());
                tokio::task::spawn_local(async move {
                    let mut i = k;
                    while i < total {
                        engine
                            .create_mailbox(NewMailbox {
                                address: Address::from_parts(&format!("scan-{i:08x}"), DOMAIN)
                                    .expect("address"),
                                owner: Owner::User(ids[(i % users) as usize]),
                                expires_at_ms: engine.now_ms() + 86_400_000,
                                max_messages: 50,
                            })
                            .await
                            .expect("mailbox");
                        i += tasks;
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("task");
        }
    });
    let started = Instant::now();
    let mut counted = 0usize;
    for id in &ids {
        counted += engine.mailboxes_owned_by(&Owner::User(*id)).len();
    }
    let every = started.elapsed();
    assert_eq!(counted as u64, users * per_user);
    let started = Instant::now();
    let rounds = 1_000u32;
    for round in 0..rounds {
        let id = ids[round as usize % ids.len()];
        counted = engine.mailboxes_owned_by(&Owner::User(id)).len();
    }
    let one = started.elapsed() / rounds;
    assert_eq!(counted as u64, per_user);
    println!(
        "users {users} x {per_user} mailboxes: every user {:.1} ms, one user {:.1} us",
        every.as_secs_f64() * 1e3,
        one.as_secs_f64() * 1e6
    );
}
