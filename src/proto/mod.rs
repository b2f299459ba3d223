//! Sans-IO protocol code: bytes in, values out (and back).

pub mod http;
pub mod ids;
pub mod json;
pub mod query;
pub mod response;
pub mod swar;

/// Splits `s` at the first `sep` (an ASCII byte), like `str::split_once`
/// with a char, but as a plain byte loop: the request targets and queries
/// this cuts are a few dozen bytes, where the general searcher's set-up
/// costs more than the search (BENCHMARKS.md, profile).
pub fn cut(s: &str, sep: u8) -> Option<(&str, &str)> {
    debug_assert!(sep.is_ascii());
    let i = s.bytes().position(|b| b == sep)?;
    // An ASCII byte is always a char boundary, on both sides.
    Some((s.get(..i)?, s.get(i + 1..)?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cut_is_split_once() {
        for (s, sep) in [
            ("a/b/c", b'/'),
            ("abc", b'/'),
            ("/", b'/'),
            ("", b'?'),
            ("é?ü", b'?'),
        ] {
            assert_eq!(super::cut(s, sep), s.split_once(char::from(sep)), "{s:?}");
        }
    }
}
