//! The normalised view the extractor reads: a message body as lines of plain
//! text, each with the byte ranges that were visually emphasised (bold,
//! large, monospace), plus every link target with its anchor text.
//!
//! HTML is read by a single forward scan (no DOM, no backtracking): block
//! elements end a line, table cells are separated by a space, `<style>`,
//! `<script>`, `<title>` and comments are dropped, and so is anything styled
//! invisible (`display:none` preheaders, `font-size:0` padding, `mso-hide`).
//! Every step consumes input, so the cost is linear in the (capped) input.

/// Most links kept per body, images included; the rest are ignored.
pub const MAX_DOC_LINKS: usize = 200;
/// Longest anchor text kept, in bytes.
pub const MAX_ANCHOR_TEXT: usize = 200;
/// How deep the element stack is tracked; deeper nesting is read as text flow.
const MAX_DEPTH: usize = 256;
/// How far down the stack a closing tag looks for its element, so a flood of
/// unmatched closers costs a constant each.
const CLOSE_SEARCH: usize = 32;

/// One line of normalised text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Line {
    /// Text with whitespace collapsed and entities decoded.
    pub text: String,
    /// Byte ranges of `text` that were bold, large or monospace.
    pub emphasis: Vec<(usize, usize)>,
}

/// Where a link target came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `<a href>`.
    Anchor,
    /// A URL written in the text.
    Text,
    /// `<img src>` outside any anchor.
    Image,
}

/// A link target as found, before classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLink {
    /// The URL as written (entities decoded).
    pub url: String,
    /// Anchor text (or an image's `alt` when the anchor holds only an image).
    pub text: String,
    /// Where it came from.
    pub source: Source,
    /// Index of the line the link sits on.
    pub line: usize,
    /// The anchor holds an image and no text.
    pub image_only: bool,
    /// An image that is 0–2 pixels wide or high, or hidden: a tracking pixel.
    pub pixel: bool,
    /// Styled like a button (background, padding, border, or a button class).
    pub button: bool,
}

/// A normalised body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Doc {
    /// Non-empty lines in order.
    pub lines: Vec<Line>,
    /// Link targets in order of appearance (at most [`MAX_DOC_LINKS`]).
    pub links: Vec<RawLink>,
}

impl Doc {
    /// A plain-text body: one line per line, whitespace collapsed, URLs found.
    pub fn from_text(text: &str) -> Doc {
        let mut b = Builder::default();
        // `text.split('\n')` with the vector `memchr`: core's char searcher
        // cost more per line than the line's own handling.
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', text.as_bytes()).chain([text.len()]) {
            b.push_text(text.get(start..end).unwrap_or_default());
            b.break_line();
            start = end + 1;
        }
        b.finish()
    }

    /// An HTML body.
    pub fn from_html(html: &str) -> Doc {
        let mut b = Builder::default();
        Scanner { s: html, b: &mut b }.run();
        b.finish()
    }
}

/// An open element.
struct Open {
    name: String,
    hidden: bool,
    emphasis: bool,
    anchor: bool,
}

struct Anchor {
    href: String,
    text: String,
    line: usize,
    image: bool,
    alt: String,
    button: bool,
}

#[derive(Default)]
struct Builder {
    doc: Doc,
    line: Line,
    stack: Vec<Open>,
    hidden: usize,
    emphasis: usize,
    /// Open elements beyond `MAX_DEPTH`, counted so their closers are ignored.
    overflow: usize,
    anchor: Option<Anchor>,
}

impl Builder {
    fn visible(&self) -> bool {
        self.hidden == 0
    }

