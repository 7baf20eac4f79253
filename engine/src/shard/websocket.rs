//! A shard connection's WebSocket glue: the upgrade before anything else, and the
//! in-place deframing of every read, so the core sees the same byte stream as on TCP.
//! The framing itself is in `crate::ws` (no I/O).

use std::cell::{Cell, RefCell};
use std::time::Duration;

use conduit_protocol::FrameDecoder;
use futures_lite::FutureExt;

use crate::core::{CloseReason, Outbound, PeerMisbehaved};
use crate::rt::exec::sleep;
use crate::rt::net::SharedStream;
use crate::rt::tls::TlsLayer;
use crate::ws::frame::{self, Deframer, WsControl};
use crate::ws::upgrade::{answer, UpgradeRefusal};
use crate::ws::WebSocketSettings;

/// What a WebSocket connection keeps beyond a TCP one.
pub(crate) struct WsConn {
    /// Inbound framing state.
    deframer: RefCell<Deframer>,
    /// The close code to send, when the transport itself refused something.
    refused: Cell<Option<u16>>,
}

impl WsConn {
    /// State for a connection whose messages may be up to `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> WsConn {
        WsConn {
            deframer: RefCell::new(Deframer::new(max_message_bytes)),
            refused: Cell::new(None),
        }
    }

    /// Takes apart the `n` bytes just read into `decoder`'s spare room: the protocol
    /// bytes they carry are committed to the decoder, a ping is answered with a pong
    /// (ahead of queued frames), and a close or a refused frame ends the connection.
    pub fn ingest(
        &self,
        decoder: &mut FrameDecoder,
        n: usize,
        out: &Outbound,
    ) -> Result<(), CloseReason> {
        let mut controls = Vec::new();
        let kept = {
            let spare = decoder.spare();
            let taken = self
                .deframer
                .borrow_mut()
                .deframe(&mut spare[..n], &mut controls);
            match taken {
                Ok(kept) => kept,
                Err(refusal) => {
                    tracing::debug!("websocket frame refused: {refusal}");
                    self.refused.set(Some(refusal.code()));
                    return Err(CloseReason::Misbehaved(PeerMisbehaved::BadWebSocketFrame));
                }
            }
        };
        decoder.commit(kept);
        for c in controls {
            match c {
                WsControl::Ping(payload) => out.push_unbounded(frame::pong(&payload)),
                WsControl::Close(_) => return Err(CloseReason::PeerSaidGoodbye),
            }
        }
        Ok(())
    }

    /// The close frame to send last, for a connection closing for `reason`.
    pub fn close_frame(&self, reason: CloseReason) -> bytes::Bytes {
        let code = self.refused.get().unwrap_or(match reason {
            CloseReason::Misbehaved(_) => 1002,
            CloseReason::AuthFailed | CloseReason::TokenExpired => 1008,
            CloseReason::ServerStopping => 1001,
            _ => 1000,
        });
        frame::close(code, reason.wire_text())
    }
}

/// An upgrade request that was accepted; the `101` is sent with [`accept`].
pub(crate) struct Accepted {
    /// Bytes that followed the request (already WebSocket frames).
    pub early: Vec<u8>,
    /// The `101 Switching Protocols` answer.
    response: Vec<u8>,
    /// The last `X-Forwarded-For` address, if any.
    pub forwarded_for: Option<std::net::IpAddr>,
}

/// Reads the upgrade request (within `wait`, at most `max_upgrade_request_bytes`,
/// starting with `first_bytes` already read) and checks it: the accepted request (its
/// `101` not sent yet), or `None` when it was refused (an HTTP error was sent), timed
/// out or the peer left.
pub(crate) async fn upgrade(
    stream: &SharedStream,
    tls: Option<&TlsLayer>,
    settings: &WebSocketSettings,
    wait: Duration,
    first_bytes: Vec<u8>,
) -> Option<Accepted> {
    let work = async {
        // What was read already (past a PROXY header) starts the request.
        let mut filled = first_bytes.len();
        let mut buf = first_bytes;
        buf.resize(filled.max(1024), 0);
        loop {
            match answer(&buf[..filled], settings) {
                Ok(Some(up)) => {
                    return Some(Accepted {
                        early: buf[up.consumed..filled].to_vec(),
                        response: up.response,
                        forwarded_for: up.forwarded_for,
                    });
                }
                Ok(None) => {
                    if filled == buf.len() {
                        let grown = (buf.len() * 2).min(settings.max_upgrade_request_bytes);
                        buf.resize(grown.max(filled + 1), 0);
                    }
                    let read = match tls {
                        None => stream.read(&mut buf[filled..]).await,
                        // Nothing for the writer yet: it starts after the upgrade.
                        Some(tls) => {
                            let wake = crate::core::LocalNotify::default();
                            let r = tls.read(stream, &mut buf[filled..], &wake).await;
                            match tls.take_direct(stream).await {
                                Ok(()) => r,
                                Err(e) => Err(e),
                            }
                        }
                    };
                    match read {
                        Ok(0) | Err(_) => return None,
                        Ok(n) => filled += n,
                    }
                }
                Err(refusal) => {
                    refuse(stream, tls, &refusal).await;
                    return None;
                }
            }
        }
    };
    let late = async {
        sleep(wait).await;
        tracing::debug!("websocket upgrade timed out");
        None
    };
    work.or(late).await
}

/// Sends the `101` that completes an accepted upgrade.
pub(crate) async fn accept(
    stream: &SharedStream,
    tls: Option<&TlsLayer>,
    accepted: &Accepted,
) -> bool {
    write(stream, tls, &accepted.response).await.is_ok()
}

/// Answers an accepted upgrade request with `503` and `reason` instead (the login
/// budgets of the address behind the proxy refused it).
pub(crate) async fn unavailable(stream: &SharedStream, tls: Option<&TlsLayer>, reason: &str) {
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{reason}",
        reason.len()
    );
    let _ = write(stream, tls, response.as_bytes()).await;
}

async fn refuse(stream: &SharedStream, tls: Option<&TlsLayer>, refusal: &UpgradeRefusal) {
    tracing::debug!("websocket upgrade refused: {refusal}");
    let _ = write(stream, tls, &refusal.response()).await;
}

/// Writes `bytes` before the writer runs: as they are, or encrypted.
async fn write(stream: &SharedStream, tls: Option<&TlsLayer>, bytes: &[u8]) -> std::io::Result<()> {
    match tls {
        None => stream.write_all(bytes).await,
        Some(tls) => tls.write_direct(stream, bytes).await,
    }
}
