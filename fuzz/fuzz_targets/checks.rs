//! The body of every fuzz target, as plain functions of the input bytes.
//!
//! Each `fuzz_targets/<name>.rs` is three lines that call `checks::<name>`;
//! `tests/fuzz_corpus.rs` includes this same file and calls the same
//! functions on every file of `fuzz/corpus/<name>/`, so the checked-in
//! corpora are replayed by a plain `cargo test` and the checks cannot drift
//! apart. That is why this file uses nothing but `pairlink` and `std`.
//!
//! A check returns normally when the input is fine (including inputs the
//! code under test rightly refuses) and panics when an invariant breaks.
#![allow(dead_code)]

use pairlink::api::{reply_response, Api, ApiConfig, Handled};
use pairlink::core::{CancelKey, Node, NodeConfig, Output};
use pairlink::limits::{
    HEAD_BYTES_MAX, NODE_NAME_BYTES_MAX, PAIR_BYTES_MAX, POLL_TIMEOUT_MS_MAX, SECRET_BYTES,
    TARGET_BYTES_MAX, TOKEN_BYTES_MAX,
};
use pairlink::proto::http::{
    frame_whole, Framer, HttpError, Limits, Method, Progress, Request, Version,
};
use pairlink::proto::ids::{
    base64url, decode_secret, parse_node_name, parse_pair, Side, Token, TokenCache, SECRET_CHARS,
};
use pairlink::proto::json::{error_body, write_str, write_u64};
use pairlink::proto::query::{parse_poll, PollQuery};
use pairlink::proto::response::{ContentType, Response};

/// The server's default `--max-message-bytes`, the framer's body limit.
const BODY_BYTES_MAX_DEFAULT: usize = 65_536;

// ---------------------------------------------------------------------------
// http_framer
// ---------------------------------------------------------------------------

/// HTTP request framing, including chunked bodies and pipelining.
///
/// Input: `[step, mode, head, body, stream @ ..]`. `stream` is the bytes of
/// one connection. It is framed twice: handed over whole, and in pieces of
/// `step + 1` bytes; both must give the same requests and the same error,
/// and every `Complete` must respect the limits. When `mode` is odd the
/// limits are tiny (target `mode >> 1`, head `head`, body `body` bytes) so
/// that 413, 414 and 431 are easy to reach; otherwise they are the server's.
pub fn http_framer(data: &[u8]) {
    let [step, mode, head, body, stream @ ..] = data else {
        return;
    };
    let limits = if mode & 1 == 0 {
        Limits {
            target_bytes_max: TARGET_BYTES_MAX,
            head_bytes_max: HEAD_BYTES_MAX,
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
        }
    } else {
        Limits {
            target_bytes_max: usize::from(mode >> 1),
            head_bytes_max: usize::from(*head),
            body_bytes_max: usize::from(*body),
        }
    };
    let whole = frame(limits, stream, stream.len().max(1));
    let pieces = frame(limits, stream, usize::from(*step) + 1);
    let shown = String::from_utf8_lossy(stream);
    assert_eq!(
        whole.done, pieces.done,
        "requests differ by split: {shown:?}"
    );
    assert_eq!(
        whole.error, pieces.error,
        "errors differ by split: {shown:?}"
    );
    if whole.error.is_none() {
        // With an error, how much was buffered depends on the split.
        assert_eq!(whole.leftover, pieces.leftover, "{shown:?}");
        assert_eq!(whole.head_done, pieces.head_done, "{shown:?}");
    }
}

/// What framing one connection's bytes gave.
#[derive(Debug, Default)]
struct Framed {
    /// Requests (as their `Debug` text: a request borrows the buffer,
    /// which moves on) and the bytes each consumed, in order.
    done: Vec<(String, usize)>,
    /// The error that ended the connection, if any.
    error: Option<HttpError>,
    /// Bytes left unconsumed at the end (without an error).
    leftover: Vec<u8>,
    /// Whether the last, incomplete request had its head parsed.
    head_done: bool,
}

/// Feeds `stream` to a framer `step` bytes at a time, as a connection does:
/// append, advance until `NeedMore`, drop what a `Complete` consumed.
fn frame(limits: Limits, stream: &[u8], step: usize) -> Framed {
    let mut framer = Framer::new(limits);
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Framed::default();
    let mut announced = false;
    for piece in stream.chunks(step) {
        buf.extend_from_slice(piece);
        // Each pass consumes at least one byte or leaves the loop, so the
        // loop is bounded by the bytes buffered.
        loop {
            // The one-pass reading of a whole request (the server's usual
            // path) gives what the framer gives.
            let whole = frame_whole(&limits, &buf);
            let advanced = framer.advance(&buf);
            if let Some((request, consumed)) = whole {
                assert_eq!(advanced, Ok(Progress::Complete { request, consumed }));
            }
            match advanced {
                Ok(Progress::NeedMore) => break,
                Ok(Progress::HeadComplete { .. }) => {
                    assert!(!announced, "HeadComplete twice for one request");
                    announced = true;
                    assert!(framer.head_done());
                    // Nothing new: the same buffer must not announce again.
                    assert_eq!(framer.advance(&buf), Ok(Progress::NeedMore));
                    break;
                }
                Ok(Progress::Complete { request, consumed }) => {
                    let request = request.request(&buf).expect("offsets within the buffer");
                    check_request(&limits, &request, consumed, buf.len());
                    check_framing(&request, &buf[..consumed]);
                    assert!(!framer.head_done());
                    let text = format!("{request:?}");
                    buf.drain(..consumed);
                    announced = false;
                    out.done.push((text, consumed));
                }
                Err(error) => {
                    // A failed framer stays failed, whatever arrives next.
                    assert_eq!(framer.advance(&buf), Err(error));
                    buf.extend_from_slice(b"\r\n\r\n");
                    assert_eq!(framer.advance(&buf), Err(error));
                    assert!(!framer.head_done());
                    out.error = Some(error);
                    return out;
                }
            }
        }
    }
    out.leftover = buf;
    out.head_done = framer.head_done();
    out
}

