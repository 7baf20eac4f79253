//! A connection's handler calls: each RPC in its `rpc` span and timed into its shard's
//! latency histogram, and a handler that waits watched — its connection read on, a
//! close abandoning it — so a call that never completes never holds a connection.

use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use conduit_protocol::FrameDecoder;
use futures_lite::FutureExt;
use tracing::{Instrument, Span};

use super::local::LocalConn;
use super::Shard;
use crate::core::{Call, CallKind, CloseReason, Outcome};
use crate::dispatch;
use crate::router::Connection;
use crate::rt::exec::sleep;

/// Starts a handler and polls it once, right here: most handlers finish there (its
/// outcome, timed), and an RPC with decoded arguments (the common call) then needs no
/// box beyond the handler's own future. Synchronous, so nothing of the call is kept in
/// the connection's future (an idle connection's task does not grow by it). The poll
/// uses a waker that does nothing: a handler that must wait comes back as the future
/// to pass to [`wait`], which polls it again at once with the task's own waker — in
/// the same turn, so no wake-up is lost.
pub(super) fn start<'a>(
    shard: &'a Shard,
    conn: &LocalConn,
    handle: Connection,
    call: Call<'_>,
    read_at: Instant,
) -> Result<Outcome, Running<'a>> {
    let mut cx = Context::from_waker(Waker::noop());
    first_poll(shard, conn, handle, call, read_at, &mut cx)
}

/// Waits for a handler that did not finish on its first poll while watching its
/// connection: a close request abandons it — at once when the peer is cut off, after
/// the drain timeout when the close flushes (a kick, a stop: in-flight calls are still
/// answered) — and the socket is read on meanwhile (into the decoder, up to its
/// limit), so a peer that goes away is noticed and its handler dropped. A call that
/// never completes does not hold its connection past close. `None` when the handler
/// was abandoned.
pub(super) async fn wait(
    shard: &Rc<Shard>,
    conn: &Rc<LocalConn>,
    decoder: &mut FrameDecoder,
    run: Running<'_>,
) -> Option<Outcome> {
    // Boxed: the watch exists only while a handler is pending, so an idle
    // connection's task reserves no room for it.
    conn.unheld(Box::pin(watch(shard, conn, decoder, run)))
        .await
}

/// A pending handler's future, with its timing (and span) around it.
pub(super) type Running<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + 'a>>;

/// Starts `call` and polls it once: its outcome (timed) when it finished, else the
/// future to wait for.
fn first_poll<'a>(
    shard: &'a Shard,
    conn: &LocalConn,
    handle: Connection,
    call: Call<'_>,
    read_at: Instant,
    cx: &mut Context<'_>,
) -> Result<Outcome, Running<'a>> {
    let span = rpc_span(conn, &call);
    let slot = (call.kind == CallKind::Rpc).then_some(call.slot);
    let entered = span.enter();
    let id = handle.id();
    let started = match dispatch::start_rpc(&shard.registry, handle, call) {
        Ok(started) => started,
        Err((handle, call)) => {
            // Messages, in-place methods called with decoded arguments and unknown
            // methods: the general path, boxed whole, without borrows of the receive
            // buffer (the connection reads on while it waits).
            drop(entered);
            let call = match call.into_owned() {
                Ok(call) => call,
                // Arguments in the buffer reach only the handlers that take them.
                Err(call) => {
                    return Ok(dispatch::rpc_outcome(
                        Err(crate::call::undecoded()),
                        &call.route,
                    ))
                }
            };
            let mut run = boxed_run(shard, handle, call, read_at, span);
            return match run.as_mut().poll(cx) {
                Poll::Ready(done) => Ok(done),
                Poll::Pending => Err(run),
            };
        }
    };
    let (mut future, name) = match started {
        Ok(s) => (s.future, s.name),
        Err(done) => {
            if let Some(slot) = slot {
                timed(shard, slot, read_at, &done);
            }
            return Ok(done);
        }
    };
    let polled = std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx)));
    let done = match polled {
        Ok(Poll::Pending) => {
            drop(entered);
            let rest = async move {
                // Awaited inside the catch, so its drop is caught too.
                #[allow(
                    clippy::redundant_async_block,
                    reason = "the block drops the future inside the poll the catch wraps"
                )]
                let run = AssertUnwindSafe(async move { future.await });
                let done = match run.catch_unwind().await {
                    Ok(result) => dispatch::rpc_outcome(result, name),
                    Err(_) => dispatch::rpc_panicked(id, name),
                };
                if let Some(slot) = slot {
                    timed(shard, slot, read_at, &done);
                }
                done
            };
            return Err(if span.is_disabled() {
                Box::pin(rest)
            } else {
                Box::pin(rest.instrument(span))
            });
        }
        polled => {
            // Dropped inside a catch as well: a future whose drop panics is answered
            // like one whose poll did.
            let dropped = std::panic::catch_unwind(AssertUnwindSafe(move || drop(future)));
            match (polled, dropped) {
                (Ok(Poll::Ready(result)), Ok(())) => dispatch::rpc_outcome(result, name),
                _ => dispatch::rpc_panicked(id, name),
            }
        }
    };
    drop(entered);
    if let Some(slot) = slot {
        timed(shard, slot, read_at, &done);
    }
    Ok(done)
}

