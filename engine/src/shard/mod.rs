//! The shards: one pinned executor thread per shard (glommio or tokio, the same code on
//! both), each accepting on the server's one listening socket, owning its connections,
//! serving its bus and ticking its heartbeat. Thin glue: it moves bytes, runs timers
//! and spawns handler futures; the connection core decides.
//!
//! Files, in the order a connection meets them: `accept` (admission), `proxy` (the
//! PROXY header a connection from a trusted proxy sends, read before admission), `conn`
//! (read loop → core → handlers → teardown), then `rt/writer.rs` (outbound queue → socket)
//! and `rt/net.rs` (the socket and its gathered writes); this file holds the shard
//! itself: startup, the bus, lifecycle steps, fan-out and the heartbeat tick. It is
//! written in the runtime-neutral primitives of `rt` and never names a backend.

mod accept;
mod calls;
mod clock;
mod conn;
mod launch;
mod local;
mod proxy;
mod recv;
mod setup;
mod websocket;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ahash::AHashMap;
use futures_lite::FutureExt;

use self::launch::Setup;
pub(crate) use self::launch::{launch, Launched, Plan};
use self::local::LocalConn;
use crate::core::{CloseReason, CoreConfig, Delivery, LocalNotify};
use crate::dispatch::contained;
use crate::error::{Error, Result};
use crate::handlers::Registry;
use crate::id::ConnectionId;
use crate::router::{self, BusMsg, Control, Filter, Frames, LocalShard, Permit, Router, RunState};
use crate::rt::exec::{sleep, spawn, spawn_task, yield_if_needed, yield_now, Task};
use crate::rt::net::{Listener, SharedStream};
use crate::ws::Transport;

/// Bus entries (a request, or a batch of another shard's) served in a row before the
/// bus lets the shard's other tasks run.
const BUS_BATCH: u32 = 64;
/// Memory glommio may use for each shard's io_uring buffers (measured: ≤ 2 MiB).
const IO_MEMORY_BYTES: usize = 256 * 1024;
/// Entries of each shard's io_uring rings (glommio's default).
const RING_DEPTH: usize = 128;
/// Shortest and longest heartbeat tick.
const TICK_MIN: Duration = Duration::from_millis(10);
const TICK_MAX: Duration = Duration::from_secs(1);

/// Per-shard state. Lives on its executor thread only.
pub(crate) struct Shard {
    /// Its index; also the shard bits of its connections' ids.
    pub index: usize,
    /// The server's messaging half.
    pub router: Router,
    /// The run it belongs to.
    pub run: Arc<RunState>,
    /// The handlers.
    pub registry: Arc<Registry>,
    /// What every connection core shares.
    pub core_config: Arc<CoreConfig>,
    /// This shard's counters (written only here; read by `stats` and the exporter).
    pub metrics: Arc<crate::metrics::ShardMetrics>,
    /// Every connection of this shard, logged in or not.
    pool: RefCell<AHashMap<ConnectionId, Rc<LocalConn>>>,
    /// Logged-in connections, dense, for fan-out.
    authed: RefCell<Vec<Rc<LocalConn>>>,
    /// The next connection's sequence number.
    next_seq: Cell<u64>,
    /// Until stop-accepting.
    listener: RefCell<Option<Rc<Listener>>>,
    /// The WebSocket listener, when there is one, until stop-accepting.
    ws_listener: RefCell<Option<Rc<Listener>>>,
    /// Running between start- and stop-accepting (TCP, then WebSocket).
    accept_task: RefCell<Vec<Task<()>>>,
    /// Set once Drain started: the pool emptying wakes `drained`.
    draining: Cell<bool>,
    /// Wakes the drain when the last connection is gone.
    drained: LocalNotify,
    /// Refusal permits held by refusal tasks still running, so a shard that exits
    /// before them gives the permits back.
    refusals: RefCell<AHashMap<u64, Permit>>,
    /// Key of the next refusal.
    next_refusal: Cell<u64>,
    /// Connections from trusted proxies whose PROXY header is being read, each with its
    /// permit, so a shard that drains or exits first closes them and gives the permits
    /// back.
    proxy_reads: RefCell<AHashMap<u64, ProxyRead>>,
    /// Key of the next PROXY header read.
    next_proxy_read: Cell<u64>,
    /// The receive scratch and the buffers idle connections gave up (`recv.rs`).
    recv: recv::RecvPool,
    /// Scratch room for a reader's direct write of several frames
    /// (`rt::writer::write_now`): used within one synchronous call, so one per shard.
    direct_batch: RefCell<Vec<bytes::Bytes>>,
    /// The time connections stamp their frames with: one clock read per batch of
    /// frames, the wall time derived from an anchor each heartbeat tick renews.
    clock: clock::ShardClock,
    /// A descriptor kept open for the moment the process has none left: closed to
    /// accept one connection and tell it "server full", then opened again.
    reserve: RefCell<Option<std::fs::File>>,
}

