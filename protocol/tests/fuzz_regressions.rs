//! Replays the fuzz regression inputs (`fuzz/regressions/<target>/`: seeds, and any
//! input that once found a bug) through the fuzz targets' own steps
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
use steps::{decoder, native_payload, v1_payload};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
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

fn replay(target: &str, run: fn(&[u8])) {
    for (path, data) in inputs(target) {
        eprintln!("{}", path.display());
        run(&data);
    }
}

#[test]
fn decoder_regressions() {
    replay("decoder", decoder);
}

#[test]
fn v1_payload_regressions() {
    replay("v1_payload", v1_payload);
}

#[test]
fn native_payload_regressions() {
    replay("native_payload", native_payload);
}
