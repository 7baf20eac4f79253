//! `ServerDescriptor`: every setting of a server, with netconduit's fields and defaults
//! plus the limits a thread-per-core engine needs. Every limit is named here.

pub(crate) mod cluster;
mod password;

pub use password::Password;

use std::time::Duration;

use ipnet::IpNet;

use crate::error::Error;

/// What to do with a connection whose outbound queue passes its byte limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowConsumerPolicy {
    /// Close it with a reason; counted and logged. Nothing else slows down.
    #[default]
    Disconnect,
    /// Drop the frame that did not fit and keep the connection (for feeds where the
    /// latest state matters more than every update).
    DropNewest,
}

/// What a frame over a connection's inbound rate limits gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RateLimitPolicy {
    /// An RPC call is answered with code 4290 ("rate limit exceeded"); a message is
    /// dropped (counted). The connection stays.
    #[default]
    Reject,
    /// The connection is closed with the reason "rate limit exceeded".
    Close,
}

/// Which runtime drives the shards (and a client's executor thread).
///
/// Both backends run the same connection core with the same task structure: one
/// pinned thread per shard, one reader and one writer task per connection, gathered
/// writes. They differ in how the thread waits for I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Runtime {
    /// glommio where io_uring works and the locked-memory limit suffices, otherwise
    /// tokio; the log says which and why. If glommio passes the check but a shard
    /// fails to start on it, the whole server starts on tokio instead.
    #[default]
    Auto,
    /// glommio (io_uring). Fails to start, saying what to change, where io_uring is
    /// refused (Docker's default seccomp profile, `io_uring_disabled`) or locked memory
    /// is too low.
    Glommio,
    /// tokio (epoll): a current-thread runtime with a `LocalSet` per shard. Runs in
    /// default containers; handlers may call tokio-based libraries directly.
    Tokio,
}

