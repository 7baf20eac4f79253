//! [`Stats::publish`]: a snapshot written into the `metrics` facade, so any recorder
//! (Prometheus, StatsD, OpenTelemetry…) an application installs gets the server's
//! figures under stable names. Counters are set to their totals (`absolute`), levels
//! to their values: publishing twice, or from two places, never double-counts.

use ::metrics::{counter, describe_counter, describe_gauge, gauge, Unit};

use super::{AuthFailureKind, CloseKind, RefusalKind, Stats};

impl Stats {
    /// Writes these figures into the `metrics` recorder in scope (the global one, or
    /// one set with `metrics::with_local_recorder`). Call it periodically — say, before
    /// each export. Names and labels are listed in README ("Operations").
    ///
    /// RPC latency goes out as cumulative counters `conduit_rpc_duration_seconds_bucket`
    /// with an `le` label, plus `_sum` (a gauge, seconds) and `_count`: the shape
    /// Prometheus histograms have, which any backend can turn into quantiles. (Replaying
    /// them as facade histogram samples would cost a sample per call.)
    pub fn publish(&self) {
        self.publish_counts();
        self.publish_latency();
    }

    /// Everything but the latency histograms.
    pub(crate) fn publish_counts(&self) {
        gauge!("conduit_up").set(if self.running { 1.0 } else { 0.0 });
        gauge!("conduit_uptime_seconds").set(self.uptime.map_or(0.0, |d| d.as_secs_f64()));
        gauge!("conduit_rooms").set(self.rooms as f64);
        for s in &self.shards {
            let shard = s.index.to_string();
            for (codec, n, logins) in [
                ("v1", s.connections_v1, s.logins_v1),
                ("native", s.connections_native, s.logins_native),
            ] {
                let labels = [("shard", shard.clone()), ("codec", codec.to_owned())];
                gauge!("conduit_connections", &labels).set(n as f64);
                counter!("conduit_logins_total", &labels).absolute(logins);
            }
            let labels = [("shard", shard)];
            counter!("conduit_frames_received_total", &labels).absolute(s.frames_in);
            counter!("conduit_frames_sent_total", &labels).absolute(s.frames_out);
            counter!("conduit_bytes_received_total", &labels).absolute(s.bytes_in);
            counter!("conduit_bytes_sent_total", &labels).absolute(s.bytes_out);
            counter!("conduit_broadcast_deliveries_total", &labels).absolute(s.deliveries);
            gauge!("conduit_outbound_queued_bytes", &labels).set(s.outbound_bytes as f64);
        }
        for kind in AuthFailureKind::ALL {
            counter!("conduit_auth_failures_total", "reason" => kind.label())
                .absolute(self.auth_failures(kind));
        }
        for kind in RefusalKind::ALL {
            counter!("conduit_refused_total", "reason" => kind.label())
                .absolute(self.refused(kind));
        }
        for kind in CloseKind::ALL {
            counter!("conduit_closes_total", "reason" => kind.label()).absolute(self.closes(kind));
        }
        let sum = |f: fn(&super::ShardStats) -> u64| self.shards.iter().map(f).sum::<u64>();
        counter!("conduit_slow_consumer_frames_total").absolute(sum(|s| s.slow_consumer_frames));
        counter!("conduit_rate_limited_total").absolute(sum(|s| s.rate_limited));
        counter!("conduit_frames_not_sent_total").absolute(sum(|s| s.frames_not_sent));
        counter!("conduit_stale_results_total").absolute(sum(|s| s.stale_results));
        counter!("conduit_broadcasts_failed_total").absolute(self.broadcasts_failed);
        counter!("conduit_slow_consumer_disconnects_total")
            .absolute(self.closes(CloseKind::SlowConsumer));
        counter!("conduit_heartbeat_closes_total")
            .absolute(self.closes(CloseKind::HeartbeatTimeout));
        for m in &self.rpc {
            let labels = [("method", m.name.clone())];
            counter!("conduit_rpc_calls_total", &labels).absolute(m.calls);
            counter!("conduit_rpc_errors_total", &labels).absolute(m.errors);
        }
    }

