//! The buffer every encoder writes a frame into, and how it is handed over: started
//! small and given back its slack, so a queued frame holds about its own length (what
//! the engine's outbound bound charges). A leaf: both codecs' encoders use it.

/// The buffer a frame starts in: a header and a small reply or message fit without
/// growing it, and leave at most [`MAX_FRAME_SLACK_BYTES`] unused (so the common small
/// frame is never reallocated to shed slack).
pub const SMALL_FRAME_BYTES: usize = 64;

/// Most unused capacity a frame's buffer keeps: more is given back before the frame
/// leaves the encoder, so a queued frame holds about its own length in memory — what
/// outbound limits charge it (with a fixed per-frame overhead; see the engine's
/// `FRAME_OVERHEAD_BYTES`). Shrinking splits the allocation in place; nothing is copied.
pub const MAX_FRAME_SLACK_BYTES: usize = 32;

/// A finished frame buffer as `Bytes`, without more than [`MAX_FRAME_SLACK_BYTES`] of
/// unused capacity.
pub(crate) fn seal(mut out: Vec<u8>) -> bytes::Bytes {
    if out.capacity() - out.len() > MAX_FRAME_SLACK_BYTES {
        out.shrink_to_fit();
    }
    bytes::Bytes::from(out)
}
