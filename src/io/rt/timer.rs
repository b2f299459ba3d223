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
    /// Fires `d` from now, as the loop last read the clock
    /// ([`super::now`]).
    pub fn after(d: Duration) -> Timer {
        Timer {
            at: Some(super::now().checked_add(d).unwrap_or_else(far_future)),
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
        self.at = Some(super::now().checked_add(d).unwrap_or_else(far_future));
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
    super::now() + Duration::from_secs(86_400 * 365 * 30)
}

impl Future for Timer {
    type Output = Instant;

    /// Registers on the first poll and completes once the reactor has fired
    /// it: the clock is read by the reactor once per turn, not by every
    /// timer on every poll (most timers are cancelled, never due). A
    /// deadline already past when first polled fires on the next turn.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Instant> {
        let Some(at) = self.at else {
            return Poll::Pending;
        };
        let Ok(reactor) = Reactor::get() else {
            return Poll::Pending; // no event loop: block_on reported why
        };
        match self.id {
            Some(id) if reactor.update_timer(id, cx.waker()) => Poll::Pending,
            Some(_) => {
                // Fired: its slot is gone already.
                self.id = None;
                self.at = None;
                Poll::Ready(super::now())
            }
            None => {
                self.id = Some(reactor.insert_timer(at, self.every, cx.waker()));
                Poll::Pending
            }
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.deregister();
    }
}
