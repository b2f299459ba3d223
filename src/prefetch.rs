//! Asking the CPU to start loading memory that is about to be used: a
//! hint, which reads nothing, so the sans-IO core may give it too.

/// Cache lines of one object prefetched at most.
const LINES_MAX: usize = 12;
const LINE: usize = 64;

/// Starts loading the cache lines of `bytes` bytes from `addr` into the
/// data cache, without waiting for them. A hint only: nothing is read, and
/// an address that is no longer valid costs nothing but the hint.
#[inline]
pub fn prefetch(addr: usize, bytes: usize) {
    let (first, lines) = lines(addr, bytes);
    for i in 0..lines {
        line(first.wrapping_add(i * LINE));
    }
}

/// Starts loading the `N` cache lines from the one `addr` is in: for an
/// object whose size and alignment are known (a session: 64-aligned, its
/// first four lines), without [`prefetch`]'s count of the lines a range
/// touches, a few instructions a line.
#[inline]
pub fn prefetch_lines<const N: usize>(addr: usize) {
    let first = addr & !(LINE - 1);
    for i in 0..N.min(LINES_MAX) {
        line(first.wrapping_add(i * LINE));
    }
}

/// The first cache line of `bytes` bytes from `addr`, and how many lines
/// they touch (an object not aligned to a line may touch one more than its
/// size says), at most [`LINES_MAX`].
#[inline]
fn lines(addr: usize, bytes: usize) -> (usize, usize) {
    let first = addr & !(LINE - 1);
    let end = addr.saturating_add(bytes);
    let lines = (end - first).div_ceil(LINE);
    (first, if bytes == 0 { 0 } else { lines.min(LINES_MAX) })
}

#[inline(always)]
#[allow(unsafe_code)]
fn line(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` reads nothing and never faults, whatever the
    // address (Intel SDM vol. 2, PREFETCHh; AMD APM vol. 3); the SSE it
    // needs is part of the x86_64 baseline.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(addr as *const i8)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_an_object_touches_is_asked_for() {
        assert_eq!(lines(128, 64), (128, 1));
        assert_eq!(lines(130, 64), (128, 2), "unaligned: two lines");
        assert_eq!(lines(130, 1), (128, 1));
        assert_eq!(lines(191, 2), (128, 2));
        assert_eq!(lines(64, 192), (64, 3));
        assert_eq!(lines(70, 0), (64, 0));
        assert_eq!(lines(0, 100_000), (0, LINES_MAX));
        assert_eq!(lines(usize::MAX - 10, 1000).1, 1);
    }

    /// A hint reads nothing: no address, valid or not, can fault.
    #[test]
    fn any_address_is_only_a_hint() {
        let v = vec![7u8; 1000];
        prefetch(v.as_ptr() as usize, v.len());
        prefetch(0, 64);
        prefetch(usize::MAX - 10, 1000);
        prefetch(1, 0);
        prefetch_lines::<3>(v.as_ptr() as usize);
        prefetch_lines::<3>(usize::MAX - 10);
        prefetch_lines::<100>(0);
        drop(v);
    }
}
