//! The four operations every workload is made of — join, poll, send,
//! leave — spoken to pairlink (API.md) or to nginx + Nchan.
//!
//! # The Nchan mapping
//!
//! Nchan has no sessions and no presence. A pair `p` is two channels: `p-a`
//! is side a's inbox and `p-b` side b's (benches/nchan/nginx.conf).
//!
//! - join: local, no request (the relay and idle workloads); the pairing
//!   workload's join of side b is `POST /pub/p-a` with the body
//!   `peer_online` ([`NCHAN_PEER_ONLINE`]): b announces itself in a's inbox,
//!   the nearest Nchan has to pairlink's join finding the peer.
//! - poll: `GET /sub/p-a`, Nchan's long-poll, with the `Last-Modified` /
//!   `Etag` of the previous answer sent back as `If-Modified-Since` /
//!   `If-None-Match` (Nchan's cursor). A 200 is one message; its body
//!   `peer_online` is read as the `peer_online` event, any other body as a
//!   message. 408 (or 304) is a poll that timed out with nothing new. Nchan
//!   holds a poll for its `nchan_subscriber_timeout` (20 s in our config),
//!   not for `timeout_ms`, so a poll's deadline there is at least
//!   [`NCHAN_POLL_WAIT`] plus the request deadline.
//! - send: `POST /pub/p-b` (to the peer's inbox), 201 or 202.
//! - leave: `DELETE /pub/p-a`, deleting the side's inbox (404 when it never
//!   held a message).
//!
//! So a pairing costs pairlink five requests (join a, poll a, join b, leave
//! a, leave b) and Nchan four (poll a, publish to a, delete both channels);
//! a relayed message costs each one send and one poll.

use super::args::Target;
use super::http::{push_u64, with_deadline, Client, ErrKind, Response, TemplateKey, Url};
use super::json;
use super::report::Errors;
use pairlink::io::rt::Task;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

/// The body of the Nchan message by which side b announces itself in the
/// pairing workload; a poll answer carrying it is [`Event::PeerOnline`].
/// The relay's messages start with a digit, so they never equal it.
pub const NCHAN_PEER_ONLINE: &str = "peer_online";

/// How long Nchan holds a long poll with nothing to answer:
/// `nchan_subscriber_timeout` in benches/nchan/nginx.conf.
pub const NCHAN_POLL_WAIT: Duration = Duration::from_secs(20);

/// A session as the client sees it.
#[derive(Clone, Debug)]
pub struct Session {
    /// The pair id.
    pub pair: String,
    /// `'a'` or `'b'`.
    pub side: char,
    /// pairlink's bearer token (empty for Nchan).
    pub token: String,
    /// `peer` of the join answer was `online` (pairlink).
    pub peer_online_at_join: bool,
    /// pairlink's cursor: the highest `seq` seen.
    pub after: u64,
    /// Nchan's cursor: the last answer's `Last-Modified`.
    pub last_modified: Option<String>,
    /// Nchan's cursor: the last answer's `Etag`.
    pub etag: Option<String>,
    /// Unique to the session (and its clones), so a [`Client`] knows the
    /// request templates it saved for it.
    id: u64,
}

/// [`TemplateKey::op`] of a pairlink poll.
const OP_POLL: u8 = 0;
/// [`TemplateKey::op`] of a send (either target).
const OP_SEND: u8 = 1;

thread_local! {
    static NEXT_SESSION_ID: Cell<u64> = const { Cell::new(0) };
}

impl Session {
    fn key(&self, op: u8) -> TemplateKey {
        TemplateKey {
            session: self.id,
            op,
        }
    }
}

/// The kind of one event of a poll answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The peer is present (pairlink; Nchan: the message
    /// [`NCHAN_PEER_ONLINE`]).
    PeerOnline,
    /// A message; its text is beside it in [`Events`].
    Message,
    /// The peer went away, or an event type the generator ignores.
    Other,
}

/// The events of poll answers, in order, with the texts of the messages
/// in one buffer: kept by a poll loop and cleared between polls, so
/// reading a message allocates nothing.
#[derive(Debug, Default)]
pub struct Events {
    /// Each event with the range of its text in `text` (empty but for
    /// messages).
    list: Vec<(Event, usize, usize)>,
    text: String,
}

impl Events {
    /// No events.
    pub fn new() -> Events {
        Events::default()
    }

    /// Forgets every event, keeping the buffers.
    pub fn clear(&mut self) {
        self.list.clear();
        self.text.clear();
    }

    /// No event.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// An event of kind `kind` is there.
    pub fn contains(&self, kind: Event) -> bool {
        self.list.iter().any(|&(k, _, _)| k == kind)
    }

