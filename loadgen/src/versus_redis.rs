//! The suite's side of `--compare redis`: one Redis run of a suite plan on a
//! `redis-server` of its own ([`run_plan`]), every summary of ours next to Redis's
//! figure for the same scenario with the ratio ours ÷ Redis ([`comparisons`],
//! [`render`]), and the targets set relative to Redis ([`target_checks`]).
//!
//! Redis is single-threaded, so the 2-shard variants of our broadcasts (`*-2sh`) are
//! set against the same Redis broadcast as the 1-shard ones; the heartbeat scenarios
//! have no Redis counterpart and their rows say so.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::goals::TargetCheck;
use crate::plan::{Plan, SUITE_CONNECT_CONCURRENCY, SUITE_CONNECT_DEADLINE};
use crate::redis::{RedisServer, NO_HEARTBEAT, TARGET_NAME};
use crate::report::{dur_us, num, ratio, server_label, table, Summary};
use crate::scenario::{self, RunResult, RunSpec, Scenario};
use crate::target::BENCH_PASSWORD;
use crate::wire::{ConnectSpec, Transport, MAX_CONNECT_ATTEMPTS};
use crate::Result;

/// Whether the suite runs `plan` against Redis: every 1-shard plan but the heartbeats.
pub fn runs(plan: &Plan) -> bool {
    plan.shards == 1 && !matches!(plan.scenario, Scenario::Heartbeat(_))
}

/// One run of `plan` against a fresh `redis-server` (`program`) pinned to
/// `server_cpu`, driven from an executor pinned to `loadgen_cpu`, with `connections`
/// connections as ours get.
pub fn run_plan(
    program: &Path,
    plan: &Plan,
    connections: usize,
    server_cpu: Option<usize>,
    loadgen_cpu: Option<usize>,
    progress: bool,
    label: &str,
) -> Result<RunResult> {
    let server = RedisServer::start(program, BENCH_PASSWORD, &Vec::from_iter(server_cpu))?;
    let spec = RunSpec {
        connect: ConnectSpec {
            addr: server.addr,
            transport: Transport::Tcp,
            tls: None,
            // Unused: Redis speaks RESP.
            codec: conduit_protocol::Codec::Native,
            password: BENCH_PASSWORD.into(),
            attempts: MAX_CONNECT_ATTEMPTS,
            connect_timeout: Duration::from_secs(5),
        },
        connections,
        sources: 1,
        connect_concurrency: SUITE_CONNECT_CONCURRENCY.min(connections),
        connect_deadline: SUITE_CONNECT_DEADLINE,
        server_pid: Some(server.pid),
        label: label.to_owned(),
        progress,
        scenario: plan.scenario.clone(),
    };
    let result = scenario::run_redis(spec, loadgen_cpu);
    server.stop();
    let mut r = result?;
    r.target = TARGET_NAME.into();
    r.runtime = None;
    r.scenario = plan.name();
    Ok(r)
}

/// One figure of ours next to Redis's.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Pair {
    /// Our median.
    pub ours: Option<f64>,
    /// Redis's median.
    pub redis: Option<f64>,
    /// `ours ÷ redis`.
    pub ratio: Option<f64>,
}

impl Pair {
    fn new(ours: Option<f64>, redis: Option<f64>) -> Pair {
        Pair {
            ours,
            redis,
            ratio: ratio(ours, redis),
        }
    }
}

/// One scenario of ours (one backend, one codec) against Redis.
#[derive(Clone, Debug, Serialize)]
pub struct RedisComparison {
    /// Our scenario.
    pub scenario: String,
    /// The Redis scenario it is set against (`broadcast-saturate` for
    /// `broadcast-saturate-2sh`); `None` when there is no counterpart.
    pub redis_scenario: Option<String>,
    /// The runtime backend ours ran on.
    pub runtime: Option<String>,
    /// Our codec.
    pub codec: String,
    /// Server CPU per operation, µs (per delivery, call, or connection).
    pub cpu_us_per_op: Pair,
    /// Operations per second.
    pub ops_per_s: Pair,
    /// Median latency, µs (delivery, round trip, or connect).
    pub p50_us: Pair,
    /// 99th percentile latency, µs.
    pub p99_us: Pair,
    /// Server RSS with the connections idle, MiB (connect).
    pub rss_idle_mib: Pair,
    /// Why a row has no Redis figures, or what it is set against.
    pub note: Option<String>,
}

