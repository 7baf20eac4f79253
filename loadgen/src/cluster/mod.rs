//! `conduit-loadgen cluster`: what scale-out costs. Two `serve` processes join one
//! cluster through a broker started here (Redis or NATS, on a free loopback port),
//! the receivers are split evenly over the two nodes, and one sender on node 1 sends
//! `bench_broadcast` one message at a time (the next when every receiver on both
//! nodes has the last). Each delivery's latency, from send to receipt, is recorded
//! apart for node 1 (local: the sender's node) and node 2 (remote: through the
//! broker), with the CPU of each node per delivery and per message and the broker's
//! CPU per message. The baseline is the same broadcast with one node alone (no
//! cluster) serving every receiver.
//!
//! Every round runs the baseline, then the cluster on each broker asked for, so slow
//! drifts of the machine hit them alike; the table shows medians over rounds. Each
//! run starts its own broker and servers and stops them at its end.
//!
//! Pinning: the engine pins each shard to one of the CPUs its process may use (the
//! first, for one shard), so two unpinned one-shard servers would share the first
//! CPU. With two CPUs or more, node 1 is confined to the first and node 2 to the
//! second (the baseline's node to the first); the load generator and the broker are
//! not pinned.

mod broker;
mod summary;

use summary::one_line;
#[cfg(test)]
#[allow(unused_imports, reason = "what the tests below check")]
use summary::*;
pub use summary::{render, summarize};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use conduit::Runtime;
use conduit_protocol::Codec;
use serde::Serialize;

pub use self::broker::{BrokerKind, BrokerProcess, BROKER_READY_TIMEOUT};
use crate::args::{CodecArg, RuntimeArg, MAX_SECONDS_ARG};
use crate::plan::{MAX_ROUNDS, SUITE_CONNECT_CONCURRENCY};
use crate::procfs::{cpu_model, read_trim};
use crate::report::{self, dur_us, num};
use crate::scenario::{self, SpreadNode, SpreadResult, SpreadSpec, MAX_CONNECTIONS, MAX_MESSAGES};
use crate::stats::median;
pub use crate::target::find_program;
use crate::target::{Implementation, ServerProcess, SpawnOptions, BENCH_PASSWORD};
use crate::wire::{ConnectSpec, MAX_CONNECT_ATTEMPTS};
use crate::{Error, Result};

/// The cluster name the nodes of a run join.
pub const CLUSTER_NAME: &str = "loadgen";

/// The servers' heartbeat interval: no PING round falls in a measured phase shorter
/// than this.
pub const NODE_HEARTBEAT: Duration = Duration::from_secs(30);

/// How long one message may take to reach every receiver.
pub const MESSAGE_DRAIN: Duration = Duration::from_secs(10);

/// Bound on each node's connect phase.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(60);

/// Size of the netconduit-v1 `tick` payload, bytes (as in the suite's broadcasts).
pub const PAYLOAD_BYTES: usize = 64;

/// Which brokers a `cluster` run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BrokerChoice {
    /// Redis pub/sub.
    Redis,
    /// NATS.
    Nats,
    /// Redis, then NATS, in every round.
    Both,
}

impl BrokerChoice {
    /// The brokers, in the order each round runs them.
    pub fn kinds(self) -> Vec<BrokerKind> {
        match self {
            BrokerChoice::Redis => vec![BrokerKind::Redis],
            BrokerChoice::Nats => vec![BrokerKind::Nats],
            BrokerChoice::Both => vec![BrokerKind::Redis, BrokerKind::Nats],
        }
    }
}

