//! One server connection on a shard, from accept to the last hook: the read
//! loop that feeds the core and runs the handlers it asks for, and the teardown the
//! core's [`Close`] describes.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use conduit_protocol::clock::wall_clock_ms;
use conduit_protocol::{Codec, FrameDecoder};
use futures_lite::FutureExt;
use tracing::{Instrument, Span};

use super::calls::{self, rpc_span, timed};
use super::local::{Held, LocalConn};
use super::setup::{prepare, Prepared, Setup};
use super::Shard;
use crate::core::{Args, CallId, CallKind, Close, CloseReason, ConnCore, Event, LocalNotify};
use crate::dispatch::{self, contained};
use crate::id::ConnectionId;
use crate::router::{
    Admission, ConnMeta, Connection, FailBudget, SourceKey, AUTH_FAILURE_MEMORY,
    MAX_FAILING_SOURCES,
};
use crate::rt::exec::{sleep, spawn, spawn_task, Task};
use crate::rt::net::SharedStream;
use crate::rt::tls::TlsLayer;
use crate::rt::writer::{write_loop, write_now};
use crate::ws::Transport;

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

/// Serves one accepted connection holding `admission` until it is gone.
///
/// The rare and long steps (TLS handshake, WebSocket upgrade, the first frames read
/// with the upgrade, the teardown) run in boxed futures of their own, so this task's
/// future — what every idle connection holds — is sized for the read loop only.
///
/// Everything it does runs in its `conn` span (target `conduit::conn`: shard, peer, id,
/// and codec once logged in), so each log line about it — the engine's and its
/// handlers' — carries them.
pub(super) fn serve(shard: Rc<Shard>, stream: SharedStream, admission: Admission) {
    // Its id now, so its span names it from the first line (a connection whose setup
    // fails leaves a gap in its shard's sequence, which nothing relies on).
    let id = shard.next_id();
    let span = tracing::info_span!(
        target: "conduit::conn",
        "conn",
        shard = shard.index,
        peer = %admission.peer,
        %id,
        codec = tracing::field::Empty,
    );
    // Not wrapped when disabled: the wrapper's enter and exit on every poll were ~2 %
    // of an RPC's cost in a profile, for a span nobody records. Chosen here, at the
    // spawn, not inside one async fn: a future holding either of two awaited futures
    // was laid out with room for both (+850 bytes per idle connection, measured).
    if span.is_disabled() {
        spawn(serve_in(shard, stream, admission, id));
    } else {
        spawn(serve_in(shard, stream, admission, id).instrument(span));
    }
}

/// [`serve`], inside the connection's span (the current one, when enabled).
/// Run before each write to a connection's socket: what this shard queued for the
/// other shards goes on their buses first (at once when they have room; a full bus is
/// not waited for, or the shard's writers would run at the pace of the slowest other
/// shard), so a reply saying a broadcast was sent does not overtake the broadcast.
fn hand_over() {
    crate::router::hand_over_lanes()
}

async fn serve_in(shard: Rc<Shard>, stream: SharedStream, admission: Admission, id: ConnectionId) {
    let Some((conn, early)) = Box::pin(open(&shard, stream, admission, id)).await else {
        return;
    };
    let mut unfinished = Unfinished {
        shard: shard.clone(),
        conn: conn.clone(),
        armed: true,
    };
    let writer = {
        let span = Span::current();
        let conn = conn.clone();
        let shard_metrics = shard.metrics.clone();
        let max_batch = shard.router.descriptor().max_write_batch_bytes;
        let write = async move {
            let ws = conn.ws.is_some();
            let tls = conn.tls.as_deref();
            let tally = Some(&*shard_metrics);
            let written = write_loop(
                &conn.out,
                &conn.stream,
                max_batch,
                ws,
                tls,
                tally,
                hand_over,
            );
            if let Err(e) = written.await {
                conn.request_close(CloseReason::Io(e.kind()));
            }
        };
        if span.is_disabled() {
            spawn_task(write)
        } else {
            spawn_task(write.instrument(span))
        }
    };
    let mut decoder = shard.core_config.new_decoder();
    // Bytes read before it was served: past a PROXY header, or behind the WebSocket
    // upgrade request.
    let first = if early.is_empty() {
        None
    } else {
        Box::pin(first_frames(&shard, &conn, &mut decoder, early)).await
    };
    let close = match first {
        Some(close) => close,
        None => read_loop(&shard, &conn, &mut decoder).await,
    };
    drop(decoder);
    Box::pin(teardown(&shard, &conn, close, writer)).await;
    unfinished.armed = false;
}

