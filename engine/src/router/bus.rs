//! The cross-shard bus: what one shard (or any thread) asks of another.
//!
//! Each shard has one bounded inbound channel. Messages from one sender to one shard
//! arrive in send order, which is what makes broadcasts from one sender reach every
//! receiver in order. flume's async receive parks the shard's executor and is woken by
//! the sender (glommio wakers are thread-safe), so an idle shard does not poll.

use std::rc::Rc;
use std::sync::Arc;

use ahash::AHashSet;
use bytes::Bytes;
use conduit_protocol::{Codec, Encoder, Value, WireError};

use super::lanes::Lanes;
use super::RunState;
use crate::error::{Error, Result};
use crate::id::ConnectionId;

/// One message frame encoded once per codec in use, shared by every receiver.
#[derive(Clone, Debug)]
pub struct Frames {
    /// `None` when no receiver speaks v1 (a direct send to a native connection).
    pub v1: Option<Bytes>,
    /// `None` when no receiver speaks native.
    pub native: Option<Bytes>,
}

impl Frames {
    /// MESSAGE `name` with `data`, stamped `timestamp_ms`, in `codec` only, or in both
    /// codecs when `codec` is `None` (a broadcast, whose receivers may speak either).
    /// Fails for what no peer could receive (a name over the wire's limit), so nothing
    /// is skipped silently for one codec.
    pub fn message(
        name: &str,
        data: &Value,
        timestamp_ms: u64,
        codec: Option<Codec>,
    ) -> Result<Frames, WireError> {
        let wants = |c: Codec| codec.is_none_or(|only| only == c);
        let encode = |c: Codec| {
            wants(c)
                .then(|| Encoder::new(c, timestamp_ms).message(0, name, data))
                .transpose()
        };
        Ok(Frames {
            v1: encode(Codec::V1)?,
            native: encode(Codec::Native)?,
        })
    }

    /// The frame for a connection speaking `codec`.
    pub fn for_codec(&self, codec: Codec) -> Option<&Bytes> {
        match codec {
            Codec::V1 => self.v1.as_ref(),
            Codec::Native => self.native.as_ref(),
        }
    }
}

/// Which connections a broadcast goes to: the members of `rooms` (everyone when
/// `None`), narrowed to `include` (when set), minus `exclude`.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only members of these rooms, each connection once (everyone when `None`).
    pub rooms: Option<Vec<Arc<super::rooms::RoomEntry>>>,
    /// Only these (all when `None`).
    pub include: Option<AHashSet<ConnectionId>>,
    /// Never these.
    pub exclude: AHashSet<ConnectionId>,
}

impl Filter {
    /// Whether connection `id` receives the broadcast.
    pub fn admits(&self, id: ConnectionId) -> bool {
        !self.exclude.contains(&id) && self.include.as_ref().is_none_or(|s| s.contains(&id))
    }
}

/// Lifecycle steps the control thread drives every shard through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Run `on_startup` hooks (shard 0 only).
    RunStartupHooks,
    /// Start the accept loop.
    StartAccepting,
    /// Stop accepting and drop the listener.
    StopAccepting,
    /// Run `on_shutdown` hooks (shard 0 only).
    RunShutdownHooks,
    /// Close every connection, flushing queues up to the drain timeout.
    Drain,
    /// Leave the executor.
    Exit,
}

/// A request to a shard.
pub enum BusMsg {
    /// Queue `frames` to every admitted logged-in connection; reply with the count when
    /// the sender asked for the exact one (`Broadcast::exact`), else send nothing back.
    Broadcast {
        frames: Arc<Frames>,
        filter: Arc<Filter>,
        reply: Option<flume::Sender<usize>>,
    },
    /// Queue `frames` to one connection; reply whether it was queued, or why not
    /// (`Closed` or `QueueFull`).
    Send {
        to: ConnectionId,
        frames: Arc<Frames>,
        reply: flume::Sender<crate::Result<()>>,
    },
    /// Close one connection after queueing an optional last message.
    Kick {
        to: ConnectionId,
        last: Option<Arc<Frames>>,
        reply: flume::Sender<bool>,
    },
    /// Put a connection of this shard in a room, or take it out (`join` false). Done by
    /// the owner, in bus order, so broadcasts sent to this shard before the change
    /// still see the old membership and those sent after it see the new.
    Room {
        meta: Arc<super::ConnMeta>,
        room: String,
        join: bool,
        reply: flume::Sender<Result<Option<bool>, super::RoomError>>,
    },
    /// Serve a connection another shard accepted: shards take turns, whichever one the
    /// kernel woke to accept (see `RunState::next_home`). It holds its
    /// `max_connections` slot already.
    Adopt {
        stream: std::net::TcpStream,
        admission: super::Admission,
    },
    /// Messages one shard thread sent this shard in a row, gathered by its lane
    /// (`lanes.rs`): served in order, as if each had come alone. Never nested, never
    /// holds a `Control`.
    Batch(Vec<BusMsg>),
    /// A lifecycle step; the reply carries the step's outcome.
    Control {
        step: Control,
        reply: crossbeam_channel::Sender<Result<(), String>>,
    },
}

/// Sends `shard` the request `make` builds around a reply channel and waits for the
/// answer: `Ok(None)` when the shard went away without answering, `Err(NotRunning)`
/// when its bus is closed. The run is not held while waiting: a shard that exits with
/// the request still queued drops it (and its reply sender) only once every holder of
/// the run is gone.
pub(super) async fn ask<T>(
    lanes: Option<Rc<Lanes>>,
    run: Arc<RunState>,
    shard: usize,
    make: impl FnOnce(flume::Sender<T>) -> BusMsg,
) -> Result<Option<T>> {
    if shard >= run.bus.len() {
        return Err(Error::Closed);
    }
    let (tx, rx) = flume::bounded(1);
    let sent = match lanes {
        // On a shard thread: after what this thread sent that shard before.
        Some(lanes) => {
            drop(run);
            lanes.send(shard, make(tx)).await
        }
        None => {
            let bus = run.bus[shard].clone();
            drop(run);
            bus.send_async(make(tx)).await.is_ok()
        }
    };
    if !sent {
        return Err(Error::NotRunning);
    }
    Ok(rx.recv_async().await.ok())
}
