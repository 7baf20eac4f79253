//! The performance targets, checked against the suite's summaries: what
//! each target bounds ([`TargetCheck`]), the checks for every runtime backend conduit
//! ran on ([`target_checks`]), and the target table ([`TARGET_HEADERS`], [`target_row`]).

use serde::Serialize;

use crate::report::{num, ratio, server_label, Summary};

/// One of the performance targets, measured.
#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    /// What is measured.
    pub goal: String,
    /// Unit of `target` and `measured`.
    pub unit: String,
    /// The bound.
    pub target: f64,
    /// Whether the bound is a ceiling (`true`) or a floor.
    pub at_most: bool,
    /// The median measured (native codec), if the run produced it.
    pub measured: Option<f64>,
    /// Whether it is met.
    pub met: Option<bool>,
    /// The runtime backend conduit ran on for this measurement (as in
    /// [`Summary::runtime`]).
    pub runtime: Option<String>,
}

impl TargetCheck {
    fn new(
        goal: &str,
        unit: &str,
        target: f64,
        at_most: bool,
        measured: Option<f64>,
    ) -> TargetCheck {
        TargetCheck {
            goal: goal.into(),
            unit: unit.into(),
            target,
            at_most,
            measured,
            met: measured.map(|m| if at_most { m <= target } else { m >= target }),
            runtime: None,
        }
    }
}

/// The performance targets against `summaries` (conduit, native codec) and, when present,
/// the netconduit comparison: one set for each runtime backend conduit ran on (one
/// unmeasured set when there is no conduit summary).
pub fn target_checks(summaries: &[Summary]) -> Vec<TargetCheck> {
    let mut runtimes: Vec<Option<&str>> = Vec::new();
    for s in summaries
        .iter()
        .filter(|s| s.target == "conduit" && s.codec == "native")
    {
        if !runtimes.contains(&s.runtime.as_deref()) {
            runtimes.push(s.runtime.as_deref());
        }
    }
    if runtimes.is_empty() {
        runtimes.push(None);
    }
    runtimes
        .into_iter()
        .flat_map(|runtime| checks_on(summaries, runtime))
        .collect()
}

