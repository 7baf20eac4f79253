//! The client's side of the protocol without I/O, clock or randomness: what a frame
//! received after login means, and the heartbeat rule. Encoding and the login
//! handshake are the protocol crate's ([`conduit_protocol::Encoder`],
//! [`conduit_protocol::handshake::ClientHandshake`]), shared with the server. The
//! async glue in `loops.rs` moves the bytes; everything here is tested
//! deterministically.

use std::time::{Duration, Instant};

use conduit_protocol::handshake::failure_reason;
use conduit_protocol::native::{self, ArchivedRpcFailure, ArchivedValueTree};
use conduit_protocol::v1::{self, V1Limits, V1Payload};
use conduit_protocol::{Codec, Frame, FrameKind, Value, ValueLimits, WireError};

use super::error::ClientError;

/// An error the server answered a call with.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteError {
    /// netconduit's error code.
    pub code: i64,
    /// The server's message.
    pub message: String,
    /// Structured details, when the server sent any.
    pub details: Option<Value>,
}

impl From<RemoteError> for ClientError {
    fn from(e: RemoteError) -> ClientError {
        ClientError::Rpc {
            code: e.code,
            message: e.message,
            details: e.details,
        }
    }
}

/// What a frame received after login means.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    Ping,
    Pong,
    /// The answer to call `corr`.
    Reply {
        /// The call's correlation id.
        corr: u64,
        /// The answer, or the server's error.
        result: Result<Value, RemoteError>,
    },
    /// A message; `corr` is non-zero only on a native `<name>_response` to a request.
    Message {
        /// The message type.
        name: String,
        /// The message data.
        data: Value,
        /// The request's correlation id, or 0.
        corr: u64,
    },
    /// The server announced it is closing.
    Goodbye(String),
    /// Nothing for the client (PAUSE, ACK, a second AUTH_SUCCESS, …).
    Ignore,
}

/// Interprets a frame received after login.
pub fn interpret(
    frame: &Frame<'_>,
    value_limits: ValueLimits,
    v1_limits: &V1Limits,
) -> Result<Inbound, WireError> {
    let h = frame.header;
    match h.kind {
        FrameKind::Ping => return Ok(Inbound::Ping),
        FrameKind::Pong => return Ok(Inbound::Pong),
        FrameKind::Close | FrameKind::AuthFailure => {
            return Ok(Inbound::Goodbye(failure_reason(frame, v1_limits)))
        }
        _ => {}
    }
    match h.codec {
        Codec::Native => match h.kind {
            FrameKind::RpcResponse => Ok(Inbound::Reply {
                corr: h.correlation_id,
                result: Ok(
                    native::access::<ArchivedValueTree>(frame.payload)?.to_value(value_limits)?
                ),
            }),
            FrameKind::RpcError => {
                let f = native::access::<ArchivedRpcFailure>(frame.payload)?;
                let details = f.details.to_value(value_limits)?;
                Ok(Inbound::Reply {
                    corr: h.correlation_id,
                    result: Err(RemoteError {
                        code: i64::from(f.code.to_native()),
                        message: f.message.as_str().to_owned(),
                        details: (!details.is_nil()).then_some(details),
                    }),
                })
            }
            FrameKind::Message => {
                let (name, body) = native::split_route(frame.payload)?;
                let data = native::access::<ArchivedValueTree>(body)?.to_value(value_limits)?;
                Ok(Inbound::Message {
                    name: name.to_owned(),
                    data,
                    corr: h.correlation_id,
                })
            }
            _ => Ok(Inbound::Ignore),
        },
        Codec::V1 => match v1::decode(&h, frame.payload, v1_limits) {
            Ok(V1Payload::Message { name, data }) => Ok(Inbound::Message {
                name,
                data,
                corr: 0,
            }),
            Ok(V1Payload::RpcResponse { success, result }) => Ok(Inbound::Reply {
                corr: h.correlation_id,
                result: v1_envelope(success, result),
            }),
            // netconduit ignores a MESSAGE whose payload is not a map; so do we.
            Err(WireError::Shape { .. }) if h.kind == FrameKind::Message => Ok(Inbound::Ignore),
            Ok(_) => Ok(Inbound::Ignore),
            Err(e) => Err(e),
        },
    }
}

/// Unwraps netconduit's double envelope: `{success, result: {success, data}}` or
/// `{success, result: {success: false, error, code, details?}}`.
fn v1_envelope(outer_success: bool, inner: Value) -> Result<Value, RemoteError> {
    let failure = |inner: &Value| RemoteError {
        code: inner.get("code").and_then(Value::as_i64).unwrap_or(1000),
        message: inner
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("RPC failed")
            .to_owned(),
        details: inner.get("details").filter(|d| !d.is_nil()).cloned(),
    };
    if !outer_success {
        return Err(failure(&inner));
    }
    match inner.get("success").and_then(Value::as_bool) {
        Some(true) => Ok(match inner {
            Value::Map(entries) => entries
                .into_iter()
                .find(|(k, _)| k == "data")
                .map(|(_, v)| v)
                .unwrap_or(Value::Nil),
            other => other,
        }),
        Some(false) => Err(failure(&inner)),
        // Not netconduit's shape: hand the whole result over rather than guess.
        None => Ok(inner),
    }
}

/// What the heartbeat asks for at a tick.
#[derive(Debug, PartialEq, Eq)]
pub enum Tick {
    None,
    Ping,
    Close,
}