    /// Each event with its text (empty but for messages).
    pub fn iter(&self) -> impl Iterator<Item = (Event, &str)> {
        self.list
            .iter()
            .map(|&(k, from, to)| (k, &self.text[from..to]))
    }

    fn push(&mut self, kind: Event, text: &str) {
        let from = self.text.len();
        self.text.push_str(text);
        self.list.push((kind, from, self.text.len()));
    }

    /// Drops the events pushed since `len` events were there.
    fn truncate(&mut self, len: usize) {
        if let Some(&(_, from, _)) = self.list.get(len) {
            self.text.truncate(from);
            self.list.truncate(len);
        }
    }
}

/// Reads pairlink's poll answer
/// `{"events":[{"seq":N,"type":"…","data":"…"},…],…}` into `out`, and
/// returns the highest `seq` (0 for none). Each event needs a `seq` (an
/// unsigned integer) and a string `type`; a `message` needs a string
/// `data`. Other members are skipped, a repeated member's first value
/// counts, and the whole answer must be JSON.
fn read_events(body: &[u8], out: &mut Events) -> Option<u64> {
    let mut r = json::Reader::new(body)?;
    let mut events_seen = false;
    let mut max_seq = 0;
    r.object(|r, key| {
        if &*key != "events" || events_seen {
            return r.skip();
        }
        events_seen = true;
        r.array(|r| {
            let mut seq = None;
            let mut kind: Option<Option<Event>> = None;
            let mut data: Option<Option<std::borrow::Cow<'_, str>>> = None;
            r.object(|r, key| match &*key {
                "seq" if seq.is_none() => r.u64().map(|n| seq = Some(n)),
                "type" if kind.is_none() => r.str_or_skip().map(|t| {
                    kind = Some(t.map(|t| match &*t {
                        "peer_online" => Event::PeerOnline,
                        "message" => Event::Message,
                        _ => Event::Other,
                    }));
                }),
                "data" if data.is_none() => r.str_or_skip().map(|d| data = Some(d)),
                _ => r.skip(),
            })?;
            max_seq = max_seq.max(seq?);
            match kind?? {
                Event::Message => out.push(Event::Message, &data??),
                k => out.push(k, ""),
            }
            Some(())
        })
    })?;
    r.end()?;
    events_seen.then_some(max_seq)
}

/// Speaks one target's protocol with the run's deadlines.
#[derive(Clone, Copy, Debug)]
pub struct Proto {
    /// The protocol.
    pub target: Target,
    /// Deadline of requests that are not polls.
    pub timeout: Duration,
    /// How long a poll may wait at the server.
    pub poll_timeout: Duration,
}

impl Proto {
    /// The protocol and deadlines a run's options ask for.
    pub fn of(args: &super::args::Args) -> Proto {
        Proto {
            target: args.target,
            timeout: args.timeout,
            poll_timeout: args.poll_timeout,
        }
    }
}

/// `/a` or `/b`: the side's path segment.
fn side_path(side: char) -> &'static str {
    if side == 'a' {
        "/a"
    } else {
        "/b"
    }
}

/// `-a` or `-b`: the side's Nchan channel suffix.
fn channel_suffix(side: char) -> &'static str {
    if side == 'a' {
        "-a"
    } else {
        "-b"
    }
}

fn expect(r: Response, ok: &[u16]) -> Result<Response, ErrKind> {
    if ok.contains(&r.status) {
        Ok(r)
    } else {
        Err(ErrKind::Status(r.status))
    }
}

impl Proto {
    /// Joins side `side` of `pair`.
    pub async fn join(&self, c: &mut Client, pair: &str, side: char) -> Result<Session, ErrKind> {
        let mut s = Session {
            pair: pair.to_string(),
            side,
            token: String::new(),
            peer_online_at_join: false,
            after: 0,
            last_modified: None,
            etag: None,
            id: NEXT_SESSION_ID.with(|n| n.replace(n.get() + 1)),
        };
        if self.target == Target::Nchan {
            return Ok(s);
        }
        c.start("POST");
        c.path("/v1/pairs/");
        c.path(pair);
        c.path(side_path(side));
        c.end_line();
        c.finish(Some(b""));
        expect(c.send_scratch(self.timeout, false).await?, &[201])?;
        // `session` must be a string; `peer` is online only as the string.
        let mut token = None;
        let mut peer = None;
        json::Reader::new(c.body())
            .and_then(|mut r| {
                r.object(|r, key| match &*key {
                    "session" if token.is_none() => r.str_or_skip().map(|t| token = Some(t)),
                    "peer" if peer.is_none() => r.str_or_skip().map(|p| peer = Some(p)),
                    _ => r.skip(),
                })?;
                r.end()
            })
            .ok_or(ErrKind::Parse)?;
        s.token = token.flatten().ok_or(ErrKind::Parse)?.into_owned();
        s.peer_online_at_join = peer.flatten().as_deref() == Some("online");
        Ok(s)
    }

