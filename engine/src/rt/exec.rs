//! Spawning, sleeping and yielding on the current thread's runtime, whichever backend
//! runs it: the one place the rest of the engine (router, dispatch, client, shard
//! glue) touches an executor. Each call looks up the thread's backend (set when a
//! shard or client thread starts) and goes to glommio or tokio.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::Backend;

/// A boxed future that stays on its shard.
pub type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

thread_local! {
    /// The backend running this thread, set by the threads the engine starts (shards,
    /// client executors); `None` elsewhere.
    static CURRENT: Cell<Option<Backend>> = const { Cell::new(None) };
}

/// Marks the calling thread as run by `backend` (at the start of an engine thread).
pub(crate) fn enter(backend: Backend) {
    CURRENT.set(Some(backend));
}

/// The backend of the calling thread: the one the engine started it with, else tokio
/// inside a tokio runtime (an application's own), else glommio.
pub fn current() -> Backend {
    if let Some(b) = CURRENT.get() {
        return b;
    }
    #[cfg(feature = "tokio")]
    if tokio::runtime::Handle::try_current().is_ok() {
        return Backend::Tokio;
    }
    #[cfg(feature = "glommio")]
    return Backend::Glommio;
    #[cfg(not(feature = "glommio"))]
    Backend::Tokio
}

/// Waits for `d` on the current shard (or client thread).
pub async fn sleep(d: Duration) {
    match current() {
        #[cfg(feature = "glommio")]
        Backend::Glommio => {
            glommio::timer::sleep(d).await;
        }
        #[cfg(feature = "tokio")]
        Backend::Tokio => tokio::time::sleep(d).await,
    }
}

/// Runs `fut` in the background on the current shard. Must be called from a handler or
/// hook (on a shard thread), or from a thread running a conduit client; inside an
/// application's own tokio runtime, from within a `tokio::task::LocalSet`. On the
/// tokio backend, not from a task started with `tokio::spawn` (it runs outside the
/// shard's `LocalSet`; tokio panics there).
pub fn spawn(fut: impl Future<Output = ()> + 'static) {
    match current() {
        #[cfg(feature = "glommio")]
        Backend::Glommio => drop(glommio::spawn_local(fut).detach()),
        #[cfg(feature = "tokio")]
        Backend::Tokio => drop(tokio::task::spawn_local(fut)),
    }
}

/// A task on the current thread, awaited for its output; dropping it cancels the task
/// (on both backends, so the glue's "drop to stop" holds everywhere).
pub struct Task<T>(TaskInner<T>);

enum TaskInner<T> {
    #[cfg(feature = "glommio")]
    Glommio(glommio::Task<T>),
    #[cfg(feature = "tokio")]
    Tokio(tokio::task::JoinHandle<T>),
}

/// Spawns `fut` on the current thread and returns its handle.
pub fn spawn_task<T: 'static>(fut: impl Future<Output = T> + 'static) -> Task<T> {
    Task(match current() {
        #[cfg(feature = "glommio")]
        Backend::Glommio => TaskInner::Glommio(glommio::spawn_local(fut)),
        #[cfg(feature = "tokio")]
        Backend::Tokio => TaskInner::Tokio(tokio::task::spawn_local(fut)),
    })
}

impl<T> Future for Task<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &mut self.0 {
            #[cfg(feature = "glommio")]
            TaskInner::Glommio(t) => Pin::new(t).poll(cx),
            #[cfg(feature = "tokio")]
            TaskInner::Tokio(h) => match Pin::new(h).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(v)) => Poll::Ready(v),
                // The task's panic is the awaiting task's, as on glommio.
                Poll::Ready(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Cancelled while awaited: only a dropped `LocalSet` does that, at the
                // thread's end; waiting would never end, so say so.
                Poll::Ready(Err(_)) => panic!("awaited a task that was cancelled"),
            },
        }
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        match &self.0 {
            #[cfg(feature = "glommio")]
            TaskInner::Glommio(_) => {} // glommio cancels a dropped task itself
            #[cfg(feature = "tokio")]
            TaskInner::Tokio(h) => h.abort(),
        }
    }
}

/// A timer that can be moved to a new deadline without allocating again.
pub struct Timer(TimerInner);

enum TimerInner {
    #[cfg(feature = "glommio")]
    Glommio(glommio::timer::Timer),
    #[cfg(feature = "tokio")]
    Tokio(Pin<Box<tokio::time::Sleep>>),
}

impl Timer {
    /// Fires `d` from now.
    pub fn new(d: Duration) -> Timer {
        Timer(match current() {
            #[cfg(feature = "glommio")]
            Backend::Glommio => TimerInner::Glommio(glommio::timer::Timer::new(d)),
            #[cfg(feature = "tokio")]
            Backend::Tokio => TimerInner::Tokio(Box::pin(tokio::time::sleep(d))),
        })
    }

    /// Fires `d` from now instead.
    pub fn reset(&mut self, d: Duration) {
        match &mut self.0 {
            #[cfg(feature = "glommio")]
            TimerInner::Glommio(t) => t.reset(d),
            #[cfg(feature = "tokio")]
            TimerInner::Tokio(s) => s.as_mut().reset(tokio::time::Instant::now() + d),
        }
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            #[cfg(feature = "glommio")]
            TimerInner::Glommio(t) => Pin::new(t).poll(cx).map(drop),
            #[cfg(feature = "tokio")]
            TimerInner::Tokio(s) => s.as_mut().poll(cx),
        }
    }
}

/// On a shard, lets its other tasks run if this one has used up its time slice. The
/// engine's sends may complete without waiting (a local fan-out, a stopped server), so a
/// handler looping on them would otherwise never yield and would starve its shard: its
/// readers, writers, heartbeat and bus (and so `stop()`). Off a shard it does nothing.
pub async fn yield_if_needed() {
    match CURRENT.get() {
        None => {}
        #[cfg(feature = "glommio")]
        Some(Backend::Glommio) => glommio::yield_if_needed().await,
        // tokio's cooperative budget: yields once the task has done its share of work.
        #[cfg(feature = "tokio")]
        Some(Backend::Tokio) => tokio::task::consume_budget().await,
    }
}

/// Runs blocking `f` (a name lookup) off the executor, on the backend's bounded pool
/// of helper threads, and waits for its result.
pub(crate) async fn spawn_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    match current() {
        #[cfg(feature = "glommio")]
        Backend::Glommio => Ok(glommio::executor().spawn_blocking(f).await),
        #[cfg(feature = "tokio")]
        Backend::Tokio => tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| std::io::Error::other(format!("blocking task failed: {e}"))),
    }
}

/// Lets the current thread's other tasks run before continuing.
pub async fn yield_now() {
    match current() {
        #[cfg(feature = "glommio")]
        Backend::Glommio => glommio::executor().yield_now().await,
        #[cfg(feature = "tokio")]
        Backend::Tokio => tokio::task::yield_now().await,
    }
}
