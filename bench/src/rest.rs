//! A small HTTP/1.1 JSON client for the REST API (keep-alive, one connection
//! per client; make several clients for parallel requests).

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// Largest response body we read.
const MAX_BODY: usize = 64 * 1024 * 1024;

pub struct Rest {
    addr: String,
    key: String,
    conn: Option<SendRequest<Full<Bytes>>>,
    timeout: Duration,
}

/// A mailbox the bench created, with the credential that reads it.
#[derive(Debug, Clone)]
pub struct Mailbox {
    pub address: String,
    pub token: String,
}

/// Status and body of a response.
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

impl Response {
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).context("response is not JSON")
    }
}

impl Rest {
    pub fn new(addr: &str, key: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            key: key.to_owned(),
            conn: None,
            timeout: Duration::from_secs(30),
        }
    }

    async fn connection(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        let alive = self.conn.as_ref().is_some_and(|c| !c.is_closed());
        if !alive {
            let stream = TcpStream::connect(&self.addr)
                .await
                .with_context(|| format!("connecting to http {}", self.addr))?;
            stream.set_nodelay(true).ok();
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.conn = Some(send);
        }
        self.conn.as_mut().context("no connection")
    }

    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Response> {
        let host = self.addr.clone();
        let auth = format!("Bearer {}", self.key);
        let timeout = self.timeout;
        let conn = self.connection().await?;
        conn.ready().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .header("accept", "application/json");
        if !auth.ends_with(' ') {
            req = req.header("authorization", auth);
        }
        let req = match body {
            Some(v) => req
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(serde_json::to_vec(&v)?)))?,
            None => req.body(Full::new(Bytes::new()))?,
        };
        let resp = tokio::time::timeout(timeout, conn.send_request(req))
            .await
            .context("HTTP request timed out")??;
        let status = resp.status().as_u16();
        let collected = tokio::time::timeout(
            timeout,
            http_body_util::Limited::new(resp.into_body(), MAX_BODY).collect(),
        )
        .await
        .context("HTTP body timed out")?
        .map_err(|e| anyhow::anyhow!("reading body: {e}"))?;
        Ok(Response {
            status,
            body: collected.to_bytes(),
        })
    }

    /// `POST /api/v1/mailboxes` → the new address, and the credential that
    /// reads it (the client's API key, or the anonymous mailbox's session token).
    pub async fn create_mailbox(
        &mut self,
        local_part: &str,
        ttl_minutes: u64,
    ) -> anyhow::Result<Mailbox> {
        let body = serde_json::json!({"local_part": local_part, "ttl_minutes": ttl_minutes});
        let r = self
            .request(Method::POST, "/api/v1/mailboxes", Some(body))
            .await?;
        if r.status != 201 && r.status != 200 {
            bail!(
                "creating mailbox {local_part}: HTTP {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        let v = r.json()?;
        let address = v
            .get("address")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("no address in {v}"))?;
        let token = match v.get("session_token").and_then(Value::as_str) {
            Some(t) => t.to_owned(),
            None => self.key.clone(),
        };
        Ok(Mailbox { address, token })
    }
}
