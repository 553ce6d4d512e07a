//! One-time code candidates and their scores.
//!
//! A candidate is a word (or a run of digit groups) shaped like a code:
//! 4–10 digits, two digit groups joined by one space or hyphen (`718-204`,
//! `918 273`), single digits spaced out (`3 9 1 6 4 7`), a service prefix
//! (`G-482913`), or upper-case letters and digits with at least one of each
//! (`K7QM2X`, `ABX-92K`). Its score adds evidence (code words before or after
//! it, on the line or the lines around; standing alone; emphasis; the
//! subject) and subtracts decoy evidence (order/invoice/phone/zip/meeting
//! words next to it, currency, month names, years, `+`, `#`, `%`, masks).
//! Each candidate looks at a fixed window of words, so the cost is linear.

use super::doc::Line;
use super::words::{has_currency_sign, hint, Hint, Vocabulary};

/// Lowest score that counts as a code.
pub const THRESHOLD: i32 = 25;
/// Candidates above the threshold kept per body; a body of nothing but
/// hinted numbers stops here.
const MAX_CANDIDATES: usize = 2000;
/// Words looked at before a candidate for a code word.
const WINDOW_BEFORE: usize = 10;
/// Words looked at after a candidate for a code word.
const WINDOW_AFTER: usize = 6;

/// A scored candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// What to type: digits and letters only (`718204`, `482913` for `G-482913`).
    pub code: String,
    /// As written (`718-204`, `G-482913`, `3 9 1 6 4 7`).
    pub original: String,
    /// Evidence minus decoy evidence, in tenths.
    pub score: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Digits(usize),
    Split,
    Spaced,
    Prefixed,
    Alphanumeric,
}

/// A word of a line: byte range and the punctuation around its core.
#[derive(Debug, Clone, Copy)]
struct Word<'a> {
    start: usize,
    end: usize,
    raw: &'a str,
    core: &'a str,
    pre: &'a str,
    post: &'a str,
}

fn words(text: &str) -> Vec<Word<'_>> {
    let mut out = Vec::new();
    words_into(text, &mut out);
    out
}

/// [`words`] into `out` (cleared first), so a scan over many lines reuses
/// one vector: an allocation per line cost more than splitting the line.
fn words_into<'t>(text: &'t str, out: &mut Vec<Word<'t>>) {
    out.clear();
    // An ASCII byte is its own char (whitespace as `char::is_whitespace`
    // says); only the rest is decoded.
    let ascii_separator = |b: u8| matches!(b, b'\t'..=b'\r' | b' ' | b':');
    let separator_at = |i: usize| match text.as_bytes().get(i) {
        Some(&b) if b.is_ascii() => ascii_separator(b).then_some(1),
        Some(_) => text
            .get(i..)
            .and_then(|t| t.chars().next())
            .filter(|c| c.is_whitespace())
            .map(char::len_utf8),
        None => None,
    };
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(width) = separator_at(i) {
            i += width;
            continue;
        }
        let start = i;
        // To the next separator: ASCII word bytes are skipped in blocks.
        loop {
            let rest = bytes.get(i..).unwrap_or_default();
            i += super::first_byte(rest, word_end).unwrap_or(rest.len());
            match bytes.get(i) {
                Some(b) if !b.is_ascii() && separator_at(i).is_none() => {
                    i += text
                        .get(i..)
                        .and_then(|t| t.chars().next())
                        .map_or(1, char::len_utf8);
                }
                _ => break,
            }
        }
        out.push(word(text, start, i));
    }
}

/// Where an ASCII word stops: a separator of [`words`] (tab to CR, space,
/// colon) or a non-ASCII byte. Written without branches or a lookup mask so
/// [`super::first_byte`]'s block test compiles to vector compares (a
/// `matches!` over ranges did not, and was most of a summary's code scan).
fn word_end(b: u8) -> bool {
    (b.wrapping_sub(b'\t') < 5) | (b == b' ') | (b == b':') | (b >= 0x80)
}

