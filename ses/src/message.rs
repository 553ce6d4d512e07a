//! The SNS HTTP(S) message envelope and the exact string SNS signs.
//!
//! SNS posts one JSON object per request (with `Content-Type: text/plain`).
//! Which fields are signed depends on `Type`; the string to sign is each signed
//! field as `Name\nValue\n`, in byte order of the field names, with `Subject`
//! only when present (Notification) — see AWS's "Verifying the signatures of
//! Amazon SNS messages".

use serde::{Deserialize, Serialize};

/// The three message types SNS posts to an HTTP(S) endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// A published message (for us: an SES receipt).
    Notification,
    /// Sent after `Subscribe`; visit `SubscribeURL` to confirm.
    SubscriptionConfirmation,
    /// Sent after `Unsubscribe`.
    UnsubscribeConfirmation,
}

impl MessageType {
    /// Parse the `Type` field.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Notification" => Some(Self::Notification),
            "SubscriptionConfirmation" => Some(Self::SubscriptionConfirmation),
            "UnsubscribeConfirmation" => Some(Self::UnsubscribeConfirmation),
            _ => None,
        }
    }

    /// The `Type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Notification => "Notification",
            Self::SubscriptionConfirmation => "SubscriptionConfirmation",
            Self::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        }
    }
}

/// An SNS message as posted. Every field is optional at parse time: which
/// ones are required depends on `Type` and is checked when the string to sign
/// is built. Unknown fields (e.g. `UnsubscribeURL`, `MessageAttributes`) are
/// ignored; a field given twice is a parse error, so there is never a doubt
/// about which value was signed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsMessage {
    /// `Notification`, `SubscriptionConfirmation` or `UnsubscribeConfirmation`.
    #[serde(rename = "Type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// UUID, stable across SNS retries of the same message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_arn: Option<String>,
    /// Notification subject; signed only when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The payload (for SES: a JSON document as a string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// ISO 8601 UTC time SNS published the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// `"1"` (SHA1withRSA) or `"2"` (SHA256withRSA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature_version: Option<String>,
    /// Base64 of the RSA signature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Where the signing certificate is.
    #[serde(rename = "SigningCertURL", skip_serializing_if = "Option::is_none")]
    pub signing_cert_url: Option<String>,
    /// Confirmation messages only: the URL that confirms the subscription.
    #[serde(rename = "SubscribeURL", skip_serializing_if = "Option::is_none")]
    pub subscribe_url: Option<String>,
    /// Confirmation messages only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A required field is missing, or `Type` is not one we know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// The named field is absent (or `null`).
    #[error("missing field {0}")]
    Missing(&'static str),
    /// `Type` is not one of the three SNS message types.
    #[error("unknown message Type {0:?}")]
    UnknownType(String),
}

impl SnsMessage {
    /// Parse the request body.
    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The parsed `Type`.
    pub fn message_type(&self) -> Result<MessageType, FieldError> {
        let t = self.kind.as_deref().ok_or(FieldError::Missing("Type"))?;
        MessageType::parse(t).ok_or_else(|| FieldError::UnknownType(t.to_owned()))
    }

    /// The exact bytes SNS signed for this message's `Type`.
    pub fn string_to_sign(&self) -> Result<String, FieldError> {
        let kind = self.message_type()?;
        let req = |name: &'static str,
                   v: &Option<String>|
         -> Result<(&'static str, String), FieldError> {
            v.clone()
                .map(|v| (name, v))
                .ok_or(FieldError::Missing(name))
        };
        let mut fields = Vec::with_capacity(7);
        fields.push(req("Message", &self.message)?);
        fields.push(req("MessageId", &self.message_id)?);
        match kind {
            MessageType::Notification => {
                if let Some(subject) = &self.subject {
                    fields.push(("Subject", subject.clone()));
                }
            }
            MessageType::SubscriptionConfirmation | MessageType::UnsubscribeConfirmation => {
                fields.push(req("SubscribeURL", &self.subscribe_url)?);
            }
        }
        fields.push(req("Timestamp", &self.timestamp)?);
        if kind != MessageType::Notification {
            fields.push(req("Token", &self.token)?);
        }
        fields.push(req("TopicArn", &self.topic_arn)?);
        fields.push(("Type", kind.as_str().to_owned()));
        let mut out =
            String::with_capacity(fields.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
        for (k, v) in fields {
            out.push_str(k);
            out.push('\n');
            out.push_str(&v);
            out.push('\n');
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(kind: &str) -> SnsMessage {
        SnsMessage {
            kind: Some(kind.to_owned()),
            message_id: Some("id".to_owned()),
            topic_arn: Some("arn".to_owned()),
            message: Some("line1\nline2".to_owned()),
            timestamp: Some("2026-01-01T00:00:00.000Z".to_owned()),
            subscribe_url: Some("https://sns.x.amazonaws.com/?a".to_owned()),
            token: Some("tok".to_owned()),
            ..SnsMessage::default()
        }
    }

    #[test]
    fn notification_string_without_and_with_subject() {
        let mut m = base("Notification");
        assert_eq!(
            m.string_to_sign().unwrap(),
            "Message\nline1\nline2\nMessageId\nid\nTimestamp\n2026-01-01T00:00:00.000Z\nTopicArn\narn\nType\nNotification\n"
        );
        m.subject = Some("S".to_owned());
        assert_eq!(
            m.string_to_sign().unwrap(),
            "Message\nline1\nline2\nMessageId\nid\nSubject\nS\nTimestamp\n2026-01-01T00:00:00.000Z\nTopicArn\narn\nType\nNotification\n"
        );
    }

    #[test]
    fn confirmation_strings_sign_subscribe_url_and_token_not_subject() {
        for kind in ["SubscriptionConfirmation", "UnsubscribeConfirmation"] {
            let mut m = base(kind);
            m.subject = Some("ignored".to_owned());
            assert_eq!(
                m.string_to_sign().unwrap(),
                format!("Message\nline1\nline2\nMessageId\nid\nSubscribeURL\nhttps://sns.x.amazonaws.com/?a\nTimestamp\n2026-01-01T00:00:00.000Z\nToken\ntok\nTopicArn\narn\nType\n{kind}\n")
            );
        }
    }

    #[test]
    fn missing_fields_and_unknown_types_are_named() {
        let mut m = base("SubscriptionConfirmation");
        m.token = None;
        assert_eq!(m.string_to_sign(), Err(FieldError::Missing("Token")));
        let m = base("Bogus");
        assert_eq!(
            m.string_to_sign(),
            Err(FieldError::UnknownType("Bogus".to_owned()))
        );
        let m = SnsMessage::default();
        assert_eq!(m.string_to_sign(), Err(FieldError::Missing("Type")));
    }

    #[test]
    fn duplicate_fields_are_refused() {
        assert!(
            SnsMessage::from_json(br#"{"Type":"Notification","Type":"Notification"}"#).is_err()
        );
        let m =
            SnsMessage::from_json(br#"{"Type":"Notification","Extra":1,"Subject":null}"#).unwrap();
        assert_eq!(m.subject, None);
    }
}
