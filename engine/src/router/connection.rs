//! `Connection`: the application's handle to one client, usable from any shard or
//! thread. Operations on a connection owned by another shard travel over the bus.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use conduit_protocol::{Codec, Value};

use super::Router;
use crate::error::{Error, Result};
use crate::id::ConnectionId;

/// Facts about a connection that any thread may read. Written only at login and close,
/// never per message.
#[derive(Debug)]
pub(crate) struct ConnMeta {
    /// The connection's id.
    pub id: ConnectionId,
    /// The peer's address.
    pub peer_addr: SocketAddr,
    /// 0 until login; then 1 (v1) or 2 (native). A send by id encodes only this codec.
    codec: AtomicU8,
    /// Set at login: only logged-in connections receive messages.
    authenticated: AtomicBool,
    /// Set when the connection starts closing: sends to it fail fast.
    closed: AtomicBool,
}

impl ConnMeta {
    pub fn new(id: ConnectionId, peer_addr: SocketAddr) -> ConnMeta {
        ConnMeta {
            id,
            peer_addr,
            codec: AtomicU8::new(0),
            authenticated: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    pub fn set_authenticated(&self, codec: Codec) {
        let c = match codec {
            Codec::V1 => 1,
            Codec::Native => 2,
        };
        self.codec.store(c, Ordering::Release);
        self.authenticated.store(true, Ordering::Release);
    }

    pub fn codec(&self) -> Option<Codec> {
        match self.codec.load(Ordering::Acquire) {
            1 => Some(Codec::V1),
            2 => Some(Codec::Native),
            _ => None,
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Acquire) && !self.is_closed()
    }

    pub fn set_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// A client connection, as handlers and hooks see it (netconduit's `client` /
/// `connection`). Cheap to clone; `Send + Sync`, so it may be stored anywhere.
#[derive(Clone)]
pub struct Connection {
    /// What any thread may read of it.
    pub(crate) meta: Arc<ConnMeta>,
    /// Where sends and kicks by id go.
    pub(crate) router: Router,
}

impl Connection {
    /// Its unique id (display form: 16 hex characters).
    pub fn id(&self) -> ConnectionId {
        self.meta.id
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.meta.peer_addr
    }

    /// Whether it has logged in and is still connected.
    pub fn is_authenticated(&self) -> bool {
        self.meta.is_authenticated()
    }

    /// Whether it is still connected.
    pub fn is_connected(&self) -> bool {
        !self.meta.is_closed()
    }

    /// The codec it speaks (`None` before its first frame).
    pub fn codec(&self) -> Option<Codec> {
        self.meta.codec()
    }

    /// The server it belongs to: broadcast, look up connections, read state
    /// (everything a handler may do with its server).
    pub fn server(&self) -> &Router {
        &self.router
    }

    /// Sends a message `{type: name, data}` to this client alone.
    ///
    /// Returns [`Error::Closed`] if the connection is gone, or [`Error::QueueFull`] when
    /// its outbound queue is over the limit (it is then handled as a slow consumer).
    pub async fn send_message(&self, name: &str, data: impl Into<Value>) -> Result<()> {
        if self.meta.is_closed() {
            return Err(Error::Closed);
        }
        self.router.send_to(self.meta.id, name, &data.into()).await
    }

    /// Closes the connection (a kick). Queued frames are flushed first, within the
    /// server's drain timeout; the disconnect hooks run once it is gone.
    pub async fn disconnect(&self) -> Result<()> {
        self.router.kick(self.meta.id, None).await
    }

    /// Sends a last message, flushes it, then closes (the guide's "kick" with reason).
    pub async fn disconnect_with(&self, name: &str, data: impl Into<Value>) -> Result<()> {
        self.router
            .kick(self.meta.id, Some((name, &data.into())))
            .await
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.meta.id)
            .field("peer_addr", &self.meta.peer_addr)
            .field("authenticated", &self.is_authenticated())
            .finish()
    }
}
