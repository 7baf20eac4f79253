//! `cluster-node`: one node of a cluster, for the scale-out tests (`tests/cluster.rs`).
//!
//! ```text
//! cluster-node --broker redis|nats --url URL --node N [--cluster NAME]
//!              [--unreachable fail|local] [--max-payload BYTES]
//!              [--runtime auto|tokio|glommio] [--shards N]
//!              [--broker-user USER] [--broker-password PASSWORD]
//! ```
//!
//! Listens on 127.0.0.1 (a free port), password `pw`, with liveness settings short
//! enough for tests (heartbeat 100 ms, node timeout 600 ms, id claim 300 ms, reconnect
//! 50–400 ms, connect timeout 1 s). Prints `PORT <port>` on stdout once it serves, or
//! exits with status 1 and the start error on stderr. Stops gracefully on SIGTERM or
//! SIGINT, or when its stdin closes (so a test that dies does not leave it behind).
//! `--broker-user`/`--broker-password` set the broker credentials apart from the URL
//! (`BrokerAuth`); credentials in the URL work as well.
//!
//! RPC methods the tests drive (ids are the 16-hex-character display form):
//!
//! * `whoami` → `{id, node}`
//! * `join {room}` → whether the caller joined now
//! * `shout {text, room?, include?, exclude?}` → broadcasts `chat {text}`; this node's
//!   count, or an error when nobody could receive it
//! * `tell {to, text}` → sends `chat {text}` to one connection by id
//! * `kick {to}` → closes one connection by id
//! * `burst {n, to}` → for `i` in `0..n`: broadcasts `seq {i: 2i}`, then sends
//!   `seq {i: 2i+1}` to `to`
//! * `count {timeout_ms}` → the cluster-wide connection count `{total, missing,
//!   per_node: [[node, count], ...]}`
//! * `members {room, timeout_ms}` → `{members, count, missing, truncated}`
//! * `nodes` → the node ids this node believes alive
//! * `stats` → the cluster counters and `connected`

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use conduit::cluster::{Broker, BrokerAuth, Cluster, ClusterDescriptor, Unreachable};
use conduit::{ConnectionId, Router, RpcError, RpcInfo, Runtime, Server, ServerDescriptor, Value};

/// What the command line asks for.
struct Args {
    broker: Broker,
    node: usize,
    cluster: String,
    unreachable: Unreachable,
    max_payload: Option<usize>,
    runtime: Runtime,
    shards: usize,
    auth: BrokerAuth,
}

const USAGE: &str = "usage: cluster-node --broker redis|nats --url URL --node N \
     [--cluster NAME] [--unreachable fail|local] [--max-payload BYTES] \
     [--runtime auto|tokio|glommio] [--shards N] \
     [--broker-user USER] [--broker-password PASSWORD]";

fn parse_args() -> Result<Args, String> {
    let mut kind = None;
    let mut url = None;
    let mut node = None;
    let mut cluster = "conduit".to_owned();
    let mut unreachable = Unreachable::Fail;
    let mut max_payload = None;
    let mut runtime = Runtime::Auto;
    let mut shards = 2;
    let mut auth = BrokerAuth::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| {
            v.parse::<usize>()
                .map_err(|_| format!("{flag}: {v:?} is not a number"))
        };
        match flag.as_str() {
            "--broker" => kind = Some(value),
            "--url" => url = Some(value),
            "--node" => node = Some(number(&value)?),
            "--cluster" => cluster = value,
            "--unreachable" => {
                unreachable = match value.as_str() {
                    "fail" => Unreachable::Fail,
                    "local" => Unreachable::LocalOnly,
                    other => return Err(format!("--unreachable: {other:?} is not fail|local")),
                }
            }
            "--max-payload" => max_payload = Some(number(&value)?),
            "--runtime" => runtime = value.parse()?,
            "--shards" => shards = number(&value)?,
            "--broker-user" => auth.user = Some(value),
            "--broker-password" => auth.password = Some(value),
            other => return Err(format!("unknown option {other}")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let broker = match kind.as_deref() {
        Some("redis") => Broker::redis(url),
        Some("nats") => Broker::nats(url),
        Some(other) => return Err(format!("--broker: {other:?} is not redis|nats")),
        None => return Err("--broker is required".into()),
    };
    Ok(Args {
        broker,
        node: node.ok_or("--node is required")?,
        cluster,
        unreachable,
        max_payload,
        runtime,
        shards,
        auth,
    })
}

// ---- parameters ---------------------------------------------------------------------

fn bad(what: String) -> RpcError {
    RpcError::validation(what, None)
}

fn text_param(params: &Value, key: &str) -> Result<String, RpcError> {
    params
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| bad(format!("`{key}` (a string) is required")))
}

fn number_param(params: &Value, key: &str) -> Result<u64, RpcError> {
    params
        .get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| bad(format!("`{key}` (a number) is required")))
}

