//! [`Stats`]: a snapshot of a server's figures, summed over its shards when asked.

use std::time::Duration;

use super::shard::{ShardMetrics, BUCKETS, LATENCY_BOUNDS_NS};
use super::{AuthFailureKind, CloseKind, Metrics, RefusalKind};
use super::{AUTH_FAILURE_KINDS, CLOSE_KINDS, REFUSAL_KINDS};

/// A server's figures at one moment: what `GET /metrics` serves, for applications that
/// report elsewhere. Counters count from the server's first start (they survive a
/// stop and restart); levels are as of the snapshot. Each shard's figures are read
/// without stopping it, so figures of different shards may be microseconds apart.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Whether the server is running.
    pub running: bool,
    /// Since the current run started.
    pub uptime: Option<Duration>,
    /// Logged-in connections (all shards, both codecs).
    pub connections: u64,
    /// Rooms that have members.
    pub rooms: u64,
    /// Broadcasts refused before any delivery (a name too long, a payload that does
    /// not encode).
    pub broadcasts_failed: u64,
    /// Per shard, in index order.
    pub shards: Vec<ShardStats>,
    /// Per RPC method: every registered one in registration order, then `listall`, then
    /// `(unknown)` — every call to an unregistered name.
    pub rpc: Vec<MethodStats>,
}

impl Stats {
    /// A sum over the shards.
    fn sum(&self, f: impl Fn(&ShardStats) -> u64) -> u64 {
        self.shards.iter().map(f).sum()
    }

    /// Protocol frames decoded from peers.
    pub fn frames_in(&self) -> u64 {
        self.sum(|s| s.frames_in)
    }
    /// Frames handed to the kernel.
    pub fn frames_out(&self) -> u64 {
        self.sum(|s| s.frames_out)
    }
    /// Bytes read from peers.
    pub fn bytes_in(&self) -> u64 {
        self.sum(|s| s.bytes_in)
    }
    /// Bytes written to peers.
    pub fn bytes_out(&self) -> u64 {
        self.sum(|s| s.bytes_out)
    }
    /// Broadcast and room deliveries queued.
    pub fn deliveries(&self) -> u64 {
        self.sum(|s| s.deliveries)
    }
    /// Logins.
    pub fn logins(&self) -> u64 {
        self.sum(|s| s.logins_v1 + s.logins_native)
    }
    /// Failed logins of one kind.
    pub fn auth_failures(&self, kind: AuthFailureKind) -> u64 {
        self.sum(|s| s.auth_failures[kind as usize])
    }
    /// Connections refused at accept for one reason.
    pub fn refused(&self, kind: RefusalKind) -> u64 {
        self.sum(|s| s.refused[kind as usize])
    }
    /// Connections closed for one reason.
    pub fn closes(&self, kind: CloseKind) -> u64 {
        self.sum(|s| s.closes.get(kind))
    }
    /// What the outbound queues hold, as charged against `max_outbound_bytes`.
    pub fn outbound_bytes(&self) -> u64 {
        self.sum(|s| s.outbound_bytes)
    }
    /// One method's figures, by name (`"listall"`, `"(unknown)"` for the built-in and
    /// unregistered names).
    pub fn method(&self, name: &str) -> Option<&MethodStats> {
        self.rpc.iter().find(|m| m.name == name)
    }
}

