//! The state one client's handles and tasks share (`Inner`), its lifecycle states and
//! their transitions, and how a call waits for its answer.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::rt::exec::sleep;
use conduit_protocol::handshake::LoginInfo;
use conduit_protocol::v1::V1Limits;
use conduit_protocol::{Value, ValueLimits};
use futures_lite::FutureExt;

use super::dispatch::Handlers;
use super::local::OneShot;
use super::loops::Conn;
use super::pending::{Awaiting, Pending};
use super::supervise::{EventFanout, Jitter};
use super::{ClientDescriptor, ClientError, ClientEvent, ClientResult, DisconnectReason};
use crate::core::Signal;
use crate::id::ConnectionId;

/// Where a call's answer (or its failure) is delivered.
pub(super) type ReplySlot = Rc<OneShot<ClientResult<Value>>>;

/// Where a client is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Never opened.
    Idle,
    /// `open` is logging in.
    Connecting,
    /// Logged in; calls and messages go out.
    Connected,
    /// Lost the connection; the supervisor is trying to get it back.
    Reconnecting,
    /// Lost the connection and not reconnecting (disabled, or gave up).
    Down,
    /// Closed for good.
    Closed,
}

/// State shared with the blocking facade on another thread.
#[derive(Debug, Default)]
pub(crate) struct SharedStatus {
    /// Whether the client is logged in, for `blocking::Client::is_connected` (which
    /// cannot ask the executor thread without blocking on it).
    pub connected: AtomicBool,
    /// The connection id of the current login, for `blocking::Client::connection_id`.
    pub connection_id: Mutex<Option<ConnectionId>>,
}

/// Everything one client's handles and tasks share. Lives on one executor thread, so
/// interior mutability is `Cell`/`RefCell`, never a lock.
pub(super) struct Inner {
    /// The settings the client was built with.
    pub desc: ClientDescriptor,
    /// Bounds on values decoded from the server (native payloads).
    pub value_limits: ValueLimits,
    /// Bounds on v1 payloads, including decompressed size (`max_frame_bytes`).
    pub v1_limits: V1Limits,
    /// Where the client is in its life; decides what the public methods may do.
    pub state: Cell<State>,
    /// Calls waiting for their answer, and the correlation counter.
    pub pending: RefCell<Pending<ReplySlot>>,
    /// The user's handlers for pushed messages; they survive reconnects.
    pub handlers: RefCell<Handlers>,
    /// The user's event hooks and subscriptions.
    pub events: EventFanout,
    /// The live connection, while there is one; calls and messages are queued on it.
    pub conn: RefCell<Option<Rc<Conn>>>,
    /// What the server said at the current login (connection id, name, version).
    pub login: RefCell<Option<LoginInfo>>,
    /// Set by `close` (or dropping the last handle); the supervisor stops.
    pub closing: Cell<bool>,
    /// Whether a supervisor task runs, so `open` does not start a second one and
    /// `close` knows when the connection is gone.
    pub supervising: Cell<bool>,
    /// Wakes the supervisor's backoff sleep and `close` waiters on state changes.
    pub changed: Signal,
    /// Randomness for backoff jitter (not for secrets: nonces use getrandom).
    pub jitter: Jitter,
    /// The blocking facade's view of the state, when a blocking client wraps this one.
    pub status: RefCell<Option<Arc<SharedStatus>>>,
}

impl Inner {
    /// Shared state for a client of `desc`, not yet opened; `jitter_seed` seeds the
    /// backoff jitter.
    pub fn new(desc: ClientDescriptor, jitter_seed: u64) -> Inner {
        let limits = ValueLimits::default();
        Inner {
            v1_limits: V1Limits {
                value: limits,
                max_decompressed_bytes: desc.max_frame_bytes as usize,
            },
            value_limits: limits,
            desc,
            state: Cell::new(State::Idle),
            pending: RefCell::default(),
            handlers: RefCell::default(),
            events: EventFanout::default(),
            conn: RefCell::new(None),
            login: RefCell::new(None),
            closing: Cell::new(false),
            supervising: Cell::new(false),
            changed: Signal::default(),
            jitter: Jitter::new(jitter_seed),
            status: RefCell::new(None),
        }
    }

    pub fn set_state(&self, s: State) {
        self.state.set(s);
        self.publish_status();
        self.changed.notify_all();
    }