fn id_of(v: &Value) -> Result<ConnectionId, RpcError> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("{v:?} is not a connection id")))
}

fn id_param(params: &Value, key: &str) -> Result<ConnectionId, RpcError> {
    id_of(
        params
            .get(key)
            .ok_or_else(|| bad(format!("`{key}` is required")))?,
    )
}

/// An optional list of ids; `None` when absent or nil.
fn ids_param(params: &Value, key: &str) -> Result<Option<Vec<ConnectionId>>, RpcError> {
    match params.get(key) {
        None | Some(Value::Nil) => Ok(None),
        Some(Value::Array(items)) => items.iter().map(id_of).collect::<Result<_, _>>().map(Some),
        Some(other) => Err(bad(format!("`{key}`: {other:?} is not a list of ids"))),
    }
}

fn ids_value(ids: &[ConnectionId]) -> Value {
    Value::from_iter(ids.iter().map(|id| id.to_string()))
}

fn nodes_value(nodes: &[usize]) -> Value {
    Value::from_iter(nodes.iter().copied())
}

fn cluster_of(server: &Router) -> Result<Cluster, RpcError> {
    server
        .cluster()
        .ok_or_else(|| RpcError::failed("this server is not a node of a cluster"))
}

fn chat(text: &str) -> Value {
    Value::map().with("text", text)
}

// ---- handlers -----------------------------------------------------------------------

