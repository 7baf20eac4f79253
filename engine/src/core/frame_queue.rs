//! The order frames wait in for one connection: the oldest in a slot of its own, the
//! rest in a ring allocated only while more than one waits. A reply to one request, or
//! one broadcast to an idle receiver, is queued and taken without touching the heap;
//! an idle connection holds 40 bytes here (a slot and a pointer; an unboxed ring
//! beside the slot would make it 64).

use std::collections::VecDeque;

use bytes::Bytes;

/// A FIFO of frames. Invariant: `rest` is empty whenever `first` is `None`.
#[derive(Debug, Default)]
pub(super) struct FrameQueue {
    /// The oldest frame.
    first: Option<Bytes>,
    /// Every later frame, oldest first; boxed so an idle connection pays a pointer.
    #[allow(
        clippy::box_collection,
        reason = "the box keeps an idle connection's queue at 8 bytes here, not 32"
    )]
    rest: Option<Box<VecDeque<Bytes>>>,
}

impl FrameQueue {
    /// Appends `frame`.
    pub fn push_back(&mut self, frame: Bytes) {
        if self.first.is_none() {
            debug_assert!(self.rest.as_ref().is_none_or(|r| r.is_empty()));
            self.first = Some(frame);
        } else {
            self.rest.get_or_insert_default().push_back(frame);
        }
    }

    /// Puts `frame` before every other.
    pub fn push_front(&mut self, frame: Bytes) {
        if let Some(old) = self.first.replace(frame) {
            self.rest.get_or_insert_default().push_front(old);
        }
    }

    /// Takes the oldest frame.
    pub fn pop_front(&mut self) -> Option<Bytes> {
        let frame = self.first.take()?;
        self.first = self.rest.as_mut().and_then(|r| r.pop_front());
        Some(frame)
    }

    /// The oldest frame.
    pub fn front(&self) -> Option<&Bytes> {
        self.first.as_ref()
    }

    /// How many frames wait.
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.as_ref().map_or(0, |r| r.len())
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Slots the ring holds allocated.
    pub fn ring_capacity(&self) -> usize {
        self.rest.as_ref().map_or(0, |r| r.capacity())
    }

    /// Gives the ring's memory back (when empty: an idle connection holds none).
    pub fn release_ring(&mut self) {
        debug_assert!(self.rest.as_ref().is_none_or(|r| r.is_empty()));
        self.rest = None;
    }

    /// Drops every frame, and the ring with them.
    pub fn clear(&mut self) {
        self.first = None;
        self.rest = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    fn drain(q: &mut FrameQueue) -> Vec<u8> {
        std::iter::from_fn(|| q.pop_front()).map(|b| b[0]).collect()
    }

    #[test]
    fn first_in_first_out_across_the_slot_and_the_ring() {
        let mut q = FrameQueue::default();
        assert!(q.is_empty() && q.front().is_none());
        assert_eq!(std::mem::size_of::<FrameQueue>(), 40);
        q.push_back(f(1));
        assert_eq!(q.ring_capacity(), 0, "one frame needs no ring");
        q.push_back(f(2));
        q.push_back(f(3));
        assert_eq!(q.len(), 3);
        assert_eq!(q.front().map(|b| b[0]), Some(1));
        assert_eq!(q.pop_front().map(|b| b[0]), Some(1));
        q.push_front(f(0));
        q.push_back(f(4));
        assert_eq!(drain(&mut q), [0, 2, 3, 4]);
        assert!(q.is_empty());
        q.push_front(f(9));
        q.push_front(f(8));
        assert_eq!(q.len(), 2);
        assert!(q.ring_capacity() > 0);
        q.clear();
        assert_eq!(q.ring_capacity(), 0, "a cleared queue holds no ring");
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
        q.release_ring();
        assert_eq!(q.ring_capacity(), 0);
    }
}
