//! Interoperability with the real Python netconduit 5.0.0, both directions.
//!
//! * `netconduit_clients_against_our_chat_server`: our `chat_server` example (plus
//!   `add`/`echo`/`divide`) runs in-process; `tests/python/interop_client.py` drives it
//!   with netconduit's own `Client`.
//! * `our_client_against_netconduit_server`: `tests/python/reference_server.py`, a
//!   netconduit `Server`, driven from Rust over netconduit-v1.
//!
//! Needs `python3` with the `venv` and `pip` modules, and PyPI on the first run: a venv
//! with `netconduit==5.0.0` is made once at `target/netconduit-venv` (see
//! [`conduit_tests::netconduit`]).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use conduit::client::blocking::Client;
use conduit::{
    rpc, ClientDescriptor, ClientError, Codec, RpcError, Server, ServerDescriptor, Value,
};
use conduit_tests::netconduit::{script, spawn_python, unique_suffix, venv_python, workspace_dir};
use conduit_tests::{matrix, start};

#[path = "../engine/examples/chat_server.rs"]
mod chat_server;

// ---------------------------------------------------------------------------------
// Direction 1: netconduit's Client against our server.

/// Add two numbers.
#[rpc]
async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Echo back the message.
#[rpc]
async fn echo(message: String) -> String {
    message
}

/// Divide a by b.
#[rpc]
async fn divide(a: f64, b: f64) -> Result<f64, RpcError> {
    if b == 0.0 {
        return Err("Cannot divide by zero".into());
    }
    Ok(a / b)
}

/// The chat server example with `add`/`echo`/`divide`, on 127.0.0.1 with a free port
/// and a short heartbeat (ping after 1 s of silence, close after 5 s: short enough for
/// the idle case to span several intervals and the timeout, with room for a loaded
/// machine); everything else at the engine's defaults (`v1_post_auth_delay`
/// included).
fn interop_server() -> Server {
    let mut desc = ServerDescriptor::new("chat_secret")
        .runtime(conduit_tests::runtime())
        .host("127.0.0.1")
        .port(0)
        .shards(2)
        .name("ChatServer")
        .heartbeat(Duration::from_secs(1), Duration::from_secs(5));
    // The Python side logs 200 clients in at once, all from 127.0.0.1.
    desc.max_pending_per_source = desc.max_pending;
    let server = chat_server::build(desc).expect("chat server builds");
    server.rpc(add);
    server.rpc(echo);
    server.rpc(divide);
    server
}

/// Logs the engine's side (logins, closes and why) into the test's captured output, so
/// a failure shows it; `RUST_LOG` overrides the default filter.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,conduit=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The closing `N passed, M failed` of a Python client's output (its last non-empty
/// line), parsed; fails the test, showing `stderr`, when there is none.
fn final_tally(out: &[String], stderr: &str) -> (u32, u32) {
    let last = out
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .cloned()
        .unwrap_or_default();
    tally(&last).unwrap_or_else(|| panic!("no closing tally; last line {last:?}\n{stderr}"))
}

/// Parses a closing `N passed, M failed` line.
fn tally(line: &str) -> Option<(u32, u32)> {
    let (p, f) = line.trim().split_once(", ")?;
    let passed = p.strip_suffix(" passed")?.parse().ok()?;
    let failed = f.strip_suffix(" failed")?.parse().ok()?;
    Some((passed, failed))
}

#[matrix]
fn netconduit_clients_against_our_chat_server() {
    init_logging();
    let python = venv_python();
    assert!(python.exists());
    let server = interop_server();
    let (running, addr) = start(&server);
    let started = Instant::now();
    let child = spawn_python(
        &script("interop_client.py"),
        &[
            "--host".into(),
            addr.ip().to_string(),
            "--port".into(),
            addr.port().to_string(),
            "--password".into(),
            "chat_secret".into(),
            "--clients".into(),
            "200".into(),
        ],
    );
    let (status, out, err) = child.finish(Duration::from_secs(120));
    println!("python client ran {:.1}s", started.elapsed().as_secs_f64());
    if !err.trim().is_empty() {
        println!("py stderr:\n{err}");
    }
    running.stop().unwrap();
    let failures: Vec<&String> = out.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        status.is_some(),
        "interop_client.py timed out; failures so far: {failures:#?}\nstderr:\n{err}"
    );
    let (passed, failed) = final_tally(&out, &err);
    assert_eq!(failed, 0, "failed cases: {failures:#?}\nstderr:\n{err}");
    assert!(passed >= 19, "only {passed} cases ran");
    assert!(
        status.is_some_and(|s| s.success()),
        "interop_client.py exited with {status:?}\nstderr:\n{err}"
    );
}

