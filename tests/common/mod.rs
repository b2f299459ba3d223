//! Shared helpers of the black-box tests: a guard around a real `pairlink`
//! process on 127.0.0.1, a small raw HTTP/1.1 client over `TcpStream`, a
//! strict JSON reader, and the API calls of API.md §2 with their checks.
//!
//! Every socket has read and write timeouts and every loop a bound, so that
//! a misbehaving server fails a test instead of hanging the suite.
#![allow(dead_code)]

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Read and write timeout of every test socket: longer than any poll a test
/// makes on purpose, short enough that a stuck server fails the test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts to see `GET /healthz` answer 200 after spawning a server.
const HEALTH_TRIES_MAX: u32 = 100;
/// Pause between two health attempts.
const HEALTH_PAUSE: Duration = Duration::from_millis(50);
/// Spawns tried when the free port we picked was taken in between.
const SPAWN_TRIES_MAX: u32 = 5;
/// Largest response head the client accepts.
const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Largest response body the client accepts.
const BODY_BYTES_MAX: usize = 4 * 1024 * 1024;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn scratch_dir() -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pairlink-test-{}-{}", std::process::id(), n));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

fn base_command(args: &[String], env: &[(String, String)], dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pairlink"));
    cmd.args(args);
    hermetic(&mut cmd, env, dir);
    cmd
}

/// The environment and output files every spawned server gets.
fn hermetic(cmd: &mut Command, env: &[(String, String)], dir: &std::path::Path) {
    // Hermetic: nothing from the caller's environment configures the server.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PAIRLINK_") {
            cmd.env_remove(&key);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null());
    cmd.stdout(File::create(dir.join("stdout")).expect("stdout file"));
    cmd.stderr(File::create(dir.join("stderr")).expect("stderr file"));
}

/// How the server learns its listen address.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ListenVia {
    /// `--listen 127.0.0.1:PORT`
    Flag,
    /// `PAIRLINK_LISTEN=127.0.0.1:PORT`
    Env,
}

/// A running `pairlink` process; dropping it kills and reaps the process.
pub struct Server {
    child: Child,
    /// The HTTP address the server listens on.
    pub addr: SocketAddr,
    dir: PathBuf,
    exit: Option<ExitStatus>,
}

