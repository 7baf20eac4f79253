//! Arbitrary bytes as every native payload type, read from an 8-byte-aligned buffer.
//!
//! Keep in step with `protocol/tests/fuzz_regressions.rs`, which replays
//! `protocol/fuzz/regressions/native_payload/` through the same steps in `cargo test`.
#![no_main]

use conduit_protocol::native::{self, ArchivedAuthStep, ArchivedRpcFailure, ArchivedValueTree};
use conduit_protocol::ValueLimits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut words = vec![0u64; data.len().div_ceil(8)];
    let aligned: &mut [u8] = bytemuck_free_cast(&mut words);
    aligned[..data.len()].copy_from_slice(data);
    let bytes = &aligned[..data.len()];
    if let Ok(t) = native::access::<ArchivedValueTree>(bytes) {
        let _ = t.to_value(ValueLimits::default());
    }
    let _ = native::access::<ArchivedAuthStep>(bytes);
    let _ = native::access::<ArchivedRpcFailure>(bytes);
    let _ = native::split_route(bytes);
});

fn bytemuck_free_cast(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: u8 has no alignment or validity requirements; the length is exact.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8) }
}
