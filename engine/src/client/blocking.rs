//! A blocking client for plain threads: the same operations as the async
//! [`Client`](super::Client), as blocking calls.
//!
//! # Design
//!
//! Each blocking client runs an async [`Client`](super::Client) on a private executor
//! thread (of [`ClientDescriptor::runtime`](super::ClientDescriptor::runtime)) and talks to it over a channel; every method sends one command and
//! (when it has a result) blocks on a one-shot reply.
//!
//! Why not `std::net::TcpStream` and a reader thread: the login handshakes, the
//! heartbeat rule, reply matching for both codecs and reconnection with backoff would
//! all exist twice, in a blocking and an async flavour, and drift apart. Here there is
//! one implementation, and blocking reads never meet `EINTR` from the executors'
//! signals. Why a private executor rather than one shared by all blocking clients:
//! no global state, a slow handler stalls only its own client, and the client's whole
//! lifetime (thread included) is the value's.
//!
//! The cost is one executor thread per client (on glommio also its helper thread and
//! three small io_uring rings). That suits applications, tools and tests; to run
//! thousands of clients, use the async client on your own executors.
//!
//! Handlers run on the client's executor thread, one at a time, in arrival order. A
//! handler must not make blocking calls on its own client (it would wait for itself);
//! such calls fail with an `Io` error of kind `WouldBlock` instead of hanging.
//!
//! ```no_run
//! use conduit::client::blocking::Client;
//! use conduit::{ClientDescriptor, Value};
//!
//! let client = Client::new(ClientDescriptor::new("secret").port(8080))?;
//! client.on("chat", |data| println!("chat: {data}"));
//! client.open()?;
//! let sum = client.call("add", Value::map().with("a", 1).with("b", 2))?;
//! client.send_message("chat", Value::map().with("message", format!("sum is {sum}")))?;
//! client.close();
//! # Ok::<(), conduit::ClientError>(())
//! ```

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use conduit_protocol::Value;

use super::{
    spawn_executor_on, ClientDescriptor, ClientError, ClientEvent, ClientResult, Events,
    ExecutorThread, SharedStatus,
};
use crate::id::ConnectionId;

type Reply<T> = flume::Sender<ClientResult<T>>;
type SendHandler = Box<dyn Fn(Value) + Send>;
type SendAnyHandler = Box<dyn Fn(&str, Value) + Send>;
type SendEventHook = Box<dyn Fn(&ClientEvent) + Send>;

/// What the blocking side asks of the executor side.
enum Cmd {
    /// Register a handler for a message type.
    On(String, SendHandler),
    /// Register a catch-all handler.
    OnAny(SendAnyHandler),
    /// Register an event hook.
    OnEvent(SendEventHook),
    /// Add an event subscription.
    Subscribe(flume::Sender<ClientEvent>),
    /// Open the connection.
    Open(Reply<()>),
    /// Make a call.
    Call {
        /// The method to call.
        method: String,
        /// Its parameters.
        params: Value,
        /// How long to wait for the answer.
        timeout: Duration,
        /// Where the answer goes.
        reply: Reply<Value>,
    },
    /// Send a message.
    Send {
        /// The message type.
        name: String,
        /// The message data.
        data: Value,
        /// Where "queued" (or the error) goes.
        reply: Reply<()>,
    },
    /// Send a request and wait for its `<name>_response`.
    Request {
        /// The message type.
        name: String,
        /// The message data.
        data: Value,
        /// Where the response goes.
        reply: Reply<Value>,
    },
    /// Close the client and stop the executor.
    Close(Reply<()>),
}

/// A conduit client for plain threads. `Send + Sync`: share it (e.g. in an `Arc`)
/// between threads; calls from several threads run concurrently.
///
/// Dropping it closes the connection and stops its executor thread.
pub struct Client {
    /// Commands to the async client on the executor thread.
    cmds: flume::Sender<Cmd>,
    /// Connection state the executor publishes, read without a round trip.
    status: Arc<SharedStatus>,
    /// The settings, for `descriptor` and the default RPC timeout.
    desc: ClientDescriptor,
    /// The executor thread, joined (once) by `close`.
    thread: Mutex<Option<ExecutorThread<()>>>,
    /// The executor thread's id, to refuse blocking calls from its own handlers.
    thread_id: ThreadId,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Client")
            .field("host", &self.desc.host)
            .field("port", &self.desc.port)
            .field("codec", &self.desc.codec)
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// Spawns `fut` on the client's executor and sends its result to `reply`.
fn answer<T: Send + 'static>(
    reply: Reply<T>,
    fut: impl std::future::Future<Output = ClientResult<T>> + 'static,
) {
    crate::rt::spawn(async move {
        let _ = reply.send(fut.await);
    });
}