fn check_request(limits: &Limits, request: &Request, consumed: usize, buffered: usize) {
    assert!(consumed <= buffered, "consumed {consumed} of {buffered}");
    assert!(request.body.len() <= limits.body_bytes_max);
    let target = request.target;
    assert!(!target.is_empty() && target.len() <= limits.target_bytes_max);
    assert!(target.iter().all(|b| (0x21..=0x7e).contains(b)));
    // "M T HTTP/1.1\r\n\r\n" around the target, then at least the body.
    assert!(consumed >= target.len() + request.body.len() + 15);
    if request.version == Version::Http10 {
        assert!(!request.keep_alive, "HTTP/1.0 connections are closed");
    }
    for value in [request.authorization, request.idempotency_key]
        .into_iter()
        .flatten()
    {
        assert!(!value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0));
        assert!(!value.starts_with(b" ") && !value.ends_with(b" "));
        assert!(!value.starts_with(b"\t") && !value.ends_with(b"\t"));
    }
}

/// A second, deliberately simple reading of the framing rules in the
/// `proto::http` module documentation, applied to the bytes of a request
/// the framer accepted: the head has only CRLF line ends and no folding,
/// at most one of `Content-Length` and `Transfer-Encoding`, and the body
/// the framer decoded ends exactly where this reading says. Any difference
/// is a request another parser could see differently (smuggling).
fn check_framing(request: &Request, raw: &[u8]) {
    let shown = String::from_utf8_lossy(raw);
    let mut start = 0;
    while raw[start..].starts_with(b"\r\n") {
        start += 2;
    }
    let head_len = find(&raw[start..], b"\r\n\r\n").expect("a head ends with CRLF CRLF") + 4;
    let head = &raw[start..start + head_len];
    let head_end = start + head_len;
    for (i, &b) in head.iter().enumerate() {
        match b {
            b'\n' => assert!(i > 0 && head[i - 1] == b'\r', "bare LF: {shown:?}"),
            b'\r' => assert_eq!(head.get(i + 1), Some(&b'\n'), "bare CR: {shown:?}"),
            0 => panic!("NUL in an accepted head: {shown:?}"),
            _ => {}
        }
    }
    // Every line of the head but the final empty one, without its CRLF.
    let mut lines = head[..head_len - 3]
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let request_line = lines.next().expect("a request line");
    let http10 = request_line.ends_with(b" HTTP/1.0");
    assert!(http10 || request_line.ends_with(b" HTTP/1.1"), "{shown:?}");
    assert_eq!(request.version == Version::Http10, http10);
    let mut lengths: Vec<&[u8]> = Vec::new();
    let mut codings: Vec<&[u8]> = Vec::new();
    for line in lines {
        assert!(
            !line.starts_with(b" ") && !line.starts_with(b"\t"),
            "folded or indented field line: {shown:?}"
        );
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .expect("a field has a colon");
        let name = &line[..colon];
        assert!(!name.is_empty() && !name.iter().any(|&b| b == b' ' || b == b'\t'));
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths.push(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings.push(value);
        }
    }
    let body_raw = &raw[head_end..];
    match (lengths.is_empty(), codings.as_slice()) {
        (true, []) => {
            assert!(body_raw.is_empty() && request.body.is_empty(), "{shown:?}");
        }
        (false, []) => {
            let value = |digits: &[u8]| -> u128 {
                assert!(!digits.is_empty() && digits.iter().all(u8::is_ascii_digit));
                let digits = std::str::from_utf8(digits).expect("digits are ASCII");
                let significant = digits.trim_start_matches('0');
                assert!(significant.len() <= 20, "{shown:?}");
                significant.parse().unwrap_or(0)
            };
            let length = value(lengths[0]);
            assert!(lengths.iter().all(|l| value(l) == length), "{shown:?}");
            assert_eq!(body_raw.len() as u128, length, "{shown:?}");
            assert_eq!(request.body, body_raw);
        }
        (true, [coding]) => {
            assert_eq!(*coding, b"chunked", "exactly chunked (API.md): {shown:?}");
            assert_eq!(
                request.version,
                Version::Http11,
                "chunked in 1.0: {shown:?}"
            );
            let (body, used) = dechunk(body_raw).expect("a chunked body the model reads");
            assert_eq!(
                used,
                body_raw.len(),
                "chunked body ends elsewhere: {shown:?}"
            );
            assert_eq!(request.body, body, "{shown:?}");
        }
        _ => panic!("accepted with both framings or several codings: {shown:?}"),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A lenient chunked decoder: size digits, anything up to CRLF, data, CRLF;
/// then trailer lines up to an empty one. Returns the body and the bytes
/// used. A chunk extension cannot hide a CRLF (a quoted string holds no
/// CR), so the first CRLF always ends the size line.
fn dechunk(raw: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let line_len = find(&raw[pos..], b"\r\n")?;
        let line = &raw[pos..pos + line_len];
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let text = std::str::from_utf8(&line[..digits]).ok()?;
        let size = usize::from_str_radix(text, 16).ok()?;
        pos += line_len + 2;
        if size == 0 {
            break;
        }
        body.extend_from_slice(raw.get(pos..pos.checked_add(size)?)?);
        pos += size;
        if !raw[pos..].starts_with(b"\r\n") {
            return None;
        }
        pos += 2;
    }
    loop {
        let line_len = find(&raw[pos..], b"\r\n")?;
        pos += line_len + 2;
        if line_len == 0 {
            return Some((body, pos));
        }
    }
}

// ---------------------------------------------------------------------------
// poll_query
// ---------------------------------------------------------------------------

/// `parse_poll` agrees with a second, independently written reading of its
/// documentation, and its answers are within limits and re-parse the same.
pub fn poll_query(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let got = parse_poll(query.as_bytes());
    assert_eq!(got.ok(), poll_query_model(query), "{query:?}");
    if let Ok(q) = got {
        assert!(q.timeout_ms.is_none_or(|t| t <= POLL_TIMEOUT_MS_MAX));
        let canonical = match q.timeout_ms {
            Some(t) => format!("timeout_ms={t}&after={}", q.after),
            None => format!("after={}", q.after),
        };
        assert_eq!(parse_poll(canonical.as_bytes()), Ok(q));
    }
}

/// `s` with every `%XX` decoded; `None` if a `%` is not followed by two
/// hex digits.
fn percent_decoded(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

fn poll_query_model(query: &str) -> Option<PollQuery> {
    let mut after: Option<u64> = None;
    let mut timeout_ms: Option<u64> = None;
    for param in query.split('&') {
        let (name, value) = match param.find('=') {
            Some(i) => (&param[..i], &param[i + 1..]),
            None => (param, ""),
        };
        // Percent-escapes decoded first; a broken one in a name makes it
        // no name we know, in a known parameter's value an error.
        let slot = match percent_decoded(name).as_deref() {
            Some(b"after") => &mut after,
            Some(b"timeout_ms") => &mut timeout_ms,
            _ => continue,
        };
        let value = percent_decoded(value)?;
        if slot.is_some() || value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            return None;
        }
        // All digits: parsing fails only on overflow, which saturates.
        let digits = std::str::from_utf8(&value).ok()?;
        *slot = Some(digits.parse::<u64>().unwrap_or(u64::MAX));
    }
    Some(PollQuery {
        after: after.unwrap_or(0),
        timeout_ms: timeout_ms.map(|t| t.min(POLL_TIMEOUT_MS_MAX)),
    })
}

// ---------------------------------------------------------------------------
// ids_tokens
// ---------------------------------------------------------------------------

const ID_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Tokens, secrets, pair ids, node names and sides: each text form parses
/// back to itself, and each value prints to a form that parses back to it.
pub fn ids_tokens(data: &[u8]) {
    // Text -> value -> text: one canonical form.
    if let Some(token) = Token::parse(data) {
        assert_eq!(
            token.to_string().as_bytes(),
            data,
            "token text is not canonical"
        );
        assert!(data.len() <= TOKEN_BYTES_MAX);
    }
    if let Some(secret) = decode_secret(data) {
        let mut text = String::new();
        base64url(&secret, &mut text);
        assert_eq!(text.as_bytes(), data, "secret text is not canonical");
    }
    let mut text = String::new();
    base64url(data, &mut text);
    assert_eq!(text.len(), (data.len() * 4).div_ceil(3));
    assert!(text.bytes().all(|b| ID_ALPHABET.contains(&b)));

    // Value -> text -> value, for a token built from the input.
    if let Some((secret, rest)) = data.split_first_chunk::<SECRET_BYTES>() {
        let (key, rest) = rest.split_first_chunk::<4>().unwrap_or((&[0; 4], rest));
        let (gen, rest) = rest.split_first_chunk::<8>().unwrap_or((&[0; 8], rest));
        let mut node: String = rest
            .iter()
            .take(NODE_NAME_BYTES_MAX)
            .map(|&b| char::from(ID_ALPHABET[usize::from(b % 64)]))
            .collect();
        if node.is_empty() {
            node.push('n');
        }
        let token = Token {
            node: parse_node_name(&node).expect("an id-alphabet name of 1 to 32 chars"),
            key: u32::from_le_bytes(*key),
            gen: u64::from_le_bytes(*gen),
            secret: *secret,
        };
        let text = token.to_string();
        assert!(text.len() <= TOKEN_BYTES_MAX, "{text}");
        assert_eq!(
            decode_secret(&text.as_bytes()[text.len() - SECRET_CHARS..]),
            Some(*secret)
        );
        assert!(token.secret_matches(secret));
        let mut other = *secret;
        other[usize::from(secret[0]) % SECRET_BYTES] ^= 1;
        assert!(!token.secret_matches(&other));
        assert_eq!(Token::parse(text.as_bytes()), Some(token));
    }

    // Pair ids, node names and sides against their stated syntax.
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let id_syntax = |bytes_max: usize| {
        !s.is_empty()
            && s.len() <= bytes_max
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    assert_eq!(
        parse_pair(s).as_deref(),
        id_syntax(PAIR_BYTES_MAX).then_some(s)
    );
    assert_eq!(
        parse_node_name(s).as_deref(),
        id_syntax(NODE_NAME_BYTES_MAX).then_some(s)
    );
    match Side::parse(s) {
        Some(side) => {
            assert_eq!(side.as_str(), s);
            assert_ne!(side.peer(), side);
            assert_eq!(side.peer().peer(), side);
        }
        None => assert!(s != "a" && s != "b"),
    }
}

// ---------------------------------------------------------------------------
// json_escape
// ---------------------------------------------------------------------------

/// `json::write_str` makes valid JSON that decodes back to its input, with
/// no raw control character; `error_body` and `write_u64` likewise.
pub fn json_escape(data: &[u8]) {
    if let Some(n) = data.first_chunk::<8>() {
        let n = u64::from_le_bytes(*n);
        let mut out = Vec::new();
        write_u64(&mut out, n);
        assert_eq!(out, n.to_string().as_bytes());
    }
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let mut out = b"[1,".to_vec();
    write_str(&mut out, s);
    assert!(out.starts_with(b"[1,"), "write_str must only append");
    let encoded = &out[3..];
    assert!(encoded.iter().all(|&b| b >= 0x20), "raw control character");
    assert_eq!(Json::parse(encoded), Ok(Json::Str(s.to_owned())));
    out.push(b']');
    assert_eq!(
        Json::parse(&out),
        Ok(Json::Arr(vec![
            Json::Num("1".to_owned()),
            Json::Str(s.to_owned())
        ]))
    );
    let body = error_body(s, s);
    assert_eq!(
        Json::parse(&body),
        Ok(Json::Obj(vec![
            ("error".to_owned(), Json::Str(s.to_owned())),
            ("message".to_owned(), Json::Str(s.to_owned())),
        ]))
    );
}

/// The tests' strict JSON reader (RFC 8259), shared with `tests/common`.
#[path = "../../tests/common/json.rs"]
mod json;
use json::Json;

// ---------------------------------------------------------------------------
// api_requests
// ---------------------------------------------------------------------------

/// Operations per input at most; each takes at least one input byte anyway.
const OPS_MAX: usize = 1024;
/// Largest message body an operation sends.
const MESSAGE_BYTES_MAX: usize = 40;
/// Pair ids the operations use: few, so that sides collide and link.
const PAIRS: [&str; 3] = ["p0", "p1", "p2"];
const SESSION_TTL_MS: u64 = 1_000;
const POLL_TIMEOUT_MS: u64 = 300;
const LOOKUP_TIMEOUT_MS: u64 = 200;
/// The node under test, and its one cluster peer (index 1), which never
/// answers: frames sent to it are dropped, so joins and forwarded requests
/// made while it is up end by timeout or by it going down.
const NODE: &str = "n1";
const PEER: &str = "n2";

/// The HTTP API and node core under a sequence of operations.
///
/// Input: two configuration bytes, then operations, each an opcode byte
/// and its arguments (missing bytes read as 0): join, poll, send and leave
/// with small pair ids, both sides, and no token, a captured one, a forged
/// one or garbage; time passing and timeouts; cancelled requests; other
/// routes, raw targets, a failing random source, a silent peer node going
/// up and down, and a drain. After every operation the node's counters must
/// agree with a model of the waiting requests and with each other, every
/// answer must be well-formed JSON, and a token that was never issued for a
/// side (or whose session is known to be gone) must never get past
/// authentication. At the end a drain, the peer going down and time passing
/// must answer every waiting request and end every session.
pub fn api_requests(data: &[u8]) {
    let mut ops = Bytes { data };
    let mut sim = Sim::new(ops.byte(), ops.byte());
    let mut count = 0;
    while !ops.data.is_empty() && count < OPS_MAX {
        count += 1;
        sim.step(&mut ops);
        sim.check();
    }
    sim.api.node.drain(sim.now);
    sim.api.node.peer_down(sim.now, 1);
    sim.check();
    sim.now += SESSION_TTL_MS + POLL_TIMEOUT_MS_MAX + LOOKUP_TIMEOUT_MS;
    sim.timeout();
    sim.check();
    let node = &sim.api.node;
    assert!(
        sim.waiting.is_empty(),
        "requests never answered: {}",
        sim.waiting.len()
    );
    assert_eq!(node.sessions_live(), 0);
    assert_eq!(node.buffered_bytes(), 0);
}

/// Input bytes as operation arguments; exhausted input reads as zeros.
struct Bytes<'a> {
    data: &'a [u8],
}

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken.to_vec()
    }
}

