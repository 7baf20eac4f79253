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

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
