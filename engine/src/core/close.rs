//! Why connections close, as closed enums: the peer's misbehaviour ([`PeerMisbehaved`],
//! after rustls's enum of the same name) and every other cause ([`CloseReason`]). Each
//! maps to the text the peer is told, and to how the glue tears the socket down
//! ([`Close`]) — decided here, once, not at each place a connection ends.

use std::time::Duration;

use bytes::Bytes;
use conduit_protocol::WireError;

use crate::metrics::{AuthFailureKind, CloseKind};

/// Something the peer did that the protocol does not allow. Closed: every way a peer
/// can break the protocol is one variant, never free text, so each has one stable
/// reason on the wire and one counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerMisbehaved {
    /// The first bytes of a header were not `CNDT`.
    BadMagic,
    /// A protocol version this server does not speak (or was configured to refuse).
    UnknownVersion,
    /// A message type outside the protocol's range.
    UnknownType,
    /// A frame longer than the limit in force (`max_auth_frame_bytes` before login,
    /// `max_frame_bytes` after).
    FrameTooLarge,
    /// A frame in the other codec than the connection's first.
    CodecChanged,
    /// A native frame that broke the alignment rules.
    BadNativeLayout,
    /// A payload that could not be decoded (invalid archive or MessagePack).
    InvalidPayload,
    /// A string on the wire that is not UTF-8.
    InvalidUtf8,
    /// A compressed payload that does not inflate.
    BadCompression,
    /// A payload nested past `max_payload_depth` or holding more than
    /// `max_payload_values` values.
    PayloadTooComplex,
    /// A compressed payload that inflates past `max_frame_bytes`.
    PayloadTooLarge,
    /// A payload of the wrong shape for its frame type.
    UnexpectedShape,
    /// A route name longer than the wire carries.
    NameTooLong,
    /// A frame other than authentication before login.
    NotAuthenticated,
    /// A login step out of order (a proof before a hello…).
    HandshakeOutOfOrder,
    /// Frames past the connection's inbound rate limits (policy: close).
    RateLimited,
    /// A WebSocket frame the transport refuses (text, fragmented, too large, not
    /// exactly one protocol frame, unmasked).
    BadWebSocketFrame,
}

impl PeerMisbehaved {
    /// The reason sent to the peer. Never echoes peer-controlled bytes.
    pub fn wire_text(self) -> &'static str {
        match self {
            PeerMisbehaved::BadMagic => "protocol error: bad magic",
            PeerMisbehaved::UnknownVersion => "protocol error: unknown version",
            PeerMisbehaved::UnknownType => "protocol error: unknown message type",
            PeerMisbehaved::FrameTooLarge => "protocol error: frame too large",
            PeerMisbehaved::CodecChanged => "protocol error: codec changed mid-connection",
            PeerMisbehaved::BadNativeLayout => "protocol error: bad native frame layout",
            PeerMisbehaved::InvalidPayload => "protocol error: invalid payload",
            PeerMisbehaved::InvalidUtf8 => "protocol error: invalid UTF-8",
            PeerMisbehaved::BadCompression => "protocol error: invalid compressed payload",
            PeerMisbehaved::PayloadTooComplex => "protocol error: payload nested too deeply",
            PeerMisbehaved::PayloadTooLarge => "protocol error: payload too large",
            PeerMisbehaved::UnexpectedShape => "protocol error: unexpected payload shape",
            PeerMisbehaved::NameTooLong => "protocol error: name too long",
            PeerMisbehaved::NotAuthenticated => "authentication required",
            PeerMisbehaved::HandshakeOutOfOrder => {
                "protocol error: unexpected payload shape (handshake step out of order)"
            }
            PeerMisbehaved::RateLimited => "rate limit exceeded",
            PeerMisbehaved::BadWebSocketFrame => "bad websocket message",
        }
    }
}

impl From<&WireError> for PeerMisbehaved {
    fn from(e: &WireError) -> PeerMisbehaved {
        match e {
            WireError::BadMagic(_) => PeerMisbehaved::BadMagic,
            WireError::UnknownVersion(_) => PeerMisbehaved::UnknownVersion,
            WireError::UnknownType(_) => PeerMisbehaved::UnknownType,
            WireError::Oversize { .. } => PeerMisbehaved::FrameTooLarge,
            WireError::CodecMismatch { .. } => PeerMisbehaved::CodecChanged,
            WireError::NativeLayout(_) => PeerMisbehaved::BadNativeLayout,
            WireError::Archive(_) | WireError::Msgpack(_) | WireError::UnsupportedValue(_) => {
                PeerMisbehaved::InvalidPayload
            }
            WireError::InvalidUtf8(_) => PeerMisbehaved::InvalidUtf8,
            WireError::Decompress => PeerMisbehaved::BadCompression,
            WireError::TooDeep { .. } => PeerMisbehaved::PayloadTooComplex,
            WireError::DecompressedTooLarge { .. } => PeerMisbehaved::PayloadTooLarge,
            WireError::Shape {
                problem: "handshake step out of order",
                ..
            } => PeerMisbehaved::HandshakeOutOfOrder,
            WireError::Shape { .. } => PeerMisbehaved::UnexpectedShape,
            WireError::RouteTooLong { .. } => PeerMisbehaved::NameTooLong,
            // Encoding is ours, not the peer's; a payload we cannot re-encode was one we
            // could not read either.
            _ => PeerMisbehaved::InvalidPayload,
        }
    }
}

