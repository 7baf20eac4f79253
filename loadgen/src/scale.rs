//! The suite at scale (`suite --scale`): runs at 10,000 connections, spread over
//! several loopback source addresses (`sources`), that show what a crowd
//! costs the server —
//!
//! * `connect-10k`: time to log everyone in, server CPU per login, server RSS once
//!   idle, and RSS per idle connection ((idle RSS − the empty server's RSS) ÷
//!   connections);
//! * `heartbeat-10k`: the server's CPU keeping 10,000 idle connections alive at a 1 s
//!   heartbeat;
//! * the per-delivery cost sweep: `broadcast-single-N` (one message at a time) and
//!   `broadcast-saturate-N` at N = 100, 1,000 and 10,000 receivers, with server CPU
//!   per delivery for each and the ratio 10,000 ÷ 100, which stays about 1 when a
//!   delivery costs the same however many receivers share the message.
//!
//! This module holds the plans ([`plans`]), their names (`-10k`, `-1k`, `-100`) and
//! the scale table of the suite's report ([`render`]); the goal rows are in
//! `goals`.

use std::time::Duration;

use crate::plan::{parse_count_tag, Plan, Size};
use crate::report::{self, num, ratio, server_label, Summary};
use crate::scenario::{BroadcastMode, BroadcastSpec, HeartbeatSpec, Scenario, MAX_CONNECTIONS};
use crate::{Error, Result};

/// Connections of the scale runs, and the largest point of the delivery sweep.
pub const SCALE_CONNECTIONS: usize = 10_000;

/// Source addresses the scale runs deal their connections over (127.0.0.1 …
/// 127.0.0.8): 1,250 connections each at 10,000, well inside one address's
/// ephemeral ports even with the previous runs' sockets in TIME_WAIT.
pub const SCALE_SOURCES: usize = 8;

/// The smaller points of the per-delivery cost sweep (receivers); the largest is the
/// scale runs' connections. The ratio is taken against the first.
pub const SWEEP_RECEIVERS: [usize; 2] = [100, 1_000];

/// Connects in flight at once in the scale runs: enough to log 10,000 in within
/// seconds, and below the benchmark server's listen backlog (1,024), so no SYN is
/// dropped and retried a second later.
pub const SCALE_CONNECT_CONCURRENCY: usize = 512;

/// Deliveries each saturated sweep point aims at (messages = this ÷ receivers), so
/// every point measures about the same amount of work.
const SATURATE_DELIVERIES: u64 = 2_000_000;

/// The same, for `--quick`.
const SATURATE_DELIVERIES_QUICK: u64 = 200_000;

/// Messages in flight per sender in the saturated sweep: the same at every point, so
/// only the number of receivers changes (at 10,000 receivers, 32 messages in flight
/// are 320,000 queued deliveries).
const SATURATE_WINDOW: usize = 32;

/// Free window slots that trigger a top-up in the saturated sweep.
const SATURATE_BURST: usize = 16;

/// What `suite --scale` adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleOptions {
    /// Connections of the scale runs (default [`SCALE_CONNECTIONS`]); the sweep's
    /// smaller points above it are left out.
    pub connections: usize,
    /// Source addresses (default [`SCALE_SOURCES`]).
    pub sources: usize,
    /// Run the scale plans alone, without the rest of the suite.
    pub only: bool,
}

impl Default for ScaleOptions {
    fn default() -> ScaleOptions {
        ScaleOptions {
            connections: SCALE_CONNECTIONS,
            sources: SCALE_SOURCES,
            only: false,
        }
    }
}

impl ScaleOptions {
    /// Checks the bounds before any server starts.
    pub fn validate(&self) -> Result<()> {
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return Err(Error::Args(format!(
                "--scale-connections must be 1..={MAX_CONNECTIONS}, got {}",
                self.connections
            )));
        }
        let to = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        crate::sources::validate(self.sources, to)
    }
}

