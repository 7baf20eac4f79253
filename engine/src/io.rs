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

    /// One non-blocking `sendmsg` of up to [`MAX_IOVECS`] leading frames of `frames`.
    /// A plain function, so the iovec array lives on the stack for the call only and
    /// never in the writer's future.
    fn send_gathered(&self, frames: &[Bytes]) -> io::Result<usize> {
        let s = self.0.borrow();
        let sock = socket2::SockRef::from(&*s);
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let mut count = 0;
        for (slot, frame) in slices.iter_mut().zip(frames) {
            *slot = IoSlice::new(frame);
            count += 1;
        }
        sock.send_vectored_with_flags(&slices[..count], libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
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