/// One shard's figures.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ShardStats {
    /// Its index.
    pub index: usize,
    /// Logged-in connections speaking netconduit's MessagePack codec (v1).
    pub connections_v1: u64,
    /// Logged-in connections speaking the native codec.
    pub connections_native: u64,
    /// Logins in the v1 codec.
    pub logins_v1: u64,
    /// Logins in the native codec.
    pub logins_native: u64,
    /// Protocol frames decoded from peers.
    pub frames_in: u64,
    /// Frames handed to the kernel.
    pub frames_out: u64,
    /// Bytes read from peers (TLS: decrypted; WebSocket: with its framing).
    pub bytes_in: u64,
    /// Bytes written to peers, as frames (before TLS or WebSocket framing).
    pub bytes_out: u64,
    /// Broadcast and room deliveries queued to its connections.
    pub deliveries: u64,
    /// What its connections' outbound queues hold, as charged against
    /// `max_outbound_bytes` (queued and being written), as of the shard's last
    /// heartbeat tick (at most a second old).
    pub outbound_bytes: u64,
    /// Frames that found a full outbound queue (dropped, or their connection closed).
    pub slow_consumer_frames: u64,
    /// Calls and messages over connections' inbound rate limits (counted as each
    /// connection closes).
    pub rate_limited: u64,
    /// Frames the cores did not queue: closing, dropped by policy, not encodable
    /// (counted as each connection closes).
    pub frames_not_sent: u64,
    /// Handler results for calls their connection no longer waited on (counted as
    /// each connection closes).
    pub stale_results: u64,
    /// Connections closed, by reason.
    pub closes: CloseCounts,
    /// Failed logins, by [`AuthFailureKind`] (index = kind as usize).
    pub auth_failures: [u64; AUTH_FAILURE_KINDS],
    /// Connections refused at accept, by [`RefusalKind`] (index = kind as usize).
    pub refused: [u64; REFUSAL_KINDS],
}

impl ShardStats {
    /// Logged-in connections, both codecs.
    pub fn connections(&self) -> u64 {
        self.connections_v1 + self.connections_native
    }
}

/// Connections closed, by [`CloseKind`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloseCounts([u64; CLOSE_KINDS]);

impl CloseCounts {
    /// Closes of one kind.
    pub fn get(&self, kind: CloseKind) -> u64 {
        self.0[kind as usize]
    }

    /// Every kind with its count, in label order.
    pub fn iter(&self) -> impl Iterator<Item = (CloseKind, u64)> + '_ {
        CloseKind::ALL.iter().map(|&k| (k, self.0[k as usize]))
    }
}

/// One RPC method's figures.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct MethodStats {
    /// The method's name (`listall`, or `(unknown)` for every unregistered name).
    pub name: String,
    /// Calls answered.
    pub calls: u64,
    /// Calls answered with an error.
    pub errors: u64,
    /// Time from the request's read to its result, for calls a handler ran (the
    /// built-in `listall` and unknown names are answered by the protocol core and have
    /// none).
    pub latency: LatencyHistogram,
}

/// A latency histogram with the fixed bounds [`LATENCY_BOUNDS_NS`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Calls per bucket (not cumulative): one per bound, then the overflow.
    pub counts: [u64; BUCKETS],
    /// Total time of every call counted, in nanoseconds.
    pub sum_ns: u64,
    /// Total time per bucket, in nanoseconds.
    pub(crate) sums_ns: [u64; BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: [0; BUCKETS],
            sum_ns: 0,
            sums_ns: [0; BUCKETS],
        }
    }
}

impl LatencyHistogram {
    /// Calls counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Mean latency, if anything was counted.
    pub fn mean(&self) -> Option<Duration> {
        let n = self.count();
        (n > 0).then(|| Duration::from_nanos(self.sum_ns / n))
    }

    /// Each bucket as Prometheus writes it: its `le` label (seconds, `+Inf` last) and
    /// the calls at or under it (cumulative).
    pub fn cumulative(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        let mut total = 0;
        self.counts.iter().enumerate().map(move |(i, c)| {
            total += c;
            let le = LATENCY_BOUNDS_NS.get(i).map_or_else(
                || "+Inf".to_owned(),
                |&ns| super::publish::seconds_label(ns),
            );
            (le, total)
        })
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1): the latency at most
    /// that share of calls stayed within, to the buckets' resolution. `None` when empty
    /// or when it falls in the overflow bucket (over 10 s).
    pub fn quantile_bound(&self, q: f64) -> Option<Duration> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return LATENCY_BOUNDS_NS.get(i).map(|&ns| Duration::from_nanos(ns));
            }
        }
        None
    }
}