/// A token a join answered with.
struct Issued {
    text: String,
    pair: String,
    side: Side,
    /// False once the model knows the session ended (leave, drain, expiry).
    live: bool,
}

/// A request the model believes is waiting for its answer.
struct Waiting {
    waiter: u32,
    target: String,
    cancel: Option<CancelKey>,
}

struct Sim {
    api: Api<u32>,
    now: u64,
    max_sessions: usize,
    max_total_buffer: usize,
    issued: Vec<Issued>,
    waiting: Vec<Waiting>,
    next_waiter: u32,
    next_secret: u64,
    /// The next draw from the random source fails.
    secret_fails: bool,
    /// One token memo for every request, as if all came on one
    /// connection: tokens of many sessions, forged ones and none follow
    /// each other, and every answer must still be the model's.
    tokens: TokenCache,
}

/// Error codes a request may get without a valid token for its session:
/// everything checked before authentication, and authentication failing
/// (`unavailable`: the token names the peer node, which is down).
const PRE_AUTH_CODES: [&str; 9] = [
    "bad_pair",
    "bad_side",
    "bad_query",
    "bad_idempotency_key",
    "bad_utf8",
    "unauthorized",
    "no_session",
    "unavailable",
    "shutting_down",
];

/// How a request presents (or not) a token.
enum Auth {
    None,
    /// The text of `issued[i]`.
    Issued(usize),
    /// Raw `Authorization` bytes that are not an issued token.
    Forged(Vec<u8>),
}

