//! `suite`: every scenario against our server (native and v1 codec) on the runtime
//! backend `--runtime` asks for — or on glommio and tokio side by side with `both` —
//! and, with `--compare netconduit`, against the Python reference server, in
//! interleaved rounds (ours, theirs, ours, theirs, …); medians, ratios and the target
//! table. The load generator itself always runs on the backend `auto` picks, so a
//! comparison between backends changes only the server.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use conduit::Runtime;
use conduit_protocol::Codec;
use serde::Serialize;

use crate::goals::{self, TargetCheck};
use crate::procfs::{cpu_model, read_trim};
use crate::progress;
use crate::redis;
use crate::report::{self, Comparison, Machine, Summary};
use crate::scale::{ScaleOptions, SCALE_CONNECT_CONCURRENCY};
use crate::scenario::{self, RunResult, RunSpec, Scenario};
use crate::scrape::{Scraper, SCRAPE_INTERVAL};
use crate::target::{self, Implementation, ServerProcess, SpawnOptions, BENCH_PASSWORD};
use crate::versus_redis::{self, RedisComparison};
use crate::wire::{ConnectSpec, MAX_CONNECT_ATTEMPTS};
use crate::{Error, Result};

pub use crate::plan::{plans, Plan, MAX_ROUNDS, SUITE_CONNECT_CONCURRENCY, SUITE_CONNECT_DEADLINE};

/// How the suite runs.
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    /// Seconds-long smoke run instead of the full measurement.
    pub quick: bool,
    /// Also run every scenario against Python netconduit 5.0.0.
    pub compare_netconduit: bool,
    /// Also run every scenario that has a Redis counterpart against `redis-server`.
    pub compare_redis: bool,
    /// The `redis-server` to run (default: the one on `PATH`).
    pub redis_server: Option<PathBuf>,
    /// Rounds (each runs every scenario on every target once).
    pub rounds: usize,
    /// Connections per scenario (receivers for broadcasts).
    pub connections: usize,
    /// Our codecs to run.
    pub codecs: Vec<Codec>,
    /// The runtime backends to run our server on, each against every scenario and
    /// codec, side by side in every round ([`Runtime::Auto`]: the one the server
    /// picks).
    pub runtimes: Vec<Runtime>,
    /// JSON output path.
    pub out: PathBuf,
    /// Live progress line.
    pub progress: bool,
    /// Pin the server to the first allowed CPU and the load generator to the second.
    pub pin: bool,
    /// The netconduit venv.
    pub venv: PathBuf,
    /// The runs at scale (`--scale`), if asked for; see [`crate::scale`].
    pub scale: Option<ScaleOptions>,
    /// Only the scenarios with these report names (`rpc`, `broadcast-saturate-2sh`,
    /// …); all when empty.
    pub only: Vec<String>,
    /// Also run our server with its Prometheus exporter on, scraped every second
    /// ([`crate::scrape`]), side by side with it off: the target `conduit+metrics`.
    pub with_metrics: bool,
}

/// The target name of our server with its exporter on (`--with-metrics`).
pub const METRICS_TARGET: &str = "conduit+metrics";

/// A run that failed outright.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    /// Round (from 1).
    pub round: usize,
    /// Scenario.
    pub scenario: String,
    /// Target.
    pub target: String,
    /// The runtime backend asked of the server (conduit only; `auto` when the server
    /// picks: a failed run may not have got far enough to say which).
    pub runtime: Option<String>,
    /// Codec.
    pub codec: String,
    /// What went wrong.
    pub error: String,
}

/// One server configuration the suite measures: the implementation, the backend asked
/// of it (conduit only) and the codec the clients speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Peer {
    imp: Implementation,
    runtime: Option<Runtime>,
    codec: Codec,
    /// Our server with its exporter on and scraped (`--with-metrics`).
    metrics: bool,
}

impl Peer {
    /// `conduit/native`, `conduit[tokio]/v1`, `netconduit/v1`: the backend appears
    /// when one was asked for (the result rows show the one the server ran on).
    fn label(&self) -> String {
        let runtime = self.runtime.filter(|r| *r != Runtime::Auto);
        format!(
            "{}/{}",
            report::server_label(self.target(), runtime.map(Runtime::name)),
            self.codec_name()
        )
    }

