//! `Broadcast`: a broadcast being prepared (`include`, `exclude`), sent when awaited.

use std::future::IntoFuture;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ahash::AHashSet;
use conduit_protocol::clock::wall_clock_ms;
use conduit_protocol::Value;

use super::{Filter, Frames, Router};
use crate::error::{Error, Result};
use crate::id::ConnectionId;
use crate::rt::exec::LocalBoxFuture;

/// A broadcast being prepared: `.include(..)`, `.exclude(..)`, then `.await` for the
/// number of receivers (summed over all shards).
///
/// The count does not wait on other shards: it is the number of logged-in connections
/// the filter admits at the moment of sending, read from the directory, so a handler
/// broadcasting at full speed is never serialised behind a round trip to every shard.
/// A connection closing at that moment, or cut off as a slow consumer by this very
/// frame, is still counted; [`Broadcast::exact`] waits for every shard to report how
/// many queues the frame actually went into.
///
/// On a node of a cluster the broadcast also goes to every other node (see
/// [`crate::cluster`]), but the count stays this node's; a message too large for the
/// broker fails before anyone receives it.
///
/// A message no peer could receive (a name over 255 bytes, data whose `Serialize`
/// fails) reaches nobody: `.await` logs it as an error and returns 0, and
/// [`Broadcast::send`] returns the error.
#[must_use = "a broadcast does nothing until awaited"]
pub struct Broadcast {
    /// Where it goes out.
    router: Router,
    /// The message type.
    name: String,
    /// Its data, or why it could not be converted.
    data: std::result::Result<Value, String>,
    /// Who receives it.
    filter: Filter,
    /// Rooms it goes to (everyone when empty), resolved when it is sent.
    rooms: Vec<String>,
}

impl Broadcast {
    pub(crate) fn new(
        router: Router,
        name: &str,
        data: std::result::Result<Value, String>,
    ) -> Broadcast {
        Broadcast {
            router,
            name: name.to_owned(),
            data,
            filter: Filter::default(),
            rooms: Vec::new(),
        }
    }

    /// Only members of this room; call again for more rooms (their union: a
    /// connection in several receives it once). Combines with `include`/`exclude`. A
    /// room nobody is in contributes nobody.
    pub fn to(mut self, room: impl AsRef<str>) -> Broadcast {
        self.rooms.push(room.as_ref().to_owned());
        self
    }

    /// Only these connections (intersected with any earlier include).
    pub fn include(mut self, ids: impl IntoIterator<Item = ConnectionId>) -> Broadcast {
        let set: AHashSet<ConnectionId> = ids.into_iter().collect();
        self.filter.include = Some(match self.filter.include.take() {
            Some(prev) => prev.intersection(&set).copied().collect(),
            None => set,
        });
        self
    }

    /// Not these connections.
    pub fn exclude(mut self, ids: impl IntoIterator<Item = ConnectionId>) -> Broadcast {
        self.filter.exclude.extend(ids);
        self
    }

    /// Sends it: the number of receivers (as `.await` counts them), or why nobody
    /// could receive it.
    pub async fn send(self) -> Result<usize> {
        self.send_counted(false).await
    }

    /// Sends it and waits for every shard with receivers to report how many queues the
    /// frame went into: the exact count, at the cost of one round trip to each of those
    /// shards (the sender waits for the slowest).
    pub async fn exact(self) -> Result<usize> {
        self.send_counted(true).await
    }

    async fn send_counted(mut self, exact: bool) -> Result<usize> {
        let data = self.data.as_ref().map_err(|e| Error::Data(e.clone()))?;
        let timestamp_ms = wall_clock_ms();
        let frames = Frames::message(&self.name, data, timestamp_ms, None)?;
        // Other nodes first: what no node could receive fails before anyone got it.
        if let Some(uplink) = self.router.run_state().and_then(|r| r.uplink.clone()) {
            uplink.broadcast(
                &self.name,
                data,
                timestamp_ms,
                &self.rooms,
                self.filter.include.as_ref(),
                &self.filter.exclude,
            )?;
        }
        if !self.rooms.is_empty() {
            let Some(run) = self.router.run_state() else {
                return Ok(0);
            };
            let rooms: Vec<_> = self.rooms.iter().filter_map(|r| run.rooms.get(r)).collect();
            if rooms.is_empty() {
                return Ok(0);
            }
            self.filter.rooms = Some(rooms);
        }
        Ok(self
            .router
            .broadcast_frames(Arc::new(frames), Arc::new(self.filter), exact)
            .await)
    }
}

impl IntoFuture for Broadcast {
    type Output = usize;
    type IntoFuture = LocalBoxFuture<usize>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let router = self.router.clone();
            let name_len = self.name.len();
            match self.send().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(name_len, "broadcast not sent: {e}");
                    router
                        .counts()
                        .broadcasts_failed
                        .fetch_add(1, Ordering::Relaxed);
                    0
                }
            }
        })
    }
}
