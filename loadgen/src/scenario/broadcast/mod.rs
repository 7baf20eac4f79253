//! `broadcast`: senders whose messages the server re-broadcasts to every receiver.
//!
//! It measures fan-out: deliveries per second, each delivery's latency and each
//! message's time to its last receiver, the server's CPU per delivery and per message,
//! and every lost, duplicated or unfinished delivery (per receiver and sender). The
//! three pacings in [`send`] answer different questions: `single` the unloaded fan-out
//! latency, `rate` the latency at a fixed offered load (free of coordinated omission),
//! `saturate` the highest throughput. [`fan`] holds the accounting the senders and
//! receivers share.
//!
//! A room broadcast (`room_members`) asks what a broadcast to a room costs among many
//! connections that are not in it: some of the connections join one room ([`room`]),
//! one of them sends to the room one message at a time, the others stay idle and must
//! receive nothing.
//!
//! A spread broadcast ([`spread`]) sends one message at a time to receivers spread
//! over several servers, the nodes of a cluster, and tells each node's deliveries and
//! CPU apart.

mod fan;
mod redis;
mod room;
mod send;
mod spread;

use std::rc::Rc;
use std::time::{Duration, Instant};

use conduit::__rt::{sleep, spawn_task, Task};
use conduit_protocol::{Codec, FrameKind};
use futures_lite::FutureExt;

use self::fan::Fan;
use self::send::{ConduitSink, TickSink};
use super::progress::Progress;
use super::{check_duration, RunResult, RunSpec, MAX_CONNECTIONS};
use crate::payload::{self, Tick};
use crate::procfs::CpuMark;
use crate::progress::Goal;
use crate::stats::LossReport;
use crate::wire::Conn;
use crate::{Error, Result};

pub(super) use self::redis::run as run_redis;
pub use self::spread::{
    run_spread, NodeFigures, SpreadNode, SpreadResult, SpreadSpec, MAX_SPREAD_NODES,
};

/// Most broadcast senders.
pub const MAX_SENDERS: usize = 64;

/// Most messages one broadcast run sends, per sender.
pub const MAX_MESSAGES: u64 = 10_000_000;

/// Largest broadcast payload, bytes.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Largest saturation window (messages in flight per sender).
pub const MAX_WINDOW: usize = 4096;

/// Highest fixed send rate, messages per second per sender.
pub const MAX_RATE_HZ: f64 = 100_000.0;

/// Fewest members of a room broadcast's room: the sender and one receiver.
pub const MIN_ROOM_MEMBERS: usize = 2;

/// The room a room broadcast's members join.
pub const BENCH_ROOM: &str = "bench";

/// Slots of the in-flight broadcast table (per message: receivers that got it). A
/// slot is reused after this many messages, so more may never be in flight at once.
pub const RING_SLOTS: usize = 1 << 16;

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
    /// A room broadcast: this many of the run's connections (the sender among them,
    /// spread evenly over the server's shards) join room [`BENCH_ROOM`], and the sender
    /// broadcasts to it; the others stay idle. `None`: an ordinary broadcast to every
    /// other connection, senders on top of the receivers.
    pub room_members: Option<usize>,
}

