//! `no-io-uring COMMAND [ARGS...]`: runs a command with the io_uring system calls
//! refused (`EPERM`), as Docker's default seccomp profile (Docker 25+), containerd 2.0's
//! RuntimeDefault and Kubernetes' `SeccompDefault` do. The filter is inherited by every
//! thread and child of the command, so whole suites run as they would in such a
//! container:
//!
//! ```sh
//! cargo run -p conduit-tests --bin no-io-uring -- cargo test --workspace
//! cargo run -p conduit-tests --bin no-io-uring -- cargo run --release -p conduit-loadgen -- suite
//! ```

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: no-io-uring COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    if let Err(e) = refuse_io_uring() {
        eprintln!("no-io-uring: cannot install the seccomp filter: {e}");
        return ExitCode::from(1);
    }
    // Only returns on failure.
    let e = Command::new(&program).args(args).exec();
    eprintln!("no-io-uring: cannot run {program:?}: {e}");
    ExitCode::from(127)
}

/// Installs a filter on this thread (inherited across `exec` and by every thread and
/// process started after it) answering `io_uring_setup`, `io_uring_enter` and
/// `io_uring_register` with `EPERM` and allowing everything else.
fn refuse_io_uring() -> Result<(), Box<dyn std::error::Error>> {
    let calls = [
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ];
    let filter = SeccompFilter::new(
        calls.into_iter().map(|c| (c, vec![])).collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        std::env::consts::ARCH.try_into()?,
    )?;
    let program: BpfProgram = filter.try_into()?;
    // Sets no_new_privs first, so an unprivileged process may install it.
    seccompiler::apply_filter(&program)?;
    Ok(())
}
