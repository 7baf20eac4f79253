//! Hosting async clients without depending on a runtime crate: start an executor
//! thread (glommio or tokio) and run a future on it.

use std::future::Future;
use std::io;
use std::time::Duration;

use super::{ClientError, ClientResult};
use crate::rt::{Backend, RtThread, Runtime, ThreadSpec};

/// An executor thread started by [`spawn_executor`].
pub struct ExecutorThread<T: Send + 'static> {
    /// The thread, joined for the future's output.
    handle: RtThread<T>,
    /// The backend it runs.
    backend: Backend,
}

impl<T: Send + 'static> std::fmt::Debug for ExecutorThread<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorThread")
            .field("runtime", &self.backend.runtime())
            .field("thread", &self.handle.thread_id())
            .finish()
    }
}

impl<T: Send + 'static> ExecutorThread<T> {
    pub(crate) fn thread_id(&self) -> std::thread::ThreadId {
        self.handle.thread_id()
    }

    /// The runtime the thread runs (never [`Runtime::Auto`]).
    pub fn runtime(&self) -> Runtime {
        self.backend.runtime()
    }

    /// Waits for the thread's future to finish and returns its output (an error if it
    /// panicked or the executor could not start).
    pub fn join(self) -> ClientResult<T> {
        self.handle
            .join()
            .map_err(|e| ClientError::Io(io::Error::other(e)))
    }
}

/// Starts a new executor thread named `name` (not pinned) on the runtime
/// [`Runtime::Auto`] picks and runs the future `make` builds on it, so applications and
/// tests can host async clients without depending on a runtime crate. See
/// [`spawn_executor_on`].
pub fn spawn_executor<G, F, T>(name: &str, make: G) -> ClientResult<ExecutorThread<T>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    spawn_executor_on(Runtime::Auto, name, make)
}

/// Starts a new executor thread named `name` (not pinned) on `runtime` and runs the
/// future `make` builds on it. The machine is checked first for glommio (io_uring,
/// locked-memory limit): an explicit `Glommio` that cannot run is an error saying what
/// to change; `Auto` takes tokio there instead.
pub fn spawn_executor_on<G, F, T>(
    runtime: Runtime,
    name: &str,
    make: G,
) -> ClientResult<ExecutorThread<T>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let (backend, why) = crate::rt::choose(runtime, 1)
        .map_err(|e| ClientError::Io(io::Error::other(e.to_string())))?;
    tracing::debug!(runtime = %backend.runtime(), thread = name, "client executor: {why}");
    let spec = ThreadSpec {
        name: name.to_owned(),
        cpu: None,
        // Heartbeats and replies are not held up by a busy task for longer than this.
        preempt_timer: Duration::from_millis(10),
        // Clients do no DMA file I/O; keep glommio's registered buffer at its minimum.
        io_memory: 64 * 1024,
        // glommio's default ring size: a client thread drives few sockets.
        ring_depth: 128,
    };
    let handle = RtThread::start(backend, spec, make)?;
    Ok(ExecutorThread { handle, backend })
}

/// Runs the future `make` builds on a new executor thread and waits for its output
/// ([`spawn_executor`] + [`ExecutorThread::join`]).
pub fn run_local<G, F, T>(make: G) -> ClientResult<T>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    spawn_executor("conduit-local", make)?.join()
}
