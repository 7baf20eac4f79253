//! The core on an in-memory pair in virtual time: a client (the protocol crate's
//! handshake and encoder) and a server core wired back to back, no sockets, no clock.
//! Every case runs in microseconds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on the first unexpected error"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use conduit_protocol::handshake::{ClientHandshake, ClientStep, ServerCredentials};
use conduit_protocol::native::{self, ArchivedReason, ValueTree};
use conduit_protocol::v1::{self, V1Limits, V1Payload};
use conduit_protocol::{Codec, DecoderLimits, Encoder, FrameDecoder, FrameKind, Header, Value};

use super::*;

const MS: Duration = Duration::from_millis(1);

fn config(tweak: impl FnOnce(&mut CoreConfig)) -> Arc<CoreConfig> {
    let mut c = CoreConfig {
        creds: ServerCredentials::new("pw", "S", "1"),
        auth_timeout: Duration::from_secs(5),
        heartbeat_interval: Duration::from_secs(1),
        heartbeat_timeout: Duration::from_secs(3),
        auth_failure_delay: Duration::from_millis(200),
        v1_post_auth_delay: Duration::ZERO,
        value_limits: ValueLimits::default(),
        v1_limits: V1Limits::default(),
        decoder_limits: DecoderLimits {
            max_payload_bytes: 64 * 1024,
            ..DecoderLimits::default()
        },
        max_auth_frame_bytes: 4096,
        slow_consumer: SlowConsumerPolicy::Disconnect,
        max_outbound_bytes: 1 << 20,
        routes: RouteTable::new(
            [
                ("add".to_owned(), ArgForm::Value),
                ("fail".to_owned(), ArgForm::Value),
                ("never".to_owned(), ArgForm::Value),
            ],
            ["chat".to_owned()],
            Value::map().with("count", 3),
        ),
    };
    tweak(&mut c);
    Arc::new(c)
}

/// A frame the client received.
#[derive(Debug)]
struct Got {
    header: Header,
    payload: Vec<u8>,
}

impl Got {
    fn v1(&self) -> V1Payload {
        v1::decode(&self.header, &self.payload, &V1Limits::default()).unwrap()
    }

    /// The result value of an RPC reply, or `Err((code, message))`, in either codec.
    fn rpc(&self) -> Result<Value, (i64, String)> {
        match self.header.codec {
            Codec::V1 => match self.v1() {
                V1Payload::RpcResponse { result, .. } => {
                    if result.get("success").and_then(Value::as_bool) == Some(true) {
                        Ok(result.get("data").cloned().unwrap_or_default())
                    } else {
                        Err((
                            result.get("code").and_then(Value::as_i64).unwrap(),
                            result
                                .get("error")
                                .and_then(Value::as_str)
                                .unwrap()
                                .to_owned(),
                        ))
                    }
                }
                other => panic!("not a reply: {other:?}"),
            },
            Codec::Native => {
                let body = aligned(&self.payload);
                if self.header.kind == FrameKind::RpcError {
                    let f = native::access::<native::ArchivedRpcFailure>(&body).unwrap();
                    Err((f.code.to_native().into(), f.message.as_str().to_owned()))
                } else {
                    let t = native::access::<native::ArchivedValueTree>(&body).unwrap();
                    Ok(t.to_value(ValueLimits::default()).unwrap())
                }
            }
        }
    }

    fn reason(&self) -> String {
        match self.header.codec {
            Codec::V1 => match self.v1() {
                V1Payload::AuthFailure { reason } => reason,
                other => panic!("no reason in {other:?}"),
            },
            Codec::Native => native::access::<ArchivedReason>(&aligned(&self.payload))
                .unwrap()
                .reason
                .as_str()
                .to_owned(),
        }
    }

    fn message_name(&self) -> String {
        match self.header.codec {
            Codec::V1 => match self.v1() {
                V1Payload::Message { name, .. } => name,
                other => panic!("not a message: {other:?}"),
            },
            Codec::Native => {
                let body = aligned(&self.payload);
                native::split_route(&body).unwrap().0.to_owned()
            }
        }
    }
}

fn aligned(bytes: &[u8]) -> rkyv::util::AlignedVec<8> {
    let mut v = rkyv::util::AlignedVec::<8>::new();
    v.extend_from_slice(bytes);
    v
}

/// What the server core reported, for assertions.
#[derive(Debug, PartialEq)]
enum Seen {
    LoggedIn(Codec),
    Call(CallKind, String),
    Closed(CloseReason),
}

/// A client and a server core back to back in virtual time.
struct Pair {
    codec: Codec,
    server: ConnCore,
    /// The server's receive side, as the glue would hold it.
    server_rx: FrameDecoder,
    /// The client's receive side.
    client_rx: FrameDecoder,
    /// What the server did.
    seen: Vec<Seen>,
    /// The close the core decided, with its last frame still to deliver.
    close: Option<Close>,
    /// Calls the "application" leaves unanswered (a handler that never completes).
    parked: Vec<CallId>,
    now: Instant,
    t0: Instant,
}