    /// Append text, collapsing whitespace and dropping invisible characters.
    fn push_text(&mut self, text: &str) {
        if !self.visible() {
            return;
        }
        let start = self.line.text.len();
        // One allocation per line instead of one per doubling; the line never
        // grows past the text pushed into it.
        self.line.text.reserve(text.len());
        // The CR of a CRLF line end (a space, as the slow path reads it) aside.
        let (body, cr) = text.strip_suffix('\r').map_or((text, false), |b| (b, true));
        let after_space = self.line.text.is_empty() || self.line.text.ends_with(' ');
        if is_plain(body.as_bytes(), after_space) {
            // Nothing to collapse or drop: most lines of most bodies.
            self.line.text.push_str(body);
            if cr {
                self.push_space();
            }
        } else {
            self.push_text_slowly(text);
        }
        let end = self.line.text.len();
        if let Some(a) = self.anchor.as_mut() {
            let added = self.line.text.get(start..end).unwrap_or_default();
            for c in added.chars() {
                if a.text.len() + c.len_utf8() > MAX_ANCHOR_TEXT {
                    break;
                }
                if c != ' ' || !(a.text.is_empty() || a.text.ends_with(' ')) {
                    a.text.push(c);
                }
            }
        }
        if self.emphasis > 0 && end > start {
            match self.line.emphasis.last_mut() {
                // A space between two emphasised runs joins them.
                Some(last) if last.1 + 1 >= start => last.1 = end,
                _ => self.line.emphasis.push((start, end)),
            }
        }
    }

    /// [`Builder::push_text`] char by char: ASCII is decided by its byte,
    /// printable runs are copied whole, only other chars are decoded.
    fn push_text_slowly(&mut self, text: &str) {
        let bytes = text.as_bytes();
        let mut at = 0;
        while let Some(&b) = bytes.get(at) {
            match b {
                0x21..=0x7e => {
                    let run = bytes
                        .get(at..)
                        .unwrap_or_default()
                        .iter()
                        .take_while(|b| (0x21..=0x7e).contains(*b))
                        .count();
                    self.line
                        .text
                        .push_str(text.get(at..at + run).unwrap_or_default());
                    at += run;
                }
                b'\t'..=b'\r' | b' ' => {
                    self.push_space();
                    at += 1;
                }
                // Other ASCII controls render as nothing.
                0..=0x7f => at += 1,
                _ => {
                    let c = text.get(at..).and_then(|t| t.chars().next()).unwrap_or(' ');
                    at += c.len_utf8();
                    if is_invisible(c) {
                        continue;
                    }
                    if c.is_whitespace() {
                        self.push_space();
                    } else {
                        self.line.text.push(c);
                    }
                }
            }
        }
    }

    /// Whitespace: one space, never at the start of a line or after another.
    fn push_space(&mut self) {
        if !self.line.text.is_empty() && !self.line.text.ends_with(' ') {
            self.line.text.push(' ');
        }
    }

    /// A space between inline neighbours (table cells).
    fn soft_break(&mut self) {
        if self.visible() {
            self.push_text(" ");
        }
    }

    fn break_line(&mut self) {
        let mut line = std::mem::take(&mut self.line);
        let trimmed_end = line.text.trim_end().len();
        line.text.truncate(trimmed_end);
        let lead = line.text.len() - line.text.trim_start().len();
        if lead > 0 {
            line.text.drain(..lead);
            for r in &mut line.emphasis {
                r.0 = r.0.saturating_sub(lead);
                r.1 = r.1.saturating_sub(lead);
            }
        }
        for r in &mut line.emphasis {
            r.1 = r.1.min(line.text.len());
        }
        line.emphasis.retain(|r| r.0 < r.1);
        if !line.text.is_empty() {
            self.doc.lines.push(line);
        }
    }

    fn current_line(&self) -> usize {
        self.doc.lines.len()
    }

    fn push_link(&mut self, link: RawLink) {
        if self.doc.links.len() < MAX_DOC_LINKS && !link.url.is_empty() {
            self.doc.links.push(link);
        }
    }

