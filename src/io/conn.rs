//! One HTTP connection: read a request, hand it to the API, wait for a long
//! poll's answer if it has to, write the response; in order, for as long as
//! keep-alive lasts.
//!
//! Memory of an idle connection is kept small on purpose: the read buffer is
//! allocated only once bytes are readable and given back when empty, so an
//! idle waiting poll holds little beyond its task and socket.

use super::budget;
use super::rt::{self, Io, Timer};
use super::shared::InFlight;
use super::waiter::{Link, Waited};
use super::Shared;
use crate::api::{self, Handled};
use crate::core::CancelKey;
use crate::limits::{HEAD_BYTES_MAX, IDLE_BUFFER_BYTES_MAX, PIPELINE_BYTES_MAX, READ_CHUNK_BYTES};
use crate::proto::http::{self, Framed, Framer, HttpError, Method, Progress};
use crate::proto::ids::TokenCache;
use crate::proto::response::{self, Cors, Response};
use smol::future;
use std::future::Future;
use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

/// How often a waiting poll that is not reading its socket (a full
/// pipeline, or the node over its read budget) looks whether the client
/// has gone, and whether it may read again.
const HANG_UP_CHECK: Duration = Duration::from_millis(250);

/// Longest a response may take to be written before the client is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest, and most bytes, a closing connection is read and discarded so
/// that its last response is not destroyed by a reset.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES_MAX: usize = 64 * 1024;

/// Requests one connection serves in a row before every other ready task
/// runs: a client that pipelines requests and reads the answers keeps full
/// reads coming, and would otherwise hold the thread (and every other
/// client, timer and peer) for as long as it likes.
const REQUESTS_PER_TURN: u32 = 32;

/// Serves one connection until it closes.
///
/// The connection is built before the task's future, which so holds it
/// once (an `async fn` would also keep its arguments).
pub fn serve(shared: Rc<Shared>, stream: Io<TcpStream>) -> impl std::future::Future<Output = ()> {
    let idle = Timer::after(shared.header_timeout);
    let mut conn = Conn {
        shared,
        link: Rc::new(Link::new(stream)),
        buf: Vec::new(),
        charged: 0,
        idle,
        in_flight: None,
        tokens: TokenCache::default(),
    };
    async move {
        if let Err(e) = conn.run().await {
            log::debug!("connection ended: {e}");
        }
        conn.shared.metrics(|m| m.connections_open -= 1);
    }
}

/// What the API made of a request: the answer or the poll to wait for,
/// whether to close after it, and whether it was a HEAD.
type Done = (Handled, bool, bool);

/// What the read into the scratch buffer with nothing buffered gave (see
/// [`Conn::read_next`]).
enum FirstRead {
    /// The end of the stream, or a request answered from the scratch buffer.
    Done(Read_),
    /// Bytes kept in the buffer, and what framing them gave.
    Buffered(Option<(Framed, usize)>),
}

/// How a waiting poll ended (see [`Conn::wait_poll`]).
enum Polled {
    /// The response to write.
    Respond(Response),
    /// Its response was written, at this time.
    Written(std::time::Instant),
    /// The client went away, or the connection broke.
    Gone,
}

/// What reading a request gave.
enum Read_ {
    /// A request at the front of the buffer, `consumed` bytes long.
    Request(Framed, usize),
    /// A request that came whole, and alone, in one read: run through the
    /// API straight from the thread's scratch buffer ([`Conn::read_next`]).
    Handled(Result<Done, HttpError>),
    /// Closed by the client, or idle past the header timeout.
    Closed,
    /// A framing error to answer before closing.
    Refuse(u16, &'static str, &'static str),
}

struct Conn {
    shared: Rc<Shared>,
    /// The socket, shared with the waiter of a waiting poll.
    link: Rc<Link>,
    /// Received, not yet framed bytes.
    buf: Vec<u8>,
    /// What `buf` holds against the node's read budget.
    charged: usize,
    /// The header timeout until a request's first byte, counted from the
    /// last response and reset lazily ([`Timer::reset_after`]).
    idle: Timer,
    /// Held from a request's first byte until its response is written: a
    /// drain waits for it (up to its bound), so a request that was coming
    /// in when the drain began is answered (`503 shutting_down`) rather
    /// than cut off.
    in_flight: Option<InFlight>,
    /// The last bearer token this connection sent, parsed.
    tokens: TokenCache,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shared.read_budget.charge(&mut self.charged, 0);
    }
}