/// The Redis scenario our `scenario` compares with, or why there is none.
fn counterpart(scenario: &str) -> std::result::Result<(String, Option<String>), &'static str> {
    if scenario.starts_with("heartbeat") {
        return Err(NO_HEARTBEAT);
    }
    Ok(match scenario.strip_suffix("-2sh") {
        Some(one) => (
            one.to_owned(),
            Some(format!(
                "2 shards vs Redis's {one} (Redis is single-threaded)"
            )),
        ),
        None => (scenario.to_owned(), None),
    })
}

/// Every summary of ours against Redis's summary of the same scenario; empty when
/// Redis did not run.
pub fn comparisons(summaries: &[Summary]) -> Vec<RedisComparison> {
    if !summaries.iter().any(|s| s.target == TARGET_NAME) {
        return Vec::new();
    }
    summaries
        .iter()
        .filter(|s| s.target == "conduit")
        .map(|ours| {
            let (theirs, note) = match counterpart(&ours.scenario) {
                Ok((name, note)) => {
                    let theirs = summaries
                        .iter()
                        .find(|s| s.target == TARGET_NAME && s.scenario == name);
                    let note = match theirs {
                        Some(_) => note,
                        None => Some(format!("no Redis result for {name} (failed)")),
                    };
                    (theirs.map(|t| (name, t)), note)
                }
                Err(why) => (None, Some(why.to_owned())),
            };
            let redis = theirs.as_ref().map(|(_, t)| *t);
            let pair = |f: fn(&Summary) -> Option<f64>| Pair::new(f(ours), redis.and_then(f));
            RedisComparison {
                scenario: ours.scenario.clone(),
                redis_scenario: theirs.map(|(name, _)| name),
                runtime: ours.runtime.clone(),
                codec: ours.codec.clone(),
                cpu_us_per_op: pair(|s| s.cpu_us_per_op),
                ops_per_s: pair(|s| s.ops_per_s),
                p50_us: pair(|s| s.latency.map(|l| l.p50_us)),
                p99_us: pair(|s| s.latency.map(|l| l.p99_us)),
                rss_idle_mib: pair(|s| s.rss_idle_mib),
                note,
            }
        })
        .collect()
}

/// Headers of [`comparison_row`].
pub const REDIS_HEADERS: [&str; 8] = [
    "scenario",
    "ours",
    "srv CPU/op ours / Redis",
    "ops/s ours / Redis",
    "p50 ours / Redis",
    "p99 ours / Redis",
    "RSS idle ours / Redis",
    "note",
];

/// `ours / redis = ratio×`, each figure shown by `show`.
fn cell(p: Pair, show: fn(Option<f64>) -> String) -> String {
    if p.ours.is_none() && p.redis.is_none() {
        return "-".into();
    }
    match p.ratio {
        Some(r) => format!("{} / {} = {}×", show(p.ours), show(p.redis), num(Some(r))),
        None => format!("{} / {}", show(p.ours), show(p.redis)),
    }
}

/// One comparison as a table row.
pub fn comparison_row(c: &RedisComparison) -> Vec<String> {
    let mib = |v: Option<f64>| v.map_or("-".into(), |m| format!("{} MiB", num(Some(m))));
    vec![
        c.scenario.clone(),
        format!(
            "{}/{}",
            server_label("conduit", c.runtime.as_deref()),
            c.codec
        ),
        cell(c.cpu_us_per_op, dur_us),
        cell(c.ops_per_s, num),
        cell(c.p50_us, dur_us),
        cell(c.p99_us, dur_us),
        cell(c.rss_idle_mib, mib),
        c.note.clone().unwrap_or_default(),
    ]
}

/// The side-by-side table, titled with Redis's version; empty without comparisons.
pub fn render(comparisons: &[RedisComparison], version: Option<&str>) -> String {
    if comparisons.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\nconduit vs Redis {} (ratio = ours ÷ Redis; Redis: connect = AUTH + SUBSCRIBE, \
         broadcast = PUBLISH to subscribers, rpc = ECHO):\n",
        version.unwrap_or("7")
    );
    let rows: Vec<Vec<String>> = comparisons.iter().map(comparison_row).collect();
    out.push_str(&table(&REDIS_HEADERS, &rows));
    out
}

