//! Mailpit's search syntax as a pure parser ([`Query::parse`]) and matcher
//! ([`Query::matches`]) over a [`Doc`], the searchable facts of one message.
//! No I/O and no clock, so the conformance table below pins every filter.
//!
//! Syntax (Mailpit's documented search filters): words separated by spaces,
//! `"quoted phrases"` (quotes may follow a prefix: `subject:"a b"`), a
//! leading `-` or `!` negates a term. Filters: `to:` `from:` `cc:` `bcc:`
//! `reply-to:` `addressed:` (any of from/to/cc/bcc/reply-to) `subject:`
//! `message-id:` `tag:` `is:read` `is:unread` `is:tagged` `has:attachment`
//! `has:inline` `after:` `before:` (`YYYY-MM-DD` or `YYYY-MM-DD HH:MM[:SS]`,
//! UTC) `larger:` `smaller:` (`2048`, `10k`, `1.5MB`). Anything else is a
//! case-insensitive substring of the message's search text. All terms must
//! hold. As in Mailpit, an unparsable date or size filter is ignored.

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 1024;
/// Most terms in one query.
pub const MAX_TERMS: usize = 32;

/// A query that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// Longer than [`MAX_QUERY_BYTES`].
    #[error("search query longer than {MAX_QUERY_BYTES} bytes")]
    TooLong,
    /// More than [`MAX_TERMS`] terms.
    #[error("search query has more than {MAX_TERMS} terms")]
    TooManyTerms,
}

/// One condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Substring of the search text (lowercase).
    Text(String),
    /// Substring of a To address or name.
    To(String),
    /// Substring of the From address or name.
    From(String),
    /// Substring of a Cc address or name.
    Cc(String),
    /// Substring of a Bcc address.
    Bcc(String),
    /// Substring of a Reply-To address or name.
    ReplyTo(String),
    /// Substring of any From, To, Cc, Bcc or Reply-To address or name.
    Addressed(String),
    /// Substring of the subject.
    Subject(String),
    /// Substring of the Message-ID (angle brackets stripped).
    MessageId(String),
    /// Carries this tag (case-insensitive).
    Tag(String),
    /// Marked read.
    Read,
    /// Not marked read.
    Unread,
    /// Has at least one tag.
    Tagged,
    /// Has an attachment.
    Attachment,
    /// Has an inline part.
    Inline,
    /// Received at or after (ms since the epoch).
    After(u64),
    /// Received at or before (ms since the epoch).
    Before(u64),
    /// Larger than, in bytes.
    Larger(u64),
    /// Smaller than, in bytes.
    Smaller(u64),
}

/// A filter, possibly negated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// `-` or `!` in front.
    pub negated: bool,
    /// What must (or must not) hold.
    pub filter: Filter,
}

/// A parsed query: every term must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    /// The terms, in the order written.
    pub terms: Vec<Term>,
}

/// What a query can see of one message. Strings are lowercase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Doc {
    /// `name <address>` of From.
    pub from: String,
    /// `name <address>` of each To, joined by `, `.
    pub to: String,
    /// Likewise for Cc.
    pub cc: String,
    /// Likewise for Bcc.
    pub bcc: String,
    /// Likewise for Reply-To.
    pub reply_to: String,
    /// Subject.
    pub subject: String,
    /// Message-ID without angle brackets.
    pub message_id: String,
    /// Tags (case kept).
    pub tags: Vec<String>,
    /// Read flag.
    pub read: bool,
    /// Attachments (not inline parts).
    pub attachments: usize,
    /// Inline parts.
    pub inline: usize,
    /// Received, ms since the epoch.
    pub received_ms: u64,
    /// Raw size in bytes.
    pub size: u64,
    /// Subject, addresses, text body, Message-ID and attachment names.
    pub text: String,
}

impl Query {
    /// Parse `input`; unknown prefixes are plain text, as in Mailpit.
    pub fn parse(input: &str) -> Result<Self, QueryError> {
        if input.len() > MAX_QUERY_BYTES {
            return Err(QueryError::TooLong);
        }
        let mut terms = Vec::new();
        for word in split_args(input) {
            let (negated, word) = match word.strip_prefix(['-', '!']) {
                Some(rest) if !rest.is_empty() => (true, rest.to_owned()),
                _ => (false, word),
            };
            let Some(filter) = filter_of(&word) else {
                continue;
            };
            if terms.len() == MAX_TERMS {
                return Err(QueryError::TooManyTerms);
            }
            terms.push(Term { negated, filter });
        }
        Ok(Self { terms })
    }

    /// True when every term holds for `doc`.
    pub fn matches(&self, doc: &Doc) -> bool {
        self.terms
            .iter()
            .all(|t| holds(&t.filter, doc) != t.negated)
    }
}

