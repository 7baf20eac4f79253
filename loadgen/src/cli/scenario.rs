//! The arguments of the scenario subcommands (`connect`, `heartbeat`, `broadcast`,
//! `rpc`): where the server under test is ([`TargetArgs`]) and each scenario's own
//! options; their conversion into a [`Scenario`] and the run against the target.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use conduit_protocol::Codec;

use super::{seconds, CodecArg, RuntimeArg, TransportArg};
use crate::report;
use crate::scenario::{
    self, BroadcastMode, BroadcastSpec, HeartbeatSpec, RpcSpec, RunResult, RunSpec, Scenario,
};
use crate::target::{self, Implementation, ServerProcess, SpawnOptions, BENCH_PASSWORD};
use crate::wire::{ConnectSpec, Transport, MAX_CONNECT_ATTEMPTS};
use crate::{Error, Result};

/// Where the server under test is and how to reach it.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// `conduit` (spawn `serve`), `netconduit` (spawn the Python reference server) or
    /// HOST:PORT of a running server on loopback.
    #[arg(long, default_value = "conduit")]
    pub target: String,
    /// Pid of a running server, to read its CPU time and RSS.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Codec the clients speak.
    #[arg(long, value_enum, default_value_t = CodecArg::Native)]
    pub codec: CodecArg,
    /// How the clients' frames travel: `websocket` upgrades each connection and sends
    /// every frame in a masked binary message (a spawned conduit server gets a
    /// WebSocket listener; with --target HOST:PORT, that is the WebSocket listener);
    /// `tls` speaks TLS over TCP (a spawned conduit server serves TLS with
    /// --tls-cert and --tls-key; the clients trust --tls-ca).
    #[arg(long, value_enum, default_value_t = TransportArg::Tcp)]
    pub transport: TransportArg,
    /// With --transport tls: the CA certificates (PEM) the clients trust (default:
    /// --tls-cert, a self-signed certificate).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// With --transport tls: the certificate chain (PEM) a spawned conduit server
    /// presents; its leaf must name the server's IP address (127.0.0.1).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// With --transport tls: the private key (PEM) of --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Connections (broadcast: receivers; with --room-members: all of them, the sender
    /// and the other members included).
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Password.
    #[arg(long, default_value = BENCH_PASSWORD)]
    pub password: String,
    /// Shards of a spawned conduit server.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Runtime backend of a spawned conduit server.
    #[arg(long, value_enum, default_value_t = RuntimeArg::Auto)]
    pub runtime: RuntimeArg,
    /// Deal the connections round-robin over this many loopback source addresses,
    /// 127.0.0.1 … 127.0.0.N (1: the kernel's choice): each address has its own
    /// ephemeral ports (about 28,000 towards one server) and its own per-source login
    /// budget on the server.
    #[arg(long, default_value_t = 1)]
    pub sources: usize,
    /// Connects in flight at once.
    #[arg(long, default_value_t = 90)]
    pub connect_concurrency: usize,
    /// Bound on the connect phase, seconds.
    #[arg(long, default_value_t = 60.0)]
    pub connect_deadline_s: f64,
    /// Write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Do not pin the server and the load generator to separate CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// No live progress line.
    #[arg(long)]
    pub no_progress: bool,
    /// The netconduit venv (default target/netconduit-venv).
    #[arg(long)]
    pub venv: Option<PathBuf>,
}

/// `connect` options.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Target.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Idle time before the server's RSS is read, ms.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
}

/// `heartbeat` options.
#[derive(Debug, Args)]
pub struct HeartbeatArgs {
    /// Target.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Measured phase, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration_s: f64,
    /// Heartbeat interval of a spawned server, ms (netconduit: whole seconds).
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Only answer the server's pings; do not ping it back (no latency figures).
    #[arg(long)]
    pub no_client_ping: bool,
}

/// Broadcast pacing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// One message at a time (fan-out latency).
    Single,
    /// Fixed rate (`--rate`).
    Rate,
    /// Saturation with `--window` messages in flight.
    Saturate,
}

