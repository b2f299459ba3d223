//! The cluster's part of a node's state machine: other nodes coming and
//! going, lookups across nodes, links and exits between handlers on
//! different nodes, and client requests carried out on a session's home
//! node. Frames arrive through [`Node::handle_frame`]; frames to send leave
//! as [`Output::Send`](super::Output::Send).

use super::error::ApiError;
use super::event::{EventKind, Reason};
use super::node::{Held, Node, Pending, Waiter};
use super::reply::Reply;
use super::session::Addr;
use super::{Millis, Started};
use crate::cluster::frame::{
    Claim, DeliverResult, ForwardOp, Frame, Handle, FORWARD_REPLY_BODY_BYTES_MAX,
};
use crate::limits::{FORWARD_SLACK_MS, LATE_LOOKUP_MS};
use crate::proto::ids::{PairId, Side, Token};

impl<W> Node<W> {
    /// The hybrid logical clock, for heartbeats.
    pub fn hlc(&self) -> u64 {
        self.hlc
    }

    /// Another node's clock reading arrived (in a heartbeat).
    pub fn observe_clock(&mut self, hlc: u64) {
        self.hlc = self.hlc.max(hlc);
    }

    /// Peers that are up.
    pub fn peers_up(&self) -> usize {
        self.peers.iter().filter(|p| p.up).count()
    }

    /// Node `peer` is connected and authenticated: every live session looks
    /// itself up there, so pairs split by an outage find each other again
    /// and two claims to one side made during a partition are settled.
    pub fn peer_up(&mut self, now: Millis, peer: u16) {
        let Some(node) = self.peers.get_mut(usize::from(peer).wrapping_sub(1)) else {
            return;
        };
        if node.up {
            return;
        }
        node.up = true;
        let sessions: Vec<(u32, u64, PairId, Side, u64)> = self
            .sessions
            .iter()
            .map(|(k, s)| (k as u32, s.gen, s.pair.clone(), s.side, s.hlc))
            .collect();
        for (key, gen, pair, side, hlc) in sessions {
            let req = self.new_req();
            let deadline = now.saturating_add(LATE_LOOKUP_MS);
            self.put_pending(
                req,
                Pending::Resync {
                    key,
                    gen,
                    peer,
                    deadline,
                },
            );
            let claim = Claim {
                handle: Handle { key, gen },
                hlc,
            };
            self.send_frame(
                peer,
                Frame::Lookup {
                    req,
                    pair,
                    side,
                    claim,
                },
            );
        }
    }

