//! The scenarios. Each runs on one executor (pinned to the load generator's core;
//! glommio or tokio, as [`Runtime::Auto`] picks on this machine, whatever the server
//! under test runs on), one task per connection, and is bounded in count and in time:
//! when a bound is hit the remaining tasks are cancelled and the result says it did
//! not complete.
//!
//! Every scenario opens and authenticates its connections first (bounded concurrency,
//! retries for servers with small listen backlogs; `connect.rs`), then measures one
//! phase. The server's CPU time is read from `/proc/<pid>` right before and right
//! after that phase.
//!
//! This module holds what every scenario shares: the run description ([`RunSpec`],
//! [`Scenario`]), the result ([`RunResult`]), the common limits and their checks, and
//! the executor that runs a scenario. Each scenario lives in its own file:
//! `connect.rs`, `heartbeat.rs`, `broadcast/` (with the broadcast over the nodes of a
//! cluster, [`run_spread`]) and `rpc.rs`.

mod broadcast;
mod connect;
mod heartbeat;
mod progress;
mod redis;
mod rpc;

use std::time::Duration;

use conduit::__rt::{choose, RtThread, ThreadSpec};
use conduit::Runtime;
use conduit_protocol::Codec;
use serde::Serialize;

use crate::procfs::{self, CpuMark, Proc};
use crate::stats::{Latency, LatencySummary, LossReport};
use crate::wire::ConnectSpec;
use crate::{Error, Result};

pub use broadcast::{
    run_spread, BroadcastMode, BroadcastSpec, NodeFigures, SpreadNode, SpreadResult, SpreadSpec,
    BENCH_ROOM, MAX_MESSAGES, MAX_PAYLOAD_BYTES, MAX_RATE_HZ, MAX_SENDERS, MAX_SPREAD_NODES,
    MAX_WINDOW, MIN_ROOM_MEMBERS, RING_SLOTS,
};
pub use heartbeat::HeartbeatSpec;
pub use redis::{run_redis, ECHO_PAYLOAD_BYTES};
pub use rpc::{RpcSpec, MAX_RPC_DEPTH};

/// Most connections one run may open (file descriptors and local ports are finite).
pub const MAX_CONNECTIONS: usize = 20_000;

/// Most connects in flight at once.
pub const MAX_CONNECT_CONCURRENCY: usize = 4096;

/// Longest measured phase of any run.
pub const MAX_DURATION: Duration = Duration::from_secs(600);

/// The load generator's executor: scheduler time slice (glommio's preemption timer).
const PREEMPT: Duration = Duration::from_millis(10);

/// The load generator's executor: glommio's DMA buffer memory (no file I/O, so the
/// minimum; unused on tokio).
const IO_MEMORY_BYTES: usize = 64 * 1024;

/// The load generator's executor: glommio's io_uring submission queue depth, sized for
/// thousands of sockets waiting at once (unused on tokio).
const RING_DEPTH: usize = 1024;

/// One scenario run: connections, bounds and what to measure.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// How each connection connects and logs in.
    pub connect: ConnectSpec,
    /// Connections to open (broadcast: receivers, senders come on top; room broadcast:
    /// every connection, the sender and the other members among them).
    pub connections: usize,
    /// Loopback source addresses the connections are dealt over, round-robin
    /// (127.0.0.1 … 127.0.0.N; 1: the kernel's choice). See [`crate::sources`].
    pub sources: usize,
    /// Connects in flight at once.
    pub connect_concurrency: usize,
    /// Bound on the whole connect phase.
    pub connect_deadline: Duration,
    /// Pid of the server, to read its CPU time and RSS.
    pub server_pid: Option<u32>,
    /// Shown on the progress line.
    pub label: String,
    /// Draw a live progress line on stderr (only when it is a terminal).
    pub progress: bool,
    /// What to run once connected.
    pub scenario: Scenario,
}

/// The scenarios.
#[derive(Clone, Debug)]
pub enum Scenario {
    /// Open and authenticate; measure the time until all are ready, the server's CPU
    /// per connection, and its RSS once they sit idle.
    Connect {
        /// Idle time after the last login before RSS is read.
        settle: Duration,
    },
    /// Idle connections answering the server's heartbeat.
    Heartbeat(HeartbeatSpec),
    /// One or more senders, the server re-broadcasting to every receiver (or, for a
    /// room broadcast, to the room's other members only).
    Broadcast(BroadcastSpec),
    /// `add(a, b)` calls, `depth` in flight per connection.
    Rpc(RpcSpec),
}

