//! The conduit client: RPC calls, pushed messages, request/response, heartbeat and
//! automatic reconnection, speaking either codec.
//!
//! [`Client`] is async and runs on an executor thread of either runtime: one started
//! with [`spawn_executor_on`] (glommio or tokio), a server's shard, or an application's
//! own tokio runtime (inside a `tokio::task::LocalSet`). It is built to be cheap:
//! one connection costs one reader task (which also keeps the heartbeat, with a single
//! re-armed timer) and one writer task that gathers queued frames into vectored
//! writes. There is no per-client thread, lock or atomic, so one executor holds
//! thousands of clients. Plain threads use [`blocking::Client`], which wraps the same
//! client.
//!
//! ```no_run
//! use conduit::client::{run_local, Client, ClientDescriptor};
//! use conduit::Value;
//!
//! run_local(|| async {
//!     let client = Client::new(ClientDescriptor::new("secret").port(8080))?;
//!     // Register handlers before opening, so nothing pushed at login is missed.
//!     client.on("chat", |data| println!("chat: {data}"));
//!     client.open().await?;
//!     let sum = client.call("add", Value::map().with("a", 1).with("b", 2)).await?;
//!     println!("1 + 2 = {sum}");
//!     client.close().await;
//!     Ok::<(), conduit::ClientError>(())
//! })??;
//! # Ok::<(), conduit::ClientError>(())
//! ```
//!
//! Wire behaviour, per codec:
//! * Native: challenge–response login that also checks the server's proof; the
//!   connection id comes back at login; a `request` is matched to its
//!   `<name>_response` by correlation id.
//! * netconduit-v1: `sha256(password)` login; RPC answers arrive in netconduit's double
//!   envelope, which is unwrapped (`{success: false, …}` becomes [`ClientError::Rpc`]);
//!   a `request` takes the next `<name>_response` message (FIFO), since v1 messages
//!   carry no correlation.
//!
//! # Files
//!
//! Each file has one job:
//! * `mod.rs`: the public [`Client`] API.
//! * [`blocking`]: the same client for plain threads.
//! * `descriptor.rs`, `error.rs`: settings ([`ClientDescriptor`]); errors, disconnect
//!   reasons and events.
//! * `executor.rs`: [`spawn_executor`], [`spawn_executor_on`] and [`run_local`], to
//!   host clients without depending on a runtime crate.
//! * `shared.rs`: the state one client's handles and tasks share, its lifecycle
//!   states, and how a call waits for its answer.
//! * `pending.rs`: calls waiting for an answer, keyed by correlation id (a pure data
//!   structure).
//! * `connect.rs`: resolving the host, opening the socket, running the login.
//! * `supervise.rs`: the supervisor task, reconnection with backoff and jitter, and
//!   the events it reports.
//! * `loops.rs`: one connection's reader (and heartbeat) and writer loops.
//! * `dispatch.rs`: what a received frame does (answers, pushed messages to handlers).
//! * `proto.rs`: the protocol without I/O: encoding, the login handshake, what an
//!   inbound frame means, the heartbeat rule.
//! * `local.rs`: single-thread primitives (reply slot, signal, send queue).

pub mod blocking;
mod connect;
mod descriptor;
mod dispatch;
mod error;
mod executor;
mod local;
mod loops;
mod pending;
mod proto;
mod shared;
mod supervise;
mod tls;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use conduit_protocol::{Codec, Value};
use futures_lite::FutureExt;

pub use descriptor::{ClientDescriptor, ReconnectPolicy};
pub use error::{ClientError, ClientEvent, DisconnectReason, Events};
pub use executor::{run_local, spawn_executor, spawn_executor_on, ExecutorThread};
pub(crate) use shared::SharedStatus;
pub use tls::{ClientTls, TlsRoots};

use crate::id::ConnectionId;
use pending::Awaiting;
use shared::{Inner, OpenGuard, State};

/// Result of client operations.
pub type ClientResult<T> = Result<T, ClientError>;

/// The user's handle on a client's shared state. When the last one is dropped the
/// client closes, so a forgotten client does not keep its connection (and tasks) alive.
struct Handle {
    /// The state the handles and the client's tasks share.
    inner: Rc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.begin_close();
    }
}

/// An async conduit client on an executor thread (either runtime). Cheap to clone (clones share the
/// connection); `!Send`: it belongs to the executor thread that created it.
///
/// Dropping the last clone closes the connection (without waiting for it).
/// Handlers registered with [`on`](Self::on) that capture a clone keep the client
/// alive until [`close`](Self::close).
#[derive(Clone)]
pub struct Client {
    /// Shared by the clones; its drop (the last clone's) closes the client. The tasks
    /// hold the state, not the handle, so they do not keep the client open.
    handle: Rc<Handle>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = &self.handle.inner;
        f.debug_struct("Client")
            .field("host", &inner.desc.host)
            .field("port", &inner.desc.port)
            .field("codec", &inner.desc.codec)
            .field("state", &inner.state.get())
            .finish()
    }
}

