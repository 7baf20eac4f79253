//! Single-thread primitives for the client: a one-shot reply slot, a multi-waiter
//! signal, and the outbound queue with byte-based backpressure. Everything lives on one
//! executor thread, so no atomics or locks; each is a few words, which keeps a client
//! cheap enough for thousands per executor.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::core::LocalNotify;

/// A slot one task fills and one task waits on (a call's reply).
#[derive(Debug)]
pub(crate) struct OneShot<T> {
    /// The value, between the fill and the waiter taking it.
    value: RefCell<Option<T>>,
    /// The waiting task, to wake on fill.
    waker: RefCell<Option<Waker>>,
}

impl<T> OneShot<T> {
    pub fn new() -> OneShot<T> {
        OneShot {
            value: RefCell::new(None),
            waker: RefCell::new(None),
        }
    }

    /// Stores `value` (the first fill wins) and wakes the waiter.
    pub fn fill(&self, value: T) {
        {
            let mut slot = self.value.borrow_mut();
            if slot.is_some() {
                return;
            }
            *slot = Some(value);
        }
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Resolves with the value once it is filled.
    pub async fn wait(&self) -> T {
        poll_fn(|cx| {
            if let Some(v) = self.value.borrow_mut().take() {
                return Poll::Ready(v);
            }
            let mut w = self.waker.borrow_mut();
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

/// Wakes every task waiting on it. A wait resolves once `notify_all` was called after
/// the wait was created, so "create the wait, check the condition, await" never misses
/// a notification.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    /// Bumped by every `notify_all`; a wait resolves once it differs from the value
    /// the wait saw when created.
    generation: Cell<u64>,
    /// The waiting tasks, woken (and forgotten) by `notify_all`.
    wakers: RefCell<Vec<Waker>>,
}

impl Signal {
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }

    pub fn wait(&self) -> SignalWait<'_> {
        SignalWait {
            signal: self,
            generation: self.generation.get(),
        }
    }
}

/// Future of [`Signal::wait`].
#[derive(Debug)]
pub(crate) struct SignalWait<'a> {
    /// The signal waited on.
    signal: &'a Signal,
    /// The signal's generation when the wait was created.
    generation: u64,
}

impl Future for SignalWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut wakers = self.signal.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Result of a non-waiting push.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Push {
    Queued,
    /// Over the byte limit; try again after the writer made room.
    Full,
    /// The connection is closing.
    Closed,
}

/// Frames waiting for the connection's writer task.
///
/// Bounded in bytes: a sender that finds it full waits until the writer has written
/// (backpressure), instead of growing memory without bound or failing. A single frame
/// larger than the limit still goes through when the queue is empty, so nothing can
/// wait forever.
#[derive(Debug)]
pub(crate) struct SendQueue {
    /// The frames, oldest first.
    frames: RefCell<VecDeque<Bytes>>,
    /// Bytes queued plus bytes in the writer's current batch: what counts against the
    /// limit.
    queued_bytes: Cell<usize>,
    /// Bytes that may be queued before senders wait (`max_outbound_bytes`).
    limit_bytes: usize,
    /// Set when the connection is closing: no more frames are accepted.
    closed: Cell<bool>,
    /// Wakes the writer.
    pub ready: LocalNotify,
    /// Wakes senders waiting for room (and for the close).
    room: Signal,
}

impl SendQueue {
    pub fn new(limit_bytes: usize) -> SendQueue {
        SendQueue {
            frames: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            limit_bytes,
            closed: Cell::new(false),
            ready: LocalNotify::default(),
            room: Signal::default(),
        }
    }

    fn enqueue(&self, frame: Bytes) {
        self.queued_bytes.set(self.queued_bytes.get() + frame.len());
        let was_empty = {
            let mut q = self.frames.borrow_mut();
            let was_empty = q.is_empty();
            q.push_back(frame);
            was_empty
        };
        if was_empty {
            self.ready.notify();
        }
    }

