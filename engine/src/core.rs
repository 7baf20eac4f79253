//! The sans-I/O connection core: authentication state, heartbeat deadlines and the
//! decision of what each inbound frame means. No sockets, no clock (time is an
//! argument), no randomness (nonces are arguments) — so it is tested deterministically.
//!
//! The shard glue feeds it frames and ticks and carries out what it returns.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use conduit_protocol::native::{self, ArchivedAuthStep, ArchivedValueTree, AuthAccepted};
use conduit_protocol::v1::{self, V1Limits, V1Payload};
use conduit_protocol::{auth, Codec, Frame, FrameKind, Value, ValueLimits, WireError};

use crate::id::ConnectionId;

/// The server version reported to clients at login.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Settings the core needs, shared by every connection of a server.
#[derive(Debug)]
pub struct CoreConfig {
    /// The password, for native proofs.
    pub password: String,
    /// `sha256(password)` as lowercase hex, for netconduit-v1 logins.
    pub v1_password_hash: String,
    /// Server name sent at login.
    pub server_name: String,
    /// Close connections that have not authenticated after this long.
    pub auth_timeout: Duration,
    /// Ping connections idle this long.
    pub heartbeat_interval: Duration,
    /// Close connections silent this long.
    pub heartbeat_timeout: Duration,
    /// Bounds on decoded payloads.
    pub value_limits: ValueLimits,
    /// Bounds on v1 payloads (decompression included).
    pub v1_limits: V1Limits,
}

/// Why a connection is closed; each maps to what (if anything) the peer is told.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// A frame other than authentication arrived before authentication.
    NotAuthenticated,
    /// The peer broke the protocol.
    Protocol(&'static str),
    /// Silent past `heartbeat_timeout`.
    HeartbeatTimeout,
    /// The outbound queue passed its limit.
    SlowConsumer,
    /// Kicked by the application.
    Kicked,
    /// The server is stopping.
    ServerStopping,
    /// The server is at `max_connections`.
    ServerFull,
    /// A socket error.
    Io(String),
}

impl CloseReason {
    /// The reason text sent to the peer, where the protocol has room for one.
    pub fn wire_text(&self) -> &str {
        match self {
            CloseReason::PeerClosed | CloseReason::PeerSaidGoodbye => "closed",
            CloseReason::AuthFailed => "Invalid password",
            CloseReason::AuthTimeout => "authentication timed out",
            CloseReason::NotAuthenticated => "authentication required",
            CloseReason::Protocol(why) => why,
            CloseReason::HeartbeatTimeout => "heartbeat timeout",
            CloseReason::SlowConsumer => "slow consumer: outbound queue limit reached",
            CloseReason::Kicked => "disconnected by the server",
            CloseReason::ServerStopping => "server shutting down",
            CloseReason::ServerFull => "server full: max_connections reached",
            CloseReason::Io(_) => "I/O error",
        }
    }
}

/// An inbound payload as handlers will see it.
#[derive(Debug)]
pub enum Body<'a> {
    /// Already decoded from MessagePack.
    Value(Value),
    /// A native archive, 8-byte aligned, still in the receive buffer.
    Native(&'a [u8]),
}

impl Body<'_> {
    /// The payload as a dynamic [`Value`].
    pub fn into_value(self, limits: ValueLimits) -> Result<Value, WireError> {
        match self {
            Body::Value(v) => Ok(v),
            Body::Native(bytes) => native::access::<ArchivedValueTree>(bytes)?.to_value(limits),
        }
    }
}