    fn end_anchor(&mut self) {
        let Some(a) = self.anchor.take() else {
            return;
        };
        let text = a.text.trim().to_owned();
        let image_only = a.image && text.is_empty();
        let link = RawLink {
            url: a.href,
            text: if image_only { a.alt } else { text },
            source: Source::Anchor,
            line: a.line,
            image_only,
            pixel: false,
            button: a.button,
        };
        self.push_link(link);
    }

    fn finish(mut self) -> Doc {
        self.end_anchor();
        self.break_line();
        // URLs written in the text, unless an anchor already points there.
        let mut found = Vec::new();
        for (index, line) in self.doc.lines.iter().enumerate() {
            for url in urls_in(&line.text) {
                found.push((index, url.to_owned()));
            }
        }
        for (line, url) in found {
            if self.doc.links.iter().any(|l| l.url == url) {
                continue;
            }
            self.push_link(RawLink {
                url,
                text: String::new(),
                source: Source::Text,
                line,
                image_only: false,
                pixel: false,
                button: false,
            });
        }
        self.doc
    }
}

/// Whether `bytes` is printable ASCII and single spaces, with no space
/// first when the line so far is empty or ends in one: text that
/// [`Builder::push_text`] would copy unchanged.
fn is_plain(bytes: &[u8], after_space: bool) -> bool {
    let unprintable = super::any_byte(bytes, |b| !(0x20..=0x7e).contains(&b));
    let pairs = bytes.iter().zip(bytes.iter().skip(1));
    let double_space = pairs.fold(false, |found, (a, b)| found | (*a == b' ' && *b == b' '));
    let leading_space = after_space && bytes.first() == Some(&b' ');
    !(unprintable || double_space || leading_space)
}

/// Characters that render as nothing: preheader padding and soft hyphens.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' | '\u{034f}' | '\u{00ad}'
    ) || (c.is_control() && !c.is_whitespace())
}

/// `http://` and `https://` URLs in `text`, trailing punctuation trimmed.
pub fn urls_in(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || loop {
        let at = find_url_start(rest)?;
        let tail = rest.get(at..)?;
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(tail.len());
        let url = tail
            .get(..end)?
            .trim_end_matches(['.', ',', ';', ':', ')', ']', '!', '?', '»', '”']);
        rest = tail.get(end.max(1)..).unwrap_or_default();
        if url.len() > "https://".len() && url.len() <= super::MAX_LINK_LEN {
            return Some(url);
        }
    })
}

fn find_url_start(s: &str) -> Option<usize> {
    // Case-insensitive only on the scheme's first letter is not worth it:
    // mail writes schemes in lower case; "HTTP://" stays unlinked text.
    // A scan for 'h' (memchr): a substring searcher set up per line costs
    // more than it saves on lines this short.
    memchr::memchr_iter(b'h', s.as_bytes()).find(|&at| {
        let tail = s.as_bytes().get(at..).unwrap_or_default();
        tail.starts_with(b"https://") || tail.starts_with(b"http://")
    })
}

const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr", "param",
];
const BLOCK: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "body",
    "br",
    "center",
    "dd",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "html",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "tbody",
    "tfoot",
    "thead",
    "tr",
    "ul",
];
const EMPHASIS: &[&str] = &[
    "b", "strong", "h1", "h2", "h3", "code", "pre", "tt", "kbd", "samp", "big", "mark",
];
/// Elements whose content is never shown as text.
const RAW_TEXT: &[&str] = &["script", "style", "title", "template", "xml", "noscript"];

struct Tag {
    name: String,
    closing: bool,
    self_closing: bool,
    href: Option<String>,
    src: Option<String>,
    style: String,
    class: String,
    alt: Option<String>,
    width: Option<String>,
    height: Option<String>,
    hidden_attr: bool,
}

struct Scanner<'a, 'b> {
    s: &'a str,
    b: &'b mut Builder,
}