/// The scale options `suite`'s flags ask for: `None` without `--scale` or
/// `--scale-only`; the size flags alone are an error (they would do nothing).
pub fn from_args(
    scale: bool,
    only: bool,
    connections: Option<usize>,
    sources: Option<usize>,
) -> Result<Option<ScaleOptions>> {
    if !(scale || only) {
        if connections.is_some() || sources.is_some() {
            return Err(Error::Args(
                "--scale-connections and --sources size the scale runs: add --scale".into(),
            ));
        }
        return Ok(None);
    }
    let d = ScaleOptions::default();
    let opts = ScaleOptions {
        connections: connections.unwrap_or(d.connections),
        sources: sources.unwrap_or(d.sources),
        only,
    };
    opts.validate()?;
    Ok(Some(opts))
}

/// The receivers of the sweep's points, smallest first, up to `top`.
pub fn sweep(top: usize) -> Vec<usize> {
    let mut points: Vec<usize> = SWEEP_RECEIVERS
        .iter()
        .copied()
        .filter(|&n| n < top)
        .collect();
    points.push(top);
    points
}

/// The scale plans, in order: connect, heartbeat at 1 s, then the sweep (one at a
/// time at each point, then saturated at each point).
pub fn plans(quick: bool, scale: &ScaleOptions) -> Vec<Plan> {
    let idle = Duration::from_secs(30);
    let s = |full: u64, quick_ms: u64| {
        if quick {
            Duration::from_millis(quick_ms)
        } else {
            Duration::from_secs(full)
        }
    };
    let at = |connections: usize| {
        Some(Size {
            connections,
            sources: scale.sources,
        })
    };
    let top = scale.connections;
    let mut plans = vec![
        Plan {
            scenario: Scenario::Connect { settle: s(2, 500) },
            heartbeat: idle,
            shards: 1,
            size: at(top),
        },
        Plan {
            scenario: Scenario::Heartbeat(HeartbeatSpec {
                duration: s(5, 2500),
                client_ping: false,
            }),
            heartbeat: Duration::from_secs(1),
            shards: 1,
            size: at(top),
        },
    ];
    for receivers in sweep(top) {
        plans.push(Plan {
            scenario: Scenario::Broadcast(BroadcastSpec {
                mode: BroadcastMode::Single,
                senders: 1,
                messages: if quick { 20 } else { 200 },
                duration: s(8, 2000),
                drain: s(5, 3000),
                payload_bytes: 64,
                room_members: None,
            }),
            heartbeat: idle,
            shards: 1,
            size: at(receivers),
        });
    }
    let deliveries = if quick {
        SATURATE_DELIVERIES_QUICK
    } else {
        SATURATE_DELIVERIES
    };
    for receivers in sweep(top) {
        plans.push(Plan {
            scenario: Scenario::Broadcast(BroadcastSpec {
                mode: BroadcastMode::Saturate {
                    window: SATURATE_WINDOW,
                    burst: SATURATE_BURST,
                },
                senders: 1,
                messages: (deliveries / receivers as u64).max(SATURATE_WINDOW as u64),
                duration: s(3, 1000),
                drain: s(5, 3000),
                payload_bytes: 64,
                room_members: None,
            }),
            heartbeat: idle,
            shards: 1,
            size: at(receivers),
        });
    }
    plans
}

/// The suite's plans with the scale ones: `base` and then the scale plans, or the
/// scale plans alone (`only`), or `base` unchanged without scale options.
pub fn with_scale(base: Vec<Plan>, quick: bool, scale: Option<&ScaleOptions>) -> Vec<Plan> {
    match scale {
        None => base,
        Some(s) if s.only => plans(quick, s),
        Some(s) => base.into_iter().chain(plans(quick, s)).collect(),
    }
}

