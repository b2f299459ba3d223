//! `pairlink-bench`: the load generator shipped with pairlink, as
//! `redis-benchmark` ships with Redis. Run `pairlink-bench --help`.
#![forbid(unsafe_code)]

#[path = "../bench/mod.rs"]
mod bench;

use std::io::Write;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() -> ExitCode {
    // Each run gets its own pair ids unless --seed repeats one, so a run
    // never meets the leftovers (sessions, Nchan channels) of another.
    let clock_seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()) << 40;
    let args = match bench::args::parse(std::env::args_os().skip(1), clock_seed) {
        Ok(bench::args::Parsed::Run(args)) => args,
        Ok(bench::args::Parsed::Help) => {
            print!("{}", bench::args::HELP);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pairlink-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = pairlink::fdlimit::ensure(bench::files_needed(&args)) {
        eprintln!("pairlink-bench: {e}");
        return ExitCode::from(2);
    }
    let outcome = match bench::run(args) {
        Ok(outcome) => outcome,
        // In practice the loop fails only at its start (epoll_create or
        // eventfd refused): a run that cannot start, as for the file limit.
        Err(e) => {
            eprintln!("pairlink-bench: the event loop failed: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", outcome.line);
    let _ = out.flush();
    eprintln!("{}", outcome.summary);
    if outcome.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
