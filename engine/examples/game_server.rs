//! The Server Guide's "Multiple Handlers": a game server with player_move,
//! player_attack and chat.
//!
//! `cargo run --example game_server` (port 8080, password `secret`; `PORT` overrides).

use std::collections::HashMap;
use std::sync::Mutex;

use conduit::{ConnectionId, Server, ServerDescriptor, Value};

#[path = "common/mod.rs"]
mod common;

/// One player.
#[derive(Clone, Debug)]
pub struct Player {
    name: String,
    position: (f64, f64),
}

/// Every player, by connection.
#[derive(Default)]
pub struct Players(Mutex<HashMap<ConnectionId, Player>>);

impl Players {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<ConnectionId, Player>) -> R) -> R {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut map)
    }
}

/// Damage dealt by `attacker` to `target`: deterministic so that tests can check it.
fn calculate_damage(attacker: ConnectionId, target: &str) -> i64 {
    let spread = (attacker.as_u64() as usize + target.len()) % 10;
    10 + spread as i64
}

/// Builds the server (used by `main` and by the tests).
pub fn build(desc: ServerDescriptor) -> conduit::Result<Server> {
    let server = Server::new(desc)?;
    server.manage(Players::default());

    server.on("player_move", |client, data: Value| async move {
        let srv = client.server();
        let (Some(x), Some(y)) = (
            data.get("x").and_then(Value::as_f64),
            data.get("y").and_then(Value::as_f64),
        ) else {
            return Some(Value::map().with("error", "x and y must be numbers"));
        };
        if let Some(players) = srv.state::<Players>() {
            players.with(|p| {
                if let Some(me) = p.get_mut(&client.id()) {
                    me.position = (x, y);
                }
            });
        }
        srv.broadcast(
            "player_moved",
            Value::map()
                .with("player_id", client.id().short())
                .with("x", x)
                .with("y", y),
        )
        .exclude([client.id()])
        .await;
        None
    });

    server.on("player_attack", |client, data: Value| async move {
        let target = data
            .get("target_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let damage = calculate_damage(client.id(), &target);
        client
            .server()
            .broadcast(
                "attack",
                Value::map()
                    .with("attacker", client.id().short())
                    .with("target", target)
                    .with("damage", damage),
            )
            .await;
    });

    server.on("chat", |client, data: Value| async move {
        let srv = client.server();
        let name = srv
            .state::<Players>()
            .and_then(|p| p.with(|p| p.get(&client.id()).map(|me| me.name.clone())))
            .unwrap_or_else(|| "?".into());
        let message = data.get("message").cloned().unwrap_or(Value::Nil);
        srv.broadcast(
            "chat",
            Value::map().with("from", name).with("message", message),
        )
        .await;
    });

    server.on_client_connect(|conn| async move {
        if let Some(players) = conn.server().state::<Players>() {
            let player = Player {
                name: format!("Player_{}", &conn.id().short()[..4]),
                position: (0.0, 0.0),
            };
            players.with(|p| p.insert(conn.id(), player));
        }
    });

    server.on_client_disconnect(|conn| async move {
        if let Some(players) = conn.server().state::<Players>() {
            players.with(|p| p.remove(&conn.id()));
        }
    });
    Ok(server)
}

#[allow(
    dead_code,
    reason = "tests/examples.rs includes this file as a module and calls `build`, not `main`"
)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_logging();
    build(ServerDescriptor::new("secret").port(common::port(8080)))?.run()?;
    Ok(())
}