/// A new connection's setup, core and place in the shard's pool: the connection and
/// the bytes it sent that were read with its setup; `None` when the setup failed.
async fn open(
    shard: &Rc<Shard>,
    stream: SharedStream,
    admission: Admission,
    id: ConnectionId,
) -> Option<(Rc<LocalConn>, Vec<u8>)> {
    // `auth_timeout` counts from here (past a PROXY header), through a TLS handshake
    // and a WebSocket upgrade, to the login.
    let accepted = Instant::now();
    let Admission {
        peer,
        slot,
        pending,
        first_bytes,
        transport,
    } = admission;
    if let Err(e) = stream.configure(shard.router.descriptor().buffer_size) {
        tracing::debug!("socket options: {e}");
    }
    let prepared = if first_bytes.is_empty()
        && transport != Transport::WebSocket
        && shard.router.tls().is_none()
    {
        Some(Prepared {
            peer,
            pending,
            tls: None,
            ws: None,
            early: Vec::new(),
        })
    } else {
        let setup = Setup {
            peer,
            pending,
            first_bytes,
            transport,
        };
        Box::pin(prepare(shard, &stream, setup)).await
    };
    let Prepared {
        peer,
        pending,
        tls,
        ws,
        early,
    } = prepared?;
    let (Some(token), Some(nonce)) = (random_bytes::<64>(), random_bytes::<32>()) else {
        stream.shutdown_both();
        return None;
    };
    let core = ConnCore::new(
        shard.core_config.clone(),
        id,
        nonce,
        hex::encode(token),
        accepted,
        shard.metrics.clone(),
    );
    let out = core.outbound().clone();
    let meta = ConnMeta::new(id, peer);
    if let Some(cert) = tls
        .as_deref()
        .and_then(TlsLayer::peer_certificates)
        .and_then(crate::tls::PeerCertificate::new)
    {
        let _ = meta.peer_certificate.set(cert);
    }
    let conn = Rc::new(LocalConn {
        meta: Arc::new(meta),
        core: RefCell::new(core),
        out,
        stream,
        ws,
        tls,
        close: Cell::new(None),
        close_requested: LocalNotify::default(),
        slot: Cell::new(usize::MAX),
        held: RefCell::new(Held {
            slot: Some(slot),
            pending: Some(pending),
            listed: None,
        }),
    });
    shard.pool.borrow_mut().insert(id, conn.clone());
    tracing::debug!(conn = %id, %peer, "accepted");
    // Arrived after the drain asked every connection to close (handed over late).
    if shard.draining.get() {
        conn.request_close(CloseReason::ServerStopping);
    }
    Some((conn, early))
}

/// Gives back what a connection holds — its place in the shard, its
/// `max_connections` slot, its directory entry — and closes its socket if its task
/// ends without its teardown: a panic in the glue (tokio contains it to the task), or
/// the task dropped with its thread. Counts then never drift; disconnect hooks do not
/// run.
struct Unfinished {
    shard: Rc<Shard>,
    conn: Rc<LocalConn>,
    /// Cleared once the teardown has run.
    armed: bool,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let id = self.conn.meta.id;
        self.conn.meta.set_closed();
        // `try_`: whatever panicked may have held a borrow.
        if let Ok(mut pool) = self.shard.pool.try_borrow_mut() {
            pool.remove(&id);
        }
        self.shard.remove_authed(&self.conn);
        if let Ok(mut held) = self.conn.held.try_borrow_mut() {
            let held = std::mem::take(&mut *held);
            if held.listed.is_some() {
                let slot = crate::metrics::codec_slot(self.conn.codec());
                self.shard.metrics.connections[slot].shift(-1);
            }
            // Empty when the exiting shard already gave it back (and said so).
            if held.slot.is_some() || held.listed.is_some() || held.pending.is_some() {
                tracing::error!(conn = %id, "connection task ended without its teardown");
            }
        }
        self.conn.meta.clear_extensions();
        self.conn.abandon();
        let empty = self.shard.pool.try_borrow().is_ok_and(|p| p.is_empty());
        if self.shard.draining.get() && empty {
            self.shard.drained.notify();
        }
    }
}

