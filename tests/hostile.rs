//! Hostile input over real sockets, in both codecs: whatever a peer sends, the
//! offending connection is closed (with a reason frame where the protocol has one),
//! the server keeps serving a control client, handlers never run for an unauthenticated
//! peer, and memory does not follow the attacker's claims.
//!
//! Where a reason frame is expected: before login, any frame whose header names a codec
//! gets an AUTH_FAILURE with the reason in that codec; after login, native peers get a
//! CLOSE with the reason and netconduit-v1 peers just see the socket close (netconduit
//! has no close frame its client acts on). Bytes that name no codec (garbage, bad
//! magic, unknown version) get no reply.
//!
//! The brake measurement (`wrong_password_brake`) prints its figures; run it with
//! `cargo test -p conduit-tests --test hostile wrong_password_brake -- --nocapture`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conduit::{Codec, RpcError, RpcInfo, Running, Server, ServerDescriptor, Value};
use conduit_protocol::native::{self, Node, ValueTree};
use conduit_protocol::v1;
use conduit_protocol::{auth, FrameKind, ValueLimits};
use conduit_tests::forge::{
    self, empty_frame, junk, message_frame, native_message, native_routed_raw, nested, patch,
    raw_header, v1_message_raw, v1_raw,
};
use conduit_tests::{matrix, rss_bytes, start, test_descriptor, OwnedFrame, TestClient};

const PW: &str = "secret";
const CODECS: [Codec; 2] = [Codec::V1, Codec::Native];
const MIB: u64 = 1024 * 1024;

// ---- the server and its control client -------------------------------------------

/// A running server with `add` (RPC) and `echo` (message) handlers; `calls` counts
/// every handler invocation.
struct Target {
    server: Server,
    running: Option<Running>,
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
}

