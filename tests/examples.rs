//! Every example of `engine/examples/`, started in-process from its own source on port
//! 0 and driven over real sockets.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]
#![allow(
    clippy::duplicate_mod,
    reason = "each example includes `examples/common/mod.rs` by `#[path]`, so including the examples as modules includes it once per example"
)]

use std::time::Duration;

use conduit::{ServerDescriptor, Value};
use conduit_protocol::Codec;
use conduit_tests::{matrix, start, TestClient};

#[path = "../engine/examples/background_tasks.rs"]
mod background_tasks;
#[path = "../engine/examples/basic_server.rs"]
mod basic_server;
#[path = "../engine/examples/chat_client.rs"]
mod chat_client;
#[path = "../engine/examples/chat_server.rs"]
mod chat_server;
#[path = "../engine/examples/game_server.rs"]
mod game_server;
#[path = "../engine/examples/shutdown.rs"]
mod shutdown;
#[path = "../engine/examples/tokio_embed.rs"]
mod tokio_embed;
#[path = "../engine/examples/typed_rpc.rs"]
mod typed_rpc;

/// Runs the chat client example as `name` on `script` (its stdin) against `addr`;
/// what it showed.
fn run_chat_client(addr: std::net::SocketAddr, name: &str, script: &str) -> String {
    use std::sync::{Arc, Mutex};
    let screen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let shown: chat_client::Screen = screen.clone();
    let desc = conduit::ClientDescriptor::new("chat_secret")
        .runtime(conduit_tests::runtime())
        .addr(addr);
    chat_client::run(
        desc,
        Some(name),
        std::io::Cursor::new(script.to_owned()),
        shown,
    )
    .unwrap();
    let out = screen.lock().unwrap().clone();
    String::from_utf8(out).unwrap()
}

/// The messages `c` receives up to and including the first of type `last`.
fn messages_until(c: &mut TestClient, last: &str) -> Vec<(String, Value)> {
    let mut seen: Vec<(String, Value)> = Vec::new();
    while seen.last().map(|(n, _)| n.as_str()) != Some(last) {
        seen.push(c.next_message().unwrap());
    }
    seen
}

fn desc(password: &str) -> ServerDescriptor {
    conduit_tests::test_descriptor(password)
}

fn data(reply: Value) -> Value {
    assert_eq!(reply.get("success"), Some(&Value::Bool(true)), "{reply}");
    reply.get("data").cloned().unwrap()
}

fn error(reply: Value) -> (i64, String) {
    assert_eq!(reply.get("success"), Some(&Value::Bool(false)), "{reply}");
    (
        reply.get("code").and_then(Value::as_i64).unwrap(),
        reply
            .get("error")
            .and_then(Value::as_str)
            .unwrap()
            .to_owned(),
    )
}

fn args(pairs: &[(&str, Value)]) -> Value {
    Value::from_pairs(pairs.iter().cloned())
}

#[matrix]
fn basic_server_example() {
    let server = basic_server::build(desc("secret")).unwrap();
    let (running, addr) = start(&server);
    let mut c = TestClient::login(addr, Codec::V1, "secret");
    assert_eq!(
        data(
            c.rpc("echo", &args(&[("message", "hello".into())]))
                .unwrap()
        ),
        Value::from("hello")
    );
    assert_eq!(
        data(
            c.rpc("add", &args(&[("a", 2.into()), ("b", 3.into())]))
                .unwrap()
        ),
        Value::Int(5)
    );
    let status = data(c.rpc("get_status", &Value::map()).unwrap());
    assert_eq!(status.get("status"), Some(&Value::from("online")));
    assert_eq!(status.get("clients"), Some(&Value::Int(1)));
    assert!(status.get("uptime").and_then(Value::as_f64).unwrap() >= 0.0);
    running.stop().unwrap();
}

