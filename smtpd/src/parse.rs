//! The pure SMTP command parser: one command line in, a [`Command`] or a
//! [`ParseError`] out. No I/O, no allocation beyond the owned strings of the
//! result, no panics on any input — this is the function the fuzz target calls.
//!
//! The parser checks syntax only. Whether an address is ours, and whether its
//! local part is one we hold a mailbox for, is the engine's call
//! (`Engine::resolve`), so relay tricks (`%`, `!`, quoted local parts) reach
//! the engine as written and are refused there. Source routes
//! (`<@a,@b:user@c>`, RFC 5321 §4.1.1.3) are recognised here: stripped from
//! `MAIL FROM` (the sender is informational) and reported in
//! [`Path::had_route`] so the session can refuse them in `RCPT TO`.

/// Longest address we accept in a path (RFC 5321 §4.5.3.1.3: 256 octets for a path).
pub const MAX_PATH: usize = 256;
/// Most parameters on one MAIL or RCPT line.
pub const MAX_PARAMS: usize = 16;

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO <domain>`.
    Ehlo(String),
    /// `HELO <domain>`.
    Helo(String),
    /// `MAIL FROM:<path> [params]`.
    Mail {
        /// The reverse path; empty for the null sender `<>`.
        from: Path,
        /// ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<path> [params]`.
    Rcpt {
        /// The forward path.
        to: Path,
        /// ESMTP parameters.
        params: RcptParams,
    },
    /// `DATA`.
    Data,
    /// `BDAT <size> [LAST]` (RFC 3030).
    Bdat {
        /// Octets of the chunk that follows the command line.
        size: u64,
        /// True for the last chunk.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY <string>`.
    Vrfy,
    /// `EXPN <string>`.
    Expn,
    /// `HELP [topic]`.
    Help,
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH <mechanism> [initial-response]` (RFC 4954).
    Auth {
        /// The SASL mechanism named.
        mechanism: Mechanism,
        /// The initial response, still base64 (`=` for an empty one).
        initial: Option<String>,
    },
}

/// A SASL mechanism named in `AUTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// `PLAIN` (RFC 4616).
    Plain,
    /// `LOGIN` (the de-facto username/password exchange).
    Login,
    /// Anything else: `504 5.5.4`.
    Other,
}

/// An address in angle brackets, as written, minus any source route.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Path {
    /// `local@domain` exactly as written (quoted local parts stay quoted);
    /// empty for `<>`.
    pub address: String,
    /// True when a source route (`@a,@b:`) preceded the mailbox.
    pub had_route: bool,
}

impl Path {
    /// True when any octet is outside ASCII (needs `SMTPUTF8`, RFC 6531).
    pub fn is_utf8(&self) -> bool {
        !self.address.is_ascii()
    }
}

/// The body type a client declared with `BODY=` (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    /// No `BODY=` or `BODY=7BIT`.
    #[default]
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// `RET=` of `MAIL FROM` (RFC 3461 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// `RET=FULL`.
    Full,
    /// `RET=HDRS`.
    Headers,
}

/// Parameters of `MAIL FROM` we understand.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    /// `SIZE=` (RFC 1870): the client's estimate of the message size.
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: BodyType,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `RET=` (DSN, RFC 3461).
    pub ret: Option<Ret>,
    /// `ENVID=` (DSN), still xtext-encoded.
    pub envid: Option<String>,
    /// `AUTH=` (RFC 4954 §5), still xtext-encoded; informational.
    pub auth: Option<String>,
}

/// `NOTIFY=` of `RCPT TO` (RFC 3461 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    /// `NEVER`: no other keyword may be present.
    pub never: bool,
    /// `SUCCESS`.
    pub success: bool,
    /// `FAILURE`.
    pub failure: bool,
    /// `DELAY`.
    pub delay: bool,
}

/// Parameters of `RCPT TO` we understand (DSN only; we deliver, so they
/// are checked and kept but change nothing).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptParams {
    /// `NOTIFY=`.
    pub notify: Option<Notify>,
    /// `ORCPT=addr-type;xtext`: the type and the still-encoded address.
    pub orcpt: Option<(String, String)>,
}

