//! Login budgets against a lock-out: connections that have not logged in are bounded
//! per source address (`max_pending_per_source`) and in total (`max_pending`), so one
//! address cannot hold the server's login capacity and the rest of `max_connections`
//! stays for authenticated clients. Clients come from several 127.0.0.x addresses.
//!
//! One shard in each test: its accept loop takes connections in the kernel's order, so
//! which connection meets a full budget is exact.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use std::net::{SocketAddr, TcpStream};

use conduit::Server;
use conduit_protocol::{Codec, FrameKind};
use conduit_tests::{connect_from, matrix, start, test_descriptor, TestClient};

const PW: &str = "secret";

/// Logs in from `from`; the server's final auth frame.
fn login_from(from: &str, addr: SocketAddr) -> (TestClient, conduit_tests::OwnedFrame) {
    let mut c = TestClient::from_stream(connect_from(from, addr), Codec::Native).unwrap();
    let f = c.authenticate(PW).unwrap();
    (c, f)
}

#[matrix]
fn one_address_cannot_hold_the_login_budget() {
    let mut desc = test_descriptor(PW).shards(1);
    desc.max_pending = 64;
    desc.max_pending_per_source = 4;
    let server = Server::new(desc).unwrap();
    let (running, addr) = start(&server);
    // Four silent sockets from one address: its whole budget.
    let silent: Vec<TcpStream> = (0..4).map(|_| connect_from("127.0.0.2", addr)).collect();
    // Its fifth is refused, saying why.
    let (_, refused) = login_from("127.0.0.2", addr);
    assert_eq!(refused.header.kind, FrameKind::AuthFailure);
    assert_eq!(
        refused.reason(),
        "server busy: too many connections logging in from your address"
    );
    // Other addresses log in meanwhile.
    for from in ["127.0.0.3", "127.0.0.4"] {
        let (_, f) = login_from(from, addr);
        assert_eq!(f.header.kind, FrameKind::AuthSuccess, "{from}");
    }
    // A connection of the first address that logs in gives its place back: the address
    // may log another one in.
    let mut first = TestClient::from_stream(silent[0].try_clone().unwrap(), Codec::V1).unwrap();
    assert_eq!(
        first.authenticate(PW).unwrap().header.kind,
        FrameKind::AuthSuccess
    );
    let (_, again) = login_from("127.0.0.2", addr);
    assert_eq!(again.header.kind, FrameKind::AuthSuccess);
    drop(silent);
    running.stop().unwrap();
}

#[matrix]
fn connections_logging_in_are_bounded_in_total() {
    let mut desc = test_descriptor(PW).shards(1);
    desc.max_pending = 6;
    desc.max_pending_per_source = 2;
    let server = Server::new(desc).unwrap();
    let (running, addr) = start(&server);
    let (mut logged_in, f) = login_from("127.0.0.9", addr);
    assert_eq!(f.header.kind, FrameKind::AuthSuccess);
    // Three addresses, two silent sockets each: every place for logging in is taken.
    let silent: Vec<TcpStream> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .flat_map(|from| (0..2).map(move |_| connect_from(from, addr)))
        .collect();
    let (_, refused) = login_from("127.0.0.5", addr);
    assert_eq!(refused.header.kind, FrameKind::AuthFailure);
    assert_eq!(
        refused.reason(),
        "server busy: too many connections logging in"
    );
    // Who logged in before is not disturbed.
    logged_in.ping().unwrap();
    assert_eq!(logged_in.next_frame().unwrap().header.kind, FrameKind::Pong);
    // One silent socket goes: a place is free again.
    drop(silent.into_iter().next());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, f) = login_from("127.0.0.5", addr);
        if f.header.kind == FrameKind::AuthSuccess {
            break;
        }
        // The server learns of the close when it reads the socket's end.
        assert!(std::time::Instant::now() < deadline, "no place came free");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    running.stop().unwrap();
}

