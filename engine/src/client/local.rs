//! The client's one-shot reply slot: filled by the reader, awaited by the caller, on one
//! executor thread (no atomics or locks). Its queue and wake-ups are the server's
//! (`core::Outbound`, `core::notify`).

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

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
}
