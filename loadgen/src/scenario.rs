//! The scenarios. Each runs on one glommio executor (pinned to the load generator's
//! core), one task per connection, and is bounded in count and in time: when a bound
//! is hit the remaining tasks are cancelled and the result says it did not complete.
//!
//! Every scenario opens and authenticates its connections first (bounded concurrency,
//! retries for servers with small listen backlogs), then measures one phase. The
//! server's CPU time is read from `/proc/<pid>` right before and right after that
//! phase.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use conduit_protocol::{Codec, FrameKind};
use futures_lite::FutureExt;
use glommio::timer::sleep;
use glommio::{spawn_local, LocalExecutorBuilder, Placement, Task};
use serde::Serialize;

use crate::procfs::{self, CpuMark, Proc};
use crate::stats::{Latency, LatencySummary, LossReport, ReceiverLoss, Schedule};
use crate::wire::{self, Conn, ConnectSpec, Tick};
use crate::{Error, Result};

/// Most connections one run may open (file descriptors and local ports are finite).
pub const MAX_CONNECTIONS: usize = 20_000;

/// Most connects in flight at once.
pub const MAX_CONNECT_CONCURRENCY: usize = 4096;

/// Most broadcast senders.
pub const MAX_SENDERS: usize = 64;

/// Most messages one broadcast run sends, per sender.
pub const MAX_MESSAGES: u64 = 10_000_000;

/// Longest measured phase of any run.
pub const MAX_DURATION: Duration = Duration::from_secs(600);

/// Largest broadcast payload, bytes.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Largest saturation window (messages in flight per sender).
pub const MAX_WINDOW: usize = 4096;

/// Deepest RPC pipeline per connection.
pub const MAX_RPC_DEPTH: usize = 1024;

/// Highest fixed send rate, messages per second per sender.
pub const MAX_RATE_HZ: f64 = 100_000.0;

/// Slots of the in-flight broadcast table (per message: receivers that got it). A
/// slot is reused after this many messages, so more may never be in flight at once.
pub const RING_SLOTS: usize = 1 << 16;

/// How often the live progress line is redrawn.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// The load generator's executor: scheduler time slice.
const PREEMPT: Duration = Duration::from_millis(10);

/// The load generator's executor: DMA buffer memory (no file I/O, so the minimum).
const IO_MEMORY_BYTES: usize = 64 * 1024;

/// The load generator's executor: io_uring submission queue depth, sized for
/// thousands of sockets waiting at once.
const RING_DEPTH: usize = 1024;

/// One scenario run: connections, bounds and what to measure.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// How each connection connects and logs in.
    pub connect: ConnectSpec,
    /// Connections to open (broadcast: receivers; senders come on top).
    pub connections: usize,
    /// Connects in flight at once.
    pub connect_concurrency: usize,
    /// Bound on the whole connect phase.
    pub connect_deadline: Duration,
    /// Pid of the server, to read its CPU time and RSS.
    pub server_pid: Option<u32>,
    /// Shown on the progress line.
    pub label: String,
    /// Draw a live progress line on stderr (only when it is a terminal).
    pub progress: bool,
    /// What to run once connected.
    pub scenario: Scenario,
}

/// The scenarios.
#[derive(Clone, Debug)]
pub enum Scenario {
    /// Open and authenticate; measure the time until all are ready, the server's CPU
    /// per connection, and its RSS once they sit idle.
    Connect {
        /// Idle time after the last login before RSS is read.
        settle: Duration,
    },
    /// Idle connections answering the server's heartbeat.
    Heartbeat(HeartbeatSpec),
    /// One or more senders, the server re-broadcasting to every receiver.
    Broadcast(BroadcastSpec),
    /// `add(a, b)` calls, `depth` in flight per connection.
    Rpc(RpcSpec),
}

impl Scenario {
    /// The scenario's name in reports.
    pub fn name(&self) -> String {
        match self {
            Scenario::Connect { .. } => "connect".into(),
            Scenario::Heartbeat(h) if h.client_ping => "heartbeat-ping".into(),
            Scenario::Heartbeat(_) => "heartbeat".into(),
            Scenario::Broadcast(b) => format!("broadcast-{}", b.mode.name()),
            Scenario::Rpc(_) => "rpc".into(),
        }
    }
}

/// The heartbeat scenario.
#[derive(Clone, Debug)]
pub struct HeartbeatSpec {
    /// Length of the measured phase.
    pub duration: Duration,
    /// Also ping the server whenever it pings us (both sides ping, as netconduit
    /// clients do) and time its PONG: the ping→pong latency.
    pub client_ping: bool,
}

/// How a broadcast sender paces itself.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BroadcastMode {
    /// One message at a time: the next leaves when every receiver has the last one.
    Single,
    /// A fixed rate per sender (latency from each message's due time).
    Rate {
        /// Messages per second per sender.
        hz: f64,
    },
    /// As fast as the server takes them, at most `window` messages in flight per
    /// sender; the sender tops the window up once at least `burst` slots are free,
    /// in one write, so the server reads (and every receiver's writer sends) about
    /// `burst` messages at a time.
    Saturate {
        /// Messages in flight per sender.
        window: usize,
        /// Free slots that trigger a top-up (1..=window).
        burst: usize,
    },
}

impl BroadcastMode {
    /// The mode's name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            BroadcastMode::Single => "single",
            BroadcastMode::Rate { .. } => "rate",
            BroadcastMode::Saturate { .. } => "saturate",
        }
    }
}

/// The broadcast scenario.
#[derive(Clone, Debug)]
pub struct BroadcastSpec {
    /// Pacing.
    pub mode: BroadcastMode,
    /// Sending connections (on top of the receivers).
    pub senders: usize,
    /// Messages per sender, at most.
    pub messages: u64,
    /// Sending stops after this long, whatever the count.
    pub duration: Duration,
    /// After sending stops, how long deliveries may take to arrive.
    pub drain: Duration,
    /// Size of the netconduit-v1 `tick` payload, bytes.
    pub payload_bytes: usize,
}

/// The RPC scenario.
#[derive(Clone, Debug)]
pub struct RpcSpec {
    /// Calls in flight per connection.
    pub depth: usize,
    /// Calls in total, at most.
    pub calls: u64,
    /// No call starts after this long.
    pub duration: Duration,
}

