//! One session's state: its event buffer, cursor, waiting poll, link and
//! idempotency keys.

use super::event::{Event, EventKind};
use super::events::Events;
use super::node::Held;
use super::Millis;
use crate::limits::{IDEMPOTENCY_KEYS_MAX, SECRET_BYTES};
use crate::proto::ids::{PairId, Side};
use std::collections::VecDeque;

/// Where a handler lives: its node (0 is this node), its slab key and its
/// generation. A slab key is reused; the generation never is, so an old
/// address never reaches a new session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    /// Index of the node: 0 for this one, then the cluster peers in order.
    pub node: u16,
    /// Slab key on that node.
    pub key: u32,
    /// Generation on that node.
    pub gen: u64,
}

/// A poll waiting for events.
#[derive(Debug)]
pub struct WaitingPoll<W> {
    /// Whatever the driver needs to answer it.
    pub waiter: W,
    /// Tells this poll from a later one on the same session.
    pub id: u64,
}

/// Cache lines at the start of a [`Session`] that hold what a relayed
/// message reads: what a prefetch of a session asks for.
pub const SESSION_HOT_LINES: usize = 4;

/// A session handler.
///
/// Laid out by hand (`repr(C)`), a cache line at a time: a relayed message
/// reads two sessions that are rarely in cache (one of hundreds of pairs),
/// and with the fields where the compiler puts them it touched every line
/// of both. What a send, a delivery and a poll read comes first, in the
/// four lines the alignment gives it (BENCHMARKS.md, the sixth and tenth
/// rounds).
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Session<W> {
    // Line 0: what authenticates a request, what a delivery updates, and
    // where a send finds its peer.
    /// The token's secret.
    pub secret: [u8; SECRET_BYTES],
    /// Generation (see [`Addr`]).
    pub gen: u64,
    /// Sum of [`Event::data_bytes`] over `events`.
    pub data_bytes: usize,
    /// Highest seq issued.
    pub last_seq: u64,
    /// When this session next needs attention: its poll's timeout while a
    /// poll waits, else its expiry.
    pub deadline: Millis,
    /// The deadline the timer set holds for this session (<= `deadline`).
    pub timer_at: Millis,
    /// Where the peer's session was when this one last delivered to it on
    /// this node (0 before): an address for a prefetch hint, never read
    /// through. In this line, which the connection's hint brings in, a
    /// send finds it without reading the peer's memory, the miss the
    /// prefetch is for (reading the peer's slab entry to find the address
    /// stalled on it: 5 % of the user time at 512 pairs).
    pub peer_at: usize,
    // Line 1: the waiting poll and the oldest event.
    /// The waiting poll, if any (at most one, API.md §2).
    pub poll: Option<WaitingPoll<W>>,
    /// Events not yet acknowledged, in seq order: the oldest inline, in
    /// this line; the others' deque in the next.
    pub events: Events,
    // Line 2: the other events, the side and the flags, and the link.
    /// Side.
    pub side: Side,
    /// Its join is not answered yet (lookups are out): it may still lose
    /// its side to a better claim, and end unread.
    pub joining: bool,
    /// A link was refused for want of room for its events: once the
    /// client acknowledges some, the session looks for its peer again.
    pub link_refused: bool,
    /// The linked peer handler; `Some` means the peer is online.
    pub peer: Option<Addr>,
    // Line 3: the pair id (its length and up to 56 bytes of it).
    /// Pair id.
    pub pair: PairId,
    // Then what only joins, links and idempotency keys read.
    /// This session's claim to its side: the hybrid logical clock at its
    /// join. Of two claims to one side, the smaller `(hlc, node, key)` wins.
    pub hlc: u64,
    /// The linked peer's claim (hybrid logical clock at its join).
    pub peer_hlc: u64,
    /// Acknowledgements of the messages put into it while `joining`, held
    /// until the join is answered (sent as delivered), or the session ends
    /// first (sent as `peer_offline`): a message must not be acknowledged
    /// into a session no client will ever read. At most one per message.
    pub(crate) held: Vec<Held<W>>,
    /// Idempotency keys of the last messages sent, oldest first. Allocated
    /// only when a client uses keys.
    pub idempotency_keys: VecDeque<Box<[u8]>>,
    /// Idempotency keys of messages received from handlers on other
    /// nodes, with the sending handle, so a retried `Deliver` is not
    /// buffered twice. Bounded like `idempotency_keys`.
    pub received_keys: VecDeque<(u16, u32, u64, Box<[u8]>)>,
}

impl<W> Session<W> {
    /// A new session with an empty buffer.
    pub fn new(
        pair: PairId,
        side: Side,
        gen: u64,
        secret: [u8; SECRET_BYTES],
        deadline: Millis,
        hlc: u64,
    ) -> Self {
        Session {
            pair,
            side,
            gen,
            secret,
            last_seq: 0,
            events: Events::new(),
            data_bytes: 0,
            poll: None,
            deadline,
            timer_at: deadline,
            peer: None,
            peer_at: 0,
            peer_hlc: 0,
            hlc,
            idempotency_keys: VecDeque::new(),
            received_keys: VecDeque::new(),
            link_refused: false,
            joining: false,
            held: Vec::new(),
        }
    }

