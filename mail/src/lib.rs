//! uncorreo's mail views: everything the appliance derives from a message's
//! raw bytes, written once for every front end (REST, real-time events, MCP,
//! the Mailpit-compatible API).
//!
//! - [`summary`]: the listing summary stored next to each message at delivery.
//! - [`extract`]: one-time codes and action links.
//! - [`view`]: the parsed view (headers, addresses, bodies, attachments).
//! - [`date`]: RFC 3339 and RFC 5322 dates from epoch time.
//! - [`text`]: cutting UTF-8 text to a byte limit on a character boundary.
//!
//! Architecture invariant: this crate does no I/O and spawns nothing. Its
//! functions are pure and bounded in input and output, so callers decide where
//! they run (never inline on an SMTP or HTTP core thread: mail parsers have
//! panicked on hostile input, and a 25 MB body costs milliseconds). The raw
//! bytes stay the source of truth; every view here can be recomputed from them.

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![forbid(unsafe_code)]

pub mod date;
pub mod extract;
pub mod summary;
pub mod text;
pub mod view;

pub use summary::{summarize, Summary};
