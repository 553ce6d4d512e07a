//! The pure DATA body decoder: raw bytes after `354` in, dot-unstuffed
//! message bytes out, plus end detection and size/line accounting. No I/O;
//! fuzzable; memory bounded by the size limit whatever the input.
//!
//! ## End of data and SMTP smuggling
//!
//! Only `<CRLF>.<CRLF>` ends the data (RFC 5321 §4.1.1.4); the `354` reply
//! counts as the first CRLF, so a body that starts with `.<CRLF>` is empty.
//! A bare LF or a bare CR anywhere in the body (`\n.\n`, `\r.\r`,
//! `\n.\r\n`, `\r\n.\n`, …) never ends the data.
//!
//! **Decision: a bare LF is a line end, stored as CRLF; a bare CR is
//! refused** ([`BareLf::Normalize`], the default; Postfix 3.9's
//! `smtpd_forbid_bare_newline = normalize`). Why: scripts that send a file
//! with LF endings are common and honest, while SMTP smuggling needs two
//! servers to disagree about where a message *ends*, and here the end is
//! never anything but a real `<CRLF>.<CRLF>`. The lines around it are
//! treated so that nothing we store can be read two ways:
//!
//! * a line holding only `.` after a bare LF (`\n.\r\n`, `\n.\n`), or a `.`
//!   ended by a bare LF (`\r\n.\n`), is what a sloppy server would take as
//!   the end: the message is refused with `550 5.6.0`
//!   ([`DataError::AmbiguousEnd`]) once the real end arrives;
//! * a bare CR (`\r.\r`, `\r.\r\n`, `\r\n.\r`) is refused `550 5.6.0`
//!   ([`DataError::BareLineEnd`]) in every mode: no client sends one by
//!   accident;
//! * otherwise the message is stored with every bare LF turned into CRLF,
//!   and dot-unstuffing applies after a bare LF as after a CRLF (clients
//!   that send LF lines, like `smtplib`, stuff those lines too).
//!
//! [`BareLf::Reject`] (the strict mode, by config) refuses any bare LF with
//! `550 5.6.0` instead. Either way the rest of the input up to the real
//! `<CRLF>.<CRLF>` is drained, so a "second message" inside is never
//! executed as commands.
//!
//! BDAT chunks (RFC 3030) are length-delimited and are not passed through
//! this decoder (no dot-stuffing, so no end to disagree on); the session
//! applies the same line-end policy to the whole body with
//! [`normalize_line_ends`].
//!
//! ## Limits
//!
//! * Size: once the unstuffed body would exceed `max_size` the decoder stops
//!   keeping bytes (it still looks for the end), so a 10 GB body costs no
//!   memory; the session answers `552 5.3.4` after the end.
//! * Line length: a line longer than `max_line` octets including its CRLF
//!   (RFC 5321 §4.5.3.1.6: 1000) marks the message as rejected (`552 5.3.4`,
//!   the same "message too big for system" class as the size limit); the
//!   line is drained, not buffered.

use std::borrow::Cow;

/// What to do with a bare LF (an LF not preceded by CR) in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BareLf {
    /// Treat it as a line end and store CRLF (the default).
    #[default]
    Normalize,
    /// Refuse the message with `550 5.6.0` (strict mode).
    Reject,
}

/// Where the decoder is inside the CRLF . CRLF grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line that followed a real CRLF.
    LineStart,
    /// At the start of a line that followed a bare LF (normalising only):
    /// a `.` here is stuffing or text, never the end.
    SoftLineStart,
    /// Saw `.` at a line start (held back: it is either stuffing or the end).
    Dot,
    /// Saw `.` `CR` at a line start.
    DotCr,
    /// Saw `.` at a soft line start.
    SoftDot,
    /// Saw `.` `CR` at a soft line start.
    SoftDotCr,
    /// Inside a line.
    Text,
    /// Saw a CR inside a line (held back until we know if LF follows).
    Cr,
    /// `CRLF . CRLF` seen; nothing more is consumed.
    Done,
}

/// Why a finished message must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataError {
    /// The body exceeded the size limit: `552 5.3.4`.
    TooBig,
    /// A line exceeded the line limit: `552 5.3.4`.
    LineTooLong,
    /// A bare CR was seen, or a bare LF in strict mode: `550 5.6.0`.
    BareLineEnd,
    /// A lone `.` line next to a bare LF — an end of data to a sloppy
    /// server, so a smuggling attempt: `550 5.6.0`.
    AmbiguousEnd,
}

