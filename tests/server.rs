//! The server engine over real sockets on 127.0.0.1: auth, refusal, heartbeat,
//! lifecycle hooks, stop, sharding.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conduit::{ConnectionId, Error, Server, ServerDescriptor, Value};
use conduit_protocol::v1::{self, V1Payload};
use conduit_protocol::{Codec, FrameKind};
use conduit_tests::{matrix, start, test_descriptor, TestClient};

const PW: &str = "secret";
const WAIT: Duration = Duration::from_secs(10);

#[matrix]
fn login_succeeds_in_both_codecs_and_ping_is_answered() {
    let server = Server::new(test_descriptor(PW).name("T1")).unwrap();
    let (running, addr) = start(&server);
    for codec in [Codec::V1, Codec::Native] {
        let mut c = TestClient::connect(addr, codec).unwrap();
        let f = c.authenticate(PW).unwrap();
        assert_eq!(f.header.kind, FrameKind::AuthSuccess);
        assert_eq!(f.header.codec, codec);
        if codec == Codec::V1 {
            match f.v1() {
                V1Payload::AuthSuccess {
                    session_token,
                    server_name,
                    ..
                } => {
                    assert_eq!(session_token.len(), 128);
                    assert!(session_token.bytes().all(|b| b.is_ascii_hexdigit()));
                    assert_eq!(server_name, "T1");
                }
                other => panic!("{other:?}"),
            }
        }
        c.ping().unwrap();
        assert_eq!(c.next_frame().unwrap().header.kind, FrameKind::Pong);
    }
    running.stop().unwrap();
}

#[matrix]
fn wrong_password_gets_a_failure_then_close() {
    let server = Server::new(test_descriptor(PW)).unwrap();
    let (running, addr) = start(&server);
    for codec in [Codec::V1, Codec::Native] {
        let mut c = TestClient::connect(addr, codec).unwrap();
        let f = c.authenticate("wrong").unwrap();
        assert_eq!(f.header.kind, FrameKind::AuthFailure);
        assert_eq!(f.reason(), "Invalid password");
        assert!(c.expect_closed().is_empty());
    }
    // An uppercase v1 hash is a different string: refused, as netconduit does.
    let mut c = TestClient::connect(addr, Codec::V1).unwrap();
    let upper = conduit_protocol::auth::v1_password_hash(PW).to_uppercase();
    c.send_raw(&v1::Encoder::new(0).auth_request(&upper, "x", "1"))
        .unwrap();
    assert_eq!(c.next_frame().unwrap().header.kind, FrameKind::AuthFailure);
    assert_eq!(server.connection_count(), 0);
    running.stop().unwrap();
}

#[matrix]
fn silent_client_is_closed_after_auth_timeout() {
    let server = Server::new(test_descriptor(PW).auth_timeout(Duration::from_millis(300))).unwrap();
    let (running, addr) = start(&server);
    let mut c = TestClient::connect(addr, Codec::V1).unwrap();
    // Says nothing: the server must close it (v1 has no frame for this before the
    // client spoke, so it closes silently).
    assert!(c.expect_closed().is_empty());
    // A half-sent auth frame does not extend the deadline.
    let mut c = TestClient::connect(addr, Codec::V1).unwrap();
    let frame =
        v1::Encoder::new(0).auth_request(&conduit_protocol::auth::v1_password_hash(PW), "x", "1");
    c.send_raw(&frame[..20]).unwrap();
    assert!(c.expect_closed().is_empty());
    running.stop().unwrap();
}