/// What an inbound frame means, for the glue to act on.
#[derive(Debug)]
pub enum Action<'a> {
    /// Nothing to do (a PONG, an ignored frame type…).
    None,
    /// Write this frame to the peer (PONG, the native challenge).
    Reply(Bytes),
    /// Authentication succeeded: write `reply` (AUTH_SUCCESS) alone, then register the
    /// connection and run the connect hooks.
    Authenticated {
        /// The AUTH_SUCCESS frame.
        reply: Bytes,
        /// The client's self-reported name, if any.
        client_name: Option<String>,
    },
    /// Authentication failed: after the brake delay, write `reply` and close.
    Refuse {
        /// The AUTH_FAILURE frame.
        reply: Bytes,
        /// Why.
        reason: CloseReason,
    },
    /// An application message.
    Message {
        /// Message type.
        name: Cow<'a, str>,
        /// Payload.
        body: Body<'a>,
        /// Correlation id (0 for v1; a native sender may set one to match the reply).
        correlation_id: u64,
    },
    /// An RPC call.
    Rpc {
        /// Method name; `None` when the v1 payload had none.
        method: Option<Cow<'a, str>>,
        /// Arguments.
        body: Body<'a>,
        /// Correlation id to echo.
        correlation_id: u64,
    },
    /// Close the connection, sending `reply` first if there is one.
    Close {
        /// A last frame (a reason), if the protocol has one for this case.
        reply: Option<Bytes>,
        /// Why.
        reason: CloseReason,
    },
}

/// What a heartbeat tick decided for one connection.
#[derive(Debug, PartialEq)]
pub enum TickAction {
    /// Nothing due.
    None,
    /// Send this PING.
    Ping(Bytes),
    /// Close the connection.
    Close(CloseReason),
}

#[derive(Debug)]
enum AuthState {
    /// Waiting for the first AUTH_REQUEST.
    Start,
    /// Native: the challenge went out; waiting for the proof.
    Challenged { client_nonce: auth::Nonce },
    /// Logged in.
    Done,
}

/// Per-connection protocol state.
#[derive(Debug)]
pub struct ConnCore {
    config: Arc<CoreConfig>,
    id: ConnectionId,
    /// Chosen by the glue from a CSPRNG; used only by the native handshake.
    server_nonce: auth::Nonce,
    /// 128 hex characters (64 random bytes) for the v1 AUTH_SUCCESS.
    session_token: String,
    state: AuthState,
    codec: Option<Codec>,
    accepted_at: Instant,
    last_received: Instant,
    last_ping: Option<Instant>,
}

impl ConnCore {
    /// A core for a connection accepted at `now`.
    pub fn new(
        config: Arc<CoreConfig>,
        id: ConnectionId,
        server_nonce: auth::Nonce,
        session_token: String,
        now: Instant,
    ) -> ConnCore {
        ConnCore {
            config,
            id,
            server_nonce,
            session_token,
            state: AuthState::Start,
            codec: None,
            accepted_at: now,
            last_received: now,
            last_ping: None,
        }
    }

