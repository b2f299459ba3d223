//! HTTP/1.x request framing, sans-IO.
//!
//! A [`Framer`] turns the bytes received on one connection into
//! [`Request`]s, one at a time, and never touches a socket or a clock: the
//! caller appends what it reads to its buffer and calls [`Framer::advance`]
//! again. A complete request comes back as [`Framed`] offsets, read as a
//! [`Request`] that borrows the buffer. Header fields are split and checked
//! by `httparse`, or, for a whole well-formed head, by the same rules in
//! one pass (see `HeadScan::scan_whole`); everything that decides where a
//! message ends (the request line, line endings, folding,
//! `Content-Length`, `Transfer-Encoding`, chunked framing) is checked here
//! first, because those are the places where a lenient parser can be made
//! to see a different request than a proxy in front of it saw (RFC 9112
//! §11.2, request smuggling).
//!
//! # State kept between calls
//!
//! The framer remembers how far into the buffer it has looked (`pos`) and
//! where it stands in the grammar, so each byte of a head or of a chunked
//! body is examined once however the bytes are split (a fresh request is
//! first tried in one pass as a whole head; when that fails it is read
//! from its start byte by byte, so at most twice). The header block is
//! handed to `httparse` once, when its final empty line has arrived. A
//! `Content-Length` body is only counted until complete and never copied;
//! a chunked body is decoded as it arrives into a buffer that never exceeds
//! [`Limits::body_bytes_max`].
//!
//! # Rules
//!
//! - Up to [`LEADING_EMPTY_LINES_MAX`] empty lines (CRLF) before the request
//!   line are skipped (RFC 9112 §2.2 asks servers to ignore at least one);
//!   they count toward `consumed` but not toward the head limit.
//! - The request line is exactly `method SP target SP HTTP/D.D CRLF`: the
//!   method a token of at most [`METHOD_BYTES_MAX`] bytes (longer: 501, as
//!   RFC 9112 §3 suggests), the target non-empty visible ASCII, the version
//!   name case-sensitive. A well-formed version other than 1.0 and 1.1 is
//!   505; a line without a version (HTTP/0.9 style) is malformed, 400.
//! - Every line ends with CRLF; a bare LF or a CR not followed by LF is 400.
//!   A field line starting with SP or HTAB (obsolete folding, or whitespace
//!   before the first field) is 400.
//! - A target over [`Limits::target_bytes_max`] is 414 as soon as that many
//!   target bytes have arrived; a head over [`Limits::head_bytes_max`] is
//!   431 as soon as the excess arrives (so is one with more than
//!   [`HEADERS_COUNT_MAX`] field lines, which no head within 16 KiB has).
//! - `Content-Length` is 1*DIGIT after trimming OWS; copies that state the
//!   same decimal value are tolerated, others are 400. A value over
//!   [`Limits::body_bytes_max`] (including one too large for any integer) is
//!   413 as soon as the head is parsed.
//! - `Transfer-Encoding` together with `Content-Length` is 400, in an
//!   HTTP/1.0 request 400, and anything but one field whose value is exactly
//!   `chunked` (OWS-trimmed, and case-sensitive: API.md says "exactly",
//!   though RFC 9112 would allow `Chunked`) is 501.
//! - Chunk sizes are 1 to [`CHUNK_SIZE_DIGITS_MAX`] hex digits; extensions
//!   must follow the RFC 9112 §7.1.1 grammar and are ignored; a size line is
//!   at most [`CHUNK_LINE_BYTES_MAX`] bytes; trailer fields are checked and
//!   discarded, and at most `head_bytes_max` bytes of them (431) are read.
//!   A chunk that would take the body over the limit is 413 as soon as its
//!   size digits show it.
//! - A duplicated `Authorization` or `Idempotency-Key` is 400: which one
//!   counts would be a guess.
//! - `Host` lines are counted ([`Request::host_fields`]); the caller
//!   applies RFC 9112 §3.2 ([`Request::host_ok`]). Anything else not
//!   covered here is left to the caller.

use super::field_names::Known;
use super::swar;
use std::ops::Range;

/// Field lines a head usually has, at most: such a head is split with a
/// small slot array.
const FEW_FIELDS: usize = 16;

/// Most field lines in one request head: as many as the shortest lines
/// (`a:` and CRLF, 4 bytes) fit in [`crate::limits::HEAD_BYTES_MAX`], so a
/// head within the byte limit is never refused for its number of lines
/// (API.md: 431 is for headers over 16 KiB). The scanner still counts
/// them, and `httparse` gets a slot for each.
pub const HEADERS_COUNT_MAX: usize = crate::limits::HEAD_BYTES_MAX / 4;

/// Longest method token accepted. Ours are at most 7 bytes; RFC 9112 §3
/// suggests 501 for a method longer than any the server implements, and the
/// bound keeps the request line's overhead over the target small, so an
/// overlong target is seen early.
pub const METHOD_BYTES_MAX: usize = 16;

/// Empty lines (CRLF) skipped before a request line. RFC 9112 §2.2 asks a
/// server to ignore at least one (some clients send a CRLF after a POST
/// body); more than a few is not a client we want to humour.
pub const LEADING_EMPTY_LINES_MAX: usize = 4;

/// Longest chunk-size line, extensions and CRLF included. Extensions are
/// ignored, so a long line is only a way to make us read without progress.
pub const CHUNK_LINE_BYTES_MAX: usize = 4096;

/// Most hex digits in a chunk size: 16 fill a `u64`, so accumulating them
/// cannot overflow, and leading zeros are still allowed.
pub const CHUNK_SIZE_DIGITS_MAX: usize = 16;

// The scanner refuses a target the moment it exceeds its limit, so an
// overlong target is seen at most `METHOD_BYTES_MAX + 2` bytes past
// `target_bytes_max` (method, SP, the excess byte) into the buffer; callers
// are promised that this is within 32 bytes.
const _: () = assert!(METHOD_BYTES_MAX + 2 <= 32);
const _: () = assert!(CHUNK_SIZE_DIGITS_MAX * 4 <= u64::BITS as usize);
const _: () = assert!(CHUNK_LINE_BYTES_MAX > CHUNK_SIZE_DIGITS_MAX + 2);

/// Size limits the framer enforces.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest request target (path and query) accepted; longer gets 414.
    pub target_bytes_max: usize,
    /// Longest head (request line and all header lines); longer gets 431.
    pub head_bytes_max: usize,
    /// Largest decoded body; larger gets 413.
    pub body_bytes_max: usize,
}

/// Request method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
    /// PATCH
    Patch,
    /// Any other syntactically valid method token.
    Other,
}

impl Method {
    /// Methods are case-sensitive (RFC 9110 §9.1), so `get` is `Other`.
    fn from_token(token: &[u8]) -> Method {
        match token {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }
}

/// HTTP version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

/// A complete request, borrowed from the connection's buffer (see
/// [`Framed::request`]): framing one allocates nothing but a chunked body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// Method.
    pub method: Method,
    /// The raw request target (`/path?query`): visible ASCII, as the
    /// framer checked, but kept as bytes (a UTF-8 check of every target
    /// was 2 % of a relay's instructions).
    pub target: &'a [u8],
    /// Version.
    pub version: Version,
    /// Whether the connection may stay open after the response.
    pub keep_alive: bool,
    /// The `Authorization` header value, if any.
    pub authorization: Option<&'a [u8]>,
    /// The `Idempotency-Key` header value, if any.
    pub idempotency_key: Option<&'a [u8]>,
    /// How many `Host` field lines came (saturating). RFC 9112 §3.2 asks
    /// exactly one of an HTTP/1.1 request and at most one of any; the
    /// connection layer refuses others with 400.
    pub host_fields: u8,
    /// Whether every `Host` value is a valid `uri-host [":" port]`.
    pub host_valid: bool,
    /// The body: from the buffer when it came with `Content-Length`, from
    /// the [`Framed`] when it was decoded from chunks.
    pub body: &'a [u8],
}

impl Request<'_> {
    /// Whether the request has the `Host` field lines RFC 9112 §3.2 asks
    /// for: exactly one in HTTP/1.1, at most one in HTTP/1.0, and a valid
    /// value.
    pub fn host_ok(&self) -> bool {
        self.host_valid
            && match self.version {
                Version::Http11 => self.host_fields == 1,
                Version::Http10 => self.host_fields <= 1,
            }
    }
}

/// Whether `value` (trimmed) can be `uri-host [":" port]` (RFC 3986
/// §3.2.2): the bytes of a reg-name, an IPv4 address or a bracketed IP
/// literal, and a colon before the port; an empty value is valid.
fn is_host_value(value: &[u8]) -> bool {
    trim_ows(value).iter().all(|&b| HOST_CHARS[usize::from(b)])
}

/// The bytes [`is_host_value`] allows: unreserved, sub-delims, `%` of
/// pct-encoded, `:` and the brackets of an IP literal.
const HOST_CHARS: [bool; 256] = super::alnum_and(b"-._~!$&'()*+,;=%:[]");

/// A complete request as offsets into the buffer it was framed from; the
/// caller reads it with [`Framed::request`] before dropping those bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Framed {
    head: Head,
    /// A chunked body, decoded; `None` for a `Content-Length` body, which
    /// is `body` of the buffer.
    decoded: Option<Vec<u8>>,
    body: Range<usize>,
}

impl Framed {
    /// The request, borrowing from `buf`: the buffer given to the
    /// [`Framer::advance`] call that returned this, before `consumed` bytes
    /// are dropped from it.
    ///
    /// # Errors
    ///
    /// `BadRequest` if `buf` is plainly not that buffer: an offset is out
    /// of it, the target is not between the two spaces of a request line,
    /// or the head does not end with its empty line there. Other misuse (a
    /// buffer shifted so that all of that still holds) is not detected:
    /// pass the same buffer.
    pub fn request<'a>(&'a self, buf: &'a [u8]) -> Result<Request<'a>, HttpError> {
        let bytes = |range: &Range<usize>| buf.get(range.clone()).ok_or(HttpError::BadRequest);
        let head = &self.head;
        let around_target = (
            head.target.start.checked_sub(1).and_then(|i| buf.get(i)),
            buf.get(head.target.end),
        );
        let head_end = head.end.checked_sub(4).and_then(|i| buf.get(i..head.end));
        if around_target != (Some(&b' '), Some(&b' ')) || head_end != Some(b"\r\n\r\n") {
            return Err(HttpError::BadRequest);
        }
        let target = bytes(&head.target)?;
        let body = match &self.decoded {
            Some(decoded) => &decoded[..],
            None => bytes(&self.body)?,
        };
        Ok(Request {
            method: head.method,
            target,
            version: head.version,
            keep_alive: head.keep_alive,
            authorization: head.authorization.as_ref().map(bytes).transpose()?,
            idempotency_key: head.idempotency_key.as_ref().map(bytes).transpose()?,
            host_fields: head.host_fields,
            host_valid: head.host_valid,
            body,
        })
    }
}

