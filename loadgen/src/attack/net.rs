//! Loopback-only TCP sockets bound to a chosen source address (127.0.0.x), so one
//! process can connect as the attacker and as each real client: a non-blocking
//! connect the lockout attacker polls itself, and a blocking connection within a
//! timeout for the logins.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A socket address as `sockaddr_in`.
fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A non-blocking socket bound to `from` (its port chosen at connect, so one source
/// address is not limited to one ephemeral port range per destination) whose connect
/// to `to` has started.
pub(super) fn start_connect(from: Ipv4Addr, to: SocketAddr) -> io::Result<OwnedFd> {
    let SocketAddr::V4(to) = to else {
        return Err(io::Error::other("IPv4 only"));
    };
    if !to.ip().is_loopback() || !from.is_loopback() {
        return Err(io::Error::other("loopback only"));
    }
    // SAFETY: plain socket calls on a descriptor this function owns from its creation;
    // every pointer passed points at a live local of the size given.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let p = (&one as *const libc::c_int).cast();
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            p,
            len,
        );
        libc::setsockopt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, p, len);
        let src = sockaddr(SocketAddrV4::new(from, 0));
        let slen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(
            fd.as_raw_fd(),
            (&src as *const libc::sockaddr_in).cast(),
            slen,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        let dst = sockaddr(to);
        if libc::connect(
            fd.as_raw_fd(),
            (&dst as *const libc::sockaddr_in).cast(),
            slen,
        ) != 0
        {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(fd)
    }
}

/// Waits up to `timeout` for `events` on `fd`; the events seen (0: timed out).
fn poll_one(fd: &OwnedFd, events: libc::c_short, timeout: Duration) -> io::Result<libc::c_short> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one pollfd, alive for the call.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if n == 0 { 0 } else { p.revents })
}

/// A blocking TCP connection from `from` to `to`, within `timeout`.
pub(super) fn connect_from(
    from: Ipv4Addr,
    to: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let fd = start_connect(from, to)?;
    if poll_one(&fd, libc::POLLOUT, timeout)? == 0 {
        return Err(io::ErrorKind::TimedOut.into());
    }
    let stream = TcpStream::from(fd);
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attack::ATTACKER_ADDR;

    #[test]
    fn only_loopback() {
        let far: SocketAddr = "192.0.2.1:80".parse().unwrap();
        assert!(start_connect(ATTACKER_ADDR, far).is_err());
    }
}
