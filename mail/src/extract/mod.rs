//! Finds what a CI job or an agent waits for in a message: one-time codes
//! and the links a sign-up, sign-in, reset or invite flow sends.
//!
//! The extractor works on a normalised view of the message ([`doc`]): the
//! text part and the HTML part as lines of visible text, plus the subject.
//! [`codes`] scores code-shaped candidates by the words around them and
//! penalises decoys; [`links`] classifies every link target by purpose.
//! Pure functions, bounded input ([`MAX_SCAN`] bytes per body) and output,
//! linear time.

pub mod codes;
pub mod doc;
pub mod links;
mod words;

use serde::{Deserialize, Serialize};

pub use links::LinkKind;

/// Version of the extraction rules. Stored summaries carry the version they
/// were derived with; a newer extractor re-derives them from the raw bytes.
pub const VERSION: u16 = 2;
/// Most action links kept in a summary.
pub const MAX_LINKS: usize = 8;
/// Most codes kept per message.
pub const MAX_CODES: usize = 4;
/// Most classified links in the message view.
pub const MAX_VIEW_LINKS: usize = 100;
/// Longest link kept, in bytes.
pub const MAX_LINK_LEN: usize = 2048;
/// Bytes of each body scanned; a 25 MB body is not searched end to end.
pub const MAX_SCAN: usize = 1024 * 1024;
/// Bytes of the subject scanned.
const MAX_SUBJECT: usize = 1024;

/// A one-time code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Code {
    /// What to type: letters and digits only (`718204` for `718-204`,
    /// `482913` for `G-482913`).
    pub code: String,
    /// As written in the message.
    pub original: String,
    /// How strongly the message says this is the code (higher is surer).
    pub score: i32,
}

/// A link target and what it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Link {
    /// The URL exactly as written (tracking redirects are not followed).
    pub url: String,
    /// Its purpose.
    pub kind: LinkKind,
    /// Anchor text, or an image's alt text; empty for a URL written in the text.
    pub text: String,
}

/// Everything extracted from one message.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Extraction {
    /// Codes, best first (at most [`MAX_CODES`]).
    pub codes: Vec<Code>,
    /// Every link target in order of appearance, classified (at most [`MAX_VIEW_LINKS`]).
    pub links: Vec<Link>,
    /// URLs of the action links (verify, reset, sign in, invite), best first
    /// (at most [`MAX_LINKS`]).
    pub action_links: Vec<String>,
}

impl Extraction {
    /// The codes as typed, best first.
    pub fn code_strings(&self) -> Vec<String> {
        self.codes.iter().map(|c| c.code.clone()).collect()
    }
}

std::thread_local! {
    /// What words say, kept across the messages a thread summarises: mail
    /// repeats the same few thousand words, and classifying each again per
    /// message was most of a short body's code scan. The memo is bounded
    /// (`words::Vocabulary`), and a word's meaning never depends on the
    /// message it is in.
    static VOCABULARY: std::cell::RefCell<words::Vocabulary> =
        std::cell::RefCell::new(words::Vocabulary::default());
}

/// Extract from a subject and the text and HTML bodies (either may be empty).
pub fn extract(subject: &str, text: &str, html: &str) -> Extraction {
    let subject_line = doc::Line {
        text: crate::text::prefix(subject, MAX_SUBJECT)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        emphasis: Vec::new(),
    };
    let subject_lines = [subject_line];
    let text_doc = doc::Doc::from_text(crate::text::prefix(text, MAX_SCAN));
    let html_doc = doc::Doc::from_html(crate::text::prefix(html, MAX_SCAN));
    let subject_hinted = subject_lines[0]
        .text
        .split(|c: char| c.is_whitespace() || c == ':')
        .any(|w| words::hint(w) == words::Hint::Code);

    let mut found: Vec<codes::Candidate> = Vec::new();
    VOCABULARY.with_borrow_mut(|vocabulary| {
        let sources: [(&[doc::Line], bool); 3] = [
            (&subject_lines, true),
            (&html_doc.lines, false),
            (&text_doc.lines, false),
        ];
        for (lines, is_subject) in sources {
            let ctx = codes::Context {
                lines,
                subject_hinted: subject_hinted && !is_subject,
                is_subject,
            };
            vocabulary.next_body();
            found.extend(codes::candidates(&ctx, vocabulary));
        }
    });
    Extraction {
        codes: best_codes(found),
        ..classify_links(&[&html_doc, &text_doc])
    }
}

