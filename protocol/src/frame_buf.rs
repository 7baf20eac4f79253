//! The buffer every encoder writes a frame into, and how it is handed over: started
//! small and given back its slack, so a queued frame holds its own length (what the
//! engine's outbound bound charges). A leaf: both codecs' encoders use it.

/// The buffer a frame starts in: a header and a small reply or message fit without
/// growing it.
pub const SMALL_FRAME_BYTES: usize = 64;

/// A finished frame buffer as `Bytes`, with no unused capacity. Shrinking splits the
/// allocation in place (nothing is copied), and a buffer exactly full becomes `Bytes`
/// without the shared-buffer record a partly full one would need: a frame that is
/// never cloned (a reply) has no record; the first clone of one (a broadcast's) adds
/// it.
pub(crate) fn seal(mut out: Vec<u8>) -> bytes::Bytes {
    out.shrink_to_fit();
    bytes::Bytes::from(out)
}