#[matrix]
fn typed_rpc_example() {
    let server = typed_rpc::build(desc("secret")).unwrap();
    let (running, addr) = start(&server);
    let mut c = TestClient::login(addr, Codec::Native, "secret");
    let user = data(
        c.rpc(
            "create_user",
            &args(&[
                ("username", "ann".into()),
                ("email", "ann@x.io".into()),
                ("age", 41.into()),
            ]),
        )
        .unwrap(),
    );
    assert_eq!(user.get("active"), Some(&Value::Bool(true)));
    let id = user.get("id").and_then(Value::as_i64).unwrap();
    let found = data(c.rpc("get_user", &args(&[("user_id", id.into())])).unwrap());
    assert_eq!(found.get("username"), Some(&Value::from("ann")));
    let (code, msg) = error(
        c.rpc("get_user", &args(&[("user_id", 999.into())]))
            .unwrap(),
    );
    assert_eq!(
        (code, msg.as_str()),
        (1001, "Error in get_user: 'User 999 not found'")
    );
    let (code, msg) = error(
        c.rpc(
            "create_user_model",
            &args(&[
                ("username", "x".into()),
                ("email", "bad".into()),
                ("age", (-1).into()),
            ]),
        )
        .unwrap(),
    );
    assert_eq!(code, 2000);
    assert!(
        msg.contains("username") && msg.contains("email") && msg.contains("age"),
        "{msg}"
    );
    let made = data(
        c.rpc(
            "create_user_model",
            &args(&[
                ("username", "bob".into()),
                ("email", "bob@example.com".into()),
                ("age", 30.into()),
                ("roles", Value::from_iter(["admin", "dev"])),
            ]),
        )
        .unwrap(),
    );
    assert_eq!(made.get("roles"), Some(&Value::from_iter(["admin", "dev"])));
    let (code, msg) = error(
        c.rpc("divide", &args(&[("a", 1.into()), ("b", 0.into())]))
            .unwrap(),
    );
    assert_eq!(
        (code, msg.as_str()),
        (1001, "Error in divide: Cannot divide by zero")
    );
    running.stop().unwrap();
}

#[matrix]
fn chat_server_three_clients() {
    let server = chat_server::build(desc("chat_secret").name("ChatServer")).unwrap();
    let (running, addr) = start(&server);
    let mut a = TestClient::login(addr, Codec::V1, "chat_secret");
    let (name, welcome_a) = a.next_message().unwrap();
    assert_eq!(name, "welcome");
    let a_name = welcome_a
        .get("username")
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    assert!(a_name.starts_with("User_"));

    let mut b = TestClient::login(addr, Codec::Native, "chat_secret");
    let (_, welcome_b) = b.next_message().unwrap();
    let b_name = welcome_b
        .get("username")
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    let (name, joined) = a.next_message().unwrap();
    assert_eq!(name, "user_joined");
    assert_eq!(
        joined,
        Value::map()
            .with("username", b_name.as_str())
            .with("count", 2)
    );

    let mut c = TestClient::login(addr, Codec::V1, "chat_secret");
    let (_, welcome_c) = c.next_message().unwrap();
    let c_name = welcome_c
        .get("username")
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    for x in [&mut a, &mut b] {
        let (name, joined) = x.next_message().unwrap();
        assert_eq!(name, "user_joined");
        assert_eq!(joined.get("username"), Some(&Value::from(c_name.as_str())));
        assert_eq!(joined.get("count"), Some(&Value::Int(3)));
    }

    // A chats: B and C get it, A gets only its reply.
    a.send_message("chat", &Value::map().with("message", "hi"))
        .unwrap();
    let (name, reply) = a.next_message().unwrap();
    assert_eq!(
        (name.as_str(), reply),
        ("chat_response", Value::map().with("sent", true))
    );
    for x in [&mut b, &mut c] {
        let (name, msg) = x.next_message().unwrap();
        assert_eq!(name, "chat");
        assert_eq!(msg.get("from"), Some(&Value::from(a_name.as_str())));
        assert_eq!(msg.get("message"), Some(&Value::from("hi")));
        assert!(msg.get("time").and_then(Value::as_f64).unwrap() > 1.0e9);
    }

    // A renames: everyone (A too) sees name_change; A also gets its reply.
    a.send_message("set_name", &Value::map().with("username", "alice"))
        .unwrap();
    for x in [&mut a, &mut b, &mut c] {
        let (name, change) = x.next_message().unwrap();
        assert_eq!(name, "name_change");
        assert_eq!(
            change,
            Value::map()
                .with("old", a_name.as_str())
                .with("new", "alice")
        );
    }
    let (name, reply) = a.next_message().unwrap();
    assert_eq!(
        (name.as_str(), reply),
        ("set_name_response", Value::map().with("username", "alice"))
    );

    // RPCs.
    let set = data(
        b.rpc("set_username", &args(&[("username", "bob".into())]))
            .unwrap(),
    );
    assert_eq!(set, Value::map().with("set", true).with("username", "bob"));
    assert_eq!(
        data(a.rpc("get_user_count", &Value::map()).unwrap()),
        Value::Int(3)
    );
    let mut users: Vec<String> = data(a.rpc("get_users", &Value::map()).unwrap())
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    users.sort();
    let mut want = vec!["alice".to_owned(), "bob".to_owned(), c_name.clone()];
    want.sort();
    assert_eq!(users, want);

    // C leaves: A and B hear it.
    drop(c);
    for x in [&mut a, &mut b] {
        let (name, left) = x.next_message().unwrap();
        assert_eq!(name, "user_left");
        assert_eq!(
            left,
            Value::map()
                .with("username", c_name.as_str())
                .with("count", 2)
        );
    }
    running.stop().unwrap();
}

