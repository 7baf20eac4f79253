//! Rooms: named groups of connections across shards, for broadcasts and presence.
//!
//! One registry per run maps a room's name to its members, kept per shard, so a room
//! broadcast visits only shards with members and, on each, only the members there
//! (cost proportional to members, not to connections). A connection's membership is
//! changed by its own shard (over its bus when asked from elsewhere: see
//! `Router::change_room`), under the registry's write lock, before `join`/`leave`
//! returns: broadcasts the same task sent before see the old membership, those it
//! sends after see the new. Anyone may read it (counts, presence). A room exists
//! while it has members; `max_rooms` bounds how many exist, `max_rooms_per_connection`
//! how many one connection is in, so no connection can use up the total.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use ahash::{AHashMap, AHashSet};

use super::connection::ConnMeta;
use super::{Broadcast, Router};
pub use crate::error::RoomError;
use crate::id::ConnectionId;

/// The limits on rooms (from the server's descriptor).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoomLimits {
    pub max_rooms: usize,
    pub max_rooms_per_connection: usize,
    pub max_room_name_bytes: usize,
}

/// One room: its members on each shard.
#[derive(Debug)]
pub(crate) struct RoomEntry {
    /// Members per shard. Changed only under the registry's write lock; read by the
    /// owning shard's fan-out and by counts.
    shards: Vec<RwLock<AHashSet<ConnectionId>>>,
    /// Members in total.
    len: AtomicUsize,
}

impl RoomEntry {
    /// Members on shard `shard`.
    pub fn on_shard(&self, shard: usize) -> Vec<ConnectionId> {
        self.read(shard, |s| s.iter().copied().collect())
    }

    /// Runs `f` over the member set of `shard` (empty if the lock is poisoned).
    pub fn read<R>(&self, shard: usize, f: impl FnOnce(&AHashSet<ConnectionId>) -> R) -> R {
        match self.shards.get(shard).and_then(|s| s.read().ok()) {
            Some(set) => f(&set),
            None => f(&AHashSet::new()),
        }
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }
}

/// Calls `f` once for each connection on `shard` that is in any of `rooms`.
pub(crate) fn for_each_member(
    rooms: &[Arc<RoomEntry>],
    shard: usize,
    mut f: impl FnMut(ConnectionId),
) {
    match rooms {
        [one] => one.read(shard, |set| set.iter().copied().for_each(f)),
        _ => {
            // A connection in several of the rooms is visited once.
            let mut seen = AHashSet::new();
            for room in rooms {
                room.read(shard, |set| {
                    for &id in set {
                        if seen.insert(id) {
                            f(id);
                        }
                    }
                });
            }
        }
    }
}

/// Every room of a run.
#[derive(Debug)]
pub(crate) struct Rooms {
    /// Name → room. Every membership change holds its write lock, so a room is made,
    /// joined, left and removed in one order seen by all.
    map: RwLock<AHashMap<Arc<str>, Arc<RoomEntry>>>,
    shards: usize,
    limits: RoomLimits,
}

impl Rooms {
    pub fn new(shards: usize, limits: RoomLimits) -> Rooms {
        Rooms {
            map: RwLock::default(),
            shards,
            limits,
        }
    }

    /// Checks a room name against the limits.
    pub fn check_name(&self, name: &str) -> Result<(), RoomError> {
        if name.is_empty() {
            return Err(RoomError::InvalidName("empty"));
        }
        if name.len() > self.limits.max_room_name_bytes {
            return Err(RoomError::InvalidName("longer than max_room_name_bytes"));
        }
        if name.chars().any(char::is_control) {
            return Err(RoomError::InvalidName("has a control character"));
        }
        Ok(())
    }

    /// The room called `name`, if it has members.
    pub fn get(&self, name: &str) -> Option<Arc<RoomEntry>> {
        self.map.read().ok()?.get(name).cloned()
    }

    /// Every room's name.
    /// How many rooms exist (have members).
    pub fn count(&self) -> usize {
        self.map.read().map_or(0, |m| m.len())
    }

    pub fn names(&self) -> Vec<String> {
        self.map
            .read()
            .map(|m| m.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default()
    }

    /// Adds the connection to room `name` (made if need be); `Ok(false)` if it was
    /// already in. Refused for a connection that is not logged in or is closing
    /// (`Ok(None)`), so a join racing a disconnect never leaves a member behind: the
    /// disconnect marks the connection closed before it leaves its rooms, under this
    /// same lock.
    pub fn join(&self, meta: &ConnMeta, name: &str) -> Result<Option<bool>, RoomError> {
        self.check_name(name)?;
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if !meta.is_authenticated() {
            return Ok(None);
        }
        let mut mine = meta.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if mine.iter().any(|r| &**r == name) {
            return Ok(Some(false));
        }
        if mine.len() >= self.limits.max_rooms_per_connection {
            return Err(RoomError::TooManyForConnection(
                self.limits.max_rooms_per_connection,
            ));
        }
        let room = match map.get(name) {
            Some(r) => r.clone(),
            None => {
                if map.len() >= self.limits.max_rooms {
                    return Err(RoomError::TooManyRooms(self.limits.max_rooms));
                }
                let room = Arc::new(RoomEntry {
                    shards: (0..self.shards).map(|_| RwLock::default()).collect(),
                    len: AtomicUsize::new(0),
                });
                map.insert(Arc::from(name), room.clone());
                room
            }
        };
        let key = map
            .get_key_value(name)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| Arc::from(name));
        if let Some(set) = room.shards.get(meta.id.shard()) {
            if let Ok(mut set) = set.write() {
                set.insert(meta.id);
            }
        }
        room.len.fetch_add(1, Ordering::AcqRel);
        mine.push(key);
        Ok(Some(true))
    }

