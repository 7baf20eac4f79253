//! Embedding the server in a tokio application. The application's own runtime runs a
//! tokio service (here a small TCP "scores" service standing in for a database or an
//! HTTP API), starts the conduit server from inside it on the tokio backend, and a
//! handler awaits a tokio-based call to that service directly: on the tokio backend
//! each shard is a tokio runtime, so `tokio::net`, `tokio::time` and libraries built on
//! them work in handlers as they do anywhere in the application.
//!
//! `cargo run --example tokio_embed` (port 8080, password `secret`; `PORT` overrides);
//! Ctrl-C stops. A client sends `score` with `{"name": "alice"}` and gets
//! `score_response` with the service's answer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use conduit::{Runtime, Server, ServerDescriptor, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[path = "common/mod.rs"]
mod common;

/// The application's tokio service: answers each line `NAME` with the line `SCORE`
/// (a stand-in computed from the name) and counts the lookups it served. Runs on the
/// runtime it is started from.
pub async fn scores_service() -> std::io::Result<(SocketAddr, Arc<AtomicU64>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(name)) = lines.next_line().await {
                    let score = score_of(&name);
                    count.fetch_add(1, Ordering::Relaxed);
                    if write
                        .write_all(format!("{score}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    Ok((addr, served))
}

/// What the scores service answers for `name`.
pub fn score_of(name: &str) -> i64 {
    name.bytes().map(i64::from).sum::<i64>() * 10
}

/// Asks the scores service at `addr` for `name`'s score, with tokio's sockets.
async fn lookup(addr: SocketAddr, name: &str) -> std::io::Result<i64> {
    let stream = TcpStream::connect(addr).await?;
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{name}\n").as_bytes()).await?;
    let line = BufReader::new(read)
        .lines()
        .next_line()
        .await?
        .unwrap_or_default();
    line.trim()
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Builds the server on the tokio backend; `score` asks the service at `scores`.
pub fn build(desc: ServerDescriptor, scores: SocketAddr) -> conduit::Result<Server> {
    // Handlers call tokio directly, so the shards must be tokio runtimes.
    let server = Server::new(desc.runtime(Runtime::Tokio))?;
    server.on("score", move |_client, data: Value| async move {
        let name = data
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        // Bounded, like every call to another service.
        let answer =
            tokio::time::timeout(std::time::Duration::from_secs(2), lookup(scores, &name)).await;
        match answer {
            Ok(Ok(score)) => Value::map().with("name", name).with("score", score),
            Ok(Err(e)) => Value::map().with("error", e.to_string()),
            Err(_) => Value::map().with("error", "scores service timed out"),
        }
    });
    Ok(server)
}

#[allow(
    dead_code,
    reason = "tests/examples.rs includes this file as a module and calls `build`, not `main`"
)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_logging()?;
    let (scores, _) = scores_service().await?;
    let server = build(
        ServerDescriptor::new("secret").port(common::port(8080)),
        scores,
    )?;
    // Starting takes milliseconds; the shards are threads of their own.
    let running = server.start()?;
    tokio::signal::ctrl_c().await?;
    running.stop_and_wait().await?;
    Ok(())
}
