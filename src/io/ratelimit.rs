//! Log lines that a peer or a client can cause at will are let through at
//! most once per period, with a count of the ones held back, so that a
//! flood cannot fill the journal (and push out the lines that matter).

use std::time::{Duration, Instant};

/// One kind of line, let through at most once per period.
#[derive(Debug, Default)]
pub struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    /// `Some(lines held back since the last one)` when a line may be
    /// logged at `now`; `None` (and one more held back) otherwise.
    pub fn allow_at(&mut self, now: Instant, every: Duration) -> Option<u64> {
        if self.last.is_some_and(|at| now.duration_since(at) < every) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }

    /// [`RateLimited::allow_at`] now.
    pub fn allow(&mut self, every: Duration) -> Option<u64> {
        self.allow_at(Instant::now(), every)
    }
}

/// `" (N more since the last such line)"`, or nothing for none.
pub fn held_back(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more since the last such line)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_and_a_count_of_the_rest() {
        let mut r = RateLimited::default();
        let t = Instant::now();
        let every = Duration::from_secs(10);
        assert_eq!(r.allow_at(t, every), Some(0));
        assert_eq!(r.allow_at(t + Duration::from_secs(1), every), None);
        assert_eq!(r.allow_at(t + Duration::from_secs(9), every), None);
        assert_eq!(r.allow_at(t + Duration::from_secs(10), every), Some(2));
        assert_eq!(r.allow_at(t + Duration::from_secs(21), every), Some(0));
        assert_eq!(held_back(0), "");
        assert_eq!(held_back(2), " (2 more since the last such line)");
    }
}
