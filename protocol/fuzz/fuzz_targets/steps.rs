//! The steps of each protocol fuzz target, shared by the targets in this folder and by
//! `protocol/tests/fuzz_regressions.rs`, which replays `fuzz/regressions/` through them
//! in every `cargo test`. They must never panic (the asserts state invariants).

use conduit_protocol::native::{self, ArchivedAuthStep, ArchivedRpcFailure, ArchivedValueTree};
use conduit_protocol::ValueLimits;
use conduit_protocol::{msgpack, v1, Codec, DecoderLimits, Flags, FrameDecoder, FrameKind, Header};

/// Arbitrary bytes, read at arbitrary chunk sizes, through the decoder and both codecs.
pub fn decoder(data: &[u8]) {
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
}

/// Arbitrary MessagePack payloads under every frame type, compressed or not.
pub fn v1_payload(data: &[u8]) {
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
        let again = msgpack::to_vec(&v);
        let back = msgpack::from_slice(&again, ValueLimits::default()).ok();
        assert!(back.is_some());
    }
}

/// Arbitrary bytes as every native payload type, from an 8-byte-aligned buffer.
pub fn native_payload(data: &[u8]) {
    let mut aligned = rkyv::util::AlignedVec::<8>::with_capacity(data.len());
    aligned.extend_from_slice(data);
    let bytes = &aligned[..];
    if let Ok(t) = native::access::<ArchivedValueTree>(bytes) {
        let _ = t.to_value(ValueLimits::default());
    }
    let _ = native::access::<ArchivedAuthStep>(bytes);
    let _ = native::access::<ArchivedRpcFailure>(bytes);
    let _ = native::split_route(bytes);
}