#[matrix]
fn game_server_example() {
    let server = game_server::build(desc("secret")).unwrap();
    let (running, addr) = start(&server);
    let mut p1 = TestClient::login(addr, Codec::Native, "secret");
    let mut p2 = TestClient::login(addr, Codec::V1, "secret");
    p1.send_message("player_move", &Value::map().with("x", 3).with("y", 4))
        .unwrap();
    let (name, moved) = p2.next_message().unwrap();
    assert_eq!(name, "player_moved");
    assert_eq!(moved.get("x"), Some(&Value::Float(3.0)));
    assert_eq!(
        moved.get("player_id").and_then(Value::as_str).map(str::len),
        Some(8)
    );
    p2.send_message("player_attack", &Value::map().with("target_id", "abc"))
        .unwrap();
    for p in [&mut p1, &mut p2] {
        let (name, attack) = p.next_message().unwrap();
        assert_eq!(name, "attack");
        let dmg = attack.get("damage").and_then(Value::as_i64).unwrap();
        assert!((10..20).contains(&dmg));
    }
    p1.send_message("chat", &Value::map().with("message", "gg"))
        .unwrap();
    for p in [&mut p1, &mut p2] {
        let (name, chat) = p.next_message().unwrap();
        assert_eq!(name, "chat");
        assert_eq!(chat.get("message"), Some(&Value::from("gg")));
        assert!(chat
            .get("from")
            .and_then(Value::as_str)
            .unwrap()
            .starts_with("Player_"));
    }
    running.stop().unwrap();
}

