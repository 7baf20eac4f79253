//! A connection as its shard holds it: what the read loop, the writer, the fan-out
//! and the heartbeat tick share, and how it reads from its socket.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use conduit_protocol::{Codec, FrameDecoder};

use super::websocket::WsConn;
use super::Shard;
use crate::core::{CloseReason, ConnCore, LocalNotify, Outbound};
use crate::router::{ConnMeta, Listed, Pending, Permit};
use crate::rt::net::SharedStream;
use crate::rt::tls::TlsLayer;

/// A connection as its owning shard holds it.
///
/// `repr(C)`, fields in this order: what the reader touches on every read comes
/// first (within the first 128 bytes of the allocation), then the core (itself ordered
/// hot first).
#[repr(C)]
pub(crate) struct LocalConn {
    /// The socket, shared by the reader and the writer.
    pub(super) stream: SharedStream,
    /// The core's outbound queue, which broadcasts fan out into.
    pub out: Rc<Outbound>,
    /// What any thread may read of it (id, codec, login, closed).
    pub meta: Arc<ConnMeta>,
    /// The WebSocket framing state, for a connection that came through the WebSocket
    /// listener (boxed: most connections have none, and it would size every one).
    pub(super) ws: Option<Box<WsConn>>,
    /// The TLS layer, below the WebSocket framing, when the server speaks TLS (boxed,
    /// likewise: over a kilobyte).
    pub(super) tls: Option<Box<TlsLayer>>,
    /// Wakes the reader (and abandons a running handler) when a close is requested.
    pub(super) close_requested: LocalNotify,
    /// First reason anyone asked this connection to close for.
    pub(super) close: Cell<Option<CloseReason>>,
    /// Every protocol decision; borrowed only for synchronous steps, never across an
    /// await, so the heartbeat tick and the reader never collide.
    pub core: RefCell<ConnCore>,
    /// Position in the shard's dense list of logged-in connections.
    pub slot: Cell<usize>,
    /// The `max_connections` slot and, once logged in, the directory entry and count:
    /// given back when dropped (at teardown, or by the shard if it exits first).
    pub held: RefCell<Held>,
}

/// What a connection holds in the server's shared counts.
#[derive(Default)]
pub(crate) struct Held {
    /// Its `max_connections` slot.
    pub slot: Option<Permit>,
    /// Its budgets as a connection logging in (`max_pending`, `max_pending_per_source`),
    /// given back at login.
    pub pending: Option<Pending>,
    /// Its directory entry and connection count, once logged in.
    pub listed: Option<Listed>,
}

impl LocalConn {
    /// Asks the connection to close (the reader acts on it); the first reason wins.
    pub fn request_close(&self, reason: CloseReason) {
        if self.close.get().is_none() {
            self.close.set(Some(reason));
            self.close_requested.notify();
        }
    }

    /// The codec it speaks (v1 until its first frame says otherwise).
    pub fn codec(&self) -> Codec {
        self.meta.codec().unwrap_or(Codec::V1)
    }

    /// Closes its socket now (the shard is exiting with this connection unfinished).
    pub fn abandon(&self) {
        self.stream.shutdown_both();
    }
}

impl LocalConn {
    /// Reads into `buf` what the peer sent: as it is on TCP, or decrypted.
    pub(super) async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &self.tls {
            None => self.stream.read(buf).await,
            Some(tls) => tls.read(&self.stream, buf, &self.out.ready).await,
        }
    }

    /// Reads what the peer sent into `decoder`'s spare room: on TCP and WebSocket
    /// through the shard's receive pool, so an idle connection holds no receive
    /// buffer while it waits; under TLS (whose layer buffers records itself) into the
    /// decoder's own buffer.
    pub(super) async fn read_into(
        &self,
        shard: &Shard,
        decoder: &mut FrameDecoder,
    ) -> std::io::Result<usize> {
        match &self.tls {
            None => shard.recv.read(&self.stream, decoder).await,
            Some(_) => self.read(decoder.spare()).await,
        }
    }

    /// Whether what is queued for it may be written outside its writer task
    /// (`rt::writer::write_now`): on plain TCP, whose writer adds nothing to a frame.
    pub(super) fn writes_directly(&self) -> bool {
        self.tls.is_none() && self.ws.is_none()
    }

    /// Runs `work`, which may wait, with the reader's hold on writer wake-ups lifted
    /// (see `Outbound::hold_wakes`): what it queues meanwhile is written by the writer,
    /// as always; the hold resumes after.
    pub(super) async fn unheld<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        let held = self.out.is_holding();
        if held {
            self.out.release_wakes();
        }
        let done = work.await;
        if held {
            self.out.hold_wakes();
        }
        done
    }

    /// Makes the `n` bytes just read into `decoder`'s spare room part of its buffer:
    /// as they are on TCP, or taken out of their WebSocket frames.
    pub(super) fn took(
        &self,
        shard: &Shard,
        decoder: &mut FrameDecoder,
        n: usize,
    ) -> Result<(), CloseReason> {
        shard.metrics.bytes_in.add(n as u64);
        match &self.ws {
            None => {
                decoder.commit(n);
                Ok(())
            }
            Some(ws) => ws.ingest(decoder, n, &self.out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_reader_touches_on_every_read_comes_before_the_core() {
        use std::mem::{offset_of, size_of};
        // Behind the `Rc`'s two counts: within the first two cache lines.
        let rc_counts = 2 * size_of::<usize>();
        let end = offset_of!(LocalConn, close) + size_of::<Cell<Option<CloseReason>>>();
        assert!(rc_counts + end <= 128, "{end}");
        for field in [
            offset_of!(LocalConn, stream),
            offset_of!(LocalConn, out),
            offset_of!(LocalConn, meta),
            offset_of!(LocalConn, ws),
            offset_of!(LocalConn, tls),
            offset_of!(LocalConn, close_requested),
        ] {
            assert!(field < offset_of!(LocalConn, core));
        }
    }
}
