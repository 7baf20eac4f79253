//! The client's error type, the reasons a connection ends, and lifecycle events.

use std::fmt;
use std::time::Duration;

use conduit_protocol::handshake::HandshakeError;
use conduit_protocol::{Value, WireError};

/// Everything a client operation can fail with.
///
/// `Rpc` is the server's answer (the call reached it and it said no); `Timeout`,
/// `Disconnected` and `Closed` say the answer never came and why; `Io`, `Wire` and
/// `AuthFailed` are about the connection itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// An operating-system I/O error (connect refused, reset, …).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent something the protocol does not allow, or a frame to send would
    /// break a wire limit.
    #[error("protocol error: {0}")]
    Wire(#[from] WireError),
    /// The server refused the login (the server's reason), or could not prove that it
    /// knows the password (native logins).
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// No answer within the timeout (`rpc_timeout`, or `connect_timeout` for a login).
    #[error("timed out")]
    Timeout,
    /// The server answered the call with an error.
    #[error("RPC error {code}: {message}")]
    Rpc {
        /// netconduit's error code (4000 unknown method, 2000 validation, 1001 a failure
        /// inside the handler, …).
        code: i64,
        /// The server's message.
        message: String,
        /// Structured details, when the server sent any.
        details: Option<Value>,
    },
    /// Not connected: the connection was lost before the answer came, or the client is
    /// between connections (reconnecting, or gave up).
    #[error("not connected")]
    Disconnected,
    /// The client was closed with [`close`](super::Client::close).
    #[error("client closed")]
    Closed,
    /// A [`ClientDescriptor`](super::ClientDescriptor) field is invalid.
    #[error("invalid client setting `{field}`: {problem}")]
    Config {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl ClientError {
    /// The RPC error code, if this is an error the server answered with.
    pub fn rpc_code(&self) -> Option<i64> {
        match self {
            ClientError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<HandshakeError> for ClientError {
    /// A login that did not complete: a refusal or a server that could not prove it
    /// knows the password is `AuthFailed`; a frame out of order or undecodable is a
    /// protocol error, as it was before the handshake moved to the protocol crate.
    fn from(e: HandshakeError) -> ClientError {
        match e {
            HandshakeError::Rejected(reason) => ClientError::AuthFailed(reason),
            HandshakeError::ServerProofInvalid => ClientError::AuthFailed(e.to_string()),
            HandshakeError::Unexpected(problem) => ClientError::Wire(WireError::Shape {
                kind: "login",
                problem,
            }),
            HandshakeError::Wire(w) => ClientError::Wire(w),
            // A failure this version does not know yet: the login did not happen.
            other => ClientError::AuthFailed(other.to_string()),
        }
    }
}

/// Why a connection ended.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// [`close`](super::Client::close) was called (or the last handle was dropped).
    ClosedByClient,
    /// The server closed the socket.
    ServerClosed,
    /// The server sent a CLOSE frame with this reason (native) before closing.
    ServerSaidGoodbye(String),
    /// The server was silent past `heartbeat_timeout`.
    HeartbeatTimeout(Duration),
    /// The server broke the protocol.
    Protocol(WireError),
    /// A socket error.
    Io(String),
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::ClosedByClient => f.write_str("closed by the client"),
            DisconnectReason::ServerClosed => f.write_str("the server closed the connection"),
            DisconnectReason::ServerSaidGoodbye(r) => write!(f, "the server closed: {r}"),
            DisconnectReason::HeartbeatTimeout(d) => {
                write!(f, "the server was silent for more than {d:?}")
            }
            DisconnectReason::Protocol(e) => write!(f, "protocol error: {e}"),
            DisconnectReason::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

/// A change in a client's connection.
///
/// Sequence: `Connected` once [`open`](super::Client::open) succeeds; on loss
/// `Disconnected(reason)`, then (with reconnection on) `Reconnecting(1)`,
/// `Reconnecting(2)`, … and finally `Reconnected`, or `GaveUp` when `max_attempts` ran
/// out.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The first connection (or one made by an explicit `open` after giving up) is
    /// logged in.
    Connected,
    /// The connection ended. Pending calls have failed with
    /// [`ClientError::Disconnected`] (or [`ClientError::Closed`]).
    Disconnected(DisconnectReason),
    /// Reconnection attempt `n` (1-based) starts now, after its backoff delay.
    Reconnecting(u32),
    /// A reconnection attempt logged in again; registered handlers still apply.
    Reconnected,
    /// Reconnection stopped after this many failed attempts (`max_attempts`).
    GaveUp(u32),
}

/// A subscription to a client's [`ClientEvent`]s, from
/// [`Client::events`](super::Client::events). Each subscription sees every event
/// after it was made, in order.
#[derive(Debug)]
pub struct Events {
    /// The client's end pushes every event into this subscription's channel.
    pub(crate) rx: flume::Receiver<ClientEvent>,
}

impl Events {
    /// The next event; `None` once the client is gone.
    pub async fn next(&self) -> Option<ClientEvent> {
        self.rx.recv_async().await.ok()
    }

    /// The next event, waiting at most `timeout`; `None` on timeout or once the client
    /// is gone. Must run on a client or shard thread (it uses its timer).
    pub async fn next_timeout(&self, timeout: Duration) -> Option<ClientEvent> {
        use futures_lite::FutureExt;
        let next = async { self.rx.recv_async().await.ok() };
        let late = async {
            crate::rt::exec::sleep(timeout).await;
            None
        };
        next.or(late).await
    }

    /// The next event if one is waiting.
    pub fn try_next(&self) -> Option<ClientEvent> {
        self.rx.try_recv().ok()
    }

    /// Blocks the calling (plain) thread for the next event, at most `timeout`; `None`
    /// on timeout or once the client is gone. Never call it on an executor thread: it
    /// would stall the client it waits for.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<ClientEvent> {
        self.rx.recv_timeout(timeout).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_errors_become_client_errors() {
        match ClientError::from(HandshakeError::Rejected("Invalid password".into())) {
            ClientError::AuthFailed(r) => assert_eq!(r, "Invalid password"),
            other => panic!("{other:?}"),
        }
        match ClientError::from(HandshakeError::ServerProofInvalid) {
            ClientError::AuthFailed(r) => {
                assert_eq!(r, "the server could not prove it knows the password")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ClientError::from(HandshakeError::Unexpected(
                "expected the server's challenge"
            )),
            ClientError::Wire(WireError::Shape {
                kind: "login",
                problem: "expected the server's challenge"
            })
        ));
        assert!(matches!(
            ClientError::from(HandshakeError::Wire(WireError::Msgpack("bad"))),
            ClientError::Wire(WireError::Msgpack("bad"))
        ));
    }
}
