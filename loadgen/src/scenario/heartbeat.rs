//! `heartbeat`: connections that only answer the server's PINGs.
//!
//! It measures what idle connections cost the server: its CPU per heartbeat round
//! (every connection pinged once) and, with `client_ping`, the ping→pong latency when
//! both sides ping as netconduit clients do. A server that keeps many quiet clients
//! spends most of its time here.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use conduit::__rt::{sleep, spawn_task, Task};
use conduit_protocol::FrameKind;

use super::progress::Progress;
use super::{check_duration, RunResult, RunSpec};
use crate::procfs::CpuMark;
use crate::progress::Goal;
use crate::stats::Latency;
use crate::wire::Conn;
use crate::Result;

/// The heartbeat scenario.
#[derive(Clone, Debug)]
pub struct HeartbeatSpec {
    /// Length of the measured phase.
    pub duration: Duration,
    /// Also ping the server whenever it pings us (both sides ping, as netconduit
    /// clients do) and time its PONG: the ping→pong latency.
    pub client_ping: bool,
}

impl HeartbeatSpec {
    /// Checks the heartbeat's bounds.
    pub(super) fn validate(&self) -> Result<()> {
        check_duration("heartbeat duration", self.duration)
    }
}

#[derive(Default)]
struct Beat {
    pings: Cell<u64>,
    pongs: Cell<u64>,
    errors: Cell<u64>,
    rtt: RefCell<Latency>,
}

/// Runs the heartbeat phase over `conns`.
pub(super) async fn run(
    spec: &RunSpec,
    h: &HeartbeatSpec,
    conns: Vec<Conn>,
    result: &mut RunResult,
) {
    let beat = Rc::new(Beat::default());
    let n = conns.len();
    let tasks: Vec<Task<()>> = conns
        .into_iter()
        .map(|c| {
            let beat = beat.clone();
            let client_ping = h.client_ping;
            spawn_task(async move {
                if heartbeat_conn(c, &beat, client_ping).await.is_err() {
                    beat.errors.set(beat.errors.get() + 1);
                }
            })
        })
        .collect();
    let phase = crate::progress::clock(h.duration);
    let progress = Progress::with_detail(spec, "pings", Goal::Open, move || {
        format!("from {n} connections, {phase} phase")
    });
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

/// One connection: answers every PING (with a PING of its own when `client_ping` and
/// none is outstanding) and times the server's PONGs.
async fn heartbeat_conn(mut c: Conn, beat: &Beat, client_ping: bool) -> Result<()> {
    let pong = c.empty_frame(FrameKind::Pong)?;
    let mut both = pong.to_vec();
    both.extend_from_slice(&c.empty_frame(FrameKind::Ping)?);
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

#[cfg(test)]
mod tests {
    use super::super::tests::spec;
    use super::super::{validate, Scenario};
    use super::*;

    #[test]
    fn duration_is_bounded() {
        let beat = |secs| {
            spec(Scenario::Heartbeat(HeartbeatSpec {
                duration: Duration::from_secs(secs),
                client_ping: true,
            }))
        };
        assert!(validate(&beat(1)).is_ok());
        assert!(validate(&beat(0)).is_err());
        assert!(validate(&beat(601)).is_err());
    }
}
