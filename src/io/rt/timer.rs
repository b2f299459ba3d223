//! Timers on the thread's reactor: a deadline in a lane or a heap, no
//! system call to set one or to cancel it.

use super::reactor::{Reactor, TimerId};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, RawWakerVTable, Waker};
use std::time::{Duration, Instant};

/// A timer's registration with the reactor.
#[derive(Debug)]
struct Registration {
    id: TimerId,
    /// The deadline registered: earlier than `at` after a lazy reset.
    at: Instant,
    /// The waker registered, by identity (data and vtable addresses, what
    /// `Waker::will_wake` compares): a poll with the same one before `at`
    /// has nothing to tell the reactor.
    waker: (usize, usize),
}

/// A waker's identity (see [`Registration::waker`]).
fn identity(waker: &Waker) -> (usize, usize) {
    (
        waker.data() as usize,
        waker.vtable() as *const RawWakerVTable as usize,
    )
}

/// A future that completes at a deadline (or never), like smol's `Timer`.
/// It registers on first poll and deregisters when dropped or moved.
#[derive(Debug)]
pub struct Timer {
    at: Option<Instant>,
    /// Where and how it is registered, once polled.
    reg: Option<Registration>,
    /// Made as `now + every`: such timers are kept in deadline order per
    /// duration, at O(1) (the reactor's lanes).
    every: Option<Duration>,
}

impl Timer {
    /// Fires `d` from now, as the loop last read the clock
    /// ([`super::now`]).
    pub fn after(d: Duration) -> Timer {
        Timer {
            at: Some(from_now(d)),
            reg: None,
            every: Some(d),
        }
    }

    /// Fires at `at`.
    pub fn at(at: Instant) -> Timer {
        Timer {
            at: Some(at),
            reg: None,
            every: None,
        }
    }

    /// Never fires.
    pub fn never() -> Timer {
        Timer {
            at: None,
            reg: None,
            every: None,
        }
    }

    /// Moves the deadline to `d` from now.
    pub fn set_after(&mut self, d: Duration) {
        self.deregister();
        self.at = Some(from_now(d));
        self.every = Some(d);
    }

    /// Moves the deadline to `d` from now, lazily when it can: a timer
    /// made with the same `d` and registered keeps its registration, which
    /// is due no later than the new deadline (the clock only advances);
    /// when that fires, the timer registers again for what is left. A
    /// connection's idle timer, reset for every request, so touches the
    /// reactor about once per `d`, not twice per request.
    pub fn reset_after(&mut self, d: Duration) {
        if self.reg.is_some() && self.every == Some(d) {
            self.at = Some(from_now(d));
        } else {
            self.set_after(d);
        }
    }

    /// Moves the deadline to `d` after `from` (a moment already past),
    /// lazily as [`Self::reset_after`] when the registration is due no
    /// later; otherwise out of the lanes' order, which a deadline counted
    /// from the past may break.
    pub fn reset_after_from(&mut self, from: Instant, d: Duration) {
        let at = from.checked_add(d).unwrap_or_else(far_future);
        match &self.reg {
            Some(reg) if self.every == Some(d) && reg.at <= at => self.at = Some(at),
            _ => {
                self.deregister();
                self.at = Some(at);
                self.every = None;
            }
        }
    }

    fn deregister(&mut self) {
        if let Some(reg) = self.reg.take() {
            Reactor::with_current(|r| r.remove_timer(reg.id));
        }
    }
}

/// `d` from the loop's clock ([`super::now`]), or [`far_future`] for a
/// duration too long to add.
fn from_now(d: Duration) -> Instant {
    super::now().checked_add(d).unwrap_or_else(far_future)
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
        let waker = identity(cx.waker());
        // No event loop on this thread (`block_on` makes it first): never.
        Reactor::with_current(|reactor| match &mut self.reg {
            // Not due yet, so not fired (the reactor fires what is due by
            // its clock, which only advances), and the same waker: the
            // registration stands, and its slot is not touched (a
            // connection's idle timer is polled for every request).
            Some(reg) if reg.waker == waker && reg.at > reactor.now() => Poll::Pending,
            Some(reg) if reactor.update_timer(reg.id, cx.waker()) => {
                reg.waker = waker;
                Poll::Pending
            }
            Some(_) => {
                // Fired: its slot is gone already.
                self.reg = None;
                if at > reactor.now() {
                    // Registered before `reset_after` moved the deadline:
                    // register what is left, out of the lanes' order.
                    self.every = None;
                    let id = reactor.insert_timer(at, None, cx.waker());
                    self.reg = Some(Registration { id, at, waker });
                    return Poll::Pending;
                }
                self.at = None;
                Poll::Ready(reactor.now())
            }
            None => {
                let id = reactor.insert_timer(at, self.every, cx.waker());
                self.reg = Some(Registration { id, at, waker });
                Poll::Pending
            }
        })
        .unwrap_or(Poll::Pending)
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.deregister();
    }
}
