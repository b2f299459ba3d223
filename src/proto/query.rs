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
/// an error.
pub fn parse_poll(query: &str) -> Result<PollQuery, &'static str> {
    let mut after = None;
    let mut timeout_ms = None;
    let mut rest = Some(query);
    while let Some(q) = rest {
        let (pair, next) = cut(q, b'&').map_or((q, None), |(p, n)| (p, Some(n)));
        rest = next;
        if pair.is_empty() {
            continue;
        }
        let (name, value) = cut(pair, b'=').unwrap_or((pair, ""));
        let slot = match name {
            "after" => &mut after,
            "timeout_ms" => &mut timeout_ms,
            _ => continue,
        };
        if slot.is_some() {
            return Err("a query parameter is repeated");
        }
        *slot = Some(parse_number(value).ok_or("after and timeout_ms take decimal numbers")?);
    }
    Ok(PollQuery {
        after: after.unwrap_or(0),
        timeout_ms: timeout_ms.map(|t| t.min(POLL_TIMEOUT_MS_MAX)),
    })
}

/// Digits only; values past u64 saturate, which for `timeout_ms` is capped
/// and for `after` is higher than any seq, so either way the answer is right.
fn parse_number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_queries() {
        let q = |after, timeout_ms| Ok(PollQuery { after, timeout_ms });
        assert_eq!(parse_poll(""), q(0, None));
        assert_eq!(parse_poll("after=5"), q(5, None));
        assert_eq!(parse_poll("after=5&timeout_ms=0"), q(5, Some(0)));
        assert_eq!(parse_poll("timeout_ms=999999"), q(0, Some(120_000)));
        assert_eq!(parse_poll("_=123&after=2&x"), q(2, None));
        assert_eq!(parse_poll("after=007"), q(7, None));
        assert_eq!(parse_poll("&&after=1&"), q(1, None));
        assert_eq!(
            parse_poll("after=99999999999999999999999"),
            q(u64::MAX, None)
        );
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
            "timeout_ms=%31",
            "after= 1",
        ] {
            assert!(parse_poll(bad).is_err(), "{bad}");
        }
    }
}
