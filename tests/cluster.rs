//! Scale-out across processes: nodes (`cluster-node`, tests/bin/cluster_node.rs) share
//! one broker — a `redis-server` or `nats-server` each test starts on a free loopback
//! port — and clients of both codecs (and the real Python netconduit client) log in
//! to different nodes. Every scenario is written once and runs on both brokers.
//!
//! "Did not receive" is checked exactly, never by waiting: after each case the same
//! sender broadcasts a marker to everyone, and each client reads up to it. Frames from
//! one sender reach every receiver in the order they were sent, across nodes too, so
//! what a client read before the marker is exactly what it received of the case.
//! Everything that takes time (a node taken for dead, a reconnection) is polled with
//! a deadline.
//!
//! Needs `redis-server` and `nats-server` (`.ci/run` installs them); node and broker
//! logs go to `target/tmp/cluster/<test>/` and are printed when a test fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use conduit::{Codec, Value};
use conduit_tests::netconduit::{script, spawn_python};
use conduit_tests::TestClient;

/// The nodes' password.
const PW: &str = "pw";
/// How long a node may take to say its port (or fail).
const NODE_START: Duration = Duration::from_secs(15);
/// How long a broker may take to listen.
const BROKER_START: Duration = Duration::from_secs(10);
/// Poll period for conditions that take time.
const POLL: Duration = Duration::from_millis(50);
/// The nodes' `node_timeout` (see the node binary).
const NODE_TIMEOUT: Duration = Duration::from_millis(600);
/// Timeout of cluster-wide requests (`count`, `members`).
const ASK_MS: u64 = 2000;
/// The broker password when a scenario's broker requires one.
const BROKER_PW: &str = "S3cret-pw";
/// The NATS user that password belongs to (Redis `requirepass` has no user name).
const NATS_USER: &str = "node";

// ---------------------------------------------------------------------------------
// Brokers.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Redis,
    Nats,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Redis => "redis",
            Kind::Nats => "nats",
        }
    }

    fn url(self, port: u16) -> String {
        format!("{}://127.0.0.1:{port}", self.name())
    }

    /// The URL with credentials: `scheme://user:password@host:port`, the user empty
    /// when `None` (`redis://:password@…`).
    fn url_with(self, port: u16, user: Option<&str>, password: &str) -> String {
        format!(
            "{}://{}:{password}@127.0.0.1:{port}",
            self.name(),
            user.unwrap_or("")
        )
    }

    /// The user that goes with [`BROKER_PW`]: none for Redis, [`NATS_USER`] for NATS.
    fn user(self) -> Option<&'static str> {
        match self {
            Kind::Redis => None,
            Kind::Nats => Some(NATS_USER),
        }
    }

    /// The server binary: on `PATH`, or in the sbin directories Debian's packages use.
    fn binary(self) -> PathBuf {
        let name = match self {
            Kind::Redis => "redis-server",
            Kind::Nats => "nats-server",
        };
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "the scale-out tests need `{name}` on PATH (or in /usr/sbin). Install it: \
                     `apt-get install redis-server redis-tools nats-server` on Debian/Ubuntu \
                     (.ci/run does), or get it from https://redis.io / https://nats.io"
                )
            })
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Makes a child die with the test thread that started it, even when the test process
/// is killed (a broker does not watch its stdin as the nodes do).
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A broker on a fixed loopback port, which can be killed and started again there.
struct Broker {
    kind: Kind,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
    /// Require clients to log in with this password (and, for NATS, [`NATS_USER`]).
    password: Option<&'static str>,
}

impl Broker {
    /// A broker of `kind` on a free port, not started yet.
    fn stopped(kind: Kind, dir: &Path) -> Broker {
        Broker {
            kind,
            port: free_port(),
            log: dir.join(format!("{}-server.log", kind.name())),
            child: None,
            password: None,
        }
    }

    fn url(&self) -> String {
        self.kind.url(self.port)
    }

    /// Starts it (again) on its port and waits until it accepts connections.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "the broker is running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let port = self.port.to_string();
        let mut cmd = Command::new(self.kind.binary());
        match self.kind {
            Kind::Redis => cmd.args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]),
            Kind::Nats => cmd.args(["-a", "127.0.0.1", "-p", &port]),
        };
        if let Some(pw) = self.password {
            match self.kind {
                Kind::Redis => cmd.args(["--requirepass", pw]),
                Kind::Nats => cmd.args(["--user", NATS_USER, "--pass", pw]),
            };
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", self.kind.binary()));
        let deadline = Instant::now() + BROKER_START;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} on port {} exited ({status}):\n{}",
                    self.kind.name(),
                    self.port,
                    read_log(&self.log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} does not listen on port {} within {BROKER_START:?}:\n{}",
                self.kind.name(),
                self.port,
                read_log(&self.log)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
    }

    /// Kills it (SIGKILL): every connection to it drops at once.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Publishes `payload` on `channel` as any broker client could, over a raw
    /// connection in the broker's own text protocol; Redis says how many subscribers
    /// got it. Only for a broker without a password.
    fn publish_raw(&self, channel: &str, payload: &[u8]) -> Option<u64> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        match self.kind {
            Kind::Redis => {
                out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n");
                for part in [channel.as_bytes(), payload] {
                    out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
                    out.extend_from_slice(part);
                    out.extend_from_slice(b"\r\n");
                }
            }
            Kind::Nats => {
                out.extend_from_slice(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n");
                out.extend_from_slice(format!("PUB {channel} {}\r\n", payload.len()).as_bytes());
                out.extend_from_slice(payload);
                out.extend_from_slice(b"\r\nPING\r\n");
            }
        }
        s.write_all(&out).unwrap();
        // Redis answers `:<receivers>`; NATS answers the PING with PONG once it has
        // processed the PUB before it (an -ERR would come first).
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&got).into_owned();
            match self.kind {
                Kind::Redis => {
                    if let Some(line) = text.lines().next().filter(|_| text.contains("\r\n")) {
                        let n = line
                            .strip_prefix(':')
                            .unwrap_or_else(|| panic!("redis refused the PUBLISH: {line:?}"));
                        return Some(n.parse().unwrap());
                    }
                }
                Kind::Nats => {
                    assert!(!text.contains("-ERR"), "nats refused the PUB: {text:?}");
                    if text.contains("PONG") {
                        return None;
                    }
                }
            }
            let n = s.read(&mut buf).expect("the broker answers");
            assert!(n > 0, "the broker closed the connection: {text:?}");
            got.extend_from_slice(&buf[..n]);
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log at {path:?}: {e})"))
}

