//! Other nodes, as the router sees them: the [`Uplink`] a cluster adapter plugs in
//! (broadcasts, sends and kicks for connections this node does not own go out through
//! it), and [`Cluster`], the handle applications use for cluster-wide presence.
//!
//! The router defines this seam and the adapter (`crate::cluster`) implements it, so
//! imports run one way: the adapter calls the router to deliver what other nodes sent,
//! the router never names the adapter.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ahash::AHashSet;
use conduit_protocol::Value;

use super::{BusMsg, Filter, Frames, Router};
use crate::error::{ClusterError, Error, Result};
use crate::id::ConnectionId;

/// A future run on the service thread.
pub(crate) type SendFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What goes to one connection of another node.
pub(crate) enum Direct<'a> {
    /// A message.
    Send {
        /// Its type.
        name: &'a str,
        /// Its data.
        data: &'a Value,
    },
    /// Close it, after an optional last message.
    Kick {
        /// `(type, data)` of the last message.
        last: Option<(&'a str, &'a Value)>,
    },
}

/// What a cluster-wide request asks every node.
#[derive(Clone, Debug)]
pub(crate) enum Ask {
    /// How many logged-in connections it has.
    Connections,
    /// Who is in a room there.
    RoomMembers(String),
}

/// One node's answer to an [`Ask`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Answer {
    /// Connections (or room members) it counted.
    pub count: usize,
    /// The members, for [`Ask::RoomMembers`] (at most what fits one broker message).
    pub members: Vec<ConnectionId>,
    /// Whether `members` was cut to fit.
    pub truncated: bool,
}

/// What the other nodes answered within the timeout.
#[derive(Clone, Debug, Default)]
pub(crate) struct Gathered {
    /// `(node, answer)` for each node that answered.
    pub answers: Vec<(usize, Answer)>,
    /// Nodes believed alive that did not answer in time.
    pub missing: Vec<usize>,
}

/// The adapter's side of the seam: how the router reaches other nodes.
pub(crate) trait Uplink: Send + Sync + 'static {
    /// This node's id (the node bits of the ids of its connections).
    fn node(&self) -> usize;
    /// Publishes a broadcast for every other node. An error means no node could ever
    /// receive it (too large for the broker), and it is returned before anything was
    /// delivered locally; a broker outage is counted and logged, not an error, since
    /// local delivery goes on.
    fn broadcast(
        &self,
        name: &str,
        data: &Value,
        timestamp_ms: u64,
        rooms: &[String],
        include: Option<&AHashSet<ConnectionId>>,
        exclude: &AHashSet<ConnectionId>,
    ) -> Result<()>;
    /// Publishes a send or kick for `to`, a connection of another node.
    fn direct(&self, to: ConnectionId, what: Direct<'_>, timestamp_ms: u64) -> Result<()>;
    /// Asks every live node and gathers the answers for up to `timeout`; run on the
    /// service thread.
    fn gather(self: Arc<Self>, ask: Ask, timeout: Duration) -> SendFuture<Result<Gathered>>;
    /// The nodes heard from within the node timeout, this one included.
    fn nodes(&self) -> Vec<NodeInfo>;
    /// Whether the broker connection is up.
    fn connected(&self) -> bool;
    /// Counters since start.
    fn stats(&self) -> ClusterStats;
    /// Says goodbye to the other nodes and ends the broker session (at server stop).
    fn shut_down(&self);
}

/// A node of the cluster as this node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeInfo {
    /// Its node id.
    pub node: usize,
    /// Its logged-in connections, as of its last heartbeat (this node: now).
    pub connections: usize,
    /// Time since its last heartbeat reached this node (zero for this node).
    pub last_seen: Duration,
}

/// What the cluster adapter counted since the server started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Messages handed to the broker.
    pub published: u64,
    /// Messages for other nodes that were not published: the broker was unreachable,
    /// the outbox full, or the publish failed. Each is logged (rate-limited).
    pub not_delivered: u64,
    /// Valid messages received from other nodes of this cluster.
    pub received: u64,
    /// Messages from the channel that were malformed or from an unknown protocol
    /// version, dropped.
    pub dropped: u64,
    /// Messages from another process claiming this node's id (a misconfiguration).
    pub node_conflicts: u64,
    /// Times the broker connection was (re-)established.
    pub connects: u64,
}

