//! The node-wide budget for what connections hold of requests not yet
//! whole: without it, every connection may hold a request head and a body
//! being received, and `--max-connections` of them (10000 by default)
//! holding a 64 KiB body each is more memory than a small host has (the
//! systemd unit's `MemoryMax=256M`).
//!
//! A connection's read buffer up to [`FREE_BYTES`] is not counted (a
//! usual request fits); beyond that its capacity is charged here. A
//! connection whose buffer would take the node past the budget gets
//! `503 overloaded` and is closed; a waiting poll's connection stops
//! reading pipelined bytes instead. A chunked body's decoded copy is not
//! counted: it is never larger than the raw bytes that are. Charges are
//! by buffer capacity, which growth by doubling can make up to twice the
//! bytes held, so the budget holds at least two of the largest raw
//! requests (more of the usual ones) at once.

use std::cell::Cell;

/// Capacity of a connection's read buffer that is not charged.
pub const FREE_BYTES: usize = 4 * 1024;

/// The least budget a node has, whatever `--max-message-bytes`.
pub const BUDGET_BYTES_MIN: usize = 32 << 20;

/// How many of the largest possible requests the budget is sized for
/// (capacities, not bytes: see the module's notes).
pub const LARGEST_REQUESTS_MIN: usize = 4;

/// Bytes charged by all connections, against a maximum.
#[derive(Debug)]
pub struct ReadBudget {
    used: Cell<usize>,
    max: Cell<usize>,
}

impl ReadBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> ReadBudget {
        ReadBudget {
            used: Cell::new(0),
            max: Cell::new(max),
        }
    }

    /// Sets what one connection holds, `charged`, to what a buffer of
    /// `capacity` bytes costs. Shrinking always succeeds; the return value
    /// says whether the node is still within its budget.
    pub fn charge(&self, charged: &mut usize, capacity: usize) -> bool {
        let want = capacity.saturating_sub(FREE_BYTES);
        let used = self
            .used
            .get()
            .saturating_sub(*charged)
            .saturating_add(want);
        self.used.set(used);
        *charged = want;
        used <= self.max.get()
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// Changes the maximum (tests).
    #[cfg(test)]
    pub fn set_max(&self, max: usize) {
        self.max.set(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_follow_the_buffers_and_the_maximum_is_kept() {
        let budget = ReadBudget::new(100_000);
        let (mut a, mut b) = (0, 0);
        assert!(budget.charge(&mut a, 1000), "under the free part");
        assert_eq!((a, budget.used()), (0, 0));
        assert!(budget.charge(&mut a, FREE_BYTES + 60_000));
        assert_eq!(budget.used(), 60_000);
        assert!(
            !budget.charge(&mut b, FREE_BYTES + 50_000),
            "past the budget"
        );
        assert_eq!(budget.used(), 110_000, "what is held is counted");
        assert!(budget.charge(&mut b, 0), "giving back always works");
        assert!(budget.charge(&mut a, FREE_BYTES + 90_000));
        assert!(budget.charge(&mut a, 0));
        assert_eq!((a, b, budget.used()), (0, 0, 0));
    }
}