    /// The target name its results carry.
    fn target(&self) -> &'static str {
        if self.metrics {
            METRICS_TARGET
        } else {
            self.imp.name()
        }
    }

    /// The codec its clients speak (`resp` for Redis).
    fn codec_name(&self) -> &'static str {
        match self.imp {
            Implementation::Redis => redis::CODEC_NAME,
            _ => scenario::codec_name(self.codec),
        }
    }
}

/// Everything the suite wrote to JSON.
#[derive(Clone, Debug, Serialize)]
pub struct SuiteReport {
    /// The machine.
    pub machine: Machine,
    /// Quick mode.
    pub quick: bool,
    /// Rounds.
    pub rounds: usize,
    /// Connections per scenario.
    pub connections: usize,
    /// The runtime backends asked of our server (`auto`, `glommio`, `tokio`); each
    /// run and summary says which one it ran on.
    pub runtimes: Vec<String>,
    /// Unix time the suite started, seconds.
    pub started_unix: u64,
    /// Wall time, seconds.
    pub wall_s: f64,
    /// Every run, in the order they ran.
    pub runs: Vec<RunResult>,
    /// Runs that failed outright.
    pub failures: Vec<Failure>,
    /// Medians per scenario and target.
    pub summaries: Vec<Summary>,
    /// conduit vs netconduit.
    pub comparisons: Vec<Comparison>,
    /// `redis-server --version`, when Redis ran.
    pub redis_version: Option<String>,
    /// conduit vs Redis, side by side.
    pub redis_comparisons: Vec<RedisComparison>,
    /// The performance targets, checked.
    pub targets: Vec<TargetCheck>,
}