#[matrix]
fn pre_auth_frames_and_garbage_are_closed() {
    let server = Server::new(test_descriptor(PW)).unwrap();
    let (running, addr) = start(&server);
    // An RPC before login: refused with a reason, closed.
    let mut c = TestClient::connect(addr, Codec::V1).unwrap();
    c.send_raw(&v1::Encoder::new(0).rpc_request(1, "add", &Value::map()))
        .unwrap();
    let seen = c.expect_closed();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].reason(), "authentication required");
    // Garbage bytes: closed.
    let mut c = TestClient::connect(addr, Codec::V1).unwrap();
    c.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n________")
        .unwrap();
    c.expect_closed();
    // A lying length: closed without the server buffering 4 GiB.
    let mut c = TestClient::connect(addr, Codec::V1).unwrap();
    let mut h = conduit_protocol::Header::new(Codec::V1, FrameKind::AuthRequest);
    h.length = u32::MAX;
    c.send_raw(&h.encode()).unwrap();
    c.expect_closed();
    // The server still serves.
    let mut ok = TestClient::login(addr, Codec::Native, PW);
    ok.ping().unwrap();
    assert_eq!(ok.next_frame().unwrap().header.kind, FrameKind::Pong);
    running.stop().unwrap();
}

#[matrix]
fn connection_over_max_is_refused_and_count_never_exceeds_max() {
    let server = Server::new(test_descriptor(PW).max_connections(3)).unwrap();
    let (running, addr) = start(&server);
    let mut clients: Vec<TestClient> = (0..3)
        .map(|i| TestClient::login(addr, if i % 2 == 0 { Codec::V1 } else { Codec::Native }, PW))
        .collect();
    assert_eq!(server.connection_count(), 3);
    for codec in [Codec::V1, Codec::Native] {
        let mut extra = TestClient::connect(addr, codec).unwrap();
        let f = extra.authenticate(PW).unwrap();
        assert_eq!(f.header.kind, FrameKind::AuthFailure);
        assert!(f.reason().contains("max_connections"));
        extra.expect_closed();
        assert_eq!(server.connection_count(), 3);
    }
    // A slot frees up: the next client gets in.
    drop(clients.pop());
    let mut again = None;
    for _ in 0..100 {
        let mut c = TestClient::connect(addr, Codec::V1).unwrap();
        if c.authenticate(PW).unwrap().header.kind == FrameKind::AuthSuccess {
            again = Some(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(20)); // the freed slot is released async
    }
    assert!(again.is_some(), "a freed slot is reusable");
    assert_eq!(server.connection_count(), 3);
    running.stop().unwrap();
}

#[matrix]
fn silent_peer_is_dropped_by_heartbeat_while_answering_peer_stays() {
    let (tx, rx) = mpsc::channel::<(ConnectionId, Duration)>();
    let desc =
        test_descriptor(PW).heartbeat(Duration::from_millis(100), Duration::from_millis(400));
    let server = Server::new(desc).unwrap();
    let tx = Mutex::new(tx);
    server.on_client_disconnect(move |c| {
        let _ = tx.lock().unwrap().send((c.id(), Duration::ZERO));
        async {}
    });
    let (running, addr) = start(&server);
    let mut silent = TestClient::login(addr, Codec::Native, PW);
    let mut alive = TestClient::login(addr, Codec::V1, PW);
    let silent_id = ConnectionId::from_u64(silent.connection_id.unwrap());
    // The answering peer keeps replying to pings in a thread until told to stop.
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let answerer = std::thread::spawn(move || {
        let mut pings = 0;
        while stop_rx.try_recv().is_err() {
            let f = alive.next_frame().expect("alive stays connected");
            if f.header.kind == FrameKind::Ping {
                pings += 1;
                alive.pong().unwrap();
            }
        }
        (alive, pings)
    });
    // The silent one is pinged, never answers, and is closed.
    let seen = silent.expect_closed();
    assert!(
        seen.iter().any(|f| f.header.kind == FrameKind::Ping),
        "silent peer was pinged"
    );
    let (gone, _) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(gone, silent_id);
    // The answering one outlives several more timeouts' worth of pings.
    let more = {
        let mut n = 0;
        while n < 3 {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok((id, _)) => panic!("{id} dropped though it answers"),
                Err(_) => n += 1,
            }
        }
        n
    };
    assert_eq!(more, 3);
    stop_tx.send(()).unwrap();
    let (_alive, pings) = answerer.join().unwrap();
    assert!(pings >= 3, "answering peer was pinged {pings} times");
    assert_eq!(server.connection_count(), 1);
    running.stop().unwrap();
}