/// Longest `ENVID` (RFC 3461 §4.4: 100 characters).
pub const MAX_ENVID: usize = 100;
/// Longest `ORCPT` value (RFC 3461 §4.2: 500 characters).
pub const MAX_ORCPT: usize = 500;

/// Why a command line could not be parsed. Each variant maps to one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// `500 5.5.1`: not a command we know.
    #[error("command not recognized")]
    Unknown,
    /// `501 5.5.4`: a known command with bad arguments.
    #[error("syntax error in arguments: {0}")]
    Syntax(&'static str),
    /// `501 5.1.7` / `501 5.1.3`: the path in MAIL/RCPT is malformed.
    #[error("bad address syntax")]
    BadPath,
    /// `555 5.5.4`: a MAIL/RCPT parameter we have never heard of.
    #[error("parameter not recognized or not implemented")]
    BadParam,
    /// `555 5.5.4`: a parameter we know by name and do not offer
    /// (`REQUIRETLS`, `BODY=BINARYMIME`, …); the reply names it.
    #[error("{0} not supported")]
    Unsupported(&'static str),
    /// `501 5.5.4`: a parameter we offer, with a malformed value.
    #[error("bad value for {0}")]
    BadValue(&'static str),
    /// `501 5.5.4`: the same parameter twice.
    #[error("duplicate {0} parameter")]
    Duplicate(&'static str),
    /// `500 5.5.2`: the line contains a NUL or is not valid UTF-8.
    #[error("invalid characters in command")]
    BadBytes,
}

/// Parse one command line. `line` may or may not end in CRLF (or a bare LF);
/// the line terminator is ignored.
pub fn parse_command(line: &[u8]) -> Result<Command, ParseError> {
    let line = strip_eol(line);
    if line.contains(&0) {
        return Err(ParseError::BadBytes);
    }
    let line = std::str::from_utf8(line).map_err(|_| ParseError::BadBytes)?;
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    if verb.len() > 8 {
        return Err(ParseError::Unknown);
    }
    let mut upper = [0u8; 8];
    for (d, s) in upper.iter_mut().zip(verb.bytes()) {
        *d = s.to_ascii_uppercase();
    }
    let verb = upper.get(..verb.len()).unwrap_or(&[]);
    let rest_trim = rest.trim_matches(|c| c == ' ' || c == '\t');
    match verb {
        b"EHLO" => Ok(Command::Ehlo(hello_arg(rest_trim)?)),
        b"HELO" => Ok(Command::Helo(hello_arg(rest_trim)?)),
        b"MAIL" => parse_mail(rest),
        b"RCPT" => parse_rcpt(rest),
        b"DATA" => no_args(rest_trim, Command::Data),
        b"BDAT" => parse_bdat(rest_trim),
        b"RSET" => no_args(rest_trim, Command::Rset),
        b"NOOP" => Ok(Command::Noop),
        b"QUIT" => no_args(rest_trim, Command::Quit),
        b"VRFY" if !rest_trim.is_empty() => Ok(Command::Vrfy),
        b"VRFY" => Err(ParseError::Syntax("VRFY needs an argument")),
        b"EXPN" => Ok(Command::Expn),
        b"HELP" => Ok(Command::Help),
        b"STARTTLS" => no_args(rest_trim, Command::StartTls),
        b"AUTH" => parse_auth(rest_trim),
        _ => Err(ParseError::Unknown),
    }
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn no_args(rest: &str, cmd: Command) -> Result<Command, ParseError> {
    if rest.is_empty() {
        Ok(cmd)
    } else {
        Err(ParseError::Syntax("no arguments allowed"))
    }
}

fn hello_arg(rest: &str) -> Result<String, ParseError> {
    // The HELO name is informational (it goes into our Received: line after
    // sanitising); any single printable token is accepted.
    let name = rest.split([' ', '\t']).next().unwrap_or("");
    if name.is_empty() {
        return Err(ParseError::Syntax(
            "a domain or address literal is required",
        ));
    }
    if name.len() > 255 {
        return Err(ParseError::Syntax("domain too long"));
    }
    if name.chars().any(char::is_control) {
        return Err(ParseError::Syntax("control characters in domain"));
    }
    Ok(name.to_owned())
}

/// Strip `keyword` (case-insensitive) and an optional space after the colon,
/// as many clients send `MAIL FROM: <a@b>`.
fn after_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let tail = rest.get(keyword.len()..)?;
    Some(tail.trim_start_matches(' '))
}

fn parse_mail(rest: &str) -> Result<Command, ParseError> {
    let rest = after_keyword(rest, "FROM:").ok_or(ParseError::Syntax("expected FROM:<address>"))?;
    let (from, params) = parse_path(rest, true)?;
    let mut out = MailParams::default();
    for (i, p) in params.split(' ').filter(|p| !p.is_empty()).enumerate() {
        if i >= MAX_PARAMS {
            return Err(ParseError::BadParam);
        }
        let (key, value) = match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        };
        let is = |name: &str| key.eq_ignore_ascii_case(name);
        if is("SIZE") {
            let v = value.ok_or(ParseError::BadValue("SIZE"))?;
            if v.is_empty() || v.len() > 40 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseError::BadValue("SIZE"));
            }
            once(&out.size, "SIZE")?;
            // Saturate: a 30-digit SIZE is just "too big", answered at MAIL.
            out.size = Some(v.parse::<u64>().unwrap_or(u64::MAX));
        } else if is("BODY") {
            out.body = match value {
                Some(v) if v.eq_ignore_ascii_case("7BIT") => BodyType::SevenBit,
                Some(v) if v.eq_ignore_ascii_case("8BITMIME") => BodyType::EightBitMime,
                Some(v) if v.eq_ignore_ascii_case("BINARYMIME") => {
                    return Err(ParseError::Unsupported("BODY=BINARYMIME"))
                }
                _ => return Err(ParseError::BadValue("BODY")),
            };
        } else if is("SMTPUTF8") {
            if value.is_some() {
                return Err(ParseError::BadValue("SMTPUTF8"));
            }
            out.smtputf8 = true;
        } else if is("RET") {
            once(&out.ret, "RET")?;
            out.ret = Some(match value {
                Some(v) if v.eq_ignore_ascii_case("FULL") => Ret::Full,
                Some(v) if v.eq_ignore_ascii_case("HDRS") => Ret::Headers,
                _ => return Err(ParseError::BadValue("RET")),
            });
        } else if is("ENVID") {
            once(&out.envid, "ENVID")?;
            let v = value
                .filter(|v| !v.is_empty() && v.len() <= MAX_ENVID && is_xtext(v))
                .ok_or(ParseError::BadValue("ENVID"))?;
            out.envid = Some(v.to_owned());
        } else if is("AUTH") {
            once(&out.auth, "AUTH")?;
            let v = value
                .filter(|v| !v.is_empty() && v.len() <= MAX_PATH + 2 && is_xtext(v))
                .ok_or(ParseError::BadValue("AUTH"))?;
            out.auth = Some(v.to_owned());
        } else if let Some(name) = known_unsupported(key) {
            return Err(ParseError::Unsupported(name));
        } else {
            return Err(ParseError::BadParam);
        }
    }
    Ok(Command::Mail { from, params: out })
}

