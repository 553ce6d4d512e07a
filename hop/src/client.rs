//! One signed request to another host's hop: a fresh connection, HTTP/1.1,
//! the whole exchange under one timeout, the answer's size bounded.
//!
//! A connection per request keeps this free of pool state; on the private
//! network between hosts a TCP handshake is a fraction of the fdatasync the
//! owner does anyway (SCALE.md, "Cost").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use uncorreo_cluster::hop::{HopSecret, HEADER};

/// The largest answer read back (answers are small JSON documents).
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Why a hop request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HopError {
    /// Connecting, sending or reading failed.
    #[error("hop to {addr}: {reason}")]
    Failed {
        /// The owner's hop address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// No answer within the timeout.
    #[error("hop to {0}: no answer in time")]
    Timeout(String),
}

/// Seconds since the epoch, for signatures.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// POSTs `body` to `path` on `addr`, signed, and returns the status and
/// answer body.
pub async fn post(
    addr: &str,
    secret: &HopSecret,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(u16, Bytes), HopError> {
    match tokio::time::timeout(timeout, exchange(addr, secret, path, body)).await {
        Ok(result) => result.map_err(|reason| HopError::Failed {
            addr: addr.to_owned(),
            reason,
        }),
        Err(_) => Err(HopError::Timeout(addr.to_owned())),
    }
}

async fn exchange(
    addr: &str,
    secret: &HopSecret,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Bytes), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let signature = secret.sign("POST", path, unix_now(), &body);
    let request = Request::post(path)
        .header(hyper::header::HOST, addr)
        .header(HEADER, signature)
        .header(hyper::header::CONTENT_LENGTH, body.len())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("request: {e}"))?;
    let result = async {
        let answer = sender
            .send_request(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = answer.status().as_u16();
        let body = Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| format!("answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    driver.abort();
    result
}