/// Why a request was refused; each closes the connection after its response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// 400
    BadRequest,
    /// 413
    PayloadTooLarge,
    /// 414
    UriTooLong,
    /// 431
    HeadersTooLarge,
    /// 501
    NotImplemented,
    /// 505
    VersionNotSupported,
}

impl HttpError {
    /// The response status code.
    pub fn status(self) -> u16 {
        match self {
            HttpError::BadRequest => 400,
            HttpError::PayloadTooLarge => 413,
            HttpError::UriTooLong => 414,
            HttpError::HeadersTooLarge => 431,
            HttpError::NotImplemented => 501,
            HttpError::VersionNotSupported => 505,
        }
    }

    /// The `error` code of the JSON error body.
    pub fn code(self) -> &'static str {
        match self {
            HttpError::BadRequest => "bad_request",
            HttpError::PayloadTooLarge => "too_large",
            HttpError::UriTooLong => "uri_too_long",
            HttpError::HeadersTooLarge => "headers_too_large",
            HttpError::NotImplemented => "not_implemented",
            HttpError::VersionNotSupported => "http_version_not_supported",
        }
    }

    /// A sentence for the `message` of the JSON error body.
    pub fn message(self) -> &'static str {
        match self {
            HttpError::BadRequest => "malformed request",
            HttpError::PayloadTooLarge => "the body is over the limit",
            HttpError::UriTooLong => "the request target is over 8 KiB",
            HttpError::HeadersTooLarge => "the request headers are over 16 KiB",
            HttpError::NotImplemented => "only Transfer-Encoding: chunked is supported",
            HttpError::VersionNotSupported => "only HTTP/1.0 and HTTP/1.1 are supported",
        }
    }
}

// The sentences above name these limits.
const _: () = assert!(crate::limits::TARGET_BYTES_MAX == 8 * 1024);
const _: () = assert!(crate::limits::HEAD_BYTES_MAX == 16 * 1024);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status(), self.message())
    }
}

impl std::error::Error for HttpError {}

/// What the framer has after a call.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed.
    NeedMore,
    /// The head is complete and a body is still coming.
    HeadComplete {
        /// The client sent `Expect: 100-continue`.
        expect_continue: bool,
    },
    /// A whole request.
    Complete {
        /// The request, read with [`Framed::request`].
        request: Framed,
        /// Bytes of the buffer it used.
        consumed: usize,
    },
}

/// Incremental request framer.
///
/// Contract of [`Framer::advance`]: `buf` holds every byte received since
/// the previous `Complete`; the caller only appends to it between calls.
/// After `Complete { consumed, .. }` the caller drops `consumed` bytes from
/// the front (pipelined bytes may follow) and the framer is ready for the
/// next request. After an `Err` the caller answers with the error and closes
/// the connection; further calls return the same error.
#[derive(Debug)]
pub struct Framer {
    limits: Limits,
    /// Bytes of `buf` already examined for the current request. Resuming
    /// here is what keeps a request fed one byte at a time linear.
    pos: usize,
    phase: Phase,
}

#[derive(Debug)]
enum Phase {
    /// Reading the request line and header fields.
    Head(HeadScan),
    /// The head is parsed; reading the body.
    Body(Pending),
    /// An error was returned; the connection is being closed.
    Failed(HttpError),
}

impl Framer {
    /// A framer enforcing `limits`.
    pub fn new(limits: Limits) -> Framer {
        Framer {
            limits,
            pos: 0,
            phase: Phase::Head(HeadScan::new()),
        }
    }

    /// Looks at all unconsumed bytes and says whether they hold a request.
    ///
    /// Returns `HeadComplete` once per request, when its head is parsed but
    /// its body has not all arrived (the caller restarts its body timer and
    /// answers `100 Continue` if asked); a request that arrives whole goes
    /// straight to `Complete`.
    ///
    /// # Errors
    ///
    /// An [`HttpError`] for a request that is malformed, over a limit or
    /// uses something not implemented; see the module documentation. Also
    /// `BadRequest` if `buf` is shorter than at the previous call, which
    /// breaks the contract above.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Progress, HttpError> {
        let result = self.advance_inner(buf);
        if let Err(error) = result {
            self.phase = Phase::Failed(error);
        }
        result
    }

    /// True once the head of the current request has been parsed, until
    /// the request is complete.
    pub fn head_done(&self) -> bool {
        matches!(self.phase, Phase::Body(_))
    }

    fn advance_inner(&mut self, buf: &[u8]) -> Result<Progress, HttpError> {
        if let Phase::Failed(error) = self.phase {
            return Err(error);
        }
        if buf.len() < self.pos {
            // The caller dropped bytes we had already looked at; our
            // positions no longer mean anything, so end the connection.
            debug_assert!(false, "Framer::advance: buffer shrank without Complete");
            return Err(HttpError::BadRequest);
        }
        if let Phase::Head(scan) = &mut self.phase {
            let whole = if self.pos == 0 && scan.state == HeadState::Leading {
                scan.scan_whole(buf, &self.limits)
            } else {
                None
            };
            let (head_end, fields) = match whole {
                Some((head_end, fields)) => (head_end, fields),
                None => {
                    let Some(head_end) = scan.scan(buf, &mut self.pos, &self.limits)? else {
                        return Ok(Progress::NeedMore);
                    };
                    (head_end, scan.split_fields(buf, head_end)?)
                }
            };
            self.pos = head_end;
            let pending = scan.finish(buf, head_end, fields, &self.limits)?;
            self.phase = Phase::Body(pending);
        }
        let Phase::Body(pending) = &mut self.phase else {
            // Head either returned above or became Body; Failed returned.
            return Err(HttpError::BadRequest);
        };
        let complete = match &mut pending.body {
            Body::Length { end, .. } => {
                if buf.len() >= *end {
                    self.pos = *end;
                    true
                } else {
                    false
                }
            }
            Body::Chunked(decoder) => decoder.decode(buf, &mut self.pos, &self.limits)?,
        };
        if !complete {
            if pending.announced {
                return Ok(Progress::NeedMore);
            }
            pending.announced = true;
            return Ok(Progress::HeadComplete {
                expect_continue: pending.head.expect_continue,
            });
        }
        let consumed = self.pos;
        let phase = std::mem::replace(&mut self.phase, Phase::Head(HeadScan::new()));
        self.pos = 0;
        let Phase::Body(pending) = phase else {
            return Err(HttpError::BadRequest);
        };
        let (decoded, body) = match pending.body {
            Body::Length { start, end } => (None, start..end),
            Body::Chunked(decoder) => (Some(decoder.body), 0..0),
        };
        Ok(Progress::Complete {
            request: Framed {
                head: pending.head,
                decoded,
                body,
            },
            consumed,
        })
    }
}

/// A request that is all in `buf`, from its first byte: a head the
/// one-pass scan takes and its whole `Content-Length` body. Gives what
/// `Framer::new(*limits).advance(buf)` returns as `Complete` (the fuzz
/// target `http_framer` and the unit tests check that), without the
/// framer's state machine: the usual request of a connection costs one
/// scan and no moves of that state. `None` for anything else (a partial
/// request, leading empty lines, a chunked body, any error, a limit
/// reached), which the framer then reads and answers exactly.
pub fn frame_whole(limits: &Limits, buf: &[u8]) -> Option<(Framed, usize)> {
    let mut scan = HeadScan::new();
    let (head_end, fields) = scan.scan_whole(buf, limits)?;
    let pending = scan.finish(buf, head_end, fields, limits).ok()?;
    match pending.body {
        Body::Length { start, end } if end <= buf.len() => {
            let framed = Framed {
                head: pending.head,
                decoded: None,
                body: start..end,
            };
            Some((framed, end))
        }
        _ => None,
    }
}

/// The offset of the first CR or LF in `bytes`, eight bytes at a time.
fn find_cr_or_lf(bytes: &[u8]) -> Option<usize> {
    swar::find(
        bytes,
        |w| swar::eq(w, b'\r') | swar::eq(w, b'\n'),
        |b| b == b'\r' || b == b'\n',
    )
}

/// The offset of the first byte of `bytes` that cannot be in a request
/// target (see [`is_target_byte`]), eight bytes at a time.
fn find_non_target_byte(bytes: &[u8]) -> Option<usize> {
    swar::find(
        bytes,
        |w| swar::below(w, 0x21) | swar::eq(w, 0x7f) | (w & swar::HIGHS),
        |b| !is_target_byte(b),
    )
}

/// The offset of the first control byte (HTAB included) or DEL in
/// `bytes`, eight bytes at a time: what ends a field value.
fn find_control(bytes: &[u8]) -> Option<usize> {
    swar::find(
        bytes,
        |w| swar::below(w, 0x20) | swar::eq(w, 0x7f),
        |b| b < 0x20 || b == 0x7f,
    )
}

/// `HTTP/D.D` and the CR after it.
const VERSION_BYTES: usize = 9;

/// `tchar` of RFC 9110 §5.6.2: the bytes of methods and field names.
pub fn is_tchar(b: u8) -> bool {
    TCHARS[usize::from(b)]
}

/// [`is_tchar`] of every byte, looked up: it runs on every method byte.
const TCHARS: [bool; 256] = super::alnum_and(b"!#$%&'*+-.^_`|~");

/// Visible ASCII: the request target (RFC 3986 has no room for anything
/// else).
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// `field-vchar`, SP and HTAB of RFC 9110 §5.5, obs-text included.
fn is_field_value_byte(b: u8) -> bool {
    b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80
}

/// `qdtext` of RFC 9110 §5.6.4.
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = value {
        if !is_ows(*first) {
            break;
        }
        value = rest;
    }
    while let [rest @ .., last] = value {
        if !is_ows(*last) {
            break;
        }
        value = rest;
    }
    value
}

fn hex_value(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

/// Where the head scanner stands; each state names what the next byte may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeadState {
    /// Before the request line: CR of an empty line, or the method.
    Leading,
    /// After the CR of an empty line before the request line.
    LeadingLf,
    Method,
    Target,
    /// Matching `HTTP/D.D` then CR; `version_bytes` says how far.
    Version,
    RequestLineLf,
    /// Start of a field line, or CR of the empty line ending the head.
    LineStart,
    FieldLine,
    FieldLineLf,
    FinalLf,
}

/// Progress through a request head, kept between calls so that no byte is
/// examined twice.
#[derive(Clone, Copy, Debug)]
struct HeadScan {
    state: HeadState,
    leading_lines: usize,
    /// Offset of the method's first byte: the head starts here.
    head_start: usize,
    method_bytes: usize,
    target_bytes: usize,
    version_bytes: usize,
    /// The major and minor digits of the version.
    version_digits: [u8; 2],
    /// Offset of the first field line.
    fields_start: usize,
    field_lines: usize,
}

impl HeadScan {
    fn new() -> HeadScan {
        HeadScan {
            state: HeadState::Leading,
            leading_lines: 0,
            head_start: 0,
            method_bytes: 0,
            target_bytes: 0,
            version_bytes: 0,
            version_digits: [0; 2],
            fields_start: 0,
            field_lines: 0,
        }
    }

