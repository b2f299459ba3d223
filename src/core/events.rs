//! A session's buffer of unacknowledged events, the oldest kept inline.
//!
//! A relayed message is buffered and acknowledged one at a time: a pair
//! that keeps polling holds one event, rarely more. Kept inline in the
//! session, that one is in a line the session's reader brings in anyway;
//! in a `VecDeque` it was behind a pointer, a second miss of its own on
//! each delivery and each acknowledgement (BENCHMARKS.md, the tenth
//! round). Events behind the first wait in a `VecDeque`, allocated only
//! when a second one is buffered.

use super::event::Event;
use std::collections::VecDeque;

/// Events in seq order: `head` is the oldest, `rest` the others. `rest`
/// holds events only while `head` does.
///
/// In C order: `head` first, where the session's layout expects it.
#[derive(Debug, Default)]
#[repr(C)]
pub struct Events {
    head: Option<Event>,
    rest: VecDeque<Event>,
}

impl Events {
    /// No events.
    pub fn new() -> Self {
        Events::default()
    }

    /// How many events are buffered.
    pub fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.rest.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// Appends the newest event.
    pub fn push_back(&mut self, event: Event) {
        match self.head {
            None => self.head = Some(event),
            Some(_) => self.rest.push_back(event),
        }
    }

    /// The oldest event.
    pub fn front(&self) -> Option<&Event> {
        self.head.as_ref()
    }

    /// The newest event.
    pub fn back(&self) -> Option<&Event> {
        self.rest.back().or(self.head.as_ref())
    }

    /// Takes the oldest event out; the next oldest takes its place.
    pub fn pop_front(&mut self) -> Option<Event> {
        let front = self.head.take();
        self.head = self.rest.pop_front();
        if self.rest.is_empty() && self.rest.capacity() > 0 && self.head.is_none() {
            // A burst is over: its memory goes back.
            self.rest = VecDeque::new();
        }
        front
    }

    /// The events, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Event> + Clone {
        self.head.iter().chain(self.rest.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::EventKind;

    fn event(seq: u64) -> Event {
        Event {
            seq,
            kind: EventKind::Message(seq.to_string().into()),
        }
    }

    fn seqs(events: &Events) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn events_come_out_in_the_order_they_went_in() {
        let mut events = Events::new();
        assert!(events.is_empty());
        assert_eq!((events.front(), events.back()), (None, None));
        assert_eq!(events.pop_front(), None);
        for seq in 1..=5 {
            events.push_back(event(seq));
            assert_eq!(events.len(), seq as usize);
            assert_eq!(events.back().map(|e| e.seq), Some(seq));
            assert_eq!(events.front().map(|e| e.seq), Some(1));
        }
        assert_eq!(seqs(&events), [1, 2, 3, 4, 5]);
        assert_eq!(events.pop_front(), Some(event(1)));
        assert_eq!(events.pop_front(), Some(event(2)));
        events.push_back(event(6));
        assert_eq!(seqs(&events), [3, 4, 5, 6]);
        assert_eq!(events.len(), 4);
        for seq in 3..=6 {
            assert_eq!(events.pop_front().map(|e| e.seq), Some(seq));
        }
        assert!(events.is_empty());
        assert_eq!(events.len(), 0);
        assert_eq!(events.pop_front(), None);
    }

    /// One event at a time, the usual relay, never allocates; a burst's
    /// memory is given back once it is acknowledged.
    #[test]
    fn one_event_at_a_time_stays_inline() {
        let mut events = Events::new();
        for seq in 1..=100 {
            events.push_back(event(seq));
            assert_eq!(events.rest.capacity(), 0, "allocated for one event");
            assert_eq!(events.pop_front().map(|e| e.seq), Some(seq));
        }
        for seq in 101..=200 {
            events.push_back(event(seq));
        }
        assert!(events.rest.capacity() >= 99);
        while events.pop_front().is_some() {}
        assert_eq!(events.rest.capacity(), 0, "a burst's memory is kept");
    }

    /// Interleaved pushes and pops, against a `VecDeque`.
    #[test]
    fn behaves_as_a_deque() {
        let mut events = Events::new();
        let mut model = VecDeque::new();
        let mut seq = 0;
        // A fixed pseudo-random walk of pushes and pops.
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if x % 3 == 0 {
                assert_eq!(events.pop_front(), model.pop_front());
            } else {
                seq += 1;
                events.push_back(event(seq));
                model.push_back(event(seq));
            }
            assert_eq!(events.len(), model.len());
            assert_eq!(events.is_empty(), model.is_empty());
            assert_eq!(events.front(), model.front());
            assert_eq!(events.back(), model.back());
        }
        assert!(events.iter().eq(model.iter()));
    }
}
