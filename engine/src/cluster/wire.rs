//! What nodes say to each other through the broker, and how it is read back.
//!
//! A fixed 18-byte header a node reads without decoding anything else (so a message
//! for another node, or from another version, costs a few comparisons), then a
//! MessagePack body decoded under the server's value limits like peer input:
//!
//! | bytes  | what |
//! |--------|------|
//! | 0–3    | magic `CDTC` |
//! | 4      | version ([`VERSION`]); another major version is dropped and counted |
//! | 5      | kind ([`Kind`]) |
//! | 6–7    | sender node, little-endian |
//! | 8–15   | sender instance (random per process: tells a restarted or duplicate node apart) |
//! | 16–17  | target node, or `0xFFFF` for every node |
//! | 18–    | body: a MessagePack array, by kind |

use ahash::AHashSet;
use conduit_protocol::{msgpack, Value, ValueLimits};

use crate::id::ConnectionId;

/// Bytes before the body.
pub(crate) const HEADER_BYTES: usize = 18;
/// The cluster protocol version this build speaks.
pub(crate) const VERSION: u8 = 1;
const MAGIC: &[u8; 4] = b"CDTC";
/// The target of a message for every node.
pub(crate) const EVERY_NODE: u16 = 0xFFFF;

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// `[name, data, timestamp_ms, [room], include: nil | [id], [exclude id]]`
    Broadcast = 1,
    /// `[to, name, data, timestamp_ms]`
    Send = 2,
    /// `[to, name | nil, data, timestamp_ms]`
    Kick = 3,
    /// `[connections, starting]`: alive; `starting` while claiming its id at start.
    Heartbeat = 4,
    /// `[]`: stopping; forget me now.
    Leaving = 5,
    /// `[request, what, room | nil]`: what = 0 connections, 1 room members.
    Ask = 6,
    /// `[request, count, [member id], truncated]`
    Answer = 7,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Broadcast,
            2 => Kind::Send,
            3 => Kind::Kick,
            4 => Kind::Heartbeat,
            5 => Kind::Leaving,
            6 => Kind::Ask,
            7 => Kind::Answer,
            _ => return None,
        })
    }
}

/// The fixed part of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub kind: Kind,
    pub from: usize,
    pub instance: u64,
    /// `None` for every node.
    pub to: Option<usize>,
}

/// Why a message from the channel was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Malformed {
    #[error("not a cluster message")]
    NotOurs,
    #[error("cluster protocol version {0}, this node speaks {VERSION}")]
    Version(u8),
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("bad body: {0}")]
    Body(String),
}

/// A decoded body.
#[derive(Debug, PartialEq)]
pub(crate) enum Body {
    Broadcast {
        name: String,
        data: Value,
        timestamp_ms: u64,
        rooms: Vec<String>,
        include: Option<AHashSet<ConnectionId>>,
        exclude: AHashSet<ConnectionId>,
    },
    Send {
        to: ConnectionId,
        name: String,
        data: Value,
        timestamp_ms: u64,
    },
    Kick {
        to: ConnectionId,
        last: Option<(String, Value)>,
        timestamp_ms: u64,
    },
    Heartbeat {
        connections: usize,
        starting: bool,
    },
    Leaving,
    Ask {
        request: u64,
        room: Option<String>,
    },
    Answer {
        request: u64,
        count: usize,
        members: Vec<ConnectionId>,
        truncated: bool,
    },
}

/// Encodes a message: header, then `body` as MessagePack.
pub(crate) fn encode(header: Header, body: &Value) -> Vec<u8> {
    let mut out = start(header);
    msgpack::write_value(&mut out, body);
    out
}

/// A message's header, for the body to be written after it.
pub(crate) fn start(header: Header) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(header.kind as u8);
    out.extend_from_slice(&(header.from as u16).to_le_bytes());
    out.extend_from_slice(&header.instance.to_le_bytes());
    let to = header.to.map_or(EVERY_NODE, |n| n as u16);
    out.extend_from_slice(&to.to_le_bytes());
    out
}

/// Reads the header only.
pub(crate) fn header(bytes: &[u8]) -> Result<Header, Malformed> {
    if bytes.len() < HEADER_BYTES || &bytes[..4] != MAGIC {
        return Err(Malformed::NotOurs);
    }
    if bytes[4] != VERSION {
        return Err(Malformed::Version(bytes[4]));
    }
    let kind = Kind::from_u8(bytes[5]).ok_or(Malformed::Kind(bytes[5]))?;
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let mut instance = [0u8; 8];
    instance.copy_from_slice(&bytes[8..16]);
    let to = u16_at(16);
    Ok(Header {
        kind,
        from: usize::from(u16_at(6)),
        instance: u64::from_le_bytes(instance),
        to: (to != EVERY_NODE).then_some(usize::from(to)),
    })
}

