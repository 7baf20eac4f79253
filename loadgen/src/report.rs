//! Results as people and programs read them: a plain-text table per run, the suite
//! summary (medians over rounds), the comparison with netconduit, and JSON. The
//! performance targets are checked in `goals`.

use serde::Serialize;

use crate::scenario::RunResult;
use crate::stats::{median, Latency, LatencySummary};

/// Renders rows under headers as an aligned text table (first column left-aligned,
/// the others right-aligned).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cols = headers.len();
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate().take(cols) {
            width[i] = width[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i].saturating_sub(c.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            if i == 0 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    out.push_str(&line(
        width
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// A number with a sensible number of digits; `-` for none.
pub fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if !v.is_finite() => "-".into(),
        Some(v) if v.abs() >= 1e6 => format!("{:.2}M", v / 1e6),
        Some(v) if v.abs() >= 1e4 => format!("{:.0}k", v / 1e3),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) if v.abs() >= 1.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// Microseconds as µs or ms.
pub fn dur_us(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(us) if us >= 1000.0 => format!("{} ms", num(Some(us / 1000.0))),
        Some(us) => format!("{} µs", num(Some(us))),
    }
}

/// The server column of every table: the target, with the runtime backend it ran on
/// when it said (`conduit[glommio]`, `conduit[tokio]`, `netconduit`), so rows of the
/// same server on different backends are told apart.
pub fn server_label(target: &str, runtime: Option<&str>) -> String {
    match runtime {
        Some(rt) => format!("{target}[{rt}]"),
        None => target.to_owned(),
    }
}

/// Headers of [`run_row`].
pub const RUN_HEADERS: [&str; 13] = [
    "scenario",
    "target",
    "conns",
    "ops",
    "ops/s",
    "loss",
    "p50",
    "p99",
    "p99.9",
    "max",
    "fan-out p99",
    "srv CPU/op",
    "srv core",
];

/// One run as a table row.
pub fn run_row(r: &RunResult) -> Vec<String> {
    let l = r.latency;
    vec![
        r.scenario.clone(),
        format!(
            "{}/{}",
            server_label(&r.target, r.runtime.as_deref()),
            r.codec
        ),
        r.connections.to_string(),
        format!("{} {}", num(Some(r.ops as f64)), r.op),
        num(Some(r.ops_per_s)),
        r.loss.map_or("-".into(), loss_cell),
        dur_us(l.map(|l| l.p50_us)),
        dur_us(l.map(|l| l.p99_us)),
        dur_us(l.map(|l| l.p999_us)),
        dur_us(l.map(|l| l.max_us)),
        dur_us(r.fanout.map(|f| f.p99_us)),
        dur_us(r.server_cpu_us_per_op),
        r.server_core_pct
            .map_or("-".into(), |p| format!("{}%", num(Some(p)))),
    ]
}

/// Lost deliveries, and those still open when a time bound ended the run.
fn loss_cell(l: crate::stats::LossReport) -> String {
    if l.unfinished > 0 {
        format!("{} (+{} open)", l.lost, num(Some(l.unfinished as f64)))
    } else {
        l.lost.to_string()
    }
}

/// Several runs as a table, with the connect phase and notes underneath.
pub fn runs_table(results: &[RunResult]) -> String {
    let rows: Vec<Vec<String>> = results.iter().map(run_row).collect();
    let mut out = table(&RUN_HEADERS, &rows);
    for r in results {
        out.push_str(&format!(
            "{} {}/{}: {} connections ready in {}; server RSS {} idle (before: {}); client core {}; frame {} B{}\n",
            r.scenario,
            server_label(&r.target, r.runtime.as_deref()),
            r.codec,
            r.connections,
            dur_us(Some(r.connect_s * 1e6)),
            kib(r.rss_idle_kib),
            kib(r.rss_before_kib),
            r.client_core_pct.map_or("-".into(), |p| format!("{}%", num(Some(p)))),
            r.frame_bytes.map_or("-".into(), |b| b.to_string()),
            if r.complete { "" } else { "; INCOMPLETE (hit a bound)" },
        ));
        for n in &r.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
        if let Some(us) = r.server_cpu_us_per_message {
            let room = match (r.room_members, &r.room_members_per_shard) {
                (Some(m), Some(shards)) => format!(
                    "; room of {m} among {} connections (members per shard: {})",
                    r.connections,
                    shards
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => String::new(),
            };
            out.push_str(&format!(
                "  broadcast: {} messages, {} server CPU per message{room}\n",
                r.messages,
                dur_us(Some(us)),
            ));
        }
        if let Some(h) = r.rounds {
            out.push_str(&format!(
                "  heartbeat: {} rounds, {} server CPU per round\n",
                num(Some(h)),
                dur_us(r.server_cpu_us_per_round)
            ));
        }
    }
    out
}

fn kib(v: Option<u64>) -> String {
    v.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// Medians over the rounds of one (scenario, target, runtime asked for, codec).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Scenario.
    pub scenario: String,
    /// Target implementation.
    pub target: String,
    /// The runtime backend its rounds ran on, as the server reported it (`glommio`,
    /// `tokio`; `glommio+tokio` if rounds asked for `auto` got different backends;
    /// `None` when the server does not say).
    pub runtime: Option<String>,
    /// Codec.
    pub codec: String,
    /// Rounds that produced a result.
    pub rounds: usize,
    /// Rounds that failed outright.
    pub failed_rounds: usize,
    /// Every round finished within its bounds with zero loss and zero errors.
    pub all_complete: bool,
    /// Median time to all-ready, ms.
    pub connect_ms: Option<f64>,
    /// Median operations per second.
    pub ops_per_s: Option<f64>,
    /// Median server CPU per operation, µs.
    pub cpu_us_per_op: Option<f64>,
    /// Median server CPU, % of one core.
    pub core_pct: Option<f64>,
    /// Median server CPU per heartbeat round, µs.
    pub cpu_us_per_round: Option<f64>,
    /// Median server RSS with the connections idle, MiB.
    pub rss_idle_mib: Option<f64>,
    /// Median server memory per idle connection (idle RSS over the empty server's),
    /// bytes: what the scale runs bound.
    pub rss_per_conn_bytes: Option<f64>,
    /// Median of the rounds' latency percentiles, µs.
    pub latency: Option<LatencySummary>,
    /// Median of the rounds' fan-out percentiles, µs.
    pub fanout: Option<LatencySummary>,
    /// Percentiles of all rounds' samples pooled (histograms merged), µs.
    pub latency_pooled: Option<LatencySummary>,
    /// Deliveries lost, summed over rounds.
    pub lost: u64,
    /// Deliveries still outstanding when a time bound ended a round, summed.
    pub unfinished: u64,
    /// Errors, summed over rounds.
    pub errors: u64,
    /// Median client (load generator) CPU, % of one core.
    pub client_core_pct: Option<f64>,
}

fn med(vals: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = vals.flatten().collect();
    median(&v)
}

fn med_latency(all: &[&LatencySummary]) -> Option<LatencySummary> {
    if all.is_empty() {
        return None;
    }
    let m = |f: fn(&LatencySummary) -> f64| {
        median(&all.iter().map(|l| f(l)).collect::<Vec<_>>()).unwrap_or(0.0)
    };
    Some(LatencySummary {
        count: all.iter().map(|l| l.count).sum(),
        mean_us: m(|l| l.mean_us),
        p50_us: m(|l| l.p50_us),
        p90_us: m(|l| l.p90_us),
        p99_us: m(|l| l.p99_us),
        p999_us: m(|l| l.p999_us),
        max_us: m(|l| l.max_us),
    })
}

/// Summarises the rounds of one group.
pub fn summarize(runs: &[&RunResult], failed_rounds: usize) -> Option<Summary> {
    let first = runs.first()?;
    let mut pooled = Latency::new();
    for r in runs {
        if let Some(h) = &r.latency_hist {
            pooled.merge(h);
        }
    }
    let lats: Vec<&LatencySummary> = runs.iter().filter_map(|r| r.latency.as_ref()).collect();
    let fans: Vec<&LatencySummary> = runs.iter().filter_map(|r| r.fanout.as_ref()).collect();
    let mut runtimes: Vec<&str> = Vec::new();
    for rt in runs.iter().filter_map(|r| r.runtime.as_deref()) {
        if !runtimes.contains(&rt) {
            runtimes.push(rt);
        }
    }
    Some(Summary {
        scenario: first.scenario.clone(),
        target: first.target.clone(),
        runtime: (!runtimes.is_empty()).then(|| runtimes.join("+")),
        codec: first.codec.clone(),
        rounds: runs.len(),
        failed_rounds,
        all_complete: failed_rounds == 0
            && runs
                .iter()
                .all(|r| r.complete && r.errors == 0 && r.loss.is_none_or(|l| l.lost == 0)),
        connect_ms: med(runs.iter().map(|r| Some(r.connect_s * 1e3))),
        ops_per_s: med(runs.iter().map(|r| Some(r.ops_per_s))),
        cpu_us_per_op: med(runs.iter().map(|r| r.server_cpu_us_per_op)),
        core_pct: med(runs.iter().map(|r| r.server_core_pct)),
        cpu_us_per_round: med(runs.iter().map(|r| r.server_cpu_us_per_round)),
        rss_idle_mib: med(runs
            .iter()
            .map(|r| r.rss_idle_kib.map(|k| k as f64 / 1024.0))),
        rss_per_conn_bytes: med(runs.iter().map(|r| r.rss_per_connection_bytes)),
        latency: med_latency(&lats),
        fanout: med_latency(&fans),
        latency_pooled: pooled.summary(),
        lost: runs.iter().map(|r| r.loss.map_or(0, |l| l.lost)).sum(),
        unfinished: runs
            .iter()
            .map(|r| r.loss.map_or(0, |l| l.unfinished))
            .sum(),
        errors: runs.iter().map(|r| r.errors).sum(),
        client_core_pct: med(runs.iter().map(|r| r.client_core_pct)),
    })
}

/// Headers of [`summary_row`].
pub const SUMMARY_HEADERS: [&str; 14] = [
    "scenario",
    "target",
    "rounds",
    "ready",
    "ops/s",
    "srv CPU/op",
    "srv core",
    "CPU/round",
    "RSS idle",
    "p50",
    "p99",
    "fan-out p99",
    "lost",
    "ok",
];

/// One summary as a table row.
pub fn summary_row(s: &Summary) -> Vec<String> {
    vec![
        s.scenario.clone(),
        format!(
            "{}/{}",
            server_label(&s.target, s.runtime.as_deref()),
            s.codec
        ),
        s.rounds.to_string(),
        s.connect_ms.map_or("-".into(), |ms| dur_us(Some(ms * 1e3))),
        num(s.ops_per_s),
        dur_us(s.cpu_us_per_op),
        s.core_pct
            .map_or("-".into(), |p| format!("{}%", num(Some(p)))),
        dur_us(s.cpu_us_per_round),
        s.rss_idle_mib
            .map_or("-".into(), |m| format!("{} MiB", num(Some(m)))),
        dur_us(s.latency.map(|l| l.p50_us)),
        dur_us(s.latency.map(|l| l.p99_us)),
        dur_us(s.fanout.map(|l| l.p99_us)),
        if s.unfinished > 0 {
            format!("{} (+{} open)", s.lost, num(Some(s.unfinished as f64)))
        } else {
            s.lost.to_string()
        },
        if s.all_complete {
            "yes".into()
        } else {
            "NO".into()
        },
    ]
}

/// conduit against netconduit on one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// Scenario.
    pub scenario: String,
    /// Our codec compared (`native` or `v1`).
    pub codec: String,
    /// The runtime backend ours ran on.
    pub runtime: Option<String>,
    /// Our median ops/s ÷ netconduit's.
    pub throughput_ratio: Option<f64>,
    /// netconduit's median server CPU per op ÷ ours (how many times less CPU we use).
    pub cpu_per_op_ratio: Option<f64>,
    /// netconduit's median p99 latency ÷ ours.
    pub p99_ratio: Option<f64>,
    /// netconduit's median time to all-ready ÷ ours.
    pub connect_ratio: Option<f64>,
    /// netconduit's median idle RSS ÷ ours.
    pub rss_ratio: Option<f64>,
    /// netconduit's median server core % ÷ ours.
    pub core_ratio: Option<f64>,
}

/// `a ÷ b`, when both are known, `b` is positive and `a` finite.
pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => Some(a / b),
        _ => None,
    }
}

