//! The Server Guide's "Basic Server" and "Basic RPC": echo, add, get_status.
//!
//! `cargo run --example basic_server` (port 8080, password `secret`; `PORT` overrides),
//! or `-- --config FILE` for every setting from a file (`engine/examples/conduit.toml`).

use conduit::{rpc, Server, ServerDescriptor, Value};

#[path = "common/mod.rs"]
mod common;

/// Echo back the message.
#[rpc]
async fn echo(message: String) -> String {
    message
}

/// Add two numbers.
#[rpc]
async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Get server status.
#[rpc]
async fn get_status(conn: conduit::Connection) -> Value {
    let server = conn.server();
    Value::map()
        .with("status", "online")
        .with("clients", server.connection_count())
        .with("uptime", server.uptime().map_or(0.0, |d| d.as_secs_f64()))
}

/// Builds the server (used by `main` and by the tests).
pub fn build(desc: ServerDescriptor) -> conduit::Result<Server> {
    let server = Server::new(desc)?;
    server.rpc(echo);
    server.rpc(add);
    server.rpc(get_status);
    Ok(server)
}

#[allow(
    dead_code,
    reason = "tests/examples.rs includes this file as a module and calls `build`, not `main`"
)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let desc = common::descriptor(|| ServerDescriptor::new("secret").port(common::port(8080)))?;
    let server = build(desc)?;
    server.run()?;
    Ok(())
}