    /// Appends an event with the next seq.
    pub fn push(&mut self, kind: EventKind) {
        self.last_seq += 1;
        let event = Event {
            seq: self.last_seq,
            kind,
        };
        self.data_bytes += event.data_bytes();
        self.events.push_back(event);
    }

    /// Forgets every event with `seq <= after`; returns (events, data bytes)
    /// freed.
    pub fn acknowledge(&mut self, after: u64) -> (usize, usize) {
        let mut freed = (0, 0);
        while let Some(event) = self.events.front() {
            if event.seq > after {
                break;
            }
            freed.0 += 1;
            freed.1 += event.data_bytes();
            self.events.pop_front();
        }
        self.data_bytes -= freed.1;
        freed
    }

    /// Whether `key` was used by one of the last messages.
    pub fn knows_key(&self, key: &[u8]) -> bool {
        self.idempotency_keys.iter().any(|k| **k == *key)
    }

    /// Remembers `key`, forgetting the oldest beyond the limit.
    pub fn remember_key(&mut self, key: &[u8]) {
        if self.idempotency_keys.len() == IDEMPOTENCY_KEYS_MAX {
            self.idempotency_keys.pop_front();
        }
        self.idempotency_keys.push_back(key.into());
    }

    /// Forgets `key`: the message it named was never read, so a retry
    /// with it must be delivered, not answered as a repeat.
    pub fn forget_key(&mut self, key: &[u8]) {
        self.idempotency_keys.retain(|k| **k != *key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines the layout promises (see [`Session`]), with the waiter
    /// the server uses (a weak pointer and a sequence number) and with a
    /// one-pointer waiter: authentication, a delivery's counters and the
    /// peer's address in line 0; the waiting poll and the oldest event in
    /// line 1; the side, the flags and the link in line 2; the pair id's
    /// length and its first 56 bytes in line 3.
    #[test]
    fn what_a_relayed_message_reads_is_in_the_first_four_lines() {
        check_layout::<super::super::node::Waiter<(std::rc::Weak<()>, u64)>>();
        check_layout::<super::super::node::Waiter<std::rc::Rc<()>>>();
    }

    fn check_layout<W>() {
        use std::mem::{align_of, offset_of, size_of};
        type S<W> = Session<W>;
        let line = |offset: usize| offset / 64;
        let last = |offset: usize, size: usize| line(offset + size - 1);
        assert_eq!(align_of::<S<W>>(), 64);
        let line0 = [
            offset_of!(S<W>, secret),
            offset_of!(S<W>, gen),
            offset_of!(S<W>, data_bytes),
            offset_of!(S<W>, last_seq),
            offset_of!(S<W>, deadline),
            offset_of!(S<W>, timer_at),
            offset_of!(S<W>, peer_at) + size_of::<usize>() - 1,
        ];
        assert!(line0.iter().all(|&o| line(o) == 0), "{line0:?}");
        assert_eq!(line(offset_of!(S<W>, poll)), 1);
        // `Events` is in C order, the oldest event first.
        let head = offset_of!(S<W>, events);
        assert_eq!((line(head), last(head, size_of::<Option<Event>>())), (1, 1));
        let line2 = [
            offset_of!(S<W>, side),
            offset_of!(S<W>, joining),
            offset_of!(S<W>, link_refused),
            offset_of!(S<W>, peer),
            offset_of!(S<W>, peer) + size_of::<Option<Addr>>() - 1,
        ];
        assert!(line2.iter().all(|&o| line(o) == 2), "{line2:?}");
        // The pair id's length, then its bytes: up to 56 of them by the
        // end of line 3.
        let pair = offset_of!(S<W>, pair);
        assert!(line(pair) >= 2 && pair + 8 + 56 <= 4 * 64, "{pair}");
        assert_eq!(SESSION_HOT_LINES, 4);
        assert_eq!(size_of::<S<W>>(), 6 * 64);
    }

    fn session() -> Session<()> {
        Session::new(PairId::try_from("p").unwrap(), Side::A, 1, [0; 16], 0, 0)
    }

    #[test]
    fn push_and_acknowledge() {
        let mut s = session();
        s.push(EventKind::PeerOnline);
        s.push(EventKind::Message("abc".into()));
        s.push(EventKind::Message("de".into()));
        assert_eq!(s.last_seq, 3);
        assert_eq!(s.data_bytes, 5);
        assert_eq!(s.acknowledge(0), (0, 0));
        assert_eq!(s.acknowledge(2), (2, 3));
        assert_eq!(s.data_bytes, 2);
        assert_eq!(s.events.front().map(|e| e.seq), Some(3));
        assert_eq!(s.acknowledge(3), (1, 2));
        assert!(s.events.is_empty());
    }

    #[test]
    fn idempotency_keys_are_bounded() {
        let mut s = session();
        for i in 0..100u32 {
            s.remember_key(i.to_string().as_bytes());
        }
        assert_eq!(s.idempotency_keys.len(), IDEMPOTENCY_KEYS_MAX);
        assert!(!s.knows_key(b"35"));
        assert!(s.knows_key(b"36"));
        assert!(s.knows_key(b"99"));
    }
}