fn parse_rcpt(rest: &str) -> Result<Command, ParseError> {
    let rest = after_keyword(rest, "TO:").ok_or(ParseError::Syntax("expected TO:<address>"))?;
    let (to, params) = parse_path(rest, false)?;
    if to.address.is_empty() {
        return Err(ParseError::BadPath);
    }
    let mut out = RcptParams::default();
    for (i, p) in params.split(' ').filter(|p| !p.is_empty()).enumerate() {
        if i >= MAX_PARAMS {
            return Err(ParseError::BadParam);
        }
        let (key, value) = match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        };
        if key.eq_ignore_ascii_case("NOTIFY") {
            once(&out.notify, "NOTIFY")?;
            out.notify = Some(parse_notify(value.unwrap_or(""))?);
        } else if key.eq_ignore_ascii_case("ORCPT") {
            once(&out.orcpt, "ORCPT")?;
            out.orcpt = Some(parse_orcpt(value.unwrap_or(""))?);
        } else if let Some(name) = known_unsupported(key) {
            return Err(ParseError::Unsupported(name));
        } else {
            return Err(ParseError::BadParam);
        }
    }
    Ok(Command::Rcpt { to, params: out })
}

/// Refuse a second occurrence of a parameter.
fn once<T>(seen: &Option<T>, name: &'static str) -> Result<(), ParseError> {
    match seen {
        Some(_) => Err(ParseError::Duplicate(name)),
        None => Ok(()),
    }
}

