//! The bookkeeping a broadcast run's senders and receivers share: which receivers got
//! each in-flight message, when every receiver had it (the fan-out latency), what
//! each receiver lost, and the wake-up that lets a sender wait for its messages to
//! complete. One executor runs the whole run, so it is plain cells.

use std::cell::{Cell, RefCell};
use std::time::Instant;

use event_listener::{listener, Event};

use super::RING_SLOTS;
use crate::payload::Tick;
use crate::stats::{Latency, ReceiverLoss};

/// State shared by a broadcast run's senders and receivers.
pub(super) struct Fan {
    receivers: u32,
    senders: usize,
    origin: Instant,
    /// Receivers that got each in-flight message, by ring slot.
    ring: RefCell<Vec<u32>>,
    /// Messages each sender has sent.
    pub(super) sent: RefCell<Vec<u64>>,
    /// Messages of each sender that reached every receiver.
    completed: RefCell<Vec<u64>>,
    /// Slots reused before their message completed (a lost delivery).
    pub(super) ring_overruns: Cell<u64>,
    pub(super) deliveries: Cell<u64>,
    pub(super) errors: Cell<u64>,
    /// Ticks that reached a connection outside a room broadcast's room.
    pub(super) strays: Cell<u64>,
    pub(super) last_arrival_ns: Cell<u64>,
    pub(super) delivery: RefCell<Latency>,
    pub(super) fanout: RefCell<Latency>,
    pub(super) loss: RefCell<Vec<ReceiverLoss>>,
    /// Per sender: notified whenever one of its messages completes.
    completions: Vec<Event>,
}

impl Fan {
    /// Empty accounting for `receivers` receivers and `senders` senders.
    pub(super) fn new(receivers: u32, senders: usize) -> Fan {
        Fan {
            receivers,
            senders,
            origin: Instant::now(),
            ring: RefCell::new(vec![0; RING_SLOTS]),
            sent: RefCell::new(vec![0; senders]),
            completed: RefCell::new(vec![0; senders]),
            ring_overruns: Cell::new(0),
            deliveries: Cell::new(0),
            errors: Cell::new(0),
            strays: Cell::new(0),
            last_arrival_ns: Cell::new(0),
            delivery: RefCell::new(Latency::new()),
            fanout: RefCell::new(Latency::new()),
            loss: RefCell::new(vec![ReceiverLoss::new(senders); receivers as usize]),
            completions: (0..senders).map(|_| Event::new()).collect(),
        }
    }

    /// Nanoseconds since the run's origin: the clock of every timestamp in a tick.
    pub(super) fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn slot(&self, sender: usize, seq: u64) -> usize {
        (seq as usize)
            .wrapping_mul(self.senders)
            .wrapping_add(sender)
            % RING_SLOTS
    }

    /// Receiver `receiver` got tick `t` at `now_ns`.
    pub(super) fn on_tick(&self, receiver: usize, t: Tick, now_ns: u64) {
        let sender = t.sender as usize;
        if let Some(l) = self.loss.borrow_mut().get_mut(receiver) {
            l.on_tick(sender, t.seq);
        }
        self.deliveries.set(self.deliveries.get() + 1);
        self.last_arrival_ns.set(now_ns);
        let latency = now_ns.saturating_sub(t.due_ns);
        self.delivery.borrow_mut().record_ns(latency);
        if sender >= self.senders {
            return;
        }
        let slot = self.slot(sender, t.seq);
        let mut ring = self.ring.borrow_mut();
        ring[slot] += 1;
        if ring[slot] == self.receivers {
            ring[slot] = 0;
            drop(ring);
            self.fanout.borrow_mut().record_ns(latency);
            let mut c = self.completed.borrow_mut();
            c[sender] += 1;
            // The sender is this event's only listener.
            self.completions[sender].notify(1);
        }
    }

    /// Messages of `sender` sent but not yet at every receiver.
    pub(super) fn in_flight(&self, sender: usize) -> u64 {
        self.sent.borrow()[sender] - self.completed.borrow()[sender]
    }

