//! `Server`: registration, lifecycle (run / start / stop), broadcast and connection
//! lookup. A `Server` is a cheap, `Send + Sync` handle; clone it into handlers freely.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use ahash::{AHashMap, AHashSet};
use conduit_protocol::{auth, v1::V1Limits, Value, ValueLimits};
use glommio::{LocalExecutorBuilder, Placement};

use crate::bus::{BusMsg, Control, Filter, Frames};
use crate::connection::{ConnMeta, Connection};
use crate::core::CoreConfig;
use crate::descriptor::{allowed_cpus, ServerDescriptor};
use crate::error::{Error, Result};
use crate::handlers::{
    IntoReply, IntoRpcMethod, LocalBoxFuture, Registry, RpcCall, RpcError, RpcInfo,
};
use crate::id::ConnectionId;
use crate::{preflight, shard};

/// On a shard, lets its other tasks run if this one has used up its time slice. The
/// engine's sends may complete without waiting (a local fan-out, a stopped server), so a
/// handler looping on them would otherwise never yield and would starve its shard: its
/// readers, writers, heartbeat and bus (and so `stop()`). Off a shard it does nothing.
async fn yield_if_needed() {
    glommio::yield_if_needed().await;
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counters shared by every shard. Touched per connection event, never per message.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Authenticated connections.
    pub connections: AtomicUsize,
    /// Accepted connections holding a `max_connections` slot.
    pub slots: AtomicUsize,
    /// Connections being refused right now.
    pub refusing: AtomicUsize,
    /// Connections refused for `max_connections`, ever.
    pub refused: AtomicU64,
    /// Failed logins, ever.
    pub auth_failures: AtomicU64,
    /// Frames that found a full outbound queue, ever.
    pub slow_consumers: AtomicU64,
}

/// What exists only while the server runs.
pub(crate) struct Runtime {
    /// Each shard's inbound bus.
    pub bus: Vec<flume::Sender<BusMsg>>,
    /// Each shard's authenticated connections, readable from any thread (written by the
    /// owner at login and close only).
    directory: Vec<RwLock<AHashMap<ConnectionId, Arc<ConnMeta>>>>,
    /// The listening address, once shard 0 bound it.
    addr: OnceLock<SocketAddr>,
}

impl Runtime {
    pub fn directory_insert(&self, meta: Arc<ConnMeta>) {
        if let Some(d) = self.directory.get(meta.id.shard()) {
            if let Ok(mut m) = d.write() {
                m.insert(meta.id, meta);
            }
        }
    }

    pub fn directory_remove(&self, id: ConnectionId) {
        if let Some(d) = self.directory.get(id.shard()) {
            if let Ok(mut m) = d.write() {
                m.remove(&id);
            }
        }
    }

    fn lookup(&self, id: ConnectionId) -> Option<Arc<ConnMeta>> {
        self.directory
            .get(id.shard())?
            .read()
            .ok()?
            .get(&id)
            .cloned()
    }

    /// Sends a lifecycle step to one shard and waits for its outcome.
    fn control(&self, shard: usize, step: Control) -> Result<(), String> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.bus[shard]
            .send(BusMsg::Control { step, reply: tx })
            .map_err(|_| format!("shard {shard} is gone"))?;
        rx.recv()
            .map_err(|_| format!("shard {shard} stopped before answering {step:?}"))?
    }
}

struct Inner {
    desc: ServerDescriptor,
    registry: Mutex<Registry>,
    runtime: RwLock<Option<Arc<Runtime>>>,
    stats: Stats,
    running: AtomicBool,
    started_at: Mutex<Option<Instant>>,
    stop_tx: crossbeam_channel::Sender<()>,
    stop_rx: crossbeam_channel::Receiver<()>,
}

/// A conduit server (netconduit's `Server`).
///
/// ```no_run
/// use conduit::{Server, ServerDescriptor, Value};
///
/// let server = Server::new(ServerDescriptor::new("secret").port(8080))?;
/// server.on("chat", |client, data: Value| async move {
///     let text = data.get("message").and_then(Value::as_str).unwrap_or("").to_owned();
///     client
///         .server()
///         .broadcast("chat", Value::map().with("message", text))
///         .exclude([client.id()])
///         .await;
///     Value::map().with("sent", true)
/// });
/// server.run()?; // until SIGINT / SIGTERM or `stop()`
/// # Ok::<(), conduit::Error>(())
/// ```
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.inner.desc.name)
            .field("running", &self.is_running())
            .finish()
    }
}

