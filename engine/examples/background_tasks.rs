//! The Server Guide's "With Background Tasks": a periodic status broadcast running
//! beside the server.
//!
//! `cargo run --example background_tasks` (port 8080, password `secret`; `PORT`
//! overrides; `STATUS_INTERVAL_MS` sets the period, default 30 000).

use std::time::Duration;

use conduit::{Server, ServerDescriptor, Value};

#[path = "common/mod.rs"]
mod common;

/// Builds the server; every `interval` it broadcasts `server_status` to everyone.
pub fn build(desc: ServerDescriptor, interval: Duration) -> conduit::Result<Server> {
    let server = Server::new(desc)?;
    server.on_startup(move |srv| async move {
        // The task lives on the shard that runs the startup hooks, beside the
        // connections it serves; it ends when the server stops.
        conduit::rt::spawn(async move {
            loop {
                conduit::rt::sleep(interval).await;
                if !srv.is_running() {
                    break;
                }
                let time = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                srv.broadcast(
                    "server_status",
                    Value::map()
                        .with("clients", srv.connection_count())
                        .with("time", time),
                )
                .await;
            }
        });
    });
    Ok(server)
}

#[allow(
    dead_code,
    reason = "tests/examples.rs includes this file as a module and calls `build`, not `main`"
)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_logging()?;
    let ms = std::env::var("STATUS_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let server = build(
        ServerDescriptor::new("secret").port(common::port(8080)),
        Duration::from_millis(ms),
    )?;
    server.run()?;
    Ok(())
}
