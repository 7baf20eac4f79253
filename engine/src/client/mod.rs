//! The conduit client: RPC calls, pushed messages, request/response, heartbeat and
//! automatic reconnection, speaking either codec.
//!
//! [`Client`] is async and runs on a glommio executor thread. It is built to be cheap:
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

pub mod blocking;
mod descriptor;
mod error;
mod local;
mod proto;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;
use conduit_protocol::v1::V1Limits;
use conduit_protocol::{Codec, DecoderLimits, FrameDecoder, FrameKind, Value, ValueLimits};
use futures_lite::FutureExt;
use glommio::net::TcpStream;
use glommio::timer::{sleep, Timer};
use glommio::{spawn_local, LocalExecutorBuilder, Placement};

pub use descriptor::{ClientDescriptor, ReconnectPolicy};
pub use error::{ClientError, ClientEvent, DisconnectReason, Events};

use crate::id::ConnectionId;
use crate::io::SharedStream;
use local::{OneShot, SendQueue, Signal};
use proto::{Encoder, Handshake, Heartbeat, Inbound, LoginInfo, Step, Tick};

/// Result of client operations.
pub type ClientResult<T> = Result<T, ClientError>;

/// Most frames one gathered write passes to the kernel.
const MAX_BATCH_FRAMES: usize = crate::io::MAX_IOVECS;
/// Most bytes one gathered write carries.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// How long `close` lets frames queued before it flush.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

type MessageHandler = Rc<dyn Fn(Value)>;
type AnyHandler = Rc<dyn Fn(&str, Value)>;
type EventHook = Rc<dyn Fn(&ClientEvent)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Never opened.
    Idle,
    /// `open` is logging in.
    Connecting,
    Connected,
    /// Lost the connection; the supervisor is trying to get it back.
    Reconnecting,
    /// Lost the connection and not reconnecting (disabled, or gave up).
    Down,
    Closed,
}

/// What a pending correlation id is waiting for.
#[derive(Debug)]
enum Awaiting {
    Rpc,
    /// A native request: the reply is the message `<name>_response` carrying its id.
    Response(String),
    /// A v1 request: the reply is the next `<name>_response` (queued in `v1_waiting`).
    V1Response,
}

struct Pending {
    awaiting: Awaiting,
    slot: Rc<OneShot<ClientResult<Value>>>,
}

/// State shared with the blocking facade on another thread.
#[derive(Debug, Default)]
pub(crate) struct SharedStatus {
    pub connected: std::sync::atomic::AtomicBool,
    pub connection_id: Mutex<Option<ConnectionId>>,
}

/// One live connection: its socket, send queue and close request.
struct Conn {
    stream: SharedStream,
    out: SendQueue,
    encoder: Encoder,
    /// First reason anyone asked this connection to close for.
    close: RefCell<Option<DisconnectReason>>,
    close_requested: crate::outbound::LocalNotify,
}

impl Conn {
    fn request_close(&self, reason: DisconnectReason) {
        let mut c = self.close.borrow_mut();
        if c.is_none() {
            *c = Some(reason);
            self.close_requested.notify();
        }
    }

    /// Queues `frame`, waiting for room if the queue is full.
    async fn send(&self, frame: Bytes) -> ClientResult<()> {
        if self.out.push(frame).await {
            Ok(())
        } else {
            Err(ClientError::Disconnected)
        }
    }
}

struct Inner {
    desc: ClientDescriptor,
    value_limits: ValueLimits,
    v1_limits: V1Limits,
    state: Cell<State>,
    /// Per-client correlation counter; starts at 1, never reset (not even across
    /// reconnects), as netconduit's client does.
    next_corr: Cell<u64>,
    pending: RefCell<AHashMap<u64, Pending>>,
    /// v1 requests by reply name, oldest first.
    v1_waiting: RefCell<AHashMap<String, VecDeque<u64>>>,
    handlers: RefCell<AHashMap<String, Vec<MessageHandler>>>,
    any_handlers: RefCell<Vec<AnyHandler>>,
    event_hooks: RefCell<Vec<EventHook>>,
    subscribers: RefCell<Vec<flume::Sender<ClientEvent>>>,
    conn: RefCell<Option<Rc<Conn>>>,
    login: RefCell<Option<LoginInfo>>,
    /// Set by `close` (or dropping the last handle); the supervisor stops.
    closing: Cell<bool>,
    /// Whether a supervisor task runs.
    supervising: Cell<bool>,
    /// Wakes the supervisor's backoff sleep and `close` waiters on state changes.
    changed: Signal,
    /// xorshift state for backoff jitter (not for secrets: nonces use getrandom).
    rng: Cell<u64>,
    status: RefCell<Option<Arc<SharedStatus>>>,
}