/// The heartbeat rule of the server core, from the client's side: ping a server silent
/// for `interval` (at most once per interval), close one silent for `timeout`. Any frame
/// counts as life.
#[derive(Debug)]
pub struct Heartbeat {
    /// Silence after which the server is pinged.
    interval: Duration,
    /// Silence after which the connection is closed.
    timeout: Duration,
    /// When the server was last heard from.
    last_received: Instant,
    /// When the last ping went out, so a silent server gets one per interval at most.
    last_ping: Option<Instant>,
}

impl Heartbeat {
    pub fn new(interval: Duration, timeout: Duration, now: Instant) -> Heartbeat {
        Heartbeat {
            interval,
            timeout,
            last_received: now,
            last_ping: None,
        }
    }

    pub fn on_receive(&mut self, now: Instant) {
        self.last_received = now;
    }

    pub fn on_tick(&mut self, now: Instant) -> Tick {
        let silent = now.saturating_duration_since(self.last_received);
        if silent >= self.timeout {
            return Tick::Close;
        }
        let ping_due = self
            .last_ping
            .is_none_or(|t| now.saturating_duration_since(t) >= self.interval);
        if silent >= self.interval && ping_due {
            self.last_ping = Some(now);
            return Tick::Ping;
        }
        Tick::None
    }

    /// The earliest moment `on_tick` could ask for something.
    pub fn next_check(&self) -> Instant {
        let close_at = self.last_received + self.timeout;
        let mut ping_at = self.last_received + self.interval;
        if let Some(p) = self.last_ping {
            ping_at = ping_at.max(p + self.interval);
        }
        close_at.min(ping_at)
    }
}

#[cfg(test)]
mod tests {
    // The tests that ran the client handshake against the server's sans-I/O core
    // (`handshakes_against_the_server_core`, `a_forged_server_proof_is_refused`) went
    // with the handshake to `conduit_protocol::handshake`, whose tests run both sides;
    // the mapping of its errors is tested in `error.rs`.

    use conduit_protocol::native::ValueTree;
    use conduit_protocol::{DecoderLimits, Encoder, FrameDecoder};

    use super::*;

    fn decode_one(bytes: &[u8]) -> Inbound {
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(bytes);
        let f = d.next_frame().unwrap().unwrap();
        interpret(&f, ValueLimits::default(), &V1Limits::default()).unwrap()
    }

    #[test]
    fn v1_envelopes() {
        let enc = v1::Encoder::new(0);
        assert_eq!(
            decode_one(&enc.rpc_success(3, &Value::Int(30))),
            Inbound::Reply {
                corr: 3,
                result: Ok(Value::Int(30))
            }
        );
        let details = Value::map().with("field", "a");
        assert_eq!(
            decode_one(&enc.rpc_failure(4, "RPC method not found: x", 4000, Some(&details))),
            Inbound::Reply {
                corr: 4,
                result: Err(RemoteError {
                    code: 4000,
                    message: "RPC method not found: x".into(),
                    details: Some(details),
                })
            }
        );
        assert_eq!(
            decode_one(&enc.message("chat", &Value::from("hi"))),
            Inbound::Message {
                name: "chat".into(),
                data: Value::from("hi"),
                corr: 0
            }
        );
        assert_eq!(decode_one(&enc.empty(FrameKind::Ping)), Inbound::Ping);
    }

    #[test]
    fn native_replies_and_messages() {
        let enc = native::Encoder::new(0);
        let tree = ValueTree::from_value(&Value::map().with("x", 1));
        assert_eq!(
            decode_one(&enc.rpc_response(7, &tree).unwrap()),
            Inbound::Reply {
                corr: 7,
                result: Ok(Value::map().with("x", 1))
            }
        );
        let failure = native::RpcFailure {
            code: 1001,
            message: "Error in f: boom".into(),
            details: ValueTree::from_value(&Value::Nil),
        };
        assert_eq!(
            decode_one(&enc.rpc_error(8, &failure).unwrap()),
            Inbound::Reply {
                corr: 8,
                result: Err(RemoteError {
                    code: 1001,
                    message: "Error in f: boom".into(),
                    details: None
                })
            }
        );
        let frame = Encoder::new(Codec::Native, 0)
            .message(9, "echo_response", &Value::from("hi"))
            .unwrap();
        assert_eq!(
            decode_one(&frame),
            Inbound::Message {
                name: "echo_response".into(),
                data: Value::from("hi"),
                corr: 9
            }
        );
        assert_eq!(
            decode_one(&enc.close("server shutting down").unwrap()),
            Inbound::Goodbye("server shutting down".into())
        );
    }

    #[test]
    fn heartbeat_follows_the_server_rule() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut hb = Heartbeat::new(s(30), s(90), t0);
        assert_eq!(hb.next_check(), t0 + s(30));
        assert_eq!(hb.on_tick(t0 + s(29)), Tick::None);
        assert_eq!(hb.on_tick(t0 + s(30)), Tick::Ping);
        // At most one ping per interval while silent.
        assert_eq!(hb.on_tick(t0 + s(31)), Tick::None);
        assert_eq!(hb.next_check(), t0 + s(60));
        assert_eq!(hb.on_tick(t0 + s(60)), Tick::Ping);
        assert_eq!(hb.on_tick(t0 + s(90)), Tick::Close);
        // Any frame is life.
        let mut hb = Heartbeat::new(s(30), s(90), t0);
        hb.on_receive(t0 + s(80));
        assert_eq!(hb.on_tick(t0 + s(100)), Tick::None);
        assert_eq!(hb.next_check(), t0 + s(110));
    }
}
