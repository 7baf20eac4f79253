//! End to end against a real `redis-server`, started and stopped by the suite's own
//! code (`versus_redis::run_plan`): quick broadcasts and the rpc scenario must
//! account for every delivery and every call. Skipped, saying why, where
//! `redis-server` is not installed. No timing is asserted.

#![expect(
    clippy::expect_used,
    reason = "a test that cannot set up or read its run should fail on the spot"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use conduit_loadgen::redis;
use conduit_loadgen::scenario::RunResult;
use conduit_loadgen::suite::{self, Plan};
use conduit_loadgen::versus_redis as compare;

/// The installed `redis-server`, or `None` after saying the test is skipped.
fn redis_server() -> Option<PathBuf> {
    match redis::server::locate(None) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// The quick suite's plan named `name`.
fn plan(name: &str) -> Plan {
    suite::plans(true)
        .into_iter()
        .find(|p| p.name() == name)
        .expect("a quick suite plan")
}

fn run(program: &Path, name: &str, connections: usize) -> RunResult {
    let cpu = conduit::descriptor::allowed_cpus().first().copied();
    compare::run_plan(program, &plan(name), connections, cpu, None, false, name)
        .unwrap_or_else(|e| panic!("{name} against Redis: {e}"))
}

#[test]
fn broadcasts_and_rpc_against_a_real_redis_add_up() {
    let Some(program) = redis_server() else {
        return;
    };
    let receivers = 20;
    for name in ["broadcast-single", "broadcast-saturate"] {
        let r = run(&program, name, receivers);
        assert_eq!(r.target, "redis");
        assert_eq!(r.codec, "resp");
        assert_eq!(r.scenario, name);
        assert_eq!(r.op, "deliveries");
        assert!(r.messages > 0, "{r:?}");
        // Every message reached every subscriber, none lost, none twice.
        assert_eq!(r.ops, r.messages * receivers as u64, "{r:?}");
        let loss = r.loss.unwrap();
        assert_eq!((loss.lost, loss.unfinished), (0, 0), "{r:?}");
        assert_eq!(r.errors, 0, "{r:?}");
        assert!(r.complete, "{r:?}");
        assert_eq!(r.latency.unwrap().count, r.ops);
        assert_eq!(r.fanout.unwrap().count, r.messages);
        assert!(r.server_cpu_s.unwrap() > 0.0, "{r:?}");
        // The subscriber's message: header, "message", the channel, 64 bytes.
        assert_eq!(r.frame_bytes, Some(4 + 13 + 11 + 5 + 64 + 2));
    }
    let r = run(&program, "rpc", 10);
    assert_eq!(r.op, "calls");
    assert!(r.ops > 0, "{r:?}");
    assert_eq!(r.errors, 0, "{r:?}");
    assert!(r.complete, "{r:?}");
    assert_eq!(r.latency.unwrap().count, r.ops);
    assert!(r.server_cpu_us_per_op.is_some(), "{r:?}");

    let r = run(&program, "connect", 30);
    assert_eq!(r.ops, 30);
    assert!(r.rss_idle_kib.unwrap() > 0, "{r:?}");
}

#[test]
fn a_missing_redis_server_fails_at_once_and_says_how_to_get_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_conduit-loadgen"))
        .args([
            "suite",
            "--quick",
            "--compare",
            "redis",
            "--redis-server",
            "/surely/not/here/redis-server",
            "--no-progress",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("apt-get install redis-server") && stderr.contains("--redis-server"),
        "{stderr}"
    );
    // Nothing ran: no scenario line.
    assert!(!stderr.contains("round 1"), "{stderr}");
}