/// Drops of the last user handle close the client, so a forgotten client does not keep
/// its connection (and tasks) alive.
struct Handle {
    inner: Rc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.begin_close();
    }
}

/// An async conduit client on a glommio executor. Cheap to clone (clones share the
/// connection); `!Send`: it belongs to the executor thread that created it.
///
/// Dropping the last clone closes the connection (without waiting for it).
/// Handlers registered with [`on`](Self::on) that capture a clone keep the client
/// alive until [`close`](Self::close).
#[derive(Clone)]
pub struct Client {
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

fn random_bytes<const N: usize>() -> ClientResult<[u8; N]> {
    let mut b = [0u8; N];
    // No entropy, no login: a predictable nonce would make the proof replayable.
    getrandom::getrandom(&mut b).map_err(|e| ClientError::Io(io::Error::other(e.to_string())))?;
    Ok(b)
}

impl Client {
    /// A client for `desc` (validated first), not yet connected: register handlers and
    /// event hooks, then [`open`](Self::open) it. The client belongs to the thread that
    /// creates it; `open` and the other async methods must run on a glommio executor
    /// there.
    pub fn new(desc: ClientDescriptor) -> ClientResult<Client> {
        desc.validate()?;
        let seed = random_bytes::<8>().map_or(0x9E37_79B9_7F4A_7C15, u64::from_le_bytes) | 1;
        let limits = ValueLimits::default();
        let inner = Rc::new(Inner {
            v1_limits: V1Limits {
                value: limits,
                max_decompressed_bytes: desc.max_frame_bytes as usize,
            },
            value_limits: limits,
            desc,
            state: Cell::new(State::Idle),
            next_corr: Cell::new(1),
            pending: RefCell::default(),
            v1_waiting: RefCell::default(),
            handlers: RefCell::default(),
            any_handlers: RefCell::default(),
            event_hooks: RefCell::default(),
            subscribers: RefCell::default(),
            conn: RefCell::new(None),
            login: RefCell::new(None),
            closing: Cell::new(false),
            supervising: Cell::new(false),
            changed: Signal::default(),
            rng: Cell::new(seed),
            status: RefCell::new(None),
        });
        Ok(Client {
            handle: Rc::new(Handle { inner }),
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
        // Restores the state if this open fails or its future is dropped midway (a
        // caller's own timeout), so a later open is not refused forever.
        let mut guard = OpenGuard {
            inner,
            before: inner.state.get(),
            armed: true,
        };
        inner.set_state(State::Connecting);
        let established = {
            let attempt = inner.establish();
            let closed = async {
                inner.wait_closing().await;
                Err(ClientError::Closed)
            };
            attempt.or(closed).await
        };
        let (conn, decoder, info) = established?;
        if inner.closing.get() {
            conn.stream.shutdown_both();
            return Err(ClientError::Closed);
        }
        guard.armed = false;
        inner.install(conn.clone(), info);
        inner.emit(ClientEvent::Connected);
        inner.supervising.set(true);
        spawn_local(supervise(inner.clone(), conn, decoder)).detach();
        Ok(())
    }

    /// The descriptor the client was built with.
    pub fn descriptor(&self) -> &ClientDescriptor {
        &self.inner().desc
    }

    /// The connection id the server gave at login (native logins; `None` for v1, whose
    /// login does not carry one, and while disconnected). It changes on reconnect.
    pub fn connection_id(&self) -> Option<ConnectionId> {
        self.inner()
            .login
            .borrow()
            .as_ref()
            .and_then(|l| l.connection_id)
            .map(ConnectionId::from_u64)
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
        let corr = inner.next_corr();
        let frame = conn.encoder.rpc(corr, method, &params.into())?;
        let (slot, _guard) = inner.register(corr, Awaiting::Rpc, None);
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
            .entry(name.to_owned())
            .or_default()
            .push(Rc::new(handler));
    }

    /// Registers a catch-all for messages that have no [`on`](Self::on) handler; it gets
    /// the message type and data.
    pub fn on_any<F: Fn(&str, Value) + 'static>(&self, handler: F) {
        self.inner()
            .any_handlers
            .borrow_mut()
            .push(Rc::new(handler));
    }

    /// Registers a hook called with every [`ClientEvent`], in order, on the executor.
    pub fn on_event<F: Fn(&ClientEvent) + 'static>(&self, hook: F) {
        self.inner().event_hooks.borrow_mut().push(Rc::new(hook));
    }

