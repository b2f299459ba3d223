//! The load generator behind `pairlink-bench` (src/bin/pairlink-bench.rs).
//!
//! # Layout
//!
//! - [`args`]: the command line.
//! - [`http`]: a small HTTP/1.1 client: keep-alive connections, deadlines,
//!   failures as error kinds.
//! - [`json`]: a strict JSON reader for the answers, and the report writer.
//! - [`target`]: join, poll, send and leave, for pairlink or nginx + Nchan.
//! - [`relay`], [`pairing`], [`idle`]: the three workloads.
//! - [`hist`]: a log-linear latency histogram.
//! - [`procfs`]: the server's CPU time and RSS from `/proc`.
//! - `pairlink::fdlimit` (shared with the server): raises the open-file
//!   limit to what the run needs.
//! - [`report`]: error counters, CPU meter, the JSON line and the summary.
//!
//! Everything runs on one thread in the server's own executor and event
//! loop (`pairlink::io::rt`: `LocalExecutor`, edge-triggered epoll, timers
//! without system calls), not on smol's: pinned to its own core with
//! `taskset`, the generator's cost is easy to see, does not steal from the
//! server's core, and is small enough not to be the limit of a run.

pub mod args;
pub mod hist;
pub mod http;
pub mod idle;
pub mod json;
pub mod pairing;
pub mod procfs;
pub mod relay;
pub mod report;
pub mod target;

use args::{Args, Workload};
use pairlink::io::rt::{self, LocalExecutor};
use report::Outcome;
use std::io;
use std::rc::Rc;
use std::time::Duration;
use target::LEAVE_CONCURRENCY;

/// Longest set-up of a run (joins, connections): a server that cannot
/// take the sessions within this is measured with those it took.
pub const SETUP_TIME_MAX: Duration = Duration::from_secs(120);

/// Sockets the run holds open at most, plus the generator's other files:
/// relay, four per pair (a poll and a send connection per side); pairing,
/// two per pair in flight; idle, one per session and a control connection
/// per node. The clean-up leaves use [`LEAVE_CONCURRENCY`] connections per
/// node.
pub fn files_needed(args: &Args) -> u64 {
    let nodes = args.urls.len() as u64;
    let sockets = match args.workload {
        Workload::Relay => 4 * args.pairs,
        Workload::Pairing => 2 * args.concurrency.min(args.pairs),
        Workload::Idle => args.sessions + nodes,
    };
    sockets.max(LEAVE_CONCURRENCY as u64 * nodes) + pairlink::fdlimit::FILES_BESIDES_SOCKETS
}

/// Runs the workload `args` asks for, to its end. Fails only when the
/// event loop itself cannot be created or waited on.
pub fn run(args: Args) -> io::Result<Outcome> {
    let ex = Rc::new(LocalExecutor::new());
    rt::block_on(ex.run(async {
        match args.workload {
            Workload::Relay => relay::run(ex.clone(), args).await,
            Workload::Pairing => pairing::run(ex.clone(), args).await,
            Workload::Idle => idle::run(ex.clone(), args).await,
        }
    }))
}