impl Server {
    /// Starts a server with these extra flags, on a fresh port.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with(args, &[], ListenVia::Flag)
    }

    /// Starts a server with flags and environment variables.
    pub fn start_with(args: &[&str], env: &[(&str, &str)], via: ListenVia) -> Server {
        let mut last_error = String::new();
        for _ in 0..SPAWN_TRIES_MAX {
            match Server::try_start(args, env, via) {
                Ok(server) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("server did not start after {SPAWN_TRIES_MAX} tries: {last_error}");
    }

    fn try_start(args: &[&str], env: &[(&str, &str)], via: ListenVia) -> Result<Server, String> {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut all_args: Vec<String> = Vec::new();
        let mut all_env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match via {
            ListenVia::Flag => {
                all_args.push("--listen".into());
                all_args.push(addr.to_string());
            }
            ListenVia::Env => all_env.push(("PAIRLINK_LISTEN".into(), addr.to_string())),
        }
        all_args.extend(args.iter().map(|s| s.to_string()));
        let dir = scratch_dir();
        let child = base_command(&all_args, &all_env, &dir)
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        Server::spawned(child, addr, dir)
    }

    /// A server just spawned as `child`, once it answers `/healthz`.
    fn spawned(child: Child, addr: SocketAddr, dir: PathBuf) -> Result<Server, String> {
        Server {
            child,
            addr,
            dir,
            exit: None,
        }
        .wait_healthy()
    }

    /// Waits for `/healthz` of a just-spawned server. Errors carry its
    /// stderr.
    fn wait_healthy(mut self) -> Result<Server, String> {
        for _ in 0..HEALTH_TRIES_MAX {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                return Err(format!(
                    "server exited with {status} before answering /healthz; stderr:\n{}",
                    self.stderr()
                ));
            }
            if health_ok(self.addr) {
                // A bind race could let another process answer on our port:
                // ours must still be running.
                if let Some(status) = self.child.try_wait().expect("try_wait") {
                    self.exit = Some(status);
                    return Err(format!(
                        "server exited with {status} right after /healthz answered; stderr:\n{}",
                        self.stderr()
                    ));
                }
                return Ok(self);
            }
            std::thread::sleep(HEALTH_PAUSE);
        }
        Err(format!(
            "server did not answer GET /healthz with 200 within {} ms; stderr:\n{}",
            HEALTH_TRIES_MAX as u128 * HEALTH_PAUSE.as_millis(),
            self.stderr()
        ))
    }

    /// A new client connection to the server.
    pub fn conn(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// One request on a fresh connection.
    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        self.conn().request(method, target, headers, body)
    }

    /// `GET target` on a fresh connection.
    pub fn get(&self, target: &str) -> Response {
        self.request("GET", target, &[], None)
    }

    /// Asserts that the server still answers `/healthz` on a new connection.
    pub fn assert_serving(&self) {
        let r = self.get("/healthz");
        assert_eq!(r.status, 200, "server stopped serving /healthz: {r:?}");
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// What the server wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`) with `/usr/bin/kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits at most `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.exit {
                return Some(s);
            }
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(s);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let err = self.stderr();
            let tail: String = err
                .chars()
                .rev()
                .take(6000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            eprintln!(
                "---- pairlink stderr (last {} chars) ----\n{tail}\n---- end ----",
                tail.len()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn health_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    for _ in 0..16 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if got.len() >= 12 {
            break;
        }
    }
    got.starts_with(b"HTTP/1.1 200") || got.starts_with(b"HTTP/1.0 200")
}

/// Exit status and output of a process run to its end.
#[derive(Debug)]
pub struct Output {
    /// The exit status.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

/// Runs the binary with these args and environment (nothing inherited from
/// `PAIRLINK_*`), waiting at most `within`; a process still running then is
/// killed and the test fails.
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)], within: Duration) -> Output {
    let dir = scratch_dir();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut child = base_command(&args, &env, &dir)
        .spawn()
        .expect("spawn pairlink");
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(dir.join("stdout")).unwrap_or_default();
    let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    match status {
        Some(status) => Output { status, stdout, stderr },
        None => panic!(
            "pairlink {args:?} (env {env:?}) still running after {within:?}; killed.\nstdout: {stdout}\nstderr: {stderr}"
        ),
    }
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 client
// ---------------------------------------------------------------------------

/// A parsed HTTP response.
#[derive(Clone)]
pub struct Response {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// The head bytes exactly as received (status line to the empty line).
    pub raw_head: Vec<u8>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} {:?} body={:?}",
            self.version,
            self.status,
            self.reason,
            self.headers,
            String::from_utf8_lossy(&self.body[..self.body.len().min(600)])
        )
    }
}

impl Response {
    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How many times a header appears.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// True when the `Connection` header has the `close` option.
    pub fn says_close(&self) -> bool {
        self.header("connection")
            .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
            .unwrap_or(false)
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone())
            .unwrap_or_else(|_| panic!("body is not UTF-8: {self:?}"))
    }

    /// The body parsed as strict JSON.
    pub fn json(&self) -> Json {
        Json::parse(&self.body).unwrap_or_else(|e| panic!("body is not valid JSON ({e}): {self:?}"))
    }
}

/// Why a response could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// No complete response within the read timeout.
    Timeout(Vec<u8>),
    /// The peer closed before a complete response (bytes received so far).
    Closed(Vec<u8>),
    /// The connection was reset (bytes received so far).
    Reset(Vec<u8>),
    /// Not a valid HTTP response.
    Malformed(String),
}

