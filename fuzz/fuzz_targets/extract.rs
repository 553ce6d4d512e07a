//! The code and link extractor (issue #21) on arbitrary subject, text and
//! HTML bodies, and on raw messages. Beyond "no panic" it checks what callers
//! rely on: output within its bounds, codes shaped like codes, and every
//! action link also in the classified list with an action kind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uncorreo_mail::extract::{self, Extraction};

fn check(e: &Extraction) {
    assert!(e.codes.len() <= extract::MAX_CODES);
    assert!(e.links.len() <= extract::MAX_VIEW_LINKS);
    assert!(e.action_links.len() <= extract::MAX_LINKS);
    for c in &e.codes {
        assert!((4..=10).contains(&c.code.len()), "{c:?}");
        assert!(c.code.bytes().all(|b| b.is_ascii_alphanumeric()), "{c:?}");
    }
    for url in &e.action_links {
        assert!(e.links.iter().any(|l| &l.url == url && l.kind.is_action()));
    }
    for l in &e.links {
        assert!(l.url.len() <= extract::MAX_LINK_LEN);
    }
}

fuzz_target!(|data: &[u8]| {
    check(&extract::extract_message(data));
    // The same bytes as subject, text and HTML, split at the first two NULs.
    let s = String::from_utf8_lossy(data);
    let mut parts = s.splitn(3, '\0');
    let subject = parts.next().unwrap_or_default();
    let text = parts.next().unwrap_or_default();
    let html = parts.next().unwrap_or(&s);
    check(&extract::extract(subject, text, html));
});
