//! The client's side of the protocol without I/O, clock or randomness: frame encoding,
//! the login handshake of both codecs, what an inbound frame means, and the heartbeat
//! rule. The async glue in `mod.rs` moves the bytes; everything here is tested
//! deterministically (the handshake against the server's own sans-I/O core).

use std::time::{Duration, Instant};

use bytes::Bytes;
use conduit_protocol::native::{
    self, ArchivedAuthAccepted, ArchivedAuthStep, ArchivedReason, ArchivedRpcFailure,
    ArchivedValueTree, ValueTree,
};
use conduit_protocol::v1::{self, V1Limits, V1Payload};
use conduit_protocol::{auth, Codec, Frame, FrameKind, Value, ValueLimits, WireError};

use super::error::ClientError;

/// Milliseconds since the Unix epoch for frame headers (informational only).
pub fn timestamp_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Encodes the frames a client sends, in one codec, refusing frames over the limit.
#[derive(Clone, Copy, Debug)]
pub struct Encoder {
    /// The connection's codec.
    pub codec: Codec,
    /// Largest payload the server accepts; larger frames are refused before sending.
    pub max_frame_bytes: u32,
}

impl Encoder {
    fn check(&self, frame: Bytes) -> Result<Bytes, WireError> {
        let payload = frame.len().saturating_sub(conduit_protocol::HEADER_LEN);
        if payload > self.max_frame_bytes as usize {
            return Err(WireError::Oversize {
                length: payload as u64,
                max: self.max_frame_bytes.into(),
            });
        }
        Ok(frame)
    }

    /// RPC_REQUEST `method(params)`.
    pub fn rpc(&self, corr: u64, method: &str, params: &Value) -> Result<Bytes, WireError> {
        let ts = timestamp_ms();
        self.check(match self.codec {
            Codec::V1 => v1::Encoder::new(ts).rpc_request(corr, method, params),
            Codec::Native => native::Encoder::new(ts).rpc_request(
                corr,
                method,
                &ValueTree::from_value(params),
            )?,
        })
    }

    /// MESSAGE `name` with `data`. Native frames carry `corr` so the server's
    /// `<name>_response` can be matched to it; v1 frames carry 0, as netconduit sends.
    pub fn message(&self, corr: u64, name: &str, data: &Value) -> Result<Bytes, WireError> {
        let ts = timestamp_ms();
        self.check(match self.codec {
            Codec::V1 => v1::Encoder::new(ts).message(name, data),
            Codec::Native => native::Encoder::new(ts).frame(
                FrameKind::Message,
                corr,
                Some(name),
                &ValueTree::from_value(data),
            )?,
        })
    }

    /// A frame without payload (PING, PONG).
    pub fn empty(&self, kind: FrameKind) -> Bytes {
        let ts = timestamp_ms();
        match self.codec {
            Codec::V1 => v1::Encoder::new(ts).empty(kind),
            Codec::Native => native::Encoder::new(ts).empty(kind),
        }
    }

    /// A goodbye before closing (native only: netconduit has no close frame it acts on).
    pub fn goodbye(&self) -> Option<Bytes> {
        match self.codec {
            Codec::V1 => None,
            Codec::Native => native::Encoder::new(timestamp_ms())
                .close("client closing")
                .ok(),
        }
    }
}

/// What the server said at the end of a successful login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginInfo {
    /// The connection id (native logins only).
    pub connection_id: Option<u64>,
    /// The server's name (informational).
    pub server_name: String,
    /// The server's version (informational).
    pub server_version: String,
}

/// What to do after a handshake frame.
#[derive(Debug)]
pub enum Step {
    /// Send this frame and wait for the next one.
    Send(Bytes),
    /// Logged in.
    Done(LoginInfo),
}

#[derive(Debug)]
enum HandshakeState {
    Start,
    /// v1: AUTH_REQUEST sent.
    SentHash,
    /// Native: Hello sent.
    SentHello,
    /// Native: proof sent for this server nonce.
    SentProof {
        /// The challenge, needed again to check the server's proof.
        server_nonce: auth::Nonce,
    },
    Finished,
}