/// A count gathered from every node within a timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterCount {
    /// The sum over the nodes that answered, this one included.
    pub total: usize,
    /// `(node, count)` for each node that answered, this one first.
    pub per_node: Vec<(usize, usize)>,
    /// Nodes believed alive that did not answer in time (their share is not in
    /// `total`).
    pub missing: Vec<usize>,
}

/// A room's members gathered from every node within a timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterMembers {
    /// Members on the nodes that answered, this node's first.
    pub members: Vec<ConnectionId>,
    /// The member count over the nodes that answered (also when `members` was cut).
    pub count: usize,
    /// Nodes believed alive that did not answer in time.
    pub missing: Vec<usize>,
    /// Whether some node had more members than fit one broker message, so `members`
    /// lists only part of them (`count` is still whole).
    pub truncated: bool,
}

/// The cluster this server is a node of: node ids, counts and presence across every
/// node. From [`Router::cluster`]; `None` on a server without a cluster.
///
/// Everything else works across nodes without this handle: broadcasts (rooms,
/// include, exclude) reach every node's connections, and a send or kick by id goes to
/// the node that owns the id. What `broadcast(..).await` returns stays **this node's**
/// count — gathering the others' would put a round trip through the broker behind
/// every broadcast; ask [`Cluster::connection_count`] or [`Cluster::room_members`] when
/// a cluster-wide figure is needed.
#[derive(Clone)]
pub struct Cluster {
    /// The server (for this node's own share of a count).
    router: Router,
    /// The adapter.
    link: Arc<dyn Uplink>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.link.node())
            .field("connected", &self.link.connected())
            .finish()
    }
}

impl Cluster {
    pub(crate) fn new(router: Router, link: Arc<dyn Uplink>) -> Cluster {
        Cluster { router, link }
    }

    /// This node's id.
    pub fn node(&self) -> usize {
        self.link.node()
    }

    /// The nodes heard from within `node_timeout`, this one included, by node id. A
    /// node that died leaves this list once its heartbeats are `node_timeout` old; one
    /// that stopped cleanly leaves it at once.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut nodes = self.link.nodes();
        let own = self.node();
        for n in nodes.iter_mut().filter(|n| n.node == own) {
            n.connections = self.router.connection_count();
        }
        nodes
    }

    /// Whether the broker connection is up now. While it is down, local delivery goes
    /// on and what would have gone to other nodes is counted in
    /// [`ClusterStats::not_delivered`].
    pub fn is_connected(&self) -> bool {
        self.link.connected()
    }

    /// Counters since the server started.
    pub fn stats(&self) -> ClusterStats {
        self.link.stats()
    }

    /// Logged-in connections on every node, asked through the broker and gathered for
    /// up to `timeout` (it returns as soon as every live node answered).
    pub async fn connection_count(&self, timeout: Duration) -> Result<ClusterCount> {
        let own = self.router.connection_count();
        let got = self.gather(Ask::Connections, timeout).await?;
        let mut per_node = vec![(self.node(), own)];
        per_node.extend(got.answers.iter().map(|(n, a)| (*n, a.count)));
        Ok(ClusterCount {
            total: per_node.iter().map(|(_, c)| c).sum(),
            per_node,
            missing: got.missing,
        })
    }

    /// The members of `room` on every node, gathered for up to `timeout`.
    pub async fn room_members(&self, room: &str, timeout: Duration) -> Result<ClusterMembers> {
        let mut members = self.router.room(room).members();
        let got = self
            .gather(Ask::RoomMembers(room.to_owned()), timeout)
            .await?;
        let mut count = members.len();
        let mut truncated = false;
        for (_, a) in got.answers {
            count += a.count;
            truncated |= a.truncated;
            members.extend(a.members);
        }
        Ok(ClusterMembers {
            members,
            count,
            missing: got.missing,
            truncated,
        })
    }

    async fn gather(&self, ask: Ask, timeout: Duration) -> Result<Gathered> {
        #[cfg(feature = "tokio")]
        {
            let link = self.link.clone();
            crate::rt::service::Service::global()
                .call(move || link.gather(ask, timeout))
                .await
                .map_err(|e| Error::Cluster(ClusterError::Service(e.to_string())))?
        }
        #[cfg(not(feature = "tokio"))]
        {
            let _ = (ask, timeout);
            Err(Error::Cluster(ClusterError::Service(
                "built without the tokio feature".into(),
            )))
        }
    }
}

