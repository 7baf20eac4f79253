//! The figures a running server reports: `Server::stats` and the Prometheus exporter,
//! scraped over HTTP with a real client while connections come and go.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use std::time::Duration;

use conduit::metrics::{AuthFailureKind, CloseKind};
use conduit::{rpc, Server, Value};
use conduit_protocol::Codec;
use conduit_tests::{matrix, start, test_descriptor, wait_until, TestClient};

const PW: &str = "secret";

/// Add two numbers.
#[rpc]
async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Waits `ms` milliseconds before answering.
#[rpc]
async fn slow(ms: i64) -> i64 {
    conduit::rt::sleep(Duration::from_millis(ms as u64)).await;
    ms
}

/// `GET url`, the body as text.
fn scrape(url: &str) -> String {
    ureq::get(url)
        .call()
        .expect("scrape answered")
        .body_mut()
        .read_to_string()
        .expect("scrape body")
}

/// The sum of every sample of `name` whose labels include all of `labels`.
fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[matrix]
fn a_prometheus_scrape_follows_connections_calls_and_failed_logins() {
    let desc = test_descriptor(PW).metrics_addr("127.0.0.1:0".parse().unwrap());
    let server = Server::new(desc).unwrap();
    server.rpc(add);
    server.rpc(slow);
    let (running, addr) = start(&server);
    let url = format!(
        "http://{}/metrics",
        server.metrics_addr().expect("exporter")
    );

    let body = scrape(&url);
    assert_eq!(sum(&body, "conduit_up", &[]), 1.0);
    assert_eq!(sum(&body, "conduit_connections", &[]), 0.0);
    assert!(body.contains("# TYPE conduit_rpc_duration_seconds histogram"));

    let mut a = TestClient::login(addr, Codec::Native, PW);
    let mut b = TestClient::login(addr, Codec::V1, PW);
    let c = TestClient::login(addr, Codec::Native, PW);
    let args = Value::map().with("a", 2).with("b", 3);
    for _ in 0..5 {
        a.rpc("add", &args).unwrap();
    }
    b.rpc("add", &args).unwrap();
    let unknown = b.rpc("no_such_method", &Value::map()).unwrap();
    assert_eq!(unknown.get("success"), Some(&Value::from(false)));

    let body = scrape(&url);
    assert_eq!(
        sum(&body, "conduit_connections", &[("codec", "native")]),
        2.0
    );
    assert_eq!(sum(&body, "conduit_connections", &[("codec", "v1")]), 1.0);
    assert_eq!(sum(&body, "conduit_logins_total", &[]), 3.0);
    let add = [("method", "add")];
    assert_eq!(sum(&body, "conduit_rpc_calls_total", &add), 6.0);
    assert_eq!(sum(&body, "conduit_rpc_errors_total", &add), 0.0);
    assert_eq!(sum(&body, "conduit_rpc_duration_seconds_count", &add), 6.0);
    let inf = [("method", "add"), ("le", "+Inf")];
    assert_eq!(sum(&body, "conduit_rpc_duration_seconds_bucket", &inf), 6.0);
    assert!(sum(&body, "conduit_rpc_duration_seconds_sum", &add) > 0.0);
    let unknown = [("method", "(unknown)")];
    assert_eq!(sum(&body, "conduit_rpc_calls_total", &unknown), 1.0);
    assert_eq!(sum(&body, "conduit_rpc_errors_total", &unknown), 1.0);
    // Logins, replies and calls are frames both ways; both shards are listed.
    assert!(sum(&body, "conduit_frames_received_total", &[]) >= 10.0);
    assert!(sum(&body, "conduit_frames_sent_total", &[]) >= 10.0);
    assert!(sum(&body, "conduit_bytes_received_total", &[]) > 0.0);
    assert!(sum(&body, "conduit_bytes_sent_total", &[]) > 0.0);
    for shard in ["0", "1"] {
        assert!(body.contains(&format!(
            "conduit_frames_received_total{{shard=\"{shard}\"}}"
        )));
    }

    drop(a);
    drop(c);
    wait_until("two closes", || server.connection_count() == 1);
    let body = scrape(&url);
    assert_eq!(sum(&body, "conduit_connections", &[]), 1.0);
    assert_eq!(
        sum(&body, "conduit_closes_total", &[("reason", "peer")]),
        2.0
    );

    let mut d = TestClient::connect(addr, Codec::Native).unwrap();
    let reply = d.authenticate("wrong").unwrap();
    assert!(
        reply.reason().contains("Invalid password"),
        "{}",
        reply.reason()
    );
    wait_until("the failed login counted", || {
        server
            .stats()
            .auth_failures(AuthFailureKind::BadCredentials)
            == 1
    });
    let body = scrape(&url);
    let bad = [("reason", "bad_credentials")];
    assert_eq!(sum(&body, "conduit_auth_failures_total", &bad), 1.0);

    // A handler that waits is timed from the request's read to its result.
    b.rpc("slow", &Value::map().with("ms", 30)).unwrap();
    let slow = server.stats().method("slow").unwrap().clone();
    assert_eq!(slow.latency.count(), 1);
    assert!(
        slow.latency.sum_ns >= 30_000_000,
        "{} ns for a 30 ms handler",
        slow.latency.sum_ns
    );
    assert!(slow.latency.quantile_bound(1.0) >= Some(Duration::from_millis(50)));

    // The same figures through the API.
    let stats = server.stats();
    assert!(stats.running);
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.shards.len(), 2);
    assert_eq!(stats.method("add").unwrap().calls, 6);
    assert_eq!(stats.method("add").unwrap().latency.count(), 6);
    assert_eq!(stats.closes(CloseKind::Peer), 2);
    assert_eq!(stats.logins(), 3);

    // Only /metrics is served.
    match ureq::get(&format!("http://{}/", server.metrics_addr().unwrap())).call() {
        Err(ureq::Error::StatusCode(404)) => {}
        other => panic!("expected 404, got {other:?}"),
    }
    drop(b);
    running.stop().unwrap();
    assert!(
        server.metrics_addr().is_none(),
        "the exporter stops with the server"
    );
}