impl Conn {
    async fn run(&mut self) -> io::Result<()> {
        let mut served: u32 = 0;
        loop {
            // Each await below is a statement of its own with few live
            // locals: that keeps the task's state, which every idle
            // connection holds, small.
            // Handled in plain functions: nothing of the request is live
            // across an await, so none of it is in the task's state.
            let Some(done) = self.next_request().await? else {
                return Ok(()); // closed, or refused and closed
            };
            let (handled, close, head_only) = match done {
                Ok(done) => done,
                Err(e) => return Box::pin(self.refuse(e.status(), e.code(), e.message())).await,
            };
            let shared = self.shared.clone();
            let mut response = match handled {
                Handled::Respond(r) => r,
                Handled::Wait(handle) => match self.wait_poll(handle, close, head_only).await {
                    Polled::Respond(r) => r,
                    Polled::Written(at) => {
                        // Written by the step that answered it (see
                        // `waiter`), or finished here: idle since then.
                        self.in_flight = None;
                        self.idle.reset_after_from(at, shared.header_timeout);
                        continue;
                    }
                    Polled::Gone => return Ok(()),
                },
            };
            // A drain closes each connection after its response, but first
            // answers requests already received behind it (pipelined):
            // each gets `503 shutting_down`, and that one closes.
            response.close |= close || (shared.draining() && self.buf.is_empty());
            self.respond(&response, head_only).await?;
            self.in_flight = None;
            self.idle.reset_after(self.shared.header_timeout);
            if response.close {
                // Boxed: this rare path's buffer stays out of every
                // connection's resident state.
                Box::pin(self.linger()).await;
                return Ok(());
            }
            served = served.wrapping_add(1);
            if served % REQUESTS_PER_TURN == 0 {
                rt::yield_now().await;
            }
        }
    }

    /// Runs the framed request at the front of the buffer through the API,
    /// then drops its `consumed` bytes (the request borrows them until
    /// then).
    fn handle_buffered(&mut self, framed: Framed, consumed: usize) -> Result<Done, HttpError> {
        let done = handle(
            &self.shared,
            &mut self.tokens,
            &self.link,
            framed,
            &self.buf,
        );
        self.buf.drain(..consumed);
        release_spare(&mut self.buf);
        self.charge();
        done
    }

    /// Charges the read buffer's capacity to the node's budget; false
    /// when the node is past it.
    fn charge(&mut self) -> bool {
        self.buf.capacity() <= budget::FREE_BYTES && self.charged == 0
            || self
                .shared
                .read_budget
                .charge(&mut self.charged, self.buf.capacity())
    }

    /// Answers a request that cannot be served, and closes.
    async fn refuse(
        &mut self,
        status: u16,
        code: &'static str,
        message: &'static str,
    ) -> io::Result<()> {
        // Nothing of what was received is read again: give it back now,
        // not after the answer and the linger.
        self.buf = Vec::new();
        self.charge();
        let mut r = Response::error(status, code, message);
        r.close = true;
        self.respond(&r, false).await?;
        self.in_flight = None;
        Box::pin(self.linger()).await;
        Ok(())
    }

    /// Reads the next request. The usual one arrives whole in one read
    /// and is framed at once ([`http::frame_whole`]); only one split
    /// across reads, or a malformed one (refused from there), takes the
    /// general path, whose framer and head timer live in a boxed future
    /// (kept out of every connection's task, and not allocated for each
    /// request). Until the first byte the connection may be idle for the
    /// header timeout, then it closes without a word.
    ///
    /// `None` when the connection is done: closed by the client, idle past
    /// the header timeout, or a request refused (answered here).
    async fn next_request(&mut self) -> io::Result<Option<Result<Done, HttpError>>> {
        let (status, code, message) = match self.read_next().await? {
            Read_::Request(framed, consumed) => {
                return Ok(Some(self.handle_buffered(framed, consumed)))
            }
            Read_::Handled(done) => return Ok(Some(done)),
            Read_::Closed => return Ok(None),
            Read_::Refuse(status, code, message) => (status, code, message),
        };
        // Boxed, as the rare paths are: their state would otherwise set
        // the size of every connection's task.
        Box::pin(self.refuse(status, code, message)).await?;
        Ok(None)
    }

