//! Counters shared by every shard, touched per connection event, never per message; and
//! the gauges behind `max_connections` and the connection count, whose units are held
//! as [`Permit`]s released on drop — so no path that ends a connection (a close, a
//! panic, a shard exiting with tasks still pending) can forget to give one back.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ahash::AHashMap;

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

/// Where a connection comes from, for per-source budgets: an IPv4 address, or the /64
/// prefix of an IPv6 one (a single host commonly holds a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SourceKey {
    V4(u32),
    V6Prefix(u64),
}

impl SourceKey {
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip {
            IpAddr::V4(v4) => SourceKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey::V4(u32::from(v4)),
                None => SourceKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Unauthenticated connections per source, each held as a [`SourcePermit`].
#[derive(Debug, Default)]
pub(crate) struct Sources(Mutex<AHashMap<SourceKey, usize>>);

impl Sources {
    /// One more from `key` if fewer than `max` are held.
    pub fn try_acquire(self: &Arc<Self>, key: SourceKey, max: usize) -> Option<SourcePermit> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key).or_insert(0);
        if *n >= max {
            if *n == 0 {
                map.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(SourcePermit {
            sources: self.clone(),
            key,
        })
    }

    /// How many are held from `key`.
    #[cfg(test)]
    pub fn held(&self, key: SourceKey) -> usize {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key).copied().unwrap_or(0)
    }
}

/// One unauthenticated connection from a source, given back when dropped (at login or
/// close); a source with none left is forgotten, so the table holds only live ones.
#[derive(Debug)]
pub(crate) struct SourcePermit {
    sources: Arc<Sources>,
    key: SourceKey,
}

impl Drop for SourcePermit {
    fn drop(&mut self) {
        let mut map = self.sources.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// How long a source's failed logins are remembered without a new one.
pub(crate) const AUTH_FAILURE_MEMORY: std::time::Duration = std::time::Duration::from_secs(600);

/// Most sources whose failed logins are remembered at once.
pub(crate) const MAX_FAILING_SOURCES: usize = 65_536;

/// Entries looked at to choose one to forget when the table is full.
const EVICTION_SAMPLE: usize = 64;

/// Failed logins per source, and how long each source is kept out: after
/// `free_failures` failures, every further one doubles its wait (from `base` up to
/// `max`); a source quiet for `forget_after` starts afresh. At most `max_sources`
/// sources are remembered (the stalest forgotten first), so a spread-out attacker
/// cannot grow the table without bound.
#[derive(Debug, Default)]
pub(crate) struct AuthFailures(Mutex<AHashMap<SourceKey, FailState>>);

/// One source's failed logins.
#[derive(Debug, Clone, Copy)]
struct FailState {
    failures: u32,
    last: std::time::Instant,
    blocked_until: std::time::Instant,
}

/// The failed-login budget (from the descriptor).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FailBudget {
    pub free_failures: u32,
    pub base: std::time::Duration,
    pub max: std::time::Duration,
    pub forget_after: std::time::Duration,
    pub max_sources: usize,
}

impl AuthFailures {
    /// Until when `key` is kept out, if it is now.
    pub fn blocked(&self, key: SourceKey, now: std::time::Instant) -> Option<std::time::Instant> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key)
            .map(|s| s.blocked_until)
            .filter(|&until| until > now)
    }

    /// Records a failed login from `key`.
    pub fn failed(&self, key: SourceKey, now: std::time::Instant, b: &FailBudget) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(&key) && map.len() >= b.max_sources {
            // Make room by forgetting one source: among a bounded sample, one no longer
            // kept out, else the stalest — never a scan of the whole table under the
            // lock every accept takes.
            let victim = map
                .iter()
                .take(EVICTION_SAMPLE)
                .min_by_key(|(_, s)| (s.blocked_until > now, s.last))
                .map(|(k, _)| *k);
            if let Some(victim) = victim {
                map.remove(&victim);
            }
        }
        let s = map.entry(key).or_insert(FailState {
            failures: 0,
            last: now,
            blocked_until: now,
        });
        if now.duration_since(s.last) > b.forget_after {
            s.failures = 0;
        }
        s.failures = s.failures.saturating_add(1);
        s.last = now;
        if s.failures > b.free_failures {
            let doublings = (s.failures - b.free_failures - 1).min(30);
            let wait = b.base.saturating_mul(1 << doublings).min(b.max);
            // A huge setting ("forever") saturates instead of overflowing.
            s.blocked_until = now
                .checked_add(wait)
                .unwrap_or_else(|| now + std::time::Duration::from_secs(100 * 365 * 86_400));
        }
    }

    /// A successful login from `key`: its failures are forgotten.
    pub fn succeeded(&self, key: SourceKey) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&key);
    }
}

