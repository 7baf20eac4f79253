//! Shared by the examples: logging, the listening port, and `--config FILE`.

use conduit::config::{Config, LogError, LogSettings};
use conduit::ServerDescriptor;

/// Logs to stderr (`conduit::config::init_logging`): text, with colour only on a
/// terminal; `CONDUIT_LOG_FORMAT=json` for JSON lines; `RUST_LOG` overrides the level
/// (default `info`).
#[allow(dead_code, reason = "each example uses only some of these helpers")]
pub fn init_logging() -> Result<(), LogError> {
    conduit::config::init_logging(&LogSettings::default())
}

/// The server's settings: from the TOML file after `--config` (or `--config=FILE`),
/// with `CONDUIT_*` environment overrides, when the command line has one — its `[log]`
/// section then sets up the log; otherwise `default()`, logging as [`init_logging`].
#[allow(dead_code, reason = "each example uses only some of these helpers")]
pub fn descriptor(
    default: impl FnOnce() -> ServerDescriptor,
) -> Result<ServerDescriptor, Box<dyn std::error::Error>> {
    match config_arg(std::env::args().skip(1))? {
        Some(path) => {
            // Its Display names the setting and where it was written.
            let config = Config::from_file(&path).map_err(|e| e.to_string())?;
            conduit::config::init_logging(config.log())?;
            Ok(config.into_descriptor())
        }
        None => {
            init_logging()?;
            Ok(default())
        }
    }
}

/// The file named by `--config FILE` or `--config=FILE` among `args`.
#[allow(dead_code, reason = "each example uses only some of these helpers")]
pub fn config_arg(args: impl IntoIterator<Item = String>) -> Result<Option<String>, String> {
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args
                .next()
                .map(Some)
                .ok_or_else(|| "--config needs a file".to_owned());
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Ok(Some(path.to_owned()));
        }
    }
    Ok(None)
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