// ---------------------------------------------------------------------------------
// Nodes.

/// The broker credentials a node presents.
#[derive(Clone, Copy, Debug)]
enum Creds {
    None,
    /// In the URL: `scheme://user:password@host:port` (user empty when `None`).
    InUrl {
        user: Option<&'static str>,
        password: &'static str,
    },
    /// Apart from the URL, in `BrokerAuth` (`--broker-user`, `--broker-password`).
    Auth {
        user: Option<&'static str>,
        password: &'static str,
    },
}

/// How to start one node.
#[derive(Clone, Debug)]
struct Spec {
    node: usize,
    cluster: &'static str,
    unreachable: &'static str,
    max_payload: Option<usize>,
    runtime: &'static str,
    creds: Creds,
}

impl Spec {
    /// Node `node` of cluster `alpha`, failing when the broker is unreachable. The
    /// nodes of a scenario alternate between the backends (`auto` is glommio where
    /// io_uring works), so messages cross between them.
    fn new(node: usize) -> Spec {
        Spec {
            node,
            cluster: "alpha",
            unreachable: "fail",
            max_payload: None,
            runtime: if node.is_multiple_of(2) {
                "tokio"
            } else {
                "auto"
            },
            creds: Creds::None,
        }
    }

    fn creds(mut self, creds: Creds) -> Spec {
        self.creds = creds;
        self
    }

    fn cluster(mut self, name: &'static str) -> Spec {
        self.cluster = name;
        self
    }

    fn local_when_unreachable(mut self) -> Spec {
        self.unreachable = "local";
        self
    }

    fn max_payload(mut self, bytes: usize) -> Spec {
        self.max_payload = Some(bytes);
        self
    }
}

/// A node process that said its port.
struct Node {
    node: usize,
    addr: SocketAddr,
    child: Child,
    /// Kept open: the node stops when it closes.
    stdin: Option<ChildStdin>,
}

impl Node {
    fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).unwrap()
    }

    /// Kills it with SIGKILL: no goodbye to the other nodes.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits until it exited; returns its status.
    fn terminate(&mut self) -> ExitStatus {
        // SAFETY: kill only sends a signal to our own child.
        assert_eq!(unsafe { libc::kill(self.pid(), libc::SIGTERM) }, 0);
        self.wait_exit(Duration::from_secs(10))
            .expect("the node stops within 10 s of SIGTERM")
    }

    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node process started but not yet ready.
struct Starting {
    spec: Spec,
    child: Child,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl Starting {
    /// Waits until the node exits without saying its port: its exit status and
    /// stderr. Fails the test when it starts serving or does not exit in time.
    fn fails(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + NODE_START;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) if l.starts_with("PORT ") => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("node {:?} started ({l})", self.spec);
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "node {:?} neither served nor exited within {NODE_START:?}: {}",
                        self.spec,
                        read_log(&self.log)
                    );
                }
            }
        }
        let status = self.child.wait().unwrap();
        (status, read_log(&self.log))
    }

    /// Waits for `PORT n`; `Err(stderr)` when the node exits first (or never says it).
    fn ready(mut self) -> Result<Node, String> {
        let deadline = Instant::now() + NODE_START;
        let port: u16 = loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) if l.starts_with("PORT ") => break l[5..].trim().parse().unwrap(),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().unwrap();
                    return Err(format!("exited with {status}: {}", read_log(&self.log)));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!(
                        "no PORT line within {NODE_START:?}: {}",
                        read_log(&self.log)
                    ));
                }
            }
        };
        Ok(Node {
            node: self.spec.node,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stdin: self.child.stdin.take(),
            child: self.child,
        })
    }
}

// ---------------------------------------------------------------------------------
// Clients.

/// A logged-in test client, with what it received while waiting for RPC replies.
struct Peer {
    label: String,
    id: String,
    client: TestClient,
    inbox: VecDeque<(String, Value)>,
}