impl Target {
    fn new(desc: ServerDescriptor) -> Target {
        let server = Server::new(desc).unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let n = calls.clone();
        server.rpc_with(
            RpcInfo::new("add").param("a", "int").param("b", "int"),
            move |call| {
                n.fetch_add(1, Ordering::SeqCst);
                async move {
                    let arg = |k: &str| call.params.get(k).and_then(Value::as_i64);
                    match (arg("a"), arg("b")) {
                        (Some(a), Some(b)) => Ok(a + b),
                        _ => Err(RpcError::validation("Validation error in add", None)),
                    }
                }
            },
        );
        let n = calls.clone();
        server.on("echo", move |_, data: Value| {
            n.fetch_add(1, Ordering::SeqCst);
            async move { data }
        });
        let (running, addr) = start(&server);
        Target {
            server,
            running: Some(running),
            addr,
            calls,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn connect(&self, codec: Codec) -> TestClient {
        TestClient::connect(self.addr, codec).unwrap()
    }

    fn login(&self, codec: Codec) -> TestClient {
        TestClient::login(self.addr, codec, PW)
    }

    /// A fresh client in each codec logs in and gets `add` answered; then the server
    /// stops cleanly.
    fn assert_serving_then_stop(mut self) {
        assert_serving(self.addr);
        self.running.take().unwrap().stop().unwrap();
        assert_eq!(self.server.connection_count(), 0);
    }
}

fn assert_serving(addr: SocketAddr) {
    for codec in CODECS {
        let mut c = TestClient::login(addr, codec, PW);
        let r = c
            .rpc("add", &Value::map().with("a", 2).with("b", 3))
            .unwrap();
        assert_eq!(r.get("data"), Some(&Value::from(5)), "{codec:?}: {r}");
    }
}

/// A descriptor for hostile tests: short auth timeout so a missed close fails fast.
fn desc() -> ServerDescriptor {
    test_descriptor(PW).auth_timeout(Duration::from_secs(3))
}

// ---- frames built by hand (see `conduit_tests::forge`) ---------------------------------

fn version(codec: Codec) -> u16 {
    codec.version()
}

/// A MESSAGE `echo` with `data` in `codec`.
fn echo_frame(codec: Codec, data: &Value) -> Vec<u8> {
    message_frame(codec, "echo", data)
}

/// A v1 MESSAGE `echo` whose `data` is the raw MessagePack `data`.
fn v1_echo_raw(data: &[u8]) -> Vec<u8> {
    v1_message_raw("echo", data)
}

/// The first login frame in `codec`, with the right password.
fn auth_frame(codec: Codec) -> Vec<u8> {
    forge::auth_frame(codec, PW, "slow", "1.0")
}

// ---- what the peer sees ----------------------------------------------------------------

/// Reads until the server closes `c` and checks how it said goodbye: before login an
/// AUTH_FAILURE carrying `reason` (in the codec the peer used); after login a native
/// CLOSE carrying it, or, for v1, nothing. `reason: None` means no reason frame at all.
fn expect_closed_with(c: &mut TestClient, authed: bool, reason: Option<&str>) {
    let seen = c.expect_closed();
    let last: Vec<&OwnedFrame> = seen
        .iter()
        .filter(|f| matches!(f.header.kind, FrameKind::AuthFailure | FrameKind::Close))
        .collect();
    let expected_kind = match (reason, c.codec, authed) {
        (None, _, _) | (Some(_), Codec::V1, true) => None,
        (Some(_), _, false) => Some(FrameKind::AuthFailure),
        (Some(_), Codec::Native, true) => Some(FrameKind::Close),
    };
    match expected_kind {
        None => assert!(last.is_empty(), "expected no reason frame, got {seen:?}"),
        Some(kind) => {
            assert_eq!(last.len(), 1, "expected one {kind:?}, got {seen:?}");
            assert_eq!(last[0].header.kind, kind);
            assert_eq!(last[0].header.codec, c.codec);
            let text = last[0].reason();
            assert!(
                text.contains(reason.unwrap()),
                "reason {text:?} should contain {reason:?}"
            );
        }
    }
}

/// A MESSAGE frame's (type, data), decoded with limits far past the server's.
fn deep_message(f: &OwnedFrame) -> (String, Value) {
    f.message_with(ValueLimits {
        max_depth: 10_000,
        max_values: usize::MAX,
    })
}

// ---- the cases -------------------------------------------------------------------------

#[matrix]
fn garbage_bad_magic_and_unknown_version_get_no_reply_and_are_closed() {
    let t = Target::new(desc());
    let http = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n".to_vec();
    for codec in CODECS {
        let mut bad_magic = raw_header(version(codec), FrameKind::AuthRequest.code(), 0, 0);
        bad_magic[..4].copy_from_slice(b"XNDT");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("http request", http.clone()),
            ("random bytes", junk(4096, 0x9e37_79b9_7f4a_7c15)),
            ("zeros", vec![0; 64]),
            ("bad magic", bad_magic.to_vec()),
            ("version 0x0000", raw_header(0, 7, 0, 0).to_vec()),
            ("version 0x0300", raw_header(0x0300, 7, 0, 0).to_vec()),
            ("version 0xffff", raw_header(0xffff, 7, 0, 0).to_vec()),
        ];
        for (name, bytes) in &cases {
            // Before login …
            let mut c = t.connect(codec);
            let _ = c.send_raw(bytes);
            expect_closed_with(&mut c, false, None);
            // … and after: a native peer is told why, a v1 peer just sees the close.
            let mut c = t.login(codec);
            let _ = c.send_raw(bytes);
            let why = if name.starts_with("version") {
                "unknown version"
            } else {
                "bad magic"
            };
            expect_closed_with(&mut c, true, Some(why));
        }
    }
    assert_eq!(t.calls(), 0);
    t.assert_serving_then_stop();
}

#[matrix]
fn unknown_message_type_is_refused_with_a_reason() {
    let t = Target::new(desc());
    for codec in CODECS {
        for kind in [0u16, 0x11, 0x7fff, 0xffff] {
            let frame = raw_header(version(codec), kind, 0, 0);
            let mut c = t.connect(codec);
            c.send_raw(&frame).unwrap();
            expect_closed_with(&mut c, false, Some("unknown message type"));
            let mut c = t.login(codec);
            c.send_raw(&frame).unwrap();
            expect_closed_with(&mut c, true, Some("unknown message type"));
        }
    }
    t.assert_serving_then_stop();
}

#[matrix]
fn a_refused_codec_is_told_why_in_its_own_codec() {
    for (allow_v1, allow_native) in [(false, true), (true, false)] {
        let t = Target::new(desc().allow_v1(allow_v1).allow_native(allow_native));
        let refused = if allow_v1 { Codec::Native } else { Codec::V1 };
        let mut c = t.connect(refused);
        let f = c.authenticate(PW).unwrap();
        assert_eq!(
            (f.header.kind, f.header.codec),
            (FrameKind::AuthFailure, refused)
        );
        assert!(f.reason().contains("unknown version"), "{}", f.reason());
        assert!(c.expect_closed().is_empty());
        let allowed = if allow_v1 { Codec::V1 } else { Codec::Native };
        let mut c = t.login(allowed);
        assert_eq!(
            c.rpc("add", &Value::map().with("a", 1).with("b", 2))
                .unwrap()
                .get("data"),
            Some(&Value::from(3))
        );
        drop(c);
        let mut running = t;
        running.running.take().unwrap().stop().unwrap();
    }
}

#[matrix]
fn content_length_4gib_is_refused_without_allocating_it() {
    let t = Target::new(desc());
    let before = rss_bytes();
    for codec in CODECS {
        // u32::MAX for v1; the largest multiple of 8 for native (still ~4 GiB).
        let len = match codec {
            Codec::V1 => u32::MAX,
            Codec::Native => u32::MAX - 7,
        };
        for kind in [FrameKind::AuthRequest, FrameKind::Message] {
            let frame = raw_header(version(codec), kind.code(), 0, len);
            let mut c = t.connect(codec);
            c.send_raw(&frame).unwrap();
            expect_closed_with(&mut c, false, Some("frame too large"));
            let mut c = t.login(codec);
            c.send_raw(&frame).unwrap();
            expect_closed_with(&mut c, true, Some("frame too large"));
        }
    }
    // Many at once, each following its claim with real bytes until the server hangs up.
    let attackers: Vec<_> = (0..32)
        .map(|i| {
            let addr = t.addr;
            std::thread::spawn(move || {
                let codec = CODECS[i % 2];
                let mut c = if i % 4 < 2 {
                    TestClient::connect(addr, codec).unwrap()
                } else {
                    TestClient::login(addr, codec, PW)
                };
                let mut bytes =
                    raw_header(version(codec), FrameKind::Message.code(), 0, u32::MAX - 7).to_vec();
                bytes.extend(junk(64 * 1024, i as u64 + 1));
                let mut sent = 0u64;
                while sent < 64 * MIB && c.send_raw(&bytes).is_ok() {
                    sent += bytes.len() as u64;
                }
                c.expect_closed();
                sent
            })
        })
        .collect();
    let sent: Vec<u64> = attackers.into_iter().map(|a| a.join().unwrap()).collect();
    assert!(
        sent.iter().all(|&s| s < 64 * MIB),
        "every attacker was cut off: {sent:?}"
    );
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 64 * MIB,
        "RSS grew by {} MiB after 4 GiB claims",
        grown / MIB
    );
    t.assert_serving_then_stop();
}

