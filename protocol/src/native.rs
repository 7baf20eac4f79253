//! The native codec: rkyv payloads read in place.
//!
//! Layout of a native payload (it starts 8-byte aligned in the receive buffer, see
//! [`crate::decoder`]):
//!
//! ```text
//! MESSAGE, RPC_REQUEST:  [u8 name_len][name: UTF-8][zero pad to 8] [rkyv archive of the body] [pad]
//! every other kind:      [rkyv archive of the body] [pad]
//! ```
//!
//! The route name (message type or method) sits in a tiny prefix, outside the archive,
//! so the dispatcher can pick a handler before it knows the body's type, and the body
//! can then be validated and read in place as the handler's own archived type. The
//! trailing pad (0..=7 bytes, its count in the header's `reserved` field) keeps the next
//! frame 8-byte aligned.
//!
//! Dynamic data travels as a [`ValueTree`]: a flat, pre-order list of nodes rather than
//! a recursive archive, so validating a hostile payload never recurses, and depth is
//! checked only when (and if) the tree is turned into a [`Value`].

use bytes::Bytes;
use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::{Archive, Deserialize, Portable, Serialize};

use crate::error::WireError;
use crate::header::{Codec, FrameKind, Header, HEADER_LEN};
use crate::value::Value;

/// Alignment every native payload (and so every archive body) starts at.
pub const NATIVE_ALIGN: usize = 8;

/// Longest route name (message type or RPC method), in bytes.
pub const MAX_ROUTE_BYTES: usize = 255;

/// Length of a nonce in the native handshake.
pub const NONCE_LEN: usize = 32;

/// A type the native codec can serialize as a frame body.
pub trait NativeBody:
    for<'a> Serialize<HighSerializer<Vec<u8>, ArenaHandle<'a>, rancor::Error>>
{
}
impl<T> NativeBody for T where
    T: for<'a> Serialize<HighSerializer<Vec<u8>, ArenaHandle<'a>, rancor::Error>>
{
}

/// An archived type the native codec can validate and read in place.
pub trait NativeArchived: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>> {}
impl<T> NativeArchived for T where T: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
{}

/// One step of the native challenge–response handshake; the payload of every
/// `AUTH_REQUEST` frame, in both directions.
///
/// ```text
/// client: Hello{client_nonce, name, version}
/// server:                         Challenge{server_nonce}
/// client: Proof{HMAC(password, "client" | server_nonce | client_nonce)}
/// server:                         AUTH_SUCCESS Accepted{HMAC(password, "server" | …)} or AUTH_FAILURE
/// ```
///
/// or, with a token: `client: Token{token, name, version}` → `server: AUTH_SUCCESS
/// Accepted{server_proof: zeros, ..}` or AUTH_FAILURE (the token proves the client; the
/// server is proven by TLS, not by the proof).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum AuthStep {
    /// The client opens the handshake.
    Hello(Hello),
    /// The server's challenge: fresh random bytes for this connection.
    Challenge([u8; NONCE_LEN]),
    /// The client's answer to the challenge; see [`crate::auth::client_proof`].
    Proof([u8; 32]),
    /// A token login instead of the challenge (the server answers AUTH_SUCCESS or
    /// AUTH_FAILURE at once); after login, a refreshed token.
    Token(TokenLogin),
}

/// A native token login: a signed token instead of the password proof.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TokenLogin {
    /// The token (a JWT: `header.claims.signature`).
    pub token: String,
    /// Client software name (informational).
    pub client_name: String,
    /// Client software version (informational).
    pub client_version: String,
}

/// The client's opening of the native handshake.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Hello {
    /// Fresh random bytes chosen by the client.
    pub client_nonce: [u8; NONCE_LEN],
    /// Client software name (informational).
    pub client_name: String,
    /// Client software version (informational).
    pub client_version: String,
}

/// Payload of a native `AUTH_SUCCESS`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AuthAccepted {
    /// Proves to the client that the server knows the password too.
    pub server_proof: [u8; 32],
    /// The connection's id, as handlers see it.
    pub connection_id: u64,
    /// The server descriptor's name.
    pub server_name: String,
    /// The server software's version.
    pub server_version: String,
}

/// Payload of `AUTH_FAILURE` and `CLOSE` frames.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Reason {
    /// Why; a short, stable text.
    pub reason: String,
}