// ---------------------------------------------------------------------------------
// Direction 2: our client, in netconduit-v1 mode, against netconduit's Server.

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn params(pairs: &[(&str, Value)]) -> Value {
    Value::from_pairs(pairs.iter().cloned())
}

/// How long a test waits for one pushed message.
const MESSAGE_WAIT: Duration = Duration::from_secs(10);

/// A v1 client whose pushed messages land in a channel, in arrival order.
struct Peer {
    client: Client,
    inbox: mpsc::Receiver<(String, Value)>,
}

impl Peer {
    /// Connects with handlers registered first, so nothing pushed at login is missed.
    fn open(port: u16, password: &str) -> Result<Peer, ClientError> {
        let desc = ClientDescriptor::new(password)
            .runtime(conduit_tests::runtime())
            .host("127.0.0.1")
            .port(port)
            .codec(Codec::V1)
            .name("conduit-rs-interop")
            .rpc_timeout(Duration::from_secs(10))
            // Lenient on our side: the case is about answering the server's pings.
            .heartbeat(Duration::from_secs(2), Duration::from_secs(10))
            .reconnect(false);
        let client = Client::new(desc)?;
        let (tx, inbox) = mpsc::channel();
        client.on_any(move |name, data| {
            let _ = tx.send((name.to_owned(), data));
        });
        client.open()?;
        Ok(Peer { client, inbox })
    }

    /// The next pushed message, which must be `name`.
    fn expect(&self, name: &str) -> Value {
        match self.inbox.recv_timeout(MESSAGE_WAIT) {
            Ok((got, data)) => {
                assert_eq!(got, name, "expected {name:?}, got {got:?}: {data}");
                data
            }
            Err(_) => panic!("no {name:?} message within {MESSAGE_WAIT:?}"),
        }
    }

    fn call(&self, method: &str, args: &[(&str, Value)]) -> Result<Value, ClientError> {
        self.client.call(method, params(args))
    }
}

