//! The part of a client connect from a chosen source address that is not the
//! backend's own: binding the socket to the address (its port left to the connect),
//! and, on glommio — whose `TcpStream::connect` cannot bind first — the whole connect:
//! a non-blocking `connect` on a socket built here, completed by polling the socket
//! without ever blocking the executor.

use std::io;
use std::net::{IpAddr, SocketAddr};
#[cfg(feature = "glommio")]
use std::time::Duration;

/// The first wait between two looks at a glommio connect still in progress; each
/// further wait doubles, up to [`CONNECT_POLL_MAX`]. A loopback connect has normally
/// completed by the time `connect` returns, so the first look finds it done.
#[cfg(feature = "glommio")]
const CONNECT_POLL_FIRST: Duration = Duration::from_millis(1);

/// The longest wait between two looks at a glommio connect in progress (a SYN the
/// listener dropped is retried by the kernel after a second, so finer looks gain
/// nothing).
#[cfg(feature = "glommio")]
const CONNECT_POLL_MAX: Duration = Duration::from_millis(50);

/// Binds `sock` to `source` with the port left for the connect to choose
/// (`IP_BIND_ADDRESS_NO_PORT` on Linux): a port chosen at bind would have to be free
/// towards every destination, so one address would hold only one ephemeral range in
/// all; chosen at connect, the range is per destination.
pub(super) fn bind_source(sock: &socket2::SockRef<'_>, source: IpAddr) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads an int-sized value from a live local for the call,
        // on a descriptor `sock` borrows.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                std::ptr::addr_of!(one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            // Only a wider use of ports is lost: the bind below still works.
            tracing::trace!("IP_BIND_ADDRESS_NO_PORT: {}", io::Error::last_os_error());
        }
    }
    sock.bind(&SocketAddr::new(source, 0).into())
}

/// A glommio stream connected from `source` to `addr` within `timeout`.
///
/// The socket is built with socket2 and connected non-blocking; while the connect is
/// in progress the task sleeps on the executor's timer between looks (`poll` with a
/// zero timeout: it never blocks the thread). Once connected the socket is made
/// blocking again, as glommio's own sockets are: io_uring answers `EAGAIN` on a
/// non-blocking one instead of waiting.
#[cfg(feature = "glommio")]
pub(super) async fn glommio_connect_from(
    source: IpAddr,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<glommio::net::TcpStream> {
    use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
    use std::time::Instant;

    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    bind_source(&socket2::SockRef::from(&socket), source)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let deadline = Instant::now() + timeout;
    let mut wait = CONNECT_POLL_FIRST;
    loop {
        let mut p = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one pollfd, alive for the call; a zero timeout never blocks.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else if n > 0 {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        super::exec::sleep(wait.min(deadline - now)).await;
        wait = (wait * 2).min(CONNECT_POLL_MAX);
    }
    if let Some(e) = socket.take_error()? {
        return Err(e);
    }
    socket.set_nonblocking(false)?;
    // SAFETY: the descriptor is an open, connected TCP socket owned by `socket`;
    // ownership moves to the glommio stream, which closes it.
    Ok(unsafe { glommio::net::TcpStream::from_raw_fd(socket.into_raw_fd()) })
}
