//! A small HTTP/1.1 client for the load generator: one keep-alive
//! connection per request stream, every request under a deadline, and
//! failures reduced to an [`ErrKind`] that the report counts.
//!
//! It reads exactly what pairlink and nginx send: `Content-Length` bodies,
//! `Transfer-Encoding: chunked` bodies, and bodiless 204/304 answers. A
//! response larger than [`BODY_BYTES_MAX`] is a parse error, so a server
//! gone wrong cannot make the generator grow without bound.
//!
//! Response heads are read by [`parse_head`], which looks at the five
//! headers the client needs and checks the rest as httparse would (status
//! line, header names as tokens, no control characters in values), without
//! httparse's table of headers: the generator's own core is the limit of a
//! relay run, and a head is read twice per message.

use pairlink::io::rt::{Io, Timer};
use pairlink::proto::http::is_tchar;
use pairlink::proto::swar;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::ops::Range;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

/// Largest response head accepted.
pub const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Largest response body accepted.
pub const BODY_BYTES_MAX: usize = 1024 * 1024;
/// Header lines accepted per response; nginx and pairlink send fewer than
/// 16.
const HEADERS_MAX: usize = 32;
/// Room made in the read buffer before a read, at least: a poll answer of
/// a small message fits in one read, and 10,000 idle connections cost
/// 40 MiB of buffers, not more. A buffer grows (doubling) only for a larger
/// response, and never beyond what the limits above let a response be.
const READ_ROOM_BYTES: usize = 4 * 1024;

/// Why a request failed; each kind is a separate counter in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrKind {
    /// The TCP connection could not be opened (refused, or its deadline).
    Connect,
    /// The deadline passed before the whole response arrived.
    Timeout,
    /// A complete response with a status the workload did not expect.
    Status(u16),
    /// A response that is not HTTP/1.1 as we read it, or a body that is not
    /// what the API promises.
    Parse,
    /// The server closed the connection before a complete response.
    Closed,
    /// Another socket error (reset, broken pipe).
    Io,
}

impl ErrKind {
    /// The counter name in the report: `connect`, `timeout`, `status_429`…
    pub fn name(self) -> String {
        match self {
            ErrKind::Connect => "connect".into(),
            ErrKind::Timeout => "timeout".into(),
            ErrKind::Status(code) => format!("status_{code}"),
            ErrKind::Parse => "parse".into(),
            ErrKind::Closed => "closed".into(),
            ErrKind::Io => "io".into(),
        }
    }
}

/// `http://host:port/prefix`, checked and resolved.
#[derive(Clone, Debug)]
pub struct Url {
    /// The socket address to dial.
    pub addr: SocketAddr,
    /// The `Host` header value (`host:port` as given).
    pub host: String,
    /// Path prefix without a trailing slash (empty for the root).
    pub prefix: String,
}

impl Url {
    /// Parses `http://HOST:PORT[/prefix]`. HOST is an IP literal or
    /// `localhost`; without `allow_remote` it must be a loopback address,
    /// so a benchmark never floods a machine by a typo.
    pub fn parse(text: &str, allow_remote: bool) -> Result<Url, String> {
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| format!("{text:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let addr: SocketAddr = if let Some(port) = authority.strip_prefix("localhost:") {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("{text:?}: bad port {port:?}"))?;
            SocketAddr::from(([127, 0, 0, 1], port))
        } else {
            authority.parse().map_err(|_| {
                format!("{text:?}: the host must be an IP address or localhost, with a port")
            })?
        };
        if !allow_remote && !addr.ip().is_loopback() {
            return Err(format!(
                "{text:?}: not a loopback address (pass --allow-remote to benchmark another host)"
            ));
        }
        Ok(Url {
            addr,
            host: authority.to_string(),
            prefix: path.trim_end_matches('/').to_string(),
        })
    }
}

