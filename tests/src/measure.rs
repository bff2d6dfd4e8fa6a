//! Measuring helpers shared by the benchmark binaries in `src/bin/`:
//! percentiles of latency samples, a process's CPU time and resident memory
//! from `/proc`, the machine's description, Prometheus gauges, and the
//! descriptor limit many sessions need.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// The `q` quantile of sorted `values` (nearest rank); zero when empty.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A duration in milliseconds, for tables.
pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// `utime + stime` of `/proc/<pid>/stat` (all threads, in clock ticks);
/// `pid` may be `self`.
pub fn cpu_ticks(pid: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may contain spaces; fields after it are
    // numbered from 3 (state), so utime (14) and stime (15) are the 12th
    // and 13th after the closing parenthesis (proc(5)).
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("{path} has no field {}", i + 3))
    };
    Ok(field(11)? + field(12)?)
}

/// Time the threads of `pid` (alive now) spent runnable but waiting for a
/// CPU: the second field of `/proc/<pid>/task/*/schedstat`, in ns
/// (sched-stats.rst). On a shared machine it tells how much a process was
/// slowed by others rather than by its own work.
pub fn run_queue_wait(pid: &str) -> anyhow::Result<Duration> {
    let dir = format!("/proc/{pid}/task");
    let mut waited_ns = 0u64;
    for task in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let path = task?.path().join("schedstat");
        // A thread may exit between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(&path) else {
            continue;
        };
        waited_ns += stat
            .split_whitespace()
            .nth(1)
            .and_then(|ns| ns.parse::<u64>().ok())
            .with_context(|| format!("{} has no run-queue time", path.display()))?;
    }
    Ok(Duration::from_nanos(waited_ns))
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .with_context(|| format!("{path} has no VmRSS"))
}

/// USER_HZ, the unit of `/proc/<pid>/stat` times (100 on every common
/// Linux build; `getconf` asks without linking libc ourselves), asked once.
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// The value of an unlabelled gauge in Prometheus text.
pub fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Makes sure this process (and so the nodes it spawns) may open `needed`
/// descriptors, raising the soft limit to the hard one with `prlimit(1)`
/// if it is lower. Returns the soft limit in force.
pub fn ensure_fd_limit(needed: u64) -> anyhow::Result<u64> {
    let (soft, hard) = fd_limits()?;
    if soft >= needed {
        return Ok(soft);
    }
    if hard < needed {
        bail!(
            "RLIMIT_NOFILE is {soft} (hard {hard}) but {needed} descriptors are needed: \
             raise the hard limit (e.g. `ulimit -Hn {needed}` as root) or use fewer sessions"
        );
    }
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={hard}:{hard}"))
        .status()
        .context("running prlimit to raise RLIMIT_NOFILE (or run under `ulimit -n`)")?;
    let (soft, _) = fd_limits()?;
    if !status.success() || soft < needed {
        bail!("could not raise RLIMIT_NOFILE to {needed}; run under `ulimit -n {needed}`");
    }
    Ok(soft)
}

/// The soft and hard "Max open files" of `/proc/self/limits`.
fn fd_limits() -> anyhow::Result<(u64, u64)> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .context("/proc/self/limits has no \"Max open files\"")?;
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    match numbers[..] {
        [soft, hard, ..] => Ok((soft, hard)),
        // "unlimited" does not parse: no limit to raise.
        _ => Ok((u64::MAX, u64::MAX)),
    }
}

/// Cores and CPU model.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores available to this process, {model}")
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// `release` or `debug`: figures of a debug build mean little.
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&samples[..1], 0.99), Duration::from_millis(1));
    }

    #[test]
    fn percentile_of_no_samples_is_zero() {
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn gauge_reads_only_the_named_unlabelled_series() {
        let text = "# TYPE vomesh_c2s_connections gauge\n\
                    vomesh_c2s_connections_total 9\n\
                    vomesh_c2s_connections 42\n";
        assert_eq!(gauge(text, "vomesh_c2s_connections"), Some(42.0));
        assert_eq!(gauge(text, "vomesh_missing"), None);
    }

    #[test]
    fn own_cpu_time_and_memory_are_readable() {
        assert!(cpu_ticks("self").is_ok());
        assert!(rss_bytes(std::process::id()).is_ok_and(|bytes| bytes > 0));
        assert!(run_queue_wait("self").is_ok());
    }
}
