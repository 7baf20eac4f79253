//! A connection's outbound queue: shared frames waiting for the writer, bounded in
//! bytes, the single-waiter notification the writer sleeps on, and the slow-consumer
//! policy applied when a frame does not fit ([`Outbound::offer`]).
//!
//! The byte limit covers everything held for the connection: frames still queued *and*
//! the batch the writer has taken but the kernel has not yet accepted. Each frame is
//! charged what it costs in memory, not just its length: its bytes plus
//! [`FRAME_OVERHEAD_BYTES`] for its allocation, its `Bytes` handle and its queue slot
//! (encoders hand over buffers with no slack). So a connection never
//! pins more than about `limit_bytes` of memory for frames, however its socket behaves
//! and however small its frames are (`tests/hostile.rs` checks it by RSS).

use std::cell::{Cell, RefCell};
use std::time::Instant;

use bytes::Bytes;

use super::frame_queue::FrameQueue;
use super::notify::{LocalNotify, Signal};
use crate::descriptor::SlowConsumerPolicy;

/// Result of queueing a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued.
    Queued,
    /// Did not fit under the byte limit; not queued.
    Full,
    /// The connection is closing; not queued.
    Closed,
}

/// What became of a frame offered to a connection under its slow-consumer policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued.
    Queued,
    /// Did not fit; dropped and the connection kept (`DropNewest`).
    Dropped,
    /// Did not fit; the queue was cleared and closed, and the connection must now be
    /// closed as a slow consumer (`Disconnect`).
    Disconnect,
    /// The connection is closing; not queued.
    Closed,
}

/// Frames held back until a moment or a release: the netconduit-v1 post-login hold
/// (see `v1_post_auth_delay`).
#[derive(Debug, Clone, Copy)]
struct Gate {
    /// Frames at the head of the queue that may still go out before the gate.
    frames_before: usize,
    /// When the gate opens by itself.
    until: Instant,
}

/// A drained queue this small is released: re-growing it costs one allocation, holding
/// it costs every idle connection its slots.
const SMALL_QUEUE: usize = 4;

/// Queue slots a drained queue may keep allocated; more is released once it is empty.
pub const KEEP_FRAMES: usize = 256;

/// What one queued frame costs beyond its own bytes: the allocator's header and
/// rounding for its buffer (16–48 bytes), the shared-buffer record a cloned frame gets
/// (32), and its queue slot (32, up to 64 while the queue has grown by doubling).
/// Measured (`tests/memory.rs`: 16 connections, each with 1 MiB of ~48-byte replies
/// queued): charging 96 bytes let the process grow 1.18× the bound, 128 bytes 1.00–1.01×;
/// charging length alone, 3.34×.
pub const FRAME_OVERHEAD_BYTES: usize = 128;

/// What queueing `frame` charges against the limit.
fn charge(frame: &Bytes) -> usize {
    frame.len() + FRAME_OVERHEAD_BYTES
}

/// Frames waiting to be written, with what they are charged.
///
/// `repr(C)`, fields in this order: what every queued reply reads and writes first,
/// the wake-ups after.
#[derive(Debug)]
#[repr(C)]
pub struct Outbound {
    /// Set while the connection's reader acts on what it read and will write the
    /// replies itself ([`hold_wakes`](Self::hold_wakes)): queueing then does not wake
    /// the writer.
    holding: Cell<bool>,
    /// A wake the hold kept back, given when it ends if anything is left to write.
    held_wake: Cell<bool>,
    /// No more frames are accepted once set.
    closed: Cell<bool>,
    /// What the queued frames are charged ([`charge`]).
    queued_bytes: Cell<usize>,
    /// What the batch the writer took and has not finished writing is charged.
    in_flight_bytes: Cell<usize>,
    /// Most bytes that may wait here (the slow-consumer limit).
    limit_bytes: usize,
    /// Frames after a point are held until a release or a deadline.
    gate: Cell<Option<Gate>>,
    /// The frames, oldest first.
    frames: RefCell<FrameQueue>,
    /// Wakes the writer.
    pub ready: LocalNotify,
    /// Wakes senders waiting for room ([`push_waiting`](Self::push_waiting)).
    room: Signal,
}

