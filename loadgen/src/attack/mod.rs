//! `conduit-loadgen attack`: one address (127.0.0.2) attacks the login of a `serve`
//! child while real clients log in from other addresses (127.0.1.1, 127.0.1.2, …, one
//! each), so the engine's login budgets can be measured with them on and off.
//!
//! * `lockout`: the attacker holds `--attackers` silent sockets (it connects and never
//!   speaks) and re-opens each as soon as the server closes it.
//! * `bruteforce`: `--attackers` parallel connections each try a wrong password, give
//!   up `--give-up-ms` after sending it and re-connect at once.
//!
//! Meanwhile `--clients` real logins, one after another at an even pace over the
//! attack, each a full login through the protocol crate's [`ClientHandshake`] with the
//! right password, each bounded by `--login-timeout-s`. The attack runs for
//! `--duration-s` and until the last real login has ended.
//!
//! Guesses are counted twice. On the wire (client side): a guess is a wrong password
//! sent on a connection the server had admitted and not refused — native: the proof
//! sent after the server's challenge (a refused connection gets an AUTH_FAILURE with
//! the reason instead of a challenge); v1: an AUTH_REQUEST that got no refusal within
//! the give-up time (a refusal answers the first frame at once; "Invalid password"
//! arrives only after the brake, so a v1 guess answered by it counts too). By the
//! server: its `disconnected … reason=AuthFailed` log lines (the server runs with
//! `conduit::shard::conn` at `info`), one per failed login, each counted against the
//! address's budget. Rates are given over the whole attack and over its second half
//! (what the attacker sustains once the backoff has started).
//!
//! Plain threads and blocking sockets (the lockout attacker polls its sockets with
//! `poll(2)` on one thread); every count and time is bounded ([`MAX_ATTACKERS`],
//! [`MAX_BRUTEFORCE_ATTACKERS`], [`MAX_CLIENTS`], [`MAX_ATTACK_SECONDS`]), and traffic
//! only goes between 127.0.0.x addresses.
//!
//! The pieces: `lockout` and `bruteforce` the two attackers, `login` the real
//! clients' login (and the handshake step the guesser shares), `net` the loopback
//! sockets bound to a chosen source address, `report` the report and its text; this
//! module the options, the limits and [`run`], which starts the server, the attack and
//! the real clients.
//!
//! [`ClientHandshake`]: conduit_protocol::handshake::ClientHandshake

mod bruteforce;
mod lockout;
mod login;
mod net;
mod report;

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use clap::{Args, ValueEnum};
use conduit_protocol::Codec;
use serde::Serialize;

pub use self::bruteforce::BruteforceReport;
use self::bruteforce::{bruteforce, server_failures, Guesser};
use self::lockout::lockout;
pub use self::lockout::LockoutReport;
use self::login::{real_login, Outcome};
pub use self::report::{render, AttackReport, ClientReport, ServerSettings};
use crate::args::{CodecArg, RuntimeArg, MAX_SECONDS_ARG};
use crate::target::{Implementation, ServerProcess, SpawnOptions, BENCH_PASSWORD};
use crate::{Error, Result};

/// The attacker's address.
pub const ATTACKER_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Most silent sockets a lockout attacker holds.
pub const MAX_ATTACKERS: usize = 4000;

/// Most parallel guessing connections (one thread each).
pub const MAX_BRUTEFORCE_ATTACKERS: usize = 512;

/// Most real logins in one run.
pub const MAX_CLIENTS: usize = 5000;

/// Longest attack, seconds (`--duration-s`; `--login-timeout-s` too).
pub const MAX_ATTACK_SECONDS: f64 = 120.0;

/// The password the guesser tries (always wrong).
pub const WRONG_PASSWORD: &str = "not-the-password";

/// The reason the engine gives for a wrong password.
pub const WRONG_PASSWORD_REASON: &str = "Invalid password";

/// The outcome of a real login the target counts against the lock-out: refused because
/// every slot is taken.
pub const SERVER_FULL_PREFIX: &str = "server full";

/// Time a guessing connection waits for the server's challenge (native) before it gives
/// up on that connection.
pub const CHALLENGE_WAIT: Duration = Duration::from_secs(1);

/// Time one TCP connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Time the attack runs before the first real login, at most: its sockets are open.
pub const WARMUP: Duration = Duration::from_millis(500);

/// Time the server gets after the attack to log the failures still braking.
pub const SETTLE: Duration = Duration::from_millis(700);

/// Descriptors kept free of sockets in this process (stdio, the server child's pipes,
/// the log, threads).
const RESERVED_FDS: u64 = 64;

