//! The core on an in-memory pair in virtual time: a client (the protocol crate's
//! handshake and encoder) and a server core wired back to back, no sockets, no clock.
//! Every case runs in microseconds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on the first unexpected error"
)]

mod pair;

use std::time::Duration;

use bytes::Bytes;
use conduit_protocol::native::{self, Node, ValueTree};
use conduit_protocol::{Codec, Encoder, FrameKind, Header, Value, ValueLimits};

use self::pair::{config, Pair, Seen, MS};
use super::*;

fn both(test: impl Fn(Codec)) {
    test(Codec::V1);
    test(Codec::Native);
}

#[test]
fn login_in_both_codecs_and_a_wrong_password_waits_for_the_brake() {
    both(|codec| {
        let mut p = Pair::new(codec, config(|_| {}));
        p.login("pw").unwrap();
        assert_eq!(p.seen, [Seen::LoggedIn(codec)]);
        assert!(p.server.is_authenticated());

        let mut p = Pair::new(codec, config(|_| {}));
        let err = p.login("nope").unwrap_err();
        assert!(err.contains("Invalid password"), "{err}");
        let close = p.close.as_ref().unwrap();
        assert_eq!(close.reason, CloseReason::AuthFailed);
        assert_eq!(close.last_after, Duration::from_millis(200));
        assert!(!p.server.is_authenticated());
    });
}

#[test]
fn frames_before_login_are_refused_in_the_peers_codec() {
    both(|codec| {
        let mut p = Pair::new(codec, config(|_| {}));
        let msg = p.enc().message(0, "chat", &Value::map()).unwrap();
        p.send(&msg);
        assert_eq!(
            p.seen,
            [Seen::Closed(CloseReason::Misbehaved(
                PeerMisbehaved::NotAuthenticated
            ))]
        );
        let got = p.received();
        assert_eq!(got[0].header.kind, FrameKind::AuthFailure);
        assert_eq!(got[0].header.codec, codec);
        assert_eq!(got[0].reason(), "authentication required");
        // Nothing more is decided once closed.
        p.send(&msg);
        assert_eq!(p.seen.len(), 1);
    });
}

#[test]
fn rpc_listall_unknown_methods_and_failures() {
    both(|codec| {
        let mut p = Pair::logged_in(codec);
        p.received();
        let args = Value::map().with("a", 2).with("b", 40);
        assert_eq!(p.rpc(7, "add", &args), Ok(Value::from(42)));
        assert_eq!(
            p.rpc(8, "listall", &Value::map()),
            Ok(Value::map().with("count", 3))
        );
        assert_eq!(
            p.rpc(9, "nope", &Value::map()),
            Err((4000, "RPC method not found: nope".into()))
        );
        assert_eq!(
            p.rpc(10, "fail", &Value::map()),
            Err((1001, "Error in fail: boom".into()))
        );
        // listall and unknown methods never reach the application.
        let calls: Vec<_> = p
            .seen
            .iter()
            .filter(|s| matches!(s, Seen::Call(..)))
            .collect();
        assert_eq!(calls.len(), 2);
        assert_eq!(p.server.calls_in_flight(), 0);
        // The core counts what it answers itself, under fixed slots: a peer's made-up
        // names all land in one.
        let m = &p.metrics;
        assert_eq!((m.listall().calls.get(), m.listall().errors.get()), (1, 0));
        assert_eq!((m.unknown().calls.get(), m.unknown().errors.get()), (1, 1));
        assert!(m.frames_in.get() >= 4, "every frame read is counted");
    });
}

#[test]
fn messages_route_to_handlers_and_replies_echo_the_correlation_id() {
    both(|codec| {
        let mut p = Pair::logged_in(codec);
        p.received();
        let data = Value::map().with("text", "hi");
        let msg = p.enc().message(33, "chat", &data).unwrap();
        p.send(&msg);
        let got = p.received();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].message_name(), "chat_response");
        let expect_corr = if codec == Codec::Native { 33 } else { 0 };
        assert_eq!(got[0].header.correlation_id, expect_corr);
        // A type nobody handles is ignored and counted, as netconduit ignores it.
        let other = p.enc().message(0, "unknown", &data).unwrap();
        p.send(&other);
        assert!(p.received().is_empty());
        assert_eq!(p.server.counters().unrouted_messages, 1);
    });
}

