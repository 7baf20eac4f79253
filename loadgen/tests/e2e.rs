//! End to end: the real binary starts its own `serve` child, runs tiny scenarios over
//! loopback, and the JSON it writes must show every delivery and every call accounted
//! for. No timing is asserted.

use conduit::Runtime;

mod common;

use common::{exe, read_json, run, Scratch};

#[test]
fn broadcast_counts_add_up_in_both_codecs() {
    let scratch = Scratch::new("e2e", "broadcast");
    for (codec, mode) in [("v1", "saturate"), ("native", "single")] {
        let json = scratch.file(&format!("broadcast-{codec}.json"));
        run(exe()
            .args([
                "broadcast",
                "--codec",
                codec,
                "--mode",
                mode,
                "--window",
                "16",
                "--connections",
                "20",
                "--messages",
                "50",
                "--duration-s",
                "30",
                "--drain-s",
                "30",
                "--no-progress",
                "--json",
            ])
            .arg(&json));
        let r = read_json(&json);
        assert_eq!(r["scenario"], format!("broadcast-{mode}"));
        assert_eq!(r["messages"], 50);
        assert_eq!(r["ops"], 50 * 20, "{r:#}");
        assert_eq!(r["loss"]["expected"], 50 * 20);
        assert_eq!(r["loss"]["delivered"], 50 * 20);
        assert_eq!(r["loss"]["lost"], 0);
        assert_eq!(r["loss"]["unfinished"], 0);
        assert_eq!(r["loss"]["out_of_order"], 0);
        assert_eq!(r["errors"], 0);
        assert_eq!(r["complete"], true);
        assert_eq!(r["latency"]["count"], 50 * 20);
        assert_eq!(r["fanout"]["count"], 50);
        assert!(r["server_cpu_s"].as_f64().is_some(), "server CPU was read");
    }
}

/// The same scenarios over the WebSocket transport: the spawned server gets a
/// WebSocket listener, every delivery and every call is accounted for.
#[test]
fn websocket_transport_counts_add_up() {
    let scratch = Scratch::new("e2e", "websocket");
    for (codec, mode) in [("native", "saturate"), ("v1", "single")] {
        let json = scratch.file(&format!("broadcast-{codec}.json"));
        run(exe()
            .args([
                "broadcast",
                "--transport",
                "websocket",
                "--codec",
                codec,
                "--mode",
                mode,
                "--window",
                "16",
                "--connections",
                "20",
                "--messages",
                "50",
                "--duration-s",
                "30",
                "--drain-s",
                "30",
                "--no-progress",
                "--json",
            ])
            .arg(&json));
        let r = read_json(&json);
        assert_eq!(r["target"], "conduit ws");
        assert_eq!(r["ops"], 50 * 20, "{r:#}");
        assert_eq!(r["loss"]["lost"], 0);
        assert_eq!(r["loss"]["out_of_order"], 0);
        assert_eq!(r["errors"], 0);
        assert_eq!(r["complete"], true);
    }
    let json = scratch.file("rpc.json");
    run(exe()
        .args([
            "rpc",
            "--transport",
            "websocket",
            "--connections",
            "20",
            "--depth",
            "4",
            "--calls",
            "2000",
            "--duration-s",
            "30",
            "--no-progress",
            "--json",
        ])
        .arg(&json));
    let r = read_json(&json);
    assert_eq!(r["ops"], 2000, "{r:#}");
    assert_eq!(r["errors"], 0);
    assert_eq!(r["complete"], true);
}