    /// Copies the state to the blocking facade, if there is one.
    pub fn publish_status(&self) {
        if let Some(st) = self.status.borrow().as_ref() {
            st.connected
                .store(self.state.get() == State::Connected, Ordering::Release);
            if let Ok(mut id) = st.connection_id.lock() {
                *id = self.connection_id();
            }
        }
    }

    /// The connection id of the current (native) login.
    pub fn connection_id(&self) -> Option<ConnectionId> {
        self.login
            .borrow()
            .as_ref()
            .and_then(|l| l.connection_id)
            .map(ConnectionId::from_u64)
    }

    /// The connection to send on, or why there is none.
    pub fn current_conn(&self) -> ClientResult<Rc<Conn>> {
        match (self.state.get(), self.conn.borrow().as_ref()) {
            (State::Closed, _) => Err(ClientError::Closed),
            (_, _) if self.closing.get() => Err(ClientError::Closed),
            (State::Connected, Some(c)) => Ok(c.clone()),
            _ => Err(ClientError::Disconnected),
        }
    }

    /// Makes `conn` the live connection.
    pub fn install(&self, conn: Rc<Conn>, info: LoginInfo) {
        *self.conn.borrow_mut() = Some(conn);
        *self.login.borrow_mut() = Some(info);
        self.set_state(State::Connected);
    }

    /// Starts closing: no more reconnects, and the live connection (if any) is asked to
    /// close. Does not wait.
    pub fn begin_close(&self) {
        self.closing.set(true);
        if let Some(c) = self.conn.borrow().as_ref() {
            c.request_close(DisconnectReason::ClosedByClient);
        }
        if !self.supervising.get() && self.state.get() != State::Connecting {
            self.state.set(State::Closed);
            self.publish_status();
        }
        self.changed.notify_all();
    }

    /// Resolves once the client is closing.
    pub async fn wait_closing(&self) {
        loop {
            let changed = self.changed.wait();
            if self.closing.get() {
                return;
            }
            changed.await;
        }
    }

    /// Tells the user's hooks and subscribers about `event`.
    pub fn emit(&self, event: ClientEvent) {
        tracing::debug!(host = %self.desc.host, port = self.desc.port, ?event, "client event");
        self.events.emit(&event);
    }

    /// Registers call `corr` as waiting for `awaiting`. The guard removes it again when
    /// the call ends, however it ends (answer, timeout, or the caller dropping the
    /// future).
    pub fn register(&self, corr: u64, awaiting: Awaiting) -> (ReplySlot, PendingGuard<'_>) {
        let slot = Rc::new(OneShot::new());
        self.pending
            .borrow_mut()
            .insert(corr, awaiting, slot.clone());
        (
            slot,
            PendingGuard {
                pending: &self.pending,
                corr,
            },
        )
    }

    /// Waits up to `timeout` for the answer delivered to `slot`.
    pub async fn await_reply(
        &self,
        slot: &OneShot<ClientResult<Value>>,
        timeout: Duration,
    ) -> ClientResult<Value> {
        let reply = slot.wait();
        let late = async {
            sleep(timeout).await;
            Err(ClientError::Timeout)
        };
        reply.or(late).await
    }

    /// Fails every pending call (the connection that would answer is gone).
    pub fn fail_pending(&self) {
        let slots = self.pending.borrow_mut().drain();
        for slot in slots {
            slot.fill(Err(if self.closing.get() {
                ClientError::Closed
            } else {
                ClientError::Disconnected
            }));
        }
    }
}

/// Removes a pending call when it ends, however it ends.
pub(super) struct PendingGuard<'a> {
    /// The table the call waits in.
    pending: &'a RefCell<Pending<ReplySlot>>,
    /// The call's correlation id.
    corr: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending.borrow_mut().cancel(self.corr);
    }
}

/// Puts the state back when an `open` does not complete (it failed, or its future was
/// dropped midway by a caller's own timeout), so a later `open` is not refused forever.
pub(super) struct OpenGuard<'a> {
    /// The client being opened.
    pub inner: &'a Inner,
    /// The state before the open, restored on failure.
    pub before: State,
    /// Cleared once the open succeeded.
    pub armed: bool,
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        if self.armed && self.inner.state.get() == State::Connecting {
            self.inner.set_state(if self.inner.closing.get() {
                State::Closed
            } else {
                self.before
            });
        }
    }
}