impl Shard {
    /// Queues `frames` to every admitted logged-in connection; returns how many.
    fn fanout_counted(&self, frames: &Frames, filter: &Filter) -> usize {
        let mut count = 0;
        let mut deliver = |conn: &LocalConn| {
            if let Some(f) = frames.for_codec(conn.codec()) {
                if self.deliver(conn, f) == Delivery::Queued {
                    count += 1;
                }
            }
        };
        if let Some(rooms) = &filter.rooms {
            // Only the rooms' members on this shard: cost follows members, not
            // connections.
            let pool = self.pool.borrow();
            router::rooms::for_each_member(rooms, self.index, |id| {
                if let Some(c) = pool.get(&id) {
                    if c.meta.is_authenticated() && filter.admits(id) {
                        deliver(c);
                    }
                }
            });
            return count;
        }
        match &filter.include {
            // A small include set is cheaper to walk than the whole shard.
            Some(ids) if ids.len() < self.authed.borrow().len() => {
                let pool = self.pool.borrow();
                for id in ids.iter().filter(|id| id.shard() == self.index) {
                    if let Some(c) = pool.get(id) {
                        if c.meta.is_authenticated() && filter.admits(*id) {
                            deliver(c);
                        }
                    }
                }
            }
            _ => {
                for c in self.authed.borrow().iter() {
                    if filter.admits(c.meta.id) {
                        deliver(c);
                    }
                }
            }
        }
        count
    }

    fn next_id(&self) -> ConnectionId {
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        ConnectionId::new(self.run.node, self.index, seq)
    }

    fn hold_refusal(&self, permit: Permit) -> u64 {
        let key = self.next_refusal.get();
        self.next_refusal.set(key + 1);
        self.refusals.borrow_mut().insert(key, permit);
        key
    }

    fn release_refusal(&self, key: u64) {
        self.refusals.borrow_mut().remove(&key);
    }

    fn hold_proxy_read(&self, permit: Permit, stream: SharedStream) -> u64 {
        let key = self.next_proxy_read.get();
        self.next_proxy_read.set(key + 1);
        let read = ProxyRead {
            _permit: permit,
            stream,
        };
        self.proxy_reads.borrow_mut().insert(key, read);
        key
    }

    fn release_proxy_read(&self, key: u64) {
        self.proxy_reads.borrow_mut().remove(&key);
    }

    /// Closes every connection whose PROXY header is still being read (its task ends
    /// at once) and gives their permits back.
    fn close_proxy_reads(&self) {
        let reads: Vec<ProxyRead> = self
            .proxy_reads
            .borrow_mut()
            .drain()
            .map(|(_, r)| r)
            .collect();
        for r in &reads {
            r.stream.shutdown_both();
        }
    }

    /// Opens the reserve descriptor again (if it is not open).
    fn restore_reserve(&self) {
        let mut reserve = self.reserve.borrow_mut();
        if reserve.is_none() {
            *reserve = std::fs::File::open("/dev/null").ok();
        }
    }

    fn add_authed(&self, conn: &Rc<LocalConn>) {
        let mut authed = self.authed.borrow_mut();
        conn.slot.set(authed.len());
        authed.push(conn.clone());
    }

    fn remove_authed(&self, conn: &LocalConn) {
        // `try_`: also called while unwinding from a panic that may hold the borrow.
        let Ok(mut authed) = self.authed.try_borrow_mut() else {
            return;
        };
        let slot = conn.slot.get();
        if slot < authed.len() && Arc::ptr_eq(&authed[slot].meta, &conn.meta) {
            authed.swap_remove(slot);
            if let Some(moved) = authed.get(slot) {
                moved.slot.set(slot);
            }
        }
    }