impl Runtime {
    /// The name used in logs and settings: `auto`, `glommio` or `tokio`.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Auto => "auto",
            Runtime::Glommio => "glommio",
            Runtime::Tokio => "tokio",
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Runtime {
    type Err = String;

    fn from_str(s: &str) -> Result<Runtime, String> {
        match s {
            "auto" => Ok(Runtime::Auto),
            "glommio" => Ok(Runtime::Glommio),
            "tokio" => Ok(Runtime::Tokio),
            other => Err(format!(
                "unknown runtime {other:?} (expected auto, glommio or tokio)"
            )),
        }
    }
}

/// Configuration of a [`Server`](crate::Server), named as in netconduit's
/// `ServerDescriptor` where netconduit has the setting.
///
/// ```
/// use conduit::ServerDescriptor;
/// let d = ServerDescriptor::new("secret").port(0).name("ChatServer");
/// assert_eq!(d.host, "0.0.0.0");
/// assert_eq!(d.max_connections, 1000);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerDescriptor {
    /// IP address to bind to. Default `"0.0.0.0"`.
    pub host: String,
    /// Port to listen on; 0 picks a free one (see [`Router::port`](crate::Router::port)).
    /// Default 8080.
    pub port: u16,
    /// The password clients must prove. Required, non-empty. Never printed (its
    /// `Debug` is `"***"`).
    pub password: Password,
    /// Time a new connection has to authenticate before it is closed. Default 30 s.
    pub auth_timeout: Duration,
    /// Most connections at once, across all shards (authenticating ones included).
    /// Connection N+1 is refused with a reason. Default 1000.
    pub max_connections: usize,
    /// Socket send and receive buffer size in bytes (SO_SNDBUF / SO_RCVBUF).
    /// Default 65536.
    pub buffer_size: usize,
    /// A connection idle this long is pinged. Default 30 s.
    pub heartbeat_interval: Duration,
    /// A connection silent this long is closed. Must exceed the interval. Default 90 s.
    pub heartbeat_timeout: Duration,
    /// Server identifier, sent to clients at login. Default `"Server"`.
    pub name: String,
    /// Number of shards (one pinned executor each). Default: the CPUs this process may
    /// run on, clamped to its cgroup's CPU quota.
    pub shards: usize,
    /// Largest frame payload accepted, in bytes; checked before any buffer grows.
    /// Default 1 MiB.
    pub max_frame_bytes: u32,
    /// Largest frame payload accepted before a connection has logged in (only
    /// authentication frames may arrive then, and they are small), so an
    /// unauthenticated peer cannot make the server reserve `max_frame_bytes`. The
    /// smaller of this and `max_frame_bytes` applies. Default 4096.
    pub max_auth_frame_bytes: u32,
    /// Receive buffer a connection reads into, in bytes: the most one read takes
    /// (a frame larger than it grows the buffer, up to `max_frame_bytes`). Held only
    /// while a frame is partial: an idle TCP or WebSocket connection gives it back to
    /// its shard and waits with none (TLS connections keep theirs). Default 4096.
    pub recv_buffer_bytes: usize,
    /// Bytes a connection may have waiting to be sent (queued, or taken by its writer
    /// and not yet accepted by the kernel) before it is a slow consumer.
    /// Default 4 MiB.
    pub max_outbound_bytes: usize,
    /// What happens to a slow consumer. Default: disconnect.
    pub slow_consumer: SlowConsumerPolicy,
    /// Most bytes one vectored write gathers. Default 256 KiB.
    pub max_write_batch_bytes: usize,
    /// On stop, how long queued frames may take to flush before sockets close.
    /// Default 5 s.
    pub drain_timeout: Duration,
    /// Accept netconduit-v1 (MessagePack) clients. Default true.
    pub allow_v1: bool,
    /// Accept native (rkyv) clients. Default true.
    pub allow_native: bool,
    /// Pause after a wrong password before the failure is sent and the socket closed
    /// (brute-force brake). Default 200 ms.
    pub auth_failure_delay: Duration,
    /// netconduit-v1 only: after AUTH_SUCCESS, other frames (a welcome from the connect
    /// hook, broadcasts) are held until the client sends its first frame — proof that it
    /// has read AUTH_SUCCESS — or at most this long. The stock netconduit client drops
    /// frames that arrive in the same read as AUTH_SUCCESS; a busy client can take tens
    /// of milliseconds to read it. Zero disables the hold. Default 250 ms.
    pub v1_post_auth_delay: Duration,
    /// Deepest nesting accepted in a payload. Default 64, at most
    /// [`MAX_PAYLOAD_DEPTH`].
    pub max_payload_depth: usize,
    /// Most values in one payload. Default 262 144.
    pub max_payload_values: usize,
    /// Capacity of each shard's inbound bus channel (broadcasts, sends and kicks from
    /// other shards or threads), in entries: one request, or the requests one shard
    /// thread sent it in a row, at most [`BUS_BATCH_MESSAGES`]; batched requests on a
    /// bus are also at most this many. Default 4096.
    pub bus_capacity: usize,
    /// Most connections being refused at once (each gets a reason frame if it speaks
    /// within the auth timeout); beyond it, excess connections are closed at once.
    /// Default 64.
    pub max_refusals_in_flight: usize,
    /// Scheduler time slice of each shard; heartbeats and I/O are never held up by a
    /// busy task for longer. Default 10 ms. (glommio's preemption timer; on tokio the
    /// runtime's cooperative budget plays this part.)
    pub preempt_timer: Duration,
    /// The runtime backend of the shards. Default [`Runtime::Auto`]: glommio where
    /// io_uring works, else tokio (the log says which and why).
    pub runtime: Runtime,
    /// Connections the kernel holds for the server before it accepts them (the
    /// `listen` backlog; the kernel caps it at `net.core.somaxconn`). Default 1024.
    pub listen_backlog: u32,
    /// Most rooms that may exist at once (a room exists while it has members); a join
    /// that would make one more is refused, joins to existing rooms are not. Default
    /// 10 000.
    pub max_rooms: usize,
    /// Most rooms one connection may be in, so one connection cannot use up
    /// `max_rooms`. Default 64.
    pub max_rooms_per_connection: usize,
    /// Longest room name, in bytes (names are UTF-8 with no control characters).
    /// Default 128.
    pub max_room_name_bytes: usize,
    /// Scale-out: this server as one node of a cluster sharing broadcasts, rooms and
    /// sends by id through Redis or NATS (see [`crate::cluster`]). Default `None`: a
    /// standalone server.
    pub cluster: Option<cluster::ClusterDescriptor>,
    /// Token logins (signed, expiring JWTs) besides — or instead of — the password
    /// (see [`crate::tokens`]). Default `None`: the password only.
    pub tokens: Option<crate::tokens::TokenAuth>,
    /// A WebSocket listener for browsers, besides the TCP one (see [`crate::ws`]).
    /// Default `None`.
    pub websocket: Option<crate::ws::WebSocketSettings>,
    /// TLS on the TCP listener and on the WebSocket one, if any (see [`crate::tls`]).
    /// Its PEM files are read by [`Server::new`](crate::Server::new). Default `None`:
    /// plain TCP.
    pub tls: Option<crate::tls::TlsSettings>,
    /// Time a new connection has to complete its TLS handshake, counted from accept
    /// (past a PROXY header); the smaller of this and `auth_timeout` applies. While
    /// handshaking it counts as logging in (`max_pending`, `max_pending_per_source`).
    /// Default 10 s.
    pub tls_handshake_timeout: Duration,
    /// Most connections logging in at once (accepted, not yet authenticated), so the
    /// rest of `max_connections` is kept for authenticated clients. Default 256.
    pub max_pending: usize,
    /// Most connections logging in at once from one source address (one IPv6 /64),
    /// so one address cannot hold the login budget: beyond it, its new connections are
    /// refused with a reason. Default 16.
    pub max_pending_per_source: usize,
    /// Failed logins one source address (one IPv6 /64) may make before it is kept
    /// out; each further failure doubles its wait, from `auth_backoff_base` up to
    /// `auth_backoff_max`. Counted however the peer leaves (giving up early during the
    /// `auth_failure_delay` does not avoid it). Default 5.
    pub max_auth_failures_per_source: u32,
    /// First wait after `max_auth_failures_per_source`. Default 1 s.
    pub auth_backoff_base: Duration,
    /// Longest wait. Default 5 min.
    pub auth_backoff_max: Duration,
    /// Most calls and messages per second one connection may send after login (the
    /// bucket holds one second's worth, so a burst of this many passes at once; pings
    /// and pongs are not counted). Default off.
    pub max_inbound_frames_per_s: Option<u32>,
    /// Most payload bytes of calls and messages per second one connection may send
    /// after login (one larger than this never passes). Default off.
    pub max_inbound_bytes_per_s: Option<u64>,
    /// What a frame over those limits gets. Default [`RateLimitPolicy::Reject`].
    pub inbound_rate_policy: RateLimitPolicy,
    /// Proxies whose PROXY protocol header (v1 text or v2 binary) is trusted. A
    /// connection from an address in one of these networks must start with a header,
    /// read before anything else within `proxy_header_timeout`; the client address it
    /// carries (TCP over IPv4 or IPv6) is the connection's source from then on: for
    /// `max_pending_per_source`, the failed-login budget and
    /// [`Connection::peer_addr`](crate::Connection::peer_addr). A header that carries
    /// none (`LOCAL` or `UNKNOWN`, as health checks send) leaves the proxy's own
    /// address. A missing, malformed, oversized (v1 over 107 bytes, v2 over
    /// [`MAX_PROXY_V2_HEADER_BYTES`]) or late header closes the connection. At most
    /// `max_pending` headers are read at once; a connection beyond that is closed at
    /// once. Connections from any other address are served as usual, and a PROXY
    /// header from one is bad input like any other. Networks are written without host
    /// bits (`10.0.0.0/8`, `192.0.2.7/32`, `2001:db8::/32`). Default empty: no header
    /// is trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// Time a connection from a trusted proxy has to send its whole PROXY header,
    /// counted from accept (its `auth_timeout` counts from then on). The smaller of this
    /// and `auth_timeout` applies. Default 5 s.
    pub proxy_header_timeout: Duration,
    /// Where the Prometheus exporter serves `GET /metrics` (the `prometheus` feature),
    /// on its own listener, apart from the clients' port. `None` (the default): no
    /// listener. Bind it to loopback ([`DEFAULT_METRICS_ADDR`]) or a private network:
    /// the figures say how many players are on and what fails, which is not for the
    /// public internet. A server built without the `prometheus` feature refuses to
    /// start with this set.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// The conventional Prometheus exporter address: loopback, the port commonly used
/// by exporters of this kind.
pub const DEFAULT_METRICS_ADDR: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);