/// A complete response; its body, de-chunked, is in [`Client::body`].
#[derive(Debug, Default)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// `Etag`, kept for Nchan's long-poll cursor.
    pub etag: Option<String>,
    /// `Last-Modified`, kept for Nchan's long-poll cursor.
    pub last_modified: Option<String>,
    /// The server will close the connection after this response.
    pub close: bool,
}

/// Runs `fut` until `deadline`; past it the answer is [`ErrKind::Timeout`]
/// and `fut` is dropped.
pub async fn with_deadline<T>(
    deadline: Instant,
    fut: impl std::future::Future<Output = Result<T, ErrKind>>,
) -> Result<T, ErrKind> {
    // Both polled in place (no future moved into a combinator), the timer
    // only while `fut` is pending.
    let mut fut = std::pin::pin!(fut);
    let mut timer = Timer::at(deadline);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        match Pin::new(&mut timer).poll(cx) {
            Poll::Ready(_) => Poll::Ready(Err(ErrKind::Timeout)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// One open connection with its read buffer.
pub struct Conn {
    stream: Io<TcpStream>,
    /// Received bytes not yet consumed: `buf[..filled]`.
    buf: Vec<u8>,
    filled: usize,
    /// A byte was received since the last request was written.
    received: bool,
}

impl Conn {
    /// Opens a connection with `TCP_NODELAY`, so that a request written in
    /// one piece leaves at once. Failing or missing `deadline`, it is
    /// [`ErrKind::Connect`].
    pub async fn connect(addr: SocketAddr, deadline: Instant) -> Result<Conn, ErrKind> {
        let stream = with_deadline(deadline, async {
            connect(addr).await.map_err(|_| ErrKind::Connect)
        })
        .await
        .map_err(|_| ErrKind::Connect)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            filled: 0,
            received: false,
        })
    }

    /// Writes a whole request.
    pub async fn write(&mut self, request: &[u8]) -> Result<(), ErrKind> {
        self.received = false;
        self.stream.write_all(request).await.map_err(io_kind)
    }

    /// Reads one whole response; its body replaces the contents of `body`
    /// (a buffer the caller keeps, so a response costs no allocation).
    pub async fn read_response(
        &mut self,
        head_request: bool,
        body: &mut Vec<u8>,
    ) -> Result<Response, ErrKind> {
        body.clear();
        // The head.
        let (head_len, mut response, body_kind) = loop {
            match parse_head(&self.buf[..self.filled], head_request)? {
                Some(head) => break head,
                None => {
                    if self.filled >= HEAD_BYTES_MAX {
                        return Err(ErrKind::Parse);
                    }
                    self.fill().await?;
                }
            }
        };
        let status = response.status;
        // 1xx answers are not used by either server; reading past one
        // would need a loop that nothing exercises.
        if (100..200).contains(&status) {
            return Err(ErrKind::Parse);
        }
        // Head and body are consumed together where the body's length is
        // known, so a response read whole leaves an empty buffer and
        // nothing to move.
        match body_kind {
            BodyKind::None => self.consume(head_len),
            BodyKind::Length(n) => {
                let end = head_len + n;
                while self.filled < end {
                    self.fill().await?;
                }
                body.extend_from_slice(&self.buf[head_len..end]);
                self.consume(end);
            }
            BodyKind::Chunked => {
                self.consume(head_len);
                self.read_chunked(body).await?;
            }
            BodyKind::UntilClose => {
                self.consume(head_len);
                loop {
                    if self.filled > BODY_BYTES_MAX {
                        return Err(ErrKind::Parse);
                    }
                    match self.fill().await {
                        Ok(()) => {}
                        Err(ErrKind::Closed) => break,
                        Err(e) => return Err(e),
                    }
                }
                body.extend_from_slice(&self.buf[..self.filled]);
                self.filled = 0;
                response.close = true;
            }
        }
        Ok(response)
    }

    async fn read_chunked(&mut self, body: &mut Vec<u8>) -> Result<(), ErrKind> {
        loop {
            let line_end = self.read_line().await?;
            let size_text =
                std::str::from_utf8(&self.buf[..line_end]).map_err(|_| ErrKind::Parse)?;
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| ErrKind::Parse)?;
            self.consume(line_end + 2);
            if size == 0 {
                // Trailer lines, up to the empty one.
                loop {
                    let end = self.read_line().await?;
                    self.consume(end + 2);
                    if end == 0 {
                        return Ok(());
                    }
                }
            }
            if size > BODY_BYTES_MAX - body.len() {
                return Err(ErrKind::Parse);
            }
            while self.filled < size + 2 {
                self.fill().await?;
            }
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(ErrKind::Parse);
            }
            body.extend_from_slice(&self.buf[..size]);
            self.consume(size + 2);
        }
    }

    /// Waits for a CRLF in the buffer and returns the offset of the CR.
    async fn read_line(&mut self) -> Result<usize, ErrKind> {
        loop {
            if let Some(i) = self.buf[..self.filled]
                .windows(2)
                .position(|w| w == b"\r\n")
            {
                return Ok(i);
            }
            if self.filled >= HEAD_BYTES_MAX {
                return Err(ErrKind::Parse);
            }
            self.fill().await?;
        }
    }

    /// Reads more bytes into the connection's buffer (kept for its life,
    /// so a request costs no allocation here); a closed connection is
    /// [`ErrKind::Closed`].
    async fn fill(&mut self) -> Result<(), ErrKind> {
        if self.buf.len() - self.filled < READ_ROOM_BYTES / 4 {
            let len = (2 * self.buf.len()).max(READ_ROOM_BYTES);
            self.buf.resize(len, 0);
        }
        let n = self
            .stream
            .read(&mut self.buf[self.filled..])
            .await
            .map_err(io_kind)?;
        if n == 0 {
            return Err(ErrKind::Closed);
        }
        self.received = true;
        self.filled += n;
        Ok(())
    }

    /// Drops the first `n` received bytes; what follows them, if anything,
    /// moves to the front.
    fn consume(&mut self, n: usize) {
        if n < self.filled {
            self.buf.copy_within(n..self.filled, 0);
        }
        self.filled -= n;
    }

    /// True when bytes were received that no response claimed yet.
    pub fn has_unread(&self) -> bool {
        self.filled > 0
    }
}