/// `cluster` options.
#[derive(Clone, Debug, Args)]
pub struct ClusterArgs {
    /// The broker the two nodes share, started here on a free loopback port; `both`
    /// runs Redis and NATS in turn within every round.
    #[arg(long, value_enum)]
    pub broker: BrokerChoice,
    /// Receivers, split evenly over the two nodes (the sender comes on top, on node
    /// 1); the baseline's one node serves all of them.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Messages per run, one at a time.
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Rounds; each runs one node alone, then two nodes on every broker asked for.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Codec the clients speak.
    #[arg(long, value_enum, default_value_t = CodecArg::Native)]
    pub codec: CodecArg,
    /// Runtime backend of the servers.
    #[arg(long, value_enum, default_value_t = RuntimeArg::Auto)]
    pub runtime: RuntimeArg,
    /// Sending stops after this many seconds in each run, whatever the count.
    #[arg(long, default_value_t = 60.0)]
    pub duration_s: f64,
    /// Write every run and the medians as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    pub no_progress: bool,
}

/// What one run measures: one node alone, or two nodes through a broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// One node serving every receiver, no cluster.
    Single,
    /// Two nodes sharing this broker, the receivers split over them.
    Cluster(BrokerKind),
}

impl Setup {
    /// `single`, `redis` or `nats` (the JSON's `setup`).
    pub fn key(self) -> &'static str {
        match self {
            Setup::Single => "single",
            Setup::Cluster(k) => k.name(),
        }
    }

    /// The row name in the table.
    pub fn label(self) -> &'static str {
        match self {
            Setup::Single => "1 node",
            Setup::Cluster(BrokerKind::Redis) => "2 nodes, Redis",
            Setup::Cluster(BrokerKind::Nats) => "2 nodes, NATS",
        }
    }

    fn nodes(self) -> usize {
        match self {
            Setup::Single => 1,
            Setup::Cluster(_) => 2,
        }
    }
}

/// One run.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterRun {
    /// Round (from 1).
    pub round: usize,
    /// `single`, `redis` or `nats`.
    pub setup: String,
    /// The runtime backend the servers reported running on.
    pub runtime: Option<String>,
    /// Each node's CPU (none: not pinned).
    pub node_cpus: Vec<Option<usize>>,
    /// What it measured; `nodes[0]` is node 1 (the sender's).
    pub result: SpreadResult,
}

/// A run that failed outright.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterFailure {
    /// Round (from 1).
    pub round: usize,
    /// `single`, `redis` or `nats`.
    pub setup: String,
    /// What went wrong.
    pub error: String,
}

/// Medians over the rounds of one setup. "Local" is node 1 (the sender's node; the
/// only node of `single`), "remote" node 2.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SetupSummary {
    /// `single`, `redis` or `nats`.
    pub setup: String,
    /// Runs that finished (complete or not).
    pub runs: usize,
    /// Runs that failed outright.
    pub failed: usize,
    /// Runs a time bound cut short.
    pub incomplete: usize,
    /// Lost deliveries over every run (must be 0).
    pub lost: u64,
    /// Errors over every run.
    pub errors: u64,
    /// Messages per run (median).
    pub messages: Option<f64>,
    /// Delivery latency on node 1, median, µs.
    pub local_p50_us: Option<f64>,
    /// Delivery latency on node 1, 99th percentile, µs.
    pub local_p99_us: Option<f64>,
    /// Delivery latency on node 2, median, µs.
    pub remote_p50_us: Option<f64>,
    /// Delivery latency on node 2, 99th percentile, µs.
    pub remote_p99_us: Option<f64>,
    /// Time from a send to its last receiver, 99th percentile, µs.
    pub fanout_p99_us: Option<f64>,
    /// Node 1's CPU per delivery on node 1, µs.
    pub node1_cpu_us_per_delivery: Option<f64>,
    /// Node 2's CPU per delivery on node 2, µs.
    pub node2_cpu_us_per_delivery: Option<f64>,
    /// Node 1's CPU per message, µs.
    pub node1_cpu_us_per_message: Option<f64>,
    /// Node 2's CPU per message, µs.
    pub node2_cpu_us_per_message: Option<f64>,
    /// Both nodes' CPU per message, µs.
    pub nodes_cpu_us_per_message: Option<f64>,
    /// Node 1's shard thread per message, µs (the sender's message, the local
    /// fan-out, encoding the broadcast for the broker).
    pub node1_shard_us_per_message: Option<f64>,
    /// Node 1's service thread per message, µs (publishing to the broker, reading
    /// its own message back and dropping it).
    pub node1_service_us_per_message: Option<f64>,
    /// Node 2's shard thread per message, µs (the fan-out).
    pub node2_shard_us_per_message: Option<f64>,
    /// Node 2's service thread per message, µs (receiving from the broker, decoding,
    /// handing the broadcast to the shard).
    pub node2_service_us_per_message: Option<f64>,
    /// The broker's CPU per message (`/proc` schedstat), µs.
    pub broker_cpu_us_per_message: Option<f64>,
    /// The same from utime + stime of `/proc/<pid>/stat` (10 ms ticks), µs.
    pub broker_cpu_stat_us_per_message: Option<f64>,
    /// The load generator's CPU, % of one core.
    pub client_core_pct: Option<f64>,
}