impl Router {
    /// The cluster this server is a node of, while it runs with
    /// [`ServerDescriptor::cluster`](crate::ServerDescriptor::cluster) set.
    pub fn cluster(&self) -> Option<Cluster> {
        let link = self.run_state()?.uplink.clone()?;
        Some(Cluster::new(self.clone(), link))
    }
}

/// Where the router meets the adapter: what goes to another node's connection, and
/// what other nodes sent, delivered here.
impl Router {
    /// The uplink to the node that owns `id` when that is not this node; `Ok(None)`
    /// for this node's own connections.
    pub(super) fn remote_owner(&self, id: ConnectionId) -> Result<Option<Arc<dyn Uplink>>> {
        let run = self.run_state().ok_or(Error::NotRunning)?;
        if id.node() == run.node {
            return Ok(None);
        }
        match &run.uplink {
            Some(u) => Ok(Some(u.clone())),
            None => Err(crate::error::ClusterError::NoCluster(id.node()).into()),
        }
    }

    #[cfg_attr(
        not(any(feature = "redis", feature = "nats")),
        allow(dead_code, unused_imports, reason = "used by the cluster adapters")
    )]
    /// Delivers to this node's connections a broadcast another node published: the
    /// rooms are this node's rooms of those names. Never published again.
    pub(crate) async fn deliver_broadcast(
        &self,
        frames: Frames,
        rooms: &[String],
        mut filter: Filter,
    ) -> usize {
        if !rooms.is_empty() {
            let Some(run) = self.run_state() else {
                return 0;
            };
            let found: Vec<_> = rooms.iter().filter_map(|r| run.rooms.get(r)).collect();
            if found.is_empty() {
                return 0;
            }
            filter.rooms = Some(found);
        }
        // Runs on the service thread (no shard of its own): every shard with
        // receivers gets it over its bus, in the order the other node published.
        let Some(run) = self.run_state() else {
            return 0;
        };
        let (frames, filter) = (Arc::new(frames), Arc::new(filter));
        let targets: Vec<_> = (0..run.bus.len())
            .filter_map(|i| {
                let n = run.admitted(i, &filter);
                (n > 0).then(|| (run.bus[i].clone(), n))
            })
            .collect();
        drop(run);
        let mut count = 0;
        for (bus, n) in targets {
            let msg = BusMsg::Broadcast {
                frames: frames.clone(),
                filter: filter.clone(),
                reply: None,
            };
            if bus.send_async(msg).await.is_ok() {
                count += n;
            }
        }
        count
    }

    #[cfg_attr(
        not(any(feature = "redis", feature = "nats")),
        allow(dead_code, unused_imports, reason = "used by the cluster adapters")
    )]
    /// Delivers a send or kick another node published for connection `to` of this
    /// node, without waiting for the shard's answer (the sender cannot hear it), in
    /// bus order with the broadcasts delivered before and after it.
    pub(crate) async fn deliver_direct(
        &self,
        to: ConnectionId,
        what: Direct<'_>,
        timestamp_ms: u64,
    ) {
        let Some(run) = self.run_state() else {
            return;
        };
        let Some(codec) = run.lookup(to).and_then(|m| m.codec()) else {
            return;
        };
        let Some(bus) = run.bus.get(to.shard()).cloned() else {
            return;
        };
        drop(run);
        let msg = match what {
            Direct::Send { name, data } => {
                match Frames::message(name, data, timestamp_ms, Some(codec)) {
                    Ok(frames) => BusMsg::Send {
                        to,
                        frames: Arc::new(frames),
                        reply: flume::bounded(1).0,
                    },
                    Err(_) => return,
                }
            }
            Direct::Kick { last } => {
                let last = match last {
                    Some((n, d)) => match Frames::message(n, d, timestamp_ms, Some(codec)) {
                        Ok(f) => Some(Arc::new(f)),
                        Err(_) => None,
                    },
                    None => None,
                };
                BusMsg::Kick {
                    to,
                    last,
                    reply: flume::bounded(1).0,
                }
            }
        };
        let _ = bus.send_async(msg).await;
    }
}