    /// Reads the next request; see [`Self::next_request`].
    ///
    /// With nothing buffered, the usual read brings one whole request and
    /// nothing after it: that one is run through the API from the thread's
    /// scratch buffer, in the step that read it, and never copied into the
    /// connection's buffer (which so stays unallocated, and its cache lines
    /// untouched). Anything else is kept in the buffer and framed from
    /// there.
    async fn read_next(&mut self) -> io::Result<Read_> {
        // What framing the bytes of this call's read gave, when they are
        // all the buffer holds: not done a second time. (Bound after the
        // read's await, so that it is not part of the task's state.)
        let framed_read = if self.buf.is_empty() {
            let Conn {
                shared,
                link,
                buf,
                idle,
                in_flight,
                tokens,
                ..
            } = self;
            let read = read_or_timeout(link.stream(), idle, |bytes| {
                if bytes.is_empty() {
                    return FirstRead::Done(Read_::Closed);
                }
                in_flight.get_or_insert_with(|| shared.in_flight());
                match http::frame_whole(&shared.http_limits, bytes) {
                    Some((framed, n)) if n == bytes.len() => {
                        FirstRead::Done(Read_::Handled(handle(shared, tokens, link, framed, bytes)))
                    }
                    framed => {
                        buf.extend_from_slice(bytes);
                        FirstRead::Buffered(framed)
                    }
                }
            })
            .await;
            match read {
                None => return Ok(Read_::Closed),
                Some(Ok(FirstRead::Done(done))) => return Ok(done),
                Some(Ok(FirstRead::Buffered(_))) if !self.charge() => return Ok(overloaded()),
                Some(Ok(FirstRead::Buffered(framed))) => Some(framed),
                Some(Err(e)) => return Err(e),
            }
        } else {
            None
        };
        if self.in_flight.is_none() {
            self.in_flight = Some(self.shared.in_flight());
        }
        let whole =
            framed_read.unwrap_or_else(|| http::frame_whole(&self.shared.http_limits, &self.buf));
        if let Some((framed, consumed)) = whole {
            return Ok(Read_::Request(framed, consumed));
        }
        // Boxed: the framer and the header timer live only while a request
        // is being read, not while a poll waits.
        Box::pin(self.read_request()).await
    }

