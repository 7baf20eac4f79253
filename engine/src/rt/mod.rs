//! Runtimes. Applications use [`spawn`] and [`sleep`] to run background work on their
//! shard whatever the backend, and choose the backend with [`Runtime`].
//!
//! Inside the crate: the primitives the shard glue (`crate::shard`, the same on both
//! backends) and the client are written in — spawning and timers (`exec`), sockets
//! (`net`), the writer (`writer`) — and one file per backend (`glommio`, `tokio`) that
//! starts its threads. Only `exec`, `net` and the backend files name a backend.

mod bind;
#[cfg(feature = "glommio")]
mod epoll;
pub(crate) mod exec;
#[cfg(feature = "glommio")]
mod glommio;
pub(crate) mod net;
#[cfg(feature = "tokio")]
pub mod service;
mod sys;
pub(crate) mod tls;
#[cfg(feature = "tokio")]
mod tokio;
pub(crate) mod writer;

#[cfg(not(any(feature = "glommio", feature = "tokio")))]
compile_error!(
    "conduit needs at least one runtime backend: enable the `glommio` or `tokio` feature"
);

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use exec::{sleep, spawn};

pub use crate::descriptor::Runtime;

impl Runtime {
    /// The backend this setting starts on this machine for `threads` shards
    /// ([`Glommio`](Runtime::Glommio) or [`Tokio`](Runtime::Tokio)), or why it cannot
    /// start: the same check a server makes at start.
    pub fn resolve(self, threads: usize) -> crate::Result<Runtime> {
        choose(self, threads).map(|(backend, _)| backend.runtime())
    }
}

/// A backend this build has, as resolved from a [`Runtime`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// glommio (io_uring).
    #[cfg(feature = "glommio")]
    Glommio,
    /// tokio (epoll).
    #[cfg(feature = "tokio")]
    Tokio,
}

impl Backend {
    /// The public name of this backend.
    pub fn runtime(self) -> Runtime {
        match self {
            #[cfg(feature = "glommio")]
            Backend::Glommio => Runtime::Glommio,
            #[cfg(feature = "tokio")]
            Backend::Tokio => Runtime::Tokio,
        }
    }
}

/// The backend chosen for `threads` executor threads, and why (for the log); an
/// explicit choice this build or machine cannot run is an error saying so.
pub fn choose(runtime: Runtime, threads: usize) -> Result<(Backend, String), crate::error::Error> {
    let missing = |name: &str| crate::error::Error::Config {
        field: "runtime",
        problem: format!("this build has no {name} backend (cargo feature `{name}`)"),
    };
    match runtime {
        Runtime::Glommio => {
            #[cfg(feature = "glommio")]
            {
                crate::preflight::check(threads)?;
                Ok((Backend::Glommio, "chosen in the settings".into()))
            }
            #[cfg(not(feature = "glommio"))]
            Err(missing("glommio"))
        }
        Runtime::Tokio => {
            #[cfg(feature = "tokio")]
            {
                let _ = threads;
                Ok((Backend::Tokio, "chosen in the settings".into()))
            }
            #[cfg(not(feature = "tokio"))]
            Err(missing("tokio"))
        }
        Runtime::Auto => {
            let _ = missing;
            #[cfg(feature = "glommio")]
            let refused = match crate::preflight::check(threads) {
                Ok(()) => {
                    return Ok((
                        Backend::Glommio,
                        "io_uring works and locked memory suffices".into(),
                    ))
                }
                Err(e) => e,
            };
            #[cfg(feature = "tokio")]
            {
                #[cfg(feature = "glommio")]
                return Ok((
                    Backend::Tokio,
                    format!("glommio cannot run here: {refused}"),
                ));
                #[cfg(not(feature = "glommio"))]
                return Ok((Backend::Tokio, "the only backend in this build".into()));
            }
            #[cfg(not(feature = "tokio"))]
            Err(refused)
        }
    }
}

/// How an engine thread is set up.
pub struct ThreadSpec {
    /// The thread's name.
    pub name: String,
    /// The CPU it is pinned to, if any.
    pub cpu: Option<usize>,
    /// The scheduler time slice (glommio's preemption timer; tokio has its own
    /// cooperative budget).
    #[cfg_attr(not(feature = "glommio"), allow(dead_code, reason = "glommio only"))]
    pub preempt_timer: Duration,
    /// Memory for glommio's io_uring buffers (unused on tokio).
    #[cfg_attr(not(feature = "glommio"), allow(dead_code, reason = "glommio only"))]
    pub io_memory: usize,
    /// Entries of glommio's io_uring rings (unused on tokio; epoll has no queue to
    /// size): deeper rings keep more operations in flight per wake-up, for threads that
    /// drive thousands of sockets.
    #[cfg_attr(not(feature = "glommio"), allow(dead_code, reason = "glommio only"))]
    pub ring_depth: usize,
}