/// Guessing from one address is budgeted: its failures beyond the free ones keep the
/// address out for a doubling wait (its connections refused, saying why) while other
/// addresses log in; a guesser that gives up during the brake still pays, and gives
/// its slot back at once.
#[matrix]
fn failed_logins_are_budgeted_per_address() {
    let mut desc = test_descriptor(PW).shards(1).max_connections(8);
    desc.max_auth_failures_per_source = 3;
    desc.auth_backoff_base = std::time::Duration::from_millis(300);
    desc.auth_backoff_max = std::time::Duration::from_secs(60);
    desc.auth_failure_delay = std::time::Duration::from_secs(30);
    let server = Server::new(desc).unwrap();
    let (running, addr) = start(&server);
    // Guesses that give up before the (30 s) brake answers: each is counted, and each
    // slot comes back at once (the 8 slots would otherwise run out). After three, the
    // address waits; a connection of it then is refused at once, saying why.
    let wrong = conduit_tests::forge::auth_frame(Codec::V1, "wrong", "guesser", "1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut guesses = 0;
    let refused = loop {
        let mut c = TestClient::from_stream(connect_from("127.0.0.2", addr), Codec::V1).unwrap();
        c.send_raw(&wrong).unwrap();
        match c.poll_frame(std::time::Duration::from_millis(100)).unwrap() {
            Some(f) => break f,
            None => guesses += 1,
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the address was never kept out"
        );
    };
    assert_eq!(refused.header.kind, FrameKind::AuthFailure);
    assert_eq!(
        refused.reason(),
        "too many failed logins from your address; retry later"
    );
    assert!(
        guesses > 3,
        "three failures are free, then one starts the wait: {guesses}"
    );
    // Meanwhile others log in and stay, filling 6 of the 8 slots: the guessers' slots
    // (more than 2 guesses were made) were given back when they left.
    let mut others = Vec::new();
    for i in 0..6 {
        let (c, f) = login_from(&format!("127.0.1.{i}"), addr);
        assert_eq!(f.header.kind, FrameKind::AuthSuccess);
        others.push(c);
    }
    // Once the wait is over, the address logs in with the right password.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, f) = login_from("127.0.0.2", addr);
        if f.header.kind == FrameKind::AuthSuccess {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the wait never ended");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    running.stop().unwrap();
}

/// Set in the child's environment: it is the child half (and not run on its own).
const FD_CHILD_MARK: &str = "CONDUIT_FD_CHILD";
/// Set in the child's environment: the runtime its server runs on.
const FD_CHILD_RUNTIME: &str = "CONDUIT_FD_CHILD_RUNTIME";

/// With every file descriptor of the process in use, a client is told "server full"
/// (through the descriptor the server keeps in reserve) instead of hanging; once
/// descriptors are free again, clients log in. The server runs in a child process
/// whose open-files limit is low and used up.
#[matrix]
fn out_of_descriptors_a_client_is_told_so() {
    use std::io::Write;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "fd_exhaustion_child", "--nocapture"])
        .env(FD_CHILD_MARK, "1")
        .env(FD_CHILD_RUNTIME, conduit_tests::runtime().name())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The child says its port on stdout once every descriptor is in use (writing to an
    // open pipe needs none); its stdout is read to the end, so it never writes into a
    // closed pipe.
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let port: u16 = loop {
        match lines.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(l) if l.starts_with("PORT ") => break l[5..].trim().parse().unwrap(),
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!("child not ready:\n{}", String::from_utf8_lossy(&out.stderr));
            }
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = TestClient::connect(addr, Codec::V1).unwrap();
    let f = c.authenticate(PW).unwrap();
    assert_eq!(f.header.kind, FrameKind::AuthFailure);
    assert_eq!(f.reason(), "server full: no file descriptors left");
    drop(c);
    // The child frees its descriptors; logins work again (once the refusal above has
    // ended and the reserve is back).
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"release\n").unwrap();
    stdin.flush().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut c = TestClient::connect(addr, Codec::V1).unwrap();
        if c.authenticate(PW).unwrap().header.kind == FrameKind::AuthSuccess {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "logins never worked again"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{log}");
    let lines = log.lines().filter(|l| l.contains("accept failed")).count();
    assert!(
        lines <= 5,
        "accept errors are rate-limited, got {lines} lines:\n{log}"
    );
}

/// The child half of `out_of_descriptors_a_client_is_told_so`.
#[test]
#[ignore = "the child process of out_of_descriptors_a_client_is_told_so"]
fn fd_exhaustion_child() {
    use std::io::BufRead;
    assert!(
        std::env::var_os(FD_CHILD_MARK).is_some(),
        "run by the parent test"
    );
    let runtime: conduit::Runtime = std::env::var(FD_CHILD_RUNTIME).unwrap().parse().unwrap();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    // A hard limit the engine cannot raise.
    let lim = libc::rlimit {
        rlim_cur: 256,
        rlim_max: 256,
    };
    // SAFETY: setrlimit reads only `lim`.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let mut desc = test_descriptor(PW)
        .shards(1)
        .max_connections(8)
        .runtime(runtime);
    desc.max_refusals_in_flight = 4;
    let server = Server::new(desc).unwrap();
    let running = server.start().unwrap();
    let port = server.local_addr().unwrap().port();
    // Use up every descriptor left, then say the port (stdout is already open).
    let mut hog = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hog.push(f);
    }
    println!("PORT {port}");
    let mut lines = std::io::stdin().lock().lines();
    assert_eq!(lines.next().unwrap().unwrap(), "release");
    drop(hog);
    // Until the parent closes our stdin.
    for _ in lines {}
    running.stop().unwrap();
}