fn word(text: &str, start: usize, end: usize) -> Word<'_> {
    let raw = text.get(start..end).unwrap_or_default();
    let not_alphanumeric = |c: char| !c.is_alphanumeric();
    let pre_len = raw.len() - raw.trim_start_matches(not_alphanumeric).len();
    let core = raw
        .get(pre_len..)
        .unwrap_or_default()
        .trim_end_matches(not_alphanumeric);
    Word {
        start,
        end,
        raw,
        core,
        pre: raw.get(..pre_len).unwrap_or_default(),
        post: raw.get(pre_len + core.len()..).unwrap_or_default(),
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The shape of a single word's core, if it is code-shaped.
fn shape(core: &str) -> Option<Shape> {
    let len = core.len();
    if all_digits(core) {
        return (4..=10).contains(&len).then_some(Shape::Digits(len));
    }
    if !(4..=11).contains(&len) || !core.is_ascii() {
        return None;
    }
    if let Some((a, b)) = core.split_once('-') {
        if all_digits(a) && all_digits(b) {
            let ok = a.len() >= 2 && b.len() >= 2 && (4..=10).contains(&(a.len() + b.len()));
            return ok.then_some(Shape::Split);
        }
        if (1..=3).contains(&a.len())
            && a.bytes().all(|c| c.is_ascii_uppercase())
            && all_digits(b)
            && (4..=8).contains(&b.len())
        {
            return Some(Shape::Prefixed);
        }
    }
    let hyphens = core.bytes().filter(|&c| c == b'-').count();
    let alnum = len - hyphens;
    let upper_or_digit = core
        .bytes()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'-');
    let digits = core.bytes().filter(u8::is_ascii_digit).count();
    let letters = core.bytes().filter(u8::is_ascii_uppercase).count();
    let masked = core.bytes().filter(|&c| c == b'X').count() == letters;
    let hyphen_ok =
        hyphens == 0 || (hyphens == 1 && !core.starts_with('-') && !core.ends_with('-'));
    (upper_or_digit
        && hyphen_ok
        && (4..=10).contains(&alnum)
        && digits >= 1
        && letters >= 1
        && !masked)
        .then_some(Shape::Alphanumeric)
}

/// Context a candidate is scored in.
pub struct Context<'a> {
    /// Lines of the body (or the subject as one line).
    pub lines: &'a [Line],
    /// The subject holds a code word.
    pub subject_hinted: bool,
    /// These lines are the subject.
    pub is_subject: bool,
}

/// The candidates in `ctx.lines` that score at least [`THRESHOLD`], in order.
pub fn candidates(ctx: &Context<'_>, vocabulary: &mut Vocabulary) -> Vec<Candidate> {
    let mut out = Vec::new();
    let mut ws = Vec::new();
    for (index, line) in ctx.lines.iter().enumerate() {
        if !super::any_byte(line.text.as_bytes(), |b| b.is_ascii_digit()) {
            continue;
        }
        words_into(&line.text, &mut ws);
        let mut i = 0;
        while i < ws.len() {
            if out.len() >= MAX_CANDIDATES {
                return out;
            }
            let (span, found) = candidate_at(&line.text, &ws, i);
            if let Some((shape, end)) = found {
                let score = score(ctx, vocabulary, index, &ws, i, end, shape);
                if score < THRESHOLD {
                    i += span.max(1);
                    continue;
                }
                let original = line
                    .text
                    .get(ws[i].start + ws[i].pre.len()..ws[end - 1].end - ws[end - 1].post.len())
                    .unwrap_or_default()
                    .to_owned();
                out.push(Candidate {
                    code: normalise(&original, shape),
                    original,
                    score,
                });
            }
            i += span.max(1);
        }
    }
    out
}