/// A client connection with its own read buffer, so that several pipelined
/// responses can be read one after another.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Builds a request: `Host: 127.0.0.1` is added unless given, and
/// `Content-Length` when a body is given and no framing header is.
pub fn build_request(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("host") {
        out.extend_from_slice(b"Host: 127.0.0.1\r\n");
    }
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if let Some(b) = body {
        if !has("content-length") && !has("transfer-encoding") {
            out.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
    out
}

impl Conn {
    /// Connects to `addr` (always 127.0.0.1 here) with timeouts set.
    pub fn connect(addr: SocketAddr) -> Conn {
        assert!(addr.ip().is_loopback(), "tests only talk to 127.0.0.1");
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Changes the read timeout.
    pub fn set_read_timeout(&self, d: Duration) {
        self.stream.set_read_timeout(Some(d)).unwrap();
    }

    /// A second handle on the same socket (for a writer thread).
    pub fn try_clone_stream(&self) -> TcpStream {
        self.stream.try_clone().unwrap()
    }

    /// Writes all bytes; panics on error.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write failed: {e}"));
    }

    /// Writes all bytes, returning the error if any.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Closes our writing half.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Reads more bytes into the buffer; Ok(0) on EOF.
    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn fill_or_err(&mut self, deadline: Instant) -> Result<(), ReadError> {
        if Instant::now() >= deadline {
            return Err(ReadError::Timeout(self.buf.clone()));
        }
        match self.fill() {
            Ok(0) => Err(ReadError::Closed(self.buf.clone())),
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(ReadError::Timeout(self.buf.clone()))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                Err(ReadError::Reset(self.buf.clone()))
            }
            Err(e) => Err(ReadError::Malformed(format!("read error: {e}"))),
        }
    }

    /// Reads the next response (interim 1xx responses are returned as such).
    pub fn try_read_response(&mut self) -> Result<Response, ReadError> {
        let deadline = Instant::now() + IO_TIMEOUT;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > HEAD_BYTES_MAX {
                return Err(ReadError::Malformed("response head too large".into()));
            }
            self.fill_or_err(deadline)?;
        };
        let raw_head = self.buf[..head_end].to_vec();
        let head = String::from_utf8(raw_head.clone())
            .map_err(|_| ReadError::Malformed(format!("head not UTF-8: {:?}", raw_head)))?;
        let mut lines = head[..head.len() - 4].split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let status: u16 = parts
            .next()
            .and_then(|s| if s.len() == 3 { s.parse().ok() } else { None })
            .ok_or_else(|| ReadError::Malformed(format!("bad status line {status_line:?}")))?;
        let reason = parts.next().unwrap_or("").to_string();
        if version != "HTTP/1.1" && version != "HTTP/1.0" {
            return Err(ReadError::Malformed(format!(
                "bad status line {status_line:?}"
            )));
        }
        let mut headers = Vec::new();
        for line in lines {
            let (n, v) = line
                .split_once(':')
                .ok_or_else(|| ReadError::Malformed(format!("bad header line {line:?}")))?;
            if n.is_empty() || n.contains(' ') || n.contains('\t') {
                return Err(ReadError::Malformed(format!("bad header name {line:?}")));
            }
            headers.push((n.to_string(), v.trim_matches([' ', '\t']).to_string()));
        }
        self.buf.drain(..head_end);
        let mut resp = Response {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
            raw_head,
        };
        if (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(resp);
        }
        if resp.header("transfer-encoding").is_some() {
            return Err(ReadError::Malformed(format!(
                "unexpected Transfer-Encoding in response: {resp:?}"
            )));
        }
        if resp.header_count("content-length") > 1 {
            return Err(ReadError::Malformed(format!(
                "several Content-Length: {resp:?}"
            )));
        }
        match resp.header("content-length") {
            Some(cl) => {
                let len: usize = cl
                    .parse()
                    .map_err(|_| ReadError::Malformed(format!("bad Content-Length {cl:?}")))?;
                if len > BODY_BYTES_MAX {
                    return Err(ReadError::Malformed(format!("body too large: {len}")));
                }
                while self.buf.len() < len {
                    self.fill_or_err(deadline)?;
                }
                resp.body = self.buf.drain(..len).collect();
            }
            None => {
                // No length: the body runs to the end of the connection.
                loop {
                    match self.fill_or_err(deadline) {
                        Ok(()) => {
                            if self.buf.len() > BODY_BYTES_MAX {
                                return Err(ReadError::Malformed("body too large".into()));
                            }
                        }
                        Err(ReadError::Closed(_)) | Err(ReadError::Reset(_)) => break,
                        Err(e) => return Err(e),
                    }
                }
                resp.body = std::mem::take(&mut self.buf);
            }
        }
        Ok(resp)
    }

    /// Reads the next response; panics if there is none.
    pub fn read_response(&mut self) -> Response {
        match self.try_read_response() {
            Ok(r) => r,
            Err(e) => panic!("no valid response: {}", describe(&e)),
        }
    }

    /// Writes a request and reads its response.
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        self.send(&build_request(method, target, headers, body));
        self.read_response()
    }

    /// Asserts that the server closes the connection within `within`
    /// without sending any further byte (EOF or reset both count).
    pub fn expect_closed(&mut self, within: Duration) {
        assert!(
            self.buf.is_empty(),
            "expected the connection to close, but unread bytes are buffered: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        match self.read_until_closed(within) {
            Ok(bytes) if bytes.is_empty() => {}
            Ok(bytes) => panic!(
                "expected the connection to close without more bytes, got {:?}",
                String::from_utf8_lossy(&bytes)
            ),
            Err(bytes) => panic!(
                "connection still open {within:?} after the response (bytes since: {:?})",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }

    /// Reads until the server closes: Ok(bytes) on EOF/reset, Err(bytes) on
    /// timeout.
    pub fn read_until_closed(&mut self, within: Duration) -> Result<Vec<u8>, Vec<u8>> {
        let deadline = Instant::now() + within;
        let mut got = std::mem::take(&mut self.buf);
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(got);
            }
            self.stream.set_read_timeout(Some(deadline - now)).unwrap();
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                    return Err(got);
                }
                Err(_) => break,
            }
        }
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Ok(got)
    }

    /// Asserts that nothing arrives and the connection stays open for `d`.
    pub fn expect_silent(&mut self, d: Duration) {
        assert!(
            self.buf.is_empty(),
            "unexpected buffered bytes: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        match self.read_until_closed(d) {
            Err(bytes) if bytes.is_empty() => {}
            Err(bytes) => panic!(
                "expected silence, got {:?}",
                String::from_utf8_lossy(&bytes)
            ),
            Ok(bytes) => panic!(
                "expected the connection to stay open, it closed (bytes {:?})",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
}

/// A readable description of a read error.
pub fn describe(e: &ReadError) -> String {
    match e {
        ReadError::Timeout(b) => {
            format!("timed out; bytes so far {:?}", String::from_utf8_lossy(b))
        }
        ReadError::Closed(b) => format!(
            "connection closed; bytes so far {:?}",
            String::from_utf8_lossy(b)
        ),
        ReadError::Reset(b) => format!(
            "connection reset; bytes so far {:?}",
            String::from_utf8_lossy(b)
        ),
        ReadError::Malformed(m) => format!("malformed response: {m}"),
    }
}

mod json;
pub use json::Json;

// ---------------------------------------------------------------------------
// Assertions on responses
// ---------------------------------------------------------------------------

/// Checks the headers every response carries (API.md §2): `Cache-Control:
/// no-store`, and `Content-Length` matching the body on all but 204.
pub fn assert_common_headers(r: &Response) {
    assert_eq!(
        r.header("cache-control"),
        Some("no-store"),
        "Cache-Control: no-store missing: {r:?}"
    );
    assert_eq!(
        r.header_count("cache-control"),
        1,
        "one Cache-Control: {r:?}"
    );
    if r.status == 204 {
        assert!(
            r.header("content-length").is_none(),
            "204 must not carry Content-Length (RFC 9110 §8.6): {r:?}"
        );
        assert!(r.body.is_empty());
    } else {
        let cl = r
            .header("content-length")
            .unwrap_or_else(|| panic!("Content-Length missing: {r:?}"));
        assert_eq!(
            cl,
            r.body.len().to_string(),
            "Content-Length does not match: {r:?}"
        );
    }
}

/// Asserts a JSON response with this status and returns its body.
pub fn assert_json(r: &Response, status: u16) -> Json {
    assert_eq!(r.status, status, "status: {r:?}");
    assert_common_headers(r);
    let ct = r
        .header("content-type")
        .unwrap_or_else(|| panic!("Content-Type missing: {r:?}"));
    let media = ct.split(';').next().unwrap().trim();
    assert!(
        media.eq_ignore_ascii_case("application/json"),
        "Content-Type not application/json: {r:?}"
    );
    r.json()
}

/// Asserts an error response `{"error":code,"message":"..."}` with this
/// status; 429 and 503 must carry a `Retry-After` in seconds.
pub fn assert_error(r: &Response, status: u16, code: &str) {
    let j = assert_json(r, status);
    assert_eq!(
        j.keys(),
        vec!["error".to_string(), "message".to_string()],
        "error body keys: {r:?}"
    );
    assert_eq!(j.str("error"), code, "error code: {r:?}");
    assert!(!j.str("message").is_empty(), "empty error message: {r:?}");
    if status == 429 || status == 503 {
        assert_retry_after(r);
    }
}

/// Asserts a `Retry-After` of a whole number of seconds.
pub fn assert_retry_after(r: &Response) {
    let ra = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("Retry-After missing: {r:?}"));
    assert!(
        !ra.is_empty() && ra.bytes().all(|b| b.is_ascii_digit()),
        "Retry-After not seconds: {r:?}"
    );
}

/// Asserts that the response says `Connection: close` and that the server
/// then closes the connection.
pub fn assert_closes(c: &mut Conn, r: &Response) {
    assert!(
        r.says_close(),
        "response after which the server closes must say Connection: close: {r:?}"
    );
    c.expect_closed(Duration::from_secs(3));
}

/// Asserts that the server does what the response says: closes when it says
/// `Connection: close`, else keeps serving on the same connection.
pub fn assert_close_consistent(c: &mut Conn, r: &Response) {
    if r.says_close() {
        c.expect_closed(Duration::from_secs(3));
    } else {
        let h = c.request("GET", "/healthz", &[], None);
        assert_eq!(
            h.status, 200,
            "connection kept open after {r:?} must keep serving: {h:?}"
        );
    }
}

/// Sends raw bytes on a fresh connection, expects an error response with
/// this status and code, and that the connection is then closed.
pub fn expect_error_and_close(server: &Server, raw: &[u8], status: u16, code: &str) {
    let mut c = server.conn();
    c.send(raw);
    let r = match c.try_read_response() {
        Ok(r) => r,
        Err(e) => panic!(
            "request {:?}: expected {status} {code}, got {}",
            String::from_utf8_lossy(raw),
            describe(&e)
        ),
    };
    assert_eq!(
        r.status,
        status,
        "request {:?}: expected {status} {code}, got {r:?}",
        String::from_utf8_lossy(raw)
    );
    assert_error(&r, status, code);
    assert!(
        r.says_close(),
        "request {:?}: error must say Connection: close: {r:?}",
        String::from_utf8_lossy(raw)
    );
    c.expect_closed(Duration::from_secs(3));
}

// ---------------------------------------------------------------------------
// The API of API.md §2
// ---------------------------------------------------------------------------

/// An event of the long poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `{"seq":N,"type":"peer_online"}`
    Online(u64),
    /// `{"seq":N,"type":"message","data":...}`
    Message(u64, String),
    /// `{"seq":N,"type":"peer_offline","reason":...}`
    Offline(u64, String),
}

