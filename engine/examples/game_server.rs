//! The Server Guide's "Multiple Handlers": a game server with player_move,
//! player_attack and chat — plus matches, which go beyond the guide: a player joins a
//! match with a typed, validated `join_match` message; a match is a room, so moves of
//! a player in a match reach only the players of that match; which match a player is
//! in is kept on its connection (an extension).
//!
//! `cargo run --example game_server` (port 8080, password `secret`; `PORT` overrides),
//! or `-- --config FILE` for every setting from a file (`engine/examples/conduit.toml`).

use std::collections::HashMap;
use std::sync::Mutex;

use conduit::{ConnectionId, Reply, Server, ServerDescriptor, Value};
use serde::{Deserialize, Serialize};

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

/// `join_match`'s data, checked before the handler runs: a bad one is answered with
/// `join_match_error` (code 2000, one entry per field).
#[derive(Deserialize, garde::Validate)]
pub struct JoinMatch {
    /// Which match: 1 to 16 letters, digits or `-`.
    #[garde(length(min = 1, max = 16), pattern(r"^[A-Za-z0-9-]+$"))]
    pub match_id: String,
}

/// `join_match`'s reply.
#[derive(Serialize)]
#[serde(untagged)]
pub enum MatchJoined {
    /// Joined.
    Joined {
        /// The match joined.
        match_id: String,
        /// Players in it now, the joiner included.
        players: usize,
    },
    /// Refused (a room limit).
    Refused {
        /// Why.
        error: String,
    },
}

/// The match a player is in, kept on its connection.
#[derive(Clone, Debug)]
struct InMatch(String);

/// The room of match `id`.
fn match_room(id: &str) -> String {
    format!("match:{id}")
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
        let moved = srv.broadcast(
            "player_moved",
            Value::map()
                .with("player_id", client.id().short())
                .with("x", x)
                .with("y", y),
        );
        // In a match, only its players see the move.
        let moved = match client.extension::<InMatch>() {
            Some(InMatch(id)) => moved.to(match_room(&id)),
            None => moved,
        };
        moved.exclude([client.id()]).await;
        None
    });

    server.on_validated("join_match", |client, join: JoinMatch| async move {
        // One match at a time: leave the previous one first.
        if let Some(InMatch(old)) = client.remove_extension::<InMatch>() {
            let _ = client.leave(&match_room(&old)).await;
        }
        let room = match_room(&join.match_id);
        if let Err(e) = client.join(&room).await {
            return Reply(MatchJoined::Refused {
                error: e.to_string(),
            });
        }
        client.insert_extension(InMatch(join.match_id.clone()));
        Reply(MatchJoined::Joined {
            players: client.server().room(&room).len(),
            match_id: join.match_id,
        })
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
    let desc = common::descriptor(|| ServerDescriptor::new("secret").port(common::port(8080)))?;
    build(desc)?.run()?;
    Ok(())
}
