//! The server under test: our own `serve` started as a child process, the Python
//! netconduit 5.0.0 reference server (installed into a venv this module creates), or
//! a server someone else started.
//!
//! Children get a pipe as stdin and stop when it closes, so a load generator that
//! dies never leaves servers behind.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use conduit::Runtime;

use crate::serve::parse_ready;
use crate::{Error, Result};

/// How Redis runs are named in reports (`redis/resp`'s first part).
pub const REDIS_TARGET_NAME: &str = "redis";

/// The netconduit version the comparison runs against.
pub const NETCONDUIT_VERSION: &str = "5.0.0";

/// The reference server script (kept in the repo at `loadgen/python/`).
pub const REFERENCE_SERVER_PY: &str = include_str!("../python/reference_server.py");

/// How long a server may take to print its READY line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stopping server may take before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long creating the venv (and installing netconduit) may take.
pub const VENV_TIMEOUT: Duration = Duration::from_secs(600);

/// Password every spawned server uses.
pub const BENCH_PASSWORD: &str = "bench-password";

/// The workspace's `target/` directory (`CARGO_TARGET_DIR` when set).
pub fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("target")
}

/// Where results and server logs go: `target/loadgen/`.
pub fn output_dir() -> PathBuf {
    target_dir().join("loadgen")
}

/// Which server implementation a spawned target runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Implementation {
    /// `conduit-loadgen serve` (this engine).
    Conduit,
    /// The Python netconduit 5.0.0 reference server.
    Netconduit,
    /// `redis-server` (the suite's `--compare redis`; started by
    /// `redis::RedisServer`, not by [`ServerProcess::spawn`]).
    Redis,
}

impl Implementation {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Implementation::Conduit => "conduit",
            Implementation::Netconduit => "netconduit",
            Implementation::Redis => REDIS_TARGET_NAME,
        }
    }
}

/// Settings for a spawned server.
#[derive(Clone, Debug)]
pub struct SpawnOptions {
    /// Heartbeat interval (netconduit rounds to whole seconds, at least 1).
    pub heartbeat: Duration,
    /// Shards (conduit only).
    pub shards: usize,
    /// Pin the server to these CPUs (none: not pinned). netconduit, single-threaded,
    /// takes the first.
    pub cpus: Vec<usize>,
    /// Password.
    pub password: String,
    /// The Python interpreter (netconduit only).
    pub python: Option<PathBuf>,
    /// The runtime backend asked of the server (conduit only).
    pub runtime: Runtime,
    /// More `serve` options (conduit only).
    pub extra_args: Vec<String>,
    /// The server's log filter (`RUST_LOG`; default `warn`; conduit only).
    pub log_filter: Option<String>,
}

/// A running server child. Dropping it stops the server (stdin closes), killing it
/// if it does not exit within [`STOP_TIMEOUT`].
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its WebSocket listener listens, when it has one (`serve
    /// --websocket-port`).
    pub ws_addr: Option<SocketAddr>,
    /// Its pid, for `/proc`.
    pub pid: u32,
    /// Where its Prometheus exporter listens, when it has one (`serve --metrics-addr`).
    pub metrics_addr: Option<SocketAddr>,
    /// The runtime backend it says it runs on (conduit: what `Auto` resolved to, or
    /// the backend asked for; `None` for netconduit).
    pub runtime: Option<Runtime>,
    /// Its log file (stderr).
    pub log: PathBuf,
}

impl ServerProcess {
    /// Starts `implementation` with `opts` and waits for it to accept connections.
    pub fn spawn(implementation: Implementation, opts: &SpawnOptions) -> Result<ServerProcess> {
        let (log, log_file) = new_log(implementation.name())?;
        let mut cmd = match implementation {
            Implementation::Conduit => {
                let exe = std::env::current_exe()?;
                let mut c = Command::new(exe);
                c.args(["serve", "--host", "127.0.0.1", "--port", "0"])
                    .arg("--shards")
                    .arg(opts.shards.to_string())
                    .arg("--heartbeat-ms")
                    .arg(opts.heartbeat.as_millis().to_string())
                    .arg("--password")
                    .arg(&opts.password)
                    .arg("--runtime")
                    .arg(opts.runtime.name())
                    .arg("--stop-on-stdin-eof");
                if !opts.cpus.is_empty() {
                    let list: Vec<String> = opts.cpus.iter().map(usize::to_string).collect();
                    c.arg("--cpus").arg(list.join(","));
                }
                c.args(&opts.extra_args);
                c.env("RUST_LOG", opts.log_filter.as_deref().unwrap_or("warn"));
                // A log read back by a program: no colour codes.
                c.env("NO_COLOR", "1");
                c
            }
            Implementation::Netconduit => {
                let python = opts
                    .python
                    .clone()
                    .ok_or_else(|| Error::Target("no Python interpreter for netconduit".into()))?;
                let script = output_dir().join("reference_server.py");
                std::fs::write(&script, REFERENCE_SERVER_PY)?;
                let port = free_port()?;
                let mut c = Command::new(python);
                c.arg(&script)
                    .args(["--host", "127.0.0.1", "--port"])
                    .arg(port.to_string())
                    .arg("--heartbeat-s")
                    .arg(opts.heartbeat.as_secs().max(1).to_string())
                    .arg("--password")
                    .arg(&opts.password);
                if let Some(cpu) = opts.cpus.first() {
                    c.arg("--cpu").arg(cpu.to_string());
                }
                c
            }
            Implementation::Redis => {
                return Err(Error::Target(
                    "redis-server is started by redis::RedisServer: it speaks RESP".into(),
                ))
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .map_err(|e| Error::Target(format!("cannot start {}: {e}", implementation.name())))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Target("child has no stdout".into()))?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("server-stdout".into())
            .spawn(move || {
                // Forward the READY line, then keep draining so the child never blocks.
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(ready) = parse_ready(&line) {
                        let _ = tx.send(ready);
                    }
                }
            })?;
        let mut proc = ServerProcess {
            child,
            stdin,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ws_addr: None,
            pid: 0,
            metrics_addr: None,
            runtime: None,
            log,
        };
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(ready) => {
                proc.addr.set_port(ready.port);
                proc.pid = ready.pid;
                proc.ws_addr = ready.ws;
                proc.metrics_addr = ready.metrics;
                proc.runtime = ready.runtime;
                Ok(proc)
            }
            Err(_) => Err(Error::Target(format!(
                "{} did not become ready within {READY_TIMEOUT:?}; log {}:\n{}",
                implementation.name(),
                proc.log.display(),
                log_tail(&proc.log, 10)
            ))),
        }
    }

    /// Stops the server and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The last `lines` lines of the log file at `path` (empty if it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut tail: Vec<&str> = text.lines().rev().take(lines).collect();
    tail.reverse();
    tail.join("\n")
}