#[test]
fn heartbeat_pings_idle_peers_and_closes_silent_ones() {
    both(|codec| {
        let mut p = Pair::logged_in(codec);
        p.received();
        assert_eq!(p.server.next_deadline(), p.t0 + Duration::from_secs(1));
        assert_eq!(p.advance(999 * MS), None);
        assert!(p.received().is_empty());
        assert_eq!(p.advance(MS), None);
        let got = p.received();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].header.kind, FrameKind::Ping);
        // One ping per interval, not one per tick.
        assert_eq!(p.advance(500 * MS), None);
        assert!(p.received().is_empty());
        // Any frame is life: a pong resets the silence.
        let pong = p.enc().empty(FrameKind::Pong).unwrap();
        p.send(&pong);
        assert_eq!(p.advance(2900 * MS), None);
        assert_eq!(p.advance(200 * MS), Some(CloseReason::HeartbeatTimeout));
        assert!(p.close.as_ref().unwrap().last.is_none());
    });
}

#[test]
fn pings_are_answered_and_time_that_goes_backwards_is_no_time() {
    both(|codec| {
        let mut p = Pair::logged_in(codec);
        p.received();
        let ping = p.enc().empty(FrameKind::Ping).unwrap();
        p.send(&ping);
        let got = p.received();
        assert_eq!(got[0].header.kind, FrameKind::Pong);
        p.now += Duration::from_millis(2500);
        p.send(&ping);
        // A clock that jumps back neither closes nor pings.
        assert_eq!(p.server.on_tick(p.t0, 0).map(|c| c.reason), None);
        p.received();
        assert_eq!(p.advance(Duration::ZERO), None);
        assert!(p.received().is_empty());
    });
}

#[test]
fn silent_connections_time_out_before_login() {
    let mut p = Pair::new(Codec::V1, config(|_| {}));
    assert_eq!(p.server.next_deadline(), p.t0 + Duration::from_secs(5));
    assert_eq!(p.advance(4999 * MS), None);
    assert_eq!(p.advance(MS), Some(CloseReason::AuthTimeout));
}

#[test]
fn frames_over_the_limits_close_with_a_reason() {
    both(|codec| {
        // Before login only max_auth_frame_bytes is accepted, checked on the header.
        let mut p = Pair::new(codec, config(|_| {}));
        let mut h = Header::new(codec, FrameKind::AuthRequest);
        h.length = 1 << 20;
        p.send(&h.encode());
        assert_eq!(
            p.seen,
            [Seen::Closed(CloseReason::Misbehaved(
                PeerMisbehaved::FrameTooLarge
            ))]
        );
        assert_eq!(p.received()[0].reason(), "protocol error: frame too large");

        // After login the full limit applies.
        let mut p = Pair::logged_in(codec);
        p.received();
        let big = Value::from("x".repeat(32 * 1024));
        let fits = p.enc().message(0, "chat", &big).unwrap();
        p.send(&fits);
        assert!(matches!(p.seen.last(), Some(Seen::Call(..))));
        let mut h = Header::new(codec, FrameKind::Message);
        h.length = 128 * 1024;
        p.send(&h.encode());
        assert_eq!(
            p.seen.last(),
            Some(&Seen::Closed(CloseReason::Misbehaved(
                PeerMisbehaved::FrameTooLarge
            )))
        );
    });
}

