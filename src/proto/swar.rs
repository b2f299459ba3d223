//! Byte searches eight bytes at a time ("SIMD within a register"), for the
//! scans on every request and response: CR/LF in a request head, the bytes
//! a JSON string must escape. Plain safe integer arithmetic on `u64` words.

const ONES: u64 = 0x0101_0101_0101_0101;
/// The high bit of every byte: `word & HIGHS` marks the bytes ≥ 0x80.
pub const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Marks (high bit) the bytes of `word` equal to `b`. Exact for the lowest
/// marked byte; a byte above a marked one may be marked falsely (the
/// borrow), which a search for the first match never looks at.
pub fn eq(word: u64, b: u8) -> u64 {
    let x = word ^ (ONES * u64::from(b));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// Marks the bytes of `word` below `n` (`n` ≤ 128); exact for the lowest
/// marked byte, as [`eq`].
pub fn below(word: u64, n: u8) -> u64 {
    debug_assert!(n <= 128);
    word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS
}

/// Eight bytes as a little-endian word; `bytes` has eight.
#[inline]
pub fn word(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

/// The offset of the first byte of `bytes` that `byte` accepts; `marks`
/// is the same test on a little-endian word (see [`eq`], [`below`]).
#[inline]
pub fn find(bytes: &[u8], marks: impl Fn(u64) -> u64, byte: impl Fn(u8) -> bool) -> Option<usize> {
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let found = marks(word(chunk));
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| byte(b))
        .map(|i| offset + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length to 20, every position, with fillers around the
    /// searched values (just above and below them, high bytes, zero).
    fn agrees(marks: impl Fn(u64) -> u64 + Copy, byte: impl Fn(u8) -> bool + Copy, hits: &[u8]) {
        let fillers = [
            b'a', 0x0b, 0x0c, 0x0e, 0x09, 0x00, 0x1f, 0x20, 0x21, 0x5b, 0x5d, 0x80, 0xff, 0x8d,
        ];
        for len in 0..20 {
            for &fill in &fillers {
                for at in 0..=len {
                    for &mark in hits.iter().chain(&[fill]) {
                        let mut bytes = vec![fill; len];
                        if at < len {
                            bytes[at] = mark;
                        }
                        let plain = bytes.iter().position(|&b| byte(b));
                        assert_eq!(find(&bytes, marks, byte), plain, "{bytes:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn outside_visible_ascii() {
        agrees(
            |w| below(w, 0x21) | eq(w, 0x7f) | (w & HIGHS),
            |b| !(0x21..=0x7e).contains(&b),
            b"\x00\x20\x7f\x80\xff",
        );
    }

    #[test]
    fn cr_or_lf() {
        agrees(
            |w| eq(w, b'\r') | eq(w, b'\n'),
            |b| b == b'\r' || b == b'\n',
            b"\r\n",
        );
    }

    #[test]
    fn json_escapes() {
        agrees(
            |w| below(w, 0x20) | eq(w, b'"') | eq(w, b'\\'),
            |b| b < 0x20 || b == b'"' || b == b'\\',
            b"\"\\\x00\x1f\n",
        );
    }
}
