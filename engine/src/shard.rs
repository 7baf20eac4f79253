//! One shard: a pinned glommio executor that accepts on the shared port, owns its
//! connections, runs their handlers, ticks their heartbeats and serves its bus.
//!
//! Hot path, in order: [`read_loop`] (socket → decoder → core) → [`dispatch`] (handler)
//! → [`Outbound::push`] → [`write_loop`] (gathered write → socket).

use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;
use conduit_protocol::native::{self, RpcFailure, ValueTree};
use conduit_protocol::v1::{self, codes};
use conduit_protocol::{Codec, DecoderLimits, FrameDecoder, Value, WireError};
use futures_lite::FutureExt;
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::sleep;
use glommio::{spawn_local, Task};

use crate::bus::{BusMsg, Control, Filter, Frames};
use crate::connection::{ConnMeta, Connection};
use crate::core::{Action, Body, CloseReason, ConnCore, CoreConfig, TickAction};
use crate::descriptor::SlowConsumerPolicy;
use crate::error::Error;
use crate::handlers::{RawArgs, Registry, RpcCall, RpcError};
use crate::id::ConnectionId;
use crate::io::SharedStream;
use crate::outbound::{LocalNotify, Outbound, Push};
use crate::server::{now_ms, Runtime, Server};

thread_local! {
    /// The shard running on this thread, if any.
    static CURRENT: RefCell<Option<Rc<Shard>>> = const { RefCell::new(None) };
}

/// The shard on this thread, if it belongs to `server`.
pub(crate) fn current_for(server: &Server) -> Option<Rc<Shard>> {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|s| s.server.same_as(server))
            .cloned()
    })
}

/// A connection as its owning shard holds it.
pub(crate) struct LocalConn {
    pub meta: Arc<ConnMeta>,
    core: RefCell<ConnCore>,
    pub out: Outbound,
    stream: SharedStream,
    /// First reason anyone asked this connection to close for.
    close: RefCell<Option<CloseReason>>,
    /// Wakes the reader when a close is requested.
    close_requested: LocalNotify,
    /// Position in the shard's dense list of authenticated connections.
    slot: Cell<usize>,
    /// Whether the connect hooks started; the disconnect hooks run only if they did.
    hooks_started: Cell<bool>,
    /// The peer sent a frame after AUTH_SUCCESS, so it has read AUTH_SUCCESS: a v1
    /// writer holding frames back (see `v1_post_auth_delay`) may start.
    spoke_after_auth: LocalNotify,
}

impl LocalConn {
    /// Asks the connection to close (the reader acts on it); the first reason wins.
    pub fn request_close(&self, reason: CloseReason) {
        let mut c = self.close.borrow_mut();
        if c.is_none() {
            *c = Some(reason);
            self.close_requested.notify();
        }
    }

    fn codec(&self) -> Codec {
        self.meta.codec().unwrap_or(Codec::V1)
    }
}

/// Per-shard state. Lives on its executor thread only.
pub(crate) struct Shard {
    pub index: usize,
    pub server: Server,
    pub rt: Arc<Runtime>,
    pub registry: Arc<Registry>,
    core_config: Arc<CoreConfig>,
    /// Every connection of this shard, authenticated or not.
    pool: RefCell<AHashMap<ConnectionId, Rc<LocalConn>>>,
    /// Authenticated connections, dense, for fan-out.
    authed: RefCell<Vec<Rc<LocalConn>>>,
    next_seq: Cell<u64>,
    listener: RefCell<Option<Rc<TcpListener>>>,
    accept_task: RefCell<Option<Task<()>>>,
    /// Set once Drain started: pool emptying wakes `drained`.
    draining: Cell<bool>,
    drained: LocalNotify,
    /// `max_connections` slots and refusals in flight this shard holds in the server's
    /// counts, so what its unfinished tasks hold can be given back when it exits.
    slots_held: Cell<usize>,
    refusals_held: Cell<usize>,
    /// Set when the shard exits: it has settled its counts, tasks must not touch them.
    exited: Cell<bool>,
}

impl Shard {
    fn desc(&self) -> &crate::ServerDescriptor {
        self.server.descriptor()
    }

    fn decoder_limits(&self) -> DecoderLimits {
        let d = self.desc();
        DecoderLimits {
            max_payload_bytes: d.max_frame_bytes,
            initial_buffer_bytes: d.recv_buffer_bytes,
            accept_v1: d.allow_v1,
            accept_native: d.allow_native,
        }
    }

