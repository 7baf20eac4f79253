//! What other nodes send, checked like peer input and acted on: deliveries, the node
//! table, cluster-wide requests and their answers, and another process claiming this
//! node's id.

use std::sync::atomic::Ordering;
use std::time::Instant;

use conduit_protocol::Value;

use super::super::wire::{self, Body, Header, Kind};
use super::{Link, Peer, ANSWER_OVERHEAD, ID_BYTES};
use crate::router::{Answer, Direct, Filter, Frames, Router};

impl Link {
    /// Checks a message from the channel and acts on it; returns a reply to publish.
    /// Nothing from the channel is trusted: whatever fails a check is dropped and
    /// counted.
    pub(super) async fn handle(
        &self,
        router: &Router,
        channel: &str,
        bytes: &[u8],
    ) -> Option<Vec<u8>> {
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
        // Node ids are below MAX_NODES: a larger one is not a node of any cluster (and
        // would grow the node table past its bound).
        if h.from >= crate::id::MAX_NODES || h.to.is_some_and(|t| t >= crate::id::MAX_NODES) {
            return self.dropped(channel, "node id out of range");
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
                "cluster: another process uses node id {} in cluster {:?}{}",
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
            .warn(|| format!("cluster: dropped a message from channel {channel:?}: {why}"));
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
}
