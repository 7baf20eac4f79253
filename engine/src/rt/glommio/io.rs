//! Socket glue: one TCP stream shared by a connection's reader and writer tasks, and the
//! writer's gathered (vectored) write.
//!
//! glommio's `TcpStream` has no split and its `poll_write_vectored` writes only the first
//! buffer, so the writer gathers with `sendmsg` on the raw fd itself and falls back to
//! glommio's write (which waits for writability) only when the socket is full.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::rc::Rc;

use bytes::{Buf, Bytes};
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

/// The stream, shared by the reader and writer task of one connection. Each borrow lasts
/// for a single poll, so the two never conflict (they wait on separate readiness).
#[derive(Clone)]
pub struct SharedStream(Rc<RefCell<TcpStream>>);

/// Most buffers one gathered write passes to the kernel: Linux's limit (`UIO_MAXIOV`),
/// so a wake-up's whole batch of small frames goes out in one `sendmsg`. The iovecs live
/// on the stack of `SharedStream::send_gathered` (16 KiB, never in a task's future),
/// so no write allocates.
pub const MAX_IOVECS: usize = 1024;

/// A run of small frames up to this many bytes in total is copied into one buffer
/// and sent with one `send` instead of a gathered `sendmsg` (see
/// `SharedStream::send_gathered`).
pub const COALESCE_BYTES: usize = 64 * 1024;

/// Frames up to this size are coalesced; larger ones are gathered (copying them
/// would cost more than the iovec saves).
pub const COALESCE_FRAME_BYTES: usize = 2048;

/// iovec array size for small gathered writes.
const SMALL_IOVECS: usize = 16;

thread_local! {
    /// The shard's buffer for coalesced writes: filled and sent within one
    /// synchronous call, so one per thread serves every connection. Holds at most
    /// [`COALESCE_BYTES`].
    static COALESCE_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One `sendmsg` gathering up to `N` leading frames of `frames`.
fn gather<const N: usize>(
    sock: &socket2::SockRef<'_>,
    frames: &[Bytes],
    flags: libc::c_int,
) -> io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); N];
    let mut count = 0;
    for (slot, frame) in slices.iter_mut().zip(frames) {
        *slot = IoSlice::new(frame);
        count += 1;
    }
    sock.send_vectored_with_flags(&slices[..count], flags)
}

impl SharedStream {
    /// Wraps an accepted stream.
    pub fn new(stream: TcpStream) -> SharedStream {
        SharedStream(Rc::new(RefCell::new(stream)))
    }

    /// Applies the socket options of a server connection.
    pub fn configure(&self, buffer_size: usize) -> io::Result<()> {
        let s = self.0.borrow();
        s.set_nodelay(true).map_err(io::Error::from)?;
        let sock = socket2::SockRef::from(&*s);
        sock.set_send_buffer_size(buffer_size)?;
        sock.set_recv_buffer_size(buffer_size)?;
        Ok(())
    }

    /// Reads into `buf`; 0 means the peer closed.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)).await
    }

    /// Writes some of `buf`, waiting for the socket to accept at least one byte.
    pub async fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        poll_fn(|cx| Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)).await
    }

    /// Writes all of `buf`.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.write_some(buf).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Writes one frame, through the same send path as a batch (no batch needed).
    pub async fn write_frame(&self, mut frame: Bytes) -> io::Result<()> {
        while !frame.is_empty() {
            let n = match self.send_gathered(std::slice::from_ref(&frame)) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.write_some(&frame).await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => return Err(e),
            };
            frame.advance(n.min(frame.len()));
        }
        Ok(())
    }

    /// Writes every frame of `batch`, gathering them into as few syscalls as the socket
    /// allows, and empties `batch`.
    pub async fn write_batch(&self, batch: &mut Vec<Bytes>) -> io::Result<()> {
        let mut first = 0;
        while first < batch.len() {
            let mut n = match self.send_gathered(&batch[first..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Full socket: let glommio wait for room, writing what fits.
                    self.write_some(&batch[first]).await?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => return Err(e),
            };
            while n > 0 && first < batch.len() {
                let len = batch[first].len();
                if n >= len {
                    n -= len;
                    first += 1;
                } else {
                    batch[first].advance(n);
                    n = 0;
                }
            }
        }
        batch.clear();
        Ok(())
    }

    /// One non-blocking send of leading frames of `frames`; returns the bytes the
    /// kernel took. A plain function, so its buffers live on the stack (or in the
    /// thread's scratch buffer) for the call only and never in the writer's future.
    ///
    /// * one frame: a plain `send`;
    /// * a run of small frames (each ≤ [`COALESCE_FRAME_BYTES`], together ≤
    ///   [`COALESCE_BYTES`]): copied into one buffer and sent with one `send`.
    ///   Copying 100 bytes costs a few ns; the kernel's per-iovec work costs far more
    ///   (measured with `conduit-loadgen`: about a quarter of the server's CPU per
    ///   delivery went to `_copy_from_iter` walking 96-byte iovecs);
    /// * otherwise: `sendmsg` gathering up to [`MAX_IOVECS`] frames, with an iovec
    ///   array sized to the batch (initialising 1024 entries for a handful of frames
    ///   cost more than the frames).
    fn send_gathered(&self, frames: &[Bytes]) -> io::Result<usize> {
        let s = self.0.borrow();
        let sock = socket2::SockRef::from(&*s);
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        match frames {
            [] => Ok(0),
            [one] => sock.send_with_flags(one, flags),
            [first, second, ..] if first.len().max(second.len()) <= COALESCE_FRAME_BYTES => {
                COALESCE_SCRATCH.with(|scratch| {
                    let mut buf = scratch.borrow_mut();
                    buf.clear();
                    for f in frames {
                        if f.len() > COALESCE_FRAME_BYTES || buf.len() + f.len() > COALESCE_BYTES {
                            break;
                        }
                        buf.extend_from_slice(f);
                    }
                    let sent = sock.send_with_flags(&buf, flags);
                    if buf.capacity() > COALESCE_BYTES {
                        *buf = Vec::new();
                    }
                    sent
                })
            }
            _ if frames.len() <= SMALL_IOVECS => gather::<SMALL_IOVECS>(&sock, frames, flags),
            _ => gather::<MAX_IOVECS>(&sock, frames, flags),
        }
    }

    /// Closes the write side (the peer reads EOF once queued bytes are through).
    pub async fn shutdown_write(&self) {
        let r = poll_fn(|cx| Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)).await;
        if let Err(e) = r {
            tracing::trace!("shutdown(write): {e}");
        }
    }

    /// Makes the coming close abortive (SO_LINGER 0: RST, unsent bytes dropped), so a
    /// peer that stopped reading does not keep the kernel's send buffer alive for
    /// minutes as an orphaned socket.
    pub fn abort_on_close(&self) {
        let s = self.0.borrow();
        if let Err(e) = socket2::SockRef::from(&*s).set_linger(Some(std::time::Duration::ZERO)) {
            tracing::trace!("SO_LINGER: {e}");
        }
    }

    /// Shuts both directions at once, waking a reader blocked on this socket.
    pub fn shutdown_both(&self) {
        let s = self.0.borrow();
        if let Err(e) = socket2::SockRef::from(&*s).shutdown(Shutdown::Both) {
            tracing::trace!("shutdown(both): {e}");
        }
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.0.borrow().peer_addr().map_err(io::Error::from)
    }
}
