//! A small HTTP/1.1 client for the load generator: one keep-alive
//! connection per request stream, every request under a deadline, and
//! failures reduced to an [`ErrKind`] that the report counts.
//!
//! It reads exactly what pairlink and nginx send: `Content-Length` bodies,
//! `Transfer-Encoding: chunked` bodies, and bodiless 204/304 answers. A
//! response larger than [`BODY_BYTES_MAX`] is a parse error, so a server
//! gone wrong cannot make the generator grow without bound.

use pairlink::io::rt::{Io, Timer};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Largest response head accepted.
pub const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Largest response body accepted.
pub const BODY_BYTES_MAX: usize = 1024 * 1024;
/// Header lines parsed per response; nginx and pairlink send fewer than 16.
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

/// A complete response.
#[derive(Debug, Default)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
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
    smol::future::or(fut, async {
        Timer::at(deadline).await;
        Err(ErrKind::Timeout)
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

    /// Reads one whole response.
    pub async fn read_response(&mut self, head_request: bool) -> Result<Response, ErrKind> {
        // The head.
        let (status, head_len, mut response, body_kind) = loop {
            let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(&self.buf[..self.filled]) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = parsed.code.ok_or(ErrKind::Parse)?;
                    let (response, body_kind) =
                        interpret_head(status, parsed.version, parsed.headers, head_request)?;
                    break (status, head_len, response, body_kind);
                }
                Ok(httparse::Status::Partial) => {
                    if self.filled >= HEAD_BYTES_MAX {
                        return Err(ErrKind::Parse);
                    }
                    self.fill().await?;
                }
                Err(_) => return Err(ErrKind::Parse),
            }
        };
        response.status = status;
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
                response.body = self.buf[head_len..end].to_vec();
                self.consume(end);
            }
            BodyKind::Chunked => {
                self.consume(head_len);
                response.body = self.read_chunked().await?;
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
                response.body = self.buf[..self.filled].to_vec();
                self.filled = 0;
                response.close = true;
            }
        }
        Ok(response)
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>, ErrKind> {
        let mut body = Vec::new();
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
                        return Ok(body);
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

fn interpret_head(
    status: u16,
    version: Option<u8>,
    headers: &[httparse::Header<'_>],
    head_request: bool,
) -> Result<(Response, BodyKind), ErrKind> {
    let mut response = Response {
        close: version == Some(0),
        ..Response::default()
    };
    let mut length = None;
    let mut chunked = false;
    for h in headers {
        let value = || std::str::from_utf8(h.value).map_err(|_| ErrKind::Parse);
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: usize = value()?.trim().parse().map_err(|_| ErrKind::Parse)?;
            if n > BODY_BYTES_MAX {
                return Err(ErrKind::Parse);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value()?.trim().eq_ignore_ascii_case("chunked");
            if !chunked {
                return Err(ErrKind::Parse);
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = value()?;
            if v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")) {
                response.close = true;
            } else if v
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("keep-alive"))
            {
                response.close = false;
            }
        } else if h.name.eq_ignore_ascii_case("etag") {
            response.etag = Some(value()?.to_string());
        } else if h.name.eq_ignore_ascii_case("last-modified") {
            response.last_modified = Some(value()?.to_string());
        }
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
    Ok((response, kind))
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
}

impl Client {
    /// A client that connects lazily.
    pub fn new(url: Url) -> Client {
        Client {
            url,
            conn: None,
            scratch: Vec::with_capacity(512),
        }
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
        let result = with_deadline(deadline, async {
            c.write(scratch).await?;
            c.read_response(head).await
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

/// Appends `n` in decimal.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
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
    fn requests_are_built_in_place() {
        let mut c = Client::new(Url::parse("http://127.0.0.1:8/p", false).unwrap());
        c.start("GET");
        c.path("/x?after=");
        c.path_u64(0);
        c.path("&t=");
        c.path_u64(18_446_744_073_709_551_615);
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
