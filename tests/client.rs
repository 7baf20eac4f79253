//! The product client against a real server on 127.0.0.1, both the async client (on a
//! glommio executor thread) and the blocking facade, in both codecs: login, calls and
//! their errors, pushed messages, request/`_response`, timeouts, heartbeat, close, and
//! reconnection across a server restart on the same port.
//!
//! Nothing here sleeps to synchronise: tests wait on events, channels and replies, each
//! bounded by a generous timeout.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use conduit::client::blocking;
use conduit::{
    Client, ClientDescriptor, ClientError, ClientEvent, Codec, DisconnectReason, RpcError, RpcInfo,
    Running, Server, ServerDescriptor, Value,
};
use conduit_protocol::{v1, DecoderLimits, FrameDecoder, FrameKind};
use conduit_tests::{matrix, start, test_descriptor};

const PW: &str = "secret";
/// Bound on every wait for something that should happen promptly.
const WAIT: Duration = Duration::from_secs(10);
const CODECS: [Codec; 2] = [Codec::Native, Codec::V1];

/// A server with the methods and handlers the tests use. `held` learns of every `hold`
/// message (which is never answered).
fn build_server(desc: ServerDescriptor, held: Option<mpsc::Sender<()>>) -> Server {
    let server = Server::new(desc).unwrap();
    server.rpc_with(
        RpcInfo::new("add").param("a", "int").param("b", "int"),
        |call| async move {
            let arg = |k: &str| call.params.get(k).and_then(Value::as_i64);
            match (arg("a"), arg("b")) {
                (Some(a), Some(b)) => Ok(a + b),
                _ => Err(RpcError::validation(
                    "Validation error in add",
                    Some(Value::map().with("missing", "a or b")),
                )),
            }
        },
    );
    server.rpc_with(
        RpcInfo::new("divide")
            .param("a", "float")
            .param("b", "float"),
        |call| async move {
            let a = call.params.get("a").and_then(Value::as_f64).unwrap_or(0.0);
            let b = call.params.get("b").and_then(Value::as_f64).unwrap_or(0.0);
            if b == 0.0 {
                return Err(RpcError::failed("Cannot divide by zero"));
            }
            Ok(Value::Float(a / b))
        },
    );
    server.rpc_with(RpcInfo::new("slow").param("ms", "int"), |call| async move {
        let ms = call.params.get("ms").and_then(Value::as_u64).unwrap_or(0);
        conduit::rt::sleep(Duration::from_millis(ms)).await;
        Ok::<_, RpcError>(true)
    });
    // Pushes `note` (and an unhandled `other`) to the caller before answering, so the
    // pushes are queued ahead of the answer on the same connection.
    server.rpc_with(RpcInfo::new("push_me"), |call| async move {
        let c = &call.connection;
        c.send_message("note", call.params.clone()).await.unwrap();
        c.send_message("other", Value::from("x")).await.unwrap();
        Ok::<_, RpcError>(true)
    });
    server.on("echo", |_, data: Value| async move { data });
    let held = held.map(Mutex::new);
    server.on("hold", move |_, _data: Value| {
        if let Some(tx) = &held {
            let _ = tx.lock().unwrap().send(());
        }
        async {}
    });
    server.on_client_connect(|c| async move {
        let _ = c
            .send_message("welcome", Value::map().with("id", c.id().to_string()))
            .await;
    });
    server
}

/// Runs the future `make` builds on a client executor of the test's backend and waits
/// for its output.
fn run_client<G, F, T>(make: G) -> conduit::client::ClientResult<T>
where
    G: FnOnce() -> F + Send + 'static,
    F: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    conduit_tests::spawn_client("test-client", make).join()
}

fn client_desc(addr: SocketAddr, codec: Codec) -> ClientDescriptor {
    ClientDescriptor::new(PW)
        .runtime(conduit_tests::runtime())
        .addr(addr)
        .codec(codec)
        .connect_timeout(WAIT)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
}

fn add(a: i64, b: i64) -> Value {
    Value::map().with("a", a).with("b", b)
}

