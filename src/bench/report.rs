//! What every workload reports: error counters by kind, the server's CPU
//! over the measured window, latency quantiles, and the common head of the
//! JSON line.

use super::args::Args;
use super::hist::Hist;
use super::http::ErrKind;
use super::json::Writer;
use super::procfs::{self, Cpu, MachineTicks};
use std::collections::BTreeMap;

/// Failed requests and other surprises, by kind.
#[derive(Default, Debug)]
pub struct Errors {
    by_kind: BTreeMap<String, u64>,
}

impl Errors {
    /// Counts a failed request.
    pub fn add(&mut self, e: ErrKind) {
        self.add_named(&e.name());
    }

    /// Counts a surprise that is not a request failure (`duplicate`,
    /// `out_of_order`, `no_peer_online`, `leave_timeout`).
    pub fn add_named(&mut self, name: &str) {
        *self.by_kind.entry(name.to_string()).or_insert(0) += 1;
    }

    /// Counts `n` surprises of one kind (nothing when `n` is 0).
    pub fn add_count(&mut self, name: &str, n: u64) {
        if n > 0 {
            *self.by_kind.entry(name.to_string()).or_insert(0) += n;
        }
    }

    /// The count of one kind.
    pub fn count(&self, name: &str) -> u64 {
        self.by_kind.get(name).copied().unwrap_or(0)
    }

    /// All counts added up.
    pub fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }

    /// `"errors":{"timeout":2,…},"errors_total":2`
    pub fn write(&self, w: &mut Writer) {
        w.begin("errors");
        for (k, v) in &self.by_kind {
            w.u64(k, *v);
        }
        w.end();
        w.u64("errors_total", self.total());
    }

    /// `timeout 2, status_429 1` or `none`.
    pub fn summary(&self) -> String {
        if self.by_kind.is_empty() {
            return "none".into();
        }
        self.by_kind
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Reads the server's CPU time at the start and the end of a window, and
/// the share of the machine's time the hypervisor stole meanwhile (a
/// virtual machine's latency tail follows it).
pub struct Meter {
    pids: Vec<u32>,
    ticks_per_s: u64,
    start: Option<Cpu>,
    machine: [Option<MachineTicks>; 2],
}

impl Meter {
    /// A meter for `pids` (none: every reading is absent).
    pub fn new(pids: &[u32]) -> Meter {
        Meter {
            pids: pids.to_vec(),
            ticks_per_s: procfs::clock_ticks(),
            start: None,
            machine: [None; 2],
        }
    }

    fn read(&self) -> Option<Cpu> {
        if self.pids.is_empty() {
            return None;
        }
        match procfs::cpu(&self.pids, self.ticks_per_s) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("pairlink-bench: cannot read the server's CPU time: {e}");
                None
            }
        }
    }

    /// Starts the window.
    pub fn start(&mut self) {
        self.start = self.read();
        self.machine = [procfs::machine_ticks().ok(), None];
    }

    /// Whether there is a process to measure at all (`--pid` given).
    pub fn has_pids(&self) -> bool {
        !self.pids.is_empty()
    }

    /// The CPU time since [`Meter::start`]; ends the window.
    pub fn stop(&mut self) -> Option<Cpu> {
        self.machine[1] = procfs::machine_ticks().ok();
        Some(self.start?.until(self.read()?))
    }

    /// The percentage of the machine's CPU time stolen by the host in the
    /// window, if `/proc/stat` could be read.
    pub fn steal_pct(&self) -> Option<f64> {
        match self.machine {
            [Some(start), Some(stop)] => start.steal_pct_until(stop),
            _ => None,
        }
    }

    /// The server's resident memory now, in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        if self.pids.is_empty() {
            return None;
        }
        match procfs::rss_bytes(&self.pids) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("pairlink-bench: cannot read the server's RSS: {e}");
                None
            }
        }
    }
}

