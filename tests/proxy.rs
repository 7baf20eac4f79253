//! Trusted proxies: with `trusted_proxies = [127.0.0.1/32]`, connections from
//! 127.0.0.1 start with a PROXY protocol header (v1 text or v2 binary) and the client
//! address it carries is the connection's address — for handlers, the per-source login
//! budget and the failed-login table. A missing, malformed, oversized or late header
//! closes only its own connection; a header from an address that is not trusted
//! (127.0.0.2) is bad input, and the address it claims is never used.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conduit::{RpcCall, RpcError, RpcInfo, Server, ServerDescriptor, Value};
use conduit_protocol::handshake::ClientHandshake;
use conduit_protocol::{Codec, FrameKind};
use conduit_tests::{connect_from, matrix, start, test_descriptor, OwnedFrame, TestClient};

const PW: &str = "secret";

/// The proxy's address: the only trusted one.
const PROXY: &str = "127.0.0.1";

/// How long a test waits for something that must happen.
const DEADLINE: Duration = Duration::from_secs(10);

/// A descriptor trusting 127.0.0.1 as a proxy.
fn proxied() -> ServerDescriptor {
    test_descriptor(PW).trusted_proxies(["127.0.0.1/32".parse().unwrap()])
}

/// A server answering `whoami` with the caller's `Connection::peer_addr()`.
fn server(desc: ServerDescriptor) -> Server {
    let server = Server::new(desc).unwrap();
    server.rpc_with(RpcInfo::new("whoami"), |call: RpcCall| async move {
        Ok::<_, RpcError>(Value::from(call.connection.peer_addr().to_string()))
    });
    server
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A v1 header for a TCP connection from `src`.
fn v1(src: SocketAddr) -> Vec<u8> {
    match src {
        SocketAddr::V4(a) => format!("PROXY TCP4 {} 127.0.0.1 {} 8080\r\n", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("PROXY TCP6 {} ::1 {} 8080\r\n", a.ip(), a.port()),
    }
    .into_bytes()
}

/// The v2 signature, version 2 with `command` (0 LOCAL, 1 PROXY), and the family and
/// protocol byte.
fn v2_start(command: u8, family_protocol: u8) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | command);
    h.push(family_protocol);
    h
}

/// A v2 header for a TCP connection from `src`.
fn v2(src: SocketAddr) -> Vec<u8> {
    let (mut h, addresses) = match src {
        SocketAddr::V4(a) => {
            let mut b = a.ip().octets().to_vec();
            b.extend_from_slice(&[127, 0, 0, 1]);
            (v2_start(1, 0x11), b)
        }
        SocketAddr::V6(a) => {
            let mut b = a.ip().octets().to_vec();
            b.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
            (v2_start(1, 0x21), b)
        }
    };
    let len = u16::try_from(addresses.len() + 4).unwrap();
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&addresses);
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&8080u16.to_be_bytes());
    h
}

/// A v2 LOCAL header (a proxy's health check), no addresses.
fn v2_local() -> Vec<u8> {
    let mut h = v2_start(0, 0x00);
    h.extend_from_slice(&[0, 0]);
    h
}

/// A client connected from `from`.
fn client_from(from: &str, addr: SocketAddr, codec: Codec) -> TestClient {
    TestClient::from_stream(connect_from(from, addr), codec).unwrap()
}

/// Logs in through the proxy with `header` in the same write as the first login
/// frame; the server's final auth frame.
fn login_via(addr: SocketAddr, header: &[u8], codec: Codec) -> (TestClient, OwnedFrame) {
    let mut c = client_from(PROXY, addr, codec);
    let f = c.authenticate_after(header, PW).unwrap();
    (c, f)
}

/// The address `whoami` reports.
fn whoami(c: &mut TestClient) -> String {
    let reply = c.rpc("whoami", &Value::map()).unwrap();
    assert_eq!(reply.get("success"), Some(&Value::Bool(true)), "{reply}");
    reply.get("data").unwrap().as_str().unwrap().to_owned()
}

/// The first native login frame (a hello).
fn hello() -> Vec<u8> {
    ClientHandshake::new(Codec::Native, PW, [7u8; 32], "test", "1.0")
        .start(0)
        .unwrap()
        .to_vec()
}