#[matrix]
fn a_large_claim_before_login_is_refused_at_once_and_allowed_after() {
    // Before login only an auth frame may arrive, and it is small: a header claiming a
    // large payload must not make the server reserve it (nor wait for it until the
    // auth timeout).
    let t = Target::new(test_descriptor(PW).auth_timeout(Duration::from_secs(60)));
    let claim = 512 * 1024;
    let before = rss_bytes();
    let mut held = Vec::new();
    for i in 0..64 {
        let codec = CODECS[i % 2];
        let mut c = t.connect(codec);
        c.send_raw(&raw_header(
            version(codec),
            FrameKind::AuthRequest.code(),
            0,
            claim,
        ))
        .unwrap();
        held.push(c);
    }
    for c in &mut held {
        expect_closed_with(c, false, Some("frame too large"));
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 64 * MIB, "RSS grew by {} MiB", grown / MIB);
    // After login the full max_frame_bytes is available.
    for codec in CODECS {
        let mut c = t.login(codec);
        let data = Value::from(vec![7u8; 600 * 1024]);
        c.send_raw(&echo_frame(codec, &data)).unwrap();
        let (name, back) = c.next_message().unwrap();
        assert_eq!((name.as_str(), back), ("echo_response", data));
    }
    t.assert_serving_then_stop();
}

/// Trickles `bytes` one byte per `gap` until the server closes the connection (or all
/// was sent); returns when the close was seen (`None`: never) and the frames received.
fn trickle(c: &mut TestClient, bytes: &[u8], gap: Duration) -> (Option<Instant>, Vec<OwnedFrame>) {
    let mut seen = Vec::new();
    for b in bytes {
        if c.send_raw(std::slice::from_ref(b)).is_err() {
            return (Some(Instant::now()), seen);
        }
        let until = Instant::now() + gap;
        loop {
            match c.poll_frame(until.saturating_duration_since(Instant::now())) {
                Ok(Some(f)) => seen.push(f),
                Ok(None) => break,
                Err(_) => return (Some(Instant::now()), seen),
            }
            if Instant::now() >= until {
                break;
            }
        }
    }
    (None, seen)
}

#[matrix]
fn slowloris_before_login_is_closed_by_the_auth_timeout() {
    let auth_timeout = Duration::from_millis(600);
    let t = Target::new(test_descriptor(PW).auth_timeout(auth_timeout));
    let runs: Vec<_> = CODECS
        .into_iter()
        .map(|codec| {
            let addr = t.addr;
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut c = TestClient::connect(addr, codec).unwrap();
                // ~130 bytes at 10 bytes/s would take 13 s.
                let (closed, seen) =
                    trickle(&mut c, &auth_frame(codec), Duration::from_millis(100));
                let closed = closed.expect("closed before the frame completed") - started;
                assert!(seen.is_empty(), "{seen:?}");
                closed
            })
        })
        .collect();
    for r in runs {
        let closed = r.join().unwrap();
        println!("slowloris before login (auth_timeout {auth_timeout:?}): closed after {closed:?}");
        assert!(closed >= auth_timeout, "closed after {closed:?}");
        assert!(closed < auth_timeout + Duration::from_secs(3), "{closed:?}");
    }
    t.assert_serving_then_stop();
}

#[matrix]
fn slowloris_after_login_is_closed_by_the_heartbeat() {
    // Life is whole frames: a frame that never completes is silence, so the peer is
    // closed `heartbeat_timeout` after its last whole frame, however many bytes trickle
    // in. A peer that completes small frames slowly is alive and stays.
    let timeout = Duration::from_millis(1000);
    let t = Target::new(desc().heartbeat(Duration::from_millis(200), timeout));
    let runs: Vec<_> = CODECS
        .into_iter()
        .flat_map(|codec| [(codec, false), (codec, true)])
        .map(|(codec, completes)| {
            let addr = t.addr;
            std::thread::spawn(move || {
                let started = Instant::now(); // before the auth frame: a lower bound
                let mut c = TestClient::login(addr, codec, PW);
                if completes {
                    // PONGs at 1 byte / 10 ms: one whole frame every ~0.35 s; 1.4 s in
                    // all, past the 1 s timeout.
                    let pong = empty_frame(codec, FrameKind::Pong);
                    let (closed, _) = trickle(&mut c, &pong.repeat(4), Duration::from_millis(10));
                    assert!(closed.is_none(), "a peer completing frames stays");
                    c.ping().unwrap();
                    loop {
                        let f = c.next_frame().expect("still connected");
                        if f.header.kind == FrameKind::Pong {
                            break;
                        }
                    }
                    return None;
                }
                let big = echo_frame(codec, &Value::from("x".repeat(200)));
                let (closed, seen) = trickle(&mut c, &big, Duration::from_millis(100));
                let closed = closed.expect("closed before the frame completed") - started;
                assert!(
                    seen.iter().any(|f| f.header.kind == FrameKind::Ping),
                    "pinged while silent"
                );
                Some(closed)
            })
        })
        .collect();
    for r in runs {
        if let Some(closed) = r.join().unwrap() {
            println!(
                "slowloris after login (heartbeat_timeout {timeout:?}): closed after {closed:?}"
            );
            assert!(closed >= timeout, "closed after {closed:?}");
            assert!(closed < timeout + Duration::from_secs(3), "{closed:?}");
        }
    }
    t.assert_serving_then_stop();
}

