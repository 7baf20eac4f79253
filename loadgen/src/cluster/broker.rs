//! The broker a `cluster` run's nodes share, started here on a free loopback port and
//! stopped at the end: `redis-server` (no persistence) or `nats-server`.
//!
//! A broker is killed when it is dropped, and — should the load generator die first —
//! when the thread that started it ends (`PR_SET_PDEATHSIG`), so no run leaves one
//! behind.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use conduit::cluster::Broker;

use crate::target::{self, find_program, log_tail, EXTRA_DIRS};
use crate::{Error, Result};

/// How long a broker may take to answer after it started.
pub const BROKER_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker a cluster's nodes can share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BrokerKind {
    /// Redis pub/sub (`redis-server`).
    Redis,
    /// NATS (`nats-server`).
    Nats,
}

impl BrokerKind {
    /// `redis` or `nats`.
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Redis => "redis",
            BrokerKind::Nats => "nats",
        }
    }

    /// The server program.
    pub fn program(self) -> &'static str {
        match self {
            BrokerKind::Redis => "redis-server",
            BrokerKind::Nats => "nats-server",
        }
    }

    /// How to install the server program.
    pub fn install_hint(self) -> &'static str {
        match self {
            BrokerKind::Redis => {
                "install Redis (Debian/Ubuntu: `apt-get install redis-server`; \
                 Fedora: `dnf install redis`; macOS: `brew install redis`)"
            }
            BrokerKind::Nats => {
                "install the NATS server (Debian/Ubuntu: `apt-get install nats-server`; \
                 macOS: `brew install nats-server`; or a release binary from \
                 https://github.com/nats-io/nats-server/releases)"
            }
        }
    }

    /// The URL of the broker at `port` on 127.0.0.1.
    pub fn url(self, port: u16) -> String {
        format!("{}://127.0.0.1:{port}", self.name())
    }

    /// The broker at `url`, as the engine's cluster settings name it.
    pub fn broker(self, url: impl Into<String>) -> Broker {
        match self {
            BrokerKind::Redis => Broker::redis(url),
            BrokerKind::Nats => Broker::nats(url),
        }
    }

    /// The usual local broker, for `serve --cluster-broker` without `--cluster-url`.
    pub fn default_url(self) -> &'static str {
        match self {
            BrokerKind::Redis => "redis://127.0.0.1:6379",
            BrokerKind::Nats => "nats://127.0.0.1:4222",
        }
    }

    /// The arguments that start it on `port`, listening on 127.0.0.1 only (Redis: no
    /// snapshots, no append-only file).
    fn args(self, port: u16) -> Vec<String> {
        let port = port.to_string();
        let args: Vec<&str> = match self {
            BrokerKind::Redis => vec![
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            BrokerKind::Nats => vec!["-a", "127.0.0.1", "-p", &port],
        };
        args.into_iter().map(str::to_owned).collect()
    }

    /// Whether the broker at `addr` answers: Redis a `PING` with `+PONG`, NATS greets
    /// a new connection with `INFO`.
    fn answers(self, addr: SocketAddr) -> bool {
        let probe = || -> std::io::Result<bool> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            let expect: &[u8] = match self {
                BrokerKind::Redis => {
                    s.write_all(b"PING\r\n")?;
                    b"+PONG"
                }
                BrokerKind::Nats => b"INFO",
            };
            let mut got = [0u8; 5];
            let n = s.read(&mut got)?;
            Ok(got[..n].starts_with(expect))
        };
        probe().unwrap_or(false)
    }
}

/// A running broker. Dropping it stops it (SIGTERM, then SIGKILL after
/// [`target::STOP_TIMEOUT`]).
#[derive(Debug)]
pub struct BrokerProcess {
    child: Child,
    /// Which broker.
    pub kind: BrokerKind,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its pid, for `/proc`.
    pub pid: u32,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
}

impl BrokerProcess {
    /// Starts `kind` on a free port of 127.0.0.1 and waits until it answers. The
    /// calling thread must outlive the broker (it dies with that thread).
    pub fn start(kind: BrokerKind) -> Result<BrokerProcess> {
        let program = find_program(kind.program()).ok_or_else(|| {
            Error::Target(format!(
                "`{}` is not on PATH (nor in {}): {}",
                kind.program(),
                EXTRA_DIRS.join(", "),
                kind.install_hint()
            ))
        })?;
        let port = target::free_port()?;
        let (log, file) = target::new_log(kind.program())?;
        let mut cmd = Command::new(&program);
        cmd.args(kind.args(port))
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file));
        // SAFETY: the closure runs in the child between fork and exec and only calls
        // prctl, which is async-signal-safe; it touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::Target(format!("cannot start {}: {e}", program.display())))?;
        let mut broker = BrokerProcess {
            pid: child.id(),
            child,
            kind,
            port,
            log,
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + BROKER_READY_TIMEOUT;
        loop {
            if let Some(status) = broker.child.try_wait()? {
                return Err(Error::Target(format!(
                    "{} exited at start ({status}); log {}:\n{}",
                    kind.program(),
                    broker.log.display(),
                    log_tail(&broker.log, 10)
                )));
            }
            if kind.answers(addr) {
                return Ok(broker);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "{} did not answer on {addr} within {BROKER_READY_TIMEOUT:?}; log {}:\n{}",
                    kind.program(),
                    broker.log.display(),
                    log_tail(&broker.log, 10)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where the nodes reach it.
    pub fn url(&self) -> String {
        self.kind.url(self.port)
    }

    /// Stops it and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        target::terminate(&mut self.child);
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_and_addresses() {
        let redis = BrokerKind::Redis.args(6400);
        assert_eq!(
            redis,
            [
                "--port",
                "6400",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no"
            ]
        );
        assert_eq!(
            BrokerKind::Nats.args(4300),
            ["-a", "127.0.0.1", "-p", "4300"]
        );
        assert_eq!(BrokerKind::Redis.url(6400), "redis://127.0.0.1:6400");
        assert_eq!(BrokerKind::Nats.url(4300), "nats://127.0.0.1:4300");
        assert_eq!(
            BrokerKind::Redis.broker(BrokerKind::Redis.default_url()),
            Broker::redis("redis://127.0.0.1:6379")
        );
        assert_eq!(BrokerKind::Nats.broker("nats://x:1").kind(), "nats");
        assert!(BrokerKind::Nats.install_hint().contains("nats-server"));
        assert!(find_program("surely-no-such-program-here").is_none());
        assert!(find_program("sh").is_some());
    }

    #[test]
    fn a_missing_broker_says_how_to_install_it() {
        // Whichever brokers this machine has: a missing one fails with the hint, a
        // present one starts, answers and stops.
        for kind in [BrokerKind::Redis, BrokerKind::Nats] {
            match BrokerProcess::start(kind) {
                Ok(b) => {
                    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, b.port));
                    assert!(kind.answers(addr));
                    b.stop();
                    assert!(!kind.answers(addr));
                }
                Err(Error::Target(m)) if find_program(kind.program()).is_none() => {
                    assert!(m.contains("install"), "{m}");
                }
                Err(e) => panic!("{}: {e}", kind.program()),
            }
        }
    }
}
