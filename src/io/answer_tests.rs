//! How a waiting poll's answer reaches its socket, through the node's
//! shared state as the connection tasks drive it, but with no task: the
//! requests go straight to `Shared::handle`, and the test plays the part
//! of `Conn::wait_poll` (holding the in-flight count, allowing direct
//! writes or not).

use super::rt::{self, Io};
use super::waiter::{Link, Waited};
use super::Shared;
use crate::api::Handled;
use crate::config::{self, Parsed};
use crate::proto::http;
use crate::proto::ids::TokenCache;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::time::Duration;

/// A node with the default configuration.
fn node() -> Rc<Shared> {
    let Ok(Parsed::Run(config)) = config::parse(Vec::<std::ffi::OsString>::new(), |_| None) else {
        panic!("the default configuration");
    };
    super::new_shared(&config).unwrap()
}

/// A connection's link over a loopback socket, and the client's end.
fn connection() -> (Rc<Link>, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (Rc::new(Link::new(Io::new(server).unwrap())), client)
}

/// Runs `raw` through the API on `link`'s connection.
fn handle(shared: &Shared, link: &Rc<Link>, raw: &str) -> Handled {
    handle_with(shared, link, &mut TokenCache::default(), raw)
}

/// [`handle`], with the connection's token memo.
fn handle_with(shared: &Shared, link: &Rc<Link>, tokens: &mut TokenCache, raw: &str) -> Handled {
    let (framed, _) = http::frame_whole(&shared.http_limits, raw.as_bytes()).unwrap();
    let request = framed.request(raw.as_bytes()).unwrap();
    shared.handle(&request, tokens, link)
}

/// Joins `side` of pair `p`; the session token.
fn join(shared: &Shared, link: &Rc<Link>, side: &str) -> String {
    let raw = format!("POST /v1/pairs/p/{side} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    let Handled::Respond(r) = handle(shared, link, &raw) else {
        panic!("a join waited");
    };
    assert_eq!(r.status, 201);
    let body = String::from_utf8(r.body.to_vec()).unwrap();
    let from = body.find("\"session\":\"").unwrap() + 11;
    let len = body[from..].find('"').unwrap();
    body[from..from + len].to_string()
}

/// Pairs up p/a and p/b, has b's poll wait on `poll`'s connection as
/// `Conn::wait_poll` would (direct writes allowed or not, the in-flight
/// count held), and sends `over` from a on another connection.
fn answer_a_waiting_poll(shared: &Rc<Shared>, poll: &Rc<Link>, direct: bool) {
    let (other, _client) = connection();
    let a = join(shared, &other, "a");
    let b = join(shared, &other, "b");
    let raw = format!(
        "GET /v1/pairs/p/b/events?after=1&timeout_ms=5000 HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {b}\r\n\r\n"
    );
    assert!(matches!(handle(shared, poll, &raw), Handled::Wait(_)));
    poll.hold(Some(shared.in_flight()), false);
    poll.allow_direct(direct);
    assert_eq!(shared.requests_in_flight(), 1);
    let raw = format!(
        "POST /v1/pairs/p/a/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a}\r\n\
         Content-Length: 4\r\n\r\nover"
    );
    let Handled::Respond(r) = handle(shared, &other, &raw) else {
        panic!("a send waited");
    };
    assert_eq!(r.status, 202);
}

/// Allowed, the send's own step writes the poll's response to the poll's
/// socket: the client can read it before any task has run, the poll's
/// connection sees it written, and its request is no longer in flight
/// (a drain does not wait for it).
#[test]
fn a_send_writes_the_answer_of_the_poll_it_ends() {
    rt::block_on(async {
        let shared = node();
        let (poll, mut client) = connection();
        answer_a_waiting_poll(&shared, &poll, true);
        assert_eq!(shared.requests_in_flight(), 0);
        client.set_nonblocking(true).unwrap();
        let mut got = vec![0u8; 4096];
        let n = client.read(&mut got).expect("the answer is in the socket");
        let text = String::from_utf8_lossy(&got[..n]);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.ends_with(r#""events":[{"seq":2,"type":"message","data":"over"}]}"#),
            "{text}"
        );
        assert!(matches!(poll.wait().await, Waited::Written(_)));
    })
    .unwrap();
}