/// What `Api::handle` did.
enum Outcome {
    Respond(Response),
    Wait(Option<CancelKey>),
}

impl Sim {
    fn new(c0: u8, c1: u8) -> Sim {
        let max_sessions = 1 + usize::from(c0 & 7);
        let max_session_buffer = 16usize << ((c0 >> 3) & 3);
        let max_total_buffer = max_session_buffer * (1 + usize::from(c0 >> 5));
        let config = NodeConfig {
            name: parse_node_name(NODE).expect("valid name"),
            peers: vec![parse_node_name(PEER).expect("valid name")],
            session_ttl_ms: SESSION_TTL_MS,
            poll_timeout_ms: POLL_TIMEOUT_MS,
            lookup_timeout_ms: LOOKUP_TIMEOUT_MS,
            max_sessions,
            max_session_buffer,
            max_total_buffer,
        };
        let api_config = ApiConfig {
            cors_origin: (c1 & 1 == 1).then(|| "*".to_owned()),
            ..ApiConfig::default()
        };
        Sim {
            api: Api::new(Node::new(config), api_config),
            now: u64::from(c1 >> 1),
            max_sessions,
            max_total_buffer,
            issued: Vec::new(),
            waiting: Vec::new(),
            next_waiter: 0,
            next_secret: 0,
            secret_fails: false,
            tokens: TokenCache::default(),
        }
    }