    /// Queues `frame` to `conn` under the slow-consumer policy, counting and logging a
    /// slow consumer, and says what became of it.
    fn deliver(&self, conn: &LocalConn, frame: &bytes::Bytes) -> Delivery {
        let policy = self.core_config.slow_consumer;
        let delivery = conn.out.offer(frame.clone(), policy);
        match delivery {
            Delivery::Queued | Delivery::Closed => {}
            Delivery::Dropped => {
                self.metrics.slow_consumer_frames.inc();
                tracing::debug!(conn = %conn.meta.id, "slow consumer: frame dropped");
            }
            Delivery::Disconnect => {
                self.metrics.slow_consumer_frames.inc();
                tracing::debug!(conn = %conn.meta.id, "slow consumer: disconnecting");
                static SLOW: crate::throttle::Throttle = crate::throttle::Throttle::new();
                SLOW.warn(|| {
                    format!(
                        "slow consumer: disconnecting {} ({}): its queue passed max_outbound_bytes",
                        conn.meta.id, conn.meta.peer_addr
                    )
                });
                conn.request_close(CloseReason::SlowConsumer);
            }
        }
        delivery
    }
}

impl LocalShard for Shard {
    fn index(&self) -> usize {
        self.index
    }

    fn fanout(&self, frames: &Frames, filter: &Filter) -> usize {
        let count = self.fanout_counted(frames, filter);
        self.metrics.deliveries.add(count as u64);
        count
    }

    fn send_local(&self, id: ConnectionId, frames: &Frames) -> Result<()> {
        let conn = self.pool.borrow().get(&id).cloned();
        let Some(c) = conn.filter(|c| c.meta.is_authenticated()) else {
            return Err(Error::Closed);
        };
        let Some(f) = frames.for_codec(c.codec()) else {
            return Err(Error::Closed);
        };
        // Read before the offer: a disconnecting slow consumer's queue is cleared.
        let pending = c.out.pending_bytes();
        match self.deliver(&c, f) {
            Delivery::Queued => Ok(()),
            Delivery::Closed => Err(Error::Closed),
            Delivery::Dropped | Delivery::Disconnect => Err(Error::QueueFull(pending)),
        }
    }

    fn kick_local(&self, id: ConnectionId, last: Option<&Frames>) -> bool {
        let conn = self.pool.borrow().get(&id).cloned();
        let Some(c) = conn else { return false };
        if let Some(f) = last.and_then(|l| l.for_codec(c.codec())) {
            self.deliver(&c, f);
        }
        c.request_close(CloseReason::Kicked);
        true
    }
}

/// A connection from a trusted proxy whose PROXY header is being read.
struct ProxyRead {
    /// Its place among the headers being read (`max_pending`).
    _permit: Permit,
    /// Its socket, shut down if the shard drains or exits first.
    stream: SharedStream,
}

