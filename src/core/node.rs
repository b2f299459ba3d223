//! A node's handlers: the slab of sessions, the registry of `(pair, side)`,
//! links between paired handlers, and their timers. The cluster's part of
//! the state machine (lookups on other nodes, remote links, forwarding) is
//! in [`super::cluster`], as a second `impl` of the same [`Node`].
//!
//! Every call takes `now` and returns at once. Answers that come later (a
//! waiting poll answered by an event, a join waiting for other nodes'
//! lookups, a request forwarded to another node) are queued as
//! [`Output::Answer`]s; frames for other nodes as [`Output::Send`]. The
//! driver collects both with [`Node::poll_output`].
//!
//! A handler's address is `(node, key, generation)` ([`Addr`]): the slab
//! reuses keys, generations are never reused, so a stale token or link
//! never reaches a newer session.

use super::error::ApiError;
use super::event::{poll_body, EventKind, Reason};
use super::reply::{join_body, Reply};
use super::session::{Addr, Session, WaitingPoll};
use super::timers::Timers;
use super::Millis;
use crate::cluster::frame::{
    Claim, DeliverResult, ForwardOp, Frame, Handle, FORWARD_REPLY_BODY_BYTES_MAX,
};
use crate::limits::{
    FORWARD_SLACK_MS, LATE_LOOKUP_MS, POLL_TIMEOUT_MS_MAX, SECRET_BYTES, SESSION_EVENTS_MAX,
    TOTAL_EVENT_BYTES,
};
use crate::proto::ids::{self, NodeName, PairId, Side, Token};
use slab::Slab;
use std::collections::{BTreeSet, HashMap, VecDeque};

/// `Session::timer_at` of a session that has no entry in the timer set.
const NO_TIMER: Millis = Millis::MAX;

/// The part of the configuration the core uses.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's name, written into tokens.
    pub name: NodeName,
    /// The other nodes of the cluster; peer `i` has node index `i + 1`.
    pub peers: Vec<NodeName>,
    /// Idle session lifetime.
    pub session_ttl_ms: Millis,
    /// Default poll wait.
    pub poll_timeout_ms: Millis,
    /// How long a join waits for other nodes' lookup replies.
    pub lookup_timeout_ms: Millis,
    /// Live sessions at most.
    pub max_sessions: usize,
    /// Unacknowledged message bytes per session before sends get 429.
    pub max_session_buffer: usize,
    /// Unacknowledged message bytes per node before sends get 429.
    pub max_total_buffer: usize,
}

/// Counters the node keeps for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Messages put into a session's buffer on this node.
    pub messages_relayed: u64,
    /// Joins whose peer was found on this node.
    pub lookups_local: u64,
    /// Joins whose peer was found on another node.
    pub lookups_remote: u64,
    /// Joins that found no peer.
    pub lookups_miss: u64,
    /// Client requests carried out on another node.
    pub forwarded: u64,
    /// Sessions ended, by [`Reason::index`].
    pub exits: [u64; 4],
    /// `peer_offline` events given to sessions (link exits), by
    /// [`Reason::index`]; `node_down` shows only here.
    pub peer_offline: [u64; 4],
    /// Sessions ended because another claim to their side won.
    pub conflicts_lost: u64,
}

/// Names one waiting poll, so that its driver can cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollHandle {
    /// Slab key of the session.
    pub key: u32,
    /// Generation of the session.
    pub gen: u64,
    /// The poll's id.
    pub id: u64,
}

/// What a waiting request's driver may cancel when its client goes away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelKey {
    /// A poll waiting on this node.
    Poll(PollHandle),
    /// A request forwarded to another node.
    Forward(u64),
}

/// How a client request started.
#[derive(Debug, PartialEq, Eq)]
pub enum Started {
    /// Answered at once.
    Done(Reply),
    /// The answer comes later as an [`Output::Answer`] to the waiter.
    Waiting(Option<CancelKey>),
}

/// Something the driver must carry out.
#[derive(Debug, PartialEq, Eq)]
pub enum Output<W> {
    /// Answer a waiting client request.
    Answer {
        /// The waiter given when the request started.
        waiter: W,
        /// The answer.
        reply: Reply,
    },
    /// Send a frame to another node.
    Send {
        /// Node index (1..).
        peer: u16,
        /// The frame.
        frame: Frame,
    },
}

/// One live session, as [`Node::inspect`] shows it.
#[derive(Clone, Copy, Debug)]
pub struct SessionView<'a> {
    /// Pair id.
    pub pair: &'a PairId,
    /// Side.
    pub side: Side,
    /// Its address (node 0: this node).
    pub addr: Addr,
    /// Its claim.
    pub hlc: u64,
    /// The linked peer (node index relative to this node).
    pub peer: Option<Addr>,
    /// Highest seq issued.
    pub last_seq: u64,
    /// Whether a poll waits.
    pub polling: bool,
}

/// The acknowledgement of a message put into a session still joining,
/// held until its join is answered (see [`Session::held`]).
#[derive(Debug)]
pub(crate) enum Held<W> {
    /// A send from a session of this node: its client's answer, and the
    /// sender's idempotency key, remembered at once (a retry while this is
    /// held is a repeat) and forgotten if the message is never read.
    Local {
        waiter: W,
        sender: u32,
        sender_gen: u64,
        idempotency_key: Option<Box<[u8]>>,
    },
    /// A `Deliver` from another node: its `DeliverReply`.
    Remote { peer: u16, req: u64 },
}

/// Who waits for an answer: a client on this node, or a request forwarded
/// from another node.
#[derive(Debug)]
pub(super) enum Waiter<W> {
    Local(W),
    Remote { peer: u16, req: u64 },
}

