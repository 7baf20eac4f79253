//! The load generator's open-files limit: every connection is a descriptor, so a run
//! of 10,000 connections needs a limit above the usual default of 1024. The soft
//! limit is raised to the hard one before a run, and a run that still cannot fit is
//! refused with what to change.

use crate::{Error, Result};

/// Descriptors the load generator needs besides its connections: its executor's
/// rings, the server's pipes, the log and output files, the standard streams.
pub const RESERVED_FDS: u64 = 256;

/// Raises the soft open-files limit to the hard limit (if it is below); the soft
/// limit now in force (`None`: unlimited or unknown).
pub fn raise_to_hard() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads only `raised`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// Raises the limit (see [`raise_to_hard`]) and checks that `connections` fit under
/// it with [`RESERVED_FDS`] to spare; an error saying how to raise it otherwise.
pub fn ensure(connections: usize) -> Result<()> {
    let Some(limit) = raise_to_hard() else {
        return Ok(());
    };
    let needed = connections as u64 + RESERVED_FDS;
    if limit >= needed {
        return Ok(());
    }
    Err(Error::Args(format!(
        "{connections} connections need about {needed} open files, but this process may \
         open {limit} (RLIMIT_NOFILE, hard limit included): raise it (`ulimit -n {needed}` \
         or more, `--ulimit nofile=` for docker) or open fewer connections"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_fits_and_an_absurd_one_is_refused() {
        assert!(ensure(10).is_ok());
        let soft = raise_to_hard();
        if let Some(limit) = soft {
            let too_many = usize::try_from(limit).unwrap_or(usize::MAX);
            assert!(matches!(ensure(too_many), Err(Error::Args(m)) if m.contains("ulimit")));
        }
    }
}
