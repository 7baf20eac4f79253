//! The WebSocket transport over real sockets, on both backends: logins (password and
//! token), RPC and messages in both codecs, one frame per binary message; broadcasts
//! reach TCP and WebSocket connections alike; WebSocket pings are answered; and the
//! hostile cases — bad upgrade requests, a foreign origin, a silent socket, text,
//! fragmented, oversized and split messages — each close only their connection, with
//! the right status or close code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use conduit::ws::WebSocketSettings;
use conduit::{Codec, RpcError, RpcInfo, Server, Value};
use conduit_protocol::handshake::{ClientHandshake, ClientStep};
use conduit_protocol::v1::V1Limits;
use conduit_protocol::{DecoderLimits, Frame, FrameDecoder, FrameKind};
use conduit_tests::forge::{message_frame, rpc_frame};
use conduit_tests::{
    aligned_copy, matrix, start, test_descriptor, OwnedFrame, Retrying, TestClient,
};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::{Frame as WsFrame, FrameHeader};
use tungstenite::{Message, WebSocket};

const PW: &str = "pw";
const ORIGIN: &str = "https://game.example";

/// A server with a WebSocket listener (origin allow-list, short upgrade timeout),
/// `echo` RPC and a `shout` message whose handler broadcasts `heard` to everyone.
fn server() -> (conduit::Running, SocketAddr, SocketAddr) {
    let desc = test_descriptor(PW).max_frame_bytes(64 * 1024).websocket(
        WebSocketSettings::new(0)
            .allowed_origins([ORIGIN])
            .upgrade_timeout(Duration::from_millis(500)),
    );
    let server = Server::new(desc).expect("server");
    server.rpc_with(RpcInfo::new("echo"), |call| async move {
        Ok::<_, RpcError>(call.params.clone())
    });
    server.on("shout", |conn, data| async move {
        conn.server().broadcast("heard", data).await;
    });
    let (running, tcp) = start(&server);
    let ws = server
        .router()
        .websocket_addr()
        .expect("websocket listener");
    (running, tcp, ws)
}

/// A WebSocket client speaking protocol frames, one per binary message.
struct WsClient {
    ws: WebSocket<Retrying>,
    codec: Codec,
}

