//! `rpc`: `add(a, b)` calls, a fixed number in flight on every connection.
//!
//! It measures request/response throughput, the round-trip latency and the server's
//! CPU per call, and checks every answer. The loop is closed (a call starts when one
//! ends), so its latency is not corrected for coordinated omission; the broadcast
//! `rate` mode is the open-loop measurement.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use conduit::__rt::{sleep, spawn_task, Task};
use conduit_protocol::FrameKind;
use futures_lite::FutureExt;

use super::progress::Progress;
use super::{check_duration, RunResult, RunSpec};
use crate::payload;
use crate::procfs::CpuMark;
use crate::progress::Goal;
use crate::stats::Latency;
use crate::wire::Conn;
use crate::{Error, Result};

/// Deepest RPC pipeline per connection.
pub const MAX_RPC_DEPTH: usize = 1024;

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

impl RpcSpec {
    /// Checks the RPC scenario's bounds.
    pub(super) fn validate(&self) -> Result<()> {
        check_duration("rpc duration", self.duration)?;
        if self.depth == 0 || self.depth > MAX_RPC_DEPTH {
            return Err(Error::Args(format!(
                "depth must be 1..={MAX_RPC_DEPTH}, got {}",
                self.depth
            )));
        }
        if self.calls == 0 {
            return Err(Error::Args("calls must be at least 1".into()));
        }
        Ok(())
    }
}

/// Counters shared by a call phase's connections (one executor, so plain cells).
pub(super) struct Calls {
    pub(super) issued: Cell<u64>,
    pub(super) done: Cell<u64>,
    pub(super) wrong: Cell<u64>,
    pub(super) failed: Cell<u64>,
    limit: u64,
    stop_at: Instant,
    pub(super) rtt: RefCell<Latency>,
}

impl Calls {
    /// Takes one call of the phase's budget (count and time); `false` when spent.
    pub(super) fn try_issue(&self) -> bool {
        if self.issued.get() < self.limit && Instant::now() < self.stop_at {
            self.issued.set(self.issued.get() + 1);
            true
        } else {
            false
        }
    }
}

/// In-flight calls get this long after the last one is issued.
const CALL_GRACE: Duration = Duration::from_secs(5);

/// A closed-loop call phase over `conns`, for at most `r.calls` calls and
/// `r.duration`: each connection runs `call_loop` (issuing through
/// [`Calls::try_issue`], counting answers in the shared [`Calls`]); the server's CPU is
/// read around it. Shared by our `rpc` and Redis's `ECHO`, so both are measured alike.
/// `wrong` describes a wrong answer in the notes, `about` the phase.
pub(super) async fn call_phase<C, F, Fut>(
    spec: &RunSpec,
    r: &RpcSpec,
    conns: Vec<C>,
    call_loop: F,
    wrong: &str,
    about: String,
    result: &mut RunResult,
) where
    F: Fn(C, usize, Rc<Calls>) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + 'static,
{
    let calls = Rc::new(Calls {
        issued: Cell::new(0),
        done: Cell::new(0),
        wrong: Cell::new(0),
        failed: Cell::new(0),
        limit: r.calls,
        stop_at: Instant::now() + r.duration,
        rtt: RefCell::new(Latency::new()),
    });
    // Time, not the count, usually ends the phase: no bar to fill, a count and a rate.
    let (bound, limit) = (r.duration, r.calls);
    let progress = Progress::with_detail(spec, "calls", Goal::Open, move || {
        format!("(at most {limit} in {})", crate::progress::clock(bound))
    });
    let pid = spec.server_pid;
    let cpu0 = CpuMark::take(pid);
    let t0 = Instant::now();
    let tasks: Vec<Task<()>> = conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let calls = calls.clone();
            let run = call_loop(c, i, calls.clone());
            spawn_task(async move {
                if let Err(e) = run.await {
                    tracing::debug!("call connection {i}: {e}");
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
    let end = t0 + r.duration + CALL_GRACE;
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
        result.notes.push(format!("{} {wrong}", calls.wrong.get()));
    }
    result.notes.push(about);
    let rtt = calls.rtt.borrow().clone();
    result.latency = rtt.summary();
    result.latency_hist = Some(rtt);
}

/// Runs the RPC phase over `conns`.
pub(super) async fn run(spec: &RunSpec, r: &RpcSpec, conns: Vec<Conn>, result: &mut RunResult) {
    let depth = r.depth;
    let about = format!(
        "closed loop, {depth} in flight per connection (latency not corrected for coordinated omission)"
    );
    call_phase(
        spec,
        r,
        conns,
        |c, i, calls| async move { rpc_conn(c, i as i64, depth, &calls).await },
        "wrong or failed answers",
        about,
        result,
    )
    .await;
}

/// checks each answer and answers the server's PINGs.
async fn rpc_conn(mut c: Conn, idx: i64, depth: usize, calls: &Calls) -> Result<()> {
    let codec = c.codec;
    let mut in_flight: VecDeque<(u64, Instant, i64)> = VecDeque::with_capacity(depth);
    let mut next_corr = 1u64;
    let mut out = Vec::new();
    let pong = c.empty_frame(FrameKind::Pong)?;
    loop {
        out.clear();
        while in_flight.len() < depth && calls.try_issue() {
            let corr = next_corr;
            next_corr += 1;
            let a = (corr % 1_000_000) as i64;
            out.extend_from_slice(&payload::add_request(codec, corr, a, idx)?);
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
                    if payload::rpc_result(codec, &f.header, f.payload)? != Some(expected) {
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

#[cfg(test)]
mod tests {
    use super::super::tests::spec;
    use super::super::{validate, Scenario};
    use super::*;

    #[test]
    fn bounds_are_enforced() {
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
    }
}