/// Headers of the sweep table in [`render`].
const SWEEP_HEADERS: [&str; 6] = [
    "per-delivery cost",
    "server",
    "receivers",
    "srv CPU/delivery",
    "deliveries/s",
    "÷ smallest",
];

/// Headers of the idle table in [`render`].
const IDLE_HEADERS: [&str; 8] = [
    "at scale",
    "server",
    "ready",
    "CPU/login",
    "RSS idle",
    "RSS/idle conn",
    "heartbeat CPU/round",
    "heartbeat at 1 s",
];

/// The sweep's points of `mode` (`single`, `saturate`) in `summaries` for one server
/// (target, runtime, codec of `like`), smallest first.
fn sweep_points<'a>(
    summaries: &'a [Summary],
    like: &Summary,
    mode: &str,
) -> Vec<(usize, &'a Summary)> {
    let prefix = format!("broadcast-{mode}-");
    let mut points: Vec<(usize, &Summary)> = summaries
        .iter()
        .filter(|s| same_server(s, like))
        .filter_map(|s| {
            let n = parse_count_tag(s.scenario.strip_prefix(&prefix)?)?;
            Some((n, s))
        })
        .collect();
    points.sort_by_key(|(n, _)| *n);
    points
}

fn same_server(a: &Summary, b: &Summary) -> bool {
    a.target == b.target && a.runtime == b.runtime && a.codec == b.codec
}

