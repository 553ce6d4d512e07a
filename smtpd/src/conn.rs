//! Buffered reading and writing for one session, with bounded buffers.
//!
//! Replies are appended to a write buffer and only flushed when the session
//! is about to block: before a read finds the read buffer empty, before a
//! delivery, and before closing. Pipelined commands (RFC 2920) therefore get
//! their replies in order and in few writes.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Flush early once this many reply octets are waiting.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Read buffer beyond the longest allowed line.
const READ_SLACK: usize = 16 * 1024;

/// Why waiting for input ended without input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The peer closed the connection.
    Eof,
    /// The deadline passed (`421 4.4.2`).
    Timeout,
    /// The server is shutting down (`421 4.3.2`).
    Shutdown,
    /// The socket failed.
    Io,
}

/// A line read by [`Conn::read_line`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// `rbuf[start..end]` holds one line including its LF.
    Ok { start: usize, end: usize },
    /// The line was longer than the limit; it has been discarded up to its LF.
    TooLong,
}

/// When a read may be interrupted by shutdown.
#[derive(Debug, Clone, Copy)]
pub struct Wait<'a> {
    /// Give up at this instant.
    pub deadline: Instant,
    /// Shutdown token of the server.
    pub shutdown: &'a CancellationToken,
    /// True when the session is idle between transactions (shutdown ends the
    /// wait at once); false mid-transaction (shutdown only shortens it to
    /// `grace`).
    pub idle: bool,
    /// How long a transaction may still take once shutdown starts.
    pub grace: Duration,
}

/// A stream with its read and write buffers.
pub struct Conn<S> {
    stream: S,
    rbuf: Box<[u8]>,
    rstart: usize,
    rend: usize,
    wbuf: Vec<u8>,
    max_line: usize,
    write_timeout: Duration,
    grace_deadline: Option<Instant>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Wrap `stream`; lines may be up to `max_line` octets including CRLF.
    pub fn new(stream: S, max_line: usize, write_timeout: Duration) -> Self {
        Self {
            stream,
            rbuf: vec![0u8; max_line + READ_SLACK].into_boxed_slice(),
            rstart: 0,
            rend: 0,
            wbuf: Vec::with_capacity(1024),
            max_line,
            write_timeout,
            grace_deadline: None,
        }
    }

    /// Bound later writes to `timeout` (shortened once shutdown starts, so a
    /// client that stops reading cannot hold shutdown up for long).
    pub fn limit_write_timeout(&mut self, timeout: Duration) {
        self.write_timeout = self.write_timeout.min(timeout);
    }

    /// Give back the stream (for the TLS upgrade), dropping buffered input.
    pub fn into_inner(self) -> S {
        self.stream
    }

    /// Octets of input already buffered.
    pub fn buffered(&self) -> &[u8] {
        self.rbuf.get(self.rstart..self.rend).unwrap_or(&[])
    }

    /// Mark `n` buffered octets as used.
    pub fn consume(&mut self, n: usize) {
        self.rstart = (self.rstart + n).min(self.rend);
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        }
    }

    /// Drop everything buffered (RFC 3207 §6: nothing read before the TLS
    /// handshake may be used after it).
    pub fn discard_buffered(&mut self) {
        self.rstart = 0;
        self.rend = 0;
    }

    /// The octets of a line returned by [`Conn::read_line`].
    pub fn slice(&self, start: usize, end: usize) -> &[u8] {
        self.rbuf.get(start..end).unwrap_or(&[])
    }

    /// Queue a reply line (`text` without CRLF).
    pub fn reply(&mut self, text: &str) {
        self.wbuf.extend_from_slice(text.as_bytes());
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// True when the write buffer should be flushed before going on.
    pub fn wants_flush(&self) -> bool {
        self.wbuf.len() >= WRITE_HIGH_WATER
    }

    /// Write out queued replies. A peer that does not read gets the write
    /// timeout, so a full socket cannot hold the session forever.
    pub async fn flush(&mut self) -> Result<(), Stop> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let write = async {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(Ok(())) => {
                self.wbuf.clear();
                Ok(())
            }
            Ok(Err(_)) => Err(Stop::Io),
            Err(_) => Err(Stop::Timeout),
        }
    }

    /// Flush and shut the write side down (best effort).
    pub async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.stream.shutdown()).await;
    }

    /// Read one more chunk into the buffer (flushing replies first). Returns
    /// the number of octets read.
    pub async fn fill(&mut self, wait: Wait<'_>) -> Result<usize, Stop> {
        self.flush().await?;
        if self.rstart > 0 {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        }
        let mut deadline = wait.deadline;
        if !wait.idle && wait.shutdown.is_cancelled() {
            deadline = deadline.min(self.grace(wait.grace));
        }
        loop {
            let room = self.rbuf.get_mut(self.rend..).unwrap_or(&mut []);
            if room.is_empty() {
                // The caller only reads when less than a full line is
                // buffered; the buffer is larger than a line, so this is a bug
                // guard rather than a path.
                return Err(Stop::Io);
            }
            let shutdown_armed = wait.idle || !wait.shutdown.is_cancelled();
            tokio::select! {
                biased;
                _ = wait.shutdown.cancelled(), if shutdown_armed => {
                    if wait.idle {
                        return Err(Stop::Shutdown);
                    }
                    deadline = deadline.min(self.grace(wait.grace));
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(if wait.shutdown.is_cancelled() { Stop::Shutdown } else { Stop::Timeout });
                }
                r = self.stream.read(room) => {
                    return match r {
                        Ok(0) => Err(Stop::Eof),
                        Ok(n) => {
                            self.rend += n;
                            Ok(n)
                        }
                        Err(_) => Err(Stop::Io),
                    };
                }
            }
        }
    }

    fn grace(&mut self, grace: Duration) -> Instant {
        *self
            .grace_deadline
            .get_or_insert_with(|| Instant::now() + grace)
    }

    /// Read one line (up to and including LF). Lines longer than the limit
    /// are discarded up to their LF and reported as [`Line::TooLong`]: the
    /// buffer never holds more than one line plus slack.
    pub async fn read_line(&mut self, wait: Wait<'_>) -> Result<Line, Stop> {
        let mut scanned = 0;
        let mut too_long = false;
        loop {
            let buf = self.buffered();
            if let Some(pos) = buf.iter().skip(scanned).position(|&b| b == b'\n') {
                let end = self.rstart + scanned + pos + 1;
                let start = self.rstart;
                if too_long || end - start > self.max_line {
                    self.consume(end - start);
                    return Ok(Line::TooLong);
                }
                self.rstart = end;
                // Callers use the slice before the next read, which may compact.
                return Ok(Line::Ok { start, end });
            }
            scanned = buf.len();
            if scanned > self.max_line {
                too_long = true;
                self.discard_buffered();
                scanned = 0;
            }
            self.fill(wait).await?;
        }
    }

    /// Called after a line was handled: resets the buffer when it is empty.
    pub fn settle(&mut self) {
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        }
    }
}
