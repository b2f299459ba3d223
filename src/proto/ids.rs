//! Pair ids, sides, node names and session tokens: their syntax, and the
//! text form of a token.

use super::json;
use crate::limits::{NODE_NAME_BYTES_MAX, PAIR_BYTES_MAX, SECRET_BYTES};
use std::fmt;

/// A pair id: 1 to 64 characters of `[A-Za-z0-9_-]`.
pub type PairId = heapless::String<PAIR_BYTES_MAX>;
/// A node name: 1 to 32 characters of `[A-Za-z0-9_-]`.
pub type NodeName = heapless::String<NODE_NAME_BYTES_MAX>;

/// One side of a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// Side `a`.
    A,
    /// Side `b`.
    B,
}

impl Side {
    /// Parses `a` or `b`.
    pub fn parse(s: &(impl AsRef<[u8]> + ?Sized)) -> Option<Side> {
        match s.as_ref() {
            b"a" => Some(Side::A),
            b"b" => Some(Side::B),
            _ => None,
        }
    }

    /// 0 for `a`, 1 for `b`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The other side.
    pub fn peer(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    /// `"a"` or `"b"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
        }
    }
}

/// The characters of pair ids and node names: `[A-Za-z0-9_-]`.
const ID_CHARS: [bool; 256] = super::alnum_and(b"_-");

/// `bytes`, checked to be ASCII, as a string of at most `N` bytes: one
/// byte a character, without the general UTF-8 check (which costs more on
/// a short string than this whole copy). `None` when too long.
fn ascii_string<const N: usize>(bytes: &[u8]) -> Option<heapless::String<N>> {
    let mut out = heapless::String::new();
    for &b in bytes {
        if !b.is_ascii() {
            return None;
        }
        out.push(char::from(b)).ok()?;
    }
    Some(out)
}

/// True when `s` is 1 to `max` characters of ids.
fn is_id(s: &[u8], max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.iter().all(|&b| ID_CHARS[usize::from(b)])
}

/// True when `s` is a pair id (see [`parse_pair`]); the request path
/// needs only this, not a copy.
pub fn is_pair(s: &[u8]) -> bool {
    is_id(s, PAIR_BYTES_MAX)
}

/// Parses a pair id, or `None` when it is out of syntax.
pub fn parse_pair(s: &(impl AsRef<[u8]> + ?Sized)) -> Option<PairId> {
    let s = s.as_ref();
    if !is_pair(s) {
        return None;
    }
    ascii_string(s)
}

/// Parses a node name, or `None` when it is out of syntax.
pub fn parse_node_name(s: &str) -> Option<NodeName> {
    if !is_id(s.as_bytes(), NODE_NAME_BYTES_MAX) {
        return None;
    }
    NodeName::try_from(s).ok()
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/// Characters of a 16-byte secret in unpadded base64url.
pub const SECRET_CHARS: usize = 22;

/// Writes `bytes` as unpadded base64url.
pub fn base64url(bytes: &[u8], out: &mut String) {
    out.extend(base64url_chars(bytes).map(char::from));
}

/// The unpadded base64url characters of `bytes`, as ASCII bytes.
fn base64url_chars(bytes: &[u8]) -> impl Iterator<Item = u8> + '_ {
    bytes.chunks(3).flat_map(|chunk| {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        (0..chunk.len() + 1).map(move |i| B64URL[((n >> (18 - 6 * i)) & 63) as usize])
    })
}

/// Each byte's value in base64url, or [`B64_INVALID`].
const B64_VALUES: [u8; 256] = {
    let mut table = [B64_INVALID; 256];
    let mut i = 0;
    while i < 64 {
        table[B64URL[i] as usize] = i as u8;
        i += 1;
    }
    table
};
const B64_INVALID: u8 = 0xff;