enum BodyKind {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Reads the response head at the start of `buf`: its length, the
/// response (status and the headers kept) and how its body is framed;
/// `None` while it is incomplete. Lines end in CRLF (or LF alone, as
/// httparse allows).
fn parse_head(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<(usize, Response, BodyKind)>, ErrKind> {
    let Some((line, mut at)) = next_line(buf, 0)? else {
        return Ok(None);
    };
    // `HTTP/1.x NNN[ reason]`
    let minor = match line {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', v @ (b'0' | b'1'), b' ', ..] => *v - b'0',
        _ => return Err(ErrKind::Parse),
    };
    let status = match &line[9..] {
        [a, b, c, rest @ ..] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
            if !(rest.is_empty() || rest[0] == b' ') {
                return Err(ErrKind::Parse);
            }
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(ErrKind::Parse),
    };
    let mut response = Response {
        status,
        close: minor == 0,
        ..Response::default()
    };
    let mut length = None;
    let mut chunked = false;
    let mut headers = 0;
    loop {
        let Some((line, next)) = next_line(buf, at)? else {
            return Ok(None);
        };
        at = next;
        if line.is_empty() {
            break;
        }
        headers += 1;
        if headers > HEADERS_MAX {
            return Err(ErrKind::Parse);
        }
        // A name (a token), then the colon.
        let colon = line
            .iter()
            .position(|&b| !is_tchar(b))
            .ok_or(ErrKind::Parse)?;
        if colon == 0 || line[colon] != b':' {
            return Err(ErrKind::Parse);
        }
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        header(name, value, &mut response, &mut length, &mut chunked)?;
    }
    let kind = if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        BodyKind::None
    } else if chunked {
        BodyKind::Chunked
    } else if let Some(n) = length {
        BodyKind::Length(n)
    } else {
        BodyKind::UntilClose
    };
    Ok(Some((at, response, kind)))
}

/// The line of `buf` starting at `at`, without its end, and where the next
/// starts; `None` if it has not ended yet. A control character other than
/// a tab (or the CR of the end) is a parse error.
fn next_line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, ErrKind> {
    let rest = &buf[at..];
    let mut from = 0;
    while let Some(k) = find_control(&rest[from..], 0x7f, 0x7f) {
        let i = from + k;
        match rest[i] {
            b'\t' => from = i + 1,
            b'\n' => return Ok(Some((&rest[..i], at + i + 1))),
            b'\r' => {
                return match rest.get(i + 1) {
                    Some(b'\n') => Ok(Some((&rest[..i], at + i + 2))),
                    Some(_) => Err(ErrKind::Parse),
                    None => Ok(None),
                }
            }
            _ => return Err(ErrKind::Parse),
        }
    }
    Ok(None)
}

/// The index of the first byte of `s` that is a control character (below
/// 0x20) or `x` or `y`, looking at eight bytes at a time: the line ends of
/// a response head, the quotes and escapes of a JSON string.
pub fn find_control(s: &[u8], x: u8, y: u8) -> Option<usize> {
    swar::find(
        s,
        |w| swar::below(w, 0x20) | swar::eq(w, x) | swar::eq(w, y),
        |b| b < 0x20 || b == x || b == y,
    )
}

/// Takes in one header: the framing of the body, whether the connection
/// stays open, and Nchan's cursor.
fn header(
    name: &[u8],
    value: &[u8],
    response: &mut Response,
    length: &mut Option<usize>,
    chunked: &mut bool,
) -> Result<(), ErrKind> {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    let text = || std::str::from_utf8(value).map_err(|_| ErrKind::Parse);
    // The length first: a cheap test that passes most names by.
    match name.len() {
        14 if is("content-length") => {
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(ErrKind::Parse);
            }
            let n = value.iter().try_fold(0usize, |n, &d| {
                n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
            });
            match n {
                Some(n) if n <= BODY_BYTES_MAX => *length = Some(n),
                _ => return Err(ErrKind::Parse),
            }
        }
        17 if is("transfer-encoding") => {
            *chunked = value.eq_ignore_ascii_case(b"chunked");
            if !*chunked {
                return Err(ErrKind::Parse);
            }
        }
        10 if is("connection") => {
            let tokens = || value.split(|&b| b == b',').map(<[u8]>::trim_ascii);
            if tokens().any(|t| t.eq_ignore_ascii_case(b"close")) {
                response.close = true;
            } else if tokens().any(|t| t.eq_ignore_ascii_case(b"keep-alive")) {
                response.close = false;
            }
        }
        4 if is("etag") => response.etag = Some(text()?.to_string()),
        13 if is("last-modified") => response.last_modified = Some(text()?.to_string()),
        _ => {}
    }
    Ok(())
}

