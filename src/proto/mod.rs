//! Sans-IO protocol code: bytes in, values out (and back).

pub mod field_names;
pub mod http;
pub mod ids;
pub mod json;
pub mod query;
pub mod response;
pub mod swar;

/// Splits `s` at the first `sep`, like `str::split_once` with a char, but
/// as an eight-bytes-a-time search: the request targets and queries this
/// cuts are a few dozen bytes, where the general searcher's set-up costs
/// more than the search, and a byte loop over the whole target (the `?`
/// search) was 2.5 % of a relay's user time (BENCHMARKS.md, profile).
pub fn cut(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = swar::find(s, |w| swar::eq(w, sep), |b| b == sep)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// A byte class as a lookup table: the ASCII letters and digits, and the
/// bytes of `extra`. Built at compile time; looked up on hot paths.
pub const fn alnum_and(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_tables() {
        let t = super::alnum_and(b"-_");
        for b in 0..=255u8 {
            assert_eq!(
                t[usize::from(b)],
                b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
            );
        }
    }

    #[test]
    fn cut_is_split_once() {
        for (s, sep) in [
            ("a/b/c", b'/'),
            ("abc", b'/'),
            ("/", b'/'),
            ("", b'?'),
            ("é?ü", b'?'),
            ("/v1/pairs/0123456789abcdefghijkl/a/events?after=1", b'?'),
            ("/v1/pairs/0123456789abcdefghijkl/a/messages", b'?'),
            ("0123456?89?", b'?'),
            ("01234567?", b'?'),
            ("012345678", b'8'),
        ] {
            let want = s.split_once(char::from(sep));
            let want = want.map(|(a, b)| (a.as_bytes(), b.as_bytes()));
            assert_eq!(super::cut(s.as_bytes(), sep), want, "{s:?}");
        }
    }
}