/// The machine a `cluster` run ran on.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterMachine {
    /// CPUs this process may use.
    pub cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// /proc/loadavg when the run started.
    pub loadavg_before: String,
    /// /proc/loadavg when it ended.
    pub loadavg_after: String,
    /// `redis-server --version`, when Redis ran.
    pub redis_version: Option<String>,
    /// `nats-server --version`, when NATS ran.
    pub nats_version: Option<String>,
}

/// Everything a `cluster` run found.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterReport {
    /// The machine.
    pub machine: ClusterMachine,
    /// Receivers per run.
    pub connections: usize,
    /// Messages asked per run.
    pub messages: u64,
    /// Rounds.
    pub rounds: usize,
    /// `native` or `v1`.
    pub codec: String,
    /// The runtime backend asked of the servers.
    pub runtime: String,
    /// Wall time, seconds.
    pub wall_s: f64,
    /// Every run, in the order they ran.
    pub runs: Vec<ClusterRun>,
    /// Runs that failed outright.
    pub failures: Vec<ClusterFailure>,
    /// Medians per setup, the baseline first.
    pub summaries: Vec<SetupSummary>,
}

/// Runs `cluster`: prints the table, writes the JSON if asked; `Ok(1)` when a run
/// failed or lost a delivery.
pub fn main(a: &ClusterArgs) -> Result<i32> {
    let report = run(a)?;
    print!("{}", render(&report));
    if let Some(path) = &a.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        std::fs::write(path, json)?;
        println!("\nJSON: {}", path.display());
    }
    let clean = report.failures.is_empty()
        && report
            .summaries
            .iter()
            .all(|s| s.lost == 0 && s.incomplete == 0 && s.errors == 0);
    Ok(if clean { 0 } else { 1 })
}

/// Checks the options before anything starts.
fn validate(a: &ClusterArgs) -> Result<Duration> {
    if a.rounds == 0 || a.rounds > MAX_ROUNDS {
        return Err(Error::Args(format!("rounds must be 1..={MAX_ROUNDS}")));
    }
    if a.connections < 2 || a.connections >= MAX_CONNECTIONS {
        return Err(Error::Args(format!(
            "connections must be 2..{MAX_CONNECTIONS} (one receiver at least on each node)"
        )));
    }
    if a.messages == 0 || a.messages > MAX_MESSAGES {
        return Err(Error::Args(format!("messages must be 1..={MAX_MESSAGES}")));
    }
    if !(a.duration_s > 0.0 && a.duration_s <= MAX_SECONDS_ARG) {
        return Err(Error::Args(format!(
            "--duration-s must be in (0, {MAX_SECONDS_ARG}], got {}",
            a.duration_s
        )));
    }
    Ok(Duration::from_secs_f64(a.duration_s))
}

/// Receivers per node: `total` split as evenly as it goes, the first nodes taking
/// the remainder.
pub fn split(total: usize, nodes: usize) -> Vec<usize> {
    let nodes = nodes.max(1);
    (0..nodes)
        .map(|i| total / nodes + usize::from(i < total % nodes))
        .collect()
}

