//! One shard's counters: written only by the shard's own thread (see [`Tally`]), read
//! by the exporter and `Server::stats` from any thread. Padded to their own cache lines
//! so two shards never write the same line.

use conduit_protocol::Codec;

use super::tally::{Level, Tally};
use super::{
    AuthFailureKind, CloseKind, RefusalKind, AUTH_FAILURE_KINDS, CLOSE_KINDS, REFUSAL_KINDS,
};

/// Upper bounds of the RPC latency buckets, in nanoseconds (10 µs to 10 s, roughly
/// 1-2.5-5 per decade); one more bucket counts everything slower.
pub const LATENCY_BOUNDS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Buckets of a latency histogram: one per bound and the overflow.
pub(crate) const BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;

/// The bucket a latency of `ns` falls in (bounds are inclusive, as Prometheus's `le`).
#[inline]
pub(crate) fn bucket_of(ns: u64) -> usize {
    LATENCY_BOUNDS_NS.partition_point(|&b| b < ns)
}

/// One RPC method's counts on one shard.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct MethodTally {
    /// Calls answered (successes and errors).
    pub calls: Tally,
    /// Calls answered with an error.
    pub errors: Tally,
    /// Calls per latency bucket.
    pub counts: [Tally; BUCKETS],
    /// Nanoseconds spent per latency bucket: the histogram's sum stays exact, and a
    /// bucket's mean is known when replaying it into another histogram.
    pub sums_ns: [Tally; BUCKETS],
}

impl MethodTally {
    /// Records a call that took `ns` nanoseconds.
    #[inline]
    pub fn record(&self, ns: u64, ok: bool) {
        self.calls.inc();
        if !ok {
            self.errors.inc();
        }
        let b = bucket_of(ns);
        self.counts[b].inc();
        self.sums_ns[b].add(ns);
    }

    /// Records a call the core answered itself (no handler ran, no latency measured).
    #[inline]
    pub fn answered(&self, ok: bool) {
        self.calls.inc();
        if !ok {
            self.errors.inc();
        }
    }
}

/// Where a codec's connections are counted.
pub(crate) fn codec_slot(codec: Codec) -> usize {
    match codec {
        Codec::V1 => 0,
        _ => 1,
    }
}

/// The counters of one shard.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct ShardMetrics {
    /// Protocol frames decoded from peers.
    pub frames_in: Tally,
    /// Bytes read from peers (TLS: decrypted; WebSocket: with its framing).
    pub bytes_in: Tally,
    /// Frames the writers handed to the kernel.
    pub frames_out: Tally,
    /// Bytes of those frames.
    pub bytes_out: Tally,
    /// Broadcast and room deliveries queued to this shard's connections.
    pub deliveries: Tally,
    /// Logged-in connections, by codec (`codec_slot`).
    pub connections: [Level; 2],
    /// Logins, by codec.
    pub logins: [Tally; 2],
    /// What this shard's connections' outbound queues hold, as charged against
    /// `max_outbound_bytes` (queued and being written), as of its last heartbeat tick
    /// (at most a second old).
    pub outbound_bytes: Level,
    /// Frames that found a full outbound queue (dropped, or their connection closed).
    pub slow_consumer_frames: Tally,
    /// Calls and messages over connections' inbound rate limits; added when each
    /// connection closes (its core counts them).
    pub rate_limited: Tally,
    /// Frames the cores did not queue (closing, dropped by policy, not encodable);
    /// added at each close.
    pub frames_not_sent: Tally,
    /// Handler results for calls their connection no longer waited on; added at each
    /// close.
    pub stale_results: Tally,
    /// Connections closed, by [`CloseKind`].
    pub closes: [Tally; CLOSE_KINDS],
    /// Failed logins, by [`AuthFailureKind`](super::AuthFailureKind).
    pub auth_failures: [Tally; AUTH_FAILURE_KINDS],
    /// Connections refused at accept, by [`RefusalKind`].
    pub refusals: [Tally; REFUSAL_KINDS],
    /// Per RPC method: the registered ones in registration order, then `listall`, then
    /// every unregistered name under one slot (so a peer cannot grow the label set).
    pub methods: Box<[MethodTally]>,
}

impl ShardMetrics {
    /// Counters for a shard of a server with `methods` registered RPC methods.
    pub fn new(methods: usize) -> ShardMetrics {
        ShardMetrics {
            frames_in: Tally::default(),
            bytes_in: Tally::default(),
            frames_out: Tally::default(),
            bytes_out: Tally::default(),
            deliveries: Tally::default(),
            connections: Default::default(),
            logins: Default::default(),
            outbound_bytes: Level::default(),
            slow_consumer_frames: Tally::default(),
            rate_limited: Tally::default(),
            frames_not_sent: Tally::default(),
            stale_results: Tally::default(),
            closes: Default::default(),
            auth_failures: Default::default(),
            refusals: Default::default(),
            methods: (0..methods + 2).map(|_| MethodTally::default()).collect(),
        }
    }

    /// The slot of `listall`.
    pub fn listall(&self) -> &MethodTally {
        &self.methods[self.methods.len() - 2]
    }

    /// The slot every unregistered method name is counted in.
    pub fn unknown(&self) -> &MethodTally {
        &self.methods[self.methods.len() - 1]
    }

    /// A registered method's slot (its index in registration order).
    #[inline]
    pub fn method(&self, slot: u32) -> &MethodTally {
        let last = self.methods.len() - 1;
        &self.methods[(slot as usize).min(last)]
    }

    /// Counts a connection's close, and the failed login it was, if it was one.
    pub fn closed(&self, kind: CloseKind, failed_login: Option<AuthFailureKind>) {
        self.closes[kind as usize].inc();
        if let Some(f) = failed_login {
            self.auth_failures[f as usize].inc();
        }
    }

    /// Counts a connection refused at accept.
    pub fn refused(&self, kind: RefusalKind) {
        self.refusals[kind as usize].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_the_bucket_whose_bound_covers_them() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(10_000), 0, "bounds are inclusive");
        assert_eq!(bucket_of(10_001), 1);
        assert_eq!(bucket_of(1_000_000), 6);
        assert_eq!(bucket_of(10_000_000_000), BUCKETS - 2);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1, "overflow bucket");
    }

    #[test]
    fn method_slots_past_the_registered_ones_fall_to_unknown() {
        let m = ShardMetrics::new(2);
        m.method(0).record(5_000, true);
        m.method(7).answered(false);
        m.unknown().answered(false);
        m.listall().answered(true);
        assert_eq!(m.method(0).calls.get(), 1);
        assert_eq!(m.method(0).counts[0].get(), 1);
        assert_eq!(m.method(0).sums_ns[0].get(), 5_000);
        assert_eq!(m.unknown().calls.get(), 2);
        assert_eq!(m.unknown().errors.get(), 2);
        assert_eq!(m.listall().calls.get(), 1);
    }
}
