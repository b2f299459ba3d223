//! The server's CPU time and resident memory, read from `/proc` (Linux
//! only): `/proc/PID/stat` for user and system time, `/proc/PID/status` for
//! `VmRSS`. Several pids are summed, so nginx's master and worker count as
//! one server.

/// `AT_CLKTCK` in the auxiliary vector: the clock ticks per second that
/// `/proc/PID/stat` counts in.
const AT_CLKTCK: u64 = 17;
/// What Linux uses on every common architecture, if the auxiliary vector
/// cannot be read.
const CLK_TCK_DEFAULT: u64 = 100;

/// CPU seconds used so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// Time in user mode.
    pub user_s: f64,
    /// Time in the kernel on the process's behalf.
    pub system_s: f64,
}

impl Cpu {
    /// Time spent between `self` (earlier) and `later`.
    pub fn until(self, later: Cpu) -> Cpu {
        Cpu {
            user_s: later.user_s - self.user_s,
            system_s: later.system_s - self.system_s,
        }
    }

    /// User plus system.
    pub fn total_s(self) -> f64 {
        self.user_s + self.system_s
    }
}

/// Clock ticks per second, from `/proc/self/auxv` (std has no `sysconf`).
pub fn clock_ticks() -> u64 {
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
        return CLK_TCK_DEFAULT;
    };
    for pair in auxv.chunks_exact(16) {
        let key = u64::from_ne_bytes(pair[..8].try_into().expect("8 bytes"));
        let value = u64::from_ne_bytes(pair[8..].try_into().expect("8 bytes"));
        if key == AT_CLKTCK && value > 0 {
            return value;
        }
    }
    CLK_TCK_DEFAULT
}

/// The summed CPU time of `pids`.
pub fn cpu(pids: &[u32], ticks_per_s: u64) -> Result<Cpu, String> {
    let mut total = Cpu::default();
    for &pid in pids {
        let path = format!("/proc/{pid}/stat");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        // The command name is in parentheses and may hold spaces; the
        // fields we want are 14 (utime) and 15 (stime), counted from 1,
        // i.e. the 12th and 13th after the closing parenthesis.
        let after = text
            .rfind(')')
            .map(|i| &text[i + 1..])
            .ok_or_else(|| format!("{path}: no command name"))?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let tick = |i: usize| -> Result<f64, String> {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .map(|t| t as f64 / ticks_per_s as f64)
                .ok_or_else(|| format!("{path}: field {} unreadable", i + 3))
        };
        total.user_s += tick(11)?;
        total.system_s += tick(12)?;
    }
    Ok(total)
}

/// The machine's CPU time so far, all CPUs together, from the `cpu` line
/// of `/proc/stat`: how much of it the hypervisor stole (time our virtual
/// CPUs were ready to run but the host ran something else), and all of it.
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineTicks {
    /// The `steal` column.
    pub steal: u64,
    /// user + nice + system + idle + iowait + irq + softirq + steal.
    pub total: u64,
}

impl MachineTicks {
    /// The percentage of the machine's time stolen between `self`
    /// (earlier) and `later`; `None` when no time passed.
    pub fn steal_pct_until(self, later: MachineTicks) -> Option<f64> {
        let total = later.total.checked_sub(self.total).filter(|&t| t > 0)?;
        let steal = later.steal.saturating_sub(self.steal);
        Some(steal as f64 * 100.0 / total as f64)
    }
}

/// Reads [`MachineTicks`] now.
pub fn machine_ticks() -> Result<MachineTicks, String> {
    let text = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    parse_machine_ticks(&text).ok_or_else(|| "/proc/stat: no readable cpu line".into())
}

fn parse_machine_ticks(stat: &str) -> Option<MachineTicks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let steal = *fields.get(7)?;
    Some(MachineTicks {
        steal,
        total: fields.iter().sum(),
    })
}

/// The summed `VmRSS` of `pids`, in bytes.
pub fn rss_bytes(pids: &[u32]) -> Result<u64, String> {
    let mut total = 0;
    for &pid in pids {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let kib = text
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("{path}: no VmRSS line"))?;
        total += kib * 1024;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        let ticks = clock_ticks();
        assert!(ticks > 0);
        let c = cpu(&[me], ticks).unwrap();
        assert!(c.user_s >= 0.0 && c.system_s >= 0.0);
        assert!(rss_bytes(&[me]).unwrap() > 0);
        assert!(cpu(&[u32::MAX], ticks).is_err());
        assert!(machine_ticks().unwrap().total > 0);
    }

    #[test]
    fn steal_share_of_the_cpu_line() {
        let before = "cpu  100 0 50 800 0 0 40 10 0 0\ncpu0 50 0 25 400 0 0 20 5 0 0\n";
        let after = "cpu  130 0 70 830 0 0 50 20 0 0\ncpu0 65 0 35 415 0 0 25 10 0 0\n";
        let a = parse_machine_ticks(before).unwrap();
        let b = parse_machine_ticks(after).unwrap();
        assert_eq!((a.steal, a.total), (10, 1000));
        // 10 of 100 ticks were stolen.
        assert_eq!(a.steal_pct_until(b), Some(10.0));
        assert_eq!(a.steal_pct_until(a), None);
        assert!(parse_machine_ticks("cpu0 1 2 3\n").is_none());
        assert!(parse_machine_ticks("cpu  1 2 x 4 5 6 7 8\n").is_none());
    }
}
