//! Deadlines of sessions, ordered by time.
//!
//! Each session has at most one entry: its poll's timeout while a poll
//! waits, else its expiry. Entries may run early (a session touched after
//! its entry was made); the owner checks the session's real deadline when an
//! entry fires and re-arms it, so touching a session costs nothing here.

use super::Millis;
use std::collections::BTreeSet;

/// A set of `(deadline, slab key)`.
#[derive(Debug, Default)]
pub struct Timers {
    set: BTreeSet<(Millis, u32)>,
}

impl Timers {
    /// Adds an entry.
    pub fn insert(&mut self, at: Millis, key: u32) {
        self.set.insert((at, key));
    }

    /// Removes an entry, if present.
    pub fn remove(&mut self, at: Millis, key: u32) {
        self.set.remove(&(at, key));
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Millis> {
        self.set.first().map(|&(at, _)| at)
    }

    /// Takes the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Millis) -> Option<(Millis, u32)> {
        match self.set.first() {
            Some(&(at, _)) if at <= now => self.set.pop_first(),
            _ => None,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_order_and_only_when_due() {
        let mut t = Timers::default();
        t.insert(30, 1);
        t.insert(10, 2);
        t.insert(10, 3);
        assert_eq!(t.next(), Some(10));
        assert_eq!(t.pop_due(9), None);
        assert_eq!(t.pop_due(10), Some((10, 2)));
        assert_eq!(t.pop_due(10), Some((10, 3)));
        assert_eq!(t.pop_due(29), None);
        t.remove(30, 1);
        assert!(t.is_empty());
    }
}