    /// A distinct, unguessable-looking secret per draw (splitmix64).
    fn draw_secret(&mut self) -> Option<[u8; SECRET_BYTES]> {
        if std::mem::take(&mut self.secret_fails) {
            return None;
        }
        let mut out = [0u8; SECRET_BYTES];
        for half in out.chunks_mut(8) {
            self.next_secret = self.next_secret.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.next_secret;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            half.copy_from_slice(&z.to_le_bytes());
        }
        Some(out)
    }

    fn auth(&mut self, ops: &mut Bytes) -> Auth {
        let choice = ops.byte();
        let index = usize::from(ops.byte());
        match choice % 4 {
            1 if !self.issued.is_empty() => Auth::Issued(index % self.issued.len()),
            2 if !self.issued.is_empty() => {
                // One byte of an issued token changed.
                let mut text = self.issued[index % self.issued.len()]
                    .text
                    .clone()
                    .into_bytes();
                let at = usize::from(ops.byte()) % text.len();
                text[at] = ID_ALPHABET[usize::from(ops.byte() % 64)];
                if self.issued.iter().any(|i| i.text.as_bytes() == text) {
                    return Auth::None;
                }
                let mut value = b"Bearer ".to_vec();
                value.extend_from_slice(&text);
                Auth::Forged(value)
            }
            3 => {
                let len = usize::from(ops.byte() % 48);
                let mut value = match (choice >> 2) & 3 {
                    0 => b"Bearer ".to_vec(),
                    1 => b"bEaReR ".to_vec(),
                    2 => b"Basic ".to_vec(),
                    _ => Vec::new(),
                };
                value.extend(ops.take(len));
                let holds = |text: &[u8]| value.windows(text.len()).any(|w| w == text);
                if self.issued.iter().any(|i| holds(i.text.as_bytes())) {
                    return Auth::None;
                }
                Auth::Forged(value)
            }
            _ => Auth::None,
        }
    }