    /// Removes the connection from room `name`; whether it was in. A room left empty
    /// is removed.
    pub fn leave(&self, meta: &ConnMeta, name: &str) -> bool {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let mut mine = meta.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let Some(at) = mine.iter().position(|r| &**r == name) else {
            return false;
        };
        mine.swap_remove(at);
        Self::remove_member(&mut map, meta.id, name);
        true
    }

    /// Removes the connection from every room it is in (at disconnect); the rooms it
    /// left, for the leave hooks.
    pub fn leave_all(&self, meta: &ConnMeta) -> Vec<Arc<str>> {
        // Only its own shard changes a connection's rooms, so an empty list stays
        // empty: no need for the registry's lock (taken at every disconnect otherwise).
        if meta
            .rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            return Vec::new();
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let left = std::mem::take(&mut *meta.rooms.lock().unwrap_or_else(|p| p.into_inner()));
        for name in &left {
            Self::remove_member(&mut map, meta.id, name);
        }
        left
    }

    fn remove_member(map: &mut AHashMap<Arc<str>, Arc<RoomEntry>>, id: ConnectionId, name: &str) {
        let Some(room) = map.get(name) else { return };
        if let Some(set) = room.shards.get(id.shard()) {
            if let Ok(mut set) = set.write() {
                set.remove(&id);
            }
        }
        if room.len.fetch_sub(1, Ordering::AcqRel) == 1 {
            map.remove(name);
        }
    }
}

/// A room by name, for presence and room broadcasts: `server.room("lobby")`. Reads the
/// membership at the moment of asking, across every shard. A room with no members
/// reads as empty; it is made by the first [`Connection::join`](crate::Connection::join).
///
/// ```no_run
/// use conduit::{Reply, Server, ServerDescriptor, Value};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Deserialize, garde::Validate)]
/// struct JoinMatch {
///     #[garde(length(min = 1, max = 16))]
///     match_id: String,
/// }
///
/// #[derive(Serialize)]
/// struct Joined {
///     match_id: String,
///     players: usize,
/// }
///
/// let server = Server::new(ServerDescriptor::new("secret"))?;
/// // Data that breaks the rules never reaches the handler: the sender gets
/// // `join_match_error` {code: 2000, error, details: {errors: [{field, message, type}]}}.
/// server.on_validated("join_match", |conn, join: JoinMatch| async move {
///     let room = format!("match:{}", join.match_id);
///     conn.join(&room).await.ok();
///     let players = conn.server().room(&room).len();
///     Reply(Joined { match_id: join.match_id, players }) // sent as join_match_response
/// });
/// server.on_join(|conn, room| async move {
///     let who = Value::map().with("id", conn.id().to_string());
///     conn.server().broadcast("joined", who).to(room).exclude([conn.id()]).await;
/// });
/// server.run()?;
/// # Ok::<(), conduit::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Room {
    /// The server.
    router: Router,
    /// The room's name.
    name: String,
}

impl Room {
    pub(crate) fn new(router: Router, name: &str) -> Room {
        Room {
            router,
            name: name.to_owned(),
        }
    }

    fn entry(&self) -> Option<Arc<RoomEntry>> {
        self.router.run_state()?.rooms.get(&self.name)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many connections are in it, across every shard.
    pub fn len(&self) -> usize {
        self.entry().map_or(0, |r| r.len())
    }

    /// Whether nobody is in it.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its members' ids, across every shard (in no particular order).
    pub fn members(&self) -> Vec<ConnectionId> {
        let Some(room) = self.entry() else {
            return Vec::new();
        };
        (0..room.shards.len())
            .flat_map(|s| room.on_shard(s))
            .collect()
    }

    /// Whether connection `id` is in it.
    pub fn contains(&self, id: ConnectionId) -> bool {
        self.entry()
            .is_some_and(|r| r.read(id.shard(), |s| s.contains(&id)))
    }

    /// A broadcast to its members: `server.broadcast(name, data).to(room)`.
    pub fn broadcast(&self, name: &str, data: impl serde::Serialize + 'static) -> Broadcast {
        self.router.broadcast(name, data).to(&self.name)
    }
}
