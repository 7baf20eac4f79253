//! `no-io-uring [--only-register] COMMAND [ARGS...]`: runs a command with the io_uring
//! system calls refused (`EPERM`), as Docker's default seccomp profile (Docker 25+),
//! containerd 2.0's RuntimeDefault and Kubernetes' `SeccompDefault` do. The filter is
//! inherited by every thread and child of the command, so whole suites run as they
//! would in such a container. `--only-register` refuses `io_uring_register` alone: a
//! ring can be set up (so a probe passes) but glommio cannot start an executor on it,
//! the failure-after-the-probe case `Runtime::Auto` must survive.
//!
//! ```sh
//! cargo run -p conduit-tests --bin no-io-uring -- cargo test --workspace
//! cargo run -p conduit-tests --bin no-io-uring -- cargo run --release -p conduit-loadgen -- suite
//! ```

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    let only_register = args.next_if(|a| a == "--only-register").is_some();
    let Some(program) = args.next() else {
        eprintln!("usage: no-io-uring [--only-register] COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    let calls: &[i64] = if only_register {
        &[libc::SYS_io_uring_register]
    } else {
        &[
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
        ]
    };
    if let Err(e) = refuse(calls) {
        eprintln!("no-io-uring: cannot install the seccomp filter: {e}");
        return ExitCode::from(1);
    }
    // Only returns on failure.
    let e = Command::new(&program).args(args).exec();
    eprintln!("no-io-uring: cannot run {program:?}: {e}");
    ExitCode::from(127)
}

/// Installs a filter on this thread (inherited across `exec` and by every thread and
/// process started after it) answering `calls` with `EPERM` and allowing everything
/// else.
fn refuse(calls: &[i64]) -> Result<(), Box<dyn std::error::Error>> {
    let filter = SeccompFilter::new(
        calls.iter().map(|&c| (c, vec![])).collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        std::env::consts::ARCH.try_into()?,
    )?;
    let program: BpfProgram = filter.try_into()?;
    // Sets no_new_privs first, so an unprivileged process may install it.
    seccompiler::apply_filter(&program)?;
    Ok(())
}