    fn pair_side(&self, ops: &mut Bytes) -> (String, Side) {
        let b = ops.byte();
        let side = if b & 0x80 == 0 { Side::A } else { Side::B };
        (PAIRS[usize::from(b & 0x7f) % PAIRS.len()].to_owned(), side)
    }

    fn step(&mut self, ops: &mut Bytes) {
        let op = ops.byte();
        match op % 10 {
            0 => {
                let (pair, side) = self.pair_side(ops);
                let auth = self.auth(ops);
                let target = format!("/v1/pairs/{pair}/{}", side.as_str());
                self.session_call(Method::Post, target, &pair, side, auth, None, Vec::new());
            }
            1 => {
                let (pair, side) = self.pair_side(ops);
                let auth = self.auth(ops);
                let after = u64::from(ops.byte() % 16);
                let t = ops.byte();
                let query = match t % 4 {
                    0 => format!("after={after}"),
                    1 => format!("after={after}&timeout_ms=0"),
                    2 => format!("after={after}&timeout_ms={}", u64::from(t) * 4),
                    _ => format!("timeout_ms={}&after={after}&_=1", u64::from(t) * 4),
                };
                let target = format!("/v1/pairs/{pair}/{}/events?{query}", side.as_str());
                self.session_call(Method::Get, target, &pair, side, auth, None, Vec::new());
            }
            2 => {
                let (pair, side) = self.pair_side(ops);
                let auth = self.auth(ops);
                let k = ops.byte();
                let key = match k % 4 {
                    0 | 1 => None,
                    2 => Some(format!("k{}", k % 8).into_bytes()),
                    _ => Some(ops.take(usize::from(k % 70))),
                };
                let len = usize::from(ops.byte()) % (MESSAGE_BYTES_MAX + 1);
                let body = ops.take(len);
                let target = format!("/v1/pairs/{pair}/{}/messages", side.as_str());
                self.session_call(Method::Post, target, &pair, side, auth, key, body);
            }
            3 => {
                let (pair, side) = self.pair_side(ops);
                let auth = self.auth(ops);
                let target = format!("/v1/pairs/{pair}/{}", side.as_str());
                self.session_call(Method::Delete, target, &pair, side, auth, None, Vec::new());
            }
            4 => {
                self.now += u64::from(ops.byte()) * 10;
                self.timeout();
            }
            5 => self.cancel(ops),
            6 => {
                const OTHERS: [(Method, &str); 10] = [
                    (Method::Get, "/healthz"),
                    (Method::Head, "/metrics"),
                    (Method::Get, "/v1/cluster"),
                    (Method::Post, "/v1/pairs"),
                    (Method::Options, "/v1/pairs/p0/a"),
                    (Method::Put, "/v1/pairs/p0/a"),
                    (Method::Get, "/nope"),
                    (Method::Get, "/v1/pairs/p0/a/events/x"),
                    (Method::Options, "/healthz"),
                    (Method::Other, "/v1/pairs/p1/b/messages"),
                ];
                let (method, target) = OTHERS[usize::from(ops.byte()) % OTHERS.len()];
                self.call(method, target.to_owned(), Auth::None, None, Vec::new());
            }
            7 => {
                const METHODS: [Method; 8] = [
                    Method::Get,
                    Method::Head,
                    Method::Post,
                    Method::Put,
                    Method::Delete,
                    Method::Options,
                    Method::Patch,
                    Method::Other,
                ];
                let method = METHODS[usize::from(ops.byte() % 8)];
                let len = usize::from(ops.byte() % 64);
                // A request target is visible ASCII (the framer sees to it).
                let target: String = ops
                    .take(len)
                    .into_iter()
                    .map(|b| char::from(0x21 + b % 94))
                    .collect();
                let auth = self.auth(ops);
                let len = usize::from(ops.byte()) % (MESSAGE_BYTES_MAX + 1);
                let body = ops.take(len);
                self.call(method, format!("/{target}"), auth, None, body);
            }
            // Rare on purpose: each changes much of the state.
            8 if op == 8 => self.secret_fails = true,
            8 if op == 18 => self.api.node.peer_up(self.now, 1),
            8 if op == 28 => self.api.node.peer_down(self.now, 1),
            9 if op == 9 => {
                self.api.node.drain(self.now);
                self.forget_all();
            }
            9 if op == 19 => self.expire_all(),
            _ => {
                self.now += u64::from(ops.byte()) * 100;
                self.timeout();
            }
        }
    }

