//! The shard running on this thread, as the router sees it: delivery to its own
//! connections without a bus round trip. The glue plugs its shard in with
//! [`enter_shard`]; the router never names the glue.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use super::lanes::Lanes;
use super::{Filter, Frames, Router, RouterInner, RunState};
use crate::error::Result;
use crate::id::ConnectionId;

/// What a shard offers the router on its own thread: delivery to the connections it
/// owns, without a bus round trip.
pub(crate) trait LocalShard {
    /// Its index.
    fn index(&self) -> usize;
    /// Queues `frames` to every admitted logged-in connection; returns how many.
    fn fanout(&self, frames: &Frames, filter: &Filter) -> usize;
    /// Queues `frames` to one connection.
    fn send_local(&self, id: ConnectionId, frames: &Frames) -> Result<()>;
    /// Closes one connection after queueing an optional last message.
    fn kick_local(&self, id: ConnectionId, last: Option<&Frames>) -> bool;
}

/// The shard running on this thread, with the run it belongs to.
struct Local {
    /// Which router it serves (a thread runs shards of one server at a time).
    router: *const RouterInner,
    run: Arc<RunState>,
    shard: Rc<dyn LocalShard>,
    /// This thread's lanes to the run's other shards: everything it sends them goes
    /// through these, in order.
    lanes: Rc<Lanes>,
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// Installs `shard` as this thread's shard of `router` for `run`.
pub(crate) fn enter_shard(router: &Router, run: Arc<RunState>, shard: Rc<dyn LocalShard>) {
    LOCAL.with(|l| {
        *l.borrow_mut() = Some(Local {
            router: Arc::as_ptr(&router.inner),
            lanes: Lanes::new(&run.bus, &run.batch_room),
            run,
            shard,
        })
    });
}

/// Hands what this thread's shard queued for other shards (see `lanes`) to their
/// buses now, where they have room (what is left goes with the lanes' flush tasks).
/// Cheap when the lanes are empty, as they are between bursts.
pub(crate) fn hand_over_lanes() {
    LOCAL.with(|l| {
        if let Some(l) = l.borrow().as_ref() {
            l.lanes.hand_over();
        }
    })
}

/// Removes this thread's shard, closing its lanes (what the other shards' buses take
/// at once goes on them; nothing left keeps a bus alive).
pub(crate) fn leave_shard() {
    if let Some(local) = LOCAL.with(|l| l.borrow_mut().take()) {
        local.lanes.close();
    }
}

impl Router {
    /// The shard of this router on this thread, with its run, if there is one.
    pub(super) fn local(&self) -> Option<(Arc<RunState>, Rc<dyn LocalShard>)> {
        LOCAL.with(|l| {
            l.borrow()
                .as_ref()
                .filter(|l| std::ptr::eq(l.router, Arc::as_ptr(&self.inner)))
                .map(|l| (l.run.clone(), l.shard.clone()))
        })
    }

    /// Resolves once what this thread's shard sent other shards is on their buses (at
    /// once off a shard).
    pub(crate) async fn settle_lanes(&self) {
        if let Some(lanes) = self.lanes() {
            lanes.settled().await;
        }
    }

    /// This thread's lanes to the other shards of this router's run, if this thread
    /// runs one of its shards.
    pub(super) fn lanes(&self) -> Option<Rc<Lanes>> {
        LOCAL.with(|l| {
            l.borrow()
                .as_ref()
                .filter(|l| std::ptr::eq(l.router, Arc::as_ptr(&self.inner)))
                .map(|l| l.lanes.clone())
        })
    }
}
