//! One session's state: its event buffer, cursor, waiting poll, link and
//! idempotency keys.

use super::event::{Event, EventKind};
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

/// A session handler.
///
/// Laid out by hand (`repr(C)`), a cache line at a time: a relayed message
/// reads two sessions that are rarely in cache (one of hundreds of pairs),
/// and with the fields where the compiler puts them it touched every line
/// of both. What a send, a delivery and a poll read comes first, in the
/// three lines the alignment gives it (BENCHMARKS.md, the sixth round).
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
    // Line 1: the waiting poll and the buffer, the side and the flags.
    /// The waiting poll, if any (at most one, API.md §2).
    pub poll: Option<WaitingPoll<W>>,
    /// Events not yet acknowledged, in seq order.
    pub events: VecDeque<Event>,
    /// Side.
    pub side: Side,
    /// Its join is not answered yet (lookups are out): it may still lose
    /// its side to a better claim, and end unread.
    pub joining: bool,
    /// A link was refused for want of room for its events: once the
    /// client acknowledges some, the session looks for its peer again.
    pub link_refused: bool,
    // Line 2: the link and the pair id (up to 32 bytes of it).
    /// The linked peer handler; `Some` means the peer is online.
    pub peer: Option<Addr>,
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
            events: VecDeque::new(),
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

    /// The lines the layout promises, with the waiter the server uses (a
    /// weak pointer and a sequence number): authentication, a delivery's
    /// counters and the peer's address in line 0; the waiting poll and the
    /// buffer in line 1; the side, the link and the first 32 bytes of the
    /// pair id in line 2.
    #[test]
    fn what_a_relayed_message_reads_is_in_the_first_three_lines() {
        use std::mem::{offset_of, size_of};
        type S = Session<super::super::node::Waiter<(std::rc::Weak<()>, u64)>>;
        assert_eq!(offset_of!(S, secret), 0);
        assert!(offset_of!(S, peer_at) + size_of::<usize>() <= 64);
        assert!(offset_of!(S, poll) >= 64);
        assert!(offset_of!(S, events) + size_of::<VecDeque<Event>>() <= 128);
        assert!(offset_of!(S, side) >= 128);
        assert!(offset_of!(S, pair) + 32 <= 192);
        assert_eq!(size_of::<S>(), 6 * 64);
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

    /// The fields a relayed message reads stay in the first three cache
    /// lines (see [`Session`]), with the waiter the node keeps for a
    /// driver's one-pointer waiter.
    #[test]
    fn what_a_message_reads_is_in_three_cache_lines() {
        use std::mem::{offset_of, size_of};
        type S = Session<super::super::node::Waiter<std::rc::Rc<()>>>;
        let line = |offset: usize| offset / 64;
        assert_eq!(std::mem::align_of::<S>(), 64);
        let line0 = [
            offset_of!(S, secret),
            offset_of!(S, gen),
            offset_of!(S, data_bytes),
            offset_of!(S, last_seq),
            offset_of!(S, deadline),
            offset_of!(S, timer_at) + size_of::<Millis>() - 1,
        ];
        assert!(line0.iter().all(|&o| line(o) == 0), "{line0:?}");
        let line1 = [
            offset_of!(S, poll),
            offset_of!(S, events),
            offset_of!(S, side),
            offset_of!(S, joining),
            offset_of!(S, link_refused),
        ];
        assert!(line1.iter().all(|&o| line(o) == 1), "{line1:?}");
        assert_eq!(
            line(offset_of!(S, events) + size_of::<VecDeque<Event>>() - 1),
            1
        );
        assert_eq!(line(offset_of!(S, peer)), 2);
        // The pair id's length and its first 32 bytes.
        assert_eq!(line(offset_of!(S, pair)), 2);
        assert!(offset_of!(S, pair) + 8 + 32 <= 3 * 64);
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
