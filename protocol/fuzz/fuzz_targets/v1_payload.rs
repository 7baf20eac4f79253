//! Arbitrary MessagePack payloads under every frame type, compressed or not.
//!
//! Keep in step with `protocol/tests/fuzz_regressions.rs`, which replays
//! `protocol/fuzz/regressions/v1_payload/` through the same steps in `cargo test`.
#![no_main]

use conduit_protocol::{msgpack, v1, Codec, Flags, FrameKind, Header, ValueLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, payload)) = data.split_first() else {
        return;
    };
    let Some(kind) = FrameKind::from_code(u16::from(sel & 0x0f) + 1) else {
        return;
    };
    let mut h = Header::new(Codec::V1, kind);
    h.flags = Flags(u16::from(sel >> 7));
    h.length = payload.len() as u32;
    let limits = v1::V1Limits {
        max_decompressed_bytes: 1 << 20,
        ..v1::V1Limits::default()
    };
    let _ = v1::decode(&h, payload, &limits);
    if let Ok(v) = msgpack::from_slice(payload, ValueLimits::default()) {
        // What decodes re-encodes to something that decodes to the same value.
        let again = msgpack::to_vec(&v);
        let back = msgpack::from_slice(&again, ValueLimits::default()).ok();
        assert!(back.is_some());
    }
});
