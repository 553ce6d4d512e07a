//! DATA decoding fed in arbitrary chunkings. Checks the properties a smuggling
//! or memory attack would break: the decoder never keeps more than its size
//! limit, never consumes past the input, and once done it stays done.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uncorreo_smtpd::DataDecoder;

const MAX_SIZE: usize = 4096;
const MAX_LINE: usize = 1000;

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (bytes, cuts) = input;
    let mut decoder = DataDecoder::new(MAX_SIZE, MAX_LINE);
    let mut out = Vec::new();
    let mut rest: &[u8] = &bytes;
    let mut cut_iter = cuts.iter().map(|c| usize::from(*c) + 1);
    while !rest.is_empty() {
        let take = cut_iter.next().unwrap_or(rest.len()).min(rest.len());
        let fed = decoder.feed(&rest[..take], &mut out);
        assert!(fed.consumed <= take, "consumed more than it was given");
        assert!(out.len() <= MAX_SIZE, "kept more than the size limit");
        if fed.done {
            break;
        }
        rest = &rest[fed.consumed..];
    }
});
