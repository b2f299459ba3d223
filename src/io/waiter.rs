//! What a connection shares with the node core's waiter of its long poll:
//! its socket, and a slot for the poll's answer. Everything runs on one
//! thread, so an `Rc` and a `RefCell` are all it takes: no atomics, and
//! one allocation per connection, not one per poll.
//!
//! An answer takes one of two ways to the client:
//!
//! - **Written where it is made.** While the connection allows it
//!   ([`Link::allow_direct`]: keep-alive, nothing pipelined behind the
//!   poll), the step that answers (a sender's request, a timer, a frame
//!   from a peer node) writes the response to the poll's socket itself.
//!   The poll's task is not woken for it: it learns of it
//!   ([`Waited::Written`]) the next time it runs anyway, for its client's
//!   next request or its idle timer. A relayed message so costs one task
//!   run fewer, and the poll's connection state is not touched at all.
//! - **Handed over.** Otherwise the answer goes into the slot and the
//!   task is woken to write it, as any response.

use super::rt::Io;
use super::shared::InFlight;
use crate::core::Reply;
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::TcpStream;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// A connection's socket and the slot of its waiting poll.
#[derive(Debug)]
pub struct Link {
    stream: Io<TcpStream>,
    slot: RefCell<Slot>,
}

#[derive(Debug)]
struct Slot {
    /// The poll the slot serves: a waiter of an earlier one is stale.
    seq: u32,
    state: State,
    /// The answer may be written by the step that makes it.
    direct: bool,
    /// The poll was a `HEAD`: its answer has no body.
    head_only: bool,
    /// The poll's request, counted in flight until its response is
    /// written; dropped by a direct write, else taken back by the
    /// connection ([`Link::take_in_flight`]).
    in_flight: Option<InFlight>,
    waker: Option<Waker>,
}

#[derive(Debug)]
enum State {
    /// No poll waits.
    Idle,
    Waiting,
    /// Handed over, to be written by the connection.
    Answered(Reply),
    /// Written by the step that answered, at this time by the loop's clock.
    Written(Instant),
    /// Written in part by the step that answered: the rest, for the
    /// connection to write.
    Partly(Vec<u8>),
    /// A direct write failed: the connection is broken.
    Failed,
    /// The core dropped the poll without an answer.
    Dropped,
}

/// How a waiting poll ended, as its connection sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited {
    /// The answer, to write.
    Answer(Reply),
    /// Already written, at this time.
    Written(Instant),
    /// Written in part: the rest, to write.
    Partly(Vec<u8>),
    /// Writing it failed: the connection is broken.
    Failed,
    /// Dropped unanswered (the core does not, but the connection then
    /// answers rather than hanging).
    Dropped,
}

/// The half the core keeps in the session. It does not keep the
/// connection's link alive: once the connection's task has ended, its
/// socket is closed, whatever the core still holds (a request that waits
/// without a way to cancel it, such as a join waiting for its lookups),
/// and an answer to it goes nowhere.
#[derive(Debug)]
pub struct Waiter {
    link: Weak<Link>,
    seq: u32,
}

/// Where the allocation of the `Rc` whose value `link` points to begins:
/// its reference counts, two words before the value (std's layout). For a
/// prefetch hint, which reads nothing: never read through.
fn allocation_at(link: *const Link) -> usize {
    (link as usize).wrapping_sub(2 * std::mem::size_of::<usize>())
}

impl Link {
    /// Where this link's allocation is, for a prefetch hint (the
    /// executor's `hint_data`).
    pub fn at(self: &Rc<Self>) -> usize {
        allocation_at(Rc::as_ptr(self))
    }

    /// A connection's link, no poll waiting.
    pub fn new(stream: Io<TcpStream>) -> Link {
        Link {
            stream,
            slot: RefCell::new(Slot {
                seq: 0,
                state: State::Idle,
                direct: false,
                head_only: false,
                in_flight: None,
                waker: None,
            }),
        }
    }

    /// The connection's socket.
    pub fn stream(&self) -> &Io<TcpStream> {
        &self.stream
    }

    /// The waiter of a new poll on this connection; any earlier one is
    /// stale from now on. Not written directly until the connection says
    /// so.
    pub fn waiter(self: &Rc<Self>) -> Waiter {
        let mut slot = self.slot.borrow_mut();
        slot.seq = slot.seq.wrapping_add(1);
        slot.state = State::Waiting;
        slot.direct = false;
        Waiter {
            link: Rc::downgrade(self),
            seq: slot.seq,
        }
    }