#[matrix]
fn hooks_run_in_order_and_disconnect_runs_exactly_once_per_client() {
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let server = Server::new(test_descriptor(PW)).unwrap();
    let e = events.clone();
    server.on_startup(move |srv| {
        let e = e.clone();
        async move {
            assert_ne!(srv.port(), 0, "port known at startup");
            assert!(srv.is_running());
            e.lock().unwrap().push(format!("startup {}", srv.address()));
        }
    });
    let e = events.clone();
    server.on_client_connect(move |c| {
        let e = e.clone();
        async move {
            assert!(c.is_authenticated());
            e.lock().unwrap().push(format!("connect {}", c.id()));
            c.send_message("welcome", Value::map().with("id", c.id().to_string()))
                .await
                .unwrap();
        }
    });
    let e = events.clone();
    server.on_client_disconnect(move |c| {
        let e = e.clone();
        async move {
            e.lock().unwrap().push(format!("disconnect {}", c.id()));
        }
    });
    let e = events.clone();
    server.on_shutdown(move |srv| {
        let e = e.clone();
        async move {
            // Still able to reach clients.
            let n = srv.broadcast("server_shutdown", Value::map()).await;
            e.lock().unwrap().push(format!("shutdown reached {n}"));
        }
    });
    let (running, addr) = start(&server);
    assert!(events.lock().unwrap()[0].starts_with("startup 127.0.0.1:"));

    // Four ways to leave: peer close, kick, heartbeat-free protocol error, server stop.
    let mut a = TestClient::login(addr, Codec::V1, PW);
    let mut b = TestClient::login(addr, Codec::Native, PW);
    let mut c = TestClient::login(addr, Codec::Native, PW);
    let mut d = TestClient::login(addr, Codec::V1, PW);
    let (_, welcome) = b.next_message().unwrap();
    let b_id: ConnectionId = welcome
        .get("id")
        .unwrap()
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (_, welcome) = a.next_message().unwrap();
    let a_id: ConnectionId = welcome
        .get("id")
        .unwrap()
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let _ = c.next_message().unwrap();
    let _ = d.next_message().unwrap();
    assert_eq!(server.connection_count(), 4);

    drop(a); // peer close
    let conn_b = server.connection(b_id).expect("b is connected");
    assert!(conn_b.is_authenticated());
    futures_block(conn_b.disconnect_with("kicked", Value::map().with("reason", "Violation")))
        .unwrap();
    let (name, data) = b.next_message().unwrap();
    assert_eq!(
        (name.as_str(), data.get("reason")),
        ("kicked", Some(&Value::from("Violation")))
    );
    b.expect_closed();
    c.send_raw(b"CNDT\x09\x09garbage-after-auth-xxxxxxxxxxxxxxxxxxxxxxx")
        .unwrap();
    c.expect_closed();
    // Wait for those three to be gone, then stop with d still connected.
    for _ in 0..500 {
        if server.connection_count() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.connection_count(), 1);
    assert!(server.connection(a_id).is_none());
    running.stop().unwrap();
    let seen = d.expect_closed();
    assert!(seen.iter().any(
        |f| matches!(f.v1(), V1Payload::Message { ref name, .. } if name == "server_shutdown")
    ));
    assert!(!server.is_running());
    assert_eq!(server.connection_count(), 0);

    let events = events.lock().unwrap().clone();
    let mut per_conn: HashMap<String, (usize, usize)> = HashMap::new();
    for ev in &events {
        if let Some(id) = ev.strip_prefix("connect ") {
            per_conn.entry(id.to_owned()).or_default().0 += 1;
        }
        if let Some(id) = ev.strip_prefix("disconnect ") {
            per_conn.entry(id.to_owned()).or_default().1 += 1;
        }
    }
    assert_eq!(per_conn.len(), 4, "{events:?}");
    assert!(
        per_conn.values().all(|&(c, d)| c == 1 && d == 1),
        "{events:?}"
    );
    let shutdown_at = events
        .iter()
        .position(|e| e.starts_with("shutdown"))
        .unwrap();
    assert_eq!(events[shutdown_at], "shutdown reached 1");
    let last_disconnect = events
        .iter()
        .rposition(|e| e.starts_with("disconnect"))
        .unwrap();
    assert!(
        shutdown_at < last_disconnect,
        "on_shutdown runs before connections close"
    );
}

