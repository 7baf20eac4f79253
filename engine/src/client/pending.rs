//! Calls waiting for an answer, keyed by correlation id: a plain data structure, with
//! no I/O, clock or runtime. The async side stores a reply slot per call (`W`) and fills
//! the slot this structure hands back; everything here is tested synchronously.
//!
//! Three kinds of call wait here:
//! * an RPC, answered by an RPC_RESPONSE / RPC_ERROR carrying its correlation id;
//! * a native `request`, answered by the message `<name>_response` carrying its id;
//! * a v1 `request`: v1 messages carry no correlation, so the next `<name>_response`
//!   answers the oldest request still waiting for that name (FIFO).
//!
//! There is no limit on the number of waiting calls: each one is bounded in time by its
//! caller's timeout, which removes it ([`Pending::cancel`]) however the call ends.

use std::collections::VecDeque;

use ahash::AHashMap;

/// What a waiting correlation id is waiting for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Awaiting {
    /// An RPC answer with the same correlation id.
    Rpc,
    /// A native request: the message with this name (`<name>_response`) carrying the
    /// same correlation id.
    Response(String),
    /// A v1 request: the next message with this name (`<name>_response`), oldest
    /// request first.
    V1Response(String),
}

/// One waiting call.
#[derive(Debug)]
struct Entry<W> {
    /// Which inbound frame may answer it, so an answer of the wrong kind is not taken
    /// for it.
    awaiting: Awaiting,
    /// Whatever the caller needs to be handed back to deliver the answer (a reply slot).
    waiter: W,
}

/// The calls of one client waiting for an answer.
#[derive(Debug)]
pub(crate) struct Pending<W> {
    /// The next correlation id to hand out. Starts at 1 (0 means "no correlation" on the
    /// wire) and is never reset, not even when a reconnect fails every call, as
    /// netconduit's client does: a late answer from an old connection can then never
    /// match a new call.
    next_corr: u64,
    /// Every waiting call by correlation id.
    entries: AHashMap<u64, Entry<W>>,
    /// v1 requests by reply name, oldest first: v1 replies carry no correlation id, so
    /// arrival order is the only way to match them. Holds exactly the ids of waiting
    /// `V1Response` entries.
    v1_queues: AHashMap<String, VecDeque<u64>>,
}

impl<W> Default for Pending<W> {
    fn default() -> Self {
        Pending {
            next_corr: 1,
            entries: AHashMap::new(),
            v1_queues: AHashMap::new(),
        }
    }
}

impl<W> Pending<W> {
    /// A fresh correlation id: never 0, unique until the counter wraps around `u64`.
    pub fn next_correlation_id(&mut self) -> u64 {
        let c = self.next_corr;
        self.next_corr = c.wrapping_add(1).max(1);
        c
    }

    /// Registers call `corr`, waiting for `awaiting`. A call already registered under
    /// `corr` is replaced (it cannot happen with ids from
    /// [`next_correlation_id`](Self::next_correlation_id)).
    pub fn insert(&mut self, corr: u64, awaiting: Awaiting, waiter: W) {
        self.cancel(corr);
        if let Awaiting::V1Response(name) = &awaiting {
            self.v1_queues
                .entry(name.clone())
                .or_default()
                .push_back(corr);
        }
        self.entries.insert(corr, Entry { awaiting, waiter });
    }

    /// Removes call `corr` (it ended: answered, timed out, or its caller gave up) and
    /// returns its waiter; `None` if it was not waiting.
    pub fn cancel(&mut self, corr: u64) -> Option<W> {
        let entry = self.entries.remove(&corr)?;
        if let Awaiting::V1Response(name) = &entry.awaiting {
            if let Some(queue) = self.v1_queues.get_mut(name) {
                queue.retain(|c| *c != corr);
                if queue.is_empty() {
                    self.v1_queues.remove(name);
                }
            }
        }
        Some(entry.waiter)
    }

    /// An RPC answer for `corr` arrived: the waiter of the RPC it answers, removed.
    /// `None` (and nothing changes) when no RPC waits under that id: a late answer, or
    /// an id that belongs to a request.
    pub fn complete_rpc(&mut self, corr: u64) -> Option<W> {
        match self.entries.get(&corr) {
            Some(e) if e.awaiting == Awaiting::Rpc => self.cancel(corr),
            _ => None,
        }
    }

    /// A message `name` carrying correlation id `corr` (0: none) arrived: the waiter of
    /// the request it answers, removed, or `None` when it answers nothing (it is then an
    /// ordinary pushed message).
    ///
    /// With an id, only the native request with that id and reply name matches. Without
    /// one, a `<name>_response` answers the oldest v1 request waiting for that name.
    pub fn complete_response(&mut self, name: &str, corr: u64) -> Option<W> {
        if corr != 0 {
            return match self.entries.get(&corr) {
                Some(Entry {
                    awaiting: Awaiting::Response(n),
                    ..
                }) if n == name => self.cancel(corr),
                _ => None,
            };
        }
        if !name.ends_with("_response") {
            return None;
        }
        let oldest = *self.v1_queues.get(name)?.front()?;
        self.cancel(oldest)
    }