#[matrix]
fn truncated_frame_then_silence_is_closed() {
    let auth_timeout = Duration::from_millis(500);
    let hb_timeout = Duration::from_millis(600);
    let t = Target::new(
        test_descriptor(PW)
            .auth_timeout(auth_timeout)
            .heartbeat(Duration::from_millis(150), hb_timeout),
    );
    for codec in CODECS {
        // Before login: half an auth frame.
        let started = Instant::now();
        let mut c = t.connect(codec);
        let frame = auth_frame(codec);
        c.send_raw(&frame[..frame.len() / 2]).unwrap();
        expect_closed_with(&mut c, false, None);
        assert!(started.elapsed() >= auth_timeout);
        // After login: a header and part of its payload.
        let started = Instant::now();
        let mut c = t.login(codec);
        let frame = echo_frame(codec, &Value::from("y".repeat(100)));
        c.send_raw(&frame[..40]).unwrap();
        let seen = c.expect_closed();
        assert!(started.elapsed() >= hb_timeout);
        assert!(seen.iter().all(|f| f.header.kind == FrameKind::Ping));
    }
    // Only a header's worth, with no payload at all.
    let mut c = t.login(Codec::Native);
    c.send_raw(&raw_header(0x0200, FrameKind::Message.code(), 0, 64))
        .unwrap();
    c.expect_closed();
    t.assert_serving_then_stop();
}

#[matrix]
fn nesting_and_value_limits_close_the_connection() {
    // Frames up to 8 MiB, so only the payload limits refuse what follows.
    let t = Target::new(
        desc()
            .max_frame_bytes(8 * 1024 * 1024)
            .max_outbound_bytes(16 * 1024 * 1024),
    );
    for codec in CODECS {
        // Within the default depth (64): echoed.
        let mut c = t.login(codec);
        c.send_raw(&echo_frame(codec, &nested(32))).unwrap();
        assert_eq!(c.next_message().unwrap().1, nested(32));
        // Past it: closed.
        c.send_raw(&echo_frame(codec, &nested(100))).unwrap();
        expect_closed_with(&mut c, true, Some("nested too deeply"));
    }
    // 100,000 levels, built without recursion: refused at level 64, no stack blow-up.
    let mut c = t.login(Codec::V1);
    let mut deep = vec![0x91u8; 100_000];
    deep.push(0xc0);
    c.send_raw(&v1_echo_raw(&deep)).unwrap();
    expect_closed_with(&mut c, true, None);
    let mut c = t.login(Codec::Native);
    let mut nodes = vec![Node::Array(1); 100_000];
    nodes.push(Node::Nil);
    c.send_raw(&native_message("echo", &ValueTree { nodes }))
        .unwrap();
    expect_closed_with(&mut c, true, Some("nested too deeply"));
    // Containers claiming more elements than the payload holds.
    let mut c = t.login(Codec::V1);
    c.send_raw(&v1_echo_raw(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0]))
        .unwrap();
    expect_closed_with(&mut c, true, None);
    let mut c = t.login(Codec::V1);
    c.send_raw(&v1_echo_raw(&[0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0]))
        .unwrap();
    expect_closed_with(&mut c, true, None);
    for claim in [Node::Array(u32::MAX), Node::Map(u32::MAX)] {
        let mut c = t.login(Codec::Native);
        let tree = ValueTree {
            nodes: vec![claim, Node::Nil],
        };
        c.send_raw(&native_message("echo", &tree)).unwrap();
        expect_closed_with(&mut c, true, Some("unexpected payload shape"));
    }
    // More values than the default budget (262,144): 300,000 nils in 300 KB.
    let mut c = t.login(Codec::V1);
    let mut many = vec![0xdd];
    many.extend_from_slice(&300_000u32.to_be_bytes());
    many.extend(std::iter::repeat_n(0xc0, 300_000));
    c.send_raw(&v1_echo_raw(&many)).unwrap();
    expect_closed_with(&mut c, true, None);
    let mut c = t.login(Codec::Native);
    let mut nodes = vec![Node::Array(300_000)];
    nodes.extend(std::iter::repeat_n(Node::Nil, 300_000));
    c.send_raw(&native_message("echo", &ValueTree { nodes }))
        .unwrap();
    expect_closed_with(&mut c, true, Some("protocol error"));
    assert_eq!(t.calls(), 2, "only the two payloads within limits ran");
    t.assert_serving_then_stop();

    // The deepest a server may be configured for is safe for the shard's stack: echoed
    // (decoded, handled, re-encoded, dropped) at that depth in both codecs.
    let mut d = desc();
    d.max_payload_depth = conduit::descriptor::MAX_PAYLOAD_DEPTH;
    let t = Target::new(d);
    for codec in CODECS {
        let deepest = match codec {
            Codec::V1 => conduit::descriptor::MAX_PAYLOAD_DEPTH - 1, // the envelope is a level
            Codec::Native => conduit::descriptor::MAX_PAYLOAD_DEPTH,
        };
        let mut c = t.login(codec);
        c.send_raw(&echo_frame(codec, &nested(deepest))).unwrap();
        let reply = c.next_app_frame().unwrap();
        assert_eq!(
            deep_message(&reply),
            ("echo_response".into(), nested(deepest))
        );
        c.send_raw(&echo_frame(codec, &nested(deepest + 1)))
            .unwrap();
        expect_closed_with(&mut c, true, Some("nested too deeply"));
    }
    t.assert_serving_then_stop();

    // Tight limits, exactly at and just past each bound.
    let mut d = desc();
    d.max_payload_depth = 8;
    d.max_payload_values = 100;
    let t = Target::new(d);
    for codec in CODECS {
        // v1 counts the {type, data} envelope as one level and three values.
        let (ok_depth, ok_len) = match codec {
            Codec::V1 => (7, 97),
            Codec::Native => (8, 99),
        };
        let mut c = t.login(codec);
        c.send_raw(&echo_frame(codec, &nested(ok_depth))).unwrap();
        assert_eq!(c.next_message().unwrap().1, nested(ok_depth));
        let ints = |n: usize| Value::from((0..n as i64).map(Value::from).collect::<Vec<_>>());
        c.send_raw(&echo_frame(codec, &ints(ok_len))).unwrap();
        assert_eq!(c.next_message().unwrap().1, ints(ok_len));
        c.send_raw(&echo_frame(codec, &nested(ok_depth + 1)))
            .unwrap();
        expect_closed_with(&mut c, true, Some("nested too deeply"));
        let mut c = t.login(codec);
        c.send_raw(&echo_frame(codec, &ints(ok_len + 1))).unwrap();
        expect_closed_with(&mut c, true, Some("protocol error"));
        // A map counts its values, not its keys.
        let mut c = t.login(codec);
        let mut map = Value::map();
        for i in 0..ok_len - 1 {
            map.insert(format!("k{i}"), i as i64);
        }
        c.send_raw(&echo_frame(codec, &map)).unwrap();
        assert_eq!(c.next_message().unwrap().1, map);
    }
    t.assert_serving_then_stop();
}