/// Ratios of `ours` to `theirs` (same scenario).
pub fn compare(ours: &Summary, theirs: &Summary) -> Comparison {
    Comparison {
        scenario: ours.scenario.clone(),
        codec: ours.codec.clone(),
        runtime: ours.runtime.clone(),
        // Heartbeat "ops" are pings, paced by each server's own timer: no throughput.
        throughput_ratio: ratio(ours.ops_per_s, theirs.ops_per_s)
            .filter(|_| !ours.scenario.starts_with("heartbeat")),
        cpu_per_op_ratio: ratio(theirs.cpu_us_per_op, ours.cpu_us_per_op),
        p99_ratio: ratio(
            theirs.latency.map(|l| l.p99_us),
            ours.latency.map(|l| l.p99_us),
        ),
        connect_ratio: ratio(theirs.connect_ms, ours.connect_ms),
        rss_ratio: ratio(theirs.rss_idle_mib, ours.rss_idle_mib),
        core_ratio: ratio(theirs.core_pct, ours.core_pct),
    }
}

/// Headers of [`comparison_row`].
pub const COMPARISON_HEADERS: [&str; 7] = [
    "scenario",
    "ours",
    "ops/s ×",
    "CPU/op ÷",
    "p99 ÷",
    "ready ÷",
    "core ÷",
];

