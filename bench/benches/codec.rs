//! Codec micro-benchmarks: frame header, decoding a 1000-frame stream in both codecs,
//! in-place native reads against MessagePack decoding, and broadcast encoding/sharing.
//!
//! Run with `cargo bench -p conduit-bench --bench codec`. Results are recorded in
//! `PERF.md` at the repository root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use bytes::Bytes;
use conduit_bench::{
    archived_get_i64, chat_value, drain_after_feed, drain_like_socket, native_stream,
    native_tick_payload, v1_stream, v1_tick_payload, CHAT, FIRST_SEQ, STREAM_FRAMES, TIMESTAMP_MS,
};
use conduit_protocol::native::{self, ArchivedValueTree, ValueTree};
use conduit_protocol::{
    msgpack, v1, Codec, DecoderLimits, Frame, FrameDecoder, FrameKind, Header, Value, ValueLimits,
    WireError,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// `header/encode`, `header/decode`: the 32-byte frame header alone.
fn header(c: &mut Criterion) {
    let mut h = Header::new(Codec::Native, FrameKind::RpcRequest);
    h.length = 64;
    h.correlation_id = 42;
    h.timestamp_ms = TIMESTAMP_MS;
    let bytes = h.encode();

    let mut g = c.benchmark_group("header");
    g.bench_function("encode", |b| b.iter(|| black_box(&h).encode()));
    g.bench_function("decode", |b| {
        b.iter(|| Header::decode(black_box(&bytes)).unwrap())
    });
    g.finish();
}

/// v1 payload decoding: parse the MessagePack into a [`v1::V1Payload`].
fn v1_payload(limits: &v1::V1Limits) -> impl FnMut(Frame<'_>) -> Result<(), WireError> + '_ {
    move |f| {
        black_box(v1::decode(&f.header, f.payload, limits)?);
        Ok(())
    }
}

/// Native payload decoding, in place: split the route, validate the archive.
fn native_in_place(f: Frame<'_>) -> Result<(), WireError> {
    let (route, body) = native::split_route(f.payload)?;
    black_box(route);
    black_box(native::access::<ArchivedValueTree>(body)?);
    Ok(())
}

/// Native payload decoding into an owned [`Value`].
fn native_to_value(limits: ValueLimits) -> impl FnMut(Frame<'_>) -> Result<(), WireError> {
    move |f| {
        let (route, body) = native::split_route(f.payload)?;
        black_box(route);
        black_box(native::access::<ArchivedValueTree>(body)?.to_value(limits)?);
        Ok(())
    }
}

/// `stream64/*`: 1000 MESSAGE `tick` frames (64-byte v1 payload) through a long-lived
/// [`FrameDecoder`], payloads decoded. Throughput is per frame.
///
/// The plain names (`v1`, `native`, `native_to_value`) read the stream the way a socket
/// loop does, through `spare()`/`commit()`; the `_feed` variants hand the whole stream
/// to `feed()` first and then drain.
fn stream64(c: &mut Criterion) {
    let v1_bytes = v1_stream(STREAM_FRAMES);
    let native_bytes = native_stream(STREAM_FRAMES).unwrap();
    let v1_limits = v1::V1Limits::default();
    let value_limits = ValueLimits::default();

    let mut g = c.benchmark_group("stream64");
    g.throughput(Throughput::Elements(STREAM_FRAMES as u64));

    let mut d = FrameDecoder::new(DecoderLimits::default());
    g.bench_function("v1", |b| {
        b.iter(|| drain_like_socket(&mut d, black_box(&v1_bytes), v1_payload(&v1_limits)).unwrap())
    });
    let mut d = FrameDecoder::new(DecoderLimits::default());
    g.bench_function("native", |b| {
        b.iter(|| drain_like_socket(&mut d, black_box(&native_bytes), native_in_place).unwrap())
    });
    let mut d = FrameDecoder::new(DecoderLimits::default());
    g.bench_function("native_to_value", |b| {
        b.iter(|| {
            drain_like_socket(
                &mut d,
                black_box(&native_bytes),
                native_to_value(value_limits),
            )
            .unwrap()
        })
    });
    let mut d = FrameDecoder::new(DecoderLimits::default());
    g.bench_function("v1_feed", |b| {
        b.iter(|| drain_after_feed(&mut d, black_box(&v1_bytes), v1_payload(&v1_limits)).unwrap())
    });
    let mut d = FrameDecoder::new(DecoderLimits::default());
    g.bench_function("native_feed", |b| {
        b.iter(|| drain_after_feed(&mut d, black_box(&native_bytes), native_in_place).unwrap())
    });
    g.finish();
}

/// `read/*`: one `tick` payload; read `seq` from it in place (native) or after
/// decoding the MessagePack into a [`Value`] (v1).
fn read(c: &mut Criterion) {
    let native_payload = native_tick_payload().unwrap();
    let v1_payload = v1_tick_payload();
    let limits = ValueLimits::default();

    // Both benches read the same field and get the same answer.
    let (_, body) = native::split_route(&native_payload).unwrap();
    let tree = native::access::<ArchivedValueTree>(body).unwrap();
    assert_eq!(archived_get_i64(tree, "seq"), Some(FIRST_SEQ as i64));
    let v = msgpack::from_slice(&v1_payload, limits).unwrap();
    assert_eq!(
        v.get("data")
            .and_then(|d| d.get("seq"))
            .and_then(Value::as_i64),
        Some(FIRST_SEQ as i64)
    );

    let mut g = c.benchmark_group("read");
    g.bench_function("native_access", |b| {
        b.iter(|| {
            let (_, body) = native::split_route(black_box(&native_payload)).unwrap();
            let tree = native::access::<ArchivedValueTree>(body).unwrap();
            archived_get_i64(tree, "seq")
        })
    });
    g.bench_function("msgpack_decode", |b| {
        b.iter(|| {
            let v = msgpack::from_slice(black_box(&v1_payload), limits).unwrap();
            v.get("data")
                .and_then(|d| d.get("seq"))
                .and_then(Value::as_i64)
        })
    });
    g.finish();
}

/// `broadcast/*`: encode one MESSAGE `chat` frame once, then share it with 1000
/// receivers by cloning the [`Bytes`].
fn broadcast(c: &mut Criterion) {
    let chat = chat_value();
    let chat_tree = ValueTree::from_value(&chat);
    let v1_enc = v1::Encoder::new(TIMESTAMP_MS);
    let native_enc = native::Encoder::new(TIMESTAMP_MS);

    let mut g = c.benchmark_group("broadcast");
    g.bench_function("encode_once_v1", |b| {
        b.iter(|| v1_enc.message(CHAT, black_box(&chat)))
    });
    g.bench_function("encode_once_native", |b| {
        b.iter(|| native_enc.message(CHAT, black_box(&chat_tree)).unwrap())
    });
    g.bench_function("encode_once_native_from_value", |b| {
        b.iter(|| {
            native_enc
                .message(CHAT, &ValueTree::from_value(black_box(&chat)))
                .unwrap()
        })
    });

    let frame: Bytes = v1_enc.message(CHAT, &chat);
    g.throughput(Throughput::Elements(1000));
    g.bench_function("share_1000", |b| {
        b.iter(|| {
            let shared = black_box(&frame);
            let mut out = Vec::with_capacity(1000);
            for _ in 0..1000 {
                out.push(shared.clone());
            }
            out
        })
    });
    g.finish();
}

criterion_group!(benches, header, stream64, read, broadcast);
criterion_main!(benches);