/// Parameters of extensions we do not offer, by the name the reply uses.
/// A client only sends them when we advertise them, so seeing one means a
/// client that insists: it must learn exactly which one we lack.
fn known_unsupported(key: &str) -> Option<&'static str> {
    [
        "REQUIRETLS",
        "MT-PRIORITY",
        "DELIVERBY",
        "BY",
        "HOLDFOR",
        "HOLDUNTIL",
        "FUTURERELEASE",
        "MTRK",
        "LIMITS",
        "RRVS",
        "CONPERM",
        "CONNEG",
        "BURL",
    ]
    .into_iter()
    .find(|name| key.eq_ignore_ascii_case(name))
}

/// RFC 3461 §4: xtext is printable ASCII except `+` and `=`, with `+XX`
/// (two upper-case hex digits) for anything else.
fn is_xtext(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'+' => {
                let hex =
                    |x: Option<&u8>| x.is_some_and(|x| matches!(x, b'0'..=b'9' | b'A'..=b'F'));
                if !(hex(b.get(i + 1)) && hex(b.get(i + 2))) {
                    return false;
                }
                i += 3;
            }
            b'!'..=b'~' if c != b'=' => i += 1,
            _ => return false,
        }
    }
    true
}

fn parse_notify(v: &str) -> Result<Notify, ParseError> {
    let bad = ParseError::BadValue("NOTIFY");
    let mut n = Notify::default();
    if v.is_empty() {
        return Err(bad);
    }
    for word in v.split(',') {
        let flag = if word.eq_ignore_ascii_case("NEVER") {
            &mut n.never
        } else if word.eq_ignore_ascii_case("SUCCESS") {
            &mut n.success
        } else if word.eq_ignore_ascii_case("FAILURE") {
            &mut n.failure
        } else if word.eq_ignore_ascii_case("DELAY") {
            &mut n.delay
        } else {
            return Err(bad);
        };
        if *flag {
            return Err(bad);
        }
        *flag = true;
    }
    // NEVER stands alone (RFC 3461 §4.1).
    if n.never && (n.success || n.failure || n.delay) {
        return Err(bad);
    }
    Ok(n)
}

fn parse_orcpt(v: &str) -> Result<(String, String), ParseError> {
    let bad = ParseError::BadValue("ORCPT");
    let (kind, addr) = v.split_once(';').ok_or(bad)?;
    let atom = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if v.len() > MAX_ORCPT || !atom(kind) || addr.is_empty() || !is_xtext(addr) {
        return Err(bad);
    }
    Ok((kind.to_owned(), addr.to_owned()))
}

fn parse_auth(rest: &str) -> Result<Command, ParseError> {
    let mut parts = rest.split(' ').filter(|p| !p.is_empty());
    let name = parts
        .next()
        .ok_or(ParseError::Syntax("AUTH needs a mechanism"))?;
    let mechanism = if name.eq_ignore_ascii_case("PLAIN") {
        Mechanism::Plain
    } else if name.eq_ignore_ascii_case("LOGIN") {
        Mechanism::Login
    } else {
        Mechanism::Other
    };
    let initial = parts.next().map(str::to_owned);
    if parts.next().is_some() {
        return Err(ParseError::Syntax("too many arguments"));
    }
    Ok(Command::Auth { mechanism, initial })
}

fn parse_bdat(rest: &str) -> Result<Command, ParseError> {
    let mut parts = rest.split(' ').filter(|p| !p.is_empty());
    let size = parts
        .next()
        .ok_or(ParseError::Syntax("BDAT needs a chunk size"))?;
    if size.len() > 20 || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::Syntax("chunk size must be a number"));
    }
    let size = size
        .parse::<u64>()
        .map_err(|_| ParseError::Syntax("chunk size out of range"))?;
    let last = match parts.next() {
        None => false,
        Some(l) if l.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(ParseError::Syntax("expected LAST")),
    };
    if parts.next().is_some() {
        return Err(ParseError::Syntax("too many arguments"));
    }
    Ok(Command::Bdat { size, last })
}