/// What one run measured. Fields that do not apply to a scenario are `None`.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// Scenario name (`connect`, `heartbeat`, `broadcast-single`, …).
    pub scenario: String,
    /// Target name (set by the caller: `conduit`, `netconduit`, an address).
    pub target: String,
    /// `native` or `v1`.
    pub codec: String,
    /// Connections the scenario measured (receivers for broadcasts).
    pub connections: usize,
    /// Time from the first connect to the last login, seconds.
    pub connect_s: f64,
    /// Per-connection connect + login latency.
    pub connect_latency: Option<LatencySummary>,
    /// Server RSS before the connections opened, KiB.
    pub rss_before_kib: Option<u64>,
    /// Server RSS with every connection open and idle, KiB.
    pub rss_idle_kib: Option<u64>,
    /// Length of the measured phase, seconds.
    pub elapsed_s: f64,
    /// What `ops` counts: `connections`, `pongs`, `deliveries`, `calls`.
    pub op: String,
    /// Operations completed in the measured phase.
    pub ops: u64,
    /// `ops / elapsed_s`.
    pub ops_per_s: f64,
    /// Broadcast messages sent (all senders).
    pub messages: u64,
    /// Broadcast loss accounting.
    pub loss: Option<LossReport>,
    /// Wrong answers, protocol errors and failed connections.
    pub errors: u64,
    /// Per-operation latency (delivery, ping→pong, round trip).
    pub latency: Option<LatencySummary>,
    /// Broadcast: per message, from its due time to its last receiver's arrival.
    pub fanout: Option<LatencySummary>,
    /// Server CPU time in the measured phase, seconds.
    pub server_cpu_s: Option<f64>,
    /// The same from utime + stime of `/proc/<pid>/stat` (10 ms resolution), seconds.
    pub server_cpu_stat_s: Option<f64>,
    /// Server CPU as a percentage of one core over the measured phase.
    pub server_core_pct: Option<f64>,
    /// Server CPU per operation, microseconds.
    pub server_cpu_us_per_op: Option<f64>,
    /// Heartbeat: rounds observed (pings received ÷ connections).
    pub rounds: Option<f64>,
    /// Heartbeat: server CPU per round, microseconds.
    pub server_cpu_us_per_round: Option<f64>,
    /// This process's CPU as a percentage of one core over the measured phase.
    pub client_core_pct: Option<f64>,
    /// Size of one delivered frame (header included), bytes.
    pub frame_bytes: Option<usize>,
    /// Whether the run finished inside its bounds (false: a bound cut it short).
    pub complete: bool,
    /// Anything worth knowing about this run.
    pub notes: Vec<String>,
    /// The per-operation histogram, for merging rounds.
    #[serde(skip)]
    pub latency_hist: Option<Latency>,
    /// The fan-out histogram, for merging rounds.
    #[serde(skip)]
    pub fanout_hist: Option<Latency>,
}

impl RunResult {
    fn new(spec: &RunSpec) -> RunResult {
        RunResult {
            scenario: spec.scenario.name(),
            target: String::new(),
            codec: codec_name(spec.connect.codec).into(),
            connections: spec.connections,
            connect_s: 0.0,
            connect_latency: None,
            rss_before_kib: None,
            rss_idle_kib: None,
            elapsed_s: 0.0,
            op: String::new(),
            ops: 0,
            ops_per_s: 0.0,
            messages: 0,
            loss: None,
            errors: 0,
            latency: None,
            fanout: None,
            server_cpu_s: None,
            server_cpu_stat_s: None,
            server_core_pct: None,
            server_cpu_us_per_op: None,
            rounds: None,
            server_cpu_us_per_round: None,
            client_core_pct: None,
            frame_bytes: None,
            complete: true,
            notes: Vec::new(),
            latency_hist: None,
            fanout_hist: None,
        }
    }

    /// Fills the CPU figures from two marks around a phase of `elapsed` and `ops`
    /// operations.
    fn set_cpu(&mut self, before: &CpuMark, after: &CpuMark, elapsed: Duration) {
        let (server, own) = after.since(before);
        let secs = elapsed.as_secs_f64().max(1e-9);
        self.server_cpu_s = server;
        self.server_cpu_stat_s = after.stat_since(before);
        self.server_core_pct = server.map(|s| 100.0 * s / secs);
        self.server_cpu_us_per_op = server
            .filter(|_| self.ops > 0)
            .map(|s| s * 1e6 / self.ops as f64);
        self.client_core_pct = own.map(|s| 100.0 * s / secs);
        self.elapsed_s = elapsed.as_secs_f64();
        self.ops_per_s = self.ops as f64 / secs;
    }
}

/// `native` / `v1`.
pub fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::V1 => "v1",
        Codec::Native => "native",
    }
}