/// Gives the decoder the bytes the connection sent that were read before it was served
/// (past a PROXY header, or behind a WebSocket upgrade request), through the same path
/// as later reads, and acts on the frames among them before anything is read from the
/// socket; `Some` ends the connection.
async fn first_frames(
    shard: &Rc<Shard>,
    conn: &Rc<LocalConn>,
    decoder: &mut FrameDecoder,
    early: Vec<u8>,
) -> Option<Close> {
    let mut early = &early[..];
    if early.is_empty() {
        return None;
    }
    while !early.is_empty() {
        let spare = decoder.spare();
        if spare.is_empty() {
            // The decoder holds a whole frame's worth: act on it to make room.
            if let Some(close) = handle_frames(shard, conn, decoder).await {
                return Some(close);
            }
            if decoder.spare().is_empty() {
                let m = crate::core::PeerMisbehaved::FrameTooLarge;
                return Some(
                    conn.core
                        .borrow_mut()
                        .close(CloseReason::Misbehaved(m), wall_clock_ms()),
                );
            }
            continue;
        }
        let n = spare.len().min(early.len());
        spare[..n].copy_from_slice(&early[..n]);
        early = &early[n..];
        if let Err(reason) = conn.took(shard, decoder, n) {
            return Some(conn.core.borrow_mut().close(reason, wall_clock_ms()));
        }
    }
    handle_frames(shard, conn, decoder).await
}

/// Reads and acts on frames until the connection must close; returns how.
async fn read_loop(shard: &Rc<Shard>, conn: &Rc<LocalConn>, decoder: &mut FrameDecoder) -> Close {
    loop {
        if let Some(r) = conn.close.get() {
            return conn.core.borrow_mut().close(r, wall_clock_ms());
        }
        let read = {
            let read = async { Some(conn.read_into(shard, decoder).await) };
            let closed = async {
                conn.close_requested.wait().await;
                None
            };
            read.or(closed).await
        };
        let reason = match read {
            None => continue,
            Some(Ok(0)) => CloseReason::PeerClosed,
            Some(Ok(n)) => match conn.took(shard, decoder, n) {
                Ok(()) => {
                    // On plain TCP the reader writes the replies to what it read
                    // itself, in this turn, when the writer is idle: no wake-up of the
                    // writer task per request.
                    let direct = conn.writes_directly();
                    if direct {
                        conn.out.hold_wakes();
                    }
                    // A plain function handles the frames until one must wait (a
                    // login's hooks, a handler still pending after its first poll);
                    // only then does an async step (boxed: the common path keeps no
                    // state of it in the connection's task) wait and go on.
                    let closed = match handle_now(shard, conn, decoder, shard.clock.now()) {
                        Step::Done(close) => close,
                        step => Box::pin(handle_waiting(shard, conn, decoder, step)).await,
                    };
                    if direct {
                        if closed.is_none() {
                            let max = shard.router.descriptor().max_write_batch_bytes;
                            let mut batch = shard.direct_batch.borrow_mut();
                            let metrics = &shard.metrics;
                            write_now(&conn.out, &conn.stream, &mut batch, max, metrics, hand_over);
                        }
                        conn.out.release_wakes();
                    }
                    if let Some(close) = closed {
                        return close;
                    }
                    continue;
                }
                Err(reason) => reason,
            },
            Some(Err(e)) => CloseReason::Io(e.kind()),
        };
        return conn.core.borrow_mut().close(reason, wall_clock_ms());
    }
}

/// Where a synchronous pass over the buffered frames stopped.
enum Step<'s> {
    /// Nothing more to do now: no whole frame left, or the connection ends (`Some`:
    /// a close was asked for, or the core closed it).
    Done(Option<Close>),
    /// A peer just logged in: its connect hooks run (they may wait).
    LoggedIn {
        codec: Codec,
        client_name: Option<String>,
    },
    /// Call `id`'s handler did not finish on its first poll.
    Pending {
        id: CallId,
        running: calls::Running<'s>,
    },
}

/// Acts on every whole frame buffered; `Some` ends the connection (see the read
/// loop, which does the same inline).
async fn handle_frames(
    shard: &Rc<Shard>,
    conn: &Rc<LocalConn>,
    decoder: &mut FrameDecoder,
) -> Option<Close> {
    match handle_now(shard, conn, decoder, shard.clock.now()) {
        Step::Done(close) => close,
        step => Box::pin(handle_waiting(shard, conn, decoder, step)).await,
    }
}