impl Outbound {
    /// An empty queue holding at most `limit_bytes`, as charged.
    pub fn new(limit_bytes: usize) -> Outbound {
        Outbound {
            frames: RefCell::new(FrameQueue::default()),
            queued_bytes: Cell::new(0),
            in_flight_bytes: Cell::new(0),
            limit_bytes,
            closed: Cell::new(false),
            gate: Cell::new(None),
            ready: LocalNotify::default(),
            room: Signal::default(),
            holding: Cell::new(false),
            held_wake: Cell::new(false),
        }
    }

    /// Wakes the writer, or notes the wake for [`release_wakes`](Self::release_wakes)
    /// while the reader holds wakes.
    fn wake_writer(&self) {
        if self.holding.get() {
            self.held_wake.set(true);
        } else {
            self.ready.notify();
        }
    }

    /// The reader is about to act on what it read, synchronously, and to write what
    /// that queues itself ([`crate::rt::writer::write_now`]): until
    /// [`release_wakes`](Self::release_wakes), queueing does not wake the writer task.
    /// Must not be held across a wait: the caller releases before anything that can
    /// suspend (a pending handler, a hook).
    pub fn hold_wakes(&self) {
        self.holding.set(true);
    }

    /// Ends [`hold_wakes`](Self::hold_wakes): wakes the writer if a wake was held back
    /// and something is still queued (or the queue closed meanwhile).
    pub fn release_wakes(&self) {
        self.holding.set(false);
        if self.held_wake.take() && (!self.is_empty() || self.closed.get()) {
            self.ready.notify();
        }
    }

    /// Whether the reader holds writer wake-ups ([`hold_wakes`](Self::hold_wakes)).
    pub fn is_holding(&self) -> bool {
        self.holding.get()
    }

    /// Whether the writer holds no batch: everything not yet written is in the queue,
    /// so frames taken now go out in order.
    pub fn writer_idle(&self) -> bool {
        self.in_flight_bytes.get() == 0
    }

    /// Gives frames taken for a write back to the head of the queue, in order: the
    /// part of a direct write the socket did not take (`rest`, the first one possibly
    /// cut). Their charge moves back from in flight to queued, and the writer is woken.
    pub fn unsent(&self, rest: impl DoubleEndedIterator<Item = Bytes>) {
        let mut q = self.frames.borrow_mut();
        let mut charged = 0;
        for f in rest.rev() {
            charged += charge(&f);
            q.push_front(f);
        }
        drop(q);
        // What was written is no longer held; what came back is queued again.
        self.in_flight_bytes.set(0);
        self.queued_bytes.set(self.queued_bytes.get() + charged);
        self.room.notify_all();
        self.ready.notify();
    }

    /// Queues `frame` under `policy`: when it does not fit, `DropNewest` drops it and
    /// `Disconnect` clears and closes the queue so nothing more is held or counted for
    /// a connection that must now close. Never waits.
    pub fn offer(&self, frame: Bytes, policy: SlowConsumerPolicy) -> Delivery {
        match self.push(frame) {
            Push::Queued => Delivery::Queued,
            Push::Closed => Delivery::Closed,
            Push::Full => match policy {
                SlowConsumerPolicy::DropNewest => Delivery::Dropped,
                _ => {
                    self.clear();
                    self.close();
                    Delivery::Disconnect
                }
            },
        }
    }

    /// Queues `frame`, waiting for room while the queue is over its limit (the
    /// client's backpressure, where a server would apply its slow-consumer policy). A
    /// frame larger than the whole limit goes through once nothing else is held, so no
    /// sender waits forever. `false` if the queue closed first.
    pub async fn push_waiting(&self, frame: Bytes) -> bool {
        loop {
            let room = self.room.wait();
            match self.push(frame.clone()) {
                Push::Queued => return true,
                Push::Closed => return false,
                Push::Full if self.pending_bytes() == 0 => {
                    self.push_unbounded(frame);
                    return true;
                }
                Push::Full => room.await,
            }
        }
    }

    /// Queues a small frame whatever the limit: a last frame (a reason before closing)
    /// or a control frame (PING, PONG) that must not wait behind application data.
    pub fn push_unbounded(&self, frame: Bytes) {
        if self.closed.get() {
            return;
        }
        self.queued_bytes
            .set(self.queued_bytes.get() + charge(&frame));
        self.frames.borrow_mut().push_back(frame);
        self.wake_writer();
    }

