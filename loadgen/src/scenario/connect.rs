//! `connect`: opening and logging in every connection, the first phase of every
//! scenario, and the scenario that reports just that phase.
//!
//! It measures the time from the first connect to the last login, each connection's
//! connect + login latency, the server's CPU per login and its RSS once the
//! connections sit idle: what a server pays to accept a crowd and to keep it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use conduit::__rt::{sleep, spawn_task, Task};
use conduit_protocol::{Codec, FrameKind};
use futures_lite::FutureExt;
use tokio::sync::Semaphore;

use super::progress::Progress;
use super::{RunResult, RunSpec, Scenario, MAX_DURATION};
use crate::procfs::{self, CpuMark, Proc};
use crate::progress::Goal;
use crate::stats::Latency;
use crate::wire::Conn;
use crate::{Error, Result};

/// The connect scenario's bounds.
pub(super) fn validate(settle: Duration) -> Result<()> {
    if settle > MAX_DURATION {
        return Err(Error::Args("settle time too long".into()));
    }
    Ok(())
}

/// What the connect phase measured, for the connect scenario's report.
pub(super) struct ConnectPhase {
    cpu_before: CpuMark,
    cpu_after: CpuMark,
    elapsed: Duration,
    latency: Latency,
}

/// The connect phase of every run: opens and logs in the spec's connections (plus a
/// broadcast's senders, except a room broadcast's, who is one of them), records its time, latency and failures in `result`, and
/// primes netconduit-v1 connections. Fails unless every connection logged in.
pub(super) async fn open_all(
    spec: &RunSpec,
    result: &mut RunResult,
) -> Result<(Vec<Conn>, ConnectPhase)> {
    let pid = spec.server_pid;
    let extra = match &spec.scenario {
        Scenario::Broadcast(b) => b.extra_connections(),
        _ => 0,
    };
    let total = spec.connections + extra;
    let progress = Progress::start(spec, "logins", Goal::Count(total as u64));
    let cpu_before = CpuMark::take(pid);
    let t0 = Instant::now();
    let connected = connect_all(spec, total, progress.counter.clone()).await;
    let elapsed = t0.elapsed();
    let cpu_after = CpuMark::take(pid);
    progress.finish();
    let (conns, latency, failures) = connected?;
    result.connect_s = elapsed.as_secs_f64();
    result.connect_latency = latency.summary();
    result.errors += failures;
    if conns.len() < total {
        return Err(Error::Timeout(format!(
            "{} of {total} connections logged in within {:?} ({failures} failed)",
            conns.len(),
            spec.connect_deadline
        )));
    }
    let mut conns = if spec.connect.codec == Codec::V1 {
        prime_all(conns, spec.connect_deadline).await?
    } else {
        conns
    };
    if spec.sources > 1 {
        check_sources(spec.sources, &mut conns, result).await?;
    }
    let phase = ConnectPhase {
        cpu_before,
        cpu_after,
        elapsed,
        latency,
    };
    Ok((conns, phase))
}

/// Records the source addresses the server saw (one connection from each asks; see
/// [`crate::sources`]); fewer than `sources` distinct ones is an error of the run.
async fn check_sources(sources: usize, conns: &mut [Conn], result: &mut RunResult) -> Result<()> {
    let seen = crate::sources::seen_by_server(conns, sources).await?;
    if seen.len() != sources {
        result.errors += 1;
        result.notes.push(format!(
            "the connections were to come from {sources} addresses; the server saw {}",
            seen.len()
        ));
    }
    let seen: Vec<String> = seen.iter().map(ToString::to_string).collect();
    result.notes.push(format!(
        "the server saw connections from {}",
        seen.join(", ")
    ));
    result.source_addresses = Some(seen);
    Ok(())
}

/// The connect scenario: reports the connect phase, then holds the connections idle
/// for `settle` and reads the server's RSS.
pub(super) async fn run(
    spec: &RunSpec,
    settle: Duration,
    conns: Vec<Conn>,
    phase: ConnectPhase,
    result: &mut RunResult,
) {
    result.op = "connections".into();
    result.ops = conns.len() as u64;
    result.set_cpu(&phase.cpu_before, &phase.cpu_after, phase.elapsed);
    sleep(settle).await;
    result.rss_idle_kib = spec.server_pid.and_then(|p| procfs::rss_kib(Proc::Pid(p)));
    if let (Some(before), Some(idle)) = (result.rss_before_kib, result.rss_idle_kib) {
        let n = conns.len().max(1) as f64;
        result.rss_per_connection_bytes = Some((idle as f64 - before as f64) * 1024.0 / n);
    }
    // Open until the RSS is read: it is the RSS of these idle connections.
    drop(conns);
    result.latency = result.connect_latency;
    result.latency_hist = Some(phase.latency);
}