/// Which attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttackMode {
    /// Silent sockets from one address, re-opened as soon as they are closed.
    Lockout,
    /// Wrong passwords from one address over parallel connections that give up early.
    Bruteforce,
}

/// The server's login budgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetsArg {
    /// The engine's defaults (`max_pending` 256, `max_pending_per_source` 16,
    /// `max_auth_failures_per_source` 5; overridable one by one).
    Engine,
    /// Effectively off: `max_pending` = `max_pending_per_source` = `max_connections`,
    /// `max_auth_failures_per_source` = 4294967295.
    Off,
}

/// `attack` options.
#[derive(Debug, Args)]
pub struct AttackArgs {
    /// The attack.
    #[arg(long, value_enum)]
    pub mode: AttackMode,
    /// Attacking sockets from 127.0.0.2 (default: lockout 1000, bruteforce 64).
    #[arg(long)]
    pub attackers: Option<usize>,
    /// Real logins from other addresses, spread evenly over the attack.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// The attack lasts this long (and until the last real login has ended), seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// The server's login budgets; the server otherwise runs with the engine's
    /// defaults (`serve --engine-defaults`: `max_connections` 1000, `auth_failure_delay`
    /// 200 ms).
    #[arg(long, value_enum, default_value_t = BudgetsArg::Engine)]
    pub budgets: BudgetsArg,
    /// Override `max_pending`.
    #[arg(long)]
    pub max_pending: Option<usize>,
    /// Override `max_pending_per_source`.
    #[arg(long)]
    pub max_pending_per_source: Option<usize>,
    /// Override `max_auth_failures_per_source`.
    #[arg(long)]
    pub max_auth_failures_per_source: Option<u32>,
    /// The server's `auth_timeout`, seconds (the engine's default: 30).
    #[arg(long, default_value_t = 30.0)]
    pub auth_timeout_s: f64,
    /// The codec of the real clients and of the guesser.
    #[arg(long, value_enum, default_value_t = CodecArg::Native)]
    pub codec: CodecArg,
    /// bruteforce: a guessing connection closes this long after sending its guess, ms.
    #[arg(long, default_value_t = 10)]
    pub give_up_ms: u64,
    /// A real login gives up after this long, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub login_timeout_s: f64,
    /// Shards of the server.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Runtime backend of the server.
    #[arg(long, value_enum, default_value_t = RuntimeArg::Auto)]
    pub runtime: RuntimeArg,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs `conduit-loadgen attack`; prints the report.
pub fn main(a: &AttackArgs) -> Result<i32> {
    let r = run(a)?;
    print!("{}", render(&r));
    if let Some(path) = &a.json {
        let json = serde_json::to_string_pretty(&r).map_err(|e| Error::Io(io::Error::other(e)))?;
        std::fs::write(path, json)?;
    }
    Ok(0)
}

fn seconds(name: &str, s: f64) -> Result<Duration> {
    if !(s > 0.0 && s <= MAX_ATTACK_SECONDS) {
        return Err(Error::Args(format!(
            "--{name} must be in (0, {MAX_ATTACK_SECONDS}] seconds, got {s}"
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

/// The source address of real client `i`: 127.0.1.1, 127.0.1.2, … (254 per /24).
pub fn client_addr(i: usize) -> Ipv4Addr {
    let third = 1 + i / 254;
    let fourth = 1 + i % 254;
    Ipv4Addr::new(
        127,
        0,
        u8::try_from(third).unwrap_or(u8::MAX),
        u8::try_from(fourth).unwrap_or(u8::MAX),
    )
}

/// The soft open-files limit, raised to the hard one if below `need`.
fn open_files(need: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(Error::Io(io::Error::last_os_error()));
    }
    if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < need {
        let raised = libc::rlimit {
            rlim_cur: need.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads `raised`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = raised.rlim_cur;
        }
        if lim.rlim_cur < need {
            return Err(Error::Args(format!(
                "this run needs {need} open files; the limit is {} (hard {}): raise `ulimit -n`",
                lim.rlim_cur, lim.rlim_max
            )));
        }
    }
    Ok(lim.rlim_cur)
}

/// Runs one attack against a `serve` child; the report.
pub fn run(a: &AttackArgs) -> Result<AttackReport> {
    let duration = seconds("duration-s", a.duration_s)?;
    let login_timeout = seconds("login-timeout-s", a.login_timeout_s)?;
    if !(a.auth_timeout_s > 0.0 && a.auth_timeout_s <= MAX_SECONDS_ARG) {
        return Err(Error::Args(format!(
            "--auth-timeout-s must be in (0, {}] seconds",
            MAX_SECONDS_ARG
        )));
    }
    let auth_timeout = Duration::from_secs_f64(a.auth_timeout_s);
    let (default_attackers, max_attackers) = match a.mode {
        AttackMode::Lockout => (1000, MAX_ATTACKERS),
        AttackMode::Bruteforce => (64, MAX_BRUTEFORCE_ATTACKERS),
    };
    let attackers = a.attackers.unwrap_or(default_attackers);
    if attackers == 0 || attackers > max_attackers {
        return Err(Error::Args(format!(
            "--attackers must be in 1..={max_attackers} for {:?}, got {attackers}",
            a.mode
        )));
    }
    if a.clients > MAX_CLIENTS {
        return Err(Error::Args(format!(
            "--clients must be at most {MAX_CLIENTS}, got {}",
            a.clients
        )));
    }
    if a.give_up_ms == 0 || a.give_up_ms > 10_000 {
        return Err(Error::Args("--give-up-ms must be in 1..=10000".into()));
    }
    let limit = open_files(attackers as u64 + a.clients as u64 + RESERVED_FDS)?;
    let codec = Codec::from(a.codec);

    // The server: the engine's defaults, the budgets as asked.
    let defaults = conduit::ServerDescriptor::new("x");
    let max_connections = defaults.max_connections;
    let mut server = ServerSettings {
        runtime: None,
        shards: a.shards,
        max_connections,
        max_pending: defaults.max_pending,
        max_pending_per_source: defaults.max_pending_per_source,
        max_auth_failures_per_source: defaults.max_auth_failures_per_source,
        auth_failure_delay_ms: u64::try_from(defaults.auth_failure_delay.as_millis())
            .unwrap_or(u64::MAX),
        auth_timeout_ms: u64::try_from(auth_timeout.as_millis()).unwrap_or(u64::MAX),
    };
    if a.budgets == BudgetsArg::Off {
        server.max_pending = max_connections;
        server.max_pending_per_source = max_connections;
        server.max_auth_failures_per_source = u32::MAX;
    }
    if let Some(n) = a.max_pending {
        server.max_pending = n;
    }
    if let Some(n) = a.max_pending_per_source {
        server.max_pending_per_source = n;
    }
    if let Some(n) = a.max_auth_failures_per_source {
        server.max_auth_failures_per_source = n;
    }
    let extra_args = vec![
        "--engine-defaults".to_owned(),
        "--max-connections".to_owned(),
        server.max_connections.to_string(),
        "--max-pending".to_owned(),
        server.max_pending.to_string(),
        "--max-pending-per-source".to_owned(),
        server.max_pending_per_source.to_string(),
        "--max-auth-failures-per-source".to_owned(),
        server.max_auth_failures_per_source.to_string(),
        "--auth-failure-delay-ms".to_owned(),
        server.auth_failure_delay_ms.to_string(),
        "--auth-timeout-ms".to_owned(),
        server.auth_timeout_ms.to_string(),
    ];
    let proc = ServerProcess::spawn(
        Implementation::Conduit,
        &SpawnOptions {
            heartbeat: Duration::from_secs(30),
            shards: a.shards,
            cpus: Vec::new(),
            password: BENCH_PASSWORD.into(),
            python: None,
            runtime: a.runtime.into(),
            extra_args,
            // Each close is a `debug` line of its connection (with its reason): the
            // brute-force report times the server's failed logins from them.
            log_filter: Some("warn,conduit::shard::conn=debug".into()),
        },
    )?;
    server.runtime = proc.runtime.map(|r| r.name().to_owned());
    let addr = proc.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let started_wall = SystemTime::now();
    let started = Instant::now();
    let attack = {
        let stop = stop.clone();
        let give_up = Duration::from_millis(a.give_up_ms);
        let mode = a.mode;
        std::thread::Builder::new()
            .name("attack".into())
            .spawn(move || match mode {
                AttackMode::Lockout => Attack::Lockout(lockout(addr, attackers, &stop)),
                AttackMode::Bruteforce => {
                    Attack::Bruteforce(bruteforce(addr, codec, attackers, give_up, &stop))
                }
            })?
    };
    // The real clients, evenly over the attack after its warm-up.
    let warmup = WARMUP.min(duration / 4);
    let window = duration.saturating_sub(warmup);
    let outcomes = Arc::new(Mutex::new(Vec::with_capacity(a.clients)));
    let mut threads = Vec::with_capacity(a.clients);
    for i in 0..a.clients {
        let at = warmup + window.mul_f64(i as f64 / a.clients as f64);
        if let Some(wait) = at.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let mine = outcomes.clone();
        let spawned = std::thread::Builder::new()
            .name("client".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let t = Instant::now();
                let o = real_login(client_addr(i), addr, codec, login_timeout, i as u64);
                let ms = t.elapsed().as_secs_f64() * 1e3;
                mine.lock().unwrap_or_else(|p| p.into_inner()).push((o, ms));
            });
        match spawned {
            Ok(h) => threads.push(h),
            Err(e) => outcomes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((Outcome::Failed(format!("no thread: {e}")), 0.0)),
        }
    }
    for h in threads {
        let _ = h.join();
    }
    if let Some(rest) = duration.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    stop.store(true, Ordering::Release);
    let attack = attack
        .join()
        .map_err(|_| Error::Runtime("the attacking thread panicked".into()))?;
    let attack_s = started.elapsed().as_secs_f64();
    std::thread::sleep(SETTLE);
    let log = proc.log.clone();
    proc.stop();

    let mut clients = ClientReport::default();
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|p| p.into_inner()));
    for (o, ms) in outcomes {
        clients.attempted += 1;
        match o {
            Outcome::Succeeded => {
                clients.succeeded += 1;
                clients.max_login_ms = clients.max_login_ms.max(ms);
            }
            Outcome::Refused(r) => {
                if r.starts_with(SERVER_FULL_PREFIX) {
                    clients.server_full += 1;
                }
                *clients.refused.entry(r).or_default() += 1;
            }
            Outcome::Failed(e) => *clients.failed.entry(e).or_default() += 1,
        }
    }
    clients.success_pct = if clients.attempted == 0 {
        0.0
    } else {
        100.0 * clients.succeeded as f64 / clients.attempted as f64
    };
    let (lockout, bruteforce) = match attack {
        Attack::Lockout(l) => (Some(l), None),
        Attack::Bruteforce(mut b) => {
            let half = attack_s / 2.0;
            b.report.guesses_per_s = b.report.guesses as f64 / attack_s;
            let late = b.guess_times.iter().filter(|&&t| t >= half).count();
            b.report.guesses_per_s_second_half = late as f64 / (attack_s - half);
            let times = server_failures(&log, started_wall)?;
            b.report.server_failures = times.len() as u64;
            b.report.server_failures_per_s = times.len() as f64 / attack_s;
            let late = times.iter().filter(|&&t| t >= half).count();
            b.report.server_failures_per_s_second_half = late as f64 / (attack_s - half);
            (None, Some(b.report))
        }
    };
    Ok(AttackReport {
        mode: a.mode,
        budgets: a.budgets,
        codec: crate::scenario::codec_name(codec).to_owned(),
        attackers,
        attack_s,
        open_files_limit: limit,
        server,
        clients,
        lockout,
        bruteforce,
        server_log: log,
    })
}

enum Attack {
    Lockout(LockoutReport),
    Bruteforce(Guesser),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_are_distinct_loopback_and_not_the_attacker() {
        let all: std::collections::HashSet<_> = (0..MAX_CLIENTS).map(client_addr).collect();
        assert_eq!(all.len(), MAX_CLIENTS);
        assert!(all.iter().all(|a| a.is_loopback() && *a != ATTACKER_ADDR));
        assert_eq!(client_addr(0), Ipv4Addr::new(127, 0, 1, 1));
        assert_eq!(client_addr(254), Ipv4Addr::new(127, 0, 2, 1));
    }

    #[test]
    fn arguments_are_bounded() {
        use clap::Parser;
        let args = |extra: &[&str]| {
            /// The subcommand's arguments alone.
            #[derive(clap::Parser)]
            struct Only {
                #[command(flatten)]
                a: AttackArgs,
            }
            let mut v = vec!["attack"];
            v.extend_from_slice(extra);
            Only::try_parse_from(v).unwrap().a
        };
        let a = args(&["--mode", "lockout"]);
        assert_eq!(
            (a.clients, a.duration_s, a.budgets),
            (200, 10.0, BudgetsArg::Engine)
        );
        for bad in [
            &["--mode", "lockout", "--attackers", "0"][..],
            &["--mode", "lockout", "--attackers", "4001"],
            &["--mode", "bruteforce", "--attackers", "513"],
            &["--mode", "lockout", "--clients", "5001"],
            &["--mode", "lockout", "--duration-s", "121"],
            &["--mode", "bruteforce", "--give-up-ms", "0"],
            &["--mode", "lockout", "--auth-timeout-s", "0"],
            &["--mode", "lockout", "--auth-timeout-s=-1"],
        ] {
            assert!(matches!(run(&args(bad)), Err(Error::Args(_))), "{bad:?}");
        }
    }
}
