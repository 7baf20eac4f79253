//! A one-at-a-time broadcast whose receivers are spread over several servers — the
//! nodes of a cluster. The sender is on the first node; each node's receivers are
//! counted apart, so a delivery on the sender's node ("local") and one on another node
//! ("remote", through the cluster's broker) can be told apart: latency per node, CPU
//! per node, and the CPU of the broker the nodes share.
//!
//! The broadcast itself is the `broadcast --mode single` run (`drive`, `finish`):
//! message k+1 leaves when every receiver, on every node, has message k.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use conduit::__rt::{spawn_task, Task};
use serde::Serialize;

use super::super::{connect, on_executor, validate, RunResult, RunSpec, Scenario};
use super::fan::Fan;
use super::{drive, finish, read_ticks, BroadcastMode, BroadcastSpec};
use crate::payload::{self, Tick};
use crate::procfs::{self, CpuMark, Proc};
use crate::stats::{Latency, LatencySummary};
use crate::wire::{Conn, ConnectSpec};
use crate::{Error, Result};

/// Most servers one spread broadcast connects to.
pub const MAX_SPREAD_NODES: usize = 16;

/// The names of a conduit server's shard threads start with this.
pub const SHARD_THREAD_PREFIX: &str = "conduit-shard";

/// The name of a conduit server's service thread (where a cluster adapter's broker
/// client runs).
pub const SERVICE_THREAD: &str = "conduit-service";

/// One server of a spread broadcast.
#[derive(Clone, Debug)]
pub struct SpreadNode {
    /// Where it listens (loopback).
    pub addr: SocketAddr,
    /// Its pid, to read its CPU time.
    pub pid: Option<u32>,
    /// Receivers connected to it (the first node also gets the sender, on top).
    pub receivers: usize,
}

/// A one-at-a-time broadcast over receivers spread on several servers.
#[derive(Clone, Debug)]
pub struct SpreadSpec {
    /// The servers, in node order; the sender connects to the first.
    pub nodes: Vec<SpreadNode>,
    /// How every connection logs in (its address is each node's).
    pub connect: ConnectSpec,
    /// Connects in flight at once, per node.
    pub connect_concurrency: usize,
    /// Bound on each node's connect phase.
    pub connect_deadline: Duration,
    /// The pid of the broker the nodes share, to read its CPU time.
    pub broker_pid: Option<u32>,
    /// Messages, at most.
    pub messages: u64,
    /// Sending stops after this long, whatever the count.
    pub duration: Duration,
    /// How long one message may take to reach every receiver.
    pub drain: Duration,
    /// Size of the netconduit-v1 `tick` payload, bytes.
    pub payload_bytes: usize,
    /// Shown on the progress line.
    pub label: String,
    /// Draw a live progress line on stderr (only when it is a terminal).
    pub progress: bool,
}

impl SpreadSpec {
    /// The broadcast every spread run makes: one sender, one message at a time.
    fn broadcast(&self) -> BroadcastSpec {
        BroadcastSpec {
            mode: BroadcastMode::Single,
            senders: 1,
            messages: self.messages,
            duration: self.duration,
            drain: self.drain,
            payload_bytes: self.payload_bytes,
            room_members: None,
        }
    }

    /// Receivers over every node.
    pub fn receivers(&self) -> usize {
        self.nodes.iter().map(|n| n.receivers).sum()
    }

    /// The connect phase of node `i` (the sender's connection included on the first).
    fn node_spec(&self, i: usize) -> RunSpec {
        let node = &self.nodes[i];
        RunSpec {
            connect: ConnectSpec {
                addr: node.addr,
                ..self.connect.clone()
            },
            connections: node.receivers + usize::from(i == 0),
            sources: 1,
            connect_concurrency: self.connect_concurrency,
            connect_deadline: self.connect_deadline,
            server_pid: node.pid,
            label: format!("{} node {}", self.label, i + 1),
            progress: self.progress,
            scenario: Scenario::Connect {
                settle: Duration::ZERO,
            },
        }
    }

    /// Checks the bounds before anything connects.
    pub fn validate(&self) -> Result<()> {
        if self.nodes.is_empty() || self.nodes.len() > MAX_SPREAD_NODES {
            return Err(Error::Args(format!(
                "a spread broadcast needs 1..={MAX_SPREAD_NODES} servers, got {}",
                self.nodes.len()
            )));
        }
        let receivers = self.receivers();
        if receivers == 0 {
            return Err(Error::Args("a spread broadcast needs receivers".into()));
        }
        for i in 0..self.nodes.len() {
            let s = self.node_spec(i);
            if s.connections > 0 {
                validate(&s)?;
            }
        }
        self.broadcast().validate(receivers)
    }
}