    /// Node `peer` is gone (connection lost, silent, or it shut down): every
    /// link to it fires `node_down`, lookups waiting on it count it as not
    /// there, requests forwarded to it answer 503, messages on their way
    /// answer 503 (they may have arrived), and polls it forwarded here are
    /// forgotten.
    pub fn peer_down(&mut self, now: Millis, peer: u16) {
        let Some(node) = self.peers.get_mut(usize::from(peer).wrapping_sub(1)) else {
            return;
        };
        if !node.up {
            return;
        }
        node.up = false;
        // Acknowledgements held for that node's `Deliver`s go nowhere now
        // (a restarted process would take them for its own requests).
        for (_, s) in self.sessions.iter_mut().filter(|(_, s)| !s.held.is_empty()) {
            s.held
                .retain(|h| !matches!(h, Held::Remote { peer: p, .. } if *p == peer));
        }
        let linked: Vec<u32> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.peer.is_some_and(|p| p.node == peer))
            .map(|(k, _)| k as u32)
            .collect();
        for &key in &linked {
            self.sessions[key as usize].peer = None;
            self.deliver(now, key, EventKind::PeerOffline(Reason::NodeDown));
        }
        let mut reqs: Vec<u64> = self.pending.keys().copied().collect();
        // Sorted: the same inputs give the same outputs, in the same order.
        reqs.sort_unstable();
        for req in reqs {
            self.pending_peer_down(req, peer);
        }
        let polls: Vec<(u16, u64)> = self
            .remote_polls
            .keys()
            .filter(|(p, _)| *p == peer)
            .copied()
            .collect();
        let mut polls = polls;
        polls.sort_unstable();
        for id in polls {
            if let Some(handle) = self.remote_polls.remove(&id) {
                self.cancel_poll(now, handle);
            }
        }
        // A claim refused while the lost link stood may be waiting elsewhere.
        for key in linked {
            if self.sessions.contains(key as usize) && !self.draining() {
                self.relookup(now, key);
            }
        }
    }

    fn pending_peer_down(&mut self, req: u64, peer: u16) {
        let Some(pending) = self.pending.get_mut(&req) else {
            return;
        };
        match pending {
            Pending::Join { awaiting, .. } => {
                awaiting.retain(|&p| p != peer);
                if awaiting.is_empty() {
                    self.complete_join(req);
                }
            }
            Pending::Resync { peer: p, .. } if *p == peer => {
                self.take_pending(req);
            }
            Pending::Late { awaiting, .. } => {
                awaiting.retain(|&p| p != peer);
                if awaiting.is_empty() {
                    self.take_pending(req);
                }
            }
            Pending::Forward { peer: p, .. } | Pending::Resume { peer: p, .. } if *p == peer => {
                if let Some(Pending::Forward { waiter, .. } | Pending::Resume { waiter, .. }) =
                    self.take_pending(req)
                {
                    self.answer(Waiter::Local(waiter), ApiError::Unavailable.into());
                }
            }
            Pending::Deliver { peer: p, .. } if *p == peer => {
                // It may have arrived: the outcome is unknown, so 503, not 409.
                if let Some(Pending::Deliver { waiter, .. }) = self.take_pending(req) {
                    self.answer(waiter, ApiError::PeerUnreachable.into());
                }
            }
            Pending::Deliver {
                waiter: Waiter::Remote { peer: p, .. },
                ..
            } if *p == peer => {
                // Its asker is gone; the delivery goes on, its answer is dropped.
            }
            _ => {}
        }
    }

    /// A frame from node `peer` (handshake and heartbeat frames are the
    /// connection's business and are ignored here).
    pub fn handle_frame(&mut self, now: Millis, peer: u16, frame: Frame) {
        if !self.is_peer_up(peer) {
            return;
        }
        match frame {
            Frame::Lookup {
                req,
                pair,
                side,
                claim,
            } => self.on_lookup(now, peer, req, pair, side, claim),
            Frame::LookupReply { req, a, b } => self.on_lookup_reply(now, peer, req, a, b),
            Frame::Link { from, to } => {
                let candidate = Addr {
                    node: peer,
                    key: from.handle.key,
                    gen: from.handle.gen,
                };
                match self.local_session(Addr {
                    node: 0,
                    key: to.key,
                    gen: to.gen,
                }) {
                    Some(key) => {
                        let was = self.sessions[key as usize].peer;
                        let linked = self.offer_link(now, key, candidate, from.hlc);
                        if linked && was != Some(candidate) {
                            // Confirm, so a sender that meanwhile
                            // dropped or lost the link answers Exit.
                            let session = &self.sessions[key as usize];
                            let me = Claim {
                                handle: Handle {
                                    key,
                                    gen: session.gen,
                                },
                                hlc: session.hlc,
                            };
                            self.send_frame(
                                peer,
                                Frame::Link {
                                    from: me,
                                    to: from.handle,
                                },
                            );
                        }
                        if !linked {
                            // Linked to a better claim: the asker's claim is
                            // losing; tell it, so it does not think itself
                            // linked while its node settles the conflict.
                            self.send_frame(
                                peer,
                                Frame::Exit {
                                    from: to,
                                    to: from.handle,
                                    reason: Reason::Left,
                                },
                            );
                        }
                    }
                    // Linking to a handler that is gone: it ended; say so.
                    None => self.send_frame(
                        peer,
                        Frame::Exit {
                            from: to,
                            to: from.handle,
                            reason: Reason::Left,
                        },
                    ),
                }
            }
            Frame::Exit { from, to, reason } => {
                let from = Addr {
                    node: peer,
                    key: from.key,
                    gen: from.gen,
                };
                if let Some(key) = self.local_session(Addr {
                    node: 0,
                    key: to.key,
                    gen: to.gen,
                }) {
                    if self.sessions[key as usize].peer == Some(from) {
                        self.sessions[key as usize].peer = None;
                        self.deliver(now, key, EventKind::PeerOffline(reason));
                        if !self.draining() {
                            self.relookup(now, key);
                        }
                    }
                }
            }
            Frame::Deliver {
                req,
                from,
                to,
                data,
                idempotency_key,
            } => {
                let result = self.on_deliver(now, peer, from, to, data, idempotency_key);
                match result {
                    // Put into a session still joining: acknowledged once
                    // its join is answered (see `Session::held`).
                    DeliverResult::Delivered if self.joining_session(to) => {
                        let key = self.local_session(Addr {
                            node: 0,
                            key: to.key,
                            gen: to.gen,
                        });
                        if let Some(key) = key {
                            self.sessions[key as usize]
                                .held
                                .push(Held::Remote { peer, req });
                        }
                    }
                    result => self.send_frame(peer, Frame::DeliverReply { req, result }),
                }
            }
            Frame::DeliverReply { req, result } => {
                let sent_there = |p: &Pending<W>| match p {
                    Pending::Deliver { peer: to, .. } => *to == peer,
                    _ => false,
                };
                if let Some(Pending::Deliver {
                    waiter,
                    key,
                    gen,
                    idempotency_key,
                    ..
                }) = self.take_pending_if(req, sent_there)
                {
                    let reply = match result {
                        DeliverResult::Delivered => {
                            if let (Some(k), Some(s)) =
                                (idempotency_key, self.sessions.get_mut(key as usize))
                            {
                                if s.gen == gen {
                                    s.remember_key(&k);
                                }
                            }
                            Reply::accepted()
                        }
                        DeliverResult::PeerOffline => ApiError::PeerOffline.into(),
                        DeliverResult::PeerBusy => ApiError::PeerBusy.into(),
                    };
                    self.answer(waiter, reply);
                }
            }
            Frame::Forward {
                req,
                pair,
                side,
                key,
                gen,
                secret,
                op,
            } => {
                let token = Token {
                    node: self.config.name.clone(),
                    key,
                    gen,
                    secret,
                };
                self.on_forward(now, peer, req, &pair, side, &token, op);
            }
            Frame::ForwardReply { req, status, body } => {
                let answered = self.take_pending_if(req, |p| match p {
                    Pending::Forward { peer: to, .. } | Pending::Resume { peer: to, .. } => {
                        *to == peer
                    }
                    _ => false,
                });
                match answered {
                    Some(Pending::Forward { waiter, .. }) => {
                        self.answer(Waiter::Local(waiter), Reply::new(status, body))
                    }
                    Some(Pending::Resume {
                        waiter,
                        pair,
                        side,
                        secret,
                        wall_ms,
                        ..
                    }) => {
                        if status != 404 {
                            // Resumed (200), or refused for a reason that a
                            // join here would not change (409, 503).
                            self.answer(Waiter::Local(waiter), Reply::new(status, body));
                        } else {
                            // Not a live session of that node: an ordinary join here.
                            let mut waiter = Some(waiter);
                            let started =
                                self.join_here(now, wall_ms, &pair, side, None, secret, || {
                                    Waiter::Local(
                                        waiter.take().expect("join_here makes its waiter once"),
                                    )
                                });
                            if let (Started::Done(reply), Some(w)) = (started, waiter) {
                                self.answer(Waiter::Local(w), reply);
                            }
                        }
                    }
                    _ => {}
                }
            }
            Frame::Cancel { req } => {
                // The poll is answered now with what it has, as a newer
                // poll would: its client went away (the answer is then
                // ignored) or the node it came through is draining (the
                // answer is the 200 API.md asks of a drain).
                if let Some(&handle) = self.remote_polls.get(&(peer, req)) {
                    let current = self.sessions.get(handle.key as usize).is_some_and(|s| {
                        s.gen == handle.gen && s.poll.as_ref().map(|p| p.id) == Some(handle.id)
                    });
                    if current {
                        self.answer_poll(now, handle.key);
                    } else {
                        self.remote_polls.remove(&(peer, req));
                    }
                }
            }
            Frame::Hello { .. } | Frame::Proof { .. } | Frame::Ping { .. } | Frame::Pong { .. } => {
            }
        }
    }

    /// A lookup from `peer`: settle a conflict over `side` with the asker's
    /// claim, then say who holds each side here.
    fn on_lookup(
        &mut self,
        now: Millis,
        peer: u16,
        req: u64,
        pair: PairId,
        side: Side,
        claim: Claim,
    ) {
        self.hlc = self.hlc.max(claim.hlc);
        if let Some(key) = self.registered(&pair, side) {
            if self.rival_wins(peer, claim, key) {
                self.end(now, key, Reason::Left, true);
            }
        }
        // The other side, held here, links to the asker at once: its client
        // hears `peer_online` now instead of after the reply and the asker's
        // `Link` (two trips between the nodes sooner). Should the asker not
        // link back (it ended, lost its side, or keeps a better link), its
        // node answers the reply with an `Exit` (`on_lookup_reply`).
        if let Some(other) = self.registered(&pair, side.peer()) {
            let asker = Addr {
                node: peer,
                key: claim.handle.key,
                gen: claim.handle.gen,
            };
            self.offer_link(now, other, asker, claim.hlc);
        }
        let a = self.claim_of(&pair, Side::A);
        let b = self.claim_of(&pair, Side::B);
        self.send_frame(peer, Frame::LookupReply { req, a, b });
    }

    /// Whether `rival`, a claim on node `peer`, beats the local session
    /// `key`'s claim to the same side.
    fn rival_wins(&self, peer: u16, rival: Claim, key: u32) -> bool {
        let rival_addr = Addr {
            node: peer,
            key: rival.handle.key,
            gen: rival.handle.gen,
        };
        let mine = self.addr(key);
        self.claim_order(rival_addr, rival.hlc)
            < self.claim_order(mine, self.sessions[key as usize].hlc)
    }

    fn claim_of(&self, pair: &PairId, side: Side) -> Option<Claim> {
        let key = self.registered(pair, side)?;
        let session = &self.sessions[key as usize];
        Some(Claim {
            handle: Handle {
                key,
                gen: session.gen,
            },
            hlc: session.hlc,
        })
    }

    /// What `peer` holds of the pair of a session that looked itself up.
    fn on_lookup_reply(
        &mut self,
        now: Millis,
        peer: u16,
        req: u64,
        a: Option<Claim>,
        b: Option<Claim>,
    ) {
        let (key, gen) = match self.pending.get_mut(&req) {
            Some(Pending::Join {
                key, gen, awaiting, ..
            }) if awaiting.contains(&peer) => {
                awaiting.retain(|&p| p != peer);
                (*key, *gen)
            }
            Some(Pending::Resync {
                key, gen, peer: p, ..
            }) if *p == peer => {
                let found = (*key, *gen);
                self.take_pending(req);
                found
            }
            Some(Pending::Late {
                key, gen, awaiting, ..
            }) if awaiting.contains(&peer) => {
                awaiting.retain(|&p| p != peer);
                let found = (*key, *gen);
                if awaiting.is_empty() {
                    self.take_pending(req);
                }
                found
            }
            _ => return,
        };
        let me = Handle { key, gen };
        if let Some(key) = self.local_session(Addr { node: 0, key, gen }) {
            let side = self.sessions[key as usize].side;
            let (same, other) = match side {
                Side::A => (a, b),
                Side::B => (b, a),
            };
            let mut lost = false;
            if let Some(rival) = same {
                if self.rival_wins(peer, rival, key) {
                    self.end(now, key, Reason::Left, true);
                    lost = true;
                }
            }
            if let Some(candidate) = other {
                if lost {
                    self.refuse_link(peer, me, candidate.handle);
                } else {
                    let addr = Addr {
                        node: peer,
                        key: candidate.handle.key,
                        gen: candidate.handle.gen,
                    };
                    if let Some(Pending::Join { found_remote, .. }) = self.pending.get_mut(&req) {
                        *found_remote = true;
                    }
                    if self.offer_link(now, key, addr, candidate.hlc) {
                        let hlc = self.sessions[key as usize].hlc;
                        self.send_frame(
                            peer,
                            Frame::Link {
                                from: Claim { handle: me, hlc },
                                to: candidate.handle,
                            },
                        );
                    } else {
                        self.refuse_link(peer, me, candidate.handle);
                    }
                }
            }
        } else {
            // Gone meanwhile: whoever holds a side there may have linked
            // to it when the lookup came (`on_lookup`); undo that.
            for claim in [a, b].into_iter().flatten() {
                self.refuse_link(peer, me, claim.handle);
            }
        }
        if let Some(Pending::Join { awaiting, .. }) = self.pending.get(&req) {
            if awaiting.is_empty() {
                self.complete_join(req);
            }
        }
    }

    /// Tells `to` on `peer` that the session `from` here is not linked to
    /// it: `to` unlinks if it was linked to `from` (and looks again), and
    /// otherwise ignores it.
    fn refuse_link(&mut self, peer: u16, from: Handle, to: Handle) {
        self.send_frame(
            peer,
            Frame::Exit {
                from,
                to,
                reason: Reason::Left,
            },
        );
    }

    /// Whether `to` is a session of this node whose join is not answered.
    fn joining_session(&self, to: Handle) -> bool {
        self.local_session(Addr {
            node: 0,
            key: to.key,
            gen: to.gen,
        })
        .is_some_and(|key| self.sessions[key as usize].joining)
    }

    /// Answers a join whose lookups are all in (or out of time).
    pub(super) fn complete_join(&mut self, req: u64) {
        let Some(Pending::Join {
            waiter,
            key,
            gen,
            found_remote,
            deadline,
            awaiting,
        }) = self.take_pending(req)
        else {
            return;
        };
        // Replies still out after the deadline are still heard: a late
        // one may show a rival claim or the peer.
        // Kept even when the session is gone: a late reply is then answered
        // with an `Exit`, undoing a link its node made to the lookup.
        // Kept for at most LATE_LOOKUP_MS past the join's own deadline.
        if !awaiting.is_empty() {
            let late = deadline.saturating_add(LATE_LOOKUP_MS);
            self.put_pending(
                req,
                Pending::Late {
                    key,
                    gen,
                    awaiting,
                    deadline: late,
                },
            );
        }
        let reply = match self.local_session(Addr { node: 0, key, gen }) {
            Some(key) => {
                self.count_lookup(key, found_remote);
                // Its side is settled: what was put into it is delivered.
                let session = &mut self.sessions[key as usize];
                session.joining = false;
                for held in std::mem::take(&mut session.held) {
                    self.release(held, true);
                }
                self.join_reply(key, 201)
            }
            // It lost a conflict while its lookups were out.
            None => ApiError::SideTaken.into(),
        };
        self.answer(waiter, reply);
    }

    fn on_deliver(
        &mut self,
        now: Millis,
        peer: u16,
        from: Handle,
        to: Handle,
        data: Box<str>,
        idempotency_key: Option<Vec<u8>>,
    ) -> DeliverResult {
        let from = Addr {
            node: peer,
            key: from.key,
            gen: from.gen,
        };
        let Some(key) = self.local_session(Addr {
            node: 0,
            key: to.key,
            gen: to.gen,
        }) else {
            return DeliverResult::PeerOffline;
        };
        if self.sessions[key as usize].peer != Some(from) {
            return DeliverResult::PeerOffline;
        }
        if let Some(k) = &idempotency_key {
            let s = &self.sessions[key as usize];
            if s.received_keys.iter().any(|(n, kk, g, rk)| {
                (*n, *kk, *g) == (from.node, from.key, from.gen) && **rk == **k
            }) {
                return DeliverResult::Delivered;
            }
        }
        match self.accept_message(now, key, data) {
            Ok(()) => {
                if let Some(k) = idempotency_key {
                    let s = &mut self.sessions[key as usize];
                    if s.received_keys.len() == crate::limits::IDEMPOTENCY_KEYS_MAX {
                        s.received_keys.pop_front();
                    }
                    s.received_keys
                        .push_back((from.node, from.key, from.gen, k.into()));
                }
                DeliverResult::Delivered
            }
            Err(_) => DeliverResult::PeerBusy,
        }
    }

    /// A client request that arrived on `peer` for a session living here.
    #[allow(clippy::too_many_arguments)]
    fn on_forward(
        &mut self,
        now: Millis,
        peer: u16,
        req: u64,
        pair: &PairId,
        side: Side,
        token: &Token,
        op: ForwardOp,
    ) {
        let waiter = || Waiter::Remote { peer, req };
        if self.draining() {
            self.answer(waiter(), ApiError::ShuttingDown.into());
            return;
        }
        let key = match self.authenticate(pair.as_bytes(), side, token) {
            Ok(key) => key,
            // A resume with the token of another live session: the side is
            // not the asker's to take.
            Err(_) if op == ForwardOp::Resume && self.owns_any(token) => {
                self.answer(waiter(), ApiError::SideTaken.into());
                return;
            }
            Err(e) => {
                self.answer(waiter(), e.into());
                return;
            }
        };
        let started = match op {
            ForwardOp::Poll { after, timeout_ms } => {
                // The answer goes back in one `ForwardReply` frame.
                self.poll_here(
                    now,
                    key,
                    after,
                    timeout_ms,
                    FORWARD_REPLY_BODY_BYTES_MAX,
                    waiter,
                )
            }
            ForwardOp::Send {
                idempotency_key,
                data,
            } => self.send_here(now, key, idempotency_key.as_deref(), data, waiter),
            ForwardOp::Leave => {
                self.end(now, key, Reason::Left, false);
                Started::Done(Reply::no_content())
            }
            ForwardOp::Resume => {
                self.touch(now, key);
                Started::Done(self.join_reply(key, 200))
            }
        };
        match started {
            Started::Done(reply) => self.answer(waiter(), reply),
            Started::Waiting(Some(super::CancelKey::Poll(handle))) => {
                self.remote_polls.insert((peer, req), handle);
            }
            Started::Waiting(_) => {}
        }
    }

    /// Sends a client request to the session's home node `peer`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(
        &mut self,
        now: Millis,
        peer: u16,
        pair: &PairId,
        side: Side,
        token: &Token,
        op: ForwardOp,
        make_waiter: impl FnOnce() -> W,
    ) -> Started {
        let req = self.new_req();
        let frame = forward_frame(req, pair, side, token, op);
        // A forwarded poll may wait its whole timeout at the home node.
        let wait = match &frame {
            Frame::Forward {
                op: ForwardOp::Poll { timeout_ms, .. },
                ..
            } => timeout_ms.unwrap_or(self.config.poll_timeout_ms),
            _ => 0,
        };
        let deadline = now.saturating_add(wait).saturating_add(FORWARD_SLACK_MS);
        self.put_pending(
            req,
            Pending::Forward {
                waiter: make_waiter(),
                peer,
                deadline,
            },
        );
        self.stats.forwarded += 1;
        self.send_frame(peer, frame);
        Started::Waiting(Some(super::CancelKey::Forward(req)))
    }
}

/// The frame that carries a client request to the token's home node.
pub(super) fn forward_frame(
    req: u64,
    pair: &PairId,
    side: Side,
    token: &Token,
    op: ForwardOp,
) -> Frame {
    Frame::Forward {
        req,
        pair: pair.clone(),
        side,
        key: token.key,
        gen: token.gen,
        secret: token.secret,
        op,
    }
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