/// The highest `max_payload_depth` a server accepts. Decoding, dropping and re-encoding
/// a payload recurse once per level on the shard's stack (2 MiB): an unoptimised build
/// overflowed it, aborting the process, at about 300 levels of an echoed message, so
/// the limit stays well below that.
pub const MAX_PAYLOAD_DEPTH: usize = 128;

/// Most requests (broadcasts, sends, kicks, room changes) one shard thread hands
/// another shard's bus as one entry (fewer when `bus_capacity` is smaller): what its
/// tasks send that shard while they run (a burst of broadcasts from one read, say)
/// crosses together, and a task that finds this many queued waits until they are
/// taken for the bus.
pub const BUS_BATCH_MESSAGES: usize = 256;

/// The longest PROXY protocol v2 header accepted from a trusted proxy, in bytes: the
/// 16-byte fixed part and up to 2032 bytes of addresses and TLVs (a pair of Unix socket
/// paths takes 216; the TLVs proxies add — ALPN, authority, TLS details, a cloud
/// endpoint's id — take tens to a few hundred). A v1 header is at most 107 bytes, as
/// its specification says.
pub const MAX_PROXY_V2_HEADER_BYTES: usize = 2048;

impl ServerDescriptor {
    /// A descriptor with every default and the given password.
    pub fn new(password: impl Into<String>) -> ServerDescriptor {
        ServerDescriptor {
            host: "0.0.0.0".to_owned(),
            port: 8080,
            password: Password::from(password.into()),
            auth_timeout: Duration::from_secs(30),
            max_connections: 1000,
            buffer_size: 65536,
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(90),
            name: "Server".to_owned(),
            shards: default_shards(),
            max_frame_bytes: 1024 * 1024,
            max_auth_frame_bytes: 4096,
            recv_buffer_bytes: 4096,
            max_outbound_bytes: 4 * 1024 * 1024,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            max_write_batch_bytes: 256 * 1024,
            drain_timeout: Duration::from_secs(5),
            allow_v1: true,
            allow_native: true,
            auth_failure_delay: Duration::from_millis(200),
            v1_post_auth_delay: Duration::from_millis(250),
            max_payload_depth: 64,
            max_payload_values: 262_144,
            bus_capacity: 4096,
            max_refusals_in_flight: 64,
            preempt_timer: Duration::from_millis(10),
            runtime: Runtime::Auto,
            listen_backlog: 1024,
            max_rooms: 10_000,
            max_rooms_per_connection: 64,
            max_room_name_bytes: 128,
            cluster: None,
            tokens: None,
            websocket: None,
            tls: None,
            tls_handshake_timeout: Duration::from_secs(10),
            max_pending: 256,
            max_pending_per_source: 16,
            max_auth_failures_per_source: 5,
            auth_backoff_base: Duration::from_secs(1),
            auth_backoff_max: Duration::from_secs(300),
            max_inbound_frames_per_s: None,
            max_inbound_bytes_per_s: None,
            inbound_rate_policy: RateLimitPolicy::Reject,
            trusted_proxies: Vec::new(),
            proxy_header_timeout: Duration::from_secs(5),
            metrics_addr: None,
        }
    }

