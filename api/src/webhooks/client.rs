//! One webhook attempt: a POST to a checked address, with no redirects and
//! a connect and a total timeout.
//!
//! The host is resolved and every address checked ([`super::address`]) right
//! before connecting, and the connection goes to exactly those checked
//! addresses (never a second lookup), so DNS rebinding cannot move it.
//! https uses rustls with the Mozilla roots (`webpki-roots`), like the SNS
//! certificate fetch; the response body is never read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use super::address::{resolve_checked, AddressError};

/// A webhook URL, parsed and checked for shape (not yet for its address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https` (true) or `http`.
    pub tls: bool,
    /// The host as written (a name, an IPv4 literal or a bracketed IPv6 one).
    pub host: String,
    /// The port (explicit or the scheme's default).
    pub port: u16,
    /// Path and query sent in the request line.
    pub path_and_query: String,
}

/// Longest URL an endpoint may have.
pub const MAX_URL_BYTES: usize = 2048;

/// Why a URL cannot be a webhook target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Not an absolute `http(s)://host[:port]/path` URL.
    #[error("not an absolute http or https URL")]
    Syntax,
    /// Longer than [`MAX_URL_BYTES`].
    #[error("longer than {MAX_URL_BYTES} bytes")]
    TooLong,
    /// `user:password@` in the URL (credentials would be sent in the clear
    /// to whoever the URL names, and hide the real host from a reader).
    #[error("credentials in the URL are not supported")]
    Credentials,
}

impl Target {
    /// Parse `url`.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        if url.len() > MAX_URL_BYTES {
            return Err(UrlError::TooLong);
        }
        let uri: Uri = url.parse().map_err(|_| UrlError::Syntax)?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(UrlError::Syntax),
        };
        let authority = uri.authority().ok_or(UrlError::Syntax)?;
        if authority.as_str().contains('@') {
            return Err(UrlError::Credentials);
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(UrlError::Syntax);
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_owned());
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
            path_and_query,
        })
    }

    fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Why one attempt did not get a 2xx.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttemptError {
    /// The host resolves to a refused address (or not at all).
    #[error(transparent)]
    Address(#[from] AddressError),
    /// TCP or TLS failed, or the connect timeout passed.
    #[error("connecting: {0}")]
    Connect(String),
    /// The whole exchange took longer than the total timeout.
    #[error("timed out")]
    Timeout,
    /// HTTP protocol failure.
    #[error("HTTP: {0}")]
    Http(String),
    /// A non-2xx status (3xx included: redirects are never followed).
    #[error("HTTP status {0}")]
    Status(u16),
}

/// Sends webhook requests. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    tls: tokio_rustls::TlsConnector,
    allow_private: bool,
    connect_timeout: Duration,
    total_timeout: Duration,
}

impl Client {
    /// A client trusting the Mozilla roots.
    pub fn new(allow_private: bool, connect_timeout: Duration, total_timeout: Duration) -> Self {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = match rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
            // The ring provider supports the safe defaults; this is unreachable
            // in practice, and an https attempt then fails its handshake.
            Err(_) => rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        };
        Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            allow_private,
            connect_timeout,
            total_timeout,
        }
    }

    /// POST `body` to `target` with `headers`; `Ok` on any 2xx.
    pub async fn post(
        &self,
        target: &Target,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<u16, AttemptError> {
        tokio::time::timeout(self.total_timeout, self.post_inner(target, headers, body))
            .await
            .map_err(|_| AttemptError::Timeout)?
    }

    async fn post_inner(
        &self,
        target: &Target,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<u16, AttemptError> {
        let addrs = resolve_checked(&target.host, target.port, self.allow_private).await?;
        let tcp = self.connect(&addrs).await?;
        let mut req = Request::post(target.path_and_query.as_str())
            .header(HOST, target.host_header())
            .header(USER_AGENT, "uncorreo-webhooks")
            .header(CONTENT_TYPE, "application/json")
            .header(CONNECTION, "close");
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| AttemptError::Http(e.to_string()))?;
        if target.tls {
            let host = target.host.trim_start_matches('[').trim_end_matches(']');
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| AttemptError::Connect(e.to_string()))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| AttemptError::Connect(e.to_string()))?;
            send(tls, req).await
        } else {
            send(tcp, req).await
        }
    }

    async fn connect(&self, addrs: &[SocketAddr]) -> Result<TcpStream, AttemptError> {
        let mut last = String::from("no address");
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(e)) => last = format!("{addr}: {e}"),
                Err(_) => last = format!("{addr}: connect timeout"),
            }
        }
        Err(AttemptError::Connect(last))
    }
}

async fn send<I>(io: I, req: Request<Full<Bytes>>) -> Result<u16, AttemptError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| AttemptError::Http(e.to_string()))?;
    // The connection future must be polled for the request to progress.
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = sender
        .send_request(req)
        .await
        .map_err(|e| AttemptError::Http(e.to_string()));
    driver.abort();
    let status = result?.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(AttemptError::Status(status.as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_targets_and_odd_ones_are_refused() {
        let t = Target::parse("https://hooks.example.com/in?x=1").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path_and_query.as_str()),
            (true, "hooks.example.com", 443, "/in?x=1")
        );
        let t = Target::parse("http://127.0.0.1:8081").unwrap();
        assert_eq!((t.port, t.path_and_query.as_str()), (8081, "/"));
        assert_eq!(Target::parse("http://[::1]:9/").unwrap().host, "[::1]");
        assert_eq!(Target::parse("ftp://x/"), Err(UrlError::Syntax));
        assert_eq!(Target::parse("/relative"), Err(UrlError::Syntax));
        assert_eq!(
            Target::parse("http://u:p@example.com/"),
            Err(UrlError::Credentials)
        );
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert_eq!(Target::parse(&long), Err(UrlError::TooLong));
    }
}
