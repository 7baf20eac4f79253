//! Helpers for the end-to-end tests: a blocking wire-level client that speaks both
//! codecs over a real socket, frame by frame, so tests can assert on exact frames.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use conduit::{Running, Server, ServerDescriptor};
use conduit_protocol::native::{self, ArchivedAuthAccepted, ArchivedAuthStep, ArchivedValueTree};
use conduit_protocol::v1::{self, V1Limits, V1Payload};
use conduit_protocol::{
    auth, Codec, DecoderLimits, FrameDecoder, FrameKind, Header, Value, ValueLimits,
};

/// How long a test waits for any one frame before failing.
pub const FRAME_WAIT: Duration = Duration::from_secs(10);

/// A frame owned by the test.
#[derive(Debug, Clone)]
pub struct OwnedFrame {
    /// Its header.
    pub header: Header,
    /// Its payload (native padding removed).
    pub payload: Vec<u8>,
}

impl OwnedFrame {
    /// The v1 payload, decoded.
    pub fn v1(&self) -> V1Payload {
        v1::decode(&self.header, &self.payload, &V1Limits::default()).expect("v1 payload")
    }

    /// A native payload with a route: (name, body as Value).
    pub fn native_routed(&self) -> (String, Value) {
        let aligned = aligned_copy(&self.payload);
        let (name, body) = native::split_route(&aligned).expect("route");
        let tree = native::access::<ArchivedValueTree>(body).expect("value tree");
        (
            name.to_owned(),
            tree.to_value(ValueLimits::default()).expect("value"),
        )
    }

    /// The reason text of an AUTH_FAILURE (either codec) or a native CLOSE.
    pub fn reason(&self) -> String {
        match self.header.codec {
            Codec::V1 => match self.v1() {
                V1Payload::AuthFailure { reason } => reason,
                other => panic!("not a failure: {other:?}"),
            },
            Codec::Native => {
                let aligned = aligned_copy(&self.payload);
                native::access::<native::ArchivedReason>(&aligned)
                    .expect("a reason payload")
                    .reason
                    .as_str()
                    .to_owned()
            }
        }
    }

    /// A native payload that is a bare value tree.
    pub fn native_value(&self) -> Value {
        let aligned = aligned_copy(&self.payload);
        native::access::<ArchivedValueTree>(&aligned)
            .expect("value tree")
            .to_value(ValueLimits::default())
            .expect("value")
    }
}

/// Copies bytes into 8-byte-aligned storage (test frames are owned, not in place).
fn aligned_copy(bytes: &[u8]) -> rkyv::util::AlignedVec<8> {
    let mut v = rkyv::util::AlignedVec::<8>::with_capacity(bytes.len());
    v.extend_from_slice(bytes);
    v
}

/// A blocking test client.
pub struct TestClient {
    stream: TcpStream,
    decoder: FrameDecoder,
    /// The codec it speaks.
    pub codec: Codec,
    next_corr: u64,
    /// The connection id the server gave (native logins only).
    pub connection_id: Option<u64>,
}

impl TestClient {
    /// Opens a TCP connection.
    pub fn connect(addr: SocketAddr, codec: Codec) -> io::Result<TestClient> {
        TestClient::from_stream(TcpStream::connect(addr)?, codec)
    }

    /// Wraps a stream connected by the caller (e.g. with socket options that must be
    /// set before connecting).
    pub fn from_stream(stream: TcpStream, codec: Codec) -> io::Result<TestClient> {
        stream.set_read_timeout(Some(FRAME_WAIT))?;
        stream.set_nodelay(true)?;
        Ok(TestClient {
            stream,
            decoder: FrameDecoder::new(DecoderLimits {
                max_payload_bytes: 64 * 1024 * 1024,
                ..DecoderLimits::default()
            }),
            codec,
            next_corr: 1,
            connection_id: None,
        })
    }

    /// Connects and logs in; panics if the server refuses.
    pub fn login(addr: SocketAddr, codec: Codec, password: &str) -> TestClient {
        let mut c = TestClient::connect(addr, codec).expect("connect");
        let f = c.authenticate(password).expect("auth exchange");
        assert_eq!(
            f.header.kind,
            FrameKind::AuthSuccess,
            "login refused: {f:?}"
        );
        c
    }