    /// The latency histograms as cumulative bucket counters.
    fn publish_latency(&self) {
        for m in &self.rpc {
            for (le, cumulative) in m.latency.cumulative() {
                let labels = [("method", m.name.clone()), ("le", le)];
                counter!("conduit_rpc_duration_seconds_bucket", &labels).absolute(cumulative);
            }
            let labels = [("method", m.name.clone())];
            counter!("conduit_rpc_duration_seconds_count", &labels).absolute(m.latency.count());
            gauge!("conduit_rpc_duration_seconds_sum", &labels).set(m.latency.sum_ns as f64 / 1e9);
        }
    }
}

/// Describes every name [`Stats::publish`] writes to the recorder in scope (HELP lines
/// and units, for recorders that show them). Once per recorder is enough.
pub fn describe() {
    describe_gauge!("conduit_up", "1 while the server runs.");
    describe_gauge!(
        "conduit_uptime_seconds",
        Unit::Seconds,
        "Time since the run started."
    );
    describe_gauge!("conduit_rooms", "Rooms that have members.");
    describe_gauge!(
        "conduit_connections",
        "Logged-in connections, by shard and codec."
    );
    describe_counter!("conduit_logins_total", "Logins, by shard and codec.");
    describe_counter!(
        "conduit_frames_received_total",
        "Protocol frames decoded from peers, by shard."
    );
    describe_counter!(
        "conduit_frames_sent_total",
        "Frames handed to the kernel, by shard."
    );
    describe_counter!(
        "conduit_bytes_received_total",
        Unit::Bytes,
        "Bytes read from peers, by shard."
    );
    describe_counter!(
        "conduit_bytes_sent_total",
        Unit::Bytes,
        "Bytes of frames written to peers, by shard."
    );
    describe_counter!(
        "conduit_broadcast_deliveries_total",
        "Broadcast and room deliveries queued, by shard."
    );
    describe_gauge!(
        "conduit_outbound_queued_bytes",
        Unit::Bytes,
        "Outbound queues' bytes as charged against max_outbound_bytes, by shard."
    );
    describe_counter!("conduit_auth_failures_total", "Failed logins, by reason.");
    describe_counter!(
        "conduit_refused_total",
        "Connections refused at accept, by reason."
    );
    describe_counter!("conduit_closes_total", "Connections closed, by reason.");
    describe_counter!(
        "conduit_slow_consumer_disconnects_total",
        "Connections closed as slow consumers."
    );
    describe_counter!(
        "conduit_heartbeat_closes_total",
        "Connections closed for heartbeat timeout."
    );
    describe_counter!(
        "conduit_slow_consumer_frames_total",
        "Frames that found a full outbound queue."
    );
    describe_counter!(
        "conduit_rate_limited_total",
        "Calls and messages over inbound rate limits (counted at each close)."
    );
    describe_counter!(
        "conduit_frames_not_sent_total",
        "Frames not queued: closing, dropped, not encodable (counted at each close)."
    );
    describe_counter!(
        "conduit_stale_results_total",
        "Handler results for calls no longer waited on (counted at each close)."
    );
    describe_counter!(
        "conduit_broadcasts_failed_total",
        "Broadcasts refused before any delivery."
    );
    describe_counter!(
        "conduit_rpc_calls_total",
        "RPC calls answered, by method ((unknown): unregistered names)."
    );
    describe_counter!(
        "conduit_rpc_errors_total",
        "RPC calls answered with an error, by method."
    );
}

/// A bound in seconds as Prometheus writes `le` values (`0.00001`, `2.5`, `10`).
pub(crate) fn seconds_label(ns: u64) -> String {
    format!("{}", ns as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_print_as_plain_seconds() {
        assert_eq!(seconds_label(10_000), "0.00001");
        assert_eq!(seconds_label(2_500_000_000), "2.5");
        assert_eq!(seconds_label(10_000_000_000), "10");
    }
}