    /// Examines `buf[*pos..]`; returns the head's end offset once its final
    /// CRLF has been seen, leaving any bytes after it alone.
    fn scan(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
        limits: &Limits,
    ) -> Result<Option<usize>, HttpError> {
        let mut i = *pos;
        loop {
            i += self.skip_run(buf.get(i..).unwrap_or_default(), i, limits);
            let Some(&b) = buf.get(i) else {
                *pos = i;
                return Ok(None);
            };
            let complete = self.step(i, b, limits)?;
            i += 1;
            if complete {
                *pos = i;
                return Ok(Some(i));
            }
        }
    }

    /// The usual case at once: a whole, well-formed head at the start of
    /// `buf`, within every limit, read in one straight pass (the method and
    /// target as runs, the version as one comparison, each field line split
    /// and checked as it is found). Returns the head's end and its fields,
    /// with `self` as byte-by-byte scanning would have left it; `None` for
    /// anything else (a head not all there, leading empty lines, any error,
    /// a limit reached), which the byte-by-byte scan and httparse then read
    /// from the start and answer exactly. Both readings follow the same
    /// rules: the fuzz target `http_framer` and the unit tests compare
    /// whole buffers (this path) with the same bytes cut into pieces (the
    /// other), which makes httparse the reference for this path's field
    /// lines.
    fn scan_whole<'b>(&mut self, buf: &'b [u8], limits: &Limits) -> Option<(usize, Fields<'b>)> {
        let method_bytes = buf
            .iter()
            .take(METHOD_BYTES_MAX + 1)
            .take_while(|&&b| is_tchar(b))
            .count();
        if method_bytes == 0
            || method_bytes > METHOD_BYTES_MAX
            || buf.get(method_bytes) != Some(&b' ')
        {
            return None;
        }
        let target_start = method_bytes + 1;
        let rest = buf.get(target_start..)?;
        // One byte past the limit: a target that long is not ours to read.
        let window = rest
            .get(..limits.target_bytes_max.saturating_add(1))
            .unwrap_or(rest);
        let target_bytes = find_non_target_byte(window)?;
        if target_bytes == 0 || rest.get(target_bytes) != Some(&b' ') {
            return None;
        }
        let version_start = target_start + target_bytes + 1;
        let version = buf.get(version_start..version_start + VERSION_BYTES + 1)?;
        let &[b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor @ (b'0' | b'1'), b'\r', b'\n'] =
            version
        else {
            return None;
        };
        let fields_start = version_start + VERSION_BYTES + 1;
        let mut i = fields_start;
        let mut field_lines = 0;
        let mut fields = Fields::default();
        loop {
            if buf.get(i..i + 2)? == b"\r\n" {
                break;
            }
            field_lines += 1;
            if field_lines > HEADERS_COUNT_MAX {
                return None;
            }
            // `name ":" value CRLF`, as httparse reads a field line (the
            // other path): the name 1*tchar, the value field-vchar, SP,
            // HTAB and obs-text (RFC 9110 §5.5). A line starting with SP or
            // HTAB (folding) has an empty name, so it goes the other way.
            let line = buf.get(i..)?;
            // The usual names a word at a time; any other the slow way.
            let (known, name_bytes) = match Known::at_line_start(line) {
                Some((known, name_bytes)) => (Some(known), name_bytes),
                None => {
                    let n = line.iter().take_while(|&&b| is_tchar(b)).count();
                    if n == 0 || line.get(n) != Some(&b':') {
                        return None;
                    }
                    (Known::of(line.get(..n)?), n)
                }
            };
            let value_start = i + name_bytes + 1;
            let mut j = value_start;
            let end = loop {
                // The first byte not allowed in a value ends it: a CR, or
                // something the other path refuses. HTAB is allowed.
                let k = j + find_control(buf.get(j..)?)?;
                match buf.get(k)? {
                    b'\t' => j = k + 1,
                    b'\r' => break k,
                    _ => return None,
                }
            };
            if buf.get(end + 1) != Some(&b'\n') {
                return None;
            }
            if let Some(known) = known {
                fields.take_known(known, buf.get(value_start..end)?).ok()?;
            }
            i = end + 2;
        }
        let head_end = i + 2;
        if head_end > limits.head_bytes_max {
            return None;
        }
        *self = HeadScan {
            state: HeadState::FinalLf,
            leading_lines: 0,
            head_start: 0,
            method_bytes,
            target_bytes,
            version_bytes: VERSION_BYTES,
            version_digits: [b'1', minor],
            fields_start,
            field_lines,
        };
        Some((head_end, fields))
    }

    /// How many bytes from the start of `rest` (at offset `i`) [`Self::step`]
    /// would take one by one without failing, taken at once: the rest of
    /// the method, the request target, a whole `HTTP/D.D` CR, and the
    /// inside of a field line (anything but CR and LF; httparse checks it
    /// later). A run stops short of every limit, so the byte that crosses
    /// one still goes through `step` and fails as it would have. Most
    /// bytes of a head are taken this way, a few instructions each instead
    /// of a trip through the state machine.
    fn skip_run(&mut self, rest: &[u8], i: usize, limits: &Limits) -> usize {
        // Bytes the head may still take; only read once the head started
        // (every state with a run comes after the method's first byte).
        let head_room = || {
            self.head_start
                .saturating_add(limits.head_bytes_max)
                .saturating_sub(i)
        };
        match self.state {
            HeadState::FieldLine => {
                let rest = rest.get(..head_room()).unwrap_or(rest);
                find_cr_or_lf(rest).unwrap_or(rest.len())
            }
            HeadState::Target => {
                let room =
                    head_room().min(limits.target_bytes_max.saturating_sub(self.target_bytes));
                let rest = rest.get(..room).unwrap_or(rest);
                let run = find_non_target_byte(rest).unwrap_or(rest.len());
                self.target_bytes += run;
                run
            }
            HeadState::Method => {
                let room = head_room().min(METHOD_BYTES_MAX.saturating_sub(self.method_bytes));
                let rest = rest.get(..room).unwrap_or(rest);
                let run = rest.iter().take_while(|&&b| is_tchar(b)).count();
                self.method_bytes += run;
                run
            }
            HeadState::Version if self.version_bytes == 0 && head_room() >= VERSION_BYTES => {
                // The usual whole `HTTP/1.1` CR at once; anything else
                // (a split, a malformed version) goes byte by byte.
                match rest.get(..VERSION_BYTES) {
                    Some(&[b'H', b'T', b'T', b'P', b'/', major, b'.', minor, b'\r'])
                        if major.is_ascii_digit() && minor.is_ascii_digit() =>
                    {
                        self.version_digits = [major, minor];
                        self.version_bytes = VERSION_BYTES;
                        self.state = HeadState::RequestLineLf;
                        VERSION_BYTES
                    }
                    _ => 0,
                }
            }
            _ => 0,
        }
    }

    /// Takes the byte at offset `i`; true when it ends the head.
    fn step(&mut self, i: usize, b: u8, limits: &Limits) -> Result<bool, HttpError> {
        use HeadState as S;
        let bad = Err(HttpError::BadRequest);
        let mut complete = false;
        match self.state {
            S::Leading => {
                if b == b'\r' {
                    self.state = S::LeadingLf;
                } else if is_tchar(b) {
                    self.head_start = i;
                    self.method_bytes = 1;
                    self.state = S::Method;
                } else {
                    return bad;
                }
            }
            S::LeadingLf => {
                if b != b'\n' {
                    return bad;
                }
                self.leading_lines += 1;
                if self.leading_lines > LEADING_EMPTY_LINES_MAX {
                    return bad;
                }
                self.state = S::Leading;
            }
            S::Method => {
                if is_tchar(b) {
                    self.method_bytes += 1;
                    if self.method_bytes > METHOD_BYTES_MAX {
                        return Err(HttpError::NotImplemented);
                    }
                } else if b == b' ' {
                    self.state = S::Target;
                } else {
                    return bad;
                }
            }
            S::Target => {
                if is_target_byte(b) {
                    self.target_bytes += 1;
                    // Refuse as soon as the target is too long, without
                    // waiting for the rest of the line or the head.
                    if self.target_bytes > limits.target_bytes_max {
                        return Err(HttpError::UriTooLong);
                    }
                } else if b == b' ' && self.target_bytes > 0 {
                    self.state = S::Version;
                } else {
                    return bad;
                }
            }
            S::Version => {
                let index = self.version_bytes;
                let fits = match index {
                    0..=4 => b"HTTP/".get(index) == Some(&b),
                    5 | 7 => b.is_ascii_digit(),
                    6 => b == b'.',
                    _ => b == b'\r',
                };
                if !fits {
                    return bad;
                }
                match index {
                    5 => self.version_digits[0] = b,
                    7 => self.version_digits[1] = b,
                    8 => self.state = S::RequestLineLf,
                    _ => {}
                }
                self.version_bytes += 1;
            }
            S::RequestLineLf => {
                if b != b'\n' {
                    return bad;
                }
                // Only a well-formed line with another version is a 505;
                // anything malformed was a 400 before we got here.
                if self.version().is_none() {
                    return Err(HttpError::VersionNotSupported);
                }
                self.fields_start = i + 1;
                self.state = S::LineStart;
            }
            S::LineStart => {
                if b == b'\r' {
                    self.state = S::FinalLf;
                } else if is_ows(b) || b == b'\n' {
                    // Obsolete line folding, or whitespace before the first
                    // field: RFC 9112 §5.2 and §2.2 allow a server to reject
                    // both, and both are used to split one request in two.
                    return bad;
                } else {
                    self.field_lines += 1;
                    if self.field_lines > HEADERS_COUNT_MAX {
                        return Err(HttpError::HeadersTooLarge);
                    }
                    self.state = S::FieldLine;
                }
            }
            S::FieldLine => {
                if b == b'\r' {
                    self.state = S::FieldLineLf;
                } else if b == b'\n' {
                    return bad;
                }
            }
            S::FieldLineLf => {
                if b != b'\n' {
                    return bad;
                }
                self.state = S::LineStart;
            }
            S::FinalLf => {
                if b != b'\n' {
                    return bad;
                }
                complete = true;
            }
        }
        let head_started = !matches!(self.state, S::Leading | S::LeadingLf);
        if head_started && (i + 1).saturating_sub(self.head_start) > limits.head_bytes_max {
            return Err(HttpError::HeadersTooLarge);
        }
        Ok(complete)
    }

    fn version(&self) -> Option<Version> {
        match self.version_digits {
            [b'1', b'0'] => Some(Version::Http10),
            [b'1', b'1'] => Some(Version::Http11),
            _ => None,
        }
    }

    /// Interprets the complete head `buf[..head_end]`: splits the fields
    /// with `httparse` and decides how the body is framed.
    /// Splits the field lines of the complete head `buf[..head_end]` with
    /// `httparse` and collects the fields we read.
    fn split_fields<'b>(&self, buf: &'b [u8], head_end: usize) -> Result<Fields<'b>, HttpError> {
        let block = buf
            .get(self.fields_start..head_end)
            .ok_or(HttpError::BadRequest)?;
        // Slots for as many fields as the scanner counted: a usual head
        // fills a few on the stack; a long one (at most HEADERS_COUNT_MAX
        // lines) gets them on the heap for this call.
        let mut few;
        let mut many;
        let slots: &mut [httparse::Header<'_>] = if self.field_lines <= FEW_FIELDS {
            few = [httparse::EMPTY_HEADER; FEW_FIELDS];
            &mut few
        } else {
            many = vec![httparse::EMPTY_HEADER; self.field_lines.min(HEADERS_COUNT_MAX)];
            &mut many
        };
        let lines = match httparse::parse_headers(block, slots) {
            Ok(httparse::Status::Complete((used, lines))) if used == block.len() => lines,
            Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadersTooLarge),
            // A partial or short parse would mean httparse sees the lines
            // differently from the scanner; refuse rather than guess.
            Ok(_) | Err(_) => return Err(HttpError::BadRequest),
        };
        let mut fields = Fields::default();
        for line in lines {
            fields.take(line.name.as_bytes(), line.value)?;
        }
        Ok(fields)
    }

    /// Interprets the complete head `buf[..head_end]` and its `fields`:
    /// decides how the body is framed.
    fn finish(
        &self,
        buf: &[u8],
        head_end: usize,
        fields: Fields<'_>,
        limits: &Limits,
    ) -> Result<Pending, HttpError> {
        let version = self.version().ok_or(HttpError::VersionNotSupported)?;
        let method_end = self.head_start + self.method_bytes;
        let method = buf
            .get(self.head_start..method_end)
            .ok_or(HttpError::BadRequest)?;
        let target_start = method_end + 1;
        let target = target_start..target_start + self.target_bytes;
        let Fields {
            content_length,
            transfer_encodings,
            chunked,
            close,
            expect_100,
            authorization,
            idempotency_key,
            host_fields,
            host_invalid,
        } = fields;

        let body = if transfer_encodings > 0 {
            // Both framings at once is the classic smuggling vector (RFC
            // 9112 §6.1 lets a server reject it); HTTP/1.0 has no chunked
            // coding, so a 1.0 message claiming one was not made by a
            // client we understand.
            if content_length.is_some() || version == Version::Http10 {
                return Err(HttpError::BadRequest);
            }
            if transfer_encodings > 1 || !chunked {
                return Err(HttpError::NotImplemented);
            }
            Body::Chunked(ChunkDecoder::new())
        } else {
            let length = match content_length {
                Some(digits) => content_length_value(digits, limits)?,
                None => 0,
            };
            let end = head_end
                .checked_add(length)
                .ok_or(HttpError::PayloadTooLarge)?;
            Body::Length {
                start: head_end,
                end,
            }
        };
        let body_expected = match body {
            Body::Length { start, end } => end > start,
            Body::Chunked(_) => true,
        };
        Ok(Pending {
            head: Head {
                end: head_end,
                method: Method::from_token(method),
                target,
                version,
                // HTTP/1.0 keep-alive is opt-in and rarely worth it; we
                // always close after answering a 1.0 request.
                keep_alive: version == Version::Http11 && !close,
                authorization: authorization.map(|value| offsets(buf, value)),
                idempotency_key: idempotency_key.map(|value| offsets(buf, value)),
                host_fields,
                host_valid: !host_invalid,
                // RFC 9110 §10.1.1: ignore 100-continue from HTTP/1.0.
                expect_continue: version == Version::Http11 && expect_100 && body_expected,
            },
            body,
            announced: false,
        })
    }
}