/// A request this node sent to other nodes and waits on.
#[derive(Debug)]
pub(super) enum Pending<W> {
    /// A join waiting for lookup replies from `awaiting`.
    Join {
        waiter: Waiter<W>,
        key: u32,
        gen: u64,
        awaiting: Vec<u16>,
        found_remote: bool,
        deadline: Millis,
    },
    /// A lookup re-sent for a live session when `peer` came up.
    Resync {
        key: u32,
        gen: u64,
        peer: u16,
        /// Dropped unanswered then ([`crate::limits::LATE_LOOKUP_MS`]).
        deadline: Millis,
    },
    /// Lookups still out for a live session (a join that timed out, or
    /// a session looking for its peer again); their replies still count.
    Late {
        key: u32,
        gen: u64,
        awaiting: Vec<u16>,
        /// Dropped unanswered then ([`crate::limits::LATE_LOOKUP_MS`]).
        deadline: Millis,
    },
    /// A client request carried out on `peer`.
    Forward {
        waiter: W,
        peer: u16,
        deadline: Millis,
    },
    /// A resume sent to the token's home node; if it fails, an ordinary
    /// join follows here.
    Resume {
        waiter: W,
        peer: u16,
        pair: PairId,
        side: Side,
        secret: [u8; SECRET_BYTES],
        wall_ms: Millis,
        deadline: Millis,
    },
    /// A message on its way to the peer's handler on `peer`.
    Deliver {
        waiter: Waiter<W>,
        peer: u16,
        key: u32,
        gen: u64,
        idempotency_key: Option<Box<[u8]>>,
        deadline: Millis,
    },
}

impl<W> Pending<W> {
    /// When the request gives up, if it has a deadline.
    fn deadline(&self) -> Option<Millis> {
        match self {
            Pending::Join { deadline, .. }
            | Pending::Forward { deadline, .. }
            | Pending::Resume { deadline, .. }
            | Pending::Deliver { deadline, .. }
            | Pending::Resync { deadline, .. }
            | Pending::Late { deadline, .. } => Some(*deadline),
        }
    }
}

/// State of another node as the core sees it.
#[derive(Debug)]
pub(super) struct PeerNode {
    pub(super) name: NodeName,
    pub(super) up: bool,
}

/// The state of one node. `W` is what the driver needs to answer a waiting
/// client (a one-shot channel in the server, a plain number in tests).
#[derive(Debug)]
pub struct Node<W> {
    pub(super) config: NodeConfig,
    /// Handler state. Keys are reused; [`Session::gen`] tells them apart.
    pub(super) sessions: Slab<Session<Waiter<W>>>,
    /// The local registry: which handlers hold a pair's sides on this
    /// node, by side (`a` first). Keyed by the pair alone, so a join hashes
    /// the pair once to see both sides.
    pub(super) registry: HashMap<PairId, [Option<u32>; 2]>,
    pub(super) timers: Timers,
    /// The next generation; starts at 1 and only grows.
    next_gen: u64,
    next_poll_id: u64,
    pub(super) next_req: u64,
    /// Unacknowledged message bytes of all sessions.
    total_data_bytes: usize,
    /// Unacknowledged events of all sessions.
    total_events: usize,
    /// Node-wide event limit, derived from the byte limit so the memory
    /// taken by many tiny events is bounded too.
    total_events_max: usize,
    waiting_polls: usize,
    draining: bool,
    pub(super) outputs: VecDeque<Output<W>>,
    pub(super) stats: Stats,
    /// Hybrid logical clock: claims are stamped with it.
    pub(super) hlc: u64,
    pub(super) peers: Vec<PeerNode>,
    /// Requests sent to other nodes, by req id.
    pub(super) pending: HashMap<u64, Pending<W>>,
    /// Deadlines of pending requests: `(deadline, req)`.
    pub(super) req_deadlines: BTreeSet<(Millis, u64)>,
    /// Polls forwarded here and waiting, by `(peer, req)`.
    pub(super) remote_polls: HashMap<(u16, u64), PollHandle>,
}

