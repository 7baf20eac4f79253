//! The netconduit-v1 codec: MessagePack payloads shaped exactly as netconduit 5.0.0
//! writes and reads them (see `netconduit-v1.md`).

use std::io::Read;

use bytes::Bytes;

use crate::error::WireError;
use crate::header::{Codec, Flags, FrameKind, Header, HEADER_LEN};
use crate::msgpack::{self, ValueLimits};
use crate::value::Value;

/// netconduit's RPC error codes that the dispatcher produces.
pub mod codes {
    /// Any other failure inside a handler (`"Error in <method>: …"`).
    pub const INTERNAL: i64 = 1001;
    /// Missing, unexpected or wrongly typed arguments; failed validation.
    pub const VALIDATION: i64 = 2000;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = 4000;
}

/// Payloads larger than this are zlib-compressed by an endpoint that compresses
/// (netconduit's rule).
pub const COMPRESS_THRESHOLD_BYTES: usize = 1024;

/// Bounds on decoding v1 payloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V1Limits {
    /// Depth and size bounds on the MessagePack value.
    pub value: ValueLimits,
    /// Largest size a compressed payload may inflate to.
    pub max_decompressed_bytes: usize,
}

impl Default for V1Limits {
    fn default() -> Self {
        V1Limits {
            value: ValueLimits::default(),
            max_decompressed_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A decoded netconduit-v1 payload.
#[derive(Clone, Debug, PartialEq)]
pub enum V1Payload {
    /// MESSAGE `{type, data}`.
    Message {
        /// The message type.
        name: String,
        /// Its data.
        data: Value,
    },
    /// RPC_REQUEST `{method, params}`. `method` is `None` when missing or not a
    /// string (netconduit answers "RPC method not found", code 4000).
    RpcRequest {
        /// The method name.
        method: Option<String>,
        /// The parameters (normally a map).
        params: Value,
    },
    /// RPC_RESPONSE / RPC_ERROR `{success, result}`; `result` is the inner envelope.
    RpcResponse {
        /// Outer success flag (netconduit's server always sends true).
        success: bool,
        /// The inner envelope `{success, data}` or `{success: false, error, code}`.
        result: Value,
    },
    /// AUTH_REQUEST `{password_hash, client_info?}`, or `{token, client_info?}` for a
    /// token login (conduit's extension; netconduit 5.0.0 sends only the hash).
    AuthRequest {
        /// sha256(password) as lowercase hex (`None` for a token login).
        password_hash: Option<String>,
        /// A signed token instead of the password hash.
        token: Option<String>,
        /// `client_info.name`, if sent.
        client_name: Option<String>,
        /// `client_info.version`, if sent.
        client_version: Option<String>,
    },
    /// AUTH_SUCCESS `{session_token, server_info}`.
    AuthSuccess {
        /// Random token (unused after the handshake).
        session_token: String,
        /// `server_info.name`.
        server_name: String,
        /// `server_info.version`.
        server_version: String,
    },
    /// AUTH_FAILURE `{reason}`.
    AuthFailure {
        /// Why.
        reason: String,
    },
    /// Any frame whose payload this codec does not interpret (PING, PONG, PAUSE, CLOSE
    /// …), with its payload decoded (`Nil` when empty).
    Other {
        /// The frame type.
        kind: FrameKind,
        /// The decoded payload.
        payload: Value,
    },
}

fn shape(kind: FrameKind, problem: &'static str) -> WireError {
    WireError::Shape {
        kind: kind.name(),
        problem,
    }
}

/// Decodes the payload of a v1 frame: inflates it if flagged, parses the MessagePack and
/// checks the shape its type requires.
pub fn decode(header: &Header, payload: &[u8], limits: &V1Limits) -> Result<V1Payload, WireError> {
    let inflated;
    let bytes = if header.flags.compressed() {
        inflated = inflate(payload, limits.max_decompressed_bytes)?;
        &inflated[..]
    } else {
        payload
    };
    let value = if bytes.is_empty() {
        Value::Nil
    } else {
        msgpack::from_slice(bytes, limits.value)?
    };
    let kind = header.kind;
    let str_field = |v: &Value, field: &'static str, problem: &'static str| {
        v.get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(shape(kind, problem))
    };
    Ok(match kind {
        FrameKind::Message => {
            let Value::Map(_) = value else {
                return Err(shape(kind, "payload is not a map"));
            };
            let name = str_field(&value, "type", "`type` missing or not a string")?;
            let data = take(value, "data");
            V1Payload::Message { name, data }
        }
        FrameKind::RpcRequest => {
            let method = value
                .get("method")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let params = match &value {
                Value::Map(_) => take(value, "params"),
                _ => Value::Nil,
            };
            V1Payload::RpcRequest { method, params }
        }
        FrameKind::RpcResponse | FrameKind::RpcError => {
            let success = value
                .get("success")
                .and_then(Value::as_bool)
                .ok_or(shape(kind, "`success` missing or not a bool"))?;
            V1Payload::RpcResponse {
                success,
                result: take(value, "result"),
            }
        }
        FrameKind::AuthRequest => {
            let text = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_owned);
            let (password_hash, token) = (text("password_hash"), text("token"));
            if password_hash.is_none() && token.is_none() {
                return Err(WireError::Shape {
                    kind: "AUTH_REQUEST",
                    problem: "`password_hash` (or `token`) missing or not a string",
                });
            }
            let info = value.get("client_info");
            let info_str = |k: &str| {
                info.and_then(|i| i.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            V1Payload::AuthRequest {
                password_hash,
                token,
                client_name: info_str("name"),
                client_version: info_str("version"),
            }
        }
        FrameKind::AuthSuccess => {
            let info = value.get("server_info");
            let info_str = |k: &str| {
                info.and_then(|i| i.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_default()
            };
            V1Payload::AuthSuccess {
                session_token: value
                    .get("session_token")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                server_name: info_str("name"),
                server_version: info_str("version"),
            }
        }
        FrameKind::AuthFailure => V1Payload::AuthFailure {
            reason: value
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        },
        _ => V1Payload::Other {
            kind,
            payload: value,
        },
    })
}

/// Removes and returns `key` from a map (`Nil` when absent).
fn take(value: Value, key: &str) -> Value {
    match value {
        Value::Map(entries) => entries
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .unwrap_or(Value::Nil),
        _ => Value::Nil,
    }
}

/// Kept out of line (and cold): inlined under LTO, the decompressor's state (tens of
/// KiB) became part of `decode`'s stack frame, probed page by page on every frame —
/// about 12 written cache lines per uncompressed call (cachegrind).
#[cold]
#[inline(never)]
fn inflate(payload: &[u8], max: usize) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(payload)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| WireError::Decompress)?;
    if out.len() > max {
        return Err(WireError::DecompressedTooLarge { max: max as u64 });
    }
    Ok(out)
}

/// Builds netconduit-v1 frames. Each call returns one complete frame, header included.
#[derive(Debug, Clone, Copy, Default)]
pub struct Encoder {
    /// Stamped into every header; the caller owns the clock.
    pub timestamp_ms: u64,
    /// Compress payloads above [`COMPRESS_THRESHOLD_BYTES`] with zlib when that makes
    /// them smaller (netconduit's `enable_compression`).
    pub compress: bool,
}

impl Encoder {
    /// An encoder stamping frames with `timestamp_ms`, without compression.
    pub const fn new(timestamp_ms: u64) -> Encoder {
        Encoder {
            timestamp_ms,
            compress: false,
        }
    }

    /// A frame of `kind` whose MessagePack payload `write` appends.
    pub fn frame(
        &self,
        kind: FrameKind,
        correlation_id: u64,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Bytes {
        let built = crate::frame_buf::build(|mut out, _| {
            out.extend_from_slice(&[0u8; HEADER_LEN]);
            write(&mut out);
            let mut h = Header::new(Codec::V1, kind);
            if self.compress && out.len() - HEADER_LEN > COMPRESS_THRESHOLD_BYTES {
                if let Some(packed) = deflate(&out[HEADER_LEN..]) {
                    out.truncate(HEADER_LEN);
                    out.extend_from_slice(&packed);
                    h.flags = Flags(Flags::COMPRESSED);
                }
            }
            h.length = (out.len() - HEADER_LEN) as u32;
            h.correlation_id = correlation_id;
            h.timestamp_ms = self.timestamp_ms;
            out[..HEADER_LEN].copy_from_slice(&h.encode());
            Ok::<_, std::convert::Infallible>(out)
        });
        let Ok(frame) = built;
        frame
    }

    /// A frame with no payload (PING, PONG, …).
    pub fn empty(&self, kind: FrameKind) -> Bytes {
        self.frame(kind, 0, |_| {})
    }

    /// MESSAGE `{"type": name, "data": data}`.
    pub fn message(&self, name: &str, data: &Value) -> Bytes {
        self.frame(FrameKind::Message, 0, |out| {
            msgpack::write_map_len(out, 2);
            msgpack::write_str(out, "type");
            msgpack::write_str(out, name);
            msgpack::write_str(out, "data");
            msgpack::write_value(out, data);
        })
    }

    /// RPC_REQUEST `{"method": method, "params": params}`.
    pub fn rpc_request(&self, correlation_id: u64, method: &str, params: &Value) -> Bytes {
        self.frame(FrameKind::RpcRequest, correlation_id, |out| {
            msgpack::write_map_len(out, 2);
            msgpack::write_str(out, "method");
            msgpack::write_str(out, method);
            msgpack::write_str(out, "params");
            msgpack::write_value(out, params);
        })
    }

    /// RPC_RESPONSE for a successful call: `{"success": true, "result": {"success":
    /// true, "data": data}}`. A map that has a `"success"` key is passed through as the
    /// inner envelope unchanged, as netconduit does.
    pub fn rpc_success(&self, correlation_id: u64, data: &Value) -> Bytes {
        self.frame(FrameKind::RpcResponse, correlation_id, |out| {
            msgpack::write_map_len(out, 2);
            msgpack::write_str(out, "success");
            msgpack::write_bool(out, true);
            msgpack::write_str(out, "result");
            if data.get("success").is_some() {
                msgpack::write_value(out, data);
            } else {
                msgpack::write_map_len(out, 2);
                msgpack::write_str(out, "success");
                msgpack::write_bool(out, true);
                msgpack::write_str(out, "data");
                msgpack::write_value(out, data);
            }
        })
    }

    /// RPC_RESPONSE for a failed call: `{"success": true, "result": {"success": false,
    /// "error": error, "code": code[, "details": details]}}` — still type 0x03, as
    /// netconduit clients expect.
    pub fn rpc_failure(
        &self,
        correlation_id: u64,
        error: &str,
        code: i64,
        details: Option<&Value>,
    ) -> Bytes {
        self.frame(FrameKind::RpcResponse, correlation_id, |out| {
            msgpack::write_map_len(out, 2);
            msgpack::write_str(out, "success");
            msgpack::write_bool(out, true);
            msgpack::write_str(out, "result");
            msgpack::write_map_len(out, if details.is_some() { 4 } else { 3 });
            msgpack::write_str(out, "success");
            msgpack::write_bool(out, false);
            msgpack::write_str(out, "error");
            msgpack::write_str(out, error);
            msgpack::write_str(out, "code");
            msgpack::write_int(out, code);
            if let Some(d) = details {
                msgpack::write_str(out, "details");
                msgpack::write_value(out, d);
            }
        })
    }

    /// AUTH_REQUEST `{"password_hash": …, "client_info": {"name": …, "version": …}}`.
    pub fn auth_request(
        &self,
        password_hash: &str,
        client_name: &str,
        client_version: &str,
    ) -> Bytes {
        self.auth_request_with("password_hash", password_hash, client_name, client_version)
    }

    /// AUTH_REQUEST for a token login: `{"token": …, "client_info": {…}}` (also sent
    /// after login to refresh the token).
    pub fn auth_request_token(
        &self,
        token: &str,
        client_name: &str,
        client_version: &str,
    ) -> Bytes {
        self.auth_request_with("token", token, client_name, client_version)
    }

    /// AUTH_REQUEST `{<proof>: …, "client_info": {…}}`.
    fn auth_request_with(
        &self,
        proof_key: &str,
        proof: &str,
        client_name: &str,
        client_version: &str,
    ) -> Bytes {
        self.frame(FrameKind::AuthRequest, 0, |out| {
            msgpack::write_map_len(out, 2);
            msgpack::write_str(out, proof_key);
            msgpack::write_str(out, proof);
            msgpack::write_str(out, "client_info");
            msgpack::write_map_len(out, 2);
            msgpack::write_str(out, "name");
            msgpack::write_str(out, client_name);
            msgpack::write_str(out, "version");
            msgpack::write_str(out, client_version);
        })
    }

    /// AUTH_SUCCESS `{"session_token": …, "server_info": {"name": …, "version": …}}`.
    pub fn auth_success(
        &self,
        session_token: &str,
        server_name: &str,
        server_version: &str,
    ) -> Bytes {
        self.frame(FrameKind::AuthSuccess, 0, |out| {
            msgpack::write_map_len(out, 2);
            msgpack::write_str(out, "session_token");
            msgpack::write_str(out, session_token);
            msgpack::write_str(out, "server_info");
            msgpack::write_map_len(out, 2);
            msgpack::write_str(out, "name");
            msgpack::write_str(out, server_name);
            msgpack::write_str(out, "version");
            msgpack::write_str(out, server_version);
        })
    }

    /// AUTH_FAILURE `{"reason": reason}`.
    pub fn auth_failure(&self, reason: &str) -> Bytes {
        self.frame(FrameKind::AuthFailure, 0, |out| {
            msgpack::write_map_len(out, 1);
            msgpack::write_str(out, "reason");
            msgpack::write_str(out, reason);
        })
    }
}

/// Out of line and cold, like [`inflate`]: its compressor state stays off the stack
/// of every frame's encoding.
#[cold]
#[inline(never)]
fn deflate(payload: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    z.write_all(payload).ok()?;
    let packed = z.finish().ok()?;
    (packed.len() < payload.len()).then_some(packed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_built_in_the_scratch_match_frames_built_alone() {
        let big = Value::map().with("text", "compressible ".repeat(2000));
        for compress in [false, true] {
            let enc = Encoder {
                timestamp_ms: 7,
                compress,
            };
            for v in [Value::Int(3), Value::map().with("x", "y"), big.clone()] {
                let scratch = enc.message("chat", &v);
                let alone = crate::frame_buf::with_scratch_held(|| enc.message("chat", &v));
                assert_eq!(scratch, alone);
                let h = Header::decode(scratch[..HEADER_LEN].try_into().unwrap()).unwrap();
                assert_eq!(h.length as usize, scratch.len() - HEADER_LEN);
                assert_eq!(h.flags.0 & Flags::COMPRESSED != 0, compress && v == big);
            }
        }
    }
}
