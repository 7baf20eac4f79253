//! The buffer every encoder writes a frame into, and how it is handed over: a frame
//! holds exactly its own length (what the engine's outbound bound charges). A leaf:
//! both codecs' encoders use it.
//!
//! A frame is written into the thread's scratch buffer (for the native codec with the
//! thread's serializer arena as rkyv's scratch space). One of at most
//! [`SCRATCH_FRAME_BYTES`] is copied out at its exact length — one allocation, never a
//! buffer grown and then shrunk — and the scratch kept for the next; a larger one
//! becomes the frame itself (shrunk to its length, the next frame starting a new
//! scratch buffer). A frame encoded while the scratch is in use (an encoding inside an
//! encoding) is built in a buffer of its own.

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
    /// per-thread arena, which is taken out of its thread-local and put back on every
    /// frame).
    arena: Arena,
}

thread_local! {
    static SCRATCH: RefCell<FrameScratch> = RefCell::new(FrameScratch::default());
}

/// A frame `write` builds: it gets an empty buffer (and the thread's serializer arena,
/// when the scratch is free) and returns the buffer holding the whole frame.
pub(crate) fn build<E>(
    write: impl FnOnce(Vec<u8>, Option<&mut Arena>) -> Result<Vec<u8>, E>,
) -> Result<bytes::Bytes, E> {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            let FrameScratch { buf, arena } = &mut *scratch;
            let mut out = std::mem::take(buf);
            out.clear();
            let written = write(out, Some(arena));
            // Its largest block is what the arena keeps (the others go at the next
            // use): bounded whether or not the frame was written.
            if arena.shrink() > SCRATCH_ARENA_BYTES {
                *arena = Arena::new();
            }
            let out = written?;
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
        Err(_) => write(Vec::with_capacity(SMALL_FRAME_BYTES), None).map(seal),
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

/// What this thread's scratch keeps allocated: buffer bytes and arena bytes.
#[cfg(test)]
pub(crate) fn scratch_capacities() -> (usize, usize) {
    SCRATCH.with(|cell| {
        let scratch = cell.borrow();
        (scratch.buf.capacity(), scratch.arena.capacity())
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
        let (buf, _) = scratch_capacities();
        assert!(buf <= 2 * SCRATCH_FRAME_BYTES);
        // A small frame left in a buffer grown large (a payload compressed after it
        // was written) is copied out, and the large buffer not kept.
        let shrunk = build(|mut out, _| -> Result<Vec<u8>, ()> {
            out.resize(100_000, 7);
            out.truncate(5);
            Ok(out)
        })
        .unwrap();
        assert_eq!(shrunk.as_ref(), &[7u8; 5]);
        assert!(scratch_capacities().0 <= 2 * SCRATCH_FRAME_BYTES);
    }
}