#[test]
fn hostile_frames_close_the_connection_without_a_panic() {
    // Garbage.
    let mut p = Pair::new(Codec::V1, config(|_| {}));
    p.send(b"GET / HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n");
    assert_eq!(
        p.seen,
        [Seen::Closed(CloseReason::Misbehaved(
            PeerMisbehaved::BadMagic
        ))]
    );
    // Too deep a payload, in each codec.
    both(|codec| {
        let mut p = Pair::logged_in(codec);
        let mut nested = Value::Nil;
        for _ in 0..100 {
            nested = Value::Array(vec![nested]);
        }
        let deep = p.enc().message(0, "chat", &nested).unwrap();
        p.send(&deep);
        assert_eq!(
            p.seen.last(),
            Some(&Seen::Closed(CloseReason::Misbehaved(
                PeerMisbehaved::PayloadTooComplex
            )))
        );
    });
    // A codec switch mid-connection.
    let mut p = Pair::logged_in(Codec::V1);
    let native = Encoder::new(Codec::Native, 0)
        .empty(FrameKind::Ping)
        .unwrap();
    p.send(&native);
    assert_eq!(
        p.seen.last(),
        Some(&Seen::Closed(CloseReason::Misbehaved(
            PeerMisbehaved::CodecChanged
        )))
    );
    // A native handshake step out of order.
    let mut p = Pair::new(Codec::Native, config(|_| {}));
    let proof = native::Encoder::new(0)
        .auth_step(&native::AuthStep::Proof([0; 32]))
        .unwrap();
    p.send(&proof);
    assert_eq!(
        p.seen,
        [Seen::Closed(CloseReason::Misbehaved(
            PeerMisbehaved::HandshakeOutOfOrder
        ))]
    );
    // An invalid native archive for a method that decodes its arguments.
    let mut p = Pair::logged_in(Codec::Native);
    let junk = native::Encoder::new(0)
        .frame(
            FrameKind::RpcRequest,
            1,
            Some("add"),
            &"not a tree".to_owned(),
        )
        .unwrap();
    p.send(&junk);
    assert_eq!(
        p.seen.last(),
        Some(&Seen::Closed(CloseReason::Misbehaved(
            PeerMisbehaved::InvalidPayload
        )))
    );
}

#[test]
fn a_consumer_that_stops_reading_is_cut_off_or_its_frames_dropped_by_policy() {
    for policy in [
        SlowConsumerPolicy::Disconnect,
        SlowConsumerPolicy::DropNewest,
    ] {
        let cfg = config(|c| {
            c.max_outbound_bytes = 1000;
            c.slow_consumer = policy;
        });
        let mut p = Pair::new(Codec::Native, cfg);
        p.login("pw").unwrap();
        let ping = p.enc().empty(FrameKind::Ping).unwrap();
        // The client never reads: pongs (32 bytes each) pile up.
        for _ in 0..40 {
            p.send(&ping);
        }
        match policy {
            SlowConsumerPolicy::Disconnect => {
                assert_eq!(
                    p.seen.last(),
                    Some(&Seen::Closed(CloseReason::SlowConsumer))
                );
                assert!(p.server.outbound().is_closed());
                assert_eq!(p.server.outbound().pending_bytes(), 0);
                assert!(CloseReason::SlowConsumer.resets());
            }
            _ => {
                assert_eq!(p.seen.last(), Some(&Seen::LoggedIn(Codec::Native)));
                assert!(p.server.counters().frames_not_sent > 0);
                assert!(p.server.outbound().pending_bytes() <= 1000);
            }
        }
    }
}

#[test]
fn stale_and_forged_results_are_dropped_and_counted() {
    let mut p = Pair::logged_in(Codec::V1);
    p.received();
    let frame = p.enc().rpc_request(5, "never", &Value::map()).unwrap();
    p.send(&frame);
    let parked = p.parked.pop().unwrap();
    assert_eq!(p.server.calls_in_flight(), 1);
    // A result for an id the core never issued.
    let forged = CallId(parked.0 + 100);
    assert!(p
        .server
        .complete(forged, Outcome::Rpc(Ok(Value::Nil)), 0)
        .is_none());
    assert_eq!(p.server.counters().stale_results, 1);
    assert!(p.received().is_empty());
    // The connection closes while the handler still runs: its result is stale.
    assert_eq!(
        p.advance(Duration::from_secs(3)),
        Some(CloseReason::HeartbeatTimeout)
    );
    assert_eq!(p.server.calls_in_flight(), 0);
    p.server.complete(parked, Outcome::Rpc(Ok(Value::Nil)), 0);
    assert_eq!(p.server.counters().stale_results, 2);
}

#[test]
fn v1_frames_after_login_wait_for_the_client_to_speak() {
    let cfg = config(|c| c.v1_post_auth_delay = Duration::from_millis(250));
    let mut p = Pair::new(Codec::V1, cfg);
    p.login("pw").unwrap();
    let out = p.server.outbound().clone();
    // A welcome queued by the connect hook is held back…
    out.push(
        Encoder::new(Codec::V1, 0)
            .message(0, "welcome", &Value::Nil)
            .unwrap(),
    );
    assert_eq!(out.gated_until(), Some(p.t0 + Duration::from_millis(250)));
    let mut batch = Vec::new();
    out.take_batch(&mut batch, 16, usize::MAX);
    assert!(batch.is_empty());
    // …until the client's first frame shows it read AUTH_SUCCESS.
    let ping = p.enc().empty(FrameKind::Ping).unwrap();
    p.send(&ping);
    assert_eq!(out.gated_until(), None);
    out.take_batch(&mut batch, 16, usize::MAX);
    assert_eq!(batch.len(), 2, "welcome, then the pong");
}

