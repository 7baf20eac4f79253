//! The two socket calls on every request's path — `recv` and `send` of one buffer — as
//! plain system calls. glibc's wrappers make them thread-cancellation points: each
//! call is bracketed by two atomic updates of the thread's cancellation state, work a
//! non-blocking socket on a thread nobody cancels never needs (about 1 % of an RPC's
//! server CPU in a profile). Elsewhere the libc functions themselves.

use std::io;
use std::os::fd::RawFd;

/// `recv(fd, buf, flags)`.
pub(crate) fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    // SAFETY: `buf` is valid for writes of its length for the duration of the call; the
    // address arguments are null, as recvfrom(2) allows.
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            libc::c_long::from(fd),
            buf.as_mut_ptr(),
            buf.len(),
            libc::c_long::from(flags),
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    #[cfg(not(target_os = "linux"))]
    // SAFETY: as above.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) } as libc::c_long;
    byte_count(n)
}

/// `send(fd, buf, flags)`.
pub(crate) fn send(fd: RawFd, buf: &[u8], flags: libc::c_int) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    // SAFETY: `buf` is valid for reads of its length for the duration of the call; no
    // destination address, as sendto(2) allows on a connected socket.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            libc::c_long::from(fd),
            buf.as_ptr(),
            buf.len(),
            libc::c_long::from(flags),
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::c_long,
        )
    };
    #[cfg(not(target_os = "linux"))]
    // SAFETY: as above.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) } as libc::c_long;
    byte_count(n)
}

/// A system call's byte count, or the error `errno` holds when it returned -1.
fn byte_count(n: libc::c_long) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    #[test]
    fn send_and_recv_move_bytes_and_report_errors() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let fd = server.as_raw_fd();
        assert_eq!(super::send(fd, b"ping", 0).unwrap(), 4);
        let mut got = [0u8; 4];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        client.write_all(b"pong!").unwrap();
        let mut buf = [0u8; 16];
        let mut n = 0;
        while n < 5 {
            n += super::recv(fd, &mut buf[n..], 0).unwrap();
        }
        assert_eq!(&buf[..5], b"pong!");
        // Nothing more: a non-blocking receive says so as an error, not a panic.
        let e = super::recv(fd, &mut buf, libc::MSG_DONTWAIT).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        assert!(
            super::recv(-1, &mut buf, 0).is_err(),
            "a bad descriptor is an error"
        );
    }
}
