//! Shared fixtures for the criterion benches: sample values, single payloads and
//! multi-frame streams in both codecs, and a socket-like driver for
//! [`FrameDecoder`].
//!
//! Everything here is deterministic so two runs bench the same bytes.

use conduit_protocol::native::{self, ArchivedNode, ArchivedValueTree, ValueTree};
use conduit_protocol::{v1, Frame, FrameDecoder, Value, WireError};
use rkyv::util::AlignedVec;

/// Number of frames in a benchmark stream.
pub const STREAM_FRAMES: usize = 1000;

/// Route (message type) of the stream and read fixtures.
pub const TICK: &str = "tick";

/// Route (message type) of the broadcast fixture.
pub const CHAT: &str = "chat";

/// Timestamp stamped into every fixture frame (fixed, so the bytes are reproducible).
pub const TIMESTAMP_MS: u64 = 1_700_000_000_000;

/// First `seq` of a stream; large enough that every `seq` of a stream has the same
/// MessagePack width (uint32), so every v1 frame of a stream has the same size.
pub const FIRST_SEQ: u64 = 1_000_000;

/// The data of one `tick` message: `{seq, x, y, note}`.
///
/// Its v1 MESSAGE payload (`{"type": "tick", "data": …}`) is 64 bytes.
pub fn tick_value(seq: u64) -> Value {
    Value::map()
        .with("seq", seq)
        .with("x", 1.5)
        .with("y", -2.25)
        .with("note", "all quiet.")
}

/// The data of one broadcast `chat` message: `{from, message, time}`.
pub fn chat_value() -> Value {
    Value::map()
        .with("from", "alice")
        .with("message", "hello everyone, how is it going?")
        .with("time", 1_700_000_000.125)
}

/// One netconduit-v1 MESSAGE `tick` frame, header included.
pub fn v1_tick_frame(seq: u64) -> Vec<u8> {
    v1::Encoder::new(TIMESTAMP_MS)
        .message(TICK, &tick_value(seq))
        .to_vec()
}

/// One native MESSAGE `tick` frame (body a [`ValueTree`]), header included.
///
/// # Errors
///
/// Whatever [`native::Encoder::message`] reports (nothing, for this fixture).
pub fn native_tick_frame(seq: u64) -> Result<Vec<u8>, WireError> {
    Ok(native::Encoder::new(TIMESTAMP_MS)
        .message(TICK, &ValueTree::from_value(&tick_value(seq)))?
        .to_vec())
}

/// `n` v1 `tick` frames back to back, `seq` counting up from [`FIRST_SEQ`].
pub fn v1_stream(n: usize) -> Vec<u8> {
    (FIRST_SEQ..FIRST_SEQ + n as u64)
        .flat_map(v1_tick_frame)
        .collect()
}

/// `n` native `tick` frames back to back, `seq` counting up from [`FIRST_SEQ`].
///
/// # Errors
///
/// Whatever [`native::Encoder::message`] reports (nothing, for this fixture).
pub fn native_stream(n: usize) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    for seq in FIRST_SEQ..FIRST_SEQ + n as u64 {
        out.extend(native_tick_frame(seq)?);
    }
    Ok(out)
}

/// The payload (header stripped) of the v1 `tick` frame for [`FIRST_SEQ`]: the
/// MessagePack map `{"type": "tick", "data": {seq, x, y, note}}`.
pub fn v1_tick_payload() -> Vec<u8> {
    v1_tick_frame(FIRST_SEQ)[conduit_protocol::HEADER_LEN..].to_vec()
}

/// The payload (header and trailing pad stripped) of the native `tick` frame for
/// [`FIRST_SEQ`] — route prefix then the archived [`ValueTree`] — in an 8-byte
/// aligned buffer, as the decoder hands it out.
///
/// # Errors
///
/// Whatever encoding or decoding the fixture frame reports (nothing, in practice).
pub fn native_tick_payload() -> Result<AlignedVec<16>, WireError> {
    let frame = native_tick_frame(FIRST_SEQ)?;
    let mut decoder = FrameDecoder::new(conduit_protocol::DecoderLimits::default());
    decoder.feed(&frame);
    let f = decoder.next_frame()?.ok_or(WireError::Shape {
        kind: "bench fixture",
        problem: "fixture frame did not decode whole",
    })?;
    let mut out = AlignedVec::<16>::new();
    out.extend_from_slice(f.payload);
    Ok(out)
}

/// Reads the integer entry `key` of the root map of an archived [`ValueTree`], in
/// place: walks the pre-order nodes, skipping values that are not wanted, and never
/// builds a [`Value`].
///
/// Returns `None` if the root is not a map, `key` is absent, or its value is not an
/// integer that fits `i64`.
pub fn archived_get_i64(tree: &ArchivedValueTree, key: &str) -> Option<i64> {
    let nodes = tree.nodes.as_slice();
    let ArchivedNode::Map(entries) = nodes.first()? else {
        return None;
    };
    let mut at = 1usize;
    for _ in 0..entries.to_native() {
        let ArchivedNode::Str(k) = nodes.get(at)? else {
            return None;
        };
        at += 1;
        if k.as_str() == key {
            return match nodes.get(at)? {
                ArchivedNode::Int(i) => Some(i.to_native()),
                _ => None,
            };
        }
        at = skip_subtree(nodes, at)?;
    }
    None
}

