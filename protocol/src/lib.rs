//! # conduit-protocol
//!
//! The wire protocol of conduit, with no I/O, no runtime and no clock: the caller moves
//! bytes, owns time and supplies randomness (the one wall-clock reader, [`clock`], is a
//! helper for callers; nothing in the crate uses it). Everything here is deterministic and can be
//! tested (and fuzzed) without sockets.
//!
//! * [`header`] — the 32-byte frame header (netconduit v1 layout, big-endian).
//! * [`decoder`] — incremental frame decoding over an 8-byte-aligned receive buffer,
//!   with every length checked before memory is sized by it.
//! * [`native`] — the native codec: rkyv payloads read in place.
//! * [`v1`] — the netconduit-v1 codec: MessagePack payloads exactly as netconduit 5.0.0
//!   writes them.
//! * [`value`] / [`msgpack`] — the dynamic [`Value`] both codecs carry.
//! * [`encode`] — one fallible encoder for every frame, whatever the peer's codec.
//! * [`handshake`] — the login exchange of both codecs, client and server side.
//! * [`auth`] — password proofs for both codecs.
//! * [`error`] — [`WireError`], the one error type of the wire layer.
//!
//! ```
//! use conduit_protocol::{v1, DecoderLimits, FrameDecoder, Value};
//!
//! let frame = v1::Encoder::new(0).message("chat", &Value::map().with("message", "hi"));
//! let mut decoder = FrameDecoder::new(DecoderLimits::default());
//! decoder.feed(&frame);
//! let f = decoder.next_frame()?.expect("a whole frame");
//! match v1::decode(&f.header, f.payload, &v1::V1Limits::default())? {
//!     v1::V1Payload::Message { name, data } => {
//!         assert_eq!(name, "chat");
//!         assert_eq!(data.get("message").and_then(Value::as_str), Some("hi"));
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), conduit_protocol::WireError>(())
//! ```

#![forbid(unsafe_code)]

pub mod auth;
pub mod clock;
pub mod codec;
pub mod decoder;
pub mod encode;
pub mod error;
pub mod frame_buf;
pub mod handshake;
pub mod header;
pub mod msgpack;
pub mod native;
mod scratch_tree;
pub mod v1;
pub mod value;
#[cfg(feature = "serde")]
pub mod value_serde;
mod value_tree;

pub use decoder::{DecoderLimits, Frame, FrameDecoder, RecvBuf};
pub use encode::Encoder;
pub use error::WireError;
pub use header::{Codec, Flags, FrameKind, Header, HEADER_LEN, MAGIC};
pub use msgpack::ValueLimits;
pub use value::Value;
pub use value_tree::MapEntries;

/// The protocol version string netconduit reports (`__protocol_version__`).
pub const NETCONDUIT_PROTOCOL_VERSION: &str = "1.0";
