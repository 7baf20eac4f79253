//! Floods and faults over real sockets: a connection flood past `max_connections`,
//! peers that vanish or reset mid-frame, handlers that panic or fail under load, and
//! `stop()` in the middle of a broadcast storm with RPCs in flight. In every case the
//! server keeps its counts straight, keeps serving, and nothing hangs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex, Once};
use std::time::{Duration, Instant};

use conduit::{Codec, ConnectionId, RpcError, RpcInfo, RpcMethod, Server, ServerDescriptor, Value};
use conduit_protocol::v1::{self, V1Payload};
use conduit_protocol::FrameKind;
use conduit_tests::forge::{auth_frame, message_frame};
use conduit_tests::{matrix, start, test_descriptor, TestClient};

const PW: &str = "secret";
const CODECS: [Codec; 2] = [Codec::V1, Codec::Native];
const WAIT: Duration = Duration::from_secs(10);

/// Deliberate panics in handlers are expected here; keep them out of the test output
/// (every other panic is still printed).
fn quiet_deliberate_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("");
            if !msg.contains("deliberate panic") {
                default(info);
            }
        }));
    });
}

fn add_rpc(server: &Server) {
    server.rpc_with(
        RpcInfo::new("add").param("a", "int").param("b", "int"),
        |call| async move {
            let arg = |k: &str| call.params.get(k).and_then(Value::as_i64);
            match (arg("a"), arg("b")) {
                (Some(a), Some(b)) => Ok(a + b),
                _ => Err(RpcError::validation("Validation error in add", None)),
            }
        },
    );
}

fn add(c: &mut TestClient, a: i64, b: i64) -> Value {
    c.rpc("add", &Value::map().with("a", a).with("b", b))
        .unwrap()
        .get("data")
        .cloned()
        .unwrap_or_default()
}

fn assert_serving(addr: std::net::SocketAddr) {
    for codec in CODECS {
        let mut c = TestClient::login(addr, codec, PW);
        assert_eq!(add(&mut c, 20, 22), Value::from(42), "{codec:?}");
    }
}

/// Waits until `n` disconnect events arrived (each within [`WAIT`]).
fn await_disconnects(rx: &mpsc::Receiver<ConnectionId>, n: usize) -> Vec<ConnectionId> {
    (0..n)
        .map(|i| {
            rx.recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("only {i} of {n} disconnects"))
        })
        .collect()
}

fn disconnect_channel(server: &Server) -> mpsc::Receiver<ConnectionId> {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    server.on_client_disconnect(move |c| {
        let _ = tx.lock().unwrap().send(c.id());
        async {}
    });
    rx
}

// ---- connection flood -----------------------------------------------------------------

#[derive(Debug, Default)]
struct Flood {
    served: usize,
    refused_with_reason: usize,
    closed_without_reason: usize,
    max_count_seen: usize,
}

/// `max + extra` clients connect and log in at once (released by one barrier) while a
/// poller samples `connection_count`. Served clients stay connected until all are
/// counted.
fn flood(max: usize, extra: usize, refusals_in_flight: usize) -> Flood {
    let mut desc = test_descriptor(PW)
        .max_connections(max)
        .auth_timeout(Duration::from_secs(10));
    desc.max_refusals_in_flight = refusals_in_flight;
    let server = Server::new(desc).unwrap();
    add_rpc(&server);
    let gone = disconnect_channel(&server);
    let (running, addr) = start(&server);

    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let server = server.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut max_seen = 0;
            while !done.load(Ordering::Acquire) {
                max_seen = max_seen.max(server.connection_count());
                std::thread::sleep(Duration::from_micros(200)); // sampling period
            }
            max_seen
        })
    };
    let total = max + extra;
    let go = Arc::new(Barrier::new(total));
    let release = Arc::new(Barrier::new(total + 1));
    let (tx, rx) = mpsc::channel();
    let clients: Vec<_> = (0..total)
        .map(|i| {
            let (go, release, tx) = (go.clone(), release.clone(), tx.clone());
            std::thread::spawn(move || {
                let codec = CODECS[i % 2];
                go.wait();
                let mut c = TestClient::connect(addr, codec).unwrap();
                let outcome = match c.authenticate(PW) {
                    Ok(f) if f.header.kind == FrameKind::AuthSuccess => {
                        // Served for real: an RPC is answered.
                        assert_eq!(add(&mut c, i as i64, 1), Value::from(i as i64 + 1));
                        "served".to_owned()
                    }
                    Ok(f) => {
                        assert_eq!(f.header.kind, FrameKind::AuthFailure);
                        assert!(c.expect_closed().is_empty());
                        f.reason()
                    }
                    // Closed before a reason could be sent (too many refusals at once).
                    Err(_) => String::new(),
                };
                tx.send(outcome).unwrap();
                release.wait();
                drop(c);
            })
        })
        .collect();
    drop(tx);
    let mut result = Flood::default();
    for outcome in rx.iter().take(total) {
        match outcome.as_str() {
            "served" => result.served += 1,
            "" => result.closed_without_reason += 1,
            why => {
                assert_eq!(why, "server full: max_connections reached");
                result.refused_with_reason += 1;
            }
        }
    }
    assert_eq!(server.connection_count(), result.served);
    release.wait();
    for c in clients {
        c.join().unwrap();
    }
    await_disconnects(&gone, result.served);
    done.store(true, Ordering::Release);
    result.max_count_seen = poller.join().unwrap();
    assert_eq!(server.connection_count(), 0);
    assert_serving(addr);
    running.stop().unwrap();
    result
}