fn register(server: &Server) {
    server.rpc_with(RpcInfo::new("whoami"), |call| async move {
        let id = call.connection.id();
        Ok::<_, RpcError>(
            Value::map()
                .with("id", id.to_string())
                .with("node", id.node()),
        )
    });

    server.rpc_with(RpcInfo::new("join"), |call| async move {
        let room = text_param(&call.params, "room")?;
        call.connection.join(&room).await.map_err(RpcError::failed)
    });

    server.rpc_with(RpcInfo::new("shout"), |call| async move {
        let text = text_param(&call.params, "text")?;
        let mut b = call.server().broadcast("chat", chat(&text));
        if let Some(room) = call.params.get("room").and_then(Value::as_str) {
            b = b.to(room);
        }
        if let Some(ids) = ids_param(&call.params, "include")? {
            b = b.include(ids);
        }
        if let Some(ids) = ids_param(&call.params, "exclude")? {
            b = b.exclude(ids);
        }
        b.send().await.map_err(RpcError::failed)
    });

    server.rpc_with(RpcInfo::new("tell"), |call| async move {
        let to = id_param(&call.params, "to")?;
        let text = text_param(&call.params, "text")?;
        call.server()
            .send_to_id(to, "chat", chat(&text))
            .await
            .map_err(RpcError::failed)?;
        Ok::<_, RpcError>(true)
    });

    server.rpc_with(RpcInfo::new("kick"), |call| async move {
        let to = id_param(&call.params, "to")?;
        // On whichever node owns it.
        call.server()
            .disconnect_id(to)
            .await
            .map_err(RpcError::failed)?;
        Ok::<_, RpcError>(true)
    });

    server.rpc_with(RpcInfo::new("burst"), |call| async move {
        let n = number_param(&call.params, "n")?;
        let to = id_param(&call.params, "to")?;
        let server = call.server();
        for i in 0..n {
            server
                .broadcast("seq", Value::map().with("i", 2 * i))
                .send()
                .await
                .map_err(RpcError::failed)?;
            server
                .send_to_id(to, "seq", Value::map().with("i", 2 * i + 1))
                .await
                .map_err(RpcError::failed)?;
        }
        Ok::<_, RpcError>(n)
    });

    server.rpc_with(RpcInfo::new("count"), |call| async move {
        let timeout = Duration::from_millis(number_param(&call.params, "timeout_ms")?);
        let count = cluster_of(call.server())?
            .connection_count(timeout)
            .await
            .map_err(RpcError::failed)?;
        let per_node = Value::from_iter(
            count
                .per_node
                .iter()
                .map(|&(node, n)| Value::Array(vec![node.into(), n.into()])),
        );
        Ok::<_, RpcError>(
            Value::map()
                .with("total", count.total)
                .with("missing", nodes_value(&count.missing))
                .with("per_node", per_node),
        )
    });

    server.rpc_with(RpcInfo::new("members"), |call| async move {
        let room = text_param(&call.params, "room")?;
        let timeout = Duration::from_millis(number_param(&call.params, "timeout_ms")?);
        let members = cluster_of(call.server())?
            .room_members(&room, timeout)
            .await
            .map_err(RpcError::failed)?;
        Ok::<_, RpcError>(
            Value::map()
                .with("members", ids_value(&members.members))
                .with("count", members.count)
                .with("missing", nodes_value(&members.missing))
                .with("truncated", members.truncated),
        )
    });

    server.rpc_with(RpcInfo::new("nodes"), |call| async move {
        let nodes: Vec<usize> = cluster_of(call.server())?
            .nodes()
            .iter()
            .map(|n| n.node)
            .collect();
        Ok::<_, RpcError>(nodes_value(&nodes))
    });

    server.rpc_with(RpcInfo::new("stats"), |call| async move {
        let cluster = cluster_of(call.server())?;
        let s = cluster.stats();
        Ok::<_, RpcError>(
            Value::map()
                .with("published", s.published)
                .with("not_delivered", s.not_delivered)
                .with("received", s.received)
                .with("dropped", s.dropped)
                .with("node_conflicts", s.node_conflicts)
                .with("connects", s.connects)
                .with("connected", cluster.is_connected()),
        )
    });
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cluster-node: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,conduit=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();

    let mut cluster = ClusterDescriptor::new(args.broker, args.node)
        .cluster_name(args.cluster)
        .auth(args.auth)
        .if_unreachable(args.unreachable)
        .node_liveness(Duration::from_millis(100), Duration::from_millis(600))
        .claim_wait(Duration::from_millis(300))
        .reconnect(Duration::from_millis(50), Duration::from_millis(400))
        .connect_timeout(Duration::from_secs(1));
    if let Some(bytes) = args.max_payload {
        cluster = cluster.max_payload_bytes(bytes);
    }
    let desc = ServerDescriptor::new("pw")
        .host("127.0.0.1")
        .port(0)
        .shards(args.shards)
        .runtime(args.runtime)
        .drain_timeout(Duration::from_secs(2))
        .cluster(cluster);
    let server = match Server::new(desc) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cluster-node: {e}");
            return ExitCode::from(1);
        }
    };
    register(&server);
    let running = match server.start() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cluster-node: {e}");
            return ExitCode::from(1);
        }
    };

    // Stop on SIGTERM/SIGINT, or when stdin closes.
    let stopper = server.router().clone();
    match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                if signals.forever().next().is_some() {
                    stopper.stop();
                }
            });
        }
        Err(e) => eprintln!("cluster-node: no signal handler: {e}"),
    }
    let stopper = server.router().clone();
    std::thread::spawn(move || {
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        stopper.stop();
    });

    let mut out = std::io::stdout().lock();
    if writeln!(out, "PORT {}", server.port())
        .and_then(|()| out.flush())
        .is_err()
    {
        let _ = running.stop();
        return ExitCode::from(1);
    }
    drop(out);

    match running.wait() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster-node: {e}");
            ExitCode::from(1)
        }
    }
}