/// Opens a connection through the proxy for the source in `header` that stays half
/// logged in: its hello is answered with the server's challenge, so it is admitted and
/// holds its source's login budget until dropped.
fn logging_in_via(addr: SocketAddr, header: &[u8]) -> TestClient {
    let mut c = client_from(PROXY, addr, Codec::Native);
    let mut write = header.to_vec();
    write.extend_from_slice(&hello());
    c.send_raw(&write).unwrap();
    let f = c.next_frame().unwrap();
    assert_eq!(f.header.kind, FrameKind::AuthRequest, "a challenge: {f:?}");
    c
}

/// The address (v1 and v2, IPv4 and IPv6) in the header is the connection's address
/// for handlers; a header without one (v1 UNKNOWN, v2 LOCAL) leaves the proxy's. The
/// first login frame rides in the same write as the header, in either codec; a header
/// split over several writes works as well.
#[matrix]
fn handlers_see_the_address_in_the_header() {
    let server = server(proxied());
    let (running, addr) = start(&server);
    let cases = [
        (v1(sock("203.0.113.5:40001")), "203.0.113.5:40001"),
        (v1(sock("[2001:db8::7]:40002")), "[2001:db8::7]:40002"),
        (v2(sock("198.51.100.9:40003")), "198.51.100.9:40003"),
        (v2(sock("[2001:db8:1::9]:40004")), "[2001:db8:1::9]:40004"),
    ];
    for codec in [Codec::V1, Codec::Native] {
        for (header, expected) in &cases {
            let (mut c, f) = login_via(addr, header, codec);
            assert_eq!(
                f.header.kind,
                FrameKind::AuthSuccess,
                "{expected} {codec:?}"
            );
            assert_eq!(whoami(&mut c), *expected, "{codec:?}");
        }
    }
    // No address in the header: the proxy's own, port and all.
    for header in [b"PROXY UNKNOWN\r\n".to_vec(), v2_local()] {
        let (mut c, f) = login_via(addr, &header, Codec::Native);
        assert_eq!(f.header.kind, FrameKind::AuthSuccess);
        let own = c.stream().local_addr().unwrap().to_string();
        assert_eq!(whoami(&mut c), own);
    }
    // The header alone, then the header in pieces, each in its own write.
    for src in [sock("192.0.2.1:1"), sock("192.0.2.2:2")] {
        for header in [v1(src), v2(src)] {
            let mut c = client_from(PROXY, addr, Codec::V1);
            c.send_raw(&header).unwrap();
            assert_eq!(
                c.authenticate(PW).unwrap().header.kind,
                FrameKind::AuthSuccess
            );
            assert_eq!(whoami(&mut c), src.to_string());
            let mut pieces = client_from(PROXY, addr, Codec::V1);
            for piece in header.chunks(5) {
                pieces.send_raw(piece).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            assert_eq!(
                pieces.authenticate(PW).unwrap().header.kind,
                FrameKind::AuthSuccess
            );
            assert_eq!(whoami(&mut pieces), src.to_string());
        }
    }
    running.stop().unwrap();
}

/// `max_pending_per_source` counts the header's address, not the proxy's: three
/// sources behind the one proxy each log in within their own budget (five connections
/// logging in from the proxy at once, with a budget of two), and the source over its
/// budget is refused, saying why, while the others log in.
#[matrix]
fn login_budgets_apply_to_the_address_in_the_header() {
    let mut desc = proxied();
    desc.max_pending = 64;
    desc.max_pending_per_source = 2;
    let server = server(desc);
    let (running, addr) = start(&server);
    let (a, b, c) = (
        sock("10.0.0.1:1000"),
        sock("10.0.0.2:1000"),
        sock("[2001:db8:2::1]:1000"),
    );
    let mut held: Vec<TestClient> = Vec::new();
    for src in [a, a, b, b, c] {
        held.push(logging_in_via(addr, &v1(src)));
    }
    // a's third, in either header version: refused, told why in its codec.
    for header in [v1(a), v2(a)] {
        let (_, refused) = login_via(addr, &header, Codec::Native);
        assert_eq!(refused.header.kind, FrameKind::AuthFailure);
        assert_eq!(
            refused.reason(),
            "server busy: too many connections logging in from your address"
        );
    }
    // c has room; another address of c's /64 shares c's budget.
    let (mut c2, f) = login_via(addr, &v2(c), Codec::V1);
    assert_eq!(f.header.kind, FrameKind::AuthSuccess);
    assert_eq!(whoami(&mut c2), "[2001:db8:2::1]:1000");
    held.push(logging_in_via(addr, &v1(sock("[2001:db8:2::ffff]:9"))));
    let (_, refused) = login_via(addr, &v1(c), Codec::V1);
    assert_eq!(refused.header.kind, FrameKind::AuthFailure);
    // One of b's connections goes: b logs in again (once the server saw it go).
    held.remove(2);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, f) = login_via(addr, &v1(b), Codec::Native);
        if f.header.kind == FrameKind::AuthSuccess {
            break;
        }
        assert!(Instant::now() < deadline, "b's place never came free");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(held);
    running.stop().unwrap();
}