impl WsClient {
    fn connect(addr: SocketAddr, codec: Codec) -> WsClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let request = tungstenite::http::Request::builder()
            .uri(format!("ws://{addr}/conduit"))
            .header("Host", addr.to_string())
            .header("Origin", ORIGIN)
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header(
                "Sec-WebSocket-Key",
                tungstenite::handshake::client::generate_key(),
            )
            .body(())
            .unwrap();
        let (ws, _) = tungstenite::client(request, Retrying(stream)).expect("upgrade");
        WsClient { ws, codec }
    }

    fn login(addr: SocketAddr, codec: Codec) -> WsClient {
        let mut c = WsClient::connect(addr, codec);
        let mut hs = ClientHandshake::new(codec, PW, [3; 32], "ws-test", "1");
        c.send(&hs.start(0).unwrap());
        loop {
            let f = c.next_frame();
            let aligned = aligned_copy(&f.payload);
            let frame = Frame {
                header: f.header,
                payload: &aligned,
            };
            match hs.on_frame(&frame, &V1Limits::default(), 0).expect("login") {
                ClientStep::Send(b) => c.send(&b),
                ClientStep::Done(_) => return c,
            }
        }
    }

    fn send(&mut self, frame: &[u8]) {
        self.ws.send(Message::binary(frame.to_vec())).expect("send");
    }

    /// The next protocol frame: the whole of one binary message (pings answered).
    fn next_frame(&mut self) -> OwnedFrame {
        loop {
            match self.ws.read().expect("read") {
                Message::Binary(b) => {
                    let mut d = FrameDecoder::new(DecoderLimits::default());
                    d.feed(&b);
                    let f = d.next_frame().expect("a frame").expect("a whole frame");
                    let owned = OwnedFrame {
                        header: f.header,
                        payload: f.payload.to_vec(),
                    };
                    assert!(d.next_frame().unwrap().is_none(), "one frame per message");
                    if owned.header.kind == FrameKind::Ping {
                        let pong = conduit_tests::forge::empty_frame(self.codec, FrameKind::Pong);
                        self.send(&pong);
                        continue;
                    }
                    return owned;
                }
                Message::Pong(_) | Message::Ping(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The next MESSAGE's `(type, data)`.
    fn next_message(&mut self) -> (String, Value) {
        loop {
            let f = self.next_frame();
            if f.header.kind == FrameKind::Message {
                return f.message_with(Default::default());
            }
        }
    }
}

#[matrix]
fn rpc_and_messages_work_over_websocket_in_both_codecs() {
    let (running, _tcp, ws) = server();
    for codec in [Codec::V1, Codec::Native] {
        let mut c = WsClient::login(ws, codec);
        c.send(&rpc_frame(codec, 9, "echo", &Value::map().with("x", 1)));
        let reply = c.next_frame();
        assert_eq!(reply.header.kind, FrameKind::RpcResponse, "{codec:?}");
        assert_eq!(reply.header.correlation_id, 9);
        // A WebSocket ping is answered with a pong carrying its payload.
        c.ws.send(Message::Ping(b"hi".to_vec().into())).unwrap();
        loop {
            match c.ws.read().unwrap() {
                Message::Pong(p) => {
                    assert_eq!(&p[..], b"hi");
                    break;
                }
                Message::Binary(_) => {}
                other => panic!("{other:?}"),
            }
        }
    }
    running.stop().expect("stop");
}

#[matrix]
fn broadcasts_reach_tcp_and_websocket_connections_alike() {
    let (running, tcp, ws) = server();
    let mut tcp_v1 = TestClient::login(tcp, Codec::V1, PW);
    let mut tcp_native = TestClient::login(tcp, Codec::Native, PW);
    let mut ws_v1 = WsClient::login(ws, Codec::V1);
    let mut ws_native = WsClient::login(ws, Codec::Native);
    // From a WebSocket sender, then from a TCP one.
    let data = Value::map().with("text", "from ws");
    ws_v1.send(&message_frame(Codec::V1, "shout", &data));
    let want = ("heard".to_owned(), data.clone());
    assert_eq!(tcp_v1.next_message().unwrap(), want);
    assert_eq!(tcp_native.next_message().unwrap(), want);
    assert_eq!(ws_v1.next_message(), want);
    assert_eq!(ws_native.next_message(), want);
    let data = Value::map().with("text", "from tcp");
    tcp_native.send_message("shout", &data).expect("send shout");
    let want = ("heard".to_owned(), data);
    assert_eq!(ws_v1.next_message(), want);
    assert_eq!(ws_native.next_message(), want);
    assert_eq!(tcp_v1.next_message().unwrap(), want);
    running.stop().expect("stop");
}

/// Sends `request` as the upgrade and returns the HTTP status line the server
/// answered with.
fn raw_upgrade(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or("").to_owned()
}

fn request(path: &str, origin: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Origin: {origin}\r\n\r\n"
    )
}

/// A masked client WebSocket frame.
fn ws_frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = WsFrame::message(payload.to_vec(), opcode, fin);
    f.header_mut().mask = Some([9, 8, 7, 6]);
    let mut out = Vec::new();
    f.format(&mut out).unwrap();
    out
}

/// Upgrades a raw socket (and logs in over it with a v1 frame), then sends `bytes`;
/// returns the close code the server sent, or `None` if it just closed.
fn close_code_after(addr: SocketAddr, bytes: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request("/conduit", ORIGIN).as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(bytes).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    // Find the close frame among what came back (server frames are unmasked).
    let mut at = 0;
    while at + 2 <= rest.len() {
        let mut cursor = std::io::Cursor::new(&rest[at..]);
        let (h, len) = FrameHeader::parse(&mut cursor).ok()??;
        let start = at + cursor.position() as usize;
        if h.opcode == OpCode::Control(Control::Close) {
            let p = &rest[start..start + len as usize];
            return (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
        }
        at = start + len as usize;
    }
    None
}

#[matrix]
fn hostile_websocket_input_closes_only_its_connection() {
    let (running, _tcp, ws) = server();
    let mut good = WsClient::login(ws, Codec::Native);
    // Bad upgrades: status codes.
    assert!(raw_upgrade(ws, &request("/other", ORIGIN)).starts_with("HTTP/1.1 404"));
    assert!(
        raw_upgrade(ws, &request("/conduit", "https://evil.example")).starts_with("HTTP/1.1 403")
    );
    assert!(
        raw_upgrade(ws, "POST /conduit HTTP/1.1\r\nHost: h\r\n\r\n").starts_with("HTTP/1.1 400")
    );
    assert!(raw_upgrade(ws, "\x16\x03\x01\x00\x05hello\r\n\r\n").starts_with("HTTP/1.1 400"));
    let endless = format!("GET /conduit HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
    assert!(raw_upgrade(ws, &endless).starts_with("HTTP/1.1 431"));
    // Silent after connecting: closed at the upgrade timeout, no answer.
    assert_eq!(raw_upgrade(ws, ""), "");

    let f = message_frame(Codec::V1, "shout", &Value::map());
    let binary = |p: &[u8]| ws_frame(OpCode::Data(Data::Binary), true, p);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "text",
            ws_frame(OpCode::Data(Data::Text), true, b"{}"),
            1003,
        ),
        (
            "fragmented",
            ws_frame(OpCode::Data(Data::Binary), false, &f[..20]),
            1002,
        ),
        ("oversized", binary(&vec![0u8; 70 * 1024]), 1009),
        ("half a frame", binary(&f[..f.len() - 3]), 1002),
        ("two frames", binary(&[f.clone(), f.clone()].concat()), 1002),
        ("not a frame", binary(&[0u8; 40]), 1002),
    ];
    for (what, bytes, code) in cases {
        assert_eq!(close_code_after(ws, &bytes), Some(code), "{what}");
    }
    // A frame split across two messages: the first half is already refused.
    assert_eq!(close_code_after(ws, &binary(&f[..16])), Some(1002));
    // The good connection never noticed.
    good.send(&rpc_frame(Codec::Native, 1, "echo", &Value::map()));
    assert_eq!(good.next_frame().header.kind, FrameKind::RpcResponse);
    running.stop().expect("stop");
}

/// Upgrades from `from` with `X-Forwarded-For: xff` (if any); the status line, and the
/// socket (open after a 101).
fn upgrade_from(addr: SocketAddr, from: &str, xff: Option<&str>) -> (String, TcpStream) {
    let mut s = conduit_tests::connect_from(from, addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let forwarded = xff.map_or(String::new(), |a| {
        format!("X-Forwarded-For: 198.51.100.7, {a}\r\n")
    });
    let req =
        request("/conduit", ORIGIN).replace("Host: h\r\n", &format!("Host: h\r\n{forwarded}"));
    s.write_all(req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read_exact(&mut byte).is_ok() {
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    (text.lines().next().unwrap_or("").to_owned(), s)
}

#[matrix]
fn behind_a_trusted_proxy_the_client_is_the_forwarded_address() {
    let mut desc = test_descriptor(PW)
        .trusted_proxies(["127.0.0.1/32".parse().unwrap()])
        .websocket(WebSocketSettings::new(0));
    desc.max_pending_per_source = 2;
    let server = Server::new(desc).expect("server");
    server.rpc_with(RpcInfo::new("whoami"), |call| async move {
        Ok::<_, RpcError>(Value::from(call.connection.peer_addr().ip().to_string()))
    });
    let (running, _tcp) = start(&server);
    let ws = server
        .router()
        .websocket_addr()
        .expect("websocket listener");
    let ip_of = |from: &str, xff: Option<&str>| {
        let (status, stream) = upgrade_from(ws, from, xff);
        assert!(
            status.starts_with("HTTP/1.1 101"),
            "{from} {xff:?}: {status}"
        );
        let mut c = WsClient {
            ws: WebSocket::from_raw_socket(
                Retrying(stream),
                tungstenite::protocol::Role::Client,
                None,
            ),
            codec: Codec::V1,
        };
        let mut hs = ClientHandshake::new(Codec::V1, PW, [3; 32], "ws-test", "1");
        c.send(&hs.start(0).unwrap());
        let f = c.next_frame();
        let aligned = aligned_copy(&f.payload);
        let frame = Frame {
            header: f.header,
            payload: &aligned,
        };
        assert!(matches!(
            hs.on_frame(&frame, &V1Limits::default(), 0),
            Ok(ClientStep::Done(_))
        ));
        c.send(&rpc_frame(Codec::V1, 1, "whoami", &Value::map()));
        let reply = c.next_frame().v1();
        match reply {
            conduit_protocol::v1::V1Payload::RpcResponse { result, .. } => result
                .get("data")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            other => panic!("{other:?}"),
        }
    };
    // From the trusted proxy: the rightmost forwarded address; without the header, the
    // proxy's own. From anyone else the header is ignored.
    assert_eq!(ip_of("127.0.0.1", Some("203.0.113.9")), "203.0.113.9");
    assert_eq!(ip_of("127.0.0.1", None), "127.0.0.1");
    assert_eq!(ip_of("127.0.0.2", Some("203.0.113.9")), "127.0.0.2");
    // The login budget is the forwarded address's: two of its connections logging in
    // fill it, a third is refused (503, with the reason), another address is not.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (status, s) = upgrade_from(ws, "127.0.0.1", Some("203.0.113.20"));
            assert!(status.starts_with("HTTP/1.1 101"), "{status}");
            s
        })
        .collect();
    let (refused, _) = upgrade_from(ws, "127.0.0.1", Some("203.0.113.20"));
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    let (other, _) = upgrade_from(ws, "127.0.0.1", Some("203.0.113.21"));
    assert!(other.starts_with("HTTP/1.1 101"), "{other}");
    drop(held);
    running.stop().expect("stop");
}
