//! The `conduit-loadgen` command line.
//!
//! The parser, the subcommands and the value types they share, the `suite` and `serve`
//! arguments, and [`dispatch`]; the scenario subcommands' arguments and their runs are
//! in `scenario`.

mod scenario;

pub use crate::args::{CodecArg, RuntimeArg, MAX_SECONDS_ARG};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use conduit::config::{init_logging, Config, LogSettings};
use conduit::Runtime;
use conduit_protocol::Codec;

pub use self::scenario::{BroadcastArgs, ConnectArgs, HeartbeatArgs, ModeArg, RpcArgs, TargetArgs};
use crate::cluster::BrokerKind;
use crate::serve::{self, ClusterJoin, LoginSettings, ServeOptions};
use crate::suite::{self, SuiteOptions};
use crate::target::{self, BENCH_PASSWORD};
use crate::{Error, Result};

/// Load generator and benchmark suite for conduit and netconduit servers (loopback
/// only; every run is bounded in count and time).
#[derive(Debug, Parser)]
#[command(name = "conduit-loadgen", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every scenario at 1000 connections against our server; table + JSON + SVG chart.
    Suite(SuiteArgs),
    /// Draw the SVG chart of a saved suite JSON.
    Chart(crate::chart::ChartArgs),
    /// Open and authenticate N connections; time to all-ready, server RSS.
    Connect(ConnectArgs),
    /// N idle connections answering the server's heartbeat.
    Heartbeat(HeartbeatArgs),
    /// N receivers, sender(s) broadcasting through the server; or, with
    /// --room-members M, M of N connections in a room, one of them broadcasting to it.
    Broadcast(BroadcastArgs),
    /// N connections × depth `add` calls in flight.
    Rpc(RpcArgs),
    /// Run the benchmark server (RPC `add`, messages `bench_broadcast` → `tick`,
    /// `bench_join`, `bench_room_broadcast` → `tick` to a room).
    Serve(ServeArgs),
    /// Connections churning through an in-process server (connect, log in, RPCs and
    /// broadcasts, leave); RSS, open descriptors and `connection_count` must come back.
    Soak(crate::soak::SoakArgs),
    /// One address attacks the login (`lockout`: silent sockets; `bruteforce`: wrong
    /// passwords) while real clients log in from other 127.0.0.x addresses.
    Attack(crate::attack::AttackArgs),
    /// Two nodes of a cluster through a broker started here (Redis, NATS or both),
    /// the receivers split over them, one message at a time from node 1: latency and
    /// CPU per delivery on the other node (remote) vs the sender's (local), the
    /// broker's CPU per message, and one node alone as the baseline.
    Cluster(crate::cluster::ClusterArgs),
}

/// How a client's frames travel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    /// Frames straight on TCP.
    #[default]
    Tcp,
    /// One frame per masked binary WebSocket message, after an HTTP/1.1 upgrade.
    Websocket,
    /// Frames in TLS records on TCP.
    Tls,
}

impl From<TransportArg> for crate::wire::Transport {
    fn from(t: TransportArg) -> crate::wire::Transport {
        match t {
            TransportArg::Tcp => crate::wire::Transport::Tcp,
            TransportArg::Websocket => crate::wire::Transport::WebSocket,
            TransportArg::Tls => crate::wire::Transport::Tls,
        }
    }
}

/// The runtime backends `suite` runs our server on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SuiteRuntimeArg {
    /// glommio where io_uring works, else tokio (the engine's choice, reported).
    Auto,
    /// glommio (io_uring); refused up front where io_uring is.
    Glommio,
    /// tokio (epoll).
    Tokio,
    /// glommio and tokio side by side: every scenario on each, in every round.
    Both,
}

impl SuiteRuntimeArg {
    /// The backends to run, in the order each scenario runs on them.
    pub fn runtimes(self) -> Vec<Runtime> {
        match self {
            SuiteRuntimeArg::Auto => vec![Runtime::Auto],
            SuiteRuntimeArg::Glommio => vec![Runtime::Glommio],
            SuiteRuntimeArg::Tokio => vec![Runtime::Tokio],
            SuiteRuntimeArg::Both => vec![Runtime::Glommio, Runtime::Tokio],
        }
    }
}

