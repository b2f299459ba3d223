//! The state every task of a node shares, and the glue between the core's
//! outputs and the tasks waiting for them.

use super::budget::{self, ReadBudget};
use super::cluster::{ClusterState, ConnHandle};
use super::conn::raw_request_bytes_max;
use super::ms_clock::MsClock;
use super::random::RandomPool;
use super::rt::{self, Timer};
use super::waiter::{Link, Waiter};
use crate::api::PeerState;
use crate::api::{Api, Handled};
use crate::cluster::frame::{Frame, NONCE_BYTES};
use crate::config::Config;
use crate::core::{CancelKey, Millis, Output};
use crate::limits::SECRET_BYTES;
use crate::limits::{HEAD_BYTES_MAX, TARGET_BYTES_MAX};
use crate::proto::http::{self, Request};
use crate::proto::ids::{NodeName, TokenCache};
use crate::proto::response::Cors;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Shared by the tasks of one node (behind an `Rc`).
#[derive(Debug)]
pub struct Shared {
    pub(super) api: RefCell<Api<Waiter>>,
    random: RefCell<RandomPool>,
    /// The start the core's milliseconds count from, and
    /// [`Shared::now_ms`] remembered for the millisecond.
    ms_clock: MsClock,
    /// The deadline the timer task sleeps until, so a core call that makes
    /// an earlier one knows to wake it.
    timer_at: Cell<Option<Millis>>,
    timer_wake: async_channel::Sender<()>,
    timer_woken: async_channel::Receiver<()>,
    requests_in_flight: Cell<usize>,
    /// What connections hold of requests not yet whole.
    pub read_budget: ReadBudget,
    /// Framing limits for every connection.
    pub http_limits: http::Limits,
    /// `--header-timeout`.
    pub header_timeout: Duration,
    /// `--max-connections`.
    pub max_connections: usize,
    /// `--cors-origin`.
    pub cors_origin: Option<String>,
    /// Connections to the other nodes.
    pub cluster: RefCell<ClusterState>,
    heartbeat_ms: u64,
    /// Where the link of the last poll a request's handling answered is
    /// ([`Link::at`]; 0 for none): the next request of the same connection
    /// most likely answers it again (a sender, its peer's poll).
    answered_link: Cell<usize>,
}

impl Shared {
    /// State for a node serving `api` with `config`.
    pub fn new(api: Api<Waiter>, config: &Config, cluster: ClusterState) -> Shared {
        // One slot is enough: a wake-up that finds one pending is redundant.
        let (timer_wake, timer_woken) = async_channel::bounded(1);
        Shared {
            api: RefCell::new(api),
            random: RefCell::new(RandomPool::default()),
            ms_clock: MsClock::new(Instant::now()),
            timer_at: Cell::new(None),
            timer_wake,
            timer_woken,
            requests_in_flight: Cell::new(0),
            read_budget: ReadBudget::new(
                budget::BUDGET_BYTES_MIN.max(
                    budget::LARGEST_REQUESTS_MIN
                        .saturating_mul(raw_request_bytes_max(config.max_message_bytes)),
                ),
            ),
            http_limits: http::Limits {
                target_bytes_max: TARGET_BYTES_MAX,
                head_bytes_max: HEAD_BYTES_MAX,
                body_bytes_max: config.max_message_bytes,
            },
            header_timeout: config.header_timeout,
            max_connections: config.max_connections,
            cors_origin: config.cors_origin.clone(),
            cluster: RefCell::new(cluster),
            heartbeat_ms: super::millis(config.heartbeat),
            answered_link: Cell::new(0),
        }
    }

    /// Milliseconds since start, by the loop's clock ([`rt::now`]),
    /// rounded up: a deadline `now_ms() + T` is then never before T after
    /// the moment read (rounded down, a poll's timeout could end up to a
    /// millisecond early, as a review measured).
    pub fn now_ms(&self) -> Millis {
        self.ms_clock.ms(rt::now())
    }

    /// What the connection's next request will most likely read first,
    /// for [`rt::hint_data`]: the session its last token names, if it is
    /// on this node, and, after a send (`sending`), the peer session that
    /// send delivered to; then the connection's own `link`, and the link
    /// of the poll its last request answered (0 for none).
    pub fn hint_addrs(
        &self,
        tokens: &TokenCache,
        sending: bool,
        link: &Rc<Link>,
    ) -> [usize; rt::HINT_DATA_SLOTS] {
        let api = self.api.borrow();
        let (session, peer) = match tokens.last() {
            Some(token) if token.node == api.node.config().name => (
                api.node.session_addr(token.key),
                if sending {
                    api.node.peer_addr(token.key)
                } else {
                    0
                },
            ),
            _ => (0, 0),
        };
        [session, peer, link.at(), self.answered_link.get()]
    }