/// Payload of a native `RPC_ERROR`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(derive(Debug))]
pub struct RpcFailure {
    /// netconduit's error code (4000 unknown method, 2000 validation, 1001 internal …).
    pub code: u32,
    /// Human-readable message.
    pub message: String,
    /// Structured details (e.g. every validation violation); `Nil` when none.
    pub details: ValueTree,
}

/// One node of a [`ValueTree`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(derive(Debug))]
pub enum Node {
    /// nil
    Nil,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer above `i64::MAX`.
    UInt(u64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// Bytes.
    Bin(Vec<u8>),
    /// An array; its elements are the next `n` subtrees.
    Array(u32),
    /// A map; its entries are the next `n` (key, value) subtree pairs, keys being `Str`.
    Map(u32),
}

/// A [`Value`] flattened into pre-order nodes, the native form of dynamic data.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[rkyv(derive(Debug))]
pub struct ValueTree {
    /// Nodes in pre-order; node 0 is the root.
    pub nodes: Vec<Node>,
}

impl ValueTree {
    /// Flattens `value`.
    pub fn from_value(value: &Value) -> ValueTree {
        let mut nodes = Vec::new();
        flatten(value, &mut nodes);
        ValueTree { nodes }
    }
}

impl From<&Value> for ValueTree {
    fn from(value: &Value) -> ValueTree {
        ValueTree::from_value(value)
    }
}

pub(crate) fn flatten(value: &Value, out: &mut Vec<Node>) {
    match value {
        Value::Nil => out.push(Node::Nil),
        Value::Bool(b) => out.push(Node::Bool(*b)),
        Value::Int(i) => out.push(Node::Int(*i)),
        Value::UInt(u) => out.push(Node::UInt(*u)),
        Value::Float(f) => out.push(Node::Float(*f)),
        Value::Str(s) => out.push(Node::Str(s.clone())),
        Value::Bin(b) => out.push(Node::Bin(b.clone())),
        Value::Array(items) => {
            out.push(Node::Array(items.len() as u32));
            for item in items {
                flatten(item, out);
            }
        }
        Value::Map(entries) => {
            out.push(Node::Map(entries.len() as u32));
            for (k, v) in entries {
                out.push(Node::Str(k.clone()));
                flatten(v, out);
            }
        }
    }
}

/// Validates `body` as an archived `A` and returns it, read in place.
pub fn access<A: NativeArchived>(body: &[u8]) -> Result<&A, WireError> {
    rkyv::access::<A, rancor::Error>(body).map_err(|e| WireError::Archive(e.to_string()))
}

/// Splits a MESSAGE or RPC_REQUEST payload into its route name and archive body.
pub fn split_route(payload: &[u8]) -> Result<(&str, &[u8]), WireError> {
    const SHAPE: WireError = WireError::Shape {
        kind: "native routed frame",
        problem: "route prefix runs past the payload",
    };
    let (&len, rest) = payload.split_first().ok_or(SHAPE)?;
    let name = rest.get(..usize::from(len)).ok_or(SHAPE)?;
    let name = std::str::from_utf8(name).map_err(|_| WireError::InvalidUtf8("route name"))?;
    let body_at = (1 + usize::from(len)).next_multiple_of(NATIVE_ALIGN);
    let body = payload.get(body_at..).ok_or(SHAPE)?;
    Ok((name, body))
}

/// Builds native frames. Each call returns one complete frame, header included, ready
/// to be shared by every connection it goes to.
#[derive(Debug, Clone, Copy)]
pub struct Encoder {
    /// Stamped into every header; the caller owns the clock.
    pub timestamp_ms: u64,
}

impl Encoder {
    /// An encoder stamping frames with `timestamp_ms`.
    pub const fn new(timestamp_ms: u64) -> Encoder {
        Encoder { timestamp_ms }
    }

    /// Writes a header's room and `route` (if any, padded) into `out`, which is empty.
    fn start_in(out: &mut Vec<u8>, route: Option<&str>) -> Result<(), WireError> {
        out.extend_from_slice(&[0u8; HEADER_LEN]);
        if let Some(name) = route {
            if name.len() > MAX_ROUTE_BYTES {
                return Err(WireError::RouteTooLong {
                    len: name.len(),
                    max: MAX_ROUTE_BYTES,
                });
            }
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            out.resize(out.len().next_multiple_of(NATIVE_ALIGN), 0);
        }
        Ok(())
    }