/// A room broadcast: of 60 connections, 10 join a room (spread over the server's two
/// shards when the login says which shard serves a connection), and each of the
/// sender's ticks reaches the other 9 members and nobody else.
#[test]
fn room_broadcast_reaches_every_member_and_only_them() {
    let scratch = Scratch::new("e2e", "room");
    for (codec, shards) in [("native", "2"), ("v1", "1")] {
        let json = scratch.file(&format!("room-{codec}.json"));
        run(exe()
            .args([
                "broadcast",
                "--codec",
                codec,
                "--shards",
                shards,
                "--connections",
                "60",
                "--room-members",
                "10",
                "--messages",
                "20",
                "--duration-s",
                "30",
                "--drain-s",
                "30",
                "--no-progress",
                "--json",
            ])
            .arg(&json));
        let r = read_json(&json);
        assert_eq!(r["scenario"], "broadcast-room", "{r:#}");
        assert_eq!(r["connections"], 60);
        assert_eq!(r["room_members"], 10, "the server's count of the room");
        let per_shard: Vec<u64> = r["room_members_per_shard"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .collect();
        assert_eq!(per_shard.iter().sum::<u64>(), 10);
        if codec == "native" {
            assert_eq!(per_shard, [5, 5], "members dealt over both shards");
        }
        assert_eq!(r["messages"], 20);
        assert_eq!(r["ops"], 20 * 9);
        assert_eq!(r["loss"]["expected"], 20 * 9);
        assert_eq!(r["loss"]["delivered"], 20 * 9);
        assert_eq!(r["loss"]["lost"], 0);
        assert_eq!(r["loss"]["unfinished"], 0);
        assert_eq!(
            r["errors"], 0,
            "no tick reached a connection outside the room"
        );
        assert_eq!(r["complete"], true);
        assert_eq!(r["fanout"]["count"], 20);
        assert!(r["server_cpu_us_per_message"].as_f64().is_some());
    }
}

/// The scenarios of a quick suite, in the order they run.
const SCENARIOS: [&str; 10] = [
    "connect",
    "heartbeat",
    "heartbeat-ping",
    "broadcast-single",
    "broadcast-rate",
    "broadcast-saturate",
    "rpc",
    "broadcast-single-2sh",
    "broadcast-rate-2sh",
    "broadcast-saturate-2sh",
];

/// One quick suite runs every scenario on glommio and on tokio, side by side, and
/// labels each run, summary and target with the backend the server reported. Where
/// this machine cannot run glommio (io_uring refused), `--runtime both` is refused
/// before any server starts, and the default (`auto`) runs everything on tokio.
#[test]
fn quick_suite_runs_every_scenario_on_both_runtimes() {
    let scratch = Scratch::new("e2e", "suite");
    let json = scratch.file("suite.json");
    let suite = |runtime: &str| {
        let mut cmd = exe();
        cmd.args([
            "suite",
            "--quick",
            "--connections",
            "20",
            "--codecs",
            "native",
            "--no-progress",
            "--runtime",
            runtime,
            "--out",
        ])
        .arg(&json);
        cmd
    };
    let runtimes: &[&str] = match Runtime::Glommio.resolve(2) {
        Ok(_) => {
            run(&mut suite("both"));
            &["glommio", "tokio"]
        }
        Err(why) => {
            eprintln!("glommio cannot run here ({why}): checking that `both` is refused");
            let out = suite("both").output().expect("run conduit-loadgen");
            assert_eq!(out.status.code(), Some(2), "{out:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("cannot run on glommio"), "{stderr}");
            assert!(!json.exists(), "no run started");
            run(&mut suite("auto"));
            &["tokio"]
        }
    };
    let r = read_json(&json);
    assert_eq!(
        r["failures"].as_array().unwrap().len(),
        0,
        "{:#}",
        r["failures"]
    );
    // The chart beside the JSON names every scenario.
    let svg = std::fs::read_to_string(scratch.file("suite.svg")).unwrap();
    roxmltree::Document::parse(&svg).unwrap();
    for scenario in SCENARIOS {
        assert!(svg.contains(&format!("\n{scenario}\n")), "{scenario}");
    }
    let runs = r["runs"].as_array().unwrap();
    // Each scenario on every runtime in turn, labelled with the one the server ran on.
    let ran: Vec<(&str, &str)> = runs
        .iter()
        .map(|x| {
            (
                x["scenario"].as_str().unwrap(),
                x["runtime"].as_str().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(&str, &str)> = SCENARIOS
        .iter()
        .flat_map(|s| runtimes.iter().map(move |rt| (*s, *rt)))
        .collect();
    assert_eq!(ran, expected);
    for run in runs {
        assert_eq!(run["target"], "conduit");
        assert_eq!(run["errors"], 0, "{run:#}");
        assert_eq!(run["connections"], 20);
        if let Some(loss) = run["loss"].as_object() {
            assert_eq!(loss["lost"], 0, "{run:#}");
            assert_eq!(loss["unfinished"], 0, "{run:#}");
            assert_eq!(
                run["ops"].as_u64().unwrap(),
                run["messages"].as_u64().unwrap() * 20,
                "{run:#}"
            );
        }
        match run["scenario"].as_str().unwrap() {
            "rpc" => {
                assert_eq!(run["op"], "calls");
                assert!(run["ops"].as_u64().unwrap() > 0);
            }
            "connect" => {
                assert_eq!(run["ops"], 20);
                assert!(run["rss_idle_kib"].as_u64().unwrap() > 0);
            }
            _ => {}
        }
    }
    let summaries = r["summaries"].as_array().unwrap();
    assert_eq!(summaries.len(), SCENARIOS.len() * runtimes.len());
    for rt in runtimes {
        assert_eq!(
            summaries.iter().filter(|s| s["runtime"] == *rt).count(),
            SCENARIOS.len(),
            "{rt}"
        );
        assert!(
            r["targets"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["runtime"] == *rt),
            "no targets checked on {rt}"
        );
    }
    // The load generator ran on `auto`'s choice whatever the server's backend.
    let loadgen = Runtime::Auto.resolve(1).unwrap();
    assert_eq!(r["machine"]["loadgen_runtime"], loadgen.name());
}

/// `attack`, both modes, briefly and small, against a server with the engine's login
/// budgets: under a lock-out attempt every real login from another address succeeds;
/// under guessing, the server counts a few failed logins, the rest of the guesser's
/// connections are refused with the reason, and nobody else is told "server full".
#[test]
fn attack_reports_and_the_budgets_hold() {
    let scratch = Scratch::new("e2e", "attack");
    let lockout = scratch.file("lockout.json");
    run(exe()
        .args([
            "attack",
            "--mode",
            "lockout",
            "--attackers",
            "100",
            "--clients",
            "20",
            "--duration-s",
            "2",
            "--json",
        ])
        .arg(&lockout));
    let r = read_json(&lockout);
    assert_eq!(r["mode"], "lockout");
    assert_eq!(r["server"]["max_pending_per_source"], 16, "{r:#}");
    assert_eq!(r["clients"]["attempted"], 20);
    assert_eq!(r["clients"]["succeeded"], 20, "{r:#}");
    assert!(r["lockout"]["opened"].as_u64().unwrap() >= 100, "{r:#}");
    assert!(r["bruteforce"].is_null());

    let bruteforce = scratch.file("bruteforce.json");
    run(exe()
        .args([
            "attack",
            "--mode",
            "bruteforce",
            "--attackers",
            "8",
            "--clients",
            "10",
            "--duration-s",
            "2",
            "--codec",
            "v1",
            "--json",
        ])
        .arg(&bruteforce));
    let r = read_json(&bruteforce);
    assert_eq!(r["mode"], "bruteforce");
    assert_eq!(r["codec"], "v1");
    let b = &r["bruteforce"];
    let server = b["server_failures"].as_u64().unwrap();
    assert!(server >= 1, "{r:#}");
    // Five free failures, then at most the connections already logging in.
    assert!(server <= 5 + 8 + 8, "{r:#}");
    assert!(b["guesses"].as_u64().unwrap() >= 1, "{r:#}");
    assert!(b["guesses_per_s"].as_f64().is_some());
    assert!(
        b["refused"]["too many failed logins from your address; retry later"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{r:#}"
    );
    assert_eq!(r["clients"]["attempted"], 10);
    assert_eq!(r["clients"]["server_full"], 0, "{r:#}");
    assert_eq!(r["clients"]["succeeded"], 10, "{r:#}");
}

/// `cluster`: one node alone, then two nodes through each broker this machine has
/// (started by the command itself); every tick reaches every receiver on both nodes,
/// the deliveries are counted per node, and the CPU of both nodes and of the broker is
/// read. A broker that is not installed is left out, saying so.
#[test]
fn cluster_delivers_on_both_nodes_through_each_broker() {
    use conduit_loadgen::cluster::{find_program, BrokerKind};
    let brokers: Vec<BrokerKind> = [BrokerKind::Redis, BrokerKind::Nats]
        .into_iter()
        .filter(|k| {
            let there = find_program(k.program()).is_some();
            if !there {
                eprintln!("{} is not installed: not measured", k.program());
            }
            there
        })
        .collect();
    let broker = match brokers.as_slice() {
        [_, _] => "both",
        [k] => k.name(),
        _ => return,
    };
    let scratch = Scratch::new("e2e", "cluster");
    let json = scratch.file("cluster.json");
    run(exe()
        .args([
            "cluster",
            "--broker",
            broker,
            "--rounds",
            "1",
            "--connections",
            "21",
            "--messages",
            "30",
            "--codec",
            "v1",
            "--no-progress",
            "--json",
        ])
        .arg(&json));
    let r = read_json(&json);
    let runs = r["runs"].as_array().unwrap();
    let mut setups = vec!["single"];
    setups.extend(brokers.iter().map(|k| k.name()));
    assert_eq!(
        runs.iter()
            .map(|x| x["setup"].as_str().unwrap())
            .collect::<Vec<_>>(),
        setups
    );
    for x in runs {
        let res = &x["result"];
        let run = &res["run"];
        assert_eq!(run["messages"], 30, "{x:#}");
        assert_eq!(run["connections"], 21);
        assert_eq!(run["loss"]["delivered"], 30 * 21);
        assert_eq!(run["loss"]["lost"], 0);
        assert_eq!(run["loss"]["unfinished"], 0);
        assert_eq!(run["errors"], 0);
        assert_eq!(run["complete"], true);
        let nodes = res["nodes"].as_array().unwrap();
        let receivers: Vec<u64> = nodes
            .iter()
            .map(|n| n["receivers"].as_u64().unwrap())
            .collect();
        if x["setup"] == "single" {
            assert_eq!(receivers, [21]);
            assert!(res["broker_cpu_s"].is_null());
        } else {
            assert_eq!(receivers, [11, 10], "split over the nodes, node 1 first");
            assert!(
                res["broker_cpu_s"].as_f64().is_some(),
                "broker CPU was read"
            );
        }
        for n in nodes {
            let rx = n["receivers"].as_u64().unwrap();
            assert_eq!(n["deliveries"].as_u64().unwrap(), 30 * rx);
            assert_eq!(n["latency"]["count"].as_u64().unwrap(), 30 * rx);
            assert!(n["cpu_us_per_delivery"].as_f64().is_some());
        }
    }
    let summaries = r["summaries"].as_array().unwrap();
    assert_eq!(summaries.len(), setups.len());
    for s in summaries.iter().filter(|s| s["setup"] != "single") {
        assert!(s["remote_p50_us"].as_f64().is_some(), "{s:#}");
        assert!(s["node2_cpu_us_per_delivery"].as_f64().is_some());
    }
    assert!(r["failures"].as_array().unwrap().is_empty());
}