/// The first line of `program --version`.
fn version(program: &str) -> Option<String> {
    let path = find_program(program)?;
    let out = std::process::Command::new(path)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(|l| l.trim().to_owned())
}

/// Runs every round and returns the report.
pub fn run(a: &ClusterArgs) -> Result<ClusterReport> {
    let duration = validate(a)?;
    let kinds = a.broker.kinds();
    // A missing broker fails every run of it: say so before starting anything.
    for k in &kinds {
        if find_program(k.program()).is_none() {
            return Err(Error::Target(format!(
                "`{}` is not installed: {}",
                k.program(),
                k.install_hint()
            )));
        }
    }
    let mut setups = vec![Setup::Single];
    setups.extend(kinds.iter().map(|&k| Setup::Cluster(k)));
    let cpus = conduit::descriptor::allowed_cpus();
    let pins: Vec<Option<usize>> = if cpus.len() >= 2 {
        vec![Some(cpus[0]), Some(cpus[1])]
    } else {
        vec![None, None]
    };
    let machine_before = read_trim("/proc/loadavg");
    let started = Instant::now();
    let total = a.rounds * setups.len();
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    let mut i = 0;
    for round in 1..=a.rounds {
        for &setup in &setups {
            i += 1;
            let label = format!("[{i}/{total}] round {round} {}", setup.label());
            match run_one(a, setup, duration, &pins, &label) {
                Ok((result, runtime)) => {
                    eprintln!("{label}: {}", one_line(&result));
                    runs.push(ClusterRun {
                        round,
                        setup: setup.key().into(),
                        runtime: runtime.map(|r| r.name().into()),
                        node_cpus: pins[..setup.nodes()].to_vec(),
                        result,
                    });
                }
                Err(e) => {
                    eprintln!("{label}: FAILED: {e}");
                    failures.push(ClusterFailure {
                        round,
                        setup: setup.key().into(),
                        error: e.to_string(),
                    });
                }
            }
        }
    }
    let summaries = setups
        .iter()
        .map(|s| summarize(s.key(), &runs, &failures))
        .collect();
    let ran = |k: BrokerKind| kinds.contains(&k).then(|| version(k.program())).flatten();
    Ok(ClusterReport {
        machine: ClusterMachine {
            cpus: cpus.len(),
            cpu_model: cpu_model(),
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            loadavg_before: machine_before,
            loadavg_after: read_trim("/proc/loadavg"),
            redis_version: ran(BrokerKind::Redis),
            nats_version: ran(BrokerKind::Nats),
        },
        connections: a.connections,
        messages: a.messages,
        rounds: a.rounds,
        codec: scenario::codec_name(Codec::from(a.codec)).into(),
        runtime: Runtime::from(a.runtime).name().into(),
        wall_s: started.elapsed().as_secs_f64(),
        runs,
        failures,
        summaries,
    })
}