#[matrix]
fn max_connections_plus_200_simultaneous_connects() {
    // Room to refuse every extra connection with its reason.
    let f = flood(50, 200, 256);
    println!("flood 50+200, 256 refusals in flight: {f:?}");
    assert_eq!(f.served, 50, "{f:?}");
    assert_eq!(f.refused_with_reason, 200, "{f:?}");
    assert!(f.max_count_seen <= 50, "{f:?}");
    // The default: at most 64 refusals wait for the peer's first frame; past that,
    // extra connections are closed at once. Still exactly 50 served.
    let f = flood(50, 200, ServerDescriptor::new("x").max_refusals_in_flight);
    println!("flood 50+200, default refusals in flight: {f:?}");
    assert_eq!(f.served, 50, "{f:?}");
    assert_eq!(
        f.refused_with_reason + f.closed_without_reason,
        200,
        "{f:?}"
    );
    assert!(f.max_count_seen <= 50, "{f:?}");
}

// ---- vanishing and resetting peers ------------------------------------------------------

#[matrix]
fn vanished_clients_are_dropped_by_the_heartbeat() {
    let interval = Duration::from_millis(100);
    let timeout = Duration::from_millis(500);
    let server = Server::new(test_descriptor(PW).heartbeat(interval, timeout)).unwrap();
    add_rpc(&server);
    let gone = disconnect_channel(&server);
    let (running, addr) = start(&server);

    // One peer keeps answering pings all along.
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let mut alive = TestClient::login(addr, Codec::Native, PW);
    let alive_id = ConnectionId::from_u64(alive.connection_id.unwrap());
    let answerer = std::thread::spawn(move || {
        while stop_rx.try_recv().is_err() {
            if let Ok(Some(f)) = alive.poll_frame(Duration::from_millis(20)) {
                if f.header.kind == FrameKind::Ping {
                    alive.pong().unwrap();
                }
            }
        }
        alive
    });
    // Twenty peers log in, then vanish: sockets held open (no FIN, no RST), nothing read
    // or written. Broadcasts keep coming for them meanwhile.
    let silent_since = Instant::now();
    let vanished: Vec<TestClient> = (0..20)
        .map(|i| TestClient::login(addr, CODECS[i % 2], PW))
        .collect();
    for c in &vanished {
        socket2::SockRef::from(c.stream())
            .set_recv_buffer_size(4096)
            .unwrap();
    }
    for _ in 0..20 {
        conduit::block_on(server.broadcast("news", Value::from(vec![0u8; 16 * 1024])));
    }
    let dropped = await_disconnects(&gone, 20);
    let took = silent_since.elapsed();
    println!("20 vanished peers (heartbeat {interval:?}/{timeout:?}) all dropped {took:?} after they went silent");
    assert!(!dropped.contains(&alive_id), "the answering peer stays");
    assert!(took >= timeout, "{took:?}");
    assert!(took < timeout + Duration::from_secs(5), "{took:?}");
    assert_eq!(server.connection_count(), 1);
    stop_tx.send(()).unwrap();
    let mut alive = answerer.join().unwrap();
    assert_eq!(add(&mut alive, 1, 2), Value::from(3));
    drop(vanished);
    assert_serving(addr);
    running.stop().unwrap();
}

