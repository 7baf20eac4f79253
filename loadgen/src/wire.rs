//! The lean raw-protocol client the scenarios drive: one TCP stream (on the executor's
//! backend) and one [`FrameDecoder`] per connection, logged in by the protocol crate's
//! [`ClientHandshake`] (either codec). What it sends and reads is in `payload`.
//!
//! It speaks `conduit-protocol` directly, so it measures the server and not a client
//! library, and it works against any netconduit-v1 server. Over
//! [`Transport::WebSocket`] each connection first upgrades, then sends every frame
//! in a masked binary message and takes frames out of the server's messages ([`ws`]).
//! Over [`Transport::Tls`] each connection first completes a TLS handshake (rustls
//! with ring, trusting the CA the run names), then encrypts what it sends and
//! decrypts what it reads.

use std::io;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use conduit::__rt::{sleep, SharedStream};
use conduit_protocol::clock::wall_clock_ms;
use conduit_protocol::handshake::{ClientHandshake, ClientStep};
use conduit_protocol::v1::V1Limits;
use conduit_protocol::{auth, Codec, DecoderLimits, FrameDecoder, FrameKind};

use crate::ws::{self, ServerControl, WsClient};
use crate::Error;

/// Name this client reports at login.
pub const CLIENT_NAME: &str = "conduit-loadgen";

/// Receive buffer each client connection starts with, bytes: large enough that a
/// saturated receiver drains many frames per read.
pub const CLIENT_RECV_BUFFER_BYTES: usize = 16 * 1024;

/// Largest frame payload the client accepts, bytes.
pub const CLIENT_MAX_PAYLOAD_BYTES: u32 = 4 * 1024 * 1024;

/// One authenticated client connection.
pub struct Conn {
    stream: SharedStream,
    /// The WebSocket framing, over [`Transport::WebSocket`].
    ws: Option<Box<WsClient>>,
    /// The TLS state, over [`Transport::Tls`].
    tls: Option<Box<TlsClient>>,
    /// Decodes what the server sends.
    pub decoder: FrameDecoder,
    /// The codec this connection speaks.
    pub codec: Codec,
    /// The id the server gave this connection at login (native logins only): it says
    /// which of the server's shards serves it.
    pub connection_id: Option<u64>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("codec", &self.codec).finish()
    }
}

/// How frames travel between the client and the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// Frames straight on TCP.
    #[default]
    Tcp,
    /// One frame per binary WebSocket message, after an HTTP/1.1 upgrade to
    /// [`ws::WS_PATH`].
    WebSocket,
    /// Frames in TLS records on TCP.
    Tls,
}

impl Transport {
    /// `tcp` / `websocket`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::WebSocket => "websocket",
            Transport::Tls => "tls",
        }
    }
}

/// How to open a connection.
#[derive(Clone, Debug)]
pub struct ConnectSpec {
    /// Server address (the WebSocket listener's over [`Transport::WebSocket`]).
    pub addr: SocketAddr,
    /// TCP, WebSocket or TLS.
    pub transport: Transport,
    /// The TLS client settings, over [`Transport::Tls`].
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Codec to speak.
    pub codec: Codec,
    /// Password.
    pub password: String,
    /// TCP connect attempts before giving up (netconduit's backlog of 100 drops SYNs
    /// and refuses under a burst).
    pub attempts: u32,
    /// Time for one TCP connect attempt.
    pub connect_timeout: Duration,
}

/// Most TCP connect attempts a connection makes.
pub const MAX_CONNECT_ATTEMPTS: u32 = 20;

impl Conn {
    /// Connects (retrying refused or timed-out attempts) and logs in. `nonce_seed`
    /// varies the native client nonce between connections.
    pub async fn open(spec: &ConnectSpec, nonce_seed: u64) -> Result<Conn, Error> {
        Conn::open_from(spec, None, nonce_seed).await
    }