impl Scenario {
    /// The scenario's name in reports.
    pub fn name(&self) -> String {
        match self {
            Scenario::Connect { .. } => "connect".into(),
            Scenario::Heartbeat(h) if h.client_ping => "heartbeat-ping".into(),
            Scenario::Heartbeat(_) => "heartbeat".into(),
            Scenario::Broadcast(b) if b.room_members.is_some() => "broadcast-room".into(),
            Scenario::Broadcast(b) => format!("broadcast-{}", b.mode.name()),
            Scenario::Rpc(_) => "rpc".into(),
        }
    }
}

/// What one run measured. Fields that do not apply to a scenario are `None`.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// Scenario name (`connect`, `heartbeat`, `broadcast-single`, …).
    pub scenario: String,
    /// Target name (set by the caller: `conduit`, `netconduit`, an address).
    pub target: String,
    /// The runtime backend the server ran on, as it reported it (set by the caller:
    /// `glommio` or `tokio` for conduit; `None` when the server does not say).
    pub runtime: Option<String>,
    /// `native` or `v1`.
    pub codec: String,
    /// Connections the scenario measured (receivers for broadcasts; every connection,
    /// members or not, for a room broadcast).
    pub connections: usize,
    /// Time from the first connect to the last login, seconds.
    pub connect_s: f64,
    /// Per-connection connect + login latency.
    pub connect_latency: Option<LatencySummary>,
    /// Server RSS before the connections opened, KiB.
    pub rss_before_kib: Option<u64>,
    /// Server RSS with every connection open and idle, KiB.
    pub rss_idle_kib: Option<u64>,
    /// What one idle connection costs the server in memory: (idle RSS − RSS before
    /// any connection) ÷ connections, bytes (connect scenario).
    pub rss_per_connection_bytes: Option<f64>,
    /// The distinct source addresses the server says the connections came from
    /// (runs over several `--sources` only), so a run shows it really was spread.
    pub source_addresses: Option<Vec<String>>,
    /// Length of the measured phase, seconds.
    pub elapsed_s: f64,
    /// What `ops` counts: `connections`, `pongs`, `deliveries`, `calls`.
    pub op: String,
    /// Operations completed in the measured phase.
    pub ops: u64,
    /// `ops / elapsed_s`.
    pub ops_per_s: f64,
    /// Broadcast messages sent (all senders).
    pub messages: u64,
    /// Broadcast loss accounting.
    pub loss: Option<LossReport>,
    /// Wrong answers, protocol errors and failed connections.
    pub errors: u64,
    /// Per-operation latency (delivery, ping→pong, round trip).
    pub latency: Option<LatencySummary>,
    /// Broadcast: per message, from its due time to its last receiver's arrival.
    pub fanout: Option<LatencySummary>,
    /// Server CPU time in the measured phase, seconds.
    pub server_cpu_s: Option<f64>,
    /// The same from utime + stime of `/proc/<pid>/stat` (10 ms resolution), seconds.
    pub server_cpu_stat_s: Option<f64>,
    /// The user-space part of `server_cpu_stat_s` (utime), seconds: the rest is
    /// the kernel's work on the server's behalf.
    pub server_user_stat_s: Option<f64>,
    /// Server CPU as a percentage of one core over the measured phase.
    pub server_core_pct: Option<f64>,
    /// Server CPU per operation, microseconds.
    pub server_cpu_us_per_op: Option<f64>,
    /// Broadcast: server CPU per message sent (one broadcast and all its deliveries),
    /// microseconds.
    pub server_cpu_us_per_message: Option<f64>,
    /// Room broadcast: the room's members (the sender included) as the server counted
    /// them once every member had joined.
    pub room_members: Option<usize>,
    /// Room broadcast: members per server shard (index: shard), as the server placed
    /// them.
    pub room_members_per_shard: Option<Vec<usize>>,
    /// Heartbeat: rounds observed (pings received ÷ connections).
    pub rounds: Option<f64>,
    /// Heartbeat: server CPU per round, microseconds.
    pub server_cpu_us_per_round: Option<f64>,
    /// This process's CPU as a percentage of one core over the measured phase.
    pub client_core_pct: Option<f64>,
    /// Size of one delivered frame (header included), bytes.
    pub frame_bytes: Option<usize>,
    /// Whether the run finished inside its bounds (false: a bound cut it short).
    pub complete: bool,
    /// Anything worth knowing about this run.
    pub notes: Vec<String>,
    /// The per-operation histogram, for merging rounds.
    #[serde(skip)]
    pub latency_hist: Option<Latency>,
    /// The fan-out histogram, for merging rounds.
    #[serde(skip)]
    pub fanout_hist: Option<Latency>,
}