fn io_kind(e: io::Error) -> ErrKind {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => ErrKind::Closed,
        _ => ErrKind::Io,
    }
}

/// A non-blocking connect on the generator's event loop
/// (`pairlink::io::rt`): the socket is made non-blocking before
/// `connect(2)`, registered with the loop, and the connect is complete at
/// the first write edge after which the socket has no pending error and a
/// peer. It never blocks the thread, so hundreds of connects (a run's
/// set-up, reconnects after failures) overlap, and one whose SYN is lost
/// to a full listen backlog waits for the kernel's retry without holding
/// up the other connections.
///
/// The socket comes from `rustix::net` (the `net` feature of rustix, which
/// async-io under smol turns on), since `std` cannot connect without
/// blocking.
async fn connect(addr: SocketAddr) -> io::Result<Io<TcpStream>> {
    use rustix::net::{ipproto, AddressFamily, SocketFlags, SocketType};
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        Some(ipproto::TCP),
    )?;
    match rustix::net::connect(&fd, &addr) {
        // EINTR: the connect goes on in the background, as EINPROGRESS.
        Ok(()) | Err(rustix::io::Errno::INPROGRESS | rustix::io::Errno::INTR) => {}
        Err(e) => return Err(e.into()),
    }
    let stream = TcpStream::from(fd);
    let _ = stream.set_nodelay(true);
    let stream = Io::new(stream)?;
    // On loopback the handshake is usually done by the time connect(2)
    // returns, so the first check (the socket starts out marked writable)
    // finds it connected.
    stream
        .write_with(|s| {
            if let Some(e) = s.take_error()? {
                return Err(e);
            }
            match s.peer_addr() {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    Err(io::ErrorKind::WouldBlock.into())
                }
                Err(e) => Err(e),
            }
        })
        .await?;
    Ok(stream)
}

