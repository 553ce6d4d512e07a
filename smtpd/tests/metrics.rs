//! The session's metrics, read through a debugging recorder (its own test
//! binary, so installing a global recorder cannot disturb other tests).

use std::sync::Arc;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;
use uncorreo_engine::{Address, Engine, EngineConfig, NewMailbox, Owner};
use uncorreo_smtpd::{handle_connection, Shared, SmtpConfig};

#[tokio::test]
async fn sessions_messages_bytes_latency_and_active_sessions_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig {
        data_dir: dir.path().to_path_buf(),
        domains: vec!["uncorreo.test".to_owned()],
        min_free_bytes: 0,
        ..EngineConfig::default()
    })
    .unwrap();
    engine
        .create_mailbox(NewMailbox {
            address: Address::from_parts("box", "uncorreo.test").unwrap(),
            owner: Owner::Anonymous {
                token_hash: [0; 32],
            },
            expires_at_ms: engine.now_ms() + 3_600_000,
            max_messages: 10,
        })
        .await
        .unwrap();
    let shared = Shared::new(engine, SmtpConfig::default()).unwrap();
    let (client, server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(handle_connection(
        server,
        "192.0.2.1".parse().unwrap(),
        Arc::clone(&shared),
        CancellationToken::new(),
    ));
    let (r, mut w) = tokio::io::split(client);
    w.write_all(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<box@uncorreo.test>\r\nDATA\r\nhello\r\n.\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<box@uncorreo.test>\r\nDATA\r\nbare\rcr\r\n.\r\nQUIT\r\n").await.unwrap();
    let mut r = BufReader::new(r);
    let mut all = String::new();
    while r.read_line(&mut all).await.unwrap() > 0 {}
    assert!(all.contains("221 2.0.0"), "{all}");
    assert_eq!(task.await.unwrap(), "quit");

    let mut seen = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let k = key.key();
        let labels: Vec<String> = k
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let v = match value {
            DebugValue::Counter(n) => n as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(h) => h.len() as f64,
        };
        seen.push((k.name().to_owned(), labels.join(","), v));
    }
    let get = |name: &str, labels: &str| {
        seen.iter()
            .find(|(n, l, _)| n == name && l == labels)
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("{name}{{{labels}}} missing in {seen:?}"))
    };
    assert_eq!(get("uncorreo_smtp_messages_total", "outcome=accepted"), 1.0);
    assert_eq!(get("uncorreo_smtp_messages_total", "outcome=rejected"), 1.0);
    assert_eq!(get("uncorreo_smtp_sessions_total", "outcome=quit"), 1.0);
    assert_eq!(get("uncorreo_smtp_data_to_ack_seconds", ""), 1.0);
    // Raw DATA octets incl. terminators: "hello\r\n.\r\n" + "bare\rcr\r\n.\r\n" (a bare CR is refused).
    assert_eq!(get("uncorreo_smtp_bytes_total", ""), 22.0);
    assert_eq!(get("uncorreo_smtp_active_sessions", ""), 0.0);
}