/// Incremental DATA decoder. Feed it input as it arrives.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    state: State,
    bare_lf: BareLf,
    max_size: usize,
    max_line: usize,
    line_len: usize,
    /// Unstuffed body octets seen (kept or not).
    size: u64,
    /// Raw octets consumed, including the terminator.
    raw: u64,
    /// Bare LFs stored as CRLF.
    normalized: u64,
    error: Option<DataError>,
}

/// Result of one [`DataDecoder::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Octets of the input consumed. Less than the input length only when
    /// the end was found: the rest belongs to the next command.
    pub consumed: usize,
    /// True once `<CRLF>.<CRLF>` has been consumed.
    pub done: bool,
}

impl DataDecoder {
    /// A strict decoder ([`BareLf::Reject`]) keeping at most `max_size` body
    /// octets and allowing lines of at most `max_line` octets including CRLF.
    pub fn new(max_size: usize, max_line: usize) -> Self {
        Self {
            state: State::LineStart,
            bare_lf: BareLf::Reject,
            max_size,
            max_line: max_line.max(3),
            line_len: 0,
            size: 0,
            raw: 0,
            normalized: 0,
            error: None,
        }
    }

    /// The same decoder with `policy` for bare LFs.
    pub fn with_bare_lf(mut self, policy: BareLf) -> Self {
        self.bare_lf = policy;
        self
    }

    /// The first reason to refuse this message, if any.
    pub fn error(&self) -> Option<DataError> {
        self.error
    }

    /// Unstuffed body octets seen so far (also those not kept).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Raw octets consumed so far.
    pub fn raw_len(&self) -> u64 {
        self.raw
    }

    /// Bare LFs that were stored as CRLF so far (always 0 in strict mode).
    pub fn normalized(&self) -> u64 {
        self.normalized
    }

    /// True once the end marker was consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn fail(&mut self, e: DataError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if self.size > self.max_size as u64 {
            self.fail(DataError::TooBig);
        }
        if self.error.is_none() {
            out.extend_from_slice(bytes);
        }
    }

    fn count_line(&mut self, n: usize) {
        self.line_len = self.line_len.saturating_add(n);
        if self.line_len > self.max_line {
            self.fail(DataError::LineTooLong);
        }
    }

    /// The most octets one [`feed`](Self::feed) of `input` can append: each
    /// input octet once, a CR for each LF (a normalised bare LF), and the CR
    /// or dot held back from the previous input. What the byte budget must
    /// cover before feeding.
    pub fn max_output(input: &[u8]) -> usize {
        let lf = memchr::memchr_iter(b'\n', input).count();
        input.len().saturating_add(lf).saturating_add(2)
    }

    /// Consume `input`, appending the unstuffed body to `out` (nothing more is
    /// appended once the message is known to be refused). `out` never grows
    /// past `max_size` octets beyond its length at the start.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Fed {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Done {
                break;
            }
            // Fast path: copy a run of ordinary text in one go.
            if self.state == State::Text {
                let rest = input.get(i..).unwrap_or(&[]);
                let run = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                if run > 0 {
                    self.count_line(run);
                    self.emit(out, rest.get(..run).unwrap_or(&[]));
                    i += run;
                    continue;
                }
            }
            let b = input.get(i).copied().unwrap_or(0);
            i += 1;
            self.step(b, out);
        }
        self.raw += i as u64;
        Fed {
            consumed: i,
            done: self.state == State::Done,
        }
    }

    fn step(&mut self, b: u8, out: &mut Vec<u8>) {
        match self.state {
            State::LineStart | State::SoftLineStart => match b {
                b'.' => {
                    self.count_line(1);
                    self.state = if self.state == State::LineStart {
                        State::Dot
                    } else {
                        State::SoftDot
                    };
                }
                _ => self.text_byte(b, out),
            },
            State::Dot | State::SoftDot => match b {
                b'\r' => {
                    self.count_line(1);
                    self.state = if self.state == State::Dot {
                        State::DotCr
                    } else {
                        State::SoftDotCr
                    };
                }
                b'\n' if self.bare_lf == BareLf::Normalize => {
                    // `.` LF: the end of data to a server that takes LF alone.
                    self.fail(DataError::AmbiguousEnd);
                    self.line_len = 0;
                    self.state = State::SoftLineStart;
                }
                // Dot-stuffing: the leading dot is dropped (RFC 5321 §4.5.2).
                _ => self.text_byte(b, out),
            },
            State::DotCr => match b {
                b'\n' => {
                    self.line_len = 0;
                    self.state = State::Done;
                }
                _ => self.bare_cr_then(b, out),
            },
            State::SoftDotCr => match b {
                b'\n' => {
                    // LF `.` CRLF: never the end, and refused as ambiguous.
                    self.fail(DataError::AmbiguousEnd);
                    self.line_len = 0;
                    self.state = State::LineStart;
                }
                _ => self.bare_cr_then(b, out),
            },
            State::Text => self.text_byte(b, out),
            State::Cr => match b {
                b'\n' => {
                    self.count_line(1);
                    self.emit(out, b"\r\n");
                    self.line_len = 0;
                    self.state = State::LineStart;
                }
                _ => self.bare_cr_then(b, out),
            },
            State::Done => {}
        }
    }

    /// The CR held back was bare; `b` follows it on the same line.
    fn bare_cr_then(&mut self, b: u8, out: &mut Vec<u8>) {
        self.fail(DataError::BareLineEnd);
        self.emit(out, b"\r");
        self.state = State::Text;
        self.text_byte(b, out);
    }

    /// A byte in text position (also the first byte of a line).
    fn text_byte(&mut self, b: u8, out: &mut Vec<u8>) {
        self.count_line(1);
        match b {
            b'\r' => self.state = State::Cr,
            b'\n' => match self.bare_lf {
                BareLf::Normalize => {
                    self.normalized += 1;
                    self.emit(out, b"\r\n");
                    self.line_len = 0;
                    self.state = State::SoftLineStart;
                }
                BareLf::Reject => {
                    // Never a line end for us, so the next "." is text.
                    self.fail(DataError::BareLineEnd);
                    self.emit(out, b"\n");
                    self.state = State::Text;
                }
            },
            _ => {
                self.emit(out, &[b]);
                self.state = State::Text;
            }
        }
    }
}

