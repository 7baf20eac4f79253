//! One encoder for both codecs: every frame a server or client sends, built by the same
//! call whatever codec the peer speaks, and always fallible (a native route over 255
//! bytes, a payload over the peer's frame limit), so callers handle one error path
//! instead of matching on the codec.

use bytes::Bytes;

use crate::header::{Codec, FrameKind, HEADER_LEN};
use crate::native::{self, RpcFailure, ValueTree};
use crate::v1::{self, codes};
use crate::{Value, WireError};

/// Builds complete frames (header included) in one codec.
#[derive(Clone, Copy, Debug)]
pub struct Encoder {
    /// The codec every frame is written in.
    codec: Codec,
    /// Stamped into every header; the caller owns the clock.
    timestamp_ms: u64,
    /// Frames whose payload would exceed this are refused rather than sent to a peer
    /// that would close the connection on them.
    max_payload_bytes: u32,
}

impl Encoder {
    /// An encoder for `codec` stamping `timestamp_ms`, with no payload limit beyond the
    /// wire's own (`u32::MAX`).
    pub const fn new(codec: Codec, timestamp_ms: u64) -> Encoder {
        Encoder {
            codec,
            timestamp_ms,
            max_payload_bytes: u32::MAX,
        }
    }

    /// The same encoder, refusing payloads over `max` bytes with
    /// [`WireError::Oversize`].
    pub const fn with_max_payload(mut self, max: u32) -> Encoder {
        self.max_payload_bytes = max;
        self
    }

    /// The codec frames are written in.
    pub const fn codec(&self) -> Codec {
        self.codec
    }

    fn v1(&self) -> v1::Encoder {
        v1::Encoder::new(self.timestamp_ms)
    }

    fn native(&self) -> native::Encoder {
        native::Encoder::new(self.timestamp_ms)
    }

    fn check(&self, frame: Bytes) -> Result<Bytes, WireError> {
        let payload = frame.len().saturating_sub(HEADER_LEN);
        if payload > self.max_payload_bytes as usize {
            return Err(WireError::Oversize {
                length: payload as u64,
                max: self.max_payload_bytes.into(),
            });
        }
        Ok(frame)
    }

    /// A frame with no payload (PING, PONG, …).
    pub fn empty(&self, kind: FrameKind) -> Result<Bytes, WireError> {
        Ok(match self.codec {
            Codec::V1 => self.v1().empty(kind),
            Codec::Native => self.native().empty(kind),
        })
    }

    /// MESSAGE `name` with `data`. Native frames carry `correlation_id` (so a
    /// `<name>_response` can be matched to its message); v1 frames carry 0, as
    /// netconduit sends.
    pub fn message(
        &self,
        correlation_id: u64,
        name: &str,
        data: &Value,
    ) -> Result<Bytes, WireError> {
        self.check(match self.codec {
            Codec::V1 => {
                check_route(name)?;
                self.v1().message(name, data)
            }
            Codec::Native => ValueTree::with_flattened(data, |tree| {
                self.native()
                    .frame(FrameKind::Message, correlation_id, Some(name), tree)
            })?,
        })
    }

    /// RPC_REQUEST `method(params)`.
    pub fn rpc_request(
        &self,
        correlation_id: u64,
        method: &str,
        params: &Value,
    ) -> Result<Bytes, WireError> {
        self.check(match self.codec {
            Codec::V1 => {
                check_route(method)?;
                self.v1().rpc_request(correlation_id, method, params)
            }
            Codec::Native => ValueTree::with_flattened(params, |tree| {
                self.native().rpc_request(correlation_id, method, tree)
            })?,
        })
    }

    /// A successful RPC reply carrying `result`.
    pub fn rpc_success(&self, correlation_id: u64, result: &Value) -> Result<Bytes, WireError> {
        self.check(match self.codec {
            Codec::V1 => self.v1().rpc_success(correlation_id, result),
            Codec::Native => ValueTree::with_flattened(result, |tree| {
                self.native().rpc_response(correlation_id, tree)
            })?,
        })
    }

