//! A node's handlers: the slab of sessions, the registry of `(pair, side)`,
//! links between paired handlers, and their timers.
//!
//! Every call takes `now` and returns its answer; answers that come later
//! (a waiting poll answered by an event, a timeout or a leave) are queued as
//! [`Output`]s for the driver to collect with [`Node::poll_output`].
//!
//! A handler's address is `(node, key, generation)` ([`Addr`]): the slab
//! reuses keys, generations are never reused, so a stale token or link
//! never reaches a newer session.

use super::error::ApiError;
use super::event::{poll_body, EventKind, Reason};
use super::session::{Addr, Session, WaitingPoll};
use super::timers::Timers;
use super::Millis;
use crate::limits::{SECRET_BYTES, SESSION_EVENTS_MAX, TOTAL_EVENT_BYTES};
use crate::proto::ids::{NodeName, PairId, Side, Token};
use slab::Slab;
use std::collections::{HashMap, VecDeque};

/// `Session::timer_at` of a session that has no entry in the timer set.
const NO_TIMER: Millis = Millis::MAX;

/// The part of the configuration the core uses.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's name, written into tokens.
    pub name: NodeName,
    /// Idle session lifetime.
    pub session_ttl_ms: Millis,
    /// Default poll wait.
    pub poll_timeout_ms: Millis,
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
    /// Messages put into a peer's buffer.
    pub messages_relayed: u64,
    /// Lookups that found the peer on this node.
    pub lookups_local: u64,
    /// Lookups that found the peer on another node.
    pub lookups_remote: u64,
    /// Lookups that found no peer.
    pub lookups_miss: u64,
    /// Sessions ended, by [`Reason::index`].
    pub exits: [u64; 4],
}

/// A successful join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    /// The session's token.
    pub token: Token,
    /// Whether the peer's session was found (and linked).
    pub peer_online: bool,
    /// Whether this join resumed the caller's own live session.
    pub resumed: bool,
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

/// What a poll call did.
#[derive(Debug, PartialEq, Eq)]
pub enum Polled {
    /// Answered at once with this `200` body.
    Ready(Vec<u8>),
    /// Waiting; the answer comes later as an [`Output::PollAnswered`].
    Waiting(PollHandle),
}

/// Something the driver must carry out.
#[derive(Debug, PartialEq, Eq)]
pub enum Output<W> {
    /// Answer a waiting poll: a `200` body, or an error.
    PollAnswered {
        /// The poll's waiter, as given to [`Node::poll`].
        waiter: W,
        /// The answer.
        result: Result<Vec<u8>, ApiError>,
    },
}

/// The state of one node. `W` is what the driver needs to answer a waiting
/// poll (a channel in the server, a plain number in tests).
#[derive(Debug)]
pub struct Node<W> {
    config: NodeConfig,
    /// Handler state. Keys are reused; [`Session::gen`] tells them apart.
    sessions: Slab<Session<W>>,
    /// The local registry: which handler holds `(pair, side)` on this node.
    registry: HashMap<(PairId, Side), u32>,
    timers: Timers,
    /// The next generation; starts at 1 and only grows.
    next_gen: u64,
    next_poll_id: u64,
    /// Unacknowledged message bytes of all sessions.
    total_data_bytes: usize,
    /// Unacknowledged events of all sessions.
    total_events: usize,
    /// Node-wide event limit, derived from the byte limit so the memory
    /// taken by many tiny events is bounded too.
    total_events_max: usize,
    waiting_polls: usize,
    draining: bool,
    outputs: VecDeque<Output<W>>,
    stats: Stats,
}

