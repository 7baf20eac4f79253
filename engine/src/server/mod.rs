//! `Server`: registration and lifecycle (run / start / stop). Its messaging half — the
//! [`Router`] it dereferences to — is what handlers use; the runtime backend under
//! `rt/` runs the shards. A `Server` is a cheap, `Send + Sync` handle; clone it freely.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use conduit_protocol::handshake::ServerCredentials;
use conduit_protocol::{v1::V1Limits, DecoderLimits, Value, ValueLimits};

use crate::core::{CoreConfig, MAX_MESSAGE_NAME_BYTES, SERVER_VERSION};
use crate::descriptor::ServerDescriptor;
use crate::error::{Error, Result};
use crate::handlers::{
    IntoReply, IntoRpcMethod, LifecycleHook, LocalBoxFuture, Registry, RpcCall, RpcError, RpcInfo,
};
use crate::router::{Connection, Control, Router, RunState};

#[cfg(feature = "prometheus")]
mod exporter;
mod running;

use running::shut_down;
pub use running::Running;

/// A startup or shutdown hook as registered.
type ServerHook = Arc<dyn Fn(Server) -> LocalBoxFuture<()> + Send + Sync>;

/// What is registered on a server before it runs.
#[derive(Default)]
struct Setup {
    /// Handlers and connection hooks.
    registry: Registry,
    /// `on_startup` hooks, bound to the server when it starts.
    on_startup: Vec<ServerHook>,
    /// `on_shutdown` hooks, bound likewise.
    on_shutdown: Vec<ServerHook>,
    /// `on_join` / `on_leave` hooks, handed to each run.
    room_hooks: crate::router::RoomHooks,
    /// Message types registered with names too long for a `<type>_response` on the
    /// wire; `start` refuses them.
    bad_names: Vec<String>,
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
    /// The messaging half, shared with every connection handle.
    router: Router,
    /// Registrations, frozen into each run at start.
    setup: Arc<Mutex<Setup>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name())
            .field("running", &self.is_running())
            .finish()
    }
}

impl std::ops::Deref for Server {
    type Target = Router;

    /// Everything a handler can do with a server (broadcast, send and kick by id,
    /// counts, state, `stop`) is on its [`Router`].
    fn deref(&self) -> &Router {
        &self.router
    }
}

impl AsRef<Router> for Server {
    fn as_ref(&self) -> &Router {
        &self.router
    }
}

impl Server {
    /// A server with `desc`, which is validated first.
    pub fn new(desc: ServerDescriptor) -> Result<Server> {
        desc.validate()?;
        let tls = desc
            .tls
            .clone()
            .map(crate::tls::TlsState::new)
            .transpose()?;
        Ok(Server {
            router: Router::new(desc, tls),
            setup: Arc::default(),
        })
    }

    /// The messaging half, for code that keeps only that (what
    /// [`Connection::server`] returns).
    pub fn router(&self) -> &Router {
        &self.router
    }