/// One comparison as a table row (×: ours is that many times higher; ÷: ours is that
/// many times lower).
pub fn comparison_row(c: &Comparison) -> Vec<String> {
    let x = |v: Option<f64>| v.map_or("-".into(), |v| format!("{}×", num(Some(v))));
    vec![
        c.scenario.clone(),
        format!(
            "{}/{}",
            server_label("conduit", c.runtime.as_deref()),
            c.codec
        ),
        x(c.throughput_ratio),
        x(c.cpu_per_op_ratio),
        x(c.p99_ratio),
        x(c.connect_ratio),
        x(c.core_ratio),
    ]
}

/// The machine the suite ran on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// CPUs this process may use.
    pub cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// /proc/loadavg when the suite started.
    pub loadavg_before: String,
    /// /proc/loadavg when it ended.
    pub loadavg_after: String,
    /// CPU the servers were pinned to.
    pub server_cpu: Option<usize>,
    /// CPU the load generator was pinned to.
    pub loadgen_cpu: Option<usize>,
    /// The runtime backend the load generator ran on (`auto`'s choice, whatever the
    /// server's).
    pub loadgen_runtime: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns() {
        let t = table(
            &["a", "bb"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "a    bb");
        assert_eq!(lines[1], "---  --");
        assert_eq!(lines[2], "xyz   1");
        assert_eq!(lines[3], "q    22");
    }

    #[test]
    fn numbers() {
        assert_eq!(num(None), "-");
        assert_eq!(num(Some(f64::NAN)), "-");
        assert_eq!(num(Some(2_500_000.0)), "2.50M");
        assert_eq!(num(Some(12_345.0)), "12k");
        assert_eq!(num(Some(0.0912)), "0.091");
        assert_eq!(dur_us(Some(6400.0)), "6.40 ms");
        assert_eq!(dur_us(Some(12.0)), "12.0 µs");
    }
}