/// `broadcast` options.
#[derive(Debug, Args)]
pub struct BroadcastArgs {
    /// Target.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Pacing.
    #[arg(long, value_enum, default_value_t = ModeArg::Single)]
    pub mode: ModeArg,
    /// Messages per second per sender (rate mode).
    #[arg(long, default_value_t = 30.0)]
    pub rate: f64,
    /// Messages in flight per sender (saturate mode).
    #[arg(long, default_value_t = 128)]
    pub window: usize,
    /// Free window slots that trigger a top-up, sent in one write (saturate mode;
    /// default: half the window).
    #[arg(long)]
    pub burst: Option<usize>,
    /// Senders.
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Messages per sender, at most.
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Sending stops after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// Time allowed for the last deliveries after sending stops, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub drain_s: f64,
    /// netconduit-v1 `tick` payload size, bytes.
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// A room broadcast: this many of the --connections (the sender among them, spread
    /// evenly over the server's shards) join a room, and the sender broadcasts to the
    /// room one message at a time (--mode single); the other connections stay idle and
    /// must receive nothing. Needs conduit's benchmark server (`bench_join`).
    #[arg(long)]
    pub room_members: Option<usize>,
}

/// `rpc` options.
#[derive(Debug, Args)]
pub struct RpcArgs {
    /// Target.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Calls in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Calls in total, at most.
    #[arg(long, default_value_t = 1_000_000)]
    pub calls: u64,
    /// No call starts after this many seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration_s: f64,
}

/// Runs `connect`.
pub(super) fn connect(a: ConnectArgs) -> Result<i32> {
    let settle = Duration::from_millis(a.settle_ms);
    single(a.target, 30_000, Scenario::Connect { settle })
}

/// Runs `heartbeat`.
pub(super) fn heartbeat(a: HeartbeatArgs) -> Result<i32> {
    let scenario = Scenario::Heartbeat(HeartbeatSpec {
        duration: seconds("duration-s", a.duration_s)?,
        client_ping: !a.no_client_ping,
    });
    single(a.target, a.heartbeat_ms.max(1), scenario)
}

/// Runs `broadcast` (a room broadcast with `--room-members`).
pub(super) fn broadcast(a: BroadcastArgs) -> Result<i32> {
    if a.room_members.is_some() && a.target.target == "netconduit" {
        return Err(Error::Args(
            "--room-members needs conduit's benchmark server (netconduit's has no rooms)".into(),
        ));
    }
    let mode = match a.mode {
        ModeArg::Single => BroadcastMode::Single,
        ModeArg::Rate => BroadcastMode::Rate { hz: a.rate },
        ModeArg::Saturate => BroadcastMode::Saturate {
            window: a.window,
            burst: a.burst.unwrap_or((a.window / 2).max(1)),
        },
    };
    let scenario = Scenario::Broadcast(BroadcastSpec {
        mode,
        senders: a.senders,
        messages: a.messages,
        duration: seconds("duration-s", a.duration_s)?,
        drain: seconds("drain-s", a.drain_s)?,
        payload_bytes: a.payload_bytes,
        room_members: a.room_members,
    });
    single(a.target, 30_000, scenario)
}

/// Runs `rpc`.
pub(super) fn rpc(a: RpcArgs) -> Result<i32> {
    let scenario = Scenario::Rpc(RpcSpec {
        depth: a.depth,
        calls: a.calls,
        duration: seconds("duration-s", a.duration_s)?,
    });
    single(a.target, 30_000, scenario)
}

