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

#[cfg(test)]
fn words(text: &str) -> Vec<Word<'_>> {
    let mut out = Vec::new();
    words_into(text, &mut out);
    out
}

/// [`words`] into `out` (cleared first), so a scan over many lines reuses
/// one vector: an allocation per line cost more than splitting the line.
fn words_into<'t>(text: &'t str, out: &mut Vec<Word<'t>>) {
    out.clear();
    word_bounds(text, |start, end| out.push(word(text, start, end)));
}

/// Calls `found(start, end)` for each word of `text`, in order.
fn word_bounds(text: &str, mut found: impl FnMut(usize, usize)) {
    if text.is_ascii() {
        // Most lines: one byte test per byte. The general walk below starts
        // a block scan at every word, which cost several times more on
        // short words; a word still going after `SHORT_WORD` bytes (a
        // token, a base64 run, smtp-source's 79-byte lines) is finished in
        // blocks.
        const SHORT_WORD: usize = 16;
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            while bytes.get(i).is_some_and(|&b| word_end(b)) {
                i += 1;
            }
            let start = i;
            let short_end = bytes.len().min(start + SHORT_WORD);
            while i < short_end && bytes.get(i).is_some_and(|&b| !word_end(b)) {
                i += 1;
            }
            if i == short_end {
                let rest = bytes.get(i..).unwrap_or_default();
                i += super::first_byte(rest, word_end).unwrap_or(rest.len());
            }
            if start < i {
                found(start, i);
            }
        }
        return;
    }
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
        found(start, i);
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
    let (pre_len, core) = if raw.is_ascii() {
        // The same trim on bytes: for ASCII, `char::is_alphanumeric` is
        // `u8::is_ascii_alphanumeric`, and decoding chars was a tenth of a
        // number-heavy body's code scan.
        let bytes = raw.as_bytes();
        let pre_len = bytes
            .iter()
            .position(u8::is_ascii_alphanumeric)
            .unwrap_or(bytes.len());
        let core_len = bytes
            .get(pre_len..)
            .unwrap_or_default()
            .iter()
            .rposition(u8::is_ascii_alphanumeric)
            .map_or(0, |last| last + 1);
        (
            pre_len,
            raw.get(pre_len..pre_len + core_len).unwrap_or_default(),
        )
    } else {
        let not_alphanumeric = |c: char| !c.is_alphanumeric();
        let pre_len = raw.len() - raw.trim_start_matches(not_alphanumeric).len();
        let core = raw
            .get(pre_len..)
            .unwrap_or_default()
            .trim_end_matches(not_alphanumeric);
        (pre_len, core)
    };
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
            // Every shape has a digit: most words of a line are passed over
            // here without looking at their shape.
            if !ws[i].core.bytes().any(|b| b.is_ascii_digit()) {
                i += 1;
                continue;
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
#[derive(Default, Clone, Copy)]
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
    if let Some(h) = vocabulary.lines.get(index, from_end) {
        return h;
    }
    let text = ctx.lines.get(index).map_or("", |l| l.text.as_str());
    if text.len() <= NEIGHBOUR_BYTES {
        // Both ends of a short line are the whole line: one pass says both.
        let (start, end) = line_hints(vocabulary, text);
        vocabulary.lines.put(index, false, start);
        vocabulary.lines.put(index, true, end);
        return if from_end { end } else { start };
    }
    let h = if from_end {
        let mut from = text.len() - NEIGHBOUR_BYTES;
        while !text.is_char_boundary(from) {
            from += 1;
        }
        line_hints(vocabulary, text.get(from..).unwrap_or_default()).1
    } else {
        line_hints(vocabulary, crate::text::prefix(text, NEIGHBOUR_BYTES)).0
    };
    vocabulary.lines.put(index, from_end, h);
    h
}

/// Slots of [`LineMemo`]: candidates on line `i` ask about lines `i − 2`
/// to `i + 1`, so a scan in line order finds what it asked for on the
/// previous lines still there.
const LINE_MEMO_SLOTS: usize = 16;

