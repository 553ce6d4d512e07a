//! Everything derived from a stored message's raw bytes: the listing summary
//! (at delivery), the parsed view (API), and link/code extraction.
//! mail-parser has panicked on hostile input before; these must not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    let summary = uncorreo_mail::summarize(raw);
    assert!(summary.links.len() <= uncorreo_mail::extract::MAX_LINKS);
    assert!(summary.codes.len() <= uncorreo_mail::extract::MAX_CODES);
    let _ = uncorreo_mail::view::parse(raw);
    let text = String::from_utf8_lossy(raw);
    let _ = uncorreo_mail::extract::links(&text, &text);
    let _ = uncorreo_mail::extract::codes(&text, &text);
});
