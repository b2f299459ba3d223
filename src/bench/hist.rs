//! A latency histogram with log-linear buckets: fixed memory whatever the
//! number of samples, and at most 1/[`SUB_BUCKETS`] relative error on any
//! quantile (the exact maximum is kept on the side).
//!
//! A value `v` in nanoseconds falls in the bucket of its highest set bit
//! (`e`) and of the next [`SUB_BITS`] bits below it, so every power-of-two
//! range is split into [`SUB_BUCKETS`] equal parts.

use std::time::Duration;

/// Bits below the highest one that pick the sub-bucket.
const SUB_BITS: u32 = 6;
/// Sub-buckets per power of two.
const SUB_BUCKETS: usize = 1 << SUB_BITS;
/// Power-of-two ranges covered: up to 2^40 ns, about 18 minutes.
const RANGES: usize = 41;
/// Values below this are recorded exactly, one bucket each.
const LINEAR_MAX: u64 = SUB_BUCKETS as u64;

/// Counts of samples per bucket.
pub struct Hist {
    counts: Vec<u64>,
    total: u64,
    max_ns: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist::new()
    }
}

impl Hist {
    /// An empty histogram (about 21 KiB, allocated once).
    pub fn new() -> Hist {
        Hist {
            counts: vec![0; RANGES * SUB_BUCKETS],
            total: 0,
            max_ns: 0,
        }
    }

    fn index(ns: u64) -> usize {
        if ns < LINEAR_MAX {
            return ns as usize;
        }
        let e = 63 - ns.leading_zeros(); // >= SUB_BITS
        let sub = (ns >> (e - SUB_BITS)) as usize & (SUB_BUCKETS - 1);
        let range = (e - SUB_BITS + 1) as usize;
        (range * SUB_BUCKETS + sub).min(RANGES * SUB_BUCKETS - 1)
    }

    /// The smallest value that falls in bucket `i`.
    fn low(i: usize) -> u64 {
        let range = i / SUB_BUCKETS;
        let sub = (i % SUB_BUCKETS) as u64;
        if range == 0 {
            return sub;
        }
        let e = range as u32 + SUB_BITS - 1;
        (1u64 << e) + (sub << (e - SUB_BITS))
    }

    /// Records one sample.
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Hist::index(ns)] += 1;
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest sample, exactly.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    /// The value at quantile `q` (0..=1): the middle of the bucket that
    /// holds the sample of that rank, never above the maximum.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let low = Hist::low(i);
                let high = if i + 1 < self.counts.len() {
                    Hist::low(i + 1)
                } else {
                    low
                };
                let mid = low + (high - low) / 2;
                return Duration::from_nanos(mid.min(self.max_ns));
            }
        }
        self.max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for ns in (0..5_000_000u64).step_by(997) {
            let i = Hist::index(ns);
            assert!(i >= last);
            last = i;
            let low = Hist::low(i);
            assert!(low <= ns, "{ns} below its bucket {low}");
            assert!(ns - low <= ns / SUB_BUCKETS as u64 + 1, "{ns} in {low}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Hist::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5).as_micros() as i64;
        let p99 = h.quantile(0.99).as_micros() as i64;
        assert!((p50 - 500).abs() <= 10, "{p50}");
        assert!((p99 - 990).abs() <= 20, "{p99}");
        assert_eq!(h.max(), Duration::from_micros(1000));
        assert_eq!(h.count(), 1000);
    }
}
