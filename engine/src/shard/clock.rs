//! A shard's clock: the monotonic time and the wall-clock milliseconds frame headers
//! carry, from one clock read. The wall time is the monotonic time past an anchor
//! taken from the real wall clock on every heartbeat tick, so a request pays one
//! clock read instead of two (each a measurable share of an RPC's cost). The two
//! clocks advance together; a step of the wall clock (set by hand, or by a time
//! daemon) shows from the next tick, and a renewed anchor may read up to 1 ms behind
//! the derived time before it (frame timestamps are informational).

use std::cell::Cell;
use std::time::Instant;

use conduit_protocol::clock::wall_clock_ms;

/// One shard's clock (single-threaded: the shard's own).
pub(crate) struct ShardClock {
    /// The monotonic instant of the last anchor.
    at: Cell<Instant>,
    /// The wall clock, in milliseconds since the Unix epoch, at `at`.
    wall_ms: Cell<u64>,
}

impl ShardClock {
    /// A clock anchored now.
    pub fn new() -> ShardClock {
        ShardClock {
            at: Cell::new(Instant::now()),
            wall_ms: Cell::new(wall_clock_ms()),
        }
    }

    /// The monotonic time and the wall-clock milliseconds now, from one clock read.
    pub fn now(&self) -> (Instant, u64) {
        let now = Instant::now();
        let since_ms = now.saturating_duration_since(self.at.get()).as_millis();
        let wall = self
            .wall_ms
            .get()
            .saturating_add(u64::try_from(since_ms).unwrap_or(u64::MAX));
        (now, wall)
    }

    /// Anchors the clock to the real wall clock again (each heartbeat tick) and
    /// returns the time, as [`now`](Self::now) does.
    pub fn reanchor(&self) -> (Instant, u64) {
        let now = Instant::now();
        let wall = wall_clock_ms();
        self.at.set(now);
        self.wall_ms.set(wall);
        (now, wall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_time_follows_the_anchor() {
        let clock = ShardClock::new();
        let (t0, w0) = clock.now();
        let (t1, w1) = clock.now();
        assert!(
            t1 >= t0 && w1 >= w0,
            "the clock never goes back between anchors"
        );
        // A fresh anchor agrees with the real wall clock to the millisecond it read.
        let before = wall_clock_ms();
        let (_, w2) = clock.reanchor();
        let after = wall_clock_ms();
        assert!((before..=after).contains(&w2));
        // Derived readings stay within the real wall clock's bounds too.
        let before = wall_clock_ms();
        let (_, w3) = clock.now();
        let after = wall_clock_ms();
        assert!(
            w3 + 1 >= before && w3 <= after + 1,
            "{before} <= {w3} <= {after}"
        );
    }
}
