//! The cluster scenario's summary: medians per setup, ratios, and the table it prints.

#[allow(
    unused_imports,
    reason = "the scenario's types and helpers, as in its module"
)]
use super::*;

/// One run in a line, for the log on stderr.
pub(super) fn one_line(r: &SpreadResult) -> String {
    let lat = |i: usize| {
        r.nodes
            .get(i)
            .and_then(|n| n.latency)
            .map_or("-".into(), |l| {
                format!("{} / {}", dur_us(Some(l.p50_us)), dur_us(Some(l.p99_us)))
            })
    };
    let cpu = r
        .nodes
        .iter()
        .map(|n| dur_us(n.cpu_us_per_delivery))
        .collect::<Vec<_>>()
        .join(" / ");
    format!(
        "{} messages; p50 / p99 local {}, remote {}; CPU per delivery {cpu}; broker {} per message; lost {}{}",
        r.run.messages,
        lat(0),
        lat(1),
        dur_us(r.broker_cpu_us_per_message),
        r.run.loss.map_or(0, |l| l.lost),
        if r.run.complete { "" } else { ", INCOMPLETE" },
    )
}

/// Medians over the runs of `setup`.
pub fn summarize(setup: &str, runs: &[ClusterRun], failures: &[ClusterFailure]) -> SetupSummary {
    let group: Vec<&SpreadResult> = runs
        .iter()
        .filter(|r| r.setup == setup)
        .map(|r| &r.result)
        .collect();
    let med = |f: &dyn Fn(&SpreadResult) -> Option<f64>| {
        let v: Vec<f64> = group.iter().filter_map(|r| f(r)).collect();
        median(&v)
    };
    SetupSummary {
        setup: setup.into(),
        runs: group.len(),
        failed: failures.iter().filter(|f| f.setup == setup).count(),
        incomplete: group.iter().filter(|r| !r.run.complete).count(),
        lost: group
            .iter()
            .filter_map(|r| r.run.loss)
            .map(|l| l.lost)
            .sum(),
        errors: group.iter().map(|r| r.run.errors).sum(),
        messages: med(&|r| Some(r.run.messages as f64)),
        local_p50_us: med(&|r| r.nodes.first()?.latency.map(|l| l.p50_us)),
        local_p99_us: med(&|r| r.nodes.first()?.latency.map(|l| l.p99_us)),
        remote_p50_us: med(&|r| r.nodes.get(1)?.latency.map(|l| l.p50_us)),
        remote_p99_us: med(&|r| r.nodes.get(1)?.latency.map(|l| l.p99_us)),
        fanout_p99_us: med(&|r| r.run.fanout.map(|f| f.p99_us)),
        node1_cpu_us_per_delivery: med(&|r| r.nodes.first()?.cpu_us_per_delivery),
        node2_cpu_us_per_delivery: med(&|r| r.nodes.get(1)?.cpu_us_per_delivery),
        node1_cpu_us_per_message: med(&|r| r.nodes.first()?.cpu_us_per_message),
        node2_cpu_us_per_message: med(&|r| r.nodes.get(1)?.cpu_us_per_message),
        nodes_cpu_us_per_message: med(&|r| {
            r.nodes
                .iter()
                .map(|n| n.cpu_us_per_message)
                .sum::<Option<f64>>()
        }),
        node1_shard_us_per_message: med(&|r| per_message(r, r.nodes.first()?.shard_cpu_s())),
        node1_service_us_per_message: med(&|r| per_message(r, r.nodes.first()?.service_cpu_s())),
        node2_shard_us_per_message: med(&|r| per_message(r, r.nodes.get(1)?.shard_cpu_s())),
        node2_service_us_per_message: med(&|r| per_message(r, r.nodes.get(1)?.service_cpu_s())),
        broker_cpu_us_per_message: med(&|r| r.broker_cpu_us_per_message),
        broker_cpu_stat_us_per_message: med(&|r| per_message(r, r.broker_cpu_stat_s)),
        client_core_pct: med(&|r| r.run.client_core_pct),
    }
}

/// `seconds` per message of `r`, in microseconds.
fn per_message(r: &SpreadResult, seconds: Option<f64>) -> Option<f64> {
    let messages = r.run.messages;
    seconds
        .filter(|_| messages > 0)
        .map(|s| s * 1e6 / messages as f64)
}

/// Headers of the CPU-by-thread table.
pub const THREAD_HEADERS: [&str; 6] = [
    "setup",
    "node 1 shard",
    "node 1 service",
    "node 2 shard",
    "node 2 service",
    "broker",
];

pub(super) fn thread_row(s: &SetupSummary) -> Vec<String> {
    vec![
        setup_label(&s.setup).into(),
        dur_us(s.node1_shard_us_per_message),
        dur_us(s.node1_service_us_per_message),
        dur_us(s.node2_shard_us_per_message),
        dur_us(s.node2_service_us_per_message),
        dur_us(s.broker_cpu_us_per_message),
    ]
}

