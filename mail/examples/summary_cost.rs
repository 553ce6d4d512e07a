//! Instructions per listing summary of the burst's 4 KiB message (every
//! line holds a ten-digit number, the code scanner's busiest plain-text
//! shape). Run it under callgrind with two counts and divide the difference
//! (BENCHMARKS.md, "Profile"):
//!
//! ```sh
//! cargo build --release -p uncorreo-mail --example summary_cost
//! valgrind --tool=callgrind target/release/examples/summary_cost 10
//! valgrind --tool=callgrind target/release/examples/summary_cost 1010
//! ```
fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let mut total = 0usize;
    for i in 0..count {
        let mut message = format!(
            "From: <a@b.test>\r\nTo: <rcpt@uncorreo.test>\r\nSubject: tok-{i}\r\n\
             Message-ID: <tok-{i}@bench.test>\r\nDate: Tue, 24 Nov 2026 20:00:00 +0000\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        );
        while message.len() < 4000 {
            message.push_str(
                "The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstu\r\n",
            );
        }
        let summary = uncorreo_mail::summary::summarize(message.as_bytes());
        total += std::hint::black_box(&summary).subject.len();
    }
    println!("{total}");
}
