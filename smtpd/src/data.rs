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
//! **Decision: a message containing a bare CR or bare LF is rejected**
//! (`550 5.6.0`) once its real end arrives, instead of being "fixed up".
//! Why: SMTP smuggling works by making two servers disagree about where a
//! message ends. If we repaired bare line ends into CRLF, the stored message
//! would contain a `.` line that another hop could read as an end; if we kept
//! them, a downstream reader of our raw `.eml` could be fooled the same way.
//! Rejecting means nothing that could have been parsed two ways is ever
//! stored, and an honest client (every mainstream library converts line
//! ends to CRLF) never sends one. Postfix 3.9 made the same call
//! (`smtpd_forbid_bare_newline`). The rest of the input up to the real
//! `<CRLF>.<CRLF>` is drained and discarded, so the "second message" inside
//! is never executed as commands either.
//!
//! BDAT chunks (RFC 3030) are length-delimited and are not passed through
//! this decoder (no dot-stuffing), but the same rule holds: a BDAT message
//! with a bare CR or LF ([`has_bare_line_end`]) is refused `550 5.6.0`, so
//! nothing we store can be split two ways by a later reader.
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

/// Where the decoder is inside the CRLF . CRLF grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line that followed a real CRLF.
    LineStart,
    /// Saw `.` at a line start (held back: it is either stuffing or the end).
    Dot,
    /// Saw `.` `CR` at a line start.
    DotCr,
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
    /// A bare CR or LF was seen: `550 5.6.0`.
    BareLineEnd,
}

/// Incremental DATA decoder. Feed it input as it arrives.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    state: State,
    max_size: usize,
    max_line: usize,
    line_len: usize,
    /// Unstuffed body octets seen (kept or not).
    size: u64,
    /// Raw octets consumed, including the terminator.
    raw: u64,
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
    /// A decoder keeping at most `max_size` body octets and allowing lines of
    /// at most `max_line` octets including CRLF.
    pub fn new(max_size: usize, max_line: usize) -> Self {
        Self {
            state: State::LineStart,
            max_size,
            max_line: max_line.max(3),
            line_len: 0,
            size: 0,
            raw: 0,
            error: None,
        }
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
                let run = rest
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(rest.len());
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
            State::LineStart => match b {
                b'.' => {
                    self.count_line(1);
                    self.state = State::Dot;
                }
                _ => self.text_byte(b, out),
            },
            State::Dot => match b {
                b'\r' => {
                    self.count_line(1);
                    self.state = State::DotCr;
                }
                // Dot-stuffing: the leading dot is dropped (RFC 5321 §4.5.2).
                _ => self.text_byte(b, out),
            },
            State::DotCr => match b {
                b'\n' => {
                    self.line_len = 0;
                    self.state = State::Done;
                }
                _ => {
                    // `.` CR x: the CR was bare; the dot was stuffing.
                    self.fail(DataError::BareLineEnd);
                    self.emit(out, b"\r");
                    self.state = State::Text;
                    self.text_byte(b, out);
                }
            },
            State::Text => self.text_byte(b, out),
            State::Cr => match b {
                b'\n' => {
                    self.count_line(1);
                    self.emit(out, b"\r\n");
                    self.line_len = 0;
                    self.state = State::LineStart;
                }
                _ => {
                    self.fail(DataError::BareLineEnd);
                    self.emit(out, b"\r");
                    self.state = State::Text;
                    self.text_byte(b, out);
                }
            },
            State::Done => {}
        }
    }

    /// A byte in text position (also the first byte of a line).
    fn text_byte(&mut self, b: u8, out: &mut Vec<u8>) {
        self.count_line(1);
        match b {
            b'\r' => self.state = State::Cr,
            b'\n' => {
                // Bare LF: never a line end for us, so the next "." is text.
                self.fail(DataError::BareLineEnd);
                self.emit(out, b"\n");
                self.state = State::Text;
            }
            _ => {
                self.emit(out, &[b]);
                self.state = State::Text;
            }
        }
    }
}

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
    fn empty_body() {
        let (out, fed, err) = decode_all(b".\r\n", 100, 1000);
        assert!(out.is_empty() && fed.done && err.is_none());
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