/// The game example's matches: a typed, validated `join_match` (a bad id is answered
/// with `join_match_error`), and moves inside a match reach only that match's players.
#[matrix]
fn game_matches_are_rooms() {
    let server = game_server::build(desc("secret")).unwrap();
    let (running, addr) = start(&server);
    let mut a = TestClient::login(addr, Codec::Native, "secret");
    let mut b = TestClient::login(addr, Codec::V1, "secret");
    let mut c = TestClient::login(addr, Codec::Native, "secret");
    let join = |p: &mut TestClient, id: &str| {
        p.send_message("join_match", &Value::map().with("match_id", id))
            .unwrap();
        p.next_message().unwrap()
    };
    let (name, err) = join(&mut a, "no spaces!");
    assert_eq!(name, "join_match_error");
    assert_eq!(err.get("code"), Some(&Value::Int(2000)));
    assert_eq!(
        join(&mut a, "m1"),
        (
            "join_match_response".to_owned(),
            Value::map().with("match_id", "m1").with("players", 1)
        )
    );
    assert_eq!(join(&mut b, "m1").1.get("players"), Some(&Value::Int(2)));
    assert_eq!(join(&mut c, "m2").1.get("players"), Some(&Value::Int(1)));
    // A move in m1 reaches b, not c: c's next message is the chat sent after it (one
    // sender's frames arrive in order).
    a.send_message("player_move", &Value::map().with("x", 1).with("y", 2))
        .unwrap();
    let (name, moved) = b.next_message().unwrap();
    assert_eq!(name, "player_moved");
    assert_eq!(moved.get("y"), Some(&Value::Float(2.0)));
    a.send_message("chat", &Value::map().with("message", "gl"))
        .unwrap();
    assert_eq!(c.next_message().unwrap().0, "chat");
    assert_eq!(b.next_message().unwrap().0, "chat");
    // Switching matches leaves the old one.
    assert_eq!(join(&mut b, "m2").1.get("players"), Some(&Value::Int(2)));
    assert_eq!(server.room("match:m1").len(), 1);
    running.stop().unwrap();
}

#[matrix]
fn background_tasks_broadcast_status() {
    let server = background_tasks::build(desc("secret"), Duration::from_millis(50)).unwrap();
    let (running, addr) = start(&server);
    let mut c = TestClient::login(addr, Codec::V1, "secret");
    for _ in 0..2 {
        let (name, status) = c.next_message().unwrap();
        assert_eq!(name, "server_status");
        assert_eq!(status.get("clients"), Some(&Value::Int(1)));
    }
    running.stop().unwrap();
}

#[matrix]
fn shutdown_from_a_handler_tells_everyone_and_closes() {
    let server = shutdown::build(desc("secret")).unwrap();
    let (running, addr) = start(&server);
    let mut admin = TestClient::login(addr, Codec::V1, "secret");
    let mut other = TestClient::login(addr, Codec::Native, "secret");
    admin.send_message("admin_stop", &Value::map()).unwrap();
    running.wait().unwrap();
    assert!(!server.is_running());
    for c in [&mut admin, &mut other] {
        let names: Vec<String> = c
            .expect_closed()
            .into_iter()
            .filter(|f| f.header.kind == conduit_protocol::FrameKind::Message)
            .map(|f| match c.codec {
                Codec::V1 => match f.v1() {
                    conduit_protocol::v1::V1Payload::Message { name, .. } => name,
                    _ => unreachable!(),
                },
                Codec::Native => f.native_routed().0,
            })
            .collect();
        assert!(names.contains(&"server_shutdown".to_owned()), "{names:?}");
    }
}

#[matrix]
fn chat_client_talks_to_chat_server() {
    let server = chat_server::build(desc("chat_secret")).unwrap();
    let (running, addr) = start(&server);
    let mut watcher = TestClient::login(addr, Codec::V1, "chat_secret");
    assert_eq!(watcher.next_message().unwrap().0, "welcome");

    let out = run_chat_client(addr, "alice", "hello\n/users\n/name carol\n/quit\n");
    let seen = messages_until(&mut watcher, "user_left");
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "user_joined",
            "name_change",
            "chat",
            "name_change",
            "user_left"
        ]
    );
    assert_eq!(seen[2].1.get("from"), Some(&Value::from("alice")));
    assert_eq!(seen[2].1.get("message"), Some(&Value::from("hello")));
    assert_eq!(
        seen[3].1,
        Value::map().with("old", "alice").with("new", "carol")
    );
    assert_eq!(seen[4].1.get("username"), Some(&Value::from("carol")));

    assert!(out.contains("* welcome, you are User_"), "{out}");
    assert!(out.contains("* online: ["), "{out}");
    assert!(out.contains("alice"), "{out}");
    assert!(out.contains("* you are now carol"), "{out}");
    running.stop().unwrap();
}