/// An engine thread running one future on its backend, joined for the output.
pub struct RtThread<T: Send + 'static> {
    /// The backend's handle.
    handle: Handle<T>,
    /// Set when the thread's future is gone (finished, or dropped by a panic), so a
    /// caller never waits on a thread that can no longer answer.
    gone: Arc<AtomicBool>,
}

/// The backend's join handle.
enum Handle<T: Send + 'static> {
    #[cfg(feature = "glommio")]
    Glommio(::glommio::ExecutorJoinHandle<T>),
    #[cfg(feature = "tokio")]
    Tokio(std::thread::JoinHandle<Result<T, String>>),
}

/// Sets its flag when dropped: with the thread's future, however it ends.
struct GoneOnDrop(Arc<AtomicBool>);

impl Drop for GoneOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl<T: Send + 'static> RtThread<T> {
    /// Starts a thread running the future `make` builds on `backend`.
    pub fn start<G, F>(backend: Backend, spec: ThreadSpec, make: G) -> std::io::Result<Self>
    where
        G: FnOnce() -> F + Send + 'static,
        F: Future<Output = T> + 'static,
    {
        let gone = Arc::new(AtomicBool::new(false));
        let guard = GoneOnDrop(gone.clone());
        let make = move || {
            let fut = make();
            async move {
                let _guard = guard;
                fut.await
            }
        };
        let handle = match backend {
            #[cfg(feature = "glommio")]
            Backend::Glommio => self::glommio::start(spec, make).map(Handle::Glommio),
            #[cfg(feature = "tokio")]
            Backend::Tokio => self::tokio::start(spec, make).map(Handle::Tokio),
        }?;
        Ok(RtThread { handle, gone })
    }

    /// The thread's id.
    pub fn thread_id(&self) -> std::thread::ThreadId {
        match &self.handle {
            #[cfg(feature = "glommio")]
            Handle::Glommio(h) => h.thread().id(),
            #[cfg(feature = "tokio")]
            Handle::Tokio(h) => h.thread().id(),
        }
    }

    /// Whether the thread's future has finished or was dropped (it answers nothing
    /// more).
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Waits for the thread; its future's output, or why it did not finish.
    pub fn join(self) -> Result<T, String> {
        match self.handle {
            #[cfg(feature = "glommio")]
            Handle::Glommio(h) => h
                .join()
                .map_err(|e| crate::preflight::explain(&e.to_string())),
            #[cfg(feature = "tokio")]
            Handle::Tokio(h) => h.join().map_err(|p| {
                let what = p
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                format!("the thread panicked: {what}")
            })?,
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "tests fail loudly on the first unexpected error"
    )]
    //! What the crate's tests of the glue share: the backends to run on and a thread of
    //! one to run in.

    use std::future::Future;
    use std::time::Duration;

    use super::{Backend, RtThread, ThreadSpec};

    /// The backends this build has and this machine can run (glommio needs io_uring);
    /// each one skipped says why.
    pub(crate) fn backends() -> Vec<Backend> {
        let all = [
            #[cfg(feature = "glommio")]
            Backend::Glommio,
            #[cfg(feature = "tokio")]
            Backend::Tokio,
        ];
        all.into_iter()
            .filter(|b| match super::choose(b.runtime(), 1) {
                Ok(_) => true,
                Err(e) => {
                    eprintln!("skipped on {b:?}: {e}");
                    false
                }
            })
            .collect()
    }

    /// Runs the future `body` builds on a fresh thread of `backend` named `name`, and
    /// returns its output.
    pub(crate) fn on<T, F, G>(backend: Backend, name: &str, body: G) -> T
    where
        T: Send + 'static,
        F: Future<Output = T> + 'static,
        G: FnOnce() -> F + Send + 'static,
    {
        let spec = ThreadSpec {
            name: name.into(),
            cpu: None,
            preempt_timer: Duration::from_millis(10),
            io_memory: 64 * 1024,
            ring_depth: 128,
        };
        RtThread::start(backend, spec, body)
            .unwrap()
            .join()
            .unwrap()
    }
}
