//! A minimal SMTP client for load: EHLO once, then many transactions on the
//! same connection, MAIL/RCPT/DATA sent in one write when PIPELINING is offered.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Longest reply line we accept; a server sending more is broken.
const MAX_LINE: usize = 4096;
/// Most lines in one multi-line reply.
const MAX_REPLY_LINES: usize = 200;

/// One SMTP reply: its code and the text of its last line.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

/// Outcome of one transaction.
#[derive(Debug)]
pub enum Sent {
    /// 250 after the end of data; `latency` is from writing `.\r\n` to reading the reply.
    Accepted { latency: Duration, at: Instant },
    /// A 4xx/5xx at some stage.
    Refused { stage: &'static str, reply: Reply },
}

pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    pipelining: bool,
    line: String,
    cmd: Vec<u8>,
    timeout: Duration,
}

impl Client {
    /// Connect, read the greeting and say EHLO.
    pub async fn connect(addr: &str, timeout: Duration) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .context("connect timed out")?
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).ok();
        let (r, w) = stream.into_split();
        let mut c = Self {
            reader: BufReader::with_capacity(16 * 1024, r),
            writer: w,
            pipelining: false,
            line: String::new(),
            cmd: Vec::with_capacity(512),
            timeout,
        };
        let greeting = c.reply().await?;
        if greeting.code != 220 {
            bail!("greeting {} {}", greeting.code, greeting.text);
        }
        c.writer.write_all(b"EHLO bench.client\r\n").await?;
        let (ehlo, lines) = c.reply_lines().await?;
        if ehlo.code != 250 {
            bail!("EHLO answered {} {}", ehlo.code, ehlo.text);
        }
        c.pipelining = lines.iter().any(|l| {
            l.get(4..)
                .is_some_and(|k| k.trim().eq_ignore_ascii_case("PIPELINING"))
        });
        Ok(c)
    }

    pub fn pipelining(&self) -> bool {
        self.pipelining
    }

    /// One transaction. `body` is the message with CRLF line ends, already
    /// dot-stuffed, ending with the final `.\r\n` (see [`build_message`]).
    pub async fn send(&mut self, from: &str, rcpt: &str, body: &[u8]) -> anyhow::Result<Sent> {
        let mail = format!("MAIL FROM:<{from}>\r\n");
        let rcpt_cmd = format!("RCPT TO:<{rcpt}>\r\n");
        let (mail_r, rcpt_r, data_r) = if self.pipelining {
            self.cmd.clear();
            self.cmd.extend_from_slice(mail.as_bytes());
            self.cmd.extend_from_slice(rcpt_cmd.as_bytes());
            self.cmd.extend_from_slice(b"DATA\r\n");
            self.writer.write_all(&self.cmd).await?;
            (
                self.reply().await?,
                self.reply().await?,
                self.reply().await?,
            )
        } else {
            self.writer.write_all(mail.as_bytes()).await?;
            let m = self.reply().await?;
            self.writer.write_all(rcpt_cmd.as_bytes()).await?;
            let r = self.reply().await?;
            self.writer.write_all(b"DATA\r\n").await?;
            let d = self.reply().await?;
            (m, r, d)
        };
        if mail_r.code >= 400 {
            self.reset_after(&data_r).await?;
            return Ok(Sent::Refused {
                stage: "MAIL",
                reply: mail_r,
            });
        }
        if rcpt_r.code >= 400 {
            self.reset_after(&data_r).await?;
            return Ok(Sent::Refused {
                stage: "RCPT",
                reply: rcpt_r,
            });
        }
        if data_r.code != 354 {
            self.reset_after(&data_r).await?;
            return Ok(Sent::Refused {
                stage: "DATA",
                reply: data_r,
            });
        }
        // One write for body and terminator: the clock starts when `.\r\n` is handed over.
        self.writer.write_all(body).await?;
        let sent_at = Instant::now();
        let end = self.reply().await?;
        let at = Instant::now();
        if end.code == 250 {
            Ok(Sent::Accepted {
                latency: at - sent_at,
                at,
            })
        } else {
            Ok(Sent::Refused {
                stage: "END-OF-DATA",
                reply: end,
            })
        }
    }

    async fn reset_after(&mut self, data_reply: &Reply) -> anyhow::Result<()> {
        if data_reply.code == 354 {
            // The server wants a body although an earlier command failed; end it empty.
            self.writer.write_all(b".\r\n").await?;
            self.reply().await?;
        }
        self.writer.write_all(b"RSET\r\n").await?;
        self.reply().await?;
        Ok(())
    }

    pub async fn quit(mut self) {
        if self.writer.write_all(b"QUIT\r\n").await.is_ok() {
            let _ = self.reply().await;
        }
    }

    async fn reply(&mut self) -> anyhow::Result<Reply> {
        Ok(self.reply_lines().await?.0)
    }

    async fn reply_lines(&mut self) -> anyhow::Result<(Reply, Vec<String>)> {
        let mut lines = Vec::new();
        loop {
            self.line.clear();
            let n = tokio::time::timeout(self.timeout, self.reader.read_line(&mut self.line))
                .await
                .context("reply timed out")??;
            if n == 0 {
                bail!("connection closed while waiting for a reply");
            }
            if self.line.len() > MAX_LINE || lines.len() >= MAX_REPLY_LINES {
                bail!("reply too long");
            }
            let l = self.line.trim_end().to_owned();
            let code: u16 = l
                .get(..3)
                .and_then(|c| c.parse().ok())
                .with_context(|| format!("malformed reply {l:?}"))?;
            let more = l.as_bytes().get(3) == Some(&b'-');
            lines.push(l);
            if !more {
                let text = lines
                    .last()
                    .map(|l| l.get(4..).unwrap_or("").to_owned())
                    .unwrap_or_default();
                return Ok((Reply { code, text }, lines));
            }
        }
    }
}

/// A message of `size` bytes (CRLF ends, no line starting with `.`), carrying
/// `token` in its Subject and Message-ID so events can be matched, followed by
/// the end-of-data `.\r\n` (not counted in `size`).
pub fn build_message(from: &str, to: &str, token: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {token}\r\nMessage-ID: <{token}@bench.test>\r\n\
         Date: Tue, 24 Nov 2026 20:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    .into_bytes();
    const LINE: &[u8] =
        b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstu\r\n";
    while m.len() + LINE.len() <= size {
        m.extend_from_slice(LINE);
    }
    let rest = size.saturating_sub(m.len());
    if rest >= 3 {
        m.extend(std::iter::repeat_n(b'x', rest - 2));
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b".\r\n");
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_has_the_asked_size_and_needs_no_stuffing() {
        let m = build_message("a@x", "b@y", "tok-1", 4096);
        assert_eq!(m.len(), 4096 + 3);
        assert!(m.ends_with(b"\r\n.\r\n"));
        let m = &m[..4096];
        assert!(!m.windows(3).any(|w| w == b"\n.\r" || w == b"\n.."));
        let small = build_message("a@x", "b@y", "tok-1", 10);
        assert!(small.ends_with(b"\r\n.\r\n"));
    }
}
