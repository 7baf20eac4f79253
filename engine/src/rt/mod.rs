//! Runtime helpers for application tasks that live on a shard (timers, background
//! work), so applications need not depend on the executor directly — and, inside the
//! crate, the runtime backends: the thin glue that drives the connection core on an
//! executor (sockets, timers, spawning), one folder per backend.

pub(crate) mod glommio;

pub use crate::exec::{sleep, spawn};

/// Connections the listening socket queues before a shard accepts them (the kernel caps
/// it at `net.core.somaxconn`); one queue serves every shard.
const LISTEN_BACKLOG: i32 = 4096;

/// The server's one listening socket: every shard accepts on a descriptor of it, and it
/// does not set `SO_REUSEPORT`, so the port belongs to this server — a second server,
/// or any program of the same user asking for `SO_REUSEPORT`, fails with "address in
/// use" instead of silently taking a share of new connections. `SO_REUSEADDR` lets a
/// restarted server bind while old connections linger in TIME_WAIT.
pub(crate) fn listen_exclusive(addr: std::net::SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket)
}
