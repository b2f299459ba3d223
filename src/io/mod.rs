//! The thin smol layer: it owns the sockets, the clock and the randomness,
//! and drives the sans-IO core with them.
//!
//! Everything runs on one thread in one `LocalExecutor`: the node's state is
//! an `Rc<RefCell<..>>` borrowed for the length of one synchronous core call
//! and never across an `.await`, so there are no locks and no atomics on the
//! hot path.

mod conn;
mod listener;
pub mod random;
mod shared;
pub mod waiter;

pub use shared::Shared;

use crate::api::{Api, ApiConfig};
use crate::config::Config;
use crate::core::{Node, NodeConfig};
use crate::limits::{DRAIN_MS_MAX, LOOKUP_TIMEOUT_MS};
use crate::proto::ids;
use smol::stream::StreamExt;
use smol::{Async, LocalExecutor, Timer};
use std::net::TcpListener;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Runs the server until SIGTERM or SIGINT, then drains and returns.
pub fn run(config: &Config) -> std::io::Result<()> {
    // Signals first, so one that arrives during start-up drains rather
    // than killing the process halfway.
    let mut signals =
        async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])?;
    let listener = Async::<TcpListener>::bind(config.listen)?;
    let local = listener.get_ref().local_addr()?;
    let name = ids::parse_node_name(&config.node)
        .ok_or_else(|| std::io::Error::other("the node name is out of syntax"))?;
    let node = Node::new(NodeConfig {
        name,
        peers: Vec::new(),
        lookup_timeout_ms: LOOKUP_TIMEOUT_MS,
        session_ttl_ms: millis(config.session_ttl),
        poll_timeout_ms: millis(config.poll_timeout),
        max_sessions: config.max_sessions,
        max_session_buffer: config.max_session_buffer,
        max_total_buffer: config.max_total_buffer,
    });
    let api = Api::new(
        node,
        ApiConfig {
            cors_origin: config.cors_origin.clone(),
            peers: config.peers.clone(),
        },
    );
    let shared = Rc::new(Shared::new(api, config));
    log::info!(
        "pairlink {} node {} serving HTTP on {local}; limits: {} connections, {} sessions, \
         {} B per message, {} B per session, {} B per node; poll timeout {:?}, session TTL {:?}, \
         header timeout {:?}",
        env!("CARGO_PKG_VERSION"),
        config.node,
        config.max_connections,
        config.max_sessions,
        config.max_message_bytes,
        config.max_session_buffer,
        config.max_total_buffer,
        config.poll_timeout,
        config.session_ttl,
        config.header_timeout,
    );
    if config.cluster_listen.is_some() || !config.peers.is_empty() {
        log::warn!("the cluster options are accepted but clustering is not built yet: serving as a single node");
    }

    let ex = Rc::new(LocalExecutor::new());
    smol::block_on(ex.run(async {
        let timers = ex.spawn(shared::run_timers(shared.clone()));
        let accept = ex.spawn(listener::accept_loop(shared.clone(), listener, ex.clone()));
        let signal = signals.next().await;
        log::info!("{} received: draining", signal_name(signal));
        // Stop accepting: cancelling the task drops the listener.
        drop(accept);
        shared.drain();
        let deadline = Instant::now() + Duration::from_millis(DRAIN_MS_MAX);
        while shared.requests_in_flight() > 0 && Instant::now() < deadline {
            Timer::after(Duration::from_millis(5)).await;
        }
        drop(timers);
        log::info!("drained; exiting");
    }));
    Ok(())
}

fn signal_name(signal: Option<std::io::Result<async_signal::Signal>>) -> &'static str {
    match signal {
        Some(Ok(async_signal::Signal::Term)) => "SIGTERM",
        Some(Ok(async_signal::Signal::Int)) => "SIGINT",
        _ => "a signal",
    }
}

/// Whole milliseconds of a duration, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
