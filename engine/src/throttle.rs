//! Warnings that repeat — an accept error on every retry, a slow consumer per
//! connection under load, a peer breaking the protocol per connection under attack —
//! written at most once per interval each, with how many like it were held back, so a
//! log stays readable and cheap whatever happens at 10,000 connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often one kind of repeated warning is written.
pub(crate) const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// One kind of repeated warning: a `static` per call site, or a field per owner.
/// Lock-free: threads that lose the race to write simply count themselves held back.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    /// When the last warning was written, in ms since [`epoch`] plus one (0: never).
    last_ms: AtomicU64,
    /// Warnings held back since.
    held: AtomicU64,
}

/// The process's reference instant for [`Throttle`]s.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Throttle {
    /// A throttle that has written nothing yet.
    pub const fn new() -> Throttle {
        Throttle {
            last_ms: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// Whether a warning may be written now: `Some(n)` with the `n` held back since the
    /// last one, or `None` (and it is counted as held back).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(epoch().elapsed().as_millis() as u64 + 1)
    }

    /// [`admit`](Self::admit) at `now` (ms since the epoch, plus one).
    fn admit_at(&self, now: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        let interval = WARN_INTERVAL.as_millis() as u64;
        if last != 0 && now.saturating_sub(last) < interval {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self
            .last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            // Another thread is writing this warning now.
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.held.swap(0, Ordering::Relaxed))
    }

    /// Writes `what()` as a warning unless one was written within the interval; the
    /// text is only built when written.
    pub fn warn(&self, what: impl FnOnce() -> String) {
        match self.admit() {
            Some(0) => tracing::warn!("{}", what()),
            Some(held) => tracing::warn!(suppressed = held, "{} ({held} more like it)", what()),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_warning_passes_and_repeats_within_the_interval_are_counted() {
        let t = Throttle::new();
        let ms = WARN_INTERVAL.as_millis() as u64;
        assert_eq!(t.admit_at(1), Some(0));
        assert_eq!(t.admit_at(2), None);
        assert_eq!(t.admit_at(ms), None);
        assert_eq!(t.held.load(Ordering::Relaxed), 2);
        assert_eq!(
            t.admit_at(ms + 1),
            Some(2),
            "after the interval, the next one says how many were held back"
        );
        assert_eq!(t.admit_at(ms + 2), None);
    }
}