fn holds(f: &Filter, d: &Doc) -> bool {
    match f {
        Filter::Text(s) => d.text.contains(s.as_str()),
        Filter::To(s) => d.to.contains(s.as_str()),
        Filter::From(s) => d.from.contains(s.as_str()),
        Filter::Cc(s) => d.cc.contains(s.as_str()),
        Filter::Bcc(s) => d.bcc.contains(s.as_str()),
        Filter::ReplyTo(s) => d.reply_to.contains(s.as_str()),
        Filter::Addressed(s) => [&d.from, &d.to, &d.cc, &d.bcc, &d.reply_to]
            .iter()
            .any(|h| h.contains(s.as_str())),
        Filter::Subject(s) => d.subject.contains(s.as_str()),
        Filter::MessageId(s) => d.message_id.contains(s.as_str()),
        Filter::Tag(s) => d.tags.iter().any(|t| t.eq_ignore_ascii_case(s)),
        Filter::Read => d.read,
        Filter::Unread => !d.read,
        Filter::Tagged => !d.tags.is_empty(),
        Filter::Attachment => d.attachments > 0,
        Filter::Inline => d.inline > 0,
        Filter::After(ms) => d.received_ms >= *ms,
        Filter::Before(ms) => d.received_ms <= *ms,
        Filter::Larger(n) => d.size > *n,
        Filter::Smaller(n) => d.size < *n,
    }
}