/// Where the first byte of `bytes` that is `wanted` is: whole 32-byte blocks
/// are tested without an early exit inside them, which the compiler turns
/// into vector compares (byte-at-a-time scans were a visible share of a
/// summary's CPU).
pub(crate) fn first_byte(bytes: &[u8], wanted: impl Fn(u8) -> bool + Copy) -> Option<usize> {
    let mut at = 0;
    for block in bytes.chunks(32) {
        if block.iter().fold(false, |found, &b| found | wanted(b)) {
            return block.iter().position(|&b| wanted(b)).map(|p| at + p);
        }
        at += block.len();
    }
    None
}

/// Whether any byte of `bytes` is `wanted` (see [`first_byte`]).
pub(crate) fn any_byte(bytes: &[u8], wanted: impl Fn(u8) -> bool + Copy) -> bool {
    first_byte(bytes, wanted).is_some()
}

/// Merge candidates by what is typed, keep those above the threshold, best first.
fn best_codes(found: Vec<codes::Candidate>) -> Vec<Code> {
    let mut merged: Vec<(usize, codes::Candidate)> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (order, c) in found.into_iter().enumerate() {
        match at.get(&c.code).and_then(|&i| merged.get_mut(i)) {
            Some((_, m)) => {
                if c.score > m.score {
                    m.score = c.score;
                    m.original = c.original;
                }
            }
            None => {
                at.insert(c.code.clone(), merged.len());
                merged.push((order, c));
            }
        }
    }
    merged.retain(|(_, c)| c.score >= codes::THRESHOLD);
    merged.sort_by(|(oa, a), (ob, b)| b.score.cmp(&a.score).then(oa.cmp(ob)));
    merged
        .into_iter()
        .take(MAX_CODES)
        .map(|(_, c)| Code {
            code: c.code,
            original: c.original,
            score: c.score,
        })
        .collect()
}

fn classify_links(docs: &[&doc::Doc]) -> Extraction {
    let mut all: Vec<links::Classified> = Vec::new();
    for d in docs {
        for raw in &d.links {
            let Some(c) = links::classify(d, raw) else {
                continue;
            };
            match all.iter().position(|a| a.url == c.url) {
                Some(at) => {
                    let a = &mut all[at];
                    let better = (c.kind.is_action() && !a.kind.is_action())
                        || (c.kind.is_action() == a.kind.is_action()
                            && c.confidence > a.confidence);
                    if better {
                        let text = if c.text.is_empty() {
                            a.text.clone()
                        } else {
                            c.text.clone()
                        };
                        *a = links::Classified { text, ..c };
                    } else if a.text.is_empty() {
                        a.text = c.text;
                    }
                }
                None if all.len() < MAX_VIEW_LINKS => all.push(c),
                None => {}
            }
        }
    }
    let mut actions: Vec<(usize, &links::Classified)> = all
        .iter()
        .enumerate()
        .filter(|(_, c)| c.kind.is_action())
        .collect();
    actions.sort_by_key(|(order, c)| (std::cmp::Reverse((c.confidence, c.button)), *order));
    let action_links = actions
        .iter()
        .take(MAX_LINKS)
        .map(|(_, c)| c.url.clone())
        .collect();
    Extraction {
        codes: Vec::new(),
        links: all
            .into_iter()
            .map(|c| Link {
                url: c.url,
                kind: c.kind,
                text: c.text,
            })
            .collect(),
        action_links,
    }
}

/// Extract from a parsed message: its first text part and first HTML part.
pub fn extract_parsed(msg: &mail_parser::Message<'_>) -> Extraction {
    let subject = msg.subject().unwrap_or_default();
    let text = match msg.text_part(0).map(|p| &p.body) {
        Some(mail_parser::PartType::Text(t)) => t.as_ref(),
        _ => "",
    };
    let html = match msg.html_part(0).map(|p| &p.body) {
        Some(mail_parser::PartType::Html(h)) => h.as_ref(),
        _ => "",
    };
    extract(subject, text, html)
}

