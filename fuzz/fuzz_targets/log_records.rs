//! Bytes read back from disk — segment headers, hint files, record frames and
//! every record kind's payload — decoded the way recovery does. A corrupt or
//! malicious data dir must give errors, never a panic or a huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = uncorreo_engine::fuzzing::decode_log_bytes(bytes);
});
