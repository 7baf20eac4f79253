//! Runs the handler a connection core asked for and turns what it returns into the
//! core's [`Outcome`]. Runtime-neutral: both backends call it. Panics, in the handler's
//! body or while it builds its future, are contained — here, or for an RPC the glue
//! polls itself ([`start_rpc`]) in the glue, with [`rpc_panicked`]: they answer the
//! caller (code 1001) and never take the shard down.

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;

use conduit_protocol::Value;
use futures_lite::FutureExt;

use crate::args::Params;
use crate::call::undecoded;
use crate::core::{Args, Call, CallKind, Failure, Outcome};
use crate::handlers::{RawArgs, Registry, RpcCall, RpcError};
use crate::router::Connection;

/// Runs a call whose arguments are read in place (`RpcMethod::archived`, as an RPC
/// method or through `on_message`): such handlers are synchronous, so this borrows
/// the receive buffer only while it runs.
pub(crate) fn run_in_place(registry: &Registry, conn: &Connection, call: Call<'_>) -> Outcome {
    if call.kind == CallKind::Message {
        return run_message_in_place(registry, conn, call);
    }
    let method = call.route;
    let result = match (registry.rpc_at(call.slot, method.as_ref()), call.args) {
        (Some(entry), Args::Native(bytes)) => match &entry.archived {
            Some(archived) => {
                let rpc = RpcCall {
                    connection: conn.clone(),
                    method: method.to_string(),
                    params: Value::Nil,
                };
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    archived(&rpc, RawArgs::Native(bytes))
                }))
                .unwrap_or_else(|_| Err(panicked(conn, &method)))
            }
            None => Err(undecoded()),
        },
        _ => Err(undecoded()),
    };
    Outcome::Rpc(result.map_err(|e| failure(e, &method)))
}

/// A message whose native data its handler reads in place; its error goes back as
/// `<name>_error`, queued now, before anything the connection sends later.
fn run_message_in_place(registry: &Registry, conn: &Connection, call: Call<'_>) -> Outcome {
    let name = call.route;
    let (Some(archived), Args::Native(bytes)) =
        (registry.archived_messages.get(name.as_ref()), call.args)
    else {
        return Outcome::Message(None);
    };
    let rpc = RpcCall {
        connection: conn.clone(),
        method: name.to_string(),
        params: Value::Nil,
    };
    let result =
        std::panic::catch_unwind(AssertUnwindSafe(|| archived(&rpc, RawArgs::Native(bytes))))
            .unwrap_or_else(|_| Err(panicked(conn, &name)));
    match result {
        Ok(Value::Nil) => Outcome::Message(None),
        Ok(v) => Outcome::Message(Some(v)),
        Err(e) => {
            let data = crate::handlers::message_error_value(&e, &name);
            if let Err(err) = conn
                .router
                .send_here(conn.id(), &format!("{name}_error"), &data)
            {
                tracing::debug!(conn = %conn.id(), "{name}_error not sent: {err}");
            }
            Outcome::Message(None)
        }
    }
}

fn failure(e: RpcError, method: &str) -> Failure {
    Failure {
        code: e.code,
        message: e.wire_message(method),
        details: e.details,
    }
}

fn panicked(conn: &Connection, method: &str) -> RpcError {
    tracing::error!(conn = %conn.id(), method, "RPC handler panicked");
    RpcError::failed("internal error (handler panicked)")
}

/// An RPC whose handler takes decoded or typed arguments, started: its own future (boxed by
/// the registration, so it moves freely) and the method's name for its error text.
pub(crate) struct StartedRpc<'r> {
    /// The handler's future.
    pub future: crate::handlers::LocalBoxFuture<Result<Value, RpcError>>,
    /// The registered name (errors name the method).
    pub name: &'r str,
}

/// Starts `call` when it is an RPC to a handler that takes typed or decoded arguments
/// (the common case) without running it: the glue polls the future itself and boxes
/// nothing more when it finishes on its first poll. Any other call comes back as it
/// went in, for [`run`]; a handler that panics while building its future is answered.
pub(crate) fn start_rpc<'r, 'c>(
    registry: &'r Registry,
    conn: Connection,
    call: Call<'c>,
) -> Result<Result<StartedRpc<'r>, Outcome>, (Connection, Call<'c>)> {
    let entry = match registry.rpc_at(call.slot, call.route.as_ref()) {
        Some(entry) if call.kind == CallKind::Rpc && entry.archived.is_none() => entry,
        _ => return Err((conn, call)),
    };
    let name = entry.info.name.as_str();
    let id = conn.id();
    if let Some(typed) = &entry.typed {
        let params = match &call.args {
            Args::Tree(tree) => Params::in_place(conn, name, tree),
            Args::Value(v) => Params::decoded(conn, name, v),
            Args::Native(_) => return Ok(Err(rpc_outcome(Err(undecoded()), name))),
        };
        // The arguments are taken here, while `call` still lends them; the body's
        // future owns what it took.
        return Ok(
            match std::panic::catch_unwind(AssertUnwindSafe(|| typed(params))) {
                Ok(Ok(future)) => Ok(StartedRpc { future, name }),
                Ok(Err(e)) => Err(rpc_outcome(Err(e), name)),
                Err(_) => Err(rpc_panicked(id, name)),
            },
        );
    }
    let Args::Value(params) = call.args else {
        return Ok(Err(rpc_outcome(Err(undecoded()), name)));
    };
    let rpc = RpcCall {
        // The handle the glue made for this call: moved, not cloned again.
        connection: conn,
        method: call.route.into_owned(),
        params,
    };
    match std::panic::catch_unwind(AssertUnwindSafe(|| (entry.call)(rpc))) {
        Ok(future) => Ok(Ok(StartedRpc { future, name })),
        Err(_) => Ok(Err(rpc_panicked(id, name))),
    }
}