/// What an accepted connection holds while it has not logged in: its place among all
/// unauthenticated connections and among those from its source. Given back at login.
#[derive(Debug)]
pub(crate) struct Pending {
    _total: Permit,
    _source: SourcePermit,
}

/// What an admitted connection holds from accept on.
#[derive(Debug)]
pub(crate) struct Admission {
    /// The peer's address, read once at accept (the budgets are per address); behind a
    /// trusted proxy, the client address its PROXY header gave.
    pub peer: std::net::SocketAddr,
    /// Its `max_connections` slot, until it closes.
    pub slot: Permit,
    /// Its unauthenticated budgets, until it logs in (or closes).
    pub pending: Pending,
    /// Bytes it sent that were read before it was served: those after a PROXY header
    /// in the same read (at most a v1 header's 107 bytes), its decoder's first input.
    /// Empty for every connection not from a trusted proxy.
    pub first_bytes: Vec<u8>,
    /// The listener it came through (its first bytes are an upgrade request on the
    /// WebSocket one).
    pub transport: crate::ws::Transport,
}

/// Why an accepted connection is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` reached.
    Full,
    /// `max_pending` connections are logging in.
    TooManyPending,
    /// `max_pending_per_source` connections from its source are logging in.
    TooManyFromSource,
    /// Its source failed to log in too often and waits out its backoff.
    TooManyFailures,
    /// The process has no file descriptor left.
    OutOfDescriptors,
}

impl From<Refusal> for crate::metrics::RefusalKind {
    fn from(r: Refusal) -> crate::metrics::RefusalKind {
        use crate::metrics::RefusalKind;
        match r {
            Refusal::Full => RefusalKind::Full,
            Refusal::TooManyPending => RefusalKind::TooManyPending,
            Refusal::TooManyFromSource => RefusalKind::TooManyFromSource,
            Refusal::TooManyFailures => RefusalKind::TooManyFailures,
            Refusal::OutOfDescriptors => RefusalKind::OutOfDescriptors,
        }
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
    /// Connections from trusted proxies whose PROXY header is being read (at most
    /// `max_pending`).
    pub proxy_headers: Gauge,
    /// Accepted connections not logged in yet (`max_pending`).
    pub pending: Gauge,
    /// Unauthenticated connections per source (`max_pending_per_source`).
    pub sources: Arc<Sources>,
    /// Failed logins per source, and their backoff.
    pub auth_failed: AuthFailures,
    /// Broadcasts refused before any delivery (a name too long, a payload that does
    /// not encode), ever: sent from any thread, so counted here, not by a shard.
    /// Everything else is counted by the shards (`crate::metrics`).
    pub broadcasts_failed: AtomicU64,
}

impl Stats {
    /// Moves a connection's login budget to another source address (the client behind
    /// a trusted proxy, learnt after admission): refused when that address is backing
    /// off after failed logins or already has `max_per_source` connections logging in;
    /// otherwise the proxy's place is given back.
    pub fn move_source(
        &self,
        pending: &mut Pending,
        peer: std::net::SocketAddr,
        max_per_source: usize,
    ) -> Result<(), Refusal> {
        let key = SourceKey::of(peer.ip());
        if self
            .auth_failed
            .blocked(key, std::time::Instant::now())
            .is_some()
        {
            return Err(Refusal::TooManyFailures);
        }
        pending._source = self
            .sources
            .try_acquire(key, max_per_source)
            .ok_or(Refusal::TooManyFromSource)?;
        Ok(())
    }