/// Failed logins are counted against the header's address: after its free failures
/// that address is kept out, saying why, while another address behind the same proxy
/// logs in.
#[matrix]
fn failed_logins_count_against_the_address_in_the_header() {
    let mut desc = proxied();
    desc.max_auth_failures_per_source = 1;
    desc.auth_backoff_base = Duration::from_secs(60);
    desc.auth_backoff_max = Duration::from_secs(60);
    let server = server(desc);
    let (running, addr) = start(&server);
    let guesser = v1(sock("10.1.1.1:5"));
    for _ in 0..2 {
        let mut c = client_from(PROXY, addr, Codec::V1);
        let f = c.authenticate_after(&guesser, "wrong").unwrap();
        assert_eq!(f.reason(), "Invalid password");
    }
    let (_, refused) = login_via(addr, &guesser, Codec::V1);
    assert_eq!(refused.header.kind, FrameKind::AuthFailure);
    assert_eq!(
        refused.reason(),
        "too many failed logins from your address; retry later"
    );
    let (mut other, f) = login_via(addr, &v2(sock("10.1.1.2:5")), Codec::Native);
    assert_eq!(f.header.kind, FrameKind::AuthSuccess);
    assert_eq!(whoami(&mut other), "10.1.1.2:5");
    running.stop().unwrap();
}

/// Writes `bytes` one at a time, `gap` apart, until they are all sent or the server
/// closed the connection.
fn trickle(c: &mut TestClient, bytes: &[u8], gap: Duration) {
    for b in bytes {
        if c.send_raw(std::slice::from_ref(b)).is_err() {
            return;
        }
        std::thread::sleep(gap);
    }
}

