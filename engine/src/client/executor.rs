//! Hosting async clients without depending on glommio: start an executor thread and run
//! a future on it.

use std::future::Future;
use std::io;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use super::{ClientError, ClientResult};

/// A glommio executor thread started by [`spawn_executor`].
#[derive(Debug)]
pub struct ExecutorThread<T: Send + 'static> {
    /// The thread, joined for the future's output.
    handle: glommio::ExecutorJoinHandle<T>,
}

impl<T: Send + 'static> ExecutorThread<T> {
    pub(crate) fn thread_id(&self) -> std::thread::ThreadId {
        self.handle.thread().id()
    }

    /// Waits for the thread's future to finish and returns its output (an error if it
    /// panicked or the executor could not start).
    pub fn join(self) -> ClientResult<T> {
        self.handle.join().map_err(|e| {
            ClientError::Io(io::Error::other(crate::preflight::explain(&e.to_string())))
        })
    }
}

/// Starts a new glommio executor thread named `name` (not pinned) and runs the future
/// `make` builds on it, so applications and tests can host async clients without
/// depending on glommio. The machine is checked first (io_uring, locked-memory
/// limit), so a missing prerequisite is an error that says what to change, not a
/// panic.
pub fn spawn_executor<G, F, T>(name: &str, make: G) -> ClientResult<ExecutorThread<T>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    crate::preflight::check(1).map_err(|e| ClientError::Io(io::Error::other(e.to_string())))?;
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name(name)
        // Clients do no DMA file I/O; keep the registered buffer at glommio's minimum.
        .io_memory(64 * 1024)
        // Heartbeats and replies are not held up by a busy task for longer than this.
        .preempt_timer(Duration::from_millis(10))
        .spawn(make)
        .map_err(io::Error::from)?;
    Ok(ExecutorThread { handle })
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