    /// Pads the payload in `out` and writes its header.
    fn finish_in(
        &self,
        out: &mut Vec<u8>,
        kind: FrameKind,
        correlation_id: u64,
    ) -> Result<(), WireError> {
        let unpadded = out.len() - HEADER_LEN;
        out.resize(out.len().next_multiple_of(NATIVE_ALIGN), 0);
        let length = u32::try_from(out.len() - HEADER_LEN).map_err(|_| WireError::Oversize {
            length: (out.len() - HEADER_LEN) as u64,
            max: u32::MAX.into(),
        })?;
        let mut h = Header::new(Codec::Native, kind);
        h.length = length;
        h.reserved = (length as usize - unpadded) as u16;
        h.correlation_id = correlation_id;
        h.timestamp_ms = self.timestamp_ms;
        out[..HEADER_LEN].copy_from_slice(&h.encode());
        Ok(())
    }

    /// A frame of `kind` whose payload is `route` (if any) followed by `body` (built in
    /// the thread's scratch, see [`crate::frame_buf`]).
    pub fn frame<T: NativeBody>(
        &self,
        kind: FrameKind,
        correlation_id: u64,
        route: Option<&str>,
        body: &T,
    ) -> Result<Bytes, WireError> {
        crate::frame_buf::build(|mut out, arena| {
            Self::start_in(&mut out, route)?;
            let out = match arena {
                Some(arena) => rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(
                    body,
                    out,
                    arena.acquire(),
                ),
                None => rkyv::api::high::to_bytes_in::<_, rancor::Error>(body, out),
            };
            let mut out = out.map_err(|e| WireError::Encode(e.to_string()))?;
            self.finish_in(&mut out, kind, correlation_id)?;
            Ok(out)
        })
    }

    /// A frame with no payload (PING, PONG, …).
    pub fn empty(&self, kind: FrameKind) -> Bytes {
        let mut h = Header::new(Codec::Native, kind);
        h.timestamp_ms = self.timestamp_ms;
        Bytes::copy_from_slice(&h.encode())
    }

    /// A MESSAGE `name` carrying `body`.
    pub fn message<T: NativeBody>(&self, name: &str, body: &T) -> Result<Bytes, WireError> {
        self.frame(FrameKind::Message, 0, Some(name), body)
    }

    /// An RPC_REQUEST for `method` with arguments `args`.
    pub fn rpc_request<T: NativeBody>(
        &self,
        correlation_id: u64,
        method: &str,
        args: &T,
    ) -> Result<Bytes, WireError> {
        self.frame(FrameKind::RpcRequest, correlation_id, Some(method), args)
    }

    /// A successful RPC_RESPONSE carrying `result`.
    pub fn rpc_response<T: NativeBody>(
        &self,
        correlation_id: u64,
        result: &T,
    ) -> Result<Bytes, WireError> {
        self.frame(FrameKind::RpcResponse, correlation_id, None, result)
    }

    /// An RPC_ERROR.
    pub fn rpc_error(&self, correlation_id: u64, failure: &RpcFailure) -> Result<Bytes, WireError> {
        self.frame(FrameKind::RpcError, correlation_id, None, failure)
    }

    /// An AUTH_REQUEST carrying one handshake step.
    pub fn auth_step(&self, step: &AuthStep) -> Result<Bytes, WireError> {
        self.frame(FrameKind::AuthRequest, 0, None, step)
    }

    /// An AUTH_SUCCESS.
    pub fn auth_accepted(&self, accepted: &AuthAccepted) -> Result<Bytes, WireError> {
        self.frame(FrameKind::AuthSuccess, 0, None, accepted)
    }

    /// An AUTH_FAILURE with `reason`.
    pub fn auth_failure(&self, reason: &str) -> Result<Bytes, WireError> {
        self.frame(
            FrameKind::AuthFailure,
            0,
            None,
            &Reason {
                reason: reason.to_owned(),
            },
        )
    }