impl Event {
    /// The event's seq.
    pub fn seq(&self) -> u64 {
        match self {
            Event::Online(s) | Event::Message(s, _) | Event::Offline(s, _) => *s,
        }
    }
}

/// Shorthand for a message event.
pub fn msg(seq: u64, data: &str) -> Event {
    Event::Message(seq, data.to_string())
}

/// Shorthand for a peer_offline event.
pub fn offline(seq: u64, reason: &str) -> Event {
    Event::Offline(seq, reason.to_string())
}

/// A poll's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Poll {
    /// `online` or `offline`.
    pub peer: String,
    /// The events, in order.
    pub events: Vec<Event>,
}

/// A successful join.
#[derive(Clone, Debug)]
pub struct Joined {
    /// The pair id.
    pub pair: String,
    /// `a` or `b`.
    pub side: String,
    /// The session token.
    pub token: String,
    /// `online` or `offline`.
    pub peer: String,
    /// `poll_timeout_ms`.
    pub poll_timeout_ms: u64,
    /// `session_ttl_ms`.
    pub session_ttl_ms: u64,
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Checks a token of the server's documented shape
/// `<node>.<key>.<gen>.<secret>` and the contract's character set.
pub fn assert_token_shape(token: &str, node: &str) {
    assert!(token.len() <= 128, "token longer than 128: {token}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)),
        "token has characters outside [A-Za-z0-9._~-]: {token}"
    );
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 4, "token is not node.key.gen.secret: {token}");
    assert_eq!(parts[0], node, "token's node: {token}");
    assert!(
        !parts[1].is_empty() && parts[1].bytes().all(|b| b.is_ascii_digit()),
        "token key: {token}"
    );
    assert!(
        !parts[2].is_empty() && parts[2].bytes().all(|b| b.is_ascii_digit()),
        "token gen: {token}"
    );
    assert_eq!(parts[3].len(), 22, "token secret is not 22 chars: {token}");
    assert!(
        parts[3]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "token secret is not base64url: {token}"
    );
}