/// Runs one shard until told to exit.
async fn shard_main(setup: Setup) {
    let Setup {
        index,
        router,
        run,
        registry,
        core_config,
        listen_fd,
        ws_fd,
        bus,
        bound,
    } = setup;
    let listener = match Listener::from_fd(listen_fd) {
        Ok(l) => l,
        Err(e) => {
            let _ = bound.send(Err(format!("shard {index} cannot accept: {e}")));
            return;
        }
    };
    let ws_listener = match ws_fd.map(Listener::from_fd).transpose() {
        Ok(l) => l,
        Err(e) => {
            let _ = bound.send(Err(format!("shard {index} cannot accept websockets: {e}")));
            return;
        }
    };
    let addr = listener.local_addr().ok();
    let metrics = run.metrics.shards[index].clone();
    let shard = Rc::new(Shard {
        index,
        router,
        metrics,
        run,
        registry,
        core_config,
        pool: RefCell::new(AHashMap::new()),
        authed: RefCell::new(Vec::new()),
        next_seq: Cell::new(0),
        listener: RefCell::new(Some(Rc::new(listener))),
        ws_listener: RefCell::new(ws_listener.map(Rc::new)),
        accept_task: RefCell::new(Vec::new()),
        draining: Cell::new(false),
        drained: LocalNotify::default(),
        refusals: RefCell::new(AHashMap::new()),
        next_refusal: Cell::new(0),
        proxy_reads: RefCell::new(AHashMap::new()),
        next_proxy_read: Cell::new(0),
        recv: recv::RecvPool::default(),
        direct_batch: RefCell::new(Vec::new()),
        clock: clock::ShardClock::new(),
        reserve: RefCell::new(std::fs::File::open("/dev/null").ok()),
    });
    router::enter_shard(&shard.router, shard.run.clone(), shard.clone());
    tracing::info!(shard = index, ?addr, "shard listening");
    let _ = bound.send(Ok(()));

    let ticker = spawn_task(heartbeat_loop(shard.clone()));
    bus_loop(&shard, bus).await;
    drop(ticker);
    shard.accept_task.borrow_mut().clear();
    // Tasks still unfinished past the drain (a handler that never returned, a refusal
    // still waiting) never run again once the executor exits (glommio never drops them;
    // tokio drops them later, with the thread's `LocalSet`): give back what they hold
    // now — their permits and directory entries — and close their sockets. Their
    // disconnect hooks do not run.
    shard.refusals.borrow_mut().clear();
    shard.close_proxy_reads();
    shard.authed.borrow_mut().clear();
    let left: Vec<Rc<LocalConn>> = shard.pool.borrow_mut().drain().map(|(_, c)| c).collect();
    for c in &left {
        let held = std::mem::take(&mut *c.held.borrow_mut());
        if held.listed.is_some() {
            let slot = crate::metrics::codec_slot(c.codec());
            shard.metrics.connections[slot].shift(-1);
        }
        drop(held);
        c.meta.clear_extensions();
        c.abandon();
    }
    if !left.is_empty() {
        tracing::warn!(
            shard = index,
            left = left.len(),
            "connections abandoned at exit"
        );
    }
    drop(left);
    router::leave_shard();
    tracing::info!(shard = index, "shard stopped");
}

/// Serves the shard's bus until `Control::Exit`.
async fn bus_loop(shard: &Rc<Shard>, bus: flume::Receiver<BusMsg>) {
    let mut served: u32 = 0;
    // The rest of a batch another shard thread's lane sent (`router::lanes`), served
    // message by message before the next receive.
    let mut batch = Vec::new().into_iter();
    let room = shard.run.batch_room[shard.index].clone();
    // However the loop ends (an exit, a panic), lanes waiting for room on this bus stop
    // waiting: nobody would give it back.
    let _close = CloseRoom(room.clone());
    loop {
        let msg = match batch.next() {
            Some(msg) => msg,
            None => match bus.recv_async().await {
                Ok(BusMsg::Batch(msgs)) => {
                    // The batch's permits are given back now that it is off the bus;
                    // it is served before the next receive, with the shard's turns
                    // between, so what the shard holds of batches stays within
                    // `bus_capacity` requests plus the one it serves.
                    room.give_back(msgs.len());
                    batch = msgs.into_iter();
                    continue;
                }
                Ok(msg) => msg,
                Err(_) => return,
            },
        };
        match msg {
            BusMsg::Broadcast {
                frames,
                filter,
                reply,
            } => {
                let queued = shard.fanout(&frames, &filter);
                if let Some(reply) = reply {
                    let _ = reply.try_send(queued);
                }
            }
            BusMsg::Send { to, frames, reply } => {
                let _ = reply.try_send(shard.send_local(to, &frames));
            }
            BusMsg::Kick { to, last, reply } => {
                let _ = reply.try_send(shard.kick_local(to, last.as_deref()));
            }
            BusMsg::Adopt { stream, admission } => accept::adopt(shard, stream, admission),
            BusMsg::Room {
                meta,
                room,
                join,
                reply,
            } => {
                let _ = reply.try_send(shard.run.apply_room_change(&meta, &room, join));
            }
            BusMsg::Batch(_) => {
                debug_assert!(false, "a bus batch inside a batch");
                tracing::error!(shard = shard.index, "a bus batch inside a batch, dropped");
            }
            BusMsg::Control { step, reply } => {
                if step == Control::Exit {
                    let _ = reply.send(Ok(()));
                    return;
                }
                // Lifecycle steps may take long (hooks, draining): run them beside the
                // bus so broadcasts from hooks keep flowing.
                let s = shard.clone();
                spawn(async move {
                    let r = control(&s, step).await;
                    // What the step's hooks sent other shards is on their buses
                    // before the next step (a drain, say) can reach them.
                    s.router.settle_lanes().await;
                    let _ = reply.send(r);
                });
            }
        }
        // A receive that finds a message ready never yields, so a busy bus would keep
        // writers, readers and the heartbeat from running (and the queues it fills from
        // draining) for as long as other shards keep it busy.
        // Counted by bus entry: a lane's batch (one burst of another shard's, at most
        // `BUS_BATCH_MESSAGES`) is fanned out whole before the writers run, unless the
        // time slice ends, so each receiver gets the burst in one write.
        if batch.len() == 0 {
            served = served.wrapping_add(1);
            if served.is_multiple_of(BUS_BATCH) {
                yield_now().await;
                continue;
            }
        }
        yield_if_needed().await;
    }
}

