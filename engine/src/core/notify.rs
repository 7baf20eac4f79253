//! Single-thread wake-ups: one waiter ([`LocalNotify`]: a writer waiting for frames,
//! a reader waiting for a close request) or many ([`Signal`]: senders waiting for room
//! in a queue). Everything lives on one executor thread, so no atomics or locks.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes one waiting task on the same thread. Notifications are sticky: a notify with
/// nobody waiting is seen by the next wait.
#[derive(Debug, Default)]
pub struct LocalNotify {
    notified: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl LocalNotify {
    /// Wakes the waiter (or lets the next wait return at once).
    pub fn notify(&self) {
        self.notified.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Resolves once [`notify`](Self::notify) has been called since the last wait.
    pub fn wait(&self) -> Notified<'_> {
        Notified(self)
    }
}

/// Future returned by [`LocalNotify::wait`].
#[derive(Debug)]
pub struct Notified<'a>(&'a LocalNotify);

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.notified.replace(false) {
            return Poll::Ready(());
        }
        let mut slot = self.0.waker.borrow_mut();
        match slot.as_ref() {
            // Keep the stored waker when it would wake the same task: no clone per poll.
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// Wakes every task waiting on it. A wait resolves once `notify_all` was called after
/// the wait was created, so "create the wait, check the condition, await" never misses
/// a notification.
#[derive(Debug, Default)]
pub struct Signal {
    /// Bumped by every `notify_all`; a wait resolves once it differs from the value
    /// the wait saw when created.
    generation: Cell<u64>,
    /// The waiting tasks, woken (and forgotten) by `notify_all`.
    wakers: RefCell<Vec<Waker>>,
}

impl Signal {
    /// Wakes every waiter (and every wait created before this call).
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }

    /// A wait that resolves at the next `notify_all`.
    pub fn wait(&self) -> SignalWait<'_> {
        SignalWait {
            signal: self,
            generation: self.generation.get(),
        }
    }
}

/// Future of [`Signal::wait`].
#[derive(Debug)]
pub struct SignalWait<'a> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cx_waker() -> Waker {
        futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }))
    }

    #[test]
    fn notify_is_sticky() {
        let n = LocalNotify::default();
        n.notify();
        let waker = cx_waker();
        let mut cx = Context::from_waker(&waker);
        let mut w = n.wait();
        assert_eq!(Pin::new(&mut w).poll(&mut cx), Poll::Ready(()));
        let mut w = n.wait();
        assert_eq!(Pin::new(&mut w).poll(&mut cx), Poll::Pending);
    }

    #[test]
    fn signal_wait_sees_notifications_after_creation_only() {
        let s = Signal::default();
        s.notify_all();
        let w = s.wait();
        let waker = cx_waker();
        let mut cx = Context::from_waker(&waker);
        let mut w = std::pin::pin!(w);
        assert_eq!(w.as_mut().poll(&mut cx), Poll::Pending);
        s.notify_all();
        assert_eq!(w.as_mut().poll(&mut cx), Poll::Ready(()));
    }
}