    /// A failed RPC reply: netconduit's `{success: false, error, code, details?}` for v1
    /// (still frame type RPC_RESPONSE, as its clients expect), RPC_ERROR natively.
    pub fn rpc_failure(
        &self,
        correlation_id: u64,
        code: i64,
        message: &str,
        details: Option<&Value>,
    ) -> Result<Bytes, WireError> {
        self.check(match self.codec {
            Codec::V1 => self
                .v1()
                .rpc_failure(correlation_id, message, code, details),
            Codec::Native => self.native().rpc_error(
                correlation_id,
                &RpcFailure {
                    code: u32::try_from(code).unwrap_or(codes::INTERNAL as u32),
                    message: message.to_owned(),
                    details: ValueTree::from_value(details.unwrap_or(&Value::Nil)),
                },
            )?,
        })
    }

    /// AUTH_FAILURE carrying `reason`.
    pub fn auth_failure(&self, reason: &str) -> Result<Bytes, WireError> {
        Ok(match self.codec {
            Codec::V1 => self.v1().auth_failure(reason),
            Codec::Native => self.native().auth_failure(reason)?,
        })
    }

    /// A CLOSE carrying `reason`, where the codec has one a peer acts on: native does;
    /// netconduit-v1 peers just see the socket close (`Ok(None)`).
    pub fn close(&self, reason: &str) -> Result<Option<Bytes>, WireError> {
        match self.codec {
            Codec::V1 => Ok(None),
            Codec::Native => self.native().close(reason).map(Some),
        }
    }
}

/// Route names are bounded on both codecs alike (the native wire carries at most
/// [`native::MAX_ROUTE_BYTES`]), so a name that works for one peer works for all.
pub fn check_route(name: &str) -> Result<(), WireError> {
    if name.len() > native::MAX_ROUTE_BYTES {
        return Err(WireError::RouteTooLong {
            len: name.len(),
            max: native::MAX_ROUTE_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "tests fail loudly on the first unexpected error"
    )]
    use super::*;
    use crate::{DecoderLimits, FrameDecoder};

    fn decode(bytes: &[u8]) -> (crate::Header, Vec<u8>) {
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(bytes);
        let f = d.next_frame().unwrap().unwrap();
        (f.header, f.payload.to_vec())
    }

    #[test]
    fn both_codecs_build_the_same_frames_by_one_call() {
        let data = Value::map().with("x", 1);
        for codec in [Codec::V1, Codec::Native] {
            let enc = Encoder::new(codec, 7);
            for frame in [
                enc.message(3, "chat", &data).unwrap(),
                enc.rpc_request(4, "add", &data).unwrap(),
                enc.rpc_success(4, &data).unwrap(),
                enc.rpc_failure(4, 2000, "bad", Some(&data)).unwrap(),
                enc.auth_failure("no").unwrap(),
                enc.empty(FrameKind::Ping).unwrap(),
            ] {
                let (h, _) = decode(&frame);
                assert_eq!(h.codec, codec);
                assert_eq!(h.timestamp_ms, 7);
            }
        }
        assert!(Encoder::new(Codec::V1, 0).close("x").unwrap().is_none());
        assert!(Encoder::new(Codec::Native, 0).close("x").unwrap().is_some());
    }

    #[test]
    fn long_names_and_big_payloads_are_refused_in_both_codecs() {
        let long = "n".repeat(256);
        for codec in [Codec::V1, Codec::Native] {
            let enc = Encoder::new(codec, 0);
            assert!(matches!(
                enc.message(0, &long, &Value::Nil),
                Err(WireError::RouteTooLong { len: 256, .. })
            ));
            assert!(enc.message(0, &"n".repeat(255), &Value::Nil).is_ok());
            let small = enc.with_max_payload(16);
            let big = Value::from("x".repeat(64));
            assert!(matches!(
                small.message(0, "m", &big),
                Err(WireError::Oversize { max: 16, .. })
            ));
        }
    }
}
