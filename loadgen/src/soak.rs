//! `conduit-loadgen soak`: connections churning through a conduit server for a bounded
//! time — connect, log in, a few `add` RPCs and broadcasts, disconnect, and again —
//! `--concurrency` at a time until `--connections` have come and gone.
//!
//! The server runs in this process (the benchmark server of [`crate::serve`]), so its
//! `connection_count` can be read: once the last client is gone it must be 0, and the
//! process's open file descriptors must be back at their baseline (taken after the
//! server started, before any client). RSS is the whole process's: the server plus the
//! load generator's one executor. A sampler records the peaks every
//! [`SAMPLE_EVERY`].

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use conduit::__rt::{sleep, spawn, spawn_task, Task};
use conduit_protocol::{Codec, FrameKind};
use futures_lite::FutureExt;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::payload::{self, Tick};
use crate::procfs::{self, Proc};
use crate::progress::{Goal, PhaseBar};
use crate::scenario::{self, MAX_CONNECTIONS, MAX_DURATION};
use crate::serve::{self, ServeOptions};
use crate::target::BENCH_PASSWORD;
use crate::wire::{Conn, ConnectSpec, MAX_CONNECT_ATTEMPTS};
use crate::{Error, Result};

/// How often the sampler reads RSS, open descriptors and `connection_count`.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Time the connections still running when `--duration-s` ends get to finish.
pub const GRACE: Duration = Duration::from_secs(30);

/// Time the server gets, after the last client left, to count every connection out
/// and close its sockets.
pub const SETTLE: Duration = Duration::from_secs(10);

/// Most connections one soak runs through the server.
pub const MAX_SOAK_CONNECTIONS: usize = 1_000_000;

/// Most RPCs or broadcasts per connection.
pub const MAX_PER_CONNECTION: u32 = 1000;

/// Which codec the clients speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
pub enum SoakCodec {
    /// conduit's rkyv codec.
    Native,
    /// netconduit-v1 MessagePack.
    V1,
    /// Alternating, connection by connection.
    Both,
}

/// `soak` options.
#[derive(Clone, Debug, Args, Serialize)]
pub struct SoakArgs {
    /// Connections to run through the server in all.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Connections alive at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// `add` calls per connection (each waits for its answer).
    #[arg(long, default_value_t = 3)]
    pub rpcs: u32,
    /// Broadcasts per connection (each reaches every other live connection).
    #[arg(long, default_value_t = 1)]
    pub broadcasts: u32,
    /// No connection starts after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub duration_s: f64,
    /// Server shards.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Codec the clients speak.
    #[arg(long, value_enum, default_value_t = SoakCodec::Both)]
    pub codec: SoakCodec,
    /// Write the result as JSON here.
    #[arg(long)]
    #[serde(skip)]
    pub json: Option<PathBuf>,
    /// No live progress bar (it is drawn only when stderr is a terminal anyway).
    #[arg(long)]
    #[serde(skip)]
    pub no_progress: bool,
}

impl Default for SoakArgs {
    fn default() -> SoakArgs {
        SoakArgs {
            connections: 10_000,
            concurrency: 200,
            rpcs: 3,
            broadcasts: 1,
            duration_s: 120.0,
            shards: 1,
            codec: SoakCodec::Both,
            json: None,
            no_progress: false,
        }
    }
}

/// What a soak found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SoakResult {
    /// The options it ran with.
    pub options: Option<SoakArgs>,
    /// Connections started (all of `--connections`, unless `--duration-s` ended first).
    pub started: u64,
    /// Connections that logged in.
    pub logged_in: u64,
    /// Connections that did all their work and disconnected.
    pub completed: u64,
    /// Connections that failed (connect, login, I/O, protocol).
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// `add` calls answered.
    pub rpcs: u64,
    /// `add` answers that were wrong.
    pub rpc_wrong: u64,
    /// Broadcasts sent.
    pub broadcasts: u64,
    /// Broadcast deliveries (`tick` frames) the clients read.
    pub ticks_received: u64,
    /// Seconds from the first connect to the last disconnect.
    pub churn_s: f64,
    /// Every connection that started finished (none was cut off by the time bound).
    pub complete: bool,
    /// Process RSS after the server started, KiB.
    pub rss_baseline_kib: u64,
    /// Highest process RSS sampled, KiB.
    pub rss_peak_kib: u64,
    /// Process RSS once the server had settled, KiB.
    pub rss_final_kib: u64,
    /// Open file descriptors after the server started.
    pub fds_baseline: usize,
    /// Most open file descriptors sampled.
    pub fds_peak: usize,
    /// Open file descriptors once the server had settled.
    pub fds_final: usize,
    /// Descriptors open at the end that were not at the baseline (`fd -> target`).
    /// See [`SoakResult::fds_returned`].
    pub fds_left: Vec<String>,
    /// Highest `connection_count` sampled.
    pub connection_count_peak: usize,
    /// `connection_count` once the server had settled (must be 0).
    pub connection_count_final: usize,
    /// Seconds the server took to settle after the last client left.
    pub settle_s: f64,
    /// Seconds `stop()` took afterwards.
    pub stop_s: f64,
}

