//! Finds what a CI job waits for in a message: verification links and
//! one-time codes. Pure functions over text, bounded in input and output.

/// Most links kept per message.
pub const MAX_LINKS: usize = 8;
/// Most codes kept per message.
pub const MAX_CODES: usize = 4;
/// Longest link kept, in bytes.
pub const MAX_LINK_LEN: usize = 2048;
/// Bytes of text scanned; a 25 MB body is not searched end to end.
pub const MAX_SCAN: usize = 256 * 1024;

/// Words in a URL that mark it as the link a sign-up or reset flow sends.
const LINK_HINTS: &[&str] = &[
    "verif",
    "confirm",
    "activat",
    "reset",
    "token",
    "magic",
    "login",
    "signin",
    "sign-in",
    "auth",
    "invite",
    "unsubscribe",
    "password",
    "code=",
    "otp",
];

/// Words that, just before a number, mark it as a one-time code.
const CODE_HINTS: &[&str] = &[
    "code",
    "otp",
    "pin",
    "passcode",
    "password",
    "token",
    "verification",
    "código",
    "codigo",
];

/// Links that look like verification / sign-in / reset links, in order of
/// appearance, deduplicated. Scans `text` and `html` (HTML attribute values
/// are found the same way, since `href="…"` contains the URL verbatim).
pub fn links(text: &str, html: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for source in [text, html] {
        let source = crate::text::prefix(source, MAX_SCAN);
        let mut rest = source;
        while let Some(pos) = find_url_start(rest) {
            let tail = &rest[pos..];
            let end = tail
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
                .unwrap_or(tail.len());
            let url = tail[..end].trim_end_matches(['.', ',', ';', ')', ']']);
            let url = url.replace("&amp;", "&");
            let lower = url.to_ascii_lowercase();
            if url.len() <= MAX_LINK_LEN
                && LINK_HINTS.iter().any(|h| lower.contains(h))
                && !out.contains(&url)
            {
                out.push(url);
                if out.len() == MAX_LINKS {
                    return out;
                }
            }
            rest = &tail[end.max(1).min(tail.len())..];
        }
    }
    out
}