/// The published SMTP smuggling end-of-data variants (SEC Consult 2023,
/// Postfix's smtp-smuggling page, the smtpsmug and smtp_smuggling_checker
/// tools): every way a lax server might read the end of data before the
/// real `<CRLF>.<CRLF>`. None of them ends data here; the tests put each
/// between a body and a complete smuggled transaction and assert one stored
/// message or a refusal, never two.
pub const SMUGGLING_VARIANTS: &[&[u8]] = &[
    b"\n.\n",
    b"\n.\r\n",
    b"\n.\r",
    b"\r.\r",
    b"\r.\r\n",
    b"\r.\n",
    b"\r\n.\r",
    b"\r\n.\n",
    b".\n",
    b".\r\n",
    b"\n..\n",
    b"\n\n.\r\n",
    b"\r\n\x00.\r\n",
    b"\r\n\x00.\r",
    b"\r\n\x00.\n",
    b"\r\n.\x00\r\n",
    b"\n\x00.\n",
    b"\r\n.\x00\n",
    b"\n.\x00\r\n",
];

/// True when `body` holds a CR not followed by LF or an LF not preceded by CR.
pub fn has_bare_line_end(body: &[u8]) -> bool {
    let mut prev = 0u8;
    let mut iter = body.iter().peekable();
    while let Some(&b) = iter.next() {
        match b {
            b'\n' if prev != b'\r' => return true,
            b'\r' if iter.peek() != Some(&&b'\n') => return true,
            _ => {}
        }
        prev = b;
    }
    false
}

/// Bare LFs in `body` (an LF not preceded by CR), or the refusal of a bare
/// CR (a CR not followed by LF).
pub fn count_bare_lf(body: &[u8]) -> Result<u64, DataError> {
    let mut bare_lf = 0u64;
    let mut prev = 0u8;
    let mut iter = body.iter().peekable();
    while let Some(&b) = iter.next() {
        match b {
            b'\n' if prev != b'\r' => bare_lf += 1,
            b'\r' if iter.peek() != Some(&&b'\n') => return Err(DataError::BareLineEnd),
            _ => {}
        }
        prev = b;
    }
    Ok(bare_lf)
}

