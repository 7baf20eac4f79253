//! Live progress bars on stderr (indicatif): one for the suite (scenario, target, run
//! and round, elapsed, an estimate of the time left) and one for the phase a scenario
//! is in (logins, calls, deliveries, pings, with their rate).
//!
//! A bar must not move the figures it reports on. So nothing here sits in a
//! per-message path: the scenarios keep counting in the plain cells they already had,
//! and a sampler on the same executor copies those counts into the bar every
//! [`SAMPLE_EVERY`]; indicatif redraws at most [`REFRESH_HZ`] times a second whatever
//! it is told, on the thread that updates it (no ticker thread of its own).
//!
//! Bars are drawn only when asked (no `--no-progress`) and stderr is a terminal with a
//! usable `TERM`; otherwise they are hidden and cost one branch per sample — logs,
//! pipes and CI output stay free of escape codes.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Most redraws per second, whatever the updates (indicatif's own rate limit).
pub const REFRESH_HZ: u8 = 10;

/// How often a phase's counters are copied into its bar (4 Hz: under [`REFRESH_HZ`]).
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

// Both rates stay under 10 Hz, and the sampler asks for no more than indicatif draws.
const _: () = assert!(
    REFRESH_HZ <= 10 && SAMPLE_EVERY.as_millis() >= 1000 / REFRESH_HZ as u128,
    "progress bars must redraw at 10 Hz at most"
);

/// Whether bars are drawn: asked for, on a terminal, and one that can move its cursor
/// (`TERM` set and not `dumb`, as indicatif itself requires).
pub fn visible(requested: bool, stderr_is_terminal: bool, term: Option<&str>) -> bool {
    requested && stderr_is_terminal && term.is_some_and(|t| !t.is_empty() && t != "dumb")
}

/// [`visible`] for this process's stderr.
pub fn shown(requested: bool) -> bool {
    let term = std::env::var("TERM").ok();
    visible(requested, std::io::stderr().is_terminal(), term.as_deref())
}

/// Every bar of the process, stacked: the suite's above the phase's.
fn multi() -> &'static MultiProgress {
    static MULTI: OnceLock<MultiProgress> = OnceLock::new();
    MULTI.get_or_init(|| {
        MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(REFRESH_HZ))
    })
}

/// Prints a line on stderr above the bars (bars hidden or not: unlike indicatif's
/// `println`, the line is never dropped).
pub fn eprintln(line: &str) {
    multi().suspend(|| eprintln!("{line}"));
}

/// A template known to parse, or the default style (a bar's looks are not worth a
/// failed run).
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// `1 h 02 min`, `3 min 05 s`, `42 s`: a duration to the second.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s:02} s"),
        (h, m, _) => format!("{h} h {m:02} min"),
    }
}

/// The time left of a suite, estimated from the runs done so far: a run in a later
/// round takes as long as the same run (same scenario and target) took in the earlier
/// rounds; a run not yet seen, as long as the average run so far.
#[derive(Clone, Debug, Default)]
pub struct Eta {
    /// Per slot (a run's place within a round): the total and count of its durations.
    slots: Vec<(Duration, u32)>,
    done: Duration,
    runs_done: u32,
}

impl Eta {
    /// A run of `slot` took `took`.
    pub fn record(&mut self, slot: usize, took: Duration) {
        if self.slots.len() <= slot {
            self.slots.resize(slot + 1, (Duration::ZERO, 0));
        }
        self.slots[slot].0 += took;
        self.slots[slot].1 += 1;
        self.done += took;
        self.runs_done += 1;
    }

    /// Time the runs still to come should take: `remaining` runs from `next_slot` on,
    /// `per_round` slots to a round. `None` before any run finished.
    pub fn left(&self, next_slot: usize, remaining: usize, per_round: usize) -> Option<Duration> {
        if self.runs_done == 0 || per_round == 0 {
            return None;
        }
        let average = self.done / self.runs_done;
        let estimate = |slot: usize| match self.slots.get(slot) {
            Some(&(total, n)) if n > 0 => total / n,
            _ => average,
        };
        Some(
            (0..remaining)
                .map(|k| estimate((next_slot + k) % per_round))
                .sum(),
        )
    }
}

/// The suite's bar: one step per run.
pub struct SuiteBar {
    bar: ProgressBar,
    eta: Eta,
    per_round: usize,
    rounds: usize,
}

impl SuiteBar {
    /// A bar over `rounds` rounds of `per_round` runs each; drawn if `requested` and
    /// [`shown`].
    pub fn new(rounds: usize, per_round: usize, requested: bool) -> SuiteBar {
        let total = (rounds * per_round) as u64;
        let bar = if shown(requested) {
            let bar = multi().add(ProgressBar::with_draw_target(
                Some(total),
                ProgressDrawTarget::hidden(),
            ));
            bar.set_style(style(
                "suite [{bar:24}] {pos}/{len} runs, {elapsed_precise} {msg}",
            ));
            bar
        } else {
            ProgressBar::hidden()
        };
        SuiteBar {
            bar,
            eta: Eta::default(),
            per_round: per_round.max(1),
            rounds,
        }
    }