#[test]
fn a_metrics_address_in_use_fails_the_start_naming_the_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let desc = test_descriptor(PW).metrics_addr(taken.local_addr().unwrap());
    let server = Server::new(desc).unwrap();
    let err = server
        .start()
        .expect_err("the address is taken")
        .to_string();
    assert!(err.contains("metrics_addr"), "{err}");
    assert!(!server.is_running());
}

#[test]
fn calls_over_the_rate_limit_are_exported_once_their_connection_closes() {
    let mut desc = test_descriptor(PW).metrics_addr("127.0.0.1:0".parse().unwrap());
    desc.max_inbound_frames_per_s = Some(1);
    let server = Server::new(desc).unwrap();
    server.rpc(add);
    let (running, addr) = start(&server);
    let url = format!(
        "http://{}/metrics",
        server.metrics_addr().expect("exporter")
    );
    let mut c = TestClient::login(addr, Codec::Native, PW);
    let args = Value::map().with("a", 1).with("b", 1);
    let refused = (0..5)
        .filter(|_| c.rpc("add", &args).unwrap().get("code") == Some(&Value::from(4290)))
        .count();
    assert!(refused >= 1, "a burst of 5 calls at 1/s is over the limit");
    drop(c);
    wait_until("the close counted", || {
        server
            .stats()
            .shards
            .iter()
            .map(|s| s.rate_limited)
            .sum::<u64>()
            == refused as u64
    });
    let body = scrape(&url);
    assert_eq!(
        sum(&body, "conduit_rate_limited_total", &[]),
        refused as f64
    );
    running.stop().unwrap();
}