/// Implementations to compare against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompareArg {
    /// Python netconduit 5.0.0.
    Netconduit,
    /// Redis 7 (`redis-server` on PATH, or `--redis-server`).
    Redis,
}

/// `suite` options.
#[derive(Debug, Args)]
pub struct SuiteArgs {
    /// Also run our server with its Prometheus exporter on and scraped every second,
    /// side by side with it off (the target `conduit+metrics`): what metrics cost.
    #[arg(long)]
    pub with_metrics: bool,
    /// A seconds-long smoke run (50 connections, 1 round, tiny counts).
    #[arg(long)]
    pub quick: bool,
    /// Also run every scenario against these implementations, interleaved
    /// (`netconduit,redis`, or the flag repeated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub compare: Vec<CompareArg>,
    /// The `redis-server` binary for `--compare redis` (default: the one on PATH).
    #[arg(long)]
    pub redis_server: Option<PathBuf>,
    /// Rounds (default 3; 1 with --quick).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Connections per scenario (default 1000; 50 with --quick).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Our codecs to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [CodecArg::Native, CodecArg::V1])]
    pub codecs: Vec<CodecArg>,
    /// Our server's runtime backend; `both` runs every scenario on glommio and on
    /// tokio, side by side. The load generator itself always runs on `auto`'s choice.
    #[arg(long, value_enum, default_value_t = SuiteRuntimeArg::Auto)]
    pub runtime: SuiteRuntimeArg,
    /// JSON output (default target/loadgen/suite.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// SVG chart of the results (default: beside the JSON, suite.svg).
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// The netconduit venv (default target/netconduit-venv, created if missing).
    #[arg(long)]
    pub venv: Option<PathBuf>,
    /// Do not pin the server and the load generator to separate CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// No live progress bars (they are drawn only when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Also run at scale: connect, heartbeat at 1 s and broadcast at 10,000
    /// connections over --sources addresses, and the per-delivery cost at 100, 1,000
    /// and 10,000 receivers (conduit only; about 5 minutes a round and codec).
    #[arg(long)]
    pub scale: bool,
    /// Run only the scale runs (implies --scale).
    #[arg(long)]
    pub scale_only: bool,
    /// Only these scenarios, by the name the report gives them (e.g.
    /// `rpc,broadcast-saturate`); all by default.
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Connections of the scale runs, the sweep's largest point (default 10,000).
    #[arg(long)]
    pub scale_connections: Option<usize>,
    /// Loopback source addresses the scale runs deal their connections over
    /// (default 8).
    #[arg(long)]
    pub sources: Option<usize>,
}

/// The `serve` flags that set the server's descriptor: `--config` takes their place.
const DESCRIPTOR_FLAGS: [&str; 22] = [
    "metrics_addr",
    "host",
    "port",
    "websocket_port",
    "tls_cert",
    "tls_key",
    "shards",
    "heartbeat_ms",
    "password",
    "recv_buffer_bytes",
    "runtime",
    "engine_defaults",
    "max_connections",
    "max_pending",
    "max_pending_per_source",
    "max_auth_failures_per_source",
    "auth_failure_delay_ms",
    "auth_timeout_ms",
    "cluster_broker",
    "cluster_url",
    "node",
    "cluster_name",
];

