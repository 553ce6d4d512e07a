//! Criterion micro-benchmarks for the engine's CPU hot paths (issue #7):
//! the listing summary (`uncorreo_mail::summarize`), link/code extraction, and
//! the index lookups done per SMTP `RCPT` and per REST read
//! (`Engine::resolve`, `Engine::mailbox`, `Engine::message_meta`).
//! `cargo bench -p uncorreo-engine --bench hot_paths`
//!
//! Without `--bench` (i.e. under `cargo test --all-targets`) criterion runs
//! each function once, and the index is filled with a handful of messages
//! instead of 100,000, so the smoke run stays quick.

mod support;

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use uncorreo_engine::*;

/// Full size of the index bench: mailboxes × messages per mailbox.
const MAILBOXES: usize = 10_000;
const PER_MAILBOX: usize = 10;

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Deterministic xorshift, so every run looks up the same keys.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Base64-alphabet filler in 76-column CRLF lines (what an attachment looks like).
fn base64_lines(len: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = Rng(seed | 1);
    let mut s = String::with_capacity(len + len / 38);
    let mut col = 0;
    for _ in 0..len / 4 * 4 {
        s.push(ALPHABET[rng.below(64)] as char);
        col += 1;
        if col == 76 {
            s.push_str("\r\n");
            col = 0;
        }
    }
    s.push_str("\r\n");
    s
}

const TEXT_BODY: &str = "Hi there,\r\n\r\nThanks for signing up for Example. Your verification code is 493021.\r\nIt expires in 10 minutes.\r\n\r\nOr confirm your address with this link:\r\nhttps://app.example.com/verify?token=eyJhbGciOiJIUzI1NiJ9.abc123&user=42\r\n\r\nIf you did not request this, ignore this message or visit\r\nhttps://example.com/help and https://example.com/privacy.\r\n\r\n-- \r\nThe Example team\r\n";

const HTML_BODY: &str = "<!doctype html><html><body style=\"font-family:sans-serif\"><table width=\"100%\"><tr><td><h1>Welcome to Example</h1><p>Thanks for signing up. Your verification code is <b>493021</b>. It expires in 10 minutes.</p><p><a href=\"https://app.example.com/verify?token=eyJhbGciOiJIUzI1NiJ9.abc123&amp;user=42\" style=\"padding:12px;background:#36c;color:#fff\">Confirm my address</a></p><p>Having trouble? Paste https://app.example.com/verify?token=eyJhbGciOiJIUzI1NiJ9.abc123&amp;user=42 into your browser.</p><p style=\"color:#888\"><a href=\"https://example.com/help\">Help</a> · <a href=\"https://example.com/privacy\">Privacy</a> · <a href=\"https://example.com/unsubscribe?u=42\">Unsubscribe</a></p></td></tr></table></body></html>\r\n";