impl RunResult {
    /// An empty result for `spec`, filled in as the run goes.
    pub(crate) fn new(spec: &RunSpec) -> RunResult {
        RunResult {
            scenario: spec.scenario.name(),
            target: String::new(),
            runtime: None,
            codec: codec_name(spec.connect.codec).into(),
            connections: spec.connections,
            connect_s: 0.0,
            connect_latency: None,
            rss_before_kib: None,
            rss_idle_kib: None,
            rss_per_connection_bytes: None,
            source_addresses: None,
            elapsed_s: 0.0,
            op: String::new(),
            ops: 0,
            ops_per_s: 0.0,
            messages: 0,
            loss: None,
            errors: 0,
            latency: None,
            fanout: None,
            server_cpu_s: None,
            server_cpu_stat_s: None,
            server_user_stat_s: None,
            server_core_pct: None,
            server_cpu_us_per_op: None,
            server_cpu_us_per_message: None,
            room_members: None,
            room_members_per_shard: None,
            rounds: None,
            server_cpu_us_per_round: None,
            client_core_pct: None,
            frame_bytes: None,
            complete: true,
            notes: Vec::new(),
            latency_hist: None,
            fanout_hist: None,
        }
    }

    /// Fills the CPU figures from two marks around a phase of `elapsed` and `ops`
    /// operations.
    fn set_cpu(&mut self, before: &CpuMark, after: &CpuMark, elapsed: Duration) {
        let (server, own) = after.since(before);
        let secs = elapsed.as_secs_f64().max(1e-9);
        self.server_cpu_s = server;
        self.server_cpu_stat_s = after.stat_since(before);
        self.server_user_stat_s = after.user_since(before);
        self.server_core_pct = server.map(|s| 100.0 * s / secs);
        self.server_cpu_us_per_op = server
            .filter(|_| self.ops > 0)
            .map(|s| s * 1e6 / self.ops as f64);
        self.client_core_pct = own.map(|s| 100.0 * s / secs);
        self.elapsed_s = elapsed.as_secs_f64();
        self.ops_per_s = self.ops as f64 / secs;
    }
}

/// `native` / `v1`.
pub fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::V1 => "v1",
        Codec::Native => "native",
    }
}

/// Checks a spec against the named limits before anything runs.
pub fn validate(spec: &RunSpec) -> Result<()> {
    let bad = |m: String| Err(Error::Args(m));
    if spec.connections == 0 || spec.connections > MAX_CONNECTIONS {
        return bad(format!(
            "connections must be 1..={MAX_CONNECTIONS}, got {}",
            spec.connections
        ));
    }
    if spec.connect_concurrency == 0 || spec.connect_concurrency > MAX_CONNECT_CONCURRENCY {
        return bad(format!(
            "connect concurrency must be 1..={MAX_CONNECT_CONCURRENCY}, got {}",
            spec.connect_concurrency
        ));
    }
    if spec.connect_deadline.is_zero() || spec.connect_deadline > MAX_DURATION {
        return bad("connect deadline must be between 0 and 600 s".into());
    }
    crate::sources::validate(spec.sources, spec.connect.addr)?;
    if !spec.connect.addr.ip().is_loopback() {
        return bad(format!(
            "{} is not a loopback address: this tool only loads 127.0.0.0/8 and ::1",
            spec.connect.addr
        ));
    }
    match &spec.scenario {
        Scenario::Connect { settle } => connect::validate(*settle),
        Scenario::Heartbeat(h) => h.validate(),
        Scenario::Broadcast(b) => b.validate(spec.connections),
        Scenario::Rpc(r) => r.validate(),
    }
}

/// `Ok` when `d` is a usable phase length: longer than zero, at most
/// [`MAX_DURATION`].
fn check_duration(what: &str, d: Duration) -> Result<()> {
    if d.is_zero() || d > MAX_DURATION {
        Err(Error::Args(format!(
            "{what} must be between 0 and {} s, got {d:?}",
            MAX_DURATION.as_secs()
        )))
    } else {
        Ok(())
    }
}