fn expect_rpc_error(r: Result<Value, ClientError>) -> (i64, String, Option<Value>) {
    match r {
        Err(ClientError::Rpc {
            code,
            message,
            details,
        }) => (code, message, details),
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

/// Starts a server on `port` again, retrying while the port is still held by the
/// previous one (bounded by `WAIT`).
fn restart_on(port: u16, held: Option<mpsc::Sender<()>>) -> (Server, Running) {
    let deadline = Instant::now() + WAIT;
    loop {
        let server = build_server(test_descriptor(PW).port(port), held.clone());
        match server.start() {
            Ok(running) => return (server, running),
            Err(e) if Instant::now() < deadline => {
                eprintln!("port {port} not free yet ({e}); retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot restart on port {port}: {e}"),
        }
    }
}

// ---- async client -------------------------------------------------------------------

#[matrix]
fn async_client_calls_messages_and_requests_in_both_codecs() {
    let server = build_server(test_descriptor(PW).name("T-async"), None);
    let (running, addr) = start(&server);
    run_client(move || async move {
        for codec in CODECS {
            let client = Client::new(client_desc(addr, codec)).unwrap();
            // Registered before open: the welcome sent right at login is not missed.
            let seen: Rc<RefCell<Vec<(String, Value)>>> = Rc::default();
            for name in ["welcome", "note"] {
                let s = seen.clone();
                client.on(name, move |v| s.borrow_mut().push((name.to_owned(), v)));
            }
            let s = seen.clone();
            client.on_any(move |name, v| s.borrow_mut().push((format!("any:{name}"), v)));
            let events = client.events();
            client.open().await.unwrap();
            assert_eq!(events.try_next(), Some(ClientEvent::Connected));
            assert!(client.is_connected());
            assert_eq!(
                client.server_info().map(|(n, _)| n).as_deref(),
                Some("T-async")
            );
            match codec {
                Codec::Native => assert!(client.connection_id().is_some()),
                Codec::V1 => assert_eq!(client.connection_id(), None),
            }

            assert_eq!(client.call("add", add(2, 3)).await.unwrap(), Value::Int(5));
            let (code, message, _) = expect_rpc_error(client.call("divide", add(1, 0)).await);
            assert_eq!(
                (code, message.as_str()),
                (1001, "Error in divide: Cannot divide by zero")
            );
            let (code, message, details) =
                expect_rpc_error(client.call("add", Value::map().with("a", 1)).await);
            assert_eq!(code, 2000);
            assert_eq!(message, "Validation error in add");
            assert_eq!(details, Some(Value::map().with("missing", "a or b")));
            let (code, message, _) = expect_rpc_error(client.call("nope", Value::map()).await);
            assert_eq!(
                (code, message.as_str()),
                (4000, "RPC method not found: nope")
            );
            let list = client.call("listall", Value::map()).await.unwrap();
            let names: Vec<&str> = list
                .get("methods")
                .and_then(Value::as_array)
                .unwrap()
                .iter()
                .filter_map(|m| m.get("name").and_then(Value::as_str))
                .collect();
            assert_eq!(names, ["add", "divide", "slow", "push_me"]);
            assert_eq!(list.get("count"), Some(&Value::Int(4)));

            // Pushes reach their handlers (unhandled types the catch-all) before the
            // answer that was queued after them.
            let payload = Value::map().with("n", 7);
            assert_eq!(
                client.call("push_me", payload.clone()).await.unwrap(),
                Value::Bool(true)
            );
            let seen_now = seen.borrow().clone();
            assert!(
                matches!(&seen_now[..], [(w, _), (n, p), (o, x)]
                    if w == "welcome" && n == "note" && *p == payload
                        && o == "any:other" && *x == Value::from("x")),
                "{codec:?}: {seen_now:?}"
            );

            // request / `<name>_response`.
            assert_eq!(
                client.request("echo", Value::from("one")).await.unwrap(),
                Value::from("one")
            );
            if codec == Codec::Native {
                // Matched by correlation id: the reply to an earlier fire-and-forget
                // send (it arrives first) is an ordinary message, not the answer.
                client.send_message("echo", "stray").await.unwrap();
                assert_eq!(
                    client.request("echo", Value::from("two")).await.unwrap(),
                    Value::from("two")
                );
                assert_eq!(
                    seen.borrow().last(),
                    Some(&("any:echo_response".to_owned(), Value::from("stray")))
                );
            }

            client.close().await;
            assert!(!client.is_connected());
            assert!(matches!(
                client.call("add", add(1, 1)).await,
                Err(ClientError::Closed)
            ));
            assert_eq!(
                events.next_timeout(WAIT).await,
                Some(ClientEvent::Disconnected(DisconnectReason::ClosedByClient))
            );
        }
    })
    .expect("async test body");
    running.stop().unwrap();
}

#[matrix]
fn async_client_times_out_refuses_bad_password_and_fails_without_server() {
    let server = build_server(test_descriptor(PW), None);
    let (running, addr) = start(&server);
    // A port nobody listens on.
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // Accepts (in the kernel's backlog) but never says a word.
    let silent_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent_listener.local_addr().unwrap();
    run_client(move || async move {
        for codec in CODECS {
            let client = Client::connect(client_desc(addr, codec)).await.unwrap();
            let started = Instant::now();
            let r = client
                .call_timeout(
                    "slow",
                    Value::map().with("ms", 1000),
                    Duration::from_millis(100),
                )
                .await;
            assert!(matches!(r, Err(ClientError::Timeout)), "{r:?}");
            assert!(started.elapsed() < Duration::from_millis(900));
            // The late answer is dropped; the connection keeps working.
            assert_eq!(client.call("add", add(1, 1)).await.unwrap(), Value::Int(2));
            // A request nobody answers times out too.
            let quick =
                Client::connect(client_desc(addr, codec).rpc_timeout(Duration::from_millis(100)))
                    .await
                    .unwrap();
            assert!(matches!(
                quick.request("hold", Value::Nil).await,
                Err(ClientError::Timeout)
            ));
            quick.close().await;
            client.close().await;

            match Client::connect(client_desc(addr, codec).password("wrong")).await {
                Err(ClientError::AuthFailed(reason)) => assert_eq!(reason, "Invalid password"),
                other => panic!("{codec:?}: expected AuthFailed, got {other:?}"),
            }
            // A listener that never answers the login: connect_timeout bounds it, and
            // a failed open leaves the client ready for another try.
            let silent = Client::new(
                client_desc(silent_addr, codec).connect_timeout(Duration::from_millis(100)),
            )
            .unwrap();
            for _ in 0..2 {
                assert!(matches!(silent.open().await, Err(ClientError::Timeout)));
                assert!(!silent.is_connected());
            }
            match Client::connect(client_desc(closed_port, codec)).await {
                Err(ClientError::Io(e)) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused)
                }
                other => panic!("expected connection refused, got {other:?}"),
            }
        }
    })
    .expect("async test body");
    drop(silent_listener);
    running.stop().unwrap();
}

#[matrix]
fn one_executor_holds_hundreds_of_clients() {
    const N: usize = 300;
    let server = build_server(test_descriptor(PW).max_connections(N + 10), None);
    let (running, addr) = start(&server);
    let count = run_client(move || async move {
        let mut clients = Vec::with_capacity(N);
        for i in 0..N {
            let codec = CODECS[i % 2];
            clients.push(Client::connect(client_desc(addr, codec)).await.unwrap());
        }
        // All connected at once, each with its reader and writer task on this thread.
        for (i, c) in clients.iter().enumerate() {
            let i = i as i64;
            assert_eq!(c.call("add", add(i, 1)).await.unwrap(), Value::Int(i + 1));
        }
        let connected = clients.iter().filter(|c| c.is_connected()).count();
        for c in &clients {
            c.close().await;
        }
        connected
    })
    .expect("async test body");
    assert_eq!(count, N);
    running.stop().unwrap();
}

#[matrix]
fn async_client_reconnects_after_a_server_restart_on_the_same_port() {
    for codec in CODECS {
        let server = build_server(test_descriptor(PW), None);
        let (running, addr) = start(&server);
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let body = conduit_tests::spawn_client("async-reconnect", move || async move {
            let client = Client::new(client_desc(addr, codec)).unwrap();
            let notes = Rc::new(RefCell::new(0));
            let n = notes.clone();
            client.on("note", move |_| *n.borrow_mut() += 1);
            let events = client.events();
            client.open().await.unwrap();
            assert_eq!(
                events.next_timeout(WAIT).await,
                Some(ClientEvent::Connected)
            );
            assert_eq!(client.call("add", add(1, 2)).await.unwrap(), Value::Int(3));
            ready_tx.send(()).unwrap();

            // The server goes away...
            match events.next_timeout(WAIT).await {
                Some(ClientEvent::Disconnected(r)) => {
                    assert_ne!(r, DisconnectReason::ClosedByClient)
                }
                other => panic!("expected Disconnected, got {other:?}"),
            }
            assert!(!client.is_connected());
            // ...and comes back on the same port: attempts count up to a success.
            let mut attempts = 0;
            loop {
                match events.next_timeout(WAIT).await {
                    Some(ClientEvent::Reconnecting(n)) => {
                        assert_eq!(n, attempts + 1);
                        attempts = n;
                    }
                    Some(ClientEvent::Reconnected) => break,
                    other => panic!("expected Reconnecting/Reconnected, got {other:?}"),
                }
            }
            assert!(attempts >= 1);
            assert!(client.is_connected());
            assert_eq!(client.call("add", add(2, 2)).await.unwrap(), Value::Int(4));
            // Handlers registered before the loss still apply.
            client.call("push_me", Value::map()).await.unwrap();
            assert_eq!(*notes.borrow(), 1);
            client.close().await;
        });
        ready_rx.recv_timeout(WAIT).expect("client connected");
        let port = addr.port();
        running.stop().unwrap();
        let (server2, running2) = restart_on(port, None);
        body.join().expect("async test body");
        assert_eq!(server2.port(), port);
        running2.stop().unwrap();
    }
}

// ---- blocking facade ----------------------------------------------------------------

#[matrix]
fn blocking_client_calls_messages_and_requests_in_both_codecs() {
    let server = build_server(test_descriptor(PW), None);
    let (running, addr) = start(&server);
    for codec in CODECS {
        let client = blocking::Client::new(client_desc(addr, codec)).unwrap();
        let (tx, rx) = mpsc::channel::<(String, Value)>();
        for name in ["welcome", "note"] {
            let tx = Mutex::new(tx.clone());
            client.on(name, move |v| {
                let _ = tx.lock().unwrap().send((name.to_owned(), v));
            });
        }
        let events = client.events();
        client.open().unwrap();
        assert_eq!(events.recv_timeout(WAIT), Some(ClientEvent::Connected));
        assert!(client.is_connected());
        assert_eq!(client.connection_id().is_some(), codec == Codec::Native);
        let (name, welcome) = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(name, "welcome");
        if let Some(id) = client.connection_id() {
            assert_eq!(
                welcome.get("id").and_then(Value::as_str),
                Some(id.to_string().as_str()),
                "the server's id for us is the one login gave"
            );
        }

        assert_eq!(client.call("add", add(20, 22)).unwrap(), Value::Int(42));
        let (code, message, _) = expect_rpc_error(client.call("divide", add(1, 0)));
        assert_eq!(
            (code, message.as_str()),
            (1001, "Error in divide: Cannot divide by zero")
        );
        assert_eq!(
            expect_rpc_error(client.call("missing", Value::map())).0,
            4000
        );
        let list = client.call("listall", Value::map()).unwrap();
        assert_eq!(list.get("count"), Some(&Value::Int(4)));

        client.call("push_me", Value::from("hello")).unwrap();
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap(),
            ("note".to_owned(), Value::from("hello"))
        );
        assert_eq!(
            client.request("echo", Value::from("ping")).unwrap(),
            Value::from("ping")
        );
        assert!(matches!(
            client.call_timeout(
                "slow",
                Value::map().with("ms", 500),
                Duration::from_millis(50)
            ),
            Err(ClientError::Timeout)
        ));

        // Calls and requests from several threads at once each get their own answer.
        let client = Arc::new(client);
        let workers: Vec<_> = (0..4i64)
            .map(|t| {
                let c = client.clone();
                std::thread::spawn(move || {
                    for i in 0..25i64 {
                        assert_eq!(c.call("add", add(t, i)).unwrap(), Value::Int(t + i));
                        let v = Value::map().with("t", t).with("i", i);
                        assert_eq!(c.request("echo", v.clone()).unwrap(), v);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }

        client.close();
        assert!(!client.is_connected());
        assert!(matches!(
            client.call("add", add(1, 1)),
            Err(ClientError::Closed)
        ));
        assert_eq!(
            events.recv_timeout(WAIT),
            Some(ClientEvent::Disconnected(DisconnectReason::ClosedByClient))
        );
    }
    running.stop().unwrap();
}

#[matrix]
fn blocking_client_wrong_password_is_auth_failed() {
    let server = build_server(test_descriptor(PW), None);
    let (running, addr) = start(&server);
    for codec in CODECS {
        match blocking::Client::connect(client_desc(addr, codec).password("nope")) {
            Err(ClientError::AuthFailed(reason)) => assert_eq!(reason, "Invalid password"),
            other => panic!("{codec:?}: expected AuthFailed, got {other:?}"),
        }
    }
    assert_eq!(server.connection_count(), 0);
    running.stop().unwrap();
}

#[matrix]
fn blocking_client_reconnects_reauthenticates_and_fails_pending_calls() {
    for codec in CODECS {
        let (held_tx, held_rx) = mpsc::channel();
        let server = build_server(test_descriptor(PW), Some(held_tx.clone()));
        let (running, addr) = start(&server);
        let client = Arc::new(blocking::Client::new(client_desc(addr, codec)).unwrap());
        let events = client.events();
        client.open().unwrap();
        assert_eq!(events.recv_timeout(WAIT), Some(ClientEvent::Connected));
        assert_eq!(server.connection_count(), 1);

        // A request the server never answers is pending when the server goes away.
        let c = client.clone();
        let pending = std::thread::spawn(move || c.request("hold", Value::from(1)));
        held_rx
            .recv_timeout(WAIT)
            .expect("the server got the request");

        let port = addr.port();
        running.stop().unwrap();
        match events.recv_timeout(WAIT) {
            Some(ClientEvent::Disconnected(r)) => assert_ne!(r, DisconnectReason::ClosedByClient),
            other => panic!("expected Disconnected, got {other:?}"),
        }
        assert!(matches!(
            pending.join().unwrap(),
            Err(ClientError::Disconnected)
        ));
        assert!(!client.is_connected());
        assert!(matches!(
            client.call("add", add(1, 1)),
            Err(ClientError::Disconnected)
        ));

        let (server2, running2) = restart_on(port, Some(held_tx));
        let mut attempts = 0;
        loop {
            match events.recv_timeout(WAIT) {
                Some(ClientEvent::Reconnecting(n)) => {
                    assert_eq!(n, attempts + 1);
                    attempts = n;
                }
                Some(ClientEvent::Reconnected) => break,
                other => panic!("expected Reconnecting/Reconnected, got {other:?}"),
            }
        }
        // Logged in again: the new server counts us (it counts before AUTH_SUCCESS).
        assert_eq!(server2.connection_count(), 1);
        assert!(client.is_connected());
        assert_eq!(client.connection_id().is_some(), codec == Codec::Native);
        assert_eq!(client.call("add", add(5, 6)).unwrap(), Value::Int(11));
        client.close();
        running2.stop().unwrap();
    }
}

#[matrix]
fn blocking_client_gives_up_after_max_attempts() {
    let server = build_server(test_descriptor(PW), None);
    let (running, addr) = start(&server);
    let client =
        blocking::Client::new(client_desc(addr, Codec::Native).max_attempts(Some(2))).unwrap();
    let events = client.events();
    client.open().unwrap();
    assert_eq!(events.recv_timeout(WAIT), Some(ClientEvent::Connected));
    running.stop().unwrap();
    let mut seen = Vec::new();
    while let Some(e) = events.recv_timeout(WAIT) {
        let done = matches!(e, ClientEvent::GaveUp(_));
        seen.push(e);
        if done {
            break;
        }
    }
    assert!(
        matches!(
            &seen[..],
            [
                ClientEvent::Disconnected(_),
                ClientEvent::Reconnecting(1),
                ClientEvent::Reconnecting(2),
                ClientEvent::GaveUp(2)
            ]
        ),
        "{seen:?}"
    );
    assert!(matches!(
        client.call("add", add(1, 1)),
        Err(ClientError::Disconnected)
    ));
}

/// A hand-made v1 server that logs the client in, pings it once, then goes silent,
/// recording every frame type it receives until the client hangs up.
fn silent_v1_server(listener: TcpListener) -> Vec<FrameKind> {
    let (mut sock, _) = listener.accept().unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut decoder = FrameDecoder::new(DecoderLimits::default());
    let mut kinds = Vec::new();
    let mut logged_in = false;
    loop {
        while let Some(f) = decoder.next_frame().unwrap() {
            kinds.push(f.header.kind);
            if f.header.kind == FrameKind::AuthRequest && !logged_in {
                logged_in = true;
                let enc = v1::Encoder::new(0);
                sock.write_all(&enc.auth_success(&"0".repeat(128), "silent", "0"))
                    .unwrap();
                sock.write_all(&enc.empty(FrameKind::Ping)).unwrap();
            }
        }
        let n = match sock.read(decoder.spare()) {
            Ok(n) => n,
            // Executors in this process may interrupt a blocking read with signals.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        if n == 0 {
            return kinds;
        }
        decoder.commit(n);
    }
}

#[matrix]
fn client_answers_pings_pings_when_idle_and_drops_a_silent_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = std::thread::spawn(move || silent_v1_server(listener));
    let client = blocking::Client::new(
        client_desc(addr, Codec::V1)
            .heartbeat(Duration::from_millis(100), Duration::from_millis(500))
            .reconnect(false),
    )
    .unwrap();
    let events = client.events();
    let started = Instant::now();
    client.open().unwrap();
    assert_eq!(events.recv_timeout(WAIT), Some(ClientEvent::Connected));
    match events.recv_timeout(WAIT) {
        Some(ClientEvent::Disconnected(DisconnectReason::HeartbeatTimeout(d))) => {
            assert_eq!(d, Duration::from_millis(500))
        }
        other => panic!("expected a heartbeat timeout, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(500));
    let kinds = fake.join().unwrap();
    assert_eq!(kinds.first(), Some(&FrameKind::AuthRequest));
    assert!(
        kinds.contains(&FrameKind::Pong),
        "answered the server's ping: {kinds:?}"
    );
    let pings = kinds.iter().filter(|k| **k == FrameKind::Ping).count();
    assert!(pings >= 2, "pinged the silent server while idle: {kinds:?}");
    // Reconnection is off: no more events, and calls say so.
    assert!(events.try_next().is_none());
    assert!(matches!(
        client.call("add", add(1, 1)),
        Err(ClientError::Disconnected)
    ));
}

/// The async client inside an application's own tokio runtime (no conduit executor
/// thread): within a `LocalSet` it connects (its tasks and heartbeat timer on the
/// application's runtime), calls and closes, against either server backend.
#[matrix]
fn async_client_runs_inside_an_applications_tokio_runtime() {
    let server = build_server(test_descriptor(PW), None);
    let (running, addr) = start(&server);
    let app = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let sums = local.block_on(&app, async move {
        let mut sums = Vec::new();
        for codec in CODECS {
            let client = Client::connect(client_desc(addr, codec)).await.unwrap();
            assert!(client.is_connected());
            sums.push(client.call("add", add(20, 22)).await.unwrap());
            client.close().await;
        }
        sums
    });
    assert_eq!(sums, vec![Value::Int(42), Value::Int(42)]);
    running.stop().unwrap();
}

/// A host given by name is looked up off the executor (the backend's blocking pool)
/// and connected to.
#[matrix]
fn a_client_resolves_a_host_name() {
    let server = build_server(test_descriptor(PW), None);
    let (running, addr) = start(&server);
    let desc = client_desc(addr, Codec::Native).host("localhost");
    let client = blocking::Client::connect(desc).unwrap();
    assert_eq!(client.call("add", add(1, 2)).unwrap(), Value::Int(3));
    drop(client);
    running.stop().unwrap();
}