impl SoakResult {
    /// Everything ran, nothing failed, and the server let go of every connection and
    /// descriptor.
    pub fn clean(&self) -> bool {
        self.complete
            && self.errors == 0
            && self.rpc_wrong == 0
            && self.connection_count_final == 0
            && self.fds_returned()
    }

    /// No descriptor is left open beyond the baseline except, at most, the one
    /// eventfd glommio 0.9 keeps for every executor that ever ran (the soak's client
    /// executor when it runs on glommio; measured: an empty glommio executor spawned
    /// and joined leaves one behind).
    pub fn fds_returned(&self) -> bool {
        let eventfds = self
            .fds_left
            .iter()
            .filter(|f| f.ends_with("anon_inode:[eventfd]"))
            .count();
        eventfds <= 1 && self.fds_left.len() == eventfds
    }

    /// The human summary.
    pub fn render(&self) -> String {
        let mib = |kib: u64| kib as f64 / 1024.0;
        format!(
            "soak: {} connections in {:.1} s ({:.0}/s), {} logged in, {} completed, {} errors{}\n\
             rpcs {} ({} wrong), broadcasts {}, deliveries read {}\n\
             RSS MiB: baseline {:.1}, peak {:.1}, final {:.1}\n\
             open fds: baseline {}, peak {}, final {}{}{}\n\
             connection_count: peak {}, final {} (settled in {:.2} s); stop() {:.2} s\n\
             {}\n",
            self.started,
            self.churn_s,
            self.started as f64 / self.churn_s.max(1e-9),
            self.logged_in,
            self.completed,
            self.errors,
            self.first_error
                .as_ref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default(),
            self.rpcs,
            self.rpc_wrong,
            self.broadcasts,
            self.ticks_received,
            mib(self.rss_baseline_kib),
            mib(self.rss_peak_kib),
            mib(self.rss_final_kib),
            self.fds_baseline,
            self.fds_peak,
            self.fds_final,
            if self.fds_returned() {
                " (back to baseline)"
            } else {
                " (NOT back to baseline)"
            },
            if self.fds_left.is_empty() {
                String::new()
            } else {
                format!("; new since the baseline: {}", self.fds_left.join(", "))
            },
            self.connection_count_peak,
            self.connection_count_final,
            self.settle_s,
            self.stop_s,
            if self.clean() { "clean" } else { "NOT CLEAN" },
        )
    }
}

fn validate(a: &SoakArgs) -> Result<Duration> {
    let bad = |m: String| Err(Error::Args(m));
    if a.connections == 0 || a.connections > MAX_SOAK_CONNECTIONS {
        return bad(format!(
            "--connections must be in 1..={MAX_SOAK_CONNECTIONS}"
        ));
    }
    if a.concurrency == 0 || a.concurrency > MAX_CONNECTIONS {
        return bad(format!("--concurrency must be in 1..={MAX_CONNECTIONS}"));
    }
    if a.rpcs > MAX_PER_CONNECTION || a.broadcasts > MAX_PER_CONNECTION {
        return bad(format!(
            "--rpcs and --broadcasts must be at most {MAX_PER_CONNECTION}"
        ));
    }
    if a.shards == 0 {
        return bad("--shards must be at least 1".into());
    }
    let max = MAX_DURATION.as_secs_f64();
    if !(a.duration_s > 0.0 && a.duration_s <= max) {
        return bad(format!("--duration-s must be in (0, {max}]"));
    }
    Ok(Duration::from_secs_f64(a.duration_s))
}

