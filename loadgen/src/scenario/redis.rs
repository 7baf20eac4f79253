//! The scenarios against Redis (`suite --compare redis`), each the counterpart of
//! ours with the same bounds, the same connect phase (bounded concurrency, retries,
//! CPU marks around it) and the same measured phase:
//!
//! * `connect`: every connection connects, `AUTH`s and `SUBSCRIBE`s (an idle
//!   subscriber): time to all-ready, server CPU per connection, RSS once idle.
//! * `broadcast`: receivers subscribed in the connect phase, senders `PUBLISH` (see
//!   `broadcast/redis.rs`).
//! * `rpc`: `ECHO` of a 64-byte payload, exactly one in flight per connection; every
//!   answer is checked against what was sent.
//!
//! There is no heartbeat: Redis has none ([`crate::redis::NO_HEARTBEAT`]).

use std::time::{Duration, Instant};

use conduit::__rt::sleep;

use super::connect::{open_concurrently, Opened};
use super::progress::Progress;
use super::rpc::{call_phase, Calls};
use super::{broadcast, on_executor, validate, RpcSpec, RunResult, RunSpec, Scenario};
use crate::payload::{self, Tick};
use crate::procfs::{self, CpuMark, Proc};
use crate::progress::Goal;
use crate::redis::resp::{self, Item, Reply};
use crate::redis::{self, RedisConn, BENCH_CHANNEL, CODEC_NAME, NO_HEARTBEAT, TARGET_NAME};
use crate::stats::Latency;
use crate::{Error, Result};

/// Size of an `ECHO`'s payload, bytes (the size of the tick payload broadcasts carry).
pub const ECHO_PAYLOAD_BYTES: usize = 64;

/// Runs `spec` against the Redis at `spec.connect.addr` (only its address, password,
/// attempts and timeout apply) on a fresh executor pinned to `cpu`.
pub fn run_redis(spec: RunSpec, cpu: Option<usize>) -> Result<RunResult> {
    validate(&spec)?;
    match &spec.scenario {
        Scenario::Heartbeat(_) => return Err(Error::Args(NO_HEARTBEAT.into())),
        Scenario::Broadcast(b) if b.room_members.is_some() => {
            return Err(Error::Args(
                "a room broadcast has no Redis counterpart".into(),
            ))
        }
        Scenario::Rpc(r) if r.depth != 1 => {
            return Err(Error::Args(format!(
                "Redis rpc sends one ECHO at a time per connection (depth 1), not {}",
                r.depth
            )))
        }
        _ => {}
    }
    on_executor(
        "loadgen-redis",
        cpu,
        move || async move { run_here(spec).await },
    )?
}

/// Runs `spec` against Redis on the current executor.
async fn run_here(spec: RunSpec) -> Result<RunResult> {
    let mut result = RunResult::new(&spec);
    result.target = TARGET_NAME.into();
    result.codec = CODEC_NAME.into();
    result.rss_before_kib = spec.server_pid.and_then(|p| procfs::rss_kib(Proc::Pid(p)));
    let (senders, subscribe_all) = match &spec.scenario {
        Scenario::Broadcast(b) => (b.extra_connections(), false),
        Scenario::Connect { .. } => (0, true),
        _ => (0, false),
    };
    let receivers = matches!(spec.scenario, Scenario::Broadcast(_));
    // Broadcast: the first `senders` publish, the rest subscribe; connect: all subscribe.
    let subscribes = move |i: usize| subscribe_all || (receivers && i >= senders);
    let (conns, phase) =
        open_all(&spec, spec.connections + senders, subscribes, &mut result).await?;
    match spec.scenario.clone() {
        Scenario::Connect { settle } => {
            result.op = "connections".into();
            result.ops = conns.len() as u64;
            result.set_cpu(&phase.cpu_before, &phase.cpu_after, phase.elapsed);
            sleep(settle).await;
            result.rss_idle_kib = spec.server_pid.and_then(|p| procfs::rss_kib(Proc::Pid(p)));
            // Open until the RSS is read: it is the RSS of these idle subscribers.
            drop(conns);
            result.latency = result.connect_latency;
            result.latency_hist = Some(phase.latency);
            result
                .notes
                .push("each connection: connect, AUTH, SUBSCRIBE (an idle subscriber)".into());
        }
        Scenario::Broadcast(b) => broadcast::run_redis(&spec, &b, conns, &mut result).await?,
        Scenario::Rpc(r) => rpc(&spec, &r, conns, &mut result).await,
        Scenario::Heartbeat(_) => return Err(Error::Args(NO_HEARTBEAT.into())),
    }
    Ok(result)
}