    /// A join, poll, send or leave on `pair` and `side`, with the check that
    /// only a live token issued for that side gets past authentication.
    #[allow(clippy::too_many_arguments)]
    fn session_call(
        &mut self,
        method: Method,
        target: String,
        pair: &str,
        side: Side,
        auth: Auth,
        key: Option<Vec<u8>>,
        body: Vec<u8>,
    ) {
        let authorized = match &auth {
            Auth::Issued(i) => {
                let issued = &self.issued[*i];
                issued.pair == pair && issued.side == side && issued.live
            }
            _ => false,
        };
        let presented = match &auth {
            Auth::Issued(i) => Some(self.issued[*i].text.clone()),
            _ => None,
        };
        let is_join = method == Method::Post && !target.ends_with("/messages");
        let response = match self.call(method, target, auth, key, body) {
            Outcome::Respond(response) => response,
            Outcome::Wait(Some(CancelKey::Poll(_))) => {
                assert!(authorized, "a poll without a valid token waits");
                return;
            }
            // A join waiting for lookups, or a request forwarded to the
            // peer node named by its token.
            Outcome::Wait(_) => return,
        };
        if is_join {
            // Joining needs no token, but only the side's own token resumes.
            if response.status == 200 {
                assert!(authorized, "resumed with a foreign or dead token");
                let json = Json::parse(&response.body).expect("join body is JSON");
                let session = json.get("session").and_then(Json::as_str);
                assert_eq!(session, presented.as_deref(), "resume changed the token");
            }
            return;
        }
        if !authorized {
            let code = error_code(&response);
            assert!(
                response.status >= 400 && PRE_AUTH_CODES.contains(&code.as_str()),
                "got past authentication without a valid token: {} {code}",
                response.status
            );
        }
        if response.status == 204 {
            // A leave: that session is gone.
            if let Some(text) = presented {
                for issued in self.issued.iter_mut().filter(|i| i.text == text) {
                    issued.live = false;
                }
            }
        }
    }

    /// Sends one request through `Api::handle`.
    fn call(
        &mut self,
        method: Method,
        target: String,
        auth: Auth,
        idempotency_key: Option<Vec<u8>>,
        body: Vec<u8>,
    ) -> Outcome {
        let authorization = match auth {
            Auth::None => None,
            Auth::Issued(i) => Some(format!("Bearer {}", self.issued[i].text).into_bytes()),
            Auth::Forged(value) => Some(value),
        };
        let request = Request {
            method,
            target: target.as_bytes(),
            version: Version::Http11,
            keep_alive: true,
            authorization: authorization.as_deref(),
            idempotency_key: idempotency_key.as_deref(),
            host_fields: 1,
            host_valid: true,
            body: &body,
        };
        let mut fresh = self.draw_secret();
        let waiter = self.next_waiter;
        self.next_waiter += 1;
        let wall_ms = self.now + 1_800_000_000_000;
        let handled = self.api.handle(
            self.now,
            wall_ms,
            &request,
            &mut self.tokens,
            &mut || fresh.take(),
            move || waiter,
        );
        match handled {
            Handled::Wait(cancel) => {
                if let Some(CancelKey::Poll(_)) = cancel {
                    let path = target.split('?').next().unwrap_or_default();
                    assert!(path.ends_with("/events") && request.method == Method::Get);
                }
                assert!(cancel.is_none() || !self.waiting.iter().any(|w| w.cancel == cancel));
                self.waiting.push(Waiting {
                    waiter,
                    target: target.clone(),
                    cancel,
                });
                Outcome::Wait(cancel)
            }
            Handled::Respond(response) => {
                self.check_response(&target, &response);
                Outcome::Respond(response)
            }
        }
    }

    fn check_response(&mut self, target: &str, response: &Response) {
        const STATUSES: [u16; 12] = [200, 201, 202, 204, 400, 401, 404, 405, 409, 429, 500, 503];
        let status = response.status;
        assert!(STATUSES.contains(&status), "status {status}");
        assert_eq!(status == 204, response.body.is_empty(), "{status} body");
        if status == 405 {
            assert!(response.allow.is_some());
        }
        if status >= 400 {
            assert_eq!(response.retry_after, matches!(status, 429 | 503));
            let json = Json::parse(&response.body).expect("error body is JSON");
            assert!(json.get("error").and_then(Json::as_str).is_some());
            assert!(json.get("message").and_then(Json::as_str).is_some());
            return;
        }
        match response.content_type {
            ContentType::Json if status != 204 => {
                let json = Json::parse(&response.body).unwrap_or_else(|at| {
                    panic!(
                        "response body is not JSON at {at}: {:?}",
                        String::from_utf8_lossy(&response.body)
                    )
                });
                if json.get("events").is_some() {
                    let (_, query) = target.split_once('?').unwrap_or(("", ""));
                    let after =
                        parse_poll(query.as_bytes()).expect("an answered poll had a good query");
                    check_poll_body(&json, after.after);
                }
                if let Some(session) = json.get("session").and_then(Json::as_str) {
                    self.joined(&json, session, status);
                }
            }
            ContentType::Json => {}
            ContentType::Text | ContentType::Prometheus => {
                assert!(std::str::from_utf8(&response.body).is_ok());
            }
        }
    }

    /// Records the token of a join answer.
    fn joined(&mut self, json: &Json, session: &str, status: u16) {
        let token = Token::parse(session.as_bytes()).expect("a join answers with a token");
        assert_eq!(&*token.node, NODE);
        let pair = json
            .get("pair")
            .and_then(Json::as_str)
            .expect("join names its pair");
        let side = json
            .get("side")
            .and_then(Json::as_str)
            .and_then(Side::parse);
        let side = side.expect("join names its side");
        assert!(json.get("peer").and_then(Json::as_str).is_some());
        let known = self.issued.iter().any(|i| i.text == session);
        match status {
            201 => {
                assert!(!known, "a new session got an old token");
                self.issued.push(Issued {
                    text: session.to_owned(),
                    pair: pair.to_owned(),
                    side,
                    live: true,
                });
            }
            200 => assert!(known, "a resume answered with a new token"),
            _ => panic!("join answered {status}"),
        }
    }