/// Open file descriptors of this process.
fn open_fds() -> Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count())
}

/// Descriptors open now that were not in `baseline` (the listing's own directory
/// descriptor left out).
fn new_fds(baseline: &[(String, String)]) -> Vec<(String, String)> {
    fd_table()
        .into_iter()
        .filter(|fd| !baseline.contains(fd) && !fd.1.ends_with("/fd"))
        .collect()
}

fn is_socket(fd: &(String, String)) -> bool {
    fd.1.starts_with("socket:")
}

/// Open file descriptors of this process and what each refers to.
fn fd_table() -> Vec<(String, String)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut fds: Vec<(String, String)> = dir
        .filter_map(|e| e.ok())
        .map(|e| {
            let what = std::fs::read_link(e.path())
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), what)
        })
        .collect();
    fds.sort();
    fds
}

fn rss() -> u64 {
    procfs::rss_kib(Proc::SelfProc).unwrap_or(0)
}

/// Runs a soak and returns what it found (`Err` only when it could not run at all).
pub fn run(a: &SoakArgs) -> Result<SoakResult> {
    let duration = validate(a)?;
    let server = serve::build(&ServeOptions {
        host: "127.0.0.1".into(),
        port: 0,
        websocket_port: None,
        tls: None,
        shards: a.shards,
        heartbeat: Duration::from_secs(30),
        password: BENCH_PASSWORD.into(),
        cpus: Vec::new(),
        stop_on_stdin_eof: false,
        recv_buffer_bytes: None,
        runtime: conduit::Runtime::Auto,
        login: serve::LoginSettings::default(),
        cluster: None,
        metrics_addr: None,
    })?;
    let running = server
        .start()
        .map_err(|e| Error::Target(format!("server did not start: {e}")))?;
    let addr = server
        .local_addr()
        .ok_or_else(|| Error::Target("server has no address".into()))?;
    let baseline_fds = fd_table();
    let mut r = SoakResult {
        options: Some(a.clone()),
        fds_baseline: open_fds()?,
        rss_baseline_kib: rss(),
        ..SoakResult::default()
    };

    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (sampling, server) = (sampling.clone(), server.clone());
        std::thread::Builder::new()
            .name("soak-sampler".into())
            .spawn(move || {
                let (mut rss_peak, mut fds_peak, mut count_peak) = (0, 0, 0);
                while sampling.load(Ordering::Acquire) {
                    rss_peak = rss_peak.max(rss());
                    fds_peak = fds_peak.max(open_fds().unwrap_or(0));
                    count_peak = count_peak.max(server.connection_count());
                    std::thread::sleep(SAMPLE_EVERY);
                }
                (rss_peak, fds_peak, count_peak)
            })?
    };

    let churned = churn(a, addr, duration);
    // The sampler opens files itself: stop it before counting descriptors.
    sampling.store(false, Ordering::Release);
    let (rss_peak, fds_peak, count_peak) = sampler
        .join()
        .map_err(|_| Error::Runtime("sampler thread panicked".into()))?;
    let settled_at = Instant::now();
    // Bounded wait for the server to count every connection out and close its sockets.
    while settled_at.elapsed() < SETTLE
        && (server.connection_count() > 0 || new_fds(&baseline_fds).iter().any(is_socket))
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    r.settle_s = settled_at.elapsed().as_secs_f64();
    r.connection_count_final = server.connection_count();
    r.fds_final = open_fds()?;
    r.fds_left = new_fds(&baseline_fds)
        .into_iter()
        .map(|(fd, what)| format!("{fd} -> {what}"))
        .collect();
    r.rss_final_kib = rss();
    r.rss_peak_kib = rss_peak.max(r.rss_final_kib);
    r.fds_peak = fds_peak.max(r.fds_final);
    r.connection_count_peak = count_peak;
    let t = Instant::now();
    let stopped = running.stop();
    r.stop_s = t.elapsed().as_secs_f64();
    let totals = churned?;
    totals.fill(&mut r);
    stopped.map_err(|e| Error::Target(format!("stop failed: {e}")))?;
    Ok(r)
}

