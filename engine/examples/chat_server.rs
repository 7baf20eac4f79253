//! The Server Guide's "Complete Example": a chat server with usernames, chat messages,
//! name changes and join/leave events — plus channels, which go beyond the guide:
//! rooms joined through RPC (`join_channel`, `leave_channel`, `list_channels`, so
//! netconduit clients use them too), `channel_chat` messages that reach only the
//! channel, and presence announcements from the room hooks.
//!
//! `cargo run --release --example chat_server` (port 8080, password `chat_secret`;
//! `PORT` overrides). Try it with two `chat_client`s. With `CLUSTER=redis://…` or
//! `CLUSTER=nats://…` and `NODE=<id>` it runs as one node of a cluster: chat and
//! channels reach users on every node (the user list stays this node's). With
//! `-- --config FILE` every setting comes from the file instead (`PORT`, `CLUSTER` and
//! `NODE` are then not read; `engine/examples/conduit.toml` is one).

use std::collections::HashMap;
use std::sync::Mutex;

use conduit::{rpc, Connection, ConnectionId, Router, Server, ServerDescriptor, State, Value};

#[path = "common/mod.rs"]
mod common;

/// client id → username.
#[derive(Default)]
pub struct Users(Mutex<HashMap<ConnectionId, String>>);

impl Users {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<ConnectionId, String>) -> R) -> R {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut map)
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

// === RPC Methods ===

/// Set the caller's username.
#[rpc]
async fn set_username(conn: Connection, users: State<Users>, username: String) -> Value {
    users.with(|u| u.insert(conn.id(), username.clone()));
    Value::map().with("set", true).with("username", username)
}

/// List the usernames online.
#[rpc]
async fn get_users(users: State<Users>) -> Vec<String> {
    users.with(|u| u.values().cloned().collect())
}

/// Count the users online.
#[rpc]
async fn get_user_count(users: State<Users>) -> usize {
    users.with(|u| u.len())
}

/// Join a channel (`#name`); its members are told.
#[rpc]
async fn join_channel(conn: Connection, channel: String) -> Result<Value, conduit::RpcError> {
    let joined = conn
        .join(&channel)
        .await
        .map_err(conduit::RpcError::failed)?;
    let members = conn.server().room(&channel).len();
    Ok(Value::map()
        .with("channel", channel)
        .with("joined", joined)
        .with("members", members))
}

/// Leave a channel.
#[rpc]
async fn leave_channel(conn: Connection, channel: String) -> Result<bool, conduit::RpcError> {
    conn.leave(&channel)
        .await
        .map_err(conduit::RpcError::failed)
}

/// A message to one channel the sender is in; everyone else never sees it. (A
/// message handler, registered with `on_message`: `channel` and `message` are read
/// from the message's data.)
#[rpc]
async fn channel_chat(
    conn: Connection,
    users: State<Users>,
    channel: String,
    message: String,
) -> Value {
    if !conn.in_room(&channel) {
        return Value::map()
            .with("sent", false)
            .with("error", "not in that channel");
    }
    let username = users.with(|u| u.get(&conn.id()).cloned());
    let receivers = conn
        .server()
        .room(&channel)
        .broadcast(
            "channel_chat",
            Value::map()
                .with("channel", channel.as_str())
                .with("from", username.unwrap_or_else(|| "Anonymous".into()))
                .with("message", message)
                .with("time", now()),
        )
        .exclude([conn.id()])
        .await;
    Value::map().with("sent", true).with("receivers", receivers)
}

/// The channels with members, and the caller's own.
#[rpc]
async fn list_channels(conn: Connection) -> Value {
    let mut all = conn.server().rooms();
    all.sort();
    let mut mine = conn.rooms();
    mine.sort();
    Value::map()
        .with("channels", Value::from_iter(all))
        .with("mine", Value::from_iter(mine))
}

fn users(server: &Router) -> State<Users> {
    server
        .state::<Users>()
        .unwrap_or_else(|| State::new(Users::default()))
}