    /// [`Conn::open`] from the local address `source` (`None`: the kernel's choice);
    /// see [`crate::sources`].
    pub async fn open_from(
        spec: &ConnectSpec,
        source: Option<std::net::IpAddr>,
        nonce_seed: u64,
    ) -> Result<Conn, Error> {
        let mut attempt = 0;
        let stream = loop {
            attempt += 1;
            // Both set TCP_NODELAY, as the load generator always has.
            let connected = match source {
                Some(from) => {
                    SharedStream::connect_from(from, spec.addr, spec.connect_timeout).await
                }
                None => SharedStream::connect(spec.addr, spec.connect_timeout).await,
            };
            match connected {
                Ok(s) => break s,
                Err(e) if attempt < spec.attempts.min(MAX_CONNECT_ATTEMPTS) => {
                    tracing::debug!("connect attempt {attempt} failed: {e}");
                    sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                }
                Err(e) => return Err(Error::Io(e)),
            }
        };
        let mut conn = Conn {
            stream,
            ws: None,
            tls: None,
            decoder: FrameDecoder::new(DecoderLimits {
                max_payload_bytes: CLIENT_MAX_PAYLOAD_BYTES,
                initial_buffer_bytes: CLIENT_RECV_BUFFER_BYTES,
                accept_v1: spec.codec == Codec::V1,
                accept_native: spec.codec == Codec::Native,
            }),
            codec: spec.codec,
            connection_id: None,
        };
        match spec.transport {
            Transport::Tcp => {}
            Transport::WebSocket => conn.upgrade(spec.addr, nonce_seed).await?,
            Transport::Tls => {
                let config = spec.tls.clone().ok_or_else(|| {
                    Error::Args("--transport tls needs the TLS client settings".into())
                })?;
                conn.tls_handshake(config, spec.addr).await?;
            }
        }
        conn.connection_id = conn.login(&spec.password, nonce_seed).await?;
        Ok(conn)
    }

    /// The HTTP/1.1 upgrade to a WebSocket; bytes the server sent past its answer
    /// are deframed into the decoder.
    async fn upgrade(&mut self, addr: SocketAddr, seed: u64) -> Result<(), Error> {
        let key = ws::new_key();
        self.stream
            .write_all(ws::upgrade_request(&addr.to_string(), &key).as_bytes())
            .await?;
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        let end = loop {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            head.extend_from_slice(&chunk[..n]);
            if let Some(end) = ws::check_upgrade_response(&head, &key)? {
                break end;
            }
        };
        let mut client = Box::new(WsClient::new(seed));
        let mut rest = head.split_off(end);
        let mut controls = Vec::new();
        let n = client.deframe(&mut rest, &mut controls)?;
        self.ws = Some(client);
        self.decoder.feed(&rest[..n]);
        self.on_controls(&controls).await
    }