    /// A subscription to every [`ClientEvent`] from now on.
    pub fn events(&self) -> Events {
        let (tx, rx) = flume::unbounded();
        self.inner().subscribers.borrow_mut().push(tx);
        Events { rx }
    }

    /// Sends message `name` with `data`, fire and forget. Returns once the frame is
    /// queued for the socket (waiting for room when `max_outbound_bytes` are queued).
    pub async fn send_message(&self, name: &str, data: impl Into<Value>) -> ClientResult<()> {
        let conn = self.inner().current_conn()?;
        let frame = conn.encoder.message(0, name, &data.into())?;
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
        let corr = inner.next_corr();
        let reply_name = format!("{name}_response");
        let (frame, awaiting, v1_key) = match conn.encoder.codec {
            Codec::Native => (
                conn.encoder.message(corr, name, &data.into())?,
                Awaiting::Response(reply_name),
                None,
            ),
            Codec::V1 => (
                conn.encoder.message(0, name, &data.into())?,
                Awaiting::V1Response,
                Some(reply_name),
            ),
        };
        let (slot, _guard) = inner.register(corr, awaiting, v1_key);
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
        self.inner().subscribers.borrow_mut().push(tx);
    }

    /// Publishes connection state to the blocking facade.
    pub(crate) fn attach_status(&self, status: Arc<SharedStatus>) {
        *self.inner().status.borrow_mut() = Some(status);
        self.inner().publish_status();
    }
}

/// Puts the state back when an `open` does not complete.
struct OpenGuard<'a> {
    inner: &'a Inner,
    before: State,
    armed: bool,
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

/// Removes a pending entry when its call ends, however it ends (answer, timeout, or the
/// caller dropping the future).
struct PendingGuard<'a> {
    inner: &'a Inner,
    corr: u64,
    v1_key: Option<String>,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inner.pending.borrow_mut().remove(&self.corr);
        if let Some(key) = &self.v1_key {
            let mut waiting = self.inner.v1_waiting.borrow_mut();
            if let Some(q) = waiting.get_mut(key) {
                q.retain(|c| *c != self.corr);
                if q.is_empty() {
                    waiting.remove(key);
                }
            }
        }
    }
}

impl Inner {
    fn set_state(&self, s: State) {
        self.state.set(s);
        self.publish_status();
        self.changed.notify_all();
    }

    fn publish_status(&self) {
        if let Some(st) = self.status.borrow().as_ref() {
            st.connected.store(
                self.state.get() == State::Connected,
                std::sync::atomic::Ordering::Release,
            );
            if let Ok(mut id) = st.connection_id.lock() {
                *id = self
                    .login
                    .borrow()
                    .as_ref()
                    .and_then(|l| l.connection_id)
                    .map(ConnectionId::from_u64);
            }
        }
    }

    fn next_corr(&self) -> u64 {
        let c = self.next_corr.get();
        self.next_corr.set(c.wrapping_add(1).max(1));
        c
    }

    fn current_conn(&self) -> ClientResult<Rc<Conn>> {
        match (self.state.get(), self.conn.borrow().as_ref()) {
            (State::Closed, _) => Err(ClientError::Closed),
            (_, _) if self.closing.get() => Err(ClientError::Closed),
            (State::Connected, Some(c)) => Ok(c.clone()),
            _ => Err(ClientError::Disconnected),
        }
    }

    fn register(
        &self,
        corr: u64,
        awaiting: Awaiting,
        v1_key: Option<String>,
    ) -> (Rc<OneShot<ClientResult<Value>>>, PendingGuard<'_>) {
        let slot = Rc::new(OneShot::new());
        self.pending.borrow_mut().insert(
            corr,
            Pending {
                awaiting,
                slot: slot.clone(),
            },
        );
        if let Some(key) = &v1_key {
            self.v1_waiting
                .borrow_mut()
                .entry(key.clone())
                .or_default()
                .push_back(corr);
        }
        (
            slot,
            PendingGuard {
                inner: self,
                corr,
                v1_key,
            },
        )
    }

