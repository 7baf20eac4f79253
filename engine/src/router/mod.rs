//! The router: who is where. The directory of live connections, the bus to every
//! shard, the counters, application state — and the messaging API handlers use
//! (broadcast, send and kick by id), which fans out on the local shard and hands the
//! same encoded bytes to the others.
//!
//! Both the user API (`server`) and the runtime glue (`rt`) import this module; it
//! imports neither. The glue plugs its shard in through [`LocalShard`] and
//! [`enter_shard`], so a broadcast from a handler reaches its own shard's connections
//! without a bus round trip.

mod broadcast;
pub(crate) mod bus;
pub(crate) mod bus_room;
mod connection;
mod figures;
mod lanes;
mod local;
#[cfg_attr(
    not(any(feature = "redis", feature = "nats")),
    allow(dead_code, unused_imports, reason = "used by the cluster adapters")
)]
mod remote;
pub(crate) mod rooms;
mod state;
mod stats;

use std::any::{Any, TypeId};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use ahash::AHashMap;
use conduit_protocol::clock::wall_clock_ms;
use conduit_protocol::Value;

pub use broadcast::Broadcast;
use bus::ask;
pub(crate) use bus::{BusMsg, Control, Filter, Frames};
use bus_room::BusRoom;
pub(crate) use connection::ConnMeta;
pub use connection::Connection;
pub(crate) use local::{enter_shard, hand_over_lanes, leave_shard, LocalShard};
#[cfg_attr(
    not(any(feature = "redis", feature = "nats")),
    allow(dead_code, unused_imports, reason = "used by the cluster adapters")
)]
pub(crate) use remote::{Answer, Ask, Direct, Gathered, SendFuture, Uplink};
pub use remote::{Cluster, ClusterCount, ClusterMembers, ClusterStats, NodeInfo};
pub use rooms::{Room, RoomError};
pub(crate) use rooms::{RoomLimits, Rooms};
pub use state::State;
pub(crate) use stats::{
    Admission, FailBudget, Pending, Permit, Refusal, SourceKey, Stats, AUTH_FAILURE_MEMORY,
    MAX_FAILING_SOURCES,
};

use crate::descriptor::ServerDescriptor;
use crate::error::{Error, Result};
use crate::id::ConnectionId;
use crate::rt::exec::LocalBoxFuture;

/// A hook run when a connection joins or leaves a room (with the room's name).
pub(crate) type RoomHook = Arc<dyn Fn(Connection, String) -> LocalBoxFuture<()> + Send + Sync>;

/// The room hooks of a run.
#[derive(Default, Clone)]
pub(crate) struct RoomHooks {
    /// After a connection joined a room.
    pub on_join: Vec<RoomHook>,
    /// After a connection left a room, by `leave` or by disconnecting.
    pub on_leave: Vec<RoomHook>,
}

/// What exists only while the server runs.
pub(crate) struct RunState {
    /// Each shard's inbound bus.
    pub bus: Vec<flume::Sender<BusMsg>>,
    /// Room for batched requests on each shard's bus: `bus_capacity` of them at most.
    pub batch_room: Vec<Arc<BusRoom>>,
    /// Each shard's logged-in connections, readable from any thread (written by the
    /// owner at login and close only).
    directory: Vec<RwLock<AHashMap<ConnectionId, Arc<ConnMeta>>>>,
    /// The listening address, once the first shard bound it.
    pub addr: OnceLock<SocketAddr>,
    /// The WebSocket listener's address, when there is one.
    pub ws_addr: OnceLock<SocketAddr>,
    /// Counts accepted connections, to deal them out to the shards in turn.
    accepted: AtomicUsize,
    /// Every room and its members.
    pub rooms: Rooms,
    /// Run when connections join and leave rooms.
    pub room_hooks: RoomHooks,
    /// This node's id in its cluster (0 without one): the node bits of every id this
    /// run gives out.
    pub node: usize,
    /// The way to the other nodes, with a cluster.
    pub uplink: Option<Arc<dyn Uplink>>,
    /// What each shard counts (kept by the router across runs).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where the Prometheus exporter listens, once it does.
    pub metrics_addr: OnceLock<SocketAddr>,
}