/// A failed try of a request.
struct Failed {
    kind: ErrKind,
    /// Some of a response had arrived: the server saw the request, so it
    /// is not tried again.
    answered: bool,
}

/// A request stream to one server: a keep-alive connection opened on first
/// use and again after any failure.
pub struct Client {
    /// Where to connect.
    pub url: Url,
    conn: Option<Conn>,
    /// The request being built; kept to reuse its allocation.
    pub scratch: Vec<u8>,
    /// The body of the last response; kept to reuse its allocation.
    body: Vec<u8>,
    /// The constant parts of a request this client sends again and again
    /// (see [`Client::write_template`]): `template[..template_split]` goes
    /// before the part that changes, the rest after it.
    template: Vec<u8>,
    template_split: usize,
    template_key: Option<TemplateKey>,
}

/// Names a request template: the session (its id) and the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateKey {
    /// [`super::target::Session`]'s id.
    pub session: u64,
    /// Which request of that session.
    pub op: u8,
}

impl Client {
    /// A client that connects lazily.
    pub fn new(url: Url) -> Client {
        Client {
            url,
            conn: None,
            scratch: Vec::with_capacity(512),
            body: Vec::new(),
            template: Vec::new(),
            template_split: 0,
            template_key: None,
        }
    }

    /// Writes the request saved as `key` into the scratch buffer: its
    /// constant head, what `fill` appends, its constant tail. False, with
    /// nothing written, when this client has not saved that template:
    /// then build the request piece by piece and [`Client::save_template`].
    /// A relay's poll or send is then three copies, not twenty pieces.
    pub fn write_template(&mut self, key: TemplateKey, fill: impl FnOnce(&mut Vec<u8>)) -> bool {
        if self.template_key != Some(key) {
            return false;
        }
        self.scratch.clear();
        let (head, tail) = self.template.split_at(self.template_split);
        self.scratch.extend_from_slice(head);
        fill(&mut self.scratch);
        self.scratch.extend_from_slice(tail);
        true
    }

    /// Saves the request just built in the scratch buffer as `key`: the
    /// bytes `head` and `tail` of it, around a part that changes.
    pub fn save_template(&mut self, key: TemplateKey, head: Range<usize>, tail: Range<usize>) {
        self.template.clear();
        self.template.extend_from_slice(&self.scratch[head]);
        self.template_split = self.template.len();
        self.template.extend_from_slice(&self.scratch[tail]);
        self.template_key = Some(key);
    }

    /// The body of the last response [`Client::send_scratch`] returned.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Opens the connection now, if it is not open, so that a measured
    /// request does not pay for the handshake.
    pub async fn warm(&mut self, deadline: Instant) -> Result<(), ErrKind> {
        if self.conn.is_none() {
            self.conn = Some(Conn::connect(self.url.addr, deadline).await?);
        }
        Ok(())
    }