/// What the connect phase measured.
struct ConnectPhase {
    cpu_before: CpuMark,
    cpu_after: CpuMark,
    elapsed: Duration,
    latency: Latency,
}

/// Opens and authenticates `total` connections, at most `connect_concurrency` at a
/// time, connection `i` also subscribing to [`BENCH_CHANNEL`] when `subscribes(i)`;
/// returns them in order. Fails unless every one is ready.
async fn open_all(
    spec: &RunSpec,
    total: usize,
    subscribes: impl Fn(usize) -> bool,
    result: &mut RunResult,
) -> Result<(Vec<RedisConn>, ConnectPhase)> {
    let pid = spec.server_pid;
    let progress = Progress::start(spec, "logins", Goal::Count(total as u64));
    let cpu_before = CpuMark::take(pid);
    let t0 = Instant::now();
    let opened = open_concurrently(spec, total, progress.counter.clone(), |i| {
        let c = spec.connect.clone();
        let subscribe = subscribes(i);
        async move {
            let mut conn =
                RedisConn::open(c.addr, &c.password, c.attempts, c.connect_timeout).await?;
            if subscribe {
                conn.subscribe(BENCH_CHANNEL).await?;
            }
            Ok(conn)
        }
    })
    .await;
    let elapsed = t0.elapsed();
    let cpu_after = CpuMark::take(pid);
    progress.finish();
    let Opened {
        conns,
        latency,
        failures,
        first_error,
        ..
    } = opened;
    result.connect_s = elapsed.as_secs_f64();
    result.connect_latency = latency.summary();
    result.errors += failures;
    if conns.len() < total {
        return Err(Error::Timeout(format!(
            "{} of {total} Redis connections ready within {:?} ({failures} failed; first error: {})",
            conns.len(),
            spec.connect_deadline,
            first_error.as_deref().unwrap_or("none")
        )));
    }
    let phase = ConnectPhase {
        cpu_before,
        cpu_after,
        elapsed,
        latency,
    };
    Ok((conns, phase))
}

/// The rpc phase against Redis: `ECHO`, one in flight on every connection, for at most
/// `r.calls` calls and `r.duration`, through the same call phase as ours.
async fn rpc(spec: &RunSpec, r: &RpcSpec, conns: Vec<RedisConn>, result: &mut RunResult) {
    call_phase(
        spec,
        r,
        conns,
        |c, i, calls| async move { echo_conn(c, i as u64, &calls).await },
        "wrong ECHO answers",
        format!(
            "ECHO of a {ECHO_PAYLOAD_BYTES}-byte payload, closed loop, 1 in flight per connection"
        ),
        result,
    )
    .await;
}

/// compared with what was sent.
async fn echo_conn(mut c: RedisConn, idx: u64, calls: &Calls) -> Result<()> {
    let pad = payload::pad_for_payload(ECHO_PAYLOAD_BYTES, None);
    let mut out = Vec::new();
    let mut seq = 0;
    while calls.try_issue() {
        let sent_payload = redis::tick_payload(
            Tick {
                sender: idx,
                seq,
                due_ns: 0,
            },
            pad,
        )?;
        seq += 1;
        out.clear();
        resp::command(&mut out, &[b"ECHO", &sent_payload]);
        let sent = Instant::now();
        c.send(&out).await?;
        let right = loop {
            if let Some(reply) = c.reader.next_reply()? {
                break matches!(reply, Reply::Item(Item::Bulk(b)) if b == &sent_payload[..]);
            }
            c.fill().await?;
        };
        calls.rtt.borrow_mut().record(sent.elapsed());
        calls.done.set(calls.done.get() + 1);
        if !right {
            calls.wrong.set(calls.wrong.get() + 1);
        }
    }
    Ok(())
}
