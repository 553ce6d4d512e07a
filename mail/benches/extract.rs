//! Criterion bench for the extractor (issue #21): time per message on 1 MiB
//! bodies, against 256 KiB bodies of the same shape, to show the cost grows
//! linearly (about 4× for 4× the bytes), including hostile shapes: nothing
//! but code-shaped numbers, and unclosed tags.
//! `cargo bench -p uncorreo-mail --bench extract`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use uncorreo_mail::extract::extract;

const KIB: usize = 1024;

/// A newsletter-shaped HTML body: blocks with links, numbers and decoys.
fn html_body(len: usize) -> String {
    let mut s = String::from("<html><head><style>p{margin:0}</style></head><body>");
    let mut i = 0u32;
    while s.len() < len - 300 {
        s.push_str(&format!(
            "<table><tr><td style=\"padding:8px\"><p>Item {i}: order #{} shipped on 24/11/2026, total $49.99.</p>\
             <p>Read <a href=\"https://click.news.example/ls/click?upn={i:x}\">the full story</a> or \
             <a href=\"https://news.example/unsubscribe?u={i}\">unsubscribe</a>.</p></td></tr></table>\n",
            100_000 + i
        ));
        i += 1;
    }
    s.push_str("<p>Your verification code is <b>482913</b>.</p></body></html>");
    s
}

/// A plain-text body of sentences with the code at the end.
fn text_body(len: usize) -> String {
    let mut s = String::new();
    while s.len() < len - 300 {
        s.push_str("Lorem ipsum dolor sit amet, consectetur adipiscing elit, call 555-0142 or see https://example.com/help.\n");
    }
    s.push_str("Your code is 482913.\n");
    s
}

/// Nothing but code-shaped numbers next to code words.
fn numbers_body(len: usize) -> String {
    let mut s = String::new();
    let mut i = 0u32;
    while s.len() < len - 300 {
        s.push_str(&format!("code {:06} ", i % 1_000_000));
        i += 1;
    }
    s
}

/// Unclosed tags and entities: the HTML scanner's worst shape.
fn tags_body(len: usize) -> String {
    "<b><i x=\"&amp;\"><div style=\"display:none\">&#x41;1 ".repeat(len / 48)
}

fn bench(c: &mut Criterion) {
    let subject = "Your verification code";
    let mut g = c.benchmark_group("extract");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, make, html) in [
        ("html", html_body as fn(usize) -> String, true),
        ("text", text_body, false),
        ("numbers", numbers_body, false),
        ("tags", tags_body, true),
    ] {
        for size in [256 * KIB, 1024 * KIB] {
            let body = make(size);
            let (text, markup) = if html {
                ("", body.as_str())
            } else {
                (body.as_str(), "")
            };
            if name == "html" || name == "text" {
                // Guard against benchmarking a miss.
                let e = extract(subject, text, markup);
                assert_eq!(e.code_strings().first().map(String::as_str), Some("482913"));
            }
            g.throughput(Throughput::Bytes(body.len() as u64));
            g.bench_function(format!("{name}_{}KiB", size / KIB), |b| {
                b.iter(|| extract(black_box(subject), black_box(text), black_box(markup)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
