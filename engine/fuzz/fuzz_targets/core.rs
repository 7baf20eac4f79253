//! The sans-I/O connection core fed arbitrary byte streams (split at arbitrary read
//! sizes) and ticks, before and after a login: it must never panic. The steps live in
//! `steps.rs`, shared with the regression replay in `cargo test`.
#![no_main]

#[path = "steps.rs"]
mod steps;

libfuzzer_sys::fuzz_target!(|data: &[u8]| steps::core(data));
