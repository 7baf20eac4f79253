//! Socket glue on either backend: one TCP stream shared by a connection's reader and
//! writer tasks, the writer's gathered (vectored) write, the listening socket every
//! shard accepts on, and the client's connect.
//!
//! Neither backend's stream writes a whole batch at once (glommio's
//! `poll_write_vectored` writes only the first buffer), so the writer gathers with
//! `sendmsg` on the raw fd itself on both, and waits for room the backend's way only
//! when the socket is full: on glommio by writing the first frame with its stream
//! (a direct `send`, then a wait for writability on its ring), on tokio through its
//! readiness (cleared by the failed send, so it waits for the next edge).
//!
//! Reads on glommio bypass its stream too: glommio would arm an io_uring poll per wait
//! (per request), so they `recv` on the raw fd and wait through the thread's epoll
//! instance, where each socket is registered once (`super::epoll`).

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::Shutdown;
#[cfg(feature = "glommio")]
use std::pin::Pin;
use std::rc::Rc;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
#[cfg(feature = "glommio")]
use futures_lite::AsyncWrite;

use super::Backend;

/// A connected TCP stream of either backend.
pub(crate) enum Stream {
    /// Read through the thread's epoll instance (`super::epoll`), written through
    /// glommio. The registration comes first so it is dropped first: it must leave
    /// the epoll instance while the descriptor is still open.
    #[cfg(feature = "glommio")]
    Glommio(super::epoll::Readiness, glommio::net::TcpStream),
    #[cfg(feature = "tokio")]
    Tokio(tokio::net::TcpStream),
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            #[cfg(feature = "glommio")]
            Stream::Glommio(_, s) => s.as_raw_fd(),
            #[cfg(feature = "tokio")]
            Stream::Tokio(s) => s.as_raw_fd(),
        }
    }
}

/// The stream, shared by the reader and writer task of one connection. Each borrow lasts
/// for a single poll, so the two never conflict (they wait on separate readiness).
#[derive(Clone)]
pub struct SharedStream(Rc<RefCell<Stream>>);

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