/// The general path: the handler's future for `call` (a message, or an in-place method
/// called with decoded arguments), boxed whole, inside `span` when that is enabled.
/// Not async, so the span never takes room in a connection's future.
///
/// An RPC's latency, from `read_at` to its result, is recorded when the handler
/// finishes (not when abandoned) — in the box, so the connection's own future keeps no
/// room for it.
fn boxed_run<'a>(
    shard: &'a Shard,
    handle: Connection,
    call: Call<'static>,
    read_at: Instant,
    span: Span,
) -> Running<'a> {
    let slot = (call.kind == CallKind::Rpc).then_some(call.slot);
    let run = async move {
        let outcome = dispatch::run(&shard.registry, &handle, call).await;
        if let Some(slot) = slot {
            timed(shard, slot, read_at, &outcome);
        }
        outcome
    };
    if span.is_disabled() {
        Box::pin(run)
    } else {
        Box::pin(run.instrument(span))
    }
}

/// Records an RPC's result and its time since `read_at` (one clock read per call: the
/// price of a latency histogram).
pub(super) fn timed(shard: &Shard, slot: u32, read_at: Instant, outcome: &Outcome) {
    let ns = read_at.elapsed().as_nanos() as u64;
    let ok = matches!(outcome, Outcome::Rpc(Ok(_)));
    shard.metrics.method(slot).record(ns, ok);
}

/// An RPC's span (target `conduit::rpc`: method, correlation id); disabled — and
/// free: its fields are only read when it is enabled — for messages, and unless
/// `conduit::rpc` is enabled at `info`.
pub(super) fn rpc_span(conn: &LocalConn, call: &Call<'_>) -> Span {
    if call.kind != CallKind::Rpc {
        return Span::none();
    }
    tracing::info_span!(
        target: "conduit::rpc",
        "rpc",
        method = %call.route,
        correlation_id = conn.core.borrow().correlation_of(call.id).unwrap_or(0),
    )
}

/// Waits for a pending handler while watching its connection (see [`wait`]).
async fn watch(
    shard: &Rc<Shard>,
    conn: &Rc<LocalConn>,
    decoder: &mut FrameDecoder,
    mut run: Running<'_>,
) -> Option<Outcome> {
    let closed = async {
        conn.close_requested.wait().await;
        None
    };
    let peer_gone = async {
        let reason = loop {
            let spare = decoder.spare();
            if spare.is_empty() {
                // A full buffer waits for the handler: the peer is throttled.
                std::future::pending::<()>().await;
            }
            match conn.read(spare).await {
                Ok(0) => break CloseReason::PeerClosed,
                Ok(n) => {
                    if let Err(reason) = conn.took(shard, decoder, n) {
                        break reason;
                    }
                }
                Err(e) => break CloseReason::Io(e.kind()),
            }
        };
        conn.request_close(reason);
        None
    };
    let step = async { Some((&mut run).await) }
        .or(closed)
        .or(peer_gone)
        .await;
    if step.is_some() {
        return step;
    }
    if !conn.close.get()?.flushes() {
        return None;
    }
    let grace = async {
        sleep(shard.router.descriptor().drain_timeout).await;
        None
    };
    async { Some((&mut run).await) }.or(grace).await
}