    /// Run `done + 1` starts: `round`, the scenario and the target it runs against.
    pub fn start(&self, done: usize, round: usize, scenario: &str, target: &str) {
        if self.bar.is_hidden() {
            return;
        }
        let remaining = (self.rounds * self.per_round).saturating_sub(done);
        let left = self
            .eta
            .left(done % self.per_round, remaining, self.per_round)
            .map_or(String::new(), |d| format!(", about {} left", clock(d)));
        self.bar.set_message(format!(
            "round {round}/{}{left} | {scenario} on {target}",
            self.rounds
        ));
        self.bar.set_position(done as u64);
    }

    /// Run `done + 1` (slot `done % per_round`) ended after `took`.
    pub fn finish_run(&mut self, done: usize, took: Duration) {
        self.eta.record(done % self.per_round, took);
        self.bar.set_position(done as u64 + 1);
    }

    /// Takes the bar off the screen.
    pub fn finish(self) {
        self.bar.finish_and_clear();
        multi().remove(&self.bar);
    }
}

/// What a phase's bar counts up to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// A known number of operations (logins: the connections to open).
    Count(u64),
    /// Operations until a bound ends the phase (calls in 3 s, pings for 5 s).
    Open,
}

/// The bar of one phase of a scenario: `label`, a count of `unit`s and its rate.
pub struct PhaseBar {
    bar: ProgressBar,
}

impl PhaseBar {
    /// A bar for `label` counting `unit`s towards `goal`; drawn if `requested` and
    /// [`shown`].
    pub fn new(label: &str, unit: &str, goal: Goal, requested: bool) -> PhaseBar {
        if !shown(requested) {
            return PhaseBar {
                bar: ProgressBar::hidden(),
            };
        }
        let (len, template) = match goal {
            Goal::Count(n) => (
                Some(n),
                format!("{{prefix}} [{{bar:24}}] {{pos}}/{{len}} {unit}, {{per_sec:0}}, {{elapsed}} {{msg}}"),
            ),
            Goal::Open => (
                None,
                format!("{{prefix}} {{spinner}} {{human_pos}} {unit}, {{per_sec:0}}, {{elapsed}} {{msg}}"),
            ),
        };
        let bar = multi().add(ProgressBar::with_draw_target(
            len,
            ProgressDrawTarget::hidden(),
        ));
        bar.set_style(style(&template));
        bar.set_prefix(label.to_owned());
        PhaseBar { bar }
    }

    /// Whether anything is drawn (a sampler need not run otherwise).
    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// The phase has done `n` operations so far.
    pub fn set(&self, n: u64) {
        self.bar.set_position(n);
    }

    /// Figures beside the count (`12 messages`, `1000 connections`).
    pub fn detail(&self, text: String) {
        self.bar.set_message(text);
    }

    /// Takes the bar off the screen (a sampler still holding it draws no more).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
        multi().remove(&self.bar);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_only_when_asked_on_a_usable_terminal() {
        assert!(visible(true, true, Some("xterm-256color")));
        assert!(!visible(false, true, Some("xterm")), "--no-progress");
        assert!(
            !visible(true, false, Some("xterm")),
            "stderr is a pipe or file"
        );
        assert!(!visible(true, true, Some("dumb")));
        assert!(!visible(true, true, Some("")));
        assert!(!visible(true, true, None));
    }

    #[test]
    fn hidden_bars_draw_nothing() {
        let phase = PhaseBar::new("x", "calls", Goal::Count(10), false);
        assert!(phase.is_hidden());
        phase.set(5);
        phase.finish();
        let mut suite = SuiteBar::new(2, 3, false);
        suite.start(0, 1, "rpc", "conduit/native");
        suite.finish_run(0, Duration::from_secs(1));
        suite.finish();
    }

    #[test]
    fn eta_uses_the_same_run_of_earlier_rounds() {
        let mut eta = Eta::default();
        assert_eq!(eta.left(0, 6, 3), None);
        // Round 1 of 2, three runs a round: 1 s, 10 s, then the third is running.
        eta.record(0, Duration::from_secs(1));
        eta.record(1, Duration::from_secs(10));
        // The third (not seen yet: the average, 5.5 s), then round 2: 1 s, 10 s, 5.5 s.
        assert_eq!(eta.left(2, 4, 3), Some(Duration::from_millis(22_000)));
        eta.record(2, Duration::from_secs(4));
        eta.record(0, Duration::from_secs(3));
        // Slot 0 averages 2 s now; slots 1 and 2 are left: 10 s + 4 s.
        assert_eq!(eta.left(1, 2, 3), Some(Duration::from_secs(14)));
        assert_eq!(eta.left(0, 0, 3), Some(Duration::ZERO));
    }

    #[test]
    fn clock_reads_like_a_person_would_say_it() {
        assert_eq!(clock(Duration::from_millis(42_900)), "42 s");
        assert_eq!(clock(Duration::from_secs(185)), "3 min 05 s");
        assert_eq!(clock(Duration::from_secs(3720)), "1 h 02 min");
    }
}