impl RunState {
    /// A run with one bus sender per shard.
    pub fn new(
        bus: Vec<flume::Sender<BusMsg>>,
        limits: RoomLimits,
        room_hooks: RoomHooks,
        uplink: Option<Arc<dyn Uplink>>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> RunState {
        let shards = bus.len();
        RunState {
            batch_room: bus
                .iter()
                .map(|b| Arc::new(BusRoom::new(b.capacity().unwrap_or(1))))
                .collect(),
            bus,
            directory: (0..shards).map(|_| RwLock::default()).collect(),
            addr: OnceLock::new(),
            ws_addr: OnceLock::new(),
            accepted: AtomicUsize::new(0),
            rooms: Rooms::new(shards, limits),
            room_hooks,
            node: uplink.as_ref().map_or(0, |u| u.node()),
            uplink,
            metrics,
            metrics_addr: OnceLock::new(),
        }
    }

    /// The shard that serves the next accepted connection. Shards take turns whichever
    /// shard accepted it: the kernel wakes every shard waiting on the one listening
    /// socket and the first awake wins (on epoll one shard can win most accepts), so
    /// dealing them out keeps each shard's share within one connection of even.
    pub fn next_home(&self) -> usize {
        self.accepted.fetch_add(1, Ordering::Relaxed) % self.bus.len().max(1)
    }

    /// Logged-in connections of shard `shard` that `filter` admits.
    fn admitted(&self, shard: usize, filter: &Filter) -> usize {
        if let Some(rooms) = &filter.rooms {
            // One room, nobody singled out: its member count, without a walk.
            if let ([room], None, true) = (&rooms[..], &filter.include, filter.exclude.is_empty()) {
                return room.read(shard, |set| set.len());
            }
            let mut n = 0;
            rooms::for_each_member(rooms, shard, |id| n += usize::from(filter.admits(id)));
            return n;
        }
        let Some(dir) = self.directory.get(shard).and_then(|d| d.read().ok()) else {
            return 0;
        };
        let here = |id: &&ConnectionId| id.shard() == shard && dir.contains_key(id);
        match &filter.include {
            None => dir.len() - filter.exclude.iter().filter(here).count(),
            Some(ids) => ids
                .iter()
                .filter(here)
                .filter(|id| !filter.exclude.contains(id))
                .count(),
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

    /// Applies a room change on the connection's own shard (see `Router::change_room`).
    pub fn apply_room_change(
        &self,
        meta: &ConnMeta,
        room: &str,
        join: bool,
    ) -> std::result::Result<Option<bool>, RoomError> {
        if join {
            self.rooms.join(meta, room)
        } else {
            Ok(Some(self.rooms.leave(meta, room)))
        }
    }

    /// Sends a lifecycle step to one shard and waits for its outcome.
    pub fn control(&self, shard: usize, step: Control) -> std::result::Result<(), String> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.bus[shard]
            .send(BusMsg::Control { step, reply: tx })
            .map_err(|_| format!("shard {shard} is gone"))?;
        rx.recv()
            .map_err(|_| format!("shard {shard} stopped before answering {step:?}"))?
    }
}

/// MESSAGE `name` for connection `id`, in its codec only. Not in the directory = not
/// logged in: [`Error::Closed`].
fn encode_for(run: &RunState, id: ConnectionId, name: &str, data: &Value) -> Result<Frames> {
    let codec = run
        .lookup(id)
        .and_then(|m| m.codec())
        .ok_or(Error::Closed)?;
    Ok(Frames::message(name, data, wall_clock_ms(), Some(codec))?)
}

/// A logged-in connection's place in the directory and the connection count; both are
/// given back when this is dropped, whichever way the connection ends.
pub(crate) struct Listed {
    run: Arc<RunState>,
    meta: Arc<ConnMeta>,
    _counted: Permit,
}

impl Drop for Listed {
    fn drop(&mut self) {
        let id = self.meta.id;
        if let Some(d) = self.run.directory.get(id.shard()) {
            if let Ok(mut m) = d.write() {
                m.remove(&id);
            }
        }
        // Its rooms too, however it ends (the teardown leaves them first, with hooks).
        self.run.rooms.leave_all(&self.meta);
    }
}

pub(crate) struct RouterInner {
    /// The settings the server was built with.
    desc: ServerDescriptor,
    /// The TLS configuration in force, with `desc.tls`.
    tls: Option<crate::tls::TlsState>,
    /// Set while running.
    run: RwLock<Option<Arc<RunState>>>,
    /// Counters and gauges shared by every shard.
    stats: Stats,
    /// What the shards count, from the first run on (replaced only when a run has a
    /// different shape: other shard count or methods).
    metrics: RwLock<Option<Arc<crate::metrics::Metrics>>>,
    /// Application state by type (see `Server::manage`).
    states: RwLock<AHashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    /// Between startup and the end of shutdown.
    running: AtomicBool,
    /// When the current run started.
    started_at: Mutex<Option<Instant>>,
    /// A stop request for the control thread; one pending is enough.
    stop_tx: crossbeam_channel::Sender<()>,
    /// Read by the control thread.
    stop_rx: crossbeam_channel::Receiver<()>,
}

/// The messaging half of a server: what handlers do with it. Broadcast, send to and
/// kick connections by id, read counts and application state, stop the server. Every
/// [`Server`](crate::Server) is one (it dereferences to its router), and
/// [`Connection::server`] returns it. Cheap to clone, `Send + Sync`, usable from any
/// shard or thread.
#[derive(Clone)]
pub struct Router {
    pub(crate) inner: Arc<RouterInner>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("name", &self.inner.desc.name)
            .field("running", &self.is_running())
            .finish()
    }
}

impl Router {
    pub(crate) fn new(desc: ServerDescriptor, tls: Option<crate::tls::TlsState>) -> Router {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        Router {
            inner: Arc::new(RouterInner {
                desc,
                tls,
                run: RwLock::new(None),
                stats: Stats::default(),
                metrics: RwLock::new(None),
                states: RwLock::default(),
                running: AtomicBool::new(false),
                started_at: Mutex::new(None),
                stop_tx,
                stop_rx,
            }),
        }
    }

