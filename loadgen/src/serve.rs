//! `conduit-loadgen serve`: the conduit server the scenarios measure.
//!
//! Handlers: RPC `add(a, b)`; message `bench_broadcast`, whose handler broadcasts the
//! received data as message `tick` to every other connection (no reply); message
//! `bench_join`, which puts its sender in the room its data names and answers
//! `bench_join_response` `{room, joined, members, shard}` (the room's size right after
//! the join, the shard serving the sender; `{room, error}` if refused); and message
//! `bench_room_broadcast`, which broadcasts its data as `tick`, unchanged, to the room
//! named by the data's `r`, except the sender (no reply); and message `bench_source`,
//! answered `bench_source_response` `{peer}`: the IP address the connection comes
//! from as the server sees it (`--sources` runs check it). With `--cluster-broker` it
//! is a node of a cluster (`--node`, `--cluster-name`) whose broadcasts reach every
//! node's connections through Redis or NATS (`--cluster-url`). It runs
//! on the runtime backend it is given (`--runtime`, default `auto`), prints
//! `READY port=<port> pid=<pid> runtime=<glommio|tokio>` on stdout once it accepts
//! connections (and ` ws=<host:port>` with a WebSocket listener, `--websocket-port`) — the backend it actually runs on, so a suite records what it measured —
//! and stops on SIGINT / SIGTERM, or when its stdin closes if asked to (so a suite that
//! dies takes its servers with it). With `--config FILE` the server's settings come
//! from that file and its `CONDUIT_*` environment overrides ([`serve_descriptor`]);
//! the descriptor flags are refused beside it.

use std::io::{BufRead, Write};
use std::time::Duration;

use conduit::cluster::{Broker, ClusterDescriptor};
use conduit::{Runtime, Server, ServerDescriptor, Value};

use crate::payload::{BENCH_BROADCAST, BENCH_JOIN, BENCH_ROOM_BROADCAST, ROOM_KEY, TICK};
use crate::{Error, Result};

/// Message type that asks the server which address it sees the connection come
/// from; `serve` answers with [`BENCH_SOURCE_RESPONSE`].
pub const BENCH_SOURCE: &str = "bench_source";

/// The server's answer to [`BENCH_SOURCE`]: `{peer}`, the peer's IP address as text.
pub const BENCH_SOURCE_RESPONSE: &str = "bench_source_response";

/// The line `serve` prints once it accepts connections (`READY port=… pid=…
/// runtime=…`).
pub const READY_PREFIX: &str = "READY";

/// Most connections the benchmark server admits (well above any scenario's), when the
/// host's open-files limit allows them (see [`max_connections`]).
pub const SERVE_MAX_CONNECTIONS: usize = 25_000;

/// Descriptors kept free of connections: the engine's own per shard and process, and
/// the refusals in flight (the engine checks the same sum at start).
const RESERVED_FDS: usize = 64 + 64 + 16 * 64;

/// [`SERVE_MAX_CONNECTIONS`], or fewer when the hard open-files limit would not hold
/// them (the engine refuses to start a server whose `max_connections` cannot fit).
pub fn max_connections() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
        || lim.rlim_max == libc::RLIM_INFINITY
    {
        return SERVE_MAX_CONNECTIONS;
    }
    let fit = usize::try_from(lim.rlim_max)
        .unwrap_or(usize::MAX)
        .saturating_sub(RESERVED_FDS);
    SERVE_MAX_CONNECTIONS.min(fit).max(1)
}

/// How `serve` is configured.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Address to bind (loopback).
    pub host: String,
    /// Port; 0 picks a free one.
    pub port: u16,
    /// Port of a WebSocket listener (path `/conduit`) beside the TCP one; 0 picks a
    /// free one. `None`: TCP only.
    pub websocket_port: Option<u16>,
    /// TLS on every listener: the certificate chain and its key (PEM files).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Shards (executors).
    pub shards: usize,
    /// Heartbeat interval; the timeout is [`heartbeat_timeout`] of it.
    pub heartbeat: Duration,
    /// Password.
    pub password: String,
    /// Pin the whole process (and so its shards) to these CPUs first.
    pub cpus: Vec<usize>,
    /// Stop when stdin reaches EOF.
    pub stop_on_stdin_eof: bool,
    /// Receive buffer each connection starts with (`None`: the engine's default).
    pub recv_buffer_bytes: Option<usize>,
    /// The runtime backend asked of the server ([`Runtime::Auto`]: the engine picks).
    pub runtime: Runtime,
    /// Admission and login settings (`attack` measures the engine's own).
    pub login: LoginSettings,
    /// The cluster this server is a node of, if any.
    pub cluster: Option<ClusterJoin>,
    /// Serve Prometheus metrics here (`GET /metrics`); port 0 picks one, the READY
    /// line says which as `metrics=HOST:PORT`.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// The cluster a benchmark server joins: the server becomes one node, and its
