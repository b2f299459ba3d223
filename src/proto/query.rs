//! The query string of a long poll: `after` and `timeout_ms`.

use super::cut;
use crate::limits::POLL_TIMEOUT_MS_MAX;

/// What a poll asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollQuery {
    /// The highest `seq` the client has seen (0 when absent).
    pub after: u64,
    /// The wait in milliseconds, capped at [`POLL_TIMEOUT_MS_MAX`]; `None`
    /// means the server's default.
    pub timeout_ms: Option<u64>,
}

/// Parses a poll's query string (without the `?`). Unknown parameters are
/// ignored, so that cache-busting parameters browsers add do no harm; a
/// known parameter that is repeated, empty or not a plain decimal number is
/// an error. Percent-escapes are decoded first (`timeout_ms=%31` is
/// `timeout_ms=1`, RFC 3986 §6.2.2.2); a broken escape in a known
/// parameter's value is an error.
pub fn parse_poll(query: &[u8]) -> Result<PollQuery, &'static str> {
    // The query every long poll of a running client sends, `after=N` or
    // `after=N&timeout_ms=T`, read directly (the general loop below reads
    // it the same way at several times the cost; a test and the fuzz
    // target `poll_query` compare the two).
    let usual = query.strip_prefix(b"after=").and_then(|rest| {
        let (after, rest) = leading_number(rest)?;
        let timeout_ms = match rest {
            b"" => None,
            _ => match leading_number(rest.strip_prefix(b"&timeout_ms=")?)? {
                (t, b"") => Some(t.min(POLL_TIMEOUT_MS_MAX)),
                _ => return None,
            },
        };
        Some(PollQuery { after, timeout_ms })
    });
    match usual {
        Some(q) => Ok(q),
        None => parse_general(query),
    }
}

/// The decimal number at the start of `s` (at least one digit; saturating
/// as [`parse_number`]) and the bytes after it.
fn leading_number(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let (number, rest) = s.split_at(digits);
    Some((parse_number(number.iter().copied().map(Some))?, rest))
}

/// [`parse_poll`] of any query.
fn parse_general(query: &[u8]) -> Result<PollQuery, &'static str> {
    const NOT_A_NUMBER: &str = "after and timeout_ms take decimal numbers";
    let mut after = None;
    let mut timeout_ms = None;
    let mut rest = Some(query);
    while let Some(q) = rest {
        let (pair, next) = cut(q, b'&').map_or((q, None), |(p, n)| (p, Some(n)));
        rest = next;
        if pair.is_empty() {
            continue;
        }
        let (name, value) = cut(pair, b'=').unwrap_or((pair, b""));
        // Plain names first; escapes are decoded only when there are some.
        let is = |known: &[u8]| decoded(name).eq(known.iter().copied().map(Some));
        let slot = match name {
            b"after" => &mut after,
            b"timeout_ms" => &mut timeout_ms,
            _ if !name.contains(&b'%') => continue,
            _ if is(b"after") => &mut after,
            _ if is(b"timeout_ms") => &mut timeout_ms,
            _ => continue,
        };
        if slot.is_some() {
            return Err("a query parameter is repeated");
        }
        let number = parse_number(value.iter().copied().map(Some)).or_else(|| {
            value
                .contains(&b'%')
                .then(|| parse_number(decoded(value)))
                .flatten()
        });
        *slot = Some(number.ok_or(NOT_A_NUMBER)?);
    }
    Ok(PollQuery {
        after: after.unwrap_or(0),
        timeout_ms: timeout_ms.map(|t| t.min(POLL_TIMEOUT_MS_MAX)),
    })
}

/// The bytes of `s` with `%XX` escapes decoded; `None` for a `%` not
/// followed by two hex digits.
fn decoded(s: &[u8]) -> impl Iterator<Item = Option<u8>> + '_ {
    let mut bytes = s.iter().copied();
    std::iter::from_fn(move || {
        let b = bytes.next()?;
        if b != b'%' {
            return Some(Some(b));
        }
        let hex = |c: Option<u8>| char::from(c?).to_digit(16);
        Some(match (hex(bytes.next()), hex(bytes.next())) {
            (Some(hi), Some(lo)) => u8::try_from(hi * 16 + lo).ok(),
            _ => None,
        })
    })
}

/// Digits only; values past u64 saturate, which for `timeout_ms` is capped
/// and for `after` is higher than any seq, so either way the answer is right.
fn parse_number(bytes: impl Iterator<Item = Option<u8>>) -> Option<u64> {
    let mut n: Option<u64> = None;
    for b in bytes {
        let d = b.filter(u8::is_ascii_digit)?;
        n = Some(
            n.unwrap_or(0)
                .saturating_mul(10)
                .saturating_add(u64::from(d - b'0')),
        );
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_queries() {
        let q = |after, timeout_ms| Ok(PollQuery { after, timeout_ms });
        assert_eq!(parse_poll(b""), q(0, None));
        assert_eq!(parse_poll(b"after=5"), q(5, None));
        assert_eq!(parse_poll(b"after=5&timeout_ms=0"), q(5, Some(0)));
        assert_eq!(parse_poll(b"timeout_ms=999999"), q(0, Some(120_000)));
        assert_eq!(parse_poll(b"_=123&after=2&x"), q(2, None));
        assert_eq!(parse_poll(b"after=007"), q(7, None));
        // Percent-escapes of unreserved characters mean those characters.
        assert_eq!(parse_poll(b"timeout_ms=%31%30"), q(0, Some(10)));
        assert_eq!(parse_poll(b"af%74er=3&timeout%5fms=0"), q(3, Some(0)));
        assert_eq!(parse_poll(b"x=%zz&after=1"), q(1, None));
        assert_eq!(parse_poll(b"&&after=1&"), q(1, None));
        assert_eq!(
            parse_poll(b"after=99999999999999999999999"),
            q(u64::MAX, None)
        );
    }

    /// The `after=N` shortcut answers exactly as the general reading.
    #[test]
    fn the_usual_query_reads_as_any_other() {
        for q in [
            "after=0",
            "after=7",
            "after=007",
            "after=18446744073709551615",
            "after=18446744073709551616",
            "after=99999999999999999999999",
            "after=",
            "after=1&timeout_ms=5",
            "after=12&timeout_ms=30000",
            "after=0&timeout_ms=999999999",
            "after=0&timeout_ms=99999999999999999999999",
            "after=1&timeout_ms=",
            "after=1&timeout_ms=5&",
            "after=1&timeout_ms=5x",
            "after=1&timeout_ms=5&after=2",
            "after=1&timeout_ms=%35",
            "after=1&timeout_mss=5",
            "after=1&",
            "after=1&after=2",
            "after=1x",
            "after=%31",
            "after=+1",
            "after= 1",
        ] {
            assert_eq!(parse_poll(q.as_bytes()), parse_general(q.as_bytes()), "{q}");
        }
    }

    #[test]
    fn bad_queries() {
        for bad in [
            "after=",
            "after",
            "after=-1",
            "after=+1",
            "after=1.5",
            "after=1&after=2",
            "timeout_ms=abc",
            "timeout_ms=%3",
            "timeout_ms=%zz1",
            "timeout_ms=%2B1",
            "after=%20",
            "after= 1",
            "af%74er=1&after=2",
        ] {
            assert!(parse_poll(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
