//! The steps of the connection-core fuzz target, shared by `core.rs` and by
//! `engine/tests/fuzz_regressions.rs`, which replays `fuzz/regressions/core/` through
//! them in every `cargo test`. The driver itself lives in the engine
//! (`engine/src/core/fuzz.rs`), beside the private core it drives.

/// One input through a client and server core in virtual time.
pub fn core(data: &[u8]) {
    conduit::__fuzz::core(data);
}
