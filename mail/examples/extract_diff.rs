//! Prints the codes (with scores) found in 20,000 generated bodies, the same
//! bodies on every run. A change meant to make extraction cheaper without
//! changing what it finds must print the same bytes before and after:
//!
//! ```sh
//! cargo run --release -p uncorreo-mail --example extract_diff > after.txt
//! git stash; cargo run --release -p uncorreo-mail --example extract_diff > before.txt; git stash pop
//! cmp before.txt after.txt
//! ```
const WORDS: [&str; 66] = [
    "code",
    "Code:",
    "verification",
    "is",
    "your",
    "the",
    "order",
    "Order",
    "number:",
    "#",
    "invoice",
    "phone",
    "call",
    "expires",
    "in",
    "10",
    "minutes.",
    "482913",
    "718-204",
    "918",
    "273",
    "G-482913",
    "K7QM2X",
    "ABX-92K",
    "3",
    "9",
    "1",
    "6",
    "4",
    "7",
    "2026",
    "December",
    "$49.99",
    "+34",
    "612",
    "(555)",
    "010-4477",
    "código",
    "Ihr",
    "Bestätigungscode",
    "lautet",
    "é",
    "—",
    "0123456789",
    "abc",
    "2FA",
    "PIN",
    "one-time",
    "OTP",
    "meeting",
    "ID:",
    "zip",
    "•",
    "*",
    "50%",
    "Use",
    "this",
    "to",
    "sign",
    "in",
    ":",
    "ref",
    "tracking",
    "12345678901",
    "«7341»",
    "https://example.com/v?c=482913",
];

fn main() {
    // A fixed linear congruential sequence: the same bodies on every run.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(state >> 33).unwrap_or(0) % n
    };
    for case in 0..20_000 {
        let mut text = String::new();
        for _ in 0..1 + next(30) {
            // Now and then a line longer than the neighbour window.
            let words = if next(8) == 0 {
                40 + next(80)
            } else {
                next(16)
            };
            for k in 0..words {
                if k > 0 {
                    text.push_str([" ", " ", " ", "  ", ": ", "\t"][next(6)]);
                }
                text.push_str(WORDS[next(WORDS.len())]);
            }
            text.push('\n');
            if next(5) == 0 {
                text.push('\n');
            }
        }
        let subject = if next(3) == 0 {
            "Your verification code"
        } else {
            "Hello"
        };
        let html = if next(4) == 0 {
            format!("<p>{text}</p><b>{}</b>", WORDS[next(WORDS.len())])
        } else {
            String::new()
        };
        let found = uncorreo_mail::extract::extract(subject, &text, &html);
        println!("{case} {:?}", found.codes);
    }
}