impl Server {
    /// A server with `desc`, which is validated first.
    pub fn new(desc: ServerDescriptor) -> Result<Server> {
        desc.validate()?;
        // One pending stop request is enough: stopping is idempotent.
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        Ok(Server {
            inner: Arc::new(Inner {
                desc,
                registry: Mutex::new(Registry::default()),
                runtime: RwLock::new(None),
                stats: Stats::default(),
                running: AtomicBool::new(false),
                started_at: Mutex::new(None),
                stop_tx,
                stop_rx,
            }),
        })
    }

    pub(crate) fn same_as(&self, other: &Server) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The descriptor the server was built with.
    pub fn descriptor(&self) -> &ServerDescriptor {
        &self.inner.desc
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while registering cannot leave the registry half-written in a way
        // that matters; keep going with what is there.
        self.inner
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    // ---- registration -------------------------------------------------------------

    /// Registers an RPC method: an `#[rpc]` function (`server.rpc(add)`) or an
    /// [`RpcMethod`](crate::RpcMethod). Registering a name again replaces it.
    /// Registrations take effect at the next `run`/`start`.
    pub fn rpc(&self, method: impl IntoRpcMethod) {
        let m = method.into_rpc_method();
        let name = m.info.name.clone();
        let mut r = self.registry();
        if r.rpcs.insert(name.clone(), m).is_none() {
            r.rpc_order.push(name);
        }
    }

    /// Registers an RPC method described by `info`; `handler` receives the call (its
    /// connection and its parameter map). Registering a name again replaces it.
    /// Registrations take effect at the next `run`/`start`.
    pub fn rpc_with<F, Fut, T, E>(&self, info: RpcInfo, handler: F)
    where
        F: Fn(RpcCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + 'static,
        T: Into<Value>,
        E: Into<RpcError>,
    {
        self.rpc(crate::RpcMethod::new(info, move |c| {
            let fut = handler(c);
            async move { fut.await.map(Into::into).map_err(Into::into) }
        }));
    }

    /// Registers a handler for messages of type `name` (netconduit's `@server.on`).
    /// It receives the sending connection and the data; what it returns (if not `()`)
    /// goes back to the sender as `<name>_response`. Several handlers may share a name;
    /// they run in registration order and the last one's return value is the reply.
    pub fn on<F, Fut, R>(&self, name: &str, handler: F)
    where
        F: Fn(Connection, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + 'static,
        R: IntoReply,
    {
        let h = Arc::new(
            move |c: Connection, v: Value| -> LocalBoxFuture<Option<Value>> {
                let fut = handler(c, v);
                Box::pin(async move { fut.await.into_reply() })
            },
        );
        self.registry()
            .messages
            .entry(name.to_owned())
            .or_default()
            .push(h);
    }

    /// Registers a handler for messages of type `name` whose data is a typed struct
    /// (any `Deserialize` type). Data that does not fit is logged and dropped without a
    /// reply, as netconduit does with a handler that raises.
    pub fn on_typed<T, F, Fut, R>(&self, name: &str, handler: F)
    where
        T: serde::de::DeserializeOwned + 'static,
        F: Fn(Connection, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + 'static,
        R: IntoReply,
    {
        let msg_name = name.to_owned();
        self.on(name, move |c: Connection, v: Value| {
            let call = match crate::args::from_value::<T>(v) {
                Ok(t) => Some(handler(c, t)),
                Err(e) => {
                    tracing::warn!(message = %msg_name, "message data does not fit the handler: {e}");
                    None
                }
            };
            async move {
                match call {
                    Some(f) => f.await.into_reply(),
                    None => None,
                }
            }
        });
    }

    /// Runs `hook` once every shard listens, before any connection is accepted.
    pub fn on_startup<F, Fut>(&self, hook: F)
    where
        F: Fn(Server) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.registry()
            .on_startup
            .push(Arc::new(move |s| Box::pin(hook(s))));
    }

    /// Runs `hook` when the server stops, before connections close (so it can still
    /// broadcast).
    pub fn on_shutdown<F, Fut>(&self, hook: F)
    where
        F: Fn(Server) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.registry()
            .on_shutdown
            .push(Arc::new(move |s| Box::pin(hook(s))));
    }

    /// Runs `hook` after a client authenticates, before its frames are handled.
    pub fn on_client_connect<F, Fut>(&self, hook: F)
    where
        F: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.registry()
            .on_connect
            .push(Arc::new(move |c| Box::pin(hook(c))));
    }

    /// Runs `hook` exactly once when an authenticated client is gone, whatever the
    /// cause.
    pub fn on_client_disconnect<F, Fut>(&self, hook: F)
    where
        F: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.registry()
            .on_disconnect
            .push(Arc::new(move |c| Box::pin(hook(c))));
    }