/// Tells the other members of `channel` that `conn` joined or left (`event`), with the
/// member count after the change.
async fn announce(conn: Connection, channel: String, event: &'static str) {
    let srv = conn.server();
    let name = users(srv).with(|u| u.get(&conn.id()).cloned());
    let room = srv.room(&channel);
    let count = room.len();
    room.broadcast(
        event,
        Value::map()
            .with("channel", channel.as_str())
            .with("username", name.unwrap_or_default())
            .with("count", count),
    )
    .exclude([conn.id()])
    .await;
}

/// Builds the server (used by `main` and by the tests).
pub fn build(desc: ServerDescriptor) -> conduit::Result<Server> {
    let server = Server::new(desc)?;
    server.manage(Users::default());
    server.rpc(set_username);
    server.rpc(get_users);
    server.rpc(get_user_count);
    server.rpc(join_channel);
    server.rpc(leave_channel);
    server.rpc(list_channels);

    // === Message Handlers ===

    server.on("chat", |client, data: Value| async move {
        let srv = client.server();
        let username = users(srv).with(|u| u.get(&client.id()).cloned());
        let message = data.get("message").and_then(Value::as_str).unwrap_or("");
        srv.broadcast(
            "chat",
            Value::map()
                .with("from", username.unwrap_or_else(|| "Anonymous".into()))
                .with("message", message)
                .with("time", now()),
        )
        .exclude([client.id()])
        .await;
        Value::map().with("sent", true)
    });

    // A message handler written like an RPC method: injected parameters, named
    // arguments read from the data map (a bad one is answered with channel_chat_error).
    server.on_message(channel_chat);

    server.on("set_name", |client, data: Value| async move {
        let srv = client.server();
        let username = data
            .get("username")
            .and_then(Value::as_str)
            .unwrap_or("Anonymous")
            .to_owned();
        let old = users(srv).with(|u| u.insert(client.id(), username.clone()));
        if let Some(old) = old {
            srv.broadcast(
                "name_change",
                Value::map().with("old", old).with("new", username.as_str()),
            )
            .await;
        }
        Value::map().with("username", username)
    });

    // === Presence in channels ===

    server.on_join(|conn, channel| announce(conn, channel, "channel_joined"));
    // Also when a member disconnects (before `on_client_disconnect` forgets its name).
    server.on_leave(|conn, channel| announce(conn, channel, "channel_left"));

    // === Lifecycle ===

    server.on_startup(|srv| async move {
        tracing::info!("Chat server running on {}", srv.address());
    });

    server.on_client_connect(|conn| async move {
        let srv = conn.server();
        let name = format!("User_{}", &conn.id().short()[..4]);
        let count = users(srv).with(|u| {
            u.insert(conn.id(), name.clone());
            u.len()
        });
        tracing::info!("[+] {name} joined ({count} online)");
        let _ = conn
            .send_message(
                "welcome",
                Value::map()
                    .with("client_id", conn.id().to_string())
                    .with("username", name.as_str())
                    .with("clients", count),
            )
            .await;
        srv.broadcast(
            "user_joined",
            Value::map().with("username", name).with("count", count),
        )
        .exclude([conn.id()])
        .await;
    });

    server.on_client_disconnect(|conn| async move {
        let srv = conn.server();
        let (name, count) = users(srv).with(|u| {
            let name = u.remove(&conn.id()).unwrap_or_else(|| "Unknown".into());
            (name, u.len())
        });
        tracing::info!("[-] {name} left ({count} online)");
        srv.broadcast(
            "user_left",
            Value::map().with("username", name).with("count", count),
        )
        .await;
    });
    Ok(server)
}

// === Run ===

#[allow(
    dead_code,
    reason = "tests/examples.rs includes this file as a module and calls `build`, not `main`"
)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let desc = common::descriptor(|| {
        let desc = ServerDescriptor::new("chat_secret")
            .host("0.0.0.0")
            .port(common::port(8080))
            .name("ChatServer");
        match common::cluster() {
            Some(cluster) => desc.cluster(cluster),
            None => desc,
        }
    })?;
    build(desc)?.run()?;
    Ok(())
}
