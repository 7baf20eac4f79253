//! Room for batched requests on one shard's bus.
//!
//! A bus channel counts entries, and a lane's batch (`lanes.rs`) is one entry of up to
//! `BUS_BATCH_MESSAGES` requests: without more, a bus of 4096 entries could hold a
//! million requests, and a lifecycle step queued behind them would wait for all of
//! them. So a batch also takes a permit per request from its bus's room, all at once
//! (a batch never holds some permits while it waits for the rest, so waiters on many
//! shards cannot split the room between them and all wait), and the shard gives them
//! back as it takes the batch off its bus. A lane never asks for more than the room
//! holds, so every wait ends once the shard has taken what is on its bus; the shard's
//! end closes the room, so no wait outlives the shard.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use event_listener::{listener, Event};

/// Room for batched requests on one shard's bus: `bus_capacity` permits.
#[derive(Debug)]
pub(crate) struct BusRoom {
    /// Permits free: requests that may still go onto the bus in batches.
    free: AtomicUsize,
    /// Permits in all: the most one batch may take.
    capacity: usize,
    /// Set when the shard's bus loop ended: waits fail at once instead of waiting for
    /// permits nobody will give back.
    closed: AtomicBool,
    /// Wakes the waiters when permits come back or the room closes.
    changed: Event,
}

impl BusRoom {
    /// A room of `capacity` permits (at least one).
    pub(crate) fn new(capacity: usize) -> BusRoom {
        let capacity = capacity.max(1);
        BusRoom {
            free: AtomicUsize::new(capacity),
            capacity,
            closed: AtomicBool::new(false),
            changed: Event::new(),
        }
    }

    /// Permits in all.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Takes `n` permits if all of them are free now; `false` (none taken) otherwise.
    pub(crate) fn try_take(&self, n: usize) -> bool {
        debug_assert!(n <= self.capacity, "a batch larger than its bus's room");
        self.free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| {
                free.checked_sub(n)
            })
            .is_ok()
    }

    /// Waits until `n` permits are free and takes them together; `false` when the
    /// room closed first (its shard is gone).
    pub(crate) async fn take(&self, n: usize) -> bool {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            if self.try_take(n) {
                return true;
            }
            // Listening before the second look: permits given back in between wake it.
            listener!(self.changed => freed);
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            if self.try_take(n) {
                return true;
            }
            freed.await;
        }
    }

    /// Gives `n` permits back.
    pub(crate) fn give_back(&self, n: usize) {
        if n > 0 {
            self.free.fetch_add(n, Ordering::AcqRel);
            self.changed.notify(usize::MAX);
        }
    }

    /// Closes the room: every wait, now or later, fails.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.changed.notify(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn permits_are_taken_all_or_none_and_given_back() {
        let room = BusRoom::new(10);
        assert!(room.try_take(6));
        assert!(!room.try_take(5), "5 of 4 free");
        assert!(room.try_take(4));
        assert!(!room.try_take(1));
        room.give_back(6);
        assert!(room.try_take(6));
        assert_eq!(room.capacity(), 10);
    }

    /// Waiters each wanting most of the room, on other threads: none holds part of it
    /// while waiting, so permits given back one batch at a time let each through.
    #[test]
    fn waiters_for_large_batches_do_not_split_the_room() {
        let room = Arc::new(BusRoom::new(8));
        assert!(room.try_take(8));
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let room = room.clone();
                std::thread::spawn(move || {
                    let took = futures_lite::future::block_on(room.take(6));
                    assert!(took);
                    // Served: the shard gives the batch's permits back.
                    room.give_back(6);
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        room.give_back(8);
        for w in waiters {
            w.join().expect("every waiter gets its permits");
        }
        assert!(room.try_take(8), "all permits are back");
    }

    #[test]
    fn a_closed_room_ends_every_wait() {
        let room = Arc::new(BusRoom::new(2));
        assert!(room.try_take(2));
        let waiter = {
            let room = room.clone();
            std::thread::spawn(move || futures_lite::future::block_on(room.take(1)))
        };
        std::thread::sleep(Duration::from_millis(20));
        room.close();
        assert!(!waiter.join().expect("the wait ends"));
        assert!(!futures_lite::future::block_on(room.take(1)));
    }
}
