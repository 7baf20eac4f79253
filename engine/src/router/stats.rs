//! Counters shared by every shard, touched per connection event, never per message; and
//! the gauges behind `max_connections` and the connection count, whose units are held
//! as [`Permit`]s released on drop — so no path that ends a connection (a close, a
//! panic, a shard exiting with tasks still pending) can forget to give one back.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// A count of things held, each held as a [`Permit`].
#[derive(Debug, Default, Clone)]
pub(crate) struct Gauge(Arc<AtomicUsize>);

impl Gauge {
    /// How many are held.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// One more, whatever the count.
    pub fn acquire(&self) -> Permit {
        self.0.fetch_add(1, Ordering::AcqRel);
        Permit(self.0.clone())
    }

    /// One more if fewer than `max` are held.
    pub fn try_acquire(&self, max: usize) -> Option<Permit> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(self.0.clone()))
    }
}

/// One unit of a [`Gauge`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        let before = self.0.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "a gauge went below zero");
    }
}

/// Counters and gauges of one server.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Logged-in connections.
    pub connections: Gauge,
    /// Accepted connections holding a `max_connections` slot.
    pub slots: Gauge,
    /// Connections being refused right now (`max_refusals_in_flight`).
    pub refusing: Gauge,
    /// Connections refused for `max_connections`, ever.
    pub refused: AtomicU64,
    /// Failed logins, ever.
    pub auth_failures: AtomicU64,
    /// Frames that found a full outbound queue, ever.
    pub slow_consumers: AtomicU64,
    /// Frames the cores did not send (closing connections, policy drops, encoding
    /// failures) and broadcasts no peer could receive, ever.
    pub frames_not_sent: AtomicU64,
    /// Handler results for calls their connection no longer waited on, ever.
    pub stale_results: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_come_back_on_drop_and_respect_the_limit() {
        let g = Gauge::default();
        let a = g.try_acquire(2);
        let b = g.try_acquire(2);
        assert!(a.is_some() && b.is_some());
        assert!(g.try_acquire(2).is_none());
        assert_eq!(g.get(), 2);
        drop(a);
        assert_eq!(g.get(), 1);
        let c = g.acquire();
        drop((b, c));
        assert_eq!(g.get(), 0);
    }
}
