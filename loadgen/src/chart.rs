//! The suite's results as an SVG chart: per scenario, the p50 and p99 latency and the
//! server's CPU per operation, every target (our server on each backend and codec,
//! netconduit, Redis) side by side — one panel per metric, a bar per target, grouped by
//! scenario, on a log scale (the targets differ by orders of magnitude).
//!
//! It is drawn from the suite's JSON (the `summaries`), so a saved result can be
//! redrawn (`conduit-loadgen chart --from suite.json`) exactly as `suite` drew it.
//! plotters' SVG backend writes text as `<text>` elements, laid out with its built-in
//! size estimate: no font is looked up or embedded, the viewer's sans-serif draws it.

use std::path::{Path, PathBuf};

use clap::Args;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;

use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{dur_us, server_label};
use crate::{Error, Result};

/// `chart` options.
#[derive(Debug, Args)]
pub struct ChartArgs {
    /// A suite's JSON (what `suite` wrote, e.g. target/loadgen/suite.json).
    #[arg(long)]
    pub from: PathBuf,
    /// The SVG to write (default: beside the JSON, with `.svg`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// What the chart reads of a suite's JSON (the rest is ignored).
#[derive(Clone, Debug, Deserialize)]
pub struct SuiteFigures {
    /// Connections per scenario.
    pub connections: usize,
    /// Rounds.
    pub rounds: usize,
    /// Whether it was a quick (smoke) run.
    #[serde(default)]
    pub quick: bool,
    /// The machine, for the subtitle.
    pub machine: Option<MachineFigures>,
    /// Medians per scenario and target.
    pub summaries: Vec<SummaryFigures>,
}

/// The machine a suite ran on, as the chart names it.
#[derive(Clone, Debug, Deserialize)]
pub struct MachineFigures {
    /// CPUs the suite could use.
    pub cpus: usize,
    /// The CPU's model name.
    pub cpu_model: String,
}

/// One scenario on one target, as the chart reads it.
#[derive(Clone, Debug, Deserialize)]
pub struct SummaryFigures {
    /// Scenario (`rpc`, `broadcast-saturate-2sh`, …).
    pub scenario: String,
    /// Target (`conduit`, `netconduit`, `redis`).
    pub target: String,
    /// The backend our server ran on.
    pub runtime: Option<String>,
    /// Codec.
    pub codec: String,
    /// Median server CPU per operation, µs.
    pub cpu_us_per_op: Option<f64>,
    /// Median latency percentiles, µs.
    pub latency: Option<Percentiles>,
}

/// The latency percentiles the chart shows, µs.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
}

impl SummaryFigures {
    /// The series it belongs to: `conduit[glommio]/native`, `redis/resp`.
    pub fn series(&self) -> String {
        format!(
            "{}/{}",
            server_label(&self.target, self.runtime.as_deref()),
            self.codec
        )
    }
}

/// Reads a suite's JSON.
pub fn parse(json: &str) -> Result<SuiteFigures> {
    serde_json::from_str(json)
        .map_err(|e| Error::Args(format!("not a suite's JSON (conduit-loadgen suite): {e}")))
}

/// How a panel reads its figure from a summary.
type Figure = fn(&SummaryFigures) -> Option<f64>;

/// The metrics, one panel each: title and how to read the figure.
const PANELS: [(&str, Figure); 3] = [
    ("p50 latency (µs, log scale)", |s| {
        s.latency.map(|l| l.p50_us)
    }),
    ("p99 latency (µs, log scale)", |s| {
        s.latency.map(|l| l.p99_us)
    }),
    ("server CPU per operation (µs, log scale)", |s| {
        s.cpu_us_per_op
    }),
];

/// Series colours, in the order the series first appear (ours first, as the suite
/// runs them); past the list they repeat.
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(158, 202, 233),
    RGBColor(44, 160, 44),
    RGBColor(152, 223, 138),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Chart width, pixels.
const WIDTH: u32 = 1600;
/// Title, subtitle and legend above the panels, pixels.
const HEADER: u32 = 120;
/// Room for a panel's caption and its value axis, pixels.
const PANEL_FRAME: u32 = 90;
/// Width of the scenario names beside each panel, pixels.
const LABEL_AREA: u32 = 150;

/// Names in first-seen order, each once.
fn distinct<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !out.iter().any(|o| o == n) {
            out.push(n.to_owned());
        }
    }
    out
}

