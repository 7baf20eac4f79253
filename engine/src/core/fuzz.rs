//! The connection core's fuzz driver: a client login (either codec, or none), then
//! arbitrary bytes split at arbitrary read sizes, handler results for every call (and
//! some forged ones), and clock ticks — through a server core, in virtual time. Used by
//! the cargo-fuzz target and replayed by `cargo test` (`engine/tests/fuzz_regressions.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use conduit_protocol::handshake::{ClientHandshake, ServerCredentials};
use conduit_protocol::v1::V1Limits;
use conduit_protocol::{Codec, DecoderLimits, Value, ValueLimits};

use super::*;

/// Short settings (seconds, small limits) for driving a core by hand — the fuzz target
/// and the in-memory pair tests — with password `pw`.
pub(crate) fn small_config(routes: RouteTable) -> CoreConfig {
    CoreConfig {
        creds: ServerCredentials::new("pw", "fuzz", "1"),
        auth_timeout: Duration::from_secs(5),
        heartbeat_interval: Duration::from_secs(1),
        heartbeat_timeout: Duration::from_secs(3),
        auth_failure_delay: Duration::from_millis(200),
        v1_post_auth_delay: Duration::from_millis(250),
        value_limits: ValueLimits::default(),
        v1_limits: V1Limits::default(),
        decoder_limits: DecoderLimits {
            max_payload_bytes: 64 * 1024,
            ..DecoderLimits::default()
        },
        max_auth_frame_bytes: 4096,
        slow_consumer: SlowConsumerPolicy::Disconnect,
        max_outbound_bytes: 256 * 1024,
        routes,
        inbound_rate: InboundRate::default(),
        rate_policy: crate::descriptor::RateLimitPolicy::Reject,
        tokens: None,
        token_leeway_ms: 0,
    }
}

/// Runs one fuzz input. Panics only on a broken invariant (that is the finding).
pub fn core(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let config = Arc::new(small_config(RouteTable::new(
        [
            ("add".to_owned(), ArgForm::Value),
            ("raw".to_owned(), ArgForm::InPlace),
        ],
        ["chat".to_owned()],
        Value::Nil,
    )));
    let t0 = Instant::now();
    let mut server = ConnCore::new(
        config.clone(),
        ConnectionId::new(0, 0, 1),
        [3; 32],
        "00".repeat(64),
        t0,
        Arc::new(crate::metrics::ShardMetrics::new(2)),
    );
    let mut rx = config.new_decoder();
    let mut stream = Vec::new();
    let codec = match mode & 3 {
        1 => Some(Codec::V1),
        2 | 3 => Some(Codec::Native),
        _ => None,
    };
    if let Some(codec) = codec {
        // The native proof depends on the server's challenge: log in by the book.
        let mut hs = ClientHandshake::new(codec, "pw", [5; 32], "f", "1");
        if let Ok(first) = hs.start(0) {
            rx.feed(&first);
            while let Some(ev) = server.poll_event(&mut rx, t0, 0) {
                if matches!(ev, Event::Close(_) | Event::Authenticated { .. }) {
                    break;
                }
            }
            if codec == Codec::Native && mode & 3 == 2 {
                let mut batch = Vec::new();
                server.outbound().take_batch(&mut batch, 8, usize::MAX);
                server.outbound().finish_batch();
                let mut d = conduit_protocol::FrameDecoder::new(DecoderLimits::default());
                if let Some(b) = batch.first() {
                    d.feed(b);
                }
                if let Ok(Some(f)) = d.next_frame() {
                    if let Ok(conduit_protocol::handshake::ClientStep::Send(proof)) =
                        hs.on_frame(&f, &V1Limits::default(), 0)
                    {
                        stream.extend_from_slice(&proof);
                    }
                }
            }
        }
    }
    stream.extend_from_slice(rest);
    let chunk = usize::from(mode >> 2).max(1);
    let mut now = t0;
    for (i, c) in stream.chunks(chunk).enumerate() {
        rx.feed(c);
        while let Some(ev) = server.poll_event(&mut rx, now, 0) {
            match ev {
                Event::Close(_) => return,
                Event::Call(call) => {
                    let id = call.id;
                    let outcome = match call.kind {
                        CallKind::Rpc if i % 3 == 0 => Outcome::Rpc(Err(Failure {
                            code: 1001,
                            message: "x".into(),
                            details: None,
                        })),
                        CallKind::Rpc => Outcome::Rpc(Ok(Value::from(i as i64))),
                        CallKind::Message => Outcome::Message(Some(Value::Nil)),
                    };
                    if i % 5 != 4 && server.complete(id, outcome, 0).is_some() {
                        return;
                    }
                    // A forged result is dropped, never acted on.
                    let _ = server.complete(CallId(u64::MAX), Outcome::Message(None), 0);
                }
                Event::Handled | Event::Authenticated { .. } | Event::TokenRefreshed(_) => {}
            }
        }
        assert!(rx.buffer().capacity() <= rx.max_buffer_bytes());
        assert!(server.outbound().pending_bytes() <= config.max_outbound_bytes);
        // Time moves forwards, and now and then backwards.
        now = if i % 7 == 6 {
            t0
        } else {
            now + Duration::from_millis(250)
        };
        if server.on_tick(now, 0).is_some() {
            return;
        }
        let mut batch = Vec::new();
        server.outbound().take_batch(&mut batch, 64, usize::MAX);
        server.outbound().finish_batch();
    }
}