impl Metrics {
    /// Reads every shard's counters now.
    pub(crate) fn snapshot(&self) -> (Vec<ShardStats>, Vec<MethodStats>) {
        let shards = self
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| shard_stats(i, s))
            .collect();
        let names = self
            .methods
            .iter()
            .map(String::as_str)
            .chain(["listall", "(unknown)"]);
        let rpc = names
            .enumerate()
            .map(|(slot, name)| {
                let mut m = MethodStats {
                    name: name.to_owned(),
                    ..MethodStats::default()
                };
                for s in &self.shards {
                    let t = &s.methods[slot];
                    m.calls += t.calls.get();
                    m.errors += t.errors.get();
                    for b in 0..BUCKETS {
                        let (c, ns) = (t.counts[b].get(), t.sums_ns[b].get());
                        m.latency.counts[b] += c;
                        m.latency.sums_ns[b] += ns;
                        m.latency.sum_ns += ns;
                    }
                }
                m
            })
            .collect();
        (shards, rpc)
    }
}

fn shard_stats(index: usize, s: &ShardMetrics) -> ShardStats {
    let mut closes = [0; CLOSE_KINDS];
    for (c, t) in closes.iter_mut().zip(&s.closes) {
        *c = t.get();
    }
    let mut auth_failures = [0; AUTH_FAILURE_KINDS];
    for (c, t) in auth_failures.iter_mut().zip(&s.auth_failures) {
        *c = t.get();
    }
    let mut refused = [0; REFUSAL_KINDS];
    for (c, t) in refused.iter_mut().zip(&s.refusals) {
        *c = t.get();
    }
    ShardStats {
        index,
        connections_v1: s.connections[0].get(),
        connections_native: s.connections[1].get(),
        logins_v1: s.logins[0].get(),
        logins_native: s.logins[1].get(),
        frames_in: s.frames_in.get(),
        frames_out: s.frames_out.get(),
        bytes_in: s.bytes_in.get(),
        bytes_out: s.bytes_out.get(),
        deliveries: s.deliveries.get(),
        outbound_bytes: s.outbound_bytes.get(),
        slow_consumer_frames: s.slow_consumer_frames.get(),
        rate_limited: s.rate_limited.get(),
        frames_not_sent: s.frames_not_sent.get(),
        stale_results: s.stale_results.get(),
        closes: CloseCounts(closes),
        auth_failures,
        refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_the_bound_of_the_bucket_that_reaches_the_rank() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile_bound(0.5), None);
        h.counts[0] = 90; // ≤ 10 µs
        h.counts[6] = 9; // ≤ 1 ms
        h.counts[BUCKETS - 1] = 1; // > 10 s
        assert_eq!(h.quantile_bound(0.5), Some(Duration::from_micros(10)));
        assert_eq!(h.quantile_bound(0.9), Some(Duration::from_micros(10)));
        assert_eq!(h.quantile_bound(0.95), Some(Duration::from_millis(1)));
        assert_eq!(h.quantile_bound(1.0), None, "overflow has no bound");
    }

    #[test]
    fn a_snapshot_sums_methods_over_shards_and_names_the_extra_slots() {
        let m = Metrics::new(2, vec!["add".into()]);
        m.shards[0].method(0).record(20_000, true);
        m.shards[1].method(0).record(30_000, false);
        m.shards[1].unknown().answered(false);
        m.shards[0].frames_in.add(3);
        let (shards, rpc) = m.snapshot();
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0].frames_in, 3);
        let names: Vec<_> = rpc.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["add", "listall", "(unknown)"]);
        assert_eq!(rpc[0].calls, 2);
        assert_eq!(rpc[0].errors, 1);
        assert_eq!(rpc[0].latency.count(), 2);
        assert_eq!(rpc[0].latency.sum_ns, 50_000);
        assert_eq!(rpc[2].errors, 1);
    }
}
