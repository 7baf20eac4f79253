//! Keeping a client connected: the supervisor task that runs one connection after the
//! other, reconnection with exponential backoff and jitter, and the lifecycle events
//! it reports to the user.

use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use crate::rt::exec::sleep;
use conduit_protocol::FrameDecoder;
use futures_lite::FutureExt;

use super::connect::{establish, Established};
use super::loops::{run_connection, Conn};
use super::shared::{Inner, State};
use super::ClientEvent;

/// A hook the user registered for events.
pub(super) type EventHook = Rc<dyn Fn(&ClientEvent)>;

/// Where a client's events go: the user's hooks and subscriptions.
#[derive(Default)]
pub(super) struct EventFanout {
    /// Hooks from `on_event`, called in registration order.
    hooks: RefCell<Vec<EventHook>>,
    /// Subscriptions from `events`; dropped once their receiver is gone.
    subscribers: RefCell<Vec<flume::Sender<ClientEvent>>>,
}

impl EventFanout {
    /// Adds a hook.
    pub fn add_hook(&self, hook: EventHook) {
        self.hooks.borrow_mut().push(hook);
    }

    /// Adds a subscription.
    pub fn subscribe(&self, tx: flume::Sender<ClientEvent>) {
        self.subscribers.borrow_mut().push(tx);
    }

    /// Hands `event` to every hook (a hook's panic is contained) and subscriber. The
    /// hooks are copied out first, so a hook may register more.
    pub fn emit(&self, event: &ClientEvent) {
        let hooks: Vec<EventHook> = self.hooks.borrow().clone();
        for h in hooks {
            if std::panic::catch_unwind(AssertUnwindSafe(|| h(event))).is_err() {
                tracing::error!("a client event hook panicked");
            }
        }
        self.subscribers
            .borrow_mut()
            .retain(|tx| tx.send(event.clone()).is_ok());
    }
}

/// Random numbers for backoff jitter: xorshift64*, since jitter only needs to be spread,
/// not secret.
#[derive(Debug)]
pub(super) struct Jitter {
    /// The generator's state; never 0.
    state: Cell<u64>,
}

impl Jitter {
    /// A generator seeded with `seed` (0 is replaced, as xorshift would stay at 0).
    pub fn new(seed: u64) -> Jitter {
        Jitter {
            state: Cell::new(seed | 1),
        }
    }

    /// The next number.
    pub fn next(&self) -> u64 {
        let mut x = self.state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Owns a client's connections, one after the other: reads the current one until it
/// ends, cleans up, and reconnects when the policy says so.
pub(super) async fn supervise(inner: Rc<Inner>, mut conn: Rc<Conn>, mut decoder: FrameDecoder) {
    loop {
        let reason = run_connection(&inner, &conn, &mut decoder).await;
        inner.conn.borrow_mut().take();
        inner.login.borrow_mut().take();
        let closing = inner.closing.get();
        inner.set_state(if closing { State::Closed } else { State::Down });
        inner.fail_pending();
        tracing::info!(host = %inner.desc.host, port = inner.desc.port, %reason, "client disconnected");
        inner.emit(ClientEvent::Disconnected(reason));
        if closing || !inner.desc.reconnect.enabled {
            break;
        }
        inner.set_state(State::Reconnecting);
        match reconnect(&inner).await {
            Some(up) => {
                conn = up.conn;
                decoder = up.decoder;
                inner.install(conn.clone(), up.info);
                inner.emit(ClientEvent::Reconnected);
            }
            None => {
                inner.set_state(if inner.closing.get() {
                    State::Closed
                } else {
                    State::Down
                });
                break;
            }
        }
    }
    inner.supervising.set(false);
    inner.changed.notify_all();
}

/// Tries to get a connection back with exponential backoff and jitter; `None` when
/// closed or out of attempts.
async fn reconnect(inner: &Rc<Inner>) -> Option<Established> {
    let policy = inner.desc.reconnect.clone();
    let mut attempt: u32 = 0;
    loop {
        if policy.max_attempts.is_some_and(|max| attempt >= max) {
            inner.emit(ClientEvent::GaveUp(attempt));
            return None;
        }
        attempt = attempt.saturating_add(1);
        let delay = policy.delay(attempt, inner.jitter.next());
        let slept = async {
            sleep(delay).await;
            true
        };
        let closed = async {
            inner.wait_closing().await;
            false
        };
        if !slept.or(closed).await {
            return None;
        }
        inner.emit(ClientEvent::Reconnecting(attempt));
        let tried = async { Some(establish(&inner.desc, &inner.v1_limits).await) };
        let closed = async {
            inner.wait_closing().await;
            None
        };
        match tried.or(closed).await {
            None => return None,
            Some(Ok(up)) => {
                if inner.closing.get() {
                    up.conn.stream.shutdown_both();
                    return None;
                }
                tracing::info!(attempt, "client reconnected");
                return Some(up);
            }
            Some(Err(e)) => tracing::debug!(attempt, "reconnect attempt failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_spreads_and_survives_a_zero_seed() {
        let j = Jitter::new(0);
        let draws: Vec<u64> = (0..64).map(|_| j.next()).collect();
        assert!(draws.iter().all(|&x| x != 0));
        let mut unique = draws.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), draws.len());
    }

    #[test]
    fn events_reach_hooks_and_live_subscribers_in_order() {
        let fanout = EventFanout::default();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        fanout.add_hook(Rc::new(move |e: &ClientEvent| {
            s.borrow_mut().push(e.clone())
        }));
        fanout.add_hook(Rc::new(|_: &ClientEvent| panic!("a bad hook")));
        let (tx, rx) = flume::unbounded();
        fanout.subscribe(tx);
        let (gone, gone_rx) = flume::unbounded();
        fanout.subscribe(gone);
        drop(gone_rx);
        fanout.emit(&ClientEvent::Connected);
        fanout.emit(&ClientEvent::Reconnecting(1));
        let expected = [ClientEvent::Connected, ClientEvent::Reconnecting(1)];
        assert_eq!(*seen.borrow(), expected);
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), expected);
        assert_eq!(fanout.subscribers.borrow().len(), 1);
    }
}