/// From the proxy: no header, a malformed one, an oversized one (v1 and v2), silence
/// and a header trickled in past `proxy_header_timeout` — each closes its own
/// connection without a word, while a connection logged in meanwhile goes on and new
/// ones log in.
#[matrix]
fn bad_missing_and_late_headers_close_only_their_connection() {
    let timeout = Duration::from_millis(500);
    let server = server(proxied().proxy_header_timeout(timeout));
    let (running, addr) = start(&server);
    let (mut good, f) = login_via(addr, &v1(sock("192.0.2.10:10")), Codec::Native);
    assert_eq!(f.header.kind, FrameKind::AuthSuccess);

    let mut oversized_v2 = v2_start(1, 0x11);
    oversized_v2.extend_from_slice(&4000u16.to_be_bytes());
    oversized_v2.extend_from_slice(&[0; 64]);
    let mut bad: Vec<(&str, Vec<u8>)> = vec![
        // A client that does not know it is behind a proxy: its login frame first.
        ("no header", hello()),
        (
            "malformed",
            b"PROXY TCP4 not-an-address 127.0.0.1 1 2\r\n".to_vec(),
        ),
        ("not PROXY", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        (
            "oversized v1",
            format!("PROXY TCP4 {}", " ".repeat(150)).into_bytes(),
        ),
        ("oversized v2", oversized_v2),
    ];
    for (what, bytes) in bad.drain(..) {
        let mut c = client_from(PROXY, addr, Codec::Native);
        c.send_raw(&bytes).unwrap();
        let started = Instant::now();
        let seen = c.expect_closed();
        assert!(seen.is_empty(), "{what}: {seen:?}");
        assert!(
            started.elapsed() < timeout,
            "{what}: closed at once, not at the timeout"
        );
    }
    // Silence, and a valid header too slow to finish in time: closed at the timeout.
    let mut silent = client_from(PROXY, addr, Codec::Native);
    let started = Instant::now();
    assert!(silent.expect_closed().is_empty());
    assert!(started.elapsed() >= timeout - Duration::from_millis(50));
    // A byte every tenth of the timeout: the header would be whole only after four
    // timeouts; the server closes at the first, and the trickle stops at the close.
    let mut slow = client_from(PROXY, addr, Codec::Native);
    let started = Instant::now();
    trickle(&mut slow, &v1(sock("192.0.2.11:11")), timeout / 10);
    assert!(slow.expect_closed().is_empty());
    assert!(started.elapsed() >= timeout);

    // Untouched: the logged-in connection answers, and logins go on.
    good.ping().unwrap();
    assert_eq!(good.next_frame().unwrap().header.kind, FrameKind::Pong);
    assert_eq!(whoami(&mut good), "192.0.2.10:10");
    let (mut again, f) = login_via(addr, &v2(sock("192.0.2.12:12")), Codec::V1);
    assert_eq!(f.header.kind, FrameKind::AuthSuccess);
    assert_eq!(whoami(&mut again), "192.0.2.12:12");
    running.stop().unwrap();
}

/// At most `max_pending` headers are read at once: one more connection from the proxy
/// is closed at once, while those already sending theirs log in.
#[matrix]
fn headers_read_at_once_are_bounded() {
    let mut desc = proxied().shards(1);
    desc.max_pending = 2;
    desc.max_pending_per_source = 2;
    let server = server(desc);
    let (running, addr) = start(&server);
    // One shard accepts in the kernel's order: the third is the one over the bound.
    let mut waiting: Vec<TestClient> = (0..2)
        .map(|_| client_from(PROXY, addr, Codec::V1))
        .collect();
    let mut over = client_from(PROXY, addr, Codec::V1);
    assert!(over.expect_closed().is_empty());
    for (i, c) in waiting.iter_mut().enumerate() {
        let src = sock(&format!("192.0.2.{}:7", 20 + i));
        assert_eq!(
            c.authenticate_after(&v1(src), PW).unwrap().header.kind,
            FrameKind::AuthSuccess
        );
        assert_eq!(whoami(c), src.to_string());
    }
    running.stop().unwrap();
}

/// A connection from 127.0.0.2 (not a trusted proxy) is served as any other: a PROXY
/// header from it is bad input — closed without its login being answered, in either
/// version, whatever budget the address it claims has — and plain logins from it carry
/// its own address.
#[matrix]
fn a_header_from_an_untrusted_address_is_bad_input() {
    let mut desc = proxied();
    desc.max_pending_per_source = 1;
    let server = server(desc);
    let (running, addr) = start(&server);
    let claimed = sock("10.9.9.9:9");
    for header in [v1(claimed), v2(claimed)] {
        for codec in [Codec::V1, Codec::Native] {
            let mut c = client_from("127.0.0.2", addr, codec);
            assert!(
                c.authenticate_after(&header, PW).is_err(),
                "{codec:?}: closed, not answered"
            );
        }
    }
    // Its own budget (one connection logging in) full — once the server has seen the
    // connections above go — a header claiming another address does not get it in.
    let deadline = Instant::now() + DEADLINE;
    let own = loop {
        let mut c = client_from("127.0.0.2", addr, Codec::Native);
        c.send_raw(&hello()).unwrap();
        if c.next_frame().unwrap().header.kind == FrameKind::AuthRequest {
            break c;
        }
        assert!(Instant::now() < deadline, "127.0.0.2 never got a place");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut c = client_from("127.0.0.2", addr, Codec::Native);
    let mut write = v1(claimed);
    write.extend_from_slice(&hello());
    c.send_raw(&write).unwrap();
    let seen = c.expect_closed();
    assert!(
        seen.iter().all(|f| f.header.kind != FrameKind::AuthRequest),
        "{seen:?}"
    );
    drop(own);
    // A plain login from it works, under its own address.
    let deadline = Instant::now() + DEADLINE;
    let mut plain = loop {
        let mut c = client_from("127.0.0.2", addr, Codec::V1);
        if c.authenticate(PW).unwrap().header.kind == FrameKind::AuthSuccess {
            break c;
        }
        assert!(Instant::now() < deadline, "127.0.0.2 never logged in");
        std::thread::sleep(Duration::from_millis(10));
    };
    let seen_as = whoami(&mut plain);
    assert!(seen_as.starts_with("127.0.0.2:"), "{seen_as}");
    running.stop().unwrap();
}