/// One run of `setup`: its broker and servers, the spread broadcast, then everything
/// stopped. Returns what it measured and the backend the servers ran on.
fn run_one(
    a: &ClusterArgs,
    setup: Setup,
    duration: Duration,
    pins: &[Option<usize>],
    label: &str,
) -> Result<(SpreadResult, Option<Runtime>)> {
    let broker = match setup {
        Setup::Single => None,
        Setup::Cluster(kind) => Some(BrokerProcess::start(kind)?),
    };
    let mut servers = Vec::with_capacity(setup.nodes());
    for node in 1..=setup.nodes() {
        let extra_args = match &broker {
            None => Vec::new(),
            Some(b) => vec![
                "--cluster-broker".into(),
                b.kind.name().into(),
                "--cluster-url".into(),
                b.url(),
                "--node".into(),
                node.to_string(),
                "--cluster-name".into(),
                CLUSTER_NAME.into(),
            ],
        };
        servers.push(ServerProcess::spawn(
            Implementation::Conduit,
            &SpawnOptions {
                heartbeat: NODE_HEARTBEAT,
                shards: 1,
                cpus: pins.get(node - 1).copied().flatten().into_iter().collect(),
                password: BENCH_PASSWORD.into(),
                python: None,
                runtime: a.runtime.into(),
                extra_args,
                log_filter: None,
            },
        )?);
    }
    let receivers = split(a.connections, servers.len());
    let spec = SpreadSpec {
        nodes: servers
            .iter()
            .zip(&receivers)
            .map(|(s, &r)| SpreadNode {
                addr: s.addr,
                pid: Some(s.pid),
                receivers: r,
            })
            .collect(),
        connect: ConnectSpec {
            addr: servers[0].addr,
            transport: crate::wire::Transport::Tcp,
            tls: None,
            codec: a.codec.into(),
            password: BENCH_PASSWORD.into(),
            attempts: MAX_CONNECT_ATTEMPTS,
            connect_timeout: Duration::from_secs(5),
        },
        connect_concurrency: SUITE_CONNECT_CONCURRENCY,
        connect_deadline: CONNECT_DEADLINE,
        broker_pid: broker.as_ref().map(|b| b.pid),
        messages: a.messages,
        duration,
        drain: MESSAGE_DRAIN,
        payload_bytes: PAYLOAD_BYTES,
        label: label.to_owned(),
        progress: !a.no_progress,
    };
    let runtime = servers[0].runtime;
    // The load generator is not pinned: both CPUs hold a node.
    let result = scenario::run_spread(spec, None);
    for s in servers {
        s.stop();
    }
    if let Some(b) = broker {
        b.stop();
    }
    let mut r = result?;
    r.run.scenario = format!("cluster-{}", setup.key());
    r.run.target = "conduit".into();
    r.run.runtime = runtime.map(|rt| rt.name().into());
    Ok((r, runtime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn receivers_split_evenly() {
        assert_eq!(split(1000, 2), [500, 500]);
        assert_eq!(split(1001, 2), [501, 500]);
        assert_eq!(split(7, 1), [7]);
        assert_eq!(split(5, 0), [5]);
    }

    #[test]
    fn options_are_bounded() {
        let parse = |extra: &[&str]| {
            /// The subcommand's arguments alone.
            #[derive(Parser)]
            struct Only {
                #[command(flatten)]
                a: ClusterArgs,
            }
            let mut args = vec!["cluster"];
            args.extend_from_slice(extra);
            Only::try_parse_from(args).map(|o| o.a)
        };
        // The broker must be named.
        assert!(parse(&[]).is_err());
        assert!(parse(&["--broker", "kafka"]).is_err());
        let a = parse(&["--broker", "both"]).unwrap();
        assert_eq!(a.broker.kinds(), [BrokerKind::Redis, BrokerKind::Nats]);
        assert_eq!((a.connections, a.messages, a.rounds), (1000, 1000, 3));
        assert!(validate(&a).is_ok());
        let bad = |extra: &[&str]| {
            let mut args = vec!["--broker", "redis"];
            args.extend_from_slice(extra);
            matches!(validate(&parse(&args).unwrap()), Err(Error::Args(_)))
        };
        assert!(bad(&["--rounds", "0"]));
        assert!(bad(&["--rounds", "21"]));
        assert!(bad(&["--connections", "1"]));
        assert!(bad(&["--connections", "20000"]));
        assert!(bad(&["--messages", "0"]));
        assert!(bad(&["--duration-s", "0"]));
        assert!(bad(&["--duration-s", "601"]));
        assert!(!bad(&[
            "--connections",
            "2",
            "--messages",
            "1",
            "--codec",
            "v1"
        ]));
    }

    #[test]
    fn medians_and_table() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), "1.50×");
        assert_eq!(ratio(None, Some(2.0)), "-");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "-");
        let s = summarize("redis", &[], &[]);
        assert_eq!((s.runs, s.failed, s.local_p50_us), (0, 0, None));
        let row = summary_row(&s);
        assert_eq!(row.len(), CLUSTER_HEADERS.len());
        assert_eq!(row[0], "2 nodes, Redis");
        assert_eq!(thread_row(&s).len(), THREAD_HEADERS.len());
    }
}
