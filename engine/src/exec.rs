//! Where handler code runs: spawn, sleep and yield on the current shard, whatever the
//! runtime. The one place the rest of the engine (router, dispatch) touches the
//! executor; the runtime glue itself lives in `rt/`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future that stays on its shard.
pub type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// Waits for `d` on the current shard.
pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await;
}

/// Runs `fut` in the background on the current shard. Must be called from a handler or
/// hook (on a shard thread).
pub fn spawn(fut: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(fut).detach();
}

/// On a shard, lets its other tasks run if this one has used up its time slice. The
/// engine's sends may complete without waiting (a local fan-out, a stopped server), so a
/// handler looping on them would otherwise never yield and would starve its shard: its
/// readers, writers, heartbeat and bus (and so `stop()`). Off a shard it does nothing.
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await;
}