    /// Lets what is queued now go out, and holds every frame queued after it until
    /// [`open_gate`](Self::open_gate) or `until`.
    pub fn hold_after_queued(&self, until: Instant) {
        self.gate.set(Some(Gate {
            frames_before: self.frames.borrow().len(),
            until,
        }));
    }

    /// Ends a hold: everything queued may go.
    pub fn open_gate(&self) {
        if self.gate.take().is_some() {
            self.wake_writer();
        }
    }

    /// When the writer must wait for the gate: `Some(deadline)` while a hold blocks the
    /// head of the queue.
    pub fn gated_until(&self) -> Option<Instant> {
        self.gate
            .get()
            .filter(|g| g.frames_before == 0)
            .map(|g| g.until)
    }

    /// Queues `frame` if it fits under the limit (counting the writer's unfinished
    /// batch).
    pub fn push(&self, frame: Bytes) -> Push {
        if self.closed.get() {
            return Push::Closed;
        }
        let queued = self.queued_bytes.get();
        let cost = charge(&frame);
        if self.in_flight_bytes.get() + queued + cost > self.limit_bytes {
            return Push::Full;
        }
        self.queued_bytes.set(queued + cost);
        let was_empty = {
            let mut q = self.frames.borrow_mut();
            let was_empty = q.is_empty();
            q.push_back(frame);
            was_empty
        };
        if was_empty {
            self.wake_writer();
        }
        Push::Queued
    }

    /// Stops accepting frames; the writer drains what is queued, then stops.
    pub fn close(&self) {
        self.closed.set(true);
        self.ready.notify();
        self.room.notify_all();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// What the frames waiting in the queue are charged (not counting the writer's
    /// batch).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.get()
    }

    /// What is held for this connection, as charged: queued plus the writer's
    /// unfinished batch. This is what the limit bounds.
    pub fn pending_bytes(&self) -> usize {
        self.queued_bytes.get() + self.in_flight_bytes.get()
    }

    /// Takes the one queued frame when it is the only one (and the gate lets it go), for
    /// a write that needs no batch. Its bytes keep counting against the limit until
    /// [`finish_batch`](Self::finish_batch).
    pub fn take_single(&self) -> Option<Bytes> {
        let gate = self.gate.get();
        if gate.is_some_and(|g| g.frames_before == 0) {
            return None;
        }
        let mut q = self.frames.borrow_mut();
        if q.len() != 1 {
            return None;
        }
        let f = q.pop_front()?;
        if q.ring_capacity() <= SMALL_QUEUE {
            q.release_ring();
        }
        if let Some(mut g) = gate {
            g.frames_before -= 1;
            self.gate.set(Some(g));
        }
        let cost = charge(&f);
        debug_assert!(cost <= self.queued_bytes.get(), "queued byte count drifted");
        self.queued_bytes.set(self.queued_bytes.get() - cost);
        self.in_flight_bytes.set(self.in_flight_bytes.get() + cost);
        Some(f)
    }

    /// Moves queued frames into `batch`: at most `max_frames` of them and about
    /// `max_bytes` (at least one frame). Their bytes keep counting against the limit
    /// until [`finish_batch`](Self::finish_batch).
    pub fn take_batch(&self, batch: &mut Vec<Bytes>, max_frames: usize, max_bytes: usize) {
        let gate = self.gate.get();
        let max_frames = gate.map_or(max_frames, |g| max_frames.min(g.frames_before));
        if max_frames == 0 {
            return;
        }
        let mut q = self.frames.borrow_mut();
        let mut taken = 0;
        let mut charged = 0;
        let mut frames = 0;
        while let Some(f) = q.front() {
            if frames > 0 && (frames == max_frames || taken + f.len() > max_bytes) {
                break;
            }
            taken += f.len();
            charged += charge(f);
            frames += 1;
            if let Some(f) = q.pop_front() {
                batch.push(f);
            }
        }
        if q.is_empty() && (q.ring_capacity() > KEEP_FRAMES || q.ring_capacity() <= SMALL_QUEUE) {
            // A burst grew it, or it never held more than a few frames (a login, a
            // reply): an idle connection gives the memory back. Between the two, a busy
            // connection keeps its slots.
            q.release_ring();
        }
        if let Some(mut g) = gate {
            g.frames_before -= frames;
            self.gate.set(Some(g));
        }
        debug_assert!(
            charged <= self.queued_bytes.get(),
            "queued byte count drifted"
        );
        self.queued_bytes.set(self.queued_bytes.get() - charged);
        self.in_flight_bytes
            .set(self.in_flight_bytes.get() + charged);
    }

