//! Rooms over real sockets, on 2 shards and in both codecs: exact receiver sets for a
//! room, a union of rooms, a room minus `exclude` or narrowed by `include`, after a
//! leave and after a disconnect; joins and leaves ordered with the broadcasts that
//! follow them, also for a connection on another shard; presence under churn; the
//! limits; the hooks; per-connection extensions.
//!
//! Whether a peer received a room broadcast is read deterministically: the handler
//! that sends it then sends a `marker` to everyone from the same task, and frames from
//! one sender reach each receiver in order, so a peer received the room broadcast iff
//! it arrives before the marker.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use conduit::{Connection, ConnectionId, RoomError, Server, ServerDescriptor, Value};
use conduit_protocol::Codec;
use conduit_tests::{matrix, start, test_descriptor, TestClient};

const PW: &str = "secret";
const WAIT: Duration = Duration::from_secs(10);

/// The names in a `rooms` array of a message.
fn names(data: &Value, key: &str) -> Vec<String> {
    match data.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Ids in an `ids` array of a message.
fn ids(data: &Value, key: &str) -> Vec<ConnectionId> {
    match data.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().and_then(|s| s.parse().ok()))
            .collect(),
        _ => Vec::new(),
    }
}

/// The connection a join or leave is for: the one with the message's `id` (wherever
/// it lives), else the sender.
fn target(c: &Connection, data: &Value) -> Connection {
    match data.get("id").and_then(Value::as_str) {
        Some(id) => c.server().connection(id.parse().unwrap()).unwrap(),
        None => c.clone(),
    }
}

/// A server whose handlers let a client join and leave rooms (its own, or — with an
/// `id` — another connection's, wherever it lives) and broadcast to rooms.
fn server(desc: ServerDescriptor) -> Server {
    let server = Server::new(desc).unwrap();
    server.on("join", |c, data: Value| async move {
        let room = data.get("room").and_then(Value::as_str).unwrap_or_default();
        match target(&c, &data).join(room).await {
            Ok(new) => Value::map().with("joined", new),
            Err(e) => Value::map().with("error", e.to_string()),
        }
    });
    server.on("leave", |c, data: Value| async move {
        let room = data.get("room").and_then(Value::as_str).unwrap_or_default();
        Value::map().with("left", target(&c, &data).leave(room).await.unwrap())
    });
    // Broadcast `said` to `rooms` (narrowed by `include` / `exclude`), then `marker` to
    // everyone from this same task; reply with the count.
    server.on("say", |c, data: Value| async move {
        let mut b = c.server().broadcast("said", Value::from("hi"));
        for room in names(&data, "rooms") {
            b = b.to(room);
        }
        if data.get("include").is_some() {
            b = b.include(ids(&data, "include"));
        }
        b = b.exclude(ids(&data, "exclude"));
        let n = b.await;
        c.server().broadcast("marker", Value::Nil).await;
        Value::map().with("count", n as i64)
    });
    // Join then broadcast in one task: the joiner must get it. Leave then broadcast:
    // the leaver must not.
    server.on("join_and_say", |c, data: Value| async move {
        let room = data.get("room").and_then(Value::as_str).unwrap_or_default();
        let id: ConnectionId = data
            .get("id")
            .and_then(Value::as_str)
            .unwrap()
            .parse()
            .unwrap();
        let other = c.server().connection(id).unwrap();
        other.join(room).await.unwrap();
        let after_join = c
            .server()
            .broadcast("said", Value::from("in"))
            .to(room)
            .await;
        other.leave(room).await.unwrap();
        let after_leave = c
            .server()
            .broadcast("said", Value::from("out"))
            .to(room)
            .await;
        c.server().broadcast("marker", Value::Nil).await;
        Value::map()
            .with("after_join", after_join as i64)
            .with("after_leave", after_leave as i64)
    });
    server.on("whoami", |c, _: Value| async move {
        Value::from(c.id().to_string())
    });
    server
}

/// A logged-in test client and its id.
struct Peer {
    client: TestClient,
    id: ConnectionId,
    /// Messages that arrived while waiting for a reply, in order.
    backlog: VecDeque<(String, Value)>,
}

impl Peer {
    fn login(addr: SocketAddr, codec: Codec) -> Peer {
        let client = TestClient::login(addr, codec, PW);
        let mut p = Peer {
            client,
            id: ConnectionId::from_u64(0),
            backlog: VecDeque::new(),
        };
        p.id = p
            .ask("whoami", &Value::Nil)
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        p
    }

