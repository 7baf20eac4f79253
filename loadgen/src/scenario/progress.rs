//! A scenario phase's live bar ([`crate::progress`]). The phase counts in a plain cell
//! on its own executor, as it would anyway; a task on that executor copies the count
//! (and any other figures, through `detail`) into the bar every
//! [`SAMPLE_EVERY`](crate::progress::SAMPLE_EVERY). Nothing is shared across threads
//! and no per-message path gains any work; when the bar is hidden no task runs.

use std::cell::Cell;
use std::rc::Rc;

use conduit::__rt::{sleep, spawn_task, Task};

use super::RunSpec;
use crate::progress::{Goal, PhaseBar, SAMPLE_EVERY};

/// A phase's count and the bar it is shown on.
pub(super) struct Progress {
    pub(super) counter: Rc<Cell<u64>>,
    bar: Rc<PhaseBar>,
    task: Option<Task<()>>,
}

impl Progress {
    /// A bar counting `unit`s towards `goal`, drawn when `spec` asks and stderr is a
    /// terminal.
    pub(super) fn start(spec: &RunSpec, unit: &str, goal: Goal) -> Progress {
        Progress::with_detail(spec, unit, goal, String::new)
    }

    /// [`Progress::start`], with `detail` read at each sample for the figures beside
    /// the count.
    pub(super) fn with_detail(
        spec: &RunSpec,
        unit: &str,
        goal: Goal,
        detail: impl Fn() -> String + 'static,
    ) -> Progress {
        let counter = Rc::new(Cell::new(0u64));
        let bar = Rc::new(PhaseBar::new(&spec.label, unit, goal, spec.progress));
        let task = (!bar.is_hidden()).then(|| {
            let (counter, bar) = (counter.clone(), bar.clone());
            spawn_task(async move {
                // Each change is a redraw: the detail only when it changed.
                let mut shown = None;
                loop {
                    let text = detail();
                    if shown.as_ref() != Some(&text) {
                        bar.detail(text.clone());
                        shown = Some(text);
                    }
                    bar.set(counter.get());
                    sleep(SAMPLE_EVERY).await;
                }
            })
        });
        Progress { counter, bar, task }
    }

    /// Stops the sampler and takes the bar off the screen.
    pub(super) fn finish(self) {
        // A cancelled task may be dropped later (tokio): the bar is cleared now.
        drop(self.task);
        self.bar.finish();
    }
}