/// The login exchange of one connection attempt.
#[derive(Debug)]
pub struct Handshake {
    /// Which login to run.
    codec: Codec,
    /// The shared secret: hashed (v1) or proven (native).
    password: String,
    /// This attempt's nonce, mixed into both proofs (native).
    client_nonce: auth::Nonce,
    /// Client name sent at login.
    name: String,
    /// Client version sent at login.
    version: String,
    /// How far the exchange got.
    state: HandshakeState,
}

fn unexpected(problem: &'static str) -> ClientError {
    ClientError::Wire(WireError::Shape {
        kind: "login",
        problem,
    })
}

impl Handshake {
    /// A handshake; `client_nonce` must be fresh CSPRNG output (native logins).
    pub fn new(
        codec: Codec,
        password: &str,
        client_nonce: auth::Nonce,
        name: &str,
        version: &str,
    ) -> Handshake {
        Handshake {
            codec,
            password: password.to_owned(),
            client_nonce,
            name: name.to_owned(),
            version: version.to_owned(),
            state: HandshakeState::Start,
        }
    }

    /// The first frame to send.
    pub fn start(&mut self) -> Result<Bytes, ClientError> {
        let ts = timestamp_ms();
        match self.codec {
            Codec::V1 => {
                self.state = HandshakeState::SentHash;
                Ok(v1::Encoder::new(ts).auth_request(
                    &auth::v1_password_hash(&self.password),
                    &self.name,
                    &self.version,
                ))
            }
            Codec::Native => {
                self.state = HandshakeState::SentHello;
                let hello = native::AuthStep::Hello(native::Hello {
                    client_nonce: self.client_nonce,
                    client_name: self.name.clone(),
                    client_version: self.version.clone(),
                });
                Ok(native::Encoder::new(ts).auth_step(&hello)?)
            }
        }
    }

    /// Takes the server's next login frame.
    pub fn on_frame(&mut self, frame: &Frame<'_>, limits: &V1Limits) -> Result<Step, ClientError> {
        let kind = frame.header.kind;
        if kind == FrameKind::AuthFailure {
            self.state = HandshakeState::Finished;
            return Err(ClientError::AuthFailed(failure_reason(frame, limits)));
        }
        match (&self.state, frame.header.codec) {
            (HandshakeState::SentHash, Codec::V1) => {
                match v1::decode(&frame.header, frame.payload, limits)? {
                    V1Payload::AuthSuccess {
                        server_name,
                        server_version,
                        ..
                    } => {
                        self.state = HandshakeState::Finished;
                        Ok(Step::Done(LoginInfo {
                            connection_id: None,
                            server_name,
                            server_version,
                        }))
                    }
                    _ => Err(unexpected("expected AUTH_SUCCESS or AUTH_FAILURE")),
                }
            }
            (HandshakeState::SentHello, Codec::Native) if kind == FrameKind::AuthRequest => {
                let server_nonce = match native::access::<ArchivedAuthStep>(frame.payload)? {
                    ArchivedAuthStep::Challenge(n) => *n,
                    _ => return Err(unexpected("expected the server's challenge")),
                };
                let proof =
                    auth::client_proof(self.password.as_bytes(), &server_nonce, &self.client_nonce);
                self.state = HandshakeState::SentProof { server_nonce };
                Ok(Step::Send(
                    native::Encoder::new(timestamp_ms())
                        .auth_step(&native::AuthStep::Proof(proof))?,
                ))
            }
            (HandshakeState::SentProof { server_nonce }, Codec::Native)
                if kind == FrameKind::AuthSuccess =>
            {
                let accepted = native::access::<ArchivedAuthAccepted>(frame.payload)?;
                if !auth::verify_server_proof(
                    self.password.as_bytes(),
                    server_nonce,
                    &self.client_nonce,
                    &accepted.server_proof,
                ) {
                    self.state = HandshakeState::Finished;
                    return Err(ClientError::AuthFailed(
                        "the server could not prove it knows the password".into(),
                    ));
                }
                self.state = HandshakeState::Finished;
                Ok(Step::Done(LoginInfo {
                    connection_id: Some(accepted.connection_id.to_native()),
                    server_name: accepted.server_name.as_str().to_owned(),
                    server_version: accepted.server_version.as_str().to_owned(),
                }))
            }
            _ => Err(unexpected("unexpected frame during login")),
        }
    }
}

