//! What the host allows this process: CPUs (its affinity mask, clamped to its cgroup's
//! CPU quota, so a container limited to 2 CPUs on a 64-core node runs 2 shards) and
//! open files (`RLIMIT_NOFILE`, raised to the hard limit at start; a server whose
//! `max_connections` cannot fit is refused with the numbers, instead of clients hanging
//! later without a reason).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Descriptors a shard uses besides its connections: listener, io_uring rings and their
/// eventfds, timers, the bus's wake-up (counted generously; glommio opens a few per
/// executor).
const FDS_PER_SHARD: u64 = 16;
/// Descriptors the process uses besides its shards: stdio, the control and signal
/// threads, log files, an application's own files.
const FDS_BASE: u64 = 64;

/// CPUs the cgroup quota allows, rounded up (`None`: no quota, or none readable).
/// cgroup v2 (`cpu.max`, the lowest along the path to the root) first, then v1
/// (`cpu.cfs_quota_us` / `cpu.cfs_period_us`).
pub fn cgroup_cpu_limit() -> Option<usize> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let (v2, v1) = cgroup_paths(&cgroup);
    let root = Path::new("/sys/fs/cgroup");
    let v2_limit = v2.and_then(|p| {
        ancestors(&root.join(p.trim_start_matches('/')), root)
            .filter_map(|dir| std::fs::read_to_string(dir.join("cpu.max")).ok())
            .filter_map(|s| parse_cpu_max(&s))
            .min()
    });
    v2_limit.or_else(|| {
        let dir = root.join("cpu").join(v1?.trim_start_matches('/'));
        let quota = std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok()?;
        let period = std::fs::read_to_string(dir.join("cpu.cfs_period_us")).ok()?;
        parse_cfs(&quota, &period)
    })
}

/// `dir` and its parents down to (and including) `root`.
fn ancestors<'a>(dir: &'a Path, root: &'a Path) -> impl Iterator<Item = PathBuf> + 'a {
    dir.ancestors()
        .take_while(move |d| d.starts_with(root))
        .map(Path::to_path_buf)
}

/// The cgroup v2 path (`0::/x`) and the v1 path of the `cpu` controller
/// (`N:cpu,cpuacct:/x`) from `/proc/self/cgroup`.
fn cgroup_paths(text: &str) -> (Option<&str>, Option<&str>) {
    let mut v2 = None;
    let mut v1 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        match (controllers, path) {
            (Some(""), Some(p)) => v2 = Some(p),
            (Some(c), Some(p)) if c.split(',').any(|c| c == "cpu") => v1 = Some(p),
            _ => {}
        }
    }
    (v2, v1)
}

/// `cpu.max` ("max 100000" or "<quota> <period>") as whole CPUs, rounded up.
fn parse_cpu_max(text: &str) -> Option<usize> {
    let mut it = text.split_whitespace();
    let quota = it.next()?;
    let period: u64 = it.next()?.parse().ok()?;
    if quota == "max" {
        return None;
    }
    cpus(quota.parse().ok()?, period)
}

/// cgroup v1's quota (-1: none) and period as whole CPUs, rounded up.
fn parse_cfs(quota: &str, period: &str) -> Option<usize> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: u64 = period.trim().parse().ok()?;
    cpus(u64::try_from(quota).ok()?, period)
}

fn cpus(quota: u64, period: u64) -> Option<usize> {
    if quota == 0 || period == 0 {
        return None;
    }
    usize::try_from(quota.div_ceil(period))
        .ok()
        .map(|n| n.max(1))
}

/// What a server's descriptor asks of the host's open files.
#[derive(Clone, Copy, Debug)]
pub struct FdDemand {
    /// `max_connections`.
    pub connections: usize,
    /// `max_refusals_in_flight`.
    pub refusals: usize,
    /// Connections whose PROXY header is being read: `max_pending` when
    /// `trusted_proxies` is set, else none.
    pub proxy_headers: usize,
    /// `shards`.
    pub shards: usize,
}

/// Descriptors a server may need at once.
pub fn fds_needed(d: FdDemand) -> u64 {
    let conns = d.connections as u64 + d.refusals as u64 + d.proxy_headers as u64;
    conns + d.shards as u64 * FDS_PER_SHARD + FDS_BASE
}

/// Raises the open-files soft limit to the hard limit and checks that `desc` fits.
pub fn ensure_fds(desc: FdDemand) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(()); // cannot tell; accept errors will say
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
    check_fds(lim.rlim_cur, desc)
}

/// The check of [`ensure_fds`], on a given limit.
fn check_fds(limit: u64, desc: FdDemand) -> Result<()> {
    let needed = fds_needed(desc);
    if limit == libc::RLIM_INFINITY || limit >= needed {
        return Ok(());
    }
    Err(Error::Config {
        field: "max_connections",
        problem: format!(
            "{} connections (+{} refusals in flight,{} +{} for {} shards and the process) need \
             {needed} open files, but RLIMIT_NOFILE allows {limit}: lower max_connections or \
             raise the limit (`ulimit -n`, `LimitNOFILE=` in a systemd unit, `--ulimit \
             nofile=` for docker)",
            desc.connections,
            desc.refusals,
            match desc.proxy_headers {
                0 => String::new(),
                n => format!(" +{n} PROXY headers being read,"),
            },
            desc.shards as u64 * FDS_PER_SHARD + FDS_BASE,
            desc.shards,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_files_parse() {
        let text = "12:cpu,cpuacct:/kubepods/pod1\n4:memory:/x\n0::/user.slice/a.scope\n";
        assert_eq!(
            cgroup_paths(text),
            (Some("/user.slice/a.scope"), Some("/kubepods/pod1"))
        );
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max("150000 100000"), Some(2), "1.5 CPUs round up");
        assert_eq!(parse_cpu_max("5000 100000"), Some(1));
        assert_eq!(parse_cpu_max("garbage"), None);
        assert_eq!(parse_cfs("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs("400000\n", "100000\n"), Some(4));
        assert_eq!(parse_cfs("0", "100000"), None);
    }

    #[test]
    fn impossible_connection_counts_are_refused_with_the_numbers() {
        let mut d = FdDemand {
            connections: 1000,
            refusals: 64,
            proxy_headers: 0,
            shards: 2,
        };
        assert_eq!(fds_needed(d), 1000 + 64 + 2 * 16 + 64);
        assert!(check_fds(1 << 20, d).is_ok());
        assert!(check_fds(libc::RLIM_INFINITY, d).is_ok());
        let err = check_fds(1024, d).unwrap_err().to_string();
        assert!(err.contains("max_connections"), "{err}");
        assert!(
            err.contains("1160 open files") && err.contains("allows 1024"),
            "{err}"
        );
        // Behind trusted proxies, the headers being read count too.
        d.proxy_headers = 256;
        let err = check_fds(1024, d).unwrap_err().to_string();
        assert!(
            err.contains("+256 PROXY headers being read") && err.contains("1416 open files"),
            "{err}"
        );
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let d = FdDemand {
            connections: 10,
            refusals: 1,
            proxy_headers: 0,
            shards: 1,
        };
        assert!(ensure_fds(d).is_ok());
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only into `lim`.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(
            lim.rlim_cur, lim.rlim_max,
            "soft limit raised to the hard one"
        );
    }
}