/// Runs `run`, prints the summary, writes the JSON if asked; the exit code is 0 when
/// the soak was clean.
pub fn main(a: &SoakArgs) -> Result<i32> {
    let r = run(a)?;
    print!("{}", r.render());
    if let Some(path) = &a.json {
        let json =
            serde_json::to_string_pretty(&r).map_err(|e| Error::Io(std::io::Error::other(e)))?;
        std::fs::write(path, json)?;
    }
    Ok(if r.clean() { 0 } else { 1 })
}

/// What the client executor counted.
#[derive(Debug, Default)]
struct Totals {
    started: u64,
    logged_in: u64,
    completed: u64,
    errors: u64,
    first_error: Option<String>,
    rpcs: u64,
    rpc_wrong: u64,
    broadcasts: u64,
    ticks: u64,
    churn_s: f64,
    complete: bool,
}

impl Totals {
    fn fill(self, r: &mut SoakResult) {
        r.started = self.started;
        r.logged_in = self.logged_in;
        r.completed = self.completed;
        r.errors = self.errors;
        r.first_error = self.first_error;
        r.rpcs = self.rpcs;
        r.rpc_wrong = self.rpc_wrong;
        r.broadcasts = self.broadcasts;
        r.ticks_received = self.ticks;
        r.churn_s = self.churn_s;
        r.complete = self.complete;
    }
}

/// The clients, on one executor of their own (on the load generator's CPU).
fn churn(a: &SoakArgs, addr: SocketAddr, duration: Duration) -> Result<Totals> {
    let a = a.clone();
    scenario::on_executor("soak", scenario::loadgen_cpu(), move || async move {
        churn_here(&a, addr, duration).await
    })
}