    /// Holds the waiting poll's in-flight count and says whether its
    /// answer has a body.
    pub fn hold(&self, in_flight: Option<InFlight>, head_only: bool) {
        let mut slot = self.slot.borrow_mut();
        slot.in_flight = in_flight;
        slot.head_only = head_only;
    }

    /// Whether the poll's answer may be written by the step that makes it.
    pub fn allow_direct(&self, allow: bool) {
        self.slot.borrow_mut().direct = allow;
    }

    /// The in-flight count held for the poll, unless a direct write
    /// dropped it.
    pub fn take_in_flight(&self) -> Option<InFlight> {
        self.slot.borrow_mut().in_flight.take()
    }

    /// Waits for the poll's end.
    pub fn wait(&self) -> Wait<'_> {
        Wait(self)
    }
}

impl Waiter {
    /// Where the allocation of the link this waiter answers through is,
    /// for a prefetch hint ([`Link::at`]).
    pub fn link_at(&self) -> usize {
        allocation_at(self.link.as_ptr())
    }

    /// Answers the poll: with `write` straight to the socket when the
    /// connection allows it (`write` gives what the socket did not take),
    /// else handed to the connection, whose task is woken. A stale waiter
    /// (its connection moved on) is ignored.
    pub fn answer(
        self,
        reply: Reply,
        write: impl FnOnce(&Io<TcpStream>, Reply, bool) -> io::Result<Option<Vec<u8>>>,
    ) {
        let Some(link) = self.link.upgrade() else {
            return; // the connection is gone
        };
        let mut slot = link.slot.borrow_mut();
        if slot.seq != self.seq || !matches!(slot.state, State::Waiting) {
            return;
        }
        if !slot.direct {
            return hand_over_to(&mut slot, reply);
        }
        slot.state = match write(&link.stream, reply, slot.head_only) {
            Ok(None) => {
                slot.in_flight = None;
                // The task learns of it when it next runs; no wake.
                slot.state = State::Written(super::rt::now());
                return;
            }
            Ok(Some(rest)) => State::Partly(rest),
            Err(e) => {
                log::debug!("writing a poll's answer: {e}");
                State::Failed
            }
        };
        wake(&mut slot);
    }

    /// Answers the poll through its connection, whose task is woken to
    /// write the answer. A stale waiter is ignored.
    pub fn hand_over(self, reply: Reply) {
        let Some(link) = self.link.upgrade() else {
            return;
        };
        let mut slot = link.slot.borrow_mut();
        if slot.seq == self.seq && matches!(slot.state, State::Waiting) {
            hand_over_to(&mut slot, reply);
        }
    }
}

/// Hands `reply` to the connection of the poll `slot` serves, and wakes
/// its task.
fn hand_over_to(slot: &mut Slot, reply: Reply) {
    slot.state = State::Answered(reply);
    wake(slot);
}

fn wake(slot: &mut Slot) {
    if let Some(waker) = slot.waker.take() {
        waker.wake();
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let Some(link) = self.link.upgrade() else {
            return;
        };
        let mut slot = link.slot.borrow_mut();
        if slot.seq == self.seq && matches!(slot.state, State::Waiting) {
            slot.state = State::Dropped;
            wake(&mut slot);
        }
    }
}

/// The half the connection awaits (see [`Link::wait`]).
#[derive(Debug)]
pub struct Wait<'a>(&'a Link);