    pub(crate) fn counts(&self) -> &Stats {
        &self.inner.stats
    }

    pub(crate) fn run_state(&self) -> Option<Arc<RunState>> {
        if let Some((run, _)) = self.local() {
            return Some(run);
        }
        self.inner.run.read().ok()?.clone()
    }

    pub(crate) fn set_run(&self, run: Option<Arc<RunState>>) {
        if let Ok(mut slot) = self.inner.run.write() {
            *slot = run;
        }
        if let Ok(mut t) = self.inner.started_at.lock() {
            *t = self
                .inner
                .run
                .read()
                .ok()
                .and_then(|r| r.as_ref().map(|_| Instant::now()));
        }
    }

    pub(crate) fn set_running(&self, running: bool) -> bool {
        self.inner.running.swap(running, Ordering::AcqRel)
    }

    pub(crate) fn stop_requests(&self) -> &crossbeam_channel::Receiver<()> {
        &self.inner.stop_rx
    }

    /// Lists a logged-in connection in the directory and the count, until the returned
    /// guard drops.
    pub(crate) fn list(&self, run: &Arc<RunState>, meta: Arc<ConnMeta>) -> Listed {
        let id = meta.id;
        let counted = self.inner.stats.connections.acquire();
        if let Some(d) = run.directory.get(id.shard()) {
            if let Ok(mut m) = d.write() {
                m.insert(id, meta.clone());
            }
        }
        Listed {
            run: run.clone(),
            meta,
            _counted: counted,
        }
    }

    pub(crate) fn put_state(&self, id: TypeId, value: Arc<dyn Any + Send + Sync>) {
        if let Ok(mut s) = self.inner.states.write() {
            s.insert(id, value);
        }
    }

    // ---- what handlers read ----------------------------------------------------------

    /// The descriptor the server was built with.
    pub fn descriptor(&self) -> &ServerDescriptor {
        &self.inner.desc
    }

    /// The TLS configuration in force, when the server speaks TLS.
    pub(crate) fn tls(&self) -> Option<&crate::tls::TlsState> {
        self.inner.tls.as_ref()
    }

    /// Reads the TLS certificate, key and client CA files again (see
    /// [`crate::tls`]): connections accepted from now on use them, those already
    /// open keep what they have. A file that does not load is refused — the error
    /// says which and why, and is logged — and the configuration in use stays.
    /// `Error::Config` for `tls` too when the server has no TLS. It reads files: from a
    /// handler, call it on a blocking thread rather than on the shard.
    pub fn reload_tls(&self) -> crate::Result<()> {
        let Some(tls) = &self.inner.tls else {
            return Err(crate::Error::Config {
                field: "tls",
                problem: "the server has no TLS settings to reload".into(),
            });
        };
        match tls.reload() {
            Ok(()) => {
                tracing::info!("TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!("TLS reload refused, keeping the certificate in use: {e}");
                Err(e)
            }
        }
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.inner.desc.name
    }

    /// Whether the server is running (between startup and the end of shutdown).
    pub fn is_running(&self) -> bool {
        self.inner.running.load(Ordering::Acquire)
    }

    /// Logged-in connections across all shards.
    pub fn connection_count(&self) -> usize {
        self.inner.stats.connections.get()
    }

    /// The address it listens on, once running (the real port when 0 was asked).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.run_state().and_then(|rt| rt.addr.get().copied())
    }

