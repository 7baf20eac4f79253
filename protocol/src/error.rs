//! The one error type of the wire layer.
//!
//! Every variant is something a *peer* did wrong (or something the local caller asked
//! for that the wire cannot carry, like an over-long route name). The engine maps each
//! variant to the reason it sends before closing, via [`WireError::close_reason`].

use crate::codec::Codec;

/// What went wrong while decoding or encoding a frame.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The first four bytes of a header were not `CNDT`.
    #[error("bad magic {0:02x?}: not a conduit frame")]
    BadMagic([u8; 4]),
    /// The header's version is neither netconduit-v1 (`0x0100`) nor native (`0x0200`),
    /// or it names a codec this decoder was configured to refuse.
    #[error("unknown or refused protocol version 0x{0:04x}")]
    UnknownVersion(u16),
    /// The header's message type is outside `0x01..=0x10`.
    #[error("unknown message type 0x{0:04x}")]
    UnknownType(u16),
    /// The header announces a payload longer than the configured maximum. Raised before
    /// any buffer grows.
    #[error("payload length {length} exceeds the limit of {max} bytes")]
    Oversize {
        /// Length announced by the peer.
        length: u64,
        /// The configured maximum.
        max: u64,
    },
    /// A connection's codec is fixed by its first frame; this frame used the other one.
    #[error("frame uses codec {got:?} but this connection speaks {expected:?}")]
    CodecMismatch {
        /// The codec fixed by the first frame.
        expected: Codec,
        /// The codec of the offending frame.
        got: Codec,
    },
    /// A native frame broke the alignment rules (length not a multiple of 8, or a
    /// padding count larger than 7 or than the payload).
    #[error("native frame layout: {0}")]
    NativeLayout(&'static str),
    /// A native payload's archive failed validation.
    #[error("invalid native archive: {0}")]
    Archive(String),
    /// A MessagePack payload could not be decoded.
    #[error("malformed MessagePack: {0}")]
    Msgpack(&'static str),
    /// Well-formed MessagePack holding a value the dynamic [`Value`](crate::Value)
    /// has no place for (an extension type, a map key that is not a string). The
    /// frame's length is known, so the stream stays in step: an RPC request can be
    /// answered with a validation error instead of closing.
    #[error("unsupported MessagePack: {0}")]
    UnsupportedValue(&'static str),
    /// A payload nested deeper than the configured limit.
    #[error("payload nests deeper than {max} levels")]
    TooDeep {
        /// The configured maximum depth.
        max: usize,
    },
    /// A string on the wire was not valid UTF-8.
    #[error("invalid UTF-8 in {0}")]
    InvalidUtf8(&'static str),
    /// A zlib-compressed payload could not be inflated.
    #[error("invalid zlib data")]
    Decompress,
    /// A zlib-compressed payload inflates beyond the configured maximum.
    #[error("decompressed payload exceeds the limit of {max} bytes")]
    DecompressedTooLarge {
        /// The configured maximum.
        max: u64,
    },
    /// The payload decoded, but does not have the shape this frame type requires.
    #[error("{kind} payload: {problem}")]
    Shape {
        /// The frame type whose payload was wrong.
        kind: &'static str,
        /// What was wrong, naming the field.
        problem: &'static str,
    },
    /// A route name (message type or RPC method) is longer than the wire can carry.
    #[error("route name of {len} bytes exceeds the limit of {max}")]
    RouteTooLong {
        /// The name's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Serializing a native payload failed.
    #[error("cannot encode native payload: {0}")]
    Encode(String),
}

impl WireError {
    /// A short, stable reason suitable for a close or failure frame sent to the peer
    /// before the connection is closed. It never echoes peer-controlled bytes.
    pub fn close_reason(&self) -> &'static str {
        match self {
            WireError::BadMagic(_) => "protocol error: bad magic",
            WireError::UnknownVersion(_) => "protocol error: unknown version",
            WireError::UnknownType(_) => "protocol error: unknown message type",
            WireError::Oversize { .. } => "protocol error: frame too large",
            WireError::CodecMismatch { .. } => "protocol error: codec changed mid-connection",
            WireError::NativeLayout(_) => "protocol error: bad native frame layout",
            WireError::Archive(_) => "protocol error: invalid payload",
            WireError::Msgpack(_) => "protocol error: invalid payload",
            WireError::UnsupportedValue(_) => "protocol error: unsupported MessagePack value",
            WireError::TooDeep { .. } => "protocol error: payload nested too deeply",
            WireError::InvalidUtf8(_) => "protocol error: invalid UTF-8",
            WireError::Decompress => "protocol error: invalid compressed payload",
            WireError::DecompressedTooLarge { .. } => "protocol error: payload too large",
            WireError::Shape { .. } => "protocol error: unexpected payload shape",
            WireError::RouteTooLong { .. } => "protocol error: name too long",
            WireError::Encode(_) => "internal error: cannot encode",
        }
    }
}