    /// Whether the connection has logged in.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, AuthState::Done)
    }

    /// The codec fixed by the first frame.
    pub fn codec(&self) -> Option<Codec> {
        self.codec
    }

    /// The limits payloads are decoded under.
    pub fn value_limits(&self) -> ValueLimits {
        self.config.value_limits
    }

    fn timestamp_ms() -> u64 {
        // Informational only; a clock before 1970 stamps 0.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// A frame of `kind` with no payload, in this connection's codec.
    pub fn empty_frame(&self, kind: FrameKind) -> Bytes {
        match self.codec.unwrap_or(Codec::V1) {
            Codec::V1 => v1::Encoder::new(Self::timestamp_ms()).empty(kind),
            Codec::Native => native::Encoder::new(Self::timestamp_ms()).empty(kind),
        }
    }

    /// An AUTH_FAILURE (or, after login, a CLOSE) carrying `reason`, in this
    /// connection's codec.
    pub fn reason_frame(&self, reason: &CloseReason) -> Option<Bytes> {
        let ts = Self::timestamp_ms();
        let text = reason.wire_text();
        match (self.codec?, self.is_authenticated()) {
            (Codec::V1, false) => Some(v1::Encoder::new(ts).auth_failure(text)),
            // netconduit has no close frame it acts on; v1 peers just see the socket close.
            (Codec::V1, true) => None,
            (Codec::Native, false) => native::Encoder::new(ts).auth_failure(text).ok(),
            (Codec::Native, true) => native::Encoder::new(ts).close(text).ok(),
        }
    }

    /// What `frame`, received at `now`, means.
    pub fn on_frame<'a>(&mut self, frame: Frame<'a>, now: Instant) -> Action<'a> {
        self.last_received = now;
        self.codec = Some(frame.header.codec);
        match self.state {
            AuthState::Done => self.after_auth(frame),
            _ => self.during_auth(frame),
        }
    }

    /// Learns the codec from the header of a frame the decoder refused (see
    /// `FrameDecoder::front_codec`), so the refusal can be written in the peer's codec.
    /// Ignored once a frame has fixed the codec.
    pub fn note_codec(&mut self, codec: Codec) {
        self.codec.get_or_insert(codec);
    }

    /// Closes for a protocol error, with a reason frame where there is one.
    pub fn protocol_error(&self, err: &WireError) -> Action<'static> {
        let reason = CloseReason::Protocol(err.close_reason());
        Action::Close {
            reply: self.reason_frame(&reason),
            reason,
        }
    }

    fn refuse(&self, reason: CloseReason) -> Action<'static> {
        match self.reason_frame(&reason) {
            Some(reply) => Action::Refuse { reply, reason },
            None => Action::Close {
                reply: None,
                reason,
            },
        }
    }

    fn during_auth<'a>(&mut self, frame: Frame<'a>) -> Action<'a> {
        if frame.header.kind != FrameKind::AuthRequest {
            let reason = CloseReason::NotAuthenticated;
            return Action::Close {
                reply: self.reason_frame(&reason),
                reason,
            };
        }
        match frame.header.codec {
            Codec::V1 => self.v1_auth(frame),
            Codec::Native => self.native_auth(frame),
        }
    }

    fn v1_auth<'a>(&mut self, frame: Frame<'a>) -> Action<'a> {
        let (hash, client_name) =
            match v1::decode(&frame.header, frame.payload, &self.config.v1_limits) {
                Ok(V1Payload::AuthRequest {
                    password_hash,
                    client_name,
                    ..
                }) => (password_hash, client_name),
                Ok(_) => return self.protocol_error(&WireError::Msgpack("not an auth request")),
                Err(e) => return self.protocol_error(&e),
            };
        if !auth::v1_verify(&self.config.v1_password_hash, &hash) {
            return self.refuse(CloseReason::AuthFailed);
        }
        self.state = AuthState::Done;
        let reply = v1::Encoder::new(Self::timestamp_ms()).auth_success(
            &self.session_token,
            &self.config.server_name,
            SERVER_VERSION,
        );
        Action::Authenticated { reply, client_name }
    }

    fn native_auth<'a>(&mut self, frame: Frame<'a>) -> Action<'a> {
        let step = match native::access::<ArchivedAuthStep>(frame.payload) {
            Ok(s) => s,
            Err(e) => return self.protocol_error(&e),
        };
        let enc = native::Encoder::new(Self::timestamp_ms());
        match (&self.state, step) {
            (AuthState::Start, ArchivedAuthStep::Hello(hello)) => {
                self.state = AuthState::Challenged {
                    client_nonce: hello.client_nonce,
                };
                match enc.auth_step(&native::AuthStep::Challenge(self.server_nonce)) {
                    Ok(reply) => Action::Reply(reply),
                    Err(e) => self.protocol_error(&e),
                }
            }
            (AuthState::Challenged { client_nonce }, ArchivedAuthStep::Proof(proof)) => {
                let password = self.config.password.as_bytes();
                if !auth::verify_client_proof(password, &self.server_nonce, client_nonce, proof) {
                    return self.refuse(CloseReason::AuthFailed);
                }
                let accepted = AuthAccepted {
                    server_proof: auth::server_proof(password, &self.server_nonce, client_nonce),
                    connection_id: self.id.as_u64(),
                    server_name: self.config.server_name.clone(),
                    server_version: SERVER_VERSION.to_owned(),
                };
                self.state = AuthState::Done;
                match enc.auth_accepted(&accepted) {
                    Ok(reply) => Action::Authenticated {
                        reply,
                        client_name: None,
                    },
                    Err(e) => self.protocol_error(&e),
                }
            }
            _ => self.protocol_error(&WireError::Shape {
                kind: "AUTH_REQUEST",
                problem: "handshake step out of order",
            }),
        }
    }

    fn after_auth<'a>(&mut self, frame: Frame<'a>) -> Action<'a> {
        let header = frame.header;
        match header.kind {
            FrameKind::Ping => Action::Reply(self.empty_frame(FrameKind::Pong)),
            FrameKind::Message | FrameKind::RpcRequest => match header.codec {
                Codec::V1 => self.v1_call(frame),
                Codec::Native => match native::split_route(frame.payload) {
                    Ok((name, body)) if header.kind == FrameKind::Message => Action::Message {
                        name: Cow::Borrowed(name),
                        body: Body::Native(body),
                        correlation_id: header.correlation_id,
                    },
                    Ok((method, body)) => Action::Rpc {
                        method: Some(Cow::Borrowed(method)),
                        body: Body::Native(body),
                        correlation_id: header.correlation_id,
                    },
                    Err(e) => self.protocol_error(&e),
                },
            },
            FrameKind::Close => Action::Close {
                reply: None,
                reason: CloseReason::PeerSaidGoodbye,
            },
            // PONG is life; a second AUTH_REQUEST, ACK, NACK, CLOSE_ACK, PAUSE, RESUME
            // and RPC_LIST are ignored, as netconduit does.
            _ => Action::None,
        }
    }

    fn v1_call<'a>(&mut self, frame: Frame<'a>) -> Action<'a> {
        let header = frame.header;
        match v1::decode(&header, frame.payload, &self.config.v1_limits) {
            Ok(V1Payload::Message { name, data }) => Action::Message {
                name: Cow::Owned(name),
                body: Body::Value(data),
                correlation_id: 0,
            },
            Ok(V1Payload::RpcRequest { method, params }) => Action::Rpc {
                method: method.map(Cow::Owned),
                body: Body::Value(params),
                correlation_id: header.correlation_id,
            },
            // netconduit ignores a MESSAGE whose payload is not a map.
            Err(WireError::Shape { .. }) if header.kind == FrameKind::Message => Action::None,
            Ok(_) => Action::None,
            Err(e) => self.protocol_error(&e),
        }
    }

    /// The heartbeat and auth-timeout decision at `now`.
    pub fn on_tick(&mut self, now: Instant) -> TickAction {
        if !self.is_authenticated() {
            if now.saturating_duration_since(self.accepted_at) >= self.config.auth_timeout {
                return TickAction::Close(CloseReason::AuthTimeout);
            }
            return TickAction::None;
        }
        let silent = now.saturating_duration_since(self.last_received);
        if silent >= self.config.heartbeat_timeout {
            return TickAction::Close(CloseReason::HeartbeatTimeout);
        }
        let ping_due = self
            .last_ping
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.heartbeat_interval);
        if silent >= self.config.heartbeat_interval && ping_due {
            self.last_ping = Some(now);
            return TickAction::Ping(self.empty_frame(FrameKind::Ping));
        }
        TickAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_protocol::native::{ArchivedAuthAccepted, AuthStep, Hello, ValueTree};
    use conduit_protocol::{DecoderLimits, FrameDecoder};

    fn config() -> Arc<CoreConfig> {
        Arc::new(CoreConfig {
            password: "pw".into(),
            v1_password_hash: auth::v1_password_hash("pw"),
            server_name: "S".into(),
            auth_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(3),
            value_limits: ValueLimits::default(),
            v1_limits: V1Limits::default(),
        })
    }

    fn core(t0: Instant) -> ConnCore {
        ConnCore::new(
            config(),
            ConnectionId::from_u64(9),
            [5; 32],
            "ab".repeat(64),
            t0,
        )
    }

    /// Feeds one encoded frame to the core, returning the action's kind and any frame.
    fn feed(core: &mut ConnCore, bytes: &[u8], now: Instant) -> (String, Option<Bytes>) {
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(bytes);
        let f = d.next_frame().unwrap().unwrap();
        match core.on_frame(f, now) {
            Action::None => ("none".into(), None),
            Action::Reply(b) => ("reply".into(), Some(b)),
            Action::Authenticated { reply, .. } => ("authenticated".into(), Some(reply)),
            Action::Refuse { reply, .. } => ("refuse".into(), Some(reply)),
            Action::Message { name, .. } => (format!("message {name}"), None),
            Action::Rpc { method, .. } => (format!("rpc {method:?}"), None),
            Action::Close { reply, reason } => (format!("close {reason:?}"), reply),
        }
    }

    fn v1_login(core: &mut ConnCore, now: Instant) {
        let hash = auth::v1_password_hash("pw");
        let (kind, _) = feed(
            core,
            &v1::Encoder::new(0).auth_request(&hash, "c", "1"),
            now,
        );
        assert_eq!(kind, "authenticated");
    }

    #[test]
    fn v1_login_and_wrong_password() {
        let t0 = Instant::now();
        let mut c = core(t0);
        v1_login(&mut c, t0);
        assert!(c.is_authenticated());
        let mut c = core(t0);
        let bad = v1::Encoder::new(0).auth_request("00", "c", "1");
        assert_eq!(feed(&mut c, &bad, t0).0, "refuse");
        assert!(!c.is_authenticated());
    }

    #[test]
    fn native_challenge_response() {
        let t0 = Instant::now();
        let mut c = core(t0);
        let enc = native::Encoder::new(0);
        let hello = AuthStep::Hello(Hello {
            client_nonce: [1; 32],
            client_name: "c".into(),
            client_version: "1".into(),
        });
        let (kind, challenge) = feed(&mut c, &enc.auth_step(&hello).unwrap(), t0);
        assert_eq!(kind, "reply");
        assert!(challenge.is_some());
        // A proof for another server nonce (a replayed handshake) fails.
        let replayed = auth::client_proof(b"pw", &[6; 32], &[1; 32]);
        let mut c2 = core(t0);
        feed(&mut c2, &enc.auth_step(&hello).unwrap(), t0);
        assert_eq!(
            feed(
                &mut c2,
                &enc.auth_step(&AuthStep::Proof(replayed)).unwrap(),
                t0
            )
            .0,
            "refuse"
        );
        let proof = auth::client_proof(b"pw", &[5; 32], &[1; 32]);
        let (kind, ok) = feed(&mut c, &enc.auth_step(&AuthStep::Proof(proof)).unwrap(), t0);
        assert_eq!(kind, "authenticated");
        let ok = ok.unwrap();
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(&ok);
        let f = d.next_frame().unwrap().unwrap();
        let acc = native::access::<ArchivedAuthAccepted>(f.payload).unwrap();
        assert_eq!(acc.connection_id.to_native(), 9);
        assert!(auth::verify_server_proof(
            b"pw",
            &[5; 32],
            &[1; 32],
            &acc.server_proof
        ));
    }

    #[test]
    fn handshake_steps_out_of_order_close() {
        let t0 = Instant::now();
        let enc = native::Encoder::new(0);
        let mut c = core(t0);
        let proof = AuthStep::Proof([0; 32]);
        assert!(feed(&mut c, &enc.auth_step(&proof).unwrap(), t0)
            .0
            .starts_with("close"));
    }

    #[test]
    fn frames_before_auth_close_and_after_auth_dispatch() {
        let t0 = Instant::now();
        let mut c = core(t0);
        let msg = v1::Encoder::new(0).message("chat", &Value::map());
        assert!(feed(&mut c, &msg, t0)
            .0
            .starts_with("close NotAuthenticated"));
        let mut c = core(t0);
        v1_login(&mut c, t0);
        assert_eq!(feed(&mut c, &msg, t0).0, "message chat");
        let rpc = v1::Encoder::new(0).rpc_request(3, "add", &Value::map());
        assert_eq!(feed(&mut c, &rpc, t0).0, "rpc Some(\"add\")");
        let ping = v1::Encoder::new(0).empty(FrameKind::Ping);
        assert_eq!(feed(&mut c, &ping, t0).0, "reply");
        // A second login and unused frame types are ignored.
        let again = v1::Encoder::new(0).auth_request("x", "c", "1");
        assert_eq!(feed(&mut c, &again, t0).0, "none");
        // A MESSAGE whose payload is not a map is ignored, as netconduit does.
        let odd = v1::Encoder::new(0).frame(FrameKind::Message, 0, |o| o.push(0x05));
        assert_eq!(feed(&mut c, &odd, t0).0, "none");
    }

    #[test]
    fn heartbeat_schedule() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = core(t0);
        // Before login: only the auth deadline matters.
        assert_eq!(c.on_tick(t0 + s(4)), TickAction::None);
        assert_eq!(
            c.on_tick(t0 + s(5)),
            TickAction::Close(CloseReason::AuthTimeout)
        );
        let mut c = core(t0);
        v1_login(&mut c, t0);
        assert_eq!(c.on_tick(t0 + Duration::from_millis(999)), TickAction::None);
        assert!(matches!(c.on_tick(t0 + s(1)), TickAction::Ping(_)));
        // One ping per interval, not one per tick.
        assert_eq!(
            c.on_tick(t0 + Duration::from_millis(1500)),
            TickAction::None
        );
        assert!(matches!(c.on_tick(t0 + s(2)), TickAction::Ping(_)));
        // Any frame is life.
        let pong = v1::Encoder::new(0).empty(FrameKind::Pong);
        feed(&mut c, &pong, t0 + Duration::from_millis(2500));
        assert_eq!(
            c.on_tick(t0 + s(5)),
            TickAction::Ping(c.empty_frame(FrameKind::Ping))
        );
        assert_eq!(
            c.on_tick(t0 + Duration::from_millis(5500)),
            TickAction::Close(CloseReason::HeartbeatTimeout)
        );
    }

    #[test]
    fn native_body_limits_apply() {
        let t0 = Instant::now();
        let mut c = core(t0);
        let enc = native::Encoder::new(0);
        let mut nested = Value::Nil;
        for _ in 0..100 {
            nested = Value::Array(vec![nested]);
        }
        let deep = enc.message("m", &ValueTree::from_value(&nested)).unwrap();
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(&deep);
        let f = d.next_frame().unwrap().unwrap();
        match c.on_frame(f, t0) {
            Action::Close { .. } => {} // not logged in yet
            other => panic!("{other:?}"),
        }
        let body = Body::Native(&deep[40..]);
        assert!(body.into_value(ValueLimits::default()).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// No sequence of frames, valid or not, makes the core panic; it stays
        /// unauthenticated unless a correct login happened.
        #[test]
        fn arbitrary_frame_sequences_never_panic(
            frames in proptest::collection::vec(
                (1u16..=16, proptest::prelude::any::<bool>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)),
                0..20,
            ),
        ) {
            let t0 = Instant::now();
            let mut c = core(t0);
            for (i, (kind, native_codec, mut body)) in frames.into_iter().enumerate() {
                let codec = if native_codec { Codec::Native } else { Codec::V1 };
                if native_codec {
                    body.resize(body.len().next_multiple_of(8), 0);
                }
                let mut h = conduit_protocol::Header::new(codec, FrameKind::from_code(kind).unwrap());
                h.length = body.len() as u32;
                let mut bytes = h.encode().to_vec();
                bytes.extend_from_slice(&body);
                let mut d = FrameDecoder::new(DecoderLimits::default());
                d.feed(&bytes);
                if let Ok(Some(f)) = d.next_frame() {
                    let _ = c.on_frame(f, t0 + Duration::from_millis(i as u64));
                }
                let _ = c.on_tick(t0 + Duration::from_millis(i as u64 * 300));
                proptest::prop_assert!(!c.is_authenticated());
            }
        }
    }
}
