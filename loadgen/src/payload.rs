//! The benchmark payloads the scenarios send and read: ticks (encoded in either codec,
//! padded to a fixed size, optionally for a room), the room join and its answer, and
//! `add` calls — with a cheap decode that reads only the fields a scenario needs
//! (a MessagePack skipper for v1, in-place access for native).

use bytes::Bytes;
use conduit_protocol::clock::wall_clock_ms;
use conduit_protocol::native::{self, ArchivedValueTree};
use conduit_protocol::v1::{self, V1Limits, V1Payload};
use conduit_protocol::{Codec, Encoder, FrameKind, Header, Value, ValueLimits};

use crate::Error;

/// An empty frame of `kind` (PING, PONG) in `codec`.
pub fn empty_frame(codec: Codec, kind: FrameKind) -> Result<Bytes, Error> {
    Ok(Encoder::new(codec, wall_clock_ms()).empty(kind)?)
}

/// Message type a broadcast sender sends; the server re-broadcasts it as [`TICK`].
pub const BENCH_BROADCAST: &str = "bench_broadcast";

/// Message type receivers get.
pub const TICK: &str = "tick";

/// Message type that puts its sender in the room its data names (a string); the
/// server answers with [`BENCH_JOIN_RESPONSE`].
pub const BENCH_JOIN: &str = "bench_join";

/// The server's answer to [`BENCH_JOIN`]: `{room, joined, members, shard}` (or
/// `{room, error}` when the join was refused).
pub const BENCH_JOIN_RESPONSE: &str = "bench_join_response";

/// Message type a room broadcast's sender sends: a tick whose data also names the room
/// (key [`ROOM_KEY`]); the server re-broadcasts it as [`TICK`] to that room's other
/// members.
pub const BENCH_ROOM_BROADCAST: &str = "bench_room_broadcast";

/// The key of a room tick's data that names its room.
pub const ROOM_KEY: &str = "r";

/// Added to every sequence number and timestamp in a benchmark payload so MessagePack
/// always writes them as 9-byte uint64s: every message of a run has the same size.
pub const FIXED_WIDTH_BASE: u64 = 1 << 33;

// ---- benchmark payloads ------------------------------------------------------------

/// What a tick carries: who sent it, its sequence number and the time it was due
/// (ns on the run's clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tick {
    /// Sender index.
    pub sender: u64,
    /// Sequence number (per sender, from 0).
    pub seq: u64,
    /// When the message was due to leave, ns since the run's clock origin.
    pub due_ns: u64,
}

/// The data of a broadcast message: `{"s": seq, "w": sender, "t": due_ns, "p": pad}`.
pub fn tick_value(t: Tick, pad: usize) -> Value {
    Value::map()
        .with("s", t.seq + FIXED_WIDTH_BASE)
        .with("w", t.sender)
        .with("t", t.due_ns + FIXED_WIDTH_BASE)
        .with("p", vec![0x55u8; pad])
}

/// The data of a broadcast message, naming its room (key [`ROOM_KEY`]) if it has one.
fn tick_data(t: Tick, pad: usize, room: Option<&str>) -> Value {
    match room {
        Some(room) => tick_value(t, pad).with(ROOM_KEY, room),
        None => tick_value(t, pad),
    }
}

/// A `bench_broadcast` MESSAGE frame for `t` with `pad` padding bytes.
pub fn bench_message(codec: Codec, t: Tick, pad: usize) -> Result<Bytes, Error> {
    Ok(Encoder::new(codec, wall_clock_ms()).message(0, BENCH_BROADCAST, &tick_value(t, pad))?)
}

/// A `bench_room_broadcast` MESSAGE frame for `t` to room `room`, with `pad` padding
/// bytes.
pub fn bench_room_message(codec: Codec, t: Tick, pad: usize, room: &str) -> Result<Bytes, Error> {
    Ok(Encoder::new(codec, wall_clock_ms()).message(
        0,
        BENCH_ROOM_BROADCAST,
        &tick_data(t, pad, Some(room)),
    )?)
}

/// A `bench_join` MESSAGE frame asking to join room `room`.
pub fn join_message(codec: Codec, room: &str) -> Result<Bytes, Error> {
    Ok(Encoder::new(codec, wall_clock_ms()).message(0, BENCH_JOIN, &Value::from(room))?)
}