/// The candidate starting at word `i`: how many words to step over, and the
/// shape with the end word index if it is one.
fn candidate_at(text: &str, ws: &[Word<'_>], i: usize) -> (usize, Option<(Shape, usize)>) {
    let w = ws[i];
    let plain_digits = |w: &Word<'_>| w.pre.is_empty() && all_digits(w.core) && w.raw.is_ascii();
    if plain_digits(&w) {
        // A run of digit groups separated by single spaces.
        let mut j = i + 1;
        while j < ws.len()
            && ws[j - 1].post.is_empty()
            && plain_digits(&ws[j])
            && text.get(ws[j - 1].end..ws[j].start) == Some(" ")
        {
            j += 1;
        }
        let run = &ws[i..j];
        if run.len() >= 2 {
            let total: usize = run.iter().map(|w| w.core.len()).sum();
            if run.iter().all(|w| w.core.len() == 1) {
                let ok = (4..=10).contains(&run.len());
                return (run.len(), ok.then_some((Shape::Spaced, j)));
            }
            if run.len() == 2 && run.iter().all(|w| w.core.len() >= 2) && (4..=10).contains(&total)
            {
                return (2, Some((Shape::Split, j)));
            }
            if run.len() == 2 {
                // Two groups too long to be one code: each on its own.
                return (1, shape(w.core).map(|s| (s, i + 1)));
            }
            // Three or more groups: a phone number, a card, a meeting ID.
            return (run.len(), None);
        }
    }
    (1, shape(w.core).map(|s| (s, i + 1)))
}

fn normalise(original: &str, shape: Shape) -> String {
    match shape {
        Shape::Prefixed => original
            .split_once('-')
            .map(|(_, digits)| digits.to_owned())
            .unwrap_or_default(),
        _ => original
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect(),
    }
}

/// Evidence found around a candidate.
#[derive(Default)]
struct Evidence {
    code_before: Option<usize>,
    code_after: Option<usize>,
    decoy: bool,
    /// A decoy word further away in the window.
    far_decoy: bool,
    weak: bool,
    month: bool,
    currency: bool,
}

fn look(
    vocabulary: &mut Vocabulary,
    ws: &[Word<'_>],
    indices: impl Iterator<Item = usize>,
    before: bool,
    ev: &mut Evidence,
) {
    let mut dist = 0;
    let limit = if before { WINDOW_BEFORE } else { WINDOW_AFTER };
    // Fillers do not count towards the window, so bound the words inspected too.
    for k in indices.take(4 * limit) {
        let (hint, filler) = vocabulary.lookup(ws[k].raw);
        if filler {
            continue;
        }
        dist += 1;
        if dist > limit {
            break;
        }
        match hint {
            Hint::Code => {
                let slot = if before {
                    &mut ev.code_before
                } else {
                    &mut ev.code_after
                };
                if slot.is_none() {
                    *slot = Some(dist);
                }
            }
            Hint::Decoy if dist <= if before { 2 } else { 1 } => ev.decoy = true,
            Hint::Decoy => ev.far_decoy = true,
            Hint::SoftDecoy if dist == 1 && before => ev.decoy = true,
            Hint::Weak => ev.weak = true,
            Hint::Month if dist <= 2 => ev.month = true,
            Hint::Currency if dist == 1 => ev.currency = true,
            _ => {}
        }
    }
}

/// Bytes of a neighbouring line looked at for its hints.
const NEIGHBOUR_BYTES: usize = 240;

/// What a neighbouring line says.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct LineHints {
    code: bool,
    /// A decoy word in a short label line ("Order number:", "Meeting ID:");
    /// in a sentence a decoy word is usually just a noun ("…your account:").
    decoy_label: bool,
    weak: bool,
}

/// [`line_hints`] of line `index`, remembered: consecutive candidates ask
/// about the same few neighbouring lines.
fn neighbour(
    vocabulary: &mut Vocabulary,
    ctx: &Context<'_>,
    index: usize,
    from_end: bool,
) -> LineHints {
    let key = (index, from_end);
    if let Some(h) = vocabulary.lines.get(&key) {
        return *h;
    }
    let h = line_hints(vocabulary, ctx.lines.get(index), from_end);
    if vocabulary.lines.len() >= 64 {
        vocabulary.lines.clear();
    }
    vocabulary.lines.insert(key, h);
    h
}

/// Code, decoy and weak words among the last (or first) few words of a
/// neighbouring line; only a bounded end of it is read.
fn line_hints(vocabulary: &mut Vocabulary, line: Option<&Line>, from_end: bool) -> LineHints {
    let mut out = LineHints::default();
    let Some(text) = line.map(|l| l.text.as_str()) else {
        return out;
    };
    let part = if from_end {
        let mut from = text.len().saturating_sub(NEIGHBOUR_BYTES);
        while !text.is_char_boundary(from) {
            from += 1;
        }
        text.get(from..).unwrap_or_default()
    } else {
        crate::text::prefix(text, NEIGHBOUR_BYTES)
    };
    let ws = words(part);
    let pick: Box<dyn Iterator<Item = &Word<'_>>> = if from_end {
        Box::new(ws.iter().rev())
    } else {
        Box::new(ws.iter())
    };
    let mut decoy = false;
    let mut count = 0;
    for w in pick {
        let (hint, filler) = vocabulary.lookup(w.raw);
        if filler {
            continue;
        }
        if count == 8 {
            break;
        }
        count += 1;
        match hint {
            Hint::Code => out.code = true,
            Hint::Decoy => decoy = true,
            Hint::Weak => out.weak = true,
            _ => {}
        }
    }
    out.decoy_label = decoy && count <= 4;
    out
}

