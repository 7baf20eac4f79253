//! # conduit-loadgen
//!
//! Load generator and benchmark suite for conduit and any netconduit-v1 server.
//! Scenarios run over real sockets on 127.0.0.1 only, each bounded in count and
//! time; a lean raw-protocol client ([`wire`], sending [`payload`]s) drives thousands of connections from
//! one executor pinned to its own core (glommio where io_uring works, else tokio: the
//! engine's own choice), and the server's CPU time and memory are read from
//! `/proc/<pid>` ([`procfs`]).
//!
//! * [`cli`] — the `conduit-loadgen` command line (clap).
//! * [`scenario`] — `connect`, `heartbeat`, `broadcast` (single / rate / saturate)
//!   and `rpc`.
//! * [`target`] — the server under test: our `serve` child process, the Python
//!   netconduit reference server (in a venv it creates), or any running server.
//! * [`serve`] — the benchmark server (`conduit-loadgen serve`).
//! * [`suite`] — every scenario against every target (our server on one runtime or
//!   both), interleaved rounds, medians.
//! * [`scale`] — the suite's runs at 10,000 connections (`suite --scale`): idle
//!   memory, heartbeat cost, and CPU per delivery from 100 to 10,000 receivers.
//! * [`sources`] — connections spread over several loopback source addresses
//!   (`--sources`), and the server's word on where they came from.
//! * [`fdlimit`] — the open-files limit a run of thousands of connections needs.
//! * [`cluster`] — two nodes of a cluster through Redis or NATS (started here): local
//!   vs cross-node delivery latency and CPU per delivery, against one node alone.
//! * [`attack`] — one address attacks the login (silent sockets, or password guesses)
//!   while real clients log in from other 127.0.0.x addresses.
//! * [`redis`] — Redis 7 as a comparison peer (`suite --compare redis`): the
//!   `redis-server` child, the RESP client, the side-by-side report.
//! * [`soak`] — connections churning through an in-process server; RSS, descriptors
//!   and `connection_count` must come back.
//! * [`ws`] — the client side of the WebSocket transport (`--transport websocket`):
//!   the upgrade and the framing, with no I/O.
//! * [`report`] — the human table and the JSON.
//! * [`chart`] — the suite's results as an SVG chart (`suite`, `chart --from`).
//! * [`progress`] — the live progress bars on stderr.
//! * [`goals`] — the performance targets, checked against the suite's medians.
//! * [`stats`] — histograms, loss accounting, the coordinated-omission-aware
//!   schedule.

pub mod args;
pub mod attack;
pub mod chart;
pub mod cli;
pub mod cluster;
pub mod fdlimit;
pub mod goals;
pub mod payload;
pub mod plan;
pub mod procfs;
pub mod progress;
pub mod redis;
pub mod report;
pub mod scale;
pub mod scenario;
pub mod scrape;
pub mod serve;
pub mod soak;
pub mod sources;
pub mod stats;
pub mod suite;
pub mod target;
pub mod versus_redis;
pub mod wire;
pub mod ws;

/// Everything that can go wrong in a load-generator run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket or file operation failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The server broke the protocol (or the client could not read it).
    #[error("protocol: {0}")]
    Protocol(String),
    /// The server refused a login.
    #[error("refused: {0}")]
    Refused(String),
    /// A bad argument or combination of arguments.
    #[error("invalid arguments: {0}")]
    Args(String),
    /// Starting or talking to the server under test failed.
    #[error("server under test: {0}")]
    Target(String),
    /// A run hit its time bound before it could finish its essential part.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The load generator's executor could not start or died.
    #[error("executor: {0}")]
    Runtime(String),
}

impl From<conduit_protocol::WireError> for Error {
    fn from(e: conduit_protocol::WireError) -> Error {
        Error::Protocol(e.to_string())
    }
}

impl From<conduit_protocol::handshake::HandshakeError> for Error {
    fn from(e: conduit_protocol::handshake::HandshakeError) -> Error {
        match e {
            conduit_protocol::handshake::HandshakeError::Rejected(_) => {
                Error::Refused(e.to_string())
            }
            e => Error::Protocol(e.to_string()),
        }
    }
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
