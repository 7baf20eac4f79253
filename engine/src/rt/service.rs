//! The service thread: one process-wide thread with a tokio runtime, where tokio-based
//! services (broker clients, exporters, database drivers) run whichever backend the
//! shards use. Shards and plain threads reach it with [`call`] over a bounded channel
//! and await the answer on their own executor; nothing on a shard blocks.
//!
//! Failure is an error, never a hang: a full queue is [`ServiceError::Busy`] at once,
//! a job that panics is [`ServiceError::Panicked`], and a dead service thread (logged
//! when it ends) is [`ServiceError::Down`] for every call waiting on it and every call
//! after. A job that never finishes is the job's to bound (`tokio::time::timeout`
//! inside it, or [`sleep`](crate::rt::sleep) raced against the call outside).

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use futures_lite::FutureExt;

/// Jobs the global service thread queues before [`call`] answers
/// [`ServiceError::Busy`].
pub const SERVICE_QUEUE_JOBS: usize = 1024;

/// Why a service call did not produce its output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The service thread's queue is full (it is falling behind); try again later.
    #[error("the service thread is busy ({0} jobs queued)")]
    Busy(usize),
    /// The service thread is gone (it failed to start or its runtime ended).
    #[error("the service thread is not running")]
    Down,
    /// The job panicked; the service thread goes on.
    #[error("the service job panicked")]
    Panicked,
}

/// A job: spawns its future on the service runtime.
type Job = Box<dyn FnOnce() + Send>;

/// A thread running a tokio runtime for jobs sent from anywhere.
#[derive(Debug)]
pub struct Service {
    /// The bounded queue of jobs; disconnected once the thread is gone.
    jobs: flume::Sender<Job>,
    /// Never sent on: its sender lives as long as the thread, so a caller waiting
    /// for an answer learns the thread is gone even if its job is still queued (a
    /// dead thread's queue keeps its jobs, and their answer senders, alive).
    alive: flume::Receiver<()>,
}

impl Service {
    /// The process-wide service thread, started on first use.
    pub fn global() -> &'static Service {
        static GLOBAL: OnceLock<Service> = OnceLock::new();
        GLOBAL.get_or_init(|| Service::start("conduit-service", SERVICE_QUEUE_JOBS))
    }

    /// Starts a service thread named `name` whose queue holds `capacity` jobs. If the
    /// thread or its runtime cannot start, that is logged and every call is
    /// [`ServiceError::Down`].
    pub(crate) fn start(name: &str, capacity: usize) -> Service {
        let (jobs, queue) = flume::bounded::<Job>(capacity.max(1));
        let (alive_tx, alive) = flume::bounded::<()>(1);
        let thread_name = name.to_owned();
        let started = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let _alive = alive_tx;
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(thread = %thread_name, "service runtime cannot start: {e}");
                        return;
                    }
                };
                rt.block_on(async {
                    while let Ok(job) = queue.recv_async().await {
                        job();
                    }
                });
                tracing::info!(thread = %thread_name, "service thread stopped");
            });
        if let Err(e) = started {
            tracing::error!("service thread cannot start: {e}");
        }
        Service { jobs, alive }
    }

    /// Runs the future `make` builds on the service thread's tokio runtime and awaits
    /// its output from any executor (or from a plain thread with
    /// [`block_on`](crate::block_on)).
    pub fn call<G, F, T>(
        &self,
        make: G,
    ) -> impl Future<Output = Result<T, ServiceError>> + Send + 'static
    where
        G: FnOnce() -> F + Send + 'static,
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = flume::bounded(1);
        let job: Job = Box::new(move || {
            // `make` runs inside the task, so even its own panic is the task's.
            let task = tokio::spawn(async move { make().await });
            tokio::spawn(async move {
                let out = match task.await {
                    Ok(v) => Ok(v),
                    Err(_) => {
                        tracing::error!("a service job panicked");
                        Err(ServiceError::Panicked)
                    }
                };
                let _ = reply.send(out);
            });
        });
        let queued = match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(flume::TrySendError::Full(_)) => Err(ServiceError::Busy(self.jobs.len())),
            Err(flume::TrySendError::Disconnected(_)) => Err(ServiceError::Down),
        };
        let alive = self.alive.clone();
        let wait: Pin<Box<dyn Future<Output = Result<T, ServiceError>> + Send>> = match queued {
            Err(e) => Box::pin(std::future::ready(Err(e))),
            Ok(()) => Box::pin(
                async move { answer.recv_async().await.unwrap_or(Err(ServiceError::Down)) }.or(
                    async move {
                        // Only ever ends by disconnecting: the thread is gone.
                        let _ = alive.recv_async().await;
                        Err(ServiceError::Down)
                    },
                ),
            ),
        };
        wait
    }
}

