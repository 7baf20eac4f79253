//! The glommio backend's threads: one `LocalExecutor` each, pinned when asked, with its
//! io_uring rings. Everything else glommio-specific sits behind `exec` and `net`.

use std::future::Future;

use glommio::{LocalExecutorBuilder, Placement};

use super::{Backend, ThreadSpec};

/// Starts an executor thread running the future `make` builds.
pub(super) fn start<G, F, T>(
    spec: ThreadSpec,
    make: G,
) -> std::io::Result<glommio::ExecutorJoinHandle<T>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let placement = match spec.cpu {
        Some(cpu) => Placement::Fixed(cpu),
        None => Placement::Unbound,
    };
    LocalExecutorBuilder::new(placement)
        .name(&spec.name)
        .io_memory(spec.io_memory)
        .ring_depth(spec.ring_depth)
        .preempt_timer(spec.preempt_timer)
        .spawn(move || {
            super::exec::enter(Backend::Glommio);
            // The thread's socket reactor state (an epoll instance, an eventfd) exists
            // from the start, so its descriptors are the thread's, not its first
            // connection's.
            if let Err(e) = super::epoll::prepare_thread() {
                tracing::warn!("epoll instance for the socket reactor: {e}");
            }
            let main = make();
            async move {
                let out = main.await;
                // The socket reactor ends with the thread's work, not with its
                // executor (which would keep it waiting, and its descriptors open).
                super::epoll::stop_reactor().await;
                out
            }
        })
        .map_err(std::io::Error::from)
}
