//! Receive buffers only while there is something to receive: an idle connection — its
//! decoder holding no partial frame — waits for its socket with no buffer of its own.
//! When bytes arrive they are read into the shard's scratch buffer (borrowed for that
//! one poll), a buffer is taken from the shard's small pool of buffers other idle
//! decoders gave up, and the bytes are copied into it; the decoder gives it back as
//! soon as it is drained again. A connection in the middle of a frame keeps its
//! buffer and reads straight into it.
//!
//! What it costs: one copy of each read that starts on an idle connection (at most
//! `recv_buffer_bytes`), and a pop and push on the pool. What it saves: the receive
//! buffer (`recv_buffer_bytes`, 4 KiB by default) of every idle connection.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::task::Poll;

use conduit_protocol::decoder::RecvBuf;
use conduit_protocol::FrameDecoder;

use crate::rt::net::SharedStream;

/// Most empty receive buffers a shard keeps for the next reads: enough for the
/// connections one pass of the executor handles between two waits; the rest are freed.
pub(crate) const MAX_POOLED_RECV_BUFFERS: usize = 16;

/// One shard's receive scratch and pool of empty buffers.
#[derive(Default)]
pub(crate) struct RecvPool {
    /// Empty buffers of the decoders' initial capacity, given up by idle decoders, for
    /// the next connection that receives (at most [`MAX_POOLED_RECV_BUFFERS`]).
    spare: RefCell<Vec<RecvBuf>>,
    /// Where a read for an idle connection lands: borrowed within one poll, so every
    /// connection of the shard shares it. Grows to the decoders' initial capacity.
    scratch: RefCell<Vec<u8>>,
}

impl RecvPool {
    /// Reads what the peer sent into `decoder`'s spare room (the caller commits it, as
    /// after a read into [`FrameDecoder::spare`]); `Ok(0)` when the peer closed. An
    /// idle decoder gives its buffer to the pool first and waits without one.
    pub async fn read(
        &self,
        stream: &SharedStream,
        decoder: &mut FrameDecoder,
    ) -> io::Result<usize> {
        if let Some(buf) = decoder.park() {
            let mut spare = self.spare.borrow_mut();
            if spare.len() < MAX_POOLED_RECV_BUFFERS {
                spare.push(buf);
            }
        }
        if !decoder.is_parked() {
            // A partial frame: read straight into its buffer.
            return stream.read(decoder.spare()).await;
        }
        let cap = decoder.initial_capacity();
        poll_fn(|cx| {
            let mut scratch = self.scratch.borrow_mut();
            if scratch.len() < cap {
                scratch.resize(cap, 0);
            }
            let n = match stream.poll_read(cx, &mut scratch[..cap]) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            if n > 0 {
                decoder.unpark(self.spare.borrow_mut().pop());
                // An unparked decoder's spare room is its whole initial capacity.
                let room = decoder.spare();
                debug_assert!(room.len() >= n);
                let n = n.min(room.len());
                room[..n].copy_from_slice(&scratch[..n]);
                return Poll::Ready(Ok(n));
            }
            Poll::Ready(Ok(0))
        })
        .await
    }
}