#[matrix]
fn oversize_frames_and_decompression_bombs_close_the_connection() {
    let max = 64 * 1024;
    let t = Target::new(desc().max_frame_bytes(max));
    for codec in CODECS {
        // A frame of exactly the limit is fine (both codecs: payload = 64 KiB).
        let mut c = t.login(codec);
        let fill = |target: usize| {
            let mut n = target as i64 - 64;
            for _ in 0..64 {
                let f = echo_frame(codec, &Value::from(vec![1u8; n as usize]));
                let got = f.len() as i64 - 32;
                if got == target as i64 {
                    return f;
                }
                n += target as i64 - got;
            }
            panic!("no frame of exactly {target} bytes");
        };
        let at_limit = fill(max as usize);
        c.send_raw(&at_limit).unwrap();
        assert_eq!(c.next_message().unwrap().0, "echo_response");
        // One byte (native: one word) more is refused from its header alone.
        let mut over = raw_header(
            version(codec),
            FrameKind::Message.code(),
            0,
            max + if codec == Codec::Native { 8 } else { 1 },
        )
        .to_vec();
        over.extend(vec![0; max as usize + 8]);
        let _ = c.send_raw(&over);
        expect_closed_with(&mut c, true, Some("frame too large"));
    }
    // zlib: 4 MiB of zeros in ~4 KiB, announced as a 64 KiB-limited payload.
    let mut c = t.login(Codec::V1);
    let bomb = v1::Encoder {
        timestamp_ms: 0,
        compress: true,
    }
    .message("echo", &Value::from(vec![0u8; 4 * 1024 * 1024]));
    assert!(bomb.len() < max as usize, "{}", bomb.len());
    let before = rss_bytes();
    c.send_raw(&bomb).unwrap();
    expect_closed_with(&mut c, true, None);
    // A compressed frame that is not zlib at all.
    let mut c = t.login(Codec::V1);
    let mut bad = v1_raw(FrameKind::Message, &junk(100, 5));
    bad[9] |= 1;
    c.send_raw(&bad).unwrap();
    expect_closed_with(&mut c, true, None);
    // Before login, a compressed bomb as the auth frame.
    let mut c = t.connect(Codec::V1);
    let mut hash = String::new();
    while hash.len() < 2 * 1024 * 1024 {
        hash.push_str(&auth::v1_password_hash(PW));
    }
    let bomb = v1::Encoder {
        timestamp_ms: 0,
        compress: true,
    }
    .auth_request(&hash, "x", "1");
    c.send_raw(&bomb).unwrap();
    expect_closed_with(&mut c, false, Some("too large"));
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 64 * MIB, "RSS grew by {} MiB", grown / MIB);
    assert_eq!(t.calls(), 2);
    t.assert_serving_then_stop();
}

