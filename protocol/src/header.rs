//! The 32-byte frame header shared by both codecs (netconduit v1 layout, big-endian).
//!
//! ```text
//! offset size field
//!      0    4 magic "CNDT"
//!      4    2 version      0x0100 netconduit-v1 (MessagePack), 0x0200 native (rkyv)
//!      6    2 type         FrameKind code, 0x01..=0x10
//!      8    2 flags        bit 0: payload is zlib-compressed (v1 only)
//!     10    2 reserved     v1: 0; native: trailing padding bytes (0..=7)
//!     12    4 length       payload bytes (native: including the padding)
//!     16    8 correlation  RPC request id, echoed in the reply; 0 otherwise
//!     24    8 timestamp    sender's wall clock, ms since the Unix epoch (informational)
//! ```

pub use crate::codec::Codec;
use crate::error::WireError;

/// Size of every frame header in bytes.
pub const HEADER_LEN: usize = 32;

/// The four bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"CNDT";

/// The message type of a frame. Codes are netconduit's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum FrameKind {
    /// An application message `{type, data}`; both directions.
    Message = 0x01,
    /// An RPC call; client to server.
    RpcRequest = 0x02,
    /// An RPC reply (v1: success and failure alike, in a double envelope).
    RpcResponse = 0x03,
    /// An RPC failure (native only; netconduit never sends it).
    RpcError = 0x04,
    /// Heartbeat probe.
    Ping = 0x05,
    /// Heartbeat answer.
    Pong = 0x06,
    /// Authentication request (native: every client step, and the server's challenge).
    AuthRequest = 0x07,
    /// Authentication accepted.
    AuthSuccess = 0x08,
    /// Authentication refused; the sender closes after it.
    AuthFailure = 0x09,
    /// Flow control: hold outgoing frames (v1, never sent in practice).
    Pause = 0x0A,
    /// Flow control: release a pause.
    Resume = 0x0B,
    /// Acknowledgement (unused).
    Ack = 0x0C,
    /// Negative acknowledgement (unused).
    Nack = 0x0D,
    /// The sender is closing, with a reason.
    Close = 0x0E,
    /// Acknowledges a close (unused).
    CloseAck = 0x0F,
    /// Method list (unused; discovery is the `listall` RPC).
    RpcList = 0x10,
}

impl FrameKind {
    /// Every kind, in code order.
    pub const ALL: [FrameKind; 16] = [
        FrameKind::Message,
        FrameKind::RpcRequest,
        FrameKind::RpcResponse,
        FrameKind::RpcError,
        FrameKind::Ping,
        FrameKind::Pong,
        FrameKind::AuthRequest,
        FrameKind::AuthSuccess,
        FrameKind::AuthFailure,
        FrameKind::Pause,
        FrameKind::Resume,
        FrameKind::Ack,
        FrameKind::Nack,
        FrameKind::Close,
        FrameKind::CloseAck,
        FrameKind::RpcList,
    ];

    /// The kind a type code names, if any.
    pub const fn from_code(code: u16) -> Option<FrameKind> {
        if code >= 1 && code <= 16 {
            Some(Self::ALL[(code - 1) as usize])
        } else {
            None
        }
    }

    /// The wire code.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// A stable name for logs and errors.
    pub const fn name(self) -> &'static str {
        match self {
            FrameKind::Message => "MESSAGE",
            FrameKind::RpcRequest => "RPC_REQUEST",
            FrameKind::RpcResponse => "RPC_RESPONSE",
            FrameKind::RpcError => "RPC_ERROR",
            FrameKind::Ping => "HEARTBEAT_PING",
            FrameKind::Pong => "HEARTBEAT_PONG",
            FrameKind::AuthRequest => "AUTH_REQUEST",
            FrameKind::AuthSuccess => "AUTH_SUCCESS",
            FrameKind::AuthFailure => "AUTH_FAILURE",
            FrameKind::Pause => "PAUSE",
            FrameKind::Resume => "RESUME",
            FrameKind::Ack => "ACK",
            FrameKind::Nack => "NACK",
            FrameKind::Close => "CLOSE",
            FrameKind::CloseAck => "CLOSE_ACK",
            FrameKind::RpcList => "RPC_LIST",
        }
    }
}

/// Header flag bits. Unknown bits are carried and ignored, as netconduit does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u16);

impl Flags {
    /// The payload is zlib-compressed (honoured for v1 frames).
    pub const COMPRESSED: u16 = 0x0001;