/// A new log file in `target/loadgen/logs/`, named after `what` and the time.
pub fn new_log(what: &str) -> Result<(PathBuf, std::fs::File)> {
    let logs = output_dir().join("logs");
    std::fs::create_dir_all(&logs)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let log = logs.join(format!("{what}-{stamp}.log"));
    let file = std::fs::File::create(&log)?;
    Ok((log, file))
}

/// A free TCP port on 127.0.0.1 (for servers that cannot bind port 0 and report it).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// The venv shared with the interop tests: `target/netconduit-venv`.
pub fn default_venv() -> PathBuf {
    target_dir().join("netconduit-venv")
}

/// Whether `python` imports netconduit at [`NETCONDUIT_VERSION`].
fn venv_ok(python: &Path) -> bool {
    Command::new(python)
        .args([
            "-c",
            "import conduit, sys; sys.exit(0 if conduit.__version__ == sys.argv[1] else 1)",
            NETCONDUIT_VERSION,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `cmd`, killing it after `timeout`.
fn run_bounded(cmd: &mut Command, what: &str, timeout: Duration) -> Result<()> {
    let mut child = cmd
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| Error::Target(format!("{what}: {e}")))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait()? {
            Some(s) if s.success() => return Ok(()),
            Some(s) => return Err(Error::Target(format!("{what} failed ({s})"))),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Timeout(format!("{what} took over {timeout:?}")));
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Makes sure `venv` holds netconduit [`NETCONDUIT_VERSION`] and returns its Python.
///
/// The venv is built in a temporary directory next to it and renamed into place, so
/// two processes creating it at once never see a half-built one: the loser of the
/// rename removes its copy and uses the winner's.
pub fn ensure_venv(venv: &Path) -> Result<PathBuf> {
    let python = venv.join("bin").join("python");
    if python.exists() {
        if venv_ok(&python) {
            return Ok(python);
        }
        return Err(Error::Target(format!(
            "{} exists but does not import netconduit {NETCONDUIT_VERSION}; remove it to rebuild",
            venv.display()
        )));
    }
    let parent = venv
        .parent()
        .ok_or_else(|| Error::Args(format!("{} has no parent directory", venv.display())))?;
    std::fs::create_dir_all(parent)?;
    let name = venv
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "netconduit-venv".into());
    let tmp = parent.join(format!("{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!(
        "creating {} (python3 -m venv, pip install netconduit=={NETCONDUIT_VERSION})…",
        venv.display()
    );
    let built = (|| {
        run_bounded(
            Command::new("python3").arg("-m").arg("venv").arg(&tmp),
            "python3 -m venv",
            VENV_TIMEOUT,
        )?;
        run_bounded(
            Command::new(tmp.join("bin").join("python")).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                &format!("netconduit=={NETCONDUIT_VERSION}"),
            ]),
            "pip install netconduit",
            VENV_TIMEOUT,
        )
    })();
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, venv) {
        // Someone else finished first (the target is a non-empty directory now).
        let _ = std::fs::remove_dir_all(&tmp);
        if !python.exists() {
            return Err(Error::Target(format!(
                "cannot move the venv into {}: {e}",
                venv.display()
            )));
        }
    }
    if venv_ok(&python) {
        Ok(python)
    } else {
        Err(Error::Target(format!(
            "{} does not import netconduit {NETCONDUIT_VERSION}",
            venv.display()
        )))
    }
}

/// Where a program (a broker, `redis-server`) is looked for after `PATH` (`nats-server` is often
/// installed in an `sbin` directory that is not on a user's `PATH`).
pub const EXTRA_DIRS: [&str; 4] = ["/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/sbin"];

/// `program` on `PATH`, else in `/usr/sbin`, `/usr/local/sbin`, `/usr/local/bin` or `/sbin`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
/// Stops a child process: SIGTERM, then SIGKILL if it has not exited within
/// [`STOP_TIMEOUT`]; reaps it either way.
pub fn terminate(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill only sends a signal; `pid` is our own child, not yet reaped
        // (try_wait above), so the pid cannot have been reused.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