/// Checks a join answer (201 or 200) and returns the session.
pub fn check_join(r: &Response, status: u16, pair: &str, side: &str) -> Joined {
    let j = assert_json(r, status);
    assert_eq!(
        j.keys(),
        vec![
            "pair",
            "peer",
            "poll_timeout_ms",
            "session",
            "session_ttl_ms",
            "side"
        ],
        "join body keys: {r:?}"
    );
    assert_eq!(j.str("pair"), pair, "join pair: {r:?}");
    assert_eq!(j.str("side"), side, "join side: {r:?}");
    let peer = j.str("peer").to_string();
    assert!(peer == "online" || peer == "offline", "join peer: {r:?}");
    let token = j.str("session").to_string();
    assert_token_shape(&token, token.split('.').next().unwrap_or(""));
    Joined {
        pair: pair.into(),
        side: side.into(),
        token,
        peer,
        poll_timeout_ms: j.u64("poll_timeout_ms"),
        session_ttl_ms: j.u64("session_ttl_ms"),
    }
}

/// `POST /v1/pairs/{pair}/{side}` with an optional token.
pub fn join_raw(c: &mut Conn, pair: &str, side: &str, token: Option<&str>) -> Response {
    let auth = token.map(bearer);
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    c.request(
        "POST",
        &format!("/v1/pairs/{pair}/{side}"),
        &headers,
        Some(b""),
    )
}