/// Decodes exactly [`SECRET_CHARS`] characters of canonical base64url into a
/// secret. Non-canonical encodings (unused low bits set) are refused, so each
/// secret has exactly one text form.
pub fn decode_secret(s: &[u8]) -> Option<[u8; SECRET_BYTES]> {
    let s: &[u8; SECRET_CHARS] = s.try_into().ok()?;
    // 22 characters are 132 bits: five groups of four characters make 15
    // bytes (24 bits a group); the last two make the 16th byte and four
    // bits that must be zero. Invalid characters (0xff in the table) are
    // OR-ed up and checked once; the bits they put in a group only matter
    // when the result is refused anyway. Fixed indexes into an array: no
    // bounds checks, no iterator state.
    let value = |i: usize| u32::from(B64_VALUES[usize::from(s[i])]);
    let mut out = [0u8; SECRET_BYTES];
    let mut invalid = 0u32;
    for group in 0..5 {
        let (a, b, c, d) = (
            value(4 * group),
            value(4 * group + 1),
            value(4 * group + 2),
            value(4 * group + 3),
        );
        invalid |= a | b | c | d;
        let n = (a << 18) | (b << 12) | (c << 6) | d;
        out[3 * group..3 * group + 3].copy_from_slice(&n.to_be_bytes()[1..]);
    }
    let (hi, lo) = (value(20), value(21));
    invalid |= hi | lo;
    out[15] = ((hi << 2) | (lo >> 4)) as u8;
    (invalid & 0xc0 == 0 && lo & 0x0f == 0).then_some(out)
}

/// A session token: the handler's address and its secret.
///
/// Text form: `<node>.<key>.<gen>.<secret>`, the secret in 22 characters of
/// base64url. It fits [`crate::limits::TOKEN_BYTES_MAX`] by construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The home node of the session.
    pub node: NodeName,
    /// Slab key of the handler on its node.
    pub key: u32,
    /// Generation of the handler; a reused key has a new one.
    pub gen: u64,
    /// 128 random bits.
    pub secret: [u8; SECRET_BYTES],
}

impl Token {
    /// Parses the text form; `None` when it is not of this server's format.
    pub fn parse(s: &[u8]) -> Option<Token> {
        // The secret is the last SECRET_CHARS bytes, after the third dot
        // (base64url has no dot); the first two dots split the rest, and a
        // third there would be in the generation, which is only digits.
        let (rest, secret) = s.split_at_checked(s.len().checked_sub(SECRET_CHARS)?)?;
        let rest = rest.strip_suffix(b".")?;
        let (node, rest) = split_dot(rest)?;
        let (key, gen) = split_dot(rest)?;
        if !is_id(node, NODE_NAME_BYTES_MAX) {
            return None;
        }
        Some(Token {
            node: ascii_string(node)?,
            key: u32::try_from(parse_decimal(key, 10)?).ok()?,
            gen: parse_decimal(gen, 20)?,
            secret: decode_secret(secret)?,
        })
    }

    /// Whether `secret` is this token's, compared in constant time.
    pub fn secret_matches(&self, secret: &[u8; SECRET_BYTES]) -> bool {
        let mut diff = 0u8;
        for (a, b) in self.secret.iter().zip(secret) {
            diff |= a ^ b;
        }
        std::hint::black_box(diff) == 0
    }
}

/// The longest text a token [`Token::parse`] accepts can have: the node
/// name, a 10-digit key, a 20-digit generation, three dots and the secret.
pub const TOKEN_TEXT_BYTES_MAX: usize = NODE_NAME_BYTES_MAX + 10 + 20 + 3 + SECRET_CHARS;

/// The last token a connection sent, parsed. A client sends the same
/// `Authorization` on every request of a connection, and parsing it was
/// 8 % of a relay's instructions; a hit costs one comparison of the raw
/// bytes instead. The memo is exact (same bytes, same token), so it
/// changes no answer: each request's secret is still checked against its
/// session. Kept in the connection itself, not boxed: a connection's
/// state is prefetched as its task is woken, and the memo is then in
/// cache with it (a box of its own was two cache misses per relayed
/// message among hundreds of connections); and nearly every connection
/// sends a token, whose box would have cost more than its 8-byte pointer.
#[derive(Debug, Default)]
pub struct TokenCache(Option<CachedToken>);

#[derive(Debug)]
struct CachedToken {
    text: heapless::Vec<u8, TOKEN_TEXT_BYTES_MAX>,
    token: Token,
}

impl TokenCache {
    /// The last token parsed, if any.
    pub fn last(&self) -> Option<&Token> {
        self.0.as_ref().map(|c| &c.token)
    }