    /// Reads until a whole request is framed, within the header timeout
    /// (once for the head, once again for the body).
    async fn read_request(&mut self) -> io::Result<Read_> {
        let mut framer = Framer::new(self.shared.http_limits);
        // Until the request's first byte this bounds the idle time since
        // the last response (then the connection closes without a word);
        // from that byte on, the time to receive the head (then 408).
        let mut timer = Timer::after(self.shared.header_timeout);
        let mut head_clock = !self.buf.is_empty();
        loop {
            let expect_continue = match framer.advance(&self.buf) {
                Ok(Progress::Complete { request, consumed }) => {
                    return Ok(Read_::Request(request, consumed));
                }
                Ok(Progress::HeadComplete { expect_continue }) => {
                    timer.set_after(self.shared.header_timeout);
                    Some(expect_continue)
                }
                Ok(Progress::NeedMore) => {
                    if !head_clock && !self.buf.is_empty() {
                        // The first bytes of this request: its head has
                        // the whole header timeout from now, however long
                        // the connection sat idle before.
                        timer.set_after(self.shared.header_timeout);
                        head_clock = true;
                    }
                    // The framer keeps a request's raw bytes until it is
                    // whole; chunk framing (many tiny chunks with long
                    // extensions) could make them far larger than the body
                    // limit, so the raw request is bounded too.
                    if self.buf.len()
                        > raw_request_bytes_max(self.shared.http_limits.body_bytes_max)
                    {
                        return Ok(refusal(HttpError::PayloadTooLarge));
                    }
                    None
                }
                Err(e) => return Ok(refusal(e)),
            };
            match expect_continue {
                Some(true) => {
                    Box::pin(self.write_out_of_band(b"HTTP/1.1 100 Continue\r\n\r\n")).await?;
                    continue;
                }
                Some(false) => continue,
                None => {}
            }
            let read = fill_or_timeout(self.link.stream(), &mut self.buf, &mut timer).await;
            match read {
                Some(Ok(0)) => return Ok(Read_::Closed),
                Some(Ok(_)) if !self.charge() => return Ok(overloaded()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None if self.buf.is_empty() && !framer.head_done() => return Ok(Read_::Closed),
                None => {
                    return Ok(Read_::Refuse(
                        408,
                        "request_timeout",
                        "the request was not received in time",
                    ))
                }
            }
        }
    }

    /// Waits for a poll's end while watching the socket: bytes of a
    /// pipelined request are kept (up to a bound), a closed socket cancels
    /// the poll. While nothing is kept and the connection stays open after
    /// the answer, the answer may be written by the step that makes it
    /// ([`Waited::Written`]; see `waiter`); the idle timer then runs on, so
    /// that a client that sends nothing more is closed on time.
    /// [`Polled::Gone`] when the client went away.
    ///
    /// A plain function returning an `async move` block, not an `async fn`:
    /// an `async fn` keeps a second copy of its arguments in its state,
    /// which every waiting poll would carry.
    #[allow(clippy::manual_async_fn)]
    fn wait_poll(
        &mut self,
        cancel: Option<CancelKey>,
        close: bool,
        head_only: bool,
    ) -> impl std::future::Future<Output = Polled> + '_ {
        async move {
            enum Woke {
                Ended(Waited),
                Read(io::Result<usize>),
                /// The idle timer, while reading on.
                Idle,
                Recheck,
            }
            self.link.hold(self.in_flight.take(), head_only);
            loop {
                // Over the budget, pipelined bytes wait in the socket.
                let within = self.charge();
                let Conn {
                    shared,
                    link,
                    buf,
                    idle,
                    ..
                } = self;
                let watch = within && buf.len() < PIPELINE_BYTES_MAX;
                // Bytes behind the poll are answered after it, by this
                // task: it must run once the answer is written.
                link.allow_direct(!close && buf.is_empty());
                if !watch {
                    // Not reading on: look again a little later whether the
                    // client is still there and the budget has room. The idle
                    // timer serves, so the task holds one timer, not two.
                    idle.set_after(HANG_UP_CHECK);
                }
                let stream = link.stream();
                // One hand-written poll, not futures raced: its state,
                // which every waiting poll holds, is its references alone.
                let woke = std::future::poll_fn(|cx| {
                    if let Poll::Ready(waited) = std::pin::Pin::new(&mut link.wait()).poll(cx) {
                        return Poll::Ready(Woke::Ended(waited));
                    }
                    if watch {
                        if let Poll::Ready(read) = poll_read(stream, cx, &mut append_to(buf)) {
                            return Poll::Ready(Woke::Read(read));
                        }
                    }
                    let fired = std::pin::Pin::new(&mut *idle).poll(cx);
                    fired.map(|_| if watch { Woke::Idle } else { Woke::Recheck })
                })
                .await;
                let gone = match woke {
                    Woke::Ended(Waited::Written(at)) => return Polled::Written(at),
                    Woke::Ended(waited) => {
                        self.in_flight = self.link.take_in_flight();
                        return match waited {
                            Waited::Answer(reply) => Polled::Respond(api::reply_response(reply)),
                            Waited::Dropped => Polled::Respond(Response::error(
                                500,
                                "internal",
                                "the poll was dropped",
                            )),
                            Waited::Partly(rest) => {
                                // Boxed, with what is left: a rare path,
                                // kept out of every connection's task.
                                let stream = self.link.stream();
                                let written =
                                    Box::pin(async move { write_all(stream, &rest).await }).await;
                                match written {
                                    Ok(()) => Polled::Written(rt::now()),
                                    Err(_) => Polled::Gone,
                                }
                            }
                            Waited::Failed | Waited::Written(_) => Polled::Gone,
                        };
                    }
                    Woke::Read(Ok(n)) => n == 0,
                    Woke::Read(Err(_)) => true,
                    Woke::Idle => {
                        // Nothing to close for while the poll waits.
                        idle.reset_after(shared.header_timeout);
                        false
                    }
                    // The loop heard the client close (unread bytes may still
                    // be queued before the end), or a peek, which takes nothing,
                    // finds the end or an error.
                    Woke::Recheck => {
                        stream.hung_up()
                            || match stream.get_ref().peek(&mut [0u8; 1]) {
                                Ok(n) => n == 0,
                                Err(e) => !is_retry(&e),
                            }
                    }
                };
                if gone {
                    self.in_flight = self.link.take_in_flight();
                    if let Some(key) = cancel {
                        self.shared.cancel(key);
                    }
                    return Polled::Gone;
                }
            }
        }
    }