/// broadcasts reach the connections of every node through the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterJoin {
    /// The broker the nodes share.
    pub broker: Broker,
    /// This node's id (`0..1024`, unique in the cluster).
    pub node: usize,
    /// The cluster's name: the prefix of its broker channels.
    pub name: String,
}

impl ClusterJoin {
    /// The engine's cluster settings for this node (its defaults otherwise).
    pub fn descriptor(&self) -> ClusterDescriptor {
        ClusterDescriptor::new(self.broker.clone(), self.node).cluster_name(self.name.clone())
    }
}

/// Admission and login settings of the benchmark server. By default the benchmark's
/// own: `max_connections` as high as the open-files limit allows ([`max_connections`]),
/// the login budgets raised to it (every load-generator connection comes from
/// 127.0.0.1) and a 1 ms `auth_failure_delay`. With `engine_defaults`, the engine's
/// defaults instead, as a server built like the chat example runs: `max_connections`
/// 1000, `max_pending` 256, `max_pending_per_source` 16, `max_auth_failures_per_source`
/// 5, `auth_failure_delay` 200 ms, `auth_timeout` 30 s. Each `Some` overrides either.
#[derive(Clone, Debug, Default)]
pub struct LoginSettings {
    /// Start from the engine's defaults, not the benchmark's raised settings.
    pub engine_defaults: bool,
    /// `max_connections`.
    pub max_connections: Option<usize>,
    /// `max_pending`: connections logging in at once.
    pub max_pending: Option<usize>,
    /// `max_pending_per_source`: of those, from one address.
    pub max_pending_per_source: Option<usize>,
    /// `max_auth_failures_per_source`: failed logins before the address backs off.
    pub max_auth_failures_per_source: Option<u32>,
    /// `auth_failure_delay`: the brake after a wrong password.
    pub auth_failure_delay: Option<Duration>,
    /// `auth_timeout`: time a connection has to log in.
    pub auth_timeout: Option<Duration>,
}

impl LoginSettings {
    /// Applies these settings to `desc`.
    pub fn apply(&self, mut desc: ServerDescriptor) -> ServerDescriptor {
        if !self.engine_defaults {
            desc = desc.max_connections(max_connections());
            // Refusals must not be mistaken for slowness; nobody guesses passwords here.
            desc = desc.auth_failure_delay(Duration::from_millis(1));
            // Load-generator connections come from one address (or a few, with
            // `--sources`) and up to all of them log in at once: the login budgets,
            // meant for the open internet, would refuse them.
            desc.max_pending = desc.max_connections;
            desc.max_pending_per_source = desc.max_connections;
        }
        if let Some(n) = self.max_connections {
            desc = desc.max_connections(n);
        }
        if let Some(n) = self.max_pending {
            desc.max_pending = n;
        }
        if let Some(n) = self.max_pending_per_source {
            desc.max_pending_per_source = n;
        }
        if let Some(n) = self.max_auth_failures_per_source {
            desc.max_auth_failures_per_source = n;
        }
        if let Some(d) = self.auth_failure_delay {
            desc = desc.auth_failure_delay(d);
        }
        if let Some(d) = self.auth_timeout {
            desc = desc.auth_timeout(d);
        }
        desc
    }
}

/// Shortest heartbeat timeout `serve` uses: a loaded machine must not turn a slow
/// PONG into a disconnect in the middle of a measurement.
pub const MIN_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// The heartbeat timeout for `interval`: three intervals, at least
/// [`MIN_HEARTBEAT_TIMEOUT`].
pub fn heartbeat_timeout(interval: Duration) -> Duration {
    (interval * 3).max(MIN_HEARTBEAT_TIMEOUT)
}

