//! The only URLs the webhook ever fetches: `https://sns.<region>.amazonaws.com[.cn]/…`.
//!
//! A `SigningCertURL` or `SubscribeURL` arrives inside a request anybody can
//! send, so this is where blind SSRF and forged-certificate attacks are
//! stopped. The parser is deliberately strict and does not try to understand
//! general URLs: lower- or upper-case `https://`, then a host that must match
//! the SNS pattern exactly (which excludes IP literals, user info, ports and
//! look-alikes such as `sns.us-east-1.amazonaws.com.evil.com`), then a path
//! made only of printable URL characters. Anything else is refused.

use std::fmt;

/// Longest URL we accept (real ones are under 300 bytes; a subscribe URL
/// carries a ~260-character token).
pub const MAX_URL_LEN: usize = 2048;

/// Longest region label (`us-gov-west-1`, `ap-southeast-5`, … are well below it).
const MAX_REGION_LEN: usize = 32;

/// Why a URL is not one we fetch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Longer than [`MAX_URL_LEN`].
    #[error("URL longer than {MAX_URL_LEN} bytes")]
    TooLong,
    /// Not `https://`.
    #[error("URL scheme is not https")]
    NotHttps,
    /// The host is not `sns.<region>.amazonaws.com` or `sns.<region>.amazonaws.com.cn`
    /// (includes ports, user info and IP literals).
    #[error("host {0:?} is not sns.<region>.amazonaws.com[.cn]")]
    Host(String),
    /// Characters outside printable URL characters, a fragment, or no path.
    #[error("URL path contains characters that are not allowed")]
    Path,
    /// A certificate URL whose path does not end in `.pem` or that has a query.
    #[error("certificate URL path does not end in .pem")]
    NotPem,
    /// A `.pem` path that is not the one AWS signs with:
    /// `/SimpleNotificationService-<32 lower-case hex digits>.pem`.
    #[error("certificate URL path is not /SimpleNotificationService-<32 hex digits>.pem")]
    NotAwsCertPath,
}

/// The one path shape of AWS's SNS signing certificates. Pinning it means a
/// forged message can only make us fetch names of this shape, each of which
/// AWS either serves (a real AWS certificate, useless to a forger) or not.
const CERT_PATH_PREFIX: &str = "/SimpleNotificationService-";
/// Hex digits in the certificate's name (an MD5-sized identifier).
const CERT_PATH_HEX_DIGITS: usize = 32;

/// A URL that passed the SNS host rules; the only thing the fetchers accept.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SnsUrl {
    full: String,
    host: String,
    /// Path plus query, starting with `/`.
    path_and_query: String,
}

impl SnsUrl {
    /// Check a `SubscribeURL` (any path and query on an SNS host).
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        if url.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        let rest = strip_prefix_ignore_case(url, "https://").ok_or(UrlError::NotHttps)?;
        let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(host_end);
        let host = authority.to_ascii_lowercase();
        if !is_sns_host(&host) {
            return Err(UrlError::Host(authority.to_owned()));
        }
        if !path.starts_with('/') || !path.bytes().all(is_path_byte) {
            return Err(UrlError::Path);
        }
        Ok(Self {
            full: format!("https://{host}{path}"),
            host,
            path_and_query: path.to_owned(),
        })
    }

    /// Check a `SigningCertURL`: the SNS host rules, no query, and the path
    /// AWS uses, `/SimpleNotificationService-<32 hex>.pem`.
    pub fn parse_cert_url(url: &str) -> Result<Self, UrlError> {
        let u = Self::parse(url)?;
        if u.path_and_query.contains('?') || !u.path_and_query.ends_with(".pem") {
            return Err(UrlError::NotPem);
        }
        let name = u
            .path_and_query
            .strip_prefix(CERT_PATH_PREFIX)
            .and_then(|rest| rest.strip_suffix(".pem"))
            .ok_or(UrlError::NotAwsCertPath)?;
        if name.len() != CERT_PATH_HEX_DIGITS
            || !name
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(UrlError::NotAwsCertPath);
        }
        Ok(u)
    }

    /// The host, lower case.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Path and query, starting with `/`.
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }

    /// The last path segment (for a certificate URL: `SimpleNotificationService-….pem`).
    pub fn file_name(&self) -> &str {
        let path = self
            .path_and_query
            .split_once('?')
            .map_or(self.path_and_query.as_str(), |(p, _)| p);
        path.rsplit('/').next().unwrap_or(path)
    }

    /// The whole normalised URL.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for SnsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for SnsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SnsUrl({})", self.full)
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// `sns.<region>.amazonaws.com` or `sns.<region>.amazonaws.com.cn`, region `[a-z0-9-]+`.
fn is_sns_host(host: &str) -> bool {
    let Some(rest) = host.strip_prefix("sns.") else {
        return false;
    };
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"));
    region.is_some_and(|r| {
        !r.is_empty()
            && r.len() <= MAX_REGION_LEN
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !r.starts_with('-')
            && !r.ends_with('-')
    })
}