    /// Makes `value` available to every handler as [`State<T>`](crate::State), by type
    /// (`server.state::<T>()`, or a `State<T>` parameter of an `#[rpc]` method).
    /// Registering a type again replaces it.
    pub fn manage<T: Send + Sync + 'static>(&self, value: T) {
        self.registry()
            .states
            .insert(std::any::TypeId::of::<T>(), Arc::new(value));
    }

    /// The state of type `T` registered with [`manage`](Self::manage).
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<crate::State<T>> {
        let id = std::any::TypeId::of::<T>();
        let any = match shard::current_for(self) {
            // On a shard: the frozen registry, no lock.
            Some(s) => s.registry.states.get(&id).cloned(),
            None => self.registry().states.get(&id).cloned(),
        }?;
        any.downcast::<T>().ok().map(crate::State)
    }

    // ---- state ---------------------------------------------------------------------

    /// Whether the server is running (between startup and the end of shutdown).
    pub fn is_running(&self) -> bool {
        self.inner.running.load(Ordering::Acquire)
    }

    /// Authenticated connections across all shards.
    pub fn connection_count(&self) -> usize {
        self.inner.stats.connections.load(Ordering::Acquire)
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.inner.desc.name
    }

    /// The address it listens on, once running (the real port when 0 was asked).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.runtime().and_then(|rt| rt.addr.get().copied())
    }

    /// The listening address as text (`host:port`), like netconduit's `srv.address`.
    pub fn address(&self) -> String {
        self.local_addr().map_or_else(
            || format!("{}:{}", self.inner.desc.host, self.inner.desc.port),
            |a| a.to_string(),
        )
    }

    /// The listening port (the real one when 0 was asked).
    pub fn port(&self) -> u16 {
        self.local_addr().map_or(self.inner.desc.port, |a| a.port())
    }

    /// Time since the server started, if running.
    pub fn uptime(&self) -> Option<std::time::Duration> {
        self.inner
            .started_at
            .lock()
            .ok()
            .and_then(|t| t.map(|t| t.elapsed()))
    }

    pub(crate) fn runtime(&self) -> Option<Arc<Runtime>> {
        if let Some(s) = shard::current_for(self) {
            return Some(s.rt.clone());
        }
        self.inner.runtime.read().ok()?.clone()
    }

    // ---- messaging -----------------------------------------------------------------

    /// Broadcasts a message to every authenticated connection; narrow it with
    /// [`Broadcast::include`] / [`Broadcast::exclude`], then `.await` it for the number
    /// of connections it was queued to.
    pub fn broadcast(&self, name: &str, data: impl Into<Value>) -> Broadcast {
        Broadcast {
            server: self.clone(),
            name: name.to_owned(),
            data: data.into(),
            filter: Filter::default(),
        }
    }

    async fn broadcast_frames(&self, frames: Arc<Frames>, filter: Arc<Filter>) -> usize {
        yield_if_needed().await;
        let Some(rt) = self.runtime() else { return 0 };
        let local = shard::current_for(self);
        let (tx, rx) = flume::bounded(rt.bus.len());
        let mut pending = 0;
        let mut count = 0;
        for (i, bus) in rt.bus.iter().enumerate() {
            if let Some(s) = local.as_ref().filter(|s| s.index == i) {
                count += s.fanout(&frames, &filter);
                continue;
            }
            if let Some(inc) = &filter.include {
                if !inc.iter().any(|id| id.shard() == i) {
                    continue;
                }
            }
            let msg = BusMsg::Broadcast {
                frames: frames.clone(),
                filter: filter.clone(),
                reply: tx.clone(),
            };
            if bus.send_async(msg).await.is_ok() {
                pending += 1;
            }
        }
        drop(tx);
        // Not held while waiting: a shard that exits with this request still queued
        // drops it (and its reply sender) only once every holder of the runtime is gone.
        drop(rt);
        for _ in 0..pending {
            match rx.recv_async().await {
                Ok(n) => count += n,
                Err(_) => break,
            }
        }
        count
    }

    /// The connection with `id`, if it is connected and authenticated (netconduit's
    /// `server._pool.get(id)`). Works from any shard or thread.
    pub fn connection(&self, id: ConnectionId) -> Option<Connection> {
        let meta = self.runtime()?.lookup(id)?;
        Some(Connection {
            meta,
            server: self.clone(),
        })
    }

    /// Sends a message to one connection by id, from any shard or thread.
    ///
    /// Returns [`Error::Closed`] if it is gone, or [`Error::QueueFull`] when its outbound
    /// queue is over `max_outbound_bytes` (it is then handled as a slow consumer).
    pub async fn send_to_id(
        &self,
        id: ConnectionId,
        name: &str,
        data: impl Into<Value>,
    ) -> Result<()> {
        self.send_to(id, name, &data.into()).await
    }

    pub(crate) async fn send_to(&self, id: ConnectionId, name: &str, data: &Value) -> Result<()> {
        yield_if_needed().await;
        let rt = self.runtime().ok_or(Error::NotRunning)?;
        // One receiver: encode its codec only. Not in the directory = not logged in.
        let codec = rt.lookup(id).and_then(|m| m.codec()).ok_or(Error::Closed)?;
        let frames = Arc::new(Frames::message(name, data, now_ms(), Some(codec)));
        if let Some(s) = shard::current_for(self).filter(|s| s.index == id.shard()) {
            s.send_local(id, &frames)
        } else {
            let bus = rt.bus.get(id.shard()).ok_or(Error::Closed)?;
            let (tx, rx) = flume::bounded(1);
            bus.send_async(BusMsg::Send {
                to: id,
                frames,
                reply: tx,
            })
            .await
            .map_err(|_| Error::NotRunning)?;
            drop(rt); // see broadcast_frames
            rx.recv_async().await.unwrap_or(Err(Error::Closed))
        }
    }

    pub(crate) async fn kick(&self, id: ConnectionId, last: Option<(&str, &Value)>) -> Result<()> {
        yield_if_needed().await;
        let rt = self.runtime().ok_or(Error::NotRunning)?;
        let codec = rt.lookup(id).and_then(|m| m.codec());
        let last = last.map(|(n, d)| Arc::new(Frames::message(n, d, now_ms(), codec)));
        let done = if let Some(s) = shard::current_for(self).filter(|s| s.index == id.shard()) {
            s.kick_local(id, last.as_deref())
        } else {
            let bus = rt.bus.get(id.shard()).ok_or(Error::Closed)?;
            let (tx, rx) = flume::bounded(1);
            bus.send_async(BusMsg::Kick {
                to: id,
                last,
                reply: tx,
            })
            .await
            .map_err(|_| Error::NotRunning)?;
            drop(rt); // see broadcast_frames
            rx.recv_async().await.unwrap_or(false)
        };
        if done {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    // ---- lifecycle -----------------------------------------------------------------

    /// Asks the server to stop gracefully: stop accepting, run `on_shutdown`, flush
    /// queues up to the drain timeout, close every connection, join the shards. Returns
    /// at once; callable from any thread, handler or hook.
    pub fn stop(&self) {
        let _ = self.inner.stop_tx.try_send(());
    }

    /// Runs the server until [`stop`](Self::stop), SIGINT or SIGTERM; then shuts down
    /// gracefully and returns.
    pub fn run(&self) -> Result<()> {
        let signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])?;
        let handle = signals.handle();
        let server = self.clone();
        let watcher = std::thread::Builder::new()
            .name("conduit-signals".into())
            .spawn(move || {
                let mut signals = signals;
                if let Some(sig) = signals.forever().next() {
                    tracing::info!(signal = sig, "signal received; stopping");
                    server.stop();
                }
            })?;
        let result = self.start().and_then(Running::wait);
        handle.close();
        let _ = watcher.join();
        result
    }

    /// Starts the server in the background and returns once it accepts connections.
    /// Stop it with [`Running::stop`] (or by dropping the handle).
    pub fn start(&self) -> Result<Running> {
        if self.inner.running.swap(true, Ordering::AcqRel) {
            return Err(Error::AlreadyRunning);
        }
        match self.start_shards() {
            Ok(control) => Ok(Running {
                server: self.clone(),
                control: Some(control),
            }),
            Err(e) => {
                self.inner.running.store(false, Ordering::Release);
                Err(e)
            }
        }
    }

    fn start_shards(&self) -> Result<JoinHandle<Result<()>>> {
        let desc = &self.inner.desc;
        preflight::check(desc.shards)?;
        while self.inner.stop_rx.try_recv().is_ok() {}

        let registry = Arc::new(self.registry().clone());
        let core_config = Arc::new(CoreConfig {
            password: desc.password.clone(),
            v1_password_hash: auth::v1_password_hash(&desc.password),
            server_name: desc.name.clone(),
            auth_timeout: desc.auth_timeout,
            heartbeat_interval: desc.heartbeat_interval,
            heartbeat_timeout: desc.heartbeat_timeout,
            value_limits: ValueLimits {
                max_depth: desc.max_payload_depth,
                max_values: desc.max_payload_values,
            },
            v1_limits: V1Limits {
                value: ValueLimits {
                    max_depth: desc.max_payload_depth,
                    max_values: desc.max_payload_values,
                },
                max_decompressed_bytes: desc.max_frame_bytes as usize,
            },
        });
        let ip: std::net::IpAddr = desc.host.parse().map_err(|_| Error::Config {
            field: "host",
            problem: format!("{:?} is not an IP address", desc.host),
        })?;
        let mut receivers = Vec::new();
        let mut senders = Vec::new();
        for _ in 0..desc.shards {
            let (tx, rx) = flume::bounded(desc.bus_capacity);
            senders.push(tx);
            receivers.push(rx);
        }
        let rt = Arc::new(Runtime {
            bus: senders,
            directory: (0..desc.shards).map(|_| RwLock::default()).collect(),
            addr: OnceLock::new(),
        });
        let cpus = allowed_cpus();
        let mut executors = Vec::new();
        let mut addr = SocketAddr::new(ip, desc.port);
        let mut failure = None;
        for (index, bus_rx) in receivers.into_iter().enumerate() {
            let (bound_tx, bound_rx) = crossbeam_channel::bounded(1);
            let setup = shard::ShardSetup {
                index,
                server: self.clone(),
                rt: rt.clone(),
                registry: registry.clone(),
                core_config: core_config.clone(),
                bind_addr: addr,
                bus: bus_rx,
                bound: bound_tx,
            };
            let cpu = cpus[index % cpus.len().max(1)];
            let spawned = LocalExecutorBuilder::new(Placement::Fixed(cpu))
                .name(&format!("conduit-shard{index}"))
                .io_memory(256 * 1024)
                .preempt_timer(desc.preempt_timer)
                .spawn(move || shard::shard_main(setup));
            let handle = match spawned {
                Ok(h) => h,
                Err(e) => {
                    failure = Some(Error::Runtime(format!(
                        "cannot start shard {index} on CPU {cpu}: {e}"
                    )));
                    break;
                }
            };
            let bound = bound_rx.recv();
            executors.push(handle);
            match bound {
                Ok(Ok(a)) => {
                    // Shard 0 picked the port (maybe 0 → real); the others share it.
                    addr = a;
                }
                Ok(Err(e)) => {
                    failure = Some(Error::Io(std::io::Error::other(e)));
                    break;
                }
                Err(_) => {
                    let joined = executors.pop().map(|h| h.join());
                    failure = Some(Error::Runtime(match joined {
                        Some(Err(e)) => preflight::explain(&e.to_string()),
                        _ => format!("shard {index} exited during startup"),
                    }));
                    break;
                }
            }
        }
        let _ = rt.addr.set(addr);
        let shutdown_all = |rt: &Runtime, executors: Vec<glommio::ExecutorJoinHandle<()>>| {
            for i in 0..executors.len() {
                let _ = rt.control(i, Control::Exit);
            }
            for h in executors {
                let _ = h.join();
            }
        };
        if let Some(e) = failure {
            shutdown_all(&rt, executors);
            return Err(e);
        }
        if let Ok(mut slot) = self.inner.runtime.write() {
            *slot = Some(rt.clone());
        }
        if let Ok(mut t) = self.inner.started_at.lock() {
            *t = Some(Instant::now());
        }
        if let Err(e) = rt.control(0, Control::RunStartupHooks) {
            self.clear_runtime();
            shutdown_all(&rt, executors);
            return Err(Error::Runtime(e));
        }
        for i in 0..desc.shards {
            if let Err(e) = rt.control(i, Control::StartAccepting) {
                self.clear_runtime();
                shutdown_all(&rt, executors);
                return Err(Error::Runtime(e));
            }
        }
        tracing::info!(name = %desc.name, %addr, shards = desc.shards, "server running");

        let server = self.clone();
        let control = std::thread::Builder::new()
            .name("conduit-control".into())
            .spawn(move || {
                let _ = server.inner.stop_rx.recv();
                tracing::info!("stopping");
                let n = executors.len();
                let mut errors = Vec::new();
                for i in 0..n {
                    if let Err(e) = rt.control(i, Control::StopAccepting) {
                        errors.push(e);
                    }
                }
                if let Err(e) = rt.control(0, Control::RunShutdownHooks) {
                    errors.push(e);
                }
                // Drain all shards at once: each closes its connections in parallel.
                let drains: Vec<_> = (0..n)
                    .map(|i| {
                        let rt = rt.clone();
                        std::thread::spawn(move || rt.control(i, Control::Drain))
                    })
                    .collect();
                for d in drains {
                    match d.join() {
                        Ok(Err(e)) => errors.push(e),
                        Err(_) => errors.push("drain thread panicked".into()),
                        Ok(Ok(())) => {}
                    }
                }
                server.clear_runtime();
                shutdown_all(&rt, executors);
                server.inner.running.store(false, Ordering::Release);
                if let Ok(mut t) = server.inner.started_at.lock() {
                    *t = None;
                }
                tracing::info!("stopped");
                if errors.is_empty() {
                    Ok(())
                } else {
                    Err(Error::Runtime(errors.join("; ")))
                }
            })?;
        Ok(control)
    }

    fn clear_runtime(&self) {
        if let Ok(mut slot) = self.inner.runtime.write() {
            *slot = None;
        }
    }
}