    /// Admits a connection from `peer`: its budgets checked in order (its source, all
    /// logging in, `max_connections`), each taken, or why not.
    pub fn admit(
        &self,
        peer: std::net::SocketAddr,
        max_connections: usize,
        max_pending: usize,
        max_per_source: usize,
    ) -> Result<Admission, Refusal> {
        if self
            .auth_failed
            .blocked(SourceKey::of(peer.ip()), std::time::Instant::now())
            .is_some()
        {
            return Err(Refusal::TooManyFailures);
        }
        let source = self
            .sources
            .try_acquire(SourceKey::of(peer.ip()), max_per_source)
            .ok_or(Refusal::TooManyFromSource)?;
        let total = self
            .pending
            .try_acquire(max_pending)
            .ok_or(Refusal::TooManyPending)?;
        let slot = self
            .slots
            .try_acquire(max_connections)
            .ok_or(Refusal::Full)?;
        Ok(Admission {
            peer,
            slot,
            pending: Pending {
                _total: total,
                _source: source,
            },
            first_bytes: Vec::new(),
            transport: crate::ws::Transport::Tcp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_group_ipv6_by_slash_64_and_ipv4_mapped_as_ipv4() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            SourceKey::of(ip("2001:db8:1:2::1")),
            SourceKey::of(ip("2001:db8:1:2:ffff:0:0:9"))
        );
        assert_ne!(
            SourceKey::of(ip("2001:db8:1:2::1")),
            SourceKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            SourceKey::of(ip("::ffff:10.0.0.1")),
            SourceKey::of(ip("10.0.0.1"))
        );
        assert_ne!(SourceKey::of(ip("10.0.0.1")), SourceKey::of(ip("10.0.0.2")));
    }

    #[test]
    fn failed_logins_back_off_exponentially_and_are_forgotten() {
        use std::time::{Duration, Instant};
        let f = AuthFailures::default();
        let b = FailBudget {
            free_failures: 2,
            base: Duration::from_secs(1),
            max: Duration::from_secs(5),
            forget_after: Duration::from_secs(60),
            max_sources: 2,
        };
        let k = SourceKey::V4(1);
        let t0 = Instant::now();
        f.failed(k, t0, &b);
        f.failed(k, t0, &b);
        assert_eq!(f.blocked(k, t0), None, "two failures are free");
        f.failed(k, t0, &b);
        assert_eq!(f.blocked(k, t0), Some(t0 + Duration::from_secs(1)));
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(f.blocked(k, t1), None, "the wait ends");
        f.failed(k, t1, &b);
        assert_eq!(
            f.blocked(k, t1),
            Some(t1 + Duration::from_secs(2)),
            "doubled"
        );
        for _ in 0..10 {
            f.failed(k, t1, &b);
        }
        assert_eq!(
            f.blocked(k, t1),
            Some(t1 + Duration::from_secs(5)),
            "capped"
        );
        // Quiet long enough: afresh.
        let t2 = t1 + Duration::from_secs(120);
        f.failed(k, t2, &b);
        assert_eq!(f.blocked(k, t2), None);
        // A success forgets; the table stays within max_sources.
        f.succeeded(k);
        f.failed(SourceKey::V4(2), t2, &b);
        f.failed(SourceKey::V4(3), t2, &b);
        f.failed(SourceKey::V4(4), t2, &b);
        assert!(f.0.lock().unwrap().len() <= 2);
    }

    #[test]
    fn admission_checks_source_then_pending_then_slots_and_gives_back() {
        let s = Stats::default();
        let a: std::net::SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: std::net::SocketAddr = "10.0.0.2:1".parse().unwrap();
        let a1 = s.admit(a, 10, 3, 2).unwrap();
        let _a2 = s.admit(a, 10, 3, 2).unwrap();
        assert_eq!(
            s.admit(a, 10, 3, 2).unwrap_err(),
            Refusal::TooManyFromSource
        );
        let b1 = s.admit(b, 10, 3, 2).unwrap();
        assert_eq!(s.admit(b, 10, 3, 2).unwrap_err(), Refusal::TooManyPending);
        // Logging in gives the pending budgets back and keeps the slot.
        let Admission { slot, pending, .. } = a1;
        drop(pending);
        assert_eq!(s.sources.held(SourceKey::of(a.ip())), 1);
        assert_eq!((s.pending.get(), s.slots.get()), (2, 3));
        // Refused for the slots: the budgets taken on the way are given back too.
        assert_eq!(s.admit(a, 3, 3, 2).unwrap_err(), Refusal::Full);
        assert_eq!(
            (s.pending.get(), s.sources.held(SourceKey::of(a.ip()))),
            (2, 1)
        );
        drop((slot, b1));
        assert_eq!(s.sources.held(SourceKey::of(b.ip())), 0);
    }

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
