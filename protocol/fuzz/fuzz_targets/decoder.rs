//! Arbitrary bytes at arbitrary read sizes through the decoder and both codecs.
//! The steps live in `steps.rs`, shared with the regression replay in `cargo test`.
#![no_main]

#[allow(dead_code)]
#[path = "steps.rs"]
mod steps;

libfuzzer_sys::fuzz_target!(|data: &[u8]| steps::decoder(data));