    async fn respond(&mut self, response: &Response, head_only: bool) -> io::Result<()> {
        self.shared.metrics(|m| m.count_response(response.status));
        let rest = send_now(
            self.link.stream(),
            response,
            self.shared.cors().as_ref(),
            head_only,
        )?;
        match rest {
            Some(rest) => write_all(self.link.stream(), &rest).await,
            None => Ok(()),
        }
    }

    async fn write_out_of_band(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.shared.metrics(|m| m.count_response(100));
        write_all(self.link.stream(), bytes).await
    }

    /// Closes gracefully: stop sending, then read and discard what the
    /// client still sends for a short while, so that the kernel does not
    /// answer it with a reset that destroys our last response.
    async fn linger(&mut self) {
        let _ = self.link.stream().get_ref().shutdown(Shutdown::Write);
        let stream = self.link.stream();
        let _ = future::or(
            async {
                let mut sink = [0u8; 512];
                let mut total = 0;
                while total < LINGER_BYTES_MAX {
                    match stream.read_with(|mut s| s.read(&mut sink)).await {
                        Ok(n) if n > 0 => total += n,
                        _ => break,
                    }
                }
            },
            async {
                Timer::after(LINGER).await;
            },
        )
        .await;
    }
}

/// Writes `response` now, as much as the socket takes: through the
/// thread's scratch buffer, so that a response the send buffer takes at
/// once (nearly all) needs no buffer of the connection's, and a waiting
/// poll holds none. Gives what was not taken.
pub(super) fn send_now(
    stream: &Io<TcpStream>,
    response: &Response,
    cors: Option<&Cors<'_>>,
    head_only: bool,
) -> io::Result<Option<Vec<u8>>> {
    OUT.with(|out| {
        // Borrowed only here, for one write: never twice.
        let Ok(mut out) = out.try_borrow_mut() else {
            let mut own = Vec::new();
            response::write(&mut own, response, cors, head_only);
            return Ok(Some(own));
        };
        out.clear();
        response::write(&mut out, response, cors, head_only);
        let unsent = match stream.try_write(&out) {
            Ok(n) => out.get(n..).unwrap_or_default(),
            Err(e) if is_retry(&e) => &out[..],
            Err(e) => return Err(e),
        };
        let rest = (!unsent.is_empty()).then(|| unsent.to_vec());
        if out.capacity() > OUT_SCRATCH_BYTES_MAX {
            *out = Vec::new();
        }
        Ok(rest)
    })
}

/// Writes all of `bytes` within [`WRITE_TIMEOUT`]. The usual response fits
/// the send buffer at once and never sets up the timer.
async fn write_all(stream: &Io<TcpStream>, bytes: &[u8]) -> io::Result<()> {
    let n = match stream.try_write(bytes) {
        Ok(n) => n,
        Err(e) if is_retry(&e) => 0,
        Err(e) => return Err(e),
    };
    if n == bytes.len() {
        return Ok(());
    }
    // Boxed: this rare path's timer and write state stay out of every
    // connection's task.
    Box::pin(write_rest(stream, &bytes[n..])).await
}

/// Writes `rest` once the socket takes it, within [`WRITE_TIMEOUT`].
async fn write_rest(stream: &Io<TcpStream>, rest: &[u8]) -> io::Result<()> {
    future::or(async { stream.write_all(rest).await }, async {
        Timer::after(WRITE_TIMEOUT).await;
        Err(io::ErrorKind::TimedOut.into())
    })
    .await
}

/// Reads more bytes into `buf`, or `None` when `timer` fires first.
fn fill_or_timeout<'a>(
    stream: &'a Io<TcpStream>,
    buf: &'a mut Vec<u8>,
    timer: &'a mut Timer,
) -> impl std::future::Future<Output = Option<io::Result<usize>>> + 'a {
    read_or_timeout(stream, timer, append_to(buf))
}

/// What [`fill_or_timeout`] and a waiting poll do with the bytes read: append
/// them to `buf`, and count them.
fn append_to(buf: &mut Vec<u8>) -> impl FnMut(&[u8]) -> usize + '_ {
    |bytes| {
        buf.extend_from_slice(bytes);
        bytes.len()
    }
}