/// The reason text of an AUTH_FAILURE (or CLOSE) frame, best effort.
fn failure_reason(frame: &Frame<'_>, limits: &V1Limits) -> String {
    match frame.header.codec {
        Codec::V1 => match v1::decode(&frame.header, frame.payload, limits) {
            Ok(V1Payload::AuthFailure { reason }) => reason,
            Ok(V1Payload::Other { payload, .. }) => payload
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            _ => String::new(),
        },
        Codec::Native => native::access::<ArchivedReason>(frame.payload)
            .map(|r| r.reason.as_str().to_owned())
            .unwrap_or_default(),
    }
}

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
    use std::sync::Arc;

    use conduit_protocol::{DecoderLimits, FrameDecoder};

    use super::*;
    use crate::core::{Action, ConnCore, CoreConfig};
    use crate::id::ConnectionId;

    fn config(password: &str) -> Arc<CoreConfig> {
        Arc::new(CoreConfig {
            password: password.into(),
            v1_password_hash: auth::v1_password_hash(password),
            server_name: "S".into(),
            auth_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(90),
            value_limits: ValueLimits::default(),
            v1_limits: V1Limits::default(),
        })
    }

    /// Runs the client handshake against the server core, frame by frame.
    fn login(codec: Codec, client_pw: &str, server_pw: &str) -> Result<LoginInfo, ClientError> {
        let now = Instant::now();
        let mut server = ConnCore::new(
            config(server_pw),
            ConnectionId::from_u64(1 << 10),
            [9; 32],
            "t".repeat(128),
            now,
        );
        let mut hs = Handshake::new(codec, client_pw, [4; 32], "c", "1");
        let mut to_server = hs.start()?;
        let limits = V1Limits::default();
        loop {
            let mut d = FrameDecoder::new(DecoderLimits::default());
            d.feed(&to_server);
            let f = d.next_frame().unwrap().unwrap();
            let reply = match server.on_frame(f, now) {
                Action::Reply(b) => b,
                Action::Authenticated { reply, .. } => reply,
                Action::Refuse { reply, .. } => reply,
                other => panic!("server did {other:?}"),
            };
            let mut d = FrameDecoder::new(DecoderLimits::default());
            d.feed(&reply);
            let f = d.next_frame().unwrap().unwrap();
            match hs.on_frame(&f, &limits)? {
                Step::Send(b) => to_server = b,
                Step::Done(info) => return Ok(info),
            }
        }
    }

    #[test]
    fn handshakes_against_the_server_core() {
        let info = login(Codec::Native, "pw", "pw").unwrap();
        assert_eq!(info.connection_id, Some(1 << 10));
        assert_eq!(info.server_name, "S");
        let info = login(Codec::V1, "pw", "pw").unwrap();
        assert_eq!(info.connection_id, None);
        assert_eq!(info.server_name, "S");
        for codec in [Codec::Native, Codec::V1] {
            match login(codec, "wrong", "pw") {
                Err(ClientError::AuthFailed(r)) => assert_eq!(r, "Invalid password"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_forged_server_proof_is_refused() {
        let mut hs = Handshake::new(Codec::Native, "pw", [4; 32], "c", "1");
        hs.start().unwrap();
        let enc = native::Encoder::new(0);
        let challenge = enc
            .auth_step(&native::AuthStep::Challenge([1; 32]))
            .unwrap();
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(&challenge);
        let f = d.next_frame().unwrap().unwrap();
        assert!(matches!(
            hs.on_frame(&f, &V1Limits::default()),
            Ok(Step::Send(_))
        ));
        let forged = enc
            .auth_accepted(&native::AuthAccepted {
                server_proof: [0; 32],
                connection_id: 5,
                server_name: "evil".into(),
                server_version: "0".into(),
            })
            .unwrap();
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(&forged);
        let f = d.next_frame().unwrap().unwrap();
        assert!(matches!(
            hs.on_frame(&f, &V1Limits::default()),
            Err(ClientError::AuthFailed(_))
        ));
    }

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
        let frame = Encoder {
            codec: Codec::Native,
            max_frame_bytes: 1 << 20,
        }
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
    fn oversize_frames_are_refused_before_sending() {
        let enc = Encoder {
            codec: Codec::V1,
            max_frame_bytes: 64,
        };
        assert!(matches!(
            enc.message(0, "m", &Value::from("x".repeat(100))),
            Err(WireError::Oversize { .. })
        ));
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