/// The report's head: workload, target, URLs, seed, pids.
pub fn head(args: &Args) -> Writer {
    let mut w = Writer::new();
    w.str("workload", args.workload.name());
    w.str("target", args.target.name());
    w.strs("urls", &args.url_texts);
    w.u64("seed", args.seed);
    let pids: Vec<u64> = args.pids.iter().map(|&p| u64::from(p)).collect();
    w.u64s("pids", &pids);
    w
}

/// `"latency_us":{"p50":…,"p90":…,"p99":…,"max":…,"samples":…}`
pub fn write_latency(w: &mut Writer, key: &str, h: &Hist) {
    w.begin(key);
    w.f64("p50", us(h.quantile(0.50)));
    w.f64("p90", us(h.quantile(0.90)));
    w.f64("p99", us(h.quantile(0.99)));
    w.f64("max", us(h.max()));
    w.u64("samples", h.count());
    w.end();
}

/// `p50 81 µs, p90 120 µs, p99 400 µs, max 2.1 ms`
pub fn latency_summary(h: &Hist) -> String {
    format!(
        "p50 {}, p90 {}, p99 {}, max {}",
        human(h.quantile(0.50)),
        human(h.quantile(0.90)),
        human(h.quantile(0.99)),
        human(h.max())
    )
}

fn human(d: std::time::Duration) -> String {
    let us = us(d);
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

/// Microseconds as a float.
pub fn us(d: std::time::Duration) -> f64 {
    d.as_nanos() as f64 / 1000.0
}

/// `"generator_cpu_s":…`: this process's own CPU time over the window, so
/// a reader sees when the generator, not the server, was the limit (close
/// to `duration_s` means its core was saturated).
pub fn write_generator_cpu(w: &mut Writer, cpu: Option<Cpu>) {
    if let Some(cpu) = cpu {
        w.f64("generator_cpu_s", cpu.total_s());
    }
}

/// `"server":{"cpu_user_s":…,"cpu_system_s":…,"cpu_s":…, "<unit>_per_cpu_s":…,
/// "user_us_per_<unit>":…,"system_us_per_<unit>":…}` for `count` units of
/// work; nothing when the CPU time is unknown (no `--pid`, or `/proc`
/// could not be read: `meter` tells which). Before it, `"host_steal_pct"`
/// when `/proc/stat` was read. Returns the summary text.
pub fn write_cpu(
    w: &mut Writer,
    meter: &Meter,
    cpu: Option<Cpu>,
    unit: &str,
    count: u64,
) -> String {
    if let Some(pct) = meter.steal_pct() {
        w.f64("host_steal_pct", pct);
    }
    let Some(cpu) = cpu else {
        return if meter.has_pids() {
            "server CPU: could not be read from /proc".into()
        } else {
            "server CPU: not measured (pass --pid)".into()
        };
    };
    w.begin("server");
    w.f64("cpu_user_s", cpu.user_s);
    w.f64("cpu_system_s", cpu.system_s);
    w.f64("cpu_s", cpu.total_s());
    let per_cpu_s = count as f64 / cpu.total_s();
    let per = |s: f64| {
        if count == 0 {
            f64::NAN
        } else {
            s * 1e6 / count as f64
        }
    };
    w.f64(&format!("{unit}_per_cpu_s"), per_cpu_s);
    w.f64(&format!("user_us_per_{unit}"), per(cpu.user_s));
    w.f64(&format!("system_us_per_{unit}"), per(cpu.system_s));
    w.end();
    let steal = meter
        .steal_pct()
        .map(|pct| format!("; host steal {pct:.1}% of the machine's time"))
        .unwrap_or_default();
    format!(
        "server CPU {:.2} s (user {:.2}, system {:.2}): {:.0} {unit}s per CPU-second, {:.2} µs user + {:.2} µs system per {unit}{steal}",
        cpu.total_s(),
        cpu.user_s,
        cpu.system_s,
        per_cpu_s,
        per(cpu.user_s),
        per(cpu.system_s)
    )
}

/// What a workload hands back to `main`.
pub struct Outcome {
    /// The JSON line.
    pub line: String,
    /// The human summary, a few lines.
    pub summary: String,
    /// The workload completed some work (exit 0), or nothing at all (1).
    pub ok: bool,
}
