//! The suite's plans: each scenario with the server settings it runs against (heartbeat
//! interval, shards, and for the runs at scale their size), their names in reports,
//! and the suite's shared bounds. Shared by the suite, its runs at scale and its
//! comparison peers, so none of them needs another's module.

use std::time::Duration;

use crate::scenario::{BroadcastMode, BroadcastSpec, HeartbeatSpec, RpcSpec, Scenario};

/// Most rounds a suite runs.
pub const MAX_ROUNDS: usize = 20;

/// Connects in flight at once (below netconduit's listen backlog of 100).
pub const SUITE_CONNECT_CONCURRENCY: usize = 90;

/// Bound on each run's connect phase.
pub const SUITE_CONNECT_DEADLINE: Duration = Duration::from_secs(60);

/// One scenario of the suite and the server settings it needs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The scenario.
    pub scenario: Scenario,
    /// The server's heartbeat interval for it.
    pub heartbeat: Duration,
    /// The server's shards: 1, or 2 for the variants that measure the cross-shard bus
    /// (connections spread over both, broadcasts from a connection on one).
    pub shards: usize,
    /// A scale run's own connections and source addresses (`None`: the suite's
    /// connections, from one address).
    pub size: Option<Size>,
}

impl Plan {
    /// The scenario's name in reports: `broadcast-saturate`, `broadcast-saturate-2sh`
    /// for the 2-shard variant, `broadcast-saturate-10k` for a scale run.
    pub fn name(&self) -> String {
        let name = match self.shards {
            1 => self.scenario.name(),
            n => format!("{}-{n}sh", self.scenario.name()),
        };
        match self.size {
            Some(size) => format!("{name}-{}", count_tag(size.connections)),
            None => name,
        }
    }
}

/// The scenarios the suite runs, in order.
pub fn plans(quick: bool) -> Vec<Plan> {
    let idle = Duration::from_secs(30);
    let s = |full: u64, quick_ms: u64| {
        if quick {
            Duration::from_millis(quick_ms)
        } else {
            Duration::from_secs(full)
        }
    };
    let n = |full: u64, small: u64| if quick { small } else { full };
    let mut plans = vec![
        Plan {
            scenario: Scenario::Connect { settle: s(1, 100) },
            heartbeat: idle,
            shards: 1,
            size: None,
        },
        Plan {
            scenario: Scenario::Heartbeat(HeartbeatSpec {
                duration: s(5, 2500),
                client_ping: false,
            }),
            heartbeat: Duration::from_secs(1),
            shards: 1,
            size: None,
        },
        Plan {
            scenario: Scenario::Heartbeat(HeartbeatSpec {
                duration: s(5, 2500),
                client_ping: true,
            }),
            heartbeat: Duration::from_secs(1),
            shards: 1,
            size: None,
        },
        Plan {
            scenario: Scenario::Broadcast(BroadcastSpec {
                mode: BroadcastMode::Single,
                senders: 1,
                messages: n(200, 20),
                duration: s(8, 2000),
                drain: s(5, 2000),
                payload_bytes: 64,
                room_members: None,
            }),
            heartbeat: idle,
            shards: 1,
            size: None,
        },
        Plan {
            scenario: Scenario::Broadcast(BroadcastSpec {
                mode: BroadcastMode::Rate { hz: 30.0 },
                senders: 1,
                messages: n(150, 15),
                duration: s(6, 1000),
                drain: s(5, 2000),
                payload_bytes: 64,
                room_members: None,
            }),
            heartbeat: idle,
            shards: 1,
            size: None,
        },
        Plan {
            scenario: Scenario::Broadcast(BroadcastSpec {
                mode: BroadcastMode::Saturate {
                    window: 128,
                    burst: 64,
                },
                senders: 1,
                messages: n(20_000, 200),
                duration: s(3, 1000),
                drain: s(5, 3000),
                payload_bytes: 64,
                room_members: None,
            }),
            heartbeat: idle,
            shards: 1,
            size: None,
        },
        Plan {
            scenario: Scenario::Rpc(RpcSpec {
                depth: 1,
                calls: n(1_000_000, 2000),
                duration: s(3, 1000),
            }),
            heartbeat: idle,
            shards: 1,
            size: None,
        },
    ];
    // Every broadcast scenario again on 2 shards, with the default `.await` (what the
    // chat example uses): the cross-shard bus at full speed.
    let two: Vec<Plan> = plans
        .iter()
        .filter(|p| matches!(p.scenario, Scenario::Broadcast(_)))
        .map(|p| Plan {
            shards: 2,
            ..p.clone()
        })
        .collect();
    plans.extend(two);
    plans
}

/// The size of one scale run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    /// Connections (broadcast: receivers).
    pub connections: usize,
    /// Loopback source addresses they are dealt over.
    pub sources: usize,
}

/// `10k`, `1k`, `100`, `300`, `2500`: a connection count as it appears in a plan's
/// name.
pub fn count_tag(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// The count a [`count_tag`] names; `None` for anything else (`2sh`).
pub fn parse_count_tag(tag: &str) -> Option<usize> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match tag.strip_suffix('k') {
        Some(k) if digits(k) => k.parse::<usize>().ok()?.checked_mul(1000),
        None if digits(tag) => tag.parse().ok(),
        _ => None,
    }
}