    fn setup(&self) -> std::sync::MutexGuard<'_, Setup> {
        // A panic while registering cannot leave the registry half-written in a way
        // that matters; keep going with what is there.
        self.setup
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
        let r = &mut self.setup().registry;
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
    /// A name over 246 bytes (its `<name>_response` would not fit the wire) makes
    /// `start` fail with [`Error::Config`].
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
        let mut setup = self.setup();
        if name.len() > MAX_MESSAGE_NAME_BYTES {
            setup.bad_names.push(name.to_owned());
        }
        setup
            .registry
            .messages
            .entry(name.to_owned())
            .or_default()
            .push(h);
    }

    /// Registers a handler for messages of type `name` whose data is a typed value
    /// (any `Deserialize` type; a struct reads the data's map field by field). Data
    /// that does not fit never reaches the handler: the sender gets a message
    /// `<name>_error` with `{code: 2000, error, details: {errors: [{field, message,
    /// type}]}}`, the shape of a failed RPC's error (a message has no correlation id
    /// to answer with a failure). Return [`Reply`](crate::Reply) to answer with a typed
    /// value.
    pub fn on_typed<T, F, Fut, R>(&self, name: &str, handler: F)
    where
        T: serde::de::DeserializeOwned + 'static,
        F: Fn(Connection, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + 'static,
        R: IntoReply,
    {
        self.on_checked(name, None, handler);
    }

    /// [`on_typed`](Self::on_typed) whose data must also pass `T`'s `garde` rules
    /// (`#[derive(garde::Validate)]`), as `#[rpc]` arguments do: every broken rule is
    /// listed in the `<name>_error` sent back.
    pub fn on_validated<T, F, Fut, R>(&self, name: &str, handler: F)
    where
        T: serde::de::DeserializeOwned + garde::Validate + 'static,
        T::Context: Default,
        F: Fn(Connection, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + 'static,
        R: IntoReply,
    {
        self.on_checked(name, Some(|t: &T| t.validate()), handler);
    }

    fn on_checked<T, F, Fut, R>(&self, name: &str, validate: crate::args::Check<T>, handler: F)
    where
        T: serde::de::DeserializeOwned + 'static,
        F: Fn(Connection, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + 'static,
        R: IntoReply,
    {
        let msg_name = name.to_owned();
        let error_name = format!("{name}_error");
        let handler = Arc::new(handler);
        self.on(name, move |c: Connection, v: Value| {
            let typed = crate::args::typed_message::<T>(&msg_name, &v, validate);
            let (handler, error_name) = (handler.clone(), error_name.clone());
            let msg_name2 = msg_name.clone();
            async move {
                match typed {
                    Ok(t) => handler(c, t).await.into_reply(),
                    Err(e) => {
                        let data = crate::handlers::message_error_value(&e, &msg_name2);
                        if let Err(err) = c.send_message(&error_name, data).await {
                            tracing::debug!(conn = %c.id(), "{error_name} not sent: {err}");
                        }
                        None
                    }
                }
            }
        });
    }

    /// Registers an `#[rpc]` function (or any [`RpcMethod`](crate::RpcMethod)) as the
    /// handler of the **messages** named like it: the message's data map is its
    /// arguments, with everything `#[rpc]` gives — injected `Connection` and
    /// `State<T>`, defaults, `#[validate]` structs with `garde` rules. Its result is
    /// sent back as `<name>_response` (nothing for `()` or nil); an error — a bad
    /// argument (code 2000, one entry per field) or the handler's own `Err` — is sent
    /// back as a message `<name>_error` with the RPC error's shape `{code, error,
    /// details}`. It is not callable by RPC unless also registered with
    /// [`rpc`](Self::rpc).
    pub fn on_message(&self, method: impl IntoRpcMethod) {
        let method = method.into_rpc_method();
        let name = method.info.name.clone();
        let error_name = format!("{name}_error");
        if let Some(archived) = method.archived {
            // Native senders' data is read in place (see `dispatch::run_in_place`).
            self.setup()
                .registry
                .archived_messages
                .insert(name.clone(), archived);
        }
        let call = method.call;
        let msg_name = name.clone();
        self.on(&name, move |c: Connection, data: Value| {
            let fut = call(crate::RpcCall {
                connection: c.clone(),
                method: msg_name.clone(),
                params: data,
            });
            let (name, error_name) = (msg_name.clone(), error_name.clone());
            async move {
                match fut.await {
                    Ok(Value::Nil) => None,
                    Ok(v) => Some(v),
                    Err(e) => {
                        let data = crate::handlers::message_error_value(&e, &name);
                        if let Err(err) = c.send_message(&error_name, data).await {
                            tracing::debug!(conn = %c.id(), "{error_name} not sent: {err}");
                        }
                        None
                    }
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
        self.setup()
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
        self.setup()
            .on_shutdown
            .push(Arc::new(move |s| Box::pin(hook(s))));
    }

    /// Runs `hook` after a client authenticates, before its frames are handled.
    pub fn on_client_connect<F, Fut>(&self, hook: F)
    where
        F: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.setup()
            .registry
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
        self.setup()
            .registry
            .on_disconnect
            .push(Arc::new(move |c| Box::pin(hook(c))));
    }

    /// Runs `hook` after a connection joined a room (with the room's name), in the
    /// task that called [`Connection::join`] before that returns — so a presence
    /// announcement is ordered with what the joiner does next.
    pub fn on_join<F, Fut>(&self, hook: F)
    where
        F: Fn(Connection, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.setup()
            .room_hooks
            .on_join
            .push(Arc::new(move |c, r| Box::pin(hook(c, r))));
    }

    /// Runs `hook` after a connection left a room: in the task that called
    /// [`Connection::leave`], or on its shard when it disconnected (once per room,
    /// before the disconnect hooks).
    pub fn on_leave<F, Fut>(&self, hook: F)
    where
        F: Fn(Connection, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.setup()
            .room_hooks
            .on_leave
            .push(Arc::new(move |c, r| Box::pin(hook(c, r))));
    }

    /// Makes `value` available to every handler as [`State<T>`](crate::State), by type
    /// (`server.state::<T>()`, or a `State<T>` parameter of an `#[rpc]` method).
    /// Registering a type again replaces it.
    pub fn manage<T: Send + Sync + 'static>(&self, value: T) {
        self.router
            .put_state(std::any::TypeId::of::<T>(), Arc::new(value));
    }

    // ---- lifecycle -----------------------------------------------------------------

    /// Runs the server until [`stop`](Router::stop), SIGINT or SIGTERM; then shuts down
    /// gracefully and returns. A server with TLS also reloads its certificate on
    /// SIGHUP (as [`reload_tls`](Router::reload_tls) does; a failed reload is logged
    /// and the certificate in use stays).
    pub fn run(&self) -> Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut wanted = vec![SIGINT, SIGTERM];
        if self.descriptor().tls.is_some() {
            wanted.push(SIGHUP);
        }
        let signals = signal_hook::iterator::Signals::new(wanted)?;
        let handle = signals.handle();
        let server = self.clone();
        let watcher = std::thread::Builder::new()
            .name("conduit-signals".into())
            .spawn(move || {
                let mut signals = signals;
                for sig in signals.forever() {
                    if sig == SIGHUP {
                        tracing::info!("SIGHUP: reloading the TLS certificate");
                        // Logged either way by reload_tls.
                        let _ = server.reload_tls();
                        continue;
                    }
                    tracing::info!(signal = sig, "signal received; stopping");
                    server.stop();
                    break;
                }
            })?;
        let result = self.start().and_then(Running::wait);
        handle.close();
        let _ = watcher.join();
        result
    }

    /// Starts the server in the background and returns once it accepts connections.
    /// Stop it with [`Running::stop`] (or by dropping the handle); an async
    /// application awaits it with [`Running::stopped`] or
    /// [`Running::stop_and_wait`]. Starting takes milliseconds (the shards' threads
    /// start and bind, the `on_startup` hooks run), so calling it from inside a tokio
    /// task is fine — unless a startup hook waits for that task's own runtime.
    pub fn start(&self) -> Result<Running> {
        if self.router.set_running(true) {
            return Err(Error::AlreadyRunning);
        }
        match self.start_shards() {
            Ok((control, done, runtime)) => Ok(Running {
                server: self.clone(),
                control: Some(control),
                done,
                runtime,
            }),
            Err(e) => {
                self.router.set_running(false);
                Err(e)
            }
        }
    }

    /// Freezes the registrations into what a run's shards share.
    fn freeze(&self) -> Result<(Arc<Registry>, Arc<CoreConfig>)> {
        let desc = self.descriptor();
        let setup = self.setup();
        if let Some(name) = setup.bad_names.first() {
            return Err(Error::Config {
                field: "message handler",
                problem: format!(
                    "type name of {} bytes: at most {MAX_MESSAGE_NAME_BYTES} fit on the wire with `_response`",
                    name.len()
                ),
            });
        }
        // A type read in place has exactly one handler: another one would need the
        // data decoded, which native senders' archives are not.
        if let Some(name) = setup
            .registry
            .archived_messages
            .keys()
            .find(|n| setup.registry.messages.get(*n).is_some_and(|h| h.len() > 1))
        {
            return Err(Error::Config {
                field: "message handler",
                problem: format!(
                    "`{name}` reads its data in place (on_message of an archived method) and has other handlers too; give it one"
                ),
            });
        }
        let mut registry = setup.registry.clone();
        let bind = |hooks: &[ServerHook]| -> Vec<LifecycleHook> {
            hooks
                .iter()
                .map(|h| {
                    let (h, server) = (h.clone(), self.clone());
                    Arc::new(move || h(server.clone())) as LifecycleHook
                })
                .collect()
        };
        registry.on_startup = bind(&setup.on_startup);
        registry.on_shutdown = bind(&setup.on_shutdown);
        registry.freeze();
        drop(setup);
        let value_limits = ValueLimits {
            max_depth: desc.max_payload_depth,
            max_values: desc.max_payload_values,
        };
        let tokens = desc
            .tokens
            .as_ref()
            .map(crate::tokens::Verifier::new)
            .transpose()?;
        let mut creds = ServerCredentials::new(&desc.password, &desc.name, SERVER_VERSION);
        creds.allow_password = desc.tokens.as_ref().is_none_or(|t| t.allow_password);
        let core_config = CoreConfig {
            creds,
            tokens,
            token_leeway_ms: desc
                .tokens
                .as_ref()
                .map_or(0, |t| t.leeway.as_millis() as u64),
            auth_timeout: desc.auth_timeout,
            heartbeat_interval: desc.heartbeat_interval,
            heartbeat_timeout: desc.heartbeat_timeout,
            auth_failure_delay: desc.auth_failure_delay,
            v1_post_auth_delay: desc.v1_post_auth_delay,
            value_limits,
            v1_limits: V1Limits {
                value: value_limits,
                max_decompressed_bytes: desc.max_frame_bytes as usize,
            },
            decoder_limits: DecoderLimits {
                max_payload_bytes: desc.max_frame_bytes,
                initial_buffer_bytes: desc.recv_buffer_bytes,
                accept_v1: desc.allow_v1,
                accept_native: desc.allow_native,
            },
            max_auth_frame_bytes: desc.max_auth_frame_bytes,
            slow_consumer: desc.slow_consumer,
            max_outbound_bytes: desc.max_outbound_bytes,
            routes: registry.route_table(),
            inbound_rate: crate::core::InboundRate {
                frames_per_s: desc.max_inbound_frames_per_s,
                bytes_per_s: desc.max_inbound_bytes_per_s,
            },
            rate_policy: desc.inbound_rate_policy,
        };
        Ok((Arc::new(registry), Arc::new(core_config)))
    }

    /// With a cluster set: connects to its broker and claims the node id (or fails
    /// saying why), before any connection is accepted.
    fn join_cluster(
        &self,
        value_limits: ValueLimits,
    ) -> Result<Option<Arc<dyn crate::router::Uplink>>> {
        let Some(settings) = &self.descriptor().cluster else {
            return Ok(None);
        };
        #[cfg(any(feature = "redis", feature = "nats"))]
        {
            let link = crate::cluster::start(settings, self.router.clone(), value_limits)?;
            Ok(Some(link as Arc<dyn crate::router::Uplink>))
        }
        #[cfg(not(any(feature = "redis", feature = "nats")))]
        {
            // `validate` names the missing feature first; this is the same refusal.
            let _ = value_limits;
            settings.validate()?;
            Err(Error::Config {
                field: "cluster",
                problem: "this build has no cluster adapter (features `redis`, `nats`)".into(),
            })
        }
    }

    /// Starts the shards and the control thread that stops them; returns the thread,
    /// the channel it reports its end on, and the backend the shards run on.
    #[allow(clippy::type_complexity, reason = "private, used once")]
    fn start_shards(
        &self,
    ) -> Result<(
        JoinHandle<Result<()>>,
        flume::Receiver<Result<()>>,
        crate::rt::Runtime,
    )> {
        let desc = self.descriptor();
        while self.router.stop_requests().try_recv().is_ok() {}
        let (registry, core_config) = self.freeze()?;
        crate::host::ensure_fds(crate::host::FdDemand {
            connections: desc.max_connections,
            refusals: desc.max_refusals_in_flight,
            proxy_headers: if desc.trusted_proxies.is_empty() {
                0
            } else {
                desc.max_pending
            },
            shards: desc.shards,
        })?;
        let ip: std::net::IpAddr = desc.host.parse().map_err(|_| Error::Config {
            field: "host",
            problem: format!("{:?} is not an IP address", desc.host),
        })?;
        let (senders, buses): (Vec<_>, Vec<_>) = (0..desc.shards)
            .map(|_| flume::bounded(desc.bus_capacity))
            .unzip();
        let limits = crate::router::RoomLimits {
            max_rooms: desc.max_rooms,
            max_rooms_per_connection: desc.max_rooms_per_connection,
            max_room_name_bytes: desc.max_room_name_bytes,
        };
        let room_hooks = self.setup().room_hooks.clone();
        // Bound before anything starts, so an address in use fails the start cleanly.
        #[cfg(feature = "prometheus")]
        let metrics_listener = desc.metrics_addr.map(exporter::bind).transpose()?;
        let metrics = self.router.metrics_for(desc.shards, &registry.rpc_order);
        let uplink = self.join_cluster(core_config.value_limits)?;
        let run = Arc::new(RunState::new(
            senders,
            limits,
            room_hooks,
            uplink.clone(),
            metrics,
        ));
        let launched = crate::shard::launch(crate::shard::Plan {
            router: self.router.clone(),
            run: run.clone(),
            registry,
            core_config,
            bind_addr: std::net::SocketAddr::new(ip, desc.port),
            ws_bind_addr: desc
                .websocket
                .as_ref()
                .map(|w| std::net::SocketAddr::new(ip, w.port)),
            backlog: desc.listen_backlog as i32,
            buses,
            preempt_timer: desc.preempt_timer,
            runtime: desc.runtime,
        })
        .inspect_err(|_| {
            if let Some(u) = &uplink {
                u.shut_down();
            }
        })?;
        let backend = launched.backend.runtime();
        let addr = launched.addr;
        let _ = run.addr.set(addr);
        if let Some(ws) = launched.ws_addr() {
            let _ = run.ws_addr.set(ws);
        }
        self.router.set_run(Some(run.clone()));
        let started = run.control(0, Control::RunStartupHooks).and_then(|()| {
            (0..desc.shards).try_for_each(|i| run.control(i, Control::StartAccepting))
        });
        if let Err(e) = started {
            self.router.set_run(None);
            launched.join(&run);
            if let Some(u) = &uplink {
                u.shut_down();
            }
            return Err(Error::Runtime(e));
        }
        tracing::info!(name = %desc.name, %addr, shards = desc.shards, runtime = %backend, "server running");
        // Stopped when the control thread ends, after the shards.
        #[cfg(feature = "prometheus")]
        let exporter = match metrics_listener {
            Some(listener) => {
                if let Ok(a) = listener.local_addr() {
                    let _ = run.metrics_addr.set(a);
                    tracing::info!(addr = %a, "metrics at http://{a}/metrics");
                }
                match exporter::start(self.router.clone(), listener) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        tracing::error!("{e}");
                        None
                    }
                }
            }
            None => None,
        };

        let server = self.clone();
        let (done_tx, done) = flume::bounded(1);
        let control = std::thread::Builder::new()
            .name("conduit-control".into())
            .spawn(move || {
                #[cfg(feature = "prometheus")]
                let _exporter = exporter;
                let _ = server.router.stop_requests().recv();
                tracing::info!("stopping");
                let errors = shut_down(&run, &launched, server.descriptor().shards);
                server.router.set_run(None);
                launched.join(&run);
                server.router.set_running(false);
                tracing::info!("stopped");
                let result = if errors.is_empty() {
                    Ok(())
                } else {
                    Err(Error::Runtime(errors.join("; ")))
                };
                // Tell an async waiter, then give the same result to `join`.
                let _ = done_tx.send(
                    result
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| Error::Runtime(e.to_string())),
                );
                result
            })?;
        Ok((control, done, backend))
    }
}
