//! # conduit
//!
//! A thread-per-core server engine speaking netconduit's protocol: password auth,
//! heartbeat, RPC, named message handlers, broadcast and lifecycle hooks. Each shard is
//! a pinned executor thread — glommio (io_uring) or tokio (epoll), see [`Runtime`] —
//! that accepts on the server's listening socket and owns its connections; a
//! broadcast is encoded once and the same bytes are queued to every receiver, across
//! shards over a bounded bus.
//!
//! Start with [`Server`] and [`ServerDescriptor`]. Handlers are registered once and
//! run on every shard; the futures they return stay on the connection's shard and need
//! not be `Send`.
//!
//! ```no_run
//! use conduit::{rpc, Server, ServerDescriptor, Value};
//!
//! /// Adds two numbers.
//! #[rpc]
//! async fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! let server = Server::new(ServerDescriptor::new("secret").port(8080))?;
//! server.rpc(add);
//! server.on("chat", |client, data: Value| async move {
//!     let n = client.server().broadcast("chat", data).exclude([client.id()]).await;
//!     Value::map().with("delivered", n) // sent back as chat_response
//! });
//! server.run()?; // until SIGINT / SIGTERM or `stop()`
//! # Ok::<(), conduit::Error>(())
//! ```
//!
//! ## The hot path
//!
//! One RPC, socket to socket, each step in its own file:
//!
//! 1. `shard/accept.rs` — the shard accepts the socket and takes a
//!    `max_connections` permit;
//! 2. `shard/conn.rs` — the read loop moves bytes into the connection's decoder;
//! 3. `core/mod.rs` — `ConnCore::poll_event` decodes the frame and decides: login,
//!    ping, `listall`, unknown method, or a handler call to run;
//! 4. `dispatch.rs` — runs the registered handler (panics contained) and turns its
//!    result into an outcome;
//! 5. `core/mod.rs` — `ConnCore::complete` encodes the reply in the peer's codec and
//!    queues it on the connection's outbound queue (`core/outbound.rs`, where the
//!    slow-consumer policy applies);
//! 6. `rt/writer.rs` — the writer gathers everything queued into one write
//!    (`rt/net.rs`).
//!
//! A broadcast starts in a handler at `router/broadcast.rs`, is encoded once per codec
//! (`router/bus.rs`), fans out on the local shard and crosses to the others over their
//! bus (`router/mod.rs` → `shard/mod.rs`), then meets steps 5–6 for every
//! receiver.

// What `#[rpc]` expands to; not an API of its own.
#[doc(hidden)]
pub mod args;
mod call;
pub mod client;
pub mod cluster;
#[cfg(feature = "config")]
pub mod config;
mod convert;
mod core;
pub mod descriptor;
mod dispatch;
mod error;
pub mod handlers;
mod host;
mod id;
pub mod metrics;
#[cfg(feature = "glommio")]
mod preflight;
mod router;
pub mod rt;
mod server;
mod shard;
mod throttle;
pub mod tls;
pub mod tokens;
pub mod ws;

pub use client::{Client, ClientDescriptor, ClientError, ClientEvent, DisconnectReason};
pub use conduit_macros::rpc;
pub use conduit_protocol as protocol;
pub use conduit_protocol::{Codec, Value};
pub use core::{CloseReason, PeerMisbehaved};
pub use descriptor::{
    Password, RateLimitPolicy, ServerDescriptor, SlowConsumerPolicy, DEFAULT_METRICS_ADDR,
};
pub use error::{Error, Result};
pub use handlers::{
    IntoReply, IntoRpcMethod, ParamInfo, Reply, RpcCall, RpcError, RpcInfo, RpcMethod,
};
pub use id::{ConnectionId, ParseIdError};
/// An IP network (`10.0.0.0/8`, `2001:db8::/32`), as in
/// [`ServerDescriptor::trusted_proxies`]; re-exported from the `ipnet` crate.
pub use ipnet::IpNet;
pub use router::{Broadcast, Connection, Room, RoomError, Router, State};
pub use rt::Runtime;
pub use server::{Running, Server};

/// Drives a future to completion on the calling (non-shard) thread: for calling
/// `broadcast`, `send_message` and friends from plain threads. Takes anything
/// awaitable, so a [`Broadcast`] needs no `.into_future()`:
/// `conduit::block_on(server.broadcast("news", data).exclude([id]))`.
pub fn block_on<F: std::future::IntoFuture>(fut: F) -> F::Output {
    futures_lite::future::block_on(fut.into_future())
}

/// Internals exposed for the in-process benchmarks only; not an API.
#[doc(hidden)]
pub mod __bench {
    pub use crate::core::outbound::{Outbound, Push};
}

/// The runtime-neutral primitives the engine is written in (threads, tasks, timers,
/// sockets on either backend), for the load generator; not an API.
#[doc(hidden)]
pub mod __rt {
    pub use crate::rt::exec::{current, sleep, spawn, spawn_task, yield_now, Task, Timer};
    pub use crate::rt::net::SharedStream;
    pub use crate::rt::{choose, Backend, RtThread, Runtime, ThreadSpec};
}

/// The connection core's fuzz driver (the cargo-fuzz target and its `cargo test`
/// replay); not an API.
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::core::fuzz::core;
}
