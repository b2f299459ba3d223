//! Fresh secrets from the OS random source, fetched in batches so that a
//! join costs no system call of its own most of the time.

use crate::limits::{RANDOM_POOL_BYTES, SECRET_BYTES};

/// A buffer of OS randomness, handed out 16 bytes at a time, each byte once.
#[derive(Debug)]
pub struct RandomPool {
    bytes: Box<[u8; RANDOM_POOL_BYTES]>,
    used: usize,
}

impl Default for RandomPool {
    fn default() -> Self {
        RandomPool {
            bytes: Box::new([0; RANDOM_POOL_BYTES]),
            used: RANDOM_POOL_BYTES,
        }
    }
}

impl RandomPool {
    /// 128 fresh random bits, or `None` if the OS source failed.
    pub fn secret(&mut self) -> Option<[u8; SECRET_BYTES]> {
        if self.used == RANDOM_POOL_BYTES {
            if let Err(e) = getrandom::fill(&mut self.bytes[..]) {
                log::error!("the OS random source failed: {e}");
                return None;
            }
            self.used = 0;
        }
        let mut out = [0; SECRET_BYTES];
        out.copy_from_slice(&self.bytes[self.used..self.used + SECRET_BYTES]);
        // Wipe what was handed out, so no secret stays here twice.
        self.bytes[self.used..self.used + SECRET_BYTES].fill(0);
        self.used += SECRET_BYTES;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_distinct_across_refills() {
        let mut pool = RandomPool::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(3 * RANDOM_POOL_BYTES / SECRET_BYTES) {
            assert!(seen.insert(pool.secret().unwrap()));
        }
    }
}