/// Builds the benchmark server.
pub fn build(opts: &ServeOptions) -> Result<Server> {
    let mut desc = ServerDescriptor::new(opts.password.clone())
        .host(opts.host.clone())
        .port(opts.port)
        .shards(opts.shards)
        .name("conduit-loadgen-serve")
        .heartbeat(opts.heartbeat, heartbeat_timeout(opts.heartbeat))
        .drain_timeout(Duration::from_secs(1))
        .runtime(opts.runtime);
    desc = opts.login.apply(desc);
    if let Some(n) = opts.recv_buffer_bytes {
        desc.recv_buffer_bytes = n;
    }
    if let Some(c) = &opts.cluster {
        desc = desc.cluster(c.descriptor());
    }
    if let Some(a) = opts.metrics_addr {
        desc = desc.metrics_addr(a);
    }
    if let Some(port) = opts.websocket_port {
        desc = desc.websocket(conduit::ws::WebSocketSettings::new(port));
    }
    if let Some((cert, key)) = &opts.tls {
        desc = desc.tls(conduit::tls::TlsSettings::from_pem_files(cert, key));
    }
    build_with(desc)
}

/// Adds two integers (wrapping, so any two 64-bit integers have an answer). Written as users
/// write a method, so the `rpc` scenario measures the path they get.
#[conduit::rpc]
async fn add(a: i64, b: i64) -> i64 {
    a.wrapping_add(b)
}

/// The benchmark server's handlers on a server with the settings `desc`.
pub fn build_with(desc: ServerDescriptor) -> Result<Server> {
    let server = Server::new(desc).map_err(|e| Error::Args(e.to_string()))?;
    server.rpc(add);
    server.on(BENCH_BROADCAST, |client, data: Value| async move {
        client
            .server()
            .broadcast(TICK, data)
            .exclude([client.id()])
            .await;
    });
    server.on(BENCH_JOIN, |client, data: Value| async move {
        let Some(room) = data.as_str() else {
            return Value::map().with("error", "the data must be a room name (a string)");
        };
        match client.join(room).await {
            Ok(joined) => Value::map()
                .with("room", room)
                .with("joined", joined)
                .with("members", client.server().room(room).len())
                .with("shard", client.id().shard()),
            Err(e) => Value::map().with("room", room).with("error", e.to_string()),
        }
    });
    server.on(BENCH_SOURCE, |client, _data: Value| async move {
        Value::map().with("peer", client.peer_addr().ip().to_string())
    });
    server.on(BENCH_ROOM_BROADCAST, |client, data: Value| async move {
        let Some(room) = data
            .get(ROOM_KEY)
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return;
        };
        client
            .server()
            .broadcast(TICK, data)
            .to(room)
            .exclude([client.id()])
            .await;
    });
    Ok(server)
}

/// Runs the benchmark server until stopped.
pub fn serve(opts: &ServeOptions) -> Result<()> {
    if !opts.cpus.is_empty() {
        pin_process(&opts.cpus)?;
    }
    run(build(opts)?, opts.stop_on_stdin_eof)
}

/// `serve --config`: the benchmark server with the settings `desc` (from a file),
/// pinned to `cpus` if any, until stopped.
pub fn serve_descriptor(
    desc: ServerDescriptor,
    cpus: &[usize],
    stop_on_stdin_eof: bool,
) -> Result<()> {
    if !cpus.is_empty() {
        pin_process(cpus)?;
    }
    run(build_with(desc)?, stop_on_stdin_eof)
}

/// Starts `server`, prints the READY line and waits until it is stopped.
fn run(server: Server, stop_on_stdin_eof: bool) -> Result<()> {
    let running = server
        .start()
        .map_err(|e| Error::Target(format!("server did not start: {e}")))?;
    {
        let mut out = std::io::stdout().lock();
        let ws = server
            .router()
            .websocket_addr()
            .map(|a| format!(" ws={a}"))
            .unwrap_or_default();
        let metrics = server
            .router()
            .metrics_addr()
            .map(|a| format!(" metrics={a}"))
            .unwrap_or_default();
        writeln!(
            out,
            "{READY_PREFIX} port={} pid={} runtime={}{ws}{metrics}",
            server.port(),
            std::process::id(),
            running.runtime()
        )?;
        out.flush()?;
    }
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let handle = signals.handle();
    let on_signal = server.clone();
    let watcher = std::thread::Builder::new()
        .name("serve-signals".into())
        .spawn(move || {
            let mut signals = signals;
            if signals.forever().next().is_some() {
                on_signal.stop();
            }
        })?;
    if stop_on_stdin_eof {
        let on_eof = server.clone();
        std::thread::Builder::new()
            .name("serve-stdin".into())
            .spawn(move || {
                let stdin = std::io::stdin();
                let mut line = String::new();
                let mut lock = stdin.lock();
                while matches!(lock.read_line(&mut line), Ok(n) if n > 0) {
                    line.clear();
                }
                on_eof.stop();
            })?;
    }
    let result = running.wait();
    handle.close();
    let _ = watcher.join();
    result.map_err(|e| Error::Target(e.to_string()))
}