/// A write to try again once the socket is writable.
fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Reads as [`poll_read`] does, or `None` when `timer` fires first. A
/// hand-written poll rather than two async blocks raced: its state, which
/// every connection waiting for a request holds, is its arguments alone.
fn read_or_timeout<'a, T>(
    stream: &'a Io<TcpStream>,
    timer: &'a mut Timer,
    mut take: impl FnMut(&[u8]) -> T + 'a,
) -> impl std::future::Future<Output = Option<io::Result<T>>> + 'a {
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(read) = poll_read(stream, cx, &mut take) {
            return Poll::Ready(Some(read));
        }
        std::pin::Pin::new(&mut *timer).poll(cx).map(|_| None)
    })
}

/// Once the socket is readable, reads what is there into the thread's
/// scratch buffer (no zeroing of a fresh chunk per read) and gives it to
/// `take` (empty at the end of the stream) in the same step, before any
/// other task can use that buffer.
fn poll_read<T>(
    stream: &Io<TcpStream>,
    cx: &mut std::task::Context<'_>,
    take: &mut impl FnMut(&[u8]) -> T,
) -> Poll<io::Result<T>> {
    loop {
        if stream.poll_readable(cx).is_pending() {
            return Poll::Pending;
        }
        let read: io::Result<T> = SCRATCH.with_borrow_mut(|scratch| {
            let n = stream.try_read(&mut scratch[..])?;
            Ok(take(&scratch[..n]))
        });
        match read {
            Err(e) if is_retry(&e) => {} // the readiness is cleared: wait
            done => return Poll::Ready(done),
        }
    }
}

/// Runs a framed request read from `bytes` through the API.
fn handle(
    shared: &Shared,
    tokens: &mut TokenCache,
    link: &Rc<Link>,
    framed: Framed,
    bytes: &[u8],
) -> Result<Done, HttpError> {
    let request = framed.request(bytes)?;
    if !request.host_ok() {
        // RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1
        // request without `Host` and to any with more than one.
        return Err(HttpError::BadRequest);
    }
    let handled = shared.handle(&request, tokens, link);
    // The next request of this connection most likely reads the same
    // session, and after a send the same peer's, and the same links: they
    // are prefetched when the task is woken for it.
    rt::hint_data(shared.hint_addrs(tokens, request.method == Method::Post, link));
    Ok((handled, !request.keep_alive, request.method == Method::Head))
}