/// The `tick` frame the server sends for `t` (what receivers get; a room broadcast's
/// names its room), as conduit encodes it: used to size payloads.
pub fn tick_frame(codec: Codec, t: Tick, pad: usize, room: Option<&str>) -> Result<Bytes, Error> {
    Ok(Encoder::new(codec, 0).message(0, TICK, &tick_data(t, pad, room))?)
}

/// Padding that makes the netconduit-v1 `tick` frame's payload (to `room`, if any)
/// `payload_bytes` long (or as close above as the fixed fields allow). The native
/// frame of the same data is larger; reports show both sizes.
pub fn pad_for_payload(payload_bytes: usize, room: Option<&str>) -> usize {
    let t = Tick {
        sender: 0,
        seq: 0,
        due_ns: 0,
    };
    let size = |pad| {
        tick_frame(Codec::V1, t, pad, room)
            .map_or(usize::MAX, |f| f.len() - conduit_protocol::HEADER_LEN)
    };
    let mut pad = payload_bytes.saturating_sub(size(0));
    // A bin8 header is 2 bytes, bin16 3: step down until it fits.
    while pad > 0 && size(pad) > payload_bytes {
        pad -= 1;
    }
    pad
}

/// Reads a `tick` MESSAGE payload: `None` if the frame is another message.
pub fn parse_tick(codec: Codec, payload: &[u8]) -> Result<Option<Tick>, Error> {
    match codec {
        Codec::V1 => Ok(parse_tick_v1(payload)),
        Codec::Native => {
            let (name, body) = native::split_route(payload)?;
            if name != TICK {
                return Ok(None);
            }
            let tree = native::access::<ArchivedValueTree>(body)?;
            let mut t = Tick {
                sender: 0,
                seq: 0,
                due_ns: 0,
            };
            let mut key: Option<&str> = None;
            for node in tree.nodes.iter() {
                match node {
                    native::ArchivedNode::Str(s) if key.is_none() => key = Some(s.as_str()),
                    native::ArchivedNode::Int(i) => {
                        let v = u64::try_from(i.to_native()).unwrap_or(0);
                        set_field(&mut t, key.take(), v);
                    }
                    native::ArchivedNode::UInt(u) => set_field(&mut t, key.take(), u.to_native()),
                    _ => key = None,
                }
            }
            Ok(Some(t))
        }
    }
}

fn set_field(t: &mut Tick, key: Option<&str>, v: u64) {
    match key {
        Some("s") => t.seq = v.saturating_sub(FIXED_WIDTH_BASE),
        Some("w") => t.sender = v,
        Some("t") => t.due_ns = v.saturating_sub(FIXED_WIDTH_BASE),
        _ => {}
    }
}