impl Future for Wait<'_> {
    type Output = Waited;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Waited> {
        let mut slot = self.0.slot.borrow_mut();
        let waited = match std::mem::replace(&mut slot.state, State::Idle) {
            State::Waiting => {
                slot.state = State::Waiting;
                match &slot.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => slot.waker = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            State::Answered(reply) => Waited::Answer(reply),
            State::Written(at) => Waited::Written(at),
            State::Partly(rest) => Waited::Partly(rest),
            State::Failed => Waited::Failed,
            State::Idle | State::Dropped => Waited::Dropped,
        };
        slot.waker = None;
        Poll::Ready(waited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A link over a connected loopback socket, and its peer's end.
    fn link() -> (Rc<Link>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let io = Io::new(server).unwrap();
        (Rc::new(Link::new(io)), client)
    }

    fn never_written(_: &Io<TcpStream>, _: Reply, _: bool) -> io::Result<Option<Vec<u8>>> {
        panic!("written directly");
    }

    /// What a hint of a link names is the whole of its allocation, and
    /// a waiter names the link it answers through.
    #[test]
    fn a_link_hint_covers_its_allocation() {
        let counts = 2 * std::mem::size_of::<usize>();
        assert!(counts + std::mem::size_of::<Link>() <= super::super::rt::HINT_OBJECT_BYTES);
        let (link, _client) = link();
        assert_eq!(link.at() + counts, Rc::as_ptr(&link) as usize);
        assert_eq!(link.waiter().link_at(), link.at());
    }

    #[test]
    fn answered_then_dropped() {
        super::super::rt::block_on(async {
            let (link, _client) = link();
            let waiter = link.waiter();
            waiter.answer(Reply::accepted(), never_written);
            assert_eq!(link.wait().await, Waited::Answer(Reply::accepted()));
        })
        .unwrap();
    }

    #[test]
    fn dropped_without_answer() {
        super::super::rt::block_on(async {
            let (link, _client) = link();
            drop(link.waiter());
            assert_eq!(link.wait().await, Waited::Dropped);
        })
        .unwrap();
    }

    #[test]
    fn a_stale_waiter_neither_answers_nor_drops_the_next_poll() {
        super::super::rt::block_on(async {
            let (link, _client) = link();
            let old = link.waiter();
            let new = link.waiter();
            old.answer(Reply::accepted(), never_written);
            let before = smol::future::poll_once(link.wait()).await;
            assert!(before.is_none(), "a stale answer ended the poll");
            new.answer(Reply::accepted(), never_written);
            assert_eq!(link.wait().await, Waited::Answer(Reply::accepted()));
        })
        .unwrap();
    }

    /// Allowed, the answer is written where it is made, and the connection
    /// sees it written (`io::answer_tests` follows a real send and the
    /// in-flight count).
    #[test]
    fn a_direct_answer_is_written_and_not_handed_over() {
        super::super::rt::block_on(async {
            let (link, _client) = link();
            let waiter = link.waiter();
            link.allow_direct(true);
            let mut heads = Vec::new();
            waiter.answer(Reply::accepted(), |stream, reply, head_only| {
                heads.push(head_only);
                stream.try_write(&reply.body).map(|_| None)
            });
            assert_eq!(heads, [false]);
            assert!(matches!(link.wait().await, Waited::Written(_)));
        })
        .unwrap();
    }

    #[test]
    fn what_the_socket_did_not_take_is_handed_over() {
        super::super::rt::block_on(async {
            let (link, _client) = link();
            let waiter = link.waiter();
            link.allow_direct(true);
            waiter.answer(Reply::accepted(), |_, _, _| Ok(Some(b"rest".to_vec())));
            assert_eq!(link.wait().await, Waited::Partly(b"rest".to_vec()));
            let waiter = link.waiter();
            link.allow_direct(true);
            waiter.answer(Reply::accepted(), |_, _, _| {
                Err(io::ErrorKind::BrokenPipe.into())
            });
            assert_eq!(link.wait().await, Waited::Failed);
        })
        .unwrap();
    }

    /// The core may hold a waiter after its connection is gone: the
    /// socket closes with the connection all the same, and the answer goes
    /// nowhere.
    #[test]
    fn a_waiter_does_not_keep_its_connection() {
        super::super::rt::block_on(async {
            let (link, mut client) = link();
            let waiter = link.waiter();
            link.allow_direct(true);
            drop(link);
            client
                .set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            let mut got = [0u8; 8];
            assert_eq!(std::io::Read::read(&mut client, &mut got).unwrap(), 0);
            waiter.answer(Reply::accepted(), never_written);
        })
        .unwrap();
    }

    /// A new poll starts with direct writes off: only the connection,
    /// which knows what it has buffered, turns them on.
    #[test]
    fn a_new_poll_is_not_written_directly_until_allowed() {
        super::super::rt::block_on(async {
            let (link, _client) = link();
            link.allow_direct(true);
            let waiter = link.waiter();
            waiter.answer(Reply::accepted(), never_written);
            assert_eq!(link.wait().await, Waited::Answer(Reply::accepted()));
        })
        .unwrap();
    }
}
