//! Cutting UTF-8 text to a byte limit without splitting a character. Every
//! stored or answered string with a length bound goes through here.

/// The longest prefix of `s` that is at most `max` bytes and ends on a
/// character boundary.
pub fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// Truncate `s` in place to at most `max` bytes on a character boundary.
/// Returns whether anything was cut.
pub fn clip(s: &mut String, max: usize) -> bool {
    let keep = prefix(s, max).len();
    if keep == s.len() {
        return false;
    }
    s.truncate(keep);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn never_splits_a_character() {
        assert_eq!(prefix("ééé", 3), "é");
        assert_eq!(prefix("ééé", 4), "éé");
        assert_eq!(prefix("abc", 10), "abc");
        assert_eq!(prefix("€", 2), "");
        let mut s = "a€b".to_owned();
        assert!(clip(&mut s, 3));
        assert_eq!(s, "a");
        assert!(!clip(&mut s, 3));
    }

    proptest! {
        #[test]
        fn prefix_is_the_longest_boundary_prefix(s in "\\PC{0,40}", max in 0usize..80) {
            let p = prefix(&s, max);
            prop_assert!(p.len() <= max);
            prop_assert!(s.starts_with(p));
            // One more character would not fit.
            if let Some(c) = s[p.len()..].chars().next() {
                prop_assert!(p.len() + c.len_utf8() > max);
            }
        }
    }
}