    /// Queues `frame` if it fits.
    pub fn try_push(&self, frame: &Bytes) -> Push {
        if self.closed.get() {
            return Push::Closed;
        }
        let queued = self.queued_bytes.get();
        if queued > 0 && queued + frame.len() > self.limit_bytes {
            return Push::Full;
        }
        self.enqueue(frame.clone());
        Push::Queued
    }

    /// Queues `frame`, waiting for room; `false` if the connection closed first.
    pub async fn push(&self, frame: Bytes) -> bool {
        loop {
            let room = self.room.wait();
            match self.try_push(&frame) {
                Push::Queued => return true,
                Push::Closed => return false,
                Push::Full => room.await,
            }
        }
    }

    /// Queues a small control frame (PING, PONG, CLOSE) regardless of the limit: the
    /// heartbeat must not wait behind application data.
    pub fn push_control(&self, frame: Bytes) -> bool {
        if self.closed.get() {
            return false;
        }
        self.enqueue(frame);
        true
    }

    /// Moves queued frames into `batch`, up to about `max_bytes` (at least one), and
    /// returns their size. They still count against the limit until the writer calls
    /// [`written`](Self::written), so the queue never holds more than the limit
    /// (plus one oversized frame), however slowly the socket drains.
    pub fn take_batch(&self, batch: &mut Vec<Bytes>, max_frames: usize, max_bytes: usize) -> usize {
        let mut q = self.frames.borrow_mut();
        let mut taken = 0;
        while let Some(f) = q.front() {
            if batch.len() >= max_frames || (taken > 0 && taken + f.len() > max_bytes) {
                break;
            }
            taken += f.len();
            if let Some(f) = q.pop_front() {
                batch.push(f);
            }
        }
        taken
    }

    /// The writer finished a batch of `bytes` (written or abandoned): frees its room
    /// and wakes waiting senders.
    pub fn written(&self, bytes: usize) {
        self.queued_bytes
            .set(self.queued_bytes.get().saturating_sub(bytes));
        self.room.notify_all();
    }

    /// Stops accepting frames; the writer drains what is queued, then stops.
    pub fn close(&self) {
        self.closed.set(true);
        self.ready.notify();
        self.room.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.borrow().is_empty()
    }

    /// Drops everything queued (the connection is gone).
    pub fn clear(&self) {
        self.frames.borrow_mut().clear();
        self.queued_bytes.set(0);
        self.room.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    #[test]
    fn oneshot_first_fill_wins() {
        let s = OneShot::new();
        s.fill(1);
        s.fill(2);
        assert_eq!(block_on(s.wait()), 1);
    }

    #[test]
    fn queue_limit_lets_one_big_frame_through_and_control_bypasses() {
        let q = SendQueue::new(10);
        assert_eq!(q.try_push(&Bytes::from_static(&[0; 32])), Push::Queued);
        assert_eq!(q.try_push(&Bytes::from_static(b"x")), Push::Full);
        assert!(q.push_control(Bytes::from_static(b"ping")));
        let mut batch = Vec::new();
        let taken = q.take_batch(&mut batch, 64, 1 << 20);
        assert_eq!((batch.len(), taken), (2, 36));
        assert!(q.is_empty());
        // The batch in flight still holds its room.
        assert_eq!(q.try_push(&Bytes::from_static(b"x")), Push::Full);
        q.written(taken);
        assert_eq!(q.try_push(&Bytes::from_static(b"x")), Push::Queued);
        q.close();
        assert_eq!(q.try_push(&Bytes::from_static(b"x")), Push::Closed);
        assert!(!block_on(q.push(Bytes::from_static(b"y"))));
    }

    #[test]
    fn signal_wait_sees_notifications_after_creation_only() {
        let s = Signal::default();
        s.notify_all();
        let w = s.wait();
        let waker = futures_lite::future::block_on(poll_fn(|cx| Poll::Ready(cx.waker().clone())));
        let mut cx = Context::from_waker(&waker);
        let mut w = std::pin::pin!(w);
        assert_eq!(w.as_mut().poll(&mut cx), Poll::Pending);
        s.notify_all();
        assert_eq!(w.as_mut().poll(&mut cx), Poll::Ready(()));
    }
}