/// Runs the suite, prints the tables and writes the JSON.
pub fn run(opts: &SuiteOptions) -> Result<SuiteReport> {
    if opts.rounds == 0 || opts.rounds > MAX_ROUNDS {
        return Err(Error::Args(format!("rounds must be 1..={MAX_ROUNDS}")));
    }
    if opts.codecs.is_empty() {
        return Err(Error::Args("at least one codec".into()));
    }
    if opts.runtimes.is_empty() {
        return Err(Error::Args("at least one runtime".into()));
    }
    if let Some(scale) = &opts.scale {
        scale.validate()?;
    }
    let mut plans = crate::scale::with_scale(plans(opts.quick), opts.quick, opts.scale.as_ref());
    if !opts.only.is_empty() {
        let known: Vec<String> = plans.iter().map(Plan::name).collect();
        if let Some(bad) = opts.only.iter().find(|n| !known.contains(n)) {
            return Err(Error::Args(format!(
                "no scenario `{bad}` in this suite; there are: {}",
                known.join(", ")
            )));
        }
        plans.retain(|p| opts.only.contains(&p.name()));
    }
    // A backend this machine cannot run (glommio where io_uring is refused) would fail
    // every one of its runs: say so before starting any server.
    let most_shards = plans.iter().map(|p| p.shards).max().unwrap_or(1);
    for &runtime in opts.runtimes.iter().filter(|r| **r != Runtime::Auto) {
        runtime
            .resolve(most_shards)
            .map_err(|e| Error::Target(format!("conduit cannot run on {runtime} here: {e}")))?;
    }
    let loadgen_runtime = Runtime::Auto
        .resolve(1)
        .map_err(|e| Error::Runtime(format!("no runtime for the load generator: {e}")))?;
    // Missing redis-server fails here, before anything runs.
    let redis = if opts.compare_redis {
        Some(redis::server::locate(opts.redis_server.as_deref())?)
    } else {
        None
    };
    let python = if opts.compare_netconduit {
        Some(target::ensure_venv(&opts.venv)?)
    } else {
        None
    };
    let cpus = conduit::descriptor::allowed_cpus();
    let (server_cpu, loadgen_cpu) = if opts.pin && cpus.len() >= 2 {
        (Some(cpus[0]), Some(cpus[1]))
    } else {
        (None, None)
    };
    // Each codec on every runtime in turn, so one scenario's runs on glommio and on
    // tokio follow each other: whatever else the machine is doing then, both get it.
    let mut peers: Vec<Peer> = Vec::new();
    for &codec in &opts.codecs {
        for &runtime in &opts.runtimes {
            for metrics in [false, true] {
                if metrics && !opts.with_metrics {
                    continue;
                }
                peers.push(Peer {
                    imp: Implementation::Conduit,
                    runtime: Some(runtime),
                    codec,
                    metrics,
                });
            }
        }
    }
    if python.is_some() {
        peers.push(Peer {
            imp: Implementation::Netconduit,
            runtime: None,
            codec: Codec::V1,
            metrics: false,
        });
    }
    if redis.is_some() {
        peers.push(Peer {
            imp: Implementation::Redis,
            runtime: None,
            codec: Codec::Native,
            metrics: false,
        });
    }
    // The 2-shard and the scale runs measure our server alone.
    let runs_on = |plan: &Plan, peer: &Peer| match peer.imp {
        Implementation::Conduit => true,
        Implementation::Netconduit => plan.shards == 1 && plan.size.is_none(),
        Implementation::Redis => plan.size.is_none() && versus_redis::runs(plan),
    };
    let runs_per_round: usize = plans
        .iter()
        .map(|p| peers.iter().filter(|peer| runs_on(p, peer)).count())
        .sum();
    let total = opts.rounds * runs_per_round;
    let started = Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let loadavg_before = read_trim("/proc/loadavg");
    // Each run and failure with the index of its peer in `peers`.
    let mut runs: Vec<(usize, RunResult)> = Vec::new();
    let mut failures: Vec<(usize, Failure)> = Vec::new();
    let mut i = 0;
    let mut bar = progress::SuiteBar::new(opts.rounds, runs_per_round, opts.progress);
    for round in 1..=opts.rounds {
        for plan in &plans {
            for (k, peer) in peers.iter().enumerate() {
                if !runs_on(plan, peer) {
                    continue;
                }
                i += 1;
                let name = plan.name();
                let label = format!("[{i}/{total}] round {round} {name} {}", peer.label());
                bar.start(i - 1, round, &name, &peer.label());
                let run_started = Instant::now();
                let ran = match &redis {
                    Some(program) if peer.imp == Implementation::Redis => versus_redis::run_plan(
                        program,
                        plan,
                        opts.connections,
                        server_cpu,
                        loadgen_cpu,
                        opts.progress,
                        &label,
                    ),
                    _ => run_one(opts, plan, *peer, server_cpu, loadgen_cpu, &python, &label),
                };
                bar.finish_run(i - 1, run_started.elapsed());
                match ran {
                    Ok(r) => {
                        // The label names the backend asked for; `auto` resolved here.
                        let on = match (peer.runtime, &r.runtime) {
                            (Some(Runtime::Auto), Some(rt)) => format!("on {rt}: "),
                            _ => String::new(),
                        };
                        progress::eprintln(&format!("{label}: {on}{}", one_line(&r)));
                        runs.push((k, r));
                    }
                    Err(e) => {
                        progress::eprintln(&format!("{label}: FAILED: {e}"));
                        let failure = Failure {
                            round,
                            scenario: name,
                            target: peer.target().into(),
                            runtime: peer.runtime.map(|r| r.name().into()),
                            codec: peer.codec_name().into(),
                            error: e.to_string(),
                        };
                        failures.push((k, failure));
                    }
                }
            }
        }
    }
    bar.finish();
    let mut summaries = Vec::new();
    for plan in &plans {
        let name = plan.name();
        for k in 0..peers.len() {
            let group: Vec<&RunResult> = runs
                .iter()
                .filter(|(p, r)| *p == k && r.scenario == name)
                .map(|(_, r)| r)
                .collect();
            let failed = failures
                .iter()
                .filter(|(p, f)| *p == k && f.scenario == name)
                .count();
            if let Some(s) = report::summarize(&group, failed) {
                summaries.push(s);
            }
        }
    }
    let mut comparisons = Vec::new();
    for theirs in summaries.iter().filter(|s| s.target == "netconduit") {
        for ours in summaries
            .iter()
            .filter(|s| s.target == "conduit" && s.scenario == theirs.scenario)
        {
            comparisons.push(report::compare(ours, theirs));
        }
    }
    let mut targets = goals::target_checks(&summaries);
    targets.extend(versus_redis::target_checks(&summaries));
    let redis_comparisons = versus_redis::comparisons(&summaries);
    let report = SuiteReport {
        machine: Machine {
            cpus: cpus.len(),
            cpu_model: cpu_model(),
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            loadavg_before,
            loadavg_after: read_trim("/proc/loadavg"),
            server_cpu,
            loadgen_cpu,
            loadgen_runtime: loadgen_runtime.name().into(),
        },
        quick: opts.quick,
        rounds: opts.rounds,
        connections: opts.connections,
        runtimes: opts.runtimes.iter().map(|r| r.name().into()).collect(),
        started_unix,
        wall_s: started.elapsed().as_secs_f64(),
        runs: runs.into_iter().map(|(_, r)| r).collect(),
        failures: failures.into_iter().map(|(_, f)| f).collect(),
        summaries,
        comparisons,
        redis_version: redis.as_deref().and_then(redis::server::version),
        redis_comparisons,
        targets,
    };
    if let Some(dir) = opts.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json =
        serde_json::to_string_pretty(&report).map_err(|e| Error::Io(std::io::Error::other(e)))?;
    std::fs::write(&opts.out, json)?;
    Ok(report)
}

