//! # conduit
//!
//! A thread-per-core server engine speaking netconduit's protocol: password auth,
//! heartbeat, RPC, named message handlers, broadcast and lifecycle hooks. Each shard is
//! a pinned glommio executor that accepts on the shared port (SO_REUSEPORT) and owns
//! its connections; a broadcast is encoded once and the same bytes are queued to every
//! receiver, across shards over a bounded bus.
//!
//! Start with [`Server`] and [`ServerDescriptor`]. Handlers are registered once and
//! run on every shard; the futures they return stay on the connection's shard and need
//! not be `Send`.
//!
//! Module map (the hot path is `shard` → `core` → `outbound` → `io`):
//! * [`descriptor`] — every setting and limit, with netconduit's defaults.
//! * `core` — the sans-I/O connection state machine (auth, heartbeat, frame meaning).
//! * `shard` — the executor glue: accept, read loop, dispatch, writer, heartbeat tick.
//! * `bus` — cross-shard broadcast, direct send and kick.
//! * [`handlers`] — registration types: RPC info and errors, reply conversion.

pub mod args;
pub mod bus;
pub mod client;
mod connection;
pub mod core;
pub mod descriptor;
mod error;
pub mod handlers;
mod id;
mod io;
pub mod outbound;
mod preflight;
mod server;
mod shard;

pub use client::{Client, ClientDescriptor, ClientError, ClientEvent, DisconnectReason};
pub use conduit_macros::rpc;
pub use conduit_protocol as protocol;
pub use conduit_protocol::{Codec, Value};
pub use connection::Connection;
pub use descriptor::{ServerDescriptor, SlowConsumerPolicy};
pub use error::{Error, Result};
pub use handlers::{
    IntoReply, IntoRpcMethod, ParamInfo, RpcCall, RpcError, RpcInfo, RpcMethod, State,
};
pub use id::{ConnectionId, ParseIdError};
pub use server::{Broadcast, Running, Server};

/// Runtime helpers for application tasks that live on a shard (timers, background
/// work), so applications need not depend on glommio directly.
pub mod rt {
    /// Waits for `d` on the current shard.
    pub async fn sleep(d: std::time::Duration) {
        glommio::timer::sleep(d).await;
    }

    /// Runs `fut` in the background on the current shard. Must be called from a
    /// handler or hook (on a shard thread).
    pub fn spawn(fut: impl std::future::Future<Output = ()> + 'static) {
        crate::shard::spawn_detached(fut);
    }
}

/// Drives a future to completion on the calling (non-shard) thread: for calling
/// `broadcast`, `send_message` and friends from plain threads. Takes anything
/// awaitable, so a [`Broadcast`] needs no `.into_future()`:
/// `conduit::block_on(server.broadcast("news", data).exclude([id]))`.
pub fn block_on<F: std::future::IntoFuture>(fut: F) -> F::Output {
    futures_lite::future::block_on(fut.into_future())
}