/// Checks a spec against the named limits before anything runs.
pub fn validate(spec: &RunSpec) -> Result<()> {
    let bad = |m: String| Err(Error::Args(m));
    if spec.connections == 0 || spec.connections > MAX_CONNECTIONS {
        return bad(format!(
            "connections must be 1..={MAX_CONNECTIONS}, got {}",
            spec.connections
        ));
    }
    if spec.connect_concurrency == 0 || spec.connect_concurrency > MAX_CONNECT_CONCURRENCY {
        return bad(format!(
            "connect concurrency must be 1..={MAX_CONNECT_CONCURRENCY}, got {}",
            spec.connect_concurrency
        ));
    }
    if spec.connect_deadline.is_zero() || spec.connect_deadline > MAX_DURATION {
        return bad("connect deadline must be between 0 and 600 s".into());
    }
    if !spec.connect.addr.ip().is_loopback() {
        return bad(format!(
            "{} is not a loopback address: this tool only loads 127.0.0.0/8 and ::1",
            spec.connect.addr
        ));
    }
    let check_duration = |what: &str, d: Duration| {
        if d.is_zero() || d > MAX_DURATION {
            Err(Error::Args(format!(
                "{what} must be between 0 and {} s, got {d:?}",
                MAX_DURATION.as_secs()
            )))
        } else {
            Ok(())
        }
    };
    match &spec.scenario {
        Scenario::Connect { settle } => {
            if *settle > MAX_DURATION {
                return bad("settle time too long".into());
            }
        }
        Scenario::Heartbeat(h) => check_duration("heartbeat duration", h.duration)?,
        Scenario::Broadcast(b) => {
            check_duration("broadcast duration", b.duration)?;
            check_duration("drain time", b.drain)?;
            if b.senders == 0 || b.senders > MAX_SENDERS {
                return bad(format!(
                    "senders must be 1..={MAX_SENDERS}, got {}",
                    b.senders
                ));
            }
            if b.messages == 0 || b.messages > MAX_MESSAGES {
                return bad(format!(
                    "messages must be 1..={MAX_MESSAGES}, got {}",
                    b.messages
                ));
            }
            if b.payload_bytes > MAX_PAYLOAD_BYTES {
                return bad(format!(
                    "payload must be at most {MAX_PAYLOAD_BYTES} bytes, got {}",
                    b.payload_bytes
                ));
            }
            if spec.connections + b.senders > MAX_CONNECTIONS {
                return bad(format!(
                    "receivers + senders exceed {MAX_CONNECTIONS} connections"
                ));
            }
            match b.mode {
                BroadcastMode::Single if b.senders != 1 => {
                    return bad("single mode takes exactly one sender".into());
                }
                BroadcastMode::Rate { hz } if !(hz > 0.0 && hz <= MAX_RATE_HZ) => {
                    return bad(format!("rate must be in (0, {MAX_RATE_HZ}] Hz, got {hz}"));
                }
                BroadcastMode::Saturate { window, burst }
                    if window == 0
                        || window > MAX_WINDOW
                        || window * b.senders > RING_SLOTS
                        || burst == 0
                        || burst > window =>
                {
                    return bad(format!(
                        "window must be 1..={MAX_WINDOW} (and window × senders ≤ {RING_SLOTS}), \
                         burst 1..=window; got window {window}, burst {burst}"
                    ));
                }
                _ => {}
            }
        }
        Scenario::Rpc(r) => {
            check_duration("rpc duration", r.duration)?;
            if r.depth == 0 || r.depth > MAX_RPC_DEPTH {
                return bad(format!(
                    "depth must be 1..={MAX_RPC_DEPTH}, got {}",
                    r.depth
                ));
            }
            if r.calls == 0 {
                return bad("calls must be at least 1".into());
            }
        }
    }
    Ok(())
}

/// The CPU the load generator should run on: the second allowed CPU when there are
/// two or more (the server gets the first), else none (unpinned).
pub fn loadgen_cpu() -> Option<usize> {
    let cpus = conduit::descriptor::allowed_cpus();
    (cpus.len() >= 2).then(|| cpus[1])
}

/// Runs `spec` on a fresh executor pinned to `cpu` (unpinned when `None`) and waits
/// for its result.
pub fn run(spec: RunSpec, cpu: Option<usize>) -> Result<RunResult> {
    validate(&spec)?;
    let placement = cpu.map_or(Placement::Unbound, Placement::Fixed);
    let handle = LocalExecutorBuilder::new(placement)
        .name("loadgen")
        .io_memory(IO_MEMORY_BYTES)
        .ring_depth(RING_DEPTH)
        .preempt_timer(PREEMPT)
        .spawn(move || async move { run_here(spec).await })
        .map_err(|e| Error::Runtime(format!("cannot start the load generator: {e}")))?;
    handle
        .join()
        .map_err(|e| Error::Runtime(format!("load generator died: {e}")))?
}

/// Runs `spec` on the current executor.
pub async fn run_here(spec: RunSpec) -> Result<RunResult> {
    let mut result = RunResult::new(&spec);
    let pid = spec.server_pid;
    result.rss_before_kib = pid.and_then(|p| procfs::rss_kib(Proc::Pid(p)));
    let extra = match &spec.scenario {
        Scenario::Broadcast(b) => b.senders,
        _ => 0,
    };
    let total = spec.connections + extra;
    let progress = Progress::start(&spec, "logins", Some(total as u64));
    let cpu0 = CpuMark::take(pid);
    let t0 = Instant::now();
    let connected = connect_all(&spec, total, progress.counter.clone()).await;
    let connect_time = t0.elapsed();
    let cpu1 = CpuMark::take(pid);
    progress.finish();
    let (conns, connect_latency, failures) = connected?;
    result.connect_s = connect_time.as_secs_f64();
    result.connect_latency = connect_latency.summary();
    result.errors += failures;
    if conns.len() < total {
        return Err(Error::Timeout(format!(
            "{} of {total} connections logged in within {:?} ({failures} failed)",
            conns.len(),
            spec.connect_deadline
        )));
    }
    let conns = if spec.connect.codec == Codec::V1 {
        prime_all(conns, spec.connect_deadline).await?
    } else {
        conns
    };

    match spec.scenario.clone() {
        Scenario::Connect { settle } => {
            result.op = "connections".into();
            result.ops = conns.len() as u64;
            result.set_cpu(&cpu0, &cpu1, connect_time);
            sleep(settle).await;
            result.rss_idle_kib = pid.and_then(|p| procfs::rss_kib(Proc::Pid(p)));
            result.latency = result.connect_latency;
            result.latency_hist = Some(connect_latency);
        }
        Scenario::Heartbeat(h) => heartbeat(&spec, &h, conns, &mut result).await,
        Scenario::Broadcast(b) => broadcast(&spec, &b, conns, &mut result).await?,
        Scenario::Rpc(r) => rpc(&spec, &r, conns, &mut result).await,
    }
    Ok(result)
}

