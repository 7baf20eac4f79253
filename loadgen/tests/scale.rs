//! End to end, at small scale: connections spread over source addresses must reach
//! the server from those addresses (the server says where each comes from), and the
//! suite's scale runs (`--scale-only`, shrunk to a few hundred connections) must run
//! and report. No timing is asserted.

use serde_json::Value;

mod common;

use common::{exe, read_json, run, Scratch};

const THREE: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];

#[test]
fn connections_come_from_every_source_address() {
    let scratch = Scratch::new("scale", "sources");
    for (scenario, codec) in [("connect", "native"), ("broadcast", "v1")] {
        let json = scratch.file(&format!("{scenario}.json"));
        run(exe()
            .args([
                scenario,
                "--codec",
                codec,
                "--connections",
                "30",
                "--sources",
                "3",
                "--no-progress",
                "--json",
            ])
            .arg(&json));
        let r = read_json(&json);
        assert_eq!(r["errors"], 0, "{r:#}");
        // The server's word, not the client's: where it saw the connections come from.
        assert_eq!(r["source_addresses"], serde_json::json!(THREE), "{r:#}");
    }
    let json = scratch.file("one.json");
    run(exe()
        .args(["connect", "--connections", "5", "--no-progress", "--json"])
        .arg(&json));
    // One source: the kernel's choice, and nothing asked of the server.
    assert_eq!(read_json(&json)["source_addresses"], Value::Null);
}

#[test]
fn bad_source_counts_are_refused_with_a_reason() {
    for (args, says) in [
        (&["connect", "--sources", "0"][..], "--sources must be"),
        (&["connect", "--sources", "255"][..], "--sources must be"),
        (
            &["connect", "--sources", "2", "--target", "[::1]:9"][..],
            "IPv4 loopback",
        ),
        (&["suite", "--sources", "3"][..], "add --scale"),
    ] {
        let out = exe().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn scale_runs_in_small() {
    let scratch = Scratch::new("scale", "suite");
    let json = scratch.file("suite.json");
    let out = run(exe()
        .args([
            "suite",
            "--scale-only",
            "--quick",
            "--scale-connections",
            "300",
            "--sources",
            "3",
            "--codecs",
            "native",
            "--no-progress",
            "--out",
        ])
        .arg(&json));
    let r = read_json(&json);
    assert_eq!(r["failures"].as_array().unwrap().len(), 0, "{r:#}");
    let runs = r["runs"].as_array().unwrap();
    let names: Vec<&str> = runs
        .iter()
        .map(|x| x["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "connect-300",
            "heartbeat-300",
            "broadcast-single-100",
            "broadcast-single-300",
            "broadcast-saturate-100",
            "broadcast-saturate-300",
        ]
    );
    for run in runs {
        assert_eq!(run["errors"], 0, "{run:#}");
        assert_eq!(run["source_addresses"], serde_json::json!(THREE), "{run:#}");
        if let Some(loss) = run["loss"].as_object() {
            assert_eq!(loss["lost"], 0, "{run:#}");
        }
    }
    assert!(runs[0]["rss_per_connection_bytes"].as_f64().is_some());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Per-delivery cost by receivers"),
        "{stdout}"
    );
    assert!(stdout.contains("RSS/idle conn"), "{stdout}");
}
