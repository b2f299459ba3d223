//! The request header fields the framer reads, known by name: from a name
//! already split off (`httparse`'s lines, or a name the fast path could
//! not match), or straight from the start of a field line, where the
//! usual names are matched a word (eight bytes) at a time instead of being
//! scanned for their end byte by byte and then compared.

use super::swar::word;

/// A field the framer reads; every other name is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// `Content-Length`
    ContentLength,
    /// `Transfer-Encoding`
    TransferEncoding,
    /// `Connection`
    Connection,
    /// `Expect`
    Expect,
    /// `Authorization`
    Authorization,
    /// `Idempotency-Key`
    IdempotencyKey,
    /// `Host`
    Host,
}

impl Known {
    /// The field named `name`, a token (both callers check that), in any
    /// case. The names differ in length: one comparison a field, and none
    /// for the others (`Content-Type`, ...).
    pub fn of(name: &[u8]) -> Option<Known> {
        let is = |known: &[u8]| is_name(name, known);
        match name.len() {
            14 if is(b"content-length") => Some(Known::ContentLength),
            17 if is(b"transfer-encoding") => Some(Known::TransferEncoding),
            10 if is(b"connection") => Some(Known::Connection),
            6 if is(b"expect") => Some(Known::Expect),
            13 if is(b"authorization") => Some(Known::Authorization),
            15 if is(b"idempotency-key") => Some(Known::IdempotencyKey),
            4 if is(b"host") => Some(Known::Host),
            _ => None,
        }
    }

    /// The field a line starting `line` names, and its name's length, when
    /// the line starts with one of the usual names and its colon (`Host:`,
    /// `Authorization:`, `Content-Length:`, `Connection:`,
    /// `Idempotency-Key:`, in any case) and at least 16 bytes are there to
    /// look at. `None` says nothing: the caller then finds the name's end
    /// and asks [`Known::of`], which gives the same answer for every line
    /// this matches (a test checks).
    pub fn at_line_start(line: &[u8]) -> Option<(Known, usize)> {
        let words = line.get(..16)?;
        let (w0, w1) = words.split_at(8);
        let w = [word(w0), word(w1)];
        let candidates: &[&Pattern] = match words.first()? | 0x20 {
            b'h' => &[&HOST],
            b'a' => &[&AUTHORIZATION],
            b'c' => &[&CONTENT_LENGTH, &CONNECTION],
            b'i' => &[&IDEMPOTENCY_KEY],
            _ => return None,
        };
        candidates
            .iter()
            .find(|p| p.matches(w))
            .map(|p| (p.known, p.name_bytes))
    }
}

/// Whether the field name `name`, a token, is `lower` in any case. `lower`
/// is lowercase letters and `-`: for those, setting the 0x20 bit of a
/// token byte gives `lower`'s byte exactly when the byte is that letter in
/// either case, or `-` (the only other byte that maps to `-` is CR, not a
/// token byte). One OR and one comparison a byte, where
/// `eq_ignore_ascii_case` folds both sides.
pub fn is_name(name: &[u8], lower: &[u8]) -> bool {
    debug_assert!(lower.iter().all(|&b| b.is_ascii_lowercase() || b == b'-'));
    name.len() == lower.len() && name.iter().zip(lower).all(|(&b, &l)| b | 0x20 == l)
}

/// A name and its colon as two words to compare a line's first 16 bytes
/// with: only the bytes of `name:` count (`mask`), and a letter's 0x20 bit
/// is set before comparing (`fold`), which makes it match in either case
/// and nothing else match it (the only bytes that give a lowercase letter
/// with that bit set are the letter and its capital). Every other byte,
/// `-` and `:` included, must be exactly itself.
struct Pattern {
    want: [u64; 2],
    fold: [u64; 2],
    mask: [u64; 2],
    known: Known,
    name_bytes: usize,
}

impl Pattern {
    const fn new(name_colon: &[u8], known: Known) -> Pattern {
        assert!(name_colon.len() <= 16 && name_colon[name_colon.len() - 1] == b':');
        let mut want = [0u64; 2];
        let mut fold = [0u64; 2];
        let mut mask = [0u64; 2];
        let mut i = 0;
        while i < name_colon.len() {
            let b = name_colon[i];
            assert!(b.is_ascii_lowercase() || b == b'-' || b == b':');
            let shift = (i % 8) * 8;
            want[i / 8] |= (b as u64) << shift;
            mask[i / 8] |= 0xff << shift;
            if b.is_ascii_lowercase() {
                fold[i / 8] |= 0x20 << shift;
            }
            i += 1;
        }
        Pattern {
            want,
            fold,
            mask,
            known,
            name_bytes: name_colon.len() - 1,
        }
    }

