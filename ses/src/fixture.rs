//! Test-time SNS (the `fixture` feature; never in the binary): a locally made
//! CA, signing certificates it issues (with any validity window), and SNS
//! messages of every type signed with them exactly as SNS signs. The string to
//! sign is rebuilt here from the AWS description, not taken from
//! [`crate::SnsMessage::string_to_sign`], so a bug there shows. Keys are
//! generated once per process.
//!
//! Used by this crate's tests and the appliance's webhook tests.

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use crate::SnsMessage;
use base64::Engine as _;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{Keypair, SignatureEncoding, Signer};
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::der::asn1::GeneralizedTime;
use x509_cert::der::{DateTime, EncodePem};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{SubjectPublicKeyInfo, SubjectPublicKeyInfoRef};
use x509_cert::time::{Time, Validity};
use x509_cert::TbsCertificate;

pub const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:uncorreo-inbound";
pub const CERT_URL: &str =
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-7e57000000000000000000000000f1c5.pem";
pub const SUBSCRIBE_URL: &str = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:123456789012:uncorreo-inbound&Token=2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3beb71854e285d6ad02428b09ceece29417f1f02d609c582afbacc99c583a916b9981dd2728f4ae6fdb82efd087cc3b7849e05798d2d2785c03b0879594eeac82c01f235d0e717736";

/// Two-key world: a CA and an SNS signing key, plus an unrelated key.
pub struct Keys {
    pub ca: SigningKey<sha2::Sha256>,
    pub signer: rsa::PrivateKey,
    pub other: rsa::PrivateKey,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = getrandom::SysRng;
        let key = |rng: &mut getrandom::SysRng| rsa::PrivateKey::new(rng, 2048).unwrap();
        Keys {
            ca: SigningKey::new(key(&mut rng)),
            signer: key(&mut rng),
            other: key(&mut rng),
        }
    })
}

/// A profile that adds exactly the given extensions.
struct Plain {
    subject: Name,
    issuer: Name,
    extensions: Vec<Extension>,
}

impl BuilderProfile for Plain {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }
    fn get_subject(&self) -> Name {
        self.subject.clone()
    }
    fn build_extensions(
        &self,
        _spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        _tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(self.extensions.clone())
    }
}

const CA_NAME: &str = "CN=uncorreo test CA";

fn time(unix_secs: u64) -> Time {
    Time::GeneralTime(GeneralizedTime::from_date_time(
        DateTime::from_unix_duration(Duration::from_secs(unix_secs)).unwrap(),
    ))
}

/// A certificate for `key` named `subject`, issued (signed) by the test CA.
fn build(
    key: &rsa::PrivateKey,
    subject: &str,
    from: u64,
    to: u64,
    extensions: Vec<Extension>,
) -> x509_cert::Certificate {
    let public = SigningKey::<sha2::Sha256>::new(key.clone()).verifying_key();
    let spki = SubjectPublicKeyInfo::from_key(&public).unwrap();
    let profile = Plain {
        subject: Name::from_str(subject).unwrap(),
        issuer: Name::from_str(CA_NAME).unwrap(),
        extensions,
    };
    let serial = SerialNumber::from(u32::try_from(from % u64::from(u32::MAX)).unwrap() | 1);
    CertificateBuilder::new(profile, serial, Validity::new(time(from), time(to)), spki)
        .unwrap()
        .build::<_, rsa::pkcs1v15::Signature>(&keys().ca)
        .unwrap()
}

fn extension<T: x509_cert::der::Encode>(oid: &str, critical: bool, value: &T) -> Extension {
    Extension {
        extn_id: x509_cert::der::oid::ObjectIdentifier::new_unwrap(oid),
        critical,
        extn_value: x509_cert::der::asn1::OctetString::new(value.to_der().unwrap()).unwrap(),
    }
}

/// A PEM certificate for `key`, issued by the test CA, valid in `[from, to]` (unix seconds).
pub fn issue_cert(key: &rsa::PrivateKey, from: u64, to: u64) -> String {
    build(
        key,
        "CN=sns.amazonaws.com,O=uncorreo tests",
        from,
        to,
        Vec::new(),
    )
    .to_pem(x509_cert::der::pem::LineEnding::LF)
    .unwrap()
}

/// The test CA's own (self-signed) certificate, DER: a TLS trust anchor.
pub fn ca_cert_der() -> Vec<u8> {
    use x509_cert::der::Encode;
    let now = now_secs();
    let ca_key: &rsa::PrivateKey = keys().ca.as_ref();
    let basic = x509_cert::ext::pkix::BasicConstraints {
        ca: true,
        path_len_constraint: None,
    };
    build(
        ca_key,
        CA_NAME,
        now - 3600,
        now + 86_400,
        vec![extension("2.5.29.19", true, &basic)],
    )
    .to_der()
    .unwrap()
}