/// The scale tables of a suite's report: per server, the idle figures at scale and
/// the per-delivery cost at each sweep point with its ratio to the smallest. Empty
/// when the suite ran no scale plans.
pub fn render(summaries: &[Summary]) -> String {
    let mut servers: Vec<&Summary> = Vec::new();
    for s in summaries {
        if !servers.iter().any(|k| same_server(k, s)) {
            servers.push(s);
        }
    }
    let mut idle_rows = Vec::new();
    let mut sweep_rows = Vec::new();
    for server in servers {
        let label = format!(
            "{}/{}",
            server_label(&server.target, server.runtime.as_deref()),
            server.codec
        );
        let scaled = |base: &str| {
            summaries.iter().find(|s| {
                same_server(s, server)
                    && s.scenario
                        .strip_prefix(base)
                        .and_then(|t| t.strip_prefix('-'))
                        .and_then(parse_count_tag)
                        .is_some()
            })
        };
        if let Some(c) = scaled("connect") {
            let hb = scaled("heartbeat");
            idle_rows.push(vec![
                c.scenario.clone(),
                label.clone(),
                report::dur_us(c.connect_ms.map(|ms| ms * 1e3)),
                report::dur_us(c.cpu_us_per_op),
                c.rss_idle_mib
                    .map_or("-".into(), |m| format!("{} MiB", num(Some(m)))),
                c.rss_per_conn_bytes
                    .map_or("-".into(), |b| format!("{} KiB", num(Some(b / 1024.0)))),
                report::dur_us(hb.and_then(|h| h.cpu_us_per_round)),
                // One round a second, whatever interval the run used (`--quick`: 200 ms).
                hb.and_then(|h| h.cpu_us_per_round)
                    .map_or("-".into(), |us| format!("{}% core", num(Some(us / 1e4)))),
            ]);
        }
        for mode in ["single", "saturate"] {
            let points = sweep_points(summaries, server, mode);
            let smallest = points.first().and_then(|(_, s)| s.cpu_us_per_op);
            for (n, s) in &points {
                sweep_rows.push(vec![
                    format!("broadcast-{mode}"),
                    label.clone(),
                    num(Some(*n as f64)),
                    report::dur_us(s.cpu_us_per_op),
                    num(s.ops_per_s),
                    ratio(s.cpu_us_per_op, smallest)
                        .map_or("-".into(), |r| format!("{}×", num(Some(r)))),
                ]);
            }
        }
    }
    let mut out = String::new();
    if !idle_rows.is_empty() {
        out.push_str("\nAt scale (connections spread over loopback source addresses):\n");
        out.push_str(&report::table(&IDLE_HEADERS, &idle_rows));
    }
    if !sweep_rows.is_empty() {
        out.push_str("\nPer-delivery cost by receivers (flat: ÷ smallest stays near 1):\n");
        out.push_str(&report::table(&SWEEP_HEADERS, &sweep_rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::count_tag;

    #[test]
    fn tags_round_trip() {
        for n in [100, 300, 1000, 2500, 10_000, 20_000] {
            assert_eq!(parse_count_tag(&count_tag(n)), Some(n), "{n}");
        }
        assert_eq!(count_tag(10_000), "10k");
        assert_eq!(count_tag(100), "100");
        assert_eq!(parse_count_tag("2sh"), None);
        assert_eq!(parse_count_tag("k"), None);
        assert_eq!(parse_count_tag(""), None);
        assert_eq!(parse_count_tag("99999999999999999999k"), None);
    }

    #[test]
    fn the_sweep_stops_at_the_top() {
        assert_eq!(sweep(10_000), [100, 1000, 10_000]);
        assert_eq!(sweep(1000), [100, 1000]);
        assert_eq!(sweep(300), [100, 300]);
        assert_eq!(sweep(50), [50]);
    }

    #[test]
    fn plans_are_named_by_size() {
        let names: Vec<String> = plans(false, &ScaleOptions::default())
            .iter()
            .map(Plan::name)
            .collect();
        assert_eq!(
            names,
            [
                "connect-10k",
                "heartbeat-10k",
                "broadcast-single-100",
                "broadcast-single-1k",
                "broadcast-single-10k",
                "broadcast-saturate-100",
                "broadcast-saturate-1k",
                "broadcast-saturate-10k",
            ]
        );
        let base = crate::plan::plans(true);
        let n = base.len();
        let scale = ScaleOptions::default();
        assert_eq!(with_scale(base.clone(), true, None).len(), n);
        assert_eq!(with_scale(base.clone(), true, Some(&scale)).len(), n + 8);
        let only = ScaleOptions {
            only: true,
            ..scale
        };
        assert_eq!(with_scale(base, true, Some(&only)).len(), 8);
    }

    #[test]
    fn every_scale_plan_is_within_bounds() {
        for quick in [false, true] {
            for p in plans(quick, &ScaleOptions::default()) {
                let size = p.size.unwrap();
                let spec = crate::scenario::RunSpec {
                    connect: crate::wire::ConnectSpec {
                        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
                        transport: crate::wire::Transport::Tcp,
                        tls: None,
                        codec: conduit_protocol::Codec::Native,
                        password: "x".into(),
                        attempts: 1,
                        connect_timeout: Duration::from_secs(1),
                    },
                    connections: size.connections,
                    sources: size.sources,
                    connect_concurrency: SCALE_CONNECT_CONCURRENCY,
                    connect_deadline: Duration::from_secs(60),
                    server_pid: None,
                    label: String::new(),
                    progress: false,
                    scenario: p.scenario,
                };
                assert!(crate::scenario::validate(&spec).is_ok(), "{spec:?}");
            }
        }
    }

    #[test]
    fn options_are_checked() {
        assert!(ScaleOptions::default().validate().is_ok());
        let bad = ScaleOptions {
            connections: MAX_CONNECTIONS + 1,
            ..ScaleOptions::default()
        };
        assert!(bad.validate().is_err());
        let bad = ScaleOptions {
            sources: 0,
            ..ScaleOptions::default()
        };
        assert!(bad.validate().is_err());
        assert_eq!(from_args(false, false, None, None).unwrap(), None);
        assert!(from_args(false, false, Some(300), None).is_err());
        let only = from_args(false, true, Some(300), Some(3)).unwrap().unwrap();
        assert_eq!((only.connections, only.sources, only.only), (300, 3, true));
        assert!(from_args(true, false, Some(0), None).is_err());
    }
}