/// Not allowed (something is buffered behind the poll, or it closes),
/// the answer is handed to the connection, whose task writes it.
#[test]
fn a_send_hands_over_the_answer_when_the_connection_says_so() {
    rt::block_on(async {
        let shared = node();
        let (poll, mut client) = connection();
        answer_a_waiting_poll(&shared, &poll, false);
        client.set_nonblocking(true).unwrap();
        let mut got = [0u8; 64];
        let read = client.read(&mut got);
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{read:?}"
        );
        let Waited::Answer(reply) = poll.wait().await else {
            panic!("not handed over");
        };
        assert_eq!(reply.status, 200);
        // Still in flight, for the connection to release once written.
        assert!(poll.take_in_flight().is_some());
    })
    .unwrap();
}

/// A request that waits with no way to cancel it (a join waiting for its
/// lookups, here a poll the core still holds) does not keep its
/// connection's socket open once the connection's task is gone, and its
/// answer is then neither written nor counted.
#[test]
fn a_gone_connection_is_closed_whatever_the_core_still_holds() {
    rt::block_on(async {
        let shared = node();
        let (poll, mut client) = connection();
        let (other, _c) = connection();
        let b = join(&shared, &other, "b");
        let raw = format!(
            "GET /v1/pairs/p/b/events?after=0&timeout_ms=5000 HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer {b}\r\n\r\n"
        );
        assert!(matches!(handle(&shared, &poll, &raw), Handled::Wait(_)));
        poll.allow_direct(true);
        drop(poll);
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut got = [0u8; 64];
        assert_eq!(client.read(&mut got).unwrap(), 0, "the socket is closed");
        // The peer joins: b's poll is answered, to nobody.
        let counted = || {
            let mut n = 0;
            shared.metrics(|m| n = m.responses(200));
            n
        };
        let before = counted();
        join(&shared, &other, "a");
        assert_eq!(counted(), before);
    })
    .unwrap();
}

/// The addresses a connection hints for its next request: the session its
/// last token names, after a send its peer's; its own link, and the link
/// of the poll its last request answered. No session before a token, or
/// for a token of another node.
#[test]
fn a_connection_hints_its_session_its_peers_and_their_links() {
    let shared = node();
    let (link, _client) = connection();
    let (b_link, _b_client) = connection();
    let me = link.at();
    let mut tokens = TokenCache::default();
    assert_eq!(shared.hint_addrs(&tokens, false, &link), [0, 0, me, 0]);
    let a = join(&shared, &link, "a");
    let b = join(&shared, &link, "b");
    let run = |tokens: &mut TokenCache, raw: &str| match handle_with(&shared, &link, tokens, raw) {
        Handled::Respond(r) => r.status,
        Handled::Wait(_) => panic!("waited"),
    };
    let poll = format!(
        "GET /v1/pairs/p/a/events?timeout_ms=0 HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {a}\r\n\r\n"
    );
    assert_eq!(run(&mut tokens, &poll), 200);
    let addr = |token: &str| {
        let key = crate::proto::ids::Token::parse(token.as_bytes())
            .unwrap()
            .key;
        shared.api.borrow().node.session_addr(key)
    };
    assert_ne!(addr(&a), 0);
    assert_eq!(
        shared.hint_addrs(&tokens, false, &link),
        [addr(&a), 0, me, 0]
    );
    // Before a send, a's session knows no peer address.
    assert_eq!(
        shared.hint_addrs(&tokens, true, &link),
        [addr(&a), 0, me, 0]
    );
    // b's poll waits on its own connection; a's send answers it.
    let b_poll = format!(
        "GET /v1/pairs/p/b/events?after=1 HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {b}\r\n\r\n"
    );
    let mut b_tokens = TokenCache::default();
    let waiting = handle_with(&shared, &b_link, &mut b_tokens, &b_poll);
    assert!(matches!(waiting, Handled::Wait(_)));
    let send = format!(
        "POST /v1/pairs/p/a/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a}\r\n\
         Content-Length: 2\r\n\r\nhi"
    );
    assert_eq!(run(&mut tokens, &send), 202);
    let after_send = [addr(&a), addr(&b), me, b_link.at()];
    assert_eq!(shared.hint_addrs(&tokens, true, &link), after_send);
    // A request that answers no poll names none.
    assert_eq!(run(&mut tokens, &poll), 200);
    assert_eq!(
        shared.hint_addrs(&tokens, false, &link),
        [addr(&a), 0, me, 0]
    );
    // The same token text, but another node's: no session.
    let foreign = a.replacen("local.", "other.", 1);
    assert_ne!(foreign, a);
    tokens
        .parse(foreign.as_bytes())
        .expect("a token of another node");
    assert_eq!(shared.hint_addrs(&tokens, true, &link), [0, 0, me, 0]);
}
