//! `Connection`: the application's handle to one client, usable from any shard or
//! thread. Operations on a connection owned by another shard travel over the bus.

use std::any::{Any, TypeId};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ahash::AHashMap;

use conduit_protocol::Codec;

use super::Router;
use crate::error::{Error, Result};
use crate::id::ConnectionId;

/// Facts about a connection that any thread may read. Written only at login and close,
/// never per message.
#[derive(Debug)]
pub(crate) struct ConnMeta {
    /// The connection's id.
    pub id: ConnectionId,
    /// The peer's address (behind a trusted proxy, the client's from its PROXY header).
    pub peer_addr: SocketAddr,
    /// 0 until login; then 1 (v1) or 2 (native). A send by id encodes only this codec.
    codec: AtomicU8,
    /// Set at login: only logged-in connections receive messages.
    authenticated: AtomicBool,
    /// Set when the connection starts closing: sends to it fail fast.
    closed: AtomicBool,
    /// The rooms it is in (at most `max_rooms_per_connection`); changed only by the
    /// room registry, under its lock.
    pub rooms: Mutex<Vec<Arc<str>>>,
    /// The application's typed values for this connection (see
    /// [`Connection::insert_extension`]); cleared when it is gone.
    extensions: Mutex<AHashMap<TypeId, Box<dyn Any + Send + Sync>>>,
    /// Set once the extensions were dropped with the connection.
    extensions_closed: AtomicBool,
    /// The verified token of a token login (replaced when the client refreshes it).
    token: Mutex<Option<Arc<crate::tokens::TokenClaims>>>,
    /// The client certificate verified during the TLS handshake.
    pub peer_certificate: std::sync::OnceLock<crate::tls::PeerCertificate>,
}

impl ConnMeta {
    pub fn new(id: ConnectionId, peer_addr: SocketAddr) -> ConnMeta {
        ConnMeta {
            id,
            peer_addr,
            codec: AtomicU8::new(0),
            authenticated: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            rooms: Mutex::default(),
            extensions: Mutex::default(),
            token: Mutex::default(),
            peer_certificate: std::sync::OnceLock::new(),
            extensions_closed: AtomicBool::new(false),
        }
    }

    fn extensions(&self) -> MutexGuard<'_, AHashMap<TypeId, Box<dyn Any + Send + Sync>>> {
        // A panic elsewhere cannot leave the map half-changed: each use is one call.
        self.extensions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops every extension (the connection is gone); any inserted later is dropped
    /// at once, so none outlives the connection (an extension holding its own
    /// `Connection` would otherwise keep it alive for good).
    pub fn clear_extensions(&self) {
        let taken = {
            // The flag is set under the map's lock, so no insert slips in after it.
            let mut map = self.extensions();
            self.extensions_closed.store(true, Ordering::Release);
            std::mem::take(&mut *map)
        };
        // Dropped outside the lock: a value's `Drop` may use the connection.
        drop(taken);
    }

    pub fn set_authenticated(&self, codec: Codec) {
        let c = match codec {
            Codec::V1 => 1,
            Codec::Native => 2,
        };
        self.codec.store(c, Ordering::Release);
        self.authenticated.store(true, Ordering::Release);
    }