/// Opens `total` connections, at most `connect_concurrency` at a time; returns them,
/// their connect + login latencies and the number that failed.
async fn connect_all(
    spec: &RunSpec,
    total: usize,
    counter: Rc<Cell<u64>>,
) -> Result<(Vec<Conn>, Latency, u64)> {
    let sem = Rc::new(glommio::sync::Semaphore::new(
        spec.connect_concurrency as u64,
    ));
    let lat = Rc::new(RefCell::new(Latency::new()));
    let failures = Rc::new(Cell::new(0u64));
    let first_error: Rc<RefCell<Option<String>>> = Rc::default();
    let tasks: Vec<Task<Option<Conn>>> = (0..total)
        .map(|i| {
            let (sem, lat, failures, counter, first_error) = (
                sem.clone(),
                lat.clone(),
                failures.clone(),
                counter.clone(),
                first_error.clone(),
            );
            let cs = spec.connect.clone();
            spawn_local(async move {
                let _permit = sem.acquire_permit(1).await.ok()?;
                let start = Instant::now();
                match Conn::open(&cs, i as u64).await {
                    Ok(c) => {
                        lat.borrow_mut().record(start.elapsed());
                        counter.set(counter.get() + 1);
                        Some(c)
                    }
                    Err(e) => {
                        failures.set(failures.get() + 1);
                        first_error
                            .borrow_mut()
                            .get_or_insert_with(|| e.to_string());
                        None
                    }
                }
            })
        })
        .collect();
    let conns = Rc::new(RefCell::new(Vec::with_capacity(total)));
    let gather = {
        let conns = conns.clone();
        async move {
            for t in tasks {
                if let Some(c) = t.await {
                    conns.borrow_mut().push(c);
                }
            }
            true
        }
    };
    let finished = gather
        .or(async {
            sleep(spec.connect_deadline).await;
            false
        })
        .await;
    let conns = std::mem::take(&mut *conns.borrow_mut());
    if let Some(e) = first_error.borrow().as_ref() {
        tracing::warn!("{} connection(s) failed; first error: {e}", failures.get());
        if conns.is_empty() {
            return Err(Error::Target(format!("no connection logged in: {e}")));
        }
    }
    if !finished {
        tracing::warn!("connect phase hit its deadline");
    }
    let lat = lat.borrow().clone();
    Ok((conns, lat, failures.get()))
}

/// netconduit-v1 connections: one PING → PONG round trip each before measuring.
/// conduit holds a v1 connection's pushes after AUTH_SUCCESS until the client's first
/// frame (at most `v1_post_auth_delay`, for netconduit's client bug); a silent
/// receiver would otherwise see its first broadcasts up to that hold late.
async fn prime_all(conns: Vec<Conn>, deadline: Duration) -> Result<Vec<Conn>> {
    let tasks: Vec<Task<Result<Conn>>> = conns
        .into_iter()
        .map(|mut c| {
            spawn_local(async move {
                c.send(&c.empty_frame(FrameKind::Ping)).await?;
                loop {
                    while let Some(f) = c.decoder.next_frame()? {
                        if f.header.kind == FrameKind::Pong {
                            return Ok(c);
                        }
                    }
                    c.fill().await?;
                }
            })
        })
        .collect();
    let all = async {
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await?);
        }
        Ok(out)
    };
    all.or(async {
        sleep(deadline).await;
        Err(Error::Timeout(
            "v1 connections did not answer a PING".into(),
        ))
    })
    .await
}

// ---- heartbeat ----------------------------------------------------------------------

#[derive(Default)]
struct Beat {
    pings: Cell<u64>,
    pongs: Cell<u64>,
    errors: Cell<u64>,
    rtt: RefCell<Latency>,
}

async fn heartbeat(spec: &RunSpec, h: &HeartbeatSpec, conns: Vec<Conn>, result: &mut RunResult) {
    let beat = Rc::new(Beat::default());
    let n = conns.len();
    let tasks: Vec<Task<()>> = conns
        .into_iter()
        .map(|c| {
            let beat = beat.clone();
            let client_ping = h.client_ping;
            spawn_local(async move {
                if heartbeat_conn(c, &beat, client_ping).await.is_err() {
                    beat.errors.set(beat.errors.get() + 1);
                }
            })
        })
        .collect();
    let progress = Progress::start(spec, "pings", None);
    let counter = progress.counter.clone();
    let pid = spec.server_pid;
    let cpu0 = CpuMark::take(pid);
    let t0 = Instant::now();
    beat.pings.set(0);
    let deadline = t0 + h.duration;
    while Instant::now() < deadline {
        sleep(Duration::from_millis(100).min(deadline - Instant::now())).await;
        counter.set(beat.pings.get());
    }
    let elapsed = t0.elapsed();
    let cpu1 = CpuMark::take(pid);
    progress.finish();
    drop(tasks);
    result.op = "pings".into();
    result.ops = beat.pings.get();
    result.errors += beat.errors.get();
    result.set_cpu(&cpu0, &cpu1, elapsed);
    let rounds = beat.pings.get() as f64 / n.max(1) as f64;
    result.rounds = Some(rounds);
    result.server_cpu_us_per_round = result
        .server_cpu_s
        .filter(|_| rounds > 0.0)
        .map(|s| s * 1e6 / rounds);
    let rtt = beat.rtt.borrow().clone();
    result.latency = rtt.summary();
    result.latency_hist = Some(rtt);
    if h.client_ping {
        result
            .notes
            .push("clients ping the server too (PONG+PING per server PING)".into());
    }
    if rounds < 1.0 {
        result.complete = false;
        result.notes.push(
            "fewer than one heartbeat round observed: is the interval longer than the run?".into(),
        );
    }
}

async fn heartbeat_conn(mut c: Conn, beat: &Beat, client_ping: bool) -> Result<()> {
    let pong = c.empty_frame(FrameKind::Pong);
    let mut both = pong.to_vec();
    both.extend_from_slice(&c.empty_frame(FrameKind::Ping));
    let mut pinged_at: Option<Instant> = None;
    loop {
        c.fill().await?;
        let now = Instant::now();
        let mut owe = false;
        while let Some(f) = c.decoder.next_frame()? {
            match f.header.kind {
                FrameKind::Ping => {
                    beat.pings.set(beat.pings.get() + 1);
                    owe = true;
                }
                FrameKind::Pong => {
                    if let Some(t) = pinged_at.take() {
                        beat.pongs.set(beat.pongs.get() + 1);
                        beat.rtt.borrow_mut().record(now - t);
                    }
                }
                _ => {}
            }
        }
        if owe {
            if client_ping && pinged_at.is_none() {
                pinged_at = Some(Instant::now());
                c.send(&both).await?;
            } else {
                c.send(&pong).await?;
            }
        }
    }
}