/// Marks `n` more bytes of `batch`, from frame `first` on, as written: whole frames
/// are stepped over, a frame written in part is cut to what is left. Returns the
/// index of the first frame not entirely written.
pub(crate) fn sent(batch: &mut [Bytes], mut first: usize, mut n: usize) -> usize {
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
    first
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
    fn wrap(stream: Stream) -> SharedStream {
        SharedStream(Rc::new(RefCell::new(stream)))
    }

    /// Connects to `addr` on the current thread's backend within `timeout`, with
    /// `TCP_NODELAY` set.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<SharedStream> {
        let stream = match super::exec::current() {
            #[cfg(feature = "glommio")]
            Backend::Glommio => Stream::Glommio(
                Default::default(),
                glommio::net::TcpStream::connect_timeout(addr, timeout)
                    .await
                    .map_err(io::Error::from)?,
            ),
            #[cfg(feature = "tokio")]
            Backend::Tokio => Stream::Tokio(
                tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
                    .await
                    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??,
            ),
        };
        let stream = SharedStream::wrap(stream);
        socket2::SockRef::from(&*stream.0.borrow()).set_nodelay(true)?;
        Ok(stream)
    }

    /// Connects to `addr` from the local address `source` (its port chosen at connect)
    /// on the current thread's backend within `timeout`, with `TCP_NODELAY` set. One
    /// client spreads its connections over several source addresses this way: the
    /// kernel's ephemeral ports (about 28 000 by default) are counted per source
    /// address and destination, and servers budget logins per source address.
    /// `source` and `addr` must be of the same family.
    pub async fn connect_from(
        source: IpAddr,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<SharedStream> {
        if source.is_ipv4() != addr.is_ipv4() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot connect from {source} to {addr}: address families differ"),
            ));
        }
        let stream = match super::exec::current() {
            #[cfg(feature = "glommio")]
            Backend::Glommio => {
                let s = super::bind::glommio_connect_from(source, addr, timeout).await?;
                Stream::Glommio(Default::default(), s)
            }
            #[cfg(feature = "tokio")]
            Backend::Tokio => {
                let socket = match addr {
                    SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                    SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                };
                super::bind::bind_source(&socket2::SockRef::from(&socket), source)?;
                Stream::Tokio(
                    tokio::time::timeout(timeout, socket.connect(addr))
                        .await
                        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??,
                )
            }
        };
        let stream = SharedStream::wrap(stream);
        socket2::SockRef::from(&*stream.0.borrow()).set_nodelay(true)?;
        Ok(stream)
    }

    /// The local address of the stream (the source address a client connected from).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &*self.0.borrow() {
            #[cfg(feature = "glommio")]
            Stream::Glommio(_, s) => s.local_addr().map_err(io::Error::from),
            #[cfg(feature = "tokio")]
            Stream::Tokio(s) => s.local_addr(),
        }
    }

    /// Takes an accepted stream that arrived from another thread onto the current
    /// thread's backend.
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<SharedStream> {
        Ok(SharedStream::wrap(match super::exec::current() {
            #[cfg(feature = "glommio")]
            Backend::Glommio => {
                use std::os::fd::{FromRawFd, IntoRawFd};
                // SAFETY: the descriptor is an open, connected TCP socket passed in by
                // value; ownership moves to the glommio stream, which closes it.
                Stream::Glommio(Default::default(), unsafe {
                    glommio::net::TcpStream::from_raw_fd(stream.into_raw_fd())
                })
            }
            #[cfg(feature = "tokio")]
            Backend::Tokio => {
                stream.set_nonblocking(true)?;
                Stream::Tokio(tokio::net::TcpStream::from_std(stream)?)
            }
        }))
    }

    /// Releases the stream from this thread's backend, to hand it to another thread
    /// ([`SharedStream::from_std`] there). Only for a stream no task holds yet. When it
    /// cannot be released — still shared, or (glommio) no duplicate descriptor at the
    /// open-files limit — the stream comes back with the error, still usable here.
    pub fn into_std(self) -> Result<std::net::TcpStream, (Option<SharedStream>, io::Error)> {
        let stream = match Rc::try_unwrap(self.0) {
            Ok(cell) => cell.into_inner(),
            Err(rc) => {
                let e = io::Error::other("the stream is still shared");
                return Err((Some(SharedStream(rc)), e));
            }
        };
        match stream {
            // glommio cannot give its descriptor up: keep a duplicate, close its own.
            #[cfg(feature = "glommio")]
            Stream::Glommio(readiness, s) => {
                // Out of this thread's epoll instance before the descriptor closes.
                drop(readiness);
                // SAFETY: `s` owns this open descriptor and outlives the borrow.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(s.as_raw_fd()) };
                match fd.try_clone_to_owned() {
                    Ok(owned) => Ok(std::net::TcpStream::from(owned)),
                    Err(e) => {
                        let s = Stream::Glommio(Default::default(), s);
                        Err((Some(SharedStream::wrap(s)), e))
                    }
                }
            }
            #[cfg(feature = "tokio")]
            Stream::Tokio(s) => s.into_std().map_err(|e| (None, e)),
        }
    }

    /// Applies the socket options of a server connection.
    pub fn configure(&self, buffer_size: usize) -> io::Result<()> {
        let s = self.0.borrow();
        let sock = socket2::SockRef::from(&*s);
        sock.set_nodelay(true)?;
        sock.set_send_buffer_size(buffer_size)?;
        sock.set_recv_buffer_size(buffer_size)?;
        Ok(())
    }

    /// Reads into `buf`; 0 means the peer closed.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read(cx, buf)).await
    }

    /// Reads into `buf` if the peer sent something, else registers `cx` for when it
    /// does (on glommio with the thread's epoll instance, see `super::epoll`). Neither
    /// backend touches `buf` while waiting (both wait for readiness, then read), so each poll may pass a different buffer: a buffer shared by every
    /// connection of a thread, borrowed for one poll only, serves idle connections.
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match &mut *self.0.borrow_mut() {
            #[cfg(feature = "glommio")]
            Stream::Glommio(readiness, s) => readiness.poll_read(s.as_raw_fd(), cx, buf),
            #[cfg(feature = "tokio")]
            Stream::Tokio(s) => loop {
                if let Err(e) = std::task::ready!(s.poll_read_ready(cx)) {
                    return Poll::Ready(Err(e));
                }
                // A read that did not fill `buf` took everything the socket had: its
                // readiness is cleared right away (as a `WouldBlock` from the closure
                // does, checked against the readiness tick so a packet arriving since
                // is not lost), which saves the read that would only say `EAGAIN` —
                // one system call per request.
                let mut drained = None;
                let read = s.try_io(tokio::io::Interest::READABLE, || {
                    let n = super::sys::recv(s.as_raw_fd(), buf, 0)?;
                    if n > 0 && n < buf.len() {
                        drained = Some(n);
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    Ok(n)
                });
                match (read, drained) {
                    (_, Some(n)) => return Poll::Ready(Ok(n)),
                    // Readiness was stale; the failed read cleared it.
                    (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    (r, None) => return Poll::Ready(r),
                }
            },
        }
    }

    /// Writes some of `buf`, waiting for the socket to accept at least one byte.
    pub async fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        poll_fn(|cx| match &mut *self.0.borrow_mut() {
            #[cfg(feature = "glommio")]
            Stream::Glommio(_, s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tokio")]
            Stream::Tokio(s) => loop {
                if let Err(e) = std::task::ready!(s.poll_write_ready(cx)) {
                    return Poll::Ready(Err(e));
                }
                match s.try_write(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return Poll::Ready(r),
                }
            },
        })
        .await
    }

    /// Sends leading frames of `frames`, waiting for room when the socket is full;
    /// returns the bytes the kernel took (at least one).
    async fn send_some(&self, frames: &[Bytes]) -> io::Result<usize> {
        loop {
            match self.send_gathered(frames) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Some(n) = self.wait_writable(&frames[0]).await? {
                        return Ok(n);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits for a full socket to take bytes again. On glommio this also writes:
    /// its stream sends (part of) `first` once there is room, and how much went is
    /// returned; on tokio it only waits for writability (`None`: nothing written).
    async fn wait_writable(&self, first: &[u8]) -> io::Result<Option<usize>> {
        let backend = match &*self.0.borrow() {
            #[cfg(feature = "glommio")]
            Stream::Glommio(..) => Backend::Glommio,
            #[cfg(feature = "tokio")]
            Stream::Tokio(_) => Backend::Tokio,
        };
        match backend {
            #[cfg(feature = "glommio")]
            Backend::Glommio => self.write_some(first).await.map(Some),
            #[cfg(feature = "tokio")]
            Backend::Tokio => {
                let _ = first;
                poll_fn(|cx| match &*self.0.borrow() {
                    Stream::Tokio(s) => s.poll_write_ready(cx),
                    #[cfg(feature = "glommio")]
                    Stream::Glommio(..) => Poll::Ready(Ok(())),
                })
                .await
                .map(|()| None)
            }
        }
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
            let n = self.send_some(std::slice::from_ref(&frame)).await?;
            frame.advance(n.min(frame.len()));
        }
        Ok(())
    }

    /// Writes every frame of `batch`, gathering them into as few syscalls as the socket
    /// allows, and empties `batch`.
    pub async fn write_batch(&self, batch: &mut Vec<Bytes>) -> io::Result<()> {
        let mut first = 0;
        while first < batch.len() {
            let n = self.send_some(&batch[first..]).await?;
            first = sent(batch, first, n);
        }
        batch.clear();
        Ok(())
    }

    /// One non-blocking send of leading frames of `frames` (retried on a signal):
    /// the bytes the kernel took, or `WouldBlock` when the socket is full.
    pub fn try_send(&self, frames: &[Bytes]) -> io::Result<usize> {
        loop {
            match self.send_gathered(frames) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
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
        match &*self.0.borrow() {
            #[cfg(feature = "glommio")]
            Stream::Glommio(_, s) => Self::send_raw(&socket2::SockRef::from(s), frames),
            // Straight to the socket; only when it is full is the send made again
            // through `try_io`, which notes tokio's write readiness before it sends
            // and clears it if the send still finds no room — so the wait that
            // follows is for a writable event newer than that send, even when
            // tokio's driver runs on another thread (an application's runtime under
            // the client). Asking tokio first on every send cost more than the rare
            // second send.
            #[cfg(feature = "tokio")]
            Stream::Tokio(s) => match Self::send_raw(&socket2::SockRef::from(s), frames) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => s
                    .try_io(tokio::io::Interest::WRITABLE, || {
                        Self::send_raw(&socket2::SockRef::from(s), frames)
                    }),
                sent => sent,
            },
        }
    }

    /// The send itself, on the raw socket (see [`SharedStream::send_gathered`]).
    fn send_raw(sock: &socket2::SockRef<'_>, frames: &[Bytes]) -> io::Result<usize> {
        // No SIGPIPE from a peer that went away (Rust programs ignore it anyway; a host
        // application may not). macOS has no MSG_NOSIGNAL; there the Rust default holds.
        #[cfg(target_os = "linux")]
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        #[cfg(not(target_os = "linux"))]
        let flags = libc::MSG_DONTWAIT;
        match frames {
            [] => Ok(0),
            [one] => super::sys::send(sock.as_raw_fd(), one, flags),
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
                    let sent = super::sys::send(sock.as_raw_fd(), &buf, flags);
                    if buf.capacity() > COALESCE_BYTES {
                        *buf = Vec::new();
                    }
                    sent
                })
            }
            _ if frames.len() <= SMALL_IOVECS => gather::<SMALL_IOVECS>(sock, frames, flags),
            _ => gather::<MAX_IOVECS>(sock, frames, flags),
        }
    }

    /// Closes the write side (the peer reads EOF once queued bytes are through).
    pub async fn shutdown_write(&self) {
        let r = poll_fn(|cx| match &mut *self.0.borrow_mut() {
            #[cfg(feature = "glommio")]
            Stream::Glommio(_, s) => Pin::new(s).poll_close(cx),
            #[cfg(feature = "tokio")]
            Stream::Tokio(s) => {
                let _ = cx;
                Poll::Ready(socket2::SockRef::from(&*s).shutdown(Shutdown::Write))
            }
        })
        .await;
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
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match &*self.0.borrow() {
            #[cfg(feature = "glommio")]
            Stream::Glommio(_, s) => s.peer_addr().map_err(io::Error::from),
            #[cfg(feature = "tokio")]
            Stream::Tokio(s) => s.peer_addr(),
        }
    }
}

