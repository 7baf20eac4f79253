//! A shard thread's lanes to the other shards' buses: what this thread's tasks send one
//! shard while they run crosses as one bus entry.
//!
//! Why: a handler broadcasting each message of a burst put one entry per broadcast on
//! the other shard's bus. That shard, running beside this one, woke for each and fanned
//! each out before its writers ran, so its receivers were written one or two frames per
//! system call — where this shard, fanning the same burst out before its own writers
//! run, writes the whole burst to each receiver with one. A lane gathers the messages,
//! and one flush task per lane hands them over together; the receiving shard fans the
//! whole batch out before its writers run.
//!
//! Order: every message this thread sends a shard through the router goes through that
//! shard's lane, and the lane's one flush task puts its batches on the bus one after
//! another, so each shard sees this thread's messages in the order they were sent, as
//! it did when each went on the bus alone.
//!
//! Bounds: a lane holds at most [`BUS_BATCH_MESSAGES`]; a sender that finds it full
//! waits until the flush task has taken them. The flush task waits for room on the bus
//! — a permit per request of a batch from the bus's room (`bus_room.rs`), all at once,
//! and an entry of the channel — so backpressure from a slow shard reaches the senders
//! as before.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use std::sync::Arc;

use super::bus_room::BusRoom;
use super::BusMsg;
use crate::core::Signal;
use crate::descriptor::BUS_BATCH_MESSAGES;

/// This thread's lanes, one per shard of the run (the own shard's unused: it is served
/// in place).
pub(crate) struct Lanes {
    lanes: Box<[Lane]>,
    /// Notified whenever a batch is on a bus (or dropped with it), for
    /// [`Lanes::settled`].
    idle: Signal,
}

/// One shard's lane.
struct Lane {
    /// The shard's bus; `None` once the lanes are closed (the thread's shard is
    /// leaving), so nothing here keeps the bus alive.
    bus: RefCell<Option<flume::Sender<BusMsg>>>,
    /// Room for batched requests on that bus: a permit per request of a batch, given
    /// back by the shard as it takes the batch off the bus.
    bus_room: Arc<BusRoom>,
    /// The most requests one batch carries: `BUS_BATCH_MESSAGES`, or fewer when the
    /// bus's room is smaller (a batch never waits for more permits than there are).
    batch_max: usize,
    /// Messages waiting for the flush task, oldest first; at most
    /// [`BUS_BATCH_MESSAGES`].
    queue: RefCell<Vec<BusMsg>>,
    /// Whether a flush task is running for this lane: at most one.
    flushing: Cell<bool>,
    /// Whether a batch is on its way onto the bus (the flush task waiting for room):
    /// nothing else may be handed over meanwhile, which is what keeps batches in order.
    sending: Cell<bool>,
    /// Senders waiting for room in `queue`, woken each time the flush task takes it.
    space: Signal,
    /// Messages ever queued in this lane.
    pushed: Cell<u64>,
    /// Messages of those on the bus (or dropped with a closed one): what
    /// [`Lanes::settled`] waits for is counted here, so a sender that keeps queueing
    /// cannot keep it waiting.
    handed: Cell<u64>,
}

impl Lanes {
    /// Lanes to the shards whose buses are `bus`, with room for `bus_room` batched
    /// requests on each.
    pub(crate) fn new(bus: &[flume::Sender<BusMsg>], bus_room: &[Arc<BusRoom>]) -> Rc<Lanes> {
        assert_eq!(bus.len(), bus_room.len(), "a room per bus");
        Rc::new(Lanes {
            lanes: bus
                .iter()
                .zip(bus_room)
                .map(|(b, r)| Lane {
                    bus: RefCell::new(Some(b.clone())),
                    bus_room: r.clone(),
                    batch_max: BUS_BATCH_MESSAGES.min(r.capacity()),
                    queue: RefCell::new(Vec::new()),
                    flushing: Cell::new(false),
                    sending: Cell::new(false),
                    space: Signal::default(),
                    pushed: Cell::new(0),
                    handed: Cell::new(0),
                })
                .collect(),
            idle: Signal::default(),
        })
    }

