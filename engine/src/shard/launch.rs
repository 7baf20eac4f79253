//! Starting a run's shards: one pinned executor thread per shard on the chosen backend,
//! each with its descriptors of the listening sockets, and stopping them again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{shard_main, BusMsg, Control, IO_MEMORY_BYTES, RING_DEPTH};
use crate::core::CoreConfig;
use crate::error::{Error, Result};
use crate::handlers::Registry;
use crate::router::{Router, RunState};
use crate::rt::net::listen_exclusive;
use crate::rt::{Backend, RtThread, Runtime, ThreadSpec};

/// Everything a run's shards are started with.
pub(crate) struct Plan {
    /// The server's messaging half.
    pub router: Router,
    /// The run.
    pub run: Arc<RunState>,
    /// The handlers.
    pub registry: Arc<Registry>,
    /// What every connection core shares.
    pub core_config: Arc<CoreConfig>,
    /// Where to listen (port 0: the system picks one).
    pub bind_addr: SocketAddr,
    /// Where the WebSocket listener listens, if there is one.
    pub ws_bind_addr: Option<SocketAddr>,
    /// The listen backlog.
    pub backlog: i32,
    /// Each shard's bus receiver, in shard order.
    pub buses: Vec<flume::Receiver<BusMsg>>,
    /// The scheduler time slice.
    pub preempt_timer: Duration,
    /// The backend asked for.
    pub runtime: Runtime,
}

/// The shards of a run, started and listening.
pub(crate) struct Launched {
    executors: Vec<RtThread<()>>,
    /// The server's one listening socket, kept to wake every accept at stop.
    socket: socket2::Socket,
    /// The address every shard listens on.
    pub addr: SocketAddr,
    /// The WebSocket listening socket and its address, if there is one.
    ws: Option<(socket2::Socket, SocketAddr)>,
    /// The backend the shards run on.
    pub backend: Backend,
}

impl Launched {
    /// Tells every shard to exit and waits for them. A shard whose thread is already
    /// gone (it failed, or panicked) is not asked: nothing would answer.
    pub fn join(self, run: &RunState) {
        self.stop_accepting();
        for (i, shard) in self.executors.iter().enumerate() {
            if !shard.is_gone() {
                let _ = run.control(i, Control::Exit);
            }
        }
        for h in self.executors {
            if let Err(e) = h.join() {
                tracing::error!("a shard ended badly: {e}");
            }
        }
    }

    /// Shuts the listening socket's receive side: accepts still waiting on it in any
    /// shard end with an error (the socket stays open while a shard holds a descriptor,
    /// so closing one descriptor would not end them), and new connections are refused
    /// (reset) instead of waiting in the backlog. Idempotent.
    pub fn stop_accepting(&self) {
        let sockets = std::iter::once(&self.socket).chain(self.ws.as_ref().map(|(s, _)| s));
        for socket in sockets {
            if let Err(e) = socket.shutdown(std::net::Shutdown::Read) {
                tracing::trace!("shutdown(listener): {e}");
            }
        }
    }

    /// The WebSocket listener's address, if there is one.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws.as_ref().map(|(_, a)| *a)
    }
}

/// Starts one pinned executor thread per shard on the chosen backend and returns once
/// every one listens, or the first failure (the shards already started are stopped
/// again). With [`Runtime::Auto`], a glommio start that fails part-way is retried on
/// tokio for every shard: never some shards on each.
pub(crate) fn launch(plan: Plan) -> Result<Launched> {
    let (backend, why) = crate::rt::choose(plan.runtime, plan.buses.len())?;
    tracing::info!(runtime = %backend.runtime(), asked = %plan.runtime, "runtime: {why}");
    match launch_on(&plan, backend) {
        #[cfg(all(feature = "glommio", feature = "tokio"))]
        Err(e) if plan.runtime == Runtime::Auto && backend == Backend::Glommio => {
            // The failed attempt's sockets are closed by now, so the port binds again.
            tracing::warn!("glommio failed to start every shard ({e}); starting all on tokio");
            launch_on(&plan, Backend::Tokio)
        }
        r => r,
    }
}

