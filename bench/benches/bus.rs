//! The cross-shard bus, one hop: what a broadcast costs per other shard it reaches.
//!
//! A broadcast from a handler on one shard is fanned out there at once and handed to
//! every other shard with receivers as one bus message (`BusMsg::Broadcast`: two `Arc`s
//! and an optional reply sender, over a bounded flume channel per shard). So per other
//! shard a broadcast costs the sender one channel send, and the receiving shard one
//! receive — plus a wake-up when that shard was asleep. These benches time the two
//! cases with a message of the same shape between two threads pinned to the two CPUs:
//!
//! * `bus/hop_busy`: the receiver drains in a loop (a busy shard): per message, the
//!   send, the receive and the two `Arc` drops — the per-hop cost under load.
//! * `bus/hop_wake`: a ping-pong where each side blocks until the other's message
//!   arrives (a parked shard): half a round trip, a wake-up included — the per-hop cost
//!   of a broadcast reaching an idle shard.
//!
//! Run with `cargo bench -p conduit-bench --bench bus`; results are in `PERF.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

/// A message shaped like `BusMsg::Broadcast`: the shared frames, the shared filter, no
/// reply channel (the default `.await` asks for none).
struct Hop {
    _frames: Arc<Vec<u8>>,
    _filter: Arc<Vec<u64>>,
    _reply: Option<flume::Sender<usize>>,
}

/// The shard bus's capacity: `ServerDescriptor::bus_capacity`'s default.
const BUS_CAPACITY: usize = 4096;

/// Pins the calling thread to the `i`-th allowed CPU, when there is one.
fn pin(i: usize) {
    if let Some(ids) = core_affinity::get_core_ids() {
        if let Some(id) = ids.get(i) {
            core_affinity::set_for_current(*id);
        }
    }
}

fn hop_busy(c: &mut Criterion) {
    let frames = Arc::new(vec![0u8; 192]);
    let filter = Arc::new(vec![1u64]);
    c.bench_function("bus/hop_busy", |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = flume::bounded::<Hop>(BUS_CAPACITY);
            let n = iters;
            let receiver = std::thread::spawn(move || {
                pin(1);
                for _ in 0..n {
                    drop(rx.recv().unwrap());
                }
            });
            pin(0);
            let t0 = Instant::now();
            for _ in 0..iters {
                tx.send(Hop {
                    _frames: frames.clone(),
                    _filter: filter.clone(),
                    _reply: None,
                })
                .unwrap();
            }
            receiver.join().unwrap();
            t0.elapsed()
        })
    });
}

fn hop_wake(c: &mut Criterion) {
    let frames = Arc::new(vec![0u8; 192]);
    let filter = Arc::new(vec![1u64]);
    c.bench_function("bus/hop_wake", |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = flume::bounded::<Hop>(1);
            let (back_tx, back_rx) = flume::bounded::<Hop>(1);
            let n = iters;
            let echo = std::thread::spawn(move || {
                pin(1);
                for _ in 0..n {
                    back_tx.send(rx.recv().unwrap()).unwrap();
                }
            });
            pin(0);
            let t0 = Instant::now();
            for _ in 0..iters {
                tx.send(Hop {
                    _frames: frames.clone(),
                    _filter: filter.clone(),
                    _reply: None,
                })
                .unwrap();
                drop(back_rx.recv().unwrap());
            }
            let took = t0.elapsed();
            echo.join().unwrap();
            // Two hops per round trip.
            took / 2
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = hop_busy, hop_wake
}
criterion_main!(benches);