#[derive(Default)]
struct Counters {
    started: Cell<u64>,
    logged_in: Cell<u64>,
    completed: Cell<u64>,
    errors: Cell<u64>,
    first_error: std::cell::RefCell<Option<String>>,
    rpcs: Cell<u64>,
    rpc_wrong: Cell<u64>,
    broadcasts: Cell<u64>,
    ticks: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

async fn churn_here(a: &SoakArgs, addr: SocketAddr, duration: Duration) -> Totals {
    let counters = Rc::new(Counters::default());
    // Shared with each connection's task, which holds its slot's permit to the end.
    let sem = Arc::new(Semaphore::new(a.concurrency));
    let t0 = Instant::now();
    let stop_starting = t0 + duration;
    let _progress = progress(a, &counters);
    // A connection's task is spawned only once it has a slot, so at most
    // `concurrency` exist at a time (the load generator's memory stays flat).
    let all = async {
        for i in 0..a.connections {
            let Ok(permit) = sem.clone().acquire_owned().await else {
                break;
            };
            if Instant::now() >= stop_starting {
                break;
            }
            bump(&counters.started);
            let (counters, a) = (counters.clone(), a.clone());
            let codec = match a.codec {
                SoakCodec::Native => Codec::Native,
                SoakCodec::V1 => Codec::V1,
                SoakCodec::Both if i % 2 == 0 => Codec::Native,
                SoakCodec::Both => Codec::V1,
            };
            let spec = ConnectSpec {
                addr,
                transport: crate::wire::Transport::Tcp,
                tls: None,
                codec,
                password: BENCH_PASSWORD.into(),
                attempts: MAX_CONNECT_ATTEMPTS,
                connect_timeout: Duration::from_secs(5),
            };
            spawn(async move {
                let _permit = permit;
                if let Err(e) = lifetime(i, &spec, &a, &counters).await {
                    bump(&counters.errors);
                    counters
                        .first_error
                        .borrow_mut()
                        .get_or_insert_with(|| e.to_string());
                }
            });
        }
        // Every slot back: the last connection is gone.
        // `validate` keeps `concurrency` within MAX_CONNECTIONS: it fits a u32.
        sem.acquire_many(a.concurrency as u32).await.is_ok()
    };
    let bound = async {
        sleep(duration + GRACE).await;
        false
    };
    let complete = all.or(bound).await;
    let c = &counters;
    let first_error = c.first_error.borrow().clone();
    Totals {
        started: c.started.get(),
        logged_in: c.logged_in.get(),
        completed: c.completed.get(),
        errors: c.errors.get(),
        first_error,
        rpcs: c.rpcs.get(),
        rpc_wrong: c.rpc_wrong.get(),
        broadcasts: c.broadcasts.get(),
        ticks: c.ticks.get(),
        churn_s: t0.elapsed().as_secs_f64(),
        complete: complete && c.completed.get() + c.errors.get() == c.started.get(),
    }
}

/// The live bar: connections done of all, and those started, alive and failed, read
/// from the counters every [`SAMPLE_EVERY`](crate::progress::SAMPLE_EVERY) on this
/// executor. Dropping the returned guard stops it and clears the bar.
fn progress(a: &SoakArgs, c: &Rc<Counters>) -> Option<impl Drop> {
    let bar = PhaseBar::new(
        "soak",
        "connections done",
        Goal::Count(a.connections as u64),
        !a.no_progress,
    );
    if bar.is_hidden() {
        return None;
    }
    let bar = Rc::new(bar);
    let c = c.clone();
    let task = {
        let bar = bar.clone();
        spawn_task(async move {
            loop {
                let (started, done, errors) = (c.started.get(), c.completed.get(), c.errors.get());
                let live = started.saturating_sub(done + errors);
                bar.detail(format!("({started} started, {live} live, {errors} failed)"));
                bar.set(done);
                sleep(crate::progress::SAMPLE_EVERY).await;
            }
        })
    };
    /// Stops the sampler, then clears the bar.
    struct Guard(Option<Task<()>>, Rc<PhaseBar>);
    impl Drop for Guard {
        fn drop(&mut self) {
            drop(self.0.take());
            self.1.finish();
        }
    }
    Some(Guard(Some(task), bar))
}

/// One connection's life: log in, interleave broadcasts and `add` calls, leave.
async fn lifetime(i: usize, spec: &ConnectSpec, a: &SoakArgs, c: &Counters) -> Result<()> {
    let mut conn = Conn::open(spec, i as u64).await?;
    bump(&c.logged_in);
    let codec = conn.codec;
    let pong = conn.empty_frame(FrameKind::Pong)?;
    for k in 0..a.rpcs.max(a.broadcasts) {
        if k < a.broadcasts {
            let tick = Tick {
                sender: i as u64,
                seq: u64::from(k),
                due_ns: 0,
            };
            conn.send(&payload::bench_message(codec, tick, 0)?).await?;
            bump(&c.broadcasts);
        }
        if k < a.rpcs {
            let corr = u64::from(k) + 1;
            let (x, y) = (i as i64, i64::from(k));
            conn.send(&payload::add_request(codec, corr, x, y)?).await?;
            loop {
                conn.fill().await?;
                let mut answer = None;
                let mut owe_pong = false;
                while let Some(f) = conn.decoder.next_frame()? {
                    match f.header.kind {
                        FrameKind::RpcResponse | FrameKind::RpcError
                            if f.header.correlation_id == corr =>
                        {
                            answer = Some(payload::rpc_result(codec, &f.header, f.payload)?);
                        }
                        FrameKind::Message => bump(&c.ticks),
                        FrameKind::Ping => owe_pong = true,
                        _ => {}
                    }
                }
                if owe_pong {
                    conn.send(&pong).await?;
                }
                if let Some(v) = answer {
                    bump(&c.rpcs);
                    if v != Some(x + y) {
                        bump(&c.rpc_wrong);
                    }
                    break;
                }
            }
        }
    }
    bump(&c.completed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_bounded() {
        let ok = SoakArgs::default();
        assert!(validate(&ok).is_ok());
        for bad in [
            SoakArgs {
                connections: 0,
                ..SoakArgs::default()
            },
            SoakArgs {
                concurrency: MAX_CONNECTIONS + 1,
                ..SoakArgs::default()
            },
            SoakArgs {
                rpcs: MAX_PER_CONNECTION + 1,
                ..SoakArgs::default()
            },
            SoakArgs {
                duration_s: 0.0,
                ..SoakArgs::default()
            },
            SoakArgs {
                duration_s: f64::NAN,
                ..SoakArgs::default()
            },
        ] {
            assert!(matches!(validate(&bad), Err(Error::Args(_))), "{bad:?}");
        }
    }
}