/// A TLS server certificate for `host` issued by the test CA, and its key
/// (PKCS#8), both DER.
pub fn tls_server_cert(host: &str) -> (Vec<u8>, Vec<u8>) {
    use rsa::pkcs8::EncodePrivateKey;
    use x509_cert::der::Encode;
    use x509_cert::ext::pkix::name::GeneralName;
    let now = now_secs();
    let key = &keys().other;
    let san = x509_cert::ext::pkix::SubjectAltName(vec![GeneralName::DnsName(
        x509_cert::der::asn1::Ia5String::new(host).unwrap(),
    )]);
    let eku = x509_cert::ext::pkix::ExtendedKeyUsage(vec![
        x509_cert::der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1"),
    ]);
    let cert = build(
        key,
        &format!("CN={host}"),
        now - 3600,
        now + 86_400,
        vec![
            extension("2.5.29.17", false, &san),
            extension("2.5.29.37", false, &eku),
        ],
    );
    (
        cert.to_der().unwrap(),
        key.to_pkcs8_der().unwrap().as_bytes().to_vec(),
    )
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The SNS signing certificate, valid from an hour ago for a year.
pub fn valid_cert() -> String {
    let now = now_secs();
    issue_cert(&keys().signer, now - 3600, now + 365 * 86_400)
}

/// `2026-11-24T20:38:57.123Z` for `ms` since the epoch.
pub fn iso8601(ms: u64) -> String {
    let dt = DateTime::from_unix_duration(Duration::from_millis(ms - ms % 1000)).unwrap();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minutes(),
        dt.seconds(),
        ms % 1000
    )
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The string SNS signs, written out from AWS's description of each type.
pub fn aws_string_to_sign(m: &SnsMessage) -> String {
    let mut s = String::new();
    let mut add = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            s.push_str(k);
            s.push('\n');
            s.push_str(v);
            s.push('\n');
        }
    };
    if m.kind.as_deref() == Some("Notification") {
        add("Message", &m.message);
        add("MessageId", &m.message_id);
        add("Subject", &m.subject);
        add("Timestamp", &m.timestamp);
        add("TopicArn", &m.topic_arn);
        add("Type", &m.kind);
    } else {
        add("Message", &m.message);
        add("MessageId", &m.message_id);
        add("SubscribeURL", &m.subscribe_url);
        add("Timestamp", &m.timestamp);
        add("Token", &m.token);
        add("TopicArn", &m.topic_arn);
        add("Type", &m.kind);
    }
    s
}

/// Sign `m` in place with `key` as SNS does for `version` ("1" or "2").
pub fn sign_with(m: &mut SnsMessage, version: &str, key: &rsa::PrivateKey) {
    m.signature_version = Some(version.to_owned());
    let data = aws_string_to_sign(m);
    let sig = match version {
        "1" => SigningKey::<sha1::Sha1>::new(key.clone())
            .sign(data.as_bytes())
            .to_vec(),
        _ => SigningKey::<sha2::Sha256>::new(key.clone())
            .sign(data.as_bytes())
            .to_vec(),
    };
    m.signature = Some(base64::engine::general_purpose::STANDARD.encode(sig));
}

/// Sign with the SNS signing key.
pub fn sign(m: &mut SnsMessage, version: &str) {
    sign_with(m, version, &keys().signer)
}

/// An unsigned notification carrying `message`, published at `ts_ms`.
pub fn notification(message_id: &str, message: String, ts_ms: u64) -> SnsMessage {
    SnsMessage {
        kind: Some("Notification".to_owned()),
        message_id: Some(message_id.to_owned()),
        topic_arn: Some(TOPIC.to_owned()),
        subject: Some("Amazon SES Email Receipt Notification".to_owned()),
        message: Some(message),
        timestamp: Some(iso8601(ts_ms)),
        signing_cert_url: Some(CERT_URL.to_owned()),
        ..SnsMessage::default()
    }
}

/// An unsigned `SubscriptionConfirmation` or `UnsubscribeConfirmation`.
pub fn confirmation(kind: &str, message_id: &str, ts_ms: u64) -> SnsMessage {
    SnsMessage {
        kind: Some(kind.to_owned()),
        message_id: Some(message_id.to_owned()),
        topic_arn: Some(TOPIC.to_owned()),
        message: Some(format!(
            "You have chosen to subscribe to the topic {TOPIC}.\nTo confirm the subscription, visit the SubscribeURL included in this message."
        )),
        timestamp: Some(iso8601(ts_ms)),
        signing_cert_url: Some(CERT_URL.to_owned()),
        subscribe_url: Some(SUBSCRIBE_URL.to_owned()),
        token: Some("2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92".to_owned()),
        ..SnsMessage::default()
    }
}

/// The `Message` of an SES receipt notification (SNS action) for `content`.
pub fn ses_received(recipients: &[&str], source: &str, content: &[u8], base64: bool) -> String {
    let (encoding, content) = if base64 {
        (
            "BASE64",
            base64::engine::general_purpose::STANDARD.encode(content),
        )
    } else {
        ("UTF8", String::from_utf8(content.to_vec()).unwrap())
    };
    serde_json::json!({
        "notificationType": "Received",
        "mail": {
            "timestamp": "2026-11-24T20:00:00.000Z",
            "source": source,
            "messageId": "o3vrnil0e2ic28trm7dfhrc2v0clambda4nbp0g1",
            "destination": recipients,
            "headersTruncated": false,
            "headers": [],
            "commonHeaders": {"subject": "test"}
        },
        "receipt": {
            "timestamp": "2026-11-24T20:00:00.000Z",
            "processingTimeMillis": 222,
            "recipients": recipients,
            "spamVerdict": {"status": "PASS"},
            "virusVerdict": {"status": "PASS"},
            "action": {"type": "SNS", "topicArn": TOPIC, "encoding": encoding}
        },
        "content": content
    })
    .to_string()
}

/// Serialise as SNS posts it.
pub fn to_json(m: &SnsMessage) -> String {
    serde_json::to_string(m).unwrap()
}