/// `serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Take every server setting from this TOML file (`conduit::config`: the fields of
    /// `ServerDescriptor`, `CONDUIT_*` environment overrides on top) instead of the
    /// flags, which are then refused — only --cpus and --stop-on-stdin-eof combine
    /// with it. Its `[log]` section sets up the log.
    #[arg(long, conflicts_with_all = DESCRIPTOR_FLAGS)]
    pub config: Option<PathBuf>,
    /// Serve Prometheus metrics at `GET /metrics` on this address (port 0 picks one;
    /// the READY line says which as `metrics=HOST:PORT`).
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 picks one; the READY line says which).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Also listen for WebSocket clients on this port, path `/conduit` (0 picks one;
    /// the READY line says which as `ws=HOST:PORT`).
    #[arg(long)]
    pub websocket_port: Option<u16>,
    /// Serve TLS on every listener with this certificate chain (PEM, leaf first).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Shards.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Heartbeat interval, ms (timeout: 3 intervals, at least 10 s).
    #[arg(long, default_value_t = 30_000)]
    pub heartbeat_ms: u64,
    /// Password.
    #[arg(long, default_value = BENCH_PASSWORD)]
    pub password: String,
    /// Pin the process to these CPUs (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// Stop when stdin closes (how the suite runs it).
    #[arg(long)]
    pub stop_on_stdin_eof: bool,
    /// Receive buffer each connection starts with, bytes (default: the engine's).
    #[arg(long)]
    pub recv_buffer_bytes: Option<usize>,
    /// Runtime backend (the READY line says which one runs).
    #[arg(long, value_enum, default_value_t = RuntimeArg::Auto)]
    pub runtime: RuntimeArg,
    /// The engine's defaults for admission and login, as a server built like the chat
    /// example runs (`max_connections` 1000, `max_pending` 256, `max_pending_per_source`
    /// 16, `max_auth_failures_per_source` 5, `auth_failure_delay` 200 ms, `auth_timeout`
    /// 30 s), instead of the benchmark's (as many connections as the open-files limit
    /// allows, the login budgets raised to them, a 1 ms brake). The options below
    /// override either.
    #[arg(long)]
    pub engine_defaults: bool,
    /// `max_connections`.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// `max_pending`: connections logging in at once.
    #[arg(long)]
    pub max_pending: Option<usize>,
    /// `max_pending_per_source`: connections logging in at once from one address.
    #[arg(long)]
    pub max_pending_per_source: Option<usize>,
    /// `max_auth_failures_per_source`: failed logins from one address before it backs
    /// off (4294967295: never).
    #[arg(long)]
    pub max_auth_failures_per_source: Option<u32>,
    /// `auth_failure_delay`, ms: the brake after a wrong password.
    #[arg(long)]
    pub auth_failure_delay_ms: Option<u64>,
    /// `auth_timeout`, ms: time a connection has to log in.
    #[arg(long)]
    pub auth_timeout_ms: Option<u64>,
    /// Join a cluster through this broker: broadcasts then reach the connections of
    /// every node sharing it (`--node`, `--cluster-name`, `--cluster-url`).
    #[arg(long, value_enum)]
    pub cluster_broker: Option<BrokerKind>,
    /// The broker's URL (default `redis://127.0.0.1:6379` or `nats://127.0.0.1:4222`).
    #[arg(long, requires = "cluster_broker")]
    pub cluster_url: Option<String>,
    /// This node's id in the cluster, 0..1024, unique among its nodes (default 1).
    #[arg(long, requires = "cluster_broker")]
    pub node: Option<usize>,
    /// The cluster's name: the prefix of its broker channels.
    #[arg(long, default_value = "conduit")]
    pub cluster_name: String,
}

impl ServeArgs {
    /// The cluster to join, if `--cluster-broker` asks for one.
    pub fn cluster(&self) -> Option<ClusterJoin> {
        let kind = self.cluster_broker?;
        let url = self
            .cluster_url
            .clone()
            .unwrap_or_else(|| kind.default_url().to_owned());
        Some(ClusterJoin {
            broker: kind.broker(url),
            node: self.node.unwrap_or(1),
            name: self.cluster_name.clone(),
        })
    }
}

