//! A connection's setup before its first frame: the TLS handshake and the WebSocket
//! upgrade (with a trusted proxy's `X-Forwarded-For`), each within its timeout and
//! `auth_timeout`. Run in a boxed future of its own, so the connection's task is not
//! sized for it.

use std::rc::Rc;
use std::sync::Arc;

use futures_lite::FutureExt;

use super::websocket::{self, WsConn};
use super::Shard;
use crate::router::Pending;
use crate::rt::exec::sleep;
use crate::rt::net::SharedStream;
use crate::rt::tls::{self, TlsLayer};
use crate::ws::Transport;

/// What a connection's setup (TLS handshake, WebSocket upgrade) leaves for serving it.
pub(super) struct Prepared {
    /// The peer's address: behind a trusted HTTP proxy, the forwarded client's.
    pub peer: std::net::SocketAddr,
    /// Its login budget, moved with the address.
    pub pending: Pending,
    /// The TLS layer, when the server speaks TLS.
    pub tls: Option<Box<TlsLayer>>,
    /// The WebSocket framing, for a connection of the WebSocket listener.
    pub ws: Option<Box<WsConn>>,
    /// Bytes read past the setup: the first frames.
    pub early: Vec<u8>,
}

/// What the setup of a connection starts from: its admission but the
/// `max_connections` slot, which [`serve`](super::conn::serve) keeps.
pub(super) struct Setup {
    /// The peer's address (see [`Admission::peer`]).
    pub peer: std::net::SocketAddr,
    /// Its login budget (see [`Admission::pending`]).
    pub pending: Pending,
    /// Bytes read before it was served (see [`Admission::first_bytes`]).
    pub first_bytes: Vec<u8>,
    /// The listener it came through.
    pub transport: Transport,
}

/// A connection's setup: socket options, the TLS handshake, the WebSocket upgrade;
/// `None` when it failed (the socket is shut).
pub(super) async fn prepare(
    shard: &Rc<Shard>,
    stream: &SharedStream,
    setup: Setup,
) -> Option<Prepared> {
    let Setup {
        mut peer,
        mut pending,
        first_bytes,
        transport,
    } = setup;
    let desc = shard.router.descriptor();
    // TLS first, then a WebSocket upgrade inside it (its slot and login budget held
    // throughout, and given back if either fails).
    let (tls, first_bytes) = match shard.router.tls() {
        None => (None, first_bytes),
        Some(state) => {
            let wait = desc.tls_handshake_timeout.min(desc.auth_timeout);
            match handshake(stream, state.config(), &first_bytes, wait).await {
                Some(layer) => (Some(Box::new(layer)), Vec::new()),
                None => {
                    stream.shutdown_both();
                    return None;
                }
            }
        }
    };
    let (ws, early) = match (transport, &desc.websocket) {
        (Transport::WebSocket, Some(settings)) => {
            let wait = settings.upgrade_timeout.min(desc.auth_timeout);
            let upgraded = websocket::upgrade(stream, tls.as_deref(), settings, wait, first_bytes);
            let Some(accepted) = upgraded.await else {
                stream.shutdown_both();
                return None;
            };
            // Behind a trusted proxy speaking HTTP, the client is the address it put
            // last in X-Forwarded-For: its login budget and its address from now on.
            if let Some(ip) = accepted
                .forwarded_for
                .filter(|_| desc.is_trusted_proxy(peer.ip()))
            {
                let client = std::net::SocketAddr::new(ip, 0);
                let stats = shard.router.counts();
                let moved = stats.move_source(&mut pending, client, desc.max_pending_per_source);
                if let Err(why) = moved {
                    shard.metrics.refused(why.into());
                    let reason = super::accept::refusal_reason(why).wire_text();
                    websocket::unavailable(stream, tls.as_deref(), reason).await;
                    stream.shutdown_both();
                    return None;
                }
                peer = client;
            }
            if !websocket::accept(stream, tls.as_deref(), &accepted).await {
                stream.shutdown_both();
                return None;
            }
            let max = desc.max_frame_bytes as usize + conduit_protocol::HEADER_LEN;
            (Some(Box::new(WsConn::new(max))), accepted.early)
        }
        _ => (None, first_bytes),
    };
    Some(Prepared {
        peer,
        pending,
        tls,
        ws,
        early,
    })
}

/// Completes a TLS handshake within `wait`, starting with `early` (read already, past
/// a PROXY header); `None` when it failed, timed out or the peer left.
async fn handshake(
    stream: &SharedStream,
    config: Arc<rustls::ServerConfig>,
    early: &[u8],
    wait: std::time::Duration,
) -> Option<TlsLayer> {
    let layer = match rustls::ServerConnection::new(config) {
        Ok(c) => TlsLayer::new(c),
        Err(e) => {
            tracing::error!("TLS: {e}");
            return None;
        }
    };
    let work = async { Some(layer.handshake(stream, early).await) };
    let late = async {
        sleep(wait).await;
        None
    };
    match work.or(late).await {
        Some(Ok(())) => Some(layer),
        Some(Err(e)) => {
            if tls::is_protocol_error(&e) {
                tracing::debug!("TLS handshake refused: {e}");
            } else {
                tracing::debug!("TLS handshake cut off: {e}");
            }
            None
        }
        None => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}
