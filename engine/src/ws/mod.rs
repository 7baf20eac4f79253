//! The WebSocket transport: browsers connect to a listener of its own and speak the
//! same protocol, one frame per binary WebSocket message. After the upgrade a
//! WebSocket connection is served like a TCP one — same login, heartbeat, limits,
//! rooms and broadcasts (a broadcast reaches both transports, encoded once per codec;
//! the WebSocket header is added per connection on the way out).
//!
//! Before login a WebSocket connection holds a `max_connections` slot and counts as
//! logging in (`max_pending`, `max_pending_per_source`) from its TCP accept on; the
//! upgrade request must arrive within `upgrade_timeout` and fit
//! `max_upgrade_request_bytes`, and an `Origin` outside `allowed_origins` is refused
//! (403), so a page on another site cannot open connections with its visitors'
//! browsers. Behind a load balancer listed in `trusted_proxies`, the rightmost
//! `X-Forwarded-For` address of the upgrade request is the client's (its login budget
//! and `peer_addr`); the header is ignored from anyone else.
//!
//! With [`ServerDescriptor::tls`](crate::ServerDescriptor::tls) the listener speaks
//! `wss://`: the TLS handshake first, then the upgrade and the WebSocket framing inside
//! TLS (see [`crate::tls`]).

pub(crate) mod frame;
pub(crate) mod upgrade;

use std::time::Duration;

/// The WebSocket listener ([`ServerDescriptor::websocket`](crate::ServerDescriptor::websocket)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebSocketSettings {
    /// Port of the WebSocket listener (on the server's `host`); 0 picks a free one
    /// ([`Router::websocket_addr`](crate::Router::websocket_addr) tells which).
    pub port: u16,
    /// The path clients open (`ws://host:port/conduit`); other paths get 404. Default
    /// `"/conduit"`.
    pub path: String,
    /// `Origin`s allowed to connect (`"https://game.example"`, compared without case);
    /// requests without an `Origin` (not from a browser) are not affected. `None`:
    /// every origin. Default `None`; set it for a public server.
    pub allowed_origins: Option<Vec<String>>,
    /// Largest upgrade request head, in bytes; larger is refused (431). Default 8 KiB.
    pub max_upgrade_request_bytes: usize,
    /// Time a new connection has to send its whole upgrade request (within
    /// `auth_timeout` either way). Default 5 s.
    pub upgrade_timeout: Duration,
}

impl WebSocketSettings {
    /// A WebSocket listener on `port`, path `/conduit`, default limits.
    pub fn new(port: u16) -> WebSocketSettings {
        WebSocketSettings {
            port,
            path: "/conduit".into(),
            allowed_origins: None,
            max_upgrade_request_bytes: 8 * 1024,
            upgrade_timeout: Duration::from_secs(5),
        }
    }

    /// Sets the path.
    pub fn path(mut self, path: impl Into<String>) -> WebSocketSettings {
        self.path = path.into();
        self
    }

    /// Allows only these origins.
    pub fn allowed_origins<S: Into<String>>(
        mut self,
        origins: impl IntoIterator<Item = S>,
    ) -> WebSocketSettings {
        self.allowed_origins = Some(origins.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the upgrade timeout.
    pub fn upgrade_timeout(mut self, timeout: Duration) -> WebSocketSettings {
        self.upgrade_timeout = timeout;
        self
    }

    /// Checks the fields; the error names the first bad one.
    pub(crate) fn validate(&self) -> Result<(), crate::Error> {
        let bad = |problem: String| {
            Err(crate::Error::Config {
                field: "websocket",
                problem,
            })
        };
        if !self.path.starts_with('/') || self.path.contains('?') {
            return bad(format!(
                "path {:?} must start with / and have no query",
                self.path
            ));
        }
        if self.max_upgrade_request_bytes < 256 {
            return bad("max_upgrade_request_bytes below 256".into());
        }
        if self.upgrade_timeout.is_zero() {
            return bad("upgrade_timeout must be above zero".into());
        }
        Ok(())
    }
}

/// How a connection reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Transport {
    /// Frames straight on TCP.
    #[default]
    Tcp,
    /// Frames in binary WebSocket messages (after the upgrade).
    WebSocket,
}