/// A protocol error right after a v1 login closes at once, even while the post-login
/// hold (here 60 s) keeps the connection's first frames back.
#[matrix]
fn a_protocol_error_during_the_v1_hold_closes_at_once() {
    let mut desc = test_descriptor(PW);
    desc.v1_post_auth_delay = std::time::Duration::from_secs(60);
    let server = Server::new(desc).unwrap();
    let (running, addr) = start(&server);
    let mut c = TestClient::connect(addr, Codec::V1).unwrap();
    assert_eq!(
        c.authenticate(PW).unwrap().header.kind,
        FrameKind::AuthSuccess
    );
    // A header with an unknown version: the peer broke the protocol.
    c.send_raw(&conduit_tests::forge::raw_header(9, 1, 0, 0))
        .unwrap();
    // Closed within the test client's read timeout (10 s), not after the 60 s hold.
    // `expect_closed` fails the test if the close does not come within its read
    // timeout (10 s), far inside the 60 s hold.
    c.expect_closed();
    running.stop().unwrap();
}

/// MessagePack a `Value` has no place for — an extension type, a map key that is not
/// a string — in a v1 RPC request's params is answered as bad arguments (code 2000),
/// and the connection goes on.
#[matrix]
fn unsupported_msgpack_in_params_is_a_validation_error() {
    use conduit_protocol::v1::{self, V1Payload};
    let server = Server::new(test_descriptor(PW)).unwrap();
    server.rpc_with(conduit::RpcInfo::new("echo"), |call| async move {
        Ok::<_, conduit::RpcError>(call.params)
    });
    let (running, addr) = start(&server);
    let mut c = TestClient::login(addr, Codec::V1, PW);
    // A request whose params hold the string "EXTX", then that string's bytes
    // replaced by an extension value (fixext1) and by a map with an integer key.
    let frame =
        v1::Encoder::new(0).rpc_request(7, "echo", &conduit::Value::map().with("x", "EXTX"));
    let payload = frame[conduit_protocol::HEADER_LEN..].to_vec();
    let marker = [0xa4, b'E', b'X', b'T', b'X'];
    let at = payload
        .windows(marker.len())
        .position(|w| w == marker)
        .unwrap();
    for replacement in [&[0xd4, 0x01, 0x02][..], &[0x81, 0x01, 0x02][..]] {
        let mut bad = payload[..at].to_vec();
        bad.extend_from_slice(replacement);
        bad.extend_from_slice(&payload[at + marker.len()..]);
        c.send_raw(&conduit_tests::forge::v1_raw(FrameKind::RpcRequest, &bad))
            .unwrap();
        let reply = c.next_frame().unwrap();
        let V1Payload::RpcResponse { result, .. } = reply.v1() else {
            panic!("not an RPC reply: {reply:?}");
        };
        assert_eq!(
            result.get("code"),
            Some(&conduit::Value::Int(2000)),
            "{result}"
        );
    }
    // Still connected.
    c.ping().unwrap();
    assert_eq!(c.next_frame().unwrap().header.kind, FrameKind::Pong);
    running.stop().unwrap();
}