/// Waits for what stopped [`handle_now`], then handles the frames after it.
async fn handle_waiting<'s>(
    shard: &'s Rc<Shard>,
    conn: &Rc<LocalConn>,
    decoder: &mut FrameDecoder,
    mut step: Step<'s>,
) -> Option<Close> {
    loop {
        match step {
            Step::Done(close) => return close,
            Step::LoggedIn { codec, client_name } => {
                // Boxed: the hooks' futures are sized only while they run.
                let hooks = Box::pin(logged_in(shard, conn, codec, client_name.as_deref()));
                conn.unheld(hooks).await;
            }
            Step::Pending { id, running } => {
                let outcome = calls::wait(shard, conn, decoder, running).await;
                if let Some(outcome) = outcome {
                    let now = shard.clock.now();
                    let done = conn.core.borrow_mut().complete(id, outcome, now.1);
                    if let Some(close) = done {
                        return Some(close);
                    }
                    step = handle_now(shard, conn, decoder, now);
                    continue;
                }
            }
        }
        step = handle_now(shard, conn, decoder, shard.clock.now());
    }
}

/// Handles buffered frames until none is left or one must wait. `now` is the time
/// the bytes were read (or the last wait ended), used for every frame among them: two
/// clock reads per frame were a measurable share of a request's cost.
fn handle_now<'s>(
    shard: &'s Rc<Shard>,
    conn: &Rc<LocalConn>,
    decoder: &mut FrameDecoder,
    now: (Instant, u64),
) -> Step<'s> {
    loop {
        // Kicked (or cut off) while frames were still buffered: handle none of them.
        if let Some(r) = conn.close.get() {
            return Step::Done(Some(conn.core.borrow_mut().close(r, wall_clock_ms())));
        }
        let event = conn.core.borrow_mut().poll_event(decoder, now.0, now.1);
        let Some(event) = event else {
            return Step::Done(None);
        };
        match event {
            Event::Handled => {}
            Event::Close(close) => return Step::Done(Some(close)),
            Event::Authenticated {
                codec,
                client_name,
                token,
            } => {
                conn.meta.set_token(token);
                return Step::LoggedIn { codec, client_name };
            }
            Event::TokenRefreshed(token) => conn.meta.set_token(Some(token)),
            Event::Call(call) => {
                let id = call.id;
                let handle = shard.handle(conn);
                let outcome = if matches!(call.args, Args::Native(_)) {
                    // In-place arguments: the handler is synchronous and borrows the
                    // receive buffer only while it runs.
                    let _in_span = rpc_span(conn, &call).entered();
                    let slot = (call.kind == CallKind::Rpc).then_some(call.slot);
                    let outcome = dispatch::run_in_place(&shard.registry, &handle, call);
                    if let Some(slot) = slot {
                        timed(shard, slot, now.0, &outcome);
                    }
                    outcome
                } else {
                    match calls::start(shard, conn, handle, call, now.0) {
                        Ok(done) => done,
                        Err(running) => return Step::Pending { id, running },
                    }
                };
                let done = conn.core.borrow_mut().complete(id, outcome, now.1);
                if let Some(close) = done {
                    return Step::Done(Some(close));
                }
            }
        }
    }
}

/// Registers a connection that just logged in and runs the connect hooks.
async fn logged_in(shard: &Rc<Shard>, conn: &Rc<LocalConn>, codec: Codec, client: Option<&str>) {
    // Counted before the client can read AUTH_SUCCESS (queued, not yet written), so a
    // client that logged in is always in `connection_count`.
    conn.meta.set_authenticated(codec);
    let slot = crate::metrics::codec_slot(codec);
    shard.metrics.connections[slot].shift(1);
    shard.metrics.logins[slot].inc();
    // No longer one of those logging in: its source may log another one in, and its
    // earlier failed logins are forgotten.
    conn.held.borrow_mut().pending.take();
    let stats = shard.router.counts();
    stats
        .auth_failed
        .succeeded(SourceKey::of(conn.meta.peer_addr.ip()));
    shard.add_authed(conn);
    let listed = shard.router.list(&shard.run, conn.meta.clone());
    conn.held.borrow_mut().listed = Some(listed);
    // Per connection: debug, so `info` stays quiet however many connections churn.
    Span::current().record("codec", tracing::field::debug(codec));
    tracing::debug!(client, "authenticated");
    let handle = shard.handle(conn);
    for hook in &shard.registry.on_connect {
        if contained(|| hook(handle.clone())).await.is_err() {
            tracing::error!(conn = %conn.meta.id, "an on_client_connect hook panicked");
        }
    }
}

