//! The thin smol layer: it owns the sockets, the clock and the randomness,
//! and drives the sans-IO core with them.
//!
//! Everything runs on one thread in one `LocalExecutor`: the node's state is
//! an `Rc<RefCell<..>>` borrowed for the length of one synchronous core call
//! and never across an `.await`, so there are no locks and no atomics on the
//! hot path.

pub mod cluster;
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
use cluster::ClusterState;
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
    let name_for_cluster = name.clone();
    let mut peer_names = Vec::with_capacity(config.peers.len());
    for peer in &config.peers {
        let name = ids::parse_node_name(&peer.name).ok_or_else(|| {
            std::io::Error::other(format!("peer name {:?} is out of syntax", peer.name))
        })?;
        peer_names.push(name);
    }
    let cluster_listener = match config.cluster_listen {
        Some(addr) => Some(Async::<TcpListener>::bind(addr)?),
        None => None,
    };
    let node = Node::new(NodeConfig {
        name,
        peers: peer_names.clone(),
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
    let cluster = ClusterState::new(
        name_for_cluster,
        config.cookie.clone().unwrap_or_default(),
        millis(config.heartbeat),
        config.peers.clone(),
    );
    let shared = Rc::new(Shared::new(api, config, cluster));
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
    let ex = Rc::new(LocalExecutor::new());
    smol::block_on(ex.run(async {
        let timers = ex.spawn(shared::run_timers(shared.clone()));
        let accept = ex.spawn(listener::accept_loop(shared.clone(), listener, ex.clone()));
        let mut cluster_tasks = Vec::new();
        if let Some(cluster_listener) = cluster_listener {
            let at = cluster_listener
                .get_ref()
                .local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string());
            log::info!(
                "node-to-node on {at}; heartbeat {:?}; peers: {}",
                config.heartbeat,
                peer_list(config)
            );
            cluster_tasks.push(ex.spawn(cluster::accept_loop(
                shared.clone(),
                cluster_listener,
                ex.clone(),
            )));
            for (i, peer) in config.peers.iter().enumerate() {
                // Only the lower name dials, so a pair never races two
                // connections (docs/PROTOCOL.md).
                if config.node.as_str() < peer.name.as_str() {
                    cluster_tasks.push(ex.spawn(cluster::dial_loop(shared.clone(), i)));
                }
            }
        }
        let signal = signals.next().await;
        log::info!("{} received: draining", signal_name(signal));
        // Stop accepting: cancelling the task drops the listener.
        drop(accept);
        shared.drain();
        let deadline = Instant::now() + Duration::from_millis(DRAIN_MS_MAX);
        // Answered polls are written, and `shutdown` exits reach the peers,
        // before the process goes.
        while (shared.requests_in_flight() > 0 || shared.cluster.borrow().unsent_bytes() > 0)
            && Instant::now() < deadline
        {
            Timer::after(Duration::from_millis(5)).await;
        }
        drop(cluster_tasks);
        drop(timers);
        log::info!("drained; exiting");
    }));
    Ok(())
}

fn peer_list(config: &Config) -> String {
    let names: Vec<String> = config
        .peers
        .iter()
        .map(|p| format!("{}={}", p.name, p.addr))
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
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