    /// The TLS handshake with the server at `addr` (its certificate must name the
    /// address's IP); records the server sent past it stay for [`Conn::fill`].
    async fn tls_handshake(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        addr: SocketAddr,
    ) -> Result<(), Error> {
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        let conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| Error::Protocol(format!("TLS: {e}")))?;
        let mut tls = Box::new(TlsClient::new(conn));
        loop {
            tls.flush(&self.stream).await?;
            if !tls.conn.is_handshaking() {
                break;
            }
            tls.read_more(&self.stream).await?;
            tls.feed()?;
        }
        self.tls = Some(tls);
        Ok(())
    }

    /// Logs in through the protocol crate's [`ClientHandshake`], feeding it frames
    /// straight from the decoder (native payloads come out 8-byte aligned, as rkyv
    /// needs); the connection id the server assigned, when its codec says.
    async fn login(&mut self, password: &str, nonce_seed: u64) -> Result<Option<u64>, Error> {
        let mut handshake = ClientHandshake::new(
            self.codec,
            password,
            nonce(nonce_seed),
            CLIENT_NAME,
            env!("CARGO_PKG_VERSION"),
        );
        let limits = V1Limits::default();
        let mut out = handshake.start(wall_clock_ms())?;
        loop {
            self.send(&out).await?;
            let step = loop {
                if let Some(f) = self.decoder.next_frame()? {
                    break handshake.on_frame(&f, &limits, wall_clock_ms())?;
                }
                self.fill().await?;
            };
            match step {
                ClientStep::Send(next) => out = next,
                ClientStep::Done(info) => return Ok(info.connection_id),
            }
        }
    }

    /// Writes all of `bytes` (whole frames; over WebSocket, one message each).
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        match (&mut self.ws, &mut self.tls) {
            (None, None) => self.stream.write_all(bytes).await?,
            (Some(ws), _) => {
                ws.wrap(bytes)?;
                self.stream.write_all(&ws.out).await?;
            }
            (None, Some(tls)) => {
                tls.conn.writer().write_all(bytes)?;
                tls.flush(&self.stream).await?;
            }
        }
        Ok(())
    }

    /// Reads more bytes into the decoder; EOF is an error. Over WebSocket the
    /// messages' headers are taken out, pings answered, and a close is an EOF.
    pub async fn fill(&mut self) -> Result<(), Error> {
        if let Some(tls) = &mut self.tls {
            loop {
                match tls.conn.reader().read(self.decoder.spare()) {
                    Ok(0) => return Err(Error::Io(io::ErrorKind::UnexpectedEof.into())),
                    Ok(n) => {
                        self.decoder.commit(n);
                        return Ok(());
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(Error::Io(e)),
                }
                if tls.start == tls.end {
                    tls.read_more(&self.stream).await?;
                }
                tls.feed()?;
                // A key update's answer or an alert.
                tls.flush(&self.stream).await?;
            }
        }
        let spare = self.decoder.spare();
        let n = self.stream.read(&mut *spare).await?;
        if n == 0 {
            return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        let Some(ws) = &mut self.ws else {
            self.decoder.commit(n);
            return Ok(());
        };
        let mut controls = Vec::new();
        let n = ws.deframe(&mut spare[..n], &mut controls)?;
        self.decoder.commit(n);
        if controls.is_empty() {
            return Ok(());
        }
        self.on_controls(&controls).await
    }

    /// Answers the server's WebSocket pings; its close ends the connection.
    async fn on_controls(&mut self, controls: &[ServerControl]) -> Result<(), Error> {
        let Some(ws) = &mut self.ws else {
            return Ok(());
        };
        for c in controls {
            match c {
                ServerControl::Ping(payload) => {
                    ws.pong(payload);
                    self.stream.write_all(&ws.out).await?;
                }
                ServerControl::Close(code) => {
                    tracing::debug!("server closed the WebSocket ({code:?})");
                    return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
                }
            }
        }
        Ok(())
    }

    /// An empty frame of `kind` (PING, PONG) in this connection's codec.
    pub fn empty_frame(&self, kind: FrameKind) -> Result<Bytes, Error> {
        crate::payload::empty_frame(self.codec, kind)
    }

    /// The server shard that serves this connection, when the login said (native).
    pub fn shard(&self) -> Option<usize> {
        self.connection_id
            .map(|id| conduit::ConnectionId::from_u64(id).shard())
    }
}

/// Ciphertext a TLS connection reads at once, bytes.
const TLS_READ_BYTES: usize = 32 * 1024;

/// One connection's TLS state: rustls does no I/O, so ciphertext read from the
/// socket is fed to it from `cipher[start..end]` (what its plaintext buffer cannot
/// take yet waits there), and the records it has to send are written out of `out`.
struct TlsClient {
    conn: rustls::ClientConnection,
    cipher: Box<[u8]>,
    start: usize,
    end: usize,
    out: Vec<u8>,
}

impl TlsClient {
    fn new(conn: rustls::ClientConnection) -> TlsClient {
        TlsClient {
            conn,
            cipher: vec![0; TLS_READ_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            out: Vec::new(),
        }
    }

    /// Reads more ciphertext (once all before it was fed); EOF is an error.
    async fn read_more(&mut self, stream: &SharedStream) -> Result<(), Error> {
        let n = stream.read(&mut self.cipher).await?;
        if n == 0 {
            return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        (self.start, self.end) = (0, n);
        Ok(())
    }

    /// Feeds rustls the ciphertext it can take and processes it.
    fn feed(&mut self) -> Result<(), Error> {
        while self.start < self.end {
            let mut rest = &self.cipher[self.start..self.end];
            match self.conn.read_tls(&mut rest) {
                Ok(0) => {
                    // After the server's close_notify: the rest is ignored.
                    self.start = self.end;
                }
                Ok(n) => self.start += n,
                // Its plaintext buffer is full: the rest waits until it is read.
                Err(e) if e.kind() == io::ErrorKind::Other => break,
                Err(e) => return Err(Error::Io(e)),
            }
            self.conn
                .process_new_packets()
                .map_err(|e| Error::Protocol(format!("TLS: {e}")))?;
        }
        Ok(())
    }

    /// Writes every record rustls has to send.
    async fn flush(&mut self, stream: &SharedStream) -> Result<(), Error> {
        self.out.clear();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.out)?;
        }
        if !self.out.is_empty() {
            stream.write_all(&self.out).await?;
        }
        Ok(())
    }
}

/// The TLS client settings of a run: rustls with ring, trusting the CA
/// certificates (PEM) in `ca`; no client certificate. The server's provider: ring,
/// without post-quantum key exchange.
#[allow(deprecated, reason = "ring's provider, as the engine's")]
pub fn tls_client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let bad = |e: &dyn std::fmt::Display| Error::Args(format!("{}: {e}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(Error::Args(format!(
            "{}: no CERTIFICATE in it",
            ca.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client nonce: not secret for a load generator, only distinct per connection.
pub(crate) fn nonce(seed: u64) -> auth::Nonce {
    let mut out = [0u8; 32];
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15 ^ wall_clock_ms();
    for chunk in out.chunks_mut(8) {
        // splitmix64
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use conduit::__rt::{choose, RtThread, ThreadSpec};
    use conduit::Runtime;
    use conduit_protocol::{Codec, FrameKind};

    use super::*;
    use crate::payload;
    use crate::serve::{self, ServeOptions};

    /// Logs in with each codec over `transport` on each client backend this machine
    /// has, and checks RPC calls sent several frames per write come back right.
    fn log_in_and_call(
        addr: std::net::SocketAddr,
        transport: Transport,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) {
        for runtime in [Runtime::Glommio, Runtime::Tokio] {
            let Ok((backend, _)) = choose(runtime, 1) else {
                continue;
            };
            let spec = ThreadSpec {
                name: "wire-client".into(),
                cpu: None,
                preempt_timer: Duration::from_millis(10),
                io_memory: 1 << 20,
                ring_depth: 64,
            };
            let tls = tls.clone();
            let out = RtThread::start(backend, spec, move || async move {
                for codec in [Codec::Native, Codec::V1] {
                    let spec = ConnectSpec {
                        addr,
                        transport,
                        tls: tls.clone(),
                        codec,
                        password: "pw".into(),
                        attempts: 3,
                        connect_timeout: Duration::from_secs(5),
                    };
                    let mut c = Conn::open(&spec, 1).await?;
                    let mut out = Vec::new();
                    for corr in 1..=3 {
                        out.extend_from_slice(&payload::add_request(codec, corr, 40, corr as i64)?);
                    }
                    c.send(&out).await?;
                    let mut got = Vec::new();
                    while got.len() < 3 {
                        c.fill().await?;
                        while let Some(f) = c.decoder.next_frame()? {
                            if f.header.kind == FrameKind::RpcResponse {
                                got.push(payload::rpc_result(codec, &f.header, f.payload)?);
                            }
                        }
                    }
                    assert_eq!(got, [Some(41), Some(42), Some(43)], "{codec:?}");
                }
                Ok::<_, Error>(())
            })
            .unwrap()
            .join()
            .unwrap();
            out.unwrap_or_else(|e| panic!("{runtime:?} {transport:?}: {e}"));
        }
    }

    fn options() -> ServeOptions {
        ServeOptions {
            host: "127.0.0.1".into(),
            port: 0,
            websocket_port: None,
            tls: None,
            shards: 1,
            heartbeat: Duration::from_secs(30),
            password: "pw".into(),
            cpus: Vec::new(),
            stop_on_stdin_eof: false,
            recv_buffer_bytes: None,
            runtime: Runtime::Auto,
            login: serve::LoginSettings::default(),
            cluster: None,
            metrics_addr: None,
        }
    }

    /// Over WebSocket: the upgrade, the login in both codecs, and RPC calls.
    #[test]
    fn websocket_connections_log_in_and_call_on_both_backends() {
        let server = serve::build(&ServeOptions {
            websocket_port: Some(0),
            ..options()
        })
        .unwrap();
        let running = server.start().unwrap();
        let addr = server
            .router()
            .websocket_addr()
            .expect("a WebSocket listener");
        log_in_and_call(addr, Transport::WebSocket, None);
        server.stop();
        running.wait().unwrap();
    }

    /// Over TLS, with a self-signed certificate for 127.0.0.1 the clients trust: the
    /// handshake, the login in both codecs, and RPC calls.
    #[test]
    fn tls_connections_log_in_and_call_on_both_backends() {
        let dir = std::env::temp_dir().join(format!("conduit-loadgen-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
        let server = serve::build(&ServeOptions {
            tls: Some((cert.clone(), key)),
            ..options()
        })
        .unwrap();
        let running = server.start().unwrap();
        let addr = server.router().local_addr().expect("a TCP listener");
        log_in_and_call(
            addr,
            Transport::Tls,
            Some(tls_client_config(&cert).unwrap()),
        );
        server.stop();
        running.wait().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