/// A running server started with [`Server::start`]. Dropping it stops the server and
/// waits for the shutdown to finish.
#[derive(Debug)]
pub struct Running {
    server: Server,
    control: Option<JoinHandle<Result<()>>>,
}

impl Running {
    /// The server.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Waits until the server has stopped (after `stop()`, a signal, or a handler
    /// calling `stop`).
    pub fn wait(mut self) -> Result<()> {
        self.join()
    }

    /// Stops the server gracefully and waits for it.
    pub fn stop(mut self) -> Result<()> {
        self.server.stop();
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        match self.control.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(Error::Runtime("control thread panicked".into()))),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.control.is_some() {
            self.server.stop();
            let _ = self.join();
        }
    }
}

/// A broadcast being prepared: `.include(..)`, `.exclude(..)`, then `.await` for the
/// number of connections it was queued to (summed over all shards).
#[must_use = "a broadcast does nothing until awaited"]
pub struct Broadcast {
    server: Server,
    name: String,
    data: Value,
    filter: Filter,
}

impl Broadcast {
    /// Only these connections (intersected with any earlier include).
    pub fn include(mut self, ids: impl IntoIterator<Item = ConnectionId>) -> Broadcast {
        let set: AHashSet<ConnectionId> = ids.into_iter().collect();
        self.filter.include = Some(match self.filter.include.take() {
            Some(prev) => prev.intersection(&set).copied().collect(),
            None => set,
        });
        self
    }

    /// Not these connections.
    pub fn exclude(mut self, ids: impl IntoIterator<Item = ConnectionId>) -> Broadcast {
        self.filter.exclude.extend(ids);
        self
    }
}

impl IntoFuture for Broadcast {
    type Output = usize;
    type IntoFuture = LocalBoxFuture<usize>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let frames = Arc::new(Frames::message(&self.name, &self.data, now_ms(), None));
            self.server
                .broadcast_frames(frames, Arc::new(self.filter))
                .await
        })
    }
}
