//! The state every task of a node shares, and the glue between the core's
//! outputs and the tasks waiting for them.

use super::random::RandomPool;
use super::waiter::{self, Wait, Waiter};
use crate::api::{Api, Handled};
use crate::config::Config;
use crate::core::{CancelKey, Millis, Output};
use crate::limits::{HEAD_BYTES_MAX, TARGET_BYTES_MAX};
use crate::proto::http::{self, Request};
use smol::Timer;
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

/// Shared by the tasks of one node (behind an `Rc`).
#[derive(Debug)]
pub struct Shared {
    api: RefCell<Api<Waiter>>,
    random: RefCell<RandomPool>,
    start: Instant,
    /// The deadline the timer task sleeps until, so a core call that makes
    /// an earlier one knows to wake it.
    timer_at: Cell<Option<Millis>>,
    timer_wake: async_channel::Sender<()>,
    timer_woken: async_channel::Receiver<()>,
    requests_in_flight: Cell<usize>,
    /// Framing limits for every connection.
    pub http_limits: http::Limits,
    /// `--header-timeout`.
    pub header_timeout: Duration,
    /// `--max-connections`.
    pub max_connections: usize,
    /// `--cors-origin`.
    pub cors_origin: Option<String>,
}

impl Shared {
    /// State for a node serving `api` with `config`.
    pub fn new(api: Api<Waiter>, config: &Config) -> Shared {
        // One slot is enough: a wake-up that finds one pending is redundant.
        let (timer_wake, timer_woken) = async_channel::bounded(1);
        Shared {
            api: RefCell::new(api),
            random: RefCell::new(RandomPool::default()),
            start: Instant::now(),
            timer_at: Cell::new(None),
            timer_wake,
            timer_woken,
            requests_in_flight: Cell::new(0),
            http_limits: http::Limits {
                target_bytes_max: TARGET_BYTES_MAX,
                head_bytes_max: HEAD_BYTES_MAX,
                body_bytes_max: config.max_message_bytes,
            },
            header_timeout: config.header_timeout,
            max_connections: config.max_connections,
            cors_origin: config.cors_origin.clone(),
        }
    }

    /// Milliseconds since start.
    pub fn now_ms(&self) -> Millis {
        super::millis(self.start.elapsed())
    }

    /// Runs one request through the API. A waiting poll comes back with the
    /// future its answer arrives on.
    pub fn handle(&self, request: &Request) -> (Handled, Option<Wait>) {
        let now = self.now_ms();
        let mut wait = None;
        let mut api = self.api.borrow_mut();
        let mut random = self.random.borrow_mut();
        let handled = api.handle(now, wall_ms(), request, &mut || random.secret(), || {
            let (waiter, w) = waiter::pair();
            wait = Some(w);
            waiter
        });
        self.after_core_call(&mut api);
        (handled, wait)
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
    pub fn in_flight(&self) -> InFlight<'_> {
        self.requests_in_flight
            .set(self.requests_in_flight.get() + 1);
        InFlight(self)
    }

    fn send_to_peer(&self, peer: u16, frame: crate::cluster::frame::Frame) {
        log::debug!("no cluster driver yet: dropping a frame for peer {peer}: {frame:?}");
    }

    /// Carries out the core's outputs and wakes the timer task if the next
    /// deadline moved earlier.
    fn after_core_call(&self, api: &mut Api<Waiter>) {
        while let Some(output) = api.node.poll_output() {
            match output {
                Output::Answer { waiter, reply } => waiter.answer(reply),
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

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, super::millis)
}

/// A request in flight; see [`Shared::in_flight`].
pub struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
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
            Some(at) => Timer::at(shared.start + Duration::from_millis(at)),
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
