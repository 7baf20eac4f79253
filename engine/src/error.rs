//! The engine's one error type.

use conduit_protocol::WireError;

/// Everything that can go wrong in a call to the engine: the caller's misuse (`Config`,
/// `NotRunning`, `AlreadyRunning`, `Encode`), the environment (`Runtime`, `Io`) and the
/// state of a connection (`Closed`, `QueueFull`). A peer's misbehaviour is never an
/// error of the caller's: it closes that peer's connection with a
/// [`CloseReason::Misbehaved`](crate::CloseReason).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A descriptor field is invalid.
    #[error("invalid server setting `{field}`: {problem}")]
    Config {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The machine cannot run the engine (io_uring missing, locked-memory limit too
    /// low, …). The message says what to raise and how.
    #[error("cannot start the engine: {0}")]
    Runtime(String),
    /// An operating-system I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A message no peer could receive (a name longer than the wire carries).
    #[error("cannot encode the message: {0}")]
    Encode(#[from] WireError),
    /// The server is not running (or already stopping).
    #[error("server is not running")]
    NotRunning,
    /// `run` was called on a server that is already running.
    #[error("server is already running")]
    AlreadyRunning,
    /// The connection is gone.
    #[error("connection closed")]
    Closed,
    /// A connection's outbound queue is full.
    #[error("outbound queue full ({0} bytes queued)")]
    QueueFull(usize),
    /// Message data that cannot become a [`Value`](crate::Value) (its `Serialize`
    /// failed: a map with non-string keys, say).
    #[error("cannot convert the message data: {0}")]
    Data(String),
    /// A room operation was refused (a name or a limit).
    #[error(transparent)]
    Room(#[from] RoomError),
    /// The cluster adapter refused or failed (see [`ClusterError`]).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Why a room operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// The name is empty, longer than `max_room_name_bytes`, or has a control
    /// character.
    #[error("invalid room name: {0}")]
    InvalidName(&'static str),
    /// The connection is already in `max_rooms_per_connection` rooms.
    #[error("the connection is already in {0} rooms (max_rooms_per_connection)")]
    TooManyForConnection(usize),
    /// `max_rooms` rooms exist: a new room cannot be made (existing rooms still take
    /// members).
    #[error("{0} rooms exist (max_rooms); no new room can be made")]
    TooManyRooms(usize),
}

/// Why the cluster adapter could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The broker could not be reached at start (with `Unreachable::Fail`).
    #[error("cannot reach the {broker} broker at {address}: {reason}")]
    Unreachable {
        /// `redis` or `nats`.
        broker: &'static str,
        /// Where it was looked for (without credentials).
        address: String,
        /// What failed.
        reason: String,
    },
    /// Another running node of the same cluster has this node's id.
    #[error("node id {node} is already used by a running node of cluster {cluster:?}; give every node its own id")]
    NodeIdInUse {
        /// The contested id.
        node: usize,
        /// The cluster's channel prefix.
        cluster: String,
    },
    /// The message is larger than the broker takes; nobody received it.
    #[error("message of {bytes} bytes is larger than the broker's limit of {limit} bytes; nobody received it")]
    PayloadTooLarge {
        /// Its encoded size.
        bytes: usize,
        /// The limit (`max_payload_bytes`, or the broker's own when smaller).
        limit: usize,
    },
    /// The broker connection is down; a send or kick for another node's connection
    /// was not delivered (counted in `not_delivered`).
    #[error("the broker is not connected; the message for node {node} was not delivered")]
    NotConnected {
        /// The node it was for.
        node: usize,
    },
    /// More messages wait for the broker than `max_outbox_messages`; this one was not
    /// delivered.
    #[error("{0} messages are waiting for the broker (max_outbox_messages); not delivered")]
    Backlogged(usize),
    /// The id names a node, but this server is not part of a cluster.
    #[error("connection id of node {0}, but this server has no cluster")]
    NoCluster(usize),
    /// The service thread that runs the broker client could not take the request.
    #[error("cluster request failed: {0}")]
    Service(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
