//! The adapter proper: the [`Uplink`] the router publishes through, and the broker
//! session on the service thread — connect with backoff, claim the node id, then
//! publish the outbox, deliver what other nodes sent, and keep the node table by
//! heartbeats. Broker-specific code is only connect/receive/publish ([`Adapter`]).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ahash::{AHashMap, AHashSet};
use conduit_protocol::{msgpack, Value, ValueLimits};

use super::wire::{self, Body, Header, Kind};
use super::{Broker, ClusterDescriptor, Unreachable};
use crate::error::{ClusterError, Error, Result};
use crate::id::ConnectionId;
use crate::router::{
    Answer, Ask, ClusterStats, Direct, Filter, Frames, Gathered, NodeInfo, Router, SendFuture,
    Uplink,
};

/// Messages published in one batch (one pipeline round trip on Redis).
const PUBLISH_BATCH: usize = 256;
/// Warnings of one kind are logged at most once per this interval, with a count.
const LOG_INTERVAL: Duration = Duration::from_secs(1);
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

/// A warning logged at most once per [`LOG_INTERVAL`], with how many were held back.
struct Throttled {
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttled {
    fn new() -> Throttled {
        Throttled {
            state: Mutex::new((None, 0)),
        }
    }

    fn warn(&self, what: impl FnOnce() -> String) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        if s.0.is_some_and(|t| now.duration_since(t) < LOG_INTERVAL) {
            s.1 += 1;
            return;
        }
        let held = std::mem::take(&mut s.1);
        s.0 = Some(now);
        drop(s);
        if held > 0 {
            tracing::warn!("cluster: {} ({held} more like it)", what());
        } else {
            tracing::warn!("cluster: {}", what());
        }
    }
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
    undelivered_log: Throttled,
    /// Dropped channel messages.
    dropped_log: Throttled,
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
        undelivered_log: Throttled::new(),
        dropped_log: Throttled::new(),
    });
    let (ready_tx, ready) = flume::bounded(1);
    let session = {
        let link = link.clone();
        move || async move {
            match link.settings.broker {
                #[cfg(feature = "redis")]
                Broker::Redis { .. } => {
                    tokio::spawn(run::<super::redis::Redis>(
                        link,
                        router,
                        queue,
                        ready_tx,
                        session_alive,
                    ));
                }
                #[cfg(feature = "nats")]
                Broker::Nats { .. } => {
                    tokio::spawn(run::<super::nats::Nats>(
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

/// Why a session ended.
enum Ended {
    /// The server is stopping.
    Stopped,
    /// The broker connection was lost (or a publish failed).
    Lost(String),
}

/// The broker session: connect, claim, serve; on loss reconnect with backoff until
/// the server stops. Reports the first attempt's outcome on `ready`.
async fn run<A: Adapter>(
    link: Arc<Link>,
    router: Router,
    outbox: flume::Receiver<Vec<u8>>,
    ready: flume::Sender<std::result::Result<(), ClusterError>>,
    // Dropped when this returns: tells a stop waiting in `shut_down` that it ended.
    _alive: flume::Sender<()>,
) {
    let s = &link.settings;
    let mut ready = Some(ready);
    let mut backoff = s.reconnect_min;
    let pattern = format!("{}.node.*", s.cluster);
    while !link.stopping.load(Ordering::Acquire) {
        let attempt = tokio::time::timeout(s.connect_timeout, A::connect(s, &pattern)).await;
        let attempt = attempt.unwrap_or_else(|_| {
            Err(format!(
                "no answer within {} ms (connect_timeout)",
                s.connect_timeout.as_millis()
            ))
        });
        match attempt {
            Ok((mut inbound, mut outbound, broker_limit)) => {
                let limit =
                    broker_limit.map_or(s.max_payload_bytes, |b| b.min(s.max_payload_bytes));
                link.max_payload.store(limit, Ordering::Relaxed);
                link.counters.connects.fetch_add(1, Ordering::Relaxed);
                let claimed = link.claim::<A>(&mut inbound, &mut outbound, &router).await;
                if let Err(e) = claimed {
                    tracing::error!("{e}; this node leaves the cluster");
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(e));
                    }
                    return;
                }
                if let Some(r) = ready.take() {
                    let _ = r.send(Ok(()));
                }
                tracing::info!(
                    node = s.node,
                    cluster = %s.cluster,
                    broker = %s.broker.address(),
                    "cluster: connected"
                );
                link.connected.store(true, Ordering::Release);
                backoff = s.reconnect_min;
                let ended = link
                    .serve::<A>(&mut inbound, &mut outbound, &outbox, &router)
                    .await;
                link.connected.store(false, Ordering::Release);
                // What waited for the broker when it went away is not delivered.
                let stranded = outbox.drain().count() as u64;
                if stranded > 0 {
                    link.counters
                        .not_delivered
                        .fetch_add(stranded, Ordering::Relaxed);
                }
                match ended {
                    Ended::Stopped => return,
                    Ended::Lost(why) => tracing::warn!(
                        "cluster: lost the {} broker ({why}); {stranded} queued messages not delivered; reconnecting",
                        s.broker.kind()
                    ),
                }
            }
            Err(reason) => {
                let err = ClusterError::Unreachable {
                    broker: s.broker.kind(),
                    address: s.broker.address(),
                    reason,
                };
                if let Some(r) = ready.take() {
                    let fail = s.if_unreachable == Unreachable::Fail;
                    let _ = r.send(Err(err));
                    if fail {
                        return;
                    }
                } else {
                    link.undelivered_log.warn(|| format!("{err}; retrying"));
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = link.stop.notified() => return,
        }
        backoff = (backoff * 2).min(s.reconnect_max);
    }
}

impl Link {
    /// Announces this node as starting and listens for `claim_wait`: an answer from
    /// another instance with the same node id means the id is taken.
    async fn claim<A: Adapter>(
        &self,
        inbound: &mut A::Inbound,
        outbound: &mut A::Outbound,
        router: &Router,
    ) -> std::result::Result<(), ClusterError> {
        self.conflict.store(false, Ordering::Release);
        self.claiming.store(true, Ordering::Release);
        let hello = self.heartbeat(router, true);
        let published = A::publish(outbound, &self.channel, vec![hello]).await;
        let deadline = tokio::time::Instant::now() + self.settings.claim_wait;
        let mut outcome = published.map_err(|e| ClusterError::Unreachable {
            broker: self.settings.broker.kind(),
            address: self.settings.broker.address(),
            reason: e,
        });
        while outcome.is_ok() && !self.conflict.load(Ordering::Acquire) {
            match tokio::time::timeout_at(deadline, A::next(inbound)).await {
                Err(_) => break,
                Ok(Ok((channel, payload))) => {
                    // Answers (e.g. to a request) are not due while claiming.
                    let _ = self.handle(router, &channel, &payload).await;
                }
                Ok(Err(e)) => {
                    outcome = Err(ClusterError::Unreachable {
                        broker: self.settings.broker.kind(),
                        address: self.settings.broker.address(),
                        reason: e,
                    })
                }
            }
        }
        self.claiming.store(false, Ordering::Release);
        if self.conflict.load(Ordering::Acquire) {
            return Err(ClusterError::NodeIdInUse {
                node: self.settings.node,
                cluster: self.settings.cluster.clone(),
            });
        }
        outcome
    }

    /// Publishes the outbox, delivers what arrives, beats, until stopped or lost.
    async fn serve<A: Adapter>(
        &self,
        inbound: &mut A::Inbound,
        outbound: &mut A::Outbound,
        outbox: &flume::Receiver<Vec<u8>>,
        router: &Router,
    ) -> Ended {
        let mut tick = tokio::time::interval(self.settings.node_heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.stopping.load(Ordering::Acquire) {
                let bye = wire::encode(self.head(Kind::Leaving, None), &Value::Array(vec![]));
                let _ = tokio::time::timeout(self.settings.connect_timeout, async {
                    A::publish(outbound, &self.channel, vec![bye]).await?;
                    A::flush(outbound).await
                })
                .await;
                return Ended::Stopped;
            }
            tokio::select! {
                biased;
                () = self.stop.notified() => {}
                got = A::next(inbound) => match got {
                    Ok((channel, payload)) => {
                        if let Some(reply) = self.handle(router, &channel, &payload).await {
                            let _ = self.queue(reply, None);
                        }
                    }
                    Err(e) => return Ended::Lost(e),
                },
                first = outbox.recv_async() => {
                    let Ok(first) = first else { return Ended::Stopped };
                    let mut batch = vec![first];
                    while batch.len() < PUBLISH_BATCH {
                        match outbox.try_recv() {
                            Ok(m) => batch.push(m),
                            Err(_) => break,
                        }
                    }
                    let n = batch.len() as u64;
                    if let Err(e) = A::publish(outbound, &self.channel, batch).await {
                        self.counters.not_delivered.fetch_add(n, Ordering::Relaxed);
                        return Ended::Lost(e);
                    }
                    self.counters.published.fetch_add(n, Ordering::Relaxed);
                }
                _ = tick.tick() => {
                    self.prune();
                    let beat = self.heartbeat(router, false);
                    if let Err(e) = A::publish(outbound, &self.channel, vec![beat]).await {
                        return Ended::Lost(e);
                    }
                }
            }
        }
    }

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

    /// Checks a message from the channel and acts on it; returns a reply to publish.
    /// Nothing from the channel is trusted: whatever fails a check is dropped and
    /// counted.
    async fn handle(&self, router: &Router, channel: &str, bytes: &[u8]) -> Option<Vec<u8>> {
        let h = match wire::header(bytes) {
            Ok(h) => h,
            Err(e) => return self.dropped(channel, &e.to_string()),
        };
        // A node publishes on its own channel only.
        let expected = channel
            .rsplit_once('.')
            .and_then(|(_, n)| n.parse::<usize>().ok());
        if expected != Some(h.from) {
            return self.dropped(channel, "sender does not match its channel");
        }
        if h.from == self.settings.node {
            return self.same_id(router, &h, bytes);
        }
        if h.to.is_some_and(|to| to != self.settings.node) {
            return None;
        }
        let body = match wire::body(&h, bytes, self.limits) {
            Ok(b) => b,
            Err(e) => return self.dropped(channel, &e.to_string()),
        };
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        self.seen(h.from, h.instance, None);
        match body {
            Body::Broadcast {
                name,
                data,
                timestamp_ms,
                rooms,
                include,
                exclude,
            } => match Frames::message(&name, &data, timestamp_ms, None) {
                Ok(frames) => {
                    let filter = Filter {
                        rooms: None,
                        include,
                        exclude,
                    };
                    router.deliver_broadcast(frames, &rooms, filter).await;
                }
                Err(e) => return self.dropped(channel, &e.to_string()),
            },
            Body::Send {
                to,
                name,
                data,
                timestamp_ms,
            } if to.node() == self.settings.node => {
                let what = Direct::Send {
                    name: &name,
                    data: &data,
                };
                router.deliver_direct(to, what, timestamp_ms).await;
            }
            Body::Kick {
                to,
                last,
                timestamp_ms,
            } if to.node() == self.settings.node => {
                let last = last.as_ref().map(|(n, d)| (n.as_str(), d));
                router
                    .deliver_direct(to, Direct::Kick { last }, timestamp_ms)
                    .await;
            }
            Body::Send { .. } | Body::Kick { .. } => {
                return self.dropped(channel, "a connection id of another node");
            }
            Body::Heartbeat {
                connections,
                starting: _,
            } => self.seen(h.from, h.instance, Some(connections)),
            Body::Leaving => {
                if let Ok(mut p) = self.peers.lock() {
                    if p.remove(&h.from).is_some() {
                        tracing::info!(node = h.from, "cluster: node {} left", h.from);
                    }
                }
            }
            Body::Ask { request, room } => return Some(self.answer(router, &h, request, room)),
            Body::Answer {
                request,
                count,
                members,
                truncated,
            } => {
                let waiting = self
                    .requests
                    .lock()
                    .ok()
                    .and_then(|r| r.get(&request).cloned());
                if let Some(tx) = waiting {
                    let answer = Answer {
                        count,
                        members,
                        truncated,
                    };
                    let _ = tx.try_send((h.from, answer));
                }
            }
        }
        None
    }

    /// A message from this node's id: its own echo, or another process with the same
    /// id — a conflict, which fails a node still claiming its id; a running node
    /// answers a newcomer's claim at once so the newcomer learns of it.
    fn same_id(&self, router: &Router, h: &Header, bytes: &[u8]) -> Option<Vec<u8>> {
        if h.instance == self.instance {
            return None;
        }
        self.counters.node_conflicts.fetch_add(1, Ordering::Relaxed);
        if self.claiming.load(Ordering::Acquire) {
            self.conflict.store(true, Ordering::Release);
            return None;
        }
        let newcomer = h.kind == Kind::Heartbeat
            && matches!(
                wire::body(h, bytes, self.limits),
                Ok(Body::Heartbeat { starting: true, .. })
            );
        self.dropped_log.warn(|| {
            format!(
                "another process uses node id {} in cluster {:?}{}",
                h.from,
                self.settings.cluster,
                if newcomer { " (it is refused)" } else { "" }
            )
        });
        newcomer.then(|| self.heartbeat(router, false))
    }

    fn dropped(&self, channel: &str, why: &str) -> Option<Vec<u8>> {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        self.dropped_log
            .warn(|| format!("dropped a message from channel {channel:?}: {why}"));
        None
    }

    /// Notes a sign of life from `node`.
    fn seen(&self, node: usize, instance: u64, connections: Option<usize>) {
        let Ok(mut peers) = self.peers.lock() else {
            return;
        };
        let now = Instant::now();
        match peers.get_mut(&node) {
            Some(p) => {
                if p.instance != instance {
                    tracing::info!(node, "cluster: node {node} restarted");
                    p.instance = instance;
                }
                p.last_seen = now;
                if let Some(c) = connections {
                    p.connections = c;
                }
            }
            None => {
                tracing::info!(node, "cluster: node {node} joined");
                peers.insert(
                    node,
                    Peer {
                        instance,
                        last_seen: now,
                        connections: connections.unwrap_or(0),
                    },
                );
            }
        }
    }

    /// This node's answer to a request from `h.from`.
    fn answer(&self, router: &Router, h: &Header, request: u64, room: Option<String>) -> Vec<u8> {
        let (count, mut members) = match room {
            None => (router.connection_count(), Vec::new()),
            Some(r) => {
                let m = router.room(&r).members();
                (m.len(), m)
            }
        };
        let fit = self
            .max_payload
            .load(Ordering::Relaxed)
            .saturating_sub(ANSWER_OVERHEAD)
            / ID_BYTES;
        let truncated = members.len() > fit;
        members.truncate(fit);
        let body = Value::Array(vec![
            Value::from(request),
            Value::from(count),
            wire::id_list(&members),
            Value::Bool(truncated),
        ]);
        wire::encode(self.head(Kind::Answer, Some(h.from)), &body)
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
                "the broker is not connected; a message for every node was not delivered".into()
            }
            _ => refused.to_string(),
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