impl Pair {
    fn new(codec: Codec, config: Arc<CoreConfig>) -> Pair {
        let t0 = Instant::now();
        let server_rx = config.new_decoder();
        Pair {
            codec,
            server: ConnCore::new(
                config,
                ConnectionId::new(0, 9),
                [5; 32],
                "ab".repeat(64),
                t0,
            ),
            server_rx,
            client_rx: FrameDecoder::new(DecoderLimits::default()),
            seen: Vec::new(),
            close: None,
            parked: Vec::new(),
            now: t0,
            t0,
        }
    }

    fn logged_in(codec: Codec) -> Pair {
        let mut p = Pair::new(codec, config(|_| {}));
        p.login("pw").unwrap();
        p
    }

    fn enc(&self) -> Encoder {
        Encoder::new(self.codec, 0)
    }

    /// Delivers bytes to the server and lets it act on every whole frame, running the
    /// "application": `add` sums, `fail` fails, `never` parks, `chat` echoes.
    fn send(&mut self, bytes: &[u8]) {
        self.server_rx.feed(bytes);
        self.drive();
    }

    fn drive(&mut self) {
        loop {
            let Some(event) = self.server.poll_event(&mut self.server_rx, self.now, 0) else {
                break;
            };
            match event {
                Event::Handled => {}
                Event::Authenticated { codec, .. } => self.seen.push(Seen::LoggedIn(codec)),
                Event::Close(c) => {
                    self.seen.push(Seen::Closed(c.reason));
                    self.close = Some(c);
                    break;
                }
                Event::Call(call) => {
                    self.seen
                        .push(Seen::Call(call.kind, call.route.clone().into_owned()));
                    let args = match call.args {
                        Args::Value(v) => v,
                        Args::Native(_) => Value::Nil,
                    };
                    let outcome = match (call.kind, call.route.as_ref()) {
                        (CallKind::Rpc, "add") => {
                            let n = |k| args.get(k).and_then(Value::as_i64).unwrap_or(0);
                            Outcome::Rpc(Ok(Value::from(n("a") + n("b"))))
                        }
                        (CallKind::Rpc, "never") => {
                            self.parked.push(call.id);
                            continue;
                        }
                        (CallKind::Rpc, _) => Outcome::Rpc(Err(Failure {
                            code: 1001,
                            message: "Error in fail: boom".into(),
                            details: None,
                        })),
                        (CallKind::Message, _) => Outcome::Message(Some(args)),
                    };
                    if let Some(c) = self.server.complete(call.id, outcome, 0) {
                        self.seen.push(Seen::Closed(c.reason));
                        self.close = Some(c);
                        break;
                    }
                }
            }
        }
    }

    /// Everything the server queued, as the writer would send it (its last frame
    /// included once the core closed), decoded on the client side.
    fn received(&mut self) -> Vec<Got> {
        let out = self.server.outbound().clone();
        if let Some(last) = self.close.as_mut().and_then(|c| c.last.take()) {
            out.push_last(last);
        }
        let mut batch = Vec::new();
        out.open_gate();
        out.take_batch(&mut batch, usize::MAX, usize::MAX);
        out.finish_batch();
        let mut got = Vec::new();
        for b in batch {
            self.client_rx.feed(&b);
            while let Some(f) = self.client_rx.next_frame().unwrap() {
                got.push(Got {
                    header: f.header,
                    payload: f.payload.to_vec(),
                });
            }
        }
        got
    }

    /// Runs the whole login through the client's handshake.
    fn login(&mut self, password: &str) -> Result<(), String> {
        let mut hs = ClientHandshake::new(self.codec, password, [1; 32], "c", "1");
        let first = hs.start(0).unwrap();
        self.send(&first);
        loop {
            let out = self.server.outbound().clone();
            if let Some(last) = self.close.as_mut().and_then(|c| c.last.take()) {
                out.push_last(last);
            }
            let mut batch = Vec::new();
            out.take_batch(&mut batch, usize::MAX, usize::MAX);
            out.finish_batch();
            let Some(b) = batch.first() else {
                return Err("no answer".into());
            };
            self.client_rx.feed(b);
            let f = self.client_rx.next_frame().unwrap().unwrap();
            match hs.on_frame(&f, &V1Limits::default(), 0) {
                Ok(ClientStep::Send(next)) => self.send(&next),
                Ok(ClientStep::Done(_)) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn advance(&mut self, d: Duration) -> Option<CloseReason> {
        self.now += d;
        let c = self.server.on_tick(self.now, 0)?;
        self.seen.push(Seen::Closed(c.reason));
        let reason = c.reason;
        self.close = Some(c);
        Some(reason)
    }

    fn rpc(&mut self, corr: u64, method: &str, params: &Value) -> Result<Value, (i64, String)> {
        let frame = self.enc().rpc_request(corr, method, params).unwrap();
        self.send(&frame);
        let got = self.received();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].header.correlation_id, corr);
        got[0].rpc()
    }
}

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