    fn cancel(&mut self, ops: &mut Bytes) {
        let b = ops.byte();
        let cancellable: Vec<usize> = (0..self.waiting.len())
            .filter(|&i| self.waiting[i].cancel.is_some())
            .collect();
        let Some(&index) = cancellable.get(usize::from(b >> 1) % cancellable.len().max(1)) else {
            return;
        };
        let Some(key) = self.waiting[index].cancel else {
            return;
        };
        let before = self.api.node.polls_waiting();
        let poll = matches!(key, CancelKey::Poll(_));
        if b & 1 == 0 {
            // The waiter is dropped unanswered.
            self.api.node.cancel(self.now, key);
            self.waiting.swap_remove(index);
            assert_eq!(self.api.node.polls_waiting(), before - usize::from(poll));
        } else {
            // A key of a request that is not waiting is ignored.
            let stale = match key {
                CancelKey::Poll(mut handle) => {
                    handle.id += 1_000_000;
                    CancelKey::Poll(handle)
                }
                CancelKey::Forward(req) => CancelKey::Forward(req + 1_000_000),
            };
            self.api.node.cancel(self.now, stale);
            assert_eq!(self.api.node.polls_waiting(), before);
        }
    }

    fn timeout(&mut self) {
        self.api.node.handle_timeout(self.now);
        let next = self.api.node.next_deadline();
        assert!(next.is_none_or(|at| at > self.now), "a due timer was left");
    }

    /// Time passes beyond every poll timeout, lookup and session TTL.
    fn expire_all(&mut self) {
        for _ in 0..2 {
            self.now += SESSION_TTL_MS + POLL_TIMEOUT_MS_MAX + LOOKUP_TIMEOUT_MS;
            self.timeout();
            self.collect();
        }
        assert_eq!(
            self.api.node.sessions_live(),
            0,
            "idle sessions outlived TTL"
        );
        self.forget_all();
    }

    fn forget_all(&mut self) {
        for issued in &mut self.issued {
            issued.live = false;
        }
    }

    /// Takes the node's outputs: answers to waiting requests are checked
    /// like immediate ones; frames to the silent peer are dropped.
    fn collect(&mut self) {
        while let Some(output) = self.api.node.poll_output() {
            let Output::Answer { waiter, reply } = output else {
                continue;
            };
            let index = self
                .waiting
                .iter()
                .position(|w| w.waiter == waiter)
                .expect("an answer for a request that is not waiting");
            let waiting = self.waiting.swap_remove(index);
            self.check_response(&waiting.target, &reply_response(reply));
        }
    }

    fn check(&mut self) {
        self.collect();
        let node = &self.api.node;
        let polls = self
            .waiting
            .iter()
            .filter(|w| matches!(w.cancel, Some(CancelKey::Poll(_))))
            .count();
        assert_eq!(node.polls_waiting(), polls);
        assert!(node.polls_waiting() <= node.sessions_live());
        assert!(node.sessions_live() <= self.max_sessions);
        assert!(node.buffered_bytes() <= self.max_total_buffer + MESSAGE_BYTES_MAX);
        if node.sessions_live() == 0 {
            assert_eq!(node.buffered_bytes(), 0);
        }
        if node.sessions_live() > 0 {
            assert!(
                node.next_deadline().is_some(),
                "a live session has no timer"
            );
        }
        if node.sessions_live() == 0 && node.requests_pending() == 0 {
            assert_eq!(node.next_deadline(), None, "a timer outlived its session");
        }
    }
}

fn error_code(response: &Response) -> String {
    Json::parse(&response.body)
        .ok()
        .and_then(|json| json.get("error").and_then(Json::as_str).map(str::to_owned))
        .unwrap_or_default()
}

/// `{"peer":"online"|"offline","events":[...]}` with consecutive seqs
/// after `after`.
fn check_poll_body(json: &Json, after: u64) {
    let peer = json.get("peer").and_then(Json::as_str);
    assert!(matches!(peer, Some("online" | "offline")), "{json:?}");
    let Some(Json::Arr(events)) = json.get("events") else {
        panic!("no events array: {json:?}");
    };
    let mut last = None;
    for event in events {
        let seq = event.get("seq").and_then(Json::as_u64).expect("seq");
        assert!(seq > after, "seq {seq} not after {after}");
        if let Some(last) = last {
            assert_eq!(seq, last + 1, "seqs are consecutive");
        }
        last = Some(seq);
        match event.get("type").and_then(Json::as_str) {
            Some("peer_online") => {}
            Some("message") => assert!(event.get("data").and_then(Json::as_str).is_some()),
            Some("peer_offline") => {
                let reason = event.get("reason").and_then(Json::as_str);
                assert!(matches!(
                    reason,
                    Some("left" | "expired" | "node_down" | "shutdown")
                ));
            }
            other => panic!("event type {other:?}"),
        }
    }
}