/// The targets for conduit (native codec) on `runtime`.
fn checks_on(summaries: &[Summary], runtime: Option<&str>) -> Vec<TargetCheck> {
    let ours = |scenario: &str| {
        summaries.iter().find(|s| {
            s.scenario == scenario
                && s.target == "conduit"
                && s.codec == "native"
                && s.runtime.as_deref() == runtime
        })
    };
    let theirs = |scenario: &str| {
        summaries
            .iter()
            .find(|s| s.scenario == scenario && s.target == "netconduit")
    };
    let sat = ours("broadcast-saturate");
    let single = ours("broadcast-single");
    let rate = ours("broadcast-rate");
    let rpc = ours("rpc");
    let hb = ours("heartbeat");
    let hb_ping = ours("heartbeat-ping");
    let conn = ours("connect");
    let mut v = vec![
        TargetCheck::new(
            "broadcast saturation: server CPU per delivery",
            "µs",
            0.12,
            true,
            sat.and_then(|s| s.cpu_us_per_op),
        ),
        TargetCheck::new(
            "one at a time: server CPU per delivery",
            "µs",
            5.5,
            true,
            single.and_then(|s| s.cpu_us_per_op),
        ),
        TargetCheck::new(
            "one at a time: fan-out p99",
            "ms",
            6.0,
            true,
            single.and_then(|s| s.fanout).map(|f| f.p99_us / 1000.0),
        ),
        TargetCheck::new(
            "30 Hz tick: server CPU",
            "% of a core",
            18.0,
            true,
            rate.and_then(|s| s.core_pct),
        ),
        TargetCheck::new(
            "30 Hz tick: fan-out p99 (last receiver)",
            "ms",
            6.5,
            true,
            rate.and_then(|s| s.fanout).map(|f| f.p99_us / 1000.0),
        ),
        TargetCheck::new(
            "rpc, 1 in flight per connection: server CPU per call",
            "µs",
            7.5,
            true,
            rpc.and_then(|s| s.cpu_us_per_op),
        ),
        // Per round, scaled to one round a second: conduit's tick pings a connection
        // up to a quarter interval late, so its rounds come every 1–1.25 s.
        TargetCheck::new(
            "heartbeat at 1 s: server CPU (per round × 1/s)",
            "% of a core",
            1.0,
            true,
            hb.and_then(|s| s.cpu_us_per_round).map(|us| us / 1e4),
        ),
        TargetCheck::new(
            "heartbeat at 1 s, clients pinging back too (per round × 1/s)",
            "% of a core",
            1.0,
            true,
            hb_ping.and_then(|s| s.cpu_us_per_round).map(|us| us / 1e4),
        ),
        TargetCheck::new(
            "idle authenticated connections: server RSS",
            "MiB",
            8.0,
            true,
            conn.and_then(|s| s.rss_idle_mib),
        ),
        TargetCheck::new(
            "connect + authenticate all: time",
            "ms",
            150.0,
            true,
            conn.and_then(|s| s.connect_ms),
        ),
    ];
    // The cross-shard bus: 2 shards (CPU summed over both) against 1, same load.
    for (scenario, goal, limit) in [
        (
            "broadcast-saturate",
            "2 shards vs 1: CPU per delivery, saturated",
            1.15,
        ),
        (
            "broadcast-single",
            "2 shards vs 1: CPU per delivery, one at a time",
            1.1,
        ),
        ("broadcast-rate", "2 shards vs 1: server CPU, 30 Hz", 1.1),
    ] {
        let one = ours(scenario);
        let two = ours(&format!("{scenario}-2sh"));
        if let (Some(one), Some(two)) = (one, two) {
            let (a, b) = if scenario == "broadcast-rate" {
                (two.core_pct, one.core_pct)
            } else {
                (two.cpu_us_per_op, one.cpu_us_per_op)
            };
            v.push(TargetCheck::new(goal, "×", limit, true, ratio(a, b)));
        }
    }
    v.extend(scale_checks(&ours));
    if let (Some(o), Some(t)) = (sat, theirs("broadcast-saturate")) {
        v.insert(
            1,
            TargetCheck::new(
                "broadcast saturation: deliveries/s vs netconduit",
                "×",
                100.0,
                false,
                ratio(o.ops_per_s, t.ops_per_s),
            ),
        );
    }
    for check in &mut v {
        check.runtime = runtime.map(str::to_owned);
    }
    v
}

/// The targets at scale (`suite --scale`, see `scale`), for the runs at
/// 10,000 connections that were made; `ours` finds a scenario's summary.
fn scale_checks<'a>(ours: &dyn Fn(&str) -> Option<&'a Summary>) -> Vec<TargetCheck> {
    let mut v = Vec::new();
    if let Some(c) = ours("connect-10k") {
        v.push(TargetCheck::new(
            "RSS per idle connection at 10,000",
            "KiB",
            3.0,
            true,
            c.rss_per_conn_bytes.map(|b| b / 1024.0),
        ));
    }
    if let Some(h) = ours("heartbeat-10k") {
        // Per round, scaled to one round a second, as the heartbeat target above.
        v.push(TargetCheck::new(
            "heartbeat 1 s at 10,000 connections (per round × 1/s)",
            "% of a core",
            6.0,
            true,
            h.cpu_us_per_round.map(|us| us / 1e4),
        ));
    }
    for (mode, what) in [("saturate", "saturated"), ("single", "one at a time")] {
        let big = ours(&format!("broadcast-{mode}-10k"));
        let small = ours(&format!("broadcast-{mode}-100"));
        if let (Some(big), Some(small)) = (big, small) {
            v.push(TargetCheck::new(
                &format!("per-delivery cost 10,000 ÷ 100 receivers, {what} (flat)"),
                "×",
                1.15,
                true,
                ratio(big.cpu_us_per_op, small.cpu_us_per_op),
            ));
        }
    }
    v
}

/// Headers of [`target_row`].
pub const TARGET_HEADERS: [&str; 5] =
    ["target (native codec)", "server", "goal", "measured", "met"];