#[test]
fn reasons_after_login_use_the_codecs_close_frame() {
    let mut p = Pair::logged_in(Codec::Native);
    p.received();
    let bad = p.enc().empty(FrameKind::AuthRequest).unwrap();
    p.send(&[bad.as_ref(), b"garbage-garbage-garbage-garbage-".as_ref()].concat());
    let got = p.received();
    assert_eq!(got.last().unwrap().header.kind, FrameKind::Close);
    assert_eq!(got.last().unwrap().reason(), "protocol error: bad magic");
    // A kick says nothing more than its last message; it flushes what is queued.
    let mut p = Pair::logged_in(Codec::Native);
    assert!(p.server.close(CloseReason::Kicked, 0).last.is_none());
    assert!(CloseReason::Kicked.flushes());
    // netconduit has no close frame it acts on.
    let mut p = Pair::logged_in(Codec::V1);
    p.send(b"garbage-garbage-garbage-garbage-");
    assert!(p.close.as_ref().unwrap().last.is_none());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// No sequence of frames, valid or not, makes the core panic; it stays
    /// unauthenticated unless a correct login happened.
    #[test]
    fn arbitrary_frame_sequences_never_panic(
        frames in proptest::collection::vec(
            (1u16..=16, proptest::prelude::any::<bool>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)),
            0..20,
        ),
    ) {
        let mut p = Pair::new(Codec::V1, config(|_| {}));
        for (kind, native_codec, mut body) in frames {
            let codec = if native_codec { Codec::Native } else { Codec::V1 };
            if native_codec {
                body.resize(body.len().next_multiple_of(8), 0);
            }
            let mut h = Header::new(codec, FrameKind::from_code(kind).unwrap());
            h.length = body.len() as u32;
            let mut bytes = h.encode().to_vec();
            bytes.extend_from_slice(&body);
            p.send(&bytes);
            p.advance(Duration::from_millis(300));
            proptest::prop_assert!(!p.server.is_authenticated());
            let _ = p.received();
        }
    }
}

#[test]
fn typed_methods_get_native_arguments_in_place_checked_under_the_limits() {
    both(|codec| {
        let mut p = Pair::logged_in(codec);
        p.received();
        let args = Value::map()
            .with("a", 2)
            .with("b", Value::Array(vec![Value::from("x")]));
        // Native callers' tree is lent as it arrived; v1 callers' map is decoded.
        let form = if codec == Codec::Native {
            "tree"
        } else {
            "value"
        };
        assert_eq!(
            p.rpc(7, "typed", &args),
            Ok(Value::map().with("form", form).with("args", args.clone()))
        );
    });
    // A tree the limits refuse closes the connection, as one for a decoded method
    // does: checked before the application sees it.
    let limits = ValueLimits::default();
    let mut deep = Value::Nil;
    for _ in 0..=limits.max_depth {
        deep = Value::Array(vec![deep]);
    }
    for method in ["typed", "add"] {
        let mut p = Pair::logged_in(Codec::Native);
        p.received();
        let frame = p.enc().rpc_request(3, method, &deep).unwrap();
        p.send(&frame);
        assert_eq!(
            p.seen.last(),
            Some(&Seen::Closed(CloseReason::Misbehaved(
                PeerMisbehaved::PayloadTooComplex
            ))),
            "{method}"
        );
    }
    // So does a map whose key is not a string.
    let bad = ValueTree {
        nodes: vec![Node::Map(1), Node::Int(1), Node::Int(2)],
    };
    let frame = native::Encoder::new(0)
        .rpc_request(4, "typed", &bad)
        .unwrap();
    let mut p = Pair::logged_in(Codec::Native);
    p.received();
    p.send(&frame);
    assert!(
        matches!(
            p.seen.last(),
            Some(Seen::Closed(CloseReason::Misbehaved(_)))
        ),
        "{:?}",
        p.seen
    );
    while let Value::Array(mut items) = deep {
        deep = items.pop().unwrap_or_default();
    }
}