/// A tiny MessagePack reader for the fields the scenarios need.
struct Mp<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Mp<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.b.get(self.i)?;
        self.i += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.i..self.i.checked_add(n)?)?;
        self.i += n;
        Some(s)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
        )
    }

    fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            b @ 0x80..=0x8f => Some(usize::from(b & 0x0f)),
            0xde => Some(self.be(2)? as usize),
            0xdf => Some(self.be(4)? as usize),
            _ => None,
        }
    }

    fn str_len(&mut self, first: u8) -> Option<usize> {
        match first {
            0xa0..=0xbf => Some(usize::from(first & 0x1f)),
            0xd9 => Some(self.be(1)? as usize),
            0xda => Some(self.be(2)? as usize),
            0xdb => Some(self.be(4)? as usize),
            _ => None,
        }
    }

    fn str(&mut self) -> Option<&'a [u8]> {
        let first = self.byte()?;
        let n = self.str_len(first)?;
        self.take(n)
    }

    /// A non-negative integer, or `None` (the value is then consumed anyway when it is
    /// another scalar).
    fn uint(&mut self) -> Option<u64> {
        let first = self.byte()?;
        match first {
            0x00..=0x7f => Some(u64::from(first)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            0xd0 => self.be(1).filter(|v| *v < 0x80),
            0xd1 => self.be(2).filter(|v| *v < 0x8000),
            0xd2 => self.be(4).filter(|v| *v < 0x8000_0000),
            0xd3 => self.be(8).filter(|v| *v < 0x8000_0000_0000_0000),
            _ => {
                self.i -= 1;
                self.skip(0)?;
                None
            }
        }
    }

    /// Skips one value (nesting bounded).
    fn skip(&mut self, depth: usize) -> Option<()> {
        const MAX_DEPTH: usize = 16;
        if depth > MAX_DEPTH {
            return None;
        }
        let first = self.byte()?;
        let n = match first {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
            0x80..=0x8f => {
                for _ in 0..2 * usize::from(first & 0x0f) {
                    self.skip(depth + 1)?;
                }
                0
            }
            0x90..=0x9f => {
                for _ in 0..usize::from(first & 0x0f) {
                    self.skip(depth + 1)?;
                }
                0
            }
            0xa0..=0xbf | 0xd9..=0xdb => self.str_len(first)?,
            0xc4 | 0xc7 => self.be(1)? as usize + usize::from(first == 0xc7),
            0xc5 | 0xc8 => self.be(2)? as usize + usize::from(first == 0xc8),
            0xc6 | 0xc9 => self.be(4)? as usize + usize::from(first == 0xc9),
            0xca => 4,
            0xcb => 8,
            0xcc | 0xd0 => 1,
            0xcd | 0xd1 => 2,
            0xce | 0xd2 => 4,
            0xcf | 0xd3 => 8,
            0xd4 => 2,
            0xd5 => 3,
            0xd6 => 5,
            0xd7 => 9,
            0xd8 => 17,
            0xdc | 0xdd => {
                let len = self.be(if first == 0xdc { 2 } else { 4 })? as usize;
                for _ in 0..len {
                    self.skip(depth + 1)?;
                }
                0
            }
            0xde | 0xdf => {
                let len = self.be(if first == 0xde { 2 } else { 4 })? as usize;
                for _ in 0..2 * len {
                    self.skip(depth + 1)?;
                }
                0
            }
            0xc1 => return None,
        };
        self.take(n).map(|_| ())
    }
}

/// Reads `{"type": "tick", "data": {"s", "w", "t", …}}` without building a `Value`.
fn parse_tick_v1(payload: &[u8]) -> Option<Tick> {
    let mut r = Mp { b: payload, i: 0 };
    let mut is_tick = false;
    let mut tick = None;
    for _ in 0..r.map_len()? {
        match r.str()? {
            b"type" => is_tick = r.str()? == TICK.as_bytes(),
            b"data" => {
                let mut t = Tick {
                    sender: 0,
                    seq: 0,
                    due_ns: 0,
                };
                for _ in 0..r.map_len()? {
                    let key = r.str()?;
                    let key = std::str::from_utf8(key).ok();
                    if let Some(v) = r.uint() {
                        set_field(&mut t, key, v);
                    }
                }
                tick = Some(t);
            }
            _ => r.skip(0)?,
        }
    }
    tick.filter(|_| is_tick)
}

/// What the server answered to a [`BENCH_JOIN`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinResponse {
    /// Whether the connection joined now (false: it was in already).
    pub joined: bool,
    /// The room's members as the server counted them right after this join.
    pub members: u64,
    /// The server shard that serves the connection.
    pub shard: u64,
}

/// Reads a `bench_join_response` MESSAGE: `None` if the frame is something else, an
/// error if the server refused the join or the answer is malformed.
pub fn parse_join_response(
    codec: Codec,
    header: &Header,
    payload: &[u8],
) -> Result<Option<JoinResponse>, Error> {
    if header.kind != FrameKind::Message {
        return Ok(None);
    }
    let data = match codec {
        Codec::V1 => match v1::decode(header, payload, &V1Limits::default())? {
            V1Payload::Message { name, data } if name == BENCH_JOIN_RESPONSE => data,
            _ => return Ok(None),
        },
        Codec::Native => {
            let (name, body) = native::split_route(payload)?;
            if name != BENCH_JOIN_RESPONSE {
                return Ok(None);
            }
            native::access::<ArchivedValueTree>(body)?.to_value(ValueLimits::default())?
        }
    };
    if let Some(e) = data.get("error").and_then(Value::as_str) {
        return Err(Error::Target(format!("the server refused the join: {e}")));
    }
    let count = |k: &str| data.get(k).and_then(Value::as_u64);
    match (
        data.get("joined").and_then(Value::as_bool),
        count("members"),
        count("shard"),
    ) {
        (Some(joined), Some(members), Some(shard)) => Ok(Some(JoinResponse {
            joined,
            members,
            shard,
        })),
        _ => Err(Error::Protocol(format!(
            "malformed {BENCH_JOIN_RESPONSE}: {data:?}"
        ))),
    }
}