/// Runs one scenario against the target `t` describes.
fn single(t: TargetArgs, heartbeat_ms: u64, scenario: Scenario) -> Result<i32> {
    let codec = Codec::from(t.codec);
    let transport = Transport::from(t.transport);
    let tls = match transport {
        Transport::Tls => {
            let ca = t.tls_ca.as_ref().or(t.tls_cert.as_ref()).ok_or_else(|| {
                Error::Args("--transport tls needs --tls-ca (or --tls-cert)".into())
            })?;
            Some(crate::wire::tls_client_config(ca)?)
        }
        _ => None,
    };
    let tls_server_args = match (transport, &t.tls_cert, &t.tls_key) {
        (Transport::Tls, Some(cert), Some(key)) => vec![
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ],
        _ => Vec::new(),
    };
    let cpus = conduit::descriptor::allowed_cpus();
    let (server_cpu, loadgen_cpu) = if !t.no_pin && cpus.len() >= 2 {
        (Some(cpus[0]), Some(cpus[1]))
    } else {
        (None, None)
    };
    let spawn = |imp: Implementation, python: Option<PathBuf>| {
        ServerProcess::spawn(
            imp,
            &SpawnOptions {
                heartbeat: Duration::from_millis(heartbeat_ms),
                shards: t.shards,
                // One CPU per shard where there are enough; the first otherwise.
                cpus: match server_cpu {
                    Some(_) if t.shards > 1 && cpus.len() >= t.shards => cpus[..t.shards].to_vec(),
                    Some(first) => vec![first],
                    None => Vec::new(),
                },
                password: t.password.clone(),
                python,
                runtime: t.runtime.into(),
                extra_args: match transport {
                    Transport::Tcp => Vec::new(),
                    Transport::WebSocket => vec!["--websocket-port".into(), "0".into()],
                    Transport::Tls => tls_server_args.clone(),
                },
                log_filter: None,
            },
        )
    };
    if t.runtime != RuntimeArg::Auto && t.target != "conduit" {
        return Err(Error::Args(
            "--runtime chooses the backend of a spawned conduit server (--target conduit)".into(),
        ));
    }
    let (server, addr, pid, name) = match t.target.as_str() {
        "conduit" => {
            if transport == Transport::Tls && tls_server_args.is_empty() {
                return Err(Error::Args(
                    "--transport tls against a spawned server needs --tls-cert and --tls-key"
                        .into(),
                ));
            }
            let s = spawn(Implementation::Conduit, None)?;
            let addr = match transport {
                Transport::Tcp | Transport::Tls => s.addr,
                Transport::WebSocket => s.ws_addr.ok_or_else(|| {
                    Error::Target("the server did not report a WebSocket listener".into())
                })?,
            };
            let pid = s.pid;
            (Some(s), addr, Some(pid), "conduit".to_owned())
        }
        "netconduit" => {
            if codec != Codec::V1 {
                return Err(Error::Args("netconduit speaks only --codec v1".into()));
            }
            if transport != Transport::Tcp {
                return Err(Error::Args("netconduit speaks only --transport tcp".into()));
            }
            let venv = t.venv.clone().unwrap_or_else(target::default_venv);
            let python = target::ensure_venv(&venv)?;
            let s = spawn(Implementation::Netconduit, Some(python))?;
            let (addr, pid) = (s.addr, s.pid);
            (Some(s), addr, Some(pid), "netconduit".to_owned())
        }
        other => {
            let addr: SocketAddr = other.parse().map_err(|_| {
                Error::Args(format!(
                    "--target must be conduit, netconduit or HOST:PORT, got {other:?}"
                ))
            })?;
            (None, addr, t.pid, other.to_owned())
        }
    };
    let spec = RunSpec {
        connect: ConnectSpec {
            addr,
            transport,
            tls,
            codec,
            password: t.password.clone(),
            attempts: MAX_CONNECT_ATTEMPTS,
            connect_timeout: Duration::from_secs(5),
        },
        connections: t.connections,
        sources: t.sources,
        connect_concurrency: t.connect_concurrency,
        connect_deadline: seconds("connect-deadline-s", t.connect_deadline_s)?,
        server_pid: pid,
        label: format!("{} {name}/{}", scenario.name(), scenario::codec_name(codec)),
        progress: !t.no_progress,
        scenario,
    };
    let runtime = server.as_ref().and_then(|s| s.runtime);
    let result = scenario::run(spec, loadgen_cpu);
    if let Some(s) = server {
        s.stop();
    }
    let mut r: RunResult = result?;
    r.target = match transport {
        Transport::Tcp => name,
        Transport::WebSocket => format!("{name} ws"),
        Transport::Tls => format!("{name} tls"),
    };
    r.runtime = runtime.map(|rt| rt.name().into());
    print!("{}", report::runs_table(std::slice::from_ref(&r)));
    if let Some(path) = &t.json {
        let json =
            serde_json::to_string_pretty(&r).map_err(|e| Error::Io(std::io::Error::other(e)))?;
        std::fs::write(path, json)?;
    }
    let clean = r.complete && r.errors == 0 && r.loss.is_none_or(|l| l.lost == 0);
    Ok(if clean { 0 } else { 1 })
}
