//! The sans-I/O connection core fed arbitrary byte streams (split at arbitrary read
//! sizes) and ticks: it must never panic, whatever arrives before or after login.
//! The first byte picks whether a valid v1 login is prepended, so the fuzzer reaches
//! the post-auth states too.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use conduit::core::{ConnCore, CoreConfig};
use conduit::protocol::{auth, v1, DecoderLimits, FrameDecoder, ValueLimits};
use conduit::ConnectionId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
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
    let mut core = ConnCore::new(config, ConnectionId::from_u64(1), [3; 32], "00".repeat(64), t0);
    let mut stream = Vec::new();
    if mode & 1 == 1 {
        stream.extend_from_slice(&v1::Encoder::new(0).auth_request(&auth::v1_password_hash("pw"), "f", "1"));
    }
    stream.extend_from_slice(rest);
    let mut dec = FrameDecoder::new(DecoderLimits { max_payload_bytes: 64 * 1024, ..DecoderLimits::default() });
    let chunk = usize::from(mode >> 1).max(1);
    let mut now = t0;
    for c in stream.chunks(chunk) {
        dec.feed(c);
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => {
                    let _ = core.on_frame(f, now);
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = core.protocol_error(&e);
                    return;
                }
            }
        }
        now += Duration::from_millis(250);
        let _ = core.on_tick(now);
    }
});
