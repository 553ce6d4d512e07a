//! Cheap checks on a message's header section before it is stored: a cap on
//! its size (a 1 MB header or 10k header lines is an attack, not mail) and on
//! `Received:` lines (RFC 5321 §6.3: a message that has passed through too
//! many hops is in a loop). Pure and fuzzable; looks only at the octets
//! before the first empty line.

/// Why a header section is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// More header octets than allowed: `552 5.3.4`.
    TooBig,
    /// More header lines than allowed: `552 5.3.4`.
    TooManyLines,
    /// More `Received:` lines than allowed: `554 5.4.6` (mail loop).
    Loop,
}

/// Limits for [`check`].
#[derive(Debug, Clone, Copy)]
pub struct HeaderLimits {
    /// Octets before the empty line that ends the header.
    pub max_bytes: usize,
    /// Header lines (field lines and continuation lines).
    pub max_lines: usize,
    /// `Received:` fields.
    pub max_received: usize,
}

/// Check the header section of `message` (which starts with the header).
pub fn check(message: &[u8], limits: HeaderLimits) -> Result<(), HeaderError> {
    let mut lines = 0usize;
    let mut received = 0usize;
    let mut offset = 0usize;
    for line in message.split(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\r").unwrap_or(line);
        if content.is_empty() {
            return Ok(());
        }
        offset += line.len() + 1;
        if offset > limits.max_bytes {
            return Err(HeaderError::TooBig);
        }
        lines += 1;
        if lines > limits.max_lines {
            return Err(HeaderError::TooManyLines);
        }
        if content
            .get(..9)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"received:"))
        {
            received += 1;
            if received > limits.max_received {
                return Err(HeaderError::Loop);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: HeaderLimits = HeaderLimits {
        max_bytes: 1000,
        max_lines: 10,
        max_received: 3,
    };

    #[test]
    fn limits() {
        assert_eq!(check(b"A: b\r\n\r\nbody", L), Ok(()));
        assert_eq!(check(b"", L), Ok(()));
        let loopy = "Received: x\r\n".repeat(4) + "\r\n";
        assert_eq!(check(loopy.as_bytes(), L), Err(HeaderError::Loop));
        let ok = "received: x\r\n".repeat(3) + "\r\n" + &"Received: in body\r\n".repeat(9);
        assert_eq!(check(ok.as_bytes(), L), Ok(()));
        let many = "X: y\r\n".repeat(11);
        assert_eq!(check(many.as_bytes(), L), Err(HeaderError::TooManyLines));
        let big = format!("X: {}\r\n", "y".repeat(1000));
        assert_eq!(check(big.as_bytes(), L), Err(HeaderError::TooBig));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(input in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
            let _ = check(&input, L);
        }
    }
}
