//! The sans-I/O connection core fed arbitrary byte streams (split at arbitrary read
//! sizes) and ticks, the way a shard drives it: small frames until login, the full
//! frame limit after, the codec learnt from a refused header, and every message or
//! RPC body decoded as the dispatcher would. It must never panic, whatever arrives
//! before or after login.
//!
//! The first byte picks a prefix (bits 0–1: nothing, a valid v1 login, a valid native
//! login, a native hello only) so the fuzzer reaches the post-auth states of both
//! codecs, and the read size (bits 2–7).
//!
//! Keep in step with `engine/tests/fuzz_regressions.rs`, which replays
//! `engine/fuzz/regressions/core/` through the same steps in `cargo test`.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use conduit::core::{Action, ConnCore, CoreConfig};
use conduit::protocol::native::{self, AuthStep, Hello};
use conduit::protocol::{auth, v1, DecoderLimits, FrameDecoder, ValueLimits};
use conduit::ConnectionId;
use libfuzzer_sys::fuzz_target;

const SERVER_NONCE: [u8; 32] = [3; 32];
const CLIENT_NONCE: [u8; 32] = [5; 32];
const AUTH_FRAME_BYTES: u32 = 4096;
const FRAME_BYTES: u32 = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let config = Arc::new(CoreConfig {
        password: "pw".into(),
        v1_password_hash: auth::v1_password_hash("pw"),
        server_name: "fuzz".into(),
        auth_timeout: Duration::from_secs(5),
        heartbeat_interval: Duration::from_secs(1),
        heartbeat_timeout: Duration::from_secs(3),
        value_limits: ValueLimits::default(),
        v1_limits: v1::V1Limits::default(),
    });
    let t0 = Instant::now();
    let mut core = ConnCore::new(
        config,
        ConnectionId::from_u64(1),
        SERVER_NONCE,
        "00".repeat(64),
        t0,
    );
    let mut stream = Vec::new();
    let hello = || {
        native::Encoder::new(0)
            .auth_step(&AuthStep::Hello(Hello {
                client_nonce: CLIENT_NONCE,
                client_name: "f".into(),
                client_version: "1".into(),
            }))
            .unwrap()
    };
    match mode & 3 {
        1 => stream.extend_from_slice(&v1::Encoder::new(0).auth_request(
            &auth::v1_password_hash("pw"),
            "f",
            "1",
        )),
        2 => {
            stream.extend_from_slice(&hello());
            let proof = auth::client_proof(b"pw", &SERVER_NONCE, &CLIENT_NONCE);
            stream.extend_from_slice(
                &native::Encoder::new(0)
                    .auth_step(&AuthStep::Proof(proof))
                    .unwrap(),
            );
        }
        3 => stream.extend_from_slice(&hello()),
        _ => {}
    }
    stream.extend_from_slice(rest);
    let mut dec = FrameDecoder::new(DecoderLimits {
        max_payload_bytes: AUTH_FRAME_BYTES,
        ..DecoderLimits::default()
    });
    let mut full_limit = false;
    let chunk = usize::from(mode >> 2).max(1);
    let mut now = t0;
    for c in stream.chunks(chunk) {
        dec.feed(c);
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => {
                    let limits = core.value_limits();
                    match core.on_frame(f, now) {
                        Action::Message { body, .. } | Action::Rpc { body, .. } => {
                            let _ = body.into_value(limits);
                        }
                        Action::Close { .. } | Action::Refuse { .. } => return,
                        _ => {}
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if let Some(codec) = dec.front_codec() {
                        core.note_codec(codec);
                    }
                    let _ = core.protocol_error(&e);
                    return;
                }
            }
            if !full_limit && core.is_authenticated() {
                dec.set_max_payload_bytes(FRAME_BYTES);
                full_limit = true;
            }
        }
        assert!(dec.buffer().capacity() <= dec.max_buffer_bytes());
        now += Duration::from_millis(250);
        let _ = core.on_tick(now);
    }
});