/// The CPU the load generator should run on: the second allowed CPU when there are
/// two or more (the server gets the first), else none (unpinned).
pub fn loadgen_cpu() -> Option<usize> {
    let cpus = conduit::descriptor::allowed_cpus();
    (cpus.len() >= 2).then(|| cpus[1])
}

/// Runs `spec` on a fresh executor pinned to `cpu` (unpinned when `None`) and waits
/// for its result.
pub fn run(spec: RunSpec, cpu: Option<usize>) -> Result<RunResult> {
    validate(&spec)?;
    let extra = match &spec.scenario {
        Scenario::Broadcast(b) => b.extra_connections(),
        _ => 0,
    };
    crate::fdlimit::ensure(spec.connections + extra)?;
    on_executor("loadgen", cpu, move || async move { run_here(spec).await })?
}

/// Runs the future `make` builds on a fresh load-generator executor thread named
/// `name`, pinned to `cpu` (unpinned when `None`), and waits for its output. The
/// backend is [`Runtime::Auto`]'s choice for this machine, independent of the server
/// under test, so comparisons between server backends change only the server.
pub fn on_executor<T, G, F>(name: &str, cpu: Option<usize>, make: G) -> Result<T>
where
    G: FnOnce() -> F + Send + 'static,
    F: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    let (backend, why) = choose(Runtime::Auto, 1)
        .map_err(|e| Error::Runtime(format!("no runtime for the load generator: {e}")))?;
    tracing::debug!("load generator on {}: {why}", backend.runtime());
    let spec = ThreadSpec {
        name: name.to_owned(),
        cpu,
        preempt_timer: PREEMPT,
        io_memory: IO_MEMORY_BYTES,
        ring_depth: RING_DEPTH,
    };
    RtThread::start(backend, spec, make)
        .map_err(|e| Error::Runtime(format!("cannot start the load generator: {e}")))?
        .join()
        .map_err(|e| Error::Runtime(format!("load generator died: {e}")))
}

/// Runs `spec` on the current executor.
pub async fn run_here(spec: RunSpec) -> Result<RunResult> {
    let mut result = RunResult::new(&spec);
    result.rss_before_kib = spec.server_pid.and_then(|p| procfs::rss_kib(Proc::Pid(p)));
    let (conns, phase) = connect::open_all(&spec, &mut result).await?;
    match spec.scenario.clone() {
        Scenario::Connect { settle } => {
            connect::run(&spec, settle, conns, phase, &mut result).await
        }
        Scenario::Heartbeat(h) => heartbeat::run(&spec, &h, conns, &mut result).await,
        Scenario::Broadcast(b) => broadcast::run(&spec, &b, conns, &mut result).await?,
        Scenario::Rpc(r) => rpc::run(&spec, &r, conns, &mut result).await,
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid spec around `scenario`, for the scenarios' bound checks.
    pub(super) fn spec(scenario: Scenario) -> RunSpec {
        RunSpec {
            connect: ConnectSpec {
                addr: "127.0.0.1:9".parse().unwrap(),
                transport: crate::wire::Transport::Tcp,
                tls: None,
                codec: Codec::Native,
                password: "pw".into(),
                attempts: 3,
                connect_timeout: Duration::from_secs(1),
            },
            connections: 100,
            sources: 1,
            connect_concurrency: 50,
            connect_deadline: Duration::from_secs(10),
            server_pid: None,
            label: "t".into(),
            progress: false,
            scenario,
        }
    }

    #[test]
    fn bounds_are_enforced() {
        assert!(validate(&spec(Scenario::Connect {
            settle: Duration::ZERO
        }))
        .is_ok());
        let mut s = spec(Scenario::Connect {
            settle: Duration::ZERO,
        });
        s.connections = 0;
        assert!(validate(&s).is_err());
        s.connections = MAX_CONNECTIONS + 1;
        assert!(validate(&s).is_err());
        let mut s = spec(Scenario::Connect {
            settle: Duration::ZERO,
        });
        s.connect.addr = "10.0.0.1:80".parse().unwrap();
        assert!(matches!(validate(&s), Err(Error::Args(m)) if m.contains("loopback")));
        s.connect.addr = "[::1]:80".parse().unwrap();
        assert!(validate(&s).is_ok());
    }

    #[test]
    fn loopback_only_cpu_choice() {
        // Whatever the machine, the choice is a CPU this process may use, or none.
        if let Some(cpu) = loadgen_cpu() {
            assert!(conduit::descriptor::allowed_cpus().contains(&cpu));
        }
    }
}