/// The listening socket of a server: bound once, without `SO_REUSEPORT`, so the port
/// belongs to this server alone — a second server, or any program setting
/// `SO_REUSEPORT`, gets "address in use" — while every shard accepts on its own
/// descriptor of it ([`Listener::from_fd`]).
pub(crate) fn listen_exclusive(addr: SocketAddr, backlog: i32) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    // Rebinding over connections still in TIME_WAIT (a restart) is fine; sharing is not.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket)
}

/// One shard's accepting end of the server's listening socket.
pub(crate) enum Listener {
    #[cfg(feature = "glommio")]
    Glommio(glommio::net::TcpListener),
    #[cfg(feature = "tokio")]
    Tokio(tokio::net::TcpListener),
}

impl Listener {
    /// Takes `fd` (a descriptor of a listening socket) onto the current thread's
    /// backend. On tokio it must run inside the shard's runtime.
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<Listener> {
        Ok(match super::exec::current() {
            #[cfg(feature = "glommio")]
            Backend::Glommio => {
                use std::os::fd::{FromRawFd, IntoRawFd};
                // SAFETY: `fd` is an open, bound, listening TCP socket passed in by
                // value; ownership moves to the glommio listener, which closes it.
                Listener::Glommio(unsafe {
                    glommio::net::TcpListener::from_raw_fd(fd.into_raw_fd())
                })
            }
            #[cfg(feature = "tokio")]
            Backend::Tokio => {
                let std = std::net::TcpListener::from(fd);
                std.set_nonblocking(true)?;
                Listener::Tokio(tokio::net::TcpListener::from_std(std)?)
            }
        })
    }

    /// The next connection.
    pub(crate) async fn accept(&self) -> io::Result<SharedStream> {
        Ok(SharedStream::wrap(match self {
            #[cfg(feature = "glommio")]
            Listener::Glommio(l) => Stream::Glommio(
                Default::default(),
                l.accept().await.map_err(io::Error::from)?,
            ),
            #[cfg(feature = "tokio")]
            Listener::Tokio(l) => Stream::Tokio(l.accept().await?.0),
        }))
    }

    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            #[cfg(feature = "glommio")]
            Listener::Glommio(l) => l.local_addr().map_err(io::Error::from),
            #[cfg(feature = "tokio")]
            Listener::Tokio(l) => l.local_addr(),
        }
    }
}