    async fn await_reply(
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

    fn begin_close(&self) {
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

    async fn wait_closing(&self) {
        loop {
            let changed = self.changed.wait();
            if self.closing.get() {
                return;
            }
            changed.await;
        }
    }

    fn install(&self, conn: Rc<Conn>, info: LoginInfo) {
        *self.conn.borrow_mut() = Some(conn);
        *self.login.borrow_mut() = Some(info);
        self.set_state(State::Connected);
    }

    fn emit(&self, event: ClientEvent) {
        tracing::debug!(host = %self.desc.host, port = self.desc.port, ?event, "client event");
        let hooks: Vec<EventHook> = self.event_hooks.borrow().clone();
        for h in hooks {
            if std::panic::catch_unwind(AssertUnwindSafe(|| h(&event))).is_err() {
                tracing::error!("a client event hook panicked");
            }
        }
        self.subscribers
            .borrow_mut()
            .retain(|tx| tx.send(event.clone()).is_ok());
    }

    /// Fails every pending call (the connection that would answer is gone).
    fn fail_pending(&self) {
        let pending: Vec<Pending> = self.pending.borrow_mut().drain().map(|(_, p)| p).collect();
        self.v1_waiting.borrow_mut().clear();
        for p in pending {
            p.slot.fill(Err(if self.closing.get() {
                ClientError::Closed
            } else {
                ClientError::Disconnected
            }));
        }
    }

    fn next_random(&self) -> u64 {
        // xorshift64*: jitter only needs to be spread, not secret.
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The addresses to try, resolving names off the executor thread.
    async fn resolve(&self) -> ClientResult<Vec<SocketAddr>> {
        let (host, port) = (self.desc.host.clone(), self.desc.port);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let host_for_lookup = host.clone();
        let addrs = glommio::executor()
            .spawn_blocking(move || {
                (host_for_lookup.as_str(), port)
                    .to_socket_addrs()
                    .map(Iterator::collect::<Vec<_>>)
            })
            .await?;
        if addrs.is_empty() {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} has no address"),
            )));
        }
        Ok(addrs)
    }

    /// Connects and logs in, bounded by `connect_timeout`.
    async fn establish(&self) -> ClientResult<(Rc<Conn>, FrameDecoder, LoginInfo)> {
        let attempt = async {
            let mut last = None;
            for addr in self.resolve().await? {
                match self.login(addr).await {
                    Ok(r) => return Ok(r),
                    // Try the next address only if this one could not be reached.
                    Err(ClientError::Io(e)) => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            Err(ClientError::Io(last.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "no address to connect to")
            })))
        };
        let late = async {
            sleep(self.desc.connect_timeout).await;
            Err(ClientError::Timeout)
        };
        attempt.or(late).await
    }

    async fn login(&self, addr: SocketAddr) -> ClientResult<(Rc<Conn>, FrameDecoder, LoginInfo)> {
        let desc = &self.desc;
        let stream = TcpStream::connect_timeout(addr, desc.connect_timeout)
            .await
            .map_err(io::Error::from)?;
        stream.set_nodelay(true).map_err(io::Error::from)?;
        let stream = SharedStream::new(stream);
        let mut decoder = FrameDecoder::new(DecoderLimits {
            max_payload_bytes: desc.max_frame_bytes,
            initial_buffer_bytes: 4096,
            accept_v1: desc.codec == Codec::V1,
            accept_native: desc.codec == Codec::Native,
        });
        let mut hs = Handshake::new(
            desc.codec,
            &desc.password,
            random_bytes::<32>()?,
            &desc.name,
            &desc.version,
        );
        stream.write_all(&hs.start()?).await?;
        loop {
            // Bytes after the last login frame stay in the decoder for the reader: a
            // message the server sends right after AUTH_SUCCESS is never lost.
            let step = loop {
                match decoder.next_frame()? {
                    Some(frame) => break hs.on_frame(&frame, &self.v1_limits)?,
                    None => {
                        let n = read_some(&stream, decoder.spare()).await?;
                        if n == 0 {
                            return Err(ClientError::Io(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the server closed the connection during login",
                            )));
                        }
                        decoder.commit(n);
                    }
                }
            };
            match step {
                Step::Send(frame) => stream.write_all(&frame).await?,
                Step::Done(info) => {
                    let conn = Rc::new(Conn {
                        stream,
                        out: SendQueue::new(desc.max_outbound_bytes),
                        encoder: Encoder {
                            codec: desc.codec,
                            max_frame_bytes: desc.max_frame_bytes,
                        },
                        close: RefCell::new(None),
                        close_requested: Default::default(),
                    });
                    return Ok((conn, decoder, info));
                }
            }
        }
    }

    /// Acts on one frame received after login; `Some` ends the connection.
    fn on_inbound(&self, conn: &Conn, inbound: Inbound) -> Option<DisconnectReason> {
        match inbound {
            Inbound::Ping => {
                conn.out.push_control(conn.encoder.empty(FrameKind::Pong));
            }
            Inbound::Pong | Inbound::Ignore => {}
            Inbound::Goodbye(reason) => return Some(DisconnectReason::ServerSaidGoodbye(reason)),
            Inbound::Reply { corr, result } => {
                let entry = {
                    let mut pending = self.pending.borrow_mut();
                    match pending.get(&corr) {
                        Some(p) if matches!(p.awaiting, Awaiting::Rpc) => pending.remove(&corr),
                        _ => None,
                    }
                };
                match entry {
                    Some(p) => p.slot.fill(result.map_err(ClientError::from)),
                    None => tracing::debug!(corr, "RPC answer nobody waits for (late?); dropped"),
                }
            }
            Inbound::Message { name, data, corr } => {
                if let Some(slot) = self.take_response(&name, corr) {
                    slot.fill(Ok(data));
                } else {
                    self.dispatch(&name, data);
                }
            }
        }
        None
    }

    /// The request a `<name>_response` message answers, if one waits for it.
    fn take_response(&self, name: &str, corr: u64) -> Option<Rc<OneShot<ClientResult<Value>>>> {
        let mut pending = self.pending.borrow_mut();
        if corr != 0 {
            let matches = matches!(
                pending.get(&corr),
                Some(Pending { awaiting: Awaiting::Response(n), .. }) if n == name
            );
            return if matches {
                pending.remove(&corr).map(|p| p.slot)
            } else {
                None
            };
        }
        if !name.ends_with("_response") {
            return None;
        }
        let mut waiting = self.v1_waiting.borrow_mut();
        let queue = waiting.get_mut(name)?;
        let mut found = None;
        while let Some(c) = queue.pop_front() {
            if let Some(p) = pending.remove(&c) {
                found = Some(p.slot);
                break;
            }
        }
        if queue.is_empty() {
            waiting.remove(name);
        }
        found
    }

    /// Runs the handlers of a pushed message (a handler's panic is contained).
    fn dispatch(&self, name: &str, data: Value) {
        let handlers: Vec<MessageHandler> = self
            .handlers
            .borrow()
            .get(name)
            .cloned()
            .unwrap_or_default();
        let contain = |r: std::thread::Result<()>| {
            if r.is_err() {
                tracing::error!(name, "a client message handler panicked");
            }
        };
        if handlers.is_empty() {
            let any: Vec<AnyHandler> = self.any_handlers.borrow().clone();
            if any.is_empty() {
                tracing::debug!(name, "no handler for message type; dropped");
            }
            for h in any {
                let d = data.clone();
                contain(std::panic::catch_unwind(AssertUnwindSafe(|| h(name, d))));
            }
            return;
        }
        let last = handlers.len() - 1;
        let mut data = Some(data);
        for (i, h) in handlers.iter().enumerate() {
            let arg = if i == last {
                data.take().unwrap_or_default()
            } else {
                data.clone().unwrap_or_default()
            };
            contain(std::panic::catch_unwind(AssertUnwindSafe(|| h(arg))));
        }
    }
}