#[matrix]
fn stop_with_100_live_connections_returns_and_every_hook_ran() {
    let connects = Arc::new(Mutex::new(0usize));
    let disconnects = Arc::new(Mutex::new(HashSet::new()));
    let shutdowns = Arc::new(Mutex::new(0usize));
    let server = Server::new(test_descriptor(PW)).unwrap();
    let n = connects.clone();
    server.on_client_connect(move |_| {
        *n.lock().unwrap() += 1;
        async {}
    });
    let d = disconnects.clone();
    server.on_client_disconnect(move |c| {
        assert!(
            d.lock().unwrap().insert(c.id()),
            "disconnect hook twice for {}",
            c.id()
        );
        async {}
    });
    let s = shutdowns.clone();
    server.on_shutdown(move |_| {
        *s.lock().unwrap() += 1;
        async {}
    });
    let (running, addr) = start(&server);
    let mut clients: Vec<TestClient> = (0..100)
        .map(|i| TestClient::login(addr, if i % 2 == 0 { Codec::V1 } else { Codec::Native }, PW))
        .collect();
    assert_eq!(server.connection_count(), 100);
    running.stop().unwrap();
    for c in &mut clients {
        c.expect_closed();
    }
    assert_eq!(*connects.lock().unwrap(), 100);
    assert_eq!(disconnects.lock().unwrap().len(), 100);
    assert_eq!(*shutdowns.lock().unwrap(), 1);
    assert!(!server.is_running());
}

/// Shards take turns serving accepted connections, whichever shard the kernel woke to
/// accept them (on epoll one shard can win nearly every accept on the shared socket):
/// 40 logins one after another split exactly in half.
#[matrix]
fn connections_are_dealt_to_the_shards_in_turn() {
    let server = Server::new(test_descriptor(PW).shards(2)).unwrap();
    let (running, addr) = start(&server);
    let clients: Vec<TestClient> = (0..40)
        .map(|_| TestClient::login(addr, Codec::Native, PW))
        .collect();
    let on_0 = clients
        .iter()
        .filter(|c| ConnectionId::from_u64(c.connection_id.unwrap()).shard() == 0)
        .count();
    assert_eq!((on_0, 40 - on_0), (20, 20), "connections per shard");
    // Each still works where it landed (half of them were handed over).
    for mut c in clients {
        c.ping().unwrap();
        assert_eq!(c.next_frame().unwrap().header.kind, FrameKind::Pong);
    }
    running.stop().unwrap();
}

#[matrix]
fn the_port_belongs_to_one_server() {
    let server = Server::new(test_descriptor(PW).shards(2)).unwrap();
    let (running, addr) = start(&server);
    // A second conduit server on the same port fails to start, saying why.
    let intruder = Server::new(test_descriptor(PW).port(addr.port())).unwrap();
    let err = intruder.start().unwrap_err().to_string();
    assert!(err.contains("in use"), "{err}");
    // So does any program of the same user that asks for SO_REUSEPORT.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_reuse_port(true).unwrap();
    let bound = sock.bind(&addr.into());
    assert_eq!(
        bound.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::AddrInUse)
    );
    // The server was not disturbed: both shards still accept on the port.
    let c = TestClient::login(addr, Codec::V1, PW);
    drop(c);
    running.stop().unwrap();
    // Once it stopped, the port is free again (a restart binds at once).
    let again = Server::new(test_descriptor(PW).port(addr.port())).unwrap();
    let (running, _) = start(&again);
    running.stop().unwrap();
}