    /// Sets `host`.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }
    /// Sets `port`.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    /// Sets `name`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// Sets `auth_timeout`.
    pub fn auth_timeout(mut self, d: Duration) -> Self {
        self.auth_timeout = d;
        self
    }
    /// Sets `max_connections`.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }
    /// Sets `buffer_size`.
    pub fn buffer_size(mut self, n: usize) -> Self {
        self.buffer_size = n;
        self
    }
    /// Sets `heartbeat_interval` and `heartbeat_timeout`.
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.heartbeat_interval = interval;
        self.heartbeat_timeout = timeout;
        self
    }
    /// Also listens for WebSocket connections (see [`crate::ws`]).
    pub fn websocket(mut self, settings: crate::ws::WebSocketSettings) -> Self {
        self.websocket = Some(settings);
        self
    }

    /// Speaks TLS on every listener (see [`crate::tls`]).
    pub fn tls(mut self, settings: crate::tls::TlsSettings) -> Self {
        self.tls = Some(settings);
        self
    }

    /// Sets `tls_handshake_timeout`.
    pub fn tls_handshake_timeout(mut self, d: Duration) -> Self {
        self.tls_handshake_timeout = d;
        self
    }

    /// Takes token logins (see [`crate::tokens`]).
    pub fn tokens(mut self, tokens: crate::tokens::TokenAuth) -> Self {
        self.tokens = Some(tokens);
        self
    }
    /// Makes this server a node of a cluster (see [`crate::cluster`]).
    pub fn cluster(mut self, cluster: cluster::ClusterDescriptor) -> Self {
        self.cluster = Some(cluster);
        self
    }
    /// Sets `runtime`.
    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.runtime = runtime;
        self
    }
    /// Sets `shards`.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n;
        self
    }
    /// Sets `max_frame_bytes`.
    pub fn max_frame_bytes(mut self, n: u32) -> Self {
        self.max_frame_bytes = n;
        self
    }
    /// Sets `max_outbound_bytes`.
    pub fn max_outbound_bytes(mut self, n: usize) -> Self {
        self.max_outbound_bytes = n;
        self
    }
    /// Sets `slow_consumer`.
    pub fn slow_consumer(mut self, p: SlowConsumerPolicy) -> Self {
        self.slow_consumer = p;
        self
    }
    /// Sets `drain_timeout`.
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain_timeout = d;
        self
    }
    /// Sets `auth_failure_delay`.
    pub fn auth_failure_delay(mut self, d: Duration) -> Self {
        self.auth_failure_delay = d;
        self
    }
    /// Sets `allow_v1`.
    pub fn allow_v1(mut self, yes: bool) -> Self {
        self.allow_v1 = yes;
        self
    }
    /// Sets `allow_native`.
    pub fn allow_native(mut self, yes: bool) -> Self {
        self.allow_native = yes;
        self
    }
    /// Sets `trusted_proxies`.
    ///
    /// ```
    /// use conduit::{IpNet, ServerDescriptor};
    /// let lb: IpNet = "10.0.0.0/8".parse().unwrap();
    /// let d = ServerDescriptor::new("secret").trusted_proxies([lb]);
    /// assert!(d.validate().is_ok());
    /// ```
    pub fn trusted_proxies(mut self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted_proxies = nets.into_iter().collect();
        self
    }
    /// Serves Prometheus metrics on `addr` (see `metrics_addr`).
    pub fn metrics_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.metrics_addr = Some(addr);
        self
    }
    /// Sets `proxy_header_timeout`.
    pub fn proxy_header_timeout(mut self, d: Duration) -> Self {
        self.proxy_header_timeout = d;
        self
    }

    /// Checks every field; the first problem found is returned as
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &'static str, problem: String| Err(Error::Config { field, problem });
        #[cfg(not(feature = "prometheus"))]
        if self.metrics_addr.is_some() {
            return bad(
                "metrics_addr",
                "this build has no Prometheus exporter (cargo feature `prometheus`)".into(),
            );
        }
        let tokens_only = self.tokens.as_ref().is_some_and(|t| !t.allow_password);
        if self.password.is_empty() && !tokens_only {
            return bad(
                "password",
                "must not be empty (unless tokens are the only way in)".into(),
            );
        }
        if self.host.parse::<std::net::IpAddr>().is_err() {
            return bad("host", format!("{:?} is not an IP address", self.host));
        }
        if self.auth_timeout.is_zero() {
            return bad("auth_timeout", "must be greater than zero".into());
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1".into());
        }
        if self.buffer_size < 1024 {
            return bad(
                "buffer_size",
                format!("{} is below 1024 bytes", self.buffer_size),
            );
        }
        if self.heartbeat_interval.is_zero() {
            return bad("heartbeat_interval", "must be greater than zero".into());
        }
        if self.heartbeat_timeout <= self.heartbeat_interval {
            return bad(
                "heartbeat_timeout",
                format!(
                    "{:?} must exceed heartbeat_interval {:?}",
                    self.heartbeat_timeout, self.heartbeat_interval
                ),
            );
        }
        if self.shards == 0 {
            return bad("shards", "must be at least 1".into());
        }
        if self.shards > crate::id::MAX_SHARDS {
            return bad(
                "shards",
                format!(
                    "{} exceeds the maximum of {}",
                    self.shards,
                    crate::id::MAX_SHARDS
                ),
            );
        }
        if self.max_frame_bytes < 64 {
            return bad("max_frame_bytes", "must be at least 64".into());
        }
        if self.max_auth_frame_bytes < 256 {
            return bad(
                "max_auth_frame_bytes",
                "must be at least 256 (an authentication frame must fit)".into(),
            );
        }
        if self.recv_buffer_bytes < 64 {
            return bad("recv_buffer_bytes", "must be at least 64".into());
        }
        if self.max_outbound_bytes < self.max_frame_bytes as usize {
            return bad(
                "max_outbound_bytes",
                "must hold at least one frame of max_frame_bytes".into(),
            );
        }
        if self.max_write_batch_bytes == 0 {
            return bad("max_write_batch_bytes", "must be greater than zero".into());
        }
        if !self.allow_v1 && !self.allow_native {
            return bad("allow_v1", "at least one codec must be allowed".into());
        }
        if self.max_payload_depth == 0 || self.max_payload_values == 0 {
            return bad(
                "max_payload_depth",
                "payload limits must be at least 1".into(),
            );
        }
        if self.max_payload_depth > MAX_PAYLOAD_DEPTH {
            return bad(
                "max_payload_depth",
                format!(
                    "{} exceeds {MAX_PAYLOAD_DEPTH} (deeper payloads would risk the shard's stack)",
                    self.max_payload_depth
                ),
            );
        }
        if self.bus_capacity == 0 {
            return bad("bus_capacity", "must be at least 1".into());
        }
        if self.preempt_timer.is_zero() || self.preempt_timer > Duration::from_millis(100) {
            return bad("preempt_timer", "must be between 0 and 100 ms".into());
        }
        if self.listen_backlog == 0 || self.listen_backlog > i32::MAX as u32 {
            return bad("listen_backlog", "must be between 1 and 2^31 - 1".into());
        }
        if self.max_rooms == 0 {
            return bad("max_rooms", "must be at least 1".into());
        }
        if self.max_rooms_per_connection == 0 || self.max_rooms_per_connection > self.max_rooms {
            return bad(
                "max_rooms_per_connection",
                "must be between 1 and max_rooms".into(),
            );
        }
        if self.max_room_name_bytes == 0 || self.max_room_name_bytes > 4096 {
            return bad("max_room_name_bytes", "must be between 1 and 4096".into());
        }
        if self.auth_backoff_base.is_zero() || self.auth_backoff_base > self.auth_backoff_max {
            return bad(
                "auth_backoff_base",
                "must be above zero and at most auth_backoff_max".into(),
            );
        }
        if self.max_inbound_frames_per_s == Some(0) {
            return bad(
                "max_inbound_frames_per_s",
                "must be above zero (None turns it off)".into(),
            );
        }
        if self.max_inbound_bytes_per_s == Some(0) {
            return bad(
                "max_inbound_bytes_per_s",
                "must be above zero (None turns it off)".into(),
            );
        }
        if self.max_pending == 0 {
            return bad("max_pending", "must be at least 1".into());
        }
        if self.max_pending_per_source == 0 || self.max_pending_per_source > self.max_pending {
            return bad(
                "max_pending_per_source",
                "must be between 1 and max_pending".into(),
            );
        }
        if self.proxy_header_timeout.is_zero() {
            return bad("proxy_header_timeout", "must be greater than zero".into());
        }
        if let Some(net) = self.trusted_proxies.iter().find(|n| **n != n.trunc()) {
            return bad(
                "trusted_proxies",
                format!(
                    "{net} has host bits set: write {} (or a /{} for one address)",
                    net.trunc(),
                    net.max_prefix_len()
                ),
            );
        }
        if let Some(c) = &self.cluster {
            c.validate()?;
        }
        if let Some(t) = &self.tokens {
            t.validate()?;
        }
        if let Some(w) = &self.websocket {
            w.validate()?;
        }
        if self.tls_handshake_timeout.is_zero() {
            return bad("tls_handshake_timeout", "must be greater than zero".into());
        }
        Ok(())
    }

    /// Whether a connection from `ip` comes through a trusted proxy (an IPv4 address
    /// seen as IPv4-mapped IPv6 on a dual-stack socket counts as IPv4).
    pub(crate) fn is_trusted_proxy(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// The number of CPUs this process may use: its affinity mask, clamped to its cgroup's
/// CPU quota (a container limited to 2 CPUs on a 64-core node runs 2 shards); at least 1.
pub fn default_shards() -> usize {
    let cpus = allowed_cpus().len().max(1);
    crate::host::cgroup_cpu_limit().map_or(cpus, |quota| quota.clamp(1, cpus))
}

/// The CPUs this process may run on, from its affinity mask.
pub fn allowed_cpus() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_else(|| vec![0])
}

#[cfg(test)]
mod tests;
