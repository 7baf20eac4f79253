//! A running server: waiting for it, stopping it, and the graceful part of a stop.

use std::sync::Arc;
use std::thread::JoinHandle;

use super::Server;
use crate::error::{Error, Result};
use crate::router::{Control, RunState};

/// The graceful part of stopping: stop accepting (and refuse new connections at once:
/// none waits in the listen backlog through the hooks and the drain), run the shutdown
/// hooks, then drain every shard at once (each closes its connections in parallel).
/// Returns what failed.
pub(super) fn shut_down(
    run: &Arc<RunState>,
    launched: &crate::shard::Launched,
    shards: usize,
) -> Vec<String> {
    let mut errors = Vec::new();
    // Other nodes forget this one at once (not after `node_timeout`), and stop sending
    // it what it would no longer deliver.
    if let Some(u) = &run.uplink {
        u.shut_down();
    }
    for i in 0..shards {
        if let Err(e) = run.control(i, Control::StopAccepting) {
            errors.push(e);
        }
    }
    launched.stop_accepting();
    if let Err(e) = run.control(0, Control::RunShutdownHooks) {
        errors.push(e);
    }
    let drains: Vec<_> = (0..shards)
        .map(|i| {
            let run = run.clone();
            std::thread::spawn(move || run.control(i, Control::Drain))
        })
        .collect();
    for d in drains {
        match d.join() {
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("drain thread panicked".into()),
            Ok(Ok(())) => {}
        }
    }
    errors
}

/// A running server started with [`Server::start`]. Dropping it stops the server and
/// waits for the shutdown to finish.
#[derive(Debug)]
pub struct Running {
    /// The server.
    pub(super) server: Server,
    /// The thread that waits for a stop request and shuts the run down.
    pub(super) control: Option<JoinHandle<Result<()>>>,
    /// Receives the run's end from the control thread, for waiting without blocking a
    /// thread ([`Running::stopped`]).
    pub(super) done: flume::Receiver<Result<()>>,
    /// The backend the shards run on.
    pub(super) runtime: crate::rt::Runtime,
}

impl Running {
    /// The server.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Waits until the server has stopped (after `stop()`, a signal, or a handler
    /// calling `stop`).
    pub fn wait(mut self) -> Result<()> {
        self.join()
    }

    /// Stops the server gracefully and waits for it.
    pub fn stop(mut self) -> Result<()> {
        self.server.stop();
        self.join()
    }

    /// The runtime backend the shards run on ([`Runtime::Glommio`](crate::rt::Runtime)
    /// or `Tokio`, never `Auto`).
    pub fn runtime(&self) -> crate::rt::Runtime {
        self.runtime
    }

    /// Waits, without blocking the calling thread, until the server has stopped: for
    /// async applications (any executor). The server's own threads do the stopping.
    /// Dropping this future before it finishes drops the handle: that stops the
    /// server and waits for it, blocking, as dropping [`Running`] does.
    pub async fn stopped(mut self) -> Result<()> {
        let result = self
            .done
            .recv_async()
            .await
            .unwrap_or_else(|_| Err(Error::Runtime("control thread ended early".into())));
        // The control thread sent its result as its last step; joining it is immediate.
        let _ = self.join();
        result
    }

    /// Asks the server to stop and waits for it without blocking the calling thread.
    pub async fn stop_and_wait(self) -> Result<()> {
        self.server.stop();
        self.stopped().await
    }

    fn join(&mut self) -> Result<()> {
        match self.control.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(Error::Runtime("control thread panicked".into()))),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.control.is_some() {
            self.server.stop();
            let _ = self.join();
        }
    }
}
