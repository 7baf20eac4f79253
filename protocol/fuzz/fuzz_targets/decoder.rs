//! Arbitrary bytes, split at an arbitrary chunk size, through the frame decoder and
//! both payload codecs. Must never panic, and the buffer must stay within its bound.
#![no_main]

use conduit_protocol::native::{self, ArchivedValueTree};
use conduit_protocol::{v1, DecoderLimits, FrameDecoder, ValueLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else { return };
    let limits = DecoderLimits { max_payload_bytes: 64 * 1024, ..DecoderLimits::default() };
    let mut d = FrameDecoder::new(limits);
    for c in bytes.chunks(usize::from(chunk).max(1)) {
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
                Err(_) => return,
            }
        }
        assert!(d.buffer().capacity() <= d.max_buffer_bytes());
    }
});
