//! Milliseconds since a start, rounded up, from the loop's clock readings,
//! for the core's deadlines: computed once per millisecond of readings,
//! not once per request (the loop reads the clock once a turn and once a
//! read, and at full load a millisecond sees dozens of requests; the
//! subtraction and division were about 1 % of a relayed message's
//! instructions).

use crate::core::Millis;
use std::cell::Cell;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct MsClock {
    start: Instant,
    /// The last answer and the readings it stands for, `(lo, hi]`.
    last: Cell<(Instant, Instant, Millis)>,
}

impl MsClock {
    pub fn new(start: Instant) -> MsClock {
        MsClock {
            start,
            last: Cell::new((start, start, 0)),
        }
    }

    /// The reading `ms` milliseconds after the start: when a deadline of
    /// the core's falls due.
    pub fn instant(&self, ms: Millis) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// Milliseconds from the start to `now`, rounded up: a deadline
    /// `ms(now) + T` is then never before T after `now` (rounded down, a
    /// poll's timeout could end up to a millisecond early, as a review
    /// measured). A reading before the start is 0.
    pub fn ms(&self, now: Instant) -> Millis {
        let (lo, hi, ms) = self.last.get();
        if lo < now && now <= hi {
            return ms;
        }
        let since = now.saturating_duration_since(self.start);
        let part = u64::from(since.subsec_nanos() % 1_000_000 != 0);
        let ms = super::millis(since).saturating_add(part);
        // Every reading in (start + ms - 1 ms, start + ms] rounds up to ms.
        let hi = self.start.checked_add(Duration::from_millis(ms));
        let lo = hi.and_then(|hi| hi.checked_sub(Duration::from_millis(1)));
        if let (Some(lo), Some(hi)) = (lo, hi) {
            self.last.set((lo, hi, ms));
        }
        ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: no memory, the rounding spelled out.
    fn ceil_ms(start: Instant, now: Instant) -> Millis {
        let ns = now.saturating_duration_since(start).as_nanos();
        u64::try_from(ns.div_ceil(1_000_000)).unwrap()
    }

    /// Readings forwards, backwards, on and beside millisecond boundaries,
    /// in the same millisecond again and again: the remembered answer is
    /// always the computed one.
    #[test]
    fn remembers_only_what_rounds_the_same() {
        let start = Instant::now();
        let clock = MsClock::new(start);
        let ns = |n: u64| start + Duration::from_nanos(n);
        let mut readings = vec![start, start, ns(1), ns(1), ns(999_999), ns(1_000_000)];
        for ms in [1u64, 2, 3, 17, 1000] {
            let at = ms * 1_000_000;
            readings.extend([ns(at - 1), ns(at), ns(at + 1), ns(at), ns(at - 1)]);
        }
        readings.extend([ns(5), ns(2_000_000), ns(1_999_999), ns(2_000_001), ns(0)]);
        if let Some(before) = start.checked_sub(Duration::from_millis(3)) {
            readings.push(before);
        }
        readings.extend([ns(3_000_000_000), ns(2_999_999_999)]);
        for now in readings {
            assert_eq!(clock.ms(now), ceil_ms(start, now), "{now:?}");
        }
    }

    /// A deadline's reading is the one its milliseconds stand for.
    #[test]
    fn a_deadline_reads_back_as_its_milliseconds() {
        let start = Instant::now();
        let clock = MsClock::new(start);
        for ms in [0, 1, 2, 999, 1000, 86_400_000] {
            assert_eq!(clock.instant(ms), start + Duration::from_millis(ms));
            assert_eq!(clock.ms(clock.instant(ms)), ms);
        }
    }
}
