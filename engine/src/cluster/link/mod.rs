//! The adapter proper: the [`Uplink`] the router publishes through (`mod.rs`: encode,
//! size-check and queue on the sending shard), the broker session on the service thread
//! (`session.rs`: connect with backoff, claim the node id, publish, beat) and what other
//! nodes send (`inbound.rs`). Broker-specific code is only connect/receive/publish
//! ([`Adapter`]).

use crate::throttle::Throttle;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ahash::{AHashMap, AHashSet};
use conduit_protocol::{msgpack, Value, ValueLimits};

mod inbound;
mod session;

use super::wire::{self, Header, Kind};
use super::{Broker, ClusterDescriptor, Unreachable};
use crate::error::{ClusterError, Error, Result};
use crate::id::ConnectionId;
use crate::router::{
    Answer, Ask, ClusterStats, Direct, Gathered, NodeInfo, Router, SendFuture, Uplink,
};

/// Messages published in one batch (one pipeline round trip on Redis).
const PUBLISH_BATCH: usize = 256;
/// Bytes one member id takes in an answer, at most (MessagePack uint64).
const ID_BYTES: usize = 9;
/// Room for an answer's header and fixed fields.
const ANSWER_OVERHEAD: usize = 64;

/// A broker connection: its receiving and publishing halves, and the broker's own
/// payload limit when it has one.
pub(super) type Session<A> = (
    <A as Adapter>::Inbound,
    <A as Adapter>::Outbound,
    Option<usize>,
);

/// What a broker client must do; the rest of the adapter is shared.
pub(super) trait Adapter: Send + 'static {
    /// The receiving half: this cluster's messages.
    type Inbound: Send;
    /// The publishing half.
    type Outbound: Send;
    /// Connects and subscribes to `pattern` (`<cluster>.node.*`); also returns the
    /// broker's own payload limit when it has one.
    fn connect(
        settings: &ClusterDescriptor,
        pattern: &str,
    ) -> impl Future<Output = std::result::Result<Session<Self>, String>> + Send;
    /// The next message: `(channel, payload)`; an error when the connection is lost.
    fn next(
        inbound: &mut Self::Inbound,
    ) -> impl Future<Output = std::result::Result<(String, Vec<u8>), String>> + Send;
    /// Waits until what was published has left for the broker (the goodbye at stop).
    fn flush(
        outbound: &mut Self::Outbound,
    ) -> impl Future<Output = std::result::Result<(), String>> + Send;
    /// Publishes `batch` on `channel`, in order.
    fn publish(
        outbound: &mut Self::Outbound,
        channel: &str,
        batch: Vec<Vec<u8>>,
    ) -> impl Future<Output = std::result::Result<(), String>> + Send;
}

/// Counters behind [`ClusterStats`].
#[derive(Default)]
struct Counters {
    published: AtomicU64,
    not_delivered: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    node_conflicts: AtomicU64,
    connects: AtomicU64,
}

/// Another node, as last heard.
struct Peer {
    instance: u64,
    last_seen: Instant,
    connections: usize,
}

/// One node's link to its cluster.
pub(crate) struct Link {
    /// The settings it was started with.
    settings: ClusterDescriptor,
    /// Random per process: tells this node's own messages (echoed by the broker) from
    /// another process that claims the same node id.
    instance: u64,
    /// The channel this node publishes on.
    channel: String,
    /// Limits for decoding message data, the server's own for peer input.
    limits: ValueLimits,
    /// Encoded messages waiting for the broker, bounded by `max_outbox_messages`.
    outbox: flume::Sender<Vec<u8>>,
    /// Whether the broker session is up (and the node id claimed).
    connected: AtomicBool,
    /// The effective payload limit: the setting, or the broker's when smaller.
    max_payload: AtomicUsize,
    counters: Counters,
    /// Other nodes by id.
    peers: Mutex<AHashMap<usize, Peer>>,
    /// Requests waiting for answers, by request number.
    requests: Mutex<AHashMap<u64, flume::Sender<(usize, Answer)>>>,
    next_request: AtomicU64,
    /// Set while this node claims its id at start (and after a reconnect): another
    /// instance heard then means the id is taken.
    claiming: AtomicBool,
    /// Another instance with this node's id was heard while claiming.
    conflict: AtomicBool,
    /// Set at server stop.
    stopping: AtomicBool,
    /// Wakes the session at server stop.
    stop: tokio::sync::Notify,
    /// Closed when the broker session has ended (its sender lives in the session
    /// task), so a stop can wait for the goodbye to leave.
    ended: flume::Receiver<()>,
    /// Undelivered messages.
    undelivered_log: Throttle,
    /// Dropped channel messages.
    dropped_log: Throttle,
}