    /// Runs the login exchange and returns the server's final auth frame
    /// (AUTH_SUCCESS or AUTH_FAILURE).
    pub fn authenticate(&mut self, password: &str) -> io::Result<OwnedFrame> {
        match self.codec {
            Codec::V1 => {
                let hash = auth::v1_password_hash(password);
                self.send_raw(&v1::Encoder::new(0).auth_request(&hash, "test", "1.0"))?;
                self.next_frame()
            }
            Codec::Native => {
                let client_nonce = [7u8; 32];
                let hello = native::AuthStep::Hello(native::Hello {
                    client_nonce,
                    client_name: "test".into(),
                    client_version: "1.0".into(),
                });
                self.send_raw(&native::Encoder::new(0).auth_step(&hello).unwrap())?;
                let f = self.next_frame()?;
                if f.header.kind != FrameKind::AuthRequest {
                    return Ok(f);
                }
                let aligned = aligned_copy(&f.payload);
                let server_nonce = match native::access::<ArchivedAuthStep>(&aligned).unwrap() {
                    ArchivedAuthStep::Challenge(n) => *n,
                    other => panic!("expected a challenge, got {other:?}"),
                };
                let proof = auth::client_proof(password.as_bytes(), &server_nonce, &client_nonce);
                let step = native::AuthStep::Proof(proof);
                self.send_raw(&native::Encoder::new(0).auth_step(&step).unwrap())?;
                let f = self.next_frame()?;
                if f.header.kind == FrameKind::AuthSuccess {
                    let aligned = aligned_copy(&f.payload);
                    let ok = native::access::<ArchivedAuthAccepted>(&aligned).unwrap();
                    assert!(
                        auth::verify_server_proof(
                            password.as_bytes(),
                            &server_nonce,
                            &client_nonce,
                            &ok.server_proof
                        ),
                        "server proof must verify"
                    );
                    self.connection_id = Some(ok.connection_id.to_native());
                }
                Ok(f)
            }
        }
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next frame from the server (waits up to [`FRAME_WAIT`]).
    pub fn next_frame(&mut self) -> io::Result<OwnedFrame> {
        loop {
            if let Some(f) = self
                .decoder
                .next_frame()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                return Ok(OwnedFrame {
                    header: f.header,
                    payload: f.payload.to_vec(),
                });
            }
            let n = match self.stream.read(self.decoder.spare()) {
                Ok(n) => n,
                // The server's executors share this process; their signals can
                // interrupt a blocking read.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.decoder.commit(n);
        }
    }

    /// The next frame that is not a heartbeat; PINGs are answered with PONGs.
    pub fn next_app_frame(&mut self) -> io::Result<OwnedFrame> {
        loop {
            let f = self.next_frame()?;
            match f.header.kind {
                FrameKind::Ping => self.pong()?,
                FrameKind::Pong => {}
                _ => return Ok(f),
            }
        }
    }

    /// Sends a PONG.
    pub fn pong(&mut self) -> io::Result<()> {
        let frame = match self.codec {
            Codec::V1 => v1::Encoder::new(0).empty(FrameKind::Pong),
            Codec::Native => native::Encoder::new(0).empty(FrameKind::Pong),
        };
        self.send_raw(&frame)
    }

    /// Sends a PING.
    pub fn ping(&mut self) -> io::Result<()> {
        let frame = match self.codec {
            Codec::V1 => v1::Encoder::new(0).empty(FrameKind::Ping),
            Codec::Native => native::Encoder::new(0).empty(FrameKind::Ping),
        };
        self.send_raw(&frame)
    }

    /// Sends MESSAGE `name` with `data`.
    pub fn send_message(&mut self, name: &str, data: &Value) -> io::Result<()> {
        let frame = match self.codec {
            Codec::V1 => v1::Encoder::new(0).message(name, data),
            Codec::Native => native::Encoder::new(0)
                .message(name, &native::ValueTree::from_value(data))
                .unwrap(),
        };
        self.send_raw(&frame)
    }

    /// The next application message: (type, data).
    pub fn next_message(&mut self) -> io::Result<(String, Value)> {
        let f = self.next_app_frame()?;
        assert_eq!(
            f.header.kind,
            FrameKind::Message,
            "expected a message: {f:?}"
        );
        Ok(match self.codec {
            Codec::V1 => match f.v1() {
                V1Payload::Message { name, data } => (name, data),
                other => panic!("not a message: {other:?}"),
            },
            Codec::Native => f.native_routed(),
        })
    }

    /// Calls `method` with a native body of any archivable type (for methods that read
    /// their arguments in place); returns what [`rpc`](Self::rpc) returns.
    pub fn rpc_native_body<T: native::NativeBody>(
        &mut self,
        method: &str,
        body: &T,
    ) -> io::Result<Value> {
        assert_eq!(self.codec, Codec::Native);
        let corr = self.next_corr;
        self.next_corr += 1;
        let frame = native::Encoder::new(0)
            .rpc_request(corr, method, body)
            .unwrap();
        self.send_raw(&frame)?;
        self.read_reply(corr)
    }

    /// Calls `method`; returns v1's inner envelope, or for native `{success, data}` /
    /// `{success: false, error, code, details}` built from the native reply.
    pub fn rpc(&mut self, method: &str, params: &Value) -> io::Result<Value> {
        let corr = self.next_corr;
        self.next_corr += 1;
        let frame = match self.codec {
            Codec::V1 => v1::Encoder::new(0).rpc_request(corr, method, params),
            Codec::Native => native::Encoder::new(0)
                .rpc_request(corr, method, &native::ValueTree::from_value(params))
                .unwrap(),
        };
        self.send_raw(&frame)?;
        self.read_reply(corr)
    }

    fn read_reply(&mut self, corr: u64) -> io::Result<Value> {
        loop {
            let f = self.next_app_frame()?;
            if !matches!(f.header.kind, FrameKind::RpcResponse | FrameKind::RpcError) {
                continue; // a broadcast or message; not ours
            }
            assert_eq!(f.header.correlation_id, corr, "correlation echoed");
            return Ok(match (self.codec, f.header.kind) {
                (Codec::V1, _) => match f.v1() {
                    V1Payload::RpcResponse { success, result } => {
                        assert!(success, "outer envelope is always success");
                        result
                    }
                    other => panic!("not a response: {other:?}"),
                },
                (Codec::Native, FrameKind::RpcResponse) => Value::map()
                    .with("success", true)
                    .with("data", f.native_value()),
                (Codec::Native, _) => {
                    let aligned = aligned_copy(&f.payload);
                    let e = native::access::<native::ArchivedRpcFailure>(&aligned).unwrap();
                    Value::map()
                        .with("success", false)
                        .with("error", e.message.as_str())
                        .with("code", i64::from(e.code.to_native()))
                        .with(
                            "details",
                            e.details.to_value(ValueLimits::default()).unwrap(),
                        )
                }
            });
        }
    }

    /// The socket itself (for socket options and half-sent frames).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The next frame if one arrives within `wait`: `Ok(None)` when the socket stays
    /// quiet that long, an error once the server closed it. PINGs are returned, not
    /// answered.
    pub fn poll_frame(&mut self, wait: Duration) -> io::Result<Option<OwnedFrame>> {
        self.stream
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let got = self.next_frame();
        self.stream.set_read_timeout(Some(FRAME_WAIT))?;
        match got {
            Ok(f) => Ok(Some(f)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the server closes the connection: reads (answering pings) until EOF or
    /// reset, returning the frames seen on the way; fails if nothing closes it within
    /// [`FRAME_WAIT`] of silence.
    pub fn expect_closed(&mut self) -> Vec<OwnedFrame> {
        let mut seen = Vec::new();
        loop {
            match self.next_frame() {
                Ok(f) => seen.push(f),
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    panic!("server did not close the connection; saw {seen:?}")
                }
                Err(_) => return seen,
            }
        }
    }
}

/// A descriptor for tests: 127.0.0.1, port 0, 2 shards, short timeouts.
pub fn test_descriptor(password: &str) -> ServerDescriptor {
    let mut d = ServerDescriptor::new(password)
        .host("127.0.0.1")
        .port(0)
        .shards(2)
        .auth_failure_delay(Duration::from_millis(20))
        .drain_timeout(Duration::from_secs(2));
    d.v1_post_auth_delay = Duration::from_millis(1);
    d
}

/// Starts `server` and returns the running handle and its address.
pub fn start(server: &Server) -> (Running, SocketAddr) {
    let running = server.start().expect("server starts");
    let addr = server.local_addr().expect("bound address");
    (running, addr)
}
