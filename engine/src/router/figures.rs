//! What the router reports of the shards' counters: the [`Stats`](crate::metrics::Stats)
//! snapshot, and where the Prometheus exporter listens.

use std::net::SocketAddr;
use std::sync::Arc;

use super::Router;

impl Router {
    /// The counters a run with `shards` shards and these RPC methods counts into: the
    /// previous run's when it had the same shape, so counters keep growing.
    pub(crate) fn metrics_for(
        &self,
        shards: usize,
        methods: &[String],
    ) -> Arc<crate::metrics::Metrics> {
        let mut slot = match self.inner.metrics.write() {
            Ok(slot) => slot,
            Err(p) => p.into_inner(),
        };
        match &*slot {
            Some(m) if m.fits(shards, methods) => m.clone(),
            _ => {
                let m = Arc::new(crate::metrics::Metrics::new(shards, methods.to_vec()));
                *slot = Some(m.clone());
                m
            }
        }
    }

    /// The server's figures now: connections per shard and codec, logins and failed
    /// logins, frames and bytes, deliveries, queued bytes, closes by reason, rooms, and
    /// RPC calls, errors and latency per method. What the Prometheus exporter serves;
    /// all zero before the first start. Reads each shard's counters without stopping
    /// it (microseconds per shard).
    pub fn stats(&self) -> crate::metrics::Stats {
        let metrics = self.inner.metrics.read().ok().and_then(|m| m.clone());
        let (shards, rpc) = metrics.map(|m| m.snapshot()).unwrap_or_default();
        let run = self.inner.run.read().ok().and_then(|r| r.clone());
        crate::metrics::Stats {
            running: self.is_running(),
            uptime: self.uptime(),
            connections: self.connection_count() as u64,
            rooms: run.map_or(0, |r| r.rooms.count() as u64),
            broadcasts_failed: self
                .counts()
                .broadcasts_failed
                .load(std::sync::atomic::Ordering::Relaxed),
            shards,
            rpc,
        }
    }

    /// Where the Prometheus exporter listens (the real port when 0 was asked), while
    /// the server runs with `metrics_addr` set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.run_state()
            .and_then(|rt| rt.metrics_addr.get().copied())
    }
}