    /// Removes every waiting call and returns their waiters, to be failed: the
    /// connection that would have answered them is gone. The correlation counter keeps
    /// counting.
    pub fn drain(&mut self) -> Vec<W> {
        self.v1_queues.clear();
        self.entries.drain().map(|(_, e)| e.waiter).collect()
    }

    /// How many calls are waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no call is waiting.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(name: &str) -> Awaiting {
        Awaiting::Response(name.into())
    }

    fn v1(name: &str) -> Awaiting {
        Awaiting::V1Response(name.into())
    }

    #[test]
    fn correlation_ids_start_at_one_and_are_never_reset() {
        let mut p = Pending::<()>::default();
        assert_eq!(p.next_correlation_id(), 1);
        assert_eq!(p.next_correlation_id(), 2);
        p.insert(2, Awaiting::Rpc, ());
        assert_eq!(p.drain().len(), 1);
        assert_eq!(p.next_correlation_id(), 3);
        // 0 means "no correlation" on the wire: the counter skips it when it wraps.
        p.next_corr = u64::MAX;
        assert_eq!(p.next_correlation_id(), u64::MAX);
        assert_eq!(p.next_correlation_id(), 1);
    }

    #[test]
    fn an_rpc_answer_completes_its_call_once() {
        let mut p = Pending::default();
        p.insert(1, Awaiting::Rpc, "a");
        p.insert(2, Awaiting::Rpc, "b");
        assert_eq!(p.complete_rpc(2), Some("b"));
        assert_eq!(p.complete_rpc(2), None, "a duplicate answer is ignored");
        assert_eq!(p.len(), 1);
        assert_eq!(p.complete_rpc(1), Some("a"));
        assert!(p.is_empty());
    }

    #[test]
    fn unknown_correlation_ids_are_ignored() {
        let mut p = Pending::default();
        p.insert(1, Awaiting::Rpc, "rpc");
        p.insert(2, response("echo_response"), "req");
        assert_eq!(p.complete_rpc(99), None);
        assert_eq!(p.complete_response("echo_response", 99), None);
        assert_eq!(p.cancel(99), None);
        // An answer of the wrong kind does not take a call that waits for another.
        assert_eq!(p.complete_rpc(2), None);
        assert_eq!(p.complete_response("echo_response", 1), None);
        assert_eq!(p.complete_response("other_response", 2), None);
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn native_responses_match_by_id_and_name() {
        let mut p = Pending::default();
        p.insert(5, response("echo_response"), "first");
        p.insert(6, response("echo_response"), "second");
        assert_eq!(p.complete_response("echo_response", 6), Some("second"));
        // Without an id, a native request is never matched by arrival order.
        assert_eq!(p.complete_response("echo_response", 0), None);
        assert_eq!(p.complete_response("echo_response", 5), Some("first"));
        assert!(p.is_empty());
    }

    #[test]
    fn v1_responses_answer_the_oldest_request_for_their_name() {
        let mut p = Pending::default();
        p.insert(1, v1("echo_response"), "e1");
        p.insert(2, v1("time_response"), "t2");
        p.insert(3, v1("echo_response"), "e3");
        // Only `_response` messages can answer, and only with their own name.
        assert_eq!(p.complete_response("echo", 0), None);
        assert_eq!(p.complete_response("chat_response", 0), None);
        assert_eq!(p.complete_response("echo_response", 0), Some("e1"));
        assert_eq!(p.complete_response("echo_response", 0), Some("e3"));
        assert_eq!(p.complete_response("echo_response", 0), None);
        assert_eq!(p.complete_response("time_response", 0), Some("t2"));
        assert!(p.is_empty());
        assert!(p.v1_queues.is_empty());
    }

    #[test]
    fn a_cancelled_v1_request_leaves_the_queue() {
        let mut p = Pending::default();
        p.insert(1, v1("echo_response"), "timed out");
        p.insert(2, v1("echo_response"), "still waiting");
        assert_eq!(p.cancel(1), Some("timed out"));
        assert_eq!(
            p.complete_response("echo_response", 0),
            Some("still waiting")
        );
        assert_eq!(p.cancel(2), None);
        assert!(p.v1_queues.is_empty());
    }

    #[test]
    fn drain_fails_every_call_on_disconnect() {
        let mut p = Pending::default();
        p.insert(1, Awaiting::Rpc, 1);
        p.insert(2, response("a_response"), 2);
        p.insert(3, v1("b_response"), 3);
        let mut failed = p.drain();
        failed.sort_unstable();
        assert_eq!(failed, [1, 2, 3]);
        assert!(p.is_empty());
        assert!(p.v1_queues.is_empty());
        // Answers that arrive for them afterwards find nothing.
        assert_eq!(p.complete_rpc(1), None);
        assert_eq!(p.complete_response("b_response", 0), None);
        assert!(p.drain().is_empty());
    }

    #[test]
    fn reinserting_an_id_replaces_the_call() {
        let mut p = Pending::default();
        p.insert(1, v1("a_response"), "old");
        p.insert(1, Awaiting::Rpc, "new");
        assert_eq!(p.len(), 1);
        assert!(p.v1_queues.is_empty());
        assert_eq!(p.complete_rpc(1), Some("new"));
    }
}
