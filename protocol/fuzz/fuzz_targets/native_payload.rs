//! Arbitrary bytes as every native payload type, read from an aligned buffer.
//! The steps live in `steps.rs`, shared with the regression replay in `cargo test`.
#![no_main]

#[allow(dead_code)]
#[path = "steps.rs"]
mod steps;

libfuzzer_sys::fuzz_target!(|data: &[u8]| steps::native_payload(data));