/// Parse `<path>` (or `<>` when `allow_null`) at the start of `s`; return it
/// and what follows (the parameters).
fn parse_path(s: &str, allow_null: bool) -> Result<(Path, &str), ParseError> {
    let inner_start = s.strip_prefix('<').ok_or(ParseError::BadPath)?;
    // Find the closing '>' outside a quoted string.
    let mut in_quote = false;
    let mut escaped = false;
    let mut end = None;
    for (i, c) in inner_start.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            '>' if !in_quote => {
                end = Some(i);
                break;
            }
            _ => {}
        }
    }
    let end = end.ok_or(ParseError::BadPath)?;
    let inner = &inner_start[..end];
    let params = &inner_start[end + 1..];
    if !params.is_empty() && !params.starts_with(' ') {
        return Err(ParseError::BadPath);
    }
    if inner.is_empty() {
        return if allow_null {
            Ok((Path::default(), params))
        } else {
            Err(ParseError::BadPath)
        };
    }
    let (had_route, mailbox) = match inner.strip_prefix('@') {
        Some(route) => {
            let (route, mailbox) = route.split_once(':').ok_or(ParseError::BadPath)?;
            for hop in route.split(',') {
                let hop = hop.strip_prefix('@').unwrap_or(hop);
                if !is_domain(hop) {
                    return Err(ParseError::BadPath);
                }
            }
            (true, mailbox)
        }
        None => (false, inner),
    };
    if mailbox.len() > MAX_PATH || !is_mailbox(mailbox) {
        return Err(ParseError::BadPath);
    }
    Ok((
        Path {
            address: mailbox.to_owned(),
            had_route,
        },
        params,
    ))
}

/// `local-part "@" ( domain / address-literal )`, RFC 5321 §4.1.2, with
/// RFC 6531's UTF-8 allowed in atoms.
fn is_mailbox(s: &str) -> bool {
    let Some(at) = s.rfind('@') else {
        return false;
    };
    let (local, domain) = (&s[..at], &s[at + 1..]);
    is_local_part(local) && (is_domain(domain) || is_address_literal(domain))
}

fn is_local_part(s: &str) -> bool {
    if s.is_empty() || s.len() > 64 {
        return false;
    }
    if let Some(q) = s.strip_prefix('"') {
        let Some(body) = q.strip_suffix('"') else {
            return false;
        };
        let mut escaped = false;
        for c in body.chars() {
            if escaped {
                if !(' '..='~').contains(&c) {
                    return false;
                }
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' || (c.is_ascii() && !(' '..='~').contains(&c)) {
                return false;
            }
        }
        return !escaped;
    }
    s.split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_control())
}

fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| {
                    c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && !c.is_control())
                })
        })
}

