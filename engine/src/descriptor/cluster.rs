//! A server's place in a cluster: broker, cluster name, node id and the bounds of the
//! adapter (see [`crate::cluster`] for what the adapter does with them).

use std::path::PathBuf;
use std::time::Duration;

/// Smallest `max_payload_bytes`: room for a heartbeat and an answer.
const MIN_PAYLOAD_BYTES: usize = 1024;

/// The broker a cluster's nodes share. Its `Debug` shows the URL without credentials
/// ([`Broker::address`]), so a descriptor can be logged whole.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Broker {
    /// Redis (or Valkey) pub/sub at `url`: `redis://[user:password@]host:port[/db]`,
    /// or `rediss://…` for TLS. Needs the `redis` cargo feature.
    Redis {
        /// Where the broker is.
        url: String,
    },
    /// NATS at `url`: `nats://[user:password@]host:port` (several, comma-separated, for
    /// a NATS cluster), `tls://…` for TLS. Needs the `nats` cargo feature.
    Nats {
        /// Where the broker is.
        url: String,
    },
}

impl Broker {
    /// Redis pub/sub at `url`.
    pub fn redis(url: impl Into<String>) -> Broker {
        Broker::Redis { url: url.into() }
    }

    /// NATS at `url`.
    pub fn nats(url: impl Into<String>) -> Broker {
        Broker::Nats { url: url.into() }
    }

    /// `redis` or `nats`.
    pub fn kind(&self) -> &'static str {
        match self {
            Broker::Redis { .. } => "redis",
            Broker::Nats { .. } => "nats",
        }
    }

    /// The address without credentials, for logs and errors.
    pub fn address(&self) -> String {
        let url = match self {
            Broker::Redis { url } | Broker::Nats { url } => url,
        };
        url.split(',')
            .map(|u| match (u.find("://"), u.rfind('@')) {
                (Some(s), Some(at)) if at > s => format!("{}***@{}", &u[..s + 3], &u[at + 1..]),
                _ => u.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Broker::Redis { .. } => "Redis",
            Broker::Nats { .. } => "Nats",
        };
        f.debug_struct(name).field("url", &self.address()).finish()
    }
}

/// What `Server::start` does when the broker cannot be reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unreachable {
    /// Fail to start with [`ClusterError::Unreachable`](crate::cluster::ClusterError::Unreachable) (default): a node that cannot
    /// reach its cluster is usually a deployment mistake.
    #[default]
    Fail,
    /// Start serving local connections and keep trying to connect with backoff; the
    /// node joins the cluster once the broker answers.
    LocalOnly,
}

/// Credentials and TLS for the broker, beyond what the URL carries.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerAuth {
    /// User name (Redis ACL user, NATS user).
    pub user: Option<String>,
    /// Password for `user` (or Redis `requirepass` alone). Never printed.
    pub password: Option<String>,
    /// A NATS token.
    pub token: Option<String>,
    /// Require TLS (NATS; for Redis use a `rediss://` URL).
    pub tls_required: bool,
    /// PEM file of the CA that signed the broker's certificate, when it is not in the
    /// system's roots.
    pub tls_root_ca: Option<PathBuf>,
}

impl std::fmt::Debug for BrokerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerAuth")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("tls_required", &self.tls_required)
            .field("tls_root_ca", &self.tls_root_ca)
            .finish()
    }
}

/// A server's place in a cluster: which broker, which cluster, which node, and the
/// bounds of everything the adapter keeps and waits for.
///
/// ```no_run
/// # use conduit::{ServerDescriptor, cluster::{Broker, ClusterDescriptor}};
/// let desc = ServerDescriptor::new("secret")
///     .cluster(ClusterDescriptor::new(Broker::redis("redis://127.0.0.1:6379"), 1));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterDescriptor {
    /// The broker.
    pub broker: Broker,
    /// Credentials and TLS for it.
    pub auth: BrokerAuth,
    /// The cluster's name: the prefix of every channel, so two clusters on one broker
    /// never see each other. ASCII letters, digits, `-` and `_`, 1–64 bytes. Default
    /// `"conduit"`.
    pub cluster: String,
    /// This node's id, `0..1024`, unique within the cluster; carried in the ids of its
    /// connections so a send by id goes to its owner. A second node starting with an
    /// id in use fails with [`ClusterError::NodeIdInUse`](crate::cluster::ClusterError::NodeIdInUse).
    pub node: usize,
    /// What start does when the broker cannot be reached. Default
    /// [`Unreachable::Fail`].
    pub if_unreachable: Unreachable,
    /// How long one connection attempt may take. Default 5 s.
    pub connect_timeout: Duration,
    /// First wait before reconnecting after the broker went away; doubled per failed
    /// attempt up to `reconnect_max`. Default 100 ms.
    pub reconnect_min: Duration,
    /// Longest wait between reconnection attempts. Default 5 s.
    pub reconnect_max: Duration,
    /// How often this node tells the others it is alive (with its connection count).
    /// Default 1 s.
    pub node_heartbeat: Duration,
    /// A node not heard from for this long is taken for dead: it leaves
    /// [`Cluster::nodes`](crate::cluster::Cluster::nodes) and cluster-wide requests stop waiting for it. Default 5 s.
    pub node_timeout: Duration,
    /// How long start listens for another node with the same id before serving.
    /// Default 1 s (at least one `node_heartbeat` is wise).
    pub claim_wait: Duration,
    /// Largest message sent to the broker, in bytes; a broadcast or send over it fails
    /// at the sender with [`ClusterError::PayloadTooLarge`](crate::cluster::ClusterError::PayloadTooLarge) before anyone receives it.
    /// With NATS the server's own `max_payload` applies when smaller. Default 1 MiB
    /// (NATS's default limit).
    pub max_payload_bytes: usize,
    /// Messages that may wait for the broker connection; past it a message is not
    /// delivered (counted, logged) rather than held. Default 65,536.
    pub max_outbox_messages: usize,
}