    /// [`Token::parse`] of `text`, from the memo when it is the same text.
    pub fn parse(&mut self, text: &[u8]) -> Option<&Token> {
        let hit = self.0.as_ref().is_some_and(|c| c.text == text);
        if !hit {
            let token = Token::parse(text)?;
            // Fits: a text that parses is at most TOKEN_TEXT_BYTES_MAX.
            let text = heapless::Vec::from_slice(text).ok()?;
            self.0 = Some(CachedToken { text, token });
        }
        self.0.as_ref().map(|c| &c.token)
    }
}

impl Token {
    /// Appends the text form, `<node>.<key>.<gen>.<secret>`: ASCII, none
    /// of it escaped in JSON.
    pub fn write_text(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.node.as_bytes());
        out.push(b'.');
        json::write_u64(out, u64::from(self.key));
        out.push(b'.');
        json::write_u64(out, self.gen);
        out.push(b'.');
        out.extend(base64url_chars(&self.secret));
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = Vec::with_capacity(crate::limits::TOKEN_BYTES_MAX);
        self.write_text(&mut text);
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

/// The bytes before the first `.` and those after it.
fn split_dot(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == b'.')?;
    Some((&s[..i], &s[i + 1..]))
}

/// Parses 1 to `digits_max` ASCII digits without a sign or leading zeros
/// (but `0` itself), so each number has one text form.
fn parse_decimal(s: &[u8], digits_max: usize) -> Option<u64> {
    if s.is_empty() || s.len() > digits_max || (s.len() > 1 && s[0] == b'0') {
        return None;
    }
    let mut n: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(n)
}

