//! `ClientDescriptor`: every client setting, with netconduit's defaults where netconduit
//! has the setting.

use std::time::Duration;

use conduit_protocol::Codec;

use super::error::ClientError;

/// How a client that lost its connection tries to get it back.
///
/// Delays grow exponentially from `initial_backoff` by `multiplier` up to `max_backoff`.
/// With `jitter` ("full jitter"), each delay is drawn uniformly from zero to that value,
/// so a thousand clients cut off by one server restart do not all knock at the same
/// instant.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconnectPolicy {
    /// Reconnect automatically after losing an established connection. Default true
    /// (netconduit's `reconnect_enabled`).
    pub enabled: bool,
    /// Ceiling of the first delay. Default 100 ms.
    pub initial_backoff: Duration,
    /// Largest delay between two attempts. Default 10 s.
    pub max_backoff: Duration,
    /// Growth factor of the delay per attempt, at least 1. Default 2.
    pub multiplier: f64,
    /// Draw each delay uniformly from `0..=ceiling` ("full jitter"). Default true.
    pub jitter: bool,
    /// Give up after this many failed attempts; `None` retries forever. Default `None`.
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            enabled: true,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: true,
            max_attempts: None,
        }
    }
}

impl ReconnectPolicy {
    /// The delay ceiling before attempt `attempt` (1-based), before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let factor = self.multiplier.powi(exp);
        let secs = self.initial_backoff.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= self.max_backoff.as_secs_f64() {
            self.max_backoff
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The delay before attempt `attempt`, given a uniformly random `rand`.
    pub(crate) fn delay(&self, attempt: u32, rand: u64) -> Duration {
        let ceiling = self.ceiling(attempt);
        if !self.jitter {
            return ceiling;
        }
        // Uniform in 0..=ceiling at nanosecond resolution.
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(if nanos == u64::MAX {
            rand
        } else {
            rand % (nanos + 1)
        })
    }
}

/// Configuration of a [`Client`](super::Client).
///
/// ```
/// use std::time::Duration;
/// use conduit::{ClientDescriptor, Codec};
///
/// let d = ClientDescriptor::new("secret")
///     .host("127.0.0.1")
///     .port(9000)
///     .codec(Codec::V1) // to talk to a Python netconduit server
///     .rpc_timeout(Duration::from_secs(5));
/// assert_eq!(d.heartbeat_timeout, Duration::from_secs(90));
/// assert!(d.reconnect.enabled);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ClientDescriptor {
    /// Server host: an IP address or a name to resolve. Default `"127.0.0.1"`.
    pub host: String,
    /// Server port. Default 8080.
    pub port: u16,
    /// The shared password. Native logins prove it without sending it; v1 logins send
    /// its SHA-256, as netconduit does.
    pub password: crate::descriptor::Password,
    /// A signed token to log in with instead of the password (servers with
    /// [`ServerDescriptor::tokens`](crate::ServerDescriptor::tokens)). Never printed.
    pub token: Option<crate::descriptor::Password>,
    /// Wire codec. Default [`Codec::Native`]; use [`Codec::V1`] to talk to Python
    /// netconduit servers.
    pub codec: Codec,
    /// Bound on TCP connect plus login. Default 10 s.
    pub connect_timeout: Duration,
    /// How long [`call`](super::Client::call) and [`request`](super::Client::request)
    /// wait for their answer. Default 30 s (netconduit's `rpc_timeout`).
    pub rpc_timeout: Duration,
    /// The server is pinged when it has been silent this long. Default 30 s.
    pub heartbeat_interval: Duration,
    /// The connection is closed when the server has been silent this long; must exceed
    /// the interval. Default 90 s. Any frame from the server counts as life, the same
    /// rule the server applies to its clients.
    pub heartbeat_timeout: Duration,
    /// Automatic reconnection.
    pub reconnect: ReconnectPolicy,
    /// Largest frame payload accepted from the server (checked before any buffer grows)
    /// and sent to it. Default 16 MiB.
    pub max_frame_bytes: u32,
    /// Bytes that may wait to be written before senders wait for the socket
    /// (backpressure instead of unbounded memory). Default 4 MiB.
    pub max_outbound_bytes: usize,
    /// Client name sent at login (informational). Default `"conduit-client"`.
    pub name: String,
    /// Client version sent at login (informational). Default: this crate's version.
    pub version: String,
    /// The runtime of the executor thread a blocking client (or
    /// [`spawn_executor`](super::spawn_executor)) starts. Default [`Runtime::Auto`](crate::Runtime::Auto):
    /// glommio where io_uring works, else tokio. The async [`Client`](super::Client)
    /// runs on whatever thread it is used from.
    pub runtime: crate::rt::Runtime,
    /// TLS to the server (a server with
    /// [`ServerDescriptor::tls`](crate::ServerDescriptor::tls)). Default `None`:
    /// plain TCP.
    pub tls: Option<super::tls::ClientTls>,
}