fn score(
    ctx: &Context<'_>,
    vocabulary: &mut Vocabulary,
    line_index: usize,
    ws: &[Word<'_>],
    first: usize,
    end: usize,
    shape: Shape,
) -> i32 {
    let line = &ctx.lines[line_index];
    let mut ev = Evidence::default();
    look(vocabulary, ws, (0..first).rev(), true, &mut ev);
    look(vocabulary, ws, end..ws.len(), false, &mut ev);
    let standalone = first == 0 && end == ws.len();
    let (w0, wl) = (ws[first], ws[end - 1]);
    let mut s: i32 = match shape {
        Shape::Digits(6) => 10,
        Shape::Digits(7 | 8) => 5,
        Shape::Digits(4 | 5) => 0,
        Shape::Digits(_) => -5,
        Shape::Split | Shape::Spaced => 10,
        Shape::Prefixed => 20,
        Shape::Alphanumeric => -5,
    };
    let code_near = match (ev.code_before, ev.code_after) {
        (Some(b), Some(a)) => (35 - 2 * b as i32).max(30 - 2 * a as i32),
        (Some(b), None) => 35 - 2 * b as i32,
        (None, Some(a)) => 30 - 2 * a as i32,
        (None, None) => 0,
    };
    let mut evidence = code_near > 0;
    s += code_near;
    if code_near == 0 && !ctx.is_subject {
        // The lines around: "Your code is below:" / the code / "It expires…".
        let mut prev_code = false;
        let mut prev_decoy = false;
        let mut weak = false;
        for back in 1..=2 {
            let Some(i) = line_index.checked_sub(back) else {
                break;
            };
            let h = neighbour(vocabulary, ctx, i, true);
            if back == 1 {
                prev_decoy |= h.decoy_label;
            }
            prev_code |= h.code;
            weak |= h.weak;
        }
        let next = neighbour(vocabulary, ctx, line_index + 1, false);
        weak |= next.weak;
        if prev_decoy && standalone {
            s -= 40;
        } else if prev_code {
            s += if standalone { 30 } else { 8 };
            evidence = true;
        } else if next.code && !next.decoy_label {
            s += if standalone { 25 } else { 8 };
            evidence = true;
        }
        ev.weak |= weak;
    }
    if ev.weak {
        s += 10;
    }
    if standalone {
        s += 15;
    }
    let overlaps = line
        .emphasis
        .iter()
        .any(|&(a, b)| a < wl.end && w0.start < b);
    if overlaps {
        s += 15;
    }
    if ctx.is_subject {
        s += 15;
    }
    if ctx.subject_hinted {
        s += 5;
        evidence = true;
    }
    if shape == Shape::Alphanumeric && !evidence {
        s -= 20;
    }
    // Decoys.
    if ev.decoy {
        s -= 60;
    } else if ev.far_decoy && code_near == 0 {
        s -= 15;
    }
    let is_year = matches!(shape, Shape::Digits(4))
        && w0
            .core
            .parse::<u32>()
            .is_ok_and(|y| (1900..=2099).contains(&y));
    if is_year {
        s -= 25;
        if ev.month {
            s -= 40;
        }
    }
    if ev.currency || has_currency_sign(w0.pre) || has_currency_sign(wl.post) {
        s -= 60;
    }
    if w0.pre.contains('+') {
        s -= 60;
    }
    if w0.pre.contains('#') || w0.pre.contains('№') {
        s -= 30;
    }
    if wl.post.contains('%') {
        s -= 60;
    }
    if w0.pre.contains(['*', '•', '·']) {
        s -= 40;
    }
    if let Some(prev) = first.checked_sub(1).map(|p| ws[p]) {
        // `(555) 010-4477`, `+34 612…`: the group before makes it a phone number.
        if all_digits(prev.core) && (prev.pre.contains(['(', '+']) || prev.post.contains(')')) {
            s -= 60;
        }
        // `CA 94107`: a state code before five digits is a zip code.
        if matches!(shape, Shape::Digits(5))
            && prev.core.len() == 2
            && prev.core.bytes().all(|c| c.is_ascii_uppercase())
        {
            s -= 40;
        }
    }
    if shape == Shape::Prefixed {
        let prefix = w0.core.split('-').next().unwrap_or_default();
        if matches!(hint(prefix), Hint::Decoy) {
            s -= 60;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn best(text: &str) -> Option<String> {
        let lines: Vec<Line> = super::super::doc::Doc::from_text(text).lines;
        let ctx = Context {
            lines: &lines,
            subject_hinted: false,
            is_subject: false,
        };
        let mut c = candidates(&ctx, &mut Vocabulary::default());
        c.retain(|c| c.score >= THRESHOLD);
        c.sort_by_key(|c| std::cmp::Reverse(c.score));
        c.first().map(|c| c.code.clone())
    }

    #[test]
    fn shapes() {
        assert_eq!(shape("482913"), Some(Shape::Digits(6)));
        assert_eq!(shape("718-204"), Some(Shape::Split));
        assert_eq!(shape("G-482913"), Some(Shape::Prefixed));
        assert_eq!(shape("K7QM2X"), Some(Shape::Alphanumeric));
        assert_eq!(shape("ABX-92K"), Some(Shape::Alphanumeric));
        assert_eq!(shape("XXXX4821"), None);
        assert_eq!(shape("2026-11-24"), None);
        assert_eq!(shape("abc123"), None);
        assert_eq!(shape("123"), None);
        assert_eq!(shape("12345678901"), None);
    }

    #[test]
    fn codes_by_context() {
        assert_eq!(best("Your code is 482913.").as_deref(), Some("482913"));
        assert_eq!(
            best("Your confirmation code is below\n718-204").as_deref(),
            Some("718204")
        );
        assert_eq!(best("Tu código: 3 9 1 6 4 7").as_deref(), Some("391647"));
        assert_eq!(
            best("482913 is your verification code").as_deref(),
            Some("482913")
        );
        assert_eq!(best("Order number: 123456"), None);
        assert_eq!(best("Código postal: 28013"), None);
        assert_eq!(best("Call us at +1 (555) 010-4477 for your code"), None);
        assert_eq!(best("Your code: 1999 EUR"), None);
        assert_eq!(best("Meeting ID: 845 2291 0032, code below"), None);
    }

    use proptest::prelude::*;

    proptest::proptest! {
        /// Words split on ASCII bytes as splitting on decoded chars does.
        #[test]
        fn words_split_as_char_by_char_would(
            text in proptest::collection::vec(
                proptest::sample::select(vec!["a", "7", ":", " ", "\t", "\u{b}", "\r", "\u{8}", "\u{e}", "\u{1c}", "\u{7f}", "\u{80}", "\u{a0}", "\u{3000}", "é", "-", ";", "9"]),
                0..30,
            ).prop_map(|v: Vec<&str>| v.concat()),
        ) {
            let by_char: Vec<(usize, usize)> = {
                let mut out = Vec::new();
                let mut start = None;
                for (i, c) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
                    match (c.is_whitespace() || c == ':', start) {
                        (true, Some(s)) => {
                            out.push((s, i));
                            start = None;
                        }
                        (false, None) => start = Some(i),
                        _ => {}
                    }
                }
                out
            };
            let found: Vec<(usize, usize)> = words(&text).iter().map(|w| (w.start, w.end)).collect();
            proptest::prop_assert_eq!(found, by_char);
        }

        /// A vector reused from an earlier line holds exactly the words of
        /// the new line, as a fresh one would.
        #[test]
        fn a_reused_word_vector_holds_only_the_new_line(
            lines in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::sample::select(vec!["ab", "7", "12345", " ", ":", "\u{a0}", "é", "(x)", "-"]),
                    0..20,
                ).prop_map(|v: Vec<&str>| v.concat()),
                1..6,
            ),
        ) {
            fn shape<'t>(w: &Word<'t>) -> (usize, usize, &'t str, &'t str, &'t str, &'t str) {
                (w.start, w.end, w.raw, w.core, w.pre, w.post)
            }
            let mut reused = Vec::new();
            for line in &lines {
                words_into(line, &mut reused);
                let fresh: Vec<_> = words(line).iter().map(shape).collect();
                let got: Vec<_> = reused.iter().map(shape).collect();
                proptest::prop_assert_eq!(got, fresh);
            }
        }
    }
}
