//! The Prometheus text format for what the `metrics` facade cannot carry cheaply: the
//! RPC latency histograms, written straight from the shards' buckets.

use std::fmt::Write as _;

use super::Stats;

/// Appends the RPC latency histograms of registered methods in Prometheus's text form.
pub(crate) fn render_latency(stats: &Stats, out: &mut String) {
    let methods: Vec<_> = stats
        .rpc
        .iter()
        .filter(|m| m.name != "listall" && m.name != "(unknown)")
        .collect();
    if methods.is_empty() {
        return;
    }
    let name = "conduit_rpc_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from an RPC request's read to its result, per registered method."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for m in methods {
        let method = escape(&m.name);
        for (le, cumulative) in m.latency.cumulative() {
            let _ = writeln!(
                out,
                "{name}_bucket{{method=\"{method}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = m.latency.sum_ns as f64 / 1e9;
        let count = m.latency.count();
        let _ = writeln!(out, "{name}_sum{{method=\"{method}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{method=\"{method}\"}} {count}");
    }
}

/// A label value as the text format writes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn histograms_are_cumulative_with_an_inf_bucket() {
        let mut stats = Stats::default();
        let mut m = crate::metrics::MethodStats {
            name: "add".into(),
            ..Default::default()
        };
        m.latency.counts[0] = 2;
        m.latency.counts[3] = 1;
        m.latency.sum_ns = 1_500_000_000;
        stats.rpc.push(m);
        let mut text = String::new();
        render_latency(&stats, &mut text);
        assert!(text.contains("# TYPE conduit_rpc_duration_seconds histogram"));
        assert!(
            text.contains("conduit_rpc_duration_seconds_bucket{method=\"add\",le=\"0.00001\"} 2")
        );
        assert!(
            text.contains("conduit_rpc_duration_seconds_bucket{method=\"add\",le=\"0.0001\"} 3")
        );
        assert!(text.contains("conduit_rpc_duration_seconds_bucket{method=\"add\",le=\"+Inf\"} 3"));
        assert!(text.contains("conduit_rpc_duration_seconds_sum{method=\"add\"} 1.5"));
        assert!(text.contains("conduit_rpc_duration_seconds_count{method=\"add\"} 3"));
    }
}
