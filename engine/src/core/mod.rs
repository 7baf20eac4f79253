//! The sans-I/O connection core: every decision about one connection, and every byte it
//! sends. No sockets, no clock (time is an argument), no randomness (nonces are
//! arguments), no runtime — so every case, hostile ones included, is tested
//! deterministically on an in-memory pair in virtual time (`tests.rs`).
//!
//! The glue (one backend under `rt/`) drives it:
//! * bytes received go into the connection's [`FrameDecoder`] (the glue owns the
//!   receive buffer, so reads need no borrow of the core), then [`ConnCore::poll_event`]
//!   takes frames out of it and says what they mean: a login, a handler to call, a close;
//! * a handler's result comes back through [`ConnCore::complete`], by call id;
//! * the shard's heartbeat tick calls [`ConnCore::on_tick`];
//! * everything to transmit — replies, pongs, pings, the handshake, reasons — is
//!   encoded here in the peer's codec and queued on the connection's [`Outbound`], which
//!   the glue's writer drains; the slow-consumer policy is applied there too
//!   ([`Outbound::offer`]).

mod close;
mod event;
mod frame_queue;
#[doc(hidden)]
pub mod fuzz;
mod notify;
pub mod outbound;
pub mod rate;
pub mod routes;
#[cfg(test)]
mod tests;
mod token;

use std::borrow::Cow;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use conduit_protocol::handshake::{HandshakeError, ServerCredentials, ServerHandshake, ServerStep};
use conduit_protocol::native;
use conduit_protocol::v1::{self, codes, V1Limits, V1Payload};
use conduit_protocol::{
    auth, Codec, DecoderLimits, Encoder, Frame, FrameDecoder, FrameKind, Value, ValueLimits,
    WireError,
};

pub use close::{Close, CloseReason, PeerMisbehaved};
pub use event::{Args, Call, CallId, CallKind, CoreCounters, Event, Failure, Outcome};
pub use notify::{LocalNotify, Signal};
pub use outbound::{Delivery, Outbound};
pub use rate::InboundRate;
pub use routes::{ArgForm, RouteTable, LISTALL};

/// The code of an RPC refused for the connection's inbound rate limit (netconduit's
/// codes have none; 4290 reads as "too many requests").
pub const RATE_LIMITED: i64 = 4290;

use crate::descriptor::SlowConsumerPolicy;
use crate::id::ConnectionId;
use crate::metrics::ShardMetrics;
use crate::tokens::{TokenClaims, Verifier};

/// The server version reported to clients at login.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Most handler calls of one connection the core tracks at once. The glue runs a
/// connection's handlers one after another (so frames are handled in order), which
/// keeps this at one; the bound makes a glue that did otherwise fail loudly instead of
/// growing a table.
pub const MAX_CALLS_IN_FLIGHT: usize = 64;

/// Settings the core needs, shared by every connection of a server.
#[derive(Debug)]
pub struct CoreConfig {
    /// What a login is checked against.
    pub creds: ServerCredentials,
    /// Close connections that have not authenticated after this long.
    pub auth_timeout: Duration,
    /// Ping connections idle this long.
    pub heartbeat_interval: Duration,
    /// Close connections silent this long.
    pub heartbeat_timeout: Duration,
    /// The brute-force brake before a login failure is answered.
    pub auth_failure_delay: Duration,
    /// netconduit-v1 post-login hold (zero: none).
    pub v1_post_auth_delay: Duration,
    /// Bounds on decoded payloads.
    pub value_limits: ValueLimits,
    /// Bounds on v1 payloads (decompression included).
    pub v1_limits: V1Limits,
    /// Decoder limits after login.
    pub decoder_limits: DecoderLimits,
    /// Largest frame accepted before login.
    pub max_auth_frame_bytes: u32,
    /// What happens when a frame does not fit a connection's outbound queue.
    pub slow_consumer: SlowConsumerPolicy,
    /// The outbound queue's byte limit.
    pub max_outbound_bytes: usize,
    /// Which names route to a handler.
    pub routes: RouteTable,
    /// Inbound limits per connection after login (off when neither is set).
    pub inbound_rate: InboundRate,
    /// What a frame over the inbound limits gets.
    pub rate_policy: crate::descriptor::RateLimitPolicy,
    /// Token logins, when configured.
    pub tokens: Option<Arc<Verifier>>,
    /// Leeway on a connection's token expiry, in milliseconds.
    pub token_leeway_ms: u64,
}