#[matrix]
fn peers_that_reset_mid_frame_leak_no_slot() {
    let max = 4;
    let server = Server::new(test_descriptor(PW).max_connections(max)).unwrap();
    add_rpc(&server);
    server.on("echo", |_, data: Value| async move { data });
    let gone = disconnect_channel(&server);
    let (running, addr) = start(&server);
    let rounds = 40;
    for i in 0..rounds {
        let codec = CODECS[i % 2];
        let authed = i % 4 >= 2;
        let mut c = if authed {
            TestClient::login(addr, codec, PW)
        } else {
            TestClient::connect(addr, codec).unwrap()
        };
        let frame = if authed {
            message_frame(codec, "echo", &Value::from("z".repeat(500)))
        } else {
            auth_frame(codec, PW, "x", "1")
        };
        c.send_raw(&frame[..frame.len() / 2]).unwrap();
        socket2::SockRef::from(c.stream())
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(c); // RST with half a frame sent
        if authed {
            await_disconnects(&gone, 1);
        }
    }
    assert_eq!(server.connection_count(), 0);
    // Every slot is free again: `max` clients get in (the server frees the slots of the
    // unauthenticated resets as it reads their RSTs, so allow it a moment).
    let deadline = Instant::now() + WAIT;
    let mut clients = Vec::new();
    while clients.len() < max {
        let mut c = TestClient::connect(addr, CODECS[clients.len() % 2]).unwrap();
        let f = c.authenticate(PW).unwrap();
        if f.header.kind == FrameKind::AuthSuccess {
            clients.push(c);
        } else {
            assert!(Instant::now() < deadline, "a slot leaked: {}", f.reason());
        }
    }
    for c in &mut clients {
        assert_eq!(add(c, 2, 2), Value::from(4));
    }
    assert_eq!(server.connection_count(), max);
    running.stop().unwrap();
}

// ---- handler panics and errors -------------------------------------------------------------

/// An RPC future that is ready at once and panics when dropped.
struct PanicsOnDrop;

impl std::future::Future for PanicsOnDrop {
    type Output = Result<Value, RpcError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::task::Poll::Ready(Ok(Value::from("ready")))
    }
}

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("deliberate panic dropping an RPC future");
    }
}