/// One target check as a table row.
pub fn target_row(t: &TargetCheck) -> Vec<String> {
    let cmp = if t.at_most { "≤" } else { "≥" };
    vec![
        t.goal.clone(),
        server_label("conduit", t.runtime.as_deref()),
        format!("{cmp} {} {}", num(Some(t.target)), t.unit),
        t.measured
            .map_or("-".into(), |m| format!("{} {}", num(Some(m)), t.unit)),
        match t.met {
            Some(true) => "yes".into(),
            Some(false) => match t.measured {
                Some(m) if t.at_most && t.target > 0.0 => {
                    format!("NO ({}× over)", num(Some(m / t.target)))
                }
                Some(m) if m > 0.0 => format!("NO ({}× short)", num(Some(t.target / m))),
                _ => "NO".into(),
            },
            None => "-".into(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{run_row, summarize, summary_row};
    use crate::scenario::RunResult;

    /// A finished `scenario` run of conduit on `runtime` costing `cpu_us` per op.
    fn run_on(scenario: &str, runtime: &str, cpu_us: f64) -> RunResult {
        let spec = crate::scenario::RunSpec {
            connect: crate::wire::ConnectSpec {
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
                transport: crate::wire::Transport::Tcp,
                tls: None,
                codec: conduit_protocol::Codec::Native,
                password: "x".into(),
                attempts: 1,
                connect_timeout: std::time::Duration::from_secs(1),
            },
            connections: 10,
            sources: 1,
            connect_concurrency: 10,
            connect_deadline: std::time::Duration::from_secs(1),
            server_pid: None,
            label: String::new(),
            progress: false,
            scenario: crate::scenario::Scenario::Connect {
                settle: std::time::Duration::ZERO,
            },
        };
        let mut r = RunResult::new(&spec);
        r.scenario = scenario.into();
        r.target = "conduit".into();
        r.runtime = Some(runtime.into());
        r.server_cpu_us_per_op = Some(cpu_us);
        r
    }

    #[test]
    fn every_runtime_gets_its_own_rows_and_targets() {
        let glommio = run_on("rpc", "glommio", 5.0);
        let tokio = run_on("rpc", "tokio", 9.0);
        let g = summarize(&[&glommio], 0).unwrap();
        let t = summarize(&[&tokio], 0).unwrap();
        assert_eq!(g.runtime.as_deref(), Some("glommio"));
        assert_eq!(summary_row(&g)[1], "conduit[glommio]/native");
        assert_eq!(run_row(&tokio)[1], "conduit[tokio]/native");
        // Rounds of `auto` that landed on different backends say so.
        let mixed = summarize(&[&glommio, &tokio, &glommio], 0).unwrap();
        assert_eq!(mixed.runtime.as_deref(), Some("glommio+tokio"));

        let checks = target_checks(&[g, t]);
        let rpc = |rt: &str| {
            checks
                .iter()
                .find(|c| c.goal.starts_with("rpc") && c.runtime.as_deref() == Some(rt))
                .and_then(|c| c.measured)
        };
        assert_eq!(rpc("glommio"), Some(5.0));
        assert_eq!(rpc("tokio"), Some(9.0));
        assert_eq!(checks.len(), 2 * target_checks(&[]).len());
        assert!(target_checks(&[]).iter().all(|c| c.measured.is_none()));
    }

    #[test]
    fn checks_and_ratios() {
        let t = TargetCheck::new("x", "µs", 0.12, true, Some(0.24));
        assert_eq!(t.met, Some(false));
        assert_eq!(target_row(&t)[4], "NO (2.00× over)");
        let t = TargetCheck::new("y", "×", 100.0, false, Some(50.0));
        assert_eq!(target_row(&t)[4], "NO (2.00× short)");
        let t = TargetCheck::new("z", "ms", 150.0, true, None);
        assert_eq!(t.met, None);
        assert_eq!(ratio(Some(10.0), Some(0.0)), None);
        assert_eq!(ratio(Some(10.0), Some(4.0)), Some(2.5));
    }
}