/// Index one past the subtree that starts at `at`, or `None` if the nodes run out.
fn skip_subtree(nodes: &[ArchivedNode], mut at: usize) -> Option<usize> {
    let mut pending = 1u64;
    while pending > 0 {
        pending -= 1;
        match nodes.get(at)? {
            ArchivedNode::Array(n) => pending += u64::from(n.to_native()),
            ArchivedNode::Map(n) => pending += 2 * u64::from(n.to_native()),
            _ => {}
        }
        at += 1;
    }
    Some(at)
}

/// Pushes `stream` through `decoder` the way a socket loop does: each "read" copies as
/// many bytes as [`FrameDecoder::spare`] offers, [`FrameDecoder::commit`]s them, then
/// drains every whole frame with [`FrameDecoder::next_frame`], handing each to
/// `on_frame`. Returns the number of frames seen.
///
/// # Errors
///
/// The first error the decoder or `on_frame` reports.
pub fn drain_like_socket(
    decoder: &mut FrameDecoder,
    mut stream: &[u8],
    mut on_frame: impl FnMut(Frame<'_>) -> Result<(), WireError>,
) -> Result<usize, WireError> {
    let mut frames = 0;
    while !stream.is_empty() {
        let spare = decoder.spare();
        let n = spare.len().min(stream.len());
        if n == 0 {
            return Err(WireError::Shape {
                kind: "bench stream",
                problem: "decoder offered no spare room",
            });
        }
        spare[..n].copy_from_slice(&stream[..n]);
        decoder.commit(n);
        stream = &stream[n..];
        while let Some(f) = decoder.next_frame()? {
            on_frame(f)?;
            frames += 1;
        }
    }
    Ok(frames)
}

/// Feeds the whole of `stream` into `decoder` with [`FrameDecoder::feed`], then drains
/// every whole frame, handing each to `on_frame`. Returns the number of frames seen.
///
/// # Errors
///
/// The first error the decoder or `on_frame` reports, or a shape error if `feed` did
/// not take every byte.
pub fn drain_after_feed(
    decoder: &mut FrameDecoder,
    stream: &[u8],
    mut on_frame: impl FnMut(Frame<'_>) -> Result<(), WireError>,
) -> Result<usize, WireError> {
    if decoder.feed(stream) != stream.len() {
        return Err(WireError::Shape {
            kind: "bench stream",
            problem: "feed did not take the whole stream",
        });
    }
    let mut frames = 0;
    while let Some(f) = decoder.next_frame()? {
        on_frame(f)?;
        frames += 1;
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_protocol::msgpack;
    use conduit_protocol::{DecoderLimits, ValueLimits};

    #[test]
    fn fixtures_have_the_advertised_shape() {
        assert_eq!(v1_tick_payload().len(), 64);
        let v1 = v1_stream(STREAM_FRAMES);
        assert_eq!(v1.len(), STREAM_FRAMES * (32 + 64));
        let native = native_stream(STREAM_FRAMES).unwrap();
        assert_eq!(native.len() % 8, 0);
    }

    #[test]
    fn both_drivers_see_every_frame() {
        let v1 = v1_stream(STREAM_FRAMES);
        let native = native_stream(STREAM_FRAMES).unwrap();
        for stream in [&v1, &native] {
            let mut d = FrameDecoder::new(DecoderLimits::default());
            assert_eq!(
                drain_like_socket(&mut d, stream, |_| Ok(())).unwrap(),
                STREAM_FRAMES
            );
            assert_eq!(d.buffered(), 0);
            let mut d = FrameDecoder::new(DecoderLimits::default());
            assert_eq!(
                drain_after_feed(&mut d, stream, |_| Ok(())).unwrap(),
                STREAM_FRAMES
            );
        }
    }

    #[test]
    fn in_place_read_matches_msgpack_read() {
        let payload = native_tick_payload().unwrap();
        let (route, body) = native::split_route(&payload).unwrap();
        assert_eq!(route, TICK);
        let tree = native::access::<ArchivedValueTree>(body).unwrap();
        assert_eq!(archived_get_i64(tree, "seq"), Some(FIRST_SEQ as i64));
        assert_eq!(archived_get_i64(tree, "note"), None);
        assert_eq!(archived_get_i64(tree, "absent"), None);
        assert_eq!(
            tree.to_value(ValueLimits::default()).unwrap(),
            tick_value(FIRST_SEQ)
        );
        let v = msgpack::from_slice(&v1_tick_payload(), ValueLimits::default()).unwrap();
        assert_eq!(
            v.get("data")
                .and_then(|d| d.get("seq"))
                .and_then(Value::as_i64),
            Some(FIRST_SEQ as i64)
        );
    }

    #[test]
    fn skip_subtree_skips_nested_values() {
        let v = Value::map()
            .with(
                "a",
                Value::from_iter([Value::map().with("z", 1), Value::Nil]),
            )
            .with("b", 7);
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&ValueTree::from_value(&v)).unwrap();
        let tree = native::access::<ArchivedValueTree>(&bytes).unwrap();
        assert_eq!(archived_get_i64(tree, "b"), Some(7));
        assert_eq!(archived_get_i64(tree, "z"), None);
    }
}