/// Extract from raw message bytes. Never panics: unparseable input gives nothing.
pub fn extract_message(raw: &[u8]) -> Extraction {
    std::panic::catch_unwind(|| {
        mail_parser::MessageParser::default()
            .parse(raw)
            .map(|m| extract_parsed(&m))
            .unwrap_or_default()
    })
    .unwrap_or_default()
}

/// Action links (verify, reset, sign in, invite) in `text` and `html`, best first.
pub fn links(text: &str, html: &str) -> Vec<String> {
    extract("", text, html).action_links
}

/// One-time codes in `subject` and `text`, as typed, best first.
pub fn codes(subject: &str, text: &str) -> Vec<String> {
    extract(subject, text, "").code_strings()
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
    fn unsubscribe_is_never_an_action_link() {
        let html = r#"<a href="https://x.test/unsubscribe?token=1">Unsubscribe</a> <a href="https://x.test/verify?t=2">Verify</a>"#;
        let e = extract("", "", html);
        assert_eq!(e.action_links, vec!["https://x.test/verify?t=2"]);
        assert_eq!(e.links[0].kind, LinkKind::Unsubscribe);
    }

    #[test]
    fn codes_carry_the_original_beside_the_normalised_form() {
        let e = extract("", "Your confirmation code is below\n\n718-204\n", "");
        assert_eq!(e.codes[0].code, "718204");
        assert_eq!(e.codes[0].original, "718-204");
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
        let html = "<a href=\"https://x.test/a\">a</a>".repeat(1000);
        assert!(extract("", "", &html).links.len() <= MAX_VIEW_LINKS);
    }

    fn check(e: &Extraction) {
        assert!(e.codes.len() <= MAX_CODES);
        assert!(e.links.len() <= MAX_VIEW_LINKS);
        assert!(e.action_links.len() <= MAX_LINKS);
        for c in &e.codes {
            assert!((4..=10).contains(&c.code.len()), "{c:?}");
            assert!(c.code.bytes().all(|b| b.is_ascii_alphanumeric()), "{c:?}");
            assert!(c.score >= codes::THRESHOLD);
        }
        for url in &e.action_links {
            assert!(e.links.iter().any(|l| &l.url == url && l.kind.is_action()));
        }
    }

    /// Fragments mail is made of, so random sequences reach deep paths.
    const PIECES: &[&str] = &[
        "<a href=\"https://x.test/verify?t=1\">",
        "</a>",
        "<b>",
        "</b>",
        "<td style=\"font-size:30px\">",
        "</td>",
        "<div style=\"display:none\">",
        "</div>",
        "<p>",
        "<br>",
        "<img src=\"https://x.test/o.gif\" width=1>",
        "<!--",
        "-->",
        "<script>",
        "</script>",
        "&amp;",
        "&#x41;",
        "&nbsp;",
        "code",
        "Order",
        "PIN:",
        " ",
        "\n",
        "482913",
        "718-204",
        "3 9 1 6",
        "G-1234",
        "ABX-92K",
        "$",
        "+1",
        "#",
        "https://t.test/c/x ",
        "Unsubscribe",
        "click here",
        "Verify",
        "é",
        "\u{200c}",
        "<",
        ">",
        "\"",
        "=",
    ];

    proptest::proptest! {
        #[test]
        fn arbitrary_text_stays_within_bounds(subject in "\\PC{0,40}", text in "\\PC{0,400}", html in "\\PC{0,400}") {
            check(&extract(&subject, &text, &html));
        }

        #[test]
        fn mail_shaped_input_stays_within_bounds(picks in proptest::collection::vec(0..PIECES.len(), 0..200)) {
            let s: String = picks.iter().map(|&i| PIECES[i]).collect();
            check(&extract(&s, &s, &s));
        }

        #[test]
        fn raw_bytes_never_panic(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            check(&extract_message(&raw));
        }
    }
}
