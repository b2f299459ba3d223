//! Reconnect delays: capped exponential backoff with "equal jitter".
//!
//! After the `n`-th failure in a row (a refused or timed-out dial, a failed
//! handshake, or the loss of an established connection) the ceiling is
//! `BACKOFF_BASE_MS * 2^(n-1)`, capped at [`BACKOFF_MS_MAX`], and the delay
//! is drawn uniformly from `[ceiling / 2, ceiling]`. Equal jitter rather
//! than full jitter (`[0, ceiling]`): the lower half keeps a node from
//! redialing a peer that refuses at once in a tight loop, while the upper
//! half spreads the redials of many nodes after a restart. A completed
//! handshake resets the count, so a connection lost after it was up is
//! retried after 50 to 100 ms.
//!
//! The random input is passed in, so the sequence is deterministic in tests.

/// Ceiling of the first delay.
pub const BACKOFF_BASE_MS: u64 = 100;
/// Largest ceiling: a peer that comes back is redialed within 5 s.
pub const BACKOFF_MS_MAX: u64 = 5_000;

const _: () = assert!(BACKOFF_BASE_MS > 0 && BACKOFF_BASE_MS <= BACKOFF_MS_MAX);

/// Consecutive failures toward one peer, and the delays they call for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// No failures yet.
    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// Records a failure and returns how long to wait before the next dial.
    /// `random` is a uniformly random u32 (from the OS source), which picks
    /// the delay within `[ceiling / 2, ceiling]`.
    pub fn next_delay_ms(&mut self, random: u32) -> u64 {
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.ceiling_ms();
        let half = ceiling / 2;
        // Scales `random` onto 0..=half without a modulo bias.
        let jitter = (u64::from(random) * (half + 1)) >> 32;
        ceiling - half + jitter
    }

    /// The ceiling for the current failure count.
    fn ceiling_ms(&self) -> u64 {
        // Any cap below 100 ms * 2^32 is reached by 32 doublings; stopping
        // the exponent there keeps the shift far from overflowing.
        let doublings = self.failures.saturating_sub(1).min(32);
        (BACKOFF_BASE_MS << doublings).min(BACKOFF_MS_MAX)
    }

    /// Forgets the failures, after a handshake completed.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut b = Backoff::new();
        let lows: Vec<u64> = (0..9).map(|_| b.next_delay_ms(0)).collect();
        assert_eq!(lows, [50, 100, 200, 400, 800, 1600, 2500, 2500, 2500]);
        let mut b = Backoff::new();
        let highs: Vec<u64> = (0..9).map(|_| b.next_delay_ms(u32::MAX)).collect();
        assert_eq!(highs, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    #[test]
    fn many_failures_stay_capped() {
        let mut b = Backoff::new();
        for i in 0..200u32 {
            let d = b.next_delay_ms(i.wrapping_mul(2_654_435_761));
            assert!((BACKOFF_BASE_MS / 2..=BACKOFF_MS_MAX).contains(&d), "{d}");
        }
        assert_eq!(b.failures(), 200);
        b.failures = u32::MAX;
        assert!(b.next_delay_ms(7) <= BACKOFF_MS_MAX);
    }

    #[test]
    fn jitter_spans_the_upper_half() {
        let mut seen = std::collections::BTreeSet::new();
        for r in [0, u32::MAX / 4, u32::MAX / 2, u32::MAX / 4 * 3, u32::MAX] {
            let mut b = Backoff::new();
            for _ in 0..10 {
                b.next_delay_ms(0);
            }
            seen.insert(b.next_delay_ms(r));
        }
        assert_eq!(seen.len(), 5);
        assert!(seen.iter().all(|&d| (2500..=5000).contains(&d)));
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new();
        for _ in 0..5 {
            b.next_delay_ms(0);
        }
        b.reset();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.next_delay_ms(u32::MAX), BACKOFF_BASE_MS);
    }
}