/// A connection over its inbound rate (here 5 frames/s) has its calls refused with
/// code 4290 while the connection goes on; with the close policy it is closed.
#[matrix]
fn inbound_rate_limits_refuse_calls_or_close() {
    use conduit_protocol::v1::V1Payload;
    let mut desc = test_descriptor(PW);
    desc.max_inbound_frames_per_s = Some(5);
    let server = Server::new(desc.clone()).unwrap();
    server.rpc_with(conduit::RpcInfo::new("echo"), |call| async move {
        Ok::<_, conduit::RpcError>(call.params)
    });
    let (running, addr) = start(&server);
    let mut c = TestClient::login(addr, Codec::V1, PW);
    // Twenty calls in one write: they arrive together, far faster than 5 a second.
    let mut burst = Vec::new();
    for corr in 1..=20 {
        burst.extend(conduit_tests::forge::rpc_frame(
            Codec::V1,
            corr,
            "echo",
            &conduit::Value::map(),
        ));
    }
    c.send_raw(&burst).unwrap();
    let mut refused = 0;
    for i in 0..20 {
        let f = c
            .next_frame()
            .unwrap_or_else(|e| panic!("reply {i}: {e}; {refused} refused"));
        let V1Payload::RpcResponse { result, .. } = f.v1() else {
            panic!("not a reply: {f:?}");
        };
        if result.get("code") == Some(&conduit::Value::Int(4290)) {
            refused += 1;
        }
    }
    assert!(refused >= 10, "only {refused} of 20 refused");
    c.ping().unwrap();
    assert_eq!(c.next_frame().unwrap().header.kind, FrameKind::Pong);
    running.stop().unwrap();

    desc.inbound_rate_policy = conduit::RateLimitPolicy::Close;
    let server = Server::new(desc).unwrap();
    server.rpc_with(conduit::RpcInfo::new("echo"), |call| async move {
        Ok::<_, conduit::RpcError>(call.params)
    });
    let (running, addr) = start(&server);
    // Native peers are told why in a CLOSE frame (v1 has no frame for it).
    let mut c = TestClient::login(addr, Codec::Native, PW);
    let mut burst = Vec::new();
    for corr in 1..=20 {
        burst.extend(conduit_tests::forge::rpc_frame(
            Codec::Native,
            corr,
            "echo",
            &conduit::Value::map(),
        ));
    }
    c.send_raw(&burst).unwrap();
    let seen = c.expect_closed();
    let replies = seen
        .iter()
        .filter(|f| f.header.kind == FrameKind::RpcResponse)
        .count();
    assert!(replies <= 6, "{replies} calls answered before the close");
    let last = seen.last().expect("a last frame");
    assert_eq!(last.header.kind, FrameKind::Close);
    assert_eq!(last.reason(), "rate limit exceeded");
    running.stop().unwrap();
}