    /// The writer handed every batch it took to the kernel (or gave up on them): their
    /// bytes no longer count against the limit.
    pub fn finish_batch(&self) {
        self.in_flight_bytes.set(0);
        self.room.notify_all();
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.frames.borrow().is_empty()
    }

    /// Drops everything queued (the connection is gone). The writer's batch still
    /// counts until it finishes.
    pub fn clear(&self) {
        self.frames.borrow_mut().clear();
        self.queued_bytes.set(0);
        self.room.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    /// What `n` frames of `bytes` bytes in all are charged.
    fn cost(n: usize, bytes: usize) -> usize {
        n * FRAME_OVERHEAD_BYTES + bytes
    }

    #[test]
    fn what_queueing_and_taking_a_reply_touch_comes_first() {
        use std::mem::{offset_of, size_of};
        // Behind the `Rc`'s two counts, within the first 128 bytes.
        let rc_counts = 2 * size_of::<usize>();
        let ends = [
            offset_of!(Outbound, holding) + 1,
            offset_of!(Outbound, held_wake) + 1,
            offset_of!(Outbound, closed) + 1,
            offset_of!(Outbound, queued_bytes) + size_of::<usize>(),
            offset_of!(Outbound, in_flight_bytes) + size_of::<usize>(),
            offset_of!(Outbound, limit_bytes) + size_of::<usize>(),
            offset_of!(Outbound, gate) + size_of::<Cell<Option<Gate>>>(),
            offset_of!(Outbound, frames) + size_of::<RefCell<FrameQueue>>(),
        ];
        assert!(ends.iter().all(|end| rc_counts + end <= 128), "{ends:?}");
    }

    #[test]
    fn limit_and_batches() {
        let q = Outbound::new(cost(2, 10));
        assert_eq!(q.push(Bytes::from_static(b"abcd")), Push::Queued);
        assert_eq!(q.push(Bytes::from_static(b"efgh")), Push::Queued);
        assert_eq!(q.push(Bytes::from_static(b"ijk")), Push::Full);
        assert_eq!(q.queued_bytes(), cost(2, 8), "each frame pays its overhead");
        let mut batch = Vec::new();
        q.take_batch(&mut batch, 10, 5);
        assert_eq!(batch.len(), 1);
        assert_eq!(q.queued_bytes(), cost(1, 4));
        // The taken batch still counts until the writer finishes it.
        assert_eq!(q.pending_bytes(), cost(2, 8));
        assert_eq!(q.push(Bytes::from_static(b"ijk")), Push::Full);
        q.finish_batch();
        assert_eq!(q.pending_bytes(), cost(1, 4));
        assert_eq!(q.push(Bytes::from_static(b"ijk")), Push::Queued);
        q.take_batch(&mut batch, 10, 100);
        assert_eq!(batch.len(), 3);
        assert!(q.is_empty());
        assert_eq!(q.pending_bytes(), cost(2, 7));
        q.clear();
        assert_eq!(
            q.pending_bytes(),
            cost(2, 7),
            "clear leaves the writer's batch counted"
        );
        q.finish_batch();
        assert_eq!(q.pending_bytes(), 0);
        q.close();
        assert_eq!(q.push(Bytes::from_static(b"x")), Push::Closed);
    }

    /// Whether the writer was woken since the last look (and forgets it).
    fn woken(q: &Outbound) -> bool {
        let waker = futures_lite::future::block_on(futures_lite::future::poll_once(q.ready.wait()));
        waker.is_some()
    }

    #[test]
    fn held_wakes_are_given_only_for_what_the_reader_left() {
        let q = Outbound::new(1 << 20);
        q.hold_wakes();
        assert_eq!(q.push(Bytes::from_static(b"reply")), Push::Queued);
        assert!(!woken(&q), "the reader writes it itself");
        // It did: nothing left, no wake.
        let f = q.take_single().unwrap();
        assert!(!q.writer_idle(), "taken, not yet written");
        drop(f);
        q.finish_batch();
        q.release_wakes();
        assert!(!woken(&q));
        // The socket took part of it: the rest goes back, in order, and wakes the
        // writer; the charge is the rest's.
        q.hold_wakes();
        q.push(Bytes::from_static(b"one"));
        q.push(Bytes::from_static(b"two"));
        q.push(Bytes::from_static(b"three"));
        let mut batch = Vec::new();
        q.take_batch(&mut batch, 16, 1 << 20);
        let mut cut = batch[1].clone();
        cut.advance(1);
        q.unsent([cut, batch[2].clone()].into_iter());
        assert!(woken(&q));
        q.release_wakes();
        assert!(q.writer_idle());
        assert_eq!(q.pending_bytes(), cost(2, 7));
        batch.clear();
        q.take_batch(&mut batch, 16, 1 << 20);
        assert_eq!(
            batch,
            [Bytes::from_static(b"wo"), Bytes::from_static(b"three")]
        );
        q.finish_batch();
        assert_eq!(q.pending_bytes(), 0);
        // Without a hold, queueing wakes at once.
        q.push(Bytes::from_static(b"x"));
        assert!(woken(&q));
    }

    #[test]
    fn a_waiting_push_lets_one_big_frame_through_and_unbounded_frames_bypass() {
        use futures_lite::future::block_on;
        let q = Outbound::new(cost(1, 10));
        assert!(
            block_on(q.push_waiting(Bytes::from_static(&[0; 32]))),
            "alone: goes"
        );
        assert_eq!(q.push(Bytes::from_static(b"x")), Push::Full);
        q.push_unbounded(Bytes::from_static(b"ping"));
        let mut batch = Vec::new();
        q.take_batch(&mut batch, 64, 1 << 20);
        assert_eq!(batch.len(), 2);
        // The batch in flight still holds its room.
        assert_eq!(q.push(Bytes::from_static(b"x")), Push::Full);
        q.finish_batch();
        assert!(block_on(q.push_waiting(Bytes::from_static(b"x"))));
        q.close();
        assert!(!block_on(q.push_waiting(Bytes::from_static(b"y"))));
    }

    #[test]
    fn batches_stop_at_max_frames_and_a_drained_queue_shrinks() {
        let q = Outbound::new(1 << 20);
        for _ in 0..1000 {
            assert_eq!(q.push(Bytes::from_static(b"0123456789")), Push::Queued);
        }
        let mut batch = Vec::new();
        q.take_batch(&mut batch, 300, usize::MAX);
        assert_eq!((batch.len(), q.queued_bytes()), (300, cost(700, 7000)));
        batch.clear();
        q.take_batch(&mut batch, 1000, usize::MAX);
        assert_eq!(batch.len(), 700);
        assert!(q.is_empty());
        assert!(q.frames.borrow().ring_capacity() <= KEEP_FRAMES);
        q.finish_batch();
        assert_eq!(q.pending_bytes(), 0);
    }

    #[test]
    fn one_frame_at_a_time_needs_no_ring_and_unsent_frames_keep_their_order() {
        let q = Outbound::new(1 << 20);
        // A reply at a time, taken either way: no ring is ever allocated.
        for _ in 0..3 {
            q.push(Bytes::from_static(b"reply"));
            assert_eq!(q.take_single(), Some(Bytes::from_static(b"reply")));
            q.finish_batch();
            q.push(Bytes::from_static(b"reply"));
            let mut batch = Vec::new();
            q.take_batch(&mut batch, 8, usize::MAX);
            assert_eq!(batch.len(), 1);
            q.finish_batch();
            assert_eq!(q.frames.borrow().ring_capacity(), 0);
        }
        // Frames given back go before what was queued meanwhile (slot and ring both
        // in use), and their charge moves back.
        for f in [&b"a"[..], b"b", b"c"] {
            q.push(Bytes::from_static(f));
        }
        let mut batch = Vec::new();
        q.take_batch(&mut batch, 2, usize::MAX);
        q.push(Bytes::from_static(b"d"));
        q.unsent(batch.drain(..));
        assert_eq!(
            (q.pending_bytes(), q.queued_bytes()),
            (cost(4, 4), cost(4, 4))
        );
        q.take_batch(&mut batch, 8, usize::MAX);
        let order: Vec<&[u8]> = batch.iter().map(|b| &b[..]).collect();
        assert_eq!(order, [&b"a"[..], b"b", b"c", b"d"]);
    }
}
