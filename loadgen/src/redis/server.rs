//! The `redis-server` the comparison measures, started here and never installed: on a
//! free loopback port, without persistence (`--save '' --appendonly no`), in the
//! foreground (`--daemonize no`, so its pid is the one `/proc` is read for), with the
//! suite's password (`requirepass`: every client sends `AUTH`, as every client of ours
//! logs in), and pinned to the CPUs our server gets.
//!
//! It is killed when dropped, and — should the load generator die first — when the
//! thread that started it ends (`PR_SET_PDEATHSIG`), so no run leaves one behind.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::resp;
use crate::target::{self, find_program, log_tail};
use crate::{Error, Result};

/// The program looked for on `PATH`.
pub const REDIS_PROGRAM: &str = "redis-server";

/// How to get the program when it is missing.
pub const REDIS_INSTALL_HINT: &str = "install Redis 7 (Debian/Ubuntu: `apt-get install \
     redis-server`; Fedora: `dnf install redis`; macOS: `brew install redis`), or name the \
     binary with `--redis-server PATH`";

/// How long Redis may take to accept an authenticated connection after it started.
pub const REDIS_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The `redis-server` to run: `explicit` when given (it must be an executable file),
/// else the one on `PATH`. Fails with [`REDIS_INSTALL_HINT`] when there is none.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    match explicit {
        Some(p) if p.is_file() => Ok(p.to_path_buf()),
        Some(p) => Err(Error::Target(format!(
            "--redis-server {}: no such file; {REDIS_INSTALL_HINT}",
            p.display()
        ))),
        None => find_program(REDIS_PROGRAM).ok_or_else(|| {
            Error::Target(format!(
                "`{REDIS_PROGRAM}` is not on PATH, and --compare redis needs it: \
                 {REDIS_INSTALL_HINT}"
            ))
        }),
    }
}

/// The version `program --version` reports (`7.0.15`), or its first line when the
/// format is unfamiliar.
pub fn version(program: &Path) -> Option<String> {
    let out = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next()?.trim().to_owned();
    Some(
        first
            .split_ascii_whitespace()
            .find_map(|w| w.strip_prefix("v="))
            .map_or(first.clone(), str::to_owned),
    )
}

/// The arguments that start Redis on `port` of 127.0.0.1 with `password`, no
/// persistence, in the foreground, its working directory `dir`.
pub fn arguments(port: u16, password: &str, dir: &Path) -> Vec<String> {
    let args = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--requirepass",
        password,
        "--dir",
        &dir.to_string_lossy(),
    ]
    .map(str::to_owned);
    args.to_vec()
}

/// A running `redis-server`. Dropping it stops it (SIGTERM, then SIGKILL after
/// [`target::STOP_TIMEOUT`]).
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    /// Its pid, for `/proc`: its CPU time and RSS, all threads included.
    pub pid: u32,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
}

impl RedisServer {
    /// Starts `program` on a free port with `password`, pinned to `cpus` (none: not
    /// pinned), and waits until it accepts `AUTH`. The calling thread must outlive
    /// it (it dies with that thread).
    pub fn start(program: &Path, password: &str, cpus: &[usize]) -> Result<RedisServer> {
        let port = target::free_port()?;
        let (log, file) = target::new_log("redis-server")?;
        let dir = target::output_dir();
        let mut cmd = Command::new(program);
        cmd.args(arguments(port, password, &dir))
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file));
        // SAFETY: zeroed is a valid (empty) cpu_set_t; CPU_SET only sets bits in it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in cpus {
            if cpu < libc::CPU_SETSIZE as usize {
                // SAFETY: `cpu` is within the set's size (checked above).
                unsafe { libc::CPU_SET(cpu, &mut set) };
            }
        }
        let pin = !cpus.is_empty();
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // the prctl and sched_setaffinity system calls, which are async-signal-safe,
        // on a copy of `set`; it touches no other memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if pin && libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::Target(format!("cannot start {}: {e}", program.display())))?;
        let mut server = RedisServer {
            pid: child.id(),
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            log,
        };
        let deadline = Instant::now() + REDIS_READY_TIMEOUT;
        loop {
            if let Some(status) = server.child.try_wait()? {
                return Err(Error::Target(format!(
                    "{} exited at start ({status}); log {}:\n{}",
                    program.display(),
                    server.log.display(),
                    log_tail(&server.log, 10)
                )));
            }
            if accepts_auth(server.addr, password) {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "{} did not accept AUTH on {} within {REDIS_READY_TIMEOUT:?}; log {}:\n{}",
                    program.display(),
                    server.addr,
                    server.log.display(),
                    log_tail(&server.log, 10)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        target::terminate(&mut self.child);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Whether Redis at `addr` answers `AUTH password` with `+OK`.
fn accepts_auth(addr: SocketAddr, password: &str) -> bool {
    let probe = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        let mut auth = Vec::new();
        resp::command(&mut auth, &[b"AUTH", password.as_bytes()]);
        s.write_all(&auth)?;
        let mut got = [0u8; 5];
        let n = s.read(&mut got)?;
        Ok(got[..n].starts_with(b"+OK"))
    };
    probe().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_and_lookup() {
        let args = arguments(6400, "pw", Path::new("/tmp/x"));
        assert_eq!(
            args,
            [
                "--port",
                "6400",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--requirepass",
                "pw",
                "--dir",
                "/tmp/x"
            ]
        );
        match locate(Some(Path::new("/surely/no/redis-server"))) {
            Err(Error::Target(m)) => assert!(m.contains("apt-get install redis-server"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn starts_pinned_authenticates_and_stops() {
        let Ok(program) = locate(None) else {
            eprintln!("skipped: {REDIS_PROGRAM} is not installed");
            return;
        };
        assert!(version(&program).is_some_and(|v| !v.is_empty()));
        let cpu = conduit::descriptor::allowed_cpus().first().copied();
        let server = RedisServer::start(&program, "secret", &Vec::from_iter(cpu)).unwrap();
        assert!(accepts_auth(server.addr, "secret"));
        assert!(!accepts_auth(server.addr, "wrong"));
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid)).unwrap();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_owned();
        if let Some(cpu) = cpu {
            assert_eq!(allowed, cpu.to_string());
        }
        let addr = server.addr;
        server.stop();
        assert!(!accepts_auth(addr, "secret"));
    }
}