/// The value axis: whole powers of ten around every positive figure, with room to
/// the right of the longest bar for its label (`None`: no figure at all).
fn log_bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    (hi > 0.0).then(|| {
        // Whole exponents, so the ends are exact decades (0.1, not 0.09999…).
        let decade = |v: f64, round: fn(f64) -> f64| 10f64.powi(round(v.log10()) as i32);
        let lo = decade(lo, f64::floor);
        let hi = decade(hi * LABEL_ROOM, f64::ceil);
        (lo, hi)
    })
}

/// How far past the longest bar the value axis reaches (a factor: log scale).
const LABEL_ROOM: f64 = 4.0;

/// A value-axis tick: `0.1`, `1`, `10`, `100`, `1k`, `10k`, `1M` (the ticks are
/// decades, read in µs).
fn tick(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{}M", v / 1e6),
        v if v >= 1e3 => format!("{}k", v / 1e3),
        v => {
            let s = format!("{v:.3}");
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
    }
}

fn drawing(e: impl std::fmt::Display) -> Error {
    Error::Io(std::io::Error::other(format!("drawing the chart: {e}")))
}

/// Renders the chart of `suite` as an SVG document.
pub fn render(suite: &SuiteFigures) -> Result<String> {
    let scenarios = distinct(suite.summaries.iter().map(|s| s.scenario.as_str()));
    let series: Vec<String> = {
        let all: Vec<String> = suite.summaries.iter().map(SummaryFigures::series).collect();
        distinct(all.iter().map(String::as_str))
    };
    if scenarios.is_empty() {
        return Err(Error::Args("the suite has no results to chart".into()));
    }
    let group = 16 + 13 * series.len() as u32;
    let height = HEADER + PANEL_FRAME + group * scenarios.len() as u32;
    // Top to bottom in the suite's order: the scenario axis runs upwards.
    let rows: Vec<String> = scenarios.iter().rev().cloned().collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        header(&root, suite, &series)?;
        let (_, body) = root.split_vertically(HEADER);
        let panels = body.split_evenly((1, PANELS.len()));
        for (area, (title, figure)) in panels.iter().zip(PANELS) {
            panel(area, title, figure, suite, &rows, &series)?;
        }
        root.present().map_err(drawing)?;
    }
    Ok(svg)
}

/// Title, what ran, and the legend.
fn header(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    suite: &SuiteFigures,
    series: &[String],
) -> Result<()> {
    let title = ("sans-serif", 28).into_font().style(FontStyle::Bold);
    root.draw_text(
        "conduit-loadgen suite: latency and server CPU per operation",
        &title.color(&BLACK),
        (20, 12),
    )
    .map_err(drawing)?;
    let machine = suite.machine.as_ref().map_or(String::new(), |m| {
        format!(", {} CPUs ({})", m.cpus, m.cpu_model)
    });
    // A scale run's size is in its name (`connect-10k`), not the suite's count.
    let sized = suite.summaries.iter().any(|s| {
        s.scenario
            .rsplit('-')
            .next()
            .and_then(crate::plan::parse_count_tag)
            .is_some()
    });
    let about = format!(
        "medians over {} round(s) at {} connections{}{}{}; lower is better; no bar: no such figure",
        suite.rounds,
        suite.connections,
        if sized { " (a -N run: N)" } else { "" },
        if suite.quick { " (quick run)" } else { "" },
        machine,
    );
    let small = ("sans-serif", 17).into_font().color(&BLACK);
    root.draw_text(&about, &small, (20, 46)).map_err(drawing)?;
    // The legend: one swatch and name per series, in rows across the width.
    let (mut x, mut y) = (20i32, 78i32);
    for (i, name) in series.iter().enumerate() {
        let width = 36 + 9 * name.chars().count() as i32;
        if x + width > WIDTH as i32 - 20 {
            x = 20;
            y += 22;
        }
        let colour = COLOURS[i % COLOURS.len()];
        root.draw(&Rectangle::new([(x, y), (x + 14, y + 14)], colour.filled()))
            .map_err(drawing)?;
        root.draw_text(name, &small, (x + 20, y)).map_err(drawing)?;
        x += width;
    }
    Ok(())
}

