//! `conduit::config::init_logging` in a process of its own (it sets the process's one
//! global subscriber): a bad filter is an error that sets nothing up, and a second call
//! is an error, not a panic.

#![cfg(feature = "config")]

use conduit::config::{init_logging, LogError, LogFormat, LogSettings, LOG_FORMAT_ENV};

#[test]
fn errors_instead_of_panics() {
    // The one test of this binary: nothing else reads the environment meanwhile.
    std::env::remove_var("RUST_LOG");
    std::env::remove_var(LOG_FORMAT_ENV);
    let bad = init_logging(&LogSettings::default().filter("info,[["));
    assert!(
        matches!(
            bad,
            Err(LogError::Filter {
                origin: "log.filter",
                ..
            })
        ),
        "{bad:?}"
    );
    let json = LogSettings::default()
        .format(LogFormat::Json)
        .filter("warn");
    assert!(
        init_logging(&json).is_ok(),
        "nothing was set up by the failed call"
    );
    assert!(matches!(init_logging(&json), Err(LogError::AlreadySet)));
}