/// Apply the line-end policy to a whole body (BDAT): a bare CR is refused,
/// a bare LF is refused or (with [`BareLf::Normalize`]) turned into CRLF.
/// Returns the body to store and how many bare LFs were normalised; the
/// body is borrowed when nothing changed.
pub fn normalize_line_ends(body: &[u8], policy: BareLf) -> Result<(Cow<'_, [u8]>, u64), DataError> {
    let bare_lf = count_bare_lf(body)?;
    if bare_lf == 0 {
        return Ok((Cow::Borrowed(body), 0));
    }
    if policy == BareLf::Reject {
        return Err(DataError::BareLineEnd);
    }
    let mut out = Vec::with_capacity(body.len().saturating_add(bare_lf as usize));
    let mut prev = 0u8;
    for &b in body {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    Ok((Cow::Owned(out), bare_lf))
}

/// [`normalize_line_ends`] of `body[from..]` in place, given its
/// `bare_lf` count from [`count_bare_lf`]: `body` grows by one octet per
/// bare LF instead of being copied whole, so a large BDAT body is never held
/// twice. The caller reserves the room first (it is what the byte budget
/// pays for).
pub fn normalize_in_place(body: &mut Vec<u8>, from: usize, bare_lf: u64) {
    if bare_lf == 0 || from > body.len() {
        return;
    }
    let mut read = body.len();
    body.resize(read + bare_lf as usize, 0);
    let mut write = body.len();
    // Walk backwards: everything below `read` is still the original text
    // (write - read is the count of bare LFs not yet expanded, never < 0).
    while read > from && write > read {
        read -= 1;
        let b = body.get(read).copied().unwrap_or(0);
        write -= 1;
        if let Some(slot) = body.get_mut(write) {
            *slot = b;
        }
        let bare = b == b'\n' && (read == from || body.get(read - 1) != Some(&b'\r'));
        if bare {
            write -= 1;
            if let Some(slot) = body.get_mut(write) {
                *slot = b'\r';
            }
        }
    }
}

/// Dot-stuff `body` for sending with DATA and append the terminator: the
/// inverse of [`DataDecoder`] for bodies whose lines all end in CRLF. Used by
/// tests and benchmarks.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    let mut at_line_start = true;
    for &b in body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(input: &[u8], max: usize, line: usize) -> (Vec<u8>, Fed, Option<DataError>) {
        let mut d = DataDecoder::new(max, line);
        let mut out = Vec::new();
        let fed = d.feed(input, &mut out);
        (out, fed, d.error())
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf_and_unstuffs() {
        let (out, fed, err) = decode_all(b"a\r\n..b\r\n.\r\nNEXT", 100, 1000);
        assert_eq!(out, b"a\r\n.b\r\n");
        assert_eq!(
            fed,
            Fed {
                consumed: 11,
                done: true
            }
        );
        assert_eq!(err, None);
    }

    #[test]
    fn progress_is_reported_while_feeding() {
        let mut d = DataDecoder::new(100, 1000);
        let mut out = Vec::new();
        d.feed(b"ab\r\n..c\r\n", &mut out);
        assert_eq!((d.size(), d.raw_len(), d.is_done()), (8, 9, false));
        let fed = d.feed(b".\r\nNEXT", &mut out);
        assert_eq!(fed.consumed, 3);
        assert_eq!((d.size(), d.raw_len(), d.is_done()), (8, 12, true));
        assert_eq!(out, b"ab\r\n.c\r\n");
    }

    #[test]
    fn empty_body() {
        let (out, fed, err) = decode_all(b".\r\n", 100, 1000);
        assert!(out.is_empty() && fed.done && err.is_none());
    }

    #[test]
    fn no_published_smuggling_variant_ends_the_data() {
        for policy in [BareLf::Normalize, BareLf::Reject] {
            for variant in SMUGGLING_VARIANTS {
                let input = [&b"a"[..], variant, b"MAIL FROM:<x@y>\r\n.\r\n"].concat();
                let mut d = DataDecoder::new(1000, 1000).with_bare_lf(policy);
                let mut out = Vec::new();
                let fed = d.feed(&input, &mut out);
                assert_eq!(
                    fed.consumed,
                    input.len(),
                    "{policy:?} {variant:?} ended early"
                );
                assert!(fed.done, "{policy:?} {variant:?}");
            }
        }
    }

    #[test]
    fn smuggling_forms_never_end_the_data_and_are_refused() {
        for smuggle in [
            &b"a\n.\nMAIL FROM:<x@y>\n"[..],
            b"a\r.\rMAIL",
            b"a\n.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\nMAIL",
            b"a\r\n.\rMAIL",
            b"a\r.\r\nMAIL",
        ] {
            let mut input = smuggle.to_vec();
            input.extend_from_slice(b"\r\n.\r\n");
            let (_, fed, err) = decode_all(&input, 1000, 1000);
            assert_eq!(fed.consumed, input.len(), "{smuggle:?} ended early");
            assert!(fed.done);
            assert_eq!(err, Some(DataError::BareLineEnd), "{smuggle:?}");
        }
    }

    #[test]
    fn size_limit_is_enforced_without_buffering() {
        let mut d = DataDecoder::new(10, 1000);
        let mut out = Vec::new();
        for _ in 0..1000 {
            d.feed(b"0123456789\r\n", &mut out);
        }
        let fed = d.feed(b".\r\n", &mut out);
        assert!(fed.done);
        assert_eq!(d.error(), Some(DataError::TooBig));
        assert!(out.len() <= 10);
    }

    #[test]
    fn line_limit_counts_crlf() {
        let ok = [vec![b'x'; 998], b"\r\n.\r\n".to_vec()].concat();
        assert_eq!(decode_all(&ok, 1 << 20, 1000).2, None);
        let bad = [vec![b'x'; 999], b"\r\n.\r\n".to_vec()].concat();
        assert_eq!(
            decode_all(&bad, 1 << 20, 1000).2,
            Some(DataError::LineTooLong)
        );
    }

    #[test]
    fn split_anywhere_gives_the_same_result() {
        let input = b"x\r\n..y\r\n.z\r\n\r\n.\r\nrest";
        let (whole, _, _) = decode_all(input, 100, 1000);
        for cut in 0..input.len() {
            let mut d = DataDecoder::new(100, 1000);
            let mut out = Vec::new();
            let a = d.feed(&input[..cut], &mut out);
            let b = d.feed(&input[a.consumed..], &mut out);
            assert!(b.done, "cut {cut}");
            assert_eq!(out, whole, "cut {cut}");
        }
    }

    #[test]
    fn bare_line_ends_are_found() {
        assert!(!has_bare_line_end(b"a\r\nb\r\n"));
        assert!(!has_bare_line_end(b""));
        assert!(has_bare_line_end(b"a\nb"));
        assert!(has_bare_line_end(b"\n"));
        assert!(has_bare_line_end(b"a\rb"));
        assert!(has_bare_line_end(b"a\r"));
        assert!(has_bare_line_end(b"a\r\r\n"));
    }

    fn decode_normalizing(input: &[u8]) -> (Vec<u8>, Fed, Option<DataError>, u64) {
        let mut d = DataDecoder::new(1000, 1000).with_bare_lf(BareLf::Normalize);
        let mut out = Vec::new();
        let fed = d.feed(input, &mut out);
        (out, fed, d.error(), d.normalized())
    }

    #[test]
    fn normalizing_stores_bare_lf_as_crlf_and_unstuffs_after_it() {
        let (out, fed, err, n) = decode_normalizing(b"a\nb\r\n..c\n..\n.d\n\r\n.\r\nNEXT");
        assert_eq!(out, b"a\r\nb\r\n.c\r\n.\r\nd\r\n\r\n");
        assert_eq!((fed.done, err, n), (true, None, 4));
        assert_eq!(fed.consumed, 20);
        // A lone LF line is an empty line.
        let (out, _, err, n) = decode_normalizing(b"\n\n\r\n.\r\n");
        assert_eq!((out.as_slice(), err, n), (&b"\r\n\r\n\r\n"[..], None, 2));
        // The same message in strict mode is refused and nothing is counted.
        let mut d = DataDecoder::new(1000, 1000);
        d.feed(b"a\nb\r\n.\r\n", &mut Vec::new());
        assert_eq!(
            (d.error(), d.normalized()),
            (Some(DataError::BareLineEnd), 0)
        );
    }

    #[test]
    fn normalizing_refuses_lone_dots_next_to_bare_lf_and_bare_cr() {
        for (input, want) in [
            (&b"a\n.\nb\r\n.\r\n"[..], DataError::AmbiguousEnd),
            (b"a\n.\r\nb\r\n.\r\n", DataError::AmbiguousEnd),
            (b"a\r\n.\nb\r\n.\r\n", DataError::AmbiguousEnd),
            (b".\nb\r\n.\r\n", DataError::AmbiguousEnd),
            (b"a\r.\rb\r\n.\r\n", DataError::BareLineEnd),
            (b"a\n.\rb\r\n.\r\n", DataError::BareLineEnd),
            (b"a\r\n.\rb\r\n.\r\n", DataError::BareLineEnd),
            (b"a\rb\r\n.\r\n", DataError::BareLineEnd),
        ] {
            let (_, fed, err, _) = decode_normalizing(input);
            assert_eq!(fed.consumed, input.len(), "{input:?} ended early");
            assert!(fed.done, "{input:?}");
            assert_eq!(err, Some(want), "{input:?}");
        }
        // After `LF . CRLF` the next line start is a real one: `.` CRLF ends.
        let (_, fed, err, _) = decode_normalizing(b"a\n.\r\n.\r\nrest");
        assert_eq!((fed.consumed, err), (8, Some(DataError::AmbiguousEnd)));
    }

    #[test]
    fn normalizing_counts_the_added_cr_against_the_size_limit() {
        let mut d = DataDecoder::new(4, 1000).with_bare_lf(BareLf::Normalize);
        let mut out = Vec::new();
        d.feed(b"ab\nc\r\n.\r\n", &mut out);
        assert_eq!(d.error(), Some(DataError::TooBig));
        assert!(out.len() <= 4);
        let mut d = DataDecoder::new(4, 1000).with_bare_lf(BareLf::Normalize);
        d.feed(b"ab\n\r\n.\r\n", &mut Vec::new());
        assert_eq!(d.error(), Some(DataError::TooBig));
        let mut d = DataDecoder::new(4, 1000).with_bare_lf(BareLf::Normalize);
        d.feed(b"a\nb\r\n.\r\n", &mut Vec::new());
        assert_eq!(d.error(), Some(DataError::TooBig));
        let mut d = DataDecoder::new(6, 1000).with_bare_lf(BareLf::Normalize);
        d.feed(b"a\nb\r\n.\r\n", &mut Vec::new());
        assert_eq!(d.error(), None);
    }

    #[test]
    fn normalizing_resets_the_line_length_at_a_bare_lf() {
        let line = vec![b'x'; 998];
        let input = [&line[..], b"\n", &line, b"\r\n.\r\n"].concat();
        let mut d = DataDecoder::new(1 << 20, 1000).with_bare_lf(BareLf::Normalize);
        d.feed(&input, &mut Vec::new());
        assert_eq!(d.error(), None);
        let long = [&line[..], b"xx\n\r\n.\r\n"].concat();
        let mut d = DataDecoder::new(1 << 20, 1000).with_bare_lf(BareLf::Normalize);
        d.feed(&long, &mut Vec::new());
        assert_eq!(d.error(), Some(DataError::LineTooLong));
    }

    #[test]
    fn whole_bodies_follow_the_same_policy() {
        let (body, n) = normalize_line_ends(b"a\r\nb", BareLf::Normalize).unwrap();
        assert!(matches!(body, Cow::Borrowed(_)));
        assert_eq!((&*body, n), (&b"a\r\nb"[..], 0));
        let (body, n) = normalize_line_ends(b"\na\r\nb\n\n", BareLf::Normalize).unwrap();
        assert_eq!((&*body, n), (&b"\r\na\r\nb\r\n\r\n"[..], 3));
        assert_eq!(
            normalize_line_ends(b"a\nb", BareLf::Reject).err(),
            Some(DataError::BareLineEnd)
        );
        assert!(normalize_line_ends(b"a\r\nb", BareLf::Reject).is_ok());
        for bad in [&b"a\rb"[..], b"a\r", b"\r\r\n", b"\n\r"] {
            assert_eq!(
                normalize_line_ends(bad, BareLf::Normalize).err(),
                Some(DataError::BareLineEnd),
                "{bad:?}"
            );
        }
    }

    fn crlf_body() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            proptest::collection::vec(
                prop_oneof![
                    Just(b'.'),
                    Just(b'a'),
                    Just(b' '),
                    any::<u8>().prop_filter("no line ends", |b| *b != b'\r' && *b != b'\n')
                ],
                0..40,
            ),
            0..20,
        )
        .prop_map(|lines| {
            let mut v = Vec::new();
            for l in lines {
                v.extend_from_slice(&l);
                v.extend_from_slice(b"\r\n");
            }
            v
        })
    }

    proptest! {
        #[test]
        fn one_feed_appends_at_most_max_output(
            chunks in proptest::collection::vec(proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a')], 0..64), 1..8),
            normalize in any::<bool>(),
        ) {
            let policy = if normalize { BareLf::Normalize } else { BareLf::Reject };
            let mut d = DataDecoder::new(1 << 20, 1000).with_bare_lf(policy);
            let mut out = Vec::new();
            for chunk in &chunks {
                let before = out.len();
                d.feed(chunk, &mut out);
                prop_assert!(out.len() - before <= DataDecoder::max_output(chunk));
            }
        }

        #[test]
        fn normalizing_in_place_equals_normalizing_a_copy(
            head in proptest::collection::vec(any::<u8>(), 0..8),
            body in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a')], 0..200),
        ) {
            let expected = normalize_line_ends(&body, BareLf::Normalize);
            let count = count_bare_lf(&body);
            prop_assert_eq!(count.is_ok(), expected.is_ok());
            if let (Ok((copy, n)), Ok(counted)) = (expected, count) {
                prop_assert_eq!(n, counted);
                let mut in_place = head.clone();
                in_place.extend_from_slice(&body);
                normalize_in_place(&mut in_place, head.len(), counted);
                prop_assert_eq!(&in_place[..head.len()], &head[..]);
                prop_assert_eq!(&in_place[head.len()..], &copy[..]);
            }
        }

        #[test]
        fn stuff_then_unstuff_round_trips(body in crlf_body(), cut in 0usize..2000) {
            let wire = dot_stuff(&body);
            let mut d = DataDecoder::new(1 << 20, 1000);
            let mut out = Vec::new();
            let cut = cut.min(wire.len());
            let a = d.feed(&wire[..cut], &mut out);
            prop_assert!(!a.done || cut == wire.len());
            let b = d.feed(&wire[a.consumed..], &mut out);
            prop_assert!(b.done);
            prop_assert_eq!(a.consumed + b.consumed, wire.len());
            prop_assert_eq!(out, body);
            prop_assert_eq!(d.error(), None);
        }

        #[test]
        fn normalizing_ends_only_at_crlf_dot_crlf_and_stores_no_bare_line_end(
            input in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a'), Just(0u8)], 0..200),
            cut in 0usize..200,
        ) {
            let mut d = DataDecoder::new(1 << 20, 1000).with_bare_lf(BareLf::Normalize);
            let mut out = Vec::new();
            let cut = cut.min(input.len());
            let a = d.feed(&input[..cut], &mut out);
            let b = if a.done { Fed { consumed: 0, done: true } } else { d.feed(&input[a.consumed..], &mut out) };
            let consumed = a.consumed + b.consumed;
            if b.done {
                let head = &input[..consumed];
                prop_assert!(head.ends_with(b"\r\n.\r\n") || head == b".\r\n");
                if d.error().is_none() {
                    prop_assert!(!has_bare_line_end(&out), "{:?} -> {:?}", input, out);
                }
            }
            // Whole-input and split feeding agree.
            let mut whole = DataDecoder::new(1 << 20, 1000).with_bare_lf(BareLf::Normalize);
            let mut whole_out = Vec::new();
            let w = whole.feed(&input, &mut whole_out);
            prop_assert_eq!(w.consumed, consumed);
            prop_assert_eq!(whole.error(), d.error());
            if d.error().is_none() {
                prop_assert_eq!(whole_out, out);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(input in proptest::collection::vec(any::<u8>(), 0..4000), max in 0usize..512) {
            let mut d = DataDecoder::new(max, 80);
            let mut out = Vec::new();
            let fed = d.feed(&input, &mut out);
            prop_assert!(out.len() <= max);
            prop_assert!(fed.consumed <= input.len());
            if fed.done {
                // The only way to finish is a real CRLF . CRLF (or "." CRLF at the start).
                let head = &input[..fed.consumed];
                prop_assert!(head.ends_with(b"\r\n.\r\n") || head == b".\r\n");
            }
        }
    }
}