/// The suite's tables as text.
pub fn render(r: &SuiteReport) -> String {
    let mut out = String::new();
    // What was asked, and what the servers reported running on (`auto` resolves).
    let mut ran: Vec<&str> = r
        .summaries
        .iter()
        .filter_map(|s| s.runtime.as_deref())
        .collect();
    ran.sort_unstable();
    ran.dedup();
    out.push_str(&format!(
        "conduit-loadgen suite: {} connections, {} round(s){}, {:.0} s; {} CPUs ({}), server on CPU {} (runtime {} → ran on {}), load generator on CPU {} ({})\n\n",
        r.connections,
        r.rounds,
        if r.quick { " (quick)" } else { "" },
        r.wall_s,
        r.machine.cpus,
        r.machine.cpu_model,
        r.machine.server_cpu.map_or("any".into(), |c| c.to_string()),
        r.runtimes.join(", "),
        if ran.is_empty() { "-".to_owned() } else { ran.join(", ") },
        r.machine.loadgen_cpu.map_or("any".into(), |c| c.to_string()),
        r.machine.loadgen_runtime,
    ));
    out.push_str("Medians over rounds:\n");
    let rows: Vec<Vec<String>> = r.summaries.iter().map(report::summary_row).collect();
    out.push_str(&report::table(&report::SUMMARY_HEADERS, &rows));
    if !r.comparisons.is_empty() {
        out.push_str("\nconduit vs netconduit 5.0.0 (× = times more, ÷ = times less):\n");
        let rows: Vec<Vec<String>> = r.comparisons.iter().map(report::comparison_row).collect();
        out.push_str(&report::table(&report::COMPARISON_HEADERS, &rows));
    }
    out.push_str(&versus_redis::render(
        &r.redis_comparisons,
        r.redis_version.as_deref(),
    ));
    out.push_str(&crate::scale::render(&r.summaries));
    out.push_str("\nTargets:\n");
    let rows: Vec<Vec<String>> = r.targets.iter().map(goals::target_row).collect();
    out.push_str(&report::table(&goals::TARGET_HEADERS, &rows));
    for f in &r.failures {
        out.push_str(&format!(
            "FAILED round {} {} {}/{}: {}\n",
            f.round,
            f.scenario,
            report::server_label(&f.target, f.runtime.as_deref()),
            f.codec,
            f.error
        ));
    }
    out
}

fn one_line(r: &RunResult) -> String {
    format!(
        "{} {} ({}/s), server {} per op, {} core, p99 {}{}{}",
        report::num(Some(r.ops as f64)),
        r.op,
        report::num(Some(r.ops_per_s)),
        report::dur_us(r.server_cpu_us_per_op),
        r.server_core_pct
            .map_or("-".into(), |p| format!("{}%", report::num(Some(p)))),
        report::dur_us(r.latency.map(|l| l.p99_us)),
        r.loss
            .map_or(String::new(), |l| format!(", lost {}", l.lost)),
        if r.complete { "" } else { ", INCOMPLETE" },
    )
}