    /// A CLOSE with `reason`.
    pub fn close(&self, reason: &str) -> Result<Bytes, WireError> {
        self.frame(
            FrameKind::Close,
            0,
            None,
            &Reason {
                reason: reason.to_owned(),
            },
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decoder::{DecoderLimits, FrameDecoder};
    use crate::msgpack::ValueLimits;

    /// A value with every kind in it (other modules' tests use it too).
    pub(crate) fn sample() -> Value {
        Value::map()
            .with("message", "hi")
            .with("n", -7)
            .with("big", u64::MAX)
            .with("pi", 3.25)
            .with("ok", true)
            .with("raw", vec![1u8, 2, 3])
            .with("list", Value::from_iter([1, 2, 3]))
            .with("nested", Value::map().with("x", Value::Nil))
    }

    #[test]
    fn frames_built_in_the_scratch_match_frames_built_alone() {
        let enc = Encoder::new(42);
        let big = Value::from_iter((0..2000).map(|i| format!("item {i}")));
        for v in [Value::Int(3), sample(), big] {
            let tree = ValueTree::from_value(&v);
            let scratch = enc.message("chat", &tree).unwrap();
            // With the scratch in use (an encoding inside an encoding): a buffer of
            // its own, the same bytes.
            let alone = crate::frame_buf::with_scratch_held(|| enc.message("chat", &tree).unwrap());
            assert_eq!(scratch, alone);
            let mut d = FrameDecoder::new(DecoderLimits::default());
            d.feed(&scratch);
            let f = d.next_frame().unwrap().unwrap();
            let (name, body) = split_route(f.payload).unwrap();
            assert_eq!(name, "chat");
            let got = access::<ArchivedValueTree>(body).unwrap();
            assert_eq!(got.to_value(ValueLimits::default()).unwrap(), v);
        }
        // A value whose serialization needs more scratch space than the thread keeps
        // leaves a fresh arena behind.
        let huge = ValueTree::from_value(&Value::from_iter((0..20_000).map(|i| format!("{i}"))));
        enc.message("chat", &huge).unwrap();
        let (_, arena) = crate::frame_buf::scratch_capacities();
        assert!(arena <= crate::frame_buf::SCRATCH_ARENA_BYTES, "{arena}");
    }

    #[test]
    fn message_round_trip_in_place() {
        let enc = Encoder::new(42);
        let frame = enc
            .message("chat", &ValueTree::from_value(&sample()))
            .unwrap();
        assert_eq!(frame.len() % 8, 0);
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(&frame);
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(f.header.kind, FrameKind::Message);
        assert_eq!(f.header.timestamp_ms, 42);
        assert_eq!(f.payload.as_ptr() as usize % NATIVE_ALIGN, 0);
        let (name, body) = split_route(f.payload).unwrap();
        assert_eq!(name, "chat");
        let tree = access::<ArchivedValueTree>(body).unwrap();
        assert_eq!(tree.to_value(ValueLimits::default()).unwrap(), sample());
    }

    #[test]
    fn every_kind_round_trips() {
        let enc = Encoder::new(1);
        let hello = AuthStep::Hello(Hello {
            client_nonce: [7; 32],
            client_name: "c".into(),
            client_version: "1".into(),
        });
        let accepted = AuthAccepted {
            server_proof: [9; 32],
            connection_id: 0x0100_0000_0000_0005,
            server_name: "Server".into(),
            server_version: "0.1.0".into(),
        };
        let failure = RpcFailure {
            code: 2000,
            message: "Validation error in create_user".into(),
            details: ValueTree::from_value(&Value::from_iter(["age"])),
        };
        let frames = [
            enc.auth_step(&hello).unwrap(),
            enc.auth_accepted(&accepted).unwrap(),
            enc.auth_failure("Invalid password").unwrap(),
            enc.rpc_request(5, "add", &ValueTree::from_value(&Value::map().with("a", 1)))
                .unwrap(),
            enc.rpc_response(5, &ValueTree::from_value(&Value::Int(3)))
                .unwrap(),
            enc.rpc_error(6, &failure).unwrap(),
            enc.close("bye").unwrap(),
            enc.empty(FrameKind::Ping),
        ];
        let mut d = FrameDecoder::new(DecoderLimits::default());
        for fr in &frames {
            d.feed(fr);
        }
        let l = ValueLimits::default();
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(
            rkyv::deserialize::<AuthStep, rancor::Error>(
                access::<ArchivedAuthStep>(f.payload).unwrap()
            )
            .unwrap(),
            hello
        );
        let f = d.next_frame().unwrap().unwrap();
        let a = access::<ArchivedAuthAccepted>(f.payload).unwrap();
        assert_eq!(a.connection_id.to_native(), accepted.connection_id);
        assert_eq!(a.server_name.as_str(), "Server");
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(
            access::<ArchivedReason>(f.payload).unwrap().reason.as_str(),
            "Invalid password"
        );
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(f.header.correlation_id, 5);
        let (m, body) = split_route(f.payload).unwrap();
        assert_eq!(m, "add");
        assert_eq!(
            access::<ArchivedValueTree>(body)
                .unwrap()
                .to_value(l)
                .unwrap(),
            Value::map().with("a", 1)
        );
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(
            access::<ArchivedValueTree>(f.payload)
                .unwrap()
                .to_value(l)
                .unwrap(),
            Value::Int(3)
        );
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(f.header.kind, FrameKind::RpcError);
        let e = access::<ArchivedRpcFailure>(f.payload).unwrap();
        assert_eq!(e.code.to_native(), 2000);
        assert_eq!(e.details.to_value(l).unwrap(), Value::from_iter(["age"]));
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(
            access::<ArchivedReason>(f.payload).unwrap().reason.as_str(),
            "bye"
        );
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(f.header.kind, FrameKind::Ping);
        assert!(f.payload.is_empty());
        assert!(d.next_frame().unwrap().is_none());
    }

    #[test]
    fn the_value_budget_counts_values_not_keys() {
        let limits = ValueLimits {
            max_depth: 8,
            max_values: 10,
        };
        let tree = |v: &Value| rkyv::to_bytes::<rancor::Error>(&ValueTree::from_value(v)).unwrap();
        // An array and 9 elements: 10 values.
        let ok = tree(&Value::from_iter(0..9));
        assert!(access::<ArchivedValueTree>(&ok)
            .unwrap()
            .to_value(limits)
            .is_ok());
        let over = tree(&Value::from_iter(0..10));
        assert!(access::<ArchivedValueTree>(&over)
            .unwrap()
            .to_value(limits)
            .is_err());
        // A map and 9 entries: 10 values (the 9 keys are not counted), 19 nodes.
        let mut map = Value::map();
        for i in 0..9 {
            map.insert(format!("k{i}"), i);
        }
        let ok = tree(&map);
        assert!(access::<ArchivedValueTree>(&ok)
            .unwrap()
            .to_value(limits)
            .is_ok());
        map.insert("k9", 9);
        let over = tree(&map);
        assert!(access::<ArchivedValueTree>(&over)
            .unwrap()
            .to_value(limits)
            .is_err());
    }

    #[test]
    fn hostile_trees_are_refused_without_recursion_in_validation() {
        // 100 000 nested arrays: validation is flat; conversion stops at the depth limit.
        let mut nodes = vec![Node::Array(1); 100_000];
        nodes.push(Node::Nil);
        let bytes = rkyv::to_bytes::<rancor::Error>(&ValueTree { nodes }).unwrap();
        let tree = access::<ArchivedValueTree>(&bytes).unwrap();
        assert_eq!(
            tree.to_value(ValueLimits {
                max_depth: 64,
                max_values: usize::MAX / 4
            }),
            Err(WireError::TooDeep { max: 64 })
        );
        // A container claiming more children than exist.
        let bytes = rkyv::to_bytes::<rancor::Error>(&ValueTree {
            nodes: vec![Node::Array(u32::MAX)],
        })
        .unwrap();
        let tree = access::<ArchivedValueTree>(&bytes).unwrap();
        assert!(tree.to_value(ValueLimits::default()).is_err());
        // Garbage bytes fail validation instead of being read.
        assert!(access::<ArchivedValueTree>(&[0xff; 16]).is_err());
    }

    #[test]
    fn route_rules() {
        let enc = Encoder::new(0);
        assert!(matches!(
            enc.message(&"x".repeat(256), &ValueTree::default()),
            Err(WireError::RouteTooLong { .. })
        ));
        assert!(split_route(&[5, b'a']).is_err());
        assert!(matches!(
            split_route(&[1, 0xff, 0, 0, 0, 0, 0, 0]),
            Err(WireError::InvalidUtf8(_))
        ));
    }
}
