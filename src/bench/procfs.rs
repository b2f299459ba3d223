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
    }
}