fn rpc_error(r: Result<Value, ClientError>) -> (i64, String) {
    match r {
        Err(ClientError::Rpc { code, message, .. }) => (code, message),
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

#[matrix]
fn our_client_against_netconduit_server() {
    init_logging();
    let port = free_port();
    let mut py = spawn_python(
        &script("reference_server.py"),
        &[
            "--port".into(),
            port.to_string(),
            "--password".into(),
            "secret".into(),
            "--heartbeat-interval".into(),
            "1".into(),
            "--heartbeat-timeout".into(),
            "4".into(),
        ],
    );
    py.wait_line("READY", Duration::from_secs(20));

    // Wrong password: netconduit's reason comes through.
    match Peer::open(port, "wrong") {
        Err(ClientError::AuthFailed(reason)) => assert_eq!(reason, "Invalid password"),
        Err(e) => panic!("expected AuthFailed, got {e:?}"),
        Ok(_) => panic!("a wrong password was accepted"),
    }

    // Login; the welcome netconduit writes right behind AUTH_SUCCESS is not lost.
    let a = Peer::open(port, "secret").expect("login");
    assert!(a.client.is_connected());
    let welcome = a.expect("welcome");
    let a_id = welcome
        .get("client_id")
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    assert_eq!(a_id.len(), 36, "a uuid4: {a_id}");
    assert_eq!(welcome.get("clients"), Some(&Value::Int(1)));

    // RPC: netconduit's double envelope is unwrapped.
    let sum = a.call("add", &[("a", 2.into()), ("b", 3.into())]);
    assert_eq!(sum.unwrap(), Value::Int(5));
    let echoed = a.call("echo", &[("message", "héllo ✓".into())]);
    assert_eq!(echoed.unwrap(), Value::from("héllo ✓"));
    let text = "x".repeat(100_000);
    let echoed = a.call("echo", &[("message", text.as_str().into())]);
    assert_eq!(echoed.unwrap(), Value::from(text.as_str()));
    let q = a.call("divide", &[("a", 7.into()), ("b", 2.into())]);
    assert_eq!(q.unwrap(), Value::Float(3.5));

    // Errors: 1001 with the handler's message, 2000 for a missing argument, 4000.
    let r = a.call("divide", &[("a", 1.into()), ("b", 0.into())]);
    assert_eq!(
        rpc_error(r),
        (1001, "Error in divide: Cannot divide by zero".to_owned())
    );
    let (code, msg) = rpc_error(a.call("add", &[("a", 1.into())]));
    assert_eq!(code, 2000);
    assert!(
        msg.contains("missing 1 required positional argument: 'b'"),
        "{msg}"
    );
    let r = a.call("nope", &[]);
    assert_eq!(
        rpc_error(r),
        (4000, "RPC method not found: nope".to_owned())
    );
    // netconduit does not enforce type hints: add("x", "y") concatenates.
    let r = a.call("add", &[("a", "x".into()), ("b", "y".into())]);
    assert_eq!(r.unwrap(), Value::from("xy"));

    // listall.
    let list = a.call("listall", &[]).unwrap();
    let methods = list.get("methods").and_then(Value::as_array).unwrap();
    assert_eq!(list.get("count"), Some(&Value::Int(3)));
    let names: Vec<&str> = methods
        .iter()
        .map(|m| m.get("name").and_then(Value::as_str).unwrap())
        .collect();
    assert_eq!(names, ["add", "echo", "divide"]);
    assert_eq!(
        methods[0],
        Value::map()
            .with("name", "add")
            .with("description", "Add two numbers.")
            .with("parameters", Value::map().with("a", "int").with("b", "int"))
            .with("return_type", "int")
            .with("requires_auth", true)
    );

    // Messages and broadcast events: B joins (A hears it), A chats (B gets the
    // broadcast, A gets the handler's reply), B leaves (A hears it).
    let b = Peer::open(port, "secret").expect("second login");
    let b_id = b
        .expect("welcome")
        .get("client_id")
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    assert_eq!(
        a.expect("user_joined"),
        Value::map().with("client_id", b_id.as_str())
    );
    let reply = a
        .client
        .request("chat", Value::map().with("message", "hi"))
        .unwrap();
    assert_eq!(reply, Value::map().with("sent", true));
    let chat = b.expect("chat");
    assert_eq!(chat.get("from"), Some(&Value::from(a_id.as_str())));
    assert_eq!(chat.get("message"), Some(&Value::from("hi")));
    assert!(chat.get("time").and_then(Value::as_f64).unwrap() > 1.0e9);
    // A message type without a handler is ignored by netconduit; the connection stays.
    b.client.send_message("no_handler", Value::map()).unwrap();
    b.client.close();
    assert_eq!(
        a.expect("user_left"),
        Value::map().with("client_id", b_id.as_str())
    );

    // Heartbeat: netconduit pings every 1 s and drops a client whose PONGs stop for
    // 4 s; idle past that and still be connected.
    let events = a.client.events();
    std::thread::sleep(Duration::from_millis(5500));
    assert!(a.client.is_connected(), "dropped while idle");
    assert_eq!(events.try_next(), None, "connection events while idle");
    let r = a.call("add", &[("a", 40.into()), ("b", 2.into())]);
    assert_eq!(r.unwrap(), Value::Int(42));
    a.client.close();
    drop(py);
}

// ---------------------------------------------------------------------------------
// Where io_uring is refused (Docker's default seccomp profile): `Runtime::Auto` serves
// netconduit clients on tokio.

/// Set in the child's environment: the port file it writes once listening.
const SECCOMP_CHILD_PORT_FILE: &str = "CONDUIT_SECCOMP_CHILD_PORT_FILE";

/// The chat server in a child process (this test binary again, running
/// `seccomp_child` only) under `no-io-uring` with `filter_args`; returns the child,
/// its port and the runtime it reports. With `refused`, the child also checks that an
/// explicit glommio server fails to start, saying why.
fn start_filtered_child(filter_args: &[&str], refused: bool) -> (Child, u16, String) {
    let port_file = workspace_dir()
        .join("target")
        .join(format!("seccomp-child-{}.port", unique_suffix()));
    let _ = std::fs::remove_file(&port_file);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_no-io-uring"));
    if refused {
        cmd.env("CONDUIT_SECCOMP_CHILD_EXPECT_REFUSED", "1");
    }
    let mut child = cmd
        .args(filter_args)
        .arg(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "seccomp_child", "--nocapture"])
        .env(SECCOMP_CHILD_PORT_FILE, &port_file)
        .env("RUST_LOG", "warn,conduit=info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("child starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        if let Ok(s) = std::fs::read_to_string(&port_file) {
            break s;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the child did not start listening:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_file(&port_file);
    let (port, runtime) = line.trim().split_once(' ').expect("\"PORT RUNTIME\"");
    (child, port.parse().unwrap(), runtime.to_owned())
}

/// Stops a child from [`start_filtered_child`] (closing its stdin) and returns its log.
fn stop_filtered_child(mut child: Child) -> (ExitStatus, String) {
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status, log)
}

#[test]
fn auto_serves_netconduit_where_io_uring_is_refused() {
    let python = venv_python();
    assert!(python.exists());
    let (child, port, runtime) = start_filtered_child(&[], true);
    let py = spawn_python(
        &script("interop_client.py"),
        &[
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--password".into(),
            "chat_secret".into(),
            "--clients".into(),
            "20".into(),
        ],
    );
    let (status, out, err) = py.finish(Duration::from_secs(120));
    let (child_status, log) = stop_filtered_child(child);
    assert_eq!(runtime, "tokio", "Auto chose {runtime}; child log:\n{log}");
    assert!(
        log.contains("glommio cannot run here") && log.contains("Operation not permitted"),
        "the log says why tokio was chosen:\n{log}"
    );
    assert!(log.contains("explicit glommio: "), "{log}");
    let (passed, failed) = final_tally(&out, &err);
    assert_eq!(failed, 0, "python stderr:\n{err}\nchild log:\n{log}");
    assert!(passed >= 19, "only {passed} cases ran");
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{err}");
    assert!(child_status.success(), "child failed:\n{log}");
}

/// io_uring rings can be set up (the probe passes) but not registered, so glommio
/// fails while starting its shards: `Auto` starts every shard on tokio instead.
#[test]
fn auto_falls_back_for_the_whole_server_when_glommio_fails_after_the_probe() {
    // The case needs a machine where glommio would otherwise run.
    if let Err(e) = conduit::Runtime::Glommio.resolve(2) {
        eprintln!("skipped: glommio cannot run here at all: {e}");
        return;
    }
    let (child, port, runtime) = start_filtered_child(&["--only-register"], false);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let desc = ClientDescriptor::new("chat_secret")
        .addr(addr)
        .codec(Codec::Native);
    let client = Client::connect(desc).expect("serves after the fall back");
    let sum = client.call("add", params(&[("a", 2.into()), ("b", 3.into())]));
    drop(client);
    let (child_status, log) = stop_filtered_child(child);
    assert_eq!(sum.unwrap(), Value::Int(5), "{log}");
    assert_eq!(runtime, "tokio", "child log:\n{log}");
    assert!(
        log.contains("io_uring works") && log.contains("starting all on tokio"),
        "the log tells the fall back:\n{log}"
    );
    assert!(child_status.success(), "child failed:\n{log}");
}

/// The child half of `auto_serves_netconduit_where_io_uring_is_refused` (run by it,
/// under the seccomp filter): the chat server with `Runtime::Auto`, until stdin closes.
#[test]
#[ignore = "the child process of auto_serves_netconduit_where_io_uring_is_refused"]
fn seccomp_child() {
    let port_file = std::env::var_os(SECCOMP_CHILD_PORT_FILE).expect("run by the parent test");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    // An explicit glommio server where io_uring is refused fails with the reason.
    if std::env::var_os("CONDUIT_SECCOMP_CHILD_EXPECT_REFUSED").is_some() {
        let explicit = Server::new(
            ServerDescriptor::new("x")
                .host("127.0.0.1")
                .port(0)
                .runtime(conduit::Runtime::Glommio),
        )
        .unwrap();
        let err = explicit.start().expect_err("glommio cannot start here");
        eprintln!("explicit glommio: {err}");
        assert!(
            err.to_string().contains("io_uring is not available"),
            "{err}"
        );
    }
    // Outside `#[matrix]`, so the runtime is left to `Auto`.
    let server = interop_server();
    assert_eq!(server.descriptor().runtime, conduit::Runtime::Auto);
    let running = server.start().expect("starts under the filter");
    let addr = server.local_addr().unwrap();
    // A blocking client with `Auto` works here too (its executor falls back the same).
    let desc = ClientDescriptor::new("chat_secret")
        .addr(addr)
        .codec(Codec::Native);
    let client = Client::connect(desc).expect("a client starts under the filter");
    let sum = client.call("add", params(&[("a", 20.into()), ("b", 22.into())]));
    assert_eq!(sum.unwrap(), Value::Int(42));
    drop(client);
    // Written whole, then renamed into place: the parent never reads half a line.
    let tmp = std::path::PathBuf::from(&port_file).with_extension("tmp");
    std::fs::write(&tmp, format!("{} {}\n", addr.port(), running.runtime())).unwrap();
    std::fs::rename(&tmp, &port_file).unwrap();
    // Until the parent closes our stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    running.stop().unwrap();
}