impl Default for ClientDescriptor {
    fn default() -> Self {
        ClientDescriptor {
            host: "127.0.0.1".into(),
            port: 8080,
            password: crate::descriptor::Password::default(),
            token: None,
            tls: None,
            codec: Codec::Native,
            runtime: crate::rt::Runtime::Auto,
            connect_timeout: Duration::from_secs(10),
            rpc_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(90),
            reconnect: ReconnectPolicy::default(),
            max_frame_bytes: 16 * 1024 * 1024,
            max_outbound_bytes: 4 * 1024 * 1024,
            name: "conduit-client".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

impl ClientDescriptor {
    /// A descriptor with every default and the given password.
    pub fn new(password: impl Into<String>) -> ClientDescriptor {
        ClientDescriptor {
            password: password.into().into(),
            ..ClientDescriptor::default()
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

    /// Sets `host` and `port` from a socket address.
    pub fn addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.host = addr.ip().to_string();
        self.port = addr.port();
        self
    }

    /// Sets `password`.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = password.into().into();
        self
    }

    /// Logs in with `token` instead of the password.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into().into());
        self
    }

    /// Connects over TLS.
    pub fn tls(mut self, tls: super::tls::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets `runtime`.
    pub fn runtime(mut self, runtime: crate::rt::Runtime) -> Self {
        self.runtime = runtime;
        self
    }
    /// Sets `codec`.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Sets `connect_timeout`.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Sets `rpc_timeout`.
    pub fn rpc_timeout(mut self, d: Duration) -> Self {
        self.rpc_timeout = d;
        self
    }

    /// Sets `heartbeat_interval` and `heartbeat_timeout`.
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.heartbeat_interval = interval;
        self.heartbeat_timeout = timeout;
        self
    }

    /// Turns automatic reconnection on or off.
    pub fn reconnect(mut self, enabled: bool) -> Self {
        self.reconnect.enabled = enabled;
        self
    }

    /// Sets the whole reconnection policy.
    pub fn reconnect_policy(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Sets the first and the largest reconnection delay.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.reconnect.initial_backoff = initial;
        self.reconnect.max_backoff = max;
        self
    }

    /// Sets the growth factor of the reconnection delay.
    pub fn backoff_multiplier(mut self, multiplier: f64) -> Self {
        self.reconnect.multiplier = multiplier;
        self
    }

    /// Turns full jitter of reconnection delays on or off.
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.reconnect.jitter = jitter;
        self
    }

    /// Sets the most reconnection attempts (`None`: forever).
    pub fn max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.reconnect.max_attempts = attempts;
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

    /// Sets the client `name` sent at login.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the client `version` sent at login.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Checks every field; the first problem found is returned as
    /// [`ClientError::Config`] naming the field.
    pub fn validate(&self) -> Result<(), ClientError> {
        let bad =
            |field: &'static str, problem: String| Err(ClientError::Config { field, problem });
        if self.host.is_empty() {
            return bad("host", "must not be empty".into());
        }
        if let Some(tls) = &self.tls {
            if let Err(e) = rustls_pki_types::ServerName::try_from(tls.server_name.as_str()) {
                return bad("tls", format!("server_name {:?}: {e}", tls.server_name));
            }
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout", "must be greater than zero".into());
        }
        if self.rpc_timeout.is_zero() {
            return bad("rpc_timeout", "must be greater than zero".into());
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
        let r = &self.reconnect;
        if r.initial_backoff.is_zero() {
            return bad(
                "reconnect.initial_backoff",
                "must be greater than zero".into(),
            );
        }
        if r.max_backoff < r.initial_backoff {
            return bad(
                "reconnect.max_backoff",
                "must be at least initial_backoff".into(),
            );
        }
        if !r.multiplier.is_finite() || r.multiplier < 1.0 {
            return bad(
                "reconnect.multiplier",
                format!("{} is not a finite number of at least 1", r.multiplier),
            );
        }
        if self.max_frame_bytes < 64 {
            return bad("max_frame_bytes", "must be at least 64".into());
        }
        if self.max_outbound_bytes == 0 {
            return bad("max_outbound_bytes", "must be greater than zero".into());
        }
        if self.name.len() > 255 || self.version.len() > 255 {
            return bad("name", "name and version must be at most 255 bytes".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let d = ClientDescriptor::new("pw");
        assert_eq!(d.host, "127.0.0.1");
        assert_eq!(d.port, 8080);
        assert_eq!(d.codec, Codec::Native);
        assert_eq!(d.connect_timeout, Duration::from_secs(10));
        assert_eq!(d.rpc_timeout, Duration::from_secs(30));
        assert_eq!(d.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(d.heartbeat_timeout, Duration::from_secs(90));
        assert_eq!(d.reconnect, ReconnectPolicy::default());
        assert!(d.validate().is_ok());
    }

    #[test]
    fn invalid_fields_are_named() {
        let field = |d: ClientDescriptor| match d.validate() {
            Err(ClientError::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        let d = || ClientDescriptor::new("pw");
        assert_eq!(
            field(d().heartbeat(Duration::from_secs(5), Duration::from_secs(5))),
            "heartbeat_timeout"
        );
        assert_eq!(
            field(d().connect_timeout(Duration::ZERO)),
            "connect_timeout"
        );
        assert_eq!(
            field(d().backoff(Duration::from_secs(2), Duration::from_secs(1))),
            "reconnect.max_backoff"
        );
        assert_eq!(field(d().backoff_multiplier(0.5)), "reconnect.multiplier");
        assert_eq!(field(d().host("")), "host");
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let p = ReconnectPolicy::default();
        assert_eq!(p.ceiling(1), Duration::from_millis(100));
        assert_eq!(p.ceiling(2), Duration::from_millis(200));
        assert_eq!(p.ceiling(4), Duration::from_millis(800));
        assert_eq!(p.ceiling(8), Duration::from_secs(10));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(10));
        for r in [0, 1, 12345, u64::MAX] {
            assert!(p.delay(3, r) <= Duration::from_millis(400));
        }
        assert_eq!(p.delay(3, 0), Duration::ZERO);
        let fixed = ReconnectPolicy { jitter: false, ..p };
        assert_eq!(fixed.delay(3, 999), Duration::from_millis(400));
    }
}