#[matrix]
fn invalid_utf8_is_a_protocol_error() {
    let t = Target::new(desc());
    // v1, before login: the password hash is not UTF-8.
    let mut c = t.connect(Codec::V1);
    let mut p = vec![0x81, 0xad];
    p.extend_from_slice(b"password_hash");
    p.extend_from_slice(&[0xa2, 0xff, 0xfe]);
    c.send_raw(&v1_raw(FrameKind::AuthRequest, &p)).unwrap();
    expect_closed_with(&mut c, false, Some("invalid UTF-8"));
    // native, before login: the client name in Hello is not UTF-8.
    let mut c = t.connect(Codec::Native);
    let mut hello = native::Encoder::new(0)
        .auth_step(&native::AuthStep::Hello(native::Hello {
            client_nonce: [1; 32],
            client_name: "QQQQQQQQQQQQQQQQQQQQ".into(),
            client_version: "1".into(),
        }))
        .unwrap()
        .to_vec();
    patch(&mut hello, b"QQQQ", &[0xff, 0xfe, 0xfd, 0xfc]);
    c.send_raw(&hello).unwrap();
    expect_closed_with(&mut c, false, Some("invalid payload"));
    // v1, after login: message type, RPC method, a string in the data, a map key.
    let bad_str = [0xa2, 0xc3, 0x28];
    let mut type_bad = vec![0x82, 0xa4];
    type_bad.extend_from_slice(b"type");
    type_bad.extend_from_slice(&bad_str);
    type_bad.extend_from_slice(&[0xa4, b'd', b'a', b't', b'a', 0xc0]);
    let mut method_bad = vec![0x82, 0xa6];
    method_bad.extend_from_slice(b"method");
    method_bad.extend_from_slice(&bad_str);
    method_bad.extend_from_slice(&[0xa6, b'p', b'a', b'r', b'a', b'm', b's', 0x80]);
    let v1_cases = [
        v1_raw(FrameKind::Message, &type_bad),
        v1_raw(FrameKind::RpcRequest, &method_bad),
        v1_echo_raw(&bad_str),
        v1_echo_raw(&[0x81, 0xa1, 0xff, 0xc0]),
    ];
    for frame in &v1_cases {
        let mut c = t.login(Codec::V1);
        c.send_raw(frame).unwrap();
        expect_closed_with(&mut c, true, None);
    }
    // native, after login: route name, and a string inside the archive.
    let mut c = t.login(Codec::Native);
    c.send_raw(&native_routed_raw(
        FrameKind::RpcRequest,
        &[0xff, 0xfe],
        &[],
    ))
    .unwrap();
    expect_closed_with(&mut c, true, Some("invalid UTF-8"));
    let mut c = t.login(Codec::Native);
    let mut msg = native_message(
        "echo",
        &ValueTree::from_value(&Value::from("QQQQQQQQQQQQQQQQQQQQ")),
    );
    patch(&mut msg, b"QQQQ", &[0xed, 0xa0, 0x80, 0x80]); // a UTF-16 surrogate
    c.send_raw(&msg).unwrap();
    expect_closed_with(&mut c, true, Some("invalid payload"));
    assert_eq!(t.calls(), 0);
    t.assert_serving_then_stop();
}

#[matrix]
fn frames_before_login_never_reach_a_handler() {
    let t = Target::new(desc());
    for codec in CODECS {
        for kind in FrameKind::ALL {
            if kind == FrameKind::AuthRequest {
                continue;
            }
            let mut c = t.connect(codec);
            let frame = match (codec, kind) {
                (Codec::V1, FrameKind::Message) => v1::Encoder::new(0)
                    .message("echo", &Value::from(1))
                    .to_vec(),
                (Codec::V1, FrameKind::RpcRequest) => v1::Encoder::new(0)
                    .rpc_request(1, "add", &Value::map().with("a", 1).with("b", 2))
                    .to_vec(),
                (Codec::Native, FrameKind::Message) => {
                    native_message("echo", &ValueTree::from_value(&Value::from(1)))
                }
                (Codec::Native, FrameKind::RpcRequest) => native::Encoder::new(0)
                    .rpc_request(
                        1,
                        "add",
                        &ValueTree::from_value(&Value::map().with("a", 1).with("b", 2)),
                    )
                    .unwrap()
                    .to_vec(),
                (_, k) => empty_frame(codec, k),
            };
            c.send_raw(&frame).unwrap();
            expect_closed_with(&mut c, false, Some("authentication required"));
        }
        // A wrong login with calls pipelined behind it.
        let mut c = t.connect(codec);
        let mut bytes = match codec {
            Codec::V1 => v1::Encoder::new(0)
                .auth_request(&auth::v1_password_hash("wrong"), "x", "1")
                .to_vec(),
            Codec::Native => auth_frame(Codec::Native),
        };
        bytes.extend(echo_frame(codec, &Value::from(1)));
        c.send_raw(&bytes).unwrap();
        let seen = c.expect_closed();
        assert!(seen.iter().all(
            |f| f.header.kind != FrameKind::AuthSuccess && f.header.kind != FrameKind::Message
        ));
    }
    // Native: a proof with no hello, a second hello, a replayed or forged proof.
    let enc = native::Encoder::new(0);
    let proof = |p: [u8; 32]| enc.auth_step(&native::AuthStep::Proof(p)).unwrap();
    let mut c = t.connect(Codec::Native);
    c.send_raw(&proof([0; 32])).unwrap();
    expect_closed_with(&mut c, false, Some("unexpected payload shape"));
    let mut c = t.connect(Codec::Native);
    c.send_raw(&auth_frame(Codec::Native)).unwrap();
    assert_eq!(c.next_frame().unwrap().header.kind, FrameKind::AuthRequest);
    c.send_raw(&auth_frame(Codec::Native)).unwrap();
    expect_closed_with(&mut c, false, Some("unexpected payload shape"));
    let mut c = t.connect(Codec::Native);
    c.send_raw(&auth_frame(Codec::Native)).unwrap();
    assert_eq!(c.next_frame().unwrap().header.kind, FrameKind::AuthRequest);
    // A proof computed for a server nonce of our choosing (a replay of another
    // handshake) is refused.
    c.send_raw(&proof(auth::client_proof(
        PW.as_bytes(),
        &[0; 32],
        &[1; 32],
    )))
    .unwrap();
    expect_closed_with(&mut c, false, Some("Invalid password"));
    // v1: an empty, a short and an uppercase hash.
    for hash in [
        String::new(),
        "00".into(),
        auth::v1_password_hash(PW).to_uppercase(),
    ] {
        let mut c = t.connect(Codec::V1);
        c.send_raw(&v1::Encoder::new(0).auth_request(&hash, "x", "1"))
            .unwrap();
        expect_closed_with(&mut c, false, Some("Invalid password"));
    }
    assert_eq!(t.calls(), 0, "no handler ran for an unauthenticated peer");
    assert_eq!(t.server.connection_count(), 0);
    t.assert_serving_then_stop();
}

