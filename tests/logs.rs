//! What the server writes to the log: every line about a connection carries its span
//! (shard, peer, id, codec) and an RPC's its method and correlation id; at `info`, a
//! crowd of connections coming and going writes nothing per connection. Its own test
//! binary: it installs the process's global subscriber.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use conduit::{rpc, Server, Value};
use conduit_protocol::Codec;
use conduit_tests::{start, test_descriptor, wait_until, TestClient};

const PW: &str = "secret";

/// Add two numbers, saying so in the log.
#[rpc]
async fn add(a: i64, b: i64) -> i64 {
    tracing::info!("adding {a} and {b}");
    a + b
}

/// Everything written to the log, shared with the subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn log_lines_carry_the_connection_and_rpc_spans_and_info_is_quiet_per_connection() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let server = Server::new(test_descriptor(PW)).unwrap();
    server.rpc(add);
    let (running, addr) = start(&server);

    let mut client = TestClient::login(addr, Codec::Native, PW);
    let args = Value::map().with("a", 2).with("b", 40);
    client.rpc("add", &args).unwrap();
    let text = log.text();
    let line = text
        .lines()
        .find(|l| l.contains("adding 2 and 40"))
        .unwrap_or_else(|| panic!("the handler's line is missing:\n{text}"));
    let peer = client.stream().local_addr().unwrap();
    for field in [
        "conn{".to_owned(),
        "shard=".to_owned(),
        format!("peer={peer}"),
        "id=".to_owned(),
        "codec=Native".to_owned(),
        "rpc{method=add correlation_id=".to_owned(),
    ] {
        assert!(line.contains(&field), "{field:?} missing from {line:?}");
    }
    drop(client);
    wait_until("the first client gone", || server.connection_count() == 0);

    // A crowd comes and goes: not one line at info.
    let before = log.text().len();
    let crowd: Vec<_> = (0..50)
        .map(|i| {
            let codec = if i % 2 == 0 { Codec::V1 } else { Codec::Native };
            TestClient::login(addr, codec, PW)
        })
        .collect();
    wait_until("the crowd in", || server.connection_count() == 50);
    drop(crowd);
    wait_until("the crowd gone", || {
        server.connection_count() == 0
            && server.stats().closes(conduit::metrics::CloseKind::Peer) == 51
    });
    let during = log.text()[before..].to_owned();
    assert!(during.is_empty(), "lines written at info:\n{during}");

    running.stop().unwrap();
}
