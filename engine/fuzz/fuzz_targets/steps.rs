//! The steps of the connection-core fuzz target, shared by `core.rs` and by
//! `engine/tests/fuzz_regressions.rs`, which replays `fuzz/regressions/core/` through
//! them in every `cargo test`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use conduit::core::{Action, ConnCore, CoreConfig};
use conduit::protocol::native::{self, AuthStep, Hello};
use conduit::protocol::{auth, v1, DecoderLimits, FrameDecoder, ValueLimits};
use conduit::ConnectionId;

const SERVER_NONCE: [u8; 32] = [3; 32];
const CLIENT_NONCE: [u8; 32] = [5; 32];
const AUTH_FRAME_BYTES: u32 = 4096;
const FRAME_BYTES: u32 = 64 * 1024;

/// Arbitrary byte streams (split at arbitrary read sizes) and ticks through the
/// connection core, before and after a login.
pub fn core(data: &[u8]) {
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
}