    /// Sends a message and returns its reply's data; other messages are kept.
    fn ask(&mut self, name: &str, data: &Value) -> Value {
        self.client.send_message(name, data).unwrap();
        let reply = format!("{name}_response");
        loop {
            let (n, d) = self.client.next_message().unwrap();
            if n == reply {
                return d;
            }
            self.backlog.push_back((n, d));
        }
    }

    fn next(&mut self) -> (String, Value) {
        match self.backlog.pop_front() {
            Some(m) => m,
            None => self.client.next_message().unwrap(),
        }
    }

    fn join(&mut self, room: &str) -> Value {
        self.ask("join", &Value::map().with("room", room))
    }

    fn leave(&mut self, room: &str) -> bool {
        let r = self.ask("leave", &Value::map().with("room", room));
        r.get("left").and_then(Value::as_bool).unwrap()
    }

    /// The `said` messages before the next `marker`.
    fn heard(&mut self) -> Vec<Value> {
        let mut heard = Vec::new();
        loop {
            let (name, data) = self.next();
            match name.as_str() {
                "said" => heard.push(data),
                "marker" => return heard,
                _ => {}
            }
        }
    }
}

/// `n` peers spread over both shards, codecs alternating with period 3 (so no codec
/// pairs with one shard).
fn peers(addr: SocketAddr, n: usize) -> Vec<Peer> {
    let peers: Vec<Peer> = (0..n)
        .map(|i| Peer::login(addr, if i % 3 == 0 { Codec::V1 } else { Codec::Native }))
        .collect();
    let shards: BTreeSet<usize> = peers.iter().map(|p| p.id.shard()).collect();
    assert_eq!(shards.len(), 2, "peers on both shards");
    peers
}

/// Has `sender` say to `rooms` (with optional include/exclude); returns the count and
/// which peers heard it (by index).
fn say(
    peers: &mut [Peer],
    sender: usize,
    rooms: &[&str],
    include: Option<&[usize]>,
    exclude: &[usize],
) -> (i64, BTreeSet<usize>) {
    let id_list = |idx: &[usize], peers: &[Peer]| {
        Value::Array(
            idx.iter()
                .map(|&i| Value::from(peers[i].id.to_string()))
                .collect(),
        )
    };
    let mut data = Value::map()
        .with(
            "rooms",
            Value::Array(rooms.iter().map(|r| Value::from(*r)).collect()),
        )
        .with("exclude", id_list(exclude, peers));
    if let Some(inc) = include {
        data = data.with("include", id_list(inc, peers));
    }
    let reply = peers[sender].ask("say", &data);
    let count = reply.get("count").and_then(Value::as_i64).unwrap();
    let heard = peers
        .iter_mut()
        .enumerate()
        .filter_map(|(i, p)| (!p.heard().is_empty()).then_some(i))
        .collect();
    (count, heard)
}

fn set(v: &[usize]) -> BTreeSet<usize> {
    v.iter().copied().collect()
}