/// The fields of a head that we read, collected line by line by either
/// path (`HeadScan::scan_whole`, or httparse in `HeadScan::split_fields`).
#[derive(Default)]
struct Fields<'b> {
    /// The significant digits of `Content-Length`.
    content_length: Option<&'b [u8]>,
    transfer_encodings: usize,
    /// The (last) `Transfer-Encoding` is `chunked`.
    chunked: bool,
    /// `Connection: close`.
    close: bool,
    /// `Expect: 100-continue`.
    expect_100: bool,
    authorization: Option<&'b [u8]>,
    idempotency_key: Option<&'b [u8]>,
    host_fields: u8,
    /// A `Host` value that is not `uri-host [":" port]`.
    host_invalid: bool,
}

impl<'b> Fields<'b> {
    /// Takes one field line's name and raw value.
    fn take(&mut self, name: &[u8], value: &'b [u8]) -> Result<(), HttpError> {
        match Known::of(name) {
            Some(known) => self.take_known(known, value),
            None => Ok(()),
        }
    }

    /// Takes the raw value of a field we read.
    fn take_known(&mut self, known: Known, value: &'b [u8]) -> Result<(), HttpError> {
        match known {
            Known::ContentLength => {
                let digits = content_length_digits(trim_ows(value))?;
                match self.content_length {
                    Some(first) if first != digits => return Err(HttpError::BadRequest),
                    _ => self.content_length = Some(digits),
                }
            }
            Known::TransferEncoding => {
                self.transfer_encodings += 1;
                self.chunked = trim_ows(value) == b"chunked";
            }
            Known::Connection => {
                self.close |= value
                    .split(|&b| b == b',')
                    .any(|token| trim_ows(token).eq_ignore_ascii_case(b"close"));
            }
            Known::Expect => {
                self.expect_100 |= trim_ows(value).eq_ignore_ascii_case(b"100-continue");
            }
            Known::Authorization => set_once(&mut self.authorization, value)?,
            Known::IdempotencyKey => set_once(&mut self.idempotency_key, value)?,
            Known::Host => {
                self.host_fields = self.host_fields.saturating_add(1);
                self.host_invalid |= !is_host_value(value);
            }
        }
        Ok(())
    }
}

/// Keeps a field that may appear once; a second copy is 400, since which
/// one counts would be a guess.
fn set_once<'a>(slot: &mut Option<&'a [u8]>, value: &'a [u8]) -> Result<(), HttpError> {
    match slot.replace(trim_ows(value)) {
        Some(_) => Err(HttpError::BadRequest),
        None => Ok(()),
    }
}

/// The significant digits of a `Content-Length` value (leading zeros
/// dropped, so copies are compared by decimal value).
fn content_length_digits(value: &[u8]) -> Result<&[u8], HttpError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::BadRequest);
    }
    let zeros = value.iter().take_while(|&&b| b == b'0').count();
    Ok(value.get(zeros..).unwrap_or_default())
}

/// The body length named by `digits`, if within the limit.
fn content_length_value(digits: &[u8], limits: &Limits) -> Result<usize, HttpError> {
    let mut length: usize = 0;
    for &digit in digits {
        // Every prefix of a number over the limit is itself checked, so a
        // huge value stops here long before it could overflow.
        length = length
            .checked_mul(10)
            .and_then(|l| l.checked_add(usize::from(digit - b'0')))
            .ok_or(HttpError::PayloadTooLarge)?;
        if length > limits.body_bytes_max {
            return Err(HttpError::PayloadTooLarge);
        }
    }
    Ok(length)
}

/// A parsed head waiting for its body.
#[derive(Debug)]
struct Pending {
    head: Head,
    body: Body,
    /// `HeadComplete` was returned; it is returned once per request.
    announced: bool,
}

/// A parsed head; its strings are offsets into the framed buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Head {
    /// Where the head ends (after its empty line).
    end: usize,
    method: Method,
    target: Range<usize>,
    version: Version,
    keep_alive: bool,
    authorization: Option<Range<usize>>,
    idempotency_key: Option<Range<usize>>,
    host_fields: u8,
    host_valid: bool,
    expect_continue: bool,
}

/// Where `part`, a slice of `buf`, lies in it.
fn offsets(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    start..start + part.len()
}

#[derive(Debug)]
enum Body {
    /// `buf[start..end]`; also used, empty, when there is no body.
    Length {
        start: usize,
        end: usize,
    },
    Chunked(ChunkDecoder),
}

/// Where the chunked decoder stands (RFC 9112 §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Size,
    /// Whitespace after the size or an extension, before `;`.
    SizeBws,
    ExtNameStart,
    ExtName,
    ExtNameBws,
    ExtValueStart,
    ExtToken,
    ExtQuoted,
    ExtQuotedEscape,
    ExtQuotedEnd,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
}

impl ChunkState {
    fn in_size_line(self) -> bool {
        use ChunkState as C;
        matches!(
            self,
            C::Size
                | C::SizeBws
                | C::ExtNameStart
                | C::ExtName
                | C::ExtNameBws
                | C::ExtValueStart
                | C::ExtToken
                | C::ExtQuoted
                | C::ExtQuotedEscape
                | C::ExtQuotedEnd
                | C::SizeLf
        )
    }

    fn in_trailer(self) -> bool {
        use ChunkState as C;
        matches!(
            self,
            C::TrailerLineStart | C::TrailerName | C::TrailerValue | C::TrailerLf | C::FinalLf
        )
    }
}

/// Incremental chunked decoder; keeps its place so data is copied once and
/// framing bytes are examined once.
#[derive(Debug)]
struct ChunkDecoder {
    state: ChunkState,
    size_digits: usize,
    /// The size being read, then the size of the chunk whose data follows.
    size: u64,
    line_bytes: usize,
    data_remaining: usize,
    trailer_bytes: usize,
    /// Decoded so far; never longer than `body_bytes_max`.
    body: Vec<u8>,
}

impl ChunkDecoder {
    fn new() -> ChunkDecoder {
        ChunkDecoder {
            state: ChunkState::Size,
            size_digits: 0,
            size: 0,
            line_bytes: 0,
            data_remaining: 0,
            trailer_bytes: 0,
            body: Vec::new(),
        }
    }

    /// Decodes `buf[*pos..]`; true once the final CRLF has been read.
    fn decode(&mut self, buf: &[u8], pos: &mut usize, limits: &Limits) -> Result<bool, HttpError> {
        loop {
            let rest = buf.get(*pos..).unwrap_or_default();
            let Some(&b) = rest.first() else {
                return Ok(false);
            };
            if self.state == ChunkState::Data {
                // Data is copied in one piece per call, not byte by byte.
                let take = rest.len().min(self.data_remaining);
                self.body
                    .extend_from_slice(rest.get(..take).unwrap_or_default());
                *pos += take;
                self.data_remaining -= take;
                if self.data_remaining == 0 {
                    self.state = ChunkState::DataCr;
                }
                continue;
            }
            *pos += 1;
            if self.step(b, limits)? {
                return Ok(true);
            }
        }
    }

