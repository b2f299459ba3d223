//! A one-shot slot between the node core and the connection of a waiting
//! poll. Everything runs on one thread, so an `Rc<RefCell<..>>` and a waker
//! are all it takes: no atomics, one small allocation per waiting poll.

use crate::core::Reply;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// What a waiting request is answered with.
pub type Answer = Reply;

#[derive(Debug, Default)]
struct Slot {
    answer: Option<Answer>,
    /// The sending half is gone without an answer.
    closed: bool,
    waker: Option<Waker>,
}

/// The half the core keeps in the session.
#[derive(Debug)]
pub struct Waiter(Rc<RefCell<Slot>>);

/// The half the connection awaits.
#[derive(Debug)]
pub struct Wait(Rc<RefCell<Slot>>);

/// A connected pair.
pub fn pair() -> (Waiter, Wait) {
    let slot = Rc::new(RefCell::new(Slot::default()));
    (Waiter(slot.clone()), Wait(slot))
}

impl Waiter {
    /// Hands the answer to the connection and wakes it.
    pub fn answer(self, answer: Answer) {
        let mut slot = self.0.borrow_mut();
        slot.answer = Some(answer);
        if let Some(waker) = slot.waker.take() {
            waker.wake();
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut slot = self.0.borrow_mut();
        slot.closed = true;
        if let Some(waker) = slot.waker.take() {
            waker.wake();
        }
    }
}

impl Future for Wait {
    /// `None` when the core dropped the poll without an answer (it does not,
    /// but the connection then answers rather than hanging).
    type Output = Option<Answer>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.0.borrow_mut();
        if let Some(answer) = slot.answer.take() {
            return Poll::Ready(Some(answer));
        }
        if slot.closed {
            return Poll::Ready(None);
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_then_drop() {
        let (waiter, wait) = pair();
        waiter.answer(Reply::accepted());
        assert_eq!(smol::block_on(wait), Some(Reply::accepted()));
    }

    #[test]
    fn dropped_without_answer() {
        let (waiter, wait) = pair();
        drop(waiter);
        assert_eq!(smol::block_on(wait), None);
    }
}