    /// Sends the request in `self.scratch` and reads its response, all
    /// within `timeout`. Any failure drops the connection, since its state
    /// is unknown; a reused connection the server had closed while idle
    /// (closed or reset before any byte of the response) is retried once
    /// on a new one.
    ///
    /// Cancel-safe: the connection is taken out of the client for the
    /// request and put back only after a complete response, so a caller
    /// that drops this future (its own deadline passed) leaves no request
    /// half-answered on a connection that would be used again.
    pub async fn send_scratch(
        &mut self,
        timeout: Duration,
        head: bool,
    ) -> Result<Response, ErrKind> {
        let deadline = Instant::now() + timeout;
        let reused = self.conn.is_some();
        match self.attempt(deadline, head).await {
            Err(Failed {
                kind: ErrKind::Closed | ErrKind::Io,
                answered: false,
            }) if reused => self.attempt(deadline, head).await.map_err(|f| f.kind),
            other => other.map_err(|f| f.kind),
        }
    }

    async fn attempt(&mut self, deadline: Instant, head: bool) -> Result<Response, Failed> {
        let mut c = match self.conn.take() {
            Some(c) => c,
            None => Conn::connect(self.url.addr, deadline)
                .await
                .map_err(|kind| Failed {
                    kind,
                    answered: false,
                })?,
        };
        let scratch = &self.scratch;
        let body = &mut self.body;
        let result = with_deadline(deadline, async {
            c.write(scratch).await?;
            c.read_response(head, body).await
        })
        .await;
        match result {
            Ok(r) => {
                if !r.close && !c.has_unread() {
                    self.conn = Some(c);
                }
                Ok(r)
            }
            Err(kind) => Err(Failed {
                kind,
                answered: c.received,
            }),
        }
    }

    /// Starts `METHOD prefix+path HTTP/1.1` in the scratch buffer with the
    /// `Host` header; the caller adds headers and calls [`Client::finish`].
    pub fn begin(&mut self, method: &str, path: &str) {
        self.start(method);
        self.path(path);
        self.end_line();
    }

    /// Starts a request line: `METHOD prefix`; the path follows in pieces
    /// ([`Client::path`], [`Client::path_u64`]), then [`Client::end_line`].
    /// Requests are built in place, without `format!`: the generator's
    /// core is the limit of a relay run.
    pub fn start(&mut self, method: &str) {
        self.scratch.clear();
        self.scratch.extend_from_slice(method.as_bytes());
        self.scratch.push(b' ');
        self.scratch.extend_from_slice(self.url.prefix.as_bytes());
    }

    /// Appends to the request target.
    pub fn path(&mut self, piece: &str) {
        self.scratch.extend_from_slice(piece.as_bytes());
    }

    /// Appends a decimal number to the request target.
    pub fn path_u64(&mut self, n: u64) {
        push_u64(&mut self.scratch, n);
    }

    /// Ends the request line and adds `Host`.
    pub fn end_line(&mut self) {
        self.scratch.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.scratch.extend_from_slice(self.url.host.as_bytes());
        self.scratch.extend_from_slice(b"\r\n");
    }