/// A ~24 KB multipart/mixed message: multipart/alternative (text + HTML)
/// plus a PDF and a PNG attachment, base64.
fn multipart_message() -> Bytes {
    let mut m = String::new();
    m.push_str(
        "Received: from mx.example.com by uncorreo.test; Tue, 24 Nov 2026 10:00:00 +0000\r\n",
    );
    m.push_str("From: Example <no-reply@example.com>\r\nTo: b0@uncorreo.test\r\n");
    m.push_str(
        "Subject: Confirm your Example account\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n",
    );
    m.push_str("Message-ID: <multi-1@example.com>\r\nMIME-Version: 1.0\r\n");
    m.push_str("Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n");
    m.push_str("--outer\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n");
    m.push_str("--alt\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n");
    m.push_str(TEXT_BODY);
    m.push_str("--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n");
    m.push_str(HTML_BODY);
    m.push_str("--alt--\r\n");
    m.push_str("--outer\r\nContent-Type: application/pdf; name=\"welcome.pdf\"\r\nContent-Disposition: attachment; filename=\"welcome.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    m.push_str(&base64_lines(12_000, 7));
    m.push_str("--outer\r\nContent-Type: image/png; name=\"logo.png\"\r\nContent-Disposition: attachment; filename=\"logo.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    m.push_str(&base64_lines(9_000, 11));
    m.push_str("--outer--\r\n");
    Bytes::from(m)
}

fn summary(c: &mut Criterion) {
    let plain = support::message(1);
    let multi = multipart_message();
    // Guard against benchmarking a parse failure.
    assert_eq!(summarize_codes(&plain), vec!["493021"]);
    let s = uncorreo_mail::summarize(&multi);
    assert_eq!(s.attachments, 2);
    assert!(!s.links.is_empty() && !s.codes.is_empty());

    let mut g = c.benchmark_group("summary");
    g.throughput(Throughput::Bytes(plain.len() as u64));
    g.bench_function("summarize_plain_4KiB", |b| {
        b.iter(|| uncorreo_mail::summarize(black_box(&plain)))
    });
    g.throughput(Throughput::Bytes(multi.len() as u64));
    g.bench_function(format!("summarize_multipart_{}B", multi.len()), |b| {
        b.iter(|| uncorreo_mail::summarize(black_box(&multi)))
    });
    g.finish();
}

fn summarize_codes(raw: &[u8]) -> Vec<String> {
    uncorreo_mail::summarize(raw).codes
}

fn extraction(c: &mut Criterion) {
    let subject = "Confirm your Example account";
    // The verification link; the unsubscribe, help and privacy links are not actions.
    assert_eq!(uncorreo_mail::extract::links(TEXT_BODY, HTML_BODY).len(), 1);
    assert_eq!(
        uncorreo_mail::extract::codes(subject, TEXT_BODY),
        vec!["493021"]
    );

    let mut g = c.benchmark_group("extract");
    g.throughput(Throughput::Bytes(
        (TEXT_BODY.len() + HTML_BODY.len()) as u64,
    ));
    g.bench_function("links_text_and_html", |b| {
        b.iter(|| uncorreo_mail::extract::links(black_box(TEXT_BODY), black_box(HTML_BODY)))
    });
    g.throughput(Throughput::Bytes((subject.len() + TEXT_BODY.len()) as u64));
    g.bench_function("codes_subject_and_text", |b| {
        b.iter(|| uncorreo_mail::extract::codes(black_box(subject), black_box(TEXT_BODY)))
    });
    g.finish();
}

/// A short message, so 100,000 of them fill the log fast and small.
fn small_message(i: usize) -> Bytes {
    Bytes::from(format!(
        "From: Bench <bench@example.com>\r\nTo: b@{}\r\nSubject: index bench {i}\r\nMessage-ID: <{i}@bench>\r\n\r\nYour code is 493021.\r\n",
        support::DOMAIN
    ))
}

/// Deliver `per` messages to each of `mailboxes` mailboxes from 64
/// concurrent tasks on one current-thread runtime.
fn fill(e: &Engine, mailboxes: usize, per: usize) {
    const TASKS: usize = 64;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let hs: Vec<_> = (0..TASKS)
            .map(|t| {
                let e = e.clone();
                tokio::task::spawn_local(async move {
                    for mb in (t..mailboxes).step_by(TASKS) {
                        for k in 0..per {
                            let d = support::delivery(small_message(mb * per + k), mb);
                            loop {
                                match e.deliver(d.clone()).await {
                                    Ok(_) => break,
                                    Err(DeliverError::Saturated) => tokio::task::yield_now().await,
                                    Err(err) => panic!("{err}"),
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.await.expect("task");
        }
    });
}

fn index(c: &mut Criterion) {
    let (mailboxes, per) = if full_run() {
        (MAILBOXES, PER_MAILBOX)
    } else {
        (8, 2)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let t = std::time::Instant::now();
    let e = support::engine(dir.path(), Durability::NeverUnsafeForLoadTests, mailboxes);
    fill(&e, mailboxes, per);
    eprintln!(
        "index: {mailboxes} mailboxes x {per} messages filled in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let addresses: Vec<Address> = (0..mailboxes)
        .map(|i| Address::from_parts(&format!("b{i}"), support::DOMAIN).expect("addr"))
        .collect();
    let rcpts: Vec<String> = (0..mailboxes)
        .map(|i| format!("b{i}+signup{i}@{}", support::DOMAIN))
        .collect();
    let ids: Vec<MessageId> = addresses
        .iter()
        .flat_map(|a| {
            let mb = e.mailbox(a).expect("mailbox");
            assert_eq!(mb.message_count as usize, per);
            (1..=per as u64).map(move |seq| MessageId {
                mailbox: mb.id,
                seq,
            })
        })
        .collect();

    let mut g = c.benchmark_group(format!("index_{mailboxes}x{per}"));
    g.throughput(Throughput::Elements(1));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    g.bench_function("mailbox_by_address", |b| {
        b.iter(|| {
            let a = &addresses[rng.below(addresses.len())];
            e.mailbox(black_box(a)).expect("live")
        })
    });
    g.bench_function("resolve_box_plus_tag", |b| {
        b.iter(|| {
            let r = &rcpts[rng.below(rcpts.len())];
            e.resolve(black_box(r)).expect("resolves")
        })
    });
    g.bench_function("message_meta", |b| {
        b.iter(|| {
            let id = ids[rng.below(ids.len())];
            e.message_meta(black_box(id)).expect("meta")
        })
    });
    g.finish();
    e.shutdown();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = summary, extraction, index
}
criterion_main!(benches);