impl Scanner<'_, '_> {
    fn run(&mut self) {
        let s = self.s;
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let Some(lt) = bytes
                .get(i..)
                .and_then(|t| t.iter().position(|&c| c == b'<'))
            else {
                self.text(s.get(i..).unwrap_or_default());
                break;
            };
            if lt > 0 {
                self.text(s.get(i..i + lt).unwrap_or_default());
            }
            i += lt;
            let rest = bytes.get(i..).unwrap_or_default();
            if rest.starts_with(b"<!--") {
                i = match find(bytes, i + 4, b"-->") {
                    Some(e) => e + 3,
                    None => bytes.len(),
                };
                continue;
            }
            let next = rest.get(1).copied().unwrap_or(0);
            if next == b'!' || next == b'?' {
                i = match find(bytes, i + 1, b">") {
                    Some(e) => e + 1,
                    None => bytes.len(),
                };
                continue;
            }
            if !(next.is_ascii_alphabetic() || next == b'/') {
                self.text("<");
                i += 1;
                continue;
            }
            let (tag, end) = parse_tag(s, i + 1);
            i = end;
            if tag.closing {
                self.close(&tag.name);
            } else if RAW_TEXT.contains(&tag.name.as_str()) && !tag.self_closing {
                // Skip to the matching closer; the content is code or metadata.
                let closer = format!("</{}", tag.name);
                i = match find_ascii_ci(bytes, i, closer.as_bytes()) {
                    Some(e) => match find(bytes, e, b">") {
                        Some(g) => g + 1,
                        None => bytes.len(),
                    },
                    None => bytes.len(),
                };
            } else {
                self.open(tag);
            }
        }
    }

    fn text(&mut self, raw: &str) {
        if raw.contains('&') {
            let decoded = decode_entities(raw);
            self.b.push_text(&decoded);
        } else {
            self.b.push_text(raw);
        }
    }

    fn open(&mut self, tag: Tag) {
        let name = tag.name.as_str();
        let style = Style::parse(&tag.style);
        if BLOCK.contains(&name) {
            self.b.break_line();
        } else if name == "td" || name == "th" {
            self.b.soft_break();
        }
        if name == "img" {
            self.image(&tag, &style);
            return;
        }
        if name == "a" {
            self.b.end_anchor();
            if let Some(href) = tag.href.as_deref().map(str::trim) {
                if self.b.visible() && !style.hidden {
                    let lower = tag.class.to_ascii_lowercase();
                    self.b.anchor = Some(Anchor {
                        href: crate::text::prefix(href, super::MAX_LINK_LEN + 1).to_owned(),
                        text: String::new(),
                        line: self.b.current_line(),
                        image: false,
                        alt: String::new(),
                        button: style.button || lower.contains("btn") || lower.contains("button"),
                    });
                }
            }
        }
        if VOID.contains(&name) || tag.self_closing {
            return;
        }
        let hidden = style.hidden || tag.hidden_attr;
        let emphasis = style.emphasis || EMPHASIS.contains(&name);
        let anchor = name == "a";
        if self.b.stack.len() >= MAX_DEPTH {
            self.b.overflow += 1;
            return;
        }
        self.b.hidden += usize::from(hidden);
        self.b.emphasis += usize::from(emphasis);
        self.b.stack.push(Open {
            name: tag.name,
            hidden,
            emphasis,
            anchor,
        });
    }

    fn close(&mut self, name: &str) {
        if self.b.overflow > 0 {
            self.b.overflow -= 1;
            return;
        }
        let depth = self.b.stack.len();
        let found = self
            .b
            .stack
            .iter()
            .rev()
            .take(CLOSE_SEARCH)
            .position(|o| o.name == name);
        if let Some(from_top) = found {
            for _ in 0..=from_top {
                let Some(o) = self.b.stack.pop() else {
                    break;
                };
                self.b.hidden -= usize::from(o.hidden);
                self.b.emphasis -= usize::from(o.emphasis);
                if o.anchor {
                    self.b.end_anchor();
                }
                if BLOCK.contains(&o.name.as_str()) {
                    self.b.break_line();
                }
            }
        } else if name == "a" {
            self.b.end_anchor();
        }
        debug_assert!(self.b.stack.len() <= depth);
        if BLOCK.contains(&name) {
            self.b.break_line();
        } else if name == "td" || name == "th" {
            self.b.soft_break();
        }
    }

    fn image(&mut self, tag: &Tag, style: &Style) {
        let Some(src) = tag.src.as_deref().map(str::trim) else {
            return;
        };
        let tiny = |v: &Option<String>| {
            v.as_deref()
                .map(|w| w.trim().trim_end_matches("px").trim())
                .and_then(|w| w.parse::<u32>().ok())
                .is_some_and(|n| n <= 2)
        };
        let pixel = tiny(&tag.width) || tiny(&tag.height) || style.tiny || style.hidden;
        if let Some(a) = self.b.anchor.as_mut() {
            if !pixel {
                a.image = true;
                if let Some(alt) = tag.alt.as_deref() {
                    if a.alt.is_empty() {
                        a.alt = crate::text::prefix(alt.trim(), MAX_ANCHOR_TEXT).to_owned();
                    }
                }
                return;
            }
        }
        if !(src.starts_with("http://") || src.starts_with("https://"))
            || src.len() > super::MAX_LINK_LEN
        {
            return;
        }
        let link = RawLink {
            url: src.to_owned(),
            text: tag
                .alt
                .as_deref()
                .map(|a| crate::text::prefix(a.trim(), MAX_ANCHOR_TEXT).to_owned())
                .unwrap_or_default(),
            source: Source::Image,
            line: self.b.current_line(),
            image_only: true,
            pixel,
            button: false,
        };
        self.b.push_link(link);
    }
}