fn is_address_literal(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) else {
        return false;
    };
    match inner.strip_prefix("IPv6:") {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => inner.parse::<std::net::Ipv4Addr>().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(s: &str) -> Result<Command, ParseError> {
        parse_command(s.as_bytes())
    }

    #[test]
    fn verbs_are_case_insensitive_and_eol_is_optional() {
        assert_eq!(
            mail("ehlo client.example\r\n"),
            Ok(Command::Ehlo("client.example".into()))
        );
        assert_eq!(mail("QuIt"), Ok(Command::Quit));
        assert_eq!(mail("NOOP whatever\n"), Ok(Command::Noop));
        assert_eq!(mail("STARTTLS\r\n"), Ok(Command::StartTls));
        assert_eq!(mail("XYZZY\r\n"), Err(ParseError::Unknown));
        assert_eq!(mail("STARTTLSX\r\n"), Err(ParseError::Unknown));
        assert_eq!(mail("\r\n"), Err(ParseError::Unknown));
    }

    #[test]
    fn mail_from_paths_and_params() {
        let Ok(Command::Mail { from, params }) =
            mail("MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8\r\n")
        else {
            panic!("not parsed");
        };
        assert_eq!(from.address, "a@b.example");
        assert_eq!(params.size, Some(1000));
        assert_eq!(params.body, BodyType::EightBitMime);
        assert!(params.smtputf8);
        let Ok(Command::Mail { from, .. }) = mail("mail from: <>") else {
            panic!("null sender");
        };
        assert_eq!(from.address, "");
        assert_eq!(mail("MAIL FROM:<a@b> XFOO=1"), Err(ParseError::BadParam));
        assert_eq!(
            mail("MAIL FROM:<a@b> BODY=BINARYMIME"),
            Err(ParseError::Unsupported("BODY=BINARYMIME"))
        );
        assert_eq!(
            mail("MAIL FROM:<a@b> BODY=9BIT"),
            Err(ParseError::BadValue("BODY"))
        );
        assert_eq!(
            mail("MAIL FROM:<a@b> SIZE=x"),
            Err(ParseError::BadValue("SIZE"))
        );
        assert_eq!(
            mail("MAIL FROM:<a@b> SIZE"),
            Err(ParseError::BadValue("SIZE"))
        );
        assert_eq!(
            mail("MAIL FROM:<a@b> SIZE=1 SIZE=2"),
            Err(ParseError::Duplicate("SIZE"))
        );
        assert_eq!(
            mail("MAIL FROM:<a@b> SMTPUTF8=yes"),
            Err(ParseError::BadValue("SMTPUTF8"))
        );
        assert_eq!(mail("MAIL FROM:a@b"), Err(ParseError::BadPath));
        assert_eq!(
            mail("MAIL TO:<a@b>"),
            Err(ParseError::Syntax("expected FROM:<address>"))
        );
        let Ok(Command::Mail { params, .. }) = mail("MAIL FROM:<a@b> SIZE=999999999999999999999")
        else {
            panic!("huge size");
        };
        assert_eq!(params.size, Some(u64::MAX));
    }

    #[test]
    fn rcpt_paths() {
        let Ok(Command::Rcpt { to, .. }) = mail("RCPT TO:<Box+Tag@uncorreo.test>") else {
            panic!()
        };
        assert_eq!(to.address, "Box+Tag@uncorreo.test");
        assert!(!to.had_route);
        let Ok(Command::Rcpt { to, .. }) = mail("RCPT TO:<@relay.example,@x.example:u@c.example>")
        else {
            panic!()
        };
        assert!(to.had_route);
        assert_eq!(to.address, "u@c.example");
        let Ok(Command::Rcpt { to, .. }) = mail("RCPT TO:<\"a>b@c\"@uncorreo.test>") else {
            panic!()
        };
        assert_eq!(to.address, "\"a>b@c\"@uncorreo.test");
        assert_eq!(mail("RCPT TO:<>"), Err(ParseError::BadPath));
        assert_eq!(mail("RCPT TO:<a@b> XFOO"), Err(ParseError::BadParam));
        assert!(mail("RCPT TO:<a@[127.0.0.1]>").is_ok());
        assert_eq!(mail("RCPT TO:<a@[999.0.0.1]>"), Err(ParseError::BadPath));
        assert_eq!(mail("RCPT TO:<a b@c>"), Err(ParseError::BadPath));
        assert_eq!(mail("RCPT TO:<a@b>x"), Err(ParseError::BadPath));
        let long = format!("RCPT TO:<{}@b.example>", "a".repeat(65));
        assert_eq!(mail(&long), Err(ParseError::BadPath));
    }

    fn rcpt_params(s: &str) -> Result<RcptParams, ParseError> {
        match mail(s)? {
            Command::Rcpt { params, .. } => Ok(params),
            other => panic!("not RCPT: {other:?}"),
        }
    }

    fn mail_params(s: &str) -> Result<MailParams, ParseError> {
        match mail(s)? {
            Command::Mail { params, .. } => Ok(params),
            other => panic!("not MAIL: {other:?}"),
        }
    }

    #[test]
    fn dsn_parameters_are_accepted_with_their_values() {
        let p = mail_params("MAIL FROM:<a@b.example> RET=HDRS ENVID=QQ314159+2B1").unwrap();
        assert_eq!(p.ret, Some(Ret::Headers));
        assert_eq!(p.envid.as_deref(), Some("QQ314159+2B1"));
        let p = mail_params("MAIL FROM:<a@b.example> ret=full AUTH=<>").unwrap();
        assert_eq!(p.ret, Some(Ret::Full));
        assert_eq!(p.auth.as_deref(), Some("<>"));
        let p = rcpt_params(
            "RCPT TO:<a@b.example> NOTIFY=SUCCESS,failure,DELAY ORCPT=rfc822;Bob+40b.example",
        )
        .unwrap();
        assert_eq!(
            p.notify,
            Some(Notify {
                never: false,
                success: true,
                failure: true,
                delay: true
            })
        );
        assert_eq!(
            p.orcpt,
            Some(("rfc822".to_owned(), "Bob+40b.example".to_owned()))
        );
        let p = rcpt_params("RCPT TO:<a@b.example> NOTIFY=NEVER").unwrap();
        assert_eq!(
            p.notify,
            Some(Notify {
                never: true,
                ..Notify::default()
            })
        );
        assert_eq!(
            rcpt_params("RCPT TO:<a@b.example>"),
            Ok(RcptParams::default())
        );
    }

    #[test]
    fn dsn_parameters_with_bad_values_are_refused_by_name() {
        for (line, name) in [
            ("MAIL FROM:<a@b> RET=ALL", "RET"),
            ("MAIL FROM:<a@b> RET", "RET"),
            ("MAIL FROM:<a@b> ENVID=", "ENVID"),
            ("MAIL FROM:<a@b> ENVID=a=b", "ENVID"),
            ("MAIL FROM:<a@b> ENVID=a+2", "ENVID"),
            ("MAIL FROM:<a@b> ENVID=a+2g", "ENVID"),
            ("MAIL FROM:<a@b> ENVID=a+2f", "ENVID"),
            ("MAIL FROM:<a@b> AUTH=", "AUTH"),
            ("RCPT TO:<a@b> NOTIFY=", "NOTIFY"),
            ("RCPT TO:<a@b> NOTIFY", "NOTIFY"),
            ("RCPT TO:<a@b> NOTIFY=SOMETIMES", "NOTIFY"),
            ("RCPT TO:<a@b> NOTIFY=NEVER,SUCCESS", "NOTIFY"),
            ("RCPT TO:<a@b> NOTIFY=DELAY,NEVER", "NOTIFY"),
            ("RCPT TO:<a@b> NOTIFY=FAILURE,FAILURE", "NOTIFY"),
            ("RCPT TO:<a@b> NOTIFY=SUCCESS,", "NOTIFY"),
            ("RCPT TO:<a@b> ORCPT=rfc822", "ORCPT"),
            ("RCPT TO:<a@b> ORCPT=;a@b", "ORCPT"),
            ("RCPT TO:<a@b> ORCPT=rfc822;", "ORCPT"),
            ("RCPT TO:<a@b> ORCPT=rfc 822;a", "ORCPT"),
            ("RCPT TO:<a@b> ORCPT=rf.c;a@b", "ORCPT"),
        ] {
            assert_eq!(mail(line), Err(ParseError::BadValue(name)), "{line}");
        }
        let long = format!("MAIL FROM:<a@b> ENVID={}", "x".repeat(MAX_ENVID + 1));
        assert_eq!(mail(&long), Err(ParseError::BadValue("ENVID")));
        let ok = format!("MAIL FROM:<a@b> ENVID={}", "x".repeat(MAX_ENVID));
        assert!(mail(&ok).is_ok());
        let long = format!("RCPT TO:<a@b> ORCPT=rfc822;{}", "x".repeat(MAX_ORCPT));
        assert_eq!(mail(&long), Err(ParseError::BadValue("ORCPT")));
        let ok = format!("RCPT TO:<a@b> ORCPT=rfc822;{}", "x".repeat(MAX_ORCPT - 7));
        assert!(mail(&ok).is_ok());
        for (line, name) in [
            ("MAIL FROM:<a@b> RET=FULL RET=HDRS", "RET"),
            ("MAIL FROM:<a@b> ENVID=a ENVID=b", "ENVID"),
            ("MAIL FROM:<a@b> AUTH=<> AUTH=<>", "AUTH"),
            ("RCPT TO:<a@b> NOTIFY=NEVER NOTIFY=NEVER", "NOTIFY"),
            ("RCPT TO:<a@b> ORCPT=rfc822;a ORCPT=rfc822;a", "ORCPT"),
        ] {
            assert_eq!(mail(line), Err(ParseError::Duplicate(name)), "{line}");
        }
    }

    #[test]
    fn parameters_we_do_not_offer_are_refused_by_name() {
        assert_eq!(
            mail("MAIL FROM:<a@b> REQUIRETLS"),
            Err(ParseError::Unsupported("REQUIRETLS"))
        );
        assert_eq!(
            mail("MAIL FROM:<a@b> mt-priority=3"),
            Err(ParseError::Unsupported("MT-PRIORITY"))
        );
        assert_eq!(
            mail("RCPT TO:<a@b> RRVS=2026-01-01T00:00:00Z"),
            Err(ParseError::Unsupported("RRVS"))
        );
        assert_eq!(mail("RCPT TO:<a@b> RET=FULL"), Err(ParseError::BadParam));
        assert_eq!(
            mail("MAIL FROM:<a@b> NOTIFY=NEVER"),
            Err(ParseError::BadParam)
        );
    }

    #[test]
    fn xtext() {
        assert!(is_xtext("abc+2B+3D!~"));
        assert!(!is_xtext("a b"));
        assert!(!is_xtext("a=b"));
        assert!(!is_xtext("+2"));
        assert!(!is_xtext("+zz"));
        assert!(!is_xtext("é"));
        assert!(!is_xtext("a\x7f"));
    }

    #[test]
    fn auth_mechanisms() {
        assert_eq!(
            mail("AUTH PLAIN AGEAYg=="),
            Ok(Command::Auth {
                mechanism: Mechanism::Plain,
                initial: Some("AGEAYg==".into())
            })
        );
        assert_eq!(
            mail("auth login"),
            Ok(Command::Auth {
                mechanism: Mechanism::Login,
                initial: None
            })
        );
        assert_eq!(
            mail("AUTH CRAM-MD5"),
            Ok(Command::Auth {
                mechanism: Mechanism::Other,
                initial: None
            })
        );
        assert!(matches!(mail("AUTH"), Err(ParseError::Syntax(_))));
        assert!(matches!(mail("AUTH PLAIN a b"), Err(ParseError::Syntax(_))));
    }

    #[test]
    fn utf8_addresses_are_parsed() {
        let Ok(Command::Mail { from, .. }) = mail("MAIL FROM:<jösé@bücher.example> SMTPUTF8")
        else {
            panic!()
        };
        assert!(from.is_utf8());
        assert_eq!(
            parse_command(b"MAIL FROM:<\xff@b>"),
            Err(ParseError::BadBytes)
        );
        assert_eq!(parse_command(b"NOOP \0"), Err(ParseError::BadBytes));
    }

    #[test]
    fn bdat() {
        assert_eq!(
            mail("BDAT 100"),
            Ok(Command::Bdat {
                size: 100,
                last: false
            })
        );
        assert_eq!(
            mail("bdat 0 last"),
            Ok(Command::Bdat {
                size: 0,
                last: true
            })
        );
        assert!(matches!(mail("BDAT"), Err(ParseError::Syntax(_))));
        assert!(matches!(mail("BDAT -1"), Err(ParseError::Syntax(_))));
        assert!(matches!(mail("BDAT 1 FIRST"), Err(ParseError::Syntax(_))));
        assert!(matches!(
            mail("BDAT 99999999999999999999999"),
            Err(ParseError::Syntax(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(line in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = parse_command(&line);
        }

        #[test]
        fn arbitrary_text_commands_never_panic(verb in "(MAIL FROM:|RCPT TO:|BDAT |EHLO |mail from: )", rest in "\\PC{0,300}") {
            let _ = parse_command(format!("{verb}{rest}").as_bytes());
        }
    }
}
