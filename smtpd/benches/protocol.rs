//! Criterion micro-benchmarks for the SMTP wire hot paths (issue #7):
//! command-line parsing, DATA dot-unstuffing (one chunk and TCP-segment
//! sized chunks), and dot-stuffing round trips.
//! `cargo bench -p uncorreo-smtpd --bench protocol`
//!
//! Under `cargo test --all-targets` (no `--bench`) criterion runs each
//! function once; set-up here is a few MiB of memory at most.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use uncorreo_smtpd::{dot_stuff, parse_command, DataDecoder};

/// One typical session's command lines, as a client sends them.
const LINES: &[&[u8]] = &[
    b"EHLO mail-oi1-f171.google.com\r\n",
    b"MAIL FROM:<bounces+1234567-abcd-ci=example.com@em123.sendgrid.net> SIZE=24576 BODY=8BITMIME\r\n",
    b"RCPT TO:<signup+run-8841@uncorreo.test>\r\n",
    b"DATA\r\n",
    b"BDAT 4096 LAST\r\n",
    b"NOOP\r\n",
];

/// Same limits as the appliance defaults: 25 MiB messages, 1000-octet lines.
const MAX_SIZE: usize = 25 * 1024 * 1024;
const MAX_LINE: usize = 1000;
/// A typical Ethernet TCP segment payload.
const MSS: usize = 1460;

/// An unstuffed CRLF body of about `len` octets where every 8th line
/// starts with a dot, so the decoder's stuffing path is exercised.
fn body(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 80);
    let mut n = 0u32;
    while v.len() < len {
        if n.is_multiple_of(8) {
            v.extend_from_slice(b"..and a line that starts with a dot, stuffed on the wire\r\n");
        } else {
            v.extend_from_slice(
                b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n",
            );
        }
        n += 1;
    }
    v.truncate(len - 2);
    // A cut between CR and LF would leave a bare CR, which the decoder refuses.
    while v.last().is_some_and(|&b| b == b'\r' || b == b'\n') {
        v.pop();
    }
    v.extend_from_slice(b"\r\n");
    v
}

fn decode(wire: &[u8], chunk: usize, out: &mut Vec<u8>) -> usize {
    out.clear();
    let mut d = DataDecoder::new(MAX_SIZE, MAX_LINE);
    for piece in wire.chunks(chunk) {
        let fed = d.feed(piece, out);
        if fed.done {
            break;
        }
    }
    debug_assert!(d.is_done() && d.error().is_none());
    out.len()
}

fn commands(c: &mut Criterion) {
    for l in LINES {
        assert!(parse_command(l).is_ok(), "{}", String::from_utf8_lossy(l));
    }
    let mut g = c.benchmark_group("parse_command");
    g.throughput(Throughput::Elements(LINES.len() as u64));
    g.bench_function("mix_of_6_lines", |b| {
        b.iter(|| {
            for l in LINES {
                black_box(parse_command(black_box(l)).ok());
            }
        })
    });
    g.finish();
}

fn data(c: &mut Criterion) {
    let mut g = c.benchmark_group("data_decoder");
    for (name, len) in [("4KiB", 4096), ("1MiB", 1024 * 1024)] {
        let plain = body(len);
        let wire = dot_stuff(&plain);
        let mut out = Vec::with_capacity(len);
        // Guard: the decoder must give back exactly the original body.
        decode(&wire, MSS, &mut out);
        assert_eq!(out, plain);
        g.throughput(Throughput::Bytes(wire.len() as u64));
        for (how, chunk) in [("one_chunk", wire.len()), ("mss_1460", MSS)] {
            g.bench_with_input(BenchmarkId::new(how, name), &wire, |b, wire| {
                b.iter(|| decode(black_box(wire), chunk, &mut out))
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("dot_stuff");
    for (name, len) in [("4KiB", 4096), ("1MiB", 1024 * 1024)] {
        let plain = body(len);
        let mut out = Vec::with_capacity(len);
        g.throughput(Throughput::Bytes(plain.len() as u64));
        g.bench_with_input(BenchmarkId::new("stuff", name), &plain, |b, plain| {
            b.iter(|| dot_stuff(black_box(plain)))
        });
        g.bench_with_input(
            BenchmarkId::new("round_trip_mss_1460", name),
            &plain,
            |b, plain| b.iter(|| decode(&dot_stuff(black_box(plain)), MSS, &mut out)),
        );
    }
    g.finish();
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
    targets = commands, data
}
criterion_main!(benches);
