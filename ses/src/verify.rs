//! SNS signature verification as a pure function: no network, no clock.
//!
//! [`verify`] checks, in order: the `SigningCertURL` host rules, the
//! `SignatureVersion` (1 = SHA1withRSA, 2 = SHA256withRSA), that the fields the
//! type signs are present, and the RSA PKCS#1 v1.5 signature over the string
//! to sign with the certificate's public key. Whether the certificate is
//! within its validity period is the fetch layer's job ([`crate::certs`]),
//! because that needs a clock; trust in the certificate itself comes from
//! fetching it over HTTPS from an SNS host only.

use base64::Engine as _;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use rsa::traits::PublicKeyParts;
use x509_cert::der::referenced::OwnedToRef;
use x509_cert::Certificate;

use crate::message::{FieldError, SnsMessage};
use crate::url::{SnsUrl, UrlError};

/// Smallest RSA modulus we accept, in bits (SNS uses 2048).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus we accept, in bits (bounds the work one request can cause).
pub const MAX_RSA_BITS: usize = 4096;
/// Largest certificate PEM we parse.
pub const MAX_CERT_PEM_BYTES: usize = 64 * 1024;

/// Why a message is not authentic. Every variant means "drop it".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A field the message type signs is missing, or `Type` is unknown.
    #[error("{0}")]
    Field(#[from] FieldError),
    /// `SignatureVersion` is absent or not `1`/`2`.
    #[error("unsupported SignatureVersion {0:?} (only 1 and 2 exist)")]
    UnsupportedVersion(String),
    /// `SigningCertURL` is absent.
    #[error("missing field SigningCertURL")]
    MissingCertUrl,
    /// `SigningCertURL` breaks the host rules.
    #[error("bad SigningCertURL: {0}")]
    CertUrl(#[from] UrlError),
    /// `Signature` is absent or not base64.
    #[error("Signature is missing or not base64")]
    SignatureEncoding,
    /// The certificate is not a PEM X.509 certificate we can read.
    #[error("certificate unreadable: {0}")]
    Certificate(String),
    /// The certificate's key is not RSA of 2048–4096 bits.
    #[error("certificate key is not RSA of {MIN_RSA_BITS}-{MAX_RSA_BITS} bits")]
    UnsupportedKey,
    /// The signature does not match.
    #[error("signature does not match")]
    BadSignature,
}

/// The parts of a signing certificate we use, parsed once and cached.
#[derive(Debug, Clone)]
pub struct SigningCert {
    key: rsa::PublicKey,
    /// notBefore, seconds since the epoch.
    pub not_before_secs: u64,
    /// notAfter, seconds since the epoch.
    pub not_after_secs: u64,
}

impl SigningCert {
    /// Parse the first certificate of a PEM file and take its RSA key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, VerifyError> {
        if pem.len() > MAX_CERT_PEM_BYTES {
            return Err(VerifyError::Certificate("PEM too large".to_owned()));
        }
        let chain = Certificate::load_pem_chain(pem)
            .map_err(|e| VerifyError::Certificate(e.to_string()))?;
        let cert = chain
            .first()
            .ok_or_else(|| VerifyError::Certificate("no certificate in PEM".to_owned()))?;
        let tbs = cert.tbs_certificate();
        let key = rsa::PublicKey::try_from(tbs.subject_public_key_info().owned_to_ref())
            .map_err(|_| VerifyError::UnsupportedKey)?;
        let bits = key.size() * 8;
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(VerifyError::UnsupportedKey);
        }
        let validity = tbs.validity();
        Ok(Self {
            key,
            not_before_secs: validity.not_before.to_unix_duration().as_secs(),
            not_after_secs: validity.not_after.to_unix_duration().as_secs(),
        })
    }

    /// True when `now_secs` is within `[notBefore, notAfter]`.
    pub fn valid_at(&self, now_secs: u64) -> bool {
        (self.not_before_secs..=self.not_after_secs).contains(&now_secs)
    }
}

/// Verify `message` against the certificate in `cert_pem` (the PEM fetched from
/// its `SigningCertURL`). Pure: no network, no clock.
pub fn verify(message: &SnsMessage, cert_pem: &[u8]) -> Result<(), VerifyError> {
    check_before_fetch(message)?;
    verify_with(message, &SigningCert::from_pem(cert_pem)?)
}

/// The checks that need no certificate: the cert URL's host rules and the
/// signature version. Returns the URL to fetch the certificate from.
pub fn check_before_fetch(message: &SnsMessage) -> Result<SnsUrl, VerifyError> {
    let url = message
        .signing_cert_url
        .as_deref()
        .ok_or(VerifyError::MissingCertUrl)?;
    let url = SnsUrl::parse_cert_url(url)?;
    signature_version(message)?;
    Ok(url)
}

#[derive(Clone, Copy)]
enum Version {
    Sha1,
    Sha256,
}

fn signature_version(message: &SnsMessage) -> Result<Version, VerifyError> {
    match message.signature_version.as_deref() {
        Some("1") => Ok(Version::Sha1),
        Some("2") => Ok(Version::Sha256),
        other => Err(VerifyError::UnsupportedVersion(
            other.unwrap_or("(absent)").to_owned(),
        )),
    }
}

/// [`verify`] with an already parsed certificate (what the cache holds).
pub fn verify_with(message: &SnsMessage, cert: &SigningCert) -> Result<(), VerifyError> {
    check_before_fetch(message)?;
    let version = signature_version(message)?;
    let signed = message.string_to_sign()?;
    let sig = message
        .signature
        .as_deref()
        .ok_or(VerifyError::SignatureEncoding)?;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(sig)
        .map_err(|_| VerifyError::SignatureEncoding)?;
    let sig = Signature::try_from(sig.as_slice()).map_err(|_| VerifyError::BadSignature)?;
    let ok = match version {
        Version::Sha1 => VerifyingKey::<sha1::Sha1>::new(cert.key.clone())
            .verify(signed.as_bytes(), &sig)
            .is_ok(),
        Version::Sha256 => VerifyingKey::<sha2::Sha256>::new(cert.key.clone())
            .verify(signed.as_bytes(), &sig)
            .is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}