impl BroadcastSpec {
    /// The room the broadcast goes to, if it is a room broadcast.
    pub fn room(&self) -> Option<&'static str> {
        self.room_members.map(|_| BENCH_ROOM)
    }

    /// Connections opened on top of the run's `connections`: the senders, except for
    /// a room broadcast, whose sender is one of them.
    pub fn extra_connections(&self) -> usize {
        if self.room_members.is_some() {
            0
        } else {
            self.senders
        }
    }

    /// Checks the broadcast's bounds, with `receivers` receiving connections (a room
    /// broadcast: `receivers` connections in all, members or not).
    pub(super) fn validate(&self, receivers: usize) -> Result<()> {
        let bad = |m: String| Err(Error::Args(m));
        check_duration("broadcast duration", self.duration)?;
        check_duration("drain time", self.drain)?;
        if self.senders == 0 || self.senders > MAX_SENDERS {
            return bad(format!(
                "senders must be 1..={MAX_SENDERS}, got {}",
                self.senders
            ));
        }
        if self.messages == 0 || self.messages > MAX_MESSAGES {
            return bad(format!(
                "messages must be 1..={MAX_MESSAGES}, got {}",
                self.messages
            ));
        }
        if self.payload_bytes > MAX_PAYLOAD_BYTES {
            return bad(format!(
                "payload must be at most {MAX_PAYLOAD_BYTES} bytes, got {}",
                self.payload_bytes
            ));
        }
        if receivers + self.extra_connections() > MAX_CONNECTIONS {
            return bad(format!(
                "receivers + senders exceed {MAX_CONNECTIONS} connections"
            ));
        }
        if let Some(members) = self.room_members {
            if self.mode != BroadcastMode::Single {
                return bad("a room broadcast sends one message at a time (single mode)".into());
            }
            if members < MIN_ROOM_MEMBERS || members > receivers {
                return bad(format!(
                    "room members must be {MIN_ROOM_MEMBERS}..=connections ({receivers}), \
                     the sender among them; got {members}"
                ));
            }
        }
        match self.mode {
            BroadcastMode::Single if self.senders != 1 => {
                bad("single mode takes exactly one sender".into())
            }
            BroadcastMode::Rate { hz } if !(hz > 0.0 && hz <= MAX_RATE_HZ) => {
                bad(format!("rate must be in (0, {MAX_RATE_HZ}] Hz, got {hz}"))
            }
            BroadcastMode::Saturate { window, burst }
                if window == 0
                    || window > MAX_WINDOW
                    || window * self.senders > RING_SLOTS
                    || burst == 0
                    || burst > window =>
            {
                bad(format!(
                    "window must be 1..={MAX_WINDOW} (and window × senders ≤ {RING_SLOTS}), \
                     burst 1..=window; got window {window}, burst {burst}"
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Runs the broadcast phase: the first `b.senders` of `conns` send, the rest receive.
/// A room broadcast first puts `room_members` of them in the room (the first of those
/// sends, the others receive); the rest stay idle, answering the server's PINGs.
pub(super) async fn run(
    spec: &RunSpec,
    b: &BroadcastSpec,
    mut conns: Vec<Conn>,
    result: &mut RunResult,
) -> Result<()> {
    let codec = spec.connect.codec;
    let pad = payload::pad_for_payload(b.payload_bytes, b.room());
    let probe = Tick {
        sender: 0,
        seq: 0,
        due_ns: 0,
    };
    result.frame_bytes = Some(payload::tick_frame(codec, probe, pad, b.room())?.len());
    let (senders, receivers, idle) = match b.room_members {
        Some(members) => {
            let (members, idle) = room::pick_members(conns, members);
            let mut members =
                room::join_all(members, BENCH_ROOM, spec.connect_deadline, result).await?;
            let senders: Vec<Conn> = members.drain(..1).collect();
            (senders, members, idle)
        }
        None => {
            let senders: Vec<Conn> = conns.drain(..b.senders).collect();
            (senders, conns, Vec::new())
        }
    };
    let fan = Rc::new(Fan::new(receivers.len() as u32, b.senders));
    let rx_tasks: Vec<Task<()>> = receivers
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let fan = fan.clone();
            spawn_task(async move {
                if let Err(e) = receive(c, i, &fan).await {
                    tracing::debug!("receiver {i}: {e}");
                    fan.errors.set(fan.errors.get() + 1);
                }
            })
        })
        .collect();
    let idle_tasks: Vec<Task<()>> = idle
        .into_iter()
        .map(|c| {
            let fan = fan.clone();
            spawn_task(async move {
                if let Err(e) = room::idle(c, &fan).await {
                    tracing::debug!("idle connection: {e}");
                    fan.errors.set(fan.errors.get() + 1);
                }
            })
        })
        .collect();

    let pid = spec.server_pid;
    let driven = drive(spec, b, &fan, senders, codec, pad, || CpuMark::take(pid)).await;
    drop(rx_tasks);
    drop(idle_tasks);
    finish(
        b,
        &fan,
        driven.sent_in_time,
        [&driven.before, &driven.after],
        driven.elapsed,
        result,
    );
    if fan.strays.get() > 0 {
        result.errors += fan.strays.get();
        result.notes.push(format!(
            "{} tick(s) reached connections outside the room",
            fan.strays.get()
        ));
    }
    Ok(())
}

/// What [`drive`] measured: its `mark` read right before the first send and right
/// after the last delivery (or the time bound), the length of that phase, and whether
/// every sender finished within its bounds.
struct Driven<M> {
    /// `mark` before the first send.
    before: M,
    /// `mark` after the last delivery.
    after: M,
    /// From the first send to the last arrival.
    elapsed: Duration,
    /// Every sender finished within `duration + drain`.
    sent_in_time: bool,
}

/// The measured phase of a broadcast run, its receivers already reading into `fan`:
/// one sender per connection of `senders`, paced by `b.mode`, for at most
/// `b.duration` (plus `b.drain` for the last message of each), then at most `b.drain`
/// more for the last deliveries; `mark` (CPU readings) is taken around it.
async fn drive<M>(
    spec: &RunSpec,
    b: &BroadcastSpec,
    fan: &Rc<Fan>,
    senders: Vec<Conn>,
    codec: Codec,
    pad: usize,
    mark: impl Fn() -> M,
) -> Driven<M> {
    let room = b.room();
    let sinks = senders.into_iter().map(|conn| ConduitSink {
        conn,
        codec,
        pad,
        room,
    });
    drive_sinks(spec, b, fan, sinks.collect(), mark).await
}

/// [`drive`] for any server: each sender writes its ticks through its [`TickSink`].
async fn drive_sinks<M, S: TickSink + 'static>(
    spec: &RunSpec,
    b: &BroadcastSpec,
    fan: &Rc<Fan>,
    senders: Vec<S>,
    mark: impl Fn() -> M,
) -> Driven<M> {
    let progress = {
        let fan = fan.clone();
        Progress::with_detail(spec, "deliveries", Goal::Open, move || {
            // The senders' own tallies; a sender mid-update is read at the next sample.
            let sent = fan.sent.try_borrow().map_or(0, |s| s.iter().sum::<u64>());
            format!("{sent} messages sent")
        })
    };
    let before = mark();
    let start_ns = fan.now_ns();
    let send_until = Instant::now() + b.duration;
    let tx_tasks: Vec<Task<Result<S>>> = senders
        .into_iter()
        .enumerate()
        .map(|(s, c)| {
            let fan = fan.clone();
            let b = b.clone();
            spawn_task(async move { send::send_loop(c, s, &fan, &b, send_until).await })
        })
        .collect();
    let tick = {
        let fan = fan.clone();
        let counter = progress.counter.clone();
        spawn_task(async move {
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
    let end_ns = if fan.deliveries.get() > 0 {
        fan.last_arrival_ns.get()
    } else {
        fan.now_ns()
    };
    let elapsed = Duration::from_nanos(end_ns.saturating_sub(start_ns).max(1));
    let after = mark();
    drop(tick);
    progress.finish();
    drop(sender_conns);
    Driven {
        before,
        after,
        elapsed,
        sent_in_time,
    }
}

/// Fills `result` from a driven broadcast: deliveries, messages, loss, errors, the
/// delivery and fan-out latencies, whether it completed (and why not), and the CPU
/// figures from the two marks `cpu` taken around the measured phase of `elapsed`.
fn finish(
    b: &BroadcastSpec,
    fan: &Fan,
    sent_in_time: bool,
    cpu: [&CpuMark; 2],
    elapsed: Duration,
    result: &mut RunResult,
) {
    let complete = sent_in_time && fan.all_complete();
    let sent = fan.sent.borrow().clone();
    let messages: u64 = sent.iter().sum();
    let loss = LossReport::tally(&sent, fan.loss.borrow().iter());
    result.op = "deliveries".into();
    result.ops = fan.deliveries.get();
    result.messages = messages;
    result.errors += fan.errors.get();
    result.set_cpu(cpu[0], cpu[1], elapsed);
    result.server_cpu_us_per_message = result
        .server_cpu_s
        .filter(|_| messages > 0)
        .map(|s| s * 1e6 / messages as f64);
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
}

/// One receiver: records every `tick` it gets and answers the server's PINGs.
async fn receive(c: Conn, idx: usize, fan: &Fan) -> Result<()> {
    read_ticks(c, fan, |t, now| fan.on_tick(idx, t, now)).await
}

/// Reads until the connection ends: `on_tick` gets every `tick` with the time its
/// read arrived (`Fan::now_ns`), and the server's PINGs are answered.
async fn read_ticks(mut c: Conn, fan: &Fan, mut on_tick: impl FnMut(Tick, u64)) -> Result<()> {
    let codec = c.codec;
    let pong = c.empty_frame(FrameKind::Pong)?;
    loop {
        c.fill().await?;
        let now = fan.now_ns();
        let mut owe_pong = false;
        while let Some(f) = c.decoder.next_frame()? {
            match f.header.kind {
                FrameKind::Message => {
                    if let Some(t) = payload::parse_tick(codec, f.payload)? {
                        on_tick(t, now);
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

#[cfg(test)]
mod tests {
    use super::super::tests::spec;
    use super::super::{validate, Scenario};
    use super::*;

    fn bcast(mode: BroadcastMode, senders: usize) -> Scenario {
        Scenario::Broadcast(BroadcastSpec {
            mode,
            senders,
            messages: 10,
            duration: Duration::from_secs(1),
            drain: Duration::from_secs(1),
            payload_bytes: 64,
            room_members: None,
        })
    }

    fn room(mode: BroadcastMode, members: usize) -> Scenario {
        Scenario::Broadcast(BroadcastSpec {
            mode,
            senders: 1,
            messages: 10,
            duration: Duration::from_secs(1),
            drain: Duration::from_secs(1),
            payload_bytes: 64,
            room_members: Some(members),
        })
    }

    #[test]
    fn room_bounds_are_enforced() {
        // The spec has 100 connections: the room takes 2..=100 of them, sender included.
        assert!(validate(&spec(room(BroadcastMode::Single, 10))).is_ok());
        assert!(validate(&spec(room(BroadcastMode::Single, 100))).is_ok());
        assert!(validate(&spec(room(BroadcastMode::Single, MIN_ROOM_MEMBERS))).is_ok());
        assert!(validate(&spec(room(BroadcastMode::Single, MIN_ROOM_MEMBERS - 1))).is_err());
        assert!(matches!(
            validate(&spec(room(BroadcastMode::Single, 101))),
            Err(Error::Args(m)) if m.contains("room members")
        ));
        assert!(matches!(
            validate(&spec(room(BroadcastMode::Rate { hz: 30.0 }, 10))),
            Err(Error::Args(m)) if m.contains("one message at a time")
        ));
        // The sender is one of the connections: a room broadcast may use them all.
        let mut s = spec(room(BroadcastMode::Single, 10));
        s.connections = MAX_CONNECTIONS;
        assert!(validate(&s).is_ok());
        let mut s = spec(bcast(BroadcastMode::Single, 1));
        s.connections = MAX_CONNECTIONS;
        assert!(validate(&s).is_err());
        assert_eq!(
            spec(room(BroadcastMode::Single, 10)).scenario.name(),
            "broadcast-room"
        );
    }

    #[test]
    fn bounds_are_enforced() {
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
            room_members: None,
        };
        assert!(validate(&spec(Scenario::Broadcast(b.clone()))).is_err());
        b.duration = Duration::from_secs(1);
        b.payload_bytes = MAX_PAYLOAD_BYTES + 1;
        assert!(validate(&spec(Scenario::Broadcast(b.clone()))).is_err());
        b.payload_bytes = 64;
        b.messages = 0;
        assert!(validate(&spec(Scenario::Broadcast(b))).is_err());
    }
}