    /// Queues `msg` for shard `shard`, waiting while its lane is full. `false` (and
    /// `msg` dropped) when that shard's bus is closed or there is no such shard.
    pub(crate) async fn send(self: &Rc<Self>, shard: usize, msg: BusMsg) -> bool {
        let Some(lane) = self.lanes.get(shard) else {
            return false;
        };
        loop {
            // Created before the check, so a flush between the check and the wait is
            // not missed.
            let room = lane.space.wait();
            if !lane.open() {
                return false;
            }
            if lane.queue.borrow().len() < BUS_BATCH_MESSAGES {
                break;
            }
            room.await;
        }
        lane.queue.borrow_mut().push(msg);
        lane.pushed.set(lane.pushed.get() + 1);
        if !lane.flushing.replace(true) {
            crate::rt::exec::spawn(flush(self.clone(), shard));
        }
        true
    }

    /// Hands every lane's messages to its bus now, where the bus has room: `true` when
    /// nothing is left in any lane (what is left goes with its flush task). Called by
    /// the shard's writers before they write, so nothing this shard writes to a socket
    /// (a handler's reply, say) gets ahead of what it sent other shards before it —
    /// unless that shard is backed up (its bus or its room for batches full), when the
    /// writer does not wait.
    pub(crate) fn hand_over(self: &Rc<Self>) -> bool {
        let mut all = true;
        for (shard, lane) in self.lanes.iter().enumerate() {
            if lane.sending.get() {
                all = false;
                continue;
            }
            let Some((entry, n)) = lane.take() else {
                continue;
            };
            let Some(bus) = lane.bus.borrow().clone() else {
                lane.handed_over(n);
                continue;
            };
            let sent = if lane.bus_room.try_take(permits(&entry)) {
                bus.try_send(entry).inspect_err(|e| match e {
                    flume::TrySendError::Full(m) | flume::TrySendError::Disconnected(m) => {
                        lane.bus_room.give_back(permits(m))
                    }
                })
            } else {
                Err(flume::TrySendError::Full(entry))
            };
            match sent {
                Ok(()) | Err(flume::TrySendError::Disconnected(_)) => {
                    lane.handed_over(n);
                    self.idle.notify_all();
                }
                Err(flume::TrySendError::Full(entry)) => {
                    // Back where it was (nothing was queued since it was taken).
                    *lane.queue.borrow_mut() = match entry {
                        BusMsg::Batch(msgs) => msgs,
                        one => vec![one],
                    };
                    if !lane.flushing.replace(true) {
                        crate::rt::exec::spawn(flush(self.clone(), shard));
                    }
                    all = false;
                }
            }
        }
        all
    }

    /// Closes the lanes as the thread's shard leaves: what the buses take at once goes
    /// on them, the rest is dropped (a request's asker sees its reply channel close),
    /// and the buses are let go, so a flush task the executor never runs again keeps
    /// none of them alive. Sends from now on fail.
    pub(crate) fn close(self: &Rc<Self>) {
        self.hand_over();
        for lane in self.lanes.iter() {
            lane.bus.borrow_mut().take();
            lane.drop_queue();
        }
        self.idle.notify_all();
    }

    /// Resolves once every message sent before the call is on its shard's bus (or
    /// dropped with a closed bus); what is sent meanwhile is not waited for.
    pub(crate) async fn settled(&self) {
        let targets: Vec<u64> = self.lanes.iter().map(|l| l.pushed.get()).collect();
        loop {
            let idle = self.idle.wait();
            if self
                .lanes
                .iter()
                .zip(&targets)
                .all(|(l, &t)| l.handed.get() >= t)
            {
                return;
            }
            idle.await;
        }
    }
}

impl Lane {
    /// The lane's messages as one bus entry, and how many they are (`None` when
    /// empty); senders waiting for room are woken.
    fn take(&self) -> Option<(BusMsg, u64)> {
        // The common case on a writer's hand-over: nothing queued, nobody to wake.
        if self.queue.borrow().is_empty() {
            return None;
        }
        let mut batch = {
            let mut queue = self.queue.borrow_mut();
            if queue.len() <= self.batch_max {
                std::mem::take(&mut *queue)
            } else {
                queue.drain(..self.batch_max).collect()
            }
        };
        self.space.notify_all();
        let n = batch.len() as u64;
        match batch.len() {
            0 => None,
            1 => batch.pop().map(|one| (one, n)),
            _ => Some((BusMsg::Batch(batch), n)),
        }
    }