impl ClusterDescriptor {
    /// Node `node` of the cluster named `"conduit"` on `broker`, with default bounds.
    pub fn new(broker: Broker, node: usize) -> ClusterDescriptor {
        ClusterDescriptor {
            broker,
            auth: BrokerAuth::default(),
            cluster: "conduit".into(),
            node,
            if_unreachable: Unreachable::Fail,
            connect_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            node_heartbeat: Duration::from_secs(1),
            node_timeout: Duration::from_secs(5),
            claim_wait: Duration::from_secs(1),
            max_payload_bytes: 1 << 20,
            max_outbox_messages: 65_536,
        }
    }

    /// Sets the cluster name (channel prefix).
    pub fn cluster_name(mut self, name: impl Into<String>) -> Self {
        self.cluster = name.into();
        self
    }

    /// Sets what start does when the broker cannot be reached.
    pub fn if_unreachable(mut self, policy: Unreachable) -> Self {
        self.if_unreachable = policy;
        self
    }

    /// Sets credentials and TLS for the broker.
    pub fn auth(mut self, auth: BrokerAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Sets the reconnection backoff bounds.
    pub fn reconnect(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max;
        self
    }

    /// Sets the node heartbeat period and the silence after which a node is dead.
    pub fn node_liveness(mut self, heartbeat: Duration, timeout: Duration) -> Self {
        self.node_heartbeat = heartbeat;
        self.node_timeout = timeout;
        self
    }

    /// Sets how long start listens for a node with the same id.
    pub fn claim_wait(mut self, wait: Duration) -> Self {
        self.claim_wait = wait;
        self
    }

    /// Sets the largest message sent to the broker.
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// Sets the outbox bound.
    pub fn max_outbox_messages(mut self, messages: usize) -> Self {
        self.max_outbox_messages = messages;
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    #[cfg_attr(
        not(any(feature = "redis", feature = "nats")),
        allow(dead_code, unused_imports, reason = "used by the cluster adapters")
    )]
    /// The channel this node publishes on.
    pub(crate) fn channel(&self) -> String {
        format!("{}.node.{}", self.cluster, self.node)
    }

    /// Checks every field; the error names the first bad one.
    pub(crate) fn validate(&self) -> Result<(), crate::Error> {
        let bad = |field: &'static str, problem: String| {
            Err(crate::Error::Config {
                field,
                problem: format!("cluster: {problem}"),
            })
        };
        let name_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.cluster.is_empty() || self.cluster.len() > 64 || !self.cluster.chars().all(name_ok)
        {
            return bad(
                "cluster",
                format!("{:?}: 1–64 ASCII letters, digits, `-` or `_`", self.cluster),
            );
        }
        if self.node >= crate::id::MAX_NODES {
            return bad(
                "node",
                format!("{} is not below {}", self.node, crate::id::MAX_NODES),
            );
        }
        let positive = [
            ("connect_timeout", self.connect_timeout),
            ("reconnect_min", self.reconnect_min),
            ("node_heartbeat", self.node_heartbeat),
        ];
        for (field, d) in positive {
            if d.is_zero() {
                return bad(field, "must be greater than zero".into());
            }
        }
        if self.reconnect_max < self.reconnect_min {
            return bad("reconnect_max", "must be at least reconnect_min".into());
        }
        if self.node_timeout <= self.node_heartbeat {
            return bad("node_timeout", "must be longer than node_heartbeat".into());
        }
        if self.max_payload_bytes < MIN_PAYLOAD_BYTES {
            return bad(
                "max_payload_bytes",
                format!("must be at least {} bytes", MIN_PAYLOAD_BYTES),
            );
        }
        if matches!(self.broker, Broker::Nats { .. })
            && self.auth.password.is_some()
            && self.auth.user.is_none()
        {
            return bad(
                "auth",
                "NATS takes a password with a user (or a token alone)".into(),
            );
        }
        if self.max_outbox_messages == 0 {
            return bad("max_outbox_messages", "must be at least 1".into());
        }
        let compiled = match self.broker {
            Broker::Redis { .. } => cfg!(feature = "redis"),
            Broker::Nats { .. } => cfg!(feature = "nats"),
        };
        if !compiled {
            return bad(
                "broker",
                format!(
                    "this build has no {0} adapter: enable conduit's `{0}` feature",
                    self.broker.kind()
                ),
            );
        }
        Ok(())
    }
}