    /// Queues `frame` to `conn`, applying the slow-consumer policy. Returns whether it
    /// was queued.
    pub fn push(&self, conn: &LocalConn, frame: Bytes) -> bool {
        self.push_frame(conn, frame) == Push::Queued
    }

    /// [`push`](Self::push), telling a full queue from a closed one. Never waits: a
    /// full queue is the slow-consumer policy's business, not the caller's.
    fn push_frame(&self, conn: &LocalConn, frame: Bytes) -> Push {
        let pushed = conn.out.push(frame);
        if pushed == Push::Full {
            self.server
                .stats()
                .slow_consumers
                .fetch_add(1, Ordering::Relaxed);
            match self.desc().slow_consumer {
                SlowConsumerPolicy::DropNewest => {
                    tracing::debug!(conn = %conn.meta.id, "slow consumer: frame dropped");
                }
                _ => {
                    tracing::warn!(
                        conn = %conn.meta.id,
                        pending = conn.out.pending_bytes(),
                        "slow consumer: disconnecting"
                    );
                    // Free its queue now and refuse further frames: nothing more is
                    // counted as delivered to it, logged or held for it while it closes.
                    conn.out.clear();
                    conn.out.close();
                    conn.request_close(CloseReason::SlowConsumer);
                }
            }
        }
        pushed
    }