    /// Runs one request through the API. A poll that waits gets its waiter
    /// from the connection's `link`, and comes back as [`Handled::Wait`].
    pub fn handle(&self, request: &Request, tokens: &mut TokenCache, link: &Rc<Link>) -> Handled {
        let now = self.now_ms();
        self.answered_link.set(0);
        let mut api = self.api.borrow_mut();
        let mut random = self.random.borrow_mut();
        let handled = api.handle(
            now,
            wall_ms(),
            request,
            tokens,
            &mut || random.secret(),
            || link.waiter(),
        );
        self.after_core_call(&mut api);
        handled
    }

    /// The client of a waiting request went away.
    pub fn cancel(&self, key: CancelKey) {
        let mut api = self.api.borrow_mut();
        api.node.cancel(self.now_ms(), key);
        self.after_core_call(&mut api);
    }

    /// Ends every session with `shutdown` and answers every waiting poll.
    pub fn drain(&self) {
        let mut api = self.api.borrow_mut();
        api.node.drain(self.now_ms());
        self.after_core_call(&mut api);
    }

    /// At the end of a drain: forwarded requests still waiting on their
    /// home node get `503 shutting_down`.
    pub fn abandon_forwards(&self) {
        let mut api = self.api.borrow_mut();
        api.node.abandon_forwards();
        self.after_core_call(&mut api);
    }

    /// Runs `f` on the HTTP counters.
    pub fn metrics(&self, f: impl FnOnce(&mut crate::metrics::Metrics)) {
        f(&mut self.api.borrow_mut().metrics);
    }

    /// Whether the node is draining.
    pub fn draining(&self) -> bool {
        self.api.borrow().node.draining()
    }

    /// Requests between being read and their response being written.
    pub fn requests_in_flight(&self) -> usize {
        self.requests_in_flight.get()
    }

    /// Counts a request in flight until the guard drops.
    pub fn in_flight(self: &Rc<Self>) -> InFlight {
        self.requests_in_flight
            .set(self.requests_in_flight.get() + 1);
        InFlight(self.clone())
    }

    fn send_to_peer(&self, peer: u16, frame: Frame) {
        self.cluster.borrow().send(peer, &frame);
    }

    /// `--heartbeat` in milliseconds.
    pub fn heartbeat_ms(&self) -> u64 {
        self.heartbeat_ms
    }

    /// The node's hybrid logical clock.
    pub fn hlc(&self) -> u64 {
        self.api.borrow().node.hlc()
    }