/// The executor side: owns the async client and serves commands in order.
async fn serve(
    desc: ClientDescriptor,
    status: Arc<SharedStatus>,
    cmds: flume::Receiver<Cmd>,
    ready: flume::Sender<ClientResult<()>>,
) {
    let client = match super::Client::new(desc) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    client.attach_status(status);
    let _ = ready.send(Ok(()));
    // Registrations are applied inline, so they take effect before any later command.
    while let Ok(cmd) = cmds.recv_async().await {
        match cmd {
            Cmd::On(name, f) => client.on(&name, f),
            Cmd::OnAny(f) => client.on_any(move |n, v| f(n, v)),
            Cmd::OnEvent(f) => client.on_event(move |e| f(e)),
            Cmd::Subscribe(tx) => client.subscribe(tx),
            Cmd::Open(reply) => {
                let c = client.clone();
                answer(reply, async move { c.open().await });
            }
            Cmd::Call {
                method,
                params,
                timeout,
                reply,
            } => {
                let c = client.clone();
                answer(reply, async move {
                    c.call_timeout(&method, params, timeout).await
                });
            }
            Cmd::Send { name, data, reply } => {
                let c = client.clone();
                answer(reply, async move { c.send_message(&name, data).await });
            }
            Cmd::Request { name, data, reply } => {
                let c = client.clone();
                answer(reply, async move { c.request(&name, data).await });
            }
            Cmd::Close(reply) => {
                client.close().await;
                let _ = reply.send(Ok(()));
                return;
            }
        }
    }
    // Every blocking handle is gone.
    client.close().await;
}

impl Client {
    /// A client for `desc` (validated first), not yet connected: register handlers,
    /// then [`open`](Self::open). Starts the client's executor thread.
    pub fn new(desc: ClientDescriptor) -> ClientResult<Client> {
        desc.validate()?;
        match Client::start(&desc, desc.runtime) {
            // As a server does: glommio passed the check but its executor did not
            // start (e.g. `io_uring_register` refused) — run on tokio instead.
            #[cfg(all(feature = "glommio", feature = "tokio"))]
            Err((e, Some(crate::Runtime::Glommio))) if desc.runtime == crate::Runtime::Auto => {
                tracing::warn!("client executor failed on glommio ({e}); using tokio");
                Client::start(&desc, crate::Runtime::Tokio).map_err(|(e, _)| e)
            }
            r => r.map_err(|(e, _)| e),
        }
    }