/// One run of `plan` against `peer`, on a server of its own.
fn run_one(
    opts: &SuiteOptions,
    plan: &Plan,
    peer: Peer,
    server_cpu: Option<usize>,
    loadgen_cpu: Option<usize>,
    python: &Option<PathBuf>,
    label: &str,
) -> Result<RunResult> {
    let Peer {
        imp,
        runtime,
        codec,
        metrics,
    } = peer;
    let mut scenario = plan.scenario.clone();
    let mut heartbeat = plan.heartbeat;
    let connections = plan.size.map_or(opts.connections, |s| s.connections);
    if imp == Implementation::Netconduit {
        // netconduit's heartbeat interval is whole seconds, at least 1.
        if let Scenario::Heartbeat(h) = &mut scenario {
            heartbeat = heartbeat.max(Duration::from_secs(1));
            h.duration = h.duration.max(Duration::from_millis(2500));
        }
    } else if opts.quick {
        if let Scenario::Heartbeat(_) = scenario {
            heartbeat = Duration::from_millis(200);
        }
    }
    let server = ServerProcess::spawn(
        imp,
        &SpawnOptions {
            heartbeat,
            shards: plan.shards,
            // A 2-shard server gets both CPUs (the load generator shares the second);
            // its CPU per delivery is summed over its shards.
            cpus: match (server_cpu, loadgen_cpu) {
                (Some(a), Some(b)) if plan.shards > 1 => vec![a, b],
                (Some(a), _) => vec![a],
                _ => Vec::new(),
            },
            password: BENCH_PASSWORD.into(),
            python: python.clone(),
            runtime: runtime.unwrap_or_default(),
            extra_args: if metrics {
                vec!["--metrics-addr".into(), "127.0.0.1:0".into()]
            } else {
                Vec::new()
            },
            log_filter: None,
        },
    )?;
    let scraper = match (metrics, server.metrics_addr) {
        (false, _) => None,
        (true, Some(addr)) => Some(Scraper::start(addr, SCRAPE_INTERVAL)?),
        (true, None) => {
            return Err(Error::Target(
                "the server did not say where its metrics are".into(),
            ))
        }
    };
    let spec = RunSpec {
        connect: ConnectSpec {
            addr: server.addr,
            transport: crate::wire::Transport::Tcp,
            tls: None,
            codec,
            password: BENCH_PASSWORD.into(),
            attempts: MAX_CONNECT_ATTEMPTS,
            connect_timeout: Duration::from_secs(5),
        },
        connections,
        sources: plan.size.map_or(1, |s| s.sources),
        connect_concurrency: match plan.size {
            Some(_) => SCALE_CONNECT_CONCURRENCY.min(connections),
            None => SUITE_CONNECT_CONCURRENCY.min(connections),
        },
        connect_deadline: SUITE_CONNECT_DEADLINE,
        server_pid: Some(server.pid),
        label: label.to_owned(),
        progress: opts.progress,
        scenario,
    };
    // What the server says it runs on, not what was asked: `auto` resolves there.
    let ran_on = server.runtime;
    let result = scenario::run(spec, loadgen_cpu);
    // Every scrape of the run must have answered: the exporter ran all along.
    let scraped = scraper.map(Scraper::stop).transpose();
    server.stop();
    let mut r = result?;
    if scraped?.is_some_and(|n| n == 0) {
        return Err(Error::Target("no scrape of the server's metrics".into()));
    }
    r.target = peer.target().into();
    r.runtime = ran_on.map(|rt| rt.name().into());
    r.scenario = plan.name();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plan_is_within_bounds() {
        for quick in [false, true] {
            for p in plans(quick) {
                let spec = RunSpec {
                    connect: ConnectSpec {
                        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
                        transport: crate::wire::Transport::Tcp,
                        tls: None,
                        codec: Codec::Native,
                        password: "x".into(),
                        attempts: 1,
                        connect_timeout: Duration::from_secs(1),
                    },
                    connections: 1000,
                    sources: 1,
                    connect_concurrency: SUITE_CONNECT_CONCURRENCY,
                    connect_deadline: SUITE_CONNECT_DEADLINE,
                    server_pid: None,
                    label: String::new(),
                    progress: false,
                    scenario: p.scenario,
                };
                assert!(scenario::validate(&spec).is_ok(), "{spec:?}");
            }
        }
        assert_eq!(plans(false).len(), 10);
        assert_eq!(plans(false).iter().filter(|p| p.shards == 2).count(), 3);
    }
}
