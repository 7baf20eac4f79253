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

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use conduit_protocol::clock::wall_clock_ms;
use conduit_protocol::handshake::{ClientHandshake, ClientStep, HandshakeError};
use conduit_protocol::v1::V1Limits;
use conduit_protocol::{Codec, DecoderLimits, FrameDecoder};
use serde::Serialize;

use crate::cli::{CodecArg, RuntimeArg};
use crate::target::{Implementation, ServerProcess, SpawnOptions, BENCH_PASSWORD};
use crate::wire::{nonce, CLIENT_MAX_PAYLOAD_BYTES, CLIENT_NAME};
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

/// The server an attack ran against.
#[derive(Clone, Debug, Serialize)]
pub struct ServerSettings {
    /// Backend it ran on.
    pub runtime: Option<String>,
    /// Shards.
    pub shards: usize,
    /// `max_connections`.
    pub max_connections: usize,
    /// `max_pending`.
    pub max_pending: usize,
    /// `max_pending_per_source`.
    pub max_pending_per_source: usize,
    /// `max_auth_failures_per_source`.
    pub max_auth_failures_per_source: u32,
    /// `auth_failure_delay`, ms.
    pub auth_failure_delay_ms: u64,
    /// `auth_timeout`, ms.
    pub auth_timeout_ms: u64,
}

/// What the real clients got.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClientReport {
    /// Logins started.
    pub attempted: u64,
    /// Logged in.
    pub succeeded: u64,
    /// Refused with an AUTH_FAILURE, by reason.
    pub refused: BTreeMap<String, u64>,
    /// Failed otherwise (closed without a reason, timed out, socket errors), by cause.
    pub failed: BTreeMap<String, u64>,
    /// Refused "server full …".
    pub server_full: u64,
    /// `succeeded` / `attempted`, percent.
    pub success_pct: f64,
    /// Slowest successful login, ms.
    pub max_login_ms: f64,
}

/// What the lockout attacker did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LockoutReport {
    /// Sockets opened (connect started).
    pub opened: u64,
    /// Closed by the server (EOF or reset), each re-opened.
    pub closed_by_server: u64,
    /// Bytes the server sent the silent sockets (a refusal needs the peer to speak).
    pub bytes_received: u64,
    /// Sockets that could not be opened, by error.
    pub open_errors: BTreeMap<String, u64>,
    /// Sockets open at the end.
    pub open_at_end: usize,
}

/// What the guesser did and what the server counted.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BruteforceReport {
    /// Connections made.
    pub connections: u64,
    /// Connections refused before any guess, by reason.
    pub refused: BTreeMap<String, u64>,
    /// Connections that ended otherwise before a guess (no challenge in time, closed
    /// without a reason, connect errors), by cause.
    pub failed: BTreeMap<String, u64>,
    /// Guesses sent on an admitted, unrefused connection (see the module docs).
    pub guesses: u64,
    /// Of those, answered "Invalid password" within the give-up time.
    pub guesses_answered: u64,
    /// `guesses` per second over the attack.
    pub guesses_per_s: f64,
    /// `guesses` per second over the attack's second half.
    pub guesses_per_s_second_half: f64,
    /// Failed logins the server logged (`reason=AuthFailed`).
    pub server_failures: u64,
    /// `server_failures` per second over the attack.
    pub server_failures_per_s: f64,
    /// Of `server_failures`, per second over the attack's second half.
    pub server_failures_per_s_second_half: f64,
}

