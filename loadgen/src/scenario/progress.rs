//! The live progress line. A long run (thousands of logins, minutes of broadcast)
//! would otherwise say nothing until it ends; each phase bumps a counter that a task
//! redraws on stderr, only when stderr is a terminal so logs and pipes stay clean.

use std::cell::Cell;
use std::io::{IsTerminal, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use conduit::__rt::{sleep, spawn_task, Task};

use super::RunSpec;

/// How often the live progress line is redrawn.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// The live progress line: a counter the scenario bumps and a task that redraws it on
/// stderr (only when stderr is a terminal).
pub(super) struct Progress {
    pub(super) counter: Rc<Cell<u64>>,
    task: Option<Task<()>>,
}

impl Progress {
    pub(super) fn start(spec: &RunSpec, unit: &'static str, total: Option<u64>) -> Progress {
        let counter = Rc::new(Cell::new(0u64));
        let task = (spec.progress && std::io::stderr().is_terminal()).then(|| {
            let counter = counter.clone();
            let label = spec.label.clone();
            spawn_task(async move {
                let t0 = Instant::now();
                loop {
                    sleep(PROGRESS_EVERY).await;
                    let n = counter.get();
                    let secs = t0.elapsed().as_secs_f64();
                    let of = total.map(|t| format!("/{t}")).unwrap_or_default();
                    let mut err = std::io::stderr().lock();
                    let _ = write!(
                        err,
                        "\r\x1b[2K{label}: {n}{of} {unit}, {:.0}/s, {secs:.1} s",
                        n as f64 / secs.max(1e-9)
                    );
                    let _ = err.flush();
                }
            })
        });
        Progress { counter, task }
    }

    pub(super) fn finish(self) {
        if self.task.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}
