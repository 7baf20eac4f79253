//! A short soak (the `soak` subcommand's code, in its own test process so the open
//! descriptor count is this run's alone): connections churn through the server, and
//! afterwards `connection_count` is 0 and the descriptors are back at their baseline.
//! The 10,000-connection run is in PERF.md ("Reliability").

use conduit_loadgen::soak::{self, SoakArgs, SoakCodec};

#[test]
fn churning_connections_leave_nothing_behind() {
    let r = soak::run(&SoakArgs {
        connections: 400,
        concurrency: 40,
        rpcs: 2,
        broadcasts: 1,
        duration_s: 60.0,
        shards: 2,
        codec: SoakCodec::Both,
        json: None,
        no_progress: true,
    })
    .unwrap();
    println!("{}", r.render());
    assert!(r.complete, "{r:?}");
    assert_eq!(r.errors, 0, "{r:?}");
    assert_eq!((r.started, r.logged_in, r.completed), (400, 400, 400));
    assert_eq!((r.rpcs, r.rpc_wrong, r.broadcasts), (800, 0, 400));
    assert!(r.ticks_received > 0);
    assert_eq!(r.connection_count_final, 0);
    assert!(r.fds_returned(), "{r:?}");
    assert!(r.clean());
}
