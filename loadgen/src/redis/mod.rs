//! Redis 7 as a comparison peer (`suite --compare redis`): the client side — the
//! same scenarios are driven by the same load generator and measured the same way,
//! against a `redis-server` the suite starts itself.
//!
//! * [`resp`] — the Redis wire format: commands, and a bounded incremental reader of
//!   replies.
//! * [`server`] — the `redis-server` child process: found (never installed), started
//!   on a free loopback port with the suite's password, pinned, stopped.
//! * [`conn`] — one client connection: connect, `AUTH`, `SUBSCRIBE`, read replies.
//! * The suite's side — a Redis run of a plan, the side-by-side table against ours, and
//!   the targets relative to Redis — is the module `versus_redis`.
//!
//! The scenarios map as follows: `connect` opens connections that `AUTH` and
//! `SUBSCRIBE` (idle subscribers); `broadcast` single / rate / saturate has subscribers
//! as receivers and a connection that `PUBLISH`es the same 64-byte tick payload ours
//! broadcast ([`tick_payload`]); `rpc` is `ECHO` of a 64-byte payload, one in flight
//! per connection. The heartbeat has no counterpart (Redis has no server heartbeat).
//! The scenario runners are in the scenario module (`run_redis`), next to ours.

pub mod conn;
pub mod resp;
pub mod server;

use bytes::Bytes;
use conduit_protocol::{Codec, HEADER_LEN};

pub use self::conn::RedisConn;
pub use self::server::RedisServer;
use crate::payload::{self, Tick};
use crate::{Error, Result};

/// The channel the broadcast receivers subscribe to and the senders publish to.
pub const BENCH_CHANNEL: &[u8] = b"bench";

/// The name of Redis runs in reports and JSON (`target`).
pub use crate::target::REDIS_TARGET_NAME as TARGET_NAME;

/// Why the heartbeat scenarios have no Redis run.
pub const NO_HEARTBEAT: &str = "n/a: Redis has no server heartbeat";

/// What Redis runs report as their codec: the Redis protocol.
pub const CODEC_NAME: &str = "resp";

/// The payload of tick `t` with `pad` padding bytes: exactly what our v1 receivers
/// get as a `tick` frame's payload (`{"type": "tick", "data": {s, w, t, p}}` in
/// MessagePack; 64 bytes for the suite's pad), read back by [`payload::parse_tick`].
pub fn tick_payload(t: Tick, pad: usize) -> Result<Bytes> {
    let frame = payload::tick_frame(Codec::V1, t, pad, None)?;
    if frame.len() < HEADER_LEN {
        return Err(Error::Protocol(
            "a tick frame shorter than its header".into(),
        ));
    }
    Ok(frame.slice(HEADER_LEN..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_payload_is_ours_and_64_bytes() {
        let t = Tick {
            sender: 2,
            seq: 9_999,
            due_ns: 123_456_789,
        };
        let p = tick_payload(t, payload::pad_for_payload(64, None)).unwrap();
        assert_eq!(p.len(), 64);
        assert_eq!(payload::parse_tick(Codec::V1, &p).unwrap(), Some(t));
    }
}
