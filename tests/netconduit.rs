//! The real Python netconduit client and server, for the interoperability and
//! scale-out tests: a venv with netconduit 5.0.0, made once at
//! `target/netconduit-venv` (built in a temp directory under `target/`, then renamed
//! into place, so concurrent makers — several test binaries, the load generator —
//! never see a half-made one), and Python scripts under `tests/python/` run as child
//! processes.
//!
//! Needs `python3` with the `venv` and `pip` modules, and PyPI on the first run.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

/// The netconduit release we are compatible with.
pub const NETCONDUIT: &str = "netconduit==5.0.0";

/// The workspace root (the parent of `tests/`).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A script under `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// The venv's interpreter, making the venv first if needed (once per process).
pub fn venv_python() -> PathBuf {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match VENV.get_or_init(ensure_venv) {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// Whether `python` runs and imports netconduit 5.0.0.
fn venv_ok(python: &Path) -> bool {
    python.exists()
        && Command::new(python)
            .args([
                "-c",
                "import importlib.metadata as m, conduit; \
                 assert m.version('netconduit') == '5.0.0'",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// A suffix for file names no other process of this run uses (pid and clock).
pub fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}-{nanos}", std::process::id())
}

fn run_setup(cmd: &mut Command, what: &str, hint: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "interop tests need `python3` on PATH, with the venv and pip modules \
                 (Debian/Ubuntu: apt-get install python3 python3-venv python3-pip): {e}"
            )
        } else {
            format!("{what}: cannot run: {e}")
        }
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}). {hint}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Makes `target/netconduit-venv` unless a working one is there. Built in a temp
/// directory under `target/` and renamed into place atomically; if another process
/// renamed its own first, ours is discarded.
fn ensure_venv() -> Result<PathBuf, String> {
    let target = workspace_dir().join("target");
    let venv = target.join("netconduit-venv");
    let python = venv.join("bin").join("python");
    if venv_ok(&python) {
        return Ok(python);
    }
    std::fs::create_dir_all(&target).map_err(|e| format!("cannot create {target:?}: {e}"))?;
    if venv.exists() {
        // Broken or another version: move it aside (atomic), then delete it.
        let aside = target.join(format!("netconduit-venv.broken-{}", unique_suffix()));
        if std::fs::rename(&venv, &aside).is_ok() {
            let _ = std::fs::remove_dir_all(&aside);
        }
    }
    let tmp = target.join(format!("netconduit-venv.tmp-{}", unique_suffix()));
    let made = (|| {
        run_setup(
            Command::new("python3").args(["-m", "venv"]).arg(&tmp),
            "`python3 -m venv`",
            "Interop tests need Python's venv module \
             (Debian/Ubuntu: apt-get install python3-venv).",
        )?;
        run_setup(
            Command::new(tmp.join("bin").join("python")).args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--quiet",
                NETCONDUIT,
            ]),
            &format!("`pip install {NETCONDUIT}`"),
            "Interop tests need pip (apt-get install python3-pip) and access to PyPI.",
        )
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, &venv) {
        let _ = std::fs::remove_dir_all(&tmp);
        if !venv_ok(&python) {
            return Err(format!("cannot move the new venv to {venv:?}: {e}"));
        }
        // Another process put a working venv there first.
    }
    if venv_ok(&python) {
        Ok(python)
    } else {
        Err(format!(
            "{venv:?} was made but cannot import netconduit 5.0.0"
        ))
    }
}

/// A child process whose stdout is read line by line in the background.
pub struct PyChild {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// Starts `script` with the venv's interpreter (unbuffered) and `args`; stdin, stdout
/// and stderr are pipes.
pub fn spawn_python(script: &Path, args: &[String]) -> PyChild {
    let mut child = Command::new(venv_python())
        .arg("-u")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {script:?}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    PyChild {
        child,
        lines,
        stderr: Some(stderr),
    }
}

impl PyChild {
    /// Waits for exit (killing it after `limit`); returns its status, stdout and stderr.
    pub fn finish(mut self, limit: Duration) -> (Option<ExitStatus>, Vec<String>, String) {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        let status = loop {
            while let Ok(l) = self.lines.try_recv() {
                println!("py| {l}");
                out.push(l);
            }
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break None;
                }
            }
        };
        // The reader thread ends at EOF; collect what is left.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            println!("py| {l}");
            out.push(l);
        }
        let err = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        (status, out, err)
    }

    /// Waits for a stdout line starting with `prefix`.
    pub fn wait_line(&mut self, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(l) => println!("py| {l}"),
                Err(_) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("no {prefix:?} line from the Python child within {limit:?}");
                }
            }
        }
    }
}

impl Drop for PyChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
