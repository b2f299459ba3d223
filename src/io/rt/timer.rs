//! Timers on the thread's reactor: a deadline in a lane or a heap, no
//! system call to set one or to cancel it.

use super::reactor::{Reactor, TimerId};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A future that completes at a deadline (or never), like smol's `Timer`.
/// It registers on first poll and deregisters when dropped or moved.
#[derive(Debug)]
pub struct Timer {
    at: Option<Instant>,
    /// The id it is registered under, once polled.
    id: Option<TimerId>,
    /// Made as `now + every`: such timers are kept in deadline order per
    /// duration, at O(1) (the reactor's lanes).
    every: Option<Duration>,
}

impl Timer {
    /// Fires `d` from now.
    pub fn after(d: Duration) -> Timer {
        Timer {
            at: Some(Instant::now().checked_add(d).unwrap_or_else(far_future)),
            id: None,
            every: Some(d),
        }
    }

    /// Fires at `at`.
    pub fn at(at: Instant) -> Timer {
        Timer {
            at: Some(at),
            id: None,
            every: None,
        }
    }

    /// Never fires.
    pub fn never() -> Timer {
        Timer {
            at: None,
            id: None,
            every: None,
        }
    }

    /// Moves the deadline to `d` from now.
    pub fn set_after(&mut self, d: Duration) {
        self.deregister();
        self.at = Some(Instant::now().checked_add(d).unwrap_or_else(far_future));
        self.every = Some(d);
    }

    fn deregister(&mut self) {
        if let Some(id) = self.id.take() {
            if let Ok(r) = Reactor::get() {
                r.remove_timer(id);
            }
        }
    }
}

/// About thirty years on: a deadline past any run, without overflow.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

impl Future for Timer {
    type Output = Instant;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Instant> {
        let Some(at) = self.at else {
            return Poll::Pending;
        };
        let now = Instant::now();
        if now >= at {
            self.deregister();
            return Poll::Ready(now);
        }
        let Ok(reactor) = Reactor::get() else {
            return Poll::Pending; // no event loop: block_on reported why
        };
        let registered = self
            .id
            .is_some_and(|id| reactor.update_timer(id, cx.waker()));
        if !registered {
            self.id = Some(reactor.insert_timer(at, self.every, cx.waker()));
        }
        Poll::Pending
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.deregister();
    }
}