impl CoreConfig {
    /// The decoder a new connection starts with: only small authentication frames may
    /// arrive before login, so a header claiming more is refused before any buffer
    /// grows for it.
    pub fn new_decoder(&self) -> FrameDecoder {
        FrameDecoder::new(DecoderLimits {
            max_payload_bytes: self
                .decoder_limits
                .max_payload_bytes
                .min(self.max_auth_frame_bytes),
            ..self.decoder_limits
        })
    }
}

/// A call the core started and waits on.
#[derive(Debug)]
struct Pending {
    id: CallId,
    kind: CallKind,
    /// The reply's message type (`<type>_response`), for message calls; RPC replies
    /// need no name, so an RPC allocates nothing here.
    response: Option<Box<str>>,
    /// Echoed in the reply.
    correlation_id: u64,
}

/// Per-connection protocol state. `repr(C)`, in this order: what every frame reads or
/// writes first (the fewest cache lines per request), what login, errors and the
/// heartbeat read after.
#[derive(Debug)]
#[repr(C)]
pub struct ConnCore {
    /// Shared settings.
    config: Arc<CoreConfig>,
    /// Where every frame to the peer goes; drained by the glue's writer.
    out: Rc<Outbound>,
    /// Its shard's counters: frames in, and the calls the core answers itself.
    metrics: Arc<ShardMetrics>,
    /// Latest time passed in; time that goes backwards counts as none passing.
    now: Instant,
    /// Latest time a frame arrived (never moves backwards).
    last_received: Instant,
    /// Calls started and not yet completed: one inline, in the core's hot lines (the
    /// glue runs one at a time, see [`MAX_CALLS_IN_FLIGHT`], so no call allocates).
    pending: SmallVec<[Pending; 1]>,
    /// The next call id.
    next_call: u64,
    /// Set once the connection closes: nothing more is decided.
    closed: Option<CloseReason>,
    /// Fixed by the first frame (or the header of a refused first frame).
    codec: Option<Codec>,
    /// Set at login.
    authenticated: bool,
    /// The decoder's limit was raised to `max_frame_bytes` after login.
    full_frame_limit: bool,
    /// The inbound rate buckets, from login on (when limits are set).
    buckets: Option<rate::Buckets>,
    /// What was refused or dropped.
    counters: CoreCounters,
    /// This connection's id (reported to native clients at login).
    id: ConnectionId,
    /// The login exchange, until it ends: dropped at login, so a logged-in connection
    /// holds neither its nonce nor its session token.
    handshake: Option<Box<ServerHandshake>>,
    /// When the connection was accepted (auth deadline).
    accepted_at: Instant,
    /// Latest time a ping went out.
    last_ping: Option<Instant>,
    /// The token it logged in with (or last refreshed): its expiry closes the
    /// connection, its subject must stay the same on refresh.
    token: Option<Arc<TokenClaims>>,
}

impl ConnCore {
    /// A core for a connection accepted at `now`; `server_nonce` and `session_token`
    /// come from a CSPRNG.
    pub fn new(
        config: Arc<CoreConfig>,
        id: ConnectionId,
        server_nonce: auth::Nonce,
        session_token: String,
        now: Instant,
        metrics: Arc<ShardMetrics>,
    ) -> ConnCore {
        let out = Rc::new(Outbound::new(config.max_outbound_bytes));
        ConnCore {
            handshake: Some(Box::new(ServerHandshake::new(
                server_nonce,
                session_token,
                id.as_u64(),
            ))),
            config,
            id,
            authenticated: false,
            codec: None,
            full_frame_limit: false,
            out,
            accepted_at: now,
            last_received: now,
            last_ping: None,
            now,
            closed: None,
            pending: SmallVec::new(),
            next_call: 1,
            counters: CoreCounters::default(),
            buckets: None,
            token: None,
            metrics,
        }
    }

    /// The correlation id of a call in flight (what its reply echoes), for its span.
    pub fn correlation_of(&self, call: CallId) -> Option<u64> {
        self.pending
            .iter()
            .find(|p| p.id == call)
            .map(|p| p.correlation_id)
    }

