//! The cluster's IO: the node-to-node listener, dialling peers with backoff,
//! and one task per connection that moves bytes between its socket and its
//! sans-IO [`PeerConn`], and frames between the connection and the node.
//!
//! Only the node whose name sorts lower dials a pair's connection; the
//! other only accepts. An accepted connection from a peer that already has
//! one replaces it (the peer probably restarted and its old socket is
//! dead). See docs/PROTOCOL.md.

use super::ratelimit::{held_back, RateLimited};
use super::rt::{self, Io, LocalExecutor, Timer};
use super::Shared;
use crate::api::PeerState;
use crate::cluster::backoff::Backoff;
use crate::cluster::conn::{ConnError, ConnEvent, PeerConn};
use crate::cluster::frame::{Frame, FRAME_PREFIX_BYTES, HANDSHAKE_FRAME_BYTES_MAX};
use crate::cluster::handshake::Role;
use crate::config::PeerSpec;
use crate::proto::ids::NodeName;
use smol::future;
use smol::Async;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::rc::{Rc, Weak};
use std::time::Duration;

/// Bytes read from a peer socket at a time once the peer is authenticated.
const PEER_READ_BYTES: usize = 64 * 1024;
/// Bytes read at a time before that: a handshake frame is at most
/// [`HANDSHAKE_FRAME_BYTES_MAX`] plus its prefix, so a connection that
/// never authenticates holds no more than this.
const HANDSHAKE_READ_BYTES: usize = 512;
/// Accepted connections that may be handshaking at once: whoever can reach
/// the cluster port cannot hold an unbounded number of sockets, tasks and
/// buffers until the handshake deadline. A connection accepted when all
/// places are taken closes the oldest of them to take its place (counted
/// in `/metrics`): a peer's handshake takes a round trip, so the oldest
/// place is the one least likely to be a peer's, and a client that opens
/// silent connections cannot keep the peers out (it could, when the
/// newcomer was the one closed: a review held a node's places for as long
/// as it liked, and a restarted peer stayed down). Configured peers need
/// one place each, at most two while a connection is being replaced.
pub const INBOUND_HANDSHAKES_MAX: usize = 32;

/// How often a connection that failed its handshake may be logged.
const HANDSHAKE_FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

const _: () = assert!(HANDSHAKE_READ_BYTES >= HANDSHAKE_FRAME_BYTES_MAX + FRAME_PREFIX_BYTES);
/// Bound on a dial: connect within this or try again later.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// One live connection to a peer, shared by its task and the code that
/// queues frames for it.
#[derive(Debug)]
pub struct ConnHandle {
    id: u64,
    conn: RefCell<PeerConn>,
    /// Wakes the connection's writer (one slot: a pending wake is enough).
    wake: async_channel::Sender<()>,
    woken: async_channel::Receiver<()>,
    /// Set when the connection must end (queue full, replaced, drained).
    closing: Cell<Option<&'static str>>,
    /// Bytes taken from the connection and being written now.
    writing: Cell<usize>,
}

impl ConnHandle {
    fn wake(&self) {
        // To the back of the run queue, not the LIFO slot: the frames that
        // the rest of this batch of requests queue go out in the same write.
        rt::defer_wakes(|| {
            let _ = self.wake.try_send(());
        });
    }

    pub(super) fn close(&self, why: &'static str) {
        if self.closing.get().is_none() {
            self.closing.set(Some(why));
        }
        self.wake();
    }
}

/// The cluster side of a node's shared state.
#[derive(Debug)]
pub struct ClusterState {
    me: NodeName,
    cookie: Vec<u8>,
    heartbeat_ms: u64,
    peers: Vec<PeerSpec>,
    /// The established connection of each peer (index = node index - 1).
    conns: Vec<Option<Rc<ConnHandle>>>,
    next_conn_id: u64,
    /// Accepted connections whose handshake has not completed, oldest
    /// first (at most [`INBOUND_HANDSHAKES_MAX`]).
    handshaking: VecDeque<Rc<SlotState>>,
    /// Connections that ended before their handshake completed, logged at
    /// most once per [`HANDSHAKE_FAILURE_LOG_EVERY`]: anyone who can reach
    /// the cluster port can cause them.
    handshake_failures: RateLimited,
    /// Connections closed over [`INBOUND_HANDSHAKES_MAX`], likewise.
    refusals: RateLimited,
}