/// One metric: a bar per series, grouped by scenario (`rows`, bottom to top).
fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    figure: Figure,
    suite: &SuiteFigures,
    rows: &[String],
    series: &[String],
) -> Result<()> {
    let value = |scenario: &str, name: &str| {
        suite
            .summaries
            .iter()
            .find(|s| s.scenario == scenario && s.series() == name)
            .and_then(figure)
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    let (lo, hi) = log_bounds(suite.summaries.iter().filter_map(figure)).unwrap_or((1.0, 10.0));
    // Row i of the scenario axis, each subdivided 0..1 for its group of bars.
    let y = (0..rows.len().saturating_sub(1)).nested_coord(|_| 0.0..1.0);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .margin_right(25)
        .x_label_area_size(40)
        .y_label_area_size(LABEL_AREA)
        .build_cartesian_2d((lo..hi).log_scale(), y)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .y_labels(rows.len())
        .y_label_formatter(&|v| match v {
            NestedValue::Category(i) => rows.get(*i).cloned().unwrap_or_default(),
            NestedValue::Value(..) => String::new(),
        })
        .x_label_formatter(&|v| tick(*v))
        .x_desc("µs")
        .disable_y_mesh()
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(drawing)?;
    let slot = 1.0 / (series.len() as f64 + 1.0);
    for (row, scenario) in rows.iter().enumerate() {
        let figures: Vec<(usize, f64)> = series
            .iter()
            .enumerate()
            .filter_map(|(k, name)| value(scenario, name).map(|v| (k, v)))
            .collect();
        if figures.is_empty() {
            let at = NestedValue::Value(row, 0.5);
            chart
                .draw_series(std::iter::once(Text::new(
                    "no figure",
                    (lo, at),
                    ("sans-serif", 12)
                        .into_font()
                        .color(&RGBColor(128, 128, 128)),
                )))
                .map_err(drawing)?;
        }
        // The first series at the top of its group.
        let bars = figures.into_iter().map(|(k, v)| {
            let top = 1.0 - slot * (k as f64 + 0.5);
            Rectangle::new(
                [
                    (lo, NestedValue::Value(row, top)),
                    (v, NestedValue::Value(row, top - slot)),
                ],
                COLOURS[k % COLOURS.len()].filled(),
            )
        });
        chart.draw_series(bars).map_err(drawing)?;
        // Each bar's figure just past its end.
        let label = ("sans-serif", 13).into_font().color(&BLACK);
        let labels = series.iter().enumerate().filter_map(|(k, name)| {
            let v = value(scenario, name)?;
            let middle = 1.0 - slot * (k as f64 + 1.0);
            Some(Text::new(
                format!(" {}", dur_us(Some(v))),
                (v, NestedValue::Value(row, middle)),
                label.clone().pos(Pos::new(HPos::Left, VPos::Center)),
            ))
        });
        chart.draw_series(labels).map_err(drawing)?;
    }
    Ok(())
}

/// Renders the chart of the suite JSON `json` into `out`, creating its directory.
pub fn write(json: &str, out: &Path) -> Result<()> {
    let svg = render(&parse(json)?)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, svg)?;
    Ok(())
}

/// `conduit-loadgen chart`: redraws a saved suite's chart.
pub fn main(a: &ChartArgs) -> Result<i32> {
    let json = std::fs::read_to_string(&a.from)
        .map_err(|e| Error::Args(format!("cannot read {}: {e}", a.from.display())))?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.from.with_extension("svg"));
    write(&json, &out)?;
    println!("chart: {}", out.display());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_bounds_are_whole_decades() {
        assert_eq!(log_bounds([3.0, 450.0].into_iter()), Some((1.0, 10_000.0)));
        assert_eq!(log_bounds([0.2, 2.0].into_iter()), Some((0.1, 10.0)));
        assert_eq!(log_bounds([100.0].into_iter()), Some((100.0, 1000.0)));
        assert_eq!(log_bounds([0.0, f64::NAN, -1.0].into_iter()), None);
    }

    #[test]
    fn ticks_read_as_decades() {
        assert_eq!(tick(0.1), "0.1");
        assert_eq!(tick(100.0), "100");
        assert_eq!(tick(10_000.0), "10k");
        assert_eq!(tick(1e6), "1M");
    }

    #[test]
    fn series_are_named_and_ordered_as_the_tables_do() {
        let s = |target: &str, runtime: Option<&str>, codec: &str| SummaryFigures {
            scenario: "rpc".into(),
            target: target.into(),
            runtime: runtime.map(Into::into),
            codec: codec.into(),
            cpu_us_per_op: None,
            latency: None,
        };
        assert_eq!(
            s("conduit", Some("tokio"), "v1").series(),
            "conduit[tokio]/v1"
        );
        assert_eq!(s("redis", None, "resp").series(), "redis/resp");
        assert_eq!(distinct(["b", "a", "b", "c"].into_iter()), ["b", "a", "c"]);
    }

    #[test]
    fn an_empty_suite_is_refused() {
        let empty = SuiteFigures {
            connections: 1,
            rounds: 1,
            quick: true,
            machine: None,
            summaries: Vec::new(),
        };
        assert!(matches!(render(&empty), Err(Error::Args(_))));
        assert!(parse("{}").is_err());
    }
}