async fn read_some(stream: &SharedStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(buf).await {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Owns a client's connections, one after the other: reads the current one until it
/// ends, cleans up, and reconnects when the policy says so.
async fn supervise(inner: Rc<Inner>, mut conn: Rc<Conn>, mut decoder: FrameDecoder) {
    loop {
        let reason = run_connection(&inner, &conn, &mut decoder).await;
        inner.conn.borrow_mut().take();
        inner.login.borrow_mut().take();
        let closing = inner.closing.get();
        inner.set_state(if closing { State::Closed } else { State::Down });
        inner.fail_pending();
        tracing::info!(host = %inner.desc.host, port = inner.desc.port, %reason, "client disconnected");
        inner.emit(ClientEvent::Disconnected(reason));
        if closing || !inner.desc.reconnect.enabled {
            break;
        }
        inner.set_state(State::Reconnecting);
        match reconnect(&inner).await {
            Some((c, d, info)) => {
                conn = c;
                decoder = d;
                inner.install(conn.clone(), info);
                inner.emit(ClientEvent::Reconnected);
            }
            None => {
                inner.set_state(if inner.closing.get() {
                    State::Closed
                } else {
                    State::Down
                });
                break;
            }
        }
    }
    inner.supervising.set(false);
    inner.changed.notify_all();
}

/// Tries to get a connection back with exponential backoff and jitter; `None` when
/// closed or out of attempts.
async fn reconnect(inner: &Rc<Inner>) -> Option<(Rc<Conn>, FrameDecoder, LoginInfo)> {
    let policy = inner.desc.reconnect.clone();
    let mut attempt: u32 = 0;
    loop {
        if policy.max_attempts.is_some_and(|max| attempt >= max) {
            inner.emit(ClientEvent::GaveUp(attempt));
            return None;
        }
        attempt = attempt.saturating_add(1);
        let delay = policy.delay(attempt, inner.next_random());
        let slept = async {
            sleep(delay).await;
            true
        };
        let closed = async {
            inner.wait_closing().await;
            false
        };
        if !slept.or(closed).await {
            return None;
        }
        inner.emit(ClientEvent::Reconnecting(attempt));
        let tried = async { Some(inner.establish().await) };
        let closed = async {
            inner.wait_closing().await;
            None
        };
        match tried.or(closed).await {
            None => return None,
            Some(Ok(r)) => {
                if inner.closing.get() {
                    r.0.stream.shutdown_both();
                    return None;
                }
                tracing::info!(attempt, "client reconnected");
                return Some(r);
            }
            Some(Err(e)) => tracing::debug!(attempt, "reconnect attempt failed: {e}"),
        }
    }
}

/// Runs one logged-in connection until it ends: starts its writer, reads (keeping the
/// heartbeat), then tears down. Returns why it ended.
async fn run_connection(
    inner: &Rc<Inner>,
    conn: &Rc<Conn>,
    decoder: &mut FrameDecoder,
) -> DisconnectReason {
    let writer = spawn_local(write_loop(conn.clone()));
    let reason = read_loop(inner, conn, decoder).await;
    let reason = conn.close.borrow_mut().take().unwrap_or(reason);
    if reason == DisconnectReason::ClosedByClient {
        // Graceful: what was queued before close() goes out, then the goodbye.
        if let Some(bye) = conn.encoder.goodbye() {
            conn.out.push_control(bye);
        }
        conn.out.close();
        let flushed = async {
            writer.await;
            true
        };
        let late = async {
            sleep(CLOSE_FLUSH).await;
            false
        };
        if !flushed.or(late).await {
            tracing::debug!("close: frames left unsent after {CLOSE_FLUSH:?}");
        }
    } else {
        conn.out.clear();
        conn.out.close();
        conn.stream.shutdown_both();
        writer.await;
    }
    conn.stream.shutdown_both();
    conn.out.clear();
    reason
}

/// Reads and acts on frames until the connection must end; also the heartbeat: one
/// timer, re-armed only when it fires, so a busy connection costs no timer work per
/// frame.
async fn read_loop(
    inner: &Rc<Inner>,
    conn: &Rc<Conn>,
    decoder: &mut FrameDecoder,
) -> DisconnectReason {
    let desc = &inner.desc;
    let mut heartbeat = Heartbeat::new(
        desc.heartbeat_interval,
        desc.heartbeat_timeout,
        Instant::now(),
    );
    let mut timer = Timer::new(
        heartbeat
            .next_check()
            .saturating_duration_since(Instant::now()),
    );
    enum Event {
        Read(io::Result<usize>),
        Tick,
        Close,
    }
    loop {
        // Frames already buffered first (some may have come with AUTH_SUCCESS).
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return DisconnectReason::Protocol(e),
            };
            let inbound = match proto::interpret(&frame, inner.value_limits, &inner.v1_limits) {
                Ok(i) => i,
                Err(e) => return DisconnectReason::Protocol(e),
            };
            if let Some(r) = inner.on_inbound(conn, inbound) {
                return r;
            }
        }
        if let Some(r) = conn.close.borrow().clone() {
            return r;
        }
        let event = {
            let spare = decoder.spare();
            let read = async { Event::Read(conn.stream.read(spare).await) };
            let closed = async {
                conn.close_requested.wait().await;
                Event::Close
            };
            let tick = async {
                (&mut timer).await;
                Event::Tick
            };
            read.or(closed).or(tick).await
        };
        match event {
            Event::Read(Ok(0)) => return DisconnectReason::ServerClosed,
            Event::Read(Ok(n)) => {
                // Any bytes are life, so a large frame arriving slowly is not cut off.
                heartbeat.on_receive(Instant::now());
                decoder.commit(n);
            }
            Event::Read(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Event::Read(Err(e)) => return DisconnectReason::Io(e.to_string()),
            Event::Close => {}
            Event::Tick => {
                let now = Instant::now();
                match heartbeat.on_tick(now) {
                    Tick::None => {}
                    Tick::Ping => {
                        conn.out.push_control(conn.encoder.empty(FrameKind::Ping));
                    }
                    Tick::Close => {
                        return DisconnectReason::HeartbeatTimeout(desc.heartbeat_timeout)
                    }
                }
                timer.reset(heartbeat.next_check().saturating_duration_since(now));
            }
        }
    }
}

/// Drains the send queue into gathered writes until it is closed and empty.
async fn write_loop(conn: Rc<Conn>) {
    // Grows with the bursts it sees; given back when idle, so thousands of quiet
    // clients on one executor do not each hold a full-size batch.
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        if conn.out.is_empty() {
            if conn.out.is_closed() {
                break;
            }
            if batch.capacity() > 64 {
                batch = Vec::new();
            }
            conn.out.ready.wait().await;
            continue;
        }
        let taken = conn
            .out
            .take_batch(&mut batch, MAX_BATCH_FRAMES, MAX_BATCH_BYTES);
        let written = conn.stream.write_batch(&mut batch).await;
        conn.out.written(taken);
        if let Err(e) = written {
            batch.clear();
            conn.request_close(DisconnectReason::Io(e.to_string()));
            conn.out.clear();
            break;
        }
    }
}

