//! The real HTTPS fetcher against a local TLS server whose certificate, issued
//! by the test CA, names the SNS host: a 200 is read, a redirect is refused
//! (never followed), other statuses, oversize bodies and a silent server end in
//! their exact errors, and a server certificate for another name is refused.

use uncorreo_ses::fixture as fx;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use uncorreo_ses::{
    CertSource, FetchError, HttpsCertSource, HttpsClient, SnsUrl, SubscribeConfirmer,
};

const HOST: &str = "sns.us-east-1.amazonaws.com";
const BODY_CAP: usize = 64 * 1024;

/// What the server saw: one request line and Host header per connection.
type Seen = Arc<Mutex<Vec<String>>>;

async fn server(cert_host: &str) -> (SocketAddr, Seen) {
    let (cert, key) = fx::tls_server_cert(cert_host);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![rustls::pki_types::CertificateDer::from(cert)],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&req).into_owned();
                let line = req.lines().next().unwrap_or_default().to_owned();
                let host = req
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("host: ")
                            .or_else(|| l.strip_prefix("Host: "))
                    })
                    .unwrap_or_default()
                    .to_owned();
                seen.lock().push(format!("{line} | {host}"));
                let path = line.split(' ').nth(1).unwrap_or_default();
                let resp: Vec<u8> = match path {
                    "/ok.pem" => ok(fx::valid_cert().as_bytes()),
                    p if p.starts_with("/?Action=ConfirmSubscription") => {
                        ok(b"<ConfirmSubscriptionResponse/>")
                    }
                    "/redirect.pem" => b"HTTP/1.1 302 Found\r\nLocation: https://sns.us-east-1.amazonaws.com/ok.pem\r\nContent-Length: 0\r\n\r\n".to_vec(),
                    "/at-cap.pem" => ok(&vec![b'x'; BODY_CAP]),
                    "/over-cap.pem" => ok(&vec![b'x'; BODY_CAP + 1]),
                    "/silent.pem" => {
                        std::future::pending::<()>().await;
                        return;
                    }
                    _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
                };
                let _ = tls.write_all(&resp).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, seen)
}

fn ok(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn client(addr: SocketAddr, timeout: Duration) -> HttpsClient {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(fx::ca_cert_der()))
        .unwrap();
    HttpsClient::with_roots(roots, timeout)
        .unwrap()
        .connect_to(addr)
}

fn url(path: &str) -> SnsUrl {
    SnsUrl::parse(&format!("https://{HOST}{path}")).unwrap()
}

#[tokio::test]
async fn fetches_a_certificate_and_follows_no_redirect() {
    let (addr, seen) = server(HOST).await;
    let source = HttpsCertSource::new(client(addr, Duration::from_secs(10)));

    let pem = source.fetch(&url("/ok.pem")).await.unwrap();
    assert!(pem.starts_with(b"-----BEGIN CERTIFICATE-----"));

    let e = source.fetch(&url("/redirect.pem")).await.unwrap_err();
    assert!(matches!(e, FetchError::Redirect(302)), "{e:?}");
    let e = source.fetch(&url("/missing.pem")).await.unwrap_err();
    assert!(matches!(e, FetchError::Status(404)), "{e:?}");

    // The redirect target was never requested: one request per fetch, no more.
    let seen = seen.lock().clone();
    assert_eq!(
        seen,
        vec![
            format!("GET /ok.pem HTTP/1.1 | {HOST}"),
            format!("GET /redirect.pem HTTP/1.1 | {HOST}"),
            format!("GET /missing.pem HTTP/1.1 | {HOST}"),
        ]
    );
}

#[tokio::test]
async fn certificate_bodies_are_capped_exactly() {
    let (addr, _) = server(HOST).await;
    let source = HttpsCertSource::new(client(addr, Duration::from_secs(10)));
    let body = source.fetch(&url("/at-cap.pem")).await.unwrap();
    assert_eq!(body.len(), BODY_CAP);
    let e = source.fetch(&url("/over-cap.pem")).await.unwrap_err();
    assert!(matches!(e, FetchError::TooLarge(BODY_CAP)), "{e:?}");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let (addr, _) = server(HOST).await;
    let source = HttpsCertSource::new(client(addr, Duration::from_millis(200)));
    let e = source.fetch(&url("/silent.pem")).await.unwrap_err();
    assert!(matches!(e, FetchError::Timeout), "{e:?}");
}

#[tokio::test]
async fn a_server_certificate_for_another_name_is_refused() {
    let (addr, seen) = server("sns.us-east-1.amazonaws.com.evil.com").await;
    let source = HttpsCertSource::new(client(addr, Duration::from_secs(10)));
    let e = source.fetch(&url("/ok.pem")).await.unwrap_err();
    assert!(
        matches!(&e, FetchError::Connect(m) if m.contains("not valid for name")),
        "{e:?}"
    );
    assert!(
        seen.lock().is_empty(),
        "no request sent over an untrusted connection"
    );
}

#[tokio::test]
async fn a_subscription_is_confirmed_with_one_get() {
    let (addr, seen) = server(HOST).await;
    let c = client(addr, Duration::from_secs(10));
    c.confirm(&url(
        "/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:1:t&Token=abc",
    ))
    .await
    .unwrap();
    assert_eq!(
        *seen.lock(),
        vec![format!(
            "GET /?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:1:t&Token=abc HTTP/1.1 | {HOST}"
        )]
    );
    let e = c.confirm(&url("/?Action=Nope")).await.unwrap_err();
    assert!(matches!(e, FetchError::Status(404)), "{e:?}");
}