    /// Records the token the connection logged in with, or its refreshed one.
    pub fn set_token(&self, token: Option<Arc<crate::tokens::TokenClaims>>) {
        if let Ok(mut t) = self.token.lock() {
            *t = token;
        }
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

    /// The client's address: the socket's peer, or, for a connection from one of
    /// [`trusted_proxies`](crate::ServerDescriptor::trusted_proxies), the client address
    /// its PROXY header gave (the proxy's own when the header carries none).
    pub fn peer_addr(&self) -> SocketAddr {
        self.meta.peer_addr
    }

    /// The certificate the client presented in the TLS handshake, verified against
    /// [`TlsSettings::client_ca`](crate::tls::TlsSettings::client_ca): its DER, its
    /// subject's common name, its DNS names. `None` without TLS, without client
    /// certificates, or when an optional one was not given.
    pub fn peer_certificate(&self) -> Option<&crate::tls::PeerCertificate> {
        self.meta.peer_certificate.get()
    }

    /// The verified token the client logged in with (its latest refresh), or `None`
    /// for a password login: its subject and claims, for authorisation in handlers.
    pub fn token(&self) -> Option<Arc<crate::tokens::TokenClaims>> {
        self.meta.token.lock().ok()?.clone()
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
    ///
    /// `data` is a [`Value`](crate::Value) or anything `Serialize` (a struct of yours).
    pub async fn send_message(
        &self,
        name: &str,
        data: impl serde::Serialize + 'static,
    ) -> Result<()> {
        if self.meta.is_closed() {
            return Err(Error::Closed);
        }
        let data = crate::convert::into_value(data).map_err(Error::Data)?;
        self.router.send_to(self.meta.id, name, &data).await
    }

    // ---- rooms ------------------------------------------------------------------------

    /// Puts the connection in room `room` (made if nobody is in it yet); `Ok(false)`
    /// if it was in already. Takes effect before this returns: a broadcast to the room
    /// sent afterwards reaches it. Runs the `on_join` hooks (only when it joined now).
    ///
    /// Refused with [`Error::Room`] for a bad name, when the connection is in
    /// `max_rooms_per_connection` rooms, or when `max_rooms` rooms exist and this one
    /// would be new; [`Error::Closed`] when the connection is gone.
    pub async fn join(&self, room: &str) -> Result<bool> {
        match self.router.change_room(&self.meta, room, true).await? {
            None => Err(Error::Closed),
            Some(false) => Ok(false),
            Some(true) => {
                let run = self.router.run_state().ok_or(Error::NotRunning)?;
                let hooks = run.room_hooks.on_join.clone();
                drop(run);
                for hook in hooks {
                    hook(self.clone(), room.to_owned()).await;
                }
                Ok(true)
            }
        }
    }

    /// Takes the connection out of room `room`; whether it was in. Takes effect before
    /// this returns: a broadcast to the room sent afterwards does not reach it. Runs
    /// the `on_leave` hooks (only when it was in).
    pub async fn leave(&self, room: &str) -> Result<bool> {
        if self.router.change_room(&self.meta, room, false).await? != Some(true) {
            return Ok(false);
        }
        let run = self.router.run_state().ok_or(Error::NotRunning)?;
        let hooks = run.room_hooks.on_leave.clone();
        drop(run);
        for hook in hooks {
            hook(self.clone(), room.to_owned()).await;
        }
        Ok(true)
    }

    /// The rooms it is in.
    pub fn rooms(&self) -> Vec<String> {
        let rooms = self.meta.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.iter().map(|r| r.to_string()).collect()
    }

    /// Whether it is in room `room`.
    pub fn in_room(&self, room: &str) -> bool {
        let rooms = self.meta.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.iter().any(|r| &**r == room)
    }

    // ---- extensions -------------------------------------------------------------------

    /// Stores `value` on this connection, one per type (the previous one of its type is
    /// returned). Every handle to the connection, on any shard or thread, sees it;
    /// it is dropped when the connection is gone (after the disconnect hooks), and
    /// one inserted after that is dropped at once.
    pub fn insert_extension<T: Send + Sync + 'static>(&self, value: T) -> Option<T> {
        let mut map = self.meta.extensions();
        if self.meta.extensions_closed.load(Ordering::Acquire) {
            // The connection is gone: nothing is kept for it any more (the value is
            // dropped once the lock is released).
            drop(map);
            drop(value);
            return None;
        }
        let old = map.insert(TypeId::of::<T>(), Box::new(value));
        drop(map);
        old.and_then(|b| b.downcast::<T>().ok()).map(|b| *b)
    }

    /// A copy of the value of type `T` stored on this connection.
    pub fn extension<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.meta
            .extensions()
            .get(&TypeId::of::<T>())
            .and_then(|b| b.downcast_ref::<T>())
            .cloned()
    }

    /// Runs `f` on the value of type `T` stored on this connection (to read part of it
    /// or change it in place); `None` if there is none. `f` must not use this
    /// connection's extensions itself.
    pub fn with_extension<T: Send + Sync + 'static, R>(
        &self,
        f: impl FnOnce(&mut T) -> R,
    ) -> Option<R> {
        self.meta
            .extensions()
            .get_mut(&TypeId::of::<T>())
            .and_then(|b| b.downcast_mut::<T>())
            .map(f)
    }

    /// Removes and returns the value of type `T` stored on this connection.
    pub fn remove_extension<T: Send + Sync + 'static>(&self) -> Option<T> {
        let old = self.meta.extensions().remove(&TypeId::of::<T>());
        old.and_then(|b| b.downcast::<T>().ok()).map(|b| *b)
    }

    /// Closes the connection (a kick). Queued frames are flushed first, within the
    /// server's drain timeout; the disconnect hooks run once it is gone.
    pub async fn disconnect(&self) -> Result<()> {
        self.router.kick(self.meta.id, None).await
    }

    /// Sends a last message, flushes it, then closes (the guide's "kick" with reason).
    pub async fn disconnect_with(
        &self,
        name: &str,
        data: impl serde::Serialize + 'static,
    ) -> Result<()> {
        let data = crate::convert::into_value(data).map_err(Error::Data)?;
        self.router.kick(self.meta.id, Some((name, &data))).await
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