impl Client {
    /// A client for `desc` (validated first), not yet connected: register handlers and
    /// event hooks, then [`open`](Self::open) it. The client belongs to the thread that
    /// creates it; `open` and the other async methods must run on an executor there
    /// (see the module docs).
    pub fn new(desc: ClientDescriptor) -> ClientResult<Client> {
        desc.validate()?;
        let seed = connect::random_bytes::<8>().map_or(0x9E37_79B9_7F4A_7C15, u64::from_le_bytes);
        Ok(Client {
            handle: Rc::new(Handle {
                inner: Rc::new(Inner::new(desc, seed)),
            }),
        })
    }

    /// Creates a client and opens its connection: `new` + [`open`](Self::open).
    ///
    /// Handlers registered afterwards can miss messages the server pushes right at
    /// login (a `welcome` from a connect hook): for those, use `new`, register, then
    /// `open`.
    pub async fn connect(desc: ClientDescriptor) -> ClientResult<Client> {
        let client = Client::new(desc)?;
        client.open().await?;
        Ok(client)
    }

    fn inner(&self) -> &Rc<Inner> {
        &self.handle.inner
    }

    /// Connects and logs in, within `connect_timeout`. Emits
    /// [`ClientEvent::Connected`]. A failed first login is returned, not retried:
    /// reconnection applies to connections lost after they were up. Also reopens a
    /// client that gave up reconnecting. `Ok` at once if already connected;
    /// [`ClientError::Disconnected`] while another open or a reconnection is under way.
    pub async fn open(&self) -> ClientResult<()> {
        let inner = self.inner();
        match inner.state.get() {
            State::Closed => return Err(ClientError::Closed),
            State::Connected => return Ok(()),
            State::Connecting | State::Reconnecting => return Err(ClientError::Disconnected),
            State::Idle | State::Down => {}
        }
        if inner.supervising.get() {
            // The previous connection's supervisor is still winding down.
            return Err(ClientError::Disconnected);
        }
        let mut guard = OpenGuard {
            inner,
            before: inner.state.get(),
            armed: true,
        };
        inner.set_state(State::Connecting);
        let established = {
            let attempt = connect::establish(&inner.desc, &inner.v1_limits);
            let closed = async {
                inner.wait_closing().await;
                Err(ClientError::Closed)
            };
            attempt.or(closed).await
        };
        let up = established?;
        if inner.closing.get() {
            up.conn.stream.shutdown_both();
            return Err(ClientError::Closed);
        }
        guard.armed = false;
        inner.install(up.conn.clone(), up.info);
        inner.emit(ClientEvent::Connected);
        inner.supervising.set(true);
        crate::rt::spawn(supervise::supervise(inner.clone(), up.conn, up.decoder));
        Ok(())
    }

    /// The descriptor the client was built with.
    pub fn descriptor(&self) -> &ClientDescriptor {
        &self.inner().desc
    }

    /// The connection id the server gave at login (native logins; `None` for v1, whose
    /// login does not carry one, and while disconnected). It changes on reconnect.
    pub fn connection_id(&self) -> Option<ConnectionId> {
        self.inner().connection_id()
    }

    /// The server's name and version from the last login.
    pub fn server_info(&self) -> Option<(String, String)> {
        self.inner()
            .login
            .borrow()
            .as_ref()
            .map(|l| (l.server_name.clone(), l.server_version.clone()))
    }

    /// Whether the client is logged in right now.
    pub fn is_connected(&self) -> bool {
        self.inner().state.get() == State::Connected
    }

    /// Calls `method` with `params` (normally a map of argument names to values) and
    /// waits up to `rpc_timeout` for the answer.
    ///
    /// Errors: [`ClientError::Rpc`] when the server answered with an error (4000 for an
    /// unknown method), [`ClientError::Timeout`], [`ClientError::Disconnected`] when the
    /// connection is down or drops before the answer. `call("listall", Value::map())`
    /// lists the server's methods.
    pub async fn call(&self, method: &str, params: impl Into<Value>) -> ClientResult<Value> {
        self.call_timeout(method, params, self.inner().desc.rpc_timeout)
            .await
    }

    /// [`call`](Self::call) with its own timeout.
    pub async fn call_timeout(
        &self,
        method: &str,
        params: impl Into<Value>,
        timeout: Duration,
    ) -> ClientResult<Value> {
        let inner = self.inner();
        let conn = inner.current_conn()?;
        let corr = inner.pending.borrow_mut().next_correlation_id();
        let frame = conn.encoder().rpc_request(corr, method, &params.into())?;
        let (slot, _guard) = inner.register(corr, Awaiting::Rpc);
        conn.send(frame).await?;
        inner.await_reply(&slot, timeout).await
    }