impl ClusterState {
    /// Cluster state for `me` and its configured peers.
    pub fn new(me: NodeName, cookie: Vec<u8>, heartbeat_ms: u64, peers: Vec<PeerSpec>) -> Self {
        let conns = peers.iter().map(|_| None).collect();
        ClusterState {
            me,
            cookie,
            heartbeat_ms,
            peers,
            conns,
            next_conn_id: 1,
            handshaking: VecDeque::new(),
            handshake_failures: RateLimited::default(),
            refusals: RateLimited::default(),
        }
    }

    /// Queues a frame on peer `peer`'s connection; a full queue closes it
    /// (its links then fire `node_down`) rather than buffering without bound.
    pub fn send(&self, peer: u16, frame: &Frame) {
        let Some(Some(handle)) = self.conns.get(usize::from(peer).wrapping_sub(1)) else {
            return;
        };
        let queued = handle.conn.borrow_mut().send(frame);
        match queued {
            Ok(()) => handle.wake(),
            // A frame no peer would accept (a reply over FRAME_BYTES_MAX)
            // is dropped, not the connection: its request then times out
            // with 503 at the other end.
            Err(e) if !e.is_fatal() => {
                log::warn!(
                    "peer {}: {e}; frame dropped",
                    self.peers[usize::from(peer) - 1].name
                );
            }
            Err(e) => {
                log::warn!(
                    "peer {}: {e}; disconnecting",
                    self.peers[usize::from(peer) - 1].name
                );
                handle.close("outbound queue full");
            }
        }
    }

    /// Makes `handle` peer `index`'s connection; returns the one it replaces.
    pub fn install(&mut self, index: u16, handle: Rc<ConnHandle>) -> Option<Rc<ConnHandle>> {
        let slot = self.conns.get_mut(usize::from(index).wrapping_sub(1))?;
        slot.replace(handle)
            .filter(|old| !Rc::ptr_eq(old, slot.as_ref().expect("just set")))
    }

    /// Bytes queued for peers and not yet written.
    pub fn unsent_bytes(&self) -> usize {
        self.conns
            .iter()
            .flatten()
            .map(|h| h.conn.borrow().transmit_bytes() + h.writing.get())
            .sum()
    }

    /// Heartbeat round-trip time of each up peer, by name.
    pub fn rtts(&self) -> Vec<(String, Option<u64>)> {
        self.peers
            .iter()
            .zip(&self.conns)
            .map(|(p, c)| {
                (
                    p.name.clone(),
                    c.as_ref().and_then(|h| h.conn.borrow().rtt_ms()),
                )
            })
            .collect()
    }
}

