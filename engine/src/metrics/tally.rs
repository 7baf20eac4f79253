//! Counters with one writer: the shard that owns them. Each is an atomic only so that
//! another thread (the exporter, `Server::stats`) may read it; the owner adds with a
//! plain load and store — no locked instruction, no cache line bouncing between
//! shards — so counting per frame costs about what a `Cell` would.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A count that only grows, written by one thread, read by any.
#[derive(Debug, Default)]
pub(crate) struct Tally(AtomicU64);

impl Tally {
    /// Adds `n`. Only the owning thread calls this: two writers would lose counts.
    #[inline]
    pub fn add(&self, n: u64) {
        // Relaxed load + store, not `fetch_add`: one writer, so nothing is lost, and
        // readers see some recent value (never a torn one).
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A level that goes up and down (connections, queued bytes), written by one thread.
#[derive(Debug, Default)]
pub(crate) struct Level(AtomicI64);

impl Level {
    /// Moves the level by `delta`. Only the owning thread calls this.
    #[inline]
    pub fn shift(&self, delta: i64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(delta),
            Ordering::Relaxed,
        );
    }

    /// Sets the level (a level its owner recomputes rather than tracks).
    pub fn set(&self, v: u64) {
        self.0.store(v as i64, Ordering::Relaxed);
    }

    /// The level now; never below zero as read (a reader may see a moment where a
    /// decrease landed before its increase was visible, which cannot happen with one
    /// writer, but the clamp keeps a gauge sane whatever a future writer does).
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed).max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_add_and_levels_move_both_ways() {
        let t = Tally::default();
        t.inc();
        t.add(41);
        assert_eq!(t.get(), 42);
        let l = Level::default();
        l.shift(10);
        l.shift(-3);
        assert_eq!(l.get(), 7);
        l.shift(-7);
        assert_eq!(l.get(), 0);
    }
}