impl<W> Node<W> {
    /// An empty node.
    pub fn new(config: NodeConfig) -> Self {
        let total_events_max =
            (config.max_total_buffer / TOTAL_EVENT_BYTES).max(SESSION_EVENTS_MAX);
        let peers = config
            .peers
            .iter()
            .map(|name| PeerNode {
                name: name.clone(),
                up: false,
            })
            .collect();
        Node {
            config,
            sessions: Slab::new(),
            registry: HashMap::new(),
            timers: Timers::default(),
            next_gen: 1,
            next_poll_id: 1,
            next_req: 1,
            total_data_bytes: 0,
            total_events: 0,
            total_events_max,
            waiting_polls: 0,
            draining: false,
            outputs: VecDeque::new(),
            stats: Stats::default(),
            hlc: 0,
            peers,
            pending: HashMap::new(),
            req_deadlines: BTreeSet::new(),
            remote_polls: HashMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Live sessions.
    pub fn sessions_live(&self) -> usize {
        self.sessions.len()
    }

    /// Where the session at `key` lives (0 for none), for a prefetch
    /// hint ([`crate::prefetch`]): an address, nothing read through it.
    pub fn session_addr(&self, key: u32) -> usize {
        self.sessions
            .get(key as usize)
            .map_or(0, |s| std::ptr::from_ref(s) as usize)
    }

    /// Where the peer of the session at `key` was when it last delivered
    /// to it (0 for none; [`Session::peer_at`]), for a prefetch hint.
    pub fn peer_addr(&self, key: u32) -> usize {
        self.sessions.get(key as usize).map_or(0, |s| s.peer_at)
    }

    /// Polls waiting.
    pub fn polls_waiting(&self) -> usize {
        self.waiting_polls
    }

    /// Unacknowledged message bytes of all sessions.
    pub fn buffered_bytes(&self) -> usize {
        self.total_data_bytes
    }

    /// Requests sent to other nodes and not yet answered.
    pub fn requests_pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether [`Node::drain`] was called.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// The next thing to carry out, if any.
    pub fn poll_output(&mut self) -> Option<Output<W>> {
        self.outputs.pop_front()
    }

    /// When [`Node::handle_timeout`] must next be called.
    pub fn next_deadline(&self) -> Option<Millis> {
        let joins = self.req_deadlines.first().map(|&(at, _)| at);
        match (self.timers.next(), joins) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Joins `side` of `pair`. `auth` is the token the client presented, if
    /// any; `secret` is fresh randomness for a new session's token; `wall_ms`
    /// the wall clock, for the session's claim.
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        &mut self,
        now: Millis,
        wall_ms: Millis,
        pair: &PairId,
        side: Side,
        auth: Option<&Token>,
        secret: [u8; SECRET_BYTES],
        make_waiter: impl FnOnce() -> W,
    ) -> Started {
        if self.draining {
            return Started::Done(ApiError::ShuttingDown.into());
        }
        // A token of another node's live session resumes it there.
        if let Some(token) = auth {
            if token.node != self.config.name {
                if let Some(peer) = self.peer_index(&token.node).filter(|&p| self.is_peer_up(p)) {
                    let req = self.new_req();
                    let frame =
                        super::cluster::forward_frame(req, pair, side, token, ForwardOp::Resume);
                    let waiter = make_waiter();
                    let deadline = now.saturating_add(FORWARD_SLACK_MS);
                    self.put_pending(
                        req,
                        Pending::Resume {
                            waiter,
                            peer,
                            pair: pair.clone(),
                            side,
                            secret,
                            wall_ms,
                            deadline,
                        },
                    );
                    self.send_frame(peer, frame);
                    return Started::Waiting(None);
                }
            }
        }
        self.join_here(now, wall_ms, pair, side, auth, secret, || {
            Waiter::Local(make_waiter())
        })
    }

    /// A join carried out on this node.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn join_here(
        &mut self,
        now: Millis,
        wall_ms: Millis,
        pair: &PairId,
        side: Side,
        auth: Option<&Token>,
        secret: [u8; SECRET_BYTES],
        make_waiter: impl FnOnce() -> Waiter<W>,
    ) -> Started {
        let held = self.registry.get(pair).copied().unwrap_or_default();
        if let Some(key) = held[side.index()] {
            // The side is held here; only its own token resumes it.
            if !auth.is_some_and(|t| self.owns(t, key)) {
                return Started::Done(ApiError::SideTaken.into());
            }
            self.touch(now, key);
            return Started::Done(self.join_reply(key, 200));
        }
        // The token of another live session does not open a free side.
        if auth.is_some_and(|t| self.owns_any(t)) {
            return Started::Done(ApiError::SideTaken.into());
        }
        if self.sessions.len() >= self.config.max_sessions {
            return Started::Done(ApiError::Overloaded.into());
        }
        // Each join of the other side puts a `peer_online` into this one; a
        // session that acknowledges nothing would grow without bound under
        // a join/leave loop, so joins wait while it is full.
        if let Some(peer_key) = held[side.peer().index()] {
            if self.sessions[peer_key as usize].events.len() >= SESSION_EVENTS_MAX {
                return Started::Done(ApiError::Overloaded.into());
            }
        }
        let gen = self.next_gen;
        self.next_gen += 1;
        let hlc = self.tick(wall_ms);
        let deadline = now.saturating_add(self.config.session_ttl_ms);
        let key =
            self.sessions
                .insert(Session::new(pair.clone(), side, gen, secret, deadline, hlc));
        // Slab keys stay below max_sessions, which config bounds far below u32.
        let key = u32::try_from(key).expect("slab key fits u32: max_sessions is bounded");
        self.registry.entry(pair.clone()).or_default()[side.index()] = Some(key);
        self.timers.insert(deadline, key);

        // Registered first, then looked up: of two sides joining at once,
        // at least one finds the other.
        if let Some(peer_key) = held[side.peer().index()] {
            self.link_local(now, key, peer_key);
        }
        let up = self.up_peers();
        if up.is_empty() {
            self.count_lookup(key, false);
            return Started::Done(self.join_reply(key, 201));
        }
        // Ask every up node at once; the answer waits for all of them or
        // the deadline.
        let req = self.send_lookups(&up, key, gen, hlc, pair, side);
        self.sessions[key as usize].joining = true;
        let deadline = now.saturating_add(self.config.lookup_timeout_ms);
        let waiter = make_waiter();
        self.put_pending(
            req,
            Pending::Join {
                waiter,
                key,
                gen,
                awaiting: up,
                found_remote: false,
                deadline,
            },
        );
        Started::Waiting(None)
    }

    /// Long poll: acknowledges `after`, then answers at once or waits up to
    /// `timeout_ms` (the default when `None`).
    #[allow(clippy::too_many_arguments)]
    pub fn poll(
        &mut self,
        now: Millis,
        pair: &(impl AsRef<[u8]> + ?Sized),
        side: Side,
        token: &Token,
        after: u64,
        timeout_ms: Option<Millis>,
        make_waiter: impl FnOnce() -> W,
    ) -> Started {
        match self.route(pair, side, token) {
            Route::Local(key) => self.poll_here(now, key, after, timeout_ms, usize::MAX, || {
                Waiter::Local(make_waiter())
            }),
            // The client asked this node: without its own `timeout_ms`,
            // this node's `--poll-timeout` is the wait, sent explicitly so
            // the home node does not wait its own, longer or shorter.
            Route::Remote(peer, pair) => self.forward(
                now,
                peer,
                &pair,
                side,
                token,
                ForwardOp::Poll {
                    after,
                    timeout_ms: Some(timeout_ms.unwrap_or(self.config.poll_timeout_ms)),
                },
                make_waiter,
            ),
            Route::Refused(e) => Started::Done(e.into()),
        }
    }

    /// Polls session `key` on this node. An answer given at once is at
    /// most `body_bytes_max` long where it can be (see [`poll_body`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn poll_here(
        &mut self,
        now: Millis,
        key: u32,
        after: u64,
        timeout_ms: Option<Millis>,
        body_bytes_max: usize,
        make_waiter: impl FnOnce() -> Waiter<W>,
    ) -> Started {
        self.touch(now, key);
        let session = &mut self.sessions[key as usize];
        if after > session.last_seq {
            return Started::Done(ApiError::BadAfter.into());
        }
        let (events, bytes) = session.acknowledge(after);
        self.total_events -= events;
        self.total_data_bytes -= bytes;
        // Room again after a link was refused for want of it: look again.
        if events > 0 && session.link_refused && session.peer.is_none() {
            session.link_refused = false;
            self.relookup(now, key);
        }
        // A newer poll answers the older one at once.
        self.answer_poll(now, key);

        let session = &mut self.sessions[key as usize];
        // Capped here too, not only by the HTTP query parser: a forwarded
        // poll's timeout comes from another node's frame.
        let timeout_ms = timeout_ms
            .unwrap_or(self.config.poll_timeout_ms)
            .min(POLL_TIMEOUT_MS_MAX);
        if !session.events.is_empty() || timeout_ms == 0 {
            return Started::Done(Reply::ok(poll_body(
                session.peer.is_some(),
                session.events.iter(),
                body_bytes_max,
            )));
        }
        let id = self.next_poll_id;
        self.next_poll_id += 1;
        session.poll = Some(WaitingPoll {
            waiter: make_waiter(),
            id,
        });
        let handle = PollHandle {
            key,
            gen: session.gen,
            id,
        };
        self.waiting_polls += 1;
        self.set_deadline(key, now.saturating_add(timeout_ms));
        Started::Waiting(Some(CancelKey::Poll(handle)))
    }