/// Restricts this process to `cpus` (before any thread starts, so every shard
/// inherits it and conduit places its shards on them).
pub fn pin_process(cpus: &[usize]) -> Result<()> {
    for &cpu in cpus {
        if !conduit::descriptor::allowed_cpus().contains(&cpu) {
            return Err(Error::Args(format!(
                "CPU {cpu} is not available to this process"
            )));
        }
    }
    // core_affinity pins to one core; for a set, use sched_setaffinity directly.
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it, and
    // sched_setaffinity(0, …) reads it for the calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(Error::Io(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// What a server's READY line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The port it listens on.
    pub port: u16,
    /// Its pid.
    pub pid: u32,
    /// The runtime backend it runs on: `serve` says; other servers (netconduit's
    /// reference server) do not.
    pub runtime: Option<Runtime>,
    /// The WebSocket listener's address, when it has one.
    pub ws: Option<std::net::SocketAddr>,
    /// The Prometheus exporter's address, when it has one.
    pub metrics: Option<std::net::SocketAddr>,
}

/// Parses the `READY port=… pid=… [runtime=…] [ws=…]` line.
pub fn parse_ready(line: &str) -> Option<Ready> {
    let rest = line.trim().strip_prefix(READY_PREFIX)?;
    let mut port = None;
    let mut pid = None;
    let mut runtime = None;
    let mut ws = None;
    let mut metrics = None;
    for part in rest.split_ascii_whitespace() {
        if let Some(v) = part.strip_prefix("port=") {
            port = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("pid=") {
            pid = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("runtime=") {
            runtime = Some(v.parse().ok()?);
        } else if let Some(v) = part.strip_prefix("ws=") {
            ws = Some(v.parse().ok()?);
        } else if let Some(v) = part.strip_prefix("metrics=") {
            metrics = Some(v.parse().ok()?);
        }
    }
    Some(Ready {
        port: port?,
        pid: pid?,
        runtime,
        ws,
        metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line() {
        let ready = |port, pid, runtime| {
            Some(Ready {
                port,
                pid,
                runtime,
                ws: None,
                metrics: None,
            })
        };
        assert_eq!(
            parse_ready("READY port=4242 pid=77\n"),
            ready(4242, 77, None)
        );
        assert_eq!(parse_ready("READY pid=77 port=1"), ready(1, 77, None));
        assert_eq!(
            parse_ready("READY port=1 pid=2 runtime=tokio"),
            ready(1, 2, Some(Runtime::Tokio))
        );
        assert_eq!(
            parse_ready("READY runtime=glommio port=1 pid=2"),
            ready(1, 2, Some(Runtime::Glommio))
        );
        assert_eq!(
            parse_ready("READY port=1 pid=2 runtime=tokio ws=127.0.0.1:4243"),
            Some(Ready {
                port: 1,
                pid: 2,
                runtime: Some(Runtime::Tokio),
                ws: Some("127.0.0.1:4243".parse().unwrap()),
                metrics: None,
            })
        );
        assert_eq!(
            parse_ready("READY port=1 pid=2 metrics=127.0.0.1:9464").and_then(|r| r.metrics),
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(parse_ready("READY port=1 pid=2 metrics=x"), None);
        assert_eq!(parse_ready("READY port=1 pid=2 ws=nowhere"), None);
        assert_eq!(parse_ready("READY port=1 pid=2 runtime=epoll"), None);
        assert_eq!(parse_ready("READY port=4242"), None);
        assert_eq!(parse_ready("hello"), None);
        assert_eq!(parse_ready("READY port=99999 pid=1"), None);
    }
}
