//! What the load generator's end-to-end tests share: the real binary, a scratch
//! directory per test, reading the JSON a run wrote, and running a command that must
//! succeed.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test helper that cannot set up or read its run should fail the test on the spot"
)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// The `conduit-loadgen` binary this test run built.
pub fn exe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_conduit-loadgen"))
}

/// A fresh directory for one test's output, removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    /// `<tmp>/conduit-loadgen-<suite>-<pid>-<test>`, created empty.
    pub fn new(suite: &str, test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "conduit-loadgen-{suite}-{}-{test}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A path inside it.
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The JSON at `path`.
pub fn read_json(path: &PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Runs `cmd`, failing the test with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run conduit-loadgen");
    assert!(
        out.status.success(),
        "conduit-loadgen failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