/// The scorer's memo of [`LineHints`] by (line index, read from its end):
/// direct-mapped, so a lookup is an index and a compare, and a body of
/// many lines costs no more memory than one of a few.
#[derive(Debug, Default)]
pub(super) struct LineMemo {
    slots: [Option<(usize, bool, LineHints)>; LINE_MEMO_SLOTS],
}

impl LineMemo {
    fn slot(index: usize, from_end: bool) -> usize {
        (index * 2 + usize::from(from_end)) % LINE_MEMO_SLOTS
    }

    fn get(&self, index: usize, from_end: bool) -> Option<LineHints> {
        match self.slots[Self::slot(index, from_end)] {
            Some((i, end, h)) if i == index && end == from_end => Some(h),
            _ => None,
        }
    }

    fn put(&mut self, index: usize, from_end: bool, hints: LineHints) {
        self.slots[Self::slot(index, from_end)] = Some((index, from_end, hints));
    }

    /// Forget every line (line indices restart in the next body).
    pub(super) fn clear(&mut self) {
        self.slots = Default::default();
    }
}

/// Code, decoy and weak words among the first and among the last few
/// words of `part`, a bounded end of a neighbouring line.
/// A word of a neighbouring line, and what it says once looked up.
pub(super) struct LineWord {
    start: usize,
    end: usize,
    says: Option<(Hint, bool)>,
}

fn line_hints(vocabulary: &mut Vocabulary, part: &str) -> (LineHints, LineHints) {
    let mut words = std::mem::take(&mut vocabulary.line_words);
    words.clear();
    word_bounds(part, |start, end| {
        words.push(LineWord {
            start,
            end,
            says: None,
        });
    });
    // Each word is looked up at most once, by whichever end reaches it first.
    let mut hints_of = |order: &mut dyn Iterator<Item = &mut LineWord>| {
        let mut out = LineHints::default();
        let mut decoy = false;
        let mut count = 0;
        for w in order {
            let word = part.get(w.start..w.end).unwrap_or_default();
            let (hint, filler) = *w.says.get_or_insert_with(|| vocabulary.lookup(word));
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
    };
    let from_start = hints_of(&mut words.iter_mut());
    let from_end = hints_of(&mut words.iter_mut().rev());
    vocabulary.line_words = words;
    (from_start, from_end)
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
    let mut ev = Evidence::default();
    look(vocabulary, ws, (0..first).rev(), true, &mut ev);
    look(vocabulary, ws, end..ws.len(), false, &mut ev);
    let line = &ctx.lines[line_index];
    let candidate = Scored {
        line,
        ws,
        first,
        end,
        shape,
    };
    if ev.code_before.is_some() || ev.code_after.is_some() || ctx.is_subject {
        return candidate.score(ctx, ev, None);
    }
    // The lines around are read only when they could lift the candidate
    // over the threshold: most numbers in mail (order numbers, prices,
    // times) fall short even with the best lines around, and reading them
    // was most of a number-heavy body's summary.
    let best = candidate.score(ctx, ev, Some(Around::MOST_FAVOURABLE));
    if best < THRESHOLD {
        return best;
    }
    let around = Around::read(vocabulary, ctx, line_index);
    candidate.score(ctx, ev, Some(around))
}

/// What the lines around a candidate say (when no code word is on its own line).
#[derive(Debug, Clone, Copy)]
struct Around {
    /// The line before is a decoy label ("Order number:").
    prev_decoy: bool,
    /// One of the two lines before ends with a code word.
    prev_code: bool,
    /// The line after starts with a code word and is no decoy label.
    next_code: bool,
    /// A weak word on one of them.
    weak: bool,
}

impl Around {
    /// The lines around that score highest: [`Scored::score`] with these is
    /// at least its score with any others.
    const MOST_FAVOURABLE: Self = Self {
        prev_decoy: false,
        prev_code: true,
        next_code: true,
        weak: true,
    };

    fn read(vocabulary: &mut Vocabulary, ctx: &Context<'_>, line_index: usize) -> Self {
        let mut out = Self {
            prev_decoy: false,
            prev_code: false,
            next_code: false,
            weak: false,
        };
        for back in 1..=2 {
            let Some(i) = line_index.checked_sub(back) else {
                break;
            };
            let h = neighbour(vocabulary, ctx, i, true);
            if back == 1 {
                out.prev_decoy |= h.decoy_label;
            }
            out.prev_code |= h.code;
            out.weak |= h.weak;
        }
        let next = neighbour(vocabulary, ctx, line_index + 1, false);
        out.weak |= next.weak;
        out.next_code = next.code && !next.decoy_label;
        out
    }
}

/// A candidate between words `first` and `end` of a line, to be scored.
struct Scored<'s, 'a> {
    line: &'s Line,
    ws: &'s [Word<'a>],
    first: usize,
    end: usize,
    shape: Shape,
}