/// Why a connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed its side.
    PeerClosed,
    /// The peer sent a CLOSE frame.
    PeerSaidGoodbye,
    /// Wrong password or proof.
    AuthFailed,
    /// No authentication within `auth_timeout`.
    AuthTimeout,
    /// The peer broke the protocol.
    Misbehaved(PeerMisbehaved),
    /// Silent past `heartbeat_timeout`.
    HeartbeatTimeout,
    /// The outbound queue passed its limit (policy: disconnect).
    SlowConsumer,
    /// Kicked by the application.
    Kicked,
    /// The server is stopping.
    ServerStopping,
    /// The server is at `max_connections`.
    ServerFull,
    /// The process has no file descriptor left (the open-files limit): told through
    /// the one descriptor kept in reserve for this.
    OutOfDescriptors,
    /// `max_pending` connections are logging in already.
    TooManyPending,
    /// `max_pending_per_source` connections from the peer's address are logging in.
    TooManyFromSource,
    /// The peer's address failed to log in too often; it waits out its backoff.
    TooManyFailures,
    /// The token the connection logged in with (or last refreshed) expired.
    TokenExpired,
    /// A socket error.
    Io(std::io::ErrorKind),
}

impl CloseReason {
    /// The reason text sent to the peer, where the protocol has room for one.
    pub fn wire_text(self) -> &'static str {
        match self {
            CloseReason::PeerClosed | CloseReason::PeerSaidGoodbye => "closed",
            CloseReason::AuthFailed => "Invalid password",
            CloseReason::AuthTimeout => "authentication timed out",
            CloseReason::Misbehaved(m) => m.wire_text(),
            CloseReason::HeartbeatTimeout => "heartbeat timeout",
            CloseReason::SlowConsumer => "slow consumer: outbound queue limit reached",
            CloseReason::Kicked => "disconnected by the server",
            CloseReason::ServerStopping => "server shutting down",
            CloseReason::ServerFull => "server full: max_connections reached",
            CloseReason::OutOfDescriptors => "server full: no file descriptors left",
            CloseReason::TooManyPending => "server busy: too many connections logging in",
            CloseReason::TooManyFromSource => {
                "server busy: too many connections logging in from your address"
            }
            CloseReason::TooManyFailures => "too many failed logins from your address; retry later",
            CloseReason::TokenExpired => "token expired",
            CloseReason::Io(_) => "I/O error",
        }
    }

    /// Whether frames already queued are still flushed (within the drain timeout)
    /// before the socket closes. Closes the server or a polite peer asked for flush;
    /// closes of a dead, silent or hostile-slow peer do not wait for it.
    pub fn flushes(self) -> bool {
        matches!(
            self,
            CloseReason::Kicked
                | CloseReason::ServerStopping
                | CloseReason::PeerSaidGoodbye
                | CloseReason::Misbehaved(_)
                | CloseReason::AuthFailed
                | CloseReason::TokenExpired
        )
    }

    /// How closes for this reason are counted.
    pub fn kind(self) -> CloseKind {
        match self {
            CloseReason::PeerClosed | CloseReason::PeerSaidGoodbye => CloseKind::Peer,
            CloseReason::AuthFailed => CloseKind::AuthFailed,
            CloseReason::AuthTimeout => CloseKind::AuthTimeout,
            CloseReason::Misbehaved(PeerMisbehaved::RateLimited) => CloseKind::RateLimited,
            CloseReason::Misbehaved(_) => CloseKind::ProtocolError,
            CloseReason::HeartbeatTimeout => CloseKind::HeartbeatTimeout,
            CloseReason::SlowConsumer => CloseKind::SlowConsumer,
            CloseReason::Kicked => CloseKind::Kicked,
            CloseReason::ServerStopping => CloseKind::ServerStopping,
            CloseReason::ServerFull
            | CloseReason::OutOfDescriptors
            | CloseReason::TooManyPending
            | CloseReason::TooManyFromSource
            | CloseReason::TooManyFailures => CloseKind::Refused,
            CloseReason::TokenExpired => CloseKind::TokenExpired,
            CloseReason::Io(_) => CloseKind::IoError,
        }
    }

    /// The failed login a close of a connection that had not logged in was, if it was
    /// one (a peer that leaves before logging in has not failed).
    pub fn failed_login(self) -> Option<AuthFailureKind> {
        match self {
            CloseReason::AuthFailed => Some(AuthFailureKind::BadCredentials),
            CloseReason::AuthTimeout => Some(AuthFailureKind::Timeout),
            CloseReason::Misbehaved(_) => Some(AuthFailureKind::ProtocolError),
            _ => None,
        }
    }

    /// Whether the socket is reset (RST) rather than closed: a slow consumer's kernel
    /// buffers are dropped at once instead of lingering.
    pub fn resets(self) -> bool {
        self == CloseReason::SlowConsumer
    }
}

/// How the glue ends a connection: decided by the core, carried out by the glue.
#[derive(Debug)]
pub struct Close {
    /// Why.
    pub reason: CloseReason,
    /// A last frame telling the peer why, if its codec has one for this case.
    pub last: Option<Bytes>,
    /// How long to wait before sending `last` (the brute-force brake after a wrong
    /// password); zero for every other close.
    pub last_after: Duration,
}