    /// The outbound queue the glue's writer drains (and broadcasts fan out into).
    pub fn outbound(&self) -> &Rc<Outbound> {
        &self.out
    }

    /// Whether the connection has logged in.
    #[cfg(test)]
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// What the core refused or dropped so far.
    pub fn counters(&self) -> CoreCounters {
        self.counters
    }

    /// Calls started and not completed.
    #[cfg(test)]
    pub fn calls_in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Advances the core's clock; time that goes backwards is no time passing.
    fn advance(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }

    fn encoder(&self, timestamp_ms: u64) -> Encoder {
        Encoder::new(self.codec.unwrap_or(Codec::V1), timestamp_ms)
    }

    /// Queues a frame of the core's own (reply, pong, ping, handshake) under the
    /// slow-consumer policy. `Some` when the connection must now close.
    fn transmit(&mut self, frame: Result<bytes::Bytes, WireError>) -> Option<Close> {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(conn = %self.id, "frame not sent: cannot encode it: {e}");
                self.counters.frames_not_sent += 1;
                return None;
            }
        };
        match self.out.offer(frame, self.config.slow_consumer) {
            Delivery::Queued => None,
            Delivery::Dropped | Delivery::Closed => {
                self.counters.frames_not_sent += 1;
                None
            }
            Delivery::Disconnect => {
                self.counters.frames_not_sent += 1;
                Some(self.close(CloseReason::SlowConsumer, 0))
            }
        }
    }

    /// Closes the connection for `reason` (the peer closed, a kick, a timeout, a slow
    /// consumer seen by the glue…): decides the last frame and how the socket ends.
    /// Pending calls are forgotten: their results, if they come, are stale.
    pub fn close(&mut self, reason: CloseReason, timestamp_ms: u64) -> Close {
        self.closed.get_or_insert(reason);
        self.pending.clear();
        // Only a refused login, a broken protocol and an expired token are explained on
        // the wire: a kick or a stop already said what it had to (its last message), a
        // gone or silent peer cannot read, and a slow consumer is not read fast enough
        // to care.
        let explained = matches!(
            reason,
            CloseReason::AuthFailed | CloseReason::Misbehaved(_) | CloseReason::TokenExpired
        );
        let last = match (explained, self.codec) {
            (false, _) | (_, None) => None,
            (true, Some(codec)) => {
                let enc = Encoder::new(codec, timestamp_ms);
                let text = reason.wire_text();
                if self.authenticated {
                    enc.close(text).ok().flatten()
                } else {
                    enc.auth_failure(text).ok()
                }
            }
        };
        let last_after = if reason == CloseReason::AuthFailed {
            self.config.auth_failure_delay
        } else {
            Duration::ZERO
        };
        Close {
            reason,
            last,
            last_after,
        }
    }

    fn misbehaved(&mut self, m: PeerMisbehaved, timestamp_ms: u64) -> Close {
        tracing::debug!(conn = %self.id, "protocol error: {}", m.wire_text());
        self.close(CloseReason::Misbehaved(m), timestamp_ms)
    }

    /// Takes the next frame out of `decoder` and says what it means; `None` when no
    /// whole frame is buffered (or the connection is closed). Frames the core handles
    /// itself (pings, the handshake's middle step, `listall`, unknown methods…) are
    /// answered on the outbound queue and reported as [`Event::Handled`].
    pub fn poll_event<'d>(
        &mut self,
        decoder: &'d mut FrameDecoder,
        now: Instant,
        timestamp_ms: u64,
    ) -> Option<Event<'d>> {
        self.advance(now);
        if self.closed.is_some() {
            return None;
        }
        if self.authenticated && !self.full_frame_limit {
            decoder.set_max_payload_bytes(self.config.decoder_limits.max_payload_bytes);
            self.full_frame_limit = true;
        }
        let front_codec = decoder.front_codec();
        let frame = match decoder.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => return None,
            Err(e) => {
                // A first frame refused on its header still names the peer's codec:
                // answer in it.
                if let Some(codec) = front_codec {
                    self.codec.get_or_insert(codec);
                }
                return Some(Event::Close(self.misbehaved((&e).into(), timestamp_ms)));
            }
        };
        self.metrics.frames_in.inc();
        Some(self.on_frame(frame, timestamp_ms).unwrap_or(Event::Handled))
    }

    /// One frame; `None` when the core handled it entirely.
    fn on_frame<'d>(&mut self, frame: Frame<'d>, timestamp_ms: u64) -> Option<Event<'d>> {
        self.last_received = self.now;
        self.codec.get_or_insert(frame.header.codec);
        if !self.authenticated {
            return self.during_login(&frame, timestamp_ms);
        }
        // Any frame shows the peer read AUTH_SUCCESS: a held v1 writer may go.
        self.out.open_gate();
        let header = frame.header;
        if let Some(over) = self.over_rate(&frame, timestamp_ms) {
            return over;
        }
        match header.kind {
            FrameKind::Ping => {
                let pong = self.encoder(timestamp_ms).empty(FrameKind::Pong);
                self.transmit(pong).map(Event::Close)
            }
            FrameKind::Message | FrameKind::RpcRequest => match header.codec {
                Codec::V1 => self.v1_call(&frame, timestamp_ms),
                Codec::Native => match native::split_route(frame.payload) {
                    Ok((route, body)) => self.route(
                        header.kind,
                        Cow::Borrowed(route),
                        Body::Native(body),
                        header.correlation_id,
                        timestamp_ms,
                    ),
                    Err(e) => Some(Event::Close(self.misbehaved((&e).into(), timestamp_ms))),
                },
            },
            FrameKind::Close => Some(Event::Close(
                self.close(CloseReason::PeerSaidGoodbye, timestamp_ms),
            )),
            FrameKind::AuthRequest if self.token.is_some() => self.refresh(&frame, timestamp_ms),
            // PONG is life; a second AUTH_REQUEST, ACK, NACK, CLOSE_ACK, PAUSE, RESUME
            // and RPC_LIST are ignored, as netconduit does.
            _ => None,
        }
    }

    fn during_login<'d>(&mut self, frame: &Frame<'d>, timestamp_ms: u64) -> Option<Event<'d>> {
        if frame.header.kind != FrameKind::AuthRequest {
            return Some(Event::Close(
                self.misbehaved(PeerMisbehaved::NotAuthenticated, timestamp_ms),
            ));
        }
        let Some(handshake) = self.handshake.as_mut() else {
            return Some(Event::Close(
                self.misbehaved(PeerMisbehaved::HandshakeOutOfOrder, timestamp_ms),
            ));
        };
        let step = handshake.on_frame(
            frame,
            &self.config.creds,
            &self.config.v1_limits,
            timestamp_ms,
        );
        let step = match step {
            Ok(ServerStep::Token { token, client_name }) => {
                match self.check_token(&token, timestamp_ms) {
                    Ok((reply, claims)) => {
                        self.token = Some(claims);
                        Ok(ServerStep::Accepted { reply, client_name })
                    }
                    Err(HandshakeError::Rejected(_)) => Ok(ServerStep::Rejected),
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        if matches!(step, Ok(ServerStep::Accepted { .. })) {
            self.handshake = None;
        }
        match step {
            Ok(ServerStep::Send(challenge)) => self.transmit(Ok(challenge)).map(Event::Close),
            Ok(ServerStep::Accepted { reply, client_name }) => {
                self.authenticated = true;
                if self.config.inbound_rate.is_on() {
                    self.buckets = Some(rate::Buckets::new(&self.config.inbound_rate, self.now));
                }
                let codec = frame.header.codec;
                if let Some(close) = self.transmit(Ok(reply)) {
                    return Some(Event::Close(close));
                }
                if codec == Codec::V1 && !self.config.v1_post_auth_delay.is_zero() {
                    self.out
                        .hold_after_queued(self.now + self.config.v1_post_auth_delay);
                }
                Some(Event::Authenticated {
                    codec,
                    client_name,
                    token: self.token.clone(),
                })
            }
            Ok(ServerStep::Rejected | ServerStep::Token { .. }) => {
                tracing::info!(conn = %self.id, "authentication failed");
                Some(Event::Close(
                    self.close(CloseReason::AuthFailed, timestamp_ms),
                ))
            }
            Err(HandshakeError::Wire(e)) => {
                Some(Event::Close(self.misbehaved((&e).into(), timestamp_ms)))
            }
            Err(_) => Some(Event::Close(
                self.misbehaved(PeerMisbehaved::HandshakeOutOfOrder, timestamp_ms),
            )),
        }
    }

    fn v1_call<'d>(&mut self, frame: &Frame<'d>, timestamp_ms: u64) -> Option<Event<'d>> {
        let header = frame.header;
        match v1::decode(&header, frame.payload, &self.config.v1_limits) {
            Ok(V1Payload::Message { name, data }) => self.route(
                header.kind,
                Cow::Owned(name),
                Body::Value(data),
                0,
                timestamp_ms,
            ),
            Ok(V1Payload::RpcRequest { method, params }) => match method {
                Some(m) => self.route(
                    header.kind,
                    Cow::Owned(m),
                    Body::Value(params),
                    header.correlation_id,
                    timestamp_ms,
                ),
                None => {
                    let reply = self.encoder(timestamp_ms).rpc_failure(
                        header.correlation_id,
                        codes::METHOD_NOT_FOUND,
                        "RPC method not found",
                        None,
                    );
                    self.transmit(reply).map(Event::Close)
                }
            },
            // netconduit ignores a MESSAGE whose payload is not a map.
            Err(WireError::Shape { .. }) if header.kind == FrameKind::Message => None,
            // A value with no place in `Value` (an extension type, a non-string key) in
            // a well-framed request: the caller's mistake, answered like bad
            // arguments; a message with one is dropped like one of the wrong shape.
            Err(WireError::UnsupportedValue(what)) => match header.kind {
                FrameKind::RpcRequest => {
                    let reply = self.encoder(timestamp_ms).rpc_failure(
                        header.correlation_id,
                        codes::VALIDATION,
                        &format!("Validation error: the request holds {what}"),
                        None,
                    );
                    self.transmit(reply).map(Event::Close)
                }
                _ => {
                    tracing::debug!(conn = %self.id, "message dropped: {what}");
                    None
                }
            },
            Ok(_) => None,
            Err(e) => Some(Event::Close(self.misbehaved((&e).into(), timestamp_ms))),
        }
    }

    /// Decides where a message or RPC goes: a handler (an event), or an answer the core
    /// writes itself (`listall`, an unknown method), or nowhere (an unhandled message).
    fn route<'d>(
        &mut self,
        kind: FrameKind,
        route: Cow<'d, str>,
        body: Body<'d>,
        correlation_id: u64,
        timestamp_ms: u64,
    ) -> Option<Event<'d>> {
        let (call_kind, form, slot) = if kind == FrameKind::Message {
            let Some(form) = self.config.routes.message(&route) else {
                tracing::debug!(conn = %self.id, name = %route, "no handler for message type; ignored");
                self.counters.unrouted_messages += 1;
                return None;
            };
            (CallKind::Message, form, 0)
        } else if route == LISTALL {
            self.metrics.listall().answered(true);
            let reply = self
                .encoder(timestamp_ms)
                .rpc_success(correlation_id, self.config.routes.listall());
            return self.transmit(reply).map(Event::Close);
        } else {
            match self.config.routes.rpc_slot(&route) {
                Some((form, slot)) => (CallKind::Rpc, form, slot),
                None => {
                    self.metrics.unknown().answered(false);
                    let reply = self.encoder(timestamp_ms).rpc_failure(
                        correlation_id,
                        codes::METHOD_NOT_FOUND,
                        &format!("RPC method not found: {route}"),
                        None,
                    );
                    return self.transmit(reply).map(Event::Close);
                }
            }
        };
        let args = match (body, form) {
            (Body::Native(bytes), ArgForm::InPlace) => Args::Native(bytes),
            (Body::Value(v), _) => Args::Value(v),
            (Body::Native(bytes), form) => {
                match routes::native_args(bytes, form, self.config.value_limits) {
                    Ok(args) => args,
                    Err(e) => {
                        return Some(Event::Close(self.misbehaved((&e).into(), timestamp_ms)))
                    }
                }
            }
        };
        if self.pending.len() >= MAX_CALLS_IN_FLIGHT {
            // The glue runs calls one at a time; reaching this is a glue bug, not the
            // peer's doing. Refuse the call rather than grow the table.
            debug_assert!(false, "more than {MAX_CALLS_IN_FLIGHT} calls in flight");
            self.counters.frames_not_sent += 1;
            return None;
        }
        let id = CallId(self.next_call);
        self.next_call += 1;
        self.pending.push(Pending {
            id,
            kind: call_kind,
            response: (call_kind == CallKind::Message).then(|| response_name(&route).into()),
            correlation_id,
        });
        Some(Event::Call(Call {
            id,
            kind: call_kind,
            route,
            args,
            slot,
        }))
    }

    /// Takes a handler's result and queues its reply. A result for a call the core does
    /// not know (stale, forged, or of a closed connection) is dropped and counted.
    /// `Some` when the connection must now close (the reply made it a slow consumer).
    pub fn complete(&mut self, call: CallId, outcome: Outcome, timestamp_ms: u64) -> Option<Close> {
        let Some(at) = self.pending.iter().position(|p| p.id == call) else {
            self.counters.stale_results += 1;
            return None;
        };
        let p = self.pending.swap_remove(at);
        debug_assert!(
            matches!(
                (&outcome, p.kind),
                (Outcome::Rpc(_), CallKind::Rpc) | (Outcome::Message(_), CallKind::Message)
            ),
            "outcome of the wrong kind for call {:?}",
            p.id
        );
        let enc = self.encoder(timestamp_ms);
        let frame = match outcome {
            Outcome::Rpc(Ok(v)) => enc.rpc_success(p.correlation_id, &v),
            Outcome::Rpc(Err(f)) => {
                enc.rpc_failure(p.correlation_id, f.code, &f.message, f.details.as_ref())
            }
            Outcome::Message(Some(v)) => {
                let name = p.response.as_deref().unwrap_or_default();
                enc.message(p.correlation_id, name, &v)
            }
            Outcome::Message(None) => return None,
        };
        // A reply that cannot be encoded still answers the caller.
        let frame = match (frame, p.kind) {
            (Err(e), CallKind::Rpc) => {
                tracing::warn!(conn = %self.id, "RPC reply cannot be encoded: {e}");
                self.counters.frames_not_sent += 1;
                enc.rpc_failure(
                    p.correlation_id,
                    codes::INTERNAL,
                    "the method's result cannot be encoded",
                    None,
                )
            }
            (frame, _) => frame,
        };
        self.transmit(frame)
    }

    /// The heartbeat and auth-timeout decision at `now`: queues a ping when one is due,
    /// returns a close when the connection must end.
    pub fn on_tick(&mut self, now: Instant, timestamp_ms: u64) -> Option<Close> {
        if self.closed.is_some() {
            return None;
        }
        let now = self.advance(now);
        if !self.authenticated {
            if now.saturating_duration_since(self.accepted_at) >= self.config.auth_timeout {
                return Some(self.close(CloseReason::AuthTimeout, timestamp_ms));
            }
            return None;
        }
        let expired = self.token.as_ref().is_some_and(|t| {
            timestamp_ms
                > t.expires_at_ms()
                    .saturating_add(self.config.token_leeway_ms)
        });
        if expired {
            return Some(self.close(CloseReason::TokenExpired, timestamp_ms));
        }
        let silent = now.saturating_duration_since(self.last_received);
        if silent >= self.config.heartbeat_timeout {
            return Some(self.close(CloseReason::HeartbeatTimeout, timestamp_ms));
        }
        let ping_due = self
            .last_ping
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.heartbeat_interval);
        if silent >= self.config.heartbeat_interval && ping_due {
            self.last_ping = Some(now);
            let ping = self.encoder(timestamp_ms).empty(FrameKind::Ping);
            return self.transmit(ping);
        }
        None
    }
}

/// The name a message handler's reply is sent under.
pub fn response_name(route: &str) -> String {
    format!("{route}_response")
}

/// Bytes a message type's name may have so that its `<type>_response` still fits the
/// wire.
pub const MAX_MESSAGE_NAME_BYTES: usize = native::MAX_ROUTE_BYTES - "_response".len();

/// A payload as it arrived.
enum Body<'a> {
    /// Decoded from MessagePack.
    Value(Value),
    /// A native archive in the receive buffer.
    Native(&'a [u8]),
}
