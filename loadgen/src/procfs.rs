//! Reading a process's CPU time and memory from `/proc/<pid>`.
//!
//! CPU time comes from two places:
//! * `/proc/<pid>/stat` fields 14 and 15 (utime + stime), in clock ticks (10 ms at the
//!   usual 100 Hz), covering every thread the process ever had;
//! * `/proc/<pid>/task/*/schedstat`, first field, nanoseconds on CPU per live thread —
//!   the precise figure, used when the kernel provides it (a server's threads live for
//!   the whole run, so nothing is missed).

use std::path::PathBuf;

/// Which process: a pid, or this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proc {
    /// `/proc/self`.
    SelfProc,
    /// `/proc/<pid>`.
    Pid(u32),
}

impl Proc {
    fn dir(self) -> PathBuf {
        match self {
            Proc::SelfProc => PathBuf::from("/proc/self"),
            Proc::Pid(p) => PathBuf::from(format!("/proc/{p}")),
        }
    }
}

/// utime + stime in clock ticks, from the text of `/proc/<pid>/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    parse_stat_user_system_ticks(stat).map(|(user, system)| user + system)
}

/// utime and stime apart, in clock ticks, from the text of `/proc/<pid>/stat`.
///
/// The command name (field 2) is in parentheses and may itself contain spaces and
/// parentheses, so fields are counted from the *last* `)`.
pub fn parse_stat_user_system_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8)
    // flags(9) minflt(10) cminflt(11) majflt(12) cmajflt(13) utime(14) stime(15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// Nanoseconds on CPU, the first field of a `schedstat` file.
pub fn parse_schedstat_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_ascii_whitespace().next()?.parse().ok()
}

/// Resident set size in KiB, from the text of `/proc/<pid>/status` (`VmRSS:`).
pub fn parse_status_rss_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix("VmRSS:")?;
        let mut parts = value.split_ascii_whitespace();
        let n: u64 = parts.next()?.parse().ok()?;
        match parts.next() {
            Some("kB") | None => Some(n),
            Some(_) => None,
        }
    })
}

/// Clock ticks per second for `/proc/<pid>/stat` times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// CPU time used so far by `p`, in nanoseconds: the per-thread schedstat sum when
/// available, else utime + stime.
pub fn cpu_ns(p: Proc) -> Option<u64> {
    sched_cpu_ns(p).or_else(|| stat_cpu_ns(p))
}

/// utime + stime of `p` in nanoseconds (clock-tick resolution).
pub fn stat_cpu_ns(p: Proc) -> Option<u64> {
    stat_user_system_ns(p).map(|(user, system)| user + system)
}

/// utime and stime of `p` apart, in nanoseconds (clock-tick resolution).
pub fn stat_user_system_ns(p: Proc) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(p.dir().join("stat")).ok()?;
    let (user, system) = parse_stat_user_system_ticks(&text)?;
    let tick_ns = 1_000_000_000 / clock_ticks_per_second();
    Some((user * tick_ns, system * tick_ns))
}

/// Sum of `/proc/<pid>/task/*/schedstat` run times, in nanoseconds.
pub fn sched_cpu_ns(p: Proc) -> Option<u64> {
    let tasks = std::fs::read_dir(p.dir().join("task")).ok()?;
    let mut total = 0u64;
    let mut any = false;
    for t in tasks.flatten() {
        // A thread may exit between listing and reading; skip it.
        if let Ok(text) = std::fs::read_to_string(t.path().join("schedstat")) {
            if let Some(ns) = parse_schedstat_ns(&text) {
                total += ns;
                any = true;
            }
        }
    }
    any.then_some(total)
}

/// Every live thread of `p`: `(tid, name, nanoseconds on CPU)`, from
/// `/proc/<pid>/task/<tid>/comm` and `…/schedstat`.
pub fn thread_cpu_ns(p: Proc) -> Vec<(u32, String, u64)> {
    let Ok(tasks) = std::fs::read_dir(p.dir().join("task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // A thread may exit between listing and reading; skip it.
        let Some(ns) = std::fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .and_then(|text| parse_schedstat_ns(&text))
        else {
            continue;
        };
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        out.push((tid, name.trim().to_owned(), ns));
    }
    out
}

/// CPU seconds each thread name used between two [`thread_cpu_ns`] readings (threads
/// of the same name summed; a thread absent from `earlier` counts in full).
pub fn thread_seconds_between(
    later: &[(u32, String, u64)],
    earlier: &[(u32, String, u64)],
) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for (tid, name, ns) in later {
        let before = earlier
            .iter()
            .find(|(t, _, _)| t == tid)
            .map_or(0, |(_, _, b)| *b);
        *out.entry(name.clone()).or_insert(0.0) += ns.saturating_sub(before) as f64 / 1e9;
    }
    out
}

