//! Replays the connection-core fuzz regression inputs (`fuzz/regressions/core/`: seeds,
//! and any input that once found a bug) through the target's own steps
//! (`fuzz/fuzz_targets/steps.rs`), so `cargo test` keeps checking them without
//! cargo-fuzz.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use std::path::{Path, PathBuf};

#[path = "../fuzz/fuzz_targets/steps.rs"]
mod steps;
use steps::core;

fn inputs() -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/core");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect()
}

#[test]
fn core_regressions() {
    for (path, data) in inputs() {
        eprintln!("{}", path.display());
        core(&data);
    }
}