/// RFC 3986 unreserved + reserved characters and `%`, minus `#` (no fragments)
/// and `\` (some stacks read it as `/`). No spaces, no controls, no non-ASCII.
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'/'
                | b'?'
                | b':'
                | b'@'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "SimpleNotificationService-01d088a6f77103d0fe307c0069e40ed6.pem";
    const GOOD: &str = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-01d088a6f77103d0fe307c0069e40ed6.pem";

    #[test]
    fn accepts_real_cert_and_subscribe_urls() {
        let u = SnsUrl::parse_cert_url(GOOD).unwrap();
        assert_eq!(u.host(), "sns.us-east-1.amazonaws.com");
        assert_eq!(u.file_name(), NAME);
        SnsUrl::parse_cert_url(&format!("https://sns.cn-north-1.amazonaws.com.cn/{NAME}")).unwrap();
        let s = SnsUrl::parse(
            "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123:t&Token=2336",
        )
        .unwrap();
        assert!(s.path_and_query().starts_with("/?Action="));
    }

    #[test]
    fn refuses_every_forgery_form() {
        let cases = [
            (
                "http://sns.us-east-1.amazonaws.com/a.pem",
                UrlError::NotHttps,
            ),
            (
                "ftp://sns.us-east-1.amazonaws.com/a.pem",
                UrlError::NotHttps,
            ),
            ("//sns.us-east-1.amazonaws.com/a.pem", UrlError::NotHttps),
        ];
        for (url, want) in cases {
            assert_eq!(SnsUrl::parse_cert_url(url).unwrap_err(), want, "{url}");
        }
        for url in [
            "https://sns.us-east-1.amazonaws.com.evil.com/a.pem",
            "https://sns.us-east-1.amazonaws.com.cn.evil.com/a.pem",
            "https://evil.com@sns.us-east-1.amazonaws.com/a.pem",
            "https://sns.us-east-1.amazonaws.com@evil.com/a.pem",
            "https://sns.us-east-1.amazonaws.com:8443/a.pem",
            "https://sns.us-east-1.amazonaws.com:443/a.pem",
            "https://54.239.28.85/a.pem",
            "https://[::1]/a.pem",
            "https://sns..amazonaws.com/a.pem",
            "https://sns.us_east_1.amazonaws.com/a.pem",
            "https://sns.us-east-1.amazonaws.com./a.pem",
            "https://xsns.us-east-1.amazonaws.com/a.pem",
            "https://sns.us-east-1.evil.amazonaws.com.evil/a.pem",
            "https://sqs.us-east-1.amazonaws.com/a.pem",
            "https://sns.-.amazonaws.com/a.pem",
            "https:///a.pem",
        ] {
            assert!(
                matches!(SnsUrl::parse_cert_url(url), Err(UrlError::Host(_))),
                "{url}: {:?}",
                SnsUrl::parse_cert_url(url)
            );
        }
        for url in [
            "https://sns.us-east-1.amazonaws.com/a b.pem",
            "https://sns.us-east-1.amazonaws.com/a\\b.pem",
            "https://sns.us-east-1.amazonaws.com/a.pem#frag",
            "https://sns.us-east-1.amazonaws.com/é.pem",
            "https://sns.us-east-1.amazonaws.com",
            "https://sns.us-east-1.amazonaws.com?x.pem",
        ] {
            assert_eq!(
                SnsUrl::parse_cert_url(url).unwrap_err(),
                UrlError::Path,
                "{url}"
            );
        }
        for url in [
            "https://sns.us-east-1.amazonaws.com/a.pem?x=1",
            "https://sns.us-east-1.amazonaws.com/a.crt",
            "https://sns.us-east-1.amazonaws.com/",
        ] {
            assert_eq!(
                SnsUrl::parse_cert_url(url).unwrap_err(),
                UrlError::NotPem,
                "{url}"
            );
        }
        let long = format!("{}{}", GOOD, "a".repeat(MAX_URL_LEN));
        assert_eq!(SnsUrl::parse(&long).unwrap_err(), UrlError::TooLong);
    }

    #[test]
    fn certificate_paths_are_pinned_to_the_aws_form() {
        let host = "https://sns.us-east-1.amazonaws.com";
        for path in [
            "/a.pem",
            "/SimpleNotificationService-.pem",
            "/SimpleNotificationService-01d088a6f77103d0fe307c0069e40ed.pem",
            "/SimpleNotificationService-01d088a6f77103d0fe307c0069e40ed6a.pem",
            "/SimpleNotificationService-01D088A6F77103D0FE307C0069E40ED6.pem",
            "/SimpleNotificationService-01d088a6f77103d0fe307c0069e40edg.pem",
            "/x/SimpleNotificationService-01d088a6f77103d0fe307c0069e40ed6.pem",
            "/SimpleNotificationService-01d088a6f77103d0fe307c0069e40ed6/.pem",
            "/simplenotificationservice-01d088a6f77103d0fe307c0069e40ed6.pem",
            "/SimpleNotificationService-01d088a6f77103d0fe307c0069e4%2e.pem",
        ] {
            assert_eq!(
                SnsUrl::parse_cert_url(&format!("{host}{path}")).unwrap_err(),
                UrlError::NotAwsCertPath,
                "{path}"
            );
        }
        // A subscribe URL is not a certificate URL and keeps its own rules.
        SnsUrl::parse(&format!("{host}/a.pem")).unwrap();
    }

    #[test]
    fn host_case_is_normalised() {
        let u =
            SnsUrl::parse_cert_url(&format!("HTTPS://SNS.US-EAST-1.AMAZONAWS.COM/{NAME}")).unwrap();
        assert_eq!(u.as_str(), GOOD);
    }
}