#[matrix]
fn handler_panics_and_errors_under_load_are_isolated() {
    quiet_deliberate_panics();
    let server = Server::new(test_descriptor(PW)).unwrap();
    add_rpc(&server);
    // Panics inside the handler's future …
    server.rpc_with(RpcInfo::new("boom"), |_call| async move {
        if true {
            panic!("deliberate panic in an RPC future");
        }
        Ok::<_, RpcError>(Value::Nil)
    });
    // … and in the handler itself, before it returns a future.
    server.rpc_with(RpcInfo::new("boom_now"), |call| {
        if call.method == "boom_now" {
            panic!("deliberate panic in an RPC handler");
        }
        async move { Ok::<_, RpcError>(Value::Nil) }
    });
    // … after it waited once (its future boxed and watched) …
    server.rpc_with(RpcInfo::new("boom_later"), |_call| async move {
        conduit::rt::sleep(Duration::from_millis(1)).await;
        if true {
            panic!("deliberate panic in an RPC future that waited");
        }
        Ok::<_, RpcError>(Value::Nil)
    });
    // … and while its finished future is dropped.
    server.rpc(RpcMethod::new(RpcInfo::new("boom_on_drop"), |_call| {
        PanicsOnDrop
    }));
    server.rpc_with(RpcInfo::new("fail"), |_call| async move {
        Err::<Value, _>(RpcError::new(1234, "deliberate failure"))
    });
    server.on("panic_later", |_, _: Value| async move {
        if true {
            panic!("deliberate panic in a message future");
        }
    });
    server.on("panic_now", |_, _: Value| -> std::future::Ready<()> {
        panic!("deliberate panic in a message handler");
    });
    server.on_client_connect(|c| {
        if c.id().as_u64() % 3 == 0 {
            panic!("deliberate panic in a connect hook");
        }
        async {}
    });
    server.on_client_disconnect(|c| {
        if c.id().as_u64() % 3 == 1 {
            panic!("deliberate panic in a disconnect hook");
        }
        async {}
    });
    let (running, addr) = start(&server);

    let clients = 16;
    let rounds = 40;
    let answered = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..clients)
        .map(|i| {
            let answered = answered.clone();
            std::thread::spawn(move || {
                let mut c = TestClient::login(addr, CODECS[i % 2], PW);
                for r in 0..rounds {
                    let n = (i * rounds + r) as i64;
                    match r % 4 {
                        0 => assert_eq!(add(&mut c, n, 1), Value::from(n + 1)),
                        1 | 2 => {
                            let method =
                                ["boom", "boom_now", "boom_later", "boom_on_drop"][(r / 4 + i) % 4];
                            let e = c.rpc(method, &Value::map()).unwrap();
                            assert_eq!(e.get("success"), Some(&Value::from(false)), "{e}");
                            assert_eq!(e.get("code"), Some(&Value::from(1001)), "{e}");
                            let text = e.get("error").and_then(Value::as_str).unwrap();
                            assert!(text.contains("panicked"), "{text}");
                        }
                        _ => {
                            let e = c.rpc("fail", &Value::map()).unwrap();
                            assert_eq!(e.get("success"), Some(&Value::from(false)), "{e}");
                            assert_eq!(e.get("code"), Some(&Value::from(1234)), "{e}");
                        }
                    }
                    let kind = if r % 2 == 0 {
                        "panic_now"
                    } else {
                        "panic_later"
                    };
                    c.send_message(kind, &Value::map()).unwrap();
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                // Still the same, working connection.
                assert_eq!(add(&mut c, 1, 1), Value::from(2));
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(answered.load(Ordering::Relaxed), clients * rounds);
    assert_serving(addr);
    running.stop().unwrap();
    assert_eq!(server.connection_count(), 0);
}

// ---- stop under load -------------------------------------------------------------------------

#[matrix]
fn stop_during_a_broadcast_storm_with_rpcs_in_flight() {
    let drain = Duration::from_secs(1);
    let max = 40;
    let server = Server::new(
        test_descriptor(PW)
            .drain_timeout(drain)
            .max_connections(max),
    )
    .unwrap();
    add_rpc(&server);
    let (entered_tx, entered_rx) = mpsc::channel::<&'static str>();
    let entered = Arc::new(Mutex::new(entered_tx));
    let e = entered.clone();
    server.rpc_with(RpcInfo::new("slow"), move |_call| {
        let _ = e.lock().unwrap().send("slow");
        async move {
            conduit::rt::sleep(Duration::from_millis(300)).await;
            Ok::<_, RpcError>(Value::from("slow done"))
        }
    });
    let e = entered.clone();
    server.rpc_with(RpcInfo::new("forever"), move |_call| {
        let _ = e.lock().unwrap().send("forever");
        async move {
            conduit::rt::sleep(Duration::from_secs(3600)).await;
            Ok::<_, RpcError>(Value::Nil)
        }
    });
    // A storm from inside the server: a background task on the caller's shard
    // broadcasting as fast as it can, to everyone but the caller.
    server.rpc_with(RpcInfo::new("storm"), |call| async move {
        let me = call.connection.id();
        let server = call.server().clone();
        conduit::rt::spawn(async move {
            let mut seq = 0u64;
            loop {
                seq += 1;
                server
                    .broadcast(
                        "storm",
                        Value::map().with("seq", seq).with("pad", "p".repeat(100)),
                    )
                    .exclude([me])
                    .await;
            }
        });
        Ok::<_, RpcError>(true)
    });
    let (running, addr) = start(&server);

    // Receivers read everything until the server closes them.
    let (warm_tx, warm_rx) = mpsc::channel::<()>();
    let receivers: Vec<_> = (0..8)
        .map(|i| {
            let mut c = TestClient::login(addr, CODECS[i % 2], PW);
            let warm_tx = warm_tx.clone();
            std::thread::spawn(move || {
                let mut storm = 0u64;
                loop {
                    match c.next_frame() {
                        Ok(f) if f.header.kind == FrameKind::Ping => {
                            let _ = c.pong();
                        }
                        Ok(_) => {
                            storm += 1;
                            if storm == 2000 {
                                let _ = warm_tx.send(());
                            }
                        }
                        Err(_) => return storm,
                    }
                }
            })
        })
        .collect();
    drop(warm_tx);
    // One storm on each shard (a native login tells which shard it landed on).
    let mut triggers: Vec<TestClient> = Vec::new();
    for _ in 0..100 {
        let mut c = TestClient::login(addr, Codec::Native, PW);
        let shard = ConnectionId::from_u64(c.connection_id.unwrap()).shard();
        if triggers
            .iter()
            .any(|t| ConnectionId::from_u64(t.connection_id.unwrap()).shard() == shard)
        {
            continue;
        }
        assert_eq!(
            c.rpc("storm", &Value::map()).unwrap().get("data"),
            Some(&Value::from(true))
        );
        triggers.push(c);
        if triggers.len() == 2 {
            break;
        }
    }
    assert_eq!(triggers.len(), 2, "a storm on each shard");
    // And a storm from a plain thread, through the bus, until the server stops.
    let outside = {
        let server = server.clone();
        let (done_tx, done_rx) = mpsc::channel::<u64>();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while server.is_running() {
                conduit::block_on(server.broadcast("outside", Value::from(n)));
                n += 1;
            }
            let _ = done_tx.send(n);
        });
        done_rx
    };
    let storm_started = Instant::now();
    for _ in 0..8 {
        warm_rx
            .recv_timeout(WAIT)
            .expect("storm reaches every receiver");
    }
    let warm = storm_started.elapsed();
    // Two RPCs in flight: one finishes within the drain, one never does. Each caller
    // reads in its own thread (the storm reaches them too).
    let call = |method: &'static str| {
        let mut c = TestClient::login(addr, Codec::V1, PW);
        c.send_raw(&v1::Encoder::new(0).rpc_request(77, method, &Value::map()))
            .unwrap();
        std::thread::spawn(move || {
            let mut answer = None;
            loop {
                match c.next_frame() {
                    Ok(f) if f.header.kind == FrameKind::RpcResponse => answer = Some(f.v1()),
                    Ok(f) if f.header.kind == FrameKind::Ping => {
                        let _ = c.pong();
                    }
                    Ok(_) => {}
                    Err(_) => return answer,
                }
            }
        })
    };
    let slow = call("slow");
    let forever = call("forever");
    let mut seen = vec![
        entered_rx.recv_timeout(WAIT).unwrap(),
        entered_rx.recv_timeout(WAIT).unwrap(),
    ];
    seen.sort_unstable();
    assert_eq!(seen, ["forever", "slow"]);

    let t0 = Instant::now();
    running.stop().unwrap();
    let took = t0.elapsed();
    // The drain waits drain_timeout (+1 s for hooks) at most.
    assert!(took < drain + Duration::from_secs(4), "stop took {took:?}");
    assert!(!server.is_running());
    let outside_sent = outside
        .recv_timeout(WAIT)
        .expect("a thread broadcasting during stop returns");
    // The slow call was answered before its connection closed; the endless one was
    // cut off; every socket was closed.
    match slow.join().unwrap() {
        Some(V1Payload::RpcResponse { result, .. }) => {
            assert_eq!(result.get("data"), Some(&Value::from("slow done")));
        }
        other => panic!("slow call not answered: {other:?}"),
    }
    assert!(forever.join().unwrap().is_none());
    let storms: Vec<u64> = receivers.into_iter().map(|r| r.join().unwrap()).collect();
    for t in &mut triggers {
        t.expect_closed();
    }
    assert_eq!(server.connection_count(), 0);
    // The connection abandoned with its endless handler gave its slot back: after a
    // restart, all `max` slots are there.
    let (running, addr) = start(&server);
    let mut full: Vec<TestClient> = (0..max)
        .map(|i| TestClient::login(addr, CODECS[i % 2], PW))
        .collect();
    assert_eq!(add(&mut full[0], 1, 1), Value::from(2));
    assert_eq!(server.connection_count(), max);
    drop(full);
    running.stop().unwrap();
    println!(
        "stop under a storm took {took:?}; 2000 storm frames reached every receiver in {warm:?}; receivers saw {storms:?} frames; the outside thread sent {outside_sent} broadcasts"
    );
    assert_eq!(server.connection_count(), 0);
}

#[matrix]
fn a_broadcast_loop_in_a_handler_does_not_starve_its_shard() {
    // On one shard nothing else ever makes such a loop wait: the engine's own sends
    // must give the shard's readers, writers and heartbeat their turn.
    let desc = test_descriptor(PW)
        .shards(1)
        .drain_timeout(Duration::from_millis(500));
    let server = Server::new(desc).unwrap();
    add_rpc(&server);
    server.rpc_with(RpcInfo::new("spin"), |call| async move {
        let me = call.connection.id();
        let server = call.server().clone();
        conduit::rt::spawn(async move {
            loop {
                server.broadcast("spin", Value::Nil).exclude([me]).await;
                let _ = server.send_to_id(me, "self", Value::Nil).await;
            }
        });
        Ok::<_, RpcError>(true)
    });
    let (running, addr) = start(&server);
    let mut spinner = TestClient::login(addr, Codec::Native, PW);
    assert_eq!(
        spinner.rpc("spin", &Value::map()).unwrap().get("data"),
        Some(&Value::from(true))
    );
    // Logins, RPCs and pings on the same shard are still served.
    for codec in CODECS {
        let mut c = TestClient::login(addr, codec, PW);
        assert_eq!(add(&mut c, 1, 2), Value::from(3));
        c.ping().unwrap();
        while c.next_frame().unwrap().header.kind != FrameKind::Pong {}
    }
    let t0 = Instant::now();
    running.stop().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    drop(spinner);
}