    fn matches(&self, w: [u64; 2]) -> bool {
        ((w[0] | self.fold[0]) & self.mask[0]) == self.want[0]
            && ((w[1] | self.fold[1]) & self.mask[1]) == self.want[1]
    }
}

const HOST: Pattern = Pattern::new(b"host:", Known::Host);
const AUTHORIZATION: Pattern = Pattern::new(b"authorization:", Known::Authorization);
const CONTENT_LENGTH: Pattern = Pattern::new(b"content-length:", Known::ContentLength);
const CONNECTION: Pattern = Pattern::new(b"connection:", Known::Connection);
const IDEMPOTENCY_KEY: Pattern = Pattern::new(b"idempotency-key:", Known::IdempotencyKey);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::is_tchar;

    /// What the slow way says of a line: the name is the run of token
    /// bytes, a colon must follow, then [`Known::of`].
    fn reference(line: &[u8]) -> Option<(Known, usize)> {
        let n = line.iter().take_while(|&&b| is_tchar(b)).count();
        if n == 0 || line.get(n) != Some(&b':') {
            return None;
        }
        Known::of(&line[..n]).map(|k| (k, n))
    }

    fn agrees(line: &[u8]) {
        if let Some(fast) = Known::at_line_start(line) {
            assert_eq!(Some(fast), reference(line), "{:?}", line.escape_ascii());
        }
    }

    /// `is_name`'s folding agrees with `eq_ignore_ascii_case` for every
    /// token byte against every byte a known name has.
    #[test]
    fn field_names_fold_exactly() {
        for b in (0..=255u8).filter(|&b| is_tchar(b)) {
            for l in (b'a'..=b'z').chain([b'-']) {
                assert_eq!(
                    is_name(&[b], &[l]),
                    b.eq_ignore_ascii_case(&l),
                    "{b:#x} {l:#x}"
                );
            }
        }
        assert!(is_name(b"Content-LENGTH", b"content-length"));
        assert!(!is_name(b"Content-Lengt", b"content-length"));
    }

    /// The usual lines are matched, in any case, and each byte of the
    /// first 16 replaced by every other byte gives what the slow way says
    /// (or no answer, which leaves the slow way to say it).
    #[test]
    fn word_matches_are_the_slow_answer() {
        let lines: [&[u8]; 7] = [
            b"Host: 127.0.0.1:8080\r\n",
            b"Authorization: Bearer x\r\n",
            b"Content-Length: 32\r\n\r\n",
            b"Connection: close\r\n\r\n",
            b"Idempotency-Key: k\r\n\r\n",
            b"host:x\r\nAccept: */*\r\n",
            b"CONTENT-LENGTH:1\r\n\r\nxx",
        ];
        for line in lines {
            let fast = Known::at_line_start(line);
            assert!(fast.is_some(), "{:?}", line.escape_ascii());
            assert_eq!(fast, reference(line));
            for at in 0..16 {
                for b in 0..=255u8 {
                    let mut mutated = line.to_vec();
                    mutated[at] = b;
                    agrees(&mutated);
                }
            }
        }
    }

    #[test]
    fn other_names_and_short_lines_are_left_to_the_slow_way() {
        for line in [
            &b"Hostname: x\r\n\r\n\r\n\r\n"[..],
            b"Host : x\r\n\r\n\r\n\r\n",
            b"Content-Type: text/plain\r\n",
            b"Connectio: x\r\n\r\n\r\n\r\n",
            b"Authorisation: x\r\n\r\n",
            b"Host: x\r\n\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Expect: 100-continue\r\n\r\n",
            b"Host\x1a x\r\n\r\n\r\n\r\n\r\n",
            b"\rost: x\r\n\r\n\r\n\r\n\r\n",
        ] {
            assert_eq!(
                Known::at_line_start(line),
                None,
                "{:?}",
                line.escape_ascii()
            );
        }
    }
}