    /// The WebSocket listener's address, once running with
    /// [`ServerDescriptor::websocket`](crate::ServerDescriptor::websocket) set.
    pub fn websocket_addr(&self) -> Option<SocketAddr> {
        self.run_state().and_then(|rt| rt.ws_addr.get().copied())
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

    /// The state of type `T` registered with [`Server::manage`](crate::Server::manage).
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<crate::State<T>> {
        let any = self
            .inner
            .states
            .read()
            .ok()?
            .get(&TypeId::of::<T>())
            .cloned()?;
        any.downcast::<T>().ok().map(crate::State)
    }

    /// Asks the server to stop gracefully: stop accepting, run `on_shutdown`, flush
    /// queues up to the drain timeout, close every connection, join the shards. Returns
    /// at once; callable from any thread, handler or hook.
    pub fn stop(&self) {
        let _ = self.inner.stop_tx.try_send(());
    }

    // ---- messaging -------------------------------------------------------------------

    /// A room by name: its members across every shard, and broadcasts to them.
    pub fn room(&self, name: &str) -> Room {
        Room::new(self.clone(), name)
    }

    /// The names of every room with members.
    pub fn rooms(&self) -> Vec<String> {
        self.run_state()
            .map(|r| r.rooms.names())
            .unwrap_or_default()
    }

    /// Broadcasts a message to every logged-in connection; narrow it with
    /// [`Broadcast::to`] (rooms), [`Broadcast::include`] / [`Broadcast::exclude`], then
    /// `.await` it for the number of connections it was queued to.
    ///
    /// `data` is a [`Value`] or anything `Serialize` (a struct of yours).
    pub fn broadcast(&self, name: &str, data: impl serde::Serialize + 'static) -> Broadcast {
        Broadcast::new(self.clone(), name, crate::convert::into_value(data))
    }

    /// Fans `frames` out to every admitted connection: on this thread's shard at once,
    /// to the other shards with receivers over their bus. With `exact`, waits for each
    /// shard's count of connections it queued to; otherwise never waits on another
    /// shard: the count is read from the directory (logged-in connections admitted by
    /// `filter`), so a sender broadcasting in a loop is not serialised behind a round
    /// trip to every shard. Frames from one sender reach each shard, and so each
    /// receiver, in the order they were sent (one bus per shard).
    pub(crate) async fn broadcast_frames(
        &self,
        frames: Arc<Frames>,
        filter: Arc<Filter>,
        exact: bool,
    ) -> usize {
        crate::rt::exec::yield_if_needed().await;
        let Some(run) = self.run_state() else {
            return 0;
        };
        let local = self.local().map(|(_, s)| s);
        let lanes = self.lanes();
        let (tx, rx) = if exact {
            let (tx, rx) = flume::bounded(run.bus.len());
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let mut pending = 0;
        let mut count = 0;
        for (i, bus) in run.bus.iter().enumerate() {
            if let Some(s) = local.as_ref().filter(|s| s.index() == i) {
                count += s.fanout(&frames, &filter);
                continue;
            }
            let members = run.admitted(i, &filter);
            if members == 0 {
                continue;
            }
            let msg = BusMsg::Broadcast {
                frames: frames.clone(),
                filter: filter.clone(),
                reply: tx.clone(),
            };
            let sent = match &lanes {
                Some(lanes) => lanes.send(i, msg).await,
                None => bus.send_async(msg).await.is_ok(),
            };
            if sent {
                if exact {
                    pending += 1;
                } else {
                    count += members;
                }
            }
        }
        drop(tx);
        // Not held while waiting: a shard that exits with this request still queued
        // drops it (and its reply sender) only once every holder of the run is gone.
        drop(run);
        if let Some(rx) = rx {
            for _ in 0..pending {
                match rx.recv_async().await {
                    Ok(n) => count += n,
                    Err(_) => break,
                }
            }
        }
        count
    }

    /// Puts `meta`'s connection in `room` (`join`) or takes it out, on its own shard —
    /// at once when that is this thread's shard, else over its bus, waiting for the
    /// change — so the change is ordered with the broadcasts this task sent before and
    /// sends after. `Some(changed)`, or `None` when the connection is gone.
    pub(crate) async fn change_room(
        &self,
        meta: &Arc<ConnMeta>,
        room: &str,
        join: bool,
    ) -> Result<Option<bool>> {
        let run = self.run_state().ok_or(Error::NotRunning)?;
        let shard = meta.id.shard();
        if self.local().is_some_and(|(_, s)| s.index() == shard) {
            return Ok(run.apply_room_change(meta, room, join)?);
        }
        let asked = ask(self.lanes(), run, shard, |reply| BusMsg::Room {
            meta: meta.clone(),
            room: room.to_owned(),
            join,
            reply,
        });
        Ok(asked.await?.transpose()?.flatten())
    }

    /// The connection with `id`, if it is connected and logged in (netconduit's
    /// `server._pool.get(id)`). Works from any shard or thread.
    pub fn connection(&self, id: ConnectionId) -> Option<Connection> {
        let meta = self.run_state()?.lookup(id)?;
        Some(Connection {
            meta,
            router: self.clone(),
        })
    }

    /// Sends a message to one connection by id, from any shard or thread.
    ///
    /// Returns [`Error::Closed`] if it is gone, [`Error::QueueFull`] when its outbound
    /// queue is over `max_outbound_bytes` (it is then handled as a slow consumer), or
    /// [`Error::Encode`] for a message no peer could receive (a name over 255 bytes).
    pub async fn send_to_id(
        &self,
        id: ConnectionId,
        name: &str,
        data: impl serde::Serialize + 'static,
    ) -> Result<()> {
        let data = crate::convert::into_value(data).map_err(Error::Data)?;
        self.send_to(id, name, &data).await
    }

    /// Queues a message to connection `id` of this thread's shard at once (no await, no
    /// bus): for synchronous handlers answering their own connection.
    pub(crate) fn send_here(&self, id: ConnectionId, name: &str, data: &Value) -> Result<()> {
        let (run, shard) = self
            .local()
            .filter(|(_, s)| s.index() == id.shard())
            .ok_or(Error::Closed)?;
        shard.send_local(id, &encode_for(&run, id, name, data)?)
    }

    pub(crate) async fn send_to(&self, id: ConnectionId, name: &str, data: &Value) -> Result<()> {
        crate::rt::exec::yield_if_needed().await;
        if let Some(uplink) = self.remote_owner(id)? {
            return uplink.direct(id, Direct::Send { name, data }, wall_clock_ms());
        }
        if let Some((run, shard)) = self.local().filter(|(_, s)| s.index() == id.shard()) {
            return shard.send_local(id, &encode_for(&run, id, name, data)?);
        }
        let run = self.run_state().ok_or(Error::NotRunning)?;
        let frames = Arc::new(encode_for(&run, id, name, data)?);
        ask(self.lanes(), run, id.shard(), |reply| BusMsg::Send {
            to: id,
            frames,
            reply,
        })
        .await?
        .unwrap_or(Err(Error::Closed))
    }

    /// Closes connection `id` (a kick), on this node or — with a cluster — the node
    /// that owns it; queued frames are flushed first, within the drain timeout.
    /// [`Error::Closed`] if it is gone (known for this node's connections only: for
    /// another node's, `Ok` means the kick was handed to the broker).
    pub async fn disconnect_id(&self, id: ConnectionId) -> Result<()> {
        self.kick(id, None).await
    }

    /// Sends connection `id` a last message, flushes it, then closes it (the guide's
    /// kick with a reason), on whichever node owns it; see
    /// [`disconnect_id`](Self::disconnect_id).
    pub async fn disconnect_id_with(
        &self,
        id: ConnectionId,
        name: &str,
        data: impl serde::Serialize + 'static,
    ) -> Result<()> {
        let data = crate::convert::into_value(data).map_err(Error::Data)?;
        self.kick(id, Some((name, &data))).await
    }

    pub(crate) async fn kick(&self, id: ConnectionId, last: Option<(&str, &Value)>) -> Result<()> {
        crate::rt::exec::yield_if_needed().await;
        if let Some(uplink) = self.remote_owner(id)? {
            return uplink.direct(id, Direct::Kick { last }, wall_clock_ms());
        }
        let run = self.run_state().ok_or(Error::NotRunning)?;
        let codec = run.lookup(id).and_then(|m| m.codec());
        let last = match last {
            Some((n, d)) => Some(Arc::new(Frames::message(n, d, wall_clock_ms(), codec)?)),
            None => None,
        };
        let done = if let Some((_, s)) = self.local().filter(|(_, s)| s.index() == id.shard()) {
            s.kick_local(id, last.as_deref())
        } else {
            let asked = ask(self.lanes(), run, id.shard(), |reply| BusMsg::Kick {
                to: id,
                last,
                reply,
            });
            asked.await?.unwrap_or(false)
        };
        if done {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }
}