fn seconds(name: &str, s: f64) -> Result<Duration> {
    if !(s > 0.0 && s <= MAX_SECONDS_ARG) {
        return Err(Error::Args(format!(
            "--{name} must be in (0, {MAX_SECONDS_ARG}] seconds, got {s}"
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let run = || -> Result<i32> {
        // `serve --config`: the file is read once, for the log and the server.
        let config = match &cli.command {
            Command::Serve(a) => a.config.as_deref().map(load_config).transpose()?,
            _ => None,
        };
        let log = config.as_ref().map_or_else(
            || LogSettings::default().filter("warn"),
            |c| c.log().clone(),
        );
        init_logging(&log).map_err(|e| Error::Args(e.to_string()))?;
        match (cli.command, config) {
            (Command::Serve(a), Some(config)) => {
                serve::serve_descriptor(config.into_descriptor(), &a.cpus, a.stop_on_stdin_eof)
                    .map(|()| 0)
            }
            (command, _) => dispatch(command),
        }
    };
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("conduit-loadgen: {e}");
            2
        }
    }
}

/// The configuration file of `serve --config`.
fn load_config(path: &std::path::Path) -> Result<Config> {
    Config::from_file(path).map_err(|e| Error::Args(e.to_string()))
}

/// Runs one subcommand; `Ok(1)` means it ran but something was lost or failed.
pub fn dispatch(command: Command) -> Result<i32> {
    match command {
        Command::Soak(a) => crate::soak::main(&a),
        Command::Attack(a) => crate::attack::main(&a),
        Command::Cluster(a) => crate::cluster::main(&a),
        Command::Chart(a) => crate::chart::main(&a),
        Command::Serve(a) if a.config.is_some() => {
            let config = a.config.as_deref().map(load_config).transpose()?;
            if let Some(config) = config {
                serve::serve_descriptor(config.into_descriptor(), &a.cpus, a.stop_on_stdin_eof)?;
            }
            Ok(0)
        }
        Command::Serve(a) => {
            let cluster = a.cluster();
            serve::serve(&ServeOptions {
                host: a.host,
                port: a.port,
                websocket_port: a.websocket_port,
                tls: a.tls_cert.zip(a.tls_key),
                shards: a.shards,
                heartbeat: Duration::from_millis(a.heartbeat_ms.max(1)),
                password: a.password,
                cpus: a.cpus,
                stop_on_stdin_eof: a.stop_on_stdin_eof,
                recv_buffer_bytes: a.recv_buffer_bytes,
                runtime: a.runtime.into(),
                login: LoginSettings {
                    engine_defaults: a.engine_defaults,
                    max_connections: a.max_connections,
                    max_pending: a.max_pending,
                    max_pending_per_source: a.max_pending_per_source,
                    max_auth_failures_per_source: a.max_auth_failures_per_source,
                    auth_failure_delay: a.auth_failure_delay_ms.map(Duration::from_millis),
                    auth_timeout: a.auth_timeout_ms.map(Duration::from_millis),
                },
                cluster,
                metrics_addr: a.metrics_addr,
            })?;
            Ok(0)
        }
        Command::Suite(a) => {
            let quick = a.quick;
            let mut opts = SuiteOptions {
                quick,
                compare_netconduit: a.compare.contains(&CompareArg::Netconduit),
                compare_redis: a.compare.contains(&CompareArg::Redis),
                redis_server: a.redis_server,
                rounds: a.rounds.unwrap_or(if quick { 1 } else { 3 }),
                connections: a.connections.unwrap_or(if quick { 50 } else { 1000 }),
                codecs: a.codecs.into_iter().map(Codec::from).collect(),
                runtimes: a.runtime.runtimes(),
                out: a
                    .out
                    .unwrap_or_else(|| target::output_dir().join("suite.json")),
                progress: !a.no_progress,
                pin: !a.no_pin,
                venv: a.venv.unwrap_or_else(target::default_venv),
                scale: crate::scale::from_args(
                    a.scale,
                    a.scale_only,
                    a.scale_connections,
                    a.sources,
                )?,
                only: a.scenarios,
                with_metrics: a.with_metrics,
            };
            if let Some(scale) = opts.scale.filter(|s| s.only) {
                // The scale runs alone: the report's connection count is theirs.
                opts.connections = scale.connections;
            }
            let chart = a.chart.unwrap_or_else(|| opts.out.with_extension("svg"));
            let r = suite::run(&opts)?;
            print!("{}", suite::render(&r));
            println!("\nJSON: {}", opts.out.display());
            // Drawn from the JSON as written, as `chart --from` would; minutes of
            // measurement are not thrown away for a chart that could not be drawn.
            match std::fs::read_to_string(&opts.out)
                .map_err(Error::from)
                .and_then(|json| crate::chart::write(&json, &chart))
            {
                Ok(()) => println!("chart: {}", chart.display()),
                Err(e) => eprintln!("conduit-loadgen: no chart: {e}"),
            }
            let clean = r.failures.is_empty() && r.summaries.iter().all(|s| s.lost == 0);
            Ok(if clean { 0 } else { 1 })
        }
        Command::Connect(a) => scenario::connect(a),
        Command::Heartbeat(a) => scenario::heartbeat(a),
        Command::Broadcast(a) => scenario::broadcast(a),
        Command::Rpc(a) => scenario::rpc(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// `serve --config`: the file replaces the descriptor flags, which are refused
    /// beside it; the process flags combine with it.
    #[test]
    fn serve_config_excludes_the_descriptor_flags() {
        let serve = |extra: &[&str]| {
            let mut args = vec!["conduit-loadgen", "serve", "--config", "c.toml"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|c| c.command)
        };
        let ok = serve(&["--cpus", "0", "--stop-on-stdin-eof"]).unwrap();
        assert!(
            matches!(ok, Command::Serve(ref s) if s.config.as_deref() == Some("c.toml".as_ref()) && s.cpus == [0])
        );
        for flag in [
            &["--port", "9"][..],
            &["--password", "x"],
            &["--engine-defaults"],
        ] {
            let e = serve(flag).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{flag:?}"
            );
        }
        assert_eq!(DESCRIPTOR_FLAGS.len(), {
            let cmd = Cli::command();
            let serve = cmd.find_subcommand("serve").unwrap();
            serve
                .get_arguments()
                .filter(|a| {
                    !matches!(
                        a.get_id().as_str(),
                        "config" | "cpus" | "stop_on_stdin_eof" | "help"
                    )
                })
                .count()
        });
    }

    #[test]
    fn parses_and_validates() {
        let cli = Cli::try_parse_from([
            "conduit-loadgen",
            "broadcast",
            "--mode",
            "saturate",
            "--window",
            "64",
            "--connections",
            "20",
            "--codec",
            "v1",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Command::Broadcast(ref b) if b.window == 64 && b.target.connections == 20)
        );
        let cli = Cli::try_parse_from([
            "conduit-loadgen",
            "suite",
            "--quick",
            "--compare",
            "netconduit",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Command::Suite(ref s) if s.quick && s.compare == [CompareArg::Netconduit] && s.codecs.len() == 2)
        );
        for args in [
            &["conduit-loadgen", "suite", "--compare", "netconduit,redis"][..],
            &[
                "conduit-loadgen",
                "suite",
                "--compare",
                "redis",
                "--compare",
                "netconduit",
            ],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert!(
                matches!(cli.command, Command::Suite(ref s) if s.compare.len() == 2 && s.compare.contains(&CompareArg::Redis))
            );
        }
        assert!(Cli::try_parse_from(["conduit-loadgen", "suite", "--compare", "grpc"]).is_err());
        // The server's backend: `auto` unless asked; `both` is the suite's alone.
        let suite_runtimes = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Suite(s) => s.runtime.runtimes(),
            other => panic!("not a suite: {other:?}"),
        };
        assert_eq!(
            suite_runtimes(&["conduit-loadgen", "suite"]),
            [Runtime::Auto]
        );
        assert_eq!(
            suite_runtimes(&["conduit-loadgen", "suite", "--runtime", "both"]),
            [Runtime::Glommio, Runtime::Tokio]
        );
        assert!(Cli::try_parse_from(["conduit-loadgen", "suite", "--runtime", "epoll"]).is_err());
        let cli = Cli::try_parse_from(["conduit-loadgen", "serve", "--runtime", "tokio"]).unwrap();
        assert!(matches!(cli.command, Command::Serve(ref s) if s.runtime == RuntimeArg::Tokio));
        assert!(Cli::try_parse_from(["conduit-loadgen", "serve", "--runtime", "both"]).is_err());
        // A cluster node: the broker names the default URL; the rest needs a broker.
        let serve = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Serve(s)) => Ok(s.cluster()),
            Ok(other) => panic!("not serve: {other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(serve(&["conduit-loadgen", "serve"]).unwrap(), None);
        let join = serve(&["conduit-loadgen", "serve", "--cluster-broker", "nats"])
            .unwrap()
            .unwrap();
        assert_eq!(
            join,
            ClusterJoin {
                broker: conduit::cluster::Broker::nats("nats://127.0.0.1:4222"),
                node: 1,
                name: "conduit".into(),
            }
        );
        let join = serve(&[
            "conduit-loadgen",
            "serve",
            "--cluster-broker",
            "redis",
            "--cluster-url",
            "redis://127.0.0.1:7000",
            "--node",
            "2",
            "--cluster-name",
            "bench",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            join.broker,
            conduit::cluster::Broker::redis("redis://127.0.0.1:7000")
        );
        assert_eq!((join.node, join.name.as_str()), (2, "bench"));
        let desc = join.descriptor();
        assert_eq!((desc.cluster.as_str(), desc.node), ("bench", 2));
        assert!(serve(&["conduit-loadgen", "serve", "--node", "2"]).is_err());
        assert!(serve(&["conduit-loadgen", "serve", "--cluster-url", "redis://x"]).is_err());
        assert!(serve(&["conduit-loadgen", "serve", "--cluster-broker", "kafka"]).is_err());
        // Only a server this starts can be put on a backend.
        let cli = Cli::try_parse_from([
            "conduit-loadgen",
            "rpc",
            "--target",
            "127.0.0.1:9",
            "--runtime",
            "tokio",
        ])
        .unwrap();
        assert!(matches!(dispatch(cli.command), Err(Error::Args(m)) if m.contains("--runtime")));
        assert!(seconds("x", 0.0).is_err());
        assert!(seconds("x", f64::NAN).is_err());
        assert!(seconds("x", 601.0).is_err());
        assert_eq!(seconds("x", 1.5).unwrap(), Duration::from_millis(1500));
        // A non-loopback target is refused before anything connects.
        let cli = Cli::try_parse_from([
            "conduit-loadgen",
            "rpc",
            "--target",
            "192.0.2.1:80",
            "--connections",
            "1",
        ])
        .unwrap();
        assert!(matches!(dispatch(cli.command), Err(Error::Args(m)) if m.contains("loopback")));
        // A room broadcast: only one message at a time, only on conduit's server, and
        // never a room larger than the connections.
        let room = |extra: &[&str]| {
            let mut args = vec![
                "conduit-loadgen",
                "broadcast",
                "--target",
                "127.0.0.1:9",
                "--connections",
                "50",
                "--room-members",
            ];
            args.extend_from_slice(extra);
            dispatch(Cli::try_parse_from(args).unwrap().command)
        };
        assert!(matches!(room(&["60"]), Err(Error::Args(m)) if m.contains("room members")));
        assert!(matches!(room(&["1"]), Err(Error::Args(m)) if m.contains("room members")));
        assert!(
            matches!(room(&["10", "--mode", "saturate"]), Err(Error::Args(m)) if m.contains("one message at a time"))
        );
        let cli = Cli::try_parse_from([
            "conduit-loadgen",
            "broadcast",
            "--target",
            "netconduit",
            "--codec",
            "v1",
            "--room-members",
            "10",
        ])
        .unwrap();
        assert!(matches!(dispatch(cli.command), Err(Error::Args(m)) if m.contains("rooms")));
    }
}
