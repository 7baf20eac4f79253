//! Arbitrary bytes, split at an arbitrary chunk size, through the frame decoder and
//! both payload codecs. Must never panic, and the buffer must stay within its bound.
//! The first byte picks the read size (bits 0–6) and whether the payload limit starts
//! small and is raised after the first frame, as a connection's is at login (bit 7).
//!
//! Keep in step with `protocol/tests/fuzz_regressions.rs`, which replays
//! `protocol/fuzz/regressions/decoder/` through the same steps in `cargo test`.
#![no_main]

use conduit_protocol::native::{self, ArchivedValueTree};
use conduit_protocol::{v1, DecoderLimits, FrameDecoder, ValueLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let full = 64 * 1024;
    let start = if first & 0x80 != 0 { 256 } else { full };
    let limits = DecoderLimits {
        max_payload_bytes: start,
        ..DecoderLimits::default()
    };
    let mut d = FrameDecoder::new(limits);
    for c in bytes.chunks(usize::from(first & 0x7f).max(1)) {
        d.feed(c);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    let _ = v1::decode(&f.header, f.payload, &v1::V1Limits::default());
                    if let Ok((_, body)) = native::split_route(f.payload) {
                        if let Ok(t) = native::access::<ArchivedValueTree>(body) {
                            let _ = t.to_value(ValueLimits::default());
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    let _ = d.front_codec();
                    return;
                }
            }
            d.set_max_payload_bytes(full);
        }
        assert!(d.buffer().capacity() <= d.max_buffer_bytes());
    }
});
