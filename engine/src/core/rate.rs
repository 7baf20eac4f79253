//! Inbound rate limits: two token buckets per connection (calls and messages, and
//! their payload bytes, per second, each holding at most one second's worth), refilled
//! from the time the glue passes in — no clock here, so they run in virtual time on the
//! in-memory pair.

use std::time::Instant;

use conduit_protocol::{Frame, FrameKind};

use super::{ConnCore, Event, PeerMisbehaved, RATE_LIMITED};
use crate::descriptor::RateLimitPolicy;

/// A connection's inbound limits (from the descriptor); `None` leaves that one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InboundRate {
    /// Frames per second after login.
    pub frames_per_s: Option<u32>,
    /// Payload bytes per second after login.
    pub bytes_per_s: Option<u64>,
}

impl InboundRate {
    /// Whether any limit is set.
    pub fn is_on(&self) -> bool {
        self.frames_per_s.is_some() || self.bytes_per_s.is_some()
    }
}

/// The buckets of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Buckets {
    frames: f64,
    bytes: f64,
    refilled: Instant,
}

impl Buckets {
    /// Full buckets at `now`.
    pub fn new(rate: &InboundRate, now: Instant) -> Buckets {
        Buckets {
            frames: rate.frames_per_s.map_or(0.0, f64::from),
            bytes: rate.bytes_per_s.map_or(0.0, |b| b as f64),
            refilled: now,
        }
    }

    /// Takes one frame of `bytes` payload bytes at `now`; `false` (nothing taken) when
    /// either bucket cannot pay.
    pub fn take(&mut self, rate: &InboundRate, now: Instant, bytes: usize) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = self.refilled.max(now);
        if let Some(f) = rate.frames_per_s {
            self.frames = (self.frames + elapsed * f64::from(f)).min(f64::from(f));
        }
        if let Some(b) = rate.bytes_per_s {
            self.bytes = (self.bytes + elapsed * b as f64).min(b as f64);
        }
        let frames_ok = rate.frames_per_s.is_none() || self.frames >= 1.0;
        let bytes_ok = rate.bytes_per_s.is_none() || self.bytes >= bytes as f64;
        if !(frames_ok && bytes_ok) {
            return false;
        }
        if rate.frames_per_s.is_some() {
            self.frames -= 1.0;
        }
        if rate.bytes_per_s.is_some() {
            self.bytes -= bytes as f64;
        }
        true
    }
}

impl ConnCore {
    /// Charges `frame` to the inbound buckets; `Some` when it is over them: closed, or
    /// (an RPC) answered with [`RATE_LIMITED`], or (anything else) dropped.
    pub(super) fn over_rate<'d>(
        &mut self,
        frame: &Frame<'d>,
        timestamp_ms: u64,
    ) -> Option<Option<Event<'d>>> {
        // Calls and messages count; control frames (ping, pong, close) do not, so a
        // limited client still keeps its heartbeat.
        if !matches!(
            frame.header.kind,
            FrameKind::Message | FrameKind::RpcRequest
        ) {
            return None;
        }
        let rate = self.config.inbound_rate;
        let buckets = self.buckets.as_mut()?;
        if buckets.take(&rate, self.now, frame.payload.len()) {
            return None;
        }
        self.counters.rate_limited += 1;
        Some(match self.config.rate_policy {
            RateLimitPolicy::Close => Some(Event::Close(
                self.misbehaved(PeerMisbehaved::RateLimited, timestamp_ms),
            )),
            RateLimitPolicy::Reject => match frame.header.kind {
                FrameKind::RpcRequest => {
                    let reply = self.encoder(timestamp_ms).rpc_failure(
                        frame.header.correlation_id,
                        RATE_LIMITED,
                        "rate limit exceeded",
                        None,
                    );
                    self.transmit(reply).map(Event::Close)
                }
                _ => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_second_holds_its_rate_and_refills_over_time() {
        let rate = InboundRate {
            frames_per_s: Some(10),
            bytes_per_s: Some(1000),
        };
        let t0 = Instant::now();
        let mut b = Buckets::new(&rate, t0);
        assert!((0..10).all(|_| b.take(&rate, t0, 10)));
        assert!(
            !b.take(&rate, t0, 10),
            "the eleventh frame in the same instant"
        );
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.take(&rate, t1, 10), "a tenth of a second buys one frame");
        assert!(!b.take(&rate, t1, 10));
        // Bytes: a frame larger than what is left waits, even with frames to spare.
        let t2 = t1 + Duration::from_secs(5);
        assert!(b.take(&rate, t2, 900));
        assert!(!b.take(&rate, t2, 200));
        assert!(b.take(&rate, t2, 100));
    }
}