    /// Takes one framing byte; true when it ends the body.
    fn step(&mut self, b: u8, limits: &Limits) -> Result<bool, HttpError> {
        use ChunkState as C;
        let bad = Err(HttpError::BadRequest);
        if self.state.in_size_line() {
            self.line_bytes += 1;
            if self.line_bytes > CHUNK_LINE_BYTES_MAX {
                return bad;
            }
        } else if self.state.in_trailer() {
            self.trailer_bytes += 1;
            if self.trailer_bytes > limits.head_bytes_max {
                return Err(HttpError::HeadersTooLarge);
            }
        }
        if self.state == C::Size {
            if let Some(digit) = hex_value(b) {
                self.size_digits += 1;
                if self.size_digits > CHUNK_SIZE_DIGITS_MAX {
                    return bad;
                }
                // At most 16 digits: this fits a u64 (checked anyway).
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|size| size.checked_add(digit))
                    .ok_or(HttpError::BadRequest)?;
                // Too large as soon as the digits so far say so: more
                // digits only make the size larger.
                let room = limits.body_bytes_max.saturating_sub(self.body.len());
                if self.size > u64::try_from(room).unwrap_or(u64::MAX) {
                    return Err(HttpError::PayloadTooLarge);
                }
                return Ok(false);
            }
            if self.size_digits == 0 {
                return bad;
            }
        }
        // After the size, a state's accepted bytes follow RFC 9112 §7.1.1:
        // `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`.
        self.state = match (self.state, b) {
            (C::Size | C::ExtToken | C::ExtQuotedEnd, b' ' | b'\t') => C::SizeBws,
            (C::Size | C::ExtName | C::ExtToken | C::ExtQuotedEnd, b'\r') => C::SizeLf,
            (
                C::Size | C::SizeBws | C::ExtName | C::ExtNameBws | C::ExtToken | C::ExtQuotedEnd,
                b';',
            ) => C::ExtNameStart,
            (C::SizeBws, b' ' | b'\t') => C::SizeBws,
            (C::ExtNameStart, b' ' | b'\t') => C::ExtNameStart,
            (C::ExtNameStart | C::ExtName, _) if is_tchar(b) => C::ExtName,
            (C::ExtName | C::ExtNameBws, b' ' | b'\t') => C::ExtNameBws,
            (C::ExtName | C::ExtNameBws, b'=') => C::ExtValueStart,
            (C::ExtValueStart, b' ' | b'\t') => C::ExtValueStart,
            (C::ExtValueStart, b'"') => C::ExtQuoted,
            (C::ExtValueStart | C::ExtToken, _) if is_tchar(b) => C::ExtToken,
            (C::ExtQuoted, b'"') => C::ExtQuotedEnd,
            (C::ExtQuoted, b'\\') => C::ExtQuotedEscape,
            (C::ExtQuoted, _) if is_qdtext(b) => C::ExtQuoted,
            (C::ExtQuotedEscape, _) if b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80 => {
                C::ExtQuoted
            }
            (C::SizeLf, b'\n') => {
                self.line_bytes = 0;
                self.size_digits = 0;
                if self.size == 0 {
                    C::TrailerLineStart
                } else {
                    // The limit check above bounds the size by a usize.
                    self.data_remaining =
                        usize::try_from(self.size).map_err(|_| HttpError::PayloadTooLarge)?;
                    self.size = 0;
                    C::Data
                }
            }
            (C::DataCr, b'\r') => C::DataLf,
            (C::DataLf, b'\n') => C::Size,
            (C::TrailerLineStart, b'\r') => C::FinalLf,
            // Trailer fields are read only to find the end; they are
            // never merged into the head, so a smuggled `Content-Length`
            // there has no effect.
            (C::TrailerLineStart | C::TrailerName, _) if is_tchar(b) => C::TrailerName,
            (C::TrailerName, b':') => C::TrailerValue,
            (C::TrailerValue, b'\r') => C::TrailerLf,
            (C::TrailerValue, _) if is_field_value_byte(b) => C::TrailerValue,
            (C::TrailerLf, b'\n') => C::TrailerLineStart,
            (C::FinalLf, b'\n') => return Ok(true),
            _ => return bad,
        };
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        target_bytes_max: 8192,
        head_bytes_max: 16384,
        body_bytes_max: 65536,
    };

    type E = HttpError;

    /// What one simulated connection saw.
    #[derive(Debug, Default)]
    struct Outcome {
        /// Each request as its `Debug` text (the request borrows a buffer
        /// that moves on), and the bytes it consumed.
        done: Vec<(String, usize)>,
        /// `(index of the request, expect_continue)` per `HeadComplete`.
        heads: Vec<(usize, bool)>,
        error: Option<HttpError>,
        /// Bytes left in the buffer at the end.
        leftover: usize,
    }

    /// Feeds `input` cut at `cuts` (increasing offsets) the way a
    /// connection would, checking the contract at every call.
    fn drive(limits: Limits, input: &[u8], cuts: &[usize]) -> Outcome {
        let mut framer = Framer::new(limits);
        let mut buf: Vec<u8> = Vec::new();
        let mut out = Outcome::default();
        let mut announced = false;
        let mut from = 0;
        let ends = cuts.iter().copied().chain(std::iter::once(input.len()));
        for to in ends {
            buf.extend_from_slice(&input[from..to]);
            from = to;
            loop {
                // The one-pass reading of a whole request gives what the
                // framer gives, whatever the framer has seen before.
                let whole = frame_whole(&limits, &buf);
                let advanced = framer.advance(&buf);
                if let Some((request, consumed)) = whole {
                    assert_eq!(advanced, Ok(Progress::Complete { request, consumed }));
                }
                match advanced {
                    Ok(Progress::NeedMore) => {
                        assert_eq!(framer.head_done(), announced, "head_done after NeedMore");
                        break;
                    }
                    Ok(Progress::HeadComplete { expect_continue }) => {
                        assert!(!announced, "HeadComplete twice for one request");
                        assert!(framer.head_done());
                        announced = true;
                        out.heads.push((out.done.len(), expect_continue));
                        // Without new bytes, nothing more can happen.
                        assert_eq!(framer.advance(&buf), Ok(Progress::NeedMore));
                        break;
                    }
                    Ok(Progress::Complete { request, consumed }) => {
                        assert!(!framer.head_done());
                        assert!(
                            consumed > 0 && consumed <= buf.len(),
                            "consumed {consumed} of {}",
                            buf.len()
                        );
                        let text = format!("{:?}", request.request(&buf).expect("offsets in buf"));
                        buf.drain(..consumed);
                        out.done.push((text, consumed));
                        announced = false;
                    }
                    Err(error) => {
                        // A failed framer keeps failing the same way.
                        assert_eq!(framer.advance(&buf), Err(error));
                        out.error = Some(error);
                        out.leftover = buf.len();
                        return out;
                    }
                }
            }
        }
        out.leftover = buf.len();
        out
    }

    /// Tiny deterministic generator for split points and mutations.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn below(&mut self, n: usize) -> usize {
            if n == 0 {
                0
            } else {
                (self.next() % n as u64) as usize
            }
        }
    }

    /// The ways `check` cuts an input: whole, one byte at a time, every
    /// (or, for long inputs, many) single cut, and many double cuts.
    fn cut_patterns(len: usize) -> Vec<Vec<usize>> {
        let mut patterns = vec![vec![], (1..len).collect()];
        let stride = if len <= 2048 { 1 } else { len / 256 };
        let mut single: Vec<usize> = (1..len).step_by(stride.max(1)).collect();
        single.extend(
            [len.saturating_sub(2), len.saturating_sub(1)]
                .into_iter()
                .filter(|&c| c > 0),
        );
        patterns.extend(single.into_iter().map(|c| vec![c]));
        if len <= 120 {
            for a in 1..len {
                for b in a + 1..len {
                    patterns.push(vec![a, b]);
                }
            }
        } else {
            let mut rng = Lcg(len as u64);
            for _ in 0..64 {
                let a = 1 + rng.below(len - 1);
                let b = 1 + rng.below(len - 1);
                let (a, b) = if a <= b { (a, b) } else { (b, a) };
                patterns.push(if a == b { vec![a] } else { vec![a, b] });
            }
        }
        patterns
    }

    /// Every way of cutting `input` gives `want` requests, then `error`
    /// (or nothing left over), with `HeadComplete` flags from `continues`.
    fn check_with(
        limits: Limits,
        input: &[u8],
        want: &[(Request, usize)],
        error: Option<E>,
        continues: &[bool],
    ) {
        for cuts in cut_patterns(input.len()) {
            let out = drive(limits, input, &cuts);
            let label = || {
                format!(
                    "input {:?} cut at {cuts:?}",
                    String::from_utf8_lossy(&input[..input.len().min(200)])
                )
            };
            let want: Vec<(String, usize)> =
                want.iter().map(|(r, n)| (format!("{r:?}"), *n)).collect();
            assert_eq!(out.done, want, "requests differ: {}", label());
            assert_eq!(out.error, error, "error differs: {}", label());
            if error.is_none() {
                assert_eq!(out.leftover, 0, "bytes left: {}", label());
            }
            for (index, flag) in out.heads {
                assert_eq!(
                    flag,
                    continues.get(index).copied().unwrap_or(false),
                    "expect_continue: {}",
                    label()
                );
            }
        }
    }

    /// The field names matched a word at a time (`Known::at_line_start`)
    /// read as httparse reads them: every byte of the first 16 of each
    /// field line, replaced by each of the 256 values, gives from the
    /// one-pass reading what the byte-by-byte reading gives, or leaves it
    /// to that.
    #[test]
    fn word_matched_names_read_as_httparse_reads_them() {
        let heads: [&[u8]; 3] = [
            b"POST /v1/pairs/p/a/messages HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
              Authorization: Bearer local.0.1.abc\r\nContent-Length: 2\r\n\r\nhi",
            b"GET /v1/pairs/p/a/events?after=1 HTTP/1.1\r\nCONNECTION: close\r\n\
              idempotency-key: k1\r\nhost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length:0\r\nHost:h\r\nAccept: */*\r\n\r\n",
        ];
        let mut checked = 0;
        for head in heads {
            let lines = head
                .windows(2)
                .enumerate()
                .filter(|(_, w)| *w == b"\r\n")
                .map(|(i, _)| i + 2)
                .filter(|&i| i + 2 <= head.len() && &head[i..i + 2] != b"\r\n");
            for start in lines {
                for at in start..(start + 16).min(head.len()) {
                    for b in 0..=255u8 {
                        let mut input = head.to_vec();
                        input[at] = b;
                        if let Some((request, consumed)) = frame_whole(&LIMITS, &input) {
                            // The framer given the first byte alone reads
                            // the head byte by byte, and its fields with
                            // httparse.
                            let mut framer = Framer::new(LIMITS);
                            assert_eq!(framer.advance(&input[..1]), Ok(Progress::NeedMore));
                            let framed = framer.advance(&input);
                            assert_eq!(
                                framed,
                                Ok(Progress::Complete { request, consumed }),
                                "{:?}",
                                input.escape_ascii().to_string()
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 1000, "only {checked} mutations framed whole");
    }

    fn check_ok(input: &[u8], want: Request) {
        check_with(LIMITS, input, &[(want, input.len())], None, &[]);
    }

    fn check_err(input: &[u8], error: E) {
        check_with(LIMITS, input, &[], Some(error), &[]);
    }

    fn req(method: Method, target: &str, version: Version) -> Request<'_> {
        Request {
            method,
            target: target.as_bytes(),
            version,
            keep_alive: version == Version::Http11,
            authorization: None,
            idempotency_key: None,
            host_fields: 0,
            host_valid: true,
            body: b"",
        }
    }

    fn get(target: &str) -> Request<'_> {
        req(Method::Get, target, Version::Http11)
    }

    fn post(body: &[u8]) -> Request<'_> {
        Request {
            body,
            ..req(Method::Post, "/", Version::Http11)
        }
    }

    /// Asserts that `progress` is the whole `want`, framed from `buf` and
    /// `consumed` bytes long.
    fn assert_complete(
        progress: Result<Progress, HttpError>,
        buf: &[u8],
        want: Request,
        consumed: usize,
    ) {
        match progress {
            Ok(Progress::Complete {
                request,
                consumed: n,
            }) => {
                assert_eq!(request.request(buf), Ok(want));
                assert_eq!(n, consumed);
            }
            other => panic!("not a whole request: {other:?}"),
        }
    }

    fn once(framer: &mut Framer, buf: &[u8]) -> Result<Progress, HttpError> {
        framer.advance(buf)
    }

    #[test]
    fn valid_requests() {
        let cases: Vec<(&[u8], Request)> = vec![
            (
                b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
                Request { host_fields: 1, ..get("/") },
            ),
            (
                b"GET / HTTP/1.1\r\nhost: a\r\nHOST: b\r\n\r\n",
                Request { host_fields: 2, ..get("/") },
            ),
            (b"GET /v1/pairs/x?wait=30&a=%20b HTTP/1.1\r\n\r\n", get("/v1/pairs/x?wait=30&a=%20b")),
            (b"OPTIONS * HTTP/1.1\r\n\r\n", req(Method::Options, "*", Version::Http11)),
            (b"GET http://h/p HTTP/1.1\r\n\r\n", get("http://h/p")),
            (b"HEAD /h HTTP/1.1\r\n\r\n", req(Method::Head, "/h", Version::Http11)),
            (b"GET / HTTP/1.0\r\n\r\n", req(Method::Get, "/", Version::Http10)),
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                req(Method::Get, "/", Version::Http10),
            ),
            (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", Request { keep_alive: false, ..get("/") }),
            (
                b"GET / HTTP/1.1\r\nConnection: Upgrade ,CLOSE\r\n\r\n",
                Request { keep_alive: false, ..get("/") },
            ),
            (
                b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nconnection: close\r\n\r\n",
                Request { keep_alive: false, ..get("/") },
            ),
            // `closed` is not the token `close`.
            (b"GET / HTTP/1.1\r\nConnection: closed\r\n\r\n", get("/")),
            (
                b"GET / HTTP/1.1\r\naUtHoRiZaTiOn:   Bearer abc.DEF~1  \r\nIDEMPOTENCY-KEY:\tk-1\t\r\n\r\n",
                Request {
                    authorization: Some(&b"Bearer abc.DEF~1"[..]),
                    idempotency_key: Some(&b"k-1"[..]),
                    ..get("/")
                },
            ),
            (b"GET / HTTP/1.1\r\nX-Empty:\r\nX-Spaces:   \r\n\r\n", get("/")),
            (b"GET / HTTP/1.1\r\nX-Utf8: caf\xc3\xa9\r\n\r\n", get("/")),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", post(b"hello")),
            (b"POST / HTTP/1.1\r\ncontent-length:  5 \r\n\r\nhello", post(b"hello")),
            (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", post(b"")),
            (b"POST / HTTP/1.1\r\nContent-Length: 0005\r\n\r\nhello", post(b"hello")),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
                post(b"hello"),
            ),
            // Copies are compared by decimal value.
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 05\r\n\r\nhello",
                post(b"hello"),
            ),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                Request { body: b"abc", ..get("/") },
            ),
            (
                b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi",
                Request { body: b"hi", ..req(Method::Post, "/", Version::Http10) },
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                post(b"hello world"),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding:  chunked \r\n\r\n0\r\n\r\n",
                post(b""),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\nA\r\nABCDEFGHIJ\r\n0\r\n\r\n",
                post(b"0123456789ABCDEFGHIJ"),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000005\r\nhello\r\n0000000000000000\r\n\r\n",
                post(b"hello"),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5;a=b;c\r\nhello\r\n\
                  3 ; q = \"x\\\"y;z\" ;r\t;s=t\r\nabc\r\n\
                  1;e=\"\"\r\n!\r\n\
                  0;last\r\n\r\n",
                post(b"helloabc!"),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                  2\r\nhi\r\n0\r\nX-Checksum: abc\r\nContent-Length: 99\r\nX-Empty:\r\n\r\n",
                post(b"hi"),
            ),
            (b"\r\nGET / HTTP/1.1\r\n\r\n", get("/")),
            (b"\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n", get("/")),
        ];
        for (input, want) in cases {
            check_ok(input, want);
        }
    }

    #[test]
    fn chunk_data_containing_framing_bytes() {
        // "4\r\n" then the 4 data bytes "\r\n0\r" then CRLF, then the last chunk.
        let input =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n\r\n0\r\r\n0\r\n\r\n";
        check_ok(input, post(b"\r\n0\r"));
    }

    #[test]
    fn methods() {
        let cases: [(&[u8], Method); 11] = [
            (b"GET", Method::Get),
            (b"HEAD", Method::Head),
            (b"POST", Method::Post),
            (b"PUT", Method::Put),
            (b"DELETE", Method::Delete),
            (b"OPTIONS", Method::Options),
            (b"PATCH", Method::Patch),
            (b"get", Method::Other),
            (b"M-SEARCH", Method::Other),
            (b"PROPFIND", Method::Other),
            (b"ABCDEFGHIJKLMNOP", Method::Other),
        ];
        for (token, method) in cases {
            let mut input = token.to_vec();
            input.extend_from_slice(b" /m HTTP/1.1\r\n\r\n");
            check_ok(&input, req(method, "/m", Version::Http11));
        }
        // One byte over METHOD_BYTES_MAX.
        check_err(b"ABCDEFGHIJKLMNOPQ /m HTTP/1.1\r\n\r\n", E::NotImplemented);
    }

    #[test]
    fn bad_request_lines() {
        let cases: Vec<(&[u8], E)> = vec![
            (b"GET  / HTTP/1.1\r\n\r\n", E::BadRequest),
            (b"GET /  HTTP/1.1\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/1.1 \r\n\r\n", E::BadRequest),
            (b" GET / HTTP/1.1\r\n\r\n", E::BadRequest),
            (b"GET\t/ HTTP/1.1\r\n\r\n", E::BadRequest),
            (b"GET /\tx HTTP/1.1\r\n\r\n", E::BadRequest),
            (b"GET /a\x7fb HTTP/1.1\r\n\r\n", E::BadRequest),
            (b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", E::BadRequest),
            (b"GET /\x00 HTTP/1.1\r\n\r\n", E::BadRequest),
            (b"GET  HTTP/1.1\r\n\r\n", E::BadRequest),
            (b"GET /\r\n\r\n", E::BadRequest),
            (b"GET / \r\n\r\n", E::BadRequest),
            (b"GET / HTTP/1.1\n\n", E::BadRequest),
            (b"GET / HTTP/1.1\r\r\n\r\n", E::BadRequest),
            (b"GET / http/1.1\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/1.1x\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/1.10\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/11.1\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/1\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/1.\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/a.1\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/1,1\r\n\r\n", E::BadRequest),
            (b"G(T / HTTP/1.1\r\n\r\n", E::BadRequest),
            (b"GET/ HTTP/1.1\r\n\r\n", E::BadRequest),
            (b"/ HTTP/1.1\r\n\r\n", E::BadRequest),
            (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                E::BadRequest,
            ),
            (b"\nGET / HTTP/1.1\r\n\r\n", E::BadRequest),
            (b"\r\rGET / HTTP/1.1\r\n\r\n", E::BadRequest),
            (b" \r\nGET / HTTP/1.1\r\n\r\n", E::BadRequest),
            (b"\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/2.0\r\n\r\n", E::VersionNotSupported),
            (b"GET / HTTP/1.2\r\n\r\n", E::VersionNotSupported),
            (b"GET / HTTP/0.9\r\n\r\n", E::VersionNotSupported),
            (b"GET / HTTP/3.0\r\n\r\n", E::VersionNotSupported),
            (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", E::VersionNotSupported),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", E::VersionNotSupported),
        ];
        for (input, error) in cases {
            check_err(input, error);
        }
    }

    #[test]
    fn bad_header_fields() {
        let cases: Vec<(&[u8], E)> = vec![
            (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/1.1\r\n Host: x\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/1.1\r\nHost: x\n\r\n", E::BadRequest),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\n", E::BadRequest),
            (b"GET / HTTP/1.1\r\nHost: x\r\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/1.1\r\nHost: x\ry: z\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/1.1\r\n\r\r", E::BadRequest),
            (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/1.1\r\n: empty-name\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/1.1\r\nX\x01: a\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/1.1\r\nH\xc3\xa9: a\r\n\r\n", E::BadRequest),
            (b"GET / HTTP/1.1\r\nX(Y): a\r\n\r\n", E::BadRequest),
            (
                b"GET / HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer a\r\n\r\n",
                E::BadRequest,
            ),
            (
                b"GET / HTTP/1.1\r\nIdempotency-Key: a\r\nidempotency-key: b\r\n\r\n",
                E::BadRequest,
            ),
        ];
        for (input, error) in cases {
            check_err(input, error);
        }
    }

    #[test]
    fn content_length_rules() {
        let bad: [&[u8]; 12] = [
            b"+5",
            b"-5",
            b"5 5",
            b"5,5",
            b"5, 5",
            b"",
            b"0x5",
            b"5a",
            b"5.0",
            b"\"5\"",
            b" ",
            b"\xd9\xa5",
        ];
        for value in bad {
            let mut input = b"POST / HTTP/1.1\r\nContent-Length: ".to_vec();
            input.extend_from_slice(value);
            input.extend_from_slice(b"\r\n\r\nhello");
            check_err(&input, E::BadRequest);
        }
        check_err(
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            E::BadRequest,
        );
        check_err(
            b"POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello",
            E::BadRequest,
        );
        // Syntactically fine but huge: too large, decided from the head alone.
        for value in [
            "65537",
            "18446744073709551616",
            "99999999999999999999999999999999",
        ] {
            let input = format!("POST / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n");
            check_err(input.as_bytes(), E::PayloadTooLarge);
        }
    }

    #[test]
    fn transfer_encoding_rules() {
        let not_implemented: [&[u8]; 11] = [
            b"Transfer-Encoding: gzip\r\n",
            b"Transfer-Encoding: Chunked\r\n",
            b"Transfer-Encoding: CHUNKED\r\n",
            b"Transfer-Encoding: chunked, chunked\r\n",
            b"Transfer-Encoding: gzip, chunked\r\n",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            b"Transfer-Encoding:\r\n",
            b"Transfer-Encoding: chunked;q=1\r\n",
            b"Transfer-Encoding: identity\r\n",
            b"Transfer-Encoding: \"chunked\"\r\n",
        ];
        for fields in not_implemented {
            let mut input = b"POST / HTTP/1.1\r\n".to_vec();
            input.extend_from_slice(fields);
            input.extend_from_slice(b"\r\n0\r\n\r\n");
            check_err(&input, E::NotImplemented);
        }
        let bad: [&[u8]; 5] = [
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: gzip\r\n\r\nhello",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: gzip\r\n\r\n",
        ];
        for input in bad {
            check_err(input, E::BadRequest);
        }
    }

    fn chunked(body: &str) -> Vec<u8> {
        format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{body}").into_bytes()
    }

    #[test]
    fn bad_chunked_bodies() {
        let cases: Vec<(&str, E)> = vec![
            ("00000000000000000\r\n\r\n", E::BadRequest),
            ("00000000000000001\r\nx\r\n0\r\n\r\n", E::BadRequest),
            ("\r\n", E::BadRequest),
            (";a\r\n", E::BadRequest),
            ("g\r\n", E::BadRequest),
            ("-1\r\n", E::BadRequest),
            ("+1\r\nx\r\n0\r\n\r\n", E::BadRequest),
            ("0x5\r\nhello\r\n0\r\n\r\n", E::BadRequest),
            (" 5\r\nhello\r\n0\r\n\r\n", E::BadRequest),
            ("5 \r\nhello\r\n0\r\n\r\n", E::BadRequest),
            ("5;\r\nhello\r\n0\r\n\r\n", E::BadRequest),
            ("5;a=\r\nhello\r\n0\r\n\r\n", E::BadRequest),
            ("5;a \r\nhello\r\n0\r\n\r\n", E::BadRequest),
            ("5;a b\r\nhello\r\n0\r\n\r\n", E::BadRequest),
            ("5;a=b c\r\nhello\r\n0\r\n\r\n", E::BadRequest),
            ("5;a=\"open\r\nhello\r\n0\r\n\r\n", E::BadRequest),
            ("5;a=\"x\"y\r\nhello\r\n0\r\n\r\n", E::BadRequest),
            ("5;a=\"\\\r\nhello\r\n0\r\n\r\n", E::BadRequest),
            ("5;a\nhello\r\n0\r\n\r\n", E::BadRequest),
            ("5\nhello\r\n0\r\n\r\n", E::BadRequest),
            ("5\r\rhello\r\n0\r\n\r\n", E::BadRequest),
            ("5\r\nhelloX\r\n0\r\n\r\n", E::BadRequest),
            ("5\r\nhello\n0\r\n\r\n", E::BadRequest),
            ("5\r\nhello\r\r\n0\r\n\r\n", E::BadRequest),
            ("5\r\nhello\r\n0\r\n\r\r", E::BadRequest),
            ("5\r\nhello\r\n0\r\n\n", E::BadRequest),
            ("0\r\nX\r\n\r\n", E::BadRequest),
            ("0\r\nX: a\r\n b\r\n\r\n", E::BadRequest),
            ("0\r\n X: a\r\n\r\n", E::BadRequest),
            ("0\r\nX: a\n\r\n", E::BadRequest),
            ("0\r\nX : a\r\n\r\n", E::BadRequest),
            ("0\r\nX: a\x7f\r\n\r\n", E::BadRequest),
            ("10001\r\n", E::PayloadTooLarge),
            ("FFFFFFFFFFFFFFFF\r\n", E::PayloadTooLarge),
        ];
        for (body, error) in cases {
            check_err(&chunked(body), error);
        }
    }

    #[test]
    fn pipelined_requests_in_order() {
        let parts: Vec<(Vec<u8>, Request)> = vec![
            (b"GET /1 HTTP/1.1\r\n\r\n".to_vec(), get("/1")),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".to_vec(), post(b"hello")),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nAuthorization: Bearer t\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n".to_vec(),
                Request { authorization: Some(&b"Bearer t"[..]), ..post(b"abc") },
            ),
            (b"\r\nGET /4 HTTP/1.0\r\n\r\n".to_vec(), req(Method::Get, "/4", Version::Http10)),
            (b"DELETE /5 HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(), Request {
                keep_alive: false,
                ..req(Method::Delete, "/5", Version::Http11)
            }),
        ];
        let input: Vec<u8> = parts.iter().flat_map(|(bytes, _)| bytes.clone()).collect();
        let want: Vec<(Request, usize)> = parts
            .iter()
            .map(|(bytes, r)| (r.clone(), bytes.len()))
            .collect();
        check_with(LIMITS, &input, &want, None, &[]);

        // A valid request then an invalid one: the first is answered, then the error.
        let input = b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/9.9\r\n\r\n";
        check_with(
            LIMITS,
            input,
            &[(get("/1"), 19)],
            Some(E::VersionNotSupported),
            &[],
        );
        let input = b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        check_with(
            LIMITS,
            input,
            &[(post(b"hi"), 40)],
            Some(E::NotImplemented),
            &[],
        );
    }

    #[test]
    fn expect_continue() {
        let input = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello";
        check_with(
            LIMITS,
            input,
            &[(post(b"hello"), input.len())],
            None,
            &[true],
        );
        let input = b"POST / HTTP/1.1\r\nexpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n";
        check_with(LIMITS, input, &[(post(b"x"), input.len())], None, &[true]);
        // Step by step: head alone announces once, then the body completes.
        let head = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
        let mut framer = Framer::new(LIMITS);
        assert!(!framer.head_done());
        assert_eq!(once(&mut framer, &head[..10]), Ok(Progress::NeedMore));
        assert_eq!(
            once(&mut framer, head),
            Ok(Progress::HeadComplete {
                expect_continue: true
            })
        );
        assert!(framer.head_done());
        assert_eq!(once(&mut framer, head), Ok(Progress::NeedMore));
        let mut buf = head.to_vec();
        buf.extend_from_slice(b"hel");
        assert_eq!(once(&mut framer, &buf), Ok(Progress::NeedMore));
        buf.extend_from_slice(b"loGET");
        assert_complete(
            once(&mut framer, &buf),
            &buf,
            post(b"hello"),
            head.len() + 5,
        );
        assert!(!framer.head_done());
        assert_eq!(once(&mut framer, b"GET"), Ok(Progress::NeedMore));

        // No continue without a body, for HTTP/1.0, or for other expectations.
        let no: [&[u8]; 4] = [
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
            b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
        ];
        for head in no {
            let mut framer = Framer::new(LIMITS);
            let progress = once(&mut framer, head);
            if head.ends_with(b"0\r\n\r\n") {
                assert!(
                    matches!(progress, Ok(Progress::Complete { .. })),
                    "{progress:?}"
                );
            } else {
                assert_eq!(
                    progress,
                    Ok(Progress::HeadComplete {
                        expect_continue: false
                    })
                );
            }
        }
    }

    #[test]
    fn usual_heads_are_read_in_one_pass() {
        let whole = |input: &[u8]| {
            HeadScan::new()
                .scan_whole(input, &LIMITS)
                .map(|(end, _)| end)
        };
        let usual: [&[u8]; 3] = [
            b"GET /v1/pairs/p/a/events?after=3 HTTP/1.1\r\nHost: h:1\r\nAuthorization: Bearer n.1.2.x\r\n\r\n",
            b"POST /v1/pairs/p/a/messages HTTP/1.1\r\nContent-Length: 2\r\nX-A:\t\x80 v\t\r\n\r\nhi",
            b"DELETE / HTTP/1.0\r\n\r\n",
        ];
        for input in usual {
            let head_end = input.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            assert_eq!(
                whole(input),
                Some(head_end),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        // Everything else goes byte by byte (and gets its exact answer there).
        let other: [&[u8]; 10] = [
            b"\r\nGET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\n",
            b"GET / HTTP/1.1\r\n folded\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\nC: d\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\n:v\r\n\r\n",
        ];
        for input in other {
            assert_eq!(whole(input), None, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn tchar_table_is_rfc_9110() {
        let spelled =
            b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        for b in 0..=255u8 {
            assert_eq!(is_tchar(b), spelled.contains(&b), "byte {b:#04x}");
        }
    }

    #[test]
    fn framed_request_reads_only_its_own_buffer() {
        let input = b"POST /x HTTP/1.1\r\nAuthorization: Bearer t\r\nContent-Length: 2\r\n\r\nhi";
        let Ok(Progress::Complete { request, .. }) = Framer::new(LIMITS).advance(input) else {
            panic!("a whole request");
        };
        let want = Request {
            target: b"/x",
            authorization: Some(&b"Bearer t"[..]),
            ..post(b"hi")
        };
        assert_eq!(request.request(input), Ok(want));
        // A shorter buffer than the one framed: refused, not misread.
        assert_eq!(request.request(&input[..40]), Err(HttpError::BadRequest));
        // The bytes after the request (as if they were dropped too soon).
        let pipelined = b"GET /a HTTP/1.1\r\nAuthorization: xy\r\n\r\nGET /b HTTP/1.1\r\nX: 1234567890\r\nY: 0\r\n\r\n";
        let Ok(Progress::Complete { request, consumed }) = Framer::new(LIMITS).advance(pipelined)
        else {
            panic!("a whole request");
        };
        assert_eq!(
            request.request(&pipelined[consumed..]),
            Err(HttpError::BadRequest)
        );
    }

    #[test]
    fn whole_request_skips_head_complete() {
        let input = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi";
        let mut framer = Framer::new(LIMITS);
        assert_complete(once(&mut framer, input), input, post(b"hi"), input.len());
    }

    fn with_target(target_bytes: usize) -> Vec<u8> {
        let mut input = b"GET /".to_vec();
        input.resize(4 + target_bytes, b'a');
        input.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        input
    }

    #[test]
    fn target_limit() {
        let input = with_target(8192);
        check_ok(
            &input,
            get(std::str::from_utf8(&input[4..4 + 8192]).unwrap()),
        );
        check_err(&with_target(8193), E::UriTooLong);
        // Refused from the target bytes alone, well before head_bytes_max.
        let mut framer = Framer::new(LIMITS);
        let partial = &with_target(8193)[..4 + 8192];
        assert_eq!(once(&mut framer, partial), Ok(Progress::NeedMore));
        let partial = &with_target(8193)[..4 + 8193];
        assert_eq!(once(&mut framer, partial), Err(E::UriTooLong));
        // With the longest method, still within 32 bytes of the limit.
        let mut line = b"ABCDEFGHIJKLMNOP /".to_vec();
        line.resize(line.len() - 1 + 8193, b'a');
        assert!(line.len() <= 8192 + 32);
        assert_eq!(Framer::new(LIMITS).advance(&line), Err(E::UriTooLong));
    }

    /// A head of exactly `head_bytes` bytes, padded with one field.
    fn with_head(head_bytes: usize) -> Vec<u8> {
        let start = b"GET / HTTP/1.1\r\nX-Pad: ";
        let mut input = start.to_vec();
        input.resize(head_bytes - 4, b'p');
        input.extend_from_slice(b"\r\n\r\n");
        assert_eq!(input.len(), head_bytes);
        input
    }

    #[test]
    fn head_limit() {
        check_ok(&with_head(16384), get("/"));
        check_err(&with_head(16385), E::HeadersTooLarge);
        // Leading empty lines are not part of the head.
        let mut input = b"\r\n\r\n".to_vec();
        input.extend_from_slice(&with_head(16384));
        check_ok(&input, get("/"));
        // Refused as soon as the excess byte arrives, without the end.
        let mut framer = Framer::new(LIMITS);
        let input = with_head(16385);
        assert_eq!(once(&mut framer, &input[..16384]), Ok(Progress::NeedMore));
        assert_eq!(once(&mut framer, &input[..16385]), Err(E::HeadersTooLarge));
    }

    fn with_fields(count: usize) -> Vec<u8> {
        let mut input = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..count {
            input.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        input.extend_from_slice(b"\r\n");
        input
    }

    #[test]
    fn field_count_limit() {
        check_ok(&with_fields(FEW_FIELDS), get("/"));
        check_ok(&with_fields(FEW_FIELDS + 1), get("/"));
        check_ok(&with_fields(1000), get("/"));
        // As many of the shortest lines as fit 16 KiB: no count limit
        // below the byte limit.
        let fit = (crate::limits::HEAD_BYTES_MAX - b"GET / HTTP/1.1\r\n\r\n".len()) / 4;
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        head.extend(b"a:\r\n".repeat(fit));
        head.extend_from_slice(b"\r\n");
        assert!(head.len() <= crate::limits::HEAD_BYTES_MAX);
        check_ok(&head, get("/"));
        // One more line is over the byte limit, and refused for that.
        let mut over = b"GET / HTTP/1.1\r\n".to_vec();
        over.extend(b"a:\r\n".repeat(fit + 1));
        over.extend_from_slice(b"\r\n");
        check_err(&over, E::HeadersTooLarge);
    }

    #[test]
    fn body_limit_content_length() {
        let body = vec![b'b'; 65536];
        let mut input = b"POST / HTTP/1.1\r\nContent-Length: 65536\r\n\r\n".to_vec();
        input.extend_from_slice(&body);
        check_ok(&input, post(&body));
        // 413 from the head alone: no body byte has been sent.
        check_err(
            b"POST / HTTP/1.1\r\nContent-Length: 65537\r\n\r\n",
            E::PayloadTooLarge,
        );
    }

    #[test]
    fn body_limit_chunked() {
        let body = vec![b'c'; 65536];
        let mut one_chunk = chunked("10000\r\n");
        one_chunk.extend_from_slice(&body);
        one_chunk.extend_from_slice(b"\r\n0\r\n\r\n");
        check_ok(&one_chunk, post(&body));

        let mut two_chunks = chunked("8000\r\n");
        two_chunks.extend_from_slice(&body[..0x8000]);
        two_chunks.extend_from_slice(b"\r\n8000\r\n");
        two_chunks.extend_from_slice(&body[..0x8000]);
        two_chunks.extend_from_slice(b"\r\n0\r\n\r\n");
        check_ok(&two_chunks, post(&body));

        check_err(&chunked("10001\r\n"), E::PayloadTooLarge);
        let mut over = chunked("8000\r\n");
        over.extend_from_slice(&body[..0x8000]);
        over.extend_from_slice(b"\r\n8001\r\n");
        check_err(&over, E::PayloadTooLarge);
        // Known from the digits, before the size line ends.
        assert_eq!(
            Framer::new(LIMITS).advance(&chunked("10001")),
            Err(E::PayloadTooLarge)
        );
    }

    #[test]
    fn many_small_chunks_fed_byte_by_byte() {
        // 65536 one-byte chunks: linear work, or this test takes minutes.
        let mut input = chunked("");
        for _ in 0..65536 {
            input.extend_from_slice(b"1\r\nz\r\n");
        }
        input.extend_from_slice(b"0\r\n\r\n");
        let cuts: Vec<usize> = (1..input.len()).collect();
        let out = drive(LIMITS, &input, &cuts);
        assert_eq!(out.error, None);
        let want = format!("{:?}", post(&[b'z'; 65536]));
        assert_eq!(out.done, vec![(want, input.len())]);
        // One more chunk is one byte too many.
        let mut input = chunked("");
        for _ in 0..65536 {
            input.extend_from_slice(b"1\r\nz\r\n");
        }
        input.extend_from_slice(b"1\r\n");
        assert_eq!(Framer::new(LIMITS).advance(&input), Err(E::PayloadTooLarge));
    }

    #[test]
    fn chunk_line_limit() {
        let line = |total: usize| {
            // "5;" + name + CRLF == total bytes.
            let mut body = String::from("5;");
            body.push_str(&"e".repeat(total - 4));
            body.push_str("\r\nhello\r\n0\r\n\r\n");
            chunked(&body)
        };
        check_ok(&line(CHUNK_LINE_BYTES_MAX), post(b"hello"));
        check_err(&line(CHUNK_LINE_BYTES_MAX + 1), E::BadRequest);
    }

    #[test]
    fn trailer_limit() {
        let trailer = |total: usize| {
            // "X: " + value + CRLF + final CRLF == total bytes.
            let mut body = String::from("0\r\nX: ");
            body.push_str(&"v".repeat(total - 7));
            body.push_str("\r\n\r\n");
            chunked(&body)
        };
        check_ok(&trailer(16384), post(b""));
        check_err(&trailer(16385), E::HeadersTooLarge);
    }

    #[test]
    fn small_limits() {
        let limits = Limits {
            target_bytes_max: 3,
            head_bytes_max: 40,
            body_bytes_max: 4,
        };
        check_with(
            limits,
            b"GET /ab HTTP/1.1\r\n\r\n",
            &[(get("/ab"), 20)],
            None,
            &[],
        );
        check_with(
            limits,
            b"GET /abc HTTP/1.1\r\n\r\n",
            &[],
            Some(E::UriTooLong),
            &[],
        );
        // 40 bytes of head exactly, then 41.
        let at = b"GET / HTTP/1.1\r\nX: 01234567890123456\r\n\r\n";
        assert_eq!(at.len(), 40);
        check_with(limits, at, &[(get("/"), 40)], None, &[]);
        check_with(
            limits,
            b"GET / HTTP/1.1\r\nX: 012345678901234567\r\n\r\n",
            &[],
            Some(E::HeadersTooLarge),
            &[],
        );
        let ok = b"PUT / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd";
        let put = Request {
            body: b"abcd",
            ..req(Method::Put, "/", Version::Http11)
        };
        check_with(limits, ok, &[(put.clone(), ok.len())], None, &[]);
        check_with(
            limits,
            b"PUT / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            &[],
            Some(E::PayloadTooLarge),
            &[],
        );
        let ok = b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n";
        let limits = Limits {
            head_bytes_max: 64,
            ..limits
        };
        check_with(limits, ok, &[(put, ok.len())], None, &[]);
        let over =
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n3\r\nabc\r\n0\r\n\r\n";
        check_with(limits, over, &[], Some(E::PayloadTooLarge), &[]);
        let zero = Limits {
            target_bytes_max: 0,
            head_bytes_max: 0,
            body_bytes_max: 0,
        };
        // The head limit is checked after each byte's syntax: the method's
        // first byte is already one too many.
        check_with(
            zero,
            b"GET / HTTP/1.1\r\n\r\n",
            &[],
            Some(E::HeadersTooLarge),
            &[],
        );
        let no_target = Limits {
            target_bytes_max: 0,
            ..LIMITS
        };
        check_with(
            no_target,
            b"GET / HTTP/1.1\r\n\r\n",
            &[],
            Some(E::UriTooLong),
            &[],
        );
    }

    #[test]
    fn errors_map_to_status_and_code() {
        let all = [
            (E::BadRequest, 400, "bad_request"),
            (E::PayloadTooLarge, 413, "too_large"),
            (E::UriTooLong, 414, "uri_too_long"),
            (E::HeadersTooLarge, 431, "headers_too_large"),
            (E::NotImplemented, 501, "not_implemented"),
            (E::VersionNotSupported, 505, "http_version_not_supported"),
        ];
        for (error, status, code) in all {
            assert_eq!(error.status(), status);
            assert_eq!(error.code(), code);
            assert!(!error.message().is_empty());
            assert!(error.to_string().starts_with(&status.to_string()));
        }
    }

    #[test]
    fn failed_framer_stays_failed() {
        let mut framer = Framer::new(LIMITS);
        assert_eq!(
            once(&mut framer, b"GET / HTTP/2.0\r\n"),
            Err(E::VersionNotSupported)
        );
        assert_eq!(
            once(&mut framer, b"GET / HTTP/1.1\r\n\r\n"),
            Err(E::VersionNotSupported)
        );
        assert!(!framer.head_done());
    }

    #[test]
    fn empty_buffer_needs_more() {
        let mut framer = Framer::new(LIMITS);
        assert_eq!(once(&mut framer, b""), Ok(Progress::NeedMore));
        assert_eq!(once(&mut framer, b"\r\n"), Ok(Progress::NeedMore));
    }

    /// Mutates valid requests at random and feeds them whole, byte by byte
    /// and in random pieces: never a panic, and always the same outcome.
    #[test]
    fn mutations_agree_across_splits() {
        let seeds: [&[u8]; 6] = [
            b"GET /a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhelloGET / HTTP/1.0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"b\"\r\nhello\r\n0\r\nT: v\r\n\r\n",
            b"\r\nPUT /x HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
        ];
        let alphabet: &[u8] = b"\r\n \t:;=\"\\0159aAfFgG-+,/HTP.\x00\x7f\x80";
        let small = Limits {
            target_bytes_max: 12,
            head_bytes_max: 90,
            body_bytes_max: 8,
        };
        let mut rng = Lcg(0x5eed);
        for round in 0..20_000 {
            let mut input = seeds[rng.below(seeds.len())].to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(input.len() + 1);
                let byte = alphabet[rng.below(alphabet.len())];
                match rng.below(3) {
                    0 if at < input.len() => input[at] = byte,
                    1 if at < input.len() => {
                        input.remove(at);
                    }
                    _ => input.insert(at, byte),
                }
            }
            let limits = if round % 2 == 0 { LIMITS } else { small };
            let whole = drive(limits, &input, &[]);
            let bytewise = drive(limits, &input, &(1..input.len()).collect::<Vec<_>>());
            let a = 1 + rng.below(input.len().max(2) - 1);
            let pieces = drive(limits, &input, &[a.min(input.len())]);
            for other in [&bytewise, &pieces] {
                assert_eq!(
                    whole.done,
                    other.done,
                    "{:?}",
                    String::from_utf8_lossy(&input)
                );
                assert_eq!(
                    whole.error,
                    other.error,
                    "{:?}",
                    String::from_utf8_lossy(&input)
                );
                if whole.error.is_none() {
                    // With an error, what was buffered depends on the split.
                    assert_eq!(
                        whole.leftover,
                        other.leftover,
                        "{:?}",
                        String::from_utf8_lossy(&input)
                    );
                }
            }
        }
    }
}
