//! The SES webhook's input path before any network: SNS JSON, the string to
//! sign, the certificate-URL rules, the pre-fetch checks, and the SES payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uncorreo_ses::{verify::check_before_fetch, ses, SnsMessage, SnsUrl};

fuzz_target!(|body: &[u8]| {
    if let Ok(message) = SnsMessage::from_json(body) {
        let _ = message.message_type();
        let _ = message.string_to_sign();
        let _ = check_before_fetch(&message);
        if let Some(inner) = &message.message {
            let _ = ses::parse(inner);
        }
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = SnsUrl::parse_cert_url(text);
        let _ = ses::parse(text);
    }
});
