//! Replays the fuzz regression inputs (`fuzz/regressions/<target>/`: seeds, and any
//! input that once found a bug) through the same steps as the fuzz targets in
//! `fuzz/fuzz_targets/`, so `cargo test` keeps checking them without cargo-fuzz.
//! Keep each function below in step with its target.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};

use conduit_protocol::native::{self, ArchivedAuthStep, ArchivedRpcFailure, ArchivedValueTree};
use conduit_protocol::ValueLimits;
use conduit_protocol::{msgpack, v1, Codec, DecoderLimits, Flags, FrameDecoder, FrameKind, Header};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect()
}

/// `fuzz_targets/decoder.rs`
fn decoder(data: &[u8]) {
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

/// `fuzz_targets/v1_payload.rs`
fn v1_payload(data: &[u8]) {
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

/// `fuzz_targets/native_payload.rs`
fn native_payload(data: &[u8]) {
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

fn replay(target: &str, run: fn(&[u8])) {
    for (path, data) in inputs(target) {
        eprintln!("{}", path.display());
        run(&data);
    }
}

#[test]
fn decoder_regressions() {
    replay("decoder", decoder);
}

#[test]
fn v1_payload_regressions() {
    replay("v1_payload", v1_payload);
}

#[test]
fn native_payload_regressions() {
    replay("native_payload", native_payload);
}