/// The chat example's channels: the Rust chat client joins `#rust` where a watcher is
/// a member and a bystander is not; its lines go to the channel only, presence is
/// announced to the channel, and leaving ends it.
#[matrix]
fn chat_channels_reach_only_their_members() {
    let server = chat_server::build(desc("chat_secret")).unwrap();
    let (running, addr) = start(&server);
    let mut watcher = TestClient::login(addr, Codec::Native, "chat_secret");
    assert_eq!(watcher.next_message().unwrap().0, "welcome");
    let mut bystander = TestClient::login(addr, Codec::V1, "chat_secret");
    assert_eq!(bystander.next_message().unwrap().0, "welcome");
    assert_eq!(watcher.next_message().unwrap().0, "user_joined");
    let joined = watcher
        .rpc("join_channel", &Value::map().with("channel", "#rust"))
        .unwrap();
    assert_eq!(
        data(joined),
        Value::map()
            .with("channel", "#rust")
            .with("joined", true)
            .with("members", 1)
    );

    let out = run_chat_client(
        addr,
        "dana",
        "/join #rust\nin the channel\n/all to everyone\n/leave\n/quit\n",
    );
    // The watcher (a member) sees the channel's life; the bystander only the public
    // part — the `chat` sent after the channel message proves it never came.
    let seen = messages_until(&mut watcher, "user_left");
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "user_joined",
            "name_change",
            "channel_joined",
            "channel_chat",
            "chat",
            "channel_left",
            "user_left"
        ]
    );
    assert_eq!(
        seen[2].1,
        Value::map()
            .with("channel", "#rust")
            .with("username", "dana")
            .with("count", 2)
    );
    assert_eq!(
        seen[3].1.get("message"),
        Some(&Value::from("in the channel"))
    );
    assert_eq!(seen[4].1.get("message"), Some(&Value::from("to everyone")));
    assert_eq!(seen[5].1.get("count"), Some(&Value::Int(1)));
    let public: Vec<String> = messages_until(&mut bystander, "user_left")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(public, ["user_joined", "name_change", "chat", "user_left"]);
    assert!(out.contains("[#rust] * you joined (2 here)"), "{out}");
    assert!(out.contains("[#rust] * you left"), "{out}");
    assert_eq!(server.room("#rust").len(), 1);
    running.stop().unwrap();
}

/// A tokio application embeds the server: started from inside the application's
/// runtime, stopped by awaiting, and a handler awaits a tokio-based call (the
/// application's own TCP service) on the tokio backend.
#[test]
fn tokio_embed_handler_awaits_a_tokio_service() {
    let app = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    app.block_on(async {
        let (scores, served) = tokio_embed::scores_service().await.unwrap();
        let server = tokio_embed::build(desc("secret"), scores).unwrap();
        let running = server.start().unwrap();
        assert_eq!(running.runtime(), conduit::Runtime::Tokio);
        let addr = server.local_addr().unwrap();
        // The test's blocking client runs off the application's runtime threads.
        let replies = tokio::task::spawn_blocking(move || {
            let mut c = TestClient::login(addr, Codec::Native, "secret");
            ["alice", "bob"]
                .iter()
                .map(|name| {
                    c.send_message("score", &Value::map().with("name", *name))
                        .unwrap();
                    c.next_message().unwrap()
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        for ((kind, data), name) in replies.iter().zip(["alice", "bob"]) {
            assert_eq!(kind, "score_response");
            assert_eq!(
                data.get("name").and_then(Value::as_str),
                Some(name),
                "{data}"
            );
            assert_eq!(
                data.get("score").and_then(Value::as_i64),
                Some(tokio_embed::score_of(name)),
                "{data}"
            );
        }
        assert_eq!(served.load(std::sync::atomic::Ordering::Relaxed), 2);
        running.stop_and_wait().await.unwrap();
        assert!(!server.is_running());
    });
}