    /// [`new`](Self::new) on `runtime`; an error says which backend failed, if one
    /// was started.
    fn start(
        desc: &ClientDescriptor,
        runtime: crate::Runtime,
    ) -> Result<Client, (ClientError, Option<crate::Runtime>)> {
        let status = Arc::new(SharedStatus::default());
        let (cmd_tx, cmd_rx) = flume::unbounded();
        let (ready_tx, ready_rx) = flume::bounded(1);
        let (d, st) = (desc.clone(), status.clone());
        let thread = spawn_executor_on(runtime, "conduit-client", move || {
            serve(d, st, cmd_rx, ready_tx)
        })
        .map_err(|e| (e, None))?;
        let ran = Some(thread.runtime());
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err((e, None));
            }
            // The executor died before it could serve (it says why when joined).
            Err(_) => {
                let e = match thread.join() {
                    Err(e) => e,
                    Ok(()) => ClientError::Closed,
                };
                return Err((e, ran));
            }
        }
        Ok(Client {
            cmds: cmd_tx,
            status,
            desc: desc.clone(),
            thread_id: thread.thread_id(),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Creates a client and opens its connection: `new` + [`open`](Self::open).
    ///
    /// Handlers registered afterwards can miss messages the server pushes right at
    /// login (a `welcome` from a connect hook): for those, use `new`, register, then
    /// `open`.
    pub fn connect(desc: ClientDescriptor) -> ClientResult<Client> {
        let client = Client::new(desc)?;
        client.open()?;
        Ok(client)
    }

    fn on_own_thread(&self) -> bool {
        std::thread::current().id() == self.thread_id
    }

    /// Sends a command that answers, and blocks for the answer.
    fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> ClientResult<T> {
        if self.on_own_thread() {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::WouldBlock,
                "a blocking client was called from its own handler; that would wait for itself",
            )));
        }
        let (tx, rx) = flume::bounded(1);
        self.cmds.send(make(tx)).map_err(|_| ClientError::Closed)?;
        // The async side always answers (its calls have timeouts); no answer means its
        // executor is gone.
        rx.recv().unwrap_or(Err(ClientError::Closed))
    }

    /// Connects and logs in; see [`Client::open`](super::Client::open).
    pub fn open(&self) -> ClientResult<()> {
        self.ask(Cmd::Open)
    }

    /// The descriptor the client was built with.
    pub fn descriptor(&self) -> &ClientDescriptor {
        &self.desc
    }

    /// The connection id from the last native login; `None` for v1 and while
    /// disconnected.
    pub fn connection_id(&self) -> Option<ConnectionId> {
        self.status.connection_id.lock().ok().and_then(|id| *id)
    }

    /// Whether the client is logged in right now.
    pub fn is_connected(&self) -> bool {
        self.status.connected.load(Ordering::Acquire)
    }

    /// Calls `method` with `params`, waiting up to `rpc_timeout`; see
    /// [`Client::call`](super::Client::call).
    pub fn call(&self, method: &str, params: impl Into<Value>) -> ClientResult<Value> {
        self.call_timeout(method, params, self.desc.rpc_timeout)
    }

    /// [`call`](Self::call) with its own timeout.
    pub fn call_timeout(
        &self,
        method: &str,
        params: impl Into<Value>,
        timeout: Duration,
    ) -> ClientResult<Value> {
        let (method, params) = (method.to_owned(), params.into());
        self.ask(|reply| Cmd::Call {
            method,
            params,
            timeout,
            reply,
        })
    }

    /// Registers `handler` for messages of type `name`; see
    /// [`Client::on`](super::Client::on). It runs on the client's executor thread.
    pub fn on<F: Fn(Value) + Send + 'static>(&self, name: &str, handler: F) {
        let _ = self.cmds.send(Cmd::On(name.to_owned(), Box::new(handler)));
    }

    /// Registers a catch-all for messages without an [`on`](Self::on) handler.
    pub fn on_any<F: Fn(&str, Value) + Send + 'static>(&self, handler: F) {
        let _ = self.cmds.send(Cmd::OnAny(Box::new(handler)));
    }

    /// Registers a hook called with every [`ClientEvent`], on the executor thread.
    pub fn on_event<F: Fn(&ClientEvent) + Send + 'static>(&self, hook: F) {
        let _ = self.cmds.send(Cmd::OnEvent(Box::new(hook)));
    }

    /// A subscription to every [`ClientEvent`] from now on; wait on it with
    /// [`Events::recv_timeout`].
    pub fn events(&self) -> Events {
        let (tx, rx) = flume::unbounded();
        let _ = self.cmds.send(Cmd::Subscribe(tx));
        Events { rx }
    }

    /// Sends message `name` with `data`, fire and forget; returns once it is queued.
    pub fn send_message(&self, name: &str, data: impl Into<Value>) -> ClientResult<()> {
        let (name, data) = (name.to_owned(), data.into());
        self.ask(|reply| Cmd::Send { name, data, reply })
    }

    /// Sends message `name` and waits for `<name>_response`; see
    /// [`Client::request`](super::Client::request).
    pub fn request(&self, name: &str, data: impl Into<Value>) -> ClientResult<Value> {
        let (name, data) = (name.to_owned(), data.into());
        self.ask(|reply| Cmd::Request { name, data, reply })
    }

    /// Closes the connection (flushing what was queued, up to 1 s) and stops the
    /// executor thread. Idempotent; also done on drop.
    pub fn close(&self) {
        let thread = match self.thread.lock() {
            Ok(mut t) => t.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(thread) = thread else { return };
        if self.on_own_thread() {
            // From a handler: ask, but do not wait for (or join) ourselves.
            let (tx, _rx) = flume::bounded(1);
            let _ = self.cmds.send(Cmd::Close(tx));
            return;
        }
        let _ = self.ask(Cmd::Close);
        if let Err(e) = thread.join() {
            tracing::warn!("client executor ended badly: {e}");
        }
        self.status.connected.store(false, Ordering::Release);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}