#[matrix]
fn auth_frames_after_login_are_ignored() {
    let t = Target::new(desc());
    let mut keep = Vec::new();
    for codec in CODECS {
        let mut c = t.login(codec);
        let again: Vec<Vec<u8>> = match codec {
            Codec::V1 => vec![
                v1::Encoder::new(0)
                    .auth_request(&auth::v1_password_hash(PW), "x", "1")
                    .to_vec(),
                v1::Encoder::new(0)
                    .auth_request(&auth::v1_password_hash("wrong"), "x", "1")
                    .to_vec(),
                v1_raw(FrameKind::AuthRequest, &junk(40, 3)),
            ],
            Codec::Native => vec![
                auth_frame(Codec::Native),
                native::Encoder::new(0)
                    .auth_step(&native::AuthStep::Proof([9; 32]))
                    .unwrap()
                    .to_vec(),
                native_routed_raw(FrameKind::AuthRequest, b"", &junk(40, 3)),
            ],
        };
        for frame in &again {
            c.send_raw(frame).unwrap();
        }
        // Nothing answers them, and the connection still works.
        let r = c
            .rpc("add", &Value::map().with("a", 1).with("b", 1))
            .unwrap();
        assert_eq!(r.get("data"), Some(&Value::from(2)));
        keep.push(c);
    }
    assert_eq!(t.server.connection_count(), 2);
    drop(keep);
    t.assert_serving_then_stop();
}

#[matrix]
fn codec_switch_and_garbage_after_login_close_the_connection() {
    let t = Target::new(desc());
    let mut c = t.login(Codec::V1);
    c.send_raw(&native::Encoder::new(0).empty(FrameKind::Ping))
        .unwrap();
    expect_closed_with(&mut c, true, None);
    let mut c = t.login(Codec::Native);
    c.send_raw(&v1::Encoder::new(0).empty(FrameKind::Ping))
        .unwrap();
    expect_closed_with(&mut c, true, Some("codec changed"));
    // Native layout: length not a multiple of 8, padding out of range.
    let mut c = t.login(Codec::Native);
    c.send_raw(&raw_header(0x0200, FrameKind::Message.code(), 0, 12))
        .unwrap();
    expect_closed_with(&mut c, true, Some("native frame layout"));
    let mut c = t.login(Codec::Native);
    let mut f = raw_header(0x0200, FrameKind::Message.code(), 9, 16).to_vec();
    f.extend([0; 16]);
    c.send_raw(&f).unwrap();
    expect_closed_with(&mut c, true, Some("native frame layout"));
    // Native routed frames whose route runs past the payload, or whose body is junk.
    let mut c = t.login(Codec::Native);
    let mut short = native_routed_raw(FrameKind::Message, b"echo", &[]);
    short[32] = 200;
    c.send_raw(&short).unwrap();
    expect_closed_with(&mut c, true, Some("unexpected payload shape"));
    let mut c = t.login(Codec::Native);
    c.send_raw(&native_routed_raw(
        FrameKind::Message,
        b"echo",
        &junk(64, 9),
    ))
    .unwrap();
    expect_closed_with(&mut c, true, Some("invalid payload"));
    let mut c = t.login(Codec::Native);
    c.send_raw(&native_routed_raw(
        FrameKind::RpcRequest,
        b"add",
        &junk(64, 9),
    ))
    .unwrap();
    expect_closed_with(&mut c, true, Some("invalid payload"));
    // A message to a type nobody handles is ignored, whatever its body.
    let mut c = t.login(Codec::Native);
    c.send_raw(&native_routed_raw(
        FrameKind::Message,
        b"nobody",
        &junk(64, 9),
    ))
    .unwrap();
    let r = c
        .rpc("add", &Value::map().with("a", 1).with("b", 1))
        .unwrap();
    assert_eq!(r.get("data"), Some(&Value::from(2)));
    assert_eq!(t.calls(), 1);
    t.assert_serving_then_stop();
}