// ---- RPC ---------------------------------------------------------------------------

/// An `add(a, b)` RPC_REQUEST.
pub fn add_request(codec: Codec, correlation_id: u64, a: i64, b: i64) -> Result<Bytes, Error> {
    let params = Value::map().with("a", a).with("b", b);
    Ok(Encoder::new(codec, wall_clock_ms()).rpc_request(correlation_id, "add", &params)?)
}

/// The integer an RPC reply carries (`None` for an error reply or another shape).
pub fn rpc_result(codec: Codec, header: &Header, payload: &[u8]) -> Result<Option<i64>, Error> {
    match (codec, header.kind) {
        (Codec::V1, FrameKind::RpcResponse | FrameKind::RpcError) => {
            match v1::decode(header, payload, &V1Limits::default())? {
                V1Payload::RpcResponse { result, .. } => {
                    let ok = result.get("success").and_then(Value::as_bool) == Some(true);
                    Ok(result.get("data").and_then(Value::as_i64).filter(|_| ok))
                }
                _ => Ok(None),
            }
        }
        (Codec::Native, FrameKind::RpcResponse) => {
            let tree = native::access::<ArchivedValueTree>(payload)?;
            Ok(match tree.nodes.first() {
                Some(native::ArchivedNode::Int(i)) if tree.nodes.len() == 1 => Some(i.to_native()),
                _ => None,
            })
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use conduit_protocol::{DecoderLimits, FrameDecoder};

    use super::*;

    fn decode_one(frame: &[u8]) -> (Header, Vec<u8>, Codec) {
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(frame);
        let f = d.next_frame().unwrap().unwrap();
        (f.header, f.payload.to_vec(), f.header.codec)
    }

    #[test]
    fn tick_round_trip_both_codecs() {
        let t = Tick {
            sender: 3,
            seq: 17,
            due_ns: 123_456_789,
        };
        for codec in [Codec::V1, Codec::Native] {
            for room in [None, Some("lobby")] {
                let frame = tick_frame(codec, t, 21, room).unwrap();
                let mut d = FrameDecoder::new(DecoderLimits::default());
                d.feed(&frame);
                let f = d.next_frame().unwrap().unwrap();
                assert_eq!(parse_tick(codec, f.payload).unwrap(), Some(t), "{codec:?}");
            }
        }
        // Another message type is not a tick.
        let other = v1::Encoder::new(0).message("chat", &tick_value(t, 0));
        let (_, payload, _) = decode_one(&other);
        assert_eq!(parse_tick(Codec::V1, &payload).unwrap(), None);
    }

    #[test]
    fn payload_sizing() {
        let t = Tick {
            sender: 0,
            seq: 5,
            due_ns: 1,
        };
        let pad = pad_for_payload(64, None);
        let frame = tick_frame(Codec::V1, t, pad, None).unwrap();
        assert_eq!(frame.len() - conduit_protocol::HEADER_LEN, 64);
        // A room tick names its room in the same 64 bytes.
        let room_pad = pad_for_payload(64, Some("room"));
        assert!(room_pad < pad);
        let room_frame = tick_frame(Codec::V1, t, room_pad, Some("room")).unwrap();
        assert_eq!(room_frame.len(), frame.len());
        // Fixed-width fields: a much later message has the same size.
        let later = Tick {
            sender: 0,
            seq: 4_000_000_000,
            due_ns: 3_600_000_000_000,
        };
        assert_eq!(
            tick_frame(Codec::V1, later, pad, None).unwrap().len(),
            frame.len()
        );
        // Below the fixed part, no padding.
        assert_eq!(pad_for_payload(1, None), 0);
        let big = pad_for_payload(1000, None);
        assert_eq!(
            tick_frame(Codec::V1, t, big, None).unwrap().len() - conduit_protocol::HEADER_LEN,
            1000
        );
    }

    #[test]
    fn msgpack_skipper_handles_every_shape() {
        let data = Value::map()
            .with("x", Value::from_iter([1.5f64, -3.0]))
            .with("n", Value::Nil)
            .with("neg", -5)
            .with("s", FIXED_WIDTH_BASE + 9)
            .with("w", 1)
            .with("t", FIXED_WIDTH_BASE + 77)
            .with("deep", Value::map().with("a", Value::map().with("b", "c")))
            .with("long", "y".repeat(300));
        let frame = v1::Encoder::new(0).message(TICK, &data);
        let (_, payload, _) = decode_one(&frame);
        assert_eq!(
            parse_tick_v1(&payload),
            Some(Tick {
                sender: 1,
                seq: 9,
                due_ns: 77
            })
        );
        // Truncated input never panics.
        for cut in 0..payload.len() {
            let _ = parse_tick_v1(&payload[..cut]);
        }
    }

    #[test]
    fn rpc_replies() {
        let ok = v1::Encoder::new(0).rpc_success(4, &Value::Int(7));
        let (h, p, _) = decode_one(&ok);
        assert_eq!(rpc_result(Codec::V1, &h, &p).unwrap(), Some(7));
        let err = v1::Encoder::new(0).rpc_failure(4, "nope", 4000, None);
        let (h, p, _) = decode_one(&err);
        assert_eq!(rpc_result(Codec::V1, &h, &p).unwrap(), None);
        let ok = native::Encoder::new(0)
            .rpc_response(4, &native::ValueTree::from_value(&Value::Int(-2)))
            .unwrap();
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(&ok);
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(
            rpc_result(Codec::Native, &f.header, f.payload).unwrap(),
            Some(-2)
        );
        let req = add_request(Codec::V1, 9, 2, 3).unwrap();
        let (h, p, _) = decode_one(&req);
        assert_eq!(h.correlation_id, 9);
        assert!(matches!(
            v1::decode(&h, &p, &V1Limits::default()).unwrap(),
            V1Payload::RpcRequest { method: Some(m), .. } if m == "add"
        ));
    }

    #[test]
    fn join_messages_and_responses() {
        let reply = Value::map()
            .with("room", "lobby")
            .with("joined", true)
            .with("members", 7u64)
            .with("shard", 1u64);
        let refused = Value::map()
            .with("room", "lobby")
            .with("error", "too many rooms");
        for codec in [Codec::V1, Codec::Native] {
            let frame = |name: &str, v: &Value| Encoder::new(codec, 0).message(0, name, v).unwrap();
            let parse = |bytes: &[u8]| {
                let mut d = FrameDecoder::new(DecoderLimits::default());
                d.feed(bytes);
                let f = d.next_frame().unwrap().unwrap();
                parse_join_response(codec, &f.header, f.payload)
            };
            assert_eq!(
                parse(&frame(BENCH_JOIN_RESPONSE, &reply)).unwrap(),
                Some(JoinResponse {
                    joined: true,
                    members: 7,
                    shard: 1
                }),
                "{codec:?}"
            );
            // Another message, or a PING, is not the answer.
            assert_eq!(parse(&frame(TICK, &reply)).unwrap(), None);
            assert_eq!(
                parse(&empty_frame(codec, FrameKind::Ping).unwrap()).unwrap(),
                None
            );
            // A refusal, and an answer missing a field, are errors.
            assert!(matches!(
                parse(&frame(BENCH_JOIN_RESPONSE, &refused)),
                Err(Error::Target(m)) if m.contains("too many rooms")
            ));
            assert!(parse(&frame(
                BENCH_JOIN_RESPONSE,
                &Value::map().with("joined", true)
            ))
            .is_err());
            // The join itself names the room as its data.
            let join = join_message(codec, "lobby").unwrap();
            let mut d = FrameDecoder::new(DecoderLimits::default());
            d.feed(&join);
            let f = d.next_frame().unwrap().unwrap();
            assert_eq!(f.header.kind, FrameKind::Message);
        }
        // A room broadcast is a tick with its room: the server forwards it as is.
        let t = Tick {
            sender: 0,
            seq: 1,
            due_ns: 2,
        };
        let frame = bench_room_message(Codec::V1, t, 0, "lobby").unwrap();
        let (h, p, _) = decode_one(&frame);
        match v1::decode(&h, &p, &V1Limits::default()).unwrap() {
            V1Payload::Message { name, data } => {
                assert_eq!(name, BENCH_ROOM_BROADCAST);
                assert_eq!(data.get(ROOM_KEY).and_then(Value::as_str), Some("lobby"));
            }
            other => panic!("not a message: {other:?}"),
        }
    }
}