/// The outcome of a started RPC's result.
pub(crate) fn rpc_outcome(result: Result<Value, RpcError>, name: &str) -> Outcome {
    Outcome::Rpc(result.map_err(|e| failure(e, name)))
}

/// The outcome of a started RPC (of connection `id`) whose handler panicked.
pub(crate) fn rpc_panicked(id: crate::id::ConnectionId, name: &str) -> Outcome {
    tracing::error!(conn = %id, method = name, "RPC handler panicked");
    Outcome::Rpc(Err(failure(
        RpcError::failed("internal error (handler panicked)"),
        name,
    )))
}

/// Runs `call` for `conn` and returns its outcome.
pub(crate) async fn run(registry: &Registry, conn: &Connection, call: Call<'_>) -> Outcome {
    match call.kind {
        CallKind::Message => {
            Outcome::Message(run_message(registry, conn, &call.route, call.args).await)
        }
        CallKind::Rpc => match start_rpc(registry, conn.clone(), call) {
            Ok(Ok(started)) => {
                let id = conn.id();
                let future = started.future;
                // Awaited inside the catch, so its drop is caught too.
                #[allow(
                    clippy::redundant_async_block,
                    reason = "the block drops the future inside the poll the catch wraps"
                )]
                let run = AssertUnwindSafe(async move { future.await });
                match run.catch_unwind().await {
                    Ok(result) => rpc_outcome(result, started.name),
                    Err(_) => rpc_panicked(id, started.name),
                }
            }
            Ok(Err(done)) => done,
            Err((_, call)) => Outcome::Rpc(run_rpc(registry, conn, call.route, call.args).await),
        },
    }
}

/// Runs every handler of a message type in registration order; the last one's return
/// value is the reply.
async fn run_message(
    registry: &Registry,
    conn: &Connection,
    name: &str,
    args: Args<'_>,
) -> Option<Value> {
    let handlers = registry.messages.get(name)?;
    let data = match args {
        Args::Value(v) => v,
        // The core decodes message payloads before routing them.
        Args::Native(_) | Args::Tree(_) => return None,
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
        match contained(|| h(conn.clone(), arg)).await {
            Ok(r) => reply = r,
            Err(_) => {
                tracing::error!(conn = %conn.id(), name, "message handler panicked");
                reply = None;
            }
        }
    }
    reply
}

/// An RPC that [`start_rpc`] does not start: an in-place method (with native or
/// decoded arguments) or an unknown one.
async fn run_rpc(
    registry: &Registry,
    conn: &Connection,
    method: Cow<'_, str>,
    args: Args<'_>,
) -> Result<Value, Failure> {
    let Some(entry) = registry.rpcs.get(method.as_ref()) else {
        // The core routes only registered methods; the table and the registry are
        // built from the same registration.
        return Err(failure(
            RpcError::new(
                conduit_protocol::v1::codes::METHOD_NOT_FOUND,
                format!("RPC method not found: {method}"),
            ),
            &method,
        ));
    };
    // The registry's copy of the name serves the error text, so the call's own name
    // moves into the handler's `RpcCall` without another copy.
    let name = entry.info.name.as_str();
    let result = match (&entry.archived, args) {
        (Some(archived), args) => {
            let call = RpcCall {
                connection: conn.clone(),
                method: method.into_owned(),
                params: Value::Nil,
            };
            match args {
                Args::Native(bytes) => Some(RawArgs::Native(bytes)),
                Args::Value(v) => Some(RawArgs::Value(v)),
                // Trees go to typed methods only.
                Args::Tree(_) => None,
            }
            .map_or_else(
                || Err(undecoded()),
                |raw| {
                    std::panic::catch_unwind(AssertUnwindSafe(|| archived(&call, raw)))
                        .unwrap_or_else(|_| Err(panicked(conn, name)))
                },
            )
        }
        // Methods that take typed or decoded arguments go through `start_rpc`.
        (None, _) => Err(undecoded()),
    };
    result.map_err(|e| failure(e, name))
}

/// Runs a user callback and the future it returns with panics caught: one that panics
/// while building its future (before its first `.await`) is contained as well as one
/// that panics while it runs. An uncaught panic would end the shard's executor.
pub(crate) async fn contained<F: std::future::Future>(
    make: impl FnOnce() -> F,
) -> std::thread::Result<F::Output> {
    AssertUnwindSafe(async move { make().await })
        .catch_unwind()
        .await
}