/// What an inline `style` says about visibility and emphasis.
#[derive(Default)]
struct Style {
    hidden: bool,
    emphasis: bool,
    button: bool,
    tiny: bool,
}

impl Style {
    fn parse(style: &str) -> Style {
        let mut out = Style::default();
        if style.is_empty() {
            return out;
        }
        let lower = style.to_ascii_lowercase();
        for decl in lower.split(';') {
            let Some((prop, value)) = decl.split_once(':') else {
                continue;
            };
            let prop = prop.trim();
            let value: String = value.chars().filter(|c| !c.is_whitespace()).collect();
            let value = value.trim_end_matches("!important");
            match prop {
                "display" if value == "none" => out.hidden = true,
                "visibility" if value == "hidden" => out.hidden = true,
                "mso-hide" if value == "all" => out.hidden = true,
                "opacity" if value.parse::<f32>().is_ok_and(|v| v == 0.0) => out.hidden = true,
                "max-height" | "height" | "width" | "max-width" if is_zero(value) => {
                    out.tiny = true;
                    if prop.starts_with("max-") {
                        out.hidden = true;
                    }
                }
                "height" | "width" if px(value).is_some_and(|v| v <= 2.0) => out.tiny = true,
                "font-size" => match size_px(value) {
                    Some(v) if v <= 1.0 => out.hidden = true,
                    Some(v) if v >= 18.0 => out.emphasis = true,
                    _ => {}
                },
                "font-weight"
                    if value.starts_with("bold")
                        || value.parse::<u32>().is_ok_and(|w| w >= 600) =>
                {
                    out.emphasis = true
                }
                "font-family"
                    if ["mono", "courier", "consolas", "menlo"]
                        .iter()
                        .any(|m| value.contains(m)) =>
                {
                    out.emphasis = true
                }
                "letter-spacing" if size_px(value).is_some_and(|v| v >= 2.0) => out.emphasis = true,
                "background" | "background-color" | "padding" | "border" | "border-radius"
                    if !matches!(value, "" | "none" | "0" | "transparent") =>
                {
                    out.button = true
                }
                _ => {}
            }
        }
        out
    }
}

fn is_zero(v: &str) -> bool {
    matches!(v, "0" | "0px" | "0pt" | "0em" | "0%")
}

