//! The native receive path copies no payload bytes: a frame read into the decoder's
//! buffer is validated and read where the read put it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use conduit_protocol::native::{self, ArchivedNode, ArchivedValueTree, ValueTree};
use conduit_protocol::{DecoderLimits, FrameDecoder, FrameKind, Value};

/// Whether `[ptr, ptr + len)` lies inside the address range `[start, end)`.
fn within((start, end): (usize, usize), ptr: *const u8, len: usize) -> bool {
    let p = ptr as usize;
    p >= start && p + len <= end
}

#[test]
fn native_payload_is_read_in_place() {
    let text = "a string long enough to be stored out of line in the archive";
    let data = Value::map().with("message", text).with("n", 7);
    let frame = native::Encoder::new(0)
        .message("chat", &ValueTree::from_value(&data))
        .unwrap();
    // A first, small frame puts the second one off offset 0 of the buffer.
    let mut wire = native::Encoder::new(0).empty(FrameKind::Ping).to_vec();
    wire.extend_from_slice(&frame);

    // Emulate a socket read: the bytes land directly in the decoder's spare room.
    let mut d = FrameDecoder::new(DecoderLimits::default());
    let spare = d.spare();
    spare[..wire.len()].copy_from_slice(&wire);
    d.commit(wire.len());
    let range = d.buffer().storage().as_ptr_range();
    let range = (range.start as usize, range.end as usize);

    assert_eq!(
        d.next_frame().unwrap().unwrap().header.kind,
        FrameKind::Ping
    );
    let f = d.next_frame().unwrap().unwrap();
    assert_eq!(
        f.payload.as_ptr() as usize % 8,
        0,
        "payload starts 8-byte aligned"
    );
    assert!(within(range, f.payload.as_ptr(), f.payload.len()));
    let (route, body) = native::split_route(f.payload).unwrap();
    assert_eq!(route, "chat");
    assert!(within(range, route.as_ptr(), route.len()));
    let tree = native::access::<ArchivedValueTree>(body).unwrap();
    // The archived string's bytes are the receive buffer's bytes: nothing was copied.
    let s = tree
        .nodes
        .iter()
        .find_map(|n| match n {
            ArchivedNode::Str(s) if s.as_str() == text => Some(s.as_str()),
            _ => None,
        })
        .expect("the message text");
    assert!(within(range, s.as_ptr(), s.len()));
}
