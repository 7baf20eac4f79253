//! The buffer every encoder writes a frame into, and how it is handed over: a frame
//! holds exactly its own length (what the engine's outbound bound charges). A leaf:
//! both codecs' encoders use it.
//!
//! A frame is built in the thread's scratch buffer (and, for the native codec, with
//! the thread's serializer arena as rkyv's scratch space) and copied out at its exact
//! length: one allocation per frame, never a buffer grown and then shrunk. A frame
//! larger than [`SCRATCH_FRAME_BYTES`], or one encoded while the scratch is in use
//! (an encoding inside an encoding), is built in a buffer of its own, which becomes
//! the frame.

use std::cell::RefCell;

use rkyv::ser::allocator::Arena;

/// The buffer a frame built alone starts in: a header and a small reply or message fit
/// without growing it.
pub const SMALL_FRAME_BYTES: usize = 64;

/// Largest frame (bytes, header included) built in the per-thread scratch buffer and
/// copied out; a larger one becomes the frame itself. The scratch buffer keeps at most
/// twice this allocated between frames.
pub const SCRATCH_FRAME_BYTES: usize = 4096;

/// Most serializer arena (bytes) a thread keeps between frames: a frame that needed
/// more leaves a fresh arena behind.
pub const SCRATCH_ARENA_BYTES: usize = 64 << 10;

/// What the encoders of one thread reuse from frame to frame.
#[derive(Default)]
struct FrameScratch {
    /// The frame being built.
    buf: Vec<u8>,
    /// rkyv's scratch space while it serializes (kept here rather than in rkyv's own
    /// per-thread arena, which is taken out, shrunk and put back on every frame).
    arena: Arena,
}

thread_local! {
    static SCRATCH: RefCell<FrameScratch> = RefCell::new(FrameScratch::default());
}

/// A frame `build` writes: it gets an empty buffer (and the thread's serializer arena,
/// when the scratch is free) and returns the buffer holding the whole frame.
pub(crate) fn build<E>(
    build: impl FnOnce(Vec<u8>, Option<&mut Arena>) -> Result<Vec<u8>, E>,
) -> Result<bytes::Bytes, E> {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            let FrameScratch { buf, arena } = &mut *scratch;
            let mut out = std::mem::take(buf);
            out.clear();
            let out = build(out, Some(arena))?;
            if arena.capacity() > SCRATCH_ARENA_BYTES {
                *arena = Arena::new();
            }
            if out.len() > SCRATCH_FRAME_BYTES {
                return Ok(seal(out));
            }
            let frame = bytes::Bytes::copy_from_slice(&out);
            if out.capacity() <= 2 * SCRATCH_FRAME_BYTES {
                *buf = out;
            }
            Ok(frame)
        }
        // In use: an encoding inside an encoding gets a buffer of its own.
        Err(_) => build(Vec::with_capacity(SMALL_FRAME_BYTES), None).map(seal),
    })
}

/// A finished frame buffer as `Bytes`, with no unused capacity. Shrinking splits the
/// allocation in place (nothing is copied), and a buffer exactly full becomes `Bytes`
/// without the shared-buffer record a partly full one would need: a frame that is
/// never cloned (a reply) has no record; the first clone of one (a broadcast's) adds
/// it.
fn seal(mut out: Vec<u8>) -> bytes::Bytes {
    out.shrink_to_fit();
    bytes::Bytes::from(out)
}

/// Runs `f` with this thread's scratch in use, as an encoding inside an encoding
/// finds it (for tests of what is then built alone).
#[cfg(test)]
pub(crate) fn with_scratch_held<R>(f: impl FnOnce() -> R) -> R {
    SCRATCH.with(|cell| {
        let _held = cell.borrow_mut();
        f()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_built_in_the_scratch_match_frames_built_alone_and_keep_within_bounds() {
        let write = |n: usize| {
            move |mut out: Vec<u8>, _: Option<&mut Arena>| -> Result<Vec<u8>, ()> {
                out.extend((0..n).map(|i| i as u8));
                Ok(out)
            }
        };
        for n in [0, 10, SCRATCH_FRAME_BYTES, SCRATCH_FRAME_BYTES + 1, 100_000] {
            let scratch = build(write(n)).unwrap();
            // With the scratch in use: a buffer of its own, the same bytes.
            let alone = with_scratch_held(|| build(write(n)).unwrap());
            assert_eq!(scratch, alone);
            assert_eq!(scratch.len(), n);
        }
        // An error leaves the scratch usable.
        assert_eq!(build(|_, _| Err::<Vec<u8>, _>("no")), Err("no"));
        assert_eq!(build(write(3)).unwrap(), vec![0u8, 1, 2]);
        SCRATCH.with(|cell| {
            let scratch = cell.borrow();
            assert!(scratch.buf.capacity() <= 2 * SCRATCH_FRAME_BYTES);
            assert!(scratch.arena.capacity() <= SCRATCH_ARENA_BYTES);
        });
    }
}
