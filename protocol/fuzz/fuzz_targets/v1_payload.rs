//! Arbitrary MessagePack payloads under every frame type, compressed or not.
//! The steps live in `steps.rs`, shared with the regression replay in `cargo test`.
#![no_main]

#[allow(dead_code)]
#[path = "steps.rs"]
mod steps;

libfuzzer_sys::fuzz_target!(|data: &[u8]| steps::v1_payload(data));