/// A join that must create a session (201).
pub fn join(c: &mut Conn, pair: &str, side: &str) -> Joined {
    let r = join_raw(c, pair, side, None);
    check_join(&r, 201, pair, side)
}

/// Parses a poll answer: 200, `{"peer":..,"events":[..]}` with exact keys.
pub fn parse_poll(r: &Response) -> Poll {
    let j = assert_json(r, 200);
    assert_eq!(j.keys(), vec!["events", "peer"], "poll body keys: {r:?}");
    let peer = j.str("peer").to_string();
    assert!(peer == "online" || peer == "offline", "poll peer: {r:?}");
    let mut events = Vec::new();
    for e in j.arr("events") {
        let seq = e.u64("seq");
        let ev = match e.str("type") {
            "peer_online" => {
                assert_eq!(e.keys(), vec!["seq", "type"], "peer_online keys: {r:?}");
                Event::Online(seq)
            }
            "message" => {
                assert_eq!(e.keys(), vec!["data", "seq", "type"], "message keys: {r:?}");
                Event::Message(seq, e.str("data").to_string())
            }
            "peer_offline" => {
                assert_eq!(
                    e.keys(),
                    vec!["reason", "seq", "type"],
                    "peer_offline keys: {r:?}"
                );
                let reason = e.str("reason").to_string();
                assert!(
                    ["left", "expired", "node_down", "shutdown"].contains(&reason.as_str()),
                    "peer_offline reason: {r:?}"
                );
                Event::Offline(seq, reason)
            }
            other => panic!("unknown event type {other:?}: {r:?}"),
        };
        events.push(ev);
    }
    for w in events.windows(2) {
        assert_eq!(w[1].seq(), w[0].seq() + 1, "seqs must increase by 1: {r:?}");
    }
    Poll { peer, events }
}

/// The path of a session's resource.
pub fn session_path(pair: &str, side: &str, rest: &str) -> String {
    format!("/v1/pairs/{pair}/{side}{rest}")
}