/// Opens `total` connections, at most `connect_concurrency` at a time; returns them,
/// their connect + login latencies and the number that failed.
async fn connect_all(
    spec: &RunSpec,
    total: usize,
    counter: Rc<Cell<u64>>,
) -> Result<(Vec<Conn>, Latency, u64)> {
    let sources = spec.sources;
    let opened = open_concurrently(spec, total, counter, |i| {
        let cs = spec.connect.clone();
        async move {
            let source = crate::sources::source_addr(sources, i);
            Conn::open_from(&cs, source, i as u64).await
        }
    })
    .await;
    if let Some(e) = opened.first_error.as_ref() {
        tracing::warn!("{} connection(s) failed; first error: {e}", opened.failures);
        if opened.conns.is_empty() {
            return Err(Error::Target(format!("no connection logged in: {e}")));
        }
    }
    if !opened.finished {
        tracing::warn!("connect phase hit its deadline");
    }
    Ok((opened.conns, opened.latency, opened.failures))
}

/// What [`open_concurrently`] opened.
pub(super) struct Opened<C> {
    /// The connections that are ready, in the order they finished opening.
    pub conns: Vec<C>,
    /// Each ready connection's time from its start to ready.
    pub latency: Latency,
    /// Connections that failed.
    pub failures: u64,
    /// The first failure's reason.
    pub first_error: Option<String>,
    /// Whether every attempt ended before `connect_deadline`.
    pub finished: bool,
}

/// Runs `open(i)` for i in 0..`total`, at most `connect_concurrency` at a time and
/// within `connect_deadline`, counting each ready connection on `counter`: the connect
/// phase of every scenario, whatever the connection speaks (ours, Redis).
pub(super) async fn open_concurrently<C, F, Fut>(
    spec: &RunSpec,
    total: usize,
    counter: Rc<Cell<u64>>,
    open: F,
) -> Opened<C>
where
    C: 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<C>> + 'static,
{
    // tokio's semaphore is executor-independent: it works on either backend.
    let sem = Rc::new(Semaphore::new(spec.connect_concurrency));
    let lat = Rc::new(RefCell::new(Latency::new()));
    let failures = Rc::new(Cell::new(0u64));
    let first_error: Rc<RefCell<Option<String>>> = Rc::default();
    let tasks: Vec<Task<Option<C>>> = (0..total)
        .map(|i| {
            let (sem, lat, failures, counter, first_error) = (
                sem.clone(),
                lat.clone(),
                failures.clone(),
                counter.clone(),
                first_error.clone(),
            );
            let opening = open(i);
            spawn_task(async move {
                let _permit = sem.acquire().await.ok()?;
                let start = Instant::now();
                match opening.await {
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
    let latency = lat.borrow().clone();
    let first_error = first_error.borrow_mut().take();
    Opened {
        conns,
        latency,
        failures: failures.get(),
        first_error,
        finished,
    }
}

/// netconduit-v1 connections: one PING → PONG round trip each before measuring.
/// conduit holds a v1 connection's pushes after AUTH_SUCCESS until the client's first
/// frame (at most `v1_post_auth_delay`, for netconduit's client bug); a silent
/// receiver would otherwise see its first broadcasts up to that hold late.
async fn prime_all(conns: Vec<Conn>, deadline: Duration) -> Result<Vec<Conn>> {
    let tasks: Vec<Task<Result<Conn>>> = conns
        .into_iter()
        .map(|mut c| {
            spawn_task(async move {
                let ping = c.empty_frame(FrameKind::Ping)?;
                c.send(&ping).await?;
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

#[cfg(test)]
mod tests {
    use super::super::tests::spec;
    use super::super::validate;
    use super::*;

    #[test]
    fn settle_is_bounded() {
        let connect = |settle| spec(Scenario::Connect { settle });
        assert!(validate(&connect(Duration::ZERO)).is_ok());
        assert!(validate(&connect(MAX_DURATION)).is_ok());
        assert!(matches!(
            validate(&connect(MAX_DURATION + Duration::from_secs(1))),
            Err(Error::Args(m)) if m.contains("settle")
        ));
    }
}
