//! A deliberately small HTTPS GET for the two things the webhook fetches from
//! SNS: signing certificates and `SubscribeURL` confirmations.
//!
//! It takes only an [`SnsUrl`] (so only SNS hosts are ever contacted), never
//! follows redirects (a 3xx is an error: following one would let a compromised
//! or misconfigured endpoint bounce us anywhere), bounds the whole exchange by
//! one timeout and the body by a byte cap, and trusts the Mozilla root set
//! from `webpki-roots` (no dependency on the host's CA files).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_rustls::rustls;

use crate::url::SnsUrl;

/// Why a fetch failed. All of these are worth retrying later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// Did not finish within the timeout.
    #[error("timed out")]
    Timeout,
    /// DNS, TCP or TLS failure.
    #[error("connecting: {0}")]
    Connect(String),
    /// HTTP protocol failure.
    #[error("HTTP: {0}")]
    Http(String),
    /// A redirect, which we never follow.
    #[error("redirect ({0}) refused")]
    Redirect(u16),
    /// Any other non-200 status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body is larger than the cap.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    /// Reading a local file (the `trusted_cert_dir` source).
    #[error("reading {0}")]
    File(String),
}

/// An HTTPS client for SNS hosts. Cheap to clone.
#[derive(Clone)]
pub struct HttpsClient {
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
    connect_to: Option<SocketAddr>,
}

impl HttpsClient {
    /// A client with the Mozilla roots, TLS 1.2+, and `timeout` for each whole request.
    pub fn new(timeout: Duration) -> Result<Self, FetchError> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Self::with_roots(roots, timeout)
    }

    /// As [`HttpsClient::new`], trusting `roots` instead of the Mozilla set.
    pub fn with_roots(roots: rustls::RootCertStore, timeout: Duration) -> Result<Self, FetchError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| FetchError::Connect(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            timeout,
            connect_to: None,
        })
    }

    /// Open every TCP connection to `addr` instead of resolving the URL's host.
    /// TLS still verifies the server's certificate for the SNS host name, so
    /// this cannot widen what is trusted; tests use it to reach a local server.
    pub fn connect_to(mut self, addr: SocketAddr) -> Self {
        self.connect_to = Some(addr);
        self
    }

    /// GET `url`; the body if the status is 200 and it is at most `max_bytes`.
    pub async fn get(&self, url: &SnsUrl, max_bytes: usize) -> Result<Bytes, FetchError> {
        tokio::time::timeout(self.timeout, self.get_inner(url, max_bytes))
            .await
            .map_err(|_| FetchError::Timeout)?
    }

    async fn get_inner(&self, url: &SnsUrl, max_bytes: usize) -> Result<Bytes, FetchError> {
        let connect = |e: &dyn std::fmt::Display| FetchError::Connect(e.to_string());
        let host = url.host().to_owned();
        let tcp = match self.connect_to {
            Some(addr) => tokio::net::TcpStream::connect(addr).await,
            None => tokio::net::TcpStream::connect((host.as_str(), 443)).await,
        }
        .map_err(|e| connect(&e))?;
        let name =
            rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| connect(&e))?;
        let tls = self.tls.connect(name, tcp).await.map_err(|e| connect(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        // The connection future must be polled for the request to progress;
        // it ends when the server closes (we ask it to) or when we drop it.
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let result = async {
            let req = Request::get(url.path_and_query())
                .header(HOST, host.as_str())
                .header(USER_AGENT, "uncorreo-sns")
                .header(CONNECTION, "close")
                .body(Empty::<Bytes>::new())
                .map_err(|e| FetchError::Http(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| FetchError::Http(e.to_string()))?;
            let status = resp.status();
            if status.is_redirection() {
                return Err(FetchError::Redirect(status.as_u16()));
            }
            if status != StatusCode::OK {
                return Err(FetchError::Status(status.as_u16()));
            }
            let body = Limited::new(resp.into_body(), max_bytes)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        FetchError::TooLarge(max_bytes)
                    } else {
                        FetchError::Http(e.to_string())
                    }
                })?;
            Ok(body.to_bytes())
        }
        .await;
        driver.abort();
        result
    }
}