#[test]
fn value_tree_payloads_decode_under_the_limits() {
    let tree = ValueTree::from_value(&Value::map().with("a", 1));
    let frame = native::Encoder::new(0).message("chat", &tree).unwrap();
    let mut p = Pair::logged_in(Codec::Native);
    p.received();
    p.send(&frame);
    assert_eq!(
        p.seen.last(),
        Some(&Seen::Call(CallKind::Message, "chat".into()))
    );
    let _: Bytes = frame;
}

#[test]
fn inbound_rate_limits_reject_calls_or_close_in_virtual_time() {
    both(|codec| {
        let limited = |policy| {
            config(|c| {
                c.inbound_rate = InboundRate {
                    frames_per_s: Some(3),
                    bytes_per_s: None,
                };
                c.rate_policy = policy;
            })
        };
        let args = Value::map().with("a", 1).with("b", 1);
        // Reject: the fourth call in one instant is refused, the connection stays, and
        // a second later calls pass again.
        let mut p = Pair::new(codec, limited(crate::descriptor::RateLimitPolicy::Reject));
        p.login("pw").unwrap();
        p.received();
        for corr in 1..=3 {
            assert_eq!(p.rpc(corr, "add", &args), Ok(Value::from(2)));
        }
        assert_eq!(
            p.rpc(4, "add", &args),
            Err((RATE_LIMITED, "rate limit exceeded".into()))
        );
        assert_eq!(p.server.counters().rate_limited, 1);
        assert!(p.close.is_none());
        // Half a second refills one and a half calls (and is before any heartbeat).
        p.advance(Duration::from_millis(500));
        assert_eq!(p.rpc(5, "add", &args), Ok(Value::from(2)));
        assert_eq!(
            p.rpc(6, "add", &args),
            Err((RATE_LIMITED, "rate limit exceeded".into()))
        );
        // Close: the fourth frame ends the connection, saying why.
        let mut p = Pair::new(codec, limited(crate::descriptor::RateLimitPolicy::Close));
        p.login("pw").unwrap();
        p.received();
        for corr in 1..=3 {
            assert_eq!(p.rpc(corr, "add", &args), Ok(Value::from(2)));
        }
        let msg = p.enc().message(0, "chat", &Value::map()).unwrap();
        p.send(&msg);
        assert_eq!(
            p.close.as_ref().map(|c| c.reason),
            Some(CloseReason::Misbehaved(PeerMisbehaved::RateLimited))
        );
    });
}

#[test]
fn what_every_request_touches_comes_first_in_the_core() {
    use std::mem::{offset_of, size_of};
    // The fields a frame reads or writes, each ending within its first 128 bytes.
    let hot = [
        offset_of!(ConnCore, config) + size_of::<Arc<CoreConfig>>(),
        offset_of!(ConnCore, out) + size_of::<Rc<Outbound>>(),
        offset_of!(ConnCore, metrics) + size_of::<Arc<ShardMetrics>>(),
        offset_of!(ConnCore, now) + size_of::<Instant>(),
        offset_of!(ConnCore, last_received) + size_of::<Instant>(),
        offset_of!(ConnCore, pending) + size_of::<SmallVec<[Pending; 1]>>(),
        offset_of!(ConnCore, next_call) + size_of::<u64>(),
        offset_of!(ConnCore, closed) + size_of::<Option<CloseReason>>(),
        offset_of!(ConnCore, codec) + size_of::<Option<Codec>>(),
        offset_of!(ConnCore, authenticated) + 1,
        offset_of!(ConnCore, full_frame_limit) + 1,
    ];
    assert!(hot.iter().all(|end| *end <= 128), "{hot:?}");
}

/// Read by the tests only: the glue ticks every connection of a shard from one timer.
impl ConnCore {
    /// The next moment [`on_tick`](Self::on_tick) has something to do. The glue ticks
    /// every connection of a shard from one timer instead (cheaper at thousands of
    /// connections), so only the tests read it.
    pub fn next_deadline(&self) -> Instant {
        if !self.authenticated {
            return self.accepted_at + self.config.auth_timeout;
        }
        let timeout = self.last_received + self.config.heartbeat_timeout;
        let idle = self.last_received + self.config.heartbeat_interval;
        let ping = match self.last_ping {
            Some(t) if t >= self.last_received => t + self.config.heartbeat_interval,
            _ => idle,
        };
        timeout.min(ping.max(idle))
    }
}