#[matrix]
fn room_broadcasts_reach_exactly_the_members() {
    let server = server(test_descriptor(PW));
    let (running, addr) = start(&server);
    let mut p = peers(addr, 9);
    for i in [0, 1, 2, 3] {
        assert_eq!(p[i].join("red"), Value::map().with("joined", true));
    }
    for i in [3, 4, 5] {
        p[i].join("blue");
    }
    // Joining again is not an error, and changes nothing.
    assert_eq!(p[0].join("red"), Value::map().with("joined", false));

    assert_eq!(say(&mut p, 8, &["red"], None, &[]), (4, set(&[0, 1, 2, 3])));
    // A union: peer 3 is in both and hears it once.
    let (n, heard) = say(&mut p, 8, &["red", "blue"], None, &[]);
    assert_eq!((n, heard), (6, set(&[0, 1, 2, 3, 4, 5])));
    assert_eq!(
        say(&mut p, 8, &["red"], None, &[1, 4]),
        (3, set(&[0, 2, 3]))
    );
    assert_eq!(
        say(&mut p, 8, &["red", "blue"], Some(&[2, 5, 7]), &[]),
        (2, set(&[2, 5]))
    );
    // The sender is a member too, when it is in the room.
    assert_eq!(say(&mut p, 0, &["red"], None, &[0]), (3, set(&[1, 2, 3])));
    // A room nobody is in.
    assert_eq!(say(&mut p, 8, &["green"], None, &[]), (0, set(&[])));

    // After a leave.
    assert!(p[1].leave("red"));
    assert!(!p[1].leave("red"));
    assert_eq!(say(&mut p, 8, &["red"], None, &[]), (3, set(&[0, 2, 3])));
    assert_eq!(server.room("red").len(), 3);

    // After a disconnect: gone from every room, the rooms' counts too.
    let gone = p.remove(3);
    let gone_id = gone.id;
    drop(gone);
    let deadline = std::time::Instant::now() + WAIT;
    while server.room("blue").contains(gone_id) {
        assert!(std::time::Instant::now() < deadline, "left on disconnect");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(say(&mut p, 7, &["red"], None, &[]), (2, set(&[0, 2])));
    assert_eq!(say(&mut p, 7, &["blue"], None, &[]), (2, set(&[3, 4])));
    let mut members = server.room("blue").members();
    members.sort();
    let mut expected = vec![p[3].id, p[4].id];
    expected.sort();
    assert_eq!(members, expected);
    running.stop().unwrap();
}

#[matrix]
fn joins_and_leaves_are_ordered_with_the_broadcasts_after_them_across_shards() {
    let server = server(test_descriptor(PW));
    let (running, addr) = start(&server);
    let mut p = peers(addr, 6);
    // For every pair of (actor, target) on different shards and on the same shard.
    for actor in 0..p.len() {
        for target in 0..p.len() {
            if actor == target {
                continue;
            }
            let room = format!("r{actor}-{target}");
            let data = Value::map()
                .with("room", room.as_str())
                .with("id", p[target].id.to_string());
            let reply = p[actor].ask("join_and_say", &data);
            assert_eq!(
                (
                    reply.get("after_join").and_then(Value::as_i64),
                    reply.get("after_leave").and_then(Value::as_i64)
                ),
                (Some(1), Some(0)),
                "actor on shard {}, target on shard {}",
                p[actor].id.shard(),
                p[target].id.shard()
            );
            let heard = p[target].heard();
            assert_eq!(heard, vec![Value::from("in")], "the joiner heard only `in`");
            for (i, other) in p.iter_mut().enumerate() {
                if i != target {
                    assert!(other.heard().is_empty());
                }
            }
            assert!(server.room(&room).is_empty());
        }
    }
    assert!(server.rooms().is_empty(), "empty rooms are removed");
    running.stop().unwrap();
}

#[matrix]
fn presence_counts_hold_under_churn_and_hooks_see_every_join_and_leave() {
    let server = server(test_descriptor(PW));
    let (events_tx, events) = mpsc::channel::<(String, ConnectionId, String)>();
    let tx = events_tx.clone();
    server.on_join(move |c, room| {
        let tx = tx.clone();
        async move {
            tx.send(("join".into(), c.id(), room)).unwrap();
        }
    });
    server.on_leave(move |c, room| {
        let tx = events_tx.clone();
        async move {
            tx.send(("leave".into(), c.id(), room)).unwrap();
        }
    });
    let (running, addr) = start(&server);
    let mut all = peers(addr, 30);
    for p in &mut all {
        p.join("lobby");
    }
    for p in all.iter_mut().step_by(3) {
        p.join("queue");
    }
    assert_eq!(server.room("lobby").len(), 30);
    assert_eq!(server.room("queue").len(), 10);
    let joins: Vec<_> = events.try_iter().collect();
    assert_eq!(joins.len(), 40);
    assert!(joins.iter().all(|(kind, _, _)| kind == "join"));

    // Half of them disconnect: each leaves its rooms, and the hooks say so.
    let leaving: Vec<Peer> = all.drain(..15).collect();
    let expected_leaves: usize = leaving
        .iter()
        .enumerate()
        .map(|(i, _)| if i % 3 == 0 { 2 } else { 1 })
        .sum();
    let gone: BTreeSet<ConnectionId> = leaving.iter().map(|p| p.id).collect();
    drop(leaving);
    let mut leaves = Vec::new();
    while leaves.len() < expected_leaves {
        let e = events.recv_timeout(WAIT).expect("a leave event per room");
        assert_eq!(e.0, "leave");
        assert!(gone.contains(&e.1));
        leaves.push(e);
    }
    assert_eq!(server.room("lobby").len(), 15);
    assert_eq!(server.room("queue").len(), 5);
    let lobby: BTreeSet<ConnectionId> = server.room("lobby").members().into_iter().collect();
    assert_eq!(lobby, all.iter().map(|p| p.id).collect());
    // And a last explicit leave is one more event.
    assert!(all[0].leave("lobby"));
    let e = events.recv_timeout(WAIT).unwrap();
    assert_eq!(
        (e.0.as_str(), e.1, e.2.as_str()),
        ("leave", all[0].id, "lobby")
    );
    assert_eq!(server.room("lobby").len(), 14);
    running.stop().unwrap();
}

#[matrix]
fn room_limits_are_refused_with_their_error() {
    let mut desc = test_descriptor(PW);
    desc.max_rooms = 4;
    desc.max_rooms_per_connection = 2;
    desc.max_room_name_bytes = 8;
    let server = server(desc);
    let (running, addr) = start(&server);
    let mut p = peers(addr, 4);
    let err = |v: Value| v.get("error").and_then(Value::as_str).unwrap().to_owned();
    assert_eq!(
        err(p[0].join("")),
        conduit::Error::Room(RoomError::InvalidName("empty")).to_string()
    );
    assert!(err(p[0].join("ninebytes")).contains("max_room_name_bytes"));
    assert!(err(p[0].join("a\u{7}b")).contains("control character"));
    // Per connection.
    p[0].join("a");
    p[0].join("b");
    assert!(err(p[0].join("c")).contains("max_rooms_per_connection"));
    // In total: 4 rooms exist, a fifth is refused, existing ones still take members.
    p[1].join("c");
    p[1].join("d");
    assert!(err(p[2].join("e")).contains("max_rooms"));
    assert_eq!(p[2].join("a"), Value::map().with("joined", true));
    assert_eq!(server.rooms().len(), 4);
    // Once a room empties, a new one may be made.
    assert!(p[1].leave("d"));
    assert_eq!(p[2].join("e"), Value::map().with("joined", true));
    running.stop().unwrap();
}

/// Sends a message on a plain test client and returns its reply's data.
fn reply(c: &mut TestClient, name: &str, data: &Value) -> Value {
    c.send_message(name, data).unwrap();
    let (n, d) = c.next_message().unwrap();
    assert_eq!(n, format!("{name}_response"));
    d
}

/// Sets its flag when dropped.
struct DropFlag(mpsc::Sender<ConnectionId>, ConnectionId);

impl Drop for DropFlag {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

#[matrix]
fn extensions_live_as_long_as_the_connection() {
    #[derive(Clone, Debug, PartialEq)]
    struct Player {
        name: String,
        score: i64,
    }
    let server = Server::new(test_descriptor(PW)).unwrap();
    let (dropped_tx, dropped) = mpsc::channel::<ConnectionId>();
    let (seen_tx, seen) = mpsc::channel::<Option<Player>>();
    server.on_client_connect(move |c| {
        let tx = dropped_tx.clone();
        async move {
            c.insert_extension(Player {
                name: format!("p-{}", c.id()),
                score: 0,
            });
            c.insert_extension(DropFlag(tx, c.id()));
        }
    });
    server.on("score", |c, data: Value| async move {
        let add = data.as_i64().unwrap_or(0);
        let total = c.with_extension(|p: &mut Player| {
            p.score += add;
            p.score
        });
        Value::from(total.unwrap_or(-1))
    });
    server.on_client_disconnect(move |c| {
        let tx = seen_tx.clone();
        async move {
            // Still there for the disconnect hooks.
            tx.send(c.extension::<Player>()).unwrap();
        }
    });
    let (running, addr) = start(&server);
    let mut a = TestClient::login(addr, Codec::Native, PW);
    let mut b = TestClient::login(addr, Codec::V1, PW);
    assert_eq!(reply(&mut a, "score", &Value::from(5)), Value::from(5));
    assert_eq!(reply(&mut a, "score", &Value::from(2)), Value::from(7));
    assert_eq!(reply(&mut b, "score", &Value::from(1)), Value::from(1));
    drop(a);
    let last = seen.recv_timeout(WAIT).unwrap().expect("read in the hook");
    assert_eq!(last.score, 7);
    // Dropped with the connection, after the hooks.
    let gone = dropped.recv_timeout(WAIT).unwrap();
    assert_eq!(format!("p-{gone}"), last.name);
    assert_eq!(reply(&mut b, "score", &Value::from(1)), Value::from(2));
    running.stop().unwrap();
}