fn find_url_start(s: &str) -> Option<usize> {
    match (s.find("https://"), s.find("http://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One-time codes: runs of 4–8 digits (or 6–8 upper-case letters and digits
/// with at least two digits) that stand alone and come within a few words
/// after a hint such as "code" or "OTP". Subject first, then text.
pub fn codes(subject: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for source in [subject, text] {
        let source = crate::text::prefix(source, MAX_SCAN);
        let bytes = source.as_bytes();
        // Every code holds a digit: jump from digit to digit instead of
        // splitting the whole text into words (most of a body has none).
        let mut from = 0;
        while let Some(d) = bytes.get(from..).and_then(find_digit) {
            let at = from + d;
            let (start, end) = word_around(source, at);
            from = end.max(at + 1);
            let Some(word) = source.get(start..end) else {
                break;
            };
            let candidate = word.trim_end_matches(['.', '!', '?']);
            if !looks_like_code(candidate) {
                continue;
            }
            let hinted = words_before(source, start, 6).any(|w| {
                let w = w.to_lowercase();
                CODE_HINTS.iter().any(|h| w.contains(h))
            });
            if hinted && !out.iter().any(|c| c == candidate) {
                out.push(candidate.to_owned());
                if out.len() == MAX_CODES {
                    return out;
                }
            }
        }
    }
    out
}

/// Position of the first ASCII digit, eight bytes at a time: XOR with '0'
/// maps digits to 0..=9, and the classic "has a byte below n" test (valid
/// for n <= 128) finds a word holding one.
fn find_digit(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_le_bytes(w) ^ (ONES * u64::from(b'0'));
        if x.wrapping_sub(ONES * 10) & !x & HIGHS != 0 {
            return c.iter().position(u8::is_ascii_digit).map(|p| i + p);
        }
        i += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(u8::is_ascii_digit)
        .map(|p| i + p)
}

/// Word separators: whitespace (Unicode) and `:,;()"`.
fn is_sep(c: char) -> bool {
    c.is_whitespace() || matches!(c, ':' | ',' | ';' | '(' | ')' | '"')
}

/// Byte range of the word containing byte `at` (an ASCII digit, so a char
/// boundary).
fn word_around(s: &str, at: usize) -> (usize, usize) {
    let start = s
        .get(..at)
        .and_then(|h| h.char_indices().rev().find(|(_, c)| is_sep(*c)))
        .map(|(i, c)| i + c.len_utf8())
        .unwrap_or(0);
    let end = s
        .get(at..)
        .and_then(|t| t.char_indices().find(|(_, c)| is_sep(*c)))
        .map(|(i, _)| at + i)
        .unwrap_or(s.len());
    (start, end)
}

/// Up to `n` non-empty words ending before byte `end`, nearest first.
fn words_before(s: &str, end: usize, n: usize) -> impl Iterator<Item = &str> {
    let head = s.get(..end).unwrap_or_default();
    head.rsplit(is_sep).filter(|w| !w.is_empty()).take(n)
}

fn looks_like_code(w: &str) -> bool {
    let len = w.len();
    if w.bytes().all(|b| b.is_ascii_digit()) {
        return (4..=8).contains(&len);
    }
    let digits = w.bytes().filter(u8::is_ascii_digit).count();
    (6..=8).contains(&len)
        && digits >= 2
        && w.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_verification_link_in_text_and_html_once() {
        let text = "Welcome! Confirm here: https://app.example.com/verify?token=abc123.\nThanks";
        let html = r#"<a href="https://app.example.com/verify?token=abc123">x</a> <a href="https://example.com/about">about</a>"#;
        assert_eq!(
            links(text, html),
            vec!["https://app.example.com/verify?token=abc123"]
        );
    }

    #[test]
    fn html_entities_in_links_are_decoded() {
        let html = r#"<a href="https://x.test/reset?a=1&amp;b=2">"#;
        assert_eq!(links("", html), vec!["https://x.test/reset?a=1&b=2"]);
    }

    #[test]
    fn finds_hinted_codes_but_not_years_or_prices() {
        assert_eq!(codes("Your code is 482913", ""), vec!["482913"]);
        assert_eq!(codes("", "Use OTP: 7731 to sign in."), vec!["7731"]);
        assert_eq!(codes("", "Verification code: AB12CD"), vec!["AB12CD"]);
        assert!(codes("Invoice 2026", "Total 1999 EUR, order 123456").is_empty());
    }

    #[test]
    fn codes_match_the_word_window_definition() {
        // The definition: split into words, a code is hinted by one of the
        // six words before it. Checked against a direct implementation.
        fn reference(text: &str) -> Vec<String> {
            let words: Vec<&str> = text.split(is_sep).filter(|w| !w.is_empty()).collect();
            let mut out: Vec<String> = Vec::new();
            for (i, word) in words.iter().enumerate() {
                let c = word.trim_end_matches(['.', '!', '?']);
                let hinted = words[i.saturating_sub(6)..i].iter().any(|w| {
                    let w = w.to_lowercase();
                    CODE_HINTS.iter().any(|h| w.contains(h))
                });
                if looks_like_code(c)
                    && hinted
                    && !out.iter().any(|o| o == c)
                    && out.len() < MAX_CODES
                {
                    out.push(c.to_owned());
                }
            }
            out
        }
        let texts = [
            "a  b\tc\r\nd:e,f;g(h)i\"j code 1234",
            "código: 123456 und\u{a0}PIN\u{2003}7788",
            "code one two three four five six 123456 seven 654321",
            "PIN:4455, otp(9911) ab12cd AB12CD.",
            "1999 order 2020 code x1234 12345678901 code 00000000!",
            "",
        ];
        for t in texts {
            assert_eq!(codes("", t), reference(t), "{t:?}");
        }
    }

    #[test]
    fn find_digit_agrees_with_a_plain_scan() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for len in 0..200usize {
            for _ in 0..20 {
                let v: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // Mostly non-digits, including bytes just around '0'..='9'.
                        match x % 40 {
                            0 => b'0' + (x >> 8) as u8 % 10,
                            1 => b'/',
                            2 => b':',
                            _ => (x >> 16) as u8,
                        }
                    })
                    .collect();
                assert_eq!(
                    find_digit(&v),
                    v.iter().position(u8::is_ascii_digit),
                    "{v:?}"
                );
            }
        }
    }

    #[test]
    fn unicode_whitespace_separates_hint_and_code() {
        assert_eq!(codes("", "PIN\u{a0}7788"), vec!["7788"]);
    }

    #[test]
    fn output_is_bounded() {
        let text = (0..100)
            .map(|i| format!("https://x.test/verify/{i} code {:06}", i))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(links(&text, "").len(), MAX_LINKS);
        assert_eq!(codes("", &text).len(), MAX_CODES);
    }
}