/// Decodes the body of a message whose header is `header`.
pub(crate) fn body(header: &Header, bytes: &[u8], limits: ValueLimits) -> Result<Body, Malformed> {
    let bad = |what: &str| Malformed::Body(what.to_owned());
    let value = msgpack::from_slice(&bytes[HEADER_BYTES..], limits)
        .map_err(|e| Malformed::Body(e.to_string()))?;
    let Value::Array(items) = value else {
        return Err(bad("not an array"));
    };
    let mut it = items.into_iter();
    let mut next = || it.next().ok_or_else(|| bad("too few fields"));
    let text = |v: Value| match v {
        Value::Str(s) => Ok(s),
        _ => Err(bad("expected a string")),
    };
    let uint = |v: Value| {
        v.as_u64()
            .ok_or_else(|| bad("expected an unsigned integer"))
    };
    let id = |v: Value| uint(v).map(ConnectionId::from_u64);
    let ids = |v: Value| match v {
        Value::Array(a) => a.into_iter().map(id).collect::<Result<Vec<_>, _>>(),
        _ => Err(bad("expected an array of ids")),
    };
    let flag = |v: Value| v.as_bool().ok_or_else(|| bad("expected a boolean"));
    Ok(match header.kind {
        Kind::Broadcast => {
            let name = text(next()?)?;
            let data = next()?;
            let timestamp_ms = uint(next()?)?;
            let rooms = match next()? {
                Value::Array(a) => a.into_iter().map(text).collect::<Result<_, _>>()?,
                _ => return Err(bad("expected an array of rooms")),
            };
            let include = match next()? {
                Value::Nil => None,
                v => Some(ids(v)?.into_iter().collect()),
            };
            let exclude = ids(next()?)?.into_iter().collect();
            Body::Broadcast {
                name,
                data,
                timestamp_ms,
                rooms,
                include,
                exclude,
            }
        }
        Kind::Send => Body::Send {
            to: id(next()?)?,
            name: text(next()?)?,
            data: next()?,
            timestamp_ms: uint(next()?)?,
        },
        Kind::Kick => {
            let to = id(next()?)?;
            let name = next()?;
            let data = next()?;
            let last = match name {
                Value::Nil => None,
                n => Some((text(n)?, data)),
            };
            Body::Kick {
                to,
                last,
                timestamp_ms: uint(next()?)?,
            }
        }
        Kind::Heartbeat => Body::Heartbeat {
            connections: uint(next()?)? as usize,
            starting: flag(next()?)?,
        },
        Kind::Leaving => Body::Leaving,
        Kind::Ask => {
            let request = uint(next()?)?;
            let what = uint(next()?)?;
            let room = match (what, next()?) {
                (0, _) => None,
                (1, v) => Some(text(v)?),
                _ => return Err(bad("unknown question")),
            };
            Body::Ask { request, room }
        }
        Kind::Answer => Body::Answer {
            request: uint(next()?)?,
            count: uint(next()?)? as usize,
            members: ids(next()?)?,
            truncated: flag(next()?)?,
        },
    })
}

/// An id list as a body field.
pub(crate) fn id_list<'a>(ids: impl IntoIterator<Item = &'a ConnectionId>) -> Value {
    Value::Array(ids.into_iter().map(|i| Value::from(i.as_u64())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ValueLimits = ValueLimits {
        max_depth: 32,
        max_values: 10_000,
    };

    fn head(kind: Kind) -> Header {
        Header {
            kind,
            from: 3,
            instance: 0xdead_beef,
            to: None,
        }
    }

    #[test]
    fn a_broadcast_round_trips() {
        let a = ConnectionId::from_u64(42 << 20 | 3 << 10);
        let body = Value::Array(vec![
            "chat".into(),
            Value::map().with("text", "hi"),
            Value::from(7u64),
            Value::Array(vec!["lobby".into()]),
            Value::Nil,
            id_list([&a]),
        ]);
        let bytes = encode(head(Kind::Broadcast), &body);
        let h = header(&bytes).expect("header");
        assert_eq!(h, head(Kind::Broadcast));
        match body_of(&h, &bytes) {
            Body::Broadcast {
                name,
                rooms,
                include,
                exclude,
                timestamp_ms,
                ..
            } => {
                assert_eq!(name, "chat");
                assert_eq!(rooms, vec!["lobby".to_owned()]);
                assert_eq!(include, None);
                assert!(exclude.contains(&a));
                assert_eq!(timestamp_ms, 7);
            }
            other => panic!("{other:?}"),
        }
    }

    fn body_of(h: &Header, bytes: &[u8]) -> Body {
        body(h, bytes, LIMITS).expect("body")
    }

    #[test]
    fn foreign_and_malformed_messages_are_refused_not_panicked_on() {
        assert_eq!(header(b"hello"), Err(Malformed::NotOurs));
        let mut bytes = encode(head(Kind::Leaving), &Value::Array(vec![]));
        bytes[4] = 2;
        assert_eq!(header(&bytes), Err(Malformed::Version(2)));
        bytes[4] = VERSION;
        bytes[5] = 99;
        assert_eq!(header(&bytes), Err(Malformed::Kind(99)));
        // Every truncation of a valid message is an error, never a panic.
        let good = encode(
            head(Kind::Answer),
            &Value::Array(vec![
                Value::from(1u64),
                Value::from(2u64),
                id_list([&ConnectionId::from_u64(5)]),
                Value::Bool(false),
            ]),
        );
        for cut in 0..good.len() {
            if let Ok(h) = header(&good[..cut]) {
                assert!(body(&h, &good[..cut], LIMITS).is_err(), "cut at {cut}");
            }
        }
        let h = header(&good).expect("header");
        assert!(body(&h, &good, LIMITS).is_ok());
        // A body of the wrong shape.
        let wrong = encode(head(Kind::Send), &Value::Array(vec![Value::from("x")]));
        assert!(body(&header(&wrong).expect("header"), &wrong, LIMITS).is_err());
    }
}
