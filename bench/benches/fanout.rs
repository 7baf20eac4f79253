//! In-process fan-out: the cost of delivering one broadcast to 1000 connections on one
//! shard, without sockets.
//!
//! What a shard does per broadcast (`Shard::fanout`): encode the MESSAGE once per codec
//! (the engine's `bus::Frames`), then for each receiver clone the frame of its codec into
//! its [`Outbound`] queue, where the byte limit is checked and a sleeping writer is
//! woken. The writer then takes the queue's batch and goes back to sleep.
//!
//! * `fanout/push_1000`: encode both codecs once + push to 1000 queues (half v1, half
//!   native), each queue empty with its writer asleep, as between broadcasts. Only
//!   this is timed; the queues are drained and the writers re-armed untimed.
//! * `fanout/deliver_1000`: the same plus the writer's side for every queue (take the
//!   batch, finish it, sleep again): the whole in-process path except the syscall.
//! * `fanout/encode_both`: the encode alone, for reference.
//!
//! Throughput is per delivery (1000 per op). Run with
//! `cargo bench -p conduit-bench --bench fanout`; results are in `PERF.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use conduit::__bench::{Outbound, Push};
use conduit_bench::{chat_value, CHAT, TIMESTAMP_MS};
use conduit_protocol::native::{self, ValueTree};
use conduit_protocol::{v1, Value};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Receivers per broadcast.
const RECEIVERS: usize = 1000;
/// Per-connection queue limit: the descriptor's default `max_outbound_bytes`.
const LIMIT: usize = 4 * 1024 * 1024;
/// Frames per gathered write: the engine's `MAX_IOVECS`.
const MAX_FRAMES: usize = 1024;
/// Bytes per gathered write: the descriptor's default `max_write_batch_bytes`.
const MAX_BYTES: usize = 256 * 1024;

/// One MESSAGE encoded once per codec, as `bus::Frames` holds it.
struct Frames {
    v1: Bytes,
    native: Bytes,
}

fn encode(data: &Value) -> Frames {
    Frames {
        v1: v1::Encoder::new(TIMESTAMP_MS).message(CHAT, data),
        native: native::Encoder::new(TIMESTAMP_MS)
            .message(CHAT, &ValueTree::from_value(data))
            .unwrap(),
    }
}

/// A receiver: its queue, its codec, and the writer's batch buffer.
struct Receiver {
    out: Outbound,
    native: bool,
    batch: Vec<Bytes>,
}

/// Puts the receiver's writer to sleep on its queue, as `write_loop` does between
/// wake-ups, so the next push pays for a real wake.
fn arm(out: &Outbound, cx: &mut Context<'_>) {
    let wait = pin!(out.ready.wait());
    let _ = wait.poll(cx);
}

fn receivers(cx: &mut Context<'_>) -> Vec<Receiver> {
    (0..RECEIVERS)
        .map(|i| {
            let r = Receiver {
                out: Outbound::new(LIMIT),
                native: i % 2 == 1,
                batch: Vec::new(),
            };
            arm(&r.out, cx);
            r
        })
        .collect()
}

/// The shard's fan-out loop.
fn push_all(rs: &[Receiver], frames: &Frames) -> usize {
    let mut n = 0;
    for r in rs {
        let f = if r.native { &frames.native } else { &frames.v1 };
        if r.out.push(f.clone()) == Push::Queued {
            n += 1;
        }
    }
    n
}

/// Each writer's wake-up, minus the syscall: take the batch, finish it, sleep again.
fn drain_all(rs: &mut [Receiver], cx: &mut Context<'_>) {
    for r in rs {
        let wait = pin!(r.out.ready.wait());
        assert_eq!(wait.poll(cx), Poll::Ready(()), "the push woke the writer");
        r.out.take_batch(&mut r.batch, MAX_FRAMES, MAX_BYTES);
        black_box(&r.batch);
        r.out.finish_batch();
        r.batch.clear();
        arm(&r.out, cx);
    }
}

fn fanout(c: &mut Criterion) {
    let data = chat_value();
    let mut cx = Context::from_waker(Waker::noop());
    let mut g = c.benchmark_group("fanout");

    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_both", |b| b.iter(|| encode(black_box(&data))));

    g.throughput(Throughput::Elements(RECEIVERS as u64));
    let mut rs = receivers(&mut cx);
    g.bench_function("push_1000", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let frames = encode(black_box(&data));
                let n = push_all(&rs, &frames);
                timed += start.elapsed();
                assert_eq!(n, RECEIVERS);
                drain_all(&mut rs, &mut cx);
            }
            timed
        })
    });

    let mut rs = receivers(&mut cx);
    g.bench_function("deliver_1000", |b| {
        b.iter(|| {
            let frames = encode(black_box(&data));
            let n = push_all(&rs, &frames);
            drain_all(&mut rs, &mut cx);
            n
        })
    });
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