// ---- broadcast ----------------------------------------------------------------------

/// State shared by a broadcast run's senders and receivers (one executor, so plain
/// cells).
struct Fan {
    receivers: u32,
    senders: usize,
    origin: Instant,
    /// Receivers that got each in-flight message, by ring slot.
    ring: RefCell<Vec<u32>>,
    /// Messages each sender has sent.
    sent: RefCell<Vec<u64>>,
    /// Messages of each sender that reached every receiver.
    completed: RefCell<Vec<u64>>,
    /// Slots reused before their message completed (a lost delivery).
    ring_overruns: Cell<u64>,
    deliveries: Cell<u64>,
    errors: Cell<u64>,
    last_arrival_ns: Cell<u64>,
    delivery: RefCell<Latency>,
    fanout: RefCell<Latency>,
    loss: RefCell<Vec<ReceiverLoss>>,
    wake: Vec<Notify>,
}

impl Fan {
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn slot(&self, sender: usize, seq: u64) -> usize {
        (seq as usize)
            .wrapping_mul(self.senders)
            .wrapping_add(sender)
            % RING_SLOTS
    }

    fn on_tick(&self, receiver: usize, t: Tick, now_ns: u64) {
        let sender = t.sender as usize;
        if let Some(l) = self.loss.borrow_mut().get_mut(receiver) {
            l.on_tick(sender, t.seq);
        }
        self.deliveries.set(self.deliveries.get() + 1);
        self.last_arrival_ns.set(now_ns);
        let latency = now_ns.saturating_sub(t.due_ns);
        self.delivery.borrow_mut().record_ns(latency);
        if sender >= self.senders {
            return;
        }
        let slot = self.slot(sender, t.seq);
        let mut ring = self.ring.borrow_mut();
        ring[slot] += 1;
        if ring[slot] == self.receivers {
            ring[slot] = 0;
            drop(ring);
            self.fanout.borrow_mut().record_ns(latency);
            let mut c = self.completed.borrow_mut();
            c[sender] += 1;
            self.wake[sender].notify();
        }
    }

    fn in_flight(&self, sender: usize) -> u64 {
        self.sent.borrow()[sender] - self.completed.borrow()[sender]
    }

    fn all_complete(&self) -> bool {
        (0..self.senders).all(|s| self.in_flight(s) == 0)
    }

    /// Marks message `seq` of `sender` as sent, reclaiming a stale slot if needed.
    fn mark_sent(&self, sender: usize, seq: u64) {
        let slot = self.slot(sender, seq);
        let mut ring = self.ring.borrow_mut();
        if ring[slot] != 0 {
            ring[slot] = 0;
            self.ring_overruns.set(self.ring_overruns.get() + 1);
        }
        self.sent.borrow_mut()[sender] = seq + 1;
    }
}

