//! A client connect from a chosen loopback source address, on each backend this
//! machine runs: the server side must see the connection come from that address.

#![expect(
    clippy::expect_used,
    reason = "a test that cannot set up its sockets should fail on the spot"
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use conduit::__rt::{choose, Backend, RtThread, SharedStream, ThreadSpec};
use conduit::Runtime;

/// Time one connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The backends this machine can run (glommio needs io_uring).
fn backends() -> Vec<Backend> {
    [Runtime::Glommio, Runtime::Tokio]
        .into_iter()
        .filter_map(|r| choose(r, 1).ok().map(|(b, _)| b))
        .collect()
}

/// Connects from `source` to `to` on `backend`; the stream's local address.
fn connect_on(backend: Backend, source: IpAddr, to: SocketAddr) -> std::io::Result<SocketAddr> {
    let spec = ThreadSpec {
        name: "bind-test".into(),
        cpu: None,
        preempt_timer: Duration::from_millis(10),
        io_memory: 64 * 1024,
        ring_depth: 64,
    };
    RtThread::start(backend, spec, move || async move {
        let s = SharedStream::connect_from(source, to, CONNECT_TIMEOUT).await?;
        s.local_addr()
    })
    .expect("start the thread")
    .join()
    .expect("the thread finished")
}

#[test]
fn the_server_sees_the_bound_source_address() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = listener.local_addr().unwrap();
    let backends = backends();
    assert!(!backends.is_empty());
    for backend in backends {
        for last in [2u8, 3] {
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
            let local = connect_on(backend, source, to).unwrap();
            let (accepted, peer) = listener.accept().unwrap();
            assert_eq!(peer.ip(), source, "{backend:?}");
            assert_eq!(local, peer, "{backend:?}");
            assert!(accepted.peer_addr().unwrap().ip() == source);
        }
    }
}

#[test]
fn a_refused_connect_from_a_source_is_an_error() {
    // A port nothing listens on: bind one, note it, close it.
    let to = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for backend in backends() {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        assert!(connect_on(backend, source, to).is_err(), "{backend:?}");
        // Mixed families are refused before any socket is made.
        let v6 = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
        let e = connect_on(backend, v6, to).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    }
}