/// Starts the adapter for a server about to run: connects (waiting up to the connect
/// timeout plus the claim wait), claims the node id, and returns the link the router
/// publishes through. With [`Unreachable::LocalOnly`] an unreachable broker is logged
/// and retried in the background.
pub(crate) fn start(
    settings: &ClusterDescriptor,
    router: Router,
    limits: ValueLimits,
) -> Result<Arc<Link>> {
    settings.validate()?;
    let (outbox, queue) = flume::bounded(settings.max_outbox_messages);
    let (session_alive, ended) = flume::bounded::<()>(1);
    let mut instance = [0u8; 8];
    getrandom::getrandom(&mut instance)
        .map_err(|e| Error::Runtime(format!("no random source for the node instance: {e}")))?;
    let link = Arc::new(Link {
        settings: settings.clone(),
        instance: u64::from_le_bytes(instance),
        channel: settings.channel(),
        limits,
        outbox,
        connected: AtomicBool::new(false),
        max_payload: AtomicUsize::new(settings.max_payload_bytes),
        counters: Counters::default(),
        peers: Mutex::default(),
        requests: Mutex::default(),
        next_request: AtomicU64::new(1),
        claiming: AtomicBool::new(false),
        conflict: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        stop: tokio::sync::Notify::new(),
        ended,
        undelivered_log: Throttle::new(),
        dropped_log: Throttle::new(),
    });
    let (ready_tx, ready) = flume::bounded(1);
    let session = {
        let link = link.clone();
        move || async move {
            match link.settings.broker {
                #[cfg(feature = "redis")]
                Broker::Redis { .. } => {
                    tokio::spawn(session::run::<super::redis::Redis>(
                        link,
                        router,
                        queue,
                        ready_tx,
                        session_alive,
                    ));
                }
                #[cfg(feature = "nats")]
                Broker::Nats { .. } => {
                    tokio::spawn(session::run::<super::nats::Nats>(
                        link,
                        router,
                        queue,
                        ready_tx,
                        session_alive,
                    ));
                }
                #[allow(unreachable_patterns, reason = "with both adapters compiled")]
                _ => drop((router, queue, ready_tx, session_alive)),
            }
        }
    };
    crate::block_on(crate::rt::service::Service::global().call(session))
        .map_err(|e| ClusterError::Service(e.to_string()))?;
    let first = crate::block_on(ready.recv_async()).unwrap_or_else(|_| {
        Err(ClusterError::Service(
            "the broker session ended at start".into(),
        ))
    });
    match first {
        Ok(()) => Ok(link),
        Err(e @ ClusterError::Unreachable { .. })
            if settings.if_unreachable == Unreachable::LocalOnly =>
        {
            tracing::warn!("{e}; serving local connections and retrying in the background");
            Ok(link)
        }
        Err(e) => {
            link.shut_down();
            Err(e.into())
        }
    }
}

impl Link {
    fn head(&self, kind: Kind, to: Option<usize>) -> Header {
        Header {
            kind,
            from: self.settings.node,
            instance: self.instance,
            to,
        }
    }

    fn heartbeat(&self, router: &Router, starting: bool) -> Vec<u8> {
        let body = Value::Array(vec![
            Value::from(router.connection_count()),
            Value::Bool(starting),
        ]);
        wire::encode(self.head(Kind::Heartbeat, None), &body)
    }

    /// Forgets nodes not heard from within `node_timeout`.
    fn prune(&self) {
        let timeout = self.settings.node_timeout;
        let Ok(mut peers) = self.peers.lock() else {
            return;
        };
        peers.retain(|node, p| {
            let alive = p.last_seen.elapsed() < timeout;
            if !alive {
                tracing::warn!(
                    node,
                    "cluster: node {node} not heard from for {} ms (node_timeout): taken for dead",
                    timeout.as_millis()
                );
            }
            alive
        });
    }

    /// Queues an encoded message for the broker (for node `to`, or every node):
    /// refused, counted and logged while the broker is away or the outbox is full.
    fn queue(&self, bytes: Vec<u8>, to: Option<usize>) -> std::result::Result<(), ClusterError> {
        let refused = if !self.connected.load(Ordering::Acquire) {
            ClusterError::NotConnected {
                node: to.unwrap_or(wire::EVERY_NODE.into()),
            }
        } else {
            match self.outbox.try_send(bytes) {
                Ok(()) => return Ok(()),
                Err(_) => ClusterError::Backlogged(self.outbox.len()),
            }
        };
        self.counters.not_delivered.fetch_add(1, Ordering::Relaxed);
        self.undelivered_log.warn(|| match (to, &refused) {
            (None, ClusterError::NotConnected { .. }) => {
                "cluster: the broker is not connected; a message for every node was not delivered"
                    .into()
            }
            _ => format!("cluster: {refused}"),
        });
        Err(refused)
    }

    /// Checks an encoded message against the payload limit.
    fn fits(&self, bytes: &[u8]) -> Result<()> {
        let limit = self.max_payload.load(Ordering::Relaxed);
        if bytes.len() > limit {
            return Err(ClusterError::PayloadTooLarge {
                bytes: bytes.len(),
                limit,
            }
            .into());
        }
        Ok(())
    }
}

impl Uplink for Link {
    fn node(&self) -> usize {
        self.settings.node
    }