/// Runs the future `make` builds on the process-wide service thread
/// ([`Service::global`]) and awaits its output. For tokio-based libraries on the
/// glommio backend (on the tokio backend handlers may also call them directly).
///
/// ```
/// # fn main() -> Result<(), conduit::rt::service::ServiceError> {
/// let answer = conduit::block_on(conduit::rt::service::call(|| async {
///     tokio::time::sleep(std::time::Duration::from_millis(1)).await;
///     42
/// }))?;
/// assert_eq!(answer, 42);
/// # Ok(()) }
/// ```
pub fn call<G, F, T>(make: G) -> impl Future<Output = Result<T, ServiceError>> + Send + 'static
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    Service::global().call(make)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "tests fail loudly on the first unexpected error"
    )]

    use super::*;

    #[test]
    fn a_job_runs_tokio_code_and_its_panic_is_an_error() {
        let s = Service::start("svc-test", 4);
        let v = crate::block_on(s.call(|| async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        }));
        assert!(v.unwrap() > 0);
        let p = crate::block_on(s.call(|| async { panic!("job fails") }));
        assert_eq!(p, Err::<(), _>(ServiceError::Panicked));
        // A panic in the closure itself, before any future: the same.
        let p = crate::block_on(s.call(|| -> std::future::Ready<()> { panic!("make fails") }));
        assert_eq!(p, Err(ServiceError::Panicked));
        // The thread goes on after a job's panic.
        assert_eq!(crate::block_on(s.call(|| async { 7 })), Ok(7));
    }

    /// Wedges the service thread: its job loop blocks until the returned sender sends,
    /// then panics (killing the thread) if `then_die`.
    fn wedge(s: &Service, then_die: bool) -> std::sync::mpsc::Sender<()> {
        let (release, wedge) = std::sync::mpsc::channel::<()>();
        let (wedged_tx, wedged) = std::sync::mpsc::channel::<()>();
        s.jobs
            .try_send(Box::new(move || {
                wedged_tx.send(()).unwrap();
                wedge.recv().unwrap();
                assert!(!then_die, "the service thread dies");
            }))
            .unwrap();
        wedged.recv().unwrap();
        release
    }

    #[test]
    fn a_full_queue_is_busy_at_once_and_drains_after() {
        let s = Service::start("svc-busy", 2);
        let release = wedge(&s, false);
        let a = s.call(|| async { 1 });
        let b = s.call(|| async { 2 });
        let c = crate::block_on(s.call(|| async { 3 }));
        assert_eq!(c, Err(ServiceError::Busy(2)));
        release.send(()).unwrap();
        assert_eq!(crate::block_on(a), Ok(1));
        assert_eq!(crate::block_on(b), Ok(2));
    }

    #[test]
    fn a_dead_service_is_down_not_a_hang() {
        let s = Service::start("svc-down", 4);
        // Wedge the thread, queue a call behind the wedge, then kill the thread (a
        // raw job's panic unwinds the loop): the queued call is answered `Down`.
        let release = wedge(&s, true);
        let queued = s.call(|| async { 1 });
        release.send(()).unwrap();
        assert_eq!(crate::block_on(queued), Err(ServiceError::Down));
        // And a call made after is refused or answered `Down` the same way.
        assert_eq!(
            crate::block_on(s.call(|| async { 2 })),
            Err(ServiceError::Down)
        );
    }
}
