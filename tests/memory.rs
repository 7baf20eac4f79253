//! The outbound bound holds in memory, not just in frame bytes: connections that stop
//! reading, each with its queue full of small replies, grow the process by at most
//! 1.2× `connections × max_outbound_bytes` (measured by RSS). A test binary of its own
//! with one test, so no other test's memory is counted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conduit::{Codec, RpcError, RpcInfo, Server, SlowConsumerPolicy, Value};
use conduit_tests::forge::rpc_frame;
use conduit_tests::{rss_bytes, start, test_descriptor, TestClient};

const PW: &str = "pw";
const MIB: usize = 1 << 20;
/// Each connection's `max_outbound_bytes`.
const LIMIT_BYTES: usize = MIB;
/// Connections that stop reading.
const CONNECTIONS: usize = 16;
/// Calls each connection sends: their replies are several times what its queue and the
/// small socket buffers hold, so every queue fills to its limit.
const CALLS_PER_CONNECTION: usize = 24_000;
/// The README's promise: memory within 1.2× the bound.
const MAX_RATIO: f64 = 1.2;
/// Memory the run may use besides the queues (receive buffers, the tasks' state).
const SLACK_BYTES: usize = 2 * MIB;

#[test]
fn connections_full_of_small_replies_stay_within_the_outbound_bound() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut desc = test_descriptor(PW).shards(1).buffer_size(16 * 1024);
    desc.max_outbound_bytes = LIMIT_BYTES;
    // The queue stays full (its overflow is dropped), so what is measured is a full
    // queue rather than a connection cut off as a slow consumer.
    desc.slow_consumer = SlowConsumerPolicy::DropNewest;
    let server = Server::new(desc).expect("server");
    let counted = calls.clone();
    server.rpc_with(RpcInfo::new("tiny"), move |_call| {
        counted.fetch_add(1, Ordering::Relaxed);
        async move { Ok::<_, RpcError>(Value::from(1u64)) }
    });
    let (running, addr) = start(&server);
    let mut clients: Vec<(Codec, TestClient)> = (0..CONNECTIONS)
        .map(|i| {
            let codec = if i % 2 == 0 { Codec::V1 } else { Codec::Native };
            (codec, TestClient::login(addr, codec, PW))
        })
        .collect();
    for (_, c) in &clients {
        socket2::SockRef::from(c.stream())
            .set_recv_buffer_size(4096)
            .expect("small receive buffer");
    }
    let before = rss_bytes();
    for (codec, c) in &mut clients {
        let one = rpc_frame(*codec, 1, "tiny", &Value::map());
        let mut all = Vec::with_capacity(one.len() * CALLS_PER_CONNECTION);
        for _ in 0..CALLS_PER_CONNECTION {
            all.extend_from_slice(&one);
        }
        // The server reads as fast as it answers (overflowing replies are dropped), so
        // this write completes without the client reading anything.
        c.send_raw(&all).expect("send the calls");
    }
    let want = CONNECTIONS * CALLS_PER_CONNECTION;
    let deadline = Instant::now() + Duration::from_secs(120);
    while calls.load(Ordering::Relaxed) < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} calls answered",
            calls.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let grown = rss_bytes().saturating_sub(before) as usize;
    let bound = CONNECTIONS * LIMIT_BYTES;
    let ratio = grown as f64 / bound as f64;
    eprintln!(
        "{CONNECTIONS} connections × {} MiB max_outbound_bytes, full of replies: RSS +{:.1} MiB = {ratio:.2}× the bound",
        LIMIT_BYTES / MIB,
        grown as f64 / MIB as f64
    );
    assert!(
        grown as f64 <= bound as f64 * MAX_RATIO + SLACK_BYTES as f64,
        "queued replies grew the process by {ratio:.2}× connections × max_outbound_bytes"
    );
    drop(clients);
    running.stop().expect("stop");
}