/// Accepts node-to-node connections until cancelled.
pub async fn accept_loop(shared: Rc<Shared>, listener: Io<TcpListener>, ex: Rc<LocalExecutor>) {
    loop {
        let accepted = listener
            .read_with(|l| l.accept())
            .await
            .and_then(|(stream, from)| Ok((Io::new(stream)?, from)));
        match accepted {
            Ok((stream, from)) => {
                let (slot, evicted) = HandshakeSlot::take(&shared);
                if evicted {
                    let logged = shared
                        .cluster
                        .borrow_mut()
                        .refusals
                        .allow(HANDSHAKE_FAILURE_LOG_EVERY);
                    if let Some(others) = logged {
                        log::warn!(
                            "cluster connection from {from}: {INBOUND_HANDSHAKES_MAX} \
                             handshakes already under way; the oldest is closed{}",
                            held_back(others)
                        );
                    }
                    shared.metrics(|m| m.cluster_connections_refused += 1);
                }
                let _ = stream.get_ref().set_nodelay(true);
                log::debug!("cluster connection from {from}");
                let shared = shared.clone();
                ex.spawn_detached(async move {
                    let addr = from.to_string();
                    run_conn(shared, stream, &addr, Role::Acceptor, Some(slot), None).await;
                });
            }
            Err(e) => {
                log::warn!("cluster accept failed: {e}; pausing");
                Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Keeps a connection to peer `index` (0-based) up: dial, run, back off,
/// again. Only for peers whose name sorts above ours.
pub async fn dial_loop(shared: Rc<Shared>, index: usize) {
    let (name, addr) = {
        let cluster = shared.cluster.borrow();
        let spec = &cluster.peers[index];
        (spec.name.clone(), spec.addr.clone())
    };
    let Some(dialed) = crate::proto::ids::parse_node_name(&name) else {
        return;
    };
    let mut backoff = Backoff::new();
    // Dial failures in a row: the first few are routine (a peer starting
    // later), so only a long run of them is worth a warning.
    let mut failures: u64 = 0;
    loop {
        match connect(&addr).await {
            Ok(stream) => {
                let was_up = run_conn(
                    shared.clone(),
                    stream,
                    &addr,
                    Role::Dialer,
                    None,
                    Some(dialed.clone()),
                )
                .await;
                if was_up {
                    backoff.reset();
                }
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                if failures == DIAL_FAILURES_WARN || failures % (10 * DIAL_FAILURES_WARN) == 0 {
                    log::warn!(
                        "cannot reach peer {name} at {addr} ({failures} tries in a row): {e}"
                    );
                } else {
                    log::debug!("cannot reach peer {name} at {addr}: {e}");
                }
            }
        }
        let jitter = shared.random_u32();
        Timer::after(Duration::from_millis(backoff.next_delay_ms(jitter))).await;
    }
}

/// Failed dials in a row before one is logged as a warning (then every
/// ten times as many).
const DIAL_FAILURES_WARN: u64 = 5;

/// Heartbeats without a connection from a peer that dials this node
/// before the log says so (then every ten times as many).
const UNDIALED_HEARTBEATS_WARN: u64 = 10;

/// For a peer whose name sorts below ours, which dials us: tells the log
/// when it has not connected for a while. Nothing else would show it:
/// the usual cause is that the peer's own `--peer` list lacks this node,
/// and then it never calls (a node only dials the peers it is given).
pub async fn expect_dial(shared: Rc<Shared>, index: usize) {
    let (name, me) = {
        let cluster = shared.cluster.borrow();
        (cluster.peers[index].name.clone(), cluster.me.clone())
    };
    let heartbeat = Duration::from_millis(shared.heartbeat_ms().max(1));
    let first = heartbeat * UNDIALED_HEARTBEATS_WARN as u32;
    let mut wait = first;
    loop {
        Timer::after(wait).await;
        if shared.cluster.borrow().conns[index].is_some() {
            wait = first;
            continue;
        }
        log::warn!(
            "peer {name} is not connected: it dials this node (its name sorts \
             before {me}); is it running, and does its --peer list name {me}?"
        );
        wait = first * 10;
    }
}

async fn connect(addr: &str) -> io::Result<Io<TcpStream>> {
    let addrs: Vec<SocketAddr> = match addr.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => {
            let owned = addr.to_string();
            smol::unblock(move || owned.to_socket_addrs().map(|it| it.collect())).await?
        }
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for a in addrs {
        let attempt = future::or(
            async { Some(Async::<TcpStream>::connect(a).await) },
            async {
                Timer::after(CONNECT_TIMEOUT).await;
                None
            },
        )
        .await;
        match attempt {
            Some(Ok(stream)) => {
                // Connecting is async-io's (a rare event, on its thread);
                // the connection is then this thread's loop's.
                let stream = Io::new(stream.into_inner()?)?;
                let _ = stream.get_ref().set_nodelay(true);
                return Ok(stream);
            }
            Some(Err(e)) => last = e,
            None => last = io::ErrorKind::TimedOut.into(),
        }
    }
    Err(last)
}

/// One of the [`INBOUND_HANDSHAKES_MAX`] places of accepted connections
/// still handshaking; given back when dropped.
struct HandshakeSlot {
    shared: Rc<Shared>,
    state: Rc<SlotState>,
}

/// A place as the list of places sees it: closed to make room for a newer
/// one, and the connection to close then (once its task has made it).
#[derive(Debug, Default)]
struct SlotState {
    evicted: Cell<bool>,
    handle: RefCell<Weak<ConnHandle>>,
}

/// Why an evicted connection ends.
const EVICTED: &str = "closed to make room: too many handshakes under way";

impl HandshakeSlot {
    /// A place for a connection just accepted, and whether the oldest
    /// place was taken from its connection for it.
    fn take(shared: &Rc<Shared>) -> (HandshakeSlot, bool) {
        let mut cluster = shared.cluster.borrow_mut();
        let mut evicted = false;
        if cluster.handshaking.len() >= INBOUND_HANDSHAKES_MAX {
            if let Some(oldest) = cluster.handshaking.pop_front() {
                oldest.evicted.set(true);
                let handle = oldest.handle.borrow().upgrade();
                if let Some(handle) = handle {
                    handle.close(EVICTED);
                }
                evicted = true;
            }
        }
        let state = Rc::new(SlotState::default());
        cluster.handshaking.push_back(state.clone());
        let slot = HandshakeSlot {
            shared: shared.clone(),
            state,
        };
        (slot, evicted)
    }

    /// The connection using this place, closed at once if the place was
    /// taken from it before its task started.
    fn hold(&self, handle: &Rc<ConnHandle>) {
        *self.state.handle.borrow_mut() = Rc::downgrade(handle);
        if self.state.evicted.get() {
            handle.close(EVICTED);
        }
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut cluster = self.shared.cluster.borrow_mut();
        cluster.handshaking.retain(|s| !Rc::ptr_eq(s, &self.state));
    }
}

/// Runs one connection until it ends; an accepted one holds `slot` until
/// its handshake completes. Returns whether it got past the handshake.
async fn run_conn(
    shared: Rc<Shared>,
    stream: Io<TcpStream>,
    addr: &str,
    role: Role,
    slot: Option<HandshakeSlot>,
    dialed: Option<NodeName>,
) -> bool {
    let handle = {
        let mut cluster = shared.cluster.borrow_mut();
        let nonce = shared.nonce();
        let conn = PeerConn::new(
            shared.now_ms(),
            role,
            cluster.me.clone(),
            cluster.cookie.clone(),
            nonce,
            dialed,
            cluster.heartbeat_ms,
        );
        let (wake, woken) = async_channel::bounded(1);
        let id = cluster.next_conn_id;
        cluster.next_conn_id += 1;
        Rc::new(ConnHandle {
            id,
            conn: RefCell::new(conn),
            wake,
            woken,
            closing: Cell::new(None),
            writing: Cell::new(0),
        })
    };
    if let Some(slot) = &slot {
        slot.hold(&handle);
    }
    handle.wake(); // our Hello is queued
    let peer: Rc<Cell<Option<u16>>> = Rc::new(Cell::new(None));
    let why = future::or(
        read_half(&shared, &stream, &handle, &peer, slot),
        future::or(write_half(&stream, &handle), tick(&shared, &handle, &peer)),
    )
    .await;
    let Some(index) = peer.get() else {
        let logged = shared
            .cluster
            .borrow_mut()
            .handshake_failures
            .allow(HANDSHAKE_FAILURE_LOG_EVERY);
        if let Some(others) = logged {
            // A node refusing our proof just closes: say what that
            // usually means, on the side that cannot see the reason.
            let hint = if role == Role::Dialer && why == CLOSED_BY_PEER {
                " (a different cookie, not a pairlink node there, or too many \
                  handshakes under way there? the peer's log says)"
            } else {
                ""
            };
            log::warn!(
                "cluster connection with {addr} closed before the handshake completed: \
                 {why}{hint}{}",
                held_back(others)
            );
        }
        return false;
    };
    let mut cluster = shared.cluster.borrow_mut();
    let slot = &mut cluster.conns[usize::from(index) - 1];
    let current = slot.as_ref().is_some_and(|h| h.id == handle.id);
    let name = cluster.peers[usize::from(index) - 1].name.clone();
    if current {
        cluster.conns[usize::from(index) - 1] = None;
        drop(cluster);
        log::warn!("peer {name} ({addr}) is down: {why}");
        shared.peer_event(index, PeerState::Down);
    } else {
        log::info!("connection to peer {name} ({addr}) replaced: {why}");
    }
    true
}

/// Why a connection ended when the peer closed it.
const CLOSED_BY_PEER: &str = "closed by the peer";

/// Reads bytes into the connection; acts on what it yields.
async fn read_half(
    shared: &Rc<Shared>,
    stream: &Io<TcpStream>,
    handle: &Rc<ConnHandle>,
    peer: &Cell<Option<u16>>,
    mut slot: Option<HandshakeSlot>,
) -> String {
    let mut buf = vec![0u8; HANDSHAKE_READ_BYTES];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => return CLOSED_BY_PEER.into(),
            Ok(n) => n,
            Err(e) => return format!("read failed: {e}"),
        };
        let now = shared.now_ms();
        let known = |name: &NodeName| shared.is_known_peer(name);
        let result = handle
            .conn
            .borrow_mut()
            .handle_bytes(now, &buf[..n], &known);
        if let Err(e) = result {
            return describe(&e);
        }
        loop {
            // A connection replaced by a newer one (or closing for any
            // reason) hands the node nothing more: its peer went down and
            // came back up on the new connection, and frames read here
            // after that would name handles of the old peer's life.
            if let Some(why) = handle.closing.get() {
                return why.into();
            }
            let event = handle.conn.borrow_mut().poll_event();
            let Some(event) = event else { break };
            match event {
                ConnEvent::Up { peer: name } => match shared.install(&name, handle) {
                    Some(index) => {
                        peer.set(Some(index));
                        drop(slot.take()); // a handshaking place no more
                        buf.resize(PEER_READ_BYTES, 0);
                    }
                    None => return format!("{name} is not a configured peer"),
                },
                ConnEvent::Frame(frame) => {
                    if let Some(index) = peer.get() {
                        shared.peer_frame(index, frame);
                    }
                }
                ConnEvent::PeerClock(hlc) => shared.observe_clock(hlc),
            }
        }
        handle.wake();
        if let Some(why) = handle.closing.get() {
            return why.into();
        }
        if n == buf.len() {
            // More is probably waiting: let this connection's writer and
            // timer (polled after this reader), and every other task, run
            // before reading on, so a peer sending fast cannot hold the
            // thread.
            rt::yield_now().await;
        }
    }
}

/// Writes what the connection has queued, whenever woken.
async fn write_half(stream: &Io<TcpStream>, handle: &ConnHandle) -> String {
    loop {
        if handle.woken.recv().await.is_err() {
            return "closed".into();
        }
        let out = handle.conn.borrow_mut().take_transmit();
        if !out.is_empty() {
            handle.writing.set(out.len());
            let written = stream.write_all(&out).await;
            handle.writing.set(0);
            if let Err(e) = written {
                return format!("write failed: {e}");
            }
            // More may have been queued while this was written.
            handle.wake();
        }
        if let Some(why) = handle.closing.get() {
            return why.into();
        }
    }
}

/// Heartbeats and deadlines. It looks a few times per heartbeat rather than
/// tracking every change of the connection's next deadline.
async fn tick(shared: &Rc<Shared>, handle: &ConnHandle, peer: &Cell<Option<u16>>) -> String {
    let step = Duration::from_millis((shared.heartbeat_ms() / 4).max(1));
    loop {
        let next = handle.conn.borrow().poll_timeout();
        let now = shared.now_ms();
        let wait = next.map_or(step, |at| {
            Duration::from_millis(at.saturating_sub(now)).min(step)
        });
        Timer::after(wait).await;
        let result = handle
            .conn
            .borrow_mut()
            .handle_timeout(shared.now_ms(), shared.hlc());
        if let Err(e) = result {
            return describe(&e);
        }
        if let Some(index) = peer.get() {
            shared.set_rtt(index, handle.conn.borrow().rtt_ms());
        }
        handle.wake();
    }
}

fn describe(e: &ConnError) -> String {
    e.to_string()
}