fn px(v: &str) -> Option<f32> {
    v.strip_suffix("px")?.parse().ok()
}

/// A CSS font size in pixels, roughly (16px to the em).
fn size_px(v: &str) -> Option<f32> {
    if let Some(n) = v.strip_suffix("px") {
        return n.parse().ok();
    }
    if let Some(n) = v.strip_suffix("pt") {
        return n.parse::<f32>().ok().map(|n| n * 4.0 / 3.0);
    }
    if let Some(n) = v.strip_suffix("rem").or_else(|| v.strip_suffix("em")) {
        return n.parse::<f32>().ok().map(|n| n * 16.0);
    }
    if let Some(n) = v.strip_suffix('%') {
        return n.parse::<f32>().ok().map(|n| n * 0.16);
    }
    match v {
        "large" | "x-large" | "xx-large" | "xxx-large" => Some(24.0),
        _ => v.parse().ok().filter(|n: &f32| *n == 0.0),
    }
}

/// Parse a tag starting just after `<`; returns it and the index after `>`.
fn parse_tag(s: &str, from: usize) -> (Tag, usize) {
    let bytes = s.as_bytes();
    let mut i = from;
    let closing = bytes.get(i) == Some(&b'/');
    if closing {
        i += 1;
    }
    let name_start = i;
    while bytes
        .get(i)
        .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b':' | b'_'))
    {
        i += 1;
    }
    let mut tag = Tag {
        name: s
            .get(name_start..i)
            .unwrap_or_default()
            .to_ascii_lowercase(),
        closing,
        self_closing: false,
        href: None,
        src: None,
        style: String::new(),
        class: String::new(),
        alt: None,
        width: None,
        height: None,
        hidden_attr: false,
    };
    loop {
        while bytes.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        match bytes.get(i) {
            None => return (tag, bytes.len()),
            Some(b'>') => return (tag, i + 1),
            Some(b'/') => {
                i += 1;
                if bytes.get(i) == Some(&b'>') {
                    tag.self_closing = true;
                    return (tag, i + 1);
                }
                continue;
            }
            _ => {}
        }
        let attr_start = i;
        while bytes
            .get(i)
            .is_some_and(|&c| !c.is_ascii_whitespace() && !matches!(c, b'=' | b'>' | b'/'))
        {
            i += 1;
        }
        if i == attr_start {
            // A stray quote or similar: step over it.
            i += 1;
            continue;
        }
        let attr = s
            .get(attr_start..i)
            .unwrap_or_default()
            .to_ascii_lowercase();
        while bytes.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        let mut value = None;
        if bytes.get(i) == Some(&b'=') {
            i += 1;
            while bytes.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
                i += 1;
            }
            match bytes.get(i) {
                Some(&q @ (b'"' | b'\'')) => {
                    let start = i + 1;
                    let end = bytes
                        .get(start..)
                        .and_then(|t| t.iter().position(|&c| c == q))
                        .map_or(bytes.len(), |p| start + p);
                    value = s.get(start..end);
                    i = (end + 1).min(bytes.len());
                }
                _ => {
                    let start = i;
                    while bytes
                        .get(i)
                        .is_some_and(|&c| !c.is_ascii_whitespace() && c != b'>')
                    {
                        i += 1;
                    }
                    value = s.get(start..i);
                }
            }
        }
        let decoded = || value.map(decode_entities);
        match attr.as_str() {
            "href" => tag.href = decoded(),
            "src" => tag.src = decoded(),
            "alt" => tag.alt = decoded(),
            "style" => tag.style = decoded().unwrap_or_default(),
            "class" => tag.class = value.unwrap_or_default().to_owned(),
            "width" => tag.width = value.map(str::to_owned),
            "height" => tag.height = value.map(str::to_owned),
            "hidden" => tag.hidden_attr = true,
            "aria-hidden" => {}
            _ => {}
        }
    }
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let tail = hay.get(from..)?;
    tail.windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

