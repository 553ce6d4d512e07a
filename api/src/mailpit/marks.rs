//! Read flags and tags set through the Mailpit API, in memory and bounded.
//! Messages are immutable in the log, and Mailpit's read/tag state is a
//! convenience for UIs and a few suites, so it is not worth a record kind:
//! it is lost on restart (documented in the README), and a message's own
//! tags (plus tag, `X-Tags`) are derived from its bytes again.

use std::collections::HashMap;

use parking_lot::Mutex;
use uncorreo_engine::MessageId;

use super::view::Flags;

/// Most messages with marks at once.
pub const MAX_MARKED: usize = 100_000;
/// Most tags on one message.
pub const MAX_TAGS: usize = 32;
/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 64;

#[derive(Debug, Clone, Default)]
struct Entry {
    read: bool,
    tags: Option<Vec<String>>,
}

/// Too many messages carry marks already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("at most {MAX_MARKED} messages can carry read flags or tags set through the Mailpit API")]
pub struct Full;

/// The marks of every message that has any.
#[derive(Debug, Default)]
pub struct Marks {
    inner: Mutex<HashMap<MessageId, Entry>>,
}

impl Marks {
    /// The flags of `id`; `default_tags` gives its own tags if none were set.
    pub fn get(&self, id: MessageId, default_tags: impl FnOnce() -> Vec<String>) -> Flags {
        let entry = self.inner.lock().get(&id).cloned().unwrap_or_default();
        Flags {
            read: entry.read,
            tags: entry.tags.unwrap_or_else(default_tags),
        }
    }

    fn update(&self, id: MessageId, f: impl FnOnce(&mut Entry)) -> Result<(), Full> {
        let mut map = self.inner.lock();
        if !map.contains_key(&id) && map.len() >= MAX_MARKED {
            return Err(Full);
        }
        f(map.entry(id).or_default());
        Ok(())
    }

    /// Mark `id` read or unread.
    pub fn set_read(&self, id: MessageId, read: bool) -> Result<(), Full> {
        if !read && !self.inner.lock().contains_key(&id) {
            // Unread is the default: nothing to remember.
            return Ok(());
        }
        self.update(id, |e| e.read = read)
    }

    /// Replace the tags of `id`.
    pub fn set_tags(&self, id: MessageId, tags: Vec<String>) -> Result<(), Full> {
        self.update(id, |e| e.tags = Some(tags))
    }

    /// Forget `id` (deleted).
    pub fn forget(&self, id: MessageId) {
        self.inner.lock().remove(&id);
    }
}

/// `tags` cleaned as Mailpit does (trimmed, no empties, no duplicates
/// ignoring case), or why not.
pub fn clean_tags(tags: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for t in tags {
        let t = t.trim();
        if t.is_empty() {
            continue;
        }
        if t.len() > MAX_TAG_BYTES || t.chars().any(|c| c.is_control() || c == ',') {
            return Err(format!(
                "a tag is at most {MAX_TAG_BYTES} bytes, without commas or control characters"
            ));
        }
        if !out.iter().any(|o| o.eq_ignore_ascii_case(t)) {
            out.push(t.to_owned());
        }
    }
    if out.len() > MAX_TAGS {
        return Err(format!("at most {MAX_TAGS} tags per message"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uncorreo_engine::MailboxId;

    fn id(seq: u64) -> MessageId {
        MessageId {
            mailbox: MailboxId(1),
            seq,
        }
    }

    #[test]
    fn marks_override_defaults_and_are_forgotten() {
        let m = Marks::default();
        assert_eq!(m.get(id(1), || vec!["plus".into()]).tags, ["plus"]);
        m.set_read(id(1), true).unwrap();
        m.set_tags(id(1), vec![]).unwrap();
        let f = m.get(id(1), || vec!["plus".into()]);
        assert!(f.read && f.tags.is_empty());
        m.forget(id(1));
        assert!(!m.get(id(1), Vec::new).read);
    }

    #[test]
    fn tags_are_cleaned_and_bounded() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(clean_tags(&t(&[" a ", "A", "", "b"])).unwrap(), ["a", "b"]);
        assert!(clean_tags(&t(&["a,b"])).is_err());
        assert!(clean_tags(&t(&[&"x".repeat(65)])).is_err());
        let many: Vec<String> = (0..33).map(|i| i.to_string()).collect();
        assert!(clean_tags(&many).is_err());
    }
}