/// The result of one `attack` run.
#[derive(Clone, Debug, Serialize)]
pub struct AttackReport {
    /// The attack.
    pub mode: AttackMode,
    /// The login budgets asked for.
    pub budgets: BudgetsArg,
    /// The codec spoken.
    pub codec: String,
    /// Attacking sockets.
    pub attackers: usize,
    /// How long the attack ran, seconds.
    pub attack_s: f64,
    /// This process's open-files limit (soft) during the run.
    pub open_files_limit: u64,
    /// The server.
    pub server: ServerSettings,
    /// The real clients.
    pub clients: ClientReport,
    /// lockout: the attacker.
    pub lockout: Option<LockoutReport>,
    /// bruteforce: the guesser and the server's count.
    pub bruteforce: Option<BruteforceReport>,
    /// The server's log.
    pub server_log: PathBuf,
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
    if !(a.auth_timeout_s > 0.0 && a.auth_timeout_s <= crate::cli::MAX_SECONDS_ARG) {
        return Err(Error::Args(format!(
            "--auth-timeout-s must be in (0, {}] seconds",
            crate::cli::MAX_SECONDS_ARG
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
            log_filter: Some("warn,conduit::shard::conn=info".into()),
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

/// The report as text.
pub fn render(r: &AttackReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let srv = &r.server;
    let _ = writeln!(
        s,
        "attack {:?} ({} budgets, {}): {} attacking sockets from {ATTACKER_ADDR}, {:.1} s",
        r.mode,
        match r.budgets {
            BudgetsArg::Engine => "engine",
            BudgetsArg::Off => "off",
        },
        r.codec,
        r.attackers,
        r.attack_s
    );
    let _ = writeln!(
        s,
        "server: runtime {} shards {} max_connections {} max_pending {} max_pending_per_source {} \
         max_auth_failures_per_source {} auth_failure_delay {} ms auth_timeout {} ms",
        srv.runtime.as_deref().unwrap_or("?"),
        srv.shards,
        srv.max_connections,
        srv.max_pending,
        srv.max_pending_per_source,
        srv.max_auth_failures_per_source,
        srv.auth_failure_delay_ms,
        srv.auth_timeout_ms
    );
    let c = &r.clients;
    let _ = writeln!(
        s,
        "real logins: attempted {} succeeded {} ({:.1} %) server-full {} slowest {:.0} ms",
        c.attempted, c.succeeded, c.success_pct, c.server_full, c.max_login_ms
    );
    for (why, n) in &c.refused {
        let _ = writeln!(s, "  refused {n}: {why}");
    }
    for (why, n) in &c.failed {
        let _ = writeln!(s, "  failed {n}: {why}");
    }
    if let Some(l) = &r.lockout {
        let _ = writeln!(
            s,
            "attacker: opened {} closed by the server {} (bytes received {}) open at the end {}",
            l.opened, l.closed_by_server, l.bytes_received, l.open_at_end
        );
        for (why, n) in &l.open_errors {
            let _ = writeln!(s, "  open error {n}: {why}");
        }
    }
    if let Some(b) = &r.bruteforce {
        let _ = writeln!(
            s,
            "guesser: connections {} guesses {} ({:.1}/s, second half {:.1}/s; answered {})",
            b.connections,
            b.guesses,
            b.guesses_per_s,
            b.guesses_per_s_second_half,
            b.guesses_answered
        );
        let _ = writeln!(
            s,
            "server counted failed logins: {} ({:.1}/s, second half {:.1}/s)",
            b.server_failures, b.server_failures_per_s, b.server_failures_per_s_second_half
        );
        for (why, n) in &b.refused {
            let _ = writeln!(s, "  refused {n}: {why}");
        }
        for (why, n) in &b.failed {
            let _ = writeln!(s, "  failed {n}: {why}");
        }
    }
    let _ = writeln!(
        s,
        "open-files limit {}; server log {}",
        r.open_files_limit,
        r.server_log.display()
    );
    s
}

/// How one real login ended.
#[derive(Debug)]
enum Outcome {
    Succeeded,
    Refused(String),
    Failed(String),
}

enum Attack {
    Lockout(LockoutReport),
    Bruteforce(Guesser),
}

/// A socket address as `sockaddr_in`.
fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A non-blocking socket bound to `from` (its port chosen at connect, so one source
/// address is not limited to one ephemeral port range per destination) whose connect
/// to `to` has started.
fn start_connect(from: Ipv4Addr, to: SocketAddr) -> io::Result<OwnedFd> {
    let SocketAddr::V4(to) = to else {
        return Err(io::Error::other("IPv4 only"));
    };
    if !to.ip().is_loopback() || !from.is_loopback() {
        return Err(io::Error::other("loopback only"));
    }
    // SAFETY: plain socket calls on a descriptor this function owns from its creation;
    // every pointer passed points at a live local of the size given.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let p = (&one as *const libc::c_int).cast();
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            p,
            len,
        );
        libc::setsockopt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, p, len);
        let src = sockaddr(SocketAddrV4::new(from, 0));
        let slen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(
            fd.as_raw_fd(),
            (&src as *const libc::sockaddr_in).cast(),
            slen,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        let dst = sockaddr(to);
        if libc::connect(
            fd.as_raw_fd(),
            (&dst as *const libc::sockaddr_in).cast(),
            slen,
        ) != 0
        {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(fd)
    }
}

/// Waits up to `timeout` for `events` on `fd`; the events seen (0: timed out).
fn poll_one(fd: &OwnedFd, events: libc::c_short, timeout: Duration) -> io::Result<libc::c_short> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one pollfd, alive for the call.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if n == 0 { 0 } else { p.revents })
}

/// A blocking TCP connection from `from` to `to`, within `timeout`.
fn connect_from(from: Ipv4Addr, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let fd = start_connect(from, to)?;
    if poll_one(&fd, libc::POLLOUT, timeout)? == 0 {
        return Err(io::ErrorKind::TimedOut.into());
    }
    let stream = TcpStream::from(fd);
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// A decoder for one client connection in `codec`.
fn decoder(codec: Codec) -> FrameDecoder {
    FrameDecoder::new(DecoderLimits {
        max_payload_bytes: CLIENT_MAX_PAYLOAD_BYTES,
        initial_buffer_bytes: 1024,
        accept_v1: codec == Codec::V1,
        accept_native: codec == Codec::Native,
    })
}

/// What waiting for the server's next login frame gave.
enum Next {
    Step(Result<ClientStep, HandshakeError>),
    /// Nothing by the deadline.
    TimedOut,
    /// Closed without a frame.
    Closed,
}

/// The handshake's next step from the server's next frame, by `deadline`.
fn next_step(
    stream: &mut TcpStream,
    dec: &mut FrameDecoder,
    hs: &mut ClientHandshake,
    deadline: Instant,
) -> io::Result<Next> {
    let limits = V1Limits::default();
    loop {
        match dec.next_frame() {
            Ok(Some(f)) => return Ok(Next::Step(hs.on_frame(&f, &limits, wall_clock_ms()))),
            Ok(None) => {}
            Err(e) => return Ok(Next::Step(Err(HandshakeError::Wire(e)))),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Next::TimedOut);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(dec.spare()) {
            Ok(0) => return Ok(Next::Closed),
            Ok(n) => dec.commit(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Next::TimedOut)
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(Next::Closed),
            Err(e) => return Err(e),
        }
    }
}

/// One real login from `from` with the right password, within `timeout`.
fn real_login(
    from: Ipv4Addr,
    to: SocketAddr,
    codec: Codec,
    timeout: Duration,
    seed: u64,
) -> Outcome {
    let deadline = Instant::now() + timeout;
    let mut stream = match connect_from(from, to, timeout.min(CONNECT_TIMEOUT)) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("connect: {}", e.kind())),
    };
    let mut dec = decoder(codec);
    let mut hs = ClientHandshake::new(
        codec,
        BENCH_PASSWORD,
        nonce(seed),
        CLIENT_NAME,
        env!("CARGO_PKG_VERSION"),
    );
    let mut out = match hs.start(wall_clock_ms()) {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(format!("handshake: {e}")),
    };
    loop {
        if let Err(e) = stream.write_all(&out) {
            return Outcome::Failed(format!("write: {}", e.kind()));
        }
        match next_step(&mut stream, &mut dec, &mut hs, deadline) {
            Ok(Next::Step(Ok(ClientStep::Send(b)))) => out = b,
            Ok(Next::Step(Ok(ClientStep::Done(_)))) => return Outcome::Succeeded,
            Ok(Next::Step(Err(HandshakeError::Rejected(r)))) => return Outcome::Refused(r),
            Ok(Next::Step(Err(e))) => return Outcome::Failed(format!("handshake: {e}")),
            Ok(Next::TimedOut) => return Outcome::Failed("timed out".into()),
            Ok(Next::Closed) => return Outcome::Failed("closed without a reason".into()),
            Err(e) => return Outcome::Failed(format!("read: {}", e.kind())),
        }
    }
}

/// Holds `n` silent sockets from [`ATTACKER_ADDR`], re-opening each the server closes,
/// until `stop`.
fn lockout(to: SocketAddr, n: usize, stop: &AtomicBool) -> LockoutReport {
    let mut r = LockoutReport::default();
    let mut socks: Vec<Option<OwnedFd>> = (0..n).map(|_| None).collect();
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(n);
    let mut which: Vec<usize> = Vec::with_capacity(n);
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Acquire) {
        let mut errors = false;
        for slot in socks.iter_mut().filter(|s| s.is_none()) {
            match start_connect(ATTACKER_ADDR, to) {
                Ok(fd) => {
                    r.opened += 1;
                    *slot = Some(fd);
                }
                Err(e) => {
                    errors = true;
                    *r.open_errors.entry(e.to_string()).or_default() += 1;
                    break;
                }
            }
        }
        fds.clear();
        which.clear();
        for (i, s) in socks.iter().enumerate() {
            if let Some(fd) = s {
                fds.push(libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                which.push(i);
            }
        }
        let wait = if errors { 5 } else { 50 };
        // SAFETY: `fds` is a live array of `fds.len()` pollfds for the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
        if ready <= 0 {
            continue;
        }
        for (p, &i) in fds.iter().zip(&which) {
            if p.revents == 0 {
                continue;
            }
            let Some(fd) = &socks[i] else { continue };
            // SAFETY: reads into `buf` from a descriptor `socks[i]` owns.
            let got = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if got > 0 {
                r.bytes_received += got as u64;
                continue;
            }
            if got < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                continue;
            }
            // EOF, a reset or a failed connect: gone; re-opened on the next round.
            r.closed_by_server += 1;
            socks[i] = None;
        }
    }
    r.open_at_end = socks.iter().filter(|s| s.is_some()).count();
    r
}

/// What the guessing connections did.
#[derive(Default)]
struct Guesser {
    report: BruteforceReport,
    /// When each guess was sent, seconds from the start of the attack.
    guess_times: Vec<f64>,
}

/// `n` threads guessing from [`ATTACKER_ADDR`] until `stop`.
fn bruteforce(
    to: SocketAddr,
    codec: Codec,
    n: usize,
    give_up: Duration,
    stop: &Arc<AtomicBool>,
) -> Guesser {
    let start = Instant::now();
    let mut threads = Vec::with_capacity(n);
    for t in 0..n {
        let stop = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("guesser".into())
            .stack_size(256 * 1024)
            .spawn(move || guess_loop(to, codec, give_up, &stop, start, t as u64));
        if let Ok(h) = spawned {
            threads.push(h);
        }
    }
    let mut all = Guesser::default();
    for h in threads {
        let Ok(g) = h.join() else { continue };
        let (a, b) = (&mut all.report, g.report);
        a.connections += b.connections;
        a.guesses += b.guesses;
        a.guesses_answered += b.guesses_answered;
        for (k, v) in b.refused {
            *a.refused.entry(k).or_default() += v;
        }
        for (k, v) in b.failed {
            *a.failed.entry(k).or_default() += v;
        }
        all.guess_times.extend(g.guess_times);
    }
    all
}

/// One guessing connection after another until `stop`.
fn guess_loop(
    to: SocketAddr,
    codec: Codec,
    give_up: Duration,
    stop: &AtomicBool,
    start: Instant,
    seed: u64,
) -> Guesser {
    let mut g = Guesser::default();
    let mut attempt = 0u64;
    while !stop.load(Ordering::Acquire) {
        attempt += 1;
        let r = &mut g.report;
        let mut stream = match connect_from(ATTACKER_ADDR, to, CONNECT_TIMEOUT) {
            Ok(s) => s,
            Err(e) => {
                *r.failed
                    .entry(format!("connect: {}", e.kind()))
                    .or_default() += 1;
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        r.connections += 1;
        let mut dec = decoder(codec);
        let mut hs = ClientHandshake::new(
            codec,
            WRONG_PASSWORD,
            nonce(seed << 32 | attempt),
            CLIENT_NAME,
            env!("CARGO_PKG_VERSION"),
        );
        let Ok(first) = hs.start(wall_clock_ms()) else {
            continue;
        };
        if let Err(e) = stream.write_all(&first) {
            *r.failed.entry(format!("write: {}", e.kind())).or_default() += 1;
            continue;
        }
        // Native: the server's challenge says it admitted the connection; v1's first
        // frame is the guess itself.
        if codec == Codec::Native {
            let next = next_step(
                &mut stream,
                &mut dec,
                &mut hs,
                Instant::now() + CHALLENGE_WAIT,
            );
            match next {
                Ok(Next::Step(Ok(ClientStep::Send(proof)))) => {
                    if let Err(e) = stream.write_all(&proof) {
                        *r.failed.entry(format!("write: {}", e.kind())).or_default() += 1;
                        continue;
                    }
                }
                Ok(Next::Step(Err(HandshakeError::Rejected(why)))) => {
                    *r.refused.entry(why).or_default() += 1;
                    continue;
                }
                Ok(Next::Step(other)) => {
                    let why = match other {
                        Ok(_) => "logged in".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    *r.failed.entry(why).or_default() += 1;
                    continue;
                }
                Ok(Next::TimedOut) => {
                    *r.failed.entry("no challenge in time".into()).or_default() += 1;
                    continue;
                }
                Ok(Next::Closed) => {
                    *r.failed
                        .entry("closed without a reason".into())
                        .or_default() += 1;
                    continue;
                }
                Err(e) => {
                    *r.failed.entry(format!("read: {}", e.kind())).or_default() += 1;
                    continue;
                }
            }
        }
        let sent = start.elapsed().as_secs_f64();
        // Give up after `give_up` unless the server answers first.
        match next_step(&mut stream, &mut dec, &mut hs, Instant::now() + give_up) {
            Ok(Next::Step(Err(HandshakeError::Rejected(why)))) if why != WRONG_PASSWORD_REASON => {
                // v1: refused before its guess was looked at.
                *r.refused.entry(why).or_default() += 1;
            }
            Ok(Next::Step(Err(HandshakeError::Rejected(_)))) => {
                r.guesses += 1;
                r.guesses_answered += 1;
                g.guess_times.push(sent);
            }
            Ok(Next::Closed) if codec == Codec::V1 => {
                *r.failed
                    .entry("closed without a reason".into())
                    .or_default() += 1;
            }
            _ => {
                r.guesses += 1;
                g.guess_times.push(sent);
            }
        }
    }
    g
}

/// When the server logged each failed login (`disconnected … reason=AuthFailed`),
/// seconds from `start` (by the time of day of the log's UTC timestamps).
fn server_failures(log: &std::path::Path, start: SystemTime) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(log)?;
    let since_epoch = start
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let start_of_day = since_epoch.rem_euclid(86_400.0);
    Ok(text
        .lines()
        .filter(|l| l.contains("disconnected") && l.contains("reason=AuthFailed"))
        .map(|l| {
            time_of_day(l).map_or(0.0, |t| {
                let d = (t - start_of_day).rem_euclid(86_400.0);
                // Just before the start (clock granularity): the start.
                if d > 86_000.0 {
                    0.0
                } else {
                    d
                }
            })
        })
        .collect())
}

/// Seconds since midnight of a log line's leading `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn time_of_day(line: &str) -> Option<f64> {
    let t = line.trim_start().get(11..)?;
    let end = t.find('Z')?;
    let mut parts = t[..end].split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
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
    fn log_timestamps() {
        let l = "2026-12-06T10:11:12.500000Z  INFO conduit::shard::conn: disconnected \
                 conn=1 reason=AuthFailed";
        assert_eq!(time_of_day(l), Some(36_672.5));
        assert_eq!(time_of_day("garbage"), None);
    }

    #[test]
    fn arguments_are_bounded() {
        use clap::Parser;
        let args = |extra: &[&str]| {
            let mut v = vec!["conduit-loadgen", "attack"];
            v.extend_from_slice(extra);
            match crate::cli::Cli::try_parse_from(v).unwrap().command {
                crate::cli::Command::Attack(a) => a,
                other => panic!("not an attack: {other:?}"),
            }
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

    #[test]
    fn only_loopback() {
        let far: SocketAddr = "192.0.2.1:80".parse().unwrap();
        assert!(start_connect(ATTACKER_ADDR, far).is_err());
    }
}