impl<W> Node<W> {
    /// An empty node.
    pub fn new(config: NodeConfig) -> Self {
        let total_events_max =
            (config.max_total_buffer / TOTAL_EVENT_BYTES).max(SESSION_EVENTS_MAX);
        Node {
            config,
            sessions: Slab::new(),
            registry: HashMap::new(),
            timers: Timers::default(),
            next_gen: 1,
            next_poll_id: 1,
            total_data_bytes: 0,
            total_events: 0,
            total_events_max,
            waiting_polls: 0,
            draining: false,
            outputs: VecDeque::new(),
            stats: Stats::default(),
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

    /// Polls waiting.
    pub fn polls_waiting(&self) -> usize {
        self.waiting_polls
    }

    /// Unacknowledged message bytes of all sessions.
    pub fn buffered_bytes(&self) -> usize {
        self.total_data_bytes
    }

    /// Whether [`Node::drain`] was called.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// The next answer to carry out, if any.
    pub fn poll_output(&mut self) -> Option<Output<W>> {
        self.outputs.pop_front()
    }

    /// When [`Node::handle_timeout`] must next be called.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.timers.next()
    }

    /// Joins `side` of `pair`. `auth` is the token the client presented, if
    /// any; `secret` is fresh randomness for a new session's token.
    pub fn join(
        &mut self,
        now: Millis,
        pair: &PairId,
        side: Side,
        auth: Option<&Token>,
        secret: [u8; SECRET_BYTES],
    ) -> Result<Joined, ApiError> {
        if self.draining {
            return Err(ApiError::ShuttingDown);
        }
        if let Some(&key) = self.registry.get(&(pair.clone(), side)) {
            // The side is held here; only its own token resumes it.
            let owned = auth.is_some_and(|t| self.owns(t, key));
            if !owned {
                return Err(ApiError::SideTaken);
            }
            self.touch(now, key);
            let peer_online = self.sessions[key as usize].peer.is_some();
            return Ok(Joined {
                token: self.token(key),
                peer_online,
                resumed: true,
            });
        }
        if self.sessions.len() >= self.config.max_sessions {
            return Err(ApiError::Overloaded);
        }
        let gen = self.next_gen;
        self.next_gen += 1;
        let deadline = now.saturating_add(self.config.session_ttl_ms);
        let key = self
            .sessions
            .insert(Session::new(pair.clone(), side, gen, secret, deadline));
        // Slab keys stay below max_sessions, which config bounds far below u32.
        let key = u32::try_from(key).expect("slab key fits u32: max_sessions is bounded");
        self.registry.insert((pair.clone(), side), key);
        self.timers.insert(deadline, key);

        // Registered first, then look up: of two sides joining at once, at
        // least one finds the other.
        let peer_online = match self.registry.get(&(pair.clone(), side.peer())) {
            Some(&peer_key) => {
                self.stats.lookups_local += 1;
                self.link(now, key, peer_key);
                true
            }
            None => {
                self.stats.lookups_miss += 1;
                false
            }
        };
        Ok(Joined {
            token: self.token(key),
            peer_online,
            resumed: false,
        })
    }

    /// Long poll: acknowledges `after`, then answers at once or waits up to
    /// `timeout_ms` (the default when `None`). `make_waiter` is called only
    /// when the poll waits.
    #[allow(clippy::too_many_arguments)]
    pub fn poll(
        &mut self,
        now: Millis,
        pair: &PairId,
        side: Side,
        token: &Token,
        after: u64,
        timeout_ms: Option<Millis>,
        make_waiter: impl FnOnce() -> W,
    ) -> Result<Polled, ApiError> {
        let key = self.authenticate(pair, side, token)?;
        self.touch(now, key);
        let session = &mut self.sessions[key as usize];
        if after > session.last_seq {
            return Err(ApiError::BadAfter);
        }
        let (events, bytes) = session.acknowledge(after);
        self.total_events -= events;
        self.total_data_bytes -= bytes;
        // A newer poll answers the older one at once.
        self.answer_poll(now, key);

        let session = &mut self.sessions[key as usize];
        let timeout_ms = timeout_ms.unwrap_or(self.config.poll_timeout_ms);
        if !session.events.is_empty() || timeout_ms == 0 {
            return Ok(Polled::Ready(poll_body(
                session.peer.is_some(),
                session.events.iter(),
            )));
        }
        let id = self.next_poll_id;
        self.next_poll_id += 1;
        session.poll = Some(WaitingPoll {
            waiter: make_waiter(),
            id,
        });
        let gen = session.gen;
        self.waiting_polls += 1;
        self.set_deadline(key, now.saturating_add(timeout_ms));
        Ok(Polled::Waiting(PollHandle { key, gen, id }))
    }

    /// The client of a waiting poll went away: forget the poll. Its session
    /// lives on, idle from now.
    pub fn cancel_poll(&mut self, now: Millis, handle: PollHandle) {
        let Some(session) = self.sessions.get_mut(handle.key as usize) else {
            return;
        };
        if session.gen != handle.gen || session.poll.as_ref().map(|p| p.id) != Some(handle.id) {
            return;
        }
        session.poll = None;
        self.waiting_polls -= 1;
        self.set_deadline(handle.key, now.saturating_add(self.config.session_ttl_ms));
    }

    /// Sends `data` to the peer of the session. `idempotency_key` makes a
    /// retry a no-op if this session used the key in its last messages.
    pub fn send(
        &mut self,
        now: Millis,
        pair: &PairId,
        side: Side,
        token: &Token,
        idempotency_key: Option<&[u8]>,
        data: Box<str>,
    ) -> Result<(), ApiError> {
        let key = self.authenticate(pair, side, token)?;
        self.touch(now, key);
        let session = &self.sessions[key as usize];
        if idempotency_key.is_some_and(|k| session.knows_key(k)) {
            return Ok(());
        }
        let peer = session.peer.ok_or(ApiError::PeerOffline)?;
        let peer_key = self.local_session(peer).ok_or(ApiError::PeerOffline)?;
        let target = &self.sessions[peer_key as usize];
        if target.data_bytes >= self.config.max_session_buffer
            || target.events.len() >= SESSION_EVENTS_MAX
            || self.total_data_bytes >= self.config.max_total_buffer
            || self.total_events >= self.total_events_max
        {
            return Err(ApiError::PeerBusy);
        }
        self.deliver(now, peer_key, EventKind::Message(data));
        self.stats.messages_relayed += 1;
        if let Some(k) = idempotency_key {
            self.sessions[key as usize].remember_key(k);
        }
        Ok(())
    }

    /// Ends the session (DELETE): its waiting poll is answered, its peer is
    /// told `left`.
    pub fn leave(
        &mut self,
        now: Millis,
        pair: &PairId,
        side: Side,
        token: &Token,
    ) -> Result<(), ApiError> {
        let key = self.authenticate(pair, side, token)?;
        self.end(now, key, Reason::Left);
        Ok(())
    }

    /// Answers polls whose timeout passed and ends sessions idle for the TTL.
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
                self.end(now, key, Reason::Expired);
            }
        }
    }

    /// Starts a drain: ends every session with `shutdown` (answering their
    /// waiting polls and telling their peers) and refuses new joins.
    pub fn drain(&mut self, now: Millis) {
        self.draining = true;
        let keys: Vec<u32> = self.sessions.iter().map(|(k, _)| k as u32).collect();
        for key in keys {
            if self.sessions.contains(key as usize) {
                self.end(now, key, Reason::Shutdown);
            }
        }
    }

    /// The key of the live session `token` names for `pair` and `side`.
    fn authenticate(&self, pair: &PairId, side: Side, token: &Token) -> Result<u32, ApiError> {
        if token.node != self.config.name {
            // No other nodes yet: a token of another node names no session.
            return Err(ApiError::NoSession);
        }
        let session = self
            .sessions
            .get(token.key as usize)
            .ok_or(ApiError::NoSession)?;
        let secret_ok = token.secret_matches(&session.secret);
        if secret_ok && session.gen == token.gen && session.pair == *pair && session.side == side {
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

    fn token(&self, key: u32) -> Token {
        let session = &self.sessions[key as usize];
        Token {
            node: self.config.name.clone(),
            key,
            gen: session.gen,
            secret: session.secret,
        }
    }

    /// The key of the live local session at `addr`.
    fn local_session(&self, addr: Addr) -> Option<u32> {
        let session = self.sessions.get(addr.key as usize)?;
        (addr.node == 0 && session.gen == addr.gen).then_some(addr.key)
    }

    fn addr(&self, key: u32) -> Addr {
        Addr {
            node: 0,
            key,
            gen: self.sessions[key as usize].gen,
        }
    }

    /// Links two handlers; each gets `peer_online`, the newer one first.
    fn link(&mut self, now: Millis, key: u32, peer_key: u32) {
        let (addr, peer_addr) = (self.addr(key), self.addr(peer_key));
        self.sessions[key as usize].peer = Some(peer_addr);
        self.sessions[peer_key as usize].peer = Some(addr);
        self.deliver(now, key, EventKind::PeerOnline);
        self.deliver(now, peer_key, EventKind::PeerOnline);
    }

    /// Puts an event into a session's buffer and answers its waiting poll.
    fn deliver(&mut self, now: Millis, key: u32, kind: EventKind) {
        let session = &mut self.sessions[key as usize];
        session.push(kind);
        self.total_events += 1;
        self.total_data_bytes += session.events.back().map_or(0, |e| e.data_bytes());
        self.answer_poll(now, key);
    }

    /// Answers the session's waiting poll, if any, with every unacknowledged
    /// event (a waiting poll has acknowledged all that came before it).
    fn answer_poll(&mut self, now: Millis, key: u32) {
        let session = &mut self.sessions[key as usize];
        let Some(poll) = session.poll.take() else {
            return;
        };
        let body = poll_body(session.peer.is_some(), session.events.iter());
        self.waiting_polls -= 1;
        self.outputs.push_back(Output::PollAnswered {
            waiter: poll.waiter,
            result: Ok(body),
        });
        self.set_deadline(key, now.saturating_add(self.config.session_ttl_ms));
    }

    /// An authenticated call: the session is not idle.
    fn touch(&mut self, now: Millis, key: u32) {
        if self.sessions[key as usize].poll.is_none() {
            self.set_deadline(key, now.saturating_add(self.config.session_ttl_ms));
        }
    }

    fn set_deadline(&mut self, key: u32, at: Millis) {
        let session = &mut self.sessions[key as usize];
        session.deadline = at;
        if at < session.timer_at {
            self.timers.remove(session.timer_at, key);
            self.timers.insert(at, key);
            session.timer_at = at;
        }
    }

    /// Ends a session: its poll is answered with no events, it leaves the
    /// registry, its buffer is freed and its peer is told why.
    fn end(&mut self, now: Millis, key: u32, reason: Reason) {
        self.answer_poll(now, key);
        let session = self.sessions.remove(key as usize);
        if session.timer_at != NO_TIMER {
            self.timers.remove(session.timer_at, key);
        }
        self.registry.remove(&(session.pair, session.side));
        self.total_events -= session.events.len();
        self.total_data_bytes -= session.data_bytes;
        self.stats.exits[reason.index()] += 1;
        if let Some(peer_key) = session.peer.and_then(|peer| self.local_session(peer)) {
            self.sessions[peer_key as usize].peer = None;
            self.deliver(now, peer_key, EventKind::PeerOffline(reason));
        }
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