/// The token text in a join's JSON body (`"session":"…"`), for tests.
#[cfg(test)]
pub(crate) fn session_in_join_body(body: &str) -> &str {
    let after = body
        .split("\"session\":\"")
        .nth(1)
        .expect("a session field");
    after.split('"').next().expect("a closing quote")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token {
            node: parse_node_name("n1").unwrap(),
            key: 7,
            gen: 42,
            secret: [0xAB; 16],
        }
    }

    #[test]
    fn id_characters_and_lengths() {
        for b in 0..=255u8 {
            let id = b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
            assert_eq!(
                parse_pair(&char::from(b).to_string()).is_some(),
                id && b < 0x80
            );
        }
        assert!(parse_pair(&"p".repeat(PAIR_BYTES_MAX)).is_some());
        assert!(parse_pair(&"p".repeat(PAIR_BYTES_MAX + 1)).is_none());
        assert!(parse_pair("").is_none());
        assert!(parse_node_name(&"n".repeat(NODE_NAME_BYTES_MAX)).is_some());
        assert!(parse_node_name(&"n".repeat(NODE_NAME_BYTES_MAX + 1)).is_none());
        assert!(Token::parse(b"n-1.7.42.q6urq6urq6urq6urq6urqw").is_some());
        assert!(Token::parse(b"n+1.7.42.q6urq6urq6urq6urq6urqw").is_none());
    }

    #[test]
    fn secrets_decode_to_what_was_encoded_and_nothing_else() {
        for seed in 0u32..2000 {
            let secret: [u8; SECRET_BYTES] = std::array::from_fn(|i| {
                (seed.wrapping_mul(2_654_435_761) >> (i % 24)) as u8 ^ i as u8
            });
            let mut text = String::new();
            base64url(&secret, &mut text);
            assert_eq!(decode_secret(text.as_bytes()), Some(secret), "{text}");
            let mut bad = text.clone().into_bytes();
            bad[(seed as usize) % SECRET_CHARS] = b'=';
            assert_eq!(decode_secret(&bad), None);
            // The last character carries 2 bits; setting any of its low
            // four is a second spelling of the same secret.
            let mut loose = text.into_bytes();
            let last = B64_VALUES[usize::from(loose[SECRET_CHARS - 1])];
            loose[SECRET_CHARS - 1] = B64URL[usize::from(last | 1 << (seed % 4))];
            assert_eq!(decode_secret(&loose), None);
        }
    }

    #[test]
    fn token_round_trips() {
        let t = token();
        let s = t.to_string();
        assert!(s.starts_with("n1.7.42."));
        assert_eq!(s.len(), "n1.7.42.".len() + SECRET_CHARS);
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)));
        assert_eq!(Token::parse(s.as_bytes()), Some(t));
    }

    #[test]
    fn longest_token_fits_the_limit() {
        let t = Token {
            node: parse_node_name(&"n".repeat(32)).unwrap(),
            key: u32::MAX,
            gen: u64::MAX,
            secret: [0xFF; 16],
        };
        let s = t.to_string();
        assert!(s.len() <= crate::limits::TOKEN_BYTES_MAX);
        assert_eq!(s.len(), TOKEN_TEXT_BYTES_MAX);
        assert_eq!(Token::parse(s.as_bytes()), Some(t.clone()));
        // The memo holds the longest token too.
        let mut cache = TokenCache::default();
        assert_eq!(cache.parse(s.as_bytes()), Some(&t));
        assert_eq!(cache.parse(s.as_bytes()), Some(&t));
    }

    /// The memo answers exactly as parsing each text afresh, whatever
    /// came before: the same token again, another one, a bad one, one
    /// differing in a single byte.
    #[test]
    fn the_token_memo_answers_as_parsing_does() {
        let first = token().to_string();
        let second = Token { key: 8, ..token() }.to_string();
        let mut one_byte_off = second.clone().into_bytes();
        one_byte_off[3] = b'9'; // n1.8. -> n1.9.
        let texts: Vec<Vec<u8>> = vec![
            first.clone().into_bytes(),
            first.clone().into_bytes(),
            b"garbage".to_vec(),
            first.clone().into_bytes(),
            second.clone().into_bytes(),
            one_byte_off,
            format!("{first}A").into_bytes(),
            second.into_bytes(),
            first.as_bytes()[..first.len() - 1].to_vec(),
            first.into_bytes(),
            vec![b'n'; 200],
        ];
        let mut cache = TokenCache::default();
        for (i, text) in texts.iter().enumerate() {
            let want = Token::parse(text);
            assert_eq!(cache.parse(text), want.as_ref(), "text {i}");
        }
    }

    #[test]
    fn bad_tokens_are_refused() {
        let good = token().to_string();
        let mut noncanonical = good.clone().into_bytes();
        // The last base64 char carries 2 bits and 4 zero bits: 'B' sets one.
        *noncanonical.last_mut().unwrap() = b'B';
        let bad: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"garbage".to_vec(),
            b"a.b".to_vec(),
            b"n1.7.42".to_vec(),
            format!("{good}.x").into_bytes(),
            good.replace("n1.", "n 1.").into_bytes(),
            good.replace(".7.", ".07.").into_bytes(),
            good.replace(".7.", ".-7.").into_bytes(),
            good.replace(".7.", ".4294967296.").into_bytes(),
            good.replace(".42.", "..").into_bytes(),
            good.as_bytes()[..good.len() - 1].to_vec(),
            format!("{good}A").into_bytes(),
            good.replace("n1.", "é.").into_bytes(),
            good.replace(".42.", ".4.2.").into_bytes(),
            good.replace(".42.", ".42..").into_bytes(),
            good.replace("n1.", ".").into_bytes(),
            good.replace("n1.", "n1.n1.").into_bytes(),
            good.replace("n1.", &format!("{}.", "n".repeat(33)))
                .into_bytes(),
            noncanonical,
        ];
        for b in bad {
            assert_eq!(Token::parse(&b), None, "{:?}", String::from_utf8_lossy(&b));
        }
    }

    #[test]
    fn secret_comparison() {
        let t = token();
        assert!(t.secret_matches(&[0xAB; 16]));
        let mut other = [0xAB; 16];
        other[15] = 0xAA;
        assert!(!t.secret_matches(&other));
    }

    #[test]
    fn base64url_matches_known_vectors() {
        let cases: [(&[u8], &str); 4] = [
            (b"", ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"\xfb\xff\xfe", "-__-"),
        ];
        for (input, want) in cases {
            let mut s = String::new();
            base64url(input, &mut s);
            assert_eq!(s, want);
        }
    }

    #[test]
    fn pair_and_side_syntax() {
        assert!(parse_pair("a").is_some());
        assert!(parse_pair(&"x".repeat(64)).is_some());
        assert!(parse_pair(&"x".repeat(65)).is_none());
        assert!(parse_pair("").is_none());
        assert!(parse_pair("a.b").is_none());
        assert!(parse_pair("a b").is_none());
        assert!(parse_pair("Az09_-").is_some());
        assert_eq!(Side::parse("a"), Some(Side::A));
        assert_eq!(Side::parse("B"), None);
        assert_eq!(Side::A.peer(), Side::B);
    }
}