    /// Joins side `side` of `pair` while the other side polls, as the
    /// pairing workload does. For pairlink, an ordinary join. For Nchan,
    /// `POST /pub/<pair>-<peer>` with the body [`NCHAN_PEER_ONLINE`], which
    /// the peer's poll reads as `peer_online`.
    pub async fn join_peer(
        &self,
        c: &mut Client,
        pair: &str,
        side: char,
    ) -> Result<Session, ErrKind> {
        let mut s = self.join(c, pair, side).await?;
        if self.target == Target::Nchan {
            self.send(c, &s, NCHAN_PEER_ONLINE.as_bytes(), None).await?;
            s.peer_online_at_join = true;
        }
        Ok(s)
    }

    /// The deadline of one poll: the longest the server may hold it, plus
    /// the request deadline.
    pub fn poll_deadline(&self) -> Duration {
        let wait = match self.target {
            Target::Pairlink => self.poll_timeout,
            Target::Nchan => self.poll_timeout.max(NCHAN_POLL_WAIT),
        };
        wait + self.timeout
    }

    /// One long poll: appends the events it returned to `out` and moves the
    /// session's cursor past them. A poll that timed out at the server
    /// returns no events and is not an error.
    pub async fn poll(
        &self,
        c: &mut Client,
        s: &mut Session,
        out: &mut Events,
    ) -> Result<(), ErrKind> {
        let deadline = self.poll_deadline();
        match self.target {
            Target::Pairlink => {
                let key = s.key(OP_POLL);
                if !c.write_template(key, |out| push_u64(out, s.after)) {
                    c.start("GET");
                    c.path("/v1/pairs/");
                    c.path(&s.pair);
                    c.path(side_path(s.side));
                    c.path("/events?after=");
                    let head = c.scratch.len();
                    c.path_u64(s.after);
                    let tail = c.scratch.len();
                    c.path("&timeout_ms=");
                    c.path_u64(self.poll_timeout.as_millis() as u64);
                    c.end_line();
                    c.bearer(&s.token);
                    c.finish(None);
                    c.save_template(key, 0..head, tail..c.scratch.len());
                }
                expect(c.send_scratch(deadline, false).await?, &[200])?;
                let len = out.list.len();
                match read_events(c.body(), out) {
                    Some(seq) => {
                        s.after = s.after.max(seq);
                        Ok(())
                    }
                    None => {
                        out.truncate(len);
                        Err(ErrKind::Parse)
                    }
                }
            }
            Target::Nchan => {
                c.start("GET");
                c.path("/sub/");
                c.path(&s.pair);
                c.path(channel_suffix(s.side));
                c.end_line();
                if let Some(lm) = &s.last_modified {
                    c.header("If-Modified-Since", lm);
                }
                if let Some(etag) = &s.etag {
                    c.header("If-None-Match", etag);
                }
                c.finish(None);
                let r = c.send_scratch(deadline, false).await?;
                match r.status {
                    200 => {
                        if r.last_modified.is_some() {
                            s.last_modified = r.last_modified;
                        }
                        if r.etag.is_some() {
                            s.etag = r.etag;
                        }
                        let text = std::str::from_utf8(c.body()).map_err(|_| ErrKind::Parse)?;
                        if text == NCHAN_PEER_ONLINE {
                            out.push(Event::PeerOnline, "");
                        } else {
                            out.push(Event::Message, text);
                        }
                        Ok(())
                    }
                    // Nchan answers a long poll that timed out with 304
                    // (or 408 in some versions): nothing new.
                    304 | 408 => Ok(()),
                    other => Err(ErrKind::Status(other)),
                }
            }
        }
    }

    /// Sends `data` to the peer. `key` is sent as pairlink's
    /// `Idempotency-Key`, so a retry after a lost answer is not delivered
    /// twice.
    pub async fn send(
        &self,
        c: &mut Client,
        s: &Session,
        data: &[u8],
        key: Option<&str>,
    ) -> Result<(), ErrKind> {
        match self.target {
            Target::Pairlink => {
                if !c.write_template(s.key(OP_SEND), |_| {}) {
                    c.start("POST");
                    c.path("/v1/pairs/");
                    c.path(&s.pair);
                    c.path(side_path(s.side));
                    c.path("/messages");
                    c.end_line();
                    c.bearer(&s.token);
                    let end = c.scratch.len();
                    c.save_template(s.key(OP_SEND), 0..end, end..end);
                }
                if let Some(k) = key {
                    c.header("Idempotency-Key", k);
                }
                c.finish(Some(data));
                expect(c.send_scratch(self.timeout, false).await?, &[202]).map(drop)
            }
            Target::Nchan => {
                if !c.write_template(s.key(OP_SEND), |_| {}) {
                    let peer = if s.side == 'a' { 'b' } else { 'a' };
                    c.start("POST");
                    c.path("/pub/");
                    c.path(&s.pair);
                    c.path(channel_suffix(peer));
                    c.end_line();
                    let end = c.scratch.len();
                    c.save_template(s.key(OP_SEND), 0..end, end..end);
                }
                c.finish(Some(data));
                expect(c.send_scratch(self.timeout, false).await?, &[201, 202]).map(drop)
            }
        }
    }