    /// The client of a waiting request went away.
    pub fn cancel(&mut self, now: Millis, key: CancelKey) {
        match key {
            CancelKey::Poll(handle) => {
                self.cancel_poll(now, handle);
            }
            CancelKey::Forward(req) => {
                if let Some(Pending::Forward { peer, .. }) = self.take_pending(req) {
                    self.send_frame(peer, Frame::Cancel { req });
                }
            }
        }
    }

    /// Forgets a waiting poll (its waiter is dropped unanswered); the
    /// session lives on, idle from now.
    pub(super) fn cancel_poll(&mut self, now: Millis, handle: PollHandle) -> bool {
        let Some(session) = self.sessions.get_mut(handle.key as usize) else {
            return false;
        };
        if session.gen != handle.gen || session.poll.as_ref().map(|p| p.id) != Some(handle.id) {
            return false;
        }
        session.poll = None;
        self.waiting_polls -= 1;
        self.set_deadline(handle.key, now.saturating_add(self.config.session_ttl_ms));
        true
    }

    /// Sends `data` to the peer of the session. `idempotency_key` makes a
    /// retry a no-op if this session used the key in its last messages.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        now: Millis,
        pair: &(impl AsRef<[u8]> + ?Sized),
        side: Side,
        token: &Token,
        idempotency_key: Option<&[u8]>,
        data: Box<str>,
        make_waiter: impl FnOnce() -> W,
    ) -> Started {
        match self.route(pair, side, token) {
            Route::Local(key) => self.send_here(now, key, idempotency_key, data, || {
                Waiter::Local(make_waiter())
            }),
            Route::Remote(peer, pair) => {
                let op = ForwardOp::Send {
                    idempotency_key: idempotency_key.map(<[u8]>::to_vec),
                    data,
                };
                self.forward(now, peer, &pair, side, token, op, make_waiter)
            }
            Route::Refused(e) => Started::Done(e.into()),
        }
    }

    pub(super) fn send_here(
        &mut self,
        now: Millis,
        key: u32,
        idempotency_key: Option<&[u8]>,
        data: Box<str>,
        make_waiter: impl FnOnce() -> Waiter<W>,
    ) -> Started {
        self.prefetch_peer(key);
        self.touch(now, key);
        // A retry of a send whose acknowledgement is still held (its
        // receiver's join is out) waits for the same outcome: 202 now
        // would promise a message that may yet go unread.
        if let Some(k) = idempotency_key {
            if let Some(peer_key) = self.holding(key, k) {
                let held = Held::Local {
                    waiter: make_waiter(),
                    sender: key,
                    sender_gen: self.sessions[key as usize].gen,
                    idempotency_key: Some(Box::from(k)),
                };
                self.sessions[peer_key as usize].held.push(held);
                return Started::Waiting(None);
            }
        }
        let session = &self.sessions[key as usize];
        if idempotency_key.is_some_and(|k| session.knows_key(k)) {
            return Started::Done(Reply::accepted());
        }
        let Some(peer) = session.peer else {
            return Started::Done(ApiError::PeerOffline.into());
        };
        if peer.node != 0 {
            // The reply waits for the peer's handler to hold the message.
            let from = Handle {
                key,
                gen: session.gen,
            };
            let req = self.new_req();
            let to = Handle {
                key: peer.key,
                gen: peer.gen,
            };
            let waiter = make_waiter();
            let idempotency_key_wire = idempotency_key.map(<[u8]>::to_vec);
            let idempotency_key = idempotency_key.map(Box::from);
            let deadline = now.saturating_add(FORWARD_SLACK_MS);
            self.put_pending(
                req,
                Pending::Deliver {
                    waiter,
                    peer: peer.node,
                    key,
                    gen: from.gen,
                    idempotency_key,
                    deadline,
                },
            );
            self.send_frame(
                peer.node,
                Frame::Deliver {
                    req,
                    from,
                    to,
                    data,
                    idempotency_key: idempotency_key_wire,
                },
            );
            return Started::Waiting(None);
        }
        let Some(peer_key) = self.local_session(peer) else {
            return Started::Done(ApiError::PeerOffline.into());
        };
        let peer_at = std::ptr::from_ref(&self.sessions[peer_key as usize]) as usize;
        self.sessions[key as usize].peer_at = peer_at;
        if let Err(e) = self.accept_message(now, peer_key, data) {
            return Started::Done(e.into());
        }
        if let Some(k) = idempotency_key {
            self.sessions[key as usize].remember_key(k);
        }
        if self.sessions[peer_key as usize].joining {
            let held = Held::Local {
                waiter: make_waiter(),
                sender: key,
                sender_gen: self.sessions[key as usize].gen,
                idempotency_key: idempotency_key.map(Box::from),
            };
            self.sessions[peer_key as usize].held.push(held);
            return Started::Waiting(None);
        }
        Started::Done(Reply::accepted())
    }

    /// Puts a message into a local session's buffer, if its limits and the
    /// node's allow.
    pub(super) fn accept_message(
        &mut self,
        now: Millis,
        key: u32,
        data: Box<str>,
    ) -> Result<(), ApiError> {
        let target = &self.sessions[key as usize];
        if target.data_bytes >= self.config.max_session_buffer
            || target.events.len() >= SESSION_EVENTS_MAX
            || self.total_data_bytes >= self.config.max_total_buffer
            || self.total_events >= self.total_events_max
        {
            return Err(ApiError::PeerBusy);
        }
        self.deliver(now, key, EventKind::Message(data));
        self.stats.messages_relayed += 1;
        Ok(())
    }

    /// Ends the session (DELETE): its waiting poll is answered, its peer is
    /// told `left`.
    pub fn leave(
        &mut self,
        now: Millis,
        pair: &(impl AsRef<[u8]> + ?Sized),
        side: Side,
        token: &Token,
        make_waiter: impl FnOnce() -> W,
    ) -> Started {
        match self.route(pair, side, token) {
            Route::Local(key) => {
                self.end(now, key, Reason::Left, false);
                Started::Done(Reply::no_content())
            }
            Route::Remote(peer, pair) => {
                self.forward(now, peer, &pair, side, token, ForwardOp::Leave, make_waiter)
            }
            Route::Refused(e) => Started::Done(e.into()),
        }
    }

    /// Answers polls whose timeout passed, ends sessions idle for the TTL,
    /// and completes joins whose lookups ran out of time.
    pub fn handle_timeout(&mut self, now: Millis) {
        while let Some((at, key)) = self.timers.pop_due(now) {
            let Some(session) = self.sessions.get_mut(key as usize) else {
                continue;
            };
            if session.timer_at != at {
                continue; // a stale entry of a session that was re-armed
            }
            session.timer_at = NO_TIMER;
            if session.deadline > now {
                // Touched since the entry was made: re-arm at the real time.
                let deadline = session.deadline;
                self.set_deadline(key, deadline);
            } else if session.poll.is_some() {
                self.answer_poll(now, key);
            } else {
                self.end(now, key, Reason::Expired, false);
            }
        }
        while let Some(&(at, req)) = self.req_deadlines.first() {
            if at > now {
                break;
            }
            self.req_deadlines.pop_first();
            self.request_timed_out(req);
        }
    }

    /// Starts a drain: ends every session with `shutdown` (answering their
    /// waiting polls and telling their peers) and refuses new joins.
    pub fn drain(&mut self, now: Millis) {
        self.draining = true;
        let keys: Vec<u32> = self.sessions.iter().map(|(k, _)| k as u32).collect();
        // Both sessions of a local pair end together: each is told the
        // other's `shutdown` first, so their clients hear the same thing.
        for &key in &keys {
            let Some(peer) = self.sessions[key as usize].peer.filter(|p| p.node == 0) else {
                continue;
            };
            self.sessions[key as usize].peer = None;
            if self.local_session(peer).is_some() {
                self.deliver(now, key, EventKind::PeerOffline(Reason::Shutdown));
            }
        }
        for key in keys {
            if self.sessions.contains(key as usize) {
                self.end(now, key, Reason::Shutdown, false);
            }
        }
        // Clients waiting on other nodes are answered now rather than cut
        // off when the process exits. A forwarded request is left to its
        // home node, which answers a poll at once when it is cancelled
        // (with the events it has, API.md §3); the driver gives up on those
        // still out with `abandon_forwards` before it exits.
        let mut reqs: Vec<u64> = self.pending.keys().copied().collect();
        reqs.sort_unstable();
        for req in reqs {
            if let Some(Pending::Forward { peer, .. }) = self.pending.get(&req) {
                let peer = *peer;
                self.send_frame(peer, Frame::Cancel { req });
                continue;
            }
            match self.take_pending(req) {
                Some(Pending::Forward { .. }) => {}
                Some(Pending::Resume { waiter, .. }) => {
                    self.answer(Waiter::Local(waiter), ApiError::ShuttingDown.into());
                }
                Some(Pending::Join { waiter, .. } | Pending::Deliver { waiter, .. }) => {
                    self.answer(waiter, ApiError::ShuttingDown.into());
                }
                Some(Pending::Resync { .. } | Pending::Late { .. }) | None => {}
            }
        }
    }

    /// At the end of a drain: answers the forwarded requests whose home
    /// node has not answered yet with `503 shutting_down`.
    pub fn abandon_forwards(&mut self) {
        let mut reqs: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| matches!(p, Pending::Forward { .. }))
            .map(|(&req, _)| req)
            .collect();
        reqs.sort_unstable();
        for req in reqs {
            if let Some(Pending::Forward { waiter, .. }) = self.take_pending(req) {
                self.answer(Waiter::Local(waiter), ApiError::ShuttingDown.into());
            }
        }
    }

    /// Where a token's session lives.
    /// Where a request for `pair` and `side` with `token` goes. A remote
    /// route carries the pair id, copied for the frame.
    fn route(&self, pair: &(impl AsRef<[u8]> + ?Sized), side: Side, token: &Token) -> Route {
        let pair = pair.as_ref();
        if token.node == self.config.name {
            return match self.authenticate(pair, side, token) {
                Ok(key) => Route::Local(key),
                Err(e) => Route::Refused(e),
            };
        }
        match self.peer_index(&token.node) {
            Some(peer) if self.is_peer_up(peer) => match ids::parse_pair(pair) {
                Some(pair) => Route::Remote(peer, pair),
                None => Route::Refused(ApiError::NoSession),
            },
            Some(_) => Route::Refused(ApiError::Unavailable),
            None => Route::Refused(ApiError::NoSession),
        }
    }

    /// Starts loading what a delivery to session `key`'s peer reads (its
    /// first [`SESSION_HOT_LINES`](super::session::SESSION_HOT_LINES)
    /// lines), when that peer is on this node: among hundreds
    /// of sessions it is rarely in cache, and it then comes in while the
    /// message is checked and stored instead of when it is delivered. The
    /// address is the one the last delivery saw ([`Session::peer_at`]):
    /// nothing of the peer is read here.
    fn prefetch_peer(&self, key: u32) {
        let at = self.sessions.get(key as usize).map_or(0, |s| s.peer_at);
        if at != 0 {
            crate::prefetch::prefetch_lines::<{ super::session::SESSION_HOT_LINES }>(at);
        }
    }

    /// The key of the live local session `token` names for `pair` and `side`.
    pub(super) fn authenticate(
        &self,
        pair: &[u8],
        side: Side,
        token: &Token,
    ) -> Result<u32, ApiError> {
        let session = self
            .sessions
            .get(token.key as usize)
            .ok_or(ApiError::NoSession)?;
        let secret_ok = token.secret_matches(&session.secret);
        if secret_ok
            && session.gen == token.gen
            && session.pair.as_bytes() == pair
            && session.side == side
        {
            Ok(token.key)
        } else {
            Err(ApiError::NoSession)
        }
    }

    /// Whether `token` is the token of the session at `key`.
    fn owns(&self, token: &Token, key: u32) -> bool {
        let session = &self.sessions[key as usize];
        token.node == self.config.name
            && token.key == key
            && token.secret_matches(&session.secret)
            && token.gen == session.gen
    }

    /// Whether `token` is the token of any live session on this node.
    pub(super) fn owns_any(&self, token: &Token) -> bool {
        self.sessions.contains(token.key as usize) && self.owns(token, token.key)
    }

    pub(super) fn join_reply(&self, key: u32, status: u16) -> Reply {
        let session = &self.sessions[key as usize];
        let token = Token {
            node: self.config.name.clone(),
            key,
            gen: session.gen,
            secret: session.secret,
        };
        let body = join_body(
            &session.pair,
            session.side,
            &token,
            session.peer.is_some(),
            self.config.poll_timeout_ms,
            self.config.session_ttl_ms,
        );
        Reply::new(status, body)
    }

    /// Counts a finished join's lookup by where the peer was found.
    pub(super) fn count_lookup(&mut self, key: u32, found_remote: bool) {
        match self.sessions[key as usize].peer {
            Some(peer) if peer.node == 0 => self.stats.lookups_local += 1,
            Some(_) => self.stats.lookups_remote += 1,
            None if found_remote => self.stats.lookups_remote += 1,
            None => self.stats.lookups_miss += 1,
        }
    }

    /// The key of the live local session at `addr`.
    pub(super) fn local_session(&self, addr: Addr) -> Option<u32> {
        let session = self.sessions.get(addr.key as usize)?;
        (addr.node == 0 && session.gen == addr.gen).then_some(addr.key)
    }

    pub(super) fn addr(&self, key: u32) -> Addr {
        Addr {
            node: 0,
            key,
            gen: self.sessions[key as usize].gen,
        }
    }

    /// Links two local handlers; each gets `peer_online`, the newer first.
    /// Nothing is linked when `key` (unlinked) has no room for the event:
    /// a link is made on both sides or on neither.
    fn link_local(&mut self, now: Millis, key: u32, peer_key: u32) {
        if self.sessions[key as usize].events.len() >= SESSION_EVENTS_MAX {
            self.sessions[key as usize].link_refused = true;
            return;
        }
        let (addr, peer_addr) = (self.addr(key), self.addr(peer_key));
        let (hlc, peer_hlc) = (
            self.sessions[key as usize].hlc,
            self.sessions[peer_key as usize].hlc,
        );
        // The peer may be linked to another claim to our side (on another
        // node): only the winning claim takes it over.
        if self.offer_link(now, peer_key, addr, hlc) {
            self.offer_link(now, key, peer_addr, peer_hlc);
        }
    }

    /// Offers session `key` a peer handler `candidate` whose claim is
    /// `candidate_hlc`. An unlinked session links (and gets `peer_online`);
    /// a linked one switches only if the candidate's claim beats its current
    /// peer's, which means the current one lost a conflict and is ending.
    /// Returns whether the session is now linked to the candidate.
    pub(super) fn offer_link(
        &mut self,
        now: Millis,
        key: u32,
        candidate: Addr,
        candidate_hlc: u64,
    ) -> bool {
        let session = &self.sessions[key as usize];
        // A session holding SESSION_EVENTS_MAX unacknowledged events takes
        // no new peer: each link adds a `peer_online` (and a switch a
        // `peer_offline` too), so a join/leave loop or a stream of ever
        // better claims (from any node) could otherwise grow its buffer
        // without bound. The offer is refused like a losing one.
        let room = SESSION_EVENTS_MAX.saturating_sub(session.events.len());
        let needed = if session.peer.is_some() { 2 } else { 1 };
        match session.peer {
            Some(current) if current == candidate => true,
            _ if room < needed => {
                self.sessions[key as usize].link_refused = true;
                false
            }
            Some(current) => {
                let wins = self.claim_order(candidate, candidate_hlc)
                    < self.claim_order(current, session.peer_hlc);
                if wins {
                    let session = &mut self.sessions[key as usize];
                    session.peer = Some(candidate);
                    session.peer_hlc = candidate_hlc;
                    // The client hears that its peer changed (both
                    // events before a waiting poll is answered).
                    self.sessions[key as usize].push(EventKind::PeerOffline(Reason::Left));
                    self.total_events += 1;
                    self.deliver(now, key, EventKind::PeerOnline);
                    // The abandoned handler is told.
                    self.abandon(now, key, current);
                }
                wins
            }
            None => {
                let session = &mut self.sessions[key as usize];
                session.peer = Some(candidate);
                session.peer_hlc = candidate_hlc;
                self.deliver(now, key, EventKind::PeerOnline);
                true
            }
        }
    }

    /// Session `key` stopped being linked to `old`; tell `old`.
    pub(super) fn abandon(&mut self, now: Millis, key: u32, old: Addr) {
        let me = self.addr(key);
        if old.node == 0 {
            if let Some(old_key) = self.local_session(old) {
                if self.sessions[old_key as usize].peer == Some(me) {
                    self.sessions[old_key as usize].peer = None;
                    self.deliver(now, old_key, EventKind::PeerOffline(Reason::Left));
                    self.relookup(now, old_key);
                }
            }
        } else {
            let gen = self.sessions[key as usize].gen;
            self.send_frame(
                old.node,
                Frame::Exit {
                    from: Handle { key, gen },
                    to: Handle {
                        key: old.key,
                        gen: old.gen,
                    },
                    reason: Reason::Left,
                },
            );
        }
    }

    /// A live session lost its peer: look for the other side again,
    /// here and on every up node.
    pub(super) fn relookup(&mut self, now: Millis, key: u32) {
        let session = &self.sessions[key as usize];
        if session.peer.is_some() {
            return;
        }
        let (pair, side, gen, hlc) = (session.pair.clone(), session.side, session.gen, session.hlc);
        if let Some(peer_key) = self.registered(&pair, side.peer()) {
            self.link_local(now, key, peer_key);
        }
        let up = self.up_peers();
        if up.is_empty() {
            return;
        }
        let req = self.send_lookups(&up, key, gen, hlc, &pair, side);
        let deadline = now.saturating_add(LATE_LOOKUP_MS);
        self.put_pending(
            req,
            Pending::Late {
                key,
                gen,
                awaiting: up,
                deadline,
            },
        );
    }

    /// The order of claims: of two claims to one side, the smaller
    /// `(hlc, node name, key)` wins, the same on every node.
    pub(super) fn claim_order(&self, addr: Addr, hlc: u64) -> (u64, &NodeName, u32) {
        (hlc, self.node_name(addr.node), addr.key)
    }

    /// The name of node index `node` (0 is this node).
    pub(super) fn node_name(&self, node: u16) -> &NodeName {
        match node {
            0 => &self.config.name,
            n => self
                .peers
                .get(n as usize - 1)
                .map_or(&self.config.name, |p| &p.name),
        }
    }

    /// Puts an event into a session's buffer and answers its waiting poll.
    pub(super) fn deliver(&mut self, now: Millis, key: u32, kind: EventKind) {
        if let EventKind::PeerOffline(reason) = kind {
            self.stats.peer_offline[reason.index()] += 1;
        }
        let session = &mut self.sessions[key as usize];
        session.push(kind);
        self.total_events += 1;
        self.total_data_bytes += session.events.back().map_or(0, |e| e.data_bytes());
        self.answer_poll(now, key);
    }

    /// Answers the session's waiting poll, if any, with every unacknowledged
    /// event (a waiting poll has acknowledged all that came before it).
    pub(super) fn answer_poll(&mut self, now: Millis, key: u32) {
        let session = &mut self.sessions[key as usize];
        let Some(poll) = session.poll.take() else {
            return;
        };
        let bytes_max = match poll.waiter {
            Waiter::Local(_) => usize::MAX,
            Waiter::Remote { .. } => FORWARD_REPLY_BODY_BYTES_MAX,
        };
        let body = poll_body(session.peer.is_some(), session.events.iter(), bytes_max);
        self.waiting_polls -= 1;
        self.answer(poll.waiter, Reply::ok(body));
        self.set_deadline(key, now.saturating_add(self.config.session_ttl_ms));
    }

    /// The peers that are up, by index.
    fn up_peers(&self) -> Vec<u16> {
        (1..=self.peers.len() as u16)
            .filter(|&p| self.is_peer_up(p))
            .collect()
    }

    /// Sends each of `up` a `Lookup` with session `key`'s claim to
    /// `(pair, side)`; returns the request id the replies will carry.
    fn send_lookups(
        &mut self,
        up: &[u16],
        key: u32,
        gen: u64,
        hlc: u64,
        pair: &PairId,
        side: Side,
    ) -> u64 {
        let req = self.new_req();
        let claim = Claim {
            handle: Handle { key, gen },
            hlc,
        };
        for &p in up {
            self.send_frame(
                p,
                Frame::Lookup {
                    req,
                    pair: pair.clone(),
                    side,
                    claim,
                },
            );
        }
        req
    }

    /// The key of the local handler holding `(pair, side)`.
    pub(super) fn registered(&self, pair: &PairId, side: Side) -> Option<u32> {
        self.registry
            .get(pair)
            .and_then(|sides| sides[side.index()])
    }

    /// Hands a reply to whoever waits for it.
    /// The local session, still joining, that holds the acknowledgement of
    /// a message from session `sender` sent with `key`.
    fn holding(&self, sender: u32, key: &[u8]) -> Option<u32> {
        let session = &self.sessions[sender as usize];
        let peer = session.peer.filter(|p| p.node == 0)?;
        let peer_key = self.local_session(peer)?;
        let holder = &self.sessions[peer_key as usize];
        let held_here = holder.joining
            && holder.held.iter().any(|h| {
                matches!(h, Held::Local { sender: s, sender_gen: g, idempotency_key: Some(k), .. }
                    if *s == sender && *g == session.gen && **k == *key)
            });
        held_here.then_some(peer_key)
    }

    /// Sends a held acknowledgement: delivered (the join was answered), or
    /// `peer_offline` (the session ended first).
    pub(super) fn release(&mut self, held: Held<Waiter<W>>, delivered: bool) {
        match held {
            Held::Local {
                waiter,
                sender,
                sender_gen,
                idempotency_key,
            } => {
                let reply = if delivered {
                    Reply::accepted()
                } else {
                    if let (Some(k), Some(s)) =
                        (idempotency_key, self.sessions.get_mut(sender as usize))
                    {
                        if s.gen == sender_gen {
                            s.forget_key(&k);
                        }
                    }
                    ApiError::PeerOffline.into()
                };
                self.answer(waiter, reply);
            }
            Held::Remote { peer, req } => {
                let result = if delivered {
                    DeliverResult::Delivered
                } else {
                    DeliverResult::PeerOffline
                };
                self.send_frame(peer, Frame::DeliverReply { req, result });
            }
        }
    }

    pub(super) fn answer(&mut self, waiter: Waiter<W>, reply: Reply) {
        match waiter {
            Waiter::Local(waiter) => self.outputs.push_back(Output::Answer { waiter, reply }),
            Waiter::Remote { peer, req } => {
                self.remote_polls.remove(&(peer, req));
                let Reply { status, body } = reply;
                self.send_frame(
                    peer,
                    Frame::ForwardReply {
                        req,
                        status,
                        body: body.into_owned(),
                    },
                );
            }
        }
    }

    /// An authenticated call: the session is not idle.
    pub(super) fn touch(&mut self, now: Millis, key: u32) {
        if self.sessions[key as usize].poll.is_none() {
            self.set_deadline(key, now.saturating_add(self.config.session_ttl_ms));
        }
    }

    fn set_deadline(&mut self, key: u32, at: Millis) {
        let session = &mut self.sessions[key as usize];
        session.deadline = at;
        if at < session.timer_at {
            if session.timer_at != NO_TIMER {
                self.timers.remove(session.timer_at, key);
            }
            self.timers.insert(at, key);
            session.timer_at = at;
        }
    }

    /// Ends a session: its poll is answered (with no events, or with 404
    /// when it lost a conflict), it leaves the registry, its buffer is freed
    /// and its peer is told why.
    pub(super) fn end(&mut self, now: Millis, key: u32, reason: Reason, lost_conflict: bool) {
        if lost_conflict {
            if let Some(poll) = self.sessions[key as usize].poll.take() {
                self.waiting_polls -= 1;
                self.answer(poll.waiter, ApiError::NoSession.into());
            }
            self.stats.conflicts_lost += 1;
        } else {
            self.answer_poll(now, key);
        }
        let mut session = self.sessions.remove(key as usize);
        for held in std::mem::take(&mut session.held) {
            self.release(held, false);
        }
        if session.timer_at != NO_TIMER {
            self.timers.remove(session.timer_at, key);
        }
        if let Some(sides) = self.registry.get_mut(&session.pair) {
            if sides[session.side.index()] == Some(key) {
                sides[session.side.index()] = None;
            }
            if *sides == [None, None] {
                self.registry.remove(&session.pair);
            }
        }
        self.total_events -= session.events.len();
        self.total_data_bytes -= session.data_bytes;
        self.stats.exits[reason.index()] += 1;
        let me = Addr {
            node: 0,
            key,
            gen: session.gen,
        };
        match session.peer {
            Some(peer) if peer.node == 0 => {
                // Only a peer still linked back to us is told.
                if let Some(peer_key) = self.local_session(peer) {
                    if self.sessions[peer_key as usize].peer == Some(me) {
                        self.sessions[peer_key as usize].peer = None;
                        self.deliver(now, peer_key, EventKind::PeerOffline(reason));
                        if !self.draining() {
                            self.relookup(now, peer_key);
                        }
                    }
                }
            }
            Some(peer) => {
                let frame = Frame::Exit {
                    from: Handle {
                        key,
                        gen: session.gen,
                    },
                    to: Handle {
                        key: peer.key,
                        gen: peer.gen,
                    },
                    reason,
                };
                self.send_frame(peer.node, frame);
            }
            None => {}
        }
    }

    /// Queues a frame for a node that is up; frames for a down node are
    /// dropped (its coming back triggers a resync instead).
    pub(super) fn send_frame(&mut self, peer: u16, frame: Frame) {
        if self.is_peer_up(peer) {
            self.outputs.push_back(Output::Send { peer, frame });
        }
    }

    /// Removes a pending request and its deadline.
    /// Files a request this node waits on, under its deadline if it has
    /// one (the other half of [`Node::take_pending`]).
    pub(super) fn put_pending(&mut self, req: u64, pending: Pending<W>) {
        if let Some(deadline) = pending.deadline() {
            self.req_deadlines.insert((deadline, req));
        }
        self.pending.insert(req, pending);
    }

    /// Takes request `req` only if `is` accepts it: a reply of one kind
    /// naming a request of another kind, or one sent to another node (a
    /// confused or hostile peer), leaves that request alone.
    pub(super) fn take_pending_if(
        &mut self,
        req: u64,
        is: impl FnOnce(&Pending<W>) -> bool,
    ) -> Option<Pending<W>> {
        if !self.pending.get(&req).is_some_and(is) {
            return None;
        }
        self.take_pending(req)
    }

    pub(super) fn take_pending(&mut self, req: u64) -> Option<Pending<W>> {
        let pending = self.pending.remove(&req)?;
        if let Some(deadline) = pending.deadline() {
            self.req_deadlines.remove(&(deadline, req));
        }
        Some(pending)
    }

    /// A request to another node got no answer in time: a join goes on
    /// with what it has; anything else answers 503, since the other node
    /// may or may not have carried it out (a send retried with its
    /// idempotency key is safe).
    fn request_timed_out(&mut self, req: u64) {
        match self.pending.get(&req) {
            Some(Pending::Join { .. }) => self.complete_join(req),
            Some(Pending::Forward { .. } | Pending::Resume { .. } | Pending::Deliver { .. }) => {
                match self.take_pending(req) {
                    Some(Pending::Forward { waiter, peer, .. }) => {
                        self.send_frame(peer, Frame::Cancel { req });
                        self.answer(Waiter::Local(waiter), ApiError::Unavailable.into());
                    }
                    Some(Pending::Resume { waiter, .. }) => {
                        self.answer(Waiter::Local(waiter), ApiError::Unavailable.into());
                    }
                    Some(Pending::Deliver { waiter, .. }) => {
                        self.answer(waiter, ApiError::PeerUnreachable.into());
                    }
                    _ => {}
                }
            }
            Some(Pending::Resync { .. } | Pending::Late { .. }) => {
                // A node that is up but never answered: the lookup is
                // dropped, as if that node held neither side.
                self.take_pending(req);
            }
            None => {}
        }
    }

    /// A fresh request id.
    pub(super) fn new_req(&mut self) -> u64 {
        let req = self.next_req;
        self.next_req += 1;
        req
    }

    /// Advances the hybrid logical clock for a local event.
    pub(super) fn tick(&mut self, wall_ms: Millis) -> u64 {
        // Saturating: a peer may have pushed the clock to the top (its
        // claims are trusted for order, not for range).
        self.hlc = self.hlc.saturating_add(1).max(wall_ms);
        self.hlc
    }

    /// A read-only view of every live session, for invariant checks in
    /// tests and simulations.
    pub fn inspect(&self) -> impl Iterator<Item = SessionView<'_>> + '_ {
        self.sessions.iter().map(|(key, s)| SessionView {
            pair: &s.pair,
            side: s.side,
            addr: Addr {
                node: 0,
                key: key as u32,
                gen: s.gen,
            },
            hlc: s.hlc,
            peer: s.peer,
            last_seq: s.last_seq,
            polling: s.poll.is_some(),
        })
    }

    /// The node index of a peer's name.
    pub fn peer_index(&self, name: &NodeName) -> Option<u16> {
        self.peers
            .iter()
            .position(|p| p.name == *name)
            .map(|i| i as u16 + 1)
    }

    /// Whether node index `peer` is a peer that is up.
    pub fn is_peer_up(&self, peer: u16) -> bool {
        peer >= 1 && self.peers.get(peer as usize - 1).is_some_and(|p| p.up)
    }
}

/// Where a request for a session goes.
enum Route {
    Local(u32),
    /// The home node, and the pair id for the forwarded frame.
    Remote(u16, PairId),
    Refused(ApiError),
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
