//! Getting a logged-in connection: resolving the host, opening the socket and running
//! the login handshake, all within `connect_timeout`.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;

use conduit_protocol::clock::wall_clock_ms;
use conduit_protocol::handshake::{ClientHandshake, ClientStep, LoginInfo};
use conduit_protocol::v1::V1Limits;
use conduit_protocol::{Codec, DecoderLimits, FrameDecoder};
use futures_lite::FutureExt;

use super::loops::Conn;
use super::{ClientDescriptor, ClientError, ClientResult};
use crate::rt::exec::sleep;
use crate::rt::net::SharedStream;
use crate::rt::tls::TlsLayer;

/// A connection that just logged in.
pub(super) struct Established {
    /// The connection, ready for its reader and writer.
    pub conn: Rc<Conn>,
    /// The reader's decoder, holding any bytes that arrived after the login frames
    /// (a message the server pushes right after AUTH_SUCCESS is not lost).
    pub decoder: FrameDecoder,
    /// What the server said at login.
    pub info: LoginInfo,
}

/// `N` bytes from the operating system's CSPRNG.
pub(super) fn random_bytes<const N: usize>() -> ClientResult<[u8; N]> {
    let mut b = [0u8; N];
    // No entropy, no login: a predictable nonce would make the proof replayable.
    getrandom::getrandom(&mut b).map_err(|e| ClientError::Io(io::Error::other(e.to_string())))?;
    Ok(b)
}

/// Connects to `desc`'s server and logs in, bounded by `connect_timeout`. Each address
/// the host resolves to is tried in turn while they cannot be reached; a login refused
/// is final.
pub(super) async fn establish(
    desc: &ClientDescriptor,
    v1_limits: &V1Limits,
) -> ClientResult<Established> {
    let attempt = async {
        let mut last = None;
        for addr in resolve(desc).await? {
            match login(desc, v1_limits, addr).await {
                Ok(r) => return Ok(r),
                // Try the next address only if this one could not be reached.
                Err(ClientError::Io(e)) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Io(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "no address to connect to")
        })))
    };
    let late = async {
        sleep(desc.connect_timeout).await;
        Err(ClientError::Timeout)
    };
    attempt.or(late).await
}

/// The addresses to try, resolving names off the executor thread.
async fn resolve(desc: &ClientDescriptor) -> ClientResult<Vec<SocketAddr>> {
    let (host, port) = (desc.host.clone(), desc.port);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let host_for_lookup = host.clone();
    // On the backend's bounded blocking pool, so the lookup blocks no executor.
    let addrs = crate::rt::exec::spawn_blocking(move || {
        (host_for_lookup.as_str(), port)
            .to_socket_addrs()
            .map(Iterator::collect::<Vec<_>>)
    })
    .await??;
    if addrs.is_empty() {
        return Err(ClientError::Io(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no address"),
        )));
    }
    Ok(addrs)
}

/// Opens a socket to `addr` and runs the login handshake on it.
async fn login(
    desc: &ClientDescriptor,
    v1_limits: &V1Limits,
    addr: SocketAddr,
) -> ClientResult<Established> {
    let stream = SharedStream::connect(addr, desc.connect_timeout).await?;
    let tls = match &desc.tls {
        None => None,
        Some(settings) => {
            let tls = rustls::ClientConnection::new(settings.config()?, settings.name()?)
                .map_err(io::Error::other)?;
            let layer = TlsLayer::new(tls);
            layer.handshake(&stream, &[]).await?;
            Some(layer)
        }
    };
    let tls_ref = tls.as_ref();
    let mut decoder = FrameDecoder::new(DecoderLimits {
        max_payload_bytes: desc.max_frame_bytes,
        initial_buffer_bytes: 4096,
        accept_v1: desc.codec == Codec::V1,
        accept_native: desc.codec == Codec::Native,
    });
    let mut hs = match &desc.token {
        Some(token) => ClientHandshake::with_token(desc.codec, token, &desc.name, &desc.version),
        None => ClientHandshake::new(
            desc.codec,
            &desc.password,
            random_bytes::<32>()?,
            &desc.name,
            &desc.version,
        ),
    };
    write(&stream, tls_ref, &hs.start(wall_clock_ms())?).await?;
    loop {
        // Bytes after the last login frame stay in the decoder for the reader: a
        // message the server sends right after AUTH_SUCCESS is never lost.
        let step = loop {
            match decoder.next_frame()? {
                Some(frame) => break hs.on_frame(&frame, v1_limits, wall_clock_ms())?,
                None => {
                    let n = read_some(&stream, tls_ref, decoder.spare()).await?;
                    if n == 0 {
                        return Err(ClientError::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection during login",
                        )));
                    }
                    decoder.commit(n);
                }
            }
        };
        match step {
            ClientStep::Send(frame) => write(&stream, tls_ref, &frame).await?,
            ClientStep::Done(info) => {
                let conn = Rc::new(Conn::new(stream, tls, desc));
                return Ok(Established {
                    conn,
                    decoder,
                    info,
                });
            }
        }
    }
}

/// Writes `bytes` before the writer runs: as they are, or encrypted.
async fn write(stream: &SharedStream, tls: Option<&TlsLayer>, bytes: &[u8]) -> io::Result<()> {
    match tls {
        None => stream.write_all(bytes).await,
        Some(tls) => tls.write_direct(stream, bytes).await,
    }
}

/// Reads what is there (decrypted, over TLS), retrying reads interrupted by a signal.
async fn read_some(
    stream: &SharedStream,
    tls: Option<&TlsLayer>,
    buf: &mut [u8],
) -> io::Result<usize> {
    loop {
        let read = match tls {
            None => stream.read(buf).await,
            Some(tls) => {
                // No writer yet: what the TLS layer has to send goes out here.
                let r = tls
                    .read(stream, buf, &crate::core::LocalNotify::default())
                    .await;
                tls.take_direct(stream).await.and(r)
            }
        };
        match read {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}