async fn broadcast(
    spec: &RunSpec,
    b: &BroadcastSpec,
    mut conns: Vec<Conn>,
    result: &mut RunResult,
) -> Result<()> {
    let codec = spec.connect.codec;
    let pad = wire::pad_for_payload(b.payload_bytes);
    let probe = Tick {
        sender: 0,
        seq: 0,
        due_ns: 0,
    };
    result.frame_bytes = Some(wire::tick_frame(codec, probe, pad)?.len());
    let senders: Vec<Conn> = conns.drain(..b.senders).collect();
    let receivers = conns;
    let fan = Rc::new(Fan {
        receivers: receivers.len() as u32,
        senders: b.senders,
        origin: Instant::now(),
        ring: RefCell::new(vec![0; RING_SLOTS]),
        sent: RefCell::new(vec![0; b.senders]),
        completed: RefCell::new(vec![0; b.senders]),
        ring_overruns: Cell::new(0),
        deliveries: Cell::new(0),
        errors: Cell::new(0),
        last_arrival_ns: Cell::new(0),
        delivery: RefCell::new(Latency::new()),
        fanout: RefCell::new(Latency::new()),
        loss: RefCell::new(vec![ReceiverLoss::new(b.senders); receivers.len()]),
        wake: (0..b.senders).map(|_| Notify::default()).collect(),
    });
    let rx_tasks: Vec<Task<()>> = receivers
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let fan = fan.clone();
            spawn_local(async move {
                if let Err(e) = receive(c, i, &fan).await {
                    tracing::debug!("receiver {i}: {e}");
                    fan.errors.set(fan.errors.get() + 1);
                }
            })
        })
        .collect();

    let progress = Progress::start(spec, "deliveries", None);
    let pid = spec.server_pid;
    let cpu0 = CpuMark::take(pid);
    let start_ns = fan.now_ns();
    let send_until = Instant::now() + b.duration;
    let tx_tasks: Vec<Task<Result<Conn>>> = senders
        .into_iter()
        .enumerate()
        .map(|(s, c)| {
            let fan = fan.clone();
            let b = b.clone();
            spawn_local(async move { send_loop(c, s, &fan, &b, codec, pad, send_until).await })
        })
        .collect();
    let tick = {
        let fan = fan.clone();
        let counter = progress.counter.clone();
        spawn_local(async move {
            loop {
                counter.set(fan.deliveries.get());
                sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // Senders stop by themselves at their count or time bound; give them the drain
    // time on top for the last window.
    let mut sender_conns = Vec::new();
    let all_sent = async {
        for t in tx_tasks {
            match t.await {
                Ok(c) => sender_conns.push(c),
                Err(e) => {
                    tracing::warn!("sender: {e}");
                    fan.errors.set(fan.errors.get() + 1);
                }
            }
        }
        true
    };
    let sent_in_time = all_sent
        .or(async {
            sleep(b.duration + b.drain).await;
            false
        })
        .await;
    let drain_until = Instant::now() + b.drain;
    while !fan.all_complete() && Instant::now() < drain_until {
        sleep(Duration::from_millis(1)).await;
    }
    let complete = sent_in_time && fan.all_complete();
    let end_ns = if fan.deliveries.get() > 0 {
        fan.last_arrival_ns.get()
    } else {
        fan.now_ns()
    };
    let elapsed = Duration::from_nanos(end_ns.saturating_sub(start_ns).max(1));
    let cpu1 = CpuMark::take(pid);
    drop(tick);
    progress.finish();
    drop(rx_tasks);
    drop(sender_conns);

    let sent = fan.sent.borrow().clone();
    let messages: u64 = sent.iter().sum();
    let loss = LossReport::tally(&sent, fan.loss.borrow().iter());
    result.op = "deliveries".into();
    result.ops = fan.deliveries.get();
    result.messages = messages;
    result.errors += fan.errors.get();
    result.set_cpu(&cpu0, &cpu1, elapsed);
    result.loss = Some(loss);
    result.complete = complete && loss.lost == 0 && loss.unfinished == 0;
    if fan.ring_overruns.get() > 0 {
        result.notes.push(format!(
            "{} in-flight slots were reused before their message completed",
            fan.ring_overruns.get()
        ));
    }
    if !complete {
        result.notes.push(format!(
            "a time bound ended the run with {} message(s) not yet at every receiver \
             ({} deliveries outstanding)",
            (0..b.senders).map(|s| fan.in_flight(s)).sum::<u64>(),
            loss.unfinished
        ));
    }
    let delivery = fan.delivery.borrow().clone();
    let fanout = fan.fanout.borrow().clone();
    result.latency = delivery.summary();
    result.fanout = fanout.summary();
    result.latency_hist = Some(delivery);
    result.fanout_hist = Some(fanout);
    Ok(())
}

async fn receive(mut c: Conn, idx: usize, fan: &Fan) -> Result<()> {
    let codec = c.codec;
    let pong = c.empty_frame(FrameKind::Pong);
    loop {
        c.fill().await?;
        let now = fan.now_ns();
        let mut owe_pong = false;
        while let Some(f) = c.decoder.next_frame()? {
            match f.header.kind {
                FrameKind::Message => {
                    if let Some(t) = wire::parse_tick(codec, f.payload)? {
                        fan.on_tick(idx, t, now);
                    }
                }
                FrameKind::Ping => owe_pong = true,
                _ => {}
            }
        }
        if owe_pong {
            c.send(&pong).await?;
        }
    }
}

async fn send_loop(
    mut c: Conn,
    s: usize,
    fan: &Fan,
    b: &BroadcastSpec,
    codec: Codec,
    pad: usize,
    until: Instant,
) -> Result<Conn> {
    let frame = |seq: u64, due_ns: u64| {
        wire::bench_message(
            codec,
            Tick {
                sender: s as u64,
                seq,
                due_ns,
            },
            pad,
        )
    };
    match b.mode {
        BroadcastMode::Single => {
            for seq in 0..b.messages {
                if Instant::now() >= until {
                    break;
                }
                fan.mark_sent(s, seq);
                c.send(&frame(seq, fan.now_ns())?).await?;
                let done = fan.wake[s].wait_until(|| fan.in_flight(s) == 0);
                let in_time = async {
                    done.await;
                    true
                }
                .or(async {
                    sleep(b.drain).await;
                    false
                })
                .await;
                if !in_time {
                    return Err(Error::Timeout(format!(
                        "message {seq} did not reach every receiver within {:?}",
                        b.drain
                    )));
                }
            }
        }
        BroadcastMode::Rate { hz } => {
            let schedule = Schedule::new(fan.now_ns(), hz);
            for seq in 0..b.messages {
                let due = schedule.due_ns(seq);
                let now = fan.now_ns();
                if due > now {
                    sleep(Duration::from_nanos(due - now)).await;
                }
                if Instant::now() >= until {
                    break;
                }
                fan.mark_sent(s, seq);
                // Stamped with the due time: a late send counts against latency.
                c.send(&frame(seq, due)?).await?;
            }
        }
        BroadcastMode::Saturate { window, burst } => {
            let window = window as u64;
            let burst = burst as u64;
            let mut seq = 0u64;
            let mut out = Vec::new();
            while seq < b.messages && Instant::now() < until {
                let room = fan.wake[s].wait_until(|| fan.in_flight(s) + burst <= window);
                let left = until.saturating_duration_since(Instant::now());
                let ok = async {
                    room.await;
                    true
                }
                .or(async {
                    sleep(left).await;
                    false
                })
                .await;
                if !ok {
                    // Sending time is over; what is in flight drains or is counted
                    // as unfinished.
                    break;
                }
                let n = (window - fan.in_flight(s)).min(b.messages - seq);
                out.clear();
                let due = fan.now_ns();
                for k in seq..seq + n {
                    out.extend_from_slice(&frame(k, due)?);
                    fan.mark_sent(s, k);
                }
                seq += n;
                c.send(&out).await?;
            }
        }
    }
    // The caller keeps the connection open until the run ends: the server must not
    // see the sender leave while its last broadcasts are in flight.
    Ok(c)
}

// ---- rpc ----------------------------------------------------------------------------

struct Calls {
    issued: Cell<u64>,
    done: Cell<u64>,
    wrong: Cell<u64>,
    failed: Cell<u64>,
    limit: u64,
    stop_at: Instant,
    rtt: RefCell<Latency>,
}

impl Calls {
    fn try_issue(&self) -> bool {
        if self.issued.get() < self.limit && Instant::now() < self.stop_at {
            self.issued.set(self.issued.get() + 1);
            true
        } else {
            false
        }
    }
}

async fn rpc(spec: &RunSpec, r: &RpcSpec, conns: Vec<Conn>, result: &mut RunResult) {
    let calls = Rc::new(Calls {
        issued: Cell::new(0),
        done: Cell::new(0),
        wrong: Cell::new(0),
        failed: Cell::new(0),
        limit: r.calls,
        stop_at: Instant::now() + r.duration,
        rtt: RefCell::new(Latency::new()),
    });
    let progress = Progress::start(spec, "calls", Some(r.calls));
    let pid = spec.server_pid;
    let cpu0 = CpuMark::take(pid);
    let t0 = Instant::now();
    let tasks: Vec<Task<()>> = conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let calls = calls.clone();
            let depth = r.depth;
            spawn_local(async move {
                if let Err(e) = rpc_conn(c, i as i64, depth, &calls).await {
                    tracing::debug!("rpc connection {i}: {e}");
                    calls.failed.set(calls.failed.get() + 1);
                }
            })
        })
        .collect();
    let counter = progress.counter.clone();
    let all = async {
        for t in tasks {
            t.await;
        }
        true
    };
    // In-flight calls get a grace period after the last one is issued.
    let grace = Duration::from_secs(5);
    let end = t0 + r.duration + grace;
    let bound = async {
        while Instant::now() < end {
            counter.set(calls.done.get());
            sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let finished = all.or(bound).await;
    let elapsed = t0.elapsed();
    let cpu1 = CpuMark::take(pid);
    progress.finish();
    result.op = "calls".into();
    result.ops = calls.done.get();
    result.errors += calls.wrong.get() + calls.failed.get();
    result.set_cpu(&cpu0, &cpu1, elapsed);
    result.complete = finished && calls.issued.get() == calls.done.get();
    if calls.wrong.get() > 0 {
        result
            .notes
            .push(format!("{} wrong or failed answers", calls.wrong.get()));
    }
    result.notes.push(format!(
        "closed loop, {} in flight per connection (latency not corrected for coordinated omission)",
        r.depth
    ));
    let rtt = calls.rtt.borrow().clone();
    result.latency = rtt.summary();
    result.latency_hist = Some(rtt);
}

async fn rpc_conn(mut c: Conn, idx: i64, depth: usize, calls: &Calls) -> Result<()> {
    let codec = c.codec;
    let mut in_flight: VecDeque<(u64, Instant, i64)> = VecDeque::with_capacity(depth);
    let mut next_corr = 1u64;
    let mut out = Vec::new();
    let pong = c.empty_frame(FrameKind::Pong);
    loop {
        out.clear();
        while in_flight.len() < depth && calls.try_issue() {
            let corr = next_corr;
            next_corr += 1;
            let a = (corr % 1_000_000) as i64;
            out.extend_from_slice(&wire::add_request(codec, corr, a, idx)?);
            in_flight.push_back((corr, Instant::now(), a + idx));
        }
        if !out.is_empty() {
            c.send(&out).await?;
        }
        if in_flight.is_empty() {
            return Ok(());
        }
        c.fill().await?;
        let now = Instant::now();
        let mut owe_pong = false;
        while let Some(f) = c.decoder.next_frame()? {
            match f.header.kind {
                FrameKind::RpcResponse | FrameKind::RpcError => {
                    let corr = f.header.correlation_id;
                    let Some(pos) = in_flight.iter().position(|(id, _, _)| *id == corr) else {
                        calls.wrong.set(calls.wrong.get() + 1);
                        continue;
                    };
                    let (_, sent, expected) = in_flight.remove(pos).unwrap_or((0, now, 0));
                    calls.rtt.borrow_mut().record(now - sent);
                    calls.done.set(calls.done.get() + 1);
                    if wire::rpc_result(codec, &f.header, f.payload)? != Some(expected) {
                        calls.wrong.set(calls.wrong.get() + 1);
                    }
                }
                FrameKind::Ping => owe_pong = true,
                _ => {}
            }
        }
        if owe_pong {
            c.send(&pong).await?;
        }
    }
}

// ---- small executor-local helpers ---------------------------------------------------

/// Wakes one waiting task on this executor; a notify with nobody waiting is kept for
/// the next wait.
#[derive(Default)]
struct Notify {
    notified: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    fn notify(&self) {
        self.notified.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Resolves once `ready()` holds, re-checking after every notify.
    fn wait_until<'a>(&'a self, ready: impl Fn() -> bool + 'a) -> impl Future<Output = ()> + 'a {
        WaitUntil {
            notify: self,
            ready,
        }
    }
}

struct WaitUntil<'a, F> {
    notify: &'a Notify,
    ready: F,
}

impl<F: Fn() -> bool> Future for WaitUntil<'_, F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.notify.notified.set(false);
        if (self.ready)() {
            return Poll::Ready(());
        }
        let mut slot = self.notify.waker.borrow_mut();
        match slot.as_ref() {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// The live progress line: a counter the scenario bumps and a task that redraws it on
/// stderr (only when stderr is a terminal).
struct Progress {
    counter: Rc<Cell<u64>>,
    task: Option<Task<()>>,
}

impl Progress {
    fn start(spec: &RunSpec, unit: &'static str, total: Option<u64>) -> Progress {
        let counter = Rc::new(Cell::new(0u64));
        let task = (spec.progress && std::io::stderr().is_terminal()).then(|| {
            let counter = counter.clone();
            let label = spec.label.clone();
            spawn_local(async move {
                let t0 = Instant::now();
                loop {
                    sleep(PROGRESS_EVERY).await;
                    let n = counter.get();
                    let secs = t0.elapsed().as_secs_f64();
                    let of = total.map(|t| format!("/{t}")).unwrap_or_default();
                    let mut err = std::io::stderr().lock();
                    let _ = write!(
                        err,
                        "\r\x1b[2K{label}: {n}{of} {unit}, {:.0}/s, {secs:.1} s",
                        n as f64 / secs.max(1e-9)
                    );
                    let _ = err.flush();
                }
            })
        });
        Progress { counter, task }
    }

    fn finish(self) {
        if self.task.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn spec(scenario: Scenario) -> RunSpec {
        RunSpec {
            connect: ConnectSpec {
                addr: "127.0.0.1:9".parse().unwrap(),
                codec: Codec::Native,
                password: "pw".into(),
                attempts: 3,
                connect_timeout: Duration::from_secs(1),
            },
            connections: 100,
            connect_concurrency: 50,
            connect_deadline: Duration::from_secs(10),
            server_pid: None,
            label: "t".into(),
            progress: false,
            scenario,
        }
    }

    fn bcast(mode: BroadcastMode, senders: usize) -> Scenario {
        Scenario::Broadcast(BroadcastSpec {
            mode,
            senders,
            messages: 10,
            duration: Duration::from_secs(1),
            drain: Duration::from_secs(1),
            payload_bytes: 64,
        })
    }

    #[test]
    fn bounds_are_enforced() {
        assert!(validate(&spec(Scenario::Connect {
            settle: Duration::ZERO
        }))
        .is_ok());
        let mut s = spec(Scenario::Connect {
            settle: Duration::ZERO,
        });
        s.connections = 0;
        assert!(validate(&s).is_err());
        s.connections = MAX_CONNECTIONS + 1;
        assert!(validate(&s).is_err());
        let mut s = spec(Scenario::Connect {
            settle: Duration::ZERO,
        });
        s.connect.addr = "10.0.0.1:80".parse().unwrap();
        assert!(matches!(validate(&s), Err(Error::Args(m)) if m.contains("loopback")));
        s.connect.addr = "[::1]:80".parse().unwrap();
        assert!(validate(&s).is_ok());

        assert!(validate(&spec(bcast(BroadcastMode::Single, 1))).is_ok());
        assert!(validate(&spec(bcast(BroadcastMode::Single, 2))).is_err());
        assert!(validate(&spec(bcast(BroadcastMode::Rate { hz: 30.0 }, 2))).is_ok());
        assert!(validate(&spec(bcast(BroadcastMode::Rate { hz: 0.0 }, 1))).is_err());
        assert!(validate(&spec(bcast(BroadcastMode::Rate { hz: f64::NAN }, 1))).is_err());
        assert!(validate(&spec(bcast(
            BroadcastMode::Saturate {
                window: 64,
                burst: 32
            },
            1
        )))
        .is_ok());
        assert!(validate(&spec(bcast(
            BroadcastMode::Saturate {
                window: 0,
                burst: 0
            },
            1
        )))
        .is_err());
        assert!(validate(&spec(bcast(
            BroadcastMode::Saturate {
                window: MAX_WINDOW + 1,
                burst: 1
            },
            1
        )))
        .is_err());
        assert!(validate(&spec(bcast(BroadcastMode::Single, 0))).is_err());
        assert!(validate(&spec(bcast(
            BroadcastMode::Saturate {
                window: 8,
                burst: 9
            },
            1
        )))
        .is_err());

        let mut b = BroadcastSpec {
            mode: BroadcastMode::Single,
            senders: 1,
            messages: 10,
            duration: Duration::ZERO,
            drain: Duration::from_secs(1),
            payload_bytes: 64,
        };
        assert!(validate(&spec(Scenario::Broadcast(b.clone()))).is_err());
        b.duration = Duration::from_secs(1);
        b.payload_bytes = MAX_PAYLOAD_BYTES + 1;
        assert!(validate(&spec(Scenario::Broadcast(b.clone()))).is_err());
        b.payload_bytes = 64;
        b.messages = 0;
        assert!(validate(&spec(Scenario::Broadcast(b))).is_err());

        let rpc = |depth, calls, secs| {
            spec(Scenario::Rpc(RpcSpec {
                depth,
                calls,
                duration: Duration::from_secs(secs),
            }))
        };
        assert!(validate(&rpc(1, 10, 1)).is_ok());
        assert!(validate(&rpc(0, 10, 1)).is_err());
        assert!(validate(&rpc(MAX_RPC_DEPTH + 1, 10, 1)).is_err());
        assert!(validate(&rpc(1, 0, 1)).is_err());
        assert!(validate(&rpc(1, 10, 0)).is_err());
        assert!(validate(&rpc(1, 10, 601)).is_err());
        assert!(validate(&spec(Scenario::Heartbeat(HeartbeatSpec {
            duration: Duration::ZERO,
            client_ping: true
        })))
        .is_err());
    }

    fn fan(receivers: u32, senders: usize) -> Fan {
        Fan {
            receivers,
            senders,
            origin: Instant::now(),
            ring: RefCell::new(vec![0; RING_SLOTS]),
            sent: RefCell::new(vec![0; senders]),
            completed: RefCell::new(vec![0; senders]),
            ring_overruns: Cell::new(0),
            deliveries: Cell::new(0),
            errors: Cell::new(0),
            last_arrival_ns: Cell::new(0),
            delivery: RefCell::new(Latency::new()),
            fanout: RefCell::new(Latency::new()),
            loss: RefCell::new(vec![ReceiverLoss::new(senders); receivers as usize]),
            wake: (0..senders).map(|_| Notify::default()).collect(),
        }
    }

    #[test]
    fn fan_out_completion_and_window() {
        let f = fan(3, 2);
        for seq in 0..4 {
            f.mark_sent(0, seq);
        }
        f.mark_sent(1, 0);
        assert_eq!(f.in_flight(0), 4);
        let t = |sender, seq| Tick {
            sender,
            seq,
            due_ns: 100,
        };
        // Message 0 of sender 0 reaches all three receivers.
        for r in 0..3 {
            f.on_tick(r, t(0, 0), 150 + r as u64);
        }
        assert_eq!(f.in_flight(0), 3);
        assert_eq!(f.fanout.borrow().count(), 1);
        // The fan-out latency is the last receiver's: 152 - 100.
        assert_eq!(f.fanout.borrow().quantile_ns(1.0), 52);
        assert_eq!(f.delivery.borrow().count(), 3);
        // Two of three receivers got sender 1's message: not complete.
        f.on_tick(0, t(1, 0), 200);
        f.on_tick(1, t(1, 0), 200);
        assert_eq!(f.in_flight(1), 1);
        assert!(!f.all_complete());
        f.on_tick(2, t(1, 0), 201);
        assert_eq!(f.in_flight(1), 0);
        // A foreign sender is counted as a delivery but never completes anything.
        f.on_tick(0, t(9, 0), 300);
        assert_eq!(f.deliveries.get(), 7);
        let loss = LossReport::tally(&[1, 1], f.loss.borrow().iter());
        assert_eq!(loss.foreign, 1);
        // Reusing a slot whose message never completed is counted.
        let g = fan(2, 1);
        g.mark_sent(0, 0);
        g.on_tick(0, t(0, 0), 1);
        g.mark_sent(0, RING_SLOTS as u64);
        assert_eq!(g.ring_overruns.get(), 1);
    }

    #[test]
    fn loopback_only_cpu_choice() {
        // Whatever the machine, the choice is a CPU this process may use, or none.
        if let Some(cpu) = loadgen_cpu() {
            assert!(conduit::descriptor::allowed_cpus().contains(&cpu));
        }
    }
}