    /// Adds one header line.
    pub fn header(&mut self, name: &str, value: &str) {
        self.scratch.extend_from_slice(name.as_bytes());
        self.scratch.extend_from_slice(b": ");
        self.scratch.extend_from_slice(value.as_bytes());
        self.scratch.extend_from_slice(b"\r\n");
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn bearer(&mut self, token: &str) {
        self.scratch.extend_from_slice(b"Authorization: Bearer ");
        self.scratch.extend_from_slice(token.as_bytes());
        self.scratch.extend_from_slice(b"\r\n");
    }

    /// Ends the head and appends the body (with `Content-Length` when
    /// `body` is given).
    pub fn finish(&mut self, body: Option<&[u8]>) {
        if let Some(body) = body {
            self.scratch.extend_from_slice(b"Content-Length: ");
            push_u64(&mut self.scratch, body.len() as u64);
            self.scratch.extend_from_slice(b"\r\n\r\n");
            self.scratch.extend_from_slice(body);
        } else {
            self.scratch.extend_from_slice(b"\r\n");
        }
    }
}

/// "00" to "99": two digits per division in [`push_u64`].
static DIGIT_PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// Appends `n` in decimal.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        i -= 2;
        let pair = n as usize * 2;
        digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        digits[i] = b'0' + n as u8;
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:8080", false).unwrap();
        assert_eq!(u.addr.port(), 8080);
        assert_eq!(u.prefix, "");
        let u = Url::parse("http://localhost:81/x/", false).unwrap();
        assert_eq!(u.prefix, "/x");
        assert_eq!(u.host, "localhost:81");
        assert!(Url::parse("http://10.0.0.1:80", false).is_err());
        assert!(Url::parse("http://10.0.0.1:80", true).is_ok());
        assert!(Url::parse("https://127.0.0.1:80", false).is_err());
        assert!(Url::parse("http://127.0.0.1", false).is_err());
        assert!(Url::parse("http://[::1]:80", false).is_ok());
    }

    #[test]
    fn control_bytes_are_found_eight_at_a_time() {
        let slow = |s: &[u8]| s.iter().position(|&b| b < 0x20 || b == b'"' || b == b'\\');
        let mut s: Vec<u8> = (0..40).map(|i| b'a' + i % 26).collect();
        assert_eq!(find_control(&s, b'"', b'\\'), None);
        for special in [0u8, b'\n', 0x1f, b'"', b'\\'] {
            for at in 0..s.len() {
                let keep = s[at];
                s[at] = special;
                // A byte that borrows (0x00) or is near (0x21) before it.
                if at > 0 {
                    s[at - 1] = 0x21;
                }
                for start in 0..at.min(9) {
                    assert_eq!(find_control(&s[start..], b'"', b'\\'), slow(&s[start..]));
                }
                s[at] = keep;
                if at > 0 {
                    s[at - 1] = b'a';
                }
            }
        }
        assert_eq!(find_control(&[0x80, 0xff, 0x7f, b' '], 0x7f, 0x7f), Some(2));
    }

    #[test]
    fn heads_are_read() {
        let head = b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length:  5 \r\n\
                     ETag: \"x\"\r\nX-A:\tb\tc\r\n\r\nhello";
        let (len, r, kind) = parse_head(head, false).unwrap().unwrap();
        assert_eq!(len, head.len() - 5);
        assert_eq!(
            (r.status, r.close, r.etag.as_deref()),
            (200, false, Some("\"x\""))
        );
        assert!(matches!(kind, BodyKind::Length(5)));
        for cut in 0..len {
            assert!(parse_head(&head[..cut], false).unwrap().is_none(), "{cut}");
        }
        let (_, r, kind) = parse_head(b"HTTP/1.0 204\nConnection: x, Close\n\n", false)
            .unwrap()
            .unwrap();
        assert!(r.close && r.status == 204 && matches!(kind, BodyKind::None));
        let (_, r, kind) = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(!r.close && matches!(kind, BodyKind::Chunked));
        for bad in [
            &b"HTTP/2.0 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 200OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA b: c\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n: c\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: \x01\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        ] {
            assert!(
                parse_head(bad, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "A: b\r\n".repeat(HEADERS_MAX + 1)
        );
        assert!(parse_head(many.as_bytes(), false).is_err());
    }

    #[test]
    fn requests_are_built_in_place() {
        let mut c = Client::new(Url::parse("http://127.0.0.1:8/p", false).unwrap());
        c.start("GET");
        c.path("/x?after=");
        c.path_u64(0);
        c.path("&t=");
        c.path_u64(18_446_744_073_709_551_615);
        for n in [0, 7, 10, 99, 100, 101, 12_345, 1_000_000] {
            let mut v = Vec::new();
            push_u64(&mut v, n);
            assert_eq!(v, n.to_string().as_bytes());
        }
        c.end_line();
        c.bearer("tok");
        c.finish(Some(b"hi"));
        assert_eq!(
            c.scratch,
            b"GET /p/x?after=0&t=18446744073709551615 HTTP/1.1\r\nHost: 127.0.0.1:8\r\n\
              Authorization: Bearer tok\r\nContent-Length: 2\r\n\r\nhi"
        );
    }
}