/// [`launch`] on one backend.
fn launch_on(plan: &Plan, backend: Backend) -> Result<Launched> {
    let socket = listen_exclusive(plan.bind_addr, plan.backlog).map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e}", plan.bind_addr),
        ))
    })?;
    let ws = match plan.ws_bind_addr {
        Some(at) => {
            let s = listen_exclusive(at, plan.backlog).map_err(|e| {
                Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot listen for websocket on {at}: {e}"),
                ))
            })?;
            let a = s.local_addr()?.as_socket().unwrap_or(at);
            Some((s, a))
        }
        None => None,
    };
    let cpus = crate::descriptor::allowed_cpus();
    let addr = socket.local_addr()?.as_socket().unwrap_or(plan.bind_addr);
    let mut launched = Launched {
        executors: Vec::new(),
        socket,
        addr,
        ws,
        backend,
    };
    for (index, bus) in plan.buses.iter().cloned().enumerate() {
        let (bound_tx, bound_rx) = crossbeam_channel::bounded(1);
        // Every shard accepts on its own descriptor of the one listening socket.
        let listen_fd = match launched.socket.try_clone() {
            Ok(s) => std::os::fd::OwnedFd::from(std::net::TcpListener::from(s)),
            Err(e) => {
                launched.join(&plan.run);
                return Err(Error::Io(e));
            }
        };
        let ws_fd = match launched.ws.as_ref().map(|(s, _)| s.try_clone()).transpose() {
            Ok(s) => s.map(|s| std::os::fd::OwnedFd::from(std::net::TcpListener::from(s))),
            Err(e) => {
                launched.join(&plan.run);
                return Err(Error::Io(e));
            }
        };
        let setup = Setup {
            index,
            router: plan.router.clone(),
            run: plan.run.clone(),
            registry: plan.registry.clone(),
            core_config: plan.core_config.clone(),
            listen_fd,
            ws_fd,
            bus,
            bound: bound_tx,
        };
        let cpu = cpus[index % cpus.len().max(1)];
        let spec = ThreadSpec {
            name: format!("conduit-shard{index}"),
            cpu: Some(cpu),
            preempt_timer: plan.preempt_timer,
            io_memory: IO_MEMORY_BYTES,
            ring_depth: RING_DEPTH,
        };
        let failure = match RtThread::start(backend, spec, move || shard_main(setup)) {
            Err(e) => Error::Runtime(format!("cannot start shard {index} on CPU {cpu}: {e}")),
            Ok(handle) => {
                let bound = bound_rx.recv();
                launched.executors.push(handle);
                match bound {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => {
                        // It returned before serving its bus: join it, do not ask it.
                        if let Some(h) = launched.executors.pop() {
                            let _ = h.join();
                        }
                        Error::Io(std::io::Error::other(e))
                    }
                    Err(_) => {
                        let joined = launched.executors.pop().map(RtThread::join);
                        Error::Runtime(match joined {
                            Some(Err(e)) => e,
                            _ => format!("shard {index} exited during startup"),
                        })
                    }
                }
            }
        };
        launched.join(&plan.run);
        return Err(failure);
    }
    Ok(launched)
}

/// What one shard is started with.
pub(super) struct Setup {
    pub(super) index: usize,
    pub(super) router: Router,
    pub(super) run: Arc<RunState>,
    pub(super) registry: Arc<Registry>,
    pub(super) core_config: Arc<CoreConfig>,
    /// This shard's descriptor of the server's listening socket.
    pub(super) listen_fd: std::os::fd::OwnedFd,
    /// Its descriptor of the WebSocket listening socket, if there is one.
    pub(super) ws_fd: Option<std::os::fd::OwnedFd>,
    pub(super) bus: flume::Receiver<BusMsg>,
    /// Told once the shard accepts on its listener (or why it cannot).
    pub(super) bound: crossbeam_channel::Sender<std::result::Result<(), String>>,
}