impl Scored<'_, '_> {
    /// Evidence minus decoy evidence, given what its own line says (`ev`)
    /// and, when asked for, the lines around.
    fn score(&self, ctx: &Context<'_>, mut ev: Evidence, around: Option<Around>) -> i32 {
        let Self {
            line,
            ws,
            first,
            end,
            shape,
        } = *self;
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
        if let Some(around) = around {
            // The lines around: "Your code is below:" / the code / "It expires…".
            if around.prev_decoy && standalone {
                s -= 40;
            } else if around.prev_code {
                s += if standalone { 30 } else { 8 };
                evidence = true;
            } else if around.next_code {
                s += if standalone { 25 } else { 8 };
                evidence = true;
            }
            ev.weak |= around.weak;
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

    /// Word bounds by decoded chars: whitespace and `:` separate.
    fn words_by_char(text: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut start = None;
        for (i, c) in text
            .char_indices()
            .chain(std::iter::once((text.len(), ' ')))
        {
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
    }

    proptest::proptest! {
        /// Words split on ASCII bytes as splitting on decoded chars does.
        #[test]
        fn words_split_as_char_by_char_would(
            text in proptest::collection::vec(
                proptest::sample::select(vec!["a", "7", ":", " ", "\t", "\u{b}", "\r", "\u{8}", "\u{e}", "\u{1c}", "\u{7f}", "\u{80}", "\u{a0}", "\u{3000}", "é", "-", ";", "9"]),
                0..30,
            ).prop_map(|v: Vec<&str>| v.concat()),
        ) {
            let found: Vec<(usize, usize)> = words(&text).iter().map(|w| (w.start, w.end)).collect();
            proptest::prop_assert_eq!(found, words_by_char(&text));
        }

        /// ASCII lines with words longer than the byte-by-byte stretch
        /// (finished in blocks) split as char by char too.
        #[test]
        fn long_ascii_words_split_as_char_by_char_would(
            text in proptest::collection::vec(
                proptest::sample::select(vec!["a", "7", "abcdefghij", "0123456789abcdef", "X", " ", ":", "\t", "\r", "\u{b}", "-", "\u{7f}"]),
                0..40,
            ).prop_map(|v: Vec<&str>| v.concat()),
        ) {
            let found: Vec<(usize, usize)> = words(&text).iter().map(|w| (w.start, w.end)).collect();
            proptest::prop_assert_eq!(found, words_by_char(&text));
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

        /// The byte trim of an ASCII word finds the core the char trim finds.
        #[test]
        fn an_ascii_core_is_the_one_chars_give(raw in "[ -~]{0,12}") {
            let w = word(&raw, 0, raw.len());
            let by_char = raw
                .trim_start_matches(|c: char| !c.is_alphanumeric())
                .trim_end_matches(|c: char| !c.is_alphanumeric());
            proptest::prop_assert_eq!(w.core, by_char);
            proptest::prop_assert_eq!(format!("{}{}{}", w.pre, w.core, w.post), raw.clone());
        }

        /// No lines around score a candidate higher than
        /// `Around::MOST_FAVOURABLE`, so a candidate below the threshold
        /// with those is below it with the real ones and they need not be read.
        #[test]
        fn no_lines_around_beat_the_most_favourable(
            line in proptest::collection::vec(
                proptest::sample::select(vec![
                    "482913", "718-204", "G-482913", "K7QM2X", "3", "9", "2026", "12345678",
                    "code", "order", "your", "is", "$5", "#", "(555)", "+34", "50%", "May", "CA",
                    "PIN", "•", "*", "expires", "the",
                ]),
                1..12,
            ).prop_map(|v: Vec<&str>| v.join(" ")),
            emphasis: bool,
            subject_hinted: bool,
            bits in 0u8..16,
        ) {
            let emphasis = if emphasis { vec![(0, line.len())] } else { Vec::new() };
            let lines = [Line { text: line, emphasis }];
            let ctx = Context { lines: &lines, subject_hinted, is_subject: false };
            let around = Around {
                prev_decoy: bits & 1 != 0,
                prev_code: bits & 2 != 0,
                next_code: bits & 4 != 0,
                weak: bits & 8 != 0,
            };
            let mut vocabulary = Vocabulary::default();
            let ws = words(&lines[0].text);
            for first in 0..ws.len() {
                let (_, Some((shape, end))) = candidate_at(&lines[0].text, &ws, first) else {
                    continue;
                };
                let mut ev = Evidence::default();
                look(&mut vocabulary, &ws, (0..first).rev(), true, &mut ev);
                look(&mut vocabulary, &ws, end..ws.len(), false, &mut ev);
                let scored = Scored { line: &lines[0], ws: &ws, first, end, shape };
                proptest::prop_assert!(
                    scored.score(&ctx, ev, Some(around))
                        <= scored.score(&ctx, ev, Some(Around::MOST_FAVOURABLE))
                );
            }
        }
    }

    #[test]
    fn the_line_memo_answers_only_for_the_line_and_end_it_holds() {
        let hints = LineHints {
            code: true,
            decoy_label: false,
            weak: true,
        };
        let mut memo = LineMemo::default();
        assert!(memo.get(3, true).is_none());
        memo.put(3, true, hints);
        assert!(memo.get(3, true).is_some_and(|h| h.code && h.weak));
        assert!(memo.get(3, false).is_none(), "the other end of the line");
        // A line that maps to the same slot takes it over.
        memo.put(3 + LINE_MEMO_SLOTS / 2, true, LineHints::default());
        assert!(memo.get(3, true).is_none());
        assert!(memo
            .get(3 + LINE_MEMO_SLOTS / 2, true)
            .is_some_and(|h| !h.code));
        memo.clear();
        assert!(memo.get(3 + LINE_MEMO_SLOTS / 2, true).is_none());
    }

    /// A line read as a neighbour says what its own end says: the first
    /// eight words for the line after a candidate, the last eight for the
    /// lines before it (one pass reads both ends of a short line).
    #[test]
    fn a_neighbouring_line_is_read_from_the_end_next_to_the_candidate() {
        let lines = [Line {
            text: "code alpha bravo charlie delta echo foxtrot golf hotel india juliet".into(),
            emphasis: Vec::new(),
        }];
        let ctx = Context {
            lines: &lines,
            subject_hinted: false,
            is_subject: false,
        };
        let mut vocabulary = Vocabulary::default();
        assert!(
            !neighbour(&mut vocabulary, &ctx, 0, true).code,
            "before a candidate"
        );
        assert!(
            neighbour(&mut vocabulary, &ctx, 0, false).code,
            "after a candidate"
        );
        vocabulary.next_body();
        assert!(
            neighbour(&mut vocabulary, &ctx, 0, false).code,
            "after, asked first"
        );
        assert!(
            !neighbour(&mut vocabulary, &ctx, 0, true).code,
            "before, asked second"
        );
    }

    /// The lines around are read for a candidate that could pass with them,
    /// and give the same codes as when every candidate read them.
    #[test]
    fn codes_that_need_the_lines_around_are_still_found() {
        assert_eq!(
            best("Your verification code is below:\n\n482913\n"),
            Some("482913".into())
        );
        assert_eq!(
            best("482913\nis your code. It expires in 10 minutes."),
            Some("482913".into())
        );
        assert_eq!(best("Order number:\n48291377\n"), None);
    }
}