    /// Queues `frames` to every admitted authenticated connection of this shard.
    pub fn fanout(&self, frames: &Frames, filter: &Filter) -> usize {
        let mut count = 0;
        let mut deliver = |conn: &LocalConn| {
            if let Some(f) = frames.for_codec(conn.codec()) {
                if self.push(conn, f.clone()) {
                    count += 1;
                }
            }
        };
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

    /// Queues `frames` to one local connection: [`Error::Closed`] if it is gone (or
    /// cannot take this codec), [`Error::QueueFull`] if its queue is over the limit.
    pub fn send_local(&self, id: ConnectionId, frames: &Frames) -> Result<(), Error> {
        let conn = self.pool.borrow().get(&id).cloned();
        let Some(c) = conn.filter(|c| c.meta.is_authenticated()) else {
            return Err(Error::Closed);
        };
        let Some(f) = frames.for_codec(c.codec()) else {
            return Err(Error::Closed);
        };
        // Read before the push: a disconnecting slow consumer's queue is cleared.
        let pending = c.out.pending_bytes();
        match self.push_frame(&c, f.clone()) {
            Push::Queued => Ok(()),
            Push::Full => Err(Error::QueueFull(pending)),
            Push::Closed => Err(Error::Closed),
        }
    }

    /// Kicks one local connection, after queueing an optional last message.
    pub fn kick_local(&self, id: ConnectionId, last: Option<&Frames>) -> bool {
        let conn = self.pool.borrow().get(&id).cloned();
        let Some(c) = conn else { return false };
        if let Some(f) = last.and_then(|l| l.for_codec(c.codec())) {
            self.push(&c, f.clone());
        }
        c.request_close(CloseReason::Kicked);
        true
    }

    /// Gives back the `max_connections` slot a connection held.
    fn release_slot(&self) {
        if !self.exited.get() {
            self.slots_held.set(self.slots_held.get() - 1);
            self.server.stats().slots.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn next_id(&self) -> ConnectionId {
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        ConnectionId::new(self.index, seq)
    }

    fn add_authed(&self, conn: &Rc<LocalConn>) {
        let mut authed = self.authed.borrow_mut();
        conn.slot.set(authed.len());
        authed.push(conn.clone());
    }

    fn remove_authed(&self, conn: &LocalConn) {
        let mut authed = self.authed.borrow_mut();
        let slot = conn.slot.get();
        if slot < authed.len() && Arc::ptr_eq(&authed[slot].meta, &conn.meta) {
            authed.swap_remove(slot);
            if let Some(moved) = authed.get(slot) {
                moved.slot.set(slot);
            }
        }
    }
}

/// Everything a shard is started with.
pub(crate) struct ShardSetup {
    pub index: usize,
    pub server: Server,
    pub rt: Arc<Runtime>,
    pub registry: Arc<Registry>,
    pub core_config: Arc<CoreConfig>,
    pub bind_addr: std::net::SocketAddr,
    pub bus: flume::Receiver<BusMsg>,
    /// Receives the listening address (or the bind error) once the listener exists.
    pub bound: crossbeam_channel::Sender<Result<std::net::SocketAddr, String>>,
}

/// Runs one shard until told to exit.
pub(crate) async fn shard_main(setup: ShardSetup) {
    let ShardSetup {
        index,
        server,
        rt,
        registry,
        core_config,
        bind_addr,
        bus,
        bound,
    } = setup;
    let listener = match TcpListener::bind(bind_addr) {
        Ok(l) => l,
        Err(e) => {
            let _ = bound.send(Err(format!("cannot listen on {bind_addr}: {e}")));
            return;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            let _ = bound.send(Err(format!("listener has no address: {e}")));
            return;
        }
    };
    let shard = Rc::new(Shard {
        index,
        server,
        rt,
        registry,
        core_config,
        pool: RefCell::new(AHashMap::new()),
        authed: RefCell::new(Vec::new()),
        next_seq: Cell::new(1),
        listener: RefCell::new(Some(Rc::new(listener))),
        accept_task: RefCell::new(None),
        draining: Cell::new(false),
        drained: LocalNotify::default(),
        slots_held: Cell::new(0),
        refusals_held: Cell::new(0),
        exited: Cell::new(false),
    });
    CURRENT.with(|c| *c.borrow_mut() = Some(shard.clone()));
    tracing::info!(shard = index, %addr, "shard listening");
    let _ = bound.send(Ok(addr));

    let ticker = spawn_local(heartbeat_loop(shard.clone()));
    bus_loop(&shard, bus).await;
    drop(ticker);
    shard.accept_task.borrow_mut().take();
    // Tasks still unfinished past the drain (a handler that never returned, a refusal
    // still waiting) never run again once the executor exits (glommio does not drop
    // them): settle what they hold in the server's counts here, and close their sockets.
    // Their disconnect hooks do not run.
    shard.exited.set(true);
    let stats = shard.server.stats();
    for c in shard.authed.borrow_mut().drain(..) {
        shard.rt.directory_remove(c.meta.id);
        stats.connections.fetch_sub(1, Ordering::AcqRel);
    }
    stats
        .slots
        .fetch_sub(shard.slots_held.take(), Ordering::AcqRel);
    stats
        .refusing
        .fetch_sub(shard.refusals_held.take(), Ordering::AcqRel);
    let left: Vec<Rc<LocalConn>> = shard.pool.borrow_mut().drain().map(|(_, c)| c).collect();
    for c in &left {
        c.stream.shutdown_both();
    }
    if !left.is_empty() {
        tracing::warn!(
            shard = index,
            left = left.len(),
            "connections abandoned at exit"
        );
    }
    drop(left);
    CURRENT.with(|c| *c.borrow_mut() = None);
    tracing::info!(shard = index, "shard stopped");
}

/// Bus messages served in a row before the bus lets the shard's other tasks run.
const BUS_BATCH: u32 = 64;

/// Serves the shard's bus until `Control::Exit`.
async fn bus_loop(shard: &Rc<Shard>, bus: flume::Receiver<BusMsg>) {
    let mut served: u32 = 0;
    while let Ok(msg) = bus.recv_async().await {
        match msg {
            BusMsg::Broadcast {
                frames,
                filter,
                reply,
            } => {
                let _ = reply.try_send(shard.fanout(&frames, &filter));
            }
            BusMsg::Send { to, frames, reply } => {
                let _ = reply.try_send(shard.send_local(to, &frames));
            }
            BusMsg::Kick { to, last, reply } => {
                let _ = reply.try_send(shard.kick_local(to, last.as_deref()));
            }
            BusMsg::Control { step, reply } => {
                if step == Control::Exit {
                    let _ = reply.send(Ok(()));
                    return;
                }
                // Lifecycle steps may take long (hooks, draining): run them beside the
                // bus so broadcasts from hooks keep flowing.
                let s = shard.clone();
                spawn_local(async move {
                    let r = control(&s, step).await;
                    let _ = reply.send(r);
                })
                .detach();
            }
        }
        // A receive that finds a message ready never yields, so a busy bus would keep
        // writers, readers and the heartbeat from running (and the queues it fills from
        // draining) for as long as other shards keep it busy.
        served = served.wrapping_add(1);
        if served % BUS_BATCH == 0 || glommio::executor().need_preempt() {
            glommio::executor().yield_now().await;
        }
    }
}

async fn control(shard: &Rc<Shard>, step: Control) -> Result<(), String> {
    match step {
        Control::RunStartupHooks => {
            for hook in shard.registry.on_startup.clone() {
                if contained(|| hook(shard.server.clone())).await.is_err() {
                    return Err("an on_startup hook panicked".into());
                }
            }
        }
        Control::StartAccepting => {
            let listener = shard.listener.borrow().clone();
            if let Some(l) = listener {
                let task = spawn_local(accept_loop(shard.clone(), l));
                *shard.accept_task.borrow_mut() = Some(task);
            }
        }
        Control::StopAccepting => {
            shard.accept_task.borrow_mut().take();
            shard.listener.borrow_mut().take();
        }
        Control::RunShutdownHooks => {
            for hook in shard.registry.on_shutdown.clone() {
                if contained(|| hook(shard.server.clone())).await.is_err() {
                    tracing::error!("an on_shutdown hook panicked");
                }
            }
        }
        Control::Drain => {
            shard.draining.set(true);
            let conns: Vec<Rc<LocalConn>> = shard.pool.borrow().values().cloned().collect();
            for c in &conns {
                c.request_close(CloseReason::ServerStopping);
            }
            drop(conns);
            // Each connection flushes for at most drain_timeout; allow for its hooks.
            let deadline = shard.desc().drain_timeout + Duration::from_secs(1);
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

async fn accept_loop(shard: Rc<Shard>, listener: Rc<TcpListener>) {
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(shard = shard.index, "accept failed: {e}");
                sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let max = shard.desc().max_connections;
        let slots = &shard.server.stats().slots;
        if slots.fetch_add(1, Ordering::AcqRel) >= max {
            slots.fetch_sub(1, Ordering::AcqRel);
            refuse(&shard, stream);
            continue;
        }
        shard.slots_held.set(shard.slots_held.get() + 1);
        spawn_local(serve(shard.clone(), stream)).detach();
    }
}

/// Turns away a connection over `max_connections`: if it speaks within the auth timeout
/// it gets an AUTH_FAILURE saying why; either way it is closed and never counted.
fn refuse(shard: &Rc<Shard>, stream: TcpStream) {
    let stats = shard.server.stats();
    if stats.refusing.fetch_add(1, Ordering::AcqRel) >= shard.desc().max_refusals_in_flight {
        stats.refusing.fetch_sub(1, Ordering::AcqRel);
        tracing::debug!("server full; closing a connection at once");
        return;
    }
    stats.refused.fetch_add(1, Ordering::Relaxed);
    shard.refusals_held.set(shard.refusals_held.get() + 1);
    let shard = shard.clone();
    spawn_local(async move {
        let stream = SharedStream::new(stream);
        let mut decoder = FrameDecoder::new(DecoderLimits {
            max_payload_bytes: 4096,
            initial_buffer_bytes: 256,
            ..shard.decoder_limits()
        });
        let wait = shard.desc().auth_timeout.min(Duration::from_secs(5));
        let codec = async {
            loop {
                let n = stream.read(decoder.spare()).await.ok()?;
                if n == 0 {
                    return None;
                }
                decoder.commit(n);
                match decoder.next_frame() {
                    Ok(Some(f)) => return Some(f.header.codec),
                    Ok(None) => {}
                    Err(_) => return None,
                }
            }
        };
        let timeout = async {
            sleep(wait).await;
            None
        };
        if let Some(codec) = codec.or(timeout).await {
            let text = CloseReason::ServerFull.wire_text();
            let frame = match codec {
                Codec::V1 => Some(v1::Encoder::new(now_ms()).auth_failure(text)),
                Codec::Native => native::Encoder::new(now_ms()).auth_failure(text).ok(),
            };
            if let Some(f) = frame {
                let _ = stream.write_all(&f).await;
            }
        }
        stream.shutdown_write().await;
        if !shard.exited.get() {
            shard.refusals_held.set(shard.refusals_held.get() - 1);
            shard.server.stats().refusing.fetch_sub(1, Ordering::AcqRel);
        }
    })
    .detach();
}

/// Fresh random bytes, or `None` when the OS has no entropy to give: a predictable
/// nonce would make native proofs replayable, so the caller refuses the connection.
fn random_bytes<const N: usize>() -> Option<[u8; N]> {
    let mut b = [0u8; N];
    match getrandom::getrandom(&mut b) {
        Ok(()) => Some(b),
        Err(e) => {
            tracing::error!("no random source, refusing the connection: {e}");
            None
        }
    }
}

/// One connection, from accept to the last hook.
async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let stream = SharedStream::new(stream);
    if let Err(e) = stream.configure(shard.desc().buffer_size) {
        tracing::debug!("socket options: {e}");
    }
    let (Ok(peer), Some(token), Some(nonce)) = (
        stream.peer_addr(),
        random_bytes::<64>(),
        random_bytes::<32>(),
    ) else {
        stream.shutdown_both();
        shard.release_slot();
        return;
    };
    let id = shard.next_id();
    let token = hex_lower(&token);
    let conn = Rc::new(LocalConn {
        meta: Arc::new(ConnMeta::new(id, peer)),
        core: RefCell::new(ConnCore::new(
            shard.core_config.clone(),
            id,
            nonce,
            token,
            Instant::now(),
        )),
        out: Outbound::new(shard.desc().max_outbound_bytes),
        stream,
        close: RefCell::new(None),
        close_requested: LocalNotify::default(),
        slot: Cell::new(usize::MAX),
        hooks_started: Cell::new(false),
        spoke_after_auth: LocalNotify::default(),
    });
    shard.pool.borrow_mut().insert(id, conn.clone());
    tracing::debug!(conn = %id, %peer, "accepted");

    let mut writer: Option<Task<()>> = None;
    let reason = read_loop(&shard, &conn, &mut writer).await;
    let reason = conn.close.borrow_mut().take().unwrap_or(reason);

    // Teardown: stop accepting frames, flush (gracefully) or drop (forcibly), close.
    let was_authed = conn.meta.is_authenticated();
    conn.meta.set_closed();
    let graceful = matches!(
        reason,
        CloseReason::Kicked
            | CloseReason::ServerStopping
            | CloseReason::PeerSaidGoodbye
            | CloseReason::Protocol(_)
    );
    if !graceful {
        conn.out.clear();
    }
    conn.out.close();
    match writer.take() {
        Some(w) if graceful => {
            let flushed = async {
                w.await;
                true
            };
            let late = async {
                sleep(shard.desc().drain_timeout).await;
                false
            };
            if !flushed.or(late).await {
                tracing::debug!(conn = %id, "drain timeout; closing with frames unsent");
            }
        }
        Some(w) => {
            if reason == CloseReason::SlowConsumer {
                conn.stream.abort_on_close();
            }
            conn.stream.shutdown_both();
            w.await;
        }
        None => conn.stream.shutdown_write().await,
    }
    conn.stream.shutdown_both();
    conn.out.clear();

    shard.pool.borrow_mut().remove(&id);
    if was_authed && !shard.exited.get() {
        shard.remove_authed(&conn);
        shard.rt.directory_remove(id);
        shard
            .server
            .stats()
            .connections
            .fetch_sub(1, Ordering::AcqRel);
        let handle = Connection {
            meta: conn.meta.clone(),
            server: shard.server.clone(),
        };
        let hooks = if conn.hooks_started.get() {
            shard.registry.on_disconnect.clone()
        } else {
            Vec::new()
        };
        for hook in hooks {
            if contained(|| hook(handle.clone())).await.is_err() {
                tracing::error!(conn = %id, "an on_client_disconnect hook panicked");
            }
        }
    }
    tracing::info!(conn = %id, ?reason, "disconnected");
    shard.release_slot();
    if shard.draining.get() && shard.pool.borrow().is_empty() {
        shard.drained.notify();
    }
}

/// Runs a user callback and the future it returns with panics caught: one that panics
/// while building its future (before its first `.await`) is contained as well as one
/// that panics while it runs. An uncaught panic would end the shard's executor.
async fn contained<F: std::future::Future>(
    make: impl FnOnce() -> F,
) -> std::thread::Result<F::Output> {
    AssertUnwindSafe(async move { make().await })
        .catch_unwind()
        .await
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// Reads and acts on frames until the connection must close; returns why.
async fn read_loop(
    shard: &Rc<Shard>,
    conn: &Rc<LocalConn>,
    writer: &mut Option<Task<()>>,
) -> CloseReason {
    // Until login only small authentication frames may arrive: a header claiming more
    // is refused before the buffer grows for it.
    let max_frame = shard.desc().max_frame_bytes;
    let mut decoder = FrameDecoder::new(DecoderLimits {
        max_payload_bytes: max_frame.min(shard.desc().max_auth_frame_bytes),
        ..shard.decoder_limits()
    });
    let mut full_limit = false;
    loop {
        if let Some(r) = conn.close.borrow().clone() {
            return r;
        }
        let read = {
            let spare = decoder.spare();
            let read = async { Some(conn.stream.read(spare).await) };
            let closed = async {
                conn.close_requested.wait().await;
                None
            };
            read.or(closed).await
        };
        match read {
            None => continue,
            Some(Ok(0)) => return CloseReason::PeerClosed,
            Some(Ok(n)) => decoder.commit(n),
            Some(Err(e)) => return CloseReason::Io(e.to_string()),
        }
        loop {
            // Kicked (or cut off) while frames were still buffered: handle none of them.
            if conn.close.borrow().is_some() {
                break;
            }
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(conn = %conn.meta.id, "protocol error: {e}");
                    // A first frame refused on its header still names the peer's codec:
                    // answer in it.
                    if let Some(codec) = decoder.front_codec() {
                        conn.core.borrow_mut().note_codec(codec);
                    }
                    let action = conn.core.borrow().protocol_error(&e);
                    if let Some(r) = act(shard, conn, action, writer).await {
                        return r;
                    }
                    return CloseReason::Protocol(e.close_reason());
                }
            };
            if conn.meta.is_authenticated() {
                conn.spoke_after_auth.notify();
            }
            let action = conn.core.borrow_mut().on_frame(frame, Instant::now());
            if let Some(r) = act(shard, conn, action, writer).await {
                return r;
            }
            if !full_limit && conn.meta.is_authenticated() {
                decoder.set_max_payload_bytes(max_frame);
                full_limit = true;
            }
        }
    }
}

/// Writes a frame: through the writer once it runs, directly before that.
async fn send(shard: &Shard, conn: &LocalConn, frame: Bytes, writer: &Option<Task<()>>) -> bool {
    if writer.is_some() {
        shard.push(conn, frame)
    } else {
        conn.stream.write_all(&frame).await.is_ok()
    }
}

/// Carries out one action; `Some(reason)` ends the connection.
async fn act(
    shard: &Rc<Shard>,
    conn: &Rc<LocalConn>,
    action: Action<'_>,
    writer: &mut Option<Task<()>>,
) -> Option<CloseReason> {
    match action {
        Action::None => None,
        Action::Reply(frame) => {
            if send(shard, conn, frame, writer).await {
                None
            } else {
                Some(CloseReason::Io("write failed".into()))
            }
        }
        Action::Refuse { reply, reason } => {
            tracing::info!(conn = %conn.meta.id, peer = %conn.meta.peer_addr, "authentication failed");
            shard
                .server
                .stats()
                .auth_failures
                .fetch_add(1, Ordering::Relaxed);
            sleep(shard.desc().auth_failure_delay).await;
            let _ = conn.stream.write_all(&reply).await;
            Some(reason)
        }
        Action::Close { reply, reason } => {
            if let Some(frame) = reply {
                send(shard, conn, frame, writer).await;
            }
            Some(reason)
        }
        Action::Authenticated { reply, client_name } => {
            // Counted before the client can see AUTH_SUCCESS, so a client that logged in
            // is always in `connection_count`.
            let codec = conn.core.borrow().codec().unwrap_or(Codec::V1);
            conn.meta.set_authenticated(codec);
            shard.add_authed(conn);
            shard.rt.directory_insert(conn.meta.clone());
            shard
                .server
                .stats()
                .connections
                .fetch_add(1, Ordering::AcqRel);
            if conn.stream.write_all(&reply).await.is_err() {
                return Some(CloseReason::Io("write failed".into()));
            }
            conn.hooks_started.set(true);
            tracing::info!(conn = %conn.meta.id, peer = %conn.meta.peer_addr, ?codec, client = ?client_name, "authenticated");
            let delay = match codec {
                Codec::V1 => Some(shard.desc().v1_post_auth_delay).filter(|d| !d.is_zero()),
                Codec::Native => None,
            };
            *writer = Some(spawn_local(write_loop(
                conn.clone(),
                shard.desc().max_write_batch_bytes,
                delay,
            )));
            let handle = Connection {
                meta: conn.meta.clone(),
                server: shard.server.clone(),
            };
            for hook in shard.registry.on_connect.clone() {
                if contained(|| hook(handle.clone())).await.is_err() {
                    tracing::error!(conn = %conn.meta.id, "an on_client_connect hook panicked");
                }
            }
            None
        }
        Action::Message {
            name,
            body,
            correlation_id,
        } => dispatch_message(shard, conn, &name, body, correlation_id).await,
        Action::Rpc {
            method,
            body,
            correlation_id,
        } => dispatch_rpc(shard, conn, method.as_deref(), body, correlation_id).await,
    }
}

fn handle(shard: &Shard, conn: &LocalConn) -> Connection {
    Connection {
        meta: conn.meta.clone(),
        server: shard.server.clone(),
    }
}

/// Closes for a payload the dispatcher could not decode (too deep, too many values, an
/// invalid archive), queueing the reason frame the peer's codec has for it.
fn bad_payload(shard: &Shard, conn: &LocalConn, e: &WireError) -> Option<CloseReason> {
    tracing::info!(conn = %conn.meta.id, "protocol error: {e}");
    let action = conn.core.borrow().protocol_error(e);
    if let Action::Close {
        reply: Some(frame), ..
    } = action
    {
        shard.push(conn, frame);
    }
    Some(CloseReason::Protocol(e.close_reason()))
}

/// Runs the handlers of a message; the last one's return value goes back to the sender
/// as `<type>_response`.
async fn dispatch_message(
    shard: &Rc<Shard>,
    conn: &Rc<LocalConn>,
    name: &str,
    body: Body<'_>,
    correlation_id: u64,
) -> Option<CloseReason> {
    let Some(handlers) = shard.registry.messages.get(name) else {
        tracing::debug!(conn = %conn.meta.id, name, "no handler for message type; ignored");
        return None;
    };
    let data = match body.into_value(conn.core.borrow().value_limits()) {
        Ok(v) => v,
        Err(e) => return bad_payload(shard, conn, &e),
    };
    let mut reply = None;
    // Every handler but the last gets a copy; the last takes the value itself.
    let mut data = Some(data);
    for (i, h) in handlers.iter().enumerate() {
        let arg = if i + 1 == handlers.len() {
            data.take().unwrap_or_default()
        } else {
            data.clone().unwrap_or_default()
        };
        match contained(|| h(handle(shard, conn), arg)).await {
            Ok(r) => reply = r,
            Err(_) => {
                tracing::error!(conn = %conn.meta.id, name, "message handler panicked");
                reply = None;
            }
        }
    }
    if let Some(value) = reply {
        let reply_name = format!("{name}_response");
        let frame = match conn.codec() {
            Codec::V1 => Some(v1::Encoder::new(now_ms()).message(&reply_name, &value)),
            Codec::Native => native::Encoder::new(now_ms())
                .frame(
                    conduit_protocol::FrameKind::Message,
                    correlation_id,
                    Some(&reply_name),
                    &ValueTree::from_value(&value),
                )
                .ok(),
        };
        if let Some(f) = frame {
            shard.push(conn, f);
        }
    }
    None
}

/// Runs an RPC and queues its response (or error).
async fn dispatch_rpc(
    shard: &Rc<Shard>,
    conn: &Rc<LocalConn>,
    method: Option<&str>,
    body: Body<'_>,
    correlation_id: u64,
) -> Option<CloseReason> {
    let limits = conn.core.borrow().value_limits();
    let result: Result<Value, RpcError> = match method {
        None => Err(RpcError::new(
            codes::METHOD_NOT_FOUND,
            "RPC method not found",
        )),
        Some("listall") => Ok(shard.registry.listall()),
        Some(m) => match shard.registry.rpcs.get(m) {
            None => Err(RpcError::new(
                codes::METHOD_NOT_FOUND,
                format!("RPC method not found: {m}"),
            )),
            Some(entry) if entry.archived.is_some() => {
                let call = RpcCall {
                    connection: handle(shard, conn),
                    method: m.to_owned(),
                    params: Value::Nil,
                };
                let raw = match body {
                    Body::Native(bytes) => RawArgs::Native(bytes),
                    Body::Value(v) => RawArgs::Value(v),
                };
                let run = entry
                    .archived
                    .as_ref()
                    .map(|f| std::panic::catch_unwind(AssertUnwindSafe(|| f(&call, raw))));
                match run {
                    Some(Ok(r)) => r,
                    _ => {
                        tracing::error!(conn = %conn.meta.id, method = m, "RPC handler panicked");
                        Err(RpcError::failed("internal error (handler panicked)"))
                    }
                }
            }
            Some(entry) => match body.into_value(limits) {
                Err(e) => return bad_payload(shard, conn, &e),
                Ok(params) => {
                    let call = RpcCall {
                        connection: handle(shard, conn),
                        method: m.to_owned(),
                        params,
                    };
                    match contained(|| (entry.call)(call)).await {
                        Ok(r) => r,
                        Err(_) => {
                            tracing::error!(conn = %conn.meta.id, method = m, "RPC handler panicked");
                            Err(RpcError::failed("internal error (handler panicked)"))
                        }
                    }
                }
            },
        },
    };
    let method = method.unwrap_or("");
    let ts = now_ms();
    let frame = match (conn.codec(), result) {
        (Codec::V1, Ok(v)) => Some(v1::Encoder::new(ts).rpc_success(correlation_id, &v)),
        (Codec::V1, Err(e)) => Some(v1::Encoder::new(ts).rpc_failure(
            correlation_id,
            &e.wire_message(method),
            e.code,
            e.details.as_ref(),
        )),
        (Codec::Native, Ok(v)) => native::Encoder::new(ts)
            .rpc_response(correlation_id, &ValueTree::from_value(&v))
            .ok(),
        (Codec::Native, Err(e)) => native::Encoder::new(ts)
            .rpc_error(
                correlation_id,
                &RpcFailure {
                    code: u32::try_from(e.code).unwrap_or(codes::INTERNAL as u32),
                    message: e.wire_message(method),
                    details: ValueTree::from_value(&e.details.unwrap_or(Value::Nil)),
                },
            )
            .ok(),
    };
    if let Some(f) = frame {
        shard.push(conn, f);
    }
    None
}

/// Drains a connection's outbound queue into gathered writes until it is closed and
/// empty.
async fn write_loop(conn: Rc<LocalConn>, max_batch_bytes: usize, first_delay: Option<Duration>) {
    if let Some(d) = first_delay {
        // Until the client shows it has read AUTH_SUCCESS (any frame from it), or the
        // fallback delay passes.
        sleep(d).or(conn.spoke_after_auth.wait()).await;
    }
    // Grows with bursts, up to MAX_IOVECS entries; released again when idle.
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        if conn.out.is_empty() {
            if conn.out.is_closed() {
                break;
            }
            if batch.capacity() > crate::outbound::KEEP_FRAMES {
                batch = Vec::new();
            }
            conn.out.ready.wait().await;
            continue;
        }
        // Everything queued since the last wake-up (up to the batch limits) goes out in
        // one gathered write while the socket takes it.
        conn.out
            .take_batch(&mut batch, crate::io::MAX_IOVECS, max_batch_bytes);
        let written = conn.stream.write_batch(&mut batch).await;
        conn.out.finish_batch();
        if let Err(e) = written {
            conn.request_close(CloseReason::Io(e.to_string()));
            conn.out.clear();
            conn.out.close();
            break;
        }
    }
    conn.stream.shutdown_write().await;
}

/// One timer per shard: auth timeouts, pings for idle connections, closes for silent
/// ones.
async fn heartbeat_loop(shard: Rc<Shard>) {
    let d = shard.desc();
    let period = (d.heartbeat_interval.min(d.auth_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        sleep(period).await;
        let now = Instant::now();
        // No await below: the pool stays borrowed for one synchronous pass.
        let pool = shard.pool.borrow();
        for c in pool.values() {
            let tick = c.core.borrow_mut().on_tick(now);
            match tick {
                TickAction::None => {}
                TickAction::Ping(frame) => {
                    shard.push(c, frame);
                }
                TickAction::Close(reason) => {
                    tracing::info!(conn = %c.meta.id, ?reason, "closing");
                    c.request_close(reason);
                }
            }
        }
    }
}

/// Runs `fut` on the current executor, detached (for application background tasks).
pub fn spawn_detached(fut: impl std::future::Future<Output = ()> + 'static) {
    spawn_local(fut).detach();
}
