//! Shared by the examples: logging and the listening port.

/// Logs to stderr; `RUST_LOG` overrides the level (default `info`).
#[allow(dead_code, reason = "each example uses only some of these helpers")]
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

/// The port from `PORT` (0 picks a free one), or `default`.
#[allow(dead_code, reason = "each example uses only some of these helpers")]
pub fn port(default: u16) -> u16 {
    std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(default)
}

/// A cluster from `CLUSTER` (a `redis://`/`rediss://` or `nats://`/`tls://` URL) and
/// `NODE` (this node's id, default 1); `None` without `CLUSTER`.
#[allow(dead_code, reason = "each example uses only some of these helpers")]
pub fn cluster() -> Option<conduit::cluster::ClusterDescriptor> {
    use conduit::cluster::{Broker, ClusterDescriptor};
    let url = std::env::var("CLUSTER").ok()?;
    let node = std::env::var("NODE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let broker = if url.starts_with("nats://") || url.starts_with("tls://") {
        Broker::nats(url)
    } else {
        Broker::redis(url)
    };
    Some(ClusterDescriptor::new(broker, node))
}
