//! CPU time and memory of a process from `/proc` (Linux only).

/// A process's CPU time (user + system) and resident memory.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub cpu_secs: f64,
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak RSS since start), KiB.
    pub hwm_kib: u64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

impl ProcStat {
    pub fn read(pid: u32) -> Option<Self> {
        Self::read_path(&format!("/proc/{pid}"))
    }

    pub fn read_self() -> Option<Self> {
        Self::read_path("/proc/self")
    }

    pub fn read_path(dir: &str) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
        // Fields after the parenthesised command name (which may hold spaces):
        // utime and stime are fields 14 and 15 of the whole line.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
        let kib = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Some(Self {
            cpu_secs: (utime + stime) / clock_ticks(),
            rss_kib: kib("VmRSS:"),
            hwm_kib: kib("VmHWM:"),
        })
    }
}

/// `/proc/loadavg`'s three averages, recorded with every measurement
/// because the machine is shared.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The whole machine's busy CPU time so far (every core), from the first
/// line of `/proc/stat`: everything but idle and iowait, in seconds.
pub fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let busy: f64 = ticks.iter().take(8).sum::<f64>() - ticks.get(3)? - ticks.get(4)?;
    Some(busy / clock_ticks())
}

/// CPU seconds so far of every process whose command name (`comm`) is
/// `name`, e.g. `postgres` (its backends, WAL writer, ...) or
/// `redis-server`. A process that exits during the run drops out, so this
/// is a lower bound for short-lived ones.
pub fn programme_cpu_secs(name: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .filter_map(|e| ProcStat::read_path(&e.path().to_string_lossy()))
        .map(|s| s.cpu_secs)
        .sum()
}