#[matrix]
fn ping_flood_without_reading_is_cut_off_as_a_slow_consumer() {
    let t = Target::new(
        desc()
            .max_frame_bytes(64 * 1024)
            .max_outbound_bytes(256 * 1024),
    );
    let before = rss_bytes();
    for codec in CODECS {
        // A small receive buffer, set before connecting (so the window never shrinks),
        // and never read from.
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&t.addr.into()).unwrap();
        let mut c = TestClient::from_stream(sock.into(), codec).unwrap();
        assert_eq!(
            c.authenticate(PW).unwrap().header.kind,
            FrameKind::AuthSuccess
        );
        let ping = empty_frame(codec, FrameKind::Ping);
        let burst = ping.repeat(1024);
        // A write may wait a while (TCP backs off when a loaded loopback drops
        // segments); only the overall deadline matters.
        c.stream()
            .set_write_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut sent = 0u64;
        let mut at = 0; // position in `burst`, which holds whole frames
        loop {
            assert!(sent < 256 * MIB, "never cut off");
            assert!(Instant::now() < deadline, "not cut off within 60 s");
            match std::io::Write::write(&mut c.stream(), &burst[at..]) {
                Ok(0) => break,
                Ok(n) => {
                    sent += n as u64;
                    at = (at + n) % burst.len();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => break,
            }
        }
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 64 * MIB, "RSS grew by {} MiB", grown / MIB);
    t.assert_serving_then_stop();
}

#[matrix]
fn wrong_password_brake() {
    // The default brake: 200 ms before a failure is sent and the socket closed.
    let delay = Duration::from_millis(200);
    let t = Target::new(desc().auth_failure_delay(delay));
    let window = Duration::from_millis(1500);

    // One client, one attempt after another (each on a new connection: the server
    // closes after a failure). A failure never arrives before the delay.
    let mut report = Vec::new();
    for codec in CODECS {
        let started = Instant::now();
        let mut attempts = 0u32;
        while started.elapsed() < window {
            let mut c = t.connect(codec);
            let sent = Instant::now();
            let f = c.authenticate("wrong").unwrap();
            let took = sent.elapsed();
            assert_eq!(f.header.kind, FrameKind::AuthFailure);
            assert!(took >= delay, "failure after {took:?}");
            c.expect_closed();
            attempts += 1;
        }
        let rate = f64::from(attempts) / started.elapsed().as_secs_f64();
        report.push(format!(
            "{codec:?} sequential, waiting for each failure: {rate:.1} attempts/s"
        ));
    }

    // Pipelining on one connection buys nothing: one failure, then the close.
    let mut c = t.connect(Codec::V1);
    let wrong = v1::Encoder::new(0).auth_request(&auth::v1_password_hash("wrong"), "x", "1");
    c.send_raw(&wrong.repeat(50)).unwrap();
    let seen = c.expect_closed();
    assert_eq!(seen.len(), 1, "{seen:?}");
    report.push("v1, 50 attempts pipelined on one connection: 1 answered, then closed".into());

    // A client that does not wait for the failure: it takes "no AUTH_SUCCESS within
    // 5 ms" as a failure and reconnects. Only the slots held by braked connections
    // limit it (max_connections / auth_failure_delay).
    let started = Instant::now();
    let mut attempts = 0u32;
    while started.elapsed() < window {
        let mut c = t.connect(Codec::V1);
        c.send_raw(&wrong).unwrap();
        if let Ok(Some(f)) = c.poll_frame(Duration::from_millis(5)) {
            assert_ne!(f.header.kind, FrameKind::AuthSuccess);
        }
        attempts += 1;
    }
    let rate = f64::from(attempts) / started.elapsed().as_secs_f64();
    report.push(format!(
        "v1 sequential, giving up after 5 ms without success: {rate:.1} attempts/s"
    ));

    // One IP, many connections in parallel, each waiting for its failure.
    let parallel = 32;
    let started = Instant::now();
    let workers: Vec<_> = (0..parallel)
        .map(|i| {
            let addr = t.addr;
            std::thread::spawn(move || {
                let mut n = 0u32;
                while started.elapsed() < window {
                    let mut c = TestClient::connect(addr, CODECS[i % 2]).unwrap();
                    let f = c.authenticate("wrong").unwrap();
                    assert_eq!(f.header.kind, FrameKind::AuthFailure);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let rate = f64::from(total) / started.elapsed().as_secs_f64();
    report.push(format!(
        "one IP, {parallel} connections in parallel: {rate:.1} attempts/s"
    ));
    for line in &report {
        println!("brake (auth_failure_delay {delay:?}): {line}");
    }
    assert_eq!(t.server.connection_count(), 0);
    assert_eq!(t.calls(), 0);
    t.assert_serving_then_stop();
}