/// Closes a bus's room when dropped (see `bus_loop`).
struct CloseRoom(Arc<router::bus_room::BusRoom>);

impl Drop for CloseRoom {
    fn drop(&mut self) {
        self.0.close();
    }
}

async fn control(shard: &Rc<Shard>, step: Control) -> std::result::Result<(), String> {
    match step {
        Control::RunStartupHooks => {
            for hook in &shard.registry.on_startup {
                if contained(|| hook()).await.is_err() {
                    return Err("an on_startup hook panicked".into());
                }
            }
        }
        Control::StartAccepting => {
            let listeners = [
                (shard.listener.borrow().clone(), Transport::Tcp),
                (shard.ws_listener.borrow().clone(), Transport::WebSocket),
            ];
            for (listener, transport) in listeners {
                if let Some(l) = listener {
                    let task = spawn_task(accept::accept_loop(shard.clone(), l, transport));
                    shard.accept_task.borrow_mut().push(task);
                }
            }
        }
        Control::StopAccepting => {
            shard.accept_task.borrow_mut().clear();
            shard.listener.borrow_mut().take();
            shard.ws_listener.borrow_mut().take();
        }
        Control::RunShutdownHooks => {
            for hook in &shard.registry.on_shutdown {
                if contained(|| hook()).await.is_err() {
                    tracing::error!("an on_shutdown hook panicked");
                }
            }
        }
        Control::Drain => {
            shard.draining.set(true);
            // Not admitted yet: nothing of theirs to flush.
            shard.close_proxy_reads();
            let conns: Vec<Rc<LocalConn>> = shard.pool.borrow().values().cloned().collect();
            for c in &conns {
                c.request_close(CloseReason::ServerStopping);
            }
            drop(conns);
            // Each connection flushes for at most drain_timeout; allow for its hooks.
            let deadline = shard.router.descriptor().drain_timeout + Duration::from_secs(1);
            let all_gone = async {
                while !shard.pool.borrow().is_empty() {
                    shard.drained.wait().await;
                }
                true
            };
            let timed_out = async {
                sleep(deadline).await;
                false
            };
            if !all_gone.or(timed_out).await {
                tracing::warn!(
                    shard = shard.index,
                    left = shard.pool.borrow().len(),
                    "drain timed out"
                );
            }
        }
        Control::Exit => {}
    }
    Ok(())
}

/// One timer per shard: auth timeouts, pings for idle connections, closes for silent
/// ones — each decided by the connection's core.
async fn heartbeat_loop(shard: Rc<Shard>) {
    let c = &shard.core_config;
    let period = (c.heartbeat_interval.min(c.auth_timeout) / 4).clamp(TICK_MIN, TICK_MAX);
    loop {
        sleep(period).await;
        let (now, ts) = shard.clock.reanchor();
        // No await below: the pool stays borrowed for one synchronous pass.
        let pool = shard.pool.borrow();
        let mut queued = 0;
        for c in pool.values() {
            let close = c.core.borrow_mut().on_tick(now, ts);
            if let Some(close) = close {
                tracing::debug!(conn = %c.meta.id, reason = ?close.reason, "closing");
                c.request_close(close.reason);
            }
            queued += c.out.pending_bytes();
        }
        // Summed here, where every connection is visited anyway: kept on each queue
        // operation instead, the gauge cost a broadcast delivery ~20 % more (one more
        // cache line of every receiver's queue touched).
        shard.metrics.outbound_bytes.set(queued as u64);
    }
}