    /// Counts `n` more messages as on the bus (or dropped with it).
    fn handed_over(&self, n: u64) {
        self.handed.set(self.handed.get() + n);
    }

    /// Whether the lane's bus may still take messages.
    fn open(&self) -> bool {
        self.bus
            .borrow()
            .as_ref()
            .is_some_and(|b| !b.is_disconnected())
    }

    /// Drops what the lane holds (its bus is gone), counting it as handed over.
    fn drop_queue(&self) {
        let dropped = std::mem::take(&mut *self.queue.borrow_mut());
        self.handed_over(dropped.len() as u64);
        self.space.notify_all();
    }
}

/// Permits on its bus's room that `entry` takes: one per request of a batch (a single
/// request takes a place in the channel only, as any thread's does).
fn permits(entry: &BusMsg) -> usize {
    match entry {
        BusMsg::Batch(msgs) => msgs.len(),
        _ => 0,
    }
}

/// Hands lane `shard`'s messages to its bus, a batch at a time, until the lane is
/// empty (or the bus closed, when what is left is dropped).
async fn flush(lanes: Rc<Lanes>, shard: usize) {
    // glommio polls a task once as it is spawned, inside the sender's call: without
    // this the flush would take only the message just queued. Put back in the queue,
    // it runs once the sender (and the tasks already runnable) let it: after the rest
    // of the sender's burst, unless a writer hands the lane over first.
    futures_lite::future::yield_now().await;
    let lane = &lanes.lanes[shard];
    while let Some((entry, n)) = lane.take() {
        lane.sending.set(true);
        let bus = lane.bus.borrow().clone();
        let need = permits(&entry);
        let sent = match bus {
            Some(bus) if lane.bus_room.take(need).await => match bus.send_async(entry).await {
                Ok(()) => true,
                Err(_) => {
                    lane.bus_room.give_back(need);
                    false
                }
            },
            // Closed lanes, or a shard gone while the batch waited for room.
            _ => false,
        };
        lane.sending.set(false);
        lane.handed_over(n);
        if !sent {
            lane.drop_queue();
            lanes.idle.notify_all();
            break;
        }
        lanes.idle.notify_all();
    }
    lane.flushing.set(false);
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "tests fail loudly on the first unexpected error"
    )]
    //! Lanes on each backend's executor, against a real bus channel: batching, order,
    //! the lane's bound, the bus's backpressure, a closed bus.

    use std::time::Duration;

    use super::*;
    use crate::id::ConnectionId;
    use crate::router::Frames;
    use crate::rt::testing::backends;
    use crate::rt::Backend;

    /// Runs the future `body` builds on a fresh thread of `backend`.
    fn on<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
        backend: Backend,
        body: impl FnOnce() -> F + Send + 'static,
    ) -> T {
        crate::rt::testing::on(backend, "lanes-test", body)
    }

    /// Room for `permits` batched requests on each of `buses` buses.
    fn rooms(buses: usize, permits: usize) -> Vec<Arc<BusRoom>> {
        (0..buses)
            .map(|_| Arc::new(BusRoom::new(permits)))
            .collect()
    }

    /// The raw id of connection `seq`, which tells the test's messages apart.
    fn id(seq: u64) -> u64 {
        ConnectionId::new(0, 1, seq).as_u64()
    }

    /// A send to connection `seq`.
    fn numbered(seq: u64) -> BusMsg {
        BusMsg::Send {
            to: ConnectionId::new(0, 1, seq),
            frames: Arc::new(Frames {
                v1: None,
                native: None,
            }),
            reply: flume::bounded(1).0,
        }
    }

    /// The raw ids of the sends in `entry`, and whether it was a batch.
    fn numbers(entry: BusMsg) -> (Vec<u64>, bool) {
        let seq = |m: &BusMsg| match m {
            BusMsg::Send { to, .. } => to.as_u64(),
            _ => panic!("not a numbered send"),
        };
        match entry {
            BusMsg::Batch(msgs) => (msgs.iter().map(seq).collect(), true),
            other => (vec![seq(&other)], false),
        }
    }

    #[test]
    fn a_burst_crosses_as_one_batch_in_send_order() {
        for backend in backends() {
            let entries = on(backend, || async {
                let (tx, rx) = flume::bounded(16);
                let lanes = Lanes::new(&[tx.clone(), tx], &rooms(2, 1024));
                for seq in 0..10 {
                    assert!(lanes.send(1, numbered(seq)).await);
                }
                lanes.settled().await;
                rx.drain().map(numbers).collect::<Vec<_>>()
            });
            assert_eq!(
                entries,
                vec![((0..10).map(id).collect(), true)],
                "{backend:?}"
            );
        }
    }

    #[test]
    fn a_lone_message_crosses_alone() {
        for backend in backends() {
            let entries = on(backend, || async {
                let (tx, rx) = flume::bounded(16);
                let lanes = Lanes::new(&[tx], &rooms(1, 1024));
                assert!(lanes.send(0, numbered(7)).await);
                lanes.settled().await;
                rx.drain().map(numbers).collect::<Vec<_>>()
            });
            assert_eq!(entries, vec![(vec![id(7)], false)], "{backend:?}");
        }
    }

    /// More than a lane holds, onto a bus of one entry drained by another thread only
    /// after a while: the sender is held back by both bounds, and every message
    /// arrives once, in order, in batches of at most the lane's size.
    #[test]
    fn a_full_lane_and_a_full_bus_hold_the_sender_back_without_reordering() {
        const SENT: u64 = 3 * BUS_BATCH_MESSAGES as u64 + 5;
        for backend in backends() {
            let (tx, rx) = flume::bounded(1);
            let room = rooms(1, 2 * BUS_BATCH_MESSAGES);
            let shard_room = room[0].clone();
            let drain = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                let mut got = Vec::new();
                while let Ok(entry) = rx.recv() {
                    // As the shard does: the batch's permits back as it is taken.
                    shard_room.give_back(permits(&entry));
                    let (nums, _) = numbers(entry);
                    assert!(nums.len() <= BUS_BATCH_MESSAGES);
                    got.extend(nums);
                }
                got
            });
            on(backend, move || async move {
                let lanes = Lanes::new(&[tx], &room);
                for seq in 0..SENT {
                    assert!(lanes.send(0, numbered(seq)).await);
                    assert!(lanes.lanes[0].queue.borrow().len() <= BUS_BATCH_MESSAGES);
                }
                lanes.settled().await;
            });
            assert_eq!(
                drain.join().unwrap(),
                (0..SENT).map(id).collect::<Vec<_>>(),
                "{backend:?}"
            );
        }
    }

    /// A writer's hand-over puts the lane on the bus at once, before its flush task
    /// ran; with the bus full it reports so and the flush task takes it later, still
    /// in order.
    #[test]
    fn a_hand_over_is_immediate_and_keeps_order_when_the_bus_is_full() {
        for backend in backends() {
            let (now, later) = on(backend, || async {
                let (tx, rx) = flume::bounded(1);
                let lanes = Lanes::new(&[tx], &rooms(1, 1024));
                for seq in 0..3 {
                    assert!(lanes.send(0, numbered(seq)).await);
                }
                assert!(lanes.hand_over(), "an empty bus takes the lane at once");
                let now: Vec<_> = rx.drain().map(numbers).collect();
                assert!(lanes.send(0, numbered(3)).await);
                assert!(lanes.hand_over());
                assert!(lanes.send(0, numbered(4)).await);
                assert!(!lanes.hand_over(), "the bus holds one entry");
                assert!(lanes.send(0, numbered(5)).await);
                let mut later: Vec<_> = rx.drain().map(numbers).collect();
                lanes.settled().await;
                later.extend(rx.drain().map(numbers));
                (now, later)
            });
            assert_eq!(now, vec![((0..3).map(id).collect(), true)], "{backend:?}");
            assert_eq!(
                later,
                vec![(vec![id(3)], false), ((4..6).map(id).collect(), true)],
                "{backend:?}"
            );
        }
    }

    /// A bus whose room is smaller than a burst, shared by three shard threads: each
    /// batch waits for all its permits at once (none holds part of the room), so all
    /// of them get through, each thread's in its order, none larger than the room.
    #[test]
    fn a_room_smaller_than_a_burst_shared_by_three_threads_lets_everything_through() {
        const ROOM: usize = 8;
        const EACH: u64 = 100;
        for backend in backends() {
            let (tx, rx) = flume::bounded::<BusMsg>(2);
            let room = rooms(1, ROOM);
            let shard_room = room[0].clone();
            let drain = std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Ok(entry) = rx.recv() {
                    let taken = permits(&entry);
                    assert!(taken <= ROOM, "a batch of {taken} on a room of {ROOM}");
                    shard_room.give_back(taken);
                    got.extend(numbers(entry).0);
                }
                got
            });
            let senders: Vec<_> = (0..3u64)
                .map(|t| {
                    let (tx, room) = (tx.clone(), room.clone());
                    std::thread::spawn(move || {
                        on(backend, move || async move {
                            let lanes = Lanes::new(&[tx], &room);
                            for seq in 0..EACH {
                                assert!(lanes.send(0, numbered(t * 1000 + seq)).await);
                            }
                            lanes.settled().await;
                        })
                    })
                })
                .collect();
            drop(tx);
            for s in senders {
                s.join().unwrap();
            }
            let got = drain.join().unwrap();
            assert_eq!(got.len(), 3 * EACH as usize, "{backend:?}");
            for t in 0..3u64 {
                let mine: Vec<_> = got
                    .iter()
                    .copied()
                    .filter(|&raw| (0..EACH).any(|seq| id(t * 1000 + seq) == raw))
                    .collect();
                let sent: Vec<_> = (0..EACH).map(|seq| id(t * 1000 + seq)).collect();
                assert_eq!(mine, sent, "{backend:?}: thread {t}'s order");
            }
        }
    }

    /// The shard goes away while a batch waits for room on its bus: the wait ends, the
    /// lane's messages are dropped, later sends fail, and settling does not hang.
    #[test]
    fn a_shard_gone_while_a_batch_waits_for_room_ends_the_wait() {
        for backend in backends() {
            let (sent, later) = on(backend, || async {
                let (tx, rx) = flume::bounded(4);
                let room = rooms(1, 4);
                assert!(room[0].try_take(4), "the room is full");
                let lanes = Lanes::new(&[tx], &room);
                for seq in 0..3 {
                    assert!(lanes.send(0, numbered(seq)).await);
                }
                crate::rt::exec::yield_now().await;
                // What the shard's end does: its room closes, its bus goes.
                room[0].close();
                drop(rx);
                lanes.settled().await;
                let left = lanes.lanes[0].queue.borrow().len();
                let later = lanes.send(0, numbered(9)).await;
                (left, later)
            });
            assert_eq!((sent, later), (0, false), "{backend:?}");
        }
    }

    /// Closing the lanes (the thread's shard leaving) hands over what fits, drops the
    /// rest and lets the buses go: the receiver sees every sender gone.
    #[test]
    fn closed_lanes_hand_over_what_fits_and_let_the_bus_go() {
        for backend in backends() {
            let (got, gone) = on(backend, || async {
                let (tx, rx) = flume::bounded(4);
                let lanes = Lanes::new(&[tx], &rooms(1, 16));
                for seq in 0..3 {
                    assert!(lanes.send(0, numbered(seq)).await);
                }
                lanes.close();
                let got: Vec<_> = rx.drain().map(numbers).collect();
                let refused = !lanes.send(0, numbered(4)).await;
                (got, refused && rx.is_disconnected())
            });
            assert_eq!(got, vec![((0..3).map(id).collect(), true)], "{backend:?}");
            assert!(gone, "{backend:?}");
        }
    }

    #[test]
    fn a_closed_bus_refuses_and_settles() {
        for backend in backends() {
            let sent = on(backend, || async {
                let (tx, rx) = flume::bounded(4);
                let lanes = Lanes::new(&[tx], &rooms(1, 1024));
                drop(rx);
                let sent = lanes.send(0, numbered(1)).await;
                let unknown = lanes.send(5, numbered(2)).await;
                lanes.settled().await;
                (sent, unknown)
            });
            assert_eq!(sent, (false, false), "{backend:?}");
        }
    }
}
