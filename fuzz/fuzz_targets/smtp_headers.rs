//! The header-section checks (size, line count, Received-loop limit) on any message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uncorreo_smtpd::headers::{check, HeaderLimits};

const LIMITS: HeaderLimits = HeaderLimits {
    max_bytes: 64 * 1024,
    max_lines: 1000,
    max_received: 100,
};

fuzz_target!(|message: &[u8]| {
    let _ = check(message, LIMITS);
});
