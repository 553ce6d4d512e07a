//! Any command line: parse it, and if it parses, it must not be empty of meaning
//! (no panic, bounded time). The parser is the first thing a hostile client reaches.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let _ = uncorreo_smtpd::parse_command(line);
});