/// Writes a poll request without reading the answer.
pub fn write_poll(c: &mut Conn, pair: &str, side: &str, token: &str, query: &str) {
    let auth = bearer(token);
    let target = session_path(pair, side, &format!("/events?{query}"));
    c.send(&build_request(
        "GET",
        &target,
        &[("Authorization", &auth)],
        None,
    ));
}

/// A poll with a raw query string; returns the raw response.
pub fn poll_raw(c: &mut Conn, pair: &str, side: &str, token: &str, query: &str) -> Response {
    write_poll(c, pair, side, token, query);
    c.read_response()
}

/// A poll that must succeed.
pub fn poll(c: &mut Conn, s: &Joined, after: u64, timeout_ms: u64) -> Poll {
    let r = poll_raw(
        c,
        &s.pair,
        &s.side,
        &s.token,
        &format!("after={after}&timeout_ms={timeout_ms}"),
    );
    parse_poll(&r)
}

/// `POST .../messages` with an optional idempotency key.
pub fn send_raw(c: &mut Conn, s: &Joined, data: &[u8], key: Option<&str>) -> Response {
    let auth = bearer(&s.token);
    let mut headers: Vec<(&str, &str)> = vec![("Authorization", &auth)];
    if let Some(k) = key {
        headers.push(("Idempotency-Key", k));
    }
    c.request(
        "POST",
        &session_path(&s.pair, &s.side, "/messages"),
        &headers,
        Some(data),
    )
}

/// A send that must be accepted: `202 {}`.
pub fn send(c: &mut Conn, s: &Joined, data: &str) {
    let r = send_raw(c, s, data.as_bytes(), None);
    assert_accepted(&r);
}

/// Asserts `202 {}`.
pub fn assert_accepted(r: &Response) {
    let j = assert_json(r, 202);
    assert_eq!(j, Json::Obj(vec![]), "send answer must be {{}}: {r:?}");
}

/// `DELETE /v1/pairs/{pair}/{side}`.
pub fn leave_raw(c: &mut Conn, pair: &str, side: &str, token: &str) -> Response {
    let auth = bearer(token);
    c.request(
        "DELETE",
        &session_path(pair, side, ""),
        &[("Authorization", &auth)],
        None,
    )
}

/// A leave that must succeed: 204.
pub fn leave(c: &mut Conn, s: &Joined) {
    let r = leave_raw(c, &s.pair, &s.side, &s.token);
    assert_eq!(r.status, 204, "leave: {r:?}");
    assert_common_headers(&r);
}

/// Joins both sides of `pair` (a first) and returns them.
pub fn pair_up(c: &mut Conn, pair: &str) -> (Joined, Joined) {
    let a = join(c, pair, "a");
    assert_eq!(a.peer, "offline", "first side's peer");
    let b = join(c, pair, "b");
    assert_eq!(b.peer, "online", "second side's peer");
    (a, b)
}

/// Milliseconds since `t`.
pub fn ms_since(t: Instant) -> u128 {
    t.elapsed().as_millis()
}

// ---------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------

/// One sample line of `/metrics`.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// The label set as written, without braces (may be empty).
    pub labels: String,
    /// The value.
    pub value: f64,
}

/// Parsed `/metrics`: samples plus the names given HELP and TYPE lines.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// All samples in order.
    pub samples: Vec<Sample>,
    /// Names with a `# HELP` line.
    pub help: Vec<String>,
    /// Names with a `# TYPE` line and their type.
    pub types: Vec<(String, String)>,
}

