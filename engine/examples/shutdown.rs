//! The Server Guide's "Graceful Shutdown": SIGINT/SIGTERM or `stop()` stop accepting,
//! run `on_shutdown` (which can still broadcast), flush queues, close every connection
//! and run each disconnect hook.
//!
//! `cargo run --example shutdown` then press Ctrl-C (port 8080, password `secret`).

use conduit::{Server, ServerDescriptor, Value};

#[path = "common/mod.rs"]
mod common;

/// Builds the server: an `admin_stop` message stops it from inside a handler.
pub fn build(desc: ServerDescriptor) -> conduit::Result<Server> {
    let server = Server::new(desc)?;
    server.on_shutdown(|srv| async move {
        tracing::info!("Server shutting down...");
        let n = srv
            .broadcast(
                "server_shutdown",
                Value::map().with("message", "Server is shutting down"),
            )
            .await;
        tracing::info!("told {n} clients");
    });
    server.on("admin_stop", |client, _data: Value| async move {
        client.server().stop();
        Value::map().with("stopping", true)
    });
    Ok(server)
}

#[allow(
    dead_code,
    reason = "tests/examples.rs includes this file as a module and calls `build`, not `main`"
)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_logging()?;
    let server = build(ServerDescriptor::new("secret").port(common::port(8080)))?;
    // `run` installs SIGINT/SIGTERM handlers and returns after the graceful stop.
    server.run()?;
    println!("stopped cleanly");
    Ok(())
}