thread_local! {
    /// Where every connection of this thread reads into before keeping
    /// the bytes; borrowed for one non-blocking read and what is done with
    /// its bytes at once (which reads no socket: nothing borrows it twice).
    static SCRATCH: std::cell::RefCell<[u8; READ_CHUNK_BYTES]> =
        const { std::cell::RefCell::new([0; READ_CHUNK_BYTES]) };
    /// Where every connection of this thread writes a response before
    /// sending it; borrowed only for one non-blocking write.
    static OUT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The response scratch buffer is given back after a response larger than
/// this (a big `/metrics`), so one large answer does not stay resident.
const OUT_SCRATCH_BYTES_MAX: usize = 64 * 1024;

/// Gives back what a large request left in `buf` once its bytes are
/// dropped: an empty buffer above [`IDLE_BUFFER_BYTES_MAX`] is freed, and
/// one holding a few pipelined bytes is shrunk to fit them (but not below
/// that), so a poll that then waits does not keep the large request's
/// memory.
fn release_spare(buf: &mut Vec<u8>) {
    if buf.capacity() <= IDLE_BUFFER_BYTES_MAX {
        return;
    }
    if buf.is_empty() {
        *buf = Vec::new();
    } else {
        buf.shrink_to(IDLE_BUFFER_BYTES_MAX);
    }
}

/// Raw bytes one request may take: its head, its body twice over for
/// chunk framing, and some slack.
pub(super) fn raw_request_bytes_max(body_bytes_max: usize) -> usize {
    HEAD_BYTES_MAX + 2 * body_bytes_max + RAW_SLACK_BYTES
}

/// Slack over the body limit for chunk-size lines and trailers.
const RAW_SLACK_BYTES: usize = 16 * 1024;

/// The refusal of a read past the node's read budget.
fn overloaded() -> Read_ {
    Read_::Refuse(
        503,
        "overloaded",
        "the node holds too many partly received requests",
    )
}

fn refusal(e: HttpError) -> Read_ {
    Read_::Refuse(e.status(), e.code(), e.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, without calling it.
    fn returned_size<A, B, R>(_: impl Fn(A, B) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn spare_buffer_memory_is_given_back() {
        // Empty after a large request: freed.
        let mut buf = Vec::with_capacity(64 * 1024);
        release_spare(&mut buf);
        assert_eq!(buf.capacity(), 0);
        // One pipelined byte after a large request: shrunk.
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.push(b'G');
        release_spare(&mut buf);
        assert!(
            buf.capacity() <= IDLE_BUFFER_BYTES_MAX,
            "{}",
            buf.capacity()
        );
        assert_eq!(buf, b"G");
        // A large pipelined request is kept whole.
        let mut buf = vec![b'x'; 48 * 1024];
        release_spare(&mut buf);
        assert_eq!(buf.len(), 48 * 1024);
        // A small buffer is left alone.
        let mut buf = Vec::with_capacity(IDLE_BUFFER_BYTES_MAX);
        buf.push(b'G');
        release_spare(&mut buf);
        assert_eq!(buf.capacity(), IDLE_BUFFER_BYTES_MAX);
    }

    /// Every connection's task is this future, so its size is part of the
    /// memory of every waiting poll (BENCHMARKS.md, idle). Rare paths
    /// (refusals, lingering, reading a request) are boxed so that they do
    /// not set it; a change that makes it grow past this bound should box
    /// what grew, or raise the bound knowingly.
    #[test]
    fn a_connection_task_stays_small() {
        let size = returned_size(serve);
        // 680 until the socket moved to the connection's `Link` (shared
        // with its poll's waiter, for answers written where they are made):
        // the compiler's layout of `run` then gained 16 bytes of padding.
        assert!(size <= 696, "the connection task is {size} bytes");
    }

    /// A client that pipelines requests and reads the answers keeps full
    /// reads coming; its connection's task must still let the others run
    /// every [`REQUESTS_PER_TURN`] requests, not hold the thread until the
    /// client stops.
    #[test]
    fn a_pipelining_client_lets_other_tasks_run() {
        use crate::config::{parse, Parsed};
        use crate::io::rt::{block_on, LocalExecutor};
        use std::io::Write;
        use std::net::TcpListener;
        const REQUESTS: u64 = 1000;
        let Ok(Parsed::Run(config)) = parse(std::iter::empty(), |_| None) else {
            panic!("the default configuration");
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        // Every request is in the server's receive buffer before it starts.
        client
            .write_all(&b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(REQUESTS as usize))
            .unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // Reads the answers until the server closes (when the test drops
        // the connection's task) or 10 s pass.
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 64 * 1024];
            while let Ok(n) = client.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
        });
        let shared = super::super::new_shared(&config).unwrap();
        let ex = Rc::new(LocalExecutor::new());
        let (answered, most_in_a_row) = block_on(ex.run(async {
            let serving = ex.spawn(serve(shared.clone(), Io::new(server).unwrap()));
            // Another task, as another client's would be: it runs whenever
            // the connection's task lets it, and notes how many answers
            // went out since it last ran.
            let observer = ex.spawn({
                let shared = shared.clone();
                async move {
                    let answers = || {
                        let mut n = 0;
                        shared.metrics(|m| n = m.responses(200));
                        n
                    };
                    // Both tasks started together: what went out before
                    // this one first ran counts too.
                    let mut last = answers();
                    let mut most = last;
                    for _ in 0..100_000 {
                        rt::yield_now().await;
                        let now = answers();
                        most = most.max(now - last);
                        last = now;
                        if now >= REQUESTS {
                            break;
                        }
                    }
                    (last, most)
                }
            });
            let seen = observer.await;
            drop(serving);
            seen
        }))
        .unwrap();
        reader.join().unwrap();
        assert_eq!(answered, REQUESTS);
        assert!(
            most_in_a_row <= u64::from(REQUESTS_PER_TURN),
            "{most_in_a_row} requests served while no other task could run"
        );
    }

    /// Partly received requests are charged to the node's read budget: a
    /// connection that would take the node past it gets 503 and is closed,
    /// others go on, and what a connection held is given back when it ends.
    #[test]
    fn partly_received_requests_are_bounded_node_wide() {
        use crate::config::{parse, Parsed};
        use crate::io::rt::{block_on, LocalExecutor};
        use std::io::Write;
        use std::net::TcpListener;
        let Ok(Parsed::Run(config)) = parse(std::iter::empty(), |_| None) else {
            panic!("the default configuration");
        };
        let shared = super::super::new_shared(&config).unwrap();
        shared.read_budget.set_max(64 * 1024);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // Each client sends the head and 40 KB of a 60 KB body, then waits.
        let head =
            b"POST /v1/pairs/p/a/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n";
        let clients: Vec<TcpStream> = (0..2)
            .map(|_| {
                let mut c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                c.write_all(head).unwrap();
                c.write_all(&[b'x'; 40_000]).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                c
            })
            .collect();
        let servers: Vec<TcpStream> = (0..2).map(|_| listener.accept().unwrap().0).collect();
        let ex = Rc::new(LocalExecutor::new());
        let (used_while_open, used_after) = block_on(ex.run(async {
            let tasks: Vec<_> = servers
                .into_iter()
                .map(|s| ex.spawn(serve(shared.clone(), Io::new(s).unwrap())))
                .collect();
            // Let both read what was sent.
            Timer::after(Duration::from_millis(300)).await;
            let while_open = shared.read_budget.used();
            drop(tasks);
            (while_open, shared.read_budget.used())
        }))
        .unwrap();
        // One connection holds its 40 KB against the budget; the other,
        // which would have passed it, was answered 503 and closed.
        let answers: Vec<String> = clients
            .into_iter()
            .map(|mut c| {
                let mut got = Vec::new();
                let _ = c.read_to_end(&mut got);
                String::from_utf8_lossy(&got).into_owned()
            })
            .collect();
        let refused = answers
            .iter()
            .filter(|a| a.starts_with("HTTP/1.1 503") && a.contains("\"overloaded\""))
            .count();
        assert_eq!(refused, 1, "{answers:?}");
        assert!(
            (30_000..=64 * 1024).contains(&used_while_open),
            "charged {used_while_open}"
        );
        assert_eq!(used_after, 0, "given back when the connections ended");
    }

    /// A waiting poll that stops reading its socket (the node over its
    /// read budget) still notices its client leave, and cancels the poll.
    #[test]
    fn a_poll_not_reading_still_sees_its_client_leave() {
        use crate::config::{parse, Parsed};
        use crate::io::rt::{block_on, LocalExecutor};
        use std::io::Write;
        use std::net::TcpListener;
        let Ok(Parsed::Run(config)) = parse(std::iter::empty(), |_| None) else {
            panic!("the default configuration");
        };
        let shared = super::super::new_shared(&config).unwrap();
        shared.read_budget.set_max(0); // any buffer past the free part is over
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let client_side = std::thread::spawn(move || {
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            client
                .write_all(
                    b"POST /v1/pairs/hang/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                )
                .unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.ends_with(b"}") {
                let n = client.read(&mut buf).unwrap();
                assert!(n > 0, "closed before the join's answer");
                got.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8(got).unwrap();
            let token = crate::proto::ids::session_in_join_body(&text);
            let poll = format!(
                "GET /v1/pairs/hang/a/events?timeout_ms=60000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
            );
            client.write_all(poll.as_bytes()).unwrap();
            // More than the free part of a buffer, pipelined behind it.
            client.write_all(&[b'X'; 20_000]).unwrap();
            std::thread::sleep(Duration::from_millis(400));
            // The client goes away.
        });
        let ex = Rc::new(LocalExecutor::new());
        let (was_waiting, gone_after) = block_on(ex.run(async {
            shared.metrics(|m| m.connections_open += 1); // as the listener does
            let _task = ex.spawn(serve(shared.clone(), Io::new(server).unwrap()));
            let waiting = |n: &str| {
                shared
                    .status_line()
                    .contains(&format!(", {n} polls waiting"))
            };
            let mut was_waiting = false;
            let started = std::time::Instant::now();
            // Bounded: 60 looks, 100 ms apart.
            for _ in 0..60 {
                Timer::after(Duration::from_millis(100)).await;
                was_waiting |= waiting("1");
                if was_waiting && waiting("0") {
                    return (true, Some(started.elapsed()));
                }
            }
            (was_waiting, None)
        }))
        .unwrap();
        client_side.join().unwrap();
        assert!(was_waiting, "the poll never waited");
        let gone_after =
            gone_after.expect("the poll of a client that left was still waiting after 6 s");
        assert!(gone_after < Duration::from_secs(3), "{gone_after:?}");
    }
}
