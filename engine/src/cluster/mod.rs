//! Scale-out: several servers (nodes) running the same application share broadcasts,
//! room broadcasts and sends/kicks by connection id through a broker they already
//! run — Redis pub/sub or NATS. Nodes never talk to each other directly.
//!
//! Each node publishes everything it sends to other nodes on **one channel of its
//! own** (`<cluster>.node.<id>`) over one broker connection, and subscribes to every
//! node's channel of its cluster (`<cluster>.node.*`). The broker delivers one
//! publisher's messages to a subscriber in publish order, so frames from one sender
//! reach each receiver in the order they were sent, across nodes as on one node —
//! including a send by id followed by a broadcast. The price: a send by id reaches
//! every node's adapter, and all but its owner (named in the message's fixed header)
//! drop it before decoding the rest.
//!
//! The broker client runs on the service thread (`conduit::rt::service`), whichever
//! backend the shards use. A node's messages are encoded and size-checked on the
//! sending shard, then queued (bounded) to the service thread, which publishes them.
//!
//! What `broadcast(..).await` returns with a cluster: this node's count. Cluster-wide
//! counts and room members are an explicit request with a timeout
//! ([`Cluster::connection_count`], [`Cluster::room_members`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use conduit::cluster::{Broker, ClusterDescriptor, Unreachable};
//! use conduit::{Server, ServerDescriptor};
//!
//! # fn main() -> conduit::Result<()> {
//! let cluster = ClusterDescriptor::new(Broker::nats("nats://10.0.0.5:4222"), 7) // node 7
//!     .cluster_name("game-eu")              // channel prefix: clusters on one broker stay apart
//!     .if_unreachable(Unreachable::Fail);   // or LocalOnly: serve, keep retrying
//! let server = Server::new(ServerDescriptor::new("secret").cluster(cluster))?;
//! server.on("who", |conn, _data| async move {
//!     let cluster = conn.server().cluster().expect("a cluster node");
//!     let everyone = cluster.connection_count(Duration::from_millis(200)).await.ok();
//!     let _ = conn.send_message("who", everyone.map(|c| c.total).unwrap_or(0) as u64).await;
//! });
//! server.run()
//! # }
//! ```

#[cfg(any(feature = "redis", feature = "nats"))]
mod link;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "redis", feature = "nats"))]
mod wire;

pub use crate::descriptor::cluster::{Broker, BrokerAuth, ClusterDescriptor, Unreachable};
pub use crate::error::ClusterError;
pub use crate::router::{Cluster, ClusterCount, ClusterMembers, ClusterStats, NodeInfo};

#[cfg(any(feature = "redis", feature = "nats"))]
pub(crate) use link::start;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn addresses_hide_credentials() {
        assert_eq!(
            Broker::redis("redis://u:secret@h:1/0").address(),
            "redis://***@h:1/0"
        );
        assert_eq!(
            Broker::nats("nats://a:b@x:1,nats://y:2").address(),
            "nats://***@x:1,nats://y:2"
        );
        let auth = BrokerAuth {
            password: Some("pw".into()),
            ..BrokerAuth::default()
        };
        assert!(!format!("{auth:?}").contains("pw"));
    }

    #[test]
    fn bad_settings_are_named() {
        let d = ClusterDescriptor::new(Broker::redis("redis://127.0.0.1:1"), 1);
        let field = |d: ClusterDescriptor| match d.validate() {
            Err(crate::Error::Config { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(d.clone().cluster_name("a.b")), "cluster");
        assert_eq!(field(d.clone().cluster_name("")), "cluster");
        let mut n = d.clone();
        n.node = 1024;
        assert_eq!(field(n), "node");
        assert_eq!(
            field(
                d.clone()
                    .node_liveness(Duration::from_secs(2), Duration::from_secs(1))
            ),
            "node_timeout"
        );
        assert_eq!(field(d.clone().max_payload_bytes(10)), "max_payload_bytes");
    }
}