    /// Registers `handler` for messages of type `name` pushed by the server. Several
    /// handlers may share a name; they run in registration order, on the reader task,
    /// so they must not block (spawn work that waits). Handlers survive reconnects.
    /// Messages of a type without a handler go to [`on_any`](Self::on_any) handlers, or
    /// are dropped.
    pub fn on<F: Fn(Value) + 'static>(&self, name: &str, handler: F) {
        self.inner()
            .handlers
            .borrow_mut()
            .on(name, Rc::new(handler));
    }

    /// Registers a catch-all for messages that have no [`on`](Self::on) handler; it gets
    /// the message type and data.
    pub fn on_any<F: Fn(&str, Value) + 'static>(&self, handler: F) {
        self.inner().handlers.borrow_mut().on_any(Rc::new(handler));
    }

    /// Registers a hook called with every [`ClientEvent`], in order, on the executor.
    pub fn on_event<F: Fn(&ClientEvent) + 'static>(&self, hook: F) {
        self.inner().events.add_hook(Rc::new(hook));
    }

    /// A subscription to every [`ClientEvent`] from now on.
    pub fn events(&self) -> Events {
        let (tx, rx) = flume::unbounded();
        self.inner().events.subscribe(tx);
        Events { rx }
    }

    /// Sends a new token for this connection (same subject, later expiry) so a server
    /// with token logins keeps it open past the old token's expiry. Fire and forget:
    /// the server answers AUTH_SUCCESS, or AUTH_FAILURE and keeps the old token.
    pub async fn refresh_token(&self, token: &str) -> ClientResult<()> {
        let conn = self.inner().current_conn()?;
        let desc = self.descriptor();
        let frame = conduit_protocol::handshake::token_frame(
            desc.codec,
            token,
            &desc.name,
            &desc.version,
            conduit_protocol::clock::wall_clock_ms(),
        )?;
        conn.send(frame).await
    }

    /// Sends message `name` with `data`, fire and forget. Returns once the frame is
    /// queued for the socket (waiting for room when `max_outbound_bytes` are queued).
    pub async fn send_message(&self, name: &str, data: impl Into<Value>) -> ClientResult<()> {
        let conn = self.inner().current_conn()?;
        let frame = conn.encoder().message(0, name, &data.into())?;
        conn.send(frame).await
    }

    /// Sends message `name` and waits up to `rpc_timeout` for the server handler's
    /// reply, the message `<name>_response`. Native: matched by correlation id. v1:
    /// the next `<name>_response` to arrive answers the oldest waiting request.
    /// A server without a handler for `name` (or whose handler returns nothing) never
    /// answers: [`ClientError::Timeout`].
    pub async fn request(&self, name: &str, data: impl Into<Value>) -> ClientResult<Value> {
        let inner = self.inner();
        let conn = inner.current_conn()?;
        let corr = inner.pending.borrow_mut().next_correlation_id();
        let reply_name = format!("{name}_response");
        let (frame, awaiting) = match conn.codec {
            Codec::Native => (
                conn.encoder().message(corr, name, &data.into())?,
                Awaiting::Response(reply_name),
            ),
            // v1 messages carry no correlation: the reply is matched by arrival order.
            Codec::V1 => (
                conn.encoder().message(0, name, &data.into())?,
                Awaiting::V1Response(reply_name),
            ),
        };
        let (slot, _guard) = inner.register(corr, awaiting);
        conn.send(frame).await?;
        inner.await_reply(&slot, inner.desc.rpc_timeout).await
    }

    /// Closes the client: stops reconnecting, fails pending calls with
    /// [`ClientError::Closed`], flushes frames queued before the close (up to 1 s),
    /// says goodbye (native) and closes the socket. Returns once the connection is
    /// gone. Idempotent.
    pub async fn close(&self) {
        let inner = self.inner();
        inner.begin_close();
        loop {
            let changed = inner.changed.wait();
            if !inner.supervising.get() {
                break;
            }
            changed.await;
        }
        inner.set_state(State::Closed);
    }

    /// Adds an event subscriber (the blocking facade's `events`).
    pub(crate) fn subscribe(&self, tx: flume::Sender<ClientEvent>) {
        self.inner().events.subscribe(tx);
    }

    /// Publishes connection state to the blocking facade.
    pub(crate) fn attach_status(&self, status: Arc<SharedStatus>) {
        *self.inner().status.borrow_mut() = Some(status);
        self.inner().publish_status();
    }
}
