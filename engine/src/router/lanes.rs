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
//! — a permit per request of a batch (`RunState::batch_room`, `bus_capacity` of them,
//! given back by the shard as it takes the batch off the bus) and an entry of the
//! channel —
//! so a bus holds no more batched requests than it held single ones, and backpressure
//! from a slow shard reaches the senders as before.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use std::sync::Arc;

use async_lock::Semaphore;

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
    /// The shard's bus.
    bus: flume::Sender<BusMsg>,
    /// Room for batched requests on that bus (`RunState::batch_room`): a permit per
    /// request of a batch, given back by the shard as it takes the batch off the bus.
    bus_room: Arc<Semaphore>,
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
    pub(crate) fn new(bus: &[flume::Sender<BusMsg>], bus_room: &[Arc<Semaphore>]) -> Rc<Lanes> {
        assert_eq!(bus.len(), bus_room.len(), "a room per bus");
        Rc::new(Lanes {
            lanes: bus
                .iter()
                .zip(bus_room)
                .map(|(b, r)| Lane {
                    bus: b.clone(),
                    bus_room: r.clone(),
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
            if lane.bus.is_disconnected() {
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
    /// unless a bus is full, when the writer does not wait.
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
            let sent = if lane.try_reserve(&entry) {
                lane.bus.try_send(entry).inspect_err(|e| match e {
                    flume::TrySendError::Full(m) | flume::TrySendError::Disconnected(m) => {
                        lane.unreserve(m)
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
        let mut batch = std::mem::take(&mut *self.queue.borrow_mut());
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

    /// Takes a permit on the bus per request of `entry` if it is a batch and the
    /// permits are there at once; `false` (and none taken) otherwise.
    fn try_reserve(&self, entry: &BusMsg) -> bool {
        let BusMsg::Batch(msgs) = entry else {
            return true;
        };
        for taken in 0..msgs.len() {
            match self.bus_room.try_acquire() {
                Some(permit) => permit.forget(),
                None => {
                    self.bus_room.add_permits(taken);
                    return false;
                }
            }
        }
        true
    }

    /// Waits for a permit on the bus per request of `entry` if it is a batch.
    async fn reserve(&self, entry: &BusMsg) {
        if let BusMsg::Batch(msgs) = entry {
            for _ in 0..msgs.len() {
                self.bus_room.acquire().await.forget();
            }
        }
    }

    /// Gives back what [`try_reserve`](Self::try_reserve) or
    /// [`reserve`](Self::reserve) took for `entry`, which did not go on the bus.
    fn unreserve(&self, entry: &BusMsg) {
        if let BusMsg::Batch(msgs) = entry {
            self.bus_room.add_permits(msgs.len());
        }
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
        lane.reserve(&entry).await;
        let sent = lane.bus.send_async(entry).await.map_err(|e| {
            lane.unreserve(&e.0);
        });
        lane.sending.set(false);
        lane.handed_over(n);
        if sent.is_err() {
            let dropped = std::mem::take(&mut *lane.queue.borrow_mut());
            lane.handed_over(dropped.len() as u64);
            lane.space.notify_all();
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
    use crate::rt::{Backend, RtThread, ThreadSpec};

    fn backends() -> Vec<Backend> {
        [
            #[cfg(feature = "glommio")]
            Backend::Glommio,
            #[cfg(feature = "tokio")]
            Backend::Tokio,
        ]
        .into_iter()
        .filter(|b| crate::rt::choose(b.runtime(), 1).is_ok())
        .collect()
    }

    /// Runs `body` on a fresh thread of `backend`.
    fn on<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
        backend: Backend,
        body: impl FnOnce() -> F + Send + 'static,
    ) -> T {
        let spec = ThreadSpec {
            name: "lanes-test".into(),
            cpu: None,
            preempt_timer: Duration::from_millis(10),
            io_memory: 64 * 1024,
            ring_depth: 128,
        };
        RtThread::start(backend, spec, body)
            .unwrap()
            .join()
            .unwrap()
    }

    /// Room for `permits` batched requests on each of `buses` buses.
    fn rooms(buses: usize, permits: usize) -> Vec<Arc<Semaphore>> {
        (0..buses)
            .map(|_| Arc::new(Semaphore::new(permits)))
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
            let drain = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                let mut got = Vec::new();
                while let Ok(entry) = rx.recv() {
                    let (nums, _) = numbers(entry);
                    assert!(nums.len() <= BUS_BATCH_MESSAGES);
                    got.extend(nums);
                }
                got
            });
            on(backend, move || async move {
                let lanes = Lanes::new(&[tx], &rooms(1, 1024));
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