#[test]
fn invalid_descriptors_are_refused_by_new() {
    assert!(matches!(
        Server::new(ServerDescriptor::new("")),
        Err(Error::Config {
            field: "password",
            ..
        })
    ));
    assert!(matches!(
        Server::new(
            ServerDescriptor::new("x").heartbeat(Duration::from_secs(9), Duration::from_secs(3))
        ),
        Err(Error::Config {
            field: "heartbeat_timeout",
            ..
        })
    ));
}

#[matrix]
fn start_twice_is_an_error_and_restart_works() {
    let server = Server::new(test_descriptor(PW)).unwrap();
    let running = server.start().unwrap();
    assert!(matches!(server.start(), Err(Error::AlreadyRunning)));
    running.stop().unwrap();
    assert!(!server.is_running());
    let running = server.start().unwrap();
    let addr = server.local_addr().unwrap();
    let _c = TestClient::login(addr, Codec::V1, PW);
    running.stop().unwrap();
}

/// Drives a future to completion on this (non-shard) thread.
fn futures_block<T>(f: impl std::future::Future<Output = T>) -> T {
    conduit::block_on(f)
}

/// Sets its flag when dropped: proof that a handler's future was dropped.
struct DropFlag(mpsc::Sender<&'static str>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        let _ = self.0.send("dropped");
    }
}

#[matrix]
fn a_handler_that_never_completes_is_dropped_when_its_peer_goes() {
    let server = Server::new(test_descriptor(PW)).unwrap();
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    server.rpc_with(conduit::RpcInfo::new("hang"), move |_call| {
        let flag = DropFlag(tx.lock().unwrap().clone());
        async move {
            let _flag = flag;
            std::future::pending::<()>().await;
            Ok::<Value, conduit::RpcError>(Value::Nil)
        }
    });
    let (running, addr) = start(&server);
    for codec in [Codec::V1, Codec::Native] {
        let mut c = TestClient::login(addr, codec, PW);
        let frame = conduit_tests::forge::rpc_frame(codec, 1, "hang", &Value::map());
        c.send_raw(&frame).unwrap();
        // The peer vanishes with its call in flight: the handler's future is dropped,
        // its connection is gone, and the server serves others.
        drop(c);
        assert_eq!(rx.recv_timeout(WAIT), Ok("dropped"));
        let deadline = std::time::Instant::now() + WAIT;
        while server.connection_count() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(server.connection_count(), 0);
    }
    let mut other = TestClient::login(addr, Codec::V1, PW);
    other.ping().unwrap();
    assert_eq!(other.next_frame().unwrap().header.kind, FrameKind::Pong);
    running.stop().unwrap();
}

#[matrix]
fn names_no_peer_could_receive_are_refused_where_they_are_registered_or_sent() {
    // A message type whose `<type>_response` would not fit the wire: start says so.
    let server = Server::new(test_descriptor(PW)).unwrap();
    server.on(&"m".repeat(247), |_c, _v: Value| async {});
    match server.start() {
        Err(Error::Config { field, problem }) => {
            assert_eq!(field, "message handler");
            assert!(problem.contains("247 bytes"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    // 246 bytes fit.
    let server = Server::new(test_descriptor(PW)).unwrap();
    server.on(&"m".repeat(246), |_c, _v: Value| async {});
    let (running, addr) = start(&server);
    let c = TestClient::login(addr, Codec::Native, PW);
    let id = ConnectionId::from_u64(c.connection_id.unwrap());
    // Sending a name over 255 bytes is an error, not a silent skip of one codec.
    let long = "n".repeat(256);
    let sent = futures_block(server.broadcast(&long, Value::Nil).send());
    assert!(matches!(sent, Err(Error::Encode(_))), "{sent:?}");
    assert_eq!(conduit::block_on(server.broadcast(&long, Value::Nil)), 0);
    let direct = futures_block(server.send_to_id(id, &long, Value::Nil));
    assert!(matches!(direct, Err(Error::Encode(_))), "{direct:?}");
    // 255 bytes reach the peer.
    let n = futures_block(server.broadcast(&"n".repeat(255), Value::Nil).send()).unwrap();
    assert_eq!(n, 1);
    running.stop().unwrap();
}
