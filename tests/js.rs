//! The JavaScript client's own unit tests (`clients/js/test/`, Node's built-in runner),
//! run from `cargo test` so one command covers the whole project.

use std::path::Path;
use std::process::Command;

#[test]
fn the_javascript_client_passes_its_unit_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/js");
    let out = Command::new("node")
        .arg("--test")
        .arg("test/")
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "`node` is needed for the JavaScript client's tests (.ci/run installs nodejs): {e}"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "node --test failed:\n{text}");
    assert!(text.contains("# pass"), "no test ran:\n{text}");
}
