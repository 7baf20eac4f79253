//! What a running server counts, and how it is read.
//!
//! Each shard counts into its own block of counters (one writer, no shared atomic per
//! message: see `tally.rs`); nothing is aggregated until someone asks. Three readers:
//! [`Router::stats`](crate::Router::stats) returns a [`Stats`] snapshot;
//! [`Stats::publish`] writes the same figures into the `metrics` facade's recorder
//! (for an application's own exporter); and with the `prometheus` feature the server
//! serves them at `GET /metrics` on
//! [`ServerDescriptor::metrics_addr`](crate::ServerDescriptor::metrics_addr), reading
//! the shards' counters at scrape time on the service thread.

mod publish;
mod shard;
mod snapshot;
mod tally;
#[cfg(feature = "prometheus")]
pub(crate) mod text;

use std::sync::Arc;

pub use publish::describe;
pub use shard::LATENCY_BOUNDS_NS;
pub(crate) use shard::{codec_slot, ShardMetrics};
pub use snapshot::{CloseCounts, LatencyHistogram, MethodStats, ShardStats, Stats};

/// Why a connection closed, as counted (`conduit_closes_total{reason}`). `CloseReason::kind` maps each
/// reason to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseKind {
    /// The peer closed its side or said goodbye.
    Peer,
    /// A wrong password, proof or token.
    AuthFailed,
    /// No login within `auth_timeout`.
    AuthTimeout,
    /// The peer broke the protocol.
    ProtocolError,
    /// Past the inbound rate limits with the close policy.
    RateLimited,
    /// Silent past `heartbeat_timeout`.
    HeartbeatTimeout,
    /// Its outbound queue passed `max_outbound_bytes` (policy: disconnect).
    SlowConsumer,
    /// Kicked by the application.
    Kicked,
    /// The server stopped.
    ServerStopping,
    /// Told "server full" or "busy" after accept.
    Refused,
    /// Its token expired.
    TokenExpired,
    /// A socket error.
    IoError,
}

/// Number of [`CloseKind`]s.
pub(crate) const CLOSE_KINDS: usize = 12;

impl CloseKind {
    /// Every kind, in label order.
    pub const ALL: [CloseKind; CLOSE_KINDS] = [
        CloseKind::Peer,
        CloseKind::AuthFailed,
        CloseKind::AuthTimeout,
        CloseKind::ProtocolError,
        CloseKind::RateLimited,
        CloseKind::HeartbeatTimeout,
        CloseKind::SlowConsumer,
        CloseKind::Kicked,
        CloseKind::ServerStopping,
        CloseKind::Refused,
        CloseKind::TokenExpired,
        CloseKind::IoError,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            CloseKind::Peer => "peer",
            CloseKind::AuthFailed => "auth_failed",
            CloseKind::AuthTimeout => "auth_timeout",
            CloseKind::ProtocolError => "protocol_error",
            CloseKind::RateLimited => "rate_limited",
            CloseKind::HeartbeatTimeout => "heartbeat_timeout",
            CloseKind::SlowConsumer => "slow_consumer",
            CloseKind::Kicked => "kicked",
            CloseKind::ServerStopping => "server_stopping",
            CloseKind::Refused => "refused",
            CloseKind::TokenExpired => "token_expired",
            CloseKind::IoError => "io_error",
        }
    }
}

/// Why a login failed, as counted (`conduit_auth_failures_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthFailureKind {
    /// A wrong password, proof or token.
    BadCredentials,
    /// No login within `auth_timeout`.
    Timeout,
    /// A frame that broke the protocol before login.
    ProtocolError,
}

/// Number of [`AuthFailureKind`]s.
pub(crate) const AUTH_FAILURE_KINDS: usize = 3;

impl AuthFailureKind {
    /// Every kind, in label order.
    pub const ALL: [AuthFailureKind; AUTH_FAILURE_KINDS] = [
        AuthFailureKind::BadCredentials,
        AuthFailureKind::Timeout,
        AuthFailureKind::ProtocolError,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            AuthFailureKind::BadCredentials => "bad_credentials",
            AuthFailureKind::Timeout => "timeout",
            AuthFailureKind::ProtocolError => "protocol_error",
        }
    }
}

/// Why an accepted connection was refused before it was served, as counted
/// (`conduit_refused_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalKind {
    /// `max_connections` reached.
    Full,
    /// `max_pending` connections were logging in.
    TooManyPending,
    /// `max_pending_per_source` connections from its source were logging in.
    TooManyFromSource,
    /// Its source was backing off after failed logins.
    TooManyFailures,
    /// The process had no file descriptor left.
    OutOfDescriptors,
    /// `max_refusals_in_flight` refusals were being told already: closed untold.
    Overloaded,
    /// A trusted proxy's PROXY header was missing, malformed, oversized or late.
    ProxyHeader,
}

/// Number of [`RefusalKind`]s.
pub(crate) const REFUSAL_KINDS: usize = 7;

impl RefusalKind {
    /// Every kind, in label order.
    pub const ALL: [RefusalKind; REFUSAL_KINDS] = [
        RefusalKind::Full,
        RefusalKind::TooManyPending,
        RefusalKind::TooManyFromSource,
        RefusalKind::TooManyFailures,
        RefusalKind::OutOfDescriptors,
        RefusalKind::Overloaded,
        RefusalKind::ProxyHeader,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            RefusalKind::Full => "full",
            RefusalKind::TooManyPending => "too_many_pending",
            RefusalKind::TooManyFromSource => "too_many_from_source",
            RefusalKind::TooManyFailures => "too_many_failures",
            RefusalKind::OutOfDescriptors => "out_of_descriptors",
            RefusalKind::Overloaded => "overloaded",
            RefusalKind::ProxyHeader => "proxy_header",
        }
    }
}

/// The counters of one server: one block per shard, and the names of the RPC methods
/// their slots count. Kept across runs of the same server, so counters only grow.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Registered RPC method names, in registration order (slot order).
    pub methods: Vec<String>,
    /// One block per shard.
    pub shards: Vec<Arc<ShardMetrics>>,
}

impl Metrics {
    /// Counters for `shards` shards of a server whose RPC methods are `methods`.
    pub fn new(shards: usize, methods: Vec<String>) -> Metrics {
        let n = methods.len();
        Metrics {
            methods,
            shards: (0..shards)
                .map(|_| Arc::new(ShardMetrics::new(n)))
                .collect(),
        }
    }

    /// Whether these counters fit a run with `shards` shards and these methods.
    pub fn fits(&self, shards: usize, methods: &[String]) -> bool {
        self.shards.len() == shards && self.methods == methods
    }
}