/// Words split on whitespace, with `"…"` grouping (quotes removed).
fn split_args(input: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in input.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A filter built from the text after its `prefix:`.
type MakeFilter = fn(String) -> Filter;

fn filter_of(word: &str) -> Option<Filter> {
    let lower = word.to_lowercase();
    let value = |prefix: &str| -> Option<String> {
        let v = lower.get(prefix.len()..)?.trim().to_owned();
        (!v.is_empty()).then_some(v)
    };
    let kept_case = |prefix: &str| -> Option<String> {
        let v = word.get(prefix.len()..)?.trim();
        let v = v.strip_prefix('<').unwrap_or(v);
        let v = v.strip_suffix('>').unwrap_or(v);
        (!v.is_empty()).then(|| v.to_owned())
    };
    let prefixed: &[(&str, MakeFilter)] = &[
        ("to:", Filter::To),
        ("from:", Filter::From),
        ("cc:", Filter::Cc),
        ("bcc:", Filter::Bcc),
        ("reply-to:", Filter::ReplyTo),
        ("addressed:", Filter::Addressed),
        ("subject:", Filter::Subject),
    ];
    for (prefix, make) in prefixed {
        if lower.starts_with(prefix) {
            return value(prefix).map(make);
        }
    }
    if lower.starts_with("message-id:") {
        return kept_case("message-id:").map(|v| Filter::MessageId(v.to_lowercase()));
    }
    if lower.starts_with("tag:") {
        return kept_case("tag:").map(Filter::Tag);
    }
    match lower.as_str() {
        "is:read" => return Some(Filter::Read),
        "is:unread" => return Some(Filter::Unread),
        "is:tagged" => return Some(Filter::Tagged),
        "has:attachment" | "has:attachments" => return Some(Filter::Attachment),
        "has:inline" | "has:inlines" => return Some(Filter::Inline),
        _ => {}
    }
    if lower.starts_with("after:") {
        return value("after:")
            .and_then(|v| parse_date_ms(&v))
            .map(Filter::After);
    }
    if lower.starts_with("before:") {
        return value("before:")
            .and_then(|v| parse_date_ms(&v))
            .map(Filter::Before);
    }
    if lower.starts_with("larger:") {
        if let Some(n) = value("larger:").and_then(|v| parse_size(&v)) {
            return Some(Filter::Larger(n));
        }
    }
    if lower.starts_with("smaller:") {
        if let Some(n) = value("smaller:").and_then(|v| parse_size(&v)) {
            return Some(Filter::Smaller(n));
        }
    }
    let text = lower.trim().to_owned();
    (!text.is_empty()).then_some(Filter::Text(text))
}

/// `YYYY-MM-DD`, optionally followed by `T` or a space and `HH:MM[:SS]`, in UTC.
pub fn parse_date_ms(s: &str) -> Option<u64> {
    let (date, time) = match s.split_once(['t', 'T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut d = date.split('-');
    let y: u64 = d.next()?.parse().ok()?;
    let m: u64 = d.next()?.parse().ok()?;
    let day: u64 = d.next()?.parse().ok()?;
    if d.next().is_some()
        || !(1970..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
    {
        return None;
    }
    let mut secs = days_from_civil(y, m, day) * 86_400;
    if let Some(t) = time {
        let t = t.trim_end_matches('z');
        let mut p = t.split(':');
        let h: u64 = p.next()?.parse().ok()?;
        let min: u64 = p.next()?.parse().ok()?;
        let sec: u64 = p.next().map(str::parse).transpose().ok()?.unwrap_or(0);
        if p.next().is_some() || h > 23 || min > 59 || sec > 60 {
            return None;
        }
        secs += h * 3600 + min * 60 + sec;
    }
    secs.checked_mul(1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the era method).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2048`, `10k`, `10kb`, `1.5m`, `2MB` (binary multiples, as Mailpit).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(digits_end);
    let n: f64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" => 1024.0,
        "m" | "mb" => 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = n * mult;
    (bytes.is_finite() && (1.0..1e15).contains(&bytes)).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message every row is matched against.
    fn doc() -> Doc {
        Doc {
            from: "shop <noreply@shop.example>".into(),
            to: "ana <ana@uncorreo.test>".into(),
            cc: "audit <audit@shop.example>".into(),
            bcc: "<hidden@uncorreo.test>".into(),
            reply_to: "help <help@shop.example>".into(),
            subject: "your verification code".into(),
            message_id: "t1@shop.example".into(),
            tags: vec!["Signup".into()],
            read: false,
            attachments: 2,
            inline: 0,
            // 2026-11-24T10:00:00Z
            received_ms: 1_795_514_400_000,
            size: 4096,
            text: "your verification code shop noreply@shop.example your code is 482913.".into(),
        }
    }

    /// Each documented filter: one query that must match `doc()`, one that must not.
    const TABLE: &[(&str, &str, &str)] = &[
        ("bare word", "verification", "invoice"),
        ("bare words all hold", "code 482913", "code 999999"),
        ("phrase", "\"verification code\"", "\"code verification\""),
        ("negated word (-)", "-invoice", "-verification"),
        ("negated word (!)", "!invoice", "!verification"),
        ("to:", "to:ana@uncorreo.test", "to:bob@uncorreo.test"),
        ("to: by name", "to:Ana", "to:Bob"),
        ("from:", "from:shop.example", "from:bank.example"),
        ("cc:", "cc:audit@", "cc:ana@"),
        ("bcc:", "bcc:hidden@", "bcc:audit@"),
        ("reply-to:", "reply-to:help@", "reply-to:audit@"),
        ("addressed:", "addressed:hidden@", "addressed:nobody@"),
        ("subject:", "subject:verification", "subject:invoice"),
        (
            "subject: phrase",
            "subject:\"verification code\"",
            "subject:\"code verification\"",
        ),
        (
            "negated subject:",
            "-subject:invoice",
            "-subject:verification",
        ),
        (
            "message-id:",
            "message-id:t1@shop.example",
            "message-id:t2@shop.example",
        ),
        (
            "message-id: in brackets",
            "message-id:<t1@shop.example>",
            "message-id:<t2@shop.example>",
        ),
        ("tag:", "tag:signup", "tag:newsletter"),
        ("is:unread", "is:unread", "is:read"),
        ("negated is:read", "!is:read", "!is:unread"),
        ("is:tagged", "is:tagged", "-is:tagged"),
        ("has:attachment", "has:attachment", "-has:attachment"),
        ("has:inline", "-has:inline", "has:inline"),
        ("after:", "after:2026-11-24", "after:2026-11-25"),
        (
            "after: with time",
            "after:\"2026-11-24 09:59\"",
            "after:\"2026-11-24 10:01\"",
        ),
        ("before:", "before:2026-11-25", "before:2026-11-24"),
        ("larger:", "larger:4000", "larger:4k"),
        ("smaller:", "smaller:1m", "smaller:4k"),
        (
            "prefixes are case-insensitive",
            "SUBJECT:Verification",
            "FROM:bank",
        ),
        (
            "several filters",
            "to:ana subject:code has:attachment",
            "to:ana subject:code -has:attachment",
        ),
    ];

    #[test]
    fn conformance_table() {
        let d = doc();
        for (name, yes, no) in TABLE {
            let q = Query::parse(yes).unwrap();
            assert!(q.matches(&d), "{name}: {yes:?} must match ({q:?})");
            let q = Query::parse(no).unwrap();
            assert!(!q.matches(&d), "{name}: {no:?} must not match ({q:?})");
        }
    }

    #[test]
    fn unusable_dates_and_sizes_are_ignored_like_mailpit() {
        assert_eq!(Query::parse("after:yesterday").unwrap().terms, vec![]);
        assert_eq!(Query::parse("before:2026-13-01").unwrap().terms, vec![]);
        // An unparsable size is searched as text, as in Mailpit.
        assert_eq!(
            Query::parse("larger:huge").unwrap().terms[0].filter,
            Filter::Text("larger:huge".into())
        );
        assert_eq!(Query::parse("").unwrap(), Query::default());
        assert!(Query::default().matches(&doc()));
    }

    #[test]
    fn queries_are_bounded() {
        assert_eq!(
            Query::parse(&"a".repeat(MAX_QUERY_BYTES + 1)),
            Err(QueryError::TooLong)
        );
        let many = vec!["w"; MAX_TERMS + 1].join(" ");
        assert_eq!(Query::parse(&many), Err(QueryError::TooManyTerms));
        assert!(Query::parse(&vec!["w"; MAX_TERMS].join(" ")).is_ok());
    }

    #[test]
    fn dates_and_sizes() {
        assert_eq!(parse_date_ms("1970-01-01"), Some(0));
        assert_eq!(parse_date_ms("2026-11-24t10:00"), Some(1_795_514_400_000));
        assert_eq!(parse_date_ms("2000-02-29"), Some(951_782_400_000));
        assert_eq!(parse_size("1.5m"), Some(1_572_864));
        assert_eq!(parse_size("10KB"), Some(10_240));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("5gb"), None);
    }
}
