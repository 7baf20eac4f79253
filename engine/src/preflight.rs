//! Checks that the machine can run glommio executors, before any is created: io_uring
//! must exist (glommio panics without it) and the locked-memory limit must allow each
//! executor's rings. Failures are errors that say what to change.

use crate::error::{Error, Result};

/// glommio refuses to start an executor below this RLIMIT_MEMLOCK.
const MIN_MEMLOCK_BYTES: u64 = 512 * 1024;

/// Runs every check for a server of `shards` shards.
pub fn check(shards: usize) -> Result<()> {
    io_uring()?;
    memlock(shards)
}

/// The kernel's `struct io_uring_params` (include/uapi/linux/io_uring.h), which
/// `io_uring_setup` reads and fills in.
#[repr(C)]
#[derive(Default)]
struct IoUringParams {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    /// `struct io_sqring_offsets` without its last field.
    sq_off: [u32; 8],
    sq_off_user_addr: u64,
    /// `struct io_cqring_offsets` without its last field.
    cq_off: [u32; 8],
    cq_off_user_addr: u64,
}

const _: () = assert!(
    std::mem::size_of::<IoUringParams>() == 120,
    "the kernel's layout"
);

fn io_uring() -> Result<()> {
    let mut params = IoUringParams::default();
    // SAFETY: io_uring_setup reads and writes only `params`, a `struct io_uring_params`
    // of the kernel's layout; the returned fd, if any, is closed right away.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            2u32,
            std::ptr::addr_of_mut!(params),
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        return Err(Error::Runtime(format!(
            "io_uring is not available ({err}). conduit needs Linux 5.8 or newer with \
             io_uring enabled: check /proc/sys/kernel/io_uring_disabled (must be 0) and any \
             seccomp or container policy that blocks io_uring_setup"
        )));
    }
    // SAFETY: `fd` is a file descriptor we own.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

fn memlock(shards: usize) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Ok(()); // cannot tell; glommio will say if it is too low
    }
    if lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= MIN_MEMLOCK_BYTES {
        return Ok(());
    }
    if lim.rlim_max == libc::RLIM_INFINITY || lim.rlim_max >= MIN_MEMLOCK_BYTES {
        // The hard limit allows more: raise the soft one ourselves.
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max.clamp(MIN_MEMLOCK_BYTES, 64 * 1024 * 1024),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads only `raised`.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
            return Ok(());
        }
    }
    Err(Error::Runtime(explain_memlock(lim.rlim_cur, shards)))
}

fn explain_memlock(current: u64, shards: usize) -> String {
    format!(
        "the locked-memory limit (RLIMIT_MEMLOCK) is {} KiB, but each of the {shards} shards \
         needs at least {} KiB for its io_uring rings. Raise it: `ulimit -l 65536` in the \
         shell, `LimitMEMLOCK=64M` in a systemd unit, `--ulimit memlock=67108864` for docker, \
         or a `memlock` line in /etc/security/limits.conf",
        current / 1024,
        MIN_MEMLOCK_BYTES / 1024
    )
}

/// Turns a glommio executor start-up failure into advice.
pub fn explain(glommio_error: &str) -> String {
    if glommio_error.contains("MemLockLimit") {
        format!("{glommio_error}: {}", explain_memlock(0, 1))
    } else if glommio_error.contains("probe") || glommio_error.contains("io_uring") {
        format!("{glommio_error}: io_uring is not usable on this kernel (needs Linux 5.8+)")
    } else {
        format!("a shard failed to start: {glommio_error}")
    }
}