/// What one node of a spread broadcast measured.
#[derive(Clone, Debug, Serialize)]
pub struct NodeFigures {
    /// Receivers on it.
    pub receivers: usize,
    /// Ticks they got.
    pub deliveries: u64,
    /// Their delivery latency: from the send to the receipt.
    pub latency: Option<LatencySummary>,
    /// Time to log in its connections, seconds.
    pub connect_s: f64,
    /// The server's CPU time over the measured phase, seconds (`/proc` schedstat).
    pub cpu_s: Option<f64>,
    /// The same from utime + stime of `/proc/<pid>/stat` (clock ticks), seconds.
    pub cpu_stat_s: Option<f64>,
    /// `cpu_s` per delivery on this node, microseconds.
    pub cpu_us_per_delivery: Option<f64>,
    /// `cpu_s` per message sent, microseconds.
    pub cpu_us_per_message: Option<f64>,
    /// The server's CPU time over the measured phase by thread name, seconds (`/proc`
    /// schedstat of each thread; threads of one name summed).
    pub cpu_by_thread: BTreeMap<String, f64>,
    /// The latency histogram, for merging rounds.
    #[serde(skip)]
    pub latency_hist: Option<Latency>,
}

impl NodeFigures {
    /// CPU seconds of the server's shard threads.
    pub fn shard_cpu_s(&self) -> Option<f64> {
        let shards = self
            .cpu_by_thread
            .iter()
            .filter(|(name, _)| name.starts_with(SHARD_THREAD_PREFIX));
        shards.fold(None, |sum, (_, s)| Some(sum.unwrap_or(0.0) + s))
    }

    /// CPU seconds of the server's service thread.
    pub fn service_cpu_s(&self) -> Option<f64> {
        self.cpu_by_thread.get(SERVICE_THREAD).copied()
    }
}

/// What a spread broadcast measured.
#[derive(Clone, Debug, Serialize)]
pub struct SpreadResult {
    /// The run as a whole, over every receiver: deliveries, delivery and fan-out
    /// latency, loss, errors, the load generator's CPU. Its server figures are empty:
    /// each server's are in `nodes`.
    pub run: RunResult,
    /// Per node, in node order.
    pub nodes: Vec<NodeFigures>,
    /// The broker's CPU time over the measured phase, seconds (`/proc` schedstat).
    pub broker_cpu_s: Option<f64>,
    /// The same from utime + stime of `/proc/<pid>/stat` (clock ticks), seconds.
    pub broker_cpu_stat_s: Option<f64>,
    /// `broker_cpu_s` per message sent, microseconds.
    pub broker_cpu_us_per_message: Option<f64>,
}

/// Runs `spec` on a fresh load-generator executor pinned to `cpu` (unpinned when
/// `None`) and waits for its result.
pub fn run_spread(spec: SpreadSpec, cpu: Option<usize>) -> Result<SpreadResult> {
    spec.validate()?;
    on_executor(
        "loadgen",
        cpu,
        move || async move { spread_here(spec).await },
    )?
}

/// CPU readings of every process a spread broadcast involves.
struct Marks {
    /// This process.
    own: CpuMark,
    /// Each node's server.
    nodes: Vec<CpuMark>,
    /// Each node's server, per thread.
    threads: Vec<Vec<(u32, String, u64)>>,
    /// The broker.
    broker: CpuMark,
}

impl Marks {
    fn take(nodes: &[Option<u32>], broker: Option<u32>) -> Marks {
        Marks {
            own: CpuMark::take(None),
            nodes: nodes.iter().map(|&pid| CpuMark::take(pid)).collect(),
            threads: nodes
                .iter()
                .map(|pid| pid.map_or_else(Vec::new, |p| procfs::thread_cpu_ns(Proc::Pid(p))))
                .collect(),
            broker: CpuMark::take(broker),
        }
    }
}

/// Deliveries and latency of one node's receivers.
#[derive(Default)]
struct NodeTally {
    deliveries: Cell<u64>,
    latency: RefCell<Latency>,
}