impl Peer {
    fn login(node: &Node, codec: Codec, label: &str) -> Peer {
        let client = TestClient::login(node.addr, codec, PW);
        let mut p = Peer {
            label: format!("{label} (node {}, {codec:?})", node.node),
            id: String::new(),
            client,
            inbox: VecDeque::new(),
        };
        let me = p.call("whoami", Value::map());
        assert_eq!(
            me.get("node").and_then(Value::as_u64),
            Some(node.node as u64)
        );
        p.id = me.get("id").and_then(Value::as_str).unwrap().to_owned();
        p
    }

    /// Calls `method`: its data, or the error text.
    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let mut kept = Vec::new();
        let reply = self
            .client
            .rpc_keeping(method, &params, &mut kept)
            .unwrap_or_else(|e| panic!("{}: {method} failed on the wire: {e}", self.label));
        self.inbox.extend(kept);
        if reply.get("success").and_then(Value::as_bool) == Some(true) {
            Ok(reply.get("data").cloned().unwrap_or(Value::Nil))
        } else {
            Err(reply
                .get("error")
                .and_then(Value::as_str)
                .map_or_else(|| format!("{reply:?}"), str::to_owned))
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let label = self.label.clone();
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("{label}: {method} failed: {e}"))
    }

    /// Broadcasts `chat {text}` to everyone; this node's count.
    fn shout(&mut self, text: &str) -> u64 {
        self.shout_with(Value::map().with("text", text))
    }

    fn shout_with(&mut self, params: Value) -> u64 {
        self.call("shout", params).as_u64().unwrap()
    }

    fn join(&mut self, room: &str) {
        let joined = self.call("join", Value::map().with("room", room));
        assert_eq!(joined, Value::Bool(true), "{}: join {room}", self.label);
    }

    fn next(&mut self) -> (String, Value) {
        if let Some(m) = self.inbox.pop_front() {
            return m;
        }
        self.client
            .next_message()
            .unwrap_or_else(|e| panic!("{}: no message: {e}", self.label))
    }

    /// What arrived before the `chat` whose text is `marker`: the text of each `chat`,
    /// `seq <i>` for each `seq`, `<type> <data>` for anything else.
    fn until_marker(&mut self, marker: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let (name, data) = self.next();
            let text = data.get("text").and_then(Value::as_str);
            match (name.as_str(), text) {
                ("chat", Some(t)) if t == marker => return seen,
                ("chat", Some(t)) => seen.push(t.to_owned()),
                ("seq", _) => seen.push(format!(
                    "seq {}",
                    data.get("i").and_then(Value::as_u64).unwrap()
                )),
                _ => seen.push(format!("{name} {data:?}")),
            }
        }
    }

    fn nodes(&mut self) -> Vec<u64> {
        let v = self.call("nodes", Value::map());
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .collect()
    }

    fn stats(&mut self) -> Stats {
        let v = self.call("stats", Value::map());
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap();
        Stats {
            connected: v.get("connected").and_then(Value::as_bool).unwrap(),
            published: n("published"),
            not_delivered: n("not_delivered"),
            dropped: n("dropped"),
            node_conflicts: n("node_conflicts"),
            connects: n("connects"),
        }
    }

    /// The cluster-wide count: (total, per_node sorted by node, missing).
    fn count(&mut self) -> Count {
        let v = self.call("count", Value::map().with("timeout_ms", ASK_MS));
        let mut per_node: Vec<(u64, u64)> = v
            .get("per_node")
            .and_then(Value::as_array)
            .unwrap()
            .iter()
            .map(|p| {
                let p = p.as_array().unwrap();
                (p[0].as_u64().unwrap(), p[1].as_u64().unwrap())
            })
            .collect();
        per_node.sort_unstable();
        Count {
            total: v.get("total").and_then(Value::as_u64).unwrap(),
            per_node,
            missing: numbers(v.get("missing").unwrap()),
        }
    }

    /// Polls `nodes` until it is `want`; how long that took.
    fn wait_nodes(&mut self, want: &[u64], within: Duration) -> Duration {
        let started = Instant::now();
        let label = self.label.clone();
        poll(&format!("{label}: nodes == {want:?}"), within, || {
            let got = self.nodes();
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        });
        started.elapsed()
    }

    /// Polls `stats` until `connected` is `want`.
    fn wait_connected(&mut self, want: bool, within: Duration) -> Stats {
        let label = self.label.clone();
        poll(&format!("{label}: connected == {want}"), within, || {
            let s = self.stats();
            if s.connected == want {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stats {
    connected: bool,
    published: u64,
    not_delivered: u64,
    dropped: u64,
    node_conflicts: u64,
    connects: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Count {
    total: u64,
    per_node: Vec<(u64, u64)>,
    missing: Vec<u64>,
}

fn numbers(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect()
}

fn ids(peers: &[&Peer]) -> Value {
    Value::from_iter(peers.iter().map(|p| p.id.clone()))
}

/// Calls `check` every [`POLL`] until it returns `Ok`, failing with its last `Err`
/// after `within`.
fn poll<T>(what: &str, within: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {within:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Has `sender` broadcast `marker` and checks that it received exactly `own` before
/// it, and each of `peers` exactly its `want` (in order).
fn expect_exactly(
    sender: &mut Peer,
    marker: &str,
    own: Vec<&str>,
    peers: &mut [(&mut Peer, Vec<&str>)],
) {
    sender.shout(marker);
    let got = sender.until_marker(marker);
    assert_eq!(
        got, own,
        "{} (sender): received before {marker:?}",
        sender.label
    );
    for (p, want) in peers.iter_mut() {
        let got = p.until_marker(marker);
        assert_eq!(got, *want, "{}: received before {marker:?}", p.label);
    }
}

// ---------------------------------------------------------------------------------
// The rig: one broker, its nodes, their logs.

/// One scenario's processes. When the test fails, the logs of every node and of the
/// broker are printed.
struct Rig {
    name: String,
    kind: Kind,
    dir: PathBuf,
    broker: Broker,
    nodes: Vec<Node>,
    /// Every node log, in start order (a log outlives its node).
    logs: Vec<PathBuf>,
    started: Instant,
}

impl Rig {
    /// A rig for test `name` on a running broker of `kind`.
    fn new(kind: Kind, name: &str) -> Rig {
        let mut rig = Rig::without_broker(kind, name);
        rig.broker.restart();
        rig
    }

    /// A rig for test `name` on a running broker of `kind` that requires `password`
    /// (with Redis `requirepass`; as the password of [`NATS_USER`] with NATS).
    fn with_password(kind: Kind, name: &str, password: &'static str) -> Rig {
        let mut rig = Rig::without_broker(kind, name);
        rig.broker.password = Some(password);
        rig.broker.restart();
        rig
    }

    /// A rig whose broker has a port but is not started.
    fn without_broker(kind: Kind, name: &str) -> Rig {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("cluster")
            .join(format!("{name}-{}", kind.name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Rig {
            name: format!("{name}-{}", kind.name()),
            kind,
            broker: Broker::stopped(kind, &dir),
            dir,
            nodes: Vec::new(),
            logs: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Starts a node process (not waiting for it).
    fn spawn(&mut self, spec: &Spec) -> Starting {
        let log = self.dir.join(format!(
            "node{}-{}-{}.log",
            spec.node,
            spec.cluster,
            self.logs.len()
        ));
        self.logs.push(log.clone());
        let url = match spec.creds {
            Creds::InUrl { user, password } => self.kind.url_with(self.broker.port, user, password),
            Creds::None | Creds::Auth { .. } => self.broker.url(),
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cluster-node"));
        cmd.args(["--broker", self.kind.name(), "--url", &url])
            .args(["--node", &spec.node.to_string(), "--cluster", spec.cluster])
            .args(["--unreachable", spec.unreachable, "--runtime", spec.runtime]);
        if let Some(bytes) = spec.max_payload {
            cmd.args(["--max-payload", &bytes.to_string()]);
        }
        if let Creds::Auth { user, password } = spec.creds {
            if let Some(user) = user {
                cmd.args(["--broker-user", user]);
            }
            cmd.args(["--broker-password", password]);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("the cluster-node binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Starting {
            spec: spec.clone(),
            child,
            lines,
            log,
        }
    }

    /// Starts a node; `Err(its stderr)` when it fails to start.
    fn try_start(&mut self, spec: &Spec) -> Result<usize, String> {
        let node = self.spawn(spec).ready()?;
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// Starts nodes at once (each claims its id in parallel); returns their indices.
    fn start(&mut self, specs: &[Spec]) -> Vec<usize> {
        let starting: Vec<Starting> = specs.iter().map(|s| self.spawn(s)).collect();
        starting
            .into_iter()
            .map(|s| {
                let spec = s.spec.clone();
                let node = s
                    .ready()
                    .unwrap_or_else(|e| panic!("node {spec:?} did not start: {e}"));
                self.nodes.push(node);
                self.nodes.len() - 1
            })
            .collect()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        // Nodes first, then the broker (its Drop).
        self.nodes.clear();
        if failed {
            eprintln!(
                "==== {} failed after {:.1}s; logs in {:?}",
                self.name,
                self.started.elapsed().as_secs_f64(),
                self.dir
            );
            for log in &self.logs {
                eprintln!("---- {log:?}\n{}", read_log(log));
            }
            eprintln!("---- {:?}\n{}", self.broker.log, read_log(&self.broker.log));
        } else {
            println!(
                "{} took {:.1}s",
                self.name,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Scenarios.

/// Who receives what, across three nodes: broadcasts to everyone, to a room spread
/// over two nodes, a room minus excluded ids, included ids; sends by id; ordering of
/// one sender's broadcasts and sends across nodes; cluster-wide counts and room
/// members; a real netconduit client in a room on another node.
fn messaging(kind: Kind) {
    let mut rig = Rig::new(kind, "messaging");
    let n = rig.start(&[Spec::new(1), Spec::new(2), Spec::new(3)]);
    let (n1, n2, n3) = (&rig.nodes[n[0]], &rig.nodes[n[1]], &rig.nodes[n[2]]);
    let mut a = Peer::login(n1, Codec::Native, "a");
    let mut b = Peer::login(n1, Codec::V1, "b");
    let mut c = Peer::login(n2, Codec::V1, "c");
    let mut d = Peer::login(n3, Codec::Native, "d");
    let mut e = Peer::login(n3, Codec::V1, "e");
    for p in [&mut a, &mut c, &mut d] {
        p.wait_nodes(&[1, 2, 3], Duration::from_secs(5));
    }

    // Everyone, on every node; the count is this node's (a and b).
    assert_eq!(a.shout("all"), 2);
    expect_exactly(
        &mut a,
        "m-all",
        vec!["all"],
        &mut [
            (&mut b, vec!["all"]),
            (&mut c, vec!["all"]),
            (&mut d, vec!["all"]),
            (&mut e, vec!["all"]),
        ],
    );

    // A room whose members are on nodes 2 and 3; none here, so the count is 0.
    c.join("r");
    d.join("r");
    let sent = a.shout_with(Value::map().with("text", "room").with("room", "r"));
    assert_eq!(sent, 0);
    expect_exactly(
        &mut a,
        "m-room",
        vec![],
        &mut [
            (&mut b, vec![]),
            (&mut c, vec!["room"]),
            (&mut d, vec!["room"]),
            (&mut e, vec![]),
        ],
    );

    // The room minus an excluded member of another node.
    a.shout_with(
        Value::map()
            .with("text", "room-but-d")
            .with("room", "r")
            .with("exclude", ids(&[&d])),
    );
    expect_exactly(
        &mut a,
        "m-exclude",
        vec![],
        &mut [
            (&mut b, vec![]),
            (&mut c, vec!["room-but-d"]),
            (&mut d, vec![]),
            (&mut e, vec![]),
        ],
    );

    // Included ids on three nodes (one here: the count is 1); then included ids and a
    // room together (their intersection: c).
    let sent = a.shout_with(
        Value::map()
            .with("text", "some")
            .with("include", ids(&[&b, &c, &e])),
    );
    assert_eq!(sent, 1);
    a.shout_with(
        Value::map()
            .with("text", "some-in-room")
            .with("room", "r")
            .with("include", ids(&[&c, &e])),
    );
    expect_exactly(
        &mut a,
        "m-include",
        vec![],
        &mut [
            (&mut b, vec!["some"]),
            (&mut c, vec!["some", "some-in-room"]),
            (&mut d, vec![]),
            (&mut e, vec!["some"]),
        ],
    );

    // Sends by id: to a connection of node 3, then to one of this node.
    a.call(
        "tell",
        Value::map().with("to", e.id.as_str()).with("text", "for-e"),
    );
    a.call(
        "tell",
        Value::map().with("to", b.id.as_str()).with("text", "for-b"),
    );
    expect_exactly(
        &mut a,
        "m-tell",
        vec![],
        &mut [
            (&mut b, vec!["for-b"]),
            (&mut c, vec![]),
            (&mut d, vec![]),
            (&mut e, vec!["for-e"]),
        ],
    );

    // Counts and presence, asked from two nodes: every node answers.
    let want = Count {
        total: 5,
        per_node: vec![(1, 2), (2, 1), (3, 2)],
        missing: vec![],
    };
    assert_eq!(a.count(), want, "count from node 1");
    assert_eq!(d.count(), want, "count from node 3");
    b.join("r");
    let members = a.call(
        "members",
        Value::map().with("room", "r").with("timeout_ms", ASK_MS),
    );
    let mut got: Vec<String> = members
        .get("members")
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    got.sort();
    let mut want_ids = vec![b.id.clone(), c.id.clone(), d.id.clone()];
    want_ids.sort();
    assert_eq!(got, want_ids, "members of r: {members:?}");
    assert_eq!(members.get("count").and_then(Value::as_u64), Some(3));
    assert_eq!(numbers(members.get("missing").unwrap()), Vec::<u64>::new());

    // Ordering: 300 broadcasts, each followed by a send by id to c (node 2): c sees
    // 0..600 in order, every other client the even ones in order.
    let burst = a.call(
        "burst",
        Value::map().with("n", 300u64).with("to", c.id.as_str()),
    );
    assert_eq!(burst.as_u64(), Some(300));
    let all: Vec<String> = (0..600).map(|i| format!("seq {i}")).collect();
    let even: Vec<String> = (0..600).step_by(2).map(|i| format!("seq {i}")).collect();
    a.shout("m-burst");
    assert_eq!(c.until_marker("m-burst"), all, "c: broadcasts and sends");
    for p in [&mut a, &mut b, &mut d, &mut e] {
        assert_eq!(p.until_marker("m-burst"), even, "{}: broadcasts", p.label);
    }

    // A netconduit client on node 2 in its own room: a room broadcast from node 1
    // reaches it, one to another room does not.
    let mut py = spawn_python(
        &script("cluster_client.py"),
        &[
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            n2.addr.port().to_string(),
            "--password".into(),
            PW.into(),
            "--room".into(),
            "py".into(),
            "--until".into(),
            "py-end".into(),
        ],
    );
    let ready = py.wait_line("READY", Duration::from_secs(30));
    let py_id = ready[6..].trim().to_owned();
    assert_eq!(py_id.len(), 16, "{ready}");
    a.shout_with(Value::map().with("text", "to-py-room").with("room", "py"));
    a.shout_with(Value::map().with("text", "to-r").with("room", "r"));
    a.shout("py-end");
    let (status, out, err) = py.finish(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "cluster_client.py: {status:?}\n{out:?}\n{err}"
    );
    let got = out
        .iter()
        .find_map(|l| l.strip_prefix("GOT "))
        .unwrap_or_else(|| panic!("no GOT line: {out:?}\n{err}"));
    assert_eq!(got, r#"["to-py-room", "py-end"]"#, "{err}");

    // A kick by id of a connection of this node closes it (for one of another node,
    // see `kick_by_id`).
    a.call("kick", Value::map().with("to", b.id.as_str()));
    b.client.expect_closed();
}

/// A node killed with SIGKILL leaves the others' node lists within the node timeout,
/// and their counts.
fn node_death(kind: Kind) {
    let mut rig = Rig::new(kind, "node-death");
    let n = rig.start(&[Spec::new(1), Spec::new(2), Spec::new(3)]);
    let mut p1 = Peer::login(&rig.nodes[n[0]], Codec::Native, "p1");
    let mut p2 = Peer::login(&rig.nodes[n[1]], Codec::V1, "p2");
    let _p3 = Peer::login(&rig.nodes[n[2]], Codec::Native, "p3");
    p1.wait_nodes(&[1, 2, 3], Duration::from_secs(5));
    let count = p1.count();
    assert_eq!(
        (count.total, count.missing.clone()),
        (3, vec![]),
        "{count:?}"
    );

    rig.nodes[n[2]].kill9();
    let took = p1.wait_nodes(&[1, 2], Duration::from_secs(5));
    println!("a killed node left the node list after {took:?} (node_timeout {NODE_TIMEOUT:?})");
    p2.wait_nodes(&[1, 2], Duration::from_secs(5));
    let want = Count {
        total: 2,
        per_node: vec![(1, 1), (2, 1)],
        missing: vec![],
    };
    assert_eq!(p1.count(), want);
    assert_eq!(p2.count(), want);
}

/// A node stopped with SIGTERM says goodbye: the others drop it from their node lists
/// at once, long before the node timeout would.
fn clean_stop(kind: Kind) {
    let mut rig = Rig::new(kind, "clean-stop");
    let n = rig.start(&[Spec::new(1), Spec::new(2)]);
    let mut p1 = Peer::login(&rig.nodes[n[0]], Codec::Native, "p1");
    let _p2 = Peer::login(&rig.nodes[n[1]], Codec::V1, "p2");
    p1.wait_nodes(&[1, 2], Duration::from_secs(5));

    let status = rig.nodes[n[1]].terminate();
    assert!(status.success(), "node 2 stops cleanly: {status}");
    let exited = Instant::now();
    // Its last heartbeat was at most one period (100 ms) before it exited: only its
    // goodbye makes it leave within 300 ms (node_timeout is 600 ms).
    p1.wait_nodes(&[1], Duration::from_millis(300));
    println!(
        "a stopped node left the node list within {:?} of its exit",
        exited.elapsed()
    );
    assert_eq!(
        p1.count(),
        Count {
            total: 1,
            per_node: vec![(1, 1)],
            missing: vec![],
        }
    );
}

/// The broker goes away: local delivery goes on, what was for other nodes is counted
/// as not delivered, sends by id to other nodes fail; the broker comes back on the
/// same port: every node reconnects by itself and cross-node delivery resumes.
fn broker_outage(kind: Kind) {
    let mut rig = Rig::new(kind, "broker-outage");
    let n = rig.start(&[Spec::new(1), Spec::new(2), Spec::new(3)]);
    let mut a = Peer::login(&rig.nodes[n[0]], Codec::Native, "a");
    let mut b = Peer::login(&rig.nodes[n[0]], Codec::V1, "b");
    let mut c = Peer::login(&rig.nodes[n[1]], Codec::Native, "c");
    let mut d = Peer::login(&rig.nodes[n[2]], Codec::V1, "d");
    a.wait_nodes(&[1, 2, 3], Duration::from_secs(5));
    a.shout("before");
    expect_exactly(
        &mut a,
        "m-before",
        vec!["before"],
        &mut [
            (&mut b, vec!["before"]),
            (&mut c, vec!["before"]),
            (&mut d, vec!["before"]),
        ],
    );
    let before = a.stats();
    assert!(before.connected && before.connects == 1, "{before:?}");

    rig.broker.kill();
    for p in [&mut a, &mut c, &mut d] {
        p.wait_connected(false, Duration::from_secs(5));
    }
    assert_eq!(a.shout("local"), 2, "both clients of node 1");
    expect_exactly(
        &mut a,
        "m-local",
        vec!["local"],
        &mut [(&mut b, vec!["local"])],
    );
    let err = a
        .try_call(
            "tell",
            Value::map().with("to", c.id.as_str()).with("text", "lost"),
        )
        .expect_err("a send to another node fails while the broker is away");
    assert!(err.contains("not connected"), "{err}");
    let during = a.stats();
    assert!(!during.connected, "{during:?}");
    assert!(
        during.not_delivered >= before.not_delivered + 3,
        "two broadcasts and a send not delivered: {before:?} → {during:?}"
    );

    rig.broker.restart();
    for p in [&mut a, &mut c, &mut d] {
        let s = p.wait_connected(true, Duration::from_secs(10));
        assert!(s.connects >= 2, "{}: {s:?}", p.label);
    }
    a.wait_nodes(&[1, 2, 3], Duration::from_secs(5));
    a.shout("again");
    expect_exactly(
        &mut a,
        "m-again",
        vec!["again"],
        &mut [
            (&mut b, vec!["again"]),
            (&mut c, vec!["again"]),
            (&mut d, vec!["again"]),
        ],
    );
    for node in &mut rig.nodes {
        assert!(node.is_running(), "node {} was not restarted", node.node);
    }
}

/// A second process with a node id in use is refused; a cluster of another name on
/// the same broker is apart; garbage on a node's channel is dropped and counted; a
/// broadcast over the payload limit reaches nobody, not even the sender's node.
fn hygiene(kind: Kind) {
    let mut rig = Rig::new(kind, "hygiene");
    let n = rig.start(&[Spec::new(1), Spec::new(2), Spec::new(3)]);
    let mut a = Peer::login(&rig.nodes[n[0]], Codec::Native, "a");
    let mut b = Peer::login(&rig.nodes[n[1]], Codec::V1, "b");
    let mut c = Peer::login(&rig.nodes[n[2]], Codec::Native, "c");
    a.wait_nodes(&[1, 2, 3], Duration::from_secs(5));

    // The same id again in the same cluster.
    let conflicts = a.stats().node_conflicts;
    let err = rig
        .try_start(&Spec::new(1))
        .map(|_| ())
        .expect_err("a second node 1 is refused");
    assert!(err.contains("already used"), "{err}");
    assert!(a.stats().node_conflicts > conflicts, "node 1 heard it");

    // The same id in another cluster: its own world.
    let beta = rig.try_start(&Spec::new(1).cluster("beta")).unwrap();
    let mut x = Peer::login(&rig.nodes[beta], Codec::V1, "x (beta)");
    let conflicts = a.stats().node_conflicts;
    a.shout("alpha-only");
    expect_exactly(
        &mut a,
        "m-alpha",
        vec!["alpha-only"],
        &mut [(&mut b, vec!["alpha-only"]), (&mut c, vec!["alpha-only"])],
    );
    // Cluster alpha's broadcast reached alpha's nodes; beta's client, reading up to a
    // marker of its own cluster sent after that, has nothing.
    expect_exactly(&mut x, "m-beta", vec![], &mut []);
    assert_eq!(x.nodes(), [1]);
    assert_eq!(
        x.count(),
        Count {
            total: 1,
            per_node: vec![(1, 1)],
            missing: vec![],
        }
    );
    assert_eq!(a.nodes(), [1, 2, 3]);
    assert_eq!(
        a.stats().node_conflicts,
        conflicts,
        "beta's node 1 is not ours"
    );

    // Garbage on node 2's channel reaches every node of the cluster, which drops it.
    let garbage: [&[u8]; 3] = [
        b"not a cluster message",
        b"",
        &conduit_tests::forge::junk(300, 7),
    ];
    let before: Vec<u64> = [&mut a, &mut b, &mut c].map(|p| p.stats().dropped).to_vec();
    for g in garbage {
        if let Some(receivers) = rig.broker.publish_raw("alpha.node.2", g) {
            assert_eq!(receivers, 3, "three nodes subscribe to alpha.node.*");
        }
    }
    for (p, was) in [&mut a, &mut b, &mut c].into_iter().zip(before) {
        let label = p.label.clone();
        let now = poll(
            &format!("{label}: garbage dropped"),
            Duration::from_secs(5),
            || {
                let s = p.stats();
                if s.dropped >= was + 3 {
                    Ok(s)
                } else {
                    Err(format!("{s:?}"))
                }
            },
        );
        assert_eq!(now.dropped, was + 3, "{label}: {now:?}");
        assert!(now.connected, "{label}: {now:?}");
    }
    a.shout("after-garbage");
    expect_exactly(
        &mut a,
        "m-garbage",
        vec!["after-garbage"],
        &mut [
            (&mut b, vec!["after-garbage"]),
            (&mut c, vec!["after-garbage"]),
        ],
    );

    // A node whose payload limit is 2 KiB: a 4 KiB broadcast fails at the sender, and
    // nobody — not even the sender's own node — receives it.
    let small = rig.try_start(&Spec::new(4).max_payload(2048)).unwrap();
    let mut l1 = Peer::login(&rig.nodes[small], Codec::Native, "l1");
    let mut l2 = Peer::login(&rig.nodes[small], Codec::V1, "l2");
    let err = l1
        .try_call("shout", Value::map().with("text", "x".repeat(4096)))
        .expect_err("a broadcast over the payload limit fails");
    assert!(err.contains("2048"), "the error names the limit: {err}");
    expect_exactly(
        &mut l1,
        "m-limit",
        vec![],
        &mut [
            (&mut l2, vec![]),
            (&mut a, vec![]),
            (&mut b, vec![]),
            (&mut c, vec![]),
        ],
    );
}

/// The broker is not there when nodes start: with `fail` a node exits saying it cannot
/// reach it; with `local` it serves its own clients, and joins the cluster once the
/// broker appears on that port.
fn unreachable_at_start(kind: Kind) {
    let mut rig = Rig::without_broker(kind, "unreachable");
    let err = rig
        .try_start(&Spec::new(1))
        .map(|_| ())
        .expect_err("a node that cannot reach its broker fails to start");
    assert!(err.contains("cannot reach"), "{err}");

    let i = rig
        .try_start(&Spec::new(1).local_when_unreachable())
        .unwrap();
    let mut a = Peer::login(&rig.nodes[i], Codec::Native, "a");
    let mut b = Peer::login(&rig.nodes[i], Codec::V1, "b");
    assert!(!a.stats().connected);
    assert_eq!(a.shout("local"), 2);
    expect_exactly(
        &mut a,
        "m-local",
        vec!["local"],
        &mut [(&mut b, vec!["local"])],
    );
    let count = a.count();
    assert_eq!((count.total, count.missing), (2, vec![]));

    rig.broker.restart();
    a.wait_connected(true, Duration::from_secs(10));
    let j = rig.try_start(&Spec::new(2)).unwrap();
    let mut c = Peer::login(&rig.nodes[j], Codec::Native, "c");
    a.wait_nodes(&[1, 2], Duration::from_secs(5));
    c.wait_nodes(&[1, 2], Duration::from_secs(5));
    a.shout("joined");
    expect_exactly(
        &mut a,
        "m-joined",
        vec!["joined"],
        &mut [(&mut b, vec!["joined"]), (&mut c, vec!["joined"])],
    );
}

/// A broker that requires a password: a node with the credentials in its URL and one
/// with them in `BrokerAuth` both join, and a broadcast crosses between them; a node
/// with a wrong password (either way) fails to start, saying it cannot reach the
/// broker, and no node ever prints a password, right or wrong.
fn broker_auth(kind: Kind) {
    const WRONG_PW: &str = "Wr0ng-pw";
    let mut rig = Rig::with_password(kind, "broker-auth", BROKER_PW);
    let user = kind.user();
    let n = rig.start(&[
        Spec::new(1).creds(Creds::InUrl {
            user,
            password: BROKER_PW,
        }),
        Spec::new(2).creds(Creds::Auth {
            user,
            password: BROKER_PW,
        }),
    ]);
    let mut a = Peer::login(&rig.nodes[n[0]], Codec::Native, "a");
    let mut b = Peer::login(&rig.nodes[n[1]], Codec::V1, "b");
    a.wait_nodes(&[1, 2], Duration::from_secs(5));
    b.wait_nodes(&[1, 2], Duration::from_secs(5));
    a.shout("from-1");
    expect_exactly(
        &mut a,
        "m-from-1",
        vec!["from-1"],
        &mut [(&mut b, vec!["from-1"])],
    );
    b.shout("from-2");
    expect_exactly(
        &mut b,
        "m-from-2",
        vec!["from-2"],
        &mut [(&mut a, vec!["from-2"])],
    );

    let wrong = [
        Creds::InUrl {
            user,
            password: WRONG_PW,
        },
        Creds::Auth {
            user,
            password: WRONG_PW,
        },
    ];
    for creds in wrong {
        let started = Instant::now();
        let (status, err) = rig.spawn(&Spec::new(3).creds(creds)).fails();
        let took = started.elapsed();
        assert!(!status.success(), "{creds:?}: {status}\n{err}");
        assert!(err.contains("cannot reach"), "{creds:?}: {err}");
        for secret in [WRONG_PW, BROKER_PW] {
            assert!(
                !err.contains(secret),
                "{creds:?}: {secret:?} printed: {err}"
            );
        }
        println!("a node with a wrong password ({creds:?}) failed after {took:?}");
    }
    // No node's log, of those that joined or of those refused, holds either one.
    for log in &rig.logs {
        let text = read_log(log);
        for secret in [WRONG_PW, BROKER_PW] {
            assert!(!text.contains(secret), "{secret:?} in {log:?}: {text}");
        }
    }
    // The cluster is unharmed.
    assert_eq!(a.nodes(), [1, 2]);
}

/// A kick by id from node 1 closes a connection of node 2.
fn kick_by_id(kind: Kind) {
    let mut rig = Rig::new(kind, "kick");
    let n = rig.start(&[Spec::new(1), Spec::new(2)]);
    let mut a = Peer::login(&rig.nodes[n[0]], Codec::Native, "a");
    let mut c = Peer::login(&rig.nodes[n[1]], Codec::V1, "c");
    a.wait_nodes(&[1, 2], Duration::from_secs(5));
    let kicked = a.try_call("kick", Value::map().with("to", c.id.as_str()));
    assert_eq!(kicked, Ok(Value::Bool(true)));
    c.client.expect_closed();
}

macro_rules! on_both_brokers {
    ($($scenario:ident => $redis:ident, $nats:ident;)*) => {$(
        #[test]
        fn $redis() {
            $scenario(Kind::Redis);
        }

        #[test]
        fn $nats() {
            $scenario(Kind::Nats);
        }
    )*};
}

on_both_brokers! {
    messaging => messaging_redis, messaging_nats;
    node_death => node_death_redis, node_death_nats;
    broker_outage => broker_outage_redis, broker_outage_nats;
    hygiene => hygiene_redis, hygiene_nats;
    unreachable_at_start => unreachable_at_start_redis, unreachable_at_start_nats;
    broker_auth => broker_auth_redis, broker_auth_nats;
}

#[test]
fn clean_stop_redis() {
    clean_stop(Kind::Redis);
}

#[test]
fn clean_stop_nats() {
    clean_stop(Kind::Nats);
}

#[test]
fn kick_by_id_redis() {
    kick_by_id(Kind::Redis);
}

#[test]
fn kick_by_id_nats() {
    kick_by_id(Kind::Nats);
}