// ---- executor helpers ---------------------------------------------------------------

/// A glommio executor thread started by [`spawn_executor`].
#[derive(Debug)]
pub struct ExecutorThread<T: Send + 'static> {
    handle: glommio::ExecutorJoinHandle<T>,
}

impl<T: Send + 'static> ExecutorThread<T> {
    pub(crate) fn thread_id(&self) -> std::thread::ThreadId {
        self.handle.thread().id()
    }

    /// Waits for the thread's future to finish and returns its output (an error if it
    /// panicked or the executor could not start).
    pub fn join(self) -> ClientResult<T> {
        self.handle.join().map_err(|e| {
            ClientError::Io(io::Error::other(crate::preflight::explain(&e.to_string())))
        })
    }
}

/// Starts a new glommio executor thread named `name` (not pinned) and runs the future
/// `make` builds on it, so applications and tests can host async clients without
/// depending on glommio. The machine is checked first (io_uring, locked-memory
/// limit), so a missing prerequisite is an error that says what to change, not a
/// panic.
pub fn spawn_executor<G, F, T>(name: &str, make: G) -> ClientResult<ExecutorThread<T>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    crate::preflight::check(1).map_err(|e| ClientError::Io(io::Error::other(e.to_string())))?;
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name(name)
        // Clients do no DMA file I/O; keep the registered buffer at glommio's minimum.
        .io_memory(64 * 1024)
        // Heartbeats and replies are not held up by a busy task for longer than this.
        .preempt_timer(Duration::from_millis(10))
        .spawn(make)
        .map_err(io::Error::from)?;
    Ok(ExecutorThread { handle })
}

/// Runs the future `make` builds on a new executor thread and waits for its output
/// ([`spawn_executor`] + [`ExecutorThread::join`]).
pub fn run_local<G, F, T>(make: G) -> ClientResult<T>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    spawn_executor("conduit-local", make)?.join()
}
