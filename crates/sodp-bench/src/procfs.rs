//! What the load generator reads from `/proc` about the server process, and
//! the one resource limit it raises for itself.
//!
//! CPU time is `utime + stime` from `/proc/PID/stat` (all threads, including
//! ones that already exited; resolution one clock tick, usually 10 ms; both
//! parts are reported too: user space is the server's own code, system time
//! the kernel's work for it), so
//! scenarios size their runs to burn at least a second of server CPU. The sum
//! of `/proc/PID/task/*/schedstat` (nanoseconds, live threads only) is read
//! too and reported beside it as a finer cross-check.

use std::fs;

/// One reading of the server's resource use.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// utime + stime, in nanoseconds (tick resolution).
    pub cpu_ns: u64,
    /// utime alone (user space), in nanoseconds.
    pub user_ns: u64,
    /// stime alone (the kernel on the server's behalf), in nanoseconds.
    pub sys_ns: u64,
    /// Sum of on-CPU time of the live threads, in nanoseconds.
    pub sched_ns: u64,
    /// Resident set size in KiB (`VmRSS`).
    pub rss_kib: u64,
}

/// Reads the server's CPU time and RSS; `None` when the process is gone.
pub fn sample(pid: u32) -> Option<Sample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name (which may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let tick_ns = 1_000_000_000 / clock_ticks_per_second();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(Sample {
        cpu_ns: (utime + stime) * tick_ns,
        user_ns: utime * tick_ns,
        sys_ns: stime * tick_ns,
        sched_ns: sched_ns(pid),
        rss_kib,
    })
}

fn sched_ns(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Raises the soft open-file limit to the hard limit; returns the new soft
/// limit. Thousands of connections need thousands of descriptors.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// The server's resource use over a measured phase.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub before: Sample,
    pub after: Sample,
}

impl Usage {
    /// CPU microseconds (utime + stime) spent in the phase.
    pub fn cpu_us(&self) -> f64 {
        self.after.cpu_ns.saturating_sub(self.before.cpu_ns) as f64 / 1e3
    }

    /// User-space CPU microseconds spent in the phase.
    pub fn user_us(&self) -> f64 {
        self.after.user_ns.saturating_sub(self.before.user_ns) as f64 / 1e3
    }

    /// System (kernel) CPU microseconds spent in the phase.
    pub fn sys_us(&self) -> f64 {
        self.after.sys_ns.saturating_sub(self.before.sys_ns) as f64 / 1e3
    }

    /// The same from schedstat (finer, live threads only).
    pub fn sched_us(&self) -> f64 {
        self.after.sched_ns.saturating_sub(self.before.sched_ns) as f64 / 1e3
    }

    /// CPU microseconds per unit of work (`None` for zero units).
    pub fn cpu_us_per(&self, units: u64) -> Option<f64> {
        (units > 0).then(|| self.cpu_us() / units as f64)
    }

    /// As JSON, with per-unit figures under the given names.
    pub fn to_json(self, per: &[(&str, u64)]) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("cpu_us".into(), round(self.cpu_us()).into());
        m.insert("user_cpu_us".into(), round(self.user_us()).into());
        m.insert("sys_cpu_us".into(), round(self.sys_us()).into());
        m.insert("sched_cpu_us".into(), round(self.sched_us()).into());
        m.insert("rss_kib_before".into(), self.before.rss_kib.into());
        m.insert("rss_kib_after".into(), self.after.rss_kib.into());
        for (name, units) in per {
            if let Some(v) = self.cpu_us_per(*units) {
                m.insert(format!("cpu_us_per_{name}"), round(v).into());
            }
            if *units > 0 {
                let per = |us: f64| round(us / *units as f64);
                m.insert(
                    format!("user_cpu_us_per_{name}"),
                    per(self.user_us()).into(),
                );
                m.insert(format!("sys_cpu_us_per_{name}"), per(self.sys_us()).into());
                m.insert(
                    format!("sched_cpu_us_per_{name}"),
                    round(self.sched_us() / *units as f64).into(),
                );
            }
        }
        serde_json::Value::Object(m)
    }
}

/// Rounds to three decimals for readable JSON.
pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