    /// Whether the compressed bit is set.
    pub const fn compressed(self) -> bool {
        self.0 & Self::COMPRESSED != 0
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// The payload codec named by the version field.
    pub codec: Codec,
    /// The message type.
    pub kind: FrameKind,
    /// Flag bits, unknown ones included.
    pub flags: Flags,
    /// v1: reserved (sent as 0, ignored). Native: count of padding bytes that end the
    /// payload so the next frame starts 8-byte aligned.
    pub reserved: u16,
    /// Payload length in bytes, padding included.
    pub length: u32,
    /// RPC correlation id; 0 for frames that are not part of a call.
    pub correlation_id: u64,
    /// Sender's wall clock in ms since the Unix epoch; informational only.
    pub timestamp_ms: u64,
}

impl Header {
    /// A header with zero flags, reserved, length and correlation.
    pub const fn new(codec: Codec, kind: FrameKind) -> Header {
        Header {
            codec,
            kind,
            flags: Flags(0),
            reserved: 0,
            length: 0,
            correlation_id: 0,
            timestamp_ms: 0,
        }
    }

    /// Writes the 32 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.codec.version().to_be_bytes());
        out[6..8].copy_from_slice(&self.kind.code().to_be_bytes());
        out[8..10].copy_from_slice(&self.flags.0.to_be_bytes());
        out[10..12].copy_from_slice(&self.reserved.to_be_bytes());
        out[12..16].copy_from_slice(&self.length.to_be_bytes());
        out[16..24].copy_from_slice(&self.correlation_id.to_be_bytes());
        out[24..32].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        out
    }

    /// Reads 32 header bytes. Checks magic, version and type; the length is checked by
    /// the caller, which knows its limit.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Header, WireError> {
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        let version = u16::from_be_bytes([bytes[4], bytes[5]]);
        let codec = Codec::from_version(version).ok_or(WireError::UnknownVersion(version))?;
        let code = u16::from_be_bytes([bytes[6], bytes[7]]);
        let kind = FrameKind::from_code(code).ok_or(WireError::UnknownType(code))?;
        Ok(Header {
            codec,
            kind,
            flags: Flags(u16::from_be_bytes([bytes[8], bytes[9]])),
            reserved: u16::from_be_bytes([bytes[10], bytes[11]]),
            length: u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
            correlation_id: u64::from_be_bytes([
                bytes[16], bytes[17], bytes[18], bytes[19], bytes[20], bytes[21], bytes[22],
                bytes[23],
            ]),
            timestamp_ms: u64::from_be_bytes([
                bytes[24], bytes[25], bytes[26], bytes[27], bytes[28], bytes[29], bytes[30],
                bytes[31],
            ]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_auth_request_header() {
        // From the netconduit capture: AUTH_REQUEST, 122-byte payload.
        let bytes: [u8; 32] = [
            0x43, 0x4e, 0x44, 0x54, 0x01, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x7a, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x01, 0xa2, 0x13, 0xc5, 0xa2, 0xae,
        ];
        let h = Header::decode(&bytes).unwrap();
        assert_eq!(h.codec, Codec::V1);
        assert_eq!(h.kind, FrameKind::AuthRequest);
        assert_eq!(h.length, 0x7a);
        assert_eq!(h.correlation_id, 0);
        assert_eq!(h.timestamp_ms, 0x0000_01a2_13c5_a2ae);
        assert_eq!(h.encode(), bytes);
    }

    #[test]
    fn every_kind_round_trips_and_neighbours_are_rejected() {
        for kind in FrameKind::ALL {
            assert_eq!(FrameKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(FrameKind::from_code(0), None);
        assert_eq!(FrameKind::from_code(17), None);
    }

    #[test]
    fn distinct_errors() {
        let good = Header::new(Codec::Native, FrameKind::Ping).encode();
        let mut b = good;
        b[0] = b'X';
        assert!(matches!(Header::decode(&b), Err(WireError::BadMagic(_))));
        let mut b = good;
        b[4] = 0x03;
        assert_eq!(Header::decode(&b), Err(WireError::UnknownVersion(0x0300)));
        let mut b = good;
        b[7] = 0x11;
        assert_eq!(Header::decode(&b), Err(WireError::UnknownType(0x11)));
    }

    #[test]
    fn unknown_flag_bits_are_carried() {
        let mut h = Header::new(Codec::V1, FrameKind::Ping);
        h.flags = Flags(0x8000);
        let back = Header::decode(&h.encode()).unwrap();
        assert_eq!(back.flags, Flags(0x8000));
        assert!(!back.flags.compressed());
    }
}
