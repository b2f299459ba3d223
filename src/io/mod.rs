//! The thin driver: it owns the sockets, the clock and the randomness,
//! and drives the sans-IO core with them.
//!
//! Everything runs on one thread in one `rt::LocalExecutor`: the node's state is
//! an `Rc<RefCell<..>>` borrowed for the length of one synchronous core call
//! and never across an `.await`, so there are no locks and no atomics on the
//! hot path.

#[cfg(test)]
mod answer_tests;
mod budget;
pub mod cluster;
mod conn;
mod listener;
mod ms_clock;
pub mod random;
mod ratelimit;
pub mod rt;
mod shared;
pub mod waiter;

pub use shared::Shared;

use crate::api::{Api, ApiConfig};
use crate::config::Config;
use crate::core::{Node, NodeConfig};
use crate::limits::{DRAIN_MS_MAX, LOOKUP_TIMEOUT_MS};
use crate::proto::ids;
use crate::systemd::Notifier;
use cluster::ClusterState;
use rt::{Io, LocalExecutor, Timer};
use smol::stream::StreamExt;
use std::net::TcpListener;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The node's core, API and cluster state for `config`, shared by every
/// task of the loop.
fn new_shared(config: &Config) -> std::io::Result<Rc<Shared>> {
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
    Ok(Rc::new(Shared::new(api, config, cluster)))
}

/// How long the answers to abandoned forwarded requests may take to be
/// written at the end of a drain.
const ABANDONED_WRITE_MS: Duration = Duration::from_millis(200);

/// Open files the server uses besides its HTTP connections: listeners,
/// epoll, eventfd, async-io's poller and timer, stdio, the spare of
/// `listener`, and two per peer (a connection and a dial being replaced).
const FILES_BESIDES_CONNECTIONS: u64 = 32;

/// Raises the soft open-file limit to the hard one, and warns when even
/// that is below what `--max-connections` needs: past it, accepting fails
/// and new clients get `503` from the listener's spare descriptor rather
/// than the answers they came for.
fn check_open_files(config: &Config) {
    let need = (config.max_connections as u64)
        .saturating_add(FILES_BESIDES_CONNECTIONS)
        .saturating_add(2 * config.peers.len() as u64);
    match crate::fdlimit::raise_soft_to_hard() {
        Ok(limit) if limit < need => log::warn!(
            "the open-file limit is {limit}, below the {need} that --max-connections {} \
             needs; past about {} connections new ones get 503 (raise LimitNOFILE= or \
             `ulimit -n`, or lower --max-connections)",
            config.max_connections,
            limit.saturating_sub(FILES_BESIDES_CONNECTIONS),
        ),
        Ok(_) => {}
        Err(e) => log::warn!("cannot read or raise the open-file limit: {e}"),
    }
}

/// Runs the server until SIGTERM or SIGINT, then drains and returns.
pub fn run(config: &Config) -> std::io::Result<()> {
    // Signals first, so one that arrives during start-up drains rather
    // than killing the process halfway.
    // SIGHUP too (a closed terminal, a careless `kill -HUP`): there is no
    // configuration to reload, and dying without a drain would give peers
    // `node_down` and leave waiting polls unanswered. Unless it came
    // ignored (`nohup`): whoever started the node asked for it to live on.
    let mut wanted = vec![async_signal::Signal::Term, async_signal::Signal::Int];
    if !sighup_ignored() {
        wanted.push(async_signal::Signal::Hup);
    }
    let mut signals = async_signal::Signals::new(wanted)?;
    let listener = match crate::systemd::activated_listener() {
        Some(l) => {
            log::info!("using the socket systemd passed (LISTEN_FDS); --listen is ignored");
            Io::new(l)?
        }
        None => Io::new(
            TcpListener::bind(config.listen)
                .map_err(|e| bind_error("--listen", config.listen, e))?,
        )?,
    };
    let local = listener.get_ref().local_addr()?;
    let cluster_listener = match config.cluster_listen {
        Some(addr) => Some(Io::new(
            TcpListener::bind(addr).map_err(|e| bind_error("--cluster-listen", addr, e))?,
        )?),
        None => None,
    };
    let shared = new_shared(config)?;
    check_open_files(config);
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
    rt::block_on(ex.run(async {
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
                } else {
                    cluster_tasks.push(ex.spawn(cluster::expect_dial(shared.clone(), i)));
                }
            }
        }
        // Both listeners are bound and served from here on.
        let notifier = Rc::new(Notifier::from_env());
        notifier.notify(&format!("READY=1\n{}", shared.status_line()));
        let status = ex.spawn(report_status(shared.clone(), notifier.clone()));
        // A task of its own: polled only when a signal comes, not on every
        // turn of the loop as the main future is.
        let signal = ex.spawn(async move { signals.next().await }).await;
        log::info!("{} received: draining", signal_name(signal));
        notifier.notify("STOPPING=1\nSTATUS=draining");
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
        // Forwarded requests whose home node did not answer in time get
        // 503 rather than a closed connection; a moment to write them.
        if shared.requests_in_flight() > 0 {
            shared.abandon_forwards();
            let last = Instant::now() + ABANDONED_WRITE_MS;
            while shared.requests_in_flight() > 0 && Instant::now() < last {
                Timer::after(Duration::from_millis(5)).await;
            }
        }
        drop(cluster_tasks);
        drop(timers);
        drop(status);
        log::info!("drained; exiting");
    }))
}

/// Tells systemd how the node is doing, and, when a watchdog is set, that
/// the event loop is alive: this task runs on the loop itself, so a stuck
/// loop stops the pings and systemd restarts the service.
async fn report_status(shared: Rc<Shared>, notifier: Rc<Notifier>) {
    if !notifier.enabled() {
        return;
    }
    let interval = notifier
        .watchdog_interval()
        .unwrap_or(STATUS_INTERVAL)
        .min(STATUS_INTERVAL);
    let watchdog = notifier.watchdog_interval().is_some();
    loop {
        Timer::after(interval).await;
        let status = shared.status_line();
        if watchdog {
            notifier.notify(&format!("WATCHDOG=1\n{status}"));
        } else {
            notifier.notify(&status);
        }
    }
}

/// How often `STATUS=` is refreshed without a watchdog.
const STATUS_INTERVAL: Duration = Duration::from_secs(5);

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

/// Whether this process started with SIGHUP ignored (`nohup`), read
/// from the `SigIgn` mask of `/proc/self/status` (bit 0 is signal 1).
fn sighup_ignored() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("SigIgn:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & 1 != 0)
    })
}

fn signal_name(signal: Option<std::io::Result<async_signal::Signal>>) -> &'static str {
    match signal {
        Some(Ok(async_signal::Signal::Term)) => "SIGTERM",
        Some(Ok(async_signal::Signal::Int)) => "SIGINT",
        Some(Ok(async_signal::Signal::Hup)) => "SIGHUP",
        _ => "a signal",
    }
}

/// A bind failure that says which address it was.
fn bind_error(flag: &str, addr: std::net::SocketAddr, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("cannot bind {flag} {addr}: {e}"))
}

/// Whole milliseconds of a duration, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
