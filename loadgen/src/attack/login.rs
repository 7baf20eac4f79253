//! The login over a blocking socket: a real client's full login with the right
//! password ([`real_login`], how it ended as an [`Outcome`]), and the frame-by-frame
//! handshake step ([`next_step`]) the guesser shares.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use conduit_protocol::clock::wall_clock_ms;
use conduit_protocol::handshake::{ClientHandshake, ClientStep, HandshakeError};
use conduit_protocol::v1::V1Limits;
use conduit_protocol::{Codec, DecoderLimits, FrameDecoder};

use super::net::connect_from;
use super::CONNECT_TIMEOUT;
use crate::target::BENCH_PASSWORD;
use crate::wire::{nonce, CLIENT_MAX_PAYLOAD_BYTES, CLIENT_NAME};

/// How one real login ended.
#[derive(Debug)]
pub(super) enum Outcome {
    Succeeded,
    Refused(String),
    Failed(String),
}

/// A decoder for one client connection in `codec`.
pub(super) fn decoder(codec: Codec) -> FrameDecoder {
    FrameDecoder::new(DecoderLimits {
        max_payload_bytes: CLIENT_MAX_PAYLOAD_BYTES,
        initial_buffer_bytes: 1024,
        accept_v1: codec == Codec::V1,
        accept_native: codec == Codec::Native,
    })
}

/// What waiting for the server's next login frame gave.
pub(super) enum Next {
    Step(Result<ClientStep, HandshakeError>),
    /// Nothing by the deadline.
    TimedOut,
    /// Closed without a frame.
    Closed,
}

/// The handshake's next step from the server's next frame, by `deadline`.
pub(super) fn next_step(
    stream: &mut TcpStream,
    dec: &mut FrameDecoder,
    hs: &mut ClientHandshake,
    deadline: Instant,
) -> io::Result<Next> {
    let limits = V1Limits::default();
    loop {
        match dec.next_frame() {
            Ok(Some(f)) => return Ok(Next::Step(hs.on_frame(&f, &limits, wall_clock_ms()))),
            Ok(None) => {}
            Err(e) => return Ok(Next::Step(Err(HandshakeError::Wire(e)))),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Next::TimedOut);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(dec.spare()) {
            Ok(0) => return Ok(Next::Closed),
            Ok(n) => dec.commit(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Next::TimedOut)
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(Next::Closed),
            Err(e) => return Err(e),
        }
    }
}

/// One real login from `from` with the right password, within `timeout`.
pub(super) fn real_login(
    from: Ipv4Addr,
    to: SocketAddr,
    codec: Codec,
    timeout: Duration,
    seed: u64,
) -> Outcome {
    let deadline = Instant::now() + timeout;
    let mut stream = match connect_from(from, to, timeout.min(CONNECT_TIMEOUT)) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("connect: {}", e.kind())),
    };
    let mut dec = decoder(codec);
    let mut hs = ClientHandshake::new(
        codec,
        BENCH_PASSWORD,
        nonce(seed),
        CLIENT_NAME,
        env!("CARGO_PKG_VERSION"),
    );
    let mut out = match hs.start(wall_clock_ms()) {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(format!("handshake: {e}")),
    };
    loop {
        if let Err(e) = stream.write_all(&out) {
            return Outcome::Failed(format!("write: {}", e.kind()));
        }
        match next_step(&mut stream, &mut dec, &mut hs, deadline) {
            Ok(Next::Step(Ok(ClientStep::Send(b)))) => out = b,
            Ok(Next::Step(Ok(ClientStep::Done(_)))) => return Outcome::Succeeded,
            Ok(Next::Step(Err(HandshakeError::Rejected(r)))) => return Outcome::Refused(r),
            Ok(Next::Step(Err(e))) => return Outcome::Failed(format!("handshake: {e}")),
            Ok(Next::TimedOut) => return Outcome::Failed("timed out".into()),
            Ok(Next::Closed) => return Outcome::Failed("closed without a reason".into()),
            Err(e) => return Outcome::Failed(format!("read: {}", e.kind())),
        }
    }
}