fn find_ascii_ci(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let tail = hay.get(from..)?;
    tail.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|p| from + p)
}

/// Decode HTML character references: the named ones mail uses, and numeric ones.
pub fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(rest.get(..amp).unwrap_or_default());
        let tail = rest.get(amp..).unwrap_or_default();
        // A reference is at most 32 bytes up to its ';'.
        let semi = tail
            .bytes()
            .take(32)
            .position(|c| c == b';')
            .filter(|&p| p > 1);
        let decoded = semi.and_then(|p| tail.get(1..p)).and_then(entity);
        match (decoded, semi) {
            (Some(c), Some(p)) => {
                out.push(c);
                rest = tail.get(p + 1..).unwrap_or_default();
            }
            _ => {
                out.push('&');
                rest = tail.get(1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let n = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return char::from_u32(n).filter(|&c| c != '\0');
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "zwnj" => '\u{200c}',
        "zwj" => '\u{200d}',
        "shy" => '\u{ad}',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "middot" => '·',
        "bull" => '•',
        "laquo" => '«',
        "raquo" => '»',
        "ldquo" => '“',
        "rdquo" => '”',
        "lsquo" => '‘',
        "rsquo" => '’',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "deg" => '°',
        "times" => '×',
        "aacute" => 'á',
        "eacute" => 'é',
        "iacute" => 'í',
        "oacute" => 'ó',
        "uacute" => 'ú',
        "ntilde" => 'ñ',
        "Aacute" => 'Á',
        "Eacute" => 'É',
        "Oacute" => 'Ó',
        "Ntilde" => 'Ñ',
        "egrave" => 'è',
        "agrave" => 'à',
        "ccedil" => 'ç',
        "ecirc" => 'ê',
        "acirc" => 'â',
        "ocirc" => 'ô',
        "auml" => 'ä',
        "ouml" => 'ö',
        "uuml" => 'ü',
        "Auml" => 'Ä',
        "Ouml" => 'Ö',
        "Uuml" => 'Ü',
        "szlig" => 'ß',
        "iquest" => '¿',
        "iexcl" => '¡',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(d: &Doc) -> Vec<&str> {
        d.lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn html_keeps_blocks_and_drops_hidden_style_and_script() {
        let d = Doc::from_html(
            "<html><head><title>T</title><style>.a{color:red}</style></head><body>\
             <div style=\"display:none;max-height:0\">Preheader 111111 &zwnj;&nbsp;&zwnj;</div>\
             <script>var code = 999999;</script><!-- 888888 -->\
             <p>Your code:</p><table><tr><td style=\"font-size:32px\"><b>482&nbsp;913</b></td></tr></table>\
             <p>Caf&eacute; &amp; more&#33; &#x263A;</p></body></html>",
        );
        assert_eq!(lines(&d), vec!["Your code:", "482 913", "Café & more! ☺"]);
        assert_eq!(d.lines[1].emphasis, vec![(0, "482 913".len())]);
    }

    #[test]
    fn anchors_keep_their_text_and_images_their_size() {
        let d = Doc::from_html(
            "<p>Hi <a href=\"https://t.example/c?u=1&amp;v=2\" style=\"background:#36c;padding:8px\">Verify <b>email</b></a></p>\
             <a href=\"https://x.example/\"><img src=\"https://x.example/logo.png\" alt=\"Acme\"></a>\
             <img src=\"https://t.example/open.gif\" width=\"1\" height=\"1\">\
             <p>or paste https://x.example/verify?t=1.</p>",
        );
        let l = &d.links;
        assert_eq!(l.len(), 4, "{l:?}");
        assert_eq!(l[0].url, "https://t.example/c?u=1&v=2");
        assert_eq!(l[0].text, "Verify email");
        assert!(l[0].button);
        assert_eq!((l[1].text.as_str(), l[1].image_only), ("Acme", true));
        assert!(l[2].pixel && l[2].source == Source::Image);
        assert_eq!(l[3].url, "https://x.example/verify?t=1");
        assert_eq!(l[3].source, Source::Text);
    }

    #[test]
    fn malformed_html_ends_without_losing_text() {
        let d = Doc::from_html("<p>a <b>b <i>c</p> d < e <a href=x>f");
        assert_eq!(lines(&d), vec!["a b c", "d < e f"]);
        let _ = Doc::from_html("<a href=\"unterminated");
        let _ = Doc::from_html("<!-- unterminated");
        let _ = Doc::from_html("<script>never closed");
        let _ = Doc::from_html("&#xFFFFFFFF; &#0; &;");
    }

    #[test]
    fn text_lines_collapse_whitespace() {
        let d = Doc::from_text("  Your  code:\r\n\r\n\t 3 9 1 6 4 7 \r\nhttps://a.test/x).");
        assert_eq!(
            lines(&d),
            vec!["Your code:", "3 9 1 6 4 7", "https://a.test/x)."]
        );
        assert_eq!(d.links[0].url, "https://a.test/x");
    }

    /// Text made of what the plain-line shortcut must tell apart: single and
    /// double spaces, CR, tabs, controls, invisible and non-ASCII chars.
    fn mixed_text() -> impl proptest::strategy::Strategy<Value = String> {
        let pieces = proptest::sample::select(vec![
            "a",
            "Zz",
            "0",
            "~",
            " ",
            "  ",
            "\r",
            "\t",
            "\u{1}",
            "\u{7f}",
            "\u{200b}",
            "\u{a0}",
            "é",
            "\u{2028}",
            "http://x.test/a",
            ".",
        ]);
        proptest::collection::vec(pieces, 0..24).prop_map(|v| v.concat())
    }

    use proptest::prelude::*;

    proptest! {
        /// The shortcut for plain lines copies exactly what reading char by
        /// char would have written, whatever the line holds already.
        #[test]
        fn plain_lines_are_pushed_as_char_by_char_would(before in mixed_text(), text in mixed_text()) {
            let mut fast = Builder::default();
            let mut slow = Builder::default();
            fast.push_text_slowly(&before);
            slow.push_text_slowly(&before);
            fast.push_text(&text);
            slow.push_text_slowly(&text);
            prop_assert_eq!(&fast.line.text, &slow.line.text);
        }

        /// Lines are cut where `split('\n')` cuts them (the `memchr` loop
        /// in `from_text` replaced it).
        #[test]
        fn text_is_cut_into_lines_as_split_would(
            parts in proptest::collection::vec(
                prop_oneof![mixed_text(), Just("\n".to_owned()), Just("\r\n".to_owned())],
                0..12,
            ),
        ) {
            let text = parts.concat();
            let mut b = Builder::default();
            for line in text.split('\n') {
                b.push_text(line);
                b.break_line();
            }
            prop_assert_eq!(Doc::from_text(&text), b.finish());
        }

        /// The `memchr` scan for a URL start finds what the char search did.
        #[test]
        fn url_starts_are_found_as_a_char_search_would(text in mixed_text(), cut in 0usize..30) {
            let text = format!("{}h{}htt{}", text.get(..cut.min(text.len())).unwrap_or(""), text, text);
            let by_chars = text.match_indices('h').map(|(at, _)| at).find(|&at| {
                text.get(at..).is_some_and(|t| t.starts_with("https://") || t.starts_with("http://"))
            });
            prop_assert_eq!(find_url_start(&text), by_chars);
        }

        /// The scan for a URL start finds what a substring search finds.
        #[test]
        fn url_starts_are_found_as_a_substring_search_would(text in mixed_text(), cut in 0usize..30) {
            let text = format!("{}https://b.test{}", text.get(..cut.min(text.len())).unwrap_or(""), text);
            let by_search = ["https://", "http://"].iter().filter_map(|p| text.find(p)).min();
            prop_assert_eq!(find_url_start(&text), by_search);
        }
    }
}
