//! The broker session on the service thread: connect with backoff, claim the node id,
//! then publish the outbox, deliver what arrives and beat — until the server stops.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use conduit_protocol::Value;

use super::super::wire::{self, Kind};
use super::super::Unreachable;
use super::{Adapter, Link, PUBLISH_BATCH};
use crate::error::ClusterError;
use crate::router::Router;

/// Why a session ended.
enum Ended {
    /// The server is stopping.
    Stopped,
    /// The broker connection was lost (or a publish failed).
    Lost(String),
}

/// The broker session: connect, claim, serve; on loss reconnect with backoff until
/// the server stops. Reports the first attempt's outcome on `ready`.
pub(super) async fn run<A: Adapter>(
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
                    link.undelivered_log
                        .warn(|| format!("cluster: {err}; retrying"));
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
}
