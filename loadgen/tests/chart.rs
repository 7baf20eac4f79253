//! The suite's chart: drawn from a saved suite JSON (a trimmed real one, in
//! `fixtures/`), it must be well-formed SVG naming every scenario and every target of
//! the JSON; and the `chart` subcommand draws it end to end.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test that cannot read its fixture or its output should fail on the spot"
)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use conduit_loadgen::chart;
use serde_json::Value;

mod common;

use common::{exe, read_json, run, Scratch};

/// A suite JSON as `suite --quick --runtime both --compare redis,netconduit` wrote
/// it, trimmed to three scenarios and a run or two.
fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/suite-small.json")
}

/// The text of every `<text>` element, trimmed; panics unless `svg` is well-formed.
fn texts(svg: &str) -> BTreeSet<String> {
    let doc = roxmltree::Document::parse(svg).expect("well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_owned())
        .collect()
}

/// The scenarios and the series labels (`conduit[tokio]/v1`, `redis/resp`) of a
/// suite JSON, as the chart must name them.
fn names(suite: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let summaries = suite["summaries"].as_array().unwrap();
    let scenarios = summaries
        .iter()
        .map(|s| s["scenario"].as_str().unwrap().to_owned())
        .collect();
    let series = summaries
        .iter()
        .map(|s| {
            let target = s["target"].as_str().unwrap();
            let codec = s["codec"].as_str().unwrap();
            match s["runtime"].as_str() {
                Some(rt) => format!("{target}[{rt}]/{codec}"),
                None => format!("{target}/{codec}"),
            }
        })
        .collect();
    (scenarios, series)
}

/// Fails unless `svg` names every scenario and series of `suite`.
fn assert_names_all(svg: &str, suite: &Value) {
    let texts = texts(svg);
    let (scenarios, series) = names(suite);
    for name in scenarios.iter().chain(&series) {
        assert!(
            texts.contains(name),
            "{name} is not in the chart: {texts:?}"
        );
    }
}

#[test]
fn the_fixture_covers_every_kind_of_target() {
    let (scenarios, series) = names(&read_json(&fixture()));
    assert_eq!(scenarios.len(), 3, "{scenarios:?}");
    for peer in [
        "conduit[glommio]/native",
        "conduit[tokio]/v1",
        "netconduit/v1",
        "redis/resp",
    ] {
        assert!(series.contains(peer), "{series:?}");
    }
}

#[test]
fn chart_of_a_saved_suite_is_well_formed_and_names_everything() {
    let json = std::fs::read_to_string(fixture()).unwrap();
    let svg = chart::render(&chart::parse(&json).unwrap()).unwrap();
    assert_names_all(&svg, &read_json(&fixture()));
    let texts = texts(&svg);
    for panel in ["p50 latency", "p99 latency", "server CPU per operation"] {
        assert!(
            texts.iter().any(|t| t.starts_with(panel)),
            "{panel}: {texts:?}"
        );
    }
    // Text is left to the viewer's fonts: nothing embedded.
    assert!(!svg.contains("@font-face") && !svg.contains("<image"));
}

#[test]
fn chart_subcommand_draws_a_saved_suite() {
    let scratch = Scratch::new("chart", "subcommand");
    let out = scratch.file("nested/suite.svg");
    let done = run(exe()
        .arg("chart")
        .arg("--from")
        .arg(fixture())
        .arg("--out")
        .arg(&out));
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(stdout.contains(&out.display().to_string()), "{stdout}");
    assert_names_all(
        &std::fs::read_to_string(&out).unwrap(),
        &read_json(&fixture()),
    );
}

#[test]
fn chart_subcommand_refuses_what_is_not_a_suite() {
    let scratch = Scratch::new("chart", "refuses");
    let missing = scratch.file("missing.json");
    let not_a_suite = scratch.file("other.json");
    std::fs::write(&not_a_suite, r#"{"soak": true}"#).unwrap();
    for from in [&missing, &not_a_suite] {
        let out = exe()
            .arg("chart")
            .arg("--from")
            .arg(from)
            .output()
            .expect("run conduit-loadgen");
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("invalid arguments"));
    }
    assert!(!scratch.file("other.svg").exists());
}
