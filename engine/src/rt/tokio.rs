//! The tokio backend's threads: a current-thread runtime (epoll, timers) with a
//! `LocalSet`, so tasks stay on their thread as on glommio and may be `!Send`; pinned
//! when asked. Everything else tokio-specific sits behind `exec` and `net`.

use std::future::Future;

use super::{Backend, ThreadSpec};

/// Starts a runtime thread running the future `make` builds. Tasks still pending when
/// it finishes are dropped with the `LocalSet`, on the thread, before the runtime.
pub(super) fn start<G, F, T>(
    spec: ThreadSpec,
    make: G,
) -> std::io::Result<std::thread::JoinHandle<Result<T, String>>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(spec.name.clone())
        .spawn(move || {
            if let Some(cpu) = spec.cpu {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                    tracing::warn!(cpu, thread = %spec.name, "could not pin the thread");
                }
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
            super::exec::enter(Backend::Tokio);
            let local = tokio::task::LocalSet::new();
            let out = local.block_on(&rt, async move { make().await });
            drop(local);
            drop(rt);
            Ok(out)
        })
}