fn setup_label(key: &str) -> &'static str {
    match key {
        "redis" => Setup::Cluster(BrokerKind::Redis).label(),
        "nats" => Setup::Cluster(BrokerKind::Nats).label(),
        _ => Setup::Single.label(),
    }
}

/// Headers of the medians table.
pub const CLUSTER_HEADERS: [&str; 12] = [
    "setup",
    "local p50",
    "local p99",
    "remote p50",
    "remote p99",
    "fan-out p99",
    "node 1 CPU/deliv",
    "node 2 CPU/deliv",
    "node 1 CPU/msg",
    "node 2 CPU/msg",
    "broker CPU/msg",
    "lost",
];

pub(super) fn summary_row(s: &SetupSummary) -> Vec<String> {
    vec![
        setup_label(&s.setup).into(),
        dur_us(s.local_p50_us),
        dur_us(s.local_p99_us),
        dur_us(s.remote_p50_us),
        dur_us(s.remote_p99_us),
        dur_us(s.fanout_p99_us),
        dur_us(s.node1_cpu_us_per_delivery),
        dur_us(s.node2_cpu_us_per_delivery),
        dur_us(s.node1_cpu_us_per_message),
        dur_us(s.node2_cpu_us_per_message),
        dur_us(s.broker_cpu_us_per_message),
        if s.failed > 0 || s.incomplete > 0 {
            format!(
                "{} ({} failed, {} cut short)",
                s.lost, s.failed, s.incomplete
            )
        } else {
            s.lost.to_string()
        },
    ]
}

/// `a ÷ b` as `1.23×`, `-` when either is missing.
pub(super) fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{}×", num(Some(a / b))),
        _ => "-".into(),
    }
}

/// The report as text: the setting, the medians, and the ratios.
pub fn render(r: &ClusterReport) -> String {
    let mut out = String::new();
    let ran: Vec<&str> = {
        let mut v: Vec<&str> = r.runs.iter().filter_map(|x| x.runtime.as_deref()).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let pins = r
        .runs
        .iter()
        .find(|x| x.node_cpus.len() == 2)
        .map(|x| x.node_cpus.clone())
        .unwrap_or_default();
    let cpu =
        |c: Option<&Option<usize>>| c.copied().flatten().map_or("any".into(), |c| c.to_string());
    out.push_str(&format!(
        "conduit-loadgen cluster: {} receivers (the 2 nodes: {} + {}), a sender on node 1, \
         up to {} messages one at a time, {} round(s), {:.0} s; {} CPUs ({}), node 1 on CPU {}, \
         node 2 on CPU {}, load generator and broker unpinned; servers on {} ({}), codec {}\n\n",
        r.connections,
        split(r.connections, 2)[0],
        split(r.connections, 2)[1],
        r.messages,
        r.rounds,
        r.wall_s,
        r.machine.cpus,
        r.machine.cpu_model,
        cpu(pins.first()),
        cpu(pins.get(1)),
        if ran.is_empty() {
            "-".to_owned()
        } else {
            ran.join(", ")
        },
        r.runtime,
        r.codec,
    ));
    out.push_str(
        "Medians over rounds (local: node 1, the sender's; remote: node 2, through the broker; \
         1 node: every receiver local):\n",
    );
    let rows: Vec<Vec<String>> = r.summaries.iter().map(summary_row).collect();
    out.push_str(&report::table(&CLUSTER_HEADERS, &rows));
    out.push_str(
        "\nCPU per message by thread (medians; shard: the connections' executor, service: \
         the broker client):\n",
    );
    let rows: Vec<Vec<String>> = r.summaries.iter().map(thread_row).collect();
    out.push_str(&report::table(&THREAD_HEADERS, &rows));
    let single = r.summaries.iter().find(|s| s.setup == "single");
    for s in r.summaries.iter().filter(|s| s.setup != "single") {
        out.push_str(&format!(
            "\n{}: remote ÷ local latency p50 {}, p99 {}; CPU per delivery node 2 ÷ node 1 {}",
            s.setup,
            ratio(s.remote_p50_us, s.local_p50_us),
            ratio(s.remote_p99_us, s.local_p99_us),
            ratio(s.node2_cpu_us_per_delivery, s.node1_cpu_us_per_delivery),
        ));
        if let Some(one) = single {
            out.push_str(&format!(
                "; vs 1 node: local p50 {}, remote p50 {}, CPU per delivery node 1 {}, node 2 {}, \
                 both nodes' CPU per message {}",
                ratio(s.local_p50_us, one.local_p50_us),
                ratio(s.remote_p50_us, one.local_p50_us),
                ratio(s.node1_cpu_us_per_delivery, one.node1_cpu_us_per_delivery),
                ratio(s.node2_cpu_us_per_delivery, one.node1_cpu_us_per_delivery),
                ratio(s.nodes_cpu_us_per_message, one.nodes_cpu_us_per_message),
            ));
        }
        out.push('\n');
    }
    for f in &r.failures {
        out.push_str(&format!(
            "FAILED round {} {}: {}\n",
            f.round, f.setup, f.error
        ));
    }
    out
}