async fn spread_here(spec: SpreadSpec) -> Result<SpreadResult> {
    let b = spec.broadcast();
    let specs: Vec<RunSpec> = (0..spec.nodes.len()).map(|i| spec.node_spec(i)).collect();
    let mut run = RunResult::new(&specs[0]);
    run.connections = spec.receivers();
    // Log in node by node.
    let mut node_conns: Vec<Vec<Conn>> = Vec::with_capacity(specs.len());
    let mut connect_s = Vec::with_capacity(specs.len());
    for s in &specs {
        if s.connections == 0 {
            node_conns.push(Vec::new());
            connect_s.push(0.0);
            continue;
        }
        let mut phase = RunResult::new(s);
        let (conns, _) = connect::open_all(s, &mut phase).await?;
        run.errors += phase.errors;
        run.connect_s += phase.connect_s;
        connect_s.push(phase.connect_s);
        node_conns.push(conns);
    }
    let codec = spec.connect.codec;
    let pad = payload::pad_for_payload(b.payload_bytes, None);
    let probe = Tick {
        sender: 0,
        seq: 0,
        due_ns: 0,
    };
    run.frame_bytes = Some(payload::tick_frame(codec, probe, pad, None)?.len());
    let sender: Vec<Conn> = node_conns[0].drain(..1).collect();
    let fan = Rc::new(Fan::new(spec.receivers() as u32, 1));
    let tallies: Rc<Vec<NodeTally>> =
        Rc::new((0..specs.len()).map(|_| NodeTally::default()).collect());
    let mut rx_tasks: Vec<Task<()>> = Vec::with_capacity(spec.receivers());
    for (node, conns) in node_conns.into_iter().enumerate() {
        for c in conns {
            let i = rx_tasks.len();
            let (fan, tallies) = (fan.clone(), tallies.clone());
            rx_tasks.push(spawn_task(async move {
                let read = read_ticks(c, &fan, |t, now| {
                    fan.on_tick(i, t, now);
                    let tally = &tallies[node];
                    tally.deliveries.set(tally.deliveries.get() + 1);
                    tally
                        .latency
                        .borrow_mut()
                        .record_ns(now.saturating_sub(t.due_ns));
                })
                .await;
                if let Err(e) = read {
                    tracing::debug!("receiver {i} on node {}: {e}", node + 1);
                    fan.errors.set(fan.errors.get() + 1);
                }
            }));
        }
    }
    let pids: Vec<Option<u32>> = spec.nodes.iter().map(|n| n.pid).collect();
    let broker = spec.broker_pid;
    let driven = drive(&specs[0], &b, &fan, sender, codec, pad, || {
        Marks::take(&pids, broker)
    })
    .await;
    drop(rx_tasks);
    finish(
        &b,
        &fan,
        driven.sent_in_time,
        [&driven.before.own, &driven.after.own],
        driven.elapsed,
        &mut run,
    );
    let messages = run.messages;
    let per = |s: Option<f64>, n: u64| s.filter(|_| n > 0).map(|s| s * 1e6 / n as f64);
    let nodes = spec
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let (before, after) = (&driven.before.nodes[i], &driven.after.nodes[i]);
            let cpu_s = after.since(before).0;
            let deliveries = tallies[i].deliveries.get();
            let latency = tallies[i].latency.borrow().clone();
            NodeFigures {
                receivers: node.receivers,
                deliveries,
                latency: latency.summary(),
                connect_s: connect_s[i],
                cpu_s,
                cpu_stat_s: after.stat_since(before),
                cpu_us_per_delivery: per(cpu_s, deliveries),
                cpu_us_per_message: per(cpu_s, messages),
                cpu_by_thread: procfs::thread_seconds_between(
                    &driven.after.threads[i],
                    &driven.before.threads[i],
                ),
                latency_hist: Some(latency),
            }
        })
        .collect();
    let broker_cpu_s = driven.after.broker.since(&driven.before.broker).0;
    Ok(SpreadResult {
        run,
        nodes,
        broker_cpu_s,
        broker_cpu_stat_s: driven.after.broker.stat_since(&driven.before.broker),
        broker_cpu_us_per_message: per(broker_cpu_s, messages),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(receivers: &[usize]) -> SpreadSpec {
        SpreadSpec {
            nodes: receivers
                .iter()
                .enumerate()
                .map(|(i, &r)| SpreadNode {
                    addr: SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)),
                    pid: None,
                    receivers: r,
                })
                .collect(),
            connect: ConnectSpec {
                addr: SocketAddr::from(([127, 0, 0, 1], 1)),
                transport: crate::wire::Transport::Tcp,
                tls: None,
                codec: conduit_protocol::Codec::Native,
                password: "pw".into(),
                attempts: 1,
                connect_timeout: Duration::from_secs(1),
            },
            connect_concurrency: 10,
            connect_deadline: Duration::from_secs(10),
            broker_pid: None,
            messages: 10,
            duration: Duration::from_secs(1),
            drain: Duration::from_secs(1),
            payload_bytes: 64,
            label: "t".into(),
            progress: false,
        }
    }

    #[test]
    fn bounds_are_enforced() {
        assert!(spec(&[500, 500]).validate().is_ok());
        assert!(spec(&[1000]).validate().is_ok());
        // A node without receivers is fine, as long as someone receives.
        assert!(spec(&[0, 10]).validate().is_ok());
        assert!(spec(&[0, 0]).validate().is_err());
        assert!(spec(&[]).validate().is_err());
        assert!(spec(&[1; MAX_SPREAD_NODES + 1]).validate().is_err());
        let mut s = spec(&[10, 10]);
        s.nodes[1].addr = SocketAddr::from(([192, 0, 2, 1], 80));
        assert!(matches!(s.validate(), Err(Error::Args(m)) if m.contains("loopback")));
        let mut s = spec(&[10, 10]);
        s.messages = 0;
        assert!(s.validate().is_err());
        // The sender is on the first node, on top of its receivers.
        let s = spec(&[3, 4]);
        assert_eq!(s.node_spec(0).connections, 4);
        assert_eq!(s.node_spec(1).connections, 4);
        assert_eq!(s.node_spec(1).connect.addr.port(), 9001);
        assert_eq!(s.receivers(), 7);
    }
}