/// Resident set size of `p` in KiB.
pub fn rss_kib(p: Proc) -> Option<u64> {
    let text = std::fs::read_to_string(p.dir().join("status")).ok()?;
    parse_status_rss_kib(&text)
}

/// A CPU-time reading of a server (if it is known) and of this process, to subtract
/// from a later one.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuMark {
    /// The server's CPU time, ns ([`cpu_ns`]).
    pub server_ns: Option<u64>,
    /// The server's utime + stime from `/proc/<pid>/stat`, ns (clock-tick
    /// resolution): a cross-check of `server_ns`.
    pub server_stat_ns: Option<u64>,
    /// The user-space part of `server_stat_ns` (utime): what separates the
    /// server's own work from the kernel's.
    pub server_user_ns: Option<u64>,
    /// This process's CPU time, ns.
    pub own_ns: Option<u64>,
}

impl CpuMark {
    /// Reads both now.
    pub fn take(server: Option<u32>) -> CpuMark {
        let stat = server.and_then(|pid| stat_user_system_ns(Proc::Pid(pid)));
        CpuMark {
            server_ns: server.and_then(|pid| cpu_ns(Proc::Pid(pid))),
            server_stat_ns: stat.map(|(user, system)| user + system),
            server_user_ns: stat.map(|(user, _)| user),
            own_ns: cpu_ns(Proc::SelfProc),
        }
    }

    /// Server CPU seconds and own CPU seconds used since `earlier`.
    pub fn since(&self, earlier: &CpuMark) -> (Option<f64>, Option<f64>) {
        (
            seconds_between(self.server_ns, earlier.server_ns),
            seconds_between(self.own_ns, earlier.own_ns),
        )
    }

    /// Server utime + stime seconds used since `earlier`.
    pub fn stat_since(&self, earlier: &CpuMark) -> Option<f64> {
        seconds_between(self.server_stat_ns, earlier.server_stat_ns)
    }

    /// Server utime seconds (user space alone) used since `earlier`.
    pub fn user_since(&self, earlier: &CpuMark) -> Option<f64> {
        seconds_between(self.server_user_ns, earlier.server_user_ns)
    }
}

fn seconds_between(later: Option<u64>, earlier: Option<u64>) -> Option<f64> {
    Some(later?.saturating_sub(earlier?) as f64 / 1e9)
}

/// The text of the file at `path`, trimmed (empty if it cannot be read).
pub(crate) fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `model name` from /proc/cpuinfo.
pub(crate) fn cpu_model() -> String {
    read_trim("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_hostile_command_name() {
        let line = "4242 (we ird) (name)) S 1 4242 4242 0 -1 4194560 1180 0 0 0 \
                    250 37 0 0 20 0 3 0 123456 10000000 900 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat_ticks(line), Some(287));
        assert_eq!(parse_stat_user_system_ticks(line), Some((250, 37)));
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
        assert_eq!(parse_stat_ticks("no parens"), None);
    }

    #[test]
    fn status_rss() {
        let status =
            "Name:\tconduit-loadgen\nVmPeak:\t  100 kB\nVmRSS:\t    6144 kB\nThreads:\t4\n";
        assert_eq!(parse_status_rss_kib(status), Some(6144));
        assert_eq!(parse_status_rss_kib("Name:\tx\n"), None);
        assert_eq!(parse_status_rss_kib("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn schedstat() {
        assert_eq!(parse_schedstat_ns("162294 2358302 2\n"), Some(162_294));
        assert_eq!(parse_schedstat_ns(""), None);
    }

    #[test]
    fn threads_by_name() {
        let before = vec![(1, "main".to_owned(), 100), (2, "w".to_owned(), 50)];
        let after = vec![
            (1, "main".to_owned(), 400),
            (2, "w".to_owned(), 50),
            (3, "w".to_owned(), 1_000_000_000),
        ];
        let d = thread_seconds_between(&after, &before);
        assert_eq!(d["main"], 300e-9);
        assert_eq!(d["w"], 1.0);
        let here = thread_cpu_ns(Proc::SelfProc);
        assert!(here.iter().any(|(tid, _, _)| *tid == std::process::id()));
    }

    #[test]
    fn this_process_is_readable() {
        assert!(rss_kib(Proc::SelfProc).unwrap() > 0);
        assert!(stat_cpu_ns(Proc::SelfProc).is_some());
        assert!(cpu_ns(Proc::SelfProc).is_some());
        let a = CpuMark::take(Some(std::process::id()));
        let b = CpuMark::take(Some(std::process::id()));
        let (server, own) = b.since(&a);
        assert!(server.unwrap() >= 0.0 && own.unwrap() >= 0.0);
    }
}