    /// Ends the session (pairlink) or deletes its inbox channel (Nchan).
    pub async fn leave(&self, c: &mut Client, s: &Session) -> Result<(), ErrKind> {
        match self.target {
            Target::Pairlink => {
                c.start("DELETE");
                c.path("/v1/pairs/");
                c.path(&s.pair);
                c.path(side_path(s.side));
                c.end_line();
                c.bearer(&s.token);
                c.finish(None);
                expect(c.send_scratch(self.timeout, false).await?, &[204]).map(drop)
            }
            Target::Nchan => {
                c.start("DELETE");
                c.path("/pub/");
                c.path(&s.pair);
                c.path(channel_suffix(s.side));
                c.end_line();
                c.finish(None);
                // 404: the channel never held a message.
                expect(c.send_scratch(self.timeout, false).await?, &[200, 204, 404]).map(drop)
            }
        }
    }

    /// Polls waiting at the server now: pairlink's `pairlink_polls_waiting`
    /// from `/metrics`, or the `subscribers` line of Nchan's stub status
    /// (`/nchan_status` in benches/nchan/nginx.conf).
    pub async fn waiting_polls(&self, c: &mut Client) -> Result<u64, ErrKind> {
        let (path, key, sep) = match self.target {
            Target::Pairlink => ("/metrics", "pairlink_polls_waiting", ' '),
            Target::Nchan => ("/nchan_status", "subscribers", ':'),
        };
        c.begin("GET", path);
        c.finish(None);
        expect(c.send_scratch(self.timeout, false).await?, &[200])?;
        let text = std::str::from_utf8(c.body()).map_err(|_| ErrKind::Parse)?;
        text.lines()
            .filter_map(|l| l.split_once(sep))
            .find(|(k, _)| k.trim() == key)
            .and_then(|(_, v)| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .ok_or(ErrKind::Parse)
    }
}

/// Leaves in flight at once when cleaning up after a run.
pub const LEAVE_CONCURRENCY: usize = 64;

/// Leaves every session, [`LEAVE_CONCURRENCY`] at a time, within about
/// twice the request deadline. Failed leaves are counted in `errors` as
/// `leave_<kind>` (`leave_status_404`, `leave_timeout`…), leaves not tried
/// in time as `leave_not_tried`.
pub async fn leave_all(proto: Proto, sessions: &[(Url, Session)], errors: &RefCell<Errors>) {
    let next = Cell::new(0);
    let worker = || async {
        let mut clients: Vec<Client> = Vec::new();
        loop {
            let i = next.get();
            if i >= sessions.len() {
                break;
            }
            next.set(i + 1);
            let (url, s) = &sessions[i];
            let k = match clients.iter().position(|c| c.url.addr == url.addr) {
                Some(k) => k,
                None => {
                    clients.push(Client::new(url.clone()));
                    clients.len() - 1
                }
            };
            if let Err(e) = proto.leave(&mut clients[k], s).await {
                errors
                    .borrow_mut()
                    .add_named(&format!("leave_{}", e.name()));
            }
        }
    };
    let deadline =
        Instant::now() + proto.timeout * 2 + Duration::from_millis(sessions.len() as u64);
    let workers: Vec<_> = (0..LEAVE_CONCURRENCY).map(|_| Box::pin(worker())).collect();
    let _ = with_deadline(deadline, async {
        join_all(workers).await;
        Ok::<(), ErrKind>(())
    })
    .await;
    let not_tried = sessions.len() - next.get().min(sessions.len());
    errors
        .borrow_mut()
        .add_count("leave_not_tried", not_tried as u64);
}

/// Cancels every task: dropping one of the loop's [`Task`]s drops its
/// future at once, so its sockets are closed when this returns.
pub fn cancel_all<T>(tasks: Vec<Task<T>>) {
    drop(tasks);
}

/// Drives every future of `futs` to completion, together (a `join_all`
/// without the futures crate).
pub async fn join_all<F: Future<Output = ()> + Unpin>(mut futs: Vec<F>) {
    std::future::poll_fn(|cx| {
        futs.retain_mut(|f| Pin::new(f).poll(cx).is_pending());
        if futs.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}