/// The targets set relative to Redis, for our native codec on every backend it ran
/// on, where Redis's figure exists: saturated broadcast CPU per delivery at most half
/// Redis's, one at a time at most Redis's, rpc CPU per call at most 0.9× Redis's per
/// `ECHO` (and, a must, at most 1×).
pub fn target_checks(summaries: &[Summary]) -> Vec<TargetCheck> {
    let redis = |scenario: &str| {
        summaries
            .iter()
            .find(|s| s.target == TARGET_NAME && s.scenario == scenario)
    };
    let goals = [
        (
            "broadcast-saturate",
            "broadcast saturation: CPU per delivery vs Redis",
            0.5,
        ),
        (
            "broadcast-single",
            "one at a time: CPU per delivery vs Redis",
            1.0,
        ),
        ("rpc", "rpc: CPU per call vs Redis's per ECHO", 0.9),
        (
            "rpc",
            "rpc: CPU per call vs Redis's per ECHO (must meet)",
            1.0,
        ),
    ];
    let mut checks = Vec::new();
    for ours in summaries
        .iter()
        .filter(|s| s.target == "conduit" && s.codec == "native")
    {
        for (scenario, goal, limit) in goals {
            let Some(theirs) = redis(scenario).filter(|_| ours.scenario == scenario) else {
                continue;
            };
            let measured = ratio(ours.cpu_us_per_op, theirs.cpu_us_per_op);
            checks.push(TargetCheck {
                goal: goal.into(),
                unit: "×".into(),
                target: limit,
                at_most: true,
                measured,
                met: measured.map(|m| m <= limit),
                runtime: ours.runtime.clone(),
            });
        }
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::summarize;

    /// A finished run of `scenario` on `target` costing `cpu_us` per op.
    fn run(scenario: &str, target: &str, codec: &str, cpu_us: f64) -> RunResult {
        let spec = RunSpec {
            connect: ConnectSpec {
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
                transport: Transport::Tcp,
                tls: None,
                codec: conduit_protocol::Codec::Native,
                password: "x".into(),
                attempts: 1,
                connect_timeout: Duration::from_secs(1),
            },
            connections: 10,
            sources: 1,
            connect_concurrency: 10,
            connect_deadline: Duration::from_secs(1),
            server_pid: None,
            label: String::new(),
            progress: false,
            scenario: Scenario::Connect {
                settle: Duration::ZERO,
            },
        };
        let mut r = RunResult::new(&spec);
        r.scenario = scenario.into();
        r.target = target.into();
        r.codec = codec.into();
        r.runtime = (target == "conduit").then(|| "tokio".into());
        r.server_cpu_us_per_op = Some(cpu_us);
        r.ops_per_s = 1000.0 / cpu_us;
        r
    }

    #[test]
    fn rows_ratios_and_targets() {
        let runs = [
            run("broadcast-saturate", "conduit", "native", 0.2),
            run("broadcast-saturate-2sh", "conduit", "native", 0.3),
            run("heartbeat", "conduit", "native", 1.0),
            run("rpc", "conduit", "v1", 4.0),
            run("rpc", "conduit", "native", 3.0),
            run("broadcast-saturate", "redis", "resp", 0.5),
            run("rpc", "redis", "resp", 4.0),
        ];
        let summaries: Vec<Summary> = runs.iter().map(|r| summarize(&[r], 0).unwrap()).collect();
        let c = comparisons(&summaries);
        assert_eq!(c.len(), 5);
        assert_eq!(c[0].cpu_us_per_op.ratio, Some(0.4));
        // The 2-shard variant is set against the same Redis broadcast, and says so.
        assert_eq!(c[1].redis_scenario.as_deref(), Some("broadcast-saturate"));
        assert!(c[1].note.as_deref().unwrap().contains("single-threaded"));
        assert!((c[1].cpu_us_per_op.ratio.unwrap() - 0.6).abs() < 1e-9);
        // The heartbeat has no counterpart.
        assert_eq!(c[2].note.as_deref(), Some(NO_HEARTBEAT));
        assert_eq!(c[2].redis_scenario, None);
        let row = comparison_row(&c[0]);
        assert_eq!(row[1], "conduit[tokio]/native");
        assert_eq!(row[2], "0.200 µs / 0.500 µs = 0.400×");
        assert!(render(&c, Some("7.0.15")).contains("Redis 7.0.15"));
        // Targets: native only, where Redis ran (no one-at-a-time run here).
        let t = target_checks(&summaries);
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].met, Some(true));
        assert_eq!(t[1].measured, Some(0.75));
        assert_eq!(t[1].met, Some(true));
        assert_eq!(t[2].met, Some(true));
        // Without a Redis run there is nothing to compare.
        assert!(comparisons(&summaries[..5]).is_empty());
        assert!(target_checks(&summaries[..5]).is_empty());
        assert_eq!(render(&[], None), "");
    }
}