impl Metrics {
    /// Parses the Prometheus text format strictly enough for the tests.
    pub fn parse(text: &str) -> Metrics {
        let mut m = Metrics::default();
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                m.help.push(rest.split(' ').next().unwrap().to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let name = it.next().unwrap().to_string();
                let ty = it
                    .next()
                    .unwrap_or_else(|| panic!("TYPE line without a type: {line:?}"))
                    .to_string();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty.as_str()),
                    "bad TYPE: {line:?}"
                );
                m.types.push((name, ty));
            } else if line.starts_with('#') {
                continue;
            } else {
                let (series, value) = line
                    .rsplit_once(' ')
                    .unwrap_or_else(|| panic!("bad sample line {line:?}"));
                let value: f64 = value
                    .parse()
                    .unwrap_or_else(|_| panic!("bad sample value {line:?}"));
                let (name, labels) = match series.split_once('{') {
                    Some((n, l)) => {
                        let l = l
                            .strip_suffix('}')
                            .unwrap_or_else(|| panic!("bad labels {line:?}"));
                        (n.to_string(), l.to_string())
                    }
                    None => (series.to_string(), String::new()),
                };
                m.samples.push(Sample {
                    name,
                    labels,
                    value,
                });
            }
        }
        m
    }

    /// The family a sample belongs to (histogram and summary suffixes removed
    /// when the base name has a TYPE line).
    pub fn family_of(&self, name: &str) -> Option<String> {
        if self.types.iter().any(|(n, _)| n == name) {
            return Some(name.to_string());
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if self.types.iter().any(|(n, _)| n == base) {
                    return Some(base.to_string());
                }
            }
        }
        None
    }

    /// Samples whose name contains `part`.
    pub fn matching(&self, part: &str) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name.contains(part))
            .collect()
    }

    /// The value of the series `name{labels}`.
    pub fn value(&self, name: &str, labels: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == labels)
            .map(|s| s.value)
    }
}

/// `GET /metrics` parsed.
pub fn metrics(server: &Server) -> Metrics {
    let r = server.get("/metrics");
    assert_eq!(r.status, 200, "/metrics: {r:?}");
    assert_common_headers(&r);
    let ct = r
        .header("content-type")
        .unwrap_or_else(|| panic!("/metrics without Content-Type: {r:?}"));
    assert!(ct.starts_with("text/plain"), "/metrics Content-Type: {r:?}");
    Metrics::parse(&r.text())
}

// ---------------------------------------------------------------------------
// Processes on given ports (cluster tests)
// ---------------------------------------------------------------------------

impl Server {
    /// Starts the binary with `--listen 127.0.0.1:port` followed by `args`,
    /// on this exact port (the caller picked it, and retries on a bind
    /// race), and waits for `/healthz`. Errors carry the server's stderr.
    pub fn try_start_on(port: u16, args: &[String]) -> Result<Server, String> {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut all_args: Vec<String> = vec!["--listen".into(), addr.to_string()];
        all_args.extend(args.iter().cloned());
        let dir = scratch_dir();
        let child = base_command(&all_args, &[], &dir)
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        Server::spawned(child, addr, dir)
    }

    /// Starts a server whose open-file limit, soft and hard, is `limit`
    /// (set by bash's `ulimit -n` before it execs the binary).
    pub fn start_with_open_files(limit: u32, args: &[&str]) -> Server {
        Server::start_after_shell(&format!("ulimit -n {limit}"), args)
    }

    /// Starts a server that bash execs after running `setup` (a `ulimit`,
    /// a `trap`), so that the server inherits what it set.
    pub fn start_after_shell(setup: &str, args: &[&str]) -> Server {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let dir = scratch_dir();
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(format!("{setup} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_pairlink"))
            .arg("--listen")
            .arg(addr.to_string())
            .args(args);
        hermetic(&mut cmd, &[], &dir);
        let child = cmd.spawn().expect("spawn bash");
        Server::spawned(child, addr, dir).unwrap_or_else(|e| panic!("server after `{setup}`: {e}"))
    }

    /// True while the process has not exited (a stopped process is running).
    pub fn is_running(&mut self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match self.child.try_wait().expect("try_wait") {
            Some(s) => {
                self.exit = Some(s);
                false
            }
            None => true,
        }
    }

    /// `kill -9` and reap; the stderr stays readable until the guard drops.
    pub fn kill_hard(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let status = self.child.wait().expect("wait after kill");
            self.exit = Some(status);
        }
    }
}

/// `n` ports that were free a moment ago on 127.0.0.1, all different (the
/// listeners are held together while the ports are collected).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

/// A fresh scratch directory (the caller removes it).
pub fn scratch_directory() -> PathBuf {
    scratch_dir()
}

/// Writes a cluster cookie file of mode 0600 (the server warns about
/// looser ones).
pub fn write_cookie(path: &std::path::Path, content: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("create cookie file");
    f.write_all(content.as_bytes()).expect("write cookie");
}