    fn broadcast(
        &self,
        name: &str,
        data: &Value,
        timestamp_ms: u64,
        rooms: &[String],
        include: Option<&AHashSet<ConnectionId>>,
        exclude: &AHashSet<ConnectionId>,
    ) -> Result<()> {
        let mut out = wire::start(self.head(Kind::Broadcast, None));
        msgpack::write_array_len(&mut out, 6);
        msgpack::write_str(&mut out, name);
        msgpack::write_value(&mut out, data);
        msgpack::write_value(&mut out, &Value::from(timestamp_ms));
        msgpack::write_array_len(&mut out, rooms.len());
        for r in rooms {
            msgpack::write_str(&mut out, r);
        }
        match include {
            None => msgpack::write_value(&mut out, &Value::Nil),
            Some(ids) => msgpack::write_value(&mut out, &wire::id_list(ids)),
        }
        msgpack::write_value(&mut out, &wire::id_list(exclude));
        self.fits(&out)?;
        // Local delivery goes on while the broker is away; the loss is counted.
        let _ = self.queue(out, None);
        Ok(())
    }

    fn direct(&self, to: ConnectionId, what: Direct<'_>, timestamp_ms: u64) -> Result<()> {
        let (kind, name, data) = match what {
            Direct::Send { name, data } => (Kind::Send, Some(name), Some(data)),
            Direct::Kick { last } => (Kind::Kick, last.map(|l| l.0), last.map(|l| l.1)),
        };
        let mut out = wire::start(self.head(kind, Some(to.node())));
        msgpack::write_array_len(&mut out, 4);
        msgpack::write_value(&mut out, &Value::from(to.as_u64()));
        match name {
            Some(n) => msgpack::write_str(&mut out, n),
            None => msgpack::write_value(&mut out, &Value::Nil),
        }
        msgpack::write_value(&mut out, data.unwrap_or(&Value::Nil));
        msgpack::write_value(&mut out, &Value::from(timestamp_ms));
        self.fits(&out)?;
        Ok(self.queue(out, Some(to.node()))?)
    }

    fn gather(self: Arc<Self>, ask: Ask, timeout: Duration) -> SendFuture<Result<Gathered>> {
        Box::pin(async move {
            let request = self.next_request.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = flume::bounded(crate::id::MAX_NODES);
            if let Ok(mut r) = self.requests.lock() {
                r.insert(request, tx);
            }
            let mut expected: AHashSet<usize> = self
                .nodes()
                .into_iter()
                .map(|n| n.node)
                .filter(|&n| n != self.settings.node)
                .collect();
            let body = match &ask {
                Ask::Connections => {
                    Value::Array(vec![Value::from(request), Value::from(0u64), Value::Nil])
                }
                Ask::RoomMembers(room) => Value::Array(vec![
                    Value::from(request),
                    Value::from(1u64),
                    Value::from(room.as_str()),
                ]),
            };
            let mut gathered = Gathered::default();
            if self
                .queue(wire::encode(self.head(Kind::Ask, None), &body), None)
                .is_ok()
            {
                let deadline = tokio::time::Instant::now() + timeout;
                let mut answered = AHashSet::new();
                while !expected.is_empty() {
                    match tokio::time::timeout_at(deadline, rx.recv_async()).await {
                        Ok(Ok((node, answer))) => {
                            expected.remove(&node);
                            if answered.insert(node) {
                                gathered.answers.push((node, answer));
                            }
                        }
                        _ => break,
                    }
                }
            }
            if let Ok(mut r) = self.requests.lock() {
                r.remove(&request);
            }
            gathered.missing = expected.into_iter().collect();
            gathered.missing.sort_unstable();
            gathered.answers.sort_unstable_by_key(|(n, _)| *n);
            Ok(gathered)
        })
    }

    fn nodes(&self) -> Vec<NodeInfo> {
        let timeout = self.settings.node_timeout;
        let mut nodes = vec![NodeInfo {
            node: self.settings.node,
            connections: 0,
            last_seen: Duration::ZERO,
        }];
        if let Ok(peers) = self.peers.lock() {
            nodes.extend(
                peers
                    .iter()
                    .filter(|(_, p)| p.last_seen.elapsed() < timeout)
                    .map(|(&node, p)| NodeInfo {
                        node,
                        connections: p.connections,
                        last_seen: p.last_seen.elapsed(),
                    }),
            );
        }
        nodes.sort_unstable_by_key(|n| n.node);
        nodes
    }

    fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    fn stats(&self) -> ClusterStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClusterStats {
            published: get(&c.published),
            not_delivered: get(&c.not_delivered),
            received: get(&c.received),
            dropped: get(&c.dropped),
            node_conflicts: get(&c.node_conflicts),
            connects: get(&c.connects),
        }
    }

    fn shut_down(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.notify_one();
        // Wait (bounded) for the goodbye to leave, so the other nodes forget this one
        // at once rather than after `node_timeout`, even when the process exits next.
        let _ = self.ended.recv_timeout(self.settings.connect_timeout);
    }
}