/// Carries out `close`: the last frame (after the brake, for a failed login), a flush
/// within the drain timeout or none, the socket's end, and the disconnect hooks.
async fn teardown(shard: &Rc<Shard>, conn: &Rc<LocalConn>, close: Close, writer: Task<()>) {
    let id = conn.meta.id;
    let reason = close.reason;
    conn.meta.set_closed();
    // Out of its rooms at once, so presence does not count it through the flush; the
    // leave hooks run below, after the flush.
    let rooms = shard.run.rooms.leave_all(&conn.meta);
    if reason == CloseReason::AuthFailed {
        let stats = shard.router.counts();
        // Counted now, before the brake: a guesser that gives up early still pays.
        let d = shard.router.descriptor();
        let budget = FailBudget {
            free_failures: d.max_auth_failures_per_source,
            base: d.auth_backoff_base,
            max: d.auth_backoff_max,
            forget_after: AUTH_FAILURE_MEMORY,
            max_sources: MAX_FAILING_SOURCES,
        };
        let source = SourceKey::of(conn.meta.peer_addr.ip());
        stats.auth_failed.failed(source, Instant::now(), &budget);
    }
    if let Some(last) = close.last {
        let send = close.last_after.is_zero() || {
            // The brake; a peer that leaves meanwhile gives its slot back at once.
            let waited = async {
                sleep(close.last_after).await;
                true
            };
            let gone = async {
                let mut scratch = [0u8; 256];
                while let Ok(1..) = conn.stream.read(&mut scratch).await {}
                false
            };
            waited.or(gone).await
        };
        if send {
            conn.out.push_unbounded(last);
        }
    }
    // A WebSocket peer is told with a close frame, after the last protocol frame.
    if let (Some(ws), true) = (&conn.ws, reason.flushes()) {
        conn.out.push_unbounded(ws.close_frame(reason));
    }
    if !reason.flushes() {
        conn.out.clear();
    }
    // Held v1 frames need not wait for a client that is going away.
    conn.out.open_gate();
    conn.out.close();
    if reason.resets() {
        conn.stream.abort_on_close();
    }
    if reason.flushes() {
        let flushed = async {
            writer.await;
            true
        };
        let late = async {
            sleep(shard.router.descriptor().drain_timeout).await;
            false
        };
        if !flushed.or(late).await {
            tracing::debug!(conn = %id, "drain timeout; closing with frames unsent");
        }
    } else {
        conn.stream.shutdown_both();
        writer.await;
    }
    conn.stream.shutdown_both();
    conn.out.clear();
    // What its core refused or dropped, counted by its shard at its close.
    let counters = conn.core.borrow().counters();
    let m = &shard.metrics;
    m.frames_not_sent.add(counters.frames_not_sent);
    m.stale_results.add(counters.stale_results);
    m.rate_limited.add(counters.rate_limited);

    shard.pool.borrow_mut().remove(&id);
    let listed = conn.held.borrow_mut().listed.take();
    let failed_login = if listed.is_some() {
        None
    } else {
        reason.failed_login()
    };
    shard.metrics.closed(reason.kind(), failed_login);
    warn_about(reason, conn.meta.peer_addr);
    if let Some(listed) = listed {
        shard.metrics.connections[crate::metrics::codec_slot(conn.codec())].shift(-1);
        shard.remove_authed(conn);
        drop(listed);
        let handle = shard.handle(conn);
        for room in rooms {
            for hook in &shard.run.room_hooks.on_leave {
                if contained(|| hook(handle.clone(), room.to_string()))
                    .await
                    .is_err()
                {
                    tracing::error!(conn = %id, "an on_leave hook panicked");
                }
            }
        }
        for hook in &shard.registry.on_disconnect {
            if contained(|| hook(handle.clone())).await.is_err() {
                tracing::error!(conn = %id, "an on_client_disconnect hook panicked");
            }
        }
    }
    conn.meta.clear_extensions();
    tracing::debug!(?reason, "disconnected");
    let held = std::mem::take(&mut *conn.held.borrow_mut());
    drop(held);
    if shard.draining.get() && shard.pool.borrow().is_empty() {
        shard.drained.notify();
    }
}

/// What an operator should hear of a close, at most once a second per kind (each
/// close is counted in the metrics and logged at debug with its connection): peers that
/// break the protocol, and failed logins.
fn warn_about(reason: CloseReason, peer: std::net::SocketAddr) {
    use crate::throttle::Throttle;
    static PROTOCOL: Throttle = Throttle::new();
    static LOGIN: Throttle = Throttle::new();
    match reason {
        CloseReason::Misbehaved(m) => {
            PROTOCOL.warn(|| format!("closed a connection from {peer}: {}", m.wire_text()))
        }
        CloseReason::AuthFailed => LOGIN.warn(|| format!("failed login from {peer}")),
        _ => {}
    }
}

impl Shard {
    /// The application's handle to `conn`.
    pub(super) fn handle(&self, conn: &LocalConn) -> Connection {
        Connection {
            meta: conn.meta.clone(),
            router: self.router.clone(),
        }
    }
}