    /// Whether every sent message reached every receiver.
    pub(super) fn all_complete(&self) -> bool {
        (0..self.senders).all(|s| self.in_flight(s) == 0)
    }

    /// Resolves once at most `max` messages of `sender` are in flight.
    pub(super) async fn in_flight_at_most(&self, sender: usize, max: u64) {
        let event = &self.completions[sender];
        loop {
            if self.in_flight(sender) <= max {
                return;
            }
            // Register before the second check so a completion in between is not
            // missed (the listener is on the stack: no allocation per wait).
            listener!(event => completed);
            if self.in_flight(sender) <= max {
                return;
            }
            completed.await;
        }
    }

    /// Marks message `seq` of `sender` as sent, reclaiming a stale slot if needed.
    pub(super) fn mark_sent(&self, sender: usize, seq: u64) {
        let slot = self.slot(sender, seq);
        let mut ring = self.ring.borrow_mut();
        if ring[slot] != 0 {
            ring[slot] = 0;
            self.ring_overruns.set(self.ring_overruns.get() + 1);
        }
        self.sent.borrow_mut()[sender] = seq + 1;
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    use super::*;
    use crate::stats::LossReport;

    #[test]
    fn fan_out_completion_and_window() {
        let f = Fan::new(3, 2);
        for seq in 0..4 {
            f.mark_sent(0, seq);
        }
        f.mark_sent(1, 0);
        assert_eq!(f.in_flight(0), 4);
        let t = |sender, seq| Tick {
            sender,
            seq,
            due_ns: 100,
        };
        // Message 0 of sender 0 reaches all three receivers.
        for r in 0..3 {
            f.on_tick(r, t(0, 0), 150 + r as u64);
        }
        assert_eq!(f.in_flight(0), 3);
        assert_eq!(f.fanout.borrow().count(), 1);
        // The fan-out latency is the last receiver's: 152 - 100.
        assert_eq!(f.fanout.borrow().quantile_ns(1.0), 52);
        assert_eq!(f.delivery.borrow().count(), 3);
        // Two of three receivers got sender 1's message: not complete.
        f.on_tick(0, t(1, 0), 200);
        f.on_tick(1, t(1, 0), 200);
        assert_eq!(f.in_flight(1), 1);
        assert!(!f.all_complete());
        f.on_tick(2, t(1, 0), 201);
        assert_eq!(f.in_flight(1), 0);
        // A foreign sender is counted as a delivery but never completes anything.
        f.on_tick(0, t(9, 0), 300);
        assert_eq!(f.deliveries.get(), 7);
        let loss = LossReport::tally(&[1, 1], f.loss.borrow().iter());
        assert_eq!(loss.foreign, 1);
        // Reusing a slot whose message never completed is counted.
        let g = Fan::new(2, 1);
        g.mark_sent(0, 0);
        g.on_tick(0, t(0, 0), 1);
        g.mark_sent(0, RING_SLOTS as u64);
        assert_eq!(g.ring_overruns.get(), 1);
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_waiting_sender_wakes_when_its_messages_complete() {
        let f = Fan::new(1, 2);
        let t = |sender, seq| Tick {
            sender,
            seq,
            due_ns: 0,
        };
        for seq in 0..2 {
            f.mark_sent(0, seq);
        }
        f.mark_sent(1, 0);
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let woken = || wakes.0.load(Ordering::Relaxed);
        // Already satisfied: ready at once.
        assert!(pin!(f.in_flight_at_most(0, 2)).poll(&mut cx).is_ready());
        let mut wait = pin!(f.in_flight_at_most(0, 0));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        // Another sender's completion neither wakes nor satisfies it.
        f.on_tick(0, t(1, 0), 1);
        assert_eq!(woken(), 0);
        // Each completion of its own wakes it; it resolves once none is in flight.
        f.on_tick(0, t(0, 0), 1);
        assert_eq!(woken(), 1);
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        f.on_tick(0, t(0, 1), 1);
        assert_eq!(woken(), 2);
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(()));
    }
}