    /// A fresh handshake nonce.
    pub fn nonce(&self) -> [u8; NONCE_BYTES] {
        let mut random = self.random.borrow_mut();
        let mut nonce = [0u8; NONCE_BYTES];
        for chunk in nonce.chunks_mut(SECRET_BYTES) {
            // The OS random source failing is not something a retry fixes;
            // a zero nonce still fails no check and the handshake MACs stay
            // keyed by the cookie.
            let bytes = random.secret().unwrap_or_default();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        nonce
    }

    /// Random bits for backoff jitter.
    pub fn random_u32(&self) -> u32 {
        let bytes = self.random.borrow_mut().secret().unwrap_or_default();
        u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }

    /// A connection finished its handshake with `name`: it becomes that
    /// peer's connection, replacing an older one. Returns the node index.
    pub fn install(&self, name: &NodeName, handle: &Rc<ConnHandle>) -> Option<u16> {
        let index = self.api.borrow().node.peer_index(name)?;
        let old = self.cluster.borrow_mut().install(index, handle.clone());
        if let Some(old) = old {
            // The old connection may have lost frames in flight: the peer
            // goes down and comes back, so links fire and pairs re-form.
            old.close("replaced by a newer connection");
            self.peer_event(index, PeerState::Down);
        }
        log::info!("peer {name} is up");
        self.peer_event(index, PeerState::Up);
        Some(index)
    }

    /// Peer `index` changed state: tell the API (for `/v1/cluster`) and the
    /// node.
    pub fn peer_event(&self, index: u16, state: PeerState) {
        let mut api = self.api.borrow_mut();
        api.set_peer_state(usize::from(index) - 1, state);
        if state != PeerState::Up {
            // A round trip of a connection that is gone says nothing now.
            if let Some(rtt) = api.peer_rtt_ms.get_mut(usize::from(index) - 1) {
                *rtt = None;
            }
        }
        let now = self.now_ms();
        match state {
            PeerState::Up => api.node.peer_up(now, index),
            PeerState::Down => api.node.peer_down(now, index),
            PeerState::Connecting => {}
        }
        self.after_core_call(&mut api);
    }

    /// A frame from peer `index`.
    pub fn peer_frame(&self, index: u16, frame: Frame) {
        let mut api = self.api.borrow_mut();
        api.node.handle_frame(self.now_ms(), index, frame);
        self.after_core_call(&mut api);
    }

    /// Peer `index`'s last heartbeat round trip, for `/metrics`.
    pub fn set_rtt(&self, index: u16, rtt_ms: Option<u64>) {
        if let Some(slot) = self
            .api
            .borrow_mut()
            .peer_rtt_ms
            .get_mut(usize::from(index) - 1)
        {
            *slot = rtt_ms;
        }
    }

    /// `STATUS=` for systemd: sessions, polls and peers up.
    pub fn status_line(&self) -> String {
        let api = self.api.borrow();
        let peers = api.peer_states.len();
        format!(
            "STATUS={} sessions, {} polls waiting, {}/{} peers up",
            api.node.sessions_live(),
            api.node.polls_waiting(),
            api.node.peers_up(),
            peers
        )
    }

    /// Whether `name` is a configured peer.
    pub fn is_known_peer(&self, name: &NodeName) -> bool {
        self.api.borrow().node.peer_index(name).is_some()
    }

    /// A peer's clock reading.
    pub fn observe_clock(&self, hlc: u64) {
        self.api.borrow_mut().node.observe_clock(hlc);
    }

    /// Answers a waiting poll: written to its socket from here when its
    /// connection allows it ([`Waiter::answer`]). Not while draining: the
    /// connection then closes after the response, which is its to do.
    fn answer(&self, api: &mut Api<Waiter>, waiter: Waiter, reply: crate::core::Reply) {
        if api.node.draining() {
            return waiter.hand_over(reply);
        }
        let metrics = &mut api.metrics;
        self.answered_link.set(waiter.link_at());
        waiter.answer(reply, |stream, reply, head_only| {
            let response = crate::api::reply_response(reply);
            metrics.count_response(response.status);
            super::conn::send_now(stream, &response, self.cors().as_ref(), head_only)
        });
    }

    /// The CORS headers every response carries, when configured.
    pub fn cors(&self) -> Option<Cors<'_>> {
        self.cors_origin.as_deref().map(|origin| Cors { origin })
    }

    /// Carries out the core's outputs and wakes the timer task if the next
    /// deadline moved earlier.
    fn after_core_call(&self, api: &mut Api<Waiter>) {
        while let Some(output) = api.node.poll_output() {
            match output {
                Output::Answer { waiter, reply } => self.answer(api, waiter, reply),
                Output::Send { peer, frame } => self.send_to_peer(peer, frame),
            }
        }
        if let Some(next) = api.node.next_deadline() {
            if self.timer_at.get().is_none_or(|at| next < at) {
                self.timer_at.set(Some(next));
                // Full means a wake-up is already pending: nothing lost.
                let _ = self.timer_wake.try_send(());
            }
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before
/// it), as the loop last read it ([`rt::wall_now`]).
pub fn wall_ms() -> u64 {
    rt::wall_now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, super::millis)
}

/// A request in flight; see [`Shared::in_flight`].
#[derive(Debug)]
pub struct InFlight(Rc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let n = &self.0.requests_in_flight;
        n.set(n.get() - 1);
    }
}

/// The timer task: sleeps until the core's next deadline (or until woken
/// because an earlier one appeared) and hands the core the time.
pub async fn run_timers(shared: std::rc::Rc<Shared>) {
    loop {
        let next = shared.api.borrow().node.next_deadline();
        shared.timer_at.set(next);
        let sleep = match next {
            Some(at) => Timer::at(shared.ms_clock.instant(at)),
            None => Timer::never(),
        };
        smol::future::or(
            async {
                sleep.await;
            },
            async {
                let _ = shared.timer_woken.recv().await;
            },
        )
        .await;
        let mut api = shared.api.borrow_mut();
        api.node.handle_timeout(shared.now_ms());
        shared.after_core_call(&mut api);
    }
}
