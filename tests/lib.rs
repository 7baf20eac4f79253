//! Helpers for the end-to-end tests: a blocking wire-level client that speaks both
//! codecs over a real socket, frame by frame, so tests can assert on exact frames;
//! frames forged by hand ([`forge`]) for hostile-input tests; and the process's
//! resident memory ([`rss_bytes`]) for tests that check the server does not allocate
//! what a peer claims; the real Python netconduit in a venv ([`netconduit`]).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the calling test loudly on the first unexpected error"
)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use conduit::{Running, Runtime, Server, ServerDescriptor};
use conduit_protocol::handshake::{ClientHandshake, ClientStep, HandshakeError};
use conduit_protocol::native::{self, ArchivedValueTree};
use conduit_protocol::v1::{self, V1Limits, V1Payload};
use conduit_protocol::{
    Codec, DecoderLimits, Frame, FrameDecoder, FrameKind, Header, Value, ValueLimits,
};
pub use conduit_test_macros::matrix;

pub mod netconduit;
pub mod webdriver;

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

    /// A MESSAGE frame's (type, data), decoded with `limits` instead of the defaults
    /// (e.g. to read back a payload nested deeper than the default depth).
    pub fn message_with(&self, limits: ValueLimits) -> (String, Value) {
        match self.header.codec {
            Codec::V1 => {
                let v1_limits = V1Limits {
                    value: limits,
                    ..V1Limits::default()
                };
                match v1::decode(&self.header, &self.payload, &v1_limits).expect("v1 payload") {
                    V1Payload::Message { name, data } => (name, data),
                    other => panic!("not a message: {other:?}"),
                }
            }
            Codec::Native => {
                let aligned = aligned_copy(&self.payload);
                let (name, body) = native::split_route(&aligned).expect("route");
                let tree = native::access::<ArchivedValueTree>(body).expect("value tree");
                (name.to_owned(), tree.to_value(limits).expect("value"))
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

/// An `InvalidData` I/O error carrying `e`.
fn invalid_data(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Copies bytes into 8-byte-aligned storage, as rkyv needs to read a native payload
/// (test frames are owned copies, not read in place).
pub fn aligned_copy(bytes: &[u8]) -> rkyv::util::AlignedVec<8> {
    let mut v = rkyv::util::AlignedVec::<8>::with_capacity(bytes.len());
    v.extend_from_slice(bytes);
    v
}

/// A test client's socket: plain, or TLS over it (rustls).
enum Wire {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Wire {
    fn tcp(&self) -> &TcpStream {
        match self {
            Wire::Plain(s) => s,
            Wire::Tls(s) => &s.sock,
        }
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.read(buf),
            Wire::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.write(buf),
            Wire::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Wire::Plain(s) => s.flush(),
            Wire::Tls(s) => s.flush(),
        }
    }
}

/// A blocking test client.
pub struct TestClient {
    stream: Wire,
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
        TestClient::over(Wire::Plain(stream), codec)
    }

    /// Speaks TLS (`tls`, a fresh rustls client) over `stream`; the handshake runs
    /// with the first write.
    pub fn from_tls(
        tls: rustls::ClientConnection,
        stream: TcpStream,
        codec: Codec,
    ) -> io::Result<TestClient> {
        TestClient::over(
            Wire::Tls(Box::new(rustls::StreamOwned::new(tls, stream))),
            codec,
        )
    }

    fn over(stream: Wire, codec: Codec) -> io::Result<TestClient> {
        stream.tcp().set_read_timeout(Some(FRAME_WAIT))?;
        stream.tcp().set_nodelay(true)?;
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

    /// Runs the login exchange (the protocol crate's [`ClientHandshake`], client name
    /// `test`, client nonce `[7; 32]`) and returns the server's final auth frame:
    /// AUTH_SUCCESS (the native server's proof checked, [`connection_id`] set) or
    /// AUTH_FAILURE. A reply the exchange cannot take is an `InvalidData` error; a native
    /// server that cannot prove it knows the password panics.
    ///
    /// [`connection_id`]: TestClient::connection_id
    pub fn authenticate(&mut self, password: &str) -> io::Result<OwnedFrame> {
        self.authenticate_after(&[], password)
    }

    /// [`authenticate`](Self::authenticate), with `prefix` (a PROXY protocol header)
    /// sent in the same write as the first login frame.
    pub fn authenticate_after(&mut self, prefix: &[u8], password: &str) -> io::Result<OwnedFrame> {
        let login = ClientHandshake::new(self.codec, password, [7u8; 32], "test", "1.0");
        self.run_login(prefix, login)
    }

    /// Logs in with a signed `token` instead of the password; returns the server's
    /// answer (AUTH_SUCCESS or AUTH_FAILURE) as [`authenticate`](Self::authenticate)
    /// does.
    pub fn authenticate_token(&mut self, token: &str) -> io::Result<OwnedFrame> {
        let login = ClientHandshake::with_token(self.codec, token, "test", "1.0");
        self.run_login(&[], login)
    }

    fn run_login(&mut self, prefix: &[u8], mut login: ClientHandshake) -> io::Result<OwnedFrame> {
        let first = login.start(0).map_err(invalid_data)?;
        let mut write = prefix.to_vec();
        write.extend_from_slice(&first);
        self.send_raw(&write)?;
        loop {
            let f = self.next_frame()?;
            let aligned = aligned_copy(&f.payload);
            let frame = Frame {
                header: f.header,
                payload: &aligned,
            };
            match login.on_frame(&frame, &V1Limits::default(), 0) {
                Ok(ClientStep::Send(next)) => self.send_raw(&next)?,
                Ok(ClientStep::Done(info)) => {
                    self.connection_id = info.connection_id;
                    return Ok(f);
                }
                Err(HandshakeError::Rejected(_)) => return Ok(f),
                Err(HandshakeError::ServerProofInvalid) => panic!("server proof must verify"),
                Err(e) => return Err(invalid_data(e)),
            }
        }
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// The next frame from the server (waits up to [`FRAME_WAIT`]).
    pub fn next_frame(&mut self) -> io::Result<OwnedFrame> {
        loop {
            if let Some(f) = self.decoder.next_frame().map_err(invalid_data)? {
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
        self.send_raw(&forge::empty_frame(self.codec, FrameKind::Pong))
    }

    /// Sends a PING.
    pub fn ping(&mut self) -> io::Result<()> {
        self.send_raw(&forge::empty_frame(self.codec, FrameKind::Ping))
    }

    /// Sends MESSAGE `name` with `data`.
    pub fn send_message(&mut self, name: &str, data: &Value) -> io::Result<()> {
        self.send_raw(&forge::message_frame(self.codec, name, data))
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

    /// [`rpc`](Self::rpc) for a client that also receives messages: those arriving
    /// before the reply are appended to `kept` as (type, data), in order, rather than
    /// skipped.
    pub fn rpc_keeping(
        &mut self,
        method: &str,
        params: &Value,
        kept: &mut Vec<(String, Value)>,
    ) -> io::Result<Value> {
        let corr = self.next_corr;
        self.next_corr += 1;
        self.send_raw(&forge::rpc_frame(self.codec, corr, method, params))?;
        self.read_reply_keeping(corr, Some(kept))
    }

    fn read_reply(&mut self, corr: u64) -> io::Result<Value> {
        self.read_reply_keeping(corr, None)
    }

    fn read_reply_keeping(
        &mut self,
        corr: u64,
        mut kept: Option<&mut Vec<(String, Value)>>,
    ) -> io::Result<Value> {
        loop {
            let f = self.next_app_frame()?;
            if !matches!(f.header.kind, FrameKind::RpcResponse | FrameKind::RpcError) {
                // A broadcast or message; not the reply.
                if let (Some(kept), FrameKind::Message) = (kept.as_deref_mut(), f.header.kind) {
                    kept.push(f.message_with(ValueLimits::default()));
                }
                continue;
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

    /// The TLS connection, for a client made with [`from_tls`](Self::from_tls).
    pub fn tls(&mut self) -> Option<&mut rustls::ClientConnection> {
        match &mut self.stream {
            Wire::Plain(_) => None,
            Wire::Tls(s) => Some(&mut s.conn),
        }
    }

    /// The socket itself (for socket options and half-sent frames).
    pub fn stream(&self) -> &TcpStream {
        self.stream.tcp()
    }

    /// The next frame if one arrives within `wait`: `Ok(None)` when the socket stays
    /// quiet that long, an error once the server closed it. PINGs are returned, not
    /// answered.
    pub fn poll_frame(&mut self, wait: Duration) -> io::Result<Option<OwnedFrame>> {
        self.stream
            .tcp()
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let got = self.next_frame();
        self.stream.tcp().set_read_timeout(Some(FRAME_WAIT))?;
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

thread_local! {
    /// The backend the running test builds its servers and clients on.
    static RUNTIME: std::cell::Cell<Runtime> = const { std::cell::Cell::new(Runtime::Auto) };
}

/// Runs `test` with servers and clients built on `runtime` (what `#[matrix]` calls).
/// A backend this machine cannot run (glommio where io_uring is refused) is skipped,
/// saying why on stderr: the same test runs on the other backend.
pub fn on_runtime(runtime: Runtime, test: fn()) {
    if let Err(e) = runtime.resolve(2) {
        eprintln!("skipped on {runtime}: {e}");
        return;
    }
    RUNTIME.set(runtime);
    test();
}

/// The backend of the running test ([`Runtime::Auto`] outside `#[matrix]`).
pub fn runtime() -> Runtime {
    RUNTIME.get()
}

/// Starts a client executor thread on the test's backend running the future `make`
/// builds; the thread inherits the test's backend (for descriptors built on it).
pub fn spawn_client<G, F, T>(name: &str, make: G) -> conduit::client::ExecutorThread<T>
where
    G: FnOnce() -> F + Send + 'static,
    F: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    let rt = runtime();
    let thread = conduit::client::spawn_executor_on(rt, name, move || {
        RUNTIME.set(rt);
        make()
    })
    .expect("client executor starts");
    if rt != Runtime::Auto {
        assert_eq!(thread.runtime(), rt, "client on the test's backend");
    }
    thread
}

/// A descriptor for tests: 127.0.0.1, port 0, 2 shards, short timeouts, on the
/// running test's backend.
pub fn test_descriptor(password: &str) -> ServerDescriptor {
    let mut d = ServerDescriptor::new(password)
        .runtime(runtime())
        .host("127.0.0.1")
        .port(0)
        .shards(2)
        .auth_failure_delay(Duration::from_millis(20))
        .drain_timeout(Duration::from_secs(2));
    d.v1_post_auth_delay = Duration::from_millis(1);
    // Every test client comes from 127.0.0.1: tests of the per-source budgets set them.
    d.max_pending_per_source = d.max_pending;
    d.max_auth_failures_per_source = 1000;
    d
}

/// A TCP connection to `addr` from source address `from` (any 127.x works on Linux).
pub fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source: SocketAddr = format!("{from}:0").parse().unwrap();
    sock.bind(&source.into()).unwrap();
    sock.connect(&addr.into()).unwrap();
    sock.into()
}

/// Starts `server` and returns the running handle and its address. Checks that it runs
/// on the test's backend (so a matrix test cannot pass on the wrong one).
pub fn start(server: &Server) -> (Running, SocketAddr) {
    let running = server.start().expect("server starts");
    if runtime() != Runtime::Auto {
        assert_eq!(running.runtime(), runtime(), "server on the test's backend");
    }
    let addr = server.local_addr().expect("bound address");
    (running, addr)
}

/// Polls `cond` every 5 ms until it holds (what a server does asynchronously, such as
/// noticing a close); fails naming `what` after 10 s.
pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// This process's resident set size in bytes (`VmRSS` in `/proc/self/status`; Linux
/// only). The server under test runs in the test's process, so growth between two
/// readings bounds what it allocated in between.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS value");
    kib * 1024
}

pub mod forge {
    //! Frames built by hand, byte by byte where needed, for tests that send what a
    //! well-behaved encoder would not: headers with unknown versions or types and lying
    //! lengths, payloads that are not valid MessagePack or rkyv, half frames, junk.
    //! Every function returns the whole frame (header and payload) ready for
    //! [`TestClient::send_raw`](crate::TestClient::send_raw).

    use conduit_protocol::native::{self, ValueTree};
    use conduit_protocol::{auth, v1, Codec, FrameKind, Header, Value, HEADER_LEN};

    /// A 32-byte header with raw field values: magic `CNDT`, then `version`, `kind`,
    /// zero flags, `reserved`, `length`, zero correlation and timestamp. Unlike
    /// [`Header::encode`] it can name unknown versions and types, and claim a `length`
    /// no payload follows. Overwrite bytes `0..4` for a bad magic.
    pub fn raw_header(version: u16, kind: u16, reserved: u16, length: u32) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(b"CNDT");
        h[4..6].copy_from_slice(&version.to_be_bytes());
        h[6..8].copy_from_slice(&kind.to_be_bytes());
        h[10..12].copy_from_slice(&reserved.to_be_bytes());
        h[12..16].copy_from_slice(&length.to_be_bytes());
        h
    }

    /// A v1 frame of `kind` (correlation 1) whose payload is `payload` as given: raw,
    /// possibly malformed, MessagePack.
    pub fn v1_raw(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
        v1::Encoder::new(0)
            .frame(kind, 1, |o| o.extend_from_slice(payload))
            .to_vec()
    }

    /// A v1 MESSAGE `{type: name, data: <data>}` whose `data` is the raw MessagePack
    /// `data`, unchecked. `name` must be shorter than 32 bytes (a MessagePack fixstr).
    pub fn v1_message_raw(name: &str, data: &[u8]) -> Vec<u8> {
        assert!(name.len() < 32, "fixstr names only");
        let mut p = vec![0x82, 0xa4];
        p.extend_from_slice(b"type");
        p.push(0xa0 | name.len() as u8);
        p.extend_from_slice(name.as_bytes());
        p.push(0xa4);
        p.extend_from_slice(b"data");
        p.extend_from_slice(data);
        v1_raw(FrameKind::Message, &p)
    }

    /// A native routed frame (MESSAGE, RPC_REQUEST; correlation 1) with a raw route
    /// `name` (any bytes, not necessarily UTF-8, up to 255) and a raw `body` (not
    /// necessarily a valid archive), laid out and padded as the native codec does.
    pub fn native_routed_raw(kind: FrameKind, name: &[u8], body: &[u8]) -> Vec<u8> {
        let mut p = vec![u8::try_from(name.len()).expect("route name up to 255 bytes")];
        p.extend_from_slice(name);
        p.resize(p.len().next_multiple_of(8), 0);
        p.extend_from_slice(body);
        let unpadded = p.len();
        p.resize(p.len().next_multiple_of(8), 0);
        let mut h = Header::new(Codec::Native, kind);
        h.length = u32::try_from(p.len()).expect("payload under 4 GiB");
        h.reserved = (p.len() - unpadded) as u16;
        h.correlation_id = 1;
        let mut out = h.encode().to_vec();
        out.extend_from_slice(&p);
        out
    }

    /// A native MESSAGE `name` carrying `tree` as given (which may hold node counts no
    /// well-formed [`Value`] produces).
    pub fn native_message(name: &str, tree: &ValueTree) -> Vec<u8> {
        native::Encoder::new(0)
            .message(name, tree)
            .expect("native message encodes")
            .to_vec()
    }

    /// A MESSAGE `name` with `data`, encoded properly in `codec`.
    pub fn message_frame(codec: Codec, name: &str, data: &Value) -> Vec<u8> {
        match codec {
            Codec::V1 => v1::Encoder::new(0).message(name, data).to_vec(),
            Codec::Native => native_message(name, &ValueTree::from_value(data)),
        }
    }

    /// An RPC_REQUEST `method(params)` with correlation id `corr`, in `codec`.
    pub fn rpc_frame(codec: Codec, corr: u64, method: &str, params: &Value) -> Vec<u8> {
        conduit_protocol::Encoder::new(codec, 0)
            .rpc_request(corr, method, params)
            .expect("a short method name encodes")
            .to_vec()
    }

    /// A payload-less frame of `kind` (PING, PONG, …) in `codec`.
    pub fn empty_frame(codec: Codec, kind: FrameKind) -> Vec<u8> {
        match codec {
            Codec::V1 => v1::Encoder::new(0).empty(kind).to_vec(),
            Codec::Native => native::Encoder::new(0).empty(kind).to_vec(),
        }
    }

    /// The first login frame a client sends, for tests that send it whole, in part, or
    /// out of turn: v1's AUTH_REQUEST carrying `password`'s hash; native's Hello (client
    /// nonce `[1; 32]`), which carries no password — the proof comes in a later frame.
    pub fn auth_frame(
        codec: Codec,
        password: &str,
        client_name: &str,
        client_version: &str,
    ) -> Vec<u8> {
        match codec {
            Codec::V1 => v1::Encoder::new(0)
                .auth_request(
                    &auth::v1_password_hash(password),
                    client_name,
                    client_version,
                )
                .to_vec(),
            Codec::Native => native::Encoder::new(0)
                .auth_step(&native::AuthStep::Hello(native::Hello {
                    client_nonce: [1; 32],
                    client_name: client_name.into(),
                    client_version: client_version.into(),
                }))
                .expect("hello encodes")
                .to_vec(),
        }
    }

    /// `Nil` nested in `depth` one-element arrays (built without recursion).
    pub fn nested(depth: usize) -> Value {
        let mut v = Value::Nil;
        for _ in 0..depth {
            v = Value::Array(vec![v]);
        }
        v
    }

    /// `len` junk bytes from a xorshift generator: the same `seed` gives the same bytes.
    pub fn junk(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    /// Replaces the first occurrence of `what` in `bytes` by `with` (same length), e.g.
    /// to corrupt a placeholder string inside an encoded frame; panics if `what` is
    /// absent.
    pub fn patch(bytes: &mut [u8], what: &[u8], with: &[u8]) {
        assert_eq!(what.len(), with.len());
        let at = bytes
            .windows(what.len())
            .position(|w| w == what)
            .expect("pattern present");
        bytes[at..at + with.len()].copy_from_slice(with);
    }
}

/// A socket whose reads and writes a signal interrupted are retried: the server's
/// executors share the test process and their signals can interrupt a blocking call,
/// which clients like tungstenite and rustls's `StreamOwned` do not retry themselves.
pub struct Retrying(pub TcpStream);

impl Read for Retrying {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

impl Write for Retrying {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
